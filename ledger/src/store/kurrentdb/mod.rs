//! The clustered backend: the ledger's streams in a KurrentDB (EventStoreDB) cluster,
//! through the official gRPC client. Several ledger instances share one cluster; writes
//! use KurrentDB's optimistic concurrency on streams, and every instance follows `$all`
//! with a catch-up subscription.
//!
//! # What goes where
//! Each of our events is one KurrentDB event with the same id, the same event type, the
//! payload as data (content type JSON when the payload is byte-exact JSON, binary
//! otherwise) and our metadata in the event's custom metadata (see [`mapping`]). Our
//! [`Position`] is KurrentDB's commit/prepare position of the event in `$all`. KurrentDB's
//! own records (event types and streams starting with `$`) are never shown.
//!
//! # The hash chain, per stream
//! Writers on several instances append concurrently, so none knows the global
//! predecessor of its events; each stream is its own chain ([`ChainScope::PerStream`]).
//! An append reads the stream's last event (its revision, hash and `recorded_at`),
//! computes the links of the new events with [`super::codec::encode_body`] exactly as the
//! embedded log does, and appends under the *exact* state it read. If another writer got
//! there first, KurrentDB refuses the append; under [`ExpectedRevision::Exact`] and
//! [`ExpectedRevision::NoStream`] that is the caller's conflict, under
//! [`ExpectedRevision::Any`] and [`ExpectedRevision::StreamExists`] the writer reads again
//! and rechains, at most [`APPEND_ATTEMPTS_MAX`] times.
//!
//! # Idempotent retries, and why a retry cannot fork the chain
//! Before writing, an append looks for its event ids where an earlier identical append
//! would have put them: at the expected revision for `Exact`/`NoStream`, among the last
//! events of the stream (the batch size plus [`RETRY_LOOKBACK_MAX`]) for
//! `Any`/`StreamExists`. If they are there, the earlier outcome is returned and nothing is
//! written ([`classify_append`] decides, as in every backend). `recorded_at` is part of
//! the hashed body, so a retry must never write the same events with a new timestamp; it
//! cannot: if the earlier append landed, the retry finds it and writes nothing; if the
//! earlier append is still in flight when the retry appends, both carry the same ids under
//! the same exact expectation and KurrentDB's own id-based idempotency acknowledges the
//! retry without writing it, so the stored events keep the first attempt's metadata, which
//! is consistent with itself. The outcome is always read back from the stream.
//!
//! Known limits: KurrentDB keeps no index of event ids across streams, so reusing an
//! event id in a *different* stream is not detected here ([`IdScope::Stream`]; the
//! embedded backends refuse it with [`StoreError::IdempotencyConflict`]); neither is a
//! retry under `Any` that arrives after more than [`RETRY_LOOKBACK_MAX`] later events of
//! the same stream.
//!
//! # Testing without a server
//! The calls to KurrentDB sit behind a small trait (`wire::Wire`); the tests run the whole
//! conformance suite and fault scenarios (failed calls, lost acknowledgements, dropped
//! subscriptions) against an in-memory imitation of KurrentDB's semantics, and the suite
//! runs against a real server in `tests/store/kurrentdb.rs` when `KURRENTDB_URL` is set.
//!
//! # Failures
//! Unreachable nodes, a node that is not the leader and deadlines become
//! [`StoreError::Unavailable`] with the reason; reads and appends are tried
//! [`CALL_ATTEMPTS_MAX`] times with a doubling pause, each retry logged. A subscription
//! that loses its connection resumes after the last event it delivered, at most
//! [`SUBSCRIPTION_ATTEMPTS_MAX`] times in a row, then ends with the error
//! ([`RetryPolicy`] changes these).

pub mod connection;
#[cfg(test)]
mod fake;
pub mod mapping;
mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{
    check_append_limits, check_page_limit, classify_append, AppendKind, AppendOutcome, ChainScope,
    Digest, Direction, EventStore, ExpectedRevision, IdScope, NewEvent, Position, RecordedEvent,
    StoreError, StreamFrom, StreamName, StreamState, Subscription, WrittenEvent, PAGE_SIZE_MAX,
};
pub use connection::{ConnectionString, ConnectionStringError};
use mapping::StoredMetadata;
use wire::{AppendError, ClientWire, Outgoing, StreamPosition, Wire};

