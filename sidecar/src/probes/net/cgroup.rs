//! The default --net-mode: cgroup_skb programs on the target's cgroup v2 directory, so that only
//! its sockets' packets pass through them. Re-attached when the target restarts in a new cgroup.
//! On a shared kernel side the programs are the set's (see [`super::progs`]) and the links this
//! sidecar's.

use std::fs::File;

use aya::programs::CgroupSkbAttachType;
use aya::programs::cgroup_skb::CgroupSkbLinkId;

use super::{Net, ProbeError};
use crate::monitored::Resolved;

pub const INGRESS: &str = "net_ingress";
pub const EGRESS: &str = "net_egress";

/// The cgroup the packet programs are attached to, and their links.
pub(super) struct Attached {
    cgroup_id: u64,
    links: Vec<(&'static str, CgroupSkbLinkId)>,
}

impl Net {
    fn detach(&self, a: Attached) {
        for (prog, link) in a.links {
            // Fails harmlessly when the cgroup is already gone (its links went with it).
            if let Err(e) = self.progs.detach_cgroup(&self.obj, prog, link) {
                tracing::debug!("net: detaching {prog}: {e}");
            }
        }
    }

    /// (Re)attach the packet programs when the target's cgroup changes; detach them when it
    /// goes away.
    pub(super) fn on_target_cgroup(&self, target: Option<&Resolved>) -> Result<(), ProbeError> {
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
            match self.progs.attach_cgroup(&self.obj, prog, &fd, ty) {
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
}
