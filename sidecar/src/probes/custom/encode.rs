//! A custom probe's maps read at scrape time and written as the metrics its YAML declares:
//! entries grouped by their decoded labels, per-CPU slots summed, the biggest series kept under
//! the label budget and the rest summed into one `other` series.

use std::collections::HashMap;
use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::decode::DecodeCtx;
use super::events::CountPlan;
use super::plan::{HistPlan, LabelPlan, ValuePlan};
use super::rawmap::{Dump, RawMap};
use crate::metrics::{self, LabelBudget, Labels, OTHER, Type};

/// A metric of the user's YAML as exposed. Its name, help and labels come from the YAML, so it
/// is not in a family's `Metric` table: it is built once at load (`plan.rs`, `events.rs`) and
/// every series of it is written through it.
pub(super) struct UserMetric {
    /// Exposed name, `ebpf_sidecar_` included (without `_total`: the encoder appends it).
    pub name: String,
    pub help: String,
    pub kind: Type,
    /// Label names, in order.
    pub labels: Vec<&'static str>,
}

impl UserMetric {
    fn check(&self, labels: &Labels) {
        debug_assert!(
            labels
                .iter()
                .map(|(n, _)| *n)
                .eq(self.labels.iter().copied()),
            "metric {} written with labels {labels:?}, declared {:?}",
            self.name,
            self.labels
        );
    }

    /// A counter or gauge (as declared) of `series`.
    fn number(
        &self,
        enc: &mut DescriptorEncoder,
        series: impl Iterator<Item = (Labels, f64)>,
    ) -> fmt::Result {
        let series = series.inspect(|(l, _)| self.check(l));
        match self.kind {
            Type::Gauge => metrics::gauge(enc, &self.name, &self.help, series),
            _ => metrics::counter(enc, &self.name, &self.help, series),
        }
    }

    fn counter(
        &self,
        enc: &mut DescriptorEncoder,
        series: impl Iterator<Item = (Labels, u64)>,
    ) -> fmt::Result {
        let series = series.inspect(|(l, _)| self.check(l));
        metrics::counter(enc, &self.name, &self.help, series)
    }
}

/// A `metrics:` entry with its map opened.
pub(super) struct MetricPlan {
    pub map_name: String,
    pub map: RawMap,
    pub labels: Vec<LabelPlan>,
    pub values: Vec<ValuePlan>,
    pub hist: Option<HistPlan>,
    pub budget: LabelBudget,
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

    fn add(&mut self, g: &Group) {
        for (a, b) in self.values.iter_mut().zip(&g.values) {
            *a += b;
        }
        for (a, b) in self.hist.iter_mut().zip(&g.hist) {
            *a += b;
        }
        self.hist_sum += g.hist_sum;
    }
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

impl MetricPlan {
    /// Write this entry's metrics from a dump of its map.
    pub fn encode(
        &self,
        decode: &DecodeCtx,
        dump: &Dump,
        enc: &mut DescriptorEncoder,
    ) -> fmt::Result {
        let groups = self.groups(decode, dump);
        let (mut kept, other) = self.bound(&groups);
        kept.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        if let Some(o) = &other {
            kept.push(o);
        }
        for (j, p) in self.values.iter().enumerate() {
            p.metric.number(
                enc,
                kept.iter()
                    .map(|g| (g.labels.clone(), scaled(g.values[j], p.scale))),
            )?;
        }
        if let Some(h) = &self.hist {
            write_histogram(h, &kept, enc)?;
        }
        Ok(())
    }

    /// The dump's entries grouped by decoded labels, per-CPU slots summed.
    fn groups(&self, decode: &DecodeCtx, dump: &Dump) -> Vec<Group> {
        let (ks, stride) = (self.map.key_size, self.map.stride());
        let slot = self.map.value_size.next_multiple_of(8);
        let hn = self.hist.as_ref().map(|h| h.n).unwrap_or(0);
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::with_capacity(dump.count);
        for i in 0..dump.count {
            let key = &dump.keys[i * ks..(i + 1) * ks];
            let val = &dump.values[i * stride..(i + 1) * stride];
            let labels: Labels = self
                .labels
                .iter()
                .map(|l| {
                    let v = decode.label(l.decoder, &key[l.offset..l.offset + l.len], l.scalar);
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
                    groups.push(Group::new(composite.clone(), labels, self.values.len(), hn));
                    index.insert(composite, groups.len() - 1);
                    groups.len() - 1
                }
            };
            let g = &mut groups[gi];
            // Per-CPU maps: one slot per CPU, summed.
            for cpu in 0..self.map.cpus {
                let v = if self.map.cpus > 1 {
                    &val[cpu * slot..]
                } else {
                    val
                };
                self.add_slot(g, v);
            }
            g.weight = match g.values.first() {
                Some(v) => *v,
                None => g.hist.iter().sum::<u64>() as f64,
            };
        }
        groups
    }

