//! The privacy officer's endpoints (role `privacy`): `POST /v1/privacy/erasures`,
//! `GET /v1/privacy/exports/{id}`, `POST /v1/privacy/restrictions`,
//! `POST /v1/privacy/legal-holds`, `GET /v1/privacy/requests`.
//!
//! Erasure and restriction responses hold no personal data (they are kept in the
//! idempotency table); the export does, and is never kept or logged.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use ledger::domain::AccountId;
use ledger::privacy::retention::{ErasureProgress, RetentionPolicy};

use super::accounts::account_id;
use super::auth::{Authorized, PrivacyOnly};
use super::command::{body, idempotent};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};
use super::events::rfc3339;
use super::AppState;
use crate::idempotency::CommandKey;
use crate::privacy::{
    erase, legal_hold, restrict, ErasureResponse, LegalHoldResponse, RestrictionResponse,
};
use ledger::privacy::events::HoldReason;

/// Most erasure requests listed by one `GET /v1/privacy/requests`.
pub const ERASURE_REQUESTS_LIST_MAX: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/privacy/erasures", post(request_erasure))
        .route("/v1/privacy/exports/{id}", get(export))
        .route("/v1/privacy/restrictions", post(restriction))
        .route("/v1/privacy/legal-holds", post(hold))
        .route("/v1/privacy/requests", get(requests))
}

/// `POST /v1/privacy/erasures`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequest {
    pub account_id: Uuid,
    /// The privacy officer's id for the request; its idempotency key.
    pub request_id: Uuid,
}

/// What a restriction request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestrictionAction {
    /// Restrict processing: analytics and marketing leave the subject out.
    Restrict,
    /// Lift a restriction.
    Lift,
}

/// `POST /v1/privacy/restrictions`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestrictionRequest {
    pub account_id: Uuid,
    /// The privacy officer's id for the request; its idempotency key.
    pub request_id: Uuid,
    pub action: RestrictionAction,
}

/// What a legal-hold request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldAction {
    /// Place the hold: nothing of the subject's retained personal data is destroyed while
    /// it stands, even after an erasure request.
    Place,
    /// Lift the hold; retained data whose time has come is destroyed at once.
    Lift,
}

/// Why a hold is placed: a category, never free text (which could carry personal data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LegalHoldReason {
    Litigation,
    RegulatoryInquiry,
    TaxAudit,
    LawEnforcementRequest,
}

impl From<LegalHoldReason> for HoldReason {
    fn from(reason: LegalHoldReason) -> HoldReason {
        match reason {
            LegalHoldReason::Litigation => HoldReason::Litigation,
            LegalHoldReason::RegulatoryInquiry => HoldReason::RegulatoryInquiry,
            LegalHoldReason::TaxAudit => HoldReason::TaxAudit,
            LegalHoldReason::LawEnforcementRequest => HoldReason::LawEnforcementRequest,
        }
    }
}

/// `POST /v1/privacy/legal-holds`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalHoldRequest {
    /// The hold's id, chosen by legal; its idempotency key with `action`.
    pub hold_id: Uuid,
    pub account_id: Uuid,
    pub action: HoldAction,
    /// Required to place a hold; must be absent to lift one.
    pub reason: Option<LegalHoldReason>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequestsQuery {
    /// Only requests past their deadline and not carried out.
    pub overdue: Option<bool>,
}

/// One erasure request and where it stands against its deadline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureRequestView {
    pub request_id: Uuid,
    pub account_id: Uuid,
    pub requested_at: String,
    /// The deadline: 30 days after the request.
    pub due_at: String,
    /// `pending` or `completed`.
    pub status: String,
    /// Pending past the deadline.
    pub overdue: bool,
    pub completed_at: Option<String>,
    /// Completed by the deadline (absent while pending).
    pub on_time: Option<bool>,
}

/// `GET /v1/privacy/requests`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureRequestsResponse {
    /// The time the deadlines were judged at.
    pub as_of: String,
    pub deadline_days: u32,
    pub overdue_count: usize,
    pub requests: Vec<ErasureRequestView>,
    /// More requests exist than the list holds (10 000).
    pub truncated: bool,
}

