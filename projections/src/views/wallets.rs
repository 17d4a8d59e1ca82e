//! Credit wallets: per account, the balance and the open grants (what is left of each and
//! when it expires); per period, the credits issued, spent and expired.

use crate::hash::FastMap;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ledger::domain::events::{
    CreditsExpired, CreditsGranted, CreditsPurchased, CreditsSpent, GrantReason,
};
use ledger::domain::ids::{GrantId, PaymentId};
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
    /// Sum of `remaining` over the open grants.
    pub balance: u64,
    /// Grants with credits left, in the order they were given. A grant leaves this list
    /// when it is used up or expired.
    pub open_grants: Vec<OpenGrant>,
}

/// Credits moved in one period, in credit units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditTotals {
    /// Given for free (allowances, promotions, referral bonuses, goodwill).
    pub granted: u64,
    /// Bought with credit packs.
    pub purchased: u64,
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
    #[error("spend of account {account} totals {drawn} from its grants but says {credits}")]
    DrawMismatch {
        account: AccountId,
        drawn: u64,
        credits: u64,
    },
}

#[derive(Clone, Debug, Default)]
pub struct Wallets {
    wallets: FastMap<AccountId, Wallet>,
    totals: BTreeMap<Period, CreditTotals>,
}

impl Wallets {
    pub fn wallet(&self, account: &AccountId) -> Option<&Wallet> {
        self.wallets.get(account)
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
            if asked > wallet.open_grants[grant].remaining {
                return Err(WalletError::Overdrawn {
                    account,
                    grant: draw.grant_id.clone(),
                    credits: asked,
                    remaining: wallet.open_grants[grant].remaining,
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
        let remaining = wallet.open_grants[grant].remaining;
        // The domain expires exactly the remainder; anything else is a bug.
        if remaining != event.credits.units() {
            return Err(WalletError::Overdrawn {
                account,
                grant: event.grant_id.clone(),
                credits: event.credits.units(),
                remaining,
            });
        }
        wallet.open_grants.remove(grant);
        shrink_spare(&mut wallet.open_grants);
        wallet.balance -= remaining;
        self.period(event.expired_at).expired += remaining;
        Ok(())
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
        }
        WalletsStateRef {
            wallets,
            totals: &self.totals,
        }
    }

    pub fn from_state(state: WalletsState) -> Wallets {
        Wallets {
            wallets: state.wallets.into_iter().collect(),
            totals: state.totals,
        }
    }
}

/// Gives back the spare capacity of a grant list that shrank to under half of it.
fn shrink_spare(grants: &mut Vec<OpenGrant>) {
    if grants.capacity() > 2 * grants.len() + 1 {
        grants.shrink_to_fit();
    }
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
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use ledger::domain::events::GrantDraw;
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
}
