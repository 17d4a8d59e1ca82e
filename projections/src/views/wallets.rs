//! Credit wallets: per account, the balance and the open grants (what is left of each and
//! when it expires) and the open credit reservations; per period, the credits issued, spent
//! (spends and captures of reservations) and expired.
//!
//! The view holds what the log records: a reservation counts as held until its capture,
//! void or expiry is recorded (the server's sweeper records expiries, reading
//! [`Wallets::reservations_due`]). The ledger's own reads judge expiry by the clock.

use crate::hash::FastMap;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ledger::domain::events::{
    CreditsExpired, CreditsGranted, CreditsPurchased, CreditsReserved, CreditsSpent, GrantDraw,
    GrantReason, ReservationCaptured, ReservationExpired, ReservationVoided,
};
use ledger::domain::ids::{GrantId, PaymentId, ReservationId};
use ledger::domain::{AccountId, Period};
use serde::{Deserialize, Serialize};

/// Where a grant's credits came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    Granted { reason: GrantReason },
    Purchased { payment_id: PaymentId },
}

/// A grant with credits left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenGrant {
    pub grant_id: GrantId,
    pub source: GrantSource,
    pub granted: u64,
    pub remaining: u64,
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_at: DateTime<Utc>,
}

/// One account's wallet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wallet {
    /// Sum of `remaining` over the open grants: credits neither spent nor expired, the
    /// reserved ones included.
    pub balance: u64,
    /// Grants with credits left, in the order they were given. A grant leaves this list
    /// when it is used up or expired.
    pub open_grants: Vec<OpenGrant>,
}

/// A credit reservation not yet captured, voided or recorded as expired: what it holds of
/// which grants, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldReservation {
    pub reservation_id: ReservationId,
    pub credits: u64,
    pub drawn: Vec<GrantDraw>,
    pub expires_at: DateTime<Utc>,
}

/// Credits moved in one period, in credit units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTotals {
    /// Given for free (allowances, promotions, referral bonuses, goodwill).
    pub granted: u64,
    /// Bought with credit packs.
    pub purchased: u64,
    /// Spent: spends and the captured part of reservations.
    pub spent: u64,
    pub expired: u64,
}

impl CreditTotals {
    /// Granted and purchased together.
    pub fn issued(&self) -> u64 {
        self.granted + self.purchased
    }
}

/// A wallet event that contradicts the wallet (a bug in the decider or a forged log).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    #[error("account {account} draws {credits} from grant {grant}, which has {remaining} left")]
    Overdrawn {
        account: AccountId,
        grant: GrantId,
        credits: u64,
        remaining: u64,
    },
    #[error("account {account} has no open grant {grant}")]
    GrantNotOpen { account: AccountId, grant: GrantId },
    #[error("grant {grant} of account {account} was given twice")]
    DuplicateGrant { account: AccountId, grant: GrantId },
    #[error("an event of account {account} totals {drawn} from its grants but says {credits}")]
    DrawMismatch {
        account: AccountId,
        drawn: u64,
        credits: u64,
    },
    #[error("account {account} has no open reservation {reservation}")]
    ReservationNotOpen {
        account: AccountId,
        reservation: ReservationId,
    },
    #[error("reservation {reservation} of account {account} was made twice")]
    DuplicateReservation {
        account: AccountId,
        reservation: ReservationId,
    },
}

#[derive(Clone, Debug, Default)]
pub struct Wallets {
    wallets: FastMap<AccountId, Wallet>,
    totals: BTreeMap<Period, CreditTotals>,
    /// Open reservations, only for the accounts that have some: few at any time, kept out
    /// of the million wallets.
    reservations: BTreeMap<AccountId, Vec<HeldReservation>>,
}

impl Wallets {
    pub fn wallet(&self, account: &AccountId) -> Option<&Wallet> {
        self.wallets.get(account)
    }

    /// The open reservations of `account`, in the order they were made.
    pub fn open_reservations(&self, account: &AccountId) -> &[HeldReservation] {
        self.reservations
            .get(account)
            .map_or(&[][..], |held| held.as_slice())
    }

    /// Credits `account`'s open reservations hold (part of its balance).
    pub fn reserved(&self, account: &AccountId) -> u64 {
        self.open_reservations(account)
            .iter()
            .map(|held| held.credits)
            .sum()
    }

