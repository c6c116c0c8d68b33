//! Finding runtimes: which mapped files are a supported runtime, which binaries `run -- CMD` will
//! map, and the scanner thread that looks at the target's processes every [`RESCAN`].

use std::path::{Path, PathBuf};

use super::attach::Inner;
use crate::probes::ProbeError;
use crate::usdt::config::Scope;
use crate::usdt::procs;

// The scanner's period and capabilities, and `run`'s command lookup, are shared with the
// security family's binary scanner: they live in `crate::usdt::procs` and are re-exported here
// for the paths that used them from this module.
pub use crate::usdt::procs::{RESCAN, SCANNER_KEEPS as KEEPS, resolve_command};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Runtime {
    Python,
    Java,
    Node,
}

impl Runtime {
    pub(super) fn from_name(name: &str) -> Option<Runtime> {
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

/// A thread that runs `scan` every [`RESCAN`] (see [`procs::spawn_scanner`]); its failure to
/// start is `family`'s.
pub fn spawn_scanner(
    family: &'static str,
    thread: &str,
    scan: impl Fn() + Send + 'static,
) -> Result<(), ProbeError> {
    procs::spawn_scanner(family, thread, scan).map_err(|e| ProbeError::Map {
        family,
        map: "-".into(),
        detail: format!("starting the scanner thread: {e}"),
    })
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

/// The sidecar's own pid namespace as (device, inode), or zeros in the initial one
/// (PROC_PID_INIT_INO): the scanner's pids are those of this namespace, and outside the initial
/// one the kernel side translates to them (this target's `rt_config` in runtimes.bpf.c).
pub(super) fn own_pid_namespace() -> (u64, u64) {
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
        .ok()
        .filter(|&(_, ino)| ino != 0xEFFF_FFFC)
        .unwrap_or((0, 0))
}

impl Inner {
    /// `run -- CMD`: attach to what the command will map before it starts, so that its start-up
    /// is seen (the scanner would find it only a [`RESCAN`] later).
    pub(super) fn attach_run_program(&self, cmd: &Path) {
        for path in run_binaries(cmd) {
            self.consider(&path, None, None);
            self.consider_declared(&path, None, None);
        }
        for d in &self.declared {
            if let Scope::Binary(b) = &d.scope
                && b.is_file()
            {
                self.consider_declared(b, None, None);
            }
        }
    }

    /// One look at the target's processes: attach each new process's runtime files to it, list
    /// the runtimes seen, and detach the processes that are gone.
    pub(super) fn scan(&self) {
        let Some(pids) = procs::pids_of(&self.target) else {
            return;
        };
        let mut seen = Vec::new();
        for &pid in &pids {
            let Ok(maps) = procs::mappings(pid) else {
                continue;
            };
            for m in maps {
                if !self.declared.is_empty() {
                    self.consider_declared(&m.host_path(pid), Some(&m.path), Some(pid));
                }
                if Runtime::of_path(&m.path).is_none() {
                    continue;
                }
                if let Some((rt, version)) =
                    self.consider(&m.host_path(pid), Some(&m.path), Some(pid))
                {
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
        st.forget_gone(&pids.iter().copied().collect());
        let gone: Vec<u32> = st
            .loop_pids
            .iter()
            .copied()
            .filter(|pid| !seen.iter().any(|(_, _, p)| p == pid))
            .collect();
        for pid in gone {
            st.loop_pids.remove(&pid);
            let mut m = self.loop_pids_map.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = m.remove(&pid) {
                tracing::debug!(pid, "node event loop: forgetting the process: {e}");
            }
        }
        st.procs = seen;
    }

    /// Register a node process for the event-loop and HTTP-timing tracepoints (in this
    /// target's `rt_loop_pids`).
    fn attach_lag(&self, pid: u32) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.loop_pids.insert(pid) {
            return;
        }
        let mut m = self.loop_pids_map.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = m.insert(pid, 1, 0) {
            tracing::warn!(pid, "node event loop: registering the process: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_by_path() {
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
}
