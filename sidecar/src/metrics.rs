//! Metric tables and the helpers that write them.
//!
//! Every family declares its metrics once, as [`Metric`] constants (name, type, help, labels,
//! which labels are bounded by `--top-n`), and writes them only through those constants: the
//! table is what `ebpf-sidecar probes --metrics` prints and what the docs are checked against, so
//! a metric cannot exist without being listed. Also here: log2 histograms from kernel buckets and
//! the label budget that bounds every label's cardinality. This module knows no family.

use std::collections::HashSet;
use std::fmt;
use std::sync::Mutex;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;

pub type Labels = Vec<(&'static str, String)>;

/// The exposition type of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
    Info,
}

impl Type {
    pub fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
            Type::Info => "info",
        }
    }
}

/// One metric as a family declares it. `name` is the base name: without `_total` for counters,
/// `_info` for infos (the encoder appends them). A label written `name?` is present only with an
/// option (e.g. `--http-paths`); `top_n` lists the labels whose values are bounded by `--top-n`
/// (the rest go to `other`).
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Type,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    pub top_n: &'static [&'static str],
}

impl Metric {
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Type::Counter, help)
    }
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Type::Gauge, help)
    }
    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Type::Histogram, help)
    }
    pub const fn info(name: &'static str, help: &'static str) -> Self {
        Self::new(name, Type::Info, help)
    }
    const fn new(name: &'static str, kind: Type, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            labels: &[],
            top_n: &[],
        }
    }
    pub const fn labels(mut self, labels: &'static [&'static str]) -> Self {
        self.labels = labels;
        self
    }
    /// Labels bounded by `--top-n`.
    pub const fn top_n(mut self, labels: &'static [&'static str]) -> Self {
        self.top_n = labels;
        self
    }

    /// The name a scrape shows (`_total` and `_info` appended as the encoder does).
    pub fn exposed_name(&self) -> String {
        match self.kind {
            Type::Counter => format!("{}_total", self.name),
            Type::Info => format!("{}_info", self.name),
            _ => self.name.to_string(),
        }
    }

    /// The base unit, from the name's suffix (Prometheus names carry their unit).
    pub fn unit(&self) -> &'static str {
        ["seconds", "bytes", "ratio"]
            .into_iter()
            .find(|u| self.name.ends_with(&format!("_{u}")))
            .unwrap_or("")
    }

    /// `family name type labels help`: one line of `ebpf-sidecar probes --metrics`. Labels are
    /// comma separated (`-` for none), a `(top-n)` after those bounded by --top-n.
    pub fn line(&self, family: &str) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|l| {
                let bare = l.trim_end_matches('?');
                if self.top_n.contains(&bare) {
                    format!("{l}(top-n)")
                } else {
                    l.to_string()
                }
            })
            .collect();
        let labels = if labels.is_empty() {
            "-".to_string()
        } else {
            labels.join(",")
        };
        format!(
            "{family} {} {} {labels} {}",
            self.exposed_name(),
            self.kind.as_str(),
            self.help
        )
    }

    /// Whether a series' label names fit the table: in its order, every label not marked `?`.
    pub fn fits(&self, names: &[&str]) -> bool {
        let mut it = names.iter().peekable();
        for l in self.labels {
            let (bare, optional) = match l.strip_suffix('?') {
                Some(b) => (b, true),
                None => (*l, false),
            };
            if it.peek() == Some(&&bare) {
                it.next();
            } else if !optional {
                return false;
            }
        }
        it.next().is_none()
    }

    /// Check a series' labels against the table, for a series written by hand (e.g. with the
    /// user's extra labels appended).
    pub fn check_labels(&self, labels: &Labels) {
        self.check(self.kind, &names(labels));
    }

    fn check(&self, kind: Type, names: &[&str]) {
        if kind != self.kind || !self.fits(names) {
            misfit(self, kind, names);
        }
    }

    pub fn counter_series<V: prometheus_client::encoding::EncodeCounterValue>(
        &self,
        enc: &mut DescriptorEncoder,
        series: impl IntoIterator<Item = (Labels, V)>,
    ) -> fmt::Result {
        let mut m = enc.encode_descriptor(self.name, self.help, None, MetricType::Counter)?;
        for (labels, v) in series {
            self.check(Type::Counter, &names(&labels));
            m.encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
        }
        Ok(())
    }

    pub fn gauge_series<V: prometheus_client::encoding::EncodeGaugeValue>(
        &self,
        enc: &mut DescriptorEncoder,
        series: impl IntoIterator<Item = (Labels, V)>,
    ) -> fmt::Result {
        let mut m = enc.encode_descriptor(self.name, self.help, None, MetricType::Gauge)?;
        for (labels, v) in series {
            self.check(Type::Gauge, &names(&labels));
            m.encode_family(&labels)?.encode_gauge(&v)?;
        }
        Ok(())
    }

    pub fn histogram_series(
        &self,
        enc: &mut DescriptorEncoder,
        series: impl IntoIterator<Item = (Labels, Log2Histogram)>,
    ) -> fmt::Result {
        let mut m = enc.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
        for (labels, h) in series {
            self.check(Type::Histogram, &names(&labels));
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                h.sum_ns as f64 / 1e9,
                h.count(),
                &h.bounded(),
                None,
            )?;
        }
        Ok(())
    }

    pub fn info_series(&self, enc: &mut DescriptorEncoder, labels: &Labels) -> fmt::Result {
        self.check(Type::Info, &names(labels));
        enc.encode_descriptor(self.name, self.help, None, MetricType::Info)?
            .encode_info(labels)
    }
}

