//! Addresses to names: kernel symbols from /proc/kallsyms (read once, while the sidecar may still
//! read them), user addresses through the process's /proc/<pid>/maps and the ELF symbol tables of
//! its files (reached inside its mount namespace via /proc/<pid>/root), and JIT perf maps
//! (/tmp/perf-<pid>.map, e.g. Node with --perf-basic-prof).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// Sorted (address, name) pairs; lookup finds the greatest address <= ip.
///
/// Names live in one string (kallsyms: 120k symbols, 10 MiB as a String each, 5 MiB so).
#[derive(Debug, Default)]
pub struct SymbolTable {
    syms: Vec<(u64, u64, u32, u32)>, // (start, size, name offset, name length)
    names: String,
}

impl SymbolTable {
    pub fn new(syms: Vec<(u64, u64, String)>) -> Self {
        let mut t = Self::default();
        for (start, size, name) in syms {
            t.push(start, size, &name);
        }
        t.syms.sort_by_key(|s| s.0);
        t
    }

    fn push(&mut self, start: u64, size: u64, name: &str) {
        // A table over 4 GiB of names is not one we read: the offset saturates, the name is empty.
        let off = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(name.len()).unwrap_or(0);
        if off != u32::MAX {
            self.names.push_str(name);
        }
        self.syms
            .push((start, size, off, if off == u32::MAX { 0 } else { len }));
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.0 <= addr);
        let (start, size, off, len) = *self.syms.get(i.checked_sub(1)?)?;
        // Symbols without a size (assembly, some kallsyms) match up to the next symbol.
        (size == 0 || addr < start + size)
            .then(|| self.names.get(off as usize..(off as usize + len as usize)))
            .flatten()
    }

    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }
}

/// The kernel's function symbols, read once per process (node mode's containers and the
/// profile and custom families all use one copy). Read at the first call: while the sidecar
/// still has CAP_SYSLOG (dropped after attach), or kallsyms shows zero addresses.
pub fn kallsyms() -> Arc<SymbolTable> {
    static TABLE: OnceLock<Arc<SymbolTable>> = OnceLock::new();
    TABLE.get_or_init(|| Arc::new(read_kallsyms())).clone()
}

fn read_kallsyms() -> SymbolTable {
    use std::io::BufRead;
    let Ok(f) = std::fs::File::open("/proc/kallsyms") else {
        return SymbolTable::default();
    };
    let mut t = SymbolTable::default();
    for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
        let mut it = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        if addr != 0 && matches!(kind, "t" | "T" | "w" | "W") {
            t.push(addr, 0, name);
        }
    }
    t.syms.sort_by_key(|s| s.0);
    t.names.shrink_to_fit();
    t.syms.shrink_to_fit();
    t
}

/// One ELF file's function symbols, keyed by virtual address, and its loadable segments to map
/// file offsets to addresses.
///
/// Memory: a binary like node (99 MB, 112k function symbols, 13 MB of names) must not cost its
/// size. Only (address, size, name offset) is kept, 24 bytes a symbol, read through a small
/// buffer; names are read from the file when a sample needs them (the open file keeps a replaced
/// or deleted binary readable) and cached.
#[derive(Debug)]
pub struct ElfSymbols {
    file: std::fs::File,
    syms: Vec<ElfSym>,
    segments: Vec<(u64, u64, u64)>, // (file offset, file size, vaddr)
    names: std::sync::Mutex<HashMap<u64, Arc<str>>>,
}

#[derive(Debug, Clone, Copy)]
struct ElfSym {
    start: u64,
    size: u64,
    /// File offset of the NUL-terminated name.
    name: u64,
}

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const SHF_EXECINSTR: u64 = 4;
const PT_LOAD: u32 = 1;
const STT_NOTYPE: u8 = 0;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;
/// Longest symbol name read (C++ names can be long; the rest is cut).
const MAX_NAME: usize = 512;

// Header fields read as u64, 0 when out of range (a truncated file then has no symbols).
fn u16_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]) as u64)
}
fn u32_at(b: &[u8], o: usize) -> u64 {
    crate::usdt::u32_at(b, o).map_or(0, u64::from)
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    crate::usdt::u64_at(b, o).unwrap_or(0)
}

