//! Custom probes: the examples in examples/custom, built with the line users are given
//! (`sidecar_ebpf::clang::USER_COMMAND`) against the headers `ebpf-sidecar custom headers`
//! writes, load next to the built-in families and give exact values for known workloads; broken
//! user probes are reported and never stop the built-ins.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use integration::docker;
use integration::*;

/// A scratch directory for this test binary: headers, objects, configs.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = repo_root().join("target/custom-tests");
        std::fs::create_dir_all(&d).unwrap();
        // The one-command build a user does: the sidecar prints its headers, clang does the rest.
        let out = Command::new(sidecar_bin())
            .args(["custom", "headers"])
            .arg(d.join("include"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "custom headers: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for h in ["vmlinux.h", "sidecar.bpf.h", "sidecar.h", "usdt.bpf.h"] {
            assert!(d.join("include").join(h).exists(), "{h} written");
        }
        d
    })
}

/// Compile `examples/custom/NAME.bpf.c` (or `src` when given) into scratch/NAME.bpf.o.
fn build_object(name: &str, src: Option<&Path>) -> PathBuf {
    let dir = scratch();
    let src = src
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join(format!("examples/custom/{name}.bpf.c")));
    let out = dir.join(format!("{name}.bpf.o"));
    compile_bpf(Recipe::User, &[&dir.join("include")], &src, &out);
    out
}

fn example_yaml(name: &str) -> PathBuf {
    repo_root().join(format!("examples/custom/{name}.yaml"))
}

