//! The privacy officer's commands on the ledger: erasure requests and their proof, legal
//! holds, restriction of processing, the retention shredder, deadlines and export.
//!
//! Privacy events go to the subject's stream `privacy-{id}`, appended under the revision
//! the decision was taken at, so two racing erasures of one subject record one proof.
//! Keys are destroyed (durably, by the vault) before the proof is appended; a crash in
//! between is repaired by running the same request again.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::erasure;
use super::events::{privacy_stream, PrivacyEvent, PRIVACY_SCHEMA_VERSION};
use super::export::export_subject;
use super::retention::{erasure_requests, ErasureRequestStatus, PrivacyState, RetentionPolicy};
use super::{PrivacyError, SubjectId};
use crate::domain::AccountId;
use crate::service::{event_id, CommandMeta, Ledger, LedgerError, LogBooks, Outcome, ATTEMPTS_MAX};
use crate::store::{
    EventMetadata, EventStore, EventType, ExpectedRevision, NewEvent, Position, RecordedEvent,
    StoreError, StreamState, PAGE_SIZE_MAX,
};

/// What the privacy facts of the log say, and where the subject's privacy stream stood.
pub struct PrivacyLog {
    pub state: PrivacyState,
    pub events: Vec<PrivacyEvent>,
}

impl<S: EventStore> Ledger<S> {
    /// Folds the whole log into the privacy state: erasures, holds, restrictions and the
    /// payment dates retention runs from. A projection will replace this for large logs.
    pub async fn privacy_log(&self) -> Result<PrivacyLog, LedgerError> {
        let mut log = PrivacyLog {
            state: PrivacyState::default(),
            events: Vec::new(),
        };
        for recorded in read_all(self.store()).await? {
            log.state
                .apply_recorded(&recorded)
                .map_err(LedgerError::Privacy)?;
            let event = PrivacyEvent::from_payload(
                recorded.event_type.as_str(),
                recorded.schema_version,
                &recorded.payload,
            )
            .map_err(LedgerError::Privacy)?;
            log.events.extend(event);
        }
        Ok(log)
    }

    /// Records that `subject` asked to be erased; the 30-day deadline runs from here.
    pub async fn request_erasure(
        &self,
        meta: CommandMeta,
        subject: AccountId,
        request_id: Uuid,
        requested_at: DateTime<Utc>,
    ) -> Result<Outcome, LedgerError> {
        let event = PrivacyEvent::ErasureRequested(super::events::ErasureRequested {
            request_id,
            subject: subject.into(),
            requested_at,
        });
        self.record_privacy_event(meta, event).await
    }

    /// Carries out an erasure request: destroys the keys the retention policy allows,
    /// durably, then appends the `SubjectErased` proof. Erasing an erased subject records
    /// nothing.
    pub async fn erase_subject(
        &self,
        meta: CommandMeta,
        subject: AccountId,
        request_id: Uuid,
        now: DateTime<Utc>,
        policy: &RetentionPolicy,
    ) -> Result<Outcome, LedgerError> {
        self.erase_subject_from(meta, subject, request_id, now, policy, None)
            .await
    }

    /// [`Ledger::erase_subject`] on books caught up from where they stood, instead of a
    /// fold of the whole log (see [`LogBooks`]).
    pub async fn erase_subject_with(
        &self,
        meta: CommandMeta,
        subject: AccountId,
        request_id: Uuid,
        now: DateTime<Utc>,
        policy: &RetentionPolicy,
        books: &mut LogBooks,
    ) -> Result<Outcome, LedgerError> {
        self.erase_subject_from(meta, subject, request_id, now, policy, Some(books))
            .await
    }

