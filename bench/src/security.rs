//! Issue "Security" target: an exec storm (20k fork+exec of /bin/true) with no monitor and with
//! the security event stream on; events counted and lost.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::Result;

use crate::util::*;

pub fn run(execs: u64, repeat: usize) -> Result<String> {
    let bin = workload("exec_storm")?;
    let secs = |s: &str| -> Result<f64> { Ok(s.trim().parse()?) };
    let mut base = Vec::new();
    let mut on = Vec::new();
    let mut events = 0.0;
    let mut lost = 0.0;
    for _ in 0..repeat {
        let out = Command::new(&bin).arg(execs.to_string()).output()?;
        base.push(secs(&String::from_utf8_lossy(&out.stdout))?);
        let (line, m) = under_sidecar(
            &["--probes", "security"],
            &format!("{} {execs}", bin.display()),
        )?;
        on.push(secs(&line)?);
        events = metric_value(&m, "ebpf_sidecar_security_events_total{kind=\"exec\"}");
        lost = metric_value(&m, "ebpf_sidecar_events_lost_total{probe=\"security\"}");
    }
    let (b, s) = (median(&mut base), median(&mut on));
    let mut o = String::new();
    writeln!(
        o,
        "## Security: exec storm of {execs} fork+exec of /bin/true, median of {repeat} runs\n"
    )?;
    writeln!(o, "| configuration | seconds | execs/s | slowdown |")?;
    writeln!(o, "|---|---:|---:|---:|")?;
    writeln!(
        o,
        "| no monitor | {b:.3} | {:.0} | 1.00x |",
        execs as f64 / b
    )?;
    writeln!(
        o,
        "| ebpf-sidecar --probes security (event stream on) | {s:.3} | {:.0} | {:.3}x |",
        execs as f64 / s,
        s / b
    )?;
    writeln!(o)?;
    writeln!(
        o,
        "Last run: {events:.0} exec events counted for {} execs (the storm's, plus sh, the storm binary and sleep of the run), {lost:.0} lost.",
        execs + 3
    )?;
    Ok(o)
}
