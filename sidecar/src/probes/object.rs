//! One loaded BPF object: load with the kernel's BTF, attach, write the target filter, read
//! per-program kernel statistics.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, OnceLock};

use aya::maps::Array;
use aya::programs::cgroup_skb::CgroupSkbLinkId;
use aya::programs::links::FdLink;
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, ProgramFd,
    RawTracePoint, TracePoint, UProbe,
};
use aya::{Ebpf, EbpfLoader, Pod};
use thiserror::Error;

use super::dispatch::{Side, SyscallDispatch};
use crate::kernel_side::Handle as KsHandle;
use crate::monitored::Filter;

/// A directory on bpffs only its owner (root) may enter (see README, "Threat model").
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
}

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error("probe {family}: loading the BPF object: {source}")]
    Load {
        family: &'static str,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("probe {family}: program {program} not found in the object")]
    MissingProgram {
        family: &'static str,
        program: String,
    },
    #[error("probe {family}: map {map} missing or of the wrong type: {detail}")]
    Map {
        family: &'static str,
        map: String,
        detail: String,
    },
    /// Attaching needs something the environment does not give (a capability, a namespace).
    #[error("probe {family}: {what}: {detail}")]
    Attach {
        family: &'static str,
        what: String,
        detail: String,
    },
    /// An output the family was asked to write (e.g. `run --seccomp-out`).
    #[error("probe {family}: {what}: {source}")]
    Output {
        family: &'static str,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("probe {family}: program {program}: {source}{log}", log = verifier_hint(.source))]
    Program {
        family: &'static str,
        program: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
}

fn verifier_hint(e: &aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError { verifier_log, .. } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            format!(
                "\nverifier log (last lines):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        }
        _ => String::new(),
    }
}

/// Where a family's syscall hook went (see `Object::attach_syscall_hook`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallHook {
    /// On this many per-syscall tracepoints.
    Tracepoints(usize),
    /// On the raw tracepoint: every syscall of the host runs the program.
    Raw,
    /// In the syscalls family's jump slot: runs for the target's syscalls only.
    Dispatched,
}

/// The tracefs root, mounted in our own mount namespace when nobody has (containers rarely have
/// it; mounting needs CAP_SYS_ADMIN). Decided once, before any tracepoint is attached: aya
/// remembers the tracefs path it finds first. `EBPF_SIDECAR_TRACEFS=off` pretends there is none
/// (the raw-tracepoint fallbacks: for comparing both hooks).
pub fn tracefs() -> Option<&'static Path> {
    static ROOT: OnceLock<Option<&'static Path>> = OnceLock::new();
    *ROOT.get_or_init(|| {
        if std::env::var_os("EBPF_SIDECAR_TRACEFS").is_some_and(|v| v == "off") {
            return None;
        }
        let ok = |p: &'static str| Path::new(p).join("events").is_dir().then(|| Path::new(p));
        if let Some(p) = ok("/sys/kernel/tracing").or_else(|| ok("/sys/kernel/debug/tracing")) {
            return Some(p);
        }
        // SAFETY: constant NUL-terminated strings; a failure only leaves tracefs unmounted.
        let r = unsafe {
            libc::mount(
                c"tracefs".as_ptr(),
                c"/sys/kernel/tracing".as_ptr(),
                c"tracefs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if r != 0 {
            tracing::debug!("mounting tracefs: {}", std::io::Error::last_os_error());
        }
        ok("/sys/kernel/tracing")
    })
}

/// Kernel-side cost of one program (filled only while bpf_stats is enabled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    pub program: String,
    pub run_time_ns: u64,
    pub run_count: u64,
}

pub struct Object {
    pub family: &'static str,
    ebpf: std::sync::Arc<Mutex<Ebpf>>,
    /// Where the object lives (shared: its maps are pinned and its programs attached once per
    /// host) and this sidecar's slot.
    ks: KsHandle,
    /// This slot's inner map of each per-target array of maps, by the outer map's name: what
    /// the family reads (see `sidecar.bpf.h`'s SIDECAR_SLOT_MAP).
    slot_maps: std::collections::BTreeMap<String, aya::maps::Map>,
    /// Programs attached on the shared set (by us or an earlier sidecar): their pins, for
    /// bpf_stats.
    pinned_programs: Vec<(String, std::path::PathBuf)>,
    programs: Vec<String>,
    /// Whether the --target-tree programs (fork/free) are attached.
    tree_followed: std::sync::atomic::AtomicBool,
    /// Failed map reads by map name (`ebpf_sidecar_map_read_errors_total`).
    read_errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// How a family's object is loaded: its `const volatile` settings, and for its per-target maps
/// (SIDECAR_SLOT_MAP) the sizes of this slot's inner maps and those it does not need (an option
/// that is off: the kernel then finds no map and skips the work).
#[derive(Default)]
pub struct LoadOpts<'a> {
    pub globals: &'a [(&'a str, &'a [u8])],
    pub inner_max_entries: &'a [(&'a str, u32)],
    pub without_inner: &'a [&'a str],
}

/// A program loaded already is fine: in node mode one object serves every container, and the
/// first one's load is everyone's.
fn once(r: Result<(), ProgramError>) -> Result<(), ProgramError> {
    match r {
        Err(ProgramError::AlreadyLoaded) => Ok(()),
        r => r,
    }
}

/// The inner-map definition of each per-target array of maps (SIDECAR_SLOT_MAP), by name.
type PerTarget = Vec<(String, aya_obj::Map)>;

