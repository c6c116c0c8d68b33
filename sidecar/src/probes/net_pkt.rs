//! Network family, packet side: DNS metrics, packet capture (`/debug/pcap`), connection events
//! (`--net-events`) and the tc attachment of `--net-mode netns`. Kernel side:
//! `sidecar-ebpf/include/net_pkt.bpf.h` (part of the `net` object).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::programs::TcAttachType;
use aya::programs::tc::SchedClassifierLinkId;
use prometheus_client::encoding::DescriptorEncoder;
use serde_json::{Value, json};
use sidecar_ebpf::net_pkt::{self as k, ConnEvent, PcapCfg, PcapHdr, counter as c};
use sidecar_ebpf::{HIST_BUCKETS, SyscallStats};

use super::object::percpu_counter;
use super::{Object, ProbeError};
use crate::events::{EventSink, rfc3339_from_monotonic};
use crate::metrics::{self, Log2Histogram};

pub const TC_INGRESS: &str = "net_tc_ingress";
pub const TC_EGRESS: &str = "net_tc_egress";

/// Where the packet programs sit (`--net-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetMode {
    /// cgroup_skb on the target's cgroup v2: the target's own sockets.
    #[default]
    Cgroup,
    /// tc on every interface of the target's network namespace: everything crossing them.
    Netns,
}

pub const QTYPES: [&str; k::DNS_QTYPES] = [
    "A", "AAAA", "CNAME", "MX", "TXT", "PTR", "SRV", "NS", "SOA", "ANY", "other",
];
pub const RCODES: [&str; k::DNS_RCODES] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];

fn map_err(map: &str, detail: impl fmt::Display) -> ProbeError {
    ProbeError::Map {
        family: "net",
        map: map.to_string(),
        detail: detail.to_string(),
    }
}

fn take_ring(obj: &Object, name: &str) -> Result<RingBuf<MapData>, ProbeError> {
    let mut ebpf = obj.lock();
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| map_err(name, "missing"))?;
    RingBuf::try_from(map).map_err(|e| map_err(name, e))
}

/// The DNS metrics, read at scrape time.
pub fn encode_dns(obj: &Object, enc: &mut DescriptorEncoder) -> fmt::Result {
    let mut slots = [0u64; k::DNS_SLOTS];
    let mut hist = Log2Histogram::new(HIST_BUCKETS);
    {
        let ebpf = obj.lock();
        if let Some(Ok(arr)) = ebpf.map("net_dns").map(PerCpuArray::<_, u64>::try_from) {
            for (i, v) in arr.iter().enumerate().take(k::DNS_SLOTS) {
                if let Ok(v) = v {
                    slots[i] = v.iter().sum();
                }
            }
        }
        if let Some(Ok(arr)) = ebpf
            .map("net_dns_hist")
            .map(PerCpuArray::<_, SyscallStats>::try_from)
            && let Ok(vals) = arr.get(&0, 0)
        {
            for v in vals.iter() {
                hist.add(&v.hist, v.time_ns);
            }
        }
    }
    metrics::counter(
        enc,
        "ebpf_sidecar_dns_queries",
        "DNS queries on port 53 (UDP, and TCP messages that start a segment) sent or received by the target, by the type of the first question.",
        QTYPES
            .iter()
            .enumerate()
            .filter(|(i, _)| slots[*i] > 0)
            .map(|(i, q)| (vec![("qtype", q.to_string())], slots[i])),
    )?;
    metrics::counter(
        enc,
        "ebpf_sidecar_dns_responses",
        "DNS answers to the queries counted in ebpf_sidecar_dns_queries_total, by response code.",
        RCODES
            .iter()
            .enumerate()
            .filter(|(i, _)| slots[k::DNS_QTYPES + *i] > 0)
            .map(|(i, r)| (vec![("rcode", r.to_string())], slots[k::DNS_QTYPES + i])),
    )?;
    metrics::histogram(
        enc,
        "ebpf_sidecar_dns_duration_seconds",
        "Time from a DNS query to its answer (same port and id), as seen at the target's hook.",
        [(vec![], hist)],
    )
}

