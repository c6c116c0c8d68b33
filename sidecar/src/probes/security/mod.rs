//! Security family: an event stream (exec, shell spawned, privilege changes, ptrace, mounts and
//! namespaces, module loads, bpf(), writes to sensitive paths, new outbound peers, new listening
//! ports) through a ring buffer. Kernel side: `sidecar-ebpf/bpf/security.bpf.c`.
//!
//! On a shared kernel side the ring buffer, counts, sensitive prefixes, peers and ports seen, TLS
//! byte counts and the family's settings (`security_config`) are this slot's own inner maps.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{
    SEC_HOOK_DISPATCH, SEC_HOOK_RAW, SEC_HOOK_TRACEPOINTS, SEC_KINDS, SEC_PREFIX_LEN, SEC_PREFIXES,
    SecPrefix, SecurityConfig, TLS_READ, TLS_WRITE, TlsBytesKey,
};

mod events;
pub mod sensitive;

pub use events::{KINDS, to_json};

use super::dispatch::Side;
use super::object::SyscallHook;
use super::{EncodeCtx, LoadOpts, Object, Options, Probe, ProbeError};
use crate::events::EventSink;
use crate::metrics::{self, LabelBudget, Metric, comm_label};
use crate::monitored::Resolved;
use events::Reader;
use sensitive::Sensitive;

/// Only with --capture-bash-readline or --tls-plaintext (one series per opt-in probe enabled).
pub const UPROBE_FILES: Metric = Metric::gauge(
    "ebpf_sidecar_security_uprobe_files",
    "Binaries an opt-in sensitive probe is attached to (bash or libreadline for bash_readline, libssl for tls).",
)
.labels(&["probe"]);
/// Only with --tls-plaintext.
pub const TLS_PLAINTEXT_BYTES: Metric = Metric::counter(
    "ebpf_sidecar_tls_plaintext_bytes",
    "Plaintext bytes the target's processes read from and wrote to TLS connections (SSL_read/SSL_write return values, --tls-plaintext), by direction and comm.",
)
.labels(&["direction", "comm"])
.top_n(&["comm"]);
pub const EVENTS: Metric = Metric::counter(
    "ebpf_sidecar_security_events",
    "Security events of the target, by kind (counted in the kernel, including those lost on the way to /events).",
)
.labels(&["kind"]);
pub const SECCOMP_KILLED: Metric = Metric::counter(
    "ebpf_sidecar_seccomp_killed",
    "Calls of the target that its seccomp filter killed (SECCOMP_RET_KILL_PROCESS, or _KILL_THREAD on a single-threaded process: SIGSYS), by syscall; each is also a seccomp_kill event on /events. Not in seccomp_denied_total.",
)
.labels(&["syscall"]);
pub const METRICS: &[Metric] = &[UPROBE_FILES, TLS_PLAINTEXT_BYTES, EVENTS, SECCOMP_KILLED];

/// The entry tracepoints of the syscalls `watched_kind()` in security.bpf.c reports.
const WATCHED_SYSCALLS: &[&str] = &[
    "sys_enter_setuid",
    "sys_enter_setgid",
    "sys_enter_setreuid",
    "sys_enter_setregid",
    "sys_enter_setresuid",
    "sys_enter_setresgid",
    "sys_enter_capset",
    "sys_enter_ptrace",
    "sys_enter_mount",
    "sys_enter_umount",
    "sys_enter_unshare",
    "sys_enter_setns",
    "sys_enter_init_module",
    "sys_enter_finit_module",
    "sys_enter_bpf",
    "sys_enter_open",
    "sys_enter_openat",
    "sys_enter_openat2",
    "sys_enter_connect",
];

/// Paths whose opening for write is reported, by prefix (`--sensitive-path` replaces them).
pub const DEFAULT_SENSITIVE: &[&str] = &[
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/sudoers",
    "/root/.ssh/",
    "/etc/ssh/",
    "/etc/ld.so.preload",
];

