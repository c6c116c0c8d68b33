//! The seccomp profile a process is under, read from the kernel: its filters (ptrace's
//! PTRACE_SECCOMP_GET_FILTER) evaluated for every x86_64 syscall into allowed, denied (with the
//! action) and depends-on-arguments.
//!
//! Reading needs, of the reader: CAP_SYS_ADMIN (the kernel's check for
//! PTRACE_SECCOMP_GET_FILTER), no seccomp filter of its own (the kernel refuses a confined
//! reader), and ptrace access to the process (same user and a superset of its capabilities, or
//! CAP_SYS_PTRACE). The sidecar reads while it still has its start-up capabilities.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use thiserror::Error;

use super::cbpf::{self, CbpfError, Return, SockFilter};
use crate::tables::{SYSCALLS, errno_name};

/// `AUDIT_ARCH_X86_64`: what a 64-bit process's seccomp_data.arch holds.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
const SECCOMP_RET_KILL_THREAD: u32 = 0x0000_0000;
const SECCOMP_RET_TRAP: u32 = 0x0003_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
const SECCOMP_RET_LOG: u32 = 0x7ffc_0000;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ACTION_FULL: u32 = 0xffff_0000;
const SECCOMP_RET_DATA: u32 = 0x0000_ffff;

/// linux/ptrace.h; not in the libc crate.
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
/// Filters one process may carry before we stop asking (the kernel caps the instructions of all
/// of them at 256 Ki, each costing its length plus 4: at least 5 per filter).
const MAX_FILTERS: usize = 256 * 1024 / 5;
/// How long the process may take to stop for us (it stops at its next return to user space).
const STOP_WAIT: Duration = Duration::from_secs(2);
/// /proc/<pid>/status is a few kB; the name in it is the process's to choose, so the read is
/// bounded anyway.
const STATUS_LIMIT: u64 = 64 * 1024;

/// What the kernel does with a call, as one filter's return value says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    KillProcess,
    KillThread,
    Trap(u16),
    Errno(u16),
    UserNotif,
    Trace(u16),
    Log,
    Allow,
    /// An action value the kernel does not define: it kills the process.
    Unknown(u32),
    /// `ret A` with A computed from the arguments: any action.
    FromArguments,
}

impl Action {
    pub fn from_ret(ret: u32) -> Self {
        let data = (ret & SECCOMP_RET_DATA) as u16;
        match ret & SECCOMP_RET_ACTION_FULL {
            SECCOMP_RET_KILL_PROCESS => Self::KillProcess,
            SECCOMP_RET_KILL_THREAD => Self::KillThread,
            SECCOMP_RET_TRAP => Self::Trap(data),
            SECCOMP_RET_ERRNO => Self::Errno(data),
            SECCOMP_RET_USER_NOTIF => Self::UserNotif,
            SECCOMP_RET_TRACE => Self::Trace(data),
            SECCOMP_RET_LOG => Self::Log,
            SECCOMP_RET_ALLOW => Self::Allow,
            _ => Self::Unknown(ret),
        }
    }

    /// The call runs (LOG runs it and logs it).
    pub fn allows(self) -> bool {
        matches!(self, Self::Allow | Self::Log)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::KillProcess => "kill_process",
            Self::KillThread => "kill_thread",
            Self::Trap(_) => "trap",
            Self::Errno(_) => "errno",
            Self::UserNotif => "user_notif",
            Self::Trace(_) => "trace",
            Self::Log => "log",
            Self::Allow => "allow",
            Self::Unknown(_) => "unknown",
            Self::FromArguments => "from_arguments",
        }
    }

    /// `{"action": …}` plus `errno` (by name) for ERRNO, `data` for TRAP/TRACE when set, `value`
    /// for an undefined action.
    pub fn json(self) -> Value {
        let mut v = json!({ "action": self.name() });
        match self {
            Self::Errno(e) => v["errno"] = json!(errno_name(u32::from(e))),
            Self::Trap(d) | Self::Trace(d) if d != 0 => v["data"] = json!(d),
            Self::Unknown(r) => v["value"] = json!(format!("{r:#010x}")),
            _ => {}
        }
        v
    }

    /// As the text table shows it: `errno EPERM`, `kill_process`.
    pub fn text(self) -> String {
        match self {
            Self::Errno(e) => format!("errno {}", errno_name(u32::from(e))),
            Self::Trap(d) | Self::Trace(d) if d != 0 => format!("{} {d}", self.name()),
            Self::Unknown(r) => format!("unknown {r:#010x}"),
            _ => self.name().to_string(),
        }
    }
}

