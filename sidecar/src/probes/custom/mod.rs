//! Custom probes: a user's clang-compiled CO-RE object (`--probe-file`) loaded next to the
//! built-in families, described by a YAML file (`--probe-config`): which programs attach where,
//! which maps become metrics (struct values decoded with the object's BTF, one metric per chosen
//! field), which ring buffers or perf event arrays are events on `/events`.
//!
//! A custom probe that cannot be read, validated, loaded or attached is reported
//! (`ebpf_sidecar_probe_up{probe="custom:<name>"} 0`, the reason in the log) and skipped: it
//! never stops the built-in families. Reference: docs/families/custom.md.

pub mod btf;
pub mod config;
pub mod decode;
pub mod rawmap;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aya::maps::{Array, Map, MapData, PerfEventArray, RingBuf};
use aya::programs::ProgramFd;
use aya::programs::cgroup_skb::{CgroupSkbAttachType, CgroupSkbLinkId};
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use serde_json::json;
use thiserror::Error;

use self::btf::{Btf, Scalar, Ty};
use self::config::{AttachKind, BucketKind, Config, Decoder, LabelCfg, MetricKind};
use self::decode::DecodeCtx;
use self::rawmap::RawMap;
use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::events::EventSink;
use crate::metrics::{LabelBudget, Labels, OTHER};
use crate::monitored::Resolved;

#[derive(Debug, Error)]
pub enum CustomError {
    #[error("{file}: {msg}")]
    Config { file: String, msg: String },
    #[error("custom probe {probe}: object {file}: {msg}")]
    Object {
        probe: String,
        file: String,
        msg: String,
    },
    #[error("custom probe {probe}: map {map}: {msg}")]
    Map {
        probe: String,
        map: String,
        msg: String,
    },
    #[error("custom probe {probe}: program {program}: {msg}")]
    Program {
        probe: String,
        program: String,
        msg: String,
    },
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

/// One `--probe-file`/`--probe-config` pair.
#[derive(Clone, Debug)]
pub struct Spec {
    pub object: PathBuf,
    pub config: PathBuf,
}

impl Spec {
    /// The probe's name before the YAML is read (its file name), for reporting a YAML that
    /// cannot be parsed.
    pub fn fallback_name(&self) -> String {
        let f = self
            .config
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        f.trim_end_matches(".yaml")
            .trim_end_matches(".yml")
            .to_string()
    }
}

/// Read and check a YAML file (no kernel involved): syntax and schema, with the line.
pub fn read_config(path: &Path) -> Result<Config, CustomError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| CustomError::Config {
        file: file.clone(),
        msg: format!("cannot read: {e}"),
    })?;
    let cfg: Config = serde_yaml::from_str(&text).map_err(|e| CustomError::Config {
        file: match e.location() {
            Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
            None => file.clone(),
        },
        msg: format!("{e}"),
    })?;
    Ok(cfg)
}

fn leak(s: String) -> &'static str {
    // A handful of names per user probe, alive for the whole run.
    Box::leak(s.into_boxed_str())
}

struct LabelPlan {
    name: &'static str,
    offset: usize,
    len: usize,
    scalar: Option<Scalar>,
    decoder: Decoder,
}

struct ValuePlan {
    metric: String,
    help: String,
    kind: MetricKind,
    offset: usize,
    scalar: Scalar,
    scale: f64,
}

struct HistPlan {
    metric: String,
    help: String,
    offset: usize,
    elem: Scalar,
    n: usize,
    /// Upper bound of buckets 0..n-1, already scaled (the last bucket is +Inf: kernels clamp).
    les: Vec<f64>,
    /// A representative value per bucket, scaled, for `_sum` when no sum field is given.
    mids: Vec<f64>,
    sum: Option<(usize, Scalar)>,
    scale: f64,
}

struct MetricPlan {
    map_name: String,
    map: RawMap,
    labels: Vec<LabelPlan>,
    values: Vec<ValuePlan>,
    hist: Option<HistPlan>,
    budget: LabelBudget,
}

struct CountPlan {
    metric: String,
    help: String,
    labels: Vec<LabelPlan>,
    budget: LabelBudget,
    counts: Mutex<BTreeMap<Vec<String>, u64>>,
}

struct EventPlan {
    map_name: String,
    struct_id: u32,
    size: usize,
    decoders: BTreeMap<String, Decoder>,
    count: Option<CountPlan>,
}

enum EventSource {
    Ring(RingBuf<MapData>),
    /// One buffer per online CPU.
    Perf(Vec<aya::maps::perf::PerfEventArrayBuffer<MapData>>),
}

/// Attachments that depend on where the target is (its files, its cgroup): redone when it moves.
enum PerTarget {
    Uprobe {
        prog: String,
        binary: String,
        symbol: String,
        offset: u64,
        ret: bool,
    },
    Usdt {
        prog: String,
        binary: String,
        provider: String,
        name: String,
    },
    CgroupSkb {
        prog: String,
        ty: CgroupSkbAttachType,
    },
}

#[derive(Default)]
struct Attached {
    /// (cgroup dir, pid) the attachments were made for.
    at: Option<(Option<PathBuf>, Option<u32>)>,
    links: Vec<crate::usdt::attach::Link>,
    skb: Vec<(String, CgroupSkbLinkId)>,
    next_spec: u32,
}

pub struct CustomProbe {
    name: &'static str,
    short: String,
    obj: Object,
    btf: Arc<Btf>,
    metrics: Vec<MetricPlan>,
    events: Vec<Arc<EventPlan>>,
    sources: Mutex<Vec<(Arc<EventPlan>, EventSource)>>,
    lost: Arc<AtomicU64>,
    lost_maps: Vec<RawMap>,
    decode: Arc<DecodeCtx>,
    per_target: Vec<PerTarget>,
    uprobe_fds: HashMap<String, ProgramFd>,
    attached: Mutex<Attached>,
    filter_map: bool,
    filter_globals: bool,
    /// The target filter the `const volatile` globals were filled with.
    globals_for: Option<crate::monitored::Filter>,
}

