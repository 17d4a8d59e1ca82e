//! The crash test: a child process appends in a loop and reports every acknowledged
//! event; the test kills it with SIGKILL at random moments, many times, and after each
//! kill reopens the log and checks that every acknowledged event is there, exactly once,
//! at the revision it was acknowledged at, that every append (one to seven events) is
//! there whole or not at all, and that the chain verifies.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use ledger::store::conformance::{assert_chain_unbroken, read_everything};
use ledger::store::file::{self, FileStore, FileStoreOptions};
use ledger::store::ChainScope;
use tempfile::TempDir;
use uuid::Uuid;

const ROUNDS: usize = 24;

/// A small deterministic generator; the seed is printed so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_loses_no_acknowledged_event() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash test seed {seed} (rerun with CRASH_SEED={seed})");
    let mut random = XorShift(seed);
    let dir = TempDir::new().unwrap();
    // Every acknowledged event: id to (stream, revision).
    let mut acknowledged: HashMap<Uuid, (String, u64)> = HashMap::new();
    let mut torn_tails = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash_appender"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start crash_appender");
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Sometimes kill during open and recovery, mostly while appending.
        let delay_ms = 5 + random.next() % 300;
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in &lines {
            // A line cut by the kill is not an acknowledgement the test may count.
            let parts: Vec<&str> = line.split(' ').collect();
            let [_, stream, revision, id] = parts[..] else {
                continue;
            };
            let (Ok(revision), Ok(id)) = (revision.parse(), Uuid::parse_str(id)) else {
                continue;
            };
            let previous = acknowledged.insert(id, (stream.to_owned(), revision));
            assert!(previous.is_none(), "event {id} acknowledged twice");
        }

        let store = FileStore::open(dir.path(), FileStoreOptions::default())
            .unwrap_or_else(|error| panic!("round {round}: reopen failed: {error}"));
        torn_tails += usize::from(store.recovery_report().torn_tail.is_some());
        let all = read_everything(&store).await;
        assert_chain_unbroken(&all, ChainScope::Global);
        let mut found: HashMap<Uuid, (String, u64)> = HashMap::new();
        for event in &all {
            let previous = found.insert(event.id, (event.stream.to_string(), event.revision));
            assert!(
                previous.is_none(),
                "round {round}: event {} stored twice",
                event.id
            );
        }
        for (id, want) in &acknowledged {
            assert_eq!(
                found.get(id),
                Some(want),
                "round {round} (seed {seed}): acknowledged event {id} missing or moved"
            );
        }
        // Every append is whole: its events back to back, all of them, in order.
        let mut open: Option<(String, u64, u64)> = None;
        for event in &all {
            let label: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
            let label = label["label"].as_str().unwrap().to_owned();
            let words: Vec<&str> = label.split(' ').collect();
            let ["append", append, n, "of", len] = words[..] else {
                panic!("round {round}: unexpected label {label}");
            };
            let (n, len): (u64, u64) = (n.parse().unwrap(), len.parse().unwrap());
            match &open {
                Some((current, next, total)) => {
                    assert_eq!(
                        (current.as_str(), *next, *total),
                        (append, n, len),
                        "round {round} (seed {seed}): append {current} is incomplete"
                    );
                }
                None => assert_eq!(n, 0, "round {round}: append {append} lacks its start"),
            }
            open = (n + 1 < len).then(|| (append.to_owned(), n + 1, len));
        }
        assert!(
            open.is_none(),
            "round {round} (seed {seed}): the log ends inside append {open:?}"
        );
        // Per stream, revisions run 0, 1, 2, ... in global order.
        let mut next: HashMap<&str, u64> = HashMap::new();
        for event in &all {
            let revision = next.entry(event.stream.as_str()).or_insert(0);
            assert_eq!(
                event.revision, *revision,
                "round {round}: stream out of order"
            );
            *revision += 1;
        }
        drop(store);
        let verified = file::verify(dir.path()).unwrap();
        assert_eq!(verified.problem, None, "round {round}");
        assert_eq!(verified.events, all.len() as u64);
    }
    println!(
        "{} events acknowledged over {ROUNDS} kills, {torn_tails} torn tails cut",
        acknowledged.len()
    );
    assert!(
        !acknowledged.is_empty(),
        "the child never acknowledged anything"
    );
}