/// One syscall's fate under the process's filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The same action whatever the arguments.
    Fixed(Action),
    /// Different actions for different arguments (or instruction pointers): every one possible.
    DependsOnArguments(BTreeSet<Action>),
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Fixed(a) if a.allows())
    }

    pub fn denied(&self) -> bool {
        matches!(self, Self::Fixed(a) if !a.allows())
    }
}

/// The order the kernel ranks return values in when several filters are installed: the lowest
/// action as a signed number wins (KILL_PROCESS < KILL_THREAD < TRAP < ERRNO < USER_NOTIF <
/// TRACE < LOG < ALLOW; kernel/seccomp.c, `ACTION_ONLY`).
fn rank(ret: u32) -> i32 {
    (ret & SECCOMP_RET_ACTION_FULL) as i32
}

/// The fate of one syscall under `filters` (oldest first, as the kernel numbers them). The
/// kernel runs every filter, newest first, and keeps the first return of the lowest rank; with
/// several outcomes per filter every combination is taken (filters are evaluated apart, so two
/// filters testing the same argument may add combinations no call reaches: then the verdict is
/// "depends on arguments" where it may in fact be fixed, never the other way round).
pub fn evaluate(filters: &[Vec<SockFilter>], nr: u32, arch: u32) -> Result<Verdict, CbpfError> {
    // None: a return computed from the arguments (any action).
    let mut acc: BTreeSet<Option<u32>> = [Some(SECCOMP_RET_ALLOW)].into();
    for prog in filters.iter().rev() {
        let outs = cbpf::returns(prog, nr, arch)?;
        let mut next = BTreeSet::new();
        for a in &acc {
            for o in &outs {
                next.insert(match (a, o) {
                    (Some(a), Return::Value(c)) => Some(if rank(*c) < rank(*a) { *c } else { *a }),
                    _ => None,
                });
            }
        }
        acc = next;
    }
    let actions: BTreeSet<Action> = acc
        .iter()
        .map(|r| r.map_or(Action::FromArguments, Action::from_ret))
        .collect();
    // Different return values may still be one action (ALLOW's data means nothing, but ERRNO
    // with two errnos is two actions: Action keeps the data where it matters).
    Ok(match (actions.len(), actions.first()) {
        (1, Some(a)) if *a != Action::FromArguments => Verdict::Fixed(*a),
        _ => Verdict::DependsOnArguments(actions),
    })
}

/// How the process is confined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// SECCOMP_MODE_STRICT: read, write, exit, rt_sigreturn; anything else kills it.
    Strict,
    /// SECCOMP_MODE_FILTER with this many filters.
    Filter(usize),
}

/// The evaluated profile of one process: every syscall of the x86_64 table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enforced {
    /// The process read, as seen from the sidecar.
    pub pid: u32,
    pub mode: Mode,
    pub table: BTreeMap<u32, Verdict>,
}

impl Enforced {
    /// Evaluate `filters` (oldest first) for every syscall number of the x86_64 table.
    pub fn from_filters(pid: u32, filters: &[Vec<SockFilter>]) -> Result<Self, CbpfError> {
        let mut table = BTreeMap::new();
        for (nr, _) in SYSCALLS {
            table.insert(*nr, evaluate(filters, *nr, AUDIT_ARCH_X86_64)?);
        }
        Ok(Self {
            pid,
            mode: Mode::Filter(filters.len()),
            table,
        })
    }

    /// Strict mode's fixed table (kernel/seccomp.c, `mode1_syscalls`).
    pub fn strict(pid: u32) -> Self {
        const ALLOWED: [u32; 4] = [0, 1, 60, 15]; // read, write, exit, rt_sigreturn
        let table = SYSCALLS
            .iter()
            .map(|(nr, _)| {
                let a = if ALLOWED.contains(nr) {
                    Action::Allow
                } else {
                    Action::KillThread
                };
                (*nr, Verdict::Fixed(a))
            })
            .collect();
        Self {
            pid,
            mode: Mode::Strict,
            table,
        }
    }

