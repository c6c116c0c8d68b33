//! What to monitor: resolve the user's choice of target into what the kernel filter needs (a
//! cgroup v2 id, or a pid namespace) plus what the metrics say about it.
//!
//! Four ways in, one result ([`Resolved`]):
//! - sidecar (default): started with `--pid=container:<app>`, the target is PID 1's cgroup;
//! - `--target-pid PID`: that process's cgroup;
//! - `--target-tree PID`: that process and its descendants, followed in the kernel;
//! - `--target-container NAME|ID`: through the Docker Engine API;
//! - `run -- CMD`: a fresh cgroup made for CMD.

pub mod cgroup;
pub mod docker;
pub mod tree;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

pub use cgroup::{Cgroup2Mount, RunCgroup};
pub use docker::ContainerInfo;

#[derive(Debug, Error)]
pub enum TargetError {
    #[error(
        "no process with pid {0} (check --target-pid; in a container, the pid must be visible in its pid namespace: --pid=host or --pid=container:<app>)"
    )]
    NoSuchPid(u32),
    #[error("no container named or with id {0:?} (see `docker ps`)")]
    NoSuchContainer(String),
    #[error("{0:?} is not a container name or id")]
    BadContainerRef(String),
    #[error("Docker API: {0}")]
    Docker(String),
    #[error(
        "container {name} runs, but its pid {pid} is not visible here: run the sidecar on the host or with --pid=host"
    )]
    ContainerPidHidden { name: String, pid: u32 },
    #[error("cgroup v2 unavailable: {reason}")]
    NoCgroup2 { reason: String },
    #[error("no target: {0}")]
    NoTarget(String),
    #[error(
        "pid {0} is in the root cgroup, which holds every process of the host that has no cgroup of its own: \
         counting it would count them all. Use --target-tree {0} (the process and its descendants), \
         `ebpf-sidecar run -- CMD` (a fresh cgroup for a command), or --target-container NAME"
    )]
    RootCgroup(u32),
    #[error(
        "--target-tree needs the host's pid namespace (the kernel reports host pids): run the sidecar on the host or with --pid=host"
    )]
    TreeNeedsHostPids,
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

/// The user's choice of target.
#[derive(Clone, Debug)]
pub enum TargetSpec {
    Sidecar,
    Pid(u32),
    /// A process and its descendants.
    Tree(u32),
    Container(String),
    Run(Arc<RunCgroup>),
}

impl TargetSpec {
    pub fn mode(&self) -> &'static str {
        match self {
            TargetSpec::Sidecar => "sidecar",
            TargetSpec::Pid(_) => "pid",
            TargetSpec::Tree(_) => "tree",
            TargetSpec::Container(_) => "container",
            TargetSpec::Run(_) => "run",
        }
    }
}

/// How the kernel programs recognise the target's tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// The task's cgroup v2 id equals this one.
    Cgroup { id: u64 },
    /// The task lives in this pid namespace and is not the sidecar. Used when no cgroup2 mount can
    /// be had (a sidecar container without CAP_SYS_ADMIN).
    PidNs { dev: u64, ino: u64, self_tgid: u32 },
    /// The task's process is `root` or was started by one of the set (kernel-side set).
    Tree { root: u32 },
}

impl Filter {
    pub fn name(&self) -> &'static str {
        match self {
            Filter::Cgroup { .. } => "cgroup",
            Filter::PidNs { .. } => "pidns",
            Filter::Tree { .. } => "tree",
        }
    }

    pub fn to_kernel(&self) -> sidecar_ebpf::Target {
        match *self {
            Filter::Cgroup { id } => sidecar_ebpf::Target {
                cgroup_id: id,
                mode: sidecar_ebpf::FILTER_CGROUP,
                ..Default::default()
            },
            Filter::PidNs {
                dev,
                ino,
                self_tgid,
            } => sidecar_ebpf::Target {
                pidns_dev: dev,
                pidns_ino: ino,
                self_tgid,
                mode: sidecar_ebpf::FILTER_PIDNS,
                ..Default::default()
            },
            Filter::Tree { .. } => sidecar_ebpf::Target {
                mode: sidecar_ebpf::FILTER_TREE,
                ..Default::default()
            },
        }
    }
}

/// A target found on the system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub filter: Filter,
    /// cgroup v2 path as the target's `/proc/<pid>/cgroup` shows it.
    pub cgroup_path: Option<String>,
    /// The cgroup's directory on a cgroup2 mount (to count processes, attach cgroup programs).
    pub cgroup_dir: Option<PathBuf>,
    /// A process of the target, as seen from here.
    pub pid: Option<u32>,
    pub pid_ns: Option<u64>,
    pub net_ns: Option<u64>,
    pub mnt_ns: Option<u64>,
    pub container: Option<ContainerInfo>,
    /// `--target-pid`: processes in its cgroup outside the pid's tree (counted all the same).
    pub others_in_cgroup: Option<u64>,
}

