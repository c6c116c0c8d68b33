//! Network family: exact packet, byte, connection and error counts from a workload doing known
//! network things on loopback (workloads/net_traffic.c), in `run` mode and in
//! Docker containers; nothing from unmonitored processes; a bounded peer label.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::docker::{self, Container};
use integration::*;

/// IPv4 header without options, UDP header, TCP header without options (a RST carries none).
const IPV4_HDR: u64 = 20;
const UDP_HDR: u64 = 8;
const TCP_HDR: u64 = 20;

/// `ebpf-sidecar run --probes net [extra] -- net_traffic args…`: the final metrics and stdout.
fn run_net(tag: &str, extra: &[&str], args: &[&str]) -> (Metrics, String) {
    run_workload(&format!("net-{tag}"), "net", extra, "net_traffic", args)
}

fn fact(stdout: &str, key: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {stdout:?}"))
        .trim()
        .parse()
        .unwrap()
}

fn pkts(m: &Metrics, metric: &str, dir: &str, proto: &str) -> f64 {
    m.sum(
        metric,
        &[("direction", dir), ("family", "ipv4"), ("protocol", proto)],
    )
}

/// C connections carrying N bytes each way, client and server both in the target.
fn assert_tcp(m: &Metrics, c: u64, n: u64, port: u64, times: u64) {
    let (c, n, t) = (c as f64, n as f64, times as f64);
    let peer = format!("loopback:{port}");
    assert_eq!(
        m.sum(
            "ebpf_sidecar_tcp_connections_total",
            &[("direction", "active")]
        ),
        c * t
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_tcp_connections_total",
            &[("direction", "passive")]
        ),
        c * t
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_tcp_accepts_total",
            &[("port", &port.to_string())]
        ),
        c * t
    );
    // The client's view of the server: exactly C*N bytes each way.
    assert_eq!(
        m.sum("ebpf_sidecar_tcp_sent_bytes_total", &[("peer", &peer)]),
        c * n * t,
        "client sent"
    );
    assert_eq!(
        m.sum("ebpf_sidecar_tcp_received_bytes_total", &[("peer", &peer)]),
        c * n * t,
        "client received"
    );
    // Both ends are in the target: the server's sockets add the same again.
    assert_eq!(
        m.sum("ebpf_sidecar_tcp_sent_bytes_total", &[]),
        2.0 * c * n * t
    );
    assert_eq!(
        m.sum("ebpf_sidecar_tcp_received_bytes_total", &[]),
        2.0 * c * n * t
    );
    assert_eq!(
        m.sum("ebpf_sidecar_tcp_connect_duration_seconds_count", &[]),
        c * t
    );
    assert_eq!(
        m.sum("ebpf_sidecar_tcp_connection_duration_seconds_count", &[]),
        2.0 * c * t
    );
    assert_eq!(m.sum("ebpf_sidecar_tcp_resets_total", &[]), 0.0);
    // On loopback every packet one end sends, the other end (also the target) receives: egress
    // and ingress match exactly. Their number depends on segmentation (GSO) and delayed ACKs, so
    // only a floor is exact: 2*C*N payload bytes plus at least one 40-byte header per packet.
    let (eg, ing) = (
        pkts(m, "ebpf_sidecar_network_packets_total", "egress", "tcp"),
        pkts(m, "ebpf_sidecar_network_packets_total", "ingress", "tcp"),
    );
    let (egb, ingb) = (
        pkts(m, "ebpf_sidecar_network_bytes_total", "egress", "tcp"),
        pkts(m, "ebpf_sidecar_network_bytes_total", "ingress", "tcp"),
    );
    assert_eq!(eg, ing, "tcp packets egress == ingress on loopback");
    assert_eq!(egb, ingb, "tcp bytes egress == ingress on loopback");
    // Handshake (3) and close (at least 3) per connection.
    assert!(eg >= 6.0 * c * t, "tcp packets {eg}");
    assert!(
        egb >= 2.0 * c * n * t + eg * (IPV4_HDR + TCP_HDR) as f64,
        "tcp bytes {egb}"
    );
}

