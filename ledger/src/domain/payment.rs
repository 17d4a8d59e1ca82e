//! A payment and everything money that hangs on it: the commissions it funds, up the
//! payer's upline, decided in the same decision and appended in the same append; its
//! refunds and chargebacks; the clawbacks they cause. Stream `payment-{processor id}`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::account::Account;
use super::events::{
    CommissionEarned, CommissionForfeited, CommissionReleased, CommissionReversed, DomainEvent,
    FraudFlag, PaymentChargedBack, PaymentKind, PaymentReceived, PaymentRefunded,
};
use super::ids::{AccountId, Fingerprint, PaymentId, RefundId};
use super::money::{Currency, Money};
use super::plan::CommissionPlan;
use super::Rejection;

/// Most refunds and chargebacks one payment takes.
pub const REFUNDS_PER_PAYMENT_MAX: usize = 100;

/// The state of one payment stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentState {
    pub payment: Option<Payment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub received: PaymentReceived,
    /// By level, lowest first.
    pub commissions: Vec<Commission>,
    /// Refunds and chargebacks by id, as recorded.
    pub refunds: BTreeMap<RefundId, DomainEvent>,
    pub refunded_total: Money,
}

impl Payment {
    /// What is left to refund.
    pub fn refundable(&self) -> Money {
        self.received
            .amount
            .checked_sub(&self.refunded_total)
            .expect("refunds are in the payment's currency")
    }
}

/// A commission, how much of it was clawed back, and how its review ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commission {
    pub earned: CommissionEarned,
    pub reversed: Money,
    pub review: Option<ReviewDecision>,
    /// What a forfeit took back (zero unless forfeited).
    pub forfeited: Money,
}

/// How the review of a held commission ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReviewDecision {
    Release,
    Forfeit,
}

/// Decide on a commission held for review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewCommission {
    pub payment_id: PaymentId,
    pub level: u8,
    pub decision: ReviewDecision,
    pub reviewed_at: DateTime<Utc>,
}

/// One account up the payer's referral chain, as the payment decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplineMember {
    pub account_id: AccountId,
    /// The fraud flags on this member's own referral (the edge to its referrer, the next
    /// member up).
    pub referral_flags: Vec<FraudFlag>,
    /// The payment method the member signed up with, if any.
    pub payment_fingerprint: Option<Fingerprint>,
}

impl UplineMember {
    pub fn of(account: &Account) -> UplineMember {
        UplineMember {
            account_id: account.id(),
            referral_flags: account.referral_flags().to_vec(),
            payment_fingerprint: account.opened.payment_fingerprint.clone(),
        }
    }
}

/// What a payment decision needs from other streams: the payer (if the account exists),
/// its upline (the payer's referrer first, at most the plan's levels deep) and the plan in
/// force at the payment's time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentContext {
    pub payer: Option<UplineMember>,
    pub upline: Vec<UplineMember>,
    pub plan: CommissionPlan,
}

/// Record a payment the processor confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordPayment {
    pub payment_id: PaymentId,
    pub account_id: AccountId,
    pub kind: PaymentKind,
    pub amount: Money,
    pub payment_fingerprint: Option<Fingerprint>,
    pub received_at: DateTime<Utc>,
}

/// Whether money went back by the merchant's choice or the card holder's bank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefundKind {
    Refund,
    Chargeback,
}

/// Record a refund or a chargeback of part or all of a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundPayment {
    pub payment_id: PaymentId,
    pub refund_id: RefundId,
    pub kind: RefundKind,
    pub amount: Money,
    pub refunded_at: DateTime<Utc>,
}

