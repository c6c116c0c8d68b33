//! Where a site's spec lives and who holds its link.
//!
//! Pack sites are the kernel side's: on a shared set each (file, offset, program, pack entry) is
//! attached once, by the first sidecar whose target maps the file, and its link pinned; a later
//! sidecar finds the pin and attaches nothing, so a hit runs the program once and counts for
//! the target of the task that made it. Their specs are entries of the set's `usdt_specs`, each
//! claimed in `rt_spec_claims` first, so two sidecars never write the same entry.
//!
//! --config sites are one target's: its sidecar attaches them (the links die with it), their
//! specs are in the target's own `rt_declared_specs` and their cookie carries its slot (bits
//! 32-63: slot + 1), so another target's hit on the same place is not counted for it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use aya::maps::{Array, HashMap, MapData, MapError};
use sidecar_ebpf::UsdtSpec;

use super::attach::SPECS_MAX;
use crate::probes::{Object, ProbeError};

const BPF_NOEXIST: u64 = 1;

/// The inode a uprobe goes on, as (device, inode) of the file the kernel attaches to: under
/// overlayfs the real file of the layer below, which `/proc/self/maps` shows for a mapping of
/// it (`stat` gives the overlay's own numbers, different in every container of one image).
pub(super) fn file_id(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    mapped_id(path).unwrap_or_else(|e| {
        tracing::debug!(path = %path.display(), "runtimes: file id from stat ({e})");
        std::fs::metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .unwrap_or_default()
    })
}

fn mapped_id(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path)?;
    // SAFETY: a private read-only mapping of the first byte of a file we opened, unmapped below;
    // nothing reads through it.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            1,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let maps = std::fs::read_to_string("/proc/self/maps");
    // SAFETY: the mapping made above, of that length.
    unsafe { libc::munmap(addr, 1) };
    let start = format!("{:x}-", addr as usize);
    maps?
        .lines()
        .find(|l| l.starts_with(&start))
        .and_then(parse_maps_id)
        .ok_or_else(|| io::Error::other("the mapping is not in /proc/self/maps"))
}

/// (device, inode) of a /proc/PID/maps line: `start-end perms offset major:minor inode path`.
fn parse_maps_id(line: &str) -> Option<(u64, u64)> {
    let mut f = line.split_whitespace().skip(3);
    let (major, minor) = f.next()?.split_once(':')?;
    let ino = f.next()?.parse().ok()?;
    let major = u32::from_str_radix(major, 16).ok()?;
    let minor = u32::from_str_radix(minor, 16).ok()?;
    Some((libc::makedev(major, minor), ino))
}

/// The name a pack site's link is pinned under (bpffs names take no dots).
pub(super) fn site_name(file: (u64, u64), off: u64, ret: bool, entry: u32, prog: &str) -> String {
    let kind = if ret { "r" } else { "e" };
    format!("site-{:x}-{}-{off:x}-{kind}-{entry}-{prog}", file.0, file.1)
}

/// The spec tables: the set's (pack sites) and this target's (--config sites).
pub(super) struct Specs {
    shared: Mutex<Array<MapData, UsdtSpec>>,
    claims: Mutex<HashMap<MapData, u32, u32>>,
    declared: Option<Mutex<Array<MapData, UsdtSpec>>>,
    /// This sidecar's slot: --config cookies carry it.
    slot: u32,
    /// Where to look for a free shared entry next, and the next --config entry.
    next: Mutex<(u32, u32)>,
    /// Shared entries this sidecar claimed and gives back when it goes (not those of sites it
    /// pinned for the set, which live as long as their pins).
    owned: Mutex<Vec<u32>>,
}

impl Drop for Specs {
    fn drop(&mut self) {
        let owned = std::mem::take(self.owned.get_mut().unwrap_or_else(|p| p.into_inner()));
        for id in owned {
            self.release(id);
        }
    }
}

fn map_err(map: &str, detail: impl ToString) -> ProbeError {
    ProbeError::Map {
        family: "runtimes",
        map: map.into(),
        detail: detail.to_string(),
    }
}

fn is_errno(e: &MapError, errno: i32) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(errno))
}

