//! The families the sidecar knows: for each, how to load it, its flags, metrics and routes.
//! The exporter, the server and `app` reach families only through this list and the `Probe`
//! trait.

use super::{
    Family, FamilyArgs, NoArgs, Options, Setup, cpu, custom, disk, files, net, process, profile,
    runtimes, security, syscalls,
};
use crate::monitored::Resolved;

fn args<A: FamilyArgs>(cmd: clap::Command) -> clap::Command {
    // Only the flags: each family's derive would also add an argument group named after its
    // struct, and every family's struct is called `Args`.
    let own = A::augment_args(clap::Command::new("family"));
    cmd.args(own.get_arguments().cloned())
}

fn configure<A: FamilyArgs>(m: &clap::ArgMatches, setup: &mut Setup<'_>) -> Result<(), String> {
    A::from_arg_matches(m)
        .map_err(|e| e.to_string())?
        .apply(setup)
}

pub const FAMILIES: &[Family] = &[
    Family {
        name: "process",
        about: "execs, exits by code/signal, forks, live processes, OOM kills",
        needs: &[],
        keeps: keeps_none,
        load: process::load,
        metrics: process::METRICS,
        routes: &[],
        args: args::<NoArgs>,
        configure: configure::<NoArgs>,
    },
    Family {
        name: "syscalls",
        about: "calls, errors by errno, time and latency per syscall",
        needs: &[],
        keeps: keeps_none,
        load: syscalls::load,
        metrics: syscalls::METRICS,
        routes: syscalls::ROUTES,
        args: args::<syscalls::Args>,
        configure: configure::<syscalls::Args>,
    },
    Family {
        name: "security",
        about: "event stream: exec, shells, privilege changes, ptrace, mounts/namespaces, modules, bpf(), sensitive opens, new peers/ports",
        needs: &[],
        keeps: keeps_none,
        load: security::load,
        metrics: security::METRICS,
        routes: &[],
        args: args::<security::Args>,
        configure: configure::<security::Args>,
    },
    Family {
        name: "disk",
        about: "block requests, bytes, service and queue time by device and op",
        needs: &[],
        keeps: keeps_none,
        load: disk::load,
        metrics: disk::METRICS,
        routes: &[],
        args: args::<NoArgs>,
        configure: configure::<NoArgs>,
    },
    Family {
        name: "files",
        about: "bytes read/written per file, opens and failing paths, fsync latency, page cache misses",
        needs: &[],
        keeps: keeps_none,
        load: files::load,
        metrics: files::METRICS,
        routes: &[],
        args: args::<NoArgs>,
        configure: configure::<NoArgs>,
    },
    Family {
        name: "cpu",
        about: "on-CPU time by comm, slices, run-queue latency, off-CPU time, context switches, migrations",
        needs: &[],
        keeps: keeps_none,
        load: cpu::load,
        metrics: cpu::METRICS,
        routes: &[],
        args: args::<NoArgs>,
        configure: configure::<NoArgs>,
    },
    Family {
        name: "profile",
        about: "sampling profiler (perf_event, 49 Hz per CPU): pprof, folded stacks, flame graphs",
        needs: &[],
        keeps: profile_keeps,
        load: profile::load,
        metrics: profile::METRICS,
        routes: profile::ROUTES,
        args: args::<profile::Args>,
        configure: configure::<profile::Args>,
    },
    Family {
        name: "net",
        about: "packets/bytes by protocol, TCP lifecycle, peers, connect/bind errors, UDP drops",
        // cgroup_skb programs: attached at start and again when the target restarts.
        needs: &[caps::Capability::CAP_NET_ADMIN],
        keeps: net_keeps,
        load: net::load,
        metrics: net::METRICS,
        routes: net::ROUTES,
        args: args::<net::Args>,
        configure: configure::<net::Args>,
    },
    Family {
        name: "runtimes",
        about: "language runtimes (USDT + uprobes): Python/Java/Node GC pauses, HTTP, calls",
        needs: &[],
        keeps: keeps_none,
        load: runtimes::load,
        metrics: runtimes::METRICS,
        routes: &[],
        args: args::<runtimes::Args>,
        configure: configure::<runtimes::Args>,
    },
];

fn keeps_none(_: &Options) -> Vec<caps::Capability> {
    Vec::new()
}

/// Symbolizing reads the target's /proc/<pid>/maps and binaries (ptrace read access).
fn profile_keeps(_: &Options) -> Vec<caps::Capability> {
    vec![caps::Capability::CAP_SYS_PTRACE]
}

/// Packet programs are attached again when the target restarts. In netns mode that means
/// re-entering its network namespace: setns needs SYS_ADMIN, and opening /proc/<pid>/ns/net of
/// a more privileged process needs SYS_PTRACE.
fn net_keeps(o: &Options) -> Vec<caps::Capability> {
    let mut keep = vec![caps::Capability::CAP_NET_ADMIN];
    if o.net_mode == super::NetMode::Netns {
        keep.extend([
            caps::Capability::CAP_SYS_ADMIN,
            caps::Capability::CAP_SYS_PTRACE,
        ]);
    }
    keep
}

/// Families loaded when --probes is not given.
pub const DEFAULT_FAMILIES: &str = "process,syscalls,security,net,disk,cpu,profile";

/// Every family's flags, added to `cmd`.
pub fn add_args(cmd: clap::Command) -> clap::Command {
    FAMILIES.iter().fold(cmd, |c, f| (f.args)(c))
}

/// Every family's flags from the parsed command line into `setup`, in FAMILIES' order.
pub fn configure_all(m: &clap::ArgMatches, setup: &mut Setup<'_>) -> Result<(), String> {
    FAMILIES.iter().try_for_each(|f| (f.configure)(m, setup))
}

/// A user's probe (`--probe-file` + `--probe-config`): loaded beside the families, reported
/// like one (`custom:<name>`), never fatal.
pub use super::custom::Spec as UserProbe;

/// Load a user's probe; the error names the probe.
pub fn load_user_probe(
    spec: &UserProbe,
    opts: &Options,
    target: Option<&Resolved>,
) -> Result<custom::Loaded, (String, String)> {
    custom::load(spec, opts, target).map_err(|(name, e)| (name, e.to_string()))
}

/// Check a user's probe without loading it (`custom check`): its YAML against its object's BTF.
pub fn check_user_probe(spec: &UserProbe) -> Result<String, (String, String)> {
    custom::check(spec).map_err(|(name, e)| (name, e.to_string()))
}

/// Write the headers a user's probe is built with into `dir` (`custom headers`).
pub fn write_user_probe_headers(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    custom::write_headers(dir)
}

/// The built-in runtime packs as (file, YAML text) (`usdt packs`).
pub fn runtime_packs() -> &'static [(&'static str, &'static str)] {
    &runtimes::packs::FILES
}

pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}
