//! The index checkpoint: the in-memory index written to `DIR/index.ckpt` so that opening a
//! large log reads one file instead of re-hashing every record.
//!
//! A checkpoint is a cache, never the truth: on open it is used only if its checksum holds
//! and the log still has, at the position the checkpoint covers, a record whose hash is
//! the checkpoint's chain head. Otherwise it is ignored and the log is scanned in full.
//!
//! ```text
//! offset  size  field (little-endian)
//! 0       8     magic           "RLEDGIDX"
//! 8       4     format_version  u32, currently 1
//! 12      4     reserved        zeros
//! 16      8     events          u64 N, records covered (positions 0 .. N)
//! 24      32    head_hash       hash of record N-1 (zeros when N = 0)
//! 56      4     segment_count   u32 G
//! 60      4     reserved        zeros
//! 64      16*G  segments        first_position u64, covered_len u64 (bytes incl. header)
//! ...     8*N   locations       u64: segment number << 40 | byte offset
//! ...     8     stream_count    u64, then per stream:
//!                 name_len u16, name UTF-8, count u64, count * sequence u64
//! ...     8     id_count        u64, then id_count * (id prefix u64, sequence u64)
//! ...     8     overflow_count  u64, then overflow_count * (id 16 bytes, sequence u64)
//! end-4   4     crc32c          CRC32C of every byte before
//! ```
//!
//! It is written to `index.ckpt.tmp`, synced, renamed over `index.ckpt`, and the directory
//! synced, so a crash leaves either the old checkpoint or the new one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use uuid::Uuid;

use crate::store::{Digest, StoreError, StreamName};

use super::format::CHECKPOINT_FILE;
use super::index::{Index, IndexParts};

const MAGIC: [u8; 8] = *b"RLEDGIDX";
const VERSION: u32 = 1;
const HEADER_SIZE: usize = 64;

/// A checkpoint as read from disk, not yet checked against the log.
pub struct Checkpoint {
    /// Per segment: first position and the bytes the checkpoint covers.
    pub segments: Vec<(u64, u64)>,
    pub parts: IndexParts,
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, &bytes[..written]);
        Ok(written)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `index` as the checkpoint of `dir`, atomically.
pub fn write(dir: &Path, index: &Index) -> Result<(), StoreError> {
    let path = dir.join(CHECKPOINT_FILE);
    let temporary = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let io = |what: &str| {
        let what = format!("{what} {}", temporary.display());
        move |error| StoreError::io(what, error)
    };
    let file = File::create(&temporary).map_err(io("create"))?;
    let mut out = CrcWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: 0,
    };
    encode(index, &mut out).map_err(io("write"))?;
    let crc = out.crc;
    let mut inner = out.inner;
    inner.write_all(&crc.to_le_bytes()).map_err(io("write"))?;
    let file = inner
        .into_inner()
        .map_err(|error| io("write")(error.into_error()))?;
    file.sync_all().map_err(io("sync"))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(io("rename"))?;
    super::sync_dir(dir)
}

fn encode(index: &Index, out: &mut impl Write) -> std::io::Result<()> {
    let mut header = [0u8; HEADER_SIZE];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[16..24].copy_from_slice(&index.len().to_le_bytes());
    header[24..56].copy_from_slice(&index.head_hash.0);
    let segment_count = u32::try_from(index.segments.len()).expect("segments bounded");
    header[56..60].copy_from_slice(&segment_count.to_le_bytes());
    out.write_all(&header)?;
    for segment in &index.segments {
        out.write_all(&segment.first_position.to_le_bytes())?;
        out.write_all(&segment.len.to_le_bytes())?;
    }
    for location in index.locations() {
        out.write_all(&location.to_le_bytes())?;
    }
    out.write_all(&(index.streams.len() as u64).to_le_bytes())?;
    for (stream, sequences) in &index.streams {
        let name = stream.as_str().as_bytes();
        out.write_all(&(name.len() as u16).to_le_bytes())?;
        out.write_all(name)?;
        out.write_all(&(sequences.len() as u64).to_le_bytes())?;
        for sequence in sequences {
            out.write_all(&sequence.to_le_bytes())?;
        }
    }
    let (ids, overflow) = index.ids();
    out.write_all(&(ids.len() as u64).to_le_bytes())?;
    for (prefix, sequence) in ids {
        out.write_all(&prefix.to_le_bytes())?;
        out.write_all(&sequence.to_le_bytes())?;
    }
    out.write_all(&(overflow.len() as u64).to_le_bytes())?;
    for (id, sequence) in overflow {
        out.write_all(id.as_bytes())?;
        out.write_all(&sequence.to_le_bytes())?;
    }
    Ok(())
}

