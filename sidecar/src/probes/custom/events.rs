//! A custom probe's `events:`: ring buffers and perf event arrays whose records are decoded with
//! the object's BTF into JSON events on `/events`, optionally counted into a labelled counter.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aya::Ebpf;
use aya::maps::{Map, MapData, PerfEventArray, RingBuf};
use serde_json::json;

use super::btf::{Btf, MapDef};
use super::config::{Config, Decoder, MetricKind};
use super::decode::DecodeCtx;
use super::encode::UserMetric;
use super::maps::take;
use super::plan::{self, LabelPlan, Names};
use super::rawmap::{self, RawMap};
use super::{Ctx, CustomError};
use crate::events::EventSink;
use crate::metrics::{LabelBudget, OTHER, Type};
use crate::probes::ProbeError;

/// `count:` of an events entry: records counted by chosen fields.
pub(super) struct CountPlan {
    pub metric: UserMetric,
    pub labels: Vec<LabelPlan>,
    budget: LabelBudget,
    pub counts: Mutex<BTreeMap<Vec<String>, u64>>,
}

/// An events entry checked against BTF: the struct its records hold.
pub(super) struct EventPlan {
    pub map_name: String,
    struct_id: u32,
    size: usize,
    decoders: BTreeMap<String, Decoder>,
    pub count: Option<CountPlan>,
}

/// An events map opened for reading, with its plan.
pub(super) type Source = (Arc<EventPlan>, EventSource);

/// A `lost_counter:` map, by name.
pub(super) type LostCounter = (String, RawMap);

pub(super) enum EventSource {
    Ring(RingBuf<MapData>),
    /// One buffer per online CPU.
    Perf(Vec<aya::maps::perf::PerfEventArrayBuffer<MapData>>),
}

/// Plan every `events:` entry against the object's BTF.
pub(super) fn plan(
    ctx: &Ctx,
    btf: &Btf,
    defs: &[MapDef],
    cfg: &Config,
    top_n: usize,
    names: &mut Names,
) -> Result<Vec<EventPlan>, CustomError> {
    let mut out = Vec::new();
    for e in &cfg.events {
        plan::find_def(ctx, defs, &e.map)?;
        let struct_id = btf
            .struct_by_name(&e.struct_name)
            .map_err(|err| ctx.map(&e.map, format!("events struct: {err}")))?;
        for path in e.decoders.keys() {
            btf.field(struct_id, path)
                .map_err(|err| ctx.map(&e.map, format!("decoders: {err}")))?;
        }
        let count = match &e.count {
            None => None,
            Some(c) => {
                let name = names.add(ctx, &c.metric, MetricKind::Counter, &e.map)?;
                let labels = plan::label_plans(btf, Some(struct_id), &c.labels, "event")
                    .map_err(|msg| ctx.map(&e.map, msg))?;
                Some(CountPlan {
                    metric: UserMetric {
                        name,
                        help: c.help.clone().unwrap_or_else(|| {
                            format!("Events of {} (custom probe {}).", e.map, ctx.probe)
                        }),
                        kind: Type::Counter,
                        labels: labels.iter().map(|l| l.name).collect(),
                    },
                    labels,
                    budget: LabelBudget::new(c.top_n.unwrap_or(top_n)),
                    counts: Mutex::new(BTreeMap::new()),
                })
            }
        };
        out.push(EventPlan {
            map_name: e.map.clone(),
            struct_id,
            size: btf.size_of(struct_id),
            decoders: e.decoders.clone(),
            count,
        });
    }
    Ok(out)
}

/// Open every events map (and its lost counter) of the loaded object.
pub(super) fn open(
    ctx: &Ctx,
    ebpf: &mut Ebpf,
    cfg: &Config,
    plans: Vec<EventPlan>,
) -> Result<(Vec<Source>, Vec<LostCounter>), CustomError> {
    let mut sources = Vec::new();
    let mut lost_maps = Vec::new();
    for (e, plan) in cfg.events.iter().zip(plans) {
        let src = source(ctx, &e.map, take(ctx, ebpf, &e.map)?)?;
        sources.push((Arc::new(plan), src));
        if let Some(lm) = &e.lost_counter {
            let raw =
                RawMap::new(take(ctx, ebpf, lm)?).map_err(|err| ctx.map(lm, err.to_string()))?;
            if raw.value_size != 8 {
                return Err(ctx.map(
                    lm,
                    format!(
                        "lost_counter must hold __u64 values, not {} bytes",
                        raw.value_size
                    ),
                ));
            }
            lost_maps.push((lm.clone(), raw));
        }
    }
    Ok((sources, lost_maps))
}

