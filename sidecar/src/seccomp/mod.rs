//! Seccomp advisor: turn the syscalls the target actually made into a Docker/OCI seccomp profile,
//! flag the risky ones, and read what the target is confined by today: its mode from
//! `/proc/<pid>/status` ([`confinement`]) and its enforced filters, evaluated per syscall
//! ([`enforced`], with the classic-BPF interpreter in [`cbpf`]), compared with what it did
//! ([`report`]).

pub mod cbpf;
pub mod enforced;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::tables::syscall_name;
use enforced::{Enforced, Mode, Verdict};

/// Syscalls the container runtime (runc, crun) makes between installing the profile and
/// exec'ing the app, plus what every dynamically linked program needs before main(). A profile of
/// only what the app did after it started would stop the container from starting, because the
/// app's first syscalls happen before the sidecar can see it. Verified by the security test:
/// a container started with a profile of (observed ∪ this list) runs its workload.
pub const RUNTIME_BASELINE: &[&str] = &[
    // runc 1.1 init after it installed the filter, measured with scripts/measure-runc-baseline.sh:
    // read write close fstat nanosleep getpid execve fcntl getcwd chdir setuid setgid getppid
    // setgroups capget capset fstatfs prctl futex getdents64 epoll_ctl openat newfstatat
    // epoll_pwait faccessat2
    "read",
    "write",
    "close",
    "fstat",
    "nanosleep",
    "getpid",
    "execve",
    "fcntl",
    "getcwd",
    "chdir",
    "setuid",
    "setgid",
    "getppid",
    "setgroups",
    "capget",
    "capset",
    "fstatfs",
    "prctl",
    "futex",
    "getdents64",
    "epoll_ctl",
    "openat",
    "newfstatat",
    "epoll_pwait",
    "faccessat2",
    // the Go runtime of the init may also need these on other schedules (signals, threads, memory)
    "rt_sigreturn",
    "rt_sigprocmask",
    "rt_sigaction",
    "sigaltstack",
    "tgkill",
    "gettid",
    "sched_yield",
    "clone",
    "clone3",
    "mmap",
    "munmap",
    "madvise",
    "exit",
    "exit_group",
    // crun and the dynamic loader and libc start-up of the app
    "execveat",
    "close_range",
    "brk",
    "mprotect",
    "arch_prctl",
    "access",
    "pread64",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "getrandom",
    "statx",
];

/// Syscalls that widen what a process can do or reach beyond its container.
pub const RISKY: &[&str] = &[
    "ptrace",
    "mount",
    "umount2",
    "unshare",
    "setns",
    "bpf",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "keyctl",
    "add_key",
    "request_key",
    "personality",
    "process_vm_writev",
    "process_vm_readv",
    "open_by_handle_at",
    "name_to_handle_at",
    "pivot_root",
    "chroot",
    "swapon",
    "swapoff",
    "reboot",
    "perf_event_open",
    "userfaultfd",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
    "iopl",
    "ioperm",
    "acct",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "quotactl",
    "lookup_dcookie",
];

/// Docker/OCI seccomp profile allowing `observed` (syscall numbers) plus the runtime baseline.
pub fn profile(observed: &[u32], with_baseline: bool) -> Value {
    let mut names: Vec<String> = observed
        .iter()
        .map(|n| syscall_name(*n))
        .filter(|n| !n.starts_with("syscall_") && n != "unknown")
        .collect();
    if with_baseline {
        names.extend(RUNTIME_BASELINE.iter().map(|s| s.to_string()));
    }
    names.sort();
    names.dedup();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{ "names": names, "action": "SCMP_ACT_ALLOW" }],
    })
}

/// What the target did, as the syscalls family counted it.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// Syscall numbers the target made (calls that ran, or with `--syscall-latency off` every
    /// call, refused ones included).
    pub observed: Vec<u32>,
    /// Calls its seccomp filter refused, by syscall number (`--syscall-latency on`; `None`:
    /// not told apart).
    pub refused: Option<BTreeMap<u32, u64>>,
}

/// Syscalls the enforced profile lets run (always, or for some arguments) that the target never
/// made: what a profile of the observed calls would remove.
pub fn allowed_unused(e: &Enforced, observed: &[u32]) -> Vec<u32> {
    let seen: BTreeSet<u32> = observed.iter().copied().collect();
    e.permitted().filter(|nr| !seen.contains(nr)).collect()
}