impl ElfSymbols {
    /// 64-bit little-endian ELF files (x86_64, aarch64); anything else has no symbols here.
    pub fn load(path: &std::path::Path) -> Option<Self> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::open(path).ok()?;
        let read = |off: u64, len: usize| -> Option<Vec<u8>> {
            let mut b = vec![0; len];
            file.read_exact_at(&mut b, off).ok()?;
            Some(b)
        };
        let eh = read(0, 64)?;
        if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
            return None;
        }
        let (phoff, phentsize, phnum) = (u64_at(&eh, 0x20), u16_at(&eh, 0x36), u16_at(&eh, 0x38));
        let (shoff, shentsize, shnum) = (u64_at(&eh, 0x28), u16_at(&eh, 0x3a), u16_at(&eh, 0x3c));
        if phentsize < 56 || shentsize < 64 || phnum > 4096 || shnum > 65535 {
            return None;
        }
        let ph = read(phoff, (phentsize * phnum) as usize)?;
        let segments = (0..phnum as usize)
            .map(|i| &ph[i * phentsize as usize..])
            .filter(|p| u32_at(p, 0) as u32 == PT_LOAD && u64_at(p, 0x20) > 0)
            .map(|p| (u64_at(p, 8), u64_at(p, 0x20), u64_at(p, 0x10)))
            .collect();
        let sh = read(shoff, (shentsize * shnum) as usize)?;
        let section = |i: u64| sh.get((i * shentsize) as usize..((i + 1) * shentsize) as usize);
        let mut syms = Vec::new();
        for i in 0..shnum {
            let Some(h) = section(i) else { continue };
            let kind = u32_at(h, 4) as u32;
            if kind != SHT_SYMTAB && kind != SHT_DYNSYM {
                continue;
            }
            let (off, size, link) = (u64_at(h, 0x18), u64_at(h, 0x20), u32_at(h, 0x28));
            let Some(strtab) = section(link).map(|s| u64_at(s, 0x18)) else {
                continue;
            };
            // 24-byte Elf64_Sym records, through a 64 KiB window.
            let mut at = 0;
            while at + 24 <= size {
                let n = ((size - at) / 24).min(2730) * 24;
                let Some(chunk) = read(off + at, n as usize) else {
                    break;
                };
                for r in chunk.chunks_exact(24) {
                    let (st_type, shndx, value) = (r[4] & 0xf, u16_at(r, 6), u64_at(r, 8));
                    let exec = section(shndx).is_some_and(|s| u64_at(s, 8) & SHF_EXECINSTR != 0);
                    let code = matches!(st_type, STT_FUNC | STT_GNU_IFUNC)
                        || (st_type == STT_NOTYPE && exec);
                    if code && value != 0 && shndx != 0 && u32_at(r, 0) != 0 {
                        syms.push(ElfSym {
                            start: value,
                            size: u64_at(r, 16),
                            name: strtab + u32_at(r, 0),
                        });
                    }
                }
                at += n;
            }
        }
        // .symtab and .dynsym mostly list the same functions: keep one per address.
        syms.sort_by_key(|s| (s.start, std::cmp::Reverse(s.size)));
        syms.dedup_by_key(|s| s.start);
        syms.shrink_to_fit();
        Some(Self {
            file,
            syms,
            segments,
            names: Default::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    fn name_at(&self, off: u64) -> Option<Arc<str>> {
        use std::os::unix::fs::FileExt;
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = names.get(&off) {
            return Some(n.clone());
        }
        let mut b = vec![0; MAX_NAME];
        let got = self.file.read_at(&mut b, off).ok()?;
        b.truncate(got);
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        let name: Arc<str> = String::from_utf8_lossy(&b[..end]).into();
        names.insert(off, name.clone());
        Some(name)
    }

    /// Name of the function at `file_offset` of this file.
    pub fn lookup_offset(&self, file_offset: u64) -> Option<Arc<str>> {
        let (off, _, vaddr) = self
            .segments
            .iter()
            .find(|(o, s, _)| file_offset >= *o && file_offset < o + s)?;
        let addr = file_offset - off + vaddr;
        let i = self.syms.partition_point(|s| s.start <= addr);
        let s = self.syms.get(i.checked_sub(1)?)?;
        // Symbols without a size (assembly) match up to the next symbol.
        (s.size == 0 || addr < s.start + s.size)
            .then(|| self.name_at(s.name))
            .flatten()
    }

    /// Drop the cached names (between profiling windows; the symbols stay).
    pub fn forget_names(&self) {
        self.names.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: String,
}

fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (start, end) = it.next()?.split_once('-')?;
            let perms = it.next()?;
            let offset = u64::from_str_radix(it.next()?, 16).ok()?;
            let _dev = it.next()?;
            let _inode = it.next()?;
            let path = it.collect::<Vec<_>>().join(" ");
            perms.contains('x').then(|| Mapping {
                start: u64::from_str_radix(start, 16).unwrap_or(0),
                end: u64::from_str_radix(end, 16).unwrap_or(0),
                offset,
                path,
            })
        })
        .collect()
}

/// One process as the symbolizer last read it: its executable mappings sorted by address, each
/// with its file's symbols once looked up, and its JIT perf map.
struct Proc {
    maps: Vec<Mapping>,
    files: Vec<OnceLock<Option<Arc<ElfSymbols>>>>,
    perf: Option<Arc<SymbolTable>>,
}

/// Caches per process (maps, perf map) and per file (symbols). A profile window resolves tens of
/// frames per sample: each frame costs a binary search and a cached name, no system call.
#[derive(Default)]
pub struct Symbolizer {
    kernel: Arc<SymbolTable>,
    procs: HashMap<u32, Arc<Proc>>,
    /// By (device, inode): the same binary in many processes or containers is read once.
    files: HashMap<(u64, u64), Option<Arc<ElfSymbols>>>,
}

