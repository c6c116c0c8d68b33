//! One kernel side per host: sidecars of one build share a pinned set under
//! /sys/fs/bpf/ebpf-sidecar/<abi>/, each reading only its slot; slots of dead sidecars are
//! reclaimed; the last one out leaves nothing; private still works.
//!
//! Real dockerd, the sidecar image, `-v /sys/fs/bpf:/sys/fs/bpf`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration::docker::{self, Container};
use integration::{Metrics, free_port, http_get, require_root, sidecar_bin, wait_for, workload};

const BASE: &str = "/sys/fs/bpf/ebpf-sidecar";
const CODE: i32 = 42;

/// The host has one set per ABI: tests that count its slots or set its `--max-targets` would
/// see each other's sidecars, so they take turns.
static HOST_SET: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    HOST_SET.lock().unwrap_or_else(|p| p.into_inner())
}

fn kernel_side(m: &Metrics) -> BTreeMap<String, String> {
    let info: Vec<_> = m
        .matching("ebpf_sidecar_kernel_side_info", &[])
        .map(|(l, _)| l.clone())
        .collect();
    assert_eq!(info.len(), 1, "one kernel_side_info series");
    info[0].clone().into_iter().collect()
}

/// Host-mode sidecars (the test's own binary) on one set with different options, and a private
/// one beside them.
#[test]
fn mixed_options_on_one_set_and_a_private_sidecar_beside_it() {
    require_root();
    let _turn = one_at_a_time();
    let counted = workload("counted");
    let run = |extra: &[&str], n: u64| -> (Metrics, String) {
        let out = tempfile_path();
        let mut cmd = Command::new(sidecar_bin());
        cmd.args(["run", "--probes", "process,syscalls,net"])
            .args(extra)
            .args(["--listen", "127.0.0.1:0", "--metrics-out"])
            .arg(&out)
            .arg("--")
            .arg(&counted)
            .args(["run", &n.to_string(), "5", "2", &CODE.to_string()]);
        let o = cmd.output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(CODE),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = std::fs::read_to_string(&out).unwrap();
        (
            Metrics::parse(&text),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    // A long-lived member keeps the set up while the others come and go.
    let keeper = RunServer::start(
        &sidecar_bin(),
        &["--probes", "process,syscalls"],
        &["sleep", "60"],
    );
    let (lat_off, _) = run(&["--syscall-latency", "off"], 1111);
    let (lat_on, _) = run(&["--http-paths"], 2222);
    let (private, log) = run(&["--kernel-side", "private"], 3333);
    let km = keeper.scrape();
    assert_eq!(kernel_side(&km)["mode"], "shared");
    for (m, n, mode) in [
        (&lat_off, 1111, "shared"),
        (&lat_on, 2222, "shared"),
        (&private, 3333, "private"),
    ] {
        assert_eq!(kernel_side(m)["mode"], mode);
        assert_eq!(
            m.sum("ebpf_sidecar_syscalls_total", &[("syscall", "getppid")]),
            n as f64
        );
        assert_eq!(
            m.sum(
                "ebpf_sidecar_syscall_errors_total",
                &[("syscall", "openat"), ("errno", "ENOENT")]
            ),
            5.0
        );
        assert_eq!(
            m.sum("ebpf_sidecar_process_execs_total", &[("comm", "true")]),
            2.0
        );
    }
    assert_eq!(
        lat_off.sum("ebpf_sidecar_syscall_seconds_total", &[]),
        0.0,
        "latency off: no time measured"
    );
    assert!(
        lat_on.sum(
            "ebpf_sidecar_syscall_seconds_total",
            &[("syscall", "getppid")]
        ) > 0.0
    );
    assert!(log.contains("private"), "{log}");
    // The keeper counted none of it.
    assert_eq!(
        km.sum("ebpf_sidecar_syscalls_total", &[("syscall", "getppid")]),
        0.0
    );
}

#[test]
fn bad_kernel_side_input_exits_2_with_the_reason() {
    require_root();
    let _turn = one_at_a_time();
    let out = Command::new(sidecar_bin())
        .args(["run", "--max-targets", "0", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-targets"));

    // No bpffs: shared refuses and names the mount; auto falls back to private and says why.
    let script = format!(
        "mount --make-rprivate / && umount -l /sys/fs/bpf; {bin} run --kernel-side shared --probes process -- true; echo rc=$?; {bin} run --probes process --metrics-out /tmp/ks-auto.prom -- true; echo rc=$?",
        bin = sidecar_bin().display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("rc=2"), "{text}");
    assert!(text.contains("-v /sys/fs/bpf:/sys/fs/bpf"), "{text}");
    assert!(text.contains("kernel side: private"), "{text}");
    assert!(text.contains("rc=0"), "{text}");

    // A full set: the second sidecar gets no slot. `--max-targets` is fixed by whoever creates
    // the set, so start from none.
    no_set_left();
    let keeper = RunServer::start(
        &sidecar_bin(),
        &["--max-targets", "1", "--probes", "process"],
        &["sleep", "60"],
    );
    let out = Command::new(sidecar_bin())
        .args(["run", "--probes", "process", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no free slot"));
    drop(keeper);
}

/// `ebpf-sidecar run OPTS --listen … -- CMD` on the host, serving until dropped (SIGTERM, so it
/// leaves its set).
struct RunServer {
    child: std::process::Child,
    port: u16,
}

impl RunServer {
    fn start(bin: &Path, opts: &[&str], cmd: &[&str]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("ebpf-sidecar-ks-{port}.log"));
        let child = Command::new(bin)
            .arg("run")
            .args(opts)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--")
            .args(cmd)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for("serving", Duration::from_secs(30), || {
            http_get(port, "/healthz", None)
                .ok()
                .filter(|r| r.0 == 200)
                .map(|_| ())
        });
        Self { child, port }
    }

    fn scrape(&self) -> Metrics {
        Metrics::parse(&http_get(self.port, "/metrics", None).expect("scrape").2)
    }
}

impl Drop for RunServer {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Make sure no set is on the host: a set left by an earlier test's killed sidecar keeps its
/// stale slots until a live sidecar reclaims them (5 s), sweeps dead sets of other builds and
/// leaves last.
fn no_set_left() {
    let sets = || {
        std::fs::read_dir(BASE)
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    if !sets().is_empty() {
        let st = Command::new(sidecar_bin())
            .args(["run", "--probes", "process", "--", "sleep", "7"])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    assert!(
        sets().is_empty(),
        "{:?} still there: is a sidecar running on this host?",
        sets()
    );
}

fn tempfile_path() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "ebpf-sidecar-ks-{}-{}.prom",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ))
}
