//! Donations: a configurable share of each period's net revenue, allocated to a named
//! organisation by an event that carries no user data. Stream `donation-{YYYY-MM}`.
//!
//! Net revenue of a period is what payments received in it brought in, less what refunds
//! and chargebacks dated in it gave back (by their own dates, so a period, once over, does
//! not change).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::events::{DomainEvent, DonationAllocated};
use super::ids::OrganisationId;
use super::money::{Currency, Money, Rate};
use super::period::Period;
use super::Rejection;

/// Net revenue per period, folded from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevenueBook {
    currency: Currency,
    net: BTreeMap<Period, Money>,
}

impl RevenueBook {
    pub fn new(currency: Currency) -> RevenueBook {
        RevenueBook {
            currency,
            net: BTreeMap::new(),
        }
    }

    pub fn evolve(mut self, event: &DomainEvent) -> RevenueBook {
        self.apply(event);
        self
    }

    pub fn apply(&mut self, event: &DomainEvent) {
        let (at, change) = match event {
            DomainEvent::PaymentReceived(received) => (received.received_at, received.amount),
            DomainEvent::PaymentRefunded(refund) => (refund.refunded_at, refund.amount.negated()),
            DomainEvent::PaymentChargedBack(chargeback) => {
                (chargeback.charged_back_at, chargeback.amount.negated())
            }
            _ => return,
        };
        let zero = Money::zero(self.currency);
        let net = self.net.entry(Period::containing(at)).or_insert(zero);
        *net = net
            .checked_add(&change)
            .expect("the ledger runs in one currency");
    }

    pub fn net_revenue(&self, period: Period) -> Money {
        self.net
            .get(&period)
            .copied()
            .unwrap_or(Money::zero(self.currency))
    }
}

/// The state of one period's donation stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DonationState {
    pub allocated: Option<DonationAllocated>,
}

/// Allocate a period's donation, once the period is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocateDonation {
    pub period: Period,
    pub organisation: OrganisationId,
    pub share: Rate,
    pub allocated_at: DateTime<Utc>,
}

/// `net_revenue` is the period's, from a [`RevenueBook`] the caller folded.
pub fn decide(
    state: &DonationState,
    net_revenue: Money,
    command: &AllocateDonation,
) -> Result<Vec<DomainEvent>, Rejection> {
    if let Some(allocated) = &state.allocated {
        return if allocated.organisation == command.organisation && allocated.share == command.share
        {
            Ok(Vec::new())
        } else {
            Err(Rejection::DonationExists {
                period: command.period,
            })
        };
    }
    if command.allocated_at < command.period.end() {
        return Err(Rejection::DonationTooEarly {
            period: command.period,
        });
    }
    // A period that gave back more than it took in donates nothing, rather than
    // taking a donation back.
    let (amount, rounding) = if net_revenue.is_positive() {
        let share = net_revenue.times_rate(command.share);
        (share.amount, share.rounding)
    } else {
        (
            Money::zero(net_revenue.currency()),
            rust_decimal::Decimal::ZERO,
        )
    };
    Ok(vec![DomainEvent::DonationAllocated(DonationAllocated {
        period: command.period,
        organisation: command.organisation.clone(),
        net_revenue,
        share: command.share,
        amount,
        rounding,
        allocated_at: command.allocated_at,
    })])
}