/// Chained appends under `Any`/`StreamExists` that may lose the race to another writer
/// before the append gives up with [`StoreError::WrongExpectedVersion`].
pub const APPEND_ATTEMPTS_MAX: u32 = 16;
/// Events beyond the batch size searched for an earlier identical append under
/// `Any`/`StreamExists`.
pub const RETRY_LOOKBACK_MAX: usize = 64;
/// Attempts of one read or append while the cluster is unavailable.
pub const CALL_ATTEMPTS_MAX: u32 = 4;
/// Reconnections of a subscription in a row, without an event delivered between them.
pub const SUBSCRIPTION_ATTEMPTS_MAX: u32 = 8;
/// The first pause before a retry; it doubles on each further retry.
pub const RETRY_PAUSE_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between retries.
pub const RETRY_PAUSE_MAX: Duration = Duration::from_secs(5);
/// How a store retries while the cluster is unavailable; [`RetryPolicy::default`] uses
/// the constants above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub call_attempts_max: u32,
    pub subscription_attempts_max: u32,
    pub pause_first: Duration,
    pub pause_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            call_attempts_max: CALL_ATTEMPTS_MAX,
            subscription_attempts_max: SUBSCRIPTION_ATTEMPTS_MAX,
            pause_first: RETRY_PAUSE_FIRST,
            pause_max: RETRY_PAUSE_MAX,
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `attempt` (from 1): doubling, at most `pause_max`.
    pub fn pause(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.pause_first.saturating_mul(factor).min(self.pause_max)
    }
}

/// Pages of `$all` read backwards to find the newest event that is not KurrentDB's own.
pub const HEAD_SCAN_PAGES_MAX: usize = 64;

const _: () = assert!(super::EVENTS_PER_APPEND_MAX + RETRY_LOOKBACK_MAX <= 2 * PAGE_SIZE_MAX);

/// An event store in a KurrentDB cluster; clones share the connection.
#[derive(Clone)]
pub struct KurrentDbStore {
    inner: Arc<Inner>,
}

struct Inner {
    wire: Box<dyn Wire>,
    /// What the store is connected to, for messages (the password hidden).
    label: String,
    clock: Box<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    retry: RetryPolicy,
}

impl KurrentDbStore {
    /// Connects to the cluster and checks it answers (with bounded, logged retries).
    /// Must be called inside a tokio runtime.
    pub async fn connect(connection: ConnectionString) -> Result<KurrentDbStore, StoreError> {
        let store = KurrentDbStore::lazy(connection)?;
        store.head().await.map_err(|error| match error {
            StoreError::Unavailable { reason } => StoreError::Unavailable {
                reason: format!("{}: {reason}", store.inner.label),
            },
            other => other,
        })?;
        Ok(store)
    }

    /// A store whose client connects on first use, without checking the cluster answers.
    /// Must be called inside a tokio runtime.
    pub fn lazy(connection: ConnectionString) -> Result<KurrentDbStore, StoreError> {
        KurrentDbStore::with_retry_policy(connection, RetryPolicy::default())
    }

    /// Like [`KurrentDbStore::lazy`], retrying as `retry` says.
    pub fn with_retry_policy(
        connection: ConnectionString,
        retry: RetryPolicy,
    ) -> Result<KurrentDbStore, StoreError> {
        let client = kurrentdb::Client::new(connection.settings().clone()).map_err(|error| {
            StoreError::Unavailable {
                reason: format!("cannot set up the KurrentDB client for {connection}: {error}"),
            }
        })?;
        Ok(KurrentDbStore::on_wire(
            Box::new(ClientWire::new(client)),
            connection.to_string(),
            retry,
        ))
    }

    fn on_wire(wire: Box<dyn Wire>, label: String, retry: RetryPolicy) -> KurrentDbStore {
        KurrentDbStore {
            inner: Arc::new(Inner {
                wire,
                label,
                clock: Box::new(Utc::now),
                retry,
            }),
        }
    }

