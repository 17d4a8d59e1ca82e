//! The stream layout: which stream each kind of fact lives in. See `docs/DOMAIN.md`.

use super::ids::{AccountId, PaymentId, ReferralCode};
use super::period::Period;
use crate::store::StreamName;

/// `account-{uuid}`: signup, referrals made, personal data, subscriptions, credit wallet.
pub fn account(id: AccountId) -> StreamName {
    named(format!("account-{id}"))
}

/// `referral-code-{code}`: who owns a referral code; claimed with `NoStream`, so a code
/// has one owner.
pub fn referral_code(code: ReferralCode) -> StreamName {
    named(format!("referral-code-{code}"))
}

/// `payment-{processor id}`: the payment, the commissions it funds (same append), its
/// refunds, chargebacks and clawbacks.
pub fn payment(id: &PaymentId) -> StreamName {
    named(format!("payment-{id}"))
}

/// `plan`: commission plan versions.
pub fn plan() -> StreamName {
    named("plan".to_owned())
}

/// `payouts`: every payout run, one per period in period order, and how each payout settled.
pub fn payouts() -> StreamName {
    named("payouts".to_owned())
}

/// `donation-{YYYY-MM}`: one donation allocation per period.
pub fn donation(period: Period) -> StreamName {
    named(format!("donation-{period}"))
}

fn named(name: String) -> StreamName {
    // Every part is a validated value of bounded length and charset.
    StreamName::parse(name).expect("domain stream names are valid")
}
