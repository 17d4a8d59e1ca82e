//! The one writer thread: group commit.
//!
//! Appenders send requests over a channel. The writer takes everything pending (up to
//! [`BATCH_REQUESTS_MAX`] requests and [`BATCH_BYTES_MAX`] bytes of payload), validates
//! each request against the index and the requests before it in the same batch, encodes
//! all accepted events into one buffer, writes it with one positioned write, and makes it
//! durable with one `fdatasync` (under [`Durability::Fsync`]). Only then does it publish the
//! new events to the index, where readers see them, and answer each appender. Many
//! appenders thus share one fsync.
//!
//! After any failed write or sync the writer refuses every later write: the kernel may
//! have dropped the dirty pages, so retrying the sync could report success for data that
//! is gone ("fsyncgate"). The log is recovered from disk on the next open.
//!
//! The active segment is preallocated with zeros, [`PREALLOCATE_BYTES`] ahead of the last
//! record: an `fdatasync` of bytes written inside the file's length flushes data only,
//! while one that grows the file must also commit the file system's metadata, which on
//! ext4 is a journal commit per append. Recovery reads zeros after the last append of the
//! last segment as the end of the records. A finished segment, and the active one on a
//! clean close, is cut back to its records, so the zeros exist only while a writer runs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Arc};

use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::store::codec::{self, Framing};
use crate::store::{
    classify_append, codec::AppendSlot, AppendKind, AppendOutcome, Digest, Durability,
    ExpectedRevision, NewEvent, Position, StoreError, StreamName, StreamState, WrittenEvent,
};

use super::format::{self, SegmentHeader, LOG_DIR, SEGMENT_HEADER_SIZE};
use super::index::{Index, SegmentEntry};
use super::{checkpoint, reader, sync_dir, Clock, Core, FaultInjection};

/// How far ahead of its last record the active segment is filled with zeros.
pub const PREALLOCATE_BYTES: u64 = 1 << 20;

/// Most append requests committed together.
pub const BATCH_REQUESTS_MAX: usize = 4096;
/// The writer stops taking requests into a batch once their payloads reach this size.
pub const BATCH_BYTES_MAX: usize = 32 * 1024 * 1024;
const _: () = assert!(crate::store::APPEND_SIZE_MAX <= BATCH_BYTES_MAX);

pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// When the writer saves the index checkpoint.
pub struct CheckpointPolicy {
    /// Events the checkpoint on disk covers when the writer starts.
    pub covered: u64,
    /// Fewest new events worth a checkpoint.
    pub events_min: u64,
}

pub enum Command {
    Append(AppendRequest),
    Flush(Reply<()>),
    /// Flush, write the index checkpoint and stop.
    Close(Reply<()>),
}

pub struct AppendRequest {
    pub stream: StreamName,
    pub expected: ExpectedRevision,
    pub events: Vec<NewEvent>,
    pub reply: Reply<AppendOutcome>,
}

pub struct Writer {
    core: Arc<Core>,
    head: watch::Sender<Option<Position>>,
    durability: Durability,
    segment_size_max: u64,
    clock: Clock,
    /// The segment being appended to, opened for writing.
    file: File,
    segment: usize,
    segment_len: u64,
    /// The active segment file's length: its records, then preallocated zeros.
    allocated: u64,
    next_position: u64,
    head_hash: Digest,
    last_micros: i64,
    refused: Option<String>,
    unsynced: bool,
    buffer: Vec<u8>,
    /// Events the newest index checkpoint on disk covers.
    checkpointed: u64,
    checkpoint_events_min: u64,
    syncs: u64,
    faults: FaultInjection,
}

/// An event encoded in this batch, to publish once durable.
struct Staged {
    sequence: u64,
    segment: usize,
    offset: u64,
    request: usize,
    id: Uuid,
}

#[derive(Default)]
struct Batch {
    staged: Vec<Staged>,
    outcomes: Vec<Result<AppendOutcome, StoreError>>,
    /// Segments filled up during this batch, with their final lengths.
    finished: Vec<(usize, u64)>,
    created: Vec<SegmentEntry>,
}

