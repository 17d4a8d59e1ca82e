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

use crate::projection::ProjectionError;

/// What the views need of an account's opening.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Opened {
    pub account_id: AccountId,
    pub referrer: Option<AccountId>,
    #[serde(default)]
    pub fraud_flags: Vec<FraudFlag>,
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
    received_at: DateTime<Utc>,
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

const KINDS: [(&str, Kind); 20] = [
    ("AccountOpened", Kind::AccountOpened),
    ("CreditsGranted", Kind::CreditsGranted),
    ("CreditsPurchased", Kind::CreditsPurchased),
    ("CreditsSpent", Kind::CreditsSpent),
    ("CreditsExpired", Kind::CreditsExpired),
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
    // Dispatch on length first: most names differ in length, so this is one comparison.
    KINDS
        .iter()
        .find(|(name, _)| name.len() == event_type.len() && *name == event_type)
        .map(|(_, kind)| *kind)
}

/// Reads `event`; `Ok(None)` for events the views do not read, including event types
/// this version does not know (another component's events, such as the privacy layer's).
pub fn decode(event: &RecordedEvent) -> Result<Option<Fact>, ProjectionError> {
    let event_type = event.event_type.as_str();
    let undecodable = |reason: String| ProjectionError::UndecodableEvent {
        position: event.position,
        event_type: event_type.to_owned(),
        reason,
    };
    let Some(kind) = kind_of(event_type) else {
        if SKIPPED.contains(&event_type)
            || !EVENT_TYPES.iter().any(|(known, _)| *known == event_type)
        {
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
        serde_json::from_slice(payload).map_err(|error| error.to_string())
    }
    let domain = match kind {
        Kind::AccountOpened => {
            return Ok(Some(Fact::Opened(parse(payload).map_err(undecodable)?)));
        }
        Kind::CreditsGranted => DomainEvent::CreditsGranted(parse(payload).map_err(undecodable)?),
        Kind::CreditsPurchased => {
            DomainEvent::CreditsPurchased(parse(payload).map_err(undecodable)?)
        }
        Kind::CreditsSpent => DomainEvent::CreditsSpent(parse(payload).map_err(undecodable)?),
        Kind::CreditsExpired => DomainEvent::CreditsExpired(parse(payload).map_err(undecodable)?),
        Kind::PaymentReceived => {
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
        Kind::PaymentRefunded => DomainEvent::PaymentRefunded(parse(payload).map_err(undecodable)?),
        Kind::PaymentChargedBack => {
            DomainEvent::PaymentChargedBack(parse(payload).map_err(undecodable)?)
        }
        Kind::CommissionEarned => {
            DomainEvent::CommissionEarned(parse(payload).map_err(undecodable)?)
        }
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