#[test]
fn run_mode_tcp_connections_and_bytes_are_exact() {
    require_root();
    let (c, n) = (5u64, 100_000u64);
    let (m, out) = run_net("tcp", &[], &["tcp", &c.to_string(), &n.to_string()]);
    assert_tcp(&m, c, n, fact(&out, "port"), 1);
    assert_eq!(m.sum("ebpf_sidecar_probe_up", &[("probe", "net")]), 1.0);
    assert_eq!(m.sum("ebpf_sidecar_events_lost_total", &[]), 0.0);
    assert_eq!(m.sum("ebpf_sidecar_tcp_connect_errors_total", &[]), 0.0);
}

#[test]
fn connect_refused_is_counted_once_per_attempt() {
    require_root();
    let k = 7u64;
    let closed = free_port().to_string();
    let (m, _) = run_net("refused", &[], &["refused", &k.to_string(), &closed]);
    let k = k as f64;
    assert_eq!(
        m.sum(
            "ebpf_sidecar_tcp_connect_errors_total",
            &[("errno", "ECONNREFUSED")]
        ),
        k
    );
    assert_eq!(m.sum("ebpf_sidecar_tcp_connect_errors_total", &[]), k);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_tcp_resets_total",
            &[("direction", "received")]
        ),
        k
    );
    assert_eq!(m.sum("ebpf_sidecar_tcp_connections_total", &[]), 0.0);
    // One SYN out and one RST in per attempt; a RST has no TCP options.
    assert_eq!(
        pkts(&m, "ebpf_sidecar_network_packets_total", "egress", "tcp"),
        k
    );
    assert_eq!(
        pkts(&m, "ebpf_sidecar_network_packets_total", "ingress", "tcp"),
        k
    );
    assert_eq!(
        pkts(&m, "ebpf_sidecar_network_bytes_total", "ingress", "tcp"),
        k * (IPV4_HDR + TCP_HDR) as f64
    );
}

#[test]
fn bind_to_a_used_port_counts_eaddrinuse() {
    require_root();
    let k = 5u64;
    let (m, _) = run_net("inuse", &[], &["inuse", &k.to_string()]);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_socket_bind_errors_total",
            &[("errno", "EADDRINUSE")]
        ),
        k as f64
    );
    assert_eq!(
        m.sum("ebpf_sidecar_socket_bind_errors_total", &[]),
        k as f64
    );
    assert_eq!(m.sum("ebpf_sidecar_tcp_connect_errors_total", &[]), 0.0);
}

#[test]
fn udp_datagrams_match_packet_and_byte_counters() {
    require_root();
    let (d, s) = (10u64, 100u64);
    let (m, _) = run_net("udp", &[], &["udp", &d.to_string(), &s.to_string()]);
    // Sender and receiver are both in the target: each datagram is seen once leaving (egress)
    // and once arriving (ingress), at IP length = S + 8 (UDP) + 20 (IPv4).
    let (d, ip_len) = (d as f64, (s + UDP_HDR + IPV4_HDR) as f64);
    for dir in ["egress", "ingress"] {
        assert_eq!(
            pkts(&m, "ebpf_sidecar_network_packets_total", dir, "udp"),
            d,
            "{dir}"
        );
        assert_eq!(
            pkts(&m, "ebpf_sidecar_network_bytes_total", dir, "udp"),
            d * ip_len,
            "{dir}"
        );
    }
    assert_eq!(m.sum("ebpf_sidecar_network_packets_total", &[]), 2.0 * d);
    assert_eq!(m.sum("ebpf_sidecar_udp_drops_total", &[]), 0.0);
}

#[test]
fn udp_receive_queue_drops_are_exact() {
    require_root();
    let d = 2000u64;
    let (m, out) = run_net("udpdrop", &[], &["udpdrop", &d.to_string(), "1000"]);
    let received = fact(&out, "received");
    assert!(received < d, "the tiny receive buffer must overflow");
    assert_eq!(
        m.sum("ebpf_sidecar_udp_drops_total", &[]),
        (d - received) as f64
    );
    assert_eq!(
        pkts(&m, "ebpf_sidecar_network_packets_total", "ingress", "udp"),
        d as f64,
        "dropped datagrams still passed the cgroup ingress hook"
    );
}