pub struct Security {
    /// Shared with the event reader, which counts malformed events against it.
    obj: Arc<Object>,
    reader: Arc<Reader>,
    /// Opt-in uprobes (bash readline, TLS plaintext), when a flag asked for them.
    sensitive: Option<Arc<Sensitive>>,
    tls_comms: LabelBudget,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let sample_bytes = if opts.tls_plaintext {
        opts.tls_sample_bytes.min(sensitive::MAX_SAMPLE)
    } else {
        0
    };
    // This slot's TLS byte counts exist only when it asked for them.
    let without: &[&str] = if opts.tls_plaintext {
        &[]
    } else {
        &["tls_bytes", "tls_other"]
    };
    let mut obj = Object::load_on(
        &opts.kernel_side,
        "security",
        sidecar_ebpf::objects::SECURITY,
        &LoadOpts {
            without_inner: without,
            ..Default::default()
        },
    )?;
    let wanted: Vec<&str> = if opts.sensitive_paths.is_empty() {
        DEFAULT_SENSITIVE.to_vec()
    } else {
        opts.sensitive_paths.iter().map(String::as_str).collect()
    };
    obj.write_slot_array(
        "sensitive_prefixes",
        wanted.iter().take(SEC_PREFIXES as usize).map(|p| {
            let mut v = SecPrefix {
                len: p.len().min(SEC_PREFIX_LEN) as u32,
                bytes: [0; SEC_PREFIX_LEN],
            };
            v.bytes[..v.len as usize].copy_from_slice(&p.as_bytes()[..v.len as usize]);
            v
        }),
    )?;
    let syscall_hook = attach_syscall_hook(&mut obj, opts)?;
    obj.write_slot_array(
        "security_config",
        [SecurityConfig {
            syscall_hook,
            tls_sample_bytes: sample_bytes,
        }],
    )?;
    obj.attach_raw_tp("security_exec", "sched_process_exec")?;
    obj.attach_raw_tp("security_listen", "inet_sock_set_state")?;
    obj.attach_tp_btf("security_seccomp", "signal_generate")?;
    let sensitive = Sensitive::load(&mut obj, opts)?;
    let ring = obj.take_slot_map_as("security_events")?;
    let obj = Arc::new(obj);
    Ok(Arc::new(Security {
        reader: Arc::new(Reader::new(obj.clone(), ring, opts.tls_samples_raw)),
        obj,
        sensitive,
        tls_comms: LabelBudget::new(opts.top_n),
    }))
}

/// Hook the entry of the watched syscalls: the syscalls family's jump slot when it offers one
/// (its program runs for the targets' syscalls only), else their own tracepoints, else raw
/// sys_enter. Returns the `security_config.syscall_hook` that makes that program, and only it,
/// report this slot's syscalls: on a shared kernel side other sidecars may have attached the
/// others.
fn attach_syscall_hook(obj: &mut Object, opts: &Options) -> Result<u32, ProbeError> {
    const DISPATCHED: &str = "security_sys_enter";
    let side = Side::Enter;
    if opts.syscall_dispatch.take_if_held(side, DISPATCHED) {
        tracing::info!(
            "probe security: {DISPATCHED} runs from the syscalls family's {side:?} program \
             (the shared set's copy)"
        );
        return Ok(SEC_HOOK_DISPATCH);
    }
    if opts.syscall_dispatch.available(side) {
        let fd = obj.load_raw_tp_fd(DISPATCHED)?;
        match opts.syscall_dispatch.take(side, &fd) {
            // Not in the bpf_stats export: the kernel counts a tail call's time in the program
            // that made it (the syscalls family's sys_enter).
            Ok(()) => {
                tracing::info!(
                    "probe security: {DISPATCHED} runs from the syscalls family's {side:?} program"
                );
                return Ok(SEC_HOOK_DISPATCH);
            }
            Err(e) => tracing::info!(
                "probe security: {DISPATCHED} not dispatched ({e}): on the syscalls' own \
                 tracepoints instead"
            ),
        }
    }
    let hook = obj.attach_syscall_hook(
        "security_syscall",
        WATCHED_SYSCALLS,
        ("security_sys_enter_raw", "sys_enter"),
    )?;
    Ok(match hook {
        SyscallHook::Raw => SEC_HOOK_RAW,
        SyscallHook::Tracepoints(_) | SyscallHook::Dispatched => SEC_HOOK_TRACEPOINTS,
    })
}

impl Security {
    fn encode_sensitive(&self, s: &Sensitive, enc: &mut DescriptorEncoder) -> fmt::Result {
        let attached = s.attached();
        UPROBE_FILES.gauge_series(
            enc,
            attached
                .iter()
                .map(|(k, n)| (vec![("probe", k.name().to_string())], *n as i64)),
        )?;
        if !attached.iter().any(|(k, _)| *k == sensitive::Kind::Tls) {
            return Ok(());
        }
        let mut bytes: Vec<(String, u32, u64)> = {
            let maps = self.obj.maps();
            let mut bytes: Vec<(String, u32, u64)> = maps
                .hash::<TlsBytesKey, u64>("tls_bytes")
                .into_iter()
                .map(|(k, v)| (comm_label(&k.comm), k.dir, v))
                .collect();
            for dir in [TLS_READ, TLS_WRITE] {
                let n = maps.counter("tls_other", dir);
                if n > 0 {
                    bytes.push((metrics::OTHER.to_string(), dir, n));
                }
            }
            bytes
        };
        // Both directions always appear, so a rate() starts from the first scrape.
        for dir in [TLS_READ, TLS_WRITE] {
            if !bytes.iter().any(|b| b.1 == dir) {
                bytes.push((metrics::OTHER.to_string(), dir, 0));
            }
        }
        TLS_PLAINTEXT_BYTES.counter_series(
            enc,
            self.tls_comms.fold(bytes).into_iter().map(|(c, dir, n)| {
                (
                    vec![
                        (
                            "direction",
                            if dir == TLS_WRITE { "write" } else { "read" }.to_string(),
                        ),
                        ("comm", c),
                    ],
                    n,
                )
            }),
        )
    }

