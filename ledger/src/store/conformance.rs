//! The one conformance suite every [`EventStore`] backend must pass.
//!
//! Each check takes a fresh, empty store and panics with a message naming what broke.
//! [`crate::store_conformance_tests!`] turns the whole suite into one `#[test]` per check
//! for a backend; the suite is listed once in [`CHECKS`] so no backend can skip a check.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::{
    codec, ChainScope, Digest, Direction, EventMetadata, EventStore, EventType, ExpectedRevision,
    IdScope, NewEvent, Position, RecordedEvent, StoreError, StreamFrom, StreamName, StreamState,
    EVENTS_PER_APPEND_MAX, EVENT_SIZE_MAX, PAGE_SIZE_MAX, STREAM_NAME_LENGTH_MAX,
};

/// The names of every check, in the order the macro generates them.
pub const CHECKS: &[&str] = &[
    "append_and_read_back",
    "expected_revision_rules",
    "idempotent_retry",
    "limits_are_typed_and_change_nothing",
    "read_stream_directions_and_limits",
    "read_all_global_order_and_chain",
    "subscribe_catches_up_then_follows",
    "concurrent_exact_appends_take_each_revision_once",
    "multi_event_appends_are_seen_whole",
];

/// A proposed event with a fresh id and a payload naming `label`.
pub fn event(label: &str) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: EventType::parse("TestEvent").expect("valid type"),
        schema_version: 1,
        metadata: EventMetadata {
            correlation_id: Some(Uuid::new_v4()),
            causation_id: None,
        },
        payload: format!("{{\"label\":\"{label}\"}}").into_bytes(),
    }
}

/// A stream name unique to this run (KurrentDB servers keep streams between runs).
pub fn stream(name: &str) -> StreamName {
    StreamName::parse(format!("{name}-{}", Uuid::new_v4().simple())).expect("valid stream")
}

fn assert_same_event(recorded: &RecordedEvent, proposed: &NewEvent, stream: &StreamName) {
    assert_eq!(recorded.id, proposed.id);
    assert_eq!(&recorded.stream, stream);
    assert_eq!(recorded.event_type, proposed.event_type);
    assert_eq!(recorded.schema_version, proposed.schema_version);
    assert_eq!(recorded.metadata, proposed.metadata);
    assert_eq!(recorded.payload, proposed.payload);
}

async fn read_whole_stream<S: EventStore>(store: &S, stream: &StreamName) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut from = 0u64;
    loop {
        let page = store
            .read_stream(
                stream,
                StreamFrom::Revision(from),
                Direction::Forward,
                PAGE_SIZE_MAX,
            )
            .await
            .expect("read stream");
        let Some(last) = page.last() else { break };
        from = last.revision + 1;
        out.extend(page);
    }
    out
}

/// Reads the whole log, in pages, from the start.
pub async fn read_everything<S: EventStore>(store: &S) -> Vec<RecordedEvent> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    let mut from = Position::START;
    loop {
        let page = store.read_all(from, PAGE_SIZE_MAX).await.expect("read all");
        let fresh: Vec<_> = page
            .into_iter()
            .filter(|event| out.last().is_none_or(|last| event.position > last.position))
            .collect();
        let Some(last) = fresh.last() else { break };
        from = last.position;
        out.extend(fresh);
    }
    out
}

/// Checks that `events` (the whole log, in order) form an unbroken hash chain from
/// genesis, with each record's hash matching its canonical body. Under
/// [`ChainScope::PerStream`] each stream is its own chain.
pub fn assert_chain_unbroken(events: &[RecordedEvent], scope: ChainScope) {
    let mut previous_global = Digest::GENESIS;
    let mut previous_per_stream: HashMap<&StreamName, Digest> = HashMap::new();
    for event in events {
        let previous = match scope {
            ChainScope::Global => &mut previous_global,
            ChainScope::PerStream => previous_per_stream
                .entry(&event.stream)
                .or_insert(Digest::GENESIS),
        };
        assert_eq!(
            event.chain.previous, *previous,
            "chain link broken before position {}",
            event.position
        );
        assert!(
            event.chain.holds_for(&codec::body_of(event)),
            "hash of position {} does not match its body",
            event.position
        );
        *previous = event.chain.current;
    }
}