    /// What the store connects to: the connection string, password hidden.
    pub fn label(&self) -> &str {
        &self.inner.label
    }

    /// Runs `call` until it succeeds, fails for a reason other than unavailability, or has
    /// been tried as often as the retry policy allows.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let retry = self.inner.retry;
        let mut attempt = 1;
        loop {
            match call().await {
                Err(StoreError::Unavailable { reason }) if attempt < retry.call_attempts_max => {
                    let pause = retry.pause(attempt);
                    tracing::warn!(
                        attempt,
                        attempts_max = retry.call_attempts_max,
                        pause_ms = pause.as_millis() as u64,
                        %reason,
                        "KurrentDB {what} failed, retrying"
                    );
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                Err(StoreError::Unavailable { reason }) => {
                    return Err(StoreError::Unavailable {
                        reason: format!("{reason} (after {attempt} attempts)"),
                    });
                }
                other => return other,
            }
        }
    }

    /// Reads one stream once.
    async fn read_stream_once(
        &self,
        stream: &StreamName,
        from: StreamPosition<u64>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner
            .wire
            .read_stream(stream, from, direction, limit)
            .await
    }

    /// The stream's last event, if any.
    async fn last_event(&self, stream: &StreamName) -> Result<Option<RecordedEvent>, StoreError> {
        Ok(self
            .read_stream_once(stream, StreamPosition::End, Direction::Backward, 1)
            .await?
            .pop())
    }

