//! The golden logs: a small log in the embedded store's on-disk format, per format and
//! schema version, committed under `fixtures/golden/`, which the current code must keep
//! reading. `fixtures/events/` proves each payload shape still decodes; this proves the
//! files around them (segment header, record frames, CRC32C, the hash chain, the index
//! recovery) still open, verify and read back, with every event type in them.
//!
//! `fixtures/golden/v1/`: store format 1, one event of every type the code knew when it
//! was recorded, at schema version 1, each payload the one of
//! `fixtures/events/{Type}.v1.json`, in a stream of its own (`golden-{Type}`), with fixed
//! ids and times. Event types added since are in logs of their own beside it
//! (`v1-reservations/`: the credit reservation events), so a committed log is never
//! rewritten; every type the code knows is in exactly one of them. Recorded by
//! `REFLEDGER_RECORD_GOLDEN=1 cargo test -p workspace-tests --test golden`, which writes
//! the logs that do not exist yet and their chain heads; never re-record one to make a test
//! pass. When the format or a schema version changes, record a new directory beside them
//! and keep these.
//!
//! `fixtures/golden/v2/`: store format 2, the events of `v1/` with the same payloads,
//! written as appends of one, two, three, ... events (`golden-append-{k}`), so the append
//! fields of the frames are pinned byte for byte. Recorded the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use ledger::domain::events::{upcast, EVENT_TYPES};
use ledger::store::file::{verify, FileStore, FileStoreOptions};
use ledger::store::{
    Durability, EventMetadata, EventStore, EventType, ExpectedRevision, NewEvent, Position,
    StreamName, PAGE_SIZE_MAX,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// A committed golden log: its directory under `fixtures/golden/` and the event types it
/// holds, in order.
struct GoldenLog {
    dir: &'static str,
    event_types: Vec<&'static str>,
}

/// Event types added after `v1/` was recorded, with the log that holds them.
const ADDED_AFTER_V1: &[(&str, &[&str])] = &[(
    "v1-reservations",
    &[
        "CreditsReserved",
        "ReservationCaptured",
        "ReservationVoided",
        "ReservationExpired",
    ],
)];

fn golden_logs() -> Vec<GoldenLog> {
    let added: Vec<&str> = ADDED_AFTER_V1
        .iter()
        .flat_map(|(_, types)| types.iter().copied())
        .collect();
    let mut logs = vec![GoldenLog {
        dir: "v1",
        event_types: EVENT_TYPES
            .iter()
            .map(|&(event_type, _)| event_type)
            .filter(|event_type| !added.contains(event_type))
            .collect(),
    }];
    logs.extend(ADDED_AFTER_V1.iter().map(|(dir, types)| GoldenLog {
        dir,
        event_types: types.to_vec(),
    }));
    logs
}

impl GoldenLog {
    fn path(&self) -> PathBuf {
        fixtures().join("golden").join(self.dir)
    }
}

/// The first event's recorded time; each next one is a second later.
fn recorded_at(index: usize) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(index as i64)
}

/// The event types of `log` in its order, with their v1 payloads.
fn golden_events(log: &GoldenLog) -> Vec<(&'static str, Vec<u8>)> {
    log.event_types
        .iter()
        .map(|&event_type| {
            let path = fixtures().join(format!("events/{event_type}.v1.json"));
            let payload =
                std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            // Compact JSON, as the ledger writes it.
            let json: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            (event_type, serde_json::to_vec(&json).unwrap())
        })
        .collect()
}

fn event_id(index: usize) -> Uuid {
    Uuid::from_u128(0x601d_0000_0000_4000_8000_0000_0000_0000 | index as u128)
}

