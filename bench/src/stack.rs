//! The node example app under wrk: requests/s and p99 latency without and with the sidecar
//! (default probe set, `run` mode so node gets its own cgroup), and the sidecar's CPU and RSS
//! at that load, beside the default set made lean and the syscall family alone counting (the floor
//! of any default set with syscall metrics). Rounds alternate so drift on a shared machine hits
//! every configuration.
//! node is pinned to the last CPU and wrk to the others, so neither steals the other's CPU and
//! the probes' cost shows as the app's lost throughput. A last, separate round with
//! `--bpf-stats` says where the cost goes (program time per request).
//!
//!   cargo run --release -p bench -- stack [--seconds S] [--rounds R]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{self, free_port, http_get, median, rss_kib};

pub(crate) const CONNECTIONS: u32 = 32;
pub(crate) const THREADS: u32 = 2;
pub(crate) const ROUTE: &str = "/fast";

pub(crate) struct Wrk {
    pub(crate) rps: f64,
    pub(crate) p99_ms: f64,
}

/// wrk --latency output: "Requests/sec: N" and the "99%" line of the latency distribution.
pub(crate) fn parse_wrk(out: &str) -> Result<Wrk> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .context("no Requests/sec in wrk output")?
        .trim()
        .parse()?;
    let p99 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .context("no 99% line in wrk output (needs --latency)")?
        .trim();
    let p99_ms = if let Some(v) = p99.strip_suffix("us") {
        v.parse::<f64>()? / 1000.0
    } else if let Some(v) = p99.strip_suffix("ms") {
        v.parse()?
    } else if let Some(v) = p99.strip_suffix('s') {
        v.parse::<f64>()? * 1000.0
    } else {
        bail!("unknown latency unit in {p99:?}")
    };
    Ok(Wrk { rps, p99_ms })
}

/// CPU sets: node alone on the last CPU, wrk on the rest (on one CPU, both share it).
pub(crate) fn cpus() -> (String, String) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 {
        return ("0".into(), "0".into());
    }
    ((n - 1).to_string(), format!("0-{}", n - 2))
}

