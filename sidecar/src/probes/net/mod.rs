//! Network family: packets and bytes by direction/family/protocol, the TCP lifecycle
//! (connections, connect latency, lifetime, bytes per peer at close, retransmits, resets,
//! accepts), failed connect/bind/listen by errno and UDP receive drops, HTTP/1.x requests, DNS,
//! packet capture and connection events. Aggregated in the kernel; kernel side:
//! `sidecar-ebpf/bpf/net.bpf.c` and `sidecar-ebpf/include/net_pkt.bpf.h`.
//!
//! Packets come from cgroup_skb programs attached to the target's cgroup v2 directory
//! ([`cgroup`]), or with --net-mode netns from tc classifiers on the interfaces of its network
//! namespace ([`netns`]), so they follow the target: [`Probe::on_target`] re-attaches them when it
//! restarts and detaches them when it goes away. Each scrape reads every map once, under one
//! lock, into the snapshots of [`packets`], [`tcp`], [`sockets`], [`http`], [`dns`] and [`pcap`],
//! then writes them in the order of [`METRICS`].
//!
//! On a shared kernel side every per-target map is this sidecar's slot's (the object's reads
//! resolve to it), the options that differ between targets are the slot's flags
//! (SIDECAR_SLOT_NET_*, set by `app::open_kernel_side`), and the cgroup_skb programs are the
//! set's ([`progs`]).

mod cgroup;
pub mod dns;
pub mod events;
pub mod http;
pub mod netns;
pub mod packets;
pub mod pcap;
mod progs;
pub mod protocols;
pub mod sockets;
pub mod tcp;
pub mod tls;

use std::fmt;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use aya::Pod;
use aya::maps::{MapData, PerCpuArray};
use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::net::counter as c;

use super::dispatch::Side;
use super::object::{LoadOpts, Maps};
use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::metrics::{LabelBudget, Metric};
use crate::monitored::Resolved;

pub use pcap::ROUTES;

/// Every metric of the family, in the order a scrape writes them.
pub const METRICS: &[Metric] = &[
    packets::PACKETS,
    packets::BYTES,
    netns::TC_INTERFACES,
    tcp::CONNECTIONS,
    tcp::CONNECT_DURATION,
    tcp::CONNECTION_DURATION,
    tcp::SENT_BYTES,
    tcp::RECEIVED_BYTES,
    tcp::RETRANSMITS,
    tcp::RESETS,
    tcp::ACCEPTS,
    sockets::CONNECT_ERRORS,
    sockets::BIND_ERRORS,
    http::REQUESTS,
    http::REQUEST_DURATION,
    http::UNTRACKED,
    protocols::REDIS_COMMANDS,
    protocols::REDIS_ERRORS,
    protocols::REDIS_DURATION,
    protocols::POSTGRES_QUERIES,
    protocols::POSTGRES_ERRORS,
    protocols::POSTGRES_DURATION,
    protocols::POSTGRES_TLS,
    protocols::MYSQL_QUERIES,
    protocols::MYSQL_ERRORS,
    protocols::MYSQL_DURATION,
    protocols::UNTRACKED,
    tls::PROCESSES,
    sockets::UDP_DROPS,
    dns::QUERIES,
    dns::RESPONSES,
    dns::DURATION,
    pcap::PACKETS,
    pcap::DROPPED,
];

/// Where the packet programs sit (`--net-mode`): a setting every family may read, so it lives
/// with the other settings.
pub use super::NetMode;

pub struct Net {
    /// Shared with the thread that follows the interfaces in --net-mode netns.
    obj: Arc<Object>,
    /// The cgroup_skb programs this sidecar attaches (the set's, on a shared kernel side).
    progs: progs::PacketProgs,
    attached: Mutex<Option<cgroup::Attached>>,
    peers: LabelBudget,
    ports: LabelBudget,
    /// `--net-http` is not off (the slot has the HTTP tables).
    http: bool,
    /// `--http-paths`: normalised paths admitted as labels.
    paths: Option<LabelBudget>,
    /// HTTP is read in the packet programs (so it needs the cgroup attachment).
    http_from_packets: bool,
    /// SLOT_NET_REDIS/_POSTGRES/_MYSQL: the other protocols recognised (cgroup mode only).
    protocols: u64,
    budgets: protocols::Budgets,
    mode: NetMode,
    tc: Mutex<Option<netns::TcAttached>>,
    /// Interfaces the classifiers are attached to now (--net-mode netns).
    tc_interfaces: Arc<AtomicUsize>,
    capture: Arc<pcap::Capture>,
    events: events::Events,
    /// HTTPS (uprobes on OpenSSL in the target's processes): with HTTP on.
    https: Option<Arc<tls::Https>>,
}

