//! The enforced seccomp profile (`GET /seccomp?against=enforced`, `run --seccomp-report`): the
//! filter Docker installed in a container, read back by the sidecar and evaluated per syscall,
//! against the profile's own JSON evaluated here the way dockerd does; the advised (tightened)
//! profile proven by running the workload under it; a custom profile's actions; an unconfined
//! target.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use integration::docker::{self, Container};
use integration::*;
use serde_json::{Value, json};

/// Docker Engine 20.10.24's default profile (tests/integration/data/README.md says where from).
fn docker_default_profile() -> Value {
    let v = docker::run(&["version", "--format", "{{.Server.Version}}"]);
    let version = String::from_utf8_lossy(&v.stdout).trim().to_string();
    assert!(
        version.starts_with("20.10.24"),
        "dockerd {version:?}: the vendored default profile is 20.10.24's; vendor \
         profiles/seccomp/default.json of moby/moby at v{version} into tests/integration/data/"
    );
    let path = repo_root().join("tests/integration/data/docker-20.10.24-seccomp-default.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Capability numbers (linux/capability.h), for the names a profile's includes/excludes use.
const CAPS: &[(&str, u32)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_MODULE", 16),
    ("CAP_SYS_RAWIO", 17),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_PACCT", 20),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYS_TIME", 25),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_MKNOD", 27),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_AUDIT_CONTROL", 30),
    ("CAP_SETFCAP", 31),
    ("CAP_MAC_OVERRIDE", 32),
    ("CAP_MAC_ADMIN", 33),
    ("CAP_SYSLOG", 34),
    ("CAP_WAKE_ALARM", 35),
    ("CAP_BLOCK_SUSPEND", 36),
    ("CAP_AUDIT_READ", 37),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
    ("CAP_CHECKPOINT_RESTORE", 40),
];

fn status_hex(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let v = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    u64::from_str_radix(v.trim(), 16).unwrap()
}

fn kernel_version() -> (u32, u32) {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut it = rel.trim().split(['.', '-']);
    let mut n = || it.next().unwrap().parse::<u32>().unwrap();
    (n(), n())
}

