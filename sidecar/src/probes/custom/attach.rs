//! Where a custom probe's programs go: the `programs:` of its YAML checked, the programs loaded
//! and attached (tracepoints, perf events at load; uprobes, USDT probes and cgroup_skb in the
//! target's files and cgroup, again whenever the target moves), and the target filter written
//! into the object's globals.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;

use aya::maps::Array;
use aya::programs::ProgramFd;
use aya::programs::cgroup_skb::{CgroupSkbAttachType, CgroupSkbLinkId};

use super::btf::Btf;
use super::config::{AttachKind, Config, ProgramCfg};
use super::{Ctx, CustomError, CustomProbe};
use crate::monitored::Resolved;
use crate::probes::Object;
use crate::usdt::{self, UsdtProbe, attach::Link};

/// Attachments that depend on where the target is (its files, its cgroup): redone when it moves.
pub(super) enum PerTarget {
    Uprobe {
        prog: String,
        binary: String,
        symbol: String,
        offset: u64,
        ret: bool,
    },
    Usdt {
        prog: String,
        binary: String,
        provider: String,
        name: String,
    },
    CgroupSkb {
        prog: String,
        ty: CgroupSkbAttachType,
    },
}

#[derive(Default)]
pub(super) struct Attached {
    /// (cgroup dir, pid) the attachments were made for.
    at: Option<(Option<PathBuf>, Option<u32>)>,
    links: Vec<Link>,
    skb: Vec<(String, CgroupSkbLinkId)>,
    next_spec: u32,
}

/// Check every `programs:` entry names what its kind needs; returns the per-target ones.
pub(super) fn plan(ctx: &Ctx, cfg: &Config) -> Result<Vec<PerTarget>, CustomError> {
    if cfg.programs.is_empty() {
        return Err(ctx.config("no `programs:`: nothing would run".into()));
    }
    let mut per_target = Vec::new();
    for p in &cfg.programs {
        if let Some(t) = plan_program(ctx, p)? {
            per_target.push(t);
        }
    }
    Ok(per_target)
}

fn plan_program(ctx: &Ctx, p: &ProgramCfg) -> Result<Option<PerTarget>, CustomError> {
    let need = |what: &Option<String>, key: &str| {
        what.clone()
            .ok_or_else(|| ctx.program(&p.name, format!("attach: {:?} needs `{key}:`", p.attach)))
    };
    Ok(match p.attach {
        AttachKind::Tracepoint | AttachKind::TpBtf | AttachKind::RawTp => {
            need(&p.tracepoint, "tracepoint")?;
            None
        }
        AttachKind::Uprobe | AttachKind::Uretprobe => Some(PerTarget::Uprobe {
            prog: p.name.clone(),
            binary: need(&p.binary, "binary")?,
            symbol: need(&p.symbol, "symbol")?,
            offset: p.offset,
            ret: p.attach == AttachKind::Uretprobe,
        }),
        AttachKind::Usdt => {
            let probe_s = need(&p.probe, "probe")?;
            let (provider, name) = probe_s.split_once(':').ok_or_else(|| {
                ctx.program(
                    &p.name,
                    format!("usdt probe {probe_s:?} is not provider:name"),
                )
            })?;
            Some(PerTarget::Usdt {
                prog: p.name.clone(),
                binary: need(&p.binary, "binary")?,
                provider: provider.into(),
                name: name.into(),
            })
        }
        AttachKind::CgroupSkb => {
            let ty = match p.direction.as_deref() {
                Some("ingress") => CgroupSkbAttachType::Ingress,
                Some("egress") => CgroupSkbAttachType::Egress,
                other => {
                    return Err(ctx.program(
                        &p.name,
                        format!("cgroup_skb needs `direction: ingress|egress`, got {other:?}"),
                    ));
                }
            };
            Some(PerTarget::CgroupSkb {
                prog: p.name.clone(),
                ty,
            })
        }
        AttachKind::PerfEvent => None,
    })
}