    /// `security_counts`: events by kind, then events lost by kind (0 where unreadable, and
    /// counted).
    fn counts(&self) -> Vec<u64> {
        let mut out = vec![0; 2 * SEC_KINDS as usize];
        for (n, vals) in out
            .iter_mut()
            .zip(self.obj.maps().percpu_array::<u64>("security_counts"))
        {
            *n = vals.iter().sum();
        }
        out
    }
}

impl Probe for Security {
    fn name(&self) -> &'static str {
        "security"
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn on_target(&self, target: Option<&Resolved>) -> Result<(), ProbeError> {
        if let Some(s) = &self.sensitive {
            s.set_target(target);
        }
        self.obj.set_target(target.map(|t| &t.filter))
    }

    fn encode(&self, _ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        if let Some(s) = &self.sensitive {
            self.encode_sensitive(s, enc)?;
        }
        let kills = self.obj.maps().array::<u64>("seccomp_kills");
        SECCOMP_KILLED.counter_series(
            enc,
            kills.into_iter().enumerate().filter_map(|(nr, n)| {
                let n = n.filter(|n| *n > 0)?;
                Some((vec![("syscall", crate::tables::syscall_name(nr as u32))], n))
            }),
        )?;
        let c = self.counts();
        EVENTS.counter_series(
            enc,
            (1..SEC_KINDS as usize).map(|k| {
                (
                    vec![("kind", KINDS[k].to_string())],
                    c[k] + c[SEC_KINDS as usize + k],
                )
            }),
        )
    }

    fn lost_events(&self) -> u64 {
        self.counts()[SEC_KINDS as usize..].iter().sum()
    }

    fn start_events(&self, sink: EventSink) -> Result<(), ProbeError> {
        self.reader.clone().start(sink)
    }

    fn flush_events(&self) {
        self.reader.drain();
    }
}

/// The security family's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path prefix whose opening for write is a security event (repeatable; replaces the
    /// defaults /etc/passwd, /etc/shadow, /etc/group, /etc/sudoers, /root/.ssh/, /etc/ssh/,
    /// /etc/ld.so.preload). At most 16, 64 bytes each.
    #[arg(long = "sensitive-path", value_name = "PREFIX", global = true)]
    sensitive_paths: Vec<String>,

    /// SENSITIVE, opt-in (security family): capture every line bash reads in the target
    /// (uretprobe on readline) as `bash_readline` events on /events, 256 bytes max per line.
    /// Typed passwords and secrets are captured too: see README, Security.
    #[arg(long, global = true)]
    capture_bash_readline: bool,
    /// SENSITIVE, opt-in (security family): count the plaintext bytes the target reads and writes
    /// through OpenSSL's libssl (uprobes on SSL_read/SSL_write and their _ex variants):
    /// ebpf_sidecar_tls_plaintext_bytes_total{direction,comm}.
    #[arg(long, global = true)]
    tls_plaintext: bool,
    /// SENSITIVE, opt-in (implies --tls-plaintext): the first --tls-sample-bytes of every TLS
    /// read/write as `tls_sample` events, redacted to the HTTP/1.x shape (request/status line,
    /// header names) unless --tls-samples-raw.
    #[arg(long, global = true)]
    tls_samples: bool,
    /// Bytes copied per TLS sample (1-256).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=256), global = true)]
    tls_sample_bytes: u32,
    /// DANGEROUS (implies --tls-samples): serve TLS samples unredacted, decrypted payload
    /// (passwords, tokens, bodies) included.
    #[arg(long, global = true)]
    tls_samples_raw: bool,
}

impl super::FamilyArgs for Args {
    fn apply(self, s: &mut super::Setup<'_>) -> Result<(), String> {
        let o = &mut *s.options;
        o.sensitive_paths = self.sensitive_paths;
        o.bash_readline = self.capture_bash_readline;
        o.tls_plaintext = self.tls_plaintext || self.tls_samples || self.tls_samples_raw;
        o.tls_sample_bytes = if self.tls_samples || self.tls_samples_raw {
            self.tls_sample_bytes
        } else {
            0
        };
        o.tls_samples_raw = self.tls_samples_raw;
        if (o.bash_readline || o.tls_plaintext) && !s.probes.iter().any(|p| p == "security") {
            return Err("--capture-bash-readline and --tls-* are part of the security family: add security to --probes".into());
        }
        Ok(())
    }
}
