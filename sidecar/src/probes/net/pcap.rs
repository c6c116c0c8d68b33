//! Packet capture: `GET /debug/pcap` streams the target's packets as a pcap file while the packet
//! programs copy them to a ring buffer (only while a capture is open, only with --allow-pcap).

use std::fmt;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData, RingBuf};
use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::net_pkt::{self as k, PcapCfg, PcapHdr, counter as c};

use super::{NetMode, Object, ProbeError, map_err};
use crate::metrics::Metric;
use crate::probes::Probe;
use crate::probes::object::Maps;

pub const PACKETS: Metric = Metric::counter(
    "ebpf_sidecar_pcap_packets",
    "Packets copied to a /debug/pcap capture.",
);
pub const DROPPED: Metric = Metric::counter(
    "ebpf_sidecar_pcap_dropped_packets",
    "Packets a /debug/pcap capture missed: reason ring_full (the reader fell behind) or rate (over the per-CPU packets-per-second bound).",
)
.labels(&["reason"]);

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

/// One open capture at a time; the ring buffer is handed to its reader thread and back. The ring,
/// the switch and the rate are this slot's (only with --allow-pcap): a capture holds only this
/// sidecar's target's packets.
pub struct Capture {
    allowed: bool,
    linktype: u32,
    ring: Mutex<Option<RingBuf<MapData>>>,
    cfg: Mutex<Option<Array<MapData, PcapCfg>>>,
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

impl Capture {
    /// `obj` was loaded with this slot's capture maps when `allowed` (without them otherwise).
    pub fn new(obj: &mut Object, allowed: bool, mode: NetMode) -> Result<Self, ProbeError> {
        let (ring, cfg) = if allowed {
            let cfg = obj.take_slot_map_as("net_pcap_cfg")?;
            (Some(obj.take_slot_map_as("net_pcap_ring")?), Some(cfg))
        } else {
            (None, None)
        };
        Ok(Self {
            allowed,
            linktype: match mode {
                NetMode::Cgroup => LINKTYPE_RAW,
                NetMode::Netns => LINKTYPE_ETHERNET,
            },
            // Mapping the 4 MiB ring puts 8 MiB of kernel pages in our RSS, and the kernel
            // makes it at all only when captures may happen.
            ring: Mutex::new(ring),
            cfg: Mutex::new(cfg),
            busy: AtomicBool::new(false),
        })
    }

    /// Open (enabled) or close the kernel's copying into this slot's ring.
    fn set_pcap(&self, cfg: PcapCfg) -> Result<(), ProbeError> {
        let mut arr = self.cfg.lock().unwrap_or_else(|p| p.into_inner());
        let arr = arr
            .as_mut()
            .ok_or_else(|| map_err("net_pcap_cfg", "no inner map for this slot"))?;
        arr.set(0, cfg, 0).map_err(|e| map_err("net_pcap_cfg", e))
    }

    /// Open a capture: the kernel starts copying packets, a thread turns them into pcap
    /// chunks sent on the returned channel until the time or size bound, or until the receiver
    /// is dropped (client gone). The kernel stops copying before the thread ends.
    pub fn start(
        self: &Arc<Self>,
        obj: Arc<dyn Probe>,
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
        if let Err(e) = self.set_pcap(cfg) {
            *self.ring.lock().unwrap_or_else(|p| p.into_inner()) = Some(ring);
            self.busy.store(false, Ordering::Release);
            return Err(PcapError::Kernel(e.to_string()));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        let me = self.clone();
        let linktype = self.linktype;
        let spawned = std::thread::Builder::new()
            .name("net-pcap".into())
            .spawn(move || {
                // The probe (and its object) outlives the capture.
                let _probe = obj;
                copy_packets(&mut ring, &tx, req, snaplen, linktype);
                if let Err(e) = me.set_pcap(PcapCfg::default()) {
                    tracing::error!("net: stopping the packet capture: {e}");
                }
                *me.ring.lock().unwrap_or_else(|p| p.into_inner()) = Some(ring);
                me.busy.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            // The ring went with the closure: later captures answer Busy (logged here).
            tracing::error!("net: cannot start the capture thread: {e}");
            let _ = self.set_pcap(PcapCfg::default());
            self.busy.store(false, Ordering::Release);
            return Err(PcapError::Kernel(e.to_string()));
        }
        Ok(rx)
    }
}

/// The capture thread's work: pcap chunks from the ring to `tx` until the time or size bound,
/// or until the receiver is dropped (client gone).
fn copy_packets(
    ring: &mut RingBuf<MapData>,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
    req: PcapRequest,
    snaplen: u32,
    linktype: u32,
) {
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
}

/// The capture and event counters of `net_pkt_counters`.
pub(super) struct Counters {
    captured: u64,
    dropped: u64,
    rate_dropped: u64,
}

impl Counters {
    pub(super) fn read(maps: &Maps<'_>) -> Self {
        let counter = |i| maps.counter("net_pkt_counters", i);
        Self {
            captured: counter(c::PCAP_CAPTURED),
            dropped: counter(c::PCAP_DROPPED),
            rate_dropped: counter(c::PCAP_RATE_DROPPED),
        }
    }

    /// A reading (for tests).
    #[cfg(test)]
    pub(super) fn sample() -> Self {
        Self {
            captured: 1,
            dropped: 2,
            rate_dropped: 3,
        }
    }

    pub(super) fn encode(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        PACKETS.counter_series(enc, [(vec![], self.captured)])?;
        DROPPED.counter_series(
            enc,
            [
                (vec![("reason", "ring_full".to_string())], self.dropped),
                (vec![("reason", "rate".to_string())], self.rate_dropped),
            ],
        )
    }
}

/// The router of `/debug/pcap`; `probe` is the net family, kept alive while a capture runs.
pub(super) fn router(capture: Arc<Capture>, probe: Arc<dyn Probe>) -> axum::Router {
    axum::Router::new().route(
        "/debug/pcap",
        axum::routing::get(move |q| pcap_route(capture.clone(), probe.clone(), q)),
    )
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
    probe: Arc<dyn Probe>,
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
}
