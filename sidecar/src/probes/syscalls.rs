//! Syscalls family: calls, failures by errno, time and latency per syscall, all aggregated in
//! the kernel. Kernel side: `sidecar-ebpf/bpf/syscalls.bpf.c`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{
    HIST_BUCKETS, SYSCALL_SLOTS, SyscallErrorKey, SyscallStats, syscalls_counter as sc,
};

use super::{EncodeCtx, LoadOpts, Object, Options, Probe, ProbeError};
use crate::metrics::{Labels, Log2Histogram, Metric};
use crate::monitored::{Filter, Resolved};
use crate::seccomp::enforced::{self, Enforced};
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
/// Only when the target's seccomp filter was read (`/seccomp?against=enforced`).
pub const ALLOWED_UNUSED: Metric = Metric::gauge(
    "ebpf_sidecar_seccomp_allowed_unused_syscalls",
    "Syscalls the target's enforced seccomp profile lets run (always or for some arguments) that the target never made: what a profile of the observed calls would remove (/seccomp?against=enforced). Absent when no filter was read.",
);
pub const METRICS: &[Metric] = &[
    CALLS,
    ERRORS,
    OBSERVED,
    ALLOWED_UNUSED,
    RISKY,
    SECONDS,
    DURATION,
    SECCOMP_DENIED,
];

pub struct Syscalls {
    obj: Object,
    /// `run --seccomp-out`.
    seccomp_out: Option<std::path::PathBuf>,
    /// `run --seccomp-report`.
    seccomp_report: Option<std::path::PathBuf>,
    /// --syscall-latency on: refused calls are told apart (`syscall_denied`).
    latency: bool,
    /// The target's enforced seccomp profile, read once per target process.
    enforced: Mutex<EnforcedCache>,
    /// The sidecar has given up its start-up capabilities: a later read (a restarted target)
    /// is likely refused, and the reason should say what to do.
    caps_dropped: std::sync::atomic::AtomicBool,
}

/// The last read of the target's seccomp filters.
struct EnforcedCache {
    /// The process read (its pid as seen here) and the target's kernel filter: a new process or
    /// a new cgroup (a restart) is read again.
    key: Option<(u32, Filter)>,
    /// The evaluated profile, or why there is none.
    state: Result<Arc<Enforced>, String>,
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
        seccomp_report: opts.seccomp_report.clone(),
        latency: opts.syscall_latency,
        enforced: Mutex::new(EnforcedCache {
            key: None,
            state: Err("the target has not been found yet".into()),
        }),
        caps_dropped: std::sync::atomic::AtomicBool::new(false),
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
        observed_of(&self.stats())
    }

    /// What the target did: the calls it made and, with latency on, the calls its filter
    /// refused by syscall number.
    fn usage(&self) -> crate::seccomp::Usage {
        let refused = self.latency.then(|| {
            let mut by_nr: BTreeMap<u32, u64> = BTreeMap::new();
            for (k, v) in self
                .obj
                .maps()
                .percpu_hash::<SyscallErrorKey, u64>("syscall_denied")
            {
                *by_nr.entry(k.nr).or_default() += v.iter().sum::<u64>();
            }
            by_nr
        });
        crate::seccomp::Usage {
            observed: self.observed(),
            refused,
        }
    }

    fn enforced(&self) -> Result<Arc<Enforced>, String> {
        self.enforced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state
            .clone()
    }

    /// The /seccomp?against=enforced report as JSON.
    fn report(&self, baseline: bool) -> serde_json::Value {
        let usage = self.usage();
        let state = self.enforced();
        crate::seccomp::report(state.as_deref().map_err(String::as_str), &usage, baseline)
    }

    /// Read the target process's seccomp filters, unless this process was read already. Needs
    /// the start-up capabilities (CAP_SYS_ADMIN): called while loading and, for `run`, once its
    /// command started; a restarted target read later, without them, gets the reason instead.
    fn read_enforced(&self, target: Option<&Resolved>) {
        // A target gone keeps what was read from it: the report is about what it ran under.
        let Some(t) = target else { return };
        let mut cache = self.enforced.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pid) = t.pid else {
            if cache.key.is_none() {
                cache.state = Err("the target has no process yet".into());
            }
            return;
        };
        if cache.key == Some((pid, t.filter)) {
            return;
        }
        cache.key = Some((pid, t.filter));
        cache.state = match enforced::read(pid) {
            Ok(Some(e)) => {
                let count =
                    |f: fn(&enforced::Verdict) -> bool| e.table.values().filter(|v| f(v)).count();
                tracing::info!(
                    pid,
                    mode = ?e.mode,
                    allowed = count(enforced::Verdict::allowed),
                    denied = count(enforced::Verdict::denied),
                    depends_on_arguments =
                        count(|v| matches!(v, enforced::Verdict::DependsOnArguments(_))),
                    "read the target's seccomp profile"
                );
                Ok(Arc::new(e))
            }
            Ok(None) => Err(format!(
                "the target has no seccomp filter (Seccomp: 0 in /proc/{pid}/status)"
            )),
            Err(e) => {
                let after = if self.caps_dropped.load(std::sync::atomic::Ordering::Relaxed) {
                    "; the target changed after the sidecar dropped its start-up capabilities: \
                     restart the sidecar to read it"
                } else {
                    ""
                };
                tracing::warn!("the target's seccomp profile: {e}{after}");
                Err(format!(
                    "the target's seccomp filter could not be read: {e}{after}"
                ))
            }
        };
    }
}

