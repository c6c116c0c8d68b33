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

/// The Kubernetes releases whose schemas every manifest must pass: the oldest and the newest that
/// kubernetes-validate 1.37.0 (scripts/setup.sh) bundles.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25", "1.37"];

/// Kinds Kubernetes does not define, with their schema in deploy/kubernetes/schemas/ (its
/// README.md: source and version).
const VENDORED_SCHEMAS: &[(&str, &str, &str)] = &[(
    "monitoring.coreos.com/v1",
    "PodMonitor",
    "podmonitor-monitoring-v1.json",
)];

const INSTALL_KUBERNETES_VALIDATE: &str =
    "pip install kubernetes-validate (scripts/setup.sh does it)";

/// Every YAML file under deploy/kubernetes, recursively, sorted.
fn kubernetes_yaml_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![repo_root().join("deploy/kubernetes")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// YAML text (one or more documents) to JSON, as `yaml_docs` does for a file.
fn yaml_text(text: &str) -> Vec<Value> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 not found: apt-get install python3-yaml");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "parsing YAML: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `kubernetes-validate --strict` (unknown fields are errors) on one file against one release's
/// schemas: its exit status and output. Fails, naming the install, when it is missing.
fn kubernetes_validate(file: &Path, version: &str) -> (bool, String) {
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", version])
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!("running kubernetes-validate: {e}: {INSTALL_KUBERNETES_VALIDATE}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("FATAL"),
        "kubernetes-validate cannot check release {version} ({INSTALL_KUBERNETES_VALIDATE}, 1.37.0 or later):\n{text}"
    );
    (out.status.success(), text)
}

/// One document against a JSON Schema, with Python's jsonschema (a dependency of
/// kubernetes-validate): the errors, one a line, empty when it is valid.
fn json_schema_errors(schema: &Path, doc: &Value) -> String {
    const CHECK: &str = r#"
import json, sys
try:
    import jsonschema
except ImportError as e:
    print(e); sys.exit(3)
schema = json.load(open(sys.argv[1]))
errors = jsonschema.Draft202012Validator(schema).iter_errors(json.load(sys.stdin))
for e in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
    print("/".join(map(str, e.absolute_path)) or "(top)", "-", e.message)
"#;
    let mut child = Command::new("python3")
        .args(["-c", CHECK])
        .arg(schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 not found: apt-get install python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_ne!(
        out.status.code(),
        Some(3),
        "python3 has no jsonschema ({}): {INSTALL_KUBERNETES_VALIDATE}",
        text.trim()
    );
    assert!(
        out.status.success(),
        "checking against {}: {}",
        schema.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// What a kustomization's `resources` name, relative to its directory: each a file, or a
/// directory with its own kustomization.yaml.
fn kustomization_resources(file: &Path, doc: &Value) -> Vec<String> {
    let dir = file.parent().unwrap();
    let res = strings(&doc["resources"]);
    for r in &res {
        let p = dir.join(r);
        assert!(
            p.is_file() || p.join("kustomization.yaml").is_file(),
            "{}: resource {r} is neither a file nor a kustomization",
            file.display()
        );
    }
    res
}

/// Every manifest under deploy/kubernetes (the pod example's and node mode's), offline: a
/// Kubernetes kind must pass kubernetes-validate --strict against every release of
/// KUBERNETES_VERSIONS; a Prometheus Operator kind, which it does not know (it warns and passes),
/// the schema vendored in deploy/kubernetes/schemas/; a kustomization names resources that exist.
/// Anything else fails.
#[test]
fn every_kubernetes_manifest_validates_offline_against_the_schemas() {
    let files = kubernetes_yaml_files();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(repo_root()).unwrap().display().to_string())
        .collect();
    for must in [
        "deploy/kubernetes/pod.yaml",
        "deploy/kubernetes/daemonset/daemonset.yaml",
        "deploy/kubernetes/daemonset/kustomization.yaml",
        "deploy/kubernetes/daemonset-containerd/kustomization.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == must),
            "{must} not found: {names:?}"
        );
    }
    let schemas = repo_root().join("deploy/kubernetes/schemas");
    let mut checked = 0;
    for file in &files {
        let docs = yaml_docs(file);
        assert!(!docs.is_empty(), "{}: no document", file.display());
        let mut outputs = Vec::new();
        for v in KUBERNETES_VERSIONS {
            let (ok, text) = kubernetes_validate(file, v);
            assert!(ok, "{}:\n{text}", file.display());
            assert!(!text.contains("ERROR"), "{}:\n{text}", file.display());
            outputs.push((v, text));
        }
        for doc in &docs {
            let (api, kind) = (doc["apiVersion"].as_str(), doc["kind"].as_str());
            let (Some(api), Some(kind)) = (api, kind) else {
                panic!("{}: a document without apiVersion/kind", file.display());
            };
            if kind == "Kustomization" {
                assert_eq!(api, "kustomize.config.k8s.io/v1beta1", "{}", file.display());
                assert!(!kustomization_resources(file, doc).is_empty());
                checked += 1;
                continue;
            }
            let name = doc["metadata"]["name"].as_str().unwrap_or("?");
            if let Some((_, _, schema)) = VENDORED_SCHEMAS
                .iter()
                .find(|(a, k, _)| *a == api && *k == kind)
            {
                let errors = json_schema_errors(&schemas.join(schema), doc);
                assert!(
                    errors.is_empty(),
                    "{} {kind}/{name} against {schema}:\n{errors}",
                    file.display()
                );
                checked += 1;
                continue;
            }
            for (v, text) in &outputs {
                let passed = format!(
                    "passed for resource {}/{name} against version {v}",
                    kind.to_lowercase()
                );
                assert!(
                    text.contains(&passed),
                    "{} {api} {kind}/{name}: neither Kubernetes' schemas (release {v}) nor one in \
                     deploy/kubernetes/schemas/ checked it:\n{text}",
                    file.display()
                );
            }
            checked += 1;
        }
    }
    eprintln!("{checked} documents in {} files checked", files.len());
}

/// The node-mode DaemonSet, base (Docker socket) or rendered from daemonset-containerd (none):
/// the host's pid namespace, the bpffs its one writable mount, the node subcommand, the documented
/// capabilities, resources, probes on the metrics port, every node, no API access.
fn assert_node_daemonset(ds: &Value, docker: bool) {
    assert_eq!(ds["apiVersion"], "apps/v1");
    assert_eq!(ds["kind"], "DaemonSet");
    let tmpl = &ds["spec"]["template"];
    let labels = tmpl["metadata"]["labels"].as_object().unwrap();
    for (k, v) in ds["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(labels.get(k), Some(v), "the selector matches the pods");
    }
    let spec = &tmpl["spec"];
    assert_eq!(
        spec["hostPID"], true,
        "node mode needs the host's pid namespace"
    );
    assert_ne!(spec["hostNetwork"], true);
    assert_eq!(
        spec["automountServiceAccountToken"], false,
        "node mode never calls the Kubernetes API"
    );
    for k in ["serviceAccountName", "serviceAccount"] {
        assert!(spec[k].is_null(), "no ServiceAccount: {k} = {}", spec[k]);
    }
    assert!(
        spec["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["operator"] == "Exists" && t["key"].is_null() && t["effect"].is_null()),
        "a toleration of every taint, so it runs on every node: {}",
        spec["tolerations"]
    );
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    let args = strings(&c["args"]);
    assert_eq!(args.first().map(String::as_str), Some("node"), "{args:?}");
    assert!(
        args.contains(&"--listen=0.0.0.0:9435".to_string()),
        "{args:?}"
    );
    assert_eq!(
        args.iter().any(|a| a.starts_with("--containers")),
        docker,
        "--containers selects by name or label: with the Docker API only: {args:?}"
    );
    let port = &c["ports"][0];
    assert_eq!(
        (port["name"].as_str(), port["containerPort"].as_u64()),
        (Some("metrics"), Some(9435))
    );
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(
            (get["path"].as_str(), get["port"].as_str()),
            (Some("/healthz"), Some("metrics")),
            "{probe}"
        );
    }

    let sc = &c["securityContext"];
    assert_ne!(sc["privileged"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(
        sc["runAsUser"], 0,
        "capabilities come with root (no file capabilities)"
    );
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let mut add = strings(&sc["capabilities"]["add"]);
    add.sort();
    assert_eq!(
        add,
        [
            "BPF",
            "NET_ADMIN",
            "PERFMON",
            "SYS_ADMIN",
            "SYS_PTRACE",
            "SYS_RESOURCE"
        ],
        "the set daemonset.yaml documents, each for a reason given there"
    );

    for res in ["cpu", "memory"] {
        let req = quantity(&c["resources"]["requests"][res]);
        let lim = quantity(&c["resources"]["limits"][res]);
        assert!(req > 0.0 && lim >= req, "{res}: request {req}, limit {lim}");
    }

    // Volumes: host paths, each mounted once; read-only but for the bpffs.
    let volumes: Vec<&Value> = spec["volumes"].as_array().unwrap().iter().collect();
    let mounts: Vec<&Value> = c["volumeMounts"].as_array().unwrap().iter().collect();
    assert_eq!(volumes.len(), mounts.len(), "every volume mounted once");
    let mut host_paths = BTreeSet::new();
    for m in &mounts {
        let v = volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("no volume for the mount {m}"));
        let host = v["hostPath"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("a hostPath volume: {v}"));
        assert_eq!(m["mountPath"], host, "mounted where the host has it: {m}");
        if host == "/sys/fs/bpf" {
            assert_ne!(m["readOnly"], true, "the bpffs must be writable: {m}");
            assert_eq!(v["hostPath"]["type"], "Directory");
        } else {
            assert_eq!(
                m["readOnly"], true,
                "mounts but the bpffs are read-only: {m}"
            );
        }
        host_paths.insert(host);
    }
    let mut want = BTreeSet::from(["/sys/fs/bpf", "/sys/fs/cgroup", "/sys/kernel/btf"]);
    if docker {
        want.insert("/var/run/docker.sock");
        let sock = volumes
            .iter()
            .find(|v| v["hostPath"]["path"] == "/var/run/docker.sock")
            .unwrap();
        assert_eq!(sock["hostPath"]["type"], "Socket");
    }
    assert_eq!(host_paths, want);
}

/// A Kubernetes quantity ("50m", "1", "256Mi", "1Gi") as a number.
fn quantity(v: &Value) -> f64 {
    if let Some(n) = v.as_f64() {
        return n;
    }
    let s = v.as_str().unwrap_or_else(|| panic!("a quantity: {v}"));
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let scale = match unit {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        _ => panic!("unit of {s}"),
    };
    num.parse::<f64>()
        .unwrap_or_else(|_| panic!("quantity {s}"))
        * scale
}

/// What `kubectl kustomize daemonset-containerd/` makes of the base DaemonSet, for the only
/// strategic-merge directives its patch uses: a container's fields replaced (matched by name),
/// volumeMounts (by mountPath) and volumes (by name) deleted with `$patch: delete`.
fn containerd_daemonset(base: &Value, patch: &Value) -> Value {
    assert_eq!(patch["kind"], "DaemonSet");
    assert_eq!(patch["metadata"]["name"], base["metadata"]["name"]);
    let mut ds = base.clone();
    let pspec = &patch["spec"]["template"]["spec"];
    for key in pspec.as_object().unwrap().keys() {
        assert!(
            key == "containers" || key == "volumes",
            "the test renders only containers and volumes: {key}"
        );
    }
    let delete = |list: &mut Value, entries: &Value, key: &str| {
        for e in entries.as_array().into_iter().flatten() {
            assert_eq!(e["$patch"], "delete", "only deletions in {key} lists: {e}");
            let arr = list.as_array_mut().unwrap();
            let before = arr.len();
            arr.retain(|x| x[key] != e[key]);
            assert_eq!(arr.len(), before - 1, "the base has one {key} {}", e[key]);
        }
    };
    let spec = &mut ds["spec"]["template"]["spec"];
    delete(&mut spec["volumes"], &pspec["volumes"], "name");
    for pc in pspec["containers"].as_array().into_iter().flatten() {
        let c = spec["containers"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|c| c["name"] == pc["name"])
            .expect("the patched container is in the base");
        for (k, v) in pc.as_object().unwrap() {
            match k.as_str() {
                "name" => {}
                "volumeMounts" => delete(&mut c["volumeMounts"], v, "mountPath"),
                "args" => c["args"] = v.clone(),
                _ => panic!("the test renders only args and volumeMounts of a container: {k}"),
            }
        }
    }
    ds
}

#[test]
fn node_daemonset_runs_node_mode_with_the_host_mounts_and_no_rbac() {
    let dir = repo_root().join("deploy/kubernetes/daemonset");
    let kust = &yaml_docs(&dir.join("kustomization.yaml"))[0];
    let mut listed = kustomization_resources(&dir.join("kustomization.yaml"), kust);
    listed.sort();
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    present.sort();
    assert_eq!(
        listed, present,
        "the kustomization lists every manifest beside it"
    );

    let ds = &yaml_docs(&dir.join("daemonset.yaml"))[0];
    assert_node_daemonset(ds, true);
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();

    // The Service: headless, the metrics port, selecting the node pods.
    let svc = &yaml_docs(&dir.join("service.yaml"))[0];
    assert_eq!(svc["kind"], "Service");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the Service selects the node pods"
        );
    }
    let port = &svc["spec"]["ports"][0];
    assert_eq!(
        (
            port["name"].as_str(),
            port["port"].as_u64(),
            port["targetPort"].as_str()
        ),
        (Some("metrics"), Some(9435), Some("metrics"))
    );
    let ann = &svc["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], "9435");
    assert_eq!(ann["prometheus.io/path"], "/metrics");

    // The PodMonitor: the node pods' metrics port, with the operator's namespace, pod and
    // container target labels dropped (the series carry the monitored container's own).
    let pm = &yaml_docs(&dir.join("podmonitor.yaml"))[0];
    assert_eq!(pm["kind"], "PodMonitor");
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "the PodMonitor selects the node pods"
        );
    }
    let ep = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(
        (ep["port"].as_str(), ep["path"].as_str()),
        (Some("metrics"), Some("/metrics"))
    );
    assert_ne!(ep["honorLabels"], true);
    let dropped: BTreeSet<&str> = ep["relabelings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["action"] == "labeldrop")
        .flat_map(|r| r["regex"].as_str().unwrap().split('|'))
        .collect();
    for l in ["namespace", "pod", "container"] {
        assert!(
            dropped.contains(l),
            "the target label {l} is dropped: {dropped:?}"
        );
    }

    // Nodes without Docker: the same DaemonSet without the socket and --containers, valid too.
    let cd = repo_root().join("deploy/kubernetes/daemonset-containerd/kustomization.yaml");
    let overlay = &yaml_docs(&cd)[0];
    assert_eq!(strings(&overlay["resources"]), ["../daemonset"]);
    let patches = overlay["patches"].as_array().unwrap();
    assert_eq!(patches.len(), 1);
    let patch = &yaml_text(patches[0]["patch"].as_str().unwrap())[0];
    let rendered = containerd_daemonset(ds, patch);
    assert_node_daemonset(&rendered, false);
    let mut base_args = strings(&ds["spec"]["template"]["spec"]["containers"][0]["args"]);
    base_args.retain(|a| !a.starts_with("--containers"));
    assert_eq!(
        strings(&rendered["spec"]["template"]["spec"]["containers"][0]["args"]),
        base_args,
        "the overlay's args are the base's less --containers"
    );
    let tmp = std::env::temp_dir().join(format!(
        "ebpf-sidecar-daemonset-containerd-{}.json",
        std::process::id()
    ));
    std::fs::write(&tmp, rendered.to_string()).unwrap();
    for v in KUBERNETES_VERSIONS {
        let (ok, text) = kubernetes_validate(&tmp, v);
        assert!(
            ok && text.contains("passed for resource daemonset/"),
            "{text}"
        );
    }
    let _ = std::fs::remove_file(&tmp);

    // No RBAC anywhere: nothing deployed here talks to the API server.
    for f in kubernetes_yaml_files() {
        for doc in yaml_docs(&f) {
            let kind = doc["kind"].as_str().unwrap_or("");
            assert!(
                ![
                    "ServiceAccount",
                    "Role",
                    "ClusterRole",
                    "RoleBinding",
                    "ClusterRoleBinding"
                ]
                .contains(&kind),
                "{}: {kind}: nothing here needs RBAC",
                f.display()
            );
        }
    }
}

/// Every flag the DaemonSet passes is one `ebpf-sidecar node` accepts (the common flags are
/// global, so they come after the subcommand).
#[test]
fn node_daemonset_args_are_flags_of_node_mode() {
    let out = Command::new(sidecar_bin())
        .args(["node", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let ds = &yaml_docs(&repo_root().join("deploy/kubernetes/daemonset/daemonset.yaml"))[0];
    let args = strings(&ds["spec"]["template"]["spec"]["containers"][0]["args"]);
    for a in &args[1..] {
        let flag = a.split('=').next().unwrap();
        assert!(
            flag.starts_with("--") && help.contains(&format!("{flag} ")),
            "{a}: not a flag of `ebpf-sidecar node`:\n{help}"
        );
    }
}
