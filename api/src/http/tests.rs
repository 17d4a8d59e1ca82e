//! `oneshot` tests of the router: no socket, one request at a time.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use ledger::store::memory::MemoryStore;
use ledger::store::{EventMetadata, EventStore, EventType, ExpectedRevision, NewEvent, StreamName};
use serde::Deserialize;
use tower::ServiceExt as _;
use uuid::Uuid;

use super::error::{parse_json, ApiError, ApiJson, Problem, BODY_SIZE_MAX, PROBLEM_CONTENT_TYPE};
use super::{app, AppState};
use crate::idempotency::Idempotency;
use crate::tokens::{Role, TokenSpec, Tokens};

fn secret(role: Role) -> String {
    format!("{role}-secret-0123456789")
}

fn state_with(store: Arc<dyn EventStore>) -> AppState {
    let specs: Vec<TokenSpec> = Role::ALL
        .into_iter()
        .map(|role| TokenSpec::new(role, secret(role)).unwrap())
        .collect();
    AppState::new(
        store,
        Tokens::new(&specs).unwrap(),
        Idempotency::in_memory(),
    )
}

fn state() -> AppState {
    state_with(Arc::new(MemoryStore::new()))
}

async fn get(router: Router, path: &str, role: Option<Role>) -> Response {
    let mut request = Request::get(path);
    if let Some(role) = role {
        request = request.header(header::AUTHORIZATION, format!("Bearer {}", secret(role)));
    }
    router
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn body_json<T: serde::de::DeserializeOwned>(response: Response) -> T {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn problem(response: Response) -> Problem {
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        PROBLEM_CONTENT_TYPE,
        "errors are problem+json"
    );
    let status = response.status().as_u16();
    let problem: Problem = body_json(response).await;
    assert_eq!(problem.status, status);
    problem
}

#[tokio::test]
async fn the_event_log_needs_an_auditor_token() {
    let app = app(state());
    let response = get(app.clone(), "/v1/events", None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(problem(response).await.problem_type, "unauthorized");
    for role in Role::ALL {
        let response = get(app.clone(), "/v1/events", Some(role)).await;
        if role == Role::Auditor {
            assert_eq!(response.status(), StatusCode::OK);
        } else {
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{role}");
            assert_eq!(problem(response).await.problem_type, "forbidden");
        }
    }
}

#[tokio::test]
async fn a_wrong_secret_or_scheme_is_unauthorized() {
    let app = app(state());
    for header_value in [
        "Bearer not-a-configured-secret".to_owned(),
        format!("Basic {}", secret(Role::Auditor)),
        "Bearer".to_owned(),
        format!("Bearer {}x", secret(Role::Auditor)),
    ] {
        let response = app
            .clone()
            .oneshot(
                Request::get("/v1/events")
                    .header(header::AUTHORIZATION, header_value.clone())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{header_value}"
        );
    }
    // The scheme is case-insensitive.
    let response = app
        .oneshot(
            Request::get("/v1/events")
                .header(
                    header::AUTHORIZATION,
                    format!("bearer {}", secret(Role::Auditor)),
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems() {
    let app = app(state());
    let response = get(app.clone(), "/v1/nothing-here", Some(Role::Admin)).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(problem(response).await.problem_type, "not_found");
    let response = app
        .oneshot(Request::delete("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(problem(response).await.problem_type, "method_not_allowed");
}

#[tokio::test]
async fn pages_carry_a_cursor_and_show_json_or_base64() {
    let store = Arc::new(MemoryStore::new());
    let stream = StreamName::parse("account-7").unwrap();
    for index in 0..5u8 {
        let payload = if index == 4 {
            vec![0xff, 0xfe]
        } else {
            format!("{{\"n\":{index}}}").into_bytes()
        };
        store
            .append(
                &stream,
                ExpectedRevision::Any,
                vec![NewEvent {
                    id: Uuid::new_v4(),
                    event_type: EventType::parse("Counted").unwrap(),
                    schema_version: 1,
                    metadata: EventMetadata::default(),
                    payload,
                }],
            )
            .await
            .unwrap();
    }
    let app = app(state_with(store));
    let page: super::events::EventPage =
        body_json(get(app.clone(), "/v1/events?limit=2", Some(Role::Auditor)).await).await;
    assert_eq!(page.events.len(), 2);
    assert!(page.has_more);
    assert_eq!(page.next, "2");
    assert_eq!(page.events[1].payload, Some(serde_json::json!({ "n": 1 })));
    assert_eq!(page.events[1].payload_base64, None);

    let page: super::events::EventPage = body_json(
        get(
            app.clone(),
            "/v1/streams/account-7?from=3&limit=10",
            Some(Role::Auditor),
        )
        .await,
    )
    .await;
    assert_eq!(page.events.len(), 2);
    assert!(!page.has_more);
    assert_eq!(page.next, "5");
    assert_eq!(page.events[1].payload, None);
    assert_eq!(page.events[1].payload_base64.as_deref(), Some("//4="));

    for bad in [
        "/v1/events?limit=0",
        "/v1/events?limit=1001",
        "/v1/events?from=x",
        "/v1/events?limit=-1",
        "/v1/events?colour=red",
        "/v1/streams/$all",
    ] {
        let response = get(app.clone(), bad, Some(Role::Auditor)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            problem(response).await.problem_type,
            "validation_failed",
            "{bad}"
        );
    }
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Spend {
    spend_id: String,
    credits: u64,
}

#[test]
fn json_errors_tell_syntax_unknown_fields_and_wrong_values_apart() {
    assert!(matches!(
        parse_json::<Spend>(br#"{"spend_id": "a", "credits": 1"#),
        Err(ApiError::MalformedJson { .. })
    ));
    assert!(matches!(
        parse_json::<Spend>(br#"{"spend_id": "a", "credits": 1} trailing"#),
        Err(ApiError::MalformedJson { .. })
    ));
    let Err(ApiError::UnknownField { detail }) =
        parse_json::<Spend>(br#"{"spend_id": "a", "credits": 1, "colour": "red"}"#)
    else {
        panic!("an unknown field is its own error")
    };
    assert!(detail.contains("colour"), "{detail}");
    let Err(ApiError::Validation { detail }) =
        parse_json::<Spend>(br#"{"spend_id": "a", "credits": "many"}"#)
    else {
        panic!("a wrong type is a validation error")
    };
    assert!(detail.starts_with("credits:"), "{detail}");
    let Err(ApiError::Validation { detail }) = parse_json::<Spend>(br#"{"credits": 1}"#) else {
        panic!("a missing field is a validation error")
    };
    assert!(detail.contains("spend_id"), "{detail}");
    let parsed: Spend = parse_json(br#"{"credits": 2, "spend_id": "b"}"#).unwrap();
    assert_eq!((parsed.spend_id.as_str(), parsed.credits), ("b", 2));
}

/// A router with one JSON endpoint behind the same body limit as `app`.
fn json_router() -> Router {
    Router::new()
        .route(
            "/spend",
            post(|ApiJson(spend): ApiJson<Spend>| async move { spend.spend_id }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(BODY_SIZE_MAX))
}

async fn post_json(router: Router, content_type: Option<&str>, body: Vec<u8>) -> Response {
    let mut request = Request::post("/spend");
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    router
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn the_json_extractor_answers_in_problem_format() {
    let ok = post_json(
        json_router(),
        Some("application/json; charset=utf-8"),
        br#"{"spend_id":"s","credits":1}"#.to_vec(),
    )
    .await;
    assert_eq!(ok.status(), StatusCode::OK);
    let response = post_json(json_router(), None, b"{}".to_vec()).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        problem(response).await.problem_type,
        "unsupported_media_type"
    );
    let response = post_json(json_router(), Some("application/json"), b"{".to_vec()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(response).await.problem_type, "malformed_json");
    let mut huge = br#"{"spend_id":""#.to_vec();
    huge.resize(BODY_SIZE_MAX + 1, b'a');
    let response = post_json(json_router(), Some("application/json"), huge).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem(response).await.problem_type, "payload_too_large");
}

#[tokio::test]
async fn internal_details_are_not_sent() {
    let response =
        axum::response::IntoResponse::into_response(ApiError::internal("disk /secret/path failed"));
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let problem = problem(response).await;
    assert_eq!(problem.problem_type, "internal");
    assert!(!problem.detail.contains("/secret/path"));
}

#[tokio::test]
async fn every_documented_path_is_routed() {
    let app = app(state());
    let document: serde_json::Value =
        body_json(get(app.clone(), "/openapi.json", None).await).await;
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 6);
    for (path, operations) in paths {
        // Fill path parameters with a plausible value.
        let concrete = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "0b7c6f4e-5d1a-4b8e-9a3f-2c1d0e9f8a7b"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in operations.as_object().unwrap().keys() {
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_ne!(
                response.status(),
                StatusCode::NOT_FOUND,
                "{method} {path} is documented but not routed"
            );
            assert_ne!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[tokio::test]
async fn readiness_fails_once_draining_begins() {
    let state = state();
    let app = app(state.clone());
    assert_eq!(
        get(app.clone(), "/readyz", None).await.status(),
        StatusCode::OK
    );
    state
        .draining
        .store(true, std::sync::atomic::Ordering::Release);
    let response = get(app.clone(), "/readyz", None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem(response).await.problem_type, "unavailable");
    // Liveness is not readiness: the process still answers.
    assert_eq!(get(app, "/healthz", None).await.status(), StatusCode::OK);
}

/// Signed heads and proofs over HTTP: an empty log has no head and no proof (problems);
/// after appends, a head signed on request checks, and the proofs for it hold.
#[tokio::test]
async fn heads_are_signed_on_request_and_proofs_hold_for_them() {
    let store = Arc::new(MemoryStore::new());
    let app = app(state_with(store.clone()));
    let none = get(app.clone(), "/v1/heads/latest", Some(Role::Auditor)).await;
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
    problem(none).await;
    let refused = get(app.clone(), "/v1/heads/latest", Some(Role::Billing)).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    for index in 0..7u8 {
        store
            .append(
                &StreamName::parse("account-9").unwrap(),
                ExpectedRevision::Any,
                vec![NewEvent {
                    id: Uuid::new_v4(),
                    event_type: EventType::parse("Counted").unwrap(),
                    schema_version: 1,
                    metadata: EventMetadata::default(),
                    payload: vec![index],
                }],
            )
            .await
            .unwrap();
    }
    let request = Request::post("/v1/heads")
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", secret(Role::Auditor)),
        )
        .body(Body::empty())
        .unwrap();
    let signed = app.clone().oneshot(request).await.unwrap();
    assert_eq!(signed.status(), StatusCode::CREATED);
    let signed: crate::heads::SignedHead = body_json(signed).await;
    assert_eq!(signed.events, 7);
    signed.check("the served head".to_owned()).unwrap();
    let latest: crate::heads::SignedHead =
        body_json(get(app.clone(), "/v1/heads/latest", Some(Role::Auditor)).await).await;
    assert_eq!(latest, signed);
    let page: super::heads::HeadPage =
        body_json(get(app.clone(), "/v1/heads?from=7", Some(Role::Auditor)).await).await;
    assert_eq!((page.heads.len(), page.has_more), (1, false));
    let key: super::heads::HeadKey =
        body_json(get(app.clone(), "/v1/heads/key", Some(Role::Auditor)).await).await;
    assert_eq!(key.public_key, signed.public_key);

    let inclusion: crate::proofs::InclusionProof = body_json(
        get(
            app.clone(),
            "/v1/proofs/inclusion?position=6&head=7",
            Some(Role::Auditor),
        )
        .await,
    )
    .await;
    assert!(inclusion.holds());
    assert_eq!(
        inclusion.record_hash, signed.head,
        "the head's record is the last leaf"
    );
    let consistency: crate::proofs::ConsistencyProof = body_json(
        get(
            app.clone(),
            "/v1/proofs/consistency?from=3&to=7",
            Some(Role::Auditor),
        )
        .await,
    )
    .await;
    assert!(consistency.holds());
    assert_eq!(consistency.to_root, inclusion.root);
    let beyond = get(
        app.clone(),
        "/v1/proofs/inclusion?position=7",
        Some(Role::Auditor),
    )
    .await;
    assert_eq!(beyond.status(), StatusCode::BAD_REQUEST);
    problem(beyond).await;
}
