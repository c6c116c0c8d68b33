//! USDT engine: find the statically defined probes (`.note.stapsdt`) of an ELF executable or
//! shared library, the file offsets the kernel's uprobes need, their semaphores, and their
//! argument specs; resolve plain symbols the same way for runtimes without USDT.
//!
//! Everything here works on bytes and never panics on malformed input: a bad note or argument
//! is an error for that probe only, a bad file is an error for that file.

pub mod args;
pub mod attach;
pub mod config;
pub mod per_process;
pub mod place;
pub mod procs;

use std::path::Path;

use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Endianness, Object as _, ObjectSection as _, ObjectSymbol as _};
use thiserror::Error;

pub use args::{Arg, ArgError, Location};

const NT_STAPSDT: u32 = 3;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;

#[derive(Debug, Error)]
pub enum UsdtError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a 64-bit ELF file: {0}")]
    NotElf(String),
    #[error("no .note.stapsdt section (the binary declares no USDT probes)")]
    NoNotes,
    #[error("malformed .note.stapsdt at byte {at}: {reason}")]
    BadNote { at: usize, reason: &'static str },
    #[error("address {addr:#x} is in no loadable segment")]
    Unmapped { addr: u64 },
    #[error("symbol {0} not found (is the binary stripped, or a different build?)")]
    NoSymbol(String),
}

/// One probe site. A probe name may have several sites (inlined in several places).
#[derive(Clone, Debug, PartialEq)]
pub struct UsdtProbe {
    pub provider: String,
    pub name: String,
    /// Virtual address of the site, adjusted for prelink (`.stapsdt.base`).
    pub addr: u64,
    /// File offset of the site: what uprobes attach to.
    pub offset: u64,
    /// Virtual address of the semaphore (0: none).
    pub semaphore: u64,
    /// File offset of the semaphore (the kernel's ref_ctr_offset; 0: none).
    pub semaphore_offset: u64,
    /// The raw argument string of the note.
    pub args_raw: String,
    pub args: Result<Vec<Arg>, ArgError>,
}

struct Elf<'a> {
    file: ElfFile64<'a, Endianness>,
}

impl<'a> Elf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, UsdtError> {
        let file =
            ElfFile64::<Endianness>::parse(data).map_err(|e| UsdtError::NotElf(e.to_string()))?;
        Ok(Self { file })
    }

    /// File offset of a virtual address inside an executable loadable segment (falls back to any
    /// loadable segment).
    fn vaddr_to_offset(&self, addr: u64, exec_only: bool) -> Result<u64, UsdtError> {
        let endian = self.file.endian();
        let data = self.file.data();
        let headers = self
            .file
            .elf_header()
            .program_headers(endian, data)
            .map_err(|e| UsdtError::NotElf(e.to_string()))?;
        for ph in headers {
            if ph.p_type(endian) != PT_LOAD {
                continue;
            }
            if exec_only && ph.p_flags(endian) & PF_X == 0 {
                continue;
            }
            let (va, off, memsz) = (ph.p_vaddr(endian), ph.p_offset(endian), ph.p_memsz(endian));
            if addr >= va && addr - va < memsz {
                return Ok(addr - va + off);
            }
        }
        Err(UsdtError::Unmapped { addr })
    }

    /// File offset of a data address: through the section that holds it (the semaphores sit in
    /// `.probes`), else through the loadable segments.
    fn data_offset(&self, addr: u64) -> Result<u64, UsdtError> {
        for s in self.file.sections() {
            let (a, size) = (s.address(), s.size());
            if a != 0
                && addr >= a
                && addr - a < size
                && let Some((off, _)) = s.file_range()
            {
                return Ok(addr - a + off);
            }
        }
        self.vaddr_to_offset(addr, false)
    }
}

/// The probes declared by an ELF file's bytes.
pub fn probes(data: &[u8]) -> Result<Vec<UsdtProbe>, UsdtError> {
    let elf = Elf::parse(data)?;
    let notes = elf
        .file
        .section_by_name(".note.stapsdt")
        .ok_or(UsdtError::NoNotes)?;
    let raw = notes.data().map_err(|_| UsdtError::BadNote {
        at: 0,
        reason: "section data outside the file",
    })?;
    let base_addr = elf
        .file
        .section_by_name(".stapsdt.base")
        .map(|s| s.address());
    let mut out = Vec::new();
    for note in parse_notes(raw)? {
        // Prelinked or relocated binaries: the note recorded the base it was built with.
        let addr = match base_addr {
            Some(actual) if note.base != 0 => note.pc.wrapping_add(actual.wrapping_sub(note.base)),
            _ => note.pc,
        };
        let offset = elf.vaddr_to_offset(addr, true)?;
        let semaphore_offset = if note.semaphore != 0 {
            elf.data_offset(note.semaphore)?
        } else {
            0
        };
        out.push(UsdtProbe {
            args: args::parse_args(&note.args),
            provider: note.provider,
            name: note.name,
            addr,
            offset,
            semaphore: note.semaphore,
            semaphore_offset,
            args_raw: note.args,
        });
    }
    Ok(out)
}

