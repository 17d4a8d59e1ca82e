//! The event store contract that every backend implements.
//!
//! The shape follows KurrentDB (EventStoreDB) so that the clustered backend is a thin
//! adapter: events are appended to named streams under an expected revision (optimistic
//! concurrency), every event has a per-stream revision and a global position, the whole
//! log reads in global order, and a catch-up subscription follows live appends.
//!
//! Backends:
//! - [`memory::MemoryStore`]: in-process, for tests and as the trivially correct model.
//! - [`file::FileStore`]: the embedded, durable, segmented append-only log (the default).
//! - `kurrentdb::KurrentDbStore` (cargo feature `kurrentdb`): a KurrentDB cluster shared by
//!   several instances; its hash chain is per stream.
//! - `pg::PgStore` (cargo feature `pg-store`): a PostgreSQL database; one global order
//!   and one global hash chain, positions serialised by a lock on the log head.
//!
//! [`migrate::migrate`] copies a whole log from one backend into another and verifies it.
//!
//! Every backend passes the same [`conformance`] suite.

pub mod chain;
pub mod codec;
pub mod conformance;
pub mod file;
pub mod intercept;
#[cfg(feature = "kurrentdb")]
pub mod kurrentdb;
pub mod memory;
pub mod merkle;
pub mod migrate;
#[cfg(feature = "pg-store")]
pub mod pg;
mod subscription;

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use chain::{ChainLink, Digest};
pub use subscription::Subscription;

/// Largest payload of one event, in bytes.
pub const EVENT_SIZE_MAX: usize = 1024 * 1024;
/// Most events accepted by one `append`.
pub const EVENTS_PER_APPEND_MAX: usize = 4096;
/// Largest total payload of one `append`, in bytes.
pub const APPEND_SIZE_MAX: usize = 16 * 1024 * 1024;
/// Longest stream name, in bytes of UTF-8.
pub const STREAM_NAME_LENGTH_MAX: usize = 256;
/// Longest event type name, in bytes.
pub const EVENT_TYPE_LENGTH_MAX: usize = 128;
/// Most events returned by one read.
pub const PAGE_SIZE_MAX: usize = 4096;

const _: () = assert!(EVENT_SIZE_MAX <= APPEND_SIZE_MAX);
// The codec stores name lengths in a u16 and payload lengths in a u32.
const _: () = assert!(STREAM_NAME_LENGTH_MAX <= u16::MAX as usize);
const _: () = assert!(EVENT_TYPE_LENGTH_MAX <= u16::MAX as usize);
const _: () = assert!(EVENT_SIZE_MAX <= u32::MAX as usize);

/// The name of a stream: non-empty UTF-8 of at most [`STREAM_NAME_LENGTH_MAX`] bytes, with
/// no control characters, not starting with `$` (reserved for KurrentDB system streams).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);

