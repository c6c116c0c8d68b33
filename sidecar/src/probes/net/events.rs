//! Connection events (`--net-events`): tcp_connect, tcp_accept and tcp_close from the TCP
//! lifecycle hook and the accept exits, read from the `net_events` ring buffer by a thread and
//! published on the event stream.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use aya::maps::{MapData, RingBuf};
use serde_json::{Value, json};
use sidecar_ebpf::net_pkt::{self as k, ConnEvent, counter as c};

use super::{Object, ProbeError, map_err};
use crate::events::{EventSink, rfc3339_from_monotonic};
use crate::probes::object::Maps;

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

/// The connection event ring (only with --net-events: this slot's, so only this sidecar's target's
/// events), read by a thread once started.
pub struct Events(Mutex<Option<RingBuf<MapData>>>);

impl Events {
    pub fn new(obj: &mut Object, enabled: bool) -> Result<Self, ProbeError> {
        let ring = if enabled {
            Some(obj.take_slot_map_as("net_events")?)
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

/// Events the ring had no room for.
pub(super) fn lost(maps: &Maps<'_>) -> u64 {
    maps.counter("net_pkt_counters", c::EVENTS_LOST)
}

#[cfg(test)]
mod tests {
    use super::*;

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
