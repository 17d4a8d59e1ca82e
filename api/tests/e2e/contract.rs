//! The contract a generated client relies on (issue #18): stated times checked the same
//! way everywhere, bodies that are JSON objects, errors that name the field in the
//! caller's words, the conflict codes docs/API.md promises, and idempotency that compares
//! what a request means rather than how it was spelled.

use api::tokens::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestServer};

const OPENED_AT: &str = "2026-01-01T00:00:00Z";

async fn open_account(server: &TestServer) -> String {
    let account = uuid::Uuid::new_v4().to_string();
    let (status, body) = server
        .command(
            "/v1/accounts",
            Role::Billing,
            &json!({"account_id": account, "name": "Tess", "email": "tess@example.org",
                    "opened_at": OPENED_AT}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    account
}

async fn refused(
    server: &TestServer,
    path: &str,
    role: Role,
    body: &Value,
    status: StatusCode,
) -> Value {
    let response = server
        .post(path, Some(role))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), status, "{path} {body}");
    problem(response).await
}

fn detail(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap()
}

fn payment(account: &str, id: &str, paid_at: &str) -> Value {
    json!({
        "payment_id": id, "account_id": account, "kind": "subscription",
        "amount": "19.99", "currency": "EUR", "paid_at": paid_at,
    })
}

#[tokio::test]
async fn money_dated_in_the_future_before_the_account_or_in_year_one_is_refused() {
    let server = TestServer::start().await;
    let account = open_account(&server).await;
    let events = server.event_count().await;
    for (paid_at, says) in [
        ("2036-01-01T00:00:00Z", "in the future"),
        ("9999-12-31T00:00:00Z", "outside the times"),
        ("0001-01-01T00:00:00Z", "outside the times"),
        ("2025-12-31T23:59:59Z", "before the account opened"),
    ] {
        let problem = refused(
            &server,
            "/v1/payments",
            Role::Billing,
            &payment(&account, "pi_dated", paid_at),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(problem["type"], "validation_failed");
        assert!(detail(&problem).starts_with("paid_at:"), "{problem}");
        assert!(detail(&problem).contains(says), "{paid_at}: {problem}");
    }
    let credits = format!("/v1/accounts/{account}/credits");
    let grant = json!({"grant_id": "g-far", "credits": 5, "reason": "goodwill",
                       "expires_at": "9999-12-31T23:59:59Z"});
    let problem = refused(
        &server,
        &format!("{credits}/grants"),
        Role::Billing,
        &grant,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).starts_with("expires_at:"), "{problem}");
    let early_grant = json!({"grant_id": "g-early", "credits": 5, "reason": "goodwill",
                             "granted_at": "2025-06-01T00:00:00Z"});
    let problem = refused(
        &server,
        &format!("{credits}/grants"),
        Role::Billing,
        &early_grant,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).starts_with("granted_at:"), "{problem}");
    assert_eq!(server.event_count().await, events, "nothing was recorded");

    // A payment dated sanely is recorded; a refund dated in the future is not.
    let (status, paid) = server
        .command(
            "/v1/payments",
            Role::Billing,
            &payment(&account, "pi_ok", "2026-02-01T00:00:00Z"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    let refund = json!({"refund_id": "re_future", "amount": "1.00", "reason": "refund",
                        "refunded_at": "2036-01-01T00:00:00Z"});
    let problem = refused(
        &server,
        "/v1/payments/pi_ok/refunds",
        Role::Billing,
        &refund,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).starts_with("refunded_at:"), "{problem}");
}

