//! CPU family: on-CPU time by comm, slice lengths, run-queue latency, off-CPU time by state,
//! context switches, migrations. Kernel side: `sidecar-ebpf/bpf/cpu.bpf.c`.

// TODO(contract): declare every metric here.
pub const METRICS: &[crate::metrics::Metric] = &[];

use std::fmt;
use std::sync::Arc;

use aya::maps::{PerCpuArray, PerCpuHashMap};
use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{CommKey, CpuHistVal, HIST_BUCKETS, cpu as c};

use super::object::percpu_counter;
use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::metrics::{self, LabelBudget, Log2Histogram, comm_label};

pub struct Cpu {
    obj: Object,
    comms: LabelBudget,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let mut obj = Object::load("cpu", sidecar_ebpf::objects::CPU)?;
    obj.attach_tp_btf("cpu_switch", "sched_switch")?;
    obj.attach_tp_btf("cpu_wakeup", "sched_wakeup")?;
    obj.attach_tp_btf("cpu_wakeup_new", "sched_wakeup_new")?;
    obj.attach_tp_btf("cpu_migrate", "sched_migrate_task")?;
    obj.attach_tp_btf("cpu_exit", "sched_process_exit")?;
    Ok(Arc::new(Cpu {
        obj,
        comms: LabelBudget::new(opts.top_n),
    }))
}

impl Probe for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn encode(&self, _ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        let ebpf = self.obj.lock();
        let mut hists = vec![Log2Histogram::new(HIST_BUCKETS); 4];
        if let Some(Ok(arr)) = ebpf
            .map("cpu_hists")
            .map(PerCpuArray::<_, CpuHistVal>::try_from)
        {
            for (i, h) in hists.iter_mut().enumerate() {
                if let Ok(vals) = arr.get(&(i as u32), 0) {
                    for v in vals.iter() {
                        h.add(&v.hist, v.sum_ns);
                    }
                }
            }
        }
        let mut comms: Vec<(String, (), u64)> = Vec::new();
        if let Some(Ok(m)) = ebpf
            .map("cpu_comm_ns")
            .map(PerCpuHashMap::<_, CommKey, u64>::try_from)
        {
            comms.extend(
                m.iter()
                    .filter_map(|r| r.ok())
                    .map(|(k, v)| (comm_label(&k.comm), (), v.iter().sum())),
            );
        }
        let other: u64 = ebpf
            .map("cpu_other_ns")
            .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
            .and_then(|a| a.get(&0, 0).ok())
            .map(|v| v.iter().sum())
            .unwrap_or(0);
        if other > 0 {
            comms.push((metrics::OTHER.into(), (), other));
        }
        let counter = |i| percpu_counter(&ebpf, "cpu_counters", i);
        let (vol, invol, migr) = (
            counter(c::SWITCH_VOLUNTARY),
            counter(c::SWITCH_INVOLUNTARY),
            counter(c::MIGRATIONS),
        );
        drop(ebpf);

        metrics::counter(
            enc,
            "ebpf_sidecar_cpu_seconds",
            "CPU time of the target's processes, by comm (counted when a task leaves the CPU).",
            self.comms
                .fold(comms)
                .into_iter()
                .map(|(comm, (), ns)| (vec![("comm", comm)], ns as f64 / 1e9)),
        )?;
        let mut it = hists.into_iter();
        let (slice, runq, sleeping, blocked) = (it.next(), it.next(), it.next(), it.next());
        metrics::histogram(
            enc,
            "ebpf_sidecar_cpu_slice_duration_seconds",
            "How long the target's tasks ran each time they got a CPU (cpudist).",
            slice.map(|h| (vec![], h)),
        )?;
        metrics::histogram(
            enc,
            "ebpf_sidecar_runqueue_latency_seconds",
            "Time the target's tasks waited for a CPU after being woken or preempted (runqlat).",
            runq.map(|h| (vec![], h)),
        )?;
        metrics::histogram(
            enc,
            "ebpf_sidecar_offcpu_duration_seconds",
            "Time the target's tasks spent off CPU, from switching out to switching back in, by state.",
            [("sleeping", sleeping), ("blocked", blocked)]
                .into_iter()
                .filter_map(|(s, h)| h.map(|h| (vec![("state", s.to_string())], h))),
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_context_switches",
            "Context switches of the target's tasks as the kernel counts them (nvcsw/nivcsw: getrusage, /proc/<pid>/status): voluntary (gave up the CPU: slept, blocked, exited) or involuntary (preempted, yielded).",
            [
                (vec![("kind", "voluntary".to_string())], vol),
                (vec![("kind", "involuntary".to_string())], invol),
            ],
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_cpu_migrations",
            "Times the scheduler moved one of the target's tasks to another CPU.",
            [(vec![], migr)],
        )
    }

    fn lost_events(&self) -> u64 {
        0
    }
}
