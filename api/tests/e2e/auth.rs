//! Bearer tokens and roles, over HTTP.

use api::tokens::Role;
use reqwest::StatusCode;

use crate::support::{problem, TestServer};

/// Who may call which endpoint. Extended as endpoints land.
const ENDPOINTS: &[(&str, &str, &[Role])] = &[
    ("GET", "/v1/events", &[Role::Auditor]),
    ("GET", "/v1/streams/account-1", &[Role::Auditor]),
    ("GET", "/v1/verify", &[Role::Auditor]),
];

#[tokio::test]
async fn every_endpoint_refuses_missing_and_unknown_tokens_and_other_roles() {
    let server = TestServer::start().await;
    for (method, path, allowed) in ENDPOINTS {
        let method: reqwest::Method = method.parse().unwrap();
        let response = server
            .client
            .request(method.clone(), server.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(problem(response).await["type"], "unauthorized");

        let response = server
            .client
            .request(method.clone(), server.url(path))
            .bearer_auth("an-unknown-secret-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );

        for role in Role::ALL {
            let response = server
                .client
                .request(method.clone(), server.url(path))
                .bearer_auth(crate::support::secret(role))
                .send()
                .await
                .unwrap();
            if allowed.contains(&role) {
                assert!(
                    response.status().is_success(),
                    "{role} on {method} {path}: {}",
                    response.status()
                );
            } else {
                assert_eq!(
                    response.status(),
                    StatusCode::FORBIDDEN,
                    "{role} on {method} {path}"
                );
                let body = problem(response).await;
                assert_eq!(body["type"], "forbidden");
                assert!(body["detail"].as_str().unwrap().contains(role.as_str()));
            }
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn open_endpoints_need_no_token() {
    let server = TestServer::start().await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let response = server.get(path, None).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    server.stop().await;
}
