//! Foundation, the sidecar as a whole: `run` mode counts exactly and exits with the command's
//! status; the image in a container's pid namespace counts only its app and keeps no
//! capability; bad input and missing capabilities give exit status 2 and a message. Per family:
//! process.rs, syscalls.rs, target.rs, ...

use std::process::Command;
use std::time::Duration;

use integration::docker::{self, Container};
use integration::*;

#[test]
fn run_mode_counts_exactly_and_exits_with_the_commands_status() {
    require_root();
    let w = workload("counted");
    let out = std::env::temp_dir().join("ebpf-sidecar-run-final.prom");
    let _ = std::fs::remove_file(&out);
    let a = counted::args();
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
    assert_eq!(
        st.code(),
        Some(counted::CODE),
        "run exits with the command's status"
    );
    let text = std::fs::read_to_string(&out).expect("--metrics-out written");
    let m = Metrics::parse(&text);
    counted::assert_counts(&m, 1, "counted");
    // K forks for the K children; the command itself was started by the sidecar, outside.
    assert_eq!(
        m.sum("ebpf_sidecar_process_forks_total", &[]),
        counted::K_EXECS as f64
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

#[test]
fn sidecar_image_in_pid_container_mode_counts_only_its_app() {
    require_root();
    let image = docker::sidecar_image();
    let app = counted::container("ebpf-sidecar-test-app", &[]);
    let other = counted::container("ebpf-sidecar-test-other", &[]);
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
    counted::trigger(&app, 1);
    counted::trigger(&other, 1);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(info_at(), first, "target_info labels a while after start");
    for ns in ["pid_ns", "net_ns", "mnt_ns"] {
        assert!(!first[ns].is_empty(), "{ns} in {first:?}");
    }
    let m = Metrics::parse(&http_get(port, "/metrics", None).unwrap().2);
    counted::assert_counts(&m, 1, "counted");
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
    counted::trigger(&other, 2);
    let m2 = Metrics::parse(&http_get(port, "/metrics", None).unwrap().2);
    counted::assert_counts(&m2, 1, "counted");

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
