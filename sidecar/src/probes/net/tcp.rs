//! The TCP lifecycle, from `sock:inet_sock_set_state` and the tcp tracepoints: connections,
//! connect latency and lifetime, payload bytes per peer at close, retransmits, resets, accepts
//! by listening port.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::HIST_BUCKETS;
use sidecar_ebpf::SyscallStats;
use sidecar_ebpf::net::{self as k, PeerKey, PeerStats, counter as c};

use crate::metrics::{self, LabelBudget, Labels, Log2Histogram, Metric};
use crate::probes::object::Maps;

const DIRECTION: &[&str] = &["direction"];
pub const CONNECTIONS: Metric = Metric::counter(
    "ebpf_sidecar_tcp_connections",
    "TCP connections of the target that completed the handshake: active (connect) or passive (accepted).",
)
.labels(DIRECTION);
pub const CONNECT_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_tcp_connect_duration_seconds",
    "Time from SYN sent to connection established, for the target's outgoing TCP connections.",
);
pub const CONNECTION_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_tcp_connection_duration_seconds",
    "Lifetime of the target's TCP connections, from SYN (sent or received) to close.",
);
const PEER: &[&str] = &["peer"];
pub const SENT_BYTES: Metric = Metric::counter(
    "ebpf_sidecar_tcp_sent_bytes",
    "TCP payload bytes the target sent, counted when a connection closes, by peer (ip:port of the remote end; top-N by bytes, the rest in other).",
)
.labels(PEER)
.top_n(PEER);
pub const RECEIVED_BYTES: Metric = Metric::counter(
    "ebpf_sidecar_tcp_received_bytes",
    "TCP payload bytes the target received, counted when a connection closes, by peer (ip:port of the remote end; top-N by bytes, the rest in other).",
)
.labels(PEER)
.top_n(PEER);
pub const RETRANSMITS: Metric = Metric::counter(
    "ebpf_sidecar_tcp_retransmits",
    "TCP segments the target's sockets retransmitted.",
);
pub const RESETS: Metric = Metric::counter(
    "ebpf_sidecar_tcp_resets",
    "TCP resets sent or received on the target's sockets.",
)
.labels(DIRECTION);
const PORT: &[&str] = &["port"];
pub const ACCEPTS: Metric = Metric::counter(
    "ebpf_sidecar_tcp_accepts",
    "TCP connections accepted (handshake completed) by the target, by local listening port.",
)
.labels(PORT)
.top_n(PORT);

/// `ip:port` of a peer; loopback addresses read `loopback`, IPv4-mapped IPv6 reads as IPv4.
pub fn peer_label(key: &PeerKey) -> String {
    let ip: IpAddr = match key.family {
        2 => IpAddr::V4(Ipv4Addr::new(
            key.addr[0],
            key.addr[1],
            key.addr[2],
            key.addr[3],
        )),
        10 => Ipv6Addr::from(key.addr).to_canonical(),
        f => return format!("family_{f}"),
    };
    if ip.is_loopback() {
        format!("loopback:{}", key.port)
    } else if ip.is_ipv6() {
        format!("[{ip}]:{}", key.port)
    } else {
        format!("{ip}:{}", key.port)
    }
}

/// One scrape's reading of the TCP maps.
pub(super) struct Tcp {
    active: u64,
    passive: u64,
    retransmits: u64,
    resets_sent: u64,
    resets_received: u64,
    connect: Log2Histogram,
    lifetime: Log2Histogram,
    /// (sent, received) by peer label, the kernel's overflow slot as `other`.
    peers: BTreeMap<String, (u64, u64)>,
    /// (port, (), accepted).
    accepts: Vec<(String, (), u64)>,
}

