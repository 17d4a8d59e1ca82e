//! Opening a log: find the segments, load the index checkpoint if it still matches the
//! log, scan (and verify) every record after it, and deal with a torn tail.
//!
//! Recovery rules:
//! - Every record scanned must pass its CRC32C and hash, carry the next position, link to
//!   the record before (`previous` = hash of the record before) and the next revision of
//!   its stream, and have an id not seen before.
//! - Records are kept or dropped by whole appends (format 2: each record carries its index
//!   in its append and the append's count). A record is handed to the index only once the
//!   record closing its append has been read and verified.
//! - A **torn tail** is what a crash leaves while the writer was writing: at the very end
//!   of the **last** segment, the records of an append that never got its last record,
//!   and bytes that do not form a valid record, with no valid record after them (an
//!   incomplete frame, or a frame whose checksum fails, up to the end of the file). It is
//!   cut off from the first record of the incomplete append (and saved beside the log as
//!   `torn-*.bin`), and reported with the records and positions it dropped. The writer
//!   acknowledges an append only after it is on disk, so a torn tail only ever holds
//!   unacknowledged appends.
//! - An incomplete append anywhere else (a segment that ends inside an append, or an
//!   append followed by the first record of another before its last) is corruption.
//! - Anything else that fails — a bad record followed by a valid one, a bad record in any
//!   segment but the last, a missing or overlapping segment, a record that is valid but
//!   does not link — is **corruption**: `StoreError::Corrupted` naming the file and byte
//!   offset, and the store does not open for writing.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::codec::{self, AppendSlot, DecodedFrame, FrameError, Framing};
use crate::store::{Digest, Position, RecordedEvent, StoreError};

use super::checkpoint;
use super::format::{self, SegmentHeader, LOG_DIR, SEGMENT_HEADER_SIZE};
use super::index::{Index, IndexParts, SegmentEntry};
use super::reader;

/// What opening the log found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Events in the log after recovery.
    pub events: u64,
    pub segments: usize,
    pub checkpoint: CheckpointUse,
    /// Events read and verified from the segments (those the checkpoint did not cover).
    pub scanned_events: u64,
    pub torn_tail: Option<TornTail>,
}

/// Whether the index checkpoint was used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckpointUse {
    Missing,
    Loaded {
        events: u64,
    },
    /// The checkpoint did not match the log or was damaged; the whole log was scanned.
    Rejected {
        reason: String,
    },
}

/// Bytes cut off the end of the last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    pub offset: u64,
    /// Bytes from `offset` to the end of the file (with the zeros a running writer
    /// preallocated after them, at most `writer::PREALLOCATE_BYTES`).
    pub bytes: u64,
    /// Whole, checksum-valid records dropped with the tail because the append that wrote
    /// them is incomplete: the positions `first_position .. first_position + records`.
    pub records: u64,
    pub first_position: u64,
    /// Where the cut bytes were saved (None when nothing was cut).
    pub saved_to: Option<PathBuf>,
    /// Why the tail was left in place when it had to be cut (saving it failed, say for a
    /// full disk): the store then serves reads and refuses writes until it is reopened.
    pub not_cut: Option<String>,
}

/// Whether recovery may change files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    ReadOnly,
}

/// A segment file found in the log directory.
#[derive(Clone, Debug)]
pub struct SegmentFile {
    pub first_position: u64,
    pub path: PathBuf,
}

/// The segment files of `dir`, ordered by first position.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, StoreError> {
    let log = dir.join(LOG_DIR);
    let entries = match std::fs::read_dir(&log) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(StoreError::io(format!("list {}", log.display()), error)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|error| StoreError::io(format!("list {}", log.display()), error))?;
        let name = entry.file_name();
        if let Some(first_position) = name.to_str().and_then(format::parse_segment_name) {
            segments.push(SegmentFile {
                first_position,
                path: entry.path(),
            });
        }
    }
    segments.sort_by_key(|segment| segment.first_position);
    Ok(segments)
}

