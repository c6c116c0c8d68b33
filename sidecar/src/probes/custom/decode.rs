//! Bytes of a key or an event field → a label value or a JSON value, through named decoders and
//! the object's BTF.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::btf::{Btf, Scalar, Ty};
use super::config::Decoder;
use crate::symbolize::{SymbolTable, Symbolizer};
use crate::tables::{errno_name, syscall_name};

/// What decoders need beyond the bytes: symbol tables, the cgroup tree, the target's pid.
pub struct DecodeCtx {
    kernel: Option<std::sync::Arc<SymbolTable>>,
    user: Mutex<Symbolizer>,
    cgroups: Mutex<(HashMap<u64, String>, Option<Instant>)>,
    cgroup_root: Option<PathBuf>,
    pub target_pid: Mutex<Option<u32>>,
}

impl DecodeCtx {
    /// `kallsyms`: read /proc/kallsyms now (only while the sidecar can still see addresses).
    pub fn new(kallsyms: bool) -> Self {
        Self {
            kernel: kallsyms.then(crate::symbolize::kallsyms),
            user: Mutex::new(Symbolizer::default()),
            cgroups: Mutex::new((HashMap::new(), None)),
            cgroup_root: crate::monitored::cgroup::cgroup2_mount()
                .ok()
                .map(|m| m.mount_point),
            target_pid: Mutex::new(None),
        }
    }

    fn cgroup_path(&self, id: u64) -> String {
        let mut c = self.cgroups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = c.0.get(&id) {
            return p.clone();
        }
        // A new cgroup: walk the tree again, at most every 10 s (ids of gone cgroups stay ids).
        let stale = c.1.is_none_or(|t| t.elapsed() > Duration::from_secs(10));
        if let (true, Some(root)) = (stale, &self.cgroup_root) {
            c.1 = Some(Instant::now());
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                use std::os::unix::fs::MetadataExt;
                if let Ok(md) = std::fs::metadata(&dir) {
                    let rel = dir.strip_prefix(root).unwrap_or(&dir).display().to_string();
                    c.0.insert(md.ino(), format!("/{rel}"));
                }
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    stack.extend(
                        rd.flatten()
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|e| e.path()),
                    );
                }
            }
            if let Some(p) = c.0.get(&id) {
                return p.clone();
            }
        }
        id.to_string()
    }

    /// A field's bytes as a label value. `scalar` is the field's number reading, if any.
    pub fn label(&self, d: Decoder, bytes: &[u8], scalar: Option<Scalar>) -> String {
        let num = || {
            scalar
                .unwrap_or(Scalar::Unsigned(bytes.len().min(8)))
                .read_u64(bytes, 0)
        };
        let signed = || match scalar {
            Some(Scalar::Signed(_)) => num() as i64 as i128,
            _ => num() as i128,
        };
        match d {
            Decoder::Int => match scalar {
                Some(s @ Scalar::Float(_)) => s.read_f64(bytes, 0).to_string(),
                Some(Scalar::Signed(_)) => (num() as i64).to_string(),
                _ => num().to_string(),
            },
            Decoder::Hex => format!("0x{:x}", num()),
            Decoder::String => {
                let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
                String::from_utf8_lossy(&bytes[..end]).into_owned()
            }
            Decoder::Ipv4 => match bytes.get(..4) {
                Some(b) => Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string(),
                None => "invalid".into(),
            },
            Decoder::Ipv6 => match bytes.get(..16) {
                Some(b) => Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap()).to_string(),
                None => "invalid".into(),
            },
            Decoder::Port => match bytes.get(..2) {
                Some(b) => u16::from_be_bytes([b[0], b[1]]).to_string(),
                None => "invalid".into(),
            },
            Decoder::PortHost => (num() & 0xffff).to_string(),
            Decoder::Cgroup => self.cgroup_path(num()),
            Decoder::Syscall => syscall_name(num() as u32),
            Decoder::Errno => errno_name(signed().unsigned_abs() as u32),
            Decoder::Ksym => match self.kernel.as_ref().and_then(|k| k.lookup(num())) {
                Some(s) => s.to_string(),
                None => format!("0x{:x}", num()),
            },
            Decoder::Usym => {
                let pid = *self.target_pid.lock().unwrap_or_else(|p| p.into_inner());
                self.user
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .user(pid.unwrap_or(0), num())
            }
        }
    }

    /// A value of BTF type `ty` as JSON: numbers, char arrays as strings, arrays as lists,
    /// structs as objects; `decoders` (by dotted path) turn chosen fields into decoded strings.
    pub fn json(
        &self,
        btf: &Btf,
        ty: u32,
        bytes: &[u8],
        path: &str,
        decoders: &std::collections::BTreeMap<String, Decoder>,
    ) -> Value {
        let size = btf.size_of(ty).min(bytes.len());
        let here = &bytes[..size];
        if let Some(d) = decoders.get(path) {
            return json!(self.label(*d, here, btf.scalar(ty)));
        }
        if btf.is_char_array(ty) {
            return json!(self.label(Decoder::String, here, None));
        }
        let id = btf.resolve(ty);
        match btf.ty(id) {
            Ty::Struct { members, .. } | Ty::Union { members, .. } => {
                let mut o = Map::new();
                for m in members {
                    if m.bitfield_size != 0 || is_padding(&m.name) {
                        continue;
                    }
                    let off = m.bit_offset as usize / 8;
                    let p = if path.is_empty() {
                        m.name.clone()
                    } else {
                        format!("{path}.{}", m.name)
                    };
                    let v = self.json(
                        btf,
                        m.ty,
                        bytes.get(off..).unwrap_or_default(),
                        &p,
                        decoders,
                    );
                    if m.name.is_empty() {
                        // Anonymous struct/union: its fields belong to the parent, as in C.
                        if let Value::Object(inner) = v {
                            o.extend(inner);
                        }
                    } else {
                        o.insert(m.name.clone(), v);
                    }
                }
                Value::Object(o)
            }
            Ty::Array { elem, len } => {
                let es = btf.size_of(*elem);
                Value::Array(
                    (0..*len as usize)
                        .map(|i| {
                            let b = bytes.get(i * es..).unwrap_or_default();
                            self.json(btf, *elem, b, path, decoders)
                        })
                        .collect(),
                )
            }
            Ty::Enum { values, .. } => {
                let v = btf
                    .scalar(id)
                    .map(|s| s.read_u64(here, 0) as i64)
                    .unwrap_or(0);
                match values.iter().find(|(_, x)| *x == v) {
                    Some((n, _)) => json!(n),
                    None => json!(v),
                }
            }
            _ => match btf.scalar(id) {
                Some(s @ Scalar::Float(_)) => json!(s.read_f64(here, 0)),
                Some(s @ Scalar::Signed(_)) => json!(s.read_u64(here, 0) as i64),
                Some(s) => json!(s.read_u64(here, 0)),
                None => Value::Null,
            },
        }
    }
}

