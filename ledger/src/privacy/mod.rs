//! Crypto-shredding: personal data never stands in the log in clear.
//!
//! Every personal value (name, email, signup IP, legal name, payout details, payment
//! fingerprints) is written to the log as a [`Sealed`] envelope: AES-256-GCM under a data
//! key that belongs to one data subject and one [`ErasureGroup`]. The data keys live in a
//! [`KeyVault`], outside the immutable log, wrapped by a master key that is never in the
//! log either. Honouring an erasure request destroys the subject's keys: the events stay,
//! byte for byte, so balances, replays and the hash chain are untouched, and nothing can
//! read the person again.
//!
//! - [`sealed`]: the envelope, its binding to event, field and subject, seal and open.
//! - [`vault`]: the `KeyVault` trait, the master key and the embedded directory vault.
//! - [`fingerprint`]: keyed HMAC fingerprints of email, IP and payment fingerprints for
//!   duplicate and fraud checks, held in the vault (deletable), never in the log.
//! - [`events`]: the personal-data-free privacy events (erasure, legal hold, restriction).
//! - [`retention`]: the retention policy, erasure planning, the shredder and deadlines.
//! - [`erasure`]: carrying out an erasure request against a vault.
//! - [`export`]: everything the ledger holds about a subject, as one JSON document.
//! - [`payload`]: which fields of which event types are personal, and sealing and
//!   opening a stored payload; [`domain`]: the same for `DomainEvent`s, the two calls the
//!   service makes; [`commands`]: erasure, holds, restriction, shredder, deadlines and
//!   export as operations of the service `Ledger`.
//!
//! `docs/PRIVACY.md` describes the formats and the procedures for auditors.

pub mod commands;
pub mod domain;
pub mod erasure;
pub mod events;
pub mod export;
pub mod fingerprint;
pub mod payload;
pub mod retention;
pub mod sealed;
pub mod vault;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use events::PrivacyEvent;
pub use sealed::{open, seal, FieldName, Opened, SealContext, Sealed};
pub use vault::{dir::DirVault, KeyLookup, KeyVault, MasterKey};

/// Longest personal value accepted for sealing, in bytes of UTF-8.
pub const PERSONAL_TEXT_LENGTH_MAX: usize = 4096;

/// The data subject a personal value belongs to: the account's random id, never derived
/// from personal data, so it may stand in the log and in vault file names.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubjectId(Uuid);

impl SubjectId {
    pub const fn new(id: Uuid) -> SubjectId {
        SubjectId(id)
    }

    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectId({})", self.0)
    }
}

/// Personal values that are erased together, under one data key per subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureGroup {
    /// Name, email, signup IP: shredded when the subject asks.
    Profile,
    /// Legal name, payout details, payment fingerprints: payment data the law requires us
    /// to keep (7 years after the last payment), shredded when that retention ends.
    Payout,
}

impl ErasureGroup {
    pub const ALL: [ErasureGroup; 2] = [ErasureGroup::Profile, ErasureGroup::Payout];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErasureGroup::Profile => "profile",
            ErasureGroup::Payout => "payout",
        }
    }

    pub fn parse(text: &str) -> Option<ErasureGroup> {
        ErasureGroup::ALL
            .into_iter()
            .find(|group| group.as_str() == text)
    }

    /// One byte naming the group inside associated data and vault records.
    pub(crate) const fn tag(self) -> u8 {
        match self {
            ErasureGroup::Profile => 1,
            ErasureGroup::Payout => 2,
        }
    }
}

impl fmt::Display for ErasureGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A personal value in clear. It prints as `[personal]` in `Debug` and `Display` and has no
/// `Serialize`, so it cannot reach a log line or a payload by accident; [`expose`] is the
/// one way to read it, and every caller of it is a place to review.
///
/// [`expose`]: PersonalText::expose
#[derive(Clone, PartialEq, Eq)]
pub struct PersonalText(zeroize::Zeroizing<String>);