/// What a profile lets a container with bounding set `bounding` call on x86_64, the way
/// dockerd 20.10 turns a profile into the runtime's (moby `profiles/seccomp/seccomp_linux.go`,
/// `setupSeccomp`): an entry is left out when `excludes.arches` has amd64, `excludes.caps` has a
/// capability of the bounding set, or `excludes.minKernel` ≤ the kernel; and unless
/// `includes.arches` (when given) has amd64, `includes.caps` are all in the bounding set and
/// `includes.minKernel` ≤ the kernel. Names that are not x86_64 syscalls (the kernel's
/// unistd_64.h) are dropped, as libseccomp drops them. Returns (allowed whatever the arguments,
/// allowed for some arguments only): entries with action ALLOW or LOG, without and with `args`.
fn docker_allowed(profile: &Value, bounding: u64) -> (BTreeSet<String>, BTreeSet<String>) {
    let has_cap = |name: &str| {
        let bit = CAPS
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("capability {name} is not in the test's table"))
            .1;
        bounding & (1 << bit) != 0
    };
    let kernel = kernel_version();
    let at_least = |v: &Value| {
        let mut it = v.as_str().unwrap().split('.');
        let mut n = || it.next().map_or(0, |x| x.parse::<u32>().unwrap());
        kernel >= (n(), n())
    };
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let x86_64: BTreeSet<String> = real::syscall_names().into_values().collect();
    let (mut fixed, mut args) = (BTreeSet::new(), BTreeSet::new());
    for e in profile["syscalls"].as_array().unwrap() {
        for key in ["includes", "excludes"] {
            for k in e[key].as_object().into_iter().flat_map(|o| o.keys()) {
                assert!(
                    ["arches", "caps", "minKernel"].contains(&k.as_str()),
                    "{key}.{k}: the test does not know it"
                );
            }
        }
        let (inc, exc) = (&e["includes"], &e["excludes"]);
        let out = list(&exc["arches"]).iter().any(|a| a == "amd64")
            || list(&exc["caps"]).iter().any(|c| has_cap(c))
            || (!exc["minKernel"].is_null() && at_least(&exc["minKernel"]))
            || (!list(&inc["arches"]).is_empty()
                && !list(&inc["arches"]).contains(&"amd64".into()))
            || !list(&inc["caps"]).iter().all(|c| has_cap(c))
            || (!inc["minKernel"].is_null() && !at_least(&inc["minKernel"]));
        let action = e["action"].as_str().unwrap();
        if out || !["SCMP_ACT_ALLOW", "SCMP_ACT_LOG"].contains(&action) {
            continue;
        }
        let conditional = e["args"].as_array().is_some_and(|a| !a.is_empty());
        for n in list(&e["names"]).into_iter().filter(|n| x86_64.contains(n)) {
            if conditional {
                args.insert(n);
            } else {
                fixed.insert(n);
            }
        }
    }
    // A syscall also allowed unconditionally is allowed whatever its arguments.
    let args = &args - &fixed;
    (fixed, args)
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|e| {
            e.as_str()
                .or_else(|| e["syscall"].as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

fn enforced_report(port: u16) -> Value {
    let (code, ct, body) = http_get(port, "/seccomp?against=enforced", None).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(ct, "application/json");
    serde_json::from_str(&body).unwrap()
}

/// `try_syscalls` of each name in `calls` in a fresh container (extra `docker run` flags
/// first): errno by name (0: succeeded).
fn try_in_container(extra: &[&str], calls: &[&str]) -> BTreeMap<String, i32> {
    let numbers: BTreeMap<String, u64> = real::syscall_names()
        .into_iter()
        .map(|(nr, n)| (n, nr))
        .collect();
    let mount = format!("{}:/try_syscalls:ro", workload("try_syscalls").display());
    let nrs: Vec<String> = calls.iter().map(|c| numbers[*c].to_string()).collect();
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(extra);
    a.extend(["-v", &mount, "debian:bookworm-slim", "/try_syscalls"]);
    a.extend(nrs.iter().map(String::as_str));
    let out = docker::ok(&a);
    calls
        .iter()
        .zip(out.lines())
        .map(|(c, l)| {
            let (nr, errno) = l.split_once(' ').unwrap();
            assert_eq!(nr, numbers[*c].to_string());
            (c.to_string(), errno.parse().unwrap())
        })
        .collect()
}

/// A container of `counted serve` (the example workload), running its work once.
fn counted_app(name: &str, extra: &[&str]) -> Container {
    let mount = format!("{}:/counted:ro", workload("counted").display());
    let try_mount = format!("{}:/try_syscalls:ro", workload("try_syscalls").display());
    let mut a: Vec<&str> = extra.to_vec();
    a.extend([
        "-v",
        &mount,
        "-v",
        &try_mount,
        "debian:bookworm-slim",
        "/counted",
        "serve",
        "100",
        "3",
        "2",
        "42",
    ]);
    let app = Container::run(name, &a);
    wait_for("workload ready", Duration::from_secs(20), || {
        app.logs().contains("ready").then_some(())
    });
    app
}

fn run_work(app: &Container) {
    docker::ok(&["kill", "-s", "USR1", &app.0]);
    wait_for("workload done", Duration::from_secs(20), || {
        app.logs().contains("done 42").then_some(())
    });
}

/// Docker's default profile on the example workload: the sidecar's allowed set (allowed always
/// plus allowed for some arguments) is what the profile's JSON gives for this container's
/// capabilities; allowed-but-unused is that set minus what the target made; nothing is denied
/// that it used. The advised profile (the tightening) runs the workload, and calls it removed get
/// EPERM where Docker's default let them run.
#[test]
fn docker_default_profile_read_back_and_tightened() {
    require_root();
    docker::base_images();
    let profile = docker_default_profile();
    let app = counted_app("ebpf-sidecar-seccomp-default", &[]);
    let s = Sidecar::start(&["--target-container", &app.0]);
    run_work(&app);

    let r = enforced_report(s.port);
    let e = &r["enforced"];
    assert_eq!(e["mode"], "filter", "{r}");
    assert_eq!(e["filters"], 1, "runc installs one filter");
    assert_eq!(e["pid"], app.host_pid());
    let bounding = status_hex(app.host_pid(), "CapBnd:");
    let (fixed, conditional) = docker_allowed(&profile, bounding);
    assert_eq!(
        names(&e["allowed"]),
        fixed,
        "allowed whatever the arguments"
    );
    assert_eq!(
        names(&e["depends_on_arguments"]),
        conditional,
        "allowed for some arguments"
    );
    // For a default container that is clone (without namespace flags) and personality (five
    // values): both allowed or EPERM by their arguments.
    let both = json!([{"action": "errno", "errno": "EPERM"}, {"action": "allow"}]);
    assert_eq!(
        e["depends_on_arguments"],
        json!([
            {"syscall": "clone", "outcomes": both},
            {"syscall": "personality", "outcomes": both},
        ])
    );
    let allowed: BTreeSet<String> = &fixed | &conditional;
    // Everything else of the table is denied, with the profile's default (EPERM) or clone3's
    // ENOSYS (runc also answers ENOSYS for syscalls newer than its libseccomp knows).
    let denied = e["denied"].as_array().unwrap();
    assert!(denied.iter().all(|d| d["action"] == "errno"), "{denied:?}");
    assert!(denied.contains(&json!({"syscall": "clone3", "action": "errno", "errno": "ENOSYS"})));
    assert!(denied.contains(&json!({"syscall": "mount", "action": "errno", "errno": "EPERM"})));
    assert!(names(&e["denied"]).is_disjoint(&allowed));

    // What the target made, as the sidecar counted it (the same as its syscall series).
    let observed = names(&r["observed"]);
    let m = s.scrape();
    let counted: BTreeSet<String> = m
        .matching("ebpf_sidecar_syscalls_total", &[])
        .map(|(l, _)| l["syscall"].clone())
        .collect();
    assert_eq!(observed, counted);
    for used in ["getppid", "openat", "wait4", "rt_sigsuspend", "execve"] {
        assert!(observed.contains(used), "{used} in {observed:?}");
    }
    let unused: BTreeSet<String> = &allowed - &observed;
    assert_eq!(names(&r["allowed_but_unused"]), unused);
    assert_eq!(
        m.sum("ebpf_sidecar_seccomp_allowed_unused_syscalls", &[]),
        unused.len() as f64
    );
    assert_eq!(
        r["used_but_denied"],
        json!([]),
        "the workload runs as it is"
    );
    assert_eq!(m.sum("ebpf_sidecar_seccomp_denied_total", &[]), 0.0);

    // The text table says the same.
    let (code, ct, text) = http_get(s.port, "/seccomp?against=enforced&format=text", None).unwrap();
    assert_eq!((code, ct.as_str()), (200, "text/plain; charset=utf-8"));
    assert!(
        text.starts_with(&format!(
            "enforced: seccomp filter mode, 1 filter(s), pid {}, x86_64\n",
            app.host_pid()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "allowed but never used ({}): a profile of the observed calls removes these",
            unused.len()
        )),
        "{text}"
    );

    // The tightening: the advised profile runs the workload...
    let advised = &r["advised"];
    let path = std::env::temp_dir().join("ebpf-sidecar-seccomp-tightened.json");
    std::fs::write(&path, format!("{advised:#}")).unwrap();
    let opt = format!("seccomp={}", path.display());
    let out = counted::run_under_seccomp(&path);
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and refuses calls of the removed set with EPERM, which Docker's default lets run.
    let kept = names(&advised["syscalls"][0]["names"]);
    let removed: BTreeSet<String> = &unused - &kept;
    let probes = ["sysinfo", "uname", "times", "getpriority"];
    for p in probes {
        assert!(removed.contains(p), "{p} must be in the removed set");
    }
    let tightened = try_in_container(&["--security-opt", &opt], &probes);
    let default = try_in_container(&[], &probes);
    for p in probes {
        assert_eq!(tightened[p], libc::EPERM, "{p} under the tightened profile");
        assert_ne!(default[p], libc::EPERM, "{p} under Docker's default");
    }
}

/// A custom profile: Docker's default with sysinfo answering ENOSYS, getpriority trapping,
/// getcpu killing the process, uname left to the default (EPERM) and times logged. The sidecar
/// reads each action; the calls the target then tries and the profile refuses are
/// used-but-denied, with the refusals counted.
#[test]
fn custom_profile_actions_and_refused_calls() {
    require_root();
    docker::base_images();
    let mut profile = docker_default_profile();
    let changed = ["sysinfo", "getpriority", "getcpu", "uname", "times"];
    {
        let list = profile["syscalls"][0]["names"].as_array_mut().unwrap();
        let before = list.len();
        list.retain(|n| !changed.contains(&n.as_str().unwrap()));
        assert_eq!(list.len(), before - changed.len(), "all in the main list");
    }
    let extra = json!([
        {"names": ["sysinfo"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
        {"names": ["getpriority"], "action": "SCMP_ACT_TRAP"},
        {"names": ["getcpu"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["times"], "action": "SCMP_ACT_LOG"},
    ]);
    profile["syscalls"]
        .as_array_mut()
        .unwrap()
        .extend(extra.as_array().unwrap().iter().cloned());
    let path = std::env::temp_dir().join("ebpf-sidecar-seccomp-custom.json");
    std::fs::write(&path, profile.to_string()).unwrap();
    let opt = format!("seccomp={}", path.display());

    let app = counted_app("ebpf-sidecar-seccomp-custom", &["--security-opt", &opt]);
    let s = Sidecar::start(&["--target-container", &app.0]);
    run_work(&app);
    let numbers: BTreeMap<String, u64> = real::syscall_names()
        .into_iter()
        .map(|(nr, n)| (n, nr))
        .collect();
    let tries: Vec<String> = ["sysinfo", "uname", "times"]
        .iter()
        .map(|c| numbers[*c].to_string())
        .collect();
    let mut a = vec!["exec", app.0.as_str(), "/try_syscalls"];
    a.extend(tries.iter().map(String::as_str));
    let out = docker::ok(&a);
    let want = format!(
        "{} 38\n{} 1\n{} 0",
        numbers["sysinfo"], numbers["uname"], numbers["times"]
    );
    assert_eq!(
        out, want,
        "refused: sysinfo ENOSYS, uname EPERM; times logged and run"
    );

    let r = enforced_report(s.port);
    let e = &r["enforced"];
    let bounding = status_hex(app.host_pid(), "CapBnd:");
    let (fixed, conditional) = docker_allowed(&profile, bounding);
    assert!(fixed.contains("times") && !fixed.contains("uname"));
    assert_eq!(names(&e["allowed"]), fixed);
    assert_eq!(names(&e["depends_on_arguments"]), conditional);
    let denied: BTreeMap<String, Value> = e["denied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["syscall"].as_str().unwrap().to_string(), d.clone()))
        .collect();
    assert_eq!(
        denied["sysinfo"],
        json!({"syscall": "sysinfo", "action": "errno", "errno": "ENOSYS"})
    );
    assert_eq!(
        denied["getpriority"],
        json!({"syscall": "getpriority", "action": "trap"})
    );
    assert_eq!(
        denied["getcpu"],
        json!({"syscall": "getcpu", "action": "kill_process"})
    );
    assert_eq!(
        denied["uname"],
        json!({"syscall": "uname", "action": "errno", "errno": "EPERM"})
    );
    assert_eq!(
        r["used_but_denied"],
        json!([
            {"syscall": "sysinfo", "action": "errno", "errno": "ENOSYS", "refused": 1},
            {"syscall": "uname", "action": "errno", "errno": "EPERM", "refused": 1},
        ])
    );
    assert!(names(&r["observed"]).contains("times"), "logged calls run");
    // `docker exec`: runc joins a new session keyring inside the container before it installs
    // the filter, so keyctl ran there although the profile denies it. Not a call the profile
    // broke: with refusals counted, only refused calls are used-but-denied.
    assert!(names(&r["observed"]).contains("keyctl"));
    assert_eq!(
        denied["keyctl"],
        json!({"syscall": "keyctl", "action": "errno", "errno": "EPERM"})
    );
}

/// A target without seccomp: the report says there is no filter, and the gauge is absent.
#[test]
fn unconfined_target_has_no_filter() {
    require_root();
    docker::base_images();
    let app = counted_app(
        "ebpf-sidecar-seccomp-unconfined",
        &["--security-opt", "seccomp=unconfined"],
    );
    let s = Sidecar::start(&["--target-container", &app.0]);
    run_work(&app);
    let r = enforced_report(s.port);
    assert_eq!(r["enforced"], Value::Null, "{r}");
    assert_eq!(
        r["reason"],
        format!(
            "the target has no seccomp filter (Seccomp: 0 in /proc/{}/status)",
            app.host_pid()
        )
    );
    assert!(names(&r["advised"]["syscalls"][0]["names"]).contains("getppid"));
    let m = s.scrape();
    assert_eq!(
        m.matching("ebpf_sidecar_seccomp_allowed_unused_syscalls", &[])
            .count(),
        0,
        "no filter, no gauge"
    );
    let (code, _, text) = http_get(s.port, "/seccomp?against=enforced&format=text", None).unwrap();
    assert_eq!(code, 200);
    assert!(
        text.starts_with("enforced: none (the target has no seccomp filter"),
        "{text}"
    );
    let (code, _, msg) = http_get(s.port, "/seccomp?against=nothing", None).unwrap();
    assert_eq!(
        (code, msg.as_str()),
        (
            400,
            "against takes one value: enforced (the profile the target runs under)\n"
        )
    );
}

/// `run --seccomp-report`: written at the command's exit, with the advised profile of
/// --seccomp-out; the command (started by the sidecar, unconfined here) has no filter.
#[test]
fn run_writes_the_report() {
    require_root();
    let dir = std::env::temp_dir();
    let (report, profile) = (
        dir.join("ebpf-sidecar-run-seccomp-report.json"),
        dir.join("ebpf-sidecar-run-seccomp-report-profile.json"),
    );
    let _ = std::fs::remove_file(&report);
    let port = format!("127.0.0.1:{}", free_port());
    let out = std::process::Command::new(sidecar_bin())
        .args(["run", "--listen", &port, "--seccomp-report"])
        .arg(&report)
        .arg("--seccomp-out")
        .arg(&profile)
        .arg("--")
        .arg(workload("counted"))
        .args(["run", "10", "1", "0", "7"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    assert_eq!(r["enforced"], Value::Null);
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the target has no seccomp filter (Seccomp: 0 in /proc/"),
        "{reason}"
    );
    assert_eq!(r["advised"], p);
    assert!(names(&r["observed"]).contains("getppid"));

    let out = std::process::Command::new(sidecar_bin())
        .args(["run", "--probes", "process", "--seccomp-report"])
        .arg(&report)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--seccomp-report needs the syscalls probe family: add syscalls to --probes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The filter is read with the start-up capabilities: a target restarted after the sidecar
/// dropped them is not read again, and the report says why and what to do (no stale table, no
/// gauge).
#[test]
fn a_restarted_target_is_not_read_again_and_says_why() {
    require_root();
    docker::base_images();
    let app = counted_app("ebpf-sidecar-seccomp-restart", &[]);
    let s = Sidecar::start(&["--target-container", &app.0]);
    let before = enforced_report(s.port);
    assert_eq!(before["enforced"]["pid"], app.host_pid());
    let first = app.host_pid();
    docker::ok(&["restart", "-t", "1", &app.0]);
    wait_for("the restarted target", Duration::from_secs(30), || {
        let r = enforced_report(s.port);
        (r["enforced"].is_null() && app.host_pid() != first).then_some(r)
    });
    let r = enforced_report(s.port);
    let reason = r["reason"].as_str().unwrap();
    // Checked before the target is stopped: it is not disturbed for a read bound to fail.
    assert_eq!(
        reason,
        "the target's seccomp filter could not be read: reading a seccomp filter needs \
         CAP_SYS_ADMIN, which the sidecar does not have (--cap-add SYS_ADMIN; it reads at start, \
         before it drops its capabilities); the target changed after the sidecar dropped its \
         start-up capabilities: restart the sidecar to read it"
    );
    let m = s.scrape();
    assert_eq!(
        m.matching("ebpf_sidecar_seccomp_allowed_unused_syscalls", &[])
            .count(),
        0
    );
}
