//! The sidecar itself: TLS and basic auth from an exporter-toolkit web config (checked with curl
//! and a real Prometheus), and the sidecar image under --read-only and no-new-privileges.

use std::process::{Command, Stdio};
use std::time::Duration;

use integration::docker::{self, Container};
use integration::*;

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn tls_and_basic_auth_from_a_web_config_and_prometheus_scrapes_it() {
    require_root();
    let dir = std::env::temp_dir().join(format!("ebpf-sidecar-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(&dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
    let hash = bcrypt::hash("s3cret", 10).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\nbasic_auth_users:\n  alice: {hash}\n"),
    )
    .unwrap();
    let port = free_port();
    let mut sidecar = Command::new(sidecar_bin())
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--web.config.file",
        ])
        .arg(dir.join("web.yml"))
        .args(["--", "sleep", "60"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/metrics");
    let ca = dir.join("cert.pem").display().to_string();
    wait_for("TLS listener", Duration::from_secs(20), || {
        (curl(&["--cacert", &ca, "-u", "alice:s3cret", &url]).1 == "200").then_some(())
    });
    assert_eq!(curl(&["--cacert", &ca, "-u", "alice:wrong", &url]).1, "401");
    assert_eq!(curl(&["--cacert", &ca, "-u", "bob:s3cret", &url]).1, "401");
    assert_eq!(curl(&["--cacert", &ca, &url]).1, "401");
    // Plain HTTP to the TLS listener fails cleanly: no response, the connection is closed.
    let (code, status) = curl(&[&format!("http://127.0.0.1:{port}/metrics")]);
    assert!(
        code != 0 && status == "000",
        "plain HTTP must not get a response (curl exit {code}, status {status})"
    );

    // A real Prometheus scrapes it with the matching tls_config and basic_auth.
    let prom_port = free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sidecar\n    scheme: https\n    \
             tls_config:\n      ca_file: {ca}\n    basic_auth:\n      username: alice\n      password: s3cret\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (apt-get install prometheus)");
    let q = "/api/v1/query?query=ebpf_sidecar_target_up%7Bjob%3D%22sidecar%22%7D";
    let up = std::panic::catch_unwind(|| {
        wait_for(
            "Prometheus scraped the sidecar",
            Duration::from_secs(40),
            || {
                let (_, _, body) = http_get(prom_port, q, None).ok()?;
                let v: serde_json::Value = serde_json::from_str(&body).ok()?;
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .map(str::to_string)
            },
        )
    });
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = sidecar.kill();
    let _ = sidecar.wait();
    assert_eq!(up.expect("Prometheus scrape through TLS + basic auth"), "1");
}

#[test]
fn sidecar_image_runs_read_only_with_no_new_privileges_and_no_capabilities_left() {
    require_root();
    let image = docker::sidecar_image();
    let app = Container::run(
        "ebpf-sidecar-hard-app",
        &["debian:bookworm-slim", "sleep", "600"],
    );
    let port = free_port();
    let sidecar = Container::run(
        "ebpf-sidecar-hard-sidecar",
        &[
            "--read-only",
            "--security-opt",
            "no-new-privileges",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "SYS_ADMIN",
            &format!("--pid=container:{}", app.0),
            "-p",
            &format!("127.0.0.1:{port}:9435"),
            image,
        ],
    );
    let m = wait_for("sidecar serving", Duration::from_secs(30), || {
        let (st, _, body) = http_get(port, "/metrics", None).ok()?;
        (st == 200).then(|| Metrics::parse(&body))
    });
    assert_eq!(m.sum("ebpf_sidecar_target_up", &[]), 1.0);
    let info: Vec<_> = m.matching("ebpf_sidecar_target_info", &[]).collect();
    assert_eq!(
        info[0].0["filter"], "cgroup",
        "read-only root: cgroup2 is mounted over the empty /mnt"
    );
    // Every default family attached, but net: it needs NET_ADMIN, which this container lacks, so
    // it is skipped and reported.
    let up: Vec<_> = m.matching("ebpf_sidecar_probe_up", &[]).collect();
    for (labels, v) in &up {
        let want = if labels["probe"] == "net" { 0.0 } else { 1.0 };
        assert_eq!(*v, want, "{up:?}");
    }
    let pid = docker::ok(&["inspect", "-f", "{{.State.Pid}}", &sidecar.0]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for (field, want) in [
        ("CapEff:", "0000000000000000"),
        ("CapPrm:", "0000000000000000"),
        ("NoNewPrivs:", "1"),
    ] {
        let got = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap()
            .trim();
        assert_eq!(got, want, "{field}");
    }
}
