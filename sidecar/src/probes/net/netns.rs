//! --net-mode netns: tc classifiers on every interface of the target's network namespace,
//! attached from a thread that entered the namespace and stays there to follow interfaces that
//! appear or go. The classifiers are this sidecar's own copy even on a shared kernel side: a
//! packet on tc ingress has no socket to find the slot from, so the copy carries its slot
//! (`tc_slot`, set at load).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aya::programs::TcAttachType;
use aya::programs::tc::SchedClassifierLinkId;
use prometheus_client::encoding::DescriptorEncoder;

use super::{Net, Object, ProbeError};
use crate::metrics::Metric;
use crate::monitored::Resolved;

pub const TC_INGRESS: &str = "net_tc_ingress";
pub const TC_EGRESS: &str = "net_tc_egress";

pub const TC_INTERFACES: Metric = Metric::gauge(
    "ebpf_sidecar_net_tc_interfaces",
    "Interfaces of the target's network namespace the tc classifiers are attached to now (--net-mode netns); interfaces that appear later are added, removed ones dropped.",
);

/// The current number of interfaces covered (written only in netns mode).
pub(super) fn encode_interfaces(enc: &mut DescriptorEncoder, count: &AtomicUsize) -> fmt::Result {
    TC_INTERFACES.gauge_series(enc, [(vec![], count.load(Ordering::Relaxed) as i64)])
}

impl Net {
    /// --net-mode netns: (re)attach the classifiers when the target's network namespace changes
    /// (a restarted container gets a new one; the old one's links die with its interfaces).
    pub(super) fn on_target_netns(&self, target: Option<&Resolved>) -> Result<(), ProbeError> {
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
            detach_netns(old);
        }
        let Some((netns, pid)) = want else {
            return Ok(());
        };
        let att = attach_netns(&self.obj, pid, netns, cgroup, &self.tc_interfaces)?;
        tracing::info!(
            netns,
            interfaces = att.interfaces.join(","),
            "net: tc packet counters attached in the target's network namespace"
        );
        *tc = Some(att);
        Ok(())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
