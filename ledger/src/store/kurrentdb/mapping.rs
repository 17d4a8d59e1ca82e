//! Pure translations between our store contract and the `kurrentdb` client's types: expected
//! states, positions, the event metadata we keep in KurrentDB's custom metadata, system
//! events, and errors. Nothing here talks to a server, so every mapping is unit tested.
//!
//! The custom metadata of every event we write is one JSON object:
//!
//! ```json
//! {"format":1,"schema_version":1,
//!  "correlation_id":"6f1c...","causation_id":null,
//!  "recorded_at":"2026-11-29T08:35:46.123456Z",
//!  "chain":{"previous":"00...00","current":"9a...e1"}}
//! ```
//!
//! `recorded_at` has exactly microsecond precision because it is hashed as microseconds
//! (see [`codec::encode_body`]); `chain` is the per-stream hash chain link of the event.
//! KurrentDB's own `created` timestamp is not used: it is not part of the chain.

use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{
    codec, ChainLink, Digest, EventMetadata, EventType, ExpectedRevision, NewEvent, Position,
    RecordedEvent, StoreError, StreamName, StreamState,
};

/// The version of the custom metadata layout above; readers reject any other.
pub const METADATA_FORMAT: u32 = 1;

/// The client's expectation for the caller's `expected` revision. The client defaults to
/// "any", so every append passes one explicitly.
pub fn expected_state(expected: ExpectedRevision) -> kurrentdb::StreamState {
    match expected {
        ExpectedRevision::Any => kurrentdb::StreamState::Any,
        ExpectedRevision::NoStream => kurrentdb::StreamState::NoStream,
        ExpectedRevision::StreamExists => kurrentdb::StreamState::StreamExists,
        ExpectedRevision::Exact(revision) => kurrentdb::StreamState::StreamRevision(revision),
    }
}

/// The exact expectation a chained append is sent with: the state the writer read, whose
/// last hash it chained to. Anything looser could put the events after a predecessor the
/// writer never hashed.
pub fn exact_state(state: StreamState) -> kurrentdb::StreamState {
    match state {
        StreamState::NoStream => kurrentdb::StreamState::NoStream,
        StreamState::At(revision) => kurrentdb::StreamState::StreamRevision(revision),
    }
}

/// What the server reported a stream holds.
pub fn current_state(current: kurrentdb::CurrentRevision) -> StreamState {
    match current {
        kurrentdb::CurrentRevision::NoStream => StreamState::NoStream,
        kurrentdb::CurrentRevision::Current(revision) => StreamState::At(revision),
    }
}

pub fn position_from_client(position: kurrentdb::Position) -> Position {
    Position {
        commit: position.commit,
        prepare: position.prepare,
    }
}

pub fn position_to_client(position: Position) -> kurrentdb::Position {
    kurrentdb::Position {
        commit: position.commit,
        prepare: position.prepare,
    }
}

