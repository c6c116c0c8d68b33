//! Wiring: resolve the target, load and attach probes, drop privileges, serve, follow the target.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::export::{self, ProbeStatus, Shared, TargetState};
use crate::monitored::{self, Cgroup2Mount, RunCgroup, TargetSpec};
use crate::probes::{self, Options, Probe};

/// What to monitor, as the user said it.
#[derive(Clone, Debug)]
pub enum Choice {
    Sidecar,
    Pid(u32),
    Tree(u32),
    Container(String),
    /// `run -- CMD` (its --seccomp-out and --seccomp-report are the syscalls family's, in the
    /// options).
    Run {
        cmd: Vec<OsString>,
        metrics_out: Option<PathBuf>,
    },
    /// `node`: every selected container of the host, each a slot.
    Node {
        selectors: Vec<crate::monitored::docker::Selector>,
        retain: Duration,
        /// Also the host's processes outside every container, as `container=""`.
        include_host: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub choice: Choice,
    pub listen: SocketAddr,
    pub probes: Vec<String>,
    /// Whether --probes was given (else `probes` holds the defaults).
    pub probes_explicit: bool,
    pub bpf_stats: bool,
    /// `--cpu-budget` in percent (0: off).
    pub cpu_budget: f64,
    pub options: Options,
    pub resolve_interval: Duration,
    /// `--kernel-side`, `--max-targets`.
    pub kernel_side: crate::kernel_side::Choice,
    pub max_targets: u32,
    pub extra_labels: Vec<(String, String)>,
    /// Also append every event (NDJSON) to this file.
    pub events_out: Option<PathBuf>,
    /// Prometheus exporter-toolkit web configuration (TLS, basic auth).
    pub web_config: Option<PathBuf>,
    /// User probes (--probe-file/--probe-config pairs).
    pub custom: Vec<probes::registry::UserProbe>,
}

/// Errors before serving starts are the user's to fix: they exit with status 2.
#[derive(Debug)]
pub struct StartError(pub anyhow::Error);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for StartError {}

pub(crate) fn start<T>(r: Result<T>) -> Result<T> {
    r.map_err(|e| anyhow::Error::new(StartError(e)))
}

/// Run until stopped (or, for `run`, until the command exits). Returns the process exit status.
pub fn run(cfg: Config) -> Result<i32> {
    let listen = bind(&cfg)?;
    let families = choose_families(&cfg)?;
    raise_memlock();
    let _stats_fd = enable_bpf_stats(cfg.bpf_stats)?;
    let mut target = resolve_target(&cfg)?;
    let mut cfg = cfg;
    let ks = open_kernel_side(&cfg, &target)?;
    cfg.options.kernel_side = ks.clone();
    let loaded = load_families(&cfg, &families.chosen, target.initial.as_ref());
    trim_heap();
    let (loaded, statuses, custom_keeps) = match loaded {
        Ok(l) => l,
        Err(e) => {
            ks.leave();
            return Err(e);
        }
    };
    let governor = governor_for(&cfg, &loaded);
    let child = start_command(&mut target)?;
    // Opened before the capabilities go, in case the path needs them; readers start after.
    let sink = start(
        crate::events::EventSink::new(cfg.events_out.as_deref()).with_context(|| {
            format!(
                "opening --events-out {}",
                cfg.events_out
                    .as_deref()
                    .unwrap_or_else(|| std::path::Path::new(""))
                    .display()
            )
        }),
    )?;
    for p in &loaded {
        p.before_dropping_capabilities(target.initial.as_ref());
    }
    drop_capabilities(&cfg, &families.chosen, custom_keeps, child.is_some());
    for p in &loaded {
        if let Err(e) = p.start_events(sink.clone()) {
            tracing::error!("starting the event reader of {}: {e}", p.name());
        }
    }
    let mut statuses_all = families.skipped;
    statuses_all.extend(statuses);
    let shared = Arc::new(Shared {
        events: sink,
        probes: loaded,
        statuses: statuses_all,
        target: RwLock::new(TargetState {
            mode: target.spec.mode(),
            generation: u64::from(target.initial.is_some()),
            current: target.initial.clone(),
        }),
        options: cfg.options.clone(),
        bpf_stats: cfg.bpf_stats,
        extra_labels: cfg.extra_labels.clone(),
        started: Instant::now(),
        governor,
    });
    if let Some(g) = shared.governor.clone() {
        let s = shared.clone();
        crate::governor::start(
            g,
            crate::governor::Ctx {
                probes: shared.probes.clone(),
                kernel_side: cfg.options.kernel_side.clone(),
                events: shared.events.clone(),
                cgroup: Box::new(move || {
                    s.target
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .current
                        .as_ref()
                        .and_then(|t| t.cgroup_dir.clone())
                }),
            },
        );
    }
    serve(&cfg, listen, shared, target, child)
}

/// The CPU-budget governor of this sidecar's slot (`--cpu-budget` > 0), calibrated now, while
/// the capabilities bpf_stats needs are still there.
fn governor_for(cfg: &Config, loaded: &[Arc<dyn Probe>]) -> Option<Arc<crate::governor::Governor>> {
    use crate::governor::{Governor, Source};
    if cfg.cpu_budget <= 0.0 {
        return None;
    }
    let source = if cfg.bpf_stats {
        Source::BpfStats
    } else {
        Source::Model
    };
    let families: Vec<&str> = loaded.iter().map(|p| p.name()).collect();
    let g = Governor::new(
        cfg.cpu_budget,
        cfg.options.kernel_side.flags(),
        &families,
        source,
    );
    g.calibrate(loaded);
    Some(Arc::new(g))
}

/// Give the heap freed by loading back to the system: every object load parses the kernel's
/// BTF (aya's loader does, ~6 MiB of types each time), and the freed pieces would otherwise stay
/// in the process's resident set for its whole life.
/// The embedded objects (~0.7–1.2 MB each, mostly BTF) were read once to load and to hash the
/// ABI: their pages of the binary are dropped from the resident set too (read again from the
/// file, unchanged, should anything read them later).
pub(crate) fn trim_heap() {
    // SAFETY: malloc_trim only walks and releases glibc's own free lists.
    unsafe { libc::malloc_trim(0) };
    // SAFETY: page-aligned ranges inside read-only data of our own binary's file mapping;
    // MADV_DONTNEED on such a private, never-written mapping only drops the pages, and the next
    // read faults them back in from the file with the same bytes.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    for (_, bytes) in sidecar_ebpf::objects::ALL {
        let start = (bytes.as_ptr() as usize).div_ceil(page) * page;
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end > start {
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
}

/// The listening socket and the web configuration (TLS, basic auth), checked before anything
/// is loaded.
pub(crate) struct Listen {
    pub(crate) listener: std::net::TcpListener,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) auth: Option<export::web::BasicAuth>,
}

pub(crate) fn bind(cfg: &Config) -> Result<Listen> {
    let listener = start(std::net::TcpListener::bind(cfg.listen).with_context(|| {
        format!(
            "cannot listen on {} (is another program using that port? choose one with --listen)",
            cfg.listen
        )
    }))?;
    listener.set_nonblocking(true)?;
    let (tls, auth) = match &cfg.web_config {
        Some(path) => {
            let web = start(export::web::WebConfig::load(path).map_err(anyhow::Error::from))?;
            let tls = start(web.tls_acceptor(path).map_err(anyhow::Error::from))?;
            let auth = (!web.basic_auth_users.is_empty())
                .then(|| export::web::BasicAuth::new(web.basic_auth_users.clone()));
            (tls, auth)
        }
        None => (None, None),
    };
    Ok(Listen {
        listener,
        tls,
        auth,
    })
}

pub(crate) struct Chosen {
    /// In FAMILIES' order.
    pub(crate) chosen: Vec<&'static probes::Family>,
    /// Default families left out for a missing capability.
    pub(crate) skipped: Vec<ProbeStatus>,
}

/// The families to load: known names only, in FAMILIES' order whatever the order of --probes
/// (syscalls loads before security and net, whose syscall handlers go into its programs when it
/// offers them: probes::dispatch). A default family that needs a capability the user did not
/// grant is skipped (and reported); one the user asked for by name makes the start fail with
/// the flag to add.
pub(crate) fn choose_families(cfg: &Config) -> Result<Chosen> {
    for p in &cfg.probes {
        if probes::registry::family(p).is_none() {
            let known: Vec<_> = probes::registry::FAMILIES.iter().map(|f| f.name).collect();
            return start(Err(anyhow::anyhow!(
                "unknown probe family {p:?} in --probes (known: {})",
                known.join(",")
            )));
        }
    }
    let mut chosen: Vec<&probes::Family> = cfg
        .probes
        .iter()
        .filter_map(|p| probes::registry::family(p))
        .collect();
    chosen.sort_by_key(|f| {
        probes::registry::FAMILIES
            .iter()
            .position(|g| g.name == f.name)
    });
    let mut skipped: Vec<ProbeStatus> = Vec::new();
    if !cfg.probes_explicit {
        chosen.retain(|f| match crate::caps::missing_for(f.needs) {
            Some(why) => {
                tracing::warn!(probe = f.name, "probe skipped: {why}");
                skipped.push(ProbeStatus {
                    name: f.name,
                    error: Some(why),
                });
                false
            }
            None => true,
        });
    }
    let needs: Vec<crate::caps::Needs<'_>> = chosen.iter().map(|f| (f.name, f.needs)).collect();
    start(crate::caps::check(&needs, cfg.bpf_stats).map_err(anyhow::Error::from))?;
    Ok(Chosen { chosen, skipped })
}

pub(crate) fn enable_bpf_stats(on: bool) -> Result<Option<std::os::fd::OwnedFd>> {
    if !on {
        return Ok(None);
    }
    Ok(Some(start(
        aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling bpf_stats (BPF_ENABLE_STATS)"),
    )?))
}

/// What is monitored: how it was named, where cgroup v2 is, what it is now, and for `run` the
/// command still to start.
struct Target {
    spec: TargetSpec,
    mount: Option<Cgroup2Mount>,
    initial: Option<monitored::Resolved>,
    /// `run`: the command and --metrics-out.
    run_cmd: Option<(Vec<OsString>, Option<PathBuf>)>,
}

fn resolve_target(cfg: &Config) -> Result<Target> {
    let mount = monitored::cgroup::cgroup2_mount();
    let (spec, run_cmd) = match &cfg.choice {
        Choice::Sidecar => (TargetSpec::Sidecar, None),
        Choice::Node { .. } => {
            return start(Err(anyhow::anyhow!("node mode is served by node::run")));
        }
        Choice::Pid(p) => (TargetSpec::Pid(*p), None),
        Choice::Tree(p) => (TargetSpec::Tree(*p), None),
        Choice::Container(c) => (TargetSpec::Container(c.clone()), None),
        Choice::Run { cmd, metrics_out } => {
            let m = start(
                mount
                    .as_ref()
                    .map_err(|e| anyhow::anyhow!("run needs cgroup v2: {e}")),
            )?;
            let cg = start(RunCgroup::create(m).map_err(anyhow::Error::from))?;
            (
                TargetSpec::Run(Arc::new(cg)),
                Some((cmd.clone(), metrics_out.clone())),
            )
        }
    };
    let mount: Option<Cgroup2Mount> = match mount {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("{e}");
            None
        }
    };
    let initial = match monitored::resolve(&spec, mount.as_ref()) {
        Ok(Some(t)) => Some(t),
        Ok(None) if matches!(spec, TargetSpec::Pid(_) | TargetSpec::Tree(_)) => {
            return start(Err(monitored::TargetError::NoSuchPid(match spec {
                TargetSpec::Pid(p) | TargetSpec::Tree(p) => p,
                _ => 0,
            })
            .into()));
        }
        Ok(None) => {
            tracing::warn!(
                "target is not running yet; serving with ebpf_sidecar_target_up 0 until it starts"
            );
            None
        }
        Err(e) => return start(Err(e.into())),
    };
    if let Some(t) = &initial
        && let Some(n) = t.others_in_cgroup
    {
        tracing::warn!(
            "the cgroup of --target-pid {} holds {n} process(es) outside that pid's tree, and \
             everything in it is counted (ebpf_sidecar_target_info{{filter=\"cgroup_shared\"}}); \
             to count only the process and its descendants use --target-tree",
            t.pid.unwrap_or(0)
        );
    }
    if let Some(t) = &initial {
        tracing::info!(
            mode = spec.mode(),
            filter = t.filter.name(),
            cgroup = t.cgroup_path.as_deref().unwrap_or("-"),
            cgroup_id = t.cgroup_id().unwrap_or(0),
            "target resolved"
        );
    }
    Ok(Target {
        spec,
        mount,
        initial,
        run_cmd,
    })
}

