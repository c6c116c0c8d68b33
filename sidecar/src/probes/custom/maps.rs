//! Taking a custom probe's maps out of the loaded object, each for one `metrics:` or `events:`
//! entry, and checking that the kernel's layout is the one BTF described.

use aya::Ebpf;
use aya::maps::{Map, MapData};

use super::config::Config;
use super::encode::MetricPlan;
use super::plan::Pending;
use super::rawmap::{self, RawMap};
use super::{Ctx, CustomError};
use crate::metrics::LabelBudget;

/// Take `map` out of the object, if it is of a kind the sidecar reads.
pub(super) fn take(ctx: &Ctx, ebpf: &mut Ebpf, map: &str) -> Result<MapData, CustomError> {
    let m = ebpf.take_map(map).ok_or_else(|| {
        ctx.map(
            map,
            "already used by another metrics or events entry".into(),
        )
    })?;
    Ok(match m {
        Map::HashMap(d)
        | Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::RingBuf(d)
        | Map::PerfEventArray(d) => d,
        other => {
            let ty = rawmap::map_data(&other)
                .info()
                .ok()
                .and_then(|i| i.map_type().ok())
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|| "unknown".into());
            return Err(ctx.map(
                map,
                format!(
                    "map type {ty} is not supported (hash, array, their per-CPU and LRU kinds; ring buffer, perf event array for events)"
                ),
            ));
        }
    })
}

/// Open the map of every `metrics:` entry and check its sizes against the plan.
pub(super) fn open_metrics(
    ctx: &Ctx,
    ebpf: &mut Ebpf,
    cfg: &Config,
    pending: Vec<Pending>,
) -> Result<Vec<MetricPlan>, CustomError> {
    let mut metrics = Vec::new();
    for (m, p) in cfg.metrics.iter().zip(pending) {
        let raw =
            RawMap::new(take(ctx, ebpf, &m.map)?).map_err(|e| ctx.map(&m.map, e.to_string()))?;
        check_layout(ctx, &m.map, &raw, &p)?;
        metrics.push(MetricPlan {
            map_name: m.map.clone(),
            map: raw,
            labels: p.labels,
            values: p.values,
            hist: p.hist,
            budget: LabelBudget::new(p.top_n),
        });
    }
    Ok(metrics)
}

/// The map as the kernel made it against what BTF said (a mismatch would read garbage).
fn check_layout(ctx: &Ctx, map: &str, raw: &RawMap, p: &Pending) -> Result<(), CustomError> {
    if matches!(
        raw.map_type,
        rawmap::BPF_MAP_TYPE_RINGBUF | rawmap::BPF_MAP_TYPE_PERF_EVENT_ARRAY
    ) {
        return Err(ctx.map(
            map,
            "is a ring buffer/perf event array: list it under `events:`, not `metrics:`".into(),
        ));
    }
    if p.key_size != 0 && raw.key_size != p.key_size {
        return Err(ctx.map(
            map,
            format!(
                "key is {} bytes in the kernel but {} bytes in BTF",
                raw.key_size, p.key_size
            ),
        ));
    }
    if raw.value_size != p.value_size {
        return Err(ctx.map(
            map,
            format!(
                "value is {} bytes in the kernel but {} bytes in BTF",
                raw.value_size, p.value_size
            ),
        ));
    }
    if let Some(l) = p.labels.iter().find(|l| l.offset + l.len > raw.key_size) {
        return Err(ctx.map(
            map,
            format!(
                "label {} reads bytes {}..{} of a {}-byte key",
                l.name,
                l.offset,
                l.offset + l.len,
                raw.key_size
            ),
        ));
    }
    Ok(())
}
