//! Persisted checkpoints: the position a projection has applied up to, and its state,
//! written atomically so a crash leaves either the old checkpoint or the new one.
//!
//! One file per projection, `<dir>/<name>.checkpoint`. All integers little-endian.
//!
//! ```text
//! offset  size  field
//! 0       8     magic          "LDGCKPT1"
//! 8       2     version        u16, 1
//! 10      1     has_position   0: nothing applied yet, 1: position below is valid
//! 11      8     commit         u64
//! 19      8     prepare        u64
//! 27      8     state_len      u64 (N)
//! 35      N     state          the projection's `encode_state` bytes
//! 35+N    32    checksum       SHA-256 of bytes 0 .. 35+N
//! ```
//!
//! Writing streams the state from the projection ([`Projection::encode_state`]) and never
//! holds it in memory: it is encoded once into a counter (the header needs its length, and
//! [`CHECKPOINT_STATE_SIZE_MAX`] is checked before anything is written), then again into
//! `<name>.checkpoint.tmp` through the SHA-256 hasher, followed by the checksum. The
//! temporary file is fsynced, renamed over the checkpoint, and the directory is fsynced so
//! the rename itself survives a power loss. A state that encodes to a different length the
//! second time (a nondeterministic encoding: a bug) is refused and the old checkpoint kept.
//!
//! Reading streams the state from the file through the hasher to the projection's decoder
//! and checks the checksum at the end: on a mismatch the decoded state is refused, and a
//! state that fails to decode in a file whose checksum fails is reported as the damaged
//! file it is.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ledger::store::Position;
use sha2::{Digest as _, Sha256};

use crate::projection::{Projection, ProjectionError};

const MAGIC: &[u8; 8] = b"LDGCKPT1";
const VERSION: u16 = 1;
const HEADER_SIZE: usize = 8 + 2 + 1 + 8 + 8 + 8;
const CHECKSUM_SIZE: usize = 32;
/// Largest projection state a checkpoint holds, in bytes.
pub const CHECKPOINT_STATE_SIZE_MAX: usize = 2 * 1024 * 1024 * 1024 - 1;
/// Longest projection name, which becomes a file name.
pub const PROJECTION_NAME_LENGTH_MAX: usize = 64;
/// Bytes the state is written and read in: the encoders write a few bytes at a time, and
/// hashing or comparing them one call at a time would be most of the work.
const STREAM_BUFFER_SIZE: usize = 64 * 1024;

/// A checkpoint held in memory: where the projection stood and its state bytes. For
/// tests and small states; a projection's checkpoint is streamed
/// ([`CheckpointDir::store_projection`], [`CheckpointDir::load_with`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last event applied, or `None` if none was.
    pub position: Option<Position>,
    pub state: Vec<u8>,
}

/// A directory of checkpoint files.
#[derive(Clone, Debug)]
pub struct CheckpointDir {
    dir: PathBuf,
}

/// A checkpoint file whose header and checksum were checked, kept open so its state can be
/// compared with a rebuild later without holding it in memory. The file stays the one
/// checked even if a new checkpoint replaces it meanwhile: checkpoints are replaced by a
/// rename, never rewritten in place.
#[derive(Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    file: File,
    position: Option<Position>,
    state_len: u64,
}

/// How a state compared with a checkpoint's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateComparison {
    Equal,
    /// The first byte that differs (or where the shorter one ends), and both lengths.
    Differs {
        offset: u64,
        checkpoint_len: u64,
        other_len: u64,
    },
}

impl CheckpointDir {
    /// Uses `dir` for checkpoints, creating it if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<CheckpointDir, ProjectionError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|error| checkpoint_error(&dir, error))?;
        Ok(CheckpointDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The file of projection `name`.
    pub fn file_of(&self, name: &str) -> Result<PathBuf, ProjectionError> {
        let valid = !name.is_empty()
            && name.len() <= PROJECTION_NAME_LENGTH_MAX
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(ProjectionError::Checkpoint {
                path: self.dir.display().to_string(),
                reason: format!(
                    "projection name {name:?} must be 1 to {PROJECTION_NAME_LENGTH_MAX} ASCII \
                     letters, digits, '-' or '_'"
                ),
            });
        }
        Ok(self.dir.join(format!("{name}.checkpoint")))
    }