pub fn evolve(mut state: DonationState, event: &DomainEvent) -> DonationState {
    if let DomainEvent::DonationAllocated(allocated) = event {
        assert!(
            state.allocated.is_none(),
            "a period's donation is allocated once"
        );
        state.allocated = Some(allocated.clone());
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::events::{PaymentKind, PaymentReceived, PaymentRefunded};
    use crate::domain::ids::{AccountId, PaymentId, RefundId};
    use crate::domain::scenario::{at, eur, Given};
    use crate::domain::Credits;

    fn received(id: &str, amount: &str, when: &str) -> DomainEvent {
        DomainEvent::PaymentReceived(PaymentReceived {
            payment_id: PaymentId::parse(id).unwrap(),
            account_id: AccountId::parse("00000000-0000-4000-8000-000000000001").unwrap(),
            kind: PaymentKind::CreditPack {
                credits: Credits::new(10).unwrap(),
            },
            amount: eur(amount),
            payment_fingerprint: None,
            received_at: at(when),
        })
    }

    fn refunded(id: &str, amount: &str, when: &str) -> DomainEvent {
        DomainEvent::PaymentRefunded(PaymentRefunded {
            payment_id: PaymentId::parse(id).unwrap(),
            refund_id: RefundId::parse("re_1").unwrap(),
            amount: eur(amount),
            refunded_total: eur(amount),
            refunded_at: at(when),
        })
    }

    fn allocate(period: &str, share: &str, when: &str) -> AllocateDonation {
        AllocateDonation {
            period: Period::parse(period).unwrap(),
            organisation: OrganisationId::parse("ocean-cleanup").unwrap(),
            share: Rate::parse(share).unwrap(),
            allocated_at: at(when),
        }
    }

    #[test]
    fn a_share_of_the_periods_net_revenue_is_allocated_without_user_data() {
        let revenue = [
            received("pi_1", "1000.00", "2026-10-02T00:00:00Z"),
            received("pi_2", "43.33", "2026-10-30T00:00:00Z"),
            refunded("pi_1", "100.00", "2026-10-31T00:00:00Z"),
            refunded("pi_2", "43.33", "2026-11-01T00:00:00Z"),
        ]
        .iter()
        .fold(RevenueBook::new(Currency::EUR), RevenueBook::evolve);
        let october = Period::parse("2026-10").unwrap();
        assert_eq!(revenue.net_revenue(october), eur("943.33"));
        let command = allocate("2026-10", "0.015", "2026-11-01T00:00:00Z");
        let events = Given::new(DonationState::default(), evolve, vec![])
            .when(|s| decide(s, revenue.net_revenue(october), &command))
            .then_ok();
        let [DomainEvent::DonationAllocated(allocated)] = &events[..] else {
            panic!("{events:?}")
        };
        // 943.33 × 0.015 = 14.14995, rounded half-even to 14.15.
        assert_eq!(allocated.amount, eur("14.15"));
        assert_eq!(allocated.rounding.to_string(), "-0.00005");
        let json = serde_json::to_value(allocated).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "allocated_at",
                "amount",
                "net_revenue",
                "organisation",
                "period",
                "rounding",
                "share"
            ]
        );
        // November so far gave back more than it took: nothing is donated.
        let november = allocate("2026-11", "0.015", "2026-12-01T00:00:00Z");
        let events = decide(
            &DonationState::default(),
            revenue.net_revenue(november.period),
            &november,
        )
        .unwrap();
        let [DomainEvent::DonationAllocated(allocated)] = &events[..] else {
            panic!()
        };
        assert!(allocated.amount.is_zero());
    }

    #[test]
    fn a_period_is_allocated_once_after_it_ends() {
        let command = allocate("2026-10", "0.01", "2026-11-01T00:00:00Z");
        let events = decide(&DonationState::default(), eur("100.00"), &command).unwrap();
        let given = || Given::new(DonationState::default(), evolve, events.clone());
        given()
            .when(|s| decide(s, eur("100.00"), &command))
            .then_events(vec![]);
        given()
            .when(|s| {
                decide(
                    s,
                    eur("100.00"),
                    &allocate("2026-10", "0.02", "2026-11-01T00:00:00Z"),
                )
            })
            .then_rejected("donation_exists");
        Given::new(DonationState::default(), evolve, vec![])
            .when(|s| {
                decide(
                    s,
                    eur("100.00"),
                    &allocate("2026-10", "0.01", "2026-10-31T23:00:00Z"),
                )
            })
            .then_rejected("donation_too_early");
    }
}