/// Where a forward read of `$all` from `from` (inclusive) starts. Reads of `$all` from a
/// position include the event at that position; [`Position::START`] is the log's start,
/// and positions at or past the client's end marker read nothing.
pub fn read_all_start(from: Position) -> ReadAllStart {
    if from == Position::START {
        ReadAllStart::Start
    } else if from.commit == u64::MAX {
        ReadAllStart::PastEnd
    } else {
        ReadAllStart::At(from)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAllStart {
    Start,
    At(Position),
    PastEnd,
}

/// Where the live part of a subscription starts. KurrentDB delivers events strictly after
/// the position a subscription starts from (exclusive), while our contract is inclusive;
/// the live part therefore always starts from a position already accounted for: the last
/// event delivered, or failing that the head of `$all` read before the catch-up read that
/// came back empty (every event after it is then new), or the start of the log.
pub fn live_start(
    last_delivered: Option<Position>,
    head_before_catch_up: Option<Position>,
) -> kurrentdb::StreamPosition<Position> {
    match last_delivered.or(head_before_catch_up) {
        Some(position) => kurrentdb::StreamPosition::Position(position),
        None => kurrentdb::StreamPosition::Start,
    }
}

/// Whether an event at `position` belongs to a subscription from `from` (inclusive) that
/// has delivered up to `last_delivered`: no event before the start, none twice.
pub fn deliverable(position: Position, from: Position, last_delivered: Option<Position>) -> bool {
    position >= from && last_delivered.is_none_or(|last| position > last)
}

/// KurrentDB's own records in `$all`: system event types (`$>` links, `$metadata`,
/// `$statsCollected`, ...) and anything in a system stream. None of them is ours: our
/// stream names never start with `$`.
pub fn is_system(stream: &str, event_type: &str) -> bool {
    stream.starts_with('$') || event_type.starts_with('$')
}

/// The custom metadata of an event we write, as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredMetadata {
    pub format: u32,
    pub schema_version: u16,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// RFC 3339, UTC, exactly six fractional digits.
    pub recorded_at: String,
    pub chain: ChainLink,
}

impl StoredMetadata {
    pub fn new(event: &NewEvent, recorded_at: DateTime<Utc>, chain: ChainLink) -> StoredMetadata {
        assert_eq!(
            recorded_at.timestamp_subsec_nanos() % 1000,
            0,
            "recorded_at must be truncated to microseconds before it is hashed"
        );
        StoredMetadata {
            format: METADATA_FORMAT,
            schema_version: event.schema_version,
            correlation_id: event.metadata.correlation_id,
            causation_id: event.metadata.causation_id,
            recorded_at: recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            chain,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain struct serializes")
    }

    /// Parses and checks custom metadata; the reason says what is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<StoredMetadata, String> {
        let metadata: StoredMetadata = serde_json::from_slice(bytes)
            .map_err(|error| format!("custom metadata is not ledger metadata: {error}"))?;
        if metadata.format != METADATA_FORMAT {
            return Err(format!(
                "custom metadata format {} is not {METADATA_FORMAT}",
                metadata.format
            ));
        }
        metadata.recorded_at()?;
        Ok(metadata)
    }

    pub fn recorded_at(&self) -> Result<DateTime<Utc>, String> {
        let parsed = DateTime::parse_from_rfc3339(&self.recorded_at)
            .map_err(|error| format!("recorded_at {:?}: {error}", self.recorded_at))?
            .with_timezone(&Utc);
        if parsed.timestamp_subsec_nanos() % 1000 != 0 {
            return Err(format!(
                "recorded_at {:?} is finer than a microsecond",
                self.recorded_at
            ));
        }
        Ok(parsed)
    }
}

/// `now`, truncated to the microsecond precision the chain hashes, and never before the
/// stream's previous event: instances' clocks differ a little, and a stream must read in
/// time order.
pub fn recorded_at(now: DateTime<Utc>, previous: Option<DateTime<Utc>>) -> DateTime<Utc> {
    let now = DateTime::<Utc>::from_timestamp_micros(now.timestamp_micros())
        .expect("a timestamp truncated to microseconds stays in range");
    previous.map_or(now, |previous| previous.max(now))
}

/// The chain links of `events` appended after a stream's last hash `previous`, the first
/// at `first_revision`: `current = SHA-256(previous || body)` per event, each `previous`
/// the `current` of the one before.
pub fn chain_links(
    stream: &StreamName,
    events: &[NewEvent],
    first_revision: u64,
    recorded_at: DateTime<Utc>,
    mut previous: Digest,
) -> Vec<ChainLink> {
    let mut body = Vec::new();
    let mut links = Vec::with_capacity(events.len());
    for (offset, event) in events.iter().enumerate() {
        body.clear();
        codec::encode_body(
            event,
            stream,
            first_revision + offset as u64,
            recorded_at,
            &mut body,
        );
        let link = ChainLink::follow(previous, &body);
        previous = link.current;
        links.push(link);
    }
    links
}

/// How an event's payload travels: as JSON when it is JSON (domain events are, and the
/// KurrentDB UI and projections can read them), as bytes otherwise.
pub fn event_data(event: &NewEvent, metadata: &StoredMetadata) -> kurrentdb::EventData {
    let data = match json_payload(&event.payload) {
        Some(raw) => kurrentdb::EventData::json(event.event_type.as_str(), &raw)
            .expect("a raw JSON value serializes as itself"),
        None => kurrentdb::EventData::binary(
            event.event_type.as_str(),
            bytes::Bytes::copy_from_slice(&event.payload),
        ),
    };
    data.id(event.id)
        .metadata(bytes::Bytes::from(metadata.to_json()))
}

/// The payload as a raw JSON value, if it is one whose text serializes back byte for
/// byte (the hash covers the exact bytes, so no reformatting is acceptable).
pub fn json_payload(payload: &[u8]) -> Option<Box<serde_json::value::RawValue>> {
    let text = std::str::from_utf8(payload).ok()?;
    let raw = serde_json::value::RawValue::from_string(text.to_owned()).ok()?;
    let serialized = serde_json::to_vec(&raw).ok()?;
    (serialized == payload).then_some(raw)
}

/// The parts of an event as KurrentDB returns it.
#[derive(Clone, Copy, Debug)]
pub struct ClientEvent<'a> {
    pub id: Uuid,
    pub stream: &'a str,
    pub revision: u64,
    pub position: kurrentdb::Position,
    pub event_type: &'a str,
    pub data: &'a [u8],
    pub custom_metadata: &'a [u8],
}

