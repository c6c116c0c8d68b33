//! Files family: bytes read and written per path (top-N + `other`, non-files by kind), opens by
//! result and failing path, sync calls and their latency, page cache misses.
//! Kernel side: `sidecar-ebpf/bpf/files.bpf.c`.

// TODO(contract): declare every metric here.
pub const METRICS: &[crate::metrics::Metric] = &[];

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use aya::maps::HashMap as BpfHashMap;
use aya::maps::{PerCpuArray, PerCpuHashMap};
use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{
    ERRNO_SLOTS, FILE_PATHS, FileIo, FilePath, FileSyncStats, HIST_BUCKETS, OpenErrorKey,
    file_kind, file_sync_call, files_counter as fc,
};

use super::object::percpu_counter;
use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::metrics::{self, LabelBudget, Labels, Log2Histogram, OTHER};
use crate::tables::errno_name;

/// Regular files read or written through a struct file whose open the probe did not see.
pub use crate::metrics::UNKNOWN;

pub struct Files {
    obj: Object,
    paths: LabelBudget,
    error_paths: LabelBudget,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    let mut obj = Object::load("files", sidecar_ebpf::objects::FILES)?;
    obj.attach_tp_btf("files_sys_exit", "sys_exit")?;
    // Only the sync calls are timed: their own enter tracepoints, not a program on every
    // syscall of the host.
    obj.attach_syscall_hook(
        "files_sync_enter",
        &[
            "sys_enter_fsync",
            "sys_enter_fdatasync",
            "sys_enter_sync_file_range",
        ],
        ("files_sys_enter", "sys_enter"),
    )?;
    obj.attach_raw_tp("files_page_cache_add", "mm_filemap_add_to_page_cache")?;
    Ok(Arc::new(Files {
        obj,
        paths: LabelBudget::new(opts.top_n),
        error_paths: LabelBudget::new(opts.top_n),
    }))
}

/// A NUL-padded path from the kernel as a label value.
pub fn path_label(raw: &[u8]) -> String {
    if raw.first().is_none_or(|&b| b == 0) {
        return UNKNOWN.into();
    }
    metrics::label_value(raw)
}

/// Label of a non-file kind (`None` for the kinds reported by path).
pub fn kind_name(kind: u32) -> Option<&'static str> {
    match kind {
        file_kind::SOCKET => Some("socket"),
        file_kind::PIPE => Some("pipe"),
        file_kind::TTY => Some("tty"),
        file_kind::CHAR => Some("char"),
        file_kind::BLOCK => Some("block"),
        file_kind::OTHER => Some("other"),
        _ => None,
    }
}

pub fn sync_name(call: u32) -> &'static str {
    match call {
        file_sync_call::FSYNC => "fsync",
        file_sync_call::FDATASYNC => "fdatasync",
        _ => "sync_file_range",
    }
}

/// Per-path (read, write) bytes folded to the top-N paths by total bytes, plus `other` and
/// `unknown`. `unknown` and `other` never take a slot of the budget.
fn fold_paths(
    budget: &LabelBudget,
    paths: Vec<(String, FileIo)>,
    unknown: FileIo,
    unmapped: FileIo,
) -> BTreeMap<String, FileIo> {
    let mut admit: Vec<(String, String, u64)> = Vec::new();
    let mut by_path: HashMap<String, FileIo> = HashMap::new();
    let mut out: BTreeMap<String, FileIo> = BTreeMap::new();
    let add = |out: &mut BTreeMap<String, FileIo>, label: String, io: FileIo| {
        let e = out.entry(label).or_default();
        e.read_bytes += io.read_bytes;
        e.write_bytes += io.write_bytes;
    };
    for (p, io) in paths {
        if p == OTHER || p == UNKNOWN {
            // A file literally named like a reserved label: keep it apart from the buckets.
            add(&mut out, format!("./{p}"), io);
            continue;
        }
        admit.push((p.clone(), p.clone(), io.read_bytes + io.write_bytes));
        by_path.insert(p, io);
    }
    for (label, path, _) in budget.fold(admit) {
        if let Some(io) = by_path.remove(&path) {
            add(&mut out, label, io);
        }
    }
    if unknown != FileIo::default() {
        add(&mut out, UNKNOWN.into(), unknown);
    }
    if unmapped != FileIo::default() {
        add(&mut out, OTHER.into(), unmapped);
    }
    out
}