#[test]
fn peer_label_is_bounded_and_bytes_still_add_up() {
    require_root();
    // 5000 connections: the server sees 5000 distinct peers (client ports), more than the
    // kernel's peer table holds (1024), far more than --top-n.
    let (c, n, top) = (5000u64, 10u64, 5usize);
    let t0 = Instant::now();
    let (m, out) = run_net(
        "peers",
        &["--top-n", &top.to_string()],
        &["tcp", &c.to_string(), &n.to_string()],
    );
    let port = fact(&out, "port");
    for metric in [
        "ebpf_sidecar_tcp_sent_bytes_total",
        "ebpf_sidecar_tcp_received_bytes_total",
    ] {
        let series: Vec<_> = m.matching(metric, &[]).collect();
        assert!(series.len() <= top + 1, "{metric}: {} series", series.len());
        assert!(series.iter().any(|(l, _)| l["peer"] == "other"));
        assert_eq!(m.sum(metric, &[]), (2 * c * n) as f64, "{metric} total");
        // The server side (the biggest peer) keeps its own series.
        assert_eq!(
            m.sum(metric, &[("peer", &format!("loopback:{port}"))]),
            (c * n) as f64
        );
    }
    assert_eq!(
        m.sum("ebpf_sidecar_tcp_connections_total", &[]),
        (2 * c) as f64
    );
    assert_eq!(m.sum("ebpf_sidecar_events_lost_total", &[]), 0.0);
    eprintln!("5000 connections in {:?}", t0.elapsed());
}

