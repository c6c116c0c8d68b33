//! Network family, packet side: DNS counts by qtype and rcode, `/debug/pcap` read back by
//! tshark, connection events, and `--net-mode netns` (tc in a container's network namespace).
//! Workload: workloads/net_dns.c. Traffic stays on loopback or goes to a
//! container the test makes.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use integration::docker::{self, Container};
use integration::*;
use serde_json::Value;

/// The answer to query `q`: its question echoed, NXDOMAIN for names starting with "nx",
/// NOERROR otherwise; None (no answer) for names starting with "drop".
fn answer(q: &[u8]) -> Option<Vec<u8>> {
    let name = &q[13..13 + q[12] as usize];
    if name.starts_with(b"drop") {
        return None;
    }
    let rcode = if name.starts_with(b"nx") { 3 } else { 0 };
    let mut r = q[..2].to_vec();
    r.extend_from_slice(&[0x81, 0x80 | rcode]);
    r.extend_from_slice(&q[4..6]);
    r.extend_from_slice(&[0; 6]);
    r.extend_from_slice(&q[12..]);
    Some(r)
}

/// A DNS server on IP:53, UDP and TCP, answering with [`answer`].
struct DnsServer {
    ip: String,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    fn start() -> Self {
        // A 127/8 address of our own: port 53 on 127.0.0.1 may be someone's resolver.
        let pid = std::process::id();
        let ip = format!("127.53.{}.{}", (pid >> 8) & 0xff, (pid & 0xff).max(1));
        let sock = UdpSocket::bind((ip.as_str(), 53)).expect("binding the test DNS server");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s2.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(r) = answer(&buf[..n]) {
                    sock.send_to(&r, from).unwrap();
                }
            }
        });
        let tcp = std::net::TcpListener::bind((ip.as_str(), 53)).expect("binding DNS over TCP");
        tcp.set_nonblocking(true).unwrap();
        let s3 = stop.clone();
        let tcp_thread = std::thread::spawn(move || {
            use std::io::{Read, Write};
            while !s3.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                c.set_nonblocking(false).unwrap();
                let mut len = [0u8; 2];
                if c.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
                if c.read_exact(&mut q).is_err() {
                    continue;
                }
                if let Some(r) = answer(&q) {
                    let mut m = (r.len() as u16).to_be_bytes().to_vec();
                    m.extend_from_slice(&r);
                    let _ = c.write_all(&m);
                }
            }
        });
        Self {
            ip,
            stop,
            threads: vec![thread, tcp_thread],
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `ebpf-sidecar run --probes net [extra] -- net_dns args…`: final metrics and stdout.
fn run_dns_workload(tag: &str, extra: &[&str], args: &[&str]) -> (Metrics, String) {
    run_workload(&format!("net-pkt-{tag}"), "net", extra, "net_dns", args)
}

fn fact<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {stdout:?}"))
        .trim()
}

#[test]
fn dns_queries_and_answers_by_qtype_and_rcode_are_exact() {
    require_root();
    let dns = DnsServer::start();
    // Over UDP: 7 A (2 of them NXDOMAIN), 3 AAAA, 1 MX the server never answers.
    let mut specs: Vec<String> = (0..5).map(|i| format!("A:host{i}.test")).collect();
    specs.push("A:nx1.test".into());
    specs.push("A:nx2.test".into());
    specs.extend((0..3).map(|i| format!("AAAA:v6host{i}.example.org")));
    specs.push("MX:drop.test".into());
    // Over TCP: 2 TXT (one NXDOMAIN), 1 SRV.
    specs.push("tcp/TXT:txt.test".into());
    specs.push("tcp/TXT:nx3.test".into());
    specs.push("tcp/SRV:_sip._tcp.example.org".into());
    let mut args = vec!["query", dns.ip.as_str()];
    args.extend(specs.iter().map(String::as_str));
    let (m, out) = run_dns_workload("dns", &[], &args);
    assert_eq!(fact(&out, "answered"), "13", "{out}");

    let q = |t: &str| m.sum("ebpf_sidecar_dns_queries_total", &[("qtype", t)]);
    let r = |c: &str| m.sum("ebpf_sidecar_dns_responses_total", &[("rcode", c)]);
    assert_eq!(q("A"), 7.0);
    assert_eq!(q("AAAA"), 3.0);
    assert_eq!(q("MX"), 1.0);
    assert_eq!(q("TXT"), 2.0);
    assert_eq!(q("SRV"), 1.0);
    assert_eq!(m.sum("ebpf_sidecar_dns_queries_total", &[]), 14.0);
    assert_eq!(r("NOERROR"), 10.0);
    assert_eq!(r("NXDOMAIN"), 3.0);
    assert_eq!(m.sum("ebpf_sidecar_dns_responses_total", &[]), 13.0);
    assert_eq!(
        m.sum("ebpf_sidecar_dns_duration_seconds_count", &[]),
        13.0,
        "one latency per answered query"
    );
    let sum = m.sum("ebpf_sidecar_dns_duration_seconds_sum", &[]);
    assert!(sum > 0.0 && sum < 1.0, "latency sum {sum}");
}

