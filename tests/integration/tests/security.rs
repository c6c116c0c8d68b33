//! Security: the seccomp advisor's profile, proven by Docker; risky syscalls; what confines the
//! target.

use std::time::Duration;

use integration::docker::{self, Container};
use integration::*;

#[test]
fn advised_seccomp_profile_runs_the_workload_and_blocks_novel_syscalls() {
    require_root();
    docker::sidecar_image(); // dockerd up, base images made
    let w = workload("counted");
    let mount = format!("{}:/counted:ro", w.display());
    let app = Container::run(
        "ebpf-sidecar-sec-app",
        &[
            "-v",
            &mount,
            "debian:bookworm-slim",
            "/counted",
            "serve",
            "100",
            "3",
            "2",
            "42",
        ],
    );
    wait_for("workload ready", Duration::from_secs(20), || {
        app.logs().contains("ready").then_some(())
    });
    let s = Sidecar::start(&["--target-container", &app.0]);
    docker::ok(&["kill", "-s", "USR1", &app.0]);
    wait_for("workload done", Duration::from_secs(20), || {
        app.logs().contains("done 42").then_some(())
    });

    // What confines the target today: Docker's default seccomp filter and capability set.
    let m = s.scrape();
    assert_eq!(
        m.sum("ebpf_sidecar_target_seccomp_mode", &[]),
        2.0,
        "Docker's default profile is a filter"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", app.host_pid())).unwrap();
    let capeff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    assert_eq!(
        m.sum("ebpf_sidecar_target_capabilities", &[("set", "effective")]),
        u64::from_str_radix(capeff, 16).unwrap() as f64
    );
    assert!(m.sum("ebpf_sidecar_seccomp_observed_syscalls", &[]) >= 5.0);

    let (status, ct, body) = http_get(s.port, "/seccomp", None).unwrap();
    assert_eq!(status, 200);
    assert_eq!(ct, "application/json");
    let profile: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = profile["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for used in ["getppid", "openat", "rt_sigsuspend", "wait4"] {
        assert!(names.contains(&used), "{used} was used and must be allowed");
    }
    assert!(!names.contains(&"sysinfo") && !names.contains(&"unshare"));
    let path = std::env::temp_dir().join("ebpf-sidecar-advised-seccomp.json");
    std::fs::write(&path, &body).unwrap();
    let opt = format!("seccomp={}", path.display());

    // The same workload under the advised profile: the container starts and the work succeeds.
    let out = docker::run(&[
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
        "42",
    ]);
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Syscalls it never made are refused with EPERM: sysinfo (allowed by Docker's default
    // profile, as the run without ours shows) and unshare.
    let novel = |extra: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(extra);
        a.extend(["-v", &mount, "debian:bookworm-slim", "/counted", "novel"]);
        docker::run(&a).status.code()
    };
    assert_eq!(
        novel(&[]),
        Some(20),
        "Docker's default profile allows sysinfo, refuses unshare"
    );
    assert_eq!(
        novel(&["--security-opt", &opt]),
        Some(30),
        "the advised profile refuses both"
    );
}

#[test]
fn run_writes_the_profile_and_counts_risky_syscalls() {
    require_root();
    let w = workload("counted");
    let dir = std::env::temp_dir();
    let (prof, prom) = (
        dir.join("ebpf-sidecar-run-seccomp.json"),
        dir.join("ebpf-sidecar-run-risky.prom"),
    );
    let port = format!("127.0.0.1:{}", free_port());
    let st = std::process::Command::new(sidecar_bin())
        .args(["run", "--listen", &port, "--seccomp-out"])
        .arg(&prof)
        .arg("--metrics-out")
        .arg(&prom)
        .arg("--")
        .arg(&w)
        .arg("novel")
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0), "as root both calls succeed");
    let m = Metrics::parse(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(
        m.sum(
            "ebpf_sidecar_risky_syscalls_total",
            &[("syscall", "unshare")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("ebpf_sidecar_risky_syscalls_total", &[]),
        1.0,
        "nothing else risky"
    );
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&prof).unwrap()).unwrap();
    let names = p["syscalls"][0]["names"].as_array().unwrap();
    assert!(names.iter().any(|n| n == "sysinfo") && names.iter().any(|n| n == "unshare"));
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
}
