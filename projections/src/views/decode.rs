//! Reading recorded events as domain facts, once per event for all views.
//!
//! Events no view needs are recognised by type and skipped without parsing. A payload at
//! the current schema version is parsed straight into its struct (the hot path of a
//! rebuild); an older one goes through the domain's [`upcast`], the one place old shapes
//! are read. `AccountOpened` is read through a narrow view without the personal data,
//! which projections never need and which the privacy layer stores encrypted.

use chrono::{DateTime, Utc};
use ledger::domain::events::{upcast, DomainEvent, FraudFlag, EVENT_TYPES};
use ledger::domain::AccountId;
use ledger::store::RecordedEvent;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::canonical;
use crate::projection::ProjectionError;

/// What the views need of an account's opening.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Opened {
    pub account_id: AccountId,
    pub referrer: Option<AccountId>,
    #[serde(default)]
    pub fraud_flags: Vec<FraudFlag>,
    #[serde(deserialize_with = "time::exact")]
    pub opened_at: DateTime<Utc>,
}

/// What the views need of a payment: everything but the payer's payment fingerprint,
/// which the privacy layer stores sealed (an object, not a string) and no view reads.
#[derive(Deserialize)]
struct Payment {
    payment_id: ledger::domain::ids::PaymentId,
    account_id: AccountId,
    kind: ledger::domain::events::PaymentKind,
    amount: ledger::domain::Money,
    #[serde(deserialize_with = "time::exact")]
    received_at: DateTime<Utc>,
}

/// The most frequent events, read field for field like the domain's own types but with
/// [`time`]'s reader for instants: chrono's general parser was a fifth of a rebuild's
/// decoding. Each converts into the domain's type.
mod hot {
    use chrono::{DateTime, Utc};
    use ledger::domain::events::{
        CommissionEarned, CreditsExpired, CreditsGranted, CreditsPurchased, CreditsSpent,
        FraudFlag, GrantDraw, GrantReason,
    };
    use ledger::domain::ids::{GrantId, PaymentId, PersonaId, SpendId};
    use ledger::domain::plan::PlanVersion;
    use ledger::domain::{AccountId, Credits, Money, Rate};
    use rust_decimal::Decimal;
    use serde::Deserialize;

    use super::time;

    #[derive(Deserialize)]
    pub struct Earned {
        payment_id: PaymentId,
        beneficiary: AccountId,
        payer: AccountId,
        level: u8,
        rate: Rate,
        plan_version: PlanVersion,
        base_amount: Money,
        amount: Money,
        #[serde(deserialize_with = "decimal_text")]
        rounding: Decimal,
        #[serde(deserialize_with = "time::exact")]
        earned_at: DateTime<Utc>,
        #[serde(deserialize_with = "time::exact")]
        hold_until: DateTime<Utc>,
        held_for_review: bool,
        review_reasons: Vec<FraudFlag>,
    }

