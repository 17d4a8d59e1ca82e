//! Credit reservations: authorise now, capture later (TigerBeetle's pending transfers,
//! which post, void or expire). Stream `account-{id}`, in the account's [`Wallet`].
//!
//! The cost of a reply to an AI specialist is known only once it is generated. A
//! reservation takes the credits out of the available balance before the reply is made,
//! so two replies generated at once cannot both pass a balance check; the capture then
//! spends what the reply cost, at most what was reserved, and releases the rest.
//!
//! - **Reserve** draws the credits in the draw-down order (earliest expiry first, then
//!   oldest) and holds them inside those grants (`Grant::reserved`) until `expires_at`.
//! - **Capture** spends `credits` of it (the reservation's first draws first) and releases
//!   the rest: one event, `ReservationCaptured`, which the views count as a spend.
//! - **Void** releases all of it. **Expiry** releases all of it too, at the reservation's
//!   own `expires_at`: `ReservationExpired` is recorded by the server's sweeper, or by the
//!   next credit command on the account (a spend, reservation, capture, void or expiry
//!   run prepends the expiries due at its own time to what it records). Readers never wait
//!   for either: a reservation past its expiry counts as released at once.
//! - **A grant that expires under a reservation**: the reservation wins. It holds what it
//!   reserved until it is captured, voided or expires; the grant's expiry takes only its
//!   unreserved remainder. Credits a reservation releases into a grant already past its
//!   expiry are never available again: the next expiry run (`ExpireCredits`) expires them.
//!
//! Every command is idempotent by its reservation id: the same reservation again, or the
//! same capture or void again, records nothing; anything else under the id is refused.

use chrono::{DateTime, Duration, Utc};

use super::account::Wallet;
use super::credits::Credits;
use super::events::{
    CreditsReserved, DomainEvent, GrantDraw, ReservationCaptured, ReservationExpired,
    ReservationVoided,
};
use super::ids::{AccountId, PersonaId, ReservationId};
use super::Rejection;

/// Most reservations one account holds open at once: each holds credits out of every
/// balance check until it settles, and every credit command walks them.
pub const OPEN_RESERVATIONS_MAX: usize = 256;
/// Longest a reservation may live, in seconds: a reply is generated in seconds or
/// minutes; credits held for longer are credits the person cannot use.
pub const RESERVATION_TTL_SECONDS_MAX: i64 = 24 * 60 * 60;

// A command records at most every open reservation's expiry and its own event in one
// append, and an expiry run also one `CreditsExpired` per active grant.
const _: () = assert!(
    OPEN_RESERVATIONS_MAX + super::account::ACTIVE_GRANTS_MAX < crate::store::EVENTS_PER_APPEND_MAX
);
const _: () = assert!(RESERVATION_TTL_SECONDS_MAX > 0);

/// One reservation of a wallet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// The reservation as recorded; also what a repeated reservation is compared with.
    pub reserved: CreditsReserved,
    pub status: ReservationStatus,
}

/// Where a reservation stands, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReservationStatus {
    /// Holding its credits (unless past its expiry: see [`Reservation::live_at`]).
    Open,
    Captured {
        credits: Credits,
        captured_at: DateTime<Utc>,
    },
    Voided {
        voided_at: DateTime<Utc>,
    },
    Expired,
}

impl Reservation {
    /// Whether it holds its credits at `at`: open and not yet past its expiry.
    pub fn live_at(&self, at: DateTime<Utc>) -> bool {
        self.status == ReservationStatus::Open && at < self.reserved.expires_at
    }
}

/// A reservation as the command states it.
pub(super) struct Reserve<'a> {
    pub reservation_id: &'a ReservationId,
    pub credits: Credits,
    pub persona: Option<&'a PersonaId>,
    pub expires_at: DateTime<Utc>,
    pub reserved_at: DateTime<Utc>,
}

pub(super) fn decide_reserve(
    wallet: &Wallet,
    account_id: AccountId,
    command: Reserve<'_>,
) -> Result<Vec<DomainEvent>, Rejection> {
    let Reserve {
        reservation_id,
        credits,
        persona,
        expires_at,
        reserved_at,
    } = command;
    // The same reservation again (a retried request) records nothing, whatever became of
    // it since; another reservation under the same id is a conflict.
    if let Some(existing) = wallet.reservations.get(reservation_id) {
        let first = &existing.reserved;
        return if first.credits == credits
            && first.persona.as_ref() == persona
            && first.expires_at == expires_at
        {
            Ok(Vec::new())
        } else {
            Err(Rejection::IdempotencyConflict {
                key: format!("reservation {reservation_id}"),
            })
        };
    }
    if credits.is_zero() {
        return Err(Rejection::CreditsNotPositive);
    }
    if expires_at <= reserved_at {
        return Err(Rejection::ExpiryNotAfterReservation { expires_at });
    }
    if expires_at - reserved_at > Duration::seconds(RESERVATION_TTL_SECONDS_MAX) {
        return Err(Rejection::ReservationTtlTooLong {
            ttl_seconds_max: RESERVATION_TTL_SECONDS_MAX,
        });
    }
    if wallet.open_reservations_at(reserved_at).count() >= OPEN_RESERVATIONS_MAX {
        return Err(Rejection::TooManyOpenReservations {
            open_max: OPEN_RESERVATIONS_MAX,
        });
    }
    let Some(drawn) = wallet.draw(reserved_at, credits) else {
        return Err(Rejection::InsufficientCredits {
            balance: wallet.available_at(reserved_at),
            requested: credits,
        });
    };
    let mut events = lapsed(wallet, account_id, reserved_at);
    events.push(DomainEvent::CreditsReserved(CreditsReserved {
        account_id,
        reservation_id: reservation_id.clone(),
        credits,
        persona: persona.cloned(),
        drawn,
        expires_at,
        reserved_at,
    }));
    Ok(events)
}