/// A probe's note as written by `<sys/sdt.h>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub pc: u64,
    pub base: u64,
    pub semaphore: u64,
    pub provider: String,
    pub name: String,
    pub args: String,
}

/// Little-endian integers at a byte offset (ELF notes here, ELF headers in `symbolize`).
pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// Parse the content of a `.note.stapsdt` section (little-endian, 64-bit).
pub fn parse_notes(raw: &[u8]) -> Result<Vec<Note>, UsdtError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < raw.len() {
        let bad = |reason| UsdtError::BadNote { at, reason };
        let namesz = u32_at(raw, at).ok_or(bad("truncated header"))? as usize;
        let descsz = u32_at(raw, at + 4).ok_or(bad("truncated header"))? as usize;
        let ntype = u32_at(raw, at + 8).ok_or(bad("truncated header"))?;
        let name_at = at + 12;
        let desc_at =
            align4(name_at.checked_add(namesz).ok_or(bad("name size"))?).ok_or(bad("name size"))?;
        let next =
            align4(desc_at.checked_add(descsz).ok_or(bad("desc size"))?).ok_or(bad("desc size"))?;
        if desc_at
            .checked_add(descsz)
            .is_none_or(|end| end > raw.len())
        {
            return Err(bad("note runs past the section"));
        }
        let owner = &raw[name_at..name_at + namesz];
        if ntype == NT_STAPSDT && owner == b"stapsdt\0" {
            let desc = &raw[desc_at..desc_at + descsz];
            let pc = u64_at(desc, 0).ok_or(bad("descriptor shorter than 24 bytes"))?;
            let base = u64_at(desc, 8).ok_or(bad("descriptor shorter than 24 bytes"))?;
            let semaphore = u64_at(desc, 16).ok_or(bad("descriptor shorter than 24 bytes"))?;
            let mut strings = desc[24..].split(|&b| b == 0);
            let mut next_str = |what| {
                strings
                    .next()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .ok_or(bad(what))
            };
            let provider = next_str("missing provider")?;
            let name = next_str("missing probe name")?;
            let args = next_str("missing arguments")?;
            if provider.is_empty() || name.is_empty() {
                return Err(bad("empty provider or probe name"));
            }
            out.push(Note {
                pc,
                base,
                semaphore,
                provider,
                name,
                args,
            });
        }
        if next <= at {
            return Err(bad("note does not advance"));
        }
        at = next;
    }
    Ok(out)
}

/// File offset of a function symbol (static table first, then dynamic), for plain uprobes.
pub fn symbol_offset(data: &[u8], name: &str) -> Result<u64, UsdtError> {
    let elf = Elf::parse(data)?;
    let addr = elf
        .file
        .symbols()
        .chain(elf.file.dynamic_symbols())
        .find(|s| s.address() != 0 && s.name() == Ok(name))
        .map(|s| s.address())
        .ok_or_else(|| UsdtError::NoSymbol(name.to_string()))?;
    elf.vaddr_to_offset(addr, true)
}