    /// Syscall numbers a call of which can run: allowed always, or for some arguments.
    pub fn permitted(&self) -> impl Iterator<Item = u32> + '_ {
        self.table
            .iter()
            .filter(|(_, v)| !v.denied())
            .map(|(nr, _)| *nr)
    }
}

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("reading /proc/{pid}/status: {source}")]
    Status {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("no Seccomp: line in /proc/{pid}/status (a kernel without CONFIG_SECCOMP)")]
    NoSeccompLine { pid: u32 },
    #[error(
        "reading a seccomp filter needs CAP_SYS_ADMIN, which the sidecar does not have \
         (--cap-add SYS_ADMIN; it reads at start, before it drops its capabilities)"
    )]
    NoCapSysAdmin,
    #[error(
        "the sidecar itself runs under a seccomp filter, and the kernel lets only an unconfined \
         process read filters: start it with --security-opt seccomp=unconfined"
    )]
    Confined,
    #[error("ptrace PTRACE_SEIZE of pid {pid}: {source}{hint}")]
    Seize {
        pid: u32,
        #[source]
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("pid {pid} did not stop for ptrace within {STOP_WAIT:?} (a frozen or paused target?)")]
    NoStop { pid: u32 },
    #[error("ptrace PTRACE_SECCOMP_GET_FILTER of pid {pid}, filter {index}: {source}{hint}")]
    GetFilter {
        pid: u32,
        index: usize,
        #[source]
        source: std::io::Error,
        hint: String,
    },
    #[error("pid {pid}, filter {index}: the kernel gave {len} instructions (at most 4096)")]
    BadLength { pid: u32, index: usize, len: i64 },
    #[error("pid {pid}: more than {MAX_FILTERS} filters")]
    TooManyFilters { pid: u32 },
    #[error("pid {pid}: evaluating its filters: {source}")]
    Evaluate {
        pid: u32,
        #[source]
        source: CbpfError,
    },
}

/// What the process `pid` is confined by: `Ok(None)` when it has no seccomp at all.
pub fn read(pid: u32) -> Result<Option<Enforced>, ReadError> {
    match seccomp_mode(pid)? {
        0 => Ok(None),
        1 => Ok(Some(Enforced::strict(pid))),
        _ => {
            let filters = read_filters(pid)?;
            Enforced::from_filters(pid, &filters)
                .map(Some)
                .map_err(|source| ReadError::Evaluate { pid, source })
        }
    }
}

/// A bounded read of a /proc file.
fn read_proc(path: &str) -> std::io::Result<String> {
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(STATUS_LIMIT)
        .read_to_string(&mut s)?;
    Ok(s)
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

/// The `Seccomp:` line of `/proc/<pid>/status`: 0 none, 1 strict, 2 filter.
pub fn seccomp_mode(pid: u32) -> Result<u64, ReadError> {
    let status = read_proc(&format!("/proc/{pid}/status"))
        .map_err(|source| ReadError::Status { pid, source })?;
    status_field(&status, "Seccomp:").ok_or(ReadError::NoSeccompLine { pid })
}

/// Every filter of `pid`, oldest first. The process is stopped for the read (PTRACE_SEIZE, then
/// PTRACE_INTERRUPT: it stops at its next return to user space, and a blocking call it was in is
/// restarted when it goes on) and let go at once.
pub fn read_filters(pid: u32) -> Result<Vec<Vec<SockFilter>>, ReadError> {
    // What the kernel will refuse anyway is found out first, so the process is not stopped for
    // nothing. Both are per thread: this thread's (the one that will call ptrace).
    let admin = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    );
    if !admin.unwrap_or(true) {
        return Err(ReadError::NoCapSysAdmin);
    }
    if own_seccomp_mode() != 0 {
        return Err(ReadError::Confined);
    }
    let tid = pid as libc::pid_t;
    // SAFETY: ptrace with integer arguments only.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, 0usize) } != 0 {
        let source = std::io::Error::last_os_error();
        let hint = if source.raw_os_error() == Some(libc::EPERM) {
            " (ptrace access needs the same user and at least the process's capabilities, or \
             CAP_SYS_PTRACE: --cap-add SYS_PTRACE; or a security module refused it)"
        } else {
            ""
        };
        return Err(ReadError::Seize { pid, source, hint });
    }
    let filters = stopped_read(pid);
    // SAFETY: ptrace with integer arguments only; fails harmlessly if the process is gone.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, 0usize) };
    release_if_dead(pid);
    filters
}