    /// Add one value slot (one CPU's) to its series.
    fn add_slot(&self, g: &mut Group, v: &[u8]) {
        for (j, p) in self.values.iter().enumerate() {
            g.values[j] += p.scalar.read_f64(v, p.offset);
        }
        if let Some(h) = &self.hist {
            let es = h.elem.size();
            for b in 0..h.n {
                g.hist[b] += h.elem.read_u64(v, h.offset + b * es);
            }
            if let Some((off, s)) = h.sum {
                g.hist_sum += scaled(s.read_f64(v, off), h.scale);
            }
        }
    }

    /// Bounded cardinality: the biggest series keep their labels, the rest sum into `other`.
    fn bound<'a>(&self, groups: &'a [Group]) -> (Vec<&'a Group>, Option<Group>) {
        let keep = if self.labels.is_empty() || groups.len() <= self.budget.max() {
            // Everything fits: no need to rank.
            self.budget.admit_all(groups.iter().map(|g| g.key.as_str()))
        } else {
            let mut order: Vec<usize> = (0..groups.len()).collect();
            order.sort_unstable_by(|a, b| {
                groups[*b]
                    .weight
                    .total_cmp(&groups[*a].weight)
                    .then_with(|| groups[*a].key.cmp(&groups[*b].key))
            });
            let ranked = self
                .budget
                .admit_all(order.iter().map(|i| groups[*i].key.as_str()));
            let mut keep = vec![false; groups.len()];
            for (i, k) in order.into_iter().zip(ranked) {
                keep[i] = k;
            }
            keep
        };
        let hn = self.hist.as_ref().map(|h| h.n).unwrap_or(0);
        let mut kept: Vec<&Group> = Vec::with_capacity(groups.len());
        let mut other: Option<Group> = None;
        for (g, k) in groups.iter().zip(keep) {
            if k || self.labels.is_empty() {
                kept.push(g);
                continue;
            }
            other
                .get_or_insert_with(|| {
                    let labels = self
                        .labels
                        .iter()
                        .map(|l| (l.name, OTHER.to_string()))
                        .collect();
                    Group::new(String::new(), labels, self.values.len(), hn)
                })
                .add(g);
        }
        (kept, other)
    }
}

/// A histogram from the user's own buckets (not log2 of ns: its bounds are in the plan).
fn write_histogram(h: &HistPlan, kept: &[&Group], enc: &mut DescriptorEncoder) -> fmt::Result {
    let m = &h.metric;
    let mut d = enc.encode_descriptor(&m.name, &m.help, None, MetricType::Histogram)?;
    for g in kept {
        m.check(&g.labels);
        let count: u64 = g.hist.iter().sum();
        let sum = if h.sum.is_some() {
            g.hist_sum
        } else {
            g.hist.iter().zip(&h.mids).map(|(c, m)| *c as f64 * m).sum()
        };
        let mut buckets: Vec<(f64, u64)> = (0..h.n - 1).map(|b| (h.les[b], g.hist[b])).collect();
        buckets.push((f64::INFINITY, g.hist[h.n - 1]));
        d.encode_family(&g.labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

impl CountPlan {
    /// The events counted so far, by their labels.
    pub fn encode(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.metric.counter(
            enc,
            counts.into_iter().map(|(vals, n)| {
                let l: Labels = self.labels.iter().map(|l| l.name).zip(vals).collect();
                (l, n)
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales() {
        assert_eq!(scaled(333104.0, 1e-9).to_string(), "0.000333104");
        assert_eq!(scaled(3.0, 2.0), 6.0);
        assert_eq!(scaled(5.0, 1.0), 5.0);
        assert_eq!(scaled(1500.0, 1e-3), 1.5);
    }
}