impl Resolved {
    pub fn cgroup_id(&self) -> Option<u64> {
        match self.filter {
            Filter::Cgroup { id } => Some(id),
            Filter::PidNs { .. } | Filter::Tree { .. } => None,
        }
    }

    /// What the kernel counts, as `ebpf_sidecar_target_info{filter}` says it: `cgroup`,
    /// `cgroup_shared` (a --target-pid cgroup that holds other processes too), `pidns`, `tree`.
    pub fn filter_label(&self) -> &'static str {
        match (self.filter, self.others_in_cgroup) {
            (Filter::Cgroup { .. }, Some(n)) if n > 0 => "cgroup_shared",
            (f, _) => f.name(),
        }
    }

    /// The same target seen again: what could not be read this time (namespaces, once the
    /// capabilities are gone) keeps its earlier value, so the info series keeps its labels.
    pub fn keep_known(mut self, before: &Resolved) -> Resolved {
        fn keep<T: Clone>(now: &mut Option<T>, before: &Option<T>) {
            if now.is_none() {
                now.clone_from(before);
            }
        }
        keep(&mut self.cgroup_path, &before.cgroup_path);
        keep(&mut self.cgroup_dir, &before.cgroup_dir);
        keep(&mut self.pid, &before.pid);
        keep(&mut self.pid_ns, &before.pid_ns);
        keep(&mut self.net_ns, &before.net_ns);
        keep(&mut self.mnt_ns, &before.mnt_ns);
        keep(&mut self.container, &before.container);
        self.others_in_cgroup = before.others_in_cgroup;
        self
    }
}

