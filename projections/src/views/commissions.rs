//! Commissions, payouts and donations.
//!
//! Each commission is kept with what produced it (payment, payer, level, rate, plan
//! version, base amount) and what happened to it since: the refunds and chargebacks that
//! reversed part or all of it, and the payouts that paid it. Payouts are matched to the
//! commissions they pay first in, first out: the oldest payable commission of the
//! affiliate is paid first. A reversal of money already paid out leaves the affiliate
//! owing it (a negative carry), settled from the next commissions before they pay out.
//!
//! Statuses depend on time (a commission becomes payable when its hold ends), so every
//! status query takes the instant it is asked about; the state itself only holds facts.

use crate::hash::FastMap;
use crate::serial::SeqOf;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ledger::domain::events::{
    CommissionEarned, CommissionForfeited, CommissionPlanPublished, CommissionReleased,
    CommissionReversed, DonationAllocated, FraudFlag, PaymentChargedBack, PaymentReceived,
    PaymentRefunded, PayoutFailed, PayoutRunCompleted, PayoutScheduled, PayoutSent,
};
use ledger::domain::ids::{OrganisationId, PaymentId, PayoutReference, RefundId};
use ledger::domain::{AccountId, Currency, Money, Period, PlanVersion, Rate};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A payment as the commission views need it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub payment_id: PaymentId,
    pub payer: AccountId,
    pub amount: Money,
    pub received_at: DateTime<Utc>,
    /// Refunds and chargebacks, in order; allocated only for a payment that has any.
    refunds: Option<Box<[RefundRecord]>>,
    /// The commissions it funded.
    commissions: PaymentCommissions,
}

impl PaymentRecord {
    /// Its refunds and chargebacks, in order.
    pub fn refunds(&self) -> &[RefundRecord] {
        self.refunds.as_deref().unwrap_or_default()
    }

    /// Indexes of the commissions it funded into the commission list, in the order earned.
    pub fn commissions(&self) -> impl Iterator<Item = u32> + '_ {
        let (run, listed) = match &self.commissions {
            PaymentCommissions::Run { first, count } => (*first..*first + *count, &[][..]),
            PaymentCommissions::Listed(listed) => (0..0, &listed[..]),
        };
        run.chain(listed.iter().copied())
    }

    fn push_refund(&mut self, refund: RefundRecord) {
        // Refunds are rare and few per payment: a copy per refund costs nothing.
        let mut refunds = self.refunds.take().map(Vec::from).unwrap_or_default();
        refunds.push(refund);
        self.refunds = Some(refunds.into_boxed_slice());
    }

    fn push_commission(&mut self, index: u32) {
        self.commissions = match std::mem::take(&mut self.commissions) {
            PaymentCommissions::Run { count: 0, .. } => PaymentCommissions::Run {
                first: index,
                count: 1,
            },
            PaymentCommissions::Run { first, count } if first + count == index => {
                PaymentCommissions::Run {
                    first,
                    count: count + 1,
                }
            }
            PaymentCommissions::Run { first, count } => {
                let mut listed: Vec<u32> = (first..first + count).collect();
                listed.push(index);
                PaymentCommissions::Listed(listed.into_boxed_slice())
            }
            PaymentCommissions::Listed(listed) => {
                let mut listed = Vec::from(listed);
                listed.push(index);
                PaymentCommissions::Listed(listed.into_boxed_slice())
            }
        };
    }
}

/// A payment's commissions. The domain records them together, right after the payment,
/// so they are a run of consecutive indexes (stored as two numbers, not a list); a log in
/// which they are not is still read, as a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum PaymentCommissions {
    Run { first: u32, count: u32 },
    Listed(Box<[u32]>),
}

impl Default for PaymentCommissions {
    fn default() -> Self {
        PaymentCommissions::Run { first: 0, count: 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub refund_id: RefundId,
    pub amount: Money,
    pub chargeback: bool,
    pub at: DateTime<Utc>,
}

/// One reversal of (part of) a commission.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reversal {
    pub refund_id: RefundId,
    pub amount: Decimal,
    pub at: DateTime<Utc>,
}

/// One commission and its history.
///
/// Millions of these are kept, so the record is compact: what every commission has is
/// inline, the first payout that paid it too (most are paid once, if at all), and what
/// only some commissions go through (review, reversals, forfeiture, further payouts) sits
/// behind one pointer that is allocated only when it happens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commission {
    /// Index into the payment list.
    pub payment: u32,
    pub plan_version: PlanVersion,
    pub beneficiary: AccountId,
    pub payer: AccountId,
    pub rate: Rate,
    pub base_amount: Decimal,
    pub amount: Decimal,
    pub earned_at: DateTime<Utc>,
    pub hold_until: DateTime<Utc>,
    pub level: u8,
    /// The currency of `base_amount` and `amount` (see [`Commission::currency`]).
    currency: Currency,
    /// As earned: whether it was held for review (see [`Commission::review`] for how
    /// that ended).
    pub held_for_review: bool,
    /// The first part matched to a payout: (period, amount).
    paid_first: Option<(Period, Decimal)>,
    history: Option<Box<CommissionHistory>>,
}

/// What happens to few commissions: kept out of line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CommissionHistory {
    review_reasons: Vec<FraudFlag>,
    reversals: Vec<Reversal>,
    /// How the review of a commission held for review ended, if it did.
    review: Option<Review>,
    /// What a forfeiting review took back (zero otherwise).
    forfeited: Decimal,
    /// Parts matched to payouts after `paid_first`, in the order matched.
    paid_more: Vec<(Period, Decimal)>,
}

/// The end of a review of a held commission.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Review {
    /// Payable once its hold ends, like any other.
    Released { at: DateTime<Utc> },
    /// What was left of it taken back.
    Forfeited { at: DateTime<Utc> },
}

impl Commission {
    /// The currency of its amounts.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Why it was held for review (empty if it was not).
    pub fn review_reasons(&self) -> &[FraudFlag] {
        self.history
            .as_ref()
            .map_or(&[], |history| history.review_reasons.as_slice())
    }

    /// The refunds and chargebacks that reversed part or all of it, in order.
    pub fn reversals(&self) -> &[Reversal] {
        self.history
            .as_ref()
            .map_or(&[], |history| history.reversals.as_slice())
    }

    /// How the review of a commission held for review ended, if it did.
    pub fn review(&self) -> Option<Review> {
        self.history.as_ref().and_then(|history| history.review)
    }

