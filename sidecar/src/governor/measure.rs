//! What the sidecar costs the target, once a second: the kernel time of our programs in the
//! target's context (bpf_stats) over the target's CPU time (its cgroup's `cpu.stat`).
//!
//! bpf_stats is not left on: while it is, every BPF program run on the host pays two clock reads
//! (about as much as the latency timing the budget is there to save). It is turned on for a
//! one-second window every few seconds and after each level change; between windows the cost is
//! the target's syscall count (exact, from our own maps) times the cost per syscall the last
//! window measured at that level. With `--bpf-stats` it is on anyway and every second is measured.
//! Without CAP_SYS_ADMIN there is no bpf_stats at all: the cost per syscall is then the model's
//! (figures measured by `bench foundation` on the project's CI machine), and says so.
//!
//! Programs on every syscall of the host (raw sys_enter/sys_exit) also run for the host's other
//! processes, which leave at the filter: those runs (the program's runs less the target's
//! syscalls) cost the filter's price each, measured at start by a burst of the sidecar's own
//! syscalls, and are the neighbours' overhead, not the target's. Other programs' time is counted
//! as the target's (an upper bound: scheduler and block hooks also run, briefly, for others).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::probes::Probe;

pub const TICK: Duration = Duration::from_secs(1);
/// Ticks between two measurement windows.
const WINDOW_EVERY: u32 = 5;
/// What one of the host's other processes costs a raw syscall program (it leaves at the filter)
/// when calibration cannot run: an empty raw_tp program's run as bpf_stats times it here.
const FILTER_NS_DEFAULT: f64 = 46.0;
/// Syscalls of the calibration burst.
const BURST: u32 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--bpf-stats`: on all the time, every second measured.
    BpfStats,
    /// bpf_stats turned on for a window every few seconds (needs CAP_SYS_ADMIN kept).
    Windows,
    /// No bpf_stats: run counts times the model's cost per call.
    Model,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::BpfStats | Source::Windows => "bpf_stats",
            Source::Model => "model",
        }
    }
}

/// One second's figures.
pub struct Measured {
    pub ratio: f64,
    /// The neighbours' share since the last tick (extrapolated from the last window).
    pub neighbour_ns: f64,
    /// The cost at the current level has been measured (not only predicted) since it changed.
    pub settled: bool,
}

#[derive(Clone)]
struct Snap {
    calls: u64,
    cpu_ns: Option<u64>,
}

type Progs = BTreeMap<String, (u64, u64)>;

struct Window {
    _stats: Option<OwnedFd>,
    start: Snap,
    progs: Progs,
}

pub struct Meter {
    source: Source,
    filter_ns: f64,
    /// Kernel ns per target syscall, measured at these slot flags.
    per_call: BTreeMap<u64, f64>,
    last: Option<Snap>,
    /// Continuous bpf_stats: the programs at the last tick.
    last_progs: Option<Progs>,
    window: Option<Window>,
    since_window: u32,
    /// Neighbours' ns per second at the last window.
    neighbour_rate: f64,
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

/// The model's kernel ns per target syscall at `flags`: two program runs with latency (two clock
/// reads of 44 ns each in the 130 ns per run `bench foundation` measures, saved for the calls a
/// sample leaves untimed), one 71 ns run counting only.
pub fn model_ns(flags: u64) -> f64 {
    if flags & sidecar_ebpf::SLOT_SYSCALL_LATENCY == 0 {
        return 71.0;
    }
    let shift =
        (flags & sidecar_ebpf::SLOT_SYSCALL_SAMPLE_MASK) >> sidecar_ebpf::SLOT_SYSCALL_SAMPLE_SHIFT;
    2.0 * 130.0 - 88.0 * (1.0 - 1.0 / f64::from(1u32 << shift))
}

fn stats_on() -> Option<OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).ok()
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
            filter_ns: FILTER_NS_DEFAULT,
            per_call: BTreeMap::new(),
            last: None,
            last_progs: None,
            window: None,
            since_window: WINDOW_EVERY,
            neighbour_rate: 0.0,
            settled: false,
            warned_cpu: false,
        }
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// The filter's price per run for the host's other processes: this thread (not the target)
    /// makes a burst of syscalls under bpf_stats.
    pub fn calibrate(&mut self, probes: &[Arc<dyn Probe>]) {
        if self.source == Source::Model {
            return;
        }
        let _stats = match self.source {
            Source::Windows => match stats_on() {
                Some(fd) => Some(fd),
                None => {
                    tracing::warn!(
                        "cpu budget: bpf_stats could not be turned on; using the cost model"
                    );
                    self.source = Source::Model;
                    return;
                }
            },
            _ => None,
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
        if let Some(&m) = per_run.get(per_run.len() / 2) {
            self.filter_ns = m;
        }
        tracing::info!(
            filter_ns = self.filter_ns,
            programs = per_run.len(),
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
            None => model_ns(flags),
        }
    }

    /// The cost at `to` relative to the cost at `from`.
    pub fn cost_ratio(&self, to: u64, from: u64) -> f64 {
        self.per_call(to) / self.per_call(from).max(1e-9)
    }

    pub fn level_changed(&mut self) {
        self.settled = self.source == Source::Model;
        // Measure the new level at once.
        self.since_window = WINDOW_EVERY;
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
            cpu_ns: Some(cpu_ns),
        };
        let prev = self.last.replace(now.clone());
        let window = match self.source {
            Source::Windows => self.window_tick(probes, &now, flags),
            Source::BpfStats => {
                let progs = programs(probes);
                let prev_progs = self.last_progs.replace(progs.clone());
                match (prev_progs, &prev) {
                    (Some(pp), Some(p)) => {
                        let calls = now.calls.saturating_sub(p.calls);
                        let (t, nb) = split(&pp, &progs, calls, self.filter_ns);
                        if calls > 100 {
                            self.per_call.insert(flags, t / calls as f64);
                        }
                        self.neighbour_rate = nb;
                        self.settled = true;
                        Some((t, cpu_ns.saturating_sub(p.cpu_ns.unwrap_or(cpu_ns))))
                    }
                    _ => None,
                }
            }
            Source::Model => None,
        };
        let prev = prev?;
        let d_cpu = cpu_ns.saturating_sub(prev.cpu_ns.unwrap_or(cpu_ns));
        let d_calls = now.calls.saturating_sub(prev.calls);
        let (target_ns, cpu) = match window {
            Some(w) => w,
            None => {
                if self.source == Source::Model {
                    self.settled = true;
                }
                (d_calls as f64 * self.per_call(flags), d_cpu)
            }
        };
        let ratio = if cpu == 0 {
            0.0
        } else {
            target_ns / cpu as f64
        };
        Some(Measured {
            ratio,
            neighbour_ns: self.neighbour_rate,
            settled: self.settled,
        })
    }

    /// Windows: close the one open for a second (its figures: the target's kernel ns and CPU
    /// ns over it), or open the next when due.
    fn window_tick(
        &mut self,
        probes: &[Arc<dyn Probe>],
        now: &Snap,
        flags: u64,
    ) -> Option<(f64, u64)> {
        if let Some(w) = self.window.take() {
            let progs = programs(probes);
            drop(w._stats);
            let calls = now.calls.saturating_sub(w.start.calls);
            let (t, nb) = split(&w.progs, &progs, calls, self.filter_ns);
            if calls > 100 {
                self.per_call.insert(flags, t / calls as f64);
            }
            self.neighbour_rate = nb;
            self.settled = true;
            self.since_window = 0;
            let cpu = now
                .cpu_ns
                .unwrap_or(0)
                .saturating_sub(w.start.cpu_ns.unwrap_or(0));
            return Some((t, cpu));
        }
        self.since_window += 1;
        if self.since_window >= WINDOW_EVERY {
            let fd = stats_on();
            if fd.is_none() {
                tracing::warn!(
                    "cpu budget: bpf_stats could not be turned on (CAP_SYS_ADMIN gone?); \
                     using the cost model from now on"
                );
                self.source = Source::Model;
                return None;
            }
            self.window = Some(Window {
                _stats: fd,
                start: now.clone(),
                progs: programs(probes),
            });
        }
        None
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
        assert_eq!(model_ns(lat), 260.0);
        let s16 = lat | (4 << sidecar_ebpf::SLOT_SYSCALL_SAMPLE_SHIFT);
        assert!((model_ns(s16) - (260.0 - 88.0 * 15.0 / 16.0)).abs() < 1e-9);
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
