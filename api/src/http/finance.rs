//! Finance's decisions after the facts (role `finance`):
//! `POST /v1/payments/{payment_id}/commissions/{level}/review` (release or forfeit a
//! commission held for fraud review), `POST /v1/payouts/{period}/{affiliate_id}/settlement`
//! (a payout sent or failed), `POST /v1/donations` (a month's donation).
//!
//! Each is keyed by what it decides on (a commission, a payout, a period): asked again
//! with the same body it answers as the first time; with another body, `409`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ledger::domain::donation::{self, AllocateDonation, DonationState};
use ledger::domain::events::DomainEvent;
use ledger::domain::ids::{OrganisationId, PaymentId, PayoutReference};
use ledger::domain::money::Rate;
use ledger::domain::payment::{ReviewCommission, ReviewDecision};
use ledger::domain::payout::{self, PayoutsState, SettlePayout, Settlement};
use ledger::domain::plan::PLAN_LEVELS_MAX;
use ledger::domain::{streams, Period};
use ledger::privacy::domain::decode_redacted;
use ledger::store::{Direction, EventStore, StreamFrom, StreamName, PAGE_SIZE_MAX};

use super::accounts::account_id;
use super::auth::{Authorized, FinanceOnly};
use super::command::{body, fresh_or_repeat, idempotent, stated_time};
use super::error::{at_field, ApiError, ApiJson, ApiPath, Problem};
use super::events::rfc3339;
use super::AppState;
use crate::idempotency::CommandKey;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/payments/{payment_id}/commissions/{level}/review",
            post(review_commission),
        )
        .route(
            "/v1/payouts/{period}/{affiliate_id}/settlement",
            post(settle_payout),
        )
        .route("/v1/donations", post(allocate_donation))
}

/// What finance decided about a held commission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecisionRequest {
    /// The referral is genuine: the commission goes on to its hold and payout.
    Release,
    /// The referral was fraudulent: the commission is never paid.
    Forfeit,
}

/// `POST /v1/payments/{payment_id}/commissions/{level}/review`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    pub decision: ReviewDecisionRequest,
    /// When the review was decided (RFC 3339); now when absent, never in the future.
    #[schema(value_type = Option<String>)]
    pub reviewed_at: Option<DateTime<Utc>>,
}

/// `201` to a review (`200` for a repeat).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReviewResponse {
    pub payment_id: String,
    pub level: u8,
    pub decision: ReviewDecisionRequest,
    pub beneficiary_id: uuid::Uuid,
    /// The commission's amount (released or forfeited).
    pub amount: String,
    pub currency: String,
}

/// How a payout settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettlementStatus {
    Sent,
    Failed,
}

/// `POST /v1/payouts/{period}/{affiliate_id}/settlement`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettlementRequest {
    pub status: SettlementStatus,
    /// The bank's or processor's transfer reference; required when `sent`.
    #[schema(example = "po_2026-10_0042")]
    pub reference: Option<String>,
    /// Why the transfer failed; required when `failed`. Carries no personal data.
    pub reason: Option<String>,
    /// When it settled (RFC 3339); now when absent, never in the future.
    #[schema(value_type = Option<String>)]
    pub settled_at: Option<DateTime<Utc>>,
}

impl SettlementRequest {
    pub fn settlement(&self) -> Result<Settlement, ApiError> {
        match (self.status, &self.reference, &self.reason) {
            (SettlementStatus::Sent, Some(reference), None) => Ok(Settlement::Sent {
                reference: PayoutReference::parse(reference).map_err(at_field("reference"))?,
            }),
            (SettlementStatus::Failed, None, Some(reason)) => Ok(Settlement::Failed {
                reason: reason.clone(),
            }),
            (SettlementStatus::Sent, _, _) => Err(ApiError::validation(
                "reference: a sent payout names its reference, and no reason",
            )),
            (SettlementStatus::Failed, _, _) => Err(ApiError::validation(
                "reason: a failed payout names its reason, and no reference",
            )),
        }
    }
}

