//! Opt-in sensitive probes of the security family: bash readline capture and TLS plaintext
//! counting with redacted samples. Exact ground truth: the lines typed, the bytes a TLS server
//! outside the target saw.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use integration::docker::{self, Container};
use integration::*;

fn events_of(lines: &[String], kind: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// An interactive bash (readline on a pty made by `script`) in `container`, fed `lines`.
fn type_into_bash(container: &str, lines: &[String]) {
    let mut c = Command::new("docker")
        .args([
            "exec",
            "-i",
            container,
            "script",
            "-qfc",
            "bash --norc -i",
            "/dev/null",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker CLI not found: apt-get install docker.io");
    let mut stdin = c.stdin.take().unwrap();
    // Let bash start and print its first prompt before typing.
    std::thread::sleep(Duration::from_millis(800));
    for l in lines {
        stdin.write_all(l.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = c.wait().unwrap();
    assert!(st.success(), "script/bash in {container} ended with {st}");
}

#[test]
fn bash_readline_captures_exactly_the_lines_typed_in_the_target() {
    require_root();
    docker::sidecar_image();
    // The main process is bash, so /bin/bash of this image is found and attached before the
    // interactive shell starts (a uretprobe added while readline already waits misses that line).
    let args = ["debian:bookworm-slim", "bash", "-c", "sleep 600; :"];
    let app = Container::run("ebpf-sidecar-sec-bash", &args);
    let other = Container::run("ebpf-sidecar-sec-bash-other", &args);
    let s = Sidecar::start(&[
        "--target-container",
        &app.0,
        "--probes",
        "security",
        "--capture-bash-readline",
    ]);
    wait_for("bash attached", Duration::from_secs(15), || {
        (s.scrape().sum(
            "ebpf_sidecar_security_uprobe_files",
            &[("probe", "bash_readline")],
        ) >= 1.0)
            .then_some(())
    });
    let long = format!("echo {}", "x".repeat(300));
    let typed: Vec<String> = vec![
        "echo first line".into(),
        "true # password=hunter2".into(),
        "".into(),
        long.clone(),
        "exit".into(),
    ];
    let lines = stream_lines(
        s.port,
        "/events?kind=bash_readline",
        Duration::from_secs(12),
        || {
            // Same image, same /bin/bash inode, same uprobe: only the filter keeps this out.
            type_into_bash(&other.0, &["echo not-the-target".into(), "exit".into()]);
            type_into_bash(&app.0, &typed);
        },
    );
    let ev = events_of(&lines, "bash_readline");
    let got: Vec<&str> = ev.iter().map(|v| v["line"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = typed.iter().map(String::as_str).collect();
    want[3] = &long[..255];
    assert_eq!(got, want, "{lines:#?}");
    assert_eq!(ev.len(), lines.len(), "only bash_readline events asked for");
    let truncated: Vec<bool> = ev.iter().map(|v| v["truncated"] == true).collect();
    assert_eq!(truncated, [false, false, false, true, false]);
    let pid = ev[0]["pid"].as_u64().unwrap();
    for v in &ev {
        assert_eq!(v["comm"], "bash");
        assert_eq!(v["uid"], 0);
        assert_eq!(v["pid"].as_u64(), Some(pid), "one interactive bash");
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
    }
    let m = s.scrape();
    assert_eq!(
        m.sum(
            "ebpf_sidecar_security_events_total",
            &[("kind", "bash_readline")]
        ),
        typed.len() as f64
    );
    assert_eq!(promtool_check(&m.text), "");
}

/// Two sidecars on the shared kernel side, each capturing bash in its own container of the same
/// image: one /bin/bash underneath (one inode, one uprobe site), hooked once for the set. Each
/// gets exactly its own lines, once: a second uprobe on the site would run the shared program
/// twice per line.
#[test]
fn two_sidecars_capturing_bash_of_one_image_each_get_their_own_lines_once() {
    require_root();
    docker::sidecar_image();
    let args = ["debian:bookworm-slim", "bash", "-c", "sleep 600; :"];
    let a = Container::run("ebpf-sidecar-sec-bash-two-a", &args);
    let b = Container::run("ebpf-sidecar-sec-bash-two-b", &args);
    let start = |c: &Container| {
        Sidecar::start(&[
            "--target-container",
            &c.0,
            "--kernel-side",
            "shared",
            "--probes",
            "security",
            "--capture-bash-readline",
        ])
    };
    let (sa, sb) = (start(&a), start(&b));
    for s in [&sa, &sb] {
        wait_for("bash attached", Duration::from_secs(15), || {
            (s.scrape().sum(
                "ebpf_sidecar_security_uprobe_files",
                &[("probe", "bash_readline")],
            ) >= 1.0)
                .then_some(())
        });
    }
    let typed_a: Vec<String> = vec!["echo in a".into(), "exit".into()];
    let typed_b: Vec<String> = vec!["echo in b".into(), "true b".into(), "exit".into()];
    let (got_a, got_b) = std::thread::scope(|sc| {
        let reader_b = sc.spawn(|| {
            stream_lines(
                sb.port,
                "/events?kind=bash_readline",
                Duration::from_secs(12),
                || {},
            )
        });
        let got_a = stream_lines(
            sa.port,
            "/events?kind=bash_readline",
            Duration::from_secs(10),
            || {
                // Let b's subscription start.
                std::thread::sleep(Duration::from_millis(500));
                type_into_bash(&a.0, &typed_a);
                type_into_bash(&b.0, &typed_b);
            },
        );
        (got_a, reader_b.join().unwrap())
    });
    for (s, lines, typed) in [(&sa, &got_a, &typed_a), (&sb, &got_b, &typed_b)] {
        let ev = events_of(lines, "bash_readline");
        let got: Vec<&str> = ev.iter().map(|v| v["line"].as_str().unwrap()).collect();
        let want: Vec<&str> = typed.iter().map(String::as_str).collect();
        assert_eq!(got, want, "{lines:#?}\n{}", s.log_text());
        assert_eq!(
            s.scrape().sum(
                "ebpf_sidecar_security_events_total",
                &[("kind", "bash_readline")]
            ),
            typed.len() as f64
        );
    }
}

const SERVER: &str = r#"
import socket, ssl, sys
port, R = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
ls = socket.socket()
ls.bind(("127.0.0.1", port))
ls.listen(8)
print("ready", flush=True)
while True:
    c, _ = ls.accept()
    s = ctx.wrap_socket(c, server_side=True)
    got = b""
    while b"\r\n\r\n" not in got:
        d = s.recv(65536)
        if not d:
            break
        got += d
    body = b"y" * R
    head = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=SECRET\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % R
    s.sendall(head + body)
    print(len(got), len(head) + len(body), flush=True)
    s.close()
"#;

/// Sends exactly B bytes (an HTTP request padded to B) and reads until the server closes.
const CLIENT: &str = r#"
import socket, ssl, sys
port, B = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)))
req = b"POST /users/42?token=SECRET HTTP/1.1\r\nAuthorization: Bearer SECRET\r\nX-Pad: "
req += b"p" * (B - len(req) - 4) + b"\r\n\r\n"
assert len(req) == B
s.sendall(req)
n = 0
while True:
    d = s.recv(65536)
    if not d:
        break
    n += len(d)
print("sent", len(req), "received", n, flush=True)
"#;

struct Server {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    port: u16,
}

impl Server {
    fn start(dir: &Path, response_body: usize) -> Self {
        integration::self_signed_cert(dir).unwrap();
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        std::fs::write(dir.join("client.py"), CLIENT).unwrap();
        let port = free_port();
        let mut child = Command::new("/usr/bin/python3")
            .arg(dir.join("server.py"))
            .args([port.to_string(), response_body.to_string()])
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3 not found: apt-get install python3");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), "ready");
        Self { child, out, port }
    }

    /// (request bytes, response bytes) of the next connection served.
    fn served(&mut self) -> (u64, u64) {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        let v: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
        (v[0], v[1])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ebpf-sidecar run` with `flags` around a shell line; returns (metrics, events).
fn run_monitored(flags: &[&str], dir: &Path, sh: &str) -> (Metrics, Vec<String>) {
    let (prom, events) = (dir.join("metrics.prom"), dir.join("events.ndjson"));
    let _ = std::fs::remove_file(&events);
    let st = Command::new(sidecar_bin())
        .args(["run", "--probes", "security", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(flags)
        .arg("--metrics-out")
        .arg(&prom)
        .arg("--events-out")
        .arg(&events)
        .args(["--", "/bin/sh", "-c", sh])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "monitored command failed: {st}");
    let text = std::fs::read_to_string(&prom).unwrap();
    let lines = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    (Metrics::parse(&text), lines)
}

#[test]
fn tls_plaintext_bytes_are_exact_and_samples_redacted() {
    require_root();
    for tool in ["curl", "openssl"] {
        assert!(
            Command::new("which")
                .arg(tool)
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} not found: apt-get install {tool}"
        );
    }
    let dir = std::env::temp_dir().join("ebpf-sidecar-sec-tls");
    std::fs::create_dir_all(&dir).unwrap();
    const B: u64 = 3000;
    const R: usize = 70_000; // several TLS records, several reads
    let mut server = Server::start(&dir, R);
    let port = server.port;

    // Python's ssl module calls SSL_write_ex/SSL_read_ex; curl calls SSL_write/SSL_read.
    let sh = format!(
        "/usr/bin/python3 client.py {port} {B} && \
         curl -sk --http1.1 -o /dev/null -H 'Authorization: Bearer SECRET' \
         'https://127.0.0.1:{port}/users/42?token=SECRET'"
    );
    let (m, lines) = run_monitored(&["--tls-samples"], &dir, &sh);
    let (py_req, py_resp) = server.served();
    let (curl_req, curl_resp) = server.served();
    assert_eq!(py_req, B);
    let bytes = |dir: &str, comm: &str| {
        m.sum(
            "ebpf_sidecar_tls_plaintext_bytes_total",
            &[("direction", dir), ("comm", comm)],
        ) as u64
    };
    assert_eq!(bytes("write", "python3"), B);
    assert_eq!(bytes("read", "python3"), py_resp);
    assert_eq!(bytes("write", "curl"), curl_req);
    assert_eq!(bytes("read", "curl"), curl_resp);
    // The server (outside the target) maps the same libssl: its bytes are not counted.
    assert_eq!(
        m.sum("ebpf_sidecar_tls_plaintext_bytes_total", &[]) as u64,
        B + py_resp + curl_req + curl_resp
    );
    assert_eq!(promtool_check(&m.text), "");

    let samples = events_of(&lines, "tls_sample");
    assert_eq!(
        m.sum(
            "ebpf_sidecar_security_events_total",
            &[("kind", "tls_sample")]
        ) as usize,
        samples.len()
    );
    assert!(samples.len() >= 4, "{lines:#?}");
    for v in &samples {
        assert_eq!(v["redacted"], true);
        assert!(v["sample_bytes"].as_u64().unwrap() <= 64);
        assert!(!v.to_string().contains("SECRET"), "{v}");
    }
    let first = |comm: &str, dir: &str| {
        samples
            .iter()
            .find(|v| v["comm"] == comm && v["direction"] == dir)
            .unwrap_or_else(|| panic!("no {dir} sample of {comm}: {samples:#?}"))
            .clone()
    };
    assert_eq!(first("python3", "write")["bytes"], B);
    assert_eq!(
        first("python3", "write")["sample"],
        "POST /users/:id HTTP/1.1\r\nAuthorization: …"
    );
    assert!(
        first("curl", "write")["sample"]
            .as_str()
            .unwrap()
            .starts_with("GET /users/:id HTTP/1.1\r\nHost: ***\r\n"),
        "{samples:#?}"
    );
    assert!(
        first("curl", "read")["sample"]
            .as_str()
            .unwrap()
            .starts_with("HTTP/1.1 200 OK\r\nSet-Cookie: ***\r\n"),
        "{samples:#?}"
    );

    // Counting only: no samples. Raw samples: only with the explicit flag.
    let (m, lines) = run_monitored(
        &["--tls-plaintext"],
        &dir,
        &format!("/usr/bin/python3 client.py {port} {B}"),
    );
    let (_, resp) = server.served();
    assert_eq!(
        m.sum("ebpf_sidecar_tls_plaintext_bytes_total", &[]) as u64,
        B + resp
    );
    assert!(events_of(&lines, "tls_sample").is_empty());
    let (_, lines) = run_monitored(
        &["--tls-samples-raw", "--tls-sample-bytes", "40"],
        &dir,
        &format!("/usr/bin/python3 client.py {port} {B}"),
    );
    server.served();
    let raw = events_of(&lines, "tls_sample");
    let w = raw.iter().find(|v| v["direction"] == "write").unwrap();
    assert_eq!(w["redacted"], false);
    assert_eq!(w["sample"], "POST /users/42?token=SECRET HTTP/1.1\r\nAu");
}

#[test]
fn sensitive_flags_need_the_security_family() {
    let out = Command::new(sidecar_bin())
        .args([
            "--probes",
            "process",
            "--tls-plaintext",
            "--target-pid",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("add security to --probes"));
}

/// Run counts of the programs named `names`, among the programs loaded since `before`.
fn runs_since(before: &std::collections::BTreeSet<u64>, names: &[&str]) -> u64 {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool: apt-get install bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            !before.contains(&p["id"].as_u64().unwrap_or(0))
                && names.contains(&p["name"].as_str().unwrap_or(""))
        })
        .map(|p| p["run_cnt"].as_u64().unwrap_or(0))
        .sum()
}

fn prog_ids() -> std::collections::BTreeSet<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool: apt-get install bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// Sidecar mode: the TLS uprobes are attached per target process. A client in the target counts
/// exactly; the server and a curl outside it, on the same libssl, count nothing and run none of
/// the programs.
#[test]
fn tls_plaintext_hooks_only_the_target_processes() {
    use integration::real::{Proc, TestCgroup};
    require_root();
    let dir = std::env::temp_dir().join("ebpf-sidecar-sec-tls-pp");
    std::fs::create_dir_all(&dir).unwrap();
    const B: u64 = 2000;
    const R: usize = 30_000;
    let mut server = Server::start(&dir, R);
    let port = server.port;
    // The client maps libssl (import ssl), then waits for the go file.
    let go = dir.join("go");
    let _ = std::fs::remove_file(&go);
    let wrapper = format!(
        "import ssl, os, sys, time, runpy\n\
         while not os.path.exists({go:?}): time.sleep(0.05)\n\
         sys.argv = ['client.py', '{port}', '{B}']\n\
         runpy.run_path({client:?})\n",
        go = go.display().to_string(),
        client = dir.join("client.py").display().to_string(),
    );
    let cg = TestCgroup::new("sec-tls-pp");
    let mut client = Proc(
        cg.spawn(
            Command::new("/usr/bin/python3")
                .args(["-c", &wrapper])
                .stdout(Stdio::null()),
        ),
    );
    let before = prog_ids();
    let pid = client.0.id().to_string();
    let sc = Sidecar::start(&[
        "--target-pid",
        &pid,
        "--probes",
        "security",
        "--tls-plaintext",
        "--bpf-stats",
    ]);
    wait_for(
        "libssl hooked in the client",
        Duration::from_secs(5),
        || {
            let m = sc.scrape();
            (m.sum("ebpf_sidecar_security_uprobe_files", &[("probe", "tls")]) >= 1.0).then_some(())
        },
    );
    let progs = ["security_ssl_enter", "security_ssl_exit"];
    let runs0 = runs_since(&before, &progs);

    // Neighbours only: curl to the server, both outside the target.
    for _ in 0..5 {
        let st = Command::new("curl")
            .args(["-sk", "--http1.1", "-o", "/dev/null"])
            .arg(format!("https://127.0.0.1:{port}/x"))
            .status()
            .unwrap();
        assert!(st.success());
        server.served();
    }
    let m = sc.scrape();
    assert_eq!(
        m.sum("ebpf_sidecar_tls_plaintext_bytes_total", &[]),
        0.0,
        "neighbours count nothing"
    );
    assert_eq!(
        runs_since(&before, &progs),
        runs0,
        "neighbours run none of the TLS programs"
    );

    // The target: exact bytes.
    std::fs::write(&go, "").unwrap();
    assert!(client.0.wait().unwrap().success());
    let (req, resp) = server.served();
    assert_eq!(req, B);
    let m = sc.scrape();
    assert_eq!(
        m.sum(
            "ebpf_sidecar_tls_plaintext_bytes_total",
            &[("direction", "write")]
        ) as u64,
        B
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_tls_plaintext_bytes_total",
            &[("direction", "read")]
        ) as u64,
        resp
    );
    assert!(runs_since(&before, &progs) > runs0);
}
