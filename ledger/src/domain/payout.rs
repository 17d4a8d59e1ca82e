//! Payable balances and payout runs.
//!
//! A commission becomes payable when its hold ends, unless it is held for review; a
//! clawback reduces it whenever it happens, so a clawback of a commission already paid
//! out leaves the affiliate with a negative payable balance that later commissions net
//! off. A payout run for a period pays every affiliate whose payable balance at the run's
//! as-of time reaches the plan's minimum and carries smaller balances over.
//!
//! All runs live in one stream, `payouts`, appended at its exact revision: runs are
//! serialized, each sees every payout before it, and a period is run once. The balances a
//! run pays come from [`PayableBook`], a fold over the whole log that the caller passes in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::events::{DomainEvent, PayoutFailed, PayoutRunCompleted, PayoutScheduled, PayoutSent};
use super::ids::{AccountId, PaymentId, PayoutReference};
use super::money::{Currency, Money};
use super::period::Period;
use super::Rejection;
use crate::store::EVENTS_PER_APPEND_MAX;

/// Most affiliates one run pays: the run and its completion are one append.
pub const PAYOUTS_PER_RUN_MAX: usize = EVENTS_PER_APPEND_MAX - 1;
/// Longest payout failure reason, in bytes.
pub const FAILURE_REASON_LENGTH_MAX: usize = super::events::REASON_LENGTH_MAX;

// The run's completion event takes one more slot of the append.
const _: () = assert!(PAYOUTS_PER_RUN_MAX < EVENTS_PER_APPEND_MAX);

/// What an affiliate is owed at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AffiliateBalance {
    /// Matured commissions net of clawbacks, minus payouts not failed. May be negative.
    pub payable: Money,
    /// Commissions still in their hold, net of clawbacks.
    pub pending: Money,
    /// Commissions held for review, net of clawbacks.
    pub held_for_review: Money,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct CommissionEntry {
    beneficiary: AccountId,
    amount: Money,
    earned_at: DateTime<Utc>,
    hold_until: DateTime<Utc>,
    held_for_review: bool,
    /// When a review released it.
    released_at: Option<DateTime<Utc>>,
    /// Clawbacks and a forfeit, with when they happened.
    reversals: Vec<(DateTime<Utc>, Money)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PayoutEntry {
    amount: Money,
    as_of: DateTime<Utc>,
    failed_at: Option<DateTime<Utc>>,
}

/// Every commission, clawback and payout, folded from the log in order: the source of
/// payable balances at any instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayableBook {
    currency: Currency,
    commissions: BTreeMap<(PaymentId, u8), CommissionEntry>,
    payouts: BTreeMap<(Period, AccountId), PayoutEntry>,
}

impl PayableBook {
    pub fn new(currency: Currency) -> PayableBook {
        PayableBook {
            currency,
            commissions: BTreeMap::new(),
            payouts: BTreeMap::new(),
        }
    }

    pub fn evolve(mut self, event: &DomainEvent) -> PayableBook {
        self.apply(event);
        self
    }

