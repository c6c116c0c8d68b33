//! The syscalls family's jump slots for other families' raw `sys_enter`/`sys_exit` handlers.
//!
//! Every program or perf handler on the `sys_enter`/`sys_exit` tracepoints is one more callback
//! on every syscall of the host: ~40 ns per call each on the CI VM (`bench foundation`, second
//! table). With latency on, the syscalls family already runs a program at both; each ends with a
//! tail call into a one-entry program array, where security's `sys_enter` handler and net's
//! `sys_exit` handler go instead of their per-syscall tracepoints. They then run for the target's
//! syscalls only (the jump comes after the syscalls family's filter) and the host's other
//! syscalls pay nothing for them.
//!
//! On a shared kernel side the arrays are pinned with the set and hold one handler for every
//! sidecar: the first sidecar that fills an entry fills it for all (the syscalls programs jump
//! for every slot, the handler finds its slot again), and a later one finds its handler there
//! already ([`SyscallDispatch::take`] is then done). A sidecar counting only, or without the
//! syscalls family, still jumps from the set's `sys_enter`/`sys_exit` when an earlier sidecar
//! attached them ([`SyscallDispatch::adopt_pinned`]): the handler must run one way only.

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use aya::maps::{Map, MapData, ProgramArray};
use aya::programs::ProgramFd;

use crate::kernel_side::Handle as KsHandle;

/// The syscalls family's name, programs and arrays (pins of a shared set).
const FAMILY: &str = "syscalls";
const PROGRAMS: [&str; 2] = ["sys_enter", "sys_exit"];
const ARRAYS: [&str; 2] = ["syscall_hooks_enter", "syscall_hooks_exit"];

/// Which end of a syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Enter,
    Exit,
}

/// Shared by every family's [`super::Options`]; empty until the syscalls family offers its
/// slots (it loads before security and net in `FAMILIES`).
#[derive(Clone, Default)]
pub struct SyscallDispatch(Arc<Mutex<Slots>>);

#[derive(Default)]
struct Slots {
    enter: Option<Map>,
    exit: Option<Map>,
    /// Filled arrays. A program array is emptied by the kernel when its last user-space
    /// reference goes, so they are kept for the life of the process (a shared set's pins are
    /// such references too).
    taken: Vec<Map>,
    /// Whether arrays were offered (by the syscalls family or from the set's pins).
    offered: bool,
}

impl fmt::Debug for SyscallDispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.slots();
        f.debug_struct("SyscallDispatch")
            .field("enter", &s.enter.is_some())
            .field("exit", &s.exit.is_some())
            .field("taken", &s.taken.len())
            .finish()
    }
}

impl SyscallDispatch {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The syscalls family's arrays (`syscall_hooks_enter`, `syscall_hooks_exit`), once its
    /// programs are attached. Err: one is not a program array.
    pub fn offer(&self, enter: Map, exit: Map) -> Result<(), String> {
        for m in [&enter, &exit] {
            ProgramArray::try_from(m).map_err(|e| e.to_string())?;
        }
        let mut s = self.slots();
        s.enter = Some(enter);
        s.exit = Some(exit);
        s.offered = true;
        Ok(())
    }

    /// Shared set, nothing offered (this sidecar counts only, or has no syscalls family): when
    /// the set's `sys_enter` and `sys_exit` are attached (an earlier sidecar's latency mode, for
    /// the set's life), offer their pinned arrays, so that a handler another sidecar put there
    /// is found there and not attached a second way.
    pub fn adopt_pinned(&self, ks: &KsHandle) {
        let mut s = self.slots();
        if s.offered {
            return;
        }
        let attached = |p: &str| ks.link_pin(FAMILY, p, 0).is_some_and(|l| l.exists());
        if !PROGRAMS.iter().all(|p| attached(p)) {
            return;
        }
        let open = |name: &str| -> Result<Map, String> {
            let pin = ks
                .map_pin(FAMILY, name)
                .ok_or_else(|| "not on a shared set".to_string())?;
            let data = MapData::from_pin(&pin).map_err(|e| format!("{}: {e}", pin.display()))?;
            let map = Map::from_map_data(data).map_err(|e| e.to_string())?;
            ProgramArray::try_from(&map).map_err(|e| format!("{name}: {e}"))?;
            Ok(map)
        };
        match (open(ARRAYS[0]), open(ARRAYS[1])) {
            (Ok(enter), Ok(exit)) => {
                s.enter = Some(enter);
                s.exit = Some(exit);
                s.offered = true;
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("the shared set's syscall jump slots: {e}")
            }
        }
    }

