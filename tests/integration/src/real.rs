//! Helpers for the tests against real software (tests/real_software/): a cgroup of the test's
//! own to run a server in (freezable, so the sidecar and a peer tracer attach while nothing in it
//! runs), the checks for installed programs, syscall names from the kernel's headers, scratch
//! directories and keyed counts compared with a truth.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::{Metrics, Sidecar, wait_for};

/// Fail (never skip) when a program of a Debian package is missing.
pub fn need(path: &str, package: &str) -> PathBuf {
    let p = if path.contains('/') {
        PathBuf::from(path)
    } else {
        std::env::var_os("PATH")
            .and_then(|ps| {
                std::env::split_paths(&ps)
                    .map(|d| d.join(path))
                    .find(|p| p.exists())
            })
            .unwrap_or_else(|| PathBuf::from(path))
    };
    assert!(
        p.exists(),
        "{path} not found: apt-get install {package} (scripts/setup.sh installs it)"
    );
    p
}

/// The cgroup v2 mount (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified` on a hybrid host).
pub fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && f[2] == "cgroup2").then(|| PathBuf::from(f[1]))
        })
        .min_by_key(|p| p.as_os_str().len())
        .expect("no cgroup2 mount: mount -t cgroup2 none /sys/fs/cgroup/unified")
}

/// A cgroup v2 directory made by the test: the monitored server runs alone in it (never in
/// the root cgroup). Its processes are killed and the directory removed on drop.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new(tag: &str) -> Self {
        let path = cgroup2_root().join(format!("ebpf-sidecar-real-{tag}-{}", std::process::id()));
        if path.exists() {
            let old = TestCgroup { path: path.clone() };
            drop(old);
        }
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup { path }
    }

    /// The cgroup id as BPF sees it (`bpf_get_current_cgroup_id`, bpftrace's `cgroup`): the
    /// kernfs node id, which is the directory's inode number.
    pub fn id(&self) -> u64 {
        std::fs::metadata(&self.path).unwrap().ino()
    }

    /// Spawn `cmd` inside this cgroup: the child moves itself in before `exec`, so the
    /// program's first instruction already runs here (in a frozen cgroup it stops there).
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        let procs = std::ffi::CString::new(
            self.path
                .join("cgroup.procs")
                .as_os_str()
                .as_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                let e = std::io::Error::last_os_error();
                libc::close(fd);
                if r != 1 {
                    return Err(e);
                }
                Ok(())
            });
        }
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?} in {}: {e}", self.path.display()))
    }

    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Freeze (or thaw) every task of the cgroup and wait until the kernel says it is done: a
    /// frozen task is stopped in the kernel on its way back to user space, so no syscall of
    /// it starts while frozen, and calls it was blocked in returned and restart after thaw.
    pub fn freeze(&self, on: bool) {
        std::fs::write(self.path.join("cgroup.freeze"), if on { "1" } else { "0" }).unwrap();
        let want = if on { "frozen 1" } else { "frozen 0" };
        wait_for(want, Duration::from_secs(10), || {
            std::fs::read_to_string(self.path.join("cgroup.events"))
                .unwrap()
                .lines()
                .any(|l| l == want)
                .then_some(())
        });
    }

    /// `cpu.stat` field (`usage_usec`, …): kept by the kernel for every cgroup v2.
    pub fn cpu_stat(&self, key: &str) -> u64 {
        let text = std::fs::read_to_string(self.path.join("cpu.stat")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in cpu.stat: {text}"))
            .trim()
            .parse()
            .unwrap()
    }

    /// Wait until no process is left in the cgroup.
    pub fn wait_empty(&self, timeout: Duration) {
        wait_for("cgroup empty", timeout, || {
            self.pids().is_empty().then_some(())
        });
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
        let _ = std::fs::write(self.path.join("cgroup.freeze"), "0");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// x86_64 syscall numbers to names from the kernel headers (linux-libc-dev), independent of
/// the sidecar's own table.
pub fn syscall_names() -> BTreeMap<u64, String> {
    let h = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
    let text = std::fs::read_to_string(h)
        .unwrap_or_else(|e| panic!("{h}: {e}: apt-get install linux-libc-dev"));
    text.lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("#define __NR_")?.split_whitespace();
            let name = f.next()?.to_string();
            Some((f.next()?.parse().ok()?, name))
        })
        .collect()
}