/// With `pid` seized: stop it, read its filters.
fn stopped_read(pid: u32) -> Result<Vec<Vec<SockFilter>>, ReadError> {
    let tid = pid as libc::pid_t;
    // SAFETY: ptrace with integer arguments only.
    unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) };
    // The stop is waited for by asking until the kernel no longer says ESRCH ("not stopped
    // yet"), not with waitpid: in `run` mode the process is the sidecar's own child, and a
    // waitpid here could reap it from under the code that waits for its exit.
    let deadline = Instant::now() + STOP_WAIT;
    let count = |index: usize| -> Result<i64, std::io::Error> {
        // SAFETY: a null buffer only asks for the instruction count.
        let r = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                tid,
                index,
                std::ptr::null_mut::<SockFilter>(),
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    let get_err = |index: usize, source: std::io::Error| ReadError::GetFilter {
        pid,
        index,
        hint: get_filter_hint(&source),
        source,
    };
    loop {
        match count(0) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                if Instant::now() >= deadline || !alive(pid) {
                    return Err(ReadError::NoStop { pid });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(get_err(0, e)),
            Ok(_) => break,
        }
    }
    let mut filters = Vec::new();
    for index in 0.. {
        if index >= MAX_FILTERS {
            return Err(ReadError::TooManyFilters { pid });
        }
        let len = match count(index) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Err(e) => return Err(get_err(index, e)),
        };
        if !(1..=cbpf::MAX_INSNS as i64).contains(&len) {
            return Err(ReadError::BadLength { pid, index, len });
        }
        let mut prog = vec![SockFilter::default(); len as usize];
        // SAFETY: the buffer holds `len` instructions, the count the kernel just gave for this
        // filter (a filter never changes once installed, and the process is stopped).
        let r = unsafe { libc::ptrace(PTRACE_SECCOMP_GET_FILTER, tid, index, prog.as_mut_ptr()) };
        if r < 0 {
            return Err(get_err(index, std::io::Error::last_os_error()));
        }
        prog.truncate(r as usize);
        filters.push(prog);
    }
    Ok(filters)
}

/// This thread's seccomp mode (per thread: not the process's main thread's).
fn own_seccomp_mode() -> u64 {
    let mine = read_proc("/proc/thread-self/status").unwrap_or_default();
    status_field(&mine, "Seccomp:").unwrap_or(0)
}

/// Why the kernel refused PTRACE_SECCOMP_GET_FILTER, in the user's terms (what
/// `read_filters` checks first, should the kernel disagree).
fn get_filter_hint(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) => {
            if own_seccomp_mode() != 0 {
                " (the sidecar itself runs under a seccomp filter, and the kernel lets only an \
                 unconfined process read filters: start it with --security-opt \
                 seccomp=unconfined)"
                    .into()
            } else {
                " (reading a seccomp filter needs CAP_SYS_ADMIN: --cap-add SYS_ADMIN; the \
                 sidecar reads it at start, before it drops its capabilities)"
                    .into()
            }
        }
        Some(libc::EIO) | Some(libc::EINVAL) => {
            " (the kernel lacks PTRACE_SECCOMP_GET_FILTER: it needs CONFIG_CHECKPOINT_RESTORE)"
                .into()
        }
        Some(libc::EMEDIUMTYPE) => " (a filter the kernel keeps no classic BPF copy of)".into(),
        _ => String::new(),
    }
}

fn alive(pid: u32) -> bool {
    let stat = read_proc(&format!("/proc/{pid}/stat")).unwrap_or_default();
    // pid (comm) STATE ...: the comm may hold anything, so the state follows its last ')'.
    match stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next()) {
        Some(s) => s != 'Z' && s != 'X',
        None => false,
    }
}

