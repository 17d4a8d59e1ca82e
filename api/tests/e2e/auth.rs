//! Bearer tokens and roles, over HTTP.

use api::tokens::Role;
use reqwest::StatusCode;

use crate::support::{problem, TestServer};

const ACCOUNT: &str = "0b7c6f4e-5d1a-4b8e-9a3f-2c1d0e9f8a7b";

/// Who may call which endpoint.
fn endpoints() -> Vec<(&'static str, String, &'static [Role])> {
    let account = |suffix: &str| format!("/v1/accounts/{ACCOUNT}{suffix}");
    vec![
        ("GET", "/v1/events".to_owned(), &[Role::Auditor]),
        ("GET", "/v1/streams/account-1".to_owned(), &[Role::Auditor]),
        ("GET", "/v1/verify".to_owned(), &[Role::Auditor]),
        ("POST", "/v1/accounts".to_owned(), &[Role::Billing]),
        ("GET", account(""), &[Role::Billing]),
        ("GET", account("/credits"), &[Role::Billing]),
        ("POST", account("/credits/grants"), &[Role::Billing]),
        ("POST", account("/credits/spend"), &[Role::Billing]),
        ("GET", account("/upline"), &[Role::Billing]),
        ("GET", account("/downline"), &[Role::Billing]),
        ("POST", "/v1/payments".to_owned(), &[Role::Billing]),
        (
            "POST",
            "/v1/payments/pi_1/refunds".to_owned(),
            &[Role::Billing],
        ),
        ("POST", "/v1/payout-runs".to_owned(), &[Role::Finance]),
        ("PUT", "/v1/plan".to_owned(), &[Role::Admin]),
    ]
}

#[tokio::test]
async fn every_endpoint_refuses_missing_and_unknown_tokens_and_other_roles() {
    let server = TestServer::start().await;
    for (method, path, allowed) in endpoints() {
        let path = path.as_str();
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
                // Let in: whatever else is wrong with the (empty) request comes after.
                assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&response.status()),
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
