//! Copies a whole event log from one backend into another (an embedded data directory
//! into a KurrentDB cluster, say) and proves the copy complete.
//!
//! Events are copied in global order, each stream's consecutive events in one append, with
//! their ids, types, schema versions, metadata and payloads. Every append expects exactly
//! the revision before its first event, so each event keeps its revision, and a migration
//! that was interrupted can simply be run again: the appends already done are recognised
//! as idempotent retries (same ids, same expectation) and write nothing.
//!
//! `recorded_at` is the target's: the contract has no way to append with a given time, so
//! the target's hash chain is a new chain over the same events. The report names the chain
//! heads of both logs, so an auditor can tie the old log's last hashes to the new one.
//!
//! At the end both logs are read again side by side: the same events in the same order,
//! equal counts per stream and overall, and both hash chains unbroken.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{
    codec, ChainScope, Digest, EventStore, ExpectedRevision, NewEvent, Position, RecordedEvent,
    StoreError, StreamName, APPEND_SIZE_MAX, EVENTS_PER_APPEND_MAX, PAGE_SIZE_MAX,
};

/// What a migration copied and verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// Events in each log (equal, or the migration would have failed).
    pub events: u64,
    /// Events per stream (equal in both logs).
    pub streams: BTreeMap<StreamName, u64>,
    /// Appends made to the target (fewer than events: consecutive events are batched).
    pub appends: u64,
    pub source: ChainHeads,
    pub target: ChainHeads,
}

/// The ends of a log's hash chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainHeads {
    pub scope: ChainScope,
    /// The position and hash of the log's last event.
    pub last: Option<(Position, Digest)>,
    /// The hash of each stream's last event.
    pub streams: BTreeMap<StreamName, Digest>,
}

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The source log breaks its own invariants; nothing after this event was copied.
    #[error("the source log is inconsistent at position {position}: {reason}")]
    SourceInconsistent { position: Position, reason: String },
    /// The target does not hold exactly what was copied.
    #[error("verification failed: {reason}")]
    Mismatch { reason: String },
}

/// Copies every event of `source` into `target` and verifies the copy. `progress` hears
/// the number of events copied so far after every append.
pub async fn migrate<S, T>(
    source: &S,
    target: &T,
    mut progress: impl FnMut(u64),
) -> Result<MigrationReport, MigrateError>
where
    S: EventStore + ?Sized,
    T: EventStore + ?Sized,
{
    let mut reader = Pager::new(source);
    let mut batch = Batch::default();
    let mut copied = 0u64;
    let mut appends = 0u64;
    while let Some(event) = reader.next().await? {
        if !batch.accepts(&event) {
            copied += batch.append_to(target).await?;
            appends += 1;
            progress(copied);
        }
        batch.push(event)?;
    }
    if !batch.events.is_empty() {
        copied += batch.append_to(target).await?;
        appends += 1;
        progress(copied);
    }
    let mut report = verify(source, target).await?;
    report.appends = appends;
    if report.events != copied {
        return Err(MigrateError::Mismatch {
            reason: format!(
                "copied {copied} events but the logs hold {} (the source changed during \
                 the migration?)",
                report.events
            ),
        });
    }
    Ok(report)
}