    /// Reads the checkpoint of `name` whole into memory, or `None` if there is none.
    pub fn load(&self, name: &str) -> Result<Option<Checkpoint>, ProjectionError> {
        let path = self.file_of(name)?;
        let loaded = self.load_with(name, |state| {
            let mut bytes = Vec::new();
            state
                .read_to_end(&mut bytes)
                .map_err(|error| checkpoint_error(&path, error))?;
            Ok(bytes)
        })?;
        Ok(loaded.map(|(position, state)| Checkpoint { position, state }))
    }

    /// Reads the checkpoint of `name`, or `None` if there is none, handing its state to
    /// `read_state` as it comes off the disk. What `read_state` returns is given back only
    /// if the checksum then holds: the caller must not use what it decoded otherwise (a
    /// projection's `decode_state` into the live projection is fine where an error stops
    /// the projection, as in the runner).
    pub fn load_with<T>(
        &self,
        name: &str,
        read_state: impl FnOnce(&mut dyn Read) -> Result<T, ProjectionError>,
    ) -> Result<Option<(Option<Position>, T)>, ProjectionError> {
        let path = self.file_of(name)?;
        let Some((file, file_len)) = open_existing(&path)? else {
            return Ok(None);
        };
        let mut file = BufReader::with_capacity(STREAM_BUFFER_SIZE, file);
        let header = read_header(&mut file, file_len).map_err(|reason| corrupt(&path, reason))?;
        let state = read_checked(file, &header, read_state).map_err(|refusal| match refusal {
            Refusal::Corrupt(reason) => corrupt(&path, reason),
            Refusal::State(error) => error,
        })?;
        Ok(Some((header.position, state)))
    }

    /// Opens the checkpoint of `name` for a later comparison, or `None` if there is none,
    /// reading it through once to check its header and checksum.
    pub fn open_checked(&self, name: &str) -> Result<Option<CheckpointFile>, ProjectionError> {
        let path = self.file_of(name)?;
        let Some((mut file, file_len)) = open_existing(&path)? else {
            return Ok(None);
        };
        let mut reader = BufReader::with_capacity(STREAM_BUFFER_SIZE, &mut file);
        let header = read_header(&mut reader, file_len).map_err(|reason| corrupt(&path, reason))?;
        read_checked(reader, &header, |state| {
            io::copy(state, &mut io::sink()).map_err(|error| checkpoint_error(&path, error))
        })
        .map_err(|refusal| match refusal {
            Refusal::Corrupt(reason) => corrupt(&path, reason),
            Refusal::State(error) => error,
        })?;
        Ok(Some(CheckpointFile {
            path,
            file,
            position: header.position,
            state_len: header.state_len,
        }))
    }

    /// Writes `checkpoint` atomically and durably.
    pub fn store(&self, name: &str, checkpoint: &Checkpoint) -> Result<(), ProjectionError> {
        self.store_with(name, checkpoint.position, &mut |out| {
            out.write_all(&checkpoint.state)
        })
    }

    /// Writes the checkpoint of `projection` at `position` atomically and durably,
    /// streaming its state to the file (see the module docs).
    pub fn store_projection<P: Projection + ?Sized>(
        &self,
        projection: &P,
        position: Option<Position>,
    ) -> Result<(), ProjectionError> {
        self.store_with(projection.name(), position, &mut |out| {
            projection.encode_state(out)
        })
    }