    pub fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::CommissionEarned(earned) => {
                let previous = self.commissions.insert(
                    (earned.payment_id.clone(), earned.level),
                    CommissionEntry {
                        beneficiary: earned.beneficiary,
                        amount: earned.amount,
                        earned_at: earned.earned_at,
                        hold_until: earned.hold_until,
                        held_for_review: earned.held_for_review,
                        released_at: None,
                        reversals: Vec::new(),
                    },
                );
                assert!(
                    previous.is_none(),
                    "a payment earns one commission per level"
                );
            }
            DomainEvent::CommissionReversed(reversed) => {
                self.commissions
                    .get_mut(&(reversed.payment_id.clone(), reversed.level))
                    .expect("a clawback follows its commission in the log")
                    .reversals
                    .push((reversed.reversed_at, reversed.amount));
            }
            DomainEvent::CommissionReleased(released) => {
                self.commissions
                    .get_mut(&(released.payment_id.clone(), released.level))
                    .expect("a release follows its commission in the log")
                    .released_at = Some(released.released_at);
            }
            DomainEvent::CommissionForfeited(forfeited) => {
                self.commissions
                    .get_mut(&(forfeited.payment_id.clone(), forfeited.level))
                    .expect("a forfeit follows its commission in the log")
                    .reversals
                    .push((forfeited.forfeited_at, forfeited.amount));
            }
            DomainEvent::PayoutScheduled(scheduled) => {
                let previous = self.payouts.insert(
                    (scheduled.period, scheduled.affiliate),
                    PayoutEntry {
                        amount: scheduled.amount,
                        as_of: scheduled.as_of,
                        failed_at: None,
                    },
                );
                assert!(previous.is_none(), "an affiliate is paid once per period");
            }
            DomainEvent::PayoutFailed(failed) => {
                let entry = self
                    .payouts
                    .get_mut(&(failed.period, failed.affiliate))
                    .expect("a failure follows its payout in the log");
                entry.failed_at = Some(failed.failed_at);
            }
            _ => {}
        }
    }

    /// Every affiliate's balance at `as_of`, from the events dated at or before it.
    pub fn balances_at(&self, as_of: DateTime<Utc>) -> BTreeMap<AccountId, AffiliateBalance> {
        let zero = Money::zero(self.currency);
        let mut balances: BTreeMap<AccountId, AffiliateBalance> = BTreeMap::new();
        let add = |sum: &mut Money, amount: Money| {
            *sum = sum
                .checked_add(&amount)
                .expect("the book holds one currency");
        };
        for entry in self.commissions.values() {
            if entry.earned_at > as_of {
                continue;
            }
            let mut net = entry.amount;
            for (at, amount) in &entry.reversals {
                if *at <= as_of {
                    net = net
                        .checked_sub(amount)
                        .expect("the book holds one currency");
                }
            }
            let balance = balances
                .entry(entry.beneficiary)
                .or_insert(AffiliateBalance {
                    payable: zero,
                    pending: zero,
                    held_for_review: zero,
                });
            let released = entry.released_at.is_some_and(|at| at <= as_of);
            if entry.held_for_review && !released {
                add(&mut balance.held_for_review, net);
            } else if entry.hold_until <= as_of {
                add(&mut balance.payable, net);
            } else {
                add(&mut balance.pending, net);
            }
        }
        for ((_, affiliate), payout) in &self.payouts {
            let failed = payout.failed_at.is_some_and(|at| at <= as_of);
            if payout.as_of <= as_of && !failed {
                let balance = balances.entry(*affiliate).or_insert(AffiliateBalance {
                    payable: zero,
                    pending: zero,
                    held_for_review: zero,
                });
                balance.payable = balance
                    .payable
                    .checked_sub(&payout.amount)
                    .expect("one currency");
            }
        }
        balances
    }
}

/// The `payouts` stream: every run, and how each payout settled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PayoutsState {
    pub runs: BTreeMap<Period, PayoutRunCompleted>,
    pub payouts: BTreeMap<(Period, AccountId), Payout>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payout {
    pub scheduled: PayoutScheduled,
    pub settlement: Option<DomainEvent>,
}

/// Run the payouts of a period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPayouts {
    pub period: Period,
    /// The instant balances are taken at: at or after the period's end.
    pub as_of: DateTime<Utc>,
    pub run_at: DateTime<Utc>,
}

/// What a run needs from other streams: balances at the run's as-of time (from a
/// [`PayableBook`] that includes every earlier run) and the plan's minimum then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayoutContext {
    pub balances: BTreeMap<AccountId, AffiliateBalance>,
    pub minimum_payout: Money,
}

/// How a payout ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settlement {
    Sent { reference: PayoutReference },
    Failed { reason: String },
}

/// Record how one payout settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlePayout {
    pub period: Period,
    pub affiliate: AccountId,
    pub settlement: Settlement,
    pub settled_at: DateTime<Utc>,
}

