//! Helpers shared by the file store tests.

use ledger::store::file::{FileStore, FileStoreOptions};
use ledger::store::Durability;
use tempfile::TempDir;

/// A fresh file store in a temporary directory (the guard deletes it).
pub fn fresh_file_store(durability: Durability) -> (FileStore, TempDir) {
    let dir = TempDir::new().expect("temporary directory");
    let store = FileStore::open(
        dir.path(),
        FileStoreOptions {
            durability,
            ..FileStoreOptions::default()
        },
    )
    .expect("open file store");
    (store, dir)
}

/// The segment files of a data directory, in order.
pub fn segment_paths(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir.join(ledger::store::file::format::LOG_DIR))
        .expect("log directory")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    paths.sort();
    paths
}

/// Offset and size of every complete frame of a segment, found by following the length
/// fields from the header on (independently of the store's own reader), up to the end of
/// the file or of the records (a zero length: the zeros a running writer preallocates).
pub fn frame_offsets(path: &std::path::Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).expect("read segment");
    let mut at = ledger::store::file::format::SEGMENT_HEADER_SIZE;
    let mut frames = Vec::new();
    while at + 4 <= bytes.len() {
        let size = 4 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if size == 4 || at + size > bytes.len() {
            break;
        }
        frames.push((at as u64, size as u64));
        at += size;
    }
    frames
}
