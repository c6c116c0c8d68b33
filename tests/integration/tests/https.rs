//! HTTPS (net family): HTTP/1.x read at OpenSSL's SSL_read/SSL_write in the target's processes,
//! counted with `tls="true"`. Real servers and clients: nginx (libssl.so.3) and Node 20 (OpenSSL
//! linked in) as servers, curl and Python as clients; each count is compared with what the
//! server or client itself recorded. The uprobes are attached per target process: a neighbour
//! using the same libssl must add nothing and run none of the programs (bpf_stats run counts).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::real::*;
use integration::*;

const PROGRAMS: [&str; 3] = ["net_tls_enter", "net_tls_exit", "net_tls_free"];

/// A self-signed certificate and key in `d` (cert.pem, key.pem).
fn certificate(d: &Path) {
    need("/usr/bin/openssl", "openssl");
    integration::self_signed_cert(d).unwrap();
}

/// Ids of the programs named like the HTTPS uprobe programs.
fn tls_program_ids() -> BTreeSet<u64> {
    bpftool_progs()
        .into_iter()
        .filter(|(_, name, _)| PROGRAMS.contains(&name.as_str()))
        .map(|(id, _, _)| id)
        .collect()
}

/// (id, name, run_cnt) of every program.
fn bpftool_progs() -> Vec<(u64, String, u64)> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool: apt-get install bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["id"].as_u64().unwrap_or(0),
                p["name"].as_str().unwrap_or("").to_string(),
                p["run_cnt"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The HTTPS programs a sidecar started after `before` was taken loaded, and their run counts.
struct Runs {
    ids: BTreeSet<u64>,
}

impl Runs {
    fn of_sidecar_started_after(before: &BTreeSet<u64>) -> Self {
        let ids: BTreeSet<u64> = tls_program_ids().difference(before).copied().collect();
        assert_eq!(
            ids.len(),
            PROGRAMS.len(),
            "the sidecar's HTTPS programs in bpftool"
        );
        Runs { ids }
    }

    /// Run counts by program name (bpf_stats: the sidecar runs with --bpf-stats).
    fn counts(&self) -> Vec<(String, u64)> {
        bpftool_progs()
            .into_iter()
            .filter(|(id, _, _)| self.ids.contains(id))
            .map(|(_, n, c)| (n, c))
            .collect()
    }

    fn total(&self) -> u64 {
        self.counts().iter().map(|(_, c)| c).sum()
    }
}

/// Wait until the sidecar has hooked `n` processes of the target.
fn wait_attached(sc: &Sidecar, n: u64, within: Duration) -> Duration {
    let t0 = Instant::now();
    wait_for("HTTPS uprobes attached", within, || {
        let m = sc.scrape();
        (m.sum("ebpf_sidecar_http_tls_processes", &[("state", "attached")]) as u64 >= n)
            .then_some(())
    });
    t0.elapsed()
}

/// The sidecar's metrics once `want` HTTPS requests of `direction` are counted, or after 5 s
/// (the caller's comparison then names what is missing).
fn counted(sc: &Sidecar, direction: &str, want: u64) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = sc.scrape();
        if https(&m, direction).values().sum::<u64>() >= want || Instant::now() > deadline {
            return m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// HTTPS requests of the target seen by the sidecar, by "METHOD STATUS".
fn https(m: &Metrics, direction: &str) -> Counts {
    by_labels(
        m,
        "ebpf_sidecar_http_requests_total",
        &[("direction", direction), ("tls", "true")],
        &["method", "status"],
    )
}

// ---------------------------------------------------------------------------------------------
// nginx

fn nginx_conf(d: &Path, port: u16) -> String {
    format!(
        r#"daemon off;
master_process on;
worker_processes 2;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format real '$request_method $status';
    access_log {d}/access.log real;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        root {d}/www;
        client_max_body_size 10m;
        location /dav/ {{ dav_methods PUT DELETE; create_full_put_path on; }}
        location = /form {{ return 200 "accepted\n"; }}
    }}
}}
"#,
        d = d.display()
    )
}

