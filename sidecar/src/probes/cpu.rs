//! CPU family: on-CPU time by comm, slice lengths, run-queue latency, off-CPU time by state,
//! context switches, migrations. Kernel side: `sidecar-ebpf/bpf/cpu.bpf.c`.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{CommKey, CpuHistVal, HIST_BUCKETS, cpu as c};

use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::metrics::{self, LabelBudget, Log2Histogram, Metric, comm_label};

pub const CPU_SECONDS: Metric = Metric::counter(
    "ebpf_sidecar_cpu_seconds",
    "CPU time of the target's processes, by comm (counted when a task leaves the CPU).",
)
.labels(&["comm"])
.top_n(&["comm"]);
pub const SLICE_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_cpu_slice_duration_seconds",
    "How long the target's tasks ran each time they got a CPU (cpudist).",
);
pub const RUNQUEUE_LATENCY: Metric = Metric::histogram(
    "ebpf_sidecar_runqueue_latency_seconds",
    "Time the target's tasks waited for a CPU after being woken or preempted (runqlat).",
);
pub const OFFCPU_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_offcpu_duration_seconds",
    "Time the target's tasks spent off CPU, from switching out to switching back in, by state.",
)
.labels(&["state"]);
pub const CONTEXT_SWITCHES: Metric = Metric::counter(
    "ebpf_sidecar_context_switches",
    "Context switches of the target's tasks as the kernel counts them (nvcsw/nivcsw: getrusage, /proc/<pid>/status): voluntary (gave up the CPU: slept, blocked, exited) or involuntary (preempted, yielded).",
)
.labels(&["kind"]);
pub const MIGRATIONS: Metric = Metric::counter(
    "ebpf_sidecar_cpu_migrations",
    "Times the scheduler moved one of the target's tasks to another CPU.",
);
pub const METRICS: &[Metric] = &[
    CPU_SECONDS,
    SLICE_DURATION,
    RUNQUEUE_LATENCY,
    OFFCPU_DURATION,
    CONTEXT_SWITCHES,
    MIGRATIONS,
];

/// Slots of `cpu_hists`, in the order cpu.bpf.c fills them.
const HISTS: usize = 4;

pub struct Cpu {
    obj: Object,
    comms: LabelBudget,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    // Shared kernel side: the hooks are attached once per host; this slot's maps are its own.
    let mut obj = Object::load_on(
        &opts.kernel_side,
        "cpu",
        sidecar_ebpf::objects::CPU,
        &Default::default(),
    )?;
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
        let maps = self.obj.maps();
        let hists: [Log2Histogram; HISTS] = std::array::from_fn(|i| {
            let mut h = Log2Histogram::new(HIST_BUCKETS);
            for v in maps
                .percpu_slot::<CpuHistVal>("cpu_hists", i as u32)
                .unwrap_or_default()
            {
                h.add(&v.hist, v.sum_ns);
            }
            h
        });
        let mut comms: Vec<(String, (), u64)> = maps
            .percpu_hash::<CommKey, u64>("cpu_comm_ns")
            .into_iter()
            .map(|(k, v)| (comm_label(&k.comm), (), v.iter().sum()))
            .collect();
        let other = maps.counter("cpu_other_ns", 0);
        if other > 0 {
            comms.push((metrics::OTHER.into(), (), other));
        }
        let counter = |i| maps.counter("cpu_counters", i);
        let (vol, invol, migr) = (
            counter(c::SWITCH_VOLUNTARY),
            counter(c::SWITCH_INVOLUNTARY),
            counter(c::MIGRATIONS),
        );
        drop(maps);

        CPU_SECONDS.counter_series(
            enc,
            self.comms
                .fold(comms)
                .into_iter()
                .map(|(comm, (), ns)| (vec![("comm", comm)], ns as f64 / 1e9)),
        )?;
        let [slice, runq, sleeping, blocked] = hists;
        SLICE_DURATION.histogram_series(enc, [(vec![], slice)])?;
        RUNQUEUE_LATENCY.histogram_series(enc, [(vec![], runq)])?;
        OFFCPU_DURATION.histogram_series(
            enc,
            [("sleeping", sleeping), ("blocked", blocked)]
                .map(|(s, h)| (vec![("state", s.to_string())], h)),
        )?;
        CONTEXT_SWITCHES.counter_series(
            enc,
            [
                (vec![("kind", "voluntary".to_string())], vol),
                (vec![("kind", "involuntary".to_string())], invol),
            ],
        )?;
        MIGRATIONS.counter_series(enc, [(vec![], migr)])
    }

    fn lost_events(&self) -> u64 {
        0
    }
}