/// Capture and event counters, read at scrape time.
pub fn encode_counters(obj: &Object, enc: &mut DescriptorEncoder) -> fmt::Result {
    let (captured, dropped, rate_dropped) = {
        let ebpf = obj.lock();
        (
            percpu_counter(&ebpf, "net_pkt_counters", c::PCAP_CAPTURED),
            percpu_counter(&ebpf, "net_pkt_counters", c::PCAP_DROPPED),
            percpu_counter(&ebpf, "net_pkt_counters", c::PCAP_RATE_DROPPED),
        )
    };
    metrics::counter(
        enc,
        "ebpf_sidecar_pcap_packets",
        "Packets copied to a /debug/pcap capture.",
        [(vec![], captured)],
    )?;
    metrics::counter(
        enc,
        "ebpf_sidecar_pcap_dropped_packets",
        "Packets a /debug/pcap capture missed: reason ring_full (the reader fell behind) or rate (over the per-CPU packets-per-second bound).",
        [
            (vec![("reason", "ring_full".to_string())], dropped),
            (vec![("reason", "rate".to_string())], rate_dropped),
        ],
    )
}

pub fn lost_events(obj: &Object) -> u64 {
    let ebpf = obj.lock();
    percpu_counter(&ebpf, "net_pkt_counters", c::EVENTS_LOST)
}

// ---- packet capture ----

/// Most seconds one capture may last.
pub const PCAP_MAX_SECONDS: u64 = 300;
/// Most bytes one capture may write (pcap file size); the capture ends there.
pub const PCAP_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Bytes of each packet kept when the request gives no snaplen (the kernel's most).
pub const PCAP_DEFAULT_SNAPLEN: u32 = k::PCAP_SNAP_MAX;
/// Packets per second per CPU copied before the rest are dropped (and counted).
pub const PCAP_MAX_PPS: u32 = 50_000;

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error(
        "packet capture is disabled: start the sidecar with --allow-pcap to enable /debug/pcap (captures hold payloads, which may be sensitive)"
    )]
    NotAllowed,
    #[error("another capture is running; try again when it ends")]
    Busy,
    #[error("{0}")]
    BadRequest(String),
    #[error("starting the capture: {0}")]
    Kernel(String),
}

/// A capture request: how long, how much of each packet, how many bytes at most.
#[derive(Clone, Copy, Debug)]
pub struct PcapRequest {
    pub seconds: u64,
    pub snaplen: u32,
    pub max_bytes: u64,
}

/// One open capture at a time; the ring buffer is handed to its reader thread and back.
pub struct Capture {
    allowed: bool,
    linktype: u32,
    ring: Mutex<Option<RingBuf<MapData>>>,
    busy: AtomicBool,
}

/// LINKTYPE_RAW: packets start at the IP header (cgroup_skb sees no link header).
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_ETHERNET: u32 = 1;

/// The pcap file header (nanosecond-resolution variant, which tcpdump, tshark and Wireshark read).
pub fn pcap_file_header(snaplen: u32, linktype: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(24);
    h.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&4u16.to_le_bytes());
    h.extend_from_slice(&0i32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&snaplen.to_le_bytes());
    h.extend_from_slice(&linktype.to_le_bytes());
    h
}

