//! The file backend's own tests: reopening, the index checkpoint, the lock, corruption
//! and torn tails, heavy concurrency, read-only opening.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ledger::store::conformance::{assert_chain_unbroken, event, read_everything, stream};
use ledger::store::file::{self, CheckpointUse, FileStore, FileStoreOptions};
use ledger::store::{
    ChainScope, Digest, EventStore, ExpectedRevision, Position, RecordedEvent, StoreError,
    StreamName, StreamState,
};
use tempfile::TempDir;

use crate::support::{frame_offsets, segment_paths};

/// The smallest segment size allowed, so a few megabytes make several segments.
fn small_segments() -> FileStoreOptions {
    FileStoreOptions {
        segment_size_max: file::format::SEGMENT_SIZE_MAX_MIN,
        ..FileStoreOptions::default()
    }
}

fn open(dir: &Path) -> FileStore {
    FileStore::open(dir, small_segments()).expect("open")
}

/// Appends `count` events of about `payload_size` bytes round-robin over `streams`.
async fn fill(store: &FileStore, streams: &[StreamName], count: usize, payload_size: usize) {
    for n in 0..count {
        let mut proposed = event(&format!("e{n}"));
        proposed
            .payload
            .resize(payload_size.max(proposed.payload.len()), b' ');
        store
            .append(
                &streams[n % streams.len()],
                ExpectedRevision::Any,
                vec![proposed],
            )
            .await
            .expect("append");
    }
}

/// Everything observable of a store: the log and each stream's state.
async fn snapshot(
    store: &FileStore,
    streams: &[StreamName],
) -> (Vec<RecordedEvent>, Vec<StreamState>) {
    let all = read_everything(store).await;
    let mut states = Vec::new();
    for stream in streams {
        states.push(store.stream_state(stream).await.unwrap());
    }
    (all, states)
}

fn corrupted(result: Result<FileStore, StoreError>) -> (PathBuf, u64, String) {
    match result {
        Err(StoreError::Corrupted {
            file,
            offset,
            reason,
        }) => (file, offset, reason),
        Err(other) => panic!("expected Corrupted, got {other}"),
        Ok(_) => panic!("expected Corrupted, the store opened"),
    }
}

