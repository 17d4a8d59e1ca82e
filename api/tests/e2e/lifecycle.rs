//! The endpoints a whole simulated history needs besides signups, grants, spends and
//! payments: subscriptions, credit expiry, corrections of personal data (billing),
//! commission reviews, payout settlements and donations (finance), and times stated by
//! the caller. Each: a repeat of the same body answers `200` with the first result, and
//! records nothing; another body under the same id answers `409 idempotency_conflict`, or
//! the rule it breaks where docs/API.md names one (`donation_exists`,
//! `payout_already_settled`).

use api::tokens::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestServer};

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn open(server: &TestServer, n: u8, referral_code: Option<&str>, card: &str) -> Value {
    let request = json!({
        "account_id": new_id(),
        "name": format!("Person {n}"),
        "email": format!("person{n}@example.org"),
        "signup_ip": format!("198.51.100.{n}"),
        "referral_code": referral_code,
        "payment_fingerprint": card,
        "opened_at": "2026-01-02T10:00:00Z",
    });
    let (status, body) = server
        .command("/v1/accounts", Role::Billing, &request)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn id(account: &Value) -> &str {
    account["account_id"].as_str().unwrap()
}

/// Sends the same command twice: `201` then `200` with the same body, and no new event.
async fn once(server: &TestServer, path: &str, role: Role, body: &Value) -> Value {
    let (status, first) = server.command(path, role, body).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {first}");
    let events = server.event_count().await;
    let (status, again) = server.command(path, role, body).await;
    assert_eq!(status, StatusCode::OK, "{path}: {again}");
    assert_eq!(again, first, "{path}: a repeat answers as the first time");
    assert_eq!(server.event_count().await, events, "{path}: nothing new");
    first
}

async fn conflict(server: &TestServer, path: &str, role: Role, body: &Value) {
    conflict_as(server, path, role, body, "idempotency_conflict").await;
}

/// Another body under the same id, refused with `code`.
async fn conflict_as(server: &TestServer, path: &str, role: Role, body: &Value, code: &str) {
    let response = server
        .post(path, Some(role))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT, "{path}");
    let problem = problem(response).await;
    assert_eq!(problem["type"], code, "{path}: {problem}");
}

