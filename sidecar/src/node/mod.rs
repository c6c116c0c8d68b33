//! `ebpf-sidecar node`: every container of the host from one process, each a slot of the shared
//! kernel side (so a host mixing node mode and sidecars still pays once).
//!
//! Each container is what a sidecar would be — its families loaded on its own slot, its own
//! target state, events and metrics — kept in this process; `/metrics` merges them, every
//! series labelled `container`, `container_id`, `image` (and `pod`, `namespace` from
//! Kubernetes' labels). Containers are found through Docker's event stream (a started one is
//! counted as soon as its start event arrives), or, without the Docker socket, by their cgroups.

mod merge;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prometheus_client::registry::Registry;

use crate::app::{self, Choice, Config, start};
use crate::export::{self, ProbeStatus, Shared, TargetState};
use crate::kernel_side::{self, Choice as KsChoice, Handle, KernelSide};
use crate::monitored::cgroup::Cgroup2Mount;
use crate::monitored::docker::{self, ContainerInfo, Selector};
use crate::monitored::{self, Resolved, TargetSpec};
use crate::probes;

/// How containers are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Docker Engine API: names, images, labels; started containers from its event stream.
    Docker,
    /// No Docker socket: containers are the cgroups named after a container id.
    Cgroups,
}

/// One monitored container.
struct Instance {
    info: ContainerInfo,
    labels: Vec<(String, String)>,
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    /// What a sidecar on this container would serve (its page, /events, /seccomp, /debug/*),
    /// reached at /containers/NAME/… and with ?container=NAME.
    router: axum::Router,
    /// When the container was removed: its series stay until `retain` has passed (its last
    /// values; the slot is given back at once).
    removed: Option<(Instant, Arc<str>)>,
}

struct Node {
    cfg: Config,
    families: Vec<&'static probes::Family>,
    skipped: Vec<ProbeStatus>,
    mount: Cgroup2Mount,
    source: Source,
    selectors: Vec<Selector>,
    retain: Duration,
    include_host: bool,
    instances: Mutex<BTreeMap<String, Instance>>,
    started: Instant,
}

/// Run node mode until stopped.
pub fn run(cfg: Config) -> Result<i32> {
    let Choice::Node {
        selectors,
        retain,
        include_host,
    } = cfg.choice.clone()
    else {
        anyhow::bail!("node::run without node's settings");
    };
    let listen = app::bind(&cfg)?;
    let chosen = app::choose_families(&cfg)?;
    probes::object::loads::share();
    app::raise_memlock();
    let _stats_fd = app::enable_bpf_stats(cfg.bpf_stats)?;
    let mount = start(monitored::cgroup::cgroup2_mount().map_err(|e| {
        anyhow::anyhow!("node mode needs cgroup v2 (containers are slots by cgroup): {e}")
    }))?;
    if cfg.kernel_side == KsChoice::Private {
        return start(Err(anyhow::anyhow!(
            "node mode runs on the shared kernel side (one slot per container): drop \
             --kernel-side private"
        )));
    }
    kernel_side::writable_bpffs().map_err(|e| {
        anyhow::Error::new(app::StartError(anyhow::anyhow!(
            "node mode needs a writable bpffs at /sys/fs/bpf ({e}): docker run -v \
             /sys/fs/bpf:/sys/fs/bpf (Kubernetes: a hostPath volume)"
        )))
    })?;
    let source = match docker::list() {
        Ok(_) => Source::Docker,
        Err(e) => {
            tracing::warn!(
                "no Docker API ({e}): containers are found by their cgroups and labelled with \
                 container_id only; mount /var/run/docker.sock for names, images and pod labels"
            );
            Source::Cgroups
        }
    };
    if source == Source::Cgroups && !selectors.is_empty() {
        return start(Err(anyhow::anyhow!(
            "--containers selects by name or label, which need the Docker API: mount \
             /var/run/docker.sock (or set DOCKER_HOST), or drop --containers"
        )));
    }
    let node = Arc::new(Node {
        families: chosen.chosen.clone(),
        skipped: chosen.skipped,
        cfg,
        mount,
        source,
        selectors,
        retain,
        include_host,
        instances: Mutex::new(BTreeMap::new()),
        started: Instant::now(),
    });
    if node.include_host {
        start(node.add_host())?;
    }
    node.sync();
    let monitored = node.lock().keys().filter(|id| id.as_str() != HOST).count();
    if monitored == 0 && !node.selectors.is_empty() {
        tracing::warn!(
            "--containers matches none of the running containers: nothing is monitored until a \
             matching one starts (check the names with `docker ps --format '{{{{.Names}}}}'` and \
             the labels with `docker inspect`)"
        );
    }
    {
        let n = node.clone();
        std::thread::Builder::new()
            .name("node-discover".into())
            .spawn(move || n.discover())?;
    }
    {
        let n = node.clone();
        std::thread::Builder::new()
            .name("node-reap".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    n.reap();
                }
            })?;
    }
    serve(node, listen)
}

