//! Issue "One kernel side per host": what every process of a host pays per syscall with 0, 1, 2,
//! 4, 8 and 16 sidecars (default set, each watching its own idle target), shared kernel side vs
//! private; kernel memory of our maps per extra sidecar; steady RSS per sidecar. bpftrace beside
//! for reference.
//!
//! The measured process is outside every target (a getppid loop in the bench's own cgroup): the
//! price a neighbour pays.

use std::fmt::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::util::*;

const COUNTS: &[usize] = &[0, 1, 2, 4, 8, 16];

/// A sidecar in `run` mode around an idle command: its own cgroup, its own target.
struct Idle {
    child: Child,
}

impl Idle {
    fn start(kernel_side: &str) -> Result<Self> {
        let port = free_port();
        let child = Command::new(sidecar_release_bin())
            .args(["run", "--kernel-side", kernel_side])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--", "sleep", "100000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t0 = Instant::now();
        while !matches!(http_get(port, "/healthz", None), Ok((200, _, _))) {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("sidecar did not serve within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { child })
    }
}

impl Drop for Idle {
    fn drop(&mut self) {
        // SAFETY: our own child; SIGTERM so it leaves the set.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn loop_ns(bin: &std::path::Path, calls: u64) -> Result<f64> {
    let out = Command::new(bin).arg(calls.to_string()).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn best(bin: &std::path::Path, calls: u64, repeat: usize) -> Result<f64> {
    let mut v = Vec::new();
    for _ in 0..repeat {
        v.push(loop_ns(bin, calls)?);
    }
    Ok(v.into_iter().fold(f64::INFINITY, f64::min))
}

/// Sum of bytes_memlock of every BPF map on the host (bpftool map show).
fn maps_memlock() -> Result<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show"])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["bytes_memlock"].as_u64())
        .sum())
}

struct Row {
    n: usize,
    ns: f64,
    memlock: u64,
    rss_kib: u64,
}

/// Sidecars added one by one up to each count in COUNTS; the loop measured at each count.
fn series(kernel_side: &str, bin: &std::path::Path, calls: u64, repeat: usize) -> Result<Vec<Row>> {
    let mut sidecars: Vec<Idle> = Vec::new();
    let mut rows = Vec::new();
    let base_mem = maps_memlock()?;
    for &n in COUNTS {
        while sidecars.len() < n {
            sidecars.push(Idle::start(kernel_side)?);
        }
        std::thread::sleep(Duration::from_secs(2));
        let ns = best(bin, calls, repeat)?;
        let rss_kib = if sidecars.is_empty() {
            0
        } else {
            sidecars
                .iter()
                .filter_map(|s| rss_kib(s.child.id()).map(|r| r.0))
                .sum::<u64>()
                / sidecars.len() as u64
        };
        let memlock = maps_memlock()?.saturating_sub(base_mem);
        eprintln!("{kernel_side}: {n} sidecars: {ns:.1} ns per call, maps {memlock} B");
        rows.push(Row {
            n,
            ns,
            memlock,
            rss_kib,
        });
    }
    Ok(rows)
}

pub fn run(calls: u64, repeat: usize) -> Result<String> {
    let bin = workload("getppid_loop");
    let shared = series("shared", &bin, calls, repeat)?;
    let private = series("private", &bin, calls, repeat)?;
    let bt = {
        let _bt = Bpftrace::start(
            "bench-kernel-side",
            "tracepoint:raw_syscalls:sys_enter { @[args->id] = count(); }",
        );
        best(&bin, calls, repeat)?
    };
    let none = shared[0].ns;
    let mut out = String::new();
    writeln!(
        out,
        "## Kernel side: what a process outside every target pays per getppid, by number of sidecars\n"
    )?;
    writeln!(
        out,
        "Loop of {calls} getppid in the bench's own cgroup (no sidecar watches it), best of {repeat}; \
         each sidecar is `run --kernel-side MODE -- sleep` with the default families, its own \
         cgroup. Kernel memory: the sum of `bytes_memlock` of every BPF map on the host, above \
         the count with no sidecar. RSS: the sidecars' mean VmRSS.\n"
    )?;
    writeln!(
        out,
        "| sidecars | shared: ns per call | added | private: ns per call | added | shared: maps memlock | private: maps memlock | shared: RSS per sidecar |"
    )?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (s, p) in shared.iter().zip(&private) {
        writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            s.n,
            s.ns,
            s.ns - none,
            p.ns,
            p.ns - none,
            s.memlock as f64 / 1048576.0,
            p.memlock as f64 / 1048576.0,
            s.rss_kib as f64 / 1024.0,
        )?;
    }
    writeln!(
        out,
        "| bpftrace (one, sys_enter count) | {bt:.1} | {:.1} | | | | | |",
        bt - none
    )?;
    let added = |rows: &[Row], n: usize| {
        rows.iter()
            .find(|r| r.n == n)
            .map(|r| r.ns - none)
            .unwrap_or(f64::NAN)
    };
    let mem = |rows: &[Row], n: usize| {
        rows.iter()
            .find(|r| r.n == n)
            .map(|r| r.memlock as f64)
            .unwrap_or(f64::NAN)
    };
    let ratio8 = added(&shared, 8) / added(&shared, 1);
    let ratio8p = added(&private, 8) / added(&private, 1);
    let per_extra = (mem(&shared, 8) - mem(&shared, 1)) / 7.0 / 1048576.0;
    let one_vs_private = (shared[1].ns - none) / (private[1].ns - none);
    let rss_max = shared.iter().map(|r| r.rss_kib).max().unwrap_or(0) as f64 / 1024.0;
    writeln!(out, "\n| figure | measured | target |\n|---|---:|---:|")?;
    writeln!(
        out,
        "| added cost with 8 sidecars / with 1, shared (private) | {ratio8:.2}x ({ratio8p:.2}x) | <= 1.25x |"
    )?;
    writeln!(
        out,
        "| kernel memory per extra sidecar, shared | {per_extra:.2} MiB | <= 2 MiB |"
    )?;
    writeln!(
        out,
        "| steady RSS per sidecar, shared | {rss_max:.1} MiB | <= 25 MiB |"
    )?;
    writeln!(
        out,
        "| one sidecar's added cost, shared / private | {:.2}x | <= 1.10x |",
        one_vs_private
    )?;
    Ok(out)
}
