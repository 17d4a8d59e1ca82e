//! The vault behaviour tests against [`PgVault`] on a real PostgreSQL (see
//! `crate::pg::testing` for where it comes from; skipped, saying why, when none can be
//! had), and what only a shared vault must do: two instances creating one key, a shred on
//! one seen by the other, an outage that is an error.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use super::*;
use crate::pg::testing;
use crate::privacy::vault::pg::{ImportReport, KekRotationReport, PgVault};

/// One database of the test server, under one key-encryption key.
struct PgStorage {
    url: String,
    kek: MasterKey,
}

impl PgStorage {
    fn connect(&self) -> PgVault {
        PgVault::connect(&self.url, self.kek.clone()).unwrap()
    }
}

impl Storage for PgStorage {
    fn open(&self) -> Box<dyn KeyVault> {
        Box::new(self.connect())
    }

    fn keys_stored(&self, subject: SubjectId, group: ErasureGroup) -> usize {
        let rows = testing::rows_of(
            &self.url,
            "refledger_vault_keys",
            subject.as_uuid(),
            group.as_str(),
        )
        .unwrap();
        usize::try_from(rows).unwrap()
    }
}

/// A fresh database, or `None` (printed) when no PostgreSQL can be had. With
/// `REFLEDGER_TEST_PG_REQUIRED` set, not having one fails the test instead.
fn storage() -> Option<PgStorage> {
    match testing::database() {
        Ok(url) => Some(PgStorage {
            url,
            kek: MasterKey::generate().unwrap(),
        }),
        Err(why) if std::env::var_os("REFLEDGER_TEST_PG_REQUIRED").is_some() => {
            panic!("REFLEDGER_TEST_PG_REQUIRED is set but there is no PostgreSQL: {why}")
        }
        Err(why) => {
            println!("skipped: no PostgreSQL for the vault tests: {why}");
            None
        }
    }
}

#[test]
fn pg_an_erased_subject_is_never_given_a_new_key() {
    let Some(storage) = storage() else { return };
    check_an_erased_subject_is_never_given_a_new_key(&storage);
}

#[test]
fn pg_erasing_twice_changes_nothing() {
    let Some(storage) = storage() else { return };
    check_erasing_twice_changes_nothing(&storage);
}

#[test]
fn pg_retention_and_legal_hold_decide_when_keys_die() {
    let Some(storage) = storage() else { return };
    check_retention_and_legal_hold_decide_when_keys_die(&storage);
}

#[test]
fn pg_fingerprints_find_duplicates_until_the_subject_is_erased() {
    let Some(storage) = storage() else { return };
    check_fingerprints_find_duplicates_until_the_subject_is_erased(&storage);
}

#[test]
fn pg_a_write_racing_an_erasure_is_either_erased_with_it_or_rejected() {
    let Some(storage) = storage() else { return };
    let one: Arc<dyn KeyVault> = Arc::new(storage.connect());
    let other: Arc<dyn KeyVault> = Arc::new(storage.connect());
    for round in 0..4u128 {
        // One instance, then writes on one instance racing the erasure on another.
        check_a_write_racing_an_erasure(&one, &one, subject(100 + round));
        check_a_write_racing_an_erasure(&one, &other, subject(200 + round));
    }
}

#[test]
fn two_instances_creating_the_first_key_of_a_subject_end_with_one_key() {
    let Some(storage) = storage() else { return };
    let instances = [storage.connect(), storage.connect(), storage.connect()];
    for round in 0..20u128 {
        let alice = subject(300 + round);
        let barrier = Barrier::new(instances.len() * 2);
        let keys: Vec<DataKey> = std::thread::scope(|scope| {
            let threads: Vec<_> = instances
                .iter()
                .flat_map(|vault| [vault, vault])
                .map(|vault| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        vault.key_for_write(alice, ErasureGroup::Profile).unwrap()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| thread.join().unwrap())
                .collect()
        });
        let first = keys[0].id();
        assert!(
            keys.iter().all(|key| key.id() == first),
            "round {round}: instances created different keys: {keys:?}"
        );
        assert_eq!(storage.keys_stored(alice, ErasureGroup::Profile), 1);
        // And a value sealed on one instance opens on every other.
        let at = context(Uuid::new_v4(), "AccountOpened", "email", alice);
        let sealed = seal(&instances[0], &at, &text("ada@example.com")).unwrap();
        for vault in &instances {
            assert_eq!(plain(open(vault, &at, &sealed).unwrap()), "ada@example.com");
        }
    }
}