fn account(id: Uuid) -> Result<AccountId, ApiError> {
    AccountId::new(id)
        .map_err(|error| ApiError::validation(format!("account_id: {}", error.problem)))
}

/// Erases a data subject: records the request (the 30-day clock), destroys the keys of
/// their personal data (the profile at once; payment data when its 7-year retention ends,
/// or never while a legal hold stands) and returns the proof. The events stay; the books
/// still balance; nothing can read the person again.
#[utoipa::path(
    post, path = "/v1/privacy/erasures", tag = "privacy",
    request_body = ErasureRequest,
    responses(
        (status = 201, description = "Erased; the proof", body = ErasureResponse),
        (status = 200, description = "A repeat of the request, or the subject was erased before: the first proof", body = ErasureResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`: the request id was used for another account", body = Problem),
    ),
    security(("privacy" = []))
)]
pub async fn request_erasure(
    _: Authorized<PrivacyOnly>,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ErasureRequest>,
) -> Result<Response, ApiError> {
    let subject = account(request.account_id)?;
    let key = CommandKey::new("erasure", &request.request_id.to_string(), "request_id")?;
    let command_id = key.command_id();
    let ledger = state.ledger.clone();
    // No command on the account runs while its keys are destroyed.
    let locks = vec![format!("account-{subject}"), format!("privacy-{subject}")];
    idempotent(&state, key, &request, locks, |_meta| async move {
        let erased = erase(
            &ledger,
            command_id,
            subject,
            request.request_id,
            Utc::now(),
            &RetentionPolicy::default(),
        )
        .await?;
        // Fresh when this request carried the erasure out; a subject erased before gets
        // the first proof with 200.
        let status = if erased.proof.request_id == request.request_id {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        tracing::info!(request_id = %request.request_id, "erasure carried out");
        Ok((status, body(&erased)?))
    })
    .await
}

/// Everything the ledger holds about a data subject, personal values decrypted, as one
/// machine-readable document (`refledger.subject-export.v1`). After an erasure it holds
/// no personal data: erased values read `{"erased_at": ...}`.
#[utoipa::path(
    get, path = "/v1/privacy/exports/{id}", tag = "privacy",
    params(("id" = String, Path, description = "The account id (the data subject)")),
    responses(
        (status = 200, description = "The export document", content_type = "application/json"),
        (status = 404, description = "`account_not_found`", body = Problem),
    ),
    security(("privacy" = []))
)]
pub async fn export(
    _: Authorized<PrivacyOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let subject = account_id(&id)?;
    crate::privacy::require_account(state.ledger.store(), subject).await?;
    let document = state.ledger.export_subject(subject).await?;
    Ok(Json(document))
}

/// Restricts processing of a subject's data (analytics and marketing leave them out), or
/// lifts the restriction.
#[utoipa::path(
    post, path = "/v1/privacy/restrictions", tag = "privacy",
    request_body = RestrictionRequest,
    responses(
        (status = 201, description = "Recorded", body = RestrictionResponse),
        (status = 200, description = "A repeat of the request", body = RestrictionResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`", body = Problem),
    ),
    security(("privacy" = []))
)]
pub async fn restriction(
    _: Authorized<PrivacyOnly>,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RestrictionRequest>,
) -> Result<Response, ApiError> {
    let subject = account(request.account_id)?;
    let key = CommandKey::new("restriction", &request.request_id.to_string(), "request_id")?;
    let command_id = key.command_id();
    let ledger = state.ledger.clone();
    let locks = vec![format!("privacy-{subject}")];
    idempotent(&state, key, &request, locks, |_meta| async move {
        let (response, fresh) = restrict(
            &ledger,
            command_id,
            subject,
            request.request_id,
            request.action == RestrictionAction::Restrict,
            Utc::now(),
        )
        .await?;
        let status = if fresh {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, body(&response)?))
    })
    .await
}

