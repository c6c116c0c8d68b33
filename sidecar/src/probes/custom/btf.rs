//! A small reader of the `.BTF` section of a user's object: just what decoding map keys, values
//! and events needs (struct layouts, integer kinds, array shapes, and the `.maps` definitions).
//! aya-obj parses BTF too, but keeps its type table crate-private.

use std::collections::HashMap;

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum BtfError {
    #[error("the object has no .BTF section (compile with clang -g)")]
    Missing,
    #[error("malformed .BTF section: {0}")]
    Malformed(String),
    #[error("no type {0:?} in the object's BTF")]
    NoType(String),
    #[error("{ty} has no field {field:?} (fields: {known})")]
    NoField {
        ty: String,
        field: String,
        known: String,
    },
    #[error("field {0:?} is a bitfield, which is not supported: use a whole integer")]
    Bitfield(String),
}

/// One BTF type, with modifiers kept so that they can be skipped.
#[derive(Clone, Debug, PartialEq)]
pub enum Ty {
    Void,
    Int {
        size: u32,
        signed: bool,
        char: bool,
    },
    Ptr(u32),
    Array {
        elem: u32,
        len: u32,
    },
    Struct {
        size: u32,
        members: Vec<Member>,
    },
    Union {
        size: u32,
        members: Vec<Member>,
    },
    Enum {
        size: u32,
        signed: bool,
        values: Vec<(String, i64)>,
    },
    Fwd,
    /// typedef, volatile, const, restrict, type tag: the type they qualify.
    Alias(u32),
    Float {
        size: u32,
    },
    Var {
        ty: u32,
    },
    Datasec {
        vars: Vec<u32>,
    },
    Other,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    pub ty: u32,
    pub bit_offset: u32,
    pub bitfield_size: u32,
}

#[derive(Debug, Default)]
pub struct Btf {
    /// Index = type id (0 is void).
    types: Vec<(String, Ty)>,
    by_name: HashMap<String, u32>,
}

/// A map as declared in the object's `.maps` section (BTF-defined maps).
#[derive(Clone, Debug, PartialEq)]
pub struct MapDef {
    pub name: String,
    pub map_type: Option<u32>,
    pub key: Option<u32>,
    pub value: Option<u32>,
}

/// Where a (possibly nested) field sits and what it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Field {
    pub offset: usize,
    pub ty: u32,
}

/// What a scalar's bytes mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    Unsigned(usize),
    Signed(usize),
    Float(usize),
}

impl Scalar {
    pub fn size(self) -> usize {
        match self {
            Scalar::Unsigned(s) | Scalar::Signed(s) | Scalar::Float(s) => s,
        }
    }

    /// Read it from `b` at `at` (little endian, as the kernel on x86_64 and arm64 writes it).
    pub fn read_u64(self, b: &[u8], at: usize) -> u64 {
        let n = self.size().min(8);
        let mut raw = [0u8; 8];
        if let Some(s) = b.get(at..at + n) {
            raw[..n].copy_from_slice(s);
        }
        let v = u64::from_le_bytes(raw);
        match self {
            Scalar::Signed(s) if s < 8 => {
                let shift = 64 - 8 * s as u32;
                (((v << shift) as i64) >> shift) as u64
            }
            _ => v,
        }
    }

