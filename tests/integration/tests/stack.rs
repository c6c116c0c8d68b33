//! The stack: the node example app in Docker, the sidecar image beside it in
//! `--pid=container:` mode, a real Prometheus scraping the sidecar, and PromQL through
//! Prometheus's HTTP API; plus the compose file, the Grafana dashboard, the Kubernetes manifests
//! and the live page in headless Chromium.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::docker::{self, Container};
use integration::*;
use serde_json::Value;

// The known load the end-to-end test sends (and examples/node-app/README.md quotes).
const FAST_GET: u64 = 20;
const FAST_POST: u64 = 5;
const FILE: u64 = 10;
const UPSTREAM: u64 = 10;
const SPAWN: u64 = 5;
const ALLOC: u64 = 3;
const SLOW: u64 = 3;

fn root() -> PathBuf {
    repo_root()
}

/// YAML (one or more documents) to JSON through python3-yaml, which docker-compose already
/// needs; keeps a YAML crate out of the workspace.
fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("python3 not found: apt-get install python3-yaml");
    assert!(
        out.status.success(),
        "parsing {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every `ebpf_sidecar_*` name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("ebpf_sidecar_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// Names a running sidecar exposes: series names and `# TYPE` names (families with no series
/// yet still print their descriptor), histograms expanded to their series.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            out.insert(name.to_string());
            match kind {
                "histogram" => {
                    for s in ["_bucket", "_count", "_sum"] {
                        out.insert(format!("{name}{s}"));
                    }
                }
                "counter" if !name.ends_with("_total") => {
                    out.insert(format!("{name}_total"));
                }
                _ => {}
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            out.insert(line[..end].to_string());
        }
    }
    out
}

/// The compose file's sidecar service: its `cap_add` and its `command`, as written there.
fn compose_sidecar() -> (Vec<String>, Vec<String>) {
    let doc = &yaml_docs(&root().join("compose/compose.yaml"))[0];
    let s = &doc["services"]["sidecar"];
    (strings(&s["cap_add"]), strings(&s["command"]))
}

/// Every panel of the dashboard that has queries: its title and its PromQL, with Grafana's
/// interval variables replaced by `interval`.
fn dashboard_panels(interval: &str) -> Vec<(String, Vec<String>)> {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("compose/grafana/dashboards/ebpf-sidecar.json"))
            .unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        let Some(targets) = p["targets"].as_array() else {
            continue;
        };
        let exprs = targets
            .iter()
            .map(|t| {
                let e = t["expr"]
                    .as_str()
                    .expect("every target has an expr")
                    .replace("$__rate_interval", interval)
                    .replace("$__interval", interval)
                    .replace("$__range", interval);
                assert!(!e.contains('$'), "a Grafana variable left in {e}");
                e
            })
            .collect();
        out.push((p["title"].as_str().unwrap_or("?").to_string(), exprs));
    }
    out
}

