//! Issue 20: what recognising Redis, PostgreSQL and MySQL by content costs a server. The sidecar
//! runs the server (`ebpf-sidecar run`, default families, `--cpu-budget 0` so the governor never
//! turns recognition off in one arm) with `--protocols none` or with the default (all): the
//! only difference is the recognition in the net family's cgroup_skb programs. redis-server
//! under `redis-benchmark -t set,get` without and with `-P 16`, PostgreSQL 15 under
//! `pgbench -M simple`; server pinned to CPU 0, load generator to CPU 1, arms alternating,
//! median of the rounds. Then one more run per arm with `--bpf-stats`: the BPF time per packet
//! of `net_ingress` and `net_egress` (bpf_stats' own clock reads are in that figure, in both
//! arms alike).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Arm {
    None,
    All,
}

const ARMS: [Arm; 2] = [Arm::None, Arm::All];

impl Arm {
    fn args(self) -> &'static [&'static str] {
        match self {
            Arm::None => &["--protocols", "none"],
            Arm::All => &[],
        }
    }
    fn name(self) -> &'static str {
        match self {
            Arm::None => "`--protocols none`",
            Arm::All => "default (all)",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Load {
    Redis,
    RedisP16,
    Pgbench,
}

const LOADS: [Load; 3] = [Load::Redis, Load::RedisP16, Load::Pgbench];

impl Load {
    fn name(self, seconds: u64) -> String {
        match self {
            Load::Redis => format!("redis-benchmark -t set,get -c 8 -n {REDIS_N}"),
            Load::RedisP16 => format!("redis-benchmark -t set,get -c 8 -P 16 -n {REDIS_P16_N}"),
            Load::Pgbench => {
                format!("pgbench -n -M simple -c 4 -j 1 -T {seconds} (scale {PG_SCALE})")
            }
        }
    }
    fn unit(self) -> &'static str {
        match self {
            Load::Pgbench => "transactions/s",
            _ => "requests/s",
        }
    }
}

const REDIS_N: u64 = 200_000;
const REDIS_P16_N: u64 = 1_000_000;
const PG_SCALE: &str = "10";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A server under `ebpf-sidecar run` pinned to CPU 0: the sidecar, the server's pid, the
/// sidecar's metrics port.
struct Server {
    child: Child,
    pid: u32,
    metrics_port: u16,
}

impl Server {
    fn start(arm: Arm, stats: bool, cmd: &[&str], ready: impl Fn() -> bool) -> Result<Self> {
        let metrics_port = free_port();
        let mut c = Command::new(sidecar_release_bin());
        c.args(["run", "--listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--cpu-budget", "0"])
            .args(arm.args());
        if stats {
            c.arg("--bpf-stats");
        }
        let child = c
            .args(["--", "taskset", "-c", "0"])
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("ebpf-sidecar run")?;
        let t0 = Instant::now();
        while !ready() {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("{} did not become ready under the sidecar", cmd[0]);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // taskset (and setpriv) exec: the sidecar's child is the server.
        let c = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.id()))?;
        let pid = c
            .split_whitespace()
            .next()
            .context("the server is not a child of the sidecar")?
            .parse()?;
        Ok(Self {
            child,
            pid,
            metrics_port,
        })
    }

    fn scrape(&self) -> Result<String> {
        let (status, _, body) = http_get(self.metrics_port, "/metrics", None)?;
        if status != 200 {
            bail!("scrape: {status}");
        }
        Ok(body)
    }

    fn stop(mut self, signal: i32) {
        // SAFETY: signalling the server this bench started.
        unsafe { libc::kill(self.pid as i32, signal) };
        let _ = self.child.wait();
    }
}

/// (ns, runs) of net_ingress + net_egress in a `--bpf-stats` scrape.
fn net_prog_cost(text: &str) -> (f64, f64) {
    prog_costs(text)
        .iter()
        .filter(|p| p.program == "net_ingress" || p.program == "net_egress")
        .fold((0.0, 0.0), |a, p| (a.0 + p.seconds * 1e9, a.1 + p.runs))
}