/// Parse and load `bytes` (maps pinned on a shared set), with its per-target map definitions.
fn load_fresh(
    ks: &KsHandle,
    family: &'static str,
    bytes: &[u8],
    globals: &[(&str, &[u8])],
) -> Result<(Ebpf, PerTarget), ProbeError> {
    let parsed = aya_obj::Object::parse(bytes).map_err(|e| ProbeError::Map {
        family,
        map: "(object)".into(),
        detail: format!("{e:?}"),
    })?;
    let mut loader = EbpfLoader::new();
    // Task storage (per-thread syscall start) has no typed wrapper in aya 0.14 but loads fine.
    loader.allow_unsupported_maps();
    for (name, value) in globals {
        loader.override_global(name, *value, true);
    }
    let mut pins = Vec::new();
    for name in parsed.maps.keys() {
        // Read-only data (`const volatile` settings, string constants) is frozen once
        // written, and aya writes it at every load: a joining sidecar could not load with a
        // pinned copy. Each sidecar keeps its own; the programs read the copy of the sidecar
        // that loaded them (so a `const volatile` is for settings every sidecar of the set
        // gives alike: per-target ones are SIDECAR_SLOT_* flags).
        if name.starts_with(".rodata") {
            continue;
        }
        if let Some(pin) = ks.map_pin(family, name) {
            pins.push((name.as_str(), pin));
        }
    }
    for (_, pin) in &pins {
        if let Some(dir) = pin.parent() {
            make_private_dir(dir).map_err(|e| ProbeError::Attach {
                family,
                what: format!("creating {}", dir.display()),
                detail: e.to_string(),
            })?;
        }
    }
    for (name, pin) in &pins {
        loader.map_pin_path(name, pin.as_path());
    }
    let ebpf = loader.load(bytes).map_err(|e| ProbeError::Load {
        family,
        source: Box::new(e),
    })?;
    let mut per_target = Vec::new();
    for (name, def) in &parsed.maps {
        if def.map_type() != aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY_OF_MAPS as u32 {
            continue;
        }
        let inner = def.inner().ok_or_else(|| ProbeError::Map {
            family,
            map: name.clone(),
            detail: "a per-target map without its inner definition".into(),
        })?;
        per_target.push((name.clone(), inner));
    }
    Ok((ebpf, per_target))
}

/// Node mode: one loaded object per family and set serves every slot the process holds. A
/// sidecar's object holds the programs' instructions, line info and map handles, ~10 MiB for
/// the default families; per container that was most of node mode's memory, and parsing the
/// objects again most of the time to a new container's first counted exec. The programs are
/// the set's (attached once per host), the common maps are pinned, and each slot's data are
/// its own inner maps: nothing in a loaded object is a slot's.
pub mod loads {
    use super::*;
    use std::sync::Arc;

