//! Harness for the privileged end-to-end tests: build the workloads, start the sidecar (binary
//! or image), scrape it, drive real Docker. Missing prerequisites fail the test with what to
//! install; nothing is skipped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Fail (not skip) when not root: these tests load BPF programs and drive dockerd.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "privileged tests must run as root (see README: run the tests)"
    );
}

/// The sidecar binary under test: $SIDECAR_BIN, else target/release, else target/debug.
pub fn sidecar_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SIDECAR_BIN") {
        return PathBuf::from(p);
    }
    let root = repo_root();
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("ebpf-sidecar");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "ebpf-sidecar is not built: run `cargo build --release -p sidecar` first (scripts/test.sh does)"
    );
}

/// A static build of a workload in `workloads/NAME.c`, built once per test binary. Tests run in
/// parallel and may be executing the binary already: it is built under a temporary name and
/// renamed over the old one (writing into a running executable fails with ETXTBSY).
pub fn workload(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let dir = repo_root().join("target/workloads");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let src = repo_root().join(format!("tests/integration/workloads/{name}.c"));
    // Frame pointers: the kernel unwinds user stacks by them (profiler tests).
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-fno-omit-frame-pointer", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .expect("gcc not found: apt-get install gcc libc6-dev");
    assert!(st.success(), "building {}", src.display());
    std::fs::rename(&tmp, &out).unwrap();
    built.push((name.to_string(), out.clone()));
    out
}

/// Where the prebuilt Node.js 18 with `--with-dtrace` lies: in CI a read-only copy of `shared/`
/// sits beside the repository (`scripts/node-dtrace.sh` rebuilds it).
pub fn node18_dtrace_xz() -> PathBuf {
    repo_root().join("../shared/node18-dtrace/node18-dtrace.xz")
}

/// Node.js 18.20.4 built `--with-dtrace` (the `node` USDT provider), unpacked once with
/// `xz -dk` into `target/node18-dtrace/node` (named `node`: the sidecar recognises Node.js
/// binaries by name; never unpacked into `shared/`, which is read-only). Fails when the archive
/// is missing.
pub fn node18_dtrace() -> PathBuf {
    static ONCE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut done = ONCE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = done.as_ref() {
        return p.clone();
    }
    let xz = node18_dtrace_xz();
    assert!(
        xz.exists(),
        "{} is missing: the Node.js 18 built --with-dtrace these tests run (a read-only copy of \
         shared/ beside the repository; scripts/node-dtrace.sh rebuilds it)",
        xz.display()
    );
    let dir = repo_root().join("target/node18-dtrace");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("node");
    let fresh = |p: &Path| {
        let t = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        matches!((t(p), t(&xz)), (Some(a), Some(b)) if a >= b)
    };
    if !fresh(&out) {
        // Unpacked under a temporary name and renamed: a running node keeps its old file.
        let tmp = dir.join(format!(".node.{}", std::process::id()));
        let st = Command::new("xz")
            .args(["-dk", "--stdout"])
            .arg(&xz)
            .stdout(std::fs::File::create(&tmp).unwrap())
            .status()
            .expect("xz not found: apt-get install xz-utils");
        assert!(st.success(), "xz -dk {}", xz.display());
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &out).unwrap();
    }
    let v = Command::new(&out).arg("--version").output().unwrap();
    assert!(
        v.status.success() && v.stdout.starts_with(b"v18."),
        "{} --version: {}{} (it needs bookworm's libbrotli1 and libicu72)",
        out.display(),
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    *done = Some(out.clone());
    out
}

/// The python3 interpreter's real path (the workloads are Python scripts run by it).
pub fn python3() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 not found: apt-get install python3");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HTTP GET on loopback returning the raw body bytes.
pub fn http_get_bytes(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, raw[split..].to_vec()))
}

/// HTTP GET on loopback; returns (status, content-type, body).
pub fn http_get(
    port: u16,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{accept}\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((status, ct, body.to_string()))
}

