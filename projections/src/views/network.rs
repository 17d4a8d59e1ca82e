//! The referral network: the forest of who referred whom, what each member paid (net of
//! refunds), and the analytics built on it, which leave out every subject under
//! restriction of processing.
//!
//! Restriction of processing (`ProcessingRestricted`, `ProcessingRestrictionLifted`)
//! reaches [`Network::set_restricted`]: restricting a subject takes its signup and its
//! revenue out of every analytics total, past periods included; lifting the restriction
//! puts them back. The books (journal, commissions, wallets) are not analytics and keep
//! everything.

use crate::hash::FastMap;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use ledger::domain::{AccountId, Currency, Period};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::forest::{ForestError, Month, ReferralForest};
use crate::serial::SeqOf;

/// Most currencies one member's revenue is kept in (a limit on a per-account list).
pub const MEMBER_CURRENCIES_MAX: usize = 8;

/// One member's net revenue (payments less refunds) per currency.
type Revenue = Vec<(Currency, Decimal)>;
/// One member's net revenue per period and currency, as kept and as checkpointed.
type PeriodRevenue = Vec<(Period, Currency, Decimal)>;
/// Revenue of a payer that is not in the forest.
type OrphanState = (AccountId, Revenue, PeriodRevenue);

/// Signups and net revenue of one period, restricted subjects left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodAnalytics {
    pub signups: u64,
    pub referred_signups: u64,
    pub net_revenue: BTreeMap<Currency, Decimal>,
}

#[derive(Clone, Debug, Default)]
pub struct Network {
    forest: ReferralForest<AccountId>,
    /// Per payer, net revenue per period and currency: its total revenue is their sum, and
    /// a restriction takes a subject's past contributions out of the analytics with them.
    /// One short list per payer (no separate totals map) keeps a million payers small.
    /// Indexed by the member's place in the forest (signup order), so a million members
    /// need no second map keyed by account id.
    member_revenue: Vec<PeriodRevenue>,
    /// The same for payers that are not in the forest (not expected, but kept).
    orphan_revenue: FastMap<AccountId, PeriodRevenue>,
    analytics: BTreeMap<Period, PeriodAnalytics>,
    restricted: BTreeSet<AccountId>,
}

impl Network {
    pub fn forest(&self) -> &ReferralForest<AccountId> {
        &self.forest
    }

    pub fn opened(
        &mut self,
        account: AccountId,
        referrer: Option<AccountId>,
        at: DateTime<Utc>,
    ) -> Result<(), ForestError> {
        self.forest.add(account, referrer, at)?;
        debug_assert_eq!(
            self.forest.index_of(&account),
            Some(self.member_revenue.len())
        );
        let earlier = self.orphan_revenue.remove(&account).unwrap_or_default();
        self.member_revenue.push(earlier);
        let period = self.analytics.entry(Period::containing(at)).or_default();
        period.signups += 1;
        period.referred_signups += u64::from(referrer.is_some());
        Ok(())
    }

    /// Adds `amount` (negative for a refund) to the payer's net revenue at `at`.
    pub fn revenue(
        &mut self,
        payer: AccountId,
        currency: Currency,
        amount: Decimal,
        at: DateTime<Utc>,
    ) {
        let period = Period::containing(at);
        let history = match self.forest.index_of(&payer) {
            Some(index) => &mut self.member_revenue[index],
            None => self.orphan_revenue.entry(payer).or_default(),
        };
        match history
            .iter_mut()
            .find(|(known, known_currency, _)| *known == period && *known_currency == currency)
        {
            Some((_, _, total)) => *total += amount,
            None => {
                assert!(
                    history.iter().any(|(_, known, _)| *known == currency)
                        || currencies_of(history) < MEMBER_CURRENCIES_MAX,
                    "member_currencies_max is {MEMBER_CURRENCIES_MAX}"
                );
                // Grow by half, not by doubling from four: most payers pay in few months.
                if history.len() == history.capacity() {
                    history.reserve_exact((history.len() / 2).max(1));
                }
                history.push((period, currency, amount));
            }
        }
        if !self.restricted.contains(&payer) {
            *self
                .analytics
                .entry(period)
                .or_default()
                .net_revenue
                .entry(currency)
                .or_default() += amount;
        }
    }

