//! The embedded key vault: a directory of small files beside the log (`DATA/vault/`).
//!
//! ```text
//! vault/
//!   LOCK                                     held (flock) by the one process using the vault
//!   vault.json                               format, master key id, wrapped fingerprint key
//!   keys/<xx>/<subject>.<group>.json         one wrapped data key
//!   tombstones/<xx>/<subject>.<group>.json   when that key was destroyed
//!   fingerprints/<xx>/<subject>.<group>.json the subject's keyed fingerprints of that group
//! ```
//!
//! `<xx>` is the first two hex digits of the subject id, to keep directories small. Every
//! file is written whole to a temporary name, fsynced, renamed into place and its directory
//! fsynced, so a crash leaves the old file or the new one, never half of one.
//!
//! Data keys are wrapped with AES-256-GCM under the master key, bound to the subject,
//! group, key id and version. Erasing writes the tombstone first (durably), then overwrites
//! and deletes the key file: a crash in between leaves a tombstone that wins over the key,
//! and opening the vault finishes the deletion. Overwriting cannot guarantee the old
//! blocks are gone on copy-on-write file systems or SSDs; rotating the master key after
//! erasures makes any such remnant undecryptable once the old master key is destroyed.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{
    data_key_aad, DataKey, KeyLookup, KeyVault, MasterKey, ShredOutcome, FINGERPRINT_KEY_AAD,
    KEY_SIZE,
};
#[cfg(feature = "pg-vault")]
use super::{VaultContents, VaultKeyRecord};
use crate::privacy::fingerprint::{Fingerprint, FingerprintKind};
use crate::privacy::{ErasureGroup, PersonalText, PrivacyError, SubjectId};

/// The vault file format written today.
pub const VAULT_FORMAT: u32 = 1;
/// Most key lookups (keys and tombstones) kept in memory; past it the cache starts over.
pub const KEY_CACHE_ENTRIES_MAX: usize = 262_144;
/// Most fingerprints one subject may have in one group.
pub const FINGERPRINTS_PER_SUBJECT_MAX: usize = 64;
/// Largest vault file read, in bytes; every file the vault writes is far smaller.
pub const VAULT_FILE_SIZE_MAX: u64 = 64 * 1024;

const HEADER_FILE: &str = "vault.json";
const LOCK_FILE: &str = "LOCK";
const KEYS_DIR: &str = "keys";
const TOMBSTONES_DIR: &str = "tombstones";
const FINGERPRINTS_DIR: &str = "fingerprints";

/// The embedded vault. One process opens a directory at a time; within it, every
/// operation runs under one lock, so an erasure and a write for the same subject are
/// ordered: the write either comes first (and its key is then destroyed) or is rejected.
pub struct DirVault {
    dir: PathBuf,
    master: MasterKey,
    _lock: File,
    state: Mutex<State>,
}

struct State {
    fingerprint_key: Zeroizing<[u8; KEY_SIZE]>,
    cache: HashMap<(SubjectId, ErasureGroup), Cached>,
    fingerprints: HashMap<Fingerprint, BTreeSet<SubjectId>>,
}

#[derive(Clone)]
enum Cached {
    Key(DataKey),
    Erased(DateTime<Utc>),
}

