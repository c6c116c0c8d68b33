//! The --config metrics as exported (`ebpf_sidecar_usdt_<name>`): their names, help and labels
//! come from the user's YAML, so they are not in the family's table; each is described once, at
//! load, by a [`DeclaredMetric`], and written from it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::HIST_BUCKETS;

use super::attach::DECLARED_SLOT;
use super::encode::Readings;
use crate::metrics::{self, LabelBudget, Log2Histogram};
use crate::usdt::config::{Declared, Kind};

/// Label values of one series joined into one budget key.
const SEP: char = '\u{1}';

/// One --config metric: what the scrape writes, and the kernel slot it reads.
pub(super) struct DeclaredMetric {
    /// Exposed name (without `_total`: the encoder appends it).
    name: String,
    help: String,
    shape: Shape,
    /// Label names, in order (leaked once: the encoder takes &'static str).
    labels: Vec<&'static str>,
    slot: u32,
    budget: LabelBudget,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Hits labelled by integer arguments.
    Count,
    /// Hits labelled by string arguments.
    CountStrings,
    /// Durations of begin/end pairs, or an argument's value.
    Histogram,
}

/// The table of the --config metrics, entry i feeding kernel slot DECLARED_SLOT + i.
pub(super) fn table(declared: &[Declared], top_n: usize) -> Vec<DeclaredMetric> {
    declared
        .iter()
        .enumerate()
        .map(|(i, d)| DeclaredMetric {
            name: d.metric(),
            help: d.help.clone(),
            shape: match d.kind {
                _ if d.is_histogram() => Shape::Histogram,
                Kind::CountStrings { .. } => Shape::CountStrings,
                _ => Shape::Count,
            },
            labels: d
                .labels
                .iter()
                .map(|l| &*Box::leak(l.name.clone().into_boxed_str()))
                .collect(),
            slot: DECLARED_SLOT + i as u32,
            budget: LabelBudget::new(top_n),
        })
        .collect()
}

/// An integer label as the low 32 bits of the argument, signed.
fn int_label(v: u32) -> String {
    (v as i32).to_string()
}

impl DeclaredMetric {
    /// The budget key of a kernel label (up to two 32-bit arguments).
    fn values_of(&self, label: u64) -> String {
        let v = [label as u32, (label >> 32) as u32];
        (0..self.labels.len())
            .map(|k| int_label(v[k]))
            .collect::<Vec<_>>()
            .join(&SEP.to_string())
    }

    fn to_labels(&self, joined: &str) -> metrics::Labels {
        let parts: Vec<&str> = joined.split(SEP).collect();
        self.labels
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let v = if joined == metrics::OTHER {
                    metrics::OTHER
                } else {
                    parts.get(k).copied().unwrap_or("")
                };
                (*n, v.to_string())
            })
            .collect()
    }

    /// Write this metric from one scrape's readings; label values go through its budget.
    pub(super) fn encode(&self, enc: &mut DescriptorEncoder, r: &Readings) -> fmt::Result {
        if self.shape == Shape::Histogram {
            return self.encode_histogram(enc, &r.hists);
        }
        let items: Vec<(String, (), u64)> = if self.shape == Shape::CountStrings {
            r.strings
                .iter()
                .filter(|((s, _), _)| *s == self.slot)
                .map(|((_, v), n)| {
                    let joined = v[..self.labels.len().min(2)].join(&SEP.to_string());
                    (joined, (), *n)
                })
                .collect()
        } else {
            r.counts
                .iter()
                .filter(|((s, _), _)| *s == self.slot)
                .map(|((_, l), n)| (self.values_of(*l), (), *n))
                .collect()
        };
        metrics::counter(
            enc,
            &self.name,
            &self.help,
            self.budget
                .fold(items)
                .into_iter()
                .map(|(v, (), n)| (self.to_labels(&v), n)),
        )
    }

    /// Histograms: admitted by observation count, the rest merged into `other`.
    fn encode_histogram(
        &self,
        enc: &mut DescriptorEncoder,
        hists: &BTreeMap<(u32, u64), Log2Histogram>,
    ) -> fmt::Result {
        let mine = || hists.iter().filter(|((s, _), _)| *s == self.slot);
        let items: Vec<(String, (), u64)> = mine()
            .map(|((_, l), h)| (self.values_of(*l), (), h.count()))
            .collect();
        let admitted: HashSet<String> = self
            .budget
            .fold(items)
            .into_iter()
            .map(|(l, _, _)| l)
            .collect();
        let mut by: BTreeMap<String, Log2Histogram> = BTreeMap::new();
        for ((_, l), h) in mine() {
            let mut v = self.values_of(*l);
            if !admitted.contains(&v) {
                v = metrics::OTHER.to_string();
            }
            by.entry(v)
                .or_insert_with(|| Log2Histogram::new(HIST_BUCKETS))
                .add(&h.buckets, h.sum_ns);
        }
        metrics::histogram(
            enc,
            &self.name,
            &self.help,
            by.into_iter().map(|(v, h)| (self.to_labels(&v), h)),
        )
    }
}
