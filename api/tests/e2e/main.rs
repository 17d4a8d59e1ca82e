//! End-to-end tests over real HTTP: the server on a random port of 127.0.0.1, a real
//! client, and for start-up and shutdown the real binary.

mod audit;
mod auth;
mod binary;
mod contract;
mod edges;
mod errors;
mod events;
mod ledger;
mod lifecycle;
mod operations;
mod privacy;
mod reports;
mod reservations;
mod shutdown;
mod simulate;
mod support;
mod tamper;
#[cfg(feature = "pg-vault")]
mod vault;
