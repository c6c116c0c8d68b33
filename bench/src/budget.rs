//! Issue "A CPU budget": what the sidecar's default set costs a server per request, with no
//! monitor, with `--cpu-budget 0` (every feature as asked) and with `--cpu-budget 1` (the
//! default), side by side in one run: the example Node app under wrk and redis-server under
//! redis-benchmark, server pinned to CPU 0 and load generator to CPU 1. The figure is the
//! server's CPU time per request (utime + stime from /proc: the kernel time of our programs in
//! its context is in it), since requests/s moves ±10% between identical rounds here.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::*;

#[derive(Clone, Copy, PartialEq)]
enum Arm {
    Alone,
    Budget0,
    Budget1,
    /// The syscalls family alone: what the governor's steps act on.
    Syscalls0,
    Syscalls1,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Alone => "no monitor",
            Arm::Budget0 => "default set, --cpu-budget 0",
            Arm::Budget1 => "default set, --cpu-budget 1 (default)",
            Arm::Syscalls0 => "syscalls family alone, --cpu-budget 0",
            Arm::Syscalls1 => "syscalls family alone, --cpu-budget 1",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Arm::Alone => &[],
            Arm::Budget0 => &["--cpu-budget", "0"],
            Arm::Budget1 => &["--cpu-budget", "1"],
            Arm::Syscalls0 => &["--probes", "syscalls", "--cpu-budget", "0"],
            Arm::Syscalls1 => &["--probes", "syscalls", "--cpu-budget", "1"],
        }
    }
}

const ARMS: [Arm; 5] = [
    Arm::Alone,
    Arm::Budget0,
    Arm::Budget1,
    Arm::Syscalls0,
    Arm::Syscalls1,
];

/// A server started pinned to CPU 0, alone or under `ebpf-sidecar run` (default families): the
/// process and the server's pid.
struct Server {
    child: Child,
    pid: u32,
    metrics_port: Option<u16>,
}

impl Server {
    fn start(arm: Arm, cmd: &[&str], env: &[(&str, String)], port: u16) -> Result<Self> {
        let metrics_port = free_port();
        let mut c = match arm {
            Arm::Alone => Command::new("taskset"),
            _ => {
                let mut c = Command::new(sidecar_release_bin());
                c.args(["run", "--listen", &format!("127.0.0.1:{metrics_port}")])
                    .args(arm.args())
                    .args(["--", "taskset"]);
                c
            }
        };
        let child = c
            .args(["-c", "0"])
            .args(cmd)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("{} did not listen on {port}", cmd[0]);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = if arm == Arm::Alone {
            child.id()
        } else {
            let c = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))?;
            c.split_whitespace()
                .next()
                .context("the server is not a child of the sidecar")?
                .parse()?
        };
        Ok(Self {
            child,
            pid,
            metrics_port: (arm != Arm::Alone).then_some(metrics_port),
        })
    }

    /// The governor's level and overhead now (monitored arms).
    fn governor(&self) -> Option<(f64, f64)> {
        let (_, _, body) = http_get(self.metrics_port?, "/metrics", None).ok()?;
        let level = metric_value(&body, "ebpf_sidecar_governor_level");
        let ratio = metric_value(&body, "ebpf_sidecar_overhead_ratio");
        body.contains("ebpf_sidecar_governor_level")
            .then_some((level, ratio))
    }

    fn stop(mut self) {
        // SAFETY: signalling the server this bench started.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

struct Round {
    rps: f64,
    cpu_us: f64,
    governor: Option<(f64, f64)>,
}

fn node_round(arm: Arm, seconds: u64) -> Result<Round> {
    let port = free_port();
    let app = repo_root().join("examples/node-app/server.js");
    let s = Server::start(
        arm,
        &["node", app.to_str().unwrap()],
        &[
            ("PORT", port.to_string()),
            ("UPSTREAM_PORT", free_port().to_string()),
            (
                "DATA_DIR",
                std::env::temp_dir()
                    .join("ebpf-sidecar-bench-budget")
                    .display()
                    .to_string(),
            ),
        ],
        port,
    )?;
    // The runtimes family finds node by its rescan; a warm-up lets the governor settle too.
    let warm = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "-c8", "-d3s"])
        .arg(format!("http://127.0.0.1:{port}/fast"))
        .output()
        .context("wrk not found: apt-get install wrk")?;
    if !warm.status.success() {
        bail!("wrk failed");
    }
    let cpu0 = cpu_seconds(s.pid)?;
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1", "-c8"])
        .arg(format!("-d{seconds}s"))
        .arg(format!("http://127.0.0.1:{port}/fast"))
        .output()?;
    let cpu1 = cpu_seconds(s.pid)?;
    let governor = s.governor();
    s.stop();
    let (rps, reqs) = wrk_result(&out.stdout)?;
    Ok(Round {
        rps,
        cpu_us: (cpu1 - cpu0) * 1e6 / reqs.max(1.0),
        governor,
    })
}