/// One pcap record: header (wall-clock seconds and nanoseconds, captured and original length)
/// and the captured bytes.
pub fn pcap_record(out: &mut Vec<u8>, unix_ns: u128, orig_len: u32, data: &[u8]) {
    out.extend_from_slice(&((unix_ns / 1_000_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&((unix_ns % 1_000_000_000) as u32).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&orig_len.to_le_bytes());
    out.extend_from_slice(data);
}

fn set_pcap(obj: &Object, cfg: PcapCfg) -> Result<(), ProbeError> {
    let mut ebpf = obj.lock();
    let map = ebpf
        .map_mut("net_pcap_cfg")
        .ok_or_else(|| map_err("net_pcap_cfg", "missing"))?;
    let mut arr: Array<_, PcapCfg> =
        Array::try_from(map).map_err(|e| map_err("net_pcap_cfg", e))?;
    arr.set(0, cfg, 0).map_err(|e| map_err("net_pcap_cfg", e))
}

impl Capture {
    pub fn new(obj: &Object, allowed: bool, mode: NetMode) -> Result<Self, ProbeError> {
        Ok(Self {
            allowed,
            linktype: match mode {
                NetMode::Cgroup => LINKTYPE_RAW,
                NetMode::Netns => LINKTYPE_ETHERNET,
            },
            // Mapping the 4 MiB ring puts 8 MiB of kernel pages in our RSS: only when
            // captures may happen.
            ring: Mutex::new(if allowed {
                Some(take_ring(obj, "net_pcap_ring")?)
            } else {
                None
            }),
            busy: AtomicBool::new(false),
        })
    }

    /// Open a capture: the kernel starts copying packets, a thread turns them into pcap
    /// chunks sent on the returned channel until the time or size bound, or until the receiver
    /// is dropped (client gone). The kernel stops copying before the thread ends.
    pub fn start(
        self: &Arc<Self>,
        obj: Arc<dyn super::Probe>,
        req: PcapRequest,
    ) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>, PcapError> {
        if !self.allowed {
            return Err(PcapError::NotAllowed);
        }
        if req.seconds == 0 || req.seconds > PCAP_MAX_SECONDS {
            return Err(PcapError::BadRequest(format!(
                "seconds must be 1..={PCAP_MAX_SECONDS}"
            )));
        }
        if req.snaplen == 0 {
            return Err(PcapError::BadRequest("snaplen must be at least 1".into()));
        }
        let snaplen = req.snaplen.min(k::PCAP_SNAP_MAX);
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(PcapError::Busy);
        }
        let Some(mut ring) = self.ring.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            self.busy.store(false, Ordering::Release);
            return Err(PcapError::Busy);
        };
        // Leftovers of an earlier capture (copied after it stopped reading) are not ours.
        while ring.next().is_some() {}
        let cfg = PcapCfg {
            enabled: 1,
            snaplen,
            max_pps: PCAP_MAX_PPS,
            pad: 0,
        };
        if let Err(e) = set_pcap(obj.object(), cfg) {
            *self.ring.lock().unwrap_or_else(|p| p.into_inner()) = Some(ring);
            self.busy.store(false, Ordering::Release);
            return Err(PcapError::Kernel(e.to_string()));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        let me = self.clone();
        let obj2 = obj.clone();
        let linktype = self.linktype;
        let spawned = std::thread::Builder::new()
            .name("net-pcap".into())
            .spawn(move || {
                let offset = crate::events::realtime_offset_ns();
                let deadline = Instant::now() + Duration::from_secs(req.seconds);
                let mut written = 24u64;
                let mut open = tx
                    .blocking_send(pcap_file_header(snaplen, linktype))
                    .is_ok();
                let fd = ring.as_raw_fd();
                let hdr = std::mem::size_of::<PcapHdr>();
                while open && Instant::now() < deadline && written < req.max_bytes {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 200) as i32) };
                    let mut chunk = Vec::new();
                    while let Some(item) = ring.next() {
                        if item.len() < hdr {
                            continue;
                        }
                        // SAFETY: the kernel wrote a struct net_pcap_hdr first (size checked);
                        // read_unaligned copes with the ring buffer's 8-byte alignment.
                        let h: PcapHdr = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                        let cap = (h.caplen as usize).min(item.len() - hdr);
                        let rec = 16 + cap as u64;
                        if written + rec > req.max_bytes {
                            written = req.max_bytes;
                            break;
                        }
                        written += rec;
                        let wall = (offset + h.ts_ns as i128).max(0) as u128;
                        pcap_record(&mut chunk, wall, h.len, &item[hdr..hdr + cap]);
                    }
                    if !chunk.is_empty() && tx.blocking_send(chunk).is_err() {
                        open = false;
                    }
                    if tx.is_closed() {
                        open = false;
                    }
                }
                if let Err(e) = set_pcap(obj.object(), PcapCfg::default()) {
                    tracing::error!("net: stopping the packet capture: {e}");
                }
                *me.ring.lock().unwrap_or_else(|p| p.into_inner()) = Some(ring);
                me.busy.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            // The ring went with the closure: later captures answer Busy (logged here).
            tracing::error!("net: cannot start the capture thread: {e}");
            let _ = set_pcap(obj2.object(), PcapCfg::default());
            self.busy.store(false, Ordering::Release);
            return Err(PcapError::Kernel(e.to_string()));
        }
        Ok(rx)
    }
}

