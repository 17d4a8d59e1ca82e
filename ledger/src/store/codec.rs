//! The canonical byte encoding of one recorded event: the record frame of the embedded log
//! and the input of the hash chain. `docs/FORMAT.md` documents the same layout for
//! auditors; change neither without the other and a new format version.
//!
//! All integers are little-endian.
//!
//! ```text
//! frame, format 2 (written by this code)
//! offset  size  field
//! 0       4     frame_len     u32, bytes after this field: 4 + 8 + 4 + 4 + body_len + 32 + 32
//! 4       4     crc32c        CRC32C (Castagnoli) of bytes 8 .. 4 + frame_len
//! 8       8     position      u64, global sequence number (0, 1, 2, ...)
//! 16      4     append_index  u32, this record's number within its append (0, 1, ...)
//! 20      4     append_count  u32, records in the append that wrote it (1 to 4096)
//! 24      B     body          the event, below
//! 24+B    32    previous      SHA-256 hash of the record before (zeros for the first)
//! 56+B    32    hash          SHA-256(previous || body)
//!
//! frame, format 1 (read only): the same without append_index and append_count, so the
//! body starts at 8 + 8 = 16; every record counts as an append of its own.
//!
//! body
//! offset  size  field
//! 0       16    event_id        UUID, RFC 4122 byte order
//! 16      8     revision        u64, the event's number in its stream (0, 1, 2, ...)
//! 24      8     recorded_at     i64, microseconds since 1970-01-01T00:00:00Z
//! 32      2     schema_version  u16
//! 34      1     flags           bit 0: correlation id present, bit 1: causation id present
//! 35      16    correlation_id  UUID, zeros when absent
//! 51      16    causation_id    UUID, zeros when absent
//! 67      2     stream_len      u16 (S)
//! 69      S     stream          UTF-8
//! 69+S    2     type_len        u16 (T)
//! 71+S    T     event_type      ASCII
//! 71+S+T  4     payload_len     u32 (P)
//! 75+S+T  P     payload         bytes (JSON for domain events)
//! ```
//!
//! The position is outside the hashed body so that a backend which learns the position
//! only after writing (KurrentDB) can still chain its records; reordering is caught by
//! the chain itself, and positions are checked to be consecutive.
//!
//! The append fields are outside the hashed body too: they say how the embedded log
//! grouped records into appends, which recovery needs to keep an append whole or drop it
//! whole, while the chain stays the same in every backend (a clustered backend groups by
//! its own transactions). They are covered by the CRC.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    ChainLink, Digest, EventMetadata, EventType, NewEvent, Position, RecordedEvent, StreamName,
};

/// The record frames the embedded log has had, one per segment format version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Format 1: no append fields; read only, every record an append of its own.
    V1,
    /// Format 2: each record says its place in the append that wrote it.
    V2,
}

impl Framing {
    /// What this code writes.
    pub const CURRENT: Framing = Framing::V2;

    /// Bytes of the frame before the body: frame_len, crc32c, position (and, from format
    /// 2, append_index and append_count).
    pub const fn header_size(self) -> usize {
        match self {
            Framing::V1 => 4 + 4 + 8,
            Framing::V2 => 4 + 4 + 8 + 4 + 4,
        }
    }

    /// The smallest possible frame_len value (an event with empty names and payload).
    pub const fn frame_len_min(self) -> usize {
        self.header_size() - 4 + BODY_FIXED_SIZE + FRAME_TRAILER_SIZE
    }

    /// The largest frame_len value any valid event can produce.
    pub const fn frame_len_max(self) -> usize {
        self.frame_len_min()
            + super::STREAM_NAME_LENGTH_MAX
            + super::EVENT_TYPE_LENGTH_MAX
            + super::EVENT_SIZE_MAX
    }
}

