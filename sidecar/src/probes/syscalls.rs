//! Syscalls family: calls, failures by errno, time and latency per syscall, all aggregated in
//! the kernel. Kernel side: `sidecar-ebpf/bpf/syscalls.bpf.c`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{
    HIST_BUCKETS, SYSCALL_SLOTS, SyscallErrorKey, SyscallStats, syscalls_counter as sc,
};

use super::{EncodeCtx, LoadOpts, Object, Options, Probe, ProbeError};
use crate::metrics::{Labels, Log2Histogram, Metric};
use crate::tables::{errno_name, syscall_name};

pub const CALLS: Metric = Metric::counter(
    "ebpf_sidecar_syscalls",
    "System calls made by the target, by syscall (counted on entry).",
)
.labels(&["syscall"]);
pub const ERRORS: Metric = Metric::counter(
    "ebpf_sidecar_syscall_errors",
    "System calls of the target that returned an error, by syscall and errno.",
)
.labels(&["syscall", "errno"]);
pub const OBSERVED: Metric = Metric::gauge(
    "ebpf_sidecar_seccomp_observed_syscalls",
    "Distinct syscalls the target made since the sidecar started (the seccomp advisor's allow list, /seccomp).",
);
pub const RISKY: Metric = Metric::counter(
    "ebpf_sidecar_risky_syscalls",
    "Calls of syscalls that widen a process's reach (ptrace, mount, unshare, setns, bpf, module loading...).",
)
.labels(&["syscall"]);
/// Only with --syscall-latency on (the default), like [`DURATION`].
pub const SECONDS: Metric = Metric::counter(
    "ebpf_sidecar_syscall_seconds",
    "Time the target spent in each system call (entry to exit, including time blocked).",
)
.labels(&["syscall"]);
/// `syscall` only with --per-syscall-histograms.
pub const DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_syscall_duration_seconds",
    "Latency of the target's system calls (entry to exit), from log2 buckets kept in the kernel.",
)
.labels(&["syscall?"]);
/// Only with --syscall-latency on: a refused call is an exit whose entry never fired.
pub const SECCOMP_DENIED: Metric = Metric::counter(
    "ebpf_sidecar_seccomp_denied",
    "System calls of the target that its seccomp filter refused (skipped before entry, seen at exit), by syscall and the errno returned (none: answered with a value). Not in ebpf_sidecar_syscalls_total nor _syscall_errors_total.",
)
.labels(&["syscall", "errno"]);
pub const METRICS: &[Metric] = &[
    CALLS,
    ERRORS,
    OBSERVED,
    RISKY,
    SECONDS,
    DURATION,
    SECCOMP_DENIED,
];

pub struct Syscalls {
    obj: Object,
    /// `run --seccomp-out`.
    seccomp_out: Option<std::path::PathBuf>,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    // Counting only: no refused calls can be told apart, so this slot has no table for them.
    let without: &[&str] = if opts.syscall_latency {
        &[]
    } else {
        &["syscall_denied"]
    };
    let mut obj = Object::load_on(
        &opts.kernel_side,
        "syscalls",
        sidecar_ebpf::objects::SYSCALLS,
        &LoadOpts {
            without_inner: without,
            ..Default::default()
        },
    )?;
    // On a shared set the programs of both modes may be attached at once (sidecars that asked
    // for different modes): each acts for the slots whose flags ask for its mode.
    if opts.syscall_latency {
        obj.attach_raw_tp("sys_enter", "sys_enter")?;
        obj.attach_raw_tp("sys_exit", "sys_exit")?;
        let offered = match (
            obj.take_set_map("syscall_hooks_enter"),
            obj.take_set_map("syscall_hooks_exit"),
        ) {
            (Ok(enter), Ok(exit)) => opts.syscall_dispatch.offer(enter, exit),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        };
        if let Err(e) = offered {
            // The other families then attach their syscall handlers on their own.
            tracing::warn!("probe syscalls: no jump slots for other families: {e}")
        }
    } else {
        // One program per syscall instead of two: the traced-syscall path's floor is the price.
        // (On a shared set where a sidecar attached sys_enter/sys_exit, the other families
        // still jump from those: `SyscallDispatch::adopt_pinned`.)
        obj.attach_tp_btf("sys_exit_count", "sys_exit")?;
        obj.attach_tp_btf("sys_thread_exit", "sched_process_exit")?;
    }
    Ok(Arc::new(Syscalls {
        obj,
        seccomp_out: opts.seccomp_out.clone(),
    }))
}

impl Syscalls {
    /// `syscall_stats` by syscall number (its slot), the slots with calls only.
    fn stats(&self) -> Vec<(u32, Vec<SyscallStats>)> {
        (0..)
            .zip(
                self.obj
                    .maps()
                    .percpu_array::<SyscallStats>("syscall_stats"),
            )
            .filter(|(_, vals)| vals.iter().any(|v| v.calls > 0))
            .collect()
    }

    /// Syscall numbers the target has made since start (the seccomp advisor's input).
    fn observed(&self) -> Vec<u32> {
        self.stats()
            .into_iter()
            .map(|(nr, _)| nr)
            .filter(|nr| (*nr as usize) < SYSCALL_SLOTS - 1)
            .collect()
    }
}

pub const ROUTES: &[(&str, &str)] = &[(
    "/seccomp",
    "the seccomp advisor needs the syscalls probe family (--probes ...,syscalls)\n",
)];

#[derive(serde::Deserialize)]
struct SeccompQuery {
    /// Leave out the container runtime's baseline (only for processes started outside runc).
    baseline: Option<bool>,
}

