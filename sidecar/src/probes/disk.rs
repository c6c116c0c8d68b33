//! Disk family: block requests, bytes, service and queue time by disk and op, for the requests
//! the target submitted. Kernel side: `sidecar-ebpf/bpf/disk.bpf.c`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{DiskIoKey, DiskIoStats, HIST_BUCKETS, disk_counter as dc, disk_op};

use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::metrics::{Labels, Log2Histogram, Metric};

const DEVICE_OP: &[&str] = &["device", "op"];
pub const REQUESTS: Metric = Metric::counter(
    "ebpf_sidecar_block_requests",
    "Block requests submitted by the target and completed, by disk and op.",
)
.labels(DEVICE_OP);
pub const BYTES: Metric = Metric::counter(
    "ebpf_sidecar_block_bytes",
    "Bytes the target submitted to block devices, by disk and op: counted per bio when submitted, so bytes the block layer merges into another process's request are still the target's.",
)
.labels(DEVICE_OP);
pub const UNTIMED: Metric = Metric::counter(
    "ebpf_sidecar_block_requests_untimed",
    "Of ebpf_sidecar_block_requests_total, the requests whose completion the kernel did not deliver to the block_rq_complete tracepoint: counted once found ended, without a service time (not in the duration histograms).",
)
.labels(DEVICE_OP);
pub const REQUEST_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_block_request_duration_seconds",
    "Service time of the target's block requests (issue to the driver -> completion).",
)
.labels(DEVICE_OP);
pub const QUEUE_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_block_queue_duration_seconds",
    "Queue time of the target's block requests (insert into the I/O scheduler, or creation when it bypassed it -> issue).",
)
.labels(DEVICE_OP);
pub const METRICS: &[Metric] = &[REQUESTS, BYTES, UNTIMED, REQUEST_DURATION, QUEUE_DURATION];

pub struct Disk {
    obj: Object,
    names: Mutex<HashMap<(u32, u32), String>>,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let mut obj = Object::load_on(
        &opts.kernel_side,
        "disk",
        sidecar_ebpf::objects::DISK,
        &Default::default(),
    )?;
    // Before any request of ours is recorded: the kernel counts a request in this slot only
    // while the slot has the epoch it was created under (see disk.bpf.c).
    write_epoch(&mut obj)?;
    // Followers first, so that no request of ours is created before its completion is watched.
    obj.attach_tp_btf("disk_rq_complete", "block_rq_complete")?;
    obj.attach_tp_btf("disk_rq_merge", "block_rq_merge")?;
    obj.attach_tp_btf("disk_rq_requeue", "block_rq_requeue")?;
    obj.attach_tp_btf("disk_rq_issue", "block_rq_issue")?;
    obj.attach_tp_btf("disk_rq_insert", "block_rq_insert")?;
    obj.attach_tp_btf("disk_io_start", "block_io_start")?;
    obj.attach_tp_btf("disk_bio_queue", "block_bio_queue")?;
    obj.load_runnable("disk_sweep")?;
    Ok(Arc::new(Disk {
        obj,
        names: Mutex::new(HashMap::new()),
    }))
}

/// This sidecar's epoch in its slot's `disk_epoch`: nonzero and new for every sidecar, so that
/// requests still in flight from an earlier owner of the slot are not counted as ours.
fn write_epoch(obj: &mut Object) -> Result<(), ProbeError> {
    const MAP: &str = "disk_epoch";
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let epoch = (nanos ^ (u64::from(std::process::id()) << 44)).max(1);
    obj.write_slot_array(MAP, [epoch])
}

pub fn op_name(op: u32) -> &'static str {
    match op {
        disk_op::READ => "read",
        disk_op::WRITE => "write",
        disk_op::FLUSH => "flush",
        disk_op::DISCARD => "discard",
        _ => "other",
    }
}

/// Kernel name of a block device (`vda`, `nvme0n1`): DEVNAME from sysfs, else /proc/partitions,
/// else `major:minor`.
pub fn device_name(major: u32, minor: u32) -> String {
    if let Ok(s) = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        && let Some(n) = s.lines().find_map(|l| l.strip_prefix("DEVNAME="))
    {
        return n.trim().to_string();
    }
    if let Ok(s) = std::fs::read_to_string("/proc/partitions")
        && let Some(n) = partitions_lookup(&s, major, minor)
    {
        return n;
    }
    format!("{major}:{minor}")
}

