//! Syscall family against an independent count: bpftrace on `raw_syscalls:sys_enter`, numbers
//! named from the kernel's own uapi header, on the same run. Every syscall name is compared, in
//! both modes, on a workload that makes processes and threads every way there is.

use std::collections::BTreeMap;

use integration::*;

/// bpftrace's count of the syscalls of tasks named `comm`, by name.
fn bpftrace_by_comm(comm: &str) -> real::Bpftrace {
    let prog = format!(
        "tracepoint:raw_syscalls:sys_enter /comm == \"{comm}\"/ {{ @[args->id] = count(); }}"
    );
    real::Bpftrace::start(comm, &prog)
}

fn named(counts: BTreeMap<u64, u64>) -> BTreeMap<String, u64> {
    let names = real::syscall_names();
    counts
        .into_iter()
        .map(|(nr, n)| {
            (
                names.get(&nr).cloned().unwrap_or_else(|| format!("nr{nr}")),
                n,
            )
        })
        .collect()
}

fn by_name(m: &Metrics) -> BTreeMap<String, u64> {
    m.matching("ebpf_sidecar_syscalls_total", &[])
        .map(|(l, v)| (l["syscall"].clone(), v as u64))
        .collect()
}

/// `--syscall-latency off` counted clone, clone3, fork and vfork twice: a new task leaves the
/// kernel through sys_exit too, with the parent's call in its registers. Both modes must equal
/// bpftrace for every syscall name, with the known creation calls exact.
#[test]
fn both_modes_count_every_syscall_of_forks_and_threads_as_bpftrace_does() {
    require_root();
    const F: u64 = 13;
    const V: u64 = 7;
    const S: u64 = 5;
    const T: u64 = 9;
    const N: u64 = 100;
    let args = [F, V, S, T, N].map(|v| v.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    workload("forks");
    for mode in ["off", "on"] {
        let bt = bpftrace_by_comm("forks");
        let extra = ["--syscall-latency", mode];
        let (m, out) = run_workload(
            &format!("syscalls-forks-{mode}"),
            "process,syscalls",
            &extra,
            "forks",
            &args,
        );
        assert_eq!(out.trim(), "ok");
        let truth = named(bt.finish());
        let ours = by_name(&m);
        let c = |s: &str| ours.get(s).copied().unwrap_or(0);
        assert_eq!(c("clone"), F, "clone (fork()), latency {mode}");
        assert_eq!(c("vfork"), V, "vfork, latency {mode}");
        assert_eq!(c("fork"), S, "fork, latency {mode}");
        assert_eq!(c("clone3"), T, "clone3 (pthread_create), latency {mode}");
        assert_eq!(c("exit"), T, "exit of the threads, latency {mode}");
        assert_eq!(c("exit_group"), F + V + S + 1, "exit_group, latency {mode}");
        assert_eq!(c("getppid"), (F + V + S + T) * N, "getppid, latency {mode}");
        // The sidecar's child execs the workload while still named after the sidecar: the one
        // call bpftrace (filtering on the workload's name) cannot see.
        let mut expected = truth.clone();
        *expected.entry("execve".into()).or_default() += 1;
        assert_eq!(ours, expected, "every syscall by name, latency {mode}");
        assert_eq!(
            m.sum("ebpf_sidecar_process_forks_total", &[]),
            (F + V + S) as f64
        );
        assert_eq!(m.sum("ebpf_sidecar_threads_created_total", &[]), T as f64);
        assert_eq!(m.sum("ebpf_sidecar_events_lost_total", &[]), 0.0);
    }
}