impl Node {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Instance>> {
        self.instances.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bring the instances in line with the containers running now.
    fn sync(&self) {
        let running: Vec<String> = match self.source {
            Source::Docker => match docker::list() {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!("listing containers: {e}");
                    return;
                }
            },
            Source::Cgroups => container_cgroups(&self.mount).into_keys().collect(),
        };
        for id in &running {
            self.started_container(id);
        }
        let gone: Vec<String> = self
            .lock()
            .iter()
            .filter(|(id, i)| i.removed.is_none() && *id != HOST && !running.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.removed_container(&id);
        }
    }

    /// Follow the host's containers: Docker's events as they come (re-listing after every
    /// reconnection, so nothing between two streams is missed), or the cgroups every second.
    fn discover(&self) {
        loop {
            match self.source {
                Source::Docker => {
                    let r = docker::follow_events(|e| match e.action.as_str() {
                        "start" | "restart" | "unpause" => self.started_container(&e.id),
                        "die" => self.died_container(&e.id),
                        "destroy" => self.removed_container(&e.id),
                        _ => {}
                    });
                    if let Err(e) = r {
                        tracing::warn!("Docker event stream: {e}; reconnecting");
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                Source::Cgroups => std::thread::sleep(Duration::from_secs(1)),
            }
            self.sync();
        }
    }

    /// A container is running: start monitoring it, or (a restart) point its slot at its new
    /// cgroup.
    fn started_container(&self, id: &str) {
        enum Known {
            Counting,
            Paused,
            /// Given up (removed, or seen stopped at a re-listing): its slot is gone, so it
            /// starts over on a new one.
            Left,
        }
        let known = self.lock().get(id).map(|i| {
            if i.removed.is_some() {
                Known::Left
            } else if i
                .shared
                .target
                .read()
                .map(|t| t.current.is_some())
                .unwrap_or(false)
            {
                Known::Counting
            } else {
                Known::Paused
            }
        });
        match known {
            Some(Known::Counting) => {}
            Some(Known::Paused) => self.refresh(id),
            Some(Known::Left) | None => {
                self.lock().remove(id);
                if let Err(e) = self.add(id) {
                    tracing::warn!(container = id, "not monitored: {e:#}");
                }
            }
        }
    }

    /// The container's processes are gone (it may start again: same labels, new cgroup).
    fn died_container(&self, id: &str) {
        let shared = self.lock().get(id).map(|i| i.shared.clone());
        if let Some(s) = shared {
            for p in &s.probes {
                if let Err(e) = p.on_target(None) {
                    tracing::warn!(container = id, "pausing: {e}");
                }
            }
            s.target.write().unwrap_or_else(|p| p.into_inner()).current = None;
        }
    }

    /// Re-resolve a known container (restarted): its families follow the new cgroup.
    fn refresh(&self, id: &str) {
        let shared = match self.lock().get(id) {
            Some(i) => i.shared.clone(),
            None => return,
        };
        let now = match self.resolve(id) {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(container = id, "{e:#}");
                return;
            }
        };
        for p in &shared.probes {
            if let Err(e) = p.on_target(Some(&now)) {
                tracing::warn!(container = id, "following the restart: {e}");
            }
        }
        let mut st = shared.target.write().unwrap_or_else(|p| p.into_inner());
        st.generation += 1;
        st.current = Some(now);
        tracing::info!(container = id, "container restarted: followed");
    }

    fn resolve(&self, id: &str) -> Result<Option<Resolved>> {
        let spec = match self.source {
            Source::Docker => TargetSpec::Container(id.to_string()),
            Source::Cgroups => {
                let Some(dir) = container_cgroups(&self.mount).remove(id) else {
                    return Ok(None);
                };
                match first_pid(&dir) {
                    Some(pid) => TargetSpec::Pid(pid),
                    None => return Ok(None),
                }
            }
        };
        let mut t = monitored::resolve(&spec, Some(&self.mount))?;
        if let Some(t) = &mut t {
            // A pid names its cgroup here: the whole container, nobody else in it.
            t.others_in_cgroup = None;
        }
        Ok(t)
    }

    /// Start monitoring container `id` on a slot of its own.
    fn add(&self, id: &str) -> Result<()> {
        let info = match self.source {
            Source::Docker => match docker::inspect(id)? {
                Some(i) => i,
                None => return Ok(()),
            },
            Source::Cgroups => ContainerInfo {
                id: id.to_string(),
                ..Default::default()
            },
        };
        if !self.selectors.is_empty() && !self.selectors.iter().any(|s| s.matches(&info)) {
            return Ok(());
        }
        let Some(target) = self.resolve(id)? else {
            return Ok(());
        };
        if let Some(dir) = &target.cgroup_dir {
            // Node mode in a container of its own (a DaemonSet pod): not a target of itself.
            let me = std::process::id();
            let mut ours = false;
            monitored::cgroup::for_each_proc(dir, &mut |p| ours |= p == me);
            if ours {
                tracing::info!(container = id, "node mode's own container: not monitored");
                return Ok(());
            }
        }
        self.monitor(id, info, target)
    }

    /// --include-host: the host's processes outside every container, one more slot.
    fn add_host(&self) -> Result<()> {
        let target = monitored::host()?;
        let info = ContainerInfo::default();
        self.monitor(HOST, info, target)
            .context("--include-host: monitoring the host's processes")
    }

    /// Load the families on a new slot for `target` and keep the instance under `id`.
    fn monitor(&self, id: &str, info: ContainerInfo, target: Resolved) -> Result<()> {
        let t0 = Instant::now();
        let ks = KernelSide::open(
            KsChoice::Shared,
            self.cfg.max_targets,
            app::slot_flags(&self.cfg.options),
            target.cgroup_id(),
        )?;
        let handle = Handle(Arc::new(ks));
        kernel_side::install_exit_hook(handle.clone());
        let mut cfg = self.cfg.clone();
        cfg.options.kernel_side = handle.clone();
        let (probes, statuses, _) = match app::load_families(&cfg, &self.families, Some(&target)) {
            Ok(l) => l,
            Err(e) => {
                handle.leave();
                kernel_side::forget(&handle);
                return Err(e);
            }
        };
        app::trim_heap();
        let sink = crate::events::EventSink::new(None).context("the container's event buffer")?;
        for p in &probes {
            if let Err(e) = p.start_events(sink.clone()) {
                tracing::error!(
                    container = id,
                    "starting the event reader of {}: {e}",
                    p.name()
                );
            }
        }
        let mut all_statuses = self.skipped.clone();
        all_statuses.extend(statuses);
        let shared = Arc::new(Shared {
            events: sink,
            probes,
            statuses: all_statuses,
            target: RwLock::new(TargetState {
                mode: "node",
                generation: 1,
                current: Some(target),
            }),
            options: cfg.options.clone(),
            bpf_stats: cfg.bpf_stats,
            extra_labels: Vec::new(),
            started: Instant::now(),
            governor: None,
        });
        let registry = Arc::new(export::registry(shared.clone()));
        let router = export::server::router(
            export::server::App {
                registry: registry.clone(),
                shared: shared.clone(),
            },
            None,
        );
        let labels = container_labels(&info);
        tracing::info!(
            container = %info.name,
            container_id = %short(id),
            slot = handle.slot,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "container monitored"
        );
        self.lock().insert(
            id.to_string(),
            Instance {
                info,
                labels,
                shared,
                registry,
                router,
                removed: None,
            },
        );
        Ok(())
    }

    /// The container is gone for good: give its slot back now, keep its last values for
    /// `retain`.
    fn removed_container(&self, id: &str) {
        let mut map = self.lock();
        let Some(inst) = map.get_mut(id) else { return };
        if inst.removed.is_some() {
            return;
        }
        let text = export::render(&inst.registry, None)
            .map(|(_, t)| t)
            .unwrap_or_default();
        inst.removed = Some((Instant::now(), text.into()));
        let ks = inst.shared.options.kernel_side.clone();
        drop(map);
        ks.leave();
        kernel_side::forget(&ks);
        tracing::info!(
            container = id,
            "container removed: its series go after --retain-seconds"
        );
    }

    /// Drop the removed containers whose retention is over.
    fn reap(&self) {
        let retain = self.retain;
        self.lock().retain(|_, i| {
            i.removed
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() < retain)
        });
    }

