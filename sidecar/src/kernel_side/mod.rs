//! Where the kernel programs and maps live: one set per host shared by every sidecar with the
//! same build (`shared`: pinned under `/sys/fs/bpf/ebpf-sidecar/<abi>/`, each sidecar a slot), or
//! the sidecar's own (`private`: slot 0 of a set nobody else sees).
//!
//! A shared set is paid once: each program on a host-wide hook (syscalls, scheduler, block) runs
//! once per event whatever the number of sidecars, finds the slot of the task's cgroup in a
//! table and leaves at once when there is none. Per-target data are inner maps of per-slot
//! arrays of maps, which each sidecar creates for its own slot and reads alone.

mod raw;
mod registry;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use thiserror::Error;

pub use raw::{pin_fd, set_inner};
pub use registry::Claim;

/// `--kernel-side`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// Shared when /sys/fs/bpf is a writable bpffs, else private (and the log says why).
    #[default]
    Auto,
    /// Shared, or fail with the reason.
    Shared,
    /// This sidecar's own programs and maps (as before kernel sides were shared).
    Private,
}

/// What the sidecar got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Private,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Shared => "shared",
            Mode::Private => "private",
        }
    }
}

#[derive(Debug, Error)]
pub enum KernelSideError {
    #[error(
        "--kernel-side shared: {0}. Mount a writable bpffs (docker run -v /sys/fs/bpf:/sys/fs/bpf; \
         on the host: mount -t bpf bpf /sys/fs/bpf) or use --kernel-side private"
    )]
    NoBpffs(String),
    #[error(
        "the shared kernel side {dir} has no free slot: all {max} targets are taken (--max-targets \
         is fixed by the sidecar that created the set; slots of sidecars that died are reclaimed \
         10 s after their last heartbeat). Stop a sidecar, or use --kernel-side private"
    )]
    Full { dir: PathBuf, max: u32 },
    #[error(
        "the target's cgroup {cgroup_id} is already monitored by slot {slot} of the shared kernel \
         side {dir}: two sidecars cannot share one target's slot; use --kernel-side private for \
         the second one"
    )]
    Taken {
        dir: PathBuf,
        cgroup_id: u64,
        slot: u32,
    },
    #[error("--max-targets {0}: must be between 1 and {max}", max = sidecar_ebpf::MAX_SLOTS)]
    MaxTargets(u32),
    #[error("shared kernel side {dir}: {what}: {detail}")]
    Io {
        dir: PathBuf,
        what: String,
        detail: String,
    },
}

/// Where the shared sets live.
pub const BPFFS: &str = "/sys/fs/bpf";
pub const BASE_DIR: &str = "/sys/fs/bpf/ebpf-sidecar";

/// The kernel side this sidecar uses, handed to every family (through `probes::Options`).
pub struct KernelSide {
    pub mode: Mode,
    pub abi: String,
    /// This sidecar's slot.
    pub slot: u32,
    /// SIDECAR_SLOT_* options for this slot (per-slot settings programs check in the kernel).
    /// The CPU-budget governor changes them while running (see [`Self::set_flags`]).
    flags: std::sync::atomic::AtomicU64,
    /// Shared: the set's directory and its registry.
    shared: Option<registry::Registry>,
    /// Why auto chose private (logged once, in the info metric's absence of a dir).
    pub private_reason: Option<String>,
}

impl fmt::Debug for KernelSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelSide")
            .field("mode", &self.mode)
            .field("abi", &self.abi)
            .field("slot", &self.slot)
            .finish()
    }
}

impl Default for KernelSide {
    fn default() -> Self {
        Self::private(None)
    }
}

impl KernelSide {
    pub fn private(reason: Option<String>) -> Self {
        Self {
            mode: Mode::Private,
            abi: abi().to_string(),
            slot: 0,
            flags: Default::default(),
            shared: None,
            private_reason: reason,
        }
    }

