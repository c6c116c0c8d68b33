//! `--cpu-budget`: the sidecar keeps the kernel time its programs spend in the target's context
//! under a share of the target's own CPU time. Over budget, it steps features down one level at a
//! time in a fixed order ([`Step`]); well under budget for a while, it steps back up. Counting
//! (calls, errors, packets, bytes, execs, events) is never a step: only timing, parsing and
//! sampling are.
//!
//! What a step changes is a bit of this slot's `sidecar_slots` flags, which the programs read at
//! every run: no program is detached, reloaded or attached again.

mod measure;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::DescriptorEncoder;

use crate::events::EventSink;
use crate::kernel_side::Handle;
use crate::metrics::Metric;
use crate::probes::Probe;
pub use measure::Source;

pub const BUDGET: Metric = Metric::gauge(
    "ebpf_sidecar_cpu_budget_ratio",
    "--cpu-budget: the share of the target's CPU time the sidecar's kernel programs may take in the target's context.",
);
pub const OVERHEAD: Metric = Metric::gauge(
    "ebpf_sidecar_overhead_ratio",
    "Kernel time of the sidecar's programs in the target's context over the target's CPU time (cgroup cpu.stat), last second.",
);
pub const LEVEL: Metric = Metric::gauge(
    "ebpf_sidecar_governor_level",
    "How many of the CPU budget's steps are taken now (0: every feature as asked).",
);
pub const FEATURE: Metric = Metric::gauge(
    "ebpf_sidecar_feature_enabled",
    "1 while a feature the CPU budget may turn down is on, 0 while it is off.",
)
.labels(&["feature"]);
pub const SAMPLED: Metric = Metric::gauge(
    "ebpf_sidecar_syscall_latency_sampled_ratio",
    "Share of the target's syscalls whose latency is timed (1: all; 1/N: about one in N per thread, each counting for N in the duration histograms and syscall_seconds_total).",
);
pub const NEIGHBOUR: Metric = Metric::counter(
    "ebpf_sidecar_neighbour_overhead_seconds",
    "Kernel time of the sidecar's per-syscall programs run by the host's other processes (they leave at the filter): their runs less the target's syscalls, at the filter's price measured at start (--bpf-stats only).",
);
pub const SOURCE: Metric = Metric::info(
    "ebpf_sidecar_overhead_source",
    "Where ebpf_sidecar_overhead_ratio comes from: bpf_stats (--bpf-stats: measured every second) or model (the target's syscalls times the cost per call measured on the project's CI machine, scaled by a calibration at start).",
)
.labels(&["source"]);

/// One step down, in the order they are taken. Only the steps whose feature the user turned on
/// are in a governor's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Syscall latency timed for about 1 call in 2^k (k = 1..=6: 2, 4, … 64).
    SyscallSample(u32),
    /// The files family pauses (its counts stop until it is back).
    FilesOff,
    /// The profiler keeps 1 sample in 4, each counting for 4.
    ProfileQuarter,
    /// `--runtime-calls`: the runtimes' function-entry counts.
    RuntimeCalls,
    /// Protocol recognition (HTTP/1, Redis, PostgreSQL, MySQL; with it their timing) in the net
    /// family.
    Http,
}

const SAMPLE_MAX_SHIFT: u32 = 6;
const HTTP_FLAGS: u64 = sidecar_ebpf::SLOT_NET_HTTP_PACKETS
    | sidecar_ebpf::SLOT_NET_HTTP_SYSCALLS
    | sidecar_ebpf::SLOT_NET_HTTP_PATHS
    | sidecar_ebpf::SLOT_NET_PROTOS
    | sidecar_ebpf::SLOT_NET_HTTPS;

impl Step {
    fn describe(self) -> String {
        match self {
            Step::SyscallSample(k) => format!("syscall latency timed for 1 call in {}", 1 << k),
            Step::FilesOff => "files family paused".into(),
            Step::ProfileQuarter => "profiler at a quarter of its rate".into(),
            Step::RuntimeCalls => "runtime function calls off".into(),
            Step::Http => "HTTP recognition off (HTTPS uprobes detached)".into(),
        }
    }

