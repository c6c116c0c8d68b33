//! Files family: bytes read and written per path (top-N + `other`, non-files by kind), opens by
//! result and failing path, sync calls and their latency, page cache misses.
//! Kernel side: `sidecar-ebpf/bpf/files.bpf.c`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use aya::maps::{MapData, PerCpuArray};
use prometheus_client::encoding::DescriptorEncoder;
use sidecar_ebpf::{
    ERRNO_SLOTS, FILE_PATHS, FileIo, FilePath, FileSyncStats, HIST_BUCKETS, OpenErrorKey,
    file_kind, file_sync_call, files_counter as fc,
};

use super::{EncodeCtx, Object, Options, Probe, ProbeError};
use crate::metrics::{self, LabelBudget, Labels, Log2Histogram, Metric, OTHER};
use crate::tables::errno_name;

/// `path` only on `kind="file"` series.
pub const READ_BYTES: Metric = Metric::counter(
    "ebpf_sidecar_file_read_bytes",
    "Bytes the target read through read/pread/readv/sendfile/copy_file_range/splice: regular files by path (top-N, `other`, `unknown` = opened before the sidecar looked), everything else by kind.",
)
.labels(&["kind", "path?"])
.top_n(&["path"]);
pub const WRITE_BYTES: Metric = Metric::counter(
    "ebpf_sidecar_file_write_bytes",
    "Bytes the target wrote through write/pwrite/writev/sendfile/copy_file_range/splice: regular files by path (top-N, `other`, `unknown`), everything else by kind.",
)
.labels(&["kind", "path?"])
.top_n(&["path"]);
pub const OPENS: Metric = Metric::counter(
    "ebpf_sidecar_file_opens",
    "open/openat/openat2/creat calls of the target, by result (ok or errno name).",
)
.labels(&["result"]);
pub const OPEN_ERRORS: Metric = Metric::counter(
    "ebpf_sidecar_file_open_errors",
    "Failed opens of the target by path (top-N paths, the rest in `other`) and errno.",
)
.labels(&["path", "errno"])
.top_n(&["path"]);
pub const SYNCS: Metric = Metric::counter(
    "ebpf_sidecar_file_syncs",
    "fsync/fdatasync/sync_file_range calls of the target that returned, by call.",
)
.labels(&["call"]);
pub const SYNC_DURATION: Metric = Metric::histogram(
    "ebpf_sidecar_file_sync_duration_seconds",
    "Latency of the target's fsync/fdatasync/sync_file_range calls, by call.",
)
.labels(&["call"]);
pub const PAGE_CACHE_MISSES: Metric = Metric::counter(
    "ebpf_sidecar_page_cache_misses",
    "Pages the target caused to be added to the page cache (reads from storage incl. readahead, and new pages of buffered writes). Hits are not observable without kprobes.",
);
pub const METRICS: &[Metric] = &[
    READ_BYTES,
    WRITE_BYTES,
    OPENS,
    OPEN_ERRORS,
    SYNCS,
    SYNC_DURATION,
    PAGE_CACHE_MISSES,
];

/// Regular files read or written through a struct file whose open the probe did not see.
pub use crate::metrics::UNKNOWN;

pub struct Files {
    obj: Object,
    paths: LabelBudget,
    error_paths: LabelBudget,
}