    /// Choose and, when shared, create or join the host's set and claim a slot for the target's
    /// cgroup (`auto` goes private when another slot has that cgroup). Families load under the
    /// set's lock one at a time ([`Self::with_lock`]); the heartbeat starts with the claim.
    pub fn open(
        choice: Choice,
        max_targets: u32,
        flags: u64,
        cgroup_id: Option<u64>,
    ) -> Result<Self, KernelSideError> {
        if max_targets == 0 || max_targets > sidecar_ebpf::MAX_SLOTS {
            return Err(KernelSideError::MaxTargets(max_targets));
        }
        let mut ks = match choice {
            Choice::Private => {
                tracing::info!("kernel side: private (--kernel-side private)");
                Self::private(None)
            }
            Choice::Shared => Self::join(max_targets, cgroup_id)?,
            Choice::Auto => match writable_bpffs() {
                Err(why) => {
                    tracing::warn!(
                        "kernel side: private ({why}); sidecars on this host each load their own \
                         programs — mount /sys/fs/bpf (docker run -v /sys/fs/bpf:/sys/fs/bpf) to \
                         share one set"
                    );
                    Self::private(Some(why))
                }
                Ok(()) => match Self::join(max_targets, cgroup_id) {
                    // A second sidecar on one target (with other options, say): a slot is one
                    // target's, so this one goes private.
                    Err(e @ KernelSideError::Taken { .. }) => {
                        tracing::info!("kernel side: private ({e})");
                        Self::private(Some(e.to_string()))
                    }
                    r => r?,
                },
            },
        };
        ks.flags = flags.into();
        Ok(ks)
    }

    fn join(max_targets: u32, cgroup_id: Option<u64>) -> Result<Self, KernelSideError> {
        writable_bpffs().map_err(KernelSideError::NoBpffs)?;
        let abi = abi();
        let dir = Path::new(BASE_DIR).join(abi);
        let reg = registry::Registry::join(&dir, max_targets, cgroup_id.unwrap_or(0))?;
        // From the claim on: a load slower than STALE must not look like a dead sidecar.
        reg.start_heartbeat();
        let slot = reg.slot;
        tracing::info!(
            dir = %dir.display(),
            slot,
            created = reg.created,
            "kernel side: shared"
        );
        Ok(Self {
            mode: Mode::Shared,
            abi: abi.to_string(),
            slot,
            flags: Default::default(),
            shared: Some(reg),
            private_reason: None,
        })
    }

    /// The directory of the shared set (None: private).
    /// This slot's SIDECAR_SLOT_* options as they are now.
    pub fn flags(&self) -> u64 {
        self.flags.load(std::sync::atomic::Ordering::Acquire)
    }

    /// New options for this slot: what the next write of its `sidecar_slots` entry carries (the
    /// caller writes it, [`crate::probes::Object::write_slot_flags`]).
    pub fn set_flags(&self, flags: u64) {
        self.flags
            .store(flags, std::sync::atomic::Ordering::Release);
    }

    pub fn dir(&self) -> Option<&Path> {
        self.shared.as_ref().map(|r| r.dir.as_path())
    }

    /// Which set this is (None: private): objects loaded for one set serve only that set.
    pub fn set_id(&self) -> Option<u32> {
        self.shared.as_ref().map(|r| r.set_id())
    }

    /// Where map `name` of `family`'s object is pinned (maps every object declares through
    /// sidecar.bpf.h are common to all of them).
    pub fn map_pin(&self, family: &str, name: &str) -> Option<PathBuf> {
        let dir = self.dir()?;
        Some(if is_common_map(name) {
            dir.join("common").join(name)
        } else {
            // bpffs refuses names with a dot (reserved for its own files): `.rodata` -> `_rodata`.
            dir.join(family).join(name.replace('.', "_"))
        })
    }

    /// Where `program` of `family` is pinned.
    pub fn prog_pin(&self, family: &str, program: &str) -> Option<PathBuf> {
        let dir = self.dir()?;
        Some(dir.join("progs").join(format!("{family}-{program}")))
    }

    /// Where the link of `program` (its `n`-th attachment) is pinned.
    pub fn link_pin(&self, family: &str, program: &str, n: usize) -> Option<PathBuf> {
        let dir = self.dir()?;
        Some(dir.join("links").join(format!("{family}-{program}-{n}")))
    }