struct Round {
    /// Requests or transactions per second.
    rate: f64,
    /// CPU time of the server's cgroup (every process: postgres's backends too) per request or
    /// transaction, µs: the steadier figure on a shared machine.
    cpu_us: f64,
    /// BPF ns per packet of the cgroup_skb programs (stats rounds only).
    ns_per_packet: Option<f64>,
    /// Queries the recogniser counted during the load (sanity: 0 with none).
    recognised: f64,
}

fn recognised(text: &str) -> f64 {
    metric_sum(text, "ebpf_sidecar_redis_commands_total")
        + metric_sum(text, "ebpf_sidecar_postgres_queries_total")
}

/// `usage_usec` of the cgroup `pid` is in (`run` makes one per command).
fn cgroup_usage_us(pid: u32) -> Result<f64> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let rel = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("no cgroup v2 line")?;
    let root = integration::real::cgroup2_root();
    let stat = std::fs::read_to_string(root.join(rel.trim_start_matches('/')).join("cpu.stat"))?;
    Ok(stat
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .context("usage_usec")?
        .trim()
        .parse()?)
}

/// Scrape before and after `load` (which returns its rate and its count of requests or
/// transactions): BPF cost per packet, the cgroup's CPU per operation, what was recognised.
fn measured(s: &Server, stats: bool, load: impl FnOnce() -> Result<(f64, f64)>) -> Result<Round> {
    let before = s.scrape()?;
    let cpu0 = cgroup_usage_us(s.pid)?;
    let (rate, ops) = load()?;
    let cpu1 = cgroup_usage_us(s.pid)?;
    let after = s.scrape()?;
    let ns_per_packet = stats.then(|| {
        let (a, b) = (net_prog_cost(&after), net_prog_cost(&before));
        (a.0 - b.0) / (a.1 - b.1).max(1.0)
    });
    Ok(Round {
        rate,
        cpu_us: (cpu1 - cpu0) / ops.max(1.0),
        ns_per_packet,
        recognised: recognised(&after) - recognised(&before),
    })
}

