//! The YAML a user writes next to a custom probe object: which programs attach where, which maps
//! become which metrics, which ring buffers are events. See docs/families/custom.md.

use std::collections::BTreeMap;

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The probe's name: `ebpf_sidecar_probe_up{probe="custom:<name>"}`, the `kind` of its
    /// events. Default: the YAML file's name without extension.
    pub name: Option<String>,
    #[serde(default)]
    pub programs: Vec<ProgramCfg>,
    #[serde(default)]
    pub metrics: Vec<MetricCfg>,
    #[serde(default)]
    pub events: Vec<EventsCfg>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AttachKind {
    Tracepoint,
    TpBtf,
    RawTp,
    Uprobe,
    Uretprobe,
    Usdt,
    CgroupSkb,
    PerfEvent,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramCfg {
    /// The program's function name in the object.
    pub name: String,
    pub attach: AttachKind,
    /// tracepoint: `category:name` (or `category/name`); tp_btf and raw_tp: the tracepoint name.
    pub tracepoint: Option<String>,
    /// uprobe, uretprobe, usdt: the binary or library, as a path inside the target.
    pub binary: Option<String>,
    /// uprobe, uretprobe: the function symbol.
    pub symbol: Option<String>,
    /// uprobe: bytes past the symbol.
    #[serde(default)]
    pub offset: u64,
    /// usdt: `provider:name`.
    pub probe: Option<String>,
    /// cgroup_skb: `ingress` or `egress`.
    pub direction: Option<String>,
    /// perf_event: samples per second per CPU (software cpu-clock).
    pub frequency: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    #[default]
    Counter,
    Gauge,
}

/// How a key field or event field becomes a label value (or JSON value).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Decoder {
    /// Decimal integer.
    Int,
    /// 0x-prefixed hexadecimal integer.
    Hex,
    /// NUL-terminated bytes (char arrays).
    String,
    /// 4 bytes in network order (`__be32` / `saddr`).
    Ipv4,
    /// 16 bytes in network order.
    Ipv6,
    /// 16-bit port in network order (e.g. `sk_dport`, `sin_port`).
    Port,
    /// 16-bit port in host order (e.g. `sk_num`, tracepoint `sport`/`dport`).
    PortHost,
    /// cgroup v2 id → cgroup path (falls back to the id).
    Cgroup,
    /// x86_64 syscall number → name.
    Syscall,
    /// errno (positive or negative) → name (`ENOENT`).
    Errno,
    /// Kernel address → symbol (/proc/kallsyms, read at start).
    Ksym,
    /// User address → symbol, in the target's main process.
    Usym,
}

impl fmt::Display for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The YAML spelling.
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(|v| v.as_str()).unwrap_or("?"))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelCfg {
    /// The Prometheus label name.
    pub name: String,
    /// Key field (dotted path); absent: the whole key.
    pub field: Option<String>,
    #[serde(default = "default_decoder")]
    pub decoder: Decoder,
}

