//! Double entry: every money event as a balanced set of postings on the chart of
//! accounts.
//!
//! [`POSTING_RULES`] is the one mapping; `docs/DOMAIN.md` shows the same table and a test
//! checks they agree. Every money event has exactly one `amount` field, and each rule
//! moves that amount from its credit account to its debit account, so a rule is balanced
//! by construction; [`postings`] still asserts the balance of what it returns, because a
//! broken balance is a bug, never a rejection.

use std::fmt;

use super::events::DomainEvent;
use super::ids::AccountId;
use super::money::Money;

/// A kind of account in the chart; some exist once per affiliate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountKind {
    /// Money held with the payment processor and the bank. An asset.
    Cash,
    /// Income from payments (subscriptions and credit packs).
    Revenue,
    /// Money given back: refunds and chargebacks. A contra-revenue account.
    Refunds,
    /// What commissions cost the platform.
    CommissionExpense,
    /// What is owed to one affiliate, whether in hold, under review or payable. A liability.
    CommissionsPayable,
    /// Payouts scheduled to one affiliate and not yet settled. A liability.
    Payouts,
    /// What donations cost the platform.
    DonationExpense,
    /// Donations allocated and not yet transferred. A liability.
    DonationsPayable,
}

impl AccountKind {
    pub fn name(self) -> &'static str {
        match self {
            AccountKind::Cash => "cash",
            AccountKind::Revenue => "revenue",
            AccountKind::Refunds => "refunds",
            AccountKind::CommissionExpense => "commission_expense",
            AccountKind::CommissionsPayable => "commissions_payable",
            AccountKind::Payouts => "payouts",
            AccountKind::DonationExpense => "donation_expense",
            AccountKind::DonationsPayable => "donations_payable",
        }
    }

    /// Whether the account exists once per affiliate.
    pub fn per_affiliate(self) -> bool {
        matches!(self, AccountKind::CommissionsPayable | AccountKind::Payouts)
    }
}

/// An account of the chart: a kind, and the affiliate for per-affiliate kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LedgerAccount {
    pub kind: AccountKind,
    pub affiliate: Option<AccountId>,
}

impl fmt::Display for LedgerAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.affiliate {
            Some(affiliate) => write!(f, "{}:{affiliate}", self.kind.name()),
            None => f.write_str(self.kind.name()),
        }
    }
}

/// One rule of the mapping: an event type debits one account and credits another with
/// the event's `amount`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostingRule {
    pub event_type: &'static str,
    pub debit: AccountKind,
    pub credit: AccountKind,
}

/// The mapping of every money event to postings. Events not listed move no money.
pub const POSTING_RULES: &[PostingRule] = &[
    rule("PaymentReceived", AccountKind::Cash, AccountKind::Revenue),
    rule("PaymentRefunded", AccountKind::Refunds, AccountKind::Cash),
    rule(
        "PaymentChargedBack",
        AccountKind::Refunds,
        AccountKind::Cash,
    ),
    rule(
        "CommissionEarned",
        AccountKind::CommissionExpense,
        AccountKind::CommissionsPayable,
    ),
    rule(
        "CommissionReversed",
        AccountKind::CommissionsPayable,
        AccountKind::CommissionExpense,
    ),
    rule(
        "CommissionForfeited",
        AccountKind::CommissionsPayable,
        AccountKind::CommissionExpense,
    ),
    rule(
        "PayoutScheduled",
        AccountKind::CommissionsPayable,
        AccountKind::Payouts,
    ),
    rule("PayoutSent", AccountKind::Payouts, AccountKind::Cash),
    rule(
        "PayoutFailed",
        AccountKind::Payouts,
        AccountKind::CommissionsPayable,
    ),
    rule(
        "DonationAllocated",
        AccountKind::DonationExpense,
        AccountKind::DonationsPayable,
    ),
];

const fn rule(event_type: &'static str, debit: AccountKind, credit: AccountKind) -> PostingRule {
    PostingRule {
        event_type,
        debit,
        credit,
    }
}

/// Which side of an account a posting is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Debit,
    Credit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Posting {
    pub account: LedgerAccount,
    pub side: Side,
    pub amount: Money,
}

