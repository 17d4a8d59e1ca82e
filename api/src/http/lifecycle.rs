//! The rest of an account's life, as the billing service reports it:
//! `POST /v1/accounts/{id}/subscriptions`,
//! `POST /v1/accounts/{id}/subscriptions/{subscription_id}/cancellation`,
//! `POST /v1/accounts/{id}/credits/expirations`,
//! `POST /v1/accounts/{id}/personal-data`.
//!
//! Each names its fact by an id the caller chose (a subscription id, a correction id) or
//! by the account and time (an expiry run), so a retry repeats the first answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ledger::domain::account::{AccountCommand, ForAccount};
use ledger::domain::events::{DomainEvent, PersonalData};
use ledger::domain::ids::{ProductId, SubscriptionId};
use ledger::domain::AccountId;
use ledger::privacy::domain::{fingerprint_token, record_fingerprints};
use ledger::privacy::fingerprint::FingerprintKind;

use super::accounts::{account_id, opened_since};
use super::auth::{Authorized, BillingOnly};
use super::command::{body, fresh_or_repeat, idempotent, stated_time};
use super::error::{ApiError, ApiJson, ApiPath, Problem};
use super::events::rfc3339;
use super::AppState;
use crate::idempotency::CommandKey;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts/{id}/subscriptions", post(start_subscription))
        .route(
            "/v1/accounts/{id}/subscriptions/{subscription_id}/cancellation",
            post(cancel_subscription),
        )
        .route(
            "/v1/accounts/{id}/credits/expirations",
            post(expire_credits),
        )
        .route(
            "/v1/accounts/{id}/personal-data",
            post(correct_personal_data),
        )
}

/// `POST /v1/accounts/{id}/subscriptions`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSubscriptionRequest {
    /// The processor's subscription id (`sub_...`); the command's idempotency key.
    #[schema(example = "sub_1Nq8")]
    pub subscription_id: String,
    /// The plan subscribed to (`basic`, `pro`, ...).
    #[schema(example = "pro")]
    pub product: String,
    /// When it started (RFC 3339); now when absent, never in the future.
    #[schema(value_type = Option<String>, example = "2026-10-05T12:00:00Z")]
    pub started_at: Option<DateTime<Utc>>,
}

/// `POST /v1/accounts/{id}/subscriptions/{subscription_id}/cancellation`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelSubscriptionRequest {
    /// When it was cancelled (RFC 3339); now when absent, never in the future.
    #[schema(value_type = Option<String>, example = "2026-11-05T12:00:00Z")]
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// `201` to a start or a cancellation (`200` for a repeat).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionResponse {
    pub account_id: uuid::Uuid,
    pub subscription_id: String,
    /// `active` or `cancelled`.
    pub status: String,
    /// The time of the start or the cancellation, as recorded.
    pub at: String,
}

/// `POST /v1/accounts/{id}/credits/expirations`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpireCreditsRequest {
    /// The instant grants are judged at: every grant whose expiry is at or before it
    /// loses what remains. Now when absent, never in the future. With the account, the
    /// command's idempotency key.
    #[schema(value_type = Option<String>, example = "2026-11-01T01:00:00Z")]
    pub expired_at: Option<DateTime<Utc>>,
}

/// One grant's remainder that expired.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExpiredGrantView {
    pub grant_id: String,
    pub credits: u64,
}

/// `201` when something expired, `200` when nothing was left to expire (or a repeat).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExpireCreditsResponse {
    pub account_id: uuid::Uuid,
    pub expired_at: String,
    pub expired: Vec<ExpiredGrantView>,
}

/// `POST /v1/accounts/{id}/personal-data`: the person changed their name, email or
/// signup IP. Sealed with the account's key like the original, never logged.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrectPersonalDataRequest {
    /// The caller's id for the change; the command's idempotency key.
    pub correction_id: String,
    pub name: String,
    pub email: String,
    /// The signup IP address, as before (the self-referral check reads it).
    pub signup_ip: Option<String>,
    /// When the person made the change (RFC 3339); now when absent, never in the future.
    #[schema(value_type = Option<String>)]
    pub corrected_at: Option<DateTime<Utc>>,
}

