//! The key vault: where data keys live, apart from the immutable log, so that they can be
//! destroyed.
//!
//! Each data subject has one data key per [`ErasureGroup`], created on the first write
//! that needs it. Destroying a key leaves a tombstone, so a later write is rejected
//! instead of silently getting a fresh key, and a read learns *when* the value was erased.
//! A vault that cannot be read answers with an error, never with "erased".
//!
//! The trait is synchronous: every implementation is a few small file or network
//! operations, and callers in async code run it on a blocking thread.

pub mod dir;
pub mod memory;
#[cfg(feature = "pg-vault")]
pub mod pg;

use std::fmt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::fingerprint::{Fingerprint, FingerprintKind};
use super::{random_bytes, ErasureGroup, PersonalText, PrivacyError, SubjectId};

/// Bytes of every key: data keys, the fingerprint key and the master key (AES-256).
pub const KEY_SIZE: usize = 32;

/// The associated data binding a wrapped fingerprint key to its purpose, in every vault.
pub(crate) const FINGERPRINT_KEY_AAD: &[u8] = b"refledger.vault.fingerprint-key.v1";

/// The associated data binding a wrapped data key to its subject, group, id and version:
/// a wrapped key copied onto another subject's record does not open. The same in every
/// vault, so a key moves between vaults by re-wrapping alone.
pub(crate) fn data_key_aad(
    subject: SubjectId,
    group: ErasureGroup,
    key_id: Uuid,
    version: u32,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"refledger.vault.data-key.v1");
    aad.extend_from_slice(subject.as_uuid().as_bytes());
    aad.push(group.tag());
    aad.extend_from_slice(key_id.as_bytes());
    aad.extend_from_slice(&version.to_le_bytes());
    aad
}

/// What the vault holds for a key the log refers to.
#[derive(Clone, Debug)]
pub enum KeyLookup {
    Found(DataKey),
    /// The key was destroyed at `at`: every value sealed under it is erased.
    Erased {
        at: DateTime<Utc>,
    },
}

/// The result of destroying a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShredOutcome {
    /// The tombstone was written and the key destroyed, durably, now.
    Shredded { at: DateTime<Utc> },
    /// It was erased before; nothing changed.
    AlreadyErased { at: DateTime<Utc> },
}

/// Where data keys are kept. Implementations must make `shred` durable before returning
/// and must never answer a read they could not perform with `Erased`.
pub trait KeyVault: Send + Sync {
    /// The subject's key for `group`, created (durably) if it has none. Fails with
    /// [`PrivacyError::SubjectErased`] if the group was erased.
    fn key_for_write(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
    ) -> Result<DataKey, PrivacyError>;

    /// The key `key_id` of the subject's `group`, or when it was erased. A key the vault
    /// never held is [`PrivacyError::KeyMissing`].
    fn key_for_read(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
        key_id: Uuid,
    ) -> Result<KeyLookup, PrivacyError>;

    /// Destroys the subject's key for `group` and its fingerprints, leaving a tombstone
    /// dated `at`; durable when it returns. Shredding again changes nothing.
    fn shred(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
        at: DateTime<Utc>,
    ) -> Result<ShredOutcome, PrivacyError>;

    /// When the subject's `group` was erased, if it was.
    fn erased_at(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
    ) -> Result<Option<DateTime<Utc>>, PrivacyError>;

    /// The keyed fingerprint of a value, under the vault's fingerprint key.
    fn fingerprint(
        &self,
        kind: FingerprintKind,
        value: &PersonalText,
    ) -> Result<Fingerprint, PrivacyError>;

    /// Records that `subject` has `fingerprint`, in the table that `shred` clears for the
    /// fingerprint's group. Rejected if that group was erased.
    fn record_fingerprint(
        &self,
        subject: SubjectId,
        fingerprint: &Fingerprint,
    ) -> Result<(), PrivacyError>;

    /// The subjects recorded with `fingerprint`, in id order.
    fn subjects_with(&self, fingerprint: &Fingerprint) -> Result<Vec<SubjectId>, PrivacyError>;
}

/// Everything a vault holds, data keys and the fingerprint key in clear, to copy one vault
/// into another (`refledger vault-migrate`). `Debug` shows counts only.
#[cfg(feature = "pg-vault")]
pub struct VaultContents {
    pub(crate) fingerprint_key: Zeroizing<[u8; KEY_SIZE]>,
    pub(crate) keys: Vec<VaultKeyRecord>,
    pub(crate) tombstones: Vec<(SubjectId, ErasureGroup, DateTime<Utc>)>,
    pub(crate) fingerprints: Vec<(SubjectId, Fingerprint)>,
}

#[cfg(feature = "pg-vault")]
pub(crate) struct VaultKeyRecord {
    pub(crate) subject: SubjectId,
    pub(crate) group: ErasureGroup,
    pub(crate) key: DataKey,
    pub(crate) created_at: DateTime<Utc>,
}

#[cfg(feature = "pg-vault")]
impl VaultContents {
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    pub fn tombstones(&self) -> usize {
        self.tombstones.len()
    }

    pub fn fingerprints(&self) -> usize {
        self.fingerprints.len()
    }
}

#[cfg(feature = "pg-vault")]
impl fmt::Debug for VaultContents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultContents")
            .field("keys", &self.keys.len())
            .field("tombstones", &self.tombstones.len())
            .field("fingerprints", &self.fingerprints.len())
            .finish_non_exhaustive()
    }
}