impl Writer {
    /// Prepares the writer for the log `core` holds, creating the first segment of an
    /// empty log.
    pub fn start(
        core: Arc<Core>,
        head: watch::Sender<Option<Position>>,
        durability: Durability,
        segment_size_max: u64,
        clock: Clock,
        checkpoint: CheckpointPolicy,
        faults: FaultInjection,
    ) -> Result<Writer, StoreError> {
        let mut index = core.index.write().expect("index lock poisoned");
        if index.segments.is_empty() {
            let (_, entry) = create_segment(&core.dir, 0)?;
            index.segments.push(entry);
        }
        if index.segments.last().expect("a segment").framing != Framing::CURRENT {
            // Records are appended only in the current format: a log written by an older
            // version continues in a new segment, and its old segments stay as they are.
            let next = index.len();
            let last = index.segments.len() - 1;
            if index.segments[last].len == SEGMENT_HEADER_SIZE as u64 {
                // An old segment without records: the new one takes its name.
                let path = Arc::clone(&index.segments[last].path);
                std::fs::remove_file(path.as_ref())
                    .map_err(|error| StoreError::io(format!("remove {}", path.display()), error))?;
                index.segments.pop();
            }
            let (_, entry) = create_segment(&core.dir, next)?;
            index.segments.push(entry);
        }
        let segment = index.segments.len() - 1;
        let entry = &index.segments[segment];
        let io = |what: &str| {
            let what = format!("{what} {}", entry.path.display());
            move |error| StoreError::io(what, error)
        };
        let file = OpenOptions::new()
            .write(true)
            .open(entry.path.as_ref())
            .map_err(io("open for writing"))?;
        let on_disk = file.metadata().map_err(io("stat"))?.len();
        if on_disk < entry.len || !zeros_after(&entry.file, entry.len, on_disk)? {
            return Err(StoreError::Corrupted {
                file: entry.path.as_ref().clone(),
                offset: entry.len,
                reason: format!(
                    "{} bytes after the last record that recovery did not account for",
                    on_disk.saturating_sub(entry.len)
                ),
            });
        }
        let last_micros = match index.len().checked_sub(1) {
            Some(last) => reader::read_runs(&[index.run(last, 1)])?[0]
                .recorded_at
                .timestamp_micros(),
            None => i64::MIN,
        };
        let writer = Writer {
            segment,
            segment_len: entry.len,
            allocated: on_disk,
            next_position: index.len(),
            head_hash: index.head_hash,
            file,
            last_micros,
            core: Arc::clone(&core),
            head,
            durability,
            segment_size_max,
            clock,
            refused: None,
            unsynced: false,
            buffer: Vec::with_capacity(1 << 20),
            checkpointed: checkpoint.covered,
            checkpoint_events_min: checkpoint.events_min,
            syncs: 0,
            faults,
        };
        drop(index);
        Ok(writer)
    }

