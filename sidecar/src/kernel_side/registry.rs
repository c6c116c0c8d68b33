//! The shared set's registry: which sidecar holds which slot, their heartbeats, and the set's
//! lock. It is a BPF hash map pinned at `<dir>/registry`: bpffs is the only thing every sidecar
//! on a host is sure to share (each may sit in its own container), and a map update with
//! BPF_NOEXIST is atomic, which is all a claim and a lock need.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, MapData, MapError};

use super::KernelSideError;

/// A registry value. Keys below MAX_SLOTS are slots; two keys above are the set's lock and its
/// configuration (`max_targets`, fixed by whoever created the set).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Claim {
    /// CLOCK_BOOTTIME ns of the owner's last heartbeat (or of the lock's taking).
    pub heartbeat_ns: u64,
    pub cgroup_id: u64,
    /// The owner's pid (in its own pid namespace: for people reading the map, not for checks).
    pub pid: u32,
    pub max_targets: u32,
    /// The owner's random token: pids repeat across containers (pid 1 in each), and a sidecar
    /// whose slot was reclaimed and given to another must know it is not its slot any more.
    pub token: u64,
}

// SAFETY: repr(C), integers only, no padding.
unsafe impl aya::Pod for Claim {}

const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;
const LOCK_KEY: u32 = u32::MAX;
const CONFIG_KEY: u32 = u32::MAX - 1;
/// A slot whose owner has not beaten for this long is reclaimed (heartbeats come every second).
pub const STALE: Duration = Duration::from_secs(5);
/// A lock held this long belongs to a sidecar that died while loading.
const LOCK_STALE: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_secs(1);

/// This process's claim token (random: kernel entropy, else time and pid).
fn token() -> u64 {
    static TOKEN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TOKEN.get_or_init(|| {
        let mut t = 0u64;
        // SAFETY: getrandom writes at most 8 bytes into `t`.
        let n = unsafe { libc::getrandom((&mut t as *mut u64).cast(), 8, 0) };
        if n != 8 || t == 0 {
            t = now_ns() ^ (u64::from(std::process::id()) << 32) | 1;
        }
        t
    })
}

pub struct Registry {
    pub dir: PathBuf,
    pub slot: u32,
    /// Whether this sidecar created the set.
    pub created: bool,
    map: Mutex<HashMap<MapData, u32, Claim>>,
    /// The registry map's id: the pin may be replaced (the set torn down and made again) while
    /// we hold the old one.
    map_id: u32,
    locked: AtomicBool,
    cgroup: AtomicU64,
    beating: AtomicBool,
    /// `leave` ran (once per slot: the signal path and the exit hook may both call it).
    left: Arc<AtomicBool>,
    /// The slot was given back: the heartbeat stops.
    stopped: Arc<AtomicBool>,
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn io_err(dir: &Path, what: &str, detail: impl std::fmt::Display) -> KernelSideError {
    KernelSideError::Io {
        dir: dir.to_path_buf(),
        what: what.to_string(),
        detail: detail.to_string(),
    }
}

fn is_exists(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EEXIST))
}

impl Registry {
    /// Create or join the set at `dir` and claim the lowest free slot for `cgroup_id` (0: not
    /// known yet), all under the set's lock, which is released before returning.
    pub fn join(dir: &Path, max_targets: u32, cgroup_id: u64) -> Result<Self, KernelSideError> {
        sweep_dead_sets(dir);
        for _ in 0..5 {
            let (map, created, map_id) = open_or_create(dir, max_targets)?;
            let reg = Self {
                dir: dir.to_path_buf(),
                slot: 0,
                created,
                map: Mutex::new(map),
                map_id,
                locked: AtomicBool::new(false),
                cgroup: AtomicU64::new(cgroup_id),
                beating: AtomicBool::new(false),
                left: Arc::default(),
                stopped: Arc::default(),
            };
            reg.lock()?;
            // The last sidecar may have torn the set down (and another made a new one) while
            // we waited for the lock of the one we opened.
            if !reg.is_current() {
                reg.unlock();
                continue;
            }
            let r = reg.claim_slot(cgroup_id);
            reg.unlock();
            let slot = r?;
            return Ok(Self { slot, ..reg });
        }
        Err(io_err(
            dir,
            "joining",
            "the set kept disappearing while joining it",
        ))
    }