    /// Erases on the privacy state of the whole log, or of `books` caught up: either way
    /// read after the subject's privacy stream, so a racing erasure moves the stream and
    /// this one decides again.
    async fn erase_subject_from(
        &self,
        meta: CommandMeta,
        subject: AccountId,
        request_id: Uuid,
        now: DateTime<Utc>,
        policy: &RetentionPolicy,
        mut books: Option<&mut LogBooks>,
    ) -> Result<Outcome, LedgerError> {
        let account = subject;
        let subject = SubjectId::from(subject);
        for _ in 0..ATTEMPTS_MAX {
            let revision = self.store().stream_state(&privacy_stream(subject)).await?;
            let folded;
            let state = match books.as_deref_mut() {
                Some(books) => {
                    books.catch_up(self.store()).await?;
                    books.privacy()
                }
                None => {
                    folded = self.privacy_log().await?.state;
                    &folded
                }
            };
            let decided =
                erasure::erase_subject(self.vault(), state, subject, request_id, now, policy)
                    .map_err(LedgerError::Privacy)?;
            // Keys are gone (or were already): nothing decrypted before may stay cached.
            // The books' caller is the log's only writer, so only the subject's own
            // states can hold what was destroyed (see `forget_subject`).
            match books {
                Some(_) => self.forget_subject(account),
                None => self.forget_personal_data(),
            }
            let Some(proof) = decided else {
                return Ok(Outcome {
                    events: Vec::new(),
                    position: None,
                    replayed: false,
                });
            };
            match self.append_privacy(meta, subject, revision, &[proof]).await {
                Err(LedgerError::Store(StoreError::WrongExpectedVersion { .. })) => continue,
                other => return other,
            }
        }
        Err(LedgerError::Contention {
            stream: privacy_stream(subject),
        })
    }

    /// Records a legal hold, its lifting, or a restriction of processing (or its lifting):
    /// facts the privacy officer states.
    pub async fn record_privacy_event(
        &self,
        meta: CommandMeta,
        event: PrivacyEvent,
    ) -> Result<Outcome, LedgerError> {
        if matches!(
            event,
            PrivacyEvent::SubjectErased(_) | PrivacyEvent::RetainedDataShredded(_)
        ) {
            // A proof of destruction is written only by what destroyed the keys.
            return Err(LedgerError::Privacy(PrivacyError::Invalid {
                what: "privacy event",
                reason: format!(
                    "{} is recorded by erase_subject or run_shredder, not stated",
                    event.event_type_name()
                ),
            }));
        }
        let subject = event.subject();
        // A hold or restriction needs no ordering against other privacy facts: a hold
        // placed while an erasure runs is seen by its retry, or finds the keys gone.
        self.append_privacy_any(meta, subject, &[event]).await
    }

    /// Runs the retention shredder at `now` (an injected clock): destroys every retained
    /// group whose time has come and is not under a legal hold, and records each.
    pub async fn run_shredder(
        &self,
        meta: CommandMeta,
        now: DateTime<Utc>,
        policy: &RetentionPolicy,
    ) -> Result<Outcome, LedgerError> {
        let log = self.privacy_log().await?;
        let events = erasure::run_shredder(self.vault(), &log.state, now, policy)
            .map_err(LedgerError::Privacy)?;
        if !events.is_empty() {
            self.forget_personal_data();
        }
        let mut outcome = Outcome {
            events: Vec::new(),
            position: None,
            replayed: false,
        };
        for event in events {
            let subject = event.subject();
            let appended = self.append_privacy_any(meta, subject, &[event]).await?;
            outcome.events.extend(appended.events);
            outcome.position = appended.position.or(outcome.position);
        }
        Ok(outcome)
    }

    /// Every erasure request and where it stands against the deadline at `now`.
    pub async fn erasure_requests(
        &self,
        now: DateTime<Utc>,
        policy: &RetentionPolicy,
    ) -> Result<Vec<ErasureRequestStatus>, LedgerError> {
        Ok(erasure_requests(
            &self.privacy_log().await?.events,
            now,
            policy,
        ))
    }

