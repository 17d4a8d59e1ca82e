//! The business of the ledger as events and pure deciders.
//!
//! Each stream kind has a state, folded from its events by `evolve`, and a `decide` that
//! turns a command into new events or a [`Rejection`]. Deciders are pure and synchronous:
//! the clock and every new id come in with the command, and facts from other streams (the
//! upline of a payer, the plan in force, payable balances) come in as part of the state
//! the caller gathered. `docs/DOMAIN.md` describes the stream layout and the rules.
//!
//! - [`money`], [`ids`], [`period`], [`credits`], [`plan`]: value types that cannot hold a
//!   bad value, parsed at the edge with a [`ValueError`] naming the field.
//! - [`events`]: the versioned events and [`events::upcast`].
//! - [`account`]: signup, referral and fraud flags, personal data, subscriptions and the
//!   credit wallet (stream `account-{id}`), and referral codes (`referral-code-{code}`).
//! - [`reservation`]: credit reservations in the wallet: reserve, capture, void, expire.
//! - [`payment`]: a payment, the commissions it funds, its refunds and clawbacks
//!   (`payment-{id}`).
//! - [`plan`]: commission plan versions (`plan`).
//! - [`payout`]: payable balances and payout runs (`payout-{period}`).
//! - [`donation`]: donation allocations (`donation-{period}`).
//! - [`postings`]: the double-entry mapping of every money event.

pub mod account;
pub mod credits;
pub mod donation;
pub mod events;
pub mod ids;
pub mod money;
pub mod payment;
pub mod payout;
pub mod period;
pub mod plan;
pub mod postings;
pub mod reservation;
pub mod streams;

#[cfg(test)]
mod properties;
#[cfg(test)]
pub(crate) mod scenario;

pub use credits::Credits;
pub use events::DomainEvent;
pub use ids::{AccountId, ReferralCode};
pub use money::{Currency, Money, Rate};
pub use period::Period;
pub use plan::PlanVersion;

use std::fmt;

/// Input that is not a valid value: which field, and what is wrong with it.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct ValueError {
    pub field: &'static str,
    pub problem: String,
}

impl ValueError {
    pub fn new(field: &'static str, problem: impl Into<String>) -> ValueError {
        ValueError {
            field,
            problem: problem.into(),
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        "invalid_value"
    }
}

impl fmt::Debug for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValueError({}: {})", self.field, self.problem)
    }
}

