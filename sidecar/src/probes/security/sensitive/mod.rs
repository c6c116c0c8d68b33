//! Opt-in sensitive probes of the security family (off by default, one loud flag each):
//!
//! - `--capture-bash-readline`: a uretprobe on `readline` in the bash binaries (or the
//!   libreadline a bash maps) of the target; each line read is a `bash_readline` event.
//! - `--tls-plaintext`: uprobes on `SSL_read`/`SSL_write` (and their `_ex` variants) in the
//!   target's libssl; plaintext bytes are counted by direction and comm, and with
//!   `--tls-samples` the first bytes of each call become a `tls_sample` event, redacted by
//!   default ([`redact`]).
//!
//! Binaries are found like the runtimes family finds runtimes (`crate::usdt::procs`): the
//! target's processes are scanned every [`RESCAN`] and each file ([`FileId`]) is attached
//! once for every process that maps it (the BPF programs filter the target). In `run` mode the
//! command's bash and the system's libssl are attached before the command starts.
//!
//! A file is known by its inode number, size and modification time ([`FileId`]), not its
//! device: a uprobe lands on the real file under an overlayfs path, which every container of an
//! image shares, and overlayfs gives each container its own device but the layer's inode number
//! (when its layers share a filesystem, as Docker's overlay2 does). On a shared kernel side each
//! (file, offset, program) is attached once per set, its link pinned under a name made of them:
//! a second uprobe there would run the shared program twice per call. Sidecars that find the pin
//! skip the site; the programs check that the caller's slot asked for the probe.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aya::programs::ProgramFd;
use sidecar_ebpf::{TLS_EX, TLS_READ, TLS_WRITE};

mod redact;

pub use redact::redact;

use crate::kernel_side::Handle as KsHandle;
use crate::monitored::Resolved;
use crate::probes::{Object, Options, ProbeError};
use crate::usdt::{self, attach::Link, procs};

/// How often the target's processes are scanned for binaries not attached yet.
pub use crate::usdt::procs::RESCAN;

/// Largest `--tls-sample-bytes` (the event's payload field).
pub const MAX_SAMPLE: u32 = sidecar_ebpf::SEC_ARGV_LEN as u32;

/// Library directories whose libssl `run` mode attaches before the command starts (a program
/// usually loads libssl later, e.g. Python's `import ssl`, after the first scan could see it).
const SYSTEM_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

/// What each opt-in probe attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    BashReadline,
    Tls,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::BashReadline => "bash_readline",
            Kind::Tls => "tls",
        }
    }
}

/// (symbol, return probe, cookie) per kind. The cookie tells the TLS programs the direction
/// and whether the length comes back through a `size_t *` (`_ex`).
const TLS_SITES: &[(&str, bool, u64)] = &[
    ("SSL_read", false, TLS_READ as u64),
    ("SSL_read", true, TLS_READ as u64),
    ("SSL_write", false, TLS_WRITE as u64),
    ("SSL_write", true, TLS_WRITE as u64),
    ("SSL_read_ex", false, TLS_READ as u64 | TLS_EX),
    ("SSL_read_ex", true, TLS_READ as u64 | TLS_EX),
    ("SSL_write_ex", false, TLS_WRITE as u64 | TLS_EX),
    ("SSL_write_ex", true, TLS_WRITE as u64 | TLS_EX),
];

pub fn file_kind(path: &str, bash_seen: bool) -> Option<Kind> {
    let name = path.rsplit('/').next()?;
    if name == "bash" || bash_seen && name.starts_with("libreadline.so") {
        Some(Kind::BashReadline)
    } else if name.starts_with("libssl.so") {
        Some(Kind::Tls)
    } else {
        None
    }
}

struct Attached {
    kind: Kind,
    /// Private kernel side: the links (closing them detaches). Shared: empty, the links are
    /// pinned on the set.
    _links: Vec<Link>,
}

/// A file across containers and mount namespaces: inode number, size, mtime (s, ns).
type FileId = (u64, u64, i64, i64);

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

pub struct Sensitive {
    readline: Option<ProgramFd>,
    ssl: Option<(ProgramFd, ProgramFd)>,
    /// By [`FileId`]: None when the file could not be attached (tried once).
    files: Mutex<HashMap<FileId, Option<Attached>>>,
    target: Mutex<Option<Resolved>>,
    /// Where the links go: pinned once per set when shared.
    ks: KsHandle,
}

