//! Commissions and finance reports, read from the projections crate's views:
//! `GET /v1/accounts/{id}/commissions`, `GET /v1/reports/payouts`,
//! `/v1/reports/trial-balance`, `/v1/reports/donations`, `/v1/reports/commissions`.
//!
//! Reports are JSON, or CSV with `Accept: text/csv` or `?format=csv`. They name
//! affiliates by account id only: finance and auditors never see personal data.

use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use ledger::domain::{AccountId, Period};
use projections::journal::AsOf;
use projections::report::{
    affiliate_id_as_name, commission_statement, donation_report, money_text, payout_report,
    trial_balance_report,
};
use projections::views::commissions::CommissionStatus;

use super::accounts::account_id;
use super::auth::{Authorized, BillingOrFinance, FinanceOrAuditor};
use super::error::{ApiError, ApiPath, ApiQuery, Problem};
use super::events::{parse_position, rfc3339};
use super::AppState;
use crate::privacy::require_account;

/// Most commissions listed by one `GET /v1/accounts/{id}/commissions`.
pub const COMMISSIONS_LIST_MAX: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts/{id}/commissions", get(account_commissions))
        .route("/v1/reports/payouts", get(payouts))
        .route("/v1/reports/trial-balance", get(trial_balance))
        .route("/v1/reports/donations", get(donations))
        .route("/v1/reports/commissions", get(commissions))
}

/// The form of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportFormat {
    Json,
    Csv,
}

/// `?format=` wins; otherwise `Accept: text/csv` asks for CSV; JSON by default.
fn format_of(query: Option<ReportFormat>, headers: &HeaderMap) -> ReportFormat {
    if let Some(format) = query {
        return format;
    }
    let wants_csv = headers
        .get(ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|part| part.split(';').next().unwrap_or("").trim() == "text/csv")
        });
    if wants_csv {
        ReportFormat::Csv
    } else {
        ReportFormat::Json
    }
}

fn report(format: ReportFormat, json: String, csv: impl FnOnce() -> String) -> Response {
    let (body, media_type) = match format {
        ReportFormat::Json => (json, "application/json"),
        ReportFormat::Csv => (csv(), "text/csv; charset=utf-8"),
    };
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    response
}