pub fn decide_payment(
    state: &PaymentState,
    context: &PaymentContext,
    command: &RecordPayment,
) -> Result<Vec<DomainEvent>, Rejection> {
    let received = PaymentReceived {
        payment_id: command.payment_id.clone(),
        account_id: command.account_id,
        kind: command.kind.clone(),
        amount: command.amount,
        payment_fingerprint: command.payment_fingerprint.clone(),
        received_at: command.received_at,
    };
    // The processor delivers a webhook more than once: the same payment again records
    // nothing; different details under the same id are a conflict.
    if let Some(payment) = &state.payment {
        return if payment.received == received {
            Ok(Vec::new())
        } else {
            Err(Rejection::PaymentExists {
                payment_id: command.payment_id.clone(),
            })
        };
    }
    let Some(payer) = context
        .payer
        .as_ref()
        .filter(|payer| payer.account_id == command.account_id)
    else {
        return Err(Rejection::AccountNotFound {
            account_id: command.account_id,
        });
    };
    check_amount(command.amount, context.plan.currency())?;
    if let PaymentKind::CreditPack { credits } = &command.kind {
        if credits.is_zero() {
            return Err(Rejection::CreditsNotPositive);
        }
    }
    let plan = &context.plan;
    let hold_until = command.received_at + Duration::days(i64::from(plan.hold_days));
    let mut events = vec![DomainEvent::PaymentReceived(received)];
    // Fraud flags accumulate up the chain: a commission that flows through a flagged
    // referral is suspect at every level above it.
    let mut path_flags: Vec<FraudFlag> = payer.referral_flags.clone();
    for (index, (member, rate)) in context.upline.iter().zip(&plan.level_rates).enumerate() {
        let level = u8::try_from(index + 1).expect("plan levels fit in a u8");
        let mut reasons = path_flags.clone();
        if command.payment_fingerprint.is_some()
            && command.payment_fingerprint == member.payment_fingerprint
        {
            reasons.push(FraudFlag::SelfReferralPaymentMethod);
        }
        reasons.sort();
        reasons.dedup();
        let commission = command.amount.times_rate(*rate);
        // A share that rounds to nothing is no commission.
        if !commission.amount.is_zero() {
            events.push(DomainEvent::CommissionEarned(CommissionEarned {
                payment_id: command.payment_id.clone(),
                beneficiary: member.account_id,
                payer: command.account_id,
                level,
                rate: *rate,
                plan_version: plan.version,
                base_amount: command.amount,
                amount: commission.amount,
                rounding: commission.rounding,
                earned_at: command.received_at,
                hold_until,
                held_for_review: !reasons.is_empty(),
                review_reasons: reasons,
            }));
        }
        path_flags.extend(member.referral_flags.iter().copied());
    }
    Ok(events)
}

