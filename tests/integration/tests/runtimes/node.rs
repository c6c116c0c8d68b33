//! Node.js: a stock Node.js 20 (HTTP, GC, event loop lag, paths), Node.js 18 built
//! `--with-dtrace` and a C stand-in with its USDT probes, and node in a container beside the
//! sidecar image.

use std::time::Duration;

use super::*;

const NODE_APP: &str = r#"
const http = require('http');
const srv = http.createServer((req, res) => {
  const u = new URL(req.url, 'http://x');
  if (u.pathname === '/gc') { for (let i = 0; i < +u.searchParams.get('n'); i++) global.gc(); }
  if (u.pathname === '/block') { const end = Date.now() + +u.searchParams.get('ms'); while (Date.now() < end) {} }
  req.on('data', () => {});
  req.on('end', () => { res.end('ok\n'); if (u.pathname === '/quit') srv.close(() => process.exit(0)); });
});
srv.listen(+process.argv[2], '127.0.0.1');
"#;

#[test]
fn node_http_gc_and_event_loop_lag() {
    require_root();
    require("/usr/bin/node", "install Node.js 20 (/usr/bin/node)");
    let app = scratch("app.js");
    std::fs::write(&app, NODE_APP).unwrap();
    let port = free_port();
    let sidecar = run_sidecar(
        "node",
        &[],
        &[
            "node",
            "--expose-gc",
            app.to_str().unwrap(),
            &port.to_string(),
        ],
    );
    wait_for(
        "node listening and its lag probes attached",
        Duration::from_secs(20),
        || {
            let m = sidecar.scrape();
            let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            (up && m.sum("ebpf_sidecar_runtime_info", &[("runtime", "node")]) >= 1.0).then_some(())
        },
    );
    // The rescan that attaches the per-process lag probes runs every second (later on a busy
    // machine): wait until a loop turn is measured.
    wait_for("the lag probes", Duration::from_secs(20), || {
        assert_eq!(http(port, "GET", "/a"), 200);
        let m = sidecar.scrape();
        (m.sum("ebpf_sidecar_nodejs_event_loop_lag_seconds_count", &[]) > 0.0).then_some(())
    });
    let before = sidecar.scrape();
    let (gets, posts, puts) = (7u64, 4u64, 2u64);
    for _ in 0..gets - 2 {
        assert_eq!(http(port, "GET", "/a"), 200);
    }
    for _ in 0..posts {
        assert_eq!(http(port, "POST", "/p"), 200);
    }
    for _ in 0..puts {
        assert_eq!(http(port, "PUT", "/u"), 200);
    }
    const G: u64 = 5;
    assert_eq!(http(port, "GET", &format!("/gc?n={G}")), 200);
    assert_eq!(http(port, "GET", "/block?ms=200"), 200);
    // The blocked loop turn ends at the loop's next epoll_pwait, just after the response: wait
    // for it rather than race it.
    let slow_turns = |m: &Metrics| {
        let d =
            |name: &str, labels: &[(&str, &str)]| m.sum(name, labels) - before.sum(name, labels);
        d("ebpf_sidecar_nodejs_event_loop_lag_seconds_count", &[])
            - d(
                "ebpf_sidecar_nodejs_event_loop_lag_seconds_bucket",
                &[("le", "0.134217728")],
            )
    };
    let m = wait_for("the blocked turn counted", Duration::from_secs(5), || {
        let m = sidecar.scrape();
        (slow_turns(&m) >= 1.0).then_some(m)
    });
    let delta =
        |name: &str, labels: &[(&str, &str)]| m.sum(name, labels) - before.sum(name, labels);
    for (method, n) in [("GET", gets), ("POST", posts), ("PUT", puts)] {
        assert_eq!(
            delta(
                "ebpf_sidecar_runtime_http_requests_total",
                &[("runtime", "node"), ("method", method)]
            ),
            n as f64,
            "{method} requests"
        );
        // Every request was answered on its connection: one duration each.
        assert_eq!(
            delta(
                "ebpf_sidecar_runtime_http_request_duration_seconds_count",
                &[("runtime", "node"), ("method", method)]
            ),
            n as f64,
            "{method} durations"
        );
    }
    // The /block request took >= 200 ms from its parsed head to its response.
    assert!(
        delta(
            "ebpf_sidecar_runtime_http_request_duration_seconds_sum",
            &[("runtime", "node"), ("method", "GET")]
        ) >= 0.2
    );
    assert!(
        delta(
            "ebpf_sidecar_runtime_gc_duration_seconds_count",
            &[("runtime", "node"), ("generation", "mark_compact")]
        ) >= G as f64,
        "forced GCs"
    );
    // One loop turn of >= 200 ms: above the 2^27 ns (0.134 s) bound.
    assert!(
        slow_turns(&m) >= 1.0,
        "the 200 ms block shows in the lag histogram"
    );
    assert!(m.sum("ebpf_sidecar_nodejs_event_loop_lag_seconds_sum", &[]) >= 0.2);
    let lint = promtool_check(&m.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
    assert_eq!(http(port, "POST", "/quit"), 200);
}

/// The Node <= 18 USDT path, on a C stand-in with Node 18's provider, probe names, argument
/// layouts and semaphores (workloads/node18_usdt.c): exact counts of served
/// and sent requests by method and path, their durations, GCs, and the same counts as
/// bpftrace's usdt: probes on the same run.
#[test]
fn node18_usdt_fixture_matches_bpftrace() {
    require_root();
    require(
        "/usr/include/x86_64-linux-gnu/sys/sdt.h",
        "apt-get install systemtap-sdt-dev",
    );
    let built = workload("node18_usdt");
    // Named `node`, as the sidecar recognises Node.js binaries by name.
    let dir = repo_root().join("target/workloads/node18");
    std::fs::create_dir_all(&dir).unwrap();
    let node = dir.join("node");
    std::fs::copy(&built, &node).unwrap();
    let node_s = node.display().to_string();
    let (gets, posts, gcs, client_gets) = (6u64, 4u64, 3u64, 5u64);
    let run = GatedRun::new(
        "node18",
        &["--http-paths"],
        &[
            &node_s,
            &gets.to_string(),
            &posts.to_string(),
            &gcs.to_string(),
            &client_gets.to_string(),
        ],
    );
    let bt = Bpftrace::start(
        "node18-usdt",
        &format!(
            "usdt:{node_s}:node:http__server__request {{ @[str(arg4)] = count(); }} \
         usdt:{node_s}:node:http__client__request {{ @client[str(arg4)] = count(); }} \
         usdt:{node_s}:node:gc__start {{ @gc = count(); }}"
        ),
    );
    let m = run.go_and_wait();
    let maps = bt.stop();
    // GET /api/v1/items/<i> (ids fold to :id, v1 stays), POST /items; each answered 2 ms later
    // on its fd.
    for (method, path, n) in [
        ("GET", "/api/v1/items/:id", gets),
        ("POST", "/items", posts),
    ] {
        let labels = [("runtime", "node"), ("method", method), ("path", path)];
        assert_eq!(
            m.sum("ebpf_sidecar_runtime_http_requests_total", &labels),
            n as f64,
            "{method}"
        );
        assert_eq!(
            bpf_value(&maps, &format!("@[{method}]")),
            n,
            "bpftrace {method}"
        );
        assert_eq!(
            m.sum(
                "ebpf_sidecar_runtime_http_request_duration_seconds_count",
                &labels
            ),
            n as f64,
            "{method} durations"
        );
        let sum = m.sum(
            "ebpf_sidecar_runtime_http_request_duration_seconds_sum",
            &labels,
        );
        // nanosleep(2 ms) never returns early; 50 ms each is a loaded machine's margin.
        assert!(
            sum >= n as f64 * 0.002 && sum < n as f64 * 0.05,
            "{method}: {sum} s for {n}"
        );
    }
    // Requests the process sent: GET /upstream/<i>?x=1, answered 1 ms later.
    let client = [
        ("runtime", "node"),
        ("method", "GET"),
        ("path", "/upstream/:id"),
    ];
    assert_eq!(
        m.sum("ebpf_sidecar_runtime_http_client_requests_total", &client),
        client_gets as f64
    );
    assert_eq!(bpf_value(&maps, "@client[GET]"), client_gets);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_runtime_http_client_request_duration_seconds_count",
            &client
        ),
        client_gets as f64
    );
    let sum = m.sum(
        "ebpf_sidecar_runtime_http_client_request_duration_seconds_sum",
        &client,
    );
    assert!(
        sum >= client_gets as f64 * 0.001 && sum < client_gets as f64 * 0.05,
        "client: {sum} s"
    );
    // Served requests stay out of the client series and the other way round.
    assert_eq!(
        m.sum(
            "ebpf_sidecar_runtime_http_requests_total",
            &[("runtime", "node")]
        ),
        (gets + posts) as f64
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_runtime_http_client_requests_total",
            &[("runtime", "node")]
        ),
        client_gets as f64
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_runtime_gc_duration_seconds_count",
            &[("runtime", "node"), ("generation", "mark_compact")]
        ),
        gcs as f64
    );
    assert_eq!(bpf_value(&maps, "@gc"), gcs);
    // Each pair sleeps 1 ms between start and done.
    assert!(
        m.sum(
            "ebpf_sidecar_runtime_gc_duration_seconds_sum",
            &[("runtime", "node")]
        ) >= gcs as f64 * 0.001
    );
}