/// This slot's SIDECAR_SLOT_* settings, from the options.
pub(crate) fn slot_flags(o: &probes::Options) -> u64 {
    let mut flags = 0;
    if o.syscall_latency {
        flags |= sidecar_ebpf::SLOT_SYSCALL_LATENCY
            | (u64::from(o.syscall_sample_shift.min(6)) << sidecar_ebpf::SLOT_SYSCALL_SAMPLE_SHIFT);
    } else {
        flags |= sidecar_ebpf::SLOT_SYSCALL_COUNTING;
    }
    if o.bash_readline {
        flags |= sidecar_ebpf::SLOT_BASH_READLINE;
    }
    if o.tls_plaintext {
        flags |= sidecar_ebpf::SLOT_TLS_PLAINTEXT;
    }
    if o.net_http {
        // In netns mode there is no socket on tc ingress to pair requests with: net reads HTTP
        // from the syscalls there.
        flags |= if o.net_http_syscalls || o.net_mode == crate::probes::NetMode::Netns {
            sidecar_ebpf::SLOT_NET_HTTP_SYSCALLS
        } else {
            sidecar_ebpf::SLOT_NET_HTTP_PACKETS
        };
        if o.http_paths {
            flags |= sidecar_ebpf::SLOT_NET_HTTP_PATHS;
        }
        // The same recogniser, fed by uprobes on OpenSSL (probes::net::tls).
        if o.net_https {
            flags |= sidecar_ebpf::SLOT_NET_HTTPS;
        }
    }
    // Recognised in the packet programs, which only cgroup mode runs on the target's sockets.
    if o.net_mode == crate::probes::NetMode::Cgroup {
        flags |= o.protocols & sidecar_ebpf::SLOT_NET_PROTOS;
    }
    if o.net_events {
        flags |= sidecar_ebpf::SLOT_NET_EVENTS;
    }
    if o.runtime_calls {
        flags |= sidecar_ebpf::SLOT_RUNTIME_CALLS;
    }
    if o.http_paths {
        flags |= sidecar_ebpf::SLOT_RUNTIME_HTTP_PATHS;
    }
    flags
}