    /// One attempt at a chained append: read the stream's tail, recognise a retry, chain,
    /// append under the exact state read.
    async fn append_once(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: &[NewEvent],
    ) -> Result<Attempt, StoreError> {
        // Under a loose expectation an earlier identical append can be anywhere near the
        // end, so one backward read serves as both the tail and the search window.
        let window = match expected {
            ExpectedRevision::Any | ExpectedRevision::StreamExists => {
                events.len() + RETRY_LOOKBACK_MAX
            }
            ExpectedRevision::NoStream | ExpectedRevision::Exact(_) => 1,
        };
        let newest = self
            .read_stream_once(stream, StreamPosition::End, Direction::Backward, window)
            .await?;
        let tail = newest.first();
        let state = tail.map_or(StreamState::NoStream, |event| {
            StreamState::At(event.revision)
        });
        if let AppendKind::Repeat(outcome) = self
            .classify(stream, expected, events, state, &newest)
            .await?
        {
            return Ok(Attempt::Done(outcome));
        }
        if !state.satisfies(expected) {
            return Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: state,
            });
        }
        let recorded_at = mapping::recorded_at((self.inner.clock)(), tail.map(|e| e.recorded_at));
        let previous = tail.map_or(Digest::GENESIS, |e| e.chain.current);
        let first_revision = state.next_revision();
        let links = mapping::chain_links(stream, events, first_revision, recorded_at, previous);
        let outgoing = events
            .iter()
            .zip(&links)
            .map(|(event, link)| Outgoing {
                event: event.clone(),
                metadata: StoredMetadata::new(event, recorded_at, *link),
            })
            .collect();
        match self.inner.wire.append(stream, state, outgoing).await {
            Ok(()) => {}
            Err(AppendError::Conflict(actual)) => {
                // The stream moved since it was read. Under a loose expectation the next
                // attempt rechains; under an exact one it finds this very append (written
                // by a concurrent retry of it) or reports the conflict.
                tracing::debug!(%stream, %state, %actual, "lost a chained append race");
                return Ok(Attempt::Lost(actual));
            }
            Err(AppendError::Failed(error)) => return Err(error),
        }
        let last_revision = first_revision + events.len() as u64 - 1;
        let written = self
            .read_stream_once(
                stream,
                StreamPosition::Position(last_revision),
                Direction::Forward,
                1,
            )
            .await?;
        let last = written.first().ok_or_else(|| StoreError::Unavailable {
            reason: format!(
                "KurrentDB acknowledged the append to {stream} but revision {last_revision} \
                 does not read back (a follower that is behind?)"
            ),
        })?;
        assert_eq!(
            last.id,
            events.last().expect("checked non-empty").id,
            "KurrentDB put another event at the revision it acknowledged for ours"
        );
        Ok(Attempt::Done(AppendOutcome {
            revision: last.revision,
            position: last.position,
        }))
    }

    /// Whether `events` repeat an earlier append, looking where that append would be:
    /// at the expected revision for an exact expectation, among the `newest` events of
    /// the stream (read backward from the end) for a loose one.
    async fn classify(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: &[NewEvent],
        state: StreamState,
        newest: &[RecordedEvent],
    ) -> Result<AppendKind, StoreError> {
        let StreamState::At(last) = state else {
            return Ok(AppendKind::New); // an empty stream holds no earlier append
        };
        let at_slot;
        let candidates: &[RecordedEvent] = match expected {
            ExpectedRevision::NoStream | ExpectedRevision::Exact(_) => {
                let slot = match expected {
                    ExpectedRevision::Exact(revision) => revision.saturating_add(1),
                    _ => 0,
                };
                if slot > last {
                    return Ok(AppendKind::New);
                }
                at_slot = self
                    .read_stream_once(
                        stream,
                        StreamPosition::Position(slot),
                        Direction::Forward,
                        events.len(),
                    )
                    .await?;
                &at_slot
            }
            ExpectedRevision::Any | ExpectedRevision::StreamExists => newest,
        };
        let found: std::collections::HashMap<Uuid, WrittenEvent> = candidates
            .iter()
            .map(|event| {
                let written = WrittenEvent {
                    in_this_stream: true,
                    revision: event.revision,
                    position: event.position,
                };
                (event.id, written)
            })
            .collect();
        classify_append(expected, events, |id| found.get(id).copied())
    }

    /// Reads `$all` forward from `from` (inclusive), skipping KurrentDB's own records,
    /// until `limit` events or the end.
    async fn read_all_once(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut start = match mapping::read_all_start(from) {
            mapping::ReadAllStart::PastEnd => return Ok(Vec::new()),
            mapping::ReadAllStart::Start => StreamPosition::Start,
            mapping::ReadAllStart::At(position) => StreamPosition::Position(position),
        };
        let mut events = Vec::new();
        let mut last_seen: Option<Position> = None;
        // Every round reads at least one record past the last one seen, so this ends.
        loop {
            let want = limit - events.len();
            let page = self
                .inner
                .wire
                .read_all(start, Direction::Forward, want + 1)
                .await?;
            let mut progressed = false;
            let page_len = page.len();
            for (position, event) in page {
                if position < from || last_seen.is_some_and(|seen| position <= seen) {
                    continue;
                }
                last_seen = Some(position);
                progressed = true;
                if let Some(event) = event {
                    if events.len() < limit {
                        events.push(event);
                    }
                }
            }
            if events.len() >= limit || !progressed || page_len < want + 1 {
                return Ok(events);
            }
            let seen = last_seen.expect("progressed");
            start = StreamPosition::Position(seen);
        }
    }

    async fn head_once(&self) -> Result<Option<Position>, StoreError> {
        const PAGE: usize = 16;
        let mut start = StreamPosition::End;
        for _ in 0..HEAD_SCAN_PAGES_MAX {
            let page = self
                .inner
                .wire
                .read_all(start, Direction::Backward, PAGE)
                .await?;
            if let Some(event) = page.iter().find_map(|(_, event)| event.as_ref()) {
                return Ok(Some(event.position));
            }
            match page.last() {
                Some((oldest, _)) if page.len() == PAGE => {
                    // Backward reads of $all exclude the start position.
                    start = StreamPosition::Position(*oldest);
                }
                _ => return Ok(None),
            }
        }
        Err(StoreError::Unavailable {
            reason: format!(
                "the newest {} records of $all are all in KurrentDB's system streams; \
                 no ledger event found",
                HEAD_SCAN_PAGES_MAX * PAGE
            ),
        })
    }
}

/// How one attempt at a chained append ended.
enum Attempt {
    /// Written now, or found written by an earlier identical append.
    Done(AppendOutcome),
    /// Another writer appended to the stream between our read and our write.
    Lost(StreamState),
}