/// Reads both logs side by side and checks that they hold the same events in the same
/// order, and that each one's hash chain is unbroken.
pub async fn verify<S, T>(source: &S, target: &T) -> Result<MigrationReport, MigrateError>
where
    S: EventStore + ?Sized,
    T: EventStore + ?Sized,
{
    let mut source_reader = Pager::new(source);
    let mut target_reader = Pager::new(target);
    let mut source_chain = ChainCheck::new(source.chain_scope());
    let mut target_chain = ChainCheck::new(target.chain_scope());
    let mut streams: BTreeMap<StreamName, u64> = BTreeMap::new();
    let mut events = 0u64;
    loop {
        let (from_source, from_target) = (source_reader.next().await?, target_reader.next().await?);
        let (original, copy) = match (from_source, from_target) {
            (None, None) => break,
            (Some(original), None) => {
                return Err(mismatch(format!(
                    "the target lacks event {} ({} revision {}) and everything after it",
                    original.id, original.stream, original.revision
                )))
            }
            (None, Some(extra)) => {
                return Err(mismatch(format!(
                    "the target holds event {} ({} revision {}) that the source does not",
                    extra.id, extra.stream, extra.revision
                )))
            }
            (Some(original), Some(copy)) => (original, copy),
        };
        same_event(&original, &copy)?;
        source_chain.check(&original, "source")?;
        target_chain.check(&copy, "target")?;
        *streams.entry(original.stream.clone()).or_default() += 1;
        events += 1;
    }
    Ok(MigrationReport {
        events,
        streams,
        appends: 0,
        source: source_chain.heads(),
        target: target_chain.heads(),
    })
}

fn mismatch(reason: String) -> MigrateError {
    MigrateError::Mismatch { reason }
}

fn same_event(original: &RecordedEvent, copy: &RecordedEvent) -> Result<(), MigrateError> {
    let differs = |field: &str| {
        Err(mismatch(format!(
            "event {} ({} revision {}) differs in the target: {field}",
            original.id, original.stream, original.revision
        )))
    };
    if copy.id != original.id {
        return differs("another event id stands in its place");
    }
    if copy.stream != original.stream {
        return differs("stream");
    }
    if copy.revision != original.revision {
        return differs("revision");
    }
    if copy.event_type != original.event_type {
        return differs("event type");
    }
    if copy.schema_version != original.schema_version {
        return differs("schema version");
    }
    if copy.metadata != original.metadata {
        return differs("metadata");
    }
    if copy.payload != original.payload {
        return differs("payload");
    }
    Ok(())
}

/// Follows one log's hash chain while it is read in global order.
struct ChainCheck {
    scope: ChainScope,
    last: Option<(Position, Digest)>,
    streams: HashMap<StreamName, Digest>,
}

impl ChainCheck {
    fn new(scope: ChainScope) -> ChainCheck {
        ChainCheck {
            scope,
            last: None,
            streams: HashMap::new(),
        }
    }

    fn check(&mut self, event: &RecordedEvent, log: &str) -> Result<(), MigrateError> {
        let previous = match self.scope {
            ChainScope::Global => self.last.map_or(Digest::GENESIS, |(_, hash)| hash),
            ChainScope::PerStream => self
                .streams
                .get(&event.stream)
                .copied()
                .unwrap_or(Digest::GENESIS),
        };
        if event.chain.previous != previous {
            return Err(mismatch(format!(
                "the {log} hash chain is broken before position {}",
                event.position
            )));
        }
        if !event.chain.holds_for(&codec::body_of(event)) {
            return Err(mismatch(format!(
                "the {log} event at position {} does not match its hash",
                event.position
            )));
        }
        self.last = Some((event.position, event.chain.current));
        self.streams
            .insert(event.stream.clone(), event.chain.current);
        Ok(())
    }

    fn heads(self) -> ChainHeads {
        ChainHeads {
            scope: self.scope,
            last: self.last,
            streams: self.streams.into_iter().collect(),
        }
    }
}

/// Consecutive source events of one stream, to be appended together.
#[derive(Default)]
struct Batch {
    stream: Option<StreamName>,
    first_revision: u64,
    events: Vec<NewEvent>,
    size: usize,
    last_position: Option<Position>,
}

impl Batch {
    fn accepts(&self, event: &RecordedEvent) -> bool {
        self.events.is_empty()
            || (self.stream.as_ref() == Some(&event.stream)
                && self.events.len() < EVENTS_PER_APPEND_MAX
                && self.size + event.payload.len() <= APPEND_SIZE_MAX)
    }

