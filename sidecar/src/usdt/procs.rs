//! Finding binaries in target processes: executable mappings from /proc/<pid>/maps, reached
//! inside the process's mount namespace through /proc/<pid>/root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the scanners look at the target's processes for binaries not attached yet.
pub const RESCAN: Duration = Duration::from_secs(1);

/// Capabilities a scanner keeps: attaching uprobes to binaries found later (CAP_SYS_ADMIN, or
/// CAP_PERFMON + CAP_BPF), reading other users' /proc/<pid>/root and maps (CAP_SYS_PTRACE).
pub const SCANNER_KEEPS: &[caps::Capability] = &[
    caps::Capability::CAP_SYS_ADMIN,
    caps::Capability::CAP_PERFMON,
    caps::Capability::CAP_BPF,
    caps::Capability::CAP_SYS_PTRACE,
];

/// A thread named `thread` that runs `scan` every [`RESCAN`], to attach binaries that target
/// processes map later. It keeps what attaching takes ([`SCANNER_KEEPS`]); the rest of the
/// process drops everything after the first attach. `family` names it in logs.
pub fn spawn_scanner(
    family: &'static str,
    thread: &str,
    scan: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(thread.into())
        .spawn(move || {
            let mut keep = crate::caps::needed_after_attach();
            keep.extend(SCANNER_KEEPS.iter().copied());
            if let Err(e) = crate::caps::drop_all_except(&keep) {
                tracing::debug!("{family} scanner: dropping capabilities: {e}");
            }
            loop {
                std::thread::sleep(RESCAN);
                scan();
            }
        })
        .map(drop)
}

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

/// A file mapped executable by a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// Device (as maps prints it, `fd:01`) and inode: the identity of the file across processes
    /// and mount namespaces.
    pub dev: String,
    pub inode: u64,
    /// Path inside the process's mount namespace.
    pub path: String,
}

impl Mapped {
    /// The path as the sidecar can open it.
    pub fn host_path(&self, pid: u32) -> PathBuf {
        proc_root_path(pid, &self.path)
    }
}

pub fn proc_root_path(pid: u32, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root{path}"))
}

/// Executable file mappings of a maps file's text, one per file.
pub fn parse_maps(maps: &str) -> Vec<Mapped> {
    let mut out: BTreeMap<(String, u64), String> = BTreeMap::new();
    for line in maps.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(_range), Some(perms), Some(_off), Some(dev), Some(inode)) =
            (f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        let path: Vec<&str> = f.collect();
        let path = path.join(" ");
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        if inode == 0
            || !perms.contains('x')
            || !path.starts_with('/')
            || path.ends_with(" (deleted)")
        {
            continue;
        }
        out.entry((dev.to_string(), inode)).or_insert(path);
    }
    out.into_iter()
        .map(|((dev, inode), path)| Mapped { dev, inode, path })
        .collect()
}

/// A process's start time (clock ticks after boot, field 22 of /proc/<pid>/stat): a reused pid
/// is another process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

pub fn mappings(pid: u32) -> std::io::Result<Vec<Mapped>> {
    Ok(parse_maps(&std::fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

/// Pids of the current target (None while there is none), for the scanners that look for
/// binaries to attach to.
pub fn pids_of(target: &std::sync::Mutex<Option<crate::monitored::Resolved>>) -> Option<Vec<u32>> {
    // Copied out so the lock is not held while the cgroup tree is read.
    let (cgroup_dir, filter) = {
        let t = target.lock().unwrap_or_else(|p| p.into_inner());
        let t = t.as_ref()?;
        (t.cgroup_dir.clone(), t.filter)
    };
    if let crate::monitored::Filter::Tree { root } = filter {
        return Some(crate::monitored::tree::members(root));
    }
    Some(target_pids(cgroup_dir.as_deref()))
}

/// Pids of the target: its cgroup's processes (and sub-cgroups') when we can read them, else
/// every process of the pid namespace we share with it, minus ourselves.
fn target_pids(cgroup_dir: Option<&Path>) -> Vec<u32> {
    let mut out = Vec::new();
    match cgroup_dir {
        Some(d) => crate::monitored::cgroup::for_each_proc(d, &mut |p| out.push(p)),
        None => {
            let me = std::process::id();
            if let Ok(rd) = std::fs::read_dir("/proc") {
                out.extend(
                    rd.flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                        .filter(|p| *p != me),
                );
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `3.11` from `python3.11`, `libpython3.11.so.1.0`, `python3.11d`.
pub fn python_version(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?;
    let rest = name
        .strip_prefix("libpython")
        .or_else(|| name.strip_prefix("python"))?;
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v = v.trim_end_matches('.');
    let mut parts = v.split('.');
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => Some(format!("{a}.{b}")),
        _ => None,
    }
}

/// The JDK's version from the `release` file next to `lib/server/libjvm.so`.
pub fn java_version(libjvm_host_path: &Path) -> Option<String> {
    let home = libjvm_host_path.parent()?.parent()?.parent()?;
    let release = std::fs::read_to_string(home.join("release")).ok()?;
    release.lines().find_map(|l| {
        l.strip_prefix("JAVA_VERSION=")
            .map(|v| v.trim_matches('"').to_string())
    })
}

/// Node's version as built into its binary (the release download URL it carries).
pub fn node_version(data: &[u8]) -> Option<String> {
    let needle = b"/download/release/v";
    let at = data.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let v: String = data[at..]
        .iter()
        .take(32)
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .map(|b| *b as char)
        .collect();
    (!v.is_empty()).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps() {
        let m = "\
00400000-00421000 r--p 00000000 fd:01 1234 /usr/bin/python3.11
00421000-006c0000 r-xp 00021000 fd:01 1234 /usr/bin/python3.11
7f00-7f10 r-xp 00000000 fd:01 99 /usr/lib/jvm/x/lib/server/libjvm.so
7f20-7f30 rw-p 00000000 00:00 0 [heap]
7f40-7f50 r-xp 00000000 fd:01 77 /tmp/gone (deleted)
7f60-7f70 r-xp 00000000 fd:01 78 /opt/with space/lib.so
garbage line
";
        let v = parse_maps(m);
        let paths: Vec<&str> = v.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "/opt/with space/lib.so",
                "/usr/lib/jvm/x/lib/server/libjvm.so",
                "/usr/bin/python3.11"
            ]
        );
        assert_eq!(
            v[2].host_path(7),
            PathBuf::from("/proc/7/root/usr/bin/python3.11")
        );
    }

    #[test]
    fn versions() {
        assert_eq!(
            python_version("/usr/bin/python3.11").as_deref(),
            Some("3.11")
        );
        assert_eq!(
            python_version("/x/libpython3.12.so.1.0").as_deref(),
            Some("3.12")
        );
        assert_eq!(python_version("/usr/bin/python3").as_deref(), None);
        assert_eq!(python_version("/usr/bin/node"), None);
        assert_eq!(
            node_version(b"xx https://nodejs.org/download/release/v20.20.2/node").as_deref(),
            Some("20.20.2")
        );
        assert_eq!(node_version(b"nothing"), None);
    }
}