pub(super) fn decide_capture(
    wallet: &Wallet,
    account_id: AccountId,
    reservation_id: &ReservationId,
    credits: Credits,
    captured_at: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, Rejection> {
    let reservation = find(wallet, reservation_id)?;
    let reserved = &reservation.reserved;
    match &reservation.status {
        ReservationStatus::Open => {}
        // The same capture again records nothing; any other is refused.
        ReservationStatus::Captured {
            credits: captured, ..
        } if *captured == credits => return Ok(Vec::new()),
        ReservationStatus::Captured { .. } => {
            return Err(Rejection::ReservationAlreadyCaptured {
                reservation_id: reservation_id.clone(),
            })
        }
        ReservationStatus::Voided { .. } => {
            return Err(Rejection::ReservationAlreadyVoided {
                reservation_id: reservation_id.clone(),
            })
        }
        ReservationStatus::Expired => return Err(expired(reservation)),
    }
    // Past its expiry the reservation has released its credits, recorded or not.
    if !reservation.live_at(captured_at) {
        return Err(expired(reservation));
    }
    if credits.is_zero() {
        return Err(Rejection::CreditsNotPositive);
    }
    if credits > reserved.credits {
        return Err(Rejection::CaptureExceedsReservation {
            reserved: reserved.credits,
            requested: credits,
        });
    }
    let (drawn, released) = split(&reserved.drawn, credits);
    let mut events = lapsed(wallet, account_id, captured_at);
    events.push(DomainEvent::ReservationCaptured(ReservationCaptured {
        account_id,
        reservation_id: reservation_id.clone(),
        persona: reserved.persona.clone(),
        credits,
        drawn,
        released,
        captured_at,
    }));
    Ok(events)
}

pub(super) fn decide_void(
    wallet: &Wallet,
    account_id: AccountId,
    reservation_id: &ReservationId,
    voided_at: DateTime<Utc>,
) -> Result<Vec<DomainEvent>, Rejection> {
    let reservation = find(wallet, reservation_id)?;
    match &reservation.status {
        ReservationStatus::Open => {}
        ReservationStatus::Voided { .. } => return Ok(Vec::new()),
        ReservationStatus::Captured { .. } => {
            return Err(Rejection::ReservationAlreadyCaptured {
                reservation_id: reservation_id.clone(),
            })
        }
        ReservationStatus::Expired => return Err(expired(reservation)),
    }
    if !reservation.live_at(voided_at) {
        return Err(expired(reservation));
    }
    let mut events = lapsed(wallet, account_id, voided_at);
    events.push(DomainEvent::ReservationVoided(ReservationVoided {
        account_id,
        reservation_id: reservation_id.clone(),
        credits: reservation.reserved.credits,
        released: reservation.reserved.drawn.clone(),
        voided_at,
    }));
    Ok(events)
}

/// The expiry of every open reservation whose `expires_at` is at or before `at`, for
/// exactly what each holds, dated at its own expiry.
pub(super) fn lapsed(
    wallet: &Wallet,
    account_id: AccountId,
    at: DateTime<Utc>,
) -> Vec<DomainEvent> {
    wallet
        .open_reservation_ids()
        .iter()
        .map(|id| &wallet.reservations[id].reserved)
        .filter(|reserved| reserved.expires_at <= at)
        .map(|reserved| {
            DomainEvent::ReservationExpired(ReservationExpired {
                account_id,
                reservation_id: reserved.reservation_id.clone(),
                credits: reserved.credits,
                released: reserved.drawn.clone(),
                expired_at: reserved.expires_at,
            })
        })
        .collect()
}

fn find<'w>(wallet: &'w Wallet, id: &ReservationId) -> Result<&'w Reservation, Rejection> {
    wallet
        .reservations
        .get(id)
        .ok_or_else(|| Rejection::ReservationNotFound {
            reservation_id: id.clone(),
        })
}

fn expired(reservation: &Reservation) -> Rejection {
    Rejection::ReservationExpired {
        reservation_id: reservation.reserved.reservation_id.clone(),
        expires_at: reservation.reserved.expires_at,
    }
}

