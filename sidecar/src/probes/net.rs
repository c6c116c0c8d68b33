//! Network family: packets and bytes by direction/family/protocol, the TCP lifecycle
//! (connections, connect latency, lifetime, bytes per peer at close, retransmits, resets,
//! accepts), failed connect/bind/listen by errno and UDP receive drops. Aggregated in the kernel;
//! kernel side: `sidecar-ebpf/bpf/net.bpf.c`.
//!
//! Packets come from cgroup_skb programs attached to the target's cgroup v2 directory, so they
//! follow the target: [`Probe::on_target`] re-attaches them when it restarts in a new cgroup and
//! detaches them when it goes away.

// TODO(contract): declare every metric here.
pub const METRICS: &[crate::metrics::Metric] = &[];
pub use net_pkt::ROUTES;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aya::maps::{PerCpuArray, PerCpuHashMap};
use aya::programs::CgroupSkbAttachType;
use aya::programs::cgroup_skb::CgroupSkbLinkId;
use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::net::{
    self as k, ErrorKey, HttpKey, HttpPathKey, PeerKey, PeerStats, PktStats, counter as c,
};
use sidecar_ebpf::{HIST_BUCKETS, SyscallStats};

use super::dispatch::Side;
use super::net_pkt::{self, NetMode};
use super::object::percpu_counter;
use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::metrics::{self, LabelBudget, Labels, Log2Histogram};
use crate::monitored::Resolved;
use crate::tables::errno_name;

const INGRESS: &str = "net_ingress";
const EGRESS: &str = "net_egress";

