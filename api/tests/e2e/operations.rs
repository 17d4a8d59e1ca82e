//! Probes, metrics and the OpenAPI description.

use api::tokens::Role;
use reqwest::StatusCode;

use crate::support::TestServer;

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = TestServer::start().await;
    let body: serde_json::Value = server
        .get("/healthz", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ok");
    let body: serde_json::Value = server
        .get("/readyz", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ready");
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_status() {
    let server = TestServer::start().await;
    for _ in 0..3 {
        server
            .get("/v1/events", Some(Role::Auditor))
            .send()
            .await
            .unwrap();
    }
    server
        .get("/v1/events", Some(Role::Billing))
        .send()
        .await
        .unwrap();
    server
        .get("/v1/streams/account-secret-name", Some(Role::Auditor))
        .send()
        .await
        .unwrap();
    let response = server.get("/metrics", None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/v1/events",status="200"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/v1/events",status="403"} 1"#),
        "{text}"
    );
    assert!(text.contains(
        r#"http_request_duration_seconds_bucket{method="GET",route="/v1/events",status="200",le="+Inf"} 3"#
    ));
    // Labels are route templates, never values from the request.
    assert!(text.contains(r#"route="/v1/streams/{stream}""#), "{text}");
    assert!(!text.contains("account-secret-name"));
    assert!(text.contains("ledger_log_head_position -1"), "{text}");

    // A signup appends: the store's metrics count it, and no personal data shows.
    let (status, _) = server
        .command(
            "/v1/accounts",
            Role::Billing,
            &serde_json::json!({"name": "Metra Private", "email": "metra@example.org"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let text = server
        .get("/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"ledger_appends_total{result="ok"} 2"#),
        "{text}"
    );
    assert!(text.contains("ledger_appended_events_total 2"), "{text}");
    assert!(text.contains("ledger_log_head_position 1"), "{text}");
    assert!(
        text.contains(r#"route="/v1/accounts",status="201""#),
        "{text}"
    );
    assert!(!text.contains("Metra") && !text.contains("metra@"));
    server.stop().await;
}

#[tokio::test]
async fn the_openapi_description_names_every_endpoint() {
    let server = TestServer::start().await;
    let document: serde_json::Value = server
        .get("/openapi.json", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/events",
        "/v1/streams/{stream}",
        "/v1/verify",
        "/v1/accounts",
        "/v1/accounts/{id}",
        "/v1/accounts/{id}/credits",
        "/v1/accounts/{id}/credits/grants",
        "/v1/accounts/{id}/credits/spend",
        "/v1/accounts/{id}/credits/reservations",
        "/v1/accounts/{id}/credits/reservations/{reservation_id}/capture",
        "/v1/accounts/{id}/credits/reservations/{reservation_id}/void",
        "/v1/accounts/{id}/upline",
        "/v1/accounts/{id}/downline",
        "/v1/payments",
        "/v1/payments/{payment_id}/refunds",
        "/v1/payout-runs",
        "/v1/plan",
    ] {
        assert!(paths.contains_key(path), "{path} is not described");
    }
    for role in Role::ALL {
        assert_eq!(
            document["components"]["securitySchemes"][role.as_str()]["scheme"],
            "bearer",
            "a scheme per role"
        );
    }
    // Request shapes are described with their fields.
    let spend = &document["components"]["schemas"]["SpendCreditsRequest"];
    for field in ["spend_id", "credits", "persona"] {
        assert!(spend["properties"][field].is_object(), "{field} in {spend}");
    }
    let reserve = &document["components"]["schemas"]["ReserveCreditsRequest"];
    for field in [
        "reservation_id",
        "credits",
        "expires_at",
        "ttl_seconds",
        "persona",
    ] {
        assert!(
            reserve["properties"][field].is_object(),
            "{field} in {reserve}"
        );
    }
    let wallet = &document["components"]["schemas"]["CreditsResponse"];
    for field in ["balance", "reserved", "available", "reservations"] {
        assert!(
            wallet["properties"][field].is_object(),
            "{field} in {wallet}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let mut server = TestServer::start().await;
    let ready = server.get("/readyz", None).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    server.begin_shutdown();
    // New connections are refused once the listener has closed.
    let mut refused = false;
    for _ in 0..100 {
        let fresh = reqwest::Client::new();
        match fresh.get(server.url("/readyz")).send().await {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {}
            Ok(_) => {}
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "the server stops accepting connections");
    server.stop().await;
}
