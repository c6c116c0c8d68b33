//! Prometheus exposition: one collector that reads every probe's maps at scrape time, plus the
//! sidecar's own metrics, served over HTTP.

pub mod server;
pub mod web;

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use crate::governor;
use crate::metrics::{self, Metric};
use crate::monitored::Resolved;
use crate::probes::{EncodeCtx, Options, Probe};

/// A family that was asked for, and whether it runs.
#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub name: &'static str,
    pub error: Option<String>,
}

/// What the target looks like right now (rewritten by the target watcher).
#[derive(Clone, Debug, Default)]
pub struct TargetState {
    pub mode: &'static str,
    pub current: Option<Resolved>,
    /// How many times the target was (re)acquired.
    pub generation: u64,
}

/// Everything a scrape reads.
pub struct Shared {
    pub probes: Vec<Arc<dyn Probe>>,
    pub statuses: Vec<ProbeStatus>,
    pub target: RwLock<TargetState>,
    pub options: Options,
    pub bpf_stats: bool,
    /// Constant labels (e.g. Kubernetes pod and namespace) put on the target info.
    pub extra_labels: Vec<(String, String)>,
    pub started: Instant,
    /// Where families publish events (served on /events).
    pub events: crate::events::EventSink,
    /// `--cpu-budget` (None when 0, and in node mode).
    pub governor: Option<Arc<crate::governor::Governor>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("statuses", &self.statuses)
            .finish_non_exhaustive()
    }
}

pub const BUILD: Metric = Metric::info("ebpf_sidecar_build", "Build of the running sidecar.")
    .labels(&["version", "rustc"]);
pub const TARGET: Metric = Metric::info("ebpf_sidecar_target", "The monitored target.").labels(&[
    "mode",
    "filter?",
    "cgroup_path?",
    "cgroup_id?",
    "pid?",
    "pid_ns?",
    "net_ns?",
    "mnt_ns?",
    "container_id?",
    "container_name?",
    "image?",
]);
pub const TARGET_UP: Metric = Metric::gauge(
    "ebpf_sidecar_target_up",
    "1 while the target exists and is being counted, 0 while it is gone.",
);
pub const SECCOMP_MODE: Metric = Metric::gauge(
    "ebpf_sidecar_target_seccomp_mode",
    "Seccomp mode of the target's main process: 0 disabled, 1 strict, 2 filter (/proc/<pid>/status).",
);
pub const NO_NEW_PRIVS: Metric = Metric::gauge(
    "ebpf_sidecar_target_no_new_privs",
    "1 when the target's main process runs with no_new_privs.",
);
pub const CAPABILITIES: Metric = Metric::gauge(
    "ebpf_sidecar_target_capabilities",
    "Capability sets of the target's main process as bitmasks (bit n = capability n, see capabilities(7)).",
)
.labels(&["set"]);
pub const ACQUISITIONS: Metric = Metric::counter(
    "ebpf_sidecar_target_acquisitions",
    "Times the target was found (1 at start; +1 each time it came back, e.g. a restarted container).",
);
pub const PROBE_UP: Metric = Metric::gauge(
    "ebpf_sidecar_probe_up",
    "1 when the probe family is loaded and attached and its maps were read at this scrape, 0 when it failed (see the log for why).",
)
.labels(&["probe"]);
pub const EVENTS_LOST: Metric = Metric::counter(
    "ebpf_sidecar_events_lost",
    "Events the kernel side could not record (full tables, ring buffer overruns), by probe family.",
)
.labels(&["probe"]);
pub const MAP_READ_ERRORS: Metric = Metric::counter(
    "ebpf_sidecar_map_read_errors",
    "Reads of a BPF map that failed (missing map, wrong type or layout, unreadable entry): the metrics from that map are missing or short. Logged once per map.",
)
.labels(&["family", "map"]);
pub const PROGRAM_RUN_SECONDS: Metric = Metric::counter(
    "ebpf_sidecar_bpf_program_run_seconds",
    "Time the kernel spent running each BPF program (bpf_stats, all CPUs).",
)
.labels(&["program"]);
pub const PROGRAM_RUNS: Metric = Metric::counter(
    "ebpf_sidecar_bpf_program_runs",
    "Times each BPF program ran (bpf_stats), including runs that left early for other cgroups.",
)
.labels(&["program"]);

