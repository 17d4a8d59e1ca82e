//! Retention, legal holds, restriction of processing and erasure deadlines, as pure
//! functions over the privacy events (and the payment dates the domain reports).
//!
//! [`PrivacyState`] is the fold; [`plan_erasure`] decides what an erasure request may
//! destroy now and what it must keep; [`due_shreds`] is the shredder's decision, taken
//! with an injected clock; [`erasure_requests`] tracks requests against the deadline.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Months, Utc};
use uuid::Uuid;

use super::events::{LegalBasis, PrivacyEvent, RetainedGroup, SubjectErased};
use super::{ErasureGroup, PrivacyError, SubjectId};
use crate::store::RecordedEvent;

/// The retention periods of the privacy policy (section 5), as data so a change of policy
/// is a change of configuration, not of code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Payment data is kept this many years after the subject's last payment.
    pub payment_data_years: u32,
    /// An erasure request is honoured within this many days.
    pub erasure_deadline_days: u32,
}

impl Default for RetentionPolicy {
    /// Policy 5.1 (payment data: 7 years) and 5.2 (deletion within 30 days).
    fn default() -> Self {
        RetentionPolicy {
            payment_data_years: 7,
            erasure_deadline_days: 30,
        }
    }
}

impl RetentionPolicy {
    /// The end of payment-data retention for a last payment at `last_payment_at`.
    pub fn payment_data_until(&self, last_payment_at: DateTime<Utc>) -> DateTime<Utc> {
        last_payment_at
            .checked_add_months(Months::new(self.payment_data_years * 12))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub fn erasure_due(&self, requested_at: DateTime<Utc>) -> DateTime<Utc> {
        requested_at + Duration::days(i64::from(self.erasure_deadline_days))
    }
}

/// What the privacy events say about one subject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectPrivacy {
    pub last_payment_at: Option<DateTime<Utc>>,
    /// Legal holds in force, by id.
    pub holds: BTreeSet<Uuid>,
    pub restricted: bool,
    /// The erasure carried out, if any (the first; later requests are no-ops).
    pub erased: Option<SubjectErased>,
    /// When each group's keys were destroyed.
    pub shredded: BTreeMap<ErasureGroup, DateTime<Utc>>,
}

impl SubjectPrivacy {
    pub fn on_hold(&self) -> bool {
        !self.holds.is_empty()
    }

    /// When `group` may be destroyed for an erased subject: at once for the profile,
    /// after payment-data retention for payout data.
    fn retain_until(&self, group: ErasureGroup, policy: &RetentionPolicy) -> Option<DateTime<Utc>> {
        match group {
            ErasureGroup::Profile => None,
            ErasureGroup::Payout => self
                .last_payment_at
                .map(|last| policy.payment_data_until(last)),
        }
    }
}

/// The fold of privacy events over all subjects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivacyState {
    subjects: BTreeMap<SubjectId, SubjectPrivacy>,
}

impl PrivacyState {
    pub fn apply(&mut self, event: &PrivacyEvent) {
        let subject = self.subjects.entry(event.subject()).or_default();
        match event {
            PrivacyEvent::ErasureRequested(_) => {}
            PrivacyEvent::SubjectErased(erased) => {
                if subject.erased.is_none() {
                    subject.erased = Some(erased.clone());
                }
                for group in &erased.groups_shredded {
                    subject.shredded.entry(*group).or_insert(erased.erased_at);
                }
            }
            PrivacyEvent::RetainedDataShredded(shredded) => {
                subject
                    .shredded
                    .entry(shredded.group)
                    .or_insert(shredded.shredded_at);
            }
            PrivacyEvent::LegalHoldPlaced(hold) => {
                subject.holds.insert(hold.hold_id);
            }
            PrivacyEvent::LegalHoldLifted(hold) => {
                subject.holds.remove(&hold.hold_id);
            }
            PrivacyEvent::ProcessingRestricted(_) => subject.restricted = true,
            PrivacyEvent::ProcessingRestrictionLifted(_) => subject.restricted = false,
        }
    }

    /// Records a payment by or to `subject` (from the domain's payment and payout events):
    /// payment-data retention runs from the last one.
    pub fn note_payment(&mut self, subject: SubjectId, at: DateTime<Utc>) {
        let state = self.subjects.entry(subject).or_default();
        state.last_payment_at = Some(state.last_payment_at.map_or(at, |last| last.max(at)));
    }