// Requests carry personal data: debug output names the ids only.
impl std::fmt::Debug for CorrectPersonalDataRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorrectPersonalDataRequest")
            .field("correction_id", &self.correction_id)
            .finish_non_exhaustive()
    }
}

/// `201` to a correction (`200` for a repeat or a correction that changes nothing).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CorrectionResponse {
    pub account_id: uuid::Uuid,
    pub correction_id: String,
    pub corrected_at: String,
}

fn account_lock(account: AccountId) -> String {
    format!("account-{account}")
}

/// Starts a subscription (the payments for it are recorded with `POST /v1/payments`).
#[utoipa::path(
    post, path = "/v1/accounts/{id}/subscriptions", tag = "billing",
    params(("id" = String, Path, description = "The account id")),
    request_body = StartSubscriptionRequest,
    responses(
        (status = 201, description = "Started", body = SubscriptionResponse),
        (status = 200, description = "A repeat of an earlier identical start", body = SubscriptionResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`", body = Problem),
        (status = 422, description = "`subscription_already_active`, ...", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn start_subscription(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<StartSubscriptionRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&id)?;
    let subscription_id = SubscriptionId::parse(&request.subscription_id)?;
    let product = ProductId::parse(&request.product)?;
    let since = opened_since(&state.ledger, account).await?;
    let started_at = stated_time("started_at", request.started_at, since)?;
    let key = CommandKey::new(
        "subscription_start",
        &format!("{account}/{subscription_id}"),
        "subscription_id",
    )?;
    let ledger = state.ledger.clone();
    let fingerprinted = (account, request.clone());
    idempotent(
        &state,
        key,
        &fingerprinted,
        vec![account_lock(account)],
        |meta| async move {
            let command = ForAccount {
                account_id: account,
                command: AccountCommand::StartSubscription {
                    subscription_id: subscription_id.clone(),
                    product,
                    started_at,
                },
            };
            let outcome = ledger.account_command(meta, &command).await?;
            let response = SubscriptionResponse {
                account_id: account.as_uuid(),
                subscription_id: subscription_id.to_string(),
                status: "active".to_owned(),
                at: rfc3339(started_at),
            };
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
}

/// Cancels a subscription (churn, or the first half of a plan change).
#[utoipa::path(
    post, path = "/v1/accounts/{id}/subscriptions/{subscription_id}/cancellation", tag = "billing",
    params(
        ("id" = String, Path, description = "The account id"),
        ("subscription_id" = String, Path, description = "The processor's subscription id"),
    ),
    request_body = CancelSubscriptionRequest,
    responses(
        (status = 201, description = "Cancelled", body = SubscriptionResponse),
        (status = 200, description = "A repeat of an earlier identical cancellation", body = SubscriptionResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`", body = Problem),
        (status = 422, description = "`subscription_not_active`, ...", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn cancel_subscription(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath((id, subscription)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<CancelSubscriptionRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&id)?;
    let subscription_id = SubscriptionId::parse(&subscription)?;
    let since = opened_since(&state.ledger, account).await?;
    let cancelled_at = stated_time("cancelled_at", request.cancelled_at, since)?;
    let key = CommandKey::new(
        "subscription_cancel",
        &format!("{account}/{subscription_id}"),
        "subscription_id",
    )?;
    let ledger = state.ledger.clone();
    let fingerprinted = (account, subscription_id.to_string(), request.clone());
    idempotent(
        &state,
        key,
        &fingerprinted,
        vec![account_lock(account)],
        |meta| async move {
            let command = ForAccount {
                account_id: account,
                command: AccountCommand::CancelSubscription {
                    subscription_id: subscription_id.clone(),
                    cancelled_at,
                },
            };
            let outcome = ledger.account_command(meta, &command).await?;
            let response = SubscriptionResponse {
                account_id: account.as_uuid(),
                subscription_id: subscription_id.to_string(),
                status: "cancelled".to_owned(),
                at: rfc3339(cancelled_at),
            };
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
}

/// Expires what remains of every grant past its expiry date, one `CreditsExpired` per
/// grant. Run it for each account with expired grants (a daily or monthly job).
#[utoipa::path(
    post, path = "/v1/accounts/{id}/credits/expirations", tag = "billing",
    params(("id" = String, Path, description = "The account id")),
    request_body = ExpireCreditsRequest,
    responses(
        (status = 201, description = "Expired, grant by grant", body = ExpireCreditsResponse),
        (status = 200, description = "Nothing left to expire, or a repeat", body = ExpireCreditsResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn expire_credits(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ExpireCreditsRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&id)?;
    let since = opened_since(&state.ledger, account).await?;
    let expired_at = stated_time("expired_at", request.expired_at, since)?;
    let key = CommandKey::new(
        "credits_expiry",
        &format!("{account}/{}", rfc3339(expired_at)),
        "expired_at",
    )?;
    let ledger = state.ledger.clone();
    let fingerprinted = (account, expired_at);
    idempotent(
        &state,
        key,
        &fingerprinted,
        vec![account_lock(account)],
        |meta| async move {
            let command = ForAccount {
                account_id: account,
                command: AccountCommand::ExpireCredits { expired_at },
            };
            let outcome = ledger.account_command(meta, &command).await?;
            let expired = outcome
                .events
                .iter()
                .filter_map(|event| match event {
                    DomainEvent::CreditsExpired(expired) => Some(ExpiredGrantView {
                        grant_id: expired.grant_id.to_string(),
                        credits: expired.credits.units(),
                    }),
                    _ => None,
                })
                .collect();
            let response = ExpireCreditsResponse {
                account_id: account.as_uuid(),
                expired_at: rfc3339(expired_at),
                expired,
            };
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
}

/// Corrects an account's personal data (the right to rectification). The new values are
/// sealed with the account's key; the email fingerprint follows the new address.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/personal-data", tag = "billing",
    params(("id" = String, Path, description = "The account id")),
    request_body = CorrectPersonalDataRequest,
    responses(
        (status = 201, description = "Corrected", body = CorrectionResponse),
        (status = 200, description = "A repeat, or nothing changed", body = CorrectionResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`", body = Problem),
        (status = 422, description = "`subject_erased`: the account's keys are gone", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn correct_personal_data(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CorrectPersonalDataRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&id)?;
    let since = opened_since(&state.ledger, account).await?;
    let corrected_at = stated_time("corrected_at", request.corrected_at, since)?;
    let signup_ip = match request.signup_ip.as_deref() {
        Some(text) => Some(text.trim().parse::<std::net::IpAddr>().map_err(|_| {
            ApiError::validation(format!("signup_ip: {text:?} is not an IP address"))
        })?),
        None => None,
    };
    let ip_text = signup_ip.map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string());
    let personal_data = PersonalData::parse(&request.name, &request.email, &ip_text)?;
    let vault = state.ledger.vault();
    let email_fingerprint = fingerprint_token(vault, FingerprintKind::Email, &request.email)?;
    let key = CommandKey::new(
        "correction",
        &format!("{account}/{}", request.correction_id),
        "correction_id",
    )?;
    let ledger = state.ledger.clone();
    let email_for_table = request.email.clone();
    let fingerprinted = (account, request.clone());
    idempotent(
        &state,
        key,
        &fingerprinted,
        vec![account_lock(account)],
        |meta| async move {
            let command = ForAccount {
                account_id: account,
                command: AccountCommand::CorrectPersonalData {
                    personal_data,
                    email_fingerprint,
                    corrected_at,
                },
            };
            let outcome = ledger.account_command(meta, &command).await?;
            // The vault's table of fingerprints follows the new address, as at signup.
            record_fingerprints(
                ledger.vault(),
                account,
                &[(FingerprintKind::Email, email_for_table.as_str())],
            )?;
            let response = CorrectionResponse {
                account_id: account.as_uuid(),
                correction_id: request.correction_id.clone(),
                corrected_at: rfc3339(corrected_at),
            };
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
}
