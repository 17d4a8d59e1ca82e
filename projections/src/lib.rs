//! Projections: everything users look at, derived from the log and rebuildable from zero.
//!
//! `projections` never appends events: it only reads what `ledger` recorded.
//!
//! - [`projection`]: the [`Projection`] contract (apply, deterministic state bytes).
//! - [`checkpoint`]: atomic, checksummed checkpoint files.
//! - [`runner`]: [`ProjectionRunner`], catch-up from a checkpoint, live follow, rebuild.
//! - [`determinism`]: the live-versus-rebuild check the tests run on long histories.
//! - [`forest`]: the referral forest (petgraph), iterative walks with a depth cap.
//! - [`journal`]: double-entry balances with point-in-time history.
//! - [`views`]: the domain read models ([`views::LedgerViews`]).
//! - [`report`]: finance reports as CSV and JSON.
//! - [`chain`]: order and hash-chain checks of a log read through the store contract.

pub mod bench;
pub mod chain;
pub mod checkpoint;
pub mod determinism;
pub mod forest;
pub mod hash;
pub mod history;
pub mod journal;
pub mod projection;
pub mod report;
pub mod rng;
pub mod runner;
pub mod segmented;
pub mod serial;
pub mod verify;
pub mod views;

pub use checkpoint::{Checkpoint, CheckpointDir};
pub use projection::{state_bytes, Projection, ProjectionError};
pub use runner::{rebuild_from_store, CheckpointPolicy, Progress, ProjectionRunner};
