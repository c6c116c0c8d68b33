//! Node mode: every container of the host from one process, each a slot of the shared kernel
//! side, every series labelled with its container. Real dockerd; the node runs on the host
//! (host pid namespace, the host's bpffs and Docker socket).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use integration::apps::{app_with, assert_app_in, truth, work};
use integration::docker::{self, Container};
use integration::{
    Metrics, Sidecar, free_port, host_programs, http_get, promtool_check, require_root,
    sidecar_bin, wait_for, workload,
};

/// `ebpf-sidecar node OPTS` on the host; SIGTERM on drop (it leaves the set).
struct Node(Sidecar);

impl Node {
    fn start(opts: &[&str], env: &[(&str, &str)]) -> Self {
        let args: Vec<&str> = std::iter::once("node")
            .chain(opts.iter().copied())
            .collect();
        Self(Sidecar::start_with(
            &sidecar_bin(),
            &args,
            env,
            Duration::from_secs(60),
        ))
    }

    fn scrape(&self) -> Metrics {
        self.0.scrape()
    }

    /// Wait until `n` containers are monitored.
    fn wait_containers(&self, n: usize) {
        wait_for("containers monitored", Duration::from_secs(30), || {
            (self.scrape().sum("ebpf_sidecar_node_containers", &[]) == n as f64).then_some(())
        });
    }
}

fn name(i: usize) -> String {
    format!("ebpf-sidecar-node-app{i}")
}

const SELECT: &str = "name=ebpf-sidecar-node-app[0-9]+";

#[test]
fn every_container_exact_under_its_labels_started_restarted_and_removed_ones_followed() {
    require_root();
    let pod = [
        "--label",
        "io.kubernetes.pod.name=web-7d9f",
        "--label",
        "io.kubernetes.pod.namespace=shop",
    ];
    let mut apps: Vec<Container> = (0..5)
        .map(|i| app_with(&name(i), i, if i == 0 { &pod } else { &[] }))
        .collect();
    // Not selected: a neighbour doing the same, which no series may show.
    let other = app_with("ebpf-sidecar-node-other", 1, &[]);
    let node = Node::start(&["--containers", SELECT, "--retain-seconds", "3"], &[]);
    node.wait_containers(5);
    for (i, a) in apps.iter().enumerate() {
        work(a, i, 1);
    }
    work(&other, 1, 1);
    let m = node.scrape();
    for i in 0..5 {
        assert_app_in(&m, &[("container", &name(i))], i, 1, &name(i));
    }
    assert_eq!(
        m.sum(
            "ebpf_sidecar_syscalls_total",
            &[("container", "ebpf-sidecar-node-other")]
        ),
        0.0,
        "an unselected container is not monitored"
    );
    // Pod labels from Kubernetes' container labels, on every series of that container.
    assert_eq!(
        m.sum(
            "ebpf_sidecar_target_info",
            &[
                ("container", &name(0)),
                ("pod", "web-7d9f"),
                ("namespace", "shop")
            ]
        ),
        1.0
    );
    assert!(
        m.sum(
            "ebpf_sidecar_syscalls_total",
            &[("pod", "web-7d9f"), ("namespace", "shop")]
        ) > 0.0
    );
    let id0 = docker::ok(&["inspect", "-f", "{{.Id}}", &name(0)]);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_target_info",
            &[("container", &name(0)), ("container_id", &id0)]
        ),
        1.0
    );
    let lint = promtool_check(&m.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");

    // A sixth, started while node mode runs: picked up from Docker's events, exact.
    apps.push(app_with(&name(5), 5, &[]));
    node.wait_containers(6);
    work(&apps[5], 5, 1);
    assert_app_in(&node.scrape(), &[("container", &name(5))], 5, 1, &name(5));

    // A restart: the same labels, counting on (the slot follows the new cgroup).
    docker::ok(&["restart", "-t", "1", &name(1)]);
    wait_for("ready again", Duration::from_secs(20), || {
        (apps[1].logs().matches("ready").count() >= 2).then_some(())
    });
    wait_for("restart followed", Duration::from_secs(10), || {
        (node.scrape().sum(
            "ebpf_sidecar_target_acquisitions_total",
            &[("container", &name(1))],
        ) >= 2.0)
            .then_some(())
    });
    work(&apps[1], 1, 2);
    assert_app_in(&node.scrape(), &[("container", &name(1))], 1, 2, &name(1));

    // Removed: its series stay for --retain-seconds (3), then go.
    let removed = apps.remove(2);
    drop(removed);
    node.wait_containers(5);
    let m = node.scrape();
    assert_app_in(&m, &[("container", &name(2))], 2, 1, "removed, retained");
    wait_for("removed series gone", Duration::from_secs(10), || {
        let m = node.scrape();
        (m.sum("ebpf_sidecar_syscalls_total", &[("container", &name(2))]) == 0.0).then_some(())
    });
    drop(node);
}

