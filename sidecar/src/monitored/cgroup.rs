//! cgroup v2: finding (or making) a cgroup2 mount, turning paths into ids, and the fresh cgroup
//! that `run` puts its command in.
//!
//! The id the kernel's `bpf_get_current_cgroup_id()` returns is the inode number of the cgroup's
//! directory on a cgroup2 mount, so every path below ends in a `stat`.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::TargetError;

/// Where this process creates its own cgroup2 mount when none is visible (containers).
const PRIVATE_MOUNT: &str = "/run/ebpf-sidecar/cgroup2";
/// Used instead when the root filesystem is read-only (it exists, empty, in Debian-based images).
const READ_ONLY_FALLBACK: &str = "/mnt";

/// A cgroup2 mount and the cgroup path its root stands for (`/` unless it was bind-mounted
/// from inside the hierarchy).
#[derive(Clone, Debug)]
pub struct Cgroup2Mount {
    pub mount_point: PathBuf,
    pub root: String,
}

impl Cgroup2Mount {
    /// Directory of a cgroup given by its path as written in `/proc/<pid>/cgroup`.
    pub fn dir_of(&self, cgroup_path: &str) -> Option<PathBuf> {
        let rel = if self.root == "/" {
            cgroup_path
        } else {
            cgroup_path.strip_prefix(self.root.as_str())?
        };
        Some(self.mount_point.join(rel.trim_start_matches('/')))
    }
}

/// Parse `/proc/self/mountinfo` for a cgroup2 mount.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<Cgroup2Mount> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = pre.split_whitespace().collect();
        Some(Cgroup2Mount {
            root: unescape(fields.get(3)?),
            mount_point: PathBuf::from(unescape(fields.get(4)?)),
        })
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\')
            .then(|| {
                s.get(i + 1..i + 4)
                    .and_then(|o| u8::from_str_radix(o, 8).ok())
            })
            .flatten();
        match octal {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cgroup2 mount this process can use: an existing one, or one it mounts privately (needs
/// CAP_SYS_ADMIN; Docker does not give containers one by default).
pub fn cgroup2_mount() -> Result<Cgroup2Mount, TargetError> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|e| TargetError::Io {
        what: "reading /proc/self/mountinfo".into(),
        source: e,
    })?;
    if let Some(m) = find_cgroup2_mount(&info) {
        return Ok(m);
    }
    // A read-only root filesystem (docker run --read-only) has no room for a new directory: then
    // mount over an existing empty one, in this process's own mount namespace.
    let dir = match fs::create_dir_all(PRIVATE_MOUNT) {
        Ok(()) => PRIVATE_MOUNT,
        Err(_) if fs::read_dir(READ_ONLY_FALLBACK).is_ok_and(|mut d| d.next().is_none()) => {
            READ_ONLY_FALLBACK
        }
        Err(e) => {
            return Err(TargetError::NoCgroup2 {
                reason: format!("creating {PRIVATE_MOUNT}: {e}"),
            });
        }
    };
    let src = c"cgroup2";
    let dst = std::ffi::CString::new(dir).expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TargetError::NoCgroup2 {
            reason: format!(
                "no cgroup2 mount is visible and mounting one at {dir} failed: {} \
                 (needs CAP_SYS_ADMIN, or mount the host's: -v /sys/fs/cgroup:/sys/fs/cgroup:ro)",
                io::Error::last_os_error()
            ),
        });
    }
    Ok(Cgroup2Mount {
        mount_point: dir.into(),
        root: "/".into(),
    })
}

/// The unified-hierarchy (`0::`) path of a process, as its `/proc/<pid>/cgroup` shows it.
pub fn proc_cgroup_path(pid: u32) -> Result<String, TargetError> {
    let path = format!("/proc/{pid}/cgroup");
    let text = fs::read_to_string(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            TargetError::NoSuchPid(pid)
        } else {
            TargetError::Io {
                what: format!("reading {path}"),
                source: e,
            }
        }
    })?;
    parse_unified_path(&text).ok_or_else(|| TargetError::NoCgroup2 {
        reason: format!("{path} has no cgroup v2 (0::) line"),
    })
}

pub fn parse_unified_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_string()))
}

