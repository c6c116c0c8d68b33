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
    pub static RUNTIMES: &[u8] = object!("runtimes");
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

/// Name of the map every object carries for the target filter.
pub const TARGET_MAP: &str = "sidecar_target";

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

/// `enum runtimes_counter`
pub mod runtimes_counter {
    pub const LOST_KEYS: u32 = 0;
    pub const LOST_BEGINS: u32 = 1;
    pub const UNMATCHED_ENDS: u32 = 2;
    pub const BAD_SPECS: u32 = 3;
}

// SAFETY: repr(C), integers and byte arrays only, no implicit padding (checked below).
unsafe impl Pod for UsdtArg {}
unsafe impl Pod for UsdtSpec {}
unsafe impl Pod for RtKey {}
unsafe impl Pod for RtHist {}
unsafe impl Pod for RtCallKey {}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<UsdtArg>() == 24);
    assert!(offset_of!(UsdtArg, reg_off) == 12);
    assert!(offset_of!(UsdtArg, bitshift) == 17);
    assert!(size_of::<UsdtSpec>() == 24 * USDT_MAX_ARGS + 16);
    assert!(offset_of!(UsdtSpec, label2_arg) == 24 * USDT_MAX_ARGS + 12);
    assert!(size_of::<RtKey>() == 16);
    assert!(size_of::<RtHist>() == 8 * (2 + HIST_BUCKETS));
    assert!(size_of::<RtCallKey>() == 8 + 2 * RT_STR_LEN);
};