// ---- connection events ----

pub const EVENT_KINDS: [&str; 3] = ["tcp_connect", "tcp_accept", "tcp_close"];

fn addr(family: u16, a: &[u8; 16], port: u16) -> String {
    if family == 10 {
        let ip = Ipv6Addr::from(*a);
        match ip.to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{port}"),
            None => format!("[{ip}]:{port}"),
        }
    } else {
        format!("{}:{port}", Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    }
}

/// One connection event as the JSON object served on /events.
pub fn event_json(e: &ConnEvent) -> Value {
    let kind = EVENT_KINDS
        .get(e.kind as usize)
        .copied()
        .unwrap_or("unknown");
    let end = e.comm.iter().position(|&b| b == 0).unwrap_or(e.comm.len());
    let mut v = json!({
        "time": rfc3339_from_monotonic(e.ts_ns),
        "kind": kind,
        "pid": e.pid,
        "comm": String::from_utf8_lossy(&e.comm[..end]),
        "family": if e.family == 10 { "ipv6" } else { "ipv4" },
        "local": addr(e.family, &e.laddr, e.lport),
        "remote": addr(e.family, &e.raddr, e.rport),
        "local_port": e.lport,
        "remote_port": e.rport,
        "duration_seconds": e.duration_ns as f64 / 1e9,
    });
    if e.kind == k::EV_CLOSE {
        let o = v.as_object_mut().expect("object");
        o.insert("sent_bytes".into(), json!(e.sent));
        o.insert("received_bytes".into(), json!(e.received));
    }
    v
}

/// The connection event ring (only with --net-events), read by a thread once started.
pub struct Events(Mutex<Option<RingBuf<MapData>>>);

impl Events {
    pub fn new(obj: &Object, enabled: bool) -> Result<Self, ProbeError> {
        let ring = if enabled {
            Some(take_ring(obj, "net_events")?)
        } else {
            None
        };
        Ok(Self(Mutex::new(ring)))
    }

    pub fn start(&self, sink: EventSink) -> Result<(), ProbeError> {
        let Some(mut ring) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        std::thread::Builder::new()
            .name("net-events".into())
            .spawn(move || {
                let fd = ring.as_raw_fd();
                loop {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 1000) };
                    let mut batch = Vec::new();
                    while let Some(item) = ring.next() {
                        if item.len() >= std::mem::size_of::<ConnEvent>() {
                            // SAFETY: the kernel wrote a whole struct net_conn_event (size
                            // checked); read_unaligned copes with the ring's alignment.
                            let e: ConnEvent =
                                unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                            batch.push(event_json(&e).to_string());
                        }
                    }
                    if !batch.is_empty() {
                        sink.publish(&batch);
                    }
                }
            })
            .map_err(|e| map_err("net_events", e))?;
        Ok(())
    }
}

// ---- --net-mode netns: tc on every interface of the target's network namespace ----

/// How often the interfaces are listed again when link notifications cannot be had.
const RESCAN: Duration = Duration::from_secs(2);