/// The cgroup the packet programs are attached to, and their links.
struct Attached {
    cgroup_id: u64,
    links: Vec<(&'static str, CgroupSkbLinkId)>,
}

pub struct Net {
    /// Shared with the thread that follows the interfaces in --net-mode netns.
    obj: Arc<Object>,
    attached: Mutex<Option<Attached>>,
    peers: LabelBudget,
    ports: LabelBudget,
    /// `--http-paths`: normalised paths admitted as labels.
    paths: Option<LabelBudget>,
    /// HTTP is read in the packet programs (so it needs the cgroup attachment).
    http_from_packets: bool,
    mode: NetMode,
    tc: Mutex<Option<net_pkt::TcAttached>>,
    /// Interfaces the classifiers are attached to now (--net-mode netns).
    tc_interfaces: Arc<AtomicUsize>,
    capture: Arc<net_pkt::Capture>,
    events: net_pkt::Events,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let http = [u8::from(opts.net_http)];
    let paths = [u8::from(opts.http_paths)];
    // In netns mode there is no socket on tc ingress to pair requests with: read HTTP from the
    // syscalls there.
    let http_syscalls = opts.net_http_syscalls || opts.net_mode == NetMode::Netns;
    let syscalls = [u8::from(http_syscalls)];
    let events = [u8::from(opts.net_events)];
    let mut obj = Object::load_with(
        "net",
        sidecar_ebpf::objects::NET,
        &[
            ("http_enabled", &http[..]),
            ("http_paths", &paths[..]),
            ("http_syscalls", &syscalls[..]),
            ("events_enabled", &events[..]),
        ],
    )?;
    obj.attach_tp_btf("net_state", "inet_sock_set_state")?;
    obj.attach_raw_tp("net_retransmit", "tcp_retransmit_skb")?;
    obj.attach_raw_tp("net_send_reset", "tcp_send_reset")?;
    obj.attach_raw_tp("net_receive_reset", "tcp_receive_reset")?;
    obj.attach_raw_tp("net_udp_drop", "udp_fail_queue_rcv_skb")?;
    if opts.net_http && http_syscalls {
        // Only for the syscalls source; by default the packet programs read HTTP from TCP
        // segments and nothing runs per syscall for it.
        obj.attach_raw_tp("net_sys_enter", "sys_enter")?;
    }
    if opts.net_http && http_syscalls {
        // Payload calls finish in the raw sys_exit program, which counts the errors too.
        obj.attach_raw_tp("net_sys_exit", "sys_exit")?;
    } else {
        obj.attach_syscall_hook_via(
            &opts.syscall_dispatch,
            Side::Exit,
            "net_sys_exit_error",
            &["sys_exit_connect", "sys_exit_bind", "sys_exit_listen"],
            ("net_sys_exit", "sys_exit"),
        )?;
    }
    match opts.net_mode {
        NetMode::Cgroup => {
            obj.load_cgroup_skb(INGRESS)?;
            obj.load_cgroup_skb(EGRESS)?;
        }
        NetMode::Netns => {
            obj.load_classifier(net_pkt::TC_INGRESS)?;
            obj.load_classifier(net_pkt::TC_EGRESS)?;
        }
    }
    if opts.net_events {
        // accept() returning is the only place the accepting process is known.
        obj.attach_syscall_hook(
            "net_events_accept",
            &["sys_exit_accept", "sys_exit_accept4"],
            ("net_events_sys_exit", "sys_exit"),
        )?;
    }
    let capture = Arc::new(net_pkt::Capture::new(&obj, opts.allow_pcap, opts.net_mode)?);
    let events = net_pkt::Events::new(&obj, opts.net_events)?;
    Ok(Arc::new(Net {
        obj: Arc::new(obj),
        attached: Mutex::new(None),
        peers: LabelBudget::new(opts.top_n),
        ports: LabelBudget::new(opts.top_n),
        paths: opts.http_paths.then(|| LabelBudget::new(opts.top_n)),
        http_from_packets: opts.net_http && !http_syscalls,
        mode: opts.net_mode,
        tc: Mutex::new(None),
        tc_interfaces: Arc::new(AtomicUsize::new(0)),
        capture,
        events,
    }))
}

/// The path label of a `--http-paths` key: normalised, `other` for the kernel's overflow slot.
fn path_label(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    if end == 0 {
        return metrics::OTHER.to_string();
    }
    crate::http_path::normalize(&metrics::label_value(&raw[..end]))
}

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

const HTTP_METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"];
const HTTP_DIRS: [&str; k::HTTP_DIRS] = ["server", "client"];

const DIRECTIONS: [&str; k::DIRS] = ["ingress", "egress"];
const IP_FAMILIES: [&str; k::FAMILIES] = ["ipv4", "ipv6", "other"];
const PROTOCOLS: [&str; k::PROTOS] = ["tcp", "udp", "icmp", "icmpv6", "other"];

fn slot_labels(slot: usize) -> Labels {
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

impl Net {
    fn detach(&self, a: Attached) {
        for (prog, link) in a.links {
            // Fails harmlessly when the cgroup is already gone (its links went with it).
            if let Err(e) = self.obj.detach_cgroup_skb(prog, link) {
                tracing::debug!("net: detaching {prog}: {e}");
            }
        }
    }
}

impl Net {
    /// --net-mode netns: (re)attach the classifiers when the target's network namespace changes
    /// (a restarted container gets a new one; the old one's links die with its interfaces).
    fn on_target_netns(&self, target: Option<&Resolved>) -> Result<(), ProbeError> {
        let want = target.and_then(|t| Some((t.net_ns?, t.pid?)));
        if want.is_none() && target.is_some() {
            tracing::warn!(
                "net: no process of the target is visible yet, so its network namespace cannot \
                 be entered: packet counters (ebpf_sidecar_network_*) wait for one"
            );
        }
        let mut tc = self.tc.lock().unwrap_or_else(|p| p.into_inner());
        // Namespace inode numbers are reused as soon as one is freed (a restarted container
        // often gets its old number back), so the cgroup is part of the identity.
        let cgroup = target.and_then(|t| t.cgroup_id()).unwrap_or(0);
        if tc.as_ref().map(|a| (a.netns, a.cgroup_id)) == want.map(|w| (w.0, cgroup)) {
            return Ok(());
        }
        if let Some(old) = tc.take() {
            net_pkt::detach_netns(old);
        }
        let Some((netns, pid)) = want else {
            return Ok(());
        };
        let att = net_pkt::attach_netns(&self.obj, pid, netns, cgroup, &self.tc_interfaces)?;
        tracing::info!(
            netns,
            interfaces = att.interfaces.join(","),
            "net: tc packet counters attached in the target's network namespace"
        );
        *tc = Some(att);
        Ok(())
    }
}

impl Probe for Net {
    fn routes(self: Arc<Self>) -> Option<axum::Router> {
        let capture = self.capture.clone();
        let probe: Arc<dyn Probe> = self;
        Some(axum::Router::new().route(
            "/debug/pcap",
            axum::routing::get(move |q| net_pkt::pcap_route(capture.clone(), probe.clone(), q)),
        ))
    }

    fn start_events(&self, sink: crate::events::EventSink) -> Result<(), ProbeError> {
        self.events.start(sink)
    }

    fn name(&self) -> &'static str {
        "net"
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn on_target(&self, target: Option<&Resolved>) -> Result<(), ProbeError> {
        self.obj.set_target(target.map(|t| &t.filter))?;
        if self.mode == NetMode::Netns {
            return self.on_target_netns(target);
        }

        let want = target.and_then(|t| Some((t.cgroup_id()?, t.cgroup_dir.clone()?)));
        let mut attached = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        if attached.as_ref().map(|a| a.cgroup_id) == want.as_ref().map(|w| w.0) {
            return Ok(());
        }
        if let Some(old) = attached.take() {
            self.detach(old);
        }
        let Some((cgroup_id, dir)) = want else {
            if target.is_some() {
                tracing::warn!(
                    "net: the target's cgroup v2 directory is not reachable, so packet and byte \
                     counters (ebpf_sidecar_network_*) stay at zero; TCP and error metrics work{}",
                    if self.http_from_packets {
                        ", and HTTP needs --net-http syscalls"
                    } else {
                        ""
                    }
                );
            }
            return Ok(());
        };
        let fd = File::open(&dir).map_err(|e| ProbeError::Map {
            family: "net",
            map: format!("cgroup {}", dir.display()),
            detail: format!("opening the cgroup directory to attach cgroup_skb programs: {e}"),
        })?;
        let mut links = Vec::new();
        for (prog, ty) in [
            (INGRESS, CgroupSkbAttachType::Ingress),
            (EGRESS, CgroupSkbAttachType::Egress),
        ] {
            match self.obj.attach_cgroup_skb(prog, &fd, ty) {
                Ok(l) => links.push((prog, l)),
                Err(e) => {
                    self.detach(Attached { cgroup_id, links });
                    return Err(e);
                }
            }
        }
        tracing::info!(cgroup = %dir.display(), "net: packet counters attached");
        *attached = Some(Attached { cgroup_id, links });
        Ok(())
    }

    fn encode(&self, ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        let ebpf = self.obj.lock();
        let counter = |i| percpu_counter(&ebpf, "net_counters", i);

        let mut pkts: Vec<(usize, PktStats)> = Vec::new();
        if let Some(Ok(arr)) = ebpf
            .map("net_packets")
            .map(PerCpuArray::<_, PktStats>::try_from)
        {
            for (slot, vals) in arr.iter().enumerate() {
                let Ok(vals) = vals else { continue };
                let mut s = PktStats::default();
                for v in vals.iter() {
                    s.packets += v.packets;
                    s.bytes += v.bytes;
                }
                if s.packets > 0 {
                    pkts.push((slot, s));
                }
            }
        }

        let mut hists = [
            Log2Histogram::new(HIST_BUCKETS),
            Log2Histogram::new(HIST_BUCKETS),
        ];
        if let Some(Ok(arr)) = ebpf
            .map("net_hists")
            .map(PerCpuArray::<_, SyscallStats>::try_from)
        {
            for (i, h) in hists.iter_mut().enumerate() {
                if let Ok(vals) = arr.get(&(i as u32), 0) {
                    for v in vals.iter() {
                        h.add(&v.hist, v.time_ns);
                    }
                }
            }
        }

        let mut peers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        if let Some(Ok(m)) = ebpf
            .map("net_peers")
            .map(PerCpuHashMap::<_, PeerKey, PeerStats>::try_from)
        {
            for (key, vals) in m.iter().filter_map(|r| r.ok()) {
                let e = peers.entry(peer_label(&key)).or_default();
                for v in vals.iter() {
                    e.0 += v.sent;
                    e.1 += v.received;
                }
            }
        }
        let (other_sent, other_received) = (counter(c::OTHER_SENT), counter(c::OTHER_RECEIVED));
        if other_sent + other_received > 0 || counter(c::OTHER_CLOSED) > 0 {
            let e = peers.entry(metrics::OTHER.to_string()).or_default();
            e.0 += other_sent;
            e.1 += other_received;
        }

        let mut errors: BTreeMap<(u32, String), u64> = BTreeMap::new();
        if let Some(Ok(m)) = ebpf
            .map("net_errors")
            .map(PerCpuHashMap::<_, ErrorKey, u64>::try_from)
        {
            for (key, vals) in m.iter().filter_map(|r| r.ok()) {
                *errors.entry((key.kind, errno_name(key.err))).or_default() +=
                    vals.iter().sum::<u64>();
            }
        }

        let mut accepts: Vec<(String, (), u64)> = Vec::new();
        if let Some(Ok(m)) = ebpf
            .map("net_accepts")
            .map(PerCpuHashMap::<_, u32, u64>::try_from)
        {
            for (port, vals) in m.iter().filter_map(|r| r.ok()) {
                accepts.push((port.to_string(), (), vals.iter().sum()));
            }
        }

        let mut http: BTreeMap<(u32, u32, u32), u64> = BTreeMap::new();
        if let Some(Ok(m)) = ebpf
            .map("net_http_requests")
            .map(PerCpuHashMap::<_, HttpKey, u64>::try_from)
        {
            for (key, vals) in m.iter().filter_map(|r| r.ok()) {
                *http.entry((key.dir, key.method, key.status)).or_default() +=
                    vals.iter().sum::<u64>();
            }
        }
        // --http-paths: (path, (dir, method, status), stats), paths normalised then budgeted.
        let mut by_path: Vec<(String, (u32, u32, u32), Log2Histogram)> = Vec::new();
        if let (Some(Ok(m)), true) = (
            ebpf.map("net_http_paths")
                .map(PerCpuHashMap::<_, HttpPathKey, SyscallStats>::try_from),
            self.paths.is_some(),
        ) {
            for (key, vals) in m.iter().filter_map(|r| r.ok()) {
                let mut h = Log2Histogram::new(HIST_BUCKETS);
                for v in vals.iter() {
                    h.add(&v.hist, v.time_ns);
                }
                by_path.push((path_label(&key.path), (key.dir, key.method, key.status), h));
            }
        }
        let mut http_hists: Vec<(u32, u32, Log2Histogram)> = Vec::new();
        if let Some(Ok(arr)) = ebpf
            .map("net_http_hists")
            .map(PerCpuArray::<_, SyscallStats>::try_from)
        {
            for (i, vals) in arr.iter().enumerate() {
                let Ok(vals) = vals else { continue };
                let mut h = Log2Histogram::new(HIST_BUCKETS);
                for v in vals.iter() {
                    h.add(&v.hist, v.time_ns);
                }
                if h.count() > 0 {
                    let (d, m) = (i / k::HTTP_METHODS, i % k::HTTP_METHODS);
                    http_hists.push((d as u32, m as u32, h));
                }
            }
        }

        let untracked: Vec<(Labels, u64)> = k::HTTP_UNTRACKED_REASONS
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    vec![("reason", r.to_string())],
                    counter(c::HTTP_UNTRACKED + i as u32),
                )
            })
            .collect();
        let scalars = [
            counter(c::CONN_ACTIVE),
            counter(c::CONN_PASSIVE),
            counter(c::RETRANSMITS),
            counter(c::RESETS_SENT),
            counter(c::RESETS_RECEIVED),
            counter(c::UDP_DROPS),
        ];
        drop(ebpf);
        let [active, passive, retrans, rst_sent, rst_received, udp_drops] = scalars;

