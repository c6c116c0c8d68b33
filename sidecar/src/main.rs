//! `ebpf-sidecar`: the command line.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sidecar::app::{self, Choice, Config, StartError};
use sidecar::probes::registry::{DEFAULT_FAMILIES, FAMILIES};
use sidecar::probes::{Options, Setup};

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

    /// Monitor this process's cgroup (a pid as seen by the sidecar). Refused when that is the
    /// root cgroup (the whole host): use --target-tree there.
    #[arg(
        long,
        value_name = "PID",
        global = true,
        conflicts_with_all = ["target_container", "target_tree"]
    )]
    target_pid: Option<u32>,

    /// Monitor this process and every process it starts from now on, followed in the kernel
    /// (fork and exit), whatever their cgroup: for hosts where processes have no cgroup of their
    /// own. Needs the host's pid namespace.
    #[arg(
        long,
        value_name = "PID",
        global = true,
        conflicts_with = "target_container"
    )]
    target_tree: Option<u32>,

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
    /// Default: process,syscalls,security,net,disk,cpu,profile (+ runtimes); defaults whose
    /// capability is missing are skipped with a warning.
    #[arg(long, value_name = "LIST", value_delimiter = ',', global = true)]
    probes: Option<Vec<String>>,

    /// Enable the kernel's BPF run-time statistics and export each program's cost
    /// (ebpf_sidecar_bpf_program_run_seconds_total, …_runs_total). Needs CAP_SYS_ADMIN.
    #[arg(long, global = true)]
    bpf_stats: bool,

    /// Keep the kernel time of the sidecar's programs in the target's context under PERCENT of
    /// the target's own CPU time: over it, syscall latency is sampled (1 in 2 … 64), then the
    /// files family pauses, the profiler drops to a quarter rate, runtime function calls and HTTP
    /// recognition go off; all come back when it is well under. Counts never degrade. 0: off.
    #[arg(long, value_name = "PERCENT", default_value_t = 1.0, value_parser = parse_budget, global = true)]
    cpu_budget: f64,

    /// Distinct values kept per bounded label (comm, …); the rest are reported as "other".
    #[arg(long, value_name = "N", default_value_t = 20, global = true)]
    top_n: usize,

    /// Append every event (security, net --net-events, runtimes, custom probes) as NDJSON to FILE, as GET /events streams them.
    #[arg(long, value_name = "FILE", global = true)]
    events_out: Option<PathBuf>,

    /// Prometheus exporter-toolkit web configuration: `tls_server_config` (cert_file, key_file)
    /// and `basic_auth_users` (user: bcrypt hash). Same file format Prometheus's exporters use.
    #[arg(long = "web.config.file", value_name = "FILE", global = true)]
    web_config: Option<PathBuf>,

    /// Label HTTP metrics (net and runtimes) with the request path, normalised (ids and numbers
    /// become `:id`, query strings dropped) and bounded by --top-n.
    #[arg(long, global = true)]
    http_paths: bool,
    /// A user's CO-RE BPF object (clang -target bpf -g) to load next to the built-in probes;
    /// repeatable, paired in order with --probe-config (docs/families/custom.md).
    #[arg(long = "probe-file", value_name = "FILE.bpf.o", global = true)]
    probe_files: Vec<PathBuf>,

    /// The YAML describing the --probe-file of the same position: programs → attach points,
    /// maps → metrics, ring buffers → events.
    #[arg(long = "probe-config", value_name = "FILE.yaml", global = true)]
    probe_configs: Vec<PathBuf>,

    /// Where the kernel programs and maps live: `shared` (one set per host under
    /// /sys/fs/bpf/ebpf-sidecar/, attached once, every sidecar a slot of it: the host pays once),
    /// `private` (this sidecar's own set), `auto` (shared when /sys/fs/bpf is a writable bpffs).
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        default_value = "auto",
        global = true
    )]
    kernel_side: sidecar::kernel_side::Choice,

    /// Targets one shared kernel side holds (slots), fixed by the sidecar that creates the set;
    /// a sidecar finding none free exits with status 2.
    #[arg(long, value_name = "N", default_value_t = 64, global = true)]
    max_targets: u32,

    /// How often to look for the target again after it went away or restarted.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, global = true)]
    resolve_interval: f64,

    /// Extra label on ebpf_sidecar_target_info, repeatable (KEY=VALUE).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label, global = true)]
    labels: Vec<(String, String)>,

    /// Kubernetes pod name (from the downward API), added as label `pod` on
    /// ebpf_sidecar_target_info.
    #[arg(long, value_name = "NAME", env = "POD_NAME", global = true)]
    pod_name: Option<String>,

    /// Kubernetes namespace (from the downward API), added as label `namespace` on
    /// ebpf_sidecar_target_info.
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE", global = true)]
    pod_namespace: Option<String>,

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
        /// At CMD's exit, write the advised seccomp profile (JSON, as GET /seccomp) to FILE.
        #[arg(long, value_name = "FILE")]
        seccomp_out: Option<PathBuf>,
        /// At CMD's exit, write the advised profile compared with the one CMD ran under (JSON, as
        /// GET /seccomp?against=enforced) to FILE. The enforced profile is read when CMD starts.
        #[arg(long, value_name = "FILE")]
        seccomp_report: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(required = true, last = true, value_name = "CMD")]
        cmd: Vec<OsString>,
    },
    /// Node mode: every container of the host (or those --containers selects), each a slot of
    /// the shared kernel side, with the same families and metrics as a sidecar plus the labels
    /// container, container_id, image (and pod, namespace from Kubernetes' labels). Needs the
    /// host's pid namespace (--pid=host), /sys/fs/bpf, and the Docker socket for names (without
    /// it: containers found by cgroup, container_id only).
    Node {
        /// Which containers: `label=KEY=VALUE` or `name=REGEX` (anchored, on the name without
        /// its leading slash); repeatable, a container matching any is monitored. Default: all.
        #[arg(long = "containers", value_name = "SELECTOR")]
        containers: Vec<String>,
        /// Seconds a removed container's series stay after it is gone (its last values).
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        retain_seconds: u64,
        /// Also the processes outside every monitored container (the host's pid namespace), as
        /// one more target labelled container="".
        #[arg(long)]
        include_host: bool,
    },
    /// List the probe families; with --metrics, every metric of every family, one line each:
    /// `family name type labels help`.
    Probes {
        #[arg(long)]
        metrics: bool,
    },
    /// Custom probes: the headers a user probe is built with.
    Custom {
        #[command(subcommand)]
        command: CustomCommand,
    },
    /// USDT probes of binaries.
    Usdt {
        #[command(subcommand)]
        command: UsdtCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CustomCommand {
    /// Write vmlinux.h, sidecar.bpf.h, sidecar.h and usdt.bpf.h into DIR, then build a probe.
    #[command(long_about = format!(
        "Write vmlinux.h, sidecar.bpf.h, sidecar.h and usdt.bpf.h into DIR, then build a probe with\n`{}`\n(bpf_helpers.h and friends come from libbpf-dev).",
        sidecar_ebpf::clang::USER_COMMAND
    ))]
    Headers {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Check --probe-file/--probe-config pairs without loading them (YAML against the object's
    /// BTF: maps, fields, decoders, sizes); exit status 2 on the first error.
    Check,
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
    /// Print the built-in runtime packs in the --config form they are written in (a start for
    /// your own file).
    Packs,
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

/// --label pairs plus the pod labels; an empty downward-API value adds nothing.
fn extra_labels(
    mut labels: Vec<(String, String)>,
    pod: Option<String>,
    namespace: Option<String>,
) -> Vec<(String, String)> {
    for (key, value) in [("pod", pod), ("namespace", namespace)] {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            // An explicit --label of the same key would make a duplicate label: the flag wins.
            labels.retain(|(k, _)| k != key);
            labels.push((key.to_string(), v));
        }
    }
    labels
}

fn main() {
    // Every family adds its own flags (global, so they are accepted after `run` too).
    let matches = sidecar::probes::registry::add_args(Cli::command()).get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!("error: --log {:?}: {e}", cli.log);
        std::process::exit(2)
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let command = cli.command.take();
    let mut options = Options::default();
    let choice = match command {
        Some(Command::Run {
            cmd,
            metrics_out,
            seccomp_out,
            seccomp_report,
        }) => {
            if cli.target_pid.is_some()
                || cli.target_container.is_some()
                || cli.target_tree.is_some()
            {
                eprintln!(
                    "error: run makes its own target; drop --target-pid/--target-tree/--target-container"
                );
                std::process::exit(2);
            }
            options.seccomp_out = seccomp_out;
            options.seccomp_report = seccomp_report;
            Choice::Run { cmd, metrics_out }
        }
        Some(Command::Node {
            containers,
            retain_seconds,
            include_host,
        }) => {
            if cli.target_pid.is_some()
                || cli.target_container.is_some()
                || cli.target_tree.is_some()
            {
                eprintln!(
                    "error: node monitors every container; drop --target-pid/--target-tree/--target-container (select with --containers)"
                );
                std::process::exit(2);
            }
            let selectors = match containers
                .iter()
                .map(|s| sidecar::monitored::docker::Selector::parse(s))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: --containers {e}");
                    std::process::exit(2);
                }
            };
            Choice::Node {
                selectors,
                retain: Duration::from_secs(retain_seconds),
                include_host,
            }
        }
        Some(tool) => std::process::exit(tool_command(tool, &cli)),
        None => match (
            cli.target_pid,
            cli.target_tree,
            cli.target_container.clone(),
        ) {
            (Some(p), _, _) => Choice::Pid(p),
            (None, Some(p), _) => Choice::Tree(p),
            (None, None, Some(c)) => Choice::Container(c),
            (None, None, None) => Choice::Sidecar,
        },
    };
    let cfg = config(cli, &matches, choice, options);
    let ran = if matches!(cfg.choice, Choice::Node { .. }) {
        sidecar::node::run(cfg)
    } else {
        app::run(cfg)
    };
    match ran {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let start = e.downcast_ref::<StartError>().is_some();
            std::process::exit(if start { 2 } else { 1 });
        }
    }
}

