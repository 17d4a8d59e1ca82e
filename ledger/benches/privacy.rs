//! Rough costs of crypto-shredding, for the report and for regressions: sealing and
//! opening a signup's personal fields, creating a subject's key (fsync'd), and erasing a
//! subject (fsync'd). Run with `cargo bench -p ledger --bench privacy`; with
//! `--features pg-vault`, the same against the shared vault on the tests' throwaway
//! PostgreSQL (unix socket, fsync off: the database's own durability costs are not in it).

use std::time::Instant;

use ledger::privacy::payload::{open_payload, seal_payload};
use ledger::privacy::{DirVault, ErasureGroup, KeyVault, MasterKey, SubjectId};
use ledger::store::{
    ChainLink, Digest, EventMetadata, EventType, NewEvent, Position, RecordedEvent, StreamName,
};
use uuid::Uuid;

fn signup(subject: Uuid) -> NewEvent {
    let payload = serde_json::json!({
        "account_id": subject,
        "referral_code": "K7QM2XZA",
        "referrer": null,
        "referred_with_code": null,
        "fraud_flags": [],
        "personal_data": {"name": "Ada Example", "email": "ada@example.org", "signup_ip": "192.0.2.7"},
        "email_fingerprint": "hmac-sha256:5b0f9c",
        "ip_fingerprint": "hmac-sha256:77a1e0",
        "payment_fingerprint": "card_fp_Xy12",
        "opened_at": "2026-10-01T09:30:00Z"
    });
    NewEvent {
        id: Uuid::new_v4(),
        event_type: EventType::parse("AccountOpened").unwrap(),
        schema_version: 1,
        metadata: EventMetadata::default(),
        payload: serde_json::to_vec(&payload).unwrap(),
    }
}

fn recorded(event: NewEvent) -> RecordedEvent {
    RecordedEvent {
        id: event.id,
        stream: StreamName::parse("account-bench").unwrap(),
        revision: 0,
        position: Position::START,
        event_type: event.event_type,
        schema_version: event.schema_version,
        recorded_at: chrono::Utc::now(),
        metadata: event.metadata,
        payload: event.payload,
        chain: ChainLink::follow(Digest::GENESIS, b""),
    }
}

fn report(what: &str, count: usize, started: Instant) {
    let elapsed = started.elapsed();
    println!(
        "{what:<48} {count:>7} ops  {:>10.1} us/op  {:>10.0} ops/s",
        elapsed.as_secs_f64() * 1e6 / count as f64,
        count as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    let dir = tempfile::TempDir::new().unwrap();
    let vault = DirVault::open(dir.path().join("vault"), MasterKey::generate().unwrap()).unwrap();
    println!("directory vault:");
    run(&vault, 20_000);
    #[cfg(feature = "pg-vault")]
    match ledger::pg::testing::database() {
        Ok(url) => {
            let vault =
                ledger::privacy::vault::pg::PgVault::connect(&url, MasterKey::generate().unwrap())
                    .unwrap();
            while !vault.listening() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            println!("PostgreSQL vault (throwaway cluster, unix socket, fsync off):");
            run(&vault, 20_000);
        }
        Err(why) => println!("PostgreSQL vault: skipped: {why}"),
    }
}

fn run(vault: &dyn KeyVault, rounds: usize) {
    let subjects: Vec<Uuid> = (0..500).map(|_| Uuid::new_v4()).collect();
    let started = Instant::now();
    let mut stored = Vec::new();
    for subject in &subjects {
        stored.push(recorded(seal_payload(vault, signup(*subject)).unwrap()));
    }
    report(
        "seal signup, new subject (2 keys created, fsync)",
        subjects.len(),
        started,
    );

    let started = Instant::now();
    for round in 0..rounds {
        let subject = subjects[round % subjects.len()];
        std::hint::black_box(seal_payload(vault, signup(subject)).unwrap());
    }
    report("seal signup, known subject (6 fields)", rounds, started);

    let started = Instant::now();
    for round in 0..rounds {
        std::hint::black_box(open_payload(vault, &stored[round % stored.len()]).unwrap());
    }
    report("open signup, cached keys (6 fields)", rounds, started);

    let started = Instant::now();
    for subject in &subjects[..200] {
        vault
            .shred(
                SubjectId::new(*subject),
                ErasureGroup::Profile,
                chrono::Utc::now(),
            )
            .unwrap();
    }
    report(
        "erase profile group (tombstone + delete, fsync)",
        200,
        started,
    );

    let started = Instant::now();
    for round in 0..rounds {
        std::hint::black_box(open_payload(vault, &stored[round % 200]).unwrap());
    }
    report("open signup of an erased subject", rounds, started);
}