/// Where the chain stands while scanning.
#[derive(Clone, Copy, Debug)]
pub struct ScanState {
    pub next_position: u64,
    pub head_hash: Digest,
}

/// How a scan ended without corruption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte decoded.
    Clean,
    /// The last segment ends in an incomplete append or in bytes that are not a record:
    /// from `offset` to `file_len`, holding `records` whole records of an append that has
    /// not all of its own, the first at position `first_position`.
    TornTail {
        segment: usize,
        offset: u64,
        file_len: u64,
        records: u64,
        first_position: u64,
    },
}

/// Where a scan starts: at a segment's header, or at an offset within a segment whose
/// header the checkpoint already vouched for.
#[derive(Clone, Copy, Debug)]
pub struct ScanStart {
    pub segment: usize,
    pub offset: Option<u64>,
}

/// Called by [`scan`] for each verified record: event, segment number, byte offset, frame
/// size. An error is corruption at that record.
pub type Visit<'a> = dyn FnMut(&RecordedEvent, usize, u64, usize) -> Result<(), String> + 'a;

/// Walks the records of `segments` from `start`, verifying each and handing it to
/// `visit(event, segment, offset, frame size)` once its whole append has been read; a
/// visitor error is corruption at that record.
pub fn scan(
    segments: &[SegmentFile],
    start: ScanStart,
    state: &mut ScanState,
    visit: &mut Visit<'_>,
) -> Result<ScanEnd, StoreError> {
    let mut previous_end: Option<(PathBuf, u64)> = None;
    for (number, segment) in segments.iter().enumerate().skip(start.segment) {
        let is_last = number + 1 == segments.len();
        let corrupted = |offset: u64, reason: String| StoreError::Corrupted {
            file: segment.path.clone(),
            offset,
            reason,
        };
        let skip = match start.offset {
            Some(offset) if number == start.segment => offset,
            _ => 0,
        };
        let bytes = read_from(&segment.path, skip)?;
        let file_len = skip + bytes.len() as u64;
        let torn = |offset: u64, records: u64, first_position: u64| ScanEnd::TornTail {
            segment: number,
            offset,
            file_len,
            records,
            first_position,
        };
        let mut at = 0usize;
        let framing = if skip == 0 {
            let header = match SegmentHeader::decode(&bytes) {
                Ok(header) => header,
                Err(_) if is_last && bytes.iter().all(|&b| b == 0) => {
                    // A segment created by a writer that crashed before its header reached
                    // the disk: nothing in it was ever acknowledged.
                    return Ok(torn(0, 0, state.next_position));
                }
                Err(reason) => return Err(corrupted(0, reason)),
            };
            if header.first_position != segment.first_position {
                return Err(corrupted(
                    16,
                    format!(
                        "header says first position {}, the file name says {}",
                        header.first_position, segment.first_position
                    ),
                ));
            }
            if header.first_position != state.next_position {
                if header.first_position > state.next_position {
                    if let Some((file, offset)) = previous_end {
                        return Err(StoreError::Corrupted {
                            file,
                            offset,
                            reason: format!(
                                "records {} to {} are missing: this segment ends before \
                                 them and the next one starts after them",
                                state.next_position,
                                header.first_position - 1
                            ),
                        });
                    }
                }
                return Err(corrupted(
                    16,
                    format!(
                        "segment starts at position {}, expected {}",
                        header.first_position, state.next_position
                    ),
                ));
            }
            at = SEGMENT_HEADER_SIZE;
            header.framing
        } else {
            // The checkpoint vouched for this header; its version still says how to read.
            read_header(&segment.path)
                .map_err(|reason| corrupted(0, reason))?
                .framing
        };
        // The records of the append being read, not yet handed to `visit`, and where the
        // chain stands after them.
        let mut append = OpenAppend::default();
        let mut chain = *state;
        while at < bytes.len() {
            let offset = skip + at as u64;
            let rest = &bytes[at..];
            match codec::decode_frame(rest, framing) {
                Ok(DecodedFrame { event, slot, size }) => {
                    if event.position != Position::sequence(chain.next_position) {
                        return Err(corrupted(
                            offset,
                            format!(
                                "record holds position {}, expected {}",
                                event.position, chain.next_position
                            ),
                        ));
                    }
                    if event.chain.previous != chain.head_hash {
                        return Err(corrupted(
                            offset,
                            "record does not link to the record before (hash chain broken)"
                                .to_owned(),
                        ));
                    }
                    if let Some(reason) = append.admit(slot) {
                        // An append cut short before the tail: name where it starts.
                        return Err(corrupted(append.start.unwrap_or(offset), reason));
                    }
                    chain.next_position += 1;
                    chain.head_hash = event.chain.current;
                    append.start.get_or_insert(offset);
                    append.records.push((event, offset, size));
                    if slot.is_last() {
                        for (event, offset, size) in append.records.drain(..) {
                            visit(&event, number, offset, size)
                                .map_err(|reason| corrupted(offset, reason))?;
                        }
                        append.start = None;
                        *state = chain;
                    }
                    at += size;
                }
                Err(_)
                    if is_last
                        && framing == Framing::V2
                        && append.start.is_none()
                        && rest.iter().all(|&b| b == 0) =>
                {
                    // The zeros a running writer preallocates after its last append: the
                    // end of the records, not a tear.
                    break;
                }
                Err(error) => {
                    let tearable = matches!(
                        error,
                        FrameError::Incomplete { .. }
                            | FrameError::BadLength { .. }
                            | FrameError::ChecksumMismatch { .. }
                    );
                    if is_last && tearable && !reader::valid_frame_follows(rest, framing) {
                        let from = append.start.unwrap_or(offset);
                        let records = append.records.len() as u64;
                        return Ok(torn(from, records, state.next_position));
                    }
                    let reason = if is_last && tearable {
                        format!("{error}, and valid records follow")
                    } else {
                        error.to_string()
                    };
                    return Err(corrupted(offset, reason));
                }
            }
        }
        if let Some(from) = append.start {
            let records = append.records.len() as u64;
            if is_last {
                return Ok(torn(from, records, state.next_position));
            }
            return Err(corrupted(
                from,
                format!(
                    "the segment ends inside an append: {records} of its {} records are here \
                     and an append never spans two segments",
                    append.count
                ),
            ));
        }
        previous_end = Some((segment.path.clone(), file_len));
    }
    Ok(ScanEnd::Clean)
}

