//! Reading records back: one positioned read per contiguous run of records, then decoding
//! frame after frame from memory.
//!
//! Reads check each frame's CRC32C and its position, which catches damage on disk; they
//! do not recompute the SHA-256 chain (that is [`super::verify`]'s job), so reads stay
//! cheap.

use std::os::unix::fs::FileExt;

use crate::store::codec::{self, DecodedFrame, Framing, HashCheck};
use crate::store::{Position, RecordedEvent, StoreError};

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
            let DecodedFrame { event, size, .. } =
                codec::decode_frame_with(&buffer[at..], run.framing, HashCheck::Skip)
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

/// Whether a checksum-valid frame starts anywhere in `bytes` after its first byte: used
/// to tell a torn tail (nothing valid follows) from damage in the middle of the log.
pub fn valid_frame_follows(bytes: &[u8], framing: Framing) -> bool {
    (1..bytes.len()).any(|at| {
        let rest = &bytes[at..];
        match codec::frame_size(rest, framing) {
            Ok(size) if size <= rest.len() => {
                let stored = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
                stored == crc32c::crc32c(&rest[8..size])
            }
            _ => false,
        }
    })
}