pub fn decide_run(
    state: &PayoutsState,
    context: &PayoutContext,
    command: &RunPayouts,
) -> Result<Vec<DomainEvent>, Rejection> {
    if let Some(run) = state.runs.get(&command.period) {
        // Running a period again pays nobody again.
        return if run.as_of == command.as_of {
            Ok(Vec::new())
        } else {
            Err(Rejection::PayoutRunExists {
                period: command.period,
            })
        };
    }
    if command.as_of < command.period.end() || command.as_of > command.run_at {
        return Err(Rejection::PayoutRunTooEarly {
            period: command.period,
        });
    }
    if let Some((last_period, last_run)) = state.runs.last_key_value() {
        if command.period < *last_period || command.as_of < last_run.as_of {
            return Err(Rejection::PayoutRunOutOfOrder {
                last_period: *last_period,
                last_as_of: last_run.as_of,
            });
        }
    }
    let minimum = context.minimum_payout;
    let mut total = Money::zero(minimum.currency());
    let mut events = Vec::new();
    for (affiliate, balance) in &context.balances {
        let reaches =
            balance
                .payable
                .checked_cmp(&minimum)
                .map_err(|_| Rejection::CurrencyMismatch {
                    expected: minimum.currency(),
                    actual: balance.payable.currency(),
                })?;
        if reaches == std::cmp::Ordering::Less || !balance.payable.is_positive() {
            continue;
        }
        total = total.checked_add(&balance.payable).expect("one currency");
        events.push(DomainEvent::PayoutScheduled(PayoutScheduled {
            period: command.period,
            affiliate: *affiliate,
            amount: balance.payable,
            as_of: command.as_of,
            scheduled_at: command.run_at,
        }));
    }
    if events.len() > PAYOUTS_PER_RUN_MAX {
        return Err(Rejection::TooManyPayouts {
            payouts_max: PAYOUTS_PER_RUN_MAX,
        });
    }
    let payouts = u32::try_from(events.len()).expect("bounded by PAYOUTS_PER_RUN_MAX");
    events.push(DomainEvent::PayoutRunCompleted(PayoutRunCompleted {
        period: command.period,
        as_of: command.as_of,
        minimum_payout: minimum,
        payouts,
        total,
        completed_at: command.run_at,
    }));
    Ok(events)
}

pub fn decide_settle(
    state: &PayoutsState,
    command: &SettlePayout,
) -> Result<Vec<DomainEvent>, Rejection> {
    let Some(payout) = state.payouts.get(&(command.period, command.affiliate)) else {
        return Err(Rejection::PayoutNotFound {
            period: command.period,
            affiliate: command.affiliate,
        });
    };
    let scheduled = &payout.scheduled;
    let event = match &command.settlement {
        Settlement::Sent { reference } => DomainEvent::PayoutSent(PayoutSent {
            period: command.period,
            affiliate: command.affiliate,
            amount: scheduled.amount,
            reference: reference.clone(),
            sent_at: command.settled_at,
        }),
        Settlement::Failed { reason } => {
            let reason = reason.trim();
            if reason.is_empty() || reason.len() > FAILURE_REASON_LENGTH_MAX {
                return Err(Rejection::InvalidValue(super::ValueError::new(
                    "reason",
                    format!("a failure reason is 1 to {FAILURE_REASON_LENGTH_MAX} bytes"),
                )));
            }
            DomainEvent::PayoutFailed(PayoutFailed {
                period: command.period,
                affiliate: command.affiliate,
                amount: scheduled.amount,
                reason: reason.to_owned(),
                failed_at: command.settled_at,
            })
        }
    };
    match &payout.settlement {
        None => Ok(vec![event]),
        Some(settled) if same_settlement(settled, &event) => Ok(Vec::new()),
        Some(_) => Err(Rejection::PayoutAlreadySettled {
            period: command.period,
            affiliate: command.affiliate,
        }),
    }
}

/// The same outcome again (a retried callback), whatever its timestamp.
fn same_settlement(settled: &DomainEvent, event: &DomainEvent) -> bool {
    match (settled, event) {
        (DomainEvent::PayoutSent(a), DomainEvent::PayoutSent(b)) => a.reference == b.reference,
        (DomainEvent::PayoutFailed(a), DomainEvent::PayoutFailed(b)) => a.reason == b.reason,
        _ => false,
    }
}

