//! Runtimes family: language-runtime packs on top of the USDT engine (`crate::usdt`) and plain
//! uprobes. Kernel side: `sidecar-ebpf/bpf/runtimes.bpf.c` (readers in `include/usdt.bpf.h`).
//!
//! Discovery scans the target's processes every [`RESCAN`] for executable mappings of a
//! supported runtime (CPython with USDT, OpenJDK's libjvm.so, a Node.js binary) and attaches the
//! pack to that file once, for every process that maps it (the BPF programs filter the target).
//! In `run` mode the command's binary is attached before the command starts, so start-up is seen.

mod attach;
mod declared;
mod discovery;
mod encode;
mod hooks;
pub mod packs;
mod sites;

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::runtimes_counter as rc;

use self::attach::Inner;
use self::declared::DeclaredMetric;
use super::{EncodeCtx, LoadOpts, Object, Options, Probe, ProbeError};
use crate::metrics::{LabelBudget, Metric};
use crate::monitored::Resolved;

pub use self::discovery::{KEEPS, RESCAN, Runtime, resolve_command, spawn_scanner};
pub use self::encode::{function_label, http_method};
pub use self::hooks::node_http_site;

const RUNTIME: &[&str] = &["runtime"];
/// `path` only with --http-paths; its values bounded by --top-n.
const HTTP: &[&str] = &["runtime", "method", "path?"];

pub const GC_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_runtime_gc_duration_seconds",
    "Garbage-collection pauses of language runtimes in the target, by runtime and generation (python: 0-2; java: young/full; node: scavenge/mark_compact/minor_mark_compact). _count is the number of GCs.",
)
.labels(&["runtime", "generation"]);
pub const HTTP_REQUESTS: Metric = Metric::counter(
    "ebpf_sidecar_runtime_http_requests",
    "HTTP requests received by runtimes in the target, by runtime and method (and normalised path with --http-paths, top-N plus other).",
)
.labels(HTTP)
.top_n(&["path"]);
pub const HTTP_REQUEST_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_runtime_http_request_duration_seconds",
    "HTTP requests served by runtimes in the target: node >= 19 from the parsed request head (llhttp) to the first write(v) of the response on the same connection, node <= 18 from http__server__request to http__server__response; by runtime and method (and path with --http-paths).",
)
.labels(HTTP)
.top_n(&["path"]);
pub const HTTP_CLIENT_REQUESTS: Metric = Metric::counter(
    "ebpf_sidecar_runtime_http_client_requests",
    "HTTP requests sent by runtimes in the target (node <= 18 with USDT: http__client__request), by runtime and method (and normalised path with --http-paths, top-N plus other).",
)
.labels(HTTP)
.top_n(&["path"]);
pub const HTTP_CLIENT_REQUEST_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_runtime_http_client_request_duration_seconds",
    "HTTP requests sent by runtimes in the target, from http__client__request to http__client__response on the same fd, by runtime and method (and path with --http-paths).",
)
.labels(HTTP)
.top_n(&["path"]);
pub const FUNCTION_CALLS: Metric = Metric::counter(
    "ebpf_sidecar_runtime_function_calls",
    "Function calls in runtimes of the target by module:function, top-N plus other (--runtime-calls; CPython fires these only while sys.settrace/setprofile is active).",
)
.labels(&["runtime", "function"])
.top_n(&["function"]);
pub const IMPORTS: Metric = Metric::counter(
    "ebpf_sidecar_runtime_imports",
    "Modules imported (found and loaded) by runtimes in the target.",
)
.labels(RUNTIME);
pub const CLASSES_LOADED: Metric = Metric::counter(
    "ebpf_sidecar_runtime_classes_loaded",
    "Classes loaded by runtimes in the target.",
)
.labels(RUNTIME);
pub const THREADS_STARTED: Metric = Metric::counter(
    "ebpf_sidecar_runtime_threads_started",
    "Threads started by runtimes in the target.",
)
.labels(RUNTIME);
pub const NODEJS_EVENT_LOOP_LAG: Metric = Metric::histogram(
    "ebpf_sidecar_nodejs_event_loop_lag_seconds",
    "Time a Node.js event-loop thread of the target spent between an epoll wait's return and its next call (callbacks running, nothing new served).",
);
pub const RUNTIME_INFO: Metric = Metric::gauge(
    "ebpf_sidecar_runtime_info",
    "Processes of the target running a supported language runtime (at most 100 listed).",
)
.labels(&["runtime", "version", "pid"]);
pub const USDT_PROBES_ATTACHED: Metric = Metric::gauge(
    "ebpf_sidecar_usdt_probes_attached",
    "Probe sites attached, by USDT provider and probe (provider \"uprobe\": a function symbol).",
)
.labels(&["provider", "probe"]);
/// The built-in metrics, in exposition order (the --config metrics, `ebpf_sidecar_usdt_<name>`,
/// come between the event-loop lag and the runtime info; their names are the user's).
pub const METRICS: &[Metric] = &[
    GC_DURATION,
    HTTP_REQUESTS,
    HTTP_REQUEST_DURATION,
    HTTP_CLIENT_REQUESTS,
    HTTP_CLIENT_REQUEST_DURATION,
    FUNCTION_CALLS,
    IMPORTS,
    CLASSES_LOADED,
    THREADS_STARTED,
    NODEJS_EVENT_LOOP_LAG,
    RUNTIME_INFO,
    USDT_PROBES_ATTACHED,
];

