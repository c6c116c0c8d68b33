//! Issue "Security" targets: an exec storm (fork+exec of /bin/true) and a connect storm (loopback
//! connect+accept), each with no monitor and with the security event stream on (an `/events`
//! subscriber reading every event), in alternating rounds; then events at a paced 5k/s (none may
//! be lost) and a flood beyond the ring buffer (received + lost must equal the kernel's count).

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::util::*;

/// What one monitored run saw.
struct Monitored {
    /// The workload's first stdout line.
    line: String,
    metrics: String,
    /// Event lines read on /events, by kind.
    received: std::collections::BTreeMap<String, u64>,
    /// CPU time of the sidecar process itself (user + system) after start-up, in seconds.
    cpu: f64,
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name, which ends at the last ')'.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// `ebpf-sidecar run --probes security` around `sh -c "sleep 1; CMD; sleep 1"` with a
/// subscriber on /events from the start (the first second leaves it time to connect).
fn monitored(cmd: &str, extra: &[&str]) -> Result<Monitored> {
    let port = free_port();
    let mut child = Command::new(sidecar_release_bin())
        .args(["run", "--probes", "security"])
        .args(extra)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--", "/bin/sh", "-c"])
        .arg(format!("sleep 1; {cmd}; sleep 1"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || -> std::collections::BTreeMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut s = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return Default::default(),
            }
        };
        let _ = write!(s, "GET /events HTTP/1.0\r\nHost: localhost\r\n\r\n");
        let _ = tx.send(());
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let mut kinds = std::collections::BTreeMap::new();
        for l in body.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                continue;
            };
            let k = v["kind"].as_str().unwrap_or("?").to_string();
            // A subscriber that fell behind is told how many lines it missed.
            let n = if k == "lagged" {
                v["missed"].as_u64().unwrap_or(0)
            } else {
                1
            };
            *kinds.entry(k).or_default() += n;
        }
        kinds
    });
    rx.recv_timeout(Duration::from_secs(10))
        .context("could not subscribe to /events")?;
    // The port accepts from the start; answering /healthz means start-up (BTF parsing, loading)
    // is over: count the CPU spent on the workload's events from here.
    let ready = Instant::now() + Duration::from_secs(10);
    while !http_get(port, "/healthz", None).is_ok_and(|r| r.0 == 200) && Instant::now() < ready {
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu0 = cpu_seconds(child.id());
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let line = lines.next().context("no output from the workload")??;
    std::thread::sleep(Duration::from_millis(300));
    let (_, _, metrics) = http_get(port, "/metrics", None)?;
    let cpu = cpu_seconds(child.id()) - cpu0;
    child.wait()?;
    let received = reader.join().unwrap_or_default();
    Ok(Monitored {
        line,
        metrics,
        received,
        cpu,
    })
}

fn secs(s: &str) -> Result<f64> {
    Ok(s.trim().parse()?)
}

/// Alternating rounds of (no monitor, monitored): medians and the last monitored run.
fn storm(bin: &str, n: u64, rounds: usize) -> Result<(f64, f64, Vec<f64>, Monitored)> {
    let mut base = Vec::new();
    let mut on = Vec::new();
    let mut ratios = Vec::new();
    let mut last = None;
    for _ in 0..rounds {
        let out = Command::new(bin).arg(n.to_string()).output()?;
        let b = secs(&String::from_utf8_lossy(&out.stdout))?;
        let m = monitored(&format!("{bin} {n}"), &[])?;
        let s = secs(&m.line)?;
        base.push(b);
        on.push(s);
        ratios.push(s / b);
        last = Some(m);
    }
    let mut r = ratios.clone();
    Ok((
        median(&mut base),
        median(&mut on),
        {
            r.sort_by(|a, b| a.partial_cmp(b).unwrap());
            r
        },
        last.expect("at least one round"),
    ))
}

