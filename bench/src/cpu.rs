//! Issue "CPU" targets: no monitor, the cpu family, the profiler at 49 Hz and 999 Hz, and
//! bpftrace's `profile:hz:49` stack counting, side by side in one run, on two workloads: a
//! CPU-bound loop, and the node example app under wrk (the stack benchmark's setup: node and
//! wrk pinned to separate CPUs, so the monitors' cost shows as the app's lost throughput).
//!
//!   cargo run --release -p bench -- cpu [--iterations N] [--repeat R] [--seconds S] [--rounds R]
//!
//! `--repeat 0` skips the loop, `--rounds 0` the node app.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::stack::{self, Monitor, Wrk};
use crate::util::*;

pub fn run(iterations: u64, repeat: usize, seconds: u64, rounds: usize) -> Result<String> {
    let mut o = String::new();
    writeln!(
        o,
        "# CPU benchmark\n\n`cargo run --release -p bench -- cpu --iterations {iterations} --repeat {repeat} \
         --seconds {seconds} --rounds {rounds}` (as root; needs gcc, bpftrace, node, wrk, taskset; \
         `--repeat 0` skips the loop, `--rounds 0` the node app). {} CPUs.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )?;
    if repeat > 0 {
        o.push_str(&cpu_bound(iterations, repeat)?);
    }
    if rounds > 0 {
        if repeat > 0 {
            o.push('\n');
        }
        o.push_str(&node_app(seconds, rounds)?);
    }
    Ok(o)
}

fn cpu_bound(iterations: u64, repeat: usize) -> Result<String> {
    let bin = workload("spin");
    let cmd = format!("{} {iterations}", bin.display());
    let secs = |s: &str| -> Result<f64> { Ok(s.trim().parse()?) };
    let plain = || -> Result<f64> {
        secs(&String::from_utf8_lossy(
            &Command::new(&bin)
                .arg(iterations.to_string())
                .output()?
                .stdout,
        ))
    };
    let configs: [(&str, &[&str]); 3] = [
        ("ebpf-sidecar --probes cpu", &["--probes", "cpu"]),
        (
            "ebpf-sidecar --probes profile (49 Hz)",
            &["--probes", "profile"],
        ),
        (
            "ebpf-sidecar --probes profile --profile-hz 999",
            &["--probes", "profile", "--profile-hz", "999"],
        ),
    ];
    let mut base = Vec::new();
    let mut rows: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    let mut bt = Vec::new();
    for _ in 0..repeat {
        base.push(plain()?);
        for (i, (_, args)) in configs.iter().enumerate() {
            rows[i].push(secs(&under_sidecar(args, &cmd)?.0)?);
        }
        let _b = Bpftrace::start(
            "bench-cpu",
            "profile:hz:49 { @[ustack, kstack] = count(); }",
        );
        bt.push(plain()?);
    }
    // The sched_switch program's cost, from one run with bpf_stats.
    let (_, m) = under_sidecar(
        &["--probes", "cpu", "--bpf-stats"],
        &format!("{cmd} & {cmd}; wait"),
    )?;
    let t = metric_value(
        &m,
        "ebpf_sidecar_bpf_program_run_seconds_total{program=\"cpu_switch\"}",
    );
    let n = metric_value(
        &m,
        "ebpf_sidecar_bpf_program_runs_total{program=\"cpu_switch\"}",
    );

    let b = median(&mut base);
    let mut o = String::new();
    writeln!(
        o,
        "## CPU: a CPU-bound loop ({iterations} iterations), median of {repeat} runs\n"
    )?;
    writeln!(o, "| configuration | seconds | slowdown |")?;
    writeln!(o, "|---|---:|---:|")?;
    writeln!(o, "| no monitor | {b:.3} | 1.000x |")?;
    for (i, (name, _)) in configs.iter().enumerate() {
        let s = median(&mut rows[i]);
        writeln!(o, "| {name} | {s:.3} | {:.3}x |", s / b)?;
    }
    let t_bt = median(&mut bt);
    writeln!(
        o,
        "| bpftrace profile:hz:49 {{ @[ustack, kstack] = count(); }} | {t_bt:.3} | {:.3}x |",
        t_bt / b
    )?;
    writeln!(o)?;
    writeln!(
        o,
        "sched_switch program (cpu_switch): {:.0} ns per run over {n:.0} runs (bpf_stats, two spinners on 2 CPUs).",
        t * 1e9 / n.max(1.0)
    )?;
    Ok(o)
}

/// (table name, short name for the per-round lines, monitor)
const NODE_CONFIGS: [(&str, &str, Monitor); 5] = [
    ("no monitor", "none", Monitor::None),
    (
        "ebpf-sidecar --probes cpu",
        "cpu",
        Monitor::Sidecar(&["--probes", "cpu"]),
    ),
    (
        "ebpf-sidecar --probes profile (49 Hz)",
        "profile 49 Hz",
        Monitor::Sidecar(&["--probes", "profile"]),
    ),
    (
        "ebpf-sidecar --probes profile --profile-hz 999",
        "profile 999 Hz",
        Monitor::Sidecar(&["--probes", "profile", "--profile-hz", "999"]),
    ),
    (
        "bpftrace profile:hz:49 /pid == NODE/ { @[ustack, kstack] = count(); }",
        "bpftrace",
        Monitor::Bpftrace("profile:hz:49 /pid == {pid}/ { @[ustack, kstack] = count(); }"),
    ),
];

fn node_app(seconds: u64, rounds: usize) -> Result<String> {
    let server = repo_root().join("examples/node-app/server.js");
    let n = NODE_CONFIGS.len();
    let (runs, order) = stack::compare(&server, &NODE_CONFIGS, seconds, rounds)?;
    let switch = switch_cost(&server, seconds.min(10))?;

    let med = |v: &[Wrk], f: fn(&Wrk) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let (rps0, p0) = (med(&runs[0], |w| w.rps), med(&runs[0], |w| w.p99_ms));
    let (node_cpu, wrk_cpus) = stack::cpus();
    let mut o = String::new();
    writeln!(
        o,
        "## CPU: the node example app under wrk, median of {rounds} rounds\n\n\
         wrk -t{} -c{} -d{seconds}s --latency on `GET {}` of examples/node-app/server.js (host node {}, \
         started without `--perf-basic-prof`), a fresh node per measurement, 1 s warm-up; node pinned \
         to CPU {node_cpu}, wrk to CPU {wrk_cpus} (monitors unpinned); the {n} configurations \
         alternate within each round, each round starting one later. Slowdown is no monitor's \
         requests/s over the configuration's; p99 is the configuration's over no monitor's.\n",
        stack::THREADS,
        stack::CONNECTIONS,
        stack::ROUTE,
        stack::node_version(),
    )?;
    writeln!(
        o,
        "| configuration | requests/s | slowdown | p99 latency | p99 vs no monitor |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---:|")?;
    for (i, (name, _, _)) in NODE_CONFIGS.iter().enumerate() {
        let (rps, p99) = (med(&runs[i], |w| w.rps), med(&runs[i], |w| w.p99_ms));
        writeln!(
            o,
            "| {name} | {rps:.0} | {:.3}x | {p99:.2} ms | {:.3}x |",
            rps0 / rps,
            p99 / p0
        )?;
    }
    let rps49 = med(&runs[2], |w| w.rps);
    let loss = (1.0 - rps49 / rps0) * 100.0;
    writeln!(
        o,
        "\nTarget ≤ 1% slowdown at 49 Hz: {loss:.1}% of the requests/s lost {}\n",
        if loss <= 1.0 { "✔" } else { "✘" }
    )?;
    o.push_str(&switch);
    writeln!(o, "\nPer round, in the order run (requests/s, p99 ms):\n")?;
    for (r, line) in order.iter().enumerate() {
        writeln!(o, "- round {}: {}", r + 1, line.join("; "))?;
    }
    Ok(o)
}

/// A separate round of the cpu configuration with `--bpf-stats` (the stats' clock reads add to
/// every program run, so its throughput is not the one in the table): the sched_switch
/// program's cost per run and per request.
fn switch_cost(server: &Path, seconds: u64) -> Result<String> {
    let m = free_port();
    let app = stack::start(server, Some(m), &["--probes", "cpu", "--bpf-stats"])?;
    let _ = stack::wrk(app.port, 1)?;
    let scrape = || -> Result<(f64, f64, f64)> {
        let text = http_get(m, "/metrics", None)?.2;
        Ok((
            metric_value(
                &text,
                "ebpf_sidecar_bpf_program_run_seconds_total{program=\"cpu_switch\"}",
            ),
            metric_value(
                &text,
                "ebpf_sidecar_bpf_program_runs_total{program=\"cpu_switch\"}",
            ),
            metric_sum(&text, "ebpf_sidecar_bpf_program_run_seconds_total{"),
        ))
    };
    let (t0, n0, all0) = scrape()?;
    let w = stack::wrk(app.port, seconds)?;
    let (t1, n1, all1) = scrape()?;
    let (t, n, all) = (t1 - t0, n1 - n0, all1 - all0);
    let reqs = w.rps * seconds as f64;
    Ok(format!(
        "sched_switch program (cpu_switch), from bpf_stats over a separate {seconds} s round of \
         `--probes cpu --bpf-stats` ({:.0} requests/s): {:.0} ns per run over {n:.0} runs \
         (host-wide: every switch on every CPU runs it and leaves at the target filter unless node is \
         involved), {:.2} runs and {:.3} µs per request; all cpu-family programs {:.3} µs per request.\n",
        w.rps,
        t * 1e9 / n.max(1.0),
        n / reqs,
        t / reqs * 1e6,
        all / reqs * 1e6,
    ))
}