    fn apply(self, flags: u64) -> u64 {
        match self {
            Step::SyscallSample(k) => {
                (flags & !sidecar_ebpf::SLOT_SYSCALL_SAMPLE_MASK)
                    | (u64::from(k) << sidecar_ebpf::SLOT_SYSCALL_SAMPLE_SHIFT)
            }
            Step::FilesOff => flags | sidecar_ebpf::SLOT_FILES_OFF,
            Step::ProfileQuarter => {
                (flags & !sidecar_ebpf::SLOT_PROFILE_MASK) | (2 << sidecar_ebpf::SLOT_PROFILE_SHIFT)
            }
            Step::RuntimeCalls => flags & !sidecar_ebpf::SLOT_RUNTIME_CALLS,
            Step::Http => flags & !HTTP_FLAGS,
        }
    }
}

/// Steps for families that are loaded (files, profile have no flag of their own to say so).
#[derive(Clone, Copy, Debug, Default)]
pub struct Loaded {
    pub files: bool,
    pub profile: bool,
}

/// The flags of the features whose family is not loaded: nothing to turn down there.
pub fn loaded_only(base: u64, families: &[&str]) -> u64 {
    let mut f = base;
    if !families.contains(&"runtimes") {
        f &= !sidecar_ebpf::SLOT_RUNTIME_CALLS;
    }
    if !families.contains(&"net") {
        f &= !HTTP_FLAGS;
    }
    f
}

/// The steps available for a slot's flags as the user asked for them, in order.
pub fn steps(base: u64, loaded: Loaded) -> Vec<Step> {
    let mut out = Vec::new();
    if base & sidecar_ebpf::SLOT_SYSCALL_LATENCY != 0 {
        // From what --syscall-latency-sample asked for.
        out.extend((sample_shift(base) + 1..=SAMPLE_MAX_SHIFT).map(Step::SyscallSample));
    }
    if loaded.files {
        out.push(Step::FilesOff);
    }
    if loaded.profile {
        out.push(Step::ProfileQuarter);
    }
    if base & sidecar_ebpf::SLOT_RUNTIME_CALLS != 0 {
        out.push(Step::RuntimeCalls);
    }
    if base
        & (sidecar_ebpf::SLOT_NET_HTTP_PACKETS
            | sidecar_ebpf::SLOT_NET_HTTP_SYSCALLS
            | sidecar_ebpf::SLOT_NET_PROTOS)
        != 0
    {
        out.push(Step::Http);
    }
    out
}

/// The flags at `level` (the first `level` steps taken).
fn flags_at(base: u64, steps: &[Step], level: usize) -> u64 {
    steps[..level].iter().fold(base, |f, s| s.apply(f))
}

/// Features the budget may turn down, for `ebpf_sidecar_feature_enabled`.
fn features(base: u64, loaded: Loaded, flags: u64) -> Vec<(&'static str, bool)> {
    let mut out = Vec::new();
    if base & sidecar_ebpf::SLOT_SYSCALL_LATENCY != 0 {
        out.push((
            "syscall_latency_every_call",
            flags & sidecar_ebpf::SLOT_SYSCALL_SAMPLE_MASK == 0,
        ));
    }
    if loaded.files {
        out.push(("files", flags & sidecar_ebpf::SLOT_FILES_OFF == 0));
    }
    if loaded.profile {
        out.push((
            "profile_full_rate",
            flags & sidecar_ebpf::SLOT_PROFILE_MASK == 0,
        ));
    }
    if base & sidecar_ebpf::SLOT_RUNTIME_CALLS != 0 {
        out.push((
            "runtime_calls",
            flags & sidecar_ebpf::SLOT_RUNTIME_CALLS != 0,
        ));
    }
    if base & HTTP_FLAGS != 0 {
        out.push(("http", flags & HTTP_FLAGS != 0));
    }
    out
}

fn sample_shift(flags: u64) -> u32 {
    ((flags & sidecar_ebpf::SLOT_SYSCALL_SAMPLE_MASK) >> sidecar_ebpf::SLOT_SYSCALL_SAMPLE_SHIFT)
        as u32
}

/// Step back up only below this share of the budget (predicted at the level above)...
const UP_BELOW: f64 = 0.8;
/// ...after this long under half the budget, doubled each time a step up had to be taken back
/// within `FLAP` (up to `HOLD_MAX`).
const HOLD: Duration = Duration::from_secs(5);
const HOLD_MAX: Duration = Duration::from_secs(300);
const FLAP: Duration = Duration::from_secs(30);

struct State {
    level: usize,
    ratio: f64,
    neighbour_ns: f64,
    under_since: Option<Instant>,
    hold: Duration,
    last_up: Option<Instant>,
}

pub struct Governor {
    /// The budget as a ratio (1% = 0.01).
    budget: f64,
    base: u64,
    loaded: Loaded,
    steps: Vec<Step>,
    state: Mutex<State>,
    meter: Mutex<measure::Meter>,
}