/// The postings of one event: empty for events that move no money (or move zero).
/// Panics if the result does not balance, which would be a bug in the mapping.
pub fn postings(event: &DomainEvent) -> Vec<Posting> {
    let Some((amount, affiliate)) = money_of(event) else {
        return Vec::new();
    };
    if amount.is_zero() {
        return Vec::new();
    }
    assert!(
        amount.is_positive(),
        "{} moves a positive amount, got {amount}",
        event.event_type()
    );
    let account = |kind: AccountKind| LedgerAccount {
        kind,
        affiliate: if kind.per_affiliate() {
            affiliate
        } else {
            None
        },
    };
    let mut result = Vec::new();
    for rule in POSTING_RULES
        .iter()
        .filter(|rule| rule.event_type == event.event_type())
    {
        result.push(Posting {
            account: account(rule.debit),
            side: Side::Debit,
            amount,
        });
        result.push(Posting {
            account: account(rule.credit),
            side: Side::Credit,
            amount,
        });
    }
    assert!(
        !result.is_empty(),
        "{} moves money but has no posting rule",
        event.event_type()
    );
    assert_balanced(event.event_type(), &result);
    result
}

/// Panics unless debits equal credits, in one currency, and every per-affiliate account
/// names its affiliate.
pub fn assert_balanced(context: &str, postings: &[Posting]) {
    let Some(first) = postings.first() else {
        return;
    };
    let mut debits = Money::zero(first.amount.currency());
    let mut credits = Money::zero(first.amount.currency());
    for posting in postings {
        assert_eq!(
            posting.account.kind.per_affiliate(),
            posting.account.affiliate.is_some(),
            "{context}: {} must name an affiliate exactly when it is per affiliate",
            posting.account
        );
        let side = match posting.side {
            Side::Debit => &mut debits,
            Side::Credit => &mut credits,
        };
        *side = side.checked_add(&posting.amount).unwrap_or_else(|error| {
            panic!("{context}: postings in more than one currency: {error}")
        });
    }
    assert_eq!(
        debits, credits,
        "{context}: debits and credits do not balance"
    );
}

/// Balances of every account of the chart, debit-positive, folded from events in log
/// order. The sum over all accounts is zero after every event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrialBalance {
    balances: std::collections::BTreeMap<LedgerAccount, Money>,
}

impl TrialBalance {
    /// Posts an event; panics if its postings do not balance or the total is not zero.
    pub fn apply(&mut self, event: &DomainEvent) {
        for posting in postings(event) {
            let signed = match posting.side {
                Side::Debit => posting.amount,
                Side::Credit => posting.amount.negated(),
            };
            let balance = self
                .balances
                .entry(posting.account)
                .or_insert(Money::zero(posting.amount.currency()));
            *balance = balance
                .checked_add(&signed)
                .unwrap_or_else(|error| panic!("{}: {error}", posting.account));
        }
        assert!(
            self.total().is_none_or(|total| total.is_zero()),
            "the trial balance sums to zero"
        );
    }

    /// Every account's balance, zero balances included once touched.
    pub fn balances(&self) -> &std::collections::BTreeMap<LedgerAccount, Money> {
        &self.balances
    }

    pub fn balance(&self, account: &LedgerAccount) -> Option<Money> {
        self.balances.get(account).copied()
    }

    /// The sum over all accounts, `None` before any posting.
    pub fn total(&self) -> Option<Money> {
        let mut balances = self.balances.values();
        let first = *balances.next()?;
        Some(balances.fold(first, |sum, balance| {
            sum.checked_add(balance)
                .expect("the ledger posts in one currency")
        }))
    }
}

/// The amount an event moves and the affiliate it concerns, for money events.
fn money_of(event: &DomainEvent) -> Option<(Money, Option<AccountId>)> {
    Some(match event {
        DomainEvent::PaymentReceived(e) => (e.amount, None),
        DomainEvent::PaymentRefunded(e) => (e.amount, None),
        DomainEvent::PaymentChargedBack(e) => (e.amount, None),
        DomainEvent::CommissionEarned(e) => (e.amount, Some(e.beneficiary)),
        DomainEvent::CommissionReversed(e) => (e.amount, Some(e.beneficiary)),
        DomainEvent::CommissionForfeited(e) => (e.amount, Some(e.beneficiary)),
        DomainEvent::PayoutScheduled(e) => (e.amount, Some(e.affiliate)),
        DomainEvent::PayoutSent(e) => (e.amount, Some(e.affiliate)),
        DomainEvent::PayoutFailed(e) => (e.amount, Some(e.affiliate)),
        DomainEvent::DonationAllocated(e) => (e.amount, None),
        DomainEvent::AccountOpened(_)
        | DomainEvent::ReferralRecorded(_)
        | DomainEvent::ReferralCodeClaimed(_)
        | DomainEvent::PersonalDataCorrected(_)
        | DomainEvent::CreditsGranted(_)
        | DomainEvent::CreditsPurchased(_)
        | DomainEvent::CreditsSpent(_)
        | DomainEvent::CreditsExpired(_)
        | DomainEvent::CreditsReserved(_)
        | DomainEvent::ReservationCaptured(_)
        | DomainEvent::ReservationVoided(_)
        | DomainEvent::ReservationExpired(_)
        | DomainEvent::SubscriptionStarted(_)
        | DomainEvent::SubscriptionCancelled(_)
        | DomainEvent::CommissionReleased(_)
        | DomainEvent::CommissionPlanPublished(_)
        | DomainEvent::PayoutRunCompleted(_)
        | DomainEvent::ErasureRequested(_)
        | DomainEvent::SubjectErased(_)
        | DomainEvent::RetainedDataShredded(_)
        | DomainEvent::LegalHoldPlaced(_)
        | DomainEvent::LegalHoldLifted(_)
        | DomainEvent::ProcessingRestricted(_)
        | DomainEvent::ProcessingRestrictionLifted(_) => return None,
    })
}

