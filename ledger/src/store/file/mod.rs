//! The embedded backend: a durable, segmented append-only log on local disk.
//!
//! - [`format`]: directory layout and segment header (and `docs/FORMAT.md`); records are
//!   the frames of [`crate::store::codec`], chained by SHA-256 across segments.
//! - `writer`: one thread commits appends in groups, one write and one fsync per group,
//!   and publishes them to the index only once durable.
//! - `index`: where every record lies, each stream's records, every event id.
//! - `reader`: positioned reads of whole runs of records.
//! - [`recovery`]: open, verify the tail, cut a torn tail, refuse corruption.
//! - `checkpoint`: the index saved on clean close, so a large log opens fast.
//! - `lock`: one writer per data directory.
//!
//! [`verify`] walks a log independently of the index, for auditors.

mod checkpoint;
pub mod format;
mod index;
mod lock;
mod reader;
pub mod recovery;
mod writer;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use super::subscription;
use super::{
    check_append_limits, check_page_limit, AppendOutcome, Digest, Direction, Durability,
    EventStore, ExpectedRevision, NewEvent, Position, RecordedEvent, StoreError, StreamFrom,
    StreamName, StreamState, Subscription,
};

pub use recovery::{CheckpointUse, RecoveryReport, TornTail};

use format::{SEGMENT_SIZE_MAX_DEFAULT, SEGMENT_SIZE_MAX_LIMIT, SEGMENT_SIZE_MAX_MIN};
use index::{Index, Run};
use lock::DirLock;
use writer::{AppendRequest, Command, Writer};

/// Where `recorded_at` comes from; injectable so tests can compare backends exactly.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// When opening scanned more events than this (no or an old checkpoint), open writes a
/// fresh checkpoint at once, so the next open is fast even if this one ends in a crash.
pub const CHECKPOINT_SCAN_MAX: u64 = 100_000;
/// Default of [`FileStoreOptions::checkpoint_events_min`].
pub const CHECKPOINT_EVENTS_MIN_DEFAULT: u64 = 1 << 20;
/// Reads of fewer bytes than this run on the calling task; larger ones on a blocking
/// thread so they do not stall the async runtime.
const INLINE_READ_BYTES_MAX: u64 = 64 * 1024;

/// How to open a [`FileStore`].
#[derive(Clone)]
pub struct FileStoreOptions {
    pub durability: Durability,
    /// Size at which a segment is closed and the next one started.
    pub segment_size_max: u64,
    pub clock: Clock,
    /// The writer saves the index checkpoint when the events since the last one reach
    /// this many and as many as the last one covered (so checkpoints double in spacing).
    pub checkpoint_events_min: u64,
    /// Failures to inject, for tests of the paths a failing disk takes.
    #[doc(hidden)]
    pub faults: FaultInjection,
}

/// Failures the writer fakes on purpose, to test what a failing disk does to the store.
/// All off by default; production code never sets them.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultInjection {
    /// Every log sync after this many successful ones fails.
    pub fail_syncs_after: Option<u64>,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            durability: Durability::Fsync,
            segment_size_max: SEGMENT_SIZE_MAX_DEFAULT,
            clock: Arc::new(Utc::now),
            checkpoint_events_min: CHECKPOINT_EVENTS_MIN_DEFAULT,
            faults: FaultInjection::default(),
        }
    }
}

impl fmt::Debug for FileStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStoreOptions")
            .field("durability", &self.durability)
            .field("segment_size_max", &self.segment_size_max)
            .field("checkpoint_events_min", &self.checkpoint_events_min)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// The embedded event store; clones share the same open log.
#[derive(Clone)]
pub struct FileStore {
    shared: Arc<Shared>,
}

/// What the writer thread and the store handles share.
pub(crate) struct Core {
    dir: PathBuf,
    index: RwLock<Index>,
    /// Why appends are refused, once they are (set by the writer, or at open).
    refusal: Mutex<Option<String>>,
}

impl Core {
    fn new(dir: PathBuf, index: Index, refusal: Option<String>) -> Core {
        Core {
            dir,
            index: RwLock::new(index),
            refusal: Mutex::new(refusal),
        }
    }

    pub(crate) fn refuse(&self, reason: &str) {
        let mut refusal = self.refusal.lock().expect("refusal lock poisoned");
        refusal.get_or_insert_with(|| reason.to_owned());
    }
}

