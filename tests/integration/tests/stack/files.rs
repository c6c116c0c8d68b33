//! The deployment files, checked without running them: the compose files (sidecar and node
//! mode), the Grafana dashboard's queries and its container variable, the Kubernetes manifests;
//! and the pod labels they pass.

use super::*;

#[test]
fn compose_file_validates_and_wires_the_sidecar_to_the_app() {
    let dir = repo_root().join("compose");
    let out = Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config"])
        .current_dir(&dir)
        .output()
        .expect("docker-compose not found: apt-get install docker-compose");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = &yaml_docs(&dir.join("compose.yaml"))[0];
    let svc = &doc["services"];
    for s in ["app", "sidecar", "prometheus", "grafana"] {
        assert!(svc[s].is_object(), "service {s} missing");
    }
    let sidecar = &svc["sidecar"];
    assert_eq!(sidecar["pid"], "service:app");
    let caps: Vec<&str> = sidecar["cap_add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        caps.contains(&"SYS_ADMIN") || (caps.contains(&"BPF") && caps.contains(&"PERFMON")),
        "sidecar needs SYS_ADMIN (Docker 20.10) or BPF+PERFMON: {caps:?}"
    );
    assert!(
        sidecar["ports"][0].as_str().unwrap().ends_with(":9435"),
        "the sidecar's metrics port is published"
    );
    // Prometheus scrapes the sidecar service on its port.
    let prom = &yaml_docs(&dir.join("prometheus.yml"))[0];
    let targets = &prom["scrape_configs"][0]["static_configs"][0]["targets"];
    assert_eq!(targets[0], "sidecar:9435");
    // Grafana's provisioning points at the dashboard and at Prometheus.
    let ds = &yaml_docs(&dir.join("grafana/provisioning/datasources/prometheus.yaml"))[0];
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");
    assert_eq!(ds["datasources"][0]["uid"], "prometheus");
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("grafana/dashboards/ebpf-sidecar.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dash["uid"], "ebpf-sidecar");
}

/// compose/node.yaml: one node-mode sidecar for two different apps it selects by their compose
/// label (nothing else of the stack), Prometheus scraping it, Grafana with the same dashboard.
#[test]
fn node_compose_file_runs_one_node_for_the_two_labelled_apps() {
    let dir = repo_root().join("compose");
    let out = Command::new("docker-compose")
        .args(["-f", "node.yaml", "config"])
        .current_dir(&dir)
        .output()
        .expect("docker-compose not found: apt-get install docker-compose");
    assert!(
        out.status.success(),
        "docker-compose -f node.yaml config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = node_compose();
    let svc = &doc["services"];
    for s in ["node", "prometheus", "grafana"] {
        assert!(svc[s].is_object(), "service {s} missing");
    }
    let node = &svc["node"];
    assert_eq!(node["image"], "ebpf-sidecar");
    assert_eq!(
        node["pid"], "host",
        "node mode sees every container's processes"
    );
    let command = strings(&node["command"]);
    assert_eq!(
        command.first().map(String::as_str),
        Some("node"),
        "{command:?}"
    );
    assert!(
        command.iter().any(|a| a == "--listen=0.0.0.0:9435"),
        "{command:?}"
    );
    // The same capabilities as compose.yaml's sidecar (and so the same families can load).
    let (sidecar_caps, sidecar_command) = compose_sidecar();
    let mut caps = strings(&node["cap_add"]);
    let mut want = sidecar_caps.clone();
    caps.sort();
    want.sort();
    assert_eq!(caps, want, "node's cap_add vs compose.yaml's sidecar");
    let probes = |c: &[String]| c.iter().find(|a| a.starts_with("--probes=")).cloned();
    assert_eq!(
        probes(&command),
        probes(&sidecar_command),
        "the dashboard's families"
    );
    // The host's bpffs writable, the Docker socket read-only.
    let volumes = strings(&node["volumes"]);
    let mount = |target: &str| {
        volumes
            .iter()
            .find(|v| v.split(':').nth(1) == Some(target))
            .unwrap_or_else(|| panic!("no mount at {target}: {volumes:?}"))
            .clone()
    };
    assert_eq!(
        mount("/sys/fs/bpf"),
        "/sys/fs/bpf:/sys/fs/bpf",
        "writable bpffs"
    );
    assert_eq!(
        mount("/var/run/docker.sock"),
        "/var/run/docker.sock:/var/run/docker.sock:ro"
    );
    for v in &volumes {
        assert!(
            v.starts_with("/sys/fs/bpf:") || v.ends_with(":ro"),
            "every other mount is read-only: {v}"
        );
    }
    // --containers selects the two apps by label, and nothing else of the stack.
    let sels = label_selectors(&command);
    assert!(
        !sels.is_empty(),
        "no --containers label=KEY=VALUE: {command:?}"
    );
    let apps = node_compose_apps(&doc);
    assert_eq!(apps.len(), 2, "two apps carry the selected label: {apps:?}");
    let contexts: BTreeSet<String> = apps
        .iter()
        .map(|a| {
            svc[a]["build"]["context"]
                .as_str()
                .unwrap_or_else(|| panic!("app {a} is built from examples/"))
                .to_string()
        })
        .collect();
    assert_eq!(contexts.len(), 2, "two different apps: {contexts:?}");
    for c in &contexts {
        assert!(dir.join(c).join("Dockerfile").is_file(), "{c}/Dockerfile");
    }
    for s in ["node", "prometheus", "grafana"] {
        assert!(!apps.iter().any(|a| a == s), "{s} must not be monitored");
    }
    // Prometheus scrapes the node service on its port.
    assert!(
        strings(&svc["prometheus"]["volumes"])
            .contains(&"./prometheus-node.yml:/etc/prometheus/prometheus.yml:ro".to_string()),
        "{}",
        svc["prometheus"]["volumes"]
    );
    let prom = &yaml_docs(&dir.join("prometheus-node.yml"))[0];
    let targets = strings(&prom["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(targets, ["node:9435"]);
    // Grafana: the same provisioning and dashboard as compose.yaml's.
    let compose = &yaml_docs(&dir.join("compose.yaml"))[0];
    assert_eq!(
        svc["grafana"]["volumes"],
        compose["services"]["grafana"]["volumes"]
    );
}

/// One dashboard for the sidecar and for node mode: a `container` variable (the node's label,
/// All = `.*`, which also matches the sidecar's series that have no such label), and every query
/// filtered by it.
#[test]
fn dashboard_filters_every_query_by_the_container_variable() {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("compose/grafana/dashboards/ebpf-sidecar.json"))
            .unwrap(),
    )
    .unwrap();
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = vars
        .iter()
        .find(|v| v["name"] == "container")
        .expect("a `container` template variable");
    assert_eq!(var["type"], "query");
    assert_eq!(var["datasource"]["uid"], "prometheus");
    let q = var["query"]["query"].as_str().or(var["query"].as_str());
    assert_eq!(
        q,
        Some("label_values(ebpf_sidecar_target_info, container)"),
        "{var}"
    );
    assert_eq!(var["includeAll"], true);
    assert_eq!(
        var["allValue"], ".*",
        "All must match series without the label"
    );
    assert_eq!(var["multi"], true);
    let matcher = r#"container=~"$container""#;
    let mut exprs = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has an expr");
            exprs += 1;
            // Every metric of the expression carries the matcher.
            let mut rest = expr;
            while let Some(i) = rest.find("ebpf_sidecar_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let sel = tail[end..]
                    .strip_prefix('{')
                    .and_then(|s| s.split_once('}'))
                    .map(|(m, _)| m);
                assert!(
                    sel.is_some_and(|m| m.split(',').any(|x| x.trim() == matcher)),
                    "{} in panel {:?} lacks {{{matcher}}}: {expr}",
                    &tail[..end],
                    p["title"]
                );
                rest = &tail[end..];
            }
        }
    }
    assert!(exprs >= 30, "dashboard lost its queries: {exprs}");
}