#[test]
fn a_shred_on_one_instance_is_seen_by_another_within_the_bound() {
    let Some(storage) = storage() else { return };
    let (a, b) = (storage.connect(), storage.connect());
    wait_until("both listeners are up", || a.listening() && b.listening());
    let alice = subject(1);
    let at = context(Uuid::new_v4(), "AccountOpened", "email", alice);
    let sealed = seal(&a, &at, &text("ada@example.com")).unwrap();
    // B reads the key, twice: the second read is served from its cache.
    for _ in 0..2 {
        assert_eq!(plain(open(&b, &at, &sealed).unwrap()), "ada@example.com");
    }
    assert_eq!(
        a.shred(alice, ErasureGroup::Profile, day(3)).unwrap(),
        ShredOutcome::Shredded { at: day(3) }
    );
    // The documented bound is the listener's ping interval plus its timeout; with the
    // listener up, the notification arrives in milliseconds.
    let bound = crate::privacy::vault::pg::LISTENER_PING_INTERVAL
        + crate::privacy::vault::pg::LISTENER_PING_TIMEOUT;
    let started = Instant::now();
    loop {
        match open(&b, &at, &sealed).unwrap() {
            Opened::Erased { at } => {
                assert_eq!(at, day(3));
                break;
            }
            _ => assert!(
                started.elapsed() < bound,
                "B still reads the shredded key after {:?}",
                started.elapsed()
            ),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let error = seal(&b, &at, &text("again@example.com")).unwrap_err();
    assert_eq!(error.code(), "subject_erased", "{error}");
    assert_eq!(
        b.shred(alice, ErasureGroup::Profile, day(4)).unwrap(),
        ShredOutcome::AlreadyErased { at: day(3) }
    );
}

#[test]
fn pg_a_vault_outage_is_an_error_never_an_erasure() {
    let Some(storage) = storage() else { return };
    let vault = storage.connect();
    let alice = subject(1);
    let at = context(Uuid::new_v4(), "AccountOpened", "email", alice);
    let sealed = seal(&vault, &at, &text("ada@example.com")).unwrap();
    let bob_at = context(Uuid::new_v4(), "AccountOpened", "email", subject(2));
    let bob = seal(&vault, &bob_at, &text("bob@example.com")).unwrap();
    vault
        .shred(subject(2), ErasureGroup::Profile, day(1))
        .unwrap();

    testing::set_reachable(&storage.url, false).unwrap();
    wait_until("the listener notices the outage", || !vault.listening());
    let error = open(&vault, &at, &sealed).unwrap_err();
    assert_eq!(error.code(), "vault_unavailable", "{error}");
    // Not even an erased subject reads as erased while the vault cannot be asked.
    let error = open(&vault, &bob_at, &bob).unwrap_err();
    assert_eq!(error.code(), "vault_unavailable", "{error}");
    let error = vault
        .shred(alice, ErasureGroup::Profile, day(2))
        .unwrap_err();
    assert_eq!(error.code(), "vault_unavailable", "{error}");
    assert!(erase_subject(
        &vault,
        &PrivacyState::default(),
        alice,
        Uuid::new_v4(),
        day(2),
        &RetentionPolicy::default()
    )
    .is_err());
    let carla = context(Uuid::new_v4(), "AccountOpened", "email", subject(3));
    let error = seal(&vault, &carla, &text("carla@example.com")).unwrap_err();
    assert_eq!(error.code(), "vault_unavailable", "{error}");
    let error = PgVault::connect(&storage.url, storage.kek.clone())
        .err()
        .unwrap();
    assert_eq!(error.code(), "vault_unavailable", "{error}");

    // Back: the same handle reconnects, and nothing was erased.
    testing::set_reachable(&storage.url, true).unwrap();
    assert_eq!(
        plain(open(&vault, &at, &sealed).unwrap()),
        "ada@example.com"
    );
    assert_eq!(
        open(&vault, &bob_at, &bob).unwrap(),
        Opened::Erased { at: day(1) }
    );
    assert_eq!(vault.erased_at(alice, ErasureGroup::Profile).unwrap(), None);
}

#[test]
fn connections_the_server_ended_are_replaced_without_an_error() {
    let Some(storage) = storage() else { return };
    let vault = storage.connect();
    let alice = subject(1);
    let at = context(Uuid::new_v4(), "AccountOpened", "email", alice);
    let sealed = seal(&vault, &at, &text("ada@example.com")).unwrap();
    for round in 0..5u128 {
        // As after a restart of the server: every pooled connection is dead, and the
        // cache is off until the listener is back, so each read goes to the database.
        testing::end_connections(&storage.url).unwrap();
        assert_eq!(
            plain(open(&vault, &at, &sealed).unwrap()),
            "ada@example.com",
            "round {round}"
        );
        let bob = context(
            Uuid::new_v4(),
            "AccountOpened",
            "email",
            subject(10 + round),
        );
        assert!(seal(&vault, &bob, &text("bob@example.com")).is_ok());
    }
}

#[test]
fn an_unreachable_server_is_an_error_within_the_deadline() {
    // Nothing listens on port 1 of the loopback address.
    let started = Instant::now();
    let error = PgVault::connect(
        "postgres://refledger@127.0.0.1:1/vault",
        MasterKey::generate().unwrap(),
    )
    .err()
    .unwrap();
    assert_eq!(error.code(), "vault_unavailable", "{error}");
    assert!(
        started.elapsed() < crate::privacy::vault::pg::OPERATION_TIMEOUT + Duration::from_secs(2)
    );
    let error = PgVault::connect("not a url ===", MasterKey::generate().unwrap())
        .err()
        .unwrap();
    assert_eq!(error.code(), "invalid_input", "{error}");
}

/// The server calls the vault from its own runtime's worker threads: connecting, failing
/// to connect, using and dropping a vault there must neither panic nor block forever.
#[test]
fn the_vault_works_inside_another_tokio_runtime() {
    let storage = storage();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let error = PgVault::connect(
            "postgres://refledger@127.0.0.1:1/vault",
            MasterKey::generate().unwrap(),
        )
        .err()
        .unwrap();
        assert_eq!(error.code(), "vault_unavailable", "{error}");
        let Some(storage) = storage else { return };
        let ca_file = std::env::temp_dir().join("refledger-no-such-ca.pem");
        let error = PgVault::connect_with_ca(&storage.url, storage.kek.clone(), Some(&ca_file))
            .err()
            .unwrap();
        assert_eq!(error.code(), "invalid_input", "{error}");
        let vault = storage.connect();
        let at = context(Uuid::new_v4(), "AccountOpened", "email", subject(1));
        let sealed = seal(&vault, &at, &text("ada@example.com")).unwrap();
        let opened = tokio::spawn(async move {
            let opened = plain(open(&vault, &at, &sealed).unwrap());
            drop(vault);
            opened
        })
        .await
        .unwrap();
        assert_eq!(opened, "ada@example.com");
    });
}

