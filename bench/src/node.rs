//! Issue "Node mode": node mode watching 20 idle containers and 1 busy one. What a process
//! outside every container pays per syscall (against one sidecar's), `/metrics` time, node RSS,
//! and the time from `docker run` to the new container's first counted exec.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::util::*;

const IDLE: usize = 20;
const PREFIX: &str = "bench-node-";

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Containers removed on drop.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
    }
}

/// A sidecar process serving on `port`; SIGTERM on drop.
struct Served {
    child: Child,
    port: u16,
}

impl Served {
    fn start(args: &[&str]) -> Result<Self> {
        let port = free_port();
        // --listen is global: before the subcommand, so it never lands after `--`.
        let child = Command::new(sidecar_release_bin())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t0 = Instant::now();
        while !matches!(http_get(port, "/healthz", None), Ok((200, _, _))) {
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("{args:?} did not serve within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { child, port })
    }

    fn metrics(&self) -> Result<String> {
        Ok(http_get(self.port, "/metrics", None)?.2)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: our own child; SIGTERM so it leaves the set.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn loop_ns(bin: &std::path::Path, calls: u64, repeat: usize) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeat {
        let out = Command::new(bin).arg(calls.to_string()).output()?;
        best = best.min(String::from_utf8_lossy(&out.stdout).trim().parse()?);
    }
    Ok(best)
}

pub fn run(calls: u64, repeat: usize) -> Result<String> {
    let bin = workload("getppid_loop");
    let mut cs = Containers(Vec::new());
    for i in 0..IDLE {
        let name = format!("{PREFIX}idle{i}");
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "debian:bookworm-slim",
            "sleep",
            "infinity",
        ])?;
        cs.0.push(name);
    }
    let busy = format!("{PREFIX}busy");
    let _ = Command::new("docker").args(["rm", "-f", &busy]).output();
    let mount = format!("{}:/loop:ro", bin.display());
    docker(&[
        "run",
        "-d",
        "--name",
        &busy,
        "-v",
        &mount,
        "debian:bookworm-slim",
        "sh",
        "-c",
        "while :; do /loop 200000 >/dev/null; sleep 0.05; done",
    ])?;
    cs.0.push(busy);

    let none = loop_ns(&bin, calls, repeat)?;
    let one = {
        let _s = Served::start(&["run", "--kernel-side", "shared", "--", "sleep", "100000"])?;
        std::thread::sleep(Duration::from_secs(2));
        loop_ns(&bin, calls, repeat)?
    };
    let node = Served::start(&["node", "--containers", &format!("name={PREFIX}.*")])?;
    let t0 = Instant::now();
    loop {
        let m = node.metrics()?;
        if metric_value(&m, "ebpf_sidecar_node_containers") >= (IDLE + 1) as f64 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(180) {
            bail!("node mode did not pick up {} containers", IDLE + 1);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let with_node = loop_ns(&bin, calls, repeat)?;
    let mut scrape_ms = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let t = Instant::now();
        bytes = node.metrics()?.len();
        scrape_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let scrape_max = scrape_ms.iter().cloned().fold(0.0, f64::max);
    let scrape_med = median(&mut scrape_ms);
    let rss = rss_kib(node.child.id()).map(|r| r.0).unwrap_or(0) as f64 / 1024.0;

    // A new container: from `docker run` to its first counted exec.
    let new = format!("{PREFIX}new");
    let _ = Command::new("docker").args(["rm", "-f", &new]).output();
    let t = Instant::now();
    docker(&[
        "run",
        "-d",
        "--name",
        &new,
        "debian:bookworm-slim",
        "sh",
        "-c",
        "while :; do /bin/true; sleep 0.02; done",
    ])?;
    cs.0.push(new.clone());
    let first_exec = loop {
        let m = node.metrics()?;
        let series = m
            .lines()
            .filter(|l| {
                l.starts_with("ebpf_sidecar_process_execs_total{")
                    && l.contains(&format!("container=\"{new}\""))
            })
            .count();
        if series > 0 {
            break t.elapsed();
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the new container's execs never showed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(node);

    let mut out = String::new();
    writeln!(
        out,
        "## Node mode: {IDLE} idle containers and 1 busy one\n\n\
         A getppid loop outside every container ({calls} calls, best of {repeat}); one sidecar \
         is `run --kernel-side shared -- sleep`; node mode is `node --containers name={PREFIX}.*` \
         (the default families for each container, one slot each). /metrics: 20 scrapes in a \
         row. First counted exec: from the start of `docker run` (a container running `true` \
         every 20 ms) until node mode's /metrics has an exec series for it, polled every 20 ms.\n"
    )?;
    writeln!(out, "| | measured | target |\n|---|---:|---:|")?;
    writeln!(out, "| ns per call, nothing monitored | {none:.1} | |")?;
    writeln!(
        out,
        "| ns per call, one sidecar | {one:.1} (+{:.1}) | |",
        one - none
    )?;
    writeln!(
        out,
        "| ns per call, node mode with {} containers | {with_node:.1} (+{:.1}) | |",
        IDLE + 1,
        with_node - none
    )?;
    writeln!(
        out,
        "| node's added cost / one sidecar's | {:.2}x | <= 1.1x |",
        (with_node - none) / (one - none)
    )?;
    writeln!(
        out,
        "| /metrics with {} containers, median / max | {scrape_med:.1} / {scrape_max:.1} ms ({bytes} bytes) | <= 50 ms |",
        IDLE + 1
    )?;
    writeln!(out, "| node RSS | {rss:.1} MiB | <= 60 MiB |")?;
    writeln!(
        out,
        "| docker run to first counted exec | {:.0} ms | <= 1000 ms |",
        first_exec.as_secs_f64() * 1000.0
    )?;
    Ok(out)
}
