//! HTTP/1.x requests and their answers, paired by the kernel's per-connection parser (from TCP
//! segments or read/write payloads, see docs/families/net.md), and the connections it stopped
//! following. With --http-paths the kernel also keys them by the request's path, which is
//! normalised here and bounded by --top-n.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::net::{self as k, HttpKey, HttpPathKey, counter as c};
use sidecar_ebpf::{HIST_BUCKETS, SyscallStats};

use super::{Object, percpu_slots};
use crate::metrics::{self, LabelBudget, Labels, Log2Histogram, Metric};
use crate::probes::object::Maps;

pub const REQUESTS: Metric = Metric::counter(
    "ebpf_sidecar_http_requests",
    "HTTP/1.x requests of the target, followed through its TCP connections with HTTP/1 framing (Content-Length and chunked bodies skipped, pipelined requests paired in order): direction server (request received) or client (request sent), method, status of the answer, tls (true: read inside TLS at OpenSSL's SSL_read/SSL_write, false: from plaintext TCP) (and path with --http-paths).",
)
.labels(&["direction", "method", "status", "tls", "path?"])
.top_n(&["path"]);
pub const REQUEST_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_http_request_duration_seconds",
    "Time from an HTTP/1.x request line to the status line of its answer, per connection.",
)
.labels(&["direction", "method", "tls", "path?"])
.top_n(&["path"]);
pub const UNTRACKED: Metric = Metric::counter(
    "ebpf_sidecar_http_untracked_streams",
    "HTTP/1.x connections of the target the recogniser stopped following (counted once each; their requests from then on are not counted), by reason: gap (bytes of a head or chunk-size line never seen), head (a head not whole in one segment or read, longer than 2048 bytes, or not a request or status line where one was due), body (chunked framing or Transfer-Encoding not followed, bad Content-Length, too many messages in one segment), pipeline (more than 8 requests waiting, an answer without a request), midstream (a request line on a connection already carrying data when first seen).",
)
.labels(&["reason"]);

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"];
const DIRS: [&str; k::HTTP_DIRS] = ["server", "client"];

/// The `tls` label of a kernel key's flag.
fn tls(v: u32) -> String {
    (v != 0).to_string()
}

/// The name of kernel index `v` in `names`, `other` past the end.
fn name(v: u32, names: &[&str]) -> String {
    names
        .get(v as usize)
        .map_or_else(|| "other".to_string(), |n| n.to_string())
}

/// The path label of a `--http-paths` key: normalised, `other` for the kernel's overflow slot.
fn path_label(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    if end == 0 {
        return metrics::OTHER.to_string();
    }
    crate::http_path::normalize(&metrics::label_value(&raw[..end]))
}

/// A series' kernel key: (direction, method, status, tls).
type Series = (u32, u32, u32, u32);

/// One scrape's reading of the HTTP maps.
pub(super) struct Http {
    /// Requests by (direction, method, status, tls).
    requests: BTreeMap<(u32, u32, u32, u32), u64>,
    /// Durations by (direction, method, tls), the ones that saw requests only.
    hists: Vec<(u32, u32, u32, Log2Histogram)>,
    /// --http-paths: (path, (direction, method, status, tls), durations), paths normalised.
    by_path: Vec<(String, Series, Log2Histogram)>,
    /// Untracked connections by reason, in `k::HTTP_UNTRACKED_REASONS` order.
    untracked: Vec<u64>,
}

impl Http {
    /// `http`: the slot has HTTP tables (--net-http not off); `with_paths`: the path table
    /// instead of the two others (the slot has only the ones its options use).
    pub(super) fn read(obj: &Object, maps: &Maps<'_>, http: bool, with_paths: bool) -> Self {
        let by_method = http && !with_paths;
        let mut requests: BTreeMap<Series, u64> = BTreeMap::new();
        if by_method {
            for (key, vals) in maps.percpu_hash::<HttpKey, u64>("net_http_requests") {
                *requests
                    .entry((key.dir, key.method, key.status, key.tls))
                    .or_default() += vals.iter().sum::<u64>();
            }
        }
        let mut by_path = Vec::new();
        if with_paths {
            for (key, vals) in maps.percpu_hash::<HttpPathKey, SyscallStats>("net_http_paths") {
                let mut h = Log2Histogram::new(HIST_BUCKETS);
                for v in vals {
                    h.add(&v.hist, v.time_ns);
                }
                by_path.push((
                    path_label(&key.path),
                    (key.dir, key.method, key.status, key.tls),
                    h,
                ));
            }
        }
        let mut hists = Vec::new();
        let hist_maps = if by_method {
            percpu_slots::<SyscallStats>(obj, maps, "net_http_hists")
        } else {
            Vec::new()
        };
        for (i, vals) in hist_maps {
            let mut h = Log2Histogram::new(HIST_BUCKETS);
            for v in vals {
                h.add(&v.hist, v.time_ns);
            }
            if h.count() > 0 {
                // (tls * HTTP_DIRS + direction) * HTTP_METHODS + method
                let (dt, m) = (i / k::HTTP_METHODS, i % k::HTTP_METHODS);
                let (t, d) = (dt / k::HTTP_DIRS, dt % k::HTTP_DIRS);
                if t < k::HTTP_TLS {
                    hists.push((d as u32, m as u32, t as u32, h));
                }
            }
        }
        let untracked = (0..k::HTTP_UNTRACKED_REASONS.len())
            .map(|i| maps.counter("net_counters", c::HTTP_UNTRACKED + i as u32))
            .collect();
        Self {
            requests,
            hists,
            by_path,
            untracked,
        }
    }

