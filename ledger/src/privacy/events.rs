//! The privacy events: facts about erasure, retention, legal holds and restriction of
//! processing. None of them carries personal data; they name subjects by their random id.
//!
//! Each event is JSON in the payload of a store event whose type is the variant's name
//! (`SubjectErased`, ...) and whose schema version is [`PRIVACY_SCHEMA_VERSION`]. They are
//! appended to the subject's privacy stream, [`privacy_stream`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ErasureGroup, PrivacyError, SubjectId};
use crate::store::{EventType, StreamName};

/// The schema version of every privacy event shape written today.
pub const PRIVACY_SCHEMA_VERSION: u16 = 1;

/// The stream a subject's privacy events are appended to.
pub fn privacy_stream(subject: SubjectId) -> StreamName {
    StreamName::parse(format!("privacy-{}", subject.as_uuid()))
        .expect("a uuid makes a valid stream name")
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PrivacyEvent {
    ErasureRequested(ErasureRequested),
    SubjectErased(SubjectErased),
    RetainedDataShredded(RetainedDataShredded),
    LegalHoldPlaced(LegalHoldPlaced),
    LegalHoldLifted(LegalHoldLifted),
    ProcessingRestricted(ProcessingRestricted),
    ProcessingRestrictionLifted(ProcessingRestrictionLifted),
}

/// A data subject asked to be erased; the policy's 30-day deadline runs from here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureRequested {
    pub request_id: Uuid,
    pub subject: SubjectId,
    pub requested_at: DateTime<Utc>,
}

/// The proof of an erasure: which groups' keys were destroyed, and which were kept, on
/// what legal basis and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectErased {
    pub request_id: Uuid,
    pub subject: SubjectId,
    pub erased_at: DateTime<Utc>,
    pub groups_shredded: Vec<ErasureGroup>,
    pub groups_retained: Vec<RetainedGroup>,
}

/// A group kept past an erasure request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetainedGroup {
    pub group: ErasureGroup,
    pub legal_basis: LegalBasis,
    /// When the retention ends; `None` while it depends on a legal hold being lifted.
    pub retain_until: Option<DateTime<Utc>>,
}

/// Why data is kept although its subject asked for erasure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    /// Payment records are kept for the period financial regulations require (policy 5.1).
    PaymentRecordRetention,
    /// A legal hold is in force (litigation, an inquiry): nothing is shredded.
    LegalHold,
}

/// A retained group's keys were destroyed when its retention ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetainedDataShredded {
    pub request_id: Uuid,
    pub subject: SubjectId,
    pub group: ErasureGroup,
    pub shredded_at: DateTime<Utc>,
}

/// A legal hold on a subject's data: no key of the subject is destroyed while it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalHoldPlaced {
    pub hold_id: Uuid,
    pub subject: SubjectId,
    pub placed_at: DateTime<Utc>,
    pub reason: HoldReason,
}

/// Why a hold was placed; a category, never free text (which could carry personal data).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldReason {
    Litigation,
    RegulatoryInquiry,
    TaxAudit,
    LawEnforcementRequest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalHoldLifted {
    pub hold_id: Uuid,
    pub subject: SubjectId,
    pub lifted_at: DateTime<Utc>,
}

/// The subject restricted processing: analytics and marketing projections leave them out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingRestricted {
    pub request_id: Uuid,
    pub subject: SubjectId,
    pub restricted_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingRestrictionLifted {
    pub request_id: Uuid,
    pub subject: SubjectId,
    pub lifted_at: DateTime<Utc>,
}

impl PrivacyEvent {
    /// Every privacy event type name, as stored.
    pub const EVENT_TYPES: [&'static str; 7] = [
        "ErasureRequested",
        "SubjectErased",
        "RetainedDataShredded",
        "LegalHoldPlaced",
        "LegalHoldLifted",
        "ProcessingRestricted",
        "ProcessingRestrictionLifted",
    ];

    pub fn subject(&self) -> SubjectId {
        match self {
            PrivacyEvent::ErasureRequested(event) => event.subject,
            PrivacyEvent::SubjectErased(event) => event.subject,
            PrivacyEvent::RetainedDataShredded(event) => event.subject,
            PrivacyEvent::LegalHoldPlaced(event) => event.subject,
            PrivacyEvent::LegalHoldLifted(event) => event.subject,
            PrivacyEvent::ProcessingRestricted(event) => event.subject,
            PrivacyEvent::ProcessingRestrictionLifted(event) => event.subject,
        }
    }