    /// Folds one stored event: a privacy event, or a payment fact of the domain
    /// (`PaymentReceived` by `account_id` at `received_at`, `PayoutSent` to `affiliate` at
    /// `sent_at`), from which payment-data retention runs. Other events change nothing.
    pub fn apply_recorded(&mut self, event: &RecordedEvent) -> Result<(), PrivacyError> {
        let event_type = event.event_type.as_str();
        if let Some(privacy) =
            PrivacyEvent::from_payload(event_type, event.schema_version, &event.payload)?
        {
            self.apply(&privacy);
            return Ok(());
        }
        let (subject_key, at_key) = match event_type {
            "PaymentReceived" => ("account_id", "received_at"),
            "PayoutSent" => ("affiliate", "sent_at"),
            _ => return Ok(()),
        };
        #[derive(serde::Deserialize)]
        struct Fact {
            subject: SubjectId,
            at: DateTime<Utc>,
        }
        let json: serde_json::Value =
            serde_json::from_slice(&event.payload).map_err(|error| PrivacyError::Invalid {
                what: "event payload",
                reason: format!("{event_type} is not JSON: {error}"),
            })?;
        let fact: Fact = serde_json::from_value(serde_json::json!({
            "subject": json.get(subject_key),
            "at": json.get(at_key),
        }))
        .map_err(|error| PrivacyError::Invalid {
            what: "event payload",
            reason: format!("{event_type} lacks {subject_key} or {at_key}: {error}"),
        })?;
        self.note_payment(fact.subject, fact.at);
        Ok(())
    }

    pub fn subject(&self, subject: SubjectId) -> Option<&SubjectPrivacy> {
        self.subjects.get(&subject)
    }

    /// Whether analytics and marketing projections must leave `subject` out. An erased
    /// subject is also left out: there is no one left to analyse.
    pub fn is_restricted(&self, subject: SubjectId) -> bool {
        self.subjects
            .get(&subject)
            .is_some_and(|state| state.restricted || state.erased.is_some())
    }
}

/// What an erasure request may destroy now and what it must keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErasurePlan {
    /// The subject was erased before: nothing to do.
    AlreadyErased,
    Erase {
        shred: Vec<ErasureGroup>,
        retain: Vec<RetainedGroup>,
    },
}

/// Decides an erasure request at `now`. A legal hold keeps every group; otherwise the
/// profile goes at once and payout data when payment-data retention has ended.
pub fn plan_erasure(
    state: &PrivacyState,
    subject: SubjectId,
    now: DateTime<Utc>,
    policy: &RetentionPolicy,
) -> ErasurePlan {
    let empty = SubjectPrivacy::default();
    let privacy = state.subject(subject).unwrap_or(&empty);
    if privacy.erased.is_some() {
        return ErasurePlan::AlreadyErased;
    }
    let mut shred = Vec::new();
    let mut retain = Vec::new();
    for group in ErasureGroup::ALL {
        let retain_until = privacy.retain_until(group, policy);
        if privacy.on_hold() {
            retain.push(RetainedGroup {
                group,
                legal_basis: LegalBasis::LegalHold,
                retain_until,
            });
        } else if let Some(until) = retain_until.filter(|until| *until > now) {
            retain.push(RetainedGroup {
                group,
                legal_basis: LegalBasis::PaymentRecordRetention,
                retain_until: Some(until),
            });
        } else {
            shred.push(group);
        }
    }
    ErasurePlan::Erase { shred, retain }
}

/// A retained group whose time has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueShred {
    pub request_id: Uuid,
    pub subject: SubjectId,
    pub group: ErasureGroup,
}

/// The groups the shredder must destroy at `now`: retained by an erasure, not yet
/// destroyed, no legal hold in force, retention ended (recomputed from the payments known
/// now, so a late payment record extends it).
pub fn due_shreds(
    state: &PrivacyState,
    now: DateTime<Utc>,
    policy: &RetentionPolicy,
) -> Vec<DueShred> {
    let mut due = Vec::new();
    for (subject, privacy) in &state.subjects {
        let Some(erased) = &privacy.erased else {
            continue;
        };
        if privacy.on_hold() {
            continue;
        }
        for retained in &erased.groups_retained {
            if privacy.shredded.contains_key(&retained.group) {
                continue;
            }
            let until = privacy.retain_until(retained.group, policy);
            if until.is_none_or(|until| until <= now) {
                due.push(DueShred {
                    request_id: erased.request_id,
                    subject: *subject,
                    group: retained.group,
                });
            }
        }
    }
    due
}

/// Where an erasure request stands against its deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureRequestStatus {
    pub request_id: Uuid,
    pub subject: SubjectId,
    pub requested_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub progress: ErasureProgress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErasureProgress {
    /// Not yet carried out; `overdue` once the deadline has passed.
    Pending { overdue: bool },
    /// Carried out (by this request, or by an earlier one for the same subject).
    Completed { at: DateTime<Utc>, on_time: bool },
}

impl ErasureRequestStatus {
    pub fn is_overdue(&self) -> bool {
        matches!(self.progress, ErasureProgress::Pending { overdue: true })
    }
}

