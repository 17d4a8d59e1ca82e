//! The privacy officer's operations, shared by the HTTP endpoints (`/v1/privacy/*`) and
//! the offline `erase` command: carrying out an erasure with its proof, restricting
//! processing, and reading a subject's privacy stream.
//!
//! Each operation is safe to run again with the same request id: it first looks in the
//! subject's privacy stream for what an earlier run recorded (a crash can fall between the
//! events and the idempotency record) and reuses its time instead of deciding anew.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use ledger::domain::{streams, AccountId};
use ledger::privacy::events::{
    privacy_stream, HoldReason, LegalHoldLifted, LegalHoldPlaced, ProcessingRestricted,
    ProcessingRestrictionLifted, SubjectErased,
};
use ledger::privacy::retention::RetentionPolicy;
use ledger::privacy::{PrivacyEvent, SubjectId};
use ledger::service::{CommandMeta, Ledger};
use ledger::store::{Direction, EventStore, RecordedEvent, StreamFrom, StreamState, PAGE_SIZE_MAX};

use crate::http::error::ApiError;
use crate::http::events::rfc3339;
use crate::store::MeteredStore;

/// Most events read from one subject's privacy stream (requests, holds, restrictions).
pub const PRIVACY_STREAM_EVENTS_MAX: usize = 10_000;

/// The answer to an erasure: the request, and the proof that the keys are gone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureResponse {
    pub request_id: Uuid,
    pub account_id: Uuid,
    /// When the request was first recorded (RFC 3339); the deadline runs from here.
    pub requested_at: String,
    /// The deadline of the request (30 days after it).
    pub due_at: String,
    pub proof: ErasureProof,
}

/// The `SubjectErased` event as recorded: which key groups were destroyed, which are
/// kept and why, and where the event stands in the tamper-evident chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErasureProof {
    /// The request that carried the erasure out (an earlier one, if the subject had been
    /// erased before this request).
    pub request_id: Uuid,
    pub erased_at: String,
    /// Key groups destroyed: `profile` (name, email, IP), `payout` (payment data).
    pub groups_shredded: Vec<String>,
    pub groups_retained: Vec<RetainedGroupView>,
    pub event_id: Uuid,
    pub stream: String,
    pub revision: u64,
    /// The global position (commit) of the proof event.
    pub position: u64,
    /// SHA-256 chain digest of the proof event, hex: check it with `GET /v1/verify`.
    pub chain_current: String,
}

/// A key group kept past the erasure request, on a legal basis.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RetainedGroupView {
    pub group: String,
    /// `payment_record_retention` or `legal_hold`.
    pub legal_basis: String,
    /// When the retention ends; absent while it depends on a legal hold.
    pub retain_until: Option<String>,
}

/// The answer to a restriction of processing or its lifting.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RestrictionResponse {
    pub request_id: Uuid,
    pub account_id: Uuid,
    /// Whether processing is restricted after this request.
    pub restricted: bool,
    /// When the restriction (or its lifting) was recorded.
    pub at: String,
}

/// Every event of `subject`'s privacy stream, oldest first.
pub async fn privacy_events(
    store: &dyn EventStore,
    subject: AccountId,
) -> Result<Vec<(RecordedEvent, PrivacyEvent)>, ApiError> {
    let stream = privacy_stream(SubjectId::from(subject));
    let mut events = Vec::new();
    let mut from = 0;
    loop {
        let page = store
            .read_stream(
                &stream,
                StreamFrom::Revision(from),
                Direction::Forward,
                PAGE_SIZE_MAX,
            )
            .await?;
        for recorded in &page {
            let decoded = PrivacyEvent::from_payload(
                recorded.event_type.as_str(),
                recorded.schema_version,
                &recorded.payload,
            )?
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "{} holds a {} event",
                    stream.as_str(),
                    recorded.event_type.as_str()
                ))
            })?;
            events.push((recorded.clone(), decoded));
        }
        if events.len() > PRIVACY_STREAM_EVENTS_MAX {
            return Err(ApiError::internal(format!(
                "{} holds more than {PRIVACY_STREAM_EVENTS_MAX} events",
                stream.as_str()
            )));
        }
        match page.last() {
            Some(last) if page.len() == PAGE_SIZE_MAX => from = last.revision + 1,
            _ => return Ok(events),
        }
    }
}