    /// Everything the ledger holds about `subject`, decrypted, as one JSON document: every
    /// event that names the subject's id. After erasure it holds no personal data.
    pub async fn export_subject(&self, subject: AccountId) -> Result<Value, LedgerError> {
        let needle = subject.as_uuid().to_string();
        let mine: Vec<RecordedEvent> = read_all(self.store())
            .await?
            .into_iter()
            .filter(|event| {
                event.stream.as_str().contains(&needle)
                    || event
                        .payload
                        .windows(needle.len())
                        .any(|window| window == needle.as_bytes())
            })
            .collect();
        export_subject(subject.into(), &mine, self.vault()).map_err(LedgerError::Privacy)
    }

    async fn append_privacy(
        &self,
        meta: CommandMeta,
        subject: SubjectId,
        revision: StreamState,
        events: &[PrivacyEvent],
    ) -> Result<Outcome, LedgerError> {
        let expected = match revision {
            StreamState::NoStream => ExpectedRevision::NoStream,
            StreamState::At(last) => ExpectedRevision::Exact(last),
        };
        self.append_privacy_expecting(meta, subject, expected, events)
            .await
    }

    async fn append_privacy_any(
        &self,
        meta: CommandMeta,
        subject: SubjectId,
        events: &[PrivacyEvent],
    ) -> Result<Outcome, LedgerError> {
        self.append_privacy_expecting(meta, subject, ExpectedRevision::Any, events)
            .await
    }

    async fn append_privacy_expecting(
        &self,
        meta: CommandMeta,
        subject: SubjectId,
        expected: ExpectedRevision,
        events: &[PrivacyEvent],
    ) -> Result<Outcome, LedgerError> {
        let stream = privacy_stream(subject);
        let metadata = EventMetadata {
            correlation_id: Some(meta.correlation_id.unwrap_or(meta.command_id)),
            causation_id: Some(meta.command_id),
        };
        let new_events = events
            .iter()
            .enumerate()
            .map(|(index, event)| NewEvent {
                id: event_id(meta.command_id, &stream, index),
                event_type: EventType::parse(event.event_type_name())
                    .expect("privacy event types are valid"),
                schema_version: PRIVACY_SCHEMA_VERSION,
                metadata,
                payload: event.to_payload(),
            })
            .collect();
        let appended = self.store().append(&stream, expected, new_events).await;
        match appended {
            Ok(appended) => Ok(Outcome {
                events: events.iter().cloned().map(Into::into).collect(),
                position: Some(appended.position),
                replayed: false,
            }),
            Err(StoreError::IdempotencyConflict { .. }) => Err(LedgerError::CommandIdConflict {
                command_id: meta.command_id,
            }),
            Err(error) => Err(LedgerError::Store(error)),
        }
    }
}