#[test]
fn compose_file_validates_and_wires_the_sidecar_to_the_app() {
    let dir = root().join("compose");
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
        &std::fs::read_to_string(root().join("compose/grafana/dashboards/ebpf-sidecar.json"))
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

/// A Prometheus server run from the Debian package on a free loopback port, scraping `target`
/// every second; killed and its data removed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("ebpf-sidecar-stack-prom-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ebpf-sidecar\n    \
                 static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .expect("prometheus not found: apt-get install prometheus");
        let p = Self { child, port, dir };
        wait_for("prometheus ready", Duration::from_secs(30), || {
            http_get(p.port, "/-/ready", None)
                .ok()
                .filter(|r| r.0 == 200)
                .map(|_| ())
        });
        p
    }

    /// Instant query; the sum of the returned vector, None when it is empty.
    fn query(&self, expr: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", urlencode(expr));
        let (status, _, body) = http_get(self.port, &path, None).ok()?;
        assert_eq!(status, 200, "{expr}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let res = v["data"]["result"].as_array()?;
        if res.is_empty() {
            return None;
        }
        Some(
            res.iter()
                .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
                .sum(),
        )
    }

    /// Instant query; the value of each returned series (NaN and ±Inf as Prometheus writes
    /// them).
    fn series(&self, expr: &str) -> Vec<f64> {
        let path = format!("/api/v1/query?query={}", urlencode(expr));
        let (status, _, body) = http_get(self.port, &path, None).unwrap();
        assert_eq!(status, 200, "{expr}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{expr}: not a vector: {body}"))
            .iter()
            .map(|s| match s["value"][1].as_str().unwrap() {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                x => x.parse().unwrap(),
            })
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One request on its own connection (HTTP/1.0, so the app accepts exactly one connection per
/// request); returns the status.
fn request(port: u16, method: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // One write: `write!` on an unbuffered stream sends each formatting piece as its own
    // segment, and a request line split after "GE" is not one the kernel side can recognise.
    let req = format!("{method} {path} HTTP/1.0\r\nHost: app\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The node example app image, built offline on the local node base.
fn node_app_image() -> &'static str {
    let st = Command::new(root().join("scripts/node-image.sh"))
        .status()
        .unwrap();
    assert!(st.success(), "scripts/node-image.sh failed");
    docker::ok(&[
        "build",
        "-q",
        "--build-arg",
        "NODE_IMAGE=ebpf-sidecar-node-base:local",
        "-t",
        "ebpf-sidecar-node-app:test",
        root().join("examples/node-app").to_str().unwrap(),
    ]);
    "ebpf-sidecar-node-app:test"
}

/// The PromQL whose increases the known load must produce exactly, with the expected increase.
fn exact_expectations() -> Vec<(&'static str, String, u64)> {
    let http = FAST_GET + FAST_POST + FILE + UPSTREAM + SPAWN + ALLOC + SLOW;
    let mut exp = vec![
        (
            "execs of /bin/true (one per /spawn)",
            r#"sum(ebpf_sidecar_process_execs_total{comm="true"}) or vector(0)"#.into(),
            SPAWN,
        ),
        (
            "exits of true with code 0 (one per /spawn)",
            r#"sum(ebpf_sidecar_process_exits_total{comm="true",code="0",signal="0"}) or vector(0)"#.into(),
            SPAWN,
        ),
        (
            "forks (one per /spawn)",
            "sum(ebpf_sidecar_process_forks_total)".into(),
            SPAWN,
        ),
        (
            "openat ENOENT (one per /file)",
            r#"sum(ebpf_sidecar_syscall_errors_total{syscall="openat",errno="ENOENT"}) or vector(0)"#.into(),
            FILE,
        ),
        (
            "connect (one per /upstream)",
            r#"sum(ebpf_sidecar_syscalls_total{syscall="connect"}) or vector(0)"#.into(),
            UPSTREAM,
        ),
        (
            "accepted connections (one per request, plus the echo service's per /upstream)",
            r#"(sum(ebpf_sidecar_syscalls_total{syscall="accept4"}) or vector(0)) - (sum(ebpf_sidecar_syscall_errors_total{syscall="accept4"}) or vector(0))"#.into(),
            http + UPSTREAM,
        ),
    ];
    // Server-side HTTP requests by method, as sent (the net family's payload recognition).
    exp.push((
        "HTTP GET requests (network family)",
        r#"sum(ebpf_sidecar_http_requests_total{direction="server",method="GET"}) or vector(0)"#
            .into(),
        http - FAST_POST,
    ));
    exp.push((
        "HTTP POST requests (network family)",
        r#"sum(ebpf_sidecar_http_requests_total{direction="server",method="POST"}) or vector(0)"#
            .into(),
        FAST_POST,
    ));
    exp
}

#[test]
fn prometheus_scrapes_the_sidecar_watching_the_node_app() {
    require_root();
    let sidecar_image = docker::sidecar_image();
    let app_image = node_app_image();
    let app_port = free_port();
    let app = Container::run(
        "ebpf-sidecar-stack-app",
        &["-p", &format!("127.0.0.1:{app_port}:8080"), app_image],
    );
    wait_for("node app listening", Duration::from_secs(30), || {
        app.logs().contains("listening").then_some(())
    });
    let sc_port = free_port();
    let sidecar = Container::run(
        "ebpf-sidecar-stack-sidecar",
        &[
            "--pid=container:ebpf-sidecar-stack-app",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "NET_ADMIN",
            "-p",
            &format!("127.0.0.1:{sc_port}:9435"),
            sidecar_image,
            "--bpf-stats",
            "--pod-name",
            "stack-pod",
            "--pod-namespace",
            "stack-ns",
        ],
    );
    wait_for("sidecar serving", Duration::from_secs(30), || {
        http_get(sc_port, "/healthz", None)
            .ok()
            .filter(|r| r.0 == 200 && r.2.contains("target_up 1"))
            .map(|_| ())
    });
    let prom = Prometheus::start(&format!("127.0.0.1:{sc_port}"));
    let up = wait_for("Prometheus has target_up", Duration::from_secs(30), || {
        prom.query("ebpf_sidecar_target_up")
    });
    assert_eq!(up, 1.0, "ebpf_sidecar_target_up through Prometheus");
    assert_eq!(
        prom.query(r#"count(ebpf_sidecar_target_info{pod="stack-pod",namespace="stack-ns",mode="sidecar"})"#),
        Some(1.0),
        "pod labels on target_info:\n{}",
        sidecar.logs()
    );

    // Baseline: the idle app's values, once two queries a scrape apart agree.
    let exp = exact_expectations();
    let base: Vec<f64> = exp
        .iter()
        .map(|(what, e, _)| {
            let mut last = f64::NAN;
            wait_for(what, Duration::from_secs(20), || {
                std::thread::sleep(Duration::from_millis(1500));
                let v = prom.query(e).unwrap_or(0.0);
                let stable = v == last;
                last = v;
                stable.then_some(v)
            })
        })
        .collect();
    let processes_before = prom.query("sum(ebpf_sidecar_processes)");

    // The known load.
    let started = Instant::now();
    let sent = |method: &str, path: &str, n: u64| {
        for _ in 0..n {
            assert_eq!(request(app_port, method, path), 200, "{method} {path}");
        }
    };
    sent("GET", "/fast", FAST_GET);
    sent("POST", "/fast", FAST_POST);
    sent("GET", "/file", FILE);
    sent("GET", "/upstream", UPSTREAM);
    sent("GET", "/spawn", SPAWN);
    sent("GET", "/alloc?mb=32", ALLOC);
    sent("GET", "/slow?ms=100", SLOW);
    eprintln!("load sent in {:?}", started.elapsed());

    for ((what, e, want), b) in exp.iter().zip(&base) {
        let target = b + *want as f64;
        let deadline = Instant::now() + Duration::from_secs(20);
        let got = loop {
            let last = prom.query(e).unwrap_or(0.0);
            if last >= target || Instant::now() > deadline {
                break last;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(
            got >= target,
            "{what}: {} of +{want} after 20 s ({e}); base {b}",
            got - b
        );
        // One more scrape: nothing extra trickles in later.
        std::thread::sleep(Duration::from_millis(2500));
        let settled = prom.query(e).unwrap_or(0.0);
        eprintln!("{what}: +{} (want +{want})", settled - b);
        assert_eq!(got - b, *want as f64, "{what} ({e})");
        assert_eq!(settled - b, *want as f64, "{what} after settling ({e})");
    }
    // Node is one process (its echo service lives in it); the spawned children are gone.
    assert_eq!(prom.query("sum(ebpf_sidecar_processes)"), Some(1.0));
    assert_eq!(processes_before, Some(1.0));
    let rate = prom
        .query("sum(rate(ebpf_sidecar_syscalls_total[15s]))")
        .unwrap_or(0.0);
    assert!(rate > 0.0, "syscall rate through Prometheus: {rate}");
    assert!(
        prom.query(r#"sum(ebpf_sidecar_bpf_program_runs_total)"#)
            .unwrap_or(0.0)
            > 0.0,
        "probe cost series (--bpf-stats)"
    );
    // Every default family attached (the sidecar has SYS_ADMIN and NET_ADMIN here).
    assert_eq!(
        prom.query(r#"count(ebpf_sidecar_probe_up == 0) or vector(0)"#),
        Some(0.0),
        "{}",
        prom.log()
    );
    assert!(prom.query(r#"count(ebpf_sidecar_probe_up)"#).unwrap_or(0.0) >= 7.0);
    assert_eq!(
        prom.query(r#"sum(ebpf_sidecar_events_lost_total)"#),
        Some(0.0)
    );
}

/// Queries of the dashboard that have no series while nothing fails (a series per errno seen);
/// their panels have data from their other queries.
const EMPTY_WHILE_NOTHING_FAILS: &[&str] = &["ebpf_sidecar_tcp_connect_errors_total"];

/// The Grafana dashboard against the sidecar as compose runs it: the node example app, the
/// sidecar image beside it with exactly compose's capabilities and command, the example load on
/// every route for a while, and a real Prometheus: every panel's queries, with Grafana's
/// `$__rate_interval` as it is at compose's 5 s scrape interval (20 s), return series, and every
/// panel has a value to draw (not only NaN).
#[test]
fn every_dashboard_panel_has_data_with_the_compose_flags() {
    require_root();
    let (caps, command) = compose_sidecar();
    let sidecar_image = docker::sidecar_image();
    let app_image = node_app_image();
    let app_port = free_port();
    let app = Container::run(
        "ebpf-sidecar-panels-app",
        &["-p", &format!("127.0.0.1:{app_port}:8080"), app_image],
    );
    wait_for("node app listening", Duration::from_secs(30), || {
        app.logs().contains("listening").then_some(())
    });
    let sc_port = free_port();
    let mut args = vec!["--pid=container:ebpf-sidecar-panels-app".to_string()];
    for c in &caps {
        args.extend(["--cap-add".to_string(), c.clone()]);
    }
    args.extend(["-p".into(), format!("127.0.0.1:{sc_port}:9435")]);
    args.push(sidecar_image.into());
    args.extend(command.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sidecar = Container::run("ebpf-sidecar-panels-sidecar", &args);
    // Serving, and the runtimes family found node (its scanner looks every second).
    wait_for(
        "sidecar serving, node found",
        Duration::from_secs(30),
        || {
            http_get(sc_port, "/metrics", None)
                .ok()
                .filter(|r| {
                    r.0 == 200
                        && r.2.contains("ebpf_sidecar_target_up 1")
                        && r.2.contains(r#"ebpf_sidecar_runtime_info{runtime="node""#)
                })
                .map(|_| ())
        },
    );
    let prom = Prometheus::start(&format!("127.0.0.1:{sc_port}"));

    // The example load (examples/node-app/load.sh's routes), round after round.
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < Duration::from_secs(25) {
        for (method, path) in [
            ("GET", "/fast"),
            ("POST", "/fast"),
            ("GET", "/slow?ms=100"),
            ("GET", "/file"),
            ("GET", "/upstream"),
            ("GET", "/alloc?mb=32"),
            ("GET", "/spawn"),
        ] {
            assert_eq!(request(app_port, method, path), 200, "{method} {path}");
        }
        rounds += 1;
    }
    eprintln!("{rounds} rounds of 7 requests in {:?}", started.elapsed());
    // Two more scrapes, so the last requests are in.
    std::thread::sleep(Duration::from_secs(2));

    // Every family compose asks for is attached.
    assert_eq!(
        prom.query("count(ebpf_sidecar_probe_up == 0) or vector(0)"),
        Some(0.0),
        "a family of compose's --probes is down:\n{}",
        sidecar.logs()
    );
    let mut empty_panels = Vec::new();
    let mut empty_queries = Vec::new();
    let panels = dashboard_panels("20s");
    assert!(panels.len() >= 25, "dashboard lost its panels");
    for (title, exprs) in &panels {
        // Grafana draws nothing for NaN (a quantile of a histogram with no observations).
        let mut panel_values = 0;
        for e in exprs {
            let v = prom.series(e);
            let finite = v.iter().filter(|x| x.is_finite()).count();
            let nonzero = v.iter().filter(|x| x.is_finite() && **x != 0.0).count();
            eprintln!(
                "{title}: {} series, {finite} finite, {nonzero} nonzero: {e}",
                v.len()
            );
            panel_values += finite;
            if v.is_empty() && !EMPTY_WHILE_NOTHING_FAILS.iter().any(|m| e.contains(m)) {
                empty_queries.push(e.clone());
            }
        }
        if panel_values == 0 {
            empty_panels.push(title.clone());
        }
    }
    assert!(
        empty_panels.is_empty() && empty_queries.is_empty(),
        "panels without data: {empty_panels:?}; queries without series: {empty_queries:#?}\n{}",
        sidecar.logs()
    );
}

/// scripts/demo.sh as a newcomer runs it: its app script (the shell loop with its loopback HTTP
/// listener and client) in the demo's image, and the sidecar image beside it with the demo's
/// capabilities and flags: the live page's `net` family is up and counts the app's traffic.
#[test]
fn demo_app_traffic_shows_in_the_net_family() {
    require_root();
    let demo = std::fs::read_to_string(root().join("scripts/demo.sh")).unwrap();
    let script = demo
        .split_once("<<'SCRIPT'\n")
        .and_then(|(_, r)| r.split_once("\nSCRIPT\n"))
        .map(|(s, _)| s.to_string())
        .expect("demo.sh has its app script between <<'SCRIPT' and SCRIPT");
    // The sidecar's `docker run` (continuation lines included) up to its redirection.
    let run: Vec<&str> = demo
        .split_once("--name \"$SIDECAR\"")
        .and_then(|(_, r)| r.split_once(">/dev/null"))
        .map(|(r, _)| r.split_whitespace().collect())
        .expect("demo.sh runs the sidecar with --name \"$SIDECAR\"");
    let caps: Vec<&str> = run
        .windows(2)
        .filter(|w| w[0] == "--cap-add")
        .map(|w| w[1])
        .collect();
    assert!(caps.contains(&"NET_ADMIN"), "demo sidecar caps: {caps:?}");
    let flags: Vec<&str> = run
        .iter()
        .skip_while(|w| **w != "ebpf-sidecar")
        .skip(1)
        .copied()
        .collect();
    let sidecar_image = docker::sidecar_image();
    let _app = Container::run(
        "ebpf-sidecar-stack-demo-app",
        &["debian:bookworm-slim", "sh", "-c", &script],
    );
    let port = free_port();
    let mut args = vec!["--pid=container:ebpf-sidecar-stack-demo-app".to_string()];
    for c in &caps {
        args.extend(["--cap-add".to_string(), c.to_string()]);
    }
    args.extend(["-p".into(), format!("127.0.0.1:{port}:9435")]);
    args.push(sidecar_image.into());
    args.extend(flags.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sidecar = Container::run("ebpf-sidecar-stack-demo-sidecar", &args);
    let m = wait_for(
        "the demo app's requests in the net family",
        Duration::from_secs(30),
        || {
            let m = Metrics::parse(&http_get(port, "/metrics", None).ok()?.2);
            let server = [
                ("direction", "server"),
                ("method", "GET"),
                ("status", "200"),
            ];
            (m.sum("ebpf_sidecar_http_requests_total", &server) >= 3.0).then_some(m)
        },
    );
    let down: Vec<_> = m
        .series
        .iter()
        .filter(|(n, _, v)| n == "ebpf_sidecar_probe_up" && *v != 1.0)
        .collect();
    assert!(
        down.is_empty(),
        "families down: {down:?}\n{}",
        sidecar.logs()
    );
    assert_eq!(m.sum("ebpf_sidecar_probe_up", &[("probe", "net")]), 1.0);
    for d in ["ingress", "egress"] {
        let tcp = [("direction", d), ("protocol", "tcp")];
        assert!(
            m.sum("ebpf_sidecar_network_packets_total", &tcp) > 0.0,
            "{d}"
        );
        assert!(m.sum("ebpf_sidecar_network_bytes_total", &tcp) > 0.0, "{d}");
    }
    assert!(
        m.sum(
            "ebpf_sidecar_tcp_connections_total",
            &[("direction", "active")]
        ) >= 3.0
    );
}

/// The live page in real headless Chromium, driven over the DevTools protocol by
/// tests/integration/live-page.js: after a few polls every chart has drawn non-zero data, and the
/// endpoint list is on the page. The screenshot lands in target/live-page.png (docs/live-page.png
/// is the page of scripts/demo.sh, every default family up).
#[test]
fn live_page_renders_charts_with_data_in_headless_chromium() {
    require_root();
    assert!(
        Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some(),
        "chromium not found: apt-get install chromium (or set CHROMIUM)"
    );
    // A busy shell loop: syscalls, ENOENT errors, forks and execs every interval. Bounded (about
    // a minute), because `run` leaves CMD running when the sidecar itself is stopped.
    let port = free_port();
    let mut sc = Command::new(sidecar_bin())
        .args(["run", "--bpf-stats", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--",
            "sh",
            "-c",
            "i=0; while [ $i -lt 800 ]; do ls /nonexistent 2>/dev/null; cat /proc/self/stat >/dev/null; sleep 0.05; i=$((i+1)); done",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("sidecar serving", Duration::from_secs(30), || {
        http_get(port, "/healthz", None)
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ())
    });
    // The page and its assets come from the binary.
    let (status, ct, body) = http_get(port, "/", None).unwrap();
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no external assets"
    );
    for (asset, ctype) in [
        ("/assets/live.js", "text/javascript"),
        ("/assets/live.css", "text/css"),
    ] {
        let (s, c, _) = http_get(port, asset, None).unwrap();
        assert_eq!((s, c.starts_with(ctype)), (200, true), "{asset}: {c}");
    }
    let shot = root().join("target/live-page.png");
    let out = Command::new("node")
        .arg("--experimental-websocket")
        .arg(root().join("tests/integration/live-page.js"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .arg("11000")
        .arg(&shot)
        .output()
        .expect("node not found: apt-get install nodejs");
    // SAFETY: kill with a pid we own.
    unsafe { libc::kill(sc.id() as i32, libc::SIGTERM) };
    let _ = sc.wait();
    assert!(
        out.status.success(),
        "live-page.js: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{r}");
    assert!(r["scrapes"].as_u64().unwrap() >= 4, "{r}");
    // The six overview charts always have data; one chart per other histogram the sidecar
    // exposes follows them (empty when that family saw nothing, e.g. TCP here).
    let charts: Vec<&Value> = r["charts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"].as_str().unwrap().starts_with("c-"))
        .collect();
    assert_eq!(charts.len(), 6, "{r}");
    for c in charts {
        assert!(
            c["points"].as_u64().unwrap() > 0,
            "chart {} drew no data: {r}",
            c["id"]
        );
    }
    let endpoints: Vec<&str> = r["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for e in ["/metrics", "/healthz"] {
        assert!(endpoints.contains(&e), "endpoint list lacks {e}: {r}");
    }
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot"
    );
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kubernetes_manifests_have_the_required_fields_and_the_compose_flags() {
    let dir = root().join("deploy/kubernetes");
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
    for m in sidecar["volumeMounts"].as_array().into_iter().flatten() {
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
