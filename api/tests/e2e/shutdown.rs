//! Graceful shutdown: requests in flight when it begins still get their answers, and the
//! store is flushed only after they are done.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::tokens::Role;
use async_trait::async_trait;
use ledger::store::memory::MemoryStore;
use ledger::store::{
    AppendOutcome, Direction, EventStore, ExpectedRevision, NewEvent, Position, RecordedEvent,
    StoreError, StreamFrom, StreamName, StreamState, Subscription,
};
use reqwest::StatusCode;
use tokio::sync::Notify;

use crate::support::TestServer;

/// A store whose `read_all` waits until the test opens the gate, and which records the
/// order of what happened to it.
struct GatedStore {
    inner: MemoryStore,
    entered: Notify,
    gate: Notify,
    journal: Mutex<Vec<&'static str>>,
}

impl GatedStore {
    fn note(&self, what: &'static str) {
        self.journal.lock().unwrap().push(what);
    }
}

#[async_trait]
impl EventStore for GatedStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from, direction, limit).await
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.note("read started");
        self.entered.notify_one();
        self.gate.notified().await;
        self.note("read finished");
        self.inner.read_all(from, limit).await
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState, StoreError> {
        self.inner.stream_state(stream).await
    }

    async fn head(&self) -> Result<Option<Position>, StoreError> {
        self.inner.head().await
    }

    fn subscribe_all(&self, from: Position) -> Subscription {
        self.inner.subscribe_all(from)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.note("flushed");
        self.inner.flush().await
    }
}

#[tokio::test]
async fn a_request_in_flight_finishes_before_the_store_is_flushed() {
    let store = Arc::new(GatedStore {
        inner: MemoryStore::new(),
        entered: Notify::new(),
        gate: Notify::new(),
        journal: Mutex::default(),
    });
    let mut server = TestServer::start_on(store.clone()).await;
    let request = server.get("/v1/events", Some(Role::Auditor)).send();
    let in_flight = tokio::spawn(request);
    store.entered.notified().await;

    server.begin_shutdown();
    // Shutdown waits for the request: the store is not flushed while it is in flight.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*store.journal.lock().unwrap(), ["read started"]);

    store.gate.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["events"].as_array().unwrap().len(), 0);
    server.stop().await;
    assert_eq!(
        *store.journal.lock().unwrap(),
        ["read started", "read finished", "flushed"]
    );
}
