//! The journal's postings, from the domain's one double-entry mapping
//! (`ledger::domain::postings`), as signed amounts: a debit positive, a credit negative.
//!
//! [`AccountKey`] wraps the domain's ledger account so the journal's checkpoint can hold
//! it: it reads and writes as the account's name, `cash` or `commissions_payable:{id}`.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ledger::domain::events::DomainEvent;
use ledger::domain::postings::{postings, AccountKind, LedgerAccount, Side};
use ledger::domain::{AccountId, Currency};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::journal::Posting;

/// Every kind of the domain's chart of accounts; a test checks the list is complete.
pub const ACCOUNT_KINDS: [AccountKind; 8] = [
    AccountKind::Cash,
    AccountKind::Revenue,
    AccountKind::Refunds,
    AccountKind::CommissionExpense,
    AccountKind::CommissionsPayable,
    AccountKind::Payouts,
    AccountKind::DonationExpense,
    AccountKind::DonationsPayable,
];

/// A ledger account of the domain's chart, ordered like it (kind, then affiliate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AccountKey(pub LedgerAccount);

impl AccountKey {
    pub fn of(kind: AccountKind, affiliate: Option<AccountId>) -> AccountKey {
        AccountKey(LedgerAccount { kind, affiliate })
    }

    /// Reads a name written by `Display`.
    pub fn parse(text: &str) -> Option<AccountKey> {
        let (name, affiliate) = match text.split_once(':') {
            Some((name, affiliate)) => (name, Some(AccountId::parse(affiliate).ok()?)),
            None => (text, None),
        };
        let kind = ACCOUNT_KINDS.into_iter().find(|kind| kind.name() == name)?;
        (kind.per_affiliate() == affiliate.is_some()).then_some(AccountKey::of(kind, affiliate))
    }
}

impl fmt::Display for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for AccountKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        AccountKey::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not a ledger account")))
    }
}

/// The postings of `event` as signed amounts; empty for events that move no money. The
/// domain's mapping panics on a posting set that does not balance (a bug, or a forged
/// log); that is turned into an error here so a replay can name the position.
pub fn ledger_postings(event: &DomainEvent) -> Result<Vec<Posting<AccountKey, Currency>>, String> {
    let mapped = catch_unwind(AssertUnwindSafe(|| postings(event))).map_err(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
            .unwrap_or_else(|| "the postings mapping panicked".to_owned());
        format!("{} has no valid postings: {reason}", event.event_type())
    })?;
    Ok(mapped
        .into_iter()
        .map(|posting| Posting {
            account: AccountKey(posting.account),
            currency: posting.amount.currency(),
            amount: match posting.side {
                Side::Debit => posting.amount.amount(),
                Side::Credit => -posting.amount.amount(),
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use ledger::domain::postings::POSTING_RULES;

    use super::*;

    #[test]
    fn every_account_kind_is_listed_and_names_round_trip() {
        for rule in POSTING_RULES {
            assert!(ACCOUNT_KINDS.contains(&rule.debit), "{:?}", rule.debit);
            assert!(ACCOUNT_KINDS.contains(&rule.credit), "{:?}", rule.credit);
        }
        let affiliate = AccountId::new(crate::rng::SplitMix64::new(7).uuid()).unwrap();
        for kind in ACCOUNT_KINDS {
            let key = AccountKey::of(kind, kind.per_affiliate().then_some(affiliate));
            assert_eq!(AccountKey::parse(&key.to_string()), Some(key));
            let json = serde_json::to_string(&key).unwrap();
            assert_eq!(serde_json::from_str::<AccountKey>(&json).unwrap(), key);
        }
        assert_eq!(
            AccountKey::parse("cash:00000000-0000-0000-0000-000000000007"),
            None
        );
        assert_eq!(AccountKey::parse("commissions_payable"), None);
        assert_eq!(AccountKey::parse("petty_cash"), None);
    }
}
