//! Runtimes family: language-runtime packs on top of the USDT engine (`crate::usdt`) and plain
//! uprobes. Kernel side: `sidecar-ebpf/bpf/runtimes.bpf.c` (readers in `include/usdt.bpf.h`).
//!
//! Discovery scans the target's processes every [`RESCAN`] for executable mappings of a
//! supported runtime (CPython with USDT, OpenJDK's libjvm.so, a Node.js binary) and attaches the
//! pack to that file once, for every process that maps it (the BPF programs filter the target).
//! In `run` mode the command's binary is attached before the command starts, so start-up is seen.

pub const METRICS: &[crate::metrics::Metric] = &[];

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use aya::programs::ProgramFd;
use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{
    RtCallKey, RtHist, RtHttpKey, RtKey, USDT_NO_ARG, UsdtSpec, runtimes_counter as rc,
};

use super::object::percpu_counter;
use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::metrics::{self, LabelBudget, Log2Histogram, comm_label};
use crate::monitored::Resolved;
use crate::usdt::config::{Declared, Kind, ProbeName, Scope};
use crate::usdt::{self, attach::Link, procs};

pub mod packs;

/// How often the target's processes are scanned for runtimes not attached yet.
pub const RESCAN: Duration = Duration::from_secs(1);

/// Entries of the kernel's `usdt_specs` array (USDT_SPECS_MAX in usdt.bpf.h). Specs are not
/// reused: a sidecar that attaches more sites than this over its life logs and stops attaching.
const SPECS_MAX: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prog {
    Count,
    Begin,
    End,
    Call,
    /// A histogram of an argument's value (declared metrics).
    Value,
    /// Node's HTTP parser hook: requests by method (and path), timed to the first write.
    Http,
    /// Node <= 18 USDT http__*__request: requests by method (and url path), timed from here…
    UsdtHttp,
    /// … to http__*__response on the same fd.
    UsdtHttpDone,
}

impl Prog {
    const ALL: [Prog; 8] = [
        Prog::Count,
        Prog::Begin,
        Prog::End,
        Prog::Call,
        Prog::Value,
        Prog::Http,
        Prog::UsdtHttp,
        Prog::UsdtHttpDone,
    ];
    fn name(self) -> &'static str {
        match self {
            Prog::Count => "rt_count",
            Prog::Begin => "rt_begin",
            Prog::End => "rt_end",
            Prog::Call => "rt_call",
            Prog::Value => "rt_value",
            Prog::Http => "rt_http",
            Prog::UsdtHttp => "rt_usdt_http",
            Prog::UsdtHttpDone => "rt_usdt_http_done",
        }
    }
}

/// Pack entries: what each attached site feeds (the `slot` of its spec).
mod slot {
    pub const PY_GC: u32 = 0;
    pub const PY_CALLS: u32 = 1;
    pub const PY_IMPORTS: u32 = 2;
    pub const JAVA_GC: u32 = 3;
    pub const JAVA_CLASSES: u32 = 4;
    pub const JAVA_THREADS: u32 = 5;
    pub const NODE_HTTP: u32 = 6;
    pub const NODE_GC: u32 = 7;
    pub const NODE_LAG: u32 = 8;
    pub const NODE_USDT_HTTP: u32 = 9;
    pub const NODE_USDT_GC: u32 = 10;
    /// RT_SLOT_NODE_USDT_CLIENT in runtimes.bpf.c.
    pub const NODE_USDT_CLIENT: u32 = 11;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    Python,
    Java,
    Node,
}

impl Runtime {
    fn from_name(name: &str) -> Option<Runtime> {
        [Runtime::Python, Runtime::Java, Runtime::Node]
            .into_iter()
            .find(|r| r.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Python => "python",
            Runtime::Java => "java",
            Runtime::Node => "node",
        }
    }

    /// Which runtime a mapped file is, by its name (files are only read when this matches).
    pub fn of_path(path: &str) -> Option<Runtime> {
        let name = path.rsplit('/').next()?;
        if procs::python_version(path).is_some() {
            Some(Runtime::Python)
        } else if name == "libjvm.so" {
            Some(Runtime::Java)
        } else if name == "node" || name == "nodejs" {
            Some(Runtime::Node)
        } else {
            None
        }
    }
}

#[derive(Clone, Copy)]
enum Site {
    /// A USDT probe (all its sites).
    Usdt {
        provider: &'static str,
        probe: &'static str,
    },
    /// A function symbol, at entry or return, with arguments described as USDT specs.
    Symbol {
        name: &'static str,
        short: &'static str,
        ret: bool,
        args: &'static str,
    },
}

#[derive(Clone, Copy)]
struct Hook {
    runtime: Runtime,
    site: Site,
    prog: Prog,
    slot: u32,
    label: Option<u32>,
    label2: Option<u32>,
    /// Only with --runtime-calls (function__entry fires on every call: costly).
    calls_only: bool,
}

const V8_GC: &str = "_ZN2v88internal4Heap24PerformGarbageCollectionENS0_16GarbageCollectorENS0_23GarbageCollectionReasonEPKc";

