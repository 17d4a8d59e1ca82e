//! Carrying out erasure requests and the retention shredder against a vault.
//!
//! The order is what makes it safe: keys are destroyed (durably, by the vault) before the
//! proof event is returned for appending. A crash in between leaves keys destroyed and no
//! event; running the request again finds the tombstones, changes nothing in the vault and
//! returns the event.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::events::{PrivacyEvent, RetainedDataShredded, SubjectErased};
use super::retention::{due_shreds, plan_erasure, ErasurePlan, PrivacyState, RetentionPolicy};
use super::vault::{KeyVault, ShredOutcome};
use super::{PrivacyError, SubjectId};

/// Erases `subject` for request `request_id` at `now`: destroys what the retention policy
/// allows and returns the `SubjectErased` proof to append, or nothing if the subject was
/// erased before (erasing twice is a no-op).
pub fn erase_subject(
    vault: &dyn KeyVault,
    state: &PrivacyState,
    subject: SubjectId,
    request_id: Uuid,
    now: DateTime<Utc>,
    policy: &RetentionPolicy,
) -> Result<Option<PrivacyEvent>, PrivacyError> {
    let (mut shred, mut retain) = match plan_erasure(state, subject, now, policy) {
        ErasurePlan::AlreadyErased => return Ok(None),
        ErasurePlan::Erase { shred, retain } => (shred, retain),
    };
    // A group the vault already erased (an earlier run that crashed before its proof was
    // appended, or lost a race to a hold) is reported as shredded: the proof tells the
    // truth about the keys, whatever the plan would decide now.
    let mut kept = Vec::with_capacity(retain.len());
    for retained in retain {
        if vault.erased_at(subject, retained.group)?.is_some() {
            shred.push(retained.group);
        } else {
            kept.push(retained);
        }
    }
    retain = kept;
    shred.sort();
    for group in &shred {
        vault.shred(subject, *group, now)?;
    }
    Ok(Some(PrivacyEvent::SubjectErased(SubjectErased {
        request_id,
        subject,
        erased_at: now,
        groups_shredded: shred,
        groups_retained: retain,
    })))
}

/// The shredder: destroys every retained group whose retention ended by `now` and is not
/// under a legal hold, and returns the `RetainedDataShredded` events to append.
pub fn run_shredder(
    vault: &dyn KeyVault,
    state: &PrivacyState,
    now: DateTime<Utc>,
    policy: &RetentionPolicy,
) -> Result<Vec<PrivacyEvent>, PrivacyError> {
    let mut events = Vec::new();
    for due in due_shreds(state, now, policy) {
        let shredded_at = match vault.shred(due.subject, due.group, now)? {
            ShredOutcome::Shredded { at } | ShredOutcome::AlreadyErased { at } => at,
        };
        events.push(PrivacyEvent::RetainedDataShredded(RetainedDataShredded {
            request_id: due.request_id,
            subject: due.subject,
            group: due.group,
            shredded_at,
        }));
    }
    Ok(events)
}
