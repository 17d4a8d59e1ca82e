//! Reading recorded events as domain facts, once per event for all views.
//!
//! Events no view needs are recognised by type and skipped without parsing. A payload at
//! the current schema version is parsed straight into its struct (the hot path of a
//! rebuild); an older one goes through the domain's [`upcast`], the one place old shapes
//! are read. `AccountOpened` is read through a narrow view without the personal data,
//! which projections never need and which the privacy layer stores encrypted.

use chrono::{DateTime, Utc};
use ledger::domain::events::{self, upcast, DomainEvent, FraudFlag, EVENT_TYPES};
use ledger::domain::AccountId;
use ledger::store::RecordedEvent;
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

/// Event types that no view reads: skipped without parsing.
const SKIPPED: &[&str] = &[
    "ReferralRecorded",
    "ReferralCodeClaimed",
    "PersonalDataCorrected",
    "SubscriptionStarted",
    "SubscriptionCancelled",
];

/// Reads `event`; `Ok(None)` for events the views do not read, including event types
/// this version does not know (another component's events, such as the privacy layer's).
pub fn decode(event: &RecordedEvent) -> Result<Option<Fact>, ProjectionError> {
    let event_type = event.event_type.as_str();
    if SKIPPED.contains(&event_type) {
        return Ok(None);
    }
    let Some(&(_, current)) = EVENT_TYPES.iter().find(|(name, _)| *name == event_type) else {
        return Ok(None);
    };
    let undecodable = |reason: String| ProjectionError::UndecodableEvent {
        position: event.position,
        event_type: event_type.to_owned(),
        reason,
    };
    if event.schema_version != current {
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
    let fact = match event_type {
        "AccountOpened" => Fact::Opened(parse(payload).map_err(undecodable)?),
        "CreditsGranted" => Fact::Domain(DomainEvent::CreditsGranted(
            parse::<events::CreditsGranted>(payload).map_err(undecodable)?,
        )),
        "CreditsPurchased" => Fact::Domain(DomainEvent::CreditsPurchased(
            parse::<events::CreditsPurchased>(payload).map_err(undecodable)?,
        )),
        "CreditsSpent" => Fact::Domain(DomainEvent::CreditsSpent(
            parse::<events::CreditsSpent>(payload).map_err(undecodable)?,
        )),
        "CreditsExpired" => Fact::Domain(DomainEvent::CreditsExpired(
            parse::<events::CreditsExpired>(payload).map_err(undecodable)?,
        )),
        "PaymentReceived" => Fact::Domain(DomainEvent::PaymentReceived(
            parse::<events::PaymentReceived>(payload).map_err(undecodable)?,
        )),
        "PaymentRefunded" => Fact::Domain(DomainEvent::PaymentRefunded(
            parse::<events::PaymentRefunded>(payload).map_err(undecodable)?,
        )),
        "PaymentChargedBack" => Fact::Domain(DomainEvent::PaymentChargedBack(
            parse::<events::PaymentChargedBack>(payload).map_err(undecodable)?,
        )),
        "CommissionEarned" => Fact::Domain(DomainEvent::CommissionEarned(
            parse::<events::CommissionEarned>(payload).map_err(undecodable)?,
        )),
        "CommissionReversed" => Fact::Domain(DomainEvent::CommissionReversed(
            parse::<events::CommissionReversed>(payload).map_err(undecodable)?,
        )),
        "CommissionPlanPublished" => Fact::Domain(DomainEvent::CommissionPlanPublished(
            parse::<events::CommissionPlanPublished>(payload).map_err(undecodable)?,
        )),
        "PayoutScheduled" => Fact::Domain(DomainEvent::PayoutScheduled(
            parse::<events::PayoutScheduled>(payload).map_err(undecodable)?,
        )),
        "PayoutSent" => Fact::Domain(DomainEvent::PayoutSent(
            parse::<events::PayoutSent>(payload).map_err(undecodable)?,
        )),
        "PayoutFailed" => Fact::Domain(DomainEvent::PayoutFailed(
            parse::<events::PayoutFailed>(payload).map_err(undecodable)?,
        )),
        "DonationAllocated" => Fact::Domain(DomainEvent::DonationAllocated(
            parse::<events::DonationAllocated>(payload).map_err(undecodable)?,
        )),
        // A type the domain knows and this list does not: read it the general way, so a
        // new event type is never silently dropped by the views.
        _ => Fact::Domain(
            upcast(event_type, event.schema_version, payload)
                .map_err(|error| undecodable(error.to_string()))?,
        ),
    };
    Ok(Some(fact))
}