/// The whole log in global order (the same walk as the service's own fold).
async fn read_all<S: EventStore>(store: &S) -> Result<Vec<RecordedEvent>, LedgerError> {
    let mut events: Vec<RecordedEvent> = Vec::new();
    let mut from = Position::START;
    loop {
        let page = store.read_all(from, PAGE_SIZE_MAX).await?;
        let mut progressed = false;
        for recorded in page {
            if events
                .last()
                .is_some_and(|last| recorded.position <= last.position)
            {
                continue;
            }
            from = recorded.position;
            events.push(recorded);
            progressed = true;
        }
        if !progressed {
            return Ok(events);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Duration;

    use super::*;
    use crate::domain::account::{AccountCommand, ForAccount, OpenAccount};
    use crate::domain::events::{DomainEvent, PaymentKind, PersonalData};
    use crate::domain::ids::{Fingerprint, PaymentId, SubscriptionId};
    use crate::domain::payment::RecordPayment;
    use crate::domain::scenario::account_id as id;
    use crate::domain::{Money, ReferralCode};
    use crate::privacy::events::{HoldReason, LegalBasis, LegalHoldLifted, LegalHoldPlaced};
    use crate::privacy::payload::Replacement;
    use crate::privacy::retention::ErasureProgress;
    use crate::privacy::vault::memory::MemoryVault;
    use crate::privacy::{ErasureGroup, KeyVault};
    use crate::service::LedgerConfig;
    use crate::store::memory::MemoryStore;

    fn meta(n: u128) -> CommandMeta {
        CommandMeta::new(Uuid::from_u128(n))
    }

    fn at(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap() + Duration::days(days)
    }

    fn email(n: u8) -> String {
        format!("canary-{n}-q7x@example.org")
    }

    fn personal(n: u8) -> PersonalData {
        PersonalData::parse(&format!("Canary Name {n}q"), &email(n), "203.0.113.9").unwrap()
    }

    fn open(n: u8, referred_by: Option<u8>) -> OpenAccount {
        OpenAccount {
            account_id: id(n),
            referral_code: ReferralCode::for_account(id(n)),
            referred_with_code: referred_by.map(|r| ReferralCode::for_account(id(r))),
            personal_data: personal(n),
            email_fingerprint: Fingerprint::parse(&format!("email-{n}")).unwrap(),
            ip_fingerprint: Fingerprint::parse(&format!("ip-{n}")).unwrap(),
            payment_fingerprint: None,
            opened_at: at(0),
        }
    }

    fn payment(payer: u8, when: DateTime<Utc>) -> RecordPayment {
        RecordPayment {
            payment_id: PaymentId::parse(&format!("pi_{payer}")).unwrap(),
            account_id: id(payer),
            kind: PaymentKind::Subscription {
                subscription_id: SubscriptionId::parse("sub_1").unwrap(),
            },
            amount: Money::parse("100.00", "EUR").unwrap(),
            payment_fingerprint: Some(Fingerprint::parse("card_fp_canary").unwrap()),
            received_at: when,
        }
    }

    /// Account 1 referred account 2, who paid: 1 earned a commission.
    async fn world() -> (Ledger<MemoryStore>, Arc<MemoryVault>) {
        let vault = Arc::new(MemoryVault::new().unwrap());
        let ledger = Ledger::new(MemoryStore::new(), LedgerConfig::default(), vault.clone());
        ledger.open_account(meta(1), &open(1, None)).await.unwrap();
        ledger
            .open_account(meta(2), &open(2, Some(1)))
            .await
            .unwrap();
        ledger
            .record_payment(meta(3), &payment(2, at(1)))
            .await
            .unwrap();
        (ledger, vault)
    }

    fn correct(n: u8) -> ForAccount {
        ForAccount {
            account_id: id(n),
            command: AccountCommand::CorrectPersonalData {
                personal_data: PersonalData::parse("New Name", "new@example.org", "203.0.113.1")
                    .unwrap(),
                email_fingerprint: Fingerprint::parse("email-new").unwrap(),
                corrected_at: at(2),
            },
        }
    }

    #[tokio::test]
    async fn an_erasure_through_the_ledger_keeps_the_books_and_forgets_the_person() {
        let (ledger, _vault) = world().await;
        let policy = RetentionPolicy::default();
        let balances_before = ledger.balances_at(at(60)).await.unwrap();
        assert!(!balances_before.is_empty(), "account 1 earned a commission");

        ledger
            .request_erasure(meta(10), id(2), Uuid::from_u128(77), at(5))
            .await
            .unwrap();
        let outcome = ledger
            .erase_subject(meta(11), id(2), Uuid::from_u128(77), at(6), &policy)
            .await
            .unwrap();
        let [DomainEvent::SubjectErased(proof)] = outcome.events.as_slice() else {
            panic!("one proof, got {:?}", outcome.events);
        };
        assert_eq!(proof.groups_shredded, vec![ErasureGroup::Profile]);
        assert_eq!(proof.groups_retained.len(), 1);
        assert_eq!(
            proof.groups_retained[0].legal_basis,
            LegalBasis::PaymentRecordRetention
        );
        assert_eq!(
            proof.groups_retained[0].retain_until,
            Some(policy.payment_data_until(at(1)))
        );

        // Erasing again records nothing.
        let again = ledger
            .erase_subject(meta(12), id(2), Uuid::from_u128(78), at(7), &policy)
            .await
            .unwrap();
        assert!(again.events.is_empty());

        assert_eq!(ledger.balances_at(at(60)).await.unwrap(), balances_before);
        let erased = ledger.account(id(2)).await.unwrap().unwrap();
        assert_eq!(erased.personal_data.name(), Replacement::Name.value());
        let kept = ledger.account(id(1)).await.unwrap().unwrap();
        assert_eq!(kept.personal_data.email(), email(1));

        let export = ledger.export_subject(id(2)).await.unwrap().to_string();
        for secret in [
            email(2),
            "Canary Name 2q".to_owned(),
            "203.0.113.9".to_owned(),
        ] {
            assert!(!export.contains(&secret), "{secret} in the export");
        }
        assert!(
            !export.contains("card_fp_canary"),
            "retained payout data is not exported"
        );
        assert!(export.contains("SubjectErased"));
        let export = ledger.export_subject(id(1)).await.unwrap().to_string();
        assert!(export.contains(&email(1)));

        let requests = ledger.erasure_requests(at(100), &policy).await.unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            requests[0].progress,
            ErasureProgress::Completed {
                at: at(6),
                on_time: true
            }
        );

        // Nothing personal can be written for the erased subject any more.
        let error = ledger
            .account_command(meta(13), &correct(2))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "subject_erased");
        // Everyone else writes as before.
        ledger.account_command(meta(14), &correct(1)).await.unwrap();
    }

    #[tokio::test]
    async fn a_vault_outage_fails_reads_and_erasures_and_erases_nothing() {
        let (warm, vault) = world().await;
        // A service that has cached nothing yet must ask the vault for every read.
        let ledger = Ledger::new(warm.store().clone(), LedgerConfig::default(), vault.clone());
        vault.set_unavailable(true);
        let error = ledger.account(id(2)).await.unwrap_err();
        assert_eq!(error.code(), "vault_unavailable");
        let error = ledger
            .erase_subject(
                meta(10),
                id(2),
                Uuid::new_v4(),
                at(5),
                &RetentionPolicy::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(error.code(), "vault_unavailable");
        assert!(ledger.export_subject(id(2)).await.is_err());
        // The books need no keys: balances stay available through the outage.
        assert!(!ledger.balances_at(at(60)).await.unwrap().is_empty());
        vault.set_unavailable(false);
        let account = ledger.account(id(2)).await.unwrap().unwrap();
        assert_eq!(account.personal_data.email(), email(2));
        assert!(ledger.privacy_log().await.unwrap().events.is_empty());
    }

    #[tokio::test]
    async fn overdue_requests_show_until_carried_out() {
        let (ledger, _vault) = world().await;
        let policy = RetentionPolicy::default();
        ledger
            .request_erasure(meta(10), id(1), Uuid::from_u128(5), at(10))
            .await
            .unwrap();
        // A proof cannot be stated, only earned by destroying the keys.
        let forged = PrivacyEvent::SubjectErased(crate::privacy::events::SubjectErased {
            request_id: Uuid::from_u128(5),
            subject: id(1).into(),
            erased_at: at(11),
            groups_shredded: vec![ErasureGroup::Profile],
            groups_retained: vec![],
        });
        let error = ledger
            .record_privacy_event(meta(9), forged)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "invalid_input");
        assert!(!ledger.erasure_requests(at(40), &policy).await.unwrap()[0].is_overdue());
        assert!(ledger.erasure_requests(at(41), &policy).await.unwrap()[0].is_overdue());
        ledger
            .erase_subject(meta(11), id(1), Uuid::from_u128(5), at(45), &policy)
            .await
            .unwrap();
        let status = &ledger.erasure_requests(at(46), &policy).await.unwrap()[0];
        assert_eq!(
            status.progress,
            ErasureProgress::Completed {
                at: at(45),
                on_time: false
            }
        );
    }

    #[tokio::test]
    async fn the_shredder_waits_for_retention_and_for_the_hold() {
        let (ledger, vault) = world().await;
        let policy = RetentionPolicy::default();
        let hold = Uuid::from_u128(9);
        ledger
            .erase_subject(meta(10), id(2), Uuid::from_u128(1), at(5), &policy)
            .await
            .unwrap();
        let subject = SubjectId::from(id(2));
        let retention_end = policy.payment_data_until(at(1));
        ledger
            .record_privacy_event(
                meta(11),
                PrivacyEvent::LegalHoldPlaced(LegalHoldPlaced {
                    hold_id: hold,
                    subject,
                    placed_at: at(6),
                    reason: HoldReason::TaxAudit,
                }),
            )
            .await
            .unwrap();
        let run = ledger
            .run_shredder(meta(12), retention_end + Duration::days(1), &policy)
            .await
            .unwrap();
        assert!(run.events.is_empty(), "a hold blocks shredding");
        assert!(vault
            .erased_at(subject, ErasureGroup::Payout)
            .unwrap()
            .is_none());
        ledger
            .record_privacy_event(
                meta(13),
                PrivacyEvent::LegalHoldLifted(LegalHoldLifted {
                    hold_id: hold,
                    subject,
                    lifted_at: retention_end + Duration::days(2),
                }),
            )
            .await
            .unwrap();
        let run = ledger
            .run_shredder(meta(14), retention_end + Duration::days(3), &policy)
            .await
            .unwrap();
        assert_eq!(run.events.len(), 1);
        assert!(vault
            .erased_at(subject, ErasureGroup::Payout)
            .unwrap()
            .is_some());
        let again = ledger
            .run_shredder(meta(15), retention_end + Duration::days(4), &policy)
            .await
            .unwrap();
        assert!(again.events.is_empty());
        // The payment still decodes, its fingerprint replaced.
        let payment = ledger
            .payment(&PaymentId::parse("pi_2").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            payment.received.payment_fingerprint.unwrap().as_str(),
            Replacement::Fingerprint.value()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_erasures_record_one_proof_and_racing_writes_are_erased_or_refused() {
        for round in 0..8u128 {
            let (ledger, _vault) = world().await;
            let ledger = Arc::new(ledger);
            let policy = RetentionPolicy::default();
            let writer = Arc::clone(&ledger);
            let write = tokio::spawn(async move {
                writer.account_command(meta(100 + round), &correct(2)).await
            });
            let erasers: Vec<_> = [200u128, 300]
                .into_iter()
                .map(|n| {
                    let eraser = Arc::clone(&ledger);
                    tokio::spawn(async move {
                        eraser
                            .erase_subject(meta(n), id(2), Uuid::from_u128(n), at(5), &policy)
                            .await
                    })
                })
                .collect();
            let mut proofs = 0;
            for eraser in erasers {
                proofs += eraser.await.unwrap().unwrap().events.len();
            }
            assert_eq!(proofs, 1, "exactly one SubjectErased");
            if let Err(error) = write.await.unwrap() {
                assert_eq!(error.code(), "subject_erased");
            }
            // Written before or refused: either way nothing of it reads in clear.
            let account = ledger.account(id(2)).await.unwrap().unwrap();
            assert_eq!(account.personal_data.name(), Replacement::Name.value());
            let proofs_in_log = ledger
                .privacy_log()
                .await
                .unwrap()
                .events
                .iter()
                .filter(|event| matches!(event, PrivacyEvent::SubjectErased(_)))
                .count();
            assert_eq!(proofs_in_log, 1);
        }
    }
}