fn write(name: &str, text: &str) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `ebpf-sidecar run [args] -- cmd`, serving on a free port; killed on drop.
struct Run {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Run {
    fn start(args: &[&str], cmd: &[&str]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("ebpf-sidecar-custom-{port}.log"));
        let child = Command::new(sidecar_bin())
            .arg("run")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .arg("--")
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting ebpf-sidecar");
        let mut r = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("sidecar exited early ({st}):\n{}", r.log_text());
            }
            if http_get(r.port, "/healthz", None).is_ok_and(|x| x.0 == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar did not serve within 30 s:\n{}",
                r.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn scrape(&self) -> Metrics {
        let (status, _, body) = http_get(self.port, "/metrics", None).expect("scrape");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Wait for the command (and so the sidecar) to finish; returns the sidecar's status.
    fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return (st.code().unwrap_or(-1), self.log_text());
            }
            assert!(Instant::now() < deadline, "run did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn probe_arg(obj: &Path, yaml: &Path) -> Vec<String> {
    vec![
        "--probe-file".into(),
        obj.display().to_string(),
        "--probe-config".into(),
        yaml.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn tcpconnlat_struct_value_counts_every_connect() {
    require_root();
    const N: u64 = 25;
    let obj = build_object("tcpconnlat", None);
    let w = workload("custom_connect");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let out = scratch().join("tcpconnlat.prom");
    let _ = std::fs::remove_file(&out);
    let mut args = probe_arg(&obj, &example_yaml("tcpconnlat"));
    args.extend(["--probes".into(), "process".into(), "--metrics-out".into()]);
    args.push(out.display().to_string());
    let r = Run::start(
        &strs(&args),
        &[w.to_str().unwrap(), &port.to_string(), &N.to_string()],
    );
    let (code, log) = r.wait();
    assert_eq!(code, 0, "{log}");
    let text = std::fs::read_to_string(&out).expect("--metrics-out written");
    let m = Metrics::parse(&text);
    let dst = [("daddr", "127.0.0.1"), ("dport", &*port.to_string())];
    assert_eq!(
        m.sum("ebpf_sidecar_probe_up", &[("probe", "custom:tcpconnlat")]),
        1.0,
        "{log}"
    );
    assert_eq!(
        m.get("ebpf_sidecar_tcpconnlat_connects_total", &dst),
        Some(N as f64),
        "{text}"
    );
    // Only the target's connects: the listener's accepts and other hosts' traffic are not in it.
    assert_eq!(
        m.sum("ebpf_sidecar_tcpconnlat_connects_total", &[]),
        N as f64
    );
    let total = m
        .get("ebpf_sidecar_tcpconnlat_seconds_total", &dst)
        .unwrap();
    let max = m.get("ebpf_sidecar_tcpconnlat_max_seconds", &dst).unwrap();
    // Loopback handshakes: well under a second each, and not zero.
    assert!(total > 0.0 && total < N as f64, "total {total}");
    assert!(max > 0.0 && max <= total, "max {max}, total {total}");
    // The histogram comes from the same struct: its count and sum agree with the fields.
    assert_eq!(
        m.get("ebpf_sidecar_tcpconnlat_duration_seconds_count", &dst),
        Some(N as f64)
    );
    let sum = m
        .get("ebpf_sidecar_tcpconnlat_duration_seconds_sum", &dst)
        .unwrap();
    assert!((sum - total).abs() < 1e-9, "sum {sum} vs total {total}");
    let inf: Vec<(String, String)> = vec![("le".into(), "+Inf".into())];
    let inf: Vec<(&str, &str)> = inf
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .chain(dst.iter().copied())
        .collect();
    assert_eq!(
        m.get("ebpf_sidecar_tcpconnlat_duration_seconds_bucket", &inf),
        Some(N as f64)
    );
    assert_eq!(promtool_check(&text), "", "promtool");
}

#[test]
fn execsnoop_events_are_decoded_on_the_event_stream_and_counted() {
    require_root();
    const K: usize = 7;
    let obj = build_object("execsnoop", None);
    let go = scratch().join("execsnoop.go");
    let _ = std::fs::remove_file(&go);
    let script = format!(
        "while [ ! -e {go} ]; do sleep 0.05; done; for i in $(seq {K}); do /bin/true; done; sleep 1",
        go = go.display()
    );
    let out = scratch().join("execsnoop.prom");
    let _ = std::fs::remove_file(&out);
    let mut args = probe_arg(&obj, &example_yaml("execsnoop"));
    args.extend(["--probes".into(), "process".into(), "--metrics-out".into()]);
    args.push(out.display().to_string());
    let r = Run::start(&strs(&args), &["sh", "-c", &script]);
    // Subscribe to /events first, then let the command go.
    let mut s = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /events?kind=execsnoop HTTP/1.0\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(s).lines();
    std::fs::write(&go, "").unwrap();
    let mut trues = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while trues.len() < K && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue; // HTTP head
        };
        assert_eq!(v["kind"], "execsnoop", "{line}");
        if v["data"]["comm"] == "true" {
            trues.push(v);
        }
    }
    assert_eq!(
        trues.len(),
        K,
        "exec events of /bin/true:\n{}",
        r.log_text()
    );
    let sh_pid = trues[0]["data"]["ppid"].as_u64().unwrap();
    for e in &trues {
        assert_eq!(e["data"]["filename"], "/bin/true", "{e}");
        assert_eq!(e["data"]["uid"], 0, "{e}");
        assert_eq!(e["data"]["ppid"].as_u64(), Some(sh_pid), "{e}");
        assert!(e["data"]["pid"].as_u64().unwrap() > 0, "{e}");
        assert!(e["data"].get("pad").is_none(), "padding left out: {e}");
        assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    let (code, log) = r.wait();
    assert_eq!(code, 0, "{log}");
    let text = std::fs::read_to_string(&out).expect("--metrics-out written");
    let m = Metrics::parse(&text);
    assert_eq!(
        m.get("ebpf_sidecar_execsnoop_execs_total", &[("comm", "true")]),
        Some(K as f64),
        "{text}"
    );
    assert_eq!(
        m.get(
            "ebpf_sidecar_events_lost_total",
            &[("probe", "custom:execsnoop")]
        ),
        Some(0.0)
    );
    assert_eq!(promtool_check(&text), "", "promtool");
}

/// Expected (calls, cost_ns, max_cost_ns) per kind for `ufunc N`.
fn ufunc_truth(n: u64) -> [(u64, u64, u64); 3] {
    let mut t = [(0, 0, 0); 3];
    for i in 0..n {
        let (k, cost) = ((i % 3) as usize, 1000 * (i % 5 + 1));
        t[k].0 += 1;
        t[k].1 += cost;
        t[k].2 = t[k].2.max(cost);
    }
    t
}

#[test]
fn ucalls_uprobe_struct_fields_become_three_metrics_with_their_scales() {
    require_root();
    const N: u64 = 1000;
    let obj = build_object("ucalls", None);
    let bin = scratch().join("ufunc");
    let st = Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&bin)
        .arg(repo_root().join("examples/custom/ufunc.c"))
        .status()
        .expect("gcc not found: apt-get install gcc");
    assert!(st.success());
    // The example names the binary as it sits in the user's image; here it is ours.
    let yaml = std::fs::read_to_string(example_yaml("ucalls"))
        .unwrap()
        .replace("/usr/local/bin/ufunc", bin.to_str().unwrap());
    let yaml = write("ucalls.yaml", &yaml);
    let out = scratch().join("ucalls.prom");
    let _ = std::fs::remove_file(&out);
    let mut args = probe_arg(&obj, &yaml);
    args.extend(["--probes".into(), "process".into(), "--metrics-out".into()]);
    args.push(out.display().to_string());
    // The same binary also runs outside the target: target_cgroup_id (filled by the sidecar)
    // keeps those calls out.
    let outside = Command::new(&bin)
        .arg("10")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let r = Run::start(
        &strs(&args),
        &["sh", "-c", &format!("{} {N}; sleep 0.2", bin.display())],
    );
    let (code, log) = r.wait();
    let _ = { outside }.wait();
    assert_eq!(code, 0, "{log}");
    let text = std::fs::read_to_string(&out).expect("--metrics-out written");
    let m = Metrics::parse(&text);
    for (kind, (calls, cost, max)) in ufunc_truth(N).iter().enumerate() {
        let l = [("kind", &*kind.to_string())];
        assert_eq!(
            m.get("ebpf_sidecar_ucalls_calls_total", &l),
            Some(*calls as f64),
            "calls of kind {kind}\n{text}"
        );
        let got = m.get("ebpf_sidecar_ucalls_cost_seconds_total", &l).unwrap();
        assert!(
            (got - *cost as f64 * 1e-9).abs() < 1e-15,
            "cost of kind {kind}: {got} vs {cost} ns"
        );
        let got = m.get("ebpf_sidecar_ucalls_max_cost_seconds", &l).unwrap();
        assert!((got - *max as f64 * 1e-9).abs() < 1e-15, "max {got}");
    }
    assert_eq!(m.sum("ebpf_sidecar_ucalls_calls_total", &[]), N as f64);
    assert!(text.contains("# TYPE ebpf_sidecar_ucalls_max_cost_seconds gauge"));
    assert!(text.contains("# TYPE ebpf_sidecar_ucalls_calls_total counter"));
    assert_eq!(promtool_check(&text), "", "promtool");
}

#[test]
fn broken_custom_probes_are_reported_and_the_builtins_keep_serving() {
    require_root();
    let obj = build_object("tcpconnlat", None);
    let good = std::fs::read_to_string(example_yaml("tcpconnlat")).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "badyaml",
            // `tracepoint:` indented one space short: a YAML syntax error, not a schema one.
            "name: badyaml\nprograms:\n  - name: connlat_state\n    attach: tracepoint\n   tracepoint: sock:inet_sock_set_state\n".into(),
            "badyaml.yaml:5:4: did not find expected '-' indicator",
        ),
        (
            "wrongmap",
            good.replace("name: tcpconnlat", "name: wrongmap")
                .replace("map: connlat\n", "map: connlat_by_dst\n"),
            "map connlat_by_dst: no such map in the object (its maps: connlat_start, connlat)",
        ),
        (
            "badsize",
            good.replace("name: tcpconnlat", "name: badsize")
                .replace("decoder: ipv4", "decoder: ipv6"),
            "label daddr: decoder ipv6 expects 16 bytes, but daddr is __u8[4] (4 bytes)",
        ),
        (
            "baddecoder",
            good.replace("name: tcpconnlat", "name: baddecoder")
                .replace("decoder: port_host", "decoder: portnumber"),
            "unknown variant `portnumber`",
        ),
        (
            "badfield",
            good.replace("name: tcpconnlat", "name: badfield")
                .replace("name: max_ns", "name: max_latency"),
            "value field \"max_latency\": struct conn_stats has no field \"max_latency\" (fields: count, total_ns, max_ns, slots)",
        ),
    ];
    let mut args: Vec<String> = vec!["--probes".into(), "process".into()];
    for (name, yaml, _) in &cases {
        let p = write(&format!("{name}.yaml"), yaml);
        args.extend(probe_arg(&obj, &p));
    }
    // Kernel-side failures: a program the object does not have, an object without BTF.
    let missing = write(
        "missingprog.yaml",
        &good
            .replace("name: tcpconnlat", "name: missingprog")
            .replace("- name: connlat_state", "- name: connlat_nope"),
    );
    args.extend(probe_arg(&obj, &missing));
    let nobtf = scratch().join("nobtf.bpf.o");
    // The user's recipe without -g.
    let st = Command::new(clang())
        .args(
            sidecar_ebpf::clang::BPF_CFLAGS
                .iter()
                .filter(|f| **f != "-g"),
        )
        .arg("-I")
        .arg(scratch().join("include"))
        .arg("-c")
        .arg(repo_root().join("examples/custom/tcpconnlat.bpf.c"))
        .arg("-o")
        .arg(&nobtf)
        .status()
        .unwrap();
    assert!(st.success());
    let nobtf_yaml = write(
        "nobtf.yaml",
        &good.replace("name: tcpconnlat", "name: nobtf"),
    );
    args.extend(probe_arg(&nobtf, &nobtf_yaml));
    let more = [
        (
            "missingprog",
            "probe custom:missingprog: program connlat_nope not found in the object",
        ),
        (
            "nobtf",
            "nobtf.bpf.o: the object has no .BTF section (compile with clang -g)",
        ),
    ];
    // One good custom probe among the broken ones still loads.
    args.extend(probe_arg(&obj, &example_yaml("tcpconnlat")));
    let r = Run::start(
        &strs(&args),
        &["sh", "-c", "for i in 1 2 3; do /bin/true; done; sleep 30"],
    );
    let m = wait_for("the built-in execs", Duration::from_secs(10), || {
        let m = r.scrape();
        (m.sum("ebpf_sidecar_process_execs_total", &[("comm", "true")]) == 3.0).then_some(m)
    });
    assert_eq!(m.sum("ebpf_sidecar_probe_up", &[("probe", "process")]), 1.0);
    assert_eq!(
        m.sum("ebpf_sidecar_probe_up", &[("probe", "custom:tcpconnlat")]),
        1.0
    );
    let log = r.log_text();
    for (name, _, msg) in &cases {
        assert_eq!(
            m.get(
                "ebpf_sidecar_probe_up",
                &[("probe", &format!("custom:{name}"))]
            ),
            Some(0.0),
            "{name} reported down"
        );
        assert!(
            log.contains(msg),
            "{name}: expected {msg:?} in the log:\n{log}"
        );
    }
    for (name, msg) in more {
        assert_eq!(
            m.get(
                "ebpf_sidecar_probe_up",
                &[("probe", &format!("custom:{name}"))]
            ),
            Some(0.0),
            "{name} reported down"
        );
        assert!(
            log.contains(msg),
            "{name}: expected {msg:?} in the log:\n{log}"
        );
    }
    assert_eq!(promtool_check(&m.text), "", "promtool");
}

