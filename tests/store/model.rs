//! Property test: random sequences of appends (with idempotent retries and wrong
//! expectations), reads and reopenings give the same outcomes and the same events on the
//! file store as on the in-memory model. Both stamp events from the same fixed clock, so
//! even timestamps and hash chains must match.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ledger::store::conformance::event;
use ledger::store::file::{FileStore, FileStoreOptions};
use ledger::store::memory::MemoryStore;
use ledger::store::{
    Direction, Durability, EventStore, ExpectedRevision, NewEvent, Position, StreamFrom, StreamName,
};
use proptest::prelude::*;
use tempfile::TempDir;

const STREAMS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: usize,
        expected: ExpectedRevision,
        batch: usize,
    },
    /// Sends an earlier append's events again, on `stream` under `expected`: a true retry
    /// when both match the original, a conflict otherwise.
    Retry {
        earlier: usize,
        stream: Option<usize>,
        expected: Option<ExpectedRevision>,
    },
    ReadStream {
        stream: usize,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
    },
    ReadAll {
        from: u64,
        limit: usize,
    },
    Reopen,
}

fn expected() -> impl Strategy<Value = ExpectedRevision> {
    prop_oneof![
        Just(ExpectedRevision::Any),
        Just(ExpectedRevision::NoStream),
        Just(ExpectedRevision::StreamExists),
        (0u64..6).prop_map(ExpectedRevision::Exact),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..STREAMS, expected(), 1usize..4)
            .prop_map(|(stream, expected, batch)| Op::Append { stream, expected, batch }),
        2 => (0usize..40, proptest::option::of(0..STREAMS), proptest::option::of(expected()))
            .prop_map(|(earlier, stream, expected)| Op::Retry { earlier, stream, expected }),
        2 => (
            0..STREAMS,
            prop_oneof![
                Just(StreamFrom::Start),
                Just(StreamFrom::End),
                (0u64..8).prop_map(StreamFrom::Revision)
            ],
            prop_oneof![Just(Direction::Forward), Just(Direction::Backward)],
            0usize..6,
        )
            .prop_map(|(stream, from, direction, limit)| Op::ReadStream {
                stream,
                from,
                direction,
                limit
            }),
        1 => (0u64..30, 0usize..10).prop_map(|(from, limit)| Op::ReadAll { from, limit }),
        1 => Just(Op::Reopen),
    ]
}

fn fixed_clock() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(1_790_000_000_000_000).expect("valid time")
}

fn open_file(dir: &TempDir) -> FileStore {
    FileStore::open(
        dir.path(),
        FileStoreOptions {
            durability: Durability::Buffered,
            clock: Arc::new(fixed_clock),
            ..FileStoreOptions::default()
        },
    )
    .expect("open file store")
}

/// Errors carry no equality; their debug form names the variant and every field.
fn same<T: std::fmt::Debug>(file: &T, model: &T) -> Result<(), TestCaseError> {
    prop_assert_eq!(format!("{file:?}"), format!("{model:?}"));
    Ok(())
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = TempDir::new().unwrap();
    let mut file = open_file(&dir);
    let model = MemoryStore::with_clock(fixed_clock);
    let streams: Vec<StreamName> = (0..STREAMS)
        .map(|n| StreamName::parse(format!("s{n}")).unwrap())
        .collect();
    let mut appended: Vec<(usize, ExpectedRevision, Vec<NewEvent>)> = Vec::new();
    for op in ops {
        match op {
            Op::Append {
                stream,
                expected,
                batch,
            } => {
                let events: Vec<NewEvent> = (0..batch).map(|n| event(&n.to_string())).collect();
                let on_file = file
                    .append(&streams[stream], expected, events.clone())
                    .await;
                let on_model = model
                    .append(&streams[stream], expected, events.clone())
                    .await;
                same(&on_file, &on_model)?;
                appended.push((stream, expected, events));
            }
            Op::Retry {
                earlier,
                stream,
                expected,
            } => {
                let Some((original_stream, original_expected, events)) =
                    appended.get(earlier).cloned()
                else {
                    continue;
                };
                let stream = stream.unwrap_or(original_stream);
                let expected = expected.unwrap_or(original_expected);
                let on_file = file
                    .append(&streams[stream], expected, events.clone())
                    .await;
                let on_model = model.append(&streams[stream], expected, events).await;
                same(&on_file, &on_model)?;
            }
            Op::ReadStream {
                stream,
                from,
                direction,
                limit,
            } => {
                let on_file = file
                    .read_stream(&streams[stream], from, direction, limit)
                    .await
                    .unwrap();
                let on_model = model
                    .read_stream(&streams[stream], from, direction, limit)
                    .await
                    .unwrap();
                prop_assert_eq!(on_file, on_model);
            }
            Op::ReadAll { from, limit } => {
                let on_file = file
                    .read_all(Position::sequence(from), limit)
                    .await
                    .unwrap();
                let on_model = model
                    .read_all(Position::sequence(from), limit)
                    .await
                    .unwrap();
                prop_assert_eq!(on_file, on_model);
            }
            Op::Reopen => {
                file.close().await.unwrap();
                drop(file);
                file = open_file(&dir);
            }
        }
        for stream in &streams {
            prop_assert_eq!(
                file.stream_state(stream).await.unwrap(),
                model.stream_state(stream).await.unwrap()
            );
        }
        prop_assert_eq!(file.head().await.unwrap(), model.head().await.unwrap());
    }
    let everything = file.read_all(Position::START, 4096).await.unwrap();
    prop_assert_eq!(
        everything,
        model.read_all(Position::START, 4096).await.unwrap()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn file_store_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops))?;
    }
}