pub const KERNEL_SIDE: Metric = Metric::info(
    "ebpf_sidecar_kernel_side",
    "Where this sidecar's kernel programs and maps live: mode shared (one pinned set per host and build, abi = its hash) or private, and this sidecar's slot in it.",
)
.labels(&["mode", "abi", "slot"]);
pub const KERNEL_SIDE_TARGETS: Metric = Metric::gauge(
    "ebpf_sidecar_kernel_side_targets",
    "Sidecars sharing this kernel side now (slots held, this one included; 1 when private).",
);

pub const NODE_CONTAINERS: Metric = Metric::gauge(
    "ebpf_sidecar_node_containers",
    "Node mode: containers monitored now (removed ones kept for --retain-seconds are not counted).",
);
pub const NODE_UPTIME: Metric = Metric::gauge(
    "ebpf_sidecar_node_uptime_seconds",
    "Node mode: seconds since it started.",
);

/// The sidecar's own metrics (family `sidecar` in `ebpf-sidecar probes --metrics`).
pub const METRICS: &[Metric] = &[
    BUILD,
    TARGET,
    TARGET_UP,
    SECCOMP_MODE,
    NO_NEW_PRIVS,
    CAPABILITIES,
    ACQUISITIONS,
    PROBE_UP,
    EVENTS_LOST,
    MAP_READ_ERRORS,
    KERNEL_SIDE,
    KERNEL_SIDE_TARGETS,
    PROGRAM_RUN_SECONDS,
    PROGRAM_RUNS,
    NODE_CONTAINERS,
    NODE_UPTIME,
    governor::BUDGET,
    governor::OVERHEAD,
    governor::LEVEL,
    governor::FEATURE,
    governor::SAMPLED,
    governor::NEIGHBOUR,
    governor::SOURCE,
];

/// Every metric the sidecar can write, as `family name type labels help` lines: its own
/// (family `sidecar`), then each family's in FAMILIES' order. User probes (--probe-config) are
/// not listed: their metrics are whatever their YAML declares.
pub fn metric_lines() -> Vec<String> {
    let own = METRICS.iter().map(|m| m.line("sidecar"));
    let families = crate::probes::registry::FAMILIES
        .iter()
        .flat_map(|f| f.metrics.iter().map(move |m| m.line(f.name)));
    own.chain(families).collect()
}

#[derive(Debug)]
struct SidecarCollector(Arc<Shared>);

fn read_error_total(p: &dyn Probe) -> u64 {
    p.object().read_errors().iter().map(|(_, n)| n).sum()
}