/// The append whose records a scan has read but not yet handed on.
#[derive(Default)]
struct OpenAppend {
    /// Byte offset of its first record; `None` between appends.
    start: Option<u64>,
    count: u32,
    records: Vec<(RecordedEvent, u64, usize)>,
}

impl OpenAppend {
    /// Checks that a record with `slot` comes next: the first of a new append between
    /// appends, else the next of the open one. Says what is wrong otherwise.
    fn admit(&mut self, slot: AppendSlot) -> Option<String> {
        let expected = self.records.len() as u32;
        if self.start.is_none() {
            if slot.index != 0 {
                return Some(format!(
                    "record {} of an append of {} where an append starts",
                    slot.index, slot.count
                ));
            }
            self.count = slot.count;
            return None;
        }
        if slot.index != expected || slot.count != self.count {
            return Some(format!(
                "incomplete append: {expected} of its {} records, then record {} of an append \
                 of {}",
                self.count, slot.index, slot.count
            ));
        }
        None
    }
}

fn read_header(path: &Path) -> Result<SegmentHeader, String> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).map_err(|error| error.to_string())?;
    let mut header = [0u8; SEGMENT_HEADER_SIZE];
    file.read_exact_at(&mut header, 0)
        .map_err(|error| error.to_string())?;
    SegmentHeader::decode(&header)
}