/// What `load` hands back: the probe and the capabilities it needs after attaching.
pub struct Loaded {
    pub probe: Arc<dyn Probe>,
    pub keeps: Vec<caps::Capability>,
}

/// Load one custom probe. `target` is the target as resolved at start (it fills the object's
/// `target_cgroup_id` / `target_pidns_ino` and places per-target attachments).
pub fn load(
    spec: &Spec,
    opts: &Options,
    target: Option<&Resolved>,
) -> Result<Loaded, (String, CustomError)> {
    let mut probe_name = spec.fallback_name();
    let cfg = read_config(&spec.config).map_err(|e| (probe_name.clone(), e))?;
    if let Some(n) = &cfg.name {
        probe_name = n.clone();
    }
    match load_with(spec, &cfg, &probe_name, opts, target, false) {
        Ok(Some(l)) => Ok(l),
        Ok(None) => unreachable!("only a check stops before loading"),
        Err(e) => Err((probe_name, e)),
    }
}

/// Check a custom probe without the kernel: the YAML against the object's BTF (maps, fields,
/// decoders, sizes, names). Returns the probe's name. `ebpf-sidecar custom check`.
pub fn check(spec: &Spec) -> Result<String, (String, CustomError)> {
    let mut probe_name = spec.fallback_name();
    let cfg = read_config(&spec.config).map_err(|e| (probe_name.clone(), e))?;
    if let Some(n) = &cfg.name {
        probe_name = n.clone();
    }
    match load_with(spec, &cfg, &probe_name, &Options::default(), None, true) {
        Ok(_) => Ok(probe_name),
        Err(e) => Err((probe_name, e)),
    }
}

