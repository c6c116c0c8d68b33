//! The cgroup_skb packet programs, which every sidecar attaches to its own target's cgroup and
//! whose links it owns. Private kernel side: the object's own programs. Shared: one copy per
//! host, loaded by the first sidecar and pinned; later sidecars open it from the pin (so
//! `bpftool prog list` shows one), and the program finds each packet's slot from its socket's
//! cgroup. (The tc classifiers of --net-mode netns are each sidecar's own: see [`super::netns`].)

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Mutex;

use aya::programs::cgroup_skb::CgroupSkbLinkId;
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType};

use super::{NetMode, Object, ProbeError, cgroup, netns};

pub(super) struct PacketProgs {
    /// Shared set, cgroup mode: the set's copies by program name. None: the object's own.
    pinned: Option<Mutex<BTreeMap<&'static str, CgroupSkb>>>,
}

fn prog_err(program: &str, e: aya::programs::ProgramError) -> ProbeError {
    ProbeError::Program {
        family: "net",
        program: program.to_string(),
        source: Box::new(e),
    }
}

impl PacketProgs {
    /// Load the packet programs of `mode` into the object, or, cgroup mode on a shared set, open
    /// the set's copies, loading and pinning them when no sidecar has yet (under the set's lock:
    /// see `KernelSide::open`).
    pub(super) fn load(obj: &mut Object, mode: NetMode) -> Result<Self, ProbeError> {
        let ks = obj.kernel_side().clone();
        if mode == NetMode::Netns {
            obj.load_classifier(netns::TC_INGRESS)?;
            obj.load_classifier(netns::TC_EGRESS)?;
            return Ok(Self { pinned: None });
        }
        let programs = [
            (cgroup::INGRESS, CgroupSkbAttachType::Ingress),
            (cgroup::EGRESS, CgroupSkbAttachType::Egress),
        ];
        if ks.dir().is_none() {
            for (prog, _) in programs {
                obj.load_cgroup_skb(prog)?;
            }
            return Ok(Self { pinned: None });
        }
        let mut pinned = BTreeMap::new();
        for (prog, ty) in programs {
            let Some(pin) = ks.prog_pin("net", prog) else {
                continue;
            };
            if pin.exists() {
                obj.record_pinned_program(prog, pin.clone());
            } else {
                obj.load_cgroup_skb(prog)?;
                if let Some(dir) = pin.parent() {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .recursive(true)
                        .create(dir)
                        .map_err(|e| ProbeError::Attach {
                            family: "net",
                            what: format!("creating {}", dir.display()),
                            detail: e.to_string(),
                        })?;
                }
                let mut ebpf = obj.lock();
                let p = ebpf
                    .program_mut(prog)
                    .ok_or_else(|| ProbeError::MissingProgram {
                        family: "net",
                        program: prog.to_string(),
                    })?;
                p.pin(&pin).map_err(|e| ProbeError::Attach {
                    family: "net",
                    what: format!("pinning {prog} on the shared kernel side"),
                    detail: e.to_string(),
                })?;
            }
            let p = CgroupSkb::from_pin(&pin, ty).map_err(|e| prog_err(prog, e))?;
            pinned.insert(prog, p);
        }
        Ok(Self {
            pinned: Some(Mutex::new(pinned)),
        })
    }

    fn with_pinned<R>(
        &self,
        prog: &str,
        f: impl FnOnce(&mut CgroupSkb) -> Result<R, aya::programs::ProgramError>,
    ) -> Option<Result<R, ProbeError>> {
        let pinned = self.pinned.as_ref()?;
        let mut pinned = pinned.lock().unwrap_or_else(|p| p.into_inner());
        Some(match pinned.get_mut(prog) {
            Some(p) => f(p).map_err(|e| prog_err(prog, e)),
            None => Err(ProbeError::MissingProgram {
                family: "net",
                program: prog.to_string(),
            }),
        })
    }

    /// Attach cgroup_skb `prog` to the cgroup v2 directory `cgroup` (an open fd).
    pub(super) fn attach_cgroup(
        &self,
        obj: &Object,
        prog: &str,
        cgroup: &File,
        ty: CgroupSkbAttachType,
    ) -> Result<CgroupSkbLinkId, ProbeError> {
        self.with_pinned(prog, |p| p.attach(cgroup, ty, CgroupAttachMode::Single))
            .unwrap_or_else(|| obj.attach_cgroup_skb(prog, cgroup, ty))
    }

    /// Detach a link made by [`Self::attach_cgroup`].
    pub(super) fn detach_cgroup(
        &self,
        obj: &Object,
        prog: &str,
        link: CgroupSkbLinkId,
    ) -> Result<(), ProbeError> {
        let mut link = Some(link);
        let r = self.with_pinned(prog, |p| p.detach(link.take().expect("once")));
        match (r, link) {
            (Some(r), _) => r,
            (None, Some(link)) => obj.detach_cgroup_skb(prog, link),
            (None, None) => Ok(()),
        }
    }
}