#[test]
fn pg_the_vault_refuses_a_wrong_key_encryption_key() {
    let Some(storage) = storage() else { return };
    let vault = storage.connect();
    let at = context(Uuid::new_v4(), "AccountOpened", "email", subject(1));
    seal(&vault, &at, &text("ada@example.com")).unwrap();
    let error = PgVault::connect(&storage.url, MasterKey::generate().unwrap())
        .err()
        .unwrap();
    assert_eq!(error.code(), "vault_wrong_master_key", "{error}");
}

#[test]
fn a_directory_vault_copied_into_postgres_reads_the_same() {
    let Some(storage) = storage() else { return };
    let dir = DirStorage::new();
    let mut sealed = Vec::new();
    let contents = {
        let vault = open_vault(dir.dir.path(), &dir.master);
        for n in 0..4 {
            for field in ["email", "legal_name"] {
                let at = context(Uuid::new_v4(), "AccountOpened", field, subject(n));
                let value = format!("{field}-{n}");
                sealed.push((at.clone(), seal(&vault, &at, &text(&value)).unwrap(), value));
            }
            let fingerprint = vault
                .fingerprint(FingerprintKind::Email, &text(&format!("{n}@example.com")))
                .unwrap();
            vault.record_fingerprint(subject(n), &fingerprint).unwrap();
        }
        vault
            .shred(subject(0), ErasureGroup::Profile, day(0))
            .unwrap();
        vault.contents().unwrap()
    };
    assert_eq!(
        (
            contents.keys(),
            contents.tombstones(),
            contents.fingerprints()
        ),
        (7, 1, 3)
    );

    // Into a vault that already served (its own fingerprint key, no fingerprints yet).
    let report = storage.connect().import(&contents).unwrap();
    assert_eq!(
        report,
        ImportReport {
            keys_copied: 7,
            keys_present: 0,
            tombstones_copied: 1,
            fingerprints_copied: 3,
        }
    );
    let again = storage.connect().import(&contents).unwrap();
    assert_eq!(
        again,
        ImportReport {
            keys_copied: 0,
            keys_present: 7,
            tombstones_copied: 0,
            fingerprints_copied: 0,
        }
    );

    let vault = storage.connect();
    for (at, sealed, value) in &sealed {
        let opened = open(&vault, at, sealed).unwrap();
        if at.subject == subject(0) && at.group == ErasureGroup::Profile {
            assert_eq!(opened, Opened::Erased { at: day(0) });
        } else {
            assert_eq!(&plain(opened), value);
        }
    }
    for n in 0..4 {
        let fingerprint = vault
            .fingerprint(FingerprintKind::Email, &text(&format!("{n}@example.com")))
            .unwrap();
        let expected = if n == 0 { vec![] } else { vec![subject(n)] };
        assert_eq!(vault.subjects_with(&fingerprint).unwrap(), expected);
    }

    // A different vault's keys for the same subjects are refused, not mixed in.
    let other = DirStorage::new();
    let other_contents = {
        let vault = open_vault(other.dir.path(), &other.master);
        let at = context(Uuid::new_v4(), "AccountOpened", "legal_name", subject(1));
        seal(&vault, &at, &text("someone else")).unwrap();
        vault.contents().unwrap()
    };
    let error = storage.connect().import(&other_contents).unwrap_err();
    assert_eq!(error.code(), "invalid_input", "{error}");
}

