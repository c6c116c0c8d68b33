//! What only the benches need: medians, /proc and bpftool readings, program costs from
//! `--bpf-stats` scrapes. The rest (binary, workloads, HTTP, bpftrace) is the integration
//! tests' harness, re-exported here.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

pub use integration::{
    Bpftrace, ensure_tracefs, free_port, http_get, node18_dtrace, repo_root, sidecar_release_bin,
    workload, workloads_dir,
};

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

/// Run `cmd` (a shell line) under `ebpf-sidecar run` with `args`; the command's first stdout line
/// and the metrics scraped just after it printed (the shell then lingers a moment).
pub fn under_sidecar(args: &[&str], cmd: &str) -> Result<(String, String)> {
    use std::io::BufRead;
    let port = free_port();
    let mut child = Command::new(sidecar_release_bin())
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
    let (_, _, metrics) = http_get(port, "/metrics", None)?;
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

/// CPU time (user + system, seconds) of a process so far, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Requests/s and the request count from wrk's output.
pub fn wrk_result(stdout: &[u8]) -> Result<(f64, f64)> {
    let text = String::from_utf8_lossy(stdout);
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .context("wrk output")?
        .trim()
        .parse()?;
    let reqs: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .context("wrk output")?
        .0
        .parse()?;
    Ok((rps, reqs))
}