    /// The accounts holding an open reservation whose expiry is at or before `at`: what
    /// the server's sweeper asks the ledger to expire.
    pub fn reservations_due(&self, at: DateTime<Utc>) -> Vec<AccountId> {
        self.reservations
            .iter()
            .filter(|(_, held)| held.iter().any(|reservation| reservation.expires_at <= at))
            .map(|(account, _)| *account)
            .collect()
    }

    pub fn totals_per_period(&self) -> &BTreeMap<Period, CreditTotals> {
        &self.totals
    }

    /// Totals over every period.
    pub fn totals(&self) -> CreditTotals {
        self.totals
            .values()
            .fold(CreditTotals::default(), |sum, period| CreditTotals {
                granted: sum.granted + period.granted,
                purchased: sum.purchased + period.purchased,
                spent: sum.spent + period.spent,
                expired: sum.expired + period.expired,
            })
    }

    pub fn granted(&mut self, event: &CreditsGranted) -> Result<(), WalletError> {
        self.open(
            event.account_id,
            OpenGrant {
                grant_id: event.grant_id.clone(),
                source: GrantSource::Granted {
                    reason: event.reason,
                },
                granted: event.credits.units(),
                remaining: event.credits.units(),
                expires_at: event.expires_at,
                granted_at: event.granted_at,
            },
        )?;
        self.period(event.granted_at).granted += event.credits.units();
        Ok(())
    }

    pub fn purchased(&mut self, event: &CreditsPurchased) -> Result<(), WalletError> {
        self.open(
            event.account_id,
            OpenGrant {
                grant_id: event.grant_id.clone(),
                source: GrantSource::Purchased {
                    payment_id: event.payment_id.clone(),
                },
                granted: event.credits.units(),
                remaining: event.credits.units(),
                expires_at: event.expires_at,
                granted_at: event.purchased_at,
            },
        )?;
        self.period(event.purchased_at).purchased += event.credits.units();
        Ok(())
    }

    pub fn spent(&mut self, event: &CreditsSpent) -> Result<(), WalletError> {
        let account = event.account_id;
        let drawn: u64 = event.drawn.iter().map(|draw| draw.credits.units()).sum();
        if drawn != event.credits.units() {
            return Err(WalletError::DrawMismatch {
                account,
                drawn,
                credits: event.credits.units(),
            });
        }
        // Check every draw before changing anything, so a refused event changes nothing.
        let wallet = self.wallets.entry(account).or_default();
        for draw in &event.drawn {
            let grant = find(wallet, &draw.grant_id).ok_or_else(|| WalletError::GrantNotOpen {
                account,
                grant: draw.grant_id.clone(),
            })?;
            let asked: u64 = event
                .drawn
                .iter()
                .filter(|other| other.grant_id == draw.grant_id)
                .map(|other| other.credits.units())
                .sum();
            let free = wallet.open_grants[grant].remaining
                - held_of(self.reservations.get(&account), &draw.grant_id);
            if asked > free {
                return Err(WalletError::Overdrawn {
                    account,
                    grant: draw.grant_id.clone(),
                    credits: asked,
                    remaining: free,
                });
            }
        }
        for draw in &event.drawn {
            let grant = find(wallet, &draw.grant_id).expect("checked above");
            wallet.open_grants[grant].remaining -= draw.credits.units();
            wallet.balance -= draw.credits.units();
        }
        wallet.open_grants.retain(|grant| grant.remaining > 0);
        shrink_spare(&mut wallet.open_grants);
        self.period(event.spent_at).spent += drawn;
        Ok(())
    }

    pub fn expired(&mut self, event: &CreditsExpired) -> Result<(), WalletError> {
        let account = event.account_id;
        let wallet = self.wallets.entry(account).or_default();
        let grant = find(wallet, &event.grant_id).ok_or_else(|| WalletError::GrantNotOpen {
            account,
            grant: event.grant_id.clone(),
        })?;
        // The domain expires exactly the remainder reservations do not hold; anything else
        // is a bug. What they hold stays in the grant until they release it.
        let held = held_of(self.reservations.get(&account), &event.grant_id);
        let free = wallet.open_grants[grant].remaining - held;
        if free != event.credits.units() {
            return Err(WalletError::Overdrawn {
                account,
                grant: event.grant_id.clone(),
                credits: event.credits.units(),
                remaining: free,
            });
        }
        if held == 0 {
            wallet.open_grants.remove(grant);
            shrink_spare(&mut wallet.open_grants);
        } else {
            wallet.open_grants[grant].remaining = held;
        }
        wallet.balance -= free;
        self.period(event.expired_at).expired += free;
        Ok(())
    }