/// What master-key rotation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationReport {
    /// Keys re-wrapped by this run (a resumed run counts only the rest).
    pub keys_rewrapped: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: u32,
    master_key_id: String,
    /// Set while a rotation to that master key is under way.
    rotating_to: Option<String>,
    /// The fingerprint HMAC key, wrapped by the master key.
    fingerprint_key: String,
    fingerprint_key_master_id: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    format: u32,
    subject: SubjectId,
    group: ErasureGroup,
    key_id: Uuid,
    key_version: u32,
    created_at: DateTime<Utc>,
    master_key_id: String,
    wrapped: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TombstoneFile {
    format: u32,
    subject: SubjectId,
    group: ErasureGroup,
    erased_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FingerprintFile {
    format: u32,
    subject: SubjectId,
    group: ErasureGroup,
    fingerprints: Vec<Fingerprint>,
}

impl DirVault {
    /// Opens the vault in `dir`, creating it if the directory is missing or empty. Fails if
    /// `master` is not the key the vault was created or last rotated with.
    pub fn open(dir: impl Into<PathBuf>, master: MasterKey) -> Result<DirVault, PrivacyError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|error| {
            PrivacyError::unavailable("cannot create the vault directory", error)
        })?;
        let lock = lock_dir(&dir)?;
        let header = match read_json::<Header>(&dir.join(HEADER_FILE))? {
            Some(header) => header,
            None => create_header(&dir, &master)?,
        };
        if let Some(target) = &header.rotating_to {
            return Err(PrivacyError::VaultCorrupted {
                path: dir.join(HEADER_FILE),
                reason: format!(
                    "a master key rotation from {} to {target} was interrupted; run the \
                     rotation again with both keys",
                    header.master_key_id
                ),
            });
        }
        if header.master_key_id != master.id() {
            return Err(PrivacyError::WrongMasterKey {
                given: master.id(),
                expected: header.master_key_id,
            });
        }
        let wrapped = decode_base64(&dir.join(HEADER_FILE), &header.fingerprint_key)?;
        let fingerprint_key = master
            .unwrap(&wrapped, FINGERPRINT_KEY_AAD)
            .ok_or_else(|| PrivacyError::VaultCorrupted {
                path: dir.join(HEADER_FILE),
                reason: "the fingerprint key does not open under the master key".to_owned(),
            })?;
        let vault = DirVault {
            dir,
            master,
            _lock: lock,
            state: Mutex::new(State {
                fingerprint_key,
                cache: HashMap::new(),
                fingerprints: HashMap::new(),
            }),
        };
        vault.finish_interrupted_shreds()?;
        vault.load_fingerprints()?;
        Ok(vault)
    }

    /// Re-wraps every key of the (closed) vault in `dir` from `old` to `new`, without
    /// touching the log. Safe to run again after a crash: keys already under `new` are
    /// left alone, and the vault opens only with `new` once the run completes.
    pub fn rotate_master_key(
        dir: &Path,
        old: &MasterKey,
        new: &MasterKey,
    ) -> Result<RotationReport, PrivacyError> {
        let _lock = lock_dir(dir)?;
        let header_path = dir.join(HEADER_FILE);
        let mut header =
            read_json::<Header>(&header_path)?.ok_or_else(|| PrivacyError::VaultUnavailable {
                reason: format!("no vault in {}", dir.display()),
            })?;
        let (old_id, new_id) = (old.id(), new.id());
        if header.master_key_id != old_id {
            return Err(PrivacyError::WrongMasterKey {
                given: old_id,
                expected: header.master_key_id,
            });
        }
        if let Some(target) = header
            .rotating_to
            .as_ref()
            .filter(|target| **target != new_id)
        {
            return Err(PrivacyError::VaultCorrupted {
                path: header_path,
                reason: format!(
                    "an interrupted rotation to master key {target} must be finished with                      that key, not {new_id}"
                ),
            });
        }
        // Announce the rotation first: from here on the vault refuses to open until the
        // rotation is complete, so no key is wrapped by a mix nobody knows about.
        header.rotating_to = Some(new_id.clone());
        write_json(&header_path, &header)?;

        let mut keys_rewrapped = 0;
        for path in list_files(&dir.join(KEYS_DIR))? {
            let Some(mut file) = read_json::<KeyFile>(&path)? else {
                continue;
            };
            if file.master_key_id == new_id {
                continue;
            }
            if file.master_key_id != old_id {
                return Err(PrivacyError::VaultCorrupted {
                    path,
                    reason: format!("wrapped by unknown master key {}", file.master_key_id),
                });
            }
            let aad = data_key_aad(file.subject, file.group, file.key_id, file.key_version);
            let wrapped = decode_base64(&path, &file.wrapped)?;
            let bytes = old
                .unwrap(&wrapped, &aad)
                .ok_or_else(|| PrivacyError::VaultCorrupted {
                    path: path.clone(),
                    reason: "the key does not open under the old master key".to_owned(),
                })?;
            file.wrapped = BASE64.encode(new.wrap(&bytes, &aad)?);
            file.master_key_id = new_id.clone();
            write_json(&path, &file)?;
            keys_rewrapped += 1;
        }

        if header.fingerprint_key_master_id != new_id {
            let wrapped = decode_base64(&header_path, &header.fingerprint_key)?;
            let bytes = old.unwrap(&wrapped, FINGERPRINT_KEY_AAD).ok_or_else(|| {
                PrivacyError::VaultCorrupted {
                    path: header_path.clone(),
                    reason: "the fingerprint key does not open under the old master key".to_owned(),
                }
            })?;
            header.fingerprint_key = BASE64.encode(new.wrap(&bytes, FINGERPRINT_KEY_AAD)?);
            header.fingerprint_key_master_id = new_id.clone();
        }
        header.master_key_id = new_id;
        header.rotating_to = None;
        write_json(&header_path, &header)?;
        Ok(RotationReport { keys_rewrapped })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything the vault holds, keys unwrapped, to copy it into another vault
    /// (`refledger vault-migrate`). Reads the disk, not the cache.
    #[cfg(feature = "pg-vault")]
    pub fn contents(&self) -> Result<VaultContents, PrivacyError> {
        let state = self.lock();
        self.check_reachable()?;
        let mut contents = VaultContents {
            fingerprint_key: state.fingerprint_key.clone(),
            keys: Vec::new(),
            tombstones: Vec::new(),
            fingerprints: Vec::new(),
        };
        for path in list_files(&self.dir.join(TOMBSTONES_DIR))? {
            let Some(file) = read_json::<TombstoneFile>(&path)? else {
                continue;
            };
            check_names(
                &path,
                (file.format, file.subject, file.group),
                (file.subject, file.group),
            )?;
            contents
                .tombstones
                .push((file.subject, file.group, file.erased_at));
        }
        for path in list_files(&self.dir.join(KEYS_DIR))? {
            let Some(file) = read_json::<KeyFile>(&path)? else {
                continue;
            };
            check_names(
                &path,
                (file.format, file.subject, file.group),
                (file.subject, file.group),
            )?;
            if path != self.path(KEYS_DIR, file.subject, file.group) {
                return Err(PrivacyError::VaultCorrupted {
                    path,
                    reason: format!(
                        "the key file names {} of subject {}",
                        file.group, file.subject
                    ),
                });
            }
            let key = self.unwrap_key_file(&path, &file)?;
            contents.keys.push(VaultKeyRecord {
                subject: file.subject,
                group: file.group,
                key,
                created_at: file.created_at,
            });
        }
        for path in list_files(&self.dir.join(FINGERPRINTS_DIR))? {
            let Some(file) = read_json::<FingerprintFile>(&path)? else {
                continue;
            };
            for fingerprint in file.fingerprints {
                contents.fingerprints.push((file.subject, fingerprint));
            }
        }
        Ok(contents)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("vault lock poisoned")
    }

    /// Fails if the vault directory is gone or unreadable, so that a missing file is
    /// never mistaken for a missing key.
    fn check_reachable(&self) -> Result<(), PrivacyError> {
        match fs::metadata(self.dir.join(HEADER_FILE)) {
            Ok(_) => Ok(()),
            Err(error) => Err(PrivacyError::unavailable("cannot reach the vault", error)),
        }
    }

    fn path(&self, kind: &str, subject: SubjectId, group: ErasureGroup) -> PathBuf {
        let id = subject.as_uuid().simple().to_string();
        self.dir
            .join(kind)
            .join(&id[..2])
            .join(format!("{id}.{group}.json"))
    }

    /// The lookup for a subject's group, from the cache or the disk (tombstone first).
    fn lookup(
        &self,
        state: &mut State,
        subject: SubjectId,
        group: ErasureGroup,
    ) -> Result<Option<Cached>, PrivacyError> {
        if let Some(cached) = state.cache.get(&(subject, group)) {
            return Ok(Some(cached.clone()));
        }
        self.check_reachable()?;
        let tombstone_path = self.path(TOMBSTONES_DIR, subject, group);
        let found = if let Some(tombstone) = read_json::<TombstoneFile>(&tombstone_path)? {
            check_names(
                &tombstone_path,
                (tombstone.format, tombstone.subject, tombstone.group),
                (subject, group),
            )?;
            Some(Cached::Erased(tombstone.erased_at))
        } else {
            let path = self.path(KEYS_DIR, subject, group);
            match read_json::<KeyFile>(&path)? {
                Some(file) => {
                    check_names(
                        &path,
                        (file.format, file.subject, file.group),
                        (subject, group),
                    )?;
                    Some(Cached::Key(self.unwrap_key_file(&path, &file)?))
                }
                None => None,
            }
        };
        if let Some(found) = &found {
            remember(state, subject, group, found.clone());
        }
        Ok(found)
    }

    fn unwrap_key_file(&self, path: &Path, file: &KeyFile) -> Result<DataKey, PrivacyError> {
        let corrupted = |reason: String| PrivacyError::VaultCorrupted {
            path: path.to_owned(),
            reason,
        };
        if file.master_key_id != self.master.id() {
            return Err(corrupted(format!(
                "wrapped by master key {}, not {}",
                file.master_key_id,
                self.master.id()
            )));
        }
        let aad = data_key_aad(file.subject, file.group, file.key_id, file.key_version);
        let wrapped = decode_base64(path, &file.wrapped)?;
        let bytes = self
            .master
            .unwrap(&wrapped, &aad)
            .ok_or_else(|| corrupted("the key does not open under the master key".to_owned()))?;
        Ok(DataKey::from_parts(file.key_id, file.key_version, *bytes))
    }

    /// Completes erasures a crash interrupted: a tombstone beside a key or fingerprint
    /// file means the deletion did not finish.
    fn finish_interrupted_shreds(&self) -> Result<(), PrivacyError> {
        for path in list_files(&self.dir.join(TOMBSTONES_DIR))? {
            let Some(tombstone) = read_json::<TombstoneFile>(&path)? else {
                continue;
            };
            // Never delete a key on the word of a tombstone that is not where it says.
            if path != self.path(TOMBSTONES_DIR, tombstone.subject, tombstone.group) {
                return Err(PrivacyError::VaultCorrupted {
                    path,
                    reason: format!(
                        "the tombstone names {} of subject {}",
                        tombstone.group, tombstone.subject
                    ),
                });
            }
            for kind in [KEYS_DIR, FINGERPRINTS_DIR] {
                destroy_file(&self.path(kind, tombstone.subject, tombstone.group))?;
            }
        }
        Ok(())
    }

    fn load_fingerprints(&self) -> Result<(), PrivacyError> {
        let mut state = self.lock();
        for path in list_files(&self.dir.join(FINGERPRINTS_DIR))? {
            let Some(file) = read_json::<FingerprintFile>(&path)? else {
                continue;
            };
            for fingerprint in file.fingerprints {
                state
                    .fingerprints
                    .entry(fingerprint)
                    .or_default()
                    .insert(file.subject);
            }
        }
        Ok(())
    }
}