/// A command the rules refuse. Nothing is recorded. Each variant has a stable
/// snake_case [`code`](Rejection::code), never reused for another meaning.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("invalid input: {0}")]
    InvalidValue(ValueError),
    #[error("account {account_id} already exists with different details")]
    AccountExists { account_id: AccountId },
    #[error("account {account_id} does not exist")]
    AccountNotFound { account_id: AccountId },
    #[error("no account has referral code {referral_code}; sign up without it or with another")]
    ReferrerNotFound { referral_code: ReferralCode },
    #[error("referral code {referral_code} belongs to another account; choose another code")]
    ReferralCodeTaken { referral_code: ReferralCode },
    #[error("{key} was already used for a command with different content")]
    IdempotencyConflict { key: String },
    #[error("credits: {balance} are available, less than the {requested} requested")]
    InsufficientCredits {
        balance: credits::Credits,
        requested: credits::Credits,
    },
    #[error("credits must be more than zero")]
    CreditsNotPositive,
    #[error("the expiry {expires_at} is not after the grant time")]
    ExpiryNotAfterGrant {
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    #[error("the account already holds {active_max} grants with credits left")]
    TooManyActiveGrants { active_max: usize },
    #[error("the wallet would exceed the most credits it may hold")]
    CreditsLimitExceeded,
    #[error("reservation {reservation_id} does not exist")]
    ReservationNotFound { reservation_id: ids::ReservationId },
    #[error(
        "reservation {reservation_id} expired at {expires_at}: its credits were released; \
         reserve again"
    )]
    ReservationExpired {
        reservation_id: ids::ReservationId,
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    #[error("reservation {reservation_id} was already captured")]
    ReservationAlreadyCaptured { reservation_id: ids::ReservationId },
    #[error("reservation {reservation_id} was already voided")]
    ReservationAlreadyVoided { reservation_id: ids::ReservationId },
    #[error("credits: a capture of {requested} exceeds the {reserved} reserved")]
    CaptureExceedsReservation {
        reserved: credits::Credits,
        requested: credits::Credits,
    },
    #[error("the account already holds {open_max} open reservations; capture or void one")]
    TooManyOpenReservations { open_max: usize },
    #[error("expires_at: {expires_at} is not after the reservation time")]
    ExpiryNotAfterReservation {
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    #[error("expires_at: a reservation lives at most {ttl_seconds_max} seconds")]
    ReservationTtlTooLong { ttl_seconds_max: i64 },
    #[error("subscription {subscription_id} is already active")]
    SubscriptionActive {
        subscription_id: ids::SubscriptionId,
    },
    #[error("subscription {subscription_id} is not active")]
    SubscriptionNotActive {
        subscription_id: ids::SubscriptionId,
    },
    #[error("expected an amount in {expected}, got {actual}")]
    CurrencyMismatch {
        expected: Currency,
        actual: Currency,
    },
    #[error("the amount must be more than zero")]
    AmountNotPositive,
    #[error("payment {payment_id} was already recorded with different details")]
    PaymentExists { payment_id: ids::PaymentId },
    #[error("payment {payment_id} does not exist")]
    PaymentNotFound { payment_id: ids::PaymentId },
    #[error("payment {payment_id} has no commission at level {level}")]
    CommissionNotFound {
        payment_id: ids::PaymentId,
        level: u8,
    },
    #[error("the commission of payment {payment_id} at level {level} is not held for review")]
    CommissionNotHeld {
        payment_id: ids::PaymentId,
        level: u8,
    },
    #[error(
        "the commission of payment {payment_id} at level {level} was already reviewed otherwise"
    )]
    CommissionAlreadyReviewed {
        payment_id: ids::PaymentId,
        level: u8,
    },
    #[error("refunding {requested} would exceed the payment: {refundable} is left to refund")]
    RefundExceedsPayment { requested: Money, refundable: Money },
    #[error("a payment takes at most {refunds_max} refunds and chargebacks")]
    TooManyRefunds { refunds_max: usize },
    #[error("a refund cannot be dated before its payment")]
    RefundBeforePayment,
    #[error("the next plan version is {expected}, not {actual}")]
    PlanVersionNotNext {
        expected: PlanVersion,
        actual: PlanVersion,
    },
    #[error("a plan takes effect at or after its publication, never in the past")]
    PlanEffectiveInPast,
    #[error("a plan takes effect after the plan before it")]
    PlanEffectiveBeforePrevious,
    #[error("invalid plan: {reason}")]
    PlanInvalid { reason: String },
    #[error("the payout run for {period} already happened")]
    PayoutRunExists { period: Period },
    #[error(
        "a payout run for {period} is taken as of the period's end or later, and not as of \
         a time after the run itself"
    )]
    PayoutRunTooEarly { period: Period },
    #[error(
        "payout runs go in period order: the last run was for {last_period} as of {last_as_of}"
    )]
    PayoutRunOutOfOrder {
        last_period: Period,
        last_as_of: chrono::DateTime<chrono::Utc>,
    },
    #[error("a payout run pays at most {payouts_max} affiliates")]
    TooManyPayouts { payouts_max: usize },
    #[error("no payout to {affiliate} is scheduled for {period}")]
    PayoutNotFound {
        period: Period,
        affiliate: AccountId,
    },
    #[error("the payout to {affiliate} for {period} was already settled")]
    PayoutAlreadySettled {
        period: Period,
        affiliate: AccountId,
    },
    #[error("the donation for {period} was already allocated")]
    DonationExists { period: Period },
    #[error("a donation for {period} is allocated after the period ends")]
    DonationTooEarly { period: Period },
}

/// What kind of refusal a rejection is, for callers that map rejections to their own
/// vocabulary (the API to HTTP statuses) without listing every code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectionCategory {
    /// The input is not a valid value.
    InvalidInput,
    /// The command names something that does not exist.
    NotFound,
    /// The command collides with something already recorded under the same id, or the
    /// state it expects (a code already owned, a run already made).
    Conflict,
    /// The command is well formed but a business rule refuses it.
    RuleViolated,
}

