//! Payout runs (`POST /v1/payout-runs`) and the commission plan (`PUT /v1/plan`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ledger::domain::money::Rate;
use ledger::domain::plan::PLAN_LEVELS_MAX;
use ledger::domain::{Money, Period};

use super::error::ApiError;
use super::payments::positive_money;

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