/// Plain bodies: lowercase letters and digits.
fn body(n: usize, seed: u8) -> String {
    (0..n)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + seed as usize) % 36] as char)
        .collect()
}

/// nginx (two workers, TLS) in a cgroup of its own, serving `d/www`.
fn start_nginx(d: &Path, cg: &TestCgroup) -> (Proc, u16) {
    let nginx = need("/usr/sbin/nginx", "nginx-light");
    std::fs::create_dir_all(d.join("www/dav")).unwrap();
    std::fs::write(d.join("www/index.html"), body(612, 1)).unwrap();
    std::fs::write(d.join("www/big.bin"), body(300_000, 2)).unwrap();
    certificate(d);
    let port = free_port();
    std::fs::write(d.join("nginx.conf"), nginx_conf(d, port)).unwrap();
    let p = Proc(
        cg.spawn(
            Command::new(&nginx)
                .arg("-c")
                .arg(d.join("nginx.conf"))
                .arg("-p")
                .arg(d)
                .stderr(Stdio::null()),
        ),
    );
    wait_tcp(port, Duration::from_secs(10));
    (p, port)
}

/// One curl run: each (method, path, body size) a request on the same kept-alive connection
/// (`--next` keeps curl's connection pool).
fn curl(port: u16, reqs: &[(&str, &str, usize)]) {
    let mut c = Command::new(need("curl", "curl"));
    c.args(["-sk", "--http1.1"]);
    for (i, (method, path, n)) in reqs.iter().enumerate() {
        if i > 0 {
            c.arg("--next");
            c.args(["-sk", "--http1.1"]);
        }
        c.args(["-o", "/dev/null"]);
        match *method {
            "HEAD" => {
                c.arg("-I");
            }
            "GET" => {}
            m => {
                c.args(["-X", m]);
            }
        }
        if *n > 0 {
            let f = std::env::temp_dir().join(format!("ebpf-sidecar-https-body-{n}-{i}"));
            std::fs::write(&f, body(*n, i as u8)).unwrap();
            c.arg("--data-binary").arg(format!("@{}", f.display()));
        }
        c.arg(format!("https://127.0.0.1:{port}{path}"));
    }
    let st = c.stdout(Stdio::null()).status().unwrap();
    assert!(st.success(), "curl {reqs:?}");
}

/// Keep-alive connections with several requests each, new connections, uploads, errors.
fn nginx_load(port: u16) -> u64 {
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
            ("GET", "/missing/too", 0),
            ("OPTIONS", "/index.html", 0),
        ],
        vec![("POST", "/index.html", 500)],
        vec![("DELETE", "/dav/none", 0), ("GET", "/", 0)],
        vec![("PATCH", "/index.html", 20), ("GET", "/big.bin", 0)],
    ];
    let mut sent = 0;
    for _ in 0..3 {
        for plan in &plans {
            curl(port, plan);
            sent += plan.len() as u64;
        }
    }
    sent
}

/// The access log once it has `sent` lines, by "METHOD STATUS".
fn access_log(path: &Path, sent: u64) -> Counts {
    let lines = wait_for("all requests logged", Duration::from_secs(5), || {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        let l: Vec<String> = t.lines().map(str::to_string).collect();
        (l.len() as u64 >= sent).then_some(l)
    });
    assert_eq!(lines.len() as u64, sent, "one access log line per request");
    let mut truth = Counts::new();
    for l in &lines {
        *truth.entry(l.trim().to_string()).or_default() += 1;
    }
    truth
}

