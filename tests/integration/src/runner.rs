//! The sidecar under test: a server started with arguments, or `run` around a workload.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Metrics, free_port, http_get, promtool_check, sidecar_bin, workload};

/// A sidecar process started by a test; killed on drop.
pub struct Sidecar {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Sidecar {
    /// Start the binary with `args` (plus --listen) and wait until it serves metrics.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(&sidecar_bin(), args, &[], Duration::from_secs(30))
    }

    /// Start `bin` (this build, or another) with `args` and `env`, and wait up to `ready_within`
    /// until it serves. `--listen` goes first (it is global), so `args` may be a subcommand
    /// with its own `-- CMD`.
    pub fn start_with(
        bin: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        ready_within: Duration,
    ) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("ebpf-sidecar-test-{port}.log"));
        let child = Command::new(bin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting ebpf-sidecar");
        let mut s = Self { child, port, log };
        s.wait_ready(ready_within);
        s
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("sidecar exited early ({st}):\n{}", self.log_text());
            }
            if http_get(self.port, "/healthz", None).is_ok_and(|r| r.0 == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "sidecar did not serve within {within:?}:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn scrape(&self) -> Metrics {
        let (status, _, body) = http_get(self.port, "/metrics", None).expect("scrape");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ebpf-sidecar run --probes <probes> [extra] --metrics-out … -- <workload> args…`: the workload
/// must exit 0; returns the final metrics (promtool-clean, asserted) and the workload's stdout.
pub fn run_workload(
    tag: &str,
    probes: &str,
    extra: &[&str],
    name: &str,
    args: &[&str],
) -> (Metrics, String) {
    run_workload_exiting(tag, probes, extra, name, args, 0)
}

/// [`run_workload`] for a workload that must exit with `code` (`run` passes it on).
pub fn run_workload_exiting(
    tag: &str,
    probes: &str,
    extra: &[&str],
    name: &str,
    args: &[&str],
    code: i32,
) -> (Metrics, String) {
    run_program(tag, probes, extra, &workload(name), args, code)
}

/// [`run_workload_exiting`] for any program (a path, or a name looked up in PATH).
pub fn run_program(
    tag: &str,
    probes: &str,
    extra: &[&str],
    program: &Path,
    args: &[&str],
    code: i32,
) -> (Metrics, String) {
    let out = std::env::temp_dir().join(format!("ebpf-sidecar-{tag}.prom"));
    let _ = std::fs::remove_file(&out);
    let o = Command::new(sidecar_bin())
        .args(["run", "--probes", probes, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(extra)
        .arg("--metrics-out")
        .arg(&out)
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        o.status.code(),
        Some(code),
        "workload failed: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("--metrics-out written");
    let lint = promtool_check(&text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
    (Metrics::parse(&text), stdout)
}