/// `GET /seccomp?against=enforced`: the enforced profile (or why there is none), what it allows
/// that the target never used, what the target used that it denies, and the advised profile.
///
/// `allowed_but_unused` counts syscalls that depend on arguments as allowed: some call of them
/// runs, and an advised profile that leaves them out refuses every call.
/// `used_but_denied` holds the syscalls the target tried that the profile refused. With refused
/// calls told apart (`--syscall-latency on`) those are exactly the refused ones: a call that ran
/// was let through, and one that ran while the profile denies it came from a process this filter
/// did not confine yet (the runtime before it installs it: `docker exec`'s keyctl). Without,
/// every call is counted as made, so the syscalls the target made that the profile denies
/// whatever the arguments.
pub fn report(enforced: Result<&Enforced, &str>, usage: &Usage, baseline: bool) -> Value {
    let advised = profile(&usage.observed, baseline);
    let observed: BTreeSet<u32> = usage.observed.iter().copied().collect();
    let names = |nrs: &mut dyn Iterator<Item = u32>| -> Vec<String> {
        let mut v: Vec<String> = nrs.map(syscall_name).collect();
        v.sort();
        v
    };
    let observed_names = names(&mut observed.iter().copied());
    let e = match enforced {
        Ok(e) => e,
        Err(reason) => {
            return json!({
                "enforced": null,
                "reason": reason,
                "observed": observed_names,
                "advised": advised,
            });
        }
    };
    let (mode, filters) = match e.mode {
        Mode::Strict => ("strict", 0),
        Mode::Filter(n) => ("filter", n),
    };
    let mut allowed = Vec::new();
    let mut denied = Vec::new();
    let mut depends = Vec::new();
    for (nr, v) in &e.table {
        match v {
            Verdict::Fixed(a) if a.allows() => allowed.push(syscall_name(*nr)),
            Verdict::Fixed(a) => denied.push(entry(*nr, a.json())),
            Verdict::DependsOnArguments(all) => depends.push(outcomes(*nr, all)),
        }
    }
    allowed.sort();
    let by_name = |v: &mut Vec<Value>| {
        v.sort_by(|a, b| a["syscall"].as_str().cmp(&b["syscall"].as_str()));
    };
    by_name(&mut denied);
    by_name(&mut depends);
    let refused = |nr: u32| {
        usage
            .refused
            .as_ref()
            .map(|r| r.get(&nr).copied().unwrap_or(0))
    };
    let tried: BTreeSet<u32> = match &usage.refused {
        Some(r) => r
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(nr, _)| *nr)
            .collect(),
        None => observed.clone(),
    };
    let mut broken = Vec::new();
    for nr in tried {
        let mut item = match e.table.get(&nr) {
            Some(Verdict::Fixed(a)) if !a.allows() => entry(nr, a.json()),
            // Refused for some arguments (only known when refusals are counted).
            Some(Verdict::DependsOnArguments(all)) if usage.refused.is_some() => outcomes(nr, all),
            _ => continue,
        };
        item["refused"] = json!(refused(nr));
        broken.push(item);
    }
    by_name(&mut broken);
    json!({
        "enforced": {
            "mode": mode,
            "filters": filters,
            "pid": e.pid,
            "arch": "x86_64",
            "allowed": allowed,
            "denied": denied,
            "depends_on_arguments": depends,
        },
        "observed": observed_names,
        "allowed_but_unused": names(&mut allowed_unused(e, &usage.observed).into_iter()),
        "used_but_denied": broken,
        "advised": advised,
    })
}

/// `{"syscall": name, …action}`.
fn entry(nr: u32, action: Value) -> Value {
    let mut v = json!({ "syscall": syscall_name(nr) });
    if let (Some(o), Value::Object(a)) = (v.as_object_mut(), action) {
        o.extend(a);
    }
    v
}

fn outcomes(nr: u32, all: &BTreeSet<enforced::Action>) -> Value {
    json!({
        "syscall": syscall_name(nr),
        "outcomes": all.iter().map(|a| a.json()).collect::<Vec<_>>(),
    })
}

/// An action as `entry`/`outcomes` wrote it, for the text table.
fn action_text(v: &Value) -> String {
    let mut s = v["action"].as_str().unwrap_or("?").to_string();
    for key in ["errno", "data", "value"] {
        match &v[key] {
            Value::String(x) => write!(s, " {x}").unwrap_or(()),
            Value::Number(x) => write!(s, " {x}").unwrap_or(()),
            _ => {}
        }
    }
    s
}