fn read_from(path: &Path, offset: u64) -> Result<Vec<u8>, StoreError> {
    let io = |error| StoreError::io(format!("read {}", path.display()), error);
    let mut file = File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// Opens the log of `dir` and builds its index.
pub fn recover(dir: &Path, mode: Mode) -> Result<(Index, RecoveryReport), StoreError> {
    let mut segments = list_segments(dir)?;
    let (mut index, start, mut state, checkpoint_use) = match checkpoint::load(dir) {
        Ok(None) => (
            empty_index(&segments)?,
            ScanStart {
                segment: 0,
                offset: None,
            },
            ScanState {
                next_position: 0,
                head_hash: Digest::GENESIS,
            },
            CheckpointUse::Missing,
        ),
        Ok(Some(loaded)) => match adopt_checkpoint(&segments, loaded) {
            Ok((index, start)) => {
                let state = ScanState {
                    next_position: index.len(),
                    head_hash: index.head_hash,
                };
                let events = index.len();
                (index, start, state, CheckpointUse::Loaded { events })
            }
            Err(reason) => full_scan_start(&segments, reason)?,
        },
        Err(reason) => full_scan_start(&segments, reason)?,
    };
    let checkpointed = index.len();
    let end = {
        let mut visit = |event: &RecordedEvent, segment: usize, offset: u64, size: usize| {
            index_event(&mut index, event, segment, offset, size)
        };
        scan(&segments, start, &mut state, &mut visit)?
    };
    let mut torn_tail = None;
    if let ScanEnd::TornTail {
        segment,
        offset,
        file_len,
        records,
        first_position,
    } = end
    {
        let path = segments[segment].path.clone();
        let (saved_to, not_cut) = match mode {
            Mode::ReadOnly => (None, None),
            Mode::ReadWrite => match cut_tail(dir, &path, offset, file_len) {
                Ok(saved) => (Some(saved), None),
                // The bytes are never thrown away unsaved; what the index covers reads
                // as usual, and nothing is written until the tail can be saved and cut.
                Err(error) => (
                    None,
                    Some(format!(
                        "the torn tail at {} offset {offset} could not be saved and cut \
                         ({error}); free space and restart",
                        path.display()
                    )),
                ),
            },
        };
        if saved_to.is_some() && offset == 0 {
            // The whole segment was torn (its header never reached the disk).
            segments.pop();
            index.segments.pop();
        }
        torn_tail = Some(TornTail {
            file: path,
            offset,
            bytes: file_len - offset,
            records,
            first_position,
            saved_to,
            not_cut,
        });
    }
    index.head_hash = state.head_hash;
    assert_eq!(index.len(), state.next_position);
    let report = RecoveryReport {
        events: index.len(),
        segments: index.segments.len(),
        checkpoint: checkpoint_use,
        scanned_events: index.len() - checkpointed,
        torn_tail,
    };
    Ok((index, report))
}

type Start = (Index, ScanStart, ScanState, CheckpointUse);

fn full_scan_start(segments: &[SegmentFile], reason: String) -> Result<Start, StoreError> {
    Ok((
        empty_index(segments)?,
        ScanStart {
            segment: 0,
            offset: None,
        },
        ScanState {
            next_position: 0,
            head_hash: Digest::GENESIS,
        },
        CheckpointUse::Rejected { reason },
    ))
}

fn open_segment(segment: &SegmentFile, len: u64) -> Result<SegmentEntry, StoreError> {
    let file = File::open(&segment.path)
        .map_err(|error| StoreError::io(format!("open {}", segment.path.display()), error))?;
    // A header that does not decode is refused (or, all zeros at the end, cut) by the scan
    // before anything reads the segment through the index.
    let framing = read_header(&segment.path)
        .map(|header| header.framing)
        .unwrap_or(Framing::CURRENT);
    Ok(SegmentEntry {
        first_position: segment.first_position,
        path: Arc::new(segment.path.clone()),
        file: Arc::new(file),
        framing,
        len,
    })
}

fn empty_index(segments: &[SegmentFile]) -> Result<Index, StoreError> {
    let entries = segments
        .iter()
        .map(|segment| open_segment(segment, SEGMENT_HEADER_SIZE as u64))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Index::from_parts(
        entries,
        IndexParts {
            locations: Vec::new(),
            streams: HashMap::new(),
            ids: HashMap::new(),
            id_overflow: HashMap::new(),
            head_hash: Digest::GENESIS,
        },
    ))
}