/// The syscall numbers among `stats`' slots (the last slot gathers numbers past the table).
fn observed_of(stats: &[(u32, Vec<SyscallStats>)]) -> Vec<u32> {
    stats
        .iter()
        .map(|(nr, _)| *nr)
        .filter(|nr| (*nr as usize) < SYSCALL_SLOTS - 1)
        .collect()
}

pub const ROUTES: &[(&str, &str)] = &[(
    "/seccomp",
    "the seccomp advisor needs the syscalls probe family (--probes ...,syscalls)\n",
)];

#[derive(serde::Deserialize)]
struct SeccompQuery {
    /// Leave out the container runtime's baseline (only for processes started outside runc).
    baseline: Option<bool>,
    /// `enforced`: compare with the profile the target runs under.
    against: Option<String>,
    /// With `against`: `json` (the default) or `text`.
    format: Option<String>,
}

/// GET /seccomp: the seccomp profile advised from what the target did so far; with
/// `?against=enforced`, compared with the profile the target runs under.
async fn seccomp_route(
    probe: Arc<Syscalls>,
    axum::extract::Query(q): axum::extract::Query<SeccompQuery>,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let baseline = q.baseline.unwrap_or(true);
    let text = match (q.against.as_deref(), q.format.as_deref()) {
        (Some("enforced"), None | Some("json")) => Some(false),
        (Some("enforced"), Some("text")) => Some(true),
        (None, None | Some("json")) => None,
        (Some("enforced"), Some(_)) => {
            return (StatusCode::BAD_REQUEST, "format is json or text\n").into_response();
        }
        (None, Some(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                "format=text goes with against=enforced (the profile itself is JSON)\n",
            )
                .into_response();
        }
        (Some(_), _) => {
            return (
                StatusCode::BAD_REQUEST,
                "against takes one value: enforced (the profile the target runs under)\n",
            )
                .into_response();
        }
    };
    if let Some(text) = text {
        return match tokio::task::spawn_blocking(move || probe.report(baseline)).await {
            Ok(r) if text => (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                crate::seccomp::report_text(&r),
            )
                .into_response(),
            Ok(r) => (
                [(header::CONTENT_TYPE, "application/json")],
                format!("{r:#}\n"),
            )
                .into_response(),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the syscall counts failed\n",
            )
                .into_response(),
        };
    }
    match tokio::task::spawn_blocking(move || probe.observed()).await {
        Ok(nrs) => {
            let body = crate::seccomp::profile(&nrs, baseline);
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

    fn on_target(&self, target: Option<&Resolved>) -> Result<(), ProbeError> {
        self.obj.set_target(target.map(|t| &t.filter))?;
        self.read_enforced(target);
        Ok(())
    }

    fn before_dropping_capabilities(&self, target: Option<&Resolved>) {
        // `run`: the command exists only now.
        self.read_enforced(target);
        self.caps_dropped
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn encode(&self, ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut per: BTreeMap<String, (u64, Log2Histogram)> = BTreeMap::new();
        let stats = self.stats();
        let observed = observed_of(&stats);
        for (nr, vals) in stats {
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
        if let Ok(e) = self.enforced() {
            let n = crate::seccomp::allowed_unused(&e, &observed).len() as u64;
            ALLOWED_UNUSED.gauge_series(enc, [(vec![], n)])?;
        }
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
        let write = |flag: &str, path: &std::path::Path, body: serde_json::Value| {
            crate::output::write_atomically(path, format!("{body:#}\n").as_bytes()).map_err(|e| {
                ProbeError::Output {
                    family: "syscalls",
                    what: format!("writing {flag} {}", path.display()),
                    source: e,
                }
            })
        };
        if let Some(path) = &self.seccomp_out {
            write(
                "--seccomp-out",
                path,
                crate::seccomp::profile(&self.observed(), true),
            )?;
        }
        if let Some(path) = &self.seccomp_report {
            write("--seccomp-report", path, self.report(true))?;
        }
        Ok(())
    }

    fn target_calls(&self) -> Option<u64> {
        Some(
            self.stats()
                .iter()
                .flat_map(|(_, vals)| vals.iter().map(|v| v.calls))
                .sum(),
        )
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

    /// Time the latency of about 1 syscall in N per thread (N = 1, 2, 4, … 64; 1: every call).
    /// Each timed call counts for N in the duration histogram and syscall_seconds_total, so they
    /// stay unbiased; calls and errors are still counted exactly. --cpu-budget samples further
    /// when over budget, never less than this.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_sample, global = true)]
    syscall_latency_sample: u32,
}

/// `--syscall-latency-sample`: a power of two from 1 to 64, as its log2.
fn parse_sample(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n.is_power_of_two() && n <= 64 => Ok(n.trailing_zeros()),
        _ => Err(format!(
            "{s:?}: give a power of two from 1 to 64 (1, 2, 4, 8, 16, 32, 64)"
        )),
    }
}

impl super::FamilyArgs for Args {
    fn apply(self, s: &mut super::Setup<'_>) -> Result<(), String> {
        s.options.per_syscall_histograms = self.per_syscall_histograms;
        s.options.syscall_latency = self.syscall_latency == "on";
        s.options.syscall_sample_shift = self.syscall_latency_sample;
        if self.syscall_latency_sample > 0 && !s.options.syscall_latency {
            return Err(
                "--syscall-latency-sample samples the latency that --syscall-latency off turns \
                 off: give one or the other"
                    .into(),
            );
        }
        let has = s.probes.iter().any(|p| p == "syscalls");
        for (flag, set) in [
            ("--seccomp-out", s.options.seccomp_out.is_some()),
            ("--seccomp-report", s.options.seccomp_report.is_some()),
        ] {
            if set && !has {
                return Err(format!(
                    "{flag} needs the syscalls probe family: add syscalls to --probes"
                ));
            }
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
