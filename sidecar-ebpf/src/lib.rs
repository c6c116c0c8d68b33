//! Kernel side of ebpf-sidecar: the compiled probe objects and the structs they share with
//! userspace.
//!
//! Each `bpf/<family>.bpf.c` is compiled by `build.rs` and embedded here. The structs mirror
//! `include/sidecar.h`; the `const` asserts at the bottom fail the build if the two drift apart.

use aya::Pod;

macro_rules! object {
    ($name:literal) => {
        aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/", $name, ".bpf.o"))
    };
}

/// Compiled object of each probe family, by family name.
pub mod objects {
    pub static PROCESS: &[u8] = object!("process");
    pub static SYSCALLS: &[u8] = object!("syscalls");
    pub static NET: &[u8] = object!("net");
}

pub const COMM_LEN: usize = 16;
pub const SYSCALL_SLOTS: usize = 512;
pub const HIST_BUCKETS: usize = 40;

pub const FILTER_NONE: u32 = 0;
pub const FILTER_CGROUP: u32 = 1;
pub const FILTER_PIDNS: u32 = 2;

/// `struct sidecar_target`: the single entry of every object's `sidecar_target` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target {
    pub cgroup_id: u64,
    pub pidns_dev: u64,
    pub pidns_ino: u64,
    pub mode: u32,
    pub self_tgid: u32,
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
}

// SAFETY: all of these are repr(C), made of integers and byte arrays with no implicit padding
// (checked below), so every bit pattern is a valid value.
unsafe impl Pod for Target {}
unsafe impl Pod for SyscallStats {}
unsafe impl Pod for SyscallErrorKey {}
unsafe impl Pod for CommKey {}
unsafe impl Pod for ExitKey {}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<Target>() == 32);
    assert!(offset_of!(Target, mode) == 24);
    assert!(offset_of!(Target, self_tgid) == 28);
    assert!(size_of::<SyscallStats>() == 8 * (2 + HIST_BUCKETS));
    assert!(size_of::<SyscallErrorKey>() == 8);
    assert!(size_of::<CommKey>() == 16);
    assert!(size_of::<ExitKey>() == 24);
    assert!(offset_of!(ExitKey, signal) == 20);
};

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
    }

    pub const HTTP_METHODS: usize = 8;
    pub const HTTP_DIRS: usize = 2;

    /// `struct net_http_key`
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct HttpKey {
        pub dir: u32,
        pub method: u32,
        pub status: u32,
        pub pad: u32,
    }

    // SAFETY: repr(C), integers and byte arrays only, no implicit padding (checked below).
    unsafe impl Pod for HttpKey {}
    unsafe impl Pod for PktStats {}
    unsafe impl Pod for PeerKey {}
    unsafe impl Pod for PeerStats {}
    unsafe impl Pod for ErrorKey {}

    const _: () = {
        use core::mem::{offset_of, size_of};
        assert!(size_of::<PktStats>() == 16);
        assert!(size_of::<PeerKey>() == 24);
        assert!(offset_of!(PeerKey, family) == 16);
        assert!(offset_of!(PeerKey, port) == 18);
        assert!(size_of::<PeerStats>() == 24);
        assert!(size_of::<ErrorKey>() == 8);
        assert!(size_of::<HttpKey>() == 16);
    };
}

/// Name of the map every object carries for the target filter.
pub const TARGET_MAP: &str = "sidecar_target";