impl StreamName {
    pub fn parse(name: impl Into<String>) -> Result<StreamName, StoreError> {
        let name = name.into();
        let invalid = |reason: &str| StoreError::InvalidStreamName {
            reason: reason.to_owned(),
        };
        if name.is_empty() {
            return Err(invalid("a stream name must not be empty"));
        }
        if name.len() > STREAM_NAME_LENGTH_MAX {
            return Err(StoreError::LimitExceeded {
                limit: "stream_name_length_max",
                max: STREAM_NAME_LENGTH_MAX,
                actual: name.len(),
            });
        }
        if name.starts_with('$') {
            return Err(invalid(
                "names starting with '$' are reserved for system streams",
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("a stream name must not contain control characters"));
        }
        Ok(StreamName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamName {
    type Error = StoreError;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        StreamName::parse(name)
    }
}

impl From<StreamName> for String {
    fn from(name: StreamName) -> String {
        name.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// The type of an event, e.g. `PaymentReceived`: ASCII letters, digits, `_`, `-` and `.`,
/// at most [`EVENT_TYPE_LENGTH_MAX`] bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventType(String);

impl EventType {
    pub fn parse(name: impl Into<String>) -> Result<EventType, StoreError> {
        let name = name.into();
        if name.len() > EVENT_TYPE_LENGTH_MAX {
            return Err(StoreError::LimitExceeded {
                limit: "event_type_length_max",
                max: EVENT_TYPE_LENGTH_MAX,
                actual: name.len(),
            });
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if name.is_empty() || !name.chars().all(allowed) {
            return Err(StoreError::InvalidEventType {
                reason: format!(
                    "event type {name:?} must be 1 to {EVENT_TYPE_LENGTH_MAX} ASCII letters, \
                     digits, '_', '-' or '.'"
                ),
            });
        }
        Ok(EventType(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventType {
    type Error = StoreError;
    fn try_from(name: String) -> Result<Self, Self::Error> {
        EventType::parse(name)
    }
}

impl From<EventType> for String {
    fn from(name: EventType) -> String {
        name.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// What the writer believes about the stream before appending (optimistic concurrency).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExpectedRevision {
    /// Append whatever the stream's state.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must hold at least one event.
    StreamExists,
    /// The stream's last event must have exactly this revision.
    Exact(u64),
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no stream"),
            ExpectedRevision::StreamExists => f.write_str("stream exists"),
            ExpectedRevision::Exact(revision) => write!(f, "revision {revision}"),
        }
    }
}

/// What a stream actually holds, as reported by a concurrency mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamState {
    NoStream,
    /// The revision of the stream's last event.
    At(u64),
}

impl StreamState {
    pub fn satisfies(self, expected: ExpectedRevision) -> bool {
        match (expected, self) {
            (ExpectedRevision::Any, _) => true,
            (ExpectedRevision::NoStream, StreamState::NoStream) => true,
            (ExpectedRevision::StreamExists, StreamState::At(_)) => true,
            (ExpectedRevision::Exact(want), StreamState::At(have)) => want == have,
            _ => false,
        }
    }

    /// The revision the next appended event receives.
    pub fn next_revision(self) -> u64 {
        match self {
            StreamState::NoStream => 0,
            StreamState::At(last) => last + 1,
        }
    }
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamState::NoStream => f.write_str("no stream"),
            StreamState::At(revision) => write!(f, "revision {revision}"),
        }
    }
}

/// A place in the global order of all events.
///
/// KurrentDB identifies a place in `$all` by a commit and a prepare position; the embedded
/// backends use a gapless sequence number (the n-th event ever appended, from zero) for
/// both. Positions order by commit, then prepare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub commit: u64,
    pub prepare: u64,
}

impl Position {
    /// Before the first event: reading from here reads everything.
    pub const START: Position = Position {
        commit: 0,
        prepare: 0,
    };

    /// The position of the `sequence`-th event of an embedded log.
    pub const fn sequence(sequence: u64) -> Position {
        Position {
            commit: sequence,
            prepare: sequence,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.commit == self.prepare {
            write!(f, "{}", self.commit)
        } else {
            write!(f, "{}/{}", self.commit, self.prepare)
        }
    }
}

/// Which way a stream is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Forward,
    Backward,
}

/// Where a stream read starts (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamFrom {
    /// Revision 0, in either direction.
    Start,
    /// The last event (backward), or past it (forward: reads nothing).
    End,
    Revision(u64),
}

/// Correlation and causation of an event: which request it belongs to and which command
/// or event caused it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventMetadata {
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
}

/// An event proposed for appending. `id` makes the append idempotent: re-sending the same
/// ids after a lost acknowledgement does not write twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: Uuid,
    pub event_type: EventType,
    pub schema_version: u16,
    pub metadata: EventMetadata,
    pub payload: Vec<u8>,
}

/// An event as the store recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    pub id: Uuid,
    pub stream: StreamName,
    pub revision: u64,
    pub position: Position,
    pub event_type: EventType,
    pub schema_version: u16,
    /// When the store accepted the event (microsecond precision).
    pub recorded_at: DateTime<Utc>,
    pub metadata: EventMetadata,
    pub payload: Vec<u8>,
    /// The tamper-evidence chain: the hash of the record before and of this one.
    pub chain: ChainLink,
}

/// The result of a successful append: the revision and global position of the last event
/// written (or, for an idempotent repeat, of the last event written the first time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppendOutcome {
    pub revision: u64,
    pub position: Position,
}

