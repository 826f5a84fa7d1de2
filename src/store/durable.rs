//! Crash-safe file writes, for the embedded store's data file and the instance's own
//! files in its data directory (high-water marks, last good snapshots, pending kills).

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a reader (or a crash) sees the old file or the
/// new one, never a torn mix (temp file, fsync, rename, fsync of the directory).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // The rename is only durable once the directory entry is.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