    /// Serves commands until told to close or until every store handle is gone.
    pub fn run(mut self, commands: mpsc::Receiver<Command>) {
        let mut requests = Vec::new();
        loop {
            let mut control = None;
            match commands.recv() {
                Ok(Command::Append(request)) => requests.push(request),
                Ok(other) => control = Some(other),
                Err(mpsc::RecvError) => {
                    // Every handle dropped without close: make what was written durable.
                    let _ = self.finish();
                    return;
                }
            }
            if control.is_none() {
                let mut bytes: usize = requests[0].events.iter().map(|e| e.payload.len()).sum();
                while requests.len() < BATCH_REQUESTS_MAX && bytes < BATCH_BYTES_MAX {
                    match commands.try_recv() {
                        Ok(Command::Append(request)) => {
                            bytes += request
                                .events
                                .iter()
                                .map(|e| e.payload.len())
                                .sum::<usize>();
                            requests.push(request);
                        }
                        Ok(other) => {
                            control = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            if !requests.is_empty() {
                self.commit(std::mem::take(&mut requests));
            }
            match control {
                Some(Command::Flush(reply)) => {
                    let _ = reply.send(self.sync());
                }
                Some(Command::Close(reply)) => {
                    let result = self.finish().and_then(|()| self.checkpoint());
                    let _ = reply.send(result);
                    return;
                }
                Some(Command::Append(_)) => unreachable!("appends are batched above"),
                None => {}
            }
        }
    }

    fn commit(&mut self, requests: Vec<AppendRequest>) {
        if let Some(reason) = &self.refused {
            for request in requests {
                let _ = request.reply.send(Err(StoreError::WritesRefused {
                    reason: reason.clone(),
                }));
            }
            return;
        }
        let core = Arc::clone(&self.core);
        let staged = {
            let index = core.index.read().expect("index lock poisoned");
            self.stage(&index, &requests)
        };
        let result = staged.and_then(|batch| {
            self.write_buffer()?;
            Ok(batch)
        });
        let batch = match result {
            Ok(batch) => batch,
            Err(error) => {
                let reason = format!("a write to the log failed: {error}");
                self.refuse(reason.clone());
                for request in requests {
                    let _ = request.reply.send(Err(StoreError::WritesRefused {
                        reason: reason.clone(),
                    }));
                }
                return;
            }
        };
        self.publish(&requests, &batch);
        for (request, outcome) in requests.into_iter().zip(batch.outcomes) {
            let _ = request.reply.send(outcome);
        }
        self.checkpoint_if_due();
    }

    /// Writes an index checkpoint once the events since the last one reach
    /// `checkpoint_events_min` and as many as the last one covered. The doubling keeps
    /// the total checkpoint work linear in the log's size, while a crash never leaves
    /// more than about half the log to scan on the next open.
    fn checkpoint_if_due(&mut self) {
        let due = self.checkpointed.max(self.checkpoint_events_min);
        if self.next_position - self.checkpointed < due {
            return;
        }
        // Only synced records may be covered: a checkpoint must never vouch for a record
        // that a crash can still take away.
        if self.sync().is_err() {
            return;
        }
        // A checkpoint is a cache: failing to write one costs a longer open, nothing else.
        if self.checkpoint().is_ok() {
            self.checkpointed = self.next_position;
        }
    }

    /// Validates every request and encodes the accepted events into the buffer. An error
    /// is a failed write (the batch fails); a rejected request is an outcome.
    fn stage(&mut self, index: &Index, requests: &[AppendRequest]) -> Result<Batch, StoreError> {
        let mut batch = Batch::default();
        let mut stream_next: HashMap<&StreamName, u64> = HashMap::new();
        // Events of this batch by id: request number, revision, position.
        let mut fresh: HashMap<Uuid, (usize, u64, Position)> = HashMap::new();
        let micros = (self.clock)().timestamp_micros().max(self.last_micros);
        self.last_micros = micros;
        let recorded_at = DateTime::<Utc>::from_timestamp_micros(micros).expect("clock in range");
        self.buffer.clear();
        for (number, request) in requests.iter().enumerate() {
            let lookup_error = RefCell::new(None);
            let kind = classify_append(request.expected, &request.events, |id| {
                if let Some(&(earlier, revision, position)) = fresh.get(id) {
                    return Some(WrittenEvent {
                        in_this_stream: requests[earlier].stream == request.stream,
                        revision,
                        position,
                    });
                }
                match written(index, id) {
                    Ok(found) => found.map(|(stream, revision, position)| WrittenEvent {
                        in_this_stream: stream == request.stream,
                        revision,
                        position,
                    }),
                    Err(error) => {
                        *lookup_error.borrow_mut() = Some(error);
                        None
                    }
                }
            });
            if let Some(error) = lookup_error.into_inner() {
                batch.outcomes.push(Err(error));
                continue;
            }
            match kind {
                Err(rejection) => {
                    batch.outcomes.push(Err(rejection));
                    continue;
                }
                Ok(AppendKind::Repeat(outcome)) => {
                    batch.outcomes.push(Ok(outcome));
                    continue;
                }
                Ok(AppendKind::New) => {}
            }
            let actual = match stream_next.get(&request.stream) {
                Some(&next) => StreamState::At(next - 1),
                None => index.stream_state(&request.stream),
            };
            if !actual.satisfies(request.expected) {
                batch.outcomes.push(Err(StoreError::WrongExpectedVersion {
                    stream: request.stream.clone(),
                    expected: request.expected,
                    actual,
                }));
                continue;
            }
            let mut revision = actual.next_revision();
            // The whole append is encoded first, then placed: an append never spans two
            // segments, so recovery can keep or drop it by looking at one segment.
            let append_start = self.buffer.len();
            let first_sequence = self.next_position;
            let mut frame_starts = Vec::with_capacity(request.events.len());
            for (slot, event) in request.events.iter().enumerate() {
                frame_starts.push(self.buffer.len() - append_start);
                let link = codec::encode_frame(
                    event,
                    &request.stream,
                    revision,
                    Position::sequence(self.next_position),
                    AppendSlot::new(slot, request.events.len()),
                    recorded_at,
                    self.head_hash,
                    &mut self.buffer,
                );
                fresh.insert(
                    event.id,
                    (number, revision, Position::sequence(self.next_position)),
                );
                self.head_hash = link.current;
                self.next_position += 1;
                revision += 1;
            }
            let segment_used = self.segment_len + append_start as u64;
            let append_bytes = (self.buffer.len() - append_start) as u64;
            let mut append_offset = segment_used;
            if segment_used + append_bytes > self.segment_size_max
                && segment_used > SEGMENT_HEADER_SIZE as u64
            {
                self.rotate(append_start, first_sequence, &mut batch)?;
                append_offset = self.segment_len;
            }
            for (slot, (event, frame_start)) in request.events.iter().zip(frame_starts).enumerate()
            {
                batch.staged.push(Staged {
                    sequence: first_sequence + slot as u64,
                    segment: self.segment,
                    offset: append_offset + frame_start as u64,
                    request: number,
                    id: event.id,
                });
            }
            stream_next.insert(&request.stream, revision);
            batch.outcomes.push(Ok(AppendOutcome {
                revision: revision - 1,
                position: Position::sequence(self.next_position - 1),
            }));
        }
        Ok(batch)
    }

    /// Writes the buffer up to `frame_start` to the current segment, makes it durable and
    /// starts a new segment whose first record is the frame at `frame_start` (the first
    /// record of an append).
    fn rotate(
        &mut self,
        frame_start: usize,
        first_position: u64,
        batch: &mut Batch,
    ) -> Result<(), StoreError> {
        let tail = self.buffer.split_off(frame_start);
        self.write_raw()?;
        self.trim()?;
        if self.unsynced {
            self.sync_now()?;
        }
        batch.finished.push((self.segment, self.segment_len));
        let (file, entry) = create_segment(&self.core.dir, first_position)?;
        self.file = file;
        self.segment += 1;
        self.segment_len = entry.len;
        self.allocated = entry.len;
        batch.created.push(entry);
        self.buffer = tail;
        Ok(())
    }

    /// Writes the buffer and, under [`Durability::Fsync`], syncs it.
    fn write_buffer(&mut self) -> Result<(), StoreError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.write_raw()?;
        match self.durability {
            Durability::Fsync => self.sync_now(),
            Durability::Buffered => Ok(()),
        }
    }

    fn write_raw(&mut self) -> Result<(), StoreError> {
        let end = self.segment_len + self.buffer.len() as u64;
        if end > self.allocated {
            // Zeros ahead of the records, written with them and synced with them: this
            // sync commits the file's new length, the next ones up to it do not.
            let target = end + PREALLOCATE_BYTES.min(self.segment_size_max.saturating_sub(end));
            let zeros = vec![0u8; (target - end) as usize];
            self.file
                .write_all_at(&zeros, end)
                .map_err(|error| StoreError::io("preallocate the log", error))?;
            self.allocated = target;
        }
        self.file
            .write_all_at(&self.buffer, self.segment_len)
            .map_err(|error| StoreError::io("write to the log", error))?;
        self.segment_len += self.buffer.len() as u64;
        self.buffer.clear();
        self.unsynced = true;
        Ok(())
    }

    fn sync_now(&mut self) -> Result<(), StoreError> {
        if self
            .faults
            .fail_syncs_after
            .is_some_and(|after| self.syncs >= after)
        {
            return Err(StoreError::io(
                "sync the log",
                std::io::Error::other("injected fault: the sync failed"),
            ));
        }
        self.file
            .sync_data()
            .map_err(|error| StoreError::io("sync the log", error))?;
        self.syncs += 1;
        self.unsynced = false;
        Ok(())
    }

    /// Cuts the preallocated zeros off the active segment and syncs it.
    fn trim(&mut self) -> Result<(), StoreError> {
        if self.allocated > self.segment_len {
            let failed = |error| StoreError::io("cut the log's preallocated space", error);
            self.file.set_len(self.segment_len).map_err(failed)?;
            // The new length is metadata: all of it synced, so that a crash never leaves
            // a finished segment with zeros after its records (which is corruption).
            self.file.sync_all().map_err(failed)?;
            self.allocated = self.segment_len;
            self.unsynced = false;
        }
        Ok(())
    }

    /// On close: the active segment cut back to its records, and everything durable.
    fn finish(&mut self) -> Result<(), StoreError> {
        if self.refused.is_none() {
            self.trim()
                .inspect_err(|error| self.refuse(format!("closing the log failed: {error}")))?;
        }
        self.sync()
    }

    /// Makes everything written durable; refuses writes after a failure.
    fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(reason) = &self.refused {
            return Err(StoreError::WritesRefused {
                reason: reason.clone(),
            });
        }
        if !self.unsynced {
            return Ok(());
        }
        self.sync_now().inspect_err(|error| {
            self.refuse(format!("a sync of the log failed: {error}"));
        })
    }

    /// Refuses every later write, and tells the store handles why (readiness reports it).
    fn refuse(&mut self, reason: String) {
        self.core.refuse(&reason);
        self.refused = Some(reason);
    }

    fn publish(&mut self, requests: &[AppendRequest], batch: &Batch) {
        let mut index = self.core.index.write().expect("index lock poisoned");
        for &(segment, len) in &batch.finished {
            index.segments[segment].len = len;
        }
        for entry in &batch.created {
            index.segments.push(entry.clone());
        }
        assert_eq!(index.segments.len(), self.segment + 1);
        index.segments[self.segment].len = self.segment_len;
        for staged in &batch.staged {
            index.push(
                staged.sequence,
                staged.segment,
                staged.offset,
                &requests[staged.request].stream,
            );
            index.insert_new_id(staged.id, staged.sequence);
        }
        index.head_hash = self.head_hash;
        assert_eq!(index.len(), self.next_position);
        drop(index);
        if !batch.staged.is_empty() {
            self.head
                .send_replace(Some(Position::sequence(self.next_position - 1)));
        }
    }

    fn checkpoint(&self) -> Result<(), StoreError> {
        let index = self.core.index.read().expect("index lock poisoned");
        checkpoint::write(&self.core.dir, &index)
    }
}

/// Whether the bytes of `file` from `start` to `end` are all zeros (preallocated).
fn zeros_after(file: &File, start: u64, end: u64) -> Result<bool, StoreError> {
    let mut at = start;
    let mut buffer = vec![0u8; 1 << 16];
    while at < end {
        let len = buffer.len().min((end - at) as usize);
        file.read_exact_at(&mut buffer[..len], at)
            .map_err(|error| StoreError::io("read the log's preallocated space", error))?;
        if buffer[..len].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += len as u64;
    }
    Ok(true)
}

/// Where the event with `id` was written: its stream, revision and position.
fn written(index: &Index, id: &Uuid) -> Result<Option<(StreamName, u64, Position)>, StoreError> {
    let Some(sequence) = index.find_id(id)? else {
        return Ok(None);
    };
    let event = reader::read_runs(&[index.run(sequence, 1)])?.remove(0);
    Ok(Some((event.stream, event.revision, event.position)))
}

/// Creates the segment starting at `first_position`: header written and synced, directory
/// synced, before any record goes in. Returns the write handle and the readers' entry.
pub fn create_segment(dir: &Path, first_position: u64) -> Result<(File, SegmentEntry), StoreError> {
    let log = dir.join(LOG_DIR);
    std::fs::create_dir_all(&log)
        .map_err(|error| StoreError::io(format!("create {}", log.display()), error))?;
    let path = format::segment_path(dir, first_position);
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |error| StoreError::io(what, error)
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io("create"))?;
    let header = SegmentHeader {
        first_position,
        framing: Framing::CURRENT,
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(io("write header of"))?;
    file.sync_all().map_err(io("sync"))?;
    sync_dir(&log)?;
    let read = File::open(&path).map_err(io("open"))?;
    Ok((
        file,
        SegmentEntry {
            first_position,
            path: Arc::new(path),
            file: Arc::new(read),
            framing: Framing::CURRENT,
            len: SEGMENT_HEADER_SIZE as u64,
        },
    ))
}