fn ns_inode(pid: u32, kind: &str) -> Option<(u64, u64)> {
    fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Resolve a target. `Ok(None)` means it is known but not running right now (a stopped
/// container, a pid that went away): keep serving and try again.
pub fn resolve(
    spec: &TargetSpec,
    mount: Option<&Cgroup2Mount>,
) -> Result<Option<Resolved>, TargetError> {
    match spec {
        TargetSpec::Run(cg) => Ok(Some(Resolved {
            filter: Filter::Cgroup { id: cg.id },
            cgroup_path: Some(cg.path.clone()),
            cgroup_dir: Some(cg.dir.clone()),
            pid: None,
            pid_ns: None,
            net_ns: None,
            mnt_ns: None,
            container: None,
            others_in_cgroup: None,
        })),
        TargetSpec::Pid(pid) => match of_pid(*pid, mount, false) {
            Err(TargetError::NoSuchPid(_)) => Ok(None),
            Ok(r) if r.cgroup_path.as_deref() == Some("/") => Err(TargetError::RootCgroup(*pid)),
            Ok(mut r) => {
                r.others_in_cgroup = r.cgroup_dir.as_deref().map(|d| outside_tree(d, *pid));
                Ok(Some(r))
            }
            Err(e) => Err(e),
        },
        TargetSpec::Tree(pid) => {
            if !tree::in_host_pid_namespace() {
                return Err(TargetError::TreeNeedsHostPids);
            }
            if fs::metadata(format!("/proc/{pid}")).is_err() {
                return Ok(None);
            }
            Ok(Some(Resolved {
                filter: Filter::Tree { root: *pid },
                cgroup_path: cgroup::proc_cgroup_path(*pid).ok(),
                cgroup_dir: None,
                pid: Some(*pid),
                pid_ns: ns_inode(*pid, "pid").map(|(_, i)| i),
                net_ns: ns_inode(*pid, "net").map(|(_, i)| i),
                mnt_ns: ns_inode(*pid, "mnt").map(|(_, i)| i),
                container: None,
                others_in_cgroup: None,
            }))
        }
        TargetSpec::Sidecar => {
            if std::process::id() == 1 {
                return Err(TargetError::NoTarget(
                    "the sidecar is PID 1 of its own pid namespace: start it with --pid=container:<app> \
                     (compose: pid: \"service:app\"), or pass --target-pid / --target-container"
                        .into(),
                ));
            }
            match of_pid(1, mount, true) {
                Err(TargetError::NoSuchPid(_)) => Ok(None),
                r => r.map(Some),
            }
        }
        TargetSpec::Container(name) => {
            let Some(info) = docker::inspect(name)? else {
                return Err(TargetError::NoSuchContainer(name.clone()));
            };
            let Some(pid) = info.pid else {
                return Ok(None);
            };
            match of_pid(pid, mount, false) {
                Ok(mut r) => {
                    r.container = Some(info);
                    Ok(Some(r))
                }
                Err(TargetError::NoSuchPid(p)) if fs::metadata("/proc/1").is_ok() => {
                    Err(TargetError::ContainerPidHidden {
                        name: info.name,
                        pid: p,
                    })
                }
                Err(e) => Err(e),
            }
        }
    }
}

/// The target made of `pid`'s cgroup. With `allow_pidns`, fall back to filtering by `pid`'s pid
/// namespace when its cgroup directory cannot be reached.
fn of_pid(
    pid: u32,
    mount: Option<&Cgroup2Mount>,
    allow_pidns: bool,
) -> Result<Resolved, TargetError> {
    let path = cgroup::proc_cgroup_path(pid)?;
    let pid_ns = ns_inode(pid, "pid");
    let mut r = Resolved {
        filter: Filter::Cgroup { id: 0 },
        cgroup_path: Some(path.clone()),
        cgroup_dir: None,
        pid: Some(pid),
        pid_ns: pid_ns.map(|(_, i)| i),
        net_ns: ns_inode(pid, "net").map(|(_, i)| i),
        mnt_ns: ns_inode(pid, "mnt").map(|(_, i)| i),
        container: docker::id_from_cgroup_path(&path).map(|id| ContainerInfo {
            id,
            ..Default::default()
        }),
        others_in_cgroup: None,
    };
    if path == "/" && pid == 1 && allow_pidns {
        return Err(TargetError::NoTarget(
            "PID 1 here is in the root cgroup, so this looks like a host, not a container: \
             pass --target-pid or --target-container, or run the sidecar with --pid=container:<app>"
                .into(),
        ));
    }
    let dir = mount.and_then(|m| m.dir_of(&path));
    match dir.as_ref().map(|d| (d, cgroup::cgroup_id(d))) {
        Some((d, Ok(id))) => {
            r.filter = Filter::Cgroup { id };
            r.cgroup_dir = Some(d.clone());
            Ok(r)
        }
        other => {
            let why = match other {
                Some((d, Err(e))) => format!("{}: {e}", d.display()),
                _ => "no cgroup2 mount".to_string(),
            };
            if !allow_pidns {
                return Err(TargetError::NoCgroup2 {
                    reason: format!("cgroup {path} of pid {pid}: {why}"),
                });
            }
            let (dev, ino) = ns_inode(pid, "pid").ok_or_else(|| TargetError::Io {
                what: format!("reading /proc/{pid}/ns/pid"),
                source: io::Error::last_os_error(),
            })?;
            tracing::warn!(
                "cgroup {path} cannot be opened ({why}); filtering by pid namespace instead \
                 (every process in it except the sidecar)"
            );
            r.filter = Filter::PidNs {
                dev,
                ino,
                self_tgid: std::process::id(),
            };
            Ok(r)
        }
    }
}

/// Node mode's host target: every process of the host's pid namespace (node mode's own: it runs
/// with --pid=host, hostPID) except node mode itself. A container's tasks are in their own
/// pid namespace, and a monitored container's slot is found first by its cgroup, so this is
/// what runs outside the containers (and in containers started with --pid=host).
pub fn host() -> Result<Resolved, TargetError> {
    // Node mode's own pid namespace is the host's (--pid=host, hostPID); pid 1's may not be
    // readable (an init with capabilities we lack refuses ptrace-read access to its ns links).
    let me = std::process::id();
    let (dev, ino) = ns_inode(me, "pid").ok_or_else(|| TargetError::Io {
        what: "reading /proc/self/ns/pid".into(),
        source: io::Error::last_os_error(),
    })?;
    Ok(Resolved {
        filter: Filter::PidNs {
            dev,
            ino,
            self_tgid: std::process::id(),
        },
        cgroup_path: None,
        cgroup_dir: None,
        pid: Some(1),
        pid_ns: Some(ino),
        net_ns: ns_inode(1, "net")
            .or_else(|| ns_inode(me, "net"))
            .map(|(_, i)| i),
        mnt_ns: ns_inode(1, "mnt")
            .or_else(|| ns_inode(me, "mnt"))
            .map(|(_, i)| i),
        container: None,
        others_in_cgroup: None,
    })
}

/// Processes of the cgroup at `dir` (and below) that are neither `pid` nor its descendants.
fn outside_tree(dir: &std::path::Path, pid: u32) -> u64 {
    let tree: std::collections::HashSet<u32> = tree::members(pid).into_iter().collect();
    let mut n = 0;
    cgroup::for_each_proc(dir, &mut |p| n += u64::from(!tree.contains(&p)));
    n
}