    /// What a forfeiting review took back (zero otherwise).
    pub fn forfeited(&self) -> Decimal {
        self.history
            .as_ref()
            .map_or(Decimal::ZERO, |history| history.forfeited)
    }

    /// Parts of the commission matched to payouts: (period, amount), in the order matched.
    pub fn paid_by(&self) -> impl Iterator<Item = (Period, Decimal)> + '_ {
        self.paid_first.into_iter().chain(
            self.history
                .iter()
                .flat_map(|history| history.paid_more.iter().copied()),
        )
    }

    fn history_mut(&mut self) -> &mut CommissionHistory {
        self.history.get_or_insert_with(Box::default)
    }

    fn push_paid(&mut self, period: Period, amount: Decimal) {
        if self.paid_first.is_none() {
            self.paid_first = Some((period, amount));
        } else {
            self.history_mut().paid_more.push((period, amount));
        }
    }

    /// Unmatches every part paid by the payout of `period`.
    fn remove_paid(&mut self, period: Period) {
        if let Some(history) = self.history.as_mut() {
            history.paid_more.retain(|(paid_in, _)| *paid_in != period);
        }
        if self
            .paid_first
            .is_some_and(|(paid_in, _)| paid_in == period)
        {
            self.paid_first = match self.history.as_mut() {
                Some(history) if !history.paid_more.is_empty() => Some(history.paid_more.remove(0)),
                _ => None,
            };
        }
    }

    /// What refunds clawed back and a review forfeited.
    pub fn reversed(&self) -> Decimal {
        match &self.history {
            None => Decimal::ZERO,
            Some(history) => {
                history
                    .reversals
                    .iter()
                    .map(|reversal| reversal.amount)
                    .sum::<Decimal>()
                    + history.forfeited
            }
        }
    }

    /// What is left after clawbacks and forfeiture.
    pub fn net(&self) -> Decimal {
        self.amount - self.reversed()
    }

    /// The part matched to payouts (scheduled or sent).
    pub fn matched(&self) -> Decimal {
        self.paid_by().map(|(_, amount)| amount).sum()
    }

    /// The part neither reversed nor matched to a payout.
    pub fn open(&self) -> Decimal {
        if self.history.is_none() {
            // The common case, without summing empty lists.
            let matched = self.paid_first.map_or(Decimal::ZERO, |(_, amount)| amount);
            return (self.amount - matched).max(Decimal::ZERO);
        }
        (self.net() - self.matched()).max(Decimal::ZERO)
    }

    /// Whether the commission can be paid at `at`: its hold is over, and it was not held
    /// for review or a review released it by then (as the domain's payable book reads it).
    pub fn is_payable_at(&self, at: DateTime<Utc>) -> bool {
        let cleared = match self.review() {
            _ if !self.held_for_review => true,
            Some(Review::Released { at: released }) => released <= at,
            Some(Review::Forfeited { .. }) | None => false,
        };
        cleared && self.hold_until <= at
    }

    /// Its status at `at`, by where most of its amount stands.
    pub fn status_at(&self, at: DateTime<Utc>) -> CommissionStatus {
        if self.net().is_zero() {
            CommissionStatus::Reversed
        } else if self.open().is_zero() {
            CommissionStatus::Paid
        } else if self.is_payable_at(at) {
            CommissionStatus::Payable
        } else {
            CommissionStatus::Held
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommissionStatus {
    Held,
    Payable,
    Paid,
    Reversed,
}

impl CommissionStatus {
    pub fn code(self) -> &'static str {
        match self {
            CommissionStatus::Held => "held",
            CommissionStatus::Payable => "payable",
            CommissionStatus::Paid => "paid",
            CommissionStatus::Reversed => "reversed",
        }
    }
}

/// An affiliate's commissions summed by state, in one currency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AffiliateTotals {
    pub earned: Decimal,
    pub held: Decimal,
    pub payable: Decimal,
    /// Matched to payouts that were scheduled or sent.
    pub paid: Decimal,
    pub reversed: Decimal,
    /// Reversed after being paid out, not yet settled from later commissions.
    pub owed: Decimal,
    pub count: u64,
}

/// What a payout run could pay an affiliate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Payable {
    /// Open matured commissions less what the affiliate owes; may be negative.
    pub payable: Decimal,
    /// Open commissions still in their hold or under review.
    pub held: Decimal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutStatus {
    Scheduled,
    Sent,
    Failed,
}

impl PayoutStatus {
    pub fn code(self) -> &'static str {
        match self {
            PayoutStatus::Scheduled => "scheduled",
            PayoutStatus::Sent => "sent",
            PayoutStatus::Failed => "failed",
        }
    }
}

/// One affiliate's payout in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub affiliate: AccountId,
    pub amount: Money,
    pub as_of: DateTime<Utc>,
    pub scheduled_at: DateTime<Utc>,
    pub status: PayoutStatus,
    pub reference: Option<PayoutReference>,
    pub failure: Option<String>,
    /// The commissions it pays: (commission index, amount).
    pub commissions: Vec<(u32, Decimal)>,
    /// Owed reversals it settled (netted against commissions before paying out).
    pub settled_owed: Decimal,
}

/// A completed payout run, as the domain summed it up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub as_of: DateTime<Utc>,
    pub minimum_payout: Money,
    pub payouts: u32,
    pub total: Money,
    pub completed_at: DateTime<Utc>,
}

/// A donation allocation (aggregates only: no user data).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Donation {
    pub organisation: OrganisationId,
    pub net_revenue: Money,
    pub share: Rate,
    pub amount: Money,
    pub allocated_at: DateTime<Utc>,
}

/// A commission plan version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub level_rates: Vec<Rate>,
    pub hold_days: u32,
    pub minimum_payout: Money,
    pub effective_from: DateTime<Utc>,
}

