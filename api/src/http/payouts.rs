//! Payout runs (`POST /v1/payout-runs`) and the commission plan (`PUT /v1/plan`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ledger::domain::money::Rate;
use ledger::domain::payout::{self, PayoutsState, RunPayouts};
use ledger::domain::plan::{PublishPlan, PLAN_LEVELS_MAX};
use ledger::domain::{streams, Money, Period, PlanVersion};
use ledger::privacy::domain::decode_redacted;
use ledger::service::CommandMeta;
use ledger::store::{Direction, EventStore, StreamFrom, PAGE_SIZE_MAX};

use super::auth::{AdminOnly, Authorized, FinanceOnly};
use super::command::{body, fresh_or_repeat, idempotent, instant, optional_instant, stated_time};
use super::error::{at_field, ApiError, ApiJson, Problem};
use super::events::rfc3339;
use super::payments::positive_money;
use super::AppState;
use crate::idempotency::CommandKey;

/// `POST /v1/payout-runs`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PayoutRunRequest {
    /// The calendar month, `YYYY-MM`; the run's idempotency key.
    #[schema(example = "2026-10")]
    pub period: String,
    /// The moment payable balances are taken at (RFC 3339); the end of the period when
    /// absent.
    #[schema(value_type = Option<String>)]
    pub as_of: Option<DateTime<Utc>>,
}

impl PayoutRunRequest {
    pub fn period(&self) -> Result<Period, ApiError> {
        Ok(Period::parse(&self.period)?)
    }
}

/// An amount for one affiliate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AffiliateAmount {
    pub affiliate_id: uuid::Uuid,
    pub amount: String,
    pub currency: String,
}

impl AffiliateAmount {
    pub fn new(affiliate_id: uuid::Uuid, money: &Money) -> AffiliateAmount {
        AffiliateAmount {
            affiliate_id,
            amount: money.amount().to_string(),
            currency: money.currency().code().to_owned(),
        }
    }
}

/// `201` to the first run of a period; `200` with the same run for every repeat.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PayoutRunResponse {
    pub payout_run_id: String,
    pub period: String,
    /// Affiliates whose payable balance reached the minimum.
    pub payouts: Vec<AffiliateAmount>,
    /// Affiliates below the minimum: their balance carries over to the next period.
    pub carried_over: Vec<AffiliateAmount>,
}

/// `PUT /v1/plan`: publish the next version of the commission plan.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishPlanRequest {
    /// The version being published: the latest plus one (its idempotency key).
    pub version: u32,
    /// Rate per upline level as decimal strings, level 1 first (`["0.20","0.10","0.05"]`).
    pub level_rates: Vec<String>,
    /// Days a commission is held before it becomes payable.
    pub hold_days: u32,
    /// The smallest balance paid out; smaller ones carry over.
    #[schema(example = "50.00")]
    pub minimum_payout: String,
    #[schema(example = "EUR")]
    pub currency: String,
    /// From when the plan applies to payments (RFC 3339), not in the past.
    #[schema(value_type = String)]
    pub effective_from: DateTime<Utc>,
    /// When the plan was decided (RFC 3339), for an import of history; now when absent,
    /// never in the future. `effective_from` may not be before it.
    #[schema(value_type = Option<String>)]
    pub published_at: Option<DateTime<Utc>>,
}

impl PublishPlanRequest {
    pub fn rates(&self) -> Result<Vec<Rate>, ApiError> {
        if self.level_rates.is_empty() || self.level_rates.len() > PLAN_LEVELS_MAX {
            return Err(ApiError::validation(format!(
                "level_rates: must list 1 to {PLAN_LEVELS_MAX} rates"
            )));
        }
        self.level_rates
            .iter()
            .enumerate()
            .map(|(index, rate)| {
                Rate::parse(rate).map_err(|error| {
                    ApiError::validation(format!("level_rates[{index}]: {}", error.problem))
                })
            })
            .collect()
    }