pub fn run(execs: u64, connects: u64, rounds: usize) -> Result<String> {
    let exec_bin = workload("exec_storm");
    let conn_bin = workload("connect_storm");
    let rate_bin = workload("event_rate");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut o = String::new();
    writeln!(
        o,
        "## Security: storms with no monitor vs the event stream on, {rounds} alternating rounds\n"
    )?;
    writeln!(
        o,
        "\"Event stream on\": `ebpf-sidecar run --probes security` with an `/events` subscriber reading every event. \
         2-CPU VM shared with other builds (load average at start: {}); the per-round ratios show the noise.\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    writeln!(
        o,
        "| storm | no monitor (s, median) | event stream on (s, median) | slowdown (median) | per-round ratios |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---|")?;
    let (b, s, r, last_exec) = storm(&exec_bin.display().to_string(), execs, rounds)?;
    writeln!(
        o,
        "| {execs} fork+exec of /bin/true | {b:.3} | {s:.3} | {:+.1}% | {} |",
        (s / b - 1.0) * 100.0,
        r.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    let (cb, cs, cr, last_conn) = storm(&conn_bin.display().to_string(), connects, rounds)?;
    writeln!(
        o,
        "| {connects} loopback connect+accept | {cb:.3} | {cs:.3} | {:+.1}% | {} |",
        (cs / cb - 1.0) * 100.0,
        cr.iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    let lost = |m: &str| metric_value(m, "ebpf_sidecar_events_lost_total{probe=\"security\"}");
    let counted = |m: &str, k: &str| {
        metric_value(
            m,
            &format!("ebpf_sidecar_security_events_total{{kind=\"{k}\"}}"),
        )
    };
    writeln!(o)?;
    writeln!(
        o,
        "Last exec round: {:.0} exec events counted, {} received on /events, {:.0} lost (the storm's {execs} plus sh, sleep, the storm binary, sleep).",
        counted(&last_exec.metrics, "exec"),
        last_exec.received.get("exec").copied().unwrap_or(0),
        lost(&last_exec.metrics)
    )?;
    writeln!(
        o,
        "Last connect round: {:.0} connect_new_peer and {:.0} listen_new_port events (one new peer, one new port), {:.0} lost.",
        counted(&last_conn.metrics, "connect_new_peer"),
        counted(&last_conn.metrics, "listen_new_port"),
        lost(&last_conn.metrics)
    )?;

    writeln!(
        o,
        "Sidecar CPU (user+system, after start-up) in the last rounds: exec {:.2} s, connect {:.2} s.",
        last_exec.cpu, last_conn.cpu
    )?;

    // Kernel-side cost per program run, from a separate run with bpf_stats on (it adds its own
    // clock reads, so it is not part of the timed rounds).
    let m = monitored(&format!("{} {execs}", exec_bin.display()), &["--bpf-stats"])?;
    let (m2, per_exec) = (&m.metrics, execs as f64);
    let prog = |p: &str| {
        (
            metric_value(
                m2,
                &format!("ebpf_sidecar_bpf_program_run_seconds_total{{program=\"{p}\"}}"),
            ),
            metric_value(
                m2,
                &format!("ebpf_sidecar_bpf_program_runs_total{{program=\"{p}\"}}"),
            ),
        )
    };
    writeln!(
        o,
        "\n### Where the exec storm's cost goes (bpf_stats, one run of {execs} execs)\n"
    )?;
    writeln!(o, "| program | runs | ns per run | µs per exec |")?;
    writeln!(o, "|---|---:|---:|---:|")?;
    for p in ["security_exec", "security_syscall", "security_listen"] {
        let (secs, runs) = prog(p);
        writeln!(
            o,
            "| {p} | {runs:.0} | {:.0} | {:.2} |",
            if runs > 0.0 { secs * 1e9 / runs } else { 0.0 },
            secs * 1e6 / per_exec
        )?;
    }
    writeln!(
        o,
        "| sidecar process (reader thread: JSON, /events) | | | {:.2} |",
        m.cpu * 1e6 / per_exec
    )?;

    writeln!(o, "\n### Event rate and losses\n")?;
    writeln!(
        o,
        "| workload | ptrace events made | counted in the kernel | received on /events | missed by the slow subscriber | lost (kernel) | sum = counted |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---:|---:|---|")?;
    for (what, cmd) in [
        (
            "paced 5000/s for 2 s",
            format!("{} 5000 2", rate_bin.display()),
        ),
        (
            "flood, 200000 back to back",
            format!("{} 0 200000", rate_bin.display()),
        ),
    ] {
        let m = monitored(&cmd, &[])?;
        let made: u64 = m.line.trim().parse().unwrap_or(0);
        let c = counted(&m.metrics, "ptrace") as u64;
        let got = m.received.get("ptrace").copied().unwrap_or(0);
        let missed = m.received.get("lagged").copied().unwrap_or(0);
        let l = lost(&m.metrics) as u64;
        writeln!(
            o,
            "| {what} | {made} | {c} | {got} | {missed} | {l} | {} |",
            if got + missed + l == c && c == made {
                "✔"
            } else {
                "✘"
            }
        )?;
    }
    Ok(o)
}
