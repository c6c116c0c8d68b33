//! Attach a loaded uprobe program to a file offset, with a USDT semaphore and a cookie.
//!
//! aya 0.14's `UProbe::attach` takes an offset and a cookie but no `ref_ctr_offset`, so we open
//! the uprobe perf event ourselves: the kernel then increments the semaphore in every process
//! that maps the file, now and later, and decrements it when the event closes — no writes into
//! target memory, nothing to undo if the sidecar dies. The program is linked to the event with
//! `BPF_LINK_CREATE` (attach type `BPF_PERF_EVENT`), which also carries the cookie.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

/// An attachment: closing it (drop) detaches the program and releases the semaphore.
#[derive(Debug)]
pub struct Link {
    _link: OwnedFd,
    _event: OwnedFd,
}

const BPF_OBJ_PIN: libc::c_long = 6;

impl Link {
    /// Pin the link at `path` on bpffs: it stays attached (its perf event, and with it the
    /// semaphore, too) until the pin is removed, whoever holds or drops this handle. EEXIST
    /// when something is pinned there already.
    pub fn pin(&self, path: &Path) -> io::Result<()> {
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
        // union bpf_attr, obj_pin: pathname, bpf_fd, file_flags.
        let mut attr = [0u8; 16];
        attr[0..8].copy_from_slice(&(cpath.as_ptr() as u64).to_ne_bytes());
        attr[8..12].copy_from_slice(&(self._link.as_raw_fd() as u32).to_ne_bytes());
        // SAFETY: attr is a zeroed bpf_attr prefix of the size we pass; cpath outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_OBJ_PIN,
                attr.as_ptr(),
                attr.len() as libc::c_uint,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn uprobe_pmu_type() -> io::Result<u32> {
    static TYPE: OnceLock<Result<u32, String>> = OnceLock::new();
    TYPE.get_or_init(|| {
        let s = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type")
            .map_err(|e| format!("/sys/bus/event_source/devices/uprobe/type: {e}"))?;
        s.trim()
            .parse()
            .map_err(|e| format!("uprobe PMU type: {e}"))
    })
    .clone()
    .map_err(io::Error::other)
}

const PERF_ATTR_SIZE: usize = 128;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PERF_EVENT: u32 = 41;

/// Attach `prog` at `offset` of the file at `path`, for process `pid` or, with -1, for all
/// processes (the BPF program filters the target). `ref_ctr_offset` is the semaphore's file
/// offset (0: none).
pub fn attach_uprobe(
    pid: i32,
    prog: BorrowedFd<'_>,
    path: &Path,
    offset: u64,
    ref_ctr_offset: u64,
    retprobe: bool,
    cookie: u64,
) -> io::Result<Link> {
    let ty = uprobe_pmu_type()?;
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // struct perf_event_attr, written by field offset (the libc crate does not define it).
    let mut attr = [0u8; PERF_ATTR_SIZE];
    let put32 = |a: &mut [u8], at: usize, v: u32| a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 = |a: &mut [u8], at: usize, v: u64| a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    put32(&mut attr, 0, ty); // type
    put32(&mut attr, 4, PERF_ATTR_SIZE as u32); // size
    // config: bit 0 = return probe, bits 32-63 = ref_ctr_offset (the uprobe PMU's format).
    put64(&mut attr, 8, u64::from(retprobe) | (ref_ctr_offset << 32));
    put64(&mut attr, 56, cpath.as_ptr() as u64); // config1 = uprobe_path
    put64(&mut attr, 64, offset); // config2 = probe_offset
    // SAFETY: attr is a zeroed perf_event_attr of the declared size; cpath outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            pid as libc::pid_t,
            // libbpf's convention: any CPU for one process, CPU 0 (meaning all) for every process.
            if pid == -1 { 0 } else { -1 } as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd and nothing else owns it.
    let event = unsafe { OwnedFd::from_raw_fd(fd as i32) };

    // union bpf_attr, link_create: prog_fd, target_fd, attach_type, flags, perf_event.bpf_cookie.
    let mut battr = [0u8; 64];
    put32(&mut battr, 0, prog.as_raw_fd() as u32);
    put32(&mut battr, 4, event.as_raw_fd() as u32);
    put32(&mut battr, 8, BPF_PERF_EVENT);
    put64(&mut battr, 16, cookie);
    // SAFETY: battr is a zeroed bpf_attr prefix of the size we pass.
    let lfd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            battr.as_ptr(),
            battr.len() as libc::c_uint,
        )
    };
    if lfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let link = unsafe { OwnedFd::from_raw_fd(lfd as i32) };
    Ok(Link {
        _link: link,
        _event: event,
    })
}