    fn push(&mut self, event: RecordedEvent) -> Result<(), MigrateError> {
        debug_assert!(self.accepts(&event));
        if self.events.is_empty() {
            self.stream = Some(event.stream.clone());
            self.first_revision = event.revision;
        } else if event.revision != self.first_revision + self.events.len() as u64 {
            return Err(MigrateError::SourceInconsistent {
                position: event.position,
                reason: format!(
                    "stream {} jumps to revision {} after {}",
                    event.stream,
                    event.revision,
                    self.first_revision + self.events.len() as u64 - 1
                ),
            });
        }
        self.size += event.payload.len();
        self.last_position = Some(event.position);
        self.events.push(NewEvent {
            id: event.id,
            event_type: event.event_type,
            schema_version: event.schema_version,
            metadata: event.metadata,
            payload: event.payload,
        });
        Ok(())
    }

    /// Appends the batch under the exact expectation that keeps its revisions, and empties
    /// it. Returns the number of events appended.
    async fn append_to<T: EventStore + ?Sized>(&mut self, target: &T) -> Result<u64, MigrateError> {
        let stream = self
            .stream
            .take()
            .expect("a batch with events names its stream");
        let events = std::mem::take(&mut self.events);
        let count = events.len() as u64;
        let expected = match self.first_revision {
            0 => ExpectedRevision::NoStream,
            revision => ExpectedRevision::Exact(revision - 1),
        };
        let last_revision = self.first_revision + count - 1;
        let outcome = target.append(&stream, expected, events).await?;
        if outcome.revision != last_revision {
            return Err(mismatch(format!(
                "stream {stream} got revision {} in the target where the source has {last_revision}",
                outcome.revision
            )));
        }
        *self = Batch::default();
        Ok(count)
    }
}

/// Reads a log in global order, one event at a time, a page at a time.
struct Pager<'a, S: EventStore + ?Sized> {
    store: &'a S,
    buffer: VecDeque<RecordedEvent>,
    last: Option<Position>,
    done: bool,
}

impl<'a, S: EventStore + ?Sized> Pager<'a, S> {
    fn new(store: &'a S) -> Self {
        Pager {
            store,
            buffer: VecDeque::new(),
            last: None,
            done: false,
        }
    }