pub async fn append_and_read_back<S: EventStore>(store: S) {
    let stream = stream("account");
    assert_eq!(
        store.stream_state(&stream).await.unwrap(),
        StreamState::NoStream
    );
    let head_before = store.head().await.unwrap();
    let events = vec![event("a"), event("b"), event("c")];
    let outcome = store
        .append(&stream, ExpectedRevision::NoStream, events.clone())
        .await
        .expect("first append");
    assert_eq!(outcome.revision, 2);
    assert_eq!(
        store.stream_state(&stream).await.unwrap(),
        StreamState::At(2)
    );
    assert_eq!(store.head().await.unwrap(), Some(outcome.position));
    assert!(head_before.is_none_or(|before| before < outcome.position));

    let read = read_whole_stream(&store, &stream).await;
    assert_eq!(read.len(), 3);
    for (revision, (recorded, proposed)) in read.iter().zip(&events).enumerate() {
        assert_same_event(recorded, proposed, &stream);
        assert_eq!(recorded.revision, revision as u64);
    }
    assert_eq!(read[2].position, outcome.position);
    assert!(read
        .windows(2)
        .all(|pair| pair[0].position < pair[1].position));
    assert!(read
        .windows(2)
        .all(|pair| pair[0].recorded_at <= pair[1].recorded_at));
}

pub async fn expected_revision_rules<S: EventStore>(store: S) {
    let stream = stream("rules");
    let wrong = |result: Result<_, StoreError>, want_actual: StreamState| match result {
        Err(StoreError::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, want_actual),
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    };
    wrong(
        store
            .append(&stream, ExpectedRevision::StreamExists, vec![event("x")])
            .await,
        StreamState::NoStream,
    );
    wrong(
        store
            .append(&stream, ExpectedRevision::Exact(0), vec![event("x")])
            .await,
        StreamState::NoStream,
    );
    store
        .append(&stream, ExpectedRevision::NoStream, vec![event("0")])
        .await
        .unwrap();
    wrong(
        store
            .append(&stream, ExpectedRevision::NoStream, vec![event("x")])
            .await,
        StreamState::At(0),
    );
    wrong(
        store
            .append(&stream, ExpectedRevision::Exact(5), vec![event("x")])
            .await,
        StreamState::At(0),
    );
    let outcome = store
        .append(&stream, ExpectedRevision::Exact(0), vec![event("1")])
        .await
        .unwrap();
    assert_eq!(outcome.revision, 1);
    let outcome = store
        .append(&stream, ExpectedRevision::StreamExists, vec![event("2")])
        .await
        .unwrap();
    assert_eq!(outcome.revision, 2);
    let outcome = store
        .append(&stream, ExpectedRevision::Any, vec![event("3")])
        .await
        .unwrap();
    assert_eq!(outcome.revision, 3);
    let fresh = self::stream("any-on-new");
    let outcome = store
        .append(&fresh, ExpectedRevision::Any, vec![event("0")])
        .await
        .unwrap();
    assert_eq!(outcome.revision, 0);
    // Rejected appends wrote nothing.
    assert_eq!(read_whole_stream(&store, &stream).await.len(), 4);
}

pub async fn idempotent_retry<S: EventStore>(store: S) {
    let stream = stream("payment");
    let batch = vec![event("a"), event("b")];
    let first = store
        .append(&stream, ExpectedRevision::NoStream, batch.clone())
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    // The acknowledgement was lost; the client sends the same append again.
    let again = store
        .append(&stream, ExpectedRevision::NoStream, batch.clone())
        .await
        .unwrap();
    assert_eq!(again, first);
    let any = store
        .append(&stream, ExpectedRevision::Any, batch.clone())
        .await
        .unwrap();
    assert_eq!(any, first);
    assert_eq!(store.head().await.unwrap(), head, "a retry must not write");
    assert_eq!(read_whole_stream(&store, &stream).await.len(), 2);

    let next = vec![event("c")];
    let second = store
        .append(&stream, ExpectedRevision::Exact(1), next.clone())
        .await
        .unwrap();
    assert_eq!(second.revision, 2);
    assert_eq!(
        store
            .append(&stream, ExpectedRevision::Exact(1), next.clone())
            .await
            .unwrap(),
        second
    );

    // Half old, half new: not a retry, and nothing written.
    let mixed = vec![batch[0].clone(), event("d")];
    assert!(matches!(
        store.append(&stream, ExpectedRevision::Any, mixed).await,
        Err(StoreError::IdempotencyConflict { .. })
    ));
    // The same id on another stream is not a retry either: refused where ids are unique
    // in the log, a new event where they are recognised per stream.
    let other = self::stream("other");
    let reused = store
        .append(&other, ExpectedRevision::Any, vec![next[0].clone()])
        .await;
    let other_state = match store.id_scope() {
        IdScope::Log => {
            assert!(matches!(
                reused,
                Err(StoreError::IdempotencyConflict { .. })
            ));
            StreamState::NoStream
        }
        IdScope::Stream => {
            assert_eq!(reused.expect("a new event in another stream").revision, 0);
            StreamState::At(0)
        }
    };
    assert_eq!(read_whole_stream(&store, &stream).await.len(), 3);
    assert_eq!(store.stream_state(&other).await.unwrap(), other_state);
}