pub fn decide_refund(
    state: &PaymentState,
    command: &RefundPayment,
) -> Result<Vec<DomainEvent>, Rejection> {
    let Some(payment) = &state.payment else {
        return Err(Rejection::PaymentNotFound {
            payment_id: command.payment_id.clone(),
        });
    };
    if let Some(existing) = payment.refunds.get(&command.refund_id) {
        let same = match existing {
            // Every detail the command states: a retry with another time is another
            // refund under a reused id, refused like other amounts.
            DomainEvent::PaymentRefunded(refund) => {
                command.kind == RefundKind::Refund
                    && refund.amount == command.amount
                    && refund.refunded_at == command.refunded_at
            }
            DomainEvent::PaymentChargedBack(chargeback) => {
                command.kind == RefundKind::Chargeback
                    && chargeback.amount == command.amount
                    && chargeback.charged_back_at == command.refunded_at
            }
            other => unreachable!(
                "refunds hold only refund events, not {}",
                other.event_type()
            ),
        };
        return if same {
            Ok(Vec::new())
        } else {
            Err(Rejection::IdempotencyConflict {
                key: format!("refund {}", command.refund_id),
            })
        };
    }
    check_amount(command.amount, payment.received.amount.currency())?;
    if command.refunded_at < payment.received.received_at {
        return Err(Rejection::RefundBeforePayment);
    }
    let refundable = payment.refundable();
    if command
        .amount
        .checked_cmp(&refundable)
        .expect("same currency checked")
        == std::cmp::Ordering::Greater
    {
        return Err(Rejection::RefundExceedsPayment {
            requested: command.amount,
            refundable,
        });
    }
    if payment.refunds.len() >= REFUNDS_PER_PAYMENT_MAX {
        return Err(Rejection::TooManyRefunds {
            refunds_max: REFUNDS_PER_PAYMENT_MAX,
        });
    }
    let refunded_total = payment
        .refunded_total
        .checked_add(&command.amount)
        .expect("same currency checked");
    let mut events = vec![match command.kind {
        RefundKind::Refund => DomainEvent::PaymentRefunded(PaymentRefunded {
            payment_id: command.payment_id.clone(),
            refund_id: command.refund_id.clone(),
            amount: command.amount,
            refunded_total,
            refunded_at: command.refunded_at,
        }),
        RefundKind::Chargeback => DomainEvent::PaymentChargedBack(PaymentChargedBack {
            payment_id: command.payment_id.clone(),
            chargeback_id: command.refund_id.clone(),
            amount: command.amount,
            refunded_total,
            charged_back_at: command.refunded_at,
        }),
    }];
    // Each commission is clawed back to its share of everything refunded so far, rounded
    // once from the cumulative total: partial refunds never drift from the proportion, and
    // a full refund takes back exactly what was earned.
    for commission in &payment.commissions {
        // A forfeited commission has nothing left to claw back.
        if commission.review == Some(ReviewDecision::Forfeit) {
            continue;
        }
        let target = commission
            .earned
            .amount
            .times_ratio(&refunded_total, &payment.received.amount)
            .expect("payment amounts are positive and in one currency");
        let reversal = target
            .amount
            .checked_sub(&commission.reversed)
            .expect("commissions are in the payment's currency");
        assert!(
            !reversal.is_negative(),
            "the clawback target only grows with refunds"
        );
        if reversal.is_zero() {
            continue;
        }
        events.push(DomainEvent::CommissionReversed(CommissionReversed {
            payment_id: command.payment_id.clone(),
            beneficiary: commission.earned.beneficiary,
            level: commission.earned.level,
            refund_id: command.refund_id.clone(),
            amount: reversal,
            rounding: target.rounding,
            reversed_at: command.refunded_at,
        }));
    }
    Ok(events)
}

pub fn decide_review(
    state: &PaymentState,
    command: &ReviewCommission,
) -> Result<Vec<DomainEvent>, Rejection> {
    let Some(payment) = &state.payment else {
        return Err(Rejection::PaymentNotFound {
            payment_id: command.payment_id.clone(),
        });
    };
    let Some(commission) = payment
        .commissions
        .iter()
        .find(|commission| commission.earned.level == command.level)
    else {
        return Err(Rejection::CommissionNotFound {
            payment_id: command.payment_id.clone(),
            level: command.level,
        });
    };
    if !commission.earned.held_for_review {
        return Err(Rejection::CommissionNotHeld {
            payment_id: command.payment_id.clone(),
            level: command.level,
        });
    }
    match commission.review {
        Some(decision) if decision == command.decision => return Ok(Vec::new()),
        Some(_) => {
            return Err(Rejection::CommissionAlreadyReviewed {
                payment_id: command.payment_id.clone(),
                level: command.level,
            })
        }
        None => {}
    }
    let earned = &commission.earned;
    Ok(vec![match command.decision {
        ReviewDecision::Release => DomainEvent::CommissionReleased(CommissionReleased {
            payment_id: command.payment_id.clone(),
            beneficiary: earned.beneficiary,
            level: earned.level,
            released_at: command.reviewed_at,
        }),
        ReviewDecision::Forfeit => DomainEvent::CommissionForfeited(CommissionForfeited {
            payment_id: command.payment_id.clone(),
            beneficiary: earned.beneficiary,
            level: earned.level,
            amount: earned
                .amount
                .checked_sub(&commission.reversed)
                .expect("one currency"),
            forfeited_at: command.reviewed_at,
        }),
    }])
}