#[test]
fn pcap_is_refused_without_allow_pcap() {
    require_root();
    let me = std::process::id().to_string();
    let s = Sidecar::start(&["--target-tree", &me, "--probes", "net"]);
    let (status, _, body) = http_get(s.port, "/debug/pcap?seconds=1", None).unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--allow-pcap"), "{body}");
}

#[test]
fn pcap_holds_exactly_the_targets_datagrams() {
    require_root();
    let version = Command::new("tshark").arg("--version").output();
    assert!(
        version.is_ok_and(|o| o.status.success()),
        "tshark is missing: apt-get install tshark (scripts/setup.sh installs it)"
    );
    let (n, size, snaplen) = (25usize, 300usize, 128usize);
    // The receiver is the test (outside the target): only the target's egress copies count.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("ebpf-sidecar-net-pcap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (go, file) = (dir.join("go"), dir.join("capture.pcap"));
    let listen = free_port();
    let mut sc = Command::new(sidecar_bin())
        .args(["run", "--probes", "net", "--allow-pcap", "--listen"])
        .arg(format!("127.0.0.1:{listen}"))
        .arg("--")
        .arg(workload("net_dns"))
        .args([
            "udpsend",
            &port.to_string(),
            &n.to_string(),
            &size.to_string(),
        ])
        .arg(&go)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("sidecar serving", Duration::from_secs(20), || {
        http_get(listen, "/healthz", None)
            .is_ok_and(|r| r.0 == 200)
            .then_some(())
    });
    let pcap = capture(listen, 2, snaplen, || {
        std::fs::write(&go, b"").unwrap();
        let mut buf = [0u8; 2048];
        sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for _ in 0..n {
            sink.recv(&mut buf).expect("datagram");
        }
    });
    std::fs::write(&file, &pcap).unwrap();
    assert!(sc.wait().unwrap().success());

    let lines = tshark(&file, &format!("udp.dstport=={port}"));
    assert_eq!(
        lines.len(),
        n,
        "packets to the test's port in the capture:\n{lines:#?}"
    );
    let want = format!("{}\t{snaplen}", 20 + 8 + size);
    assert!(lines.iter().all(|l| *l == want), "{lines:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /debug/pcap?seconds=..&snaplen=..` with our own HTTP/1.0 reader (close-delimited body):
/// it knows when the pcap file header arrived, which is when the kernel started copying (curl
/// buffers its output file). Runs `during` then, and returns the pcap file.
fn capture(listen: u16, seconds: u64, snaplen: usize, during: impl FnOnce()) -> Vec<u8> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || -> Vec<u8> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", listen)).unwrap();
        write!(
            s,
            "GET /debug/pcap?seconds={seconds}&snaplen={snaplen} HTTP/1.0\r\nHost: localhost\r\n\r\n"
        )
        .unwrap();
        let (mut raw, mut buf, mut told) = (Vec::new(), [0u8; 65536], false);
        loop {
            let k = s.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..k]);
            if let Some(h) = raw.windows(4).position(|w| w == b"\r\n\r\n")
                && raw.len() >= h + 4 + 24
                && !told
            {
                told = true;
                let _ = tx.send(());
            }
        }
        raw
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the capture did not start");
    during();
    let raw = reader.join().unwrap();
    let h = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..h]).to_string();
    assert!(head.contains(" 200 "), "{head}");
    assert!(!head.to_ascii_lowercase().contains("chunked"), "{head}");
    raw[h + 4..].to_vec()
}

