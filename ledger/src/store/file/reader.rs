//! Reading records back: one positioned read per contiguous run of records, then decoding
//! frame after frame from memory.
//!
//! Reads check each frame's CRC32C and its position, which catches damage on disk; they
//! do not recompute the SHA-256 chain (that is [`super::verify`]'s job), so reads stay
//! cheap.

use std::os::unix::fs::FileExt;

use crate::store::codec::{self, FrameError, FRAME_HEADER_SIZE, FRAME_TRAILER_SIZE};
use crate::store::{ChainLink, Digest, Position, RecordedEvent, StoreError};

use super::index::Run;

/// Reads and decodes every event of `runs`, in order.
pub fn read_runs(runs: &[Run]) -> Result<Vec<RecordedEvent>, StoreError> {
    let total: usize = runs.iter().map(|run| run.count).sum();
    let mut events = Vec::with_capacity(total);
    let mut buffer = Vec::new();
    for run in runs {
        let len = usize::try_from(run.end - run.start).expect("run fits in memory");
        buffer.clear();
        buffer.resize(len, 0);
        run.file
            .read_exact_at(&mut buffer, run.start)
            .map_err(|error| {
                StoreError::io(
                    format!("read {} at {}", run.path.display(), run.start),
                    error,
                )
            })?;
        let mut at = 0usize;
        for sequence in run.first_sequence..run.first_sequence + run.count as u64 {
            let corrupted = |reason: String| StoreError::Corrupted {
                file: run.path.as_ref().clone(),
                offset: run.start + at as u64,
                reason,
            };
            let (event, size) = decode_frame_unhashed(&buffer[at..])
                .map_err(|error| corrupted(error.to_string()))?;
            if event.position != Position::sequence(sequence) {
                return Err(corrupted(format!(
                    "record holds position {}, the index expects {sequence}",
                    event.position
                )));
            }
            events.push(event);
            at += size;
        }
        if at != buffer.len() {
            return Err(StoreError::Corrupted {
                file: run.path.as_ref().clone(),
                offset: run.start + at as u64,
                reason: format!("{} unexpected bytes after the records", buffer.len() - at),
            });
        }
    }
    Ok(events)
}

/// Decodes one frame, checking its CRC32C but not its hash.
pub fn decode_frame_unhashed(bytes: &[u8]) -> Result<(RecordedEvent, usize), FrameError> {
    let size = codec::frame_size(bytes)?;
    if bytes.len() < size {
        return Err(FrameError::Incomplete {
            needed: size,
            available: bytes.len(),
        });
    }
    let frame = &bytes[..size];
    let stored = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&frame[8..]);
    if stored != computed {
        return Err(FrameError::ChecksumMismatch { stored, computed });
    }
    let sequence = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
    let body = &frame[FRAME_HEADER_SIZE..size - FRAME_TRAILER_SIZE];
    let trailer = &frame[size - FRAME_TRAILER_SIZE..];
    let chain = ChainLink {
        previous: Digest(trailer[..32].try_into().expect("32 bytes")),
        current: Digest(trailer[32..].try_into().expect("32 bytes")),
    };
    let event = codec::decode_body(body, Position::sequence(sequence), chain)?;
    Ok((event, size))
}

/// Whether a checksum-valid frame starts anywhere in `bytes` after its first byte: used
/// to tell a torn tail (nothing valid follows) from damage in the middle of the log.
pub fn valid_frame_follows(bytes: &[u8]) -> bool {
    (1..bytes.len()).any(|at| {
        let rest = &bytes[at..];
        match codec::frame_size(rest) {
            Ok(size) if size <= rest.len() => {
                let stored = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
                stored == crc32c::crc32c(&rest[8..size])
            }
            _ => false,
        }
    })
}
