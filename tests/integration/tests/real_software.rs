//! Tests against real software (issue 16): Debian's nginx, redis, PostgreSQL, fio, stress-ng and
//! dnsmasq run as the target, each compared on the same run with a truth that does not come from
//! the sidecar: the server's own log or statistics, bpftrace filtered by the same cgroup id, a
//! tshark capture, the cgroup's `cpu.stat`, rusage. Every server runs in a cgroup of its own (made
//! by the test, or by `run`), never in the root cgroup.
//!
//! Where a server keeps making syscalls on its own (timers), the comparison window is cut by
//! freezing its cgroup (`cgroup.freeze`): the sidecar and bpftrace attach while it is frozen and
//! are both read while it is frozen again, so they saw exactly the same events.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::real::*;
use integration::*;

/// A scratch directory under /var/tmp (a real filesystem), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = PathBuf::from(format!(
            "/var/tmp/ebpf-sidecar-real-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `series` of one metric, keyed by the values of `keys`, as integers.
fn by_labels(m: &Metrics, name: &str, filter: &[(&str, &str)], keys: &[&str]) -> Counts {
    let mut out = Counts::new();
    for (l, v) in m.matching(name, filter) {
        let k: Vec<&str> = keys
            .iter()
            .map(|k| l.get(*k).map(String::as_str).unwrap_or("?"))
            .collect();
        *out.entry(k.join(" ")).or_default() += v as u64;
    }
    out.retain(|_, v| *v > 0);
    out
}

type Counts = BTreeMap<String, u64>;

/// Exact equality of two keyed counts, with every differing key named.
fn assert_counts_eq(what: &str, sidecar: &Counts, truth: &Counts) {
    let mut diff = Vec::new();
    for k in sidecar.keys().chain(truth.keys()) {
        let (s, t) = (
            sidecar.get(k).copied().unwrap_or(0),
            truth.get(k).copied().unwrap_or(0),
        );
        if s != t && !diff.iter().any(|d: &String| d.starts_with(&format!("{k}:"))) {
            diff.push(format!("{k}: sidecar {s}, truth {t} ({:+})", s as i64 - t as i64));
        }
    }
    assert!(
        diff.is_empty(),
        "{what}: {} keys differ:\n  {}\nsidecar: {sidecar:?}\ntruth:   {truth:?}",
        diff.len(),
        diff.join("\n  ")
    );
}

/// Poll the sidecar until `f` of its metrics equals `want` (counters that move at a connection's
/// close, after the peer's last ACK), then return the last value seen.
fn settle(sc: &Sidecar, want: u64, f: impl Fn(&Metrics) -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = f(&sc.scrape());
        if v == want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cgroup id the sidecar says it filters by (`target_info{cgroup_id}`).
fn reported_cgroup_id(m: &Metrics) -> u64 {
    let (l, _) = m
        .matching("ebpf_sidecar_target_info", &[])
        .next()
        .expect("target_info");
    l["cgroup_id"].parse().unwrap()
}

/// bpftrace's syscall counts by the kernel headers' names.
fn named(counts: &BTreeMap<u64, u64>) -> Counts {
    let names = syscall_names();
    counts
        .iter()
        .map(|(nr, c)| {
            let n = names.get(nr).cloned().unwrap_or_else(|| format!("nr{nr}"));
            (n, *c)
        })
        .collect()
}

fn sidecar_syscalls(m: &Metrics) -> Counts {
    by_labels(m, "ebpf_sidecar_syscalls_total", &[], &["syscall"])
}

// ---------------------------------------------------------------------------------------------
// nginx

/// A minimal HTTP/1.1 client exchange on a kept-alive connection: returns the status, whether
/// the server closes the connection after this answer, and the bytes the request took.
fn exchange(s: &mut TcpStream, method: &str, path: &str, body: &[u8]) -> (u16, bool, u64) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: real-sw\r\n");
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut all = req.into_bytes();
    all.extend_from_slice(body);
    s.write_all(&all).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the answer's head");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let len = if method == "HEAD" || status == 204 || status == 304 {
        0
    } else {
        len
    };
    while raw.len() < head_end + len {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed inside the body");
        raw.extend_from_slice(&buf[..n]);
    }
    assert_eq!(raw.len(), head_end + len, "one answer at a time");
    (status, head.contains("connection: close"), all.len() as u64)
}

/// Plain upload bodies: lowercase letters and digits, nothing that looks like HTTP.
fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + seed as usize) % 36])
        .collect()
}

