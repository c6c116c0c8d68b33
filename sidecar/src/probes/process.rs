//! Process family: execs by comm, exits by comm/code/signal, forks, live processes, OOM kills.
//! Kernel side: `sidecar-ebpf/bpf/process.bpf.c`.

use std::fmt;
use std::sync::Arc;

use aya::maps::MapData;
use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{CommKey, ExitKey, process_counter as pc};

use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::metrics::{self, LabelBudget, Metric, comm_label};
use crate::monitored::{Filter, cgroup};

pub const EXECS: Metric = Metric::counter(
    "ebpf_sidecar_process_execs",
    "Successful execve/execveat calls in the target, by the new program's comm.",
)
.labels(&["comm"])
.top_n(&["comm"]);
pub const EXITS: Metric = Metric::counter(
    "ebpf_sidecar_process_exits",
    "Processes of the target that ended, by comm, exit code (0-255) and terminating signal (0 = none).",
)
.labels(&["comm", "code", "signal"])
.top_n(&["comm"]);
pub const FORKS: Metric = Metric::counter(
    "ebpf_sidecar_process_forks",
    "New processes created in the target (fork, vfork, clone without CLONE_THREAD).",
);
pub const THREADS: Metric = Metric::counter(
    "ebpf_sidecar_threads_created",
    "New threads created in the target (clone with CLONE_THREAD).",
);
pub const OOM_KILLS: Metric = Metric::counter(
    "ebpf_sidecar_oom_kills",
    "Processes of the target that died as victims of the OOM killer.",
);
pub const PROCESSES: Metric = Metric::gauge(
    "ebpf_sidecar_processes",
    "Processes currently in the target.",
);
pub const METRICS: &[Metric] = &[EXECS, EXITS, FORKS, THREADS, OOM_KILLS, PROCESSES];

pub struct Process {
    obj: Object,
    exec_comms: LabelBudget,
    exit_comms: LabelBudget,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let mut obj = Object::load_on(
        &opts.kernel_side,
        "process",
        sidecar_ebpf::objects::PROCESS,
        &Default::default(),
    )?;
    obj.attach_raw_tp("process_exec", "sched_process_exec")?;
    obj.attach_raw_tp("process_exit", "sched_process_exit")?;
    obj.attach_raw_tp("process_fork", "sched_process_fork")?;
    Ok(Arc::new(Process {
        obj,
        exec_comms: LabelBudget::new(opts.top_n),
        exit_comms: LabelBudget::new(opts.top_n),
    }))
}

/// Live processes of the target: the cgroup's own list when we can read it, else the pid
/// namespace we share with it (minus ourselves).
fn live_processes(ctx: &EncodeCtx<'_>, obj: &Object) -> Option<u64> {
    let t = ctx.target?;
    if let Filter::Tree { .. } = t.filter {
        // The kernel's set: reparented orphans are still members, which a walk of ppids misses.
        let maps = obj.maps();
        let tree = maps.get::<aya::maps::HashMap<&MapData, u32, sidecar_ebpf::TreeEntry>>(
            sidecar_ebpf::TREE_MAP,
        )?;
        let slot = obj.kernel_side().slot;
        let mut n = 0;
        for entry in tree.iter() {
            match entry {
                Ok((_, e)) if e.slot == slot => n += 1,
                Ok(_) => {}
                Err(e) => obj.read_error(sidecar_ebpf::TREE_MAP, e),
            }
        }
        return Some(n);
    }
    if let Some(dir) = &t.cgroup_dir {
        return cgroup::count_procs(dir).ok();
    }
    if let Filter::PidNs { .. } = t.filter {
        let n = std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .count() as u64;
        return Some(n.saturating_sub(1));
    }
    None
}

impl Probe for Process {
    fn name(&self) -> &'static str {
        "process"
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn encode(&self, ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        let maps = self.obj.maps();
        let counter = |i| maps.counter("process_counters", i);

        // Keys that did not fit the kernel table are in the totals only: they show as `other`.
        // The table is read before the total, so the total is never the smaller.
        let mut execs: Vec<(String, (), u64)> = maps
            .hash::<CommKey, u64>("process_execs")
            .into_iter()
            .map(|(k, v)| (comm_label(&k.comm), (), v))
            .collect();
        let unmapped = counter(pc::EXECS).saturating_sub(execs.iter().map(|e| e.2).sum());
        if unmapped > 0 {
            execs.push((metrics::OTHER.into(), (), unmapped));
        }
        let mut exits: Vec<(String, (u32, u32), u64)> = maps
            .hash::<ExitKey, u64>("process_exits")
            .into_iter()
            .map(|(k, v)| (comm_label(&k.comm), (k.code, k.signal), v))
            .collect();
        let unmapped = counter(pc::EXITS).saturating_sub(exits.iter().map(|e| e.2).sum());
        if unmapped > 0 {
            exits.push((metrics::OTHER.into(), (0, 0), unmapped));
        }
        let (forks, threads, oom_kills) = (
            counter(pc::FORKS),
            counter(pc::THREADS),
            counter(pc::OOM_KILLS),
        );
        drop(maps);

        EXECS.counter_series(
            enc,
            self.exec_comms
                .fold(execs)
                .into_iter()
                .map(|(c, (), n)| (vec![("comm", c)], n)),
        )?;
        EXITS.counter_series(
            enc,
            self.exit_comms
                .fold(exits)
                .into_iter()
                .map(|(c, (code, sig), n)| {
                    (
                        vec![
                            ("comm", c),
                            ("code", code.to_string()),
                            ("signal", signal_name(sig)),
                        ],
                        n,
                    )
                }),
        )?;
        FORKS.counter_series(enc, [(vec![], forks)])?;
        THREADS.counter_series(enc, [(vec![], threads)])?;
        OOM_KILLS.counter_series(enc, [(vec![], oom_kills)])?;
        if let Some(n) = live_processes(ctx, &self.obj) {
            PROCESSES.gauge_series(enc, [(vec![], n)])?;
        }
        Ok(())
    }

    fn lost_events(&self) -> u64 {
        0
    }
}

/// Signal number as its name (`SIGKILL`), `0` when the process was not killed by a signal.
pub fn signal_name(sig: u32) -> String {
    const NAMES: [&str; 32] = [
        "0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match NAMES.get(sig as usize) {
        Some(n) => (*n).to_string(),
        None => format!("SIGRT{}", sig.saturating_sub(32)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals() {
        assert_eq!(super::signal_name(0), "0");
        assert_eq!(super::signal_name(9), "SIGKILL");
        assert_eq!(super::signal_name(15), "SIGTERM");
        assert_eq!(super::signal_name(34), "SIGRT2");
    }
}