impl Collector for SidecarCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let target = s.target.read().unwrap_or_else(|p| p.into_inner()).clone();
        // Families first, so that probe_up can say whether their maps were read at this scrape.
        let ctx = EncodeCtx {
            target: target.current.as_ref(),
            options: &s.options,
        };
        let mut failed_reads: Vec<&'static str> = Vec::new();
        let mut lost: Vec<(&'static str, u64)> = Vec::new();
        for p in &s.probes {
            let before = read_error_total(p.as_ref());
            p.encode(&ctx, &mut enc)?;
            lost.push((p.name(), p.lost_events()));
            if read_error_total(p.as_ref()) > before {
                failed_reads.push(p.name());
            }
        }
        BUILD.info_series(
            &mut enc,
            &vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                (
                    "rustc",
                    option_env!("SIDECAR_RUSTC")
                        .unwrap_or("unknown")
                        .to_string(),
                ),
            ],
        )?;
        encode_target(&mut enc, s, &target)?;
        let ks = &s.options.kernel_side;
        KERNEL_SIDE.info_series(
            &mut enc,
            &vec![
                ("mode", ks.mode.name().to_string()),
                ("abi", ks.abi.clone()),
                ("slot", ks.slot.to_string()),
            ],
        )?;
        KERNEL_SIDE_TARGETS.gauge_series(&mut enc, [(vec![], u64::from(ks.targets()))])?;
        PROBE_UP.gauge_series(
            &mut enc,
            s.statuses.iter().map(|st| {
                let up = st.error.is_none() && !failed_reads.contains(&st.name);
                (vec![("probe", st.name.to_string())], u64::from(up))
            }),
        )?;
        EVENTS_LOST.counter_series(
            &mut enc,
            lost.iter()
                .map(|(name, n)| (vec![("probe", name.to_string())], *n)),
        )?;
        MAP_READ_ERRORS.counter_series(
            &mut enc,
            s.probes.iter().flat_map(|p| {
                p.object()
                    .read_errors()
                    .into_iter()
                    .map(move |(map, n)| (vec![("family", p.name().to_string()), ("map", map)], n))
            }),
        )?;
        if let Some(g) = &s.governor {
            g.encode(&mut enc)?;
        }
        if s.bpf_stats {
            let stats: Vec<_> = s
                .probes
                .iter()
                .flat_map(|p| p.object().program_stats())
                .collect();
            PROGRAM_RUN_SECONDS.counter_series(
                &mut enc,
                stats.iter().map(|st| {
                    (
                        vec![("program", st.program.clone())],
                        st.run_time_ns as f64 / 1e9,
                    )
                }),
            )?;
            PROGRAM_RUNS.counter_series(
                &mut enc,
                stats
                    .iter()
                    .map(|st| (vec![("program", st.program.clone())], st.run_count)),
            )?;
        }
        Ok(())
    }
}

/// target_info (its labels stay for the target's lifetime), target_up, the target's
/// confinement, and how many times it was acquired.
fn encode_target(enc: &mut DescriptorEncoder, s: &Shared, target: &TargetState) -> fmt::Result {
    let mut labels: Vec<(&'static str, String)> = vec![("mode", target.mode.to_string())];
    if let Some(t) = &target.current {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        labels.push(("filter", t.filter_label().into()));
        labels.push(("cgroup_path", t.cgroup_path.clone().unwrap_or_default()));
        labels.push(("cgroup_id", opt(t.cgroup_id())));
        labels.push(("pid", t.pid.map(|p| p.to_string()).unwrap_or_default()));
        labels.push(("pid_ns", opt(t.pid_ns)));
        labels.push(("net_ns", opt(t.net_ns)));
        labels.push(("mnt_ns", opt(t.mnt_ns)));
        let c = t.container.clone().unwrap_or_default();
        labels.push(("container_id", c.id));
        labels.push(("container_name", c.name));
        labels.push(("image", c.image));
    }
    // --label and the pod labels are the user's: not in the table, written after its labels.
    let mut all: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    all.extend(s.extra_labels.iter().cloned());
    TARGET.check_labels(&labels);
    metrics::info(enc, TARGET.name, TARGET.help, &all)?;
    TARGET_UP.gauge_series(enc, [(vec![], u64::from(target.current.is_some()))])?;
    let confined = target
        .current
        .as_ref()
        .and_then(|t| t.pid)
        .and_then(crate::seccomp::confinement);
    if let Some(c) = confined {
        SECCOMP_MODE.gauge_series(enc, [(vec![], c.seccomp_mode)])?;
        NO_NEW_PRIVS.gauge_series(enc, [(vec![], u64::from(c.no_new_privs))])?;
        CAPABILITIES.gauge_series(
            enc,
            c.capabilities
                .iter()
                .map(|(set, mask)| (vec![("set", set.to_string())], *mask)),
        )?;
    }
    ACQUISITIONS.counter_series(enc, [(vec![], target.generation)])
}

pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(SidecarCollector(shared)));
    r
}

/// Content types we answer with.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Render the registry in the format the `Accept` header prefers.
pub fn render(
    registry: &Registry,
    accept: Option<&str>,
) -> Result<(&'static str, String), fmt::Error> {
    let mut buf = String::with_capacity(64 * 1024);
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        prometheus_client::encoding::text::encode(&mut buf, registry)?;
        Ok((OPENMETRICS, buf))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut buf, registry)?;
        Ok((PROMETHEUS_TEXT, buf))
    }
}
