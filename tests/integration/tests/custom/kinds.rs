//! Attach and map kinds the examples do not use (workloads/custom_kinds.bpf.c), and a USDT probe
//! behind a semaphore through the usdt engine (workloads/custom_usdt.bpf.c).

use super::*;

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
