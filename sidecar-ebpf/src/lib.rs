//! Kernel side of ebpf-sidecar: the compiled probe objects and the structs they share with
//! userspace.
//!
//! Each `bpf/<family>.bpf.c` is compiled by `build.rs` and embedded here. The structs mirror
//! `include/sidecar.h`; [`MIRRORS`] lists them, and `sidecar/tests/mirrors.rs` compares each with
//! the struct in the objects' BTF (names, offsets, sizes).

use aya::Pod;

mod mirror;
use mirror::mirror;
pub use mirror::{Mirror, MirrorField};

/// The clang flags and command line of every BPF object (`clang.rs`, shared with the build
/// scripts).
pub mod clang {
    include!("../clang.rs");
}

macro_rules! object {
    ($name:literal) => {
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $name, ".bpf.o"))
    };
}

/// Compiled object of each probe family, by family name.
pub mod objects {
    pub static PROCESS: &[u8] = object!("process");
    pub static SYSCALLS: &[u8] = object!("syscalls");
    pub static SECURITY: &[u8] = object!("security");
    pub static CPU: &[u8] = object!("cpu");
    pub static PROFILE: &[u8] = object!("profile");
    pub static RUNTIMES: &[u8] = object!("runtimes");
    pub static DISK: &[u8] = object!("disk");
    pub static FILES: &[u8] = object!("files");
    pub static NET: &[u8] = object!("net");

    /// Every family's object, by family name.
    pub static ALL: &[(&str, &[u8])] = &[
        ("process", PROCESS),
        ("syscalls", SYSCALLS),
        ("security", SECURITY),
        ("cpu", CPU),
        ("profile", PROFILE),
        ("runtimes", RUNTIMES),
        ("disk", DISK),
        ("files", FILES),
        ("net", NET),
    ];

    /// Not a probe: `records.bpf.c`, the BTF of ring buffer records no family object has (for
    /// the mirror test only; never loaded).
    pub static RECORDS: &[u8] = object!("records");
}

pub const COMM_LEN: usize = 16;
pub const SYSCALL_SLOTS: usize = 512;
pub const HIST_BUCKETS: usize = 40;

