//! `ebpf-sidecar`: the command line.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sidecar::app::{self, Choice, Config, StartError};
use sidecar::probes::{FAMILIES, Options};

const DEFAULT_PROBES: &str = "process,syscalls";

/// Attach to a running container, pid or command and export what its processes do as
/// Prometheus metrics.
///
/// With no target flag, the target is the container whose pid namespace the sidecar shares
/// (docker run --pid=container:<app>).
#[derive(Debug, Parser)]
#[command(name = "ebpf-sidecar", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Monitor this process's cgroup (a pid as seen by the sidecar).
    #[arg(
        long,
        value_name = "PID",
        global = true,
        conflicts_with = "target_container"
    )]
    target_pid: Option<u32>,

    /// Monitor a Docker container, found through the Docker Engine API (DOCKER_HOST or
    /// /var/run/docker.sock); needs the container's pid to be visible (host or --pid=host).
    #[arg(long, value_name = "NAME|ID", global = true)]
    target_container: Option<String>,

    /// Address of the metrics endpoint.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        default_value = "0.0.0.0:9435",
        env = "EBPF_SIDECAR_LISTEN",
        global = true
    )]
    listen: SocketAddr,

    /// Probe families to load, comma separated (see `ebpf-sidecar probes`).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = DEFAULT_PROBES, global = true)]
    probes: Vec<String>,

    /// Enable the kernel's BPF run-time statistics and export each program's cost
    /// (ebpf_sidecar_bpf_program_run_seconds_total, …_runs_total). Needs CAP_SYS_ADMIN.
    #[arg(long, global = true)]
    bpf_stats: bool,

    /// Distinct values kept per bounded label (comm, …); the rest are reported as "other".
    #[arg(long, value_name = "N", default_value_t = 20, global = true)]
    top_n: usize,

    /// Label the syscall latency histogram by syscall (more series).
    #[arg(long, global = true)]
    per_syscall_histograms: bool,

    /// Measure each syscall's latency (ebpf_sidecar_syscall_seconds_total and the duration
    /// histogram). `off` only counts calls and errors, at about a third of the kernel cost.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"], global = true)]
    syscall_latency: String,

    /// runtimes: count function calls by module:function
    /// (ebpf_sidecar_runtime_function_calls_total). Costly: a probe fires on every call.
    /// CPython 3.11 fires it only while sys.settrace/sys.setprofile is set.
    #[arg(long, global = true)]
    runtime_calls: bool,

    /// How often to look for the target again after it went away or restarted.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, global = true)]
    resolve_interval: f64,

    /// Extra label on ebpf_sidecar_target_info, repeatable (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label, global = true)]
    labels: Vec<(String, String)>,

    /// Log filter (tracing's EnvFilter syntax).
    #[arg(
        long,
        value_name = "FILTER",
        default_value = "info",
        env = "RUST_LOG",
        global = true
    )]
    log: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run CMD in a fresh cgroup and monitor its whole process tree, like `perf stat`; exits with
    /// CMD's status.
    Run {
        /// At CMD's exit, write the final metrics (Prometheus text) to FILE.
        #[arg(long, value_name = "FILE")]
        metrics_out: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(required = true, last = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// List the probe families.
    Probes,
    /// USDT probes of binaries.
    Usdt {
        #[command(subcommand)]
        command: UsdtCommand,
    },
}

#[derive(Debug, Subcommand)]
enum UsdtCommand {
    /// Print the USDT probes of a binary, or of every binary a process maps (like bcc's tplist).
    List {
        /// A running process: its executable and libraries, inside its mount namespace.
        #[arg(
            long,
            value_name = "PID",
            conflicts_with = "binary",
            required_unless_present = "binary"
        )]
        pid: Option<u32>,
        /// An ELF executable or shared library.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let valid = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{k:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("error: --log {:?}: {e}", cli.log);
        std::process::exit(2)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let choice = match cli.command {
        Some(Command::Probes) => {
            for f in FAMILIES {
                println!("{:<10} {}", f.name, f.about);
            }
            return;
        }
        Some(Command::Usdt {
            command: UsdtCommand::List { pid, binary },
        }) => std::process::exit(sidecar::usdt::list_command(pid, binary.as_deref())),
        Some(Command::Run { cmd, metrics_out }) => {
            if cli.target_pid.is_some() || cli.target_container.is_some() {
                eprintln!("error: run makes its own target; drop --target-pid/--target-container");
                std::process::exit(2);
            }
            Choice::Run { cmd, metrics_out }
        }
        None => match (cli.target_pid, cli.target_container) {
            (Some(p), _) => Choice::Pid(p),
            (None, Some(c)) => Choice::Container(c),
            (None, None) => Choice::Sidecar,
        },
    };
    if !(cli.resolve_interval > 0.0 && cli.resolve_interval.is_finite()) {
        eprintln!("error: --resolve-interval must be a positive number of seconds");
        std::process::exit(2);
    }
    let run_program = match &choice {
        Choice::Run { cmd, .. } => cmd.first().map(PathBuf::from),
        _ => None,
    };
    let cfg = Config {
        choice,
        listen: cli.listen,
        probes: cli.probes.into_iter().filter(|p| !p.is_empty()).collect(),
        bpf_stats: cli.bpf_stats,
        options: Options {
            top_n: cli.top_n,
            per_syscall_histograms: cli.per_syscall_histograms,
            syscall_latency: cli.syscall_latency == "on",
            runtime_calls: cli.runtime_calls,
            run_program,
        },
        resolve_interval: Duration::from_secs_f64(cli.resolve_interval),
        extra_labels: cli.labels,
    };
    match app::run(cfg) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let start = e.downcast_ref::<StartError>().is_some();
            std::process::exit(if start { 2 } else { 1 });
        }
    }
}
