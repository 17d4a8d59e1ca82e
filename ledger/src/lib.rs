//! The ledger: domain events and their deciders, money, and the event store they are
//! recorded in.
//!
//! `ledger` knows nothing about HTTP, JSON request shapes or projections: it records facts
//! and decides commands, and every layer above reads what it wrote.

pub mod domain;
pub mod durable;
pub mod hex;
#[cfg(any(feature = "pg-vault", feature = "pg-store"))]
pub mod pg;
pub mod privacy;
pub mod service;
pub mod store;