    pub fn reserved_credits(&mut self, event: &CreditsReserved) -> Result<(), WalletError> {
        let account = event.account_id;
        let drawn = sum(&event.drawn);
        if drawn != event.credits.units() {
            return Err(WalletError::DrawMismatch {
                account,
                drawn,
                credits: event.credits.units(),
            });
        }
        let held = self.reservations.get(&account);
        if held.is_some_and(|held| {
            held.iter()
                .any(|open| open.reservation_id == event.reservation_id)
        }) {
            return Err(WalletError::DuplicateReservation {
                account,
                reservation: event.reservation_id.clone(),
            });
        }
        let wallet = self.wallets.entry(account).or_default();
        for draw in &event.drawn {
            let grant = find(wallet, &draw.grant_id).ok_or_else(|| WalletError::GrantNotOpen {
                account,
                grant: draw.grant_id.clone(),
            })?;
            let asked: u64 = event
                .drawn
                .iter()
                .filter(|other| other.grant_id == draw.grant_id)
                .map(|other| other.credits.units())
                .sum();
            let free = wallet.open_grants[grant].remaining - held_of(held, &draw.grant_id);
            if asked > free {
                return Err(WalletError::Overdrawn {
                    account,
                    grant: draw.grant_id.clone(),
                    credits: asked,
                    remaining: free,
                });
            }
        }
        self.reservations
            .entry(account)
            .or_default()
            .push(HeldReservation {
                reservation_id: event.reservation_id.clone(),
                credits: event.credits.units(),
                drawn: event.drawn.clone(),
                expires_at: event.expires_at,
            });
        Ok(())
    }

    /// A capture is a spend of what the reservation held, and the release of the rest.
    pub fn captured(&mut self, event: &ReservationCaptured) -> Result<(), WalletError> {
        let account = event.account_id;
        let drawn = sum(&event.drawn);
        if drawn != event.credits.units() {
            return Err(WalletError::DrawMismatch {
                account,
                drawn,
                credits: event.credits.units(),
            });
        }
        // Check before changing anything, so a refused event changes nothing.
        let wallet = self.wallets.get(&account);
        for draw in &event.drawn {
            let spendable = wallet
                .and_then(|wallet| find(wallet, &draw.grant_id).map(|at| &wallet.open_grants[at]))
                .is_some_and(|grant| grant.remaining >= draw.credits.units());
            if !spendable {
                return Err(WalletError::GrantNotOpen {
                    account,
                    grant: draw.grant_id.clone(),
                });
            }
        }
        self.take_reservation(account, &event.reservation_id, drawn + sum(&event.released))?;
        let wallet = self.wallets.entry(account).or_default();
        for draw in &event.drawn {
            let grant = find(wallet, &draw.grant_id).expect("checked above");
            wallet.open_grants[grant].remaining -= draw.credits.units();
            wallet.balance -= draw.credits.units();
        }
        wallet.open_grants.retain(|grant| grant.remaining > 0);
        shrink_spare(&mut wallet.open_grants);
        self.period(event.captured_at).spent += drawn;
        Ok(())
    }

    pub fn voided(&mut self, event: &ReservationVoided) -> Result<(), WalletError> {
        self.release(event.account_id, &event.reservation_id, &event.released)
            .map(|_| ())
    }

    pub fn reservation_expired(&mut self, event: &ReservationExpired) -> Result<(), WalletError> {
        self.release(event.account_id, &event.reservation_id, &event.released)
            .map(|_| ())
    }

    fn release(
        &mut self,
        account: AccountId,
        reservation: &ReservationId,
        released: &[GrantDraw],
    ) -> Result<HeldReservation, WalletError> {
        self.take_reservation(account, reservation, sum(released))
    }