/// How much of an acknowledged append survives a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// An append is acknowledged after its bytes reached the disk (fsync). It survives a
    /// process kill and a power loss. Concurrent appends share one fsync (group commit).
    #[default]
    Fsync,
    /// An append is acknowledged after its bytes reached the operating system (write). It
    /// survives a process kill but not a power loss or kernel crash; everything appended
    /// is made durable by [`EventStore::flush`] or a clean close. For bulk imports.
    Buffered,
}

/// Why a store operation failed. Rejections of the request come first; failures of the
/// store itself after.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("wrong expected version on stream {stream}: expected {expected}, actual {actual}")]
    WrongExpectedVersion {
        stream: StreamName,
        expected: ExpectedRevision,
        actual: StreamState,
    },
    #[error("{limit} is {max}, got {actual}")]
    LimitExceeded {
        limit: &'static str,
        max: usize,
        actual: usize,
    },
    #[error("invalid stream name: {reason}")]
    InvalidStreamName { reason: String },
    #[error("invalid event type: {reason}")]
    InvalidEventType { reason: String },
    #[error("an append must carry at least one event")]
    EmptyAppend,
    #[error("event id {event_id} appears twice in one append")]
    DuplicateEventId { event_id: Uuid },
    #[error(
        "event id {event_id} was already written, but the append does not repeat that \
         earlier append exactly: {reason}"
    )]
    IdempotencyConflict { event_id: Uuid, reason: String },
    #[error("corrupt log in {file} at byte offset {offset}: {reason}")]
    Corrupted {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("data directory {path} is locked by another process: {reason}")]
    Locked { path: PathBuf, reason: String },
    #[error("the store refuses writes: {reason}")]
    WritesRefused { reason: String },
    #[error("the store is unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The event store: both backends implement it, and the conformance suite checks it.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if the stream is in the `expected` state. All events of
    /// one append are written together or not at all, consecutively in the stream.
    ///
    /// If every event id was already written, consecutively in this stream, by an earlier
    /// append whose expectation this one repeats, nothing is written and that earlier
    /// outcome is returned (idempotent retry).
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError>;

    /// Reads at most `limit` events of one stream, starting at `from` (inclusive), in
    /// `direction`. A stream that does not exist reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads at most `limit` events of all streams in global order, starting at `from`
    /// (inclusive).
    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The state of one stream.
    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState, StoreError>;

    /// The position of the last event in the log, if any.
    async fn head(&self) -> Result<Option<Position>, StoreError>;

    /// Follows all events from `from` (inclusive): first the history, then live appends as
    /// they are acknowledged, with no gap and no duplicate at the switch-over.
    fn subscribe_all(&self, from: Position) -> Subscription;

    /// Makes everything acknowledged so far durable (a no-op under [`Durability::Fsync`]).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Why the store refuses appends now (a failed write or sync, a full disk, a
    /// read-only open), or `None` when it takes them: what readiness reports.
    fn write_refusal(&self) -> Option<String> {
        None
    }

    /// Which records the hash chain links: the whole log, or each stream on its own.
    fn chain_scope(&self) -> ChainScope {
        ChainScope::Global
    }

    /// Where an event id already written is recognised: anywhere in the log, or only in
    /// the stream it was written to.
    fn id_scope(&self) -> IdScope {
        IdScope::Log
    }
}

/// Where a backend recognises an event id as already written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IdScope {
    /// Ids are unique in the whole log: reusing one in another stream is an
    /// [`StoreError::IdempotencyConflict`] (the backend keeps an index of every id).
    Log,
    /// Ids are recognised within their stream only: a cluster keeps no index of ids
    /// across streams, so an id reused in another stream is written there.
    Stream,
}

