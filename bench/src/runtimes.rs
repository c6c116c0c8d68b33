//! Issue "Runtimes" targets: a CPython 3.11 loop of N function calls with a profile function
//! set (so python:function__entry fires on every call), with no monitor, under ebpf-sidecar with
//! the calls pack on (--runtime-calls), and under bpftrace counting the same USDT probe by
//! (file, function) as the pack does. Also the per-hit kernel cost of each runtimes program
//! (bpf_stats), including the GC begin/end pair.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::util::*;

const PYTHON: &str = "/usr/bin/python3.11";
const GCS: u64 = 200;

fn script() -> String {
    root()
        .join("bench/workloads/pycalls.py")
        .display()
        .to_string()
}

fn plain(calls: u64) -> Result<f64> {
    let out = Command::new(PYTHON)
        .args([&script(), &calls.to_string()])
        .output()
        .context("python3.11")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// One run under `ebpf-sidecar run`; returns (ns per call, per-program (name, ns per run, runs),
/// calls counted for the loop's function).
fn sidecar(calls: u64, stats: bool) -> Result<(f64, Vec<(String, f64, f64)>, f64)> {
    let out = std::env::temp_dir().join("ebpf-sidecar-bench-runtimes.prom");
    let _ = std::fs::remove_file(&out);
    let o = Command::new(sidecar_bin()?)
        .args([
            "run",
            "--probes",
            "runtimes",
            "--runtime-calls",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--metrics-out",
        ])
        .arg(&out)
        .args(if stats { &["--bpf-stats"][..] } else { &[] })
        .args([
            "--",
            PYTHON,
            &script(),
            &calls.to_string(),
            &GCS.to_string(),
        ])
        .stderr(Stdio::null())
        .output()?;
    let ns: f64 = String::from_utf8_lossy(&o.stdout).trim().parse()?;
    let text = std::fs::read_to_string(&out)?;
    let mut progs = Vec::new();
    for p in ["rt_call", "rt_begin", "rt_end", "rt_count"] {
        let s = metric_sum(
            &text,
            &format!("ebpf_sidecar_bpf_program_run_seconds_total{{program=\"{p}\""),
        );
        let n = metric_sum(
            &text,
            &format!("ebpf_sidecar_bpf_program_runs_total{{program=\"{p}\""),
        );
        progs.push((p.to_string(), s * 1e9 / n.max(1.0), n));
    }
    let counted = metric_sum(
        &text,
        "ebpf_sidecar_runtime_function_calls_total{runtime=\"python\",function=\"pycalls:work\"",
    );
    Ok((ns, progs, counted))
}

/// One loop under bpftrace (attached before, detached after); with `stats`, also the ns per
/// program run from bpf_stats.
fn bpftrace(calls: u64, stats: bool) -> Result<(f64, f64)> {
    let before = prog_ids()?;
    let prog =
        format!("usdt:{PYTHON}:python:function__entry {{ @[str(arg0), str(arg1)] = count(); }}");
    let mut bt = Command::new("bpftrace")
        .args(["-e", &prog])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("bpftrace not found: apt-get install bpftrace")?;
    let mut out = BufReader::new(bt.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.contains("Attaching") {
        bail!("bpftrace did not attach: {line:?}");
    }
    std::thread::sleep(Duration::from_millis(200));
    let stats_fd = if stats {
        Some(aya::sys::enable_stats(aya::sys::Stats::RunTime)?)
    } else {
        None
    };
    let s0 = new_prog_stats(&before)?;
    let ns = plain(calls)?;
    let s1 = new_prog_stats(&before)?;
    drop(stats_fd);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(bt.id() as i32, libc::SIGINT) };
    let _ = bt.wait();
    Ok((ns, (s1.0 - s0.0) as f64 / (s1.1 - s0.1).max(1) as f64))
}

/// Requests/s of a minimal Node.js HTTP app under wrk, alone or under `ebpf-sidecar run` with
/// the default packs (HTTP, GC, event-loop lag; no --runtime-calls).
fn node_rps(monitored: bool) -> Result<f64> {
    let port = free_port();
    let app = root().join("bench/workloads/httpapp.js");
    let mut cmd = if monitored {
        let mut c = Command::new(sidecar_bin()?);
        c.args([
            "run",
            "--probes",
            "runtimes",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--",
            "node",
        ]);
        c
    } else {
        Command::new("node")
    };
    let mut child = cmd
        .arg(&app)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            bail!("node app did not listen");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the rescan attach the per-process event-loop probes too.
    std::thread::sleep(Duration::from_millis(1500));
    let out = Command::new("wrk")
        .args(["-t1", "-c8", "-d6s", &format!("http://127.0.0.1:{port}/")])
        .output()
        .context("wrk not found: apt-get install wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .context("wrk output")?
        .trim()
        .parse()?;
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        let _ = write!(
            s,
            "POST /quit HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        );
    }
    let _ = child.wait();
    Ok(rps)
}

pub fn run(calls: u64, repeat: usize) -> Result<String> {
    plain(10_000)?; // warm caches
    // Interleaved, so that load from other work on the machine hits every column alike.
    let (mut base, mut ours, mut bt) = (Vec::new(), Vec::new(), Vec::new());
    let mut counted = 0.0;
    for _ in 0..repeat {
        base.push(plain(calls)?);
        let (ns, _, c) = sidecar(calls, false)?;
        ours.push(ns);
        counted = c;
        bt.push(bpftrace(calls, false)?.0);
    }
    let (mut rps_off, mut rps_on) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        rps_off.push(node_rps(false)?);
        rps_on.push(node_rps(true)?);
    }
    let (_, progs, _) = sidecar(calls, true)?;
    let (_, bt_prog) = bpftrace(calls, true)?;

    let b = median(&mut base);
    let s = median(&mut ours);
    let t = median(&mut bt);
    let mut o = String::new();
    writeln!(
        o,
        "## Runtimes: CPython 3.11, {calls} calls of one function under sys.setprofile, median of {repeat} interleaved runs\n"
    )?;
    writeln!(
        o,
        "Every call fires python:function__entry (CPython 3.11 fires it only while a trace/profile"
    )?;
    writeln!(
        o,
        "function is set). bpftrace counts by (file, function) like the calls pack: \
         `@[str(arg0), str(arg1)] = count()`.\n"
    )?;
    writeln!(o, "| | ns per call | slowdown | ns per BPF program run |")?;
    writeln!(o, "|---|---:|---:|---:|")?;
    writeln!(o, "| no monitor | {b:.0} | 1.00x | |")?;
    let call_cost = progs
        .iter()
        .find(|p| p.0 == "rt_call")
        .map(|p| p.1)
        .unwrap_or(0.0);
    writeln!(
        o,
        "| ebpf-sidecar --runtime-calls | {s:.0} | {:.2}x | {call_cost:.0} (rt_call) |",
        s / b
    )?;
    writeln!(
        o,
        "| bpftrace usdt function__entry | {t:.0} | {:.2}x | {bt_prog:.0} |",
        t / b
    )?;
    writeln!(
        o,
        "\nCalls counted by the sidecar for the loop's function in the last run: {counted} (expected {calls}).\n"
    )?;
    writeln!(
        o,
        "Per-hit kernel cost of each runtimes program (bpf_stats run with {GCS} gc.collect() first):\n"
    )?;
    writeln!(o, "| program | runs | ns per run |")?;
    writeln!(o, "|---|---:|---:|")?;
    for (p, ns, n) in progs {
        writeln!(o, "| {p} | {n:.0} | {ns:.0} |")?;
    }
    let (r0, r1) = (median(&mut rps_off), median(&mut rps_on));
    writeln!(
        o,
        "\nNode.js 20 HTTP app under `wrk -t1 -c8 -d6s` (2 interleaved runs each, median), packs on by\n\
         default (HTTP by method, V8 GC, event-loop lag): {r0:.0} req/s alone, {r1:.0} req/s monitored \
         ({:+.1}%).",
        (r1 / r0 - 1.0) * 100.0
    )?;
    writeln!(
        o,
        "\nThe slowdown is dominated by the uprobe trap itself (an int3 and a return to user space per\n\
         hit), which every uprobe-based tool pays; the program's own run is the last column."
    )?;
    Ok(o)
}