    pub fn minimum_payout(&self) -> Result<Money, ApiError> {
        positive_money(&self.minimum_payout, &self.currency).map_err(|error| match error {
            ApiError::Validation { detail } => {
                ApiError::validation(detail.replacen("amount:", "minimum_payout:", 1))
            }
            other => other,
        })
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/payout-runs", post(run_payouts))
        .route("/v1/plan", put(publish_plan))
}

const PAYOUTS_LOCK: &str = "payouts";
const PLAN_LOCK: &str = "plan";

/// Reads the payouts stream and folds it.
async fn payouts_state(store: &dyn EventStore) -> Result<PayoutsState, ApiError> {
    let stream = streams::payouts();
    let mut state = PayoutsState::default();
    let mut from = 0;
    loop {
        let page = store
            .read_stream(
                &stream,
                StreamFrom::Revision(from),
                Direction::Forward,
                PAGE_SIZE_MAX,
            )
            .await?;
        for recorded in &page {
            // Redacted: a failed payout's reason is sealed with the affiliate's key,
            // and the state needs none of it in clear.
            let event = decode_redacted(recorded).map_err(ApiError::internal)?;
            state = payout::evolve(state, &event);
        }
        match page.last() {
            Some(last) if page.len() == PAGE_SIZE_MAX => from = last.revision + 1,
            _ => return Ok(state),
        }
    }
}

/// The response of the run of `period`, as recorded.
async fn run_response(
    state: &AppState,
    payouts: &PayoutsState,
    period: Period,
) -> Result<Option<PayoutRunResponse>, ApiError> {
    let Some(run) = payouts.runs.get(&period) else {
        return Ok(None);
    };
    let paid: Vec<AffiliateAmount> = payouts
        .payouts
        .iter()
        .filter(|((payout_period, _), _)| *payout_period == period)
        .map(|((_, affiliate), payout)| {
            AffiliateAmount::new(affiliate.as_uuid(), &payout.scheduled.amount)
        })
        .collect();
    // Below the minimum at the run's as-of time: still payable afterwards, so carried.
    let balances = state.ledger.balances_at(run.as_of).await?;
    let carried_over = balances
        .iter()
        .filter(|(affiliate, balance)| {
            balance.payable.is_positive()
                && !paid
                    .iter()
                    .any(|payout| payout.affiliate_id == affiliate.as_uuid())
        })
        .map(|(affiliate, balance)| AffiliateAmount::new(affiliate.as_uuid(), &balance.payable))
        .collect();
    Ok(Some(PayoutRunResponse {
        payout_run_id: format!("payout-run-{period}"),
        period: period.to_string(),
        payouts: paid,
        carried_over,
    }))
}

/// Pays every affiliate whose payable balance reached the minimum; the rest carries over.
/// A period runs once: asking again returns the first run and pays nobody twice.
#[utoipa::path(
    post, path = "/v1/payout-runs", tag = "finance",
    request_body = PayoutRunRequest,
    responses(
        (status = 201, description = "The run", body = PayoutRunResponse),
        (status = 200, description = "The period had already run: the first run", body = PayoutRunResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 422, description = "`payout_run_too_early`, `payout_run_out_of_order`", body = Problem),
    ),
    security(("finance" = []))
)]
pub async fn run_payouts(
    _: Authorized<FinanceOnly>,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PayoutRunRequest>,
) -> Result<Response, ApiError> {
    let period = request.period()?;
    let as_of = optional_instant("as_of", request.as_of)?.unwrap_or_else(|| period.end());
    // The payouts stream is the run's idempotency record: runs are serialized here and
    // an existing run is answered from it.
    let _guard = state.stream_locks.lock([PAYOUTS_LOCK.to_owned()]).await;
    let before = payouts_state(state.store.as_ref()).await?;
    if let Some(run) = before.runs.get(&period) {
        // The same run asked again is answered with the first; a run of the period as
        // of another time would pay differently, and the period has run.
        if request.as_of.is_some_and(|asked| asked != run.as_of) {
            return Err(ApiError::Rejected {
                status: StatusCode::CONFLICT,
                code: "payout_run_exists",
                detail: format!(
                    "as_of: the payout run for {period} already happened as of {}; a period \
                     runs once",
                    rfc3339(run.as_of)
                ),
            });
        }
    }
    if let Some(first) = run_response(&state, &before, period).await? {
        return Ok((StatusCode::OK, Json(first)).into_response());
    }
    let key = CommandKey::new("payout_run", &period.to_string(), "period")?;
    let command = RunPayouts {
        period,
        as_of,
        run_at: Utc::now(),
    };
    state
        .ledger
        .run_payouts(CommandMeta::new(key.command_id()), &command)
        .await?;
    let after = payouts_state(state.store.as_ref()).await?;
    let response = run_response(&state, &after, period)
        .await?
        .ok_or_else(|| ApiError::internal("a payout run does not read back"))?;
    Ok((StatusCode::CREATED, Json(response)).into_response())
}