/// The kernel side: shared unless asked otherwise, bpffs is missing, or the target is known by
/// pid namespace only (cgroup v1: its filter cannot be one slot among others).
fn open_kernel_side(cfg: &Config, target: &Target) -> Result<crate::kernel_side::Handle> {
    use crate::kernel_side::{Choice as KsChoice, KernelSide};
    let flags = slot_flags(&cfg.options);
    let pidns = target
        .initial
        .as_ref()
        .is_some_and(|t| matches!(t.filter, monitored::Filter::PidNs { .. }));
    let choice = match (cfg.kernel_side, pidns) {
        (KsChoice::Shared, true) => {
            return start(Err(anyhow::anyhow!(
                "--kernel-side shared: the target is recognised by pid namespace (no cgroup v2 \
                 id), which a shared kernel side cannot tell from other slots; use \
                 --kernel-side private or give the sidecar a cgroup2 mount"
            )));
        }
        (KsChoice::Auto, true) => {
            tracing::info!(
                "kernel side: private (the target is recognised by pid namespace, not cgroup)"
            );
            KsChoice::Private
        }
        (c, _) => c,
    };
    let cgroup = target.initial.as_ref().and_then(|t| t.cgroup_id());
    let ks = start(
        KernelSide::open(choice, cfg.max_targets, flags, cgroup).map_err(anyhow::Error::from),
    )?;
    let handle = crate::kernel_side::Handle(Arc::new(ks));
    crate::kernel_side::install_exit_hook(handle.clone());
    Ok(handle)
}