pub async fn limits_are_typed_and_change_nothing<S: EventStore>(store: S) {
    let stream = stream("limits");
    let too_many: Vec<_> = (0..=EVENTS_PER_APPEND_MAX)
        .map(|n| event(&n.to_string()))
        .collect();
    assert_eq!(
        limit_of(store.append(&stream, ExpectedRevision::Any, too_many).await),
        "events_per_append_max"
    );
    let mut too_big = event("big");
    too_big.payload = vec![b'x'; EVENT_SIZE_MAX + 1];
    assert_eq!(
        limit_of(
            store
                .append(&stream, ExpectedRevision::Any, vec![too_big])
                .await
        ),
        "event_size_max"
    );
    assert!(matches!(
        store
            .append(&stream, ExpectedRevision::Any, Vec::new())
            .await,
        Err(StoreError::EmptyAppend)
    ));
    let twin = event("twin");
    assert!(matches!(
        store
            .append(&stream, ExpectedRevision::Any, vec![twin.clone(), twin])
            .await,
        Err(StoreError::DuplicateEventId { .. })
    ));
    assert_eq!(
        limit_of(store.read_all(Position::START, PAGE_SIZE_MAX + 1).await),
        "page_size_max"
    );
    assert_eq!(
        limit_of(
            store
                .read_stream(
                    &stream,
                    StreamFrom::Start,
                    Direction::Forward,
                    PAGE_SIZE_MAX + 1
                )
                .await
        ),
        "page_size_max"
    );
    assert!(matches!(
        StreamName::parse("s".repeat(STREAM_NAME_LENGTH_MAX + 1)),
        Err(StoreError::LimitExceeded {
            limit: "stream_name_length_max",
            ..
        })
    ));
    assert_eq!(
        store.stream_state(&stream).await.unwrap(),
        StreamState::NoStream,
        "rejected appends wrote something"
    );

    // The largest allowed event and the most events per append are accepted.
    let mut biggest = event("biggest");
    biggest.payload = vec![b'y'; EVENT_SIZE_MAX];
    store
        .append(&stream, ExpectedRevision::NoStream, vec![biggest.clone()])
        .await
        .unwrap();
    let most: Vec<_> = (0..EVENTS_PER_APPEND_MAX)
        .map(|n| event(&n.to_string()))
        .collect();
    let outcome = store
        .append(&stream, ExpectedRevision::Exact(0), most)
        .await
        .unwrap();
    assert_eq!(outcome.revision, EVENTS_PER_APPEND_MAX as u64);
    let first = store
        .read_stream(&stream, StreamFrom::Start, Direction::Forward, 1)
        .await
        .unwrap();
    assert_eq!(first[0].payload, biggest.payload);
}