/// An event that contradicts what came before it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommissionError {
    #[error("payment {payment} is not recorded")]
    PaymentNotFound { payment: PaymentId },
    #[error("payment {payment} was recorded twice")]
    DuplicatePayment { payment: PaymentId },
    #[error("no commission of payment {payment} at level {level} for {beneficiary}")]
    CommissionNotFound {
        payment: PaymentId,
        beneficiary: AccountId,
        level: u8,
    },
    #[error("commission of payment {payment} at level {level} is not under review")]
    NotUnderReview { payment: PaymentId, level: u8 },
    #[error("reversal of {amount} does not fit what is left of the commission ({net})")]
    ReversalExceedsCommission { amount: Decimal, net: Decimal },
    #[error("no payout to {affiliate} in {period}")]
    PayoutNotFound {
        period: Period,
        affiliate: AccountId,
    },
    #[error("payout to {affiliate} in {period} was scheduled twice")]
    DuplicatePayout {
        period: Period,
        affiliate: AccountId,
    },
    #[error("payout to {affiliate} in {period} is already {status:?}")]
    PayoutSettled {
        period: Period,
        affiliate: AccountId,
        status: PayoutStatus,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affiliate {
    /// Indexes into the commission list, in the order earned.
    pub commissions: Vec<u32>,
    /// Reversals of paid-out money not yet settled, per currency.
    pub owed: CurrencyAmounts,
    /// Index of the first commission that may still have an open part (FIFO cursor).
    pub cursor: u32,
    /// Sum of `open()` over all its commissions, per currency, kept as they change, so
    /// a payout run need not scan matured history.
    pub open: CurrencyAmounts,
    /// Whether hold ends never decrease along `commissions` (true unless a plan change
    /// shortened the hold): then the unmatured commissions are a suffix of the list.
    pub holds_in_order: bool,
    /// How many of its commissions were held for review: those need a full scan.
    pub reviewed: u32,
    /// When the hold of its latest commission ends, so a new commission is compared
    /// with it without reading that commission's record (two cache misses per commission
    /// at full size, half the time of `earned`). Not in the checkpoint: recomputed when
    /// one is read.
    #[serde(skip)]
    last_hold_until: Option<DateTime<Utc>>,
}

impl Default for Affiliate {
    fn default() -> Self {
        Affiliate {
            commissions: Vec::new(),
            owed: CurrencyAmounts::default(),
            cursor: 0,
            open: CurrencyAmounts::default(),
            holds_in_order: true,
            reviewed: 0,
            last_hold_until: None,
        }
    }
}

impl Affiliate {
    fn adjust_open(&mut self, currency: Currency, delta: Decimal) {
        if delta.is_zero() {
            return;
        }
        let open = self.open.get(currency) + delta;
        self.open.set(currency, open);
    }
}

/// Amounts per currency, in currency order, for one affiliate. Nearly every affiliate has
/// one currency or none, so this is a short list (no allocation while empty) rather than
/// a map with a node per affiliate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CurrencyAmounts(Vec<(Currency, Decimal)>);

impl CurrencyAmounts {
    pub fn get(&self, currency: Currency) -> Decimal {
        self.0
            .iter()
            .find(|(known, _)| *known == currency)
            .map_or(Decimal::ZERO, |(_, amount)| *amount)
    }

    /// Sets the amount of `currency`, removing it when zero.
    pub fn set(&mut self, currency: Currency, amount: Decimal) {
        match self.0.binary_search_by_key(&currency, |(known, _)| *known) {
            Ok(at) if amount.is_zero() => {
                self.0.remove(at);
            }
            Ok(at) => self.0[at].1 = amount,
            Err(_) if amount.is_zero() => {}
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, (currency, amount));
            }
        }
    }

    /// Adds `delta` to the amount of `currency`, keeping the entry even when it is zero.
    pub fn add(&mut self, currency: Currency, delta: Decimal) {
        match self.0.binary_search_by_key(&currency, |(known, _)| *known) {
            Ok(at) => self.0[at].1 += delta,
            Err(at) => {
                self.0.reserve_exact(1);
                self.0.insert(at, (currency, delta));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Currency, Decimal)> + '_ {
        self.0.iter().copied()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Commissions {
    payments: Chunked<PaymentRecord>,
    /// Payment id (by its 64-bit hash) to index into `payments`: the id itself is stored
    /// once, in its record, and a lookup compares it there.
    payment_index: FastMap<u64, u32>,
    /// Payments whose id hashes like an earlier payment's (rare): by the id itself.
    payment_collisions: FastMap<PaymentId, u32>,
    commissions: Chunked<Commission>,
    affiliates: FastMap<AccountId, Affiliate>,
    runs: BTreeMap<Period, BTreeMap<AccountId, Payout>>,
    summaries: BTreeMap<Period, RunSummary>,
    donations: BTreeMap<Period, Vec<Donation>>,
    plans: BTreeMap<PlanVersion, PlanRecord>,
}

impl Commissions {
    pub fn run_completed(&mut self, event: &PayoutRunCompleted) {
        self.summaries.insert(
            event.period,
            RunSummary {
                as_of: event.as_of,
                minimum_payout: event.minimum_payout,
                payouts: event.payouts,
                total: event.total,
                completed_at: event.completed_at,
            },
        );
    }

    /// The domain's summary of the run of `period`, once it completed.
    pub fn run_summary(&self, period: Period) -> Option<&RunSummary> {
        self.summaries.get(&period)
    }

    pub fn payment_received(&mut self, event: &PaymentReceived) -> Result<(), CommissionError> {
        let index = u32::try_from(self.payments.len()).expect("fewer than 2^32 payments");
        // One probe of the index both refuses a duplicate and files the new payment.
        match self.payment_index.entry(id_hash(&event.payment_id)) {
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(index);
            }
            std::collections::hash_map::Entry::Occupied(occupied) => {
                let known = &self.payments[*occupied.get() as usize].payment_id;
                if *known == event.payment_id
                    || self.payment_collisions.contains_key(&event.payment_id)
                {
                    return Err(CommissionError::DuplicatePayment {
                        payment: event.payment_id.clone(),
                    });
                }
                self.payment_collisions
                    .insert(event.payment_id.clone(), index);
            }
        }
        self.payments.push(PaymentRecord {
            payment_id: event.payment_id.clone(),
            payer: event.account_id,
            amount: event.amount,
            received_at: event.received_at,
            refunds: None,
            commissions: PaymentCommissions::default(),
        });
        Ok(())
    }

    /// Files the payment at `index` under its id (when reading a state back).
    fn index_payment(&mut self, payment: &PaymentId, index: u32) {
        match self.payment_index.entry(id_hash(payment)) {
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(index);
            }
            std::collections::hash_map::Entry::Occupied(_) => {
                self.payment_collisions.insert(payment.clone(), index);
            }
        }
    }

    fn lookup_payment(&self, payment: &PaymentId) -> Option<u32> {
        // A payment's commissions are recorded right after it, so the newest payment is
        // the likeliest: checking it first skips a probe of a table of millions.
        let newest = self.payments.len().checked_sub(1)?;
        if self.payments[newest].payment_id == *payment {
            return Some(newest as u32);
        }
        let index = *self.payment_index.get(&id_hash(payment))?;
        if self.payments[index as usize].payment_id == *payment {
            Some(index)
        } else {
            self.payment_collisions.get(payment).copied()
        }
    }

    pub fn refunded(&mut self, event: &PaymentRefunded) -> Result<&PaymentRecord, CommissionError> {
        self.add_refund(
            &event.payment_id,
            RefundRecord {
                refund_id: event.refund_id.clone(),
                amount: event.amount,
                chargeback: false,
                at: event.refunded_at,
            },
        )
    }

    pub fn charged_back(
        &mut self,
        event: &PaymentChargedBack,
    ) -> Result<&PaymentRecord, CommissionError> {
        self.add_refund(
            &event.payment_id,
            RefundRecord {
                refund_id: event.chargeback_id.clone(),
                amount: event.amount,
                chargeback: true,
                at: event.charged_back_at,
            },
        )
    }

    fn add_refund(
        &mut self,
        payment: &PaymentId,
        refund: RefundRecord,
    ) -> Result<&PaymentRecord, CommissionError> {
        let index = self.payment(payment)?;
        let record = &mut self.payments[index as usize];
        record.push_refund(refund);
        Ok(record)
    }

    pub fn earned(&mut self, event: &CommissionEarned) -> Result<(), CommissionError> {
        let payment = self.payment(&event.payment_id)?;
        let index = u32::try_from(self.commissions.len()).expect("fewer than 2^32 commissions");
        let history = (event.held_for_review || !event.review_reasons.is_empty()).then(|| {
            Box::new(CommissionHistory {
                review_reasons: event.review_reasons.clone(),
                ..CommissionHistory::default()
            })
        });
        self.commissions.push(Commission {
            payment,
            plan_version: event.plan_version,
            beneficiary: event.beneficiary,
            payer: event.payer,
            rate: event.rate,
            base_amount: event.base_amount.amount(),
            amount: event.amount.amount(),
            earned_at: event.earned_at,
            hold_until: event.hold_until,
            level: event.level,
            currency: event.amount.currency(),
            held_for_review: event.held_for_review,
            paid_first: None,
            history,
        });
        self.payments[payment as usize].push_commission(index);
        let affiliate = self.affiliates.entry(event.beneficiary).or_default();
        if affiliate
            .last_hold_until
            .is_some_and(|last| last > event.hold_until)
        {
            affiliate.holds_in_order = false;
        }
        affiliate.last_hold_until = Some(event.hold_until);
        affiliate.commissions.push(index);
        affiliate.reviewed += u32::from(event.held_for_review);
        affiliate.adjust_open(event.amount.currency(), event.amount.amount());
        Ok(())
    }

    fn find(
        &self,
        payment_id: &PaymentId,
        beneficiary: AccountId,
        level: u8,
    ) -> Result<u32, CommissionError> {
        let payment = self.payment(payment_id)?;
        self.payments[payment as usize]
            .commissions()
            .find(|index| {
                let commission = &self.commissions[*index as usize];
                commission.beneficiary == beneficiary && commission.level == level
            })
            .ok_or_else(|| CommissionError::CommissionNotFound {
                payment: payment_id.clone(),
                beneficiary,
                level,
            })
    }

    /// A held commission released by review: payable once its hold ends.
    pub fn released(&mut self, event: &CommissionReleased) -> Result<(), CommissionError> {
        let index = self.find(&event.payment_id, event.beneficiary, event.level)?;
        let commission = &mut self.commissions[index as usize];
        if !commission.held_for_review || commission.review().is_some() {
            return Err(CommissionError::NotUnderReview {
                payment: event.payment_id.clone(),
                level: event.level,
            });
        }
        commission.history_mut().review = Some(Review::Released {
            at: event.released_at,
        });
        Ok(())
    }

    /// A held commission forfeited by review: what was left of it taken back.
    pub fn forfeited(&mut self, event: &CommissionForfeited) -> Result<(), CommissionError> {
        let index = self.find(&event.payment_id, event.beneficiary, event.level)?;
        let commission = &mut self.commissions[index as usize];
        if !commission.held_for_review || commission.review().is_some() {
            return Err(CommissionError::NotUnderReview {
                payment: event.payment_id.clone(),
                level: event.level,
            });
        }
        let amount = event.amount.amount();
        // The domain forfeits exactly the remainder; commissions under review are never
        // paid out, so nothing becomes owed.
        if amount != commission.net() {
            return Err(CommissionError::ReversalExceedsCommission {
                amount,
                net: commission.net(),
            });
        }
        let before = commission.open();
        let history = commission.history_mut();
        history.forfeited = amount;
        history.review = Some(Review::Forfeited {
            at: event.forfeited_at,
        });
        let (currency, delta) = (commission.currency(), commission.open() - before);
        self.affiliates
            .entry(event.beneficiary)
            .or_default()
            .adjust_open(currency, delta);
        Ok(())
    }

    pub fn reversed(&mut self, event: &CommissionReversed) -> Result<(), CommissionError> {
        let index = self.find(&event.payment_id, event.beneficiary, event.level)?;
        let commission = &mut self.commissions[index as usize];
        let amount = event.amount.amount();
        let net = commission.net();
        if amount > net {
            return Err(CommissionError::ReversalExceedsCommission { amount, net });
        }
        let open = commission.open();
        commission.history_mut().reversals.push(Reversal {
            refund_id: event.refund_id.clone(),
            amount,
            at: event.reversed_at,
        });
        // Whatever the reversal takes beyond the unpaid part was already paid out: the
        // affiliate owes it back.
        let owed = amount - open.min(amount);
        let (currency, delta) = (commission.currency(), commission.open() - open);
        let affiliate = self.affiliates.entry(event.beneficiary).or_default();
        affiliate.adjust_open(currency, delta);
        if !owed.is_zero() {
            affiliate.owed.add(currency, owed);
        }
        Ok(())
    }

    pub fn plan_published(&mut self, event: &CommissionPlanPublished) {
        self.plans.insert(
            event.version,
            PlanRecord {
                level_rates: event.level_rates.clone(),
                hold_days: event.hold_days,
                minimum_payout: event.minimum_payout,
                effective_from: event.effective_from,
            },
        );
    }

    /// Matches the payout to the affiliate's oldest payable open commissions, first
    /// settling what the affiliate owes.
    pub fn payout_scheduled(&mut self, event: &PayoutScheduled) -> Result<(), CommissionError> {
        let run = self.runs.entry(event.period).or_default();
        if run.contains_key(&event.affiliate) {
            return Err(CommissionError::DuplicatePayout {
                period: event.period,
                affiliate: event.affiliate,
            });
        }
        let currency = event.amount.currency();
        let affiliate = self.affiliates.entry(event.affiliate).or_default();
        let mut to_match = event.amount.amount();
        let mut owed = affiliate.owed.get(currency);
        let settled_before = owed;
        let mut matched = Vec::new();
        let start = affiliate.cursor as usize;
        let mut cursor = start;
        let mut advance_cursor = true;
        let mut open_delta = Decimal::ZERO;
        for position in start..affiliate.commissions.len() {
            if to_match.is_zero() {
                break;
            }
            let index = affiliate.commissions[position];
            let commission = &mut self.commissions[index as usize];
            let open = commission.open();
            if open.is_zero() {
                if advance_cursor {
                    cursor = position + 1;
                }
                continue;
            }
            if commission.currency != currency || !commission.is_payable_at(event.as_of) {
                advance_cursor = false;
                continue;
            }
            // Owed reversals are netted first: that part pays the debt, not the payout.
            let settle = owed.min(open);
            owed -= settle;
            let take = (open - settle).min(to_match);
            let part = settle + take;
            commission.push_paid(event.period, part);
            open_delta += commission.open() - open;
            to_match -= take;
            if take > Decimal::ZERO || settle > Decimal::ZERO {
                matched.push((index, part));
            }
            if commission.open().is_zero() && advance_cursor {
                cursor = position + 1;
            } else {
                advance_cursor = false;
            }
        }
        affiliate.cursor = cursor as u32;
        affiliate.adjust_open(currency, open_delta);
        affiliate.owed.set(currency, owed);
        run.insert(
            event.affiliate,
            Payout {
                affiliate: event.affiliate,
                amount: event.amount,
                as_of: event.as_of,
                scheduled_at: event.scheduled_at,
                status: PayoutStatus::Scheduled,
                reference: None,
                failure: None,
                commissions: matched,
                settled_owed: settled_before - owed,
            },
        );
        Ok(())
    }

    pub fn payout_sent(&mut self, event: &PayoutSent) -> Result<(), CommissionError> {
        let payout = self.scheduled_payout(event.period, event.affiliate)?;
        payout.status = PayoutStatus::Sent;
        payout.reference = Some(event.reference.clone());
        Ok(())
    }

    /// A failed payout's commissions become payable again (and its settled debt owed).
    pub fn payout_failed(&mut self, event: &PayoutFailed) -> Result<(), CommissionError> {
        let payout = self.scheduled_payout(event.period, event.affiliate)?;
        payout.status = PayoutStatus::Failed;
        payout.failure = Some(event.reason.clone());
        let matched = std::mem::take(&mut payout.commissions);
        let settled = payout.settled_owed;
        let currency = payout.amount.currency();
        let affiliate = self.affiliates.entry(event.affiliate).or_default();
        let mut first = affiliate.commissions.len();
        let mut open_delta = Decimal::ZERO;
        for (index, _) in &matched {
            let commission = &mut self.commissions[*index as usize];
            let before = commission.open();
            commission.remove_paid(event.period);
            open_delta += commission.open() - before;
            if let Some(position) = affiliate.commissions.iter().position(|i| i == index) {
                first = first.min(position);
            }
        }
        affiliate.cursor = affiliate.cursor.min(first as u32);
        affiliate.adjust_open(currency, open_delta);
        if !settled.is_zero() {
            affiliate.owed.add(currency, settled);
        }
        Ok(())
    }

    fn scheduled_payout(
        &mut self,
        period: Period,
        affiliate: AccountId,
    ) -> Result<&mut Payout, CommissionError> {
        let payout = self
            .runs
            .get_mut(&period)
            .and_then(|run| run.get_mut(&affiliate))
            .ok_or(CommissionError::PayoutNotFound { period, affiliate })?;
        if payout.status != PayoutStatus::Scheduled {
            return Err(CommissionError::PayoutSettled {
                period,
                affiliate,
                status: payout.status,
            });
        }
        Ok(payout)
    }

    pub fn donation_allocated(&mut self, event: &DonationAllocated) {
        self.donations
            .entry(event.period)
            .or_default()
            .push(Donation {
                organisation: event.organisation.clone(),
                net_revenue: event.net_revenue,
                share: event.share,
                amount: event.amount,
                allocated_at: event.allocated_at,
            });
    }

    fn payment(&self, payment: &PaymentId) -> Result<u32, CommissionError> {
        self.lookup_payment(payment)
            .ok_or_else(|| CommissionError::PaymentNotFound {
                payment: payment.clone(),
            })
    }

    // Queries.

    pub fn payment_record(&self, index: u32) -> &PaymentRecord {
        &self.payments[index as usize]
    }

    pub fn payment_by_id(&self, payment: &PaymentId) -> Option<&PaymentRecord> {
        self.lookup_payment(payment)
            .map(|index| &self.payments[index as usize])
    }

    pub fn payments(&self) -> impl Iterator<Item = &PaymentRecord> {
        self.payments.iter()
    }

    pub fn commission(&self, index: u32) -> &Commission {
        &self.commissions[index as usize]
    }

    pub fn commission_count(&self) -> usize {
        self.commissions.len()
    }

    /// The commissions of one affiliate, in the order earned.
    pub fn of_affiliate(&self, affiliate: &AccountId) -> impl Iterator<Item = (u32, &Commission)> {
        self.affiliates
            .get(affiliate)
            .map(|affiliate| affiliate.commissions.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|index| (*index, &self.commissions[*index as usize]))
    }

    /// One affiliate's totals per currency at `at`, of the commissions earned by then
    /// (with reversals and payouts as known now).
    pub fn affiliate_totals(
        &self,
        affiliate: &AccountId,
        at: DateTime<Utc>,
    ) -> BTreeMap<Currency, AffiliateTotals> {
        let mut totals: BTreeMap<Currency, AffiliateTotals> = BTreeMap::new();
        for (_, commission) in self.of_affiliate(affiliate) {
            let entry = totals.entry(commission.currency()).or_default();
            add_commission(entry, commission, at);
        }
        if let Some(book) = self.affiliates.get(affiliate) {
            for (currency, owed) in book.owed.iter() {
                totals.entry(currency).or_default().owed += owed;
            }
        }
        totals
    }

    /// Every affiliate's totals per currency at `at`, in affiliate order: what a payout run
    /// for a period ending at `at` starts from.
    pub fn all_affiliate_totals(
        &self,
        at: DateTime<Utc>,
    ) -> BTreeMap<(AccountId, Currency), AffiliateTotals> {
        let mut totals: BTreeMap<(AccountId, Currency), AffiliateTotals> = BTreeMap::new();
        let mut per_affiliate: FastMap<(AccountId, Currency), AffiliateTotals> = FastMap::default();
        for commission in self.commissions.iter() {
            let entry = per_affiliate
                .entry((commission.beneficiary, commission.currency()))
                .or_default();
            add_commission(entry, commission, at);
        }
        for (affiliate, book) in &self.affiliates {
            for (currency, owed) in book.owed.iter() {
                per_affiliate
                    .entry((*affiliate, currency))
                    .or_default()
                    .owed += owed;
            }
        }
        totals.extend(per_affiliate);
        totals
    }

    /// What each affiliate could be paid at `at`: per affiliate and currency, the open
    /// part of its matured commissions less what it owes, and the open part still held.
    /// This is a payout run's input; it reads only commissions that may still be open
    /// (from each affiliate's FIFO cursor on), not the whole history.
    pub fn payables_at(&self, at: DateTime<Utc>) -> BTreeMap<(AccountId, Currency), Payable> {
        let mut payables: BTreeMap<(AccountId, Currency), Payable> = BTreeMap::new();
        for (account, affiliate) in &self.affiliates {
            if affiliate.holds_in_order && affiliate.reviewed == 0 && affiliate.open.len() <= 1 {
                // Everything open is payable except a suffix of unmatured commissions:
                // walk back over that suffix only.
                let Some((currency, open_total)) = affiliate.open.iter().next() else {
                    if let Some((currency, owed)) = affiliate.owed.iter().next() {
                        payables.entry((*account, currency)).or_default().payable -= owed;
                    }
                    continue;
                };
                let mut payable = open_total;
                let mut held = Decimal::ZERO;
                for index in affiliate.commissions.iter().rev() {
                    let commission = &self.commissions[*index as usize];
                    if commission.hold_until <= at {
                        break;
                    }
                    let open = commission.open();
                    payable -= open;
                    if commission.earned_at <= at {
                        held += open;
                    }
                }
                let entry = payables.entry((*account, currency)).or_default();
                entry.payable += payable;
                entry.held += held;
                for (currency, owed) in affiliate.owed.iter() {
                    payables.entry((*account, currency)).or_default().payable -= owed;
                }
                continue;
            }
            for index in &affiliate.commissions[affiliate.cursor as usize..] {
                let commission = &self.commissions[*index as usize];
                if commission.earned_at > at {
                    continue;
                }
                let open = commission.open();
                if open.is_zero() {
                    continue;
                }
                let entry = payables
                    .entry((*account, commission.currency()))
                    .or_default();
                if commission.is_payable_at(at) {
                    entry.payable += open;
                } else {
                    entry.held += open;
                }
            }
            for (currency, owed) in affiliate.owed.iter() {
                payables.entry((*account, currency)).or_default().payable -= owed;
            }
        }
        payables
    }

    pub fn runs(&self) -> &BTreeMap<Period, BTreeMap<AccountId, Payout>> {
        &self.runs
    }

    pub fn run(&self, period: Period) -> Option<&BTreeMap<AccountId, Payout>> {
        self.runs.get(&period)
    }

    pub fn donations(&self) -> &BTreeMap<Period, Vec<Donation>> {
        &self.donations
    }

    pub fn plans(&self) -> &BTreeMap<PlanVersion, PlanRecord> {
        &self.plans
    }

    /// The plan in force at `at`: the latest version whose effective date has come.
    pub fn plan_at(&self, at: DateTime<Utc>) -> Option<(PlanVersion, &PlanRecord)> {
        self.plans
            .iter()
            .filter(|(_, plan)| plan.effective_from <= at)
            .max_by_key(|(version, plan)| (plan.effective_from, **version))
            .map(|(version, plan)| (*version, plan))
    }

    pub fn to_state(&self) -> CommissionsState {
        let mut affiliates: Vec<(AccountId, Affiliate)> = self
            .affiliates
            .iter()
            .map(|(account, affiliate)| (*account, affiliate.clone()))
            .collect();
        affiliates.sort_unstable_by_key(|(account, _)| *account);
        CommissionsState {
            payments: self.payments.clone(),
            commissions: self.commissions.clone(),
            affiliates,
            runs: self.runs.clone(),
            summaries: self.summaries.clone(),
            donations: self.donations.clone(),
            plans: self.plans.clone(),
        }
    }

    /// Serializes exactly as [`Commissions::to_state`] does, borrowing the live
    /// structures (the affiliates sorted through a list of references) instead of copying
    /// them.
    pub fn state_serializer(&self) -> impl Serialize + '_ {
        let mut affiliates: Vec<(&AccountId, &Affiliate)> = self.affiliates.iter().collect();
        affiliates.sort_unstable_by_key(|(account, _)| **account);
        #[derive(Serialize)]
        struct CommissionsStateRef<'a> {
            payments: &'a Chunked<PaymentRecord>,
            commissions: &'a Chunked<Commission>,
            affiliates: Vec<(&'a AccountId, &'a Affiliate)>,
            runs: &'a BTreeMap<Period, BTreeMap<AccountId, Payout>>,
            summaries: &'a BTreeMap<Period, RunSummary>,
            donations: &'a BTreeMap<Period, Vec<Donation>>,
            plans: &'a BTreeMap<PlanVersion, PlanRecord>,
        }
        CommissionsStateRef {
            payments: &self.payments,
            commissions: &self.commissions,
            affiliates,
            runs: &self.runs,
            summaries: &self.summaries,
            donations: &self.donations,
            plans: &self.plans,
        }
    }

    pub fn from_state(state: CommissionsState) -> Commissions {
        let mut commissions = Commissions {
            payments: state.payments,
            payment_index: FastMap::default(),
            payment_collisions: FastMap::default(),
            commissions: state.commissions,
            affiliates: state.affiliates.into_iter().collect(),
            runs: state.runs,
            summaries: state.summaries,
            donations: state.donations,
            plans: state.plans,
        };
        for affiliate in commissions.affiliates.values_mut() {
            affiliate.last_hold_until = affiliate
                .commissions
                .last()
                .map(|last| commissions.commissions[*last as usize].hold_until);
        }
        for index in 0..commissions.payments.len() {
            let payment = commissions.payments[index].payment_id.clone();
            commissions.index_payment(&payment, index as u32);
        }
        commissions
    }
}

