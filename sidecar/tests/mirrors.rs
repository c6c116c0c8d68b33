//! The Rust mirrors of the structs the kernel programs share with userspace
//! (`sidecar_ebpf::MIRRORS`) against those structs as clang laid them out: the BTF of the
//! compiled objects. Same member names in the same order, same offsets and sizes, same total
//! size. And no struct of `include/sidecar.h` without a mirror, unless allowed below with why.
//! No privileges needed: only the embedded objects' bytes are read.

use sidecar::probes::custom::btf::Btf;
use sidecar_ebpf::{MIRRORS, Mirror, MirrorField, objects};

/// Structs of `include/sidecar.h` that userspace never reads, so have no mirror: (name, why).
const UNMIRRORED: &[(&str, &str)] = &[];

fn family_btfs() -> Vec<(&'static str, Btf)> {
    objects::ALL
        .iter()
        .map(|(name, elf)| {
            let btf = Btf::from_elf(elf).unwrap_or_else(|e| panic!("{name}.bpf.o: {e}"));
            (*name, btf)
        })
        .collect()
}

fn records_btf() -> Btf {
    Btf::from_elf(objects::RECORDS).expect("records.bpf.o")
}

/// What differs between a mirror and the struct `id` of `btf` (empty when they agree).
fn differences(m: &Mirror, btf: &Btf, id: u32) -> Vec<String> {
    let mut out = Vec::new();
    let c_size = btf.size_of(id);
    if c_size != m.size {
        out.push(format!("size: C {c_size}, Rust {}", m.size));
    }
    let members = btf.members(id).unwrap_or_default();
    let c_names: Vec<&str> = members.iter().map(|f| f.name.as_str()).collect();
    let rust_names: Vec<&str> = m.fields.iter().map(|f| f.c).collect();
    if c_names != rust_names {
        out.push(format!(
            "members: C {c_names:?}, Rust {rust_names:?} (a Rust field named differently from \
             C says so in MIRRORS: `rust_name as \"c_name\"`)"
        ));
    }
    for member in members {
        let Some(f) = m.field(&member.name) else {
            continue;
        };
        if member.bitfield_size != 0 || member.bit_offset % 8 != 0 {
            out.push(format!("{}: a bitfield in C", member.name));
            continue;
        }
        let (offset, size) = (member.bit_offset as usize / 8, btf.size_of(member.ty));
        if (offset, size) != (f.offset, f.size) {
            out.push(format!(
                "{}: C offset {offset} size {size} ({}), Rust `{}` offset {} size {}",
                member.name,
                btf.describe(member.ty),
                f.rust,
                f.offset,
                f.size
            ));
        }
    }
    out
}

#[test]
fn every_mirror_matches_its_struct_in_the_objects_btf() {
    let families = family_btfs();
    let records = records_btf();
    let mut problems = Vec::new();
    for m in MIRRORS {
        let in_families: Vec<(&str, &Btf, u32)> = families
            .iter()
            .filter_map(|(name, btf)| Some((*name, btf, btf.struct_by_name(m.c).ok()?)))
            .collect();
        let record_var = format!("record_{}", m.c);
        let found = if in_families.is_empty() {
            match records.struct_by_name(m.c) {
                Ok(id) if records.has_var(&record_var).is_some() => vec![("records", &records, id)],
                _ => {
                    problems.push(format!(
                        "struct {} (mirrored by {}) is in no object's BTF: no map or program \
                         signature names it. If the programs only write it into a ring buffer, \
                         add `struct {} {record_var};` to sidecar-ebpf/records.bpf.c",
                        m.c, m.rust, m.c
                    ));
                    continue;
                }
            }
        } else {
            if records.has_var(&record_var).is_some() {
                problems.push(format!(
                    "struct {} is in {}.bpf.o's BTF: drop {record_var} from records.bpf.c",
                    m.c, in_families[0].0
                ));
            }
            in_families
        };
        // Every object that has it: they all include the same header, with their own defines.
        for (object, btf, id) in found {
            for d in differences(m, btf, id) {
                problems.push(format!(
                    "{} vs struct {} in {object}.bpf.o: {d}",
                    m.rust, m.c
                ));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The `struct NAME {` definitions of a C header (top level, one per line as sidecar.h has them).
fn header_structs(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("struct ")?.strip_suffix(" {"))
        .collect()
}

#[test]
fn every_shared_struct_has_a_mirror_or_a_reason() {
    let structs = header_structs(sidecar_ebpf::headers::SIDECAR_H);
    assert!(structs.len() > 20, "sidecar.h parsed: {structs:?}");
    let mirrored = |s: &str| MIRRORS.iter().any(|m| m.c == s);
    let allowed = |s: &str| UNMIRRORED.iter().any(|(n, _)| *n == s);
    let missing: Vec<&&str> = structs
        .iter()
        .filter(|s| !mirrored(s) && !allowed(s))
        .collect();
    assert!(
        missing.is_empty(),
        "structs of include/sidecar.h with no mirror in sidecar_ebpf::MIRRORS: {missing:?} \
         (mirror them, or list them in UNMIRRORED with the reason userspace never reads them)"
    );
    for (name, why) in UNMIRRORED {
        assert!(
            structs.contains(name),
            "UNMIRRORED {name}: not in sidecar.h"
        );
        assert!(!mirrored(name), "UNMIRRORED {name}: it has a mirror now");
        assert!(!why.is_empty(), "UNMIRRORED {name}: say why");
    }
    for m in MIRRORS {
        assert!(
            structs.contains(&m.c),
            "{} mirrors struct {}, which include/sidecar.h does not define",
            m.rust,
            m.c
        );
    }
}

/// The comparison itself catches what it must: a field moved, resized, renamed, or left out.
#[test]
fn a_wrong_mirror_is_reported() {
    // A per-slot map's key: in records.bpf.o's BTF (see there).
    let btf = &records_btf();
    let id = btf.struct_by_name("syscall_error_key").unwrap();
    let field = |c: &'static str, offset, size| MirrorField {
        rust: c,
        c,
        offset,
        size,
    };
    let right = Mirror {
        rust: "Right",
        c: "syscall_error_key",
        size: 8,
        fields: &[],
    };
    let fields = [field("nr", 0, 4), field("err", 4, 4)];
    let m = |fields: &'static [MirrorField], size| Mirror {
        fields,
        size,
        ..right
    };
    let leak = |v: Vec<MirrorField>| -> &'static [MirrorField] { Vec::leak(v) };
    assert_eq!(
        differences(&m(leak(fields.to_vec()), 8), btf, id),
        Vec::<String>::new()
    );
    let moved = leak(vec![field("nr", 0, 4), field("err", 2, 4)]);
    assert!(differences(&m(moved, 8), btf, id)[0].contains("err: C offset 4 size 4"));
    let resized = leak(vec![field("nr", 0, 8), field("err", 4, 4)]);
    assert_eq!(differences(&m(resized, 8), btf, id).len(), 1);
    let renamed = leak(vec![field("nr", 0, 4), field("errno", 4, 4)]);
    assert!(differences(&m(renamed, 8), btf, id)[0].starts_with("members:"));
    let short = leak(vec![field("nr", 0, 4)]);
    assert_eq!(
        differences(&m(short, 4), btf, id),
        vec![
            "size: C 8, Rust 4".to_string(),
            "members: C [\"nr\", \"err\"], Rust [\"nr\"] (a Rust field named differently from C \
             says so in MIRRORS: `rust_name as \"c_name\"`)"
                .to_string()
        ]
    );
}
