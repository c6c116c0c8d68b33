//! Security: the seccomp advisor's profile, proven by Docker; risky syscalls; what confines the
//! target.

use std::time::Duration;

use integration::docker::{self, Container};
use integration::*;

#[test]
fn advised_seccomp_profile_runs_the_workload_and_blocks_novel_syscalls() {
    require_root();
    docker::sidecar_image(); // dockerd up, base images made
    let w = workload("counted");
    let mount = format!("{}:/counted:ro", w.display());
    let app = Container::run(
        "ebpf-sidecar-sec-app",
        &[
            "-v",
            &mount,
            "debian:bookworm-slim",
            "/counted",
            "serve",
            "100",
            "3",
            "2",
            "42",
        ],
    );
    wait_for("workload ready", Duration::from_secs(20), || {
        app.logs().contains("ready").then_some(())
    });
    let s = Sidecar::start(&["--target-container", &app.0]);
    docker::ok(&["kill", "-s", "USR1", &app.0]);
    wait_for("workload done", Duration::from_secs(20), || {
        app.logs().contains("done 42").then_some(())
    });

    // What confines the target today: Docker's default seccomp filter and capability set.
    let m = s.scrape();
    assert_eq!(
        m.sum("ebpf_sidecar_target_seccomp_mode", &[]),
        2.0,
        "Docker's default profile is a filter"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", app.host_pid())).unwrap();
    let capeff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    assert_eq!(
        m.sum("ebpf_sidecar_target_capabilities", &[("set", "effective")]),
        u64::from_str_radix(capeff, 16).unwrap() as f64
    );
    assert!(m.sum("ebpf_sidecar_seccomp_observed_syscalls", &[]) >= 5.0);

    let (status, ct, body) = http_get(s.port, "/seccomp", None).unwrap();
    assert_eq!(status, 200);
    assert_eq!(ct, "application/json");
    let profile: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&str> = profile["syscalls"][0]["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for used in ["getppid", "openat", "rt_sigsuspend", "wait4"] {
        assert!(names.contains(&used), "{used} was used and must be allowed");
    }
    assert!(!names.contains(&"sysinfo") && !names.contains(&"unshare"));
    let path = std::env::temp_dir().join("ebpf-sidecar-advised-seccomp.json");
    std::fs::write(&path, &body).unwrap();
    let opt = format!("seccomp={}", path.display());

    // The same workload under the advised profile: the container starts and the work succeeds.
    let out = counted::run_under_seccomp(&path);
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Syscalls it never made are refused with EPERM: sysinfo (allowed by Docker's default
    // profile, as the run without ours shows) and unshare.
    let novel = |extra: &[&str]| {
        let mut a = vec!["run", "--rm"];
        a.extend_from_slice(extra);
        a.extend(["-v", &mount, "debian:bookworm-slim", "/counted", "novel"]);
        docker::run(&a).status.code()
    };
    assert_eq!(
        novel(&[]),
        Some(20),
        "Docker's default profile allows sysinfo, refuses unshare"
    );
    assert_eq!(
        novel(&["--security-opt", &opt]),
        Some(30),
        "the advised profile refuses both"
    );
}

#[test]
fn run_writes_the_profile_and_counts_risky_syscalls() {
    require_root();
    let w = workload("counted");
    let dir = std::env::temp_dir();
    let (prof, prom) = (
        dir.join("ebpf-sidecar-run-seccomp.json"),
        dir.join("ebpf-sidecar-run-risky.prom"),
    );
    let port = format!("127.0.0.1:{}", free_port());
    let st = std::process::Command::new(sidecar_bin())
        .args(["run", "--listen", &port, "--seccomp-out"])
        .arg(&prof)
        .arg("--metrics-out")
        .arg(&prom)
        .arg("--")
        .arg(&w)
        .arg("novel")
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0), "as root both calls succeed");
    let m = Metrics::parse(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(
        m.sum(
            "ebpf_sidecar_risky_syscalls_total",
            &[("syscall", "unshare")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("ebpf_sidecar_risky_syscalls_total", &[]),
        1.0,
        "nothing else risky"
    );
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&prof).unwrap()).unwrap();
    let names = p["syscalls"][0]["names"].as_array().unwrap();
    assert!(names.iter().any(|n| n == "sysinfo") && names.iter().any(|n| n == "unshare"));
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
}

/// The family hooks the watched syscalls' own tracepoints, raw sys_enter when tracefs is out of
/// reach, or, next to the syscalls family with latency on, that family's jump slot (and net's
/// error hook its exit slot): all must see the same attempts (module loads aside, see below).
#[test]
fn the_raw_tracepoint_fallback_and_the_dispatch_see_the_same_events() {
    require_root();
    let w = workload("security_kinds");
    let counts = |tracefs: &str, probes: &str| {
        let prom = std::env::temp_dir().join(format!(
            "ebpf-sidecar-sec-hook-{tracefs}-{}.prom",
            probes.replace(',', "-")
        ));
        let port = format!("127.0.0.1:{}", free_port());
        let st = std::process::Command::new(sidecar_bin())
            .env("EBPF_SIDECAR_TRACEFS", tracefs)
            .args(["run", "--listen", &port, "--probes", probes])
            .arg("--metrics-out")
            .arg(&prom)
            .arg("--")
            .arg(&w)
            .arg("once")
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(st.status.code(), Some(0));
        let log = String::from_utf8_lossy(&st.stderr);
        for handler in ["security_sys_enter", "net_sys_exit"] {
            let line = format!("{handler} runs from the syscalls family's");
            assert_eq!(
                log.contains(&line),
                probes.starts_with("syscalls"),
                "{handler} dispatched only next to the syscalls family:\n{log}"
            );
        }
        let m = Metrics::parse(&std::fs::read_to_string(&prom).unwrap());
        let kinds: std::collections::BTreeMap<&str, f64> = [
            "privilege",
            "ptrace",
            "namespace",
            "module",
            "bpf",
            "sensitive_open",
            "connect_new_peer",
        ]
        .into_iter()
        .map(|k| {
            (
                k,
                m.sum("ebpf_sidecar_security_events_total", &[("kind", k)]),
            )
        })
        .collect();
        (kinds, m.sum("ebpf_sidecar_tcp_connect_errors_total", &[]))
    };
    let (raw, raw_refused) = counts("off", "security,net");
    let (tp, tp_refused) = counts("on", "security,net");
    let (jump, jump_refused) = counts("on", "syscalls,security,net");
    for k in [
        "privilege",
        "ptrace",
        "namespace",
        "bpf",
        "sensitive_open",
        "connect_new_peer",
    ] {
        assert_eq!(raw[k], 1.0, "{k} through raw sys_enter: {raw:?}");
        assert_eq!(tp[k], 1.0, "{k} through the syscall tracepoints: {tp:?}");
        assert_eq!(
            jump[k], 1.0,
            "{k} through the syscalls family's slot: {jump:?}"
        );
    }
    // finit_module: raw sys_enter sees the ENOSYS stub of a kernel without module support; the
    // per-syscall tracepoint exists only where modules do.
    let modules =
        std::path::Path::new("/sys/kernel/tracing/events/syscalls/sys_enter_finit_module").is_dir();
    assert_eq!(raw["module"], 1.0);
    assert_eq!(
        jump["module"], 1.0,
        "the raw handler, from the syscalls family's slot"
    );
    assert_eq!(tp["module"], f64::from(u8::from(modules)));
    // Two connects to port 1 (nothing listens): the net family's error hook took the same route.
    assert_eq!(raw_refused, 2.0, "ECONNREFUSED through raw sys_exit");
    assert_eq!(tp_refused, 2.0, "ECONNREFUSED through sys_exit_connect");
    assert_eq!(
        jump_refused, 2.0,
        "ECONNREFUSED through the syscalls family's exit slot"
    );
}

fn kind_counts(lines: &[String]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        *m.entry(v["kind"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

#[test]
fn each_event_kind_appears_exactly_once_and_only_from_the_target() {
    require_root();
    docker::sidecar_image();
    let w = workload("security_kinds");
    let mount = format!("{}:/security_kinds:ro", w.display());
    // seccomp=unconfined: a call the container's own profile refuses never reaches the syscall
    // tracepoint (seccomp runs first), so with Docker's default profile unshare, finit_module and
    // bpf attempts would not be seen at all.
    let args = [
        "--security-opt",
        "seccomp=unconfined",
        "-v",
        &mount,
        "debian:bookworm-slim",
        "sleep",
        "600",
    ];
    let app = Container::run("ebpf-sidecar-sec-events", &args);
    let other = Container::run("ebpf-sidecar-sec-events-other", &args);
    let s = Sidecar::start(&["--target-container", &app.0]);
    let lines = stream_lines(s.port, "/events", Duration::from_secs(6), || {
        docker::ok(&["exec", &other.0, "/security_kinds", "once"]);
        docker::ok(&["exec", &app.0, "/security_kinds", "once"]);
    });
    // `docker exec` itself runs in the target: runc's init drops privileges (capset, setgid,
    // setuid) before exec'ing the workload. Those are real events; they carry runc's comm.
    let (runc, lines): (Vec<String>, Vec<String>) = lines
        .into_iter()
        .partition(|l| l.contains("\"comm\":\"runc:"));
    for l in &runc {
        assert!(l.contains("\"kind\":\"privilege\""), "{l}");
    }
    let counts = kind_counts(&lines);
    let expected: std::collections::BTreeMap<String, usize> = [
        ("exec", 2), // the workload (docker exec) and sh
        ("shell", 1),
        ("privilege", 1),
        ("ptrace", 1),
        ("namespace", 1),
        // The default set: security's handler runs from the syscalls family's sys_enter, so it
        // sees the finit_module attempt even on a kernel without module support (an ENOSYS stub
        // there, with no per-syscall tracepoint).
        ("module", 1),
        ("bpf", 1),
        ("sensitive_open", 1),
        ("connect_new_peer", 1),
        ("listen_new_port", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(counts, expected, "{lines:#?}");

    let find = |kind: &str| -> serde_json::Value {
        lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|v| v["kind"] == kind)
            .unwrap()
    };
    let exec = find("exec");
    assert_eq!(exec["filename"], "/security_kinds");
    assert_eq!(exec["argv"], serde_json::json!(["/security_kinds", "once"]));
    assert_eq!(find("shell")["filename"], "/bin/sh");
    assert_eq!(find("shell")["parent_comm"], "security_kinds");
    assert_eq!(find("namespace")["syscall"], "unshare");
    assert_eq!(find("module")["syscall"], "finit_module");
    assert_eq!(find("sensitive_open")["path"], "/etc/passwd");
    assert_eq!(find("connect_new_peer")["peer"], "127.0.0.1:1");
    assert_eq!(find("listen_new_port")["port"], 48123);
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(
            v["time"].as_str().unwrap().ends_with('Z')
                && v["pid"].as_u64().unwrap() > 0
                && v["uid"] == 0
        );
    }
    // Filtering by kind.
    let only = stream_lines(
        s.port,
        "/events?kind=ptrace",
        Duration::from_secs(3),
        || {
            docker::ok(&["exec", &app.0, "/security_kinds", "once"]);
        },
    );
    assert_eq!(
        kind_counts(&only).into_iter().collect::<Vec<_>>(),
        vec![("ptrace".to_string(), 1)]
    );
    let m = s.scrape();
    assert_eq!(
        m.sum("ebpf_sidecar_security_events_total", &[("kind", "ptrace")]),
        2.0
    );
    assert_eq!(
        m.sum("ebpf_sidecar_events_lost_total", &[("probe", "security")]),
        0.0
    );
}

#[test]
fn a_flood_beyond_the_ring_buffer_counts_every_loss() {
    require_root();
    docker::sidecar_image();
    let w = workload("security_kinds");
    let mount = format!("{}:/security_kinds:ro", w.display());
    let app = Container::run(
        "ebpf-sidecar-sec-flood",
        &["-v", &mount, "debian:bookworm-slim", "sleep", "600"],
    );
    let s = Sidecar::start(&["--target-container", &app.0, "--probes", "security"]);
    const N: u64 = 200_000;
    let lines = stream_lines(s.port, "/events", Duration::from_secs(8), || {
        // The reader now keeps up with this flood on its own: stop the sidecar while it runs so
        // the ring buffer (2080 events) certainly overflows, then let it drain.
        // SAFETY: signals to the sidecar process this test started.
        unsafe { libc::kill(s.pid() as i32, libc::SIGSTOP) };
        docker::ok(&["exec", &app.0, "/security_kinds", "flood", &N.to_string()]);
        unsafe { libc::kill(s.pid() as i32, libc::SIGCONT) };
    });
    let mut received = 0;
    let mut missed = 0;
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        match v["kind"].as_str() {
            Some("ptrace") => received += 1,
            Some("lagged") => missed += v["missed"].as_u64().unwrap(),
            _ => {}
        }
    }
    let m = s.scrape();
    let lost = m.sum("ebpf_sidecar_events_lost_total", &[("probe", "security")]) as u64;
    assert_eq!(
        m.sum("ebpf_sidecar_security_events_total", &[("kind", "ptrace")]) as u64,
        N,
        "every attempt counted"
    );
    assert!(
        lost >= N - (1 << 20) / 504,
        "{N} events of 504 bytes while nothing reads overflow a 1 MiB ring buffer: lost {lost}"
    );
    assert_eq!(
        received + missed + lost,
        N,
        "received {received} + missed by the slow reader {missed} + lost in the kernel {lost}"
    );
}

/// Two sidecars at once on the shared kernel side (two `run` targets, each a slot): each reads
/// its own target's events and counts exactly, with its own sensitive paths, and the peer and
/// port both targets use are new to each (per-slot memory of what was seen).
#[test]
fn two_sidecars_on_the_shared_kernel_side_each_see_exactly_their_own_target() {
    require_root();
    let w = workload("security_kinds");
    let dir = std::env::temp_dir().join(format!("ebpf-sidecar-sec-two-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["a", "b", "ctl"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let d = dir.display();
    // (name, workload runs, writes into a/ and into b/, sensitive paths)
    let a_paths = format!("/etc/passwd,{d}/a/");
    let b_paths = format!("{d}/b/");
    let specs = [("a", 2, 2, a_paths), ("b", 3, 3, b_paths)];
    let started: Vec<_> = specs
        .iter()
        .map(|(name, runs, writes, paths)| {
            let ctl = format!("{d}/ctl/{name}");
            // Builtins but for sleep: only the workload's calls are security events, and the
            // redirections into a/ and b/ (opens for write).
            let script = format!(
                ": > {ctl}.ready
                while [ ! -e {ctl}.go ]; do sleep 0.1; done
                i=0; while [ $i -lt {runs} ]; do {w} once; i=$((i + 1)); done
                i=0; while [ $i -lt {writes} ]; do : > {d}/a/f$i; : > {d}/b/f$i; i=$((i + 1)); done
                : > {ctl}.done
                while [ ! -e {ctl}.end ]; do sleep 0.1; done",
                w = w.display()
            );
            let events = dir.join(format!("{name}.ndjson"));
            let prom = dir.join(format!("{name}.prom"));
            let mut cmd = std::process::Command::new(sidecar_bin());
            cmd.args(["run", "--kernel-side", "shared", "--listen"])
                .arg(format!("127.0.0.1:{}", free_port()));
            for p in paths.split(',') {
                cmd.args(["--sensitive-path", p]);
            }
            let child = cmd
                .arg("--events-out")
                .arg(&events)
                .arg("--metrics-out")
                .arg(&prom)
                .args(["--", "sh", "-c", &script])
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
                .spawn()
                .unwrap();
            (name, child, events, prom)
        })
        .collect();
    let exists = |p: String| std::path::Path::new(&p).exists().then_some(());
    // Both loaded (each in its own slot) before either target does anything.
    for (name, ..) in &specs {
        wait_for(
            &format!("target {name} started"),
            Duration::from_secs(90),
            || exists(format!("{d}/ctl/{name}.ready")),
        );
    }
    // One after the other: both listen on the same port.
    for (name, ..) in &specs {
        std::fs::write(format!("{d}/ctl/{name}.go"), "").unwrap();
        wait_for(
            &format!("target {name} done"),
            Duration::from_secs(30),
            || exists(format!("{d}/ctl/{name}.done")),
        );
    }
    for (name, ..) in &specs {
        std::fs::write(format!("{d}/ctl/{name}.end"), "").unwrap();
    }
    for ((name, runs, writes, _), (_, mut child, events, prom)) in specs.iter().zip(started) {
        let st = child.wait().unwrap();
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap();
        assert_eq!(st.code(), Some(0), "sidecar {name}:\n{log}");
        assert!(log.contains("kernel side: shared"), "{log}");
        let lines: Vec<String> = std::fs::read_to_string(&events)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let ev: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let of = |kind: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
            ev.iter().filter(|v| v["kind"] == kind && f(v)).count()
        };
        let wl = |v: &serde_json::Value| v["comm"] == "security_kinds";
        let runs = *runs as usize;
        assert_eq!(
            of("exec", &|v| v["filename"] == w.display().to_string()),
            runs,
            "{name}: {lines:#?}"
        );
        assert_eq!(of("shell", &|v| v["parent_comm"] == "security_kinds"), runs);
        for kind in ["privilege", "ptrace", "namespace", "module", "bpf"] {
            assert_eq!(of(kind, &wl), runs, "{name} {kind}: {lines:#?}");
        }
        // Its own prefixes only: a/ is sensitive for a (with /etc/passwd), b/ for b.
        let mine = format!("{d}/{name}/");
        let sensitive = of("sensitive_open", &|v| {
            v["path"] == "/etc/passwd" || v["path"].as_str().unwrap().starts_with(&mine)
        });
        let expected = *writes + if *name == "a" { runs } else { 0 };
        assert_eq!(sensitive, expected, "{name}: {lines:#?}");
        assert_eq!(
            of("sensitive_open", &|_| true),
            expected,
            "{name}: {lines:#?}"
        );
        // The same peer and port for both targets: new to each.
        assert_eq!(of("connect_new_peer", &|_| true), 1, "{name}: {lines:#?}");
        assert_eq!(of("listen_new_port", &|_| true), 1, "{name}: {lines:#?}");
        let m = Metrics::parse(&std::fs::read_to_string(&prom).unwrap());
        let count = |kind: &str| m.sum("ebpf_sidecar_security_events_total", &[("kind", kind)]);
        assert_eq!(count("ptrace"), runs as f64, "{name}");
        assert_eq!(count("namespace"), runs as f64, "{name}");
        assert_eq!(count("bpf"), runs as f64, "{name}");
        assert_eq!(count("sensitive_open"), expected as f64, "{name}");
        assert_eq!(count("connect_new_peer"), 1.0, "{name}");
        assert_eq!(count("listen_new_port"), 1.0, "{name}");
        assert_eq!(
            m.sum("ebpf_sidecar_events_lost_total", &[("probe", "security")]),
            0.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Docker seccomp profile `defaultAction: ALLOW` with one rule for sysinfo. (Not getppid:
/// runc calls it after installing the container's filter, so a profile refusing it stops runc.)
fn sysinfo_profile(action: &str) -> std::path::PathBuf {
    let rule = if action == "SCMP_ACT_ERRNO" {
        serde_json::json!({"names": ["sysinfo"], "action": action, "errnoRet": 1})
    } else {
        serde_json::json!({"names": ["sysinfo"], "action": action})
    };
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [rule],
    });
    let path = std::env::temp_dir().join(format!(
        "ebpf-sidecar-sysinfo-{}-{}.json",
        action.to_lowercase(),
        std::process::id()
    ));
    std::fs::write(&path, profile.to_string()).unwrap();
    path
}

/// A container whose seccomp profile refuses sysinfo with EPERM, then one whose profile kills
/// on sysinfo: 37 refused calls are `seccomp_denied_total{sysinfo,EPERM}` 37 and no call or
/// error; the kill is `seccomp_killed_total{sysinfo}` 1, one `seccomp_kill` event, and the exit
/// by SIGSYS.
#[test]
fn docker_profile_denials_and_kills_are_counted_exactly() {
    require_root();
    docker::sidecar_image();
    const N: u64 = 37;
    let counted = format!("{}:/counted:ro", workload("counted").display());
    let run = |name: &str, action: &str| {
        let profile = format!("seccomp={}", sysinfo_profile(action).display());
        Container::run(
            name,
            &[
                "--security-opt",
                &profile,
                "-v",
                &counted,
                "debian:bookworm-slim",
                "sleep",
                "600",
            ],
        )
    };

    let denying = run("ebpf-sidecar-seccomp-deny", "SCMP_ACT_ERRNO");
    let s = Sidecar::start(&["--target-container", &denying.0]);
    let out = docker::run(&["exec", &denying.0, "/counted", "sysinfo", &N.to_string()]);
    assert_eq!(out.status.code(), Some(0), "the workload ran to its end");
    let m = s.scrape();
    assert_eq!(
        m.sum(
            "ebpf_sidecar_seccomp_denied_total",
            &[("syscall", "sysinfo"), ("errno", "EPERM")]
        ),
        N as f64
    );
    assert_eq!(
        m.sum("ebpf_sidecar_syscalls_total", &[("syscall", "sysinfo")]),
        0.0,
        "a refused call is not a call"
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_syscall_errors_total",
            &[("syscall", "sysinfo")]
        ),
        0.0,
        "nor an error"
    );
    assert_eq!(m.sum("ebpf_sidecar_seccomp_killed_total", &[]), 0.0);
    drop(s);

    let killing = run("ebpf-sidecar-seccomp-kill", "SCMP_ACT_KILL_PROCESS");
    let s = Sidecar::start(&["--target-container", &killing.0]);
    let mut code = None;
    let lines = stream_lines(
        s.port,
        "/events?kind=seccomp_kill",
        Duration::from_secs(5),
        || {
            code = docker::run(&["exec", &killing.0, "/counted", "sysinfo", "1"])
                .status
                .code();
        },
    );
    assert_eq!(
        code,
        Some(128 + 31),
        "killed by SIGSYS at its first sysinfo"
    );
    assert_eq!(lines.len(), 1, "one seccomp_kill event: {lines:?}");
    let e: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(e["kind"], "seccomp_kill");
    assert_eq!(e["syscall"], "sysinfo");
    assert_eq!(e["action"], "kill");
    assert_eq!(e["comm"], "counted");
    let m = s.scrape();
    assert_eq!(
        m.sum(
            "ebpf_sidecar_seccomp_killed_total",
            &[("syscall", "sysinfo")]
        ),
        1.0
    );
    assert_eq!(m.sum("ebpf_sidecar_seccomp_killed_total", &[]), 1.0);
    assert_eq!(
        m.sum("ebpf_sidecar_seccomp_denied_total", &[]),
        0.0,
        "a kill is not also a denial"
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_process_exits_total",
            &[("comm", "counted"), ("signal", "SIGSYS")]
        ),
        1.0,
        "the exit, with its signal"
    );
    assert_eq!(
        m.sum(
            "ebpf_sidecar_security_events_total",
            &[("kind", "seccomp_kill")]
        ),
        1.0
    );
}
