//! The domain endpoints end to end: accounts and referrals, credits, payments with their
//! commissions, refunds with their clawbacks, payout runs and the plan.

use api::tokens::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestServer};

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn open(server: &TestServer, name: &str, referral_code: Option<&str>) -> Value {
    let mut request = json!({
        "account_id": new_id(),
        "name": name,
        "email": format!("{}@example.org", name.to_lowercase()),
        "signup_ip": "203.0.113.7",
        // Before every payment the tests date: a payment never precedes its payer.
        "opened_at": "2025-01-01T00:00:00Z",
    });
    if let Some(code) = referral_code {
        request["referral_code"] = code.into();
        // Distinct IPs: a shared one would flag the referral as a self-referral.
        request["signup_ip"] = format!("198.51.100.{}", name.len()).into();
    }
    let (status, body) = server
        .command("/v1/accounts", Role::Billing, &request)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// A, who referred B, who referred C.
async fn chain(server: &TestServer) -> (Value, Value, Value) {
    let a = open(server, "Ada", None).await;
    let b = open(server, "Bob", Some(a["referral_code"].as_str().unwrap())).await;
    let c = open(server, "Carla", Some(b["referral_code"].as_str().unwrap())).await;
    (a, b, c)
}

fn id(account: &Value) -> &str {
    account["account_id"].as_str().unwrap()
}

#[tokio::test]
async fn signups_record_referrers_and_repeat_idempotently() {
    let server = TestServer::start().await;
    let (a, b, c) = chain(&server).await;
    assert_eq!(a["referrer_id"], Value::Null);
    assert_eq!(b["referrer_id"], a["account_id"]);
    assert_eq!(c["referrer_id"], b["account_id"]);
    assert_eq!(c["flagged"], false);
    assert_eq!(a["referral_code"].as_str().unwrap().len(), 8);

    let request = json!({"account_id": new_id(), "name": "Dan", "email": "dan@example.org"});
    let (status, first) = server
        .command("/v1/accounts", Role::Billing, &request)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let events = server.event_count().await;
    let (status, again) = server
        .command("/v1/accounts", Role::Billing, &request)
        .await;
    assert_eq!(status, StatusCode::OK, "a repeat answers 200");
    assert_eq!(again, first);
    assert_eq!(
        server.event_count().await,
        events,
        "a repeat records nothing"
    );
    let mut changed = request.clone();
    changed["name"] = "Daniel".into();
    let response = server
        .post("/v1/accounts", Some(Role::Billing))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem(response).await["type"], "account_exists");

    // Signing up with one's own code from the same IP is flagged, not refused.
    let (status, sock) = server
        .command(
            "/v1/accounts",
            Role::Billing,
            &json!({"account_id": new_id(), "name": "Ada Again", "email": "ada.again@example.org",
                    "signup_ip": "203.0.113.7", "referral_code": a["referral_code"],
                    "opened_at": "2025-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(sock["flagged"], true, "{sock}");
    let flagged: Value = server
        .get(&format!("/v1/accounts/{}", id(&sock)), Some(Role::Billing))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(flagged["fraud_flags"], json!(["self_referral_ip"]));

    // Without an account id, the Idempotency-Key header makes the retry safe.
    let anonymous = json!({"name": "Eve", "email": "eve@example.org"});
    let send = || {
        server
            .post("/v1/accounts", Some(Role::Billing))
            .header("Idempotency-Key", "signup-eve-1")
            .json(&anonymous)
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap(), first);

    let response = server
        .post("/v1/accounts", Some(Role::Billing))
        .json(&json!({"name": "Fay", "email": "fay@example.org", "referral_code": "ZZZZZZZZ"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(response).await["type"], "referrer_not_found");

    // Auditors see every event, never the personal data in them.
    let page = server
        .get("/v1/events?limit=1000", Some(Role::Auditor))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("AccountOpened"));
    assert!(page.contains(api::http::events::WITHHELD));
    for secret in ["Carla", "carla@example.org", "203.0.113.7"] {
        assert!(!page.contains(secret), "{secret} shown to an auditor");
    }

    let account: Value = server
        .get(&format!("/v1/accounts/{}", id(&c)), Some(Role::Billing))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(account["referrer_id"], b["account_id"]);
    assert!(account.get("name").is_none() && account.get("email").is_none());
    let response = server
        .get(&format!("/v1/accounts/{}", new_id()), Some(Role::Billing))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(response).await["type"], "account_not_found");
    server.stop().await;
}

#[tokio::test]
async fn upline_and_downline_walk_the_referral_tree() {
    let server = TestServer::start().await;
    let (a, b, c) = chain(&server).await;
    let upline: Value = server
        .get(
            &format!("/v1/accounts/{}/upline", id(&c)),
            Some(Role::Billing),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let levels: Vec<(&str, u64)> = upline["upline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|link| {
            (
                link["account_id"].as_str().unwrap(),
                link["level"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(levels, [(id(&b), 1), (id(&a), 2)]);

    for (depth, expected) in [(1, vec![(id(&b), 1)]), (2, vec![(id(&b), 1), (id(&c), 2)])] {
        let downline: Value = server
            .get(
                &format!("/v1/accounts/{}/downline?depth={depth}", id(&a)),
                Some(Role::Billing),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let levels: Vec<(&str, u64)> = downline["downline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|link| {
                (
                    link["account_id"].as_str().unwrap(),
                    link["level"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(levels, expected, "depth {depth}");
    }
    let response = server
        .get(
            &format!("/v1/accounts/{}/downline?depth=0", id(&a)),
            Some(Role::Billing),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(problem(response).await["detail"]
        .as_str()
        .unwrap()
        .starts_with("depth"));
    server.stop().await;
}

#[tokio::test]
async fn credits_are_granted_spent_and_never_go_below_zero() {
    let server = TestServer::start().await;
    let account = open(&server, "Gus", None).await;
    let credits = format!("/v1/accounts/{}/credits", id(&account));
    let (status, body) = server
        .command(
            &format!("{credits}/grants"),
            Role::Billing,
            &json!({"grant_id": "g-1", "credits": 100, "reason": "promotion",
                    "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["balance"], 100);

    let spend = json!({"spend_id": "s-1", "credits": 30, "persona": "chef"});
    let (status, body) = server
        .command(&format!("{credits}/spend"), Role::Billing, &spend)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["balance"], 70);
    let (status, body) = server
        .command(
            &format!("{credits}/spend"),
            Role::Billing,
            &json!({"spend_id": "s-2", "credits": 5, "persona": "chef"}),
        )
        .await;
    assert_eq!(
        (status, body["balance"].as_u64()),
        (StatusCode::OK, Some(65))
    );

    // The repeat answers what the first spend answered, and spends nothing.
    let (status, body) = server
        .command(&format!("{credits}/spend"), Role::Billing, &spend)
        .await;
    assert_eq!(
        (status, body["balance"].as_u64()),
        (StatusCode::OK, Some(70))
    );
    let mut changed = spend.clone();
    changed["credits"] = 31.into();
    let response = server
        .post(&format!("{credits}/spend"), Some(Role::Billing))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem(response).await["type"], "idempotency_conflict");

    let events = server.event_count().await;
    let response = server
        .post(&format!("{credits}/spend"), Some(Role::Billing))
        .json(&json!({"spend_id": "s-3", "credits": 66, "persona": "chef"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = problem(response).await;
    assert_eq!(body["type"], "insufficient_credits");
    assert_eq!(
        server.event_count().await,
        events,
        "a rejected spend records nothing"
    );

    let wallet: Value = server
        .get(&credits, Some(Role::Billing))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wallet["balance"], 65);
    assert_eq!(wallet["grants"][0]["grant_id"], "g-1");
    assert_eq!(wallet["grants"][0]["credits"], 100);
    assert_eq!(wallet["grants"][0]["remaining"], 65);
    assert_eq!(
        wallet["grants"][0]["expires_at"],
        "2999-01-01T00:00:00.000000Z"
    );

    let response = server
        .post(
            &format!("/v1/accounts/{}/credits/spend", new_id()),
            Some(Role::Billing),
        )
        .json(&json!({"spend_id": "s-1", "credits": 1, "persona": "chef"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(response).await["type"], "account_not_found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_spends_against_one_hundred_credits_accept_exactly_one_hundred() {
    let server = TestServer::start().await;
    let account = open(&server, "Hal", None).await;
    let credits = format!("/v1/accounts/{}/credits", id(&account));
    let (status, _) = server
        .command(
            &format!("{credits}/grants"),
            Role::Billing,
            &json!({"grant_id": "g-100", "credits": 100, "reason": "promotion"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let mut tasks = Vec::new();
    for index in 0..200 {
        let request = server
            .post(&format!("{credits}/spend"), Some(Role::Billing))
            .json(&json!({"spend_id": format!("burst-{index}"), "credits": 1, "persona": "chef"}));
        tasks.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }));
    }
    let (mut accepted, mut rejected) = (0, 0);
    let mut balances = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::OK => {
                accepted += 1;
                balances.push(body["balance"].as_u64().unwrap());
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(body["type"], "insufficient_credits");
                rejected += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((accepted, rejected), (100, 100));
    balances.sort_unstable();
    assert_eq!(
        balances,
        (0..100).collect::<Vec<u64>>(),
        "each spend saw its own balance"
    );
    let wallet: Value = server
        .get(&credits, Some(Role::Billing))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wallet["balance"], 0);
    server.stop().await;
}

fn payment(id: &str, account: &Value, amount: &str, paid_at: &str) -> Value {
    json!({
        "payment_id": id, "account_id": account["account_id"], "kind": "subscription",
        "amount": amount, "currency": "EUR", "paid_at": paid_at,
    })
}

#[tokio::test]
async fn payments_pay_commissions_up_the_chain_and_refunds_claw_them_back() {
    let server = TestServer::start().await;
    let (a, b, c) = chain(&server).await;
    let request = payment("pi_100", &c, "100.00", "2026-01-05T12:00:00Z");
    let (status, body) = server
        .command("/v1/payments", Role::Billing, &request)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["payment_id"], "pi_100");
    let commissions: Vec<(&str, u64, &str, &str)> = body["commissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|commission| {
            assert_eq!(commission["currency"], "EUR");
            assert_eq!(commission["payable_at"], "2026-02-04T12:00:00.000000Z");
            (
                commission["beneficiary_id"].as_str().unwrap(),
                commission["level"].as_u64().unwrap(),
                commission["rate"].as_str().unwrap(),
                commission["amount"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        commissions,
        [(id(&b), 1, "0.2", "20.00"), (id(&a), 2, "0.1", "10.00")]
    );

    let (status, again) = server
        .command("/v1/payments", Role::Billing, &request)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, body);
    let mut changed = request.clone();
    changed["amount"] = "100.01".into();
    let response = server
        .post("/v1/payments", Some(Role::Billing))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    // The log is the payment's idempotency record: the ledger's rule answers.
    assert_eq!(problem(response).await["type"], "payment_exists");

    let refund = json!({"refund_id": "re_1", "amount": "50.00", "reason": "refund",
                        "refunded_at": "2026-01-09T08:00:00Z"});
    let (status, body) = server
        .command("/v1/payments/pi_100/refunds", Role::Billing, &refund)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let reversed: Vec<(&str, &str)> = body["reversed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reversal| {
            (
                reversal["beneficiary_id"].as_str().unwrap(),
                reversal["amount"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(reversed, [(id(&b), "10.00"), (id(&a), "5.00")]);
    let (status, again) = server
        .command("/v1/payments/pi_100/refunds", Role::Billing, &refund)
        .await;
    assert_eq!((status, &again), (StatusCode::OK, &body));

    let events = server.event_count().await;
    let response = server
        .post("/v1/payments/pi_100/refunds", Some(Role::Billing))
        .json(
            &json!({"refund_id": "re_2", "amount": "50.01", "reason": "chargeback",
                      "refunded_at": "2026-01-10T08:00:00Z"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(response).await["type"], "refund_exceeds_payment");
    assert_eq!(server.event_count().await, events);

    let response = server
        .post("/v1/payments/pi_unknown/refunds", Some(Role::Billing))
        .json(&refund)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(response).await["type"], "payment_not_found");

    // A credit pack adds its credits to the payer's wallet.
    let mut pack = payment("pi_pack", &a, "9.00", "2026-01-06T00:00:00Z");
    pack["kind"] = "credit_pack".into();
    pack["credits"] = 500.into();
    let (status, body) = server.command("/v1/payments", Role::Billing, &pack).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["commissions"], json!([]), "A has no upline");
    let wallet: Value = server
        .get(
            &format!("/v1/accounts/{}/credits", id(&a)),
            Some(Role::Billing),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wallet["balance"], 500);
    server.stop().await;
}

#[tokio::test]
async fn a_payout_run_pays_those_above_the_minimum_once() {
    let server = TestServer::start().await;
    let (a, b, c) = chain(&server).await;
    // B earns 20% of 300 = 60.00 (paid), A 10% = 30.00 (below 50.00: carried over).
    let (status, _) = server
        .command(
            "/v1/payments",
            Role::Billing,
            &payment("pi_300", &c, "300.00", "2026-01-05T12:00:00Z"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let run = json!({"period": "2026-03"});
    let (status, first) = server.command("/v1/payout-runs", Role::Finance, &run).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["period"], "2026-03");
    assert_eq!(
        first["payouts"],
        json!([{"affiliate_id": id(&b), "amount": "60.00", "currency": "EUR"}])
    );
    assert_eq!(
        first["carried_over"],
        json!([{"affiliate_id": id(&a), "amount": "30.00", "currency": "EUR"}])
    );
    let events = server.event_count().await;
    let (status, again) = server.command("/v1/payout-runs", Role::Finance, &run).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first, "the same period returns the first run");
    assert_eq!(server.event_count().await, events, "and pays nobody twice");

    let response = server
        .post("/v1/payout-runs", Some(Role::Finance))
        .json(&json!({"period": "2999-01"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(response).await["type"], "payout_run_too_early");
    server.stop().await;
}

#[tokio::test]
async fn the_admin_publishes_plan_versions_in_order() {
    let server = TestServer::start().await;
    let plan = json!({"version": 2, "level_rates": ["0.25", "0.10"], "hold_days": 14,
                      "minimum_payout": "25.00", "currency": "EUR",
                      "effective_from": "2999-01-01T00:00:00Z"});
    let response = server
        .put("/v1/plan", Some(Role::Admin))
        .json(&plan)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["level_rates"], json!(["0.25", "0.1"]));
    let response = server
        .put("/v1/plan", Some(Role::Admin))
        .json(&plan)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), first);

    let mut skipping = plan.clone();
    skipping["version"] = 4.into();
    let response = server
        .put("/v1/plan", Some(Role::Admin))
        .json(&skipping)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem(response).await["type"], "plan_version_not_next");

    let mut greedy = plan.clone();
    greedy["version"] = 3.into();
    greedy["level_rates"] = json!(["0.80", "0.30"]);
    let response = server
        .put("/v1/plan", Some(Role::Admin))
        .json(&greedy)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem(response).await["type"], "plan_invalid");
    server.stop().await;
}