pub const FILTER_NONE: u32 = 0;
pub const FILTER_CGROUP: u32 = 1;
pub const FILTER_PIDNS: u32 = 2;
pub const FILTER_TREE: u32 = 3;
/// `sidecar_tree`: tgid -> [`TreeEntry`].
pub const TREE_MAP: &str = "sidecar_tree";
pub const TREE_MAX: u32 = 16384;
/// `sidecar_slots`: slot -> [`Target`].
pub const SLOTS_MAP: &str = "sidecar_slots";
/// `sidecar_cgroups`: the cgroup id -> slot table ([`CgroupEntry`]).
pub const CGROUPS_MAP: &str = "sidecar_cgroups";
/// `sidecar_modes`: one [`Modes`].
pub const MODES_MAP: &str = "sidecar_modes";
/// Slots (targets) one kernel side can hold: the size of every per-target array of maps.
pub const MAX_SLOTS: u32 = 256;
pub const CGROUP_TABLE: u32 = 1024;
pub const CGROUP_PROBES: u32 = 8;
pub const CGROUP_TOMBSTONE: u64 = u64::MAX;
pub const SLOT_SYSCALL_LATENCY: u64 = 1 << 0;
pub const SLOT_SYSCALL_COUNTING: u64 = 1 << 1;
/// `--cpu-budget`: syscall latency timed for 1 call in 2^k (k in these bits; 0: every call).
pub const SLOT_SYSCALL_SAMPLE_SHIFT: u32 = 4;
pub const SLOT_SYSCALL_SAMPLE_MASK: u64 = 7 << SLOT_SYSCALL_SAMPLE_SHIFT;
/// `--cpu-budget`: the files family pauses.
pub const SLOT_FILES_OFF: u64 = 1 << 8;
/// `--cpu-budget`: the profiler keeps 1 sample in 2^k (k in these bits), each counting 2^k.
pub const SLOT_PROFILE_SHIFT: u32 = 9;
pub const SLOT_PROFILE_MASK: u64 = 3 << SLOT_PROFILE_SHIFT;
/// security's opt-in uprobes (`--capture-bash-readline`, `--tls-plaintext`).
pub const SLOT_BASH_READLINE: u64 = 1 << 12;
pub const SLOT_TLS_PLAINTEXT: u64 = 1 << 13;
/// net: HTTP/1.x read from TCP segments (`--net-http on`).
pub const SLOT_NET_HTTP_PACKETS: u64 = 1 << 20;
/// net: HTTP/1.x read from read/write syscalls (`--net-http syscalls`, or `--net-mode netns`).
pub const SLOT_NET_HTTP_SYSCALLS: u64 = 1 << 21;
/// net: `--http-paths`.
pub const SLOT_NET_HTTP_PATHS: u64 = 1 << 22;
/// `SIDECAR_SLOT_NET_REDIS`, `_POSTGRES`, `_MYSQL`: the protocols recognised besides HTTP/1
/// (`--protocols`).
pub const SLOT_NET_REDIS: u64 = 1 << 24;
pub const SLOT_NET_POSTGRES: u64 = 1 << 25;
pub const SLOT_NET_MYSQL: u64 = 1 << 26;
pub const SLOT_NET_PROTOS: u64 = SLOT_NET_REDIS | SLOT_NET_POSTGRES | SLOT_NET_MYSQL;
/// net: `--net-events`.
pub const SLOT_NET_EVENTS: u64 = 1 << 23;
/// net: HTTP/1.x inside TLS (uprobes on OpenSSL's SSL_read/SSL_write); bits 24-27 are the other
/// protocols'.
pub const SLOT_NET_HTTPS: u64 = 1 << 28;
/// runtimes: --runtime-calls, --http-paths.
pub const SLOT_RUNTIME_CALLS: u64 = 1 << 16;
pub const SLOT_RUNTIME_HTTP_PATHS: u64 = 1 << 17;

/// Where cgroup `id` starts its probe sequence in `sidecar_cgroups` (as `sidecar_cgroup_hash`).
pub fn cgroup_hash(id: u64) -> u32 {
    ((id.wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 40) as u32 & (CGROUP_TABLE - 1)
}

/// `struct sidecar_target`: one slot's entry of `sidecar_slots`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub cgroup_id: u64,
    pub pidns_dev: u64,
    pub pidns_ino: u64,
    pub mode: u32,
    pub self_tgid: u32,
    pub flags: u64,
}

/// `struct sidecar_cgroup_entry`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupEntry {
    pub cgroup_id: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// `struct sidecar_tree_entry`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeEntry {
    pub start: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// `struct sidecar_modes`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Modes {
    pub tree_slots: u32,
    pub pidns_slot: u32,
}

/// `struct syscall_stats`
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallStats {
    pub calls: u64,
    pub time_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}

impl Default for SyscallStats {
    fn default() -> Self {
        Self {
            calls: 0,
            time_ns: 0,
            hist: [0; HIST_BUCKETS],
        }
    }
}

/// `struct syscall_error_key`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyscallErrorKey {
    pub nr: u32,
    pub err: u32,
}

/// `struct comm_key`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CommKey {
    pub comm: [u8; COMM_LEN],
}

/// `struct exit_key`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ExitKey {
    pub comm: [u8; COMM_LEN],
    pub code: u32,
    pub signal: u32,
}

/// `enum process_counter`
pub mod process_counter {
    pub const FORKS: u32 = 0;
    pub const THREADS: u32 = 1;
    pub const OOM_KILLS: u32 = 2;
    pub const LOST_EXECS: u32 = 3;
    pub const LOST_EXITS: u32 = 4;
    pub const EXITS: u32 = 5;
    pub const EXECS: u32 = 6;
}