    pub fn read_f64(self, b: &[u8], at: usize) -> f64 {
        let v = self.read_u64(b, at);
        match self {
            Scalar::Unsigned(_) => v as f64,
            Scalar::Signed(_) => v as i64 as f64,
            Scalar::Float(4) => f32::from_bits(v as u32) as f64,
            Scalar::Float(_) => f64::from_bits(v),
        }
    }
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

impl Btf {
    /// The `.BTF` section of an ELF object.
    pub fn from_elf(elf: &[u8]) -> Result<Self, BtfError> {
        use object::{Object as _, ObjectSection as _};
        let file = object::File::parse(elf).map_err(|e| BtfError::Malformed(e.to_string()))?;
        let sec = file.section_by_name(".BTF").ok_or(BtfError::Missing)?;
        let data = sec.data().map_err(|e| BtfError::Malformed(e.to_string()))?;
        Self::parse(data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let bad = |s: &str| BtfError::Malformed(s.to_string());
        let u32_at = |at: usize| -> Result<u32, BtfError> {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                .ok_or_else(|| bad("truncated"))
        };
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != 0xeb9f {
            return Err(bad("bad magic (big-endian objects are not supported)"));
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| bad("string section out of bounds"))?;
        let name = |off: u32| -> String {
            let s = strings.get(off as usize..).unwrap_or_default();
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        let start = hdr_len + type_off;
        let end = start + type_len;
        if end > data.len() {
            return Err(bad("type section out of bounds"));
        }
        let mut types = vec![(String::new(), Ty::Void)];
        let mut at = start;
        while at < end {
            let name_off = u32_at(at)?;
            let info = u32_at(at + 4)?;
            let size_or_type = u32_at(at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let members = |at: &mut usize| -> Result<Vec<Member>, BtfError> {
                let mut m = Vec::with_capacity(vlen);
                for _ in 0..vlen {
                    let (n, ty, off) = (u32_at(*at)?, u32_at(*at + 4)?, u32_at(*at + 8)?);
                    *at += 12;
                    let (bit_offset, bitfield_size) = if kind_flag {
                        (off & 0xff_ffff, off >> 24)
                    } else {
                        (off, 0)
                    };
                    m.push(Member {
                        name: name(n),
                        ty,
                        bit_offset,
                        bitfield_size,
                    });
                }
                Ok(m)
            };
            let ty = match kind {
                KIND_INT => {
                    let enc = u32_at(at)?;
                    at += 4;
                    let e = (enc >> 24) & 0xf;
                    Ty::Int {
                        size: size_or_type,
                        signed: e & 1 != 0,
                        char: e & 2 != 0,
                    }
                }
                KIND_PTR => Ty::Ptr(size_or_type),
                KIND_ARRAY => {
                    let (elem, len) = (u32_at(at)?, u32_at(at + 8)?);
                    at += 12;
                    Ty::Array { elem, len }
                }
                KIND_STRUCT => Ty::Struct {
                    size: size_or_type,
                    members: members(&mut at)?,
                },
                KIND_UNION => Ty::Union {
                    size: size_or_type,
                    members: members(&mut at)?,
                },
                KIND_ENUM | KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let n = name(u32_at(at)?);
                        let v = if kind == KIND_ENUM {
                            at += 8;
                            u32_at(at - 4)? as i32 as i64
                        } else {
                            at += 12;
                            (u64::from(u32_at(at - 4)?) << 32 | u64::from(u32_at(at - 8)?)) as i64
                        };
                        values.push((n, v));
                    }
                    Ty::Enum {
                        size: size_or_type,
                        signed: kind_flag,
                        values,
                    }
                }
                KIND_FWD => Ty::Fwd,
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Ty::Alias(size_or_type)
                }
                KIND_FUNC => Ty::Other,
                KIND_FUNC_PROTO => {
                    at += 8 * vlen;
                    Ty::Other
                }
                KIND_VAR => {
                    at += 4;
                    Ty::Var { ty: size_or_type }
                }
                KIND_DATASEC => {
                    let mut vars = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        vars.push(u32_at(at)?);
                        at += 12;
                    }
                    Ty::Datasec { vars }
                }
                KIND_FLOAT => Ty::Float { size: size_or_type },
                KIND_DECL_TAG => {
                    at += 4;
                    Ty::Other
                }
                k => return Err(BtfError::Malformed(format!("unknown BTF kind {k}"))),
            };
            types.push((name(name_off), ty));
        }
        let mut by_name = HashMap::new();
        for (id, (n, ty)) in types.iter().enumerate() {
            if !n.is_empty() && matches!(ty, Ty::Struct { .. } | Ty::Union { .. }) {
                by_name.entry(n.clone()).or_insert(id as u32);
            }
        }
        Ok(Self { types, by_name })
    }

