//! `simulate --target`: the simulated history sent as HTTP requests to a real server
//! writes a log that summarizes exactly as the same seed written directly, and verifies.

use std::sync::Arc;

use api::simulate::http::HttpOptions;
use api::simulate::{run, summarize_log, Destination, Progress, SimulateOptions, Summary};
use api::tokens::{Role, TokenSpec};
use ledger::store::file::{FileStore, FileStoreOptions};

use crate::support::{secret, TestServer};

// Small, yet every kind of command occurs: refunds and chargebacks, reviews both ways,
// the plan change (month 3), payouts and their settlements, erasures.
const ACCOUNTS: u32 = 300;
const MONTHS: u32 = 6;
const SEED: u64 = 1;

fn tokens() -> Vec<TokenSpec> {
    [Role::Billing, Role::Finance, Role::Privacy, Role::Admin]
        .into_iter()
        .map(|role| TokenSpec::new(role, secret(role)).unwrap())
        .collect()
}

async fn direct_summary() -> Summary {
    let temp = tempfile::tempdir().unwrap();
    let options = SimulateOptions {
        accounts: ACCOUNTS,
        months: MONTHS,
        seed: SEED,
        destination: Destination::DataDir(temp.path().to_path_buf()),
        master_key_file: None,
        segment_size_max: None,
    };
    run(options, &mut |_: &Progress| {}).await.unwrap().summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mode_matches_direct_mode_and_the_servers_log_verifies() {
    let data = tempfile::tempdir().unwrap();
    // The server's layout: the log in `DATA/log`, as `serve --data DATA` keeps it.
    let log = data.path().join(api::store::LOG_DIR_NAME);
    let store = FileStore::open(&log, FileStoreOptions::default()).unwrap();
    let server = TestServer::start_on(Arc::new(store.clone())).await;
    let mut progress_seen = Vec::new();
    let options = SimulateOptions {
        accounts: ACCOUNTS,
        months: MONTHS,
        seed: SEED,
        destination: Destination::Http(HttpOptions {
            base: server.base.clone(),
            tokens: tokens(),
            connections: 8,
        }),
        master_key_file: None,
        segment_size_max: None,
    };
    let report = run(options, &mut |progress: &Progress| {
        progress_seen.push(progress.clone())
    })
    .await
    .unwrap();
    server.stop().await;
    let from_server = summarize_log(&store).await.unwrap();
    store.close().await.unwrap();

    let direct = direct_summary().await;
    // The shadow ledger's summary is the direct path's: the same domain, the same model.
    assert_eq!(report.summary, direct);
    // The server decided every command again on its own log and recorded the same
    // history: the same events of every type, money and commissions to the cent.
    assert_eq!(from_server, direct);
    let exercised = [
        ("payments", direct.payments),
        ("refunds", direct.refunds),
        ("chargebacks", direct.chargebacks),
        ("flagged referrals", direct.flagged_referrals),
        ("commissions released", direct.commissions_released),
        ("commissions forfeited", direct.commissions_forfeited),
        ("payouts sent", direct.payouts_sent),
        ("subscriptions cancelled", direct.subscriptions_cancelled),
        ("credits expired", direct.credits_expired),
        ("subjects erased", direct.subjects_erased),
    ];
    for (what, count) in exercised {
        assert!(count > 0, "the history has no {what}: {direct:?}");
    }
    assert_eq!(direct.payout_runs, u64::from(MONTHS));
    assert_eq!(direct.donations, u64::from(MONTHS));

    let last = progress_seen.last().expect("a final progress report");
    assert!(last.done);
    let requests = last.requests.expect("HTTP mode counts requests");
    assert!(
        requests >= report.commands,
        "{requests} < {}",
        report.commands
    );

    // `refledger verify` on the server's data directory: files, chain, trial balance.
    let args = api::cli::VerifyArgs {
        data: data.path().to_path_buf(),
        trusted_head: Vec::new(),
        signed_to_end: false,
        export: None,
    };
    assert_eq!(
        api::offline::run_verify(&args).await,
        api::offline::Verdict::Intact
    );
}

#[tokio::test]
async fn http_mode_names_the_missing_token_and_bad_flags() {
    let mut tokens = tokens();
    tokens.retain(|token| token.role() != Role::Privacy);
    let options = HttpOptions {
        base: "http://127.0.0.1:9".to_owned(),
        tokens,
        connections: 8,
    };
    let error = options.validate().unwrap_err();
    assert!(error.contains("--token privacy:SECRET"), "{error}");
    let options = HttpOptions {
        base: "127.0.0.1:9".to_owned(),
        tokens: self::tokens(),
        connections: 8,
    };
    assert!(options.validate().unwrap_err().contains("--target"));
    let options = HttpOptions {
        base: "http://127.0.0.1:9".to_owned(),
        tokens: self::tokens(),
        connections: 0,
    };
    assert!(options.validate().unwrap_err().contains("--connections"));
}
