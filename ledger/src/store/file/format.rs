//! The on-disk layout of the embedded log: directory, segment header and file names.
//! `docs/FORMAT.md` documents the same bytes for auditors; change neither without the
//! other and a new format version.
//!
//! ```text
//! DIR/LOCK                          lock file, held (flock) by the one writer
//! DIR/index.ckpt                    index checkpoint (see `checkpoint.rs`), optional
//! DIR/log/00000000000000000000.seg  segments, named by the position of their first record
//! DIR/log/torn-<segment>-<offset>.bin  bytes cut off a torn tail, kept for forensics
//!
//! segment header (32 bytes, little-endian)
//! offset  size  field
//! 0       8     magic           "RLEDGSEG"
//! 8       4     format_version  u32: 2 (written), or 1 (read only; frames without append
//!                               fields, see `store::codec::Framing`)
//! 12      4     reserved        zeros
//! 16      8     first_position  u64, position of the segment's first record
//! 24      4     reserved        zeros
//! 28      4     header_crc      CRC32C of bytes 0 .. 28
//! 32      ...   frames, back to back (see `store::codec`)
//! ```
//!
//! The hash chain runs across segments: the first record of a segment has as `previous`
//! the hash of the last record of the segment before. An append never spans two
//! segments (format 2): a segment ends after the last record of an append, so recovery
//! keeps or drops an append by looking at one segment.

use std::path::{Path, PathBuf};

use crate::store::codec::Framing;

/// The first bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RLEDGSEG";
/// The segment format this code writes; it also reads format 1.
pub const FORMAT_VERSION: u32 = 2;
/// Bytes of the segment header.
pub const SEGMENT_HEADER_SIZE: usize = 32;
/// Default size at which the writer starts a new segment.
pub const SEGMENT_SIZE_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Largest segment size an index location can address (40 bits of offset).
pub const SEGMENT_SIZE_MAX_LIMIT: u64 = 1 << 40;
/// Smallest configurable segment size: a header and one largest frame must fit, so that
/// every event fits in some segment.
pub const SEGMENT_SIZE_MAX_MIN: u64 =
    (SEGMENT_HEADER_SIZE + 4 + crate::store::codec::FRAME_LEN_MAX) as u64;

const _: () = assert!(SEGMENT_SIZE_MAX_MIN <= SEGMENT_SIZE_MAX_DEFAULT);
const _: () = assert!(SEGMENT_SIZE_MAX_DEFAULT <= SEGMENT_SIZE_MAX_LIMIT);

/// The name of the directory holding the segments.
pub const LOG_DIR: &str = "log";
/// The name of the lock file.
pub const LOCK_FILE: &str = "LOCK";
/// The name of the index checkpoint file.
pub const CHECKPOINT_FILE: &str = "index.ckpt";
const SEGMENT_SUFFIX: &str = ".seg";

/// The decoded header of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub first_position: u64,
    /// How the segment's records are framed (its format version).
    pub framing: Framing,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_SIZE] {
        let mut out = [0u8; SEGMENT_HEADER_SIZE];
        out[0..8].copy_from_slice(&SEGMENT_MAGIC);
        let version: u32 = match self.framing {
            Framing::V1 => 1,
            Framing::V2 => 2,
        };
        out[8..12].copy_from_slice(&version.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_position.to_le_bytes());
        let crc = crc32c::crc32c(&out[..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a header, saying what is wrong with it if it is not valid.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, String> {
        if bytes.len() < SEGMENT_HEADER_SIZE {
            return Err(format!(
                "segment header needs {SEGMENT_HEADER_SIZE} bytes, the file has {}",
                bytes.len()
            ));
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("not a segment file (bad magic)".to_owned());
        }
        let stored = u32::from_le_bytes(bytes[28..32].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[..28]);
        if stored != computed {
            return Err(format!(
                "segment header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let framing = match version {
            1 => Framing::V1,
            2 => Framing::V2,
            _ => {
                return Err(format!(
                    "segment format version {version}, this build reads 1 and {FORMAT_VERSION}"
                ))
            }
        };
        if bytes[12..16] != [0; 4] || bytes[24..28] != [0; 4] {
            return Err("segment header has non-zero reserved bytes".to_owned());
        }
        Ok(SegmentHeader {
            first_position: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
            framing,
        })
    }
}

/// The path of the segment whose first record has `first_position`.
pub fn segment_path(dir: &Path, first_position: u64) -> PathBuf {
    dir.join(LOG_DIR)
        .join(format!("{first_position:020}{SEGMENT_SUFFIX}"))
}

/// The first position encoded in a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let header = SegmentHeader {
            first_position: 1234,
            framing: Framing::CURRENT,
        };
        let bytes = header.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(header));
        let old = SegmentHeader {
            first_position: 7,
            framing: Framing::V1,
        };
        assert_eq!(SegmentHeader::decode(&old.encode()), Ok(old));
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&damaged).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn segment_names_round_trip() {
        let path = segment_path(Path::new("/d"), 42);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.seg");
        assert_eq!(parse_segment_name(name), Some(42));
        assert_eq!(parse_segment_name("42.seg"), None);
        assert_eq!(parse_segment_name("torn-1-2.bin"), None);
    }
}
