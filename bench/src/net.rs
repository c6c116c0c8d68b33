//! Issue "Network" targets: loopback TCP throughput (one large transfer), the short-request HTTP
//! workload (wrk against the node example app in the target, the stack benchmark's setup) and a
//! harsher short-connection workload (connect, 64-byte request, 64-byte reply, close), with no
//! monitor, with ebpf-sidecar (net family on, in `run` mode) and with bpftrace doing
//! tcplife-style accounting on the same tracepoint (sock:inet_sock_set_state: birth time,
//! lifetime histogram, bytes at close). Also the sidecar's per-program cost from bpf_stats.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::stack::{self, Monitor, Wrk};
use crate::util::*;

const OFF: &[&str] = &["--net-http", "off"];

const BPFTRACE: &str = r#"
tracepoint:sock:inet_sock_set_state /args->protocol == 6/ {
  if (args->newstate == 2 || args->newstate == 3) { @birth[args->skaddr] = nsecs; }
  if (args->newstate == 7 && @birth[args->skaddr]) {
    $tp = (struct tcp_sock *)args->skaddr;
    @life = hist(nsecs - @birth[args->skaddr]);
    @tx[args->dport] = sum($tp->bytes_acked);
    @rx[args->dport] = sum($tp->bytes_received);
    delete(@birth[args->skaddr]);
  }
}"#;