/// Reads the checkpoint of `dir`: `Ok(None)` if there is none, `Err(reason)` if it is
/// unusable (the caller then scans the whole log). Reads as a stream, checksumming as it
/// goes, so the file is never held in memory beside the index it becomes.
pub fn load(dir: &Path) -> Result<Option<Checkpoint>, String> {
    let path = dir.join(CHECKPOINT_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let len = file
        .metadata()
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?
        .len();
    if len < (HEADER_SIZE + 4) as u64 {
        return Err("checkpoint is too short".to_owned());
    }
    let mut input = Input {
        reader: BufReader::with_capacity(
            1 << 20,
            CrcReader {
                inner: file.take(len - 4),
                crc: 0,
            },
        ),
        remaining: len - 4,
    };
    let checkpoint = decode(&mut input)?;
    if input.remaining != 0 {
        return Err("checkpoint has trailing bytes".to_owned());
    }
    let crc_reader = input.reader.into_inner();
    let computed = crc_reader.crc;
    let mut stored = [0u8; 4];
    crc_reader
        .inner
        .into_inner()
        .read_exact(&mut stored)
        .map_err(|error| format!("cannot read checkpoint: {error}"))?;
    if u32::from_le_bytes(stored) != computed {
        return Err("checkpoint checksum mismatch".to_owned());
    }
    Ok(Some(checkpoint))
}

/// The head the checkpoint of `dir` records, `(events, hash of record events - 1)`, read
/// without decoding the index: `Ok(None)` if there is none, `Err(reason)` if its checksum
/// or header is wrong. Verification compares it with the log: a log shorter than this,
/// or one that does not hold this hash there, lost records the ledger once held.
pub fn recorded_head(dir: &Path) -> Result<Option<(u64, Digest)>, String> {
    let path = dir.join(CHECKPOINT_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let mut bytes = Vec::new();
    BufReader::with_capacity(1 << 20, file)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    if bytes.len() < HEADER_SIZE + 4 {
        return Err("checkpoint is too short".to_owned());
    }
    let (content, stored) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(content) != u32::from_le_bytes(stored.try_into().expect("4 bytes")) {
        return Err("checkpoint checksum mismatch".to_owned());
    }
    if content[0..8] != MAGIC || content[8..12] != VERSION.to_le_bytes() {
        return Err("checkpoint has an unknown magic or version".to_owned());
    }
    let events = u64::from_le_bytes(content[16..24].try_into().expect("8 bytes"));
    let head = Digest(content[24..56].try_into().expect("32 bytes"));
    Ok(Some((events, head)))
}

/// Checksums bytes as they pass, a buffer at a time.
struct CrcReader<R: Read> {
    inner: R,
    crc: u32,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(out)?;
        self.crc = crc32c::crc32c_append(self.crc, &out[..read]);
        Ok(read)
    }
}

/// The checkpoint's content bytes (all but the final CRC).
struct Input {
    reader: BufReader<CrcReader<std::io::Take<File>>>,
    remaining: u64,
}

impl Input {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        self.fill(&mut out)?;
        Ok(out)
    }
    fn bytes(&mut self, len: usize) -> Result<Vec<u8>, String> {
        if self.remaining < len as u64 {
            return Err("checkpoint ends early".to_owned());
        }
        let mut out = vec![0u8; len];
        self.fill(&mut out)?;
        Ok(out)
    }
    fn fill(&mut self, out: &mut [u8]) -> Result<(), String> {
        if self.remaining < out.len() as u64 {
            return Err("checkpoint ends early".to_owned());
        }
        self.reader
            .read_exact(out)
            .map_err(|error| format!("cannot read checkpoint: {error}"))?;
        self.remaining -= out.len() as u64;
        Ok(())
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take::<8>()?))
    }
    /// A count of items of at least `item_size` bytes each, checked against the bytes
    /// left so a damaged count cannot ask for a huge allocation.
    fn count(&mut self, item_size: usize) -> Result<usize, String> {
        let count = self.u64()?;
        if count > self.remaining / item_size as u64 {
            return Err(format!("checkpoint count {count} exceeds its size"));
        }
        Ok(count as usize)
    }
}

fn decode(input: &mut Input) -> Result<Checkpoint, String> {
    let header = input.take::<HEADER_SIZE>()?;
    if header[0..8] != MAGIC {
        return Err("not a checkpoint (bad magic)".to_owned());
    }
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!(
            "checkpoint version {version}, this build reads {VERSION}"
        ));
    }
    let events = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let head_hash = Digest(header[24..56].try_into().expect("32 bytes"));
    let segment_count = u32::from_le_bytes(header[56..60].try_into().expect("4 bytes")) as u64;
    if segment_count > input.remaining / 16 || events > input.remaining / 8 {
        return Err("checkpoint counts exceed its size".to_owned());
    }
    let mut segments = Vec::with_capacity(segment_count as usize);
    for _ in 0..segment_count {
        segments.push((input.u64()?, input.u64()?));
    }
    let mut locations = Vec::with_capacity(events as usize);
    for _ in 0..events {
        locations.push(input.u64()?);
    }
    let stream_count = input.count(2 + 8)?;
    let mut streams = HashMap::with_capacity(stream_count);
    for _ in 0..stream_count {
        let name_len = u16::from_le_bytes(input.take::<2>()?) as usize;
        let name = String::from_utf8(input.bytes(name_len)?)
            .map_err(|_| "checkpoint stream name is not UTF-8".to_owned())?;
        let stream = StreamName::parse(name).map_err(|error| error.to_string())?;
        let count = input.count(8)?;
        let mut sequences = Vec::with_capacity(count);
        for _ in 0..count {
            sequences.push(input.u64()?);
        }
        streams.insert(stream, sequences);
    }
    let id_count = input.count(16)?;
    let mut ids = HashMap::with_capacity(id_count);
    for _ in 0..id_count {
        ids.insert(input.u64()?, input.u64()?);
    }
    let overflow_count = input.count(24)?;
    let mut id_overflow = HashMap::with_capacity(overflow_count);
    for _ in 0..overflow_count {
        let id = Uuid::from_bytes(input.take::<16>()?);
        id_overflow.insert(id, input.u64()?);
    }
    // Cheap consistency checks; the caller checks the chain head against the log.
    let stream_events: u64 = streams.values().map(|s: &Vec<u64>| s.len() as u64).sum();
    if stream_events != events || (ids.len() + id_overflow.len()) as u64 != events {
        return Err("checkpoint counts disagree".to_owned());
    }
    Ok(Checkpoint {
        segments,
        parts: IndexParts {
            locations,
            streams,
            ids,
            id_overflow,
            head_hash,
        },
    })
}