fn names(labels: &Labels) -> Vec<&str> {
    labels.iter().map(|(n, _)| *n).collect()
}

/// A series that does not fit its table entry is a bug: fatal in debug builds (and so in unit
/// tests), logged once per metric in release builds, where the series is still written.
fn misfit(m: &Metric, kind: Type, names: &[&str]) {
    let why = format!(
        "metric {} written as a {} with labels {names:?}, declared a {} with labels {:?}",
        m.name,
        kind.as_str(),
        m.kind.as_str(),
        m.labels
    );
    debug_assert!(false, "{why}");
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if !seen.contains(&m.name) {
        seen.push(m.name);
        tracing::error!("{why}");
    }
}

/// A counter family. `name` without `_total` (the encoder appends it).
pub fn counter<V: prometheus_client::encoding::EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

pub fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

pub fn info(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    labels: &impl EncodeLabelSet,
) -> fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Info)?
        .encode_info(labels)
}

/// A histogram from kernel log2 buckets (bucket b counts durations in [2^b, 2^(b+1)) ns).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Log2Histogram {
    pub buckets: Vec<u64>,
    pub sum_ns: u64,
}

/// Lowest and highest exported upper bounds: 2^10 ns (about 1 µs) to 2^35 ns (about 34 s).
/// Kernel buckets below are folded into the first, above into +Inf.
pub const LOG2_FIRST: usize = 9;
pub const LOG2_LAST: usize = 34;

impl Log2Histogram {
    pub fn new(n: usize) -> Self {
        Self {
            buckets: vec![0; n],
            sum_ns: 0,
        }
    }

    pub fn add(&mut self, buckets: &[u64], sum_ns: u64) {
        for (a, b) in self.buckets.iter_mut().zip(buckets) {
            *a += b;
        }
        self.sum_ns += sum_ns;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// (le in seconds, count in this bucket only) pairs, +Inf last: the shape prometheus-client's
    /// encoder takes (it accumulates them itself).
    pub fn bounded(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::with_capacity(LOG2_LAST - LOG2_FIRST + 2);
        let mut pending = 0;
        for (b, n) in self.buckets.iter().enumerate() {
            pending += n;
            if (LOG2_FIRST..=LOG2_LAST).contains(&b) {
                out.push(((1u64 << (b + 1)) as f64 / 1e9, pending));
                pending = 0;
            }
        }
        out.push((f64::INFINITY, pending));
        out
    }
}

pub fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, Log2Histogram)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in series {
        m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
            h.sum_ns as f64 / 1e9,
            h.count(),
            &h.bounded(),
            None,
        )?;
    }
    Ok(())
}

/// Bounds one label's values: the first `max` distinct values (biggest first when several
/// arrive in one scrape) keep their own series for the life of the process; every later value
/// is reported as `other`. Admission is sticky so that no counter series ever goes backwards.
#[derive(Debug)]
pub struct LabelBudget {
    max: usize,
    admitted: Mutex<HashSet<String>>,
}

pub const OTHER: &str = "other";