/// `enum syscalls_counter`
pub mod syscalls_counter {
    pub const LOST_STARTS: u32 = 0;
    pub const LOST_ERRORS: u32 = 1;
    pub const LOST_DENIED: u32 = 2;
}

pub const SEC_PATH_LEN: usize = 128;
pub const SEC_ARGV_LEN: usize = 256;
pub const SEC_PREFIXES: u32 = 16;
pub const SEC_PREFIX_LEN: usize = 64;
/// `enum security_kind` values are 1..SEC_KINDS.
pub const SEC_KINDS: u32 = 14;
/// `enum seccomp_act`: a seccomp_kill event's args[0].
pub const SECCOMP_ACT_TRAP: u64 = 1;
pub const SECCOMP_ACT_KILL: u64 = 2;

/// `struct security_event`
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SecurityEvent {
    pub ts_ns: u64,
    pub kind: u32,
    pub pid: u32,
    pub ns_pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub nr: u32,
    pub args: [u64; 4],
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u16,
    pub argv_len: u32,
    pub comm: [u8; COMM_LEN],
    pub pcomm: [u8; COMM_LEN],
    pub path: [u8; SEC_PATH_LEN],
    pub argv: [u8; SEC_ARGV_LEN],
}

/// `struct sec_prefix`
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SecPrefix {
    pub len: u32,
    pub bytes: [u8; SEC_PREFIX_LEN],
}

/// `enum security_hook`: which syscall-entry program reports a slot's syscalls.
pub const SEC_HOOK_TRACEPOINTS: u32 = 1;
pub const SEC_HOOK_RAW: u32 = 2;
pub const SEC_HOOK_DISPATCH: u32 = 3;

/// `struct security_config`: the single entry of a slot's `security_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecurityConfig {
    pub syscall_hook: u32,
    pub tls_sample_bytes: u32,
}

/// `struct cpu_hist_val`
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CpuHistVal {
    pub sum_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}

/// `enum cpu_hist` and `enum cpu_counter`
pub mod cpu {
    pub const HIST_SLICE: u32 = 0;
    pub const HIST_RUNQUEUE: u32 = 1;
    pub const HIST_OFF_SLEEPING: u32 = 2;
    pub const HIST_OFF_BLOCKED: u32 = 3;
    pub const SWITCH_VOLUNTARY: u32 = 0;
    pub const SWITCH_INVOLUNTARY: u32 = 1;
    pub const MIGRATIONS: u32 = 2;
    pub const LOST_COMMS: u32 = 3;
}

/// `struct profile_key`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProfileKey {
    pub pid: u32,
    pub generation: u32,
    pub user_stack: i32,
    pub kernel_stack: i32,
    pub comm: [u8; COMM_LEN],
}

/// `struct profile_cfg`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProfileCfg {
    pub pidns_dev: u64,
    pub pidns_ino: u64,
    pub generation: u32,
    pub pad: u32,
}

// SAFETY: all of these are repr(C), made of integers and byte arrays with no implicit padding
// (`MIRRORS`), so every bit pattern is a valid value.
unsafe impl Pod for Target {}
// SAFETY: repr(C), integers only, explicit padding.
unsafe impl Pod for CgroupEntry {}
// SAFETY: repr(C), integers only, explicit padding.
unsafe impl Pod for TreeEntry {}
// SAFETY: repr(C), integers only.
unsafe impl Pod for Modes {}
unsafe impl Pod for SyscallStats {}
unsafe impl Pod for SyscallErrorKey {}
unsafe impl Pod for CommKey {}
unsafe impl Pod for ExitKey {}
unsafe impl Pod for SecurityEvent {}
unsafe impl Pod for CpuHistVal {}
unsafe impl Pod for ProfileKey {}
unsafe impl Pod for ProfileCfg {}
unsafe impl Pod for SecPrefix {}
// SAFETY: repr(C), two u32.
unsafe impl Pod for SecurityConfig {}

/// Network family (`net.bpf.c`): shapes mirrored from the `net` section of `sidecar.h`.
pub mod net {
    use aya::Pod;

