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