/// Bytes of the frame after the body: previous and hash.
pub const FRAME_TRAILER_SIZE: usize = 32 + 32;
/// Bytes of the body besides the stream name, event type and payload.
pub const BODY_FIXED_SIZE: usize = 16 + 8 + 8 + 2 + 1 + 16 + 16 + 2 + 2 + 4;
/// The largest frame_len value of any format.
pub const FRAME_LEN_MAX: usize = Framing::CURRENT.frame_len_max();
const _: () = assert!(Framing::V1.frame_len_max() <= FRAME_LEN_MAX);
const _: () = assert!(super::EVENTS_PER_APPEND_MAX <= u32::MAX as usize);

/// Where a record stands in the append that wrote it: record `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendSlot {
    pub index: u32,
    pub count: u32,
}

impl AppendSlot {
    /// The slot of a record that is an append of its own (every record of format 1).
    pub const SINGLE: AppendSlot = AppendSlot { index: 0, count: 1 };

    /// Record `index` (from 0) of an append of `count` events.
    pub fn new(index: usize, count: usize) -> AppendSlot {
        assert!(index < count && count <= super::EVENTS_PER_APPEND_MAX);
        AppendSlot {
            index: index as u32,
            count: count as u32,
        }
    }

    /// Whether this record closes its append.
    pub fn is_last(self) -> bool {
        self.index + 1 == self.count
    }
}

/// One frame decoded from bytes.
#[derive(Clone, Debug)]
pub struct DecodedFrame {
    pub event: RecordedEvent,
    pub slot: AppendSlot,
    /// The frame's size in bytes, frame_len included.
    pub size: usize,
}

const FLAG_CORRELATION: u8 = 1;
const FLAG_CAUSATION: u8 = 2;

/// Why bytes do not decode as a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The bytes end before the frame does: at the end of a log, a torn write.
    Incomplete { needed: usize, available: usize },
    /// The frame's length field is outside what any valid frame can have.
    BadLength { frame_len: u64 },
    /// The checksum does not match the contents.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The hash does not match `previous` and the body.
    HashMismatch,
    /// The checksum matched but a field is invalid (a bug in the writer or a forgery).
    Malformed { field: &'static str, reason: String },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete { needed, available } => {
                write!(f, "record needs {needed} bytes but only {available} remain")
            }
            FrameError::BadLength { frame_len } => {
                write!(f, "record length {frame_len} is impossible")
            }
            FrameError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            FrameError::HashMismatch => f.write_str("hash does not match previous and body"),
            FrameError::Malformed { field, reason } => write!(f, "field {field}: {reason}"),
        }
    }
}

/// Encodes the hashed body of an event.
pub fn encode_body(
    event: &NewEvent,
    stream: &StreamName,
    revision: u64,
    recorded_at: DateTime<Utc>,
    out: &mut Vec<u8>,
) {
    let mut flags = 0u8;
    if event.metadata.correlation_id.is_some() {
        flags |= FLAG_CORRELATION;
    }
    if event.metadata.causation_id.is_some() {
        flags |= FLAG_CAUSATION;
    }
    out.extend_from_slice(event.id.as_bytes());
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&recorded_at.timestamp_micros().to_le_bytes());
    out.extend_from_slice(&event.schema_version.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(event.metadata.correlation_id.unwrap_or_default().as_bytes());
    out.extend_from_slice(event.metadata.causation_id.unwrap_or_default().as_bytes());
    put_bytes_u16(out, stream.as_str().as_bytes());
    put_bytes_u16(out, event.event_type.as_str().as_bytes());
    let payload_len = u32::try_from(event.payload.len()).expect("payload checked by limits");
    out.extend_from_slice(&payload_len.to_le_bytes());
    out.extend_from_slice(&event.payload);
}