    /// Under the lock: reclaim stale slots, refuse a cgroup another slot has, take the lowest
    /// free slot.
    fn claim_slot(&self, cgroup_id: u64) -> Result<u32, KernelSideError> {
        self.reclaim_stale();
        if let Some(slot) = self.holder_of(cgroup_id, None) {
            return Err(KernelSideError::Taken {
                dir: self.dir.clone(),
                cgroup_id,
                slot,
            });
        }
        let max = self.get(CONFIG_KEY).map(|c| c.max_targets).unwrap_or(64);
        let claim = Claim {
            heartbeat_ns: now_ns(),
            cgroup_id,
            pid: std::process::id(),
            token: token(),
            ..Default::default()
        };
        for s in 0..max.min(sidecar_ebpf::MAX_SLOTS) {
            match self.map().insert(s, claim, BPF_NOEXIST) {
                Ok(()) => return Ok(s),
                Err(e) if is_exists(&e) => continue,
                Err(e) => return Err(io_err(&self.dir, "claiming a slot", e)),
            }
        }
        Err(KernelSideError::Full {
            dir: self.dir.to_path_buf(),
            max,
        })
    }

    /// The live slot (other than `except`) that monitors `cgroup_id`.
    fn holder_of(&self, cgroup_id: u64, except: Option<u32>) -> Option<u32> {
        if cgroup_id == 0 {
            return None;
        }
        self.map()
            .iter()
            .filter_map(Result::ok)
            .find(|(k, c)| {
                *k < sidecar_ebpf::MAX_SLOTS && Some(*k) != except && c.cgroup_id == cgroup_id
            })
            .map(|(k, _)| k)
    }

    /// Whether the registry pinned at `dir` is still the map we hold.
    fn is_current(&self) -> bool {
        MapData::from_pin(self.dir.join("registry"))
            .ok()
            .and_then(|d| d.info().ok())
            .is_some_and(|i| i.id() == self.map_id)
    }

    /// Run `f` holding the set's lock (held already: just run it).
    pub fn with_lock<T>(&self, f: impl FnOnce() -> T) -> Result<T, KernelSideError> {
        if self.locked.load(Ordering::Acquire) {
            return Ok(f());
        }
        self.lock()?;
        let r = f();
        self.unlock();
        Ok(r)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<MapData, u32, Claim>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: u32) -> Option<Claim> {
        self.map().get(&key, 0).ok()
    }

