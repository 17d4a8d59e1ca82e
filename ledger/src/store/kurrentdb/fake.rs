//! An in-memory imitation of the KurrentDB semantics the store relies on (see
//! [`super::wire`]), with faults to inject: failed calls, lost acknowledgements, dropped
//! subscriptions. It also writes KurrentDB's own records between ours (system event
//! types, and a system stream with an ordinary type) and uses sparse positions, so the
//! store cannot lean on anything our embedded backends happen to do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;
use uuid::Uuid;

use super::mapping::{self, ClientEvent};
use super::wire::{AppendError, Live, Outgoing, Record, StreamPosition, Wire};
use crate::store::{Direction, Position, RecordedEvent, StoreError, StreamName, StreamState};

/// The fake server; clones share it.
#[derive(Clone, Default)]
pub struct FakeKurrent {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    log: Mutex<Log>,
    appended: watch::Sender<usize>,
    faults: Faults,
}

#[derive(Default)]
struct Log {
    records: Vec<StoredRecord>,
    /// Indexes into `records` of each stream's events, by revision.
    streams: HashMap<String, Vec<usize>>,
    appends: u64,
}

struct StoredRecord {
    position: Position,
    id: Uuid,
    stream: String,
    revision: u64,
    event_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
}

/// Faults to inject; each is consumed as it fires.
#[derive(Default)]
pub struct Faults {
    /// The next this many calls fail as unavailable.
    pub failing_calls: AtomicU32,
    /// The next append is written but its acknowledgement is lost.
    pub lose_next_ack: AtomicBool,
    /// Every live subscription drops after delivering this many records (0: never).
    pub drop_live_after: AtomicUsize,
}

impl FakeKurrent {
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Records written so far, ours and KurrentDB's own.
    pub fn record_count(&self) -> usize {
        self.shared.log.lock().unwrap().records.len()
    }

    /// Writes an event that the ledger did not write (another application's).
    pub fn write_foreign(&self, stream: &str, event_type: &str) {
        let mut log = self.shared.log.lock().unwrap();
        log.push(stream, event_type, Uuid::new_v4(), b"{}", b"{}");
    }

    fn injected_failure(&self) -> Result<(), StoreError> {
        let failing = &self.shared.faults.failing_calls;
        if failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable {
                reason: "injected: the cluster did not answer".to_owned(),
            });
        }
        Ok(())
    }
}

impl Log {
    fn push(&mut self, stream: &str, event_type: &str, id: Uuid, data: &[u8], metadata: &[u8]) {
        // Sparse, uneven positions with commit ahead of prepare, as in a real log.
        let index = self.records.len() as u64;
        let position = Position {
            commit: 1_000 + index * 173,
            prepare: 900 + index * 173,
        };
        let revisions = self.streams.entry(stream.to_owned()).or_default();
        let revision = revisions.len() as u64;
        revisions.push(self.records.len());
        self.records.push(StoredRecord {
            position,
            id,
            stream: stream.to_owned(),
            revision,
            event_type: event_type.to_owned(),
            data: data.to_vec(),
            metadata: metadata.to_vec(),
        });
    }

    fn state(&self, stream: &str) -> StreamState {
        match self.streams.get(stream).map(Vec::len) {
            None | Some(0) => StreamState::NoStream,
            Some(count) => StreamState::At(count as u64 - 1),
        }
    }
}

impl StoredRecord {
    fn is_system_type(&self) -> bool {
        self.event_type.starts_with('$')
    }

    fn ours(&self) -> Result<RecordedEvent, StoreError> {
        mapping::recorded_event(ClientEvent {
            id: self.id,
            stream: &self.stream,
            revision: self.revision,
            position: mapping::position_to_client(self.position),
            event_type: &self.event_type,
            data: &self.data,
            custom_metadata: &self.metadata,
        })
    }

    fn record(&self) -> Result<Record, StoreError> {
        if mapping::is_system(&self.stream, &self.event_type) {
            return Ok((self.position, None));
        }
        Ok((self.position, Some(self.ours()?)))
    }
}