/// The subcommands that print something and exit (everything but `run`): the exit status.
fn tool_command(command: Command, cli: &Cli) -> i32 {
    match command {
        Command::Probes { metrics: false } => {
            for f in FAMILIES {
                println!("{:<10} {}", f.name, f.about);
            }
            0
        }
        Command::Probes { metrics: true } => {
            for line in sidecar::export::metric_lines() {
                println!("{line}");
            }
            0
        }
        Command::Custom {
            command: CustomCommand::Headers { dir },
        } => match sidecar::probes::registry::write_user_probe_headers(&dir) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                0
            }
            Err(e) => {
                eprintln!("error: writing headers to {}: {e}", dir.display());
                1
            }
        },
        Command::Custom {
            command: CustomCommand::Check,
        } => {
            if cli.probe_files.is_empty() || cli.probe_files.len() != cli.probe_configs.len() {
                eprintln!("error: give --probe-file and --probe-config pairs to check");
                return 2;
            }
            for (object, config) in cli.probe_files.iter().zip(&cli.probe_configs) {
                let spec = sidecar::probes::registry::UserProbe {
                    object: object.clone(),
                    config: config.clone(),
                };
                match sidecar::probes::registry::check_user_probe(&spec) {
                    Ok(name) => println!("custom:{name}: ok"),
                    Err((name, e)) => {
                        eprintln!("error: custom:{name}: {e}");
                        return 2;
                    }
                }
            }
            0
        }
        Command::Usdt {
            command: UsdtCommand::List { pid, binary },
        } => sidecar::usdt::list_command(pid, binary.as_deref()),
        Command::Usdt {
            command: UsdtCommand::Packs,
        } => {
            for (file, text) in sidecar::probes::registry::runtime_packs() {
                println!("# packs/{file}\n{text}");
            }
            0
        }
        Command::Run { .. } | Command::Node { .. } => {
            unreachable!("run and node are not tool commands")
        }
    }
}