    /// Take the set's lock (waits up to a minute; a lock older than LOCK_STALE is broken).
    fn lock(&self) -> Result<(), KernelSideError> {
        let t0 = Instant::now();
        loop {
            // The set was torn down under us: nobody will release its lock, and whatever we
            // wanted it for is moot (join starts over, leave has nothing left to clear).
            if !self.dir.join("registry").exists() {
                return Ok(());
            }
            match self.try_lock() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(io_err(&self.dir, "taking the lock", e)),
            }
            if let Some(held) = self.get(LOCK_KEY)
                && now_ns().saturating_sub(held.heartbeat_ns) > LOCK_STALE.as_nanos() as u64
            {
                tracing::warn!(
                    pid = held.pid,
                    "kernel side: breaking a lock held for over {LOCK_STALE:?}"
                );
                let _ = self.map().remove(&LOCK_KEY);
                continue;
            }
            if t0.elapsed() > Duration::from_secs(60) {
                return Err(io_err(
                    &self.dir,
                    "taking the lock",
                    "another sidecar held it for a minute",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The set's identity: its registry map's id (a set torn down and made again has another).
    pub fn set_id(&self) -> u32 {
        self.map_id
    }

    pub fn unlock(&self) {
        if self.locked.swap(false, Ordering::AcqRel) {
            let _ = self.map().remove(&LOCK_KEY);
        }
    }

    /// One attempt at the lock: Ok(false) when another sidecar holds it.
    fn try_lock(&self) -> Result<bool, MapError> {
        let mine = Claim {
            heartbeat_ns: now_ns(),
            pid: std::process::id(),
            token: token(),
            ..Default::default()
        };
        match self.map().insert(LOCK_KEY, mine, BPF_NOEXIST) {
            Ok(()) => {
                self.locked.store(true, Ordering::Release);
                Ok(true)
            }
            Err(e) if is_exists(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Slots of this set now held.
    pub fn live_slots(&self) -> u32 {
        self.map()
            .keys()
            .filter_map(Result::ok)
            .filter(|k| *k < sidecar_ebpf::MAX_SLOTS)
            .count() as u32
    }

    /// Record the cgroup this slot monitors (a restarted container's new one), refusing one
    /// another live slot has.
    pub fn claim_cgroup(&self, cgroup_id: u64) -> Result<(), KernelSideError> {
        // Claimed with the slot already (every family's set_target says it again).
        if cgroup_id == self.cgroup.load(Ordering::Acquire) {
            self.beat();
            return Ok(());
        }
        self.with_lock(|| {
            if let Some(slot) = self.holder_of(cgroup_id, Some(self.slot)) {
                return Err(KernelSideError::Taken {
                    dir: self.dir.clone(),
                    cgroup_id,
                    slot,
                });
            }
            self.cgroup.store(cgroup_id, Ordering::Release);
            self.beat();
            Ok(())
        })?
    }

    /// Whether the slot's claim is still ours.
    fn holds_slot(&self) -> bool {
        self.get(self.slot).is_some_and(|c| c.token == token())
    }

    /// Refresh our claim; false (and said once) when the slot was reclaimed meanwhile: we
    /// stalled past STALE, and it was cleared and may be someone else's now.
    fn beat(&self) -> bool {
        if self.stopped.load(Ordering::Acquire) {
            return false;
        }
        if !self.holds_slot() {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::AcqRel) {
                tracing::error!(
                    slot = self.slot,
                    "kernel side: our slot was reclaimed by another sidecar (no heartbeat for \
                     {STALE:?}): counting has stopped; restart this sidecar"
                );
            }
            return false;
        }
        let claim = Claim {
            heartbeat_ns: now_ns(),
            cgroup_id: self.cgroup.load(Ordering::Acquire),
            pid: std::process::id(),
            max_targets: 0,
            token: token(),
        };
        // BPF_EXIST: a slot freed between the check and here is not re-taken.
        self.map().insert(self.slot, claim, BPF_EXIST).is_ok()
    }

    pub fn start_heartbeat(self: &Registry) {
        if self.beating.swap(true, Ordering::AcqRel) {
            return;
        }
        // The registry lives as long as the process (the KernelSide is never dropped before
        // exit), so the thread gets its own handles rather than a borrow.
        let dir = self.dir.clone();
        let slot = self.slot;
        let me = match MapData::from_pin(dir.join("registry")).and_then(HashMap::try_from_data) {
            Ok(map) => Registry {
                dir: dir.clone(),
                slot,
                created: false,
                map: Mutex::new(map),
                map_id: self.map_id,
                locked: AtomicBool::new(false),
                cgroup: AtomicU64::new(self.cgroup.load(Ordering::Acquire)),
                beating: AtomicBool::new(true),
                left: self.left.clone(),
                stopped: self.stopped.clone(),
            },
            Err(e) => {
                tracing::error!("kernel side: no heartbeat ({e}); the slot will be reclaimed");
                return;
            }
        };
        let spawned = std::thread::Builder::new()
            .name("kernel-side".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(HEARTBEAT);
                    // Beating goes on while `leave` waits for the lock, so the slot is not
                    // taken for a dead sidecar's meanwhile.
                    if !me.is_current() {
                        return;
                    }
                    if let Some(c) = me.get(me.slot) {
                        me.cgroup.store(c.cgroup_id, Ordering::Release);
                    }
                    if !me.beat() {
                        return;
                    }
                    if me.try_lock().unwrap_or(false) {
                        me.reclaim_stale();
                        me.unlock();
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("kernel side: no heartbeat thread ({e}); the slot will be reclaimed");
        }
    }

    /// Clear and free every slot whose owner stopped beating (killed, frozen, its host gone).
    fn reclaim_stale(&self) {
        let now = now_ns();
        let stale: Vec<(u32, Claim)> = self
            .map()
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, c)| {
                *k < sidecar_ebpf::MAX_SLOTS
                    && *k != self.slot_if_claimed()
                    && now.saturating_sub(c.heartbeat_ns) > STALE.as_nanos() as u64
            })
            .collect();
        for (slot, c) in stale {
            tracing::warn!(
                slot,
                pid = c.pid,
                "kernel side: reclaiming the slot of a sidecar gone without leaving"
            );
            clear_slot(&self.dir, slot);
            let _ = self.map().remove(&slot);
        }
    }

    fn slot_if_claimed(&self) -> u32 {
        // Before our claim `slot` is 0, which may be a stale slot to reclaim.
        if self.beating.load(Ordering::Acquire) || self.created {
            self.slot
        } else {
            u32::MAX
        }
    }

    /// Leave: clear our slot; the last sidecar out removes the whole set.
    pub fn leave(&self) {
        if self.left.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.lock().is_err() {
            tracing::warn!("kernel side: leaving without the lock");
        }
        // Torn down already (we were the last but one and the last left first), or our slot
        // reclaimed while we stalled: nothing of ours to clear.
        let current = self.is_current();
        if current && self.holds_slot() {
            clear_slot(&self.dir, self.slot);
            let _ = self.map().remove(&self.slot);
        }
        self.stopped.store(true, Ordering::Release);
        if current && self.live_slots() == 0 {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => tracing::info!(
                    dir = %self.dir.display(),
                    "kernel side: last sidecar out, programs detached and maps unpinned"
                ),
                Err(e) => tracing::warn!(
                    dir = %self.dir.display(),
                    "kernel side: removing the set: {e}"
                ),
            }
            let _ = std::fs::remove_dir(super::BASE_DIR);
        }
        // Also after the teardown: a sidecar joining meanwhile waits on this (now unpinned)
        // registry's lock before it sees the set is gone and makes a new one.
        self.unlock();
    }
}

/// Remove the sets of other builds whose sidecars are all gone (killed with nobody left to
/// reclaim their slots): their programs would otherwise stay attached, and every process on the
/// host would keep paying for them. A set is dead when no slot has beaten for STALE and nobody
/// holds its lock; a directory without a registry is dead once it is 10 s old (its creator died
/// between the two steps).
fn sweep_dead_sets(ours: &Path) {
    let Ok(entries) = std::fs::read_dir(super::BASE_DIR) else {
        return;
    };
    let now = now_ns();
    let stale =
        |c: &Claim, limit: Duration| now.saturating_sub(c.heartbeat_ns) > limit.as_nanos() as u64;
    for e in entries.filter_map(Result::ok) {
        let dir = e.path();
        if dir == ours || !dir.is_dir() {
            continue;
        }
        let dead = match MapData::from_pin(dir.join("registry")).and_then(HashMap::try_from_data) {
            Ok(map) => {
                let map: HashMap<MapData, u32, Claim> = map;
                map.iter().filter_map(Result::ok).all(|(k, c)| match k {
                    CONFIG_KEY => true,
                    LOCK_KEY => stale(&c, LOCK_STALE),
                    _ => stale(&c, STALE),
                })
            }
            Err(_) => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(10)),
        };
        if dead {
            tracing::warn!(
                dir = %dir.display(),
                "kernel side: removing a set whose sidecars are all gone (no heartbeat)"
            );
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), "kernel side: {err}");
            }
        }
    }
}