        metrics::counter(
            enc,
            "ebpf_sidecar_network_packets",
            "Packets of the target's sockets (cgroup_skb on its cgroup), or with --net-mode netns of every interface of its network namespace (tc), by direction, IP family and protocol; a GSO/GRO batch counts once.",
            pkts.iter().map(|(s, v)| (slot_labels(*s), v.packets)),
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_network_bytes",
            "Bytes of the target's packets at the IP layer (IP and transport headers included), by direction, IP family and protocol.",
            pkts.iter().map(|(s, v)| (slot_labels(*s), v.bytes)),
        )?;
        if self.mode == NetMode::Netns {
            metrics::gauge(
                enc,
                "ebpf_sidecar_net_tc_interfaces",
                "Interfaces of the target's network namespace the tc classifiers are attached to now (--net-mode netns); interfaces that appear later are added, removed ones dropped.",
                [(vec![], self.tc_interfaces.load(Ordering::Relaxed) as i64)],
            )?;
        }
        metrics::counter(
            enc,
            "ebpf_sidecar_tcp_connections",
            "TCP connections of the target that completed the handshake: active (connect) or passive (accepted).",
            [
                (vec![("direction", "active".to_string())], active),
                (vec![("direction", "passive".to_string())], passive),
            ],
        )?;
        let [connect_h, life_h] = hists;
        metrics::histogram(
            enc,
            "ebpf_sidecar_tcp_connect_duration_seconds",
            "Time from SYN sent to connection established, for the target's outgoing TCP connections.",
            [(vec![], connect_h)],
        )?;
        metrics::histogram(
            enc,
            "ebpf_sidecar_tcp_connection_duration_seconds",
            "Lifetime of the target's TCP connections, from SYN (sent or received) to close.",
            [(vec![], life_h)],
        )?;