impl KeyVault for DirVault {
    fn key_for_write(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
    ) -> Result<DataKey, PrivacyError> {
        let mut state = self.lock();
        match self.lookup(&mut state, subject, group)? {
            Some(Cached::Key(key)) => Ok(key),
            Some(Cached::Erased(at)) => Err(PrivacyError::SubjectErased { subject, group, at }),
            None => {
                let key = DataKey::generate()?;
                let aad = data_key_aad(subject, group, key.id(), key.version());
                let file = KeyFile {
                    format: VAULT_FORMAT,
                    subject,
                    group,
                    key_id: key.id(),
                    key_version: key.version(),
                    created_at: Utc::now(),
                    master_key_id: self.master.id(),
                    wrapped: BASE64.encode(self.master.wrap(key.bytes(), &aad)?),
                };
                let path = self.path(KEYS_DIR, subject, group);
                // Durable before anything is sealed under it: a value in the log under a
                // key the vault lost would read as neither a value nor an erasure.
                write_json_creating_dirs(&self.dir, &path, &file)?;
                remember(&mut state, subject, group, Cached::Key(key.clone()));
                Ok(key)
            }
        }
    }

    fn key_for_read(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
        key_id: Uuid,
    ) -> Result<KeyLookup, PrivacyError> {
        let mut state = self.lock();
        match self.lookup(&mut state, subject, group)? {
            Some(Cached::Key(key)) if key.id() == key_id => Ok(KeyLookup::Found(key)),
            Some(Cached::Erased(at)) => Ok(KeyLookup::Erased { at }),
            Some(Cached::Key(_)) | None => Err(PrivacyError::KeyMissing {
                subject,
                group,
                key_id,
            }),
        }
    }

