//! Packets and bytes by direction, IP family and protocol, counted by the packet programs
//! (cgroup_skb, or tc with --net-mode netns) in `net_packets`.

use std::fmt;

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::net::{self as k, PktStats};

use super::{Object, percpu_slots};
use crate::metrics::{Labels, Metric};
use crate::probes::object::Maps;

const SLOT_LABELS: &[&str] = &["direction", "family", "protocol"];
pub const PACKETS: Metric = Metric::counter(
    "ebpf_sidecar_network_packets",
    "Packets of the target's sockets (cgroup_skb on its cgroup), or with --net-mode netns of every interface of its network namespace (tc), by direction, IP family and protocol; a GSO/GRO batch counts once.",
)
.labels(SLOT_LABELS);
pub const BYTES: Metric = Metric::counter(
    "ebpf_sidecar_network_bytes",
    "Bytes of the target's packets at the IP layer (IP and transport headers included), by direction, IP family and protocol.",
)
.labels(SLOT_LABELS);

const DIRECTIONS: [&str; k::DIRS] = ["ingress", "egress"];
const IP_FAMILIES: [&str; k::FAMILIES] = ["ipv4", "ipv6", "other"];
const PROTOCOLS: [&str; k::PROTOS] = ["tcp", "udp", "icmp", "icmpv6", "other"];

/// The labels of `net_packets` slot `slot` (direction-major, then family, then protocol).
pub(super) fn slot_labels(slot: usize) -> Labels {
    let per_dir = k::FAMILIES * k::PROTOS;
    vec![
        ("direction", DIRECTIONS[slot / per_dir].to_string()),
        (
            "family",
            IP_FAMILIES[(slot % per_dir) / k::PROTOS].to_string(),
        ),
        ("protocol", PROTOCOLS[slot % k::PROTOS].to_string()),
    ]
}

/// The slots that saw packets, summed over CPUs.
pub(super) struct Packets(Vec<(usize, PktStats)>);

impl Packets {
    pub(super) fn read(obj: &Object, maps: &Maps<'_>) -> Self {
        let mut out = Vec::new();
        for (slot, vals) in percpu_slots::<PktStats>(obj, maps, "net_packets") {
            let mut s = PktStats::default();
            for v in vals {
                s.packets += v.packets;
                s.bytes += v.bytes;
            }
            if s.packets > 0 {
                out.push((slot, s));
            }
        }
        Self(out)
    }

    /// A reading with every slot counted (for tests).
    #[cfg(test)]
    pub(super) fn sample() -> Self {
        let s = PktStats {
            packets: 2,
            bytes: 100,
        };
        Self((0..k::PKT_SLOTS).map(|i| (i, s)).collect())
    }

    pub(super) fn encode(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        PACKETS.counter_series(
            enc,
            self.0.iter().map(|(s, v)| (slot_labels(*s), v.packets)),
        )?;
        BYTES.counter_series(enc, self.0.iter().map(|(s, v)| (slot_labels(*s), v.bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        assert_eq!(
            slot_labels(0),
            vec![
                ("direction", "ingress".to_string()),
                ("family", "ipv4".to_string()),
                ("protocol", "tcp".to_string())
            ]
        );
        assert_eq!(slot_labels(k::PKT_SLOTS - 1)[0].1, "egress");
        assert_eq!(slot_labels(15 + 5 + 3)[1].1, "ipv6");
        assert_eq!(slot_labels(15 + 5 + 3)[2].1, "icmpv6");
    }
}