impl Tcp {
    pub(super) fn read(maps: &Maps<'_>) -> Self {
        let counter = |i| maps.counter("net_counters", i);
        let hist = |i| {
            let mut h = Log2Histogram::new(HIST_BUCKETS);
            for v in maps
                .percpu_slot::<SyscallStats>("net_hists", i)
                .unwrap_or_default()
            {
                h.add(&v.hist, v.time_ns);
            }
            h
        };

        let mut peers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (key, vals) in maps.percpu_hash::<PeerKey, PeerStats>("net_peers") {
            let e = peers.entry(peer_label(&key)).or_default();
            for v in vals {
                e.0 += v.sent;
                e.1 += v.received;
            }
        }
        let (other_sent, other_received) = (counter(c::OTHER_SENT), counter(c::OTHER_RECEIVED));
        if other_sent + other_received > 0 || counter(c::OTHER_CLOSED) > 0 {
            let e = peers.entry(metrics::OTHER.to_string()).or_default();
            e.0 += other_sent;
            e.1 += other_received;
        }

        let accepts = maps
            .percpu_hash::<u32, u64>("net_accepts")
            .into_iter()
            .map(|(port, vals)| (port.to_string(), (), vals.iter().sum()))
            .collect();

        Self {
            active: counter(c::CONN_ACTIVE),
            passive: counter(c::CONN_PASSIVE),
            retransmits: counter(c::RETRANSMITS),
            resets_sent: counter(c::RESETS_SENT),
            resets_received: counter(c::RESETS_RECEIVED),
            connect: hist(k::HIST_CONNECT),
            lifetime: hist(k::HIST_LIFETIME),
            peers,
            accepts,
        }
    }

    /// A reading with every series present (for tests).
    #[cfg(test)]
    pub(super) fn sample() -> Self {
        let mut h = Log2Histogram::new(HIST_BUCKETS);
        h.add(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 2048);
        Self {
            active: 1,
            passive: 2,
            retransmits: 3,
            resets_sent: 4,
            resets_received: 5,
            connect: h.clone(),
            lifetime: h,
            peers: [("loopback:80".to_string(), (10, 20))].into(),
            accepts: vec![("80".to_string(), (), 2)],
        }
    }

    /// `peers` bounds the peer label, `ports` the port label (--top-n).
    pub(super) fn encode(
        self,
        enc: &mut DescriptorEncoder,
        peers: &LabelBudget,
        ports: &LabelBudget,
    ) -> fmt::Result {
        let direction = |d: &str| -> Labels { vec![("direction", d.to_string())] };
        CONNECTIONS.counter_series(
            enc,
            [
                (direction("active"), self.active),
                (direction("passive"), self.passive),
            ],
        )?;
        CONNECT_DURATION.histogram_series(enc, [(vec![], self.connect)])?;
        CONNECTION_DURATION.histogram_series(enc, [(vec![], self.lifetime)])?;

        let mut items: Vec<(String, u8, u64)> = Vec::new();
        for (peer, (sent, received)) in self.peers {
            items.push((peer.clone(), 0, sent));
            items.push((peer, 1, received));
        }
        let folded = peers.fold(items);
        let by_peer = |dir: u8| {
            folded
                .iter()
                .filter(move |(_, d, _)| *d == dir)
                .map(|(p, _, n)| (vec![("peer", p.clone())], *n))
        };
        SENT_BYTES.counter_series(enc, by_peer(0))?;
        RECEIVED_BYTES.counter_series(enc, by_peer(1))?;
        RETRANSMITS.counter_series(enc, [(vec![], self.retransmits)])?;
        RESETS.counter_series(
            enc,
            [
                (direction("sent"), self.resets_sent),
                (direction("received"), self.resets_received),
            ],
        )?;
        ACCEPTS.counter_series(
            enc,
            ports
                .fold(self.accepts)
                .into_iter()
                .map(|(p, _, n)| (vec![("port", p)], n)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(family: u16, addr: &[u8], port: u16) -> PeerKey {
        let mut k = PeerKey {
            family,
            port,
            ..Default::default()
        };
        k.addr[..addr.len()].copy_from_slice(addr);
        k
    }

    #[test]
    fn peers() {
        assert_eq!(peer_label(&key(2, &[10, 0, 0, 7], 443)), "10.0.0.7:443");
        assert_eq!(peer_label(&key(2, &[127, 0, 0, 2], 80)), "loopback:80");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(peer_label(&key(10, &v6, 53)), "loopback:53");
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 2];
        assert_eq!(peer_label(&key(10, &mapped, 8080)), "192.168.1.2:8080");
        let mut g = [0u8; 16];
        g[0] = 0x20;
        g[1] = 0x01;
        g[2] = 0x0d;
        g[3] = 0xb8;
        g[15] = 5;
        assert_eq!(peer_label(&key(10, &g, 443)), "[2001:db8::5]:443");
    }
}