/// The 64-bit hash a payment id is indexed by.
fn id_hash(payment: &PaymentId) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<crate::hash::FastHasher>::default().hash_one(payment.as_str())
}

/// Elements a [`Chunked`] list holds per chunk.
const CHUNK_ELEMENTS: usize = 1 << 16;

/// A growing list stored in fixed-size chunks: growing it never copies what it holds,
/// so a list of millions of records does not need twice its size while it reallocates
/// (which was most of the rebuild's peak memory).
#[derive(Clone, Debug)]
pub struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, value: T) {
        if self.len.is_multiple_of(CHUNK_ELEMENTS) {
            self.chunks.push(Vec::with_capacity(CHUNK_ELEMENTS));
        }
        self.chunks
            .last_mut()
            .expect("a chunk was just ensured")
            .push(value);
        self.len += 1;
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> std::ops::Index<usize> for Chunked<T> {
    type Output = T;
    fn index(&self, index: usize) -> &T {
        &self.chunks[index / CHUNK_ELEMENTS][index % CHUNK_ELEMENTS]
    }
}

impl<T> std::ops::IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.chunks[index / CHUNK_ELEMENTS][index % CHUNK_ELEMENTS]
    }
}

/// As the list of its elements. Read back chunk by chunk: a checkpoint's millions of
/// records never sit in one `Vec` that then has to be copied into chunks.
impl<T: Serialize> Serialize for Chunked<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SeqOf::new(self.len, || self.iter()).serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Chunked<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChunkedVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ChunkedVisitor<T> {
            type Value = Chunked<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Chunked<T>, A::Error> {
                let mut chunked = Chunked::default();
                while let Some(value) = seq.next_element()? {
                    chunked.push(value);
                }
                Ok(chunked)
            }
        }
        deserializer.deserialize_seq(ChunkedVisitor(std::marker::PhantomData))
    }
}