#[test]
fn nginx_https_requests_equal_its_access_log() {
    require_root();
    let dir = Scratch::new("https-nginx");
    let d = dir.path();
    let cg = TestCgroup::new("https-nginx");
    let (nginx, port) = start_nginx(d, &cg);
    let master = nginx.0.id().to_string();
    let before = tls_program_ids();
    // cgroup mode: the packet programs see the same connections' TLS records too.
    let sc = Sidecar::start(&[
        "--target-pid",
        &master,
        "--probes",
        "process,net",
        "--bpf-stats",
    ]);
    let runs = Runs::of_sidecar_started_after(&before);
    // master and both workers map libssl
    let took = wait_attached(&sc, 3, Duration::from_secs(5));

    let sent = nginx_load(port);
    let truth = access_log(&d.join("access.log"), sent);
    let m = counted(&sc, "server", sent);
    eprintln!(
        "nginx https: {sent} requests, hooked {took:?} after start; log {truth:?}; sidecar {:?}; \
         program runs {:?}",
        https(&m, "server"),
        runs.counts()
    );
    assert_counts_eq(
        "HTTPS requests by method and status",
        &https(&m, "server"),
        &truth,
    );
    assert_eq!(
        m.sum("ebpf_sidecar_http_requests_total", &[("tls", "false")]),
        0.0,
        "the TLS records on the wire are not taken for HTTP"
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_http_requests_total",
            &[("direction", "client")]
        ),
        0.0
    );
    assert_eq!(
        m.sum("ebpf_sidecar_http_untracked_streams_total", &[]),
        0.0,
        "every connection followed"
    );
    let durations = m.sum(
        "ebpf_sidecar_http_request_duration_seconds_count",
        &[("direction", "server"), ("tls", "true")],
    );
    assert_eq!(durations as u64, sent, "one duration per request");
    assert_eq!(
        m.sum("ebpf_sidecar_http_tls_processes", &[("state", "failed")]),
        0.0
    );
    assert_eq!(promtool_check(&m.text), "");
}

#[test]
fn nginx_https_with_http_paths_keeps_the_tls_label() {
    require_root();
    let dir = Scratch::new("https-nginx-paths");
    let d = dir.path();
    let cg = TestCgroup::new("https-nginx-paths");
    let (nginx, port) = start_nginx(d, &cg);
    let master = nginx.0.id().to_string();
    let sc = Sidecar::start(&["--target-pid", &master, "--probes", "net", "--http-paths"]);
    wait_attached(&sc, 3, Duration::from_secs(5));
    curl(
        port,
        &[
            ("GET", "/index.html", 0),
            ("GET", "/missing?token=SECRET", 0),
            ("POST", "/form", 10),
        ],
    );
    let m = counted(&sc, "server", 3);
    let by_path = by_labels(
        &m,
        "ebpf_sidecar_http_requests_total",
        &[("tls", "true")],
        &["method", "status", "path"],
    );
    let want: Counts = [
        ("GET 200 /index.html".to_string(), 1),
        ("GET 404 /missing".to_string(), 1),
        ("POST 200 /form".to_string(), 1),
    ]
    .into();
    assert_counts_eq("HTTPS requests by path", &by_path, &want);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_http_request_duration_seconds_count",
            &[("tls", "true"), ("path", "/form")]
        ),
        1.0
    );
    assert!(!m.text.contains("SECRET"));
}

// ---------------------------------------------------------------------------------------------
// Node 20: OpenSSL linked into the node binary

const NODE_SERVER: &str = r#"
const https = require('https'), fs = require('fs');
const [port, dir] = [Number(process.argv[2]), process.argv[3]];
const log = fs.openSync(dir + '/node.log', 'a');
const srv = https.createServer({
  key: fs.readFileSync(dir + '/key.pem'), cert: fs.readFileSync(dir + '/cert.pem'),
}, (req, res) => {
  const chunks = [];
  req.on('data', d => chunks.push(d));
  req.on('end', () => {
    const st = req.url.startsWith('/missing') ? 404
      : req.method === 'POST' ? 201 : req.method === 'DELETE' ? 204 : 200;
    fs.writeSync(log, req.method + ' ' + st + '\n');
    if (st === 204) { res.writeHead(204); res.end(); return; }
    if (req.url === '/chunked') {
      res.writeHead(st, {'content-type': 'text/plain'});
      for (let i = 0; i < 20; i++) res.write('c'.repeat(1000 + i));
      res.end();
      return;
    }
    res.writeHead(st, {'content-type': 'text/plain'});
    res.end('x'.repeat(req.url === '/big' ? 200000 : 10));
  });
});
srv.keepAliveTimeout = 30000;
srv.listen(port, '127.0.0.1', () => console.log('ready'));
"#;