impl Probe for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn encode(&self, _ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        let ebpf = self.obj.lock();
        // Names of the ids handed out, then each id's bytes: as many lookups as paths seen,
        // not one per slot of the table.
        let mut paths: HashMap<String, FileIo> = HashMap::new();
        if let (Some(Ok(ids)), Some(Ok(io))) = (
            ebpf.map("file_path_ids")
                .map(BpfHashMap::<_, FilePath, u32>::try_from),
            ebpf.map("file_io").map(PerCpuArray::<_, FileIo>::try_from),
        ) {
            for (k, id) in ids.iter().filter_map(|r| r.ok()) {
                if id as usize >= FILE_PATHS {
                    continue;
                }
                let Ok(vals) = io.get(&id, 0) else { continue };
                let e = paths.entry(path_label(&k.path)).or_default();
                for v in vals.iter() {
                    e.read_bytes += v.read_bytes;
                    e.write_bytes += v.write_bytes;
                }
            }
        }
        paths.retain(|_, io| *io != FileIo::default());
        let mut kinds = [FileIo::default(); file_kind::KINDS as usize];
        if let Some(Ok(arr)) = ebpf
            .map("file_kind_io")
            .map(PerCpuArray::<_, FileIo>::try_from)
        {
            for (i, vals) in arr.iter().enumerate().take(kinds.len()) {
                let Ok(vals) = vals else { continue };
                for io in vals.iter() {
                    kinds[i].read_bytes += io.read_bytes;
                    kinds[i].write_bytes += io.write_bytes;
                }
            }
        }
        let mut opens = vec![0u64; ERRNO_SLOTS];
        if let Some(Ok(arr)) = ebpf.map("file_opens").map(PerCpuArray::<_, u64>::try_from) {
            for (i, vals) in arr.iter().enumerate().take(ERRNO_SLOTS) {
                if let Ok(vals) = vals {
                    opens[i] = vals.iter().sum();
                }
            }
        }
        let mut errors: Vec<(String, u32, u64)> = Vec::new();
        if let Some(Ok(m)) = ebpf
            .map("file_open_errors")
            .map(PerCpuHashMap::<_, OpenErrorKey, u64>::try_from)
        {
            for (k, v) in m.iter().filter_map(|r| r.ok()) {
                errors.push((path_label(&k.path), k.err, v.iter().sum()));
            }
        }
        let mut syncs: Vec<(&'static str, u64, Log2Histogram)> = Vec::new();
        if let Some(Ok(arr)) = ebpf
            .map("file_syncs")
            .map(PerCpuArray::<_, FileSyncStats>::try_from)
        {
            for (i, vals) in arr.iter().enumerate() {
                let Ok(vals) = vals else { continue };
                let mut h = Log2Histogram::new(HIST_BUCKETS);
                let mut calls = 0;
                for v in vals.iter() {
                    calls += v.calls;
                    h.add(&v.hist, v.time_ns);
                }
                syncs.push((sync_name(i as u32), calls, h));
            }
        }
        let page_misses = percpu_counter(&ebpf, "files_counters", fc::PAGE_CACHE_MISSES);
        drop(ebpf);

        let files = fold_paths(
            &self.paths,
            paths.into_iter().collect(),
            kinds[file_kind::UNKNOWN_PATH as usize],
            kinds[file_kind::UNMAPPED as usize],
        );
        let series = |read: bool| {
            let pick = move |io: &FileIo| if read { io.read_bytes } else { io.write_bytes };
            let mut s: Vec<(Labels, u64)> = files
                .iter()
                .map(|(p, io)| {
                    (
                        vec![("kind", "file".to_string()), ("path", p.clone())],
                        pick(io),
                    )
                })
                .collect();
            for (i, io) in kinds.iter().enumerate() {
                if let Some(k) = kind_name(i as u32) {
                    s.push((vec![("kind", k.to_string())], pick(io)));
                }
            }
            s
        };
        metrics::counter(
            enc,
            "ebpf_sidecar_file_read_bytes",
            "Bytes the target read through read/pread/readv/sendfile/copy_file_range/splice: regular files by path (top-N, `other`, `unknown` = opened before the sidecar looked), everything else by kind.",
            series(true),
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_file_write_bytes",
            "Bytes the target wrote through write/pwrite/writev/sendfile/copy_file_range/splice: regular files by path (top-N, `other`, `unknown`), everything else by kind.",
            series(false),
        )?;

        metrics::counter(
            enc,
            "ebpf_sidecar_file_opens",
            "open/openat/openat2/creat calls of the target, by result (ok or errno name).",
            opens
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| {
                    let r = if i == 0 {
                        "ok".to_string()
                    } else {
                        errno_name(i as u32)
                    };
                    (vec![("result", r)], *n)
                }),
        )?;
        // Failures whose (path, errno) did not fit the kernel table are in the totals only.
        let mut mapped: HashMap<u32, u64> = HashMap::new();
        for (_, e, n) in &errors {
            *mapped.entry(*e).or_default() += n;
        }
        for (e, total) in opens.iter().enumerate().skip(1) {
            let rest = total.saturating_sub(mapped.get(&(e as u32)).copied().unwrap_or(0));
            if rest > 0 {
                errors.push((OTHER.into(), e as u32, rest));
            }
        }
        metrics::counter(
            enc,
            "ebpf_sidecar_file_open_errors",
            "Failed opens of the target by path (top-N paths, the rest in `other`) and errno.",
            self.error_paths
                .fold(errors)
                .into_iter()
                .map(|(p, e, n)| (vec![("path", p), ("errno", errno_name(e))], n)),
        )?;

        metrics::counter(
            enc,
            "ebpf_sidecar_file_syncs",
            "fsync/fdatasync/sync_file_range calls of the target that returned, by call.",
            syncs
                .iter()
                .map(|(c, n, _)| (vec![("call", c.to_string())], *n)),
        )?;
        metrics::histogram(
            enc,
            "ebpf_sidecar_file_sync_duration_seconds",
            "Latency of the target's fsync/fdatasync/sync_file_range calls, by call.",
            syncs
                .into_iter()
                .map(|(c, _, h)| (vec![("call", c.to_string())], h)),
        )?;
        metrics::counter(
            enc,
            "ebpf_sidecar_page_cache_misses",
            "Pages the target caused to be added to the page cache (reads from storage incl. readahead, and new pages of buffered writes). Hits are not observable without kprobes.",
            [(vec![], page_misses)],
        )
    }

    fn lost_events(&self) -> u64 {
        let ebpf = self.obj.lock();
        percpu_counter(&ebpf, "files_counters", fc::LOST_OPEN_ERRORS)
            + percpu_counter(&ebpf, "files_counters", fc::LOST_FDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(r: u64, w: u64) -> FileIo {
        FileIo {
            read_bytes: r,
            write_bytes: w,
        }
    }

    #[test]
    fn paths_fold_to_top_n() {
        let b = LabelBudget::new(2);
        let out = fold_paths(
            &b,
            vec![
                ("/a".into(), io(10, 0)),
                ("/b".into(), io(0, 20)),
                ("/c".into(), io(1, 1)),
            ],
            io(5, 0),
            io(0, 3),
        );
        assert_eq!(out["/a"], io(10, 0));
        assert_eq!(out["/b"], io(0, 20));
        assert_eq!(out[OTHER], io(1, 4));
        assert_eq!(out[UNKNOWN], io(5, 0));
        assert!(!out.contains_key("/c"));
    }

    #[test]
    fn labels() {
        let mut p = [0u8; 256];
        p[..4].copy_from_slice(b"/etc");
        assert_eq!(path_label(&p), "/etc");
        assert_eq!(path_label(&[0u8; 4]), UNKNOWN);
        assert_eq!(kind_name(file_kind::SOCKET), Some("socket"));
        assert_eq!(kind_name(file_kind::UNKNOWN_PATH), None);
        assert_eq!(sync_name(file_sync_call::RANGE), "sync_file_range");
    }
}