#[test]
fn raw_tp_tp_btf_cgroup_skb_perf_event_and_a_perf_event_array() {
    require_root();
    const N: u64 = 5000;
    const K: usize = 3;
    let obj = build_object(
        "custom_kinds",
        Some(&workloads_dir().join("custom_kinds.bpf.c")),
    );
    let yaml = write(
        "custom_kinds.yaml",
        "name: kinds
programs:
  - {name: kinds_sys_enter, attach: raw_tp, tracepoint: sys_enter}
  - {name: kinds_exec, attach: tp_btf, tracepoint: sched_process_exec}
  - {name: kinds_egress, attach: cgroup_skb, direction: egress}
  - {name: kinds_sample, attach: perf_event, frequency: 1000}
metrics:
  - {map: kinds_syns, metric: kinds_tcp_syns}
  - {map: kinds_samples, metric: kinds_cpu_samples}
  - map: kinds_syscalls
    labels:
      - {name: syscall, field: nr, decoder: syscall}
      - {name: comm, field: comm, decoder: string}
      - {name: cgroup, field: cgroup, decoder: cgroup}
    metric: kinds_syscalls
    top_n: 600
events:
  - map: kinds_events
    struct: kinds_event
    count:
      metric: kinds_execs
      labels: [{name: comm, field: comm, decoder: string}]
",
    );
    let w = workload("counted");
    let connect = workload("custom_connect");
    const CONNECTS: u64 = 4;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let out = scratch().join("kinds.prom");
    let events = scratch().join("kinds.ndjson");
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&events);
    let mut args = probe_arg(&obj, &yaml);
    args.extend(["--probes".into(), "process".into(), "--metrics-out".into()]);
    args.push(out.display().to_string());
    args.push("--events-out".into());
    args.push(events.display().to_string());
    let r = Run::start(
        &strs(&args),
        &[
            "sh",
            "-c",
            &format!(
                "{} run {N} 0 {K} 0; {} {port} {CONNECTS}; \
                 i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; sleep 1",
                w.display(),
                connect.display()
            ),
        ],
    );
    let (code, log) = r.wait();
    assert_eq!(code, 0, "{log}");
    let m = Metrics::parse(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(
        m.get(
            "ebpf_sidecar_kinds_syscalls_total",
            &[("syscall", "getppid"), ("comm", "counted")]
        ),
        Some(N as f64),
        "{log}"
    );
    assert_eq!(
        m.get("ebpf_sidecar_kinds_execs_total", &[("comm", "true")]),
        Some(K as f64)
    );
    // The cgroup decoder: the id the kernel gave is the run cgroup's path, as target_info says.
    let cg = m
        .matching("ebpf_sidecar_target_info", &[])
        .next()
        .unwrap()
        .0["cgroup_path"]
        .clone();
    assert!(cg.starts_with("/ebpf-sidecar-run-"), "{cg}");
    assert_eq!(
        m.get(
            "ebpf_sidecar_kinds_syscalls_total",
            &[("syscall", "getppid"), ("comm", "counted"), ("cgroup", &cg)]
        ),
        Some(N as f64)
    );
    // cgroup_skb on the run cgroup: the target's SYNs only (not the listener's SYN-ACKs).
    assert_eq!(
        m.get("ebpf_sidecar_kinds_tcp_syns_total", &[]),
        Some(CONNECTS as f64)
    );
    // perf_event at 1000 Hz over a busy shell loop of a tenth of a second or more.
    let samples = m.get("ebpf_sidecar_kinds_cpu_samples_total", &[]).unwrap();
    assert!(samples > 10.0, "cpu samples {samples}");
    let text = std::fs::read_to_string(&events).unwrap();
    let trues: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "kinds" && v["data"]["comm"] == "true")
        .collect();
    assert_eq!(trues.len(), K, "{text}");
    for e in &trues {
        // exec keeps the pid: old_pid is the same process, seen before the exec.
        assert_eq!(e["data"]["pid"], e["data"]["old_pid"], "{e}");
        assert_eq!(e["map"], "kinds_events");
    }
    assert_eq!(
        m.get(
            "ebpf_sidecar_events_lost_total",
            &[("probe", "custom:kinds")]
        ),
        Some(0.0)
    );
    assert_eq!(promtool_check(&m.text), "", "promtool");
}