fn load_with(
    spec: &Spec,
    cfg: &Config,
    short: &str,
    opts: &Options,
    target: Option<&Resolved>,
    check_only: bool,
) -> Result<Option<Loaded>, CustomError> {
    let probe = short.to_string();
    let obj_file = spec.object.display().to_string();
    let obj_err = |msg: String| CustomError::Object {
        probe: probe.clone(),
        file: obj_file.clone(),
        msg,
    };
    let cfg_err = |msg: String| CustomError::Config {
        file: spec.config.display().to_string(),
        msg,
    };
    if short.is_empty()
        || !short
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(cfg_err(format!(
            "probe name {short:?} must be letters, digits, _ or - (it names the probe in ebpf_sidecar_probe_up and /events)"
        )));
    }
    let bytes = std::fs::read(&spec.object).map_err(|e| obj_err(format!("cannot read: {e}")))?;
    let btf = Btf::from_elf(&bytes).map_err(|e| obj_err(e.to_string()))?;
    let defs = btf.maps();
    let map_err = |map: &str, msg: String| CustomError::Map {
        probe: probe.clone(),
        map: map.to_string(),
        msg,
    };
    let def = |map: &str| {
        defs.iter().find(|d| d.name == map).ok_or_else(|| {
            let known: Vec<&str> = defs
                .iter()
                .map(|d| d.name.as_str())
                .filter(|n| !n.starts_with("sidecar_") && *n != "usdt_specs")
                .collect();
            map_err(
                map,
                format!(
                    "no such map in the object (its maps: {})",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
    };

    // Validate everything the YAML says against the BTF before touching the kernel.
    let mut names: Vec<String> = Vec::new();
    let mut plan_metric =
        |user: &str, kind: MetricKind, map: &str| -> Result<String, CustomError> {
            let n = config::metric_name(user, kind).map_err(|m| map_err(map, m))?;
            if names.contains(&n) {
                return Err(map_err(map, format!("metric {n} is declared twice")));
            }
            names.push(n.clone());
            Ok(n)
        };
    struct Pending {
        labels: Vec<LabelPlan>,
        values: Vec<ValuePlan>,
        hist: Option<HistPlan>,
        key_size: usize,
        value_size: usize,
        top_n: usize,
    }
    let mut pending = Vec::new();
    for m in &cfg.metrics {
        let d = def(&m.map)?;
        let key_size = d.key.map(|k| btf.size_of(k)).unwrap_or(0);
        let value_size = d.value.map(|v| btf.size_of(v)).unwrap_or(0);
        let Some(value_ty) = d.value else {
            return Err(map_err(
                &m.map,
                "no BTF value type: declare the map with __type(value, …) (not __uint(value_size, …))"
                    .into(),
            ));
        };
        let labels =
            label_plans(&btf, d.key, &m.labels, "key").map_err(|msg| map_err(&m.map, msg))?;
        let mut values = Vec::new();
        let forms = usize::from(m.metric.is_some())
            + usize::from(!m.fields.is_empty())
            + usize::from(m.histogram.is_some());
        if forms == 0 {
            return Err(map_err(
                &m.map,
                "say what to export: `metric:` (a numeric value), `fields:` (a struct value) and/or `histogram:`".into(),
            ));
        }
        if let Some(metric) = &m.metric {
            let scalar = btf.scalar(value_ty).ok_or_else(|| {
                map_err(
                    &m.map,
                    format!(
                        "`metric:` needs a numeric value, the value is {} (use `fields:` to pick struct fields)",
                        btf.describe(value_ty)
                    ),
                )
            })?;
            values.push(ValuePlan {
                metric: plan_metric(metric, m.kind, &m.map)?,
                help: m
                    .help
                    .clone()
                    .unwrap_or_else(|| format!("Map {} of custom probe {short}.", m.map)),
                kind: m.kind,
                offset: 0,
                scalar,
                scale: m.scale,
            });
        }
        for f in &m.fields {
            let field = btf
                .field(value_ty, &f.name)
                .map_err(|e| map_err(&m.map, format!("value field {:?}: {e}", f.name)))?;
            let scalar = btf.scalar(field.ty).ok_or_else(|| {
                map_err(
                    &m.map,
                    format!(
                        "value field {:?} is {}, not a number",
                        f.name,
                        btf.describe(field.ty)
                    ),
                )
            })?;
            values.push(ValuePlan {
                metric: plan_metric(&f.metric, f.kind, &m.map)?,
                help: f.help.clone().unwrap_or_else(|| {
                    format!("Field {} of map {} (custom probe {short}).", f.name, m.map)
                }),
                kind: f.kind,
                offset: field.offset,
                scalar,
                scale: f.scale,
            });
        }
        let hist = match &m.histogram {
            None => None,
            Some(h) => {
                let field = match &h.buckets_field {
                    Some(p) => btf.field(value_ty, p).map_err(|e| {
                        map_err(&m.map, format!("histogram buckets_field {p:?}: {e}"))
                    })?,
                    None => btf::Field {
                        offset: 0,
                        ty: value_ty,
                    },
                };
                let Ty::Array { elem, len } = btf.ty(btf.resolve(field.ty)).clone() else {
                    return Err(map_err(
                        &m.map,
                        format!(
                            "histogram buckets must be an array of counters, found {}",
                            btf.describe(field.ty)
                        ),
                    ));
                };
                let elem_s = btf.scalar(elem).ok_or_else(|| {
                    map_err(&m.map, "histogram bucket elements must be integers".into())
                })?;
                let n = len as usize;
                if n < 2 {
                    return Err(map_err(
                        &m.map,
                        "a histogram needs at least 2 buckets".into(),
                    ));
                }
                if h.buckets == BucketKind::Linear && !h.step.is_some_and(|s| s > 0.0) {
                    return Err(map_err(&m.map, "linear histogram needs `step:` > 0".into()));
                }
                let (les, mids) =
                    bucket_bounds(h.buckets, n, h.min, h.step.unwrap_or(1.0), h.scale);
                let sum = match &h.sum_field {
                    Some(p) => {
                        let f = btf.field(value_ty, p).map_err(|e| {
                            map_err(&m.map, format!("histogram sum_field {p:?}: {e}"))
                        })?;
                        let s = btf.scalar(f.ty).ok_or_else(|| {
                            map_err(&m.map, format!("histogram sum_field {p:?} is not a number"))
                        })?;
                        Some((f.offset, s))
                    }
                    None => None,
                };
                Some(HistPlan {
                    metric: plan_metric(&h.metric, MetricKind::Gauge, &m.map)?,
                    help: h
                        .help
                        .clone()
                        .unwrap_or_else(|| format!("Histogram {} of custom probe {short}.", m.map)),
                    offset: field.offset,
                    elem: elem_s,
                    n,
                    les,
                    mids,
                    sum,
                    scale: h.scale,
                })
            }
        };
        pending.push(Pending {
            labels,
            values,
            hist,
            key_size,
            value_size,
            top_n: m.top_n.unwrap_or(opts.top_n),
        });
    }
    let mut event_plans = Vec::new();
    for e in &cfg.events {
        def(&e.map)?;
        let struct_id = btf
            .struct_by_name(&e.struct_name)
            .map_err(|err| map_err(&e.map, format!("events struct: {err}")))?;
        for path in e.decoders.keys() {
            btf.field(struct_id, path)
                .map_err(|err| map_err(&e.map, format!("decoders: {err}")))?;
        }
        let count = match &e.count {
            None => None,
            Some(c) => Some(CountPlan {
                metric: plan_metric(&c.metric, MetricKind::Counter, &e.map)?,
                help: c
                    .help
                    .clone()
                    .unwrap_or_else(|| format!("Events of {} (custom probe {short}).", e.map)),
                labels: label_plans(&btf, Some(struct_id), &c.labels, "event")
                    .map_err(|msg| map_err(&e.map, msg))?,
                budget: LabelBudget::new(c.top_n.unwrap_or(opts.top_n)),
                counts: Mutex::new(BTreeMap::new()),
            }),
        };
        event_plans.push(EventPlan {
            map_name: e.map.clone(),
            struct_id,
            size: btf.size_of(struct_id),
            decoders: e.decoders.clone(),
            count,
        });
    }
    if cfg.programs.is_empty() {
        return Err(cfg_err("no `programs:`: nothing would run".into()));
    }
    let mut per_target = Vec::new();
    for p in &cfg.programs {
        let need = |what: &Option<String>, key: &str| {
            what.clone().ok_or_else(|| CustomError::Program {
                probe: probe.clone(),
                program: p.name.clone(),
                msg: format!("attach: {:?} needs `{key}:`", p.attach),
            })
        };
        match p.attach {
            AttachKind::Tracepoint | AttachKind::TpBtf | AttachKind::RawTp => {
                need(&p.tracepoint, "tracepoint")?;
            }
            AttachKind::Uprobe | AttachKind::Uretprobe => per_target.push(PerTarget::Uprobe {
                prog: p.name.clone(),
                binary: need(&p.binary, "binary")?,
                symbol: need(&p.symbol, "symbol")?,
                offset: p.offset,
                ret: p.attach == AttachKind::Uretprobe,
            }),
            AttachKind::Usdt => {
                let probe_s = need(&p.probe, "probe")?;
                let (provider, name) =
                    probe_s
                        .split_once(':')
                        .ok_or_else(|| CustomError::Program {
                            probe: probe.clone(),
                            program: p.name.clone(),
                            msg: format!("usdt probe {probe_s:?} is not provider:name"),
                        })?;
                per_target.push(PerTarget::Usdt {
                    prog: p.name.clone(),
                    binary: need(&p.binary, "binary")?,
                    provider: provider.into(),
                    name: name.into(),
                })
            }
            AttachKind::CgroupSkb => {
                let ty = match p.direction.as_deref() {
                    Some("ingress") => CgroupSkbAttachType::Ingress,
                    Some("egress") => CgroupSkbAttachType::Egress,
                    other => {
                        return Err(CustomError::Program {
                            probe: probe.clone(),
                            program: p.name.clone(),
                            msg: format!(
                                "cgroup_skb needs `direction: ingress|egress`, got {other:?}"
                            ),
                        });
                    }
                };
                per_target.push(PerTarget::CgroupSkb {
                    prog: p.name.clone(),
                    ty,
                });
            }
            AttachKind::PerfEvent => {}
        }
    }

    // The target filter: the object's `const volatile` globals, filled now, and/or the
    // `sidecar_target` map of sidecar.bpf.h, rewritten whenever the target moves.
    let mut globals: Vec<(&str, Vec<u8>)> = Vec::new();
    for (var, value) in [
        ("target_cgroup_id", target.and_then(|t| t.cgroup_id())),
        (
            "target_pidns_ino",
            target.and_then(|t| match t.filter {
                crate::monitored::Filter::PidNs { ino, .. } => Some(ino),
                _ => t.pid_ns,
            }),
        ),
    ] {
        if let Some(size) = btf.has_var(var) {
            if size != 8 {
                return Err(obj_err(format!(
                    "global {var} is {size} bytes; declare it `const volatile __u64 {var} = 0;`"
                )));
            }
            if value.is_none() {
                tracing::warn!(probe = short, "{var}: the target is not known yet; left 0");
            }
            globals.push((var, value.unwrap_or(0).to_ne_bytes().to_vec()));
        }
    }
    let filter_map = defs.iter().any(|d| d.name == sidecar_ebpf::TARGET_MAP);
    let filter_globals = !globals.is_empty();
    if check_only {
        return Ok(None);
    }
    if !filter_map && !filter_globals {
        tracing::warn!(
            probe = short,
            "the object neither uses sidecar_in_target() (sidecar.bpf.h) nor declares target_cgroup_id: it sees the whole host"
        );
    }
    let name = leak(format!("custom:{short}"));
    let gl: Vec<(&str, &[u8])> = globals.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let mut obj = Object::load_with(name, &bytes, &gl)?;

    let mut uprobe_fds = HashMap::new();
    for p in &cfg.programs {
        let tp = p.tracepoint.clone().unwrap_or_default();
        let perr = |msg: String| CustomError::Program {
            probe: probe.clone(),
            program: p.name.clone(),
            msg,
        };
        match p.attach {
            AttachKind::Tracepoint => {
                let (cat, ev) = tp
                    .split_once([':', '/'])
                    .ok_or_else(|| perr(format!("tracepoint {tp:?} is not category:name")))?;
                obj.attach_tracepoint(&p.name, cat, ev)?;
            }
            AttachKind::TpBtf => obj.attach_tp_btf(&p.name, &tp)?,
            AttachKind::RawTp => obj.attach_raw_tp(&p.name, &tp)?,
            AttachKind::Uprobe | AttachKind::Uretprobe | AttachKind::Usdt => {
                if !uprobe_fds.contains_key(&p.name) {
                    let fd = obj.load_uprobe(&p.name)?;
                    uprobe_fds.insert(p.name.clone(), fd);
                }
            }
            AttachKind::CgroupSkb => obj.load_cgroup_skb(&p.name)?,
            AttachKind::PerfEvent => {
                obj.attach_perf_event(&p.name, p.frequency.unwrap_or(49))?;
            }
        }
    }

    let mut metrics = Vec::new();
    let mut sources = Vec::new();
    let mut lost_maps = Vec::new();
    {
        let mut ebpf = obj.lock();
        let mut take = |map: &str| -> Result<MapData, CustomError> {
            let m = ebpf.take_map(map).ok_or_else(|| {
                map_err(
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
                    return Err(map_err(
                        map,
                        format!(
                            "map type {ty} is not supported (hash, array, their per-CPU and LRU kinds; ring buffer, perf event array for events)"
                        ),
                    ));
                }
            })
        };
        for (m, p) in cfg.metrics.iter().zip(pending) {
            let raw = RawMap::new(take(&m.map)?).map_err(|e| map_err(&m.map, e.to_string()))?;
            if matches!(
                raw.map_type,
                rawmap::BPF_MAP_TYPE_RINGBUF | rawmap::BPF_MAP_TYPE_PERF_EVENT_ARRAY
            ) {
                return Err(map_err(
                    &m.map,
                    "is a ring buffer/perf event array: list it under `events:`, not `metrics:`"
                        .into(),
                ));
            }
            if p.key_size != 0 && raw.key_size != p.key_size {
                return Err(map_err(
                    &m.map,
                    format!(
                        "key is {} bytes in the kernel but {} bytes in BTF",
                        raw.key_size, p.key_size
                    ),
                ));
            }
            if raw.value_size != p.value_size {
                return Err(map_err(
                    &m.map,
                    format!(
                        "value is {} bytes in the kernel but {} bytes in BTF",
                        raw.value_size, p.value_size
                    ),
                ));
            }
            if let Some(l) = p.labels.iter().find(|l| l.offset + l.len > raw.key_size) {
                return Err(map_err(
                    &m.map,
                    format!(
                        "label {} reads bytes {}..{} of a {}-byte key",
                        l.name,
                        l.offset,
                        l.offset + l.len,
                        raw.key_size
                    ),
                ));
            }
            metrics.push(MetricPlan {
                map_name: m.map.clone(),
                map: raw,
                labels: p.labels,
                values: p.values,
                hist: p.hist,
                budget: LabelBudget::new(p.top_n),
            });
        }
        for (e, plan) in cfg.events.iter().zip(event_plans) {
            let data = take(&e.map)?;
            let info = data
                .info()
                .map_err(|err| map_err(&e.map, err.to_string()))?;
            let ty = info.map_type().map(|t| t as u32).unwrap_or(0);
            let src = match ty {
                rawmap::BPF_MAP_TYPE_RINGBUF => EventSource::Ring(
                    RingBuf::try_from(Map::RingBuf(data))
                        .map_err(|err| map_err(&e.map, err.to_string()))?,
                ),
                rawmap::BPF_MAP_TYPE_PERF_EVENT_ARRAY => {
                    let mut arr = PerfEventArray::try_from(Map::PerfEventArray(data))
                        .map_err(|err| map_err(&e.map, err.to_string()))?;
                    // perf_event_open needs CAP_PERFMON: open every CPU's buffer now, before
                    // the capabilities are dropped.
                    let cpus = aya::util::online_cpus()
                        .map_err(|(what, err)| map_err(&e.map, format!("{what}: {err}")))?;
                    let mut bufs = Vec::new();
                    for cpu in cpus {
                        bufs.push(arr.open(cpu, Some(64)).map_err(|err| {
                            map_err(
                                &e.map,
                                format!("opening the perf buffer of CPU {cpu}: {err}"),
                            )
                        })?);
                    }
                    EventSource::Perf(bufs)
                }
                _ => {
                    return Err(map_err(
                        &e.map,
                        "events need a ring buffer (BPF_MAP_TYPE_RINGBUF) or a perf event array"
                            .into(),
                    ));
                }
            };
            sources.push((Arc::new(plan), src));
            if let Some(lm) = &e.lost_counter {
                let raw = RawMap::new(take(lm)?).map_err(|err| map_err(lm, err.to_string()))?;
                if raw.value_size != 8 {
                    return Err(map_err(
                        lm,
                        format!(
                            "lost_counter must hold __u64 values, not {} bytes",
                            raw.value_size
                        ),
                    ));
                }
                lost_maps.push(raw);
            }
        }
    }
    let needs_kallsyms = cfg
        .metrics
        .iter()
        .flat_map(|m| m.labels.iter())
        .chain(
            cfg.events
                .iter()
                .filter_map(|e| e.count.as_ref())
                .flat_map(|c| c.labels.iter()),
        )
        .any(|l| l.decoder == Decoder::Ksym)
        || cfg
            .events
            .iter()
            .any(|e| e.decoders.values().any(|d| *d == Decoder::Ksym));
    // Per-target attachments are made again when the target restarts, after the capability
    // drop: keep what they need (a capability the sidecar never had is not kept).
    let mut keeps = Vec::new();
    if per_target
        .iter()
        .any(|p| matches!(p, PerTarget::CgroupSkb { .. }))
    {
        keeps.push(caps::Capability::CAP_NET_ADMIN);
    }
    if per_target
        .iter()
        .any(|p| matches!(p, PerTarget::Uprobe { .. } | PerTarget::Usdt { .. }))
    {
        // perf_event_open of a uprobe, BPF_LINK_CREATE, and the target's files through
        // /proc/<pid>/root (ptrace read access).
        keeps.extend([
            caps::Capability::CAP_PERFMON,
            caps::Capability::CAP_BPF,
            caps::Capability::CAP_SYS_PTRACE,
        ]);
    }
    let probe = CustomProbe {
        name,
        short: short.to_string(),
        obj,
        btf: Arc::new(btf),
        metrics,
        events: sources.iter().map(|(p, _)| p.clone()).collect(),
        sources: Mutex::new(sources),
        lost: Arc::new(AtomicU64::new(0)),
        lost_maps,
        decode: Arc::new(DecodeCtx::new(needs_kallsyms)),
        per_target,
        uprobe_fds,
        attached: Mutex::new(Attached::default()),
        filter_map,
        filter_globals,
        globals_for: target.map(|t| t.filter),
    };
    // Attachments in the target's files and cgroup: a failure here is this probe's failure.
    // A target not running yet gets them when it appears (on_target).
    if target.is_some() {
        probe
            .attach_per_target(target)
            .map_err(|(program, msg)| CustomError::Program {
                probe: short.to_string(),
                program,
                msg,
            })?;
    }
    Ok(Some(Loaded {
        probe: Arc::new(probe),
        keeps,
    }))
}

/// `v × scale`, computed as a division when the scale is 1/N (1e-9: ns → s), so that 333104 ns
/// prints as 0.000333104 and not 0.00033310400000000003.
fn scaled(v: f64, scale: f64) -> f64 {
    let inv = (1.0 / scale).round();
    if scale != 1.0 && inv >= 1.0 && ((1.0 / inv) - scale).abs() <= scale.abs() * 1e-12 {
        v / inv
    } else {
        v * scale
    }
}

/// Upper bounds and midpoints (both scaled) of `n` kernel buckets. Log2: bucket i holds
/// [2^i, 2^(i+1)), bucket 0 also 0. Linear: [min + i·step, min + (i+1)·step).
fn bucket_bounds(
    kind: BucketKind,
    n: usize,
    min: f64,
    step: f64,
    scale: f64,
) -> (Vec<f64>, Vec<f64>) {
    (0..n)
        .map(|i| {
            let (lo, hi) = match kind {
                BucketKind::Log2 => {
                    let hi = 2f64.powi(i as i32 + 1);
                    (if i == 0 { 0.0 } else { hi / 2.0 }, hi)
                }
                BucketKind::Linear => (min + i as f64 * step, min + (i + 1) as f64 * step),
            };
            (hi * scale, (lo + hi) / 2.0 * scale)
        })
        .unzip()
}

/// Plans for labels read from a key (or event) of BTF type `ty`.
fn label_plans(
    btf: &Btf,
    ty: Option<u32>,
    labels: &[LabelCfg],
    what: &str,
) -> Result<Vec<LabelPlan>, String> {
    let mut out = Vec::new();
    for l in labels {
        config::label_name(&l.name)?;
        if out.iter().any(|p: &LabelPlan| p.name == l.name) {
            return Err(format!("label {} is declared twice", l.name));
        }
        let Some(ty) = ty else {
            return Err(format!(
                "no BTF {what} type: declare the map with __type({what}, …)"
            ));
        };
        let field = match &l.field {
            Some(p) => btf
                .field(ty, p)
                .map_err(|e| format!("label {}: {what} field {p:?}: {e}", l.name))?,
            None => btf::Field { offset: 0, ty },
        };
        let len = btf.size_of(field.ty);
        let scalar = btf.scalar(field.ty);
        let shown = l.field.as_deref().unwrap_or(what);
        let want = |ok: bool, expected: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "label {}: decoder {} expects {expected}, but {shown} is {} ({len} bytes)",
                    l.name,
                    l.decoder,
                    btf.describe(field.ty)
                ))
            }
        };
        match l.decoder {
            Decoder::Ipv4 => want(len == 4, "4 bytes (__be32)")?,
            Decoder::Ipv6 => want(len == 16, "16 bytes")?,
            Decoder::Port | Decoder::PortHost => want(len == 2, "2 bytes (__u16/__be16)")?,
            Decoder::String => want(btf.is_char_array(field.ty), "a char array")?,
            _ => want(
                scalar.is_some_and(|s| s.size() <= 8),
                "an integer of at most 8 bytes",
            )?,
        }
        out.push(LabelPlan {
            name: leak(l.name.clone()),
            offset: field.offset,
            len,
            scalar,
            decoder: l.decoder,
        });
    }
    Ok(out)
}