    /// Writes the checkpoint of `name` atomically and durably, its state what
    /// `write_state` writes. `write_state` is called twice (see the module docs) and must
    /// write the same bytes both times.
    pub fn store_with(
        &self,
        name: &str,
        position: Option<Position>,
        write_state: &mut dyn FnMut(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), ProjectionError> {
        let path = self.file_of(name)?;
        let mut counter = Counter(0);
        write_state(&mut counter).map_err(|error| checkpoint_error(&path, error))?;
        let state_len = counter.0;
        check_state_size(state_len)?;
        let header = header_bytes(position, state_len);
        let temporary = path.with_extension("checkpoint.tmp");
        let written = ledger::durable::replace_file(&path, &temporary, |out| {
            let mut hashing = BufWriter::with_capacity(
                STREAM_BUFFER_SIZE,
                HashingWriter {
                    out,
                    hasher: Sha256::new(),
                    written: 0,
                },
            );
            hashing.write_all(&header)?;
            write_state(&mut hashing)?;
            let HashingWriter {
                out,
                hasher,
                written,
            } = hashing.into_inner().map_err(|error| error.into_error())?;
            let encoded = written - HEADER_SIZE as u64;
            if encoded != state_len {
                return Err(io::Error::other(format!(
                    "the state encoded to {state_len} bytes, then to {encoded}: its encoding \
                     is not deterministic (a bug); the previous checkpoint is kept"
                )));
            }
            out.write_all(&hasher.finalize())
        });
        if let Err(error) = written {
            // A failed write leaves the old checkpoint; do not leave a partial copy too.
            let _ = fs::remove_file(&temporary);
            return Err(checkpoint_error(&path, error));
        }
        Ok(())
    }
}

impl CheckpointFile {
    /// The last event the checkpoint's projection had applied, or `None` if none.
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    pub fn state_len(&self) -> u64 {
        self.state_len
    }

    /// Compares the checkpoint's state with what `write_state` writes, reading the state
    /// from the file as the other is written (nothing is held but two buffers).
    pub fn compare_state(
        &mut self,
        write_state: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<StateComparison, ProjectionError> {
        let failed = |error| checkpoint_error(&self.path, error);
        self.file
            .seek(SeekFrom::Start(HEADER_SIZE as u64))
            .map_err(failed)?;
        let mut comparer = Comparer {
            checkpoint: BufReader::with_capacity(STREAM_BUFFER_SIZE, &self.file)
                .take(self.state_len),
            scratch: Vec::new(),
            offset: 0,
            differs_at: None,
        };
        write_state(&mut comparer).map_err(failed)?;
        let other_len = comparer.offset;
        let differs_at = match comparer.differs_at {
            Some(offset) => Some(offset),
            // The other state ended first: it differs where it ended.
            None if other_len < self.state_len => Some(other_len),
            None => None,
        };
        Ok(match differs_at {
            None => StateComparison::Equal,
            Some(offset) => StateComparison::Differs {
                offset,
                checkpoint_len: self.state_len,
                other_len,
            },
        })
    }
}

fn checkpoint_error(path: &Path, error: io::Error) -> ProjectionError {
    ProjectionError::Checkpoint {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

fn corrupt(path: &Path, reason: String) -> ProjectionError {
    ProjectionError::Checkpoint {
        path: path.display().to_string(),
        reason,
    }
}

fn check_state_size(state_len: u64) -> Result<(), ProjectionError> {
    if state_len > CHECKPOINT_STATE_SIZE_MAX as u64 {
        return Err(ProjectionError::LimitExceeded {
            limit: "checkpoint_state_size_max",
            max: CHECKPOINT_STATE_SIZE_MAX,
            actual: usize::try_from(state_len).unwrap_or(usize::MAX),
        });
    }
    Ok(())
}

/// The file at `path` and its length, or `None` if there is none.
fn open_existing(path: &Path) -> Result<Option<(File, u64)>, ProjectionError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(checkpoint_error(path, error)),
    };
    let file_len = file
        .metadata()
        .map_err(|error| checkpoint_error(path, error))?
        .len();
    Ok(Some((file, file_len)))
}

/// The checkpoint's bytes, checksum included.
pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, ProjectionError> {
    let state_len = checkpoint.state.len() as u64;
    check_state_size(state_len)?;
    let mut out = Vec::with_capacity(HEADER_SIZE + checkpoint.state.len() + CHECKSUM_SIZE);
    out.extend_from_slice(&header_bytes(checkpoint.position, state_len));
    out.extend_from_slice(&checkpoint.state);
    let checksum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&checksum);
    Ok(out)
}

/// Reads checkpoint bytes back, checking magic, version, lengths and checksum.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let mut reader = bytes;
    let header = read_header(&mut reader, bytes.len() as u64)?;
    let state = read_checked(reader, &header, |state| {
        let mut bytes = Vec::new();
        state
            .read_to_end(&mut bytes)
            .expect("reading from memory cannot fail");
        Ok(bytes)
    })
    .map_err(|refusal| match refusal {
        Refusal::Corrupt(reason) => reason,
        Refusal::State(error) => error.to_string(),
    })?;
    Ok(Checkpoint {
        position: header.position,
        state,
    })
}

