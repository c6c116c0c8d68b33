//! Prometheus exposition: one collector that reads every probe's maps at scrape time, plus the
//! sidecar's own metrics, served over HTTP.

pub mod encode;
pub mod pprof;
pub mod server;
pub mod web;

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use crate::probes::{EncodeCtx, Options, Probe};
use crate::monitored::Resolved;

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
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("statuses", &self.statuses)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct SidecarCollector(Arc<Shared>);

impl Collector for SidecarCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let target = s.target.read().unwrap_or_else(|p| p.into_inner()).clone();
        encode::info(
            &mut enc,
            "ebpf_sidecar_build",
            "Build of the running sidecar.",
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
        let mut labels: Vec<(String, String)> = vec![("mode".into(), target.mode.to_string())];
        if let Some(t) = &target.current {
            let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
            labels.push(("filter".into(), t.filter_label().into()));
            labels.push((
                "cgroup_path".into(),
                t.cgroup_path.clone().unwrap_or_default(),
            ));
            labels.push(("cgroup_id".into(), opt(t.cgroup_id())));
            labels.push((
                "pid".into(),
                t.pid.map(|p| p.to_string()).unwrap_or_default(),
            ));
            labels.push(("pid_ns".into(), opt(t.pid_ns)));
            labels.push(("net_ns".into(), opt(t.net_ns)));
            labels.push(("mnt_ns".into(), opt(t.mnt_ns)));
            let c = t.container.clone().unwrap_or_default();
            labels.push(("container_id".into(), c.id));
            labels.push(("container_name".into(), c.name));
            labels.push(("image".into(), c.image));
        }
        labels.extend(s.extra_labels.iter().cloned());
        encode::info(
            &mut enc,
            "ebpf_sidecar_target",
            "The monitored target.",
            &labels,
        )?;
        encode::gauge(
            &mut enc,
            "ebpf_sidecar_target_up",
            "1 while the target exists and is being counted, 0 while it is gone.",
            [(vec![], u64::from(target.current.is_some()))],
        )?;
        let confined = target
            .current
            .as_ref()
            .and_then(|t| t.pid)
            .and_then(crate::seccomp::confinement);
        if let Some(c) = confined {
            encode::gauge(
                &mut enc,
                "ebpf_sidecar_target_seccomp_mode",
                "Seccomp mode of the target's main process: 0 disabled, 1 strict, 2 filter (/proc/<pid>/status).",
                [(vec![], c.seccomp_mode)],
            )?;
            encode::gauge(
                &mut enc,
                "ebpf_sidecar_target_no_new_privs",
                "1 when the target's main process runs with no_new_privs.",
                [(vec![], u64::from(c.no_new_privs))],
            )?;
            encode::gauge(
                &mut enc,
                "ebpf_sidecar_target_capabilities",
                "Capability sets of the target's main process as bitmasks (bit n = capability n, see capabilities(7)).",
                c.capabilities
                    .iter()
                    .map(|(set, mask)| (vec![("set", set.to_string())], *mask)),
            )?;
        }
        encode::counter(
            &mut enc,
            "ebpf_sidecar_target_acquisitions",
            "Times the target was found (1 at start; +1 each time it came back, e.g. a restarted container).",
            [(vec![], target.generation)],
        )?;
        encode::gauge(
            &mut enc,
            "ebpf_sidecar_probe_up",
            "1 when the probe family is loaded and attached, 0 when it failed (see the log for why).",
            s.statuses.iter().map(|st| {
                (
                    vec![("probe", st.name.to_string())],
                    u64::from(st.error.is_none()),
                )
            }),
        )?;
        encode::counter(
            &mut enc,
            "ebpf_sidecar_events_lost",
            "Events the kernel side could not record (full tables, ring buffer overruns), by probe family.",
            s.probes
                .iter()
                .map(|p| (vec![("probe", p.name().to_string())], p.lost_events())),
        )?;
        if s.bpf_stats {
            let stats: Vec<_> = s
                .probes
                .iter()
                .flat_map(|p| p.object().program_stats())
                .collect();
            encode::counter(
                &mut enc,
                "ebpf_sidecar_bpf_program_run_seconds",
                "Time the kernel spent running each BPF program (bpf_stats, all CPUs).",
                stats.iter().map(|st| {
                    (
                        vec![("program", st.program.clone())],
                        st.run_time_ns as f64 / 1e9,
                    )
                }),
            )?;
            encode::counter(
                &mut enc,
                "ebpf_sidecar_bpf_program_runs",
                "Times each BPF program ran (bpf_stats), including runs that left early for other cgroups.",
                stats
                    .iter()
                    .map(|st| (vec![("program", st.program.clone())], st.run_count)),
            )?;
        }
        let ctx = EncodeCtx {
            target: target.current.as_ref(),
            options: &s.options,
        };
        for p in &s.probes {
            p.encode(&ctx, &mut enc)?;
        }
        Ok(())
    }
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
