//! The in-memory backend: the trivially correct model the others are checked against, and
//! the store of unit tests. It chains records exactly like the file backend, so the same
//! verification applies to both.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use super::{
    check_append_limits, check_page_limit, classify_append, codec, subscription, AppendKind,
    AppendOutcome, ChainLink, Digest, Direction, EventStore, ExpectedRevision, NewEvent, Position,
    RecordedEvent, StoreError, StreamFrom, StreamName, StreamState, Subscription, WrittenEvent,
};

/// An event store held in memory; clones share the same log.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    log: RwLock<Log>,
    head: watch::Sender<Option<Position>>,
    clock: Box<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

#[derive(Default)]
struct Log {
    events: Vec<RecordedEvent>,
    /// Positions (indexes into `events`) of each stream's events, by revision.
    streams: HashMap<StreamName, Vec<u64>>,
    ids: HashMap<Uuid, u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::with_clock(Utc::now)
    }

    /// A store that stamps `recorded_at` from `clock`, for deterministic tests.
    pub fn with_clock(clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Inner {
                log: RwLock::new(Log::default()),
                head: watch::channel(None).0,
                clock: Box::new(clock),
            }),
        }
    }

    fn read_log(&self) -> std::sync::RwLockReadGuard<'_, Log> {
        self.inner.log.read().expect("memory store lock poisoned")
    }
}

impl Log {
    fn state(&self, stream: &StreamName) -> StreamState {
        match self
            .streams
            .get(stream)
            .and_then(|positions| positions.len().checked_sub(1))
        {
            Some(last) => StreamState::At(last as u64),
            None => StreamState::NoStream,
        }
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        check_append_limits(&events)?;
        let mut log = self.inner.log.write().expect("memory store lock poisoned");
        let kind = classify_append(expected, &events, |id| {
            let sequence = *log.ids.get(id)?;
            let event = &log.events[sequence as usize];
            Some(WrittenEvent {
                in_this_stream: &event.stream == stream,
                revision: event.revision,
                position: event.position,
            })
        })?;
        if let AppendKind::Repeat(outcome) = kind {
            return Ok(outcome);
        }
        let actual = log.state(stream);
        if !actual.satisfies(expected) {
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual,
            });
        }
        let recorded_at = (self.inner.clock)();
        let mut previous = log
            .events
            .last()
            .map_or(Digest::GENESIS, |event| event.chain.current);
        let mut body = Vec::new();
        for (revision, event) in (actual.next_revision()..).zip(events) {
            let sequence = log.events.len() as u64;
            body.clear();
            codec::encode_body(&event, stream, revision, recorded_at, &mut body);
            let chain = ChainLink::follow(previous, &body);
            // Store the timestamp as the codec would read it back (microseconds).
            let recorded_at =
                DateTime::<Utc>::from_timestamp_micros(recorded_at.timestamp_micros())
                    .expect("clock within range");
            log.events.push(RecordedEvent {
                id: event.id,
                stream: stream.clone(),
                revision,
                position: Position::sequence(sequence),
                event_type: event.event_type,
                schema_version: event.schema_version,
                recorded_at,
                metadata: event.metadata,
                payload: event.payload,
                chain,
            });
            log.streams
                .entry(stream.clone())
                .or_default()
                .push(sequence);
            log.ids.insert(event.id, sequence);
            previous = chain.current;
        }
        let last = log.events.last().expect("just appended");
        let outcome = AppendOutcome {
            revision: last.revision,
            position: last.position,
        };
        drop(log);
        self.inner.head.send_replace(Some(outcome.position));
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_page_limit(limit)?;
        let log = self.read_log();
        let Some(positions) = log.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let picked: Vec<u64> = match direction {
            Direction::Forward => {
                let start = match from {
                    StreamFrom::Start => 0,
                    StreamFrom::End => positions.len(),
                    StreamFrom::Revision(revision) => usize::try_from(revision)
                        .unwrap_or(usize::MAX)
                        .min(positions.len()),
                };
                positions[start..].iter().take(limit).copied().collect()
            }
            Direction::Backward => {
                let end = match from {
                    StreamFrom::Start => positions.len().min(1),
                    StreamFrom::End => positions.len(),
                    StreamFrom::Revision(revision) => usize::try_from(revision)
                        .unwrap_or(usize::MAX)
                        .saturating_add(1)
                        .min(positions.len()),
                };
                positions[..end].iter().rev().take(limit).copied().collect()
            }
        };
        Ok(picked
            .into_iter()
            .map(|sequence| log.events[sequence as usize].clone())
            .collect())
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_page_limit(limit)?;
        let log = self.read_log();
        let start = usize::try_from(from.commit)
            .unwrap_or(usize::MAX)
            .min(log.events.len());
        Ok(log.events[start..].iter().take(limit).cloned().collect())
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState, StoreError> {
        Ok(self.read_log().state(stream))
    }

    async fn head(&self) -> Result<Option<Position>, StoreError> {
        Ok(self.read_log().events.last().map(|event| event.position))
    }

    fn subscribe_all(&self, from: Position) -> Subscription {
        subscription::follow(self.clone(), from, self.inner.head.subscribe())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