/// A checked header.
struct Header {
    bytes: [u8; HEADER_SIZE],
    position: Option<Position>,
    state_len: u64,
}

fn header_bytes(position: Option<Position>, state_len: u64) -> [u8; HEADER_SIZE] {
    let mut bytes = [0; HEADER_SIZE];
    let at = position.unwrap_or(Position::START);
    bytes[0..8].copy_from_slice(MAGIC);
    bytes[8..10].copy_from_slice(&VERSION.to_le_bytes());
    bytes[10] = u8::from(position.is_some());
    bytes[11..19].copy_from_slice(&at.commit.to_le_bytes());
    bytes[19..27].copy_from_slice(&at.prepare.to_le_bytes());
    bytes[27..35].copy_from_slice(&state_len.to_le_bytes());
    bytes
}

/// Reads and checks the header of a checkpoint file of `file_len` bytes.
fn read_header(file: &mut impl Read, file_len: u64) -> Result<Header, String> {
    let smallest = (HEADER_SIZE + CHECKSUM_SIZE) as u64;
    if file_len < smallest {
        return Err(format!(
            "{file_len} bytes is shorter than the smallest checkpoint ({smallest})"
        ));
    }
    let mut bytes = [0; HEADER_SIZE];
    file.read_exact(&mut bytes)
        .map_err(|error| format!("reading the header: {error}"))?;
    if &bytes[0..8] != MAGIC {
        return Err("not a checkpoint file (bad magic)".to_owned());
    }
    let u64_at =
        |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"));
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != VERSION {
        return Err(format!("checkpoint version {version} is not {VERSION}"));
    }
    let state_len = u64_at(27);
    if smallest.checked_add(state_len) != Some(file_len) {
        return Err(format!(
            "state length {state_len} does not fit the file size {file_len}"
        ));
    }
    let position = match bytes[10] {
        0 => None,
        1 => Some(Position {
            commit: u64_at(11),
            prepare: u64_at(19),
        }),
        other => return Err(format!("has_position is {other}, not 0 or 1")),
    };
    Ok(Header {
        bytes,
        position,
        state_len,
    })
}

/// Why a checkpoint's state was refused.
enum Refusal {
    /// The file is damaged: the reason.
    Corrupt(String),
    /// The reader of the state failed on a file whose checksum holds.
    State(ProjectionError),
}

/// Hands the state after `header` in `file` to `read_state` through the hasher, then
/// checks the checksum that follows it.
fn read_checked<T>(
    file: impl Read,
    header: &Header,
    read_state: impl FnOnce(&mut dyn Read) -> Result<T, ProjectionError>,
) -> Result<T, Refusal> {
    let mut hasher = Sha256::new();
    hasher.update(header.bytes);
    let mut state = HashingReader {
        file: file.take(header.state_len),
        hasher,
    };
    let result = read_state(&mut state);
    // What the reader left (a failed decode stops early) is hashed too, so a damaged file
    // is named as such rather than as a state that does not decode.
    if let Err(error) = io::copy(&mut state, &mut io::sink()) {
        return Err(match result {
            Err(state_error) => Refusal::State(state_error),
            Ok(_) => Refusal::Corrupt(format!("reading the state: {error}")),
        });
    }
    let HashingReader { file, hasher } = state;
    if file.limit() != 0 {
        return Err(Refusal::Corrupt(
            "the file ends inside the state (it shrank while read)".to_owned(),
        ));
    }
    let mut file = file.into_inner();
    let mut checksum = [0; CHECKSUM_SIZE];
    file.read_exact(&mut checksum)
        .map_err(|error| Refusal::Corrupt(format!("reading the checksum: {error}")))?;
    if hasher.finalize()[..] != checksum {
        return Err(Refusal::Corrupt(
            "checksum mismatch: the checkpoint was altered or torn".to_owned(),
        ));
    }
    result.map_err(Refusal::State)
}