impl Sensitive {
    /// Load the programs the flags ask for (none: no scanner, nothing attached).
    pub fn load(obj: &mut Object, opts: &Options) -> Result<Option<Arc<Self>>, ProbeError> {
        if !opts.bash_readline && !opts.tls_plaintext {
            return Ok(None);
        }
        let readline = if opts.bash_readline {
            tracing::warn!(
                "--capture-bash-readline: every line typed into bash in the target (passwords \
                 typed at a prompt included) is captured and served on /events"
            );
            Some(obj.load_uprobe("security_readline")?)
        } else {
            None
        };
        let ssl = if opts.tls_plaintext {
            if opts.tls_sample_bytes > 0 {
                tracing::warn!(
                    bytes = opts.tls_sample_bytes,
                    raw = opts.tls_samples_raw,
                    "--tls-samples: the first bytes of every TLS read and write of the target are \
                     copied out of the process{}",
                    if opts.tls_samples_raw {
                        " and served UNREDACTED on /events (--tls-samples-raw)"
                    } else {
                        "; /events shows them redacted"
                    }
                );
            } else {
                tracing::warn!(
                    "--tls-plaintext: uprobes on SSL_read/SSL_write of the target's libssl count \
                     decrypted bytes"
                );
            }
            Some((
                obj.load_uprobe("security_ssl_enter")?,
                obj.load_uprobe("security_ssl_exit")?,
            ))
        } else {
            None
        };
        let me = Arc::new(Self {
            readline,
            ssl,
            files: Mutex::new(HashMap::new()),
            target: Mutex::new(None),
            ks: obj.kernel_side().clone(),
        });
        if let Some(cmd) = &opts.run_program {
            for path in run_files(cmd, opts.tls_plaintext) {
                let shown = path.display().to_string();
                let bash = path.file_name().is_some_and(|n| n == "bash");
                if let Some(kind) = file_kind(&shown, bash) {
                    me.consider(kind, &path, &shown);
                }
            }
        }
        let bg = me.clone();
        // Binaries found later are attached by this thread (it keeps what that takes).
        procs::spawn_scanner("security", "sensitive-scan", move || bg.scan()).map_err(|e| {
            ProbeError::Map {
                family: "security",
                map: "-".into(),
                detail: format!("starting the scanner thread: {e}"),
            }
        })?;
        Ok(Some(me))
    }

