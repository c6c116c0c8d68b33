//! Custom probes on containers: one follows its target across a restart; the sidecar image runs
//! a custom uprobe in its app container with headers it wrote itself.

use super::*;

/// A restarted container is a new cgroup: a custom probe that filters with sidecar_in_target()
/// follows it like the built-in families do.
#[test]
fn custom_probe_follows_a_restarted_container() {
    require_root();
    let obj = build_object("execsnoop", None);
    let name = format!("ebpf-sidecar-custom-restart-{}", std::process::id());
    // Two seconds of quiet at each start: time for the sidecar (and, after the restart, for its
    // target watcher) to be in place before the five execs.
    let c = docker::Container::run(
        &name,
        &[
            "debian:bookworm-slim",
            "sh",
            "-c",
            "sleep 2; for i in 1 2 3 4 5; do /bin/true; done; exec sleep 1000",
        ],
    );
    let mut args = probe_arg(&obj, &example_yaml("execsnoop"));
    args.extend([
        "--probes".into(),
        "process".into(),
        "--target-container".into(),
        name.clone(),
        "--resolve-interval".into(),
        "0.2".into(),
    ]);
    let s = Sidecar::start(&strs(&args));
    let trues = |s: &Sidecar| {
        s.scrape()
            .sum("ebpf_sidecar_execsnoop_execs_total", &[("comm", "true")])
    };
    wait_for("the first run's execs", Duration::from_secs(20), || {
        (trues(&s) == 5.0).then_some(())
    });
    docker::ok(&["restart", "-t", "0", &c.0]);
    wait_for(
        "the restarted container's execs",
        Duration::from_secs(20),
        || (trues(&s) >= 10.0).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let m = s.scrape();
    assert_eq!(
        m.sum("ebpf_sidecar_execsnoop_execs_total", &[("comm", "true")]),
        10.0
    );
    assert_eq!(m.sum("ebpf_sidecar_target_acquisitions_total", &[]), 2.0);
    // Same count as the built-in family.
    assert_eq!(
        m.sum("ebpf_sidecar_process_execs_total", &[("comm", "true")]),
        10.0
    );
}

/// The sidecar image of this worktree, under a tag of its own (other worktrees build
/// `ebpf-sidecar:test` at the same time).
fn custom_image() -> &'static str {
    static IMAGE: OnceLock<()> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let v = docker::run(&["version", "--format", "{{.Server.Version}}"]);
        assert!(v.status.success(), "dockerd is not running");
        let st = Command::new(repo_root().join("scripts/images.sh"))
            .status()
            .unwrap();
        assert!(st.success(), "scripts/images.sh failed");
        let st = Command::new("docker")
            .args([
                "build",
                "-q",
                "--build-arg",
                "BUILDER=ebpf-sidecar-builder:local",
                "-t",
                "ebpf-sidecar:custom-test",
                ".",
            ])
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "docker build of the sidecar image failed");
    });
    "ebpf-sidecar:custom-test"
}

/// The image as users run it: headers from the image, a uprobe on a binary inside the app
/// container (reached through the shared pid namespace), target_cgroup_id filled in sidecar mode.
#[test]
fn sidecar_image_runs_a_custom_uprobe_in_its_app_container() {
    require_root();
    const N: u64 = 600;
    let image = custom_image();
    let dir = scratch().join("image");
    std::fs::create_dir_all(&dir).unwrap();
    docker::ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/out", dir.join("include").display()),
        image,
        "custom",
        "headers",
        "/out",
    ]);
    let obj = dir.join("ucalls.bpf.o");
    // Built with the headers the image wrote.
    compile_bpf(
        Recipe::User,
        &[&dir.join("include")],
        &repo_root().join("examples/custom/ucalls.bpf.c"),
        &obj,
    );
    std::fs::copy(example_yaml("ucalls"), dir.join("ucalls.yaml")).unwrap();
    let bin = dir.join("ufunc");
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(repo_root().join("examples/custom/ufunc.c"))
        .status()
        .unwrap();
    assert!(st.success());
    let app = docker::Container::run(
        "ebpf-sidecar-custom-app",
        &[
            "-v",
            &format!("{}:/usr/local/bin/ufunc:ro", bin.display()),
            "debian:bookworm-slim",
            "sh",
            "-c",
            &format!(
                "while [ ! -e /tmp/go ]; do sleep 0.1; done; /usr/local/bin/ufunc {N}; exec sleep 1000"
            ),
        ],
    );
    // The same binary on the host, outside the target: not counted.
    let _ = Command::new(&bin).arg("30").stdout(Stdio::null()).status();
    let port = free_port();
    let _sidecar = docker::Container::run(
        "ebpf-sidecar-custom-sidecar",
        &[
            &format!("--pid=container:{}", app.0),
            "--cap-add",
            "SYS_ADMIN",
            "-v",
            &format!("{}:/probes:ro", dir.display()),
            "-p",
            &format!("127.0.0.1:{port}:9435"),
            image,
            "--probes",
            "process",
            "--probe-file",
            "/probes/ucalls.bpf.o",
            "--probe-config",
            "/probes/ucalls.yaml",
        ],
    );
    wait_for("sidecar serving", Duration::from_secs(30), || {
        http_get(port, "/healthz", None)
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ())
    });
    docker::ok(&["exec", &app.0, "touch", "/tmp/go"]);
    let m = wait_for("the app's calls", Duration::from_secs(20), || {
        let m = Metrics::parse(&http_get(port, "/metrics", None).ok()?.2);
        (m.sum("ebpf_sidecar_ucalls_calls_total", &[]) >= N as f64).then_some(m)
    });
    assert_eq!(
        m.sum("ebpf_sidecar_probe_up", &[("probe", "custom:ucalls")]),
        1.0
    );
    for (kind, (calls, _, _)) in ufunc_truth(N).iter().enumerate() {
        assert_eq!(
            m.get(
                "ebpf_sidecar_ucalls_calls_total",
                &[("kind", &*kind.to_string())]
            ),
            Some(*calls as f64)
        );
    }
    assert_eq!(promtool_check(&m.text), "", "promtool");
}
