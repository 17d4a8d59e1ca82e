//! The in-memory index of the embedded log: where each record lies, which records each
//! stream holds, and which position each event id was written at.
//!
//! Memory per event is kept small because the index holds every event of the log: a
//! packed location (8 bytes), a stream entry (8 bytes) and an id entry keyed by the id's
//! first 8 bytes (16 bytes plus the map's overhead). A prefix hit is confirmed against the
//! record on disk; ids whose prefix is already taken go to a small overflow map.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use uuid::Uuid;

use crate::store::codec::Framing;
use crate::store::{Digest, StoreError, StreamName, StreamState};

use super::format::SEGMENT_SIZE_MAX_LIMIT;
use super::reader;

/// Most segments one log can have (24 bits of an index location).
pub const SEGMENTS_MAX: usize = 1 << 24;
const OFFSET_BITS: u32 = 40;
const _: () = assert!(SEGMENT_SIZE_MAX_LIMIT == 1 << OFFSET_BITS);

/// One segment as the readers see it.
#[derive(Clone, Debug)]
pub struct SegmentEntry {
    pub first_position: u64,
    pub path: Arc<PathBuf>,
    pub file: Arc<File>,
    /// How its records are framed (from its header's format version).
    pub framing: Framing,
    /// Bytes of the segment that hold acknowledged records (header included). Readers
    /// never look past it.
    pub len: u64,
}

/// A contiguous run of records in one segment: what one positioned read fetches.
#[derive(Clone, Debug)]
pub struct Run {
    pub path: Arc<PathBuf>,
    pub file: Arc<File>,
    pub framing: Framing,
    pub start: u64,
    pub end: u64,
    pub first_sequence: u64,
    pub count: usize,
}

#[derive(Debug)]
pub struct Index {
    pub segments: Vec<SegmentEntry>,
    /// Per global sequence: segment number (high 24 bits) and byte offset (low 40 bits).
    locations: Vec<u64>,
    /// Per stream: the global sequences of its events, by revision.
    pub streams: HashMap<StreamName, Vec<u64>>,
    /// The first 8 bytes of an event id to its sequence.
    ids: HashMap<u64, u64>,
    /// Ids whose 8-byte prefix another id already took.
    id_overflow: HashMap<Uuid, u64>,
    /// The hash of the last record (the chain head), GENESIS for an empty log.
    pub head_hash: Digest,
}

/// The raw parts of an index, as a checkpoint stores them.
pub struct IndexParts {
    pub locations: Vec<u64>,
    pub streams: HashMap<StreamName, Vec<u64>>,
    pub ids: HashMap<u64, u64>,
    pub id_overflow: HashMap<Uuid, u64>,
    pub head_hash: Digest,
}

pub fn id_prefix(id: &Uuid) -> u64 {
    u64::from_le_bytes(id.as_bytes()[..8].try_into().expect("8 bytes"))
}

impl Index {
    pub fn from_parts(segments: Vec<SegmentEntry>, parts: IndexParts) -> Index {
        Index {
            segments,
            locations: parts.locations,
            streams: parts.streams,
            ids: parts.ids,
            id_overflow: parts.id_overflow,
            head_hash: parts.head_hash,
        }
    }

    /// The parts a checkpoint must store (borrowed).
    pub fn locations(&self) -> &[u64] {
        &self.locations
    }

    pub fn ids(&self) -> (&HashMap<u64, u64>, &HashMap<Uuid, u64>) {
        (&self.ids, &self.id_overflow)
    }