    /// Run `f` (a family's load: whether a program is attached already, pinning what is not)
    /// under the set's lock, so two sidecars starting together never both attach or both pin.
    /// Private: just run it.
    pub fn with_lock<T>(&self, f: impl FnOnce() -> T) -> Result<T, KernelSideError> {
        match &self.shared {
            Some(r) => r.with_lock(f),
            None => Ok(f()),
        }
    }

    /// Record which cgroup this slot monitors (None: the target is down), refusing a cgroup
    /// another live slot has.
    pub fn claim_cgroup(&self, cgroup_id: Option<u64>) -> Result<(), KernelSideError> {
        match &self.shared {
            Some(r) => r.claim_cgroup(cgroup_id.unwrap_or(0)),
            None => Ok(()),
        }
    }

    /// How many sidecars share this set (1 when private).
    pub fn targets(&self) -> u32 {
        self.shared.as_ref().map(|r| r.live_slots()).unwrap_or(1)
    }

    /// Leave the set: clear this slot; the last one out unpins everything.
    pub fn leave(&self) {
        if let Some(r) = &self.shared {
            r.leave();
        }
    }
}

/// The handle families get.
#[derive(Clone, Default)]
pub struct Handle(pub Arc<KernelSide>);

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::ops::Deref for Handle {
    type Target = KernelSide;
    fn deref(&self) -> &KernelSide {
        &self.0
    }
}

/// Maps sidecar.bpf.h declares in every object: one copy per set.
pub fn is_common_map(name: &str) -> bool {
    matches!(
        name,
        sidecar_ebpf::SLOTS_MAP
            | sidecar_ebpf::CGROUPS_MAP
            | sidecar_ebpf::MODES_MAP
            | sidecar_ebpf::TREE_MAP
    )
}

/// The ABI of this build: FNV-1a of every embedded object (programs and map layouts) and of the
/// registry's layout, so two builds share a set only when their kernel sides are the same bytes
/// and they read each other's claims alike.
pub fn abi() -> &'static str {
    static ABI: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ABI.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let registry = format!("registry claim {} bytes", std::mem::size_of::<Claim>());
        let objects = sidecar_ebpf::objects::ALL
            .iter()
            .flat_map(|(name, bytes)| name.bytes().chain(bytes.iter().copied()));
        for b in objects.chain(registry.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    })
}

/// Whether /sys/fs/bpf is a bpffs we may write (Err: why not, for the log and the error).
pub fn writable_bpffs() -> Result<(), String> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let path = c"/sys/fs/bpf";
    // SAFETY: statfs fills the zeroed struct; the path is a constant C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "{BPFFS} is not there ({})",
            std::io::Error::last_os_error()
        ));
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(format!("{BPFFS} is not a bpffs mount"));
    }
    // SAFETY: constant C string.
    if unsafe { libc::access(path.as_ptr(), libc::W_OK) } != 0 {
        return Err(format!(
            "{BPFFS} is not writable ({})",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Every slot this process holds (one for a sidecar, one per container in node mode).
static HANDLES: Mutex<Vec<Handle>> = Mutex::new(Vec::new());

fn leave_all() {
    let handles = HANDLES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for h in handles {
        h.leave();
    }
}

/// Leave the set on every way out of the process that runs Rust code: an error return from
/// main and a panic (SIGTERM/SIGINT are handled by the server's shutdown path). Each slot is
/// left once, whichever path comes first.
pub fn install_exit_hook(handle: Handle) {
    if handle.dir().is_none() {
        return;
    }
    HANDLES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(handle);
    static HOOKED: std::sync::Once = std::sync::Once::new();
    HOOKED.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            leave_all();
            prev(info);
        }));
        extern "C" fn at_exit() {
            leave_all();
        }
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(at_exit) };
    });
}

/// Forget a slot left for good (node mode: a removed container), so the exit hook does not
/// keep its handle.
pub fn forget(handle: &Handle) {
    HANDLES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|h| !Arc::ptr_eq(&h.0, &handle.0));
}
