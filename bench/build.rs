//! Compiles bench/bpf/*.bpf.c (reference programs for cost floors) with the same flags as the
//! sidecar's probes.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let clang = std::env::var("CLANG").unwrap_or_else(|_| {
        ["clang-19", "clang"]
            .into_iter()
            .find(|c| {
                Command::new(c)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("clang not found")
            .to_string()
    });
    println!("cargo:rerun-if-changed=bpf");
    let st = Command::new(&clang)
        .args([
            "-g",
            "-O2",
            "-target",
            "bpf",
            "-D__TARGET_ARCH_x86",
            "-Wall",
            "-Werror",
            "-I",
        ])
        .arg(manifest.join("../sidecar-ebpf/include"))
        .arg("-c")
        .arg(manifest.join("bpf/bare.bpf.c"))
        .arg("-o")
        .arg(out.join("bare.bpf.o"))
        .status()
        .expect("running clang");
    assert!(st.success());
}
