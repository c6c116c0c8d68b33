//! Real Docker: the sidecar image, containers removed on drop.

use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use std::time::Duration;

use crate::{free_port, http_get, repo_root, wait_for};

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

/// dockerd must be up; then make the local base images (debian:bookworm-slim, the builder),
/// for tests that run containers but not the sidecar's image.
pub fn base_images() {
    static IMAGES: OnceLock<()> = OnceLock::new();
    IMAGES.get_or_init(|| {
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
    });
}

/// [`base_images`], then the sidecar image (cached by Docker's layer cache after the first
/// build).
pub fn sidecar_image() -> &'static str {
    static IMAGE: OnceLock<()> = OnceLock::new();
    IMAGE.get_or_init(|| {
        base_images();
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

/// A sidecar container beside `app`, on the host's bpffs; returns it and its port.
pub fn sidecar_beside(name: &str, app: &str, extra: &[&str]) -> (Container, u16) {
    let image = sidecar_image();
    let port = free_port();
    let pid = format!("--pid=container:{app}");
    let publish = format!("127.0.0.1:{port}:9435");
    let mut args = vec![
        pid.as_str(),
        "-v",
        "/sys/fs/bpf:/sys/fs/bpf",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "NET_ADMIN",
        "-p",
        &publish,
        image,
    ];
    args.extend_from_slice(extra);
    let c = Container::run(name, &args);
    wait_for("sidecar serving", Duration::from_secs(60), || {
        http_get(port, "/healthz", None)
            .ok()
            .filter(|r| r.0 == 200)
            .map(|_| ())
    });
    (c, port)
}
