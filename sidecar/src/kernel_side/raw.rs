//! The map operations aya 0.14 does not wrap for arrays of maps.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::MapData;

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

/// Delete `key` of an array of maps: its inner map is released (aya's ArrayOfMaps has no remove).
pub fn delete_elem(map: &MapData, key: u32) -> std::io::Result<()> {
    // `struct bpf_attr`'s element member: map_fd, pad, key pointer, value pointer, flags.
    #[repr(C)]
    struct Elem {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = Elem {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u32 as u64,
        value: 0,
        flags: 0,
    };
    // SAFETY: attr is a valid prefix of `union bpf_attr`; `key` outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &attr as *const Elem,
            std::mem::size_of::<Elem>() as u32,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // An empty slot is nothing to delete.
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}