/// A parsed Prometheus text exposition.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub series: Vec<(String, BTreeMap<String, String>, f64)>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut series = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (name_labels, value) = line.rsplit_once(' ').unwrap();
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or(f64::NAN),
            };
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n.to_string(), parse_labels(rest.trim_end_matches('}'))),
                None => (name_labels.to_string(), BTreeMap::new()),
            };
            series.push((name, labels, value));
        }
        Self {
            series,
            text: text.to_string(),
        }
    }

    /// Sum of the series of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|(_, v)| v).sum()
    }

    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let m: Vec<_> = self.matching(name, labels).collect();
        (!m.is_empty()).then(|| m.iter().map(|(_, v)| v).sum())
    }

    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.series
            .iter()
            .filter(move |(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, l, v)| (l, *v))
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i;
                    break;
                }
                c => val.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').trim().to_string(), val);
        rest = after.get(end + 1..).unwrap_or("");
    }
    out
}

/// A sidecar process started by a test; killed on drop.
pub struct Sidecar {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Sidecar {
    /// Start the binary with `args` (plus --listen) and wait until it serves metrics.
    pub fn start(args: &[&str]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("ebpf-sidecar-test-{port}.log"));
        let child = Command::new(sidecar_bin())
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting ebpf-sidecar");
        let mut s = Self { child, port, log };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("sidecar exited early ({st}):\n{}", self.log_text());
            }
            if http_get(self.port, "/healthz", None).is_ok_and(|r| r.0 == 200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sidecar did not serve within 30 s:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn scrape(&self) -> Metrics {
        let (status, _, body) = http_get(self.port, "/metrics", None).expect("scrape");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns Some, or fail with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ebpf-sidecar run --probes <probes> [extra] --metrics-out … -- <workload> args…`: the workload
/// must exit 0; returns the final metrics (promtool-clean, asserted) and the workload's stdout.
pub fn run_workload(
    tag: &str,
    probes: &str,
    extra: &[&str],
    name: &str,
    args: &[&str],
) -> (Metrics, String) {
    run_workload_exiting(tag, probes, extra, name, args, 0)
}

/// [`run_workload`] for a workload that must exit with `code` (`run` passes it on).
pub fn run_workload_exiting(
    tag: &str,
    probes: &str,
    extra: &[&str],
    name: &str,
    args: &[&str],
    code: i32,
) -> (Metrics, String) {
    run_program(tag, probes, extra, &workload(name), args, code)
}

/// [`run_workload_exiting`] for any program (a path, or a name looked up in PATH).
pub fn run_program(
    tag: &str,
    probes: &str,
    extra: &[&str],
    program: &Path,
    args: &[&str],
    code: i32,
) -> (Metrics, String) {
    let out = std::env::temp_dir().join(format!("ebpf-sidecar-{tag}.prom"));
    let _ = std::fs::remove_file(&out);
    let o = Command::new(sidecar_bin())
        .args(["run", "--probes", probes, "--listen"])
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(extra)
        .arg("--metrics-out")
        .arg(&out)
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(
        o.status.code(),
        Some(code),
        "workload failed: {stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("--metrics-out written");
    let lint = promtool_check(&text);
    assert!(lint.is_empty(), "promtool check metrics:\n{lint}");
    (Metrics::parse(&text), stdout)
}

/// `promtool check metrics` on an exposition: returns its complaints (empty when clean).
pub fn promtool_check(text: &str) -> String {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: apt-get install prometheus");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        String::new()
    } else {
        s
    }
}

pub mod docker {
    use super::*;

    pub fn run(args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .output()
            .expect("docker CLI not found: apt-get install docker.io")
    }

    /// Run docker and require success.
    pub fn ok(args: &[&str]) -> String {
        let out = run(args);
        assert!(
            out.status.success(),
            "docker {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// dockerd must be up; then make the local base images and the sidecar image (cached by
    /// Docker's layer cache after the first build).
    pub fn sidecar_image() -> &'static str {
        static IMAGE: OnceLock<()> = OnceLock::new();
        IMAGE.get_or_init(|| {
            let v = run(&["version", "--format", "{{.Server.Version}}"]);
            assert!(
                v.status.success(),
                "dockerd is not running: start it (scripts/test.sh does): {}",
                String::from_utf8_lossy(&v.stderr)
            );
            let st = Command::new(repo_root().join("scripts/images.sh"))
                .status()
                .unwrap();
            assert!(st.success(), "scripts/images.sh failed");
            let st = Command::new("docker")
                .args([
                    "build",
                    "-q",
                    "--build-arg",
                    "BUILDER=ebpf-sidecar-builder:local",
                    "-t",
                    "ebpf-sidecar:test",
                    ".",
                ])
                .current_dir(repo_root())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(st.success(), "docker build of the sidecar image failed");
        });
        "ebpf-sidecar:test"
    }

    /// A container removed on drop.
    pub struct Container(pub String);

    impl Container {
        pub fn run(name: &str, args: &[&str]) -> Self {
            let _ = run(&["rm", "-f", name]);
            let mut a = vec!["run", "-d", "--name", name];
            a.extend_from_slice(args);
            ok(&a);
            Container(name.to_string())
        }

        pub fn logs(&self) -> String {
            let out = run(&["logs", &self.0]);
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        }

        pub fn host_pid(&self) -> u32 {
            ok(&["inspect", "-f", "{{.State.Pid}}", &self.0])
                .parse()
                .unwrap()
        }
    }

    impl Drop for Container {
        fn drop(&mut self) {
            let _ = run(&["rm", "-f", &self.0]);
        }
    }
}

/// Read a streaming endpoint (NDJSON) for `for_how_long`, calling `during` once connected;
/// returns the body lines.
pub fn stream_lines(
    port: u16,
    path: &str,
    for_how_long: Duration,
    during: impl FnOnce(),
) -> Vec<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let deadline = Instant::now() + for_how_long;
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            if raw.windows(4).any(|w| w == b"\r\n\r\n") {
                let _ = tx.send(());
            }
        }
        raw
    });
    // Headers arrive at once: the subscription exists before the workload runs.
    rx.recv_timeout(Duration::from_secs(5)).ok();
    during();
    let raw = reader.join().unwrap();
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    body.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Helpers for the tests against real software (tests/real_software.rs): a cgroup of the test's
/// own to run a server in (freezable, so the sidecar and a peer tracer attach while nothing in it
/// runs), bpftrace as an independent counter, and the checks for installed programs.
pub mod real {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;

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
            let path =
                cgroup2_root().join(format!("ebpf-sidecar-real-{tag}-{}", std::process::id()));
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

    /// bpftrace counting syscalls by number for one cgroup id: the peer the syscalls family is
    /// compared with. Started, it is attached; `finish` stops it (SIGINT) and returns its map.
    pub struct Bpftrace {
        child: Child,
        out: PathBuf,
    }

    impl Bpftrace {
        /// `tracepoint:raw_syscalls:sys_enter /cgroup == ID/ { @[args->id] = count(); }`
        pub fn syscalls_of_cgroup(tag: &str, cgroup_id: u64) -> Self {
            let prog = format!(
                "tracepoint:raw_syscalls:sys_enter /cgroup == {cgroup_id}/ {{ @[args->id] = count(); }}"
            );
            Self::start(tag, &prog)
        }

        pub fn start(tag: &str, prog: &str) -> Self {
            let bin = need("bpftrace", "bpftrace");
            let out = std::env::temp_dir().join(format!("ebpf-sidecar-real-bpftrace-{tag}.out"));
            let child = Command::new(bin)
                .args(["-e", prog])
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap();
            let mut b = Bpftrace { child, out };
            // bpftrace prints "Attaching N probe(s)..." and then attaches; the targets are frozen
            // while it does, so the extra second only has to cover the attach itself.
            wait_for("bpftrace attaching", Duration::from_secs(60), || {
                if let Ok(Some(st)) = b.child.try_wait() {
                    panic!("bpftrace exited: {st}: {}", b.text());
                }
                b.text().contains("Attaching").then_some(())
            });
            std::thread::sleep(Duration::from_secs(1));
            b
        }

        fn text(&self) -> String {
            std::fs::read_to_string(&self.out).unwrap_or_default()
        }

        /// Stop (SIGINT, bpftrace then prints its maps) and parse `@[KEY]: COUNT` lines.
        pub fn finish(mut self) -> BTreeMap<u64, u64> {
            // bpftrace 0.17 sometimes lets a SIGINT pass without leaving its event loop (seen
            // here: blocked in epoll_wait, nothing pending); it prints and exits on the next.
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
            };
            assert!(st.success(), "bpftrace: {st}: {}", self.text());
            self.text()
                .lines()
                .filter_map(|l| {
                    let (k, v) = l.strip_prefix("@[")?.split_once("]: ")?;
                    Some((k.trim().parse().ok()?, v.trim().parse().ok()?))
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
}
