//! One writer per data directory: an advisory lock (`flock`) on `DIR/LOCK`, held for as
//! long as the store is open. The operating system releases it when the process dies, so
//! a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::store::StoreError;

use super::format::LOCK_FILE;

/// How long `acquire` keeps trying before reporting the directory locked. A lock can be
/// held for a moment by a process that is not using the store: a child forked by the
/// holder (for any reason) shares its open files until it executes its program, so a
/// store closed and reopened while its process spawns a child may find its own released
/// lock still held for that moment.
pub const LOCK_WAIT_MAX: Duration = Duration::from_millis(500);
const LOCK_RETRY_INTERVAL: Duration = Duration::from_millis(5);

/// The held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    // Holding the file holds the lock.
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir`, or fails with [`StoreError::Locked`] if another open store
    /// (in this or another process) holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        let path: PathBuf = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| StoreError::io(format!("open lock file {}", path.display()), error))?;
        let started = Instant::now();
        let locked = loop {
            match file.try_lock() {
                Err(TryLockError::WouldBlock) if started.elapsed() < LOCK_WAIT_MAX => {
                    std::thread::sleep(LOCK_RETRY_INTERVAL);
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(StoreError::Locked {
                    path,
                    reason: format!(
                        "another store holds it for writing ({}); close it first, or open \
                         read-only",
                        holder.trim()
                    ),
                });
            }
            Err(TryLockError::Error(error)) => {
                return Err(StoreError::io(format!("lock {}", path.display()), error))
            }
        }
        // For the operator's eyes only: who holds the lock. Not needed for correctness.
        let _ = file.set_len(0);
        let _ = writeln!(file, "pid {}", std::process::id());
        Ok(DirLock { _file: file })
    }
}