fn partitions_lookup(text: &str, major: u32, minor: u32) -> Option<String> {
    text.lines().skip(2).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 4 && f[0].parse() == Ok(major) && f[1].parse() == Ok(minor))
            .then(|| f[3].to_string())
    })
}

#[derive(Default)]
struct Agg {
    requests: u64,
    bytes: u64,
    untimed: u64,
    request: Log2Histogram,
    queue: Log2Histogram,
}

impl Disk {
    fn name(&self, major: u32, minor: u32) -> String {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names
            .entry((major, minor))
            .or_insert_with(|| device_name(major, minor))
            .clone()
    }
}

impl Probe for Disk {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn encode(&self, _ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        // Count the requests that ended without their completion being delivered (see
        // disk.bpf.c) before reading the counts.
        if sweep_due()
            && let Err(e) = self.obj.run("disk_sweep")
        {
            tracing::warn!("{e}: requests whose completion was not delivered are counted late");
        }
        let keys = self
            .obj
            .maps()
            .percpu_hash::<DiskIoKey, DiskIoStats>("disk_stats");
        let mut per: BTreeMap<(String, &'static str), Agg> = BTreeMap::new();
        for (k, vals) in keys {
            let a = per
                .entry((self.name(k.major, k.minor), op_name(k.op)))
                .or_insert_with(|| Agg {
                    request: Log2Histogram::new(HIST_BUCKETS),
                    queue: Log2Histogram::new(HIST_BUCKETS),
                    ..Default::default()
                });
            for v in vals {
                a.requests += v.requests;
                a.bytes += v.bytes;
                a.untimed += v.untimed;
                a.request.add(&v.request_hist, v.request_ns);
                a.queue.add(&v.queue_hist, v.queue_ns);
            }
        }
        let labels = |(d, o): &(String, &'static str)| -> Labels {
            vec![("device", d.clone()), ("op", o.to_string())]
        };
        REQUESTS.counter_series(enc, per.iter().map(|(k, a)| (labels(k), a.requests)))?;
        BYTES.counter_series(enc, per.iter().map(|(k, a)| (labels(k), a.bytes)))?;
        UNTIMED.counter_series(enc, per.iter().map(|(k, a)| (labels(k), a.untimed)))?;
        REQUEST_DURATION
            .histogram_series(enc, per.iter().map(|(k, a)| (labels(k), a.request.clone())))?;
        QUEUE_DURATION.histogram_series(enc, per.iter().map(|(k, a)| (labels(k), a.queue.clone())))
    }

    fn lost_events(&self) -> u64 {
        let maps = self.obj.maps();
        maps.counter("disk_counters", dc::LOST_REQUESTS)
            + maps.counter("disk_counters", dc::LOST_KEYS)
    }
}

/// Whether to sweep before this read. A sweep covers every slot's requests (the in-flight table
/// is the set's), and it walks all 16k buckets: node mode renders every container in one
/// scrape, so one sweep within the last 100 ms serves them all (21 sweeps were a fifth of a
/// scrape's time). A sidecar, one target, sweeps at every read.
fn sweep_due() -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    if !crate::probes::object::loads::is_shared() {
        return true;
    }
    let now = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
        + 1000;
    let last = LAST_MS.load(Ordering::Relaxed);
    now.saturating_sub(last) >= 100
        && LAST_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions() {
        let t = "major minor  #blocks  name\n\n 254        0  268435456 vda\n 259        1  1000 nvme0n1p1\n";
        assert_eq!(partitions_lookup(t, 254, 0).as_deref(), Some("vda"));
        assert_eq!(partitions_lookup(t, 259, 1).as_deref(), Some("nvme0n1p1"));
        assert_eq!(partitions_lookup(t, 8, 0), None);
    }

    #[test]
    fn ops() {
        assert_eq!(op_name(disk_op::READ), "read");
        assert_eq!(op_name(disk_op::FLUSH), "flush");
        assert_eq!(op_name(disk_op::OTHER), "other");
    }
}