/// Wait until something accepts TCP connections on 127.0.0.1:port.
pub fn wait_tcp(port: u16, timeout: Duration) {
    wait_for(&format!("127.0.0.1:{port} listening"), timeout, || {
        TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
}

/// A scratch directory under /var/tmp (a real filesystem), removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        let p = PathBuf::from(format!(
            "/var/tmp/ebpf-sidecar-real-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HTTP requests the target answered, by "METHOD STATUS" (the access log's key).
pub fn served(m: &Metrics) -> Counts {
    by_labels(
        m,
        "ebpf_sidecar_http_requests_total",
        &[("direction", "server")],
        &["method", "status"],
    )
}

/// The series of one metric whose labels include `filter`, keyed by the values of `keys`, as
/// integers (zeros dropped).
pub fn by_labels(m: &Metrics, name: &str, filter: &[(&str, &str)], keys: &[&str]) -> Counts {
    let mut out = Counts::new();
    for (l, v) in m.matching(name, filter) {
        let k: Vec<&str> = keys
            .iter()
            .map(|k| l.get(*k).map(String::as_str).unwrap_or("?"))
            .collect();
        *out.entry(k.join(" ")).or_default() += v as u64;
    }
    out.retain(|_, v| *v > 0);
    out
}

/// Counts by key (`METHOD STATUS`, a syscall name, ...).
pub type Counts = BTreeMap<String, u64>;

/// Exact equality of two keyed counts, with every differing key named.
pub fn assert_counts_eq(what: &str, sidecar: &Counts, truth: &Counts) {
    let mut diff = Vec::new();
    for k in sidecar.keys().chain(truth.keys()) {
        let (s, t) = (
            sidecar.get(k).copied().unwrap_or(0),
            truth.get(k).copied().unwrap_or(0),
        );
        if s != t
            && !diff
                .iter()
                .any(|d: &String| d.starts_with(&format!("{k}:")))
        {
            diff.push(format!(
                "{k}: sidecar {s}, truth {t} ({:+})",
                s as i64 - t as i64
            ));
        }
    }
    assert!(
        diff.is_empty(),
        "{what}: {} keys differ:\n  {}\nsidecar: {sidecar:?}\ntruth:   {truth:?}",
        diff.len(),
        diff.join("\n  ")
    );
}

/// Poll the sidecar until `f` of its metrics equals `want` (counters that move at a connection's
/// close, after the peer's last ACK), then return the last value seen.
pub fn settle(sc: &Sidecar, want: u64, f: impl Fn(&Metrics) -> u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = f(&sc.scrape());
        if v == want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The cgroup id the sidecar says it filters by (`target_info{cgroup_id}`).
pub fn reported_cgroup_id(m: &Metrics) -> u64 {
    let (l, _) = m
        .matching("ebpf_sidecar_target_info", &[])
        .next()
        .expect("target_info");
    l["cgroup_id"].parse().unwrap()
}

/// bpftrace's syscall counts by the kernel headers' names.
pub fn named(counts: &BTreeMap<u64, u64>) -> Counts {
    let names = syscall_names();
    counts
        .iter()
        .map(|(nr, c)| {
            let n = names.get(nr).cloned().unwrap_or_else(|| format!("nr{nr}"));
            (n, *c)
        })
        .collect()
}

pub fn sidecar_syscalls(m: &Metrics) -> Counts {
    by_labels(m, "ebpf_sidecar_syscalls_total", &[], &["syscall"])
}
