//! Uprobes attached per process. `perf_event_open` with a process's pid makes the kernel put the
//! breakpoint in that process's memory only (its uprobe filter compares the event's task's mm), so
//! a process outside the target that maps the same file never traps. The price: one perf event
//! and one BPF link per (process, site), and processes are hooked when a scan sees them (every
//! [`super::procs::RESCAN`]), not at their first instruction.
//!
//! [`PerProcess`] keeps, per target process, the links of every mapped file that defines the
//! wanted symbols. Files are read once each ([`FileId`]), with a size limit ([`MAX_FILE`]); a
//! process that exited (or whose pid now names another process) has its links closed, which
//! detaches them.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use aya::programs::ProgramFd;

use super::attach::{Link, attach_uprobe};
use super::procs::{self, start_time};

/// Largest file whose symbols are read (Node 20's binary, OpenSSL statically linked, is 99 MB).
/// A file the target controls must not make the sidecar read without bound.
pub const MAX_FILE: u64 = 512 << 20;

/// A file across containers and mount namespaces: inode number, size, mtime (s, ns). Not the
/// device: a uprobe lands on the real file under an overlayfs path, which every container of an
/// image shares, and overlayfs gives each container its own device but the layer's inode number.
pub type FileId = (u64, u64, i64, i64);

pub fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Read a file of at most [`MAX_FILE`] bytes.
pub fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut data = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    if data.len() as u64 > MAX_FILE {
        return Err(format!("larger than {} MiB: not read", MAX_FILE >> 20));
    }
    Ok(data)
}

/// Library directories whose libssl `run` mode hooks before the command starts.
const SYSTEM_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

/// The system's libssl files (`libssl.so.N`), for `run` mode: a program usually loads libssl
/// after it starts (Python's `import ssl`), and short-lived commands are gone before a scan.
pub fn system_libssl() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in SYSTEM_LIB_DIRS {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("libssl.so.") {
                out.push(e.path());
            }
        }
    }
    out
}

/// One place to hook in a file that defines `symbol`.
#[derive(Clone, Copy, Debug)]
pub struct Site {
    pub symbol: &'static str,
    /// Index of the program in [`PerProcess::new`]'s list.
    pub prog: usize,
    pub ret: bool,
    pub cookie: u64,
}

/// OpenSSL's plaintext calls, for programs (enter, exit) that read the cookie: direction
/// (`TLS_READ`/`TLS_WRITE`) and `TLS_EX` (the length comes back through a `size_t *`).
pub fn ssl_sites(enter: usize, exit: usize) -> Vec<Site> {
    use sidecar_ebpf::{TLS_EX, TLS_READ, TLS_WRITE};
    let mut out = Vec::new();
    for (symbol, cookie) in [
        ("SSL_read", TLS_READ as u64),
        ("SSL_write", TLS_WRITE as u64),
        // Since OpenSSL 1.1.1; Python's ssl module calls these.
        ("SSL_read_ex", TLS_READ as u64 | TLS_EX),
        ("SSL_write_ex", TLS_WRITE as u64 | TLS_EX),
    ] {
        for (prog, ret) in [(enter, false), (exit, true)] {
            out.push(Site {
                symbol,
                prog,
                ret,
                cookie,
            });
        }
    }
    out
}

/// The offsets of `sites` in an ELF file's bytes: (site index, file offset) for each symbol the
/// file defines; None when it defines none of `required`.
pub fn resolve(data: &[u8], sites: &[Site], required: &[&str]) -> Option<Vec<(usize, u64)>> {
    let mut found: HashMap<&str, Option<u64>> = HashMap::new();
    let mut out = Vec::new();
    for (i, s) in sites.iter().enumerate() {
        let off = *found
            .entry(s.symbol)
            .or_insert_with(|| super::symbol_offset(data, s.symbol).ok());
        if let Some(off) = off {
            out.push((i, off));
        }
    }
    let any_required = required
        .iter()
        .any(|r| found.get(r).is_some_and(|o| o.is_some()));
    any_required.then(|| place_ssl(data, sites, out))
}