impl Symbolizer {
    pub fn new(kernel: Arc<SymbolTable>) -> Self {
        Self {
            kernel,
            ..Default::default()
        }
    }

    pub fn kernel(&self, ip: u64) -> String {
        match self.kernel.lookup(ip) {
            Some(n) => format!("{n}_[k]"),
            None => "[unknown]_[k]".into(),
        }
    }

    /// Forget processes (call between profiling windows so exec'd or gone pids are re-read).
    pub fn forget_processes(&mut self) {
        self.procs.clear();
        for f in self.files.values().flatten() {
            f.forget_names();
        }
    }

    fn process(&mut self, pid: u32) -> Arc<Proc> {
        self.procs
            .entry(pid)
            .or_insert_with(|| {
                let mut maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
                    .map(|t| parse_maps(&t))
                    .unwrap_or_default();
                maps.sort_by_key(|m| m.start);
                let files = maps.iter().map(|_| OnceLock::new()).collect();
                Arc::new(Proc {
                    maps,
                    files,
                    perf: perf_map(pid),
                })
            })
            .clone()
    }

    /// The symbols of the file behind `/proc/<pid>/root<path>`, read once per (device, inode).
    fn file(&mut self, pid: u32, path: &str) -> Option<Arc<ElfSymbols>> {
        use std::os::unix::fs::MetadataExt;
        let host_path = PathBuf::from(format!("/proc/{pid}/root{path}"));
        let md = std::fs::metadata(&host_path).ok()?;
        self.files
            .entry((md.dev(), md.ino()))
            .or_insert_with(|| ElfSymbols::load(&host_path).map(Arc::new))
            .clone()
    }

    pub fn user(&mut self, pid: u32, ip: u64) -> String {
        if pid == 0 {
            return "[unknown pid]".into();
        }
        let p = self.process(pid);
        let i = p.maps.partition_point(|m| m.start <= ip);
        if let Some(i) = i.checked_sub(1).filter(|&i| {
            let m = &p.maps[i];
            ip < m.end && m.path.starts_with('/')
        }) {
            let m = &p.maps[i];
            let syms = p.files[i].get_or_init(|| self.file(pid, &m.path));
            if let Some(name) = syms
                .as_ref()
                .and_then(|s| s.lookup_offset(ip - m.start + m.offset))
            {
                return name.to_string();
            }
            let base = m.path.rsplit('/').next().unwrap_or(&m.path);
            return format!("[{base}+0x{:x}]", ip - m.start + m.offset);
        }
        if let Some(name) = p.perf.as_ref().and_then(|t| t.lookup(ip)) {
            return name.to_string();
        }
        tracing::debug!(pid, ip, mappings = p.maps.len(), "no mapping for address");
        "[unknown]".into()
    }
}

/// A JIT's /tmp/perf-<pid>.map, written with the pid it sees (its own namespace's).
fn perf_map(pid: u32) -> Option<Arc<SymbolTable>> {
    let ns_pid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("NSpid:")
                    .map(|v| v.split_whitespace().last().map(str::to_string))
            })
        })
        .flatten()
        .unwrap_or_else(|| pid.to_string());
    let t = std::fs::read_to_string(format!("/proc/{pid}/root/tmp/perf-{ns_pid}.map")).ok()?;
    Some(Arc::new(SymbolTable::new(
        t.lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ' ');
                let start = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
                let size = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
                Some((start, size, it.next()?.to_string()))
            })
            .collect(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lookup() {
        let t = SymbolTable::new(vec![(0x100, 0x10, "a".into()), (0x200, 0, "b".into())]);
        assert_eq!(t.lookup(0x105), Some("a"));
        assert_eq!(t.lookup(0x110), None);
        assert_eq!(t.lookup(0x250), Some("b"));
        assert_eq!(t.lookup(0x50), None);
    }

    #[test]
    fn maps() {
        let m = parse_maps(
            "55d0-55e0 r--p 00000000 08:01 1 /bin/x\n55e0-55f0 r-xp 00001000 08:01 1 /bin/x\n7f00-7f10 r-xp 0 00:00 0 \n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].offset, 0x1000);
        assert_eq!(m[0].path, "/bin/x");
    }

    #[test]
    fn own_binary_symbolizes() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let e = ElfSymbols::load(&exe).unwrap();
        assert!(!e.is_empty());
        // This very function, found through its own address as a file offset.
        let here = own_binary_symbolizes as fn() as usize as u64;
        let maps = parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
        let m = maps
            .iter()
            .find(|m| here >= m.start && here < m.end)
            .unwrap();
        let name = e.lookup_offset(here - m.start + m.offset).unwrap();
        assert!(name.contains("own_binary_symbolizes"), "{name}");
    }
}
