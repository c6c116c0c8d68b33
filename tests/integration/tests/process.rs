//! Process family: exits by code and by signal in `run` mode, OOM kills in a container with a
//! memory limit. (Execs, forks and exits of a known workload are also checked by the tests of the
//! whole in foundation.rs.)

use std::process::Command;
use std::time::Duration;

use integration::docker::{self, Container};
use integration::*;

#[test]
fn run_mode_reports_a_signal_death() {
    require_root();
    let out = std::env::temp_dir().join("ebpf-sidecar-run-signal.prom");
    let port = free_port().to_string();
    let st = Command::new(sidecar_bin())
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-out",
        ])
        .arg(&out)
        .args(["--", "/bin/sh", "-c", "kill -TERM $$"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(128 + 15));
    let m = Metrics::parse(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(
        m.sum(
            "ebpf_sidecar_process_exits_total",
            &[("comm", "sh"), ("signal", "SIGTERM")]
        ),
        1.0
    );
}

#[test]
fn oom_kill_is_counted() {
    require_root();
    docker::sidecar_image();
    let w = workload("counted");
    let mount = format!("{}:/counted:ro", w.display());
    let app = Container::run(
        "ebpf-sidecar-test-oom",
        &[
            "-v",
            &mount,
            "--memory",
            "64m",
            "--memory-swap",
            "64m",
            "debian:bookworm-slim",
            "sleep",
            "600",
        ],
    );
    let s = Sidecar::start(&["--target-container", &app.0]);
    let out = docker::run(&["exec", &app.0, "/counted", "hog"]);
    assert_eq!(out.status.code(), Some(137), "the hog is killed by SIGKILL");
    let m = wait_for("oom kill counted", Duration::from_secs(10), || {
        let m = s.scrape();
        (m.sum("ebpf_sidecar_oom_kills_total", &[]) >= 1.0).then_some(m)
    });
    assert_eq!(m.sum("ebpf_sidecar_oom_kills_total", &[]), 1.0);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_process_exits_total",
            &[("comm", "counted"), ("signal", "SIGKILL")]
        ),
        1.0
    );
}
