//! Benchmarks: measured speed, never asserted in tests. Run with `refledger bench ...`.

pub mod all;
pub mod api;
pub mod scaling;
pub mod store;