/// What loading gave: the probes attached, every family's status, and the capabilities the
/// user probes keep.
pub(crate) type Loaded = (Vec<Arc<dyn Probe>>, Vec<ProbeStatus>, Vec<caps::Capability>);

/// Load the chosen families and the user's probes; one that fails is reported and skipped, never
/// fatal. Then every loaded one points its kernel filter at the target.
pub(crate) fn load_families(
    cfg: &Config,
    families: &[&probes::Family],
    initial: Option<&monitored::Resolved>,
) -> Result<Loaded> {
    let mut loaded: Vec<Arc<dyn Probe>> = Vec::new();
    let mut statuses = Vec::new();
    let mut report = |name: &'static str, t0: Instant, r: Result<(), String>| match r {
        Ok(()) => {
            tracing::info!(
                probe = name,
                elapsed_ms = t0.elapsed().as_millis() as u64,
                "probe attached"
            );
            statuses.push(ProbeStatus { name, error: None });
        }
        Err(e) => {
            tracing::error!(probe = name, "probe skipped: {e}");
            statuses.push(ProbeStatus {
                name,
                error: Some(e),
            });
        }
    };
    for fam in families {
        let t0 = Instant::now();
        let r = cfg
            .options
            .kernel_side
            .with_lock(|| (fam.load)(&cfg.options));
        match r {
            Err(e) => report(fam.name, t0, Err(e.to_string())),
            Ok(Ok(p)) => {
                report(fam.name, t0, Ok(()));
                loaded.push(p);
            }
            Ok(Err(e)) => report(fam.name, t0, Err(e.to_string())),
        }
    }
    let mut custom_keeps = Vec::new();
    for spec in &cfg.custom {
        let t0 = Instant::now();
        match probes::registry::load_user_probe(spec, &cfg.options, initial) {
            Ok(l) => {
                report(l.probe.name(), t0, Ok(()));
                custom_keeps.extend(l.keeps);
                loaded.push(l.probe);
            }
            Err((name, e)) => {
                let name: &'static str = Box::leak(format!("custom:{name}").into_boxed_str());
                report(name, t0, Err(e));
            }
        }
    }
    for p in &loaded {
        start(p.on_target(initial).map_err(anyhow::Error::from))?;
    }
    Ok((loaded, statuses, custom_keeps))
}

