//! HTTPS: HTTP/1.x inside TLS, read where the target hands plaintext to OpenSSL. Uprobes on
//! `SSL_read`/`SSL_write` (and `_ex`) feed the same kernel parser as plaintext TCP, per `SSL *`
//! (`sidecar-ebpf/include/net_tls.bpf.h`); `SSL_free` forgets a connection. Counted in the HTTP
//! metrics with `tls="true"`.
//!
//! Files are found in the target's processes like the other uprobe users find theirs
//! ([`crate::usdt::procs`]): every mapped executable file that defines `SSL_read` or `SSL_write`
//! (libssl.so.3, or a binary with OpenSSL linked in, such as Node's). The programs are attached
//! **per process** ([`crate::usdt::per_process`]): the kernel puts the breakpoints in the
//! target's processes only, so a neighbour mapping the same libssl never traps. A scan every
//! [`procs::RESCAN`] hooks new processes and libraries loaded later, and closes the links of
//! processes that exited. Connections whose process exited without `SSL_free` are dropped from
//! the kernel's table once idle for [`IDLE`].

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::net::{TLS_CONN_NEXT_IN, TLS_CONN_NEXT_OUT, TLS_CONN_SIZE, TlsKey};

use super::{Object, ProbeError};
use crate::metrics::Metric;
use crate::monitored::Resolved;
use crate::usdt::per_process::{self, Counts, PerProcess};
use crate::usdt::procs;

pub const PROCESSES: Metric = Metric::gauge(
    "ebpf_sidecar_http_tls_processes",
    "Target processes whose OpenSSL (libssl, or a binary with OpenSSL linked in) the HTTPS uprobes are attached to (state attached), and ones where attaching failed (state failed, logged).",
)
.labels(&["state"]);

/// A connection whose plaintext positions have not moved for this long is dropped from the
/// kernel's table (its process may be gone without SSL_free); a later request line on it starts
/// it again.
pub const IDLE: Duration = Duration::from_secs(300);

const ENTER: &str = "net_tls_enter";
const EXIT: &str = "net_tls_exit";
const FREE: &str = "net_tls_free";

type ConnValue = [u8; TLS_CONN_SIZE];

/// When the table was last looked at, and each connection's positions then (both directions in
/// one u64) with since when they have not moved.
type Idle = (Instant, HashMap<TlsKey, (u64, Instant)>);

pub struct Https {
    obj: Arc<Object>,
    target: Mutex<Option<Resolved>>,
    hooks: Mutex<PerProcess>,
    /// Positions of each connection at the last sweep, and since when they have not moved.
    idle: Mutex<Idle>,
}

impl Https {
    /// Load the programs; nothing is attached until a target's processes are scanned.
    pub fn load(obj: &mut Object) -> Result<Programs, ProbeError> {
        Ok(Programs {
            enter: obj.load_uprobe(ENTER)?,
            exit: obj.load_uprobe(EXIT)?,
            free: obj.load_uprobe(FREE)?,
        })
    }

    /// Start the scanner thread. `run_libs`: `run` mode's system libssl, hooked for every
    /// process before the command starts (its processes may be gone before a scan sees them).
    pub fn start(
        obj: Arc<Object>,
        progs: Programs,
        run_libs: &[std::path::PathBuf],
    ) -> Result<Arc<Self>, ProbeError> {
        let mut sites = per_process::ssl_sites(0, 1);
        sites.push(per_process::Site {
            symbol: "SSL_free",
            prog: 2,
            ret: false,
            cookie: 0,
        });
        let mut hooks = PerProcess::new(
            "https",
            vec![progs.enter, progs.exit, progs.free],
            sites,
            vec!["SSL_read", "SSL_write"],
        );
        for lib in run_libs {
            hooks.attach_everywhere(lib);
        }
        let me = Arc::new(Self {
            obj,
            target: Mutex::new(None),
            hooks: Mutex::new(hooks),
            idle: Mutex::new((Instant::now(), HashMap::new())),
        });
        let bg = me.clone();
        procs::spawn_scanner("net", "https-scan", move || bg.scan()).map_err(|e| {
            ProbeError::Attach {
                family: "net",
                what: "starting the HTTPS scanner thread".into(),
                detail: e.to_string(),
            }
        })?;
        Ok(me)
    }

    pub fn set_target(&self, target: Option<&Resolved>) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target.cloned();
    }

    fn scan(&self) {
        // No target: every process left it, so every link goes. HTTPS turned off by the CPU
        // budget: the links go too, since a program that returns at once still costs the
        // process its traps; they come back at the first scan after it is turned on again.
        let on = self.obj.kernel_side().flags() & sidecar_ebpf::SLOT_NET_HTTPS != 0;
        let pids = if on {
            procs::pids_of(&self.target).unwrap_or_default()
        } else {
            Vec::new()
        };
        self.hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .scan(&pids);
        self.sweep();
    }

    pub fn counts(&self) -> Counts {
        self.hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts()
    }

    pub fn encode(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        encode_counts(enc, self.counts())
    }

    /// Drop connections idle for [`IDLE`] (looked at every tenth of it).
    fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(idle.0) < IDLE / 10 {
            return;
        }
        idle.0 = now;
        let maps = self.obj.maps();
        // Absent with --net-http off (the slot has no such table).
        let Some(map @ aya::maps::Map::HashMap(data)) = maps.map("net_tls_conns") else {
            return;
        };
        let Ok(conns) = aya::maps::HashMap::<_, TlsKey, ConnValue>::try_from(map) else {
            return;
        };
        let mut kept = HashMap::new();
        let mut stale = Vec::new();
        for (k, v) in conns.iter().flatten() {
            let at = |o: usize| u64::from(u32::from_ne_bytes([v[o], v[o + 1], v[o + 2], v[o + 3]]));
            let pos = at(TLS_CONN_NEXT_IN) | at(TLS_CONN_NEXT_OUT) << 32;
            match idle.1.get(&k) {
                Some(&(p, since)) if p == pos => {
                    if now.duration_since(since) >= IDLE {
                        stale.push(k);
                    } else {
                        kept.insert(k, (pos, since));
                    }
                }
                _ => {
                    kept.insert(k, (pos, now));
                }
            }
        }
        for k in &stale {
            // The kernel may have deleted it meanwhile (SSL_free): nothing to report.
            let _ = delete_elem(data.fd().as_fd(), k);
        }
        idle.1 = kept;
    }
}

pub(super) fn encode_counts(enc: &mut DescriptorEncoder, c: Counts) -> std::fmt::Result {
    PROCESSES.gauge_series(
        enc,
        [
            (vec![("state", "attached".to_string())], c.processes as i64),
            (vec![("state", "failed".to_string())], c.failed as i64),
        ],
    )
}

/// BPF_MAP_DELETE_ELEM (aya's remove needs the map mutably, and the object's maps are shared
/// with the scrapes).
fn delete_elem(map: std::os::fd::BorrowedFd<'_>, key: &TlsKey) -> std::io::Result<()> {
    const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
    // union bpf_attr: map_fd (u32), pad, key (u64 pointer).
    let mut attr = [0u64; 3];
    attr[0] = map.as_raw_fd() as u32 as u64;
    attr[1] = key as *const TlsKey as u64;
    // SAFETY: attr is a zeroed bpf_attr prefix of the size passed; key outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            attr.as_ptr(),
            std::mem::size_of_val(&attr) as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The programs, loaded with the object (before its capabilities go).
pub struct Programs {
    enter: aya::programs::ProgramFd,
    exit: aya::programs::ProgramFd,
    free: aya::programs::ProgramFd,
}