/// OpenSSL's `SSL_read`/`SSL_read_ex` (and `SSL_write`/`SSL_write_ex`) are thin wrappers around
/// one internal function, `ssl_read_internal(s, buf, num, size_t *readbytes)` (`ssl_write_internal`),
/// which returns > 0 on success with the length through the pointer: the `_ex` contract. When a
/// wrapper starts with an instruction the kernel cannot emulate (Debian's libssl.so.3: `sub
/// $imm,%rsp`), every hit single-steps it (about 16 µs on the VM this was measured on, against
/// 1 µs for an emulated one): then, if every wrapper of the direction calls the same function
/// first and that one starts with an emulated instruction (`push`), its entry and return are
/// hooked instead, once for both wrappers, with the `_ex` cookie. Otherwise the wrappers stay.
fn place_ssl(data: &[u8], sites: &[Site], out: Vec<(usize, u64)>) -> Vec<(usize, u64)> {
    use sidecar_ebpf::{TLS_EX, TLS_READ, TLS_WRITE};
    let code_at = |off: u64| usize::try_from(off).ok().and_then(|o| data.get(o..));
    let mut placed: Vec<(usize, u64)> = Vec::new();
    let mut rest = out;
    for (dir, names) in [
        (TLS_READ, ["SSL_read", "SSL_read_ex"]),
        (TLS_WRITE, ["SSL_write", "SSL_write_ex"]),
    ] {
        let group: Vec<(usize, u64)> = rest
            .iter()
            .copied()
            .filter(|(i, _)| names.contains(&sites[*i].symbol))
            .collect();
        let entries: Vec<u64> = names
            .iter()
            .filter_map(|n| {
                group
                    .iter()
                    .find(|(i, _)| sites[*i].symbol == *n)
                    .map(|(_, o)| *o)
            })
            .collect();
        let slow = entries
            .iter()
            .any(|o| !code_at(*o).is_some_and(super::place::emulated_at));
        if entries.is_empty() || !slow {
            continue;
        }
        let targets: Vec<Option<u64>> = entries
            .iter()
            .map(|o| super::place::first_call_target(data, *o))
            .collect();
        let Some(Some(target)) = targets.first().copied() else {
            continue;
        };
        if targets.iter().any(|t| *t != Some(target))
            || !code_at(target).is_some_and(super::place::emulated_at)
        {
            continue;
        }
        // One entry and one return site of the direction, on the shared function.
        let (Some(enter), Some(exit)) = (
            sites
                .iter()
                .position(|s| names.contains(&s.symbol) && !s.ret && s.cookie & TLS_EX != 0),
            sites
                .iter()
                .position(|s| names.contains(&s.symbol) && s.ret && s.cookie & TLS_EX != 0),
        ) else {
            continue;
        };
        debug_assert_eq!(sites[enter].cookie & 1, dir as u64);
        rest.retain(|(i, _)| !names.contains(&sites[*i].symbol));
        placed.push((enter, target));
        placed.push((exit, target));
    }
    rest.extend(placed);
    rest
}

/// A process being hooked: its start time (a reused pid is another process) and its links by
/// mapping (device and inode as /proc/<pid>/maps prints them: no stat per scan).
struct Proc {
    start: u64,
    seen: HashMap<(String, u64), Vec<Link>>,
}

/// What a scan found, for the self metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Target processes with at least one file hooked.
    pub processes: u64,
    /// Distinct files hooked in them.
    pub files: u64,
    /// (process, file) pairs that could not be hooked (logged once per file).
    pub failed: u64,
}

pub struct PerProcess {
    what: &'static str,
    progs: Vec<ProgramFd>,
    sites: Vec<Site>,
    /// A file is hooked when it defines one of these.
    required: Vec<&'static str>,
    /// Files read: their sites, or None (not one of ours, unreadable, too large).
    files: HashMap<FileId, Option<Vec<(usize, u64)>>>,
    procs: HashMap<u32, Proc>,
    /// Files attached for every process (`run` mode's system libraries): never per process.
    everywhere: HashMap<FileId, Vec<Link>>,
    /// Files whose attach failed once (logged once).
    failed_files: HashSet<FileId>,
    failed: HashSet<(u32, FileId)>,
}

impl PerProcess {
    /// `what` names the probe in logs; `sites` index into `progs`.
    pub fn new(
        what: &'static str,
        progs: Vec<ProgramFd>,
        sites: Vec<Site>,
        required: Vec<&'static str>,
    ) -> Self {
        raise_nofile();
        Self {
            what,
            progs,
            sites,
            required,
            files: HashMap::new(),
            procs: HashMap::new(),
            everywhere: HashMap::new(),
            failed_files: HashSet::new(),
            failed: HashSet::new(),
        }
    }

    fn sites_of(&mut self, id: FileId, host_path: &Path, shown: &str) -> Option<Vec<(usize, u64)>> {
        if let Some(s) = self.files.get(&id) {
            return s.clone();
        }
        let found = match read_limited(host_path) {
            Ok(data) => resolve(&data, &self.sites, &self.required),
            Err(e) => {
                tracing::debug!(probe = self.what, binary = shown, "not read: {e}");
                None
            }
        };
        self.files.insert(id, found.clone());
        found
    }

