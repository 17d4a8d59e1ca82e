//! Liveness and readiness probes.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// The server takes traffic: the store answers and takes writes, and no shutdown has
/// begun. A store that refuses writes (a full disk, a failed sync) is not ready, while
/// reads keep being served.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Shutting down, the store does not answer, or it refuses writes", body = super::error::Problem),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.draining.load(Ordering::Acquire) {
        return Err(ApiError::Unavailable {
            reason: "shutting down".to_owned(),
        });
    }
    state
        .store
        .head()
        .await
        .map_err(|error| ApiError::Unavailable {
            reason: format!("the store does not answer: {error}"),
        })?;
    if let Some(reason) = state.store.write_refusal() {
        return Err(ApiError::Unavailable {
            reason: format!("the store refuses writes: {reason}"),
        });
    }
    Ok(Json(Health {
        status: "ready".to_owned(),
    }))
}
