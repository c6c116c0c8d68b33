//! Compiles every `bpf/*.bpf.c` into `$OUT_DIR/<name>.bpf.o` with clang (CO-RE, BTF), and
//! `records.bpf.c` (BTF of ring buffer records, for the mirror test). `CLANG` picks the compiler;
//! otherwise the first of `clang::CLANG_CANDIDATES` found on PATH. The flags are `clang.rs`'s.

use std::path::{Path, PathBuf};

#[allow(dead_code)] // the library uses the rest of it
mod clang {
    include!("clang.rs");
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let include = manifest.join("include");
    let clang = clang::find_clang().unwrap_or_else(|| {
        panic!(
            "no clang found: install clang (Debian: apt-get install clang-19 libbpf-dev) or set CLANG"
        )
    });
    println!("cargo:rerun-if-env-changed=CLANG");
    // Extra clang flags for the project's objects (e.g. `-DSIDECAR_TREE_MAX=8192`): a build with a
    // different kernel-side ABI, for the test of two ABIs on one host.
    println!("cargo:rerun-if-env-changed=SIDECAR_EBPF_CFLAGS");
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-changed=clang.rs");

    let mut sources: Vec<PathBuf> = std::fs::read_dir(manifest.join("bpf"))
        .expect("sidecar-ebpf/bpf")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    sources.push(manifest.join("records.bpf.c"));
    for src in &sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let stem = src
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".bpf.c", "");
        compile(&clang, src, &include, &out.join(format!("{stem}.bpf.o")));
    }
    gzip(&include.join("vmlinux.h"), &out.join("vmlinux.h.gz"));
}

fn gzip(src: &Path, dst: &Path) {
    use std::io::Write;
    let data = std::fs::read(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&data).unwrap();
    std::fs::write(dst, enc.finish().unwrap()).unwrap();
}

fn compile(clang: &Path, src: &Path, include: &Path, obj: &Path) {
    let extra = std::env::var("SIDECAR_EBPF_CFLAGS").unwrap_or_default();
    let status = clang::command(clang, clang::Recipe::Own, &[include], src, obj)
        .args(extra.split_whitespace())
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", clang.display()));
    assert!(status.success(), "clang failed on {}", src.display());
}