    /// The restriction hook: takes `subject` out of (or back into) every analytics total.
    pub fn set_restricted(&mut self, subject: AccountId, restricted: bool) {
        let changed = if restricted {
            self.restricted.insert(subject)
        } else {
            self.restricted.remove(&subject)
        };
        if !changed {
            return;
        }
        let sign = if restricted {
            Decimal::NEGATIVE_ONE
        } else {
            Decimal::ONE
        };
        let count_sign: i64 = if restricted { -1 } else { 1 };
        if let Ok(at) = self.forest.joined_at(&subject) {
            let referred = matches!(self.forest.referrer(&subject), Ok(Some(_)));
            let period = self.analytics.entry(Period::containing(at)).or_default();
            period.signups = period.signups.saturating_add_signed(count_sign);
            if referred {
                period.referred_signups = period.referred_signups.saturating_add_signed(count_sign);
            }
        }
        let history = match self.forest.index_of(&subject) {
            Some(index) => self.member_revenue.get(index),
            None => self.orphan_revenue.get(&subject),
        };
        for (period, currency, amount) in history.into_iter().flatten() {
            *self
                .analytics
                .entry(*period)
                .or_default()
                .net_revenue
                .entry(*currency)
                .or_default() += sign * amount;
        }
    }

    pub fn is_restricted(&self, subject: &AccountId) -> bool {
        self.restricted.contains(subject)
    }

    /// Per period: signups and net revenue, restricted subjects left out.
    pub fn analytics(&self) -> &BTreeMap<Period, PeriodAnalytics> {
        &self.analytics
    }

    /// Network growth of `account` per month, restricted subjects left out.
    pub fn growth_per_month(
        &self,
        account: &AccountId,
    ) -> Result<BTreeMap<Month, u64>, ForestError> {
        if self.restricted.is_empty() {
            return self.forest.growth_per_month(account);
        }
        let mut growth = BTreeMap::new();
        for member in self.forest.downline(account)? {
            if self.restricted.contains(&member) {
                continue;
            }
            if let Ok(at) = self.forest.joined_at(&member) {
                *growth.entry(Month::of(at)).or_insert(0) += 1;
            }
        }
        Ok(growth)
    }

    /// The net revenue of an account's own payments.
    pub fn own_revenue(&self, account: &AccountId) -> BTreeMap<Currency, Decimal> {
        self.revenue_of(account).into_iter().collect()
    }

    /// An account's net revenue per period and currency, if it paid anything.
    fn revenue_history(&self, account: &AccountId) -> Option<&PeriodRevenue> {
        match self.forest.index_of(account) {
            Some(index) => self.member_revenue.get(index),
            None => self.orphan_revenue.get(account),
        }
    }

    /// An account's net revenue per currency, in the order its currencies first appear.
    fn revenue_of(&self, account: &AccountId) -> Revenue {
        let mut revenue: Revenue = Vec::new();
        for (_, currency, amount) in self.revenue_history(account).into_iter().flatten() {
            match revenue.iter_mut().find(|(known, _)| *known == *currency) {
                Some((_, total)) => *total += *amount,
                None => revenue.push((*currency, *amount)),
            }
        }
        revenue
    }

    /// The net revenue of everyone below `account` (down to `forest::WALK_DEPTH_MAX` levels),
    /// not counting the account's own payments.
    pub fn subtree_revenue(
        &self,
        account: &AccountId,
    ) -> Result<BTreeMap<Currency, Decimal>, ForestError> {
        let mut total: BTreeMap<Currency, Decimal> = BTreeMap::new();
        for member in self.forest.downline(account)? {
            for (_, currency, amount) in self.revenue_history(&member).into_iter().flatten() {
                *total.entry(*currency).or_default() += *amount;
            }
        }
        Ok(total)
    }

    pub fn to_state(&self) -> NetworkState {
        NetworkState {
            members: self.members_state().collect(),
            orphans: self.orphans_state(),
            analytics: self.analytics.clone(),
            restricted: self.restricted.clone(),
        }
    }