/// `tshark -r file -Y filter`: "frame.len<TAB>frame.cap_len" per matching packet.
fn tshark(file: &std::path::Path, filter: &str) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", filter])
        .args(["-T", "fields", "-e", "frame.len", "-e", "frame.cap_len"])
        .output()
        .expect("tshark is missing: apt-get install tshark (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "tshark -r: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn connection_events_are_exact() {
    require_root();
    let (c, n) = (4usize, 30_000u64);
    let events: PathBuf = std::env::temp_dir().join(format!(
        "ebpf-sidecar-net-events-{}.ndjson",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&events);
    let ev = events.to_string_lossy().to_string();
    let (m, out) = run_dns_workload(
        "events",
        &["--net-events", "--events-out", &ev],
        &["conns", &c.to_string(), &n.to_string()],
    );
    let port: u64 = fact(&out, "port").parse().unwrap();
    let clients: Vec<u64> = fact(&out, "client_ports")
        .split(',')
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(clients.len(), c);
    let all: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |k: &str| -> Vec<&Value> { all.iter().filter(|e| e["kind"] == k).collect() };
    let u = |v: &Value| v.as_u64().unwrap();
    let (connects, accepts, closes) = (of("tcp_connect"), of("tcp_accept"), of("tcp_close"));
    assert_eq!(connects.len(), c, "{all:#?}");
    assert_eq!(accepts.len(), c, "{all:#?}");
    assert_eq!(closes.len(), 2 * c, "both ends close: {all:#?}");
    for e in &connects {
        assert_eq!(u(&e["remote_port"]), port);
        assert!(clients.contains(&u(&e["local_port"])), "{e}");
        assert_eq!(e["comm"], "net_dns");
        assert!(u(&e["pid"]) > 0);
    }
    for e in &accepts {
        assert_eq!(u(&e["local_port"]), port);
        assert!(clients.contains(&u(&e["remote_port"])), "{e}");
        assert_eq!(e["comm"], "net_dns");
    }
    // The accepting process is the forked server, not the connecting client.
    assert_ne!(accepts[0]["pid"], connects[0]["pid"]);
    for e in &closes {
        let (lp, rp) = (u(&e["local_port"]), u(&e["remote_port"]));
        if lp == port {
            assert!(clients.contains(&rp), "{e}");
            assert_eq!((u(&e["sent_bytes"]), u(&e["received_bytes"])), (n / 2, n));
        } else {
            assert!(clients.contains(&lp) && rp == port, "{e}");
            assert_eq!((u(&e["sent_bytes"]), u(&e["received_bytes"])), (n, n / 2));
        }
        assert!(e["duration_seconds"].as_f64().unwrap() > 0.0);
        assert_eq!(e["comm"], "net_dns");
    }
    assert_eq!(
        m.sum("ebpf_sidecar_events_lost_total", &[("probe", "net")]),
        0.0
    );
    let _ = std::fs::remove_file(&events);
}

/// The sidecar on the host in `--net-mode netns` for the container `name`.
fn netns_sidecar(name: &str, extra: &[&str]) -> Sidecar {
    let mut args = vec![
        "--target-container",
        name,
        "--probes",
        "net",
        "--net-mode",
        "netns",
    ];
    args.extend_from_slice(extra);
    Sidecar::start(&args)
}

/// UDP echo server as a container's PID 1, in its own network namespace (docker0 veth).
fn echo_container(name: &str, port: u16) -> Container {
    let w = workload("net_dns");
    let mount = format!("{}:/net_dns:ro", w.display());
    let c = Container::run(
        name,
        &[
            "-v",
            &mount,
            "debian:bookworm-slim",
            "/net_dns",
            "udpecho",
            &port.to_string(),
        ],
    );
    wait_for("echo server ready", Duration::from_secs(20), || {
        c.logs().contains("ready").then_some(())
    });
    c
}

/// Send `n` datagrams of `size` bytes to the container and wait for each echo.
fn echo(c: &Container, port: u16, n: usize, size: usize) {
    let ip = docker::ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &c.0]);
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        s.send_to(&vec![b'e'; size], (ip.as_str(), port)).unwrap();
        s.recv(&mut buf).expect("echo from the container");
    }
}