/// The text table of a [`report`] (`?against=enforced&format=text`).
pub fn report_text(r: &Value) -> String {
    let mut out = String::new();
    let list = |v: &Value| -> Vec<Value> { v.as_array().cloned().unwrap_or_default() };
    let advised = r["advised"]["syscalls"][0]["names"]
        .as_array()
        .map_or(0, Vec::len);
    let observed = list(&r["observed"]).len();
    let e = &r["enforced"];
    if e.is_null() {
        let reason = r["reason"].as_str().unwrap_or("");
        let _ = writeln!(out, "enforced: none ({reason})");
        let _ = writeln!(out, "observed: {observed} syscalls");
        let _ = writeln!(
            out,
            "advised profile: {advised} syscalls allowed (GET /seccomp)"
        );
        return out;
    }
    let _ = writeln!(
        out,
        "enforced: seccomp {} mode, {} filter(s), pid {}, {}",
        e["mode"].as_str().unwrap_or(""),
        e["filters"],
        e["pid"],
        e["arch"].as_str().unwrap_or("")
    );
    let depends = list(&e["depends_on_arguments"]);
    let _ = writeln!(
        out,
        "  allowed {}, denied {}, depends on arguments {}; observed {observed}",
        list(&e["allowed"]).len(),
        list(&e["denied"]).len(),
        depends.len(),
    );
    let unused = list(&r["allowed_but_unused"]);
    let _ = writeln!(
        out,
        "\nallowed but never used ({}): a profile of the observed calls removes these",
        unused.len()
    );
    for row in unused.chunks(4) {
        let cells: Vec<String> = row
            .iter()
            .map(|v| format!("{:<24}", v.as_str().unwrap_or("")))
            .collect();
        let _ = writeln!(out, "  {}", cells.concat().trim_end());
    }
    let broken = list(&r["used_but_denied"]);
    let _ = writeln!(
        out,
        "\nused but denied ({}): these calls fail or kill",
        broken.len()
    );
    let _ = writeln!(out, "  {:<24}{:<32}refused", "SYSCALL", "ACTION");
    for b in &broken {
        let action = if b["outcomes"].is_array() {
            list(&b["outcomes"])
                .iter()
                .map(action_text)
                .collect::<Vec<_>>()
                .join(" | ")
        } else {
            action_text(b)
        };
        let refused = match &b["refused"] {
            Value::Number(n) => n.to_string(),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:<24}{:<32}{refused}",
            b["syscall"].as_str().unwrap_or(""),
            action
        );
    }
    let _ = writeln!(out, "\ndepends on arguments ({})", depends.len());
    for d in &depends {
        let outs: Vec<String> = list(&d["outcomes"]).iter().map(action_text).collect();
        let _ = writeln!(
            out,
            "  {:<24}{}",
            d["syscall"].as_str().unwrap_or(""),
            outs.join(" | ")
        );
    }
    let _ = writeln!(
        out,
        "\nadvised profile: {advised} syscalls allowed (the \"advised\" member of the JSON, or GET /seccomp)"
    );
    out
}

/// What `/proc/<pid>/status` says confines a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confinement {
    /// 0 disabled, 1 strict, 2 filter.
    pub seccomp_mode: u64,
    pub seccomp_filters: u64,
    pub no_new_privs: bool,
    /// (set name, bitmask): inheritable, permitted, effective, bounding, ambient.
    pub capabilities: Vec<(&'static str, u64)>,
}

pub fn confinement(pid: u32) -> Option<Confinement> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

