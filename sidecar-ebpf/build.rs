//! Compiles every `bpf/*.bpf.c` into `$OUT_DIR/<name>.bpf.o` with clang (CO-RE, BTF).
//! `CLANG` picks the compiler; otherwise the first of clang-19, clang found on PATH.

use std::path::{Path, PathBuf};
use std::process::Command;

fn find_clang() -> PathBuf {
    if let Some(c) = std::env::var_os("CLANG") {
        return PathBuf::from(c);
    }
    for name in ["clang-19", "clang-18", "clang-17", "clang-16", "clang"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return PathBuf::from(name);
        }
    }
    panic!(
        "no clang found: install clang (Debian: apt-get install clang-19 libbpf-dev) or set CLANG"
    );
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let include = manifest.join("include");
    let clang = find_clang();
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed={}", include.display());

    let mut sources: Vec<PathBuf> = std::fs::read_dir(manifest.join("bpf"))
        .expect("sidecar-ebpf/bpf")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
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
    let status = Command::new(clang)
        .args([
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-Wall",
            "-Werror",
        ])
        .args(["-Wno-unused-function", "-fno-stack-protector"])
        .arg("-I")
        .arg(include)
        .args(["-I", "/usr/include/x86_64-linux-gnu"])
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", clang.display()));
    assert!(status.success(), "clang failed on {}", src.display());
}
