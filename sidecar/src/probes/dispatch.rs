//! The syscalls family's jump slots for other families' raw `sys_enter`/`sys_exit` handlers.
//!
//! Every program or perf handler on the `sys_enter`/`sys_exit` tracepoints is one more callback
//! on every syscall of the host: ~40 ns per call each on the CI VM (`bench foundation`, second
//! table). With latency on, the syscalls family already runs a program at both; each ends with a
//! tail call into a one-entry program array, where security's `sys_enter` handler and net's
//! `sys_exit` handler go instead of their per-syscall tracepoints. They then run for the target's
//! syscalls only (the jump comes after the syscalls family's filter) and the host's other
//! syscalls pay nothing for them.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use aya::maps::{MapData, ProgramArray};
use aya::programs::ProgramFd;

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
    enter: Option<ProgramArray<MapData>>,
    exit: Option<ProgramArray<MapData>>,
    /// Filled arrays. A program array is emptied by the kernel when its last user-space
    /// reference goes, so they are kept for the life of the process.
    taken: Vec<ProgramArray<MapData>>,
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

    /// The syscalls family's arrays, once its programs are attached.
    pub fn offer(&self, enter: ProgramArray<MapData>, exit: ProgramArray<MapData>) {
        let mut s = self.slots();
        s.enter = Some(enter);
        s.exit = Some(exit);
    }

    /// Whether the slot of `side` is there and free.
    pub fn available(&self, side: Side) -> bool {
        let s = self.slots();
        match side {
            Side::Enter => s.enter.is_some(),
            Side::Exit => s.exit.is_some(),
        }
    }

    /// Put `program` in the slot of `side`. Err: no free slot, or the kernel refused the program
    /// (the caller attaches it on its own then).
    pub fn take(&self, side: Side, program: &ProgramFd) -> Result<(), String> {
        let mut s = self.slots();
        let slot = match side {
            Side::Enter => &mut s.enter,
            Side::Exit => &mut s.exit,
        };
        let Some(mut arr) = slot.take() else {
            return Err(format!("no free {side:?} slot"));
        };
        match arr.set(0, program, 0) {
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