pub(crate) fn wrk(port: u16, seconds: u64) -> Result<Wrk> {
    let out = Command::new("taskset")
        .args(["-c", &cpus().1, "wrk"])
        .args([
            "-t",
            &THREADS.to_string(),
            "-c",
            &CONNECTIONS.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            &format!("http://127.0.0.1:{port}{ROUTE}"),
        ])
        .output()
        .context("wrk or taskset not found: apt-get install wrk util-linux")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat are 12 and 13 after the comm.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signalling a child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// node server.js, bare or under `ebpf-sidecar run` (then also serving metrics on `metrics`),
/// pinned to its CPU (the sidecar's own threads are not pinned: only node is under taskset).
pub(crate) fn start(server: &Path, metrics: Option<u16>, extra: &[&str]) -> Result<Running> {
    let port = free_port();
    let upstream = free_port();
    let node_cpu = cpus().0;
    let mut cmd = match metrics {
        None => {
            let mut c = Command::new("taskset");
            c.args(["-c", &node_cpu, "node"]);
            c
        }
        Some(m) => {
            let mut c = Command::new(util::sidecar_release_bin());
            c.args(["run", "--listen", &format!("127.0.0.1:{m}")])
                .args(extra)
                .args(["--", "taskset", "-c", &node_cpu, "node"]);
            c
        }
    };
    let child = cmd
        .arg(server)
        .env("PORT", port.to_string())
        .env("UPSTREAM_PORT", upstream.to_string())
        .env(
            "DATA_DIR",
            std::env::temp_dir().join("ebpf-sidecar-bench-node"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting node (apt-get install nodejs)")?;
    let r = Running { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(port, ROUTE, None)
        .map(|(s, _, _)| s != 200)
        .unwrap_or(true)
    {
        if Instant::now() > deadline {
            bail!("node app did not answer on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(m) = metrics {
        while http_get(m, "/healthz", None)
            .map(|(s, _, _)| s != 200)
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                bail!("sidecar did not serve on {m}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(r)
}

/// What watches the node app in one configuration of [`compare`].
pub(crate) enum Monitor {
    None,
    Sidecar(&'static [&'static str]),
    /// bpftrace beside an unmonitored node; `{pid}` in the program becomes node's pid.
    Bpftrace(&'static str),
}

/// One wrk measurement of a fresh node app under one configuration, after a 1 s JIT warm-up.
fn node_once(server: &Path, monitor: &Monitor, seconds: u64) -> Result<Wrk> {
    let app = match monitor {
        Monitor::None | Monitor::Bpftrace(_) => start(server, None, &[])?,
        Monitor::Sidecar(args) => start(server, Some(free_port()), args)?,
    };
    let _ = wrk(app.port, 1)?;
    // Unmonitored node runs under taskset, which execs it: the child's pid is node's.
    let _bt = match monitor {
        Monitor::Bpftrace(program) => Some(util::Bpftrace::start(
            "bench-node",
            &program.replace("{pid}", &app.child.id().to_string()),
        )),
        _ => None,
    };
    wrk(app.port, seconds)
}

/// What [`compare`] measured: the wrk figures per configuration, and per round the
/// "short rps, p99" lines in the order run.
pub(crate) type Compared = (Vec<Vec<Wrk>>, Vec<Vec<String>>);

/// `rounds` rounds of every configuration (table name, short name, monitor), a fresh node each.
pub(crate) fn compare(
    server: &Path,
    configs: &[(&str, &str, Monitor)],
    seconds: u64,
    rounds: usize,
) -> Result<Compared> {
    let n = configs.len();
    let mut runs: Vec<Vec<Wrk>> = (0..n).map(|_| Vec::new()).collect();
    let mut order = Vec::new();
    for round in 0..rounds {
        // Each round starts one configuration later, so no configuration always runs first
        // (fresh caches, the previous round's cleanup) or last while the machine drifts.
        let mut line = Vec::new();
        for k in 0..n {
            let i = (round + k) % n;
            let (_, short, monitor) = &configs[i];
            let w = node_once(server, monitor, seconds)?;
            line.push(format!("{short} {:.0}, {:.2}", w.rps, w.p99_ms));
            runs[i].push(w);
        }
        order.push(line);
        eprintln!("node round {}/{rounds} done", round + 1);
    }
    Ok((runs, order))
}

/// How often the sidecar is scraped while loaded: the compose stack's Prometheus interval
/// (compose/prometheus.yml). The sidecar's own CPU is almost all scrape work.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);

/// `work` while a thread scrapes the sidecar's metrics on `port` every [`SCRAPE_EVERY`].
fn scraped<T>(port: u16, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let stop = std::sync::Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (lock, cv) = &*stop;
            let mut done = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !*done {
                let _ = http_get(port, "/metrics", None);
                done = cv
                    .wait_timeout(done, SCRAPE_EVERY)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        })
    };
    let out = work();
    *stop.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
    stop.1.notify_all();
    let _ = scraper.join();
    out
}

/// The per-call and per-packet work a user can turn off when the app is a hot loop of tiny
/// requests: syscall latency (two clock reads and a task-storage lookup per call) and HTTP
/// recognition in the packet programs. Counting stays on.
const LEAN: &[&str] = &["--syscall-latency", "off", "--net-http", "off"];

/// The foundation family alone, counting calls and errors only: what any default set that counts
/// syscalls pays at the least.
const SYSCALL_COUNTS: &[&str] = &["--probes", "syscalls", "--syscall-latency", "off"];

pub fn run(seconds: u64, rounds: usize) -> Result<String> {
    let server = util::repo_root().join("examples/node-app/server.js");
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut lean = Vec::new();
    let mut sidecar_cpu = Vec::new();
    let mut sidecar_rss_mib: f64 = 0.0;
    let mut app_syscalls_per_req = Vec::new();
    let mut counts = Vec::new();
    for round in 0..rounds {
        {
            let app = start(&server, None, &[])?;
            let _ = wrk(app.port, 1)?; // warm up the JIT
            without.push(wrk(app.port, seconds)?);
        }
        {
            let m = free_port();
            let app = start(&server, Some(m), &[])?;
            let pid = app.child.id();
            let _ = wrk(app.port, 1)?;
            let before = util::metric_sum(
                &http_get(m, "/metrics", None)?.2,
                "ebpf_sidecar_syscalls_total",
            );
            let c0 = cpu_seconds(pid).context("sidecar stat")?;
            let t0 = Instant::now();
            let w = scraped(m, || wrk(app.port, seconds))?;
            let cpu = (cpu_seconds(pid).context("sidecar stat")? - c0) / t0.elapsed().as_secs_f64();
            let after = util::metric_sum(
                &http_get(m, "/metrics", None)?.2,
                "ebpf_sidecar_syscalls_total",
            );
            let reqs = w.rps * seconds as f64;
            app_syscalls_per_req.push((after - before) / reqs);
            sidecar_cpu.push(cpu * 100.0);
            if let Some((_, hwm)) = rss_kib(pid) {
                sidecar_rss_mib = sidecar_rss_mib.max(hwm as f64 / 1024.0);
            }
            with.push(w);
        }
        {
            let m = free_port();
            let app = start(&server, Some(m), LEAN)?;
            let _ = wrk(app.port, 1)?;
            lean.push(scraped(m, || wrk(app.port, seconds))?);
        }
        {
            let m = free_port();
            let app = start(&server, Some(m), SYSCALL_COUNTS)?;
            let _ = wrk(app.port, 1)?;
            counts.push(scraped(m, || wrk(app.port, seconds))?);
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }
    let (probes, breakdown) = cost_breakdown(&server, seconds.min(10), &[])?;
    let med = |v: &[Wrk], f: fn(&Wrk) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
    let (rps0, rps1) = (med(&without, |w| w.rps), med(&with, |w| w.rps));
    let (p0, p1) = (med(&without, |w| w.p99_ms), med(&with, |w| w.p99_ms));
    let (rps2, p2) = (med(&lean, |w| w.rps), med(&lean, |w| w.p99_ms));
    let (rps3, p3) = (med(&counts, |w| w.rps), med(&counts, |w| w.p99_ms));
    let cpu = median(&mut sidecar_cpu.clone());
    let spr = median(&mut app_syscalls_per_req.clone());
    let mut s = String::new();
    s.push_str("# Stack benchmark: the node example app under wrk\n\n");
    s.push_str(&format!(
        "`cargo run --release -p bench -- stack --seconds {seconds} --rounds {rounds}`: wrk -t{THREADS} -c{CONNECTIONS} \
         -d{seconds}s on `GET {ROUTE}` of examples/node-app/server.js (host node {}), {rounds} alternating \
         rounds of {seconds} s without / with the sidecar (default probe set: {probes}; `run` mode) / \
         with the default set made lean (`{}`) / with the syscall family alone, counting only (`{}`: \
         the floor of any default set that counts syscalls); \
         node pinned to CPU {}, wrk to CPU {}; medians. {} CPUs.\n\n",
        node_version(),
        LEAN.join(" "),
        SYSCALL_COUNTS.join(" "),
        cpus().0,
        cpus().1,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    ));
    s.push_str("| | requests/s | p99 latency |\n|---|---:|---:|\n");
    s.push_str(&format!("| without sidecar | {rps0:.0} | {p0:.2} ms |\n"));
    // Each configuration and its overhead against the unmonitored rounds.
    for (name, suffix, rps, p99) in [
        ("with sidecar", "", rps1, p1),
        ("with sidecar, lean", ", lean", rps2, p2),
        ("syscall counts alone", ", syscall counts alone", rps3, p3),
    ] {
        s.push_str(&format!("| {name} | {rps:.0} | {p99:.2} ms |\n"));
        s.push_str(&format!(
            "| overhead{suffix} | {:+.1}% | {:+.1}% |\n",
            (rps0 - rps) / rps0 * 100.0,
            (p99 - p0) / p0 * 100.0
        ));
    }
    s.push('\n');
    s.push_str(&format!(
        "Sidecar process at that load, scraped every {} s (as compose/prometheus.yml does; every \
         sidecar configuration alike): {cpu:.2}% of one core (user+sys of the \
         sidecar process; the BPF programs' own cost runs in the app's syscalls and is part of the overhead above), peak RSS \
         {sidecar_rss_mib:.1} MiB. The app made {spr:.1} syscalls per request.\n\n",
        SCRAPE_EVERY.as_secs()
    ));
    s.push_str(&breakdown);
    s.push_str("Per round (requests/s, p99 ms):\n\n");
    for (i, (((a, b), c), d)) in without
        .iter()
        .zip(&with)
        .zip(&lean)
        .zip(&counts)
        .enumerate()
    {
        s.push_str(&format!(
            "- round {}: without {:.0}, {:.2}; with {:.0}, {:.2}; lean {:.0}, {:.2}; syscall counts {:.0}, {:.2}; sidecar CPU {:.2}%\n",
            i + 1,
            a.rps,
            a.p99_ms,
            b.rps,
            b.p99_ms,
            c.rps,
            c.p99_ms,
            d.rps,
            d.p99_ms,
            sidecar_cpu[i]
        ));
    }
    Ok(s)
}

/// One more round with `--bpf-stats` (and `extra` sidecar flags): BPF program time per request,
/// by program (the stats' own clock reads add a little to every run, so this round's throughput
/// is not the one reported). Also the probes that were up.
pub(crate) fn cost_breakdown(
    server: &Path,
    seconds: u64,
    extra: &[&str],
) -> Result<(String, String)> {
    let m = free_port();
    let args: Vec<&str> = ["--bpf-stats"].iter().chain(extra).copied().collect();
    let app = start(server, Some(m), &args)?;
    let _ = wrk(app.port, 1)?;
    let before = http_get(m, "/metrics", None)?.2;
    let w = wrk(app.port, seconds)?;
    let after = http_get(m, "/metrics", None)?.2;
    let probes: Vec<String> = after
        .lines()
        .filter_map(|l| l.strip_prefix("ebpf_sidecar_probe_up{probe=\""))
        .filter(|l| l.ends_with(" 1"))
        .filter_map(|l| l.split('"').next().map(str::to_string))
        .collect();
    let reqs = w.rps * seconds as f64;
    let b = util::prog_costs(&before);
    let mut rows: Vec<util::ProgCost> = util::prog_costs(&after)
        .into_iter()
        .map(|mut c| {
            if let Some(c0) = b.iter().find(|e| e.program == c.program) {
                c.seconds -= c0.seconds;
                c.runs -= c0.runs;
            }
            c
        })
        .filter(|c| c.runs > 0.0)
        .collect();
    rows.sort_by(|a, c| c.seconds.total_cmp(&a.seconds));
    let total: f64 = rows.iter().map(|e| e.seconds).sum();
    let mut s = format!(
        "Where the cost goes (a separate {seconds} s round with `--bpf-stats`, {:.0} requests/s): \
         {:.2} µs of BPF program time per request in all, host-wide (the syscall programs run \
         for wrk's syscalls too and leave at the target filter).\n\n\
         | program | runs per request | ns per run | µs per request |\n|---|---:|---:|---:|\n",
        w.rps,
        total / reqs * 1e6
    );
    for c in rows.iter().take(10) {
        s.push_str(&format!(
            "| {} | {:.2} | {:.0} | {:.3} |\n",
            c.program,
            c.runs / reqs,
            c.ns_per_run(),
            c.seconds / reqs * 1e6
        ));
    }
    s.push('\n');
    Ok((probes.join(","), s))
}

pub(crate) fn node_version() -> String {
    Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
