//! A vault held in memory: for tests, and for a process whose log is in memory too. Its
//! keys die with the process, so it must never sit beside a durable log.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DataKey, KeyLookup, KeyVault, ShredOutcome, KEY_SIZE};
use crate::privacy::fingerprint::{Fingerprint, FingerprintKind};
use crate::privacy::{random_bytes, ErasureGroup, PersonalText, PrivacyError, SubjectId};

/// An in-memory [`KeyVault`] with the same rules as the directory vault. It can be made
/// unreachable, to test that an outage is never read as an erasure.
pub struct MemoryVault {
    state: Mutex<State>,
    unavailable: AtomicBool,
}

struct State {
    fingerprint_key: [u8; KEY_SIZE],
    keys: HashMap<(SubjectId, ErasureGroup), DataKey>,
    tombstones: HashMap<(SubjectId, ErasureGroup), DateTime<Utc>>,
    fingerprints: HashMap<(SubjectId, ErasureGroup), BTreeSet<Fingerprint>>,
}

impl MemoryVault {
    pub fn new() -> Result<MemoryVault, PrivacyError> {
        let mut fingerprint_key = [0u8; KEY_SIZE];
        random_bytes(&mut fingerprint_key)?;
        Ok(MemoryVault {
            state: Mutex::new(State {
                fingerprint_key,
                keys: HashMap::new(),
                tombstones: HashMap::new(),
                fingerprints: HashMap::new(),
            }),
            unavailable: AtomicBool::new(false),
        })
    }

    /// Makes every operation fail with [`PrivacyError::VaultUnavailable`] (or work again).
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, PrivacyError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(PrivacyError::VaultUnavailable {
                reason: "the in-memory vault was made unavailable".to_owned(),
            });
        }
        Ok(self.state.lock().expect("memory vault lock poisoned"))
    }
}

impl KeyVault for MemoryVault {
    fn key_for_write(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
    ) -> Result<DataKey, PrivacyError> {
        let mut state = self.lock()?;
        if let Some(at) = state.tombstones.get(&(subject, group)) {
            return Err(PrivacyError::SubjectErased {
                subject,
                group,
                at: *at,
            });
        }
        if let Some(key) = state.keys.get(&(subject, group)) {
            return Ok(key.clone());
        }
        let key = DataKey::generate()?;
        state.keys.insert((subject, group), key.clone());
        Ok(key)
    }

    fn key_for_read(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
        key_id: Uuid,
    ) -> Result<KeyLookup, PrivacyError> {
        let state = self.lock()?;
        if let Some(at) = state.tombstones.get(&(subject, group)) {
            return Ok(KeyLookup::Erased { at: *at });
        }
        match state.keys.get(&(subject, group)) {
            Some(key) if key.id() == key_id => Ok(KeyLookup::Found(key.clone())),
            _ => Err(PrivacyError::KeyMissing {
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
        let mut state = self.lock()?;
        if let Some(before) = state.tombstones.get(&(subject, group)) {
            return Ok(ShredOutcome::AlreadyErased { at: *before });
        }
        state.tombstones.insert((subject, group), at);
        state.keys.remove(&(subject, group));
        state.fingerprints.remove(&(subject, group));
        Ok(ShredOutcome::Shredded { at })
    }

    fn erased_at(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
    ) -> Result<Option<DateTime<Utc>>, PrivacyError> {
        Ok(self.lock()?.tombstones.get(&(subject, group)).copied())
    }

    fn fingerprint(
        &self,
        kind: FingerprintKind,
        value: &PersonalText,
    ) -> Result<Fingerprint, PrivacyError> {
        let state = self.lock()?;
        Ok(Fingerprint::compute(&state.fingerprint_key, kind, value))
    }

    fn record_fingerprint(
        &self,
        subject: SubjectId,
        fingerprint: &Fingerprint,
    ) -> Result<(), PrivacyError> {
        let group = fingerprint.kind.group();
        let mut state = self.lock()?;
        if let Some(at) = state.tombstones.get(&(subject, group)) {
            return Err(PrivacyError::SubjectErased {
                subject,
                group,
                at: *at,
            });
        }
        state
            .fingerprints
            .entry((subject, group))
            .or_default()
            .insert(*fingerprint);
        Ok(())
    }

    fn subjects_with(&self, fingerprint: &Fingerprint) -> Result<Vec<SubjectId>, PrivacyError> {
        let state = self.lock()?;
        let mut subjects: Vec<SubjectId> = state
            .fingerprints
            .iter()
            .filter(|(_, set)| set.contains(fingerprint))
            .map(|((subject, _), _)| *subject)
            .collect();
        subjects.sort();
        subjects.dedup();
        Ok(subjects)
    }
}
