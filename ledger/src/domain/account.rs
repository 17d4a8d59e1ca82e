//! Accounts: signup with a referral code and its fraud checks, personal data,
//! subscriptions and the credit wallet. Stream `account-{id}`; referral codes are claimed
//! in `referral-code-{code}`.
//!
//! The referral graph is a forest by construction: a referrer must exist before anyone
//! signs up with its code, and an account's referrer is fixed when it opens.
//!
//! Credit reservations (authorise now, capture later) live in the same wallet; their rules
//! are in [`super::reservation`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};

use super::credits::{Credits, CREDITS_MAX};
use super::events::{
    AccountOpened, CreditsExpired, CreditsGranted, CreditsPurchased, CreditsSpent, DomainEvent,
    FraudFlag, GrantDraw, GrantReason, PersonalData, PersonalDataCorrected, ReferralCodeClaimed,
    ReferralRecorded, SubscriptionCancelled, SubscriptionStarted,
};
use super::ids::{
    AccountId, Fingerprint, GrantId, PaymentId, PersonaId, ProductId, ReferralCode, ReservationId,
    SpendId, SubscriptionId,
};
use super::reservation::{self, Reservation};
use super::Rejection;

/// Most grants with credits left that one account holds at once; a spend walks them all.
pub const ACTIVE_GRANTS_MAX: usize = 1000;

/// The configurable fraud controls on referrals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FraudPolicy {
    /// A referee signing up from the referrer's signup IP within this time of the
    /// referrer's signup is flagged. IP addresses are reassigned, so the match expires;
    /// email and payment fingerprints identify a person for good and are always compared.
    pub same_ip_window: Duration,
    /// Referrals per referrer per UTC calendar day; the ones beyond are flagged.
    pub referrals_per_day_max: u32,
}

impl Default for FraudPolicy {
    fn default() -> Self {
        FraudPolicy {
            same_ip_window: Duration::days(30),
            referrals_per_day_max: 20,
        }
    }
}

/// The state of one account stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountState {
    pub account: Option<Account>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The signup as recorded; also what a repeated signup is compared with.
    pub opened: AccountOpened,
    pub personal_data: PersonalData,
    pub email_fingerprint: Fingerprint,
    /// Referrals this account made, by referee.
    pub referrals: BTreeMap<AccountId, ReferralRecorded>,
    /// Subscriptions, and whether each is active.
    pub subscriptions: BTreeMap<SubscriptionId, bool>,
    pub wallet: Wallet,
}

impl Account {
    pub fn id(&self) -> AccountId {
        self.opened.account_id
    }

    pub fn referrer(&self) -> Option<AccountId> {
        self.opened.referrer
    }

    /// The fraud flags on this account's referral (the edge to its referrer).
    pub fn referral_flags(&self) -> &[FraudFlag] {
        &self.opened.fraud_flags
    }
}

/// Credits on an account: grants with what is left of each, every spend by id and every
/// reservation by id.
///
/// A reservation holds credits inside the grants it drew from (`Grant::reserved`): they stay
/// in `remaining` until a capture spends them, and count as neither available nor expirable
/// while held. Readers ask with an instant: a reservation past its expiry counts as released
/// at once, whether or not its `ReservationExpired` is recorded yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wallet {
    pub grants: BTreeMap<GrantId, Grant>,
    pub spends: BTreeMap<SpendId, CreditsSpent>,
    /// Every reservation, open or settled: a reservation id is idempotent for good.
    pub reservations: BTreeMap<ReservationId, Reservation>,
    /// The reservations not captured, voided or recorded as expired.
    open_reservations: BTreeSet<ReservationId>,
    /// Grants recorded so far; orders grants by age.
    grants_recorded: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub credits: Credits,
    /// Neither spent nor expired; includes what reservations hold.
    pub remaining: Credits,
    /// The part of `remaining` held by open reservations.
    pub reserved: Credits,
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_at: DateTime<Utc>,
    /// 0 for the first grant of the account, 1 for the next, ...
    pub sequence: u64,
    /// The event that made it, to tell a repeated grant from a conflicting one.
    pub source: DomainEvent,
}

impl Grant {
    /// Whether the grant can be drawn at `at`: granted by then and not yet expired.
    fn usable_at(&self, at: DateTime<Utc>) -> bool {
        self.granted_at <= at && self.expires_at.is_none_or(|expiry| at < expiry)
    }

    /// What is left and not held by any open reservation.
    pub fn unreserved(&self) -> Credits {
        self.remaining
            .checked_sub(self.reserved)
            .expect("a grant never holds more reserved than remaining")
    }
}

impl Wallet {
    /// Credits on the account at `at`: the available ones and the reserved ones.
    pub fn balance_at(&self, at: DateTime<Utc>) -> Credits {
        self.available_at(at)
            .checked_add(self.reserved_at(at))
            .expect("a wallet holds at most CREDITS_MAX")
    }

    /// Credits that can be spent or reserved at `at`: what is left of every grant usable
    /// then, less what reservations still live at `at` hold of it.
    pub fn available_at(&self, at: DateTime<Utc>) -> Credits {
        self.draw_order(at)
            .into_iter()
            .fold(Credits::ZERO, |sum, (_, free)| {
                sum.checked_add(free)
                    .expect("a wallet holds at most CREDITS_MAX")
            })
    }

    /// Credits held at `at` by reservations open and not expired by then. A grant that
    /// expired under a reservation does not shrink it: the reservation holds what it
    /// reserved until it is captured, voided or expires itself.
    pub fn reserved_at(&self, at: DateTime<Utc>) -> Credits {
        self.open_reservations_at(at)
            .fold(Credits::ZERO, |sum, (_, reservation)| {
                sum.checked_add(reservation.reserved.credits)
                    .expect("a wallet holds at most CREDITS_MAX")
            })
    }

    /// The reservations open and not expired at `at`, by id.
    pub fn open_reservations_at(
        &self,
        at: DateTime<Utc>,
    ) -> impl Iterator<Item = (&ReservationId, &Reservation)> {
        self.open_reservations.iter().filter_map(move |id| {
            let reservation = &self.reservations[id];
            reservation.live_at(at).then_some((id, reservation))
        })
    }

