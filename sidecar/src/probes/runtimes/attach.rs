//! Attaching: the family's programs at load, then the pack's hooks (USDT probes and function
//! symbols) and the --config metrics' probes of each runtime file, each site with a spec that
//! tells the kernel side where its arguments are and which slot it feeds. A file's sites are
//! planned once (read, placed, specs written); they are attached **per target process**
//! (`perf_event_open` with its pid: the kernel puts the breakpoint in that process only, so a
//! neighbour mapping the same binary never traps), when the scanner first sees the process, and
//! detached when it exits. `run` mode hooks its command's binaries for every process before the
//! command starts, so its start-up is seen; on a shared kernel side such a site is pinned once
//! per set (see `sites`) and the per-process sites of other sidecars skip it.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::MapData;
use aya::programs::ProgramFd;
use sidecar_ebpf::{USDT_NO_ARG, UsdtSpec};

use super::discovery::Runtime;
use super::hooks::{Hook, Prog, Site};
use super::packs;
use super::sites::{self, Specs};
use crate::monitored::Resolved;
use crate::probes::{Object, ProbeError};
use crate::usdt::config::{Declared, Kind, ProbeName, Scope};
use crate::usdt::{self, Arg, UsdtProbe, attach::Link, procs};

/// Entries of the kernel's `usdt_specs` array and of a target's `rt_declared_specs`
/// (USDT_SPECS_MAX in usdt.bpf.h). Specs are not reused: a kernel side whose pack sites (or a
/// sidecar whose --config sites) reach this many over its life logs and stops attaching.
pub(super) const SPECS_MAX: usize = 1024;

/// First kernel slot of declared metrics (the packs use 0..DECLARED_SLOT).
pub(super) const DECLARED_SLOT: u32 = 100;

/// Event-loop lag of Node.js: libuv runs every ready callback between two epoll waits, so the
/// time a loop thread spends from an epoll wait's return to its next call is the time nothing new
/// could be served. Measured on the syscall tracepoints of these waits (a tracepoint costs ~0.1 µs,
/// a uprobe on libc's wrapper a trap per call) for the node processes in `rt_loop_pids`.
const EPOLL_WAITS: &[&str] = &["epoll_wait", "epoll_pwait", "epoll_pwait2"];

/// One runtime binary: its pack's sites, planned once.
pub(super) struct Attached {
    pub runtime: Runtime,
    pub version: String,
    /// (provider, probe) per site.
    pub sites: Vec<(String, String)>,
    plan: Vec<Planned>,
    /// `run` mode hooked it for every process: never per process then.
    everywhere: bool,
    /// Those links, when this sidecar holds them (a private kernel side).
    _links: Vec<Link>,
}

/// A site of a file, ready to attach to any process that maps it.
struct Planned {
    prog: Prog,
    off: u64,
    sema: u64,
    ret: bool,
    cookie: u64,
    /// A pack site's pin on a shared set: while it exists, a sidecar hooked the site for every
    /// process, and a per-process link as well would run the program twice per hit.
    pin: Option<PathBuf>,
}

/// (provider, probe) sites of --config metrics in one file, and their plan.
pub(super) struct DeclaredFile {
    pub sites: Vec<(String, String)>,
    plan: Vec<Planned>,
    everywhere: bool,
    _links: Vec<Link>,
}

/// (provider, probe) per site of a file's --config metrics, and their plan.
type DeclaredPlan = (Vec<(String, String)>, Vec<Planned>);

/// A target process being hooked: its start time (a reused pid is another process) and its
/// links by (file, --config sites).
struct Hooked {
    start: u64,
    files: HashMap<((u64, u64), bool), Vec<Link>>,
}

#[derive(Default)]
pub(super) struct State {
    /// By (device, inode): None when the file turned out not to be attachable.
    pub files: HashMap<(u64, u64), Option<Attached>>,
    /// (runtime, version, pid) seen at the last scan.
    pub procs: Vec<(Runtime, String, u32)>,
    /// Declared (--config) sites by file.
    pub declared_files: HashMap<(u64, u64), DeclaredFile>,
    /// Node processes registered in the kernel's `rt_loop_pids` (event loop, HTTP timing).
    pub loop_pids: HashSet<u32>,
    /// The target processes hooked, by pid.
    hooked: HashMap<u32, Hooked>,
}