    pub fn set_target(&self, target: Option<&Resolved>) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target.cloned();
    }

    /// Files attached, by kind.
    pub fn attached(&self) -> Vec<(Kind, u64)> {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(Kind, u64)> = Vec::new();
        let kinds = [
            (Kind::BashReadline, self.readline.is_some()),
            (Kind::Tls, self.ssl.is_some()),
        ];
        for (k, on) in kinds {
            if on {
                let n = files.values().flatten().filter(|a| a.kind == k).count() as u64;
                out.push((k, n));
            }
        }
        out
    }

    fn scan(&self) {
        let Some(pids) = procs::pids_of(&self.target) else {
            return;
        };
        for pid in pids {
            let Ok(maps) = procs::mappings(pid) else {
                continue;
            };
            let bash = self.readline.is_some()
                && maps
                    .iter()
                    .any(|m| m.path.rsplit('/').next() == Some("bash"));
            for m in maps {
                let Some(kind) = file_kind(&m.path, bash) else {
                    continue;
                };
                if (kind == Kind::BashReadline && self.readline.is_none())
                    || (kind == Kind::Tls && self.ssl.is_none())
                {
                    continue;
                }
                self.consider(kind, &m.host_path(pid), &m.path);
            }
        }
    }

    /// Attach `kind`'s probes to the file once ([`FileId`]).
    fn consider(&self, kind: Kind, host_path: &Path, shown: &str) {
        let Ok(key) = file_id(host_path) else {
            return;
        };
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if files.contains_key(&key) {
            return;
        }
        let r = self.attach_file(kind, host_path, &key);
        match r {
            Ok((links, sites, hooked_here)) => {
                tracing::info!(
                    probe = kind.name(),
                    binary = shown,
                    sites,
                    // Shared kernel side: sites hooked by another sidecar of the set are not.
                    hooked_here,
                    "sensitive probe attached"
                );
                files.insert(
                    key,
                    Some(Attached {
                        kind,
                        _links: links,
                    }),
                );
            }
            Err(e) => {
                tracing::warn!(probe = kind.name(), binary = shown, "not attached: {e}");
                files.insert(key, None);
            }
        }
    }

    /// Attach `kind`'s sites in the file: the links held here (private kernel side; on a shared
    /// set they are pinned instead), the number of sites, and how many of them this call hooked
    /// (on a shared set the others were hooked by an earlier sidecar).
    fn attach_file(
        &self,
        kind: Kind,
        path: &Path,
        id: &FileId,
    ) -> Result<(Vec<Link>, usize, usize), String> {
        let data = usdt::read_file(path).map_err(|e| e.to_string())?;
        let mut sites: Vec<(&str, &ProgramFd, &str, u64, bool, u64)> = Vec::new();
        match kind {
            Kind::BashReadline => {
                let prog = self.readline.as_ref().expect("checked by the caller");
                let off = usdt::symbol_offset(&data, "readline").map_err(|e| e.to_string())?;
                sites.push(("readline", prog, "security_readline", off, true, 0));
            }
            Kind::Tls => {
                let (enter, exit) = self.ssl.as_ref().expect("checked by the caller");
                for (sym, ret, cookie) in TLS_SITES {
                    // SSL_read_ex/SSL_write_ex exist since OpenSSL 1.1.1: older ones lack them.
                    let Ok(off) = usdt::symbol_offset(&data, sym) else {
                        continue;
                    };
                    let (prog, name) = if *ret {
                        (exit, "security_ssl_exit")
                    } else {
                        (enter, "security_ssl_enter")
                    };
                    sites.push((sym, prog, name, off, *ret, *cookie));
                }
                if sites.is_empty() {
                    return Err("no SSL_read/SSL_write symbol (not OpenSSL's libssl?)".into());
                }
            }
        }
        let mut links = Vec::new();
        let mut pinned = Vec::new();
        for (sym, prog, name, off, ret, cookie) in &sites {
            let pin = self
                .ks
                .link_pin("security", &site_pin_name(name, id, *off), 0);
            if pin.as_ref().is_some_and(|p| p.exists()) {
                continue; // another sidecar of the set hooked this site
            }
            let attached =
                usdt::attach::attach_uprobe(-1, prog.as_fd(), path, *off, 0, *ret, *cookie)
                    .map_err(|e| format!("{sym} at {off:#x}: {e}"));
            let r = attached.and_then(|link| match pin {
                None => {
                    links.push(link);
                    Ok(())
                }
                Some(pin) => match crate::kernel_side::pin_fd(link.as_fd(), &pin) {
                    Ok(()) => {
                        pinned.push(pin);
                        Ok(())
                    }
                    // Another sidecar pinned it meanwhile: ours goes (closed: detached).
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(format!("{sym} at {off:#x}: pinning {}: {e}", pin.display())),
                },
            });
            if let Err(e) = r {
                // All or nothing, as the links held here (dropped on return).
                for p in &pinned {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
        }
        let hooked = links.len() + pinned.len();
        Ok((links, sites.len(), hooked))
    }
}

/// The pin name of a uprobe site on a shared set: program, file and offset (bpffs names may not
/// hold a dot).
fn site_pin_name(program: &str, (ino, size, sec, nsec): &FileId, offset: u64) -> String {
    format!("{program}-{ino}-{size}-{sec}_{nsec}-{offset:x}")
}

/// Files `run -- CMD` will use: CMD itself when it is bash, the system's libssl.
fn run_files(cmd: &Path, tls: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(bin) = procs::resolve_command(cmd)
        && bin.file_name().is_some_and(|n| n == "bash")
    {
        out.push(bin);
    }
    if tls {
        for dir in SYSTEM_LIB_DIRS {
            let Ok(rd) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                if name.to_string_lossy().starts_with("libssl.so.") {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_files() {
        assert_eq!(file_kind("/usr/bin/bash", false), Some(Kind::BashReadline));
        assert_eq!(
            file_kind("/usr/lib/libreadline.so.8.2", true),
            Some(Kind::BashReadline)
        );
        assert_eq!(file_kind("/usr/lib/libreadline.so.8.2", false), None);
        assert_eq!(
            file_kind("/usr/lib/x86_64-linux-gnu/libssl.so.3", false),
            Some(Kind::Tls)
        );
        assert_eq!(
            file_kind("/usr/lib/x86_64-linux-gnu/libssl3.so", false),
            None
        );
        assert_eq!(file_kind("/bin/dash", false), None);
    }
}
