//! Issue 20, HTTPS: what following HTTP inside TLS costs a Node 20 `https` server per request.
//! Node (OpenSSL linked into the binary) pinned to CPU 0 in a cgroup of its own, wrk over HTTPS
//! with keep-alive on CPU 1 (wrk maps the system's libssl: a neighbour, which per-process attach
//! must leave alone). Arms, interleaved, median of R rounds: no sidecar; `--probes net
//! --net-http off` (the packet programs, no HTTP); `--probes net` (default: HTTP from packets,
//! which sees only TLS records, plus the HTTPS uprobes). The figure is node's CPU time per request
//! (utime + stime from /proc: the uprobe traps and the programs run in its context). A last run
//! of the HTTPS arm with `--bpf-stats` gives the programs' own time per request.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use integration::real::{Proc, TestCgroup};

use crate::util::*;

const SERVER: &str = r#"
const https = require('https'), fs = require('fs');
const [port, dir] = [Number(process.argv[2]), process.argv[3]];
https.createServer({
  key: fs.readFileSync(dir + '/key.pem'), cert: fs.readFileSync(dir + '/cert.pem'),
}, (req, res) => {
  res.writeHead(200, {'content-type': 'application/json'});
  res.end('{"ok":true}');
}).listen(port, '127.0.0.1', () => console.log('ready'));
"#;

/// nginx with TLS, one worker (libssl.so.3 of the system).
fn nginx_conf(d: &std::path::Path, port: u16) -> String {
    format!(
        r#"daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        location = /fast {{ default_type application/json; return 200 '{{"ok":true}}'; }}
    }}
}}
"#,
        d = d.display()
    )
}

#[derive(Clone, Copy, PartialEq)]
enum Server {
    Node,
    Nginx,
}

#[derive(Clone, Copy, PartialEq)]
enum Arm {
    Alone,
    HttpOff,
    Https,
    /// HTTPS under the default CPU budget (1%), whose HTTP step detaches the uprobes.
    HttpsBudget,
    /// The traps alone: bpftrace counting calls with a uprobe and a uretprobe on the same four
    /// functions (only node maps its binary, so these trap in node only, as ours do).
    Bpftrace,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Alone => "no sidecar",
            Arm::HttpOff => "`--probes net --net-http off --cpu-budget 0`",
            Arm::Https => "`--probes net --cpu-budget 0` (HTTPS on, per-process uprobes)",
            Arm::HttpsBudget => "`--probes net` (default `--cpu-budget 1`)",
            Arm::Bpftrace => {
                "bpftrace: `@ = count()` on uprobe + uretprobe of the same four SSL_* in node"
            }
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Arm::Alone => &[],
            // Budget 0: the feature's cost as asked, not what the governor leaves of it.
            Arm::HttpOff => &["--probes", "net", "--net-http", "off", "--cpu-budget", "0"],
            Arm::Https => &["--probes", "net", "--cpu-budget", "0"],
            Arm::HttpsBudget => &["--probes", "net"],
            Arm::Bpftrace => &[],
        }
    }
}

const ARMS: [Arm; 5] = [
    Arm::Alone,
    Arm::HttpOff,
    Arm::Https,
    Arm::HttpsBudget,
    Arm::Bpftrace,
];

struct Round {
    rps: f64,
    cpu_us: f64,
    /// --bpf-stats run only: (program, ns per request, runs per request).
    progs: Vec<(String, f64, f64)>,
}

/// A sidecar stopped with SIGTERM on drop (its kernel side is cleaned up on the way out).
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signalling the process this bench started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn scrape(port: u16) -> Result<String> {
    let (_, _, body) = http_get(port, "/metrics", None)?;
    Ok(body)
}