impl LabelBudget {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            admitted: Mutex::new(HashSet::new()),
        }
    }

    /// Fold `(value, count)` pairs into at most `max` named values plus `other`.
    pub fn fold<K: Clone + Ord>(&self, items: Vec<(String, K, u64)>) -> Vec<(String, K, u64)> {
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        let mut items = items;
        items.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        let mut out: Vec<(String, K, u64)> = Vec::new();
        for (label, rest, n) in items {
            let keep = admitted.contains(&label) || {
                if admitted.len() < self.max && label != OTHER {
                    admitted.insert(label.clone());
                    true
                } else {
                    false
                }
            };
            let label = if keep { label } else { OTHER.to_string() };
            match out.iter_mut().find(|(l, r, _)| *l == label && *r == rest) {
                Some(e) => e.2 += n,
                None => out.push((label, rest, n)),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        out
    }
}

impl LabelBudget {
    /// Distinct values kept before `other`.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether each label keeps its own series (admitted before, or room left); the others go to
    /// `other`. Callers pass the biggest first. Linear in the number of labels, for large maps.
    pub fn admit_all<'a>(&self, labels: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
        let mut admitted = self.admitted.lock().unwrap_or_else(|p| p.into_inner());
        labels
            .into_iter()
            .map(|l| {
                admitted.contains(l)
                    || (admitted.len() < self.max && l != OTHER && admitted.insert(l.to_string()))
            })
            .collect()
    }
}

/// The value of a label whose name could not be read.
pub const UNKNOWN: &str = "unknown";

/// A NUL-padded kernel string (a comm, a file or function name) as a label value that means one
/// thing only. Bytes that are not UTF-8, control bytes and `\` are written `\xNN` (so two
/// different names never merge); a name that reads like one of the values the sidecar gives
/// itself is marked with a leading `\`: a process named `other` is `\other`, not the top-N
/// overflow; one named `unknown` is `\unknown`, not the unreadable fallback; an empty name is
/// `\empty`.
pub fn label_value(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let mut out = String::with_capacity(end);
    for chunk in raw[..end].utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || c.is_ascii_control() {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    match out.as_str() {
        "" => "\\empty".into(),
        OTHER | UNKNOWN => format!("\\{out}"),
        _ => out,
    }
}

/// A NUL-padded kernel `comm` as a label value (see [`label_value`]).
pub fn comm_label(raw: &[u8]) -> String {
    label_value(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_bounded() {
        let mut h = Log2Histogram::new(40);
        let mut b = vec![0; 40];
        b[3] = 2; // 8..16 ns: folded into the first exported bucket
        b[20] = 1; // about 1 ms
        b[39] = 1; // beyond the last bound
        h.add(&b, 1000);
        let c = h.bounded();
        assert_eq!(c.first().unwrap(), &(1024.0 / 1e9, 2));
        assert_eq!(c.len(), LOG2_LAST - LOG2_FIRST + 2);
        let at_1ms = c
            .iter()
            .find(|(le, _)| *le == (1u64 << 21) as f64 / 1e9)
            .unwrap();
        assert_eq!(at_1ms.1, 1);
        assert_eq!(c[c.len() - 2].1, 0);
        assert_eq!(c.last().unwrap(), &(f64::INFINITY, 1));
        assert_eq!(c.iter().map(|b| b.1).sum::<u64>(), 4);
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn budget_is_sticky_and_bounded() {
        let b = LabelBudget::new(2);
        let first = b.fold(vec![
            ("a".into(), (), 5),
            ("b".into(), (), 3),
            ("c".into(), (), 1),
        ]);
        assert_eq!(
            first,
            vec![
                ("a".into(), (), 5),
                ("b".into(), (), 3),
                ("other".into(), (), 1)
            ]
        );
        // c grows past a and b, but they were admitted first: c stays in other.
        let second = b.fold(vec![
            ("a".into(), (), 5),
            ("b".into(), (), 3),
            ("c".into(), (), 100),
        ]);
        assert_eq!(second[2], ("other".into(), (), 100));
    }

    #[test]
    fn comm() {
        assert_eq!(comm_label(b"true\0\0\0\0"), "true");
        assert_eq!(comm_label(b"caf\xc3\xa9\0"), "caf\u{e9}");
    }

    #[test]
    fn label_values_mean_one_thing() {
        // Different invalid names stay different; a backslash cannot fake an escape.
        assert_eq!(label_value(b"\xff\xfe\0"), "\\xff\\xfe");
        assert_eq!(label_value(b"\xff\xfd"), "\\xff\\xfd");
        assert_eq!(label_value(b"\\xff"), "\\x5cxff");
        assert_eq!(label_value(b"a\nb"), "a\\x0ab");
        // Names that read like the sidecar's own values.
        assert_eq!(label_value(b"other\0"), "\\other");
        assert_eq!(label_value(b"unknown"), "\\unknown");
        assert_eq!(label_value(b"\0\0"), "\\empty");
        assert_eq!(label_value(b"others"), "others");
    }
}