pub struct Runtimes {
    inner: Arc<Inner>,
    functions: LabelBudget,
    /// Paths of requests served, and of requests sent (node <= 18 USDT).
    paths: LabelBudget,
    client_paths: LabelBudget,
    /// The --config metrics.
    declared: Vec<DeclaredMetric>,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let declared = match &opts.usdt_config {
        Some(path) => crate::usdt::config::load(path).map_err(|e| ProbeError::Map {
            family: "runtimes",
            map: "--config".into(),
            detail: e.to_string(),
        })?,
        None => Vec::new(),
    };
    // Per-target settings are this slot's (--runtime-calls and --http-paths are slot flags, set
    // by the app; the pid namespace goes to rt_config): the programs may be another sidecar's.
    // Tables an option leaves unused are not made for this slot.
    let strings = declared
        .iter()
        .any(|d| matches!(d.kind, crate::usdt::config::Kind::CountStrings { .. }));
    let mut without = Vec::new();
    if declared.is_empty() {
        without.push("rt_declared_specs");
    }
    let calls_table = opts.runtime_calls || strings;
    if !calls_table {
        without.push("rt_calls");
    }
    let obj = Object::load_on(
        &opts.kernel_side,
        "runtimes",
        sidecar_ebpf::objects::RUNTIMES,
        &LoadOpts {
            without_inner: &without,
            ..Default::default()
        },
    )?;
    let config_file = opts
        .usdt_config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let declared_metrics = declared::table(&declared, opts.top_n);
    let inner = Arc::new(Inner::new(
        obj,
        discovery::own_pid_namespace(),
        (opts.runtime_calls, calls_table),
        opts.http_paths,
        declared,
        config_file,
    )?);
    if let Some(cmd) = &opts.run_program {
        inner.attach_run_program(cmd);
    }
    let bg = inner.clone();
    spawn_scanner("runtimes", "runtimes-scan", move || bg.scan())?;
    Ok(Arc::new(Runtimes {
        inner,
        functions: LabelBudget::new(opts.top_n),
        paths: LabelBudget::new(opts.top_n),
        client_paths: LabelBudget::new(opts.top_n),
        declared: declared_metrics,
    }))
}

impl Probe for Runtimes {
    fn name(&self) -> &'static str {
        "runtimes"
    }

    fn object(&self) -> &Object {
        &self.inner.obj
    }

    fn on_target(&self, target: Option<&Resolved>) -> Result<(), ProbeError> {
        *self.inner.target.lock().unwrap_or_else(|p| p.into_inner()) = target.cloned();
        self.inner.obj.set_target(target.map(|t| &t.filter))
    }

    fn encode(&self, _ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        // Series of a runtime appear once that runtime has been attached.
        let seen: Vec<Runtime> = {
            let st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            st.files.values().flatten().map(|a| a.runtime).collect()
        };
        let readings = encode::read(
            &self.inner.obj.maps(),
            self.inner.http_paths,
            self.inner.calls_table,
        );
        self.encode_builtin(enc, &readings, |r| seen.contains(&r))?;
        for d in &self.declared {
            d.encode(enc, &readings)?;
        }
        self.encode_discovery(enc)
    }

    fn lost_events(&self) -> u64 {
        let maps = self.inner.obj.maps();
        maps.counter("rt_counters", rc::LOST_KEYS) + maps.counter("rt_counters", rc::LOST_BEGINS)
    }
}

/// The runtimes family's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// runtimes: count function calls by module:function
    /// (ebpf_sidecar_runtime_function_calls_total). Costly: a probe fires on every call.
    /// CPython 3.11 fires it only while sys.settrace/sys.setprofile is set.
    #[arg(long, global = true)]
    runtime_calls: bool,
    /// runtimes: USDT metrics declared in a YAML file (counters by argument, histograms of
    /// begin/end pairs or of an argument), exported as ebpf_sidecar_usdt_<name>. Loads the
    /// runtimes family.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<std::path::PathBuf>,
}

impl super::FamilyArgs for Args {
    fn apply(self, s: &mut super::Setup<'_>) -> Result<(), String> {
        s.options.runtime_calls = self.runtime_calls;
        if let Some(path) = &self.config {
            crate::usdt::config::load(path).map_err(|e| format!("--config {e}"))?;
            if !s.probes.iter().any(|p| p == "runtimes") {
                s.probes.push("runtimes".into());
            }
        }
        s.options.usdt_config = self.config;
        Ok(())
    }
}