    /// Serializes exactly as [`Network::to_state`] does, borrowing the live structures
    /// instead of copying them: a member's entry is built when it is written.
    pub fn state_serializer(&self) -> impl Serialize + '_ {
        #[derive(Serialize)]
        struct NetworkStateRef<'a, M> {
            members: M,
            orphans: Vec<OrphanState>,
            analytics: &'a BTreeMap<Period, PeriodAnalytics>,
            restricted: &'a BTreeSet<AccountId>,
        }
        NetworkStateRef {
            members: SeqOf::new(self.forest.len(), move || self.members_state()),
            // Copied: payers outside the forest are not expected, so there are few.
            orphans: self.orphans_state(),
            analytics: &self.analytics,
            restricted: &self.restricted,
        }
    }

    /// Every member's state entry, in signup order.
    fn members_state(&self) -> impl Iterator<Item = MemberState> + '_ {
        self.forest
            .members_in_order()
            .map(|(account, referrer, _)| {
                let opened = self
                    .forest
                    .joined_at(&account)
                    .expect("a member in order is in the forest");
                let mut revenue = self.revenue_of(&account);
                revenue.sort_unstable_by_key(|(currency, _)| *currency);
                let mut by_period = self.revenue_history(&account).cloned().unwrap_or_default();
                by_period.sort_unstable_by_key(|(period, currency, _)| (*period, *currency));
                (account, referrer, opened, revenue, by_period)
            })
    }

    /// Revenue of payers who never opened an account (not expected, but kept), in
    /// account order.
    fn orphans_state(&self) -> Vec<OrphanState> {
        let mut orphans: Vec<OrphanState> = self
            .orphan_revenue
            .iter()
            .map(|(account, history)| {
                let mut revenue = self.revenue_of(account);
                revenue.sort_unstable_by_key(|(currency, _)| *currency);
                let mut by_period = history.clone();
                by_period.sort_unstable_by_key(|(period, currency, _)| (*period, *currency));
                (*account, revenue, by_period)
            })
            .collect();
        orphans.sort_unstable_by_key(|(account, _, _)| *account);
        orphans
    }

    pub fn from_state(state: NetworkState) -> Result<Network, ForestError> {
        let mut network = Network {
            analytics: state.analytics,
            restricted: state.restricted,
            ..Network::default()
        };
        // The revenue totals in the state are the sums of the periods, kept for readers.
        for (account, referrer, opened, _revenue, by_period) in state.members {
            network.forest.add(account, referrer, opened)?;
            network.member_revenue.push(by_period);
        }
        for (account, _revenue, by_period) in state.orphans {
            network.orphan_revenue.insert(account, by_period);
        }
        Ok(network)
    }
}

/// How many currencies one member's revenue history holds.
fn currencies_of(history: &PeriodRevenue) -> usize {
    let mut currencies: Vec<Currency> = history.iter().map(|(_, currency, _)| *currency).collect();
    currencies.sort_unstable();
    currencies.dedup();
    currencies.len()
}

type MemberState = (
    AccountId,
    Option<AccountId>,
    DateTime<Utc>,
    Revenue,
    PeriodRevenue,
);

#[derive(Serialize, Deserialize)]
pub struct NetworkState {
    members: Vec<MemberState>,
    orphans: Vec<OrphanState>,
    analytics: BTreeMap<Period, PeriodAnalytics>,
    restricted: BTreeSet<AccountId>,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::rng::SplitMix64;

    fn at(month: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, month, 3, 0, 0, 0).unwrap()
    }

    #[test]
    fn restricted_subjects_leave_every_analytics_total_and_can_come_back() {
        let mut rng = SplitMix64::new(3);
        let mut id = || AccountId::new(rng.uuid()).unwrap();
        let (root, restricted, other) = (id(), id(), id());
        let mut network = Network::default();
        network.opened(root, None, at(1)).unwrap();
        network.opened(restricted, Some(root), at(2)).unwrap();
        network.opened(other, Some(root), at(2)).unwrap();
        let eur = Currency::EUR;
        network.revenue(restricted, eur, Decimal::new(1999, 2), at(2));
        network.revenue(other, eur, Decimal::new(999, 2), at(2));
        let february = Period::containing(at(2));
        let before = network.analytics()[&february].clone();
        assert_eq!((before.signups, before.referred_signups), (2, 2));
        assert_eq!(before.net_revenue[&eur], Decimal::new(2998, 2));

        network.set_restricted(restricted, true);
        let during = network.analytics()[&february].clone();
        assert_eq!((during.signups, during.referred_signups), (1, 1));
        assert_eq!(during.net_revenue[&eur], Decimal::new(999, 2));
        let growth = network.growth_per_month(&root).unwrap();
        assert_eq!(growth.values().sum::<u64>(), 1);
        // Revenue recorded while restricted stays out too.
        network.revenue(restricted, eur, Decimal::new(500, 2), at(2));
        assert_eq!(
            network.analytics()[&february].net_revenue[&eur],
            Decimal::new(999, 2)
        );
        // The books are not analytics: the member's own revenue is still known.
        assert_eq!(
            network.own_revenue(&restricted)[&eur],
            Decimal::new(2499, 2)
        );

        network.set_restricted(restricted, false);
        let after = network.analytics()[&february].clone();
        assert_eq!((after.signups, after.referred_signups), (2, 2));
        assert_eq!(after.net_revenue[&eur], Decimal::new(3498, 2));
        assert_eq!(
            network
                .growth_per_month(&root)
                .unwrap()
                .values()
                .sum::<u64>(),
            2
        );
    }
}