    fn shred(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
        at: DateTime<Utc>,
    ) -> Result<ShredOutcome, PrivacyError> {
        let mut state = self.lock();
        if let Some(Cached::Erased(before)) = self.lookup(&mut state, subject, group)? {
            return Ok(ShredOutcome::AlreadyErased { at: before });
        }
        let tombstone = TombstoneFile {
            format: VAULT_FORMAT,
            subject,
            group,
            erased_at: at,
        };
        // The tombstone first: once it is durable the value reads as erased and no write
        // can create a new key, whatever happens to the deletions below.
        write_json_creating_dirs(
            &self.dir,
            &self.path(TOMBSTONES_DIR, subject, group),
            &tombstone,
        )?;
        remember(&mut state, subject, group, Cached::Erased(at));
        destroy_file(&self.path(KEYS_DIR, subject, group))?;
        let fingerprint_path = self.path(FINGERPRINTS_DIR, subject, group);
        if let Some(file) = read_json::<FingerprintFile>(&fingerprint_path)? {
            for fingerprint in &file.fingerprints {
                if let Some(subjects) = state.fingerprints.get_mut(fingerprint) {
                    subjects.remove(&subject);
                    if subjects.is_empty() {
                        state.fingerprints.remove(fingerprint);
                    }
                }
            }
        }
        destroy_file(&fingerprint_path)?;
        Ok(ShredOutcome::Shredded { at })
    }