/// Splits a reservation's draws into the first `credits` (spent) and the rest (released).
fn split(drawn: &[GrantDraw], credits: Credits) -> (Vec<GrantDraw>, Vec<GrantDraw>) {
    let mut left = credits;
    let (mut spent, mut released) = (Vec::new(), Vec::new());
    for draw in drawn {
        let take = draw.credits.min(left);
        left = left
            .checked_sub(take)
            .expect("take is at most what is left");
        let rest = draw
            .credits
            .checked_sub(take)
            .expect("take is at most the draw");
        if !take.is_zero() {
            spent.push(GrantDraw {
                grant_id: draw.grant_id.clone(),
                credits: take,
            });
        }
        if !rest.is_zero() {
            released.push(GrantDraw {
                grant_id: draw.grant_id.clone(),
                credits: rest,
            });
        }
    }
    assert!(left.is_zero(), "a capture is at most what was reserved");
    (spent, released)
}

fn sum(draws: &[GrantDraw]) -> Credits {
    draws.iter().fold(Credits::ZERO, |sum, draw| {
        sum.checked_add(draw.credits)
            .expect("draws sum within CREDITS_MAX")
    })
}

pub(super) fn evolve_reserved(wallet: &mut Wallet, reserved: &CreditsReserved) {
    assert_eq!(
        sum(&reserved.drawn),
        reserved.credits,
        "a reservation's draws sum to its credits"
    );
    for draw in &reserved.drawn {
        let grant = wallet.grant_mut(&draw.grant_id);
        assert!(
            draw.credits <= grant.unreserved(),
            "a reservation holds only unreserved credits"
        );
        grant.reserved = grant
            .reserved
            .checked_add(draw.credits)
            .expect("reserved stays within remaining");
    }
    wallet.open_reservation(Reservation {
        reserved: reserved.clone(),
        status: ReservationStatus::Open,
    });
}

pub(super) fn evolve_captured(wallet: &mut Wallet, captured: &ReservationCaptured) {
    let reservation = wallet.close_reservation(&captured.reservation_id);
    assert_eq!(sum(&captured.drawn), captured.credits);
    assert_eq!(
        captured
            .credits
            .checked_add(sum(&captured.released))
            .expect("within CREDITS_MAX"),
        reservation.reserved.credits,
        "a capture spends or releases every credit reserved, once"
    );
    reservation.status = ReservationStatus::Captured {
        credits: captured.credits,
        captured_at: captured.captured_at,
    };
    for draw in &captured.drawn {
        let grant = wallet.grant_mut(&draw.grant_id);
        grant.reserved = grant
            .reserved
            .checked_sub(draw.credits)
            .expect("a capture spends what it held");
        grant.remaining = grant
            .remaining
            .checked_sub(draw.credits)
            .expect("a capture spends what it held");
    }
    release(wallet, &captured.released);
}

pub(super) fn evolve_voided(wallet: &mut Wallet, voided: &ReservationVoided) {
    let reservation = wallet.close_reservation(&voided.reservation_id);
    assert_eq!(sum(&voided.released), voided.credits);
    assert_eq!(
        voided.credits, reservation.reserved.credits,
        "a void releases the whole reservation"
    );
    reservation.status = ReservationStatus::Voided {
        voided_at: voided.voided_at,
    };
    release(wallet, &voided.released);
}

pub(super) fn evolve_expired(wallet: &mut Wallet, expired: &ReservationExpired) {
    let reservation = wallet.close_reservation(&expired.reservation_id);
    assert_eq!(sum(&expired.released), expired.credits);
    assert_eq!(
        expired.credits, reservation.reserved.credits,
        "an expiry releases the whole reservation"
    );
    reservation.status = ReservationStatus::Expired;
    release(wallet, &expired.released);
}