/// The whole configuration of a monitoring run; bad flags exit with status 2 and a message.
fn config(cli: Cli, matches: &clap::ArgMatches, choice: Choice, mut options: Options) -> Config {
    if !(cli.resolve_interval > 0.0 && cli.resolve_interval.is_finite()) {
        eprintln!("error: --resolve-interval must be a positive number of seconds");
        std::process::exit(2);
    }
    if cli.probe_files.len() != cli.probe_configs.len() {
        eprintln!(
            "error: --probe-file and --probe-config go in pairs ({} files, {} configs): give one --probe-config per --probe-file, in the same order",
            cli.probe_files.len(),
            cli.probe_configs.len()
        );
        std::process::exit(2);
    }
    let custom = cli
        .probe_files
        .into_iter()
        .zip(cli.probe_configs)
        .map(|(object, config)| sidecar::probes::registry::UserProbe { object, config })
        .collect();
    let run = matches!(choice, Choice::Run { .. });
    options.run_program = match &choice {
        Choice::Run { cmd, .. } => cmd.first().map(PathBuf::from),
        _ => None,
    };
    options.top_n = cli.top_n;
    options.http_paths = cli.http_paths;
    let probes_explicit = cli.probes.is_some();
    let mut probes: Vec<String> = cli
        .probes
        .unwrap_or_else(|| DEFAULT_FAMILIES.split(',').map(str::to_string).collect())
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    let mut setup = Setup {
        options: &mut options,
        probes: &mut probes,
        run,
    };
    if let Err(e) = sidecar::probes::registry::configure_all(matches, &mut setup) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    Config {
        choice,
        listen: cli.listen,
        probes_explicit,
        probes,
        bpf_stats: cli.bpf_stats,
        cpu_budget: cli.cpu_budget,
        options,
        resolve_interval: Duration::from_secs_f64(cli.resolve_interval),
        kernel_side: cli.kernel_side,
        max_targets: cli.max_targets,
        extra_labels: extra_labels(cli.labels, cli.pod_name, cli.pod_namespace),
        events_out: cli.events_out,
        web_config: cli.web_config,
        custom,
    }
}

/// `--cpu-budget`: a percentage in [0, 100].
fn parse_budget(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim_end_matches('%').parse().map_err(|_| {
        format!("{s:?} is not a number: give a percentage such as 1 or 0.5 (0: off)")
    })?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!(
            "{v} is not a percentage between 0 and 100 (0: off)"
        ));
    }
    Ok(v)
}
