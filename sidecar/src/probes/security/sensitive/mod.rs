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
//! target's processes are scanned every [`RESCAN`]. The TLS uprobes are attached **per
//! process** ([`crate::usdt::per_process`], shared with the net family's HTTPS): the kernel puts
//! their breakpoints in the target's processes only, in every file that defines `SSL_read` or
//! `SSL_write` (libssl, or a binary with OpenSSL linked in, such as Node's). bash's readline is
//! attached once per file for every process that maps it (the BPF program filters the target).
//! In `run` mode the command's bash and the system's libssl are attached for every process before
//! the command starts (its processes may be gone before a scan could see them).
//!
//! A file is known by its inode number, size and modification time ([`FileId`]), not its
//! device: a uprobe lands on the real file under an overlayfs path, which every container of an
//! image shares, and overlayfs gives each container its own device but the layer's inode number
//! (when its layers share a filesystem, as Docker's overlay2 does). On a shared kernel side each
//! readline site is attached once per set, its link pinned under a name made of (file, offset,
//! program): a second uprobe there would run the shared program twice per call. Sidecars that
//! find the pin skip the site; the programs check that the caller's slot asked for the probe.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aya::programs::ProgramFd;

mod redact;

pub use redact::redact;

use crate::kernel_side::Handle as KsHandle;
use crate::monitored::Resolved;
use crate::probes::{Object, Options, ProbeError};
use crate::usdt::per_process::{self, FileId, PerProcess, file_id};
use crate::usdt::{self, attach::Link, procs};

/// How often the target's processes are scanned for binaries not attached yet.
pub use crate::usdt::procs::RESCAN;

/// Largest `--tls-sample-bytes` (the event's payload field).
pub const MAX_SAMPLE: u32 = sidecar_ebpf::SEC_ARGV_LEN as u32;

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

/// Files of the readline probe (the TLS probe looks at every file, for its symbols).
pub fn file_kind(path: &str, bash_seen: bool) -> Option<Kind> {
    let name = path.rsplit('/').next()?;
    if name == "bash" || bash_seen && name.starts_with("libreadline.so") {
        Some(Kind::BashReadline)
    } else {
        None
    }
}

struct Attached {
    /// Private kernel side: the links (closing them detaches). Shared: empty, the links are
    /// pinned on the set.
    _links: Vec<Link>,
}

pub struct Sensitive {
    readline: Option<ProgramFd>,
    /// --tls-plaintext: SSL_* uprobes, per target process.
    tls: Option<Mutex<PerProcess>>,
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
        let tls = if opts.tls_plaintext {
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
            let progs = vec![
                obj.load_uprobe("security_ssl_enter")?,
                obj.load_uprobe("security_ssl_exit")?,
            ];
            let mut pp = PerProcess::new(
                "tls",
                progs,
                per_process::ssl_sites(0, 1),
                vec!["SSL_read", "SSL_write"],
            );
            if opts.run_program.is_some() {
                for lib in per_process::system_libssl() {
                    pp.attach_everywhere(&lib);
                }
            }
            Some(Mutex::new(pp))
        } else {
            None
        };
        let me = Arc::new(Self {
            readline,
            tls,
            files: Mutex::new(HashMap::new()),
            target: Mutex::new(None),
            ks: obj.kernel_side().clone(),
        });
        if let Some(cmd) = &opts.run_program
            && me.readline.is_some()
            && let Some(bash) = run_bash(cmd)
        {
            let shown = bash.display().to_string();
            me.consider(Kind::BashReadline, &bash, &shown);
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
        if self.readline.is_some() {
            let n = files.values().flatten().count() as u64;
            out.push((Kind::BashReadline, n));
        }
        if let Some(tls) = &self.tls {
            let n = tls.lock().unwrap_or_else(|p| p.into_inner()).counts().files;
            out.push((Kind::Tls, n));
        }
        out
    }

    fn scan(&self) {
        // No target: every process left it, and the per-process TLS links go.
        let pids = procs::pids_of(&self.target).unwrap_or_default();
        if let Some(tls) = &self.tls {
            tls.lock().unwrap_or_else(|p| p.into_inner()).scan(&pids);
        }
        if self.readline.is_none() {
            return;
        }
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
                files.insert(key, Some(Attached { _links: links }));
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
        let data = per_process::read_limited(path)?;
        let mut sites: Vec<(&str, &ProgramFd, &str, u64, bool, u64)> = Vec::new();
        match kind {
            Kind::BashReadline => {
                let prog = self.readline.as_ref().expect("checked by the caller");
                let off = usdt::symbol_offset(&data, "readline").map_err(|e| e.to_string())?;
                sites.push(("readline", prog, "security_readline", off, true, 0));
            }
            Kind::Tls => return Err("TLS files are attached per process".into()),
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

/// `run -- CMD`'s CMD when it is bash.
fn run_bash(cmd: &Path) -> Option<PathBuf> {
    procs::resolve_command(cmd).filter(|bin| bin.file_name().is_some_and(|n| n == "bash"))
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
            None
        );
        assert_eq!(
            file_kind("/usr/lib/x86_64-linux-gnu/libssl3.so", false),
            None
        );
        assert_eq!(file_kind("/bin/dash", false), None);
    }
}