impl Specs {
    /// Take the tables out of the object (`declared`: the object has this slot's
    /// `rt_declared_specs`, i.e. --config was given).
    pub(super) fn take(obj: &mut Object) -> Result<Self, ProbeError> {
        let slot = obj.kernel_side().slot;
        let shared = obj.take_set_map("usdt_specs")?;
        let shared = Array::try_from(shared).map_err(|e| map_err("usdt_specs", e))?;
        let claims = obj.take_set_map("rt_spec_claims")?;
        let claims = HashMap::try_from(claims).map_err(|e| map_err("rt_spec_claims", e))?;
        let declared = match obj.take_slot_map("rt_declared_specs") {
            Some(m) => Some(Mutex::new(
                Array::try_from(m).map_err(|e| map_err("rt_declared_specs", e))?,
            )),
            None => None,
        };
        Ok(Self {
            shared: Mutex::new(shared),
            claims: Mutex::new(claims),
            declared,
            slot,
            next: Mutex::new((0, 0)),
            owned: Mutex::new(Vec::new()),
        })
    }

    /// Write a pack site's spec into a free entry of the set's table; its id is the cookie.
    pub(super) fn put_shared(&self, spec: UsdtSpec) -> Result<u32, String> {
        let id = self.claim()?;
        let r = self
            .shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set(id, spec, 0);
        if let Err(e) = r {
            self.release(id);
            return Err(format!("writing spec {id}: {e}"));
        }
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id);
        Ok(id)
    }

    /// A pinned site's entry: the set keeps it, this sidecar does not give it back.
    pub(super) fn keep(&self, id: u32) {
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&o| o != id);
    }

    /// Give back a shared entry.
    pub(super) fn release(&self, id: u32) {
        let _ = self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    fn claim(&self) -> Result<u32, String> {
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..SPECS_MAX {
            let id = next.0 % SPECS_MAX as u32;
            next.0 = id + 1;
            match claims.insert(id, 1, BPF_NOEXIST) {
                Ok(()) => return Ok(id),
                Err(e) if is_errno(&e, libc::EEXIST) => continue,
                Err(e) if is_errno(&e, libc::E2BIG) => break,
                Err(e) => return Err(format!("claiming a spec entry: {e}")),
            }
        }
        Err(format!(
            "the kernel side's spec table is full ({SPECS_MAX} pack probe sites)"
        ))
    }

    /// Write a --config site's spec into this target's table; returns the site's cookie.
    pub(super) fn put_declared(&self, spec: UsdtSpec) -> Result<u64, String> {
        let table = self
            .declared
            .as_ref()
            .ok_or("no --config spec table (loaded without --config)")?;
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let id = next.1;
        if id as usize >= SPECS_MAX {
            return Err(format!(
                "spec table full ({SPECS_MAX} --config probe sites)"
            ));
        }
        table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set(id, spec, 0)
            .map_err(|e| format!("writing spec {id}: {e}"))?;
        next.1 += 1;
        Ok(declared_cookie(self.slot, id))
    }
}

/// The cookie of --config site `id` of the target in `slot` (runtimes.bpf.c, target_hit).
pub(super) fn declared_cookie(slot: u32, id: u32) -> u64 {
    ((u64::from(slot) + 1) << 32) | u64::from(id)
}

/// Where a pack site's link is pinned on a shared set (None: private, the sidecar holds it).
/// The directory is made when missing (root only, as the set's others).
pub(super) fn site_pin(obj: &Object, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let pin = obj.kernel_side().link_pin("runtimes", name, 0)?;
    if let Some(dir) = pin.parent()
        && let Err(e) = std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)
    {
        tracing::debug!(dir = %dir.display(), "runtimes: creating the links directory: {e}");
    }
    Some(pin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_line_ids() {
        let l =
            "7f00a000-7f00b000 r--p 00000000 fd:01 1234567                    /usr/bin/python3.11";
        assert_eq!(parse_maps_id(l), Some((libc::makedev(0xfd, 1), 1_234_567)));
        assert_eq!(parse_maps_id("garbage"), None);
    }

    #[test]
    fn names_and_cookies() {
        let n = site_name((0x803, 42), 0x1a2b, false, 3, "rt_count");
        assert_eq!(n, "site-803-42-1a2b-e-3-rt_count");
        assert!(!n.contains('.') && !n.contains('/'));
        // Pack sites have no owner bits: the kernel tells the two kinds apart by them.
        assert_eq!(declared_cookie(0, 5) >> 32, 1);
        assert_eq!(declared_cookie(255, 5) as u32, 5);
    }

    #[test]
    fn own_mapping_is_found() {
        let exe = std::env::current_exe().unwrap();
        let (_, ino) = mapped_id(&exe).unwrap();
        assert_ne!(ino, 0);
    }
}
