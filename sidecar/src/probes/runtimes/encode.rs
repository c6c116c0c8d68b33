//! The family's maps read at scrape time and written as its built-in metrics (the table in
//! `mod.rs`); the --config metrics are in `declared.rs`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{HIST_BUCKETS, RtCallKey, RtHist, RtHttpKey, RtKey};

use super::attach::DECLARED_SLOT;
use super::discovery::Runtime;
use super::hooks::slot;
use super::{
    CLASSES_LOADED, FUNCTION_CALLS, GC_DURATION, HTTP_CLIENT_REQUEST_DURATION,
    HTTP_CLIENT_REQUESTS, HTTP_REQUEST_DURATION, HTTP_REQUESTS, IMPORTS, NODEJS_EVENT_LOOP_LAG,
    RUNTIME_INFO, Runtimes, THREADS_STARTED, USDT_PROBES_ATTACHED,
};
use crate::metrics::{self, Labels, Log2Histogram, Metric, comm_label};
use crate::probes::object::Maps;

/// (sent by the target, method, raw path) of node HTTP requests.
type HttpKey = (bool, &'static str, String);

/// What one scrape read from the kernel, keyed by slot.
#[derive(Default)]
pub(super) struct Readings {
    /// rt_counts: hits by (slot, label).
    pub counts: BTreeMap<(u32, u64), u64>,
    /// rt_hists: durations (or values) by (slot, label).
    pub hists: BTreeMap<(u32, u64), Log2Histogram>,
    /// Python function calls by `module:function`.
    calls: Vec<(String, (), u64)>,
    /// rt_calls of declared metrics: hits by (slot, string labels).
    pub strings: BTreeMap<(u32, Vec<String>), u64>,
    http_reqs: BTreeMap<HttpKey, u64>,
    http_hists: BTreeMap<HttpKey, Log2Histogram>,
}

fn hist() -> Log2Histogram {
    Log2Histogram::new(HIST_BUCKETS)
}

/// Read every map the metrics come from (a map that cannot be read is counted by `maps`);
/// `calls`: whether this slot has an `rt_calls` (--runtime-calls, or --config string counts).
pub(super) fn read(maps: &Maps<'_>, http_paths: bool, calls: bool) -> Readings {
    let mut r = Readings::default();
    for (k, v) in maps.hash::<RtKey, u64>("rt_counts") {
        *r.counts.entry((k.slot, k.label)).or_default() += v;
    }
    for (k, v) in maps.hash::<RtKey, RtHist>("rt_hists") {
        r.hists
            .entry((k.slot, k.label))
            .or_insert_with(hist)
            .add(&v.hist, v.sum_ns);
    }
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    let call_keys = if calls {
        maps.hash::<RtCallKey, u64>("rt_calls")
    } else {
        Vec::new()
    };
    for (k, v) in call_keys {
        match k.slot {
            slot::PY_CALLS => {
                *by.entry(function_label(&k.module, &k.function))
                    .or_default() += v
            }
            s if s >= DECLARED_SLOT => {
                *r.strings
                    .entry((s, vec![comm_label(&k.module), comm_label(&k.function)]))
                    .or_default() += v
            }
            _ => {}
        }
    }
    r.calls.extend(by.into_iter().map(|(k, v)| (k, (), v)));
    let path_of = |raw: &[u8]| -> String {
        if !http_paths {
            return String::new();
        }
        let p = comm_label(raw);
        if p.is_empty() {
            // The read did not start with the request line (a head split across reads).
            metrics::OTHER.to_string()
        } else {
            crate::http_path::normalize(&p)
        }
    };
    let http_key = |k: &RtHttpKey| (k.client != 0, http_method(k.method as u8), path_of(&k.path));
    for (k, v) in maps.hash::<RtHttpKey, u64>("rt_http_reqs") {
        *r.http_reqs.entry(http_key(&k)).or_default() += v;
    }
    for (k, v) in maps.hash::<RtHttpKey, RtHist>("rt_http_hists") {
        r.http_hists
            .entry(http_key(&k))
            .or_insert_with(hist)
            .add(&v.hist, v.sum_ns);
    }
    r
}

impl Runtimes {
    /// The built-in metrics other than discovery's, in exposition order. `has`: whether a
    /// runtime was attached (its series appear from then on).
    pub(super) fn encode_builtin(
        &self,
        enc: &mut DescriptorEncoder,
        r: &Readings,
        has: impl Fn(Runtime) -> bool,
    ) -> fmt::Result {
        let (gc, lag) = gc_and_lag(&r.hists);
        GC_DURATION.histogram_series(
            enc,
            gc.into_iter()
                .map(|((rt, g), h)| (vec![("runtime", rt.to_string()), ("generation", g)], h)),
        )?;
        for client in [false, true] {
            self.encode_http(enc, client, &r.http_reqs, &r.http_hists)?;
        }
        let calls_total: Vec<_> = if self.inner.calls {
            self.functions.fold(r.calls.clone())
        } else {
            Vec::new()
        };
        FUNCTION_CALLS.counter_series(
            enc,
            calls_total
                .into_iter()
                .map(|(f, (), v)| (vec![("runtime", "python".to_string()), ("function", f)], v)),
        )?;
        let sum_slot = |s: u32| -> u64 {
            r.counts
                .iter()
                .filter(|((sl, _), _)| *sl == s)
                .map(|(_, v)| *v)
                .sum()
        };
        // Plain hit counts, one series per runtime that has the probe.
        let hits: [(Metric, Runtime, u32); 3] = [
            (IMPORTS, Runtime::Python, slot::PY_IMPORTS),
            (CLASSES_LOADED, Runtime::Java, slot::JAVA_CLASSES),
            (THREADS_STARTED, Runtime::Java, slot::JAVA_THREADS),
        ];
        for (metric, runtime, s) in hits {
            metric.counter_series(
                enc,
                has(runtime).then(|| (vec![("runtime", runtime.name().to_string())], sum_slot(s))),
            )?;
        }
        NODEJS_EVENT_LOOP_LAG.histogram_series(enc, has(Runtime::Node).then_some((vec![], lag)))
    }

    /// Node HTTP requests and their durations, served (`client` false) or sent; the histograms
    /// follow the requests' top-N path admission.
    fn encode_http(
        &self,
        enc: &mut DescriptorEncoder,
        client: bool,
        reqs: &BTreeMap<HttpKey, u64>,
        hists: &BTreeMap<HttpKey, Log2Histogram>,
    ) -> fmt::Result {
        let (budget, requests, durations_metric) = if client {
            (
                &self.client_paths,
                HTTP_CLIENT_REQUESTS,
                HTTP_CLIENT_REQUEST_DURATION,
            )
        } else {
            (&self.paths, HTTP_REQUESTS, HTTP_REQUEST_DURATION)
        };
        let folded = budget.fold(
            reqs.iter()
                .filter(|((c, _, _), _)| *c == client)
                .map(|((_, m, p), v)| (p.clone(), *m, *v))
                .collect(),
        );
        let admitted: HashSet<String> = folded.iter().map(|(p, _, _)| p.clone()).collect();
        let labels = |m: &'static str, p: String| -> Labels {
            let mut l = vec![("runtime", "node".to_string()), ("method", m.to_string())];
            if self.inner.http_paths {
                l.push(("path", p));
            }
            l
        };
        requests.counter_series(enc, folded.into_iter().map(|(p, m, v)| (labels(m, p), v)))?;
        let mut durations: BTreeMap<(&'static str, String), Log2Histogram> = BTreeMap::new();
        for ((_, m, p), h) in hists.iter().filter(|((c, _, _), _)| *c == client) {
            let p = if admitted.contains(p) {
                p.clone()
            } else {
                metrics::OTHER.to_string()
            };
            durations
                .entry((m, p))
                .or_insert_with(hist)
                .add(&h.buckets, h.sum_ns);
        }
        durations_metric.histogram_series(
            enc,
            durations.into_iter().map(|((m, p), h)| (labels(m, p), h)),
        )
    }

    /// What discovery found: the runtime processes and the probe sites attached.
    pub(super) fn encode_discovery(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        RUNTIME_INFO.gauge_series(
            enc,
            st.procs.iter().take(100).map(|(rt, v, pid)| {
                (
                    vec![
                        ("runtime", rt.name().to_string()),
                        ("version", v.clone()),
                        ("pid", pid.to_string()),
                    ],
                    1i64,
                )
            }),
        )?;
        let mut attached: BTreeMap<(String, String), i64> = BTreeMap::new();
        let pack_sites = st.files.values().flatten().flat_map(|a| &a.sites);
        let declared_sites = st.declared_files.values().flat_map(|d| &d.sites);
        for s in pack_sites.chain(declared_sites) {
            *attached.entry(s.clone()).or_default() += 1;
        }
        USDT_PROBES_ATTACHED.gauge_series(
            enc,
            attached
                .into_iter()
                .map(|((p, n), v)| (vec![("provider", p), ("probe", n)], v)),
        )
    }
}

/// GC pauses by (runtime, generation), and the node event-loop lag, from the duration slots.
fn gc_and_lag(
    hists: &BTreeMap<(u32, u64), Log2Histogram>,
) -> (
    BTreeMap<(&'static str, String), Log2Histogram>,
    Log2Histogram,
) {
    let mut gc: BTreeMap<(&'static str, String), Log2Histogram> = BTreeMap::new();
    let mut lag = hist();
    for ((s, label), h) in hists {
        let (rt, generation) = match *s {
            slot::PY_GC => ("python", py_generation(*label)),
            slot::JAVA_GC => ("java", java_generation(*label)),
            slot::NODE_GC => ("node", v8_generation(*label)),
            slot::NODE_USDT_GC => ("node", node_usdt_generation(*label)),
            slot::NODE_LAG => {
                lag.add(&h.buckets, h.sum_ns);
                continue;
            }
            _ => continue,
        };
        gc.entry((rt, generation))
            .or_insert_with(hist)
            .add(&h.buckets, h.sum_ns);
    }
    (gc, lag)
}

fn py_generation(label: u64) -> String {
    (label as u32 as i32).to_string()
}

fn java_generation(label: u64) -> String {
    if label & 0xff != 0 { "full" } else { "young" }.to_string()
}

fn v8_generation(label: u64) -> String {
    match label as u32 {
        0 => "scavenge",
        1 => "mark_compact",
        2 => "minor_mark_compact",
        _ => "other",
    }
    .to_string()
}

/// Node's USDT gc__start type (v8::GCType bits, as in V8 10.2 of Node 18: kGCTypeScavenge 1,
/// kGCTypeMinorMarkCompact 2, kGCTypeMarkSweepCompact 4, kGCTypeIncrementalMarking 8,
/// kGCTypeProcessWeakCallbacks 16). A real Node 18.20.4 fires 4 for each `global.gc()`.
fn node_usdt_generation(label: u64) -> String {
    match label as u32 {
        1 => "scavenge",
        2 => "minor_mark_compact",
        4 => "mark_compact",
        8 => "incremental_marking",
        16 => "weak_callbacks",
        _ => "other",
    }
    .to_string()
}

/// llhttp's method numbers (llhttp.h `llhttp_method`), the common ones; the rest are `other`.
pub fn http_method(m: u8) -> &'static str {
    match m {
        0 => "DELETE",
        1 => "GET",
        2 => "HEAD",
        3 => "POST",
        4 => "PUT",
        5 => "CONNECT",
        6 => "OPTIONS",
        7 => "TRACE",
        28 => "PATCH",
        _ => "other",
    }
}

/// `module:function` from a code object's file name and function name.
pub fn function_label(file: &[u8], func: &[u8]) -> String {
    let file = comm_label(file);
    let base = file.rsplit('/').next().unwrap_or(&file);
    let module = base.strip_suffix(".py").unwrap_or(base);
    format!("{module}:{}", comm_label(func))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(function_label(b"/tmp/x/work.py\0\0", b"fib\0"), "work:fib");
        assert_eq!(
            function_label(b"<string>\0", b"<module>\0"),
            "<string>:<module>"
        );
        assert_eq!(py_generation(2), "2");
        assert_eq!(java_generation(1), "full");
        assert_eq!(v8_generation(0), "scavenge");
        assert_eq!(http_method(1), "GET");
        assert_eq!(http_method(3), "POST");
        assert_eq!(http_method(200), "other");
        assert_eq!(node_usdt_generation(1), "scavenge");
        assert_eq!(node_usdt_generation(4), "mark_compact");
        assert_eq!(node_usdt_generation(8), "incremental_marking");
    }
}