/// Counts what is written and drops it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes through to `out`, hashing and counting what it writes.
struct HashingWriter<W> {
    out: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.out.write(bytes)?;
        self.hasher.update(&bytes[..written]);
        self.written += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads from `file`, hashing what it reads.
struct HashingReader<R> {
    file: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let read = self.file.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// Compares what is written with the checkpoint's state, noting the first offset where
/// they differ; after that (or past the checkpoint's end) it only counts, so the other
/// state's whole length is known.
struct Comparer<R> {
    checkpoint: R,
    scratch: Vec<u8>,
    /// Bytes written so far.
    offset: u64,
    differs_at: Option<u64>,
}

impl<R: Read> Write for Comparer<R> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        // At most one buffer at a time (`write_all` comes back for the rest).
        let bytes = &bytes[..bytes.len().min(STREAM_BUFFER_SIZE)];
        if self.differs_at.is_none() {
            self.scratch.resize(bytes.len(), 0);
            let mut filled = 0;
            while filled < bytes.len() {
                match self.checkpoint.read(&mut self.scratch[filled..])? {
                    0 => break,
                    read => filled += read,
                }
            }
            let same = self.scratch[..filled]
                .iter()
                .zip(bytes)
                .position(|(checkpoint, other)| checkpoint != other)
                .unwrap_or(filled);
            if same < bytes.len() {
                self.differs_at = Some(self.offset + same as u64);
            }
        }
        self.offset += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("open");
        assert_eq!(checkpoints.load("wallets").expect("load"), None);
        let checkpoint = Checkpoint {
            position: Some(Position::sequence(41)),
            state: b"{\"a\":1}".to_vec(),
        };
        checkpoints.store("wallets", &checkpoint).expect("store");
        assert_eq!(
            checkpoints.load("wallets").expect("load"),
            Some(checkpoint.clone())
        );
        let newer = Checkpoint {
            position: Some(Position::sequence(42)),
            state: Vec::new(),
        };
        checkpoints.store("wallets", &newer).expect("overwrite");
        assert_eq!(checkpoints.load("wallets").expect("load"), Some(newer));
        assert!(!dir.path().join("wallets.checkpoint.tmp").exists());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let bytes = encode(&Checkpoint {
            position: None,
            state: b"state".to_vec(),
        })
        .expect("encode");
        assert!(decode(&bytes).is_ok());
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x40;
            assert!(decode(&damaged).is_err(), "flip at byte {index} undetected");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn a_stored_file_is_byte_for_byte_the_documented_format() {
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("open");
        let checkpoint = Checkpoint {
            position: Some(Position {
                commit: 7,
                prepare: 5,
            }),
            state: (0..200_000u32).map(|n| (n % 251) as u8).collect(),
        };
        // Written in pieces of odd sizes, as an encoder writes.
        checkpoints
            .store_with("views", checkpoint.position, &mut |out| {
                checkpoint
                    .state
                    .chunks(777)
                    .try_for_each(|piece| out.write_all(piece))
            })
            .expect("store");
        let file = checkpoints.file_of("views").expect("file");
        let bytes = fs::read(&file).expect("read");
        assert_eq!(bytes, encode(&checkpoint).expect("encode"));
        assert_eq!(&bytes[..8], b"LDGCKPT1");
        assert_eq!(&bytes[27..35], &200_000u64.to_le_bytes());
        assert_eq!(
            bytes[bytes.len() - 32..],
            Sha256::digest(&bytes[..bytes.len() - 32])[..]
        );
        // And a file in the format loads, streamed or whole.
        fs::write(&file, encode(&checkpoint).expect("encode")).expect("write");
        assert_eq!(checkpoints.load("views").expect("load"), Some(checkpoint));
    }