    pub const DIRS: usize = 2;
    pub const FAMILIES: usize = 3;
    pub const PROTOS: usize = 5;
    pub const PKT_SLOTS: usize = DIRS * FAMILIES * PROTOS;
    pub const PEERS_MAX: usize = 1024;
    pub const HIST_CONNECT: u32 = 0;
    pub const HIST_LIFETIME: u32 = 1;
    pub const ERR_CONNECT: u32 = 0;
    pub const ERR_BIND: u32 = 1;

    /// `struct net_pkt_stats`
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct PktStats {
        pub packets: u64,
        pub bytes: u64,
    }

    /// `struct net_peer_key`
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct PeerKey {
        pub addr: [u8; 16],
        pub family: u16,
        pub port: u16,
        pub pad: u32,
    }

    /// `struct net_peer_stats`
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct PeerStats {
        pub sent: u64,
        pub received: u64,
        pub closed: u64,
    }

    /// `struct net_error_key`
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct ErrorKey {
        pub kind: u32,
        pub err: u32,
    }

    /// `enum net_counter`
    pub mod counter {
        pub const CONN_ACTIVE: u32 = 0;
        pub const CONN_PASSIVE: u32 = 1;
        pub const RETRANSMITS: u32 = 2;
        pub const RESETS_SENT: u32 = 3;
        pub const RESETS_RECEIVED: u32 = 4;
        pub const UDP_DROPS: u32 = 5;
        pub const OTHER_SENT: u32 = 6;
        pub const OTHER_RECEIVED: u32 = 7;
        pub const OTHER_CLOSED: u32 = 8;
        pub const LOST_CONNS: u32 = 9;
        pub const LOST_KEYS: u32 = 10;
        /// First of the `enum net_http_untracked` counters (`HTTP_UNTRACKED + reason`).
        pub const HTTP_UNTRACKED: u32 = 11;
    }

    /// `enum net_http_untracked`, in order: why an HTTP connection stopped being followed.
    pub const HTTP_UNTRACKED_REASONS: [&str; 5] = ["gap", "head", "body", "pipeline", "midstream"];

    pub const HTTP_METHODS: usize = 8;
    pub const HTTP_DIRS: usize = 2;

    /// `struct net_http_key`
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct HttpKey {
        pub dir: u32,
        pub method: u32,
        pub status: u32,
        /// 1: read inside TLS (SSL_read/SSL_write), 0: plaintext.
        pub tls: u32,
    }

    pub const HTTP_PATH_LEN: usize = 48;