/// `run`: start the command only now, with every probe attached, so nothing it does is missed.
fn start_command(target: &mut Target) -> Result<Option<std::process::Child>> {
    let (Some((cmd, _)), TargetSpec::Run(cg)) = (&target.run_cmd, &target.spec) else {
        return Ok(None);
    };
    let child = start(spawn_in_cgroup(cmd, cg))?;
    if let Some(t) = target.initial.as_mut() {
        t.pid = Some(child.id());
    }
    Ok(Some(child))
}

/// Keep only what the rest of the run needs: what the families keep (re-attaching when the
/// target restarts), and for `run` removing its cgroup at the end.
fn drop_capabilities(
    cfg: &Config,
    families: &[&probes::Family],
    custom_keeps: Vec<caps::Capability>,
    run: bool,
) {
    let mut keep = crate::caps::needed_after_attach();
    for f in families {
        keep.extend((f.keeps)(&cfg.options));
    }
    keep.extend(custom_keeps);
    if run {
        // Removing the run cgroup at the end: cgroup2 roots are often r-x even for root.
        keep.insert(caps::Capability::CAP_DAC_OVERRIDE);
    }
    if let Err(e) = crate::caps::drop_all_except(&keep) {
        tracing::warn!("could not drop capabilities: {e}");
    }
}