/// A Node.js 18 script serving and sending known HTTP requests (node's `http` module, one
/// connection each, every response 5 ms after its request) and forcing GCs: argv GETS POSTS
/// DELETES GCS.
const NODE18_APP: &str = r#"
const http = require('http');
const [gets, posts, deletes, gcs] = process.argv.slice(2).map(Number);
const srv = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => setTimeout(() => res.end('ok\n'), 5));
});
const go = (method, path) => new Promise((done, fail) => {
  const q = http.request({ host: '127.0.0.1', port: srv.address().port, method, path, agent: false },
    (r) => { r.resume(); r.on('end', done); });
  q.on('error', fail);
  q.end(method === 'POST' ? 'hi' : undefined);
});
srv.listen(0, '127.0.0.1', async () => {
  for (let i = 0; i < gets; i++) await go('GET', `/api/v1/items/${i + 1}`);
  for (let i = 0; i < posts; i++) await go('POST', '/items');
  for (let i = 0; i < deletes; i++) await go('DELETE', `/items/${100 + i}?force=1`);
  for (let i = 0; i < gcs; i++) global.gc();
  srv.close();
});
"#;

/// GCs by generation equal bpftrace's `gc__start` counts by V8 type, `gcs` forced ones included.
fn assert_gcs_equal_bpftrace(m: &Metrics, maps: &[(String, u64)], gcs: u64) {
    // GCs by V8 type: global.gc() is a full mark-sweep-compact (type 4); whatever else V8 ran
    // (start-up scavenges) is counted alike by both.
    assert_eq!(bpf_value(maps, "@gc[4]"), gcs, "{maps:?}");
    for (ty, generation) in [
        (1, "scavenge"),
        (2, "minor_mark_compact"),
        (4, "mark_compact"),
    ] {
        let got = m.sum(
            "ebpf_sidecar_runtime_gc_duration_seconds_count",
            &[("runtime", "node"), ("generation", generation)],
        );
        let bt = bpf_value(maps, &format!("@gc[{ty}]"));
        eprintln!("gc {generation}: sidecar {got}, bpftrace {bt}");
        assert_eq!(got, bt as f64, "{generation} GCs");
    }
    let bt_gcs: u64 = maps
        .iter()
        .filter(|(k, _)| k.starts_with("@gc["))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        m.sum(
            "ebpf_sidecar_runtime_gc_duration_seconds_count",
            &[("runtime", "node")]
        ),
        bt_gcs as f64
    );
}