    /// `struct net_http_path_key` (`--http-paths`); an all-zero path is the overflow slot.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct HttpPathKey {
        pub dir: u32,
        pub method: u32,
        pub status: u32,
        pub tls: u32,
        pub path: [u8; HTTP_PATH_LEN],
    }

    /// `net_http_hists` holds (tls, direction, method): plaintext and TLS.
    pub const HTTP_TLS: usize = 2;

    pub const TLS_CONNS_MAX: usize = 4096;
    /// Values of `net_tls_conns` (`struct http_conn`, private to the kernel side; its size and
    /// these offsets are asserted in `net_tls.bpf.h`): the plaintext positions of each direction,
    /// which only move while the connection is used.
    pub const TLS_CONN_SIZE: usize = 552;
    pub const TLS_CONN_NEXT_IN: usize = 8;
    pub const TLS_CONN_NEXT_OUT: usize = 24;

    /// `struct net_tls_key`: an OpenSSL connection (`SSL *`) of a process (host pid).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct TlsKey {
        pub ssl: u64,
        pub tgid: u32,
        pub pad: u32,
    }

    // SAFETY: repr(C), integers and byte arrays only, no implicit padding (`MIRRORS`).
    unsafe impl Pod for HttpKey {}
    unsafe impl Pod for HttpPathKey {}
    unsafe impl Pod for TlsKey {}
    unsafe impl Pod for PktStats {}
    unsafe impl Pod for PeerKey {}
    unsafe impl Pod for PeerStats {}
    unsafe impl Pod for ErrorKey {}

    /// `enum net_proto`: the protocols with tables, in their index order (`proto - 2`).
    pub const PROTO_REDIS: u8 = 2;
    pub const PROTO_POSTGRES: u8 = 3;
    pub const PROTO_MYSQL: u8 = 4;
    pub const PROTO_TABLES: usize = 3;
    /// `enum net_proto_what`
    pub const PROTO_REQUESTS: u8 = 0;
    pub const PROTO_ERRORS: u8 = 1;
    pub const PROTO_TLS: u8 = 2;
    /// `enum net_proto_kind`, in order.
    pub const PROTO_KINDS: [&str; 8] = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "ROLLBACK", "other",
    ];
    pub const PROTO_NAME_LEN: usize = 24;
    /// `enum net_proto_untracked`, in order.
    pub const PROTO_UNTRACKED_REASONS: [&str; 6] = [
        "gap",
        "head",
        "steps",
        "pipeline",
        "midstream",
        "unsupported",
    ];

    /// `struct net_proto_key`
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct ProtoKey {
        pub proto: u8,
        pub dir: u8,
        pub what: u8,
        pub kind: u8,
        pub code: u32,
        pub name: [u8; PROTO_NAME_LEN],
    }
    // SAFETY: as below.
    unsafe impl Pod for ProtoKey {}

    // enum net_http_untracked fits in net_counters (NET_COUNTERS = 16)
    const _: () = assert!(counter::HTTP_UNTRACKED as usize + HTTP_UNTRACKED_REASONS.len() <= 16);
}

// ---- disk and files (include/sidecar.h, sections "disk" and "files") ----

/// `enum disk_op`
pub mod disk_op {
    pub const READ: u32 = 0;
    pub const WRITE: u32 = 1;
    pub const FLUSH: u32 = 2;
    pub const DISCARD: u32 = 3;
    pub const OTHER: u32 = 4;
}

/// `struct disk_io_key`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskIoKey {
    pub major: u32,
    pub minor: u32,
    pub op: u32,
    pub pad: u32,
}

/// `struct disk_io_stats`
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiskIoStats {
    pub requests: u64,
    pub bytes: u64,
    pub request_ns: u64,
    pub queue_ns: u64,
    /// Requests whose completion the tracepoint did not deliver (counted when found ended).
    pub untimed: u64,
    pub request_hist: [u64; HIST_BUCKETS],
    pub queue_hist: [u64; HIST_BUCKETS],
}

/// `enum disk_counter`
pub mod disk_counter {
    pub const LOST_REQUESTS: u32 = 0;
    pub const LOST_KEYS: u32 = 1;
}

pub const PATH_LEN: usize = 256;
pub const ERRNO_SLOTS: usize = 256;
pub const FILE_PATHS: usize = 4096;

/// `struct file_path`
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FilePath {
    pub path: [u8; PATH_LEN],
}

/// `struct file_io`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileIo {
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// `enum file_kind`
pub mod file_kind {
    pub const UNKNOWN_PATH: u32 = 0;
    pub const SOCKET: u32 = 1;
    pub const PIPE: u32 = 2;
    pub const TTY: u32 = 3;
    pub const CHAR: u32 = 4;
    pub const BLOCK: u32 = 5;
    pub const OTHER: u32 = 6;
    pub const UNMAPPED: u32 = 7;
    pub const KINDS: u32 = 8;
}

/// `struct open_error_key`
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpenErrorKey {
    pub path: [u8; PATH_LEN],
    pub err: u32,
    pub pad: u32,
}

/// `enum file_sync_call`
pub mod file_sync_call {
    pub const FSYNC: u32 = 0;
    pub const FDATASYNC: u32 = 1;
    pub const RANGE: u32 = 2;
    pub const CALLS: u32 = 3;
}

/// `struct file_sync_stats`
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileSyncStats {
    pub calls: u64,
    pub time_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}

