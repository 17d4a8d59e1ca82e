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
//! Writing: the bytes go to `<name>.checkpoint.tmp`, which is fsynced, renamed over the
//! checkpoint, and the directory is fsynced so the rename itself survives a power loss.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ledger::store::Position;
use sha2::{Digest as _, Sha256};

use crate::projection::ProjectionError;

const MAGIC: &[u8; 8] = b"LDGCKPT1";
const VERSION: u16 = 1;
const HEADER_SIZE: usize = 8 + 2 + 1 + 8 + 8 + 8;
const CHECKSUM_SIZE: usize = 32;
/// Largest projection state a checkpoint holds, in bytes.
pub const CHECKPOINT_STATE_SIZE_MAX: usize = 2 * 1024 * 1024 * 1024 - 1;
/// Longest projection name, which becomes a file name.
pub const PROJECTION_NAME_LENGTH_MAX: usize = 64;

/// A checkpoint as read back: where the projection stood and its state bytes.
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

    /// Reads the checkpoint of `name`, or `None` if there is none.
    pub fn load(&self, name: &str) -> Result<Option<Checkpoint>, ProjectionError> {
        let path = self.file_of(name)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(checkpoint_error(&path, error)),
        };
        decode(&bytes)
            .map(Some)
            .map_err(|reason| ProjectionError::Checkpoint {
                path: path.display().to_string(),
                reason,
            })
    }

    /// Writes the checkpoint of `name` atomically and durably.
    pub fn store(&self, name: &str, checkpoint: &Checkpoint) -> Result<(), ProjectionError> {
        let path = self.file_of(name)?;
        let temporary = path.with_extension("checkpoint.tmp");
        let bytes = encode(checkpoint)?;
        ledger::durable::replace_file(&path, &temporary, |out| out.write_all(&bytes))
            .map_err(|error| checkpoint_error(&path, error))?;
        Ok(())
    }
}

fn checkpoint_error(path: &Path, error: std::io::Error) -> ProjectionError {
    ProjectionError::Checkpoint {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// The checkpoint's bytes, checksum included.
pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, ProjectionError> {
    if checkpoint.state.len() > CHECKPOINT_STATE_SIZE_MAX {
        return Err(ProjectionError::LimitExceeded {
            limit: "checkpoint_state_size_max",
            max: CHECKPOINT_STATE_SIZE_MAX,
            actual: checkpoint.state.len(),
        });
    }
    let mut out = Vec::with_capacity(HEADER_SIZE + checkpoint.state.len() + CHECKSUM_SIZE);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let position = checkpoint.position.unwrap_or(Position::START);
    out.push(u8::from(checkpoint.position.is_some()));
    out.extend_from_slice(&position.commit.to_le_bytes());
    out.extend_from_slice(&position.prepare.to_le_bytes());
    out.extend_from_slice(&(checkpoint.state.len() as u64).to_le_bytes());
    out.extend_from_slice(&checkpoint.state);
    let checksum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&checksum);
    Ok(out)
}

/// Reads checkpoint bytes back, checking magic, version, lengths and checksum.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    if bytes.len() < HEADER_SIZE + CHECKSUM_SIZE {
        return Err(format!(
            "{} bytes is shorter than the smallest checkpoint ({})",
            bytes.len(),
            HEADER_SIZE + CHECKSUM_SIZE
        ));
    }
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
    let expected_len = (HEADER_SIZE + CHECKSUM_SIZE) as u64 + state_len;
    if expected_len != bytes.len() as u64 {
        return Err(format!(
            "state length {state_len} does not fit the file size {}",
            bytes.len()
        ));
    }
    let body_end = bytes.len() - CHECKSUM_SIZE;
    let checksum: [u8; 32] = Sha256::digest(&bytes[..body_end]).into();
    if checksum[..] != bytes[body_end..] {
        return Err("checksum mismatch: the checkpoint was altered or torn".to_owned());
    }
    let position = match bytes[10] {
        0 => None,
        1 => Some(Position {
            commit: u64_at(11),
            prepare: u64_at(19),
        }),
        other => return Err(format!("has_position is {other}, not 0 or 1")),
    };
    Ok(Checkpoint {
        position,
        state: bytes[HEADER_SIZE..body_end].to_vec(),
    })
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
    fn names_that_are_not_file_names_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("open");
        for name in ["", "../x", "a/b", "a.b"] {
            assert!(checkpoints.file_of(name).is_err(), "{name:?} accepted");
        }
    }
}