/// The classifiers in one network namespace. A thread that entered the namespace attached them
/// to every interface there and stays to follow interfaces that appear or go; dropping this
/// (or [`detach_netns`]) stops it and detaches every link.
pub struct TcAttached {
    pub netns: u64,
    pub cgroup_id: u64,
    /// The interfaces found at attach time.
    pub interfaces: Vec<String>,
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TcAttached {
    fn drop(&mut self) {
        let one = 1u64;
        // SAFETY: an 8-byte write of a u64 to our eventfd.
        unsafe { libc::write(self.stop.as_raw_fd(), (&one as *const u64).cast(), 8) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Interfaces (index, name) of the calling thread's network namespace.
fn interfaces() -> std::io::Result<Vec<(u32, String)>> {
    // SAFETY: if_nameindex returns a list ended by a zero entry, freed below.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            out.push((
                (*p).if_index,
                std::ffi::CStr::from_ptr((*p).if_name)
                    .to_string_lossy()
                    .into_owned(),
            ));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        Ok(out)
    }
}

/// A netlink socket of the calling thread's network namespace subscribed to its link
/// notifications (RTNLGRP_LINK: interfaces created, changed, deleted or moved away).
fn link_notifications() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket/bind calls; the fd is owned at once; sockaddr_nl is zeroed, then
    // filled, and passed with its own size.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_nl = std::mem::zeroed();
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = libc::RTMGRP_LINK as u32;
        if libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Interface indexes of the RTM_DELLINK messages in one netlink datagram (nlmsghdr of 16
/// bytes, then struct ifinfomsg whose ifi_index is at offset 4).
fn link_deletions(mut b: &[u8], out: &mut BTreeSet<u32>) {
    const HDR: usize = 16;
    while b.len() >= HDR {
        let len = u32::from_ne_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
        let ty = u16::from_ne_bytes(b[4..6].try_into().expect("2 bytes"));
        if len < HDR || len > b.len() {
            return;
        }
        if ty == libc::RTM_DELLINK && len >= HDR + 8 {
            let index = i32::from_ne_bytes(b[HDR + 4..HDR + 8].try_into().expect("4 bytes"));
            if index > 0 {
                out.insert(index as u32);
            }
        }
        let next = (len + 3) & !3; // NLMSG_ALIGN
        if next >= b.len() {
            return;
        }
        b = &b[next..];
    }
}

/// Read every pending notification, collecting deleted interfaces. Lost notifications
/// (ENOBUFS) need nothing more: the caller lists the interfaces again after every wake-up.
fn drain(fd: &OwnedFd, buf: &mut [u8], deleted: &mut BTreeSet<u32>) -> std::io::Result<()> {
    loop {
        // SAFETY: recv into a buffer we own, of its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                _ if n == 0 => Ok(()),
                Some(libc::EAGAIN) => Ok(()),
                Some(libc::ENOBUFS) | Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        link_deletions(&buf[..n as usize], deleted);
    }
}

/// The links of one interface.
struct Iface {
    name: String,
    links: Vec<(&'static str, SchedClassifierLinkId)>,
}

fn detach_links(obj: &Object, links: Vec<(&'static str, SchedClassifierLinkId)>) {
    for (prog, link) in links {
        // A TCX link whose interface went away is already out of the datapath; detaching
        // closes its fd (and takes it off an interface moved to another namespace).
        if let Err(e) = obj.detach_classifier(prog, link) {
            tracing::debug!("net: detaching {prog}: {e}");
        }
    }
}

/// The classifiers' interfaces in the namespace of the thread that owns this.
struct Follower {
    obj: Arc<Object>,
    attached: BTreeMap<u32, Iface>,
    /// Interfaces the classifiers could not be attached to: warned about once, not retried
    /// while they exist.
    failed: BTreeSet<u32>,
    count: Arc<AtomicUsize>,
}

impl Follower {
    fn attach(&mut self, index: u32, name: &str) -> Result<(), ProbeError> {
        let mut links = Vec::new();
        for (prog, ty) in [
            (TC_INGRESS, TcAttachType::Ingress),
            (TC_EGRESS, TcAttachType::Egress),
        ] {
            if aya::util::KernelVersion::current()
                .is_ok_and(|v| v < aya::util::KernelVersion::new(6, 6, 0))
            {
                // Netlink attachment needs the clsact qdisc (it may already exist).
                let _ = aya::programs::tc::qdisc_add_clsact(name);
            }
            match self.obj.attach_classifier(prog, name, ty) {
                Ok(l) => links.push((prog, l)),
                Err(e) => {
                    detach_links(&self.obj, links);
                    return Err(e);
                }
            }
        }
        self.attached.insert(
            index,
            Iface {
                name: name.to_string(),
                links,
            },
        );
        self.count.store(self.attached.len(), Ordering::Relaxed);
        Ok(())
    }

    fn forget(&mut self, index: u32) -> Option<String> {
        self.failed.remove(&index);
        let iface = self.attached.remove(&index)?;
        detach_links(&self.obj, iface.links);
        self.count.store(self.attached.len(), Ordering::Relaxed);
        Some(iface.name)
    }

    fn forget_all(&mut self) {
        let all: Vec<u32> = self.attached.keys().copied().collect();
        for index in all {
            self.forget(index);
        }
    }

    /// Attach to the interfaces not covered yet and forget those gone (or reported deleted:
    /// an index deleted and reused in between is attached afresh).
    fn sync(&mut self, deleted: &BTreeSet<u32>) {
        let now = match interfaces() {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("net: listing the target's interfaces: {e}");
                return;
            }
        };
        let present: BTreeMap<u32, &str> = now.iter().map(|(i, n)| (*i, n.as_str())).collect();
        let gone: Vec<u32> = self
            .attached
            .keys()
            .chain(self.failed.iter())
            .filter(|i| deleted.contains(i) || !present.contains_key(i))
            .copied()
            .collect();
        for index in gone {
            if let Some(name) = self.forget(index) {
                tracing::info!(
                    interface = name,
                    "net: interface left the target's network namespace; its tc classifiers are detached"
                );
            }
        }
        for (index, name) in &now {
            if let Some(iface) = self.attached.get_mut(index) {
                // Renamed: the links follow the index.
                if iface.name != *name {
                    iface.name.clone_from(name);
                }
                continue;
            }
            if self.failed.contains(index) {
                continue;
            }
            match self.attach(*index, name) {
                Ok(()) => tracing::info!(
                    interface = name.as_str(),
                    "net: tc packet counters attached to a new interface of the target's network namespace"
                ),
                // Gone again before we got to it: nothing to report.
                Err(_) if !interfaces().is_ok_and(|l| l.contains(&(*index, name.clone()))) => {}
                Err(e) => {
                    tracing::warn!(
                        interface = name.as_str(),
                        "net: cannot attach the tc classifiers to a new interface of the target's \
                         network namespace, its packets are not counted: {e}"
                    );
                    self.failed.insert(*index);
                }
            }
        }
    }
}

/// The thread living in the target's network namespace: attach to every interface, report
/// the first result on `ready`, then follow interfaces until `stop` is written.
fn follow(
    mut f: Follower,
    ns: File,
    pid: u32,
    stop: OwnedFd,
    ready: std::sync::mpsc::SyncSender<Result<Vec<String>, String>>,
) {
    // SAFETY: a valid namespace fd; only this thread moves, and it stays there until it ends.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        let _ = ready.send(Err(format!("setns into /proc/{pid}/ns/net: {e}")));
        return;
    }
    drop(ns);
    // This thread may have been started before the sidecar dropped its capabilities (threads
    // keep their own): keep only what attaching needs (TCX links: NET_ADMIN, and SYS_ADMIN for
    // bpf(), which the sidecar keeps in this mode anyway).
    let keep: caps::CapsHashSet = [
        caps::Capability::CAP_NET_ADMIN,
        caps::Capability::CAP_SYS_ADMIN,
    ]
    .into_iter()
    .collect();
    if let Err(e) = crate::caps::drop_all_except(&keep) {
        tracing::debug!("net: dropping the capabilities of the netns thread: {e}");
    }
    // Subscribed before the first listing, so no interface falls between the two.
    let mut notes = match link_notifications() {
        Ok(fd) => Some(fd),
        Err(e) => {
            tracing::info!(
                "net: no link notifications in the target's network namespace ({e}); \
                 listing its interfaces every {} s instead",
                RESCAN.as_secs()
            );
            None
        }
    };
    let names = match interfaces() {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(format!("listing interfaces: {e}")));
            return;
        }
    };
    for (index, name) in &names {
        if let Err(e) = f.attach(*index, name) {
            f.forget_all();
            let _ = ready.send(Err(format!("interface {name}: {e}")));
            return;
        }
    }
    if ready
        .send(Ok(names.into_iter().map(|(_, n)| n).collect()))
        .is_err()
    {
        f.forget_all();
        return;
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let mut pfd = [
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A negative fd is ignored by poll.
                fd: notes.as_ref().map_or(-1, |s| s.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let timeout = if notes.is_some() {
            -1
        } else {
            RESCAN.as_millis() as i32
        };
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(pfd.as_mut_ptr(), 2, timeout) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            tracing::debug!("net: poll in the netns thread: {e}");
            std::thread::sleep(RESCAN);
        }
        if pfd[0].revents != 0 {
            break;
        }
        let mut deleted = BTreeSet::new();
        if let Some(s) = &notes
            && pfd[1].revents != 0
            && let Err(e) = drain(s, &mut buf, &mut deleted)
        {
            tracing::warn!(
                "net: link notifications of the target's network namespace failed ({e}); \
                 listing its interfaces every {} s instead",
                RESCAN.as_secs()
            );
            notes = None;
        }
        f.sync(&deleted);
    }
    f.forget_all();
}

/// Start a thread in the network namespace of `pid` (setns changes only the calling thread)
/// that attaches both classifiers to every interface there, then follows the interfaces that
/// appear or go; `count` holds how many are covered. Returns once the first attachment is done.
pub fn attach_netns(
    obj: &Arc<Object>,
    pid: u32,
    netns: u64,
    cgroup_id: u64,
    count: &Arc<AtomicUsize>,
) -> Result<TcAttached, ProbeError> {
    let err = |detail: String| ProbeError::Attach {
        family: "net",
        what: format!("attaching tc programs in the network namespace of pid {pid}"),
        detail,
    };
    let missing: Vec<&str> = [
        (
            caps::Capability::CAP_SYS_ADMIN,
            "CAP_SYS_ADMIN (to enter the namespace with setns)",
        ),
        (
            caps::Capability::CAP_NET_ADMIN,
            "CAP_NET_ADMIN (to attach tc programs)",
        ),
    ]
    .into_iter()
    .filter(|(c, _)| !caps::has_cap(None, caps::CapSet::Effective, *c).unwrap_or(false))
    .map(|(_, n)| n)
    .collect();
    if !missing.is_empty() {
        return Err(err(format!(
            "--net-mode netns needs {} (docker run --cap-add SYS_ADMIN --cap-add NET_ADMIN)",
            missing.join(" and ")
        )));
    }
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| err(format!("opening /proc/{pid}/ns/net: {e}")))?;
    // SAFETY: eventfd with flags only; the fd is owned at once.
    let stop = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if stop < 0 {
        return Err(err(format!("eventfd: {}", std::io::Error::last_os_error())));
    }
    // SAFETY: a fresh fd nobody else owns.
    let stop = unsafe { OwnedFd::from_raw_fd(stop) };
    let stop_rx = stop.try_clone().map_err(|e| err(format!("eventfd: {e}")))?;
    let f = Follower {
        obj: obj.clone(),
        attached: BTreeMap::new(),
        failed: BTreeSet::new(),
        count: count.clone(),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("net-netns".into())
        .spawn(move || follow(f, ns, pid, stop_rx, tx))
        .map_err(|e| err(format!("starting the netns thread: {e}")))?;
    let first = rx.recv();
    let mut att = TcAttached {
        netns,
        cgroup_id,
        interfaces: Vec::new(),
        stop,
        thread: Some(thread),
    };
    match first {
        Ok(Ok(interfaces)) => {
            att.interfaces = interfaces;
            Ok(att)
        }
        Ok(Err(detail)) => Err(err(detail)),
        Err(_) => Err(err("the netns thread ended before attaching".into())),
    }
}

/// Stop following the namespace and detach every link.
pub fn detach_netns(att: TcAttached) {
    drop(att);
}

pub const ROUTES: &[(&str, &str)] = &[(
    "/debug/pcap",
    "packet capture needs the net probe family (--probes ...,net)\n",
)];

#[derive(serde::Deserialize)]
pub struct PcapQuery {
    seconds: Option<u64>,
    snaplen: Option<u32>,
}

/// GET /debug/pcap: the target's packets for `seconds` (default 10) as a pcap file, streamed as
/// they come. `probe` is the net family, kept alive while the capture runs.
pub async fn pcap_route(
    capture: Arc<Capture>,
    probe: Arc<dyn super::Probe>,
    axum::extract::Query(q): axum::extract::Query<PcapQuery>,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let req = PcapRequest {
        seconds: q.seconds.unwrap_or(10),
        snaplen: q.snaplen.unwrap_or(PCAP_DEFAULT_SNAPLEN),
        max_bytes: PCAP_MAX_BYTES,
    };
    match capture.start(probe, req) {
        Ok(rx) => {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| {
                    (
                        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk)),
                        rx,
                    )
                })
            });
            (
                [
                    (header::CONTENT_TYPE, "application/vnd.tcpdump.pcap"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"ebpf-sidecar.pcap\"",
                    ),
                ],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Err(e) => {
            let code = match e {
                PcapError::NotAllowed => StatusCode::FORBIDDEN,
                PcapError::Busy => StatusCode::CONFLICT,
                PcapError::BadRequest(_) => StatusCode::BAD_REQUEST,
                PcapError::Kernel(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, format!("{e}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcap_layout() {
        let h = pcap_file_header(4096, LINKTYPE_RAW);
        assert_eq!(h.len(), 24);
        assert_eq!(&h[..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(h[20..24].try_into().unwrap()), 101);
        let mut r = Vec::new();
        pcap_record(&mut r, 1_500_000_000_123_456_789, 100, &[1, 2, 3]);
        assert_eq!(r.len(), 19);
        assert_eq!(
            u32::from_le_bytes(r[0..4].try_into().unwrap()),
            1_500_000_000
        );
        assert_eq!(u32::from_le_bytes(r[4..8].try_into().unwrap()), 123_456_789);
        assert_eq!(u32::from_le_bytes(r[8..12].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(r[12..16].try_into().unwrap()), 100);
    }

    #[test]
    fn link_deletions_are_read_from_netlink_datagrams() {
        let msg = |ty: u16, index: i32, len: u32| {
            let mut m = Vec::new();
            m.extend_from_slice(&len.to_ne_bytes());
            m.extend_from_slice(&ty.to_ne_bytes());
            m.extend_from_slice(&[0u8; 10]); // flags, seq, pid
            m.extend_from_slice(&[0u8; 4]); // ifi_family, pad, ifi_type
            m.extend_from_slice(&index.to_ne_bytes());
            m.resize(len.next_multiple_of(4) as usize, 0);
            m
        };
        let mut d = msg(libc::RTM_NEWLINK, 5, 32);
        d.extend(msg(libc::RTM_DELLINK, 7, 30)); // padded to 32
        d.extend(msg(libc::RTM_DELLINK, 9, 32));
        let mut out = BTreeSet::new();
        link_deletions(&d, &mut out);
        assert_eq!(out.into_iter().collect::<Vec<_>>(), [7, 9]);
        // A truncated datagram stops the walk without reading past it.
        let mut out = BTreeSet::new();
        link_deletions(&msg(libc::RTM_DELLINK, 3, 32)[..20], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn event_addresses() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(addr(2, &a, 80), "127.0.0.1:80");
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2];
        assert_eq!(addr(10, &mapped, 53), "10.0.0.2:53");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(addr(10, &v6, 443), "[::1]:443");
    }
}