/// Checks a loaded checkpoint against the segments on disk and turns it into an index and
/// the place the scan resumes.
fn adopt_checkpoint(
    segments: &[SegmentFile],
    loaded: checkpoint::Checkpoint,
) -> Result<(Index, ScanStart), String> {
    if loaded.segments.len() > segments.len() {
        return Err("the checkpoint names segments the log does not have".to_owned());
    }
    let mut entries = Vec::with_capacity(segments.len());
    for (number, segment) in segments.iter().enumerate() {
        let len = match loaded.segments.get(number) {
            Some(&(first_position, len)) => {
                if first_position != segment.first_position {
                    return Err(format!("segment {number} differs from the checkpoint's"));
                }
                let on_disk = std::fs::metadata(&segment.path)
                    .map_err(|error| error.to_string())?
                    .len();
                if on_disk < len {
                    return Err(format!(
                        "{} is shorter than the checkpoint says",
                        segment.path.display()
                    ));
                }
                len
            }
            None => SEGMENT_HEADER_SIZE as u64,
        };
        entries.push(open_segment(segment, len).map_err(|error| error.to_string())?);
    }
    let head_hash = loaded.parts.head_hash;
    let index = Index::from_parts(entries, loaded.parts);
    if let Some(last) = index.len().checked_sub(1) {
        let (segment, _) = index.location(last);
        if segment >= index.segments.len() {
            return Err("the checkpoint points past the segments".to_owned());
        }
        let event = reader::read_runs(&[index.run(last, 1)])
            .map_err(|error| format!("the checkpoint's last record does not read: {error}"))?;
        if event[0].chain.current != head_hash {
            return Err(
                "the log's record at the checkpoint's position has another hash".to_owned(),
            );
        }
    } else if head_hash != Digest::GENESIS {
        return Err("an empty checkpoint with a chain head".to_owned());
    }
    // Resume in the last segment the checkpoint knows, after its last covered byte.
    let start = match loaded.segments.len().checked_sub(1) {
        Some(last) => ScanStart {
            segment: last,
            offset: Some(index.segments[last].len),
        },
        None => ScanStart {
            segment: 0,
            offset: None,
        },
    };
    Ok((index, start))
}

fn index_event(
    index: &mut Index,
    event: &RecordedEvent,
    segment: usize,
    offset: u64,
    size: usize,
) -> Result<(), String> {
    let expected = index.stream_state(&event.stream).next_revision();
    if event.revision != expected {
        return Err(format!(
            "record is revision {} of stream {}, expected revision {expected}",
            event.revision, event.stream
        ));
    }
    let sequence = event.position.commit;
    index.push(sequence, segment, offset, &event.stream);
    // The record must be readable through the index to check an id collision.
    index.segments[segment].len = offset + size as u64;
    match index.insert_id(event.id, sequence) {
        Ok(None) => Ok(()),
        Ok(Some(earlier)) => Err(format!(
            "event id {} was already written at position {earlier}",
            event.id
        )),
        Err(error) => Err(error.to_string()),
    }
}

/// Cuts a torn tail off `path` at `offset`, saving the cut bytes beside the log.
fn cut_tail(dir: &Path, path: &Path, offset: u64, file_len: u64) -> Result<PathBuf, StoreError> {
    let io = |what: &'static str| {
        let path = path.to_path_buf();
        move |error| StoreError::io(format!("{what} {}", path.display()), error)
    };
    let cut = read_from(path, offset)?;
    assert_eq!(cut.len() as u64, file_len - offset);
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("segment");
    let saved = dir.join(LOG_DIR).join(format!("torn-{stem}-{offset}.bin"));
    std::fs::write(&saved, &cut).map_err(io("save torn tail of"))?;
    if offset == 0 {
        std::fs::remove_file(path).map_err(io("remove"))?;
    } else {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io("open"))?;
        file.set_len(offset).map_err(io("truncate"))?;
        file.sync_all().map_err(io("sync"))?;
    }
    super::sync_dir(&dir.join(LOG_DIR))?;
    Ok(saved)
}