/// A published plan version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlanResponse {
    pub version: u32,
    pub level_rates: Vec<String>,
    pub hold_days: u32,
    pub minimum_payout: String,
    pub currency: String,
    pub effective_from: String,
}

/// Publishes the next commission plan version; it applies to payments from its
/// effective date.
#[utoipa::path(
    put, path = "/v1/plan", tag = "admin",
    request_body = PublishPlanRequest,
    responses(
        (status = 201, description = "Published", body = PlanResponse),
        (status = 200, description = "A repeat of an identical publication", body = PlanResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 409, description = "`idempotency_conflict` (the version holds another plan) or `plan_version_not_next`", body = Problem),
        (status = 422, description = "`plan_invalid`, `plan_effective_in_past`, ...", body = Problem),
    ),
    security(("admin" = []))
)]
pub async fn publish_plan(
    _: Authorized<AdminOnly>,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PublishPlanRequest>,
) -> Result<Response, ApiError> {
    let command = PublishPlan {
        version: PlanVersion::new(request.version).map_err(at_field("version"))?,
        level_rates: request.rates()?,
        hold_days: request.hold_days,
        minimum_payout: request.minimum_payout()?,
        effective_from: instant("effective_from", request.effective_from)?,
        published_at: stated_time("published_at", request.published_at, None)?,
    };
    let key = CommandKey::new("plan", &request.version.to_string(), "version")?;
    let ledger = state.ledger.clone();
    // Parsed: "0.2" and "0.20" are one rate, "50" and "50.00" one minimum.
    let fingerprinted = (
        command.version.get(),
        command
            .level_rates
            .iter()
            .map(|rate| rate.as_decimal().normalize())
            .collect::<Vec<_>>(),
        command.hold_days,
        command.minimum_payout,
        command.effective_from,
        request.published_at,
    );
    idempotent(
        &state,
        key,
        &fingerprinted,
        vec![PLAN_LOCK.to_owned()],
        |meta| async move {
            let outcome = ledger.publish_plan(meta, &command).await?;
            let response = PlanResponse {
                version: command.version.get(),
                level_rates: command
                    .level_rates
                    .iter()
                    .map(|rate| rate.as_decimal().to_string())
                    .collect(),
                hold_days: command.hold_days,
                minimum_payout: command.minimum_payout.amount().to_string(),
                currency: command.minimum_payout.currency().code().to_owned(),
                effective_from: rfc3339(command.effective_from),
            };
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::parse_json;

    #[test]
    fn periods_and_plans_are_checked_at_the_edge() {
        let run: PayoutRunRequest = parse_json(br#"{"period":"2026-10"}"#).unwrap();
        assert_eq!(run.period().unwrap().to_string(), "2026-10");
        let bad: PayoutRunRequest = parse_json(br#"{"period":"2026-13"}"#).unwrap();
        assert!(matches!(bad.period(), Err(ApiError::Validation { .. })));

        let plan: PublishPlanRequest = parse_json(
            br#"{"version":2,"level_rates":["0.25","x"],"hold_days":30,
                "minimum_payout":"50.00","currency":"EUR",
                "effective_from":"2027-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        let Err(ApiError::Validation { detail }) = plan.rates() else {
            panic!("a rate that is not a number is refused")
        };
        assert!(detail.starts_with("level_rates[1]:"), "{detail}");
        assert_eq!(plan.minimum_payout().unwrap().amount().to_string(), "50.00");
    }
}
