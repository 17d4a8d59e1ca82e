//! Benchmarks: measured speed, never asserted in tests. Run with `refledger bench ...`.

pub mod api;
pub mod store;