#[test]
fn nginx_requests_and_bytes_equal_its_access_log() {
    require_root();
    let nginx = need("/usr/sbin/nginx", "nginx-light");
    let t0 = Instant::now();
    let dir = Scratch::new("nginx");
    let d = dir.path();
    std::fs::create_dir_all(d.join("www/dav")).unwrap();
    std::fs::write(d.join("www/index.html"), body(612, 1)).unwrap();
    std::fs::write(d.join("www/big.bin"), body(300_000, 2)).unwrap();
    let port = free_port();
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format real '$request_method $status $bytes_sent';
    access_log {d}/access.log real;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        client_max_body_size 10m;
        location /dav/ {{ dav_methods PUT DELETE; create_full_put_path on; }}
        location = /form {{ return 200 "accepted\n"; }}
    }}
}}
"#,
        d = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let cg = TestCgroup::new("nginx");
    let _nginx = Proc(cg.spawn(
        Command::new(&nginx)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d)
            .stderr(Stdio::null()),
    ));
    wait_tcp(port, Duration::from_secs(10));
    let master = _nginx.0.id().to_string();
    let sc = Sidecar::start(&["--target-pid", &master, "--probes", "process,net"]);
    assert_eq!(reported_cgroup_id(&sc.scrape()), cg.id());

    // Keep-alive connections with several requests each, uploads with plain bodies, errors.
    type Req = (&'static str, &'static str, usize);
    let plans: Vec<Vec<Req>> = vec![
        vec![
            ("GET", "/index.html", 0),
            ("GET", "/missing", 0),
            ("HEAD", "/index.html", 0),
            ("GET", "/big.bin", 0),
            ("PUT", "/dav/a.txt", 1000),
            ("PUT", "/dav/b.bin", 70_000),
            ("GET", "/dav/b.bin", 0),
            ("POST", "/form", 3000),
            ("DELETE", "/dav/a.txt", 0),
            ("GET", "/index.html", 0),
        ],
        vec![
            ("POST", "/form", 200_000),
            ("PUT", "/dav/a.txt", 10),
            ("GET", "/dav/a.txt", 0),
            ("OPTIONS", "/index.html", 0),
        ],
        vec![("POST", "/index.html", 500), ("GET", "/index.html", 0)],
        vec![("DELETE", "/dav/none", 0), ("GET", "/", 0)],
        vec![("PATCH", "/index.html", 20), ("GET", "/big.bin", 0)],
    ];
    let mut conns = 0u64;
    let mut sent = 0u64;
    let mut request_bytes = 0u64;
    for round in 0..4u8 {
        for plan in &plans {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            conns += 1;
            for (i, (method, path, n)) in plan.iter().enumerate() {
                let (_, close, n) = exchange(&mut s, method, path, &body(*n, round + i as u8));
                sent += 1;
                request_bytes += n;
                if close {
                    s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    conns += 1;
                }
            }
        }
    }

    // The truth: nginx's access log.
    let log_path = d.join("access.log");
    let lines = wait_for("all requests logged", Duration::from_secs(5), || {
        let t = std::fs::read_to_string(&log_path).unwrap_or_default();
        let l: Vec<String> = t.lines().map(str::to_string).collect();
        (l.len() as u64 >= sent).then_some(l)
    });
    let mut truth = Counts::new();
    let mut bytes_sent = 0u64;
    for l in &lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        *truth.entry(format!("{} {}", f[0], f[1])).or_default() += 1;
        bytes_sent += f[2].parse::<u64>().unwrap();
    }
    assert_eq!(lines.len() as u64, sent, "one access log line per request");

    // Payload bytes per connection are added when it closes: wait for all of them.
    let closed = settle(&sc, conns, |m| {
        m.sum("ebpf_sidecar_tcp_connection_duration_seconds_count", &[]) as u64
    });
    let m = sc.scrape();
    let http = by_labels(
        &m,
        "ebpf_sidecar_http_requests_total",
        &[("direction", "server")],
        &["method", "status"],
    );
    let tx = m.sum("ebpf_sidecar_tcp_sent_bytes_total", &[]) as u64;
    let rx = m.sum("ebpf_sidecar_tcp_received_bytes_total", &[]) as u64;
    let passive = m.sum(
        "ebpf_sidecar_tcp_connections_total",
        &[("direction", "passive")],
    ) as u64;
    eprintln!(
        "nginx: {sent} requests on {conns} connections ({closed} closed seen); log {truth:?}; \
         sidecar {http:?}; $bytes_sent {bytes_sent} vs tcp_sent_bytes {tx}; \
         client wrote {request_bytes} vs tcp_received_bytes {rx}; {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_counts_eq("HTTP requests by method and status", &http, &truth);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_http_requests_total",
            &[("direction", "client")]
        ),
        0.0,
        "nginx sends no requests"
    );
    assert_eq!(passive, conns, "accepted connections");
    // $bytes_sent is everything nginx wrote to the client for a request (status line, headers,
    // body), so over whole connections it is the TCP payload nginx sent: the per-peer
    // tcp_sent_bytes_total (bytes_sent − bytes_retrans of each socket, at close).
    assert_eq!(tx, bytes_sent, "tcp_sent_bytes_total = sum of $bytes_sent");
    // What the client wrote (heads and bodies) is the payload nginx received. ($request_length
    // is no truth for this: nginx leaves out bodies it discarded or streamed to a file, e.g. 289836
    // of 1103916 bytes here.)
    assert_eq!(rx, request_bytes, "tcp_received_bytes_total = bytes the client wrote");
}

