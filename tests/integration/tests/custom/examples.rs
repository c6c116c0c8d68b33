//! The examples of examples/custom (tcpconnlat, execsnoop, ucalls) with exact values, broken
//! probes reported, `custom check`, flags that do not pair.

use super::*;

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