#[test]
fn netns_mode_counts_the_containers_namespace_and_follows_a_restart() {
    require_root();
    // dockerd up and the base image present (scripts/images.sh makes it); no sidecar image
    // needed: the sidecar runs on the host and enters the container's namespace.
    docker::ok(&["image", "inspect", "-f", "{{.Id}}", "debian:bookworm-slim"]);
    let (port, n, size) = (9053u16, 7usize, 100usize);
    let name = "ebpf-sidecar-net-netns";
    let app = echo_container(name, port);
    let sc = netns_sidecar(name, &["--resolve-interval", "0.2"]);
    let udp = |m: &Metrics, dir: &str, metric: &str| {
        m.sum(
            metric,
            &[("direction", dir), ("family", "ipv4"), ("protocol", "udp")],
        )
    };
    echo(&app, port, n, size);
    let m = sc.scrape();
    // Each datagram enters the namespace once (eth0 ingress) and its echo leaves once.
    let bytes = (n * (20 + 8 + size)) as f64;
    assert_eq!(
        udp(&m, "ingress", "ebpf_sidecar_network_packets_total"),
        n as f64
    );
    assert_eq!(
        udp(&m, "egress", "ebpf_sidecar_network_packets_total"),
        n as f64
    );
    assert_eq!(
        udp(&m, "ingress", "ebpf_sidecar_network_bytes_total"),
        bytes
    );
    assert_eq!(udp(&m, "egress", "ebpf_sidecar_network_bytes_total"), bytes);
    let log = sc.log_text();
    assert!(log.contains("\"lo,eth0\""), "{log}");

    // A restarted container has a new network namespace: the sidecar attaches there again.
    let t0 = Instant::now();
    docker::ok(&["restart", "-t", "1", name]);
    wait_for(
        "re-attached in the new namespace",
        Duration::from_secs(20),
        || {
            (sc.log_text()
                .matches("attached in the target's network namespace")
                .count()
                >= 2)
                .then_some(())
        },
    );
    wait_for("echo server ready again", Duration::from_secs(20), || {
        (app.logs().matches("ready").count() >= 2).then_some(())
    });
    echo(&app, port, n, size);
    let m = sc.scrape();
    assert_eq!(
        udp(&m, "ingress", "ebpf_sidecar_network_packets_total"),
        2.0 * n as f64,
        "after restart ({:?})",
        t0.elapsed()
    );
    assert_eq!(
        udp(&m, "egress", "ebpf_sidecar_network_bytes_total"),
        2.0 * bytes
    );
    drop(sc);
    drop(app);
}

#[test]
fn netns_mode_capture_is_ethernet_and_holds_both_directions() {
    require_root();
    docker::ok(&["image", "inspect", "-f", "{{.Id}}", "debian:bookworm-slim"]);
    let (port, n, size, snaplen) = (9054u16, 6usize, 300usize, 96usize);
    let name = "ebpf-sidecar-net-netns-pcap";
    let app = echo_container(name, port);
    let sc = netns_sidecar(name, &["--allow-pcap"]);
    let pcap = capture(sc.port, 2, snaplen, || echo(&app, port, n, size));
    assert_eq!(
        u32::from_le_bytes(pcap[20..24].try_into().unwrap()),
        1,
        "LINKTYPE_ETHERNET"
    );
    let file = std::env::temp_dir().join(format!("ebpf-sidecar-net-netns-{}.pcap", sc.port));
    std::fs::write(&file, &pcap).unwrap();
    let want = format!("{}\t{snaplen}", 14 + 20 + 8 + size);
    for filter in [
        format!("udp.dstport=={port}"),
        format!("udp.srcport=={port}"),
    ] {
        let lines = tshark(&file, &filter);
        assert_eq!(lines.len(), n, "{filter}: {lines:#?}");
        assert!(lines.iter().all(|l| *l == want), "{lines:#?}");
    }
    let _ = std::fs::remove_file(&file);
}