/// Without the Docker socket: containers found by their cgroups, labelled with container_id
/// only, counts exact.
#[test]
fn without_the_docker_socket_containers_are_found_by_cgroup() {
    require_root();
    let apps: Vec<Container> = (0..2).map(|i| app_with(&name(10 + i), i, &[])).collect();
    let node = Node::start(&[], &[("DOCKER_HOST", "unix:///nonexistent.sock")]);
    let ids: Vec<String> = apps
        .iter()
        .map(|a| docker::ok(&["inspect", "-f", "{{.Id}}", &a.0]))
        .collect();
    wait_for("both found", Duration::from_secs(20), || {
        let m = node.scrape();
        ids.iter()
            .all(|id| m.sum("ebpf_sidecar_target_up", &[("container_id", id)]) == 1.0)
            .then_some(())
    });
    for (i, a) in apps.iter().enumerate() {
        work(a, i, 1);
    }
    let m = node.scrape();
    for (i, id) in ids.iter().enumerate() {
        assert_app_in(&m, &[("container_id", id)], i, 1, id);
    }
}

#[test]
fn bad_node_input_exits_2_with_the_reason() {
    require_root();
    for (args, says) in [
        (
            vec!["--containers", "image=x"],
            "label=KEY=VALUE or name=REGEX",
        ),
        (
            vec!["--containers", "name=("],
            "not a valid regular expression",
        ),
        (vec!["--containers", "label=team"], "label=KEY=VALUE"),
        (vec!["--kernel-side", "private"], "shared kernel side"),
        (vec!["--target-pid", "1"], "drop --target-pid"),
    ] {
        let out = Command::new(sidecar_bin())
            .arg("node")
            .args(&args)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A filter matching nothing: a warning, and node mode serves on (a match may start later).
    let node = Node::start(&["--containers", "name=no-such-container-[0-9]+"], &[]);
    node.wait_containers(0);
    assert!(
        node.0
            .log_text()
            .contains("matches none of the running containers"),
        "{}",
        node.0.log_text()
    );
    drop(node);
    // Selecting by name without the Docker API: said, exit 2.
    let out = Command::new(sidecar_bin())
        .args(["node", "--containers", SELECT, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("/var/run/docker.sock"), "{err}");
}

/// --include-host: the host's processes outside every container are one more target,
/// `container=""`; each container's own page and routes (what its sidecar would serve) answer
/// at /containers/NAME/ and with ?container=NAME.
#[test]
fn the_host_is_one_more_target_and_each_container_has_its_own_views() {
    require_root();
    let app0 = app_with(&name(20), 0, &[]);
    let node = Node::start(
        &[
            "--containers",
            &format!("name={}", name(20)),
            "--include-host",
        ],
        &[],
    );
    node.wait_containers(1);
    wait_for("host monitored", Duration::from_secs(20), || {
        (node
            .scrape()
            .sum("ebpf_sidecar_target_up", &[("container", "")])
            == 1.0)
            .then_some(())
    });
    // On the host (not in a container): K execs of `true`, as the container's workload does.
    let before = node.scrape();
    let (n, m, k, _) = truth(3);
    let status = Command::new(workload("counted"))
        .args(["run", &n.to_string(), &m.to_string(), &k.to_string(), "42"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(42));
    work(&app0, 0, 1);
    let after = node.scrape();
    let delta = |labels: &[(&str, &str)]| {
        after.sum("ebpf_sidecar_process_execs_total", labels)
            - before.sum("ebpf_sidecar_process_execs_total", labels)
    };
    // Nothing else on this host execs `true` meanwhile; the container's own `true`s are its.
    assert_eq!(delta(&[("comm", "true"), ("container", "")]), k as f64);
    assert_eq!(delta(&[("comm", "counted"), ("container", "")]), 1.0);
    assert_app_in(&after, &[("container", &name(20))], 0, 1, &name(20));
    assert!(
        after.sum("ebpf_sidecar_syscalls_total", &[("container", "")]) >= n as f64,
        "the host's getppid calls"
    );
    let lint = promtool_check(&after.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");

    let port = node.0.port;
    let get = |path: &str| http_get(port, path, None).expect(path);
    // The container's own /metrics: its sidecar's series, without the node's labels.
    let (code, _, text) = get(&format!("/containers/{}/metrics", name(20)));
    assert_eq!(code, 200);
    assert_app_in(&Metrics::parse(&text), &[], 0, 1, "its own /metrics");
    let (code, _, page) = get(&format!("/containers/{}/", name(20)));
    assert_eq!(code, 200);
    assert!(page.contains("assets/live.js"), "its live page");
    let (code, _, js) = get(&format!("/containers/{}/assets/live.js", name(20)));
    assert_eq!(code, 200);
    assert!(
        js.contains("fetch('metrics'"),
        "the page reads its own /metrics"
    );
    let (code, _, page) = get("/");
    assert_eq!(code, 200);
    assert!(page.contains("id=\"containers\""), "the node page's table");
    // Per container by query: the advised seccomp profile has the app's calls.
    let (code, _, seccomp) = get(&format!("/seccomp?container={}", name(20)));
    assert_eq!(code, 200, "{seccomp}");
    assert!(seccomp.contains("getppid"), "{seccomp}");
    // The profile (pprof is gzip: its text twin here, same route family).
    let (code, _, folded) = get(&format!(
        "/debug/profile/folded?seconds=1&container={}",
        name(20)
    ));
    assert_eq!(code, 200, "{folded}");
    let pprof = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{content_type}",
        ])
        .arg(format!(
            "http://127.0.0.1:{port}/debug/pprof/profile?seconds=1&container={}",
            name(20)
        ))
        .output()
        .expect("curl: apt-get install curl");
    let pprof = String::from_utf8_lossy(&pprof.stdout);
    assert!(pprof.starts_with("200 "), "pprof: {pprof}");
    // No --allow-pcap: the family's own refusal, for that container.
    let (code, _, pcap) = get(&format!("/debug/pcap?container={}", name(20)));
    assert_eq!(code, 403, "{pcap}");
    assert!(pcap.contains("--allow-pcap"), "{pcap}");
    // Said clearly: no container named, or an unknown one.
    let (code, _, msg) = get("/seccomp");
    assert_eq!(code, 400);
    assert!(msg.contains("?container=NAME"), "{msg}");
    let (code, _, msg) = get("/seccomp?container=nope");
    assert_eq!(code, 404);
    assert!(msg.contains("no monitored container"), "{msg}");
}

/// Node mode and two sidecars on one host: one kernel side (the programs one sidecar attaches,
/// attached once), every count exact.
#[test]
fn node_mode_and_two_sidecars_share_one_kernel_side() {
    require_root();
    let before = host_programs();
    let apps: Vec<Container> = (0..3).map(|i| app_with(&name(30 + i), i, &[])).collect();
    let node = Node::start(&["--containers", &format!("name={}", name(30))], &[]);
    node.wait_containers(1);
    let one = host_programs();
    // Sidecars of the same build (an image builds its own objects: another ABI, another set).
    let sidecar = |app: &Container| {
        Sidecar::start_with(
            &sidecar_bin(),
            &["--target-container", &app.0],
            &[],
            Duration::from_secs(60),
        )
    };
    let (s1, s2) = (sidecar(&apps[1]), sidecar(&apps[2]));
    let (p1, p2) = (s1.port, s2.port);
    let three = host_programs();
    let added = |now: &BTreeMap<String, usize>| -> BTreeMap<String, usize> {
        now.iter()
            .filter_map(|(n, c)| {
                let was = before.get(n).copied().unwrap_or(0);
                (*c > was).then(|| (n.clone(), c - was))
            })
            .collect()
    };
    assert!(!added(&one).is_empty(), "node mode attached programs");
    assert_eq!(
        added(&three),
        added(&one),
        "two sidecars beside node mode attach nothing more: one kernel side"
    );
    assert!(added(&one).values().all(|n| *n == 1), "{:?}", added(&one));
    for (i, a) in apps.iter().enumerate() {
        work(a, i, 1);
    }
    assert_app_in(&node.scrape(), &[("container", &name(30))], 0, 1, "node");
    for (i, port) in [(1, p1), (2, p2)] {
        let m = Metrics::parse(&http_get(port, "/metrics", None).expect("scrape").2);
        assert_app_in(&m, &[], i, 1, &format!("sidecar {i}"));
        assert_eq!(
            m.sum("ebpf_sidecar_syscalls_total", &[("container", &name(30))]),
            0.0
        );
    }
}

/// --max-targets bounds node mode: a container past the bound is not monitored (and said), the
/// rest are, exact.
#[test]
fn max_targets_bounds_the_containers_monitored() {
    require_root();
    let apps: Vec<Container> = (0..3).map(|i| app_with(&name(40 + i), i, &[])).collect();
    let node = Node::start(
        &[
            "--containers",
            "name=ebpf-sidecar-node-app4[0-9]",
            "--max-targets",
            "2",
        ],
        &[],
    );
    node.wait_containers(2);
    std::thread::sleep(Duration::from_secs(2));
    let m = node.scrape();
    assert_eq!(m.sum("ebpf_sidecar_node_containers", &[]), 2.0);
    assert!(
        node.0.log_text().contains("no free slot"),
        "the container past --max-targets is said: {}",
        node.0.log_text()
    );
    for (i, a) in apps.iter().enumerate() {
        work(a, i, 1);
    }
    let m = node.scrape();
    let monitored: Vec<usize> = (0..3)
        .filter(|i| m.sum("ebpf_sidecar_target_up", &[("container", &name(40 + i))]) == 1.0)
        .collect();
    assert_eq!(monitored.len(), 2);
    for i in monitored {
        assert_app_in(&m, &[("container", &name(40 + i))], i, 1, &name(40 + i));
    }
}