    /// The reservations not captured, voided or recorded as expired, including those past
    /// their expiry whose release is not recorded yet.
    pub fn recorded_open_reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.open_reservations
            .iter()
            .map(|id| &self.reservations[id])
    }

    /// Credits left in all grants, expired or not (until their expiry is recorded).
    pub fn remaining_total(&self) -> Credits {
        self.grants.values().fold(Credits::ZERO, |sum, grant| {
            sum.checked_add(grant.remaining)
                .expect("a wallet holds at most CREDITS_MAX")
        })
    }

    fn active_grants(&self) -> usize {
        self.grants
            .values()
            .filter(|grant| !grant.remaining.is_zero())
            .count()
    }

    /// Per grant, what reservations still live at `at` hold of it.
    fn held_at(&self, at: DateTime<Utc>) -> BTreeMap<&GrantId, Credits> {
        let mut held: BTreeMap<&GrantId, Credits> = BTreeMap::new();
        for (_, reservation) in self.open_reservations_at(at) {
            for draw in &reservation.reserved.drawn {
                let sum = held.entry(&draw.grant_id).or_default();
                *sum = sum
                    .checked_add(draw.credits)
                    .expect("a wallet holds at most CREDITS_MAX");
            }
        }
        held
    }

    /// What each grant not yet expired at `at` could give then (what is left, less what
    /// live reservations hold), in the draw-down order: earliest expiry first (no expiry
    /// last), then oldest. Grants with nothing to give are left out.
    pub(super) fn draw_order(&self, at: DateTime<Utc>) -> Vec<(&GrantId, Credits)> {
        let held = self.held_at(at);
        let mut usable: Vec<_> = self
            .grants
            .iter()
            .filter(|(_, grant)| grant.usable_at(at))
            .filter_map(|(grant_id, grant)| {
                let held = held.get(grant_id).copied().unwrap_or_default();
                let free = grant
                    .remaining
                    .checked_sub(held)
                    .expect("live reservations hold at most what a grant has left");
                (!free.is_zero()).then_some((grant_id, grant, free))
            })
            .collect();
        usable.sort_by_key(|(_, grant, _)| {
            (grant.expires_at.is_none(), grant.expires_at, grant.sequence)
        });
        usable
            .into_iter()
            .map(|(grant_id, _, free)| (grant_id, free))
            .collect()
    }

    /// Takes `credits` from the grants in draw-down order at `at`; `None` if they do not
    /// have that many available.
    pub(super) fn draw(&self, at: DateTime<Utc>, credits: Credits) -> Option<Vec<GrantDraw>> {
        let mut left = credits;
        let mut drawn = Vec::new();
        for (grant_id, free) in self.draw_order(at) {
            if left.is_zero() {
                break;
            }
            let take = free.min(left);
            left = left
                .checked_sub(take)
                .expect("take is at most what is left");
            drawn.push(GrantDraw {
                grant_id: grant_id.clone(),
                credits: take,
            });
        }
        left.is_zero().then_some(drawn)
    }

    /// The ids of the reservations not captured, voided or recorded as expired.
    pub(super) fn open_reservation_ids(&self) -> &BTreeSet<ReservationId> {
        &self.open_reservations
    }

    pub(super) fn grant_mut(&mut self, grant_id: &GrantId) -> &mut Grant {
        self.grants
            .get_mut(grant_id)
            .expect("wallet events name recorded grants")
    }

    pub(super) fn open_reservation(&mut self, reservation: Reservation) {
        let id = reservation.reserved.reservation_id.clone();
        assert!(
            self.open_reservations.insert(id.clone()),
            "a reservation id is recorded once"
        );
        assert!(
            self.reservations.insert(id, reservation).is_none(),
            "a reservation id is recorded once"
        );
    }

    /// The open reservation `id`, taken off the open list: the caller settles it.
    pub(super) fn close_reservation(&mut self, id: &ReservationId) -> &mut Reservation {
        assert!(
            self.open_reservations.remove(id),
            "only an open reservation is captured, voided or expired"
        );
        self.reservations
            .get_mut(id)
            .expect("an open reservation is recorded")
    }
}

/// Sign up. The caller resolves `referred_with_code` to the referrer's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenAccount {
    pub account_id: AccountId,
    pub referral_code: ReferralCode,
    pub referred_with_code: Option<ReferralCode>,
    pub personal_data: PersonalData,
    pub email_fingerprint: Fingerprint,
    pub ip_fingerprint: Fingerprint,
    pub payment_fingerprint: Option<Fingerprint>,
    pub opened_at: DateTime<Utc>,
}

/// What a signup records: events for the referrer's stream (appended first, with the
/// referrer's exact revision, which serializes signups under one referrer) and for the
/// new account's stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Signup {
    pub referrer_events: Vec<DomainEvent>,
    pub account_events: Vec<DomainEvent>,
}

/// Decides a signup from the new account's state and the referrer's (when a code was
/// given, `None` if it resolved to no account).
pub fn decide_open(
    state: &AccountState,
    referrer: Option<&AccountState>,
    command: &OpenAccount,
    policy: &FraudPolicy,
) -> Result<Signup, Rejection> {
    if let Some(account) = &state.account {
        let opened = &account.opened;
        let same = opened.referral_code == command.referral_code
            && opened.referred_with_code == command.referred_with_code
            && opened.personal_data == command.personal_data
            && opened.email_fingerprint == command.email_fingerprint
            && opened.ip_fingerprint == command.ip_fingerprint
            && opened.payment_fingerprint == command.payment_fingerprint
            && opened.opened_at == command.opened_at;
        return if same {
            Ok(Signup::default())
        } else {
            Err(Rejection::AccountExists {
                account_id: command.account_id,
            })
        };
    }
    let Some(code) = command.referred_with_code else {
        return Ok(Signup {
            referrer_events: Vec::new(),
            account_events: vec![opened(command, None, Vec::new())],
        });
    };
    let referrer = referrer
        .and_then(|state| state.account.as_ref())
        .filter(|account| {
            account.opened.referral_code == code && account.id() != command.account_id
        })
        .ok_or(Rejection::ReferrerNotFound {
            referral_code: code,
        })?;

    // A signup retried after its referral was recorded keeps the flags decided then.
    if let Some(recorded) = referrer.referrals.get(&command.account_id) {
        return Ok(Signup {
            referrer_events: Vec::new(),
            account_events: vec![opened(
                command,
                Some(referrer.id()),
                recorded.fraud_flags.clone(),
            )],
        });
    }
    let flags = fraud_flags(referrer, command, policy);
    Ok(Signup {
        referrer_events: vec![DomainEvent::ReferralRecorded(ReferralRecorded {
            referrer: referrer.id(),
            referee: command.account_id,
            fraud_flags: flags.clone(),
            recorded_at: command.opened_at,
        })],
        account_events: vec![opened(command, Some(referrer.id()), flags)],
    })
}

