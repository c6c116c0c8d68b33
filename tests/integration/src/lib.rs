//! Harness of the privileged end-to-end tests and of the benchmarks (bench/ uses this crate):
//! build the workloads (`workloads/` at the repository root) and BPF objects (the recipe of
//! `sidecar_ebpf::clang`), start the sidecar (binary or image), scrape it, drive real Docker.
//! Missing prerequisites fail the test with what to install; nothing is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use sidecar_ebpf::clang::Recipe;

pub mod apps;
mod bpftrace;
pub mod counted;
pub mod docker;
mod http;
mod metrics;
pub mod real;
mod runner;
pub mod servers;

pub use bpftrace::{Bpftrace, ensure_tracefs};
pub use http::{free_port, http_get, http_get_bytes, stream_lines};
pub use metrics::{Metrics, promtool_check};
pub use runner::{Sidecar, run_program, run_workload, run_workload_exiting};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Fail (not skip) when not root: these tests load BPF programs and drive dockerd.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "privileged tests must run as root (see README: run the tests)"
    );
}

/// The sidecar binary under test: $SIDECAR_BIN, else target/release, else target/debug.
pub fn sidecar_bin() -> PathBuf {
    find_sidecar(&["release", "debug"])
}

/// The sidecar binary a benchmark measures: $SIDECAR_BIN, else target/release (a debug build's
/// numbers mean nothing).
pub fn sidecar_release_bin() -> PathBuf {
    find_sidecar(&["release"])
}

fn find_sidecar(profiles: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var("SIDECAR_BIN") {
        return PathBuf::from(p);
    }
    let root = repo_root();
    for profile in profiles {
        let p = root.join("target").join(profile).join("ebpf-sidecar");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "ebpf-sidecar is not built: run `cargo build --release -p sidecar` first (scripts/test.sh does)"
    );
}

/// The folder of every workload the tests and benches run: C programs, scripts, BPF C.
pub fn workloads_dir() -> PathBuf {
    repo_root().join("workloads")
}

/// A static build of `workloads/NAME.c` into `target/workloads/NAME`, built once per process. Tests run in
/// parallel and may be executing the binary already: it is built under a temporary name and
/// renamed over the old one (writing into a running executable fails with ETXTBSY).
pub fn workload(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let dir = repo_root().join("target/workloads");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let src = workloads_dir().join(format!("{name}.c"));
    // Frame pointers: the kernel unwinds user stacks by them (profiler tests).
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-fno-omit-frame-pointer", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .expect("gcc not found: apt-get install gcc libc6-dev");
    assert!(st.success(), "building {}", src.display());
    std::fs::rename(&tmp, &out).unwrap();
    built.push((name.to_string(), out.clone()));
    out
}

/// The clang of `sidecar_ebpf::clang` (`$CLANG`, else the newest found).
pub fn clang() -> PathBuf {
    sidecar_ebpf::clang::find_clang()
        .expect("clang not found: apt-get install clang-19 libbpf-dev (or set CLANG)")
}

/// Compile a BPF C file with the project's one recipe: `Recipe::User` is exactly the line users
/// are given for a custom probe (against the headers `ebpf-sidecar custom headers` writes).
/// Fails with clang's messages.
pub fn compile_bpf(recipe: Recipe, includes: &[&Path], src: &Path, obj: &Path) {
    let out = sidecar_ebpf::clang::command(&clang(), recipe, includes, src, obj)
        .output()
        .expect("running clang");
    assert!(
        out.status.success(),
        "clang on {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the prebuilt Node.js 18 with `--with-dtrace` lies: in CI a read-only copy of `shared/`
/// sits beside the repository (`scripts/node-dtrace.sh` rebuilds it).
pub fn node18_dtrace_xz() -> PathBuf {
    repo_root().join("../shared/node18-dtrace/node18-dtrace.xz")
}

/// Node.js 18.20.4 built `--with-dtrace` (the `node` USDT provider), unpacked once with
/// `xz -dk` into `target/node18-dtrace/node` (named `node`: the sidecar recognises Node.js
/// binaries by name; never unpacked into `shared/`, which is read-only). Fails when the archive
/// is missing.
pub fn node18_dtrace() -> PathBuf {
    static ONCE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut done = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = done.as_ref() {
        return p.clone();
    }
    let xz = node18_dtrace_xz();
    assert!(
        xz.exists(),
        "{} is missing: the Node.js 18 built --with-dtrace these tests run (a read-only copy of \
         shared/ beside the repository; scripts/node-dtrace.sh rebuilds it)",
        xz.display()
    );
    let dir = repo_root().join("target/node18-dtrace");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("node");
    let fresh = |p: &Path| {
        let t = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((t(p), t(&xz)), (Some(a), Some(b)) if a >= b)
    };
    if !fresh(&out) {
        // Unpacked under a temporary name and renamed: a running node keeps its old file.
        let tmp = dir.join(format!(".node.{}", std::process::id()));
        let st = Command::new("xz")
            .args(["-dk", "--stdout"])
            .arg(&xz)
            .stdout(std::fs::File::create(&tmp).unwrap())
            .status()
            .expect("xz not found: apt-get install xz-utils");
        assert!(st.success(), "xz -dk {}", xz.display());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &out).unwrap();
    }
    let v = Command::new(&out).arg("--version").output().unwrap();
    assert!(
        v.status.success() && v.stdout.starts_with(b"v18."),
        "{} --version: {}{} (it needs bookworm's libbrotli1 and libicu72)",
        out.display(),
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    *done = Some(out.clone());
    out
}

/// The python3 interpreter's real path (the workloads are Python scripts run by it).
pub fn python3() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 not found: apt-get install python3");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Poll `f` until it returns Some, or fail with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The slot and whether it created the set, from a sidecar's log line "kernel side: shared"
/// (None: not on a shared kernel side). The log may carry ANSI colours.
pub fn shared_slot(log: &str) -> Option<(u32, bool)> {
    let mut plain = String::new();
    let mut esc = false;
    for c in log.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (false, c) => plain.push(c),
            _ => {}
        }
    }
    let line = plain.lines().find(|l| l.contains("kernel side: shared"))?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    Some((field("slot")?.parse().ok()?, field("created")? == "true"))
}

/// Programs of the kinds that go on host-wide hooks (tracepoints, raw and BTF tracepoints,
/// perf events), by name. `disk_sweep` is each sidecar's own: never attached, its sidecar runs
/// it at scrape time (BPF_PROG_TEST_RUN), so it costs the host's processes nothing.
pub fn host_programs() -> BTreeMap<String, usize> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool: apt-get install bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    let mut by_name = BTreeMap::new();
    for p in v.as_array().into_iter().flatten() {
        let ty = p["type"].as_str().unwrap_or("");
        if !matches!(
            ty,
            "tracepoint" | "raw_tracepoint" | "tracing" | "perf_event"
        ) {
            continue;
        }
        let name = p["name"].as_str().unwrap_or("").to_string();
        if name == "disk_sweep" {
            continue;
        }
        *by_name.entry(name).or_insert(0) += 1;
    }
    by_name
}

/// A self-signed RSA certificate for localhost in `dir` (cert.pem, key.pem), valid for a day:
/// the TLS servers of the HTTPS tests and bench.
pub fn self_signed_cert(dir: &Path) -> Result<(), String> {
    let st = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("openssl not found ({e}): apt-get install openssl"))?;
    if !st.success() {
        return Err("openssl req failed".into());
    }
    Ok(())
}