/// Where HTTP is read from: in netns mode there is no socket on tc ingress to pair requests with,
/// so from the syscalls there (as the slot's flags say, see `app::open_kernel_side`).
fn http_from_syscalls(opts: &Options) -> bool {
    opts.net_http && (opts.net_http_syscalls || opts.net_mode == NetMode::Netns)
}

/// The protocols besides HTTP/1 this slot recognises: they are read in the cgroup_skb programs,
/// which have the target's sockets (tc ingress in netns mode has none to keep state on).
fn protocols_on(opts: &Options) -> u64 {
    if opts.net_mode == NetMode::Cgroup {
        opts.protocols & sidecar_ebpf::SLOT_NET_PROTOS
    } else {
        0
    }
}

/// HTTPS: HTTP on and not turned off by itself.
fn https(opts: &Options) -> bool {
    opts.net_http && opts.net_https
}

/// The per-target maps this slot does without (its options leave them unused): the kernel then
/// finds none for the slot and skips that work, and the slot's memory is what it asked for.
fn unused_maps(opts: &Options) -> Vec<&'static str> {
    let mut unused = Vec::new();
    if protocols_on(opts) == 0 {
        unused.extend(["net_proto_counts", "net_proto_hists", "net_proto_counters"]);
    }
    if !opts.net_http {
        unused.extend(["net_http_requests", "net_http_hists", "net_http_paths"]);
    } else if opts.http_paths {
        unused.extend(["net_http_requests", "net_http_hists"]);
    } else {
        unused.push("net_http_paths");
    }
    if !http_from_syscalls(opts) {
        unused.push("net_http_conns");
    }
    if !https(opts) {
        unused.push("net_tls_conns");
    }
    if !opts.net_events {
        unused.extend(["net_events", "net_conn_owners"]);
    }
    if !opts.allow_pcap {
        // The 4 MiB ring above all.
        unused.extend(["net_pcap_ring", "net_pcap_cfg", "net_pcap_rate"]);
    }
    unused
}