fn fraud_flags(referrer: &Account, command: &OpenAccount, policy: &FraudPolicy) -> Vec<FraudFlag> {
    let mut flags = Vec::new();
    if referrer.email_fingerprint == command.email_fingerprint
        || referrer.opened.email_fingerprint == command.email_fingerprint
    {
        flags.push(FraudFlag::SelfReferralEmail);
    }
    if command.payment_fingerprint.is_some()
        && referrer.opened.payment_fingerprint == command.payment_fingerprint
    {
        flags.push(FraudFlag::SelfReferralPaymentMethod);
    }
    let apart = command.opened_at - referrer.opened.opened_at;
    if referrer.opened.ip_fingerprint == command.ip_fingerprint
        && apart.abs() <= policy.same_ip_window
    {
        flags.push(FraudFlag::SelfReferralIp);
    }
    let day = command.opened_at.date_naive();
    let today = referrer
        .referrals
        .values()
        .filter(|referral| referral.recorded_at.date_naive() == day)
        .count();
    if today >= policy.referrals_per_day_max as usize {
        flags.push(FraudFlag::ReferralVelocity);
    }
    flags
}

fn opened(
    command: &OpenAccount,
    referrer: Option<AccountId>,
    fraud_flags: Vec<FraudFlag>,
) -> DomainEvent {
    DomainEvent::AccountOpened(AccountOpened {
        account_id: command.account_id,
        referral_code: command.referral_code,
        referrer,
        referred_with_code: command.referred_with_code,
        fraud_flags,
        personal_data: command.personal_data.clone(),
        email_fingerprint: command.email_fingerprint.clone(),
        ip_fingerprint: command.ip_fingerprint.clone(),
        payment_fingerprint: command.payment_fingerprint.clone(),
        opened_at: command.opened_at,
    })
}

/// Who owns a referral code (stream `referral-code-{code}`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferralCodeState {
    pub owner: Option<AccountId>,
}

/// Claims `code` for `account`. Claiming one's own code again records nothing.
pub fn decide_claim(
    state: &ReferralCodeState,
    code: ReferralCode,
    account: AccountId,
    claimed_at: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, Rejection> {
    match state.owner {
        Some(owner) if owner == account => Ok(Vec::new()),
        Some(_) => Err(Rejection::ReferralCodeTaken {
            referral_code: code,
        }),
        None => Ok(vec![DomainEvent::ReferralCodeClaimed(
            ReferralCodeClaimed {
                referral_code: code,
                account_id: account,
                claimed_at,
            },
        )]),
    }
}

pub fn evolve_claim(mut state: ReferralCodeState, event: &DomainEvent) -> ReferralCodeState {
    if let DomainEvent::ReferralCodeClaimed(claimed) = event {
        assert!(state.owner.is_none(), "a referral code is claimed once");
        state.owner = Some(claimed.account_id);
    }
    state
}

/// Commands on an existing account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountCommand {
    CorrectPersonalData {
        personal_data: PersonalData,
        email_fingerprint: Fingerprint,
        corrected_at: DateTime<Utc>,
    },
    StartSubscription {
        subscription_id: SubscriptionId,
        product: ProductId,
        started_at: DateTime<Utc>,
    },
    CancelSubscription {
        subscription_id: SubscriptionId,
        cancelled_at: DateTime<Utc>,
    },
    GrantCredits {
        grant_id: GrantId,
        credits: Credits,
        reason: GrantReason,
        expires_at: Option<DateTime<Utc>>,
        granted_at: DateTime<Utc>,
    },
    /// Credits bought with a credit-pack payment (the grant id is the payment's).
    PurchaseCredits {
        payment_id: PaymentId,
        credits: Credits,
        expires_at: Option<DateTime<Utc>>,
        purchased_at: DateTime<Utc>,
    },
    SpendCredits {
        spend_id: SpendId,
        persona: PersonaId,
        credits: Credits,
        spent_at: DateTime<Utc>,
    },
    /// Records the expiry of every grant past its expiry date at `expired_at`.
    ExpireCredits { expired_at: DateTime<Utc> },
    /// Holds `credits` until `expires_at`, out of the available balance.
    ReserveCredits {
        reservation_id: ReservationId,
        credits: Credits,
        persona: Option<PersonaId>,
        expires_at: DateTime<Utc>,
        reserved_at: DateTime<Utc>,
    },
    /// Spends `credits` of a reservation and releases the rest.
    CaptureReservation {
        reservation_id: ReservationId,
        credits: Credits,
        captured_at: DateTime<Utc>,
    },
    /// Releases a whole reservation.
    VoidReservation {
        reservation_id: ReservationId,
        voided_at: DateTime<Utc>,
    },
    /// Records the release of every open reservation whose expiry is at or before
    /// `expired_at` (the server's sweeper).
    ExpireReservations { expired_at: DateTime<Utc> },
}

/// The account a command is for, with the command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForAccount {
    pub account_id: AccountId,
    pub command: AccountCommand,
}

