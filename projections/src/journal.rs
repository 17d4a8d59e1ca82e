//! The double-entry journal: balances per ledger account and currency, kept with their
//! history so that balances and the trial balance can be read as of any past position or
//! time without touching the live state.
//!
//! Amounts are signed: a debit is positive, a credit negative. Every event's postings sum
//! to zero per currency, so the sum over all accounts (the trial balance) is zero after
//! every event; [`Journal::post`] refuses, naming the position, anything else.

use crate::hash::FastMap;
use crate::segmented::Segmented;
use crate::serial::{MapSeq, SeqOf};
use std::collections::BTreeMap;
use std::hash::Hash;

use chrono::{DateTime, Utc};
use ledger::store::Position;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Most postings one event may carry.
pub const POSTINGS_PER_EVENT_MAX: usize = 64;

/// One line of a journal entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting<A, C> {
    pub account: A,
    pub currency: C,
    /// Debit positive, credit negative.
    pub amount: Decimal,
}

/// Where in the past a query looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// After the event at this position (and every one before it).
    Position(Position),
    /// After every event recorded at or before this time. Record times are read as the
    /// running maximum, so a clock step backwards cannot make history non-monotone.
    Time(DateTime<Utc>),
}

/// A broken double-entry invariant: a bug in the postings table or a forged log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    #[error(
        "trial balance is not zero at position {position}: the postings of this event leave \
         {imbalance} {currency} unbalanced"
    )]
    Unbalanced {
        position: Position,
        currency: String,
        imbalance: Decimal,
    },
    #[error("event at position {position} carries {count} postings; postings_per_event_max is {POSTINGS_PER_EVENT_MAX}")]
    TooManyPostings { position: Position, count: usize },
    #[error("event at position {position} is not after the last posted position {last}")]
    OutOfOrder { position: Position, last: Position },
}

/// One row of a trial balance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrialBalanceRow<A, C> {
    pub account: A,
    pub currency: C,
    /// The balance if it is a debit balance, else zero.
    pub debit: Decimal,
    /// The balance (as a positive number) if it is a credit balance, else zero.
    pub credit: Decimal,
}

/// Balances of every ledger account, and the totals per currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrialBalance<A, C: Ord> {
    pub rows: Vec<TrialBalanceRow<A, C>>,
    /// Per currency: (total debits, total credits). Equal when the books balance.
    pub totals: BTreeMap<C, (Decimal, Decimal)>,
}

