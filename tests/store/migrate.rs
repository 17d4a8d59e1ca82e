//! `migrate` from the embedded file backend into the in-memory backend: every event in
//! order, ids and revisions kept, and a copy that does not match is refused.

use ledger::store::conformance::{event, read_everything, stream};
use ledger::store::memory::MemoryStore;
use ledger::store::migrate::migrate;
use ledger::store::{Durability, EventStore, ExpectedRevision};

use crate::support::fresh_file_store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_log_migrates_into_memory_with_ids_and_revisions_kept() {
    let (source, _dir) = fresh_file_store(Durability::Fsync);
    let streams: Vec<_> = (0..4).map(|n| stream(&format!("m{n}"))).collect();
    for round in 0..30 {
        for (index, name) in streams.iter().enumerate() {
            // Uneven batch sizes, so the migration sees runs of one stream of every length.
            let batch: Vec<_> = (0..=(round + index) % 5)
                .map(|n| event(&format!("{round}-{index}-{n}")))
                .collect();
            source
                .append(name, ExpectedRevision::Any, batch)
                .await
                .unwrap();
        }
    }
    let target = MemoryStore::new();
    let mut progress = Vec::new();
    let report = migrate(&source, &target, |copied| progress.push(copied))
        .await
        .expect("migration");

    let original = read_everything(&source).await;
    let copied = read_everything(&target).await;
    assert_eq!(report.events, original.len() as u64);
    assert_eq!(report.streams.len(), streams.len());
    assert_eq!(copied.len(), original.len());
    for (copy, event) in copied.iter().zip(&original) {
        assert_eq!(copy.id, event.id);
        assert_eq!(copy.stream, event.stream);
        assert_eq!(copy.revision, event.revision);
        assert_eq!(copy.event_type, event.event_type);
        assert_eq!(copy.schema_version, event.schema_version);
        assert_eq!(copy.metadata, event.metadata);
        assert_eq!(copy.payload, event.payload);
    }
    assert!(progress.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(progress.last().copied(), Some(report.events));
    assert_eq!(
        report.source.last.map(|(position, _)| position),
        original.last().map(|event| event.position)
    );

    // Running it again (after an interruption, say) writes nothing twice: every append
    // repeats one already made, with the same ids at the same revisions.
    let again = migrate(&source, &target, |_| {})
        .await
        .expect("idempotent re-run");
    assert_eq!(again.events, report.events);
    assert_eq!(read_everything(&target).await.len(), original.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_holding_other_events_is_refused() {
    let (source, _dir) = fresh_file_store(Durability::Fsync);
    let name = stream("src");
    source
        .append(
            &name,
            ExpectedRevision::NoStream,
            vec![event("a"), event("b")],
        )
        .await
        .unwrap();
    let target = MemoryStore::new();
    // The target already holds a different event in the same stream.
    target
        .append(&name, ExpectedRevision::NoStream, vec![event("other")])
        .await
        .unwrap();
    let result = migrate(&source, &target, |_| {}).await;
    assert!(
        result.is_err(),
        "a target with foreign events must not verify"
    );
}