/// Hooks the YAML form of the packs (packs/*.yaml) has no words for: Node's USDT HTTP probes
/// (method and url strings, timed per fd) and stock Node's function symbols (argument specs on
/// symbols, dedicated programs).
const BUILT_IN_HOOKS: &[Hook] = &[
    // Node <= 18 built --with-dtrace (src/node_dtrace.cc): http__{server,client}__request(req,
    // conn, remote, port, method, url, fd), http__{server,client}__response(conn, remote, port,
    // fd); its gc__start/gc__done are in packs/node.yaml.
    Hook {
        runtime: Runtime::Node,
        site: Site::Usdt {
            provider: "node",
            probe: "http__server__request",
        },
        prog: Prog::UsdtHttp,
        slot: slot::NODE_USDT_HTTP,
        label: Some(4),
        label2: Some(5),
        calls_only: false,
    },
    Hook {
        runtime: Runtime::Node,
        site: Site::Usdt {
            provider: "node",
            probe: "http__server__response",
        },
        prog: Prog::UsdtHttpDone,
        slot: slot::NODE_USDT_HTTP,
        label: None,
        label2: None,
        calls_only: false,
    },
    Hook {
        runtime: Runtime::Node,
        site: Site::Usdt {
            provider: "node",
            probe: "http__client__request",
        },
        prog: Prog::UsdtHttp,
        slot: slot::NODE_USDT_CLIENT,
        label: Some(4),
        label2: Some(5),
        calls_only: false,
    },
    Hook {
        runtime: Runtime::Node,
        site: Site::Usdt {
            provider: "node",
            probe: "http__client__response",
        },
        prog: Prog::UsdtHttpDone,
        slot: slot::NODE_USDT_CLIENT,
        label: None,
        label2: None,
        calls_only: false,
    },
    // Node's HTTP parser calls llhttp_should_keep_alive once per parsed message head, from its
    // on_headers_complete; the llhttp_t it gets holds type (offset 72: 1 request, 2 response)
    // and method (offset 73), stable across llhttp 6-9.
    Hook {
        runtime: Runtime::Node,
        site: Site::Symbol {
            name: "llhttp_should_keep_alive",
            short: "llhttp_should_keep_alive",
            ret: false,
            args: "1@73(%rdi) 1@72(%rdi)",
        },
        prog: Prog::Http,
        slot: slot::NODE_HTTP,
        label: Some(0),
        label2: Some(1),
        calls_only: false,
    },
    // V8: every GC (scavenge, mark-compact, minor mark-compact) goes through
    // Heap::PerformGarbageCollection(collector, reason, …); `this` is rdi, collector esi.
    Hook {
        runtime: Runtime::Node,
        site: Site::Symbol {
            name: V8_GC,
            short: "v8::internal::Heap::PerformGarbageCollection",
            ret: false,
            args: "4@%esi",
        },
        prog: Prog::Begin,
        slot: slot::NODE_GC,
        label: Some(0),
        label2: None,
        calls_only: false,
    },
    Hook {
        runtime: Runtime::Node,
        site: Site::Symbol {
            name: V8_GC,
            short: "v8::internal::Heap::PerformGarbageCollection:return",
            ret: true,
            args: "",
        },
        prog: Prog::End,
        slot: slot::NODE_GC,
        label: None,
        label2: None,
        calls_only: false,
    },
];

/// File offset in a stock node binary (`data`) where the HTTP hook attaches (benchmarks compare
/// a bare uprobe there with the pack).
pub fn node_http_site(data: &[u8]) -> Result<u64, String> {
    let Some(Site::Symbol {
        name, args, ret, ..
    }) = BUILT_IN_HOOKS
        .iter()
        .find(|h| h.prog == Prog::Http)
        .map(|h| h.site)
    else {
        return Err("no HTTP hook".into());
    };
    let args = usdt::args::parse_args(args).map_err(|e| e.to_string())?;
    usdt::place::function_site(data, name, &args, ret)
        .map(|(site, _)| site)
        .map_err(|e| e.to_string())
}

/// Event-loop lag of Node.js: libuv runs every ready callback between two epoll waits, so the
/// time a loop thread spends from an epoll wait's return to its next call is the time nothing new
/// could be served. Measured on the syscall tracepoints of these waits (a tracepoint costs ~0.1 µs,
/// a uprobe on libc's wrapper a trap per call) for the node processes in `rt_loop_pids`.
const EPOLL_WAITS: &[&str] = &["epoll_wait", "epoll_pwait", "epoll_pwait2"];

/// One attached runtime binary.
struct Attached {
    runtime: Runtime,
    version: String,
    /// (provider, probe) per attached site.
    sites: Vec<(String, String)>,
    _links: Vec<Link>,
}

/// (provider, probe) sites attached for --config metrics in one file, and their links.
type DeclaredFile = (Vec<(String, String)>, Vec<Link>);

#[derive(Default)]
struct State {
    /// By (device, inode): None when the file turned out not to be attachable.
    files: HashMap<(u64, u64), Option<Attached>>,
    next_spec: u32,
    /// (runtime, version, pid) seen at the last scan.
    procs: Vec<(Runtime, String, u32)>,
    /// Declared (--config) attachments by file: (provider, probe) sites and their links.
    declared_files: HashMap<(u64, u64), DeclaredFile>,
    /// Node processes registered in the kernel's `rt_loop_pids` (event loop, HTTP timing).
    loop_pids: std::collections::HashSet<u32>,
}

struct Inner {
    obj: Object,
    progs: Vec<(Prog, ProgramFd)>,
    specs: Mutex<Array<MapData, UsdtSpec>>,
    state: Mutex<State>,
    target: Mutex<Option<Resolved>>,
    calls: bool,
    http_paths: bool,
    /// Metrics declared with --config; entry i feeds slot DECLARED_SLOT + i.
    declared: Vec<Declared>,
    config_file: String,
}

/// First kernel slot of declared metrics (the packs use 0..DECLARED_SLOT).
const DECLARED_SLOT: u32 = 100;

