//! Checking the log's order and tamper-evidence chain while reading it: positions strictly
//! increase, each stream's revisions run 0, 1, 2, ... without gaps, and each record links to
//! its predecessor (in the whole log or in its stream, per the backend's
//! [`ChainScope`]) with a hash that matches its canonical body.
//!
//! The file backend's own verify checks frame checksums; this checks what any backend
//! returns through the [`EventStore`](ledger::store::EventStore) contract.

use std::collections::HashMap;

use ledger::store::{codec, ChainScope, Digest, Position, RecordedEvent, StreamName};

/// Most distinct streams the checker tracks (a limit on what grows with the log).
pub const CHECKED_STREAMS_MAX: usize = 50_000_000;

/// The first thing found wrong in the log's order or chain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    #[error("position {position} does not follow position {previous}")]
    PositionNotIncreasing {
        position: Position,
        previous: Position,
    },
    #[error("position {position} follows {previous:?}: the records between are missing")]
    PositionGap {
        position: Position,
        previous: Option<Position>,
    },
    #[error("stream {stream} at position {position}: revision {found} where {expected} was due")]
    RevisionGap {
        stream: StreamName,
        position: Position,
        expected: u64,
        found: u64,
    },
    #[error(
        "chain link broken at position {position}: the record names {found} as its \
         predecessor's hash, but the predecessor hashed to {expected}"
    )]
    LinkBroken {
        position: Position,
        expected: Digest,
        found: Digest,
    },
    #[error("hash of position {position} does not match its contents: the record was altered")]
    HashMismatch { position: Position },
    #[error("checked_streams_max is {CHECKED_STREAMS_MAX}")]
    TooManyStreams,
}

/// Follows the log record by record.
#[derive(Debug)]
pub struct ChainChecker {
    scope: ChainScope,
    previous_global: Digest,
    previous_per_stream: HashMap<StreamName, Digest>,
    next_revision: HashMap<StreamName, u64>,
    last_position: Option<Position>,
    events: u64,
    last_hash: Digest,
}

impl ChainChecker {
    pub fn new(scope: ChainScope) -> ChainChecker {
        ChainChecker {
            scope,
            previous_global: Digest::GENESIS,
            previous_per_stream: HashMap::new(),
            next_revision: HashMap::new(),
            last_position: None,
            events: 0,
            last_hash: Digest::GENESIS,
        }
    }

    /// Checks the next record of the log.
    pub fn check(&mut self, event: &RecordedEvent) -> Result<(), ChainFault> {
        if let Some(previous) = self.last_position {
            if event.position <= previous {
                return Err(ChainFault::PositionNotIncreasing {
                    position: event.position,
                    previous,
                });
            }
        }
        // A single-writer log (global chain) numbers its records 0, 1, 2, ... without gaps;
        // a cluster's positions are byte offsets and only increase.
        if self.scope == ChainScope::Global {
            let due = self.last_position.map_or(0, |previous| previous.commit + 1);
            if event.position != Position::sequence(due) {
                return Err(ChainFault::PositionGap {
                    position: event.position,
                    previous: self.last_position,
                });
            }
        }
        if !self.next_revision.contains_key(&event.stream)
            && self.next_revision.len() >= CHECKED_STREAMS_MAX
        {
            return Err(ChainFault::TooManyStreams);
        }
        let expected_revision = self.next_revision.entry(event.stream.clone()).or_insert(0);
        if event.revision != *expected_revision {
            return Err(ChainFault::RevisionGap {
                stream: event.stream.clone(),
                position: event.position,
                expected: *expected_revision,
                found: event.revision,
            });
        }
        *expected_revision += 1;
        let previous = match self.scope {
            ChainScope::Global => &mut self.previous_global,
            ChainScope::PerStream => self
                .previous_per_stream
                .entry(event.stream.clone())
                .or_insert(Digest::GENESIS),
        };
        if event.chain.previous != *previous {
            return Err(ChainFault::LinkBroken {
                position: event.position,
                expected: *previous,
                found: event.chain.previous,
            });
        }
        if !event.chain.holds_for(&codec::body_of(event)) {
            return Err(ChainFault::HashMismatch {
                position: event.position,
            });
        }
        *previous = event.chain.current;
        self.last_hash = event.chain.current;
        self.last_position = Some(event.position);
        self.events += 1;
        Ok(())
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn streams(&self) -> usize {
        self.next_revision.len()
    }

    /// The hash of the last record checked, or genesis before the first.
    pub fn head(&self) -> Digest {
        self.last_hash
    }

    pub fn last_position(&self) -> Option<Position> {
        self.last_position
    }
}

#[cfg(test)]
mod tests {
    use ledger::store::memory::MemoryStore;
    use ledger::store::{
        EventMetadata, EventStore, EventType, ExpectedRevision, NewEvent, PAGE_SIZE_MAX,
    };

