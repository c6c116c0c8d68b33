//! Syscalls family: calls, failures by errno, time and latency per syscall, all aggregated in
//! the kernel. Kernel side: `sidecar-ebpf/bpf/syscalls.bpf.c`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aya::maps::{PerCpuArray, PerCpuHashMap, ProgramArray};
use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{
    HIST_BUCKETS, SYSCALL_SLOTS, SyscallErrorKey, SyscallStats, syscalls_counter as sc,
};

use super::object::percpu_counter;
use super::tables::{ERRNOS, SYSCALLS};
use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::export::encode::{self, Labels, Log2Histogram};

pub struct Syscalls {
    obj: Object,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let mut obj = Object::load("syscalls", sidecar_ebpf::objects::SYSCALLS)?;
    if opts.syscall_latency {
        obj.attach_raw_tp("sys_enter", "sys_enter")?;
        obj.attach_raw_tp("sys_exit", "sys_exit")?;
        let mut ebpf = obj.lock();
        let mut slot = |name: &str| {
            ebpf.take_map(name)
                .and_then(|m| ProgramArray::try_from(m).ok())
        };
        if let (Some(enter), Some(exit)) = (slot("syscall_hooks_enter"), slot("syscall_hooks_exit"))
        {
            opts.syscall_dispatch.offer(enter, exit);
        }
    } else {
        // One program per syscall instead of two: the traced-syscall path's floor is the price.
        obj.attach_tp_btf("sys_exit_count", "sys_exit")?;
        obj.attach_tp_btf("sys_thread_exit", "sched_process_exit")?;
    }
    Ok(Arc::new(Syscalls { obj }))
}

/// Name of an x86_64 syscall number; the kernel folds numbers ≥ 511 into the last slot.
pub fn syscall_name(nr: u32) -> String {
    if nr as usize == SYSCALL_SLOTS - 1 {
        return "unknown".into();
    }
    match SYSCALLS.binary_search_by_key(&nr, |(n, _)| *n) {
        Ok(i) => SYSCALLS[i].1.to_string(),
        Err(_) => format!("syscall_{nr}"),
    }
}

pub fn errno_name(err: u32) -> String {
    match ERRNOS.binary_search_by_key(&err, |(n, _)| *n) {
        Ok(i) => ERRNOS[i].1.to_string(),
        Err(_) => format!("errno_{err}"),
    }
}

impl Probe for Syscalls {
    fn name(&self) -> &'static str {
        "syscalls"
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn encode(&self, ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        let ebpf = self.obj.lock();
        let mut per: BTreeMap<String, (u64, Log2Histogram)> = BTreeMap::new();
        if let Some(Ok(arr)) = ebpf
            .map("syscall_stats")
            .map(PerCpuArray::<_, SyscallStats>::try_from)
        {
            for (nr, vals) in arr.iter().enumerate() {
                let Ok(vals) = vals else { continue };
                let calls: u64 = vals.iter().map(|v| v.calls).sum();
                if calls == 0 {
                    continue;
                }
                let mut h = Log2Histogram::new(HIST_BUCKETS);
                for v in vals.iter() {
                    h.add(&v.hist, v.time_ns);
                }
                per.insert(syscall_name(nr as u32), (calls, h));
            }
        }
        let mut errors: BTreeMap<(String, String), u64> = BTreeMap::new();
        if let Some(Ok(m)) = ebpf
            .map("syscall_errors")
            .map(PerCpuHashMap::<_, SyscallErrorKey, u64>::try_from)
        {
            for (k, v) in m.iter().filter_map(|r| r.ok()) {
                *errors
                    .entry((syscall_name(k.nr), errno_name(k.err)))
                    .or_default() += v.iter().sum::<u64>();
            }
        }
        drop(ebpf);

        let label = |s: &String| -> Labels { vec![("syscall", s.clone())] };
        encode::counter(
            enc,
            "ebpf_sidecar_syscalls",
            "System calls made by the target, by syscall (counted on entry).",
            per.iter().map(|(s, (n, _))| (label(s), *n)),
        )?;
        encode::counter(
            enc,
            "ebpf_sidecar_syscall_errors",
            "System calls of the target that returned an error, by syscall and errno.",
            errors
                .into_iter()
                .map(|((s, e), n)| (vec![("syscall", s), ("errno", e)], n)),
        )?;
        encode::gauge(
            enc,
            "ebpf_sidecar_seccomp_observed_syscalls",
            "Distinct syscalls the target made since the sidecar started (the seccomp advisor's allow list, /seccomp).",
            [(vec![], per.len() as u64)],
        )?;
        encode::counter(
            enc,
            "ebpf_sidecar_risky_syscalls",
            "Calls of syscalls that widen a process's reach (ptrace, mount, unshare, setns, bpf, module loading...).",
            per.iter()
                .filter(|(s, _)| crate::seccomp::RISKY.contains(&s.as_str()))
                .map(|(s, (n, _))| (label(s), *n)),
        )?;
        if !ctx.options.syscall_latency {
            return Ok(()); // --syscall-latency off: no time was measured
        }
        encode::counter(
            enc,
            "ebpf_sidecar_syscall_seconds",
            "Time the target spent in each system call (entry to exit, including time blocked).",
            per.iter()
                .map(|(s, (_, h))| (label(s), h.sum_ns as f64 / 1e9)),
        )?;
        let help = "Latency of the target's system calls (entry to exit), from log2 buckets kept in the kernel.";
        if ctx.options.per_syscall_histograms {
            encode::histogram(
                enc,
                "ebpf_sidecar_syscall_duration_seconds",
                help,
                per.into_iter().map(|(s, (_, h))| (vec![("syscall", s)], h)),
            )
        } else {
            let mut all = Log2Histogram::new(HIST_BUCKETS);
            for (_, h) in per.values() {
                all.add(&h.buckets, h.sum_ns);
            }
            encode::histogram(
                enc,
                "ebpf_sidecar_syscall_duration_seconds",
                help,
                [(vec![], all)],
            )
        }
    }

    fn observed_syscalls(&self) -> Option<Vec<u32>> {
        let ebpf = self.obj.lock();
        let arr = PerCpuArray::<_, SyscallStats>::try_from(ebpf.map("syscall_stats")?).ok()?;
        Some(
            arr.iter()
                .enumerate()
                .filter_map(|(nr, v)| {
                    v.ok()
                        .filter(|v| v.iter().any(|s| s.calls > 0))
                        .map(|_| nr as u32)
                })
                .filter(|nr| (*nr as usize) < SYSCALL_SLOTS - 1)
                .collect(),
        )
    }

    fn lost_events(&self) -> u64 {
        let ebpf = self.obj.lock();
        percpu_counter(&ebpf, "syscalls_counters", sc::LOST_STARTS)
            + percpu_counter(&ebpf, "syscalls_counters", sc::LOST_ERRORS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(syscall_name(0), "read");
        assert_eq!(syscall_name(110), "getppid");
        assert_eq!(syscall_name(257), "openat");
        assert_eq!(syscall_name(462), "mseal");
        assert_eq!(syscall_name(500), "syscall_500");
        assert_eq!(syscall_name(511), "unknown");
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(errno_name(512), "ERESTARTSYS");
        assert_eq!(errno_name(999), "errno_999");
    }

    #[test]
    fn tables_sorted() {
        assert!(SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(ERRNOS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(SYSCALLS.last().map(|s| s.1), Some("file_setattr"));
    }
}