pub struct Runtimes {
    inner: Arc<Inner>,
    functions: LabelBudget,
    /// Paths of requests served, and of requests sent (node <= 18 USDT).
    paths: LabelBudget,
    client_paths: LabelBudget,
    /// One label budget per declared metric.
    declared_budgets: Vec<LabelBudget>,
    /// Label names of each declared metric (leaked once: the encoder takes &'static str).
    declared_labels: Vec<Vec<&'static str>>,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let paths = u32::from(opts.http_paths).to_ne_bytes();
    // The scanner's pids are those of the sidecar's own pid namespace; outside the initial one
    // (PROC_PID_INIT_INO) the kernel side translates to them (rt_pidns_ino in runtimes.bpf.c).
    let (ns_dev, ns_ino) = std::fs::metadata("/proc/self/ns/pid")
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
        .ok()
        .filter(|&(_, ino)| ino != 0xEFFF_FFFC)
        .unwrap_or((0, 0));
    let (ns_dev, ns_ino) = (ns_dev.to_ne_bytes(), ns_ino.to_ne_bytes());
    let mut obj = Object::load_with(
        "runtimes",
        sidecar_ebpf::objects::RUNTIMES,
        &[
            ("rt_http_paths", &paths),
            ("rt_pidns_dev", &ns_dev),
            ("rt_pidns_ino", &ns_ino),
        ],
    )?;
    let declared = match &opts.usdt_config {
        Some(path) => usdt::config::load(path).map_err(|e| ProbeError::Map {
            family: "runtimes",
            map: "--config".into(),
            detail: e.to_string(),
        })?,
        None => Vec::new(),
    };
    let mut progs = Vec::new();
    for p in Prog::ALL {
        progs.push((p, obj.load_uprobe(p.name())?));
    }
    // Syscall tracepoints need tracefs, often not mounted in a container: mount our own (in
    // our mount namespace) when we may; without it only lag and HTTP durations are missing.
    let attached = match super::object::tracefs() {
        Some(_) => attach_syscall_tracepoints(&mut obj),
        None => Err(ProbeError::Attach {
            family: "runtimes",
            what: "syscall tracepoints".into(),
            detail: "no tracefs at /sys/kernel/tracing".into(),
        }),
    };
    if let Err(e) = attached {
        tracing::warn!(
            "runtimes: node event-loop lag and HTTP durations off (needs tracefs, or CAP_SYS_ADMIN to mount it): {e}"
        );
    }
    let map = obj
        .lock()
        .take_map("usdt_specs")
        .ok_or_else(|| ProbeError::Map {
            family: "runtimes",
            map: "usdt_specs".into(),
            detail: "not in the object".into(),
        })?;
    let specs = Array::try_from(map).map_err(|e| ProbeError::Map {
        family: "runtimes",
        map: "usdt_specs".into(),
        detail: e.to_string(),
    })?;
    let inner = Arc::new(Inner {
        obj,
        progs,
        specs: Mutex::new(specs),
        state: Mutex::new(State::default()),
        target: Mutex::new(None),
        calls: opts.runtime_calls,
        http_paths: opts.http_paths,
        declared,
        config_file: opts
            .usdt_config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    });
    if let Some(cmd) = &opts.run_program {
        for path in run_binaries(cmd) {
            inner.consider(&path, None);
            inner.consider_declared(&path, None);
        }
        for d in &inner.declared {
            if let Scope::Binary(b) = &d.scope
                && b.is_file()
            {
                inner.consider_declared(b, None);
            }
        }
    }
    let n_declared = inner.declared.len();
    let declared_labels = inner
        .declared
        .iter()
        .map(|d| {
            d.labels
                .iter()
                .map(|l| &*Box::leak(l.name.clone().into_boxed_str()))
                .collect()
        })
        .collect();
    let bg = inner.clone();
    spawn_scanner("runtimes", "runtimes-scan", move || bg.scan())?;
    Ok(Arc::new(Runtimes {
        inner,
        functions: LabelBudget::new(opts.top_n),
        paths: LabelBudget::new(opts.top_n),
        client_paths: LabelBudget::new(opts.top_n),
        declared_budgets: (0..n_declared)
            .map(|_| LabelBudget::new(opts.top_n))
            .collect(),
        declared_labels,
    }))
}

fn attach_syscall_tracepoints(obj: &mut Object) -> Result<(), ProbeError> {
    let enters: Vec<String> = EPOLL_WAITS
        .iter()
        .map(|s| format!("sys_enter_{s}"))
        .collect();
    let exits: Vec<String> = EPOLL_WAITS
        .iter()
        .map(|s| format!("sys_exit_{s}"))
        .collect();
    let enters: Vec<&str> = enters.iter().map(String::as_str).collect();
    let exits: Vec<&str> = exits.iter().map(String::as_str).collect();
    obj.attach_tracepoints("rt_loop_enter", "syscalls", &enters)?;
    obj.attach_tracepoints("rt_loop_exit", "syscalls", &exits)?;
    obj.attach_tracepoints("rt_read_enter", "syscalls", &["sys_enter_read"])?;
    obj.attach_tracepoints(
        "rt_write_enter",
        "syscalls",
        &["sys_enter_write", "sys_enter_writev"],
    )
}

/// A thread that runs `scan` every [`RESCAN`] to attach binaries that target processes map later.
/// It keeps what attaching takes ([`KEEPS`]); the rest of the process drops everything after the
/// first attach.
pub fn spawn_scanner(
    family: &'static str,
    thread: &str,
    scan: impl Fn() + Send + 'static,
) -> Result<(), ProbeError> {
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let mut keep = crate::caps::needed_after_attach();
            keep.extend(KEEPS.iter().copied());
            if let Err(e) = crate::caps::drop_all_except(&keep) {
                tracing::debug!("{family} scanner: dropping capabilities: {e}");
            }
            loop {
                std::thread::sleep(RESCAN);
                scan();
            }
        })
        .map(drop)
        .map_err(|e| ProbeError::Map {
            family,
            map: "-".into(),
            detail: format!("starting the scanner thread: {e}"),
        })
}

/// Capabilities the scanner keeps: attaching uprobes to binaries found later (CAP_SYS_ADMIN, or
/// CAP_PERFMON + CAP_BPF), reading other users' /proc/<pid>/root and maps (CAP_SYS_PTRACE).
pub const KEEPS: &[caps::Capability] = &[
    caps::Capability::CAP_SYS_ADMIN,
    caps::Capability::CAP_PERFMON,
    caps::Capability::CAP_BPF,
    caps::Capability::CAP_SYS_PTRACE,
];

/// The file `run -- CMD` will exec: CMD itself when it names a path, else the first match on
/// PATH; links resolved (uprobes attach to the file, not the name).
pub fn resolve_command(cmd: &Path) -> Option<PathBuf> {
    let found = if cmd.components().count() > 1 {
        Some(cmd.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(cmd))
                .find(|c| c.is_file())
        })
    };
    found.and_then(|b| std::fs::canonicalize(b).ok())
}

