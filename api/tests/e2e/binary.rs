//! The real binary: first start, token generation, SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;

const BINARY: &str = env!("CARGO_BIN_EXE_refledger");

pub(crate) struct Running {
    child: Child,
    pub(crate) base: String,
    /// What the server wrote to stderr, read as it comes so a chatty server never blocks
    /// on a full pipe.
    stderr: std::thread::JoinHandle<String>,
}

/// A test that fails must not leave its server running (nor a small disk mounted under it).
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `refledger serve` on a free port and waits for its address line.
pub(crate) fn start(data: &std::path::Path, extra: &[&str]) -> Running {
    let mut child = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .env_remove("REFLEDGER_TOKEN")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let mut pipe = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        text
    });
    Running {
        child,
        base,
        stderr,
    }
}

pub(crate) fn terminate(running: &mut Running) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill")
        .args(["-TERM", &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = running.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server stops on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::mem::replace(&mut running.stderr, std::thread::spawn(String::new));
    (exit, stderr.join().unwrap())
}

#[tokio::test]
async fn first_start_generates_private_tokens_and_sigterm_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().join("ledger-data");
    let mut running = start(&data_dir, &[]);

    let tokens_path = data_dir.join("tokens");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&tokens_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the tokens file is private");
    }
    let text = std::fs::read_to_string(&tokens_path).unwrap();
    let secret_of = |role: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{role}:")))
            .unwrap_or_else(|| panic!("no {role} token in {text}"))
            .to_owned()
    };
    for role in ["billing", "finance", "auditor", "privacy", "admin"] {
        assert_eq!(secret_of(role).len(), 64, "32 random bytes in hex");
    }
    let client = reqwest::Client::new();
    let events = format!("{}/v1/events", running.base);
    let response = client
        .get(&events)
        .bearer_auth(secret_of("auditor"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = client
        .get(&events)
        .bearer_auth(secret_of("billing"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{exit:?}: {stderr}");
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(stderr.contains("the store is flushed"), "{stderr}");
    assert!(
        stderr.contains(&tokens_path.display().to_string()),
        "prints where: {stderr}"
    );
    for role in ["billing", "auditor"] {
        assert!(!stderr.contains(&secret_of(role)), "secrets never printed");
    }

    // A second start reuses the tokens instead of generating new ones.
    let mut running = start(&data_dir, &[]);
    assert_eq!(std::fs::read_to_string(&tokens_path).unwrap(), text);
    let response = client
        .get(format!("{}/v1/events", running.base))
        .bearer_auth(secret_of("auditor"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (exit, _) = terminate(&mut running);
    assert!(exit.success());
}

#[tokio::test]
async fn tokens_given_on_the_command_line_replace_generation() {
    let data = tempfile::tempdir().unwrap();
    let mut running = start(data.path(), &["--token", "auditor:given-auditor-secret-01"]);
    assert!(!data.path().join("tokens").exists());
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/v1/events", running.base))
        .bearer_auth("given-auditor-secret-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (exit, _) = terminate(&mut running);
    assert!(exit.success());
}

#[test]
fn a_bad_token_flag_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "boss:whatever-long-secret",
        ])
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown role"), "{stderr}");
}

#[tokio::test]
async fn serve_demo_loads_the_demo_data_on_first_run() {
    let data = tempfile::tempdir().unwrap();
    let mut running = start(
        data.path(),
        &["--demo", "--token", "billing:demo-billing-secret-01"],
    );
    let client = reqwest::Client::new();
    let wallet: serde_json::Value = client
        .get(format!(
            "{}/v1/accounts/{}/credits",
            running.base,
            api::demo::CARLA
        ))
        .bearer_auth("demo-billing-secret-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wallet["balance"], 100);
    let upline: serde_json::Value = client
        .get(format!(
            "{}/v1/accounts/{}/upline",
            running.base,
            api::demo::CARLA
        ))
        .bearer_auth("demo-billing-secret-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(upline["upline"][0]["account_id"], api::demo::BOB);
    assert_eq!(upline["upline"][1]["account_id"], api::demo::ADA);
    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{stderr}");
    assert!(stderr.contains("loaded the demo data set"), "{stderr}");
}

#[test]
fn append_refuses_what_the_ledger_could_not_read() {
    let data = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["append", "--stream", "notes", "--event-type", "NoteTaken"])
        .args(["--payload", "{}", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not an event the ledger reads"), "{stderr}");
}

const BILLING: &str = "billing:kill-test-billing-01";
const AUDITOR: &str = "auditor:kill-test-auditor-01";

/// Opens the account `payer` (opened at the start of 2026, before any payment).
async fn open_payer(client: &reqwest::Client, base: &str, payer: &str) {
    let response = client
        .post(format!("{base}/v1/accounts"))
        .bearer_auth(secret(BILLING))
        .json(
            &serde_json::json!({"account_id": payer, "name": "Kay", "email": "kay@example.org",
                                  "opened_at": "2026-01-01T00:00:00Z"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

fn secret(token: &str) -> &str {
    token.split_once(':').unwrap().1
}

/// Kills the server with SIGKILL while payments are in flight; after a restart on the same
/// data directory every acknowledged payment is there exactly once, and its retry is
/// answered as a repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_payment_survives_sigkill_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let tokens = ["--token", BILLING, "--token", AUDITOR];
    let mut running = start(data.path(), &tokens);
    let client = reqwest::Client::new();
    let payer = "6a0c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";
    open_payer(&client, &running.base, payer).await;

    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for writer in 0..16 {
        let (client, base, acknowledged) =
            (client.clone(), running.base.clone(), acknowledged.clone());
        writers.push(tokio::spawn(async move {
            for index in 0.. {
                let payment_id = format!("pi_kill_{writer}_{index}");
                let sent = client
                    .post(format!("{base}/v1/payments"))
                    .bearer_auth(secret(BILLING))
                    .json(&serde_json::json!({
                        "payment_id": payment_id, "account_id": payer, "kind": "subscription",
                        "amount": "10.00", "currency": "EUR", "paid_at": "2026-10-05T12:00:00Z",
                    }))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == StatusCode::CREATED => {
                        acknowledged.lock().unwrap().push(payment_id);
                    }
                    // The server died under this request: it was never acknowledged.
                    _ => return,
                }
            }
        }));
    }
    // Let some payments through, then kill without warning.
    while acknowledged.lock().unwrap().len() < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let mut running = start(data.path(), &tokens);
    for payment_id in &acknowledged {
        let stream: serde_json::Value = client
            .get(format!("{}/v1/streams/payment-{payment_id}", running.base))
            .bearer_auth(secret(AUDITOR))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let received = stream["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["event_type"] == "PaymentReceived")
            .count();
        assert_eq!(received, 1, "{payment_id} is recorded exactly once");
    }
    let retry = client
        .post(format!("{}/v1/payments", running.base))
        .bearer_auth(secret(BILLING))
        .json(&serde_json::json!({
            "payment_id": acknowledged[0], "account_id": payer, "kind": "subscription",
            "amount": "10.00", "currency": "EUR", "paid_at": "2026-10-05T12:00:00Z",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::OK, "a retry is a repeat");
    let report: serde_json::Value = client
        .get(format!("{}/v1/verify", running.base))
        .bearer_auth(secret(AUDITOR))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{stderr}");
}

/// `migrate` copies a data directory's log into another data directory and verifies it.
#[test]
fn migrate_copies_a_data_directory_and_verifies_it() {
    let source = tempfile::tempdir().unwrap();
    let mut running = start(source.path(), &["--demo"]);
    let (exit, _) = terminate(&mut running);
    assert!(exit.success());
    let target = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["migrate", "--data"])
        .arg(source.path())
        .arg("--to")
        .arg(target.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let source_verify = Command::new(BINARY)
        .args(["verify", "--data"])
        .arg(source.path())
        .output()
        .unwrap();
    // "files: N events in M streams, ..." is verify's first line.
    let verify_text = String::from_utf8_lossy(&source_verify.stdout);
    let events: u64 = verify_text
        .strip_prefix("files: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("unexpected verify output {verify_text:?}"));
    assert!(
        events > 12,
        "the demo holds the simulated history and the quickstart set"
    );
    assert!(
        stdout.contains(&format!("migrated and verified {events} events")),
        "{stdout}"
    );
    // The copy is a log of its own that verifies.
    let verify = Command::new(BINARY)
        .args(["verify", "--data"])
        .arg(target.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // A malformed connection string is a clear error, and nothing is copied.
    let bad = Command::new(BINARY)
        .args(["migrate", "--data"])
        .arg(source.path())
        .args(["--to", "kurrentdb://"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("connection string"));
}

/// `migrate --to postgres://...` copies a data directory's log into PostgreSQL and
/// verifies it, a second run copies nothing, and `serve --store postgres://...` serves
/// the copy, whose chain verifies.
#[cfg(feature = "pg-store")]
#[tokio::test]
async fn migrate_into_postgres_and_serve_from_it() {
    let Some(connection) = ledger::pg::testing::database_or_skip() else {
        return;
    };
    let url = ledger::pg::testing::as_url(&connection).unwrap();
    let source = tempfile::tempdir().unwrap();
    let mut running = start(source.path(), &["--demo"]);
    let (exit, _) = terminate(&mut running);
    assert!(exit.success());
    let migrate = || {
        Command::new(BINARY)
            .args(["migrate", "--data"])
            .arg(source.path())
            .args(["--to", &url])
            .output()
            .unwrap()
    };
    let first = migrate();
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "migrate failed: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("migrated and verified"), "{stdout}");
    // Run again (as after an interruption): everything is recognised, nothing doubles.
    let again = migrate();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout)
            .lines()
            .find(|line| line.contains("verified")),
        stdout.lines().find(|line| line.contains("verified")),
    );

    let served = tempfile::tempdir().unwrap();
    let mut running = start(served.path(), &["--store", &url, "--token", AUDITOR]);
    let report: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/verify", running.base))
        .bearer_auth(secret(AUDITOR))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let events: u64 = stdout
        .split("migrated and verified ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("unexpected migrate output {stdout:?}"));
    assert!(events > 12, "the demo log was copied: {stdout}");
    assert_eq!(
        report["events_checked"], events,
        "the served store holds the events copied: {report}"
    );
    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{stderr}");
}

#[test]
fn simulate_writes_a_data_directory_that_verify_and_summarize_read() {
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let data_arg = data.to_str().unwrap();
    let simulated = Command::new(BINARY)
        .args([
            "simulate",
            "--accounts",
            "40",
            "--months",
            "2",
            "--seed",
            "5",
        ])
        .args(["--json", "--data", data_arg])
        .output()
        .unwrap();
    assert!(simulated.status.success(), "{simulated:?}");
    let report: serde_json::Value = serde_json::from_slice(&simulated.stdout).unwrap();
    // The summary of the log alone, read back by the command line.
    let summarized = Command::new(BINARY)
        .args(["simulate", "--summarize", "--json", "--data", data_arg])
        .output()
        .unwrap();
    assert!(summarized.status.success(), "{summarized:?}");
    let summary: serde_json::Value = serde_json::from_slice(&summarized.stdout).unwrap();
    assert_eq!(summary, report["summary"]);
    assert_eq!(summary["accounts"], 40);
    // The data directory is a server's: `verify` finds the log where `serve` would.
    let verify = Command::new(BINARY)
        .args(["verify", "--data", data_arg])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    let text = String::from_utf8(verify.stdout).unwrap();
    let events = summary["events"].as_u64().unwrap();
    assert!(text.contains(&format!("files: {events} events")), "{text}");
}

/// Two instances behind one load balancer: given the same `--fingerprint-key-file`, a
/// signup retried with the same `Idempotency-Key` gets the same account id from either.
/// Without it each derives ids under its own `DATA/fingerprint.key`.
#[tokio::test]
async fn instances_sharing_a_fingerprint_key_derive_the_same_account_id() {
    use crate::privacy::{bearer, spawn_with, stop, BILLING};
    let root = tempfile::tempdir().unwrap();
    let key_file = root.path().join("shared-fingerprint.key");
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    let client = reqwest::Client::new();
    let signup = |base: String| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!("{base}/v1/accounts"))
                .header("Authorization", bearer(BILLING))
                .header("Idempotency-Key", "signup-retried-elsewhere")
                .json(&serde_json::json!({"name": "Ida", "email": "ida@example.org"}))
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success(), "{}", response.status());
            let body: serde_json::Value = response.json().await.unwrap();
            body["account_id"].as_str().unwrap().to_owned()
        }
    };
    let mut ids = Vec::new();
    for (name, shared) in [("a", true), ("b", true), ("c", false)] {
        let data = root.path().join(name);
        let flags: Vec<&std::ffi::OsStr> = if shared {
            vec!["--fingerprint-key-file".as_ref(), key_file.as_os_str()]
        } else {
            Vec::new()
        };
        let mut process = spawn_with(&data, &flags);
        ids.push(signup(process.base.clone()).await);
        stop(&mut process);
    }
    assert_eq!(ids[0], ids[1], "the same key derives the same id");
    assert_ne!(ids[0], ids[2], "another instance's own key derives another");

    // A shared key file that is not there is an error naming it, not a new key.
    let missing = root.path().join("missing.key");
    let output = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(root.path().join("d"))
        .arg("--fingerprint-key-file")
        .arg(&missing)
        .args(["--token", BILLING])
        .env_remove("REFLEDGER_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing.key"), "{stderr}");
    assert!(!missing.exists());
}

/// The reproduction of a torn multi-event append, through the real binary: a
/// command whose append (a payment and its three commissions, or a refund and its three
/// clawbacks) reached the disk only in part when the server was killed, and whose
/// idempotency record is gone, is recorded whole when the client retries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_payment_or_refund_append_is_recorded_whole_on_retry() {
    let data = tempfile::tempdir().unwrap();
    let tokens = ["--token", BILLING, "--token", AUDITOR];
    let mut running = start(data.path(), &tokens);
    let client = reqwest::Client::new();
    // A chain of four: the payer's payments fund three levels of commission.
    let mut referral_code: Option<String> = None;
    let mut payer = String::new();
    for (n, name) in ["Ada", "Bob", "Carla", "Dan"].iter().enumerate() {
        let account: serde_json::Value = client
            .post(format!("{}/v1/accounts", running.base))
            .bearer_auth(secret(BILLING))
            .json(&serde_json::json!({
                "account_id": format!("7b000000-0000-4000-8000-00000000000{n}"),
                "name": name, "email": format!("{name}@example.org"),
                "referral_code": referral_code, "opened_at": "2026-01-01T00:00:00Z",
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        referral_code = Some(account["referral_code"].as_str().unwrap().to_owned());
        payer = account["account_id"].as_str().unwrap().to_owned();
    }
    let payment = serde_json::json!({
        "payment_id": "pi_torn", "account_id": payer, "kind": "subscription",
        "amount": "100.00", "currency": "EUR", "paid_at": "2026-10-05T12:00:00Z",
    });
    let refund = serde_json::json!({
        "refund_id": "re_torn", "amount": "40.00", "reason": "refund",
        "refunded_at": "2026-10-09T08:00:00Z",
    });
    // The payment, then its refund: each torn on disk after its first record, retried.
    let commands = [
        (
            "/v1/payments",
            payment,
            "pi_torn",
            "commissions",
            "CommissionEarned:3 PaymentReceived:1",
        ),
        (
            "/v1/payments/pi_torn/refunds",
            refund,
            "re_torn",
            "reversed",
            "CommissionEarned:3 CommissionReversed:3 PaymentReceived:1 PaymentRefunded:1",
        ),
    ];
    for (path, request, key, listed, stream_holds) in commands {
        let send = |base: &str| {
            client
                .post(format!("{base}{path}"))
                .bearer_auth(secret(BILLING))
                .json(&request)
                .send()
        };
        let response = send(&running.base).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let first: serde_json::Value = response.json().await.unwrap();
        assert_eq!(first[listed].as_array().unwrap().len(), 3, "{first}");
        tear_last_append(&mut running, data.path(), 4, key);

        running = start(data.path(), &tokens);
        let retry = send(&running.base).await.unwrap();
        assert_eq!(
            retry.status(),
            StatusCode::CREATED,
            "{key}: decided again, in full"
        );
        let retried: serde_json::Value = retry.json().await.unwrap();
        assert_eq!(retried[listed], first[listed]);
        assert_eq!(
            count_types(&client, &running.base, "payment-pi_torn").await,
            stream_holds
        );
    }
    let report: serde_json::Value = client
        .get(format!("{}/v1/verify", running.base))
        .bearer_auth(secret(AUDITOR))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{stderr}");
}

/// SIGKILLs the server, then leaves on disk what a crash in the middle of writing the
/// log's last append (of `records` records) can: its first record whole, half of the
/// second, nothing after. The command `key` has no idempotency-table record to lose
/// (payments and refunds are answered from the log), so the torn append is all there is.
fn tear_last_append(running: &mut Running, data: &std::path::Path, records: u32, key: &str) {
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    let store = data.join(api::store::LOG_DIR_NAME);
    let log = store.join("log");
    let mut segments = segment_files(&log);
    let last = segments.pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    // Walk the frames (docs/FORMAT.md, format 2) to the last append's first two records.
    let (mut at, mut append_start, mut second) = (32usize, None, None);
    while at + 24 <= bytes.len() {
        let size = 4 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if size == 4 {
            break; // the zeros a running writer preallocates after its last record
        }
        let index = u32::from_le_bytes(bytes[at + 16..at + 20].try_into().unwrap());
        let count = u32::from_le_bytes(bytes[at + 20..at + 24].try_into().unwrap());
        if index == 0 {
            append_start = Some((at, count));
            second = Some(at + size);
        }
        at += size;
    }
    assert!(
        bytes[at..].iter().all(|&b| b == 0),
        "the log ends after a whole record"
    );
    let (_, count) = append_start.unwrap();
    assert_eq!(count, records, "the last append is the command's");
    let cut = second.unwrap() + 40;
    std::fs::write(&last, &bytes[..cut]).unwrap();
    // The checkpoint may not vouch for more than is left.
    let _ = std::fs::remove_file(store.join("index.ckpt"));

    let table = std::fs::read_to_string(data.join("idempotency.jsonl")).unwrap_or_default();
    assert!(
        !table.contains(&format!("\"{key}\"")),
        "{key} has no table record"
    );
}

/// The segment files of the log directory `log`, in order.
fn segment_files(log: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(log)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    segments
}

/// How many events of each type the stream holds: `Type:count` by type name.
async fn count_types(client: &reqwest::Client, base: &str, stream: &str) -> String {
    let read: serde_json::Value = client
        .get(format!("{base}/v1/streams/{stream}"))
        .bearer_auth(secret(AUDITOR))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for event in read["events"].as_array().unwrap() {
        *counts
            .entry(event["event_type"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
        .iter()
        .map(|(name, count)| format!("{name}:{count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A small filesystem of its own, mounted for one test and unmounted when dropped.
struct SmallDisk {
    mount: tempfile::TempDir,
}

impl SmallDisk {
    /// A tmpfs of `megabytes`, or why this machine cannot mount one.
    fn mount(megabytes: u64) -> Result<SmallDisk, String> {
        let mount = tempfile::tempdir().map_err(|error| error.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(mount.path())
            .output()
            .map_err(|error| format!("cannot run mount: {error}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(SmallDisk { mount })
    }

    fn path(&self) -> &std::path::Path {
        self.mount.path()
    }

    /// Writes `filler` until the disk refuses, leaving nothing free.
    fn fill(&self, filler: &str) {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join(filler))
            .unwrap();
        let block = vec![0xAAu8; 4096];
        while file.write_all(&block).and_then(|()| file.flush()).is_ok() {}
        // A last few bytes that may still fit in a partial page.
        while file.write_all(&block[..1]).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mount.path()).status();
    }
}

async fn ready_status(client: &reqwest::Client, base: &str) -> StatusCode {
    client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .status()
}

/// A full disk, handled as a database would: writes are refused (503) and readiness says
/// so, nothing acknowledged is lost, the server restarts on the still full disk and serves
/// reads, and once space is freed a restart takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_loses_nothing_and_the_server_restarts_on_it() {
    let disk = match SmallDisk::mount(24) {
        Ok(disk) => disk,
        Err(why) => {
            println!("SKIPPED: this machine cannot mount a small filesystem: {why}");
            return;
        }
    };
    let data = disk.path().join("data");
    let tokens = ["--token", BILLING, "--token", AUDITOR];
    let mut running = start(&data, &tokens);
    let client = reqwest::Client::new();
    let payer = "6a0c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c4";
    open_payer(&client, &running.base, payer).await;
    assert_eq!(ready_status(&client, &running.base).await, StatusCode::OK);
    disk.fill("filler-1");

    let payment = |index: usize| {
        serde_json::json!({
            "payment_id": format!("pi_full_{index}"), "account_id": payer,
            "kind": "subscription", "amount": "10.00", "currency": "EUR",
            "paid_at": "2026-10-05T12:00:00Z",
        })
    };
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for index in 0..5_000 {
        let response = client
            .post(format!("{}/v1/payments", running.base))
            .bearer_auth(secret(BILLING))
            .json(&payment(index))
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::CREATED => acknowledged.push(index),
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
            other => panic!(
                "payment {index}: {other} {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    assert_eq!(refused, 3, "the full disk refused the payments");
    assert_eq!(
        ready_status(&client, &running.base).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "a store that refuses writes is not ready"
    );
    let check_acknowledged = |base: String, acknowledged: Vec<usize>| {
        let client = client.clone();
        async move {
            for index in acknowledged {
                let stream: serde_json::Value = client
                    .get(format!("{base}/v1/streams/payment-pi_full_{index}"))
                    .bearer_auth(secret(AUDITOR))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(
                    stream["events"].as_array().map(Vec::len),
                    Some(1),
                    "acknowledged payment {index} is there once"
                );
            }
        }
    };
    check_acknowledged(running.base.clone(), acknowledged.clone()).await;
    running.child.kill().unwrap();
    running.child.wait().unwrap();

    // A torn write at the end of the log, which recovery must save before it cuts it:
    // on the full disk it cannot, so the server serves reads and refuses writes.
    let log = data.join(api::store::LOG_DIR_NAME).join("log");
    let segments = segment_files(&log);
    std::fs::remove_file(disk.path().join("filler-1")).unwrap();
    {
        use std::io::Write as _;
        let mut last = std::fs::OpenOptions::new()
            .append(true)
            .open(segments.last().unwrap())
            .unwrap();
        last.write_all(&[0x5A; 6000]).unwrap();
    }
    disk.fill("filler-2");
    let mut running = start(&data, &tokens);
    check_acknowledged(running.base.clone(), acknowledged.clone()).await;
    assert_eq!(
        ready_status(&client, &running.base).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "the torn tail could not be saved: no writes until it can"
    );
    let response = client
        .post(format!("{}/v1/payments", running.base))
        .bearer_auth(secret(BILLING))
        .json(&payment(9_999))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "a refused write is 503"
    );
    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success() || exit.code().is_some(), "{stderr}");

    // Space freed: the restarted server takes writes again and has lost nothing.
    std::fs::remove_file(disk.path().join("filler-2")).unwrap();
    let mut running = start(&data, &tokens);
    assert_eq!(ready_status(&client, &running.base).await, StatusCode::OK);
    let saved: Vec<_> = std::fs::read_dir(&log)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("torn-"))
        .collect();
    assert!(
        !saved.is_empty(),
        "the torn tail was saved once there was room"
    );
    let response = client
        .post(format!("{}/v1/payments", running.base))
        .bearer_auth(secret(BILLING))
        .json(&payment(10_000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    check_acknowledged(running.base.clone(), acknowledged.clone()).await;
    let report: serde_json::Value = client
        .get(format!("{}/v1/verify", running.base))
        .bearer_auth(secret(AUDITOR))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["ok"], true, "{report}");
    let (exit, stderr) = terminate(&mut running);
    assert!(exit.success(), "{stderr}");
    println!(
        "full disk: {} payments acknowledged before the disk filled, then refused",
        acknowledged.len()
    );
}
