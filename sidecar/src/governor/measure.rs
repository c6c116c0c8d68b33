//! What the sidecar costs the target, once a second: the kernel time of our programs in the
//! target's context over the target's CPU time (its cgroup's `cpu.stat`).
//!
//! With `--bpf-stats` (the kernel's run-time statistics on, which needs CAP_SYS_ADMIN) every
//! second is measured: each program's run time. Programs on every syscall of the host (raw
//! sys_enter/sys_exit) also run for the host's other processes, which leave at the filter: those
//! runs (the program's runs less the target's syscalls) cost the filter's price each, measured at
//! start by a burst of the sidecar's own syscalls, and are the neighbours' overhead, not the
//! target's. Other programs' time is counted as the target's (an upper bound: scheduler and block
//! hooks also run, briefly, for others).
//!
//! Without it, the cost is the target's syscall count (exact, from our own maps) times the model's
//! cost per syscall at the current settings. bpf_stats is not turned on for this: while it is,
//! every BPF program run on the host pays two clock reads, about what the latency timing the
//! budget is there to save; and toggling it later would need CAP_SYS_ADMIN kept after start,
//! which the sidecar drops. The model's figures were measured here (kernel 6.18 VM) with
//! bpf_stats; at start, while the sidecar still has its capabilities, a one-off stats window over
//! a burst of its own syscalls measures the filter's price on this machine, and the model is
//! scaled by it against the price it had here.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::probes::Probe;