#[async_trait]
impl Wire for FakeKurrent {
    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamPosition<u64>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.injected_failure()?;
        let log = self.shared.log.lock().unwrap();
        let Some(indexes) = log.streams.get(stream.as_str()) else {
            return Ok(Vec::new());
        };
        let picked: Vec<usize> = match (direction, from) {
            (Direction::Forward, StreamPosition::Start) => indexes.clone(),
            (Direction::Forward, StreamPosition::End) => Vec::new(),
            (Direction::Forward, StreamPosition::Position(revision)) => {
                indexes.iter().skip(revision as usize).copied().collect()
            }
            (Direction::Backward, StreamPosition::Start) => {
                indexes.iter().take(1).copied().collect()
            }
            (Direction::Backward, StreamPosition::End) => indexes.iter().rev().copied().collect(),
            // The pessimistic reading of a backward read from beyond the end: nothing.
            (Direction::Backward, StreamPosition::Position(revision)) => {
                if revision as usize >= indexes.len() {
                    Vec::new()
                } else {
                    indexes[..=revision as usize]
                        .iter()
                        .rev()
                        .copied()
                        .collect()
                }
            }
        };
        picked
            .into_iter()
            .take(limit)
            .map(|index| log.records[index].ours())
            .collect()
    }

    async fn read_all(
        &self,
        from: StreamPosition<Position>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        self.injected_failure()?;
        let log = self.shared.log.lock().unwrap();
        let visible = log.records.iter().filter(|r| !r.is_system_type());
        let picked: Vec<&StoredRecord> = match (direction, from) {
            (Direction::Forward, StreamPosition::Start) => visible.collect(),
            (Direction::Forward, StreamPosition::End) => Vec::new(),
            (Direction::Forward, StreamPosition::Position(at)) => {
                visible.filter(|r| r.position >= at).collect()
            }
            (Direction::Backward, StreamPosition::Start) => Vec::new(),
            (Direction::Backward, StreamPosition::End) => visible.rev().collect(),
            (Direction::Backward, StreamPosition::Position(at)) => {
                visible.filter(|r| r.position < at).rev().collect()
            }
        };
        picked
            .into_iter()
            .take(limit)
            .map(StoredRecord::record)
            .collect()
    }

    async fn append(
        &self,
        stream: &StreamName,
        state: StreamState,
        events: Vec<Outgoing>,
    ) -> Result<(), AppendError> {
        self.injected_failure().map_err(AppendError::Failed)?;
        let mut log = self.shared.log.lock().unwrap();
        let actual = log.state(stream.as_str());
        if actual != state {
            // KurrentDB's own idempotency: the same ids right after the expected state.
            let indexes = log
                .streams
                .get(stream.as_str())
                .map_or(&[][..], Vec::as_slice);
            let start = state.next_revision() as usize;
            let repeated = indexes.len() >= start + events.len()
                && events
                    .iter()
                    .zip(&indexes[start..])
                    .all(|(outgoing, index)| log.records[*index].id == outgoing.event.id);
            if repeated {
                return Ok(());
            }
            return Err(AppendError::Conflict(actual));
        }
        for outgoing in &events {
            let event = &outgoing.event;
            log.push(
                stream.as_str(),
                event.event_type.as_str(),
                event.id,
                &event.payload,
                &outgoing.metadata.to_json(),
            );
        }
        // KurrentDB writes records of its own between ours.
        log.appends += 1;
        if log.appends.is_multiple_of(2) {
            log.push(
                "$stats-node1",
                "$statsCollected",
                Uuid::new_v4(),
                b"{}",
                b"",
            );
        }
        if log.appends.is_multiple_of(3) {
            log.push(
                "$projections-$all",
                "ProjectionUpdated",
                Uuid::new_v4(),
                b"{}",
                b"",
            );
        }
        let count = log.records.len();
        drop(log);
        self.shared.appended.send_replace(count);
        if self
            .shared
            .faults
            .lose_next_ack
            .swap(false, Ordering::SeqCst)
        {
            return Err(AppendError::Failed(StoreError::Unavailable {
                reason: "injected: the acknowledgement was lost".to_owned(),
            }));
        }
        Ok(())
    }

    async fn subscribe(&self, from: StreamPosition<Position>) -> Box<dyn Live> {
        let after = match from {
            StreamPosition::Start => None,
            StreamPosition::Position(position) => Some(position),
            StreamPosition::End => {
                let log = self.shared.log.lock().unwrap();
                log.records.last().map(|r| r.position)
            }
        };
        Box::new(FakeLive {
            fake: self.clone(),
            after,
            delivered: 0,
            appended: self.shared.appended.subscribe(),
        })
    }
}

struct FakeLive {
    fake: FakeKurrent,
    /// Delivered strictly after this position.
    after: Option<Position>,
    delivered: usize,
    appended: watch::Receiver<usize>,
}

#[async_trait]
impl Live for FakeLive {
    async fn next(&mut self) -> Result<Record, StoreError> {
        let drop_after = self
            .fake
            .shared
            .faults
            .drop_live_after
            .load(Ordering::SeqCst);
        if drop_after > 0 && self.delivered >= drop_after {
            return Err(StoreError::Unavailable {
                reason: "injected: the subscription dropped".to_owned(),
            });
        }
        loop {
            self.appended.borrow_and_update();
            let next = {
                let log = self.fake.shared.log.lock().unwrap();
                log.records
                    .iter()
                    .filter(|r| !r.is_system_type())
                    .find(|r| self.after.is_none_or(|after| r.position > after))
                    .map(StoredRecord::record)
            };
            if let Some(record) = next {
                let record = record?;
                self.after = Some(record.0);
                self.delivered += 1;
                return Ok(record);
            }
            if self.appended.changed().await.is_err() {
                return Err(StoreError::Unavailable {
                    reason: "the fake server stopped".to_owned(),
                });
            }
        }
    }
}