/// Refuses an account the log has never seen (its stream does not exist).
pub async fn require_account(store: &dyn EventStore, account: AccountId) -> Result<(), ApiError> {
    match store.stream_state(&streams::account(account)).await? {
        StreamState::NoStream => Err(ApiError::Rejected {
            status: axum::http::StatusCode::NOT_FOUND,
            code: "account_not_found",
            detail: format!("account_id: account {account} does not exist"),
        }),
        StreamState::At(_) => Ok(()),
    }
}

/// A second command id derived from a command's own, for its second append.
fn sub_command(command_id: Uuid, part: &str) -> CommandMeta {
    CommandMeta {
        command_id: Uuid::new_v5(&command_id, part.as_bytes()),
        correlation_id: Some(command_id),
    }
}

/// Records erasure request `request_id` of `account` (once), carries it out (destroying
/// the keys the retention policy allows) and returns the proof. Erasing an erased subject
/// records the request and returns the first proof.
pub async fn erase(
    ledger: &Ledger<MeteredStore>,
    command_id: Uuid,
    account: AccountId,
    request_id: Uuid,
    now: DateTime<Utc>,
    policy: &RetentionPolicy,
) -> Result<ErasureResponse, ApiError> {
    let store = ledger.store();
    require_account(store, account).await?;
    let before = privacy_events(store, account).await?;
    let requested_at = match find_request(&before, request_id) {
        Some(at) => at,
        None => {
            ledger
                .request_erasure(sub_command(command_id, "request"), account, request_id, now)
                .await?;
            now
        }
    };
    ledger
        .erase_subject(
            sub_command(command_id, "erase"),
            account,
            request_id,
            now,
            policy,
        )
        .await?;
    let after = privacy_events(store, account).await?;
    let (recorded, erased) = after
        .iter()
        .find_map(|(recorded, event)| match event {
            PrivacyEvent::SubjectErased(erased) => Some((recorded, erased)),
            _ => None,
        })
        .ok_or_else(|| ApiError::internal("an erasure left no SubjectErased proof"))?;
    Ok(ErasureResponse {
        request_id,
        account_id: account.as_uuid(),
        requested_at: rfc3339(requested_at),
        due_at: rfc3339(policy.erasure_due(requested_at)),
        proof: proof_view(recorded, erased),
    })
}

fn find_request(
    events: &[(RecordedEvent, PrivacyEvent)],
    request_id: Uuid,
) -> Option<DateTime<Utc>> {
    events.iter().find_map(|(_, event)| match event {
        PrivacyEvent::ErasureRequested(request) if request.request_id == request_id => {
            Some(request.requested_at)
        }
        _ => None,
    })
}