    /// Number of events indexed.
    pub fn len(&self) -> u64 {
        self.locations.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    pub fn stream_state(&self, stream: &StreamName) -> StreamState {
        match self
            .streams
            .get(stream)
            .and_then(|s| s.len().checked_sub(1))
        {
            Some(last) => StreamState::At(last as u64),
            None => StreamState::NoStream,
        }
    }

    pub fn location(&self, sequence: u64) -> (usize, u64) {
        unpack(self.locations[sequence as usize])
    }

    /// Records the event at `sequence` (which must be the next one) at a location, and in
    /// its stream. The caller inserts its id with [`Index::insert_id`].
    pub fn push(&mut self, sequence: u64, segment: usize, offset: u64, stream: &StreamName) {
        assert_eq!(sequence, self.len(), "index pushes must be consecutive");
        assert!(segment < SEGMENTS_MAX && offset < SEGMENT_SIZE_MAX_LIMIT);
        self.locations.push(pack(segment, offset));
        match self.streams.get_mut(stream) {
            Some(sequences) => sequences.push(sequence),
            None => {
                self.streams.insert(stream.clone(), vec![sequence]);
            }
        }
    }

    /// Records that `id` was written at `sequence`. Returns the sequence of an earlier
    /// event with the same id, if there is one (a duplicate: the caller decides).
    pub fn insert_id(&mut self, id: Uuid, sequence: u64) -> Result<Option<u64>, StoreError> {
        let prefix = id_prefix(&id);
        match self.ids.get(&prefix) {
            None => {
                self.ids.insert(prefix, sequence);
                Ok(None)
            }
            Some(&taken) => {
                if self.read_id(taken)? == id {
                    return Ok(Some(taken));
                }
                if let Some(&earlier) = self.id_overflow.get(&id) {
                    return Ok(Some(earlier));
                }
                self.id_overflow.insert(id, sequence);
                Ok(None)
            }
        }
    }

    /// Records `id`, known not to be written before, at `sequence`. Needs no disk read.
    pub fn insert_new_id(&mut self, id: Uuid, sequence: u64) {
        let prefix = id_prefix(&id);
        if let std::collections::hash_map::Entry::Vacant(entry) = self.ids.entry(prefix) {
            entry.insert(sequence);
        } else {
            self.id_overflow.insert(id, sequence);
        }
    }

    /// The sequence `id` was written at, if it was.
    pub fn find_id(&self, id: &Uuid) -> Result<Option<u64>, StoreError> {
        let Some(&sequence) = self.ids.get(&id_prefix(id)) else {
            return Ok(None);
        };
        if self.read_id(sequence)? == *id {
            return Ok(Some(sequence));
        }
        Ok(self.id_overflow.get(id).copied())
    }

    fn read_id(&self, sequence: u64) -> Result<Uuid, StoreError> {
        Ok(reader::read_runs(&[self.run(sequence, 1)])?[0].id)
    }

    /// The run of `count` consecutive events from `first` that lie in `first`'s segment,
    /// with `count` cut short at the segment's end.
    pub fn run(&self, first: u64, count: usize) -> Run {
        let (segment, start) = self.location(first);
        let entry = &self.segments[segment];
        let mut taken = 1usize;
        let mut end = entry.len;
        let last = (first as usize + count).min(self.locations.len());
        for sequence in first as usize + 1..=last {
            if sequence == self.locations.len() {
                break;
            }
            let (next_segment, next_offset) = unpack(self.locations[sequence]);
            if next_segment != segment {
                break;
            }
            if taken == count {
                end = next_offset;
                break;
            }
            taken += 1;
        }
        Run {
            path: Arc::clone(&entry.path),
            file: Arc::clone(&entry.file),
            framing: entry.framing,
            start,
            end,
            first_sequence: first,
            count: taken,
        }
    }

    /// The runs covering `count` events from `first` in global order.
    pub fn runs(&self, first: u64, count: usize) -> Vec<Run> {
        let mut out = Vec::new();
        let end = (first.saturating_add(count as u64)).min(self.len());
        let mut next = first;
        while next < end {
            let run = self.run(next, (end - next) as usize);
            next += run.count as u64;
            out.push(run);
        }
        out
    }

    /// Runs for an arbitrary ordered list of sequences (a stream read), merging
    /// neighbours that lie back to back on disk.
    pub fn runs_for(&self, sequences: &[u64]) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::with_capacity(sequences.len());
        for &sequence in sequences {
            let run = self.run(sequence, 1);
            if let Some(last) = out.last_mut() {
                if last.first_sequence + last.count as u64 == sequence
                    && Arc::ptr_eq(&last.file, &run.file)
                    && last.end == run.start
                {
                    last.end = run.end;
                    last.count += 1;
                    continue;
                }
            }
            out.push(run);
        }
        out
    }
}

fn pack(segment: usize, offset: u64) -> u64 {
    (segment as u64) << OFFSET_BITS | offset
}

fn unpack(location: u64) -> (usize, u64) {
    (
        (location >> OFFSET_BITS) as usize,
        location & ((1 << OFFSET_BITS) - 1),
    )
}