/// Attach a syscall-exit hook the way the set has it already, if it does (tracepoints, or the raw
/// fallback): two ways at once would run it twice for a target. Otherwise as tracefs allows.
fn attach_exit_hook_once(
    obj: &mut Object,
    program: &str,
    names: &[&str],
    fallback: (&str, &str),
) -> Result<(), ProbeError> {
    let ks = obj.kernel_side().clone();
    let on_set = |p: &str| ks.link_pin("net", p, 0).is_some_and(|l| l.exists());
    if on_set(fallback.0) {
        return obj.attach_raw_tp(fallback.0, fallback.1);
    }
    if on_set(program) {
        return obj.attach_tracepoints(program, "syscalls", names);
    }
    obj.attach_syscall_hook(program, names, fallback).map(drop)
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let ks = &opts.kernel_side;
    let shared = [u8::from(ks.dir().is_some())];
    let tc_slot = ks.slot.to_ne_bytes();
    let http_syscalls = http_from_syscalls(opts);
    let unused = unused_maps(opts);
    let mut obj = Object::load_on(
        ks,
        "net",
        sidecar_ebpf::objects::NET,
        &LoadOpts {
            globals: &[("pkt_slot_lookup", &shared[..]), ("tc_slot", &tc_slot[..])],
            without_inner: &unused,
            ..Default::default()
        },
    )?;
    obj.attach_tp_btf("net_state", "inet_sock_set_state")?;
    obj.attach_raw_tp("net_retransmit", "tcp_retransmit_skb")?;
    obj.attach_raw_tp("net_send_reset", "tcp_send_reset")?;
    obj.attach_raw_tp("net_receive_reset", "tcp_receive_reset")?;
    obj.attach_raw_tp("net_udp_drop", "udp_fail_queue_rcv_skb")?;
    if http_syscalls {
        // Only for the syscalls source; by default the packet programs read HTTP from TCP
        // segments and nothing runs per syscall for it. Payload calls finish in a raw sys_exit
        // program of their own; the errors keep their hook below.
        obj.attach_raw_tp("net_sys_enter", "sys_enter")?;
        obj.attach_raw_tp("net_http_sys_exit", "sys_exit")?;
    }
    obj.attach_syscall_hook_via(
        &opts.syscall_dispatch,
        Side::Exit,
        "net_sys_exit_error",
        &["sys_exit_connect", "sys_exit_bind", "sys_exit_listen"],
        ("net_sys_exit", "sys_exit"),
    )?;
    let progs = progs::PacketProgs::load(&mut obj, opts.net_mode)?;
    if opts.net_events {
        // accept() returning is the only place the accepting process is known.
        attach_exit_hook_once(
            &mut obj,
            "net_events_accept",
            &["sys_exit_accept", "sys_exit_accept4"],
            ("net_events_sys_exit", "sys_exit"),
        )?;
    }
    let capture = Arc::new(pcap::Capture::new(
        &mut obj,
        opts.allow_pcap,
        opts.net_mode,
    )?);
    let events = events::Events::new(&mut obj, opts.net_events)?;
    let tls_progs = if https(opts) {
        Some(tls::Https::load(&mut obj)?)
    } else {
        None
    };
    let obj = Arc::new(obj);
    let https = match tls_progs {
        Some(p) => {
            let run_libs = if opts.run_program.is_some() {
                crate::usdt::per_process::system_libssl()
            } else {
                Vec::new()
            };
            Some(tls::Https::start(obj.clone(), p, &run_libs)?)
        }
        None => None,
    };
    Ok(Arc::new(Net {
        obj,
        progs,
        attached: Mutex::new(None),
        peers: LabelBudget::new(opts.top_n),
        ports: LabelBudget::new(opts.top_n),
        http: opts.net_http,
        paths: (opts.net_http && opts.http_paths).then(|| LabelBudget::new(opts.top_n)),
        http_from_packets: opts.net_http && !http_syscalls,
        protocols: protocols_on(opts),
        budgets: protocols::Budgets::new(opts.top_n),
        mode: opts.net_mode,
        tc: Mutex::new(None),
        tc_interfaces: Arc::new(AtomicUsize::new(0)),
        capture,
        events,
        https,
    }))
}

fn map_err(map: &str, detail: impl fmt::Display) -> ProbeError {
    ProbeError::Map {
        family: "net",
        map: map.to_string(),
        detail: detail.to_string(),
    }
}

/// Every slot of a per-CPU array with its index: a slot that cannot be read is counted against
/// the map and skipped, and the others keep their own index (which is what their labels mean).
fn percpu_slots<V: Pod>(obj: &Object, maps: &Maps<'_>, name: &str) -> Vec<(usize, Vec<V>)> {
    let Some(arr) = maps.get::<PerCpuArray<&MapData, V>>(name) else {
        return Vec::new();
    };
    arr.iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            Ok(v) => Some((i, v.iter().copied().collect())),
            Err(e) => {
                obj.read_error(name, e);
                None
            }
        })
        .collect()
}

impl Probe for Net {
    fn routes(self: Arc<Self>) -> Option<axum::Router> {
        let capture = self.capture.clone();
        Some(pcap::router(capture, self))
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
        if let Some(h) = &self.https {
            h.set_target(target);
        }
        match self.mode {
            NetMode::Netns => self.on_target_netns(target),
            NetMode::Cgroup => self.on_target_cgroup(target),
        }
    }

    fn encode(&self, ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        let maps = self.obj.maps();
        let pkts = packets::Packets::read(&self.obj, &maps);
        let tcp = tcp::Tcp::read(&maps);
        let sockets = sockets::Sockets::read(&maps);
        let http = http::Http::read(&self.obj, &maps, self.http, self.paths.is_some());
        let protos = protocols::Protocols::read(&self.obj, &maps, self.protocols != 0);
        let dns = dns::Dns::read(&self.obj, &maps);
        let pcap = pcap::Counters::read(&maps);
        drop(maps);

        pkts.encode(enc)?;
        if self.mode == NetMode::Netns {
            netns::encode_interfaces(enc, &self.tc_interfaces)?;
        }
        tcp.encode(enc, &self.peers, &self.ports)?;
        sockets.encode_errors(enc)?;
        http.encode(enc, ctx.options.net_http, self.paths.as_ref())?;
        protos.encode(enc, self.protocols, &self.budgets)?;
        if let Some(h) = &self.https {
            h.encode(enc)?;
        }
        sockets.encode_udp_drops(enc)?;
        dns.encode(enc)?;
        pcap.encode(enc)
    }