/// `201` to a settlement (`200` for a repeat).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SettlementResponse {
    pub period: String,
    pub affiliate_id: uuid::Uuid,
    pub status: SettlementStatus,
    pub amount: String,
    pub currency: String,
    pub settled_at: String,
}

/// `POST /v1/donations`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DonationRequest {
    /// The calendar month, `YYYY-MM`; the command's idempotency key.
    #[schema(example = "2026-10")]
    pub period: String,
    /// The receiving organisation's id.
    #[schema(example = "ocean-cleanup")]
    pub organisation: String,
    /// The donated share of the month's net revenue, a decimal string (`"0.02"`).
    #[schema(example = "0.02")]
    pub share: String,
    /// When it was allocated (RFC 3339), after the month ended; now when absent, never
    /// in the future.
    #[schema(value_type = Option<String>)]
    pub allocated_at: Option<DateTime<Utc>>,
}

/// `201` to a donation (`200` for a repeat).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DonationResponse {
    pub period: String,
    pub organisation: String,
    pub share: String,
    /// The month's net revenue times the share, rounded half-even to the minor unit.
    pub amount: String,
    pub currency: String,
}

/// Releases or forfeits a commission held for fraud review.
#[utoipa::path(
    post, path = "/v1/payments/{payment_id}/commissions/{level}/review", tag = "finance",
    params(
        ("payment_id" = String, Path, description = "The processor's payment id"),
        ("level" = u8, Path, description = "The commission's level, 1 for the payer's referrer"),
    ),
    request_body = ReviewRequest,
    responses(
        (status = 201, description = "Decided", body = ReviewResponse),
        (status = 200, description = "A repeat of the same decision", body = ReviewResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`payment_not_found`, `commission_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`, or the commission was already decided otherwise", body = Problem),
        (status = 422, description = "`commission_not_held`, ...", body = Problem),
    ),
    security(("finance" = []))
)]
pub async fn review_commission(
    _: Authorized<FinanceOnly>,
    State(state): State<AppState>,
    ApiPath((payment, level)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<ReviewRequest>,
) -> Result<Response, ApiError> {
    let payment_id = PaymentId::parse(&payment)?;
    let level = commission_level(&level)?;
    let reviewed_at = stated_time("reviewed_at", request.reviewed_at, None)?;
    let key = CommandKey::new("review", &format!("{payment_id}/{level}"), "level")?;
    let ledger = state.ledger.clone();
    let fingerprinted = (payment_id.to_string(), level, request.clone());
    idempotent(
        &state,
        key,
        &fingerprinted,
        vec![streams::payment(&payment_id).to_string()],
        |meta| async move {
            let command = ReviewCommission {
                payment_id: payment_id.clone(),
                level,
                decision: match request.decision {
                    ReviewDecisionRequest::Release => ReviewDecision::Release,
                    ReviewDecisionRequest::Forfeit => ReviewDecision::Forfeit,
                },
                reviewed_at,
            };
            let outcome = ledger.review_commission(meta, &command).await?;
            let payment = ledger
                .payment(&payment_id)
                .await?
                .ok_or_else(|| ApiError::internal("a reviewed payment does not read back"))?;
            let commission = payment
                .commissions
                .iter()
                .find(|commission| commission.earned.level == level)
                .ok_or_else(|| ApiError::internal("a reviewed commission does not read back"))?;
            let response = ReviewResponse {
                payment_id: payment_id.to_string(),
                level,
                decision: request.decision,
                beneficiary_id: commission.earned.beneficiary.as_uuid(),
                amount: commission.earned.amount.amount().to_string(),
                currency: commission.earned.amount.currency().code().to_owned(),
            };
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
}

/// Records how a scheduled payout settled: sent (with its transfer reference) or failed
/// (the amount goes back to the affiliate's payable balance).
#[utoipa::path(
    post, path = "/v1/payouts/{period}/{affiliate_id}/settlement", tag = "finance",
    params(
        ("period" = String, Path, description = "The payout run's month, `YYYY-MM`"),
        ("affiliate_id" = String, Path, description = "The affiliate paid"),
    ),
    request_body = SettlementRequest,
    responses(
        (status = 201, description = "Recorded", body = SettlementResponse),
        (status = 200, description = "A repeat of the same settlement", body = SettlementResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`payout_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`, `payout_already_settled` (otherwise)", body = Problem),
    ),
    security(("finance" = []))
)]
pub async fn settle_payout(
    _: Authorized<FinanceOnly>,
    State(state): State<AppState>,
    ApiPath((period, affiliate)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<SettlementRequest>,
) -> Result<Response, ApiError> {
    let period = Period::parse(&period)?;
    let affiliate = account_id(&affiliate)?;
    let settlement = request.settlement()?;
    let settled_at = stated_time("settled_at", request.settled_at, None)?;
    let key = CommandKey::new(
        "settlement",
        &format!("{period}/{affiliate}"),
        "affiliate_id",
    )?;
    let ledger = state.ledger.clone();
    let fingerprinted = (period.to_string(), affiliate, request.clone());
    let settled_otherwise = already(
        "payout_already_settled",
        format!(
            "the payout to {affiliate} for {period} was already settled otherwise; a \
             settlement stands as first recorded"
        ),
    );
    idempotent(
        &state,
        key,
        &fingerprinted,
        // Payout runs take the same lock (`payouts::PAYOUTS_LOCK`).
        vec!["payouts".to_owned()],
        |meta| async move {
            let command = SettlePayout {
                period,
                affiliate,
                settlement,
                settled_at,
            };
            let outcome = ledger.settle_payout(meta, &command).await?;
            // Read back from the stream: a repeat under another command id records
            // nothing and the settlement stands as first recorded.
            let payouts = fold_stream(
                ledger.store(),
                &streams::payouts(),
                PayoutsState::default(),
                payout::evolve,
            )
            .await?;
            let amount = payouts
                .payouts
                .get(&(period, affiliate))
                .map(|payout| payout.scheduled.amount)
                .ok_or_else(|| ApiError::internal("a settled payout does not read back"))?;
            let response = SettlementResponse {
                period: period.to_string(),
                affiliate_id: affiliate.as_uuid(),
                status: request.status,
                amount: amount.amount().to_string(),
                currency: amount.currency().code().to_owned(),
                settled_at: rfc3339(settled_at),
            };
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
    .map_err(settled_otherwise)
}

/// Allocates a month's donation: the share of its net revenue (payments less refunds and
/// chargebacks), after the month ended. One per month; no user data.
#[utoipa::path(
    post, path = "/v1/donations", tag = "finance",
    request_body = DonationRequest,
    responses(
        (status = 201, description = "Allocated", body = DonationResponse),
        (status = 200, description = "A repeat of the same allocation", body = DonationResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 409, description = "`idempotency_conflict`, `donation_exists` (otherwise)", body = Problem),
        (status = 422, description = "`donation_too_early`: the month has not ended", body = Problem),
    ),
    security(("finance" = []))
)]
pub async fn allocate_donation(
    _: Authorized<FinanceOnly>,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DonationRequest>,
) -> Result<Response, ApiError> {
    let period = Period::parse(&request.period)?;
    let organisation = OrganisationId::parse(&request.organisation)?;
    let share = Rate::parse(&request.share).map_err(at_field("share"))?;
    if share.as_decimal().is_zero() {
        return Err(ApiError::validation(
            "share: must be more than zero; a month without a donation needs no allocation",
        ));
    }
    let allocated_at = stated_time("allocated_at", request.allocated_at, None)?;
    let key = CommandKey::new("donation", &period.to_string(), "period")?;
    let ledger = state.ledger.clone();
    // Parsed: "0.02" and "0.020" are one share.
    let fingerprinted = (
        period.to_string(),
        organisation.to_string(),
        share.as_decimal().normalize(),
        // As stated: absent stays absent on a retry, whatever the clock says then.
        request.allocated_at,
    );
    let exists = already(
        "donation_exists",
        format!(
            "the donation for {period} was already allocated with another share or \
             organisation"
        ),
    );
    idempotent(
        &state,
        key,
        &fingerprinted,
        vec![format!("donation-{period}")],
        |meta| async move {
            let command = AllocateDonation {
                period,
                organisation,
                share,
                allocated_at,
            };
            let outcome = ledger.allocate_donation(meta, &command).await?;
            // Read back from the stream: a repeat under another command id records
            // nothing and the donation stands as first recorded.
            let donation = fold_stream(
                ledger.store(),
                &streams::donation(period),
                DonationState::default(),
                donation::evolve,
            )
            .await?;
            let amount = donation
                .allocated
                .map(|allocated| allocated.amount)
                .ok_or_else(|| ApiError::internal("a donation does not read back"))?;
            let response = DonationResponse {
                period: period.to_string(),
                organisation: command.organisation.to_string(),
                share: command.share.as_decimal().to_string(),
                amount: amount.amount().to_string(),
                currency: amount.currency().code().to_owned(),
            };
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
    .map_err(exists)
}

/// A commission's level from the path: 1 for the payer's referrer, up to the most levels
/// a plan pays.
pub fn commission_level(text: &str) -> Result<u8, ApiError> {
    text.parse::<u8>()
        .ok()
        .filter(|level| (1..=PLAN_LEVELS_MAX).contains(&usize::from(*level)))
        .ok_or_else(|| {
            ApiError::validation(format!(
                "level: {} must be a whole number from 1 to {PLAN_LEVELS_MAX}",
                super::error::echo(text)
            ))
        })
}

/// The same command id with another request is, for these commands keyed by what they
/// decide on, the rule docs/API.md names: the period's donation or the payout's
/// settlement already stands.
fn already(code: &'static str, detail: String) -> impl FnOnce(ApiError) -> ApiError {
    move |error| match error {
        ApiError::IdempotencyConflict { .. } => ApiError::Rejected {
            status: StatusCode::CONFLICT,
            code,
            detail,
        },
        other => other,
    }
}

/// Reads a stream from its start and folds it.
async fn fold_stream<T>(
    store: &dyn EventStore,
    stream: &StreamName,
    mut state: T,
    evolve: fn(T, &DomainEvent) -> T,
) -> Result<T, ApiError> {
    let mut from = 0;
    loop {
        let page = store
            .read_stream(
                stream,
                StreamFrom::Revision(from),
                Direction::Forward,
                PAGE_SIZE_MAX,
            )
            .await?;
        for recorded in &page {
            // Redacted: a failed payout's reason is sealed with the affiliate's key,
            // and the state needs none of it in clear.
            let event = decode_redacted(recorded).map_err(ApiError::internal)?;
            state = evolve(state, &event);
        }
        match page.last() {
            Some(last) if page.len() == PAGE_SIZE_MAX => from = last.revision + 1,
            _ => return Ok(state),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::parse_json;

    #[test]
    fn a_settlement_names_a_reference_or_a_reason_never_both() {
        let sent: SettlementRequest =
            parse_json(br#"{"status":"sent","reference":"po-1"}"#).unwrap();
        assert!(matches!(sent.settlement(), Ok(Settlement::Sent { .. })));
        let failed: SettlementRequest =
            parse_json(br#"{"status":"failed","reason":"account closed"}"#).unwrap();
        assert!(matches!(failed.settlement(), Ok(Settlement::Failed { .. })));
        let both: SettlementRequest =
            parse_json(br#"{"status":"sent","reference":"po-1","reason":"x"}"#).unwrap();
        let Err(ApiError::Validation { detail }) = both.settlement() else {
            panic!("a sent payout with a reason is refused")
        };
        assert!(detail.starts_with("reference:"), "{detail}");
        let bare: SettlementRequest = parse_json(br#"{"status":"failed"}"#).unwrap();
        let Err(ApiError::Validation { detail }) = bare.settlement() else {
            panic!("a failed payout without a reason is refused")
        };
        assert!(detail.starts_with("reason:"), "{detail}");
    }
}