/// The mapping as the Markdown table `docs/DOMAIN.md` shows.
pub fn rules_table() -> String {
    let mut table = String::from("| event | debit | credit |\n|---|---|---|\n");
    for rule in POSTING_RULES {
        let name = |kind: AccountKind| {
            if kind.per_affiliate() {
                format!("{}:{{affiliate}}", kind.name())
            } else {
                kind.name().to_owned()
            }
        };
        table.push_str(&format!(
            "| {} | {} | {} |\n",
            rule.event_type,
            name(rule.debit),
            name(rule.credit)
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{upcast, EVENT_TYPES};

    fn fixture(event_type: &str) -> DomainEvent {
        let path = format!(
            "{}/../fixtures/events/{event_type}.v1.json",
            env!("CARGO_MANIFEST_DIR")
        );
        upcast(event_type, 1, std::fs::read(path).unwrap().as_slice()).unwrap()
    }

    #[test]
    fn every_money_event_has_a_rule_and_balances() {
        for &(event_type, _) in EVENT_TYPES {
            let event = fixture(event_type);
            let postings = postings(&event);
            let has_rule = POSTING_RULES
                .iter()
                .any(|rule| rule.event_type == event_type);
            assert_eq!(!postings.is_empty(), has_rule, "{event_type}");
        }
    }

    #[test]
    fn a_commission_moves_expense_into_the_affiliates_payable() {
        let event = fixture("CommissionEarned");
        let DomainEvent::CommissionEarned(earned) = &event else {
            panic!()
        };
        let postings = postings(&event);
        assert_eq!(postings.len(), 2);
        assert_eq!(postings[0].account.to_string(), "commission_expense");
        assert_eq!(
            postings[1].account.to_string(),
            format!("commissions_payable:{}", earned.beneficiary)
        );
        assert_eq!(postings[1].amount, earned.amount);
    }

    #[test]
    fn a_trial_balance_follows_the_events() {
        let mut trial = TrialBalance::default();
        assert_eq!(trial.total(), None);
        trial.apply(&fixture("PaymentReceived"));
        trial.apply(&fixture("PaymentRefunded"));
        let cash = LedgerAccount {
            kind: AccountKind::Cash,
            affiliate: None,
        };
        assert_eq!(
            trial.balance(&cash),
            Some(Money::parse("14.99", "EUR").unwrap())
        );
        assert!(trial.total().unwrap().is_zero());
    }

    #[test]
    #[should_panic(expected = "do not balance")]
    fn an_unbalanced_set_panics() {
        let event = fixture("PaymentReceived");
        let mut postings = postings(&event);
        postings.pop();
        postings.push(Posting {
            account: LedgerAccount {
                kind: AccountKind::Revenue,
                affiliate: None,
            },
            side: Side::Credit,
            amount: Money::parse("0.01", "EUR").unwrap(),
        });
        assert_balanced("test", &postings);
    }

    /// The table in docs/DOMAIN.md is the one in code.
    #[test]
    fn the_documented_table_is_the_code_table() {
        let doc =
            std::fs::read_to_string(format!("{}/../docs/DOMAIN.md", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        let start = doc
            .find("<!-- postings:begin -->")
            .expect("postings table start marker")
            + "<!-- postings:begin -->".len();
        let end = doc
            .find("<!-- postings:end -->")
            .expect("postings table end marker");
        assert_eq!(doc[start..end].trim(), rules_table().trim());
    }
}