impl State {
    /// Detach the processes that are not in `live` any more (exited, or left the target).
    pub(super) fn forget_gone(&mut self, live: &HashSet<u32>) {
        self.hooked
            .retain(|pid, h| live.contains(pid) && procs::start_time(*pid) == Some(h.start));
    }
}

/// What the family keeps between scans: its object, programs and spec table, what it attached.
pub(super) struct Inner {
    pub obj: Object,
    /// Each program as loaded here, and on a shared set the set's copy that sites attach.
    progs: Vec<(Prog, ProgramFd, Option<OwnedFd>)>,
    specs: Specs,
    /// This target's `rt_loop_pids`.
    pub loop_pids_map: Mutex<aya::maps::HashMap<MapData, u32, u32>>,
    pub state: Mutex<State>,
    pub target: Mutex<Option<Resolved>>,
    pub calls: bool,
    /// This slot has an `rt_calls` (--runtime-calls, or --config counts by strings).
    pub calls_table: bool,
    pub http_paths: bool,
    /// Metrics declared with --config; entry i feeds slot DECLARED_SLOT + i.
    pub declared: Vec<Declared>,
    config_file: String,
}

/// Where one program goes: a file offset, its semaphore, entry or return; the file as uprobes
/// know it (`sites::file_id`).
struct At {
    file: (u64, u64),
    off: u64,
    sema: u64,
    ret: bool,
}

/// Whose a site is: the kernel side's (a pack's) or this target's (--config).
#[derive(Clone, Copy)]
enum Owner {
    Pack,
    Declared,
}

/// A site found for a hook, before it is attached.
struct Target {
    off: u64,
    sema: u64,
    ret: bool,
    args: Vec<Arg>,
    provider: String,
    probe: String,
}