/// Every erasure request in `events` and where it stands at `now`, in request order.
pub fn erasure_requests(
    events: &[PrivacyEvent],
    now: DateTime<Utc>,
    policy: &RetentionPolicy,
) -> Vec<ErasureRequestStatus> {
    let mut erased_at: BTreeMap<SubjectId, DateTime<Utc>> = BTreeMap::new();
    for event in events {
        if let PrivacyEvent::SubjectErased(erased) = event {
            erased_at.entry(erased.subject).or_insert(erased.erased_at);
        }
    }
    let mut requests = Vec::new();
    for event in events {
        let PrivacyEvent::ErasureRequested(request) = event else {
            continue;
        };
        let due_at = policy.erasure_due(request.requested_at);
        let progress = match erased_at.get(&request.subject) {
            Some(at) => {
                // Erased before this request arrived: it was honoured on arrival.
                let at = (*at).max(request.requested_at);
                ErasureProgress::Completed {
                    at,
                    on_time: at <= due_at,
                }
            }
            None => ErasureProgress::Pending {
                overdue: now > due_at,
            },
        };
        requests.push(ErasureRequestStatus {
            request_id: request.request_id,
            subject: request.subject,
            requested_at: request.requested_at,
            due_at,
            progress,
        });
    }
    requests
}

/// The requests past their deadline and not carried out.
pub fn overdue_erasure_requests(
    events: &[PrivacyEvent],
    now: DateTime<Utc>,
    policy: &RetentionPolicy,
) -> Vec<ErasureRequestStatus> {
    erasure_requests(events, now, policy)
        .into_iter()
        .filter(ErasureRequestStatus::is_overdue)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::events::{ErasureRequested, HoldReason, LegalHoldLifted, LegalHoldPlaced};

    fn day(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + Duration::days(days)
    }

    fn subject() -> SubjectId {
        SubjectId::new(Uuid::from_u128(42))
    }

    #[test]
    fn payment_data_is_kept_seven_calendar_years() {
        let policy = RetentionPolicy::default();
        let last = DateTime::parse_from_rfc3339("2024-02-29T10:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            policy.payment_data_until(last),
            DateTime::parse_from_rfc3339("2031-02-28T10:00:00Z")
                .unwrap()
                .to_utc()
        );
    }

    #[test]
    fn without_payments_everything_is_shredded_at_once() {
        let plan = plan_erasure(
            &PrivacyState::default(),
            subject(),
            day(0),
            &RetentionPolicy::default(),
        );
        assert_eq!(
            plan,
            ErasurePlan::Erase {
                shred: vec![ErasureGroup::Profile, ErasureGroup::Payout],
                retain: vec![],
            }
        );
    }

    #[test]
    fn payout_data_is_retained_after_a_recent_payment() {
        let policy = RetentionPolicy::default();
        let mut state = PrivacyState::default();
        state.note_payment(subject(), day(-10));
        state.note_payment(subject(), day(-400));
        let ErasurePlan::Erase { shred, retain } = plan_erasure(&state, subject(), day(0), &policy)
        else {
            panic!("not erased before");
        };
        assert_eq!(shred, vec![ErasureGroup::Profile]);
        assert_eq!(
            retain,
            vec![RetainedGroup {
                group: ErasureGroup::Payout,
                legal_basis: LegalBasis::PaymentRecordRetention,
                retain_until: Some(policy.payment_data_until(day(-10))),
            }]
        );
    }

    #[test]
    fn a_legal_hold_retains_everything() {
        let mut state = PrivacyState::default();
        state.apply(&PrivacyEvent::LegalHoldPlaced(LegalHoldPlaced {
            hold_id: Uuid::from_u128(1),
            subject: subject(),
            placed_at: day(-1),
            reason: HoldReason::Litigation,
        }));
        let ErasurePlan::Erase { shred, retain } =
            plan_erasure(&state, subject(), day(0), &RetentionPolicy::default())
        else {
            panic!("not erased before");
        };
        assert!(shred.is_empty());
        assert!(retain
            .iter()
            .all(|group| group.legal_basis == LegalBasis::LegalHold));
        assert_eq!(retain.len(), 2);
        state.apply(&PrivacyEvent::LegalHoldLifted(LegalHoldLifted {
            hold_id: Uuid::from_u128(1),
            subject: subject(),
            lifted_at: day(1),
        }));
        assert!(!state.subject(subject()).unwrap().on_hold());
    }

    #[test]
    fn requests_become_overdue_after_thirty_days_and_complete_on_erasure() {
        let policy = RetentionPolicy::default();
        let request = PrivacyEvent::ErasureRequested(ErasureRequested {
            request_id: Uuid::from_u128(9),
            subject: subject(),
            requested_at: day(0),
        });
        let events = vec![request.clone()];
        assert!(overdue_erasure_requests(&events, day(30), &policy).is_empty());
        let overdue = overdue_erasure_requests(&events, day(31), &policy);
        assert_eq!(overdue.len(), 1);
        assert_eq!(overdue[0].due_at, day(30));

        let erased = PrivacyEvent::SubjectErased(SubjectErased {
            request_id: Uuid::from_u128(9),
            subject: subject(),
            erased_at: day(35),
            groups_shredded: vec![ErasureGroup::Profile],
            groups_retained: vec![],
        });
        let statuses = erasure_requests(&[request, erased], day(40), &policy);
        assert_eq!(
            statuses[0].progress,
            ErasureProgress::Completed {
                at: day(35),
                on_time: false
            }
        );
        assert!(!statuses[0].is_overdue());
    }
}