#[test]
fn unmonitored_process_doing_the_same_adds_nothing() {
    require_root();
    let w = workload("net_traffic");
    let (c, n) = (3u64, 50_000u64);
    let (cs, ns) = (c.to_string(), n.to_string());
    // The target waits, runs once, waits: the noise below overlaps all of it.
    let script = format!("sleep 1; {} tcp {cs} {ns} && sleep 1", w.display());
    let out = std::env::temp_dir().join("ebpf-sidecar-net-noise.prom");
    let port = free_port().to_string();
    let mut target = Command::new(sidecar_bin())
        .args(["run", "--probes", "net", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--metrics-out")
        .arg(&out)
        .args(["--", "/bin/sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let closed = free_port().to_string();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut rounds = 0;
    while Instant::now() < deadline {
        for a in [
            vec!["tcp", &cs, &ns],
            vec!["refused", "2", &closed],
            vec!["inuse", "2"],
            vec!["udp", "5", "100"],
        ] {
            let st = Command::new(&w)
                .args(&a)
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success());
        }
        rounds += 1;
    }
    assert!(target.wait().unwrap().success());
    assert!(rounds > 2, "noise ran {rounds} rounds");
    let mut stdout = String::new();
    std::io::Read::read_to_string(target.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    let m = Metrics::parse(&std::fs::read_to_string(&out).unwrap());
    assert_tcp(&m, c, n, fact(&stdout, "port"), 1);
    assert_eq!(m.sum("ebpf_sidecar_tcp_connect_errors_total", &[]), 0.0);
    assert_eq!(m.sum("ebpf_sidecar_socket_bind_errors_total", &[]), 0.0);
    assert_eq!(
        m.sum("ebpf_sidecar_network_packets_total", &[("protocol", "udp")]),
        0.0
    );
}

// ---- Docker ----

const C_DOCKER: u64 = 4;
const N_DOCKER: u64 = 20_000;

/// net_traffic as a container's PID 1, running `args` on each SIGUSR1.
fn net_container(name: &str, args: &[&str]) -> Container {
    let w = workload("net_traffic");
    let mount = format!("{}:/net_traffic:ro", w.display());
    let mut argv: Vec<&str> = vec![
        "-v",
        &mount,
        "debian:bookworm-slim",
        "/net_traffic",
        "serve",
    ];
    argv.extend_from_slice(args);
    let c = Container::run(name, &argv);
    wait_for("workload ready", Duration::from_secs(20), || {
        c.logs().contains("ready").then_some(())
    });
    c
}

/// Trigger one run and wait for its "done 0"; returns the run's stdout facts.
fn trigger(c: &Container, nth: usize) -> String {
    docker::ok(&["kill", "-s", "USR1", &c.0]);
    wait_for("workload done", Duration::from_secs(30), || {
        let logs = c.logs();
        assert!(!logs.contains("done 1"), "workload failed: {logs}");
        (logs.matches("done 0").count() >= nth).then_some(logs)
    })
}

fn last_port(logs: &str) -> u64 {
    logs.lines()
        .filter_map(|l| l.strip_prefix("port="))
        .next_back()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn sidecar_image_counts_only_its_containers_traffic() {
    require_root();
    let image = docker::sidecar_image();
    let (cs, ns) = (C_DOCKER.to_string(), N_DOCKER.to_string());
    let app = net_container("ebpf-sidecar-net-app", &["tcp", &cs, &ns]);
    let other = net_container("ebpf-sidecar-net-other", &["tcp", &cs, &ns]);
    let port = free_port().to_string();
    let sidecar = Container::run(
        "ebpf-sidecar-net-sidecar",
        &[
            "--pid=container:ebpf-sidecar-net-app",
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "NET_ADMIN",
            "-p",
            &format!("127.0.0.1:{port}:9435"),
            image,
            "--probes",
            "net",
        ],
    );
    let port: u16 = port.parse().unwrap();
    wait_for("sidecar serving", Duration::from_secs(30), || {
        http_get(port, "/healthz", None)
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ())
    });
    let logs = trigger(&app, 1);
    trigger(&other, 1);
    let scrape = || Metrics::parse(&http_get(port, "/metrics", None).unwrap().2);
    let m = scrape();
    let app_port = last_port(&logs);
    assert_tcp(&m, C_DOCKER, N_DOCKER, app_port, 1);
    assert_eq!(m.sum("ebpf_sidecar_probe_up", &[("probe", "net")]), 1.0);

    // The unmonitored container runs again: nothing moves.
    trigger(&other, 2);
    let m2 = scrape();
    assert_tcp(&m2, C_DOCKER, N_DOCKER, app_port, 1);
    assert_eq!(
        m.sum("ebpf_sidecar_network_bytes_total", &[]),
        m2.sum("ebpf_sidecar_network_bytes_total", &[])
    );

    // After attaching, only CAP_NET_ADMIN (bit 12) is kept, to re-attach on a restart.
    let pid = docker::ok(&["inspect", "-f", "{{.State.Pid}}", &sidecar.0]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let capeff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert_eq!(
        capeff.split_whitespace().nth(1),
        Some("0000000000001000"),
        "{capeff}"
    );
    let lint = promtool_check(&m2.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
}

#[test]
fn packet_counters_follow_a_restarted_container() {
    require_root();
    docker::sidecar_image();
    let (d, s) = (6u64, 200u64);
    let app = net_container(
        "ebpf-sidecar-net-restart",
        &["udp", &d.to_string(), &s.to_string()],
    );
    let sc = Sidecar::start(&[
        "--probes",
        "net",
        "--target-container",
        "ebpf-sidecar-net-restart",
        "--resolve-interval",
        "0.2",
    ]);
    let udp = |m: &Metrics| pkts(m, "ebpf_sidecar_network_packets_total", "ingress", "udp");
    trigger(&app, 1);
    assert_eq!(udp(&sc.scrape()), d as f64);

    docker::ok(&["stop", "-t", "1", &app.0]);
    wait_for("target_up 0", Duration::from_secs(10), || {
        (sc.scrape().sum("ebpf_sidecar_target_up", &[]) == 0.0).then_some(())
    });
    docker::ok(&["start", &app.0]);
    wait_for("target reacquired", Duration::from_secs(20), || {
        (sc.scrape().sum("ebpf_sidecar_target_up", &[]) == 1.0).then_some(())
    });
    wait_for("workload ready again", Duration::from_secs(20), || {
        (app.logs().matches("ready").count() >= 2).then_some(())
    });
    trigger(&app, 2);
    let m = sc.scrape();
    assert_eq!(udp(&m), 2.0 * d as f64, "re-attached to the new cgroup");
    assert_eq!(
        pkts(&m, "ebpf_sidecar_network_bytes_total", "egress", "udp"),
        (2 * d * (s + UDP_HDR + IPV4_HDR)) as f64
    );
    assert!(
        sc.log_text().matches("packet counters attached").count() >= 2,
        "{}",
        sc.log_text()
    );
}

/// Runs a real HTTP server (Python's http.server) and a real client (curl), both in the target,
/// under `run --probes net <extra>`; `curls` are curl argument strings against `{url}`. Returns
/// the metrics at exit.
fn http_run(tag: &str, curls: &[String], extra: &[&str]) -> Metrics {
    let py = python3();
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "curl not found: apt-get install curl"
    );
    let dir = std::env::temp_dir().join(format!("ebpf-sidecar-net-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "hello\n").unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut script = format!(
        "cd {d} && {py} -u -m http.server --bind 127.0.0.1 {port} > srv.log 2>&1 &\n\
         srv=$!\n\
         until grep -q Serving {d}/srv.log; do sleep 0.05; done\n",
        d = dir.display()
    );
    for c in curls {
        script += &format!("curl {}\n", c.replace("{url}", &url));
    }
    script += "kill $srv; wait $srv; exit 0\n";
    let sh = Path::new("/bin/sh");
    let (m, _) = run_program(&format!("net-{tag}"), "net", extra, sh, &["-c", &script], 0);
    let _ = std::fs::remove_dir_all(&dir);
    m
}

#[test]
fn http_requests_by_method_and_status_are_exact() {
    require_root();
    let (get_ok, get_missing, head, post) = (3, 2, 1, 1);
    let mut curls = Vec::new();
    for _ in 0..get_ok {
        curls.push("-sf -o /dev/null {url}/index.html || exit 3".to_string());
    }
    for _ in 0..get_missing {
        curls.push("-s -o /dev/null {url}/missing".to_string());
    }
    for _ in 0..head {
        curls.push("-sf -o /dev/null -I {url}/index.html || exit 4".to_string());
    }
    for _ in 0..post {
        // http.server's SimpleHTTPRequestHandler answers POST with 501.
        curls.push("-s -o /dev/null -X POST -d x=1 {url}/".to_string());
    }
    // Both payload sources: TCP segments (default) and read/write syscalls.
    for source in ["on", "syscalls"] {
        let m = http_run("http", &curls, &["--net-http", source]);
        http_counts_are(&m, source, get_ok, get_missing, head, post);
    }
}

fn http_counts_are(m: &Metrics, source: &str, get_ok: u64, get_missing: u64, head: u64, post: u64) {
    for dir in ["server", "client"] {
        for (method, status, n) in [
            ("GET", "200", get_ok),
            ("GET", "404", get_missing),
            ("HEAD", "200", head),
            ("POST", "501", post),
        ] {
            assert_eq!(
                m.sum(
                    "ebpf_sidecar_http_requests_total",
                    &[("direction", dir), ("method", method), ("status", status)]
                ),
                n as f64,
                "--net-http {source}: {dir} {method} {status}"
            );
        }
        assert_eq!(
            m.sum("ebpf_sidecar_http_requests_total", &[("direction", dir)]),
            (get_ok + get_missing + head + post) as f64
        );
        assert_eq!(
            m.sum(
                "ebpf_sidecar_http_request_duration_seconds_count",
                &[("direction", dir), ("method", "GET")]
            ),
            (get_ok + get_missing) as f64
        );
    }
    let lint = promtool_check(&m.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
}

/// `--http-paths`: ids collapse to `:id`, query strings never reach a label, and the path label is
/// bounded by `--top-n` (the rest is `other`), with the totals unchanged.
#[test]
fn http_paths_are_normalised_bounded_and_without_queries() {
    require_root();
    let mut curls = Vec::new();
    let mut get = |path: &str, n: usize| {
        for _ in 0..n {
            curls.push(format!("-s -o /dev/null '{{url}}{path}'"));
        }
    };
    get("/index.html", 4);
    get("/users/17", 2);
    get("/users/42?token=SECRET", 1);
    get("/a", 1);
    get("/b", 1);
    let m = http_run("paths", &curls, &["--http-paths", "--top-n", "2"]);
    assert!(!m.text.contains("SECRET"), "a query string reached a label");
    let n = |path: &str, status: &str| {
        m.sum(
            "ebpf_sidecar_http_requests_total",
            &[("direction", "server"), ("path", path), ("status", status)],
        )
    };
    assert_eq!(n("/index.html", "200"), 4.0, "{}", m.text);
    assert_eq!(n("/users/:id", "404"), 3.0, "{}", m.text);
    assert_eq!(n("other", "404"), 2.0, "{}", m.text);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_http_requests_total",
            &[("direction", "client")]
        ),
        9.0
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_http_request_duration_seconds_count",
            &[("direction", "server"), ("path", "/users/:id")]
        ),
        3.0
    );
    let lint = promtool_check(&m.text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
}

/// Large TCP sends leave as one GSO skb that is cut into MSS-sized segments below the socket.
/// In a network namespace whose loopback has an Ethernet MTU and no segmentation offload
/// (`ethtool -K lo tso off gso off`), the kernel segments in software before the capture point: a packet capture then
/// sees every segment with its own headers. The sidecar counts the same packets and IP bytes.
#[test]
fn gso_sends_are_counted_as_the_segments_a_capture_sees() {
    require_root();
    let ns = format!("ebpf-sidecar-gso-{}", std::process::id());
    let sh = |cmd: &str| {
        let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
        assert!(st.success(), "{cmd} (needs iproute2 and ethtool)");
    };
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", &ns])
        .stderr(Stdio::null())
        .status();
    sh(&format!("ip netns add {ns}"));
    let _guard = Netns(ns.clone());
    sh(&format!(
        "ip netns exec {ns} ip link set lo up mtu 1500 && ip netns exec {ns} ethtool -K lo tso off gso off"
    ));
    let pcap = std::env::temp_dir().join(format!("{ns}.pcap"));
    let _ = std::fs::remove_file(&pcap);
    let log = std::env::temp_dir().join(format!("{ns}.tshark.log"));
    let mut cap = Command::new("ip")
        .args([
            "netns", "exec", &ns, "tshark", "-q", "-B", "64", "-i", "lo", "-w",
        ])
        .arg(&pcap)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("tshark not found: apt-get install tshark");
    wait_for("tshark capturing", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Capturing on")
            .then_some(())
    });
    let (c, n) = (3u64, 1_000_000u64);
    let traffic = workload("net_traffic");
    let (c_s, n_s) = (c.to_string(), n.to_string());
    let args = [
        "netns",
        "exec",
        &ns,
        &traffic.to_string_lossy(),
        "tcp",
        &c_s,
        &n_s,
    ];
    let (m, _) = run_program("net-gso", "net", &[], Path::new("ip"), &args, 0);
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(cap.id() as i32, libc::SIGINT) };
    cap.wait().unwrap();
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args(["-T", "fields", "-e", "ip.len", "-Y", "tcp"])
        .output()
        .unwrap();
    let lens: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let (cap_pkts, cap_bytes) = (lens.len() as f64, lens.iter().sum::<f64>());
    assert!(
        lens.iter().all(|&l| l <= 1500.0),
        "segmented to the MTU before the capture"
    );
    assert!(
        cap_bytes > 2.0 * (c * n) as f64,
        "the capture holds the transfer: {cap_pkts} packets, {cap_bytes} bytes"
    );
    // Every packet one end sends, the other (also the target) receives: one capture, two counts.
    for dir in ["egress", "ingress"] {
        assert_eq!(
            pkts(&m, "ebpf_sidecar_network_packets_total", dir, "tcp"),
            cap_pkts,
            "{dir} packets = the capture's"
        );
        assert_eq!(
            pkts(&m, "ebpf_sidecar_network_bytes_total", dir, "tcp"),
            cap_bytes,
            "{dir} IP bytes = the capture's ip.len sum"
        );
    }
}

/// One `run` sidecar of [`two_sidecars_share_one_kernel_side_and_count_only_their_own`]: its
/// workload waits for `go`, makes `c` TCP connections of `n` bytes each way (net_traffic) and
/// `http` GETs of `path` from a Python http.server of its own (curl), writes `done`, then waits
/// for `end`. Killed (with its sidecar) on drop.
struct SharedRun {
    child: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    out: std::path::PathBuf,
    prom: std::path::PathBuf,
}

impl SharedRun {
    #[allow(clippy::too_many_arguments)]
    fn start(
        tag: &str,
        dir: &Path,
        extra: &[&str],
        c: u64,
        n: u64,
        http: usize,
        path: &str,
    ) -> Self {
        let w = workload("net_traffic");
        let py = python3();
        let d = dir.join(tag);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("index.html"), "hello\n").unwrap();
        let web = free_port();
        let mut script = format!(
            "cd {d} && {py} -u -m http.server --bind 127.0.0.1 {web} > srv.log 2>&1 &\n\
             srv=$!\n\
             until grep -q Serving {d}/srv.log; do sleep 0.05; done\n\
             until [ -e {go} ]; do sleep 0.05; done\n\
             {w} tcp {c} {n} || exit 3\n",
            d = d.display(),
            go = dir.join("go").display(),
            w = w.display(),
        );
        for _ in 0..http {
            script += &format!("curl -s -o /dev/null http://127.0.0.1:{web}{path} || exit 4\n");
        }
        script += &format!(
            "kill $srv; wait $srv\ntouch {done}\nuntil [ -e {end} ]; do sleep 0.05; done\n",
            done = d.join("done").display(),
            end = dir.join("end").display(),
        );
        let port = free_port();
        let (log, out, prom) = (d.join("sidecar.log"), d.join("stdout"), d.join("m.prom"));
        let child = Command::new(sidecar_bin())
            .args([
                "run",
                "--kernel-side",
                "shared",
                "--probes",
                "net",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .arg("--metrics-out")
            .arg(&prom)
            .args(["--", "/bin/sh", "-c", &script])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            log,
            out,
            prom,
        }
    }

    /// The sidecar's log, without its colours.
    fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut it = raw.chars();
        while let Some(ch) = it.next() {
            if ch == '\u{1b}' {
                it.by_ref().find(|c| c.is_ascii_alphabetic());
            } else {
                out.push(ch);
            }
        }
        out
    }

    fn wait_serving(&mut self) {
        wait_for("a sidecar serving", Duration::from_secs(60), || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("sidecar exited early ({st}):\n{}", self.log_text());
            }
            http_get(self.port, "/healthz", None)
                .is_ok_and(|r| r.0 == 200)
                .then_some(())
        });
    }

    /// Wait for the exit (the workload's status passed on) and read the final metrics and the
    /// net_traffic server's port.
    fn finish(mut self) -> (Metrics, u64) {
        let st = self.child.wait().unwrap();
        assert!(st.success(), "{st}:\n{}", self.log_text());
        let m = Metrics::parse(&std::fs::read_to_string(&self.prom).unwrap());
        let port = fact(&std::fs::read_to_string(&self.out).unwrap(), "port");
        (m, port)
    }
}

