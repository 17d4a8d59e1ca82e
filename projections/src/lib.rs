//! Projections: everything users look at, derived from the log and rebuildable from zero.
//!
//! `projections` never appends events: it only reads what `ledger` recorded.
//!
//! - [`projection`]: the [`Projection`] contract (apply, deterministic state bytes).
//! - [`checkpoint`]: atomic, checksummed checkpoint files.
//! - [`runner`]: [`ProjectionRunner`], catch-up from a checkpoint, live follow, rebuild.

pub mod chain;
pub mod checkpoint;
pub mod projection;
pub mod runner;

pub use checkpoint::{Checkpoint, CheckpointDir};
pub use projection::{state_bytes, Projection, ProjectionError};
pub use runner::{rebuild_from_store, CheckpointPolicy, Progress, ProjectionRunner};
pub mod determinism;
pub mod forest;
pub mod journal;
pub mod rng;