/// The target filter as the object's `const volatile` globals (those it declares), filled now.
/// (The `sidecar_target` map of sidecar.bpf.h is the other filter: rewritten whenever the
/// target moves.)
pub(super) fn target_globals(
    ctx: &Ctx,
    btf: &Btf,
    target: Option<&Resolved>,
) -> Result<Vec<(&'static str, Vec<u8>)>, CustomError> {
    let mut globals = Vec::new();
    for (var, value) in [
        ("target_cgroup_id", target.and_then(|t| t.cgroup_id())),
        (
            "target_pidns_ino",
            target.and_then(|t| match t.filter {
                crate::monitored::Filter::PidNs { ino, .. } => Some(ino),
                _ => t.pid_ns,
            }),
        ),
    ] {
        if let Some(size) = btf.has_var(var) {
            if size != 8 {
                return Err(ctx.object(format!(
                    "global {var} is {size} bytes; declare it `const volatile __u64 {var} = 0;`"
                )));
            }
            if value.is_none() {
                tracing::warn!(
                    probe = ctx.probe,
                    "{var}: the target is not known yet; left 0"
                );
            }
            globals.push((var, value.unwrap_or(0).to_ne_bytes().to_vec()));
        }
    }
    Ok(globals)
}

/// Load every program and attach those that do not depend on the target; returns the fds of
/// the uprobe programs, attached per target later.
pub(super) fn programs(
    ctx: &Ctx,
    obj: &mut Object,
    cfg: &Config,
) -> Result<HashMap<String, ProgramFd>, CustomError> {
    let mut uprobe_fds = HashMap::new();
    for p in &cfg.programs {
        let tp = p.tracepoint.clone().unwrap_or_default();
        match p.attach {
            AttachKind::Tracepoint => {
                let (cat, ev) = tp.split_once([':', '/']).ok_or_else(|| {
                    ctx.program(&p.name, format!("tracepoint {tp:?} is not category:name"))
                })?;
                obj.attach_tracepoint(&p.name, cat, ev)?;
            }
            AttachKind::TpBtf => obj.attach_tp_btf(&p.name, &tp)?,
            AttachKind::RawTp => obj.attach_raw_tp(&p.name, &tp)?,
            AttachKind::Uprobe | AttachKind::Uretprobe | AttachKind::Usdt => {
                if !uprobe_fds.contains_key(&p.name) {
                    let fd = obj.load_uprobe(&p.name)?;
                    uprobe_fds.insert(p.name.clone(), fd);
                }
            }
            AttachKind::CgroupSkb => obj.load_cgroup_skb(&p.name)?,
            AttachKind::PerfEvent => {
                obj.attach_perf_event(&p.name, p.frequency.unwrap_or(49))?;
            }
        }
    }
    Ok(uprobe_fds)
}

/// Per-target attachments are made again when the target restarts, after the capability drop:
/// the capabilities they need (a capability the sidecar never had is not kept).
pub(super) fn keeps(per_target: &[PerTarget]) -> Vec<caps::Capability> {
    let mut keeps = Vec::new();
    if per_target
        .iter()
        .any(|p| matches!(p, PerTarget::CgroupSkb { .. }))
    {
        keeps.push(caps::Capability::CAP_NET_ADMIN);
    }
    if per_target
        .iter()
        .any(|p| matches!(p, PerTarget::Uprobe { .. } | PerTarget::Usdt { .. }))
    {
        // perf_event_open of a uprobe, BPF_LINK_CREATE, and the target's files through
        // /proc/<pid>/root (ptrace read access).
        keeps.extend([
            caps::Capability::CAP_PERFMON,
            caps::Capability::CAP_BPF,
            caps::Capability::CAP_SYS_PTRACE,
        ]);
    }
    keeps
}

/// A path inside the target (`/usr/bin/app`) as the sidecar reaches it.
fn host_path(binary: &str, pid: Option<u32>) -> PathBuf {
    if let (Some(pid), true) = (pid, binary.starts_with('/')) {
        let p = usdt::procs::proc_root_path(pid, binary);
        if p.exists() {
            return p;
        }
    }
    PathBuf::from(binary)
}

/// A failed attachment: (program, what went wrong).
type AttachError = (String, String);