/// Encodes a whole frame (format 2) for `event` at `position`, record `slot` of its
/// append, chained after `previous`, appending it to `out`. Returns the record's link.
#[allow(clippy::too_many_arguments)]
pub fn encode_frame(
    event: &NewEvent,
    stream: &StreamName,
    revision: u64,
    position: Position,
    slot: AppendSlot,
    recorded_at: DateTime<Utc>,
    previous: Digest,
    out: &mut Vec<u8>,
) -> ChainLink {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]); // frame_len and crc32c, filled below
    out.extend_from_slice(&position.commit.to_le_bytes());
    out.extend_from_slice(&slot.index.to_le_bytes());
    out.extend_from_slice(&slot.count.to_le_bytes());
    let body_start = out.len();
    encode_body(event, stream, revision, recorded_at, out);
    let link = ChainLink::follow(previous, &out[body_start..]);
    out.extend_from_slice(&link.previous.0);
    out.extend_from_slice(&link.current.0);
    let frame_len = u32::try_from(out.len() - start - 4).expect("frame bounded by limits");
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&frame_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    link
}

/// Reads the frame_len field at the start of `bytes` and returns the frame's total size
/// (including the field itself), checking it is plausible.
pub fn frame_size(bytes: &[u8], framing: Framing) -> Result<usize, FrameError> {
    if bytes.len() < 4 {
        return Err(FrameError::Incomplete {
            needed: 4,
            available: bytes.len(),
        });
    }
    let frame_len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    if !(framing.frame_len_min()..=framing.frame_len_max()).contains(&frame_len) {
        return Err(FrameError::BadLength {
            frame_len: frame_len as u64,
        });
    }
    Ok(4 + frame_len)
}

/// How much of a frame [`decode_frame_with`] checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashCheck {
    /// Recompute `SHA-256(previous || body)` (recovery, verify).
    Verify,
    /// Trust the CRC32C alone (reads of records recovery or the writer already checked).
    Skip,
}

/// Decodes one frame at the start of `bytes`, checking its checksum and its own hash.
/// Checking that `previous` links to the record before is the caller's job.
pub fn decode_frame(bytes: &[u8], framing: Framing) -> Result<DecodedFrame, FrameError> {
    decode_frame_with(bytes, framing, HashCheck::Verify)
}

/// Decodes one frame at the start of `bytes`, checking its checksum, its append fields
/// and, as `hash` says, its hash.
pub fn decode_frame_with(
    bytes: &[u8],
    framing: Framing,
    hash: HashCheck,
) -> Result<DecodedFrame, FrameError> {
    let size = frame_size(bytes, framing)?;
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
    let slot = match framing {
        Framing::V1 => AppendSlot::SINGLE,
        Framing::V2 => {
            let index = u32::from_le_bytes(frame[16..20].try_into().expect("4 bytes"));
            let count = u32::from_le_bytes(frame[20..24].try_into().expect("4 bytes"));
            if count == 0 || count as usize > super::EVENTS_PER_APPEND_MAX || index >= count {
                return Err(FrameError::Malformed {
                    field: "append_count",
                    reason: format!(
                        "record {index} of an append of {count} is impossible (an append \
                         holds 1 to {} records)",
                        super::EVENTS_PER_APPEND_MAX
                    ),
                });
            }
            AppendSlot { index, count }
        }
    };
    let body = &frame[framing.header_size()..size - FRAME_TRAILER_SIZE];
    let trailer = &frame[size - FRAME_TRAILER_SIZE..];
    let link = ChainLink {
        previous: Digest(trailer[..32].try_into().expect("32 bytes")),
        current: Digest(trailer[32..].try_into().expect("32 bytes")),
    };
    if hash == HashCheck::Verify && !link.holds_for(body) {
        return Err(FrameError::HashMismatch);
    }
    let event = decode_body(body, Position::sequence(sequence), link)?;
    Ok(DecodedFrame { event, slot, size })
}

