//! The conformance suite against PostgreSQL (`PgStore`), on the throwaway cluster of
//! `ledger::pg::testing` (or `REFLEDGER_TEST_PG_URL`); skipped, saying why, when there is
//! none, unless `REFLEDGER_TEST_PG_REQUIRED=1`. Every check gets a database of its own.
//! Then what only this backend has to prove: a gapless global order under many writer
//! connections, subscriptions across a dropped connection, and the schema version check.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ledger::pg::testing;
use ledger::store::conformance::{assert_chain_unbroken, event, read_everything, stream};
use ledger::store::pg::PgStore;
use ledger::store::{
    ChainScope, EventStore, ExpectedRevision, Position, RecordedEvent, StoreError, StreamName,
};
use uuid::Uuid;

async fn fresh() -> Option<(PgStore, ())> {
    let url = testing::database_or_skip()?;
    let store = PgStore::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("cannot open the test database: {error}"));
    Some((store, ()))
}

mod conformance {
    ledger::store_conformance_tests!(optional: super::fresh());
}

/// Reads `count` events from `subscription`, failing if it stalls.
async fn receive(
    subscription: &mut ledger::store::Subscription,
    count: usize,
) -> Vec<RecordedEvent> {
    let mut received = Vec::with_capacity(count);
    while received.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(30), subscription.next())
            .await
            .unwrap_or_else(|_| panic!("subscription stalled after {} events", received.len()))
            .expect("subscription ended")
            .expect("subscription failed");
        received.push(next);
    }
    received
}