    pub fn event_type_name(&self) -> &'static str {
        match self {
            PrivacyEvent::ErasureRequested(_) => "ErasureRequested",
            PrivacyEvent::SubjectErased(_) => "SubjectErased",
            PrivacyEvent::RetainedDataShredded(_) => "RetainedDataShredded",
            PrivacyEvent::LegalHoldPlaced(_) => "LegalHoldPlaced",
            PrivacyEvent::LegalHoldLifted(_) => "LegalHoldLifted",
            PrivacyEvent::ProcessingRestricted(_) => "ProcessingRestricted",
            PrivacyEvent::ProcessingRestrictionLifted(_) => "ProcessingRestrictionLifted",
        }
    }

    pub fn event_type(&self) -> EventType {
        EventType::parse(self.event_type_name()).expect("privacy event type names are valid")
    }

    /// The payload: the variant's fields as a JSON object, in declaration order.
    pub fn to_payload(&self) -> Vec<u8> {
        let written = match self {
            PrivacyEvent::ErasureRequested(event) => serde_json::to_vec(event),
            PrivacyEvent::SubjectErased(event) => serde_json::to_vec(event),
            PrivacyEvent::RetainedDataShredded(event) => serde_json::to_vec(event),
            PrivacyEvent::LegalHoldPlaced(event) => serde_json::to_vec(event),
            PrivacyEvent::LegalHoldLifted(event) => serde_json::to_vec(event),
            PrivacyEvent::ProcessingRestricted(event) => serde_json::to_vec(event),
            PrivacyEvent::ProcessingRestrictionLifted(event) => serde_json::to_vec(event),
        };
        written.expect("privacy events serialise")
    }

    /// Reads a stored event back; `Ok(None)` if `event_type` is not a privacy event.
    pub fn from_payload(
        event_type: &str,
        schema_version: u16,
        payload: &[u8],
    ) -> Result<Option<PrivacyEvent>, PrivacyError> {
        if !PrivacyEvent::EVENT_TYPES.contains(&event_type) {
            return Ok(None);
        }
        if schema_version != PRIVACY_SCHEMA_VERSION {
            return Err(PrivacyError::Invalid {
                what: "privacy event",
                reason: format!("{event_type} has unknown schema version {schema_version}"),
            });
        }
        let data: serde_json::Value =
            serde_json::from_slice(payload).map_err(|error| PrivacyError::Invalid {
                what: "privacy event",
                reason: format!("{event_type} payload is not JSON: {error}"),
            })?;
        let tagged = serde_json::json!({ "type": event_type, "data": data });
        serde_json::from_value(tagged)
            .map(Some)
            .map_err(|error| PrivacyError::Invalid {
                what: "privacy event",
                reason: format!("{event_type} payload: {error}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).unwrap()
    }

    #[test]
    fn the_json_shape_of_subject_erased_is_fixed() {
        let event = PrivacyEvent::SubjectErased(SubjectErased {
            request_id: Uuid::from_u128(1),
            subject: SubjectId::new(Uuid::from_u128(2)),
            erased_at: at(1_700_000_000),
            groups_shredded: vec![ErasureGroup::Profile],
            groups_retained: vec![RetainedGroup {
                group: ErasureGroup::Payout,
                legal_basis: LegalBasis::PaymentRecordRetention,
                retain_until: Some(at(1_900_000_000)),
            }],
        });
        let payload = String::from_utf8(event.to_payload()).unwrap();
        assert_eq!(
            payload,
            r#"{"request_id":"00000000-0000-0000-0000-000000000001","subject":"00000000-0000-0000-0000-000000000002","erased_at":"2023-11-14T22:13:20Z","groups_shredded":["profile"],"groups_retained":[{"group":"payout","legal_basis":"payment_record_retention","retain_until":"2030-03-17T17:46:40Z"}]}"#
        );
        let back = PrivacyEvent::from_payload("SubjectErased", 1, payload.as_bytes()).unwrap();
        assert_eq!(back, Some(event));
    }

    #[test]
    fn every_event_round_trips_through_its_payload() {
        let subject = SubjectId::new(Uuid::from_u128(2));
        let events = [
            PrivacyEvent::ErasureRequested(ErasureRequested {
                request_id: Uuid::from_u128(1),
                subject,
                requested_at: at(10),
            }),
            PrivacyEvent::RetainedDataShredded(RetainedDataShredded {
                request_id: Uuid::from_u128(1),
                subject,
                group: ErasureGroup::Payout,
                shredded_at: at(20),
            }),
            PrivacyEvent::LegalHoldPlaced(LegalHoldPlaced {
                hold_id: Uuid::from_u128(3),
                subject,
                placed_at: at(30),
                reason: HoldReason::TaxAudit,
            }),
            PrivacyEvent::LegalHoldLifted(LegalHoldLifted {
                hold_id: Uuid::from_u128(3),
                subject,
                lifted_at: at(40),
            }),
            PrivacyEvent::ProcessingRestricted(ProcessingRestricted {
                request_id: Uuid::from_u128(4),
                subject,
                restricted_at: at(50),
            }),
            PrivacyEvent::ProcessingRestrictionLifted(ProcessingRestrictionLifted {
                request_id: Uuid::from_u128(4),
                subject,
                lifted_at: at(60),
            }),
        ];
        for event in events {
            let back = PrivacyEvent::from_payload(
                event.event_type().as_str(),
                PRIVACY_SCHEMA_VERSION,
                &event.to_payload(),
            )
            .unwrap();
            assert_eq!(back.as_ref(), Some(&event));
            assert_eq!(event.subject(), subject);
        }
    }

    #[test]
    fn other_event_types_are_not_privacy_events_and_unknown_versions_fail() {
        assert!(PrivacyEvent::from_payload("PaymentReceived", 1, b"{}")
            .unwrap()
            .is_none());
        assert!(PrivacyEvent::from_payload("SubjectErased", 2, b"{}").is_err());
        assert!(PrivacyEvent::from_payload("SubjectErased", 1, b"{}").is_err());
    }
}
