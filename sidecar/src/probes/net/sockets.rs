//! Socket calls that failed (connect, bind, listen: by errno, from the syscall exits) and UDP
//! datagrams dropped on arrival (`udp:udp_fail_queue_rcv_skb`).

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::net::{self as k, ErrorKey, counter as c};

use crate::metrics::{Labels, Metric};
use crate::probes::object::Maps;
use crate::tables::errno_name;

const ERRNO: &[&str] = &["errno"];
pub const CONNECT_ERRORS: Metric = Metric::counter(
    "ebpf_sidecar_tcp_connect_errors",
    "connect(2) calls of the target that failed, by errno (EINPROGRESS of non-blocking connects is not a failure).",
)
.labels(ERRNO);
pub const BIND_ERRORS: Metric = Metric::counter(
    "ebpf_sidecar_socket_bind_errors",
    "bind(2) and listen(2) calls of the target that failed, by errno.",
)
.labels(ERRNO);
pub const UDP_DROPS: Metric = Metric::counter(
    "ebpf_sidecar_udp_drops",
    "UDP datagrams dropped on arrival at the target's sockets (receive queue full or socket filter), from udp:udp_fail_queue_rcv_skb.",
);

/// One scrape's reading of `net_errors` and the UDP drop counter.
pub(super) struct Sockets {
    /// Failed calls by (kind, errno name).
    errors: BTreeMap<(u32, String), u64>,
    udp_drops: u64,
}

impl Sockets {
    pub(super) fn read(maps: &Maps<'_>) -> Self {
        let mut errors: BTreeMap<(u32, String), u64> = BTreeMap::new();
        for (key, vals) in maps.percpu_hash::<ErrorKey, u64>("net_errors") {
            *errors.entry((key.kind, errno_name(key.err))).or_default() += vals.iter().sum::<u64>();
        }
        Self {
            errors,
            udp_drops: maps.counter("net_counters", c::UDP_DROPS),
        }
    }

    /// A reading with every series present (for tests).
    #[cfg(test)]
    pub(super) fn sample() -> Self {
        Self {
            errors: [
                ((k::ERR_CONNECT, "ECONNREFUSED".to_string()), 1),
                ((k::ERR_BIND, "EADDRINUSE".to_string()), 2),
            ]
            .into(),
            udp_drops: 3,
        }
    }

    pub(super) fn encode_errors(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let of_kind = |kind: u32| {
            self.errors
                .iter()
                .filter(move |((k, _), _)| *k == kind)
                .map(|((_, e), n)| (vec![("errno", e.clone())], *n))
        };
        CONNECT_ERRORS.counter_series(enc, of_kind(k::ERR_CONNECT))?;
        BIND_ERRORS.counter_series(enc, of_kind(k::ERR_BIND))
    }

    pub(super) fn encode_udp_drops(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let labels: Labels = vec![];
        UDP_DROPS.counter_series(enc, [(labels, self.udp_drops)])
    }
}
