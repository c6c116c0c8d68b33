//! The security family's event stream: the ring buffer's events as JSON objects on /events and
//! `--events-out`, read by a thread of their own.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock};

use aya::maps::{MapData, RingBuf};
use serde_json::{Value, json};
use sidecar_ebpf::{SEC_KINDS, SecurityEvent, TLS_WRITE};

use super::sensitive;
use crate::events::{EventSink, rfc3339_from_monotonic};
use crate::metrics::comm_label;
use crate::probes::{Object, ProbeError};
use crate::tables::syscall_name;

/// Event kinds by their number in `struct security_event` (`SEC_KIND_*` in sidecar.h).
pub const KINDS: [&str; SEC_KINDS as usize] = [
    "unknown",
    "exec",
    "shell",
    "privilege",
    "ptrace",
    "namespace",
    "module",
    "bpf",
    "sensitive_open",
    "connect_new_peer",
    "listen_new_port",
    "bash_readline",
    "tls_sample",
    "seccomp_kill",
];

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// One event as the JSON object served on /events; TLS samples are redacted unless `raw_tls`.
pub fn to_json(e: &SecurityEvent, raw_tls: bool) -> Value {
    let kind = KINDS.get(e.kind as usize).copied().unwrap_or("unknown");
    let mut v = json!({
        "time": rfc3339_from_monotonic(e.ts_ns),
        "kind": kind,
        "pid": e.pid,
        "ns_pid": e.ns_pid,
        "ppid": e.ppid,
        "uid": e.uid,
        "comm": comm_label(&e.comm),
        "parent_comm": comm_label(&e.pcomm),
    });
    let o = v.as_object_mut().expect("object");
    match kind {
        "exec" | "shell" => {
            o.insert("filename".into(), json!(cstr(&e.path)));
            if kind == "exec" {
                let n = (e.argv_len as usize).min(e.argv.len());
                let argv: Vec<String> = e.argv[..n]
                    .split(|&c| c == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                o.insert("argv".into(), json!(argv));
                o.insert(
                    "argv_truncated".into(),
                    json!(e.argv_len as usize >= e.argv.len()),
                );
            }
        }
        "seccomp_kill" => {
            o.insert("syscall".into(), json!(syscall_name(e.nr)));
            o.insert(
                "action".into(),
                json!(if e.args[0] == sidecar_ebpf::SECCOMP_ACT_KILL {
                    "kill"
                } else {
                    "trap"
                }),
            );
            o.insert("data".into(), json!(e.args[1]));
        }
        "sensitive_open" => {
            o.insert("syscall".into(), json!(syscall_name(e.nr)));
            o.insert("path".into(), json!(cstr(&e.path)));
            o.insert("flags".into(), json!(e.args[0]));
        }
        "connect_new_peer" => {
            let ip = if e.family == 10 {
                Ipv6Addr::from(e.addr).to_string()
            } else {
                Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3]).to_string()
            };
            o.insert(
                "peer".into(),
                json!(if e.family == 10 {
                    format!("[{ip}]:{}", e.port)
                } else {
                    format!("{ip}:{}", e.port)
                }),
            );
        }
        "bash_readline" => {
            let n = (e.argv_len as usize).min(e.argv.len());
            o.insert(
                "line".into(),
                json!(String::from_utf8_lossy(&e.argv[..n]).into_owned()),
            );
            o.insert("truncated".into(), json!(e.args[0] != 0));
        }
        "tls_sample" => {
            let n = (e.argv_len as usize).min(e.argv.len());
            let sample = &e.argv[..n];
            o.insert(
                "direction".into(),
                json!(if e.args[0] == u64::from(TLS_WRITE) {
                    "write"
                } else {
                    "read"
                }),
            );
            o.insert("bytes".into(), json!(e.args[1]));
            o.insert("sample_bytes".into(), json!(n));
            o.insert("redacted".into(), json!(!raw_tls));
            o.insert(
                "sample".into(),
                json!(if raw_tls {
                    String::from_utf8_lossy(sample).into_owned()
                } else {
                    sensitive::redact(sample)
                }),
            );
        }
        "listen_new_port" => {
            o.insert("port".into(), json!(e.port));
            o.insert(
                "family".into(),
                json!(if e.family == 10 { "ipv6" } else { "ipv4" }),
            );
        }
        _ => {
            o.insert("syscall".into(), json!(syscall_name(e.nr)));
            o.insert("args".into(), json!(e.args));
            let path = cstr(&e.path);
            if !path.is_empty() {
                o.insert("path".into(), json!(path));
            }
        }
    }
    v
}

/// Longest an event waits in the ring buffer when the kernel side did not wake the reader
/// (it wakes it only once a batch has piled up: a wakeup per event costs the target more).
const POLL_MS: i32 = 100;

/// The ring buffer and where its events go; drained by the reader thread, and once more on
/// demand (`run` drains it before writing its outputs).
pub struct Reader {
    /// The family's object, for counting events that do not have the expected size.
    obj: Arc<Object>,
    ring: Mutex<Option<RingBuf<MapData>>>,
    sink: OnceLock<EventSink>,
    raw_tls: bool,
}

impl Reader {
    pub fn new(obj: Arc<Object>, ring: RingBuf<MapData>, raw_tls: bool) -> Self {
        Self {
            obj,
            ring: Mutex::new(Some(ring)),
            sink: OnceLock::new(),
            raw_tls,
        }
    }

    /// Hand the events to `sink` from now on, from a thread of their own (once).
    pub fn start(self: Arc<Self>, sink: EventSink) -> Result<(), ProbeError> {
        if self.sink.set(sink).is_err() {
            return Ok(());
        }
        let Some(fd) = self
            .ring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|r| r.as_raw_fd())
        else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("security-events".into())
            .spawn(move || {
                loop {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd; the ring (and its fd) lives as long as `self`.
                    unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
                    self.drain();
                }
            })
            .map(drop)
            .map_err(|e| ProbeError::Map {
                family: "security",
                map: "security_events".into(),
                detail: e.to_string(),
            })
    }

    pub fn drain(&self) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        let mut batch = Vec::new();
        let wanted = sink.wanted();
        {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            let Some(ring) = ring.as_mut() else {
                return;
            };
            while let Some(item) = ring.next() {
                let size = std::mem::size_of::<SecurityEvent>();
                if item.len() < size {
                    // The C struct and its Rust mirror differ: every event would be cut.
                    self.obj.read_error(
                        "security_events",
                        format!("an event of {} bytes, SecurityEvent is {size}", item.len()),
                    );
                } else if wanted {
                    // SAFETY: the kernel wrote a whole struct security_event (size checked);
                    // read_unaligned copes with the ring buffer's 8-byte alignment.
                    let e: SecurityEvent =
                        unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                    batch.push(to_json(&e, self.raw_tls).to_string());
                }
            }
        }
        if !batch.is_empty() {
            sink.publish(&batch);
        }
    }
}