#[test]
fn usdt_probe_with_a_semaphore_through_the_usdt_engine() {
    require_root();
    const N: u64 = 300;
    let obj = build_object(
        "custom_usdt",
        Some(&workloads_dir().join("custom_usdt.bpf.c")),
    );
    let bin = workload("custom_usdt");
    let yaml = write(
        "custom_usdt.yaml",
        &format!(
            "name: jobs
programs:
  - {{name: on_job, attach: usdt, binary: {}, probe: \"myapp:job\"}}
metrics:
  - map: jobs
    labels: [{{name: kind}}]
    fields:
      - {{name: jobs, metric: myapp_jobs}}
      - {{name: cost, metric: myapp_cost, type: gauge}}
",
            bin.display()
        ),
    );
    let out = scratch().join("usdt.prom");
    let _ = std::fs::remove_file(&out);
    let mut args = probe_arg(&obj, &yaml);
    args.extend(["--probes".into(), "process".into(), "--metrics-out".into()]);
    args.push(out.display().to_string());
    let r = Run::start(&strs(&args), &[bin.to_str().unwrap(), &N.to_string()]);
    let (code, log) = r.wait();
    assert_eq!(code, 0, "{log}");
    let m = Metrics::parse(&std::fs::read_to_string(&out).unwrap());
    for kind in 0..4u64 {
        let l = [("kind", &*kind.to_string())];
        let (jobs, cost) = (0..N)
            .filter(|i| i % 4 == kind)
            .fold((0u64, 0u64), |(j, c), i| (j + 1, c + 10 * i));
        assert_eq!(
            m.get("ebpf_sidecar_myapp_jobs_total", &l),
            Some(jobs as f64),
            "kind {kind}\n{log}\n{}",
            m.text
        );
        assert_eq!(m.get("ebpf_sidecar_myapp_cost", &l), Some(cost as f64));
    }
}

/// A restarted container is a new cgroup: a custom probe that filters with sidecar_in_target()
/// follows it like the built-in families do.
#[test]
fn custom_probe_follows_a_restarted_container() {
    require_root();
    let obj = build_object("execsnoop", None);
    let name = format!("ebpf-sidecar-custom-restart-{}", std::process::id());
    // Two seconds of quiet at each start: time for the sidecar (and, after the restart, for its
    // target watcher) to be in place before the five execs.
    let c = docker::Container::run(
        &name,
        &[
            "debian:bookworm-slim",
            "sh",
            "-c",
            "sleep 2; for i in 1 2 3 4 5; do /bin/true; done; exec sleep 1000",
        ],
    );
    let mut args = probe_arg(&obj, &example_yaml("execsnoop"));
    args.extend([
        "--probes".into(),
        "process".into(),
        "--target-container".into(),
        name.clone(),
        "--resolve-interval".into(),
        "0.2".into(),
    ]);
    let s = Sidecar::start(&strs(&args));
    let trues = |s: &Sidecar| {
        s.scrape()
            .sum("ebpf_sidecar_execsnoop_execs_total", &[("comm", "true")])
    };
    wait_for("the first run's execs", Duration::from_secs(20), || {
        (trues(&s) == 5.0).then_some(())
    });
    docker::ok(&["restart", "-t", "0", &c.0]);
    wait_for(
        "the restarted container's execs",
        Duration::from_secs(20),
        || (trues(&s) >= 10.0).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let m = s.scrape();
    assert_eq!(
        m.sum("ebpf_sidecar_execsnoop_execs_total", &[("comm", "true")]),
        10.0
    );
    assert_eq!(m.sum("ebpf_sidecar_target_acquisitions_total", &[]), 2.0);
    // Same count as the built-in family.
    assert_eq!(
        m.sum("ebpf_sidecar_process_execs_total", &[("comm", "true")]),
        10.0
    );
}

/// The sidecar image of this worktree, under a tag of its own (other worktrees build
/// `ebpf-sidecar:test` at the same time).
fn custom_image() -> &'static str {
    static IMAGE: OnceLock<()> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let v = docker::run(&["version", "--format", "{{.Server.Version}}"]);
        assert!(v.status.success(), "dockerd is not running");
        let st = Command::new(repo_root().join("scripts/images.sh"))
            .status()
            .unwrap();
        assert!(st.success(), "scripts/images.sh failed");
        let st = Command::new("docker")
            .args([
                "build",
                "-q",
                "--build-arg",
                "BUILDER=ebpf-sidecar-builder:local",
                "-t",
                "ebpf-sidecar:custom-test",
                ".",
            ])
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "docker build of the sidecar image failed");
    });
    "ebpf-sidecar:custom-test"
}

