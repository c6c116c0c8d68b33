//! Foundation: exact process and syscall counts in `run` mode, in a Docker container watched by
//! the sidecar image, across a container restart; bad input gives exit status 2 and a message.

use std::process::Command;
use std::time::Duration;

use integration::docker::{self, Container};
use integration::*;

// The workload's ground truth (tests/integration/workloads/counted.c).
const N_GETPPID: u64 = 5000;
const M_OPENAT_ENOENT: u64 = 37;
const K_EXECS: u64 = 11;
const CODE: i32 = 42;

fn args() -> [String; 4] {
    [
        N_GETPPID.to_string(),
        M_OPENAT_ENOENT.to_string(),
        K_EXECS.to_string(),
        CODE.to_string(),
    ]
}

/// The counts one run of the workload must produce, `times` runs in total.
fn assert_counts(m: &Metrics, times: u64, comm: &str) {
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

#[test]
fn run_mode_counts_exactly_and_exits_with_the_commands_status() {
    require_root();
    let w = workload("counted");
    let out = std::env::temp_dir().join("ebpf-sidecar-run-final.prom");
    let _ = std::fs::remove_file(&out);
    let a = args();
    let port = free_port().to_string();
    let st = Command::new(sidecar_bin())
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-out",
        ])
        .arg(&out)
        .arg("--")
        .arg(&w)
        .arg("run")
        .args(&a)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(CODE), "run exits with the command's status");
    let text = std::fs::read_to_string(&out).expect("--metrics-out written");
    let m = Metrics::parse(&text);
    assert_counts(&m, 1, "counted");
    // K forks for the K children; the command itself was started by the sidecar, outside.
    assert_eq!(
        m.sum("ebpf_sidecar_process_forks_total", &[]),
        K_EXECS as f64
    );
    assert_eq!(
        m.sum("ebpf_sidecar_process_execs_total", &[("comm", "counted")]),
        1.0
    );
    assert_eq!(
        m.sum("ebpf_sidecar_processes", &[]),
        0.0,
        "nothing left running"
    );
    let lint = promtool_check(&text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
}

/// Counting only (`--syscall-latency off`) is one program at each syscall's exit, which reads the
/// number from the saved registers; the calls that never exit (exit_group) and the one whose
/// number the kernel wipes (rt_sigreturn) are counted too, exactly as with latency on.
#[test]
fn counting_only_counts_exactly_what_latency_mode_counts() {
    require_root();
    const SIGNALS: u64 = 23;
    let a = args();
    let a: Vec<&str> = std::iter::once("run")
        .chain(a.iter().map(String::as_str))
        .collect();
    for mode in ["off", "on"] {
        let extra = ["--syscall-latency", mode];
        let tag = format!("counting-{mode}");
        let (m, _) = run_workload_exiting(&tag, "syscalls", &extra, "counted", &a, CODE);
        let calls = |s: &str| m.sum("ebpf_sidecar_syscalls_total", &[("syscall", s)]);
        assert_eq!(
            calls("getppid"),
            N_GETPPID as f64,
            "getppid, latency {mode}"
        );
        assert_eq!(
            m.sum(
                "ebpf_sidecar_syscall_errors_total",
                &[("syscall", "openat"), ("errno", "ENOENT")]
            ),
            M_OPENAT_ENOENT as f64,
            "openat ENOENT, latency {mode}"
        );
        // The workload's and each child's exec, the children's and its own exit_group.
        assert_eq!(
            calls("execve"),
            1.0 + K_EXECS as f64,
            "execve, latency {mode}"
        );
        assert_eq!(
            calls("exit_group"),
            1.0 + K_EXECS as f64,
            "exit_group, latency {mode}"
        );
        assert_eq!(calls("wait4"), K_EXECS as f64, "wait4, latency {mode}");
        let timed = m.sum("ebpf_sidecar_syscall_duration_seconds_count", &[]);
        if mode == "off" {
            assert_eq!(timed, 0.0, "no latency measured with --syscall-latency off");
        } else {
            assert!(timed >= N_GETPPID as f64, "latency measured");
        }

        let signals = ["signals", &SIGNALS.to_string()];
        let tag = format!("counting-signals-{mode}");
        let (m, _) = run_workload_exiting(&tag, "syscalls", &extra, "counted", &signals, 0);
        let calls = |s: &str| m.sum("ebpf_sidecar_syscalls_total", &[("syscall", s)]);
        assert_eq!(calls("tgkill"), SIGNALS as f64, "tgkill, latency {mode}");
        assert_eq!(
            calls("rt_sigreturn"),
            SIGNALS as f64,
            "rt_sigreturn, latency {mode}"
        );
        assert_eq!(calls("exit_group"), 1.0, "exit_group, latency {mode}");
        assert_eq!(m.sum("ebpf_sidecar_events_lost_total", &[]), 0.0);
    }
}

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

