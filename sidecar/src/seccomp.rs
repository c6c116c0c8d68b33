//! Seccomp advisor: turn the syscalls the target actually made into a Docker/OCI seccomp profile,
//! flag the risky ones, and read what the target is confined by today.

use serde_json::{Value, json};

use crate::tables::syscall_name;

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