/// Fields left out of event JSON: explicit padding (`pad`, `pad2`, `_reserved`, `__pad`).
fn is_padding(name: &str) -> bool {
    name.starts_with('_')
        || name
            .strip_prefix("pad")
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
        || name == "padding"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let c = DecodeCtx {
            kernel: None,
            user: Mutex::new(Symbolizer::default()),
            cgroups: Mutex::new((HashMap::new(), None)),
            cgroup_root: None,
            target_pid: Mutex::new(None),
        };
        let u = |n| Some(Scalar::Unsigned(n));
        assert_eq!(c.label(Decoder::Ipv4, &[127, 0, 0, 1], u(4)), "127.0.0.1");
        assert_eq!(c.label(Decoder::Port, &[0x1f, 0x90], u(2)), "8080");
        assert_eq!(c.label(Decoder::PortHost, &[0x90, 0x1f], u(2)), "8080");
        assert_eq!(
            c.label(Decoder::Syscall, &39u32.to_le_bytes(), u(4)),
            "getpid"
        );
        assert_eq!(
            c.label(
                Decoder::Errno,
                &(-2i32).to_le_bytes(),
                Some(Scalar::Signed(4))
            ),
            "ENOENT"
        );
        assert_eq!(c.label(Decoder::String, b"sh\0xx", None), "sh");
        assert_eq!(
            c.label(
                Decoder::Int,
                &(-5i16).to_le_bytes(),
                Some(Scalar::Signed(2))
            ),
            "-5"
        );
        assert_eq!(c.label(Decoder::Hex, &255u64.to_le_bytes(), u(8)), "0xff");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(c.label(Decoder::Ipv6, &v6, None), "::1");
    }
}
