//! Commission plans: versioned, published as events, in force from their effective date.
//!
//! The plan stream starts with the built-in default (version 1: three levels of 20%, 10%
//! and 5%, a 30-day hold, a 50.00 minimum payout) in force since the beginning of time.
//! Each published plan is the next version and takes effect no earlier than it is
//! published, so no payment already recorded could have fallen under it: history is never
//! recomputed under a new plan.

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::events::{CommissionPlanPublished, DomainEvent};
use super::money::{Currency, Money, Rate};
use super::{Rejection, ValueError};

/// Most upline levels a plan pays; also the depth the upline of a payer is walked.
pub const PLAN_LEVELS_MAX: usize = 10;
/// Longest hold period, in days.
pub const HOLD_DAYS_MAX: u32 = 366;
/// Most plan versions the plan stream holds.
pub const PLAN_VERSIONS_MAX: usize = 10_000;

const _: () = assert!(PLAN_LEVELS_MAX <= u8::MAX as usize);

/// A plan version: 1, 2, 3, ... JSON: a number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PlanVersion(u32);

impl PlanVersion {
    pub const FIRST: PlanVersion = PlanVersion(1);

    pub fn new(version: u32) -> Result<PlanVersion, ValueError> {
        if version == 0 {
            return Err(ValueError::new("plan_version", "plan versions start at 1"));
        }
        Ok(PlanVersion(version))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    pub fn next(self) -> PlanVersion {
        PlanVersion(self.0 + 1)
    }
}

impl TryFrom<u32> for PlanVersion {
    type Error = ValueError;
    fn try_from(version: u32) -> Result<Self, Self::Error> {
        PlanVersion::new(version)
    }
}

impl From<PlanVersion> for u32 {
    fn from(version: PlanVersion) -> u32 {
        version.0
    }
}

impl fmt::Display for PlanVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl fmt::Debug for PlanVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// One version of the commission plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommissionPlan {
    pub version: PlanVersion,
    /// Rate per upline level; index 0 is level 1.
    pub level_rates: Vec<Rate>,
    pub hold_days: u32,
    pub minimum_payout: Money,
    pub effective_from: DateTime<Utc>,
}

impl CommissionPlan {
    /// The default plan of the brief: unilevel, 20% / 10% / 5%, held 30 days, paid from
    /// 50.00, in force since the beginning of time.
    pub fn default_plan(currency: Currency) -> CommissionPlan {
        let rate = |text| Rate::parse(text).expect("default rates are valid");
        CommissionPlan {
            version: PlanVersion::FIRST,
            level_rates: vec![rate("0.20"), rate("0.10"), rate("0.05")],
            hold_days: 30,
            minimum_payout: Money::new(Decimal::new(50, 0), currency)
                .expect("50 is a valid amount"),
            effective_from: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    pub fn levels(&self) -> usize {
        self.level_rates.len()
    }

    pub fn currency(&self) -> Currency {
        self.minimum_payout.currency()
    }
}

/// The plan stream's state: every version, oldest first, never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanState {
    versions: Vec<CommissionPlan>,
}

impl PlanState {
    /// A plan stream that holds only the built-in default.
    pub fn new(currency: Currency) -> PlanState {
        PlanState {
            versions: vec![CommissionPlan::default_plan(currency)],
        }
    }

    pub fn latest(&self) -> &CommissionPlan {
        self.versions
            .last()
            .expect("the plan state always holds the default")
    }

    pub fn versions(&self) -> &[CommissionPlan] {
        &self.versions
    }

    /// The plan in force at `at`: the newest version whose effective date has come.
    pub fn in_force_at(&self, at: DateTime<Utc>) -> &CommissionPlan {
        self.versions
            .iter()
            .rev()
            .find(|plan| plan.effective_from <= at)
            .unwrap_or(&self.versions[0])
    }
}

/// Publish the next plan version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishPlan {
    pub version: PlanVersion,
    pub level_rates: Vec<Rate>,
    pub hold_days: u32,
    pub minimum_payout: Money,
    pub effective_from: DateTime<Utc>,
    pub published_at: DateTime<Utc>,
}