/// Serve until stopped; for `run`, until the command exits, then write its outputs.
fn serve(
    cfg: &Config,
    listen: Listen,
    shared: Arc<Shared>,
    target: Target,
    child: Option<std::process::Child>,
) -> Result<i32> {
    let registry = Arc::new(export::registry(shared.clone()));
    let rt = runtime()?;
    let Listen {
        listener,
        tls,
        auth,
    } = listen;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("serving on {scheme}://{}/metrics", listener.local_addr()?);
        let app = export::server::App {
            registry: registry.clone(),
            shared: shared.clone(),
        };
        let router = export::server::router(app, auth);
        let server = tokio::spawn(async move {
            match tls {
                Some(acceptor) => export::server::serve_tls(listener, router, acceptor).await,
                None => axum::serve(listener, router).await,
            }
        });

        if let (Some(child), Some((_, metrics_out))) = (child, target.run_cmd) {
            let code = wait_command(child).await?;
            for p in &shared.probes {
                p.flush_events();
            }
            // The disk family's scrape-time sweep leaves requests issued in the last millisecond
            // (see disk.bpf.c): let the command's last one age past that before the final read.
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            if let Some(path) = metrics_out {
                let (_, text) = export::render(&registry, None)
                    .map_err(|_| anyhow::anyhow!("encoding metrics"))?;
                crate::output::write_atomically(&path, text.as_bytes())
                    .with_context(|| format!("writing --metrics-out {}", path.display()))?;
            }
            for p in &shared.probes {
                p.finish()?;
            }
            server.abort();
            shared.options.kernel_side.leave();
            return Ok(code);
        }

        // A tree is followed in the kernel (fork/free), whatever its root does.
        if !matches!(target.spec, TargetSpec::Run(_) | TargetSpec::Tree(_)) {
            let (spec, mount, shared, every) = (
                target.spec.clone(),
                target.mount.clone(),
                shared.clone(),
                cfg.resolve_interval,
            );
            std::thread::Builder::new()
                .name("target-watch".into())
                .spawn(move || watch(spec, mount, shared, every))?;
        }
        tokio::select! {
            r = server => { r??; }
            _ = shutdown_signal() => { tracing::info!("shutting down"); }
        }
        shared.options.kernel_side.leave();
        Ok(0)
    })
}

/// The server's runtime: one worker (scrapes are short; the families' readers have their own
/// threads) and a few blocking threads for map reads.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .enable_all()
        .build()
}

/// Wait for `run`'s command. SIGTERM/SIGINT go to it (as if we were not there); we exit with it,
/// so --metrics-out is still written and the command is never left orphaned.
async fn wait_command(mut child: std::process::Child) -> Result<i32> {
    use tokio::signal::unix::{SignalKind, signal};
    let pid = child.id() as libc::pid_t;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut wait = tokio::task::spawn_blocking(move || child.wait());
    let status = loop {
        let sig = tokio::select! {
            r = &mut wait => break r??,
            _ = term.recv() => libc::SIGTERM,
            _ = int.recv() => libc::SIGINT,
        };
        // SAFETY: signalling our own child, which is not reaped before `wait` returns.
        unsafe { libc::kill(pid, sig) };
    };
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Follow the target: when it goes away, stop counting and report it down; when it comes back
/// (a restarted container lives in a new cgroup), point the kernel filter at it again.
fn watch(spec: TargetSpec, mount: Option<Cgroup2Mount>, shared: Arc<Shared>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let now = match monitored::resolve(&spec, mount.as_ref()) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!("target lookup failed: {e}");
                None
            }
        };
        let before = shared
            .target
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .current
            .clone();
        if before.as_ref().map(|t| t.filter) == now.as_ref().map(|t| t.filter) {
            let now = match (now, &before) {
                (Some(n), Some(b)) => Some(n.keep_known(b)),
                (n, _) => n,
            };
            if before != now {
                // Same cgroup, new network namespace (or its first process just became
                // visible): families attached per netns (net --net-mode netns) follow it.
                let netns = |t: &Option<monitored::Resolved>| t.as_ref().and_then(|t| t.net_ns);
                if netns(&before) != netns(&now) {
                    for p in &shared.probes {
                        if let Err(e) = p.on_target(now.as_ref()) {
                            tracing::error!("updating the target filter: {e}");
                        }
                    }
                }
                shared
                    .target
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .current = now;
            }
            continue;
        }
        for p in &shared.probes {
            if let Err(e) = p.on_target(now.as_ref()) {
                tracing::error!("updating the target filter: {e}");
            }
        }
        let mut st = shared.target.write().unwrap_or_else(|p| p.into_inner());
        match &now {
            Some(t) => {
                st.generation += 1;
                tracing::info!(
                    cgroup_id = t.cgroup_id().unwrap_or(0),
                    filter = t.filter.name(),
                    "target (re)acquired"
                );
            }
            None => tracing::warn!("target went away; counting paused until it comes back"),
        }
        st.current = now;
    }
}