/// Read a whole file (binaries are read once per (device, inode) and cached by the caller).
pub fn read_file(path: &Path) -> Result<Vec<u8>, UsdtError> {
    std::fs::read(path).map_err(|source| UsdtError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Render probes like bcc's `tplist -v`: one line per site.
pub fn render_list(path: &str, probes: &[UsdtProbe]) -> String {
    let mut s = String::new();
    for p in probes {
        let sema = if p.semaphore != 0 {
            format!("{:#x}", p.semaphore)
        } else {
            "-".into()
        };
        let args = match &p.args {
            Ok(a) => format!("{} args: {}", a.len(), p.args_raw),
            Err(e) => format!("bad args: {e}"),
        };
        s.push_str(&format!(
            "{path} {}:{} location {:#x} offset {:#x} semaphore {sema} {args}\n",
            p.provider, p.name, p.addr, p.offset
        ));
    }
    s
}

/// `ebpf-sidecar usdt list`: print the probes; returns the exit status (2: bad input).
pub fn list_command(pid: Option<u32>, binary: Option<&Path>) -> i32 {
    let files: Vec<(String, std::path::PathBuf)> = match (pid, binary) {
        (_, Some(b)) => vec![(b.display().to_string(), b.to_path_buf())],
        (Some(pid), None) => match procs::mappings(pid) {
            Ok(m) => m
                .into_iter()
                .map(|m| (m.path.clone(), m.host_path(pid)))
                .collect(),
            Err(e) => {
                eprintln!(
                    "error: reading /proc/{pid}/maps: {e} (no such process, or CAP_SYS_PTRACE needed)"
                );
                return 2;
            }
        },
        (None, None) => {
            eprintln!("error: give --pid PID or --binary PATH");
            return 2;
        }
    };
    let single = binary.is_some();
    let mut found = 0;
    for (shown, path) in files {
        let r = read_file(&path).and_then(|d| probes(&d));
        match r {
            Ok(p) => {
                found += p.len();
                print!("{}", render_list(&shown, &p));
            }
            Err(UsdtError::NoNotes) if !single => {}
            Err(e) => {
                eprintln!("error: {shown}: {e}");
                if single {
                    return 2;
                }
            }
        }
    }
    if found == 0 && !single {
        eprintln!(
            "no USDT probes in the binaries of process {}",
            pid.unwrap_or(0)
        );
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(pc: u64, base: u64, sema: u64, strs: &[u8]) -> Vec<u8> {
        let mut desc = Vec::new();
        desc.extend_from_slice(&pc.to_le_bytes());
        desc.extend_from_slice(&base.to_le_bytes());
        desc.extend_from_slice(&sema.to_le_bytes());
        desc.extend_from_slice(strs);
        let mut n = Vec::new();
        n.extend_from_slice(&8u32.to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&NT_STAPSDT.to_le_bytes());
        n.extend_from_slice(b"stapsdt\0");
        n.extend_from_slice(&desc);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n
    }

    #[test]
    fn notes_parse() {
        let mut raw = note(0x1000, 0x2000, 0x3000, b"python\0gc__start\0-4@112(%rsp)\0");
        raw.extend(note(0x1100, 0, 0, b"hotspot\0gc__end\0\0"));
        let n = parse_notes(&raw).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].provider, "python");
        assert_eq!(n[0].name, "gc__start");
        assert_eq!(n[0].args, "-4@112(%rsp)");
        assert_eq!(
            (n[0].pc, n[0].base, n[0].semaphore),
            (0x1000, 0x2000, 0x3000)
        );
        assert_eq!(n[1].args, "");
    }

    #[test]
    fn corrupted_notes_are_errors() {
        let good = note(0x1000, 0, 0, b"p\0n\0\0");
        // Every truncation and every single-byte corruption: an error or a result, no panic.
        for cut in 0..good.len() {
            let _ = parse_notes(&good[..cut]);
        }
        for i in 0..good.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = parse_notes(&b);
            }
        }
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse_notes(&huge), Err(UsdtError::BadNote { .. })));
        let short = note(0x1000, 0, 0, b"");
        assert!(parse_notes(&short[..short.len() - 8]).is_err());
        assert!(parse_notes(&note(1, 0, 0, b"\0\0\0")).is_err());
    }

    #[test]
    fn garbage_files_are_errors() {
        assert!(matches!(probes(b""), Err(UsdtError::NotElf(_))));
        assert!(matches!(
            probes(b"\x7fELF garbage"),
            Err(UsdtError::NotElf(_))
        ));
        let me = std::fs::read("/proc/self/exe").unwrap();
        // Our own test binary has no USDT notes.
        assert!(matches!(probes(&me), Err(UsdtError::NoNotes)));
        // Truncated copies of a real ELF never panic.
        for cut in [64, 200, 4096, me.len() / 2] {
            let _ = probes(&me[..cut.min(me.len())]);
            let _ = symbol_offset(&me[..cut.min(me.len())], "main");
        }
        assert!(matches!(
            symbol_offset(&me, "no_such_symbol_anywhere"),
            Err(UsdtError::NoSymbol(_))
        ));
    }

    /// Debian's python3.11 (non-PIE, semaphores) and OpenJDK 17's libjvm.so (PIE, none), when
    /// installed: the values readelf shows.
    #[test]
    fn real_binaries() {
        if let Ok(data) = std::fs::read("/usr/bin/python3.11") {
            let p = probes(&data).unwrap();
            let gc = p.iter().find(|p| p.name == "gc__start").unwrap();
            assert_eq!(gc.provider, "python");
            assert_ne!(gc.semaphore, 0);
            assert_ne!(gc.semaphore_offset, 0);
            assert!(gc.args.is_ok());
        }
        for jvm in ["/usr/lib/jvm/java-17-openjdk-amd64/lib/server/libjvm.so"] {
            if let Ok(data) = std::fs::read(jvm) {
                let p = probes(&data).unwrap();
                let b = p.iter().find(|p| p.name == "gc__begin").unwrap();
                assert_eq!(b.provider, "hotspot");
                assert_eq!(b.semaphore, 0);
                assert_eq!(b.args.as_ref().unwrap().len(), 1);
            }
        }
    }
}