pub const TICK: Duration = Duration::from_secs(1);
/// What one of the host's other processes costs a raw syscall program (it leaves at the filter),
/// as the start-up burst measures it on the machine the model was measured on.
const FILTER_NS_MODEL: f64 = 71.0;
/// Below this much CPU in a second (1% of a CPU) the target is idle: what the sidecar costs it
/// is then too little to be worth a step, and a share of next to nothing is mostly noise (the
/// neighbours' runs, priced at the filter's average, are not exact).
const IDLE_CPU_NS: u64 = 10_000_000;
/// Syscalls of the calibration burst.
const BURST: u32 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--bpf-stats`: every second measured.
    BpfStats,
    /// The target's syscalls times the model's cost per call (scaled by the start-up
    /// calibration when it could run).
    Model,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::BpfStats => "bpf_stats",
            Source::Model => "model",
        }
    }
}

/// One second's figures.
pub struct Measured {
    pub ratio: f64,
    /// The neighbours' share since the last tick (bpf_stats only).
    pub neighbour_ns: f64,
    /// The cost at the current level has been measured (not only predicted) since it changed.
    pub settled: bool,
}

#[derive(Clone)]
struct Snap {
    calls: u64,
    cpu_ns: u64,
}

type Progs = BTreeMap<String, (u64, u64)>;

pub struct Meter {
    source: Source,
    filter_ns: f64,
    /// This machine's filter price over the model machine's (1 when not calibrated).
    scale: f64,
    /// Kernel ns per target syscall, measured at these slot flags (bpf_stats).
    per_call: BTreeMap<u64, f64>,
    last: Option<Snap>,
    last_progs: Option<Progs>,
    settled: bool,
    warned_cpu: bool,
}

/// Programs on every syscall of the host (raw tracepoints, or tp_btf sys_exit): their runs for
/// other processes leave at the filter.
fn per_syscall(program: &str) -> bool {
    ["sys_enter", "sys_exit", "sys_exit_count", "sys_enter_raw"]
        .iter()
        .any(|s| program.ends_with(s))
}

/// Kernel ns per target syscall with latency timed on every call, and what sampling saves at
/// most (the two clock reads and their bookkeeping), as bpf_stats measured them on a target doing
/// one syscall per 20 µs of work (tests/budget.rs, kernel 6.18 VM): 250 ns at N = 1, 189 ns at
/// N = 64. Counting only: one 71 ns run (`bench foundation`).
const MODEL_LATENCY_NS: f64 = 250.0;
const MODEL_SAMPLING_SAVES_NS: f64 = 62.0;
const MODEL_COUNTING_NS: f64 = 71.0;

/// The model's kernel ns per target syscall at `flags`.
pub fn model_ns(flags: u64) -> f64 {
    if flags & sidecar_ebpf::SLOT_SYSCALL_LATENCY == 0 {
        return MODEL_COUNTING_NS;
    }
    let shift =
        (flags & sidecar_ebpf::SLOT_SYSCALL_SAMPLE_MASK) >> sidecar_ebpf::SLOT_SYSCALL_SAMPLE_SHIFT;
    MODEL_LATENCY_NS - MODEL_SAMPLING_SAVES_NS * (1.0 - 1.0 / f64::from(1u32 << shift))
}

fn programs(probes: &[Arc<dyn Probe>]) -> Progs {
    let mut out = Progs::new();
    for p in probes {
        for st in p.object().program_stats() {
            out.insert(st.program, (st.run_time_ns, st.run_count));
        }
    }
    out
}

fn target_calls(probes: &[Arc<dyn Probe>]) -> u64 {
    probes.iter().filter_map(|p| p.target_calls()).sum()
}

/// `usage_usec` of a cgroup v2 directory's `cpu.stat`, in ns (present without the cpu
/// controller too).
fn cgroup_cpu_ns(dir: &Path) -> Option<u64> {
    let mut text = String::new();
    std::fs::File::open(dir.join("cpu.stat"))
        .ok()?
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|us| us * 1000)
}

/// The target's and the neighbours' kernel ns between two program snapshots, the target having
/// made `calls` syscalls meanwhile.
fn split(before: &Progs, after: &Progs, calls: u64, filter_ns: f64) -> (f64, f64) {
    let (mut target, mut neighbours) = (0.0, 0.0);
    for (name, &(ns, runs)) in after {
        let (ns0, runs0) = before.get(name).copied().unwrap_or((ns, runs));
        let d_ns = ns.saturating_sub(ns0) as f64;
        let d_runs = runs.saturating_sub(runs0);
        if per_syscall(name) {
            let nb = (d_runs.saturating_sub(calls) as f64 * filter_ns).min(d_ns);
            neighbours += nb;
            target += d_ns - nb;
        } else {
            target += d_ns;
        }
    }
    (target, neighbours)
}

impl Meter {
    pub fn new(source: Source) -> Self {
        Self {
            source,
            filter_ns: FILTER_NS_MODEL,
            scale: 1.0,
            per_call: BTreeMap::new(),
            last: None,
            last_progs: None,
            settled: source == Source::Model,
            warned_cpu: false,
        }
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// The filter's price per run for the host's other processes: this thread (not the target)
    /// makes a burst of syscalls under bpf_stats (turned on for it when not already: needs
    /// CAP_SYS_ADMIN, still held at start). Without it, the model stays as measured here.
    pub fn calibrate(&mut self, probes: &[Arc<dyn Probe>]) {
        let _stats: Option<OwnedFd> = match self.source {
            Source::BpfStats => None,
            Source::Model => match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::info!(
                        "cpu budget: no bpf_stats to calibrate the cost model ({e}); using it as \
                         measured on the CI machine"
                    );
                    return;
                }
            },
        };
        let before = programs(probes);
        for _ in 0..BURST {
            // SAFETY: getppid takes no argument and cannot fail.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        let after = programs(probes);
        let mut per_run: Vec<f64> = after
            .iter()
            .filter(|(name, _)| per_syscall(name))
            .filter_map(|(name, &(ns, runs))| {
                let &(ns0, runs0) = before.get(name)?;
                let d_runs = runs.saturating_sub(runs0);
                (d_runs >= u64::from(BURST) / 2)
                    .then(|| ns.saturating_sub(ns0) as f64 / d_runs as f64)
            })
            .collect();
        per_run.sort_by(f64::total_cmp);
        let Some(&m) = per_run.get(per_run.len() / 2) else {
            return;
        };
        self.filter_ns = m;
        self.scale = m / FILTER_NS_MODEL;
        tracing::info!(
            filter_ns = m,
            model_scale = self.scale,
            "cpu budget: the filter's cost for other processes, calibrated"
        );
    }

    /// The cost per syscall at `flags`: measured there, else measured elsewhere and scaled by the
    /// model, else the model's.
    fn per_call(&self, flags: u64) -> f64 {
        if let Some(&v) = self.per_call.get(&flags) {
            return v;
        }
        match self.per_call.iter().next_back() {
            Some((&f, &v)) => v * model_ns(flags) / model_ns(f),
            None => model_ns(flags) * self.scale,
        }
    }

    /// The cost at `to` relative to the cost at `from`.
    pub fn cost_ratio(&self, to: u64, from: u64) -> f64 {
        self.per_call(to) / self.per_call(from).max(1e-9)
    }

    pub fn level_changed(&mut self) {
        self.settled = self.source == Source::Model;
    }

    pub fn tick(
        &mut self,
        probes: &[Arc<dyn Probe>],
        cgroup: Option<&Path>,
        flags: u64,
    ) -> Option<Measured> {
        let Some(cpu_ns) = cgroup.and_then(cgroup_cpu_ns) else {
            if !self.warned_cpu {
                self.warned_cpu = true;
                tracing::warn!(
                    "cpu budget: the target's CPU time is unknown (no cgroup v2 cpu.stat); \
                     the budget is not kept until it is"
                );
            }
            self.last = None;
            return None;
        };
        let now = Snap {
            calls: target_calls(probes),
            cpu_ns,
        };
        let progs = (self.source == Source::BpfStats).then(|| programs(probes));
        let prev = self.last.replace(now.clone());
        let prev_progs = std::mem::replace(&mut self.last_progs, progs.clone());
        let prev = prev?;
        let d_cpu = now.cpu_ns.saturating_sub(prev.cpu_ns);
        let d_calls = now.calls.saturating_sub(prev.calls);
        let mut neighbour_ns = 0.0;
        let target_ns = match (prev_progs, progs) {
            (Some(before), Some(after)) => {
                let (t, nb) = split(&before, &after, d_calls, self.filter_ns);
                if d_calls > 100 {
                    self.per_call.insert(flags, t / d_calls as f64);
                }
                neighbour_ns = nb;
                self.settled = true;
                t
            }
            _ => d_calls as f64 * self.per_call(flags),
        };
        let ratio = if d_cpu < IDLE_CPU_NS {
            0.0
        } else {
            target_ns / d_cpu as f64
        };
        Some(Measured {
            ratio,
            neighbour_ns,
            settled: self.settled,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_neighbours_runs_are_split_off_per_syscall_programs_only() {
        let before: Progs = [
            ("sys_enter".into(), (0, 0)),
            ("disk_io_start".into(), (0, 0)),
        ]
        .into_iter()
        .collect();
        let after: Progs = [
            ("sys_enter".into(), (10_000 + 40 * 1000, 100 + 1000)),
            ("disk_io_start".into(), (500, 5)),
        ]
        .into_iter()
        .collect();
        let (t, nb) = split(&before, &after, 100, 40.0);
        assert_eq!(nb, 40_000.0);
        assert_eq!(t, 10_000.0 + 500.0);
    }

    #[test]
    fn the_model_saves_the_clock_reads_of_untimed_calls() {
        let lat = sidecar_ebpf::SLOT_SYSCALL_LATENCY;
        assert_eq!(model_ns(lat), 250.0);
        let s16 = lat | (4 << sidecar_ebpf::SLOT_SYSCALL_SAMPLE_SHIFT);
        assert!((model_ns(s16) - (250.0 - 62.0 * 15.0 / 16.0)).abs() < 1e-9);
        assert_eq!(model_ns(sidecar_ebpf::SLOT_SYSCALL_COUNTING), 71.0);
    }

    #[test]
    fn cpu_stat_usage_is_read_in_ns() {
        let dir = std::env::temp_dir().join(format!("gov-cpu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("cpu.stat"),
            "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\n",
        )
        .unwrap();
        assert_eq!(cgroup_cpu_ns(&dir), Some(1_234_000));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
