//! Shared pieces: building workloads, timing, reading /proc and bpftool.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

pub fn sidecar_bin() -> Result<PathBuf> {
    let p = root().join("target/release/ebpf-sidecar");
    if !p.exists() {
        bail!("build the sidecar first: cargo build --release -p sidecar");
    }
    Ok(p)
}

/// Static build of bench/workloads/NAME.c.
pub fn workload(name: &str) -> Result<PathBuf> {
    let out = root()
        .join("target/workloads")
        .join(format!("bench-{name}"));
    std::fs::create_dir_all(out.parent().unwrap())?;
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(root().join(format!("bench/workloads/{name}.c")))
        .status()
        .context("gcc")?;
    if !st.success() {
        bail!("building workload {name}");
    }
    Ok(out)
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// (VmRSS, VmHWM) in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sum of a metric's samples (all label sets) whose line starts with `prefix`.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Ids of the BPF programs loaded right now.
pub fn prog_ids() -> Result<Vec<u64>> {
    Ok(prog_list()?.into_iter().map(|p| p.0).collect())
}

/// (id, name, run_time_ns, run_cnt) of every loaded program (bpftool prog show -j).
pub fn prog_list() -> Result<Vec<(u64, String, u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .context("bpftool")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["id"].as_u64().unwrap_or(0),
                p["name"].as_str().unwrap_or("?").to_string(),
                p["run_time_ns"].as_u64().unwrap_or(0),
                p["run_cnt"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// (run_time_ns, run_cnt) summed over programs not in `before`.
pub fn new_prog_stats(before: &[u64]) -> Result<(u64, u64)> {
    Ok(prog_list()?
        .into_iter()
        .filter(|p| !before.contains(&p.0))
        .fold((0, 0), |a, p| (a.0 + p.2, a.1 + p.3)))
}

/// tracefs must be mounted for bpftrace's tracepoints.
pub fn ensure_tracefs() {
    if !Path::new("/sys/kernel/tracing/events").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status();
    }
}

/// Run `cmd` (a shell line) under `ebpf-sidecar run` with `args`; the command's first stdout line
/// and the metrics scraped just after it printed (the shell then lingers a moment).
pub fn under_sidecar(args: &[&str], cmd: &str) -> Result<(String, String)> {
    use std::io::BufRead;
    let port = free_port();
    let mut child = Command::new(sidecar_bin()?)
        .arg("run")
        .args(args)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--",
            "/bin/sh",
            "-c",
        ])
        .arg(format!("{cmd}; sleep 2"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = lines.next().context("no output from the workload")??;
    std::thread::sleep(Duration::from_millis(300));
    let (_, metrics) = http_get(port, "/metrics")?;
    child.wait()?;
    Ok((first, metrics))
}

/// The value of one exact series line `name{labels}` (or `name`) in an exposition.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
        .unwrap_or(0.0)
}

/// Kernel time of one of the sidecar's programs, from its `--bpf-stats` metrics.
#[derive(Clone, Debug, Default)]
pub struct ProgCost {
    pub program: String,
    /// Seconds of program time, all runs.
    pub seconds: f64,
    pub runs: f64,
}

impl ProgCost {
    pub fn ns_per_run(&self) -> f64 {
        self.seconds * 1e9 / self.runs.max(1.0)
    }
}

/// Every program in a scrape (`ebpf_sidecar_bpf_program_run_seconds_total` and `_runs_total`), in
/// order of appearance.
pub fn prog_costs(text: &str) -> Vec<ProgCost> {
    let mut out: Vec<ProgCost> = Vec::new();
    for l in text.lines() {
        for (metric, time) in [
            ("ebpf_sidecar_bpf_program_run_seconds_total{", true),
            ("ebpf_sidecar_bpf_program_runs_total{", false),
        ] {
            let Some((labels, v)) = l.strip_prefix(metric).and_then(|r| r.rsplit_once("} ")) else {
                continue;
            };
            let Some(prog) = labels.split('"').nth(1) else {
                continue;
            };
            let v: f64 = v.trim().parse().unwrap_or(0.0);
            let i = match out.iter().position(|e| e.program == prog) {
                Some(i) => i,
                None => {
                    out.push(ProgCost {
                        program: prog.to_string(),
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            if time {
                out[i].seconds += v;
            } else {
                out[i].runs += v;
            }
        }
    }
    out
}

/// bpftrace running a program, attached (its "Attaching…" line read) until dropped (SIGINT).
/// What it prints at exit goes nowhere: the pipe is closed after the first line, so a big map
/// cannot block it on a full pipe nobody reads.
pub struct Bpftrace(std::process::Child);

impl Bpftrace {
    pub fn start(program: &str) -> Result<Self> {
        use std::io::BufRead;
        ensure_tracefs();
        let mut child = Command::new("bpftrace")
            .args(["-e", program])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("bpftrace not found: apt-get install bpftrace")?;
        let out = child.stdout.take().expect("piped");
        let b = Bpftrace(child);
        let mut first = String::new();
        std::io::BufReader::new(out).read_line(&mut first)?;
        if !first.contains("Attaching") {
            anyhow::bail!("bpftrace did not attach: {first:?}");
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(b)
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}
