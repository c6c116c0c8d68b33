//! Custom probes: the examples in examples/custom, built with the line users are given
//! (`sidecar_ebpf::clang::USER_COMMAND`) against the headers `ebpf-sidecar custom headers`
//! writes, load next to the built-in families and give exact values for known workloads; broken
//! user probes are reported and never stop the built-ins. The examples: examples.rs; the attach
//! and map kinds they do not use: kinds.rs; in containers and the sidecar image: containers.rs.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use integration::docker;
use integration::*;

mod containers;
mod examples;
mod kinds;

/// A scratch directory for this test binary: headers, objects, configs.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = repo_root().join("target/custom-tests");
        std::fs::create_dir_all(&d).unwrap();
        // The one-command build a user does: the sidecar prints its headers, clang does the rest.
        let out = Command::new(sidecar_bin())
            .args(["custom", "headers"])
            .arg(d.join("include"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "custom headers: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for h in ["vmlinux.h", "sidecar.bpf.h", "sidecar.h", "usdt.bpf.h"] {
            assert!(d.join("include").join(h).exists(), "{h} written");
        }
        d
    })
}

/// Compile `examples/custom/NAME.bpf.c` (or `src` when given) into scratch/NAME.bpf.o.
fn build_object(name: &str, src: Option<&Path>) -> PathBuf {
    let dir = scratch();
    let src = src
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join(format!("examples/custom/{name}.bpf.c")));
    let out = dir.join(format!("{name}.bpf.o"));
    compile_bpf(Recipe::User, &[&dir.join("include")], &src, &out);
    out
}

fn example_yaml(name: &str) -> PathBuf {
    repo_root().join(format!("examples/custom/{name}.yaml"))
}

fn write(name: &str, text: &str) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `ebpf-sidecar run [args] -- cmd`, serving on a free port; killed on drop.
struct Run {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Run {
    fn start(args: &[&str], cmd: &[&str]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("ebpf-sidecar-custom-{port}.log"));
        let child = Command::new(sidecar_bin())
            .arg("run")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .arg("--")
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting ebpf-sidecar");
        let mut r = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("sidecar exited early ({st}):\n{}", r.log_text());
            }
            if http_get(r.port, "/healthz", None).is_ok_and(|x| x.0 == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sidecar did not serve within 30 s:\n{}",
                r.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn scrape(&self) -> Metrics {
        let (status, _, body) = http_get(self.port, "/metrics", None).expect("scrape");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Wait for the command (and so the sidecar) to finish; returns the sidecar's status.
    fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return (st.code().unwrap_or(-1), self.log_text());
            }
            assert!(Instant::now() < deadline, "run did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // SAFETY: kill with a pid we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn probe_arg(obj: &Path, yaml: &Path) -> Vec<String> {
    vec![
        "--probe-file".into(),
        obj.display().to_string(),
        "--probe-config".into(),
        yaml.display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Expected (calls, cost_ns, max_cost_ns) per kind for `ufunc N`.
fn ufunc_truth(n: u64) -> [(u64, u64, u64); 3] {
    let mut t = [(0, 0, 0); 3];
    for i in 0..n {
        let (k, cost) = ((i % 3) as usize, 1000 * (i % 5 + 1));
        t[k].0 += 1;
        t[k].1 += cost;
        t[k].2 = t[k].2.max(cost);
    }
    t
}