impl CustomProbe {
    /// (Re)make the attachments that depend on the target. Errors name the program.
    pub(super) fn attach_per_target(&self, target: Option<&Resolved>) -> Result<(), AttachError> {
        if self.per_target.is_empty() {
            return Ok(());
        }
        let at = target.map(|t| (t.cgroup_dir.clone(), t.pid));
        let mut st = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        if st.at.is_some() && st.at == at {
            return Ok(());
        }
        st.links.clear();
        for (prog, link) in std::mem::take(&mut st.skb) {
            let _ = self.obj.detach_cgroup_skb(&prog, link);
        }
        st.at = at;
        let pid = target.and_then(|t| t.pid);
        for p in &self.per_target {
            match p {
                PerTarget::Uprobe {
                    prog,
                    binary,
                    symbol,
                    offset,
                    ret,
                } => {
                    let link =
                        self.attach_uprobe(prog, &host_path(binary, pid), symbol, *offset, *ret)?;
                    st.links.push(link);
                }
                PerTarget::Usdt {
                    prog,
                    binary,
                    provider,
                    name,
                } => self.attach_usdt(&mut st, prog, &host_path(binary, pid), provider, name)?,
                PerTarget::CgroupSkb { prog, ty } => {
                    let Some(dir) = target.and_then(|t| t.cgroup_dir.clone()) else {
                        return Err((
                            prog.clone(),
                            "cgroup_skb needs the target's cgroup v2 directory (no cgroup2 mount, or the target is not running)".into(),
                        ));
                    };
                    let fd = std::fs::File::open(&dir)
                        .map_err(|x| (prog.clone(), format!("{}: {x}", dir.display())))?;
                    let link = self
                        .obj
                        .attach_cgroup_skb(prog, &fd, *ty)
                        .map_err(|x| (prog.clone(), x.to_string()))?;
                    st.skb.push((prog.clone(), link));
                }
            }
        }
        Ok(())
    }

    fn attach_uprobe(
        &self,
        prog: &str,
        path: &std::path::Path,
        symbol: &str,
        offset: u64,
        ret: bool,
    ) -> Result<Link, AttachError> {
        let e = |m: String| (prog.to_string(), m);
        let data = usdt::read_file(path).map_err(|x| e(x.to_string()))?;
        let off = usdt::symbol_offset(&data, symbol)
            .map_err(|x| e(format!("{}: {x}", path.display())))?;
        let fd = &self.uprobe_fds[prog];
        usdt::attach::attach_uprobe(-1, fd.as_fd(), path, off + offset, 0, ret, 0)
            .map_err(|x| e(format!("{}:{symbol}: {x}", path.display())))
    }

    /// Attach `prog` at every site of `provider:name` in the file at `path`.
    fn attach_usdt(
        &self,
        st: &mut Attached,
        prog: &str,
        path: &std::path::Path,
        provider: &str,
        name: &str,
    ) -> Result<(), AttachError> {
        let e = |m: String| (prog.to_string(), m);
        let data = usdt::read_file(path).map_err(|x| e(x.to_string()))?;
        let sites: Vec<_> = usdt::probes(&data)
            .map_err(|x| e(format!("{}: {x}", path.display())))?
            .into_iter()
            .filter(|s| s.provider == *provider && s.name == *name)
            .collect();
        if sites.is_empty() {
            return Err(e(format!(
                "no USDT probe {provider}:{name} in {} (see `ebpf-sidecar usdt list --binary`)",
                path.display()
            )));
        }
        for s in sites {
            let id = st.next_spec;
            st.next_spec += 1;
            self.write_usdt_spec(id, &s).map_err(e)?;
            let fd = &self.uprobe_fds[prog];
            let link = usdt::attach::attach_uprobe(
                -1,
                fd.as_fd(),
                path,
                s.offset,
                s.semaphore_offset,
                false,
                u64::from(id),
            )
            .map_err(|x| e(format!("{provider}:{name} at {:#x}: {x}", s.offset)))?;
            st.links.push(link);
        }
        Ok(())
    }

    /// USDT argument specs for objects that include usdt.bpf.h (its `usdt_specs` map).
    fn write_usdt_spec(&self, id: u32, site: &UsdtProbe) -> Result<(), String> {
        let mut ebpf = self.obj.lock();
        let Some(map) = ebpf.map_mut("usdt_specs") else {
            return Ok(());
        };
        let mut arr: Array<_, sidecar_ebpf::UsdtSpec> =
            Array::try_from(map).map_err(|e| format!("usdt_specs: {e}"))?;
        let mut spec = sidecar_ebpf::UsdtSpec::default();
        if let Ok(args) = &site.args {
            for (i, a) in args.iter().take(sidecar_ebpf::USDT_MAX_ARGS).enumerate() {
                spec.args[i] = a.to_kernel();
            }
            spec.arg_cnt = args.len().min(sidecar_ebpf::USDT_MAX_ARGS) as u32;
        }
        arr.set(id, spec, 0)
            .map_err(|e| format!("usdt_specs[{id}]: {e}"))
    }
}