// ---------------------------------------------------------------------------------------------
// redis

/// One RESP command on `s`; returns the bytes of the whole reply.
fn redis_cmd(s: &mut TcpStream, args: &[&str]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "redis closed the connection");
        raw.extend_from_slice(&buf[..n]);
        // A bulk string reply: $len\r\n<len bytes>\r\n; a simple reply: one line.
        if let Some(i) = raw.windows(2).position(|w| w == b"\r\n") {
            if raw[0] != b'$' {
                return raw;
            }
            let len: usize = std::str::from_utf8(&raw[1..i]).unwrap().parse().unwrap();
            if raw.len() >= i + 2 + len + 2 {
                return raw;
            }
        }
    }
}

fn info_field(info: &str, key: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in INFO"))
        .trim()
        .parse()
        .unwrap()
}

fn redis_under(latency: &str) {
    require_root();
    let server = need("redis-server", "redis-server");
    let bench = need("redis-benchmark", "redis-tools");
    let t0 = Instant::now();
    let dir = Scratch::new(&format!("redis-{latency}"));
    let port = free_port();
    let cg = TestCgroup::new(&format!("redis-{latency}"));
    // sh waits for one line before it becomes redis-server: redis's whole life, from its exec,
    // is inside the window.
    let mut child = cg.spawn(
        Command::new("/bin/sh")
            .arg("-c")
            .arg("read _ && exec \"$0\" \"$@\"")
            .arg(&server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--logfile", "", "--dir"])
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let mut go = child.stdin.take().unwrap();
    let _redis = Proc(child);
    cg.freeze(true);
    let pid = _redis.0.id().to_string();
    let sc = Sidecar::start(&["--target-pid", &pid, "--syscall-latency", latency]);
    let id = reported_cgroup_id(&sc.scrape());
    assert_eq!(id, cg.id(), "target_info cgroup_id is the server's cgroup");
    let bt = Bpftrace::syscalls_of_cgroup(&format!("redis-{latency}"), id);
    cg.freeze(false);
    go.write_all(b"go\n").unwrap();
    drop(go);
    wait_tcp(port, Duration::from_secs(10));

    let st = Command::new(&bench)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", "3000", "-c", "4", "-d", "100", "-q"])
        .args(["-t", "set,get,incr,lpush,lpop"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "redis-benchmark failed");

    // INFO is the last command: its counters include everything read up to and including its
    // own request, and everything written before its own reply.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let reply = redis_cmd(&mut s, &["INFO", "stats"]);
    drop(s);
    let info = String::from_utf8_lossy(&reply).to_string();
    let net_in = info_field(&info, "total_net_input_bytes");
    let net_out = info_field(&info, "total_net_output_bytes") + reply.len() as u64;
    let conns = info_field(&info, "total_connections_received");

    let closed = settle(&sc, conns, |m| {
        m.sum("ebpf_sidecar_tcp_connection_duration_seconds_count", &[]) as u64
    });
    // Let redis's timers run a little, then cut the window.
    std::thread::sleep(Duration::from_millis(300));
    cg.freeze(true);
    let truth = named(&bt.finish());
    let m = sc.scrape();
    let calls = sidecar_syscalls(&m);
    let rx = m.sum("ebpf_sidecar_tcp_received_bytes_total", &[]) as u64;
    let tx = m.sum("ebpf_sidecar_tcp_sent_bytes_total", &[]) as u64;
    eprintln!(
        "redis --syscall-latency {latency}: {} syscalls by bpftrace, {} by the sidecar; \
         net_input {net_in} vs tcp_received {rx}; net_output(+INFO reply) {net_out} vs \
         tcp_sent {tx}; {conns} connections ({closed} closed seen); {:.1} s",
        truth.values().sum::<u64>(),
        calls.values().sum::<u64>(),
        t0.elapsed().as_secs_f64()
    );
    assert_counts_eq(
        &format!("redis syscalls by name, --syscall-latency {latency}"),
        &calls,
        &truth,
    );
    assert_eq!(rx, net_in, "tcp_received_bytes_total = total_net_input_bytes");
    assert_eq!(tx, net_out, "tcp_sent_bytes_total = total_net_output_bytes + INFO reply");
    assert_eq!(m.sum("ebpf_sidecar_events_lost_total", &[]), 0.0);
}

#[test]
fn redis_syscalls_equal_bpftrace_and_bytes_equal_info_stats() {
    redis_under("on");
}

#[test]
fn redis_syscalls_equal_bpftrace_counting_only() {
    redis_under("off");
}