    use super::*;

    async fn recorded(count: usize) -> Vec<RecordedEvent> {
        let store = MemoryStore::new();
        for index in 0..count {
            let stream = StreamName::parse(format!("s-{}", index % 3)).unwrap();
            let event = NewEvent {
                id: uuid::Uuid::new_v4(),
                event_type: EventType::parse("Ticked").unwrap(),
                schema_version: 1,
                metadata: EventMetadata::default(),
                payload: format!("{{\"n\":{index}}}").into_bytes(),
            };
            store
                .append(&stream, ExpectedRevision::Any, vec![event])
                .await
                .unwrap();
        }
        store
            .read_all(Position::START, PAGE_SIZE_MAX)
            .await
            .unwrap()
    }

    fn check_all(events: &[RecordedEvent]) -> Result<ChainChecker, ChainFault> {
        let mut checker = ChainChecker::new(ChainScope::Global);
        for event in events {
            checker.check(event)?;
        }
        Ok(checker)
    }

    #[tokio::test]
    async fn an_intact_log_passes_and_reports_its_head() {
        let events = recorded(10).await;
        let checker = check_all(&events).unwrap();
        assert_eq!(checker.events(), 10);
        assert_eq!(checker.streams(), 3);
        assert_eq!(checker.head(), events[9].chain.current);
    }

    #[tokio::test]
    async fn altered_removed_and_reordered_records_are_caught() {
        let events = recorded(10).await;

        let mut altered = events.clone();
        altered[4].payload = b"{\"n\":40}".to_vec();
        assert_eq!(
            check_all(&altered).err(),
            Some(ChainFault::HashMismatch {
                position: Position::sequence(4)
            })
        );

        let mut removed = events.clone();
        removed.remove(5);
        assert_eq!(
            check_all(&removed).err(),
            Some(ChainFault::PositionGap {
                position: Position::sequence(6),
                previous: Some(Position::sequence(4)),
            })
        );

        let mut reordered = events.clone();
        reordered.swap(2, 3);
        assert!(matches!(
            check_all(&reordered).err(),
            Some(ChainFault::PositionGap { .. })
        ));
        let mut repeated = events.clone();
        repeated.insert(3, events[2].clone());
        assert!(matches!(
            check_all(&repeated).err(),
            Some(ChainFault::PositionNotIncreasing { .. })
        ));

        // A forger who also rewrites positions and revisions still breaks a link.
        let mut relinked = events.clone();
        relinked.remove(3);
        for (index, event) in relinked.iter_mut().enumerate() {
            event.position = Position::sequence(index as u64);
        }
        let mut revisions: HashMap<StreamName, u64> = HashMap::new();
        for event in &mut relinked {
            let next = revisions.entry(event.stream.clone()).or_insert(0);
            event.revision = *next;
            *next += 1;
        }
        assert!(matches!(
            check_all(&relinked).err(),
            Some(ChainFault::LinkBroken { .. })
        ));

        let mut per_stream = ChainChecker::new(ChainScope::PerStream);
        let broken = events.iter().try_for_each(|event| per_stream.check(event));
        assert!(
            matches!(broken, Err(ChainFault::LinkBroken { .. })),
            "a globally chained log does not verify as per-stream chains"
        );
    }
}