pub fn evolve(mut state: PayoutsState, event: &DomainEvent) -> PayoutsState {
    match event {
        DomainEvent::PayoutScheduled(scheduled) => {
            assert!(
                !state.runs.contains_key(&scheduled.period),
                "payouts precede their run's completion"
            );
            let previous = state.payouts.insert(
                (scheduled.period, scheduled.affiliate),
                Payout {
                    scheduled: scheduled.clone(),
                    settlement: None,
                },
            );
            assert!(previous.is_none(), "an affiliate is paid once per period");
        }
        DomainEvent::PayoutRunCompleted(completed) => {
            let previous = state.runs.insert(completed.period, completed.clone());
            assert!(previous.is_none(), "a period is run once");
        }
        DomainEvent::PayoutSent(PayoutSent {
            period, affiliate, ..
        })
        | DomainEvent::PayoutFailed(PayoutFailed {
            period, affiliate, ..
        }) => {
            let payout = state
                .payouts
                .get_mut(&(*period, *affiliate))
                .expect("a settlement follows its payout");
            assert!(payout.settlement.is_none(), "a payout settles once");
            payout.settlement = Some(event.clone());
        }
        _ => {}
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{CommissionEarned, CommissionReversed};
    use crate::domain::ids::RefundId;
    use crate::domain::money::Rate;
    use crate::domain::plan::PlanVersion;
    use crate::domain::scenario::account_id;
    use crate::domain::scenario::{at, eur, Given};

    fn earned(
        payment: &str,
        beneficiary: u8,
        amount: &str,
        when: &str,
        hold_until: &str,
        review: bool,
    ) -> DomainEvent {
        DomainEvent::CommissionEarned(CommissionEarned {
            payment_id: PaymentId::parse(payment).unwrap(),
            beneficiary: account_id(beneficiary),
            payer: account_id(99),
            level: 1,
            rate: Rate::parse("0.2").unwrap(),
            plan_version: PlanVersion::FIRST,
            base_amount: eur("1000.00"),
            amount: eur(amount),
            rounding: rust_decimal::Decimal::ZERO,
            earned_at: at(when),
            hold_until: at(hold_until),
            held_for_review: review,
            review_reasons: vec![],
        })
    }

    fn reversed(payment: &str, beneficiary: u8, amount: &str, when: &str) -> DomainEvent {
        DomainEvent::CommissionReversed(CommissionReversed {
            payment_id: PaymentId::parse(payment).unwrap(),
            beneficiary: account_id(beneficiary),
            level: 1,
            refund_id: RefundId::parse("re_1").unwrap(),
            amount: eur(amount),
            rounding: rust_decimal::Decimal::ZERO,
            reversed_at: at(when),
        })
    }

    fn book(events: &[DomainEvent]) -> PayableBook {
        events
            .iter()
            .fold(PayableBook::new(Currency::EUR), PayableBook::evolve)
    }

    fn run(period: &str, as_of: &str) -> RunPayouts {
        RunPayouts {
            period: Period::parse(period).unwrap(),
            as_of: at(as_of),
            run_at: at(as_of),
        }
    }

    fn context(book: &PayableBook, as_of: &str) -> PayoutContext {
        PayoutContext {
            balances: book.balances_at(at(as_of)),
            minimum_payout: eur("50.00"),
        }
    }

    fn given(events: Vec<DomainEvent>) -> Given<PayoutsState> {
        Given::new(PayoutsState::default(), evolve, events)
    }

    fn scheduled(events: &[DomainEvent]) -> Vec<(AccountId, Money)> {
        events
            .iter()
            .filter_map(|e| match e {
                DomainEvent::PayoutScheduled(p) => Some((p.affiliate, p.amount)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn commissions_become_payable_after_their_hold_unless_held_for_review() {
        let book = book(&[
            earned(
                "pi_1",
                1,
                "60.00",
                "2026-10-01T00:00:00Z",
                "2026-10-31T00:00:00Z",
                false,
            ),
            earned(
                "pi_2",
                1,
                "10.00",
                "2026-10-15T00:00:00Z",
                "2026-11-14T00:00:00Z",
                false,
            ),
            earned(
                "pi_3",
                1,
                "70.00",
                "2026-10-15T00:00:00Z",
                "2026-11-14T00:00:00Z",
                true,
            ),
        ]);
        let balance = book.balances_at(at("2026-11-01T00:00:00Z"))[&account_id(1)];
        assert_eq!(balance.payable, eur("60.00"));
        assert_eq!(balance.pending, eur("10.00"));
        assert_eq!(balance.held_for_review, eur("70.00"));
        assert!(!book
            .balances_at(at("2026-09-30T00:00:00Z"))
            .contains_key(&account_id(1)));
    }

    #[test]
    fn a_released_commission_is_payable_and_a_forfeited_one_is_gone() {
        let release = DomainEvent::CommissionReleased(crate::domain::events::CommissionReleased {
            payment_id: PaymentId::parse("pi_1").unwrap(),
            beneficiary: account_id(1),
            level: 1,
            released_at: at("2026-11-05T00:00:00Z"),
        });
        let forfeit =
            DomainEvent::CommissionForfeited(crate::domain::events::CommissionForfeited {
                payment_id: PaymentId::parse("pi_2").unwrap(),
                beneficiary: account_id(1),
                level: 1,
                amount: eur("30.00"),
                forfeited_at: at("2026-11-05T00:00:00Z"),
            });
        let book = book(&[
            earned(
                "pi_1",
                1,
                "70.00",
                "2026-10-01T00:00:00Z",
                "2026-10-31T00:00:00Z",
                true,
            ),
            earned(
                "pi_2",
                1,
                "30.00",
                "2026-10-01T00:00:00Z",
                "2026-10-31T00:00:00Z",
                true,
            ),
            release,
            forfeit,
        ]);
        let before = book.balances_at(at("2026-11-04T00:00:00Z"))[&account_id(1)];
        assert_eq!(
            (before.payable, before.held_for_review),
            (eur("0.00"), eur("100.00"))
        );
        let after = book.balances_at(at("2026-11-05T00:00:00Z"))[&account_id(1)];
        assert_eq!(
            (after.payable, after.held_for_review),
            (eur("70.00"), eur("0.00"))
        );
    }

    #[test]
    fn a_run_pays_balances_that_reach_the_minimum_and_carries_the_rest_over() {
        let history = [
            earned(
                "pi_1",
                1,
                "60.00",
                "2026-10-01T00:00:00Z",
                "2026-10-31T00:00:00Z",
                false,
            ),
            earned(
                "pi_2",
                2,
                "49.99",
                "2026-10-01T00:00:00Z",
                "2026-10-31T00:00:00Z",
                false,
            ),
        ];
        let mut all = history.to_vec();
        let book1 = book(&all);
        let events = given(vec![])
            .when(|s| {
                decide_run(
                    s,
                    &context(&book1, "2026-11-01T00:00:00Z"),
                    &run("2026-10", "2026-11-01T00:00:00Z"),
                )
            })
            .then_ok();
        assert_eq!(scheduled(&events), vec![(account_id(1), eur("60.00"))]);
        let DomainEvent::PayoutRunCompleted(done) = events.last().unwrap() else {
            panic!()
        };
        assert_eq!((done.payouts, done.total), (1, eur("60.00")));
        all.extend(events.clone());
        // Next month, affiliate 2's carried balance plus a new commission reaches the minimum;
        // affiliate 1 is not paid again for what was already paid.
        all.push(earned(
            "pi_3",
            2,
            "0.01",
            "2026-11-02T00:00:00Z",
            "2026-11-20T00:00:00Z",
            false,
        ));
        let book2 = book(&all);
        let next = given(events)
            .when(|s| {
                decide_run(
                    s,
                    &context(&book2, "2026-12-01T00:00:00Z"),
                    &run("2026-11", "2026-12-01T00:00:00Z"),
                )
            })
            .then_ok();
        assert_eq!(scheduled(&next), vec![(account_id(2), eur("50.00"))]);
    }

    #[test]
    fn a_run_pays_a_bounded_number_of_affiliates() {
        let balance = AffiliateBalance {
            payable: eur("50.00"),
            pending: eur("0.00"),
            held_for_review: eur("0.00"),
        };
        let affiliate =
            |n: usize| AccountId::parse(&format!("00000000-0000-4000-8000-{n:012x}")).unwrap();
        let mut context = PayoutContext {
            balances: (0..PAYOUTS_PER_RUN_MAX)
                .map(|n| (affiliate(n), balance))
                .collect(),
            minimum_payout: eur("50.00"),
        };
        let events = decide_run(
            &PayoutsState::default(),
            &context,
            &run("2026-10", "2026-11-01T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(events.len(), PAYOUTS_PER_RUN_MAX + 1);
        context
            .balances
            .insert(affiliate(PAYOUTS_PER_RUN_MAX), balance);
        given(vec![])
            .when(|s| decide_run(s, &context, &run("2026-10", "2026-11-01T00:00:00Z")))
            .then_rejected("too_many_payouts");
    }

    #[test]
    fn a_run_is_once_per_period_and_in_order() {
        let book = book(&[earned(
            "pi_1",
            1,
            "60.00",
            "2026-10-01T00:00:00Z",
            "2026-10-31T00:00:00Z",
            false,
        )]);
        let ctx = context(&book, "2026-11-01T00:00:00Z");
        let events = decide_run(
            &PayoutsState::default(),
            &ctx,
            &run("2026-10", "2026-11-01T00:00:00Z"),
        )
        .unwrap();
        given(events.clone())
            .when(|s| decide_run(s, &ctx, &run("2026-10", "2026-11-01T00:00:00Z")))
            .then_events(vec![]);
        given(events.clone())
            .when(|s| decide_run(s, &ctx, &run("2026-10", "2026-11-02T00:00:00Z")))
            .then_rejected("payout_run_exists");
        given(events)
            .when(|s| decide_run(s, &ctx, &run("2026-09", "2026-11-02T00:00:00Z")))
            .then_rejected("payout_run_out_of_order");
        given(vec![])
            .when(|s| decide_run(s, &ctx, &run("2026-10", "2026-10-31T23:59:59Z")))
            .then_rejected("payout_run_too_early");
        let future = RunPayouts {
            run_at: at("2026-11-01T00:00:00Z"),
            ..run("2026-10", "2026-11-05T00:00:00Z")
        };
        given(vec![])
            .when(|s| decide_run(s, &ctx, &future))
            .then_rejected("payout_run_too_early");
    }

    #[test]
    fn a_clawback_after_payout_leaves_a_negative_balance_that_later_commissions_net_off() {
        let mut all = vec![earned(
            "pi_1",
            1,
            "60.00",
            "2026-10-01T00:00:00Z",
            "2026-10-31T00:00:00Z",
            false,
        )];
        let paid = decide_run(
            &PayoutsState::default(),
            &context(&book(&all), "2026-11-01T00:00:00Z"),
            &run("2026-10", "2026-11-01T00:00:00Z"),
        )
        .unwrap();
        all.extend(paid.clone());
        all.push(reversed("pi_1", 1, "30.00", "2026-11-05T00:00:00Z"));
        assert_eq!(
            book(&all).balances_at(at("2026-11-06T00:00:00Z"))[&account_id(1)].payable,
            eur("-30.00")
        );
        all.push(earned(
            "pi_2",
            1,
            "100.00",
            "2026-11-06T00:00:00Z",
            "2026-11-20T00:00:00Z",
            false,
        ));
        let next = given(paid)
            .when(|s| {
                decide_run(
                    s,
                    &context(&book(&all), "2026-12-01T00:00:00Z"),
                    &run("2026-11", "2026-12-01T00:00:00Z"),
                )
            })
            .then_ok();
        assert_eq!(scheduled(&next), vec![(account_id(1), eur("70.00"))]);
    }

    #[test]
    fn a_failed_payout_is_payable_again_and_settles_once() {
        let mut all = vec![earned(
            "pi_1",
            1,
            "60.00",
            "2026-10-01T00:00:00Z",
            "2026-10-31T00:00:00Z",
            false,
        )];
        let paid = decide_run(
            &PayoutsState::default(),
            &context(&book(&all), "2026-11-01T00:00:00Z"),
            &run("2026-10", "2026-11-01T00:00:00Z"),
        )
        .unwrap();
        all.extend(paid.clone());
        let fail = SettlePayout {
            period: Period::parse("2026-10").unwrap(),
            affiliate: account_id(1),
            settlement: Settlement::Failed {
                reason: "account closed".to_owned(),
            },
            settled_at: at("2026-11-03T00:00:00Z"),
        };
        let failed = given(paid.clone())
            .when(|s| decide_settle(s, &fail))
            .then_ok();
        let mut settled = paid.clone();
        settled.extend(failed.clone());
        given(settled.clone())
            .when(|s| decide_settle(s, &fail))
            .then_events(vec![]);
        let send = SettlePayout {
            settlement: Settlement::Sent {
                reference: PayoutReference::parse("po_1").unwrap(),
            },
            ..fail.clone()
        };
        given(settled)
            .when(|s| decide_settle(s, &send))
            .then_rejected("payout_already_settled");
        given(vec![])
            .when(|s| decide_settle(s, &send))
            .then_rejected("payout_not_found");
        let blank = SettlePayout {
            settlement: Settlement::Failed {
                reason: " ".to_owned(),
            },
            ..fail
        };
        given(paid)
            .when(|s| decide_settle(s, &blank))
            .then_rejected("invalid_value");
        all.extend(failed);
        assert_eq!(
            book(&all).balances_at(at("2026-11-04T00:00:00Z"))[&account_id(1)].payable,
            eur("60.00")
        );
    }
}