    type Key = (&'static str, u32, Vec<(String, Vec<u8>)>);
    type Entry = (Arc<Mutex<Ebpf>>, Arc<PerTarget>);

    static ON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static LOADED: Mutex<Vec<(Key, Entry)>> = Mutex::new(Vec::new());

    /// Share loaded objects from now on (node mode).
    pub fn share() {
        ON.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this process serves several slots from shared objects (node mode).
    pub fn is_shared() -> bool {
        ON.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn get(
        ks: &KsHandle,
        family: &'static str,
        globals: &[(&str, &[u8])],
        fresh: impl FnOnce() -> Result<(Ebpf, PerTarget), ProbeError>,
    ) -> Result<Entry, ProbeError> {
        let set = ks.set_id();
        let (Some(set), true) = (set, ON.load(std::sync::atomic::Ordering::Relaxed)) else {
            let (ebpf, per_target) = fresh()?;
            return Ok((Arc::new(Mutex::new(ebpf)), Arc::new(per_target)));
        };
        let key: Key = (
            family,
            set,
            globals
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect(),
        );
        let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
        // A set made again (every slot left, then a new container) has new maps: the objects
        // of the old one point at maps nobody reads.
        loaded.retain(|(k, _)| k.1 == set);
        if let Some((_, e)) = loaded.iter().find(|(k, _)| *k == key) {
            return Ok(e.clone());
        }
        let (ebpf, per_target) = fresh()?;
        let e: Entry = (Arc::new(Mutex::new(ebpf)), Arc::new(per_target));
        loaded.push((key, e.clone()));
        Ok(e)
    }
}

impl Object {
    /// A private object (a family not yet on the shared kernel side, or a user's probe).
    pub fn load(family: &'static str, bytes: &[u8]) -> Result<Self, ProbeError> {
        Self::load_with(family, bytes, &[])
    }

    /// Load after setting the object's `const volatile` settings (name, value bytes); private.
    pub fn load_with<'a>(
        family: &'static str,
        bytes: &[u8],
        globals: &[(&'a str, &'a [u8])],
    ) -> Result<Self, ProbeError> {
        Self::load_on(
            &KsHandle::default(),
            family,
            bytes,
            &LoadOpts {
                globals,
                ..Default::default()
            },
        )
    }

    /// Load on kernel side `ks`: shared, every map is the set's pinned one (created by the first
    /// sidecar that loads the object); then this slot's inner maps are made and put in place.
    pub fn load_on(
        ks: &KsHandle,
        family: &'static str,
        bytes: &[u8],
        opts: &LoadOpts<'_>,
    ) -> Result<Self, ProbeError> {
        let (ebpf, per_target) = loads::get(ks, family, opts.globals, || {
            load_fresh(ks, family, bytes, opts.globals)
        })?;
        let map_err = |name: &str, detail: String| ProbeError::Map {
            family,
            map: name.to_string(),
            detail,
        };
        // This slot's inner maps, then each put in its array. An update of an array of maps
        // waits for an RCU grace period (10-30 ms here), ~40 of them for the default families:
        // made from one thread each, they wait out the same grace periods.
        let mut made = Vec::new();
        for (name, inner) in per_target.iter() {
            if opts.without_inner.contains(&name.as_str()) {
                continue;
            }
            let mut inner = inner.clone();
            if let Some((_, n)) = opts.inner_max_entries.iter().find(|(m, _)| m == name) {
                inner.set_max_entries(*n);
            }
            let short: String = name.chars().take(15).collect();
            let data = aya::maps::MapData::create(inner, &short, None)
                .map_err(|e| map_err(name, format!("creating this slot's map: {e}")))?;
            let outer = {
                let guard = ebpf.lock().unwrap_or_else(|p| p.into_inner());
                match guard.map(name) {
                    Some(aya::maps::Map::ArrayOfMaps(d)) => d
                        .fd()
                        .as_fd()
                        .try_clone_to_owned()
                        .map_err(|e| map_err(name, e.to_string()))?,
                    Some(_) => return Err(map_err(name, "not an array of maps".into())),
                    None => return Err(map_err(name, "not loaded".into())),
                }
            };
            made.push((name.clone(), outer, data));
        }
        let slot = ks.slot;
        let placed: Vec<Result<(), ProbeError>> = std::thread::scope(|s| {
            let threads: Vec<_> = made
                .iter()
                .map(|(name, outer, data)| {
                    s.spawn(move || {
                        crate::kernel_side::set_inner(outer.as_fd(), slot, data.fd().as_fd())
                            .map_err(|e| {
                                map_err(name, format!("putting this slot's map in place: {e}"))
                            })
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| {
                    t.join().unwrap_or_else(|_| {
                        Err(map_err("(placing)", "a placing thread panicked".into()))
                    })
                })
                .collect()
        });
        placed.into_iter().collect::<Result<Vec<()>, _>>()?;
        let mut slot_maps = std::collections::BTreeMap::new();
        for (name, _, data) in made {
            let map =
                aya::maps::Map::from_map_data(data).map_err(|e| map_err(&name, e.to_string()))?;
            slot_maps.insert(name, map);
        }
        Ok(Self {
            family,
            ebpf,
            ks: ks.clone(),
            slot_maps,
            pinned_programs: Vec::new(),
            programs: Vec::new(),
            tree_followed: Default::default(),
            read_errors: Default::default(),
        })
    }

    /// The kernel side this object is on.
    pub fn kernel_side(&self) -> &KsHandle {
        &self.ks
    }

    /// Take the set's map `name` out of the object for a reader of its own; when the object is
    /// node mode's (shared by every container) and an earlier container took it, a handle of
    /// its own from the pin.
    pub fn take_set_map(&mut self, name: &str) -> Result<aya::maps::Map, ProbeError> {
        let family = self.family;
        let map_err = |detail: String| ProbeError::Map {
            family,
            map: name.to_string(),
            detail,
        };
        if let Some(m) = self.lock().take_map(name) {
            return Ok(m);
        }
        let pin = self
            .ks
            .map_pin(family, name)
            .ok_or_else(|| map_err("not in the object".into()))?;
        let data = aya::maps::MapData::from_pin(&pin)
            .map_err(|e| map_err(format!("opening {}: {e}", pin.display())))?;
        aya::maps::Map::from_map_data(data).map_err(|e| map_err(e.to_string()))
    }

    /// Take this slot's inner map of per-target map `name` out of the object (for a thread that
    /// owns it from then on); [`Maps::get`] no longer finds it.
    pub fn take_slot_map(&mut self, name: &str) -> Option<aya::maps::Map> {
        self.slot_maps.remove(name)
    }

    /// Take this slot's inner map `name` out of the object as `M` (a ring buffer, say, for a
    /// reader of its own: it holds only this slot's data); [`Maps::get`] no longer finds it.
    pub fn take_slot_map_as<M>(&mut self, name: &str) -> Result<M, ProbeError>
    where
        M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
    {
        let family = self.family;
        let map_err = |detail: String| ProbeError::Map {
            family,
            map: name.to_string(),
            detail,
        };
        let map = self
            .take_slot_map(name)
            .ok_or_else(|| map_err("no inner map for this slot".into()))?;
        M::try_from(map).map_err(|e| map_err(e.to_string()))
    }

    /// Write `values` from index 0 into this slot's inner array `name`: per-slot settings the
    /// kernel reads in the slot's own copy.
    pub fn write_slot_array<V: Pod>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = V>,
    ) -> Result<(), ProbeError> {
        let family = self.family;
        let map_err = |detail: String| ProbeError::Map {
            family,
            map: name.to_string(),
            detail,
        };
        let map = self
            .slot_maps
            .get_mut(name)
            .ok_or_else(|| map_err("no inner map for this slot".into()))?;
        let mut arr: Array<&mut aya::maps::MapData, V> =
            Array::try_from(map).map_err(|e| map_err(e.to_string()))?;
        for (i, v) in (0..).zip(values) {
            arr.set(i, v, 0).map_err(|e| map_err(e.to_string()))?;
        }
        Ok(())
    }

    /// Load raw_tp `program` without attaching it and return a duplicate of its fd: for a
    /// syscalls family's jump slot (`probes::dispatch`), which the caller fills itself.
    pub fn load_raw_tp_fd(&mut self, program: &str) -> Result<ProgramFd, ProbeError> {
        self.with_program(program, |p: &mut RawTracePoint| {
            once(p.load())?;
            p.fd()?.try_clone().map_err(ProgramError::IOError)
        })
    }

    /// Count in the bpf_stats export a program of the set this object did not load itself: one
    /// an earlier sidecar loaded and pinned at `pin` (e.g. packet programs attached per target).
    pub fn record_pinned_program(&mut self, program: &str, pin: std::path::PathBuf) {
        self.pinned_programs.push((program.to_string(), pin));
    }

    /// Shared set: whether `program` is attached already (by an earlier sidecar, or by us): then
    /// nothing is loaded or attached again. Recorded for bpf_stats either way.
    fn attached_on_set(&mut self, program: &str) -> bool {
        let Some(link) = self.ks.link_pin(self.family, program, 0) else {
            return false;
        };
        if !link.exists() {
            return false;
        }
        if let Some(p) = self.ks.prog_pin(self.family, program) {
            self.pinned_programs.push((program.to_string(), p));
        }
        true
    }

    /// Shared set: pin `program` (for bpf_stats and `bpftool`) and its `links`, so they outlive
    /// this sidecar; the last sidecar out removes the pins, which detaches them.
    fn pin_on_set(&mut self, program: &str, links: Vec<FdLink>) -> Result<(), ProbeError> {
        let family = self.family;
        let err = |what: &str, e: String| ProbeError::Attach {
            family,
            what: format!("pinning {what} of {program} on the shared kernel side"),
            detail: e,
        };
        if let Some(p) = self.ks.prog_pin(family, program) {
            if let Some(dir) = p.parent() {
                make_private_dir(dir).map_err(|e| err("the program", e.to_string()))?;
            }
            let mut ebpf = self.lock();
            if let Some(prog) = ebpf.program_mut(program)
                && !p.exists()
            {
                prog.pin(&p)
                    .map_err(|e| err("the program", format!("{e:?}")))?;
            }
            drop(ebpf);
            self.pinned_programs.push((program.to_string(), p));
        }
        for (n, link) in links.into_iter().enumerate() {
            let Some(path) = self.ks.link_pin(family, program, n) else {
                continue;
            };
            if let Some(dir) = path.parent() {
                make_private_dir(dir).map_err(|e| err("a link", e.to_string()))?;
            }
            link.pin(&path)
                .map_err(|e| err("a link", format!("{e:?}")))?;
        }
        Ok(())
    }

    /// Run `f` on program `program` as type `P` (RawTracePoint, CgroupSkb…), with any error
    /// naming the family and the program (and the verifier's last lines on a refused load).
    fn with_program<P, R>(
        &self,
        program: &str,
        f: impl FnOnce(&mut P) -> Result<R, ProgramError>,
    ) -> Result<R, ProbeError>
    where
        for<'p> &'p mut P: TryFrom<&'p mut aya::programs::Program, Error = ProgramError>,
    {
        let family = self.family;
        let err = |e: ProgramError| ProbeError::Program {
            family,
            program: program.to_string(),
            source: Box::new(e),
        };
        let mut ebpf = self.lock();
        let prog: &mut P = ebpf
            .program_mut(program)
            .ok_or_else(|| ProbeError::MissingProgram {
                family,
                program: program.to_string(),
            })?
            .try_into()
            .map_err(err)?;
        f(prog).map_err(err)
    }

    /// Load `program` and attach it to raw tracepoint `tp`.
    pub fn attach_raw_tp(&mut self, program: &str, tp: &str) -> Result<(), ProbeError> {
        if self.attached_on_set(program) {
            return Ok(());
        }
        let shared = self.ks.dir().is_some();
        let links = self.with_program(program, |p: &mut RawTracePoint| {
            once(p.load())?;
            let id = p.attach(tp)?;
            if !shared {
                return Ok(Vec::new());
            }
            Ok(vec![FdLink::from(p.take_link(id)?)])
        })?;
        self.record_program(program);
        self.pin_on_set(program, links)
    }

    /// Load `program` and attach it to each of the tracepoints `category`/`names` (one program,
    /// several links: e.g. every epoll wait syscall).
    pub fn attach_tracepoints(
        &mut self,
        program: &str,
        category: &str,
        names: &[&str],
    ) -> Result<(), ProbeError> {
        if self.attached_on_set(program) {
            return Ok(());
        }
        let shared = self.ks.dir().is_some();
        let links = self.with_program(program, |p: &mut TracePoint| {
            once(p.load())?;
            let mut links = Vec::new();
            for n in names {
                let id = p.attach(category, n)?;
                if shared {
                    links.push(
                        FdLink::try_from(p.take_link(id)?)
                            .map_err(|e| ProgramError::IOError(std::io::Error::other(e)))?,
                    );
                }
            }
            Ok(links)
        })?;
        self.record_program(program);
        self.pin_on_set(program, links)
    }

    /// Hook a handful of syscalls: `program` (a `tracepoint/syscalls/...` program) on the
    /// tracepoints `syscalls/<names>`, so the host's other syscalls run nothing (the kernel tests
    /// a bitmap first). Names this kernel lacks (e.g. `sys_enter_init_module` without module
    /// support) are skipped. Without tracefs, `fallback` (a program for the raw tracepoint of the
    /// same name, `sys_enter` or `sys_exit`) sees every syscall instead.
    pub fn attach_syscall_hook(
        &mut self,
        program: &str,
        names: &[&str],
        fallback: (&str, &str),
    ) -> Result<SyscallHook, ProbeError> {
        if let Some(root) = tracefs() {
            let present: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| root.join("events/syscalls").join(n).is_dir())
                .collect();
            if !present.is_empty() {
                self.attach_tracepoints(program, "syscalls", &present)?;
                return Ok(SyscallHook::Tracepoints(present.len()));
            }
        }
        tracing::info!(
            "probe {}: no tracepoints for the {} syscalls it watches (tracefs not mounted and no \
             CAP_SYS_ADMIN to mount one, EBPF_SIDECAR_TRACEFS=off, or a kernel without \
             CONFIG_FTRACE_SYSCALLS): {} runs on every syscall of the host instead",
            self.family,
            names.len(),
            fallback.0
        );
        self.attach_raw_tp(fallback.0, fallback.1)?;
        Ok(SyscallHook::Raw)
    }

    /// [`Self::attach_syscall_hook`], unless the syscalls family offers its `side` slot: then the
    /// raw handler `fallback` goes there, with no callback of its own on the tracepoint (see
    /// `probes::dispatch`).
    pub fn attach_syscall_hook_via(
        &mut self,
        dispatch: &SyscallDispatch,
        side: Side,
        program: &str,
        names: &[&str],
        fallback: (&str, &str),
    ) -> Result<SyscallHook, ProbeError> {
        if self.ks.dir().is_some() {
            // Shared set: the handler runs one way for every slot, the way the first sidecar
            // chose (two ways would run it twice per syscall).
            let on_set = |p: &str| {
                self.ks
                    .link_pin(self.family, p, 0)
                    .is_some_and(|l| l.exists())
            };
            if on_set(fallback.0) {
                self.attach_raw_tp(fallback.0, fallback.1)?;
                return Ok(SyscallHook::Raw);
            }
            if on_set(program) {
                return self.attach_syscall_hook(program, names, fallback);
            }
            dispatch.adopt_pinned(&self.ks);
        }
        if dispatch.take_if_held(side, fallback.0) {
            tracing::info!(
                "probe {}: {} runs from the syscalls family's {side:?} program (the shared set's \
                 copy)",
                self.family,
                fallback.0
            );
            return Ok(SyscallHook::Dispatched);
        }
        if !dispatch.available(side) {
            return self.attach_syscall_hook(program, names, fallback);
        }
        let fd = self.with_program(fallback.0, |p: &mut RawTracePoint| {
            once(p.load())?;
            p.fd()?.try_clone().map_err(ProgramError::IOError)
        })?;
        match dispatch.take(side, &fd) {
            // Not in the bpf_stats export: the kernel counts a tail call's time in the program
            // that made it (the syscalls family's sys_enter/sys_exit).
            Ok(()) => {
                tracing::info!(
                    "probe {}: {} runs from the syscalls family's {side:?} program",
                    self.family,
                    fallback.0
                );
                Ok(SyscallHook::Dispatched)
            }
            Err(e) => {
                tracing::info!(
                    "probe {}: {} not dispatched ({e}): on the raw tracepoint instead",
                    self.family,
                    fallback.0
                );
                let shared = self.ks.dir().is_some();
                let links = self.with_program(fallback.0, |p: &mut RawTracePoint| {
                    let id = p.attach(fallback.1)?;
                    if !shared {
                        return Ok(Vec::new());
                    }
                    Ok(vec![FdLink::from(p.take_link(id)?)])
                })?;
                self.record_program(fallback.0);
                self.pin_on_set(fallback.0, links)?;
                Ok(SyscallHook::Raw)
            }
        }
    }

    /// Load raw_tp `program` without attaching it: userspace runs it on demand with [`Self::run`]
    /// (maintenance a family does in the kernel before a scrape reads its maps).
    pub fn load_runnable(&mut self, program: &str) -> Result<(), ProbeError> {
        self.with_program(program, |p: &mut RawTracePoint| once(p.load()))
    }

    /// Run a program loaded with [`Self::load_runnable`] once, on this CPU (BPF_PROG_TEST_RUN,
    /// which raw_tp programs support since Linux 5.10).
    pub fn run(&self, program: &str) -> Result<(), ProbeError> {
        self.with_program(program, |p: &mut RawTracePoint| {
            test_run(p.fd()?.as_fd().as_raw_fd()).map_err(|io_error| {
                ProgramError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_prog_test_run",
                    io_error,
                })
            })
        })
    }

    /// Load `program` and attach it to the BTF-typed tracepoint `tp` (tp_btf: arguments are typed
    /// kernel pointers the program reads with plain loads).
    pub fn attach_tp_btf(&mut self, program: &str, tp: &str) -> Result<(), ProbeError> {
        if self.attached_on_set(program) {
            return Ok(());
        }
        let btf = aya::Btf::from_sys_fs().map_err(|e| ProbeError::Map {
            family: self.family,
            map: "/sys/kernel/btf/vmlinux".into(),
            detail: format!("reading kernel BTF for tp_btf/{tp}: {e}"),
        })?;
        let shared = self.ks.dir().is_some();
        let links = self.with_program(program, |p: &mut BtfTracePoint| {
            once(p.load(tp, &btf))?;
            let id = p.attach()?;
            if !shared {
                return Ok(Vec::new());
            }
            Ok(vec![FdLink::from(p.take_link(id)?)])
        })?;
        self.record_program(program);
        self.pin_on_set(program, links)
    }

    /// Load `program` and attach it to the tracepoint `category:name` (tracefs events).
    pub fn attach_tracepoint(
        &mut self,
        program: &str,
        category: &str,
        name: &str,
    ) -> Result<(), ProbeError> {
        self.attach_tracepoints(program, category, &[name])
    }

    /// Load perf_event `program` and attach it on every online CPU to the software cpu-clock at
    /// `hz` samples per second (a perf event has no cgroup scope: the program filters). A fixed
    /// period in ns, not perf's frequency mode: that one re-tunes the period of every event at
    /// each scheduler tick (a timer restart per tick and CPU), which cost the node app 5% of its
    /// requests at 49 Hz; bpftrace's `profile:hz:` uses a period too.
    pub fn attach_perf_event(&mut self, program: &str, hz: u64) -> Result<(), ProbeError> {
        use aya::programs::perf_event::{
            PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
        };
        let cpus = aya::util::online_cpus().map_err(|(what, e)| ProbeError::Map {
            family: self.family,
            map: "online cpus".into(),
            detail: format!("{what}: {e}"),
        })?;
        if self.attached_on_set(program) {
            return Ok(());
        }
        let shared = self.ks.dir().is_some();
        let links = self.with_program(program, |p: &mut aya::programs::PerfEvent| {
            once(p.load())?;
            let mut links = Vec::new();
            for cpu in cpus {
                let id = p.attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Period(1_000_000_000 / hz.max(1)),
                    false,
                )?;
                if shared {
                    links.push(
                        FdLink::try_from(p.take_link(id)?)
                            .map_err(|e| ProgramError::IOError(std::io::Error::other(e)))?,
                    );
                }
            }
            Ok(links)
        })?;
        self.record_program(program);
        self.pin_on_set(program, links)
    }

