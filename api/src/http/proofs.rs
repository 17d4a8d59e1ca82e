//! Merkle proofs over the log (role auditor): inclusion of a record, consistency of two
//! sizes of the log. The proofs themselves are `crate::proofs`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::proofs::{ConsistencyProof, InclusionProof, ProofError};

use super::auth::{AuditorOnly, Authorized};
use super::error::{ApiError, ApiQuery};
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/proofs/inclusion", get(inclusion))
        .route("/v1/proofs/consistency", get(consistency))
}

impl From<ProofError> for ApiError {
    fn from(error: ProofError) -> ApiError {
        match error {
            ProofError::Store(error) => error.into(),
            ProofError::Invalid(detail) => ApiError::validation(detail),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InclusionQuery {
    /// The record's position.
    pub position: u64,
    /// The size of the tree: a signed head's `events`. Default: the whole log.
    pub head: Option<u64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyQuery {
    /// The smaller size, at least 1.
    pub from: u64,
    /// The larger size. Default: the whole log.
    pub to: Option<u64>,
}

/// That the record at `position` is in the log of `head` records.
#[utoipa::path(
    get, path = "/v1/proofs/inclusion", tag = "auditor",
    params(InclusionQuery),
    responses(
        (status = 200, description = "The audit path and the tree's root", body = InclusionProof),
        (status = 400, description = "A position or size the log does not hold", body = super::error::Problem),
        (status = 401, description = "No valid token", body = super::error::Problem),
        (status = 403, description = "Not an auditor", body = super::error::Problem),
    ),
    security(("auditor" = []))
)]
pub async fn inclusion(
    _: Authorized<AuditorOnly>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    let proof = crate::proofs::inclusion(state.store.as_ref(), query.position, query.head).await?;
    Ok(Json(proof))
}

/// That the log of `from` records is a prefix of the log of `to` records.
#[utoipa::path(
    get, path = "/v1/proofs/consistency", tag = "auditor",
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "The consistency proof and both roots", body = ConsistencyProof),
        (status = 400, description = "Sizes the log does not hold", body = super::error::Problem),
        (status = 401, description = "No valid token", body = super::error::Problem),
        (status = 403, description = "Not an auditor", body = super::error::Problem),
    ),
    security(("auditor" = []))
)]
pub async fn consistency(
    _: Authorized<AuditorOnly>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let proof = crate::proofs::consistency(state.store.as_ref(), query.from, query.to).await?;
    Ok(Json(proof))
}
