//! Sealing and opening stored event payloads: the one place where domain events meet the
//! vault.
//!
//! Deciders and their events work with personal values in clear, in memory only. On the
//! way to the store, [`seal_payload`] replaces every personal field of the JSON payload
//! with a sealed envelope bound to the event's id, type, field and subject; on the way
//! back, [`open_payload`] replaces each envelope with its value, or with a fixed
//! replacement if the value was erased (reported in [`OpenedPayload::erased`]). The
//! domain's JSON shapes, and its golden fixtures, stay as they are; only the bytes in the
//! log differ.
//!
//! [`SCHEMAS`] names the personal fields of each event type. A field is named in the
//! associated data by its JSON key, which is also how [`super::export`] finds it.

use serde_json::Value;

use super::sealed::{open, seal, FieldName, Opened, SealContext, Sealed};
use super::vault::KeyVault;
use super::{ErasureGroup, PersonalText, PrivacyError, SubjectId};
use crate::store::{NewEvent, RecordedEvent};
use chrono::{DateTime, Utc};

/// What an erased value reads as, by the kind of value it was. Each replacement is a
/// valid value of its kind, so an erased subject's events still decode and replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replacement {
    Name,
    Email,
    IpAddress,
    Fingerprint,
    Text,
}

impl Replacement {
    pub const fn value(self) -> &'static str {
        match self {
            Replacement::Name | Replacement::Text => "[erased]",
            // `.invalid` is reserved (RFC 2606): it can never be someone's address.
            Replacement::Email => "erased@erased.invalid",
            Replacement::IpAddress => "0.0.0.0",
            Replacement::Fingerprint => "erased",
        }
    }
}

/// One personal field of an event type.
#[derive(Clone, Copy, Debug)]
pub struct PersonalField {
    /// Keys from the payload's root to the field; the last is the field's name.
    pub path: &'static [&'static str],
    pub group: ErasureGroup,
    pub replacement: Replacement,
}

/// The personal fields of one event type, and the key holding whose data they are.
#[derive(Clone, Copy, Debug)]
pub struct EventSchema {
    pub event_type: &'static str,
    /// The top-level key holding the subject's id.
    pub subject: &'static str,
    pub fields: &'static [PersonalField],
}

const fn field(
    path: &'static [&'static str],
    group: ErasureGroup,
    replacement: Replacement,
) -> PersonalField {
    PersonalField {
        path,
        group,
        replacement,
    }
}

use ErasureGroup::{Payout, Profile};

/// Every event type that carries personal data. An event type not listed carries none;
/// a test over the domain's fixtures keeps this list and the shapes in step.
pub const SCHEMAS: &[EventSchema] = &[
    EventSchema {
        event_type: "AccountOpened",
        subject: "account_id",
        fields: &[
            field(&["personal_data", "name"], Profile, Replacement::Name),
            field(&["personal_data", "email"], Profile, Replacement::Email),
            field(
                &["personal_data", "signup_ip"],
                Profile,
                Replacement::IpAddress,
            ),
            field(&["email_fingerprint"], Profile, Replacement::Fingerprint),
            field(&["ip_fingerprint"], Profile, Replacement::Fingerprint),
            field(&["payment_fingerprint"], Payout, Replacement::Fingerprint),
        ],
    },
    EventSchema {
        event_type: "PersonalDataCorrected",
        subject: "account_id",
        fields: &[
            field(&["personal_data", "name"], Profile, Replacement::Name),
            field(&["personal_data", "email"], Profile, Replacement::Email),
            field(
                &["personal_data", "signup_ip"],
                Profile,
                Replacement::IpAddress,
            ),
            field(&["email_fingerprint"], Profile, Replacement::Fingerprint),
        ],
    },
    EventSchema {
        event_type: "PaymentReceived",
        subject: "account_id",
        fields: &[field(
            &["payment_fingerprint"],
            Payout,
            Replacement::Fingerprint,
        )],
    },
    // A processor's failure message can quote the account holder.
    EventSchema {
        event_type: "PayoutFailed",
        subject: "affiliate",
        fields: &[field(&["reason"], Payout, Replacement::Text)],
    },
];

pub fn schema(event_type: &str) -> Option<&'static EventSchema> {
    SCHEMAS
        .iter()
        .find(|schema| schema.event_type == event_type)
}

/// A payload read back with its personal values in clear, or replaced if erased.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenedPayload {
    pub payload: Vec<u8>,
    /// The fields that were erased, with their group and when.
    pub erased: Vec<ErasedField>,
}

impl std::fmt::Debug for OpenedPayload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedPayload")
            .field("payload_len", &self.payload.len())
            .field("erased", &self.erased)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasedField {
    pub field: &'static str,
    pub group: ErasureGroup,
    pub at: DateTime<Utc>,
}