/// Writes the golden log `log` into `dir` (which must not exist yet).
async fn record(log: &GoldenLog, dir: &Path) {
    let clock_index = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticking = clock_index.clone();
    let store = FileStore::open(
        dir,
        FileStoreOptions {
            durability: Durability::Fsync,
            clock: Arc::new(move || recorded_at(ticking.load(std::sync::atomic::Ordering::SeqCst))),
            ..FileStoreOptions::default()
        },
    )
    .unwrap();
    for (index, (event_type, payload)) in golden_events(log).into_iter().enumerate() {
        clock_index.store(index, std::sync::atomic::Ordering::SeqCst);
        let stream = StreamName::parse(format!("golden-{event_type}")).unwrap();
        let event = NewEvent {
            id: event_id(index),
            event_type: EventType::parse(event_type).unwrap(),
            schema_version: 1,
            metadata: EventMetadata {
                correlation_id: Some(event_id(1000 + index)),
                causation_id: Some(event_id(2000 + index)),
            },
            payload,
        };
        store
            .append(&stream, ExpectedRevision::NoStream, vec![event])
            .await
            .unwrap();
    }
    store.close().await.unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn recorded_chain_head(golden: &GoldenLog) -> String {
    std::fs::read_to_string(golden.path().join("chain-head.txt"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The v2 golden log's events: those of `v1/`, in its order.
fn v2_events() -> Vec<(&'static str, Vec<u8>)> {
    golden_events(&golden_logs()[0])
}

fn golden_v2() -> PathBuf {
    fixtures().join("golden/v2")
}

fn chain_head_of(golden: &Path) -> String {
    std::fs::read_to_string(golden.join("chain-head.txt"))
        .unwrap()
        .trim()
        .to_owned()
}

/// The appends of the v2 golden log: the golden events in order, in appends of 1, 2, 3,
/// ... events (the last one what is left), each to a stream of its own.
fn v2_appends() -> Vec<(String, Vec<usize>)> {
    let total = v2_events().len();
    let mut appends = Vec::new();
    let mut next = 0;
    while next < total {
        let len = (appends.len() + 1).min(total - next);
        appends.push((
            format!("golden-append-{}", appends.len()),
            (next..next + len).collect(),
        ));
        next += len;
    }
    appends
}

/// Writes the v2 golden log into `dir` (which must not exist yet).
async fn record_v2(dir: &Path) {
    let clock_index = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticking = clock_index.clone();
    let store = FileStore::open(
        dir,
        FileStoreOptions {
            durability: Durability::Fsync,
            clock: Arc::new(move || recorded_at(ticking.load(std::sync::atomic::Ordering::SeqCst))),
            ..FileStoreOptions::default()
        },
    )
    .unwrap();
    let events = v2_events();
    for (number, (stream, members)) in v2_appends().into_iter().enumerate() {
        clock_index.store(number, std::sync::atomic::Ordering::SeqCst);
        let batch = members
            .iter()
            .map(|&index| {
                let (event_type, payload) = &events[index];
                NewEvent {
                    id: event_id(index),
                    event_type: EventType::parse(*event_type).unwrap(),
                    schema_version: 1,
                    metadata: EventMetadata {
                        correlation_id: Some(event_id(1000 + index)),
                        causation_id: Some(event_id(2000 + index)),
                    },
                    payload: payload.clone(),
                }
            })
            .collect();
        store
            .append(
                &StreamName::parse(stream).unwrap(),
                ExpectedRevision::NoStream,
                batch,
            )
            .await
            .unwrap();
    }
    store.close().await.unwrap();
}

fn segment_bytes(log: &Path) -> Vec<(String, Vec<u8>)> {
    let mut segments: Vec<_> = std::fs::read_dir(log.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".seg"))
        .map(|entry| {
            (
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    segments.sort();
    segments
}

#[test]
fn every_event_type_is_in_exactly_one_golden_log() {
    let logs = golden_logs();
    for &(event_type, _) in EVENT_TYPES {
        let holding = logs
            .iter()
            .filter(|log| log.event_types.contains(&event_type))
            .count();
        assert_eq!(holding, 1, "{event_type} is in {holding} golden logs");
    }
}

#[tokio::test]
async fn the_golden_logs_open_verify_and_read_every_event_type() {
    for golden in golden_logs() {
        check(&golden).await;
    }
}

async fn check(golden: &GoldenLog) {
    let committed = golden.path().join("log");
    if std::env::var_os("REFLEDGER_RECORD_GOLDEN").is_some() && !committed.exists() {
        record(golden, &committed).await;
        // The lock file names the recording process: not part of the format.
        std::fs::remove_file(committed.join("LOCK")).unwrap();
        let head = verify(&committed).unwrap().chain_head.to_hex();
        std::fs::write(golden.path().join("chain-head.txt"), format!("{head}\n")).unwrap();
    }
    // A copy: nothing the test does may touch the committed files.
    let temp = tempfile::tempdir().unwrap();
    let log = temp.path().join("log");
    copy_dir(&committed, &log);

    let expected = golden_events(golden);
    let report = verify(&log).unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
    assert_eq!(report.events, expected.len() as u64);
    assert_eq!(report.streams, expected.len() as u64);
    assert_eq!(report.chain_head.to_hex(), recorded_chain_head(golden));

    let store = FileStore::open_read_only(&log).unwrap();
    let events = store
        .read_all(Position::START, PAGE_SIZE_MAX)
        .await
        .unwrap();
    assert_eq!(events.len(), expected.len(), "one event of every type");
    for (index, (recorded, (event_type, payload))) in events.iter().zip(&expected).enumerate() {
        assert_eq!(recorded.event_type.as_str(), *event_type);
        assert_eq!(recorded.schema_version, 1);
        assert_eq!(recorded.id, event_id(index));
        assert_eq!(recorded.stream.as_str(), format!("golden-{event_type}"));
        assert_eq!(recorded.revision, 0);
        assert_eq!(recorded.recorded_at, recorded_at(index));
        assert_eq!(recorded.metadata.causation_id, Some(event_id(2000 + index)));
        assert_eq!(
            &recorded.payload, payload,
            "{event_type}: the payload as written"
        );
        // Decoded (and upcast) by the current code into the same event as the fixture.
        let decoded = upcast(event_type, 1, &recorded.payload)
            .unwrap_or_else(|error| panic!("{event_type}: {error}"));
        assert_eq!(decoded, upcast(event_type, 1, payload).unwrap());
        assert_eq!(decoded.event_type(), *event_type);
    }
    assert_eq!(
        store.head().await.unwrap().map(|head| head.commit),
        Some(expected.len() as u64 - 1)
    );

    // The current writer still writes this format byte for byte: the same events
    // recorded now give the same files.
    let again = temp.path().join("again");
    record(golden, &again).await;
    assert_eq!(
        verify(&again).unwrap().chain_head.to_hex(),
        recorded_chain_head(golden)
    );
}

#[tokio::test]
async fn the_v2_golden_log_holds_appends_and_the_writer_still_writes_it_byte_for_byte() {
    if std::env::var_os("REFLEDGER_RECORD_GOLDEN").is_some() {
        let log = golden_v2().join("log");
        if log.exists() {
            std::fs::remove_dir_all(&log).unwrap();
        }
        record_v2(&log).await;
        std::fs::remove_file(log.join("LOCK")).unwrap();
        let head = verify(&log).unwrap().chain_head.to_hex();
        std::fs::write(golden_v2().join("chain-head.txt"), format!("{head}\n")).unwrap();
    }
    let temp = tempfile::tempdir().unwrap();
    let log = temp.path().join("log");
    copy_dir(&golden_v2().join("log"), &log);
    let expected = v2_events();
    let report = verify(&log).unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert!(report.torn_tail.is_none(), "{:?}", report.torn_tail);
    assert_eq!(report.events, expected.len() as u64);
    assert_eq!(report.streams, v2_appends().len() as u64);
    assert_eq!(report.chain_head.to_hex(), chain_head_of(&golden_v2()));

    let store = FileStore::open_read_only(&log).unwrap();
    let events = store
        .read_all(Position::START, PAGE_SIZE_MAX)
        .await
        .unwrap();
    let mut position = 0;
    for (stream, members) in v2_appends() {
        for (revision, &index) in members.iter().enumerate() {
            let recorded = &events[position];
            assert_eq!(recorded.id, event_id(index));
            assert_eq!(recorded.stream.as_str(), stream);
            assert_eq!(recorded.revision, revision as u64);
            assert_eq!(recorded.payload, expected[index].1);
            position += 1;
        }
    }
    assert_eq!(position, events.len());

    // The current writer writes the same bytes, append fields included.
    let again = temp.path().join("again");
    record_v2(&again).await;
    assert_eq!(segment_bytes(&again), segment_bytes(&log));
}

#[tokio::test]
async fn a_v1_log_opened_for_writing_continues_in_a_format_2_segment() {
    let temp = tempfile::tempdir().unwrap();
    let log = temp.path().join("log");
    let v1 = &golden_logs()[0];
    copy_dir(&v1.path().join("log"), &log);
    let old = segment_bytes(&log);
    let v1_events = golden_events(v1).len();

    let store = FileStore::open(&log, FileStoreOptions::default()).unwrap();
    let stream = StreamName::parse("after-upgrade").unwrap();
    let batch: Vec<NewEvent> = (0..3)
        .map(|n| NewEvent {
            id: event_id(5000 + n),
            event_type: EventType::parse("TestEvent").unwrap(),
            schema_version: 1,
            metadata: EventMetadata::default(),
            payload: br#"{"label":"new"}"#.to_vec(),
        })
        .collect();
    store
        .append(&stream, ExpectedRevision::NoStream, batch)
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);

    let now = segment_bytes(&log);
    assert_eq!(now.len(), 2, "one old segment, one new");
    assert_eq!(now[0], old[0], "the format 1 segment is left as it was");
    assert_eq!(now[1].0, format!("{v1_events:020}.seg"));
    assert_eq!(u32::from_le_bytes(now[1].1[8..12].try_into().unwrap()), 2);
    let report = verify(&log).unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    assert_eq!(report.events, v1_events as u64 + 3);

    let store = FileStore::open(&log, FileStoreOptions::default()).unwrap();
    let events = store
        .read_all(Position::START, PAGE_SIZE_MAX)
        .await
        .unwrap();
    assert_eq!(events.len(), v1_events + 3);
    assert_eq!(events[v1_events].stream, stream);
    assert_eq!(events[v1_events + 2].revision, 2);
}
