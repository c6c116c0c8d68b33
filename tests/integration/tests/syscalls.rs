//! Syscall family against an independent count: bpftrace on `raw_syscalls:sys_enter`, numbers
//! named from the kernel's own uapi header, on the same run. Every syscall name is compared, in
//! both modes, on a workload that makes processes and threads every way there is. Counting only
//! (`--syscall-latency off`) counts exactly what latency mode counts, signal returns included.

use std::collections::BTreeMap;
use std::time::Duration;

use integration::*;

/// bpftrace's count of the syscalls of tasks named `comm`, by name.
fn bpftrace_by_comm(comm: &str) -> Bpftrace {
    let prog = format!(
        "tracepoint:raw_syscalls:sys_enter /comm == \"{comm}\"/ {{ @[args->id] = count(); }}"
    );
    Bpftrace::start(comm, &prog)
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

/// Counting only (`--syscall-latency off`) is one program at each syscall's exit, which reads the
/// number from the saved registers; the calls that never exit (exit_group) and the one whose
/// number the kernel wipes (rt_sigreturn) are counted too, exactly as with latency on.
#[test]
fn counting_only_counts_exactly_what_latency_mode_counts() {
    require_root();
    const SIGNALS: u64 = 23;
    let a = counted::args();
    let a: Vec<&str> = std::iter::once("run")
        .chain(a.iter().map(String::as_str))
        .collect();
    for mode in ["off", "on"] {
        let extra = ["--syscall-latency", mode];
        let tag = format!("counting-{mode}");
        let (m, _) = run_workload_exiting(&tag, "syscalls", &extra, "counted", &a, counted::CODE);
        let calls = |s: &str| m.sum("ebpf_sidecar_syscalls_total", &[("syscall", s)]);
        assert_eq!(
            calls("getppid"),
            counted::N_GETPPID as f64,
            "getppid, latency {mode}"
        );
        assert_eq!(
            m.sum(
                "ebpf_sidecar_syscall_errors_total",
                &[("syscall", "openat"), ("errno", "ENOENT")]
            ),
            counted::M_OPENAT_ENOENT as f64,
            "openat ENOENT, latency {mode}"
        );
        // The workload's and each child's exec, the children's and its own exit_group.
        assert_eq!(
            calls("execve"),
            1.0 + counted::K_EXECS as f64,
            "execve, latency {mode}"
        );
        assert_eq!(
            calls("exit_group"),
            1.0 + counted::K_EXECS as f64,
            "exit_group, latency {mode}"
        );
        assert_eq!(
            calls("wait4"),
            counted::K_EXECS as f64,
            "wait4, latency {mode}"
        );
        let timed = m.sum("ebpf_sidecar_syscall_duration_seconds_count", &[]);
        if mode == "off" {
            assert_eq!(timed, 0.0, "no latency measured with --syscall-latency off");
        } else {
            assert!(timed >= counted::N_GETPPID as f64, "latency measured");
        }

        let signals = ["signals", &SIGNALS.to_string()];
        let tag = format!("counting-signals-{mode}");
        let (m, _) = run_workload_exiting(&tag, "syscalls", &extra, "counted", &signals, 0);
        let calls = |s: &str| m.sum("ebpf_sidecar_syscalls_total", &[("syscall", s)]);
        assert_eq!(calls("tgkill"), SIGNALS as f64, "tgkill, latency {mode}");
        assert_eq!(
            calls("rt_sigreturn"),
            SIGNALS as f64,
            "rt_sigreturn, latency {mode}"
        );
        assert_eq!(calls("exit_group"), 1.0, "exit_group, latency {mode}");
        assert_eq!(m.sum("ebpf_sidecar_events_lost_total", &[]), 0.0);
    }
}

/// A call the target's own seccomp filter refuses never fires sys_enter, but its thread leaves
/// through sys_exit: with latency on, that exit without an entry is counted as refused, by
/// syscall and errno, and not as a call or an error. Counting only (no entry seen) counts it as
/// a call that failed, as the kernel returned it.
#[test]
fn calls_refused_by_seccomp_are_counted_apart_with_latency_on() {
    require_root();
    const N: u64 = 37;
    workload("seccomp_deny");
    let n = N.to_string();
    for mode in ["on", "off"] {
        let extra = ["--syscall-latency", mode];
        let (m, _) = run_workload(
            &format!("seccomp-deny-{mode}"),
            "syscalls",
            &extra,
            "seccomp_deny",
            &[n.as_str()],
        );
        let denied = m.sum(
            "ebpf_sidecar_seccomp_denied_total",
            &[("syscall", "getppid"), ("errno", "EPERM")],
        );
        let calls = |s: &str| m.sum("ebpf_sidecar_syscalls_total", &[("syscall", s)]);
        let errors = m.sum(
            "ebpf_sidecar_syscall_errors_total",
            &[("syscall", "getppid"), ("errno", "EPERM")],
        );
        assert_eq!(calls("getpid"), N as f64, "allowed calls, latency {mode}");
        if mode == "on" {
            assert_eq!(denied, N as f64, "refused getppid");
            assert_eq!(
                m.sum("ebpf_sidecar_seccomp_denied_total", &[]),
                N as f64,
                "nothing else refused"
            );
            assert_eq!(calls("getppid"), 0.0, "a refused call is not a call");
            assert_eq!(errors, 0.0, "nor an error");
        } else {
            assert_eq!(denied, 0.0, "no entries seen: nothing can be told apart");
            assert_eq!(calls("getppid"), N as f64, "counted at exit");
            assert_eq!(errors, N as f64, "with the errno returned");
        }
    }
}

/// A `run` sidecar around `counted serve N M 0 CODE`: its workload runs when triggered, so two
/// of them can be up at once (one set, two slots) while each target does its known calls.
struct Served {
    sidecar: std::process::Child,
    port: u16,
    log: std::path::PathBuf,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Served {
    fn start(extra: &[&str], n: u64, m: u64) -> Self {
        use std::io::BufRead;
        let port = free_port();
        let log = std::env::temp_dir().join(format!("ebpf-sidecar-test-{port}.log"));
        let (n, m, code) = (n.to_string(), m.to_string(), counted::CODE.to_string());
        let mut sidecar = std::process::Command::new(sidecar_bin())
            .args(["run", "--probes", "syscalls", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .arg("--")
            .arg(workload("counted"))
            .args(["serve", &n, &m, "0", &code])
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting ebpf-sidecar");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = sidecar.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        let s = Self {
            sidecar,
            port,
            log,
            lines,
        };
        s.wait_line("ready", 1);
        wait_for("the sidecar serving", Duration::from_secs(30), || {
            http_get(port, "/healthz", None)
                .is_ok_and(|r| r.0 == 200)
                .then_some(())
        });
        s
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_line(&self, line: &str, nth: usize) {
        wait_for(
            &format!("`{line}` from the workload"),
            Duration::from_secs(30),
            || {
                let n = self
                    .lines
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|l| *l == line)
                    .count();
                (n >= nth).then_some(())
            },
        );
    }

    /// The `counted serve` process: the sidecar's child.
    fn workload_pid(&self) -> i32 {
        let me = self.sidecar.id().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                // pid (comm) state ppid ...
                let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
                stat.contains("(counted)") && rest.split(' ').nth(1) == Some(me.as_str())
            })
            .expect("the sidecar's counted serve process")
    }

    fn trigger(&self) {
        // SAFETY: kill with the pid of a process this test started (through the sidecar).
        assert_eq!(unsafe { libc::kill(self.workload_pid(), libc::SIGUSR1) }, 0);
    }

    fn scrape(&self) -> Metrics {
        let (status, _, body) = http_get(self.port, "/metrics", None).expect("scrape");
        assert_eq!(status, 200, "{body}");
        let lint = promtool_check(&body);
        assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
        Metrics::parse(&body)
    }

    /// Stop the workload; `run` then leaves the set and exits with its status (0).
    fn stop(mut self) {
        // SAFETY: as in trigger.
        unsafe { libc::kill(self.workload_pid(), libc::SIGTERM) };
        let st = wait_for("the sidecar's exit", Duration::from_secs(30), || {
            self.sidecar.try_wait().unwrap()
        });
        assert_eq!(st.code(), Some(0), "{}", self.log_text());
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.sidecar.try_wait() {
            let _ = self.sidecar.kill();
            let _ = self.sidecar.wait();
        }
    }
}

/// Two sidecars at once on the host's one shared kernel side, one measuring latency and one
/// counting only: both program sets are attached, each acts for its own slot, and each sidecar
/// reads exactly its own target's calls and errors while both targets run at the same time.
#[test]
fn two_sidecars_on_one_shared_set_each_count_exactly_their_own_target() {
    require_root();
    const A: (u64, u64) = (4000, 23);
    const B: (u64, u64) = (6000, 31);
    let base = std::path::Path::new("/sys/fs/bpf/ebpf-sidecar");
    let fresh = !base.exists();
    let a = Served::start(
        &["--kernel-side", "shared", "--syscall-latency", "on"],
        A.0,
        A.1,
    );
    let b = Served::start(
        &["--kernel-side", "shared", "--syscall-latency", "off"],
        B.0,
        B.1,
    );
    for s in [&a, &b] {
        assert!(
            s.log_text().contains("kernel side: shared"),
            "{}",
            s.log_text()
        );
    }
    a.trigger();
    b.trigger();
    let done = format!("done {}", counted::CODE);
    a.wait_line(&done, 1);
    b.wait_line(&done, 1);
    for (s, (n, m), mode) in [(&a, A, "on"), (&b, B, "off")] {
        let metrics = s.scrape();
        let calls = |sc: &str| metrics.sum("ebpf_sidecar_syscalls_total", &[("syscall", sc)]);
        let errors = |sc: &str, e: &str| {
            metrics.sum(
                "ebpf_sidecar_syscall_errors_total",
                &[("syscall", sc), ("errno", e)],
            )
        };
        assert_eq!(calls("getppid"), n as f64, "getppid, latency {mode}");
        assert_eq!(
            errors("openat", "ENOENT"),
            m as f64,
            "openat ENOENT, latency {mode}"
        );
        assert_eq!(
            metrics.sum(
                "ebpf_sidecar_syscall_errors_total",
                &[("syscall", "openat")]
            ),
            m as f64,
            "openat errors, latency {mode}"
        );
        assert_eq!(
            metrics.sum(
                "ebpf_sidecar_syscall_errors_total",
                &[("syscall", "getppid")]
            ),
            0.0,
            "getppid errors, latency {mode}"
        );
        let timed = metrics.sum("ebpf_sidecar_syscall_duration_seconds_count", &[]);
        if mode == "on" {
            assert!(timed >= n as f64, "latency measured: {timed}");
            assert_eq!(
                metrics.sum("ebpf_sidecar_seccomp_denied_total", &[]),
                0.0,
                "nothing refused"
            );
        } else {
            assert_eq!(timed, 0.0, "no latency measured with --syscall-latency off");
        }
        assert_eq!(metrics.sum("ebpf_sidecar_events_lost_total", &[]), 0.0);
    }
    b.stop();
    a.stop();
    if fresh {
        assert!(!base.exists(), "the last sidecar out removes the set");
    }
}
