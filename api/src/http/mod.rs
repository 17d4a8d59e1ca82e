//! The HTTP API: one module per resource, each with its own `router()`, merged by [`app`].

pub mod accounts;
pub mod auth;
pub mod command;
pub mod error;
pub mod events;
pub mod finance;
pub mod heads;
pub mod health;
pub mod lifecycle;
pub mod metrics;
pub mod openapi;
pub mod payments;
pub mod payouts;
pub mod privacy;
pub mod proofs;
pub mod reports;
pub mod reservations;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;

use ledger::store::EventStore;

use ledger::privacy::vault::memory::MemoryVault;
use ledger::privacy::KeyVault;
use ledger::service::{Ledger, LedgerConfig};

use crate::idempotency::Idempotency;
use crate::keys::{random_key, Fingerprinter};
use crate::locks::KeyedLocks;
use crate::store::MeteredStore;
use crate::tokens::Tokens;
use error::{fallback_not_found, ApiError, BODY_SIZE_MAX};
use metrics::Metrics;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The event store, metered.
    pub store: Arc<dyn EventStore>,
    /// The command service, over the same metered store.
    pub ledger: Arc<Ledger<MeteredStore>>,
    pub tokens: Arc<Tokens>,
    pub idempotency: Arc<Idempotency>,
    /// Commands on one stream queue here (see [`crate::locks`]).
    pub stream_locks: Arc<KeyedLocks>,
    pub fingerprinter: Arc<Fingerprinter>,
    pub metrics: Arc<Metrics>,
    /// The read model of commissions and reports, caught up on every read.
    pub views: crate::reports::ReportViews,
    /// Set when shutdown begins: `/readyz` turns 503 so load balancers stop sending.
    pub draining: Arc<AtomicBool>,
    /// Signs the log's head (`/v1/heads`).
    pub heads: Arc<crate::heads::HeadSigner>,
}

impl AppState {
    /// A state with an in-memory key vault and a random fingerprint key: fine for tests;
    /// a server passes those of its data directory with [`AppState::with_ledger`] and
    /// [`AppState::with_fingerprinter`].
    pub fn new(store: Arc<dyn EventStore>, tokens: Tokens, idempotency: Idempotency) -> AppState {
        let metrics = Arc::new(Metrics::default());
        let metered = crate::store::metered(store, metrics.clone());
        let vault: Arc<dyn KeyVault> =
            Arc::new(MemoryVault::new().expect("the OS random number generator works"));
        AppState {
            store: Arc::new(metered.clone()),
            ledger: Arc::new(Ledger::new(metered, LedgerConfig::default(), vault)),
            tokens: Arc::new(tokens),
            idempotency: Arc::new(idempotency),
            stream_locks: Arc::new(KeyedLocks::default()),
            fingerprinter: Arc::new(Fingerprinter::new(random_key())),
            metrics,
            views: crate::reports::ReportViews::default(),
            draining: Arc::new(AtomicBool::new(false)),
            heads: Arc::new(crate::heads::HeadSigner::ephemeral()),
        }
    }

    /// The same state with the ledger configured by `config`, sealing personal data
    /// with the keys of `vault`.
    pub fn with_ledger(mut self, config: LedgerConfig, vault: Arc<dyn KeyVault>) -> AppState {
        self.ledger = Arc::new(Ledger::new(self.ledger.store().clone(), config, vault));
        self
    }

    pub fn with_heads(mut self, heads: crate::heads::HeadSigner) -> AppState {
        self.heads = Arc::new(heads);
        self
    }

    pub fn with_fingerprinter(mut self, fingerprinter: Fingerprinter) -> AppState {
        self.fingerprinter = Arc::new(fingerprinter);
        self
    }
}

/// The whole API as a router, ready to serve or to call with `oneshot` in tests.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(metrics::router())
        .merge(openapi::router())
        .merge(events::router())
        .merge(heads::router())
        .merge(proofs::router())
        .merge(accounts::router())
        .merge(reservations::router())
        .merge(lifecycle::router())
        .merge(payments::router())
        .merge(payouts::router())
        .merge(finance::router())
        .merge(privacy::router())
        .merge(reports::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(fallback_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_SIZE_MAX))
        .layer(axum::middleware::from_fn(error::edges))
        .with_state(state)
}

async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
    }
}

#[cfg(test)]
mod tests;
