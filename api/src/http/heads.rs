//! Signed heads over HTTP (role auditor): the latest, a page of them, one signed on
//! request, and the public key that checks them. The signing is `crate::heads`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::heads::{SignedHead, HEADS_PAGE_MAX};

use super::auth::{AuditorOnly, Authorized};
use super::error::{ApiError, ApiQuery};
use super::AppState;

/// Heads in a page when `limit` is not given.
pub const HEADS_PAGE_DEFAULT: usize = 100;
const _: () = assert!(HEADS_PAGE_DEFAULT <= HEADS_PAGE_MAX);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/heads", get(list_heads).post(sign_head))
        .route("/v1/heads/latest", get(latest_head))
        .route("/v1/heads/key", get(head_key))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HeadsQuery {
    /// The heads that cover at least this many records. Default: 0 (from the first).
    pub from: Option<u64>,
    /// Heads in the page, 1 to 1000. Default: 100.
    pub limit: Option<usize>,
}

/// Signed heads, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeadPage {
    pub heads: Vec<SignedHead>,
    /// More heads follow: ask again with `from` one more than the last head's `events`.
    pub has_more: bool,
}

/// The key that signs the heads.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeadKey {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The public key, 64 hex digits.
    pub public_key: String,
}

/// The latest signed head: keep it, and `refledger verify --trusted-head FILE` later
/// fails unless the log still extends it.
#[utoipa::path(
    get, path = "/v1/heads/latest", tag = "auditor",
    responses(
        (status = 200, description = "The latest signed head", body = SignedHead),
        (status = 401, description = "No valid token", body = super::error::Problem),
        (status = 403, description = "Not an auditor", body = super::error::Problem),
        (status = 404, description = "No head signed yet (an empty log)", body = super::error::Problem),
    ),
    security(("auditor" = []))
)]
pub async fn latest_head(
    _: Authorized<AuditorOnly>,
    State(state): State<AppState>,
) -> Result<Json<SignedHead>, ApiError> {
    state
        .heads
        .latest()
        .await
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no signed head yet"))
}

/// The signed heads, oldest first, from those covering `from` records.
#[utoipa::path(
    get, path = "/v1/heads", tag = "auditor",
    params(HeadsQuery),
    responses(
        (status = 200, description = "A page of signed heads", body = HeadPage),
        (status = 400, description = "Bad limit", body = super::error::Problem),
        (status = 401, description = "No valid token", body = super::error::Problem),
        (status = 403, description = "Not an auditor", body = super::error::Problem),
    ),
    security(("auditor" = []))
)]
pub async fn list_heads(
    _: Authorized<AuditorOnly>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HeadsQuery>,
) -> Result<Json<HeadPage>, ApiError> {
    let limit = match query.limit {
        None => HEADS_PAGE_DEFAULT,
        Some(limit) if (1..=HEADS_PAGE_MAX).contains(&limit) => limit,
        Some(limit) => {
            return Err(ApiError::validation(format!(
                "limit: must be 1 to {HEADS_PAGE_MAX}, got {limit}"
            )))
        }
    };
    let (heads, has_more) = state.heads.page(query.from.unwrap_or(0), limit).await;
    Ok(Json(HeadPage { heads, has_more }))
}

/// Signs the log's head now and keeps it with the others.
#[utoipa::path(
    post, path = "/v1/heads", tag = "auditor",
    responses(
        (status = 201, description = "The head, signed now", body = SignedHead),
        (status = 401, description = "No valid token", body = super::error::Problem),
        (status = 403, description = "Not an auditor", body = super::error::Problem),
        (status = 404, description = "The log is empty, or its chain is per stream (a cluster)", body = super::error::Problem),
    ),
    security(("auditor" = []))
)]
pub async fn sign_head(
    _: Authorized<AuditorOnly>,
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<SignedHead>), ApiError> {
    let signed = state.heads.sign(state.store.as_ref(), false).await?;
    let head = signed.ok_or_else(|| ApiError::not_found("a head to sign (the log is empty)"))?;
    Ok((StatusCode::CREATED, Json(head)))
}

/// The public key that checks every signed head.
#[utoipa::path(
    get, path = "/v1/heads/key", tag = "auditor",
    responses(
        (status = 200, description = "The head-signing public key", body = HeadKey),
        (status = 401, description = "No valid token", body = super::error::Problem),
        (status = 403, description = "Not an auditor", body = super::error::Problem),
    ),
    security(("auditor" = []))
)]
pub async fn head_key(_: Authorized<AuditorOnly>, State(state): State<AppState>) -> Json<HeadKey> {
    Json(HeadKey {
        algorithm: "ed25519".to_owned(),
        public_key: state.heads.public_key(),
    })
}
