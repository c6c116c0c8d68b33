//! The `counted` workload (workloads/counted.c) and its ground truth: what one run must count.
//! Shared by the tests of the whole (run mode, sidecar image), of syscalls and of the target.

use std::time::Duration;

use crate::docker::{self, Container};
use crate::{Metrics, wait_for, workload};

pub const N_GETPPID: u64 = 5000;
pub const M_OPENAT_ENOENT: u64 = 37;
pub const K_EXECS: u64 = 11;
pub const CODE: i32 = 42;

/// The workload's arguments after its mode (`run` or `serve`).
pub fn args() -> [String; 4] {
    [
        N_GETPPID.to_string(),
        M_OPENAT_ENOENT.to_string(),
        K_EXECS.to_string(),
        CODE.to_string(),
    ]
}

/// One short `counted run` (exit status CODE) in a fresh container under the seccomp profile in
/// the file `profile`: Docker's output.
pub fn run_under_seccomp(profile: &std::path::Path) -> std::process::Output {
    let opt = format!("seccomp={}", profile.display());
    let mount = format!("{}:/counted:ro", workload("counted").display());
    let code = CODE.to_string();
    docker::run(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "-v",
        &mount,
        "debian:bookworm-slim",
        "/counted",
        "run",
        "100",
        "3",
        "2",
        &code,
    ])
}

/// The counts one run of the workload must produce, `times` runs in total.
pub fn assert_counts(m: &Metrics, times: u64, comm: &str) {
    let t = times as f64;
    assert_eq!(
        m.sum("ebpf_sidecar_syscalls_total", &[("syscall", "getppid")]),
        N_GETPPID as f64 * t,
        "getppid"
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_syscall_errors_total",
            &[("syscall", "openat"), ("errno", "ENOENT")]
        ),
        M_OPENAT_ENOENT as f64 * t,
        "openat ENOENT"
    );
    assert_eq!(
        m.sum("ebpf_sidecar_process_execs_total", &[("comm", "true")]),
        K_EXECS as f64 * t,
        "execs of true"
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_process_exits_total",
            &[("comm", "true"), ("code", "0"), ("signal", "0")]
        ),
        K_EXECS as f64 * t,
        "exits of true"
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_process_exits_total",
            &[("comm", comm), ("code", &CODE.to_string()), ("signal", "0")]
        ),
        t,
        "exit with code {CODE}"
    );
    assert!(
        m.sum(
            "ebpf_sidecar_syscall_seconds_total",
            &[("syscall", "getppid")]
        ) > 0.0
    );
    // Every call that entered and exited is in the histogram; getppid alone is N per run.
    assert!(m.sum("ebpf_sidecar_syscall_duration_seconds_count", &[]) >= N_GETPPID as f64 * t);
    assert_eq!(m.sum("ebpf_sidecar_target_up", &[]), 1.0);
    // The families this workload is counted by; others may be skipped for a missing capability
    // (net without NET_ADMIN) and say so in probe_up.
    for probe in ["process", "syscalls"] {
        assert_eq!(
            m.sum("ebpf_sidecar_probe_up", &[("probe", probe)]),
            1.0,
            "{probe} attached"
        );
    }
    assert_eq!(m.sum("ebpf_sidecar_events_lost_total", &[]), 0.0);
}

/// Start the counted server as a container's PID 1, mounted from the host build.
pub fn container(name: &str, extra: &[&str]) -> Container {
    let w = workload("counted");
    let mount = format!("{}:/counted:ro", w.display());
    let a = args();
    let mut argv: Vec<&str> = vec!["-v", &mount];
    argv.extend_from_slice(extra);
    argv.extend(["debian:bookworm-slim", "/counted", "serve"]);
    argv.extend(a.iter().map(String::as_str));
    let c = Container::run(name, &argv);
    wait_for("workload ready", Duration::from_secs(20), || {
        c.logs().contains("ready").then_some(())
    });
    c
}

/// Trigger one run of the workload and wait until it reported done.
pub fn trigger(c: &Container, nth: usize) {
    docker::ok(&["kill", "-s", "USR1", &c.0]);
    wait_for("workload done", Duration::from_secs(30), || {
        (c.logs().matches(&format!("done {CODE}")).count() >= nth).then_some(())
    });
}