        let mut items: Vec<(String, u8, u64)> = Vec::new();
        for (peer, (sent, received)) in peers {
            items.push((peer.clone(), 0, sent));
            items.push((peer, 1, received));
        }
        let folded = self.peers.fold(items);
        metrics::counter(
            enc,
            "ebpf_sidecar_tcp_sent_bytes",
            "TCP payload bytes the target sent, counted when a connection closes, by peer (ip:port of the remote end; top-N by bytes, the rest in other).",
            folded
                .iter()
                .filter(|(_, d, _)| *d == 0)
                .map(|(p, _, n)| (vec![("peer", p.clone())], *n)),
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_tcp_received_bytes",
            "TCP payload bytes the target received, counted when a connection closes, by peer (ip:port of the remote end; top-N by bytes, the rest in other).",
            folded
                .iter()
                .filter(|(_, d, _)| *d == 1)
                .map(|(p, _, n)| (vec![("peer", p.clone())], *n)),
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_tcp_retransmits",
            "TCP segments the target's sockets retransmitted.",
            [(vec![], retrans)],
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_tcp_resets",
            "TCP resets sent or received on the target's sockets.",
            [
                (vec![("direction", "sent".to_string())], rst_sent),
                (vec![("direction", "received".to_string())], rst_received),
            ],
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_tcp_accepts",
            "TCP connections accepted (handshake completed) by the target, by local listening port.",
            self.ports
                .fold(accepts)
                .into_iter()
                .map(|(p, _, n)| (vec![("port", p)], n)),
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_tcp_connect_errors",
            "connect(2) calls of the target that failed, by errno (EINPROGRESS of non-blocking connects is not a failure).",
            errors
                .iter()
                .filter(|((kind, _), _)| *kind == k::ERR_CONNECT)
                .map(|((_, e), n)| (vec![("errno", e.clone())], *n)),
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_socket_bind_errors",
            "bind(2) and listen(2) calls of the target that failed, by errno.",
            errors
                .iter()
                .filter(|((kind, _), _)| *kind == k::ERR_BIND)
                .map(|((_, e), n)| (vec![("errno", e.clone())], *n)),
        )?;
        let name = |v: u32, names: &[&str]| {
            names
                .get(v as usize)
                .map_or_else(|| "other".to_string(), |n| n.to_string())
        };
        if !ctx.options.net_http {
            http.clear(); // --net-http off: the HTTP families stay empty
        }
        const REQUESTS_HELP: &str = "HTTP/1.x requests of the target, followed through its TCP connections with HTTP/1 framing (Content-Length and chunked bodies skipped, pipelined requests paired in order): direction server (request received) or client (request sent), method, status of the answer (and path with --http-paths).";
        const DURATION_HELP: &str =
            "Time from an HTTP/1.x request line to the status line of its answer, per connection.";
        if let Some(budget) = &self.paths {
            // Normalised paths, then the top-N budget (sticky: an admitted path stays).
            let mut totals: BTreeMap<String, u64> = BTreeMap::new();
            for (p, _, h) in &by_path {
                *totals.entry(p.clone()).or_default() += h.count();
            }
            let admitted: std::collections::HashSet<String> = budget
                .fold(totals.into_iter().map(|(p, n)| (p, (), n)).collect())
                .into_iter()
                .map(|(p, _, _)| p)
                .collect();
            let mut requests: BTreeMap<(u32, u32, u32, String), u64> = BTreeMap::new();
            let mut hists: BTreeMap<(u32, u32, String), Log2Histogram> = BTreeMap::new();
            for (p, (d, m, st), h) in by_path {
                let p = if admitted.contains(&p) {
                    p
                } else {
                    metrics::OTHER.to_string()
                };
                *requests.entry((d, m, st, p.clone())).or_default() += h.count();
                hists
                    .entry((d, m, p))
                    .or_insert_with(|| Log2Histogram::new(HIST_BUCKETS))
                    .add(&h.buckets, h.sum_ns);
            }
            metrics::counter(
                enc,
                "ebpf_sidecar_http_requests",
                REQUESTS_HELP,
                requests.into_iter().map(|((d, m, st, p), n)| {
                    (
                        vec![
                            ("direction", name(d, &HTTP_DIRS)),
                            ("method", name(m, &HTTP_METHODS)),
                            ("status", st.to_string()),
                            ("path", p),
                        ],
                        n,
                    )
                }),
            )?;
            metrics::histogram(
                enc,
                "ebpf_sidecar_http_request_duration_seconds",
                DURATION_HELP,
                hists.into_iter().map(|((d, m, p), h)| {
                    (
                        vec![
                            ("direction", name(d, &HTTP_DIRS)),
                            ("method", name(m, &HTTP_METHODS)),
                            ("path", p),
                        ],
                        h,
                    )
                }),
            )?;
        } else {
            metrics::counter(
                enc,
                "ebpf_sidecar_http_requests",
                REQUESTS_HELP,
                http.iter().map(|((d, m, st), n)| {
                    (
                        vec![
                            ("direction", name(*d, &HTTP_DIRS)),
                            ("method", name(*m, &HTTP_METHODS)),
                            ("status", st.to_string()),
                        ],
                        *n,
                    )
                }),
            )?;
            metrics::histogram(
                enc,
                "ebpf_sidecar_http_request_duration_seconds",
                DURATION_HELP,
                http_hists.into_iter().map(|(d, m, h)| {
                    (
                        vec![
                            ("direction", name(d, &HTTP_DIRS)),
                            ("method", name(m, &HTTP_METHODS)),
                        ],
                        h,
                    )
                }),
            )?;
        }
        if ctx.options.net_http {
            metrics::counter(
                enc,
                "ebpf_sidecar_http_untracked_streams",
                "HTTP/1.x connections of the target the recogniser stopped following (counted once each; their requests from then on are not counted), by reason: gap (bytes of a head or chunk-size line never seen), head (a head not whole in one segment or read, longer than 2048 bytes, or not a request or status line where one was due), body (chunked framing or Transfer-Encoding not followed, bad Content-Length, too many messages in one segment), pipeline (more than 8 requests waiting, an answer without a request), midstream (a request line on a connection already carrying data when first seen).",
                untracked,
            )?;
        }
        let labels: Labels = vec![];
        metrics::counter(
            enc,
            "ebpf_sidecar_udp_drops",
            "UDP datagrams dropped on arrival at the target's sockets (receive queue full or socket filter), from udp:udp_fail_queue_rcv_skb.",
            [(labels, udp_drops)],
        )?;
        net_pkt::encode_dns(&self.obj, enc)?;
        net_pkt::encode_counters(&self.obj, enc)
    }

    fn lost_events(&self) -> u64 {
        let ebpf = self.obj.lock();
        let lost = percpu_counter(&ebpf, "net_counters", c::LOST_CONNS)
            + percpu_counter(&ebpf, "net_counters", c::LOST_KEYS);
        drop(ebpf);
        lost + net_pkt::lost_events(&self.obj)
    }
}