    async fn next(&mut self) -> Result<Option<RecordedEvent>, StoreError> {
        if self.buffer.is_empty() && !self.done {
            let from = self.last.unwrap_or(Position::START);
            let page = self.store.read_all(from, PAGE_SIZE_MAX).await?;
            // Reads are inclusive: the page repeats the last event already returned.
            let last = self.last;
            self.buffer.extend(
                page.into_iter()
                    .filter(|e| last.is_none_or(|l| e.position > l)),
            );
            self.done = self.buffer.is_empty();
        }
        let event = self.buffer.pop_front();
        if let Some(event) = &event {
            assert!(
                self.last.is_none_or(|last| event.position > last),
                "read_all returned positions out of order"
            );
            self.last = Some(event.position);
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;
    use proptest::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::store::intercept::{AppendHook, Intercepted};
    use crate::store::memory::MemoryStore;
    use crate::store::{AppendOutcome, EventMetadata, EventType};

    fn event(n: u64, payload: &[u8]) -> NewEvent {
        NewEvent {
            id: Uuid::new_v4(),
            event_type: EventType::parse(format!("Event{}", n % 3)).unwrap(),
            schema_version: (n % 4) as u16 + 1,
            metadata: EventMetadata {
                correlation_id: n.is_multiple_of(2).then(Uuid::new_v4),
                causation_id: n.is_multiple_of(3).then(Uuid::new_v4),
            },
            payload: payload.to_vec(),
        }
    }

    fn stream(name: &str) -> StreamName {
        StreamName::parse(name).unwrap()
    }

    /// Appends `runs` of (stream, count) in order, each run one append.
    async fn fill(store: &MemoryStore, runs: &[(&str, u64)]) {
        let mut n = 0;
        for (name, count) in runs {
            let stream = stream(name);
            let events = (0..*count)
                .map(|_| {
                    n += 1;
                    event(n, format!("{{\"n\":{n}}}").as_bytes())
                })
                .collect();
            store
                .append(&stream, ExpectedRevision::Any, events)
                .await
                .unwrap();
        }
    }

    /// Counts a target's appends and its largest batch.
    #[derive(Clone, Default)]
    struct Counting {
        appends: Arc<AtomicU64>,
        largest: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl AppendHook<MemoryStore> for Counting {
        async fn append(
            &self,
            inner: &MemoryStore,
            stream: &StreamName,
            expected: ExpectedRevision,
            events: Vec<NewEvent>,
        ) -> Result<AppendOutcome, StoreError> {
            self.appends.fetch_add(1, Ordering::SeqCst);
            self.largest.fetch_max(events.len(), Ordering::SeqCst);
            inner.append(stream, expected, events).await
        }

        fn chain_scope(&self, _inner: &MemoryStore) -> ChainScope {
            ChainScope::PerStream // pretend, to exercise per-stream heads
        }
    }

    #[tokio::test]
    async fn copies_everything_in_order_and_reports_the_chains() {
        let source = MemoryStore::new();
        fill(
            &source,
            &[("a", 3), ("b", 2), ("a", 1), ("c", 4), ("b", 1), ("a", 2)],
        )
        .await;
        let target = MemoryStore::new();
        let mut seen = Vec::new();
        let report = migrate(&source, &target, |n| seen.push(n)).await.unwrap();

        assert_eq!(report.events, 13);
        assert_eq!(
            report.streams,
            BTreeMap::from([(stream("a"), 6), (stream("b"), 3), (stream("c"), 4)])
        );
        // Consecutive events of a stream travel together: one append per run.
        assert_eq!(report.appends, 6);
        assert_eq!(seen, vec![3, 5, 6, 10, 11, 13]);

        let original = crate::store::conformance::read_everything(&source).await;
        let copy = crate::store::conformance::read_everything(&target).await;
        assert_eq!(copy.len(), original.len());
        for (o, c) in original.iter().zip(&copy) {
            assert_eq!(
                (
                    &o.id,
                    &o.stream,
                    o.revision,
                    &o.event_type,
                    o.schema_version
                ),
                (
                    &c.id,
                    &c.stream,
                    c.revision,
                    &c.event_type,
                    c.schema_version
                )
            );
            assert_eq!((o.metadata, &o.payload), (c.metadata, &c.payload));
        }
        let last = |events: &[RecordedEvent]| {
            let event = events.last().unwrap();
            Some((event.position, event.chain.current))
        };
        assert_eq!(report.source.last, last(&original));
        assert_eq!(report.target.last, last(&copy));
        assert_eq!(report.source.scope, ChainScope::Global);
        let head_of = |events: &[RecordedEvent], name: &str| {
            events
                .iter()
                .rev()
                .find(|e| e.stream.as_str() == name)
                .unwrap()
                .chain
                .current
        };
        for name in ["a", "b", "c"] {
            assert_eq!(
                report.source.streams[&stream(name)],
                head_of(&original, name)
            );
            assert_eq!(report.target.streams[&stream(name)], head_of(&copy, name));
        }
    }

    #[tokio::test]
    async fn an_interrupted_migration_runs_again_without_writing_twice() {
        let source = MemoryStore::new();
        fill(&source, &[("a", 2), ("b", 3), ("a", 4)]).await;
        let target = MemoryStore::new();
        // The first two runs were copied before the interruption.
        let original = crate::store::conformance::read_everything(&source).await;
        let to_events = |events: &[RecordedEvent]| -> Vec<NewEvent> {
            events
                .iter()
                .map(|e| NewEvent {
                    id: e.id,
                    event_type: e.event_type.clone(),
                    schema_version: e.schema_version,
                    metadata: e.metadata,
                    payload: e.payload.clone(),
                })
                .collect()
        };
        target
            .append(
                &stream("a"),
                ExpectedRevision::NoStream,
                to_events(&original[0..2]),
            )
            .await
            .unwrap();
        target
            .append(
                &stream("b"),
                ExpectedRevision::NoStream,
                to_events(&original[2..5]),
            )
            .await
            .unwrap();
        let report = migrate(&source, &target, |_| {}).await.unwrap();
        assert_eq!(report.events, 9);
        assert_eq!(target.head().await.unwrap(), Some(Position::sequence(8)));
        let again = migrate(&source, &target, |_| {}).await.unwrap();
        assert_eq!(again.events, 9);
        assert_eq!(again.target, report.target, "a rerun must not write");
    }

    #[tokio::test]
    async fn a_target_holding_anything_else_fails_verification() {
        let source = MemoryStore::new();
        fill(&source, &[("a", 2)]).await;
        let target = MemoryStore::new();
        target
            .append(
                &stream("z"),
                ExpectedRevision::NoStream,
                vec![event(1, b"{}")],
            )
            .await
            .unwrap();
        match migrate(&source, &target, |_| {}).await {
            Err(MigrateError::Mismatch { reason }) => {
                assert!(reason.contains("differs"), "{reason}")
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }

        // A stream already holding other events refuses the copy.
        let target = MemoryStore::new();
        target
            .append(
                &stream("a"),
                ExpectedRevision::NoStream,
                vec![event(1, b"{}")],
            )
            .await
            .unwrap();
        assert!(matches!(
            migrate(&source, &target, |_| {}).await,
            Err(MigrateError::Store(StoreError::WrongExpectedVersion { .. }))
        ));
    }

    #[tokio::test]
    async fn verify_catches_an_event_missing_from_the_target() {
        let source = MemoryStore::new();
        fill(&source, &[("a", 2), ("b", 1)]).await;
        let target = MemoryStore::new();
        let original = crate::store::conformance::read_everything(&source).await;
        let first = &original[0];
        target
            .append(
                &first.stream,
                ExpectedRevision::NoStream,
                vec![NewEvent {
                    id: first.id,
                    event_type: first.event_type.clone(),
                    schema_version: first.schema_version,
                    metadata: first.metadata,
                    payload: first.payload.clone(),
                }],
            )
            .await
            .unwrap();
        match verify(&source, &target).await {
            Err(MigrateError::Mismatch { reason }) => {
                assert!(reason.contains("lacks"), "{reason}")
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn long_runs_are_split_at_the_append_limit() {
        let source = MemoryStore::new();
        let total = EVENTS_PER_APPEND_MAX as u64 + 10;
        let events: Vec<_> = (0..total).map(|n| event(n, b"{}")).collect();
        for chunk in events.chunks(EVENTS_PER_APPEND_MAX / 2) {
            source
                .append(&stream("long"), ExpectedRevision::Any, chunk.to_vec())
                .await
                .unwrap();
        }
        let target = Intercepted::new(MemoryStore::new(), Counting::default());
        let report = migrate(&source, &target, |_| {}).await.unwrap();
        assert_eq!(report.events, total);
        assert_eq!(report.appends, 2);
        assert_eq!(target.hook().appends.load(Ordering::SeqCst), 2);
        assert_eq!(
            target.hook().largest.load(Ordering::SeqCst),
            EVENTS_PER_APPEND_MAX
        );
        assert_eq!(report.target.scope, ChainScope::PerStream);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn any_log_copies_exactly(runs in proptest::collection::vec((0usize..4, 1u64..6), 0..20)) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let names = ["w", "x", "y", "z"];
                let runs: Vec<(&str, u64)> =
                    runs.iter().map(|(stream, count)| (names[*stream], *count)).collect();
                let source = MemoryStore::new();
                fill(&source, &runs).await;
                let target = MemoryStore::new();
                let report = migrate(&source, &target, |_| {}).await.unwrap();
                let total: u64 = runs.iter().map(|(_, count)| count).sum();
                assert_eq!(report.events, total);
                for name in names {
                    let want: u64 =
                        runs.iter().filter(|(s, _)| *s == name).map(|(_, c)| c).sum();
                    assert_eq!(report.streams.get(&stream(name)).copied().unwrap_or(0), want);
                }
                assert!(report.appends <= runs.len() as u64);
            });
        }
    }
}