#[test]
fn kek_rotation_rewraps_every_key_and_the_old_kek_opens_nothing() {
    let Some(storage) = storage() else { return };
    let mut sealed = Vec::new();
    let vault = storage.connect();
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
    // An instance left running on the old KEK.
    let stale = storage.connect();

    let new = MasterKey::generate().unwrap();
    let report = vault.rotate_kek(&new).unwrap();
    assert_eq!(report, KekRotationReport { keys_rewrapped: 9 });

    let error = PgVault::connect(&storage.url, storage.kek.clone())
        .err()
        .unwrap();
    assert_eq!(error.code(), "vault_wrong_master_key", "{error}");
    let error = stale
        .key_for_write(subject(50), ErasureGroup::Profile)
        .unwrap_err();
    assert_eq!(error.code(), "vault_wrong_master_key", "{error}");
    assert_eq!(storage.keys_stored(subject(50), ErasureGroup::Profile), 0);

    let vault = PgVault::connect(&storage.url, new.clone()).unwrap();
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
    // Rotating with a KEK that is no longer the vault's is refused.
    let error = stale
        .rotate_kek(&MasterKey::generate().unwrap())
        .unwrap_err();
    assert_eq!(error.code(), "vault_wrong_master_key", "{error}");
}

#[test]
fn the_vault_speaks_tls_and_verifies_the_server() {
    let (url, ca_file) = match testing::tls_database() {
        Ok(found) => found,
        Err(why) if std::env::var_os("REFLEDGER_TEST_PG_REQUIRED").is_some() => {
            panic!("REFLEDGER_TEST_PG_REQUIRED is set but there is no TLS PostgreSQL: {why}")
        }
        Err(why) => {
            println!("skipped: no PostgreSQL with TLS: {why}");
            return;
        }
    };
    let kek = MasterKey::generate().unwrap();
    let vault = PgVault::connect_with_ca(&url, kek.clone(), Some(&ca_file)).unwrap();
    let at = context(Uuid::new_v4(), "AccountOpened", "email", subject(1));
    let sealed = seal(&vault, &at, &text("ada@example.com")).unwrap();
    assert_eq!(
        plain(open(&vault, &at, &sealed).unwrap()),
        "ada@example.com"
    );
    // The server's certificate is checked: the system's roots do not know its CA.
    let error = PgVault::connect(&url, kek.clone()).err().unwrap();
    assert_eq!(error.code(), "vault_unavailable", "{error}");
    // Nor is a CA file accepted for a connection that would not use it.
    let plain_url = url.replace("sslmode=require", "sslmode=disable");
    let error = PgVault::connect_with_ca(&plain_url, kek, Some(&ca_file))
        .err()
        .unwrap();
    assert_eq!(error.code(), "invalid_input", "{error}");
}

#[test]
fn a_fingerprint_shared_by_very_many_subjects_answers_the_first_of_them() {
    let Some(storage) = storage() else { return };
    let vault = storage.connect();
    let ip = vault
        .fingerprint(FingerprintKind::Ip, &text("100.64.0.1"))
        .unwrap();
    let max = crate::privacy::vault::pg::SUBJECTS_PER_FINGERPRINT_MAX;
    testing::execute(
        &storage.url,
        &format!(
            "INSERT INTO refledger_vault_fingerprints (subject_id, erasure_group, kind, mac) \
             SELECT gen_random_uuid(), 'profile', 'ip', decode('{}', 'hex') \
             FROM generate_series(1, {})",
            ip.to_hex(),
            max + 1
        ),
    )
    .unwrap();
    // A carrier's NAT address: the duplicate check learns "many", the signup goes on.
    let subjects = vault.subjects_with(&ip).unwrap();
    assert_eq!(subjects.len(), max);
    assert!(subjects.windows(2).all(|pair| pair[0] < pair[1]));
    vault.record_fingerprint(subject(1), &ip).unwrap();
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
