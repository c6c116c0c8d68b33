//! fio, stress-ng and dnsmasq: block bytes and requests equal to fio's JSON, CPU, forks and
//! switches equal to the cgroup's `cpu.stat` and rusage, DNS by type and rcode equal to a tshark
//! capture.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::real::*;
use integration::*;

// ---------------------------------------------------------------------------------------------
// fio

#[test]
fn fio_direct_io_block_bytes_and_requests_equal_its_json() {
    require_root();
    let fio = need("fio", "fio");
    let t0 = Instant::now();
    let dir = Scratch::new("fio");
    let file = dir.path().join("data");
    let job = |extra: &[&str]| {
        let mut c = Command::new(&fio);
        c.args(["--name=real", "--size=32M", "--bs=64k", "--rw=randrw"])
            .args(["--rwmixread=50", "--direct=1", "--ioengine=psync"])
            .args(["--randrepeat=0", "--fsync=0", "--end_fsync=0"])
            .arg(format!("--filename={}", file.display()))
            .args(extra);
        c
    };
    // Lay the file out (written, not fallocated: reads must reach the disk) outside the target,
    // synced, and fio's own binary and libraries paged in.
    let st = job(&["--create_only=1"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(Command::new("sync").status().unwrap().success());
    let json = dir.path().join("fio.json");
    let prom = dir.path().join("final.prom");
    // What fio reads besides its data must come from the page cache, or its block reads (a
    // cold library page) count too: its binary and libraries read in full now. After a suite
    // that churned the cache (image builds, benches) 40 such reads were seen. (Not the output
    // file: made now and truncated by fio, ext4 would flush it at fio's close, in its context.)
    let libs = Command::new("ldd").arg(&fio).output().unwrap();
    // The sidecar's own binary too: `run` forks, puts the child in fio's cgroup and runs its
    // code there until the exec; a page of it read from disk then is that cgroup's read (seen:
    // 115 pages after a suite that rebuilt the binary and the images).
    let mut warm = vec![fio.clone(), sidecar_bin(), "/etc/ld.so.cache".into()];
    warm.extend(
        String::from_utf8_lossy(&libs.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(std::path::PathBuf::from),
    );
    for f in warm {
        let _ = std::fs::read(&f);
    }
    let mut run = Command::new(sidecar_bin());
    run.args(["run", "--probes", "disk", "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--metrics-out")
        .arg(&prom)
        .arg("--")
        .arg(&fio);
    let args = job(&[
        "--output-format=json",
        &format!("--output={}", json.display()),
    ]);
    let o = run.args(args.get_args()).output().unwrap();
    assert!(
        o.status.success(),
        "fio under run: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m = Metrics::parse(&std::fs::read_to_string(&prom).unwrap());
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let job0 = &j["jobs"][0];
    let mut truth_bytes = Counts::new();
    let mut truth_reqs = Counts::new();
    for op in ["read", "write"] {
        truth_bytes.insert(op.into(), job0[op]["io_bytes"].as_u64().unwrap());
        truth_reqs.insert(op.into(), job0[op]["total_ios"].as_u64().unwrap());
    }
    let bytes = by_labels(&m, "ebpf_sidecar_block_bytes_total", &[], &["op"]);
    let reqs = by_labels(&m, "ebpf_sidecar_block_requests_total", &[], &["op"]);
    let devices = by_labels(&m, "ebpf_sidecar_block_requests_total", &[], &["device"]);
    eprintln!(
        "fio: bytes sidecar {bytes:?} fio {truth_bytes:?}; requests sidecar {reqs:?} fio \
         {truth_reqs:?}; devices {devices:?}; {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(truth_bytes["read"] > 0 && truth_bytes["write"] > 0);
    assert_eq!(devices.len(), 1, "one device: {devices:?}");
    // 64 KiB O_DIRECT psync I/O, one at a time: one block request per I/O, no merges, no split
    // (max_sectors_kb ≥ 64), and nothing else from the process (no fsync, file laid out before).
    assert_counts_eq("block bytes by op", &bytes, &truth_bytes);
    assert_counts_eq("block requests by op", &reqs, &truth_reqs);
}

// ---------------------------------------------------------------------------------------------
// stress-ng

fn proc_switches(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let f = |k: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (
        f("voluntary_ctxt_switches:"),
        f("nonvoluntary_ctxt_switches:"),
    )
}

#[test]
fn stress_ng_cpu_forks_and_switches_equal_cgroup_stats_and_rusage() {
    require_root();
    let sng = need("stress-ng", "stress-ng");
    let t0 = Instant::now();
    let dir = Scratch::new("stress");
    let yaml = dir.path().join("metrics.yaml");
    let cg = TestCgroup::new("stress");
    const CPU: u64 = 1;
    const FORK: u64 = 1;
    let mut child = cg.spawn(
        Command::new(workload("rusage_wrap"))
            .arg(&sng)
            .args(["--cpu", &CPU.to_string(), "--fork", &FORK.to_string()])
            .args(["--fork-ops", "1500", "--timeout", "3", "--metrics-brief"])
            .arg("--yaml")
            .arg(&yaml)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let wrapper = child.id();
    let mut go = child.stdin.take().unwrap();
    let mut out = child.stdout.take().unwrap();
    let _w = Proc(child);
    // Window start: frozen, so the wrapper's own count is read exactly where the sidecar starts.
    std::thread::sleep(Duration::from_millis(100));
    cg.freeze(true);
    let (v0, i0) = proc_switches(wrapper);
    let usage0 = cg.cpu_stat("usage_usec");
    let sc = Sidecar::start(&[
        "--target-pid",
        &wrapper.to_string(),
        "--probes",
        "process,cpu",
    ]);
    assert_eq!(reported_cgroup_id(&sc.scrape()), cg.id());
    // A third view of the switches, for the report only: sched_switch by prev_state as the
    // tracepoint formats it (0 runnable, 256 preempted, else the sleep or exit state), from
    // prev's context (`cgroup` is prev's there).
    let bt = Bpftrace::start(
        "stress-switch",
        &format!(
            "tracepoint:sched:sched_switch /cgroup == {}/ {{ @[args->prev_state] = count(); }}",
            cg.id()
        ),
    );
    cg.freeze(false);
    go.write_all(b"g").unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("status=") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "rusage_wrap ended early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Window end: the workload is gone, the wrapper waits on stdin; freeze and read everything.
    std::thread::sleep(Duration::from_millis(200));
    cg.freeze(true);
    let (v1, i1) = proc_switches(wrapper);
    let usage1 = cg.cpu_stat("usage_usec");
    let m = sc.scrape();
    let states = bt.finish();
    drop(go);
    let fact = |k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(fact("status"), 0, "stress-ng exit status");
    let y = std::fs::read_to_string(&yaml).unwrap();
    let fork_ops: u64 = y
        .split("- stressor: fork")
        .nth(1)
        .and_then(|s| s.lines().find_map(|l| l.trim().strip_prefix("bogo-ops:")))
        .expect("fork bogo-ops in the yaml")
        .trim()
        .parse()
        .unwrap();

    let cpu = m.sum("ebpf_sidecar_cpu_seconds_total", &[]);
    let cg_cpu = (usage1 - usage0) as f64 / 1e6;
    let forks = m.sum("ebpf_sidecar_process_forks_total", &[]) as u64;
    let vol = m.sum(
        "ebpf_sidecar_context_switches_total",
        &[("kind", "voluntary")],
    ) as u64;
    let invol = m.sum(
        "ebpf_sidecar_context_switches_total",
        &[("kind", "involuntary")],
    ) as u64;
    let (tv, ti) = (fact("nvcsw") + v1 - v0, fact("nivcsw") + i1 - i0);
    let exits = m.sum("ebpf_sidecar_process_exits_total", &[]) as u64;
    eprintln!(
        "stress-ng: cpu sidecar {cpu:.4} s vs cpu.stat {cg_cpu:.4} s ({:+.2}%); forks {forks} vs \
         {fork_ops} bogo + {} workers + 1; voluntary {vol} vs {tv} ({:+}), involuntary {invol} vs \
         {ti} ({:+}); exited processes {exits}; rusage cpu {:.4} s; bpftrace sched_switch by \
         prev_state {states:?}; {:.1} s",
        (cpu / cg_cpu - 1.0) * 100.0,
        CPU + FORK,
        vol as i64 - tv as i64,
        invol as i64 - ti as i64,
        (fact("utime_us") + fact("stime_us")) as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    // cpu.stat's usage_usec is the scheduler's runtime (rq_clock_task); the sidecar adds
    // bpf_ktime_get_ns deltas from switch to switch. Same window, same tasks, but on a VM with
    // CONFIG_PARAVIRT_TIME_ACCOUNTING (this one) the scheduler's clock leaves out steal time
    // (the host running another vCPU) and the sidecar's does not: measured +0.1% to +2.5% here,
    // more under heavier host contention (rusage's utime+stime agrees with cpu.stat to 0.05%).
    // 3% is the README's stated bound.
    assert!(
        (cpu - cg_cpu).abs() <= 0.03 * cg_cpu,
        "cpu_seconds_total {cpu} vs cpu.stat {cg_cpu}"
    );
    // Forks: the wrapper's one, stress-ng's one worker per instance, one per fork bogo-op.
    assert_eq!(forks, fork_ops + CPU + FORK + 1, "forks");
    // Switches: RUSAGE_CHILDREN of the wrapper (every reaped descendant) plus the wrapper's own,
    // from /proc at both frozen ends of the window. Involuntary: exact. Voluntary: a process's
    // last switch (TASK_DEAD, in do_task_dead after exit_notify) adds to its nvcsw, but its
    // parent may already have reaped it and copied nvcsw into its cnvcsw (the parent is woken
    // in exit_notify, before that switch): rusage misses that one switch for such a process
    // (seen: 1 of 471 processes). So the sidecar, which sees every switch, may exceed rusage
    // by at most one per exited process, and must never be below it.
    assert_eq!(invol, ti, "involuntary context switches");
    assert!(
        vol >= tv && vol <= tv + exits,
        "voluntary context switches: sidecar {vol}, rusage {tv} ({:+}), exited processes {exits}: \
         the sidecar may exceed rusage by at most one per exited process",
        vol as i64 - tv as i64
    );
}

// ---------------------------------------------------------------------------------------------
// dnsmasq

/// tshark writing the DNS packets to and from `addr` into `pcap`, once it is capturing.
fn start_capture(tshark: &Path, addr: &str, pcap: &Path) -> Proc {
    let mut cap = Command::new(tshark)
        .args([
            "-i",
            "lo",
            "-f",
            &format!("udp port 53 and host {addr}"),
            "-w",
        ])
        .arg(pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = cap.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    while !seen.contains("Capturing on") {
        let n = err.read(&mut buf).unwrap();
        assert!(n > 0, "tshark ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Kept open: tshark reports on stderr when it stops, and a closed pipe would kill it first.
    cap.stderr = Some(err);
    // "Capturing on" can come before the capture sees packets (a run missed the first query,
    // captured its answer): give it a second.
    std::thread::sleep(Duration::from_secs(1));
    Proc(cap)
}

/// The capture's DNS queries by qtype and answers by rcode, named as the sidecar names them.
fn captured(tshark: &Path, pcap: &Path) -> (Counts, Counts) {
    let o = Command::new(tshark)
        .arg("-r")
        .arg(pcap)
        .args([
            "-T",
            "fields",
            "-e",
            "dns.flags.response",
            "-e",
            "dns.qry.type",
        ])
        .args(["-e", "dns.flags.rcode"])
        .output()
        .unwrap();
    let qtype = |t: &str| -> String {
        match t {
            "1" => "A",
            "28" => "AAAA",
            "16" => "TXT",
            "15" => "MX",
            "5" => "CNAME",
            "12" => "PTR",
            "33" => "SRV",
            "2" => "NS",
            "6" => "SOA",
            "255" => "ANY",
            _ => "other",
        }
        .into()
    };
    let rcode = |r: &str| -> String {
        match r {
            "0" => "NOERROR",
            "1" => "FORMERR",
            "2" => "SERVFAIL",
            "3" => "NXDOMAIN",
            "4" => "NOTIMP",
            "5" => "REFUSED",
            _ => "other",
        }
        .into()
    };
    let (mut tq, mut tr) = (Counts::new(), Counts::new());
    for l in String::from_utf8_lossy(&o.stdout).lines() {
        let f: Vec<&str> = l.split('\t').collect();
        if f.len() < 3 {
            continue;
        }
        match f[0] {
            "0" | "False" => *tq.entry(qtype(f[1])).or_default() += 1,
            _ => *tr.entry(rcode(f[2])).or_default() += 1,
        }
    }
    (tq, tr)
}

#[test]
fn dnsmasq_dns_by_qtype_and_rcode_equal_a_tshark_capture() {
    require_root();
    let dnsmasq = need("/usr/sbin/dnsmasq", "dnsmasq-base");
    let dig = need("dig", "dnsutils");
    let tshark = need("tshark", "tshark");
    let t0 = Instant::now();
    let dir = Scratch::new("dns");
    // The net family parses DNS on port 53 only (docs/families/net.md, Limits): a loopback
    // address of this test's own on port 53.
    let addr = format!("127.53.{}.{}", std::process::id() % 200 + 20, 16);
    let cg = TestCgroup::new("dns");
    let _dns = Proc(
        cg.spawn(
            Command::new(&dnsmasq)
                .args(["--no-daemon", "--conf-file=/dev/null", "--no-hosts"])
                .args(["--no-resolv", "--port=53", "--bind-interfaces"])
                .arg(format!("--listen-address={addr}"))
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .args([
                    "--address=/example.test/127.0.0.2",
                    "--address=/example.test/::2",
                ])
                .args(["--local=/nx.test/", "--txt-record=txt.example.test,hello"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        ),
    );
    let dig1 = |name: &str, qtype: &str| -> String {
        let o = Command::new(&dig)
            .arg(format!("@{addr}"))
            .args(["-p", "53", "+tries=1", "+time=2", name, qtype])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    wait_for("dnsmasq answering", Duration::from_secs(10), || {
        dig1("up.example.test", "A")
            .contains("status: NOERROR")
            .then_some(())
    });
    // The server is the target (docs/families/net.md: a query counts for whichever end is in
    // the target; here dnsmasq receives the queries and sends the answers).
    let sc = Sidecar::start(&["--target-pid", &_dns.0.id().to_string(), "--probes", "net"]);
    assert_eq!(reported_cgroup_id(&sc.scrape()), cg.id());
    let pcap = dir.path().join("dns.pcap");
    let cap = start_capture(&tshark, &addr, &pcap);
    let mut asked = 0;
    for (name, qtype, n) in [
        ("www.example.test", "A", 5),
        ("www.example.test", "AAAA", 3),
        ("txt.example.test", "TXT", 2),
        ("nothing.nx.test", "A", 4),
        ("nothing.nx.test", "MX", 1),
        ("elsewhere.org", "A", 2),
    ] {
        for i in 0..n {
            let out = dig1(&format!("q{i}.{name}"), qtype);
            assert!(out.contains("status:"), "dig got no answer: {out}");
            asked += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: SIGINT to our tshark; it finishes the file and exits.
    unsafe { libc::kill(cap.0.id() as i32, libc::SIGINT) };
    let mut cap = cap;
    cap.0.wait().unwrap();
    let (tq, tr) = captured(&tshark, &pcap);
    let m = sc.scrape();
    let q = by_labels(&m, "ebpf_sidecar_dns_queries_total", &[], &["qtype"]);
    let r = by_labels(&m, "ebpf_sidecar_dns_responses_total", &[], &["rcode"]);
    eprintln!(
        "dnsmasq: {asked} digs; queries sidecar {q:?} tshark {tq:?}; answers sidecar {r:?} \
         tshark {tr:?}; {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(tq.values().sum::<u64>(), asked, "tshark saw every query");
    assert_counts_eq("DNS queries by qtype", &q, &tq);
    assert_counts_eq("DNS answers by rcode", &r, &tr);
}
