//! Bad requests over HTTP: every one answered in problem+json with a stable type and a
//! detail naming the field, and none of them writes anything.

use std::sync::Arc;

use api::idempotency::Idempotency;
use api::tokens::Role;
use ledger::store::memory::MemoryStore;
use ledger::store::EventStore;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{new_vault, problem, TestServer};

const ACCOUNT: &str = "0b7c6f4e-5d1a-4b8e-9a3f-2c1d0e9f8a7b";

fn valid_payment() -> serde_json::Value {
    json!({
        "payment_id": "pi_ok", "account_id": ACCOUNT, "kind": "subscription",
        "amount": "19.99", "currency": "EUR", "paid_at": "2026-10-05T12:00:00Z",
    })
}

/// A bad request: name, path, content type, body, and the answer expected (status,
/// problem type, field the detail names).
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, Expected<'a>);
type Expected<'a> = (StatusCode, &'a str, &'a str);

async fn send_raw(
    server: &TestServer,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = server.post(path, Some(Role::Billing)).body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn malformed_unknown_wrong_and_oversized_bodies_are_refused_before_anything_is_written() {
    let server = TestServer::start().await;
    let spend = format!("/v1/accounts/{ACCOUNT}/credits/spend");
    let with = |field: &str, value: serde_json::Value| {
        let mut body = valid_payment();
        body[field] = value;
        body.to_string().into_bytes()
    };
    let mut huge = br#"{"payment_id":""#.to_vec();
    huge.resize(api::http::error::BODY_SIZE_MAX + 1, b'a');
    let cases: Vec<Case> = vec![
        (
            "malformed",
            "/v1/payments",
            Some("application/json"),
            b"{\"payment_id\": ".to_vec(),
            (StatusCode::BAD_REQUEST, "malformed_json", ""),
        ),
        (
            "not json at all",
            &spend,
            Some("application/json"),
            b"spend please".to_vec(),
            (StatusCode::BAD_REQUEST, "malformed_json", ""),
        ),
        (
            "unknown field",
            "/v1/payments",
            Some("application/json"),
            with("tip", json!("1.00")),
            (StatusCode::BAD_REQUEST, "unknown_field", "tip"),
        ),
        (
            "wrong type",
            &spend,
            Some("application/json"),
            br#"{"spend_id":"s","credits":"ten","persona":"chef"}"#.to_vec(),
            (StatusCode::BAD_REQUEST, "validation_failed", "credits"),
        ),
        (
            "missing field",
            &spend,
            Some("application/json"),
            br#"{"spend_id":"s","persona":"chef"}"#.to_vec(),
            (StatusCode::BAD_REQUEST, "validation_failed", "credits"),
        ),
        (
            "negative amount",
            "/v1/payments",
            Some("application/json"),
            with("amount", json!("-5.00")),
            (StatusCode::BAD_REQUEST, "validation_failed", "amount"),
        ),
        (
            "over-precise amount",
            "/v1/payments",
            Some("application/json"),
            with("amount", json!("5.001")),
            (StatusCode::BAD_REQUEST, "validation_failed", "amount"),
        ),
        (
            "amount as a number",
            "/v1/payments",
            Some("application/json"),
            with("amount", json!(5.5)),
            (StatusCode::BAD_REQUEST, "validation_failed", "amount"),
        ),
        (
            "unknown currency",
            "/v1/payments",
            Some("application/json"),
            with("currency", json!("ABC")),
            (StatusCode::BAD_REQUEST, "validation_failed", "currency"),
        ),
        (
            "bad time",
            "/v1/payments",
            Some("application/json"),
            with("paid_at", json!("5 Oct 2026")),
            (StatusCode::BAD_REQUEST, "validation_failed", "paid_at"),
        ),
        (
            "bad kind",
            "/v1/payments",
            Some("application/json"),
            with("kind", json!("gift")),
            (StatusCode::BAD_REQUEST, "validation_failed", "kind"),
        ),
        (
            "bad account id",
            "/v1/payments",
            Some("application/json"),
            with("account_id", json!("42")),
            (StatusCode::BAD_REQUEST, "validation_failed", "account_id"),
        ),
        (
            "no content type",
            "/v1/payments",
            None,
            valid_payment().to_string().into_bytes(),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "",
            ),
        ),
        (
            "oversized",
            "/v1/payments",
            Some("application/json"),
            huge,
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", ""),
        ),
    ];
    for (name, path, content_type, body, (status, code, field)) in cases {
        let response = send_raw(&server, path, content_type, body).await;
        assert_eq!(response.status(), status, "{name}");
        let body = problem(response).await;
        assert_eq!(body["type"], code, "{name}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains(field),
            "{name}: the detail names {field:?}: {body}"
        );
    }
    assert_eq!(server.event_count().await, 0, "nothing was written");
    server.stop().await;
}