#[test]
fn dashboard_queries_only_metrics_the_sidecar_exposes() {
    require_root();
    // A real sidecar watching this test process, with compose's families and --bpf-stats.
    let me = std::process::id().to_string();
    let (_, command) = compose_sidecar();
    let probes = command
        .iter()
        .find_map(|a| a.strip_prefix("--probes="))
        .expect("compose's sidecar command has --probes=");
    let sc = Sidecar::start(&["--target-tree", &me, "--bpf-stats", "--probes", probes]);
    let text = http_get(sc.port, "/metrics", None).unwrap().2;
    let scraped = exposed_names(&text);
    assert!(scraped.contains("ebpf_sidecar_syscalls_total"), "{text}");

    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("compose/grafana/dashboards/ebpf-sidecar.json"))
            .unwrap(),
    )
    .unwrap();
    let mut queried = BTreeSet::new();
    let mut panels_with_queries = 0;
    for p in dash["panels"].as_array().unwrap() {
        let Some(targets) = p["targets"].as_array() else {
            continue;
        };
        panels_with_queries += 1;
        for t in targets {
            let expr = t["expr"].as_str().expect("every target has an expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "query without a sidecar metric: {expr}");
            queried.extend(names);
        }
    }
    assert!(panels_with_queries >= 10, "dashboard lost its panels");
    // The container variable's query too.
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        queried.extend(q.map(metric_names).unwrap_or_default());
    }
    let unknown: Vec<_> = queried.iter().filter(|n| !scraped.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "dashboard queries metrics nobody exposes: {unknown:?}"
    );
    // The overview this issue asks for is there.
    for must in [
        "ebpf_sidecar_syscalls_total",
        "ebpf_sidecar_syscall_errors_total",
        "ebpf_sidecar_network_packets_total",
        "ebpf_sidecar_tcp_connections_total",
        "ebpf_sidecar_block_requests_total",
        "ebpf_sidecar_http_requests_total",
        "ebpf_sidecar_http_request_duration_seconds_bucket",
        "ebpf_sidecar_runtime_gc_duration_seconds_bucket",
        "ebpf_sidecar_bpf_program_run_seconds_total",
    ] {
        assert!(queried.contains(must), "dashboard has no panel on {must}");
    }
}