    fn erased_at(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
    ) -> Result<Option<DateTime<Utc>>, PrivacyError> {
        let mut state = self.lock();
        Ok(match self.lookup(&mut state, subject, group)? {
            Some(Cached::Erased(at)) => Some(at),
            _ => None,
        })
    }

    fn fingerprint(
        &self,
        kind: FingerprintKind,
        value: &PersonalText,
    ) -> Result<Fingerprint, PrivacyError> {
        let state = self.lock();
        Ok(Fingerprint::compute(
            state.fingerprint_key.as_ref(),
            kind,
            value,
        ))
    }

    fn record_fingerprint(
        &self,
        subject: SubjectId,
        fingerprint: &Fingerprint,
    ) -> Result<(), PrivacyError> {
        let group = fingerprint.kind.group();
        let mut state = self.lock();
        if let Some(Cached::Erased(at)) = self.lookup(&mut state, subject, group)? {
            return Err(PrivacyError::SubjectErased { subject, group, at });
        }
        let path = self.path(FINGERPRINTS_DIR, subject, group);
        let mut file = read_json::<FingerprintFile>(&path)?.unwrap_or(FingerprintFile {
            format: VAULT_FORMAT,
            subject,
            group,
            fingerprints: Vec::new(),
        });
        if file.fingerprints.contains(fingerprint) {
            return Ok(());
        }
        if file.fingerprints.len() >= FINGERPRINTS_PER_SUBJECT_MAX {
            return Err(PrivacyError::LimitExceeded {
                limit: "fingerprints_per_subject_max",
                max: FINGERPRINTS_PER_SUBJECT_MAX,
                actual: file.fingerprints.len() + 1,
            });
        }
        file.fingerprints.push(*fingerprint);
        write_json_creating_dirs(&self.dir, &path, &file)?;
        state
            .fingerprints
            .entry(*fingerprint)
            .or_default()
            .insert(subject);
        Ok(())
    }

    fn subjects_with(&self, fingerprint: &Fingerprint) -> Result<Vec<SubjectId>, PrivacyError> {
        self.check_reachable()?;
        let state = self.lock();
        Ok(state
            .fingerprints
            .get(fingerprint)
            .map(|subjects| subjects.iter().copied().collect())
            .unwrap_or_default())
    }
}

/// A vault file must be of a known format and name the subject and group its path does:
/// a file copied to another name is corruption, not someone else's key or erasure.
fn check_names(
    path: &Path,
    (format, subject, group): (u32, SubjectId, ErasureGroup),
    expected: (SubjectId, ErasureGroup),
) -> Result<(), PrivacyError> {
    if format != VAULT_FORMAT {
        return Err(PrivacyError::VaultCorrupted {
            path: path.to_owned(),
            reason: format!("unknown vault file format {format}"),
        });
    }
    if (subject, group) != expected {
        return Err(PrivacyError::VaultCorrupted {
            path: path.to_owned(),
            reason: format!("the file names {group} of subject {subject}"),
        });
    }
    Ok(())
}

fn remember(state: &mut State, subject: SubjectId, group: ErasureGroup, entry: Cached) {
    if state.cache.len() >= KEY_CACHE_ENTRIES_MAX {
        state.cache.clear();
    }
    state.cache.insert((subject, group), entry);
}

fn create_header(dir: &Path, master: &MasterKey) -> Result<Header, PrivacyError> {
    let not_empty = fs::read_dir(dir)
        .map_err(|error| PrivacyError::unavailable("cannot list the vault directory", error))?
        .filter_map(Result::ok)
        .any(|entry| entry.file_name() != LOCK_FILE);
    if not_empty {
        // A vault directory with files but no header lost its header: creating a new one
        // would give every existing key a master key that cannot open it.
        return Err(PrivacyError::VaultCorrupted {
            path: dir.join(HEADER_FILE),
            reason: "the vault directory holds files but no vault.json".to_owned(),
        });
    }
    let mut fingerprint_key = Zeroizing::new([0u8; KEY_SIZE]);
    crate::privacy::random_bytes(fingerprint_key.as_mut())?;
    let header = Header {
        format: VAULT_FORMAT,
        master_key_id: master.id(),
        rotating_to: None,
        fingerprint_key: BASE64.encode(master.wrap(&fingerprint_key, FINGERPRINT_KEY_AAD)?),
        fingerprint_key_master_id: master.id(),
    };
    write_json(&dir.join(HEADER_FILE), &header)?;
    Ok(header)
}