    pub fn ty(&self, id: u32) -> &Ty {
        self.types
            .get(id as usize)
            .map(|t| &t.1)
            .unwrap_or(&Ty::Void)
    }

    /// Skip typedefs and qualifiers.
    pub fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id) {
                Ty::Alias(t) => id = *t,
                _ => return id,
            }
        }
        id
    }

    /// A readable name of a type (`struct conn_stats`, `__u64`, `char[16]`).
    pub fn describe(&self, id: u32) -> String {
        let (name, ty) = self
            .types
            .get(id as usize)
            .cloned()
            .unwrap_or((String::new(), Ty::Void));
        match ty {
            Ty::Struct { .. } => format!("struct {name}"),
            Ty::Union { .. } => format!("union {name}"),
            Ty::Enum { .. } => format!("enum {name}"),
            Ty::Array { elem, len } => format!("{}[{len}]", self.describe(elem)),
            Ty::Ptr(_) => "pointer".into(),
            Ty::Void => "void".into(),
            _ if !name.is_empty() => name,
            Ty::Alias(t) => self.describe(t),
            _ => "?".into(),
        }
    }

    pub fn size_of(&self, id: u32) -> usize {
        match self.ty(self.resolve(id)) {
            Ty::Int { size, .. } | Ty::Enum { size, .. } | Ty::Float { size } => *size as usize,
            Ty::Struct { size, .. } | Ty::Union { size, .. } => *size as usize,
            Ty::Ptr(_) => 8,
            Ty::Array { elem, len } => self.size_of(*elem) * *len as usize,
            _ => 0,
        }
    }

    /// The scalar reading of a type, if it is a number (ints, enums, floats, pointers).
    pub fn scalar(&self, id: u32) -> Option<Scalar> {
        match self.ty(self.resolve(id)) {
            Ty::Int { size, signed, .. } | Ty::Enum { size, signed, .. } => Some(if *signed {
                Scalar::Signed(*size as usize)
            } else {
                Scalar::Unsigned(*size as usize)
            }),
            Ty::Float { size } => Some(Scalar::Float(*size as usize)),
            Ty::Ptr(_) => Some(Scalar::Unsigned(8)),
            _ => None,
        }
    }

    /// Whether the type is an array of chars (a C string buffer).
    pub fn is_char_array(&self, id: u32) -> bool {
        match self.ty(self.resolve(id)) {
            Ty::Array { elem, .. } => {
                let e = self.resolve(*elem);
                matches!(
                    self.ty(e),
                    Ty::Int {
                        size: 1,
                        char: true,
                        ..
                    }
                ) || matches!(self.ty(e), Ty::Int { size: 1, .. })
                    && self.types[e as usize].0.contains("char")
            }
            _ => false,
        }
    }

    pub fn struct_by_name(&self, name: &str) -> Result<u32, BtfError> {
        let n = name.strip_prefix("struct ").unwrap_or(name);
        self.by_name
            .get(n)
            .copied()
            .ok_or_else(|| BtfError::NoType(format!("struct {n}")))
    }

    pub fn members(&self, id: u32) -> Option<&[Member]> {
        match self.ty(self.resolve(id)) {
            Ty::Struct { members, .. } | Ty::Union { members, .. } => Some(members),
            _ => None,
        }
    }

    /// A field by dotted path (`stats.max_ns`) inside struct/union `id`. Anonymous unions and
    /// structs are looked into, as C does.
    pub fn field(&self, id: u32, path: &str) -> Result<Field, BtfError> {
        let mut cur = Field { offset: 0, ty: id };
        for part in path.split('.') {
            cur = self.member(cur, part).ok_or_else(|| BtfError::NoField {
                ty: self.describe(self.resolve(cur.ty)),
                field: part.to_string(),
                known: self
                    .members(cur.ty)
                    .map(|m| {
                        m.iter()
                            .map(|m| m.name.as_str())
                            .filter(|n| !n.is_empty())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_else(|| "none: not a struct".into()),
            })??;
        }
        Ok(cur)
    }

    fn member(&self, at: Field, name: &str) -> Option<Result<Field, BtfError>> {
        for m in self.members(at.ty)? {
            let off = at.offset + m.bit_offset as usize / 8;
            if m.name == name {
                if m.bitfield_size != 0 || m.bit_offset % 8 != 0 {
                    return Some(Err(BtfError::Bitfield(name.to_string())));
                }
                return Some(Ok(Field {
                    offset: off,
                    ty: m.ty,
                }));
            }
            if m.name.is_empty()
                && let Some(f) = self.member(
                    Field {
                        offset: off,
                        ty: m.ty,
                    },
                    name,
                )
            {
                return Some(f);
            }
        }
        None
    }

    /// The maps declared in `.maps` (libbpf's BTF-defined map syntax).
    pub fn maps(&self) -> Vec<MapDef> {
        let mut out = Vec::new();
        for (name, ty) in &self.types {
            let Ty::Datasec { vars } = ty else { continue };
            if name != ".maps" {
                continue;
            }
            for &v in vars {
                let (vname, Ty::Var { ty }) = &self.types[v as usize] else {
                    continue;
                };
                let mut def = MapDef {
                    name: vname.clone(),
                    map_type: None,
                    key: None,
                    value: None,
                };
                for m in self.members(*ty).unwrap_or_default() {
                    // `__uint(name, N)` is `int (*name)[N]`; `__type(name, T)` is `T *name`.
                    let pointee = |t: u32| match self.ty(self.resolve(t)) {
                        Ty::Ptr(to) => Some(*to),
                        _ => None,
                    };
                    match m.name.as_str() {
                        "type" => {
                            def.map_type = pointee(m.ty).and_then(|a| match self.ty(a) {
                                Ty::Array { len, .. } => Some(*len),
                                _ => None,
                            })
                        }
                        "key" => def.key = pointee(m.ty),
                        "value" => def.value = pointee(m.ty),
                        _ => {}
                    }
                }
                out.push(def);
            }
        }
        out
    }

    /// Whether the object declares a global variable (e.g. a `const volatile` setting).
    pub fn has_var(&self, name: &str) -> Option<usize> {
        self.types.iter().find_map(|(n, ty)| match ty {
            Ty::Var { ty } if n == name => Some(self.size_of(*ty)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_maps_and_structs_of_a_real_object() {
        let btf = Btf::from_elf(sidecar_ebpf::objects::SYSCALLS).unwrap();
        let maps = btf.maps();
        let target = maps
            .iter()
            .find(|m| m.name == sidecar_ebpf::SLOTS_MAP)
            .expect("sidecar_slots declared");
        assert_eq!(target.map_type, Some(2), "BPF_MAP_TYPE_ARRAY");
        let v = target.value.unwrap();
        assert_eq!(btf.size_of(v), std::mem::size_of::<sidecar_ebpf::Target>());
        assert_eq!(btf.describe(v), "struct sidecar_target");
        let f = btf.field(v, "self_tgid").unwrap();
        assert_eq!(f.offset, 28);
        assert_eq!(btf.scalar(f.ty), Some(Scalar::Unsigned(4)));
        assert_eq!(btf.scalar(target.key.unwrap()), Some(Scalar::Unsigned(4)));
        let e = btf.field(v, "nope").unwrap_err();
        assert!(
            e.to_string().contains("fields: cgroup_id, pidns_dev"),
            "{e}"
        );
        assert!(
            Btf::from_elf(b"not an elf")
                .unwrap_err()
                .to_string()
                .contains("malformed")
        );
    }

    #[test]
    fn scalars() {
        assert_eq!(
            Scalar::Signed(2).read_u64(&(-3i16).to_le_bytes(), 0) as i64,
            -3
        );
        assert_eq!(Scalar::Float(8).read_f64(&1.5f64.to_le_bytes(), 0), 1.5);
        assert_eq!(Scalar::Unsigned(4).read_u64(&[1, 0, 0, 0, 9], 0), 1);
    }
}
