//! A child process for the crash test: opens the file store in the directory given as its
//! argument and appends from several concurrent tasks until it is killed, printing one
//! line per acknowledged event — `ack <stream> <revision> <event id>` — and flushing each
//! line, so the parent knows exactly what was acknowledged before the kill. Each event's
//! label names its append and the append's size (`append <task>-<round> <n> of <len>`),
//! so the parent can check that every append is in the log whole or not at all.

use std::io::Write;
use std::sync::{Arc, Mutex};

use ledger::store::conformance::event;
use ledger::store::file::{FileStore, FileStoreOptions};
use ledger::store::{EventStore, ExpectedRevision, StreamName, StreamState};

const TASKS: usize = 8;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = std::env::args().nth(1).expect("usage: crash_appender DIR");
    let store = Arc::new(FileStore::open(&dir, FileStoreOptions::default()).expect("open store"));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        let out = Arc::clone(&out);
        tasks.push(tokio::spawn(async move {
            let stream = StreamName::parse(format!("crash-{task}")).expect("stream name");
            let mut state = store.stream_state(&stream).await.expect("stream state");
            for round in 0u64.. {
                // Appends of one to seven events, under an exact expectation.
                let len = 1 + round % 7;
                let batch: Vec<_> = (0..len)
                    .map(|n| event(&format!("append {task}-{round} {n} of {len}")))
                    .collect();
                let expected = match state {
                    StreamState::NoStream => ExpectedRevision::NoStream,
                    StreamState::At(revision) => ExpectedRevision::Exact(revision),
                };
                let outcome = store
                    .append(&stream, expected, batch.clone())
                    .await
                    .expect("append");
                let first = outcome.revision + 1 - batch.len() as u64;
                let mut out = out.lock().expect("stdout lock");
                for (offset, proposed) in batch.iter().enumerate() {
                    writeln!(
                        out,
                        "ack {stream} {} {}",
                        first + offset as u64,
                        proposed.id
                    )
                    .expect("write stdout");
                }
                out.flush().expect("flush stdout");
                state = StreamState::At(outcome.revision);
            }
        }));
    }
    for task in tasks {
        task.await.expect("append task");
    }
}
