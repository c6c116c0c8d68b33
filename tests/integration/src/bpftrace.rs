//! bpftrace as the independent peer the tests compare counts with, and the tracer the benches
//! compare costs with: started, it is attached; stopped, it prints its maps; dropped, it is
//! killed (maps never printed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::real::need;
use crate::wait_for;

pub struct Bpftrace {
    child: Child,
    /// Its stdout: a file, so that a big map printed at exit can never block it on a pipe.
    out: PathBuf,
}

impl Bpftrace {
    /// Run `prog` (output in `$TMPDIR/ebpf-sidecar-bpftrace-TAG.out`) and wait until attached.
    pub fn start(tag: &str, prog: &str) -> Self {
        let bin = need("bpftrace", "bpftrace");
        ensure_tracefs();
        let out = std::env::temp_dir().join(format!("ebpf-sidecar-bpftrace-{tag}.out"));
        let child = Command::new(bin)
            .args(["-e", prog])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut b = Bpftrace { child, out };
        // bpftrace prints "Attaching N probe(s)..." and then attaches: the extra second covers
        // the attach itself (tests freeze or gate their targets meanwhile).
        wait_for("bpftrace attaching", Duration::from_secs(60), || {
            if let Ok(Some(st)) = b.child.try_wait() {
                panic!("bpftrace exited: {st}: {}", b.text());
            }
            b.text().contains("Attaching").then_some(())
        });
        std::thread::sleep(Duration::from_secs(1));
        b
    }

    /// `tracepoint:raw_syscalls:sys_enter /cgroup == ID/ { @[args->id] = count(); }`
    pub fn syscalls_of_cgroup(tag: &str, cgroup_id: u64) -> Self {
        let prog = format!(
            "tracepoint:raw_syscalls:sys_enter /cgroup == {cgroup_id}/ {{ @[args->id] = count(); }}"
        );
        Self::start(tag, &prog)
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Stop it (SIGINT: bpftrace prints its maps and exits) and return all it printed.
    pub fn stop_text(mut self) -> String {
        // bpftrace 0.17 sometimes lets a SIGINT pass without leaving its event loop (seen
        // here: blocked in epoll_wait, nothing pending; or still settling after the attach);
        // it prints and exits on the next.
        let give_up = Instant::now() + Duration::from_secs(60);
        let st = loop {
            // SAFETY: kill with the pid of our child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut st = None;
            while st.is_none() && Instant::now() < deadline {
                st = self.child.try_wait().unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Some(st) = st {
                break st;
            }
            assert!(
                Instant::now() < give_up,
                "bpftrace ignores SIGINT: {}",
                self.text()
            );
        };
        assert!(st.success(), "bpftrace: {st}: {}", self.text());
        self.text()
    }

    /// [`Self::stop_text`], parsed: `@[KEY]: COUNT` lines of a map keyed by a number.
    pub fn finish(self) -> BTreeMap<u64, u64> {
        self.stop_text()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.strip_prefix("@[")?.split_once("]: ")?;
                Some((k.trim().parse().ok()?, v.trim().parse().ok()?))
            })
            .collect()
    }

    /// [`Self::stop_text`], parsed: every `NAME: VALUE` line (`@gc: 3`, `@[GET]: 6`).
    pub fn stop(self) -> Vec<(String, u64)> {
        self.stop_text()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(": ")?;
                Some((k.trim().to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tracefs must be mounted for bpftrace's tracepoints (and for uprobe events by hand).
pub fn ensure_tracefs() {
    if !Path::new("/sys/kernel/tracing/events").exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status();
    }
}