impl<A, C: Ord> TrialBalance<A, C> {
    pub fn is_balanced(&self) -> bool {
        self.totals.values().all(|(debit, credit)| debit == credit)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Moment {
    position: Position,
    /// Running maximum of record times, in microseconds.
    at_micros: i64,
}

/// The journal. `A` names a ledger account, `C` a currency.
#[derive(Clone, Debug)]
pub struct Journal<A, C> {
    /// Every event that posted anything, in log order.
    moments: Segmented<Moment>,
    /// Per account and currency: (index into `moments`, balance after it), one entry per
    /// event that touched it. The last entry is the live balance.
    history: FastMap<(A, C), BalanceHistory>,
    /// Sum of all balances per currency; zero after every event.
    totals: BTreeMap<C, Decimal>,
}

impl<A, C> Default for Journal<A, C> {
    fn default() -> Self {
        Journal {
            moments: Segmented::default(),
            history: FastMap::default(),
            totals: BTreeMap::new(),
        }
    }
}

impl<A, C> Journal<A, C>
where
    A: Clone + Eq + Hash + Ord + std::fmt::Debug,
    C: Copy + Eq + Hash + Ord + std::fmt::Display,
{
    pub fn new() -> Self {
        Journal::default()
    }

    /// Records the postings of the event at `position`. Refuses, changing nothing, if they
    /// do not sum to zero in every currency.
    pub fn post(
        &mut self,
        position: Position,
        recorded_at: DateTime<Utc>,
        postings: &[Posting<A, C>],
    ) -> Result<(), JournalError> {
        if postings.is_empty() {
            return Ok(());
        }
        if postings.len() > POSTINGS_PER_EVENT_MAX {
            return Err(JournalError::TooManyPostings {
                position,
                count: postings.len(),
            });
        }
        if let Some(last) = self.moments.last() {
            if position <= last.position {
                return Err(JournalError::OutOfOrder {
                    position,
                    last: last.position,
                });
            }
        }
        // Per currency, the sum of its postings must be zero. Postings are few (bounded
        // above), so each currency is summed where it first appears, without allocating.
        let first_of_currency = |index: usize| {
            postings[..index]
                .iter()
                .all(|earlier| earlier.currency != postings[index].currency)
        };
        let sum_of = |currency: C| -> Decimal {
            postings
                .iter()
                .filter(|posting| posting.currency == currency)
                .map(|posting| posting.amount)
                .sum()
        };
        for index in (0..postings.len()).filter(|index| first_of_currency(*index)) {
            let currency = postings[index].currency;
            let imbalance = sum_of(currency);
            if !imbalance.is_zero() {
                return Err(JournalError::Unbalanced {
                    position,
                    currency: currency.to_string(),
                    imbalance,
                });
            }
        }
        let at_micros = recorded_at
            .timestamp_micros()
            .max(self.moments.last().map_or(i64::MIN, |last| last.at_micros));
        let moment = u32::try_from(self.moments.len()).expect("fewer than 2^32 money events");
        self.moments.push(Moment {
            position,
            at_micros,
        });
        for posting in postings {
            let entries = self
                .history
                .entry((posting.account.clone(), posting.currency))
                .or_default();
            let before = entries
                .last()
                .map_or(Decimal::ZERO, |(_, balance)| *balance);
            let after = before + posting.amount;
            match entries.last_mut() {
                // Two postings of one event to the same account make one history entry.
                Some((last_moment, balance)) if *last_moment == moment => *balance = after,
                _ => entries.push((moment, after)),
            }
        }
        for index in (0..postings.len()).filter(|index| first_of_currency(*index)) {
            let currency = postings[index].currency;
            let total = self.totals.entry(currency).or_default();
            *total += sum_of(currency);
            // Checked again on the running total: the sums above being zero is what
            // keeps this zero, and this catches a bug in that reasoning.
            assert!(
                total.is_zero(),
                "trial balance in {currency} is {total} after position {position}"
            );
        }
        Ok(())
    }

    /// The live balance of one account in one currency.
    pub fn balance(&self, account: &A, currency: C) -> Decimal {
        self.history
            .get(&(account.clone(), currency))
            .and_then(|entries| entries.last())
            .map_or(Decimal::ZERO, |(_, balance)| *balance)
    }

    /// All live balances, in account and currency order.
    pub fn balances(&self) -> BTreeMap<(A, C), Decimal> {
        self.balances_through(u32::MAX)
    }

    /// All balances as they stood at `as_of`.
    pub fn balances_as_of(&self, as_of: AsOf) -> BTreeMap<(A, C), Decimal> {
        match self.moments_through(as_of) {
            0 => BTreeMap::new(),
            count => self.balances_through(count as u32 - 1),
        }
    }

    /// The balance of one account as it stood at `as_of`.
    pub fn balance_as_of(&self, account: &A, currency: C, as_of: AsOf) -> Decimal {
        let count = self.moments_through(as_of);
        self.history
            .get(&(account.clone(), currency))
            .and_then(|entries| balance_at(entries, count))
            .unwrap_or(Decimal::ZERO)
    }

    /// The trial balance now.
    pub fn trial_balance(&self) -> TrialBalance<A, C> {
        trial_balance_of(self.balances())
    }

    /// The trial balance as it stood at `as_of`.
    pub fn trial_balance_as_of(&self, as_of: AsOf) -> TrialBalance<A, C> {
        trial_balance_of(self.balances_as_of(as_of))
    }

    /// How many events posted anything (each was checked to balance).
    pub fn entries(&self) -> usize {
        self.moments.len()
    }

    /// Position of the last event that posted anything.
    pub fn last_position(&self) -> Option<Position> {
        self.moments.last().map(|moment| moment.position)
    }

    /// How many moments (events that posted) fall at or before `as_of`.
    fn moments_through(&self, as_of: AsOf) -> usize {
        match as_of {
            AsOf::Position(position) => self
                .moments
                .partition_point(|moment| moment.position <= position),
            AsOf::Time(time) => {
                let micros = time.timestamp_micros();
                self.moments
                    .partition_point(|moment| moment.at_micros <= micros)
            }
        }
    }

    fn balances_through(&self, last_moment: u32) -> BTreeMap<(A, C), Decimal> {
        let count = last_moment as usize + 1;
        self.history
            .iter()
            .filter_map(|(key, entries)| {
                let balance = balance_at(entries, count)?;
                Some((key.clone(), balance))
            })
            .collect()
    }
}

/// The balance after the first `count` moments, or `None` if the account had no entry
/// by then.
fn balance_at(entries: &BalanceHistory, count: usize) -> Option<Decimal> {
    let within = entries.partition_point(|(moment, _)| (*moment as usize) < count);
    within
        .checked_sub(1)
        .and_then(|last| entries.get(last))
        .map(|(_, balance)| *balance)
}

fn trial_balance_of<A: Clone, C: Copy + Ord>(
    balances: BTreeMap<(A, C), Decimal>,
) -> TrialBalance<A, C> {
    let mut totals: BTreeMap<C, (Decimal, Decimal)> = BTreeMap::new();
    let rows = balances
        .into_iter()
        .map(|((account, currency), balance)| {
            let (debit, credit) = if balance.is_sign_negative() {
                (Decimal::ZERO, -balance)
            } else {
                (balance, Decimal::ZERO)
            };
            let total = totals.entry(currency).or_default();
            total.0 += debit;
            total.1 += credit;
            TrialBalanceRow {
                account,
                currency,
                debit,
                credit,
            }
        })
        .collect();
    TrialBalance { rows, totals }
}

/// One account's balances: (moment index, balance after it), one entry per event that
/// touched it.
type BalanceHistory = Segmented<(u32, Decimal)>;

/// One account's balance history as a checkpoint holds it.
type BalanceEntries = Vec<(u32, Decimal)>;

/// The journal's whole state, in a deterministic order, for checkpoints.
#[derive(Serialize, Deserialize)]
pub struct JournalState<A, C: Ord> {
    moments: Vec<(Position, i64)>,
    history: Vec<((A, C), BalanceEntries)>,
    totals: BTreeMap<C, Decimal>,
}

impl<A, C> Journal<A, C>
where
    A: Clone + Eq + Hash + Ord,
    C: Copy + Eq + Hash + Ord,
{
    pub fn to_state(&self) -> JournalState<A, C> {
        let mut history: Vec<_> = self
            .history
            .iter()
            .map(|(key, entries)| (key.clone(), entries.iter().copied().collect()))
            .collect();
        history.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        JournalState {
            moments: self
                .moments
                .iter()
                .map(|moment| (moment.position, moment.at_micros))
                .collect(),
            history,
            totals: self.totals.clone(),
        }
    }

    /// Serializes exactly as [`Journal::to_state`] does, borrowing the moments and the
    /// balance histories (sorted through a list of references) instead of copying them.
    pub fn state_serializer(&self) -> impl Serialize + '_
    where
        A: Serialize,
        C: Serialize,
    {
        let mut history: Vec<(&(A, C), &BalanceHistory)> = self.history.iter().collect();
        history.sort_unstable_by(|a, b| a.0.cmp(b.0));
        #[derive(Serialize)]
        struct JournalStateRef<'a, M, H, C> {
            moments: M,
            history: H,
            totals: &'a BTreeMap<C, Decimal>,
        }
        JournalStateRef {
            moments: SeqOf::new(self.moments.len(), move || {
                self.moments
                    .iter()
                    .map(|moment| (moment.position, moment.at_micros))
            }),
            history: MapSeq::new(history, |&(key, entries)| {
                (key, SeqOf::new(entries.len(), move || entries.iter()))
            }),
            totals: &self.totals,
        }
    }

    pub fn from_state(state: JournalState<A, C>) -> Self {
        Journal {
            moments: state
                .moments
                .into_iter()
                .map(|(position, at_micros)| Moment {
                    position,
                    at_micros,
                })
                .collect(),
            history: state
                .history
                .into_iter()
                .map(|(key, entries)| (key, entries.into_iter().collect()))
                .collect(),
            totals: state.totals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type J = Journal<&'static str, &'static str>;

    fn posting(account: &'static str, amount: i64) -> Posting<&'static str, &'static str> {
        Posting {
            account,
            currency: "EUR",
            amount: Decimal::new(amount, 2),
        }
    }

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + second, 0).unwrap()
    }

    #[test]
    fn balances_now_and_as_of_the_past() {
        let mut journal = J::new();
        journal
            .post(
                Position::sequence(3),
                at(10),
                &[posting("cash", 1000), posting("revenue", -1000)],
            )
            .unwrap();
        journal
            .post(
                Position::sequence(7),
                at(20),
                &[
                    posting("expense", 200),
                    posting("payable", -150),
                    posting("payable", -50),
                ],
            )
            .unwrap();
        assert_eq!(journal.balance(&"payable", "EUR"), Decimal::new(-200, 2));
        assert!(journal.trial_balance().is_balanced());
        assert_eq!(journal.trial_balance().rows.len(), 4);

        let before = AsOf::Position(Position::sequence(6));
        assert_eq!(
            journal.balance_as_of(&"payable", "EUR", before),
            Decimal::ZERO
        );
        assert_eq!(
            journal.balance_as_of(&"cash", "EUR", before),
            Decimal::new(1000, 2)
        );
        assert_eq!(journal.balances_as_of(before).len(), 2);
        assert!(journal
            .balances_as_of(AsOf::Position(Position::sequence(2)))
            .is_empty());
        assert_eq!(
            journal.balances_as_of(AsOf::Time(at(19))),
            journal.balances_as_of(before)
        );
        assert_eq!(
            journal.balances_as_of(AsOf::Time(at(20))),
            journal.balances()
        );
        // The past is read, the present unchanged.
        assert_eq!(journal.balance(&"payable", "EUR"), Decimal::new(-200, 2));
    }

    #[test]
    fn unbalanced_postings_are_refused_naming_the_position() {
        let mut journal = J::new();
        let refused = journal.post(
            Position::sequence(5),
            at(0),
            &[posting("cash", 1000), posting("revenue", -999)],
        );
        assert_eq!(
            refused,
            Err(JournalError::Unbalanced {
                position: Position::sequence(5),
                currency: "EUR".to_owned(),
                imbalance: Decimal::new(1, 2),
            })
        );
        assert!(refused.unwrap_err().to_string().contains("position 5"));
        assert!(journal.balances().is_empty(), "nothing changed");
    }

    #[test]
    fn state_round_trips() {
        let mut journal = J::new();
        journal
            .post(
                Position::sequence(0),
                at(0),
                &[posting("cash", 5), posting("revenue", -5)],
            )
            .unwrap();
        let restored = J::from_state(journal.to_state());
        assert_eq!(restored.balances(), journal.balances());
        assert_eq!(
            serde_json::to_string(&restored.to_state()).unwrap(),
            serde_json::to_string(&journal.to_state()).unwrap()
        );
    }
}