pub fn decide(state: &PlanState, command: &PublishPlan) -> Result<Vec<DomainEvent>, Rejection> {
    let latest = state.latest();
    if let Some(existing) = state
        .versions
        .iter()
        .find(|plan| plan.version == command.version)
    {
        // A repeat of the same publication records nothing; a different plan under a
        // version already taken is a conflict.
        let same = existing.level_rates == command.level_rates
            && existing.hold_days == command.hold_days
            && existing.minimum_payout == command.minimum_payout
            && existing.effective_from == command.effective_from;
        return if same && command.version != PlanVersion::FIRST {
            Ok(Vec::new())
        } else {
            Err(Rejection::IdempotencyConflict {
                key: format!("plan version {}", command.version),
            })
        };
    }
    if command.version != latest.version.next() {
        return Err(Rejection::PlanVersionNotNext {
            expected: latest.version.next(),
            actual: command.version,
        });
    }
    if command.level_rates.is_empty() || command.level_rates.len() > PLAN_LEVELS_MAX {
        return Err(Rejection::PlanInvalid {
            reason: format!("a plan pays 1 to {PLAN_LEVELS_MAX} levels"),
        });
    }
    let total: Decimal = command
        .level_rates
        .iter()
        .map(|rate| rate.as_decimal())
        .sum();
    if total > Decimal::ONE {
        return Err(Rejection::PlanInvalid {
            reason: format!("the level rates add up to {total}, more than the whole payment"),
        });
    }
    if command.hold_days > HOLD_DAYS_MAX {
        return Err(Rejection::PlanInvalid {
            reason: format!("the hold is at most {HOLD_DAYS_MAX} days"),
        });
    }
    if command.minimum_payout.currency() != latest.currency() {
        return Err(Rejection::CurrencyMismatch {
            expected: latest.currency(),
            actual: command.minimum_payout.currency(),
        });
    }
    if command.minimum_payout.is_negative() {
        return Err(Rejection::PlanInvalid {
            reason: "the minimum payout cannot be negative".to_owned(),
        });
    }
    if state.versions.len() >= PLAN_VERSIONS_MAX {
        return Err(Rejection::PlanInvalid {
            reason: format!("the plan stream holds at most {PLAN_VERSIONS_MAX} versions"),
        });
    }
    if command.effective_from < command.published_at {
        return Err(Rejection::PlanEffectiveInPast);
    }
    if command.effective_from < latest.effective_from {
        return Err(Rejection::PlanEffectiveBeforePrevious);
    }
    Ok(vec![DomainEvent::CommissionPlanPublished(
        CommissionPlanPublished {
            version: command.version,
            level_rates: command.level_rates.clone(),
            hold_days: command.hold_days,
            minimum_payout: command.minimum_payout,
            effective_from: command.effective_from,
            published_at: command.published_at,
        },
    )])
}

pub fn evolve(mut state: PlanState, event: &DomainEvent) -> PlanState {
    if let DomainEvent::CommissionPlanPublished(published) = event {
        assert_eq!(
            published.version,
            state.latest().version.next(),
            "plan versions are recorded in order"
        );
        state.versions.push(CommissionPlan {
            version: published.version,
            level_rates: published.level_rates.clone(),
            hold_days: published.hold_days,
            minimum_payout: published.minimum_payout,
            effective_from: published.effective_from,
        });
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scenario::{at, eur, Given};

    fn publish(
        version: u32,
        rates: &[&str],
        effective_from: &str,
        published_at: &str,
    ) -> PublishPlan {
        PublishPlan {
            version: PlanVersion::new(version).unwrap(),
            level_rates: rates
                .iter()
                .map(|rate| Rate::parse(rate).unwrap())
                .collect(),
            hold_days: 14,
            minimum_payout: eur("25.00"),
            effective_from: at(effective_from),
            published_at: at(published_at),
        }
    }

    fn given(events: Vec<DomainEvent>) -> Given<PlanState> {
        Given::new(PlanState::new(Currency::EUR), evolve, events)
    }

    #[test]
    fn a_published_plan_applies_from_its_effective_date() {
        let command = publish(
            2,
            &["0.3", "0.1"],
            "2026-11-01T00:00:00Z",
            "2026-10-15T00:00:00Z",
        );
        let events = given(vec![])
            .when(|state| decide(state, &command))
            .then_ok();
        let state = given(events).state;
        assert_eq!(
            state.in_force_at(at("2026-10-31T23:59:59Z")).version.get(),
            1
        );
        assert_eq!(
            state.in_force_at(at("2026-11-01T00:00:00Z")).version.get(),
            2
        );
        assert_eq!(state.in_force_at(at("2026-11-01T00:00:00Z")).levels(), 2);
    }

    #[test]
    fn plans_are_rejected_when_wrong() {
        let cases = [
            (
                publish(3, &["0.3"], "2026-11-01T00:00:00Z", "2026-10-15T00:00:00Z"),
                "plan_version_not_next",
            ),
            (
                publish(2, &["0.3"], "2026-10-01T00:00:00Z", "2026-10-15T00:00:00Z"),
                "plan_effective_in_past",
            ),
            (
                publish(2, &[], "2026-11-01T00:00:00Z", "2026-10-15T00:00:00Z"),
                "plan_invalid",
            ),
            (
                publish(
                    2,
                    &["0.6", "0.5"],
                    "2026-11-01T00:00:00Z",
                    "2026-10-15T00:00:00Z",
                ),
                "plan_invalid",
            ),
            (
                publish(1, &["0.3"], "2026-11-01T00:00:00Z", "2026-10-15T00:00:00Z"),
                "idempotency_conflict",
            ),
        ];
        for (command, code) in cases {
            given(vec![])
                .when(|state| decide(state, &command))
                .then_rejected(code);
        }
        let mut usd = publish(2, &["0.3"], "2026-11-01T00:00:00Z", "2026-10-15T00:00:00Z");
        usd.minimum_payout = Money::parse("25.00", "USD").unwrap();
        given(vec![])
            .when(|state| decide(state, &usd))
            .then_rejected("currency_mismatch");
    }

    #[test]
    fn republishing_the_same_version_records_nothing_and_a_new_one_cannot_go_back() {
        let first = publish(2, &["0.3"], "2026-12-01T00:00:00Z", "2026-10-15T00:00:00Z");
        let history = given(vec![]).when(|state| decide(state, &first)).then_ok();
        given(history.clone())
            .when(|state| decide(state, &first))
            .then_events(vec![]);
        let earlier = publish(3, &["0.3"], "2026-11-01T00:00:00Z", "2026-10-16T00:00:00Z");
        given(history)
            .when(|state| decide(state, &earlier))
            .then_rejected("plan_effective_before_previous");
    }
}