pub fn decide(state: &AccountState, command: &ForAccount) -> Result<Vec<DomainEvent>, Rejection> {
    let account_id = command.account_id;
    let account = state
        .account
        .as_ref()
        .filter(|account| account.id() == account_id)
        .ok_or(Rejection::AccountNotFound { account_id })?;
    match &command.command {
        AccountCommand::CorrectPersonalData {
            personal_data,
            email_fingerprint,
            corrected_at,
        } => {
            if account.personal_data == *personal_data
                && account.email_fingerprint == *email_fingerprint
            {
                return Ok(Vec::new());
            }
            Ok(vec![DomainEvent::PersonalDataCorrected(
                PersonalDataCorrected {
                    account_id,
                    personal_data: personal_data.clone(),
                    email_fingerprint: email_fingerprint.clone(),
                    corrected_at: *corrected_at,
                },
            )])
        }
        AccountCommand::StartSubscription {
            subscription_id,
            product,
            started_at,
        } => {
            if account.subscriptions.get(subscription_id) == Some(&true) {
                return Err(Rejection::SubscriptionActive {
                    subscription_id: subscription_id.clone(),
                });
            }
            Ok(vec![DomainEvent::SubscriptionStarted(
                SubscriptionStarted {
                    account_id,
                    subscription_id: subscription_id.clone(),
                    product: product.clone(),
                    started_at: *started_at,
                },
            )])
        }
        AccountCommand::CancelSubscription {
            subscription_id,
            cancelled_at,
        } => {
            if account.subscriptions.get(subscription_id) != Some(&true) {
                return Err(Rejection::SubscriptionNotActive {
                    subscription_id: subscription_id.clone(),
                });
            }
            Ok(vec![DomainEvent::SubscriptionCancelled(
                SubscriptionCancelled {
                    account_id,
                    subscription_id: subscription_id.clone(),
                    cancelled_at: *cancelled_at,
                },
            )])
        }
        AccountCommand::GrantCredits {
            grant_id,
            credits,
            reason,
            expires_at,
            granted_at,
        } => {
            let event = DomainEvent::CreditsGranted(CreditsGranted {
                account_id,
                grant_id: grant_id.clone(),
                credits: *credits,
                reason: *reason,
                expires_at: *expires_at,
                granted_at: *granted_at,
            });
            decide_grant(
                &account.wallet,
                grant_id,
                *credits,
                *expires_at,
                *granted_at,
                event,
            )
        }
        AccountCommand::PurchaseCredits {
            payment_id,
            credits,
            expires_at,
            purchased_at,
        } => {
            let grant_id =
                GrantId::parse(payment_id.as_str()).expect("payment ids are valid grant ids");
            let event = DomainEvent::CreditsPurchased(CreditsPurchased {
                account_id,
                grant_id: grant_id.clone(),
                payment_id: payment_id.clone(),
                credits: *credits,
                expires_at: *expires_at,
                purchased_at: *purchased_at,
            });
            decide_grant(
                &account.wallet,
                &grant_id,
                *credits,
                *expires_at,
                *purchased_at,
                event,
            )
        }
        AccountCommand::SpendCredits {
            spend_id,
            persona,
            credits,
            spent_at,
        } => decide_spend(
            &account.wallet,
            account_id,
            spend_id,
            persona,
            *credits,
            *spent_at,
        ),
        AccountCommand::ExpireCredits { expired_at } => {
            // Reservations past their expiry release first, so what they held in grants
            // past theirs expires too.
            let mut events = reservation::lapsed(&account.wallet, account_id, *expired_at);
            let held = account.wallet.held_at(*expired_at);
            events.extend(
                account
                    .wallet
                    .grants
                    .iter()
                    .filter(|(_, grant)| {
                        grant.expires_at.is_some_and(|expiry| expiry <= *expired_at)
                    })
                    .filter_map(|(grant_id, grant)| {
                        let held = held.get(grant_id).copied().unwrap_or_default();
                        let free = grant
                            .remaining
                            .checked_sub(held)
                            .expect("live reservations hold at most what a grant has left");
                        (!free.is_zero()).then(|| {
                            DomainEvent::CreditsExpired(CreditsExpired {
                                account_id,
                                grant_id: grant_id.clone(),
                                credits: free,
                                expired_at: *expired_at,
                            })
                        })
                    }),
            );
            Ok(events)
        }
        AccountCommand::ReserveCredits {
            reservation_id,
            credits,
            persona,
            expires_at,
            reserved_at,
        } => reservation::decide_reserve(
            &account.wallet,
            account_id,
            reservation::Reserve {
                reservation_id,
                credits: *credits,
                persona: persona.as_ref(),
                expires_at: *expires_at,
                reserved_at: *reserved_at,
            },
        ),
        AccountCommand::CaptureReservation {
            reservation_id,
            credits,
            captured_at,
        } => reservation::decide_capture(
            &account.wallet,
            account_id,
            reservation_id,
            *credits,
            *captured_at,
        ),
        AccountCommand::VoidReservation {
            reservation_id,
            voided_at,
        } => reservation::decide_void(&account.wallet, account_id, reservation_id, *voided_at),
        AccountCommand::ExpireReservations { expired_at } => Ok(reservation::lapsed(
            &account.wallet,
            account_id,
            *expired_at,
        )),
    }
}

fn decide_grant(
    wallet: &Wallet,
    grant_id: &GrantId,
    credits: Credits,
    expires_at: Option<DateTime<Utc>>,
    granted_at: DateTime<Utc>,
    event: DomainEvent,
) -> Result<Vec<DomainEvent>, Rejection> {
    if let Some(existing) = wallet.grants.get(grant_id) {
        return if existing.source == event {
            Ok(Vec::new())
        } else {
            Err(Rejection::IdempotencyConflict {
                key: format!("grant {grant_id}"),
            })
        };
    }
    if credits.is_zero() {
        return Err(Rejection::CreditsNotPositive);
    }
    if let Some(expiry) = expires_at {
        if expiry <= granted_at {
            return Err(Rejection::ExpiryNotAfterGrant { expires_at: expiry });
        }
    }
    if wallet.active_grants() >= ACTIVE_GRANTS_MAX {
        return Err(Rejection::TooManyActiveGrants {
            active_max: ACTIVE_GRANTS_MAX,
        });
    }
    if wallet.remaining_total().checked_add(credits).is_none() {
        return Err(Rejection::CreditsLimitExceeded);
    }
    Ok(vec![event])
}