/// Decodes a hashed body into the event it records.
pub fn decode_body(
    body: &[u8],
    position: Position,
    chain: ChainLink,
) -> Result<RecordedEvent, FrameError> {
    let mut reader = BodyReader { bytes: body };
    let id = Uuid::from_bytes(reader.array::<16>("event_id")?);
    let revision = u64::from_le_bytes(reader.array::<8>("revision")?);
    let micros = i64::from_le_bytes(reader.array::<8>("recorded_at")?);
    let recorded_at =
        DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| FrameError::Malformed {
            field: "recorded_at",
            reason: format!("{micros} microseconds is out of range"),
        })?;
    let schema_version = u16::from_le_bytes(reader.array::<2>("schema_version")?);
    let flags = reader.array::<1>("flags")?[0];
    if flags & !(FLAG_CORRELATION | FLAG_CAUSATION) != 0 {
        return Err(FrameError::Malformed {
            field: "flags",
            reason: format!("unknown flag bits {flags:#04x}"),
        });
    }
    let correlation = Uuid::from_bytes(reader.array::<16>("correlation_id")?);
    let causation = Uuid::from_bytes(reader.array::<16>("causation_id")?);
    let stream_bytes = reader.bytes_u16("stream")?;
    let stream = std::str::from_utf8(stream_bytes)
        .ok()
        .and_then(|name| StreamName::parse(name).ok())
        .ok_or_else(|| FrameError::Malformed {
            field: "stream",
            reason: "not a valid stream name".to_owned(),
        })?;
    let type_bytes = reader.bytes_u16("event_type")?;
    let event_type = std::str::from_utf8(type_bytes)
        .ok()
        .and_then(|name| EventType::parse(name).ok())
        .ok_or_else(|| FrameError::Malformed {
            field: "event_type",
            reason: "not a valid event type".to_owned(),
        })?;
    let payload_len = u32::from_le_bytes(reader.array::<4>("payload_len")?) as usize;
    let payload = reader.take(payload_len, "payload")?.to_vec();
    if !reader.bytes.is_empty() {
        return Err(FrameError::Malformed {
            field: "payload",
            reason: format!("{} bytes follow the payload", reader.bytes.len()),
        });
    }
    Ok(RecordedEvent {
        id,
        stream,
        revision,
        position,
        event_type,
        schema_version,
        recorded_at,
        metadata: EventMetadata {
            correlation_id: (flags & FLAG_CORRELATION != 0).then_some(correlation),
            causation_id: (flags & FLAG_CAUSATION != 0).then_some(causation),
        },
        payload,
        chain,
    })
}

/// The canonical body of an already recorded event, to re-check its hash.
pub fn body_of(event: &RecordedEvent) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_FIXED_SIZE + event.payload.len() + 64);
    let proposed = NewEvent {
        id: event.id,
        event_type: event.event_type.clone(),
        schema_version: event.schema_version,
        metadata: event.metadata,
        payload: event.payload.clone(),
    };
    encode_body(
        &proposed,
        &event.stream,
        event.revision,
        event.recorded_at,
        &mut body,
    );
    body
}

fn put_bytes_u16(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("name length checked by limits");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

struct BodyReader<'a> {
    bytes: &'a [u8],
}

