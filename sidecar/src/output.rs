//! Files the sidecar writes at the end of `run` (--metrics-out, --seccomp-out, --seccomp-report).

use std::io::Write;
use std::path::Path;

/// Write `data` to `path` so that a reader sees the old file or the whole new one, never a part:
/// a temporary file next to it, synced, renamed over it.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(tmp, path)
}
