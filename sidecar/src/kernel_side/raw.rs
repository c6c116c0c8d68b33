//! The bpf(2) operations aya 0.14 does not wrap: deleting from an array of maps, setting one from
//! any thread by fds, pinning a link it did not make.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

/// A map element command (`struct bpf_attr`'s element member: map_fd, pad, key pointer, value
/// pointer, flags) on `map` with a u32 key and, for an update, a u32 value (an inner map's fd).
fn elem_op(
    cmd: libc::c_long,
    map: std::os::fd::BorrowedFd<'_>,
    key: u32,
    value: Option<u32>,
) -> std::io::Result<()> {
    #[repr(C)]
    struct Elem {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = Elem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: value.as_ref().map_or(0, |v| v as *const u32 as u64),
        flags: 0,
    };
    // SAFETY: attr is a valid prefix of `union bpf_attr`; `key` and `value` outlive the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &attr as *const Elem,
            std::mem::size_of::<Elem>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Delete `key` of an array of maps: its inner map is released (aya's ArrayOfMaps has no remove).
pub fn delete_elem(map: &MapData, key: u32) -> std::io::Result<()> {
    match elem_op(BPF_MAP_DELETE_ELEM, map.fd().as_fd(), key, None) {
        // An empty slot is nothing to delete.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r,
    }
}

/// Put map `inner` at `key` of the array of maps `outer` (by fds: callable from any thread).
pub fn set_inner(
    outer: std::os::fd::BorrowedFd<'_>,
    key: u32,
    inner: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    elem_op(
        BPF_MAP_UPDATE_ELEM,
        outer,
        key,
        Some(inner.as_raw_fd() as u32),
    )
}

/// BPF_OBJ_PIN `fd` at `path` (aya 0.14 pins only the links it made), in a directory only root
/// may enter.
pub fn pin_fd(fd: std::os::fd::BorrowedFd<'_>, path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)?;
    }
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // `union bpf_attr`'s obj member: pathname, bpf_fd, file_flags.
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_OBJ_PIN: libc::c_long = 6;
    let attr = ObjAttr {
        pathname: cpath.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        file_flags: 0,
    };
    // SAFETY: attr is a valid prefix of `union bpf_attr`; cpath outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &attr as *const ObjAttr,
            std::mem::size_of::<ObjAttr>() as u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