/// The binaries `run -- CMD` will map: CMD found on PATH, and for a JDK launcher its libjvm.so.
fn run_binaries(cmd: &Path) -> Vec<PathBuf> {
    let Some(bin) = resolve_command(cmd) else {
        return Vec::new();
    };
    let mut out = vec![bin.clone()];
    if let Some(home) = bin.parent().and_then(Path::parent) {
        let jvm = home.join("lib/server/libjvm.so");
        if jvm.is_file() {
            out.push(jvm);
        }
    }
    out
}

impl Inner {
    fn scan(&self) {
        let Some(pids) = procs::pids_of(&self.target) else {
            return;
        };
        let mut seen = Vec::new();
        for pid in pids {
            let Ok(maps) = procs::mappings(pid) else {
                continue;
            };
            for m in maps {
                if !self.declared.is_empty() {
                    self.consider_declared(&m.host_path(pid), Some(&m.path));
                }
                if Runtime::of_path(&m.path).is_none() {
                    continue;
                }
                if let Some((rt, version)) = self.consider(&m.host_path(pid), Some(&m.path)) {
                    if rt == Runtime::Node {
                        self.attach_lag(pid);
                    }
                    seen.push((rt, version, pid));
                }
            }
        }
        seen.sort();
        seen.dedup();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<u32> = st
            .loop_pids
            .iter()
            .copied()
            .filter(|pid| !seen.iter().any(|(_, _, p)| p == pid))
            .collect();
        for pid in gone {
            st.loop_pids.remove(&pid);
            if let Some(Ok(mut m)) = self
                .obj
                .lock()
                .map_mut("rt_loop_pids")
                .map(BpfHashMap::<_, u32, u32>::try_from)
            {
                let _ = m.remove(&pid);
            }
        }
        st.procs = seen;
    }

