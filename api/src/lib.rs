//! The HTTP server and the command line of the referral ledger.
//!
//! `api` is the only crate that knows JSON request shapes, HTTP status codes and tokens;
//! it turns requests into the ledger's commands and the ledger's answers into responses.

pub mod cli;
pub mod demo;
pub mod export;
pub mod heads;
pub mod http;
pub mod idempotency;
pub mod keys;
pub mod locks;
pub mod offline;
pub mod privacy;
pub mod proofs;
pub mod reports;
pub mod server;
pub mod simulate;
pub mod store;
pub mod sweeper;
pub mod tokens;
pub mod vault;
pub mod verify;

pub use http::{app, AppState};