    /// Every container's metrics, merged, with the node's own.
    fn metrics(&self) -> String {
        enum Source {
            Live(Arc<Registry>),
            Retained(Arc<str>),
        }
        // A snapshot: discovery may add a container while the scrape renders.
        let (sources, live) = {
            let map = self.lock();
            let sources: Vec<(Vec<(String, String)>, Source)> = map
                .values()
                .map(|i| {
                    let src = match &i.removed {
                        Some((_, text)) => Source::Retained(text.clone()),
                        None => Source::Live(i.registry.clone()),
                    };
                    (i.labels.clone(), src)
                })
                .collect();
            let live = map
                .iter()
                .filter(|(id, i)| i.removed.is_none() && id.as_str() != HOST)
                .count();
            (sources, live)
        };
        // Rendered one after another: threads here cost more memory (an allocator arena each)
        // than they saved time on two CPUs.
        let mut merged = merge::Merged::default();
        for (labels, src) in &sources {
            match src {
                Source::Retained(t) => merged.add(t, labels),
                Source::Live(r) => {
                    if let Ok((_, t)) = export::render(r, None) {
                        merged.add(&t, labels);
                    }
                }
            }
        }
        let mut out = merged.text();
        for (m, v) in [
            (export::NODE_CONTAINERS, live.to_string()),
            (
                export::NODE_UPTIME,
                format!("{:.3}", self.started.elapsed().as_secs_f64()),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {n} {h}\n# TYPE {n} gauge\n{n} {v}\n",
                n = m.name,
                h = m.help
            ));
        }
        out
    }

    /// The router of the instance named `name`: a container name or id, an id prefix of 12+
    /// characters, or "" for the host (--include-host).
    fn find(&self, name: &str) -> Option<axum::Router> {
        let name = name.trim_start_matches('/');
        let map = self.lock();
        map.iter()
            .find(|(id, i)| {
                i.removed.is_none()
                    && (i.info.name.trim_start_matches('/') == name
                        || (id.as_str() == HOST && name.is_empty())
                        || (id.as_str() != HOST && id.as_str() == name)
                        || (name.len() >= 12 && id.starts_with(name)))
            })
            .map(|(_, i)| i.router.clone())
    }

    fn leave_all(&self) {
        for inst in self.lock().values() {
            inst.shared.options.kernel_side.leave();
        }
    }
}