fn limit_of<T: std::fmt::Debug>(result: Result<T, StoreError>) -> &'static str {
    match result {
        Err(StoreError::LimitExceeded { limit, .. }) => limit,
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

pub async fn read_stream_directions_and_limits<S: EventStore>(store: S) {
    let stream = stream("reads");
    let events: Vec<_> = (0..10).map(|n| event(&n.to_string())).collect();
    store
        .append(&stream, ExpectedRevision::NoStream, events.clone())
        .await
        .unwrap();
    let revisions = |page: Vec<RecordedEvent>| page.iter().map(|e| e.revision).collect::<Vec<_>>();

    let forward = store
        .read_stream(&stream, StreamFrom::Revision(3), Direction::Forward, 4)
        .await
        .unwrap();
    assert_eq!(revisions(forward), vec![3, 4, 5, 6]);
    let backward = store
        .read_stream(&stream, StreamFrom::Revision(3), Direction::Backward, 10)
        .await
        .unwrap();
    assert_eq!(revisions(backward), vec![3, 2, 1, 0]);
    let from_end = store
        .read_stream(&stream, StreamFrom::End, Direction::Backward, 2)
        .await
        .unwrap();
    assert_eq!(revisions(from_end), vec![9, 8]);
    let past_end = store
        .read_stream(&stream, StreamFrom::End, Direction::Forward, 5)
        .await
        .unwrap();
    assert!(past_end.is_empty());
    let beyond = store
        .read_stream(&stream, StreamFrom::Revision(42), Direction::Forward, 5)
        .await
        .unwrap();
    assert!(beyond.is_empty());
    let beyond_back = store
        .read_stream(&stream, StreamFrom::Revision(42), Direction::Backward, 2)
        .await
        .unwrap();
    assert_eq!(revisions(beyond_back), vec![9, 8]);
    let start_back = store
        .read_stream(&stream, StreamFrom::Start, Direction::Backward, 5)
        .await
        .unwrap();
    assert_eq!(revisions(start_back), vec![0]);
    let none = store
        .read_stream(&stream, StreamFrom::Start, Direction::Forward, 0)
        .await
        .unwrap();
    assert!(none.is_empty());
    let missing = self::stream("missing");
    let empty = store
        .read_stream(&missing, StreamFrom::Start, Direction::Forward, 5)
        .await
        .unwrap();
    assert!(empty.is_empty());
}

pub async fn read_all_global_order_and_chain<S: EventStore>(store: S) {
    let streams: Vec<_> = (0..3).map(|n| stream(&format!("s{n}"))).collect();
    let mut proposed = Vec::new();
    for round in 0..5 {
        for (index, stream) in streams.iter().enumerate() {
            let batch = vec![
                event(&format!("{round}-{index}-a")),
                event(&format!("{round}-{index}-b")),
            ];
            store
                .append(stream, ExpectedRevision::Any, batch.clone())
                .await
                .unwrap();
            proposed.extend(batch.into_iter().map(|event| (stream.clone(), event)));
        }
    }
    // Other writers may share a KurrentDB server: compare only this run's streams.
    let everything = read_everything(&store).await;
    let streams_of_run: HashSet<&StreamName> = streams.iter().collect();
    let all: Vec<RecordedEvent> = everything
        .iter()
        .filter(|e| streams_of_run.contains(&e.stream))
        .cloned()
        .collect();
    assert_eq!(all.len(), proposed.len());
    for (recorded, (stream, event)) in all.iter().zip(&proposed) {
        assert_same_event(recorded, event, stream);
    }
    assert!(all
        .windows(2)
        .all(|pair| pair[0].position < pair[1].position));
    match store.chain_scope() {
        ChainScope::Global => assert_chain_unbroken(&everything, ChainScope::Global),
        ChainScope::PerStream => assert_chain_unbroken(&all, ChainScope::PerStream),
    }

    // Reading from a position is inclusive and respects the limit.
    let middle = all[7].position;
    let page = store.read_all(middle, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        all[7..10].iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let past = store
        .read_all(Position::sequence(u64::MAX), 3)
        .await
        .unwrap();
    assert!(past.is_empty());
}

pub async fn subscribe_catches_up_then_follows<S: EventStore>(store: S) {
    let store = Arc::new(store);
    let stream = stream("live");
    let history: Vec<_> = (0..25).map(|n| event(&format!("h{n}"))).collect();
    store
        .append(&stream, ExpectedRevision::NoStream, history.clone())
        .await
        .unwrap();

    let mut from_start = store.subscribe_all(Position::START);
    let writer = {
        let store = Arc::clone(&store);
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut live = Vec::new();
            for n in 0..40 {
                let event = event(&format!("l{n}"));
                store
                    .append(&stream, ExpectedRevision::Any, vec![event.clone()])
                    .await
                    .unwrap();
                live.push(event);
                if n % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            live
        })
    };
    let mut received = Vec::new();
    while received.len() < 65 {
        let next = tokio::time::timeout(Duration::from_secs(20), from_start.next())
            .await
            .expect("subscription stalled")
            .expect("subscription ended")
            .expect("subscription failed");
        // A shared KurrentDB server holds other runs' events too; only this stream counts.
        if next.stream != stream {
            continue;
        }
        received.push(next);
    }
    let live = writer.await.unwrap();
    let expected_ids: Vec<Uuid> = history.iter().chain(&live).map(|e| e.id).collect();
    let received_ids: Vec<Uuid> = received.iter().map(|e| e.id).collect();
    assert_eq!(
        received_ids, expected_ids,
        "gap, duplicate or reorder at the switch-over"
    );
    assert_eq!(
        received_ids.iter().collect::<HashSet<_>>().len(),
        received_ids.len()
    );
    // Nothing more arrives that was not appended.
    let extra = tokio::time::timeout(Duration::from_millis(200), from_start.next()).await;
    assert!(
        extra.is_err(),
        "subscription delivered an event nobody appended"
    );

    // A subscription from a middle position starts there, inclusive.
    let mut from_middle = store.subscribe_all(received[30].position);
    let first = from_middle.next().await.unwrap().unwrap();
    assert_eq!(first.id, received[30].id);
}

pub async fn concurrent_exact_appends_take_each_revision_once<S: EventStore>(store: S) {
    const WRITERS: usize = 16;
    const APPENDS_PER_WRITER: usize = 20;
    let store = Arc::new(store);
    let stream = stream("contended");
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut lost = 0usize;
            while won.len() < APPENDS_PER_WRITER {
                let state = store.stream_state(&stream).await.unwrap();
                let expected = match state {
                    StreamState::NoStream => ExpectedRevision::NoStream,
                    StreamState::At(revision) => ExpectedRevision::Exact(revision),
                };
                let event = event(&format!("w{writer}"));
                match store.append(&stream, expected, vec![event.clone()]).await {
                    Ok(outcome) => {
                        assert_eq!(
                            outcome.revision,
                            state.next_revision(),
                            "won the wrong revision"
                        );
                        won.push((outcome.revision, event.id));
                    }
                    Err(StoreError::WrongExpectedVersion { .. }) => lost += 1,
                    Err(other) => panic!("unexpected error under contention: {other}"),
                }
            }
            (won, lost)
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        let (won, _lost) = task.await.unwrap();
        claimed.extend(won);
    }
    claimed.sort();
    let revisions: Vec<u64> = claimed.iter().map(|(revision, _)| *revision).collect();
    let want: Vec<u64> = (0..(WRITERS * APPENDS_PER_WRITER) as u64).collect();
    assert_eq!(revisions, want, "a revision was skipped or won twice");
    let stored = read_whole_stream(&*store, &stream).await;
    let stored_ids: Vec<(u64, Uuid)> = stored.iter().map(|e| (e.revision, e.id)).collect();
    assert_eq!(
        stored_ids, claimed,
        "the log disagrees with what the winners were told"
    );
}