fn redis_round(arm: Arm, requests: u64) -> Result<Round> {
    let port = free_port();
    let p = port.to_string();
    let s = Server::start(
        arm,
        &[
            "redis-server",
            "--port",
            &p,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        &[],
        port,
    )?;
    let bench = |n: u64| {
        Command::new("taskset")
            .args([
                "-c",
                "1",
                "redis-benchmark",
                "-p",
                &p,
                "-t",
                "set,get",
                "-q",
            ])
            .args(["-n", &n.to_string(), "-c", "8"])
            .output()
            .context("redis-benchmark not found: apt-get install redis-tools")
    };
    bench(requests / 4)?;
    let cpu0 = cpu_seconds(s.pid)?;
    let t0 = Instant::now();
    let out = bench(requests)?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(s.pid)?;
    let governor = s.governor();
    s.stop();
    if !out.status.success() {
        bail!("redis-benchmark failed");
    }
    let total = 2.0 * requests as f64;
    Ok(Round {
        rps: total / elapsed,
        cpu_us: (cpu1 - cpu0) * 1e6 / total,
        governor,
    })
}

fn table(o: &mut String, title: &str, rounds: &[(Arm, Round)]) -> Result<Vec<f64>> {
    writeln!(o, "{title}\n")?;
    writeln!(
        o,
        "| | requests/s | server CPU µs per request | vs no monitor | governor level / overhead (last round) |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---|")?;
    let mut cpus = Vec::new();
    let mut base = 0.0;
    for arm in ARMS {
        let mine: Vec<&Round> = rounds
            .iter()
            .filter(|(a, _)| *a == arm)
            .map(|(_, r)| r)
            .collect();
        let rps = median(&mut mine.iter().map(|r| r.rps).collect::<Vec<_>>());
        let cpu = median(&mut mine.iter().map(|r| r.cpu_us).collect::<Vec<_>>());
        if arm == Arm::Alone {
            base = cpu;
        }
        let gov = mine
            .last()
            .and_then(|r| r.governor)
            .map(|(l, r)| format!("{l} / {:.2}%", r * 100.0))
            .unwrap_or_else(|| "-".into());
        writeln!(
            o,
            "| {} | {rps:.0} | {cpu:.2} | {:+.1}% | {gov} |",
            arm.name(),
            (cpu / base - 1.0) * 100.0
        )?;
        cpus.push(cpu);
    }
    writeln!(o)?;
    Ok(cpus)
}

pub fn run(seconds: u64, rounds: usize) -> Result<String> {
    let mut o = String::new();
    writeln!(
        o,
        "## CPU budget: a server's CPU per request, no monitor vs --cpu-budget 0 vs 1\n\n\
         Server pinned to CPU 0, load generator to CPU 1, arms interleaved, median of {rounds} rounds.\n"
    )?;
    let (mut node, mut redis) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for arm in ARMS {
            node.push((arm, node_round(arm, seconds)?));
            redis.push((arm, redis_round(arm, 200_000)?));
        }
    }
    let n = table(
        &mut o,
        &format!("Node.js 20 example app, GET /fast, `wrk -t1 -c8 -d{seconds}s`:"),
        &node,
    )?;
    let r = table(
        &mut o,
        "redis-server 7, `redis-benchmark -t set,get -c 8 -n 200000`:",
        &redis,
    )?;
    for (what, v) in [("node", &n), ("redis", &r)] {
        writeln!(
            o,
            "- {what}: budget 1 vs budget 0: {:+.1}% CPU per request; budget 1 vs no monitor: {:+.1}% (target ≤ +1%); syscalls family alone, budget 1 vs 0: {:+.1}%",
            (v[2] / v[1] - 1.0) * 100.0,
            (v[2] / v[0] - 1.0) * 100.0,
            (v[4] / v[3] - 1.0) * 100.0
        )?;
    }
    Ok(o)
}