#[async_trait]
impl EventStore for KurrentDbStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        check_append_limits(&events)?;
        let mut last_lost = StreamState::NoStream;
        for attempt in 1..=APPEND_ATTEMPTS_MAX {
            match self
                .with_retries("append", || self.append_once(stream, expected, &events))
                .await?
            {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::Lost(actual) => last_lost = actual,
            }
            tracing::debug!(%stream, attempt, "retrying a chained append after a race");
        }
        tracing::warn!(
            %stream,
            attempts = APPEND_ATTEMPTS_MAX,
            "gave up a chained append: other writers kept winning"
        );
        Err(StoreError::WrongExpectedVersion {
            stream: stream.clone(),
            expected,
            actual: last_lost,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_page_limit(limit)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let position = match (from, direction) {
            (StreamFrom::End, Direction::Forward) => return Ok(Vec::new()),
            (StreamFrom::Start, _) => StreamPosition::Position(0),
            (StreamFrom::End, Direction::Backward) => StreamPosition::End,
            (StreamFrom::Revision(revision), _) => StreamPosition::Position(revision),
        };
        let events = self
            .with_retries("stream read", || {
                self.read_stream_once(stream, position, direction, limit)
            })
            .await?;
        if events.is_empty() && direction == Direction::Backward {
            if let StreamFrom::Revision(_) = from {
                // Reading backward from beyond the last event starts at the last event.
                return self
                    .with_retries("stream read", || {
                        self.read_stream_once(stream, StreamPosition::End, direction, limit)
                    })
                    .await;
            }
        }
        Ok(events)
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_page_limit(limit)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.with_retries("read of $all", || self.read_all_once(from, limit))
            .await
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState, StoreError> {
        let last = self
            .with_retries("stream read", || self.last_event(stream))
            .await?;
        Ok(last.map_or(StreamState::NoStream, |event| {
            StreamState::At(event.revision)
        }))
    }

    async fn head(&self) -> Result<Option<Position>, StoreError> {
        self.with_retries("read of $all", || self.head_once()).await
    }

    fn subscribe_all(&self, from: Position) -> Subscription {
        let (sender, receiver) = mpsc::channel(super::subscription::SUBSCRIPTION_BUFFER_MAX);
        let follower = Follower {
            store: self.clone(),
            from,
            last_delivered: None,
            sender,
        };
        tokio::spawn(follower.run());
        Subscription::from_channel(receiver)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // KurrentDB acknowledges an append once a quorum of nodes has it on disk.
        Ok(())
    }

    fn chain_scope(&self) -> ChainScope {
        ChainScope::PerStream
    }

    fn id_scope(&self) -> IdScope {
        IdScope::Stream
    }
}

/// The task behind one subscription: catch up by reading `$all`, then follow a
/// KurrentDB subscription; after a dropped connection, start over from the last event
/// delivered.
struct Follower {
    store: KurrentDbStore,
    from: Position,
    last_delivered: Option<Position>,
    sender: mpsc::Sender<Result<RecordedEvent, StoreError>>,
}

/// Why one connection of a follower ended.
enum Ended {
    SubscriberGone,
    Failed(StoreError),
}

impl Follower {
    async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            let delivered_before = self.last_delivered;
            let error = match self.follow().await {
                Ended::SubscriberGone => return,
                Ended::Failed(error) => error,
            };
            if self.last_delivered != delivered_before {
                failures = 0;
            }
            failures += 1;
            let retryable = matches!(error, StoreError::Unavailable { .. });
            let retry = self.store.inner.retry;
            if !retryable || failures >= retry.subscription_attempts_max {
                tracing::error!(%error, failures, "KurrentDB subscription ended");
                let _ = self.sender.send(Err(error)).await;
                return;
            }
            let pause = retry.pause(failures);
            tracing::warn!(
                %error,
                failures,
                attempts_max = retry.subscription_attempts_max,
                pause_ms = pause.as_millis() as u64,
                resume_after = ?self.last_delivered,
                "KurrentDB subscription dropped, resubscribing"
            );
            tokio::time::sleep(pause).await;
        }
    }

    async fn deliver(&mut self, event: RecordedEvent) -> Result<(), Ended> {
        let position = event.position;
        assert!(
            mapping::deliverable(position, self.from, self.last_delivered),
            "a subscription must not deliver out of order"
        );
        self.sender
            .send(Ok(event))
            .await
            .map_err(|_| Ended::SubscriberGone)?;
        self.last_delivered = Some(position);
        Ok(())
    }

    /// One connection's worth of following; returns how it ended.
    async fn follow(&mut self) -> Ended {
        match self.follow_inner().await {
            Ok(never) => match never {},
            Err(ended) => ended,
        }
    }

    async fn follow_inner(&mut self) -> Result<std::convert::Infallible, Ended> {
        let failed = Ended::Failed;
        // Catch up from the history, page by page.
        let live_from = loop {
            let head_before = match self.last_delivered {
                Some(_) => None,
                None => self.store.head_once().await.map_err(failed)?,
            };
            let start = self.last_delivered.unwrap_or(self.from);
            let page = self
                .store
                .read_all_once(start, PAGE_SIZE_MAX)
                .await
                .map_err(failed)?;
            let fresh: Vec<RecordedEvent> = page
                .into_iter()
                .filter(|e| mapping::deliverable(e.position, self.from, self.last_delivered))
                .collect();
            if fresh.is_empty() {
                break mapping::live_start(self.last_delivered, head_before);
            }
            for event in fresh {
                self.deliver(event).await?;
            }
        };
        // Then follow live appends: KurrentDB starts strictly after `live_from`.
        let mut live = self.store.inner.wire.subscribe(live_from).await;
        loop {
            let (position, event) = live.next().await.map_err(failed)?;
            match event {
                Some(event) if mapping::deliverable(position, self.from, self.last_delivered) => {
                    self.deliver(event).await?;
                }
                _ => {} // KurrentDB's own, or already delivered
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::fake::FakeKurrent;
    use super::*;
    use crate::store::conformance::event;
    use crate::store::{EventType, EVENTS_PER_APPEND_MAX};

    /// A store pointed at a port nothing listens on (loopback only: no network needed),
    /// retrying with short pauses.
    fn unreachable() -> KurrentDbStore {
        let connection = ConnectionString::parse("kurrentdb://127.0.0.1:1?tls=false").unwrap();
        KurrentDbStore::with_retry_policy(connection, fast_retries()).unwrap()
    }

    fn stream() -> StreamName {
        StreamName::parse("account-1").unwrap()
    }

    #[tokio::test]
    async fn scopes_are_per_stream() {
        let store = unreachable();
        assert_eq!(store.chain_scope(), ChainScope::PerStream);
        assert_eq!(store.id_scope(), IdScope::Stream);
    }

    #[tokio::test]
    async fn bad_requests_are_refused_before_any_network_call() {
        let store = unreachable();
        let too_many: Vec<_> = (0..=EVENTS_PER_APPEND_MAX).map(|_| event("x")).collect();
        assert!(matches!(
            store
                .append(&stream(), ExpectedRevision::Any, too_many)
                .await,
            Err(StoreError::LimitExceeded {
                limit: "events_per_append_max",
                ..
            })
        ));
        assert!(matches!(
            store
                .append(&stream(), ExpectedRevision::Any, Vec::new())
                .await,
            Err(StoreError::EmptyAppend)
        ));
        assert!(matches!(
            store.read_all(Position::START, PAGE_SIZE_MAX + 1).await,
            Err(StoreError::LimitExceeded { .. })
        ));
        // Reads that can hold nothing answer without asking the server.
        assert!(store
            .read_stream(&stream(), StreamFrom::End, Direction::Forward, 5)
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .read_stream(&stream(), StreamFrom::Start, Direction::Forward, 0)
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .read_all(Position::sequence(u64::MAX), 5)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_unavailable_after_bounded_retries() {
        let store = unreachable();
        let mut append = event("x");
        append.event_type = EventType::parse("PaymentReceived").unwrap();
        for result in [
            store
                .append(&stream(), ExpectedRevision::NoStream, vec![append])
                .await
                .map(|_| ()),
            store.stream_state(&stream()).await.map(|_| ()),
            store.head().await.map(|_| ()),
        ] {
            match result {
                Err(StoreError::Unavailable { reason }) => {
                    let attempts = format!("after {CALL_ATTEMPTS_MAX} attempts");
                    assert!(reason.contains(&attempts), "{reason}");
                }
                other => panic!("expected Unavailable, got {other:?}"),
            }
        }
        let connection = ConnectionString::parse("kurrentdb://127.0.0.1:1?tls=false").unwrap();
        match KurrentDbStore::connect(connection).await {
            Err(StoreError::Unavailable { reason }) => {
                assert!(reason.contains("127.0.0.1:1"), "{reason}")
            }
            Ok(_) => panic!("connected to nothing"),
            Err(other) => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_subscription_to_an_unreachable_cluster_ends_with_the_error() {
        let store = unreachable();
        let mut subscription = store.subscribe_all(Position::START);
        match subscription.next().await {
            Some(Err(StoreError::Unavailable { .. })) => {}
            other => panic!("expected the final error, got {other:?}"),
        }
        assert!(subscription.next().await.is_none(), "nothing after the end");
    }

    fn fast_retries() -> RetryPolicy {
        RetryPolicy {
            pause_first: Duration::from_millis(1),
            pause_max: Duration::from_millis(4),
            ..RetryPolicy::default()
        }
    }

    fn on_fake(fake: &FakeKurrent) -> KurrentDbStore {
        KurrentDbStore::on_wire(Box::new(fake.clone()), "fake".to_owned(), fast_retries())
    }

    /// The whole conformance suite, against the imitation of KurrentDB.
    mod conformance_on_fake {
        use super::{on_fake, FakeKurrent};

        crate::store_conformance_tests!(async { (on_fake(&FakeKurrent::default()), ()) });
    }

    #[tokio::test]
    async fn a_lost_acknowledgement_is_answered_with_the_original_outcome() {
        let fake = FakeKurrent::default();
        let store = on_fake(&fake);
        fake.faults().lose_next_ack.store(true, Ordering::SeqCst);
        let events = vec![event("a"), event("b")];
        let outcome = store
            .append(&stream(), ExpectedRevision::NoStream, events.clone())
            .await
            .unwrap();
        let written = store
            .read_stream(&stream(), StreamFrom::Start, Direction::Forward, 10)
            .await
            .unwrap();
        let ids: Vec<Uuid> = written.iter().map(|e| e.id).collect();
        assert_eq!(
            ids,
            vec![events[0].id, events[1].id],
            "written exactly once"
        );
        assert_eq!(outcome.revision, 1);
        assert_eq!(outcome.position, written[1].position);
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_persistent_ones_reported() {
        let fake = FakeKurrent::default();
        let store = on_fake(&fake);
        fake.faults()
            .failing_calls
            .store(CALL_ATTEMPTS_MAX - 1, Ordering::SeqCst);
        store
            .append(&stream(), ExpectedRevision::NoStream, vec![event("a")])
            .await
            .unwrap();
        fake.faults()
            .failing_calls
            .store(CALL_ATTEMPTS_MAX, Ordering::SeqCst);
        match store
            .append(&stream(), ExpectedRevision::Exact(0), vec![event("b")])
            .await
        {
            Err(StoreError::Unavailable { reason }) => {
                assert!(reason.contains("injected"), "{reason}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(
            store.stream_state(&stream()).await.unwrap(),
            StreamState::At(0)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_loose_appends_all_land_on_one_unbroken_chain() {
        const WRITERS: usize = 4;
        const APPENDS: usize = 10;
        let fake = FakeKurrent::default();
        let store = on_fake(&fake);
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..APPENDS {
                    let expected = if n == 0 {
                        ExpectedRevision::Any
                    } else {
                        ExpectedRevision::StreamExists
                    };
                    store
                        .append(&stream(), expected, vec![event(&format!("{writer}-{n}"))])
                        .await
                        .unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let written = store
            .read_stream(&stream(), StreamFrom::Start, Direction::Forward, 100)
            .await
            .unwrap();
        let revisions: Vec<u64> = written.iter().map(|e| e.revision).collect();
        assert_eq!(
            revisions,
            (0..(WRITERS * APPENDS) as u64).collect::<Vec<_>>()
        );
        crate::store::conformance::assert_chain_unbroken(&written, ChainScope::PerStream);
        assert!(written
            .windows(2)
            .all(|pair| pair[0].recorded_at <= pair[1].recorded_at));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscription_resumes_after_drops_without_gap_or_duplicate() {
        let fake = FakeKurrent::default();
        let store = on_fake(&fake);
        let history: Vec<_> = (0..10).map(|n| event(&format!("h{n}"))).collect();
        store
            .append(&stream(), ExpectedRevision::NoStream, history.clone())
            .await
            .unwrap();
        // The live feed drops every third record, and the first catch-up call fails.
        fake.faults().drop_live_after.store(3, Ordering::SeqCst);
        fake.faults().failing_calls.store(1, Ordering::SeqCst);
        let mut subscription = store.subscribe_all(Position::START);
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut live = Vec::new();
                for n in 0..30 {
                    let event = event(&format!("l{n}"));
                    store
                        .append(&stream(), ExpectedRevision::Any, vec![event.clone()])
                        .await
                        .unwrap();
                    live.push(event);
                    tokio::task::yield_now().await;
                }
                live
            })
        };
        let mut received = Vec::new();
        while received.len() < 40 {
            let next = tokio::time::timeout(Duration::from_secs(10), subscription.next())
                .await
                .expect("subscription stalled")
                .expect("subscription ended")
                .expect("subscription failed");
            received.push(next.id);
        }
        let live = writer.await.unwrap();
        let expected: Vec<Uuid> = history.iter().chain(&live).map(|e| e.id).collect();
        assert_eq!(received, expected);
        let extra = tokio::time::timeout(Duration::from_millis(100), subscription.next()).await;
        assert!(
            extra.is_err(),
            "nothing more was appended, yet the subscription gave {extra:?}"
        );
    }

    #[tokio::test]
    async fn a_subscription_from_a_middle_position_is_inclusive_and_skips_system_records() {
        let fake = FakeKurrent::default();
        let store = on_fake(&fake);
        for n in 0..6 {
            store
                .append(
                    &stream(),
                    ExpectedRevision::Any,
                    vec![event(&n.to_string())],
                )
                .await
                .unwrap();
        }
        assert!(
            fake.record_count() > 6,
            "the fake writes records of its own"
        );
        let all = store.read_all(Position::START, 100).await.unwrap();
        assert_eq!(all.len(), 6, "only the ledger's events are shown");
        assert_eq!(store.head().await.unwrap(), Some(all[5].position));
        let mut subscription = store.subscribe_all(all[3].position);
        for want in &all[3..] {
            assert_eq!(subscription.next().await.unwrap().unwrap().id, want.id);
        }
    }

    #[tokio::test]
    async fn an_event_the_ledger_did_not_write_stops_reads_with_its_place() {
        let fake = FakeKurrent::default();
        let store = on_fake(&fake);
        store
            .append(&stream(), ExpectedRevision::NoStream, vec![event("a")])
            .await
            .unwrap();
        fake.write_foreign("orders-7", "OrderPlaced");
        match store.read_all(Position::START, 10).await {
            Err(StoreError::Corrupted { file, .. }) => {
                assert!(file.to_string_lossy().contains("orders-7"), "{file:?}")
            }
            other => panic!("expected Corrupted, got {other:?}"),
        }
    }

    #[test]
    fn retry_pauses_double_up_to_the_maximum() {
        let retry = RetryPolicy::default();
        assert_eq!(retry.pause(1), RETRY_PAUSE_FIRST);
        assert_eq!(retry.pause(2), RETRY_PAUSE_FIRST * 2);
        assert_eq!(retry.pause(3), RETRY_PAUSE_FIRST * 4);
        assert_eq!(retry.pause(40), RETRY_PAUSE_MAX);
    }
}