fn release(wallet: &mut Wallet, draws: &[GrantDraw]) {
    for draw in draws {
        let grant = wallet.grant_mut(&draw.grant_id);
        grant.reserved = grant
            .reserved
            .checked_sub(draw.credits)
            .expect("a release gives back what was held");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::domain::account::{
        decide, evolve, AccountCommand, AccountState, ForAccount, OpenAccount,
    };
    use crate::domain::events::{CreditsExpired, GrantReason, PersonalData};
    use crate::domain::ids::{Fingerprint, GrantId, ReferralCode, SpendId};
    use crate::domain::scenario::{account_id, at, Given};

    fn credits(n: u64) -> Credits {
        Credits::new(n).unwrap()
    }

    fn opened() -> Vec<DomainEvent> {
        let id = account_id(1);
        let command = OpenAccount {
            account_id: id,
            referral_code: ReferralCode::for_account(id),
            referred_with_code: None,
            personal_data: PersonalData::parse("Ada", "ada@example.org", "192.0.2.1").unwrap(),
            email_fingerprint: Fingerprint::parse("email-1").unwrap(),
            ip_fingerprint: Fingerprint::parse("ip-1").unwrap(),
            payment_fingerprint: None,
            opened_at: at("2026-10-01T00:00:00Z"),
        };
        crate::domain::account::decide_open(
            &AccountState::default(),
            None,
            &command,
            &Default::default(),
        )
        .unwrap()
        .account_events
    }

    fn given(events: Vec<DomainEvent>) -> Given<AccountState> {
        Given::new(AccountState::default(), evolve, events)
    }

    fn command(command: AccountCommand) -> ForAccount {
        ForAccount {
            account_id: account_id(1),
            command,
        }
    }

    fn grant(id: &str, n: u64, expires: Option<&str>) -> ForAccount {
        command(AccountCommand::GrantCredits {
            grant_id: GrantId::parse(id).unwrap(),
            credits: credits(n),
            reason: GrantReason::Promotion,
            expires_at: expires.map(at),
            granted_at: at("2026-10-01T00:00:00Z"),
        })
    }

    fn reserve(id: &str, n: u64, when: &str, expires: &str) -> ForAccount {
        command(AccountCommand::ReserveCredits {
            reservation_id: ReservationId::parse(id).unwrap(),
            credits: credits(n),
            persona: Some(PersonaId::parse("oceanographer").unwrap()),
            expires_at: at(expires),
            reserved_at: at(when),
        })
    }

    fn capture(id: &str, n: u64, when: &str) -> ForAccount {
        command(AccountCommand::CaptureReservation {
            reservation_id: ReservationId::parse(id).unwrap(),
            credits: credits(n),
            captured_at: at(when),
        })
    }

    fn void(id: &str, when: &str) -> ForAccount {
        command(AccountCommand::VoidReservation {
            reservation_id: ReservationId::parse(id).unwrap(),
            voided_at: at(when),
        })
    }

    fn expire_reservations(when: &str) -> ForAccount {
        command(AccountCommand::ExpireReservations {
            expired_at: at(when),
        })
    }

    fn expire_credits(when: &str) -> ForAccount {
        command(AccountCommand::ExpireCredits {
            expired_at: at(when),
        })
    }

    fn spend(id: &str, n: u64, when: &str) -> ForAccount {
        command(AccountCommand::SpendCredits {
            spend_id: SpendId::parse(id).unwrap(),
            persona: PersonaId::parse("chef").unwrap(),
            credits: credits(n),
            spent_at: at(when),
        })
    }

    /// Decides each command in turn on the growing history of an open account.
    fn history(commands: &[ForAccount]) -> Vec<DomainEvent> {
        let mut events = opened();
        for command in commands {
            let state = given(events.clone()).state;
            events.extend(decide(&state, command).unwrap());
        }
        events
    }

    fn wallet(events: &[DomainEvent]) -> crate::domain::account::Wallet {
        given(events.to_vec()).state.account.unwrap().wallet
    }

    fn draws(list: &[(&str, u64)]) -> Vec<GrantDraw> {
        list.iter()
            .map(|(grant, n)| GrantDraw {
                grant_id: GrantId::parse(grant).unwrap(),
                credits: credits(*n),
            })
            .collect()
    }

    /// (available, reserved, balance) at `when`.
    fn numbers(events: &[DomainEvent], when: &str) -> (u64, u64, u64) {
        let wallet = wallet(events);
        let when = at(when);
        (
            wallet.available_at(when).units(),
            wallet.reserved_at(when).units(),
            wallet.balance_at(when).units(),
        )
    }

    const T0: &str = "2026-10-02T10:00:00Z";
    const T1: &str = "2026-10-02T10:00:30Z";
    const EXPIRY: &str = "2026-10-02T10:05:00Z";
    const AFTER: &str = "2026-10-02T10:06:00Z";

    #[test]
    fn a_reservation_holds_credits_in_draw_down_order_out_of_the_available_balance() {
        let events = history(&[
            grant("late", 10, None),
            grant("soon", 5, Some("2026-12-01T00:00:00Z")),
        ]);
        let reserved = given(events.clone())
            .when(|s| decide(s, &reserve("r1", 8, T0, EXPIRY)))
            .then_ok();
        assert_eq!(
            reserved,
            vec![DomainEvent::CreditsReserved(CreditsReserved {
                account_id: account_id(1),
                reservation_id: ReservationId::parse("r1").unwrap(),
                credits: credits(8),
                persona: Some(PersonaId::parse("oceanographer").unwrap()),
                drawn: draws(&[("soon", 5), ("late", 3)]),
                expires_at: at(EXPIRY),
                reserved_at: at(T0),
            })]
        );
        let mut all = events;
        all.extend(reserved);
        assert_eq!(numbers(&all, T1), (7, 8, 15));
        // A spend sees only what is available.
        given(all.clone())
            .when(|s| decide(s, &spend("s1", 8, T1)))
            .then_rejected("insufficient_credits");
        let spent = given(all)
            .when(|s| decide(s, &spend("s1", 7, T1)))
            .then_ok();
        let [DomainEvent::CreditsSpent(spent)] = &spent[..] else {
            panic!("{spent:?}")
        };
        assert_eq!(spent.drawn, draws(&[("late", 7)]));
    }

    #[test]
    fn a_reservation_larger_than_the_available_balance_is_rejected() {
        let events = history(&[grant("g", 10, None), reserve("r1", 6, T0, EXPIRY)]);
        let rejection = given(events.clone())
            .when(|s| decide(s, &reserve("r2", 5, T1, EXPIRY)))
            .then_rejected("insufficient_credits");
        assert_eq!(
            rejection,
            Rejection::InsufficientCredits {
                balance: credits(4),
                requested: credits(5)
            }
        );
        given(events.clone())
            .when(|s| decide(s, &reserve("r2", 0, T1, EXPIRY)))
            .then_rejected("credits_not_positive");
        given(events.clone())
            .when(|s| decide(s, &reserve("r2", 1, T1, T1)))
            .then_rejected("expiry_not_after_reservation");
        given(events.clone())
            .when(|s| decide(s, &reserve("r2", 1, T1, "2026-10-03T10:00:31Z")))
            .then_rejected("reservation_ttl_too_long");
        given(events)
            .when(|s| decide(s, &reserve("r2", 1, T1, "2026-10-03T10:00:30Z")))
            .then_ok();
    }

    #[test]
    fn a_reservation_id_is_idempotent() {
        let events = history(&[grant("g", 10, None), reserve("r1", 6, T0, EXPIRY)]);
        given(events.clone())
            .when(|s| decide(s, &reserve("r1", 6, T1, EXPIRY)))
            .then_events(vec![]);
        given(events.clone())
            .when(|s| decide(s, &reserve("r1", 5, T0, EXPIRY)))
            .then_rejected("idempotency_conflict");
        given(events)
            .when(|s| decide(s, &reserve("r1", 6, T0, AFTER)))
            .then_rejected("idempotency_conflict");
    }

    #[test]
    fn a_partial_capture_spends_part_and_releases_the_rest_in_one_event() {
        let events = history(&[
            grant("soon", 4, Some("2026-12-01T00:00:00Z")),
            grant("late", 10, None),
            reserve("r1", 9, T0, EXPIRY),
        ]);
        let captured = given(events.clone())
            .when(|s| decide(s, &capture("r1", 6, T1)))
            .then_ok();
        assert_eq!(
            captured,
            vec![DomainEvent::ReservationCaptured(ReservationCaptured {
                account_id: account_id(1),
                reservation_id: ReservationId::parse("r1").unwrap(),
                persona: Some(PersonaId::parse("oceanographer").unwrap()),
                credits: credits(6),
                drawn: draws(&[("soon", 4), ("late", 2)]),
                released: draws(&[("late", 3)]),
                captured_at: at(T1),
            })]
        );
        let mut all = events;
        all.extend(captured);
        assert_eq!(numbers(&all, T1), (8, 0, 8));
        // The same capture again records nothing; another is refused.
        given(all.clone())
            .when(|s| decide(s, &capture("r1", 6, AFTER)))
            .then_events(vec![]);
        given(all.clone())
            .when(|s| decide(s, &capture("r1", 5, T1)))
            .then_rejected("reservation_already_captured");
        given(all)
            .when(|s| decide(s, &void("r1", T1)))
            .then_rejected("reservation_already_captured");
    }

    #[test]
    fn a_full_capture_releases_nothing_and_an_over_capture_is_refused() {
        let events = history(&[grant("g", 10, None), reserve("r1", 7, T0, EXPIRY)]);
        let rejection = given(events.clone())
            .when(|s| decide(s, &capture("r1", 8, T1)))
            .then_rejected("capture_exceeds_reservation");
        assert_eq!(
            rejection,
            Rejection::CaptureExceedsReservation {
                reserved: credits(7),
                requested: credits(8)
            }
        );
        given(events.clone())
            .when(|s| decide(s, &capture("r1", 0, T1)))
            .then_rejected("credits_not_positive");
        given(events.clone())
            .when(|s| decide(s, &capture("nope", 1, T1)))
            .then_rejected("reservation_not_found");
        let captured = given(events.clone())
            .when(|s| decide(s, &capture("r1", 7, T1)))
            .then_ok();
        let [DomainEvent::ReservationCaptured(full)] = &captured[..] else {
            panic!("{captured:?}")
        };
        assert!(full.released.is_empty());
        let mut all = events;
        all.extend(captured);
        assert_eq!(numbers(&all, T1), (3, 0, 3));
    }

    #[test]
    fn a_void_releases_everything_once() {
        let events = history(&[grant("g", 10, None), reserve("r1", 7, T0, EXPIRY)]);
        let voided = given(events.clone())
            .when(|s| decide(s, &void("r1", T1)))
            .then_ok();
        assert_eq!(
            voided,
            vec![DomainEvent::ReservationVoided(ReservationVoided {
                account_id: account_id(1),
                reservation_id: ReservationId::parse("r1").unwrap(),
                credits: credits(7),
                released: draws(&[("g", 7)]),
                voided_at: at(T1),
            })]
        );
        let mut all = events;
        all.extend(voided);
        assert_eq!(numbers(&all, T1), (10, 0, 10));
        given(all.clone())
            .when(|s| decide(s, &void("r1", AFTER)))
            .then_events(vec![]);
        given(all)
            .when(|s| decide(s, &capture("r1", 1, T1)))
            .then_rejected("reservation_already_voided");
    }

    #[test]
    fn an_expired_reservation_releases_itself_and_refuses_a_capture() {
        let events = history(&[grant("g", 10, None), reserve("r1", 7, T0, EXPIRY)]);
        // Readers count it as released from its expiry on, before anything is recorded.
        assert_eq!(numbers(&events, T1), (3, 7, 10));
        assert_eq!(numbers(&events, EXPIRY), (10, 0, 10));
        given(events.clone())
            .when(|s| decide(s, &capture("r1", 7, EXPIRY)))
            .then_rejected("reservation_expired");
        given(events.clone())
            .when(|s| decide(s, &void("r1", AFTER)))
            .then_rejected("reservation_expired");
        given(events.clone())
            .when(|s| decide(s, &expire_reservations(T1)))
            .then_events(vec![]);
        let expired = given(events.clone())
            .when(|s| decide(s, &expire_reservations(AFTER)))
            .then_ok();
        assert_eq!(
            expired,
            vec![DomainEvent::ReservationExpired(ReservationExpired {
                account_id: account_id(1),
                reservation_id: ReservationId::parse("r1").unwrap(),
                credits: credits(7),
                released: draws(&[("g", 7)]),
                // Its own expiry, whenever it is recorded.
                expired_at: at(EXPIRY),
            })]
        );
        let mut all = events.clone();
        all.extend(expired);
        assert_eq!(numbers(&all, AFTER), (10, 0, 10));
        given(all.clone())
            .when(|s| decide(s, &expire_reservations(AFTER)))
            .then_events(vec![]);
        given(all)
            .when(|s| decide(s, &capture("r1", 7, T1)))
            .then_rejected("reservation_expired");
        // Not recorded yet, the next command on the account records it first.
        let spent = given(events)
            .when(|s| decide(s, &spend("s1", 10, AFTER)))
            .then_ok();
        let types: Vec<_> = spent.iter().map(DomainEvent::event_type).collect();
        assert_eq!(types, ["ReservationExpired", "CreditsSpent"]);
    }

    #[test]
    fn a_grant_that_expires_under_a_reservation_leaves_the_reservation_whole() {
        const GRANT_EXPIRY: &str = "2026-10-02T10:02:00Z";
        let events = history(&[
            grant("short", 10, Some(GRANT_EXPIRY)),
            grant("long", 5, None),
            reserve("r1", 8, T0, EXPIRY),
            reserve("r2", 1, T0, EXPIRY),
        ]);
        // After the grant's expiry the reservations still hold all they reserved.
        assert_eq!(numbers(&events, "2026-10-02T10:03:00Z"), (5, 9, 14));
        let expired = given(events.clone())
            .when(|s| decide(s, &expire_credits("2026-10-02T10:03:00Z")))
            .then_ok();
        assert_eq!(
            expired,
            vec![DomainEvent::CreditsExpired(CreditsExpired {
                account_id: account_id(1),
                grant_id: GrantId::parse("short").unwrap(),
                credits: credits(1),
                expired_at: at("2026-10-02T10:03:00Z"),
            })],
            "the grant's expiry takes only its unreserved remainder"
        );
        let mut all = events;
        all.extend(expired);
        assert_eq!(numbers(&all, "2026-10-02T10:03:00Z"), (5, 9, 14));
        // A capture after the grant's expiry still spends what the reservation held.
        let captured = given(all.clone())
            .when(|s| decide(s, &capture("r1", 3, "2026-10-02T10:04:00Z")))
            .then_ok();
        let [DomainEvent::ReservationCaptured(partial)] = &captured[..] else {
            panic!("{captured:?}")
        };
        assert_eq!(partial.drawn, draws(&[("short", 3)]));
        assert_eq!(partial.released, draws(&[("short", 5)]));
        all.extend(captured);
        // What it released into the expired grant is not available again...
        assert_eq!(numbers(&all, "2026-10-02T10:04:00Z"), (5, 1, 6));
        // ...and the next expiry run expires it, with r2's credits once r2 lapsed.
        let again = given(all.clone())
            .when(|s| decide(s, &expire_credits(AFTER)))
            .then_ok();
        let types: Vec<_> = again.iter().map(DomainEvent::event_type).collect();
        assert_eq!(types, ["ReservationExpired", "CreditsExpired"]);
        let DomainEvent::CreditsExpired(rest) = &again[1] else {
            panic!("{again:?}")
        };
        assert_eq!(rest.credits, credits(6));
        all.extend(again);
        assert_eq!(numbers(&all, AFTER), (5, 0, 5));
        assert_eq!(wallet(&all).remaining_total(), credits(5));
    }

    #[test]
    fn an_account_holds_a_bounded_number_of_open_reservations() {
        let mut commands = vec![grant("g", 1000, None)];
        commands
            .extend((0..OPEN_RESERVATIONS_MAX).map(|n| reserve(&format!("r{n}"), 1, T0, EXPIRY)));
        let events = history(&commands);
        given(events.clone())
            .when(|s| decide(s, &reserve("one-more", 1, T1, EXPIRY)))
            .then_rejected("too_many_open_reservations");
        // Settling one makes room again; so does their expiry, recorded or not.
        let mut settled = events.clone();
        settled.extend(decide(&given(events.clone()).state, &void("r0", T1)).unwrap());
        given(settled)
            .when(|s| decide(s, &reserve("one-more", 1, T1, AFTER)))
            .then_ok();
        let later = given(events)
            .when(|s| decide(s, &reserve("one-more", 1, AFTER, "2026-10-02T11:00:00Z")))
            .then_ok();
        assert_eq!(later.len(), OPEN_RESERVATIONS_MAX + 1);
    }

    /// One step of a random wallet history.
    #[derive(Clone, Debug)]
    enum Op {
        Advance {
            seconds: i64,
        },
        Grant {
            credits: u64,
            expires_in: Option<i64>,
        },
        Spend {
            credits: u64,
        },
        Reserve {
            credits: u64,
            ttl: i64,
        },
        Capture {
            which: usize,
            credits: u64,
        },
        Void {
            which: usize,
        },
        ExpireReservations,
        ExpireCredits,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1i64..400).prop_map(|seconds| Op::Advance { seconds }),
            2 => (1u64..40, proptest::option::of(1i64..900))
                .prop_map(|(credits, expires_in)| Op::Grant { credits, expires_in }),
            2 => (1u64..20).prop_map(|credits| Op::Spend { credits }),
            4 => (1u64..20, 1i64..600).prop_map(|(credits, ttl)| Op::Reserve { credits, ttl }),
            3 => (any::<usize>(), 1u64..25)
                .prop_map(|(which, credits)| Op::Capture { which, credits }),
            2 => any::<usize>().prop_map(|which| Op::Void { which }),
            1 => Just(Op::ExpireReservations),
            1 => Just(Op::ExpireCredits),
        ]
    }

    /// What each reservation became, from the log alone.
    #[derive(Default)]
    struct Fate {
        reserved: u64,
        spent: u64,
        released: u64,
        settlements: u32,
    }

    fn check(events: &[DomainEvent], now: DateTime<Utc>) {
        let wallet = wallet(events);
        let (available, reserved, balance) = (
            wallet.available_at(now),
            wallet.reserved_at(now),
            wallet.balance_at(now),
        );
        assert_eq!(available.units() + reserved.units(), balance.units());
        // The balance computed another way: what usable grants have left, and what live
        // reservations hold in grants no longer usable.
        let mut independent = 0;
        for grant in wallet.grants.values() {
            let usable =
                grant.granted_at <= now && grant.expires_at.is_none_or(|expiry| now < expiry);
            if usable {
                independent += grant.remaining.units();
            }
        }
        for (_, reservation) in wallet.open_reservations_at(now) {
            for draw in &reservation.reserved.drawn {
                let grant = &wallet.grants[&draw.grant_id];
                if grant.expires_at.is_some_and(|expiry| expiry <= now) {
                    independent += draw.credits.units();
                }
            }
        }
        assert_eq!(balance.units(), independent);
        // Every credit reserved is spent, released or still reserved, exactly once.
        let mut fates: BTreeMap<ReservationId, Fate> = BTreeMap::new();
        let (mut added, mut taken) = (0u64, 0u64);
        for event in events {
            match event {
                DomainEvent::CreditsGranted(e) => added += e.credits.units(),
                DomainEvent::CreditsSpent(e) => taken += e.credits.units(),
                DomainEvent::CreditsExpired(e) => taken += e.credits.units(),
                DomainEvent::CreditsReserved(e) => {
                    let fate = fates.entry(e.reservation_id.clone()).or_default();
                    assert_eq!(fate.reserved, 0, "reserved once");
                    fate.reserved = e.credits.units();
                }
                DomainEvent::ReservationCaptured(e) => {
                    taken += e.credits.units();
                    let fate = fates.get_mut(&e.reservation_id).unwrap();
                    fate.spent += e.credits.units();
                    fate.released += sum(&e.released).units();
                    fate.settlements += 1;
                }
                DomainEvent::ReservationVoided(e) => {
                    let fate = fates.get_mut(&e.reservation_id).unwrap();
                    fate.released += e.credits.units();
                    fate.settlements += 1;
                }
                DomainEvent::ReservationExpired(e) => {
                    let fate = fates.get_mut(&e.reservation_id).unwrap();
                    fate.released += e.credits.units();
                    fate.settlements += 1;
                }
                _ => {}
            }
        }
        assert_eq!(added - taken, wallet.remaining_total().units());
        let mut still_held = 0;
        for (id, fate) in &fates {
            let recorded = &wallet.reservations[id];
            match recorded.status {
                ReservationStatus::Open => {
                    assert_eq!(fate.settlements, 0);
                    still_held += fate.reserved;
                }
                _ => {
                    assert_eq!(fate.settlements, 1, "{id} settled once");
                    assert_eq!(fate.spent + fate.released, fate.reserved, "{id}");
                }
            }
        }
        let held_in_grants: u64 = wallet.grants.values().map(|g| g.reserved.units()).sum();
        assert_eq!(held_in_grants, still_held);
        // Readers never count an expired reservation: recording the expiries due changes
        // nothing they see.
        let state = given(events.to_vec()).state;
        let due = decide(
            &state,
            &command(AccountCommand::ExpireReservations { expired_at: now }),
        )
        .unwrap();
        let mut after = events.to_vec();
        after.extend(due);
        let recorded = self::wallet(&after);
        assert_eq!(recorded.available_at(now), available);
        assert_eq!(recorded.reserved_at(now), reserved);
        assert_eq!(recorded.balance_at(now), balance);
    }

    fn run(ops: &[Op]) -> Vec<DomainEvent> {
        let mut now = at("2026-10-02T00:00:00Z");
        let mut events = opened();
        let mut reservations: Vec<ReservationId> = Vec::new();
        for (n, op) in ops.iter().enumerate() {
            let state = given(events.clone()).state;
            let wallet = &state.account.as_ref().unwrap().wallet;
            let available = wallet.available_at(now);
            let decided = match op {
                Op::Advance { seconds } => {
                    now += Duration::seconds(*seconds);
                    continue;
                }
                Op::Grant {
                    credits: n_credits,
                    expires_in,
                } => decide(
                    &state,
                    &command(AccountCommand::GrantCredits {
                        grant_id: GrantId::parse(&format!("g{n}")).unwrap(),
                        credits: credits(*n_credits),
                        reason: GrantReason::Promotion,
                        expires_at: expires_in.map(|s| now + Duration::seconds(s)),
                        granted_at: now,
                    }),
                ),
                Op::Spend { credits: n_credits } => {
                    let result = decide(
                        &state,
                        &command(AccountCommand::SpendCredits {
                            spend_id: SpendId::parse(&format!("s{n}")).unwrap(),
                            persona: PersonaId::parse("chef").unwrap(),
                            credits: credits(*n_credits),
                            spent_at: now,
                        }),
                    );
                    assert_eq!(result.is_ok(), *n_credits <= available.units());
                    result
                }
                Op::Reserve {
                    credits: n_credits,
                    ttl,
                } => {
                    let id = ReservationId::parse(&format!("r{n}")).unwrap();
                    let result = decide(
                        &state,
                        &command(AccountCommand::ReserveCredits {
                            reservation_id: id.clone(),
                            credits: credits(*n_credits),
                            persona: None,
                            expires_at: now + Duration::seconds(*ttl),
                            reserved_at: now,
                        }),
                    );
                    assert_eq!(result.is_ok(), *n_credits <= available.units());
                    reservations.push(id);
                    result
                }
                Op::Capture {
                    which,
                    credits: n_credits,
                } => {
                    if reservations.is_empty() {
                        continue;
                    }
                    let id = reservations[which % reservations.len()].clone();
                    decide(
                        &state,
                        &command(AccountCommand::CaptureReservation {
                            reservation_id: id,
                            credits: credits(*n_credits),
                            captured_at: now,
                        }),
                    )
                }
                Op::Void { which } => {
                    if reservations.is_empty() {
                        continue;
                    }
                    let id = reservations[which % reservations.len()].clone();
                    decide(
                        &state,
                        &command(AccountCommand::VoidReservation {
                            reservation_id: id,
                            voided_at: now,
                        }),
                    )
                }
                Op::ExpireReservations => decide(
                    &state,
                    &command(AccountCommand::ExpireReservations { expired_at: now }),
                ),
                Op::ExpireCredits => decide(
                    &state,
                    &command(AccountCommand::ExpireCredits { expired_at: now }),
                ),
            };
            if let Ok(decided) = decided {
                events.extend(decided);
            }
            check(&events, now);
        }
        events
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// For random interleavings of grants, spends, reservations, captures, voids and
        /// expiries: available + reserved = balance, the balance agrees with the grants,
        /// and every credit is spent, released or still reserved exactly once.
        #[test]
        fn random_wallet_histories_account_for_every_credit(
            ops in proptest::collection::vec(op(), 1..60)
        ) {
            run(&ops);
        }
    }

    #[test]
    fn random_histories_settle_reservations_every_way() {
        // A fixed history through every path, so the property above is known to reach them.
        let ops = [
            Op::Grant {
                credits: 30,
                expires_in: Some(100),
            },
            Op::Grant {
                credits: 10,
                expires_in: None,
            },
            Op::Reserve {
                credits: 20,
                ttl: 300,
            },
            Op::Reserve {
                credits: 5,
                ttl: 50,
            },
            Op::Reserve {
                credits: 5,
                ttl: 500,
            },
            Op::Advance { seconds: 60 },
            Op::Capture {
                which: 0,
                credits: 12,
            },
            Op::ExpireCredits,
            Op::Advance { seconds: 60 },
            Op::ExpireCredits,
            Op::Void { which: 2 },
            Op::Spend { credits: 3 },
        ];
        let events = run(&ops);
        let types: std::collections::BTreeSet<_> =
            events.iter().map(DomainEvent::event_type).collect();
        for expected in [
            "CreditsReserved",
            "ReservationCaptured",
            "ReservationVoided",
            "ReservationExpired",
            "CreditsExpired",
            "CreditsSpent",
        ] {
            assert!(types.contains(expected), "{expected} never happened");
        }
    }
}