    #[test]
    fn a_state_over_the_size_max_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("open");
        let zeros = vec![0u8; 1 << 20];
        let refused = checkpoints
            .store_with("views", None, &mut |out| {
                let mut left = CHECKPOINT_STATE_SIZE_MAX + 1;
                while left > 0 {
                    let piece = left.min(zeros.len());
                    out.write_all(&zeros[..piece])?;
                    left -= piece;
                }
                Ok(())
            })
            .expect_err("refused");
        assert!(
            matches!(
                refused,
                ProjectionError::LimitExceeded {
                    limit: "checkpoint_state_size_max",
                    actual,
                    ..
                } if actual == CHECKPOINT_STATE_SIZE_MAX + 1
            ),
            "{refused}"
        );
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    #[test]
    fn a_state_that_encodes_differently_twice_is_refused_and_the_old_one_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("open");
        let old = Checkpoint {
            position: Some(Position::sequence(3)),
            state: b"old".to_vec(),
        };
        checkpoints.store("views", &old).expect("store");
        let mut calls = 0;
        let refused = checkpoints
            .store_with("views", Some(Position::sequence(4)), &mut |out| {
                calls += 1;
                out.write_all(&vec![b'x'; calls])
            })
            .expect_err("refused");
        assert!(
            refused.to_string().contains("not deterministic"),
            "{refused}"
        );
        assert_eq!(checkpoints.load("views").expect("load"), Some(old));
        assert!(!dir.path().join("views.checkpoint.tmp").exists());
    }

    #[test]
    fn a_state_is_compared_with_the_file_naming_the_first_difference() {
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("open");
        let state: Vec<u8> = (0..300_000u32).map(|n| (n % 13) as u8).collect();
        checkpoints
            .store(
                "views",
                &Checkpoint {
                    position: None,
                    state: state.clone(),
                },
            )
            .expect("store");
        let mut file = checkpoints
            .open_checked("views")
            .expect("open")
            .expect("exists");
        assert_eq!(file.position(), None);
        assert_eq!(file.state_len(), state.len() as u64);
        let mut compare = |other: &[u8]| {
            file.compare_state(|out| {
                other
                    .chunks(1000)
                    .try_for_each(|piece| out.write_all(piece))
            })
            .expect("compared")
        };
        assert_eq!(compare(&state), StateComparison::Equal);
        let mut changed = state.clone();
        changed[200_001] ^= 1;
        assert_eq!(
            compare(&changed),
            StateComparison::Differs {
                offset: 200_001,
                checkpoint_len: 300_000,
                other_len: 300_000,
            }
        );
        assert_eq!(
            compare(&state[..123_456]),
            StateComparison::Differs {
                offset: 123_456,
                checkpoint_len: 300_000,
                other_len: 123_456,
            }
        );
        let mut longer = state.clone();
        longer.extend_from_slice(b"more");
        assert_eq!(
            compare(&longer),
            StateComparison::Differs {
                offset: 300_000,
                checkpoint_len: 300_000,
                other_len: 300_004,
            }
        );
        // A damaged file is refused when opened.
        let path = checkpoints.file_of("views").expect("file");
        let mut bytes = fs::read(&path).expect("read");
        bytes[100_000] ^= 1;
        fs::write(&path, bytes).expect("write");
        let refused = checkpoints.open_checked("views").expect_err("refused");
        assert!(
            refused.to_string().contains("checksum mismatch"),
            "{refused}"
        );
    }

    #[test]
    fn names_that_are_not_file_names_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("open");
        for name in ["", "../x", "a/b", "a.b"] {
            assert!(checkpoints.file_of(name).is_err(), "{name:?} accepted");
        }
    }
}
