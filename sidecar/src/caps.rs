//! Capabilities: check up front that the chosen probes can load (and say which Docker flag is
//! missing), then drop everything the rest of the run does not need.

use caps::{CapSet, Capability, CapsHashSet};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CapsError {
    #[error(
        "missing capability {missing}: loading the probes needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN. \
         Docker >= 23: --cap-add BPF --cap-add PERFMON; Docker 20.10 and older kernels: --cap-add SYS_ADMIN; \
         on a host: run as root. (effective now: {effective})"
    )]
    Probes { missing: String, effective: String },
    #[error(
        "--bpf-stats needs CAP_SYS_ADMIN (the kernel's BPF_ENABLE_STATS): add --cap-add SYS_ADMIN, or drop --bpf-stats \
         (effective now: {effective})"
    )]
    BpfStats { effective: String },
    #[error(
        "probe family {family} needs {cap}: add --cap-add {flag} (or leave {family} out of --probes) \
         (effective now: {effective})"
    )]
    Family {
        family: &'static str,
        cap: String,
        flag: String,
        effective: String,
    },
    #[error("reading capabilities: {0}")]
    Read(String),
}

fn effective() -> Result<CapsHashSet, CapsError> {
    caps::read(None, CapSet::Effective).map_err(|e| CapsError::Read(e.to_string()))
}

fn describe(set: &CapsHashSet) -> String {
    let mut v: Vec<String> = set.iter().map(|c| c.to_string()).collect();
    v.sort();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// A probe family's name and the capabilities it needs beyond loading tracing programs.
pub type Needs<'a> = (&'static str, &'a [Capability]);

/// The first capability of `needs` this process lacks, as a Docker flag hint.
pub fn missing_for(needs: &[Capability]) -> Option<String> {
    let eff = effective().ok()?;
    needs.iter().find(|c| !eff.contains(c)).map(|c| {
        format!(
            "missing {c} (--cap-add {})",
            c.to_string().trim_start_matches("CAP_")
        )
    })
}

/// Fail early, naming the capability and the flag, when probes could not load.
pub fn check(families: &[Needs<'_>], bpf_stats: bool) -> Result<(), CapsError> {
    let eff = effective()?;
    let load_probes = !families.is_empty();
    let has = |c| eff.contains(&c);
    if load_probes && !has(Capability::CAP_SYS_ADMIN) {
        let missing: Vec<&str> = [
            (Capability::CAP_BPF, "CAP_BPF"),
            (Capability::CAP_PERFMON, "CAP_PERFMON"),
        ]
        .into_iter()
        .filter(|(c, _)| !has(*c))
        .map(|(_, n)| n)
        .collect();
        if !missing.is_empty() {
            return Err(CapsError::Probes {
                missing: missing.join(" and "),
                effective: describe(&eff),
            });
        }
    }
    for (family, needs) in families {
        if let Some(cap) = needs.iter().find(|c| !has(**c)) {
            let name = cap.to_string();
            return Err(CapsError::Family {
                family,
                flag: name.trim_start_matches("CAP_").to_string(),
                cap: name,
                effective: describe(&eff),
            });
        }
    }
    if bpf_stats && !has(Capability::CAP_SYS_ADMIN) {
        return Err(CapsError::BpfStats {
            effective: describe(&eff),
        });
    }
    Ok(())
}

/// Kernel release as (major, minor).
fn kernel_version() -> Option<(u32, u32)> {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let mut it = rel.trim().split(['.', '-']);
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Capabilities still needed after every probe is attached. Reading maps through fds we hold needs
/// none since Linux 6.5; before that, `kernel.unprivileged_bpf_disabled` makes every bpf() call,
/// map reads included, require CAP_BPF (or CAP_SYS_ADMIN).
pub fn needed_after_attach() -> CapsHashSet {
    let mut keep = CapsHashSet::new();
    if kernel_version().is_none_or(|v| v < (6, 5)) {
        let eff = effective().unwrap_or_default();
        keep.insert(if eff.contains(&Capability::CAP_BPF) {
            Capability::CAP_BPF
        } else {
            Capability::CAP_SYS_ADMIN
        });
    }
    keep
}

/// Drop every capability not in `keep` from all sets of this thread (call before starting other
/// threads: they inherit it), and forbid regaining any through exec.
pub fn drop_all_except(keep: &CapsHashSet) -> Result<(), String> {
    // Keeping a capability we do not have is impossible (and would fail the whole drop).
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| e.to_string())?;
    let keep: &CapsHashSet = &keep.intersection(&permitted).copied().collect();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            // Needs CAP_SETPCAP; without it the bounding set stays, the other sets still empty.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new()).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Effective, keep).map_err(|e| e.to_string())?;
    caps::set(None, CapSet::Permitted, keep).map_err(|e| e.to_string())?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Ok(())
}
