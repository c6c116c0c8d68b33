//! Probe families. Each owns one compiled object (`sidecar-ebpf/bpf/<family>.bpf.c`), attaches
//! its programs, and turns its maps into metrics at scrape time.
//!
//! A family that cannot load is reported (`ebpf_sidecar_probe_up{probe}=0` and a log line with
//! the reason) and skipped; the others keep working.

pub mod cpu;
pub mod custom;
pub mod disk;
pub mod dispatch;
pub mod files;
pub mod net;
pub mod object;
pub mod process;
pub mod profile;
pub mod registry;
pub mod runtimes;
pub mod security;
pub mod syscalls;

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::DescriptorEncoder;

pub use object::{LoadOpts, Object, ProbeError, ProgramStats};

use crate::metrics::Metric;
use crate::monitored::Resolved;

/// What a family may look at while encoding.
pub struct EncodeCtx<'a> {
    pub target: Option<&'a Resolved>,
    pub options: &'a Options,
}

/// Settings shared by the families.
#[derive(Clone, Debug)]
pub struct Options {
    /// Label values kept per label (comm, …) before the rest go to `other`.
    pub top_n: usize,
    /// Label the syscall latency histogram by syscall.
    pub per_syscall_histograms: bool,
    /// Measure each syscall's latency (time and histogram), not only count calls and errors.
    pub syscall_latency: bool,
    /// `--syscall-latency-sample`: log2 of N (0: every call).
    pub syscall_sample_shift: u32,
    /// Path prefixes whose opening for write is a security event (empty: the defaults).
    pub sensitive_paths: Vec<String>,
    /// Profiler samples per second per CPU.
    pub profile_hz: u64,
    /// net: recognise HTTP/1.x in read/write payloads (one more program on every syscall).
    pub net_http: bool,
    /// net: read HTTP payloads from read/write syscalls instead of TCP segments (`--net-http
    /// syscalls`: for targets without a cgroup v2 to attach packet programs to).
    pub net_http_syscalls: bool,
    /// net: the protocols besides HTTP/1 recognised in the target's TCP segments (`--protocols`;
    /// SIDECAR_SLOT_NET_REDIS/_POSTGRES/_MYSQL bits).
    pub protocols: u64,
    /// net: HTTP/1.x inside TLS too (uprobes on OpenSSL in the target's processes), with
    /// `net_http` (`--net-https`).
    pub net_https: bool,
    /// net and runtimes: label HTTP metrics with the normalised path (`crate::http_path`), top-N.
    pub http_paths: bool,
    /// runtimes: count function calls by module:function (costly: every call fires a probe).
    pub runtime_calls: bool,
    /// runtimes: in `run` mode, the command, so its runtime is attached before it starts.
    pub run_program: Option<std::path::PathBuf>,
    /// net: where the packet programs sit (cgroup_skb on the target's cgroup, or tc in its netns).
    pub net_mode: NetMode,
    /// net: serve /debug/pcap (packet payloads leave the kernel).
    pub allow_pcap: bool,
    /// net: connect/accept/close events on the event stream.
    pub net_events: bool,
    /// security, opt-in: capture the lines bash reads (uretprobe on readline).
    pub bash_readline: bool,
    /// security, opt-in: count TLS plaintext bytes (uprobes on SSL_read/SSL_write).
    pub tls_plaintext: bool,
    /// security, opt-in: first bytes of each TLS read/write as a tls_sample event (0: none).
    pub tls_sample_bytes: u32,
    /// Serve TLS samples unredacted.
    pub tls_samples_raw: bool,
    /// runtimes: USDT metrics declared in YAML (`--config`, `crate::usdt::config`).
    pub usdt_config: Option<std::path::PathBuf>,
    /// `run --seccomp-out`: where the syscalls family writes the advised profile at the end.
    pub seccomp_out: Option<std::path::PathBuf>,
    /// `run --seccomp-report`: where it writes the advised profile compared with the enforced
    /// one (`/seccomp?against=enforced`) at the end.
    pub seccomp_report: Option<std::path::PathBuf>,
    /// The syscalls family's jump slots for security's and net's syscall handlers (filled at
    /// load, see `dispatch`).
    pub syscall_dispatch: dispatch::SyscallDispatch,
    /// Where the families' objects live (shared set or private) and this sidecar's slot.
    pub kernel_side: crate::kernel_side::Handle,
}

