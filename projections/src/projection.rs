//! The contract every read model implements: fold recorded events into a state, and write
//! that state as deterministic bytes so a checkpoint can restore it and a rebuild can be
//! compared with the live state byte for byte.

use std::io::{self, Read, Write};

use ledger::store::{Position, StoreError};

/// Why a projection could not go on. Every variant is either a failure of the store, a
/// payload the projection cannot read, or a broken invariant (a bug in the writer or in
/// the projection), and names the position where it happened.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("event at position {position} ({event_type}) cannot be read: {reason}")]
    UndecodableEvent {
        position: Position,
        event_type: String,
        reason: String,
    },
    #[error("invariant broken at position {position}: {reason}")]
    InvariantBroken { position: Position, reason: String },
    #[error("projection state of {projection} cannot be restored: {reason}")]
    BadState { projection: String, reason: String },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error("{limit} is {max}, got {actual}")]
    LimitExceeded {
        limit: &'static str,
        max: usize,
        actual: usize,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// A read model folded from the log.
///
/// `apply` must be deterministic: the same events in the same order give the same
/// `encode_state` bytes, whether they arrived through a live subscription, a catch-up after
/// a restart from a checkpoint, or a rebuild from zero.
pub trait Projection: Send + Sync + 'static {
    /// A stable name, used for the checkpoint file and in error messages.
    fn name(&self) -> &str;

    /// Folds one event in. Events the projection does not care about are ignored.
    fn apply(&mut self, event: &ledger::store::RecordedEvent) -> Result<(), ProjectionError>;

    /// Folds a run of consecutive events in, in order. The default applies them one by
    /// one; a projection may override it to prepare events in parallel (decoding) while
    /// the fold itself stays sequential. After an error the state is undefined: the
    /// projection must be rebuilt (the runner stops).
    fn apply_batch(
        &mut self,
        events: &[ledger::store::RecordedEvent],
    ) -> Result<(), ProjectionError> {
        events.iter().try_for_each(|event| self.apply(event))
    }

    /// Writes the whole state as bytes that depend only on the events applied (maps in
    /// key order, no addresses, no hash-map iteration order), to `out` as it goes: a
    /// checkpoint streams it to its file, so a large state should be written from the
    /// live structures, not from an encoding built in memory first. Writing the same
    /// state twice writes the same bytes.
    fn encode_state(&self, out: &mut dyn Write) -> io::Result<()>;

    /// Replaces the state with one written by `encode_state`, read from `state` to its
    /// end. Changes nothing if the state cannot be read.
    fn decode_state(&mut self, state: &mut dyn Read) -> Result<(), ProjectionError>;

    /// An empty projection with the same configuration, for rebuilding into scratch state.
    fn fresh(&self) -> Self
    where
        Self: Sized;
}

/// The state bytes of a projection, in memory: for tests and small projections.
pub fn state_bytes<P: Projection + ?Sized>(projection: &P) -> Vec<u8> {
    let mut out = Vec::new();
    projection
        .encode_state(&mut out)
        .expect("a state encodes into memory");
    out
}
