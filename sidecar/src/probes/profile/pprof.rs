//! Folded stacks to the pprof protobuf format (profile.proto), gzip-compressed as `go tool
//! pprof`, Pyroscope and Parca read it. Written by hand: a dozen fields do not need a codegen.

use std::collections::HashMap;
use std::io::Write;

struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v);
        }
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn msg(&mut self, field: u32, f: impl FnOnce(&mut Pb)) {
        let mut inner = Pb(Vec::new());
        f(&mut inner);
        self.bytes(field, &inner.0);
    }
    fn packed(&mut self, field: u32, vals: &[u64]) {
        let mut inner = Pb(Vec::new());
        for v in vals {
            inner.varint(*v);
        }
        self.bytes(field, &inner.0);
    }
}

/// `stacks`: frames root first, with sample counts; `period_ns`: CPU time one sample stands for.
pub fn encode(
    stacks: &[(Vec<String>, u64)],
    period_ns: u64,
    duration_ns: u64,
    time_ns: u64,
) -> Vec<u8> {
    let mut strings: Vec<String> = vec![String::new()];
    let mut string_ids: HashMap<String, u64> = HashMap::new();
    let mut intern = |s: &str, strings: &mut Vec<String>| -> u64 {
        if let Some(id) = string_ids.get(s) {
            return *id;
        }
        strings.push(s.to_string());
        let id = strings.len() as u64 - 1;
        string_ids.insert(s.to_string(), id);
        id
    };
    let samples_s = intern("samples", &mut strings);
    let count_s = intern("count", &mut strings);
    let cpu_s = intern("cpu", &mut strings);
    let ns_s = intern("nanoseconds", &mut strings);

    // One function and one location per distinct frame name (ids from 1).
    let mut funcs: Vec<u64> = Vec::new(); // name string id, index = id - 1
    let mut func_ids: HashMap<String, u64> = HashMap::new();
    let mut out = Pb(Vec::new());
    for (ty, unit) in [(samples_s, count_s), (cpu_s, ns_s)] {
        out.msg(1, |m| {
            m.uint(1, ty);
            m.uint(2, unit);
        });
    }
    for (frames, count) in stacks {
        let mut locs = Vec::with_capacity(frames.len());
        for f in frames.iter().rev() {
            let id = match func_ids.get(f) {
                Some(id) => *id,
                None => {
                    funcs.push(intern(f, &mut strings));
                    let id = funcs.len() as u64;
                    func_ids.insert(f.clone(), id);
                    id
                }
            };
            locs.push(id);
        }
        out.msg(2, |m| {
            m.packed(1, &locs);
            m.packed(2, &[*count, count * period_ns]);
        });
    }
    for (i, _) in funcs.iter().enumerate() {
        let id = i as u64 + 1;
        out.msg(4, |m| {
            m.uint(1, id);
            m.msg(4, |l| l.uint(1, id));
        });
    }
    for (i, name) in funcs.iter().enumerate() {
        out.msg(5, |m| {
            m.uint(1, i as u64 + 1);
            m.uint(2, *name);
            m.uint(3, *name);
        });
    }
    for s in &strings {
        out.bytes(6, s.as_bytes());
    }
    out.uint(9, time_ns);
    out.uint(10, duration_ns);
    out.msg(11, |m| {
        m.uint(1, cpu_s);
        m.uint(2, ns_s);
    });
    out.uint(12, period_ns);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&out.0).expect("in-memory write");
    gz.finish().expect("in-memory write")
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_gzip_with_strings() {
        let p = super::encode(
            &[(vec!["main".into(), "hot".into()], 3)],
            20_408_163,
            1_000_000_000,
            1,
        );
        assert_eq!(&p[..2], &[0x1f, 0x8b]);
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&p[..]), &mut raw).unwrap();
        assert!(raw.windows(3).any(|w| w == b"hot"));
    }
}