fn period(text: &str, field: &str) -> Result<Period, ApiError> {
    Period::parse(text).map_err(|error| ApiError::validation(format!("{field}: {}", error.problem)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    /// The calendar month, `YYYY-MM`.
    pub period: String,
    /// `json` or `csv`; else `Accept: text/csv` gives CSV.
    #[param(inline)]
    pub format: Option<ReportFormat>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TrialBalanceQuery {
    /// An RFC 3339 instant, or a global log position; now when absent.
    pub as_of: Option<String>,
    #[param(inline)]
    pub format: Option<ReportFormat>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    pub affiliate_id: String,
    /// The calendar month, `YYYY-MM`.
    pub period: String,
    #[param(inline)]
    pub format: Option<ReportFormat>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CommissionsQuery {
    /// Only commissions in this state now.
    #[param(inline)]
    pub status: Option<StatusFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    Held,
    Payable,
    Paid,
    Reversed,
}

impl StatusFilter {
    fn matches(self, status: CommissionStatus) -> bool {
        matches!(
            (self, status),
            (StatusFilter::Held, CommissionStatus::Held)
                | (StatusFilter::Payable, CommissionStatus::Payable)
                | (StatusFilter::Paid, CommissionStatus::Paid)
                | (StatusFilter::Reversed, CommissionStatus::Reversed)
        )
    }
}

/// One commission an affiliate earned, traced to the payment it came from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommissionView {
    pub payment_id: String,
    pub payer_id: uuid::Uuid,
    pub level: u8,
    pub rate: String,
    pub plan_version: u32,
    /// The net payment the rate applied to.
    pub base_amount: String,
    /// As earned.
    pub amount: String,
    /// Clawed back by refunds or forfeited on review.
    pub reversed: String,
    pub currency: String,
    pub earned_at: String,
    /// When the hold ends.
    pub payable_at: String,
    /// `held`, `payable`, `paid` or `reversed`, now.
    pub status: String,
    pub held_for_review: bool,
}

/// `GET /v1/accounts/{id}/commissions`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CommissionsResponse {
    pub account_id: uuid::Uuid,
    /// The time statuses were judged at.
    pub as_of: String,
    pub commissions: Vec<CommissionView>,
    /// More commissions matched than the list holds (10 000).
    pub truncated: bool,
}

/// A rate as the payment responses show it: at least two decimals (`"0.20"`), whatever
/// scale the view kept.
fn rate_text(rate: rust_decimal::Decimal) -> String {
    let mut rate = rate;
    if rate.scale() < 2 {
        rate.rescale(2);
    }
    rate.to_string()
}

/// An affiliate's commissions, each traced to its payment, optionally only those in one
/// state now (`held` in the refund window or for review, `payable`, `paid`, `reversed`).
#[utoipa::path(
    get, path = "/v1/accounts/{id}/commissions", tag = "billing",
    params(("id" = String, Path, description = "The affiliate's account id"), CommissionsQuery),
    responses(
        (status = 200, description = "The commissions, in the order earned", body = CommissionsResponse),
        (status = 400, description = "Invalid query", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
    ),
    security(("billing" = []), ("finance" = []))
)]
pub async fn account_commissions(
    _: Authorized<BillingOrFinance>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<CommissionsQuery>,
) -> Result<Json<CommissionsResponse>, ApiError> {
    let affiliate = account_id(&id)?;
    require_account(state.store.as_ref(), affiliate).await?;
    let now = Utc::now();
    let views = state.views.current(state.store.as_ref()).await?;
    let commissions = &views.views.commissions;
    let mut listed = Vec::new();
    let mut truncated = false;
    for (_, commission) in commissions.of_affiliate(&affiliate) {
        let status = commission.status_at(now);
        if query.status.is_some_and(|filter| !filter.matches(status)) {
            continue;
        }
        if listed.len() == COMMISSIONS_LIST_MAX {
            truncated = true;
            break;
        }
        let payment = commissions.payment_record(commission.payment);
        let currency = commission.currency();
        listed.push(CommissionView {
            payment_id: payment.payment_id.to_string(),
            payer_id: commission.payer.as_uuid(),
            level: commission.level,
            rate: rate_text(commission.rate.as_decimal()),
            plan_version: commission.plan_version.get(),
            base_amount: money_text(commission.base_amount, currency),
            amount: money_text(commission.amount, currency),
            reversed: money_text(commission.reversed(), currency),
            currency: currency.code().to_owned(),
            earned_at: rfc3339(commission.earned_at),
            payable_at: rfc3339(commission.hold_until),
            status: status.code().to_owned(),
            held_for_review: commission.held_for_review,
        });
    }
    Ok(Json(CommissionsResponse {
        account_id: affiliate.as_uuid(),
        as_of: rfc3339(now),
        commissions: listed,
        truncated,
    }))
}

/// The payout report of a period: who is owed or was paid what, with totals that
/// reconcile with the journal.
#[utoipa::path(
    get, path = "/v1/reports/payouts", tag = "finance",
    params(PeriodQuery),
    responses(
        (status = 200, description = "The report (JSON or CSV)", content((Object = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Invalid query", body = Problem),
    ),
    security(("finance" = []), ("auditor" = []))
)]
pub async fn payouts(
    _: Authorized<FinanceOrAuditor>,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<PeriodQuery>,
) -> Result<Response, ApiError> {
    let period = period(&query.period, "period")?;
    let views = state.views.current(state.store.as_ref()).await?;
    let built =
        payout_report(&views.views, period, &affiliate_id_as_name).map_err(ApiError::internal)?;
    Ok(report(
        format_of(query.format, &headers),
        built.to_json(),
        || built.to_csv(),
    ))
}

/// The trial balance now or as of a past instant or log position: debits equal credits.
#[utoipa::path(
    get, path = "/v1/reports/trial-balance", tag = "finance",
    params(TrialBalanceQuery),
    responses(
        (status = 200, description = "The report (JSON or CSV)", content((Object = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Invalid query", body = Problem),
    ),
    security(("finance" = []), ("auditor" = []))
)]
pub async fn trial_balance(
    _: Authorized<FinanceOrAuditor>,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<TrialBalanceQuery>,
) -> Result<Response, ApiError> {
    let as_of = match query.as_of.as_deref() {
        None => None,
        Some(text) => Some(match DateTime::parse_from_rfc3339(text) {
            Ok(at) => AsOf::Time(at.to_utc()),
            Err(_) => AsOf::Position(parse_position(text).ok_or_else(|| {
                ApiError::validation(format!(
                    "as_of: {text:?} is neither an RFC 3339 instant nor a log position"
                ))
            })?),
        }),
    };
    let views = state.views.current(state.store.as_ref()).await?;
    let built = trial_balance_report(&views.views, as_of);
    Ok(report(
        format_of(query.format, &headers),
        built.to_json(),
        || built.to_csv(),
    ))
}

/// The donations of a period: a share of net revenue per organisation, in aggregate,
/// with no user data.
#[utoipa::path(
    get, path = "/v1/reports/donations", tag = "finance",
    params(PeriodQuery),
    responses(
        (status = 200, description = "The report (JSON or CSV)", content((Object = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Invalid query", body = Problem),
    ),
    security(("finance" = []), ("auditor" = []))
)]
pub async fn donations(
    _: Authorized<FinanceOrAuditor>,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<PeriodQuery>,
) -> Result<Response, ApiError> {
    let period = period(&query.period, "period")?;
    let views = state.views.current(state.store.as_ref()).await?;
    let built = donation_report(&views.views, period, period);
    Ok(report(
        format_of(query.format, &headers),
        built.to_json(),
        || built.to_csv(),
    ))
}

/// An affiliate's commission statement for a period: every commission earned and every
/// reversal, each traced to its payment.
#[utoipa::path(
    get, path = "/v1/reports/commissions", tag = "finance",
    params(StatementQuery),
    responses(
        (status = 200, description = "The statement (JSON or CSV)", content((Object = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Invalid query", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
    ),
    security(("finance" = []), ("auditor" = []))
)]
pub async fn commissions(
    _: Authorized<FinanceOrAuditor>,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StatementQuery>,
) -> Result<Response, ApiError> {
    let affiliate: AccountId = AccountId::parse(&query.affiliate_id)
        .map_err(|error| ApiError::validation(format!("affiliate_id: {}", error.problem)))?;
    let period = period(&query.period, "period")?;
    require_account(state.store.as_ref(), affiliate).await?;
    let views = state.views.current(state.store.as_ref()).await?;
    let built = commission_statement(&views.views, &affiliate, period, &affiliate_id_as_name);
    Ok(report(
        format_of(query.format, &headers),
        built.to_json(),
        || built.to_csv(),
    ))
}