struct Shared {
    core: Arc<Core>,
    /// None when opened read-only.
    commands: Option<mpsc::Sender<Command>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    head: watch::Receiver<Option<Position>>,
    /// Keeps the head channel of a read-only store open.
    _frozen_head: Option<watch::Sender<Option<Position>>>,
    lock: Mutex<Option<DirLock>>,
    report: RecoveryReport,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel stops the writer after it has synced what it wrote; wait for
        // it so the lock is released only once it is done.
        self.commands = None;
        if let Some(writer) = self.writer.get_mut().map(Option::take).ok().flatten() {
            let _ = writer.join();
        }
    }
}

impl FileStore {
    /// Opens (creating if needed) the log in `dir` for reading and writing. Fails with
    /// [`StoreError::Locked`] if another store has it open, and with
    /// [`StoreError::Corrupted`] if the log is damaged anywhere but a torn tail.
    pub fn open(dir: impl AsRef<Path>, options: FileStoreOptions) -> Result<FileStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        if !(SEGMENT_SIZE_MAX_MIN..=SEGMENT_SIZE_MAX_LIMIT).contains(&options.segment_size_max) {
            return Err(StoreError::Unavailable {
                reason: format!(
                    "segment_size_max must be between {SEGMENT_SIZE_MAX_MIN} and \
                     {SEGMENT_SIZE_MAX_LIMIT} bytes, got {}",
                    options.segment_size_max
                ),
            });
        }
        std::fs::create_dir_all(&dir)
            .map_err(|error| StoreError::io(format!("create {}", dir.display()), error))?;
        let lock = DirLock::acquire(&dir)?;
        let (index, report) = recovery::recover(&dir, recovery::Mode::ReadWrite)?;
        let head = index.len().checked_sub(1).map(Position::sequence);
        if let Some(reason) = report
            .torn_tail
            .as_ref()
            .and_then(|torn| torn.not_cut.clone())
        {
            return Ok(FileStore::without_writer(
                dir,
                index,
                report,
                Some(lock),
                reason,
            ));
        }
        let mut covered = match report.checkpoint {
            CheckpointUse::Loaded { events } => events,
            CheckpointUse::Missing | CheckpointUse::Rejected { .. } => 0,
        };
        // A checkpoint is a cache: failing to write one (a full disk) costs a longer open.
        if report.scanned_events > CHECKPOINT_SCAN_MAX && checkpoint::write(&dir, &index).is_ok() {
            covered = index.len();
        }
        let core = Arc::new(Core::new(dir, index, None));
        let (head_sender, head_receiver) = watch::channel(head);
        let writer = Writer::start(
            Arc::clone(&core),
            head_sender,
            options.durability,
            options.segment_size_max,
            options.clock,
            writer::CheckpointPolicy {
                covered,
                events_min: options.checkpoint_events_min.max(1),
            },
            options.faults,
        )?;
        let (commands, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("ledger-log-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|error| StoreError::io("start the log writer thread", error))?;
        Ok(FileStore {
            shared: Arc::new(Shared {
                core,
                commands: Some(commands),
                writer: Mutex::new(Some(thread)),
                head: head_receiver,
                _frozen_head: None,
                lock: Mutex::new(Some(lock)),
                report,
            }),
        })
    }

    /// Opens the log in `dir` for reading only, without taking the writer's lock: a
    /// snapshot of the log as it stood when opened. A torn tail is left as it is (a writer
    /// may be writing it) and not read. Appends fail with [`StoreError::WritesRefused`].
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<FileStore, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        require_dir(&dir)?;
        let (index, report) = recovery::recover(&dir, recovery::Mode::ReadOnly)?;
        let reason = "the store was opened read-only".to_owned();
        Ok(FileStore::without_writer(dir, index, report, None, reason))
    }