/// Many writers on connections of their own commit out of order; several subscribers, on
/// other connections, started before, during and after the writes, each see every event
/// exactly once, at consecutive positions, in the one order of the log. A store that
/// handed out positions from a sequence would let a subscriber pass a position whose
/// transaction had not committed yet, and miss it for good: this test would stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_and_subscribers_see_one_gapless_order() {
    const WRITERS: usize = 12;
    const APPENDS_PER_WRITER: usize = 25;
    const SUBSCRIBERS: usize = 3;
    let Some(url) = testing::database_or_skip() else {
        return;
    };
    let open = || async { PgStore::connect(&url).await.expect("open") };
    // Subscribers on stores of their own: they are woken by NOTIFY, not by the writers'
    // in-process announcements.
    let mut subscribers = Vec::new();
    let early = open().await;
    subscribers.push((early.subscribe_all(Position::START), early));

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = open().await;
        writers.push(tokio::spawn(async move {
            let streams: Vec<StreamName> =
                (0..3).map(|n| stream(&format!("w{writer}s{n}"))).collect();
            let mut ids = Vec::new();
            for n in 0..APPENDS_PER_WRITER {
                // One to three events per append: multi-event appends interleave too.
                let batch: Vec<_> = (0..1 + n % 3)
                    .map(|k| event(&format!("{writer}-{n}-{k}")))
                    .collect();
                ids.extend(batch.iter().map(|event| event.id));
                store
                    .append(&streams[n % 3], ExpectedRevision::Any, batch)
                    .await
                    .expect("append");
            }
            ids
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let during = open().await;
    subscribers.push((during.subscribe_all(Position::START), during));

    let mut appended = HashSet::new();
    for writer in writers {
        appended.extend(writer.await.expect("writer"));
    }
    let late = open().await;
    subscribers.push((late.subscribe_all(Position::START), late));
    assert_eq!(subscribers.len(), SUBSCRIBERS);

    let reader = open().await;
    let log = read_everything(&reader).await;
    assert_eq!(
        log.len(),
        appended.len(),
        "the log holds every acknowledged event"
    );
    for (index, event) in log.iter().enumerate() {
        assert_eq!(
            event.position,
            Position::sequence(index as u64),
            "positions have a gap"
        );
    }
    assert_chain_unbroken(&log, ChainScope::Global);
    let order: Vec<Uuid> = log.iter().map(|event| event.id).collect();
    assert_eq!(order.iter().copied().collect::<HashSet<_>>(), appended);

    for (number, (subscription, _store)) in subscribers.iter_mut().enumerate() {
        let received = receive(subscription, log.len()).await;
        let ids: Vec<Uuid> = received.iter().map(|event| event.id).collect();
        assert_eq!(
            ids, order,
            "subscriber {number} saw another order, a gap or a duplicate"
        );
        let extra = tokio::time::timeout(Duration::from_millis(200), subscription.next()).await;
        assert!(
            extra.is_err(),
            "subscriber {number} received an event nobody appended"
        );
    }
}

/// A subscriber whose connections are all ended by the server (a restart, a failover)
/// carries on from where it was: no gap, no duplicate, and woken by the listener's
/// reconnection for what was appended meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_resumes_after_the_connections_drop() {
    let Some(url) = testing::database_or_skip() else {
        return;
    };
    let writer = PgStore::connect(&url).await.expect("open writer");
    let follower = PgStore::connect(&url).await.expect("open follower");
    let stream = stream("resume");
    let mut subscription = follower.subscribe_all(Position::START);
    let mut appended = Vec::new();
    for round in 0..3 {
        for n in 0..10 {
            let event = event(&format!("r{round}e{n}"));
            appended.push(event.id);
            writer
                .append(&stream, ExpectedRevision::Any, vec![event])
                .await
                .expect("append (retried once on a fresh connection)");
        }
        let received = receive(&mut subscription, 10).await;
        let ids: Vec<Uuid> = received.iter().map(|event| event.id).collect();
        assert_eq!(ids, appended[round * 10..], "round {round}");
        testing::end_connections(&url).expect("end connections");
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
    assert!(extra.is_err(), "a duplicate after a reconnect");
}

/// Readiness hears that the database cannot be reached, from the listener, without an
/// append having to fail first; and that it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_a_write_refusal_until_it_is_back() {
    let Some(url) = testing::database_or_skip() else {
        return;
    };
    let store = PgStore::connect(&url).await.expect("open");
    assert_eq!(store.write_refusal(), None);
    let until = |want_refusal: bool| {
        let store = store.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            while store.write_refusal().is_some() != want_refusal {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "write_refusal stayed {:?}",
                    store.write_refusal()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    testing::set_reachable(&url, false).expect("cut the database off");
    until(true).await;
    let refused = store
        .append(&stream("down"), ExpectedRevision::Any, vec![event("x")])
        .await;
    assert!(matches!(refused, Err(StoreError::Unavailable { .. })));
    testing::set_reachable(&url, true).expect("reconnect the database");
    until(false).await;
    store
        .append(&stream("up"), ExpectedRevision::Any, vec![event("y")])
        .await
        .expect("appends again once the database is back");
}

/// A database migrated by a newer build is refused, not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_unknown_schema_version() {
    let Some(url) = testing::database_or_skip() else {
        return;
    };
    let store = PgStore::connect(&url).await.expect("open");
    assert_eq!(
        store.schema_version().await.unwrap(),
        ledger::store::pg::SCHEMA_VERSION
    );
    drop(store);
    // Opening again is a no-op: the migrations are not applied twice.
    let again = PgStore::connect(&url).await.expect("open again");
    assert_eq!(
        again.schema_version().await.unwrap(),
        ledger::store::pg::SCHEMA_VERSION
    );
    drop(again);
    testing::execute(
        &url,
        &format!(
            "INSERT INTO refledger_store_schema (version) VALUES ({})",
            ledger::store::pg::SCHEMA_VERSION + 1
        ),
    )
    .expect("pretend a newer build migrated");
    match PgStore::connect(&url).await {
        Err(StoreError::Unavailable { reason }) => {
            assert!(reason.contains("newer"), "{reason}")
        }
        Err(other) => panic!("expected a refusal naming the version, got {other}"),
        Ok(_) => panic!("opened a database of an unknown schema version"),
    }
}

/// A record changed in the database behind the store's back is reported, naming its
/// position, not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_row_is_reported_as_corruption() {
    let Some(url) = testing::database_or_skip() else {
        return;
    };
    let store = Arc::new(PgStore::connect(&url).await.expect("open"));
    let stream = stream("tamper");
    store
        .append(
            &stream,
            ExpectedRevision::NoStream,
            vec![event("a"), event("b")],
        )
        .await
        .unwrap();
    testing::execute(
        &url,
        "UPDATE refledger_events SET payload = '\\x7b7d' WHERE position = 1",
    )
    .unwrap();
    match store.read_all(Position::START, 10).await {
        Err(StoreError::Corrupted { offset, .. }) => assert_eq!(offset, 1),
        other => panic!("expected Corrupted at position 1, got {other:?}"),
    }
}
