//! Runtimes: real CPython 3.11, OpenJDK 17 (python_java.rs) and Node.js (node.rs: a stock
//! Node.js 20, Node.js 18 built `--with-dtrace`, a C stand-in with its USDT probes) run under
//! `ebpf-sidecar run` or beside the sidecar image, with exact ground truth and bpftrace's `usdt:`
//! probes counting the same run side by side. Here: USDT listing and declared (--config) metrics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integration::*;

mod node;
mod python_java;

/// The CPython the tests run (Debian's python3.11, built with dtrace probes).
const PYTHON: &str = "/usr/bin/python3.11";

/// A file in the runtimes tests' scratch directory.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join("ebpf-sidecar-runtimes-tests");
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Fail (never skip) when the real runtime is missing.
fn require(path: &str, install: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: {install} (these tests need the real runtime)"
    );
}

/// One value of [`crate::Bpftrace::stop`]'s maps, 0 when absent.
fn bpf_value(maps: &[(String, u64)], name: &str) -> u64 {
    maps.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

/// `ebpf-sidecar run` whose pid is known before it starts: a shell that waits for a line on
/// stdin, then execs the sidecar (same pid). Lets bpftrace filter on "child of the sidecar".
struct GatedRun {
    child: Child,
    out: PathBuf,
}

impl GatedRun {
    fn new(name: &str, sidecar_args: &[&str], cmd: &[&str]) -> Self {
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

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn go_and_wait(mut self) -> Metrics {
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
fn http(port: u16, method: &str, path: &str) -> u16 {
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
fn run_sidecar(name: &str, args: &[&str], cmd: &[&str]) -> Sidecar {
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

const GC_CALLS: u64 = 41;
const F_CALLS: u64 = 517;

fn python_script() -> PathBuf {
    let p = scratch("work.py");
    std::fs::write(
        &p,
        format!(
            "import gc, sys\n\
             gc.disable()\n\
             for _ in range({GC_CALLS}):\n    gc.collect()\n\
             def counted_fn(x):\n    return x + 1\n\
             def untraced_fn(x):\n    return x\n\
             for i in range(100):\n    untraced_fn(i)\n\
             sys.settrace(lambda *a: None)\n\
             for i in range({F_CALLS}):\n    counted_fn(i)\n\
             sys.settrace(None)\n"
        ),
    )
    .unwrap();
    p
}

#[test]
fn usdt_list_and_bad_input() {
    let out = Command::new(sidecar_bin())
        .args(["usdt", "list", "--binary", PYTHON])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("python:gc__start"), "{text}");
    assert!(text.contains("semaphore 0x"), "{text}");

    // The built-in packs, in the --config form.
    let out = Command::new(sidecar_bin())
        .args(["usdt", "packs"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "# packs/python.yaml",
        "begin: python:gc__start",
        "# packs/java.yaml",
        "probe: hotspot:class__loaded",
        "# packs/node.yaml",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }

    // A binary without notes, a missing file, a file that is not ELF: exit 2, a clear message.
    let garbage = scratch("garbage.bin");
    std::fs::write(&garbage, b"\x7fELF\x02\x01\x01 this is not an ELF file").unwrap();
    for (bin, msg) in [
        ("/bin/true", "no .note.stapsdt"),
        ("/nonexistent/bin", "No such file"),
        (garbage.to_str().unwrap(), "not a 64-bit ELF"),
    ] {
        let out = Command::new(sidecar_bin())
            .args(["usdt", "list", "--binary", bin])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bin}: {err}");
        assert!(err.contains(msg), "{bin}: {err}");
    }
    // A process: its executable and libraries inside its mount namespace.
    let mut child = Command::new(PYTHON)
        .args(["-c", "import time; time.sleep(30)"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new(sidecar_bin())
        .args(["usdt", "list", "--pid", &child.id().to_string()])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("python:function__entry"));
}

const CONFIG: &str = r#"
metrics:
  - name: py_calls
    help: Python function calls by function name (declared)
    binary: /usr/bin/python3.11
    probe: python:function__entry
    labels: [{name: function, arg: 1, string: true}]
  - name: py_gc_starts
    runtime: python
    probe: python:gc__start
    labels: [{name: generation, arg: 0}]
  - name: py_missing
    runtime: python
    probe: python:no__such__probe
  - name: py_gc_seconds
    runtime: python
    begin: python:gc__start
    end: python:gc__done
    labels: [{name: generation, arg: 0}]
"#;

/// --config: declared counters and histograms give exact counts on a known workload; an
/// unknown probe is a clear error (file, entry, what the binary has) and the rest still works.
#[test]
fn declared_config_metrics_are_exact() {
    require_root();
    require(PYTHON, "apt-get install python3.11");
    let cfg = scratch("usdt.yaml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let script = python_script();
    let out = scratch("config.prom");
    let _ = std::fs::remove_file(&out);
    let o = Command::new(sidecar_bin())
        .args(["run", "--probes", "runtimes", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--config")
        .arg(&cfg)
        .arg("--metrics-out")
        .arg(&out)
        .args(["--", PYTHON, script.to_str().unwrap()])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    let text = std::fs::read_to_string(&out).unwrap();
    let lint = promtool_check(&text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
    let m = Metrics::parse(&text);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_usdt_py_calls_total",
            &[("function", "counted_fn")]
        ),
        F_CALLS as f64,
        "F calls under settrace"
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_usdt_py_calls_total",
            &[("function", "untraced_fn")]
        ),
        0.0
    );
    // Same probe as the python pack: the same numbers, by generation.
    for g in ["0", "1", "2"] {
        let pack = m.sum(
            "ebpf_sidecar_runtime_gc_duration_seconds_count",
            &[("runtime", "python"), ("generation", g)],
        );
        assert_eq!(
            m.sum("ebpf_sidecar_usdt_py_gc_starts_total", &[("generation", g)]),
            pack,
            "generation {g}"
        );
        assert_eq!(
            m.sum(
                "ebpf_sidecar_usdt_py_gc_seconds_count",
                &[("generation", g)]
            ),
            pack,
            "generation {g} pairs"
        );
    }
    assert!(
        m.sum(
            "ebpf_sidecar_usdt_py_gc_starts_total",
            &[("generation", "2")]
        ) >= GC_CALLS as f64
    );
    let want = format!(
        "{}: metrics[2] (py_missing): probe python:no__such__probe not in {PYTHON}; it has: ",
        cfg.display()
    );
    assert!(log.contains(&want), "{log}");
    assert!(log.contains("python:gc__start"), "{log}");
}

#[test]
fn bad_config_is_a_clear_error() {
    let cfg = scratch("bad.yaml");
    for (text, want) in [
        (
            "metrics:\n  - name: ok\n    runtime: python\n    probe: python:gc__start\n  - name: x\n    runtime: ruby\n    probe: a:b\n",
            "metrics[1] (x): unknown runtime \"ruby\" (one of python, java, node)",
        ),
        ("metrics: [", "did not find expected"),
        (
            "metrics:\n  - name: x\n    runtime: python\n    probe: gc__start\n",
            "metrics[0] (x): \"gc__start\" is not provider:probe",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let o = Command::new(sidecar_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--", "/bin/true"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("--config {}: ", cfg.display())),
            "{err}"
        );
        assert!(err.contains(want), "{want}: {err}");
    }
}