impl<'a> ClientEvent<'a> {
    pub fn of(event: &'a kurrentdb::RecordedEvent) -> ClientEvent<'a> {
        ClientEvent {
            id: event.id,
            stream: event.stream_id(),
            revision: event.revision,
            position: event.position,
            event_type: &event.event_type,
            data: &event.data,
            custom_metadata: &event.custom_metadata,
        }
    }
}

/// Our event from KurrentDB's, checking that its hash matches its body. A non-system
/// event we cannot read is an error naming where it is: something other than the ledger
/// wrote it, or it was altered.
pub fn recorded_event(event: ClientEvent<'_>) -> Result<RecordedEvent, StoreError> {
    let corrupted = |reason: String| StoreError::Corrupted {
        file: PathBuf::from(format!(
            "KurrentDB stream {:?} revision {}",
            event.stream, event.revision
        )),
        offset: event.position.commit,
        reason,
    };
    let stream = StreamName::parse(event.stream).map_err(|error| corrupted(error.to_string()))?;
    let event_type =
        EventType::parse(event.event_type).map_err(|error| corrupted(error.to_string()))?;
    let metadata = StoredMetadata::from_json(event.custom_metadata).map_err(corrupted)?;
    let recorded_at = metadata.recorded_at().map_err(corrupted)?;
    let recorded = RecordedEvent {
        id: event.id,
        stream,
        revision: event.revision,
        position: position_from_client(event.position),
        event_type,
        schema_version: metadata.schema_version,
        recorded_at,
        metadata: EventMetadata {
            correlation_id: metadata.correlation_id,
            causation_id: metadata.causation_id,
        },
        payload: event.data.to_vec(),
        chain: metadata.chain,
    };
    if !recorded.chain.holds_for(&codec::body_of(&recorded)) {
        return Err(corrupted(
            "the chain hash does not match the event (altered after it was written)".to_owned(),
        ));
    }
    Ok(recorded)
}

/// Our error for a client error. `append` names the stream and the caller's expectation
/// for a concurrency conflict.
pub fn store_error(
    error: kurrentdb::Error,
    append: Option<(&StreamName, ExpectedRevision)>,
) -> StoreError {
    let unavailable = |reason: String| StoreError::Unavailable { reason };
    match error {
        kurrentdb::Error::WrongExpectedVersion { expected, current } => match append {
            Some((stream, caller_expected)) => StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected: caller_expected,
                actual: current_state(current),
            },
            None => unavailable(format!(
                "KurrentDB reported a concurrency conflict outside an append \
                 (expected {expected}, current {current})"
            )),
        },
        kurrentdb::Error::NotLeaderException(leader) => unavailable(format!(
            "the KurrentDB node is not the leader (the leader is {}:{}); connect through \
             the cluster's gossip seeds so the client follows the leader",
            leader.host, leader.port
        )),
        kurrentdb::Error::DeadlineExceeded => {
            unavailable("KurrentDB did not answer before the deadline".to_owned())
        }
        kurrentdb::Error::AccessDenied => unavailable(
            "KurrentDB denied access: check the user name and password in the connection \
             string and the user's stream permissions"
                .to_owned(),
        ),
        kurrentdb::Error::GrpcConnectionError(cause) => {
            unavailable(format!("cannot reach the KurrentDB cluster: {cause}"))
        }
        kurrentdb::Error::ConnectionClosed => {
            unavailable("the connection to KurrentDB could not be opened or closed".to_owned())
        }
        kurrentdb::Error::ServerError(message) => {
            unavailable(format!("KurrentDB server error: {message}"))
        }
        kurrentdb::Error::ResourceDeleted => StoreError::WritesRefused {
            reason: "the stream was deleted in KurrentDB; the ledger never deletes streams, \
                     so an operator did"
                .to_owned(),
        },
        // Refused because of the server's MaxAppendSize: retrying cannot help.
        kurrentdb::Error::Grpc { message, .. } if message.contains("Append Size") => {
            StoreError::WritesRefused {
                reason: format!(
                    "KurrentDB refused the append as too large ({message}); raise the \
                     server's MaxAppendSize (see docs/DEPLOY.md)"
                ),
            }
        }
        other => unavailable(format!("KurrentDB request failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Direction, EventStore, StreamFrom};

    fn sample(payload: &[u8]) -> NewEvent {
        NewEvent {
            id: Uuid::from_u128(0xfeed),
            event_type: EventType::parse("PaymentReceived").unwrap(),
            schema_version: 3,
            metadata: EventMetadata {
                correlation_id: Some(Uuid::from_u128(1)),
                causation_id: Some(Uuid::from_u128(2)),
            },
            payload: payload.to_vec(),
        }
    }

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_micros(micros).unwrap()
    }

    #[test]
    fn expected_revisions_map_one_to_one() {
        assert_eq!(
            expected_state(ExpectedRevision::Any),
            kurrentdb::StreamState::Any
        );
        assert_eq!(
            expected_state(ExpectedRevision::NoStream),
            kurrentdb::StreamState::NoStream
        );
        assert_eq!(
            expected_state(ExpectedRevision::StreamExists),
            kurrentdb::StreamState::StreamExists
        );
        assert_eq!(
            expected_state(ExpectedRevision::Exact(7)),
            kurrentdb::StreamState::StreamRevision(7)
        );
        assert_eq!(
            exact_state(StreamState::NoStream),
            kurrentdb::StreamState::NoStream
        );
        assert_eq!(
            exact_state(StreamState::At(0)),
            kurrentdb::StreamState::StreamRevision(0)
        );
        assert_eq!(
            current_state(kurrentdb::CurrentRevision::NoStream),
            StreamState::NoStream
        );
        assert_eq!(
            current_state(kurrentdb::CurrentRevision::Current(9)),
            StreamState::At(9)
        );
    }

    #[test]
    fn positions_round_trip_and_keep_their_order() {
        let ours = Position {
            commit: 1_234_567,
            prepare: 1_234_000,
        };
        let theirs = position_to_client(ours);
        assert_eq!((theirs.commit, theirs.prepare), (1_234_567, 1_234_000));
        assert_eq!(position_from_client(theirs), ours);
        let later = Position {
            commit: 1_234_567,
            prepare: 1_234_001,
        };
        assert_eq!(
            ours.cmp(&later),
            position_to_client(ours).cmp(&position_to_client(later))
        );
    }

    #[test]
    fn read_all_starts_inclusive_and_past_end_reads_nothing() {
        assert_eq!(read_all_start(Position::START), ReadAllStart::Start);
        let middle = Position {
            commit: 500,
            prepare: 400,
        };
        assert_eq!(read_all_start(middle), ReadAllStart::At(middle));
        assert_eq!(
            read_all_start(Position::sequence(u64::MAX)),
            ReadAllStart::PastEnd
        );
    }

    #[test]
    fn live_part_of_a_subscription_starts_after_what_was_accounted_for() {
        let delivered = Position::sequence(10);
        let head = Position::sequence(20);
        assert_eq!(
            live_start(Some(delivered), Some(head)),
            kurrentdb::StreamPosition::Position(delivered)
        );
        assert_eq!(
            live_start(None, Some(head)),
            kurrentdb::StreamPosition::Position(head)
        );
        assert_eq!(live_start(None, None), kurrentdb::StreamPosition::Start);

        // Inclusive start, exclusive of what was delivered.
        let from = Position::sequence(5);
        assert!(deliverable(Position::sequence(5), from, None));
        assert!(!deliverable(Position::sequence(4), from, None));
        assert!(!deliverable(Position::sequence(10), from, Some(delivered)));
        assert!(deliverable(Position::sequence(11), from, Some(delivered)));
    }

    #[test]
    fn system_events_are_recognised() {
        assert!(is_system("$stats-127.0.0.1:2113", "$statsCollected"));
        assert!(is_system("$$account-1", "$metadata"));
        assert!(is_system("$et-PaymentReceived", "$>"));
        assert!(is_system("account-1", "$>"));
        assert!(!is_system("account-1", "PaymentReceived"));
    }

    #[test]
    fn metadata_round_trips_through_json() {
        let event = sample(b"{}");
        let link = ChainLink::follow(Digest::GENESIS, b"body");
        let metadata = StoredMetadata::new(&event, at(1_790_000_000_123_456), link);
        let json = metadata.to_json();
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#""recorded_at":"2026-09-21T"#), "{text}");
        assert!(text.contains(".123456Z"), "{text}");
        let back = StoredMetadata::from_json(&json).unwrap();
        assert_eq!(back, metadata);
        assert_eq!(back.recorded_at().unwrap(), at(1_790_000_000_123_456));
        assert_eq!(back.chain, link);
    }

    #[test]
    fn malformed_metadata_is_rejected_with_a_reason() {
        let event = sample(b"{}");
        let good = StoredMetadata::new(&event, at(0), ChainLink::follow(Digest::GENESIS, b""));
        let good: serde_json::Value = serde_json::from_slice(&good.to_json()).unwrap();
        let with = |key: &str, value: serde_json::Value| {
            let mut changed = good.clone();
            changed[key] = value;
            serde_json::to_vec(&changed).unwrap()
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "not ledger metadata"),
            (b"not json".to_vec(), "not ledger metadata"),
            (b"{}".to_vec(), "missing field"),
            (with("format", 2.into()), "format 2"),
            (with("schema_version", 70_000.into()), "not ledger metadata"),
            (with("correlation_id", "nope".into()), "not ledger metadata"),
            (with("recorded_at", "yesterday".into()), "recorded_at"),
            (
                with("recorded_at", "2026-01-01T00:00:00.123456789Z".into()),
                "finer than a microsecond",
            ),
            (
                with(
                    "chain",
                    serde_json::json!({"previous": "00", "current": "00"}),
                ),
                "64 hexadecimal digits",
            ),
            (with("extra", 1.into()), "unknown field"),
        ];
        for (bytes, want) in cases {
            let error = StoredMetadata::from_json(&bytes).unwrap_err();
            assert!(
                error.contains(want),
                "{:?}: {error} lacks {want:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
    }

    #[test]
    fn recorded_at_is_truncated_and_never_goes_back_in_a_stream() {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 123_456_789).unwrap();
        assert_eq!(recorded_at(now, None).timestamp_subsec_nanos(), 123_456_000);
        let later = at(1_800_000_100_000_000);
        assert_eq!(recorded_at(now, Some(later)), later);
        let earlier = at(1_700_000_000_000_000);
        assert_eq!(recorded_at(now, Some(earlier)), at(1_800_000_000_123_456));
    }

    #[tokio::test]
    async fn chain_links_match_the_embedded_chain_of_a_single_stream() {
        // With one stream, the memory store's global chain is that stream's chain, so the
        // per-stream computation must produce the same links for the same events.
        let when = at(1_800_000_000_000_001);
        let memory = MemoryStore::with_clock(move || when);
        let stream = StreamName::parse("account-1").unwrap();
        let first = vec![sample(br#"{"n":1}"#)];
        let mut second = vec![sample(br#"{"n":2}"#), sample(b"\x00binary")];
        second[0].id = Uuid::from_u128(2);
        second[1].id = Uuid::from_u128(3);
        memory
            .append(&stream, ExpectedRevision::NoStream, first.clone())
            .await
            .unwrap();
        memory
            .append(&stream, ExpectedRevision::Exact(0), second.clone())
            .await
            .unwrap();
        let recorded = memory
            .read_stream(&stream, StreamFrom::Start, Direction::Forward, 10)
            .await
            .unwrap();
        let links_first = chain_links(&stream, &first, 0, when, Digest::GENESIS);
        let links_second = chain_links(&stream, &second, 1, when, links_first[0].current);
        let computed: Vec<ChainLink> = links_first.into_iter().chain(links_second).collect();
        let stored: Vec<ChainLink> = recorded.iter().map(|event| event.chain).collect();
        assert_eq!(computed, stored);
        // A different recorded_at is a different chain: a retry must not re-stamp.
        let restamped = chain_links(&stream, &first, 0, at(1), Digest::GENESIS);
        assert_ne!(restamped[0], stored[0]);
    }

    #[test]
    fn json_payloads_travel_as_json_only_when_byte_exact() {
        assert!(json_payload(br#"{"amount":"19.99"}"#).is_some());
        assert!(json_payload(b"[1,2,3]").is_some());
        // Surrounding whitespace would be lost by a JSON round trip, changing the hash.
        assert!(json_payload(b" {}").is_none());
        assert!(json_payload(b"{} ").is_none());
        assert!(json_payload(b"not json").is_none());
        assert!(json_payload(b"\xff\xfe").is_none());
        assert!(json_payload(b"").is_none());
    }

    fn written(event: &NewEvent, stream: &str, revision: u64, previous: Digest) -> Vec<u8> {
        let stream = StreamName::parse(stream).unwrap();
        let when = at(1_800_000_000_000_000);
        let link = chain_links(
            &stream,
            std::slice::from_ref(event),
            revision,
            when,
            previous,
        )[0];
        StoredMetadata::new(event, when, link).to_json()
    }

    #[test]
    fn events_read_back_as_written_and_altered_ones_are_caught() {
        let event = sample(br#"{"amount":"5.00"}"#);
        let metadata = written(&event, "account-9", 4, Digest::GENESIS);
        let position = kurrentdb::Position {
            commit: 900,
            prepare: 800,
        };
        let client = ClientEvent {
            id: event.id,
            stream: "account-9",
            revision: 4,
            position,
            event_type: "PaymentReceived",
            data: &event.payload,
            custom_metadata: &metadata,
        };
        let recorded = recorded_event(client).unwrap();
        assert_eq!(recorded.id, event.id);
        assert_eq!(recorded.stream.as_str(), "account-9");
        assert_eq!(recorded.revision, 4);
        assert_eq!(recorded.position, position_from_client(position));
        assert_eq!(recorded.schema_version, 3);
        assert_eq!(recorded.metadata, event.metadata);
        assert_eq!(recorded.payload, event.payload);
        assert_eq!(recorded.recorded_at, at(1_800_000_000_000_000));

        let altered_payload = br#"{"amount":"500.00"}"#;
        let altered = [
            ClientEvent {
                data: altered_payload,
                ..client
            },
            ClientEvent {
                revision: 5,
                ..client
            },
            ClientEvent {
                stream: "account-8",
                ..client
            },
            ClientEvent {
                event_type: "RefundIssued",
                ..client
            },
            ClientEvent {
                id: Uuid::from_u128(1),
                ..client
            },
        ];
        for event in altered {
            match recorded_event(event) {
                Err(StoreError::Corrupted { offset, reason, .. }) => {
                    assert_eq!(offset, 900);
                    assert!(reason.contains("altered"), "{reason}");
                }
                other => panic!("altered event read as {other:?}"),
            }
        }
        let foreign = ClientEvent {
            custom_metadata: b"{\"someone\":\"else\"}",
            ..client
        };
        assert!(matches!(
            recorded_event(foreign),
            Err(StoreError::Corrupted { .. })
        ));
    }

    #[test]
    fn client_errors_map_to_store_errors() {
        let stream = StreamName::parse("account-1").unwrap();
        match store_error(
            kurrentdb::Error::WrongExpectedVersion {
                expected: kurrentdb::StreamState::StreamRevision(3),
                current: kurrentdb::CurrentRevision::Current(5),
            },
            Some((&stream, ExpectedRevision::Exact(3))),
        ) {
            StoreError::WrongExpectedVersion {
                stream: named,
                expected,
                actual,
            } => {
                assert_eq!(named, stream);
                assert_eq!(expected, ExpectedRevision::Exact(3));
                assert_eq!(actual, StreamState::At(5));
            }
            other => panic!("got {other:?}"),
        }
        let reason_of = |error: kurrentdb::Error| match store_error(error, None) {
            StoreError::Unavailable { reason } => reason,
            other => panic!("expected Unavailable, got {other:?}"),
        };
        let leader = reason_of(kurrentdb::Error::NotLeaderException(kurrentdb::Endpoint {
            host: "node2".to_owned(),
            port: 2113,
        }));
        assert!(leader.contains("not the leader") && leader.contains("node2:2113"));
        assert!(reason_of(kurrentdb::Error::DeadlineExceeded).contains("deadline"));
        assert!(reason_of(kurrentdb::Error::AccessDenied).contains("denied access"));
        assert!(reason_of(kurrentdb::Error::GrpcConnectionError(
            kurrentdb::GrpcConnectionError::MaxDiscoveryAttemptReached(3)
        ))
        .contains("cannot reach"));
        assert!(reason_of(kurrentdb::Error::ConnectionClosed).contains("closed"));
        assert!(reason_of(kurrentdb::Error::ServerError("boom".to_owned())).contains("boom"));
        assert!(matches!(
            store_error(kurrentdb::Error::ResourceDeleted, None),
            StoreError::WritesRefused { .. }
        ));
        // gRPC code 3 is InvalidArgument, as the server answers an oversized append.
        let too_big = kurrentdb::Error::Grpc {
            code: 3.into(),
            message: "Maximum Append Size of 1048576 Exceeded.".to_owned(),
        };
        match store_error(too_big, None) {
            StoreError::WritesRefused { reason } => assert!(reason.contains("MaxAppendSize")),
            other => panic!("expected WritesRefused, got {other:?}"),
        }
    }
}