impl Governor {
    /// A governor for this sidecar's slot (`budget_percent` > 0) with the flags `base` as the
    /// user asked, for the families loaded.
    pub fn new(budget_percent: f64, base: u64, families: &[&str], source: Source) -> Self {
        let base = loaded_only(base, families);
        let loaded = Loaded {
            files: families.contains(&"files"),
            profile: families.contains(&"profile"),
        };
        Self {
            budget: budget_percent / 100.0,
            base,
            loaded,
            steps: steps(base, loaded),
            state: Mutex::new(State {
                level: 0,
                ratio: 0.0,
                neighbour_ns: 0.0,
                under_since: None,
                hold: HOLD,
                last_up: None,
            }),
            meter: Mutex::new(measure::Meter::new(source)),
        }
    }

    pub fn source(&self) -> Source {
        self.meter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .source()
    }

    /// Measure the filter's cost for the host's other processes (needs bpf_stats: call it while
    /// the capabilities are still there).
    pub fn calibrate(&self, shared_probes: &[Arc<dyn crate::probes::Probe>]) {
        self.meter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .calibrate(shared_probes);
    }

    pub fn encode(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let flags = flags_at(self.base, &self.steps, st.level);
        BUDGET.gauge_series(enc, [(vec![], self.budget)])?;
        OVERHEAD.gauge_series(enc, [(vec![], st.ratio)])?;
        LEVEL.gauge_series(enc, [(vec![], st.level as u64)])?;
        FEATURE.gauge_series(
            enc,
            features(self.base, self.loaded, flags)
                .into_iter()
                .map(|(f, on)| (vec![("feature", f.to_string())], u64::from(on))),
        )?;
        if self.base & sidecar_ebpf::SLOT_SYSCALL_LATENCY != 0 {
            SAMPLED.gauge_series(
                enc,
                [(vec![], 1.0 / f64::from(1u32 << sample_shift(flags)))],
            )?;
        }
        if self.source() == Source::BpfStats {
            NEIGHBOUR.counter_series(enc, [(vec![], st.neighbour_ns / 1e9)])?;
        }
        SOURCE.info_series(enc, &vec![("source", self.source().name().to_string())])
    }

    /// One second's worth: measure, then maybe change level.
    fn tick(&self, shared: &Ctx) {
        let cgroup = (shared.cgroup)();
        let level = self.state.lock().unwrap_or_else(|p| p.into_inner()).level;
        let flags = flags_at(self.base, &self.steps, level);
        let m = self.meter.lock().unwrap_or_else(|p| p.into_inner()).tick(
            &shared.probes,
            cgroup.as_deref(),
            flags,
        );
        let Some(m) = m else { return };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.ratio = m.ratio;
        st.neighbour_ns += m.neighbour_ns;
        let now = Instant::now();
        let next = if m.ratio > self.budget && m.settled && st.level < self.steps.len() {
            st.under_since = None;
            if st.last_up.is_some_and(|t| now - t < FLAP) {
                st.hold = (st.hold * 2).min(HOLD_MAX);
            }
            Some(st.level + 1)
        } else if m.ratio < self.budget / 2.0 && st.level > 0 {
            let since = *st.under_since.get_or_insert(now);
            if now - since < st.hold {
                None
            } else {
                // The lowest level predicted to stay under UP_BELOW of the budget.
                let meter = self.meter.lock().unwrap_or_else(|p| p.into_inner());
                let target = (0..st.level).find(|&l| {
                    let f = flags_at(self.base, &self.steps, l);
                    m.ratio * meter.cost_ratio(f, flags) < self.budget * UP_BELOW
                });
                drop(meter);
                target.inspect(|_| {
                    st.under_since = None;
                    st.last_up = Some(now);
                })
            }
        } else {
            if m.ratio >= self.budget / 2.0 {
                st.under_since = None;
            }
            if st.last_up.is_some_and(|t| now - t > FLAP * 2) {
                st.hold = HOLD;
            }
            None
        };
        let Some(to) = next else { return };
        let from = st.level;
        st.level = to;
        drop(st);
        self.apply(shared, from, to, m.ratio);
    }