    /// Takes the open reservation off the list, if it settles exactly what it holds.
    fn take_reservation(
        &mut self,
        account: AccountId,
        reservation: &ReservationId,
        settled: u64,
    ) -> Result<HeldReservation, WalletError> {
        let not_open = || WalletError::ReservationNotOpen {
            account,
            reservation: reservation.clone(),
        };
        let held = self.reservations.get_mut(&account).ok_or_else(not_open)?;
        let index = held
            .iter()
            .position(|open| &open.reservation_id == reservation)
            .ok_or_else(not_open)?;
        if held[index].credits != settled {
            return Err(WalletError::DrawMismatch {
                account,
                drawn: settled,
                credits: held[index].credits,
            });
        }
        let taken = held.remove(index);
        if held.is_empty() {
            self.reservations.remove(&account);
        }
        Ok(taken)
    }

    fn open(&mut self, account: AccountId, grant: OpenGrant) -> Result<(), WalletError> {
        let wallet = self.wallets.entry(account).or_default();
        if find(wallet, &grant.grant_id).is_some() {
            return Err(WalletError::DuplicateGrant {
                account,
                grant: grant.grant_id,
            });
        }
        wallet.balance += grant.remaining;
        // Most wallets hold one or two open grants: grow by half rather than doubling
        // from four, which over a million wallets is hundreds of MiB of spare capacity.
        let grants = &mut wallet.open_grants;
        if grants.len() == grants.capacity() {
            grants.reserve_exact((grants.len() / 2).max(1));
        }
        grants.push(grant);
        Ok(())
    }

    fn period(&mut self, at: DateTime<Utc>) -> &mut CreditTotals {
        self.totals.entry(Period::containing(at)).or_default()
    }

    pub fn to_state(&self) -> WalletsState {
        let mut wallets: Vec<(AccountId, Wallet)> = self
            .wallets
            .iter()
            .map(|(account, wallet)| (*account, wallet.clone()))
            .collect();
        wallets.sort_unstable_by_key(|(account, _)| *account);
        WalletsState {
            wallets,
            totals: self.totals.clone(),
            reservations: self.reservations.clone(),
        }
    }

    /// Serializes exactly as [`Wallets::to_state`] does, borrowing the wallets (sorted
    /// through a list of references) instead of copying them.
    pub fn state_serializer(&self) -> impl Serialize + '_ {
        let mut wallets: Vec<(&AccountId, &Wallet)> = self.wallets.iter().collect();
        wallets.sort_unstable_by_key(|(account, _)| **account);
        #[derive(Serialize)]
        struct WalletsStateRef<'a> {
            wallets: Vec<(&'a AccountId, &'a Wallet)>,
            totals: &'a BTreeMap<Period, CreditTotals>,
            reservations: &'a BTreeMap<AccountId, Vec<HeldReservation>>,
        }
        WalletsStateRef {
            wallets,
            totals: &self.totals,
            reservations: &self.reservations,
        }
    }

    pub fn from_state(state: WalletsState) -> Wallets {
        Wallets {
            wallets: state.wallets.into_iter().collect(),
            totals: state.totals,
            reservations: state.reservations,
        }
    }
}

/// Gives back the spare capacity of a grant list that shrank to under half of it.
fn shrink_spare(grants: &mut Vec<OpenGrant>) {
    if grants.capacity() > 2 * grants.len() + 1 {
        grants.shrink_to_fit();
    }
}

/// What the open reservations `held` hold of `grant`.
fn held_of(held: Option<&Vec<HeldReservation>>, grant: &GrantId) -> u64 {
    held.into_iter()
        .flatten()
        .flat_map(|reservation| &reservation.drawn)
        .filter(|draw| &draw.grant_id == grant)
        .map(|draw| draw.credits.units())
        .sum()
}

fn sum(draws: &[GrantDraw]) -> u64 {
    draws.iter().map(|draw| draw.credits.units()).sum()
}

fn find(wallet: &Wallet, grant: &GrantId) -> Option<usize> {
    wallet
        .open_grants
        .iter()
        .position(|open| &open.grant_id == grant)
}

#[derive(Serialize, Deserialize)]
pub struct WalletsState {
    wallets: Vec<(AccountId, Wallet)>,
    totals: BTreeMap<Period, CreditTotals>,
    reservations: BTreeMap<AccountId, Vec<HeldReservation>>,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use ledger::domain::ids::{PersonaId, SpendId};
    use ledger::domain::Credits;