    /// Register a node process for the event-loop and HTTP-timing tracepoints.
    fn attach_lag(&self, pid: u32) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.loop_pids.insert(pid) {
            return;
        }
        let mut ebpf = self.obj.lock();
        let r = ebpf
            .map_mut("rt_loop_pids")
            .ok_or_else(|| "not in the object".to_string())
            .and_then(|m| BpfHashMap::<_, u32, u32>::try_from(m).map_err(|e| e.to_string()))
            .and_then(|mut m| m.insert(pid, 1, 0).map_err(|e| e.to_string()));
        if let Err(e) = r {
            tracing::warn!(pid, "node event loop: registering the process: {e}");
        }
    }

    /// Write a spec and attach one program at one site with that spec's id as cookie.
    #[allow(clippy::too_many_arguments)]
    fn attach_site(
        &self,
        st: &mut State,
        pid: i32,
        prog: Prog,
        spec: UsdtSpec,
        path: &Path,
        off: u64,
        sema: u64,
        ret: bool,
    ) -> Result<Link, String> {
        let id = st.next_spec;
        if id as usize >= SPECS_MAX {
            return Err(format!("spec table full ({SPECS_MAX} probe sites)"));
        }
        self.specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set(id, spec, 0)
            .map_err(|e| format!("writing spec {id}: {e}"))?;
        st.next_spec += 1;
        let fd = &self
            .progs
            .iter()
            .find(|(p, _)| *p == prog)
            .expect("every program is loaded")
            .1;
        usdt::attach::attach_uprobe(pid, fd.as_fd(), path, off, sema, ret, u64::from(id))
            .map_err(|e| format!("attaching at {off:#x}: {e}"))
    }

    /// Attach the --config metrics that apply to the file at `host_path` (`shown`: its path in
    /// the target), once per file. An unknown probe is logged with the probes the file has; the
    /// other entries still attach.
    fn consider_declared(&self, host_path: &Path, shown: Option<&str>) {
        let shown = shown
            .map(str::to_string)
            .unwrap_or_else(|| host_path.display().to_string());
        let runtime = Runtime::of_path(&shown).map(Runtime::name);
        let entries: Vec<(usize, &Declared)> = self
            .declared
            .iter()
            .enumerate()
            .filter(|(_, d)| match &d.scope {
                Scope::Binary(b) => Path::new(&shown) == b,
                Scope::Runtime(r) => runtime == Some(r.as_str()),
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        let Ok(meta) = std::fs::metadata(host_path) else {
            return;
        };
        let key = (meta.dev(), meta.ino());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.declared_files.contains_key(&key) {
            return;
        }
        let cfg = self.config_file.as_str();
        let notes = match usdt::read_file(host_path).and_then(|d| usdt::probes(&d)) {
            Ok(n) => n,
            Err(e) => {
                for (i, d) in &entries {
                    tracing::warn!("{cfg}: metrics[{i}] ({}): {shown}: {e}", d.name);
                }
                st.declared_files.insert(key, (Vec::new(), Vec::new()));
                return;
            }
        };
        let (mut sites, mut links) = (Vec::new(), Vec::new());
        for (i, d) in entries {
            let slot = DECLARED_SLOT + i as u32;
            let int_label = |n: usize| d.labels.get(n).map(|l| l.arg);
            // (probe, program, label_arg, label2_arg)
            let plan: Vec<(&ProbeName, Prog, Option<u32>, Option<u32>)> = match &d.kind {
                Kind::Count { probe } => vec![(probe, Prog::Count, int_label(0), int_label(1))],
                Kind::CountStrings { probe } => {
                    vec![(probe, Prog::Call, int_label(0), int_label(1))]
                }
                Kind::Pair { begin, end } => vec![
                    (begin, Prog::Begin, int_label(0), None),
                    (end, Prog::End, None, None),
                ],
                Kind::Value { probe, arg } => vec![(probe, Prog::Value, int_label(0), Some(*arg))],
            };
            for (probe, prog, l1, l2) in plan {
                let found: Vec<_> = notes
                    .iter()
                    .filter(|n| n.provider == probe.provider && n.name == probe.probe)
                    .collect();
                if found.is_empty() {
                    let mut have: Vec<String> = notes
                        .iter()
                        .map(|n| format!("{}:{}", n.provider, n.name))
                        .collect();
                    have.dedup();
                    tracing::warn!(
                        "{cfg}: metrics[{i}] ({}): probe {probe} not in {shown}; it has: {}",
                        d.name,
                        have.join(", ")
                    );
                    continue;
                }
                for n in found {
                    let args = match &n.args {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!("{cfg}: metrics[{i}] ({}): {probe}: {e}", d.name);
                            continue;
                        }
                    };
                    if let Some(bad) = [l1, l2]
                        .into_iter()
                        .flatten()
                        .find(|a| *a as usize >= args.len())
                    {
                        tracing::warn!(
                            "{cfg}: metrics[{i}] ({}): {probe} has {} arguments, arg {bad} does not exist",
                            d.name,
                            args.len()
                        );
                        continue;
                    }
                    let mut spec = UsdtSpec {
                        arg_cnt: args.len() as u32,
                        slot,
                        label_arg: l1.unwrap_or(USDT_NO_ARG),
                        label2_arg: l2.unwrap_or(USDT_NO_ARG),
                        ..Default::default()
                    };
                    for (k, a) in args.iter().enumerate() {
                        spec.args[k] = a.to_kernel();
                    }
                    match self.attach_site(
                        &mut st,
                        -1,
                        prog,
                        spec,
                        host_path,
                        n.offset,
                        n.semaphore_offset,
                        false,
                    ) {
                        Ok(l) => {
                            links.push(l);
                            sites.push((probe.provider.clone(), probe.probe.clone()));
                        }
                        Err(e) => {
                            tracing::warn!("{cfg}: metrics[{i}] ({}): {probe}: {e}", d.name)
                        }
                    }
                }
            }
        }
        tracing::info!(
            binary = shown,
            sites = sites.len(),
            "declared USDT metrics attached"
        );
        st.declared_files.insert(key, (sites, links));
    }

    /// Attach the pack of the runtime at `host_path` once per file; returns what it runs.
    fn consider(&self, host_path: &Path, shown: Option<&str>) -> Option<(Runtime, String)> {
        let shown = shown
            .map(str::to_string)
            .unwrap_or_else(|| host_path.display().to_string());
        let runtime = Runtime::of_path(&shown)?;
        let meta = std::fs::metadata(host_path).ok()?;
        let key = (meta.dev(), meta.ino());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(done) = st.files.get(&key) {
            return done.as_ref().map(|a| (a.runtime, a.version.clone()));
        }
        let r = self.attach_file(&mut st, runtime, host_path, &shown);
        match r {
            Ok(a) => {
                tracing::info!(
                    runtime = runtime.name(),
                    version = a.version,
                    binary = shown,
                    sites = a.sites.len(),
                    "runtime pack attached"
                );
                let o = (a.runtime, a.version.clone());
                st.files.insert(key, Some(a));
                Some(o)
            }
            Err(e) => {
                tracing::warn!(
                    runtime = runtime.name(),
                    binary = shown,
                    "runtime pack not attached: {e}"
                );
                st.files.insert(key, None);
                None
            }
        }
    }

    fn attach_file(
        &self,
        st: &mut State,
        runtime: Runtime,
        host_path: &Path,
        shown: &str,
    ) -> Result<Attached, String> {
        let data = usdt::read_file(host_path).map_err(|e| e.to_string())?;
        let version = match runtime {
            Runtime::Python => procs::python_version(shown).unwrap_or_default(),
            Runtime::Java => procs::java_version(host_path).unwrap_or_default(),
            Runtime::Node => procs::node_version(&data).unwrap_or_default(),
        };
        let notes = match usdt::probes(&data) {
            Ok(n) => n,
            // Stock Node >= 19 has no USDT: its pack is the symbol hooks.
            Err(usdt::UsdtError::NoNotes) if runtime == Runtime::Node => Vec::new(),
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        let has_provider = |p: &str| notes.iter().any(|n| n.provider == p);
        let mut links = Vec::new();
        let mut sites = Vec::new();
        for h in packs::HOOKS.iter().filter(|h| h.runtime == runtime) {
            if h.calls_only && !self.calls {
                continue;
            }
            // (offset, semaphore offset, retprobe, args, provider, probe)
            let mut targets = Vec::new();
            match &h.site {
                Site::Usdt { provider, probe } => {
                    if !has_provider(provider) {
                        // A whole provider missing is normal (node >= 19 has none): no noise.
                        continue;
                    }
                    let found: Vec<_> = notes
                        .iter()
                        .filter(|p| p.provider == *provider && p.name == *probe)
                        .collect();
                    if found.is_empty() {
                        tracing::warn!("{shown}: USDT probe {provider}:{probe} not found");
                    }
                    for p in found {
                        match &p.args {
                            Ok(a) => targets.push((
                                p.offset,
                                p.semaphore_offset,
                                false,
                                a.clone(),
                                provider.to_string(),
                                probe.to_string(),
                            )),
                            Err(e) => tracing::warn!("{shown}: {provider}:{probe}: {e}"),
                        }
                    }
                }
                Site::Symbol {
                    name,
                    short,
                    ret,
                    args,
                } => {
                    // A node with USDT (<= 18 --with-dtrace) is covered by its probes; its
                    // llhttp and V8 symbols too would count every request and GC twice.
                    if has_provider("node") {
                        continue;
                    }
                    let args = usdt::args::parse_args(args).map_err(|e| e.to_string())?;
                    match usdt::place::function_site(&data, name, &args, *ret) {
                        Ok((site, moved)) => {
                            tracing::debug!("{shown}: {short} probed at entry+{moved}");
                            targets.push((
                                site,
                                0,
                                *ret,
                                args,
                                "uprobe".to_string(),
                                short.to_string(),
                            ))
                        }
                        Err(e) => tracing::warn!("{shown}: {short}: {e}"),
                    }
                }
            }
            for (off, sema, ret, args, provider, probe) in targets {
                let mut spec = UsdtSpec {
                    arg_cnt: args.len() as u32,
                    slot: h.slot,
                    label_arg: h.label.unwrap_or(USDT_NO_ARG),
                    label2_arg: h.label2.unwrap_or(USDT_NO_ARG),
                    ..Default::default()
                };
                for (i, a) in args.iter().enumerate() {
                    spec.args[i] = a.to_kernel();
                }
                match self.attach_site(st, -1, h.prog, spec, host_path, off, sema, ret) {
                    Ok(l) => {
                        links.push(l);
                        sites.push((provider, probe));
                    }
                    Err(e) => tracing::warn!("{shown}: {provider}:{probe}: {e}"),
                }
            }
        }
        if links.is_empty() {
            return Err(format!("{shown}: no probe could be attached"));
        }
        Ok(Attached {
            runtime,
            version,
            sites,
            _links: links,
        })
    }
}

fn py_generation(label: u64) -> String {
    (label as u32 as i32).to_string()
}

fn java_generation(label: u64) -> String {
    if label & 0xff != 0 { "full" } else { "young" }.to_string()
}

fn v8_generation(label: u64) -> String {
    match label as u32 {
        0 => "scavenge",
        1 => "mark_compact",
        2 => "minor_mark_compact",
        _ => "other",
    }
    .to_string()
}

/// Node's USDT gc__start type (v8::GCType bits, as in V8 10.2 of Node 18: kGCTypeScavenge 1,
/// kGCTypeMinorMarkCompact 2, kGCTypeMarkSweepCompact 4, kGCTypeIncrementalMarking 8,
/// kGCTypeProcessWeakCallbacks 16). A real Node 18.20.4 fires 4 for each `global.gc()`.
fn node_usdt_generation(label: u64) -> String {
    match label as u32 {
        1 => "scavenge",
        2 => "minor_mark_compact",
        4 => "mark_compact",
        8 => "incremental_marking",
        16 => "weak_callbacks",
        _ => "other",
    }
    .to_string()
}

/// llhttp's method numbers (llhttp.h `llhttp_method`), the common ones; the rest are `other`.
pub fn http_method(m: u8) -> &'static str {
    match m {
        0 => "DELETE",
        1 => "GET",
        2 => "HEAD",
        3 => "POST",
        4 => "PUT",
        5 => "CONNECT",
        6 => "OPTIONS",
        7 => "TRACE",
        28 => "PATCH",
        _ => "other",
    }
}