/// The node provider's probes attached, and no uprobe on a function symbol (llhttp, V8).
fn assert_only_the_node_provider_attached(m: &Metrics) {
    for probe in [
        "http__server__request",
        "http__server__response",
        "http__client__request",
        "http__client__response",
        "gc__start",
        "gc__done",
    ] {
        assert!(
            m.sum(
                "ebpf_sidecar_usdt_probes_attached",
                &[("provider", "node"), ("probe", probe)]
            ) >= 1.0,
            "node:{probe} attached\n{}",
            m.text
        );
    }
    assert_eq!(
        m.sum(
            "ebpf_sidecar_usdt_probes_attached",
            &[("provider", "uprobe")]
        ),
        0.0,
        "no llhttp/V8 uprobe on a node with USDT\n{}",
        m.text
    );
    assert!(
        !m.text
            .lines()
            .any(|l| !l.starts_with('#') && l.contains("llhttp")),
        "{}",
        m.text
    );
}

/// The real Node.js 18.20.4 built `--with-dtrace` (../shared/node18-dtrace, unpacked into
/// target/): requests served and sent by method and path, their durations and forced GCs, each
/// equal to bpftrace's `usdt:` count on the same run and to the script's own numbers; the node
/// provider's probes are what attached, no uprobe on llhttp or V8 symbols.
#[test]
fn node18_dtrace_http_and_gc_match_bpftrace() {
    require_root();
    let node = node18_dtrace();
    let node_s = node.display().to_string();
    let app = scratch("node18-app.js");
    std::fs::write(&app, NODE18_APP).unwrap();
    let (gets, posts, deletes, gcs) = (6u64, 4u64, 2u64, 3u64);
    let run = GatedRun::new(
        "node18-dtrace",
        &["--http-paths"],
        &[
            &node_s,
            "--expose-gc",
            app.to_str().unwrap(),
            &gets.to_string(),
            &posts.to_string(),
            &deletes.to_string(),
            &gcs.to_string(),
        ],
    );
    let bt = Bpftrace::start(
        "node18-dtrace",
        &format!(
            "usdt:{node_s}:node:http__server__request {{ @s[str(arg4)] = count(); }} \
         usdt:{node_s}:node:http__server__response {{ @s_done = count(); }} \
         usdt:{node_s}:node:http__client__request {{ @c[str(arg4)] = count(); }} \
         usdt:{node_s}:node:http__client__response {{ @c_done = count(); }} \
         usdt:{node_s}:node:gc__start {{ @gc[arg0] = count(); }}"
        ),
    );
    let m = run.go_and_wait();
    let maps = bt.stop();
    eprintln!("bpftrace: {maps:?}");
    let total = gets + posts + deletes;
    for (method, path, n) in [
        ("GET", "/api/v1/items/:id", gets),
        ("POST", "/items", posts),
        ("DELETE", "/items/:id", deletes),
    ] {
        for (kind, series, map) in [
            ("served", "ebpf_sidecar_runtime_http_requests_total", "@s"),
            (
                "sent",
                "ebpf_sidecar_runtime_http_client_requests_total",
                "@c",
            ),
        ] {
            let labels = [("runtime", "node"), ("method", method), ("path", path)];
            let got = m.sum(series, &labels);
            let bt = bpf_value(&maps, &format!("{map}[{method}]"));
            eprintln!("{kind} {method} {path}: sidecar {got}, bpftrace {bt}, script {n}");
            assert_eq!(got, n as f64, "{kind} {method} {path}\n{}", m.text);
            assert_eq!(bt, n, "bpftrace {kind} {method}");
        }
        // Answered 5 ms after the request on the same connection: one duration each, on both
        // sides; timers may fire up to a millisecond early against the wall clock.
        for (kind, series) in [
            (
                "served",
                "ebpf_sidecar_runtime_http_request_duration_seconds",
            ),
            (
                "sent",
                "ebpf_sidecar_runtime_http_client_request_duration_seconds",
            ),
        ] {
            let labels = [("runtime", "node"), ("method", method), ("path", path)];
            let count = m.sum(&format!("{series}_count"), &labels);
            let sum = m.sum(&format!("{series}_sum"), &labels);
            eprintln!("{kind} {method} durations: {count}, sum {sum} s");
            assert_eq!(count, n as f64, "{kind} {method} durations");
            assert!(
                sum >= n as f64 * 0.004 && sum < n as f64 * 0.5,
                "{kind} {method}: {sum} s for {n}"
            );
        }
    }
    // Every request and response probe the sidecar saw, bpftrace saw too.
    for (series, map) in [
        ("ebpf_sidecar_runtime_http_requests_total", "@s"),
        ("ebpf_sidecar_runtime_http_client_requests_total", "@c"),
    ] {
        let bt: u64 = maps
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{map}[")))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(m.sum(series, &[("runtime", "node")]), total as f64);
        assert_eq!(bt, total, "{map}");
    }
    assert_eq!(bpf_value(&maps, "@s_done"), total);
    assert_eq!(bpf_value(&maps, "@c_done"), total);
    assert_gcs_equal_bpftrace(&m, &maps, gcs);
    assert_only_the_node_provider_attached(&m);
}

/// The sidecar image next to a Node.js container (`--pid=container:`, as users run it): the node
/// binary is found in the app's mount namespace through /proc/<pid>/root, and requests made
/// inside the container are counted exactly by method.
#[test]
fn node_in_a_container_next_to_the_sidecar_image() {
    use integration::docker::{self, Container};
    require_root();
    require("/usr/bin/node", "install Node.js 20 (/usr/bin/node)");
    let image = docker::sidecar_image();
    let app_js = scratch("container-app.js");
    std::fs::write(&app_js, NODE_APP).unwrap();
    // The host's node, bind-mounted into a stock Debian image: no registry access needed.
    let app = Container::run(
        "ebpf-sidecar-runtimes-node",
        &[
            "-v",
            "/usr/bin/node:/usr/bin/node:ro",
            "-v",
            &format!("{}:/app.js:ro", app_js.display()),
            "debian:bookworm-slim",
            "node",
            "/app.js",
            "8080",
        ],
    );
    let port = free_port();
    let _sidecar = Container::run(
        "ebpf-sidecar-runtimes-sidecar",
        &[
            "--pid=container:ebpf-sidecar-runtimes-node",
            "--cap-add",
            "SYS_ADMIN",
            // Reading the app's /proc/<pid>/root and maps after the other capabilities are
            // dropped: ptrace read access.
            "--cap-add",
            "SYS_PTRACE",
            "-p",
            &format!("127.0.0.1:{port}:9435"),
            image,
            "--probes",
            "runtimes",
        ],
    );
    let scrape = || {
        http_get(port, "/metrics", None)
            .ok()
            .filter(|r| r.0 == 200)
            .map(|r| Metrics::parse(&r.2))
    };
    wait_for(
        "node discovered in the app container",
        Duration::from_secs(30),
        || {
            let m = scrape()?;
            (m.sum("ebpf_sidecar_runtime_info", &[("runtime", "node")]) >= 1.0).then_some(())
        },
    );
    let client = "const http = require('http'); \
        const go = (m) => new Promise((r) => { const q = http.request({ host: '127.0.0.1', \
        port: 8080, method: m, path: '/x' }, (s) => { s.resume(); s.on('end', r); }); q.end('hi'); }); \
        (async () => { for (const m of ['GET', 'GET', 'GET', 'POST', 'POST', 'DELETE']) await go(m); })();";
    docker::ok(&["exec", &app.0, "node", "-e", client]);
    let want = [("GET", 3.0), ("POST", 2.0), ("DELETE", 1.0)];
    let m = wait_for("the requests counted", Duration::from_secs(10), || {
        let m = scrape()?;
        want.iter()
            .all(|(meth, n)| {
                m.sum(
                    "ebpf_sidecar_runtime_http_requests_total",
                    &[("runtime", "node"), ("method", meth)],
                ) >= *n
            })
            .then_some(m)
    });
    std::thread::sleep(Duration::from_millis(500));
    let m2 = scrape().unwrap();
    for (meth, n) in want {
        assert_eq!(
            m2.sum(
                "ebpf_sidecar_runtime_http_requests_total",
                &[("runtime", "node"), ("method", meth)]
            ),
            n,
            "{meth}: the client's own response parsing is not a request\n{}",
            m.text
        );
    }
    let lint = promtool_check(&m2.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
}

/// --http-paths: requests and durations by normalised path, exact per path.
#[test]
fn node_http_paths_and_durations() {
    require_root();
    require("/usr/bin/node", "install Node.js 20 (/usr/bin/node)");
    let app = scratch("app-paths.js");
    std::fs::write(&app, NODE_APP).unwrap();
    let port = free_port();
    let sidecar = run_sidecar(
        "node-paths",
        &["--http-paths"],
        &["node", app.to_str().unwrap(), &port.to_string()],
    );
    wait_for("node attached", Duration::from_secs(20), || {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        let m = sidecar.scrape();
        (up && m.sum("ebpf_sidecar_runtime_info", &[("runtime", "node")]) >= 1.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let before = sidecar.scrape();
    for p in ["/users/1", "/users/22", "/users/333/", "/users/4?x=1"] {
        assert_eq!(http(port, "GET", p), 200);
    }
    for _ in 0..3 {
        assert_eq!(http(port, "POST", "/orders"), 200);
    }
    // Long enough to be read past the first 16 bytes of the request line; "v1" is no id.
    for p in [
        "/api/v1/customers/12345/orders?page=2",
        "/api/v1/customers/678/orders",
    ] {
        assert_eq!(http(port, "GET", p), 200);
    }
    assert_eq!(http(port, "GET", "/block?ms=50"), 200);
    let m = sidecar.scrape();
    let delta =
        |name: &str, labels: &[(&str, &str)]| m.sum(name, labels) - before.sum(name, labels);
    for (method, path, n) in [
        ("GET", "/users/:id", 3.0),
        ("GET", "/users/:id/", 1.0),
        ("POST", "/orders", 3.0),
        ("GET", "/api/v1/customers/:id/orders", 2.0),
        ("GET", "/block", 1.0),
    ] {
        let l = [("runtime", "node"), ("method", method), ("path", path)];
        assert_eq!(
            delta("ebpf_sidecar_runtime_http_requests_total", &l),
            n,
            "{method} {path}\n{}",
            m.text
        );
        assert_eq!(
            delta(
                "ebpf_sidecar_runtime_http_request_duration_seconds_count",
                &l
            ),
            n,
            "{method} {path} durations"
        );
    }
    // The handler busy-waits until Date.now() (whole milliseconds) passes start + 50: between
    // 49 and 50 ms of real time.
    let blocked = delta(
        "ebpf_sidecar_runtime_http_request_duration_seconds_sum",
        &[("method", "GET"), ("path", "/block")],
    );
    assert!(
        (0.049..1.0).contains(&blocked),
        "GET /block took {blocked} s"
    );
    let lint = promtool_check(&m.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
    assert_eq!(http(port, "POST", "/quit"), 200);
}