pub fn parse_status(status: &str) -> Option<Confinement> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let dec = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    let hex = |name: &str| field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
    let mut caps = Vec::new();
    for (set, key) in [
        ("inheritable", "CapInh:"),
        ("permitted", "CapPrm:"),
        ("effective", "CapEff:"),
        ("bounding", "CapBnd:"),
        ("ambient", "CapAmb:"),
    ] {
        caps.push((set, hex(key)?));
    }
    Some(Confinement {
        seccomp_mode: dec("Seccomp:").unwrap_or(0),
        seccomp_filters: dec("Seccomp_filters:").unwrap_or(0),
        no_new_privs: dec("NoNewPrivs:") == Some(1),
        capabilities: caps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_has_observed_and_baseline() {
        let p = profile(&[110, 257, 500], true);
        let names = p["syscalls"][0]["names"].as_array().unwrap();
        let has = |n: &str| names.iter().any(|v| v == n);
        assert!(has("getppid") && has("openat") && has("execve") && has("futex"));
        assert!(
            !names
                .iter()
                .any(|v| v.as_str().unwrap().starts_with("syscall_"))
        );
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let bare = profile(&[110], false);
        assert_eq!(bare["syscalls"][0]["names"], json!(["getppid"]));
    }

    #[test]
    fn status() {
        let s = "Name:\tx\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\nCapInh:\t0000000000000000\n\
                 CapPrm:\t00000000a80425fb\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\n";
        let c = parse_status(s).unwrap();
        assert_eq!(c.seccomp_mode, 2);
        assert!(c.no_new_privs);
        assert_eq!(c.capabilities[2], ("effective", 0xa80425fb));
        assert!(parse_status("Name: x\n").is_none());
    }

    /// A profile allowing read, write, getppid; personality depends on its argument; getpid
    /// killed; the rest EPERM.
    fn small() -> Enforced {
        use cbpf::*;
        let ld = |k| SockFilter::stmt(BPF_LD | BPF_W | BPF_ABS, k);
        let jeq = |k, jt, jf| SockFilter::jump(BPF_JMP | BPF_JEQ | BPF_K, k, jt, jf);
        let ret = |k| SockFilter::stmt(BPF_RET | BPF_K, k);
        let prog = vec![
            ld(0),
            jeq(0, 3, 0),
            jeq(1, 2, 0),
            jeq(110, 1, 0),
            SockFilter::stmt(BPF_JMP | BPF_JA, 1),
            ret(0x7fff_0000),
            jeq(39, 0, 1),
            ret(0x8000_0000),
            jeq(135, 0, 3),
            ld(16),
            jeq(8, 0, 1),
            ret(0x7fff_0000),
            ret(0x0005_0001),
        ];
        Enforced::from_filters(1, &[prog]).unwrap()
    }

    #[test]
    fn report_against_enforced() {
        let e = small();
        // Used: read, getppid (allowed), getpid (denied: made by a process the filter did not
        // confine yet), personality (refused once: seen by the denied table), uname (refused 3
        // times).
        let usage = Usage {
            observed: vec![0, 110, 39],
            refused: Some([(135, 1), (63, 3)].into()),
        };
        let r = report(Ok(&e), &usage, false);
        assert_eq!(r["enforced"]["mode"], "filter");
        assert_eq!(r["enforced"]["filters"], 1);
        assert_eq!(
            r["enforced"]["allowed"],
            json!(["getppid", "read", "write"])
        );
        assert_eq!(
            r["enforced"]["depends_on_arguments"],
            json!([{"syscall": "personality", "outcomes": [
                {"action": "errno", "errno": "EPERM"}, {"action": "allow"}]}])
        );
        let denied = r["enforced"]["denied"].as_array().unwrap();
        assert_eq!(denied.len(), crate::tables::SYSCALLS.len() - 4);
        assert!(denied.contains(&json!({"syscall": "getpid", "action": "kill_process"})));
        assert!(denied.contains(&json!({"syscall": "uname", "action": "errno", "errno": "EPERM"})));
        // write never used; personality counts as allowed (some calls run).
        assert_eq!(r["allowed_but_unused"], json!(["personality", "write"]));
        assert_eq!(
            r["used_but_denied"],
            json!([
                {"syscall": "personality", "outcomes": [
                    {"action": "errno", "errno": "EPERM"}, {"action": "allow"}], "refused": 1},
                {"syscall": "uname", "action": "errno", "errno": "EPERM", "refused": 3},
            ])
        );
        assert_eq!(r["observed"], json!(["getpid", "getppid", "read"]));
        assert_eq!(r["advised"], profile(&usage.observed, false));
        assert_eq!(allowed_unused(&e, &usage.observed), [1, 135]);

        let text = report_text(&r);
        for line in [
            "enforced: seccomp filter mode, 1 filter(s), pid 1, x86_64",
            "allowed but never used (2): a profile of the observed calls removes these",
            "  personality             write",
            "used but denied (2): these calls fail or kill",
            "  personality             errno EPERM | allow             1",
            "  uname                   errno EPERM                     3",
            "depends on arguments (1)",
            "advised profile: 3 syscalls allowed",
        ] {
            assert!(text.contains(line), "{line:?} in:\n{text}");
        }

        // Latency off: refused calls are counted as made, so a denied syscall made is listed
        // (refusals unknown), a conditional one is not.
        let off = Usage {
            observed: vec![0, 135, 39],
            refused: None,
        };
        let r = report(Ok(&e), &off, false);
        assert_eq!(
            r["used_but_denied"],
            json!([{"syscall": "getpid", "action": "kill_process", "refused": null}])
        );
        assert_eq!(r["allowed_but_unused"], json!(["getppid", "write"]));
        assert!(
            report_text(&r)
                .contains("  getpid                  kill_process                    -\n")
        );
    }

    #[test]
    fn report_without_a_filter() {
        let usage = Usage {
            observed: vec![110],
            refused: None,
        };
        let r = report(Err("the target has no seccomp filter"), &usage, false);
        assert_eq!(
            r,
            json!({
                "enforced": null,
                "reason": "the target has no seccomp filter",
                "observed": ["getppid"],
                "advised": profile(&[110], false),
            })
        );
        assert_eq!(
            report_text(&r),
            "enforced: none (the target has no seccomp filter)\nobserved: 1 syscalls\n\
             advised profile: 1 syscalls allowed (GET /seccomp)\n"
        );
    }

    #[test]
    fn lists_are_real_syscalls() {
        use crate::tables::SYSCALLS;
        for n in RUNTIME_BASELINE.iter().chain(RISKY) {
            assert!(
                SYSCALLS.iter().any(|(_, s)| s == n),
                "{n} is not an x86_64 syscall"
            );
        }
    }
}
