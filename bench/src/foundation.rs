//! Issue "Foundation" targets: a loop of N getppid with no monitor, with ebpf-sidecar (syscalls
//! family on) and with bpftrace counting the same tracepoints by syscall. Also the sidecar's
//! per-program cost (bpf_stats), RSS, /metrics latency and time to first scrape.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use sidecar::probes::registry::DEFAULT_FAMILIES;

use crate::util::*;

const BPFTRACE: &str = "tracepoint:raw_syscalls:sys_enter { @enter[args->id] = count(); } \
                        tracepoint:raw_syscalls:sys_exit { @exit[args->id] = count(); }";

fn loop_ns(bin: &std::path::Path, calls: u64) -> Result<f64> {
    let out = Command::new(bin).arg(calls.to_string()).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

struct SidecarRun {
    ns_per_call: f64,
    prog_ns: f64,
    rss_kib: u64,
    hwm_kib: u64,
    first_scrape: Duration,
    scrape_p50: Duration,
    scrape_max: Duration,
}

/// One run of the loop under `ebpf-sidecar run`, scraping while the command lingers.
/// With `stats`, bpf_stats is on (program cost is measured, and the loop pays for the measuring).
fn sidecar_run(
    bin: &std::path::Path,
    calls: u64,
    extra: &[&str],
    stats: bool,
) -> Result<SidecarRun> {
    sidecar_run_probes(bin, calls, "syscalls", extra, stats)
}

/// The same with the families `probes`.
fn sidecar_run_probes(
    bin: &std::path::Path,
    calls: u64,
    probes: &str,
    extra: &[&str],
    stats: bool,
) -> Result<SidecarRun> {
    let port = free_port();
    let script = format!("{} {calls}; sleep 4", bin.display());
    let t0 = Instant::now();
    let mut child = Command::new(sidecar_release_bin())
        .args([
            "run",
            "--probes",
            probes,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(if stats { &["--bpf-stats"][..] } else { &[] })
        // A fixed configuration: the governor would sample this loop's latency (see
        // `sample_prices` for what that costs).
        .args(if extra.contains(&"--cpu-budget") {
            &[][..]
        } else {
            &["--cpu-budget", "0"]
        })
        .args(extra)
        .args(["--", "/bin/sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let first_scrape = loop {
        if matches!(http_get(port, "/metrics", None), Ok((200, _, _))) {
            break t0.elapsed();
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("sidecar did not serve within 10 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ns_per_call: f64 = lines.next().context("loop output")??.trim().parse()?;
    // The loop is done and sh sleeps: measure the exporter with the maps full.
    let mut times = Vec::new();
    let mut body = String::new();
    for _ in 0..100 {
        let t = Instant::now();
        let (st, _, b) = http_get(port, "/metrics", None)?;
        times.push(t.elapsed());
        if st != 200 {
            bail!("/metrics returned {st}");
        }
        body = b;
    }
    times.sort();
    let (rss_kib, hwm_kib) = rss_kib(pid).unwrap_or((0, 0));
    let run_s = metric_sum(
        &body,
        "ebpf_sidecar_bpf_program_run_seconds_total{program=\"sys_",
    );
    let runs = metric_sum(&body, "ebpf_sidecar_bpf_program_runs_total{program=\"sys_");
    child.wait()?;
    Ok(SidecarRun {
        ns_per_call,
        prog_ns: run_s * 1e9 / runs.max(1.0),
        rss_kib,
        hwm_kib,
        first_scrape,
        scrape_p50: times[times.len() / 2],
        scrape_max: *times.last().unwrap(),
    })
}

/// `repeat` loops under bpftrace; returns (ns per call each run, ns per program run).
fn bpftrace_runs(bin: &std::path::Path, calls: u64, repeat: usize) -> Result<(Vec<f64>, f64)> {
    let before = prog_ids()?;
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").context("enabling bpf_stats")?;
    let bt = Bpftrace::start("bench-foundation", BPFTRACE);
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0")?;
    let mut ns = Vec::new();
    for _ in 0..repeat {
        ns.push(loop_ns(bin, calls)?);
    }
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")?;
    let s0 = new_prog_stats(&before)?;
    loop_ns(bin, calls)?;
    let s1 = new_prog_stats(&before)?;
    drop(bt);
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0").ok();
    Ok((ns, (s1.0 - s0.0) as f64 / (s1.1 - s0.1).max(1) as f64))
}

/// `repeat` loops with raw_tp programs that return at once: the floor of any syscall probe.
fn bare_runs(bin: &std::path::Path, calls: u64, repeat: usize) -> Result<(Vec<f64>, f64)> {
    static BARE: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bare.bpf.o"));
    let before = prog_ids()?;
    let mut ebpf = aya::Ebpf::load(BARE)?;
    for (prog, tp) in [("bare_enter", "sys_enter"), ("bare_exit", "sys_exit")] {
        let p: &mut aya::programs::RawTracePoint = ebpf.program_mut(prog).unwrap().try_into()?;
        p.load()?;
        p.attach(tp)?;
    }
    let mut ns = Vec::new();
    for _ in 0..repeat {
        ns.push(loop_ns(bin, calls)?);
    }
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let s0 = new_prog_stats(&before)?;
    loop_ns(bin, calls)?;
    let s1 = new_prog_stats(&before)?;
    drop(stats);
    drop(ebpf);
    Ok((ns, (s1.0 - s0.0) as f64 / (s1.1 - s0.1).max(1) as f64))
}

pub fn run(calls: u64, repeat: usize) -> Result<String> {
    let bin = workload("getppid_loop");
    loop_ns(&bin, 100_000)?; // warm caches

    let mut base: Vec<f64> = (0..repeat)
        .map(|_| loop_ns(&bin, calls))
        .collect::<Result<_>>()?;
    let (mut bare, bare_prog) = bare_runs(&bin, calls, repeat)?;
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..repeat {
        on.push(sidecar_run(&bin, calls, &[], false)?);
        off.push(sidecar_run(
            &bin,
            calls,
            &["--syscall-latency", "off"],
            false,
        )?);
    }
    // Program cost: one more run of each with bpf_stats on.
    let on_cost = sidecar_run(&bin, calls, &[], true)?.prog_ns;
    let off_cost = sidecar_run(&bin, calls, &["--syscall-latency", "off"], true)?.prog_ns;
    let (mut bt, bt_prog) = bpftrace_runs(&bin, calls, repeat)?;

    let b = median(&mut base);
    let floor = median(&mut bare);
    let t = median(&mut bt);
    let mut o = String::new();
    writeln!(
        o,
        "## Foundation: a loop of {calls} getppid, median of {repeat} runs\n"
    )?;
    writeln!(
        o,
        "kernel {}, {} CPUs. Slowdowns are measured with bpf_stats off; the per-run cost in a",
        kernel(),
        num_cpus()
    )?;
    writeln!(
        o,
        "separate run with bpf_stats on (its own clock reads are part of every figure in that column).\n"
    )?;
    writeln!(
        o,
        "| configuration | ns per call | slowdown | added ns per call | BPF ns per program run (bpf_stats) |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---:|")?;
    writeln!(o, "| no monitor | {b:.1} | 1.00x | - | - |")?;
    writeln!(
        o,
        "| floor: raw_tp programs that return at once | {floor:.1} | {:.2}x | {:.1} | {bare_prog:.1} |",
        floor / b,
        floor - b
    )?;
    let mut rows = Vec::new();
    for (name, runs, prog) in [
        ("ebpf-sidecar, syscalls family (default)", &on, on_cost),
        (
            "ebpf-sidecar, syscalls family, --syscall-latency off",
            &off,
            off_cost,
        ),
    ] {
        let s = median(&mut runs.iter().map(|r| r.ns_per_call).collect::<Vec<_>>());
        writeln!(
            o,
            "| {name} | {s:.1} | {:.2}x | {:.1} | {prog:.1} |",
            s / b,
            s - b
        )?;
        rows.push((s, prog));
    }
    writeln!(
        o,
        "| bpftrace, sys_enter/sys_exit count by syscall | {t:.1} | {:.2}x | {:.1} | {bt_prog:.1} |",
        t / b,
        t - b
    )?;
    writeln!(o)?;
    family_prices(&mut o, &bin, calls, repeat, b, &rows)?;
    writeln!(o)?;
    sample_prices(&mut o, &bin, calls, repeat, b)?;
    writeln!(o)?;
    sidecar_figures(&mut o, &on, &off, &rows, bare_prog, b, t, repeat)?;
    Ok(o)
}

/// `--syscall-latency-sample N` (what the CPU budget's first steps do): the price of a syscall
/// of the target with latency timed for 1 call in N, against every call (N = 1) and counting
/// only.
fn sample_prices(
    o: &mut String,
    bin: &std::path::Path,
    calls: u64,
    repeat: usize,
    base: f64,
) -> Result<()> {
    writeln!(
        o,
        "Syscall latency sampled 1 in N (`--syscall-latency-sample N`, the CPU budget's first steps), median of {repeat}:\n"
    )?;
    writeln!(
        o,
        "| N | ns per call | added ns per call | BPF ns per program run (bpf_stats) |"
    )?;
    writeln!(o, "|---:|---:|---:|---:|")?;
    for n in ["1", "4", "16", "64"] {
        let extra = ["--syscall-latency-sample", n];
        let mut ns: Vec<f64> = (0..repeat)
            .map(|_| sidecar_run(bin, calls, &extra, false).map(|r| r.ns_per_call))
            .collect::<Result<_>>()?;
        let prog = sidecar_run(bin, calls, &extra, true)?.prog_ns;
        let s = median(&mut ns);
        writeln!(o, "| {n} | {s:.1} | {:.1} | {prog:.1} |", s - base)?;
    }
    Ok(())
}

/// What every syscall of the host pays for the families that hook syscalls, alone and together:
/// the per-call part of any workload's overhead (the stack bench's app makes ~2 syscalls per
/// request). `rows` are the syscalls family's (ns per call, BPF ns per run), latency on then off.
fn family_prices(
    o: &mut String,
    bin: &std::path::Path,
    calls: u64,
    repeat: usize,
    b: f64,
    rows: &[(f64, f64)],
) -> Result<()> {
    writeln!(
        o,
        "Per-syscall price of the families that hook syscalls (same loop, median of {repeat}; \
         alone, security and net attach to a few syscalls' own tracepoints, which still puts the \
         kernel's perf callback on every syscall; next to the syscalls family with latency on, \
         they run from its programs by tail call instead):\n"
    )?;
    writeln!(o, "| families | ns per call | added ns per call |")?;
    writeln!(o, "|---|---:|---:|")?;
    // The syscalls family alone, with and without latency, is the first table's two sidecar rows.
    let off_latency = &["--syscall-latency", "off"][..];
    for (name, probes, extra, measured) in [
        ("security", "security", &[][..], None),
        ("net", "net", &[][..], None),
        ("syscalls, counting only", "", &[][..], Some(rows[1].0)),
        ("syscalls", "", &[][..], Some(rows[0].0)),
        (
            "syscalls,security,net",
            "syscalls,security,net",
            &[][..],
            None,
        ),
        (
            "default set, --syscall-latency off",
            DEFAULT_FAMILIES,
            off_latency,
            None,
        ),
        ("default set", DEFAULT_FAMILIES, &[][..], None),
    ] {
        let s = match measured {
            Some(s) => s,
            None => median(
                &mut (0..repeat)
                    .map(|_| Ok(sidecar_run_probes(bin, calls, probes, extra, false)?.ns_per_call))
                    .collect::<Result<Vec<f64>>>()?,
            ),
        };
        writeln!(o, "| {name} | {s:.1} | {:.1} |", s - b)?;
    }
    Ok(())
}

/// The sidecar's own figures against the targets.
#[allow(clippy::too_many_arguments)]
fn sidecar_figures(
    o: &mut String,
    on: &[SidecarRun],
    off: &[SidecarRun],
    rows: &[(f64, f64)],
    bare_prog: f64,
    b: f64,
    t: f64,
    repeat: usize,
) -> Result<()> {
    let rss = on.iter().chain(off).map(|r| r.rss_kib).max().unwrap_or(0);
    let hwm = on.iter().chain(off).map(|r| r.hwm_kib).max().unwrap_or(0);
    let first = on.iter().chain(off).map(|r| r.first_scrape).max().unwrap();
    let p50 = median(
        &mut on
            .iter()
            .map(|r| r.scrape_p50.as_secs_f64() * 1e3)
            .collect::<Vec<_>>(),
    );
    let pmax = on.iter().map(|r| r.scrape_max).max().unwrap();
    writeln!(o, "| sidecar figure | measured | target |")?;
    writeln!(o, "|---|---:|---:|")?;
    writeln!(
        o,
        "| BPF ns per program run, default / latency off / floor | {:.1} / {:.1} / {bare_prog:.1} ns | <= 50 ns |",
        rows[0].1, rows[1].1
    )?;
    writeln!(
        o,
        "| slowdown, default / latency off vs bpftrace | {:.2}x / {:.2}x vs {:.2}x | <= half of bpftrace's |",
        rows[0].0 / b,
        rows[1].0 / b,
        t / b
    )?;
    writeln!(
        o,
        "| RSS now (peak) | {:.1} MiB ({:.1} MiB) | <= 30 MB |",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    )?;
    writeln!(
        o,
        "| /metrics latency p50 / max of 100 scrapes | {p50:.2} ms / {:.2} ms | <= 10 ms |",
        pmax.as_secs_f64() * 1e3
    )?;
    writeln!(
        o,
        "| first scrape after start (worst of {}) | {:.0} ms | <= 1 s |",
        2 * repeat,
        first.as_secs_f64() * 1e3
    )?;
    Ok(())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