    fn apply(&self, shared: &Ctx, from: usize, to: usize, ratio: f64) {
        let flags = flags_at(self.base, &self.steps, to);
        shared.kernel_side.set_flags(flags);
        // On a shared set every object holds the same pinned `sidecar_slots`, but a private set
        // gives each object its own: write through each.
        for p in &shared.probes {
            if let Err(e) = p.object().write_slot_flags() {
                tracing::error!("cpu budget: writing the slot's flags ({}): {e}", p.name());
            }
        }
        self.meter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .level_changed();
        let what = if to > from {
            self.steps[to - 1].describe()
        } else if to == 0 {
            "back up to level 0 (every feature as asked)".to_string()
        } else {
            format!("back up to level {to} ({})", self.steps[to - 1].describe())
        };
        tracing::info!(
            from,
            to,
            overhead_ratio = ratio,
            budget_ratio = self.budget,
            "cpu budget: {what}"
        );
        let line = serde_json::json!({
            "time": crate::events::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as i128)
                    .unwrap_or(0)
            ),
            "kind": "governor",
            "from_level": from,
            "to_level": to,
            "change": what,
            "overhead_ratio": ratio,
            "budget_ratio": self.budget,
            "features": features(self.base, self.loaded, flags)
                .into_iter()
                .map(|(f, on)| (f.to_string(), serde_json::Value::Bool(on)))
                .collect::<serde_json::Map<_, _>>(),
        });
        shared.events.publish(&[line.to_string()]);
    }
}

/// What the governor acts on: the sidecar's probes and slot, where it says what it did, and the
/// target's cgroup directory as it is now (a restarted target has a new one).
pub struct Ctx {
    pub probes: Vec<Arc<dyn Probe>>,
    pub kernel_side: Handle,
    pub events: EventSink,
    pub cgroup: Box<dyn Fn() -> Option<std::path::PathBuf> + Send + Sync>,
}

/// Run `g` on its own thread, once a second, for the process's life.
pub fn start(g: Arc<Governor>, shared: Ctx) {
    let spawned = std::thread::Builder::new()
        .name("cpu-budget".into())
        .spawn(move || {
            loop {
                std::thread::sleep(measure::TICK);
                g.tick(&shared);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cpu budget: starting its thread: {e}; the budget is not kept");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_the_documented_order_and_only_what_is_on() {
        let base = sidecar_ebpf::SLOT_SYSCALL_LATENCY
            | sidecar_ebpf::SLOT_NET_HTTP_PACKETS
            | sidecar_ebpf::SLOT_RUNTIME_CALLS;
        let all = Loaded {
            files: true,
            profile: true,
        };
        let s = steps(base, all);
        assert_eq!(s.len(), 10);
        assert_eq!(s[0], Step::SyscallSample(1));
        assert_eq!(s[5], Step::SyscallSample(6));
        assert_eq!(s[6], Step::FilesOff);
        assert_eq!(s[7], Step::ProfileQuarter);
        assert_eq!(s[8], Step::RuntimeCalls);
        assert_eq!(s[9], Step::Http);
        assert_eq!(steps(base, Loaded::default()).len(), 8);
        assert!(steps(sidecar_ebpf::SLOT_SYSCALL_COUNTING, Loaded::default()).is_empty());
        let from_16 = steps(
            sidecar_ebpf::SLOT_SYSCALL_LATENCY | (4 << sidecar_ebpf::SLOT_SYSCALL_SAMPLE_SHIFT),
            Loaded::default(),
        );
        assert_eq!(
            from_16,
            vec![Step::SyscallSample(5), Step::SyscallSample(6)]
        );
    }

    #[test]
    fn a_level_sets_the_flags_of_every_step_below_it() {
        let base = sidecar_ebpf::SLOT_SYSCALL_LATENCY | sidecar_ebpf::SLOT_NET_HTTP_PACKETS;
        let loaded = Loaded {
            files: true,
            profile: true,
        };
        let s = steps(base, loaded);
        assert_eq!(flags_at(base, &s, 0), base);
        assert_eq!(sample_shift(flags_at(base, &s, 4)), 4);
        let last = flags_at(base, &s, s.len());
        assert_eq!(sample_shift(last), 6);
        assert_eq!(last & HTTP_FLAGS, 0);
        assert_ne!(
            last & sidecar_ebpf::SLOT_SYSCALL_LATENCY,
            0,
            "counting stays"
        );
        assert_ne!(last & sidecar_ebpf::SLOT_FILES_OFF, 0);
        assert_eq!(
            (last & sidecar_ebpf::SLOT_PROFILE_MASK) >> sidecar_ebpf::SLOT_PROFILE_SHIFT,
            2
        );
        let f = features(base, loaded, last);
        assert_eq!(
            f,
            vec![
                ("syscall_latency_every_call", false),
                ("files", false),
                ("profile_full_rate", false),
                ("http", false)
            ]
        );
    }
}