    /// Load uprobe `program` without attaching it (it is attached per site later) and return a
    /// duplicate of its fd for those attachments.
    pub fn load_uprobe(&mut self, program: &str) -> Result<ProgramFd, ProbeError> {
        let fd = self.with_program(program, |p: &mut UProbe| {
            once(p.load())?;
            p.fd()?.try_clone().map_err(ProgramError::IOError)
        })?;
        self.record_program(program);
        Ok(fd)
    }

    /// Shared set: the set's copy of the uprobe program `program` (loaded with
    /// [`Self::load_uprobe`]), for attachments every sidecar of the set shares: pinned by the
    /// first sidecar that loads it (ours when none has), and counted in bpf_stats through its pin.
    /// None on a private kernel side. Call while loading: the set's lock keeps two sidecars from
    /// both pinning.
    pub fn set_uprobe(
        &mut self,
        program: &str,
    ) -> Result<Option<std::os::fd::OwnedFd>, ProbeError> {
        let family = self.family;
        let Some(pin) = self.ks.prog_pin(family, program) else {
            return Ok(None);
        };
        let err = |what: &str, detail: String| ProbeError::Attach {
            family,
            what: format!("{what} {program} on the shared kernel side"),
            detail,
        };
        if !pin.exists() {
            if let Some(dir) = pin.parent() {
                make_private_dir(dir).map_err(|e| err("pinning", e.to_string()))?;
            }
            let mut ebpf = self.lock();
            let prog = ebpf
                .program_mut(program)
                .ok_or_else(|| ProbeError::MissingProgram {
                    family,
                    program: program.to_string(),
                })?;
            prog.pin(&pin)
                .map_err(|e| err("pinning", format!("{e:?}")))?;
        }
        let set = UProbe::from_pin(&pin, aya::programs::ProbeKind::Entry)
            .map_err(|e| err("opening", e.to_string()))?;
        let fd = set
            .fd()
            .map_err(|e| err("opening", e.to_string()))?
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| err("opening", e.to_string()))?;
        self.pinned_programs.push((program.to_string(), pin));
        Ok(Some(fd))
    }

    /// Count a program attached by hand in the bpf_stats export.
    pub fn record_program(&mut self, program: &str) {
        self.programs.push(program.to_string());
    }

    /// Load a cgroup_skb program; it is attached per cgroup with [`Self::attach_cgroup_skb`].
    pub fn load_cgroup_skb(&mut self, program: &str) -> Result<(), ProbeError> {
        self.with_program(program, |p: &mut CgroupSkb| once(p.load()))?;
        self.record_program(program);
        Ok(())
    }

    /// Attach a loaded cgroup_skb program to the cgroup v2 directory `cgroup` (an open fd). Only
    /// the sockets of that cgroup's tasks pass through it, so the attachment is the filter.
    pub fn attach_cgroup_skb(
        &self,
        program: &str,
        cgroup: &std::fs::File,
        attach_type: CgroupSkbAttachType,
    ) -> Result<CgroupSkbLinkId, ProbeError> {
        self.with_program(program, |p: &mut CgroupSkb| {
            p.attach(cgroup, attach_type, CgroupAttachMode::Single)
        })
    }

    /// Detach a link made by [`Self::attach_cgroup_skb`] (a no-op in the kernel once the cgroup
    /// is gone: its links die with it).
    pub fn detach_cgroup_skb(
        &self,
        program: &str,
        link: CgroupSkbLinkId,
    ) -> Result<(), ProbeError> {
        self.with_program(program, |p: &mut CgroupSkb| p.detach(link))
    }

    /// Load a tc classifier program; it is attached per interface with
    /// [`Self::attach_classifier`].
    pub fn load_classifier(&mut self, program: &str) -> Result<(), ProbeError> {
        self.with_program(program, |p: &mut aya::programs::SchedClassifier| {
            once(p.load())
        })?;
        self.record_program(program);
        Ok(())
    }

    /// Attach a loaded classifier to `interface` of the calling thread's network namespace
    /// (TCX link on kernels >= 6.6, which needs no clsact qdisc; netlink + clsact before).
    pub fn attach_classifier(
        &self,
        program: &str,
        interface: &str,
        attach_type: aya::programs::TcAttachType,
    ) -> Result<aya::programs::tc::SchedClassifierLinkId, ProbeError> {
        self.with_program(program, |p: &mut aya::programs::SchedClassifier| {
            p.attach(interface, attach_type)
        })
    }

    /// Detach a link made by [`Self::attach_classifier`] (TCX links are fds: this works from
    /// any namespace, and the kernel drops them itself when the interface goes away).
    pub fn detach_classifier(
        &self,
        program: &str,
        link: aya::programs::tc::SchedClassifierLinkId,
    ) -> Result<(), ProbeError> {
        self.with_program(program, |p: &mut aya::programs::SchedClassifier| {
            p.detach(link)
        })
    }

    /// Point this slot at a (new) target, or at nothing (`None`: count nothing): its settings in
    /// `sidecar_slots`, its cgroup in `sidecar_cgroups`, its tree in `sidecar_tree`. On a shared
    /// set these maps are common to every object, so every family writes the same entries.
    pub fn set_target(&self, filter: Option<&Filter>) -> Result<(), ProbeError> {
        if let Some(Filter::Tree { root }) = filter {
            self.follow_tree(*root)?;
        }
        let mut target = filter.map(Filter::to_kernel).unwrap_or_default();
        target.flags = self.ks.flags();
        let family = self.family;
        let slot = self.ks.slot;
        let map_err = |map: &str, detail: String| ProbeError::Map {
            family,
            map: map.into(),
            detail,
        };
        self.ks
            .claim_cgroup(filter.and_then(|f| match f {
                Filter::Cgroup { id } => Some(*id),
                _ => None,
            }))
            .map_err(|e| ProbeError::Attach {
                family,
                what: "claiming the target's slot".into(),
                detail: e.to_string(),
            })?;
        let mut ebpf = self.lock();
        {
            let map = ebpf
                .map_mut(sidecar_ebpf::SLOTS_MAP)
                .ok_or_else(|| map_err(sidecar_ebpf::SLOTS_MAP, "not in the object".into()))?;
            let mut arr: Array<_, sidecar_ebpf::Target> = Array::try_from(map)
                .map_err(|e| map_err(sidecar_ebpf::SLOTS_MAP, e.to_string()))?;
            arr.set(slot, target, 0)
                .map_err(|e| map_err(sidecar_ebpf::SLOTS_MAP, e.to_string()))?;
        }
        {
            let map = ebpf
                .map_mut(sidecar_ebpf::CGROUPS_MAP)
                .ok_or_else(|| map_err(sidecar_ebpf::CGROUPS_MAP, "not in the object".into()))?;
            let mut table: Array<_, sidecar_ebpf::CgroupEntry> = Array::try_from(map)
                .map_err(|e| map_err(sidecar_ebpf::CGROUPS_MAP, e.to_string()))?;
            let cgroup = match filter {
                Some(Filter::Cgroup { id }) => Some(*id),
                _ => None,
            };
            place_cgroup(&mut table, slot, cgroup)
                .map_err(|e| map_err(sidecar_ebpf::CGROUPS_MAP, e))?;
        }
        {
            let map = ebpf
                .map_mut(sidecar_ebpf::MODES_MAP)
                .ok_or_else(|| map_err(sidecar_ebpf::MODES_MAP, "not in the object".into()))?;
            let mut modes: Array<_, sidecar_ebpf::Modes> = Array::try_from(map)
                .map_err(|e| map_err(sidecar_ebpf::MODES_MAP, e.to_string()))?;
            let mut m = modes.get(&0, 0).unwrap_or_default();
            let tree = matches!(filter, Some(Filter::Tree { .. }));
            if self.ks.dir().is_none() {
                m.tree_slots = u32::from(tree);
            } else if tree {
                // Shared: a count of tree slots is only an "is there any": leaving recounts.
                m.tree_slots = m.tree_slots.max(1);
            }
            m.pidns_slot = match filter {
                Some(Filter::PidNs { .. }) => slot + 1,
                _ if m.pidns_slot == slot + 1 => 0,
                _ => m.pidns_slot,
            };
            modes
                .set(0, m, 0)
                .map_err(|e| map_err(sidecar_ebpf::MODES_MAP, e.to_string()))?;
        }
        Ok(())
    }

    /// Rewrite this slot's options in `sidecar_slots` from the kernel side's current flags (the
    /// governor's changes), leaving its filter as it is. The programs read the entry at every
    /// run, so the change takes effect at once.
    pub fn write_slot_flags(&self) -> Result<(), ProbeError> {
        let family = self.family;
        let map_err = |detail: String| ProbeError::Map {
            family,
            map: sidecar_ebpf::SLOTS_MAP.into(),
            detail,
        };
        let mut ebpf = self.lock();
        let map = ebpf
            .map_mut(sidecar_ebpf::SLOTS_MAP)
            .ok_or_else(|| map_err("not in the object".into()))?;
        let mut arr: Array<_, sidecar_ebpf::Target> =
            Array::try_from(map).map_err(|e| map_err(e.to_string()))?;
        let mut target = arr
            .get(&self.ks.slot, 0)
            .map_err(|e| map_err(e.to_string()))?;
        target.flags = self.ks.flags();
        arr.set(self.ks.slot, target, 0)
            .map_err(|e| map_err(e.to_string()))
    }

    /// --target-tree: attach the programs that follow forks and frees (once), then put the tree
    /// as it is now into `sidecar_tree`. Attached first, so a fork during the scan is either
    /// followed by the kernel or found by the scan.
    fn follow_tree(&self, root: u32) -> Result<(), ProbeError> {
        use std::sync::atomic::Ordering;
        let family = self.family;
        let map_err = |detail: String| ProbeError::Map {
            family,
            map: sidecar_ebpf::TREE_MAP.into(),
            detail,
        };
        if !self.tree_followed.load(Ordering::Acquire) {
            let btf = aya::Btf::from_sys_fs().map_err(|e| map_err(format!("kernel BTF: {e}")))?;
            for (program, tp) in [
                ("sidecar_tree_fork", "sched_process_fork"),
                ("sidecar_tree_free", "sched_process_free"),
            ] {
                let pin = self.ks.link_pin("common", program, 0);
                if pin.as_ref().is_some_and(|p| p.exists()) {
                    continue;
                }
                let link = self.with_program(program, |p: &mut BtfTracePoint| {
                    once(p.load(tp, &btf))?;
                    let id = p.attach()?;
                    Ok(FdLink::from(p.take_link(id)?))
                })?;
                match pin {
                    Some(pin) => {
                        link.pin(&pin).map_err(|e| ProbeError::Attach {
                            family,
                            what: format!("pinning {program}"),
                            detail: e.to_string(),
                        })?;
                    }
                    // Private: the link lives as long as the process.
                    None => std::mem::forget(link),
                }
            }
            self.tree_followed.store(true, Ordering::Release);
        }
        let members = crate::monitored::tree::members(root);
        let mut ebpf = self.lock();
        let map = ebpf.map_mut(sidecar_ebpf::TREE_MAP).ok_or_else(|| {
            map_err("not in the object (built without sidecar.bpf.h's tree filter)".into())
        })?;
        let mut tree: aya::maps::HashMap<_, u32, sidecar_ebpf::TreeEntry> =
            aya::maps::HashMap::try_from(map).map_err(|e| map_err(e.to_string()))?;
        let entry = sidecar_ebpf::TreeEntry {
            start: 0,
            slot: self.ks.slot,
            _pad: 0,
        };
        for pid in &members {
            tree.insert(pid, entry, 0)
                .map_err(|e| map_err(e.to_string()))?;
        }
        // One that exited between the scan and its insert was freed already: nothing would
        // ever remove it, and its tgid could go to a stranger.
        for pid in members {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = tree.remove(&pid);
            }
        }
        Ok(())
    }

    pub fn lock(&self) -> MutexGuard<'_, Ebpf> {
        self.ebpf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The maps, for reading at scrape time: every read that fails is counted and logged.
    pub fn maps(&self) -> Maps<'_> {
        Maps {
            ebpf: self.lock(),
            obj: self,
        }
    }

    /// A failed read of `map`: logged the first time (with family and map, so a layout change
    /// made only in C is seen at once), counted every time.
    pub fn read_error(&self, map: &str, detail: impl fmt::Display) {
        let mut errors = self.read_errors.lock().unwrap_or_else(|p| p.into_inner());
        let n = errors.entry(map.to_string()).or_insert(0);
        if *n == 0 {
            tracing::error!(
                family = self.family,
                map,
                "reading a BPF map failed, its metrics are missing or short: {detail}"
            );
        }
        *n += 1;
    }

    /// Failed reads so far, by map.
    pub fn read_errors(&self) -> Vec<(String, u64)> {
        let errors = self.read_errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.iter().map(|(m, n)| (m.clone(), *n)).collect()
    }

    /// Kernel cost of the object's programs. On a shared set a program is the host's, run for
    /// every target: its figures are the set's, not this slot's alone.
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let ebpf = self.lock();
        let mut seen = std::collections::BTreeSet::new();
        let mut out: Vec<ProgramStats> = self
            .pinned_programs
            .iter()
            .filter_map(|(name, pin)| {
                let info = aya::programs::ProgramInfo::from_pin(pin).ok()?;
                seen.insert(name.clone());
                Some(ProgramStats {
                    program: name.clone(),
                    run_time_ns: info.run_time().as_nanos() as u64,
                    run_count: info.run_count(),
                })
            })
            .collect();
        out.extend(
            self.programs
                .iter()
                .filter(|n| !seen.contains(*n))
                .filter_map(|name| {
                    let info = ebpf.program(name)?.info().ok()?;
                    Some(ProgramStats {
                        program: name.clone(),
                        run_time_ns: info.run_time().as_nanos() as u64,
                        run_count: info.run_count(),
                    })
                }),
        );
        out
    }
}