/// Places a legal hold on a subject's retained personal data, or lifts it. Lifting runs
/// the retention shredder at once for what the hold alone kept.
#[utoipa::path(
    post, path = "/v1/privacy/legal-holds", tag = "privacy",
    request_body = LegalHoldRequest,
    responses(
        (status = 201, description = "Recorded", body = LegalHoldResponse),
        (status = 200, description = "A repeat of the request", body = LegalHoldResponse),
        (status = 400, description = "Invalid request: `reason` missing when placing, or given when lifting", body = Problem),
        (status = 404, description = "`account_not_found`, or `hold_not_found` when lifting a hold never placed", body = Problem),
        (status = 409, description = "`idempotency_conflict`: the hold id was placed with another reason, or reused after it was lifted", body = Problem),
    ),
    security(("privacy" = []))
)]
pub async fn hold(
    _: Authorized<PrivacyOnly>,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LegalHoldRequest>,
) -> Result<Response, ApiError> {
    let subject = account(request.account_id)?;
    let placing = match (request.action, request.reason) {
        (HoldAction::Place, Some(reason)) => Some(HoldReason::from(reason)),
        (HoldAction::Place, None) => {
            return Err(ApiError::validation(
                "reason: required to place a hold (litigation, regulatory_inquiry, tax_audit or law_enforcement_request)",
            ))
        }
        (HoldAction::Lift, None) => None,
        (HoldAction::Lift, Some(_)) => {
            return Err(ApiError::validation(
                "reason: must be absent when lifting a hold (the hold keeps the reason it was placed with)",
            ))
        }
    };
    let action = match request.action {
        HoldAction::Place => "place",
        HoldAction::Lift => "lift",
    };
    let key = CommandKey::new(
        "legal_hold",
        &format!("{}/{action}", request.hold_id),
        "hold_id",
    )?;
    let command_id = key.command_id();
    let ledger = state.ledger.clone();
    let locks = vec![format!("privacy-{subject}")];
    idempotent(&state, key, &request, locks, |_meta| async move {
        let (response, fresh): (LegalHoldResponse, bool) = legal_hold(
            &ledger,
            command_id,
            subject,
            request.hold_id,
            placing,
            Utc::now(),
            &RetentionPolicy::default(),
        )
        .await?;
        let status = if fresh {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok((status, body(&response)?))
    })
    .await
}

/// Every erasure request and where it stands against its 30-day deadline; overdue ones
/// are marked (and counted).
#[utoipa::path(
    get, path = "/v1/privacy/requests", tag = "privacy",
    params(RequestsQuery),
    responses(
        (status = 200, description = "The requests, oldest first", body = ErasureRequestsResponse),
        (status = 400, description = "Invalid query", body = Problem),
    ),
    security(("privacy" = []))
)]
pub async fn requests(
    _: Authorized<PrivacyOnly>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<RequestsQuery>,
) -> Result<Json<ErasureRequestsResponse>, ApiError> {
    let now = Utc::now();
    let policy = RetentionPolicy::default();
    let statuses = state.ledger.erasure_requests(now, &policy).await?;
    let overdue_count = statuses.iter().filter(|status| status.is_overdue()).count();
    let mut requests: Vec<ErasureRequestView> = statuses
        .iter()
        .filter(|status| query.overdue != Some(true) || status.is_overdue())
        .map(|status| {
            let (label, overdue, completed_at, on_time) = match status.progress {
                ErasureProgress::Pending { overdue } => ("pending", overdue, None, None),
                ErasureProgress::Completed { at, on_time } => {
                    ("completed", false, Some(rfc3339(at)), Some(on_time))
                }
            };
            ErasureRequestView {
                request_id: status.request_id,
                account_id: status.subject.as_uuid(),
                requested_at: rfc3339(status.requested_at),
                due_at: rfc3339(status.due_at),
                status: label.to_owned(),
                overdue,
                completed_at,
                on_time,
            }
        })
        .collect();
    let truncated = requests.len() > ERASURE_REQUESTS_LIST_MAX;
    requests.truncate(ERASURE_REQUESTS_LIST_MAX);
    Ok(Json(ErasureRequestsResponse {
        as_of: rfc3339(now),
        deadline_days: policy.erasure_deadline_days,
        overdue_count,
        requests,
        truncated,
    }))
}
