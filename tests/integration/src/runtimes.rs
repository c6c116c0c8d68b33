//! Helpers of the runtimes tests (tests/runtimes.rs, tests/runtimes_node.rs): the sidecar in
//! `run` mode with its pid known before it starts (for bpftrace filters), or serving while a
//! runtime runs under it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Metrics, Sidecar, free_port, http_get, promtool_check, sidecar_bin, wait_for};

/// The CPython the tests run (Debian's python3.11, built with dtrace probes).
pub const PYTHON: &str = "/usr/bin/python3.11";

/// A file in the runtimes tests' scratch directory.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join("ebpf-sidecar-runtimes-tests");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Fail (never skip) when the real runtime is missing.
pub fn require(path: &str, install: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: {install} (these tests need the real runtime)"
    );
}

/// One value of [`crate::Bpftrace::stop`]'s maps, 0 when absent.
pub fn bpf_value(maps: &[(String, u64)], name: &str) -> u64 {
    maps.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

/// `ebpf-sidecar run` whose pid is known before it starts: a shell that waits for a line on
/// stdin, then execs the sidecar (same pid). Lets bpftrace filter on "child of the sidecar".
pub struct GatedRun {
    child: Child,
    out: PathBuf,
}

impl GatedRun {
    pub fn new(name: &str, sidecar_args: &[&str], cmd: &[&str]) -> Self {
        let out = scratch(&format!("{name}.prom"));
        let _ = std::fs::remove_file(&out);
        let mut words = vec![
            sidecar_bin().display().to_string(),
            "run".into(),
            "--listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--probes".into(),
            "runtimes".into(),
            "--metrics-out".into(),
            out.display().to_string(),
        ];
        words.extend(sidecar_args.iter().map(|s| s.to_string()));
        words.push("--".into());
        words.extend(cmd.iter().map(|s| s.to_string()));
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let child = Command::new("/bin/sh")
            .args(["-c", &format!("read _go; exec {}", quoted.join(" "))])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child, out }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn go_and_wait(mut self) -> Metrics {
        self.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "run exited with {st}");
        let text = std::fs::read_to_string(&self.out).expect("--metrics-out written");
        let lint = promtool_check(&text);
        assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
        Metrics::parse(&text)
    }
}

/// Raw HTTP/1.1 request with Connection: close, returns the status.
pub fn http(port: u16, method: &str, path: &str) -> u16 {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Start `ebpf-sidecar run` with `args` (before `--`) around `cmd`; stderr goes to a log file.
pub fn run_sidecar(name: &str, args: &[&str], cmd: &[&str]) -> Sidecar {
    let listen = free_port();
    let log = scratch(&format!("{name}-sidecar.log"));
    let child = Command::new(sidecar_bin())
        .args(["run", "--probes", "runtimes", "--listen"])
        .arg(format!("127.0.0.1:{listen}"))
        .args(args)
        .arg("--")
        .args(cmd)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let sidecar = Sidecar {
        child,
        port: listen,
        log,
    };
    wait_for("the sidecar serving", Duration::from_secs(30), || {
        http_get(listen, "/healthz", None).is_ok().then_some(())
    });
    sidecar
}