fn round(
    server: Server,
    arm: Arm,
    dir: &std::path::Path,
    seconds: u64,
    bpf_stats: bool,
) -> Result<Round> {
    let cg = TestCgroup::new("bench-https");
    let port = free_port();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]);
    match server {
        Server::Node => {
            cmd.arg("node")
                .arg(dir.join("server.js"))
                .arg(port.to_string())
                .arg(dir);
        }
        Server::Nginx => {
            std::fs::write(dir.join("nginx.conf"), nginx_conf(dir, port))?;
            cmd.arg("/usr/sbin/nginx")
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .arg("-p")
                .arg(dir);
        }
    }
    let node = Proc(cg.spawn(cmd.stdout(Stdio::null()).stderr(Stdio::null())));
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("the server did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = node.0.id();
    let metrics_port = free_port();
    let _bpftrace = (arm == Arm::Bpftrace).then(|| {
        let probes: Vec<String> = ["SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"]
            .iter()
            .flat_map(|f| {
                [
                    format!("uprobe:/usr/bin/node:{f}"),
                    format!("uretprobe:/usr/bin/node:{f}"),
                ]
            })
            .collect();
        integration::Bpftrace::start(
            "bench-https",
            &format!("{} {{ @ = count(); }}", probes.join(",")),
        )
    });
    let sidecar = if matches!(arm, Arm::Alone | Arm::Bpftrace) {
        None
    } else {
        let mut c = Command::new(sidecar_release_bin());
        c.args(["--listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--target-pid", &pid.to_string()])
            .args(arm.args());
        if bpf_stats {
            c.arg("--bpf-stats");
        }
        let child = c.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        let sc = Stopped(child);
        let t0 = Instant::now();
        loop {
            let ready = scrape(metrics_port).ok().is_some_and(|m| {
                let want = if server == Server::Nginx { 2.0 } else { 1.0 };
                !matches!(arm, Arm::Https | Arm::HttpsBudget)
                    || metric_value(&m, "ebpf_sidecar_http_tls_processes{state=\"attached\"}")
                        >= want
            });
            if ready {
                break;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("the sidecar did not attach");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(sc)
    };
    let url = format!("https://127.0.0.1:{port}/fast");
    let wrk = |secs: u64| {
        Command::new("taskset")
            .args(["-c", "1", "wrk", "-t1", "-c8"])
            .arg(format!("-d{secs}s"))
            .arg(&url)
            .output()
            .context("wrk not found: apt-get install wrk")
    };
    if !wrk(2)?.status.success() {
        bail!("wrk failed");
    }
    let before = if bpf_stats {
        scrape(metrics_port)?
    } else {
        String::new()
    };
    // Every process of the server (nginx: master and worker), the traps included.
    let cpu0 = cg.cpu_stat("usage_usec") as f64 / 1e6;
    let out = wrk(seconds)?;
    let cpu1 = cg.cpu_stat("usage_usec") as f64 / 1e6;
    let (rps, reqs) = wrk_result(&out.stdout)?;
    let mut progs = Vec::new();
    if bpf_stats {
        let after = scrape(metrics_port)?;
        let b = prog_costs(&before);
        for a in prog_costs(&after) {
            let p = b.iter().find(|p| p.program == a.program);
            let (s, n) = (
                a.seconds - p.map_or(0.0, |p| p.seconds),
                a.runs - p.map_or(0.0, |p| p.runs),
            );
            if n > 0.0 {
                progs.push((a.program, s * 1e9 / reqs.max(1.0), n / reqs.max(1.0)));
            }
        }
    }
    drop(sidecar);
    drop(node);
    Ok(Round {
        rps,
        cpu_us: (cpu1 - cpu0) * 1e6 / reqs.max(1.0),
        progs,
    })
}

/// One server's table; returns the median CPU µs per request of each arm present, in ARMS order.
fn table(o: &mut String, title: &str, all: &[(Arm, Round)]) -> Result<Vec<f64>> {
    writeln!(o, "{title}:\n")?;
    writeln!(
        o,
        "| | requests/s | CPU µs per request | added vs no sidecar | rounds (µs) |"
    )?;
    writeln!(o, "|---|---:|---:|---:|---|")?;
    let mut cpu = Vec::new();
    for arm in ARMS {
        let mine: Vec<&Round> = all
            .iter()
            .filter(|(a, _)| *a == arm)
            .map(|(_, r)| r)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let rps = median(&mut mine.iter().map(|r| r.rps).collect::<Vec<_>>());
        let c = median(&mut mine.iter().map(|r| r.cpu_us).collect::<Vec<_>>());
        let each: Vec<String> = mine.iter().map(|r| format!("{:.2}", r.cpu_us)).collect();
        cpu.push(c);
        writeln!(
            o,
            "| {} | {rps:.0} | {c:.2} | {:+.2} µs | {} |",
            arm.name(),
            c - cpu[0],
            each.join(", ")
        )?;
    }
    writeln!(o)?;
    Ok(cpu)
}

pub fn run(seconds: u64, rounds: usize) -> Result<String> {
    let dir = std::env::temp_dir().join("ebpf-sidecar-bench-https");
    std::fs::create_dir_all(&dir)?;
    integration::self_signed_cert(&dir).map_err(anyhow::Error::msg)?;
    std::fs::write(dir.join("server.js"), SERVER)?;

    let mut all: Vec<(Arm, Round)> = Vec::new();
    let mut nginx: Vec<(Arm, Round)> = Vec::new();
    for _ in 0..rounds {
        for arm in ARMS {
            all.push((arm, round(Server::Node, arm, &dir, seconds, false)?));
            if arm != Arm::Bpftrace {
                nginx.push((arm, round(Server::Nginx, arm, &dir, seconds, false)?));
            }
        }
    }
    let stats = round(Server::Node, Arm::Https, &dir, seconds, true)?;
    let nginx_stats = round(Server::Nginx, Arm::Https, &dir, seconds, true)?;

    let mut o = String::new();
    writeln!(
        o,
        "## HTTPS: a server's CPU per request with the HTTPS probe\n\n\
         The server on CPU 0 in a cgroup of its own (CPU from its cpu.stat: every process, the \
         traps included), `wrk -t1 -c8 -d{seconds}s` over HTTPS (keep-alive) on CPU 1, an 11-byte \
         JSON answer; the sidecar with `--target-pid`; arms interleaved, median of {rounds} \
         rounds. wrk maps the system's libssl.so.3: a neighbour, which per-process attach leaves \
         alone.\n"
    )?;
    let node = table(&mut o, "Node 20 `https` (OpenSSL linked into node)", &all)?;
    let ngx = table(
        &mut o,
        "nginx 1.22, one worker (the system's libssl.so.3)",
        &nginx,
    )?;
    writeln!(
        o,
        "HTTPS alone (HTTPS arm − `--net-http off` arm), node CPU per request: {:+.2} µs (target \
         ≤ 2 µs {}); the traps alone (bpftrace's near-empty programs on the same sites): {:+.2} µs. \
         nginx: {:+.2} µs.\n",
        node[2] - node[1],
        if node[2] - node[1] <= 2.0 {
            "✔"
        } else {
            "✘"
        },
        node[4] - node[0],
        ngx[2] - ngx[1],
    )?;
    for (what, st) in [("node", &stats), ("nginx", &nginx_stats)] {
        writeln!(
            o,
            "Programs' own time, {what}, HTTPS arm (`--bpf-stats`, one more round; bpf_stats adds \
             its own clock reads): {:.0} requests/s, {:.2} µs of CPU per request\n",
            st.rps, st.cpu_us
        )?;
        writeln!(o, "| program | ns per request | runs per request |")?;
        writeln!(o, "|---|---:|---:|")?;
        for (p, ns, runs) in &st.progs {
            writeln!(o, "| `{p}` | {ns:.0} | {runs:.2} |")?;
        }
        writeln!(o)?;
    }
    Ok(o)
}