fn check_amount(amount: Money, currency: Currency) -> Result<(), Rejection> {
    if amount.currency() != currency {
        return Err(Rejection::CurrencyMismatch {
            expected: currency,
            actual: amount.currency(),
        });
    }
    if !amount.is_positive() {
        return Err(Rejection::AmountNotPositive);
    }
    Ok(())
}

pub fn evolve(mut state: PaymentState, event: &DomainEvent) -> PaymentState {
    if let DomainEvent::PaymentReceived(received) = event {
        assert!(state.payment.is_none(), "a payment is received once");
        state.payment = Some(Payment {
            received: received.clone(),
            commissions: Vec::new(),
            refunds: BTreeMap::new(),
            refunded_total: received
                .amount
                .checked_sub(&received.amount)
                .expect("same currency"),
        });
        return state;
    }
    let Some(payment) = state.payment.as_mut() else {
        panic!("{} recorded before its payment", event.event_type());
    };
    match event {
        DomainEvent::CommissionEarned(earned) => {
            assert_eq!(
                earned.base_amount, payment.received.amount,
                "commissions apply to the payment's amount"
            );
            let zero = Money::zero(earned.amount.currency());
            payment.commissions.push(Commission {
                earned: earned.clone(),
                reversed: zero,
                review: None,
                forfeited: zero,
            });
        }
        DomainEvent::PaymentRefunded(PaymentRefunded {
            refund_id,
            amount,
            refunded_total,
            ..
        })
        | DomainEvent::PaymentChargedBack(PaymentChargedBack {
            chargeback_id: refund_id,
            amount,
            refunded_total,
            ..
        }) => {
            payment.refunded_total = payment
                .refunded_total
                .checked_add(amount)
                .expect("same currency");
            assert_eq!(
                payment.refunded_total, *refunded_total,
                "the recorded running total is right"
            );
            assert!(
                !payment.refundable().is_negative(),
                "refunds never exceed the payment"
            );
            payment.refunds.insert(refund_id.clone(), event.clone());
        }
        DomainEvent::CommissionReleased(CommissionReleased { level, .. })
        | DomainEvent::CommissionForfeited(CommissionForfeited { level, .. }) => {
            let commission = payment
                .commissions
                .iter_mut()
                .find(|commission| commission.earned.level == *level)
                .expect("a review names a commission of its payment");
            assert!(
                commission.earned.held_for_review,
                "only held commissions are reviewed"
            );
            assert!(commission.review.is_none(), "a commission is reviewed once");
            if let DomainEvent::CommissionForfeited(forfeited) = event {
                commission.review = Some(ReviewDecision::Forfeit);
                commission.forfeited = forfeited.amount;
                let taken = commission
                    .reversed
                    .checked_add(&forfeited.amount)
                    .expect("one currency");
                assert_eq!(
                    taken, commission.earned.amount,
                    "a forfeit takes exactly what was left"
                );
            } else {
                commission.review = Some(ReviewDecision::Release);
            }
        }
        DomainEvent::CommissionReversed(reversed) => {
            let commission = payment
                .commissions
                .iter_mut()
                .find(|commission| commission.earned.level == reversed.level)
                .expect("a reversal names a commission of its payment");
            assert_ne!(
                commission.review,
                Some(ReviewDecision::Forfeit),
                "a forfeited commission is not clawed back"
            );
            commission.reversed = commission
                .reversed
                .checked_add(&reversed.amount)
                .expect("same currency");
            assert!(
                commission.reversed.checked_cmp(&commission.earned.amount)
                    != Ok(std::cmp::Ordering::Greater),
                "a clawback never exceeds what was earned"
            );
        }
        _ => {}
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credits::Credits;
    use crate::domain::ids::SubscriptionId;
    use crate::domain::money::Rate;
    use crate::domain::plan::PlanVersion;
    use crate::domain::scenario::account_id;
    use crate::domain::scenario::{at, eur, of_type, Given};

    fn member(n: u8) -> UplineMember {
        UplineMember {
            account_id: account_id(n),
            referral_flags: vec![],
            payment_fingerprint: None,
        }
    }

    fn context(upline: &[u8]) -> PaymentContext {
        PaymentContext {
            payer: Some(member(100)),
            upline: upline.iter().map(|&n| member(n)).collect(),
            plan: CommissionPlan::default_plan(Currency::EUR),
        }
    }

    fn pay(amount: &str) -> RecordPayment {
        RecordPayment {
            payment_id: PaymentId::parse("pi_1").unwrap(),
            account_id: account_id(100),
            kind: PaymentKind::Subscription {
                subscription_id: SubscriptionId::parse("sub_1").unwrap(),
            },
            amount: eur(amount),
            payment_fingerprint: None,
            received_at: at("2026-10-10T12:00:00Z"),
        }
    }

    fn refund(id: &str, amount: &str, kind: RefundKind) -> RefundPayment {
        RefundPayment {
            payment_id: PaymentId::parse("pi_1").unwrap(),
            refund_id: RefundId::parse(id).unwrap(),
            kind,
            amount: eur(amount),
            refunded_at: at("2026-10-20T12:00:00Z"),
        }
    }

    fn history_for_early() -> Vec<DomainEvent> {
        decide_payment(&PaymentState::default(), &context(&[1]), &pay("10.00")).unwrap()
    }

    fn given(events: Vec<DomainEvent>) -> Given<PaymentState> {
        Given::new(PaymentState::default(), evolve, events)
    }

    fn commissions(events: &[DomainEvent]) -> Vec<(u8, AccountId, Money)> {
        events
            .iter()
            .filter_map(|event| match event {
                DomainEvent::CommissionEarned(c) => Some((c.level, c.beneficiary, c.amount)),
                _ => None,
            })
            .collect()
    }

    fn reversals(events: &[DomainEvent]) -> Vec<(u8, Money)> {
        events
            .iter()
            .filter_map(|event| match event {
                DomainEvent::CommissionReversed(r) => Some((r.level, r.amount)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_payment_pays_each_upline_level_of_the_plan_in_the_same_decision() {
        let events = given(vec![])
            .when(|s| decide_payment(s, &context(&[1, 2, 3, 4]), &pay("100.00")))
            .then_ok();
        assert_eq!(events[0].event_type(), "PaymentReceived");
        assert_eq!(
            commissions(&events),
            vec![
                (1, account_id(1), eur("20.00")),
                (2, account_id(2), eur("10.00")),
                (3, account_id(3), eur("5.00"))
            ]
        );
        let DomainEvent::CommissionEarned(first) = &events[1] else {
            panic!()
        };
        assert_eq!(first.plan_version, PlanVersion::FIRST);
        assert_eq!(first.rate, Rate::parse("0.2").unwrap());
        assert_eq!(first.hold_until, at("2026-11-09T12:00:00Z"));
        assert!(!first.held_for_review);
    }

    #[test]
    fn commissions_round_half_even_and_record_the_rounding() {
        let events = given(vec![])
            .when(|s| decide_payment(s, &context(&[1, 2, 3]), &pay("333.30")))
            .then_ok();
        let earned: Vec<(String, String)> = events
            .iter()
            .filter_map(|event| match event {
                DomainEvent::CommissionEarned(c) => {
                    Some((c.amount.amount().to_string(), c.rounding.to_string()))
                }
                _ => None,
            })
            .collect();
        let expected = [("66.66", "0"), ("33.33", "0"), ("16.66", "0.005")];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, r)| (a.to_string(), r.to_string()))
            .collect();
        assert_eq!(earned, expected);
    }

    #[test]
    fn no_upline_no_commission_and_short_uplines_pay_what_exists() {
        let events = given(vec![])
            .when(|s| decide_payment(s, &context(&[]), &pay("100.00")))
            .then_ok();
        assert_eq!(events.len(), 1);
        let events = given(vec![])
            .when(|s| decide_payment(s, &context(&[7]), &pay("100.00")))
            .then_ok();
        assert_eq!(commissions(&events), vec![(1, account_id(7), eur("20.00"))]);
        // A share that rounds to nothing is not recorded.
        let events = given(vec![])
            .when(|s| decide_payment(s, &context(&[1, 2, 3]), &pay("0.05")))
            .then_ok();
        assert_eq!(commissions(&events), vec![(1, account_id(1), eur("0.01"))]);
    }

    #[test]
    fn the_plan_in_force_sets_rates_and_version() {
        let mut ctx = context(&[1, 2, 3]);
        ctx.plan.version = PlanVersion::new(2).unwrap();
        ctx.plan.level_rates = vec![Rate::parse("0.3").unwrap()];
        let events = given(vec![])
            .when(|s| decide_payment(s, &ctx, &pay("10.00")))
            .then_ok();
        assert_eq!(commissions(&events), vec![(1, account_id(1), eur("3.00"))]);
        let DomainEvent::CommissionEarned(c) = &events[1] else {
            panic!()
        };
        assert_eq!(c.plan_version.get(), 2);
    }

    #[test]
    fn commissions_through_a_flagged_referral_are_held_for_review() {
        let mut ctx = context(&[1, 2, 3]);
        // Member 2's own referral (to member 3) is flagged: only level 3 flows through it.
        ctx.upline[1].referral_flags = vec![FraudFlag::ReferralVelocity];
        let events = given(vec![])
            .when(|s| decide_payment(s, &ctx, &pay("100.00")))
            .then_ok();
        let held: Vec<(u8, bool, Vec<FraudFlag>)> = events
            .iter()
            .filter_map(|e| match e {
                DomainEvent::CommissionEarned(c) => {
                    Some((c.level, c.held_for_review, c.review_reasons.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            held,
            vec![
                (1, false, vec![]),
                (2, false, vec![]),
                (3, true, vec![FraudFlag::ReferralVelocity])
            ]
        );
        // The payer's own flagged referral holds every level; paying with the card a
        // beneficiary signed up with holds that beneficiary's commission.
        let mut ctx = context(&[1, 2]);
        ctx.payer.as_mut().unwrap().referral_flags = vec![FraudFlag::SelfReferralIp];
        ctx.upline[1].payment_fingerprint = Some(Fingerprint::parse("card-9").unwrap());
        let mut command = pay("100.00");
        command.payment_fingerprint = Some(Fingerprint::parse("card-9").unwrap());
        let events = given(vec![])
            .when(|s| decide_payment(s, &ctx, &command))
            .then_ok();
        let DomainEvent::CommissionEarned(level2) = &events[2] else {
            panic!()
        };
        assert!(level2.held_for_review);
        assert_eq!(
            level2.review_reasons,
            vec![
                FraudFlag::SelfReferralPaymentMethod,
                FraudFlag::SelfReferralIp
            ]
        );
    }

    #[test]
    fn payments_are_rejected_when_wrong_and_repeat_as_nothing() {
        let history =
            decide_payment(&PaymentState::default(), &context(&[1]), &pay("10.00")).unwrap();
        given(history.clone())
            .when(|s| decide_payment(s, &context(&[1]), &pay("10.00")))
            .then_events(vec![]);
        given(history)
            .when(|s| decide_payment(s, &context(&[1]), &pay("11.00")))
            .then_rejected("payment_exists");
        let mut usd = pay("10.00");
        usd.amount = Money::parse("10.00", "USD").unwrap();
        given(vec![])
            .when(|s| decide_payment(s, &context(&[1]), &usd))
            .then_rejected("currency_mismatch");
        given(vec![])
            .when(|s| decide_payment(s, &context(&[1]), &pay("0.00")))
            .then_rejected("amount_not_positive");
        given(vec![])
            .when(|s| decide_payment(s, &context(&[1]), &pay("-1.00")))
            .then_rejected("amount_not_positive");
        let mut no_payer = context(&[1]);
        no_payer.payer = None;
        given(vec![])
            .when(|s| decide_payment(s, &no_payer, &pay("1.00")))
            .then_rejected("account_not_found");
        let mut empty_pack = pay("1.00");
        empty_pack.kind = PaymentKind::CreditPack {
            credits: Credits::ZERO,
        };
        given(vec![])
            .when(|s| decide_payment(s, &context(&[1]), &empty_pack))
            .then_rejected("credits_not_positive");
    }

    #[test]
    fn a_refund_reverses_every_level_in_proportion_at_once() {
        let history = decide_payment(
            &PaymentState::default(),
            &context(&[1, 2, 3]),
            &pay("999.90"),
        )
        .unwrap();
        let events = given(history)
            .when(|s| decide_refund(s, &refund("re_1", "333.30", RefundKind::Refund)))
            .then_ok();
        assert_eq!(events[0].event_type(), "PaymentRefunded");
        assert_eq!(
            reversals(&events),
            vec![(1, eur("66.66")), (2, eur("33.33")), (3, eur("16.67"))]
        );
    }

    #[test]
    fn refunds_in_parts_claw_back_exactly_what_was_earned_in_the_end() {
        let mut history = decide_payment(
            &PaymentState::default(),
            &context(&[1, 2, 3]),
            &pay("100.01"),
        )
        .unwrap();
        for (id, amount, kind) in [
            ("re_1", "33.33", RefundKind::Refund),
            ("dp_1", "33.34", RefundKind::Chargeback),
            ("re_2", "33.34", RefundKind::Refund),
        ] {
            let events = given(history.clone())
                .when(|s| decide_refund(s, &refund(id, amount, kind)))
                .then_ok();
            history.extend(events);
        }
        let state = given(history.clone()).state;
        let payment = state.payment.unwrap();
        assert!(payment.refundable().is_zero());
        for commission in &payment.commissions {
            assert_eq!(commission.reversed, commission.earned.amount);
        }
        assert_eq!(of_type(&history, "PaymentChargedBack").len(), 1);
    }

    #[test]
    fn a_payment_takes_a_bounded_number_of_refunds() {
        let mut history =
            decide_payment(&PaymentState::default(), &context(&[1]), &pay("10.00")).unwrap();
        for n in 0..REFUNDS_PER_PAYMENT_MAX {
            let state = given(history.clone()).state;
            history.extend(
                decide_refund(
                    &state,
                    &refund(&format!("re_{n}"), "0.01", RefundKind::Refund),
                )
                .unwrap(),
            );
        }
        given(history)
            .when(|s| decide_refund(s, &refund("re_last", "0.01", RefundKind::Refund)))
            .then_rejected("too_many_refunds");
    }

    fn review(level: u8, decision: ReviewDecision) -> ReviewCommission {
        ReviewCommission {
            payment_id: PaymentId::parse("pi_1").unwrap(),
            level,
            decision,
            reviewed_at: at("2026-10-15T00:00:00Z"),
        }
    }

    /// A payment whose level-2 commission (only) is held for review.
    fn held_history() -> Vec<DomainEvent> {
        let mut ctx = context(&[1, 2]);
        ctx.upline[0].referral_flags = vec![FraudFlag::SelfReferralEmail];
        decide_payment(&PaymentState::default(), &ctx, &pay("100.00")).unwrap()
    }

    #[test]
    fn a_held_commission_is_released_or_forfeited_once() {
        let released = given(held_history())
            .when(|s| decide_review(s, &review(2, ReviewDecision::Release)))
            .then_ok();
        assert_eq!(released[0].event_type(), "CommissionReleased");
        let mut history = held_history();
        history.extend(released);
        given(history.clone())
            .when(|s| decide_review(s, &review(2, ReviewDecision::Release)))
            .then_events(vec![]);
        given(history)
            .when(|s| decide_review(s, &review(2, ReviewDecision::Forfeit)))
            .then_rejected("commission_already_reviewed");
        given(held_history())
            .when(|s| decide_review(s, &review(1, ReviewDecision::Release)))
            .then_rejected("commission_not_held");
        given(held_history())
            .when(|s| decide_review(s, &review(3, ReviewDecision::Release)))
            .then_rejected("commission_not_found");
        given(vec![])
            .when(|s| decide_review(s, &review(1, ReviewDecision::Release)))
            .then_rejected("payment_not_found");
    }

    #[test]
    fn a_forfeit_takes_what_is_left_and_later_refunds_leave_it_alone() {
        let mut history = held_history();
        let refunded = decide_refund(
            &given(history.clone()).state,
            &refund("re_1", "50.00", RefundKind::Refund),
        )
        .unwrap();
        assert_eq!(
            reversals(&refunded),
            vec![(1, eur("10.00")), (2, eur("5.00"))]
        );
        history.extend(refunded);
        let forfeited = given(history.clone())
            .when(|s| decide_review(s, &review(2, ReviewDecision::Forfeit)))
            .then_ok();
        let [DomainEvent::CommissionForfeited(forfeit)] = &forfeited[..] else {
            panic!("{forfeited:?}")
        };
        assert_eq!(forfeit.amount, eur("5.00"));
        history.extend(forfeited);
        let rest = decide_refund(
            &given(history.clone()).state,
            &refund("re_2", "50.00", RefundKind::Refund),
        )
        .unwrap();
        assert_eq!(reversals(&rest), vec![(1, eur("10.00"))]);
        history.extend(rest);
        let state = given(history).state;
        let level2 = &state.payment.unwrap().commissions[1];
        assert_eq!(
            level2.reversed.checked_add(&level2.forfeited).unwrap(),
            level2.earned.amount
        );
    }

    #[test]
    fn refunds_are_rejected_when_wrong_and_repeat_as_nothing() {
        let mut history =
            decide_payment(&PaymentState::default(), &context(&[1]), &pay("10.00")).unwrap();
        history.extend(
            decide_refund(
                &given(history.clone()).state,
                &refund("re_1", "4.00", RefundKind::Refund),
            )
            .unwrap(),
        );
        given(history.clone())
            .when(|s| decide_refund(s, &refund("re_1", "4.00", RefundKind::Refund)))
            .then_events(vec![]);
        given(history.clone())
            .when(|s| decide_refund(s, &refund("re_1", "4.00", RefundKind::Chargeback)))
            .then_rejected("idempotency_conflict");
        // The log is a refund's only idempotency record: its time must repeat too.
        let mut later = refund("re_1", "4.00", RefundKind::Refund);
        later.refunded_at += chrono::Duration::seconds(1);
        given(history.clone())
            .when(|s| decide_refund(s, &later))
            .then_rejected("idempotency_conflict");
        let rejection = given(history.clone())
            .when(|s| decide_refund(s, &refund("re_2", "6.01", RefundKind::Refund)))
            .then_rejected("refund_exceeds_payment");
        assert_eq!(
            rejection,
            Rejection::RefundExceedsPayment {
                requested: eur("6.01"),
                refundable: eur("6.00")
            }
        );
        given(history.clone())
            .when(|s| decide_refund(s, &refund("re_2", "0.00", RefundKind::Refund)))
            .then_rejected("amount_not_positive");
        let mut usd = refund("re_2", "1.00", RefundKind::Refund);
        usd.amount = Money::parse("1.00", "USD").unwrap();
        given(history)
            .when(|s| decide_refund(s, &usd))
            .then_rejected("currency_mismatch");
        given(vec![])
            .when(|s| decide_refund(s, &refund("re_1", "1.00", RefundKind::Refund)))
            .then_rejected("payment_not_found");
        let mut early = refund("re_9", "1.00", RefundKind::Refund);
        early.refunded_at = at("2026-10-10T11:59:59Z");
        given(history_for_early())
            .when(|s| decide_refund(s, &early))
            .then_rejected("refund_before_payment");
    }
}
