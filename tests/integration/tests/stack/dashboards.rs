//! The compose stacks running: every dashboard panel has data (beside one sidecar, and per
//! container under node mode), the demo app's traffic shows in the net family, the live page
//! draws its charts in headless Chromium.

use super::*;

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
    let panels = dashboard_panels("20s", ".*");
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

/// A docker network removed on drop (after the containers on it, declared after it).
struct Network(String);

impl Network {
    fn create(name: &str) -> Self {
        let _ = docker::run(&["network", "rm", name]);
        docker::ok(&["network", "create", name]);
        Network(name.to_string())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker::run(&["network", "rm", &self.0]);
    }
}

/// Panels a node-mode container of perl-app (no runtime the runtimes family knows, no block I/O
/// of its own, no TCP client) must have data in; node-app must have every panel and every
/// query's series, as beside a sidecar.
const PERL_APP_PANELS: &[&str] = &[
    "Target up",
    "Probes up",
    "Syscalls/s",
    "Live processes",
    "Syscalls/s (top 10)",
    "Syscall errors/s by errno",
    "Syscall latency (p50, p99)",
    "Execs/s by comm",
    "Exits/s by code and signal",
    "Forks, threads, OOM kills",
    "Packets/s by protocol",
    "Bytes/s by direction",
    "TCP connections/s",
    "HTTP requests/s by method and status",
    "File opens/s by result",
    "BPF CPU time by program (cores)",
];

/// compose/node.yaml as compose runs it, service by service: the two apps with their labels, the
/// load, and the node (its pid, capabilities, mounts and command) on one network; a real
/// Prometheus scraping the node. The dashboard's `container` variable lists exactly the two apps
/// (not the busy load container), and with each picked, the dashboard's panels have that app's
/// data: every panel for node-app, the families perl-app exercises for it.
#[test]
fn node_compose_monitors_the_two_apps_and_the_dashboard_shows_each() {
    require_root();
    let doc = node_compose();
    let svc = &doc["services"];
    let apps = node_compose_apps(&doc);
    let image_of = |service: &str| -> &'static str {
        match svc[service]["build"]["context"].as_str() {
            Some("../examples/node-app") => node_app_image(),
            Some("../examples/perl-app") => perl_app_image(),
            Some("..") => docker::sidecar_image(),
            other => panic!("service {service}: no test image for build context {other:?}"),
        }
    };
    let net = Network::create("ebpf-sidecar-nodecompose");
    let name = |service: &str| format!("ebpf-sidecar-nodecompose-{service}");
    let mut containers = Vec::new();
    for service in apps.iter().map(String::as_str).chain(["load"]) {
        let mut args = vec![
            "--network".to_string(),
            net.0.clone(),
            "--network-alias".into(),
            service.into(),
        ];
        for (k, v) in svc[service]["labels"].as_object().into_iter().flatten() {
            args.extend(["--label".into(), format!("{k}={}", v.as_str().unwrap())]);
        }
        args.push(image_of(service).into());
        args.extend(strings(&svc[service]["command"]));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        containers.push(Container::run(&name(service), &args));
    }
    let node = &svc["node"];
    assert_eq!(node["pid"], "host");
    let port = free_port();
    let mut args = vec!["--pid=host".to_string()];
    for c in strings(&node["cap_add"]) {
        args.extend(["--cap-add".into(), c]);
    }
    for v in strings(&node["volumes"]) {
        args.extend(["-v".into(), v]);
    }
    args.extend(["-p".into(), format!("127.0.0.1:{port}:9435")]);
    args.push(image_of("node").into());
    args.extend(strings(&node["command"]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Container::run(&name("node"), &args);
    let prom = Prometheus::start(&format!("127.0.0.1:{port}"));

    // The variable's values, as Grafana asks Prometheus for them: the two apps, nothing else.
    let want: BTreeSet<String> = apps.iter().map(|a| name(a)).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen = prom.label_values("ebpf_sidecar_target_info", "container");
        if seen == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the container variable lists {seen:?}, not {want:?}\nnode: {}\nprometheus: {}",
            node.logs(),
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(prom.query("count(ebpf_sidecar_target_info)"), Some(2.0));
    assert_eq!(prom.query("max(ebpf_sidecar_node_containers)"), Some(2.0));
    // Rounds of load (one a second) over more than the panels' 20 s rate interval.
    std::thread::sleep(Duration::from_secs(25));
    let load_log = containers.last().unwrap().logs();
    assert_eq!(
        prom.query("count(ebpf_sidecar_probe_up == 0) or vector(0)"),
        Some(0.0),
        "a family of the node's --probes is down:\n{}",
        node.logs()
    );
    // All (`.*`): "Probes up" counts each family once, not once per container.
    let families = strings(&svc["node"]["command"])
        .iter()
        .find_map(|a| a.strip_prefix("--probes=").map(|l| l.split(',').count()))
        .expect("the node's --probes=");
    let all = dashboard_panels("20s", ".*");
    let (_, probes_up) = all
        .iter()
        .find(|(t, _)| t == "Probes up")
        .expect("a Probes up panel");
    assert_eq!(
        prom.series(&probes_up[0]),
        [families as f64],
        "{}",
        probes_up[0]
    );
    let mut failures = Vec::new();
    for app in &apps {
        let container = name(app);
        let panels = dashboard_panels("20s", &container);
        for (title, exprs) in &panels {
            let required = app == "node-app" || PERL_APP_PANELS.contains(&title.as_str());
            let mut panel_values = 0;
            for e in exprs {
                let v = prom.series(e);
                let finite = v.iter().filter(|x| x.is_finite()).count();
                eprintln!(
                    "{container}: {title}: {} series, {finite} finite: {e}",
                    v.len()
                );
                panel_values += finite;
                // node-app: every query, as beside a sidecar; perl-app: its panels' data.
                if app == "node-app"
                    && v.is_empty()
                    && !EMPTY_WHILE_NOTHING_FAILS.iter().any(|m| e.contains(m))
                {
                    failures.push(format!("{container}: no series: {e}"));
                }
            }
            if required && panel_values == 0 {
                failures.push(format!("{container}: panel {title:?} has no data"));
            }
        }
        // Only this app's series: its HTTP requests are its own.
        let own = prom
            .query(&format!(
                r#"sum(ebpf_sidecar_http_requests_total{{container="{container}",direction="server"}})"#
            ))
            .unwrap_or(0.0);
        if own == 0.0 {
            failures.push(format!("{container}: no server HTTP requests"));
        }
    }
    assert!(
        failures.is_empty(),
        "{failures:#?}\nload: {load_log}\nnode: {}",
        node.logs()
    );
    drop(node);
    drop(containers);
    drop(net);
}

/// scripts/demo.sh as a newcomer runs it: its app script (the shell loop with its loopback HTTP
/// listener and client) in the demo's image, and the sidecar image beside it with the demo's
/// capabilities and flags: the live page's `net` family is up and counts the app's traffic.
#[test]
fn demo_app_traffic_shows_in_the_net_family() {
    require_root();
    let demo = std::fs::read_to_string(repo_root().join("scripts/demo.sh")).unwrap();
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
    let shot = repo_root().join("target/live-page.png");
    let out = Command::new("node")
        .arg("--experimental-websocket")
        .arg(repo_root().join("tests/integration/live-page.js"))
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
    // Relative links: the same page is served at / and, in node mode, at /containers/NAME/.
    for e in ["metrics", "healthz"] {
        assert!(endpoints.contains(&e), "endpoint list lacks {e}: {r}");
    }
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot"
    );
}