/// The spec of a site: its arguments, the slot it feeds and which arguments label it.
fn spec(args: &[Arg], slot: u32, label: Option<u32>, label2: Option<u32>) -> UsdtSpec {
    let mut spec = UsdtSpec {
        arg_cnt: args.len() as u32,
        slot,
        label_arg: label.unwrap_or(USDT_NO_ARG),
        label2_arg: label2.unwrap_or(USDT_NO_ARG),
        ..Default::default()
    };
    for (i, a) in args.iter().enumerate() {
        spec.args[i] = a.to_kernel();
    }
    spec
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

/// Write this target's settings (`rt_config`): the pid namespace its node pids are numbered in.
fn write_config(obj: &mut Object, pidns: (u64, u64)) -> Result<(), ProbeError> {
    let value = sidecar_ebpf::RtConfig {
        pidns_dev: pidns.0,
        pidns_ino: pidns.1,
    };
    obj.write_slot_array("rt_config", [value])
}

impl Inner {
    /// Load the uprobe programs (attached per site later; on a shared set, the set's copies),
    /// attach the syscall tracepoints, write this target's settings and take the spec tables.
    pub(super) fn new(
        mut obj: Object,
        pidns: (u64, u64),
        (calls, calls_table): (bool, bool),
        http_paths: bool,
        declared: Vec<Declared>,
        config_file: String,
    ) -> Result<Self, ProbeError> {
        let mut progs = Vec::new();
        for p in Prog::ALL {
            let own = obj.load_uprobe(p.name())?;
            let set = obj.set_uprobe(p.name())?;
            progs.push((p, own, set));
        }
        write_config(&mut obj, pidns)?;
        // Syscall tracepoints need tracefs, often not mounted in a container: mount our own (in
        // our mount namespace) when we may; without it only lag and HTTP durations are missing.
        let attached = match crate::probes::object::tracefs() {
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
        let specs = Specs::take(&mut obj)?;
        let loop_pids = obj.take_slot_map_as("rt_loop_pids")?;
        Ok(Self {
            obj,
            progs,
            specs,
            loop_pids_map: Mutex::new(loop_pids),
            state: Mutex::new(State::default()),
            target: Mutex::new(None),
            calls,
            calls_table,
            http_paths,
            declared,
            config_file,
        })
    }

    /// The program fd sites attach (on a shared set, the set's copy).
    fn prog_fd(&self, prog: Prog) -> std::os::fd::BorrowedFd<'_> {
        let (_, own, set) = self
            .progs
            .iter()
            .find(|(p, _, _)| *p == prog)
            .expect("every program is loaded");
        match set {
            Some(set) => set.as_fd(),
            None => own.as_fd(),
        }
    }

    /// Write a site's spec: its cookie, and for a pack site its pin on a shared set.
    fn plan_site(
        &self,
        prog: Prog,
        spec: UsdtSpec,
        at: At,
        owner: Owner,
    ) -> Result<Planned, String> {
        let (cookie, pin) = match owner {
            Owner::Declared => (self.specs.put_declared(spec)?, None),
            Owner::Pack => {
                let name = sites::site_name(at.file, at.off, at.ret, spec.slot, prog.name());
                let id = self.specs.put_shared(spec)?;
                (u64::from(id), sites::site_pin(&self.obj, &name))
            }
        };
        Ok(Planned {
            prog,
            off: at.off,
            sema: at.sema,
            ret: at.ret,
            cookie,
            pin,
        })
    }

    /// One planned site, for process `pid` (-1: every process).
    fn attach_one(&self, p: &Planned, path: &Path, pid: i32) -> std::io::Result<Link> {
        usdt::attach::attach_uprobe(
            pid,
            self.prog_fd(p.prog),
            path,
            p.off,
            p.sema,
            p.ret,
            p.cookie,
        )
    }

    /// Attach a file's sites to process `pid` (its own path to the file: `path`). Pack sites
    /// some sidecar of the set hooked for every process are skipped.
    fn attach_plan(&self, plan: &[Planned], path: &Path, pid: u32) -> Result<Vec<Link>, String> {
        let mut links = Vec::with_capacity(plan.len());
        for p in plan {
            if p.pin.as_ref().is_some_and(|pin| pin.exists()) {
                continue;
            }
            let link = self
                .attach_one(p, path, pid as i32)
                .map_err(|e| format!("attaching at {:#x}: {e}", p.off))?;
            links.push(link);
        }
        Ok(links)
    }

    /// `run` mode: attach a file's sites for every process. A pack site on a shared set is
    /// pinned, or skipped when the set has it already (nothing for this sidecar to hold);
    /// --config sites carry this target's slot in their cookie and are this sidecar's.
    fn attach_everywhere(&self, plan: &[Planned], path: &Path) -> Vec<Link> {
        let mut links = Vec::new();
        for p in plan {
            if p.pin.as_ref().is_some_and(|pin| pin.exists()) {
                continue;
            }
            let link = match self.attach_one(p, path, -1) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(path = %path.display(), "attaching at {:#x}: {e}", p.off);
                    continue;
                }
            };
            let Some(pin) = &p.pin else {
                links.push(link);
                continue;
            };
            match crate::kernel_side::pin_fd(std::os::fd::AsFd::as_fd(&link), pin) {
                // The set holds it now, and the spec with it.
                Ok(()) => self.specs.keep(p.cookie as u32),
                // Another sidecar attached the same site meanwhile: theirs stays, ours goes.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => tracing::warn!("pinning at {}: {e}", pin.display()),
            }
        }
        links
    }

    /// Attach `plan` (the sites of the file `key`, `declared` or the pack's) to `pid`, unless
    /// done: once per (process, file).
    fn hook(
        &self,
        st: &mut State,
        (key, declared): ((u64, u64), bool),
        path: &Path,
        pid: u32,
        shown: &str,
    ) {
        if st
            .hooked
            .get(&pid)
            .is_some_and(|h| h.files.contains_key(&(key, declared)))
        {
            return;
        }
        let plan = if declared {
            st.declared_files
                .get(&key)
                .filter(|d| !d.everywhere)
                .map(|d| &d.plan)
        } else {
            st.files
                .get(&key)
                .and_then(Option::as_ref)
                .filter(|a| !a.everywhere)
                .map(|a| &a.plan)
        };
        let links = match plan.map(|plan| self.attach_plan(plan, path, pid)) {
            None => Vec::new(),
            Some(Ok(links)) => links,
            Some(Err(e)) => {
                tracing::debug!(pid, binary = shown, "runtimes: not attached: {e}");
                return; // gone meanwhile, or not attachable now: the next scan tries again
            }
        };
        let Some(start) = procs::start_time(pid) else {
            return;
        };
        let h = st.hooked.entry(pid).or_insert_with(|| Hooked {
            start,
            files: HashMap::new(),
        });
        h.files.insert((key, declared), links);
    }

    /// The --config metrics that apply to the file at `host_path` (`shown`: its path in the
    /// target): planned once per file, then attached to process `pid`, or with None (`run`
    /// mode) for every process. An unknown probe is logged with the probes the file has; the
    /// other entries still attach.
    pub(super) fn consider_declared(
        &self,
        host_path: &Path,
        shown: Option<&str>,
        pid: Option<u32>,
    ) {
        let shown = shown
            .map(str::to_string)
            .unwrap_or_else(|| host_path.display().to_string());
        let Ok(meta) = std::fs::metadata(host_path) else {
            return;
        };
        let key = (meta.dev(), meta.ino());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let std::collections::hash_map::Entry::Vacant(entry) = st.declared_files.entry(key) {
            let Some((sites, plan)) = self.plan_declared(host_path, &shown) else {
                return;
            };
            let (everywhere, links) = match pid {
                None => (true, self.attach_everywhere(&plan, host_path)),
                Some(_) => (false, Vec::new()),
            };
            tracing::info!(
                binary = shown,
                sites = sites.len(),
                every_process = everywhere,
                "declared USDT metrics planned"
            );
            entry.insert(DeclaredFile {
                sites,
                plan,
                everywhere,
                _links: links,
            });
        }
        if let Some(pid) = pid {
            self.hook(&mut st, (key, true), host_path, pid, &shown);
        }
    }

    /// The --config sites of one file; None when no metric applies to it.
    fn plan_declared(&self, host_path: &Path, shown: &str) -> Option<DeclaredPlan> {
        let runtime = Runtime::of_path(shown).map(Runtime::name);
        let entries: Vec<(usize, &Declared)> = self
            .declared
            .iter()
            .enumerate()
            .filter(|(_, d)| match &d.scope {
                Scope::Binary(b) => Path::new(shown) == b,
                Scope::Runtime(r) => runtime == Some(r.as_str()),
            })
            .collect();
        if entries.is_empty() {
            return None;
        }
        let cfg = self.config_file.as_str();
        let file = sites::file_id(host_path);
        let notes = match usdt::read_file(host_path).and_then(|d| usdt::probes(&d)) {
            Ok(n) => n,
            Err(e) => {
                for (i, d) in &entries {
                    tracing::warn!("{cfg}: metrics[{i}] ({}): {shown}: {e}", d.name);
                }
                return Some((Vec::new(), Vec::new()));
            }
        };
        let (mut sites, mut plan) = (Vec::new(), Vec::new());
        for (i, d) in entries {
            let who = format!("{cfg}: metrics[{i}] ({})", d.name);
            let slot = DECLARED_SLOT + i as u32;
            for (probe, prog, l1, l2) in declared_plan(d) {
                let found: Vec<&UsdtProbe> = notes
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
                        "{who}: probe {probe} not in {shown}; it has: {}",
                        have.join(", ")
                    );
                    continue;
                }
                for n in found {
                    let args = match &n.args {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!("{who}: {probe}: {e}");
                            continue;
                        }
                    };
                    if let Some(bad) = [l1, l2]
                        .into_iter()
                        .flatten()
                        .find(|a| *a as usize >= args.len())
                    {
                        tracing::warn!(
                            "{who}: {probe} has {} arguments, arg {bad} does not exist",
                            args.len()
                        );
                        continue;
                    }
                    let at = At {
                        file,
                        off: n.offset,
                        sema: n.semaphore_offset,
                        ret: false,
                    };
                    match self.plan_site(prog, spec(args, slot, l1, l2), at, Owner::Declared) {
                        Ok(p) => {
                            plan.push(p);
                            sites.push((probe.provider.clone(), probe.probe.clone()));
                        }
                        Err(e) => tracing::warn!("{who}: {probe}: {e}"),
                    }
                }
            }
        }
        Some((sites, plan))
    }

    /// The pack of the runtime at `host_path`: planned once per file, then attached to process
    /// `pid`, or with None (`run` mode) for every process. Returns what the file runs.
    pub(super) fn consider(
        &self,
        host_path: &Path,
        shown: Option<&str>,
        pid: Option<u32>,
    ) -> Option<(Runtime, String)> {
        let shown = shown
            .map(str::to_string)
            .unwrap_or_else(|| host_path.display().to_string());
        let runtime = Runtime::of_path(&shown)?;
        let meta = std::fs::metadata(host_path).ok()?;
        let key = (meta.dev(), meta.ino());
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let std::collections::hash_map::Entry::Vacant(entry) = st.files.entry(key) {
            let planned = match self.plan_file(runtime, host_path, &shown) {
                Ok(mut a) => {
                    if pid.is_none() {
                        a._links = self.attach_everywhere(&a.plan, host_path);
                        a.everywhere = true;
                    }
                    tracing::info!(
                        runtime = runtime.name(),
                        version = a.version,
                        binary = shown,
                        sites = a.sites.len(),
                        every_process = a.everywhere,
                        "runtime pack planned"
                    );
                    Some(a)
                }
                Err(e) => {
                    tracing::warn!(
                        runtime = runtime.name(),
                        binary = shown,
                        "runtime pack not attached: {e}"
                    );
                    None
                }
            };
            entry.insert(planned);
        }
        let out = st
            .files
            .get(&key)
            .and_then(Option::as_ref)
            .map(|a| (a.runtime, a.version.clone()))?;
        if let Some(pid) = pid {
            self.hook(&mut st, (key, false), host_path, pid, &shown);
        }
        Some(out)
    }

    fn plan_file(
        &self,
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
        let file = sites::file_id(host_path);
        let mut plan = Vec::new();
        let mut sites = Vec::new();
        for h in packs::HOOKS.iter().filter(|h| h.runtime == runtime) {
            if h.calls_only && !self.calls {
                continue;
            }
            for t in hook_targets(h, &notes, &data, shown)? {
                let (provider, probe) = (t.provider, t.probe);
                let at = At {
                    file,
                    off: t.off,
                    sema: t.sema,
                    ret: t.ret,
                };
                let spec = spec(&t.args, h.slot, h.label, h.label2);
                match self.plan_site(h.prog, spec, at, Owner::Pack) {
                    Ok(p) => {
                        plan.push(p);
                        sites.push((provider, probe));
                    }
                    Err(e) => tracing::warn!("{shown}: {provider}:{probe}: {e}"),
                }
            }
        }
        if sites.is_empty() {
            return Err(format!("{shown}: no probe could be attached"));
        }
        Ok(Attached {
            runtime,
            version,
            sites,
            plan,
            everywhere: false,
            _links: Vec::new(),
        })
    }
}

