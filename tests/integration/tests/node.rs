//! Node mode: every container of the host from one process, each a slot of the shared kernel
//! side, every series labelled with its container. Real dockerd; the node runs on the host
//! (host pid namespace, the host's bpffs and Docker socket).

use std::process::Command;
use std::time::Duration;

use integration::apps::{app_with, assert_app_in, work};
use integration::docker::{self, Container};
use integration::{
    Metrics, Sidecar, free_port, promtool_check, require_root, sidecar_bin, wait_for,
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
    let mut apps: Vec<Container> = (0..3)
        .map(|i| app_with(&name(i), i, if i == 0 { &pod } else { &[] }))
        .collect();
    // Not selected: a neighbour doing the same, which no series may show.
    let other = app_with("ebpf-sidecar-node-other", 1, &[]);
    let node = Node::start(&["--containers", SELECT, "--retain-seconds", "3"], &[]);
    node.wait_containers(3);
    for (i, a) in apps.iter().enumerate() {
        work(a, i, 1);
    }
    work(&other, 1, 1);
    let m = node.scrape();
    for i in 0..3 {
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

    // A fourth, started while node mode runs: picked up from Docker's events, exact.
    apps.push(app_with(&name(3), 3, &[]));
    node.wait_containers(4);
    work(&apps[3], 3, 1);
    assert_app_in(&node.scrape(), &[("container", &name(3))], 3, 1, &name(3));

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
    node.wait_containers(3);
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