#[test]
fn kubernetes_manifests_have_the_required_fields_and_the_compose_flags() {
    let dir = repo_root().join("deploy/kubernetes");
    let pod = &yaml_docs(&dir.join("pod.yaml"))[0];
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["spec"]["shareProcessNamespace"], true);
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "app and sidecar");
    let sidecar = containers
        .iter()
        .find(|c| c["name"] == "ebpf-sidecar")
        .expect("a container named ebpf-sidecar");
    // Minimal capabilities: drop everything, add back what loading probes needs.
    let caps = &sidecar["securityContext"]["capabilities"];
    assert_eq!(strings(&caps["drop"]), ["ALL"]);
    let add = strings(&caps["add"]);
    assert_eq!(add, ["BPF", "PERFMON"], "minimal set; see pod.yaml");
    assert_ne!(sidecar["securityContext"]["privileged"], true);
    // Downward API: POD_NAME / POD_NAMESPACE, which the sidecar reads as --pod-name/--pod-namespace.
    let env = sidecar["env"].as_array().unwrap();
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let e = env
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("env {name}"));
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
    let port = &sidecar["ports"][0];
    assert_eq!(
        (port["name"].as_str(), port["containerPort"].as_u64()),
        (Some("metrics"), Some(9435))
    );
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/healthz");
    // Read-only, except the node's bpffs: the shared kernel side pins its programs and maps
    // there (README, "Kernel side").
    for m in sidecar["volumeMounts"].as_array().into_iter().flatten() {
        if m["mountPath"] == "/sys/fs/bpf" {
            assert_ne!(m["readOnly"], true, "the bpffs must be writable: {m}");
            continue;
        }
        assert_eq!(m["readOnly"], true, "sidecar mounts are read-only: {m}");
    }
    // The same flags as compose, less --bpf-stats (it needs SYS_ADMIN) and --probes: compose
    // adds the opt-in files and runtimes families for its dashboard (and NET_ADMIN, SYS_PTRACE
    // for them); the pod keeps the default set, whose net family is skipped without NET_ADMIN.
    let k8s_args = strings(&sidecar["args"]);
    let (_, compose_args) = compose_sidecar();
    let mut expected: Vec<String> = compose_args
        .iter()
        .filter(|a| a.as_str() != "--bpf-stats" && !a.starts_with("--probes"))
        .cloned()
        .collect();
    expected.sort();
    let mut got = k8s_args.clone();
    got.sort();
    assert_eq!(got, expected, "pod args vs compose command");

    // Service: scrape annotations on the sidecar's port, selecting the pod.
    let svc = &yaml_docs(&dir.join("service.yaml"))[0];
    assert_eq!(svc["kind"], "Service");
    let ann = &svc["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9435");
    assert_eq!(ann["prometheus.io/path"], "/metrics");
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(labels.get(k), Some(v), "service selects the pod");
    }
    // PodMonitor for the Prometheus Operator.
    let pm = &yaml_docs(&dir.join("podmonitor.yaml"))[0];
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["kind"], "PodMonitor");
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(labels.get(k), Some(v), "podmonitor selects the pod");
    }
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["port"], "metrics");
    assert_eq!(pm["spec"]["podMetricsEndpoints"][0]["path"], "/metrics");
}

/// --pod-name/--pod-namespace and their downward-API variables become labels on target_info.
#[test]
fn pod_name_and_namespace_label_the_target_info() {
    require_root();
    let port = free_port();
    let out = std::env::temp_dir().join(format!("ebpf-sidecar-stack-pod-{port}.prom"));
    let st = Command::new(sidecar_bin())
        .env("POD_NAME", "web-7d9f")
        .env("POD_NAMESPACE", "shop")
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-out",
        ])
        .arg(&out)
        .args(["--", "/bin/true"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let m = Metrics::parse(&std::fs::read_to_string(&out).unwrap());
    let _ = std::fs::remove_file(&out);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_target_info",
            &[("pod", "web-7d9f"), ("namespace", "shop")]
        ),
        1.0,
        "{}",
        m.text
    );
    let lint = promtool_check(&m.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
}
