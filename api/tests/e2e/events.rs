//! The auditor's paged reads of the log.

use std::sync::Arc;

use api::tokens::Role;
use ledger::store::memory::MemoryStore;
use ledger::store::{EventMetadata, EventStore, EventType, ExpectedRevision, NewEvent, StreamName};
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{problem, TestServer};

async fn append(store: &dyn EventStore, stream: &str, payload: &[u8]) {
    store
        .append(
            &StreamName::parse(stream).unwrap(),
            ExpectedRevision::Any,
            vec![NewEvent {
                id: Uuid::new_v4(),
                event_type: EventType::parse("Noted").unwrap(),
                schema_version: 1,
                metadata: EventMetadata::default(),
                payload: payload.to_vec(),
            }],
        )
        .await
        .unwrap();
}

async fn page(server: &TestServer, path: &str) -> Value {
    let response = server.get(path, Some(Role::Auditor)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn following_the_cursor_reads_every_event_once_in_order() {
    let store: Arc<dyn EventStore> = Arc::new(MemoryStore::new());
    for index in 0..25 {
        let stream = if index % 2 == 0 {
            "account-a"
        } else {
            "account-b"
        };
        append(
            store.as_ref(),
            stream,
            format!("{{\"n\":{index}}}").as_bytes(),
        )
        .await;
    }
    let server = TestServer::start_on(store.clone()).await;

    let mut seen = Vec::new();
    let mut from = "0".to_owned();
    let mut pages = 0;
    loop {
        let body = page(&server, &format!("/v1/events?from={from}&limit=7")).await;
        pages += 1;
        for event in body["events"].as_array().unwrap() {
            seen.push(event["payload"]["n"].as_u64().unwrap());
        }
        from = body["next"].as_str().unwrap().to_owned();
        if !body["has_more"].as_bool().unwrap() {
            break;
        }
        assert!(pages < 10, "the cursor advances");
    }
    assert_eq!(seen, (0..25).collect::<Vec<u64>>());
    assert_eq!(pages, 4);

    // A later append is read from the cursor where the reader stopped.
    append(store.as_ref(), "account-a", b"{\"n\":25}").await;
    let body = page(&server, &format!("/v1/events?from={from}")).await;
    assert_eq!(body["events"][0]["payload"]["n"], 25);

    // One stream, by revision.
    let body = page(&server, "/v1/streams/account-b?from=10&limit=5").await;
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "account-b holds revisions 0 to 11");
    assert_eq!(events[0]["revision"], 10);
    assert_eq!(events[0]["stream"], "account-b");
    assert_eq!(events[0]["payload"]["n"], 21);
    assert_eq!(body["has_more"], false);
    assert_eq!(body["next"], "12");

    // The chain links are shown for auditors' own checks.
    let body = page(&server, "/v1/events?limit=2").await;
    assert_eq!(
        body["events"][1]["chain_previous"],
        body["events"][0]["chain_current"]
    );
    assert_eq!(
        body["events"][0]["chain_previous"],
        "0".repeat(64),
        "the first record follows the genesis digest"
    );

    let report = page(&server, "/v1/verify").await;
    assert_eq!(report["ok"], true);
    assert_eq!(report["events_checked"], 26);
    assert_eq!(report["first_failure"], serde_json::Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn a_missing_stream_reads_empty_and_bad_parameters_are_problems() {
    let server = TestServer::start().await;
    let body = page(&server, "/v1/streams/never-written").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 0);
    assert_eq!(body["has_more"], false);
    for (path, field) in [
        ("/v1/events?limit=5000", "limit"),
        ("/v1/events?from=abc", "from"),
        ("/v1/streams/x?from=-3", "from"),
    ] {
        let response = server.get(path, Some(Role::Auditor)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = problem(response).await;
        assert_eq!(body["type"], "validation_failed");
        assert!(
            body["detail"].as_str().unwrap().contains(field),
            "{path}: {body}"
        );
    }
    server.stop().await;
}