fn decide_spend(
    wallet: &Wallet,
    account_id: AccountId,
    spend_id: &SpendId,
    persona: &PersonaId,
    credits: Credits,
    spent_at: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, Rejection> {
    // A spend id names one spend: the same spend again (a retried request, whatever its
    // timestamp) records nothing; another spend under the same id is a conflict.
    if let Some(existing) = wallet.spends.get(spend_id) {
        return if existing.persona == *persona && existing.credits == credits {
            Ok(Vec::new())
        } else {
            Err(Rejection::IdempotencyConflict {
                key: format!("spend {spend_id}"),
            })
        };
    }
    if credits.is_zero() {
        return Err(Rejection::CreditsNotPositive);
    }
    let Some(drawn) = wallet.draw(spent_at, credits) else {
        return Err(Rejection::InsufficientCredits {
            balance: wallet.available_at(spent_at),
            requested: credits,
        });
    };
    // Reservations past their expiry at the spend's time are released first, in the same
    // append: the spend may draw what they held.
    let mut events = reservation::lapsed(wallet, account_id, spent_at);
    events.push(DomainEvent::CreditsSpent(CreditsSpent {
        account_id,
        spend_id: spend_id.clone(),
        persona: persona.clone(),
        credits,
        drawn,
        spent_at,
    }));
    Ok(events)
}

pub fn evolve(mut state: AccountState, event: &DomainEvent) -> AccountState {
    if let DomainEvent::AccountOpened(opened) = event {
        assert!(state.account.is_none(), "an account opens once");
        state.account = Some(Account {
            opened: opened.clone(),
            personal_data: opened.personal_data.clone(),
            email_fingerprint: opened.email_fingerprint.clone(),
            referrals: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            wallet: Wallet::default(),
        });
        return state;
    }
    let Some(account) = state.account.as_mut() else {
        panic!("{} recorded before its account opened", event.event_type());
    };
    match event {
        DomainEvent::ReferralRecorded(recorded) => {
            account.referrals.insert(recorded.referee, recorded.clone());
        }
        DomainEvent::PersonalDataCorrected(corrected) => {
            account.personal_data = corrected.personal_data.clone();
            account.email_fingerprint = corrected.email_fingerprint.clone();
        }
        DomainEvent::SubscriptionStarted(started) => {
            account
                .subscriptions
                .insert(started.subscription_id.clone(), true);
        }
        DomainEvent::SubscriptionCancelled(cancelled) => {
            account
                .subscriptions
                .insert(cancelled.subscription_id.clone(), false);
        }
        DomainEvent::CreditsGranted(granted) => {
            add_grant(
                &mut account.wallet,
                &granted.grant_id,
                granted.credits,
                granted.expires_at,
                granted.granted_at,
                event,
            );
        }
        DomainEvent::CreditsPurchased(purchased) => {
            add_grant(
                &mut account.wallet,
                &purchased.grant_id,
                purchased.credits,
                purchased.expires_at,
                purchased.purchased_at,
                event,
            );
        }
        DomainEvent::CreditsSpent(spent) => {
            let mut total = Credits::ZERO;
            for draw in &spent.drawn {
                let grant = account.wallet.grant_mut(&draw.grant_id);
                assert!(
                    draw.credits <= grant.unreserved(),
                    "a spend never draws what reservations hold"
                );
                grant.remaining = grant
                    .remaining
                    .checked_sub(draw.credits)
                    .expect("a spend never draws more than a grant holds");
                total = total
                    .checked_add(draw.credits)
                    .expect("draws sum within CREDITS_MAX");
            }
            assert_eq!(total, spent.credits, "a spend's draws sum to its credits");
            account
                .wallet
                .spends
                .insert(spent.spend_id.clone(), spent.clone());
        }
        DomainEvent::CreditsExpired(expired) => {
            let grant = account.wallet.grant_mut(&expired.grant_id);
            // What reservations hold stays with them; the rest expires, exactly.
            assert_eq!(
                grant.unreserved(),
                expired.credits,
                "an expiry takes exactly the unreserved remainder"
            );
            grant.remaining = grant.reserved;
        }
        DomainEvent::CreditsReserved(reserved) => {
            reservation::evolve_reserved(&mut account.wallet, reserved);
        }
        DomainEvent::ReservationCaptured(captured) => {
            reservation::evolve_captured(&mut account.wallet, captured);
        }
        DomainEvent::ReservationVoided(voided) => {
            reservation::evolve_voided(&mut account.wallet, voided);
        }
        DomainEvent::ReservationExpired(expired) => {
            reservation::evolve_expired(&mut account.wallet, expired);
        }
        _ => {}
    }
    state
}

fn add_grant(
    wallet: &mut Wallet,
    grant_id: &GrantId,
    credits: Credits,
    expires_at: Option<DateTime<Utc>>,
    granted_at: DateTime<Utc>,
    event: &DomainEvent,
) {
    assert!(
        !wallet.grants.contains_key(grant_id),
        "a grant id is recorded once"
    );
    assert!(credits.units() <= CREDITS_MAX);
    wallet.grants.insert(
        grant_id.clone(),
        Grant {
            credits,
            remaining: credits,
            reserved: Credits::ZERO,
            expires_at,
            granted_at,
            sequence: wallet.grants_recorded,
            source: event.clone(),
        },
    );
    wallet.grants_recorded += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::scenario::account_id;
    use crate::domain::scenario::{at, Given};

    fn fingerprint(text: &str) -> Fingerprint {
        Fingerprint::parse(text).unwrap()
    }

    fn open(n: u8, referred_with: Option<ReferralCode>, when: &str) -> OpenAccount {
        OpenAccount {
            account_id: account_id(n),
            referral_code: ReferralCode::for_account(account_id(n)),
            referred_with_code: referred_with,
            personal_data: PersonalData::parse(
                &format!("Person {n}"),
                &format!("p{n}@example.org"),
                "192.0.2.1",
            )
            .unwrap(),
            email_fingerprint: fingerprint(&format!("email-{n}")),
            ip_fingerprint: fingerprint(&format!("ip-{n}")),
            payment_fingerprint: None,
            opened_at: at(when),
        }
    }

    fn opened_events(command: &OpenAccount) -> Vec<DomainEvent> {
        decide_open(
            &AccountState::default(),
            None,
            &OpenAccount {
                referred_with_code: None,
                ..command.clone()
            },
            &FraudPolicy::default(),
        )
        .unwrap()
        .account_events
    }

    fn given(events: Vec<DomainEvent>) -> Given<AccountState> {
        Given::new(AccountState::default(), evolve, events)
    }

    fn referrer_state() -> AccountState {
        given(opened_events(&open(1, None, "2026-10-01T00:00:00Z"))).state
    }

    fn signup_flags(signup: &Signup) -> Vec<FraudFlag> {
        match &signup.account_events[..] {
            [DomainEvent::AccountOpened(opened)] => opened.fraud_flags.clone(),
            other => panic!("expected one AccountOpened, got {other:?}"),
        }
    }

    #[test]
    fn a_referral_code_makes_its_owner_the_referrer() {
        let referrer = referrer_state();
        let code = ReferralCode::for_account(account_id(1));
        let command = open(2, Some(code), "2026-11-20T10:00:00Z");
        let signup = given(vec![])
            .when(|state| decide_open(state, Some(&referrer), &command, &FraudPolicy::default()))
            .then_ok();
        let [DomainEvent::AccountOpened(opened)] = &signup.account_events[..] else {
            panic!("expected AccountOpened, got {:?}", signup.account_events);
        };
        assert_eq!(opened.referrer, Some(account_id(1)));
        assert!(opened.fraud_flags.is_empty());
        assert_eq!(
            signup.referrer_events,
            vec![DomainEvent::ReferralRecorded(ReferralRecorded {
                referrer: account_id(1),
                referee: account_id(2),
                fraud_flags: vec![],
                recorded_at: at("2026-11-20T10:00:00Z"),
            })]
        );
    }

    #[test]
    fn an_unknown_referral_code_is_rejected() {
        let code = ReferralCode::parse("ZZZZZZZZ").unwrap();
        let command = open(2, Some(code), "2026-11-20T10:00:00Z");
        given(vec![])
            .when(|state| decide_open(state, None, &command, &FraudPolicy::default()))
            .then_rejected("referrer_not_found");
        // A code that resolves to an account owning another code is not a referrer either.
        let referrer = referrer_state();
        given(vec![])
            .when(|state| decide_open(state, Some(&referrer), &command, &FraudPolicy::default()))
            .then_rejected("referrer_not_found");
    }

    #[test]
    fn an_account_opens_once_and_a_repeat_records_nothing() {
        let command = open(1, None, "2026-10-01T00:00:00Z");
        let history = opened_events(&command);
        given(history.clone())
            .when(|state| decide_open(state, None, &command, &FraudPolicy::default()))
            .then_events(Signup::default());
        let other = OpenAccount {
            email_fingerprint: fingerprint("email-other"),
            ..command
        };
        given(history)
            .when(|state| decide_open(state, None, &other, &FraudPolicy::default()))
            .then_rejected("account_exists");
    }

    #[test]
    fn self_referrals_are_flagged_with_their_reason() {
        let referrer = referrer_state();
        let code = ReferralCode::for_account(account_id(1));
        let policy = FraudPolicy::default();
        let mut same_email = open(2, Some(code), "2026-11-20T10:00:00Z");
        same_email.email_fingerprint = fingerprint("email-1");
        let signup = given(vec![])
            .when(|s| decide_open(s, Some(&referrer), &same_email, &policy))
            .then_ok();
        assert_eq!(signup_flags(&signup), vec![FraudFlag::SelfReferralEmail]);

        let mut same_ip_soon = open(2, Some(code), "2026-10-20T10:00:00Z");
        same_ip_soon.ip_fingerprint = fingerprint("ip-1");
        let signup = given(vec![])
            .when(|s| decide_open(s, Some(&referrer), &same_ip_soon, &policy))
            .then_ok();
        assert_eq!(signup_flags(&signup), vec![FraudFlag::SelfReferralIp]);
        assert_eq!(signup.referrer_events.len(), 1);

        // The same IP long after the referrer's signup is another person on a reused address.
        let same_ip_later = OpenAccount {
            opened_at: at("2026-12-20T10:00:00Z"),
            ..same_ip_soon
        };
        let signup = given(vec![])
            .when(|s| decide_open(s, Some(&referrer), &same_ip_later, &policy))
            .then_ok();
        assert!(signup_flags(&signup).is_empty());

        let mut card_referrer = open(1, None, "2026-10-01T00:00:00Z");
        card_referrer.payment_fingerprint = Some(fingerprint("card-1"));
        let referrer = given(opened_events(&card_referrer)).state;
        let mut same_card = open(2, Some(code), "2026-11-20T10:00:00Z");
        same_card.payment_fingerprint = Some(fingerprint("card-1"));
        let signup = given(vec![])
            .when(|s| decide_open(s, Some(&referrer), &same_card, &policy))
            .then_ok();
        assert_eq!(
            signup_flags(&signup),
            vec![FraudFlag::SelfReferralPaymentMethod]
        );
    }

    #[test]
    fn referrals_beyond_the_daily_limit_are_flagged() {
        let policy = FraudPolicy {
            referrals_per_day_max: 2,
            ..FraudPolicy::default()
        };
        let code = ReferralCode::for_account(account_id(1));
        let mut history = opened_events(&open(1, None, "2026-10-01T00:00:00Z"));
        for (n, when) in [
            (2, "2026-11-20T01:00:00Z"),
            (3, "2026-11-20T02:00:00Z"),
            (4, "2026-11-20T03:00:00Z"),
            (5, "2026-11-21T00:00:00Z"),
        ] {
            let referrer = given(history.clone()).state;
            let command = open(n, Some(code), when);
            let signup = given(vec![])
                .when(|s| decide_open(s, Some(&referrer), &command, &policy))
                .then_ok();
            let expected = if n == 4 {
                vec![FraudFlag::ReferralVelocity]
            } else {
                vec![]
            };
            assert_eq!(signup_flags(&signup), expected, "referee {n}");
            history.extend(signup.referrer_events);
        }
    }

    #[test]
    fn a_signup_retried_after_its_referral_was_recorded_keeps_the_flags() {
        let code = ReferralCode::for_account(account_id(1));
        let mut command = open(2, Some(code), "2026-10-02T00:00:00Z");
        command.ip_fingerprint = fingerprint("ip-1");
        let referrer = referrer_state();
        let first = decide_open(
            &AccountState::default(),
            Some(&referrer),
            &command,
            &FraudPolicy::default(),
        )
        .unwrap();
        let mut history = opened_events(&open(1, None, "2026-10-01T00:00:00Z"));
        history.extend(first.referrer_events.clone());
        let referrer = given(history).state;
        let retry = decide_open(
            &AccountState::default(),
            Some(&referrer),
            &command,
            &FraudPolicy::default(),
        )
        .unwrap();
        assert!(retry.referrer_events.is_empty());
        assert_eq!(retry.account_events, first.account_events);
    }

    #[test]
    fn referral_codes_have_one_owner() {
        let code = ReferralCode::parse("ABCDEFGH").unwrap();
        let when = at("2026-10-01T00:00:00Z");
        let events =
            decide_claim(&ReferralCodeState::default(), code, account_id(1), when).unwrap();
        assert_eq!(events.len(), 1);
        let state = events
            .iter()
            .fold(ReferralCodeState::default(), evolve_claim);
        assert_eq!(state.owner, Some(account_id(1)));
        assert_eq!(decide_claim(&state, code, account_id(1), when), Ok(vec![]));
        assert_eq!(
            decide_claim(&state, code, account_id(2), when)
                .unwrap_err()
                .code(),
            "referral_code_taken"
        );
    }

    fn credits(n: u64) -> Credits {
        Credits::new(n).unwrap()
    }

    fn grant(id: &str, n: u64, expires: Option<&str>, when: &str) -> ForAccount {
        ForAccount {
            account_id: account_id(1),
            command: AccountCommand::GrantCredits {
                grant_id: GrantId::parse(id).unwrap(),
                credits: credits(n),
                reason: GrantReason::Promotion,
                expires_at: expires.map(at),
                granted_at: at(when),
            },
        }
    }

    fn spend(id: &str, n: u64, when: &str) -> ForAccount {
        ForAccount {
            account_id: account_id(1),
            command: AccountCommand::SpendCredits {
                spend_id: SpendId::parse(id).unwrap(),
                persona: PersonaId::parse("oceanographer").unwrap(),
                credits: credits(n),
                spent_at: at(when),
            },
        }
    }

    /// Decides each command in turn on the growing history.
    fn history(commands: &[ForAccount]) -> Vec<DomainEvent> {
        let mut events = opened_events(&open(1, None, "2026-10-01T00:00:00Z"));
        for command in commands {
            let state = given(events.clone()).state;
            events.extend(decide(&state, command).unwrap());
        }
        events
    }

    #[test]
    fn spends_draw_down_earliest_expiry_first_then_oldest() {
        let events = history(&[
            grant("never", 10, None, "2026-10-01T00:00:00Z"),
            grant(
                "late",
                10,
                Some("2027-03-01T00:00:00Z"),
                "2026-10-02T00:00:00Z",
            ),
            grant(
                "soon-old",
                5,
                Some("2027-01-01T00:00:00Z"),
                "2026-10-03T00:00:00Z",
            ),
            grant(
                "soon-new",
                5,
                Some("2027-01-01T00:00:00Z"),
                "2026-10-04T00:00:00Z",
            ),
        ]);
        let spent = given(events)
            .when(|s| decide(s, &spend("s1", 22, "2026-11-01T00:00:00Z")))
            .then_ok();
        let [DomainEvent::CreditsSpent(spent)] = &spent[..] else {
            panic!("{spent:?}")
        };
        let drawn: Vec<(&str, u64)> = spent
            .drawn
            .iter()
            .map(|d| (d.grant_id.as_str(), d.credits.units()))
            .collect();
        assert_eq!(
            drawn,
            vec![("soon-old", 5), ("soon-new", 5), ("late", 10), ("never", 2)]
        );
    }

    #[test]
    fn a_spend_larger_than_the_balance_is_rejected() {
        let events = history(&[grant(
            "g",
            10,
            Some("2026-12-01T00:00:00Z"),
            "2026-10-01T00:00:00Z",
        )]);
        let rejection = given(events.clone())
            .when(|s| decide(s, &spend("s1", 11, "2026-11-01T00:00:00Z")))
            .then_rejected("insufficient_credits");
        assert_eq!(
            rejection,
            Rejection::InsufficientCredits {
                balance: credits(10),
                requested: credits(11)
            }
        );
        // A grant made after the spend's time is not there yet.
        given(events.clone())
            .when(|s| decide(s, &spend("s1", 1, "2026-09-30T23:59:59Z")))
            .then_rejected("insufficient_credits");
        // An expired grant no longer counts, even before its expiry is recorded.
        given(events)
            .when(|s| decide(s, &spend("s1", 1, "2026-12-01T00:00:00Z")))
            .then_rejected("insufficient_credits");
    }

    #[test]
    fn a_spend_id_is_idempotent() {
        let events = history(&[
            grant("g", 10, None, "2026-10-01T00:00:00Z"),
            spend("s1", 4, "2026-10-02T00:00:00Z"),
        ]);
        given(events.clone())
            .when(|s| decide(s, &spend("s1", 4, "2026-10-02T00:05:00Z")))
            .then_events(vec![]);
        given(events.clone())
            .when(|s| decide(s, &spend("s1", 5, "2026-10-02T00:00:00Z")))
            .then_rejected("idempotency_conflict");
        assert_eq!(
            given(events)
                .state
                .account
                .unwrap()
                .wallet
                .balance_at(at("2026-10-03T00:00:00Z")),
            credits(6)
        );
    }

    #[test]
    fn expiry_records_the_exact_remainder() {
        let events = history(&[
            grant(
                "g",
                10,
                Some("2026-12-01T00:00:00Z"),
                "2026-10-01T00:00:00Z",
            ),
            grant("h", 3, None, "2026-10-01T00:00:00Z"),
            spend("s1", 4, "2026-11-01T00:00:00Z"),
        ]);
        given(events.clone())
            .when(|s| decide(s, &expire("2026-11-30T23:59:59Z")))
            .then_events(vec![]);
        let expired = given(events.clone())
            .when(|s| decide(s, &expire("2026-12-01T00:00:00Z")))
            .then_ok();
        assert_eq!(
            expired,
            vec![DomainEvent::CreditsExpired(CreditsExpired {
                account_id: account_id(1),
                grant_id: GrantId::parse("g").unwrap(),
                credits: credits(6),
                expired_at: at("2026-12-01T00:00:00Z"),
            })]
        );
        let mut all = events;
        all.extend(expired);
        let state = given(all).state;
        assert_eq!(
            state.account.as_ref().unwrap().wallet.remaining_total(),
            credits(3)
        );
        given(vec![])
            .when(|_| decide(&state, &expire("2026-12-02T00:00:00Z")))
            .then_events(vec![]);
    }

    fn expire(when: &str) -> ForAccount {
        ForAccount {
            account_id: account_id(1),
            command: AccountCommand::ExpireCredits {
                expired_at: at(when),
            },
        }
    }

    #[test]
    fn grants_are_checked_and_idempotent() {
        let events = history(&[grant("g", 10, None, "2026-10-01T00:00:00Z")]);
        given(events.clone())
            .when(|s| decide(s, &grant("g", 10, None, "2026-10-01T00:00:00Z")))
            .then_events(vec![]);
        given(events.clone())
            .when(|s| decide(s, &grant("g", 11, None, "2026-10-01T00:00:00Z")))
            .then_rejected("idempotency_conflict");
        given(events.clone())
            .when(|s| decide(s, &grant("z", 0, None, "2026-10-01T00:00:00Z")))
            .then_rejected("credits_not_positive");
        given(events.clone())
            .when(|s| {
                decide(
                    s,
                    &grant("x", 1, Some("2026-10-01T00:00:00Z"), "2026-10-01T00:00:00Z"),
                )
            })
            .then_rejected("expiry_not_after_grant");
        given(events)
            .when(|s| decide(s, &grant("big", CREDITS_MAX, None, "2026-10-01T00:00:00Z")))
            .then_rejected("credits_limit_exceeded");
        given(vec![])
            .when(|s| decide(s, &grant("g", 1, None, "2026-10-01T00:00:00Z")))
            .then_rejected("account_not_found");
    }

    #[test]
    fn an_account_holds_a_bounded_number_of_active_grants() {
        let mut events = opened_events(&open(1, None, "2026-10-01T00:00:00Z"));
        events.extend((0..ACTIVE_GRANTS_MAX).map(|n| {
            DomainEvent::CreditsGranted(CreditsGranted {
                account_id: account_id(1),
                grant_id: GrantId::parse(&format!("g{n}")).unwrap(),
                credits: credits(1),
                reason: GrantReason::Promotion,
                expires_at: None,
                granted_at: at("2026-10-01T00:00:00Z"),
            })
        }));
        given(events.clone())
            .when(|s| decide(s, &grant("one-more", 1, None, "2026-10-02T00:00:00Z")))
            .then_rejected("too_many_active_grants");
        // Spending one grant empty makes room again.
        let spent = given(events.clone())
            .when(|s| decide(s, &spend("s", 1, "2026-10-02T00:00:00Z")))
            .then_ok();
        events.extend(spent);
        given(events)
            .when(|s| decide(s, &grant("one-more", 1, None, "2026-10-02T00:00:00Z")))
            .then_ok();
    }

    #[test]
    fn purchased_credits_are_a_grant_keyed_by_the_payment() {
        let purchase = ForAccount {
            account_id: account_id(1),
            command: AccountCommand::PurchaseCredits {
                payment_id: PaymentId::parse("pi_1").unwrap(),
                credits: credits(100),
                expires_at: None,
                purchased_at: at("2026-10-05T00:00:00Z"),
            },
        };
        let events = history(std::slice::from_ref(&purchase));
        given(events.clone())
            .when(|s| decide(s, &purchase))
            .then_events(vec![]);
        let state = given(events).state;
        assert_eq!(
            state
                .account
                .unwrap()
                .wallet
                .balance_at(at("2026-10-06T00:00:00Z")),
            credits(100)
        );
    }

    #[test]
    fn subscriptions_start_and_cancel_once() {
        let sub = SubscriptionId::parse("sub_1").unwrap();
        let start = ForAccount {
            account_id: account_id(1),
            command: AccountCommand::StartSubscription {
                subscription_id: sub.clone(),
                product: ProductId::parse("pro-monthly").unwrap(),
                started_at: at("2026-10-02T00:00:00Z"),
            },
        };
        let cancel = ForAccount {
            account_id: account_id(1),
            command: AccountCommand::CancelSubscription {
                subscription_id: sub,
                cancelled_at: at("2026-11-02T00:00:00Z"),
            },
        };
        given(history(&[]))
            .when(|s| decide(s, &cancel))
            .then_rejected("subscription_not_active");
        let events = history(std::slice::from_ref(&start));
        given(events.clone())
            .when(|s| decide(s, &start))
            .then_rejected("subscription_active");
        let cancelled = given(events).when(|s| decide(s, &cancel)).then_ok();
        assert_eq!(cancelled.len(), 1);
    }

    #[test]
    fn personal_data_corrections_replace_and_repeat_as_nothing() {
        let data = PersonalData::parse("Ada L.", "ada@example.org", "192.0.2.9").unwrap();
        let correct = ForAccount {
            account_id: account_id(1),
            command: AccountCommand::CorrectPersonalData {
                personal_data: data.clone(),
                email_fingerprint: fingerprint("email-ada"),
                corrected_at: at("2026-10-03T00:00:00Z"),
            },
        };
        let events = history(std::slice::from_ref(&correct));
        let state = given(events.clone()).state;
        assert_eq!(state.account.as_ref().unwrap().personal_data, data);
        given(events)
            .when(|s| decide(s, &correct))
            .then_events(vec![]);
    }
}
