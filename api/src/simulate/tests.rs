//! Tests of the simulator: determinism, the summary read back from the log, the shape of
//! the referral forest, the file backend's verify, balanced books, and the demo data set.

use std::collections::HashMap;
use std::path::Path;

use ledger::privacy::domain::decode_redacted;

use ledger::domain::events::DomainEvent;
use ledger::domain::postings::{AccountKind, LedgerAccount, TrialBalance};
use ledger::domain::AccountId;
use ledger::store::file::FileStore;

use super::*;

fn options(dir: &Path, accounts: u32, months: u32, seed: u64) -> SimulateOptions {
    SimulateOptions {
        accounts,
        months,
        seed,
        destination: Destination::DataDir(dir.to_path_buf()),
        master_key_file: None,
        segment_size_max: None,
    }
}

async fn simulate(dir: &Path, accounts: u32, months: u32, seed: u64) -> SimulationReport {
    run(options(dir, accounts, months, seed), &mut |_: &Progress| {})
        .await
        .expect("the simulation runs through")
}

async fn events_of(dir: &Path) -> Vec<DomainEvent> {
    let store = FileStore::open_read_only(log_dir(dir)).unwrap();
    let mut events = Vec::new();
    for_each_event(&store, |event| events.push(event.clone()))
        .await
        .unwrap();
    events
}

/// The log as records: ids, streams, revisions, types, times, metadata and the event
/// with its personal fields redacted. Sealed personal values differ between runs by their
/// random nonces and keys (as encryption must); everything else is compared.
async fn log_of(dir: &Path) -> Vec<String> {
    let store = FileStore::open_read_only(log_dir(dir)).unwrap();
    let mut records = Vec::new();
    let mut from = ledger::store::Position::START;
    loop {
        let page = store
            .read_all(from, ledger::store::PAGE_SIZE_MAX)
            .await
            .unwrap();
        let fresh: Vec<_> = page
            .iter()
            .filter(|recorded| records.is_empty() || recorded.position > from)
            .collect();
        if fresh.is_empty() {
            return records;
        }
        for recorded in fresh {
            let event = decode_redacted(recorded).unwrap();
            records.push(format!(
                "{} {} {} {} {} {:?} {}",
                recorded.id,
                recorded.stream,
                recorded.revision,
                recorded.event_type.as_str(),
                recorded.recorded_at.to_rfc3339(),
                recorded.metadata,
                serde_json::to_string(&event).unwrap()
            ));
            from = recorded.position;
        }
    }
}

#[tokio::test]
async fn same_seed_writes_the_same_log_and_another_seed_does_not() {
    let temp = tempfile::tempdir().unwrap();
    let (first, second, other) = (
        temp.path().join("first"),
        temp.path().join("second"),
        temp.path().join("other"),
    );
    let report = simulate(&first, 250, 3, 7).await;
    simulate(&second, 250, 3, 7).await;
    simulate(&other, 250, 3, 8).await;

    let first_log = log_of(&first).await;
    assert_eq!(first_log.len() as u64, report.summary.events);
    assert!(report.summary.events > 1_000);
    let second_log = log_of(&second).await;
    for (index, (one, two)) in first_log.iter().zip(&second_log).enumerate() {
        assert_eq!(one, two, "record {index} differs under the same seed");
    }
    assert_eq!(first_log.len(), second_log.len());
    assert_ne!(
        first_log,
        log_of(&other).await,
        "another seed, another history"
    );
}

#[tokio::test]
async fn the_summary_is_reproduced_from_the_log_alone() {
    let temp = tempfile::tempdir().unwrap();
    let report = simulate(temp.path(), 400, 4, 11).await;
    let store = FileStore::open_read_only(log_dir(temp.path())).unwrap();
    let from_log = summarize_log(&store).await.unwrap();
    assert_eq!(from_log, report.summary);

    // The history holds every kind of fact the issue asks for.
    let summary = &from_log;
    assert_eq!(summary.accounts, 400);
    assert!(summary.referred_accounts > 0 && summary.flagged_referrals > 0);
    assert!(summary.subscriptions_started > 0 && summary.subscriptions_cancelled > 0);
    assert!(summary.payments > 0 && summary.refunds + summary.chargebacks > 0);
    assert!(summary.commissions > 0 && summary.payout_runs == 4);
    assert!(summary.credits_spent > 0 && summary.credits_expired > 0);
    assert_eq!(summary.donations, 4);
    assert_eq!(
        store.head().await.unwrap().map(|head| head.commit + 1),
        Some(summary.events),
        "every event of the log was counted once"
    );

    // Personal data is sealed in the log and opens with the data directory's vault.
    let first = events_of(temp.path())
        .await
        .into_iter()
        .find_map(|event| match event {
            DomainEvent::AccountOpened(opened) => Some(opened.account_id),
            _ => None,
        })
        .unwrap();
    let vault = open_vault(temp.path(), None).unwrap();
    let ledger =
        ledger::service::Ledger::new(store, ledger::service::LedgerConfig::default(), vault);
    let account = ledger.account(first).await.unwrap().unwrap();
    assert!(
        account.personal_data.name().starts_with("Member "),
        "the name reads back in clear through the vault"
    );
}