/// `enum files_counter`
pub mod files_counter {
    pub const PAGE_CACHE_MISSES: u32 = 0;
    pub const LOST_OPEN_ERRORS: u32 = 1;
    pub const LOST_FDS: u32 = 2;
}

// SAFETY: repr(C), integers and byte arrays only, no implicit padding (`MIRRORS`).
unsafe impl Pod for DiskIoKey {}
unsafe impl Pod for DiskIoStats {}
unsafe impl Pod for FilePath {}
unsafe impl Pod for FileIo {}
unsafe impl Pod for OpenErrorKey {}
unsafe impl Pod for FileSyncStats {}

// runtimes: USDT specs and the maps of the runtime packs.

pub const USDT_MAX_ARGS: usize = 12;
pub const USDT_NO_ARG: u32 = 0xffff_ffff;
pub const RT_STR_LEN: usize = 64;

/// `enum usdt_arg_kind`
pub mod usdt_arg_kind {
    pub const CONST: u32 = 0;
    pub const REG: u32 = 1;
    pub const REG_DEREF: u32 = 2;
    pub const SIB: u32 = 3;
}

/// `struct usdt_arg`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsdtArg {
    pub val_off: u64,
    pub kind: u32,
    pub reg_off: u16,
    pub idx_reg_off: u16,
    pub scale_shift: u8,
    pub bitshift: u8,
    pub is_signed: u8,
    pub _pad: [u8; 5],
}

/// `struct usdt_spec`
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsdtSpec {
    pub args: [UsdtArg; USDT_MAX_ARGS],
    pub arg_cnt: u32,
    pub slot: u32,
    pub label_arg: u32,
    pub label2_arg: u32,
}

impl Default for UsdtSpec {
    fn default() -> Self {
        Self {
            args: [UsdtArg::default(); USDT_MAX_ARGS],
            arg_cnt: 0,
            slot: 0,
            label_arg: USDT_NO_ARG,
            label2_arg: USDT_NO_ARG,
        }
    }
}

/// `struct rt_key`
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RtKey {
    pub slot: u32,
    pub _pad: u32,
    pub label: u64,
}

/// `struct rt_hist`
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RtHist {
    pub count: u64,
    pub sum_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}

/// `struct rt_call_key`
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RtCallKey {
    pub slot: u32,
    pub _pad: u32,
    pub module: [u8; RT_STR_LEN],
    pub function: [u8; RT_STR_LEN],
}

/// `struct rt_config`: a target's entry of `rt_config` (runtimes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtConfig {
    pub pidns_dev: u64,
    pub pidns_ino: u64,
}

/// `enum runtimes_counter`
pub mod runtimes_counter {
    pub const LOST_KEYS: u32 = 0;
    pub const LOST_BEGINS: u32 = 1;
    pub const UNMATCHED_ENDS: u32 = 2;
    pub const BAD_SPECS: u32 = 3;
}

// SAFETY: repr(C), integers and byte arrays only, no implicit padding (`MIRRORS`).
unsafe impl Pod for UsdtArg {}
unsafe impl Pod for UsdtSpec {}
unsafe impl Pod for RtKey {}
unsafe impl Pod for RtHist {}
unsafe impl Pod for RtCallKey {}
unsafe impl Pod for RtConfig {}

/// The headers a user's custom probe is built with (`ebpf-sidecar custom headers DIR`).
pub mod headers {
    pub static SIDECAR_BPF_H: &str = include_str!("../include/sidecar.bpf.h");
    pub static SIDECAR_H: &str = include_str!("../include/sidecar.h");
    pub static USDT_BPF_H: &str = include_str!("../include/usdt.bpf.h");
    /// vmlinux.h of the kernel the sidecar was built against, gzipped (CO-RE relocates it).
    pub static VMLINUX_H_GZ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/vmlinux.h.gz"));
}