fn redis_round(arm: Arm, pipeline: u64, stats: bool) -> Result<Round> {
    let port = free_port();
    let p = port.to_string();
    let s = Server::start(
        arm,
        stats,
        &[
            "redis-server",
            "--port",
            &p,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    )?;
    let n = if pipeline > 1 { REDIS_P16_N } else { REDIS_N };
    let bench = |n: u64| -> Result<()> {
        let o = Command::new("taskset")
            .args(["-c", "1", "redis-benchmark", "-h", "127.0.0.1", "-p", &p])
            .args(["-t", "set,get", "-c", "8", "-q"])
            .args(["-P", &pipeline.to_string(), "-n", &n.to_string()])
            .output()
            .context("redis-benchmark not found: apt-get install redis-tools")?;
        if !o.status.success() {
            bail!("redis-benchmark: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(())
    };
    // Warm-up: the connections of the measured run are new ones all the same (recognition
    // happens once per connection, at its first payload).
    bench(n / 10)?;
    let r = measured(&s, stats, || {
        let t0 = Instant::now();
        bench(n)?;
        Ok((2.0 * n as f64 / t0.elapsed().as_secs_f64(), 2.0 * n as f64))
    });
    s.stop(libc::SIGTERM);
    r
}

/// A PostgreSQL 15 cluster made once for the bench, pgbench tables at scale PG_SCALE.
struct PgCluster {
    dir: PathBuf,
}

fn as_postgres(bin: &str) -> Vec<String> {
    [
        "setpriv",
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("{PG_BIN}/{bin}")])
    .collect()
}

impl PgCluster {
    fn create() -> Result<Self> {
        let dir = PathBuf::from(format!(
            "/var/tmp/ebpf-sidecar-bench-protocols-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()?;
        if !ok.success() {
            bail!(
                "chown postgres {} (apt-get install postgresql-15)",
                dir.display()
            );
        }
        let initdb = as_postgres("initdb");
        let o = Command::new(&initdb[0])
            .args(&initdb[1..])
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .args(["--locale", "C"])
            .output()
            .context("initdb (apt-get install postgresql-15)")?;
        if !o.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&o.stderr));
        }
        let c = PgCluster { dir };
        // Tables made once, with no sidecar.
        let port = free_port();
        let mut pg = c.spawn(port)?;
        c.wait_ready(port)?;
        c.pgbench(port, &["-i", "-s", PG_SCALE, "-q"], false)?;
        // SAFETY: signalling the server this bench started.
        unsafe { libc::kill(pg.id() as i32, libc::SIGINT) };
        pg.wait()?;
        Ok(c)
    }

    fn server_args(&self, port: u16) -> Vec<String> {
        let mut v = as_postgres("postgres");
        v.extend(
            [
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-p",
                &port.to_string(),
                "-k",
                self.dir.to_str().unwrap(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "autovacuum=off",
                "-c",
                "shared_buffers=128MB",
                "-c",
                "synchronous_commit=off",
                "-c",
                "max_parallel_workers_per_gather=0",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        v
    }

    /// The server with no sidecar (table set-up), pinned like the measured ones.
    fn spawn(&self, port: u16) -> Result<Child> {
        let args = self.server_args(port);
        Ok(Command::new("taskset")
            .args(["-c", "0"])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    }

    fn ready(&self, port: u16) -> bool {
        Command::new(format!("{PG_BIN}/pg_isready"))
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_ready(&self, port: u16) -> Result<()> {
        let t0 = Instant::now();
        while !self.ready(port) {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("postgres did not start");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// pgbench over TCP (what the sidecar sees), pinned to CPU 1 when measuring; its tps.
    fn pgbench(&self, port: u16, args: &[&str], pinned: bool) -> Result<(f64, f64)> {
        let mut c = Command::new("taskset");
        c.args(["-c", if pinned { "1" } else { "0-1" }])
            .arg(format!("{PG_BIN}/pgbench"))
            .args(args)
            .arg(format!(
                "host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=disable gssencmode=disable"
            ));
        let o = c
            .output()
            .context("pgbench (apt-get install postgresql-15)")?;
        if !o.status.success() {
            bail!("pgbench {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        let out = String::from_utf8_lossy(&o.stdout);
        let tps = out
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let done = out
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|l| l.split('/').next()?.trim().parse().ok())
            .unwrap_or(0.0);
        Ok((tps, done))
    }

    fn round(&self, arm: Arm, seconds: u64, stats: bool) -> Result<Round> {
        let port = free_port();
        let args = self.server_args(port);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let s = Server::start(arm, stats, &args, || self.ready(port))?;
        let secs = seconds.to_string();
        self.pgbench(
            port,
            &["-n", "-M", "simple", "-c", "4", "-j", "1", "-T", "2"],
            true,
        )?;
        let r = measured(&s, stats, || {
            self.pgbench(
                port,
                &["-n", "-M", "simple", "-c", "4", "-j", "1", "-T", &secs],
                true,
            )
        });
        // Fast shutdown: the postmaster ends its backends and exits.
        s.stop(libc::SIGINT);
        r
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn round(pg: &PgCluster, load: Load, arm: Arm, seconds: u64, stats: bool) -> Result<Round> {
    match load {
        Load::Redis => redis_round(arm, 1, stats),
        Load::RedisP16 => redis_round(arm, 16, stats),
        Load::Pgbench => pg.round(arm, seconds, stats),
    }
}

fn need(p: &str, package: &str) -> Result<()> {
    let found = if p.contains('/') {
        Path::new(p).exists()
    } else {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !found {
        bail!("{p} not found: apt-get install {package} (scripts/setup.sh installs it)");
    }
    Ok(())
}

pub fn run(seconds: u64, rounds: usize) -> Result<String> {
    need("redis-server", "redis-server")?;
    need("redis-benchmark", "redis-tools")?;
    need("taskset", "util-linux")?;
    need(&format!("{PG_BIN}/pgbench"), "postgresql-15")?;
    let help = Command::new(sidecar_release_bin()).arg("--help").output()?;
    if !String::from_utf8_lossy(&help.stdout).contains("--protocols") {
        bail!(
            "this ebpf-sidecar has no --protocols flag: build the branch with the protocol recognition (cargo build --release)"
        );
    }
    let pg = PgCluster::create()?;
    let mut results: Vec<(Load, Arm, Round)> = Vec::new();
    for i in 0..rounds {
        for load in LOADS {
            // Alternate which arm goes first.
            let order = if i % 2 == 0 {
                ARMS
            } else {
                [Arm::All, Arm::None]
            };
            for arm in order {
                let r = round(&pg, load, arm, seconds, false)?;
                eprintln!(
                    "round {i} {load:?} {arm:?}: {:.0}/s, {:.2} µs CPU/op",
                    r.rate, r.cpu_us
                );
                results.push((load, arm, r));
            }
        }
    }
    let mut costs: Vec<(Load, Arm, Round)> = Vec::new();
    for load in LOADS {
        for arm in ARMS {
            costs.push((load, arm, round(&pg, load, arm, seconds, true)?));
        }
    }

    let mut o = String::new();
    writeln!(
        o,
        "## Protocol recognition (Redis, PostgreSQL, MySQL by content): `--protocols none` vs default\n\n\
         The server runs under `ebpf-sidecar run --cpu-budget 0` (default families) pinned to CPU 0, \
         the load generator on CPU 1; arms alternate, median of {rounds} rounds; only `--protocols` \
         differs. BPF ns per packet: `net_ingress` + `net_egress` time over their runs in one more \
         run per arm with `--bpf-stats` (its clock reads included, in both arms). Kernel {}, {} CPUs.\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    )?;
    writeln!(
        o,
        "| workload | {none} | {all} | change | server CPU µs per op, none | all | change | BPF ns per packet, none | all | recognised (all arm, last round) |",
        none = Arm::None.name(),
        all = Arm::All.name()
    )?;
    writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let mut worst: f64 = 0.0;
    let mut worst_cpu: f64 = 0.0;
    for load in LOADS {
        let med = |arm: Arm, f: fn(&Round) -> f64| {
            median(
                &mut results
                    .iter()
                    .filter(|(l, a, _)| *l == load && *a == arm)
                    .map(|(_, _, r)| f(r))
                    .collect::<Vec<_>>(),
            )
        };
        let cost = |arm: Arm| {
            costs
                .iter()
                .find(|(l, a, _)| *l == load && *a == arm)
                .and_then(|(_, _, r)| r.ns_per_packet)
                .unwrap_or(f64::NAN)
        };
        let (none, all) = (med(Arm::None, |r| r.rate), med(Arm::All, |r| r.rate));
        let (cpu_none, cpu_all) = (med(Arm::None, |r| r.cpu_us), med(Arm::All, |r| r.cpu_us));
        let change = (all / none - 1.0) * 100.0;
        let cpu_change = (cpu_all / cpu_none - 1.0) * 100.0;
        worst = worst.min(change);
        worst_cpu = worst_cpu.max(cpu_change);
        let seen = results
            .iter()
            .rev()
            .find(|(l, a, _)| *l == load && *a == Arm::All)
            .map(|(_, _, r)| r.recognised)
            .unwrap_or(0.0);
        writeln!(
            o,
            "| {} | {none:.0} {unit} | {all:.0} {unit} | {change:+.1}% | {cpu_none:.2} | {cpu_all:.2} | {cpu_change:+.1}% | {:.0} | {:.0} | {seen:.0} |",
            load.name(seconds),
            cost(Arm::None),
            cost(Arm::All),
            unit = load.unit(),
        )?;
    }
    writeln!(
        o,
        "\nWith recognition on: largest throughput change {worst:+.1}% (target: no more than 3% lower); \
         largest change in the server's CPU per operation {worst_cpu:+.1}%. Server CPU is the \
         server cgroup's `cpu.stat` usage (on loopback the receiving side's softirq, and with it \
         `net_ingress`, often runs in the sender's context: part of the cost lands on the load \
         generator's CPU).\n"
    )?;
    Ok(o)
}