fn default_decoder() -> Decoder {
    Decoder::Int
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldCfg {
    /// Value field (dotted path).
    pub name: String,
    pub metric: String,
    #[serde(rename = "type", default)]
    pub kind: MetricKind,
    pub help: Option<String>,
    #[serde(default = "one")]
    pub scale: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BucketKind {
    /// Bucket i counts values in [2^i, 2^(i+1)) (bucket 0 also counts 0).
    Log2,
    /// Bucket i counts values in [min + i·step, min + (i+1)·step).
    Linear,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramCfg {
    pub metric: String,
    pub help: Option<String>,
    /// Array field of the value holding the buckets; absent: the value is the array.
    pub buckets_field: Option<String>,
    pub buckets: BucketKind,
    /// linear: the first bucket's lower bound and every bucket's width (in the kernel's unit).
    #[serde(default)]
    pub min: f64,
    pub step: Option<f64>,
    /// Field holding the sum of observed values (else `_sum` is estimated from bucket bounds).
    pub sum_field: Option<String>,
    /// Kernel unit → exported unit (1e-9 for ns → seconds).
    #[serde(default = "one")]
    pub scale: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricCfg {
    /// Map name in the object.
    pub map: String,
    #[serde(default)]
    pub labels: Vec<LabelCfg>,
    /// A map whose value is a number: its metric.
    pub metric: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: MetricKind,
    pub help: Option<String>,
    #[serde(default = "one")]
    pub scale: f64,
    /// A map whose value is a struct: one metric per field.
    #[serde(default)]
    pub fields: Vec<FieldCfg>,
    pub histogram: Option<HistogramCfg>,
    /// Series kept per metric before the rest are summed into one with every label `other`
    /// (default: --top-n).
    pub top_n: Option<usize>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsCfg {
    /// A ring buffer or perf event array map.
    pub map: String,
    /// The struct each record holds (`struct` name in the object's BTF).
    #[serde(rename = "struct")]
    pub struct_name: String,
    /// Per-field decoders for the JSON (default: numbers, char arrays as strings).
    #[serde(default)]
    pub decoders: BTreeMap<String, Decoder>,
    /// Also count the events into a counter, labelled by chosen fields.
    pub count: Option<EventCountCfg>,
    /// An array map whose u64 values count records the program could not reserve (ring buffer
    /// full): added to ebpf_sidecar_events_lost_total.
    pub lost_counter: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventCountCfg {
    pub metric: String,
    pub help: Option<String>,
    #[serde(default)]
    pub labels: Vec<LabelCfg>,
    pub top_n: Option<usize>,
}

pub const PREFIX: &str = "ebpf_sidecar_";

/// The exported name of a user's metric: `ebpf_sidecar_` is added when missing, so every
/// series the sidecar serves shares one namespace.
pub fn metric_name(user: &str, kind: MetricKind) -> Result<String, String> {
    let valid = user
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "metric name {user:?} is not a Prometheus name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if kind == MetricKind::Counter && user.ends_with("_total") {
        return Err(format!(
            "counter {user:?}: leave `_total` out, the exposition adds it"
        ));
    }
    Ok(if user.starts_with(PREFIX) {
        user.to_string()
    } else {
        format!("{PREFIX}{user}")
    })
}

pub fn label_name(l: &str) -> Result<(), String> {
    let valid = l
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !l.starts_with("__");
    if valid && l != "le" && l != "quantile" {
        Ok(())
    } else {
        Err(format!(
            "label name {l:?} is not usable ([a-zA-Z_][a-zA-Z0-9_]*, not le, quantile or __*)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            metric_name("tcp_seconds", MetricKind::Counter).unwrap(),
            "ebpf_sidecar_tcp_seconds"
        );
        assert_eq!(
            metric_name("ebpf_sidecar_x", MetricKind::Gauge).unwrap(),
            "ebpf_sidecar_x"
        );
        assert!(metric_name("x_total", MetricKind::Counter).is_err());
        assert!(metric_name("1x", MetricKind::Gauge).is_err());
        assert!(label_name("le").is_err());
        assert!(label_name("daddr").is_ok());
    }

    #[test]
    fn yaml_schema() {
        let c: Config = serde_yaml::from_str(
            "programs: [{name: p, attach: uprobe, binary: /bin/x, symbol: f}]\n\
             metrics: [{map: m, labels: [{name: a, decoder: ipv4}], fields: [{name: f, metric: g, scale: 1e-9}]}]",
        )
        .unwrap();
        assert_eq!(c.programs[0].attach, AttachKind::Uprobe);
        assert_eq!(c.metrics[0].labels[0].decoder, Decoder::Ipv4);
        assert_eq!(c.metrics[0].fields[0].scale, 1e-9);
        assert_eq!(c.metrics[0].fields[0].kind, MetricKind::Counter);
        let e = serde_yaml::from_str::<Config>(
            "metrics: [{map: m, labels: [{name: a, decoder: ipv5}]}]",
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant `ipv5`"), "{e}");
        let e = serde_yaml::from_str::<Config>("programs: []\nmetrix: []").unwrap_err();
        assert!(e.to_string().contains("unknown field `metrix`"), "{e}");
        assert_eq!(Decoder::PortHost.to_string(), "port_host");
    }
}
