//! Credit reservations over HTTP: reserve, capture, void, expiry by the sweeper and by the
//! clock, and reservations racing each other and their expiry.

use api::tokens::Role;
use chrono::{Duration, Utc};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestServer};

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An account holding `credits` credits; returns its credits path.
async fn wallet_with(server: &TestServer, credits: u64) -> String {
    let (status, body) = server
        .command(
            "/v1/accounts",
            Role::Billing,
            // Opened a day ago, so reservations may state times in the last hours.
            &json!({"account_id": new_id(), "name": "Rae", "email": "rae@example.org",
                    "opened_at": (Utc::now() - Duration::days(1)).to_rfc3339()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let path = format!(
        "/v1/accounts/{}/credits",
        body["account_id"].as_str().unwrap()
    );
    let (status, body) = server
        .command(
            &format!("{path}/grants"),
            Role::Billing,
            &json!({"grant_id": "g-1", "credits": credits, "reason": "promotion"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    path
}

async fn credits_of(server: &TestServer, path: &str) -> Value {
    server
        .get(path, Some(Role::Billing))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Posts `body` and expects a problem with `status` and `code`; returns its detail.
async fn refused(
    server: &TestServer,
    path: &str,
    body: &Value,
    status: StatusCode,
    code: &str,
) -> String {
    let response = server
        .post(path, Some(Role::Billing))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), status, "{path} {body}");
    let problem = problem(response).await;
    assert_eq!(problem["type"], code, "{problem}");
    problem["detail"].as_str().unwrap().to_owned()
}

/// The events of every reservation settlement in the log, as (type, reservation id).
async fn settlements(server: &TestServer) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut from = "0".to_owned();
    loop {
        let page: Value = server
            .get(
                &format!("/v1/events?from={from}&limit=1000"),
                Some(Role::Auditor),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for event in page["events"].as_array().unwrap() {
            let event_type = event["event_type"].as_str().unwrap();
            if matches!(
                event_type,
                "ReservationCaptured" | "ReservationVoided" | "ReservationExpired"
            ) {
                found.push((
                    event_type.to_owned(),
                    event["payload"]["reservation_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                ));
            }
        }
        if !page["has_more"].as_bool().unwrap() {
            return found;
        }
        from = page["next"].as_str().unwrap().to_owned();
    }
}

#[tokio::test]
async fn reservations_hold_credits_until_captured_or_voided() {
    let server = TestServer::start().await;
    let credits = wallet_with(&server, 100).await;
    let reservations = format!("{credits}/reservations");

    let reserve = json!({"reservation_id": "reply-1", "credits": 30, "ttl_seconds": 600,
                         "persona": "chef"});
    let (status, body) = server.command(&reservations, Role::Billing, &reserve).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (
            &body["reservation_id"],
            &body["credits"],
            &body["available"],
            &body["reserved"]
        ),
        (&json!("reply-1"), &json!(30), &json!(70), &json!(30))
    );
    let first = body;
    // The same reservation again answers the first answer; another body is a conflict.
    let response = server
        .post(&reservations, Some(Role::Billing))
        .json(&reserve)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    assert_eq!(response.json::<Value>().await.unwrap(), first);
    let mut other = reserve.clone();
    other["credits"] = 31.into();
    refused(
        &server,
        &reservations,
        &other,
        StatusCode::CONFLICT,
        "idempotency_conflict",
    )
    .await;

    let wallet = credits_of(&server, &credits).await;
    assert_eq!(
        (
            &wallet["balance"],
            &wallet["reserved"],
            &wallet["available"]
        ),
        (&json!(100), &json!(30), &json!(70))
    );
    assert_eq!(wallet["reservations"][0]["reservation_id"], "reply-1");
    assert_eq!(wallet["reservations"][0]["persona"], "chef");
    assert_eq!(wallet["reservations"][0]["expires_at"], first["expires_at"]);

    // A reservation larger than what is available is refused and records nothing.
    let events = server.event_count().await;
    let detail = refused(
        &server,
        &reservations,
        &json!({"reservation_id": "reply-2", "credits": 71, "ttl_seconds": 60}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient_credits",
    )
    .await;
    assert!(detail.starts_with("credits:"), "{detail}");
    // So does a spend of the reserved credits.
    refused(
        &server,
        &format!("{credits}/spend"),
        &json!({"spend_id": "s-1", "credits": 71, "persona": "chef"}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient_credits",
    )
    .await;
    assert_eq!(
        server.event_count().await,
        events,
        "refusals record nothing"
    );

    // Capture: at most what was reserved; the rest goes back.
    let capture = format!("{reservations}/reply-1/capture");
    let detail = refused(
        &server,
        &capture,
        &json!({"credits": 31}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "capture_exceeds_reservation",
    )
    .await;
    assert!(detail.starts_with("credits:"), "{detail}");
    let (status, body) = server
        .command(&capture, Role::Billing, &json!({"credits": 12}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"reservation_id": "reply-1", "status": "captured", "captured": 12,
               "released": 18, "available": 88, "reserved": 0, "balance": 88})
    );
    let captured = body;
    let response = server
        .post(&capture, Some(Role::Billing))
        .json(&json!({"credits": 12}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "capturing twice answers the first answer"
    );
    assert_eq!(response.json::<Value>().await.unwrap(), captured);
    refused(
        &server,
        &capture,
        &json!({"credits": 11}),
        StatusCode::CONFLICT,
        "idempotency_conflict",
    )
    .await;
    refused(
        &server,
        &format!("{reservations}/reply-1/void"),
        &json!({}),
        StatusCode::CONFLICT,
        "reservation_already_captured",
    )
    .await;

    // Void: everything goes back.
    let (status, _) = server
        .command(
            &reservations,
            Role::Billing,
            &json!({"reservation_id": "reply-3", "credits": 50, "ttl_seconds": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = server
        .command(
            &format!("{reservations}/reply-3/void"),
            Role::Billing,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (&body["released"], &body["available"]),
        (&json!(50), &json!(88))
    );
    refused(
        &server,
        &format!("{reservations}/reply-3/capture"),
        &json!({"credits": 1}),
        StatusCode::CONFLICT,
        "reservation_already_voided",
    )
    .await;
    refused(
        &server,
        &format!("{reservations}/nope/capture"),
        &json!({"credits": 1}),
        StatusCode::NOT_FOUND,
        "reservation_not_found",
    )
    .await;
    let wallet = credits_of(&server, &credits).await;
    assert_eq!(
        (
            &wallet["balance"],
            &wallet["reserved"],
            &wallet["available"]
        ),
        (&json!(88), &json!(0), &json!(88))
    );
    assert_eq!(wallet["reservations"], json!([]));

    // The wallets view counts the capture as a spend.
    let views = server
        .state
        .views
        .current(server.state.store.as_ref())
        .await
        .unwrap();
    assert_eq!(views.views.wallets.totals().spent, 12);
    drop(views);
    server.stop().await;
}

#[tokio::test]
async fn bad_reservations_are_problems_that_name_the_field() {
    let server = TestServer::start().await;
    let credits = wallet_with(&server, 10).await;
    let reservations = format!("{credits}/reservations");
    for (body, field) in [
        (json!({"reservation_id": "r", "credits": 1}), "expires_at"),
        (
            json!({"reservation_id": "r", "credits": 1, "ttl_seconds": 5,
                   "expires_at": "2999-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"reservation_id": "r", "credits": 1, "ttl_seconds": 0}),
            "ttl_seconds",
        ),
        (
            json!({"reservation_id": "r", "credits": 1, "ttl_seconds": 86401}),
            "ttl_seconds",
        ),
        (
            json!({"reservation_id": "r", "credits": 1, "expires_at": "2020-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"reservation_id": "r", "credits": 0, "ttl_seconds": 5}),
            "credits",
        ),
        (
            json!({"reservation_id": "r", "credits": -1, "ttl_seconds": 5}),
            "credits",
        ),
        (
            json!({"reservation_id": "r r", "credits": 1, "ttl_seconds": 5}),
            "reservation_id",
        ),
        (
            json!({"reservation_id": "r", "credits": 1, "ttl_seconds": 5,
                   "reserved_at": "2999-01-01T00:00:00Z"}),
            "reserved_at",
        ),
    ] {
        let detail = refused(
            &server,
            &reservations,
            &body,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        )
        .await;
        assert!(detail.starts_with(field), "{body}: {detail}");
    }
    let far = (Utc::now() + Duration::hours(25)).to_rfc3339();
    let detail = refused(
        &server,
        &reservations,
        &json!({"reservation_id": "r", "credits": 1, "expires_at": far}),
        StatusCode::UNPROCESSABLE_ENTITY,
        "reservation_ttl_too_long",
    )
    .await;
    assert!(detail.starts_with("expires_at:"), "{detail}");
    refused(
        &server,
        &reservations,
        &json!({"reservation_id": "r", "credits": 1, "ttl_seconds": 5, "colour": "red"}),
        StatusCode::BAD_REQUEST,
        "unknown_field",
    )
    .await;
    refused(
        &server,
        &format!("/v1/accounts/{}/credits/reservations", new_id()),
        &json!({"reservation_id": "r", "credits": 1, "ttl_seconds": 5}),
        StatusCode::NOT_FOUND,
        "account_not_found",
    )
    .await;
    assert_eq!(settlements(&server).await, vec![]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_reservations_of_one_against_fifty_credits_accept_exactly_fifty() {
    let server = TestServer::start().await;
    let credits = wallet_with(&server, 50).await;
    let mut tasks = Vec::new();
    for index in 0..100 {
        let request = server
            .post(&format!("{credits}/reservations"), Some(Role::Billing))
            .json(
                &json!({"reservation_id": format!("burst-{index}"), "credits": 1,
                          "ttl_seconds": 600}),
            );
        tasks.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    let mut available = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => {
                accepted += 1;
                available.push(body["available"].as_u64().unwrap());
            }
            StatusCode::UNPROCESSABLE_ENTITY => {
                assert_eq!(body["type"], "insufficient_credits");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((accepted, refused), (50, 50));
    available.sort_unstable();
    assert_eq!(available, (0..50).collect::<Vec<u64>>(), "each saw its own");
    let wallet = credits_of(&server, &credits).await;
    assert_eq!(
        (
            &wallet["balance"],
            &wallet["reserved"],
            &wallet["available"]
        ),
        (&json!(50), &json!(50), &json!(0))
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn captures_and_voids_racing_with_expiry_never_both_apply() {
    let server = TestServer::start().await;
    let credits = wallet_with(&server, 200).await;
    let reservations = format!("{credits}/reservations");
    const RESERVATIONS: usize = 40;
    for index in 0..RESERVATIONS {
        let (status, body) = server
            .command(
                &reservations,
                Role::Billing,
                &json!({"reservation_id": format!("race-{index}"), "credits": 5,
                        "ttl_seconds": 600}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let mut tasks = Vec::new();
    let mut sweep = None;
    for index in 0..RESERVATIONS {
        let (path, body) = if index % 2 == 0 {
            (
                format!("{reservations}/race-{index}/capture"),
                json!({"credits": 3}),
            )
        } else {
            (format!("{reservations}/race-{index}/void"), json!({}))
        };
        let request = server.post(&path, Some(Role::Billing)).json(&body);
        tasks.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            (index, status, response.json::<Value>().await.unwrap())
        }));
        // The sweeper, with a clock past every expiry, races the captures and voids: it
        // starts once half of them are on their way.
        if index == RESERVATIONS / 2 {
            let state = server.state.clone();
            sweep = Some(tokio::spawn(async move {
                api::sweeper::expire_due_reservations(&state, Utc::now() + Duration::hours(1))
                    .await
                    .unwrap()
            }));
        }
    }
    let mut applied = std::collections::BTreeMap::new();
    for task in tasks {
        let (index, status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => {
                applied.insert(format!("race-{index}"), true);
            }
            // The sweep got there first; a later sweep of the same instant finds nothing.
            StatusCode::CONFLICT => {
                assert_eq!(body["type"], "reservation_expired", "{body}");
                applied.insert(format!("race-{index}"), false);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let swept = sweep.expect("the sweep started").await.unwrap();
    let expired_late =
        api::sweeper::expire_due_reservations(&server.state, Utc::now() + Duration::hours(2))
            .await
            .unwrap();
    let settled = settlements(&server).await;
    assert_eq!(
        settled.len(),
        RESERVATIONS,
        "each settled exactly once: {settled:?}"
    );
    let mut expired = 0;
    for (event_type, id) in &settled {
        let by_request = applied[id];
        assert_eq!(
            by_request,
            event_type != "ReservationExpired",
            "{id}: the request's answer and the log agree"
        );
        expired += usize::from(event_type == "ReservationExpired");
    }
    assert_eq!(swept + expired_late, expired);
    // Every credit is accounted for: captures spent 3 each, everything else is back.
    let captures = settled
        .iter()
        .filter(|(event_type, _)| event_type == "ReservationCaptured")
        .count() as u64;
    let wallet = credits_of(&server, &credits).await;
    assert_eq!(wallet["balance"], json!(200 - 3 * captures));
    assert_eq!(wallet["reserved"], json!(0));
    server.stop().await;
}

#[tokio::test]
async fn an_expired_reservation_is_released_for_readers_before_it_is_recorded() {
    let server = TestServer::start().await;
    let credits = wallet_with(&server, 10).await;
    let reservations = format!("{credits}/reservations");
    let (status, body) = server
        .command(
            &reservations,
            Role::Billing,
            &json!({"reservation_id": "short", "credits": 4, "ttl_seconds": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["available"], 6);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // Whether or not the server's sweeper has recorded it yet, nobody sees it reserved.
    let wallet = credits_of(&server, &credits).await;
    assert_eq!(
        (
            &wallet["balance"],
            &wallet["reserved"],
            &wallet["available"]
        ),
        (&json!(10), &json!(0), &json!(10))
    );
    refused(
        &server,
        &format!("{reservations}/short/capture"),
        &json!({"credits": 4}),
        StatusCode::CONFLICT,
        "reservation_expired",
    )
    .await;
    // A retry of the reservation still answers what it answered first.
    let response = server
        .post(&reservations, Some(Role::Billing))
        .json(&json!({"reservation_id": "short", "credits": 4, "ttl_seconds": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<Value>().await.unwrap(), body);
    // A new one that would be born expired is refused.
    let past = (Utc::now() - Duration::minutes(10)).to_rfc3339();
    let detail = refused(
        &server,
        &reservations,
        &json!({"reservation_id": "late", "credits": 1, "ttl_seconds": 60, "reserved_at": past}),
        StatusCode::BAD_REQUEST,
        "validation_failed",
    )
    .await;
    assert!(detail.starts_with("expires_at:"), "{detail}");
    // The next command on the account records the expiry, dated at the reservation's own.
    let (status, body) = server
        .command(
            &format!("{credits}/spend"),
            Role::Billing,
            &json!({"spend_id": "after", "credits": 10, "persona": "chef"}),
        )
        .await;
    assert_eq!(
        (status, &body["balance"]),
        (StatusCode::OK, &json!(0)),
        "{body}"
    );
    let settled = settlements(&server).await;
    assert_eq!(
        settled,
        vec![("ReservationExpired".to_owned(), "short".to_owned())]
    );
    server.stop().await;
}