/// The reader of one events map: a ring buffer, or every online CPU's perf buffer.
fn source(ctx: &Ctx, map: &str, data: MapData) -> Result<EventSource, CustomError> {
    let info = data.info().map_err(|err| ctx.map(map, err.to_string()))?;
    let ty = info.map_type().map(|t| t as u32).unwrap_or(0);
    Ok(match ty {
        rawmap::BPF_MAP_TYPE_RINGBUF => EventSource::Ring(
            RingBuf::try_from(Map::RingBuf(data)).map_err(|err| ctx.map(map, err.to_string()))?,
        ),
        rawmap::BPF_MAP_TYPE_PERF_EVENT_ARRAY => {
            let mut arr = PerfEventArray::try_from(Map::PerfEventArray(data))
                .map_err(|err| ctx.map(map, err.to_string()))?;
            // perf_event_open needs CAP_PERFMON: open every CPU's buffer now, before
            // the capabilities are dropped.
            let cpus = aya::util::online_cpus()
                .map_err(|(what, err)| ctx.map(map, format!("{what}: {err}")))?;
            let mut bufs = Vec::new();
            for cpu in cpus {
                bufs.push(arr.open(cpu, Some(64)).map_err(|err| {
                    ctx.map(map, format!("opening the perf buffer of CPU {cpu}: {err}"))
                })?);
            }
            EventSource::Perf(bufs)
        }
        _ => {
            return Err(ctx.map(
                map,
                "events need a ring buffer (BPF_MAP_TYPE_RINGBUF) or a perf event array".into(),
            ));
        }
    })
}

/// Reads one events map on its own thread and hands its records to the sink.
pub(super) struct Reader {
    pub kind: String,
    pub plan: Arc<EventPlan>,
    pub btf: Arc<Btf>,
    pub decode: Arc<DecodeCtx>,
    pub lost: Arc<AtomicU64>,
    pub sink: EventSink,
}

impl Reader {
    /// Start the reader thread (`family`: the probe, for the error).
    pub fn spawn(self, family: &'static str, src: EventSource) -> Result<(), ProbeError> {
        let map = self.plan.map_name.clone();
        std::thread::Builder::new()
            .name(format!("custom-{}", self.kind))
            .spawn(move || self.run(src))
            .map(drop)
            .map_err(|e| ProbeError::Map {
                family,
                map,
                detail: format!("starting the event reader: {e}"),
            })
    }

    fn run(self, src: EventSource) {
        match src {
            EventSource::Ring(mut ring) => {
                let fd = ring.as_raw_fd();
                loop {
                    wait_readable(&[fd]);
                    let mut batch = Vec::new();
                    while let Some(item) = ring.next() {
                        self.record(&item, &mut batch);
                    }
                    self.flush(batch);
                }
            }
            EventSource::Perf(mut bufs) => {
                let fds: Vec<i32> = bufs.iter().map(|b| b.as_raw_fd()).collect();
                let mut scratch = Vec::new();
                loop {
                    wait_readable(&fds);
                    let mut batch = Vec::new();
                    for b in &mut bufs {
                        b.for_each(|ev| match ev {
                            aya::maps::perf::PerfEvent::Sample { head, tail } => {
                                scratch.clear();
                                scratch.extend_from_slice(head);
                                scratch.extend_from_slice(tail);
                                self.record(&scratch, &mut batch);
                            }
                            aya::maps::perf::PerfEvent::Lost { count } => {
                                self.lost.fetch_add(count, Ordering::Relaxed);
                            }
                        });
                    }
                    self.flush(batch);
                }
            }
        }
    }

    fn record(&self, bytes: &[u8], batch: &mut Vec<String>) {
        let p = &self.plan;
        if bytes.len() < p.size {
            // Not the struct the YAML names: count it rather than decode garbage.
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let data = self
            .decode
            .json(&self.btf, p.struct_id, bytes, "", &p.decoders);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        batch.push(
            json!({
                "time": crate::events::rfc3339(now),
                "kind": self.kind,
                "map": p.map_name,
                "data": data,
            })
            .to_string(),
        );
        if let Some(c) = &p.count {
            self.count(c, bytes);
        }
    }

    fn count(&self, c: &CountPlan, bytes: &[u8]) {
        let vals: Vec<String> = c
            .labels
            .iter()
            .map(|l| {
                self.decode
                    .label(l.decoder, &bytes[l.offset..l.offset + l.len], l.scalar)
            })
            .collect();
        let keep = c.labels.is_empty() || c.budget.admit_all([vals.join("\u{1f}").as_str()])[0];
        let vals = if keep {
            vals
        } else {
            vec![OTHER.to_string(); c.labels.len()]
        };
        *c.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(vals)
            .or_insert(0) += 1;
    }

    fn flush(&self, batch: Vec<String>) {
        if !batch.is_empty() {
            self.sink.publish(&batch);
        }
    }
}

fn wait_readable(fds: &[i32]) {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    if pfds.is_empty() {
        std::thread::sleep(std::time::Duration::from_secs(1));
        return;
    }
    // SAFETY: a valid array of pollfds of the given length.
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 1000) };
}