/// A path inside the target (`/usr/bin/app`) as the sidecar reaches it.
fn host_path(binary: &str, pid: Option<u32>) -> PathBuf {
    if let (Some(pid), true) = (pid, binary.starts_with('/')) {
        let p = crate::usdt::procs::proc_root_path(pid, binary);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(binary)
}

impl CustomProbe {
    /// (Re)make the attachments that depend on the target. Errors name the program.
    fn attach_per_target(&self, target: Option<&Resolved>) -> Result<(), (String, String)> {
        if self.per_target.is_empty() {
            return Ok(());
        }
        let at = target.map(|t| (t.cgroup_dir.clone(), t.pid));
        let mut st = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        if st.at.is_some() && st.at == at {
            return Ok(());
        }
        st.links.clear();
        for (prog, link) in std::mem::take(&mut st.skb) {
            let _ = self.obj.detach_cgroup_skb(&prog, link);
        }
        st.at = at;
        let pid = target.and_then(|t| t.pid);
        for p in &self.per_target {
            match p {
                PerTarget::Uprobe {
                    prog,
                    binary,
                    symbol,
                    offset,
                    ret,
                } => {
                    let path = host_path(binary, pid);
                    let e = |m: String| (prog.clone(), m);
                    let data = crate::usdt::read_file(&path).map_err(|x| e(x.to_string()))?;
                    let off = crate::usdt::symbol_offset(&data, symbol)
                        .map_err(|x| e(format!("{}: {x}", path.display())))?;
                    let fd = &self.uprobe_fds[prog];
                    let link = crate::usdt::attach::attach_uprobe(
                        -1,
                        fd.as_fd(),
                        &path,
                        off + offset,
                        0,
                        *ret,
                        0,
                    )
                    .map_err(|x| e(format!("{}:{symbol}: {x}", path.display())))?;
                    st.links.push(link);
                }
                PerTarget::Usdt {
                    prog,
                    binary,
                    provider,
                    name,
                } => {
                    let path = host_path(binary, pid);
                    let e = |m: String| (prog.clone(), m);
                    let data = crate::usdt::read_file(&path).map_err(|x| e(x.to_string()))?;
                    let sites: Vec<_> = crate::usdt::probes(&data)
                        .map_err(|x| e(format!("{}: {x}", path.display())))?
                        .into_iter()
                        .filter(|s| s.provider == *provider && s.name == *name)
                        .collect();
                    if sites.is_empty() {
                        return Err(e(format!(
                            "no USDT probe {provider}:{name} in {} (see `ebpf-sidecar usdt list --binary`)",
                            path.display()
                        )));
                    }
                    for s in sites {
                        let id = st.next_spec;
                        st.next_spec += 1;
                        self.write_usdt_spec(id, &s).map_err(e)?;
                        let fd = &self.uprobe_fds[prog];
                        let link = crate::usdt::attach::attach_uprobe(
                            -1,
                            fd.as_fd(),
                            &path,
                            s.offset,
                            s.semaphore_offset,
                            false,
                            u64::from(id),
                        )
                        .map_err(|x| e(format!("{provider}:{name} at {:#x}: {x}", s.offset)))?;
                        st.links.push(link);
                    }
                }
                PerTarget::CgroupSkb { prog, ty } => {
                    let Some(dir) = target.and_then(|t| t.cgroup_dir.clone()) else {
                        return Err((
                            prog.clone(),
                            "cgroup_skb needs the target's cgroup v2 directory (no cgroup2 mount, or the target is not running)".into(),
                        ));
                    };
                    let fd = std::fs::File::open(&dir)
                        .map_err(|x| (prog.clone(), format!("{}: {x}", dir.display())))?;
                    let link = self
                        .obj
                        .attach_cgroup_skb(prog, &fd, *ty)
                        .map_err(|x| (prog.clone(), x.to_string()))?;
                    st.skb.push((prog.clone(), link));
                }
            }
        }
        Ok(())
    }

    /// USDT argument specs for objects that include usdt.bpf.h (its `usdt_specs` map).
    fn write_usdt_spec(&self, id: u32, site: &crate::usdt::UsdtProbe) -> Result<(), String> {
        let mut ebpf = self.obj.lock();
        let Some(map) = ebpf.map_mut("usdt_specs") else {
            return Ok(());
        };
        let mut arr: Array<_, sidecar_ebpf::UsdtSpec> =
            Array::try_from(map).map_err(|e| format!("usdt_specs: {e}"))?;
        let mut spec = sidecar_ebpf::UsdtSpec::default();
        if let Ok(args) = &site.args {
            for (i, a) in args.iter().take(sidecar_ebpf::USDT_MAX_ARGS).enumerate() {
                spec.args[i] = a.to_kernel();
            }
            spec.arg_cnt = args.len().min(sidecar_ebpf::USDT_MAX_ARGS) as u32;
        }
        arr.set(id, spec, 0)
            .map_err(|e| format!("usdt_specs[{id}]: {e}"))
    }

    fn encode_map(&self, m: &MetricPlan, enc: &mut DescriptorEncoder) -> fmt::Result {
        let dump = match m.map.dump() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(probe = self.name, map = m.map_name, "reading the map: {e}");
                return Ok(());
            }
        };
        let (ks, stride) = (m.map.key_size, m.map.stride());
        let slot = m.map.value_size.next_multiple_of(8);
        let hn = m.hist.as_ref().map(|h| h.n).unwrap_or(0);
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::with_capacity(dump.count);
        for i in 0..dump.count {
            let key = &dump.keys[i * ks..(i + 1) * ks];
            let val = &dump.values[i * stride..(i + 1) * stride];
            let labels: Labels = m
                .labels
                .iter()
                .map(|l| {
                    let v =
                        self.decode
                            .label(l.decoder, &key[l.offset..l.offset + l.len], l.scalar);
                    (l.name, v)
                })
                .collect();
            // Several keys may decode to the same labels (e.g. two cgroups of one path): one
            // series, summed.
            let composite = match labels.as_slice() {
                [] => String::new(),
                [(_, v)] => v.clone(),
                many => many
                    .iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join("\u{1f}"),
            };
            let gi = match index.get(&composite) {
                Some(gi) => *gi,
                None => {
                    groups.push(Group::new(composite.clone(), labels, m.values.len(), hn));
                    index.insert(composite, groups.len() - 1);
                    groups.len() - 1
                }
            };
            let g = &mut groups[gi];
            // Per-CPU maps: one slot per CPU, summed.
            for cpu in 0..m.map.cpus {
                let v = if m.map.cpus > 1 {
                    &val[cpu * slot..]
                } else {
                    val
                };
                for (j, p) in m.values.iter().enumerate() {
                    g.values[j] += p.scalar.read_f64(v, p.offset);
                }
                if let Some(h) = &m.hist {
                    let es = h.elem.size();
                    for b in 0..h.n {
                        g.hist[b] += h.elem.read_u64(v, h.offset + b * es);
                    }
                    if let Some((off, s)) = h.sum {
                        g.hist_sum += scaled(s.read_f64(v, off), h.scale);
                    }
                }
            }
            g.weight = match g.values.first() {
                Some(v) => *v,
                None => g.hist.iter().sum::<u64>() as f64,
            };
        }
        drop(index);
        // Bounded cardinality: the biggest series keep their labels, the rest sum into `other`.
        let keep = if m.labels.is_empty() || groups.len() <= m.budget.max() {
            // Everything fits: no need to rank.
            m.budget.admit_all(groups.iter().map(|g| g.key.as_str()))
        } else {
            let mut order: Vec<usize> = (0..groups.len()).collect();
            order.sort_unstable_by(|a, b| {
                groups[*b]
                    .weight
                    .total_cmp(&groups[*a].weight)
                    .then_with(|| groups[*a].key.cmp(&groups[*b].key))
            });
            let ranked = m
                .budget
                .admit_all(order.iter().map(|i| groups[*i].key.as_str()));
            let mut keep = vec![false; groups.len()];
            for (i, k) in order.into_iter().zip(ranked) {
                keep[i] = k;
            }
            keep
        };
        let mut kept: Vec<&Group> = Vec::with_capacity(groups.len());
        let mut other: Option<Group> = None;
        for (g, k) in groups.iter().zip(keep) {
            if k || m.labels.is_empty() {
                kept.push(g);
                continue;
            }
            let o = other.get_or_insert_with(|| {
                let labels = m
                    .labels
                    .iter()
                    .map(|l| (l.name, OTHER.to_string()))
                    .collect();
                Group::new(String::new(), labels, m.values.len(), hn)
            });
            for (a, b) in o.values.iter_mut().zip(&g.values) {
                *a += b;
            }
            for (a, b) in o.hist.iter_mut().zip(&g.hist) {
                *a += b;
            }
            o.hist_sum += g.hist_sum;
        }
        kept.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        if let Some(o) = &other {
            kept.push(o);
        }
        for (j, p) in m.values.iter().enumerate() {
            let ty = match p.kind {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Gauge => MetricType::Gauge,
            };
            let mut d = enc.encode_descriptor(&p.metric, &p.help, None, ty)?;
            for g in &kept {
                let v = scaled(g.values[j], p.scale);
                let mut f = d.encode_family(&g.labels)?;
                match p.kind {
                    MetricKind::Counter => f.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
                    MetricKind::Gauge => f.encode_gauge(&v)?,
                }
            }
        }
        if let Some(h) = &m.hist {
            let mut d = enc.encode_descriptor(&h.metric, &h.help, None, MetricType::Histogram)?;
            for g in &kept {
                let count: u64 = g.hist.iter().sum();
                let sum = if h.sum.is_some() {
                    g.hist_sum
                } else {
                    g.hist.iter().zip(&h.mids).map(|(c, m)| *c as f64 * m).sum()
                };
                let mut buckets: Vec<(f64, u64)> =
                    (0..h.n - 1).map(|b| (h.les[b], g.hist[b])).collect();
                buckets.push((f64::INFINITY, g.hist[h.n - 1]));
                d.encode_family(&g.labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

/// One series of a metrics map: the entries whose keys decode to the same labels.
struct Group {
    key: String,
    labels: Labels,
    values: Vec<f64>,
    hist: Vec<u64>,
    hist_sum: f64,
    weight: f64,
}

impl Group {
    fn new(key: String, labels: Labels, values: usize, buckets: usize) -> Self {
        Self {
            key,
            labels,
            values: vec![0.0; values],
            hist: vec![0; buckets],
            hist_sum: 0.0,
            weight: 0.0,
        }
    }
}

impl Probe for CustomProbe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn on_target(&self, target: Option<&Resolved>) -> Result<(), ProbeError> {
        *self
            .decode
            .target_pid
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = target.and_then(|t| t.pid);
        if self.filter_map {
            if let Err(e) = self.obj.set_target(target.map(|t| &t.filter)) {
                tracing::error!(probe = self.name, "setting the target filter: {e}");
            }
        } else if self.filter_globals
            && let Some(t) = target
            && self.globals_for != Some(t.filter)
        {
            tracing::warn!(
                probe = self.name,
                "the target moved, but target_cgroup_id/target_pidns_ino were fixed at load: use sidecar_in_target() (sidecar.bpf.h) to follow restarts"
            );
        }
        // A broken user probe must not stop the sidecar: attach failures after start are logged.
        if let Some(t) = target
            && let Err((program, msg)) = self.attach_per_target(Some(t))
        {
            tracing::error!(probe = self.name, program, "re-attaching: {msg}");
        }
        Ok(())
    }

    fn encode(&self, _ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        for m in &self.metrics {
            self.encode_map(m, enc)?;
        }
        for e in &self.events {
            let Some(c) = &e.count else { continue };
            let counts = c.counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
            crate::metrics::counter(
                enc,
                &c.metric,
                &c.help,
                counts.into_iter().map(|(vals, n)| {
                    let l: Labels = c.labels.iter().map(|l| l.name).zip(vals).collect();
                    (l, n)
                }),
            )?;
        }
        Ok(())
    }

    fn lost_events(&self) -> u64 {
        let in_kernel: u64 = self
            .lost_maps
            .iter()
            .filter_map(|m| m.dump().ok())
            .map(|d| {
                d.values
                    .chunks(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .sum::<u64>()
            })
            .sum();
        self.lost.load(Ordering::Relaxed) + in_kernel
    }

    fn start_events(&self, sink: EventSink) -> Result<(), ProbeError> {
        let sources = std::mem::take(&mut *self.sources.lock().unwrap_or_else(|p| p.into_inner()));
        for (plan, src) in sources {
            let reader = Reader {
                kind: self.short.clone(),
                plan,
                btf: self.btf.clone(),
                decode: self.decode.clone(),
                lost: self.lost.clone(),
                sink: sink.clone(),
            };
            let map = reader.plan.map_name.clone();
            std::thread::Builder::new()
                .name(format!("custom-{}", self.short))
                .spawn(move || reader.run(src))
                .map_err(|e| ProbeError::Map {
                    family: self.name,
                    map,
                    detail: format!("starting the event reader: {e}"),
                })?;
        }
        Ok(())
    }
}

struct Reader {
    kind: String,
    plan: Arc<EventPlan>,
    btf: Arc<Btf>,
    decode: Arc<DecodeCtx>,
    lost: Arc<AtomicU64>,
    sink: EventSink,
}

impl Reader {
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

/// Write the headers a custom probe includes into `dir`; returns the files written.
pub fn write_headers(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    use sidecar_ebpf::headers as h;
    use std::io::Read;
    std::fs::create_dir_all(dir)?;
    let mut vmlinux = Vec::new();
    flate2::read::GzDecoder::new(h::VMLINUX_H_GZ).read_to_end(&mut vmlinux)?;
    let files: [(&str, &[u8]); 4] = [
        ("vmlinux.h", &vmlinux),
        ("sidecar.bpf.h", h::SIDECAR_BPF_H.as_bytes()),
        ("sidecar.h", h::SIDECAR_H.as_bytes()),
        ("usdt.bpf.h", h::USDT_BPF_H.as_bytes()),
    ];
    let mut out = Vec::new();
    for (name, data) in files {
        let p = dir.join(name);
        std::fs::write(&p, data)?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let (les, mids) = bucket_bounds(BucketKind::Log2, 4, 0.0, 1.0, 1e-9);
        assert_eq!(les, vec![2e-9, 4e-9, 8e-9, 16e-9]);
        assert_eq!(mids[0], 1e-9);
        assert!((mids[2] - 6e-9).abs() < 1e-20);
        let (les, mids) = bucket_bounds(BucketKind::Linear, 3, 100.0, 10.0, 1.0);
        assert_eq!(les, vec![110.0, 120.0, 130.0]);
        assert_eq!(mids, vec![105.0, 115.0, 125.0]);
    }

    #[test]
    fn scales() {
        assert_eq!(scaled(333104.0, 1e-9).to_string(), "0.000333104");
        assert_eq!(scaled(3.0, 2.0), 6.0);
        assert_eq!(scaled(5.0, 1.0), 5.0);
        assert_eq!(scaled(1500.0, 1e-3), 1.5);
    }

    #[test]
    fn probe_name_falls_back_to_the_file() {
        let s = Spec {
            object: "a.bpf.o".into(),
            config: "/x/tcp-lat.yaml".into(),
        };
        assert_eq!(s.fallback_name(), "tcp-lat");
    }
}