/// A process that died while seized stays a zombie that only its tracer (us) can release to its
/// real parent: do so, unless it is our own child (`run`'s command), whose exit the sidecar
/// waits for elsewhere.
fn release_if_dead(pid: u32) {
    if alive(pid) {
        return;
    }
    let stat = read_proc(&format!("/proc/{pid}/stat")).unwrap_or_default();
    let ppid = stat
        .rsplit_once(") ")
        .and_then(|(_, r)| r.split(' ').nth(1))
        .and_then(|p| p.parse::<u32>().ok());
    if ppid == Some(std::process::id()) {
        return;
    }
    let mut st = 0;
    // SAFETY: waitpid with a valid status pointer; WNOHANG never blocks, and for a process we
    // are only the tracer of it ends the trace and hands the exit to the real parent.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut st, libc::WNOHANG | libc::__WALL) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::cbpf::asm::*;
    use crate::seccomp::cbpf::*;

    const EPERM: u32 = SECCOMP_RET_ERRNO | 1;
    const ENOSYS: u32 = SECCOMP_RET_ERRNO | 38;

    fn nr(name: &str) -> u32 {
        SYSCALLS.iter().find(|(_, n)| *n == name).unwrap().0
    }

    /// Shaped like the filter libseccomp makes of Docker's profile: check the arch (else kill),
    /// load nr, a run of JEQ → allow, `personality` allowed for two argument values,
    /// `clone` allowed without namespace flags (masked test on the low word), `clone3` ENOSYS,
    /// default ERRNO(EPERM).
    fn docker_like(allowed: &[&str]) -> Vec<SockFilter> {
        let mut p = vec![
            ld(4),
            jeq(AUDIT_ARCH_X86_64, 1, 0),
            ret(SECCOMP_RET_KILL_PROCESS),
            ld(0),
        ];
        for name in allowed {
            p.push(jeq(nr(name), 0, 1));
            p.push(ret(SECCOMP_RET_ALLOW));
        }
        // personality(0) and personality(8): hi word 0 and lo word 0 or 8.
        p.extend([
            jeq(nr("personality"), 0, 8),
            ld(20),
            jeq(0, 0, 5),
            ld(16),
            jeq(0, 2, 0),
            jeq(8, 1, 0),
            SockFilter::stmt(BPF_JMP | BPF_JA, 1),
            ret(SECCOMP_RET_ALLOW),
            ret(EPERM),
        ]);
        // clone: (flags & 0x7e020000) == 0 → allow.
        p.extend([
            ld(0),
            jeq(nr("clone"), 0, 4),
            ld(16),
            SockFilter::stmt(BPF_ALU | BPF_AND | BPF_K, 0x7e02_0000),
            jeq(0, 0, 1),
            ret(SECCOMP_RET_ALLOW),
            ld(0),
            jeq(nr("clone3"), 0, 1),
            ret(ENOSYS),
            ret(EPERM),
        ]);
        p
    }

    #[test]
    fn docker_like_allowlist() {
        let f = docker_like(&["read", "write", "getppid", "openat"]);
        let e = Enforced::from_filters(7, &[f]).unwrap();
        assert_eq!(e.mode, Mode::Filter(1));
        assert_eq!(e.table.len(), SYSCALLS.len());
        let allowed: Vec<u32> = e
            .table
            .iter()
            .filter(|(_, v)| v.allowed())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(allowed, [0, 1, 110, 257]);
        let depends: BTreeMap<u32, Verdict> = e
            .table
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::DependsOnArguments(_)))
            .map(|(n, v)| (*n, v.clone()))
            .collect();
        let both = Verdict::DependsOnArguments([Action::Errno(1), Action::Allow].into());
        assert_eq!(
            depends,
            [(nr("clone"), both.clone()), (nr("personality"), both)].into()
        );
        assert_eq!(e.table[&nr("clone3")], Verdict::Fixed(Action::Errno(38)));
        // Everything else: the default.
        let rest = e
            .table
            .iter()
            .filter(|(n, _)| ![0, 1, 110, 257].contains(*n))
            .filter(|(n, _)| ![nr("clone"), nr("personality"), nr("clone3")].contains(*n))
            .filter(|(_, v)| **v != Verdict::Fixed(Action::Errno(1)))
            .count();
        assert_eq!(rest, 0);
        let permitted: Vec<u32> = e.permitted().collect();
        assert_eq!(permitted, [0, 1, 56, 110, 135, 257]);
    }

    #[test]
    fn stacked_filters_take_the_most_restrictive() {
        let allow_all = vec![ret(SECCOMP_RET_ALLOW)];
        let deny_getppid = vec![
            ld(0),
            jeq(110, 0, 1),
            ret(EPERM),
            jeq(39, 0, 1),
            ret(SECCOMP_RET_TRAP | 5),
            ret(SECCOMP_RET_LOG),
        ];
        let kill_getpid = vec![
            ld(0),
            jeq(39, 0, 1),
            ret(SECCOMP_RET_KILL_THREAD),
            jeq(110, 0, 1),
            ret(SECCOMP_RET_ERRNO | 13),
            ret(SECCOMP_RET_ALLOW),
        ];
        let filters = [allow_all, deny_getppid, kill_getpid];
        let v = |n| evaluate(&filters, n, AUDIT_ARCH_X86_64).unwrap();
        // KILL_THREAD (newest) beats TRAP; two ERRNOs: the newest filter's errno wins the tie.
        assert_eq!(v(39), Verdict::Fixed(Action::KillThread));
        assert_eq!(v(110), Verdict::Fixed(Action::Errno(13)));
        // LOG beats ALLOW and still lets the call run.
        assert_eq!(v(0), Verdict::Fixed(Action::Log));
        assert!(v(0).allowed());
        // Ties go to the newest: the same filters the other way round give EPERM.
        let rev = [filters[2].clone(), filters[1].clone()];
        assert_eq!(
            evaluate(&rev, 110, AUDIT_ARCH_X86_64).unwrap(),
            Verdict::Fixed(Action::Errno(1))
        );
        // KILL_PROCESS is the lowest of all.
        let kp = [vec![ret(SECCOMP_RET_KILL_PROCESS)], vec![ret(0)]];
        assert_eq!(
            evaluate(&kp, 0, AUDIT_ARCH_X86_64).unwrap(),
            Verdict::Fixed(Action::KillProcess)
        );
    }

    #[test]
    fn stacked_argument_tests_combine() {
        // Filter 1: arg0 == 1 → EPERM else allow. Filter 2: allow. Depends.
        let f1 = vec![ld(16), jeq(1, 0, 1), ret(EPERM), ret(SECCOMP_RET_ALLOW)];
        let f2 = vec![ret(SECCOMP_RET_ALLOW)];
        assert_eq!(
            evaluate(&[f1.clone(), f2], 3, AUDIT_ARCH_X86_64).unwrap(),
            Verdict::DependsOnArguments([Action::Errno(1), Action::Allow].into())
        );
        // With a newer filter that kills the call anyway, the arguments no longer matter.
        let kill = vec![ret(SECCOMP_RET_KILL_PROCESS)];
        assert_eq!(
            evaluate(&[f1, kill], 3, AUDIT_ARCH_X86_64).unwrap(),
            Verdict::Fixed(Action::KillProcess)
        );
        // RET A from an argument: any action.
        let any = vec![ld(16), SockFilter::stmt(BPF_RET | BPF_A, 0)];
        assert_eq!(
            evaluate(&[any], 3, AUDIT_ARCH_X86_64).unwrap(),
            Verdict::DependsOnArguments([Action::FromArguments].into())
        );
    }

    #[test]
    fn actions_decode() {
        assert_eq!(Action::from_ret(0x8000_0000), Action::KillProcess);
        assert_eq!(Action::from_ret(0), Action::KillThread);
        assert_eq!(Action::from_ret(0x0003_0007), Action::Trap(7));
        assert_eq!(Action::from_ret(0x0005_0026), Action::Errno(38));
        assert_eq!(Action::from_ret(0x7fc0_0000), Action::UserNotif);
        assert_eq!(Action::from_ret(0x7ff0_0002), Action::Trace(2));
        assert_eq!(Action::from_ret(0x7ffc_0000), Action::Log);
        assert_eq!(Action::from_ret(0x7fff_1234), Action::Allow);
        assert_eq!(Action::from_ret(0x0006_0000), Action::Unknown(0x0006_0000));
        assert_eq!(
            Action::Errno(1).json(),
            json!({"action": "errno", "errno": "EPERM"})
        );
        assert_eq!(Action::Errno(38).text(), "errno ENOSYS");
        assert_eq!(Action::Trap(0).json(), json!({"action": "trap"}));
        assert_eq!(
            Action::Trace(9).json(),
            json!({"action": "trace", "data": 9})
        );
        assert!(!Action::UserNotif.allows() && !Action::Trace(0).allows());
    }

    #[test]
    fn strict_mode() {
        let e = Enforced::strict(3);
        let allowed: Vec<u32> = e.permitted().collect();
        assert_eq!(allowed, [0, 1, 15, 60]);
        assert_eq!(e.table[&2], Verdict::Fixed(Action::KillThread));
    }

    /// A real filter in a real process, read back through ptrace and evaluated: the child
    /// installs `docker_like` (plus a second filter) and waits; we read it while it runs.
    #[test]
    fn reads_back_filters_installed_in_a_child() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test reads a seccomp filter through ptrace, which needs CAP_SYS_ADMIN: run \
             the unit tests as root"
        );
        let first = docker_like(&[
            "read",
            "write",
            "exit",
            "exit_group",
            "rt_sigreturn",
            "pause",
            "getppid",
            "seccomp",
        ]);
        let second = vec![
            ld(0),
            jeq(nr("getppid"), 0, 1),
            ret(SECCOMP_RET_ERRNO | 13),
            ret(SECCOMP_RET_ALLOW),
        ];
        let (go_r, go_w) = pipe();
        // SAFETY: the child only makes async-signal-safe calls (prctl, syscall, write, pause)
        // on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            unsafe {
                let mut ok = libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0;
                for f in [&first, &second] {
                    let prog = libc::sock_fprog {
                        len: f.len() as u16,
                        filter: f.as_ptr() as *mut libc::sock_filter,
                    };
                    ok &= libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_SET_MODE_FILTER,
                        0,
                        &prog as *const libc::sock_fprog,
                    ) == 0;
                }
                let b = [u8::from(ok)];
                libc::write(go_w, b.as_ptr().cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        let mut b = [0u8];
        // SAFETY: our own pipe's ends; one byte into a local buffer.
        let n = unsafe {
            libc::close(go_w);
            let n = libc::read(go_r, b.as_mut_ptr().cast(), 1);
            libc::close(go_r);
            n
        };
        let got = read(pid as u32);
        let alive_after = alive(pid as u32);
        // A reader under a filter of its own is refused, and told why. Seccomp is per thread:
        // a thread confines itself (allow everything) and tries.
        let confined = std::thread::spawn(move || {
            let allow = [ret(SECCOMP_RET_ALLOW)];
            let prog = libc::sock_fprog {
                len: 1,
                filter: allow.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: prctl with integers; seccomp with a program that outlives the call.
            let installed = unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                    && libc::syscall(
                        libc::SYS_seccomp,
                        libc::SECCOMP_SET_MODE_FILTER,
                        0,
                        &prog as *const libc::sock_fprog,
                    ) == 0
            };
            (
                installed,
                read(pid as u32).map(|_| ()).map_err(|e| e.to_string()),
            )
        })
        .join()
        .unwrap();
        // SAFETY: our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!((n, b[0]), (1, 1), "the child installed both filters");
        assert!(alive_after, "the child goes on after the read");
        assert!(confined.0, "the thread confined itself");
        assert_eq!(
            confined.1.expect_err("a confined reader is refused"),
            "the sidecar itself runs under a seccomp filter, and the kernel lets only an \
             unconfined process read filters: start it with --security-opt seccomp=unconfined"
        );
        let e = got.expect("read").expect("a filter");
        assert_eq!(e.mode, Mode::Filter(2));
        let want = Enforced::from_filters(pid as u32, &[first, second]).unwrap();
        assert_eq!(e, want, "the filters read back are the ones installed");
        assert_eq!(e.table[&nr("getppid")], Verdict::Fixed(Action::Errno(13)));
        assert_eq!(e.table[&nr("pause")], Verdict::Fixed(Action::Allow));
        assert_eq!(e.table[&nr("getpid")], Verdict::Fixed(Action::Errno(1)));
        assert!(matches!(
            e.table[&nr("personality")],
            Verdict::DependsOnArguments(_)
        ));

        // Our own process has no filter.
        assert_eq!(read(std::process::id()).unwrap(), None);
    }

    fn pipe() -> (i32, i32) {
        let mut fds = [0; 2];
        // SAFETY: a two-int array for pipe(2).
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    }
}
