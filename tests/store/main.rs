//! The event store conformance suite, run against every backend, and the file backend's
//! own durability, recovery and corruption tests.

mod kurrentdb;
mod pg;

mod memory {
    ledger::store_conformance_tests!(async { (ledger::store::memory::MemoryStore::new(), ()) });
}

mod file_fsync {
    ledger::store_conformance_tests!(async {
        crate::support::fresh_file_store(ledger::store::Durability::Fsync)
    });
}

mod file_buffered {
    ledger::store_conformance_tests!(async {
        crate::support::fresh_file_store(ledger::store::Durability::Buffered)
    });
}

mod crash;
mod file;
mod migrate;
mod model;
mod python;
mod support;
