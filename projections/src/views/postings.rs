//! The chart of accounts and the postings of each money event.
//!
//! Stand-in: the domain's double-entry mapping (`ledger::domain::postings`) is not written
//! yet; when it lands, [`ledger_postings`] becomes a conversion from it and this table is
//! deleted, so the books follow one mapping only.
//!
//! | event | debit | credit |
//! |---|---|---|
//! | PaymentReceived (subscription) | cash | revenue |
//! | PaymentReceived (credit pack) | cash | deferred_revenue |
//! | PaymentRefunded, PaymentChargedBack | refunds | cash |
//! | CommissionEarned | commission_expense | commissions_payable:{beneficiary} |
//! | CommissionReversed | commissions_payable:{beneficiary} | commission_expense |
//! | PayoutScheduled | commissions_payable:{affiliate} | payouts |
//! | PayoutSent | payouts | cash |
//! | PayoutFailed | payouts | commissions_payable:{affiliate} |
//! | DonationAllocated | donation_expense | donations_payable |

use std::fmt;

use ledger::domain::events::{DomainEvent, PaymentKind};
use ledger::domain::{AccountId, Currency, Money};
use serde::{Deserialize, Serialize};

use crate::journal::Posting;

/// An account of the chart of accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "account", content = "affiliate", rename_all = "snake_case")]
pub enum LedgerAccount {
    Cash,
    Revenue,
    DeferredRevenue,
    Refunds,
    CommissionExpense,
    CommissionsPayable(AccountId),
    Payouts,
    DonationExpense,
    DonationsPayable,
}

impl fmt::Display for LedgerAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerAccount::Cash => f.write_str("cash"),
            LedgerAccount::Revenue => f.write_str("revenue"),
            LedgerAccount::DeferredRevenue => f.write_str("deferred_revenue"),
            LedgerAccount::Refunds => f.write_str("refunds"),
            LedgerAccount::CommissionExpense => f.write_str("commission_expense"),
            LedgerAccount::CommissionsPayable(affiliate) => {
                write!(f, "commissions_payable:{affiliate}")
            }
            LedgerAccount::Payouts => f.write_str("payouts"),
            LedgerAccount::DonationExpense => f.write_str("donation_expense"),
            LedgerAccount::DonationsPayable => f.write_str("donations_payable"),
        }
    }
}

/// The postings of `event`; empty for events that move no money.
pub fn ledger_postings(
    event: &DomainEvent,
) -> Result<Vec<Posting<LedgerAccount, Currency>>, String> {
    use LedgerAccount::*;
    let entry = |debit: LedgerAccount, credit: LedgerAccount, amount: &Money| {
        if amount.is_negative() {
            return Err(format!(
                "{} carries a negative amount {amount}",
                event.event_type()
            ));
        }
        Ok(vec![
            Posting {
                account: debit,
                currency: amount.currency(),
                amount: amount.amount(),
            },
            Posting {
                account: credit,
                currency: amount.currency(),
                amount: -amount.amount(),
            },
        ])
    };
    match event {
        DomainEvent::PaymentReceived(payment) => match payment.kind {
            PaymentKind::Subscription { .. } => entry(Cash, Revenue, &payment.amount),
            PaymentKind::CreditPack { .. } => entry(Cash, DeferredRevenue, &payment.amount),
        },
        DomainEvent::PaymentRefunded(refund) => entry(Refunds, Cash, &refund.amount),
        DomainEvent::PaymentChargedBack(chargeback) => entry(Refunds, Cash, &chargeback.amount),
        DomainEvent::CommissionEarned(earned) => entry(
            CommissionExpense,
            CommissionsPayable(earned.beneficiary),
            &earned.amount,
        ),
        DomainEvent::CommissionReversed(reversed) => entry(
            CommissionsPayable(reversed.beneficiary),
            CommissionExpense,
            &reversed.amount,
        ),
        DomainEvent::PayoutScheduled(payout) => entry(
            CommissionsPayable(payout.affiliate),
            Payouts,
            &payout.amount,
        ),
        DomainEvent::PayoutSent(payout) => entry(Payouts, Cash, &payout.amount),
        DomainEvent::PayoutFailed(payout) => entry(
            Payouts,
            CommissionsPayable(payout.affiliate),
            &payout.amount,
        ),
        DomainEvent::DonationAllocated(donation) => {
            entry(DonationExpense, DonationsPayable, &donation.amount)
        }
        _ => Ok(Vec::new()),
    }
}