/// One figure per workload: MiB/s for the stream, connections/s for the short connections.
fn once(bin: &std::path::Path, mode: &str, n: u64) -> Result<f64> {
    let out = Command::new(bin).args([mode, &n.to_string()]).output()?;
    if !out.status.success() {
        bail!("net_stream {mode} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The workload under `ebpf-sidecar run --probes net`; with `stats`, also the cost of each of
/// the family's programs.
fn under_sidecar(
    bin: &std::path::Path,
    mode: &str,
    n: u64,
    stats: bool,
    extra: &[&str],
) -> Result<(f64, Vec<ProgCost>)> {
    let mut args = vec!["--probes", "net"];
    if stats {
        args.push("--bpf-stats");
    }
    args.extend_from_slice(extra);
    let (first, metrics) =
        crate::util::under_sidecar(&args, &format!("{} {mode} {n}", bin.display()))?;
    let costs = if stats {
        prog_costs(&metrics)
    } else {
        Vec::new()
    };
    Ok((first.trim().parse()?, costs))
}

/// Both workloads with bpftrace attached; with `cost`, one more short-connection run with
/// bpf_stats on gives bpftrace's (ns per run, runs).
fn under_bpftrace(
    bin: &std::path::Path,
    work: &[(&str, u64); 2],
    cost: bool,
) -> Result<([f64; 2], (f64, f64))> {
    let before = prog_ids()?;
    let bt = Bpftrace::start("bench-net", BPFTRACE);
    let figures = [
        once(bin, work[0].0, work[0].1)?,
        once(bin, work[1].0, work[1].1)?,
    ];
    let mut c = (0.0, 0.0);
    if cost {
        std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enabling bpf_stats")?;
        let s0 = new_prog_stats(&before)?;
        once(bin, work[1].0, work[1].1)?;
        let s1 = new_prog_stats(&before)?;
        std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0").ok();
        c = (
            (s1.0 - s0.0) as f64 / (s1.1 - s0.1).max(1) as f64,
            (s1.1 - s0.1) as f64,
        );
    }
    drop(bt);
    Ok((figures, c))
}

/// (table name, short name for the per-round lines, monitor) of the HTTP workload.
const HTTP_CONFIGS: [(&str, &str, Monitor); 4] = [
    ("no monitor", "none", Monitor::None),
    (
        "ebpf-sidecar --probes net (HTTP from packets, default)",
        "net",
        Monitor::Sidecar(&["--probes", "net"]),
    ),
    (
        "ebpf-sidecar --probes net --net-http off",
        "net http off",
        Monitor::Sidecar(&["--probes", "net", "--net-http", "off"]),
    ),
    (
        "bpftrace, tcplife-style accounting on sock:inet_sock_set_state",
        "bpftrace",
        Monitor::Bpftrace(BPFTRACE),
    ),
];

/// wrk on the node example app (keep-alive connections, the stack benchmark's setup), a fresh
/// node per measurement, the configurations alternating within each round.
fn http(seconds: u64, rounds: usize) -> Result<String> {
    let server = repo_root().join("examples/node-app/server.js");
    let (runs, order) = stack::compare(&server, &HTTP_CONFIGS, seconds, rounds)?;
    let (_, costs) = stack::cost_breakdown(&server, seconds, &["--probes", "net"])?;
    let med = |v: &[Wrk], f: fn(&Wrk) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let (rps0, p0) = (med(&runs[0], |w| w.rps), med(&runs[0], |w| w.p99_ms));
    let (node_cpu, wrk_cpus) = stack::cpus();
    let mut o = String::new();
    writeln!(
        o,
        "## Network: short HTTP requests, the node example app under wrk, median of {rounds} rounds\n\n\
         wrk -t{} -c{} -d{seconds}s --latency (keep-alive) on `GET {}` of examples/node-app/server.js \
         (host node {}), a fresh node per measurement, 1 s warm-up; node pinned to CPU {node_cpu}, \
         wrk to CPU {wrk_cpus}; the configurations alternate within each round, each round \
         starting one later. Rounds of one configuration differ by up to 10% on this VM: the \
         program cost below is the steadier figure.\n",
        stack::THREADS,
        stack::CONNECTIONS,
        stack::ROUTE,
        stack::node_version(),
    )?;
    writeln!(
        o,
        "| configuration | requests/s | loss | p99 latency | p99 vs no monitor |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---:|")?;
    for (i, (name, _, _)) in HTTP_CONFIGS.iter().enumerate() {
        let (rps, p99) = (med(&runs[i], |w| w.rps), med(&runs[i], |w| w.p99_ms));
        writeln!(
            o,
            "| {name} | {rps:.0} | {:.1}% | {p99:.2} ms | {:+.1}% |",
            (1.0 - rps / rps0) * 100.0,
            (p99 / p0 - 1.0) * 100.0
        )?;
    }
    let loss = (1.0 - med(&runs[1], |w| w.rps) / rps0) * 100.0;
    writeln!(
        o,
        "
Target ≤ 5% requests/s on HTTP: {loss:.1}% lost with the net family {}
",
        if loss <= 5.0 { "✔" } else { "✘" }
    )?;
    o.push_str(&costs);
    writeln!(o, "Per round, in the order run (requests/s, p99 ms):\n")?;
    for (r, line) in order.iter().enumerate() {
        writeln!(o, "- round {}: {}", r + 1, line.join("; "))?;
    }
    Ok(o)
}

pub fn run(repeat: usize, mib: u64, conns: u64, seconds: u64, rounds: usize) -> Result<String> {
    let mut o = if rounds > 0 {
        http(seconds, rounds)? + "\n"
    } else {
        String::new()
    };
    if repeat > 0 {
        o.push_str(&transfers(repeat, mib, conns)?);
    }
    Ok(o)
}

/// The stream and the short connections.
fn transfers(repeat: usize, mib: u64, conns: u64) -> Result<String> {
    let bin = workload("net_stream");
    once(&bin, "stream", mib / 4)?; // warm up
    let work = [("stream", mib), ("conns", conns)];

    // Other work shares these CPUs: the configurations alternate within each round so that
    // load changes hit all of them alike.
    let mut base = [Vec::new(), Vec::new()];
    let mut side = [Vec::new(), Vec::new()];
    let mut nohttp = [Vec::new(), Vec::new()];
    let mut trace = [Vec::new(), Vec::new()];
    let mut bt_cost = (0.0, 0.0);
    for round in 0..repeat {
        for (i, (mode, n)) in work.iter().enumerate() {
            base[i].push(once(&bin, mode, *n)?);
            side[i].push(under_sidecar(&bin, mode, *n, false, &[])?.0);
            nohttp[i].push(under_sidecar(&bin, mode, *n, false, OFF)?.0);
        }
        let last = round + 1 == repeat;
        let (t, cost) = under_bpftrace(&bin, &work, last)?;
        for i in 0..2 {
            trace[i].push(t[i]);
            eprintln!(
                "{}: no monitor {:.0}, sidecar {:.0}, sidecar http off {:.0}, bpftrace {:.0}",
                work[i].0, base[i][round], side[i][round], nohttp[i][round], t[i]
            );
        }
        if last {
            bt_cost = cost;
        }
    }
    let (_, stream_costs) = under_sidecar(&bin, "stream", mib, true, &[])?;
    let (_, conn_costs) = under_sidecar(&bin, "conns", conns, true, &[])?;
    let (_, stream_off) = under_sidecar(&bin, "stream", mib, true, OFF)?;
    let (_, conn_off) = under_sidecar(&bin, "conns", conns, true, OFF)?;

    let med = |v: &mut Vec<f64>| median(v);
    let (b0, b1) = (med(&mut base[0]), med(&mut base[1]));
    let (s0m, s1m) = (med(&mut side[0]), med(&mut side[1]));
    let (t0m, t1m) = (med(&mut trace[0]), med(&mut trace[1]));
    let (n0m, n1m) = (med(&mut nohttp[0]), med(&mut nohttp[1]));
    let loss = |x: f64, base: f64| (1.0 - x / base) * 100.0;

    let mut o = String::new();
    writeln!(
        o,
        "## Network: loopback TCP, median of {repeat} runs, each configuration side by side\n"
    )?;
    writeln!(
        o,
        "kernel {}, {} CPUs shared with other work (expect a few % of noise). Stream: one \
         connection carrying {mib} MiB. Short connections: {conns} × (connect, 64 B request, \
         64 B reply, close). Throughput with bpf_stats off; program cost in separate runs with \
         bpf_stats on.\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    )?;
    writeln!(
        o,
        "| configuration | stream MiB/s | loss | short connections/s | loss |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---:|")?;
    writeln!(o, "| no monitor | {b0:.0} | - | {b1:.0} | - |")?;
    writeln!(
        o,
        "| ebpf-sidecar, net family (default: cgroup_skb, TCP tracepoints, sys_enter/sys_exit) | {s0m:.0} | {:.1}% | {s1m:.0} | {:.1}% |",
        loss(s0m, b0),
        loss(s1m, b1)
    )?;
    writeln!(
        o,
        "| ebpf-sidecar, net family, --net-http off | {n0m:.0} | {:.1}% | {n1m:.0} | {:.1}% |",
        loss(n0m, b0),
        loss(n1m, b1)
    )?;
    writeln!(
        o,
        "| bpftrace, tcplife-style accounting on sock:inet_sock_set_state | {t0m:.0} | {:.1}% | {t1m:.0} | {:.1}% |",
        loss(t0m, b0),
        loss(t1m, b1)
    )?;
    writeln!(
        o,
        "\nTargets: throughput loss <= 3% on the transfer, <= 5% on short requests.\n"
    )?;
    cost_tables(
        &mut o,
        [&stream_costs, &conn_costs, &stream_off, &conn_off],
        bt_cost,
        (mib, conns),
        (b0, b1),
    )?;
    Ok(o)
}

/// Per-program cost and the BPF time added per unit of work: `costs` are the stream's and the
/// short connections', with HTTP recognition then with --net-http off; `base` the unmonitored
/// MiB/s and connections/s.
fn cost_tables(
    o: &mut String,
    [stream_costs, conn_costs, stream_off, conn_off]: [&[ProgCost]; 4],
    (bt_prog, bt_runs): (f64, f64),
    (mib, conns): (u64, u64),
    (b0, b1): (f64, f64),
) -> Result<()> {
    writeln!(
        o,
        "| program (bpf_stats) | stream: ns/run | stream: runs | short conns: ns/run | short conns: runs |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---:|")?;
    for c in stream_costs {
        let (cns, cruns) = conn_costs
            .iter()
            .find(|k| k.program == c.program)
            .map(|k| (k.ns_per_run(), k.runs))
            .unwrap_or((0.0, 0.0));
        writeln!(
            o,
            "| {} | {:.1} | {:.0} | {cns:.1} | {cruns:.0} |",
            c.program,
            c.ns_per_run(),
            c.runs
        )?;
    }
    writeln!(
        o,
        "| bpftrace's inet_sock_set_state program (short conns) | - | - | {bt_prog:.1} | {:.0} |",
        bt_runs
    )?;
    // Throughput on shared CPUs is noisy; the kernel time the programs add is not. Per unit of
    // work, against the unit's own cost without a monitor.
    let total = |c: &[ProgCost]| c.iter().map(|p| p.seconds * 1e9).sum::<f64>();
    let per_mib = total(stream_costs) / mib as f64;
    let per_conn = total(conn_costs) / conns as f64;
    let bt_per_conn = bt_prog * bt_runs / conns as f64;
    let off_per_mib = total(stream_off) / mib as f64;
    let off_per_conn = total(conn_off) / conns as f64;
    writeln!(
        o,
        "\n| BPF time added (bpf_stats) | per unit | share of the unit's unmonitored time |"
    )?;
    writeln!(o, "|---|---:|---:|")?;
    writeln!(
        o,
        "| ebpf-sidecar, stream, per MiB | {:.1} µs | {:.2}% |",
        per_mib / 1e3,
        per_mib / (1e9 / b0) * 100.0
    )?;
    writeln!(
        o,
        "| ebpf-sidecar, short connections, per connection | {:.2} µs | {:.1}% |",
        per_conn / 1e3,
        per_conn / (1e9 / b1) * 100.0
    )?;
    writeln!(
        o,
        "| ebpf-sidecar --net-http off, stream, per MiB | {:.1} µs | {:.2}% |",
        off_per_mib / 1e3,
        off_per_mib / (1e9 / b0) * 100.0
    )?;
    writeln!(
        o,
        "| ebpf-sidecar --net-http off, short connections, per connection | {:.2} µs | {:.1}% |",
        off_per_conn / 1e3,
        off_per_conn / (1e9 / b1) * 100.0
    )?;
    writeln!(
        o,
        "| bpftrace tcplife-style, short connections, per connection | {:.2} µs | {:.1}% |",
        bt_per_conn / 1e3,
        bt_per_conn / (1e9 / b1) * 100.0
    )?;
    Ok(())
}
