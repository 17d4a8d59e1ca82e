//! The privacy promises, tested end to end against the directory vault and the in-memory
//! store: binding, no resurrection, double erasure, concurrent erase-and-write, master-key
//! rotation, retention and legal hold under a simulated clock, vault outage, fingerprints,
//! and the canary scan over log bytes, vault files and exports with the chain verified.

#[cfg(feature = "pg-vault")]
mod pg;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64_URL};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use uuid::Uuid;

use super::erasure::{erase_subject, run_shredder};
use super::events::{
    privacy_stream, ErasureRequested, HoldReason, LegalBasis, LegalHoldLifted, LegalHoldPlaced,
    PrivacyEvent, PRIVACY_SCHEMA_VERSION,
};
use super::export::export_subject;
use super::fingerprint::{Fingerprint, FingerprintKind};
use super::retention::{PrivacyState, RetentionPolicy};
use super::vault::{DataKey, KeyLookup, ShredOutcome};
use super::*;
use crate::store::memory::MemoryStore;
use crate::store::{
    codec, Digest, EventMetadata, EventStore, EventType, ExpectedRevision, NewEvent, Position,
    RecordedEvent, StreamName, PAGE_SIZE_MAX,
};

fn day(days: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000, 0).unwrap() + Duration::days(days)
}

fn open_vault(dir: &Path, master: &MasterKey) -> DirVault {
    DirVault::open(dir.join("vault"), master.clone()).unwrap()
}

fn new_vault() -> (TempDir, MasterKey, DirVault) {
    let dir = TempDir::new().unwrap();
    let master = MasterKey::generate().unwrap();
    let vault = open_vault(dir.path(), &master);
    (dir, master, vault)
}

/// A durable vault under test. `open` is a new handle on the same storage: a restart of
/// the one instance, or, for a shared vault, another instance. The directory vault's
/// handle must be dropped before the next is opened (it locks its directory).
trait Storage {
    fn open(&self) -> Box<dyn KeyVault>;
    /// Stored keys (files, rows) of `subject`'s `group`.
    fn keys_stored(&self, subject: SubjectId, group: ErasureGroup) -> usize;
}

struct DirStorage {
    dir: TempDir,
    master: MasterKey,
}

impl DirStorage {
    fn new() -> DirStorage {
        DirStorage {
            dir: TempDir::new().unwrap(),
            master: MasterKey::generate().unwrap(),
        }
    }
}

impl Storage for DirStorage {
    fn open(&self) -> Box<dyn KeyVault> {
        Box::new(open_vault(self.dir.path(), &self.master))
    }

    fn keys_stored(&self, subject: SubjectId, group: ErasureGroup) -> usize {
        let name = format!("{}.{group}.json", subject.as_uuid().simple());
        let keys = self.dir.path().join("vault/keys");
        if !keys.exists() {
            return 0;
        }
        files_below(&keys)
            .iter()
            .filter(|path| path.file_name().is_some_and(|file| file == name.as_str()))
            .count()
    }
}

fn subject(n: u128) -> SubjectId {
    SubjectId::new(Uuid::from_u128(0x5eed_0000 + n))
}

fn context(event_id: Uuid, event_type: &str, field: &str, subject: SubjectId) -> SealContext {
    let group = match field {
        "legal_name" | "payout_details" | "payment_fingerprint" => ErasureGroup::Payout,
        _ => ErasureGroup::Profile,
    };
    SealContext {
        event_id,
        event_type: EventType::parse(event_type).unwrap(),
        field: FieldName::parse(field).unwrap(),
        subject,
        group,
    }
}

fn text(value: &str) -> PersonalText {
    PersonalText::new(value).unwrap()
}

fn plain(opened: Opened) -> String {
    match opened {
        Opened::Plain(text) => text.expose().to_owned(),
        Opened::Erased { at } => panic!("expected a value, found erased at {at}"),
    }
}

#[test]
fn a_sealed_value_opens_where_it_was_sealed_and_two_seals_differ() {
    let (_dir, _master, vault) = new_vault();
    let at = context(Uuid::new_v4(), "AccountOpened", "email", subject(1));
    let first = seal(&vault, &at, &text("ada@example.com")).unwrap();
    let second = seal(&vault, &at, &text("ada@example.com")).unwrap();
    assert_eq!(plain(open(&vault, &at, &first).unwrap()), "ada@example.com");
    assert_eq!(
        first.key_id(),
        second.key_id(),
        "one key per subject and group"
    );
    assert_ne!(
        serde_json::to_value(&first).unwrap()["nonce"],
        serde_json::to_value(&second).unwrap()["nonce"]
    );
    assert_ne!(
        serde_json::to_value(&first).unwrap()["ct"],
        serde_json::to_value(&second).unwrap()["ct"]
    );
    let payout = context(Uuid::new_v4(), "PayoutDetailsSet", "legal_name", subject(1));
    let legal = seal(&vault, &payout, &text("Ada Lovelace")).unwrap();
    assert_ne!(legal.key_id(), first.key_id(), "one key per erasure group");
}

/// Rewrites one envelope field in JSON and parses it back.
fn tampered(sealed: &Sealed, edit: impl FnOnce(&mut serde_json::Value)) -> Option<Sealed> {
    let mut json = serde_json::to_value(sealed).unwrap();
    edit(&mut json);
    serde_json::from_value(json).ok()
}

fn flip_bit_in_base64(json: &mut serde_json::Value, key: &str, bit: usize) {
    let mut bytes = BASE64.decode(json[key].as_str().unwrap()).unwrap();
    let bit = bit % (bytes.len() * 8);
    bytes[bit / 8] ^= 1 << (bit % 8);
    json[key] = BASE64.encode(bytes).into();
}