/// `module:function` from a code object's file name and function name.
pub fn function_label(file: &[u8], func: &[u8]) -> String {
    let file = comm_label(file);
    let base = file.rsplit('/').next().unwrap_or(&file);
    let module = base.strip_suffix(".py").unwrap_or(base);
    format!("{module}:{}", comm_label(func))
}

/// An integer label as the low 32 bits of the argument, signed.
fn int_label(v: u32) -> String {
    (v as i32).to_string()
}

/// (sent by the target, method, raw path) of node HTTP requests.
type HttpKey = (bool, &'static str, String);

impl Runtimes {
    /// Node HTTP requests and their durations, served (`client` false) or sent; the histograms
    /// follow the requests' top-N path admission.
    fn encode_http(
        &self,
        enc: &mut DescriptorEncoder,
        client: bool,
        reqs: &BTreeMap<HttpKey, u64>,
        hists: &BTreeMap<HttpKey, Log2Histogram>,
    ) -> fmt::Result {
        let (budget, name, help, duration_help) = if client {
            (
                &self.client_paths,
                "ebpf_sidecar_runtime_http_client_requests",
                "HTTP requests sent by runtimes in the target (node <= 18 with USDT: http__client__request), by runtime and method (and normalised path with --http-paths, top-N plus other).",
                "HTTP requests sent by runtimes in the target, from http__client__request to http__client__response on the same fd, by runtime and method (and path with --http-paths).",
            )
        } else {
            (
                &self.paths,
                "ebpf_sidecar_runtime_http_requests",
                "HTTP requests received by runtimes in the target, by runtime and method (and normalised path with --http-paths, top-N plus other).",
                "HTTP requests served by runtimes in the target: node >= 19 from the parsed request head (llhttp) to the first write(v) of the response on the same connection, node <= 18 from http__server__request to http__server__response; by runtime and method (and path with --http-paths).",
            )
        };
        let folded = budget.fold(
            reqs.iter()
                .filter(|((c, _, _), _)| *c == client)
                .map(|((_, m, p), v)| (p.clone(), *m, *v))
                .collect(),
        );
        let admitted: std::collections::HashSet<String> =
            folded.iter().map(|(p, _, _)| p.clone()).collect();
        let labels = |m: &'static str, p: String| {
            let mut l = vec![("runtime", "node".to_string()), ("method", m.to_string())];
            if self.inner.http_paths {
                l.push(("path", p));
            }
            l
        };
        metrics::counter(
            enc,
            name,
            help,
            folded.into_iter().map(|(p, m, v)| (labels(m, p), v)),
        )?;
        let mut durations: BTreeMap<(&'static str, String), Log2Histogram> = BTreeMap::new();
        for ((_, m, p), h) in hists.iter().filter(|((c, _, _), _)| *c == client) {
            let p = if admitted.contains(p) {
                p.clone()
            } else {
                metrics::OTHER.to_string()
            };
            durations
                .entry((m, p))
                .or_insert_with(|| Log2Histogram::new(sidecar_ebpf::HIST_BUCKETS))
                .add(&h.buckets, h.sum_ns);
        }
        let name = if client {
            "ebpf_sidecar_runtime_http_client_request_duration_seconds"
        } else {
            "ebpf_sidecar_runtime_http_request_duration_seconds"
        };
        metrics::histogram(
            enc,
            name,
            duration_help,
            durations.into_iter().map(|((m, p), h)| (labels(m, p), h)),
        )
    }

    /// The --config metrics: label values joined with \u{1} go through the metric's budget.
    fn encode_declared(
        &self,
        enc: &mut DescriptorEncoder,
        counts: &BTreeMap<(u32, u64), u64>,
        hists: &BTreeMap<(u32, u64), Log2Histogram>,
        strings: &BTreeMap<(u32, Vec<String>), u64>,
    ) -> fmt::Result {
        const SEP: char = '\u{1}';
        for (i, d) in self.inner.declared.iter().enumerate() {
            let slot = DECLARED_SLOT + i as u32;
            let names = &self.declared_labels[i];
            let values_of = |label: u64| -> String {
                let v = [label as u32, (label >> 32) as u32];
                (0..names.len())
                    .map(|k| int_label(v[k]))
                    .collect::<Vec<_>>()
                    .join(&SEP.to_string())
            };
            let to_labels = |joined: &str| -> metrics::Labels {
                let parts: Vec<&str> = joined.split(SEP).collect();
                names
                    .iter()
                    .enumerate()
                    .map(|(k, n)| {
                        let v = if joined == metrics::OTHER {
                            metrics::OTHER
                        } else {
                            parts.get(k).copied().unwrap_or("")
                        };
                        (*n, v.to_string())
                    })
                    .collect()
            };
            let budget = &self.declared_budgets[i];
            if d.is_histogram() {
                let mut by: BTreeMap<String, Log2Histogram> = BTreeMap::new();
                let items: Vec<(String, (), u64)> = hists
                    .iter()
                    .filter(|((s, _), _)| *s == slot)
                    .map(|((_, l), h)| (values_of(*l), (), h.count()))
                    .collect();
                let admitted: std::collections::HashSet<String> =
                    budget.fold(items).into_iter().map(|(l, _, _)| l).collect();
                for ((_, l), h) in hists.iter().filter(|((s, _), _)| *s == slot) {
                    let mut v = values_of(*l);
                    if !admitted.contains(&v) {
                        v = metrics::OTHER.to_string();
                    }
                    by.entry(v)
                        .or_insert_with(|| Log2Histogram::new(sidecar_ebpf::HIST_BUCKETS))
                        .add(&h.buckets, h.sum_ns);
                }
                metrics::histogram(
                    enc,
                    &d.metric(),
                    &d.help,
                    by.into_iter().map(|(v, h)| (to_labels(&v), h)),
                )?;
            } else {
                let items: Vec<(String, (), u64)> = match d.kind {
                    Kind::CountStrings { .. } => strings
                        .iter()
                        .filter(|((s, _), _)| *s == slot)
                        .map(|((_, v), n)| (v[..names.len().min(2)].join(&SEP.to_string()), (), *n))
                        .collect(),
                    _ => counts
                        .iter()
                        .filter(|((s, _), _)| *s == slot)
                        .map(|((_, l), n)| (values_of(*l), (), *n))
                        .collect(),
                };
                metrics::counter(
                    enc,
                    &d.metric(),
                    &d.help,
                    budget
                        .fold(items)
                        .into_iter()
                        .map(|(v, (), n)| (to_labels(&v), n)),
                )?;
            }
        }
        Ok(())
    }
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
        let has = |r: Runtime| seen.contains(&r);
        let ebpf = self.inner.obj.lock();
        let mut counts: BTreeMap<(u32, u64), u64> = BTreeMap::new();
        if let Some(Ok(m)) = ebpf
            .map("rt_counts")
            .map(BpfHashMap::<_, RtKey, u64>::try_from)
        {
            for (k, v) in m.iter().filter_map(|r| r.ok()) {
                *counts.entry((k.slot, k.label)).or_default() += v;
            }
        }
        let mut hists: BTreeMap<(u32, u64), Log2Histogram> = BTreeMap::new();
        if let Some(Ok(m)) = ebpf
            .map("rt_hists")
            .map(BpfHashMap::<_, RtKey, RtHist>::try_from)
        {
            for (k, v) in m.iter().filter_map(|r| r.ok()) {
                hists
                    .entry((k.slot, k.label))
                    .or_insert_with(|| Log2Histogram::new(sidecar_ebpf::HIST_BUCKETS))
                    .add(&v.hist, v.sum_ns);
            }
        }
        let mut calls: Vec<(String, (), u64)> = Vec::new();
        let mut declared_strings: BTreeMap<(u32, Vec<String>), u64> = BTreeMap::new();
        if let Some(Ok(m)) = ebpf
            .map("rt_calls")
            .map(BpfHashMap::<_, RtCallKey, u64>::try_from)
        {
            let mut by: BTreeMap<String, u64> = BTreeMap::new();
            for (k, v) in m.iter().filter_map(|r| r.ok()) {
                match k.slot {
                    slot::PY_CALLS => {
                        *by.entry(function_label(&k.module, &k.function))
                            .or_default() += v
                    }
                    s if s >= DECLARED_SLOT => {
                        *declared_strings
                            .entry((s, vec![comm_label(&k.module), comm_label(&k.function)]))
                            .or_default() += v
                    }
                    _ => {}
                }
            }
            calls.extend(by.into_iter().map(|(k, v)| (k, (), v)));
        }
        // Node HTTP: requests and durations.
        let mut http_reqs: BTreeMap<HttpKey, u64> = BTreeMap::new();
        let mut http_hists: BTreeMap<HttpKey, Log2Histogram> = BTreeMap::new();
        let path_of = |raw: &[u8]| -> String {
            if !self.inner.http_paths {
                return String::new();
            }
            let p = comm_label(raw);
            if p.is_empty() {
                // The read did not start with the request line (a head split across reads).
                metrics::OTHER.to_string()
            } else {
                crate::http_path::normalize(&p)
            }
        };
        if let Some(Ok(m)) = ebpf
            .map("rt_http_reqs")
            .map(BpfHashMap::<_, RtHttpKey, u64>::try_from)
        {
            for (k, v) in m.iter().filter_map(|r| r.ok()) {
                *http_reqs
                    .entry((k.client != 0, http_method(k.method as u8), path_of(&k.path)))
                    .or_default() += v;
            }
        }
        if let Some(Ok(m)) = ebpf
            .map("rt_http_hists")
            .map(BpfHashMap::<_, RtHttpKey, RtHist>::try_from)
        {
            for (k, v) in m.iter().filter_map(|r| r.ok()) {
                http_hists
                    .entry((k.client != 0, http_method(k.method as u8), path_of(&k.path)))
                    .or_insert_with(|| Log2Histogram::new(sidecar_ebpf::HIST_BUCKETS))
                    .add(&v.hist, v.sum_ns);
            }
        }
        drop(ebpf);

        let mut gc: BTreeMap<(&'static str, String), Log2Histogram> = BTreeMap::new();
        let mut lag = Log2Histogram::new(sidecar_ebpf::HIST_BUCKETS);
        for ((s, label), h) in &hists {
            let (rt, generation) = match *s {
                slot::PY_GC => ("python", py_generation(*label)),
                slot::JAVA_GC => ("java", java_generation(*label)),
                slot::NODE_GC => ("node", v8_generation(*label)),
                slot::NODE_USDT_GC => ("node", node_usdt_generation(*label)),
                slot::NODE_LAG => {
                    lag.add(&h.buckets, h.sum_ns);
                    continue;
                }
                _ => continue,
            };
            gc.entry((rt, generation))
                .or_insert_with(|| Log2Histogram::new(sidecar_ebpf::HIST_BUCKETS))
                .add(&h.buckets, h.sum_ns);
        }
        metrics::histogram(
            enc,
            "ebpf_sidecar_runtime_gc_duration_seconds",
            "Garbage-collection pauses of language runtimes in the target, by runtime and generation (python: 0-2; java: young/full; node: scavenge/mark_compact/minor_mark_compact). _count is the number of GCs.",
            gc.into_iter()
                .map(|((rt, g), h)| (vec![("runtime", rt.to_string()), ("generation", g)], h)),
        )?;

        let sum_slot = |s: u32| -> u64 {
            counts
                .iter()
                .filter(|((sl, _), _)| *sl == s)
                .map(|(_, v)| *v)
                .sum()
        };
        for client in [false, true] {
            self.encode_http(enc, client, &http_reqs, &http_hists)?;
        }
        let calls_total: Vec<_> = if self.inner.calls {
            self.functions.fold(calls)
        } else {
            Vec::new()
        };
        metrics::counter(
            enc,
            "ebpf_sidecar_runtime_function_calls",
            "Function calls in runtimes of the target by module:function, top-N plus other (--runtime-calls; CPython fires these only while sys.settrace/setprofile is active).",
            calls_total
                .into_iter()
                .map(|(f, (), v)| (vec![("runtime", "python".to_string()), ("function", f)], v)),
        )?;
        // Plain hit counts, one series per runtime that has the probe.
        for (name, help, runtime, s) in [
            (
                "ebpf_sidecar_runtime_imports",
                "Modules imported (found and loaded) by runtimes in the target.",
                Runtime::Python,
                slot::PY_IMPORTS,
            ),
            (
                "ebpf_sidecar_runtime_classes_loaded",
                "Classes loaded by runtimes in the target.",
                Runtime::Java,
                slot::JAVA_CLASSES,
            ),
            (
                "ebpf_sidecar_runtime_threads_started",
                "Threads started by runtimes in the target.",
                Runtime::Java,
                slot::JAVA_THREADS,
            ),
        ] {
            metrics::counter(
                enc,
                name,
                help,
                has(runtime).then(|| (vec![("runtime", runtime.name().to_string())], sum_slot(s))),
            )?;
        }
        metrics::histogram(
            enc,
            "ebpf_sidecar_nodejs_event_loop_lag_seconds",
            "Time a Node.js event-loop thread of the target spent between an epoll wait's return and its next call (callbacks running, nothing new served).",
            has(Runtime::Node).then_some((vec![], lag)),
        )?;

        self.encode_declared(enc, &counts, &hists, &declared_strings)?;

        let st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        metrics::gauge(
            enc,
            "ebpf_sidecar_runtime_info",
            "Processes of the target running a supported language runtime (at most 100 listed).",
            st.procs.iter().take(100).map(|(rt, v, pid)| {
                (
                    vec![
                        ("runtime", rt.name().to_string()),
                        ("version", v.clone()),
                        ("pid", pid.to_string()),
                    ],
                    1i64,
                )
            }),
        )?;
        let mut attached: BTreeMap<(String, String), i64> = BTreeMap::new();
        for a in st.files.values().flatten() {
            for s in &a.sites {
                *attached.entry(s.clone()).or_default() += 1;
            }
        }
        for (sites, _) in st.declared_files.values() {
            for s in sites {
                *attached.entry(s.clone()).or_default() += 1;
            }
        }
        metrics::gauge(
            enc,
            "ebpf_sidecar_usdt_probes_attached",
            "Probe sites attached, by USDT provider and probe (provider \"uprobe\": a function symbol).",
            attached
                .into_iter()
                .map(|((p, n), v)| (vec![("provider", p), ("probe", n)], v)),
        )?;
        Ok(())
    }

    fn lost_events(&self) -> u64 {
        let ebpf = self.inner.obj.lock();
        percpu_counter(&ebpf, "rt_counters", rc::LOST_KEYS)
            + percpu_counter(&ebpf, "rt_counters", rc::LOST_BEGINS)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(function_label(b"/tmp/x/work.py\0\0", b"fib\0"), "work:fib");
        assert_eq!(
            function_label(b"<string>\0", b"<module>\0"),
            "<string>:<module>"
        );
        assert_eq!(py_generation(2), "2");
        assert_eq!(java_generation(1), "full");
        assert_eq!(v8_generation(0), "scavenge");
        assert_eq!(http_method(1), "GET");
        assert_eq!(http_method(3), "POST");
        assert_eq!(http_method(200), "other");
        assert_eq!(node_usdt_generation(1), "scavenge");
        assert_eq!(node_usdt_generation(4), "mark_compact");
        assert_eq!(node_usdt_generation(8), "incremental_marking");
        assert_eq!(
            Runtime::of_path("/usr/bin/python3.11"),
            Some(Runtime::Python)
        );
        assert_eq!(
            Runtime::of_path("/usr/lib/jvm/j/lib/server/libjvm.so"),
            Some(Runtime::Java)
        );
        assert_eq!(Runtime::of_path("/usr/bin/node"), Some(Runtime::Node));
        assert_eq!(
            Runtime::of_path("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            None
        );
    }

    #[test]
    fn hooks_parse() {
        for h in packs::HOOKS.iter() {
            if let Site::Symbol { args, .. } = h.site {
                let a = usdt::args::parse_args(args).unwrap();
                for l in [h.label, h.label2].into_iter().flatten() {
                    assert!((l as usize) < a.len());
                }
            }
        }
    }
}