/// Start the counted server as a container's PID 1, mounted from the host build.
fn counted_container(name: &str, extra: &[&str]) -> Container {
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
fn trigger(c: &Container, nth: usize) {
    docker::ok(&["kill", "-s", "USR1", &c.0]);
    wait_for("workload done", Duration::from_secs(30), || {
        (c.logs().matches(&format!("done {CODE}")).count() >= nth).then_some(())
    });
}

#[test]
fn sidecar_image_in_pid_container_mode_counts_only_its_app() {
    require_root();
    let image = docker::sidecar_image();
    let app = counted_container("ebpf-sidecar-test-app", &[]);
    let other = counted_container("ebpf-sidecar-test-other", &[]);
    let port = free_port().to_string();
    let sidecar = Container::run(
        "ebpf-sidecar-test-sidecar",
        &[
            "--pid=container:ebpf-sidecar-test-app",
            "--cap-add",
            "SYS_ADMIN",
            "-p",
            &format!("127.0.0.1:{port}:9435"),
            image,
        ],
    );
    let port: u16 = port.parse().unwrap();
    wait_for("sidecar serving", Duration::from_secs(30), || {
        http_get(port, "/healthz", None)
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ())
    });
    let info_at = || {
        let m = Metrics::parse(&http_get(port, "/metrics", None).unwrap().2);
        let info: Vec<_> = m
            .matching("ebpf_sidecar_target_info", &[])
            .map(|(l, _)| l.clone())
            .collect();
        assert_eq!(info.len(), 1);
        info[0].clone()
    };
    // The first scrape comes before the capabilities are dropped and the target re-resolved;
    // an info series keeps its labels for the target's lifetime.
    let first = info_at();
    trigger(&app, 1);
    trigger(&other, 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(info_at(), first, "target_info labels a while after start");
    for ns in ["pid_ns", "net_ns", "mnt_ns"] {
        assert!(!first[ns].is_empty(), "{ns} in {first:?}");
    }
    let m = Metrics::parse(&http_get(port, "/metrics", None).unwrap().2);
    assert_counts(&m, 1, "counted");
    let info: Vec<_> = m.matching("ebpf_sidecar_target_info", &[]).collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].0["mode"], "sidecar");
    assert_eq!(
        info[0].0["filter"], "cgroup",
        "with SYS_ADMIN the sidecar mounts cgroup2 itself"
    );
    let id = docker::ok(&["inspect", "-f", "{{.Id}}", &app.0]);
    assert_eq!(info[0].0["cgroup_path"], format!("/docker/{id}"));
    assert_eq!(
        info[0].0["container_id"], id,
        "the container the cgroup path names"
    );
    assert_eq!(m.sum("ebpf_sidecar_processes", &[]), 1.0, "the app's PID 1");

    // The unmonitored container runs again: nothing moves.
    trigger(&other, 2);
    let m2 = Metrics::parse(&http_get(port, "/metrics", None).unwrap().2);
    assert_counts(&m2, 1, "counted");

    // Capabilities after attach: none left (kernel >= 6.5 reads maps without CAP_BPF).
    let pid = docker::ok(&["inspect", "-f", "{{.State.Pid}}", &sidecar.0]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let capeff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert_eq!(
        capeff.split_whitespace().nth(1),
        Some("0000000000000000"),
        "{capeff}"
    );

    let (_, ct, om) = http_get(
        port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .unwrap();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(om.trim_end().ends_with("# EOF"));
    let lint = promtool_check(&m.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
}

#[test]
fn container_restart_is_followed_onto_the_new_cgroup() {
    require_root();
    docker::sidecar_image(); // base image + dockerd up
    let app = counted_container("ebpf-sidecar-test-restart", &[]);
    let s = Sidecar::start(&[
        "--target-container",
        "ebpf-sidecar-test-restart",
        "--resolve-interval",
        "0.2",
    ]);
    trigger(&app, 1);
    assert_counts(&s.scrape(), 1, "counted");
    let first_id = s
        .scrape()
        .matching("ebpf_sidecar_target_info", &[])
        .next()
        .unwrap()
        .0["cgroup_id"]
        .clone();

    docker::ok(&["stop", "-t", "1", &app.0]);
    wait_for("target_up 0", Duration::from_secs(10), || {
        (s.scrape().sum("ebpf_sidecar_target_up", &[]) == 0.0).then_some(())
    });
    docker::ok(&["start", &app.0]);
    wait_for("target reacquired", Duration::from_secs(20), || {
        let m = s.scrape();
        (m.sum("ebpf_sidecar_target_up", &[]) == 1.0
            && m.sum("ebpf_sidecar_target_acquisitions_total", &[]) == 2.0)
            .then_some(())
    });
    // `docker logs` keeps the first run's lines: wait for a second "ready".
    wait_for("workload ready again", Duration::from_secs(20), || {
        (app.logs().matches("ready").count() >= 2).then_some(())
    });
    trigger(&app, 2);
    let m = s.scrape();
    assert_counts(&m, 2, "counted");
    let second_id = m
        .matching("ebpf_sidecar_target_info", &[])
        .next()
        .unwrap()
        .0["cgroup_id"]
        .clone();
    assert_ne!(
        first_id, second_id,
        "a restarted container lives in a new cgroup"
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

fn expect_exit_2(args: &[&str], needle: &str) {
    let out = Command::new(sidecar_bin()).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} should exit 2; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in:\n{stderr}"
    );
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    require_root();
    let port = format!("127.0.0.1:{}", free_port());
    expect_exit_2(
        &["--target-pid", "999999999", "--listen", &port],
        "no process with pid 999999999",
    );
    expect_exit_2(&["--target-pid", "notapid"], "invalid value 'notapid'");
    expect_exit_2(&["--listen", "nowhere"], "invalid value 'nowhere'");
    expect_exit_2(
        &[
            "--probes",
            "process,bogus",
            "--target-pid",
            "1",
            "--listen",
            &port,
        ],
        "unknown probe family \"bogus\"",
    );
    expect_exit_2(&["--label", "1x=y"], "not a Prometheus label name");
    expect_exit_2(
        &["--target-container", "../etc", "--listen", &port],
        "is not a container name",
    );
    // On the host, with no target, PID 1 is the host's init: refuse rather than watch everything.
    expect_exit_2(&["--listen", &port], "looks like a host");
    expect_exit_2(&["run", "--listen", &port], "required");

    // Port in use.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    expect_exit_2(
        &["--target-pid", "1", "--listen", &busy_addr],
        "cannot listen on",
    );

    // No capability: the same binary as an unprivileged user.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(sidecar_bin())
        .args(["--target-pid", "1", "--listen", &port])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("CAP_BPF and CAP_PERFMON") && stderr.contains("--cap-add"),
        "{stderr}"
    );
}

#[test]
fn unknown_container_and_missing_caps_in_docker_exit_2() {
    require_root();
    let image = docker::sidecar_image();
    docker::ok(&["version"]);
    expect_exit_2(
        &[
            "--target-container",
            "ebpf-sidecar-no-such-container",
            "--listen",
            "127.0.0.1:0",
        ],
        "no container named",
    );
    let app = Container::run(
        "ebpf-sidecar-test-nocaps-app",
        &["debian:bookworm-slim", "sleep", "600"],
    );
    let out = docker::run(&["run", "--rm", &format!("--pid=container:{}", app.0), image]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--cap-add BPF --cap-add PERFMON") && stderr.contains("SYS_ADMIN"),
        "{stderr}"
    );
}