/// (probe, program, label argument, second label argument) for each probe a declared metric
/// attaches.
fn declared_plan(d: &Declared) -> Vec<(&ProbeName, Prog, Option<u32>, Option<u32>)> {
    let int_label = |n: usize| d.labels.get(n).map(|l| l.arg);
    match &d.kind {
        Kind::Count { probe } => vec![(probe, Prog::Count, int_label(0), int_label(1))],
        Kind::CountStrings { probe } => vec![(probe, Prog::Call, int_label(0), int_label(1))],
        Kind::Pair { begin, end } => vec![
            (begin, Prog::Begin, int_label(0), None),
            (end, Prog::End, None, None),
        ],
        Kind::Value { probe, arg } => vec![(probe, Prog::Value, int_label(0), Some(*arg))],
    }
}

/// The sites of one hook in a file (`notes`: its USDT probes, `data`: its bytes). A site that
/// cannot be placed is logged and skipped; a hook whose argument spec does not parse is a defect
/// of the hook table and fails the file.
fn hook_targets(
    h: &Hook,
    notes: &[UsdtProbe],
    data: &[u8],
    shown: &str,
) -> Result<Vec<Target>, String> {
    let has_provider = |p: &str| notes.iter().any(|n| n.provider == p);
    let mut targets = Vec::new();
    match &h.site {
        Site::Usdt { provider, probe } => {
            if !has_provider(provider) {
                // A whole provider missing is normal (node >= 19 has none): no noise.
                return Ok(targets);
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
                    Ok(a) => targets.push(Target {
                        off: p.offset,
                        sema: p.semaphore_offset,
                        ret: false,
                        args: a.clone(),
                        provider: provider.to_string(),
                        probe: probe.to_string(),
                    }),
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
                return Ok(targets);
            }
            let args = usdt::args::parse_args(args).map_err(|e| e.to_string())?;
            match usdt::place::function_site(data, name, &args, *ret) {
                Ok((site, moved)) => {
                    tracing::debug!("{shown}: {short} probed at entry+{moved}");
                    targets.push(Target {
                        off: site,
                        sema: 0,
                        ret: *ret,
                        args,
                        provider: "uprobe".to_string(),
                        probe: short.to_string(),
                    })
                }
                Err(e) => tracing::warn!("{shown}: {short}: {e}"),
            }
        }
    }
    Ok(targets)
}
