//! The `metrics:` of a custom probe's YAML checked against the object's BTF, before anything
//! touches the kernel: which bytes of each key become which label, which value fields which
//! metric, and each metric's exposed name, help and type (built here, once).

use super::btf::{self, Btf, MapDef, Scalar, Ty};
use super::config::{self, BucketKind, Decoder, HistogramCfg, LabelCfg, MetricCfg, MetricKind};
use super::encode::UserMetric;
use super::{Ctx, CustomError, leak};
use crate::metrics::Type;

/// Where a label's bytes are in a key (or event) and how they read.
pub(super) struct LabelPlan {
    pub name: &'static str,
    pub offset: usize,
    pub len: usize,
    pub scalar: Option<Scalar>,
    pub decoder: Decoder,
}

/// One numeric value (the whole value, or a field of it) as a counter or gauge.
pub(super) struct ValuePlan {
    pub metric: UserMetric,
    pub offset: usize,
    pub scalar: Scalar,
    pub scale: f64,
}

/// An array of bucket counts in the value as a histogram.
pub(super) struct HistPlan {
    pub metric: UserMetric,
    pub offset: usize,
    pub elem: Scalar,
    pub n: usize,
    /// Upper bound of buckets 0..n-1, already scaled (the last bucket is +Inf: kernels clamp).
    pub les: Vec<f64>,
    /// A representative value per bucket, scaled, for `_sum` when no sum field is given.
    pub mids: Vec<f64>,
    pub sum: Option<(usize, Scalar)>,
    pub scale: f64,
}

/// A `metrics:` entry checked against BTF, waiting for its map to be opened.
pub(super) struct Pending {
    pub labels: Vec<LabelPlan>,
    pub values: Vec<ValuePlan>,
    pub hist: Option<HistPlan>,
    pub key_size: usize,
    pub value_size: usize,
    pub top_n: usize,
}

/// The exposed names of one probe's metrics so far: a name may be declared once.
#[derive(Default)]
pub(super) struct Names(Vec<String>);

impl Names {
    /// The exposed name of the user's `user` (`ebpf_sidecar_` added), checked and recorded.
    pub fn add(
        &mut self,
        ctx: &Ctx,
        user: &str,
        kind: MetricKind,
        map: &str,
    ) -> Result<String, CustomError> {
        let n = config::metric_name(user, kind).map_err(|m| ctx.map(map, m))?;
        if self.0.contains(&n) {
            return Err(ctx.map(map, format!("metric {n} is declared twice")));
        }
        self.0.push(n.clone());
        Ok(n)
    }
}