/// The cgroup id of a cgroup2 directory.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    Ok(fs::metadata(dir)?.ino())
}

/// Processes in a cgroup and its descendants.
pub fn count_procs(dir: &Path) -> io::Result<u64> {
    fs::metadata(dir.join("cgroup.procs"))?;
    let mut n = 0;
    for_each_proc(dir, &mut |_| n += 1);
    Ok(n)
}

/// Call `f` with every pid in the cgroup at `dir` and its descendants (unreadable ones skipped).
pub fn for_each_proc(dir: &Path, f: &mut dyn FnMut(u32)) {
    if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
        s.lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .for_each(&mut *f);
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                for_each_proc(&e.path(), f);
            }
        }
    }
}

const RUN_PREFIX: &str = "ebpf-sidecar-run-";

/// Remove run cgroups that earlier sidecars left behind (killed, or their command's last
/// descendants still exiting at the time): empty ones older than a minute, so a concurrent
/// sidecar's cgroup, empty for the instant before its command joins, is never taken.
fn sweep_stale(mount_point: &Path) {
    let Ok(entries) = fs::read_dir(mount_point) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(RUN_PREFIX)
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60))
            && fs::read_to_string(e.path().join("cgroup.procs")).is_ok_and(|p| p.is_empty());
        if stale && fs::remove_dir(e.path()).is_ok() {
            tracing::debug!(dir = %e.path().display(), "removed a stale run cgroup");
        }
    }
}

/// A new, empty cgroup for `run`; removed on drop once empty.
#[derive(Debug)]
pub struct RunCgroup {
    pub dir: PathBuf,
    pub path: String,
    pub id: u64,
}

impl RunCgroup {
    pub fn create(mount: &Cgroup2Mount) -> Result<Self, TargetError> {
        sweep_stale(&mount.mount_point);
        let pid = std::process::id();
        // A reused pid can meet the cgroup of an earlier sidecar that could not remove it.
        let (name, dir) = (0..100)
            .map(|n| {
                let name = if n == 0 {
                    format!("{RUN_PREFIX}{pid}")
                } else {
                    format!("{RUN_PREFIX}{pid}-{n}")
                };
                let dir = mount.mount_point.join(&name);
                (name, dir)
            })
            .find(|(_, dir)| !dir.exists())
            .ok_or_else(|| TargetError::Io {
                what: format!(
                    "creating a run cgroup under {}",
                    mount.mount_point.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            })?;
        fs::create_dir(&dir).map_err(|e| TargetError::Io {
            what: format!("creating cgroup {} (run needs root)", dir.display()),
            source: e,
        })?;
        let id = cgroup_id(&dir).map_err(|e| TargetError::Io {
            what: format!("stat {}", dir.display()),
            source: e,
        })?;
        let root = mount.root.trim_end_matches('/');
        Ok(Self {
            dir,
            path: format!("{root}/{name}"),
            id,
        })
    }

    /// Writing a pid (or `0`, for the writer itself) here moves that process into the cgroup.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        // The command has exited, but its last descendants may still be leaving the cgroup
        // (EBUSY until they are gone): wait a little. If some live on, the cgroup stays behind,
        // is reported, and a later sidecar sweeps it.
        let mut last = None;
        for _ in 0..40 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        if let Some(e) = last {
            tracing::warn!(dir = %self.dir.display(), "could not remove run cgroup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unified_mount_on_hybrid_host() {
        let info = "30 25 0:26 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n\
                    31 25 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        let m = find_cgroup2_mount(info).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(
            m.dir_of("/docker/abc").unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/docker/abc")
        );
    }

    #[test]
    fn mount_rooted_inside_hierarchy() {
        let m = Cgroup2Mount {
            mount_point: "/sys/fs/cgroup".into(),
            root: "/docker/abc".into(),
        };
        assert_eq!(
            m.dir_of("/docker/abc").unwrap(),
            PathBuf::from("/sys/fs/cgroup/")
        );
        assert!(m.dir_of("/other").is_none());
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn unified_line() {
        let text = "4:memory:/x\n0::/docker/0123\n";
        assert_eq!(parse_unified_path(text).as_deref(), Some("/docker/0123"));
        assert_eq!(parse_unified_path("4:memory:/x\n"), None);
    }
}
