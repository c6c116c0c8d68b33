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

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
}

/// Ids of the running containers.
pub fn list() -> Result<Vec<String>, TargetError> {
    let (status, body) = get("/containers/json")?;
    if status != 200 {
        return Err(TargetError::Docker(format!(
            "GET /containers/json: HTTP {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let v: Vec<Listed> = serde_json::from_slice(&body)
        .map_err(|e| TargetError::Docker(format!("decoding the container list: {e}")))?;
    Ok(v.into_iter().map(|c| c.id).collect())
}

/// A container lifecycle event from Docker's event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// start, die, destroy, …
    pub action: String,
    pub id: String,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: Actor,
}

#[derive(Deserialize, Default)]
struct Actor {
    #[serde(rename = "ID", default)]
    id: String,
}

/// Follow Docker's container events (GET /events, one JSON object per line, as they happen)
/// and call `on` with each; returns when the stream ends or fails (the caller reconnects).
pub fn follow_events(mut on: impl FnMut(Event)) -> Result<(), TargetError> {
    let path = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D";
    let req = format!("GET {path} HTTP/1.0\r\nHost: docker\r\nUser-Agent: ebpf-sidecar\r\n\r\n");
    let io_err = |what: &str, e: std::io::Error| TargetError::Docker(format!("{what}: {e}"));
    let stream: Box<dyn Read> = match endpoint()? {
        Endpoint::Unix(p) => {
            let mut s = UnixStream::connect(&p)
                .map_err(|e| io_err(&format!("connecting to the Docker socket {p}"), e))?;
            s.write_all(req.as_bytes())
                .map_err(|e| io_err("writing to Docker", e))?;
            Box::new(s)
        }
        Endpoint::Tcp(a) => {
            let mut s = TcpStream::connect(&a)
                .map_err(|e| io_err(&format!("connecting to Docker at {a}"), e))?;
            s.write_all(req.as_bytes())
                .map_err(|e| io_err("writing to Docker", e))?;
            Box::new(s)
        }
    };
    let mut r = std::io::BufReader::new(stream);
    let mut line = String::new();
    // The head: a status line, headers, a blank line.
    let mut first = true;
    loop {
        line.clear();
        if std::io::BufRead::read_line(&mut r, &mut line).map_err(|e| io_err("reading", e))? == 0 {
            return Ok(());
        }
        if first {
            first = false;
            let status = line.split_whitespace().nth(1).unwrap_or("");
            if status != "200" {
                return Err(TargetError::Docker(format!("GET /events: {}", line.trim())));
            }
        }
        if line.trim().is_empty() {
            break;
        }
    }
    loop {
        line.clear();
        // Bounded: an event is a few hundred bytes; a line this long is not Docker's.
        let n = std::io::BufRead::read_line(&mut (&mut r).take(1 << 20), &mut line)
            .map_err(|e| io_err("reading events", e))?;
        if n == 0 {
            return Ok(());
        }
        if let Ok(e) = serde_json::from_str::<RawEvent>(line.trim())
            && e.kind == "container"
            && !e.actor.id.is_empty()
        {
            on(Event {
                action: e.action,
                id: e.actor.id,
            });
        }
    }
}

/// `--containers`: which containers node mode monitors.
#[derive(Clone, Debug)]
pub enum Selector {
    /// `label=KEY=VALUE`
    Label(String, String),
    /// `name=REGEX`, anchored, on the name without its leading slash.
    Name(String, std::sync::Arc<regex_automata::meta::Regex>),
}

impl Selector {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("label=") {
            let (k, v) = rest.split_once('=').ok_or_else(|| {
                format!("{s:?}: a label selector is label=KEY=VALUE (e.g. label=team=payments)")
            })?;
            if k.is_empty() {
                return Err(format!("{s:?}: the label key is empty"));
            }
            return Ok(Self::Label(k.to_string(), v.to_string()));
        }
        if let Some(re) = s.strip_prefix("name=") {
            let anchored = format!("^(?:{re})$");
            let r = regex_automata::meta::Regex::new(&anchored)
                .map_err(|e| format!("{s:?}: not a valid regular expression: {e}"))?;
            return Ok(Self::Name(re.to_string(), std::sync::Arc::new(r)));
        }
        Err(format!(
            "{s:?}: a selector is label=KEY=VALUE or name=REGEX"
        ))
    }

    pub fn matches(&self, c: &ContainerInfo) -> bool {
        match self {
            Self::Label(k, v) => c.labels.get(k) == Some(v),
            Self::Name(_, r) => r.is_match(c.name.trim_start_matches('/')),
        }
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
    fn selectors() {
        let c = ContainerInfo {
            name: "web-1".into(),
            labels: [("team".to_string(), "pay".to_string())].into(),
            ..Default::default()
        };
        assert!(Selector::parse("name=web-[0-9]+").unwrap().matches(&c));
        assert!(
            !Selector::parse("name=web").unwrap().matches(&c),
            "anchored"
        );
        assert!(Selector::parse("label=team=pay").unwrap().matches(&c));
        assert!(!Selector::parse("label=team=ops").unwrap().matches(&c));
        assert!(Selector::parse("name=(").is_err());
        assert!(Selector::parse("label=team").is_err());
        assert!(Selector::parse("image=x").is_err());
    }

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