#[tokio::test]
async fn subscriptions_expiry_and_corrections_with_stated_times() {
    let server = TestServer::start().await;
    let account = open(&server, 1, None, "card-1").await;
    let account = id(&account);

    let start = json!({
        "subscription_id": "sub_1",
        "product": "pro",
        "started_at": "2026-01-02T10:05:00Z",
    });
    let path = format!("/v1/accounts/{account}/subscriptions");
    let started = once(&server, &path, Role::Billing, &start).await;
    assert_eq!(started["status"], "active");
    assert_eq!(started["at"], "2026-01-02T10:05:00.000000Z");
    conflict(
        &server,
        &path,
        Role::Billing,
        &json!({"subscription_id": "sub_1", "product": "basic", "started_at": "2026-01-02T10:05:00Z"}),
    )
    .await;

    let cancel = format!("/v1/accounts/{account}/subscriptions/sub_1/cancellation");
    let cancelled = once(
        &server,
        &cancel,
        Role::Billing,
        &json!({"cancelled_at": "2026-02-02T10:05:00Z"}),
    )
    .await;
    assert_eq!(cancelled["status"], "cancelled");

    // A grant made in January that expired in February, expired at the month's end.
    let grant = json!({
        "grant_id": "welcome-1",
        "credits": 100,
        "reason": "promotion",
        "expires_at": "2026-01-16T10:00:00Z",
        "granted_at": "2026-01-02T10:00:00Z",
    });
    let (status, body) = server
        .command(
            &format!("/v1/accounts/{account}/credits/grants"),
            Role::Billing,
            &grant,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let spend = json!({
        "spend_id": "sp-1",
        "credits": 30,
        "persona": "persona-chef",
        "spent_at": "2026-01-03T10:00:00Z",
    });
    let (status, body) = server
        .command(
            &format!("/v1/accounts/{account}/credits/spend"),
            Role::Billing,
            &spend,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["balance"], 70,
        "spent at the stated time, before the expiry"
    );

    let expire = format!("/v1/accounts/{account}/credits/expirations");
    let expired = once(
        &server,
        &expire,
        Role::Billing,
        &json!({"expired_at": "2026-02-01T01:00:00Z"}),
    )
    .await;
    assert_eq!(
        expired["expired"],
        json!([{"grant_id": "welcome-1", "credits": 70}])
    );
    // A later run finds nothing left: 200, nothing recorded.
    let events = server.event_count().await;
    let (status, body) = server
        .command(
            &expire,
            Role::Billing,
            &json!({"expired_at": "2026-03-01T01:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expired"], json!([]));
    assert_eq!(server.event_count().await, events);

    let correct = format!("/v1/accounts/{account}/personal-data");
    let correction = json!({
        "correction_id": "c-1",
        "name": "Person One",
        "email": "one@example.org",
        "signup_ip": "198.51.100.1",
        "corrected_at": "2026-02-03T00:00:00Z",
    });
    once(&server, &correct, Role::Billing, &correction).await;
    let mut other = correction.clone();
    other["email"] = "two@example.org".into();
    conflict(&server, &correct, Role::Billing, &other).await;

    // Stated times may not lie in the future; the problem names the field.
    let response = server
        .post(&expire, Some(Role::Billing))
        .json(&json!({"expired_at": "2999-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem = problem(response).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("expired_at:"),
        "{problem}"
    );
    // Finance may not run billing's commands.
    let response = server
        .post(&expire, Some(Role::Finance))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn reviews_settlements_and_donations_are_finances_and_idempotent() {
    let server = TestServer::start().await;
    let referrer = open(&server, 1, None, "card-1").await;
    // Signed up with the referrer's card: a self-referral, its commissions held.
    let code = referrer["referral_code"].as_str().unwrap();
    let referred = open(&server, 2, Some(code), "card-1").await;
    assert_eq!(referred["flagged"], true, "{referred}");
    let honest = open(&server, 3, Some(code), "card-3").await;
    assert_eq!(honest["flagged"], false, "{honest}");
    for (payment, payer, card) in [("pi_1", &referred, "card-1"), ("pi_2", &honest, "card-3")] {
        let (status, body) = server
            .command(
                "/v1/payments",
                Role::Billing,
                &json!({
                    "payment_id": payment,
                    "account_id": id(payer),
                    "kind": "subscription",
                    "amount": "400.00",
                    "currency": "EUR",
                    "paid_at": "2026-01-05T00:00:00Z",
                    "payment_fingerprint": card,
                }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let review = "/v1/payments/pi_1/commissions/1/review";
    let body = json!({"decision": "forfeit", "reviewed_at": "2026-01-10T00:00:00Z"});
    let response = server
        .post(review, Some(Role::Billing))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "reviews are finance's"
    );
    let reviewed = once(&server, review, Role::Finance, &body).await;
    assert_eq!(reviewed["amount"], "80.00");
    assert_eq!(reviewed["beneficiary_id"], referrer["account_id"]);
    conflict(
        &server,
        review,
        Role::Finance,
        &json!({"decision": "release", "reviewed_at": "2026-01-10T00:00:00Z"}),
    )
    .await;

    // January's run pays the honest referral's commission (80.00, held 30 days).
    let (status, run) = server
        .command(
            "/v1/payout-runs",
            Role::Finance,
            &json!({"period": "2026-02", "as_of": "2026-03-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["payouts"][0]["amount"], "80.00", "{run}");
    let settle = format!("/v1/payouts/2026-02/{}/settlement", id(&referrer));
    let failed = json!({
        "status": "failed",
        "reason": "the bank refused the transfer",
        "settled_at": "2026-03-03T00:00:00Z",
    });
    let settled = once(&server, &settle, Role::Finance, &failed).await;
    assert_eq!(settled["status"], "failed");
    assert_eq!(settled["amount"], "80.00");
    conflict_as(
        &server,
        &settle,
        Role::Finance,
        &json!({"status": "sent", "reference": "po-1", "settled_at": "2026-03-03T00:00:00Z"}),
        "payout_already_settled",
    )
    .await;
    let response = server
        .post(&settle, Some(Role::Finance))
        .json(&json!({"status": "sent", "settled_at": "2026-03-03T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem_body = problem(response).await;
    assert!(
        problem_body["detail"]
            .as_str()
            .unwrap()
            .starts_with("reference:"),
        "{problem_body}"
    );

    let donation = json!({
        "period": "2026-01",
        "organisation": "ocean-cleanup",
        "share": "0.02",
        "allocated_at": "2026-02-01T01:00:00Z",
    });
    let donated = once(&server, "/v1/donations", Role::Finance, &donation).await;
    assert_eq!(donated["amount"], "16.00", "2% of 800.00: {donated}");
    let mut other = donation.clone();
    other["share"] = "0.03".into();
    conflict_as(
        &server,
        "/v1/donations",
        Role::Finance,
        &other,
        "donation_exists",
    )
    .await;
    let mut early = donation.clone();
    early["period"] = "2026-02".into();
    early["allocated_at"] = "2026-02-10T00:00:00Z".into();
    let response = server
        .post("/v1/donations", Some(Role::Finance))
        .json(&early)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(response).await["type"], "donation_too_early");
}