/// The documented difference between the modes, on one exchange: a second container sharing the
/// target's network namespace (`--network container:…`, like a pod) sends N datagrams to the
/// target on loopback and gets each echoed. cgroup mode sees the target's socket only (N in, N
/// out); netns mode sees every crossing of `lo` in the namespace (each datagram and each echo
/// leaves and enters once: 2N each way).
#[test]
fn netns_mode_sees_the_whole_namespace_cgroup_mode_only_the_target() {
    require_root();
    docker::ok(&["image", "inspect", "-f", "{{.Id}}", "debian:bookworm-slim"]);
    let (port, n, size) = (9055u16, 8usize, 64usize);
    let name = "ebpf-sidecar-net-modes";
    let app = echo_container(name, port);
    let common = ["--target-container", name, "--probes", "net"];
    let cgroup_mode = Sidecar::start(&common);
    let mut netns_args = common.to_vec();
    netns_args.extend(["--net-mode", "netns"]);
    let netns_mode = Sidecar::start(&netns_args);

    let w = workload("net_dns");
    let mount = format!("{}:/net_dns:ro", w.display());
    let net = format!("container:{name}");
    let out = docker::ok(&[
        "run",
        "--rm",
        "--name",
        "ebpf-sidecar-net-modes-peer",
        "--network",
        &net,
        "-v",
        &mount,
        "debian:bookworm-slim",
        "/net_dns",
        "udpsend",
        &port.to_string(),
        &n.to_string(),
        &size.to_string(),
        "/",
    ]);
    assert!(out.contains(&format!("sent={n}")), "{out}");
    let udp = |m: &Metrics, dir: &str| {
        m.sum(
            "ebpf_sidecar_network_packets_total",
            &[("direction", dir), ("family", "ipv4"), ("protocol", "udp")],
        )
    };
    let (c, s) = (cgroup_mode.scrape(), netns_mode.scrape());
    assert_eq!(
        (udp(&c, "ingress"), udp(&c, "egress")),
        (n as f64, n as f64)
    );
    assert_eq!(
        (udp(&s, "ingress"), udp(&s, "egress")),
        (2.0 * n as f64, 2.0 * n as f64)
    );
    drop(app);
}