/// The image as users run it: headers from the image, a uprobe on a binary inside the app
/// container (reached through the shared pid namespace), target_cgroup_id filled in sidecar mode.
#[test]
fn sidecar_image_runs_a_custom_uprobe_in_its_app_container() {
    require_root();
    const N: u64 = 600;
    let image = custom_image();
    let dir = scratch().join("image");
    std::fs::create_dir_all(&dir).unwrap();
    docker::ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/out", dir.join("include").display()),
        image,
        "custom",
        "headers",
        "/out",
    ]);
    let obj = dir.join("ucalls.bpf.o");
    // Built with the headers the image wrote.
    compile_bpf(
        Recipe::User,
        &[&dir.join("include")],
        &repo_root().join("examples/custom/ucalls.bpf.c"),
        &obj,
    );
    std::fs::copy(example_yaml("ucalls"), dir.join("ucalls.yaml")).unwrap();
    let bin = dir.join("ufunc");
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(repo_root().join("examples/custom/ufunc.c"))
        .status()
        .unwrap();
    assert!(st.success());
    let app = docker::Container::run(
        "ebpf-sidecar-custom-app",
        &[
            "-v",
            &format!("{}:/usr/local/bin/ufunc:ro", bin.display()),
            "debian:bookworm-slim",
            "sh",
            "-c",
            &format!(
                "while [ ! -e /tmp/go ]; do sleep 0.1; done; /usr/local/bin/ufunc {N}; exec sleep 1000"
            ),
        ],
    );
    // The same binary on the host, outside the target: not counted.
    let _ = Command::new(&bin).arg("30").stdout(Stdio::null()).status();
    let port = free_port();
    let _sidecar = docker::Container::run(
        "ebpf-sidecar-custom-sidecar",
        &[
            &format!("--pid=container:{}", app.0),
            "--cap-add",
            "SYS_ADMIN",
            "-v",
            &format!("{}:/probes:ro", dir.display()),
            "-p",
            &format!("127.0.0.1:{port}:9435"),
            image,
            "--probes",
            "process",
            "--probe-file",
            "/probes/ucalls.bpf.o",
            "--probe-config",
            "/probes/ucalls.yaml",
        ],
    );
    wait_for("sidecar serving", Duration::from_secs(30), || {
        http_get(port, "/healthz", None)
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ())
    });
    docker::ok(&["exec", &app.0, "touch", "/tmp/go"]);
    let m = wait_for("the app's calls", Duration::from_secs(20), || {
        let m = Metrics::parse(&http_get(port, "/metrics", None).ok()?.2);
        (m.sum("ebpf_sidecar_ucalls_calls_total", &[]) >= N as f64).then_some(m)
    });
    assert_eq!(
        m.sum("ebpf_sidecar_probe_up", &[("probe", "custom:ucalls")]),
        1.0
    );
    for (kind, (calls, _, _)) in ufunc_truth(N).iter().enumerate() {
        assert_eq!(
            m.get(
                "ebpf_sidecar_ucalls_calls_total",
                &[("kind", &*kind.to_string())]
            ),
            Some(*calls as f64)
        );
    }
    assert_eq!(promtool_check(&m.text), "", "promtool");
}

#[test]
fn custom_check_validates_without_loading() {
    let obj = build_object("tcpconnlat", None);
    let ok = Command::new(sidecar_bin())
        .args(["custom", "check", "--probe-file"])
        .arg(&obj)
        .arg("--probe-config")
        .arg(example_yaml("tcpconnlat"))
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "custom:tcpconnlat: ok\n"
    );
    let bad = write(
        "check-bad.yaml",
        &std::fs::read_to_string(example_yaml("tcpconnlat"))
            .unwrap()
            .replace("name: count,", "name: counts,"),
    );
    let out = Command::new(sidecar_bin())
        .args(["custom", "check", "--probe-file"])
        .arg(&obj)
        .arg("--probe-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "map connlat: value field \"counts\": struct conn_stats has no field \"counts\""
        ),
        "{err}"
    );
}

#[test]
fn unpaired_probe_flags_exit_2() {
    let st = Command::new(sidecar_bin())
        .args(["run", "--probe-file", "x.bpf.o", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&st.stderr).contains("--probe-file and --probe-config go in pairs")
    );
}