#[test]
fn node20_https_server_counts_equal_its_own() {
    require_root();
    let node = need("/usr/bin/node", "nodejs");
    let dir = Scratch::new("https-node");
    let d = dir.path();
    certificate(d);
    std::fs::write(d.join("server.js"), NODE_SERVER).unwrap();
    let port = free_port();
    let cg = TestCgroup::new("https-node");
    let server = Proc(
        cg.spawn(
            Command::new(&node)
                .arg(d.join("server.js"))
                .arg(port.to_string())
                .arg(d)
                .stdout(Stdio::null()),
        ),
    );
    wait_tcp(port, Duration::from_secs(10));
    let pid = server.0.id().to_string();
    let sc = Sidecar::start(&["--target-pid", &pid, "--probes", "net"]);
    wait_attached(&sc, 1, Duration::from_secs(5));

    let plans: Vec<Vec<(&str, &str, usize)>> = vec![
        vec![
            ("GET", "/a", 0),
            ("GET", "/missing", 0),
            ("GET", "/big", 0),
            ("POST", "/items", 5000),
            ("GET", "/chunked", 0),
            ("DELETE", "/items/1", 0),
            ("HEAD", "/a", 0),
            ("PUT", "/items/1", 100_000),
            ("GET", "/a", 0),
        ],
        vec![("POST", "/missing", 10)],
        vec![("PATCH", "/a", 10), ("OPTIONS", "/a", 0)],
    ];
    let mut sent = 0;
    for _ in 0..3 {
        for p in &plans {
            curl(port, p);
            sent += p.len() as u64;
        }
    }
    let truth = access_log(&d.join("node.log"), sent);
    let m = counted(&sc, "server", sent);
    eprintln!(
        "node https: {sent} requests; node {truth:?}; sidecar {:?}",
        https(&m, "server")
    );
    assert_counts_eq("Node HTTPS requests", &https(&m, "server"), &truth);
    assert_eq!(
        m.sum("ebpf_sidecar_http_requests_total", &[("tls", "false")]),
        0.0
    );
    assert_eq!(m.sum("ebpf_sidecar_http_untracked_streams_total", &[]), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Client direction, neighbours, processes that come later

/// An HTTPS server outside every target: status from the path, keep-alive (HTTP/1.1).
const PY_SERVER: &str = r#"
import http.server, ssl, sys
port, d = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n: self.rfile.read(n)
        st = 404 if self.path.startswith("/missing") else 201 if self.command == "POST" else 200
        body = b"" if self.command == "HEAD" else b"z" * (50000 if self.path == "/big" else 7)
        self.send_response(st)
        self.send_header("Content-Length", str(50000 if self.path == "/big" else 7))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(d + "/cert.pem", d + "/key.pem")
s = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
print("ready", flush=True)
s.serve_forever()
"#;

/// A client that waits for `go`, then makes its requests (kept-alive connections and new ones)
/// and writes "METHOD STATUS" per answer to `out`.
const PY_CLIENT: &str = r#"
import http.client, ssl, sys, os, time
port, go, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
while not os.path.exists(go):
    time.sleep(0.05)
plans = [
    [("GET", "/a", None), ("GET", "/missing", None), ("POST", "/items", b"p" * 3000),
     ("GET", "/big", None), ("HEAD", "/a", None), ("PUT", "/items/1", b"q" * 20000),
     ("DELETE", "/items/1", None)],
    [("POST", "/missing", b"x")],
    [("GET", "/a", None), ("GET", "/big", None)],
]
lines = []
for _ in range(2):
    for plan in plans:
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
        for method, path, body in plan:
            c.request(method, path, body=body)
            r = c.getresponse()
            r.read()
            lines.append("%s %d" % (method, r.status))
        c.close()
open(out, "w").write("\n".join(lines) + "\n")
"#;

struct PyServer {
    _p: Proc,
    port: u16,
}

fn py_server(d: &Path) -> PyServer {
    std::fs::write(d.join("server.py"), PY_SERVER).unwrap();
    let port = free_port();
    let p = Proc(
        Command::new(need("/usr/bin/python3", "python3"))
            .arg(d.join("server.py"))
            .arg(port.to_string())
            .arg(d)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_tcp(port, Duration::from_secs(10));
    PyServer { _p: p, port }
}

/// Start the Python client in `cg` (it waits for `tag`'s go file).
fn py_client(d: &Path, cg: &TestCgroup, port: u16, tag: &str) -> Proc {
    std::fs::write(d.join("client.py"), PY_CLIENT).unwrap();
    Proc(
        cg.spawn(
            Command::new("/usr/bin/python3")
                .arg(d.join("client.py"))
                .arg(port.to_string())
                .arg(d.join(format!("{tag}.go")))
                .arg(d.join(format!("{tag}.out"))),
        ),
    )
}

/// Let the client go, wait for it to finish; its answers by "METHOD STATUS".
fn client_done(d: &Path, client: &mut Proc, tag: &str) -> Counts {
    std::fs::write(d.join(format!("{tag}.go")), "").unwrap();
    let st = client.0.wait().unwrap();
    assert!(st.success(), "client {tag}");
    let text = std::fs::read_to_string(d.join(format!("{tag}.out"))).unwrap();
    let mut c = Counts::new();
    for l in text.lines() {
        *c.entry(l.to_string()).or_default() += 1;
    }
    c
}

#[test]
fn python_https_client_counts_exactly() {
    require_root();
    let dir = Scratch::new("https-client");
    let d = dir.path();
    certificate(d);
    let server = py_server(d);
    let cg = TestCgroup::new("https-client");
    let mut client = py_client(d, &cg, server.port, "first");
    let pid = client.0.id().to_string();
    let sc = Sidecar::start(&["--target-pid", &pid, "--probes", "net"]);
    // Python maps libssl at `import ssl`, before it waits.
    wait_attached(&sc, 1, Duration::from_secs(5));
    let truth = client_done(d, &mut client, "first");
    let want: u64 = truth.values().sum();
    let m = counted(&sc, "client", want);
    eprintln!(
        "python client: {truth:?}; sidecar {:?}",
        https(&m, "client")
    );
    assert_counts_eq("HTTPS client requests", &https(&m, "client"), &truth);
    assert_eq!(
        m.sum(
            "ebpf_sidecar_http_requests_total",
            &[("direction", "server")]
        ),
        0.0,
        "the server is outside the target"
    );
    assert_eq!(m.sum("ebpf_sidecar_http_untracked_streams_total", &[]), 0.0);
}

#[test]
fn processes_started_after_the_sidecar_are_hooked() {
    require_root();
    let dir = Scratch::new("https-later");
    let d = dir.path();
    certificate(d);
    let server = py_server(d);
    let cg = TestCgroup::new("https-later");
    // The target starts with a process that maps no libssl.
    let sleeper = Proc(cg.spawn(Command::new("/bin/sleep").arg("600")));
    let pid = sleeper.0.id().to_string();
    let sc = Sidecar::start(&["--target-pid", &pid, "--probes", "net"]);
    std::thread::sleep(Duration::from_millis(1500));
    let m = sc.scrape();
    assert_eq!(
        m.sum("ebpf_sidecar_http_tls_processes", &[("state", "attached")]),
        0.0
    );

    let mut late = py_client(d, &cg, server.port, "late");
    let took = wait_attached(&sc, 1, Duration::from_secs(5));
    eprintln!("a new process of the target hooked {took:?} after it started");
    // RESCAN (1 s), plus Python's start-up and the scan itself.
    assert!(took < Duration::from_secs(3), "{took:?}");
    let truth = client_done(d, &mut late, "late");
    let want: u64 = truth.values().sum();
    let m = counted(&sc, "client", want);
    assert_counts_eq(
        "HTTPS requests of the late process",
        &https(&m, "client"),
        &truth,
    );
    // It exited: its links are closed at the next scan.
    wait_for(
        "links of the exited process dropped",
        Duration::from_secs(5),
        || {
            let m = sc.scrape();
            (m.sum("ebpf_sidecar_http_tls_processes", &[("state", "attached")]) == 0.0)
                .then_some(())
        },
    );
}

#[test]
fn a_neighbour_on_the_same_libssl_adds_nothing_and_never_traps() {
    require_root();
    let dir = Scratch::new("https-neighbour");
    let d = dir.path();
    // The target: nginx on libssl.so.3.
    let cg = TestCgroup::new("https-neighbour");
    let (nginx, nginx_port) = start_nginx(d, &cg);
    let master = nginx.0.id().to_string();
    // The neighbours: a Python server and curl, outside the target, on the same libssl.
    let server = py_server(d);
    let before = tls_program_ids();
    let sc = Sidecar::start(&["--target-pid", &master, "--probes", "net", "--bpf-stats"]);
    let runs = Runs::of_sidecar_started_after(&before);
    wait_attached(&sc, 3, Duration::from_secs(5));
    let libssl = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains("libssl.so"))
            .map(|l| l.split_whitespace().nth(4).unwrap().to_string())
    };
    assert_eq!(
        libssl(server._p.0.id()),
        libssl(nginx.0.id()),
        "target and neighbour map the same libssl (inode)"
    );
    let m0 = sc.scrape();
    let runs0 = runs.total();

    // Neighbour-only phase: curl and the Python server, many requests.
    let neighbour_reqs: Vec<(&str, &str, usize)> = vec![
        ("GET", "/a", 0),
        ("POST", "/items", 2000),
        ("GET", "/big", 0),
        ("GET", "/missing", 0),
    ];
    for _ in 0..10 {
        curl(server.port, &neighbour_reqs);
    }
    std::thread::sleep(Duration::from_millis(300));
    let m1 = sc.scrape();
    let runs1 = runs.total();
    eprintln!("program runs before {runs0}, after the neighbours' 40 requests {runs1}");
    assert_eq!(
        runs1,
        runs0,
        "the neighbours ran none of the HTTPS programs: {:?}",
        runs.counts()
    );
    for name in [
        "ebpf_sidecar_http_requests_total",
        "ebpf_sidecar_http_request_duration_seconds_count",
        "ebpf_sidecar_http_untracked_streams_total",
    ] {
        assert_eq!(m1.sum(name, &[]), m0.sum(name, &[]), "{name}");
    }

    // Then the target: its calls do run them, and are counted.
    curl(
        nginx_port,
        &[("GET", "/index.html", 0), ("GET", "/missing", 0)],
    );
    let m2 = counted(&sc, "server", 2);
    let truth: Counts = [("GET 200".to_string(), 1), ("GET 404".to_string(), 1)].into();
    assert_counts_eq("nginx", &https(&m2, "server"), &truth);
    assert!(runs.total() > runs1, "the target's calls ran the programs");
}

#[test]
fn net_https_off_attaches_nothing() {
    require_root();
    let dir = Scratch::new("https-off");
    let d = dir.path();
    let cg = TestCgroup::new("https-off");
    let (nginx, port) = start_nginx(d, &cg);
    let master = nginx.0.id().to_string();
    let before = tls_program_ids();
    let sc = Sidecar::start(&[
        "--target-pid",
        &master,
        "--probes",
        "net",
        "--net-https",
        "off",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    curl(port, &[("GET", "/index.html", 0), ("GET", "/missing", 0)]);
    let m = sc.scrape();
    assert!(
        tls_program_ids().difference(&before).next().is_none(),
        "no HTTPS program loaded"
    );
    assert_eq!(m.sum("ebpf_sidecar_http_requests_total", &[]), 0.0);
    assert!(m.get("ebpf_sidecar_http_tls_processes", &[]).is_none());
    // Plain HTTP recognition is still there (its untracked counters are written).
    assert!(
        m.get("ebpf_sidecar_http_untracked_streams_total", &[])
            .is_some()
    );
}