/// Network family, packet side (`include/net_pkt.bpf.h`, included by `net.bpf.c`): DNS, packet
/// capture, connection events. Shapes mirrored from the last `net` section of `sidecar.h`.
pub mod net_pkt {
    use aya::Pod;

    pub const DNS_QTYPES: usize = 11;
    pub const DNS_RCODES: usize = 7;
    pub const DNS_SLOTS: usize = DNS_QTYPES + DNS_RCODES;
    pub const PCAP_SNAP_MAX: u32 = 4096;

    /// `enum net_pkt_counter`
    pub mod counter {
        pub const PCAP_CAPTURED: u32 = 0;
        pub const PCAP_DROPPED: u32 = 1;
        pub const PCAP_RATE_DROPPED: u32 = 2;
        pub const EVENTS_LOST: u32 = 3;
        pub const DNS_MALFORMED: u32 = 4;
    }

    /// `enum net_conn_event_kind`
    pub const EV_CONNECT: u16 = 0;
    pub const EV_ACCEPT: u16 = 1;
    pub const EV_CLOSE: u16 = 2;

    /// `struct net_pcap_cfg`
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct PcapCfg {
        pub enabled: u32,
        pub snaplen: u32,
        pub max_pps: u32,
        pub pad: u32,
    }

    /// `struct net_pcap_hdr`
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct PcapHdr {
        pub ts_ns: u64,
        pub len: u32,
        pub caplen: u32,
        pub dir: u32,
        pub pad: u32,
    }

    /// `struct net_conn_event`
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct ConnEvent {
        pub ts_ns: u64,
        pub duration_ns: u64,
        pub sent: u64,
        pub received: u64,
        pub laddr: [u8; 16],
        pub raddr: [u8; 16],
        pub pid: u32,
        pub family: u16,
        pub lport: u16,
        pub rport: u16,
        pub kind: u16,
        pub pad: u32,
        pub comm: [u8; 16],
    }

    // SAFETY: repr(C), integers and byte arrays only, no implicit padding (`MIRRORS`).
    unsafe impl Pod for PcapCfg {}
    unsafe impl Pod for PcapHdr {}
    unsafe impl Pod for ConnEvent {}
}
/// Opt-in TLS plaintext counting (security family): `struct tls_bytes_key`.
pub const TLS_KEYS_MAX: u32 = 1024;
pub const TLS_READ: u32 = 0;
pub const TLS_WRITE: u32 = 1;
/// Attach-cookie bit of the `_ex` variants (length written through a `size_t *`).
pub const TLS_EX: u64 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TlsBytesKey {
    pub dir: u32,
    pub pad: u32,
    pub comm: [u8; COMM_LEN],
}

// SAFETY: repr(C), integers and a byte array, no implicit padding (`MIRRORS`).
unsafe impl Pod for TlsBytesKey {}

// runtimes (2): Node.js HTTP by method and path.

pub const RT_PATH_LEN: usize = 64;

/// `struct rt_http_key`
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtHttpKey {
    pub method: u32,
    /// 0: served by the target; 1: sent by it (node <= 18 USDT http__client__*).
    pub client: u32,
    pub path: [u8; RT_PATH_LEN],
}

// SAFETY: repr(C), integers and a byte array, no implicit padding (`MIRRORS`).
unsafe impl Pod for RtHttpKey {}

