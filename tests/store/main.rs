//! The event store conformance suite, run against every backend.

mod kurrentdb;

mod memory {
    ledger::store_conformance_tests!(async { (ledger::store::memory::MemoryStore::new(), ()) });
}