pub fn load(opts: &Options) -> Result<Arc<dyn Probe>, ProbeError> {
    // Every table is per target (an inner map of this slot); the programs are the set's.
    let mut obj = Object::load_on(
        &opts.kernel_side,
        "files",
        sidecar_ebpf::objects::FILES,
        &Default::default(),
    )?;
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

fn add_io(to: &mut FileIo, from: &FileIo) {
    to.read_bytes += from.read_bytes;
    to.write_bytes += from.write_bytes;
}

/// What one scrape reads from the kernel's tables.
struct Scrape {
    /// Bytes by path label (regular files whose path is known).
    paths: HashMap<String, FileIo>,
    /// Bytes by `file_kind` slot.
    kinds: [FileIo; file_kind::KINDS as usize],
    /// Opens by result slot: 0 ok, else the errno.
    opens: Vec<u64>,
    /// Failed opens the kernel table kept: (path label, errno, count).
    errors: Vec<(String, u32, u64)>,
    /// By call: (name, calls, latency).
    syncs: Vec<(&'static str, u64, Log2Histogram)>,
    page_misses: u64,
}

impl Files {
    fn scrape(&self) -> Scrape {
        let maps = self.obj.maps();
        // Names of the ids handed out, then each id's bytes: as many lookups as paths seen,
        // not one per slot of the table.
        let mut paths: HashMap<String, FileIo> = HashMap::new();
        let ids = maps.hash::<FilePath, u32>("file_path_ids");
        if !ids.is_empty()
            && let Some(io) = maps.get::<PerCpuArray<&MapData, FileIo>>("file_io")
        {
            for (k, id) in ids {
                if id as usize >= FILE_PATHS {
                    continue;
                }
                match io.get(&id, 0) {
                    Ok(vals) => {
                        let e = paths.entry(path_label(&k.path)).or_default();
                        vals.iter().for_each(|v| add_io(e, v));
                    }
                    Err(e) => self.obj.read_error("file_io", e),
                }
            }
        }
        paths.retain(|_, io| *io != FileIo::default());
        let mut kinds = [FileIo::default(); file_kind::KINDS as usize];
        for (k, vals) in kinds
            .iter_mut()
            .zip(maps.percpu_array::<FileIo>("file_kind_io"))
        {
            vals.iter().for_each(|v| add_io(k, v));
        }
        let mut opens = vec![0u64; ERRNO_SLOTS];
        for (o, vals) in opens.iter_mut().zip(maps.percpu_array::<u64>("file_opens")) {
            *o = vals.iter().sum();
        }
        let errors = maps
            .percpu_hash::<OpenErrorKey, u64>("file_open_errors")
            .into_iter()
            .map(|(k, v)| (path_label(&k.path), k.err, v.iter().sum()))
            .collect();
        let syncs = (0..)
            .zip(maps.percpu_array::<FileSyncStats>("file_syncs"))
            .map(|(call, vals)| {
                let mut h = Log2Histogram::new(HIST_BUCKETS);
                for v in &vals {
                    h.add(&v.hist, v.time_ns);
                }
                (sync_name(call), vals.iter().map(|v| v.calls).sum(), h)
            })
            .collect();
        let page_misses = maps.counter("files_counters", fc::PAGE_CACHE_MISSES);
        Scrape {
            paths,
            kinds,
            opens,
            errors,
            syncs,
            page_misses,
        }
    }

    /// Read and write bytes: regular files by path, the other kinds by kind.
    fn encode_bytes(&self, s: &Scrape, enc: &mut DescriptorEncoder) -> fmt::Result {
        let files = fold_paths(
            &self.paths,
            s.paths.clone().into_iter().collect(),
            s.kinds[file_kind::UNKNOWN_PATH as usize],
            s.kinds[file_kind::UNMAPPED as usize],
        );
        let series = |read: bool| {
            let pick = move |io: &FileIo| if read { io.read_bytes } else { io.write_bytes };
            let mut out: Vec<(Labels, u64)> = files
                .iter()
                .map(|(p, io)| {
                    (
                        vec![("kind", "file".to_string()), ("path", p.clone())],
                        pick(io),
                    )
                })
                .collect();
            for (i, io) in s.kinds.iter().enumerate() {
                if let Some(k) = kind_name(i as u32) {
                    out.push((vec![("kind", k.to_string())], pick(io)));
                }
            }
            out
        };
        READ_BYTES.counter_series(enc, series(true))?;
        WRITE_BYTES.counter_series(enc, series(false))
    }

    /// Opens by result, and failed opens by path and errno.
    fn encode_opens(&self, s: &Scrape, enc: &mut DescriptorEncoder) -> fmt::Result {
        OPENS.counter_series(
            enc,
            s.opens
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
        let mut errors = s.errors.clone();
        let mut mapped: HashMap<u32, u64> = HashMap::new();
        for (_, e, n) in &errors {
            *mapped.entry(*e).or_default() += n;
        }
        for (e, total) in s.opens.iter().enumerate().skip(1) {
            let rest = total.saturating_sub(mapped.get(&(e as u32)).copied().unwrap_or(0));
            if rest > 0 {
                errors.push((OTHER.into(), e as u32, rest));
            }
        }
        OPEN_ERRORS.counter_series(
            enc,
            self.error_paths
                .fold(errors)
                .into_iter()
                .map(|(p, e, n)| (vec![("path", p), ("errno", errno_name(e))], n)),
        )
    }
}

impl Probe for Files {
    fn name(&self) -> &'static str {
        "files"
    }

    fn object(&self) -> &Object {
        &self.obj
    }

    fn encode(&self, _ctx: &EncodeCtx<'_>, enc: &mut DescriptorEncoder) -> fmt::Result {
        let s = self.scrape();
        self.encode_bytes(&s, enc)?;
        self.encode_opens(&s, enc)?;
        SYNCS.counter_series(
            enc,
            s.syncs
                .iter()
                .map(|(c, n, _)| (vec![("call", c.to_string())], *n)),
        )?;
        SYNC_DURATION.histogram_series(
            enc,
            s.syncs
                .into_iter()
                .map(|(c, _, h)| (vec![("call", c.to_string())], h)),
        )?;
        PAGE_CACHE_MISSES.counter_series(enc, [(vec![], s.page_misses)])
    }

    fn lost_events(&self) -> u64 {
        let maps = self.obj.maps();
        maps.counter("files_counters", fc::LOST_OPEN_ERRORS)
            + maps.counter("files_counters", fc::LOST_FDS)
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
    fn byte_series_fit_the_table() {
        // Regular files carry their path, the other kinds only the kind.
        for m in [READ_BYTES, WRITE_BYTES] {
            assert!(m.fits(&["kind", "path"]));
            assert!(m.fits(&["kind"]));
            assert!(!m.fits(&["path"]));
        }
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