fn proof_view(recorded: &RecordedEvent, erased: &SubjectErased) -> ErasureProof {
    ErasureProof {
        request_id: erased.request_id,
        erased_at: rfc3339(erased.erased_at),
        groups_shredded: erased
            .groups_shredded
            .iter()
            .map(|group| group.as_str().to_owned())
            .collect(),
        groups_retained: erased
            .groups_retained
            .iter()
            .map(|retained| RetainedGroupView {
                group: retained.group.as_str().to_owned(),
                legal_basis: serde_json::to_value(retained.legal_basis)
                    .ok()
                    .and_then(|value| value.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                retain_until: retained.retain_until.map(rfc3339),
            })
            .collect(),
        event_id: recorded.id,
        stream: recorded.stream.as_str().to_owned(),
        revision: recorded.revision,
        position: recorded.position.commit,
        chain_current: recorded.chain.current.to_hex(),
    }
}

/// Restricts processing of `account`'s data (or lifts the restriction) for request
/// `request_id`. A request recorded before is answered as recorded (the flag is false: not
/// fresh); the same request id used for the opposite action is an idempotency conflict.
pub async fn restrict(
    ledger: &Ledger<MeteredStore>,
    command_id: Uuid,
    account: AccountId,
    request_id: Uuid,
    restricted: bool,
    now: DateTime<Utc>,
) -> Result<(RestrictionResponse, bool), ApiError> {
    let store = ledger.store();
    require_account(store, account).await?;
    let subject = SubjectId::from(account);
    for (_, event) in privacy_events(store, account).await? {
        let earlier = match &event {
            PrivacyEvent::ProcessingRestricted(event) if event.request_id == request_id => {
                Some((true, event.restricted_at))
            }
            PrivacyEvent::ProcessingRestrictionLifted(event) if event.request_id == request_id => {
                Some((false, event.lifted_at))
            }
            _ => None,
        };
        if let Some((was_restricted, at)) = earlier {
            if was_restricted != restricted {
                return Err(ApiError::IdempotencyConflict {
                    key: request_id.to_string(),
                });
            }
            let response = RestrictionResponse {
                request_id,
                account_id: account.as_uuid(),
                restricted,
                at: rfc3339(at),
            };
            return Ok((response, false));
        }
    }
    let event = if restricted {
        PrivacyEvent::ProcessingRestricted(ProcessingRestricted {
            request_id,
            subject,
            restricted_at: now,
        })
    } else {
        PrivacyEvent::ProcessingRestrictionLifted(ProcessingRestrictionLifted {
            request_id,
            subject,
            lifted_at: now,
        })
    };
    ledger
        .record_privacy_event(CommandMeta::new(command_id), event)
        .await?;
    let response = RestrictionResponse {
        request_id,
        account_id: account.as_uuid(),
        restricted,
        at: rfc3339(now),
    };
    Ok((response, true))
}

/// `refledger erase`: the same erasure as `POST /v1/privacy/erasures`, offline on a data
/// directory. The command id is derived from the request id as the endpoint derives it,
/// so the two never record the same request twice.
pub async fn run_erase(
    args: &crate::cli::EraseArgs,
) -> Result<ErasureResponse, Box<dyn std::error::Error>> {
    let vault = crate::vault::open_vault(
        crate::vault::VaultFlags {
            data: &args.data,
            master_key_file: args.master_key_file.as_deref(),
            key_vault: args.key_vault.as_deref(),
            key_vault_kek_file: args.key_vault_kek_file.as_deref(),
            key_vault_ca_file: args.key_vault_ca_file.as_deref(),
        },
        false,
    )?;
    let opened = crate::store::open(&args.data).await?;
    let metered = crate::store::metered(
        opened.store.clone(),
        std::sync::Arc::new(crate::http::metrics::Metrics::default()),
    );
    let ledger = Ledger::new(metered, ledger::service::LedgerConfig::default(), vault);
    let key =
        crate::idempotency::CommandKey::new("erasure", &args.request_id.to_string(), "request_id")?;
    let account =
        AccountId::new(args.account).map_err(|error| format!("--account: {}", error.problem))?;
    let erased = erase(
        &ledger,
        key.command_id(),
        account,
        args.request_id,
        Utc::now(),
        &RetentionPolicy::default(),
    )
    .await;
    // Close whatever happened: what was appended must reach the disk.
    let closed = opened.close().await;
    let erased = erased?;
    closed?;
    Ok(erased)
}

/// The answer to placing or lifting a legal hold.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LegalHoldResponse {
    pub hold_id: Uuid,
    pub account_id: Uuid,
    /// Whether this hold is in force after the request.
    pub in_force: bool,
    /// Why the hold was placed (`litigation`, `regulatory_inquiry`, `tax_audit`,
    /// `law_enforcement_request`).
    #[schema(value_type = String)]
    pub reason: HoldReason,
    /// When the hold was placed, or lifted (RFC 3339).
    pub at: String,
    /// Groups of retained personal data destroyed because lifting this hold let them go
    /// (their retention had ended while the hold kept them); 0 when placing.
    pub shredded_groups: usize,
}