/// The map `map` as the object declares it; the error lists the maps a user may mean.
pub(super) fn find_def<'a>(
    ctx: &Ctx,
    defs: &'a [MapDef],
    map: &str,
) -> Result<&'a MapDef, CustomError> {
    defs.iter().find(|d| d.name == map).ok_or_else(|| {
        let known: Vec<&str> = defs
            .iter()
            .map(|d| d.name.as_str())
            .filter(|n| !n.starts_with("sidecar_") && *n != "usdt_specs")
            .collect();
        ctx.map(
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
}

fn labels_of(labels: &[LabelPlan]) -> Vec<&'static str> {
    labels.iter().map(|l| l.name).collect()
}

fn kind_of(k: MetricKind) -> Type {
    match k {
        MetricKind::Counter => Type::Counter,
        MetricKind::Gauge => Type::Gauge,
    }
}

/// Plan one `metrics:` entry (its map declared as `d`).
pub(super) fn metric(
    ctx: &Ctx,
    btf: &Btf,
    d: &MapDef,
    m: &MetricCfg,
    top_n: usize,
    names: &mut Names,
) -> Result<Pending, CustomError> {
    let short = ctx.probe.as_str();
    let key_size = d.key.map(|k| btf.size_of(k)).unwrap_or(0);
    let value_size = d.value.map(|v| btf.size_of(v)).unwrap_or(0);
    let Some(value_ty) = d.value else {
        return Err(ctx.map(
            &m.map,
            "no BTF value type: declare the map with __type(value, …) (not __uint(value_size, …))"
                .into(),
        ));
    };
    let labels = label_plans(btf, d.key, &m.labels, "key").map_err(|msg| ctx.map(&m.map, msg))?;
    let mut values = Vec::new();
    let forms = usize::from(m.metric.is_some())
        + usize::from(!m.fields.is_empty())
        + usize::from(m.histogram.is_some());
    if forms == 0 {
        return Err(ctx.map(
            &m.map,
            "say what to export: `metric:` (a numeric value), `fields:` (a struct value) and/or `histogram:`".into(),
        ));
    }
    if let Some(metric) = &m.metric {
        let scalar = btf.scalar(value_ty).ok_or_else(|| {
            ctx.map(
                &m.map,
                format!(
                    "`metric:` needs a numeric value, the value is {} (use `fields:` to pick struct fields)",
                    btf.describe(value_ty)
                ),
            )
        })?;
        values.push(ValuePlan {
            metric: UserMetric {
                name: names.add(ctx, metric, m.kind, &m.map)?,
                help: m
                    .help
                    .clone()
                    .unwrap_or_else(|| format!("Map {} of custom probe {short}.", m.map)),
                kind: kind_of(m.kind),
                labels: labels_of(&labels),
            },
            offset: 0,
            scalar,
            scale: m.scale,
        });
    }
    for f in &m.fields {
        let field = btf
            .field(value_ty, &f.name)
            .map_err(|e| ctx.map(&m.map, format!("value field {:?}: {e}", f.name)))?;
        let scalar = btf.scalar(field.ty).ok_or_else(|| {
            ctx.map(
                &m.map,
                format!(
                    "value field {:?} is {}, not a number",
                    f.name,
                    btf.describe(field.ty)
                ),
            )
        })?;
        values.push(ValuePlan {
            metric: UserMetric {
                name: names.add(ctx, &f.metric, f.kind, &m.map)?,
                help: f.help.clone().unwrap_or_else(|| {
                    format!("Field {} of map {} (custom probe {short}).", f.name, m.map)
                }),
                kind: kind_of(f.kind),
                labels: labels_of(&labels),
            },
            offset: field.offset,
            scalar,
            scale: f.scale,
        });
    }
    let hist = match &m.histogram {
        None => None,
        Some(h) => Some(histogram(ctx, btf, value_ty, m, h, &labels, names)?),
    };
    Ok(Pending {
        labels,
        values,
        hist,
        key_size,
        value_size,
        top_n: m.top_n.unwrap_or(top_n),
    })
}

/// Plan the `histogram:` of the entry `m`, whose value has BTF type `value_ty`.
fn histogram(
    ctx: &Ctx,
    btf: &Btf,
    value_ty: u32,
    m: &MetricCfg,
    h: &HistogramCfg,
    labels: &[LabelPlan],
    names: &mut Names,
) -> Result<HistPlan, CustomError> {
    let field = match &h.buckets_field {
        Some(p) => btf
            .field(value_ty, p)
            .map_err(|e| ctx.map(&m.map, format!("histogram buckets_field {p:?}: {e}")))?,
        None => btf::Field {
            offset: 0,
            ty: value_ty,
        },
    };
    let Ty::Array { elem, len } = btf.ty(btf.resolve(field.ty)).clone() else {
        return Err(ctx.map(
            &m.map,
            format!(
                "histogram buckets must be an array of counters, found {}",
                btf.describe(field.ty)
            ),
        ));
    };
    let elem_s = btf
        .scalar(elem)
        .ok_or_else(|| ctx.map(&m.map, "histogram bucket elements must be integers".into()))?;
    let n = len as usize;
    if n < 2 {
        return Err(ctx.map(&m.map, "a histogram needs at least 2 buckets".into()));
    }
    if h.buckets == BucketKind::Linear && !h.step.is_some_and(|s| s > 0.0) {
        return Err(ctx.map(&m.map, "linear histogram needs `step:` > 0".into()));
    }
    let (les, mids) = bucket_bounds(h.buckets, n, h.min, h.step.unwrap_or(1.0), h.scale);
    let sum = match &h.sum_field {
        Some(p) => {
            let f = btf
                .field(value_ty, p)
                .map_err(|e| ctx.map(&m.map, format!("histogram sum_field {p:?}: {e}")))?;
            let s = btf.scalar(f.ty).ok_or_else(|| {
                ctx.map(&m.map, format!("histogram sum_field {p:?} is not a number"))
            })?;
            Some((f.offset, s))
        }
        None => None,
    };
    Ok(HistPlan {
        metric: UserMetric {
            name: names.add(ctx, &h.metric, MetricKind::Gauge, &m.map)?,
            help: h
                .help
                .clone()
                .unwrap_or_else(|| format!("Histogram {} of custom probe {}.", m.map, ctx.probe)),
            kind: Type::Histogram,
            labels: labels_of(labels),
        },
        offset: field.offset,
        elem: elem_s,
        n,
        les,
        mids,
        sum,
        scale: h.scale,
    })
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
pub(super) fn label_plans(
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
}
