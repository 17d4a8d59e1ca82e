//! Starting and stopping a server for a test.

use std::sync::Arc;

use api::idempotency::Idempotency;
use api::keys::Fingerprinter;
use api::tokens::{Role, TokenSpec, Tokens};
use api::AppState;
use ledger::privacy::vault::memory::MemoryVault;
use ledger::privacy::KeyVault;
use ledger::service::LedgerConfig;
use ledger::store::memory::MemoryStore;
use ledger::store::EventStore;
use reqwest::header::AUTHORIZATION;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A key vault in memory, for a server and its restarts.
pub fn new_vault() -> Arc<dyn KeyVault> {
    Arc::new(MemoryVault::new().unwrap())
}

pub fn secret(role: Role) -> String {
    format!("{role}-e2e-secret-0123456789")
}

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    /// The server's state, for tests that drive its background work (the reservation
    /// sweeper) with a clock of their own.
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), api::server::ServeError>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_on(Arc::new(MemoryStore::new())).await
    }

    pub async fn start_on(store: Arc<dyn EventStore>) -> TestServer {
        TestServer::start_with(store, Idempotency::in_memory(), new_vault()).await
    }

    /// A server over `store` and `vault`: a restart keeps both, as a data directory does.
    pub async fn start_with(
        store: Arc<dyn EventStore>,
        idempotency: Idempotency,
        vault: Arc<dyn KeyVault>,
    ) -> TestServer {
        TestServer::start_edged(store, idempotency, vault, api::server::Edges::default()).await
    }

    /// A server whose timeouts are `edges`.
    pub async fn start_edged(
        store: Arc<dyn EventStore>,
        idempotency: Idempotency,
        vault: Arc<dyn KeyVault>,
        edges: api::server::Edges,
    ) -> TestServer {
        let specs: Vec<TokenSpec> = Role::ALL
            .into_iter()
            .map(|role| TokenSpec::new(role, secret(role)).unwrap())
            .collect();
        let state = AppState::new(store, Tokens::new(&specs).unwrap(), idempotency)
            // One key for every test server, as a data directory keeps one across restarts.
            .with_fingerprinter(Fingerprinter::new([7; 32]))
            .with_ledger(LedgerConfig::default(), vault);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(api::server::run(
            state.clone(),
            listener,
            edges,
            async move {
                let _ = signal.await;
            },
        ));
        TestServer {
            base,
            client: reqwest::Client::new(),
            state,
            shutdown: Some(shutdown),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str, role: Option<Role>) -> reqwest::RequestBuilder {
        with_role(self.client.get(self.url(path)), role)
    }

    pub fn post(&self, path: &str, role: Option<Role>) -> reqwest::RequestBuilder {
        with_role(self.client.post(self.url(path)), role)
    }

    pub fn put(&self, path: &str, role: Option<Role>) -> reqwest::RequestBuilder {
        with_role(self.client.put(self.url(path)), role)
    }

    /// Sends a JSON command as `role` and returns the status and body.
    pub async fn command(
        &self,
        path: &str,
        role: Role,
        body: &serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self.post(path, Some(role)).json(body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    /// How many events the log holds, read as an auditor.
    pub async fn event_count(&self) -> usize {
        let mut count = 0;
        let mut from = "0".to_owned();
        loop {
            let page: serde_json::Value = self
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
            count += page["events"].as_array().unwrap().len();
            if !page["has_more"].as_bool().unwrap() {
                return count;
            }
            from = page["next"].as_str().unwrap().to_owned();
        }
    }

    /// Begins a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Shuts down gracefully and waits until the server has stopped.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        tokio::time::timeout(std::time::Duration::from_secs(30), self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}

fn with_role(request: reqwest::RequestBuilder, role: Option<Role>) -> reqwest::RequestBuilder {
    match role {
        Some(role) => request.header(AUTHORIZATION, format!("Bearer {}", secret(role))),
        None => request,
    }
}

/// Reads a problem+json body, checking its media type and that `status` matches.
pub async fn problem(response: reqwest::Response) -> serde_json::Value {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "errors are problem+json"
    );
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    for member in ["type", "title", "detail"] {
        assert!(body[member].is_string(), "{member} in {body}");
    }
    body
}