impl PersonalText {
    /// Accepts at most [`PERSONAL_TEXT_LENGTH_MAX`] bytes.
    pub fn new(text: impl Into<String>) -> Result<PersonalText, PrivacyError> {
        let text = text.into();
        if text.len() > PERSONAL_TEXT_LENGTH_MAX {
            return Err(PrivacyError::LimitExceeded {
                limit: "personal_text_length_max",
                max: PERSONAL_TEXT_LENGTH_MAX,
                actual: text.len(),
            });
        }
        Ok(PersonalText(zeroize::Zeroizing::new(text)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PersonalText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalText([personal])")
    }
}

impl fmt::Display for PersonalText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[personal]")
    }
}

/// Why a privacy operation failed. None of the messages carries personal data.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// A write needs a key of a subject whose group was erased: no new key is created.
    #[error("subject {subject} had its {group} data erased at {at}; it cannot be written again")]
    SubjectErased {
        subject: SubjectId,
        group: ErasureGroup,
        at: DateTime<Utc>,
    },
    /// The sealed value does not open under its key and context: it was altered, or moved
    /// to another event, field or subject.
    #[error("sealed {field} does not open in this context: it was altered or moved ({reason})")]
    Unauthentic { field: String, reason: &'static str },
    /// The vault has no key and no tombstone for a key the log refers to: the vault is not
    /// the one the log was written with, or lost a file. Never read as "erased".
    #[error(
        "the vault has no {group} key {key_id} of subject {subject} and no record of erasing it"
    )]
    KeyMissing {
        subject: SubjectId,
        group: ErasureGroup,
        key_id: Uuid,
    },
    /// The vault cannot be reached or read. Never read as "erased".
    #[error("the key vault is unavailable: {reason}")]
    VaultUnavailable { reason: String },
    /// A vault file is not what the vault writes.
    #[error("corrupt key vault file {path}: {reason}")]
    VaultCorrupted { path: PathBuf, reason: String },
    /// The master key given does not wrap this vault's keys.
    #[error(
        "the master key {given} does not open this vault (its keys are wrapped by {expected})"
    )]
    WrongMasterKey { given: String, expected: String },
    #[error("invalid master key: {reason}")]
    InvalidMasterKey { reason: String },
    #[error("the key vault directory {path} is locked by another process")]
    VaultLocked { path: PathBuf },
    #[error("{limit} is {max}, got {actual}")]
    LimitExceeded {
        limit: &'static str,
        max: usize,
        actual: usize,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("the operating system's random number generator failed: {reason}")]
    Random { reason: String },
}

impl PrivacyError {
    /// A stable code for each kind of failure, for API problem types and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            PrivacyError::SubjectErased { .. } => "subject_erased",
            PrivacyError::Unauthentic { .. } => "sealed_value_unauthentic",
            PrivacyError::KeyMissing { .. } => "vault_key_missing",
            PrivacyError::VaultUnavailable { .. } => "vault_unavailable",
            PrivacyError::VaultCorrupted { .. } => "vault_corrupted",
            PrivacyError::WrongMasterKey { .. } => "vault_wrong_master_key",
            PrivacyError::InvalidMasterKey { .. } => "invalid_master_key",
            PrivacyError::VaultLocked { .. } => "vault_locked",
            PrivacyError::LimitExceeded { .. } => "limit_exceeded",
            PrivacyError::Invalid { .. } => "invalid_input",
            PrivacyError::Random { .. } => "random_failed",
        }
    }

    pub(crate) fn unavailable(context: &str, error: std::io::Error) -> PrivacyError {
        PrivacyError::VaultUnavailable {
            reason: format!("{context}: {error}"),
        }
    }
}

/// Fills `out` from the operating system's random number generator.
pub(crate) fn random_bytes(out: &mut [u8]) -> Result<(), PrivacyError> {
    getrandom::fill(out).map_err(|error| PrivacyError::Random {
        reason: error.to_string(),
    })
}