    /// A store that serves reads of what recovery indexed and refuses every append with
    /// `reason`: opened read-only (no `lock`), or opened for writing when the log could
    /// not be put in a state to append to (holding the lock, so no other writer starts).
    fn without_writer(
        dir: PathBuf,
        index: Index,
        report: RecoveryReport,
        lock: Option<DirLock>,
        reason: String,
    ) -> FileStore {
        let head = index.len().checked_sub(1).map(Position::sequence);
        let (head_sender, head_receiver) = watch::channel(head);
        FileStore {
            shared: Arc::new(Shared {
                core: Arc::new(Core::new(dir, index, Some(reason))),
                commands: None,
                writer: Mutex::new(None),
                head: head_receiver,
                _frozen_head: Some(head_sender),
                lock: Mutex::new(lock),
                report,
            }),
        }
    }

    /// What opening the log found (checkpoint used, torn tail cut).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.shared.report
    }

    pub fn dir(&self) -> &Path {
        &self.shared.core.dir
    }

    /// Commits everything pending, makes it durable, writes the index checkpoint, stops
    /// the writer and releases the directory lock. Later appends fail with
    /// [`StoreError::Unavailable`]; reads keep working.
    pub async fn close(&self) -> Result<(), StoreError> {
        let Some(commands) = &self.shared.commands else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        let result = match commands.send(Command::Close(reply)) {
            Ok(()) => answer.await.unwrap_or(Ok(())),
            Err(_) => Ok(()), // already closed
        };
        let thread = self
            .shared
            .writer
            .lock()
            .expect("writer lock poisoned")
            .take();
        if let Some(thread) = thread {
            // The writer replied just before returning, so this join is short.
            thread.join().map_err(|_| StoreError::Unavailable {
                reason: "the log writer thread panicked".to_owned(),
            })?;
        }
        self.shared.lock.lock().expect("lock poisoned").take();
        result
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.shared.core.index.read().expect("index lock poisoned")
    }

    async fn read(&self, runs: Vec<Run>) -> Result<Vec<RecordedEvent>, StoreError> {
        let bytes: u64 = runs.iter().map(|run| run.end - run.start).sum();
        if bytes < INLINE_READ_BYTES_MAX {
            return reader::read_runs(&runs);
        }
        tokio::task::spawn_blocking(move || reader::read_runs(&runs))
            .await
            .map_err(|error| StoreError::Unavailable {
                reason: format!("read task failed: {error}"),
            })?
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable {
        reason: "the store is closed".to_owned(),
    }
}

#[async_trait]
impl EventStore for FileStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        check_append_limits(&events)?;
        let Some(commands) = &self.shared.commands else {
            return Err(StoreError::WritesRefused {
                reason: self.write_refusal().unwrap_or_default(),
            });
        };
        let (reply, answer) = oneshot::channel();
        commands
            .send(Command::Append(AppendRequest {
                stream: stream.clone(),
                expected,
                events,
                reply,
            }))
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_page_limit(limit)?;
        let runs = {
            let index = self.index();
            let Some(sequences) = index.streams.get(stream) else {
                return Ok(Vec::new());
            };
            let len = sequences.len();
            let revision = |revision: u64| usize::try_from(revision).unwrap_or(usize::MAX);
            let picked: Vec<u64> = match direction {
                Direction::Forward => {
                    let start = match from {
                        StreamFrom::Start => 0,
                        StreamFrom::End => len,
                        StreamFrom::Revision(r) => revision(r).min(len),
                    };
                    sequences[start..].iter().take(limit).copied().collect()
                }
                Direction::Backward => {
                    let end = match from {
                        StreamFrom::Start => len.min(1),
                        StreamFrom::End => len,
                        StreamFrom::Revision(r) => revision(r).saturating_add(1).min(len),
                    };
                    sequences[..end].iter().rev().take(limit).copied().collect()
                }
            };
            index.runs_for(&picked)
        };
        // Backward reads list sequences newest first, which `runs_for` never merges, so
        // the events come back in the order asked for.
        let events = self.read(runs).await?;
        for event in &events {
            assert_eq!(
                &event.stream, stream,
                "the stream index points at another stream"
            );
        }
        Ok(events)
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_page_limit(limit)?;
        let runs = {
            let index = self.index();
            if from.commit >= index.len() || limit == 0 {
                return Ok(Vec::new());
            }
            index.runs(from.commit, limit)
        };
        self.read(runs).await
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState, StoreError> {
        Ok(self.index().stream_state(stream))
    }

    async fn head(&self) -> Result<Option<Position>, StoreError> {
        Ok(self.index().len().checked_sub(1).map(Position::sequence))
    }

    fn subscribe_all(&self, from: Position) -> Subscription {
        subscription::follow(self.clone(), from, self.shared.head.clone())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let Some(commands) = &self.shared.commands else {
            return Ok(());
        };
        let (reply, answer) = oneshot::channel();
        commands.send(Command::Flush(reply)).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    fn write_refusal(&self) -> Option<String> {
        self.shared
            .core
            .refusal
            .lock()
            .expect("refusal lock poisoned")
            .clone()
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records that verified, from position 0, before any problem.
    pub events: u64,
    pub streams: u64,
    pub segments: usize,
    /// The hash of the last verified record (GENESIS for an empty log): an auditor can
    /// note it and check later that the log still extends it.
    pub chain_head: Digest,
    /// The first integrity failure, if any: the log is corrupt from here. A log that does
    /// not extend a head the ledger recorded (its index checkpoint) or one given to
    /// [`verify_against`] is corrupt too: records were removed or rewritten.
    pub problem: Option<Problem>,
    /// Bytes at the very end of the last segment that do not (yet) form a record: a torn
    /// write from a crash, or a write in progress. Not an integrity failure.
    pub torn_tail: Option<Problem>,
    /// The head the index checkpoint records, as read before the segments.
    pub checkpoint: CheckpointHead,
    /// With heads given to [`verify_against`]: the first record past the longest of
    /// them, when the log holds more. Not corruption by itself (a log grows after a head
    /// is signed), but nothing vouches for those records beyond their chain.
    pub beyond_known: Option<Problem>,
}

/// What the index checkpoint says the log held when it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointHead {
    Missing,
    /// Its checksum or header is wrong: it is a cache, so this is not corruption of the
    /// log, but it vouches for nothing.
    Unreadable {
        reason: String,
    },
    Recorded {
        events: u64,
        head: Digest,
    },
}