    use super::*;
    use crate::rng::SplitMix64;

    fn at(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap()
    }

    fn grant(account: AccountId, id: &str, credits: u64, day: u32) -> CreditsGranted {
        CreditsGranted {
            account_id: account,
            grant_id: GrantId::parse(id).unwrap(),
            credits: Credits::new(credits).unwrap(),
            reason: GrantReason::Promotion,
            expires_at: Some(at(day + 10)),
            granted_at: at(day),
        }
    }

    fn spend(account: AccountId, draws: &[(&str, u64)], credits: u64) -> CreditsSpent {
        CreditsSpent {
            account_id: account,
            spend_id: SpendId::parse("s-1").unwrap(),
            persona: PersonaId::parse("diver").unwrap(),
            credits: Credits::new(credits).unwrap(),
            drawn: draws
                .iter()
                .map(|(grant, credits)| GrantDraw {
                    grant_id: GrantId::parse(grant).unwrap(),
                    credits: Credits::new(*credits).unwrap(),
                })
                .collect(),
            spent_at: at(5),
        }
    }

    #[test]
    fn balances_open_grants_and_totals_follow_the_events() {
        let account = AccountId::new(SplitMix64::new(1).uuid()).unwrap();
        let mut wallets = Wallets::default();
        wallets.granted(&grant(account, "a", 100, 1)).unwrap();
        wallets.granted(&grant(account, "b", 50, 2)).unwrap();
        wallets
            .spent(&spend(account, &[("a", 100), ("b", 20)], 120))
            .unwrap();
        let wallet = wallets.wallet(&account).unwrap();
        assert_eq!(wallet.balance, 30);
        assert_eq!(
            wallet.open_grants.len(),
            1,
            "a used-up grant leaves the list"
        );
        assert_eq!(wallet.open_grants[0].remaining, 30);
        wallets
            .expired(&CreditsExpired {
                account_id: account,
                grant_id: GrantId::parse("b").unwrap(),
                credits: Credits::new(30).unwrap(),
                expired_at: at(12),
            })
            .unwrap();
        assert_eq!(wallets.wallet(&account).unwrap().balance, 0);
        let totals = wallets.totals();
        assert_eq!(
            (totals.issued(), totals.spent, totals.expired),
            (150, 120, 30)
        );
    }

    #[test]
    fn contradictory_wallet_events_are_refused_and_change_nothing() {
        let account = AccountId::new(SplitMix64::new(2).uuid()).unwrap();
        let mut wallets = Wallets::default();
        wallets.granted(&grant(account, "a", 10, 1)).unwrap();
        let before = wallets.wallet(&account).unwrap().clone();
        assert!(matches!(
            wallets.spent(&spend(account, &[("a", 11)], 11)),
            Err(WalletError::Overdrawn { .. })
        ));
        assert!(matches!(
            wallets.spent(&spend(account, &[("a", 5)], 6)),
            Err(WalletError::DrawMismatch { .. })
        ));
        assert!(matches!(
            wallets.spent(&spend(account, &[("zz", 1)], 1)),
            Err(WalletError::GrantNotOpen { .. })
        ));
        assert!(matches!(
            wallets.granted(&grant(account, "a", 10, 1)),
            Err(WalletError::DuplicateGrant { .. })
        ));
        assert_eq!(wallets.wallet(&account).unwrap(), &before);
    }

    fn draws(list: &[(&str, u64)]) -> Vec<GrantDraw> {
        list.iter()
            .map(|(grant, credits)| GrantDraw {
                grant_id: GrantId::parse(grant).unwrap(),
                credits: Credits::new(*credits).unwrap(),
            })
            .collect()
    }

    fn reservation(account: AccountId, id: &str, drawn: &[(&str, u64)]) -> CreditsReserved {
        CreditsReserved {
            account_id: account,
            reservation_id: ReservationId::parse(id).unwrap(),
            credits: Credits::new(drawn.iter().map(|(_, n)| n).sum()).unwrap(),
            persona: None,
            drawn: draws(drawn),
            expires_at: at(6),
            reserved_at: at(5),
        }
    }