/// The host's instance key (--include-host); container ids are 64 hex digits.
const HOST: &str = "host";

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// `container`, `container_id`, `image`, and `pod`, `namespace` when Kubernetes' labels are on
/// the container (cri-dockerd and Docker-based nodes set them).
fn container_labels(c: &ContainerInfo) -> Vec<(String, String)> {
    let mut l = vec![
        (
            "container".to_string(),
            c.name.trim_start_matches('/').to_string(),
        ),
        ("container_id".to_string(), c.id.clone()),
        ("image".to_string(), c.image.clone()),
    ];
    for (k, name) in [
        ("io.kubernetes.pod.name", "pod"),
        ("io.kubernetes.pod.namespace", "namespace"),
    ] {
        if let Some(v) = c.labels.get(k) {
            l.push((name.to_string(), v.clone()));
        }
    }
    l
}

/// Container cgroups under the cgroup2 mount (Docker's `/docker/<id>`, systemd's
/// `docker-<id>.scope`, and the other runtimes `id_from_cgroup_path` knows), by id. Two levels
/// deep at most below the runtimes' usual parents; symlinks are not followed.
fn container_cgroups(mount: &Cgroup2Mount) -> BTreeMap<String, std::path::PathBuf> {
    let mut out = BTreeMap::new();
    let root = mount.mount_point.as_path();
    let mut dirs = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .to_string();
            let path = format!("{}/{rel}", mount.root.trim_end_matches('/'));
            match docker::id_from_cgroup_path(&path) {
                Some(id) => {
                    out.insert(id, p);
                }
                None if depth < 3 => dirs.push((p, depth + 1)),
                None => {}
            }
        }
    }
    out
}

/// A process of the cgroup at `dir` (cgroup.procs is the kernel's: small, never blocks).
fn first_pid(dir: &std::path::Path) -> Option<u32> {
    use std::io::Read;
    let mut buf = String::new();
    std::fs::File::open(dir.join("cgroup.procs"))
        .ok()?
        .take(64 * 1024)
        .read_to_string(&mut buf)
        .ok()?;
    buf.lines().find_map(|l| l.trim().parse().ok())
}

