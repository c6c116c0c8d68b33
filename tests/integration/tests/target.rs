//! Target resolution on a host: a pid in the root cgroup is refused (it would be the whole
//! host), `--target-tree` counts a process and its descendants followed in the kernel and
//! nothing of the rest of the host, and a `--target-pid` cgroup shared with other processes is
//! said out loud. A restarted container is followed onto its new cgroup (Docker).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integration::*;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap()
}

fn sleeper() -> Killed {
    Killed(Command::new("sleep").arg("60").spawn().unwrap())
}

#[test]
fn target_pid_in_the_root_cgroup_is_refused_with_the_alternatives() {
    require_root();
    let s = sleeper();
    let pid = s.0.id();
    assert_eq!(
        cgroup_of(pid),
        "/",
        "this host runs tests in the root cgroup"
    );
    let out = Command::new(sidecar_bin())
        .args(["--target-pid", &pid.to_string(), "--probes", "syscalls"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in [
        "root cgroup",
        "--target-tree",
        "run -- CMD",
        "--target-container",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
}

/// The tree: `counted serve` and what it starts. The rest of the host, this test process
/// included (the tree root's parent), makes the same calls at the same time and adds nothing.
#[test]
fn target_tree_counts_the_tree_exactly_and_nothing_of_the_host() {
    require_root();
    const N: u64 = 3000;
    const M: u64 = 17;
    const K: u64 = 4;
    let mut serve = Command::new(workload("counted"))
        .args(["serve", &N.to_string(), &M.to_string(), &K.to_string(), "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let root = Killed(serve);
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let pid = root.0.id();
    assert_eq!(cgroup_of(pid), "/");
    let sc = Sidecar::start(&[
        "--target-tree",
        &pid.to_string(),
        "--probes",
        "process,syscalls",
    ]);
    // The host next door: getppid from this process, and a whole `counted run` with execs.
    let noise = std::thread::spawn(|| {
        for _ in 0..20_000 {
            // SAFETY: getppid has no arguments and no effects.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
    });
    let st = Command::new(workload("counted"))
        .args(["run", "5000", "9", "3", "0"])
        .status()
        .unwrap();
    assert!(st.success());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGUSR1) };
    assert_eq!(lines.next().unwrap().unwrap(), "done 0");
    noise.join().unwrap();
    let m = wait_for("the tree's last exits", Duration::from_secs(10), || {
        let m = sc.scrape();
        (m.sum("ebpf_sidecar_processes", &[]) == 1.0).then_some(m)
    });
    let calls = |s: &str| m.sum("ebpf_sidecar_syscalls_total", &[("syscall", s)]);
    assert_eq!(calls("getppid"), N as f64, "getppid of the tree only");
    assert_eq!(
        m.sum(
            "ebpf_sidecar_syscall_errors_total",
            &[("syscall", "openat"), ("errno", "ENOENT")]
        ),
        M as f64
    );
    assert_eq!(
        m.sum("ebpf_sidecar_process_execs_total", &[]),
        K as f64,
        "the tree's execs of true"
    );
    assert_eq!(
        m.sum("ebpf_sidecar_process_forks_total", &[]),
        (1 + K) as f64
    );
    assert_eq!(
        m.sum("ebpf_sidecar_process_exits_total", &[("comm", "true")]),
        K as f64
    );
    assert_eq!(calls("execve"), K as f64);
    let info: Vec<_> = m.matching("ebpf_sidecar_target_info", &[]).collect();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].0["mode"], "tree");
    assert_eq!(info[0].0["filter"], "tree");
    assert_eq!(info[0].0["pid"], pid.to_string());
}

#[test]
fn target_pid_in_a_shared_cgroup_warns_and_says_so_in_target_info() {
    require_root();
    let dir = real::cgroup2_root().join(format!("ebpf-sidecar-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Rmdir(PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let (a, b, c) = (sleeper(), sleeper(), sleeper());
    for s in [&a, &b, &c] {
        std::fs::write(dir.join("cgroup.procs"), s.0.id().to_string()).unwrap();
    }
    let sc = Sidecar::start(&["--target-pid", &a.0.id().to_string(), "--probes", "process"]);
    let m = sc.scrape();
    let info: Vec<_> = m.matching("ebpf_sidecar_target_info", &[]).collect();
    assert_eq!(info[0].0["filter"], "cgroup_shared");
    let log = sc.log_text();
    assert!(
        log.contains("holds 2 process(es) outside that pid's tree")
            && log.contains("--target-tree"),
        "{log}"
    );
    assert_eq!(m.sum("ebpf_sidecar_processes", &[]), 3.0);
    drop(sc);
    drop((a, b, c));
    std::thread::sleep(Duration::from_millis(100));
    let _guard = Rmdir(dir);
}

#[test]
fn container_restart_is_followed_onto_the_new_cgroup() {
    require_root();
    docker::sidecar_image(); // base image + dockerd up
    let app = counted::container("ebpf-sidecar-test-restart", &[]);
    let s = Sidecar::start(&[
        "--target-container",
        "ebpf-sidecar-test-restart",
        "--resolve-interval",
        "0.2",
    ]);
    counted::trigger(&app, 1);
    counted::assert_counts(&s.scrape(), 1, "counted");
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
    counted::trigger(&app, 2);
    let m = s.scrape();
    counted::assert_counts(&m, 2, "counted");
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