    /// Whether the slot of `side` is there and free.
    pub fn available(&self, side: Side) -> bool {
        let s = self.slots();
        match side {
            Side::Enter => s.enter.is_some(),
            Side::Exit => s.exit.is_some(),
        }
    }

    /// Shared set: the slot of `side` holds `program` already (an earlier sidecar's copy, which
    /// runs for every slot): mark it taken and say so, so that the caller loads no copy of its
    /// own. False: empty, another program, or nothing offered.
    pub fn take_if_held(&self, side: Side, program: &str) -> bool {
        let mut s = self.slots();
        let slot = match side {
            Side::Enter => &mut s.enter,
            Side::Exit => &mut s.exit,
        };
        let held = match slot.as_ref() {
            Some(Map::ProgramArray(d)) => lookup_prog_id(d.fd().as_fd()),
            _ => return false,
        };
        let Ok(Some(id)) = held else {
            return false;
        };
        let theirs = prog_fd_by_id(id).and_then(|fd| prog_name(fd.as_fd()));
        // The kernel keeps the first 15 bytes of a program's name.
        let ours: String = program.chars().take(15).collect();
        if !theirs.is_ok_and(|t| t == ours) {
            return false;
        }
        if let Some(arr) = slot.take() {
            s.taken.push(arr);
        }
        true
    }

    /// Put `program` in the slot of `side`; done already when the slot holds a program of the
    /// same name (a shared set's: an earlier sidecar's copy of this handler, which runs for
    /// every slot). Err: no free slot, one holding another program, or the kernel refused the
    /// program (the caller attaches it on its own then).
    pub fn take(&self, side: Side, program: &ProgramFd) -> Result<(), String> {
        let mut s = self.slots();
        let slot = match side {
            Side::Enter => &mut s.enter,
            Side::Exit => &mut s.exit,
        };
        let Some(mut arr) = slot.take() else {
            return Err(format!("no free {side:?} slot"));
        };
        let held = match &arr {
            Map::ProgramArray(d) => lookup_prog_id(d.fd().as_fd()),
            _ => Ok(None), // offered as a program array: set() below says what is wrong
        };
        if let Ok(Some(id)) = held {
            let ours = prog_name(program.as_fd());
            let theirs = prog_fd_by_id(id).and_then(|fd| prog_name(fd.as_fd()));
            return match (ours, theirs) {
                (Ok(a), Ok(b)) if a == b => {
                    s.taken.push(arr);
                    Ok(())
                }
                (Ok(_), Ok(b)) => Err(format!("the {side:?} slot holds {b}")),
                (Err(e), _) | (_, Err(e)) => Err(format!("the {side:?} slot is taken: {e}")),
            };
        }
        let set = ProgramArray::try_from(&mut arr).and_then(|mut a| a.set(0, program, 0));
        match set {
            Ok(()) => {
                s.taken.push(arr);
                Ok(())
            }
            Err(e) => {
                *slot = Some(arr);
                Err(e.to_string())
            }
        }
    }
}

// The bpf(2) commands aya 0.14 does not expose for this (`struct bpf_attr` prefixes).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised prefix of `union bpf_attr` for `cmd` and outlives
    // the call; every pointer in it points at memory that does too.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// The id of the program at index 0 of a program array (None: empty).
fn lookup_prog_id(map: BorrowedFd<'_>) -> std::io::Result<Option<u32>> {
    #[repr(C)]
    struct Elem {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let key = 0u32;
    let mut id = 0u32;
    let mut attr = Elem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: &mut id as *mut u32 as u64,
        flags: 0,
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(Some(id)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn prog_fd_by_id(id: u32) -> std::io::Result<OwnedFd> {
    #[repr(C)]
    struct GetId {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = GetId {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel just returned this new fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A loaded program's name as the kernel keeps it (at most 15 bytes).
fn prog_name(prog: BorrowedFd<'_>) -> std::io::Result<String> {
    /// `struct bpf_prog_info` up to `name` (the kernel fills as much as it is given).
    #[repr(C)]
    #[derive(Default)]
    struct Info {
        prog_type: u32,
        id: u32,
        tag: [u8; 8],
        jited_prog_len: u32,
        xlated_prog_len: u32,
        jited_prog_insns: u64,
        xlated_prog_insns: u64,
        load_time: u64,
        created_by_uid: u32,
        nr_map_ids: u32,
        map_ids: u64,
        name: [u8; 16],
    }
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = Info::default();
    let mut attr = GetInfo {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: std::mem::size_of::<Info>() as u32,
        info: &mut info as *mut Info as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let end = info.name.iter().position(|b| *b == 0).unwrap_or(16);
    Ok(String::from_utf8_lossy(&info.name[..end]).into_owned())
}