/// A multi-event append (a payment and its commissions) is all or nothing for every
/// reader: a log read, a stream read or a subscription sees all of its events, back to
/// back in global order, or none of them, however the reads fall while it is written.
pub async fn multi_event_appends_are_seen_whole<S: EventStore>(store: S) {
    const APPENDS: usize = 40;
    const EVENTS_PER_APPEND: usize = 5;
    let store = Arc::new(store);
    let streams: Vec<StreamName> = (0..APPENDS).map(|n| stream(&format!("whole{n}"))).collect();
    let mut subscription = store.subscribe_all(Position::START);
    let writer = {
        let store = Arc::clone(&store);
        let streams = streams.clone();
        tokio::spawn(async move {
            for (n, stream) in streams.iter().enumerate() {
                let events = (0..EVENTS_PER_APPEND)
                    .map(|k| event(&format!("a{n}e{k}")))
                    .collect();
                store
                    .append(stream, ExpectedRevision::NoStream, events)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let ours: HashSet<&StreamName> = streams.iter().collect();
    let mut reads = 0usize;
    loop {
        let done = writer.is_finished();
        let log = read_everything(&*store).await;
        let mut seen: HashMap<&StreamName, usize> = HashMap::new();
        for event in log.iter().filter(|event| ours.contains(&event.stream)) {
            *seen.entry(&event.stream).or_default() += 1;
        }
        for (stream, count) in &seen {
            assert_eq!(
                *count, EVENTS_PER_APPEND,
                "read {reads} of the log saw {count} of the {EVENTS_PER_APPEND} events of \
                 the append to {stream}"
            );
        }
        let probe = &streams[reads % APPENDS];
        let in_stream = read_whole_stream(&*store, probe).await.len();
        assert!(
            in_stream == 0 || in_stream == EVENTS_PER_APPEND,
            "a read of {probe} saw {in_stream} of the {EVENTS_PER_APPEND} events of its append"
        );
        reads += 1;
        if done {
            assert_eq!(seen.len(), APPENDS, "every append is in the log at the end");
            break;
        }
    }
    writer.await.unwrap();
    // The subscription delivers each append's events back to back, in revision order.
    let mut received = 0usize;
    let mut open: Option<(StreamName, u64)> = None;
    while received < APPENDS * EVENTS_PER_APPEND {
        let next = tokio::time::timeout(Duration::from_secs(20), subscription.next())
            .await
            .expect("subscription stalled")
            .expect("subscription ended")
            .expect("subscription failed");
        if !ours.contains(&next.stream) {
            assert!(open.is_none(), "another event inside an append to ours");
            continue;
        }
        let expected = match &open {
            Some((stream, revision)) => {
                assert_eq!(&next.stream, stream, "an append interleaved with another");
                revision + 1
            }
            None => 0,
        };
        assert_eq!(next.revision, expected, "an append's events out of order");
        open =
            (next.revision + 1 < EVENTS_PER_APPEND as u64).then_some((next.stream, next.revision));
        received += 1;
    }
    assert!(open.is_none(), "the subscription ended inside an append");
}

/// Generates one `#[tokio::test]` per conformance check for a backend. `$fresh` is an async
/// expression evaluating to `(store, guard)`: a fresh empty store and whatever must live as
/// long as it (a temporary directory, say).
///
/// `store_conformance_tests!(optional: $fresh)` is for a backend that needs an outside
/// server: `$fresh` evaluates to `Option<(store, guard)>`, and prints why it skips before
/// evaluating to `None`; every check then passes without running.
#[macro_export]
macro_rules! store_conformance_tests {
    (optional: $fresh:expr) => {
        $crate::store_conformance_tests!(@suite optional $fresh);
    };
    ($fresh:expr) => {
        $crate::store_conformance_tests!(@suite always $fresh);
    };
    (@suite $mode:ident $fresh:expr) => {
        $crate::store_conformance_tests!(@checks $mode $fresh;
            append_and_read_back,
            expected_revision_rules,
            idempotent_retry,
            limits_are_typed_and_change_nothing,
            read_stream_directions_and_limits,
            read_all_global_order_and_chain,
            subscribe_catches_up_then_follows,
            concurrent_exact_appends_take_each_revision_once,
            multi_event_appends_are_seen_whole,
        );
        #[test]
        fn conformance_suite_is_complete() {
            let generated = [
                stringify!(append_and_read_back),
                stringify!(expected_revision_rules),
                stringify!(idempotent_retry),
                stringify!(limits_are_typed_and_change_nothing),
                stringify!(read_stream_directions_and_limits),
                stringify!(read_all_global_order_and_chain),
                stringify!(subscribe_catches_up_then_follows),
                stringify!(concurrent_exact_appends_take_each_revision_once),
                stringify!(multi_event_appends_are_seen_whole),
            ];
            assert_eq!(&generated[..], $crate::store::conformance::CHECKS);
        }
    };
    (@checks always $fresh:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (store, _guard) = $fresh.await;
                $crate::store::conformance::$check(store).await;
            }
        )*
    };
    (@checks optional $fresh:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some((store, _guard)) = $fresh.await else {
                    return;
                };
                $crate::store::conformance::$check(store).await;
            }
        )*
    };
}
