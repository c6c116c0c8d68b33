//! The few Docker Engine API calls the sidecar needs (inspect a container), over the socket in
//! `DOCKER_HOST` (`unix://…` or `tcp://host:port`) or `/var/run/docker.sock`.
//!
//! A deliberately small blocking client: one request per call, HTTP/1.0 so the daemon answers
//! with a plain body and closes; no TLS (use a unix socket, or a local proxy for tcp+tls).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::Deserialize;

use super::TargetError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// Host pid of the container's init, when running.
    pub pid: Option<u32>,
}

#[derive(Deserialize)]
struct Inspect {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "State")]
    state: State,
    #[serde(rename = "Config")]
    config: Config,
}

#[derive(Deserialize)]
struct State {
    #[serde(rename = "Running", default)]
    running: bool,
    #[serde(rename = "Pid", default)]
    pid: u32,
}

#[derive(Deserialize)]
struct Config {
    #[serde(rename = "Image", default)]
    image: String,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

enum Endpoint {
    Unix(String),
    Tcp(String),
}

fn endpoint() -> Result<Endpoint, TargetError> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => {
            if let Some(p) = h.strip_prefix("unix://") {
                Ok(Endpoint::Unix(p.to_string()))
            } else if let Some(a) = h.strip_prefix("tcp://") {
                Ok(Endpoint::Tcp(a.trim_end_matches('/').to_string()))
            } else {
                Err(TargetError::Docker(format!(
                    "DOCKER_HOST={h} is not supported: use unix:///path/docker.sock or tcp://host:port"
                )))
            }
        }
        _ => Ok(Endpoint::Unix("/var/run/docker.sock".into())),
    }
}

/// Container names and ids are `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; anything else is refused before
/// it reaches a URL.
pub fn valid_reference(r: &str) -> bool {
    let r = r.strip_prefix('/').unwrap_or(r);
    !r.is_empty()
        && r.len() <= 255
        && r.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && r.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Inspect a container by name or id. `Ok(None)` when Docker does not know it.
pub fn inspect(reference: &str) -> Result<Option<ContainerInfo>, TargetError> {
    if !valid_reference(reference) {
        return Err(TargetError::BadContainerRef(reference.to_string()));
    }
    let path = format!("/containers/{}/json", reference.trim_start_matches('/'));
    let (status, body) = get(&path)?;
    match status {
        200 => {
            let i: Inspect = serde_json::from_slice(&body).map_err(|e| {
                TargetError::Docker(format!("decoding inspect of {reference}: {e}"))
            })?;
            Ok(Some(ContainerInfo {
                id: i.id,
                name: i.name.trim_start_matches('/').to_string(),
                image: i.config.image,
                labels: i.config.labels.unwrap_or_default(),
                pid: (i.state.running && i.state.pid > 0).then_some(i.state.pid),
            }))
        }
        404 => Ok(None),
        s => Err(TargetError::Docker(format!(
            "GET {path}: HTTP {s}: {}",
            String::from_utf8_lossy(&body).trim()
        ))),
    }
}

fn get(path: &str) -> Result<(u16, Vec<u8>), TargetError> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: docker\r\nUser-Agent: ebpf-sidecar\r\n\r\n");
    let timeout = Some(Duration::from_secs(5));
    let mut raw = Vec::new();
    let io_err = |what: &str, e: std::io::Error| TargetError::Docker(format!("{what}: {e}"));
    match endpoint()? {
        Endpoint::Unix(p) => {
            let mut s = UnixStream::connect(&p).map_err(|e| {
                io_err(
                    &format!(
                        "connecting to the Docker socket {p} (mount it with -v {p}:{p} or set DOCKER_HOST)"
                    ),
                    e,
                )
            })?;
            s.set_read_timeout(timeout).ok();
            s.write_all(req.as_bytes())
                .map_err(|e| io_err("writing to Docker", e))?;
            s.read_to_end(&mut raw)
                .map_err(|e| io_err("reading from Docker", e))?;
        }
        Endpoint::Tcp(a) => {
            let mut s = TcpStream::connect(&a)
                .map_err(|e| io_err(&format!("connecting to Docker at {a}"), e))?;
            s.set_read_timeout(timeout).ok();
            s.write_all(req.as_bytes())
                .map_err(|e| io_err("writing to Docker", e))?;
            s.read_to_end(&mut raw)
                .map_err(|e| io_err("reading from Docker", e))?;
        }
    }
    parse_response(&raw)
        .ok_or_else(|| TargetError::Docker("malformed HTTP response from Docker".into()))
}

fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, raw[split + 4..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert!(valid_reference("app"));
        assert!(valid_reference("/my_app.1-x"));
        assert!(valid_reference("0123abcdef"));
        assert!(!valid_reference("../../etc"));
        assert!(!valid_reference("a b"));
        assert!(!valid_reference(""));
    }

    #[test]
    fn response() {
        let (s, b) =
            parse_response(b"HTTP/1.0 404 Not Found\r\nX: y\r\n\r\n{\"message\":\"no\"}").unwrap();
        assert_eq!(s, 404);
        assert_eq!(b, b"{\"message\":\"no\"}");
        assert!(parse_response(b"garbage").is_none());
    }
}

/// The container id a cgroup path names, for the runtimes that name cgroups after it: Docker
/// (`/docker/<id>`, systemd's `/system.slice/docker-<id>.scope`), containerd/CRI
/// (`cri-containerd-<id>.scope`, `/kubepods/.../<id>`), CRI-O (`crio-<id>.scope`), Podman
/// (`libpod-<id>.scope`). The last path segment holding a 64-hex id wins.
pub fn id_from_cgroup_path(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|seg| {
        let seg = seg.strip_suffix(".scope").unwrap_or(seg);
        let id = seg.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

#[cfg(test)]
mod id_tests {
    use super::id_from_cgroup_path;

    #[test]
    fn ids_from_cgroup_paths() {
        let id = "a".repeat(60) + "0123";
        for p in [
            format!("/docker/{id}"),
            format!("/system.slice/docker-{id}.scope"),
            format!("/kubepods.slice/kubepods-burstable.slice/cri-containerd-{id}.scope"),
            format!("/kubepods/besteffort/pod1234/{id}"),
            format!("/machine.slice/libpod-{id}.scope/container"),
        ] {
            assert_eq!(id_from_cgroup_path(&p).as_deref(), Some(id.as_str()), "{p}");
        }
        assert_eq!(id_from_cgroup_path("/user.slice/session-2.scope"), None);
        assert_eq!(id_from_cgroup_path("/"), None);
    }
}
