//! Compiles workloads/bare.bpf.c (the reference program for cost floors) with the recipe of the
//! sidecar's own probes (sidecar-ebpf/clang.rs).
use std::path::PathBuf;

#[allow(dead_code)] // only the own-probes recipe is used here
mod clang {
    include!("../sidecar-ebpf/clang.rs");
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let src = manifest.join("../workloads/bare.bpf.c");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-changed=../sidecar-ebpf/clang.rs");
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang =
        clang::find_clang().expect("clang not found (apt-get install clang-19) or set CLANG");
    let st = clang::command(
        &clang,
        clang::Recipe::Own,
        &[&manifest.join("../sidecar-ebpf/include")],
        &src,
        &out.join("bare.bpf.o"),
    )
    .status()
    .expect("running clang");
    assert!(st.success(), "clang failed on {}", src.display());
}