/// Every Rust mirror of a struct in `include/sidecar.h`, checked against the objects' BTF by
/// `sidecar/tests/mirrors.rs`. One line per mirror; a Rust field named differently from its C
/// member says so with `rust_name as "c_name"`.
#[rustfmt::skip]
pub const MIRRORS: &[Mirror] = &[
    mirror!(Target => "sidecar_target" { cgroup_id, pidns_dev, pidns_ino, mode, self_tgid, flags }),
    mirror!(CgroupEntry => "sidecar_cgroup_entry" { cgroup_id, slot, _pad }),
    mirror!(TreeEntry => "sidecar_tree_entry" { start, slot, _pad }),
    mirror!(Modes => "sidecar_modes" { tree_slots, pidns_slot }),
    mirror!(SyscallStats => "syscall_stats" { calls, time_ns, hist }),
    mirror!(SyscallErrorKey => "syscall_error_key" { nr, err }),
    mirror!(CommKey => "comm_key" { comm }),
    mirror!(ExitKey => "exit_key" { comm, code, signal }),
    mirror!(SecurityEvent => "security_event" { ts_ns, kind, pid, ns_pid, ppid, uid, nr, args, addr, port, family, argv_len, comm, pcomm, path, argv }),
    mirror!(SecPrefix => "sec_prefix" { len, bytes }),
    mirror!(SecurityConfig => "security_config" { syscall_hook, tls_sample_bytes }),
    mirror!(CpuHistVal => "cpu_hist_val" { sum_ns, hist }),
    mirror!(ProfileKey => "profile_key" { pid, generation, user_stack, kernel_stack, comm }),
    mirror!(ProfileCfg => "profile_cfg" { pidns_dev, pidns_ino, generation, pad }),
    mirror!(DiskIoKey => "disk_io_key" { major, minor, op, pad }),
    mirror!(DiskIoStats => "disk_io_stats" { requests, bytes, request_ns, queue_ns, untimed, request_hist, queue_hist }),
    mirror!(FilePath => "file_path" { path }),
    mirror!(FileIo => "file_io" { read_bytes, write_bytes }),
    mirror!(OpenErrorKey => "open_error_key" { path, err, pad }),
    mirror!(FileSyncStats => "file_sync_stats" { calls, time_ns, hist }),
    mirror!(UsdtArg => "usdt_arg" { val_off, kind, reg_off, idx_reg_off, scale_shift, bitshift, is_signed, _pad }),
    mirror!(UsdtSpec => "usdt_spec" { args, arg_cnt, slot, label_arg, label2_arg }),
    mirror!(RtKey => "rt_key" { slot, _pad, label }),
    mirror!(RtHist => "rt_hist" { count, sum_ns, hist }),
    mirror!(RtCallKey => "rt_call_key" { slot, _pad, module, function }),
    mirror!(RtConfig => "rt_config" { pidns_dev, pidns_ino }),
    mirror!(RtHttpKey => "rt_http_key" { method, client, path }),
    mirror!(TlsBytesKey => "tls_bytes_key" { dir, pad, comm }),
    mirror!(net::PktStats => "net_pkt_stats" { packets, bytes }),
    mirror!(net::PeerKey => "net_peer_key" { addr, family, port, pad }),
    mirror!(net::PeerStats => "net_peer_stats" { sent, received, closed }),
    mirror!(net::ErrorKey => "net_error_key" { kind, err }),
    mirror!(net::HttpKey => "net_http_key" { dir, method, status, tls }),
    mirror!(net::HttpPathKey => "net_http_path_key" { dir, method, status, tls, path }),
    mirror!(net::ProtoKey => "net_proto_key" { proto, dir, what, kind, code, name }),
    mirror!(net::TlsKey => "net_tls_key" { ssl, tgid, pad }),
    mirror!(net_pkt::PcapCfg => "net_pcap_cfg" { enabled, snaplen, max_pps, pad }),
    mirror!(net_pkt::PcapHdr => "net_pcap_hdr" { ts_ns, len, caplen, dir, pad }),
    mirror!(net_pkt::ConnEvent => "net_conn_event" { ts_ns, duration_ns, sent, received, laddr, raddr, pid, family, lport, rport, kind, pad, comm }),
];

// Evaluated even if nothing reads MIRRORS: the layout checks of `mirror!` run at every build.
const _: &[Mirror] = MIRRORS;

#[cfg(test)]
mod tests {
    #[test]
    fn the_user_command_is_the_recipe() {
        let flags = super::clang::BPF_CFLAGS.join(" ");
        assert_eq!(
            super::clang::USER_COMMAND,
            format!("clang {flags} -I DIR -c probe.bpf.c -o probe.bpf.o")
        );
    }
}