fn streams(count: usize) -> Vec<StreamName> {
    (0..count).map(|n| stream(&format!("s{n}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_close_and_drop() {
    let dir = TempDir::new().unwrap();
    let streams = streams(3);
    let store = open(dir.path());
    fill(&store, &streams, 300, 10_000).await;
    let before = snapshot(&store, &streams).await;
    store.close().await.unwrap();
    assert!(matches!(
        store
            .append(&streams[0], ExpectedRevision::Any, vec![event("late")])
            .await,
        Err(StoreError::Unavailable { .. })
    ));
    drop(store);
    assert!(
        segment_paths(dir.path()).len() >= 3,
        "expected several segments"
    );

    let store = open(dir.path());
    assert_eq!(
        store.recovery_report().checkpoint,
        CheckpointUse::Loaded { events: 300 }
    );
    assert_eq!(snapshot(&store, &streams).await, before);
    // More events, then drop without close: no fresh checkpoint, the tail is scanned.
    fill(&store, &streams, 50, 100).await;
    let after = snapshot(&store, &streams).await;
    drop(store);

    let store = open(dir.path());
    let report = store.recovery_report().clone();
    assert_eq!(report.checkpoint, CheckpointUse::Loaded { events: 300 });
    assert_eq!(report.scanned_events, 50);
    assert_eq!(report.torn_tail, None);
    let reopened = snapshot(&store, &streams).await;
    assert_eq!(reopened, after);
    assert_eq!(reopened.0.len(), 350);
    assert_chain_unbroken(&reopened.0, ChainScope::Global);
    // The chain continues across the reopen.
    fill(&store, &streams, 5, 10).await;
    assert_chain_unbroken(&read_everything(&store).await, ChainScope::Global);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_and_full_scan_agree() {
    let dir = TempDir::new().unwrap();
    let streams = streams(7);
    let store = open(dir.path());
    fill(&store, &streams, 400, 8_000).await;
    // A retry after reopen must still be recognised through the id index.
    let retried = vec![event("retried")];
    let first = store
        .append(&streams[0], ExpectedRevision::Any, retried.clone())
        .await
        .unwrap();
    store.close().await.unwrap();
    drop(store);

    let with_checkpoint = open(dir.path());
    assert_eq!(
        with_checkpoint.recovery_report().checkpoint,
        CheckpointUse::Loaded { events: 401 }
    );
    assert_eq!(with_checkpoint.recovery_report().scanned_events, 0);
    let from_checkpoint = snapshot(&with_checkpoint, &streams).await;
    assert_eq!(
        with_checkpoint
            .append(&streams[0], ExpectedRevision::Any, retried.clone())
            .await
            .unwrap(),
        first
    );
    drop(with_checkpoint);

    std::fs::remove_file(dir.path().join(file::format::CHECKPOINT_FILE)).unwrap();
    let scanned = open(dir.path());
    assert_eq!(scanned.recovery_report().checkpoint, CheckpointUse::Missing);
    assert_eq!(scanned.recovery_report().scanned_events, 401);
    assert_eq!(snapshot(&scanned, &streams).await, from_checkpoint);
    assert_eq!(
        scanned
            .append(&streams[0], ExpectedRevision::Any, retried.clone())
            .await
            .unwrap(),
        first
    );
    scanned.close().await.unwrap();
    drop(scanned);

    // A damaged checkpoint is ignored, not fatal.
    let checkpoint = dir.path().join(file::format::CHECKPOINT_FILE);
    let mut bytes = std::fs::read(&checkpoint).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&checkpoint, bytes).unwrap();
    let rejected = open(dir.path());
    assert!(matches!(
        rejected.recovery_report().checkpoint,
        CheckpointUse::Rejected { .. }
    ));
    assert_eq!(snapshot(&rejected, &streams).await, from_checkpoint);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_checkpoints_periodically_with_doubling_spacing() {
    let dir = TempDir::new().unwrap();
    let streams = streams(3);
    let options = FileStoreOptions {
        checkpoint_events_min: 100,
        ..small_segments()
    };
    let store = FileStore::open(dir.path(), options.clone()).unwrap();
    // One event per append, one append at a time: checkpoints at 100 and 200 events.
    fill(&store, &streams, 250, 10).await;
    let before = snapshot(&store, &streams).await;
    drop(store); // no close: only the periodic checkpoints exist
    let store = FileStore::open(dir.path(), options).unwrap();
    assert_eq!(
        store.recovery_report().checkpoint,
        CheckpointUse::Loaded { events: 200 }
    );
    assert_eq!(store.recovery_report().scanned_events, 50);
    assert_eq!(snapshot(&store, &streams).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_of_another_log_is_rejected() {
    let dir = TempDir::new().unwrap();
    let other = TempDir::new().unwrap();
    let streams = streams(2);
    for path in [dir.path(), other.path()] {
        let store = open(path);
        fill(&store, &streams, 20, 10).await;
        store.close().await.unwrap();
    }
    std::fs::copy(
        other.path().join(file::format::CHECKPOINT_FILE),
        dir.path().join(file::format::CHECKPOINT_FILE),
    )
    .unwrap();
    let store = open(dir.path());
    assert!(matches!(
        store.recovery_report().checkpoint,
        CheckpointUse::Rejected { .. }
    ));
    assert_eq!(read_everything(&store).await.len(), 20);
}

#[tokio::test]
async fn second_writer_is_locked_out() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    match FileStore::open(dir.path(), FileStoreOptions::default()) {
        Err(StoreError::Locked { path, .. }) => {
            assert_eq!(path, dir.path().join(file::format::LOCK_FILE))
        }
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("two writers opened the same directory"),
    }
    // A reader needs no lock and sees a snapshot.
    let stream = stream("locked");
    store
        .append(&stream, ExpectedRevision::NoStream, vec![event("a")])
        .await
        .unwrap();
    let reader = FileStore::open_read_only(dir.path()).unwrap();
    assert_eq!(
        reader.stream_state(&stream).await.unwrap(),
        StreamState::At(0)
    );
    assert!(matches!(
        reader
            .append(&stream, ExpectedRevision::Any, vec![event("b")])
            .await,
        Err(StoreError::WritesRefused { .. })
    ));
    store.close().await.unwrap();
    let again = FileStore::open(dir.path(), FileStoreOptions::default()).expect("lock released");
    // A mistyped path is an error, not an empty log.
    let missing = dir.path().join("no-such-dir");
    assert!(matches!(
        FileStore::open_read_only(&missing),
        Err(StoreError::Io { .. })
    ));
    assert!(matches!(file::verify(&missing), Err(StoreError::Io { .. })));
    assert_eq!(
        again.stream_state(&stream).await.unwrap(),
        StreamState::At(0)
    );
}

/// Writes a log of three or more segments and closes it without a checkpoint, so that
/// opening scans (and verifies) every record.
async fn damaged_log_fixture() -> (TempDir, Vec<PathBuf>) {
    let dir = TempDir::new().unwrap();
    let streams = streams(4);
    let store = open(dir.path());
    fill(&store, &streams, 300, 10_000).await;
    drop(store);
    let segments = segment_paths(dir.path());
    assert!(segments.len() >= 3);
    assert!(!dir.path().join(file::format::CHECKPOINT_FILE).exists());
    (dir, segments)
}

fn flip_bit(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

fn assert_verify_names(dir: &Path, file: &Path, offset: u64) {
    let report = file::verify(dir).unwrap();
    let problem = report.problem.expect("verify found no problem");
    assert_eq!((problem.file.as_path(), problem.offset), (file, offset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_mid_log_is_corruption_at_its_record() {
    let (dir, segments) = damaged_log_fixture().await;
    let frames = frame_offsets(&segments[0]);
    let (offset, size) = frames[frames.len() / 2];
    flip_bit(&segments[0], offset + size / 2);
    let (file, at, reason) = corrupted(FileStore::open(dir.path(), small_segments()));
    assert_eq!(
        (file.as_path(), at),
        (segments[0].as_path(), offset),
        "{reason}"
    );
    assert_verify_names(dir.path(), &segments[0], offset);
    // A reader refuses as well.
    assert!(matches!(
        FileStore::open_read_only(dir.path()),
        Err(StoreError::Corrupted { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_bit_in_last_segment_before_valid_records_is_corruption() {
    let (dir, segments) = damaged_log_fixture().await;
    let last = segments.last().unwrap();
    let frames = frame_offsets(last);
    assert!(frames.len() >= 3);
    let (offset, _) = frames[1];
    flip_bit(last, offset + 40);
    let (file, at, reason) = corrupted(FileStore::open(dir.path(), small_segments()));
    assert_eq!((file.as_path(), at), (last.as_path(), offset), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_middle_segment_is_corruption() {
    let (dir, segments) = damaged_log_fixture().await;
    let middle = &segments[1];
    let frames = frame_offsets(middle);
    let (offset, size) = frames[frames.len() - 3];
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(middle)
        .unwrap();
    file.set_len(offset + size / 3).unwrap();
    drop(file);
    let (file, at, reason) = corrupted(FileStore::open(dir.path(), small_segments()));
    assert_eq!((file.as_path(), at), (middle.as_path(), offset), "{reason}");
    assert_verify_names(dir.path(), middle, offset);

    // Cut exactly at a record boundary: the records are missing before the next segment.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(middle)
        .unwrap();
    file.set_len(offset).unwrap();
    drop(file);
    let (file, at, reason) = corrupted(FileStore::open(dir.path(), small_segments()));
    assert_eq!((file.as_path(), at), (middle.as_path(), offset), "{reason}");
    assert!(reason.contains("missing"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_records_are_corruption() {
    let (dir, segments) = damaged_log_fixture().await;
    let frames = frame_offsets(&segments[0]);
    let (first, first_size) = frames[5];
    let (second, second_size) = frames[6];
    let mut bytes = std::fs::read(&segments[0]).unwrap();
    let a = bytes[first as usize..(first + first_size) as usize].to_vec();
    let b = bytes[second as usize..(second + second_size) as usize].to_vec();
    let swapped: Vec<u8> = b.into_iter().chain(a).collect();
    bytes[first as usize..(second + second_size) as usize].copy_from_slice(&swapped);
    std::fs::write(&segments[0], bytes).unwrap();
    let (file, at, reason) = corrupted(FileStore::open(dir.path(), small_segments()));
    assert_eq!(
        (file.as_path(), at),
        (segments[0].as_path(), first),
        "{reason}"
    );
    assert_verify_names(dir.path(), &segments[0], first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tail_is_cut_and_reported() {
    let dir = TempDir::new().unwrap();
    let streams = streams(2);
    let store = open(dir.path());
    fill(&store, &streams, 30, 100).await;
    let before = read_everything(&store).await;
    drop(store);
    let last = segment_paths(dir.path()).pop().unwrap();
    let frames = frame_offsets(&last);
    let (offset, size) = *frames.last().unwrap();
    let clean_len = offset + size;

    // Half of a record copied past the end: an incomplete frame.
    let mut bytes = std::fs::read(&last).unwrap();
    let partial = bytes[offset as usize..(offset + size / 2) as usize].to_vec();
    bytes.extend_from_slice(&partial);
    std::fs::write(&last, &bytes).unwrap();
    let verified = file::verify(dir.path()).unwrap();
    assert_eq!(verified.problem, None);
    assert_eq!(
        verified.torn_tail.as_ref().map(|torn| torn.offset),
        Some(clean_len)
    );

    let store = open(dir.path());
    let torn = store
        .recovery_report()
        .torn_tail
        .clone()
        .expect("torn tail reported");
    assert_eq!(
        (torn.file.as_path(), torn.offset, torn.bytes),
        (last.as_path(), clean_len, size / 2)
    );
    assert_eq!(std::fs::read(torn.saved_to.unwrap()).unwrap(), partial);
    assert_eq!(std::fs::metadata(&last).unwrap().len(), clean_len);
    assert_eq!(read_everything(&store).await, before);
    store
        .append(&streams[0], ExpectedRevision::Any, vec![event("after")])
        .await
        .unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.recovery_report().torn_tail, None);
    assert_eq!(read_everything(&store).await.len(), 31);
    drop(store);

    // The final record with a bad checksum, reaching exactly to the end of the file, is
    // indistinguishable from a torn write of it: it is cut (it cannot have been
    // acknowledged by a writer whose sync succeeded).
    let frames = frame_offsets(&last);
    let (offset, size) = *frames.last().unwrap();
    flip_bit(&last, offset + size - 1);
    let store = open(dir.path());
    let torn = store
        .recovery_report()
        .torn_tail
        .clone()
        .expect("torn tail reported");
    assert_eq!((torn.offset, torn.bytes), (offset, size));
    assert_eq!(read_everything(&store).await.len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_covered_by_checkpoint_is_caught_by_reads_and_verify() {
    let dir = TempDir::new().unwrap();
    let streams = streams(2);
    let store = open(dir.path());
    fill(&store, &streams, 100, 1_000).await;
    store.close().await.unwrap();
    drop(store);
    let first = segment_paths(dir.path()).remove(0);
    let (offset, size) = frame_offsets(&first)[10];
    flip_bit(&first, offset + size / 2);
    // The checkpoint vouches for the log up to its head, so opening does not re-read it...
    let store = open(dir.path());
    // ...but the damaged record fails its checksum when read, naming where it lies.
    match store.read_all(ledger::store::Position::START, 100).await {
        Err(StoreError::Corrupted {
            file, offset: at, ..
        }) => assert_eq!((file, at), (first.clone(), offset)),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    assert_verify_names(dir.path(), &first, offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sync_refuses_every_later_write_and_loses_nothing_acknowledged() {
    let dir = TempDir::new().unwrap();
    let stream = stream("fragile");
    let options = FileStoreOptions {
        faults: file::FaultInjection {
            fail_syncs_after: Some(5),
        },
        ..FileStoreOptions::default()
    };
    let store = FileStore::open(dir.path(), options).unwrap();
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let proposed = event(&n.to_string());
        store
            .append(&stream, ExpectedRevision::Any, vec![proposed.clone()])
            .await
            .unwrap();
        acknowledged.push(proposed.id);
    }
    // The sixth sync fails: that append is refused, and so is everything after it. The
    // writer never retries the sync (after a failed fsync the kernel may have dropped
    // the pages, so a retry could claim durability for lost data).
    let failed = event("failed");
    for attempt in [failed.clone(), event("later")] {
        match store
            .append(&stream, ExpectedRevision::Any, vec![attempt])
            .await
        {
            Err(StoreError::WritesRefused { reason }) => {
                assert!(reason.contains("injected fault"), "{reason}")
            }
            other => panic!("expected WritesRefused, got {other:?}"),
        }
    }
    assert!(matches!(
        store.flush().await,
        Err(StoreError::WritesRefused { .. })
    ));
    // Readers never saw the refused event.
    let read: Vec<_> = read_everything(&store).await.iter().map(|e| e.id).collect();
    assert_eq!(read, acknowledged);
    assert_eq!(
        store.stream_state(&stream).await.unwrap(),
        StreamState::At(4)
    );
    drop(store);

    // Reopened on a healthy disk, every acknowledged event is there. The refused one may
    // be too (its bytes reached the OS before the sync failed); it was never
    // acknowledged, and a client retrying it with the same id gets the same answer.
    let store = open(dir.path());
    let reopened: Vec<_> = read_everything(&store).await.iter().map(|e| e.id).collect();
    assert_eq!(&reopened[..5], &acknowledged[..]);
    assert!(reopened.len() <= 6);
    let retry = store
        .append(&stream, ExpectedRevision::Exact(4), vec![failed])
        .await
        .unwrap();
    assert_eq!(retry.revision, 5);
    assert_eq!(read_everything(&store).await.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_share_fsyncs_without_losing_or_doubling() {
    const WRITERS: usize = 64;
    const APPENDS_PER_WRITER: usize = 40;
    let dir = TempDir::new().unwrap();
    let store = Arc::new(FileStore::open(dir.path(), FileStoreOptions::default()).unwrap());
    let shared = stream("shared");
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let own = stream(&format!("own{writer}"));
            let mut acknowledged = Vec::new();
            for n in 0..APPENDS_PER_WRITER {
                // Alternate an exact-revision append to the writer's own stream with an
                // append to the stream everyone shares.
                let proposed = event(&format!("{writer}-{n}"));
                let (target, expected) = if n % 2 == 0 {
                    let expected = match n {
                        0 => ExpectedRevision::NoStream,
                        _ => ExpectedRevision::Exact((n / 2 - 1) as u64),
                    };
                    (&own, expected)
                } else {
                    (&shared, ExpectedRevision::Any)
                };
                let outcome = store
                    .append(target, expected, vec![proposed.clone()])
                    .await
                    .unwrap();
                acknowledged.push((target.clone(), outcome, proposed.id));
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    let all = read_everything(&*store).await;
    assert_eq!(all.len(), WRITERS * APPENDS_PER_WRITER);
    assert_chain_unbroken(&all, ChainScope::Global);
    let by_id: HashMap<_, _> = all.iter().map(|event| (event.id, event)).collect();
    assert_eq!(by_id.len(), all.len(), "an event was written twice");
    for (stream, outcome, id) in &acknowledged {
        let event = by_id[id];
        assert_eq!(
            (&event.stream, event.revision, event.position),
            (stream, outcome.revision, outcome.position)
        );
    }
    assert_eq!(
        store.stream_state(&shared).await.unwrap(),
        StreamState::At((WRITERS * APPENDS_PER_WRITER / 2 - 1) as u64)
    );
}

/// The append fields of the frame at `offset` of a segment: index, count.
fn append_slot(bytes: &[u8], offset: u64) -> (u32, u32) {
    let at = offset as usize;
    (
        u32::from_le_bytes(bytes[at + 16..at + 20].try_into().unwrap()),
        u32::from_le_bytes(bytes[at + 20..at + 24].try_into().unwrap()),
    )
}

/// Rewrites the append fields of the frame at `offset` and its CRC, as a writer that
/// grouped records otherwise would have (only the append checks can tell).
fn rewrite_slot(path: &Path, offset: u64, index: u32, count: u32) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = offset as usize;
    let size = 4 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    bytes[at + 16..at + 20].copy_from_slice(&index.to_le_bytes());
    bytes[at + 20..at + 24].copy_from_slice(&count.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[at + 8..at + size]);
    bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_cut_after_its_first_records_is_dropped_whole() {
    let dir = TempDir::new().unwrap();
    let streams = streams(2);
    let store = open(dir.path());
    fill(&store, &streams, 10, 100).await;
    let before = read_everything(&store).await;
    // A payment with three commissions: one append of four events.
    let payment = stream("payment-torn");
    let append: Vec<_> = (0..4).map(|n| event(&format!("part{n}"))).collect();
    store
        .append(&payment, ExpectedRevision::NoStream, append.clone())
        .await
        .unwrap();
    drop(store);

    let last = segment_paths(dir.path()).pop().unwrap();
    let frames = frame_offsets(&last);
    let bytes = std::fs::read(&last).unwrap();
    let tail: Vec<_> = frames[frames.len() - 4..].to_vec();
    for (n, &(offset, _)) in tail.iter().enumerate() {
        assert_eq!(append_slot(&bytes, offset), (n as u32, 4));
    }
    for keep in 1..4 {
        // A crash left the first `keep` records whole and the rest missing.
        let copy = TempDir::new().unwrap();
        copy_log(dir.path(), copy.path());
        let segment = copy.path().join("log").join(last.file_name().unwrap());
        let (cut_at, size) = tail[keep];
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.set_len(cut_at + size / 3).unwrap();
        drop(file);

        let verified = file::verify(copy.path()).unwrap();
        assert_eq!(verified.problem, None);
        assert_eq!(verified.events, before.len() as u64, "keep {keep}");
        let torn = verified
            .torn_tail
            .expect("the incomplete append is a torn tail");
        assert_eq!(torn.offset, tail[0].0);

        let store = open(copy.path());
        let report = store.recovery_report().torn_tail.clone().expect("reported");
        assert_eq!(
            (report.offset, report.records, report.first_position),
            (tail[0].0, keep as u64, before.len() as u64),
            "keep {keep}"
        );
        let saved = std::fs::read(report.saved_to.as_ref().unwrap()).unwrap();
        assert_eq!(saved.len() as u64, report.bytes);
        assert_eq!(
            &saved[..],
            &bytes[tail[0].0 as usize..(cut_at + size / 3) as usize]
        );
        assert_eq!(read_everything(&store).await, before, "keep {keep}");
        assert_eq!(
            store.stream_state(&payment).await.unwrap(),
            StreamState::NoStream
        );
        // The retry records the whole append, not an idempotent repeat of a part.
        let outcome = store
            .append(&payment, ExpectedRevision::NoStream, append.clone())
            .await
            .unwrap();
        assert_eq!(outcome.revision, 3);
        assert_eq!(read_everything(&store).await.len(), before.len() + 4);
        drop(store);
        let store = open(copy.path());
        assert_eq!(store.recovery_report().torn_tail, None);
        assert_eq!(read_everything(&store).await.len(), before.len() + 4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_append_before_the_tail_is_corruption_at_its_start() {
    let dir = TempDir::new().unwrap();
    let streams = streams(2);
    let store = open(dir.path());
    fill(&store, &streams, 20, 100).await;
    drop(store);
    let last = segment_paths(dir.path()).pop().unwrap();
    let frames = frame_offsets(&last);
    // Record 5 claims to open an append of two, but record 6 starts an append of its own.
    rewrite_slot(&last, frames[5].0, 0, 2);
    let (file, offset, reason) = corrupted(FileStore::open(dir.path(), small_segments()));
    assert_eq!((file.as_path(), offset), (last.as_path(), frames[5].0));
    assert!(reason.contains("incomplete append"), "{reason}");
    assert_verify_names(dir.path(), &last, frames[5].0);

    // A record that says it is the second of an append where an append starts.
    rewrite_slot(&last, frames[5].0, 1, 2);
    let (_, offset, reason) = corrupted(FileStore::open(dir.path(), small_segments()));
    assert_eq!(offset, frames[5].0);
    assert!(reason.contains("where an append starts"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_that_ends_inside_an_append_is_corruption() {
    let dir = TempDir::new().unwrap();
    let streams = streams(2);
    let store = open(dir.path());
    fill(&store, &streams, 240, 10_000).await;
    drop(store);
    let segments = segment_paths(dir.path());
    assert!(segments.len() >= 2);
    let frames = frame_offsets(&segments[0]);
    let (offset, _) = *frames.last().unwrap();
    rewrite_slot(&segments[0], offset, 0, 2);
    let (file, at, reason) = corrupted(FileStore::open(dir.path(), small_segments()));
    assert_eq!((file.as_path(), at), (segments[0].as_path(), offset));
    assert!(reason.contains("ends inside an append"), "{reason}");
    assert_verify_names(dir.path(), &segments[0], offset);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_never_span_two_segments() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    let streams = streams(3);
    // Appends of 1 to 7 events of 40 kB: several cross where a segment fills up.
    for n in 0..60usize {
        let events = (0..1 + n % 7)
            .map(|k| {
                let mut proposed = event(&format!("a{n}e{k}"));
                proposed.payload.resize(40_000, b' ');
                proposed
            })
            .collect();
        store
            .append(&streams[n % 3], ExpectedRevision::Any, events)
            .await
            .unwrap();
    }
    let before = read_everything(&store).await;
    drop(store);
    let segments = segment_paths(dir.path());
    assert!(
        segments.len() >= 3,
        "the appends must fill several segments"
    );
    for segment in &segments {
        let bytes = std::fs::read(segment).unwrap();
        let frames = frame_offsets(segment);
        let (first, _) = frames[0];
        let (last, size) = *frames.last().unwrap();
        assert_eq!(
            append_slot(&bytes, first).0,
            0,
            "{} starts an append",
            segment.display()
        );
        let (index, count) = append_slot(&bytes, last);
        assert_eq!(index + 1, count, "{} ends an append", segment.display());
        assert_eq!(last + size, bytes.len() as u64);
    }
    let store = open(dir.path());
    assert_eq!(read_everything(&store).await, before);
    let verified = file::verify(dir.path()).unwrap();
    assert_eq!((verified.problem, verified.torn_tail), (None, None));
}

fn copy_log(from: &Path, to: &Path) {
    let log = to.join("log");
    std::fs::create_dir_all(&log).unwrap();
    for segment in segment_paths(from) {
        std::fs::copy(&segment, log.join(segment.file_name().unwrap())).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_writer_preallocates_zeros_that_recovery_reads_as_the_end() {
    let dir = TempDir::new().unwrap();
    let streams = streams(2);
    let store = open(dir.path());
    fill(&store, &streams, 40, 300).await;
    let before = read_everything(&store).await;
    let segment = segment_paths(dir.path()).pop().unwrap();
    let frames = frame_offsets(&segment);
    let (last, size) = *frames.last().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    assert!(
        bytes.len() as u64 > last + size,
        "the active segment runs ahead of its records"
    );
    assert!(bytes[(last + size) as usize..].iter().all(|&b| b == 0));
    // What a crash leaves: the log with its preallocated zeros.
    let crashed = TempDir::new().unwrap();
    copy_log(dir.path(), crashed.path());
    let verified = file::verify(crashed.path()).unwrap();
    assert_eq!((verified.problem, verified.torn_tail), (None, None));
    let reopened = open(crashed.path());
    assert_eq!(reopened.recovery_report().torn_tail, None);
    assert_eq!(read_everything(&reopened).await, before);
    // It continues over the zeros.
    fill(&reopened, &streams, 5, 300).await;
    drop(reopened);
    let reopened = open(crashed.path());
    assert_eq!(read_everything(&reopened).await.len(), before.len() + 5);
    drop(reopened);

    // A clean close cuts the zeros off.
    drop(store);
    let bytes = std::fs::read(&segment).unwrap();
    assert_eq!(bytes.len() as u64, last + size);
}

/// A log cut back below the head its own checkpoint recorded is corruption, named with
/// both positions: truncation must not pass for a shorter, sound log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_shorter_than_its_checkpoint_is_truncated() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    fill(&store, &streams(3), 300, 10_000).await;
    store.close().await.unwrap();
    drop(store);
    let sound = file::verify(dir.path()).unwrap();
    assert_eq!(sound.problem, None);
    assert_eq!(
        sound.checkpoint,
        file::CheckpointHead::Recorded {
            events: 300,
            head: sound.chain_head
        }
    );

    let segments = segment_paths(dir.path());
    let last = segments.last().unwrap();
    let frames = frame_offsets(last);
    let (offset, _) = frames[frames.len() - 1];
    let handle = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    handle.set_len(offset).unwrap();
    drop(handle);
    let report = file::verify(dir.path()).unwrap();
    let problem = report.problem.expect("a truncated log is corrupt");
    assert_eq!(
        (problem.file.as_path(), problem.offset),
        (last.as_path(), offset)
    );
    assert!(problem.reason.contains("truncated"), "{}", problem.reason);
    assert!(
        problem.reason.contains("position 298"),
        "{}",
        problem.reason
    );
    assert!(
        problem.reason.contains("position 299"),
        "{}",
        problem.reason
    );

    std::fs::remove_file(last).unwrap();
    let report = file::verify(dir.path()).unwrap();
    let problem = report
        .problem
        .expect("a log without its last segment is corrupt");
    assert!(problem.reason.contains("truncated"), "{}", problem.reason);
}

/// A head noted earlier (by an auditor, or signed) that the log no longer holds at its
/// position means the log was rewritten, even when every link in it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_does_not_hold_a_known_head_was_rewritten() {
    let dir = TempDir::new().unwrap();
    let store = open(dir.path());
    fill(&store, &streams(2), 50, 100).await;
    let at_20 = store.read_all(Position::sequence(19), 1).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let head = file::KnownHead {
        events: 20,
        head: at_20[0].chain.current,
        source: "the auditor's note".to_owned(),
    };
    let report = file::verify_against(dir.path(), std::slice::from_ref(&head)).unwrap();
    assert_eq!(report.problem, None);
    let other = file::KnownHead {
        head: Digest([7; 32]),
        ..head
    };
    let report = file::verify_against(dir.path(), &[other]).unwrap();
    let problem = report.problem.expect("a head the log does not hold");
    assert!(
        problem.reason.contains("the auditor's note"),
        "{}",
        problem.reason
    );
    assert!(problem.reason.contains("position 19"), "{}", problem.reason);
    let longer = file::KnownHead {
        events: 51,
        head: Digest([7; 32]),
        source: "a signed head".to_owned(),
    };
    let report = file::verify_against(dir.path(), &[longer]).unwrap();
    let problem = report.problem.expect("a head beyond the log");
    assert!(problem.reason.contains("truncated"), "{}", problem.reason);
}
