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
        return upcast(event_type, event.schema_version, &event.payload)
            .map(|domain| Some(Fact::Domain(domain)))
            .map_err(|error| undecodable(error.to_string()));
    };
    if event.schema_version != current_version(kind) {
        let upcast = upcast(event_type, event.schema_version, &event.payload)
            .map_err(|error| undecodable(error.to_string()))?;
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
        Kind::PaymentReceived => DomainEvent::PaymentReceived(parse(payload).map_err(undecodable)?),
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
        Kind::PayoutFailed => DomainEvent::PayoutFailed(parse(payload).map_err(undecodable)?),
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