#[tokio::test]
async fn internal_paths_never_leak_and_unknown_routes_are_problems() {
    let server = TestServer::start().await;
    let response = server
        .get("/v1/nothing", Some(Role::Billing))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(response).await["type"], "not_found");
    let response = server
        .client
        .delete(server.url("/v1/payments"))
        .bearer_auth(crate::support::secret(Role::Billing))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem(response).await["type"], "method_not_allowed");
    server.stop().await;
}

#[tokio::test]
async fn a_retry_after_a_restart_replays_the_first_answer() {
    let data = tempfile::tempdir().unwrap();
    // The store and the keys outlive both servers, as a data directory's would.
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let vault = new_vault();
    let open = json!({"account_id": ACCOUNT, "name": "Ida", "email": "ida@example.org"});
    let grant = json!({"grant_id": "g", "credits": 10, "reason": "goodwill"});
    let spend = json!({"spend_id": "s-restart", "credits": 4, "persona": "chef"});
    let credits = format!("/v1/accounts/{ACCOUNT}/credits");

    let server = TestServer::start_with(
        store.clone(),
        Idempotency::open(data.path()).unwrap(),
        vault.clone(),
    )
    .await;
    assert_eq!(
        server.command("/v1/accounts", Role::Billing, &open).await.0,
        StatusCode::CREATED
    );
    let (status, _) = server
        .command(&format!("{credits}/grants"), Role::Billing, &grant)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, first) = server
        .command(&format!("{credits}/spend"), Role::Billing, &spend)
        .await;
    assert_eq!(
        (status, first["balance"].as_u64()),
        (StatusCode::OK, Some(6))
    );
    let (status, _) = server
        .command(
            &format!("{credits}/spend"),
            Role::Billing,
            &json!({"spend_id": "s-later", "credits": 1, "persona": "chef"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;

    let server = TestServer::start_with(
        store.clone(),
        Idempotency::open(data.path()).unwrap(),
        vault.clone(),
    )
    .await;
    let events = server.event_count().await;
    let (status, again) = server
        .command(&format!("{credits}/spend"), Role::Billing, &spend)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        again, first,
        "the answer of the first spend, not today's balance"
    );
    let mut changed = spend.clone();
    changed["persona"] = "poet".into();
    let response = server
        .post(&format!("{credits}/spend"), Some(Role::Billing))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(problem(response).await["type"], "idempotency_conflict");
    let (status, _) = server.command("/v1/accounts", Role::Billing, &open).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        server.event_count().await,
        events,
        "no retry wrote anything"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_retry_the_table_missed_is_still_caught_by_the_ledger() {
    // A crash after the events were durable but before the idempotency record was: the
    // new server has an empty table, and the retry must not spend twice.
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    let vault = new_vault();
    let open = json!({"account_id": ACCOUNT, "name": "Jo", "email": "jo@example.org"});
    let credits = format!("/v1/accounts/{ACCOUNT}/credits");
    let spend = json!({"spend_id": "s-crash", "credits": 3, "persona": "chef"});
    let server =
        TestServer::start_with(store.clone(), Idempotency::in_memory(), vault.clone()).await;
    server.command("/v1/accounts", Role::Billing, &open).await;
    server
        .command(
            &format!("{credits}/grants"),
            Role::Billing,
            &json!({"grant_id": "g", "credits": 10, "reason": "goodwill"}),
        )
        .await;
    let (status, _) = server
        .command(&format!("{credits}/spend"), Role::Billing, &spend)
        .await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;

    let server = TestServer::start_with(store, Idempotency::in_memory(), vault).await;
    let events = server.event_count().await;
    let (status, body) = server
        .command(&format!("{credits}/spend"), Role::Billing, &spend)
        .await;
    assert_eq!(
        (status, body["balance"].as_u64()),
        (StatusCode::OK, Some(7))
    );
    let (status, _) = server.command("/v1/accounts", Role::Billing, &open).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the signup repeats with its first time"
    );
    assert_eq!(server.event_count().await, events, "nothing recorded twice");
    server.stop().await;
}
