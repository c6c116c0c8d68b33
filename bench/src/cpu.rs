//! Issue "CPU" targets: a CPU-bound workload with no monitor, the cpu family, the profiler at
//! 49 Hz and 999 Hz, and bpftrace's `profile:hz:49` stack counting, side by side.

use std::fmt::Write as _;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::util::*;

pub fn run(iterations: u64, repeat: usize) -> Result<String> {
    let bin = workload("spin")?;
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
        ensure_tracefs();
        let mut b = Command::new("bpftrace")
            .args(["-e", "profile:hz:49 { @[ustack, kstack] = count(); }"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("bpftrace")?;
        let mut first = String::new();
        std::io::BufReader::new(b.stdout.take().expect("piped")).read_line(&mut first)?;
        std::thread::sleep(Duration::from_millis(300));
        bt.push(plain()?);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(b.id() as i32, libc::SIGINT) };
        let _ = b.wait();
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