impl<T> FromIterator<T> for Chunked<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut chunked = Chunked::default();
        for value in values {
            chunked.push(value);
        }
        chunked
    }
}

/// Adds a commission earned by `at` (later ones are left out) to `totals`.
fn add_commission(totals: &mut AffiliateTotals, commission: &Commission, at: DateTime<Utc>) {
    if commission.earned_at > at {
        return;
    }
    totals.count += 1;
    totals.earned += commission.amount;
    totals.reversed += commission.reversed();
    totals.paid += commission.matched();
    let open = commission.open();
    if commission.is_payable_at(at) {
        totals.payable += open;
    } else {
        totals.held += open;
    }
}

#[derive(Serialize, Deserialize)]
pub struct CommissionsState {
    payments: Chunked<PaymentRecord>,
    commissions: Chunked<Commission>,
    affiliates: Vec<(AccountId, Affiliate)>,
    runs: BTreeMap<Period, BTreeMap<AccountId, Payout>>,
    summaries: BTreeMap<Period, RunSummary>,
    donations: BTreeMap<Period, Vec<Donation>>,
    plans: BTreeMap<PlanVersion, PlanRecord>,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use ledger::domain::events::PaymentKind;
    use ledger::domain::Credits;

    use super::*;
    use crate::rng::SplitMix64;