/// `ip` on the host, or in the network namespace of `pid` (nsenter runs the host's `ip` there,
/// so the container needs no iproute2); must succeed.
fn ip(pid: Option<u32>, args: &[&str]) {
    let ns = pid.map(|p| format!("--net=/proc/{p}/ns/net"));
    let out = match &ns {
        Some(ns) => Command::new("nsenter")
            .arg(ns)
            .arg("ip")
            .args(args)
            .output(),
        None => Command::new("ip").args(args).output(),
    }
    .expect("ip (iproute2) and nsenter (util-linux)");
    assert!(
        out.status.success(),
        "ip {args:?} in {pid:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// TCX links the process `pid` holds (each is a bpf_link fd whose fdinfo says so).
fn tcx_links(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|info| info.contains("link_type:\ttcx"))
        .count()
}

/// Deletes the host end of the test's veth pair (and with it the pair) however the test ends.
struct Veth(&'static str);

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// Interfaces that appear in the target's namespace after the attach are followed: a veth pair
/// made by the test with one end in the container (10.231.77.0/30, private to the test) is
/// covered as soon as it appears, N echoed datagrams over it are counted exactly, and the
/// interface leaving the namespace (moved out, then deleted) takes its links with it while the
/// remaining interfaces keep counting.
#[test]
fn netns_mode_follows_interfaces_added_and_removed() {
    require_root();
    docker::ok(&["image", "inspect", "-f", "{{.Id}}", "debian:bookworm-slim"]);
    let (port, n, size) = (9056u16, 9usize, 200usize);
    // Interface names are at most 15 bytes: the family prefix is shortened to ebpfsc-ns.
    let (host_end, app_end) = ("ebpfsc-ns0h", "ebpfsc-ns0c");
    let (host_ip, app_ip) = ("10.231.77.1", "10.231.77.2");
    let name = "ebpf-sidecar-netns-follow";
    let _ = Command::new("ip")
        .args(["link", "del", host_end])
        .stderr(Stdio::null())
        .status();
    let app = echo_container(name, port);
    let pid = app.host_pid();
    let sc = netns_sidecar(name, &[]);
    let gauge = |m: &Metrics| m.get("ebpf_sidecar_net_tc_interfaces", &[]);
    let wait_gauge = |want: f64| {
        wait_for(
            &format!("ebpf_sidecar_net_tc_interfaces == {want}"),
            Duration::from_secs(10),
            || (gauge(&sc.scrape()) == Some(want)).then_some(()),
        )
    };
    wait_gauge(2.0); // lo, eth0
    assert_eq!(tcx_links(sc.pid()), 4, "ingress + egress on lo and eth0");
    let udp = |m: &Metrics, dir: &str, metric: &str| {
        m.sum(
            metric,
            &[("direction", dir), ("family", "ipv4"), ("protocol", "udp")],
        )
    };
    let counts = |m: &Metrics| {
        [
            udp(m, "ingress", "ebpf_sidecar_network_packets_total"),
            udp(m, "egress", "ebpf_sidecar_network_packets_total"),
            udp(m, "ingress", "ebpf_sidecar_network_bytes_total"),
            udp(m, "egress", "ebpf_sidecar_network_bytes_total"),
        ]
    };

    // A veth pair made after the attach, one end created right in the container's namespace.
    let _veth = Veth(host_end);
    let netns = pid.to_string();
    ip(
        None,
        &[
            "link", "add", host_end, "type", "veth", "peer", "name", app_end, "netns", &netns,
        ],
    );
    ip(
        None,
        &["addr", "add", &format!("{host_ip}/30"), "dev", host_end],
    );
    ip(None, &["link", "set", host_end, "up"]);
    ip(
        Some(pid),
        &["addr", "add", &format!("{app_ip}/30"), "dev", app_end],
    );
    ip(Some(pid), &["link", "set", app_end, "up"]);
    wait_gauge(3.0);
    assert_eq!(tcx_links(sc.pid()), 6);
    assert!(sc.log_text().contains(app_end), "{}", sc.log_text());

    let before = counts(&sc.scrape());
    let s = UdpSocket::bind((host_ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..n {
        s.send_to(&vec![b'v'; size], (app_ip, port)).unwrap();
        let got = s.recv(&mut buf).expect("echo over the new veth");
        assert_eq!(got, size);
    }
    let after = counts(&sc.scrape());
    // Each datagram enters the namespace once (the new veth's ingress) and its echo leaves once
    // (its egress); bytes at the IP layer: 20 (IPv4) + 8 (UDP) + payload.
    let bytes = (n * (20 + 8 + size)) as f64;
    let delta: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(delta, [n as f64, n as f64, bytes, bytes], "{after:?}");

    // Moved out of the namespace (back to the test's own): forgotten, its links closed.
    let me = std::process::id().to_string();
    ip(Some(pid), &["link", "set", app_end, "netns", &me]);
    wait_gauge(2.0);
    assert_eq!(
        tcx_links(sc.pid()),
        4,
        "no link left on the moved interface"
    );
    // A second interface added and deleted: followed both ways.
    ip(
        None,
        &[
            "link",
            "add",
            "ebpfsc-ns1h",
            "type",
            "veth",
            "peer",
            "name",
            "ebpfsc-ns1c",
            "netns",
            &netns,
        ],
    );
    wait_gauge(3.0);
    ip(None, &["link", "del", "ebpfsc-ns1h"]);
    wait_gauge(2.0);
    assert_eq!(tcx_links(sc.pid()), 4);

    // The sidecar keeps serving, and the remaining interfaces keep counting (eth0 here).
    let before = counts(&sc.scrape());
    echo(&app, port, n, size);
    let after = counts(&sc.scrape());
    let delta: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(delta, [n as f64, n as f64, bytes, bytes], "{after:?}");
    let log = sc.log_text();
    assert!(
        !log.contains("ERROR") && !log.contains("WARN"),
        "no error or warning while following interfaces:\n{log}"
    );
    drop(sc);
    drop(app);
}

/// --net-mode netns without CAP_SYS_ADMIN (kept: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): the start
/// fails and names the missing capability and what it is for.
#[test]
fn netns_mode_names_the_missing_capability() {
    require_root();
    let me = std::process::id().to_string();
    let listen = format!("127.0.0.1:{}", free_port());
    let out = Command::new("setpriv")
        .args(["--inh-caps=-sys_admin", "--bounding-set=-sys_admin"])
        .arg(sidecar_bin())
        .args([
            "--target-tree",
            &me,
            "--probes",
            "net",
            "--net-mode",
            "netns",
        ])
        .args(["--listen", &listen])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--net-mode netns needs CAP_SYS_ADMIN") && stderr.contains("setns"),
        "{stderr}"
    );
    assert!(!stderr.contains("CAP_NET_ADMIN (to attach"), "{stderr}");

    // run starts CMD in this network namespace: netns mode would count the whole host's traffic.
    let out = Command::new(sidecar_bin())
        .args([
            "run",
            "--probes",
            "net",
            "--net-mode",
            "netns",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--net-mode netns watches a container's or pod's own network namespace")
            && stderr.contains("default --net-mode cgroup"),
        "{stderr}"
    );
}

/// The same events from a container target, read live from `/events?kind=tcp_accept`: exactly
/// the accepts, none of the other kinds.
#[test]
fn connection_events_stream_filters_by_kind() {
    require_root();
    docker::ok(&["image", "inspect", "-f", "{{.Id}}", "debian:bookworm-slim"]);
    let c = 3;
    let name = "ebpf-sidecar-net-events";
    let w = workload("net_dns");
    let mount = format!("{}:/net_dns:ro", w.display());
    let app = Container::run(
        name,
        &[
            "-v",
            &mount,
            "debian:bookworm-slim",
            "sh",
            "-c",
            "while [ ! -e /tmp/go ]; do sleep 0.1; done; /net_dns conns 3 1000; sleep 600",
        ],
    );
    let sc = Sidecar::start(&[
        "--target-container",
        name,
        "--probes",
        "net",
        "--net-events",
    ]);
    let lines = stream_lines(
        sc.port,
        "/events?kind=tcp_accept",
        Duration::from_secs(6),
        || {
            docker::ok(&["exec", name, "touch", "/tmp/go"]);
        },
    );
    let events: Vec<Value> = lines
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), c, "{lines:#?}");
    assert!(
        events
            .iter()
            .all(|e| e["kind"] == "tcp_accept" && e["comm"] == "net_dns")
    );
    drop(app);
}

/// Two sidecars in --net-mode netns on one shared kernel side, for two containers sharing one
/// network namespace (a pod's): each loads its own classifiers, which carry its slot, attached
/// to the same interfaces. Both see every packet of the namespace (a classifier passes the packet
/// on to the next program, not out of the chain), each in its own counters.
#[test]
fn netns_mode_two_sidecars_on_one_namespace_each_count_all_of_it() {
    require_root();
    let (port, n, size) = (9056u16, 6usize, 100usize);
    let app = echo_container("ebpf-sidecar-net-pod-a", port);
    let _peer = Container::run(
        "ebpf-sidecar-net-pod-b",
        &[
            "--network",
            "container:ebpf-sidecar-net-pod-a",
            "debian:bookworm-slim",
            "sleep",
            "600",
        ],
    );
    let a = netns_sidecar("ebpf-sidecar-net-pod-a", &["--kernel-side", "shared"]);
    let b = netns_sidecar("ebpf-sidecar-net-pod-b", &["--kernel-side", "shared"]);
    echo(&app, port, n, size);
    let udp = |m: &Metrics, dir: &str, what: &str| {
        m.sum(
            &format!("ebpf_sidecar_network_{what}_total"),
            &[("direction", dir), ("family", "ipv4"), ("protocol", "udp")],
        )
    };
    // Ethernet frames cross eth0: IP length = payload + UDP + IPv4 headers.
    let bytes = (n * (size + 8 + 20)) as f64;
    for (who, s) in [("a", &a), ("b", &b)] {
        let m = s.scrape();
        assert_eq!(
            [
                udp(&m, "ingress", "packets"),
                udp(&m, "egress", "packets"),
                udp(&m, "ingress", "bytes"),
                udp(&m, "egress", "bytes"),
            ],
            [n as f64, n as f64, bytes, bytes],
            "{who}"
        );
    }
}