    /// `run` mode: hook a file for every process before the command starts (its processes may
    /// be gone before a scan could see them). Those files are then skipped per process.
    pub fn attach_everywhere(&mut self, path: &Path) {
        let shown = path.display().to_string();
        let Ok(id) = file_id(path) else {
            return;
        };
        if self.everywhere.contains_key(&id) {
            return;
        }
        let Some(sites) = self.sites_of(id, path, &shown) else {
            return;
        };
        match self.attach(-1, path, &sites) {
            Ok(links) => {
                tracing::info!(
                    probe = self.what,
                    binary = shown,
                    sites = links.len(),
                    "uprobes attached for every process (run mode)"
                );
                self.everywhere.insert(id, links);
            }
            Err(e) => tracing::warn!(probe = self.what, binary = shown, "not attached: {e}"),
        }
    }

    fn attach(&self, pid: i32, path: &Path, sites: &[(usize, u64)]) -> Result<Vec<Link>, String> {
        let mut links = Vec::with_capacity(sites.len());
        for &(i, off) in sites {
            let s = &self.sites[i];
            let prog = self.progs[s.prog].as_fd();
            let link = attach_uprobe(pid, prog, path, off, 0, s.ret, s.cookie)
                .map_err(|e| format!("{} at {off:#x}: {e}", s.symbol))?;
            links.push(link);
        }
        Ok(links)
    }

    /// Hook the files of `pids` not hooked yet; drop the links of processes no longer among
    /// them (exited, or left the target). Returns the pids dropped.
    pub fn scan(&mut self, pids: &[u32]) -> Vec<u32> {
        let live: HashSet<u32> = pids.iter().copied().collect();
        let mut gone = Vec::new();
        self.procs.retain(|pid, p| {
            let keep = live.contains(pid) && start_time(*pid) == Some(p.start);
            if !keep {
                gone.push(*pid);
            }
            keep
        });
        self.failed.retain(|(pid, _)| live.contains(pid));
        for &pid in pids {
            let Some(start) = start_time(pid) else {
                continue;
            };
            let Ok(maps) = procs::mappings(pid) else {
                continue;
            };
            let mut proc = self.procs.remove(&pid).unwrap_or_else(|| Proc {
                start,
                seen: HashMap::new(),
            });
            for m in maps {
                let key = (m.dev.clone(), m.inode);
                if proc.seen.contains_key(&key) {
                    continue;
                }
                let host = m.host_path(pid);
                let Ok(id) = file_id(&host) else {
                    continue;
                };
                let links = match self.sites_of(id, &host, &m.path) {
                    Some(_) if self.everywhere.contains_key(&id) => Vec::new(),
                    None => Vec::new(),
                    Some(sites) => match self.attach(pid as i32, &host, &sites) {
                        Ok(links) => {
                            tracing::debug!(
                                probe = self.what,
                                pid,
                                binary = m.path,
                                sites = links.len(),
                                "uprobes attached to the process"
                            );
                            links
                        }
                        Err(e) => {
                            // Gone meanwhile: not a failure (the next scan drops it).
                            if start_time(pid) != Some(start) {
                                break;
                            }
                            if self.failed_files.insert(id) {
                                tracing::warn!(
                                    probe = self.what,
                                    pid,
                                    binary = m.path,
                                    "not attached: {e}"
                                );
                            }
                            self.failed.insert((pid, id));
                            Vec::new()
                        }
                    },
                };
                proc.seen.insert(key, links);
            }
            self.procs.insert(pid, proc);
        }
        gone
    }

    pub fn counts(&self) -> Counts {
        let mut files = HashSet::new();
        let mut processes = 0;
        for p in self.procs.values() {
            let mut any = false;
            for (key, links) in &p.seen {
                if !links.is_empty() {
                    files.insert(key.clone());
                    any = true;
                }
            }
            processes += u64::from(any);
        }
        Counts {
            processes,
            files: (files.len() + self.everywhere.len()) as u64,
            failed: self.failed.len() as u64,
        }
    }
}

/// One link and one perf event fd per (process, site): a target of a few hundred processes
/// passes the usual soft limit of 1024 open files.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_ourselves() {
        assert!(start_time(std::process::id()).is_some());
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn ssl_sites_pair_entry_and_return() {
        let s = ssl_sites(0, 1);
        assert_eq!(s.len(), 8);
        assert!(s.iter().all(|x| (x.prog == 1) == x.ret));
        assert_eq!(s.iter().filter(|x| x.symbol == "SSL_read_ex").count(), 2);
    }

    #[test]
    fn files_without_the_symbols_are_not_ours() {
        let me = std::fs::read("/proc/self/exe").expect("own binary");
        assert_eq!(resolve(&me, &ssl_sites(0, 1), &["SSL_read"]), None);
        assert_eq!(
            resolve(b"not an elf", &ssl_sites(0, 1), &["SSL_read"]),
            None
        );
    }
}
