//! HTTP/1 framing (issue 16, defect 3): the recogniser follows Content-Length and chunked bodies
//! on requests and answers, pairs pipelined requests in order, and drops a stream it cannot
//! follow instead of guessing. A real nginx serves in the target (`ebpf-sidecar run`), a raw-socket
//! client (workloads/http_framing.py, also in the target) uploads bodies and
//! fetches a file that hold request and status lines at segment starts; the counts must equal
//! nginx's access log (server) and what the client read (client), for both payload sources.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use integration::*;

const NGINX: &str = "/usr/sbin/nginx";
/// Answers after reading the whole body, chunked (Debian libnginx-mod-http-echo).
const ECHO: &str = "/usr/lib/nginx/modules/ngx_http_echo_module.so";

type Counts = BTreeMap<(String, String), u64>;

struct Run {
    metrics: Metrics,
    /// nginx's access log: (method, status) → requests.
    server: Counts,
    /// What the client read: (method, status) → answers.
    client: Counts,
}

fn counts(text: &str) -> Counts {
    let mut c = Counts::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        if let (Some(m), Some(s)) = (f.next(), f.next()) {
            *c.entry((m.to_string(), s.to_string())).or_default() += 1;
        }
    }
    c
}

/// `ebpf-sidecar run --probes net <extra> -- sh -c 'nginx & client'`: nginx on a loopback port
/// with a temporary config, the client in `mode` ("" or "split"); returns the final metrics and
/// both sides' own records.
fn nginx_run(tag: &str, extra: &[&str], mode: &str) -> Run {
    require_root();
    assert!(
        std::path::Path::new(NGINX).exists(),
        "nginx not found at {NGINX}: apt-get install nginx-light"
    );
    assert!(
        std::path::Path::new(ECHO).exists(),
        "{ECHO} not found: apt-get install libnginx-mod-http-echo"
    );
    let py = python3();
    assert!(!py.is_empty(), "python3 prints no sys.executable");
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "ebpf-sidecar-http-framing-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The served file: its answer's body starts with a status line and holds request lines.
    let unit: Vec<u8> = [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..],
        b"GET /evil HTTP/1.1\r\nHost: evil\r\n\r\n",
        &[b'z'; 300],
    ]
    .concat();
    let file: Vec<u8> = unit.iter().copied().cycle().take(9000).collect();
    std::fs::write(dir.join("file.txt"), &file).unwrap();
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "load_module {ECHO};\ndaemon off;\nmaster_process off;\nuser root root;\nworker_processes 1;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
         http {{\n  log_format framing '$request_method $status $bytes_sent';\n\
         access_log {d}/access.log framing;\n  client_body_temp_path {d}/body;\n\
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n  sendfile on;\n  keepalive_requests 1000;\n\
         server {{\n    listen 127.0.0.1:{port};\n    root {d};\n\
         client_max_body_size 1m;\n\
         location /upload/ {{ dav_methods PUT; create_full_put_path on; }}\n\
         location /post/ {{ echo_read_request_body; echo stored; }}\n  }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let client = workloads_dir().join("http_framing.py");
    let script = format!(
        "{NGINX} -c {d}/nginx.conf & ngx=$!\n\
         {py} -c 'import socket,sys,time\nfor _ in range(400):\n  try:\n    socket.create_connection((\"127.0.0.1\",{port})).close(); sys.exit(0)\n  except OSError: time.sleep(0.025)\nsys.exit(1)' || exit 5\n\
         {py} {client} {port} {d}/client.txt {mode} > {d}/client.log 2>&1 || {{ kill $ngx; exit 6; }}\n\
         kill $ngx; wait $ngx; exit 0\n",
        client = client.display()
    );
    let out = dir.join("metrics.prom");
    let o = Command::new(sidecar_bin())
        .args(["run", "--probes", "net", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(extra)
        .arg("--metrics-out")
        .arg(&out)
        .args(["--", "/bin/sh", "-c", &script])
        .output()
        .unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    assert!(
        o.status.success(),
        "{}: {}\nclient: {}\nnginx: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        read("client.log"),
        read("error.log")
    );
    let text = std::fs::read_to_string(&out).expect("--metrics-out written");
    let lint = promtool_check(&text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
    let run = Run {
        metrics: Metrics::parse(&text),
        server: counts(&read("access.log")),
        client: counts(&read("client.txt")),
    };
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// (method, status) → requests of one direction, summed over paths.
fn counted(m: &Metrics, dir: &str) -> Counts {
    let mut c = Counts::new();
    for (l, v) in m.matching("ebpf_sidecar_http_requests_total", &[("direction", dir)]) {
        if v > 0.0 {
            *c.entry((l["method"].clone(), l["status"].clone()))
                .or_default() += v as u64;
        }
    }
    c
}

fn untracked(m: &Metrics) -> f64 {
    m.sum("ebpf_sidecar_http_untracked_streams_total", &[])
}

/// The main workload: every request counted once with its own method and status, on both
/// sides, and nothing the parser could not follow.
fn framing_is_followed(source: &str, paths: bool) {
    let mut extra = vec!["--net-http", source];
    if paths {
        extra.push("--http-paths");
    }
    let tag = format!("{source}{}", if paths { "-paths" } else { "" });
    let r = nginx_run(&tag, &extra, "");
    let m = &r.metrics;
    // The workload as designed: 5 PUTs (nginx's DAV module reads the body, then answers), 11
    // POSTs (the echo module reads the body, then answers chunked; 2 to the static file are
    // answered 405 at once), GETs, HEADs, pipelining.
    assert_eq!(
        r.server.get(&("PUT".into(), "201".into())),
        Some(&5),
        "{:?}",
        r.server
    );
    assert_eq!(r.server, r.client, "nginx's log and the client disagree");
    assert_eq!(
        counted(m, "server"),
        r.server,
        "--net-http {source}: server side vs nginx's access log\n{}",
        m.text
    );
    assert_eq!(
        counted(m, "client"),
        r.client,
        "--net-http {source}: client side vs what the client read\n{}",
        m.text
    );
    let total: u64 = r.server.values().sum();
    for dir in ["server", "client"] {
        assert_eq!(
            m.sum(
                "ebpf_sidecar_http_request_duration_seconds_count",
                &[("direction", dir)]
            ),
            total as f64,
            "{dir}: one duration per request"
        );
    }
    assert_eq!(
        untracked(m),
        0.0,
        "nothing here is unfollowable\n{}",
        m.text
    );
    if paths {
        let requested: BTreeSet<&str> = [
            "/upload/:id",
            "/post/cl",
            "/post/chunked",
            "/post/pipe",
            "/file.txt",
            "/missing",
        ]
        .into();
        for (l, v) in m.matching("ebpf_sidecar_http_requests_total", &[]) {
            assert!(
                requested.contains(l["path"].as_str()),
                "a path nobody requested: {l:?} {v}"
            );
        }
    }
    assert!(!m.text.contains("evil"), "a body was read as a request");
}

#[test]
fn http_framing_from_packets_matches_nginx_log() {
    framing_is_followed("on", false);
}

#[test]
fn http_framing_from_packets_with_paths_requests_no_body_paths() {
    framing_is_followed("on", true);
}

#[test]
fn http_framing_from_syscalls_matches_nginx_log() {
    framing_is_followed("syscalls", true);
}

/// A request head split over two segments cannot be followed from segment starts: the
/// connection is dropped and counted as untracked on both sockets; its body (which starts with a
/// request line) and the later request on it are never guessed at.
#[test]
fn http_unfollowable_stream_is_dropped_and_counted() {
    let r = nginx_run("split", &["--net-http", "on"], "split");
    let m = &r.metrics;
    assert_eq!(r.server.values().sum::<u64>(), 2, "{:?}", r.server);
    assert_eq!(counted(m, "server"), Counts::new(), "{}", m.text);
    assert_eq!(counted(m, "client"), Counts::new(), "{}", m.text);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_http_untracked_streams_total",
            &[("reason", "head")]
        ),
        2.0,
        "server and client socket\n{}",
        m.text
    );
    assert_eq!(untracked(m), 2.0, "{}", m.text);
}
