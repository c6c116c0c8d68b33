//! Addresses to names: kernel symbols from /proc/kallsyms (read once, while the sidecar may still
//! read them), user addresses through the process's /proc/<pid>/maps and the ELF symbol tables of
//! its files (reached inside its mount namespace via /proc/<pid>/root), and JIT perf maps
//! (/tmp/perf-<pid>.map, e.g. Node with --perf-basic-prof).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use object::{Object, ObjectSegment, ObjectSymbol};

/// Sorted (address, name) pairs; lookup finds the greatest address <= ip.
#[derive(Debug, Default)]
pub struct SymbolTable {
    syms: Vec<(u64, u64, String)>, // (start, size, name)
}

impl SymbolTable {
    pub fn new(mut syms: Vec<(u64, u64, String)>) -> Self {
        syms.sort_by_key(|s| s.0);
        Self { syms }
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.0 <= addr);
        let (start, size, name) = self.syms.get(i.checked_sub(1)?)?;
        // Symbols without a size (assembly, some kallsyms) match up to the next symbol.
        (*size == 0 || addr < start + size).then_some(name.as_str())
    }

    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }
}

pub fn kallsyms() -> SymbolTable {
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let syms = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            let kind = it.next()?;
            let name = it.next()?;
            (addr != 0 && matches!(kind, "t" | "T" | "w" | "W"))
                .then(|| (addr, 0, name.to_string()))
        })
        .collect();
    SymbolTable::new(syms)
}

/// One ELF file's function symbols, keyed by virtual address, and its loadable segments to map
/// file offsets to addresses.
#[derive(Debug, Default)]
pub struct ElfSymbols {
    table: SymbolTable,
    segments: Vec<(u64, u64, u64)>, // (file offset, file size, vaddr)
}

impl ElfSymbols {
    pub fn load(path: &std::path::Path) -> Option<Self> {
        let data = std::fs::read(path).ok()?;
        let file = object::File::parse(&*data).ok()?;
        let mut syms = Vec::new();
        for s in file.symbols().chain(file.dynamic_symbols()) {
            if let (object::SymbolKind::Text, true, Ok(name)) =
                (s.kind(), s.address() != 0, s.name())
            {
                syms.push((s.address(), s.size(), name.to_string()));
            }
        }
        let segments = file
            .segments()
            .filter_map(|seg| {
                let (off, size) = seg.file_range();
                (size > 0).then_some((off, size, seg.address()))
            })
            .collect();
        Some(Self {
            table: SymbolTable::new(syms),
            segments,
        })
    }

    /// Name of the function at `file_offset` of this file.
    pub fn lookup_offset(&self, file_offset: u64) -> Option<&str> {
        let (off, _, vaddr) = self
            .segments
            .iter()
            .find(|(o, s, _)| file_offset >= *o && file_offset < o + s)?;
        self.table.lookup(file_offset - off + vaddr)
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

/// Caches per process (maps, perf map) and per file (symbols).
#[derive(Default)]
pub struct Symbolizer {
    kernel: SymbolTable,
    procs: HashMap<u32, (Vec<Mapping>, Option<Arc<SymbolTable>>)>,
    /// By (device, inode): the same binary in many processes or containers is read once.
    files: HashMap<(u64, u64), Option<Arc<ElfSymbols>>>,
}

impl Symbolizer {
    pub fn new(kernel: SymbolTable) -> Self {
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
    }

    fn process(&mut self, pid: u32) -> &(Vec<Mapping>, Option<Arc<SymbolTable>>) {
        self.procs.entry(pid).or_insert_with(|| {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .map(|t| parse_maps(&t))
                .unwrap_or_default();
            // A JIT writes /tmp/perf-<pid>.map with the pid it sees (its own namespace's).
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
            let perf = std::fs::read_to_string(format!("/proc/{pid}/root/tmp/perf-{ns_pid}.map"))
                .ok()
                .map(|t| {
                    Arc::new(SymbolTable::new(
                        t.lines()
                            .filter_map(|l| {
                                let mut it = l.splitn(3, ' ');
                                let start =
                                    u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16)
                                        .ok()?;
                                let size =
                                    u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16)
                                        .ok()?;
                                Some((start, size, it.next()?.to_string()))
                            })
                            .collect(),
                    ))
                });
            (maps, perf)
        })
    }

    pub fn user(&mut self, pid: u32, ip: u64) -> String {
        if pid == 0 {
            return "[unknown pid]".into();
        }
        let (maps, perf) = self.process(pid).clone();
        if let Some(m) = maps
            .iter()
            .find(|m| ip >= m.start && ip < m.end && m.path.starts_with('/'))
        {
            let host_path = PathBuf::from(format!("/proc/{pid}/root{}", m.path));
            let syms = std::fs::metadata(&host_path).ok().and_then(|md| {
                use std::os::unix::fs::MetadataExt;
                self.files
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| ElfSymbols::load(&host_path).map(Arc::new))
                    .clone()
            });
            if let Some(name) = syms
                .as_ref()
                .and_then(|s| s.lookup_offset(ip - m.start + m.offset))
            {
                return name.to_string();
            }
            let base = m.path.rsplit('/').next().unwrap_or(&m.path);
            return format!("[{base}+0x{:x}]", ip - m.start + m.offset);
        }
        if let Some(name) = perf.as_ref().and_then(|p| p.lookup(ip)) {
            return name.to_string();
        }
        tracing::debug!(pid, ip, mappings = maps.len(), "no mapping for address");
        "[unknown]".into()
    }
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
        assert!(!e.table.is_empty());
    }
}