/// The net family's flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// net family: recognise HTTP/1.x requests and answers (ebpf_sidecar_http_*). `on` (=
    /// `packets`) reads the start of the target's TCP segments in the packet programs, at no cost
    /// per syscall; `syscalls` reads read/write payloads instead (for targets filtered by pid
    /// namespace, which have no cgroup for packet programs; one more program on every syscall of
    /// the host); `off` does neither.
    #[arg(long, value_name = "on|packets|syscalls|off", default_value = "on", value_parser = ["on", "packets", "syscalls", "off"], global = true)]
    net_http: String,
    /// net: where packets are counted (and DNS parsed, and captured). `cgroup`: cgroup_skb on
    /// the target's cgroup (its own sockets). `netns`: tc on every interface of the target's
    /// network namespace (all its traffic, other processes sharing it included); needs
    /// CAP_SYS_ADMIN and CAP_NET_ADMIN.
    #[arg(long, value_name = "cgroup|netns", default_value = "cgroup", value_parser = ["cgroup", "netns"], global = true)]
    net_mode: String,
    /// net: serve GET /debug/pcap?seconds=N&snaplen=S (packet captures; payloads leave the
    /// kernel, so it is off unless given).
    #[arg(long, global = true)]
    allow_pcap: bool,
    /// net: TCP connect/accept/close events (pid, comm, addresses, bytes, duration) on
    /// /events (kinds tcp_connect, tcp_accept, tcp_close) and --events-out.
    #[arg(long, global = true)]
    net_events: bool,
}

impl super::FamilyArgs for Args {
    fn apply(self, s: &mut super::Setup<'_>) -> Result<(), String> {
        let o = &mut *s.options;
        o.net_http = self.net_http != "off";
        o.net_http_syscalls = self.net_http == "syscalls";
        o.net_mode = if self.net_mode == "netns" {
            NetMode::Netns
        } else {
            NetMode::Cgroup
        };
        o.allow_pcap = self.allow_pcap;
        o.net_events = self.net_events;
        if s.run && o.net_mode == NetMode::Netns {
            // CMD would share the sidecar's network namespace: tc there counts every process's
            // traffic as the target's.
            return Err("--net-mode netns watches a container's or pod's own network namespace, and run starts CMD in this one (shared with every other process here); use run with the default --net-mode cgroup, or --net-mode netns with --target-container/--target-pid or as a sidecar".into());
        }
        Ok(())
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