    #[test]
    fn captures_count_as_spends_and_releases_give_back() {
        let account = AccountId::new(SplitMix64::new(3).uuid()).unwrap();
        let mut wallets = Wallets::default();
        wallets.granted(&grant(account, "a", 10, 1)).unwrap();
        wallets.granted(&grant(account, "b", 10, 2)).unwrap();
        wallets
            .reserved_credits(&reservation(account, "r1", &[("a", 10), ("b", 2)]))
            .unwrap();
        wallets
            .reserved_credits(&reservation(account, "r2", &[("b", 3)]))
            .unwrap();
        assert_eq!(wallets.reserved(&account), 15);
        assert_eq!(wallets.wallet(&account).unwrap().balance, 20);
        assert_eq!(wallets.reservations_due(at(5)), vec![]);
        assert_eq!(wallets.reservations_due(at(6)), vec![account]);
        // A spend may not take what reservations hold.
        assert!(matches!(
            wallets.spent(&spend(account, &[("b", 6)], 6)),
            Err(WalletError::Overdrawn { remaining: 5, .. })
        ));
        wallets
            .captured(&ReservationCaptured {
                account_id: account,
                reservation_id: ReservationId::parse("r1").unwrap(),
                persona: None,
                credits: Credits::new(11).unwrap(),
                drawn: draws(&[("a", 10), ("b", 1)]),
                released: draws(&[("b", 1)]),
                captured_at: at(5),
            })
            .unwrap();
        let wallet = wallets.wallet(&account).unwrap();
        assert_eq!((wallet.balance, wallet.open_grants.len()), (9, 1));
        assert_eq!(wallets.reserved(&account), 3);
        // The grant expires under r2: only what r2 does not hold expires.
        wallets
            .expired(&CreditsExpired {
                account_id: account,
                grant_id: GrantId::parse("b").unwrap(),
                credits: Credits::new(6).unwrap(),
                expired_at: at(12),
            })
            .unwrap();
        assert_eq!(
            wallets.wallet(&account).unwrap().open_grants[0].remaining,
            3
        );
        wallets
            .reservation_expired(&ReservationExpired {
                account_id: account,
                reservation_id: ReservationId::parse("r2").unwrap(),
                credits: Credits::new(3).unwrap(),
                released: draws(&[("b", 3)]),
                expired_at: at(6),
            })
            .unwrap();
        assert_eq!(wallets.reserved(&account), 0);
        assert!(wallets.open_reservations(&account).is_empty());
        let totals = wallets.totals();
        assert_eq!((totals.spent, totals.expired), (11, 6));
        // Settling a reservation no longer open is a broken log.
        assert!(matches!(
            wallets.voided(&ReservationVoided {
                account_id: account,
                reservation_id: ReservationId::parse("r2").unwrap(),
                credits: Credits::new(3).unwrap(),
                released: draws(&[("b", 3)]),
                voided_at: at(6),
            }),
            Err(WalletError::ReservationNotOpen { .. })
        ));
    }

    #[test]
    fn contradictory_reservation_events_are_refused_and_change_nothing() {
        let account = AccountId::new(SplitMix64::new(4).uuid()).unwrap();
        let mut wallets = Wallets::default();
        wallets.granted(&grant(account, "a", 10, 1)).unwrap();
        wallets
            .reserved_credits(&reservation(account, "r1", &[("a", 6)]))
            .unwrap();
        let before = wallets.to_state();
        let before = rmp_serde::to_vec(&before).unwrap();
        assert!(matches!(
            wallets.reserved_credits(&reservation(account, "r2", &[("a", 5)])),
            Err(WalletError::Overdrawn { .. })
        ));
        assert!(matches!(
            wallets.reserved_credits(&reservation(account, "r1", &[("a", 1)])),
            Err(WalletError::DuplicateReservation { .. })
        ));
        assert!(matches!(
            wallets.captured(&ReservationCaptured {
                account_id: account,
                reservation_id: ReservationId::parse("r1").unwrap(),
                persona: None,
                credits: Credits::new(6).unwrap(),
                drawn: draws(&[("a", 6)]),
                released: draws(&[("a", 1)]),
                captured_at: at(5),
            }),
            Err(WalletError::DrawMismatch { .. })
        ));
        assert_eq!(rmp_serde::to_vec(&wallets.to_state()).unwrap(), before);
    }
}
