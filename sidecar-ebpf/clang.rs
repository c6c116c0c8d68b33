// The one recipe for compiling BPF C in this project. Build scripts `include!` this file
// (sidecar-ebpf/build.rs for the probes, bench/build.rs for the bench's reference programs) and
// the library exports it as `sidecar_ebpf::clang` for objects compiled at run time (tests and
// benches building custom probes the way a user does). Plain std only, no inner attributes:
// it must compile inside a build script as well as inside the library.

/// What every BPF object is compiled with, a user's custom probe included: BTF (`-g`: CO-RE and
/// the sidecar's BTF reader need it), the BPF target, and the architecture the `PT_REGS` macros
/// of libbpf's headers read registers for.
pub const BPF_CFLAGS: &[&str] = &["-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86"];

/// Added for the project's own objects (`Recipe::Own`): warnings are errors, except for helpers a
/// shared header defines and some includer does not call; the BPF target has no stack protector
/// to offer, and a distribution default that asks for one must not fail the build.
pub const OWN_CFLAGS: &[&str] = &[
    "-Wall",
    "-Werror",
    "-Wno-unused-function",
    "-fno-stack-protector",
];

/// Where Debian keeps `asm/types.h` (which `linux/types.h` and libbpf's headers include): clang
/// with `-target bpf` does not look in the multiarch directory by itself. After the caller's
/// include directories, for the project's own objects.
pub const MULTIARCH_INCLUDE: &str = "/usr/include/x86_64-linux-gnu";

/// The build line users are given for a custom probe (`ebpf-sidecar custom headers` help,
/// docs/families/custom.md): `clang` + [`BPF_CFLAGS`] + `-I DIR` (a unit test keeps them equal).
pub const USER_COMMAND: &str =
    "clang -g -O2 -target bpf -D__TARGET_ARCH_x86 -I DIR -c probe.bpf.c -o probe.bpf.o";

/// Compilers tried in this order when `CLANG` is not set.
pub const CLANG_CANDIDATES: &[&str] = &["clang-19", "clang-18", "clang-17", "clang-16", "clang"];

/// Which flags: the project's own objects are held to [`OWN_CFLAGS`]; objects built the way a
/// user builds a custom probe get exactly [`USER_COMMAND`]'s flags, so a test of them proves the
/// documented line works.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    Own,
    User,
}

/// `$CLANG` when set, else the first of [`CLANG_CANDIDATES`] that runs.
pub fn find_clang() -> Option<std::path::PathBuf> {
    if let Some(c) = std::env::var_os("CLANG") {
        return Some(std::path::PathBuf::from(c));
    }
    CLANG_CANDIDATES
        .iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(std::path::PathBuf::from)
}

/// The clang command line compiling `src` into `obj`: the recipe's flags, then `-I` each of
/// `includes` in order (then [`MULTIARCH_INCLUDE`] for `Recipe::Own`).
pub fn command(
    clang: &std::path::Path,
    recipe: Recipe,
    includes: &[&std::path::Path],
    src: &std::path::Path,
    obj: &std::path::Path,
) -> std::process::Command {
    let mut c = std::process::Command::new(clang);
    c.args(BPF_CFLAGS);
    if recipe == Recipe::Own {
        c.args(OWN_CFLAGS);
    }
    for dir in includes {
        c.arg("-I").arg(dir);
    }
    if recipe == Recipe::Own {
        c.args(["-I", MULTIARCH_INCLUDE]);
    }
    c.arg("-c").arg(src).arg("-o").arg(obj);
    c
}
