//! The stack: the node example app in Docker, the sidecar image beside it in
//! `--pid=container:` mode, a real Prometheus scraping the sidecar, and PromQL through
//! Prometheus's HTTP API; plus the compose files (sidecar and node mode), the Grafana dashboard,
//! the Kubernetes manifests (files.rs) and the stacks running with the dashboard's and live
//! page's views of them (dashboards.rs).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::docker::{self, Container};
use integration::*;
use serde_json::Value;

mod dashboards;
mod files;

// The known load the end-to-end test sends (and examples/node-app/README.md quotes).
const FAST_GET: u64 = 20;
const FAST_POST: u64 = 5;
const FILE: u64 = 10;
const UPSTREAM: u64 = 10;
const SPAWN: u64 = 5;
const ALLOC: u64 = 3;
const SLOW: u64 = 3;

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
    let doc = &yaml_docs(&repo_root().join("compose/compose.yaml"))[0];
    let s = &doc["services"]["sidecar"];
    (strings(&s["cap_add"]), strings(&s["command"]))
}

/// compose/node.yaml, as written.
fn node_compose() -> Value {
    yaml_docs(&repo_root().join("compose/node.yaml")).remove(0)
}

/// The `label=KEY=VALUE` selectors of a node command's `--containers` (either spelling).
fn label_selectors(command: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut it = command.iter();
    while let Some(a) = it.next() {
        let sel = match a.strip_prefix("--containers=") {
            Some(s) => s.to_string(),
            None if a == "--containers" => it.next().cloned().unwrap_or_default(),
            None => continue,
        };
        let (k, v) = sel
            .strip_prefix("label=")
            .and_then(|kv| kv.split_once('='))
            .unwrap_or_else(|| panic!("not a label=KEY=VALUE selector: {sel}"));
        out.push((k.to_string(), v.to_string()));
    }
    out
}

/// The services of node.yaml a label selector of its node picks (the monitored apps), by name.
fn node_compose_apps(doc: &Value) -> Vec<String> {
    let sels = label_selectors(&strings(&doc["services"]["node"]["command"]));
    doc["services"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, s)| sels.iter().any(|(k, v)| s["labels"][k] == v.as_str()))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Every panel of the dashboard that has queries: its title and its PromQL, with Grafana's
/// interval variables replaced by `interval` and the `container` variable by `container` (a
/// regex: `.*` is the dashboard's All).
fn dashboard_panels(interval: &str, container: &str) -> Vec<(String, Vec<String>)> {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("compose/grafana/dashboards/ebpf-sidecar.json"))
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
                    .replace("$__range", interval)
                    .replace("$container", container);
                assert!(!e.contains('$'), "a Grafana variable left in {e}");
                e
            })
            .collect();
        out.push((p["title"].as_str().unwrap_or("?").to_string(), exprs));
    }
    out
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

    /// The values of `label` on the series matching `selector`, as Grafana's
    /// `label_values(selector, label)` asks them.
    fn label_values(&self, selector: &str, label: &str) -> BTreeSet<String> {
        let path = format!(
            "/api/v1/label/{label}/values?match%5B%5D={}",
            urlencode(selector)
        );
        let (status, _, body) = http_get(self.port, &path, None).unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{path}: {body}"))
            .iter()
            .filter_map(|s| s.as_str().map(str::to_string))
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
    let st = Command::new(repo_root().join("scripts/node-image.sh"))
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
        repo_root().join("examples/node-app").to_str().unwrap(),
    ]);
    "ebpf-sidecar-node-app:test"
}

/// The second example app (examples/perl-app), built on the local debian:bookworm-slim
/// (scripts/images.sh, which docker::sidecar_image runs).
fn perl_app_image() -> &'static str {
    docker::sidecar_image();
    docker::ok(&[
        "build",
        "-q",
        "-t",
        "ebpf-sidecar-perl-app:test",
        repo_root().join("examples/perl-app").to_str().unwrap(),
    ]);
    "ebpf-sidecar-perl-app:test"
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

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