/// A data key in memory. `Debug` shows its id and version only; the bytes are wiped when
/// it is dropped.
#[derive(Clone)]
pub struct DataKey {
    id: Uuid,
    version: u32,
    bytes: Zeroizing<[u8; KEY_SIZE]>,
}

impl DataKey {
    /// A new random key, version 1.
    pub(crate) fn generate() -> Result<DataKey, PrivacyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_SIZE]);
        random_bytes(bytes.as_mut())?;
        Ok(DataKey {
            id: Uuid::new_v4(),
            version: 1,
            bytes,
        })
    }

    pub(crate) fn from_parts(id: Uuid, version: u32, bytes: [u8; KEY_SIZE]) -> DataKey {
        DataKey {
            id,
            version,
            bytes: Zeroizing::new(bytes),
        }
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_SIZE] {
        &self.bytes
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The key that wraps every key in a vault. It comes from a file or an environment
/// variable (32 bytes in standard base64) and is never written to the log or the vault.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_SIZE]>,
}

impl MasterKey {
    /// A new random master key (for `refledger vault init` and tests).
    pub fn generate() -> Result<MasterKey, PrivacyError> {
        let mut bytes = Zeroizing::new([0u8; KEY_SIZE]);
        random_bytes(bytes.as_mut())?;
        Ok(MasterKey { bytes })
    }

    /// Parses 32 bytes in standard base64, surrounding whitespace ignored.
    pub fn from_base64(text: &str) -> Result<MasterKey, PrivacyError> {
        let decoded = Zeroizing::new(BASE64.decode(text.trim()).map_err(|_| {
            PrivacyError::InvalidMasterKey {
                reason: "a master key is 32 bytes in standard base64".to_owned(),
            }
        })?);
        let bytes: [u8; KEY_SIZE] =
            decoded
                .as_slice()
                .try_into()
                .map_err(|_| PrivacyError::InvalidMasterKey {
                    reason: format!(
                        "a master key is {KEY_SIZE} bytes, this one is {}",
                        decoded.len()
                    ),
                })?;
        Ok(MasterKey {
            bytes: Zeroizing::new(bytes),
        })
    }

    /// Reads a master key file holding the key in base64.
    pub fn from_file(path: &Path) -> Result<MasterKey, PrivacyError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|error| {
            PrivacyError::InvalidMasterKey {
                reason: format!("cannot read master key file {}: {error}", path.display()),
            }
        })?);
        MasterKey::from_base64(&text)
    }

    /// Reads the master key from environment variable `name`.
    pub fn from_env(name: &str) -> Result<MasterKey, PrivacyError> {
        let text =
            Zeroizing::new(
                std::env::var(name).map_err(|_| PrivacyError::InvalidMasterKey {
                    reason: format!("environment variable {name} is not set or not UTF-8"),
                })?,
            );
        MasterKey::from_base64(&text)
    }

    /// The key in base64, to hand to an operator once when generated.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(self.bytes.as_ref()))
    }

    /// A public name for this key: the first 8 bytes of HMAC-SHA-256(key, a fixed label),
    /// in hex. It tells which master key wrapped a vault without revealing the key.
    pub fn id(&self) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.bytes.as_ref())
            .expect("HMAC accepts any key length");
        mac.update(b"refledger.master-key-id.v1");
        let tag = mac.finalize().into_bytes();
        crate::hex::encode(&tag[..8])
    }

    /// Encrypts `key` under this master key, bound to `aad`: nonce (12 bytes) followed by
    /// ciphertext and tag.
    pub(crate) fn wrap(&self, key: &[u8; KEY_SIZE], aad: &[u8]) -> Result<Vec<u8>, PrivacyError> {
        let mut nonce = [0u8; 12];
        random_bytes(&mut nonce)?;
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.bytes.as_ref()));
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: key, aad })
            .expect("AES-GCM encrypts a 32-byte key");
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts what [`wrap`](MasterKey::wrap) produced; `None` if it does not open.
    pub(crate) fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Option<Zeroizing<[u8; KEY_SIZE]>> {
        if wrapped.len() < 12 {
            return None;
        }
        let (nonce, sealed) = wrapped.split_at(12);
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.bytes.as_ref()));
        let plain = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
                .ok()?,
        );
        let bytes: [u8; KEY_SIZE] = plain.as_slice().try_into().ok()?;
        Some(Zeroizing::new(bytes))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_keys_parse_from_base64_and_reject_wrong_lengths() {
        let key = MasterKey::generate().unwrap();
        let again = MasterKey::from_base64(&format!(" {}\n", key.to_base64().as_str())).unwrap();
        assert_eq!(key.id(), again.id());
        assert!(MasterKey::from_base64(&BASE64.encode([1u8; 31])).is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(!format!("{key:?}").contains(key.to_base64().as_str()));
    }

    #[test]
    fn wrapping_is_bound_to_its_label_and_its_master_key() {
        let master = MasterKey::generate().unwrap();
        let other = MasterKey::generate().unwrap();
        let data = [5u8; KEY_SIZE];
        let wrapped = master.wrap(&data, b"label").unwrap();
        assert_eq!(*master.unwrap(&wrapped, b"label").unwrap(), data);
        assert!(master.unwrap(&wrapped, b"other").is_none());
        assert!(other.unwrap(&wrapped, b"label").is_none());
        assert_ne!(wrapped, master.wrap(&data, b"label").unwrap());
    }
}