#[tokio::test]
async fn the_referral_forest_looks_like_network_marketing() {
    let temp = tempfile::tempdir().unwrap();
    let accounts = 2_000;
    simulate(temp.path(), accounts, 3, 3).await;
    let mut referrals: HashMap<AccountId, u64> = HashMap::new();
    let mut depth: HashMap<AccountId, u64> = HashMap::new();
    // The log holds a referrer before its referees, so one pass in order finds every
    // depth without recursion.
    for event in events_of(temp.path()).await {
        if let DomainEvent::AccountOpened(opened) = event {
            let level = match opened.referrer {
                Some(referrer) => {
                    *referrals.entry(referrer).or_default() += 1;
                    depth[&referrer] + 1
                }
                None => 0,
            };
            depth.insert(opened.account_id, level);
        }
    }
    assert_eq!(depth.len(), accounts as usize);
    let referring = referrals.len() as u64;
    assert!(
        referring * 4 < u64::from(accounts),
        "most refer nobody: {referring} of {accounts} refer someone"
    );
    let most = referrals.values().copied().max().unwrap();
    let referred: u64 = referrals.values().sum();
    let mean = referred as f64 / referring as f64;
    assert!(
        most as f64 > 8.0 * mean,
        "a few refer many: the top referrer has {most}, the mean referrer {mean:.1}"
    );
    let deepest = depth.values().copied().max().unwrap();
    assert!(
        deepest >= 30,
        "a deep chain exists: the deepest is {deepest}"
    );
}

#[tokio::test]
async fn a_simulated_log_verifies_and_its_books_balance() {
    let temp = tempfile::tempdir().unwrap();
    let report = simulate(temp.path(), 400, 4, 5).await;

    let verified = ledger::store::file::verify(log_dir(temp.path())).unwrap();
    assert!(verified.problem.is_none(), "{:?}", verified.problem);
    assert!(verified.torn_tail.is_none());
    assert_eq!(verified.events, report.summary.events);
    // `refledger verify --data DIR` reads the simulated data directory as a server's:
    // files, chain, and a replay through every projection.
    let args = crate::cli::VerifyArgs {
        data: temp.path().to_path_buf(),
        trusted_head: Vec::new(),
        signed_to_end: false,
        export: None,
    };
    assert_eq!(
        crate::offline::run_verify(&args).await,
        crate::offline::Verdict::Intact
    );

    // The trial balance asserts a zero total after every posting event.
    let mut books = TrialBalance::default();
    for event in events_of(temp.path()).await {
        books.apply(&event);
    }
    assert!(books.total().unwrap().is_zero());
    // And the books agree with the summary: cash is what came in less what went out.
    let totals = &report.summary.money["EUR"];
    let cash = books
        .balance(&LedgerAccount {
            kind: AccountKind::Cash,
            affiliate: None,
        })
        .unwrap();
    let expected = totals
        .net_revenue()
        .checked_sub(&totals.payouts_sent)
        .unwrap();
    assert_eq!(cash, expected);
    let donations = books
        .balance(&LedgerAccount {
            kind: AccountKind::DonationsPayable,
            affiliate: None,
        })
        .unwrap();
    assert_eq!(donations, totals.donations.negated());
}

#[tokio::test]
async fn simulate_refuses_a_log_that_holds_events() {
    let temp = tempfile::tempdir().unwrap();
    simulate(temp.path(), 20, 1, 1).await;
    let before = log_of(temp.path()).await;
    let error = run(options(temp.path(), 20, 1, 1), &mut |_: &Progress| {})
        .await
        .unwrap_err();
    assert!(matches!(error, SimulateError::NotEmpty { .. }), "{error}");
    assert_eq!(log_of(temp.path()).await, before, "nothing was written");
}

#[tokio::test]
async fn bad_sizes_are_refused_with_the_flag_named() {
    let temp = tempfile::tempdir().unwrap();
    let error = run(options(temp.path(), 0, 3, 1), &mut |_: &Progress| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--accounts"), "{error}");
    let error = run(options(temp.path(), 10, 0, 1), &mut |_: &Progress| {})
        .await
        .unwrap_err();
    assert!(error.to_string().contains("--months"), "{error}");
}

fn recorded_demo_summary() -> Summary {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo/summary.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_demo_data_set_loads_with_its_recorded_summary() {
    let temp = tempfile::tempdir().unwrap();
    let report = demo::generate(temp.path()).await.unwrap();
    let store = FileStore::open_read_only(log_dir(temp.path())).unwrap();
    let from_log = summarize_log(&store).await.unwrap();
    if std::env::var_os("REFLEDGER_RECORD_DEMO").is_some() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo/summary.json");
        let json = serde_json::to_string_pretty(&from_log).unwrap() + "\n";
        std::fs::write(path, json).unwrap();
    }
    assert_eq!(from_log, report.summary);
    assert_eq!(from_log, recorded_demo_summary());
    assert_eq!(from_log.accounts, u64::from(demo::DEMO_ACCOUNTS));
}

#[tokio::test]
async fn the_demo_loads_through_an_open_ledger_with_the_same_summary() {
    let ledger = ledger::service::Ledger::new(
        ledger::store::memory::MemoryStore::new(),
        ledger::service::LedgerConfig::default(),
        std::sync::Arc::new(ledger::privacy::vault::memory::MemoryVault::new().unwrap()),
    );
    let report = demo::load(&ledger).await.unwrap();
    assert_eq!(report.summary, recorded_demo_summary());
    assert_eq!(summarize_log(ledger.store()).await.unwrap(), report.summary);
    assert!(demo::load(&ledger).await.is_err(), "only into an empty log");
}