/// A head the log must extend: its first `events` records, the last with hash `head`.
/// `source` names where it comes from (a file, a signed head) in reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownHead {
    pub events: u64,
    pub head: Digest,
    pub source: String,
}

/// A place in the log and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

/// [`verify_against`] with no heads but the checkpoint's.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, StoreError> {
    verify_against(dir, &[])
}

/// Walks the whole log in `dir` without the index, checking every record's checksum and
/// hash, the chain from genesis, consecutive positions and stream revisions, and unique
/// event ids; then that the log extends the head its index checkpoint recorded and every
/// head in `known`: as long, and holding the same hash at that position. Changes nothing
/// and takes no lock, so it runs beside a writer: the checkpoint is read before the
/// segments, and a writer only checkpoints what is already on disk.
pub fn verify_against(
    dir: impl AsRef<Path>,
    known: &[KnownHead],
) -> Result<VerifyReport, StoreError> {
    let dir = dir.as_ref();
    require_dir(dir)?;
    let checkpoint = match checkpoint::recorded_head(dir) {
        Ok(None) => CheckpointHead::Missing,
        Ok(Some((events, head))) => CheckpointHead::Recorded { events, head },
        Err(reason) => CheckpointHead::Unreadable { reason },
    };
    let longest_known = known.iter().map(|head| head.events).max();
    let mut heads: Vec<KnownHead> = known.to_vec();
    if let CheckpointHead::Recorded { events, head } = &checkpoint {
        heads.push(KnownHead {
            events: *events,
            head: *head,
            source: dir.join(format::CHECKPOINT_FILE).display().to_string(),
        });
    }
    // Where each position a head names lies, and its hash, once scanned.
    let wanted: HashSet<u64> = heads
        .iter()
        .filter_map(|head| head.events.checked_sub(1))
        .chain(longest_known)
        .collect();
    let mut seen: HashMap<u64, (usize, u64, Digest)> = HashMap::new();
    let segments = recovery::list_segments(dir)?;
    let mut state = recovery::ScanState {
        next_position: 0,
        head_hash: Digest::GENESIS,
    };
    let mut streams: HashMap<StreamName, u64> = HashMap::new();
    let mut ids: HashSet<Uuid> = HashSet::new();
    let mut visit = |event: &RecordedEvent, segment: usize, offset: u64, _size: usize| {
        let next = streams.entry(event.stream.clone()).or_insert(0);
        if event.revision != *next {
            return Err(format!(
                "record is revision {} of stream {}, expected revision {next}",
                event.revision, event.stream
            ));
        }
        *next += 1;
        if !ids.insert(event.id) {
            return Err(format!("event id {} appears twice", event.id));
        }
        if wanted.contains(&event.position.commit) {
            seen.insert(
                event.position.commit,
                (segment, offset, event.chain.current),
            );
        }
        Ok(())
    };
    let start = recovery::ScanStart {
        segment: 0,
        offset: None,
    };
    let (mut problem, torn_tail) = match recovery::scan(&segments, start, &mut state, &mut visit) {
        Ok(recovery::ScanEnd::Clean) => (None, None),
        Ok(recovery::ScanEnd::TornTail {
            segment,
            offset,
            file_len,
            records,
            first_position,
        }) => (
            None,
            Some(Problem {
                file: segments[segment].path.clone(),
                offset,
                reason: if records == 0 {
                    format!(
                        "{} bytes after the last record do not form a record",
                        file_len - offset
                    )
                } else {
                    format!(
                        "{} bytes after the last complete append: {records} records \
                         (positions {first_position} to {}) of an append that is incomplete",
                        file_len - offset,
                        first_position + records - 1
                    )
                },
            }),
        ),
        Err(StoreError::Corrupted {
            file,
            offset,
            reason,
        }) => (
            Some(Problem {
                file,
                offset,
                reason,
            }),
            None,
        ),
        Err(other) => return Err(other),
    };
    if problem.is_none() {
        problem = heads
            .iter()
            .find_map(|head| unextended(head, state, &segments, &seen));
    }
    let beyond_known = longest_known
        .and_then(|longest| seen.get(&longest).map(|place| (longest, place)))
        .map(|(longest, (segment, offset, _))| Problem {
            file: segments[*segment].path.clone(),
            offset: *offset,
            reason: format!(
                "records {longest} to {} are past every known head (the longest covers \
                 {longest} records)",
                state.next_position - 1
            ),
        });
    Ok(VerifyReport {
        events: state.next_position,
        streams: streams.len() as u64,
        segments: segments.len(),
        chain_head: state.head_hash,
        problem,
        torn_tail,
        checkpoint,
        beyond_known,
    })
}