    impl From<Earned> for CommissionEarned {
        fn from(event: Earned) -> CommissionEarned {
            CommissionEarned {
                payment_id: event.payment_id,
                beneficiary: event.beneficiary,
                payer: event.payer,
                level: event.level,
                rate: event.rate,
                plan_version: event.plan_version,
                base_amount: event.base_amount,
                amount: event.amount,
                rounding: event.rounding,
                earned_at: event.earned_at,
                hold_until: event.hold_until,
                held_for_review: event.held_for_review,
                review_reasons: event.review_reasons,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Granted {
        account_id: AccountId,
        grant_id: GrantId,
        credits: Credits,
        reason: GrantReason,
        #[serde(deserialize_with = "time::optional")]
        expires_at: Option<DateTime<Utc>>,
        #[serde(deserialize_with = "time::exact")]
        granted_at: DateTime<Utc>,
    }

    impl From<Granted> for CreditsGranted {
        fn from(event: Granted) -> CreditsGranted {
            CreditsGranted {
                account_id: event.account_id,
                grant_id: event.grant_id,
                credits: event.credits,
                reason: event.reason,
                expires_at: event.expires_at,
                granted_at: event.granted_at,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Purchased {
        account_id: AccountId,
        grant_id: GrantId,
        payment_id: PaymentId,
        credits: Credits,
        #[serde(deserialize_with = "time::optional")]
        expires_at: Option<DateTime<Utc>>,
        #[serde(deserialize_with = "time::exact")]
        purchased_at: DateTime<Utc>,
    }

    impl From<Purchased> for CreditsPurchased {
        fn from(event: Purchased) -> CreditsPurchased {
            CreditsPurchased {
                account_id: event.account_id,
                grant_id: event.grant_id,
                payment_id: event.payment_id,
                credits: event.credits,
                expires_at: event.expires_at,
                purchased_at: event.purchased_at,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Spent {
        account_id: AccountId,
        spend_id: SpendId,
        persona: PersonaId,
        credits: Credits,
        drawn: Vec<GrantDraw>,
        #[serde(deserialize_with = "time::exact")]
        spent_at: DateTime<Utc>,
    }

    impl From<Spent> for CreditsSpent {
        fn from(event: Spent) -> CreditsSpent {
            CreditsSpent {
                account_id: event.account_id,
                spend_id: event.spend_id,
                persona: event.persona,
                credits: event.credits,
                drawn: event.drawn,
                spent_at: event.spent_at,
            }
        }
    }

    #[derive(Deserialize)]
    pub struct Expired {
        account_id: AccountId,
        grant_id: GrantId,
        credits: Credits,
        #[serde(deserialize_with = "time::exact")]
        expired_at: DateTime<Utc>,
    }

    impl From<Expired> for CreditsExpired {
        fn from(event: Expired) -> CreditsExpired {
            CreditsExpired {
                account_id: event.account_id,
                grant_id: event.grant_id,
                credits: event.credits,
                expired_at: event.expired_at,
            }
        }
    }

    /// A bare decimal written as a string, as the domain writes a rounding.
    fn decimal_text<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Decimal, D::Error> {
        let text = time::Text::deserialize(deserializer)?;
        text.as_str()
            .parse::<Decimal>()
            .map_err(serde::de::Error::custom)
    }
}

/// Reading instants as chrono writes them (`2026-01-31T00:01:02.208Z`) without chrono's
/// general format machinery; anything else (an offset, a leap second, more than nine
/// fractional digits) goes to chrono's own parser, so what is accepted and what it means
/// are unchanged.
pub(crate) mod time {
    use chrono::{DateTime, NaiveDate, Utc};
    use serde::de::{Deserializer, Error};

    /// A JSON string, borrowed from the payload when it has no escapes.
    pub use ledger::domain::money::BorrowedText as Text;

    pub fn exact<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <Text as serde::Deserialize>::deserialize(deserializer)?;
        parse(text.as_str()).map_err(D::Error::custom)
    }

    pub fn optional<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        let text: Option<Text> = serde::Deserialize::deserialize(deserializer)?;
        text.map(|text| parse(text.as_str()).map_err(D::Error::custom))
            .transpose()
    }

    /// Parses an instant: the fast path for `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, chrono for
    /// the rest.
    pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
        match fast(text.as_bytes()) {
            Some(at) => Ok(at),
            None => text.parse::<DateTime<Utc>>(),
        }
    }

    fn fast(bytes: &[u8]) -> Option<DateTime<Utc>> {
        if bytes.len() < 20 || bytes[bytes.len() - 1] != b'Z' {
            return None;
        }
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            bytes[range].iter().try_fold(0u32, |value, byte| {
                byte.is_ascii_digit()
                    .then(|| value * 10 + u32::from(byte - b'0'))
            })
        };
        let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if separators.iter().any(|(at, byte)| bytes[*at] != *byte) {
            return None;
        }
        let year = digits(0..4)?;
        let (month, day) = (digits(5..7)?, digits(8..10)?);
        let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        let nanos = match &bytes[19..bytes.len() - 1] {
            [] => 0,
            [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
                let value = digits(20..20 + fraction.len())?;
                value * 10u32.pow(9 - fraction.len() as u32)
            }
            _ => return None,
        };
        // A leap second (60) and every out-of-range field go to chrono, which knows them.
        if second > 59 {
            return None;
        }
        let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
        let time = date.and_hms_nano_opt(hour, minute, second, nanos)?;
        Some(time.and_utc())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_fast_path_agrees_with_chrono() {
            for text in [
                "2026-01-31T00:01:02.208Z",
                "2026-01-01T00:00:00Z",
                "1999-12-31T23:59:59.999999999Z",
                "2024-02-29T12:00:00.5Z",
                "2026-11-29T10:20:30.123456Z",
            ] {
                assert!(fast(text.as_bytes()).is_some(), "{text}");
                assert_eq!(parse(text).unwrap(), text.parse::<DateTime<Utc>>().unwrap());
            }
        }

        #[test]
        fn what_the_fast_path_does_not_take_chrono_decides() {
            for text in [
                "2026-01-31T00:01:02.208+01:00",
                "2026-02-30T00:00:00Z",
                "2026-01-31T24:00:00Z",
                "2026-01-31T00:00:60Z",
                "2026-01-31 00:00:00Z",
                "2026-01-31T00:00:00.1234567890Z",
                "2026-1-31T00:00:00Z",
                "not a time",
                "",
            ] {
                assert!(fast(text.as_bytes()).is_none(), "{text}");
                assert_eq!(
                    parse(text).ok(),
                    text.parse::<DateTime<Utc>>().ok(),
                    "{text}"
                );
            }
        }
    }
}

/// Reads an event the general way: the domain's `upcast`, and if a personal field is
/// sealed (stored as an envelope object, not its plain value), the privacy layer's
/// redacted read, which replaces personal fields without needing keys.
fn general(event: &RecordedEvent) -> Result<DomainEvent, String> {
    upcast(
        event.event_type.as_str(),
        event.schema_version,
        &event.payload,
    )
    .or_else(|plain| {
        ledger::privacy::domain::decode_redacted(event)
            .map_err(|redacted| format!("{plain}; read redacted: {redacted}"))
    })
}

/// A recorded event as the views read it.
#[derive(Clone, Debug)]
pub enum Fact {
    Opened(Opened),
    Domain(DomainEvent),
}

/// The event types the views read on the fast path, in the order of [`KINDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AccountOpened,
    CreditsGranted,
    CreditsPurchased,
    CreditsSpent,
    CreditsExpired,
    CreditsReserved,
    ReservationCaptured,
    ReservationVoided,
    ReservationExpired,
    PaymentReceived,
    PaymentRefunded,
    PaymentChargedBack,
    CommissionEarned,
    CommissionReversed,
    CommissionPlanPublished,
    PayoutScheduled,
    PayoutSent,
    PayoutFailed,
    DonationAllocated,
    PayoutRunCompleted,
    CommissionReleased,
    CommissionForfeited,
    ProcessingRestricted,
    ProcessingRestrictionLifted,
}

const KINDS: [(&str, Kind); 24] = [
    ("AccountOpened", Kind::AccountOpened),
    ("CreditsGranted", Kind::CreditsGranted),
    ("CreditsPurchased", Kind::CreditsPurchased),
    ("CreditsSpent", Kind::CreditsSpent),
    ("CreditsExpired", Kind::CreditsExpired),
    ("CreditsReserved", Kind::CreditsReserved),
    ("ReservationCaptured", Kind::ReservationCaptured),
    ("ReservationVoided", Kind::ReservationVoided),
    ("ReservationExpired", Kind::ReservationExpired),
    ("PaymentReceived", Kind::PaymentReceived),
    ("PaymentRefunded", Kind::PaymentRefunded),
    ("PaymentChargedBack", Kind::PaymentChargedBack),
    ("CommissionEarned", Kind::CommissionEarned),
    ("CommissionReversed", Kind::CommissionReversed),
    ("CommissionPlanPublished", Kind::CommissionPlanPublished),
    ("PayoutScheduled", Kind::PayoutScheduled),
    ("PayoutSent", Kind::PayoutSent),
    ("PayoutFailed", Kind::PayoutFailed),
    ("DonationAllocated", Kind::DonationAllocated),
    ("PayoutRunCompleted", Kind::PayoutRunCompleted),
    ("CommissionReleased", Kind::CommissionReleased),
    ("CommissionForfeited", Kind::CommissionForfeited),
    ("ProcessingRestricted", Kind::ProcessingRestricted),
    (
        "ProcessingRestrictionLifted",
        Kind::ProcessingRestrictionLifted,
    ),
];

/// Event types that no view reads: skipped without parsing. (Erasure leaves the views
/// alone: they hold no personal data; reports ask the privacy layer for names.)
const SKIPPED: [&str; 10] = [
    "ReferralRecorded",
    "ReferralCodeClaimed",
    "PersonalDataCorrected",
    "SubscriptionStarted",
    "SubscriptionCancelled",
    "ErasureRequested",
    "SubjectErased",
    "RetainedDataShredded",
    "LegalHoldPlaced",
    "LegalHoldLifted",
];

/// The domain's current schema version of each kind, looked up once.
fn current_version(kind: Kind) -> u16 {
    static VERSIONS: OnceLock<Vec<u16>> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        KINDS
            .iter()
            .map(|(name, _)| {
                EVENT_TYPES
                    .iter()
                    .find(|(known, _)| known == name)
                    .map(|(_, version)| *version)
                    .unwrap_or_else(|| panic!("the domain no longer knows {name}"))
            })
            .collect()
    })[kind as usize]
}

fn kind_of(event_type: &str) -> Option<Kind> {
    // Asked for every event of a rebuild: bucketing `KINDS` by name length leaves at
    // most four candidates, each compared as two words (see `same_name`), where a search
    // of the whole table compared one name after another.
    static BY_LENGTH: OnceLock<Vec<Vec<(&'static str, Kind)>>> = OnceLock::new();
    let by_length = BY_LENGTH.get_or_init(|| {
        let longest = KINDS.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
        let mut by_length = vec![Vec::new(); longest + 1];
        for (name, kind) in KINDS {
            assert!(
                name.len() >= 8,
                "same_name compares at least 8 bytes: {name}"
            );
            by_length[name.len()].push((name, kind));
        }
        by_length
    });
    by_length
        .get(event_type.len())?
        .iter()
        .find(|(name, _)| same_name(name.as_bytes(), event_type.as_bytes()))
        .map(|(_, kind)| *kind)
}

/// Whether two names of the same length, at least 8 bytes, are equal: compared as two
/// overlapping 8-byte words, where a slice comparison calls `memcmp` (a visible share
/// of a rebuild, at two calls per event).
fn same_name(known: &[u8], name: &[u8]) -> bool {
    debug_assert!(known.len() == name.len() && known.len() >= 8);
    let word = |bytes: &[u8], at: usize| {
        u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
    };
    let last = known.len() - 8;
    word(known, 0) == word(name, 0) && word(known, last) == word(name, last)
}

/// Whether `event_type` restricts processing or lifts a restriction.
pub fn is_restriction(event_type: &str) -> bool {
    matches!(
        kind_of(event_type),
        Some(Kind::ProcessingRestricted | Kind::ProcessingRestrictionLifted)
    )
}

/// Which views an event type feeds, decided from the type alone so a parallel rebuild
/// can leave each event to one side without decoding it (see `LedgerViews::apply_batch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// No view reads it: [`decode`] returns `Ok(None)`.
    Ignored,
    /// The referral network and the wallets: signups, credits (reservations too),
    /// restrictions.
    Network,
    /// Money: the journal, commissions, payouts, donations, and payers' revenue. A type
    /// the domain knows and the fast path does not goes here too, since the only thing
    /// the views can do with it is post its money.
    Money,
}

/// The [`Route`] of an event of type `event_type`.
pub fn route(event_type: &str) -> Route {
    classify(event_type).route
}

/// An event type as the views see it: its route, and its kind on the fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    pub route: Route,
    kind: Option<Kind>,
}

/// Classifies `event_type` once, for both routing and decoding ([`decode_classified`]):
/// a rebuild asks for every event.
pub fn classify(event_type: &str) -> Classified {
    let kind = kind_of(event_type);
    Classified {
        route: route_of(event_type, kind),
        kind,
    }
}

fn route_of(event_type: &str, kind: Option<Kind>) -> Route {
    match kind {
        Some(
            Kind::AccountOpened
            | Kind::CreditsGranted
            | Kind::CreditsPurchased
            | Kind::CreditsSpent
            | Kind::CreditsExpired
            | Kind::CreditsReserved
            | Kind::ReservationCaptured
            | Kind::ReservationVoided
            | Kind::ReservationExpired
            | Kind::ProcessingRestricted
            | Kind::ProcessingRestrictionLifted,
        ) => Route::Network,
        Some(_) => Route::Money,
        None if SKIPPED.contains(&event_type)
            || !EVENT_TYPES.iter().any(|(known, _)| *known == event_type) =>
        {
            Route::Ignored
        }
        None => Route::Money,
    }
}

/// Reads `event`; `Ok(None)` for events the views do not read, including event types
/// this version does not know (another component's events, such as the privacy layer's).
pub fn decode(event: &RecordedEvent) -> Result<Option<Fact>, ProjectionError> {
    decode_classified(event, classify(event.event_type.as_str()))
}

/// [`decode`], given the event's type as [`classify`] gave it.
pub fn decode_classified(
    event: &RecordedEvent,
    classified: Classified,
) -> Result<Option<Fact>, ProjectionError> {
    let event_type = event.event_type.as_str();
    debug_assert_eq!(classified, classify(event_type));
    let undecodable = |reason: String| ProjectionError::UndecodableEvent {
        position: event.position,
        event_type: event_type.to_owned(),
        reason,
    };
    let Some(kind) = classified.kind else {
        if classified.route == Route::Ignored {
            return Ok(None);
        }
        // A type the domain knows and the fast path does not: read it the general way,
        // so a new event type is never silently dropped by the views.
        return general(event)
            .map(|domain| Some(Fact::Domain(domain)))
            .map_err(undecodable);
    };
    if event.schema_version != current_version(kind) {
        let upcast = general(event).map_err(undecodable)?;
        return Ok(Some(match upcast {
            DomainEvent::AccountOpened(opened) => Fact::Opened(Opened {
                account_id: opened.account_id,
                referrer: opened.referrer,
                fraud_flags: opened.fraud_flags,
                opened_at: opened.opened_at,
            }),
            other => Fact::Domain(other),
        }));
    }
    let payload = &event.payload;
    fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
        sonic_rs::from_slice(payload).map_err(|error| error.to_string())
    }
    let domain = match kind {
        Kind::AccountOpened => {
            let opened = match canonical::opened(payload) {
                Some(opened) => opened,
                None => parse(payload).map_err(undecodable)?,
            };
            return Ok(Some(Fact::Opened(opened)));
        }
        // The frequent events: the domain's exact layout first (see `canonical`), the
        // general parser for anything else.
        Kind::CreditsGranted => DomainEvent::CreditsGranted(match canonical::granted(payload) {
            Some(granted) => granted,
            None => parse::<hot::Granted>(payload).map_err(undecodable)?.into(),
        }),
        Kind::CreditsPurchased => {
            DomainEvent::CreditsPurchased(match canonical::purchased(payload) {
                Some(purchased) => purchased,
                None => parse::<hot::Purchased>(payload)
                    .map_err(undecodable)?
                    .into(),
            })
        }
        Kind::CreditsSpent => DomainEvent::CreditsSpent(match canonical::spent(payload) {
            Some(spent) => spent,
            None => parse::<hot::Spent>(payload).map_err(undecodable)?.into(),
        }),
        Kind::CreditsExpired => DomainEvent::CreditsExpired(match canonical::expired(payload) {
            Some(expired) => expired,
            None => parse::<hot::Expired>(payload).map_err(undecodable)?.into(),
        }),
        Kind::PaymentReceived => match canonical::payment(payload) {
            Some(payment) => DomainEvent::PaymentReceived(payment),
            None => {
                let payment: Payment = parse(payload).map_err(undecodable)?;
                DomainEvent::PaymentReceived(ledger::domain::events::PaymentReceived {
                    payment_id: payment.payment_id,
                    account_id: payment.account_id,
                    kind: payment.kind,
                    amount: payment.amount,
                    payment_fingerprint: None,
                    received_at: payment.received_at,
                })
            }
        },
        Kind::CreditsReserved => DomainEvent::CreditsReserved(parse(payload).map_err(undecodable)?),
        Kind::ReservationCaptured => {
            DomainEvent::ReservationCaptured(parse(payload).map_err(undecodable)?)
        }
        Kind::ReservationVoided => {
            DomainEvent::ReservationVoided(parse(payload).map_err(undecodable)?)
        }
        Kind::ReservationExpired => {
            DomainEvent::ReservationExpired(parse(payload).map_err(undecodable)?)
        }
        Kind::PaymentRefunded => DomainEvent::PaymentRefunded(parse(payload).map_err(undecodable)?),
        Kind::PaymentChargedBack => {
            DomainEvent::PaymentChargedBack(parse(payload).map_err(undecodable)?)
        }
        Kind::CommissionEarned => DomainEvent::CommissionEarned(match canonical::earned(payload) {
            Some(earned) => earned,
            None => parse::<hot::Earned>(payload).map_err(undecodable)?.into(),
        }),
        Kind::CommissionReversed => {
            DomainEvent::CommissionReversed(parse(payload).map_err(undecodable)?)
        }
        Kind::CommissionPlanPublished => {
            DomainEvent::CommissionPlanPublished(parse(payload).map_err(undecodable)?)
        }
        Kind::PayoutScheduled => DomainEvent::PayoutScheduled(parse(payload).map_err(undecodable)?),
        Kind::PayoutSent => DomainEvent::PayoutSent(parse(payload).map_err(undecodable)?),
        // The failure reason is personal (it may name the payee's bank) and stored
        // sealed; a plain reason parses directly, a sealed one is read redacted.
        Kind::PayoutFailed => match parse(payload) {
            Ok(failed) => DomainEvent::PayoutFailed(failed),
            Err(_) => general(event).map_err(undecodable)?,
        },
        Kind::DonationAllocated => {
            DomainEvent::DonationAllocated(parse(payload).map_err(undecodable)?)
        }
        Kind::PayoutRunCompleted => {
            DomainEvent::PayoutRunCompleted(parse(payload).map_err(undecodable)?)
        }
        Kind::CommissionReleased => {
            DomainEvent::CommissionReleased(parse(payload).map_err(undecodable)?)
        }
        Kind::CommissionForfeited => {
            DomainEvent::CommissionForfeited(parse(payload).map_err(undecodable)?)
        }
        Kind::ProcessingRestricted => {
            DomainEvent::ProcessingRestricted(parse(payload).map_err(undecodable)?)
        }
        Kind::ProcessingRestrictionLifted => {
            DomainEvent::ProcessingRestrictionLifted(parse(payload).map_err(undecodable)?)
        }
    };
    Ok(Some(Fact::Domain(domain)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_of_agrees_with_the_kinds_table() {
        for (name, kind) in KINDS {
            assert_eq!(kind_of(name), Some(kind), "{name}");
        }
        for (name, _) in EVENT_TYPES {
            assert_eq!(
                kind_of(name),
                KINDS
                    .iter()
                    .find(|(known, _)| known == name)
                    .map(|(_, kind)| *kind),
                "{name}"
            );
        }
        assert_eq!(kind_of("AccountOpenedX"), None);
        assert_eq!(kind_of(""), None);
    }

    fn recorded(event_type: &str, payload: serde_json::Value) -> RecordedEvent {
        use ledger::store::{ChainLink, Digest, EventMetadata, EventType, Position, StreamName};
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream: StreamName::parse("s").unwrap(),
            revision: 0,
            position: Position::sequence(0),
            event_type: EventType::parse(event_type).unwrap(),
            schema_version: 1,
            recorded_at: DateTime::UNIX_EPOCH,
            metadata: EventMetadata::default(),
            payload: serde_json::to_vec(&payload).unwrap(),
            chain: ChainLink {
                previous: Digest::GENESIS,
                current: Digest::GENESIS,
            },
        }
    }

    /// The fixtures of the domain, with the personal fields the privacy layer seals
    /// replaced by an envelope-shaped object: the views still read them.
    #[test]
    fn sealed_personal_fields_do_not_stop_the_views() {
        let fixtures =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/events");
        for (event_type, field) in [
            ("PaymentReceived", "payment_fingerprint"),
            ("AccountOpened", "email_fingerprint"),
        ] {
            let text = std::fs::read_to_string(fixtures.join(format!("{event_type}.v1.json")))
                .expect("fixture");
            let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
            json[field] = serde_json::json!({"v": 1, "nonce": "AAAA", "ciphertext": "AAAA"});
            let fact = decode(&recorded(event_type, json)).expect("decodes");
            assert!(fact.is_some(), "{event_type}");
        }
        let text = std::fs::read_to_string(fixtures.join("PayoutFailed.v1.json")).unwrap();
        let plain: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            decode(&recorded("PayoutFailed", plain.clone())),
            Ok(Some(Fact::Domain(DomainEvent::PayoutFailed(_))))
        ));
        let mut sealed = plain;
        sealed["reason"] = serde_json::json!({"v": 1, "nonce": "AAAA", "ciphertext": "AAAA"});
        let read = decode(&recorded("PayoutFailed", sealed));
        assert!(
            matches!(read, Ok(Some(Fact::Domain(DomainEvent::PayoutFailed(_))))),
            "{read:?}"
        );
    }

    #[test]
    fn every_fast_path_kind_is_a_domain_event_type() {
        for (index, (name, kind)) in KINDS.iter().enumerate() {
            assert_eq!(*kind as usize, index, "{name} out of order");
            assert!(current_version(*kind) >= 1);
            assert_eq!(kind_of(name), Some(*kind));
        }
        for skipped in SKIPPED {
            assert!(EVENT_TYPES.iter().any(|(known, _)| *known == skipped));
            assert_eq!(kind_of(skipped), None);
        }
        // Every domain type is either read on the fast path or deliberately skipped.
        for (known, _) in EVENT_TYPES {
            assert!(
                kind_of(known).is_some() || SKIPPED.contains(known),
                "{known} is neither read nor skipped"
            );
        }
    }
}
