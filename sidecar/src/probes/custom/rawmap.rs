//! Read a whole map of any key and value layout through the bpf() syscall: aya's typed maps need
//! a Rust type per map, while a user's layout is only known from its BTF at run time.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Map, MapData};

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_PERF_EVENT_ARRAY: u32 = 4;
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
pub const BPF_MAP_TYPE_LRU_PERCPU_HASH: u32 = 10;
pub const BPF_MAP_TYPE_RINGBUF: u32 = 27;

fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> io::Result<()> {
    // SAFETY: `attr` is a zeroed, large enough union bpf_attr whose pointers point into buffers
    // the caller keeps alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of::<[u64; 8]>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The MapData inside any aya map.
pub fn map_data(m: &Map) -> &MapData {
    macro_rules! any {
        ($($v:ident),*) => {
            match m { $(Map::$v(d) => d,)* }
        };
    }
    any!(
        Array,
        ArrayOfMaps,
        BloomFilter,
        CgroupArray,
        CgroupStorage,
        CgrpStorage,
        CpuMap,
        DevMap,
        DevMapHash,
        HashMap,
        HashOfMaps,
        InodeStorage,
        LpmTrie,
        LruHashMap,
        PerCpuArray,
        PerCpuCgroupStorage,
        PerCpuHashMap,
        PerCpuLruHashMap,
        PerfEventArray,
        ProgramArray,
        Queue,
        ReusePortSockArray,
        RingBuf,
        SockHash,
        SockMap,
        SkStorage,
        Stack,
        StackTraceMap,
        Unsupported,
        XskMap
    )
}

/// Possible CPUs: per-CPU maps hold one value slot for each.
pub fn possible_cpus() -> usize {
    aya::util::nr_cpus().unwrap_or(1).max(1)
}

/// A map read as raw bytes.
pub struct RawMap {
    pub data: MapData,
    pub key_size: usize,
    pub value_size: usize,
    pub max_entries: usize,
    pub map_type: u32,
    /// Per-CPU maps: values per key (else 1).
    pub cpus: usize,
}

/// Every entry: keys back to back, values back to back (each `stride()` bytes).
#[derive(Default)]
pub struct Dump {
    pub keys: Vec<u8>,
    pub values: Vec<u8>,
    pub count: usize,
}

impl RawMap {
    pub fn new(data: MapData) -> io::Result<Self> {
        let info = data.info().map_err(io::Error::other)?;
        let map_type = info.map_type().map(|t| t as u32).unwrap_or(0);
        let percpu = matches!(
            map_type,
            BPF_MAP_TYPE_PERCPU_HASH | BPF_MAP_TYPE_PERCPU_ARRAY | BPF_MAP_TYPE_LRU_PERCPU_HASH
        );
        Ok(Self {
            key_size: info.key_size() as usize,
            value_size: info.value_size() as usize,
            max_entries: info.max_entries() as usize,
            map_type,
            cpus: if percpu { possible_cpus() } else { 1 },
            data,
        })
    }

    /// Bytes per value as the kernel hands them out (per-CPU values are 8-byte aligned each).
    pub fn stride(&self) -> usize {
        if self.cpus > 1 {
            self.value_size.next_multiple_of(8) * self.cpus
        } else {
            self.value_size
        }
    }

    fn fd(&self) -> u64 {
        self.data.fd().as_fd().as_raw_fd() as u64
    }

    /// All entries, in as few syscalls as the kernel allows (batched lookup, else key by key).
    pub fn dump(&self) -> io::Result<Dump> {
        match self.dump_batch() {
            Ok(d) => Ok(d),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(524)) => {
                self.dump_iter()
            }
            Err(e) => Err(e),
        }
    }

    fn dump_batch(&self) -> io::Result<Dump> {
        let n = self.max_entries.max(1);
        // Buffers grow with what the map holds, not with max_entries (a mostly empty 1M-entry
        // map must not cost 1M entries of memory per scrape).
        let mut chunk = n.min(4096);
        let (ks, vs) = (self.key_size, self.stride());
        let mut keys: Vec<u8> = Vec::new();
        let mut values: Vec<u8> = Vec::new();
        let token_len = ks.max(8);
        let (mut tok_in, mut tok_out) = (vec![0u8; token_len], vec![0u8; token_len]);
        let mut total = 0usize;
        let mut first = true;
        while total < n {
            let want = chunk.min(n - total);
            keys.resize((total + want) * ks, 0);
            values.resize((total + want) * vs, 0);
            let mut attr = [0u64; 8];
            attr[0] = if first { 0 } else { tok_in.as_ptr() as u64 };
            attr[1] = tok_out.as_mut_ptr() as u64;
            attr[2] = keys[total * ks..].as_mut_ptr() as u64;
            attr[3] = values[total * vs..].as_mut_ptr() as u64;
            attr[4] = want as u64 | (self.fd() << 32);
            let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
            let got = (attr[4] & 0xffff_ffff) as usize;
            match r {
                Ok(()) => {
                    total += got;
                    std::mem::swap(&mut tok_in, &mut tok_out);
                    first = false;
                    if got == 0 {
                        break;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    total += got;
                    break;
                }
                // A hash bucket holds more entries than the chunk: ask for more at once.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && chunk < n => {
                    chunk = (chunk * 2).min(n);
                }
                Err(e) => return Err(e),
            }
        }
        keys.truncate(total * ks);
        values.truncate(total * vs);
        Ok(Dump {
            keys,
            values,
            count: total,
        })
    }

    fn dump_iter(&self) -> io::Result<Dump> {
        let mut d = Dump::default();
        let mut key = vec![0u8; self.key_size];
        let mut next = vec![0u8; self.key_size];
        let mut value = vec![0u8; self.stride()];
        let mut first = true;
        loop {
            let mut attr = [0u64; 8];
            attr[0] = self.fd();
            attr[1] = if first { 0 } else { key.as_ptr() as u64 };
            attr[2] = next.as_mut_ptr() as u64;
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => return Err(e),
            }
            first = false;
            std::mem::swap(&mut key, &mut next);
            let mut attr = [0u64; 8];
            attr[0] = self.fd();
            attr[1] = key.as_ptr() as u64;
            attr[2] = value.as_mut_ptr() as u64;
            match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
                Ok(()) => {
                    d.keys.extend_from_slice(&key);
                    d.values.extend_from_slice(&value);
                    d.count += 1;
                }
                // Deleted between the two calls.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
            if d.count > self.max_entries {
                break;
            }
        }
        Ok(d)
    }
}
