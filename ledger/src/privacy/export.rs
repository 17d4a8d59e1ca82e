//! Portability: everything the ledger holds about a subject, decrypted, as one JSON
//! document.
//!
//! The export walks each event's JSON payload and replaces every sealed envelope of the
//! subject with what it opens to, using the JSON key it stands under as the field name
//! (which is what it was sealed with). After an erasure the document holds no personal
//! data: shredded values read as erased, and groups retained only on a legal basis are
//! shown as retained, with the basis and date, not in clear.
//!
//! ```json
//! {"format": "refledger.subject-export.v1", "subject": "<uuid>",
//!  "erasure": null | {<SubjectErased>},
//!  "events": [{"event_id", "stream", "revision", "position", "event_type",
//!              "schema_version", "recorded_at", "data": <payload, values opened>}]}
//! ```

use serde_json::{json, Map, Value};

use super::events::{PrivacyEvent, SubjectErased};
use super::sealed::{open, FieldName, Opened, SealContext, Sealed};
use super::vault::KeyVault;
use super::{PrivacyError, SubjectId};
use crate::store::RecordedEvent;

pub const EXPORT_FORMAT: &str = "refledger.subject-export.v1";
/// Most events one export reads.
pub const EXPORT_EVENTS_MAX: usize = 100_000;
/// Most JSON nodes walked in one event's payload.
pub const PAYLOAD_NODES_MAX: usize = 100_000;

/// Builds the export of `subject` from the events that concern it (its account stream, its
/// privacy stream, ...), opening sealed values with `vault`. A vault that cannot be read
/// fails the export rather than report values as erased.
pub fn export_subject(
    subject: SubjectId,
    events: &[RecordedEvent],
    vault: &dyn KeyVault,
) -> Result<Value, PrivacyError> {
    if events.len() > EXPORT_EVENTS_MAX {
        return Err(PrivacyError::LimitExceeded {
            limit: "export_events_max",
            max: EXPORT_EVENTS_MAX,
            actual: events.len(),
        });
    }
    let mut erasure: Option<SubjectErased> = None;
    for event in events {
        let decoded = PrivacyEvent::from_payload(
            event.event_type.as_str(),
            event.schema_version,
            &event.payload,
        )?;
        if let Some(PrivacyEvent::SubjectErased(erased)) = decoded {
            if erased.subject == subject && erasure.is_none() {
                erasure = Some(erased);
            }
        }
    }
    let mut exported = Vec::with_capacity(events.len());
    for event in events {
        let data = match serde_json::from_slice::<Value>(&event.payload) {
            Ok(mut data) => {
                open_all(subject, event, &mut data, vault, erasure.as_ref())?;
                data
            }
            // Not JSON: nothing sealed in it to open, and nothing we can show as data.
            Err(_) => Value::Null,
        };
        exported.push(json!({
            "event_id": event.id,
            "stream": event.stream.as_str(),
            "revision": event.revision,
            "position": event.position.commit,
            "event_type": event.event_type.as_str(),
            "schema_version": event.schema_version,
            "recorded_at": event.recorded_at,
            "data": data,
        }));
    }
    Ok(json!({
        "format": EXPORT_FORMAT,
        "subject": subject,
        "erasure": erasure,
        "events": exported,
    }))
}

/// Replaces every sealed envelope in `data` in place. Walks with an explicit stack: a
/// payload's nesting is not ours to trust.
fn open_all(
    subject: SubjectId,
    event: &RecordedEvent,
    data: &mut Value,
    vault: &dyn KeyVault,
    erasure: Option<&SubjectErased>,
) -> Result<(), PrivacyError> {
    let mut stack: Vec<(&mut Value, Option<String>)> = vec![(data, None)];
    let mut walked = 0usize;
    while let Some((node, field)) = stack.pop() {
        walked += 1;
        if walked > PAYLOAD_NODES_MAX {
            return Err(PrivacyError::LimitExceeded {
                limit: "payload_nodes_max",
                max: PAYLOAD_NODES_MAX,
                actual: walked,
            });
        }
        if let Some(sealed) = as_envelope(node) {
            *node = opened_value(subject, event, field.as_deref(), &sealed, vault, erasure)?;
            continue;
        }
        match node {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    stack.push((value, Some(key.clone())));
                }
            }
            Value::Array(items) => {
                for item in items.iter_mut() {
                    stack.push((item, field.clone()));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn as_envelope(node: &Value) -> Option<Sealed> {
    let map: &Map<String, Value> = node.as_object()?;
    if !(map.contains_key("alg") && map.contains_key("kid") && map.contains_key("ct")) {
        return None;
    }
    serde_json::from_value(node.clone()).ok()
}

fn opened_value(
    subject: SubjectId,
    event: &RecordedEvent,
    field: Option<&str>,
    sealed: &Sealed,
    vault: &dyn KeyVault,
    erasure: Option<&SubjectErased>,
) -> Result<Value, PrivacyError> {
    if sealed.subject() != subject {
        return Ok(json!({ "sealed": "another subject's data, not part of this export" }));
    }
    if let Some(retained) = erasure.and_then(|erasure| {
        erasure
            .groups_retained
            .iter()
            .find(|retained| retained.group == sealed.group())
    }) {
        // Kept on a legal basis only: the subject asked for erasure, so it is no longer
        // processed for them, export included.
        if vault.erased_at(subject, sealed.group())?.is_none() {
            return Ok(json!({ "retained": retained }));
        }
    }
    let field = FieldName::parse(field.unwrap_or("")).map_err(|_| PrivacyError::Unauthentic {
        field: field.unwrap_or("").to_owned(),
        reason: "a sealed value must stand under a field name",
    })?;
    let context = SealContext {
        event_id: event.id,
        event_type: event.event_type.clone(),
        field,
        subject,
        group: sealed.group(),
    };
    Ok(match open(vault, &context, sealed)? {
        Opened::Plain(text) => Value::String(text.expose().to_owned()),
        Opened::Erased { at } => json!({ "erased_at": at }),
    })
}