/// Start `cmd` inside the run cgroup, so its whole process tree is the target from its first
/// instruction. The child must not move itself: the write to `cgroup.procs` would enter the
/// kernel outside the target and return inside it, and a syscall counted at its exit
/// (`--syscall-latency off`) would count the sidecar's write as the command's. So the child
/// publishes its pid in a shared page and spins, making no syscall, while a thread of ours moves
/// it; then it execs.
fn spawn_in_cgroup(cmd: &[OsString], cg: &RunCgroup) -> Result<std::process::Child> {
    use std::sync::atomic::{AtomicI32, Ordering};
    let Some((prog, args)) = cmd.split_first() else {
        bail!("run needs a command after --")
    };
    let mut procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cg.procs_file())
        .with_context(|| format!("opening {}", cg.procs_file().display()))?;
    let handoff = Handoff::new()?;
    // Word 0: the child's pid once it waits; word 1: 1 = moved, -1 = the move failed.
    let addr = handoff.0 as usize;
    let word = move |i: usize| -> &'static AtomicI32 {
        // SAFETY: the page lives until after spawn() returned and the mover was joined; it is
        // zeroed, aligned, and only ever accessed atomically.
        unsafe { &*(addr as *const AtomicI32).add(i) }
    };
    let mover = std::thread::spawn(move || -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            match word(0).load(Ordering::Acquire) {
                0 if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(20)),
                0 | -1 => return Err(std::io::Error::other("the command never started")),
                pid => break pid,
            }
        };
        let r = procs.write_all(pid.to_string().as_bytes());
        word(1).store(if r.is_ok() { 1 } else { -1 }, Ordering::Release);
        r
    });
    let mut c = std::process::Command::new(prog);
    c.args(args);
    // SAFETY: the closure calls getpid(2) (async-signal-safe) and touches only atomics in a
    // MAP_SHARED page, which the fork kept shared with us.
    unsafe {
        c.pre_exec(move || {
            word(0).store(libc::getpid(), Ordering::Release);
            loop {
                match word(1).load(Ordering::Acquire) {
                    0 => std::hint::spin_loop(),
                    1 => return Ok(()),
                    _ => return Err(std::io::Error::from_raw_os_error(libc::EIO)),
                }
            }
        });
    }
    let spawned = c.spawn();
    if spawned.is_err() {
        // A fork that failed never publishes a pid: let the mover give up now.
        word(0)
            .compare_exchange(0, -1, Ordering::AcqRel, Ordering::Acquire)
            .ok();
    }
    let moved = mover
        .join()
        .map_err(|_| anyhow::anyhow!("cgroup mover panicked"))?;
    // A failed move makes the child give up with EIO: the move's error is the one to show.
    if spawned.is_err() || moved.is_err() {
        moved.with_context(|| format!("moving the command into {}", cg.procs_file().display()))?;
    }
    let child = spawned.with_context(|| format!("starting {}", prog.to_string_lossy()))?;
    drop(handoff);
    Ok(child)
}

/// One shared anonymous page, unmapped on drop.
struct Handoff(*mut libc::c_void);

impl Handoff {
    fn new() -> Result<Self> {
        // SAFETY: anonymous mapping, no file; checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!("mmap: {}", std::io::Error::last_os_error());
        }
        Ok(Self(p))
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), unmapped once.
        unsafe { libc::munmap(self.0, 4096) };
    }
}

pub(crate) fn raise_memlock() {
    // Kernels since 5.11 charge BPF memory to the cgroup and ignore this; older ones need it.
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