/// Why a soundly chained log does not extend `head`, if it does not: it is shorter
/// (truncated), or holds another record at the head's position (rewritten).
fn unextended(
    head: &KnownHead,
    end: recovery::ScanState,
    segments: &[recovery::SegmentFile],
    seen: &HashMap<u64, (usize, u64, Digest)>,
) -> Option<Problem> {
    let last = head.events.checked_sub(1)?;
    if head.events > end.next_position {
        let (file, offset) = match segments.last() {
            Some(segment) => (
                segment.path.clone(),
                std::fs::metadata(&segment.path).map_or(0, |meta| meta.len()),
            ),
            None => (PathBuf::from(format::LOG_DIR), 0),
        };
        return Some(Problem {
            file,
            offset,
            reason: format!(
                "the log is truncated: it ends after {} records (position {}, head {}), but \
                 {} recorded {} records (position {last}, head {}); positions {} to {last} \
                 are missing",
                end.next_position,
                end.next_position.saturating_sub(1),
                end.head_hash.to_hex(),
                head.source,
                head.events,
                head.head.to_hex(),
                end.next_position,
            ),
        });
    }
    let (segment, offset, hash) = seen.get(&last)?;
    (*hash != head.head).then(|| Problem {
        file: segments[*segment].path.clone(),
        offset: *offset,
        reason: format!(
            "the log does not extend the head {} recorded: record {last} hashes to {}, not \
             {}; the log was rewritten at or before position {last}",
            head.source,
            hash.to_hex(),
            head.head.to_hex()
        ),
    })
}

/// Readers and verifiers must not report a mistyped path as an empty, sound log.
fn require_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::metadata(dir.join(format::LOG_DIR))
        .map(|_| ())
        .map_err(|error| {
            StoreError::io(
                format!("{} is not a data directory (no log/ inside)", dir.display()),
                error,
            )
        })
}

/// Syncs a directory, so that files created or renamed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    crate::durable::sync_dir(dir)
        .map_err(|error| StoreError::io(format!("sync directory {}", dir.display()), error))
}