impl Drop for SharedRun {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child; its `run` leaves the set and ends CMD.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// Two sidecars at once on one shared kernel side (`/sys/fs/bpf/ebpf-sidecar/<abi>/`), each
/// `run` around its own target: the programs and the packet programs are the set's, the tables
/// each slot's. Each target makes a different known number of TCP connections and HTTP requests
/// to loopback servers of its own, and each sidecar reads exactly its own target's. The second
/// reads HTTP from syscalls (--net-http syscalls), the first from TCP segments: per-slot options
/// on shared programs.
#[test]
fn two_sidecars_share_one_kernel_side_and_count_only_their_own() {
    require_root();
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "curl not found: apt-get install curl"
    );
    let dir = std::env::temp_dir().join(format!("ebpf-sidecar-net-shared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, na, ha) = (3u64, 20_000u64, 2usize);
    let (cb, nb, hb) = (5u64, 30_000u64, 4usize);
    let mut a = SharedRun::start("a", &dir, &[], ca, na, ha, "/index.html");
    a.wait_serving();
    let mut b = SharedRun::start(
        "b",
        &dir,
        &["--net-http", "syscalls"],
        cb,
        nb,
        hb,
        "/missing",
    );
    b.wait_serving();
    // Both on the set: the second joined the first's (slot 1), nobody fell back to private.
    assert!(
        a.log_text().contains("kernel side: shared"),
        "{}",
        a.log_text()
    );
    assert!(b.log_text().contains("slot=1"), "{}", b.log_text());
    std::fs::write(dir.join("go"), "").unwrap();
    wait_for("both workloads done", Duration::from_secs(60), || {
        (dir.join("a/done").exists() && dir.join("b/done").exists()).then_some(())
    });
    // One copy of the packet programs, attached to both targets' cgroups.
    let progs = Command::new("bpftool")
        .args(["prog", "list"])
        .output()
        .unwrap();
    let progs = String::from_utf8_lossy(&progs.stdout);
    assert_eq!(progs.matches("name net_ingress").count(), 1, "{progs}");
    std::fs::write(dir.join("end"), "").unwrap();
    let (ma, port_a) = a.finish();
    let (mb, port_b) = b.finish();
    for (m, c, n, h, port, status, who) in [
        (&ma, ca, na, ha, port_a, "200", "a"),
        (&mb, cb, nb, hb, port_b, "404", "b"),
    ] {
        // net_traffic's connections and curl's, both ends in the target.
        let conns = (c + h as u64) as f64;
        for dir in ["active", "passive"] {
            assert_eq!(
                m.sum("ebpf_sidecar_tcp_connections_total", &[("direction", dir)]),
                conns,
                "{who}: {dir} connections"
            );
        }
        assert_eq!(
            m.sum(
                "ebpf_sidecar_tcp_accepts_total",
                &[("port", &port.to_string())]
            ),
            c as f64,
            "{who}: accepts on net_traffic's port"
        );
        let peer = format!("loopback:{port}");
        for metric in [
            "ebpf_sidecar_tcp_sent_bytes_total",
            "ebpf_sidecar_tcp_received_bytes_total",
        ] {
            assert_eq!(
                m.sum(metric, &[("peer", &peer)]),
                (c * n) as f64,
                "{who}: {metric}"
            );
        }
        for d in ["server", "client"] {
            assert_eq!(
                m.sum(
                    "ebpf_sidecar_http_requests_total",
                    &[("direction", d), ("method", "GET"), ("status", status)]
                ),
                h as f64,
                "{who}: {d} GET {status}"
            );
            assert_eq!(
                m.sum("ebpf_sidecar_http_requests_total", &[("direction", d)]),
                h as f64,
                "{who}: {d} requests"
            );
        }
        // Every packet one end sends, the other end (the same target) receives.
        assert_eq!(
            pkts(m, "ebpf_sidecar_network_packets_total", "egress", "tcp"),
            pkts(m, "ebpf_sidecar_network_packets_total", "ingress", "tcp"),
            "{who}"
        );
        assert!(
            pkts(m, "ebpf_sidecar_network_bytes_total", "egress", "tcp") >= (2 * c * n) as f64,
            "{who}"
        );
        // (No check of connect errors: curl and Python try Unix sockets that are not there.)
        assert_eq!(m.sum("ebpf_sidecar_events_lost_total", &[]), 0.0, "{who}");
    }
    // The other target's server port never shows up as a peer.
    for (m, other) in [(&ma, port_b), (&mb, port_a)] {
        assert_eq!(
            m.sum(
                "ebpf_sidecar_tcp_sent_bytes_total",
                &[("peer", &format!("loopback:{other}"))]
            ),
            0.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