#[tokio::test]
async fn every_time_in_an_answer_is_rfc3339() {
    let server = TestServer::start().await;
    let referrer = open_account(&server).await;
    let referrer: Value = server
        .get(&format!("/v1/accounts/{referrer}"), Some(Role::Billing))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payer = uuid::Uuid::new_v4().to_string();
    let (status, opened) = server
        .command(
            "/v1/accounts",
            Role::Billing,
            &json!({"account_id": payer, "name": "Uma", "email": "uma@example.org",
                    "opened_at": OPENED_AT, "signup_ip": "198.51.100.9",
                    "referral_code": referrer["referral_code"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    // The latest instant accepted, so the hold's end is as late as it gets.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, paid) = server
        .command(
            "/v1/payments",
            Role::Billing,
            &payment(&payer, "pi_now", &now),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    let payable_at = paid["commissions"][0]["payable_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(payable_at).is_ok(),
        "{payable_at} is RFC 3339"
    );
    assert!(!payable_at.starts_with('+'), "{payable_at}");
}

#[tokio::test]
async fn a_body_must_be_a_json_object() {
    let server = TestServer::start().await;
    let account = open_account(&server).await;
    let credits = format!("/v1/accounts/{account}/credits");
    let (status, _) = server
        .command(
            &format!("{credits}/grants"),
            Role::Billing,
            &json!({"grant_id": "g", "credits": 10, "reason": "goodwill"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let events = server.event_count().await;
    for body in [
        json!(["arr1", 1, "chef", null]),
        json!("spend"),
        json!(3),
        json!(null),
    ] {
        let problem = refused(
            &server,
            &format!("{credits}/spend"),
            Role::Billing,
            &body,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(problem["type"], "validation_failed", "{body}: {problem}");
        assert!(detail(&problem).contains("JSON object"), "{problem}");
    }
    assert_eq!(server.event_count().await, events, "no credit was spent");
    let balance: Value = server
        .get(&credits, Some(Role::Billing))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(balance["balance"], 10);
}

#[tokio::test]
async fn errors_name_the_field_sent_never_a_rust_type_and_stay_short() {
    let server = TestServer::start().await;
    let account = open_account(&server).await;
    let problem = refused(
        &server,
        "/v1/donations",
        Role::Finance,
        &json!({"period": "2026-01", "organisation": "ocean-cleanup", "share": "2.5"}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).starts_with("share:"), "{problem}");
    let problem = refused(
        &server,
        "/v1/payments/pi_x/commissions/abc/review",
        Role::Finance,
        &json!({"decision": "release"}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).contains("level"), "{problem}");
    let spend = format!("/v1/accounts/{account}/credits/spend");
    let long = "x".repeat(60 * 1024 - 100);
    for body in [
        json!({"spend_id": "s", "credits": "ten", "persona": "chef"}),
        json!({"spend_id": "s", "credits": -1, "persona": "chef"}),
        json!({"spend_id": "s", "credits": long, "persona": "chef"}),
        json!({"spend_id": long, "credits": 1, "persona": "chef"}),
    ] {
        let problem = refused(
            &server,
            &spend,
            Role::Billing,
            &body,
            StatusCode::BAD_REQUEST,
        )
        .await;
        let text = detail(&problem);
        for rust in ["u8", "u64", "usize", "struct ", "Request"] {
            assert!(!text.contains(rust), "{rust} leaks: {text}");
        }
        assert!(text.len() <= 512, "{} bytes echoed", text.len());
        assert!(
            text.starts_with("credits") || text.starts_with("spend_id"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn the_documented_conflicts_and_a_typed_idempotency() {
    let server = TestServer::start().await;
    let account = open_account(&server).await;
    // The same amount spelled twice ways is the same payment.
    let mut first = payment(&account, "pi_spelled", "2026-02-01T00:00:00Z");
    first["amount"] = "5.0".into();
    let (status, answer) = server.command("/v1/payments", Role::Billing, &first).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let mut again = first.clone();
    again["amount"] = "5.00".into();
    let (status, replay) = server.command("/v1/payments", Role::Billing, &again).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay, answer);
    let refund = |amount: &str| {
        json!({"refund_id": "re_1", "amount": amount, "reason": "refund",
               "refunded_at": "2026-02-02T00:00:00Z"})
    };
    let path = "/v1/payments/pi_spelled/refunds";
    let (status, _) = server.command(path, Role::Billing, &refund("1.5")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = server.command(path, Role::Billing, &refund("1.50")).await;
    assert_eq!(status, StatusCode::OK);

    // A subscription payment names a subscription the payer has.
    let mut unknown = payment(&account, "pi_unknown_sub", "2026-02-01T00:00:00Z");
    unknown["subscription_id"] = "sub_nobody".into();
    let problem = refused(
        &server,
        "/v1/payments",
        Role::Billing,
        &unknown,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(problem["type"], "subscription_not_found", "{problem}");

    // A donation of nothing is no donation.
    let problem = refused(
        &server,
        "/v1/donations",
        Role::Finance,
        &json!({"period": "2026-01", "organisation": "ocean-cleanup", "share": "0"}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).starts_with("share:"), "{problem}");

    // A period runs once: again as of another time is `payout_run_exists`.
    let run = json!({"period": "2026-01", "as_of": "2026-02-01T00:00:00Z"});
    let (status, first_run) = server.command("/v1/payout-runs", Role::Finance, &run).await;
    assert_eq!(status, StatusCode::CREATED, "{first_run}");
    let (status, same) = server.command("/v1/payout-runs", Role::Finance, &run).await;
    assert_eq!((status, &same), (StatusCode::OK, &first_run));
    let problem = refused(
        &server,
        "/v1/payout-runs",
        Role::Finance,
        &json!({"period": "2026-01", "as_of": "2026-02-05T00:00:00Z"}),
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(problem["type"], "payout_run_exists", "{problem}");
}
