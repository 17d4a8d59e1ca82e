//! The privacy officer's endpoints, and the canary scan: personal data seeded through the
//! API must, after erasure, appear nowhere the server can show or leave behind: not in any
//! response, not in the data directory's files, not in the server's own log lines.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::tokens::Role;
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::support::{problem, TestServer};

pub const BINARY: &str = env!("CARGO_BIN_EXE_refledger");

async fn open_account(server: &TestServer, id: &str, email: &str, referral: Option<&str>) {
    let mut request = json!({
        "account_id": id, "name": "Some Person", "email": email, "signup_ip": "198.51.100.3",
        "opened_at": "2025-01-01T00:00:00Z",
    });
    if let Some(code) = referral {
        request["referral_code"] = json!(code);
    }
    let (status, body) = server
        .command("/v1/accounts", Role::Billing, &request)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn uuid(n: u8) -> String {
    format!("6a7e0000-0000-4000-8000-0000000000{n:02x}")
}

#[tokio::test]
async fn an_erasure_returns_its_proof_once_and_the_export_forgets_the_person() {
    let server = TestServer::start().await;
    let person = uuid(1);
    open_account(&server, &person, "Erase.Me@Example.org", None).await;

    let export_path = format!("/v1/privacy/exports/{person}");
    let before: Value = server
        .get(&export_path, Some(Role::Privacy))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(before["format"], "refledger.subject-export.v1");
    assert!(
        before.to_string().contains("Erase.Me@Example.org"),
        "the export opens personal data: {before}"
    );

    let request = json!({"account_id": person, "request_id": uuid(0xe1)});
    let (status, erased) = server
        .command("/v1/privacy/erasures", Role::Privacy, &request)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{erased}");
    assert_eq!(erased["proof"]["request_id"], uuid(0xe1));
    assert_eq!(
        erased["proof"]["groups_shredded"],
        json!(["profile", "payout"])
    );
    assert_eq!(erased["proof"]["stream"], format!("privacy-{person}"));
    let digest = erased["proof"]["chain_current"].as_str().unwrap();
    assert_eq!(digest.len(), 64);

    // The proof stands in the log where it says, with that digest.
    let stream: Value = server
        .get(
            &format!("/v1/streams/privacy-{person}"),
            Some(Role::Auditor),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let proof_event = stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["event_type"] == "SubjectErased")
        .expect("the proof event");
    assert_eq!(proof_event["chain_current"], digest);
    assert_eq!(proof_event["revision"], erased["proof"]["revision"]);

    // The same request again: the same answer, nothing new written.
    let count = server.event_count().await;
    let response = server
        .post("/v1/privacy/erasures", Some(Role::Privacy))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(response.json::<Value>().await.unwrap(), erased);
    assert_eq!(server.event_count().await, count);

    // The request id reused for someone else is a conflict.
    open_account(&server, &uuid(2), "other@example.org", None).await;
    let response = server
        .post("/v1/privacy/erasures", Some(Role::Privacy))
        .json(&json!({"account_id": uuid(2), "request_id": uuid(0xe1)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem(response).await["type"], "idempotency_conflict");

    // A second request for the erased person: recorded, answered with the first proof.
    let (status, again) = server
        .command(
            "/v1/privacy/erasures",
            Role::Privacy,
            &json!({"account_id": person, "request_id": uuid(0xe2)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["proof"], erased["proof"]);

    let after = server
        .get(&export_path, Some(Role::Privacy))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!after.to_lowercase().contains("erase.me"), "{after}");
    assert!(!after.contains("Some Person"), "{after}");
    assert!(after.contains("erased_at"), "{after}");

    // Both requests are listed, completed on time, none overdue.
    let listed: Value = server
        .get("/v1/privacy/requests", Some(Role::Privacy))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let requests = listed["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{listed}");
    for request in requests {
        assert_eq!(request["status"], "completed");
        assert_eq!(request["on_time"], true);
        assert_eq!(request["overdue"], false);
    }
    assert_eq!(listed["overdue_count"], 0);
    assert_eq!(listed["deadline_days"], 30);
    server.stop().await;
}

#[tokio::test]
async fn privacy_endpoints_refuse_other_roles_unknown_accounts_and_bad_bodies() {
    let server = TestServer::start().await;
    for role in [Role::Billing, Role::Finance, Role::Auditor, Role::Admin] {
        let response = server
            .get("/v1/privacy/requests", Some(role))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{role}");
        let response = server
            .post("/v1/privacy/erasures", Some(role))
            .json(&json!({"account_id": uuid(1), "request_id": uuid(2)}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{role}");
    }
    let response = server
        .get(&format!("/v1/privacy/exports/{}", uuid(9)), None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    for path in ["/v1/privacy/erasures", "/v1/privacy/restrictions"] {
        let mut body = json!({"account_id": uuid(9), "request_id": uuid(3)});
        if path.ends_with("restrictions") {
            body["action"] = json!("restrict");
        }
        let response = server
            .post(path, Some(Role::Privacy))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(problem(response).await["type"], "account_not_found");
    }
    let response = server
        .get(
            &format!("/v1/privacy/exports/{}", uuid(9)),
            Some(Role::Privacy),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let response = server
        .post("/v1/privacy/erasures", Some(Role::Privacy))
        .json(&json!({"account_id": "not-a-uuid", "request_id": uuid(3)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = problem(response).await;
    assert!(
        body["detail"].as_str().unwrap().contains("account_id"),
        "{body}"
    );
    let response = server
        .post("/v1/privacy/restrictions", Some(Role::Privacy))
        .json(&json!({"account_id": uuid(9), "request_id": uuid(3), "action": "forget"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.event_count().await, 0, "nothing written");
    server.stop().await;
}

/// The personal data of the signup in a subject export.
fn personal_data(export: &str) -> Value {
    let export: Value = serde_json::from_str(export).unwrap();
    export["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["event_type"] == "AccountOpened")
        .expect("the signup")["data"]["personal_data"]
        .clone()
}

#[tokio::test]
async fn a_legal_hold_keeps_an_erased_persons_data_until_it_is_lifted() {
    let server = TestServer::start().await;
    let person = uuid(0x31);
    open_account(&server, &person, "Held.Person@Example.org", None).await;
    let hold = uuid(0x51);
    let place =
        json!({"hold_id": hold, "account_id": person, "action": "place", "reason": "litigation"});

    // Bad requests are refused before anything is written.
    let count = server.event_count().await;
    for (body, status, code) in [
        (
            json!({"hold_id": hold, "account_id": person, "action": "place"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            json!({"hold_id": hold, "account_id": person, "action": "lift", "reason": "tax_audit"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
        ),
        (
            json!({"hold_id": hold, "account_id": person, "action": "lift"}),
            StatusCode::NOT_FOUND,
            "hold_not_found",
        ),
        (
            json!({"hold_id": hold, "account_id": uuid(0x3f), "action": "place", "reason": "litigation"}),
            StatusCode::NOT_FOUND,
            "account_not_found",
        ),
    ] {
        let response = server
            .post("/v1/privacy/legal-holds", Some(Role::Privacy))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let problem = problem(response).await;
        assert_eq!(problem["type"], code, "{problem}");
    }
    assert_eq!(server.event_count().await, count, "nothing written");
    let response = server
        .post("/v1/privacy/legal-holds", Some(Role::Billing))
        .json(&place)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let (status, placed) = server
        .command("/v1/privacy/legal-holds", Role::Privacy, &place)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    assert_eq!(placed["in_force"], true);
    assert_eq!(placed["reason"], "litigation");
    let (status, again) = server
        .command("/v1/privacy/legal-holds", Role::Privacy, &place)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, placed);
    let response = server
        .post("/v1/privacy/legal-holds", Some(Role::Privacy))
        .json(&json!({"hold_id": hold, "account_id": person, "action": "place", "reason": "tax_audit"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);

    // Erased while held: the request and its proof are recorded, but no key is destroyed.
    let (status, erased) = server
        .command(
            "/v1/privacy/erasures",
            Role::Privacy,
            &json!({"account_id": person, "request_id": uuid(0x52)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{erased}");
    assert_eq!(erased["proof"]["groups_shredded"], json!([]), "{erased}");
    let export_path = format!("/v1/privacy/exports/{person}");
    let export = |server: &TestServer| {
        let request = server.get(&export_path, Some(Role::Privacy));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    // Retained, not disclosed: the export says why each value is kept.
    let held = export(&server).await;
    assert!(!held.contains("Held.Person@Example.org"), "{held}");
    for field in ["name", "email", "signup_ip"] {
        let value = &personal_data(&held)[field];
        assert_eq!(
            value["retained"]["legal_basis"], "legal_hold",
            "{field}: {value}"
        );
    }

    // Lifted: what the hold alone kept is destroyed at once.
    let lift = json!({"hold_id": hold, "account_id": person, "action": "lift"});
    let (status, lifted) = server
        .command("/v1/privacy/legal-holds", Role::Privacy, &lift)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lifted}");
    assert_eq!(lifted["in_force"], false);
    assert_eq!(lifted["reason"], "litigation");
    assert_eq!(lifted["shredded_groups"], 2, "{lifted}");
    let after = export(&server).await;
    for field in ["name", "email", "signup_ip"] {
        let value = &personal_data(&after)[field];
        assert!(value["erased_at"].is_string(), "{field}: {value}");
    }
    assert!(!after.contains("Held.Person@Example.org"));
    let (status, again) = server
        .command("/v1/privacy/legal-holds", Role::Privacy, &lift)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, lifted);
    // The placing request sent again replays the first answer; it places no new hold.
    let response = server
        .post("/v1/privacy/legal-holds", Some(Role::Privacy))
        .json(&json!({"hold_id": hold, "account_id": person, "action": "place", "reason": "litigation"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the first placing replays"
    );
    assert!(!export(&server).await.contains("Held.Person@Example.org"));
    server.stop().await;
}

#[tokio::test]
async fn restriction_is_recorded_once_and_can_be_lifted() {
    let server = TestServer::start().await;
    let person = uuid(1);
    open_account(&server, &person, "restrict@example.org", None).await;
    let restrict = json!({"account_id": person, "request_id": uuid(0xa1), "action": "restrict"});
    let (status, first) = server
        .command("/v1/privacy/restrictions", Role::Privacy, &restrict)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["restricted"], true);
    let (status, again) = server
        .command("/v1/privacy/restrictions", Role::Privacy, &restrict)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    let response = server
        .post("/v1/privacy/restrictions", Some(Role::Privacy))
        .json(&json!({"account_id": person, "request_id": uuid(0xa1), "action": "lift"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let (status, lifted) = server
        .command(
            "/v1/privacy/restrictions",
            Role::Privacy,
            &json!({"account_id": person, "request_id": uuid(0xa2), "action": "lift"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lifted}");
    assert_eq!(lifted["restricted"], false);

    let stream: Value = server
        .get(
            &format!("/v1/streams/privacy-{person}"),
            Some(Role::Auditor),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = stream["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["ProcessingRestricted", "ProcessingRestrictionLifted"]
    );
    server.stop().await;
}

/// A server process whose every output line is kept.
pub struct Process {
    child: Child,
    pub base: String,
    output: Arc<Mutex<String>>,
}

pub const BILLING: &str = "billing:canary-billing-secret-01";
pub const AUDITOR: &str = "auditor:canary-auditor-secret-01";
pub const PRIVACY: &str = "privacy:canary-privacy-secret-01";

pub fn bearer(token: &str) -> String {
    format!("Bearer {}", token.split_once(':').unwrap().1)
}

pub fn spawn(data: &Path) -> Process {
    spawn_with(data, &[])
}

/// `spawn`, with more flags for `serve`.
pub fn spawn_with(data: &Path, extra: &[&std::ffi::OsStr]) -> Process {
    let mut child = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(["--token", BILLING, "--token", AUDITOR, "--token", PRIVACY])
        .args(extra)
        .env_remove("REFLEDGER_TOKEN")
        // Everything the server would log, at the most talkative level.
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(String::new()));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    output.lock().unwrap().push_str(&line);
    for mut stream in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(read) = stream.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                output
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
    }
    Process {
        child,
        base,
        output,
    }
}

pub fn stop(process: &mut Process) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(exit) = process.child.try_wait().unwrap() {
            assert!(exit.success(), "{exit:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the server stops");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The reader threads end at end of file; give them a moment to drain.
    std::thread::sleep(Duration::from_millis(200));
    process.output.lock().unwrap().clone()
}

/// A read answered "as of now" says when now was; that, not a number, differs between two
/// reads.
fn without_clock(mut body: Value) -> Value {
    if let Some(object) = body.as_object_mut() {
        object.remove("as_of");
    }
    body
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Every form a value could leak in: as given, lower-cased, and each in base64, hex and
/// SHA-256 hex.
fn forms(values: &[&str]) -> Vec<String> {
    let mut forms = Vec::new();
    for value in values {
        for text in [value.to_string(), value.to_lowercase()] {
            forms.push(base64::engine::general_purpose::STANDARD.encode(&text));
            forms.push(base64::engine::general_purpose::STANDARD_NO_PAD.encode(&text));
            forms.push(hex(text.as_bytes()));
            forms.push(hex(&Sha256::digest(text.as_bytes())));
            forms.push(text);
        }
    }
    forms.sort();
    forms.dedup();
    forms
}

/// The forms found in `haystack` (compared case-insensitively for hex and clear text).
fn leaks<'a>(forms: &'a [String], haystack: &[u8]) -> Vec<&'a str> {
    let lower: Vec<u8> = haystack.to_ascii_lowercase();
    forms
        .iter()
        .filter(|form| {
            let needle = form.as_bytes();
            let found = |hay: &[u8]| hay.windows(needle.len()).any(|window| window == needle);
            found(haystack) || found(&lower)
        })
        .map(String::as_str)
        .collect()
}

fn files_under(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
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
    files
}

#[tokio::test]
async fn after_erasure_no_canary_is_in_any_response_file_or_log_line() {
    let data = tempfile::tempdir().unwrap();
    let mut process = spawn(data.path());
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", process.base);
    let send = |role: &str, request: reqwest::RequestBuilder| {
        request.header("authorization", bearer(role))
    };

    // Values no other test and no code holds: a match can only be a leak.
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("Quillon Canaryname {}", &unique[..8]);
    let email = format!("Canary.{}@Leak-Test.Example", &unique[8..16]);
    let ip = format!(
        "198.18.{}.{}",
        u8::from_str_radix(&unique[16..18], 16).unwrap(),
        u8::from_str_radix(&unique[18..20], 16).unwrap().max(1)
    );
    let canaries = forms(&[&name, &email, &ip]);

    let referrer = uuid(0x10);
    let person = uuid(0x11);
    let response = send(BILLING, client.post(url("/v1/accounts")))
        .json(
            &json!({"account_id": referrer, "name": "Referrer", "email": "ref@example.org",
                      "opened_at": "2025-01-01T00:00:00Z"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let code: Value = response.json().await.unwrap();
    let response = send(BILLING, client.post(url("/v1/accounts")))
        .json(&json!({
            "account_id": person, "name": name, "email": email, "signup_ip": ip,
            "referral_code": code["referral_code"], "opened_at": "2025-01-01T00:00:00Z",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = send(BILLING, client.post(url("/v1/payments")))
        .json(&json!({
            "payment_id": "pi_canary_1", "account_id": person, "kind": "credit_pack",
            "amount": "19.99", "currency": "EUR", "paid_at": "2026-10-03T10:00:00Z",
            "credits": 50,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // The scan can see the canaries: the export shows them before the erasure.
    let export_before = send(
        PRIVACY,
        client.get(url(&format!("/v1/privacy/exports/{person}"))),
    )
    .send()
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    let found = leaks(&canaries, &export_before);
    for value in [&name, &email, &ip] {
        assert!(found.contains(&value.as_str()), "the export shows {value}");
    }

    // The numbers, which erasure must leave exactly as they were.
    let numbers = [
        (AUDITOR, "/v1/reports/trial-balance".to_owned()),
        (AUDITOR, "/v1/reports/payouts?period=2026-10".to_owned()),
        (
            AUDITOR,
            format!("/v1/reports/commissions?affiliate_id={referrer}&period=2026-10"),
        ),
        (AUDITOR, "/v1/reports/donations?period=2026-10".to_owned()),
        (BILLING, format!("/v1/accounts/{referrer}/commissions")),
        (BILLING, format!("/v1/accounts/{person}/credits")),
    ];
    let mut numbers_before = Vec::new();
    for (role, path) in &numbers {
        let response = send(role, client.get(url(path))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        numbers_before.push(without_clock(response.json::<Value>().await.unwrap()));
    }
    let commissions: &Value = &numbers_before[4];
    assert!(
        commissions.to_string().contains("pi_canary_1"),
        "the referrer earned a commission on the erased member's payment: {commissions}"
    );

    let response = send(PRIVACY, client.post(url("/v1/privacy/erasures")))
        .json(&json!({"account_id": person, "request_id": uuid(0xee)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let mut seen: Vec<(String, Vec<u8>)> =
        vec![("erasure".into(), response.bytes().await.unwrap().to_vec())];

    // Erasure changed no number: balances, commissions (still attributed to the erased
    // member's payment), payouts, donations and credits read exactly as before.
    for ((role, path), before) in numbers.iter().zip(&numbers_before) {
        let response = send(role, client.get(url(path))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = response.bytes().await.unwrap().to_vec();
        let after = without_clock(serde_json::from_slice(&body).unwrap());
        assert_eq!(&after, before, "erasure changed {path}");
        seen.push((path.clone(), body));
    }

    let gets = [
        (BILLING, format!("/v1/accounts/{person}")),
        (BILLING, format!("/v1/accounts/{person}/credits")),
        (BILLING, format!("/v1/accounts/{person}/upline")),
        (BILLING, format!("/v1/accounts/{referrer}/downline")),
        (BILLING, format!("/v1/accounts/{referrer}")),
        (AUDITOR, format!("/v1/streams/account-{person}")),
        (AUDITOR, format!("/v1/streams/privacy-{person}")),
        (AUDITOR, "/v1/streams/payment-pi_canary_1".to_owned()),
        (AUDITOR, "/v1/events?limit=1000".to_owned()),
        (AUDITOR, "/v1/verify".to_owned()),
        (PRIVACY, format!("/v1/privacy/exports/{person}")),
        (PRIVACY, "/v1/privacy/requests".to_owned()),
        (BILLING, "/metrics".to_owned()),
    ];
    for (role, path) in &gets {
        let response = send(role, client.get(url(path))).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        seen.push((path.clone(), response.bytes().await.unwrap().to_vec()));
    }
    let events: Value = serde_json::from_slice(&seen[numbers.len() + 9].1).unwrap();
    assert!(
        !events["has_more"].as_bool().unwrap(),
        "one page holds the log"
    );
    for (path, body) in &seen {
        assert_eq!(
            leaks(&canaries, body),
            Vec::<&str>::new(),
            "in the response of {path}"
        );
    }

    let output = stop(&mut process);
    assert!(
        output.contains("erasure carried out"),
        "the log is captured: {output}"
    );
    assert_eq!(
        leaks(&canaries, output.as_bytes()),
        Vec::<&str>::new(),
        "in the log lines"
    );
    let files = files_under(data.path());
    assert!(files
        .iter()
        .any(|path| path.starts_with(data.path().join("vault"))));
    assert!(files
        .iter()
        .any(|path| path.starts_with(data.path().join("log"))));
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            leaks(&canaries, &bytes),
            Vec::<&str>::new(),
            "in {}",
            path.display()
        );
    }
}

#[tokio::test]
async fn the_erase_command_erases_offline_and_running_it_again_changes_nothing() {
    let data = tempfile::tempdir().unwrap();
    let mut process = spawn(data.path());
    let person = uuid(0x21);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/accounts", process.base))
        .header("authorization", bearer(BILLING))
        .json(&json!({"account_id": person, "name": "Offline Person", "email": "off@example.org"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    stop(&mut process);

    let erase = || {
        Command::new(BINARY)
            .args(["erase", "--data"])
            .arg(data.path())
            .args(["--account", &person, "--request-id", &uuid(0xd1)])
            .env_remove("REFLEDGER_MASTER_KEY_FILE")
            .output()
            .unwrap()
    };
    let first = erase();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let proof: Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(proof["account_id"], person);
    assert_eq!(
        proof["proof"]["groups_shredded"],
        json!(["profile", "payout"])
    );
    let second = erase();
    assert!(second.status.success());
    let again: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(again["proof"], proof["proof"]);
    assert_eq!(again["requested_at"], proof["requested_at"]);

    let unknown = Command::new(BINARY)
        .args(["erase", "--data"])
        .arg(data.path())
        .args(["--account", &uuid(0x99), "--request-id", &uuid(0xd2)])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("does not exist"));

    // The server, started again, finds the person erased.
    let mut process = spawn(data.path());
    let export = reqwest::Client::new()
        .get(format!("{}/v1/privacy/exports/{person}", process.base))
        .header("authorization", bearer(PRIVACY))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!export.contains("Offline Person"), "{export}");
    assert!(export.contains("erased_at"), "{export}");
    stop(&mut process);
}