/// GET /seccomp: the seccomp profile advised from what the target did so far.
async fn seccomp_route(
    probe: Arc<Syscalls>,
    axum::extract::Query(q): axum::extract::Query<SeccompQuery>,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    match tokio::task::spawn_blocking(move || probe.observed()).await {
        Ok(nrs) => {
            let body = crate::seccomp::profile(&nrs, q.baseline.unwrap_or(true));
            (
                [(header::CONTENT_TYPE, "application/json")],
                format!("{body:#}\n"),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the syscall counts failed\n",
        )
            .into_response(),
    }
}

impl Probe for Syscalls {
    fn name(&self) -> &'static str {
        "syscalls"
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn encode(&self, ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut per: BTreeMap<String, (u64, Log2Histogram)> = BTreeMap::new();
        for (nr, vals) in self.stats() {
            let mut h = Log2Histogram::new(HIST_BUCKETS);
            for v in &vals {
                h.add(&v.hist, v.time_ns);
            }
            per.insert(syscall_name(nr), (vals.iter().map(|v| v.calls).sum(), h));
        }
        let mut errors: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (k, v) in self
            .obj
            .maps()
            .percpu_hash::<SyscallErrorKey, u64>("syscall_errors")
        {
            *errors
                .entry((syscall_name(k.nr), errno_name(k.err)))
                .or_default() += v.iter().sum::<u64>();
        }

        let label = |s: &String| -> Labels { vec![("syscall", s.clone())] };
        CALLS.counter_series(enc, per.iter().map(|(s, (n, _))| (label(s), *n)))?;
        ERRORS.counter_series(
            enc,
            errors
                .into_iter()
                .map(|((s, e), n)| (vec![("syscall", s), ("errno", e)], n)),
        )?;
        OBSERVED.gauge_series(enc, [(vec![], per.len() as u64)])?;
        RISKY.counter_series(
            enc,
            per.iter()
                .filter(|(s, _)| crate::seccomp::RISKY.contains(&s.as_str()))
                .map(|(s, (n, _))| (label(s), *n)),
        )?;
        if !ctx.options.syscall_latency {
            return Ok(()); // --syscall-latency off: no time was measured, no entry seen
        }
        let mut denied: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (k, v) in self
            .obj
            .maps()
            .percpu_hash::<SyscallErrorKey, u64>("syscall_denied")
        {
            let errno = if k.err == 0 {
                "none".to_string()
            } else {
                errno_name(k.err)
            };
            *denied.entry((syscall_name(k.nr), errno)).or_default() += v.iter().sum::<u64>();
        }
        SECCOMP_DENIED.counter_series(
            enc,
            denied
                .into_iter()
                .map(|((s, e), n)| (vec![("syscall", s), ("errno", e)], n)),
        )?;
        SECONDS.counter_series(
            enc,
            per.iter()
                .map(|(s, (_, h))| (label(s), h.sum_ns as f64 / 1e9)),
        )?;
        if ctx.options.per_syscall_histograms {
            DURATION.histogram_series(
                enc,
                per.into_iter().map(|(s, (_, h))| (vec![("syscall", s)], h)),
            )
        } else {
            let mut all = Log2Histogram::new(HIST_BUCKETS);
            for (_, h) in per.values() {
                all.add(&h.buckets, h.sum_ns);
            }
            DURATION.histogram_series(enc, [(vec![], all)])
        }
    }

    fn routes(self: Arc<Self>) -> Option<axum::Router> {
        Some(axum::Router::new().route(
            "/seccomp",
            axum::routing::get(move |q| seccomp_route(self.clone(), q)),
        ))
    }

    fn finish(&self) -> Result<(), ProbeError> {
        let Some(path) = &self.seccomp_out else {
            return Ok(());
        };
        let body = format!("{:#}\n", crate::seccomp::profile(&self.observed(), true));
        crate::output::write_atomically(path, body.as_bytes()).map_err(|e| ProbeError::Output {
            family: "syscalls",
            what: format!("writing --seccomp-out {}", path.display()),
            source: e,
        })
    }

    fn lost_events(&self) -> u64 {
        let maps = self.obj.maps();
        maps.counter("syscalls_counters", sc::LOST_STARTS)
            + maps.counter("syscalls_counters", sc::LOST_ERRORS)
            + maps.counter("syscalls_counters", sc::LOST_DENIED)
    }
}

/// The syscalls family's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Label the syscall latency histogram by syscall (more series).
    #[arg(long, global = true)]
    per_syscall_histograms: bool,

    /// Measure each syscall's latency (ebpf_sidecar_syscall_seconds_total and the duration
    /// histogram). `off` only counts calls and errors: one program per syscall instead of two
    /// and no clock reads, about 40% of the added time per syscall.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"], global = true)]
    syscall_latency: String,
}

impl super::FamilyArgs for Args {
    fn apply(self, s: &mut super::Setup<'_>) -> Result<(), String> {
        s.options.per_syscall_histograms = self.per_syscall_histograms;
        s.options.syscall_latency = self.syscall_latency == "on";
        if s.options.seccomp_out.is_some() && !s.probes.iter().any(|p| p == "syscalls") {
            return Err(
                "--seccomp-out needs the syscalls probe family: add syscalls to --probes".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_is_labelled_only_per_syscall() {
        assert!(DURATION.fits(&[]));
        assert!(DURATION.fits(&["syscall"]));
        assert!(!DURATION.fits(&["errno"]));
    }
}