type RegistryMap = HashMap<MapData, u32, Claim>;

/// Open the set's registry, or create the set: (registry, created, the registry's map id).
fn open_or_create(
    dir: &Path,
    max_targets: u32,
) -> Result<(RegistryMap, bool, u32), KernelSideError> {
    let pin = dir.join("registry");
    let open = || -> Result<(RegistryMap, u32), MapError> {
        let data = MapData::from_pin(&pin)?;
        let id = data.info()?.id();
        Ok((HashMap::try_from_data(data)?, id))
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o700);
    let t0 = Instant::now();
    loop {
        match builder.create(dir) {
            Ok(()) => {
                let mut map: HashMap<MapData, u32, Claim> =
                    HashMap::create(sidecar_ebpf::MAX_SLOTS + 8, 0)
                        .map_err(|e| io_err(dir, "creating the registry", e))?;
                map.insert(
                    CONFIG_KEY,
                    Claim {
                        max_targets,
                        ..Default::default()
                    },
                    0,
                )
                .map_err(|e| io_err(dir, "writing the registry", e))?;
                map.pin(&pin)
                    .map_err(|e| io_err(dir, "pinning the registry", e))?;
                let (map, id) = open().map_err(|e| io_err(dir, "opening the registry", e))?;
                return Ok((map, true, id));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Ok((map, id)) = open() {
                    return Ok((map, false, id));
                }
                // Its creator is between making the directory and pinning the registry.
                if t0.elapsed() > Duration::from_secs(10) {
                    tracing::warn!(
                        dir = %dir.display(),
                        "kernel side: a set without a registry for 10 s (its creator died): removing it"
                    );
                    std::fs::remove_dir_all(dir)
                        .map_err(|e| io_err(dir, "removing a half-made set", e))?;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // The base directory: not made yet, or removed by the last sidecar of another set.
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && t0.elapsed() < Duration::from_secs(10) =>
            {
                let mut base = std::fs::DirBuilder::new();
                base.mode(0o700).recursive(true);
                base.create(super::BASE_DIR)
                    .map_err(|e| io_err(dir, "creating the base directory", e))?;
            }
            Err(e) => return Err(io_err(dir, "creating the set's directory", e)),
        }
    }
}

trait FromData: Sized {
    fn try_from_data(d: MapData) -> Result<Self, MapError>;
}

impl FromData for HashMap<MapData, u32, Claim> {
    fn try_from_data(d: MapData) -> Result<Self, MapError> {
        HashMap::try_from(aya::maps::Map::HashMap(d))
    }
}

/// Empty `slot` everywhere in the set at `dir`: its cgroup and tree entries, its settings, and
/// its inner maps in every per-slot array of maps (their memory goes with the last reference).
pub fn clear_slot(dir: &Path, slot: u32) {
    let common = dir.join("common");
    if let Ok(mut cgroups) =
        MapData::from_pin(common.join(sidecar_ebpf::CGROUPS_MAP)).and_then(|d| {
            Array::<MapData, sidecar_ebpf::CgroupEntry>::try_from(aya::maps::Map::Array(d))
        })
    {
        for i in 0..sidecar_ebpf::CGROUP_TABLE {
            if let Ok(e) = cgroups.get(&i, 0)
                && e.slot == slot
                && e.cgroup_id != 0
                && e.cgroup_id != sidecar_ebpf::CGROUP_TOMBSTONE
            {
                let tomb = sidecar_ebpf::CgroupEntry {
                    cgroup_id: sidecar_ebpf::CGROUP_TOMBSTONE,
                    ..Default::default()
                };
                let _ = cgroups.set(i, tomb, 0);
            }
        }
    }
    if let Ok(mut tree) = MapData::from_pin(common.join(sidecar_ebpf::TREE_MAP)).and_then(|d| {
        HashMap::<MapData, u32, sidecar_ebpf::TreeEntry>::try_from(aya::maps::Map::HashMap(d))
    }) {
        let gone: Vec<u32> = tree
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, e)| e.slot == slot)
            .map(|(k, _)| k)
            .collect();
        for k in gone {
            let _ = tree.remove(&k);
        }
    }
    if let Ok(mut slots) = MapData::from_pin(common.join(sidecar_ebpf::SLOTS_MAP))
        .and_then(|d| Array::<MapData, sidecar_ebpf::Target>::try_from(aya::maps::Map::Array(d)))
    {
        let _ = slots.set(slot, sidecar_ebpf::Target::default(), 0);
        let trees = (0..sidecar_ebpf::MAX_SLOTS)
            .filter_map(|s| slots.get(&s, 0).ok())
            .filter(|t| t.mode == sidecar_ebpf::FILTER_TREE)
            .count() as u32;
        if let Ok(mut modes) = MapData::from_pin(common.join(sidecar_ebpf::MODES_MAP))
            .and_then(|d| Array::<MapData, sidecar_ebpf::Modes>::try_from(aya::maps::Map::Array(d)))
        {
            let mut m = modes.get(&0, 0).unwrap_or_default();
            m.tree_slots = trees;
            let _ = modes.set(0, m, 0);
        }
    }
    let Ok(families) = std::fs::read_dir(dir) else {
        return;
    };
    for fam in families.filter_map(Result::ok) {
        let name = fam.file_name();
        if name == "common" || name == "links" || name == "progs" || !fam.path().is_dir() {
            continue;
        }
        let Ok(maps) = std::fs::read_dir(fam.path()) else {
            continue;
        };
        for m in maps.filter_map(Result::ok) {
            if let Ok(data) = MapData::from_pin(m.path())
                && data.info().is_ok_and(|i| {
                    i.map_type()
                        .is_ok_and(|t| t == aya::maps::MapType::ArrayOfMaps)
                })
            {
                let _ = super::raw::delete_elem(&data, slot);
            }
        }
    }
}
