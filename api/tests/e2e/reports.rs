//! Commissions by state and the finance reports, JSON and CSV, over real HTTP.

use api::tokens::Role;
use chrono::{Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestServer};

async fn open(server: &TestServer, name: &str, code: Option<&str>) -> Value {
    let mut request = json!({
        "account_id": uuid::Uuid::new_v4(), "name": name,
        "email": format!("{}@example.org", name.to_lowercase()),
        // Before every payment the tests date: a payment never precedes its payer.
        "opened_at": "2025-01-01T00:00:00Z",
    });
    if let Some(code) = code {
        request["referral_code"] = json!(code);
    }
    let (status, body) = server
        .command("/v1/accounts", Role::Billing, &request)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn pay(server: &TestServer, id: &str, payer: &Value, amount: &str, paid_at: &str) {
    let request = json!({
        "payment_id": id, "account_id": payer["account_id"], "kind": "subscription",
        "amount": amount, "currency": "EUR", "paid_at": paid_at,
    });
    let (status, body) = server
        .command("/v1/payments", Role::Billing, &request)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn get_json(server: &TestServer, path: &str, role: Role) -> Value {
    let response = server.get(path, Some(role)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// (payment id, status) of each commission listed.
fn listed(body: &Value) -> Vec<(String, String)> {
    body["commissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["payment_id"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn commissions_by_state_and_reports_in_json_and_csv() {
    let server = TestServer::start().await;
    let referrer = open(&server, "Rita", None).await;
    let payer = open(&server, "Paul", referrer["referral_code"].as_str()).await;
    let rita = referrer["account_id"].as_str().unwrap();
    pay(&server, "pi_paid", &payer, "300.00", "2026-01-03T10:00:00Z").await;
    pay(
        &server,
        "pi_refunded",
        &payer,
        "50.00",
        "2026-01-05T10:00:00Z",
    )
    .await;
    let yesterday = (Utc::now() - Duration::days(1)).to_rfc3339_opts(SecondsFormat::Secs, true);
    pay(&server, "pi_recent", &payer, "100.00", &yesterday).await;
    let (status, body) = server
        .command(
            "/v1/payments/pi_refunded/refunds",
            Role::Billing,
            &json!({"refund_id": "re_1", "amount": "50.00", "reason": "refund",
                    "refunded_at": "2026-01-06T10:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let path = format!("/v1/accounts/{rita}/commissions");
    let all = get_json(&server, &path, Role::Billing).await;
    assert_eq!(
        listed(&all),
        [
            ("pi_paid".to_owned(), "payable".to_owned()),
            ("pi_refunded".to_owned(), "reversed".to_owned()),
            ("pi_recent".to_owned(), "held".to_owned()),
        ]
    );
    let first = &all["commissions"][0];
    assert_eq!(first["amount"], "60.00");
    assert_eq!(first["rate"], "0.20");
    assert_eq!(first["level"], 1);
    assert_eq!(first["payer_id"], payer["account_id"]);
    assert_eq!(all["commissions"][1]["reversed"], "10.00");
    for (status, payment) in [
        ("held", "pi_recent"),
        ("reversed", "pi_refunded"),
        ("payable", "pi_paid"),
    ] {
        let body = get_json(&server, &format!("{path}?status={status}"), Role::Finance).await;
        assert_eq!(listed(&body), [(payment.to_owned(), status.to_owned())]);
    }

    let (status, run) = server
        .command(
            "/v1/payout-runs",
            Role::Finance,
            &json!({"period": "2026-02"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let paid = get_json(&server, &format!("{path}?status=paid"), Role::Billing).await;
    assert_eq!(listed(&paid), [("pi_paid".to_owned(), "paid".to_owned())]);

    // The payout report, JSON by default, CSV when asked either way.
    let report = get_json(&server, "/v1/reports/payouts?period=2026-02", Role::Finance).await;
    assert_eq!(report["period"], "2026-02");
    assert_eq!(report["reconciled"], true);
    let row = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["affiliate_id"] == rita)
        .expect("Rita's row");
    assert_eq!(row["amount"], "60.00");
    for request in [
        server.get(
            "/v1/reports/payouts?period=2026-02&format=csv",
            Some(Role::Auditor),
        ),
        server
            .get("/v1/reports/payouts?period=2026-02", Some(Role::Auditor))
            .header("accept", "text/csv"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        let csv = response.text().await.unwrap();
        let mut lines = csv.lines();
        assert!(
            lines.next().unwrap().starts_with("period,affiliate_id,"),
            "{csv}"
        );
        assert!(
            lines
                .any(|line| line.starts_with(&format!("2026-02,{rita},"))
                    && line.contains(",60.00,")),
            "{csv}"
        );
    }

    let trial = get_json(&server, "/v1/reports/trial-balance", Role::Auditor).await;
    assert_eq!(trial["balanced"], true, "{trial}");
    let before = get_json(
        &server,
        "/v1/reports/trial-balance?as_of=2026-01-04T00:00:00Z",
        Role::Finance,
    )
    .await;
    assert_eq!(before["balanced"], true);
    assert_ne!(before["lines"], trial["lines"], "history differs from now");
    let response = server
        .get("/v1/reports/trial-balance?format=csv", Some(Role::Finance))
        .send()
        .await
        .unwrap();
    assert!(response.text().await.unwrap().lines().count() > 1);

    let statement = get_json(
        &server,
        &format!("/v1/reports/commissions?affiliate_id={rita}&period=2026-01"),
        Role::Finance,
    )
    .await;
    let kinds: Vec<(&str, &str)> = statement["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            (
                line["kind"].as_str().unwrap(),
                line["payment_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("earned", "pi_paid"),
            ("earned", "pi_refunded"),
            ("reversed", "pi_refunded")
        ]
    );
    let donations = get_json(
        &server,
        "/v1/reports/donations?period=2026-01",
        Role::Auditor,
    )
    .await;
    assert!(donations.is_object());
    server.stop().await;
}

#[tokio::test]
async fn reports_refuse_other_roles_and_bad_queries() {
    let server = TestServer::start().await;
    for role in [Role::Billing, Role::Privacy, Role::Admin] {
        let response = server
            .get("/v1/reports/trial-balance", Some(role))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{role}");
    }
    let someone = open(&server, "Sam", None).await;
    let response = server
        .get(
            &format!(
                "/v1/accounts/{}/commissions",
                someone["account_id"].as_str().unwrap()
            ),
            Some(Role::Auditor),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    for (path, field) in [
        ("/v1/reports/payouts?period=2026-13", "period"),
        ("/v1/reports/trial-balance?as_of=yesterday", "as_of"),
        (
            "/v1/reports/commissions?affiliate_id=x&period=2026-01",
            "affiliate_id",
        ),
        ("/v1/reports/donations", "period"),
        ("/v1/reports/payouts?period=2026-01&format=xml", "format"),
    ] {
        let response = server.get(path, Some(Role::Finance)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = problem(response).await;
        assert!(
            body["detail"].as_str().unwrap().contains(field),
            "{path}: {body}"
        );
    }
    let response = server
        .get(
            &format!(
                "/v1/accounts/{}/commissions?status=late",
                someone["account_id"].as_str().unwrap()
            ),
            Some(Role::Billing),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = server
        .get(
            &format!("/v1/accounts/{}/commissions", uuid::Uuid::new_v4()),
            Some(Role::Billing),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(response).await["type"], "account_not_found");
    server.stop().await;
}

fn refledger(args: &[&str], data: &std::path::Path) -> std::process::Output {
    std::process::Command::new(crate::privacy::BINARY)
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap()
}

#[tokio::test]
async fn report_and_verify_commands_read_the_data_directory_and_verify_names_corruption() {
    use crate::privacy::{bearer, spawn, stop, BILLING};
    let data = tempfile::tempdir().unwrap();
    let mut process = spawn(data.path());
    let client = reqwest::Client::new();
    let mut code = None;
    let mut ids = Vec::new();
    for name in ["Vera", "Walt"] {
        let id = uuid::Uuid::new_v4().to_string();
        let mut request = json!({"account_id": id, "name": name, "email": format!("{name}@example.org"),
                   "opened_at": "2026-01-01T00:00:00Z"});
        if let Some(code) = &code {
            request["referral_code"] = json!(code);
        }
        let response = client
            .post(format!("{}/v1/accounts", process.base))
            .header("authorization", bearer(BILLING))
            .json(&request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        code = Some(body["referral_code"].as_str().unwrap().to_owned());
        ids.push(id);
    }
    let response = client
        .post(format!("{}/v1/payments", process.base))
        .header("authorization", bearer(BILLING))
        .json(
            &json!({"payment_id": "pi_cli", "account_id": ids[1], "kind": "subscription",
                      "amount": "100.00", "currency": "EUR", "paid_at": "2026-01-03T10:00:00Z"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    stop(&mut process);

    let verified = refledger(&["verify"], data.path());
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(stdout.lines().last() == Some("ok"), "{stdout}");
    assert!(
        stdout.contains("files: 6 events") || stdout.contains("files: "),
        "{stdout}"
    );

    let statement = refledger(
        &[
            "report",
            "commissions",
            "--affiliate-id",
            &ids[0],
            "--period",
            "2026-01",
            "--format",
            "csv",
        ],
        data.path(),
    );
    assert!(
        statement.status.success(),
        "{}",
        String::from_utf8_lossy(&statement.stderr)
    );
    let csv = String::from_utf8_lossy(&statement.stdout);
    assert!(csv.contains("pi_cli") && csv.contains("20.00"), "{csv}");
    let trial = refledger(&["report", "trial-balance"], data.path());
    let trial: Value = serde_json::from_slice(&trial.stdout).unwrap();
    assert_eq!(trial["balanced"], true);
    let missing = refledger(&["report", "payouts"], data.path());
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--period"));

    // One flipped bit inside the first record: verify fails and says where.
    let segment = std::fs::read_dir(data.path().join("log").join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .expect("a segment file");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();
    let corrupt = refledger(&["verify"], data.path());
    assert_eq!(
        corrupt.status.code(),
        Some(1),
        "verify's status for corruption"
    );
    let stdout = String::from_utf8_lossy(&corrupt.stdout);
    assert!(
        stdout.contains("CORRUPT") && stdout.contains(".seg offset 32:"),
        "{stdout}"
    );
}
