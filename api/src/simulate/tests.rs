//! Tests of the simulator: determinism, the summary read back from the log, the shape of
//! the referral forest, the file backend's verify, balanced books, and the demo data set.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
    }
}

async fn simulate(dir: &Path, accounts: u32, months: u32, seed: u64) -> SimulationReport {
    run(options(dir, accounts, months, seed), &mut |_: &Progress| {})
        .await
        .expect("the simulation runs through")
}

async fn events_of(dir: &Path) -> Vec<DomainEvent> {
    let store = FileStore::open_read_only(dir).unwrap();
    let mut events = Vec::new();
    for_each_event(&store, |event| events.push(event.clone()))
        .await
        .unwrap();
    events
}

/// The log's segment files with the SHA-256 of their bytes. The index checkpoint beside
/// them is derived from the log (and written in hash-map order), so it is left out.
fn files_of(dir: &Path) -> Vec<(PathBuf, String)> {
    use sha2::Digest as _;
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "seg") {
                let digest = sha2::Sha256::digest(std::fs::read(&path).unwrap());
                let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
                files.push((path.strip_prefix(dir).unwrap().to_path_buf(), hex));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test]
async fn same_seed_writes_the_same_bytes_and_another_seed_does_not() {
    let temp = tempfile::tempdir().unwrap();
    let (first, second, other) = (
        temp.path().join("first"),
        temp.path().join("second"),
        temp.path().join("other"),
    );
    let report = simulate(&first, 250, 3, 7).await;
    simulate(&second, 250, 3, 7).await;
    simulate(&other, 250, 3, 8).await;

    let first_files = files_of(&first);
    assert!(
        first_files.iter().any(|(path, _)| path.starts_with("log")),
        "the log has segments"
    );
    assert_eq!(first_files, files_of(&second), "same seed, same bytes");
    assert_ne!(
        first_files,
        files_of(&other),
        "another seed, another history"
    );
    assert!(report.summary.events > 1_000);
}

#[tokio::test]
async fn the_summary_is_reproduced_from_the_log_alone() {
    let temp = tempfile::tempdir().unwrap();
    let report = simulate(temp.path(), 400, 4, 11).await;
    let store = FileStore::open_read_only(temp.path()).unwrap();
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

    let verified = ledger::store::file::verify(temp.path()).unwrap();
    assert!(verified.problem.is_none(), "{:?}", verified.problem);
    assert!(verified.torn_tail.is_none());
    assert_eq!(verified.events, report.summary.events);

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
    let before = files_of(temp.path());
    let error = run(options(temp.path(), 20, 1, 1), &mut |_: &Progress| {})
        .await
        .unwrap_err();
    assert!(matches!(error, SimulateError::NotEmpty { .. }), "{error}");
    assert_eq!(files_of(temp.path()), before, "nothing was written");
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
    let store = FileStore::open_read_only(temp.path()).unwrap();
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
    );
    let report = demo::load(&ledger).await.unwrap();
    assert_eq!(report.summary, recorded_demo_summary());
    assert_eq!(summarize_log(ledger.store()).await.unwrap(), report.summary);
    assert!(demo::load(&ledger).await.is_err(), "only into an empty log");
}