/// Seals the personal fields of `event` (if its type has any) under the subject's keys.
/// Fails with [`PrivacyError::SubjectErased`] if the subject's group was erased: nothing
/// personal is written for an erased subject.
pub fn seal_payload(vault: &dyn KeyVault, mut event: NewEvent) -> Result<NewEvent, PrivacyError> {
    let Some(schema) = schema(event.event_type.as_str()) else {
        return Ok(event);
    };
    let mut json = parse(&event.payload, schema)?;
    let subject = subject_of(&json, schema)?;
    for personal in schema.fields {
        let Some(slot) = slot(&mut json, personal.path) else {
            continue;
        };
        let text = match slot {
            Value::Null => continue,
            Value::String(text) => PersonalText::new(std::mem::take(text))?,
            _ => return Err(invalid(schema, personal, "is not a string or null")),
        };
        let context = context(event.id, &event.event_type, personal, subject)?;
        let sealed = seal(vault, &context, &text)?;
        *slot = serde_json::to_value(&sealed).expect("envelopes serialise");
    }
    event.payload = serde_json::to_vec(&json).expect("JSON values serialise");
    Ok(event)
}

/// Opens the personal fields of a stored event. A vault that cannot be read is an error,
/// never an erasure; a personal field found in clear is an error too (the log must never
/// hold one).
pub fn open_payload(
    vault: &dyn KeyVault,
    event: &RecordedEvent,
) -> Result<OpenedPayload, PrivacyError> {
    let Some(schema) = schema(event.event_type.as_str()) else {
        return Ok(OpenedPayload {
            payload: event.payload.clone(),
            erased: Vec::new(),
        });
    };
    let mut json = parse(&event.payload, schema)?;
    let subject = subject_of(&json, schema)?;
    let mut erased = Vec::new();
    for personal in schema.fields {
        let Some(slot) = slot(&mut json, personal.path) else {
            continue;
        };
        if slot.is_null() {
            continue;
        }
        if !slot.is_object() {
            return Err(invalid(schema, personal, "is stored in clear"));
        }
        let sealed: Sealed = serde_json::from_value(slot.clone())
            .map_err(|_| invalid(schema, personal, "is not a sealed envelope"))?;
        let context = context(event.id, &event.event_type, personal, subject)?;
        *slot = match open(vault, &context, &sealed)? {
            Opened::Plain(text) => Value::String(text.expose().to_owned()),
            Opened::Erased { at } => {
                erased.push(ErasedField {
                    field: leaf(personal),
                    group: personal.group,
                    at,
                });
                Value::String(personal.replacement.value().to_owned())
            }
        };
    }
    Ok(OpenedPayload {
        payload: serde_json::to_vec(&json).expect("JSON values serialise"),
        erased,
    })
}

/// A stored event's payload with every personal field replaced by its fixed replacement,
/// without asking the vault: for readers that need no personal data (balances, the
/// journal, commissions, reports), so they decode every event without holding keys.
pub fn redact_payload(event: &RecordedEvent) -> Result<Vec<u8>, PrivacyError> {
    let Some(schema) = schema(event.event_type.as_str()) else {
        return Ok(event.payload.clone());
    };
    let mut json = parse(&event.payload, schema)?;
    for personal in schema.fields {
        let Some(slot) = slot(&mut json, personal.path) else {
            continue;
        };
        if slot.is_null() {
            continue;
        }
        if !slot.is_object() {
            return Err(invalid(schema, personal, "is stored in clear"));
        }
        *slot = Value::String(personal.replacement.value().to_owned());
    }
    Ok(serde_json::to_vec(&json).expect("JSON values serialise"))
}

/// The subject whose personal data a stored event carries, if it carries any.
pub fn subject_of_event(event: &RecordedEvent) -> Result<Option<SubjectId>, PrivacyError> {
    let Some(schema) = schema(event.event_type.as_str()) else {
        return Ok(None);
    };
    let json = parse(&event.payload, schema)?;
    subject_of(&json, schema).map(Some)
}

fn leaf(personal: &PersonalField) -> &'static str {
    personal.path.last().expect("a field path is never empty")
}

fn context(
    event_id: uuid::Uuid,
    event_type: &crate::store::EventType,
    personal: &PersonalField,
    subject: SubjectId,
) -> Result<SealContext, PrivacyError> {
    Ok(SealContext {
        event_id,
        event_type: event_type.clone(),
        field: FieldName::parse(leaf(personal))?,
        subject,
        group: personal.group,
    })
}

fn parse(payload: &[u8], schema: &EventSchema) -> Result<Value, PrivacyError> {
    serde_json::from_slice(payload).map_err(|error| PrivacyError::Invalid {
        what: "event payload",
        reason: format!("{} is not JSON: {error}", schema.event_type),
    })
}

fn subject_of(json: &Value, schema: &EventSchema) -> Result<SubjectId, PrivacyError> {
    json.get(schema.subject)
        .and_then(|id| serde_json::from_value::<SubjectId>(id.clone()).ok())
        .ok_or_else(|| PrivacyError::Invalid {
            what: "event payload",
            reason: format!(
                "{} has no subject id in {:?}",
                schema.event_type, schema.subject
            ),
        })
}

/// The value at `path`, if every key on the way exists.
fn slot<'a>(json: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(json, |node, key| node.get_mut(*key))
}

fn invalid(schema: &EventSchema, personal: &PersonalField, problem: &str) -> PrivacyError {
    PrivacyError::Invalid {
        what: "event payload",
        reason: format!(
            "{} field {} {problem}",
            schema.event_type,
            personal.path.join(".")
        ),
    }
}