impl Rejection {
    pub fn category(&self) -> RejectionCategory {
        match self {
            Rejection::InvalidValue(_) => RejectionCategory::InvalidInput,
            Rejection::AccountNotFound { .. }
            | Rejection::ReferrerNotFound { .. }
            | Rejection::PaymentNotFound { .. }
            | Rejection::PayoutNotFound { .. }
            | Rejection::CommissionNotFound { .. }
            | Rejection::ReservationNotFound { .. } => RejectionCategory::NotFound,
            Rejection::AccountExists { .. }
            | Rejection::ReferralCodeTaken { .. }
            | Rejection::IdempotencyConflict { .. }
            | Rejection::PaymentExists { .. }
            | Rejection::PayoutRunExists { .. }
            | Rejection::PayoutAlreadySettled { .. }
            | Rejection::DonationExists { .. }
            | Rejection::SubscriptionActive { .. }
            | Rejection::PlanVersionNotNext { .. }
            | Rejection::CommissionNotHeld { .. }
            | Rejection::CommissionAlreadyReviewed { .. }
            | Rejection::ReservationExpired { .. }
            | Rejection::ReservationAlreadyCaptured { .. }
            | Rejection::ReservationAlreadyVoided { .. } => RejectionCategory::Conflict,
            Rejection::InsufficientCredits { .. }
            | Rejection::CreditsNotPositive
            | Rejection::ExpiryNotAfterGrant { .. }
            | Rejection::TooManyActiveGrants { .. }
            | Rejection::CreditsLimitExceeded
            | Rejection::CaptureExceedsReservation { .. }
            | Rejection::TooManyOpenReservations { .. }
            | Rejection::ExpiryNotAfterReservation { .. }
            | Rejection::ReservationTtlTooLong { .. }
            | Rejection::SubscriptionNotActive { .. }
            | Rejection::CurrencyMismatch { .. }
            | Rejection::AmountNotPositive
            | Rejection::RefundExceedsPayment { .. }
            | Rejection::RefundBeforePayment
            | Rejection::TooManyRefunds { .. }
            | Rejection::PlanEffectiveInPast
            | Rejection::PlanEffectiveBeforePrevious
            | Rejection::PlanInvalid { .. }
            | Rejection::PayoutRunTooEarly { .. }
            | Rejection::PayoutRunOutOfOrder { .. }
            | Rejection::TooManyPayouts { .. }
            | Rejection::DonationTooEarly { .. } => RejectionCategory::RuleViolated,
        }
    }

    /// The stable code: the API's problem `type`, the rule that failed.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::InvalidValue(_) => "invalid_value",
            Rejection::AccountExists { .. } => "account_exists",
            Rejection::AccountNotFound { .. } => "account_not_found",
            Rejection::ReferrerNotFound { .. } => "referrer_not_found",
            Rejection::ReferralCodeTaken { .. } => "referral_code_taken",
            Rejection::IdempotencyConflict { .. } => "idempotency_conflict",
            Rejection::InsufficientCredits { .. } => "insufficient_credits",
            Rejection::CreditsNotPositive => "credits_not_positive",
            Rejection::ExpiryNotAfterGrant { .. } => "expiry_not_after_grant",
            Rejection::TooManyActiveGrants { .. } => "too_many_active_grants",
            Rejection::CreditsLimitExceeded => "credits_limit_exceeded",
            Rejection::ReservationNotFound { .. } => "reservation_not_found",
            Rejection::ReservationExpired { .. } => "reservation_expired",
            Rejection::ReservationAlreadyCaptured { .. } => "reservation_already_captured",
            Rejection::ReservationAlreadyVoided { .. } => "reservation_already_voided",
            Rejection::CaptureExceedsReservation { .. } => "capture_exceeds_reservation",
            Rejection::TooManyOpenReservations { .. } => "too_many_open_reservations",
            Rejection::ExpiryNotAfterReservation { .. } => "expiry_not_after_reservation",
            Rejection::ReservationTtlTooLong { .. } => "reservation_ttl_too_long",
            Rejection::SubscriptionActive { .. } => "subscription_active",
            Rejection::SubscriptionNotActive { .. } => "subscription_not_active",
            Rejection::CurrencyMismatch { .. } => "currency_mismatch",
            Rejection::AmountNotPositive => "amount_not_positive",
            Rejection::PaymentExists { .. } => "payment_exists",
            Rejection::PaymentNotFound { .. } => "payment_not_found",
            Rejection::CommissionNotFound { .. } => "commission_not_found",
            Rejection::CommissionNotHeld { .. } => "commission_not_held",
            Rejection::CommissionAlreadyReviewed { .. } => "commission_already_reviewed",
            Rejection::RefundExceedsPayment { .. } => "refund_exceeds_payment",
            Rejection::TooManyRefunds { .. } => "too_many_refunds",
            Rejection::RefundBeforePayment => "refund_before_payment",
            Rejection::PlanVersionNotNext { .. } => "plan_version_not_next",
            Rejection::PlanEffectiveInPast => "plan_effective_in_past",
            Rejection::PlanEffectiveBeforePrevious => "plan_effective_before_previous",
            Rejection::PlanInvalid { .. } => "plan_invalid",
            Rejection::PayoutRunExists { .. } => "payout_run_exists",
            Rejection::PayoutRunTooEarly { .. } => "payout_run_too_early",
            Rejection::PayoutRunOutOfOrder { .. } => "payout_run_out_of_order",
            Rejection::TooManyPayouts { .. } => "too_many_payouts",
            Rejection::PayoutNotFound { .. } => "payout_not_found",
            Rejection::PayoutAlreadySettled { .. } => "payout_already_settled",
            Rejection::DonationExists { .. } => "donation_exists",
            Rejection::DonationTooEarly { .. } => "donation_too_early",
        }
    }
}

impl From<ValueError> for Rejection {
    fn from(error: ValueError) -> Self {
        Rejection::InvalidValue(error)
    }
}