fn serve(node: Arc<Node>, listen: app::Listen) -> Result<i32> {
    use axum::extract::{Path, Request, State};
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Redirect, Response};
    use axum::routing::get;

    #[derive(serde::Deserialize)]
    struct ContainerQuery {
        container: Option<String>,
    }

    async fn metrics(State(node): State<Arc<Node>>) -> Response {
        let text = tokio::task::spawn_blocking(move || node.metrics())
            .await
            .unwrap_or_default();
        ([(header::CONTENT_TYPE, export::PROMETHEUS_TEXT)], text).into_response()
    }

    /// Hand `req` to a container's own routes, at `path` (its query kept).
    async fn forward(router: axum::Router, mut req: Request, path: &str) -> Response {
        use tower_service::Service;
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        match format!("{path}{query}").parse() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return (StatusCode::BAD_REQUEST, "bad path\n").into_response(),
        }
        let mut router = router;
        match router.call(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    fn unknown(name: &str) -> Response {
        (
            StatusCode::NOT_FOUND,
            format!("no monitored container {name:?} (names, ids, or 12+ characters of an id)\n"),
        )
            .into_response()
    }

    /// `/containers/NAME/…`: that container's page and routes, as its sidecar would serve them.
    async fn container_page(
        State(node): State<Arc<Node>>,
        Path((name, rest)): Path<(String, String)>,
        req: Request,
    ) -> Response {
        match node.find(&name) {
            Some(r) => forward(r, req, &format!("/{rest}")).await,
            None => unknown(&name),
        }
    }

    async fn container_root(
        State(node): State<Arc<Node>>,
        Path(name): Path<String>,
        req: Request,
    ) -> Response {
        match node.find(&name) {
            Some(r) => forward(r, req, "/").await,
            None => unknown(&name),
        }
    }

    /// Every other path (`/events`, `/seccomp`, `/debug/…`): the container `?container=NAME`
    /// names answers it.
    async fn per_container(State(node): State<Arc<Node>>, req: Request) -> Response {
        let path = req.uri().path().to_string();
        let q = axum::extract::Query::<ContainerQuery>::try_from_uri(req.uri())
            .map(|q| q.0.container)
            .unwrap_or(None);
        let Some(name) = q else {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "node mode serves {path} per container: {path}?container=NAME (a name, an \
                     id, or \"\" for the host with --include-host); the list is at /\n"
                ),
            )
                .into_response();
        };
        match node.find(&name) {
            Some(r) => forward(r, req, &path).await,
            None => unknown(&name),
        }
    }

    async fn index() -> axum::response::Html<&'static str> {
        axum::response::Html(include_str!("../../assets/node.html"))
    }

    async fn live_css() -> Response {
        (
            [
                (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            include_str!("../../assets/live.css"),
        )
            .into_response()
    }

    let rt = app::runtime()?;
    let app::Listen {
        listener,
        tls,
        auth,
    } = listen;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tracing::info!("node mode serving on {}/metrics", listener.local_addr()?);
        let router = axum::Router::new()
            .route("/", get(index))
            .route("/assets/live.css", get(live_css))
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route(
                "/containers/{name}",
                get(|Path(name): Path<String>| async move {
                    // Docker's names are [A-Za-z0-9_.-]: anything else is no container (and
                    // would not be a valid Location header).
                    if name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                    {
                        Redirect::permanent(&format!("/containers/{name}/")).into_response()
                    } else {
                        unknown(&name)
                    }
                }),
            )
            .route("/containers/{name}/", get(container_root))
            .route("/containers/{name}/{*rest}", get(container_page))
            .fallback(per_container)
            .with_state(node.clone());
        let router = match auth {
            Some(a) => router.layer(axum::middleware::from_fn_with_state(
                a,
                export::web::require_basic_auth,
            )),
            None => router,
        };
        let server = tokio::spawn(async move {
            match tls {
                Some(acceptor) => export::server::serve_tls(listener, router, acceptor).await,
                None => axum::serve(listener, router).await,
            }
        });
        tokio::select! {
            r = server => { r??; }
            _ = app::shutdown_signal() => { tracing::info!("shutting down"); }
        }
        node.leave_all();
        Ok(0)
    })
}