    /// A reading with every series present (for tests).
    #[cfg(test)]
    pub(super) fn sample() -> Self {
        let mut h = Log2Histogram::new(HIST_BUCKETS);
        h.add(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 2048);
        Self {
            requests: [((0, 0, 200, 0), 1), ((1, 7, 404, 1), 2)].into(),
            hists: vec![(0, 0, 0, h.clone()), (1, 7, 1, h.clone())],
            by_path: vec![
                ("/users/:id".to_string(), (0, 0, 200, 1), h.clone()),
                (metrics::OTHER.to_string(), (1, 1, 500, 0), h),
            ],
            untracked: vec![1; k::HTTP_UNTRACKED_REASONS.len()],
        }
    }

    /// `enabled`: --net-http is not off. `paths`: the --http-paths budget, when on.
    pub(super) fn encode(
        mut self,
        enc: &mut DescriptorEncoder,
        enabled: bool,
        paths: Option<&LabelBudget>,
    ) -> fmt::Result {
        if !enabled {
            self.requests.clear(); // --net-http off: the HTTP families stay empty
        }
        match paths {
            Some(budget) => encode_by_path(enc, self.by_path, budget)?,
            None => {
                REQUESTS.counter_series(
                    enc,
                    self.requests.iter().map(|((d, m, st, t), n)| {
                        (
                            vec![
                                ("direction", name(*d, &DIRS)),
                                ("method", name(*m, &METHODS)),
                                ("status", st.to_string()),
                                ("tls", tls(*t)),
                            ],
                            *n,
                        )
                    }),
                )?;
                REQUEST_DURATION.histogram_series(
                    enc,
                    self.hists.into_iter().map(|(d, m, t, h)| {
                        (
                            vec![
                                ("direction", name(d, &DIRS)),
                                ("method", name(m, &METHODS)),
                                ("tls", tls(t)),
                            ],
                            h,
                        )
                    }),
                )?;
            }
        }
        if enabled {
            UNTRACKED.counter_series(
                enc,
                k::HTTP_UNTRACKED_REASONS
                    .iter()
                    .zip(self.untracked)
                    .map(|(r, n)| -> (Labels, u64) { (vec![("reason", r.to_string())], n) }),
            )?;
        }
        Ok(())
    }
}

/// The HTTP metrics with a path label: normalised paths, then the top-N budget (sticky: an
/// admitted path stays).
fn encode_by_path(
    enc: &mut DescriptorEncoder,
    by_path: Vec<(String, Series, Log2Histogram)>,
    budget: &LabelBudget,
) -> fmt::Result {
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for (p, _, h) in &by_path {
        *totals.entry(p.clone()).or_default() += h.count();
    }
    let admitted: HashSet<String> = budget
        .fold(totals.into_iter().map(|(p, n)| (p, (), n)).collect())
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    let mut requests: BTreeMap<(Series, String), u64> = BTreeMap::new();
    let mut hists: BTreeMap<(u32, u32, u32, String), Log2Histogram> = BTreeMap::new();
    for (p, (d, m, st, t), h) in by_path {
        let p = if admitted.contains(&p) {
            p
        } else {
            metrics::OTHER.to_string()
        };
        *requests.entry(((d, m, st, t), p.clone())).or_default() += h.count();
        hists
            .entry((d, m, t, p))
            .or_insert_with(|| Log2Histogram::new(HIST_BUCKETS))
            .add(&h.buckets, h.sum_ns);
    }
    REQUESTS.counter_series(
        enc,
        requests.into_iter().map(|(((d, m, st, t), p), n)| {
            (
                vec![
                    ("direction", name(d, &DIRS)),
                    ("method", name(m, &METHODS)),
                    ("status", st.to_string()),
                    ("tls", tls(t)),
                    ("path", p),
                ],
                n,
            )
        }),
    )?;
    REQUEST_DURATION.histogram_series(
        enc,
        hists.into_iter().map(|((d, m, t, p), h)| {
            (
                vec![
                    ("direction", name(d, &DIRS)),
                    ("method", name(m, &METHODS)),
                    ("tls", tls(t)),
                    ("path", p),
                ],
                h,
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_past_the_table_are_other() {
        assert_eq!(name(0, &METHODS), "GET");
        assert_eq!(name(7, &METHODS), "other");
        assert_eq!(name(1, &DIRS), "client");
    }

    #[test]
    fn overflow_path_is_other() {
        assert_eq!(path_label(&[0u8; k::HTTP_PATH_LEN]), "other");
        let mut raw = [0u8; k::HTTP_PATH_LEN];
        raw[..4].copy_from_slice(b"/a/b");
        assert_eq!(path_label(&raw), crate::http_path::normalize("/a/b"));
    }
}
