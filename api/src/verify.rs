//! Verifying the tamper-evidence chain through the store contract, so it works on every
//! backend: each record must link to its predecessor (in the log, or in its stream for a
//! clustered store) and hash to its `current` digest. The file backend checks its files
//! byte by byte on top of this when it opens.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ledger::store::{codec, ChainScope, Digest, EventStore, Position, StoreError, PAGE_SIZE_MAX};

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    /// Whether every record checked links and hashes correctly.
    pub ok: bool,
    pub events_checked: u64,
    /// `global` or `per_stream`.
    pub chain_scope: String,
    /// The `current` digest of the last record checked (hex); with `ok`, an auditor who
    /// kept an earlier head digest can confirm the log only grew since.
    pub head_digest: Option<String>,
    /// The first record that fails, if any.
    pub first_failure: Option<VerifyFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyFailure {
    pub position: String,
    pub stream: String,
    pub revision: u64,
    pub reason: String,
}

/// Reads the whole log in global order and checks every link. Stops at the first
/// failure. Memory: one page, plus one digest per stream for per-stream chains.
pub async fn verify_chain(store: &dyn EventStore) -> Result<VerifyReport, StoreError> {
    let scope = store.chain_scope();
    let mut previous_global = Digest::GENESIS;
    let mut previous_per_stream: HashMap<String, Digest> = HashMap::new();
    let mut checked = 0u64;
    let mut head = None;
    let mut from = Position::START;
    loop {
        let page = store.read_all(from, PAGE_SIZE_MAX).await?;
        let Some(last) = page.last() else {
            break;
        };
        from = Position::sequence(last.position.commit + 1);
        for event in &page {
            let previous = match scope {
                ChainScope::Global => &mut previous_global,
                ChainScope::PerStream => previous_per_stream
                    .entry(event.stream.to_string())
                    .or_insert(Digest::GENESIS),
            };
            let reason = if event.chain.previous != *previous {
                Some(format!(
                    "links to {} but the record before it hashes to {}",
                    event.chain.previous, previous
                ))
            } else if !event.chain.holds_for(&codec::body_of(event)) {
                Some("its content does not hash to its recorded digest".to_owned())
            } else {
                None
            };
            if let Some(reason) = reason {
                return Ok(VerifyReport {
                    ok: false,
                    events_checked: checked,
                    chain_scope: scope_name(scope),
                    head_digest: head,
                    first_failure: Some(VerifyFailure {
                        position: event.position.to_string(),
                        stream: event.stream.to_string(),
                        revision: event.revision,
                        reason,
                    }),
                });
            }
            *previous = event.chain.current;
            head = Some(event.chain.current.to_hex());
            checked += 1;
        }
    }
    Ok(VerifyReport {
        ok: true,
        events_checked: checked,
        chain_scope: scope_name(scope),
        head_digest: head,
        first_failure: None,
    })
}

fn scope_name(scope: ChainScope) -> String {
    match scope {
        ChainScope::Global => "global",
        ChainScope::PerStream => "per_stream",
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use ledger::store::memory::MemoryStore;
    use ledger::store::{
        AppendOutcome, Direction, EventMetadata, EventType, ExpectedRevision, NewEvent,
        RecordedEvent, StreamFrom, StreamName, StreamState, Subscription,
    };
    use uuid::Uuid;

    use super::*;

    /// Shows the log with one record's payload changed, as an attacker editing it would.
    struct Tampered {
        inner: MemoryStore,
        at: u64,
    }

    #[async_trait]
    impl EventStore for Tampered {
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
            let mut events = self.inner.read_all(from, limit).await?;
            for event in &mut events {
                if event.position.commit == self.at {
                    event.payload[0] ^= 1;
                }
            }
            Ok(events)
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
            Ok(())
        }
    }

    async fn filled(count: u8) -> MemoryStore {
        let store = MemoryStore::new();
        for index in 0..count {
            let stream = StreamName::parse(format!("s-{}", index % 3)).unwrap();
            store
                .append(
                    &stream,
                    ExpectedRevision::Any,
                    vec![NewEvent {
                        id: Uuid::new_v4(),
                        event_type: EventType::parse("Noted").unwrap(),
                        schema_version: 1,
                        metadata: EventMetadata::default(),
                        payload: vec![index, 1, 2],
                    }],
                )
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn an_untouched_log_verifies() {
        let store = filled(10).await;
        let report = verify_chain(&store).await.unwrap();
        assert!(report.ok);
        assert_eq!(report.events_checked, 10);
        let last = store.read_all(Position::sequence(9), 1).await.unwrap();
        assert_eq!(report.head_digest, Some(last[0].chain.current.to_hex()));
        let empty = verify_chain(&MemoryStore::new()).await.unwrap();
        assert!(empty.ok);
        assert_eq!(empty.events_checked, 0);
    }

    #[tokio::test]
    async fn a_changed_record_is_named() {
        let store: Arc<dyn EventStore> = Arc::new(Tampered {
            inner: filled(10).await,
            at: 6,
        });
        let report = verify_chain(store.as_ref()).await.unwrap();
        assert!(!report.ok);
        assert_eq!(report.events_checked, 6);
        let failure = report.first_failure.unwrap();
        assert_eq!(failure.position, "6");
        assert_eq!(failure.stream, "s-0");
        assert!(
            failure.reason.contains("does not hash"),
            "{}",
            failure.reason
        );
    }
}
