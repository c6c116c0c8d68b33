//! DNS on port 53, parsed in the packet programs (`sidecar-ebpf/include/net_pkt.bpf.h`): queries
//! by type, answers by response code, and the time between them.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::net_pkt as k;
use sidecar_ebpf::{HIST_BUCKETS, SyscallStats};

use super::{Object, percpu_slots};
use crate::metrics::{Log2Histogram, Metric};
use crate::probes::object::Maps;

pub const QUERIES: Metric = Metric::counter(
    "ebpf_sidecar_dns_queries",
    "DNS queries on port 53 (UDP, and TCP messages that start a segment) sent or received by the target, by the type of the first question.",
)
.labels(&["qtype"]);
pub const RESPONSES: Metric = Metric::counter(
    "ebpf_sidecar_dns_responses",
    "DNS answers to the queries counted in ebpf_sidecar_dns_queries_total, by response code.",
)
.labels(&["rcode"]);
pub const DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_dns_duration_seconds",
    "Time from a DNS query to its answer (same port and id), as seen at the target's hook.",
);

pub const QTYPES: [&str; k::DNS_QTYPES] = [
    "A", "AAAA", "CNAME", "MX", "TXT", "PTR", "SRV", "NS", "SOA", "ANY", "other",
];
pub const RCODES: [&str; k::DNS_RCODES] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];

/// One scrape's reading of `net_dns` (queries by qtype, then answers by rcode) and
/// `net_dns_hist`.
pub(super) struct Dns {
    slots: [u64; k::DNS_SLOTS],
    hist: Log2Histogram,
}

impl Dns {
    pub(super) fn read(obj: &Object, maps: &Maps<'_>) -> Self {
        let mut slots = [0u64; k::DNS_SLOTS];
        for (i, v) in percpu_slots::<u64>(obj, maps, "net_dns") {
            if let Some(s) = slots.get_mut(i) {
                *s = v.iter().sum();
            }
        }
        let mut hist = Log2Histogram::new(HIST_BUCKETS);
        for v in maps
            .percpu_slot::<SyscallStats>("net_dns_hist", 0)
            .unwrap_or_default()
        {
            hist.add(&v.hist, v.time_ns);
        }
        Self { slots, hist }
    }

    /// A reading with every slot counted (for tests).
    #[cfg(test)]
    pub(super) fn sample() -> Self {
        let mut hist = Log2Histogram::new(HIST_BUCKETS);
        hist.add(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 2048);
        Self {
            slots: [1; k::DNS_SLOTS],
            hist,
        }
    }

    pub(super) fn encode(self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let slots = self.slots;
        QUERIES.counter_series(
            enc,
            QTYPES
                .iter()
                .enumerate()
                .filter(|(i, _)| slots[*i] > 0)
                .map(|(i, q)| (vec![("qtype", q.to_string())], slots[i])),
        )?;
        RESPONSES.counter_series(
            enc,
            RCODES
                .iter()
                .enumerate()
                .filter(|(i, _)| slots[k::DNS_QTYPES + *i] > 0)
                .map(|(i, r)| (vec![("rcode", r.to_string())], slots[k::DNS_QTYPES + i])),
        )?;
        DURATION.histogram_series(enc, [(vec![], self.hist)])
    }
}