/// net: where the packet programs sit (`--net-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetMode {
    /// cgroup_skb on the target's cgroup v2: the target's own sockets.
    #[default]
    Cgroup,
    /// tc on every interface of the target's network namespace: everything crossing them.
    Netns,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            top_n: 20,
            per_syscall_histograms: false,
            syscall_latency: true,
            syscall_sample_shift: 0,
            sensitive_paths: Vec::new(),
            profile_hz: 49,
            net_http: true,
            net_http_syscalls: false,
            protocols: sidecar_ebpf::SLOT_NET_PROTOS,
            net_https: true,
            http_paths: false,
            runtime_calls: false,
            run_program: None,
            net_mode: NetMode::Cgroup,
            allow_pcap: false,
            net_events: false,
            bash_readline: false,
            tls_plaintext: false,
            tls_sample_bytes: 0,
            tls_samples_raw: false,
            usdt_config: None,
            seccomp_out: None,
            seccomp_report: None,
            syscall_dispatch: dispatch::SyscallDispatch::default(),
            kernel_side: crate::kernel_side::Handle::default(),
        }
    }
}

/// What every loaded family is to the rest of the sidecar. The exporter, the server and `app`
/// know families only through this trait and [`Family`].
pub trait Probe: Send + Sync {
    fn name(&self) -> &'static str;
    fn object(&self) -> &Object;
    /// The target was found, changed (a restarted container has a new cgroup) or went away
    /// (`None`). Called once right after load, then by the target watcher. The default points the
    /// kernel filter at it; families with per-cgroup or per-netns attachments re-attach here.
    fn on_target(&self, target: Option<&Resolved>) -> Result<(), ProbeError> {
        self.object().set_target(target.map(|t| &t.filter))
    }
    /// Once, right before the sidecar drops its capabilities, with the target as known then
    /// (for `run`, its command has just started): read what only the start-up capabilities can
    /// (the syscalls family reads the target's seccomp filters).
    fn before_dropping_capabilities(&self, _target: Option<&Resolved>) {}
    /// Write this family's metrics (declared in its [`Family::metrics`]), reading its maps now.
    fn encode(&self, ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result;
    /// Start handing this family's events (if it has any) to `sink`. Called once, after the
    /// capabilities were dropped, so reader threads start without any.
    fn start_events(&self, _sink: crate::events::EventSink) -> Result<(), ProbeError> {
        Ok(())
    }
    /// Hand over the events still waiting in the kernel now (before `run` writes its outputs).
    fn flush_events(&self) {}
    /// The HTTP routes this family serves (the paths listed in [`Family::routes`]); merged into
    /// the server's router, behind the same authentication.
    fn routes(self: Arc<Self>) -> Option<axum::Router> {
        None
    }
    /// At the end of `run`, write the outputs this family was asked for (e.g. --seccomp-out).
    fn finish(&self) -> Result<(), ProbeError> {
        Ok(())
    }
    /// Events the kernel side could not record (full tables, ring buffer overruns).
    fn lost_events(&self) -> u64;
    /// The syscalls the target has made so far, for a family that counts them (the CPU
    /// budget's measure of how busy the target is).
    fn target_calls(&self) -> Option<u64> {
        None
    }
}

/// A family's command-line flags (a clap `Args` struct, flattened into the CLI) and how they
/// become settings. Checks that involve other flags are made here, so a bad combination stops
/// the start with exit status 2.
pub trait FamilyArgs: clap::Args + clap::FromArgMatches {
    fn apply(self, setup: &mut Setup<'_>) -> Result<(), String>;
}

/// What a family's flags may change: the settings, and the list of families to load.
pub struct Setup<'a> {
    pub options: &'a mut Options,
    pub probes: &'a mut Vec<String>,
    /// `run -- CMD` (the sidecar makes the target itself).
    pub run: bool,
}

/// A family without flags of its own.
#[derive(Debug, clap::Args)]
pub struct NoArgs {}

impl FamilyArgs for NoArgs {
    fn apply(self, _: &mut Setup<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// A family the sidecar knows, and how to load it.
pub struct Family {
    pub name: &'static str,
    pub about: &'static str,
    /// Capabilities, beyond loading tracing programs (CAP_BPF + CAP_PERFMON), needed to attach.
    pub needs: &'static [caps::Capability],
    /// Capabilities still needed after attaching (e.g. to re-attach when the target restarts).
    pub keeps: fn(&Options) -> Vec<caps::Capability>,
    pub load: fn(&Options) -> Result<Arc<dyn Probe>, ProbeError>,
    /// Every metric the family writes.
    pub metrics: &'static [Metric],
    /// HTTP paths the family serves, each with the answer given when the family is not loaded.
    pub routes: &'static [(&'static str, &'static str)],
    /// Adds the family's flags to the command line.
    pub args: fn(clap::Command) -> clap::Command,
    /// Turns the parsed flags into settings (and checks them).
    pub configure: fn(&clap::ArgMatches, &mut Setup<'_>) -> Result<(), String>,
}