/// Which records a backend's hash chain links together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChainScope {
    /// Each record links to the record before it in the global order (one writer).
    Global,
    /// Each record links to the record before it in its own stream (several writers
    /// append to a cluster concurrently, so no writer knows the global predecessor).
    PerStream,
}

/// Checks the request limits of an append; shared by every backend so they reject alike.
pub fn check_append_limits(events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::EmptyAppend);
    }
    if events.len() > EVENTS_PER_APPEND_MAX {
        return Err(StoreError::LimitExceeded {
            limit: "events_per_append_max",
            max: EVENTS_PER_APPEND_MAX,
            actual: events.len(),
        });
    }
    let mut append_size = 0usize;
    for event in events {
        if event.payload.len() > EVENT_SIZE_MAX {
            return Err(StoreError::LimitExceeded {
                limit: "event_size_max",
                max: EVENT_SIZE_MAX,
                actual: event.payload.len(),
            });
        }
        append_size += event.payload.len();
    }
    if append_size > APPEND_SIZE_MAX {
        return Err(StoreError::LimitExceeded {
            limit: "append_size_max",
            max: APPEND_SIZE_MAX,
            actual: append_size,
        });
    }
    let mut ids = std::collections::HashSet::with_capacity(events.len());
    for event in events {
        if !ids.insert(event.id) {
            return Err(StoreError::DuplicateEventId { event_id: event.id });
        }
    }
    Ok(())
}

/// Where an already written event stands, as far as idempotency needs to know.
#[derive(Clone, Copy, Debug)]
pub struct WrittenEvent {
    pub in_this_stream: bool,
    pub revision: u64,
    pub position: Position,
}

/// Whether an append is new or repeats one already written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendKind {
    New,
    Repeat(AppendOutcome),
}

/// Decides whether `events` repeat an earlier append (same ids, consecutive in `stream`,
/// under an expectation the earlier append also met). `locate` finds a written event by
/// id. Shared by every backend that keeps an id index, so they answer alike.
pub fn classify_append(
    expected: ExpectedRevision,
    events: &[NewEvent],
    locate: impl Fn(&Uuid) -> Option<WrittenEvent>,
) -> Result<AppendKind, StoreError> {
    let Some(first_event) = events.first() else {
        return Err(StoreError::EmptyAppend);
    };
    let Some(first) = locate(&first_event.id) else {
        if let Some(written) = events.iter().find(|event| locate(&event.id).is_some()) {
            return Err(StoreError::IdempotencyConflict {
                event_id: written.id,
                reason: "only some of the event ids were written before".to_owned(),
            });
        }
        return Ok(AppendKind::New);
    };
    let conflict = |reason: &str| StoreError::IdempotencyConflict {
        event_id: first_event.id,
        reason: reason.to_owned(),
    };
    if !first.in_this_stream {
        return Err(conflict("it was written to another stream"));
    }
    let expectation_repeated = match expected {
        ExpectedRevision::Any | ExpectedRevision::StreamExists => true,
        ExpectedRevision::NoStream => first.revision == 0,
        ExpectedRevision::Exact(revision) => first.revision == revision + 1,
    };
    if !expectation_repeated {
        return Err(conflict(
            "it was written under a different expected revision",
        ));
    }
    let mut last = first;
    for (offset, event) in events.iter().enumerate().skip(1) {
        match locate(&event.id) {
            Some(written)
                if written.in_this_stream && written.revision == first.revision + offset as u64 =>
            {
                last = written;
            }
            _ => return Err(conflict("the earlier append held other events")),
        }
    }
    Ok(AppendKind::Repeat(AppendOutcome {
        revision: last.revision,
        position: last.position,
    }))
}

/// Checks a read's page size against [`PAGE_SIZE_MAX`].
pub fn check_page_limit(limit: usize) -> Result<(), StoreError> {
    if limit > PAGE_SIZE_MAX {
        return Err(StoreError::LimitExceeded {
            limit: "page_size_max",
            max: PAGE_SIZE_MAX,
            actual: limit,
        });
    }
    Ok(())
}