#[test]
fn ciphertext_moved_or_altered_fails_to_open() {
    let (_dir, _master, vault) = new_vault();
    let (alice, bob) = (subject(1), subject(2));
    // Bob has keys of his own, so a moved value meets a real key of his.
    seal(
        &vault,
        &context(Uuid::new_v4(), "AccountOpened", "email", bob),
        &text("bob@example.com"),
    )
    .unwrap();
    let mut runner = TestRunner::new(Config::with_cases(64));
    runner
        .run(
            &(".{0,200}", any::<usize>(), any::<usize>()),
            |(value, ct_bit, nonce_bit)| {
                let event_id = Uuid::new_v4();
                let home = context(event_id, "AccountOpened", "email", alice);
                let sealed = seal(&vault, &home, &text(&value)).unwrap();
                prop_assert_eq!(plain(open(&vault, &home, &sealed).unwrap()), value);

                let elsewhere = [
                    context(event_id, "AccountOpened", "name", alice),
                    context(Uuid::new_v4(), "AccountOpened", "email", alice),
                    context(event_id, "EmailChanged", "email", alice),
                    context(event_id, "AccountOpened", "email", bob),
                ];
                for other in &elsewhere {
                    let error = open(&vault, other, &sealed).unwrap_err();
                    prop_assert!(matches!(error, PrivacyError::Unauthentic { .. }), "{error}");
                }
                // Relabelled to Bob, it meets Bob's key and context, and still fails.
                let relabelled = tampered(&sealed, |json| {
                    json["sub"] = bob.to_string().into();
                })
                .unwrap();
                let bob_home = context(event_id, "AccountOpened", "email", bob);
                prop_assert!(open(&vault, &bob_home, &relabelled).is_err());

                for (key, bit) in [("ct", ct_bit), ("nonce", nonce_bit)] {
                    let flipped =
                        tampered(&sealed, |json| flip_bit_in_base64(json, key, bit)).unwrap();
                    let error = open(&vault, &home, &flipped).unwrap_err();
                    prop_assert!(matches!(error, PrivacyError::Unauthentic { .. }), "{error}");
                }
                let other_version = tampered(&sealed, |json| json["kver"] = 2.into()).unwrap();
                prop_assert!(open(&vault, &home, &other_version).is_err());
                let other_key = tampered(&sealed, |json| {
                    json["kid"] = Uuid::new_v4().to_string().into()
                })
                .unwrap();
                let error = open(&vault, &home, &other_key).unwrap_err();
                prop_assert!(matches!(error, PrivacyError::KeyMissing { .. }), "{error}");
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn an_erased_subject_is_never_given_a_new_key() {
    check_an_erased_subject_is_never_given_a_new_key(&DirStorage::new());
}

fn check_an_erased_subject_is_never_given_a_new_key(storage: &dyn Storage) {
    let alice = subject(1);
    let at = context(Uuid::new_v4(), "AccountOpened", "email", alice);
    let sealed = {
        let vault = storage.open();
        let sealed = seal(vault.as_ref(), &at, &text("ada@example.com")).unwrap();
        let fingerprint = vault
            .fingerprint(FingerprintKind::Email, &text("ada@example.com"))
            .unwrap();
        vault.record_fingerprint(alice, &fingerprint).unwrap();
        assert_eq!(storage.keys_stored(alice, ErasureGroup::Profile), 1);
        assert_eq!(
            vault.shred(alice, ErasureGroup::Profile, day(0)).unwrap(),
            ShredOutcome::Shredded { at: day(0) }
        );
        sealed
    };
    // Reopened, as after a restart: the tombstone is stored, not only in memory.
    let vault = storage.open();
    assert_eq!(
        open(vault.as_ref(), &at, &sealed).unwrap(),
        Opened::Erased { at: day(0) }
    );
    let error = seal(vault.as_ref(), &at, &text("ada@example.com")).unwrap_err();
    assert!(
        matches!(error, PrivacyError::SubjectErased { .. }),
        "{error}"
    );
    assert_eq!(error.code(), "subject_erased");
    let fingerprint = vault
        .fingerprint(FingerprintKind::Email, &text("ada@example.com"))
        .unwrap();
    assert!(vault.subjects_with(&fingerprint).unwrap().is_empty());
    assert!(vault.record_fingerprint(alice, &fingerprint).is_err());
    assert_eq!(storage.keys_stored(alice, ErasureGroup::Profile), 0);
    // The payout group was not erased and still takes writes.
    let payout = context(Uuid::new_v4(), "PayoutDetailsSet", "legal_name", alice);
    assert!(seal(vault.as_ref(), &payout, &text("Ada Lovelace")).is_ok());
    assert_eq!(storage.keys_stored(alice, ErasureGroup::Payout), 1);
}

#[test]
fn erasing_twice_changes_nothing() {
    check_erasing_twice_changes_nothing(&DirStorage::new());
}

fn check_erasing_twice_changes_nothing(storage: &dyn Storage) {
    let vault = storage.open();
    let vault = vault.as_ref();
    let alice = subject(1);
    let policy = RetentionPolicy::default();
    let mut state = PrivacyState::default();
    let first = erase_subject(vault, &state, alice, Uuid::from_u128(1), day(0), &policy)
        .unwrap()
        .unwrap();
    state.apply(&first);
    let again = erase_subject(vault, &state, alice, Uuid::from_u128(2), day(1), &policy).unwrap();
    assert_eq!(again, None);
    assert_eq!(
        vault.shred(alice, ErasureGroup::Profile, day(2)).unwrap(),
        ShredOutcome::AlreadyErased { at: day(0) }
    );
    assert_eq!(
        vault.erased_at(alice, ErasureGroup::Profile).unwrap(),
        Some(day(0))
    );
}

#[test]
fn a_write_racing_an_erasure_is_either_erased_with_it_or_rejected() {
    for round in 0..8u128 {
        let storage = DirStorage::new();
        let vault: Arc<dyn KeyVault> = Arc::from(storage.open());
        check_a_write_racing_an_erasure(&vault, &vault, subject(100 + round));
    }
}

/// Writers on `writing` race one erasure on `erasing` (the same vault, or two instances
/// of a shared one): every write either came first and is erased with the key, or is
/// rejected.
fn check_a_write_racing_an_erasure(
    writing: &Arc<dyn KeyVault>,
    erasing: &Arc<dyn KeyVault>,
    alice: SubjectId,
) {
    let results: Vec<Result<(SealContext, Sealed), PrivacyError>> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let vault = Arc::clone(writing);
                scope.spawn(move || {
                    (0..25)
                        .map(|_| {
                            let at = context(Uuid::new_v4(), "AccountOpened", "email", alice);
                            seal(vault.as_ref(), &at, &text("race@example.com"))
                                .map(|sealed| (at, sealed))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let eraser = {
            let vault = Arc::clone(erasing);
            scope.spawn(move || vault.shred(alice, ErasureGroup::Profile, day(0)).unwrap())
        };
        assert_eq!(
            eraser.join().unwrap(),
            ShredOutcome::Shredded { at: day(0) }
        );
        writers
            .into_iter()
            .flat_map(|writer| writer.join().unwrap())
            .collect()
    });
    // Another instance may serve the key from its cache until the shred's notification
    // reaches it (the shared vault's documented bound); then it must read the erasure.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while writing
        .erased_at(alice, ErasureGroup::Profile)
        .unwrap()
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the erasure never reached the writer"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    for result in results {
        match result {
            // Written before the erasure: the value is gone with the key, on both.
            Ok((at, sealed)) => {
                for vault in [erasing, writing] {
                    assert_eq!(
                        open(vault.as_ref(), &at, &sealed).unwrap(),
                        Opened::Erased { at: day(0) }
                    )
                }
            }
            Err(error) => {
                assert!(
                    matches!(error, PrivacyError::SubjectErased { .. }),
                    "{error}"
                )
            }
        }
    }
    let at = context(Uuid::new_v4(), "AccountOpened", "email", alice);
    assert!(seal(erasing.as_ref(), &at, &text("late@example.com")).is_err());
}

#[test]
fn master_key_rotation_rewraps_every_key_and_leaves_the_log_alone() {
    let dir = TempDir::new().unwrap();
    let old = MasterKey::generate().unwrap();
    let new = MasterKey::generate().unwrap();
    let mut sealed = Vec::new();
    {
        let vault = open_vault(dir.path(), &old);
        for n in 0..5 {
            for field in ["email", "legal_name"] {
                let at = context(Uuid::new_v4(), "AccountOpened", field, subject(n));
                let value = format!("{field}-{n}");
                sealed.push((at.clone(), seal(&vault, &at, &text(&value)).unwrap(), value));
            }
        }
        vault
            .shred(subject(0), ErasureGroup::Profile, day(0))
            .unwrap();
        let fingerprint = vault
            .fingerprint(FingerprintKind::Email, &text("x@y.z"))
            .unwrap();
        vault.record_fingerprint(subject(1), &fingerprint).unwrap();
    }
    let envelopes_before = serde_json::to_string(
        &sealed
            .iter()
            .map(|(_, sealed, _)| sealed)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let vault_dir = dir.path().join("vault");
    let report = DirVault::rotate_master_key(&vault_dir, &old, &new).unwrap();
    assert_eq!(report.keys_rewrapped, 9, "ten keys, one shredded");

    let error = DirVault::open(&vault_dir, old.clone()).err().unwrap();
    assert!(
        matches!(error, PrivacyError::WrongMasterKey { .. }),
        "{error}"
    );
    assert!(DirVault::rotate_master_key(&vault_dir, &old, &new).is_err());
    for file in files_below(&vault_dir) {
        let bytes = std::fs::read(&file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&old.id()),
            "{} still names the old key",
            file.display()
        );
    }

    let vault = DirVault::open(&vault_dir, new.clone()).unwrap();
    for (at, sealed, value) in &sealed {
        let opened = open(&vault, at, sealed).unwrap();
        if at.subject == subject(0) && at.group == ErasureGroup::Profile {
            assert_eq!(opened, Opened::Erased { at: day(0) });
        } else {
            assert_eq!(&plain(opened), value);
        }
    }
    let fingerprint = vault
        .fingerprint(FingerprintKind::Email, &text("x@y.z"))
        .unwrap();
    assert_eq!(vault.subjects_with(&fingerprint).unwrap(), vec![subject(1)]);
    let envelopes_after = serde_json::to_string(
        &sealed
            .iter()
            .map(|(_, sealed, _)| sealed)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(envelopes_before, envelopes_after);
}

#[test]
fn retention_and_legal_hold_decide_when_keys_die() {
    check_retention_and_legal_hold_decide_when_keys_die(&DirStorage::new());
}

fn check_retention_and_legal_hold_decide_when_keys_die(storage: &dyn Storage) {
    let vault = storage.open();
    let vault = vault.as_ref();
    let policy = RetentionPolicy::default();
    let alice = subject(1);
    let email_at = context(Uuid::new_v4(), "AccountOpened", "email", alice);
    let legal_at = context(Uuid::new_v4(), "PayoutDetailsSet", "legal_name", alice);
    let email = seal(vault, &email_at, &text("ada@example.com")).unwrap();
    let legal = seal(vault, &legal_at, &text("Ada Lovelace")).unwrap();

    let mut state = PrivacyState::default();
    state.note_payment(alice, day(0));
    let hold = |placed: DateTime<Utc>| {
        PrivacyEvent::LegalHoldPlaced(LegalHoldPlaced {
            hold_id: Uuid::from_u128(77),
            subject: alice,
            placed_at: placed,
            reason: HoldReason::Litigation,
        })
    };
    let lift = |lifted: DateTime<Utc>| {
        PrivacyEvent::LegalHoldLifted(LegalHoldLifted {
            hold_id: Uuid::from_u128(77),
            subject: alice,
            lifted_at: lifted,
        })
    };
    state.apply(&hold(day(5)));

    // Erasure under a hold: proof of the request, nothing destroyed.
    let erased = erase_subject(vault, &state, alice, Uuid::from_u128(9), day(10), &policy)
        .unwrap()
        .unwrap();
    let PrivacyEvent::SubjectErased(proof) = &erased else {
        panic!("an erasure proves itself with SubjectErased");
    };
    assert!(proof.groups_shredded.is_empty());
    assert!(proof
        .groups_retained
        .iter()
        .all(|retained| retained.legal_basis == LegalBasis::LegalHold));
    state.apply(&erased);
    assert!(run_shredder(vault, &state, day(10), &policy)
        .unwrap()
        .is_empty());
    assert_eq!(
        plain(open(vault, &email_at, &email).unwrap()),
        "ada@example.com"
    );

    // Hold lifted: the profile goes at the next run, payout data stays for 7 years.
    state.apply(&lift(day(20)));
    let run = run_shredder(vault, &state, day(21), &policy).unwrap();
    assert_eq!(run.len(), 1);
    for event in &run {
        state.apply(event);
    }
    assert_eq!(
        open(vault, &email_at, &email).unwrap(),
        Opened::Erased { at: day(21) }
    );
    assert_eq!(
        plain(open(vault, &legal_at, &legal).unwrap()),
        "Ada Lovelace"
    );

    let retention_end = policy.payment_data_until(day(0));
    assert!(
        run_shredder(vault, &state, retention_end - Duration::seconds(1), &policy)
            .unwrap()
            .is_empty()
    );

    // A new hold before retention ends keeps the payout key past it.
    state.apply(&hold(retention_end - Duration::days(1)));
    assert!(
        run_shredder(vault, &state, retention_end + Duration::days(100), &policy)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        plain(open(vault, &legal_at, &legal).unwrap()),
        "Ada Lovelace"
    );

    state.apply(&lift(retention_end + Duration::days(200)));
    let run = run_shredder(vault, &state, retention_end + Duration::days(200), &policy).unwrap();
    assert_eq!(run.len(), 1);
    for event in &run {
        state.apply(event);
    }
    assert_eq!(
        open(vault, &legal_at, &legal).unwrap(),
        Opened::Erased {
            at: retention_end + Duration::days(200)
        }
    );
    // Done: later runs find nothing.
    assert!(
        run_shredder(vault, &state, retention_end + Duration::days(999), &policy)
            .unwrap()
            .is_empty()
    );
}

/// A vault that cannot be reached at all.
struct UnreachableVault;

impl KeyVault for UnreachableVault {
    fn key_for_write(&self, _: SubjectId, _: ErasureGroup) -> Result<DataKey, PrivacyError> {
        Err(unreachable_error())
    }
    fn key_for_read(
        &self,
        _: SubjectId,
        _: ErasureGroup,
        _: Uuid,
    ) -> Result<KeyLookup, PrivacyError> {
        Err(unreachable_error())
    }
    fn shred(
        &self,
        _: SubjectId,
        _: ErasureGroup,
        _: DateTime<Utc>,
    ) -> Result<ShredOutcome, PrivacyError> {
        Err(unreachable_error())
    }
    fn erased_at(
        &self,
        _: SubjectId,
        _: ErasureGroup,
    ) -> Result<Option<DateTime<Utc>>, PrivacyError> {
        Err(unreachable_error())
    }
    fn fingerprint(
        &self,
        _: FingerprintKind,
        _: &PersonalText,
    ) -> Result<Fingerprint, PrivacyError> {
        Err(unreachable_error())
    }
    fn record_fingerprint(&self, _: SubjectId, _: &Fingerprint) -> Result<(), PrivacyError> {
        Err(unreachable_error())
    }
    fn subjects_with(&self, _: &Fingerprint) -> Result<Vec<SubjectId>, PrivacyError> {
        Err(unreachable_error())
    }
}

fn unreachable_error() -> PrivacyError {
    PrivacyError::VaultUnavailable {
        reason: "connection refused".to_owned(),
    }
}

#[test]
fn a_vault_outage_is_an_error_never_an_erasure() {
    let dir = TempDir::new().unwrap();
    let master = MasterKey::generate().unwrap();
    let alice = subject(1);
    let at = context(Uuid::new_v4(), "AccountOpened", "email", alice);
    let sealed = {
        let vault = open_vault(dir.path(), &master);
        seal(&vault, &at, &text("ada@example.com")).unwrap()
    };

    let error = open(&UnreachableVault, &at, &sealed).unwrap_err();
    assert_eq!(error.code(), "vault_unavailable");
    assert!(erase_subject(
        &UnreachableVault,
        &PrivacyState::default(),
        alice,
        Uuid::new_v4(),
        day(0),
        &RetentionPolicy::default()
    )
    .is_err());

    // The directory vault, its directory gone from under it.
    let vault = open_vault(dir.path(), &master);
    let moved = dir.path().join("moved");
    std::fs::rename(dir.path().join("vault"), &moved).unwrap();
    let error = open(&vault, &at, &sealed).unwrap_err();
    assert_eq!(error.code(), "vault_unavailable", "{error}");
    assert!(vault.shred(alice, ErasureGroup::Profile, day(0)).is_err());
    std::fs::rename(&moved, dir.path().join("vault")).unwrap();
    assert_eq!(
        plain(open(&vault, &at, &sealed).unwrap()),
        "ada@example.com"
    );
    drop(vault);

    // A key file that lost its contents is corruption, and a missing one is missing.
    let key_file = files_below(&dir.path().join("vault/keys")).pop().unwrap();
    std::fs::write(&key_file, b"{not json").unwrap();
    let vault = open_vault(dir.path(), &master);
    let error = open(&vault, &at, &sealed).unwrap_err();
    assert_eq!(error.code(), "vault_corrupted", "{error}");
    drop(vault);
    std::fs::remove_file(&key_file).unwrap();
    let vault = open_vault(dir.path(), &master);
    let error = open(&vault, &at, &sealed).unwrap_err();
    assert_eq!(error.code(), "vault_key_missing", "{error}");
}

#[test]
fn the_vault_refuses_a_wrong_master_key_and_a_second_process() {
    let dir = TempDir::new().unwrap();
    let master = MasterKey::generate().unwrap();
    let vault = open_vault(dir.path(), &master);
    let error = DirVault::open(dir.path().join("vault"), master.clone())
        .err()
        .unwrap();
    assert_eq!(error.code(), "vault_locked");
    drop(vault);
    let error = DirVault::open(dir.path().join("vault"), MasterKey::generate().unwrap())
        .err()
        .unwrap();
    assert_eq!(error.code(), "vault_wrong_master_key");
}

#[test]
fn fingerprints_find_duplicates_until_the_subject_is_erased() {
    check_fingerprints_find_duplicates_until_the_subject_is_erased(&DirStorage::new());
}

fn check_fingerprints_find_duplicates_until_the_subject_is_erased(storage: &dyn Storage) {
    let (alice, bob) = (subject(1), subject(2));
    {
        let vault = storage.open();
        for (who, email, ip) in [
            (alice, "ada@example.com", "10.0.0.1"),
            (bob, "bob@example.com", "10.0.0.1"),
        ] {
            for (kind, value) in [(FingerprintKind::Email, email), (FingerprintKind::Ip, ip)] {
                let fingerprint = vault.fingerprint(kind, &text(value)).unwrap();
                vault.record_fingerprint(who, &fingerprint).unwrap();
                // Recording again changes nothing.
                vault.record_fingerprint(who, &fingerprint).unwrap();
            }
        }
    }
    let vault = storage.open();
    let email = vault
        .fingerprint(FingerprintKind::Email, &text("  ADA@Example.com "))
        .unwrap();
    let ip = vault
        .fingerprint(FingerprintKind::Ip, &text("10.0.0.1"))
        .unwrap();
    assert_eq!(vault.subjects_with(&email).unwrap(), vec![alice]);
    assert_eq!(vault.subjects_with(&ip).unwrap(), vec![alice, bob]);

    vault.shred(alice, ErasureGroup::Profile, day(0)).unwrap();
    assert!(vault.subjects_with(&email).unwrap().is_empty());
    assert_eq!(vault.subjects_with(&ip).unwrap(), vec![bob]);
    drop(vault);
    let vault = storage.open();
    assert!(vault.subjects_with(&email).unwrap().is_empty());
    assert_eq!(vault.subjects_with(&ip).unwrap(), vec![bob]);
}

// --- The canary scan and the chain through erasure -------------------------------------

/// A signup as a domain event would carry it: personal fields sealed, the rest in clear.
#[derive(Serialize, Deserialize)]
struct SignupForTest {
    account_id: SubjectId,
    name: Sealed,
    email: Sealed,
    signup_ip: Sealed,
    legal_name: Sealed,
}

#[derive(Serialize, Deserialize)]
struct PaymentForTest {
    account_id: SubjectId,
    amount_minor: i64,
}

struct Canaries {
    name: String,
    email: String,
    ip: String,
    legal_name: String,
}

impl Canaries {
    fn of(n: u128) -> Canaries {
        let tag = Uuid::from_u128(0xca1a_0000 + n).simple().to_string();
        Canaries {
            name: format!("Canaryname {}", &tag[..12]),
            email: format!("Canary.{}@Example.COM", &tag[20..]),
            ip: format!("10.{}.{}.{}", n % 250, (n / 250) % 250, 7),
            legal_name: format!("Legal Canary {}", &tag[16..28]),
        }
    }

    fn values(&self) -> [&str; 4] {
        [&self.name, &self.email, &self.ip, &self.legal_name]
    }

    /// Every form a leak could take: clear, lower-case, base64, hex, SHA-256.
    fn forms(&self) -> Vec<Vec<u8>> {
        let mut forms = Vec::new();
        for value in self.values() {
            for variant in [value.to_owned(), value.to_lowercase()] {
                let bytes = variant.as_bytes();
                let digest = Sha256::digest(bytes);
                forms.push(bytes.to_vec());
                forms.push(BASE64.encode(bytes).into_bytes());
                forms.push(BASE64_URL.encode(bytes).into_bytes());
                forms.push(crate::hex::encode(bytes).into_bytes());
                forms.push(digest.to_vec());
                forms.push(crate::hex::encode(&digest).into_bytes());
                forms.push(BASE64.encode(digest).into_bytes());
            }
        }
        forms
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn leaks(haystack: &[u8], canaries: &Canaries) -> bool {
    canaries.forms().iter().any(|form| contains(haystack, form))
}

fn files_below(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn vault_bytes(root: &Path) -> Vec<u8> {
    files_below(root)
        .into_iter()
        .flat_map(|file| std::fs::read(file).unwrap())
        .collect()
}

async fn all_events(store: &MemoryStore) -> Vec<RecordedEvent> {
    let mut events = Vec::new();
    loop {
        let page = store
            .read_all(Position::sequence(events.len() as u64), PAGE_SIZE_MAX)
            .await
            .unwrap();
        if page.is_empty() {
            return events;
        }
        events.extend(page);
    }
}

/// The log as the embedded backend frames it on disk, record after record.
fn log_bytes(events: &[RecordedEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut previous = Digest::GENESIS;
    for event in events {
        let proposed = NewEvent {
            id: event.id,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            metadata: event.metadata,
            payload: event.payload.clone(),
        };
        let link = codec::encode_frame(
            &proposed,
            &event.stream,
            event.revision,
            event.position,
            codec::AppendSlot::SINGLE,
            event.recorded_at,
            previous,
            &mut out,
        );
        assert_eq!(link, event.chain, "the store chained what the codec chains");
        previous = link.current;
    }
    out
}

/// Verifies the chain from the bytes alone, as an auditor would.
fn verify_chain(mut bytes: &[u8]) -> usize {
    let mut previous = Digest::GENESIS;
    let mut records = 0;
    while !bytes.is_empty() {
        let codec::DecodedFrame { event, size, .. } =
            codec::decode_frame(bytes, codec::Framing::CURRENT).expect("every frame decodes");
        assert_eq!(event.chain.previous, previous, "record {records} links");
        assert_eq!(event.position, Position::sequence(records as u64));
        previous = event.chain.current;
        bytes = &bytes[size..];
        records += 1;
    }
    records
}

async fn append(
    store: &MemoryStore,
    stream: &StreamName,
    id: Uuid,
    event_type: &str,
    payload: Vec<u8>,
    version: u16,
) {
    store
        .append(
            stream,
            ExpectedRevision::Any,
            vec![NewEvent {
                id,
                event_type: EventType::parse(event_type).unwrap(),
                schema_version: version,
                metadata: EventMetadata::default(),
                payload,
            }],
        )
        .await
        .unwrap();
}

/// Signs up `subjects` people, records payments for some, erases `erase` of them, and
/// checks: the log's bytes up to the erasure are unchanged, the chain verifies, totals
/// replay the same, no canary of an erased person is anywhere in the log, the vault or
/// their export, and everyone else still reads in clear.
fn erasure_keeps_the_log_and_forgets_the_people(subjects: u128, erase: &[bool], paid: &[bool]) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = TempDir::new().unwrap();
        let master = MasterKey::generate().unwrap();
        let vault = open_vault(dir.path(), &master);
        let store = MemoryStore::with_clock(|| day(0));
        let policy = RetentionPolicy::default();
        let mut state = PrivacyState::default();

        for n in 0..subjects {
            let who = subject(n);
            let canaries = Canaries::of(n);
            let stream = StreamName::parse(format!("account-{}", who.as_uuid())).unwrap();
            let event_id = Uuid::new_v4();
            let sealed = |field: &str, value: &str| {
                seal(
                    &vault,
                    &context(event_id, "AccountOpened", field, who),
                    &text(value),
                )
                .unwrap()
            };
            let signup = SignupForTest {
                account_id: who,
                name: sealed("name", &canaries.name),
                email: sealed("email", &canaries.email),
                signup_ip: sealed("signup_ip", &canaries.ip),
                legal_name: sealed("legal_name", &canaries.legal_name),
            };
            for (kind, value) in [
                (FingerprintKind::Email, &canaries.email),
                (FingerprintKind::Ip, &canaries.ip),
            ] {
                let fingerprint = vault.fingerprint(kind, &text(value)).unwrap();
                vault.record_fingerprint(who, &fingerprint).unwrap();
            }
            append(
                &store,
                &stream,
                event_id,
                "AccountOpened",
                serde_json::to_vec(&signup).unwrap(),
                1,
            )
            .await;
            if paid[n as usize] {
                let payment = PaymentForTest {
                    account_id: who,
                    amount_minor: 1000 + n as i64,
                };
                append(
                    &store,
                    &stream,
                    Uuid::new_v4(),
                    "PaymentReceived",
                    serde_json::to_vec(&payment).unwrap(),
                    1,
                )
                .await;
                state.note_payment(who, day(0));
            }
        }

        let before = all_events(&store).await;
        let bytes_before = log_bytes(&before);
        let total = |events: &[RecordedEvent]| -> i64 {
            events
                .iter()
                .filter(|event| event.event_type.as_str() == "PaymentReceived")
                .map(|event| {
                    serde_json::from_slice::<PaymentForTest>(&event.payload)
                        .unwrap()
                        .amount_minor
                })
                .sum()
        };

        for n in 0..subjects {
            if !erase[n as usize] {
                continue;
            }
            let who = subject(n);
            let request = PrivacyEvent::ErasureRequested(ErasureRequested {
                request_id: Uuid::from_u128(n),
                subject: who,
                requested_at: day(1),
            });
            state.apply(&request);
            let proof = erase_subject(&vault, &state, who, Uuid::from_u128(n), day(2), &policy)
                .unwrap()
                .unwrap();
            state.apply(&proof);
            for event in [request, proof] {
                append(
                    &store,
                    &privacy_stream(who),
                    Uuid::new_v4(),
                    event.event_type().as_str(),
                    event.to_payload(),
                    PRIVACY_SCHEMA_VERSION,
                )
                .await;
            }
            // A second request for the same person is a no-op.
            assert!(
                erase_subject(&vault, &state, who, Uuid::new_v4(), day(3), &policy)
                    .unwrap()
                    .is_none()
            );
        }

        let after = all_events(&store).await;
        let bytes_after = log_bytes(&after);
        assert_eq!(
            &bytes_after[..bytes_before.len()],
            &bytes_before[..],
            "erasure rewrote the log"
        );
        assert_eq!(verify_chain(&bytes_after), after.len());
        assert_eq!(total(&before), total(&after));

        let vault_dir = dir.path().join("vault");
        let mut by_subject: BTreeMap<SubjectId, Vec<RecordedEvent>> = BTreeMap::new();
        for event in &after {
            let owner = serde_json::from_slice::<serde_json::Value>(&event.payload).unwrap();
            let id = owner
                .get("account_id")
                .or_else(|| owner.get("subject"))
                .unwrap();
            by_subject
                .entry(serde_json::from_value(id.clone()).unwrap())
                .or_default()
                .push(event.clone());
        }
        for n in 0..subjects {
            let who = subject(n);
            let canaries = Canaries::of(n);
            assert!(
                !leaks(&bytes_after, &canaries),
                "subject {n} in clear in the log"
            );
            let export = export_subject(who, &by_subject[&who], &vault).unwrap();
            let export_bytes = serde_json::to_vec(&export).unwrap();
            let debug = format!("{:?}{:?}", by_subject[&who], export);
            if erase[n as usize] {
                assert!(
                    !leaks(&vault_bytes(&vault_dir), &canaries),
                    "subject {n} in the vault"
                );
                assert!(
                    !leaks(&export_bytes, &canaries),
                    "subject {n} in the export: {export}"
                );
                let signup = &export["events"][0]["data"];
                assert!(signup["email"]["erased_at"].is_string(), "{export}");
                let legal = &signup["legal_name"];
                if paid[n as usize] {
                    assert_eq!(
                        legal["retained"]["legal_basis"], "payment_record_retention",
                        "{export}"
                    );
                } else {
                    assert!(legal["erased_at"].is_string(), "{export}");
                }
                let fingerprint = vault
                    .fingerprint(FingerprintKind::Email, &text(&canaries.email))
                    .unwrap();
                assert!(vault.subjects_with(&fingerprint).unwrap().is_empty());
            } else {
                // The positive control: the scan does find a person who is still there.
                assert!(
                    leaks(&export_bytes, &canaries),
                    "subject {n} missing from the export"
                );
                let signup = &export["events"][0]["data"];
                assert_eq!(signup["email"], canaries.email.as_str());
                assert_eq!(signup["legal_name"], canaries.legal_name.as_str());
            }
            // Debug output of events and exports is a log line waiting to happen; the
            // export of a present subject is the only place a value may be in clear.
            if erase[n as usize] {
                assert!(!leaks(debug.as_bytes(), &canaries));
            }
        }
    });
}

#[test]
fn erasure_keeps_the_log_and_the_chain_and_leaves_no_canary() {
    erasure_keeps_the_log_and_forgets_the_people(
        4,
        &[true, false, true, false],
        &[true, true, false, false],
    );
}

proptest! {
    #![proptest_config(Config::with_cases(8))]
    #[test]
    fn erasure_of_random_subjects_keeps_the_log_and_forgets_them(
        plan in prop::collection::vec((any::<bool>(), any::<bool>()), 1..6)
    ) {
        let erase: Vec<bool> = plan.iter().map(|(erase, _)| *erase).collect();
        let paid: Vec<bool> = plan.iter().map(|(_, paid)| *paid).collect();
        erasure_keeps_the_log_and_forgets_the_people(plan.len() as u128, &erase, &paid);
    }
}

// --- Sealing and opening stored payloads ----------------------------------------------

use super::payload::{open_payload, seal_payload, subject_of_event, Replacement};

const SIGNUP: &str = r#"{
  "account_id": "2c9e1b7a-5d4f-4e3a-b1c2-7f8e9d0a1b2c",
  "referral_code": "K7QM2XZA",
  "referrer": "8f3a3c1e-2b1d-4c0e-9a8b-0d5e6f7a8b9c",
  "referred_with_code": "HX4N8PQR",
  "fraud_flags": ["self_referral_ip"],
  "personal_data": {"name": "Ada Example", "email": "ada@example.org", "signup_ip": "192.0.2.7"},
  "email_fingerprint": "hmac-sha256:5b0f9c",
  "ip_fingerprint": "hmac-sha256:77a1e0",
  "payment_fingerprint": null,
  "opened_at": "2026-10-01T09:30:00Z"
}"#;

fn new_event(event_type: &str, payload: &str) -> NewEvent {
    NewEvent {
        id: Uuid::new_v4(),
        event_type: EventType::parse(event_type).unwrap(),
        schema_version: 1,
        metadata: EventMetadata::default(),
        payload: payload.as_bytes().to_vec(),
    }
}

fn recorded(event: NewEvent) -> RecordedEvent {
    RecordedEvent {
        id: event.id,
        stream: StreamName::parse("account-x").unwrap(),
        revision: 0,
        position: Position::START,
        event_type: event.event_type,
        schema_version: event.schema_version,
        recorded_at: day(0),
        metadata: event.metadata,
        payload: event.payload,
        chain: crate::store::ChainLink::follow(Digest::GENESIS, b""),
    }
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn a_sealed_signup_holds_nothing_in_clear_and_opens_back_to_the_same_json() {
    let (_dir, _master, vault) = new_vault();
    let sealed = seal_payload(&vault, new_event("AccountOpened", SIGNUP)).unwrap();
    for secret in [
        "Ada Example",
        "ada@example.org",
        "192.0.2.7",
        "hmac-sha256:5b0f9c",
        "hmac-sha256:77a1e0",
    ] {
        assert!(
            !contains(&sealed.payload, secret.as_bytes()),
            "{secret} in clear"
        );
    }
    let stored = json(&sealed.payload);
    assert_eq!(
        stored["referral_code"], "K7QM2XZA",
        "non-personal fields stay readable"
    );
    assert_eq!(stored["personal_data"]["email"]["grp"], "profile");
    assert!(stored["payment_fingerprint"].is_null());

    let event = recorded(sealed);
    let subject = subject_of_event(&event).unwrap().unwrap();
    assert_eq!(subject.to_string(), "2c9e1b7a-5d4f-4e3a-b1c2-7f8e9d0a1b2c");
    let opened = open_payload(&vault, &event).unwrap();
    assert!(opened.erased.is_empty());
    assert_eq!(json(&opened.payload), json(SIGNUP.as_bytes()));

    // Moved into another event, the same bytes do not open.
    let mut moved = event.clone();
    moved.id = Uuid::new_v4();
    let error = open_payload(&vault, &moved).unwrap_err();
    assert_eq!(error.code(), "sealed_value_unauthentic");
    // Nor under another subject.
    let mut other = json(&event.payload);
    other["account_id"] = "8f3a3c1e-2b1d-4c0e-9a8b-0d5e6f7a8b9c".into();
    let mut moved = event.clone();
    moved.payload = serde_json::to_vec(&other).unwrap();
    assert!(open_payload(&vault, &moved).is_err());

    // Erased: every profile field reads as its replacement, and says so.
    vault.shred(subject, ErasureGroup::Profile, day(3)).unwrap();
    let opened = open_payload(&vault, &event).unwrap();
    let data = json(&opened.payload);
    assert_eq!(data["personal_data"]["name"], Replacement::Name.value());
    assert_eq!(data["personal_data"]["email"], Replacement::Email.value());
    assert_eq!(
        data["personal_data"]["signup_ip"],
        Replacement::IpAddress.value()
    );
    assert_eq!(data["email_fingerprint"], Replacement::Fingerprint.value());
    assert_eq!(data["referral_code"], "K7QM2XZA");
    assert_eq!(opened.erased.len(), 5);
    assert!(opened.erased.iter().all(|field| field.at == day(3)));
    // And nothing new is written for the subject.
    let error = seal_payload(&vault, new_event("AccountOpened", SIGNUP)).unwrap_err();
    assert_eq!(error.code(), "subject_erased");
}

#[test]
fn a_personal_field_in_clear_in_the_log_is_an_error_not_a_value() {
    let (_dir, _master, vault) = new_vault();
    let event = recorded(new_event("AccountOpened", SIGNUP));
    let error = open_payload(&vault, &event).unwrap_err();
    assert_eq!(error.code(), "invalid_input", "{error}");
    // Events without personal fields pass through untouched.
    let payment = r#"{"account_id":"2c9e1b7a-5d4f-4e3a-b1c2-7f8e9d0a1b2c","received_at":"2026-10-02T10:00:00Z","payment_fingerprint":null}"#;
    let credits = new_event("CreditsGranted", payment);
    assert_eq!(seal_payload(&vault, credits.clone()).unwrap(), credits);
}

#[test]
fn payment_dates_from_the_log_drive_payout_retention() {
    let mut state = PrivacyState::default();
    let payment = recorded(new_event(
        "PaymentReceived",
        r#"{"account_id":"2c9e1b7a-5d4f-4e3a-b1c2-7f8e9d0a1b2c","received_at":"2026-10-02T10:00:00Z"}"#,
    ));
    let payout = recorded(new_event(
        "PayoutSent",
        r#"{"affiliate":"2c9e1b7a-5d4f-4e3a-b1c2-7f8e9d0a1b2c","sent_at":"2026-12-01T00:00:00Z"}"#,
    ));
    let other = recorded(new_event("CreditsGranted", r#"{"anything": 1}"#));
    for event in [&payout, &payment, &other] {
        state.apply_recorded(event).unwrap();
    }
    let subject: SubjectId =
        serde_json::from_str("\"2c9e1b7a-5d4f-4e3a-b1c2-7f8e9d0a1b2c\"").unwrap();
    assert_eq!(
        state.subject(subject).unwrap().last_payment_at,
        Some("2026-12-01T00:00:00Z".parse().unwrap())
    );
    let broken = recorded(new_event("PaymentReceived", r#"{"account_id": 5}"#));
    assert!(state.apply_recorded(&broken).is_err());
}

#[test]
fn an_erasure_interrupted_between_tombstone_and_deletion_is_finished_on_open() {
    let dir = TempDir::new().unwrap();
    let master = MasterKey::generate().unwrap();
    let alice = subject(1);
    let at = context(Uuid::new_v4(), "AccountOpened", "email", alice);
    let sealed = {
        let vault = open_vault(dir.path(), &master);
        let sealed = seal(&vault, &at, &text("ada@example.com")).unwrap();
        let fingerprint = vault
            .fingerprint(FingerprintKind::Email, &text("ada@example.com"))
            .unwrap();
        vault.record_fingerprint(alice, &fingerprint).unwrap();
        sealed
    };
    // The crash: the tombstone reached the disk, the key and fingerprint files did not go.
    let key_file = files_below(&dir.path().join("vault/keys")).pop().unwrap();
    let tombstone = dir
        .path()
        .join("vault/tombstones")
        .join(key_file.parent().unwrap().file_name().unwrap());
    std::fs::create_dir_all(&tombstone).unwrap();
    std::fs::write(
        tombstone.join(key_file.file_name().unwrap()),
        serde_json::json!({
            "format": 1,
            "subject": alice,
            "group": "profile",
            "erased_at": day(4),
        })
        .to_string(),
    )
    .unwrap();
    let vault = open_vault(dir.path(), &master);
    assert!(!key_file.exists(), "opening finishes the deletion");
    assert!(files_below(&dir.path().join("vault/fingerprints")).is_empty());
    assert_eq!(
        open(&vault, &at, &sealed).unwrap(),
        Opened::Erased { at: day(4) }
    );
}

#[test]
fn an_interrupted_rotation_refuses_to_open_until_run_again() {
    let dir = TempDir::new().unwrap();
    let old = MasterKey::generate().unwrap();
    let new = MasterKey::generate().unwrap();
    let mut sealed = Vec::new();
    {
        let vault = open_vault(dir.path(), &old);
        for n in 0..4 {
            let at = context(Uuid::new_v4(), "AccountOpened", "email", subject(n));
            let value = format!("person-{n}@example.com");
            sealed.push((at.clone(), seal(&vault, &at, &text(&value)).unwrap(), value));
        }
    }
    let vault_dir = dir.path().join("vault");
    // A key file the rotation cannot read stops it part-way (files go in sorted order).
    let last = files_below(&vault_dir.join("keys")).pop().unwrap();
    let saved = std::fs::read(&last).unwrap();
    std::fs::write(&last, b"{broken").unwrap();
    assert!(DirVault::rotate_master_key(&vault_dir, &old, &new).is_err());
    for master in [&old, &new] {
        let error = DirVault::open(&vault_dir, master.clone()).err().unwrap();
        assert_eq!(error.code(), "vault_corrupted", "{error}");
        assert!(error.to_string().contains("interrupted"), "{error}");
    }
    // Rotating to yet another key would leave keys under three masters: refused.
    let third = MasterKey::generate().unwrap();
    assert!(DirVault::rotate_master_key(&vault_dir, &old, &third).is_err());

    std::fs::write(&last, saved).unwrap();
    let report = DirVault::rotate_master_key(&vault_dir, &old, &new).unwrap();
    assert_eq!(
        report.keys_rewrapped, 1,
        "only the key the first run did not reach"
    );
    let vault = DirVault::open(&vault_dir, new).unwrap();
    for (at, sealed, value) in &sealed {
        assert_eq!(&plain(open(&vault, at, sealed).unwrap()), value);
    }
}

#[test]
fn a_tombstone_copied_onto_another_subject_is_corruption_not_erasure() {
    let dir = TempDir::new().unwrap();
    let master = MasterKey::generate().unwrap();
    let (alice, bob) = (subject(1), subject(2));
    let bob_at = context(Uuid::new_v4(), "AccountOpened", "email", bob);
    let bob_sealed = {
        let vault = open_vault(dir.path(), &master);
        vault.shred(alice, ErasureGroup::Profile, day(0)).unwrap();
        seal(&vault, &bob_at, &text("bob@example.com")).unwrap()
    };
    let alice_tombstone = files_below(&dir.path().join("vault/tombstones"))
        .pop()
        .unwrap();
    let bob_id = bob.as_uuid().simple().to_string();
    let bob_tombstone = dir
        .path()
        .join("vault/tombstones")
        .join(&bob_id[..2])
        .join(format!("{bob_id}.profile.json"));
    std::fs::create_dir_all(bob_tombstone.parent().unwrap()).unwrap();
    std::fs::copy(&alice_tombstone, &bob_tombstone).unwrap();
    let error = DirVault::open(dir.path().join("vault"), master.clone())
        .err()
        .unwrap();
    assert_eq!(error.code(), "vault_corrupted", "{error}");
    // Put right, Bob reads as he was: nothing of his was deleted.
    std::fs::remove_file(&bob_tombstone).unwrap();
    let vault = open_vault(dir.path(), &master);
    assert_eq!(
        plain(open(&vault, &bob_at, &bob_sealed).unwrap()),
        "bob@example.com"
    );
}