fn lock_dir(dir: &Path) -> Result<File, PrivacyError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(|error| PrivacyError::unavailable("cannot open the vault lock file", error))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(PrivacyError::VaultLocked {
            path: dir.to_owned(),
        }),
        Err(fs::TryLockError::Error(error)) => {
            Err(PrivacyError::unavailable("cannot lock the vault", error))
        }
    }
}

fn decode_base64(path: &Path, text: &str) -> Result<Vec<u8>, PrivacyError> {
    BASE64
        .decode(text)
        .map_err(|_| PrivacyError::VaultCorrupted {
            path: path.to_owned(),
            reason: "a wrapped key is not base64".to_owned(),
        })
}

/// Reads a vault file; `None` if it does not exist.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, PrivacyError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(PrivacyError::unavailable(
                &format!("cannot read {}", path.display()),
                error,
            ))
        }
    };
    let size = file
        .metadata()
        .map_err(|error| PrivacyError::unavailable("cannot stat a vault file", error))?
        .len();
    if size > VAULT_FILE_SIZE_MAX {
        return Err(PrivacyError::VaultCorrupted {
            path: path.to_owned(),
            reason: format!("{size} bytes, more than vault_file_size_max {VAULT_FILE_SIZE_MAX}"),
        });
    }
    let bytes = fs::read(path).map_err(|error| {
        PrivacyError::unavailable(&format!("cannot read {}", path.display()), error)
    })?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| PrivacyError::VaultCorrupted {
            path: path.to_owned(),
            reason: error.to_string(),
        })
}

fn write_json_creating_dirs<T: Serialize>(
    root: &Path,
    path: &Path,
    value: &T,
) -> Result<(), PrivacyError> {
    let shard = path.parent().expect("vault files are in a shard");
    if !shard.exists() {
        fs::create_dir_all(shard)
            .map_err(|error| PrivacyError::unavailable("cannot create a vault directory", error))?;
        // The new directories must survive a crash too.
        sync_dir(shard.parent().unwrap_or(root))?;
        sync_dir(root)?;
    }
    write_json(path, value)
}

/// Writes `value` to `path` atomically and durably: temporary file, fsync, rename, fsync
/// of the directory.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), PrivacyError> {
    let bytes = serde_json::to_vec(value).expect("vault records serialise");
    let temporary = path.with_extension("json.tmp");
    crate::durable::replace_file(path, &temporary, |out| out.write_all(&bytes)).map_err(|error| {
        PrivacyError::unavailable(&format!("cannot write {}", path.display()), error)
    })
}

/// Overwrites a file with zeros, syncs, deletes it and syncs its directory. A file that
/// does not exist is fine: destroying twice is destroying once.
fn destroy_file(path: &Path) -> Result<(), PrivacyError> {
    let io =
        |error| PrivacyError::unavailable(&format!("cannot destroy {}", path.display()), error);
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io(error)),
    };
    let size = file.metadata().map_err(io)?.len();
    let zeros = vec![0u8; usize::try_from(size.min(VAULT_FILE_SIZE_MAX)).expect("small")];
    file.write_all(&zeros).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::remove_file(path).map_err(io)?;
    sync_dir(path.parent().expect("vault files are in a shard"))
}

fn sync_dir(dir: &Path) -> Result<(), PrivacyError> {
    crate::durable::sync_dir(dir).map_err(|error| {
        PrivacyError::unavailable(&format!("cannot sync {}", dir.display()), error)
    })
}

/// Every `.json` file in the shards below `root` (none if `root` does not exist yet).
fn list_files(root: &Path) -> Result<Vec<PathBuf>, PrivacyError> {
    let io = |error| PrivacyError::unavailable(&format!("cannot list {}", root.display()), error);
    let shards = match fs::read_dir(root) {
        Ok(shards) => shards,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io(error)),
    };
    let mut files = Vec::new();
    for shard in shards {
        let shard = shard.map_err(io)?.path();
        if !shard.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&shard).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "json")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