/// Places legal hold `hold_id` on `account` (`lift` false) or lifts it (`lift` true). While
/// any hold stands, no retained personal data of the subject is destroyed, even after an
/// erasure request; lifting the last hold runs the shredder at once, so what was kept
/// only for the hold goes now. A repeat finds the earlier event and answers with its time.
/// Returns the response and whether it recorded anything now.
pub async fn legal_hold(
    ledger: &Ledger<MeteredStore>,
    command_id: Uuid,
    account: AccountId,
    hold_id: Uuid,
    placing: Option<HoldReason>,
    now: DateTime<Utc>,
    policy: &RetentionPolicy,
) -> Result<(LegalHoldResponse, bool), ApiError> {
    let store = ledger.store();
    require_account(store, account).await?;
    let subject = SubjectId::from(account);
    let mut placed: Option<(HoldReason, DateTime<Utc>)> = None;
    let mut lifted_at: Option<DateTime<Utc>> = None;
    for (_, event) in privacy_events(store, account).await? {
        match event {
            PrivacyEvent::LegalHoldPlaced(hold) if hold.hold_id == hold_id => {
                placed = Some((hold.reason, hold.placed_at));
            }
            PrivacyEvent::LegalHoldLifted(hold) if hold.hold_id == hold_id => {
                lifted_at = Some(hold.lifted_at);
            }
            _ => {}
        }
    }
    let response = |in_force, reason, at, shredded_groups| LegalHoldResponse {
        hold_id,
        account_id: account.as_uuid(),
        in_force,
        reason,
        at: rfc3339(at),
        shredded_groups,
    };
    match placing {
        Some(reason) => {
            if let Some((earlier, at)) = placed {
                if earlier != reason || lifted_at.is_some() {
                    // A hold id names one hold, placed once: reusing it for another reason,
                    // or after it was lifted, is a different request under the same id.
                    return Err(ApiError::IdempotencyConflict {
                        key: hold_id.to_string(),
                    });
                }
                return Ok((response(true, reason, at, 0), false));
            }
            let event = PrivacyEvent::LegalHoldPlaced(LegalHoldPlaced {
                hold_id,
                subject,
                placed_at: now,
                reason,
            });
            ledger
                .record_privacy_event(CommandMeta::new(command_id), event)
                .await?;
            Ok((response(true, reason, now, 0), true))
        }
        None => {
            let Some((reason, _)) = placed else {
                return Err(ApiError::Rejected {
                    status: axum::http::StatusCode::NOT_FOUND,
                    code: "hold_not_found",
                    detail: format!("hold_id: no hold {hold_id} was placed on account {account}"),
                });
            };
            if let Some(at) = lifted_at {
                return Ok((response(false, reason, at, 0), false));
            }
            let event = PrivacyEvent::LegalHoldLifted(LegalHoldLifted {
                hold_id,
                subject,
                lifted_at: now,
            });
            ledger
                .record_privacy_event(sub_command(command_id, "lift"), event)
                .await?;
            let shredded = ledger
                .run_shredder(sub_command(command_id, "shred"), now, policy)
                .await?;
            Ok((response(false, reason, now, shredded.events.len()), true))
        }
    }
}

/// Runs the retention shredder at `now`: destroys the retained personal data whose time
/// has come (payment data 7 years after the last payment, for erased subjects not under a
/// legal hold) and records each destruction. The command id is derived from the hour, so
/// two instances (or a restart) running it in the same hour append nothing twice.
pub async fn run_shredder(
    ledger: &Ledger<MeteredStore>,
    now: DateTime<Utc>,
    policy: &RetentionPolicy,
) -> Result<usize, ApiError> {
    let hour = now.format("%Y-%m-%dT%H").to_string();
    let command_id = Uuid::new_v5(&SHREDDER_NAMESPACE, hour.as_bytes());
    let outcome = ledger
        .run_shredder(CommandMeta::new(command_id), now, policy)
        .await?;
    Ok(outcome.events.len())
}

/// The namespace of the shredder's hourly command ids.
const SHREDDER_NAMESPACE: Uuid = Uuid::from_u128(0x2f0c_5d1e_8a43_4b6f_9e27_c1d8_0b5a_7e34);
