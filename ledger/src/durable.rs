//! Replacing a file so that a crash leaves either the old file or the new one, whole: the
//! one way checkpoints, vault records and the idempotency table are rewritten.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// Replaces `path` with what `write` writes: into `temporary` (next to `path`, same
/// directory), fsynced, renamed over `path`, then the directory fsynced so the rename is
/// durable too.
pub fn replace_file(
    path: &Path,
    temporary: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(temporary)?);
    write(&mut out)?;
    out.flush()?;
    let file = out.into_inner().map_err(|error| error.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(temporary, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Syncs a directory, so that files created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_content_replaces_the_old_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table");
        let temporary = dir.path().join("table.tmp");
        std::fs::write(&path, b"old").unwrap();
        replace_file(&path, &temporary, |out| out.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!temporary.exists());
        // A failed write leaves the old file as it was.
        let failed = replace_file(&path, &temporary, |_| {
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }
}