    fn at(month: u32, day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, month, day, 0, 0, 0).unwrap()
    }

    fn eur(cents: i64) -> Money {
        Money::new(Decimal::new(cents, 2), Currency::EUR).unwrap()
    }

    struct Book {
        commissions: Commissions,
        affiliate: AccountId,
        payer: AccountId,
    }

    impl Book {
        fn new() -> Book {
            let mut rng = SplitMix64::new(9);
            Book {
                commissions: Commissions::default(),
                affiliate: AccountId::new(rng.uuid()).unwrap(),
                payer: AccountId::new(rng.uuid()).unwrap(),
            }
        }

        /// A payment of ten times `cents` earning a 10% commission of `cents`.
        fn earn(&mut self, payment: &str, cents: i64, day: DateTime<Utc>) {
            let payment_id = PaymentId::parse(payment).unwrap();
            self.commissions
                .payment_received(&PaymentReceived {
                    payment_id: payment_id.clone(),
                    account_id: self.payer,
                    kind: PaymentKind::CreditPack {
                        credits: Credits::new(1).unwrap(),
                    },
                    amount: eur(cents * 10),
                    payment_fingerprint: None,
                    received_at: day,
                })
                .unwrap();
            self.commissions
                .earned(&CommissionEarned {
                    payment_id,
                    beneficiary: self.affiliate,
                    payer: self.payer,
                    level: 1,
                    rate: Rate::parse("0.1").unwrap(),
                    plan_version: PlanVersion::FIRST,
                    base_amount: eur(cents * 10),
                    amount: eur(cents),
                    rounding: Decimal::ZERO,
                    earned_at: day,
                    hold_until: day + chrono::Duration::days(30),
                    held_for_review: false,
                    review_reasons: Vec::new(),
                })
                .unwrap();
        }

        fn schedule(&mut self, period: Period, cents: i64) {
            self.commissions
                .payout_scheduled(&PayoutScheduled {
                    period,
                    affiliate: self.affiliate,
                    amount: eur(cents),
                    as_of: period.end(),
                    scheduled_at: period.end(),
                })
                .unwrap();
        }

        fn totals(&self, at: DateTime<Utc>) -> AffiliateTotals {
            self.commissions.affiliate_totals(&self.affiliate, at)[&Currency::EUR]
        }
    }

    #[test]
    fn a_chunked_list_encodes_like_a_vec_and_reads_back_in_chunks() {
        let values: Vec<u32> = (0..(2 * CHUNK_ELEMENTS as u32 + 17)).collect();
        let chunked: Chunked<u32> = values.iter().copied().collect();
        let bytes = rmp_serde::to_vec(&chunked).expect("encode");
        assert_eq!(bytes, rmp_serde::to_vec(&values).expect("encode"));
        let back: Chunked<u32> = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back.len(), values.len());
        assert_eq!(back.chunks.len(), 3);
        assert!(back.iter().eq(values.iter()));
    }

    #[test]
    fn payouts_pay_the_oldest_payable_commissions_and_clawbacks_of_paid_money_are_owed() {
        let mut book = Book::new();
        let (january, march) = (Period::new(2026, 1).unwrap(), Period::new(2026, 3).unwrap());
        book.earn("pi_1", 2000, at(1, 1));
        book.earn("pi_2", 3000, at(1, 20));
        // At the end of January only the first has matured.
        let totals = book.totals(january.end());
        assert_eq!(
            (totals.payable, totals.held),
            (eur(2000).amount(), eur(3000).amount())
        );
        book.schedule(january, 2000);
        let first = book.commissions.commission(0);
        assert_eq!(first.status_at(january.end()), CommissionStatus::Paid);
        assert_eq!(
            book.commissions.commission(1).status_at(january.end()),
            CommissionStatus::Held
        );

        // The first payment is refunded in full after it was paid out: 20.00 owed.
        book.commissions
            .reversed(&CommissionReversed {
                payment_id: PaymentId::parse("pi_1").unwrap(),
                beneficiary: book.affiliate,
                level: 1,
                refund_id: RefundId::parse("re_1").unwrap(),
                amount: eur(2000),
                rounding: Decimal::ZERO,
                reversed_at: at(2, 10),
            })
            .unwrap();
        let totals = book.totals(at(3, 1));
        assert_eq!(totals.owed, eur(2000).amount());
        assert_eq!(
            book.commissions.commission(0).status_at(at(3, 1)),
            CommissionStatus::Reversed
        );

        // March's run pays 10.00: the 30.00 commission settles the 20.00 owed first.
        book.schedule(march, 1000);
        let payout = &book.commissions.run(march).unwrap()[&book.affiliate];
        assert_eq!(payout.settled_owed, eur(2000).amount());
        assert_eq!(payout.commissions, vec![(1, eur(3000).amount())]);
        assert_eq!(book.totals(march.end()).owed, Decimal::ZERO);

        let payables = book.commissions.payables_at(march.end());
        let totals = book.totals(march.end());
        let payable = payables
            .get(&(book.affiliate, Currency::EUR))
            .copied()
            .unwrap_or_default();
        assert_eq!(payable.payable, totals.payable - totals.owed);
        assert_eq!(payable.held, totals.held);

        // The payout fails: the commission is payable again and the debt is back.
        book.commissions
            .payout_failed(&PayoutFailed {
                period: march,
                affiliate: book.affiliate,
                amount: eur(1000),
                reason: "closed".to_owned(),
                failed_at: march.end(),
            })
            .unwrap();
        let totals = book.totals(march.end());
        assert_eq!(
            (totals.payable, totals.owed),
            (eur(3000).amount(), eur(2000).amount())
        );
        assert!(matches!(
            book.commissions.payout_sent(&PayoutSent {
                period: march,
                affiliate: book.affiliate,
                amount: eur(1000),
                reference: PayoutReference::parse("po_1").unwrap(),
                sent_at: march.end(),
            }),
            Err(CommissionError::PayoutSettled { .. })
        ));
    }

    #[test]
    fn payment_ids_whose_hashes_collide_are_still_told_apart() {
        let mut book = Book::new();
        book.earn("pi_a", 100, at(1, 1));
        // Pretend "pi_b" hashes like "pi_a": file its hash under pi_a's index.
        let b = PaymentId::parse("pi_b").unwrap();
        book.commissions.payment_index.insert(id_hash(&b), 0);
        book.earn("pi_b", 200, at(1, 2));
        assert_eq!(book.commissions.payment_collisions.len(), 1);
        // A later payment, so neither is found as the newest.
        book.earn("pi_c", 300, at(1, 3));
        for (id, cents) in [("pi_a", 1000), ("pi_b", 2000), ("pi_c", 3000)] {
            let record = book
                .commissions
                .payment_by_id(&PaymentId::parse(id).unwrap())
                .unwrap_or_else(|| panic!("{id} is found"));
            assert_eq!(record.amount, eur(cents), "{id}");
        }
        // Both the first holder of the hash and the colliding id are refused a second time.
        for id in ["pi_a", "pi_b"] {
            let again = book.commissions.payment_received(&PaymentReceived {
                payment_id: PaymentId::parse(id).unwrap(),
                account_id: book.payer,
                kind: PaymentKind::CreditPack {
                    credits: Credits::new(1).unwrap(),
                },
                amount: eur(1),
                payment_fingerprint: None,
                received_at: at(1, 5),
            });
            assert!(
                matches!(again, Err(CommissionError::DuplicatePayment { .. })),
                "{id}: {again:?}"
            );
        }
        // A state read back indexes the same way.
        let restored = Commissions::from_state(book.commissions.to_state());
        assert!(restored.payment_by_id(&b).is_some());
    }

    #[test]
    fn a_failed_payout_unmatches_only_its_own_part_of_a_commission() {
        let mut book = Book::new();
        book.earn("pi_1", 3000, at(1, 1));
        let (february, march) = (Period::new(2026, 2).unwrap(), Period::new(2026, 3).unwrap());
        // Two payouts pay the one commission in two parts.
        book.schedule(february, 1000);
        book.schedule(march, 1500);
        let paid: Vec<_> = book.commissions.commission(0).paid_by().collect();
        assert_eq!(
            paid,
            vec![(february, eur(1000).amount()), (march, eur(1500).amount())]
        );
        book.commissions
            .payout_failed(&PayoutFailed {
                period: february,
                affiliate: book.affiliate,
                amount: eur(1000),
                reason: "closed".to_owned(),
                failed_at: march.end(),
            })
            .unwrap();
        let commission = book.commissions.commission(0);
        assert_eq!(
            commission.paid_by().collect::<Vec<_>>(),
            vec![(march, eur(1500).amount())]
        );
        assert_eq!(commission.open(), eur(1500).amount());
    }

    #[test]
    fn a_payment_whose_commissions_are_not_consecutive_lists_them() {
        let mut record = PaymentRecord {
            payment_id: PaymentId::parse("pi_1").unwrap(),
            payer: AccountId::new(SplitMix64::new(1).uuid()).unwrap(),
            amount: eur(100),
            received_at: at(1, 1),
            refunds: None,
            commissions: PaymentCommissions::default(),
        };
        assert_eq!(record.commissions().count(), 0);
        for index in [4, 5, 9, 10] {
            record.push_commission(index);
        }
        assert_eq!(record.commissions().collect::<Vec<_>>(), vec![4, 5, 9, 10]);
        assert!(matches!(record.commissions, PaymentCommissions::Listed(_)));
    }
}