    fn lost_events(&self) -> u64 {
        let maps = self.obj.maps();
        maps.counter("net_counters", c::LOST_CONNS)
            + maps.counter("net_counters", c::LOST_KEYS)
            + events::lost(&maps)
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
    /// net: the protocols recognised by content (any port) in the target's TCP segments:
    /// comma-separated `http`, `redis`, `postgres`, `mysql`, or `none`. Each connection is
    /// looked at once; one that speaks none of them costs a lookup per segment after that.
    /// Redis, PostgreSQL and MySQL need --net-mode cgroup.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "http,redis,postgres,mysql",
        global = true
    )]
    protocols: String,
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
    /// net: HTTP/1.x inside TLS (with --net-http not off): uprobes on OpenSSL's SSL_read/SSL_write
    /// in each target process (libssl, or a binary with OpenSSL linked in, as Node's). Each
    /// SSL call of the target then traps into the kernel twice (entry and return): see the
    /// HTTPS cost in docs/families/net.md before leaving it on for a busy TLS server.
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = ["on", "off"], global = true)]
    net_https: String,
    /// net: TCP connect/accept/close events (pid, comm, addresses, bytes, duration) on
    /// /events (kinds tcp_connect, tcp_accept, tcp_close) and --events-out.
    #[arg(long, global = true)]
    net_events: bool,
}

impl super::FamilyArgs for Args {
    fn apply(self, s: &mut super::Setup<'_>) -> Result<(), String> {
        let o = &mut *s.options;
        let (http, protocols) = protocols::parse(&self.protocols)?;
        // --protocols without http turns HTTP recognition off, as --net-http off does.
        o.net_http = self.net_http != "off" && http;
        o.protocols = protocols;
        o.net_http_syscalls = self.net_http == "syscalls";
        o.net_https = self.net_https == "on";
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
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;

    /// Every metric of the table, written from sample readings the way `Net::encode` writes
    /// them (with or without --http-paths): a series that does not fit its table entry panics
    /// in the encoder (debug build).
    #[derive(Debug)]
    struct Sample {
        with_paths: bool,
    }

    impl Collector for Sample {
        fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
            let paths = self.with_paths.then(|| LabelBudget::new(1));
            let (peers, ports) = (LabelBudget::new(20), LabelBudget::new(20));
            packets::Packets::sample().encode(&mut enc)?;
            netns::encode_interfaces(&mut enc, &AtomicUsize::new(2))?;
            tcp::Tcp::sample().encode(&mut enc, &peers, &ports)?;
            let sockets = sockets::Sockets::sample();
            sockets.encode_errors(&mut enc)?;
            http::Http::sample().encode(&mut enc, true, paths.as_ref())?;
            protocols::Protocols::sample().encode(
                &mut enc,
                sidecar_ebpf::SLOT_NET_PROTOS,
                &protocols::Budgets::new(20),
            )?;
            tls::encode_counts(&mut enc, Default::default())?;
            sockets.encode_udp_drops(&mut enc)?;
            dns::Dns::sample().encode(&mut enc)?;
            pcap::Counters::sample().encode(&mut enc)
        }
    }

    fn scrape(with_paths: bool) -> String {
        let mut r = Registry::default();
        r.register_collector(Box::new(Sample { with_paths }));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).expect("encode");
        out
    }

    #[test]
    fn every_metric_is_written_as_declared_in_table_order() {
        for with_paths in [false, true] {
            let text = scrape(with_paths);
            let helps: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# HELP "))
                .collect();
            assert_eq!(helps.len(), METRICS.len(), "{text}");
            for (m, help) in METRICS.iter().zip(helps) {
                assert_eq!(help, format!("{} {}", m.name, m.help));
                assert!(
                    text.contains(&format!("# TYPE {} {}", m.name, m.kind.as_str())),
                    "{}",
                    m.name
                );
            }
            assert_eq!(
                text.contains("path=\"/users/:id\""),
                with_paths,
                "the path label is there with --http-paths only"
            );
        }
    }
}