/// BPF_PROG_TEST_RUN of a raw_tp program with no arguments (aya 0.14 has no wrapper for it).
fn test_run(prog_fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // `struct bpf_attr`'s test member up to `cpu`; the kernel zero-checks anything beyond the
    // size passed.
    #[repr(C)]
    #[derive(Default)]
    struct TestRun {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut attr = TestRun {
        prog_fd: prog_fd as u32,
        ..Default::default()
    };
    // SAFETY: attr is a valid, fully initialised prefix of `union bpf_attr` and outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRun,
            std::mem::size_of::<TestRun>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// An object's maps, locked for reading. Every accessor returns what it could read; a map that
/// is missing, of another type or layout, or an entry that fails to read is counted against the
/// family ([`Object::read_error`]) instead of being dropped silently.
pub struct Maps<'a> {
    ebpf: MutexGuard<'a, Ebpf>,
    obj: &'a Object,
}

impl<'a> Maps<'a> {
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The map `name` as `M`, or the error recorded.
    pub fn get<'b, M>(&'b self, name: &str) -> Option<M>
    where
        M: TryFrom<&'b aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self.obj.slot_maps.get(name).or_else(|| self.ebpf.map(name));
        match map {
            None => {
                self.obj.read_error(name, "not in the object");
                None
            }
            Some(m) => M::try_from(m)
                .map_err(|e| self.obj.read_error(name, e))
                .ok(),
        }
    }

    /// The map `name` itself (the slot's inner map for per-slot maps), None when absent.
    pub fn map(&self, name: &str) -> Option<&aya::maps::Map> {
        self.obj.slot_maps.get(name).or_else(|| self.ebpf.map(name))
    }

    fn keep<T>(&self, name: &str, r: Result<T, aya::maps::MapError>) -> Option<T> {
        r.map_err(|e| self.obj.read_error(name, e)).ok()
    }

    /// Every entry of a hash map.
    pub fn hash<K: Pod, V: Pod>(&self, name: &str) -> Vec<(K, V)> {
        let Some(m) = self.get::<aya::maps::HashMap<&aya::maps::MapData, K, V>>(name) else {
            return Vec::new();
        };
        m.iter().filter_map(|r| self.keep(name, r)).collect()
    }

    /// Every entry of a per-CPU hash map, one value per possible CPU.
    pub fn percpu_hash<K: Pod, V: Pod>(&self, name: &str) -> Vec<(K, Vec<V>)> {
        let Some(m) = self.get::<aya::maps::PerCpuHashMap<&aya::maps::MapData, K, V>>(name) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(|r| self.keep(name, r))
            .map(|(k, v)| (k, v.iter().copied().collect()))
            .collect()
    }

    /// Every slot of an array, at its index (`None`: that slot could not be read, counted).
    pub fn array<V: Pod>(&self, name: &str) -> Vec<Option<V>> {
        let Some(m) = self.get::<aya::maps::Array<&aya::maps::MapData, V>>(name) else {
            return Vec::new();
        };
        m.iter().map(|r| self.keep(name, r)).collect()
    }

    /// Every slot of a per-CPU array, one value per possible CPU, at its index: a slot that
    /// cannot be read is counted and comes back empty, so the later slots keep their index.
    pub fn percpu_array<V: Pod>(&self, name: &str) -> Vec<Vec<V>> {
        let Some(m) = self.get::<aya::maps::PerCpuArray<&aya::maps::MapData, V>>(name) else {
            return Vec::new();
        };
        m.iter()
            .map(|r| {
                self.keep(name, r)
                    .map(|v| v.iter().copied().collect())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Slot `idx` of a per-CPU array, one value per possible CPU.
    pub fn percpu_slot<V: Pod>(&self, name: &str, idx: u32) -> Option<Vec<V>> {
        let m = self.get::<aya::maps::PerCpuArray<&aya::maps::MapData, V>>(name)?;
        self.keep(name, m.get(&idx, 0))
            .map(|v| v.iter().copied().collect())
    }

    /// A per-CPU u64 counter slot, summed over CPUs (0 when unreadable, and counted).
    pub fn counter(&self, name: &str, idx: u32) -> u64 {
        self.percpu_slot::<u64>(name, idx)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}

/// Put `slot`'s cgroup in the open-addressing table (None: take it out). Entries of this slot for
/// another cgroup become tombstones, so lookups of other keys still probe past them.
fn place_cgroup<T: std::borrow::BorrowMut<aya::maps::MapData>>(
    table: &mut Array<T, sidecar_ebpf::CgroupEntry>,
    slot: u32,
    cgroup: Option<u64>,
) -> Result<(), String> {
    use sidecar_ebpf::{CGROUP_PROBES, CGROUP_TABLE, CGROUP_TOMBSTONE, CgroupEntry};
    let live = |e: &CgroupEntry| e.cgroup_id != 0 && e.cgroup_id != CGROUP_TOMBSTONE;
    for i in 0..CGROUP_TABLE {
        let e = table.get(&i, 0).map_err(|e| e.to_string())?;
        if live(&e) && e.slot == slot && Some(e.cgroup_id) != cgroup {
            let tomb = CgroupEntry {
                cgroup_id: CGROUP_TOMBSTONE,
                ..Default::default()
            };
            table.set(i, tomb, 0).map_err(|e| e.to_string())?;
        }
    }
    let Some(id) = cgroup else {
        return Ok(());
    };
    let h = sidecar_ebpf::cgroup_hash(id);
    let mut free = None;
    for p in 0..CGROUP_PROBES {
        let i = (h + p) & (CGROUP_TABLE - 1);
        let e = table.get(&i, 0).map_err(|e| e.to_string())?;
        if e.cgroup_id == id {
            if e.slot != slot {
                return Err(format!("cgroup {id} is the target of slot {}", e.slot));
            }
            return Ok(());
        }
        if !live(&e) && free.is_none() {
            free = Some(i);
        }
        if e.cgroup_id == 0 {
            break;
        }
    }
    let Some(i) = free else {
        return Err(format!(
            "no place for cgroup {id} within {CGROUP_PROBES} of its hash (the table is crowded)"
        ));
    };
    table
        .set(
            i,
            CgroupEntry {
                cgroup_id: id,
                slot,
                _pad: 0,
            },
            0,
        )
        .map_err(|e| e.to_string())
}