impl<'a> BodyReader<'a> {
    fn take(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], FrameError> {
        if self.bytes.len() < len {
            return Err(FrameError::Malformed {
                field,
                reason: format!("needs {len} bytes, {} remain", self.bytes.len()),
            });
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FrameError> {
        Ok(self.take(N, field)?.try_into().expect("exact length"))
    }

    fn bytes_u16(&mut self, field: &'static str) -> Result<&'a [u8], FrameError> {
        let len = u16::from_le_bytes(self.array::<2>(field)?) as usize;
        self.take(len, field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewEvent {
        NewEvent {
            id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            event_type: EventType::parse("PaymentReceived").unwrap(),
            schema_version: 2,
            metadata: EventMetadata {
                correlation_id: Some(Uuid::from_u128(7)),
                causation_id: None,
            },
            payload: br#"{"amount":"19.99"}"#.to_vec(),
        }
    }

    #[test]
    fn frame_round_trips_and_detects_every_flipped_bit() {
        let stream = StreamName::parse("payment-1").unwrap();
        let at = DateTime::<Utc>::from_timestamp_micros(1_790_000_000_123_456).unwrap();
        let mut frame = Vec::new();
        let link = encode_frame(
            &sample(),
            &stream,
            3,
            Position::sequence(41),
            AppendSlot::new(1, 3),
            at,
            Digest::GENESIS,
            &mut frame,
        );
        let DecodedFrame { event, slot, size } = decode_frame(&frame, Framing::V2).unwrap();
        assert_eq!(size, frame.len());
        assert_eq!(slot, AppendSlot::new(1, 3));
        assert_eq!(event.id, sample().id);
        assert_eq!(event.stream, stream);
        assert_eq!(event.revision, 3);
        assert_eq!(event.position, Position::sequence(41));
        assert_eq!(event.recorded_at, at);
        assert_eq!(event.metadata, sample().metadata);
        assert_eq!(event.payload, sample().payload);
        assert_eq!(event.chain, link);
        assert_eq!(
            body_of(&event),
            frame[Framing::V2.header_size()..size - FRAME_TRAILER_SIZE]
        );

        for bit in 0..frame.len() * 8 {
            let mut damaged = frame.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_frame(&damaged, Framing::V2).is_err(),
                "flipped bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn short_input_is_incomplete() {
        let stream = StreamName::parse("s").unwrap();
        let mut frame = Vec::new();
        encode_frame(
            &sample(),
            &stream,
            0,
            Position::START,
            AppendSlot::SINGLE,
            Utc::now(),
            Digest::GENESIS,
            &mut frame,
        );
        for cut in [0, 3, 10, frame.len() - 1] {
            assert!(matches!(
                decode_frame(&frame[..cut], Framing::V2),
                Err(FrameError::Incomplete { .. })
            ));
        }
    }

    #[test]
    fn impossible_append_fields_are_malformed_even_with_a_valid_checksum() {
        let stream = StreamName::parse("s").unwrap();
        for (index, count) in [(0u32, 0u32), (3, 3), (0, 4097)] {
            let mut frame = Vec::new();
            encode_frame(
                &sample(),
                &stream,
                0,
                Position::START,
                AppendSlot::SINGLE,
                Utc::now(),
                Digest::GENESIS,
                &mut frame,
            );
            frame[16..20].copy_from_slice(&index.to_le_bytes());
            frame[20..24].copy_from_slice(&count.to_le_bytes());
            let crc = crc32c::crc32c(&frame[8..]);
            frame[4..8].copy_from_slice(&crc.to_le_bytes());
            assert!(
                matches!(
                    decode_frame(&frame, Framing::V2),
                    Err(FrameError::Malformed {
                        field: "append_count",
                        ..
                    })
                ),
                "record {index} of {count}"
            );
        }
    }

    #[test]
    fn a_format_1_frame_reads_as_an_append_of_its_own() {
        // Format 1 is format 2 without the append fields.
        let stream = StreamName::parse("payment-1").unwrap();
        let mut v2 = Vec::new();
        encode_frame(
            &sample(),
            &stream,
            0,
            Position::sequence(5),
            AppendSlot::new(0, 2),
            Utc::now(),
            Digest::GENESIS,
            &mut v2,
        );
        let mut v1 = Vec::new();
        v1.extend_from_slice(&((v2.len() - 4 - 8) as u32).to_le_bytes());
        v1.extend_from_slice(&[0; 4]);
        v1.extend_from_slice(&v2[8..16]);
        v1.extend_from_slice(&v2[24..]);
        let crc = crc32c::crc32c(&v1[8..]);
        v1[4..8].copy_from_slice(&crc.to_le_bytes());
        let read = decode_frame(&v1, Framing::V1).unwrap();
        assert_eq!(read.slot, AppendSlot::SINGLE);
        assert_eq!(read.size, v1.len());
        assert_eq!(read.event.position, Position::sequence(5));
        assert_eq!(read.event.payload, sample().payload);
        assert!(decode_frame(&v1, Framing::V2).is_err());
    }
}
