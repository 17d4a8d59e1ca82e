//! The auditor's verify: read the whole log through the store contract, check its order and
//! hash chain, rebuild every projection from zero in scratch state (the trial balance is
//! checked after every event as it goes), compare with the persisted checkpoints, and sum
//! up. The first thing wrong stops the check and is returned, naming where it is.
//!
//! The file backend's own verify (per-record checksums, torn tails) runs before this; this
//! part is the same for every backend.

use std::collections::BTreeMap;
use std::time::Instant;

use ledger::store::{Digest, EventStore, Position, StoreError};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::chain::{ChainChecker, ChainFault};
use crate::checkpoint::{CheckpointDir, CheckpointFile, StateComparison};
use crate::projection::{Projection, ProjectionError};
use crate::report::money_text;
use crate::runner::{read_batch, Progress};
use crate::views::commissions::PayoutStatus;
use crate::views::LedgerViews;

/// Money totals of the whole log in one currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CurrencyTotals {
    pub payments: String,
    pub refunds: String,
    pub commissions_earned: String,
    pub commissions_reversed: String,
    pub payouts_sent: String,
    pub donations: String,
    pub cash: String,
}

/// What a clean verify found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifySummary {
    pub events: u64,
    pub streams: usize,
    pub head_position: Option<Position>,
    /// Hex SHA-256 of the last record (the genesis digest for an empty log).
    pub chain_head: String,
    /// Events after which the trial balance was checked (every event that posted).
    pub trial_balance_checks: u64,
    /// Projections whose checkpoint matched the rebuild at the checkpoint's position.
    pub checkpoints_matched: Vec<String>,
    pub totals: BTreeMap<String, CurrencyTotals>,
}

/// The first thing found wrong.
#[derive(Debug, thiserror::Error)]
pub enum Discrepancy {
    #[error("reading the log failed: {0}")]
    Store(#[from] StoreError),
    #[error("the log's chain is broken: {0}")]
    Chain(#[from] ChainFault),
    #[error("replaying the log failed: {0}")]
    Replay(ProjectionError),
    #[error("checkpoint of {projection} cannot be used: {reason}")]
    CheckpointUnreadable { projection: String, reason: String },
    #[error(
        "checkpoint of {projection} at position {position} differs from the rebuild at that \
         position (first differing byte {offset} of {checkpoint_len} vs {rebuilt_len})"
    )]
    CheckpointMismatch {
        projection: String,
        position: String,
        offset: u64,
        checkpoint_len: u64,
        rebuilt_len: u64,
    },
    #[error("checkpoint of {projection} claims position {position}, which the log does not reach")]
    CheckpointAhead {
        projection: String,
        position: Position,
    },
}

impl Discrepancy {
    /// The stable code of the kind of discrepancy, for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            Discrepancy::Store(_) => "store",
            Discrepancy::Chain(_) => "chain",
            Discrepancy::Replay(_) => "replay",
            Discrepancy::CheckpointUnreadable { .. } => "checkpoint_unreadable",
            Discrepancy::CheckpointMismatch { .. } => "checkpoint_mismatch",
            Discrepancy::CheckpointAhead { .. } => "checkpoint_ahead",
        }
    }
}

/// Verifies `store` (see the module docs), comparing with the checkpoints in
/// `checkpoints` if given. `progress` is called after every batch of pages read.
pub async fn verify_store<S: EventStore>(
    store: &S,
    checkpoints: Option<&CheckpointDir>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<VerifySummary, Discrepancy> {
    let mut views = LedgerViews::new();
    let name = views.name().to_owned();
    // Checked through once now and kept open; its state is compared, read from the file
    // again, when the rebuild reaches its position.
    let checkpoint: Option<CheckpointFile> = match checkpoints {
        Some(dir) => {
            dir.open_checked(&name)
                .map_err(|error| Discrepancy::CheckpointUnreadable {
                    projection: name.clone(),
                    reason: error.to_string(),
                })?
        }
        None => None,
    };
    let mut pending = checkpoint;
    let mut matched = Vec::new();
    if let Some(mut at_start) = pending.take_if(|checkpoint| checkpoint.position().is_none()) {
        compare(&name, "start", &mut at_start, &views)?;
        matched.push(name.clone());
    }
    let mut chain = ChainChecker::new(store.chain_scope());
    let head = store.head().await?;
    let started = Instant::now();
    let mut last: Option<Position> = None;
    let mut batch = Vec::new();
    loop {
        // Several pages at a time: the views fold a batch on two threads.
        read_batch(store, last, &mut batch).await?;
        for event in &batch {
            chain.check(event)?;
        }
        // Apply, split where a checkpoint must be compared.
        let mut rest = batch.as_slice();
        while !rest.is_empty() {
            let split = match pending
                .as_ref()
                .and_then(|checkpoint| checkpoint.position())
            {
                Some(at) => rest
                    .iter()
                    .position(|event| event.position == at)
                    .map_or(rest.len(), |index| index + 1),
                None => rest.len(),
            };
            let (applied, after) = rest.split_at(split);
            views.apply_batch(applied).map_err(Discrepancy::Replay)?;
            let reached = applied
                .last()
                .expect("split leaves at least one event")
                .position;
            if let Some(mut checkpoint) =
                pending.take_if(|checkpoint| checkpoint.position() == Some(reached))
            {
                compare(&name, &reached.to_string(), &mut checkpoint, &views)?;
                matched.push(name.clone());
            }
            rest = after;
        }
        if let Some(event) = batch.last() {
            last = Some(event.position);
        }
        progress(&Progress {
            applied: chain.events(),
            position: last,
            head,
            elapsed: started.elapsed(),
        });
        if batch.is_empty() {
            break;
        }
    }
    if let Some(checkpoint) = pending {
        return Err(Discrepancy::CheckpointAhead {
            projection: name,
            position: checkpoint
                .position()
                .expect("start checkpoints were compared"),
        });
    }
    Ok(VerifySummary {
        events: chain.events(),
        streams: chain.streams(),
        head_position: chain.last_position(),
        chain_head: if chain.events() == 0 {
            Digest::GENESIS.to_hex()
        } else {
            chain.head().to_hex()
        },
        trial_balance_checks: views.journal.entries() as u64,
        checkpoints_matched: matched,
        totals: currency_totals(&views),
    })
}

/// Compares the checkpoint's state with the rebuilt views' state, streaming both (the
/// views are encoded into a comparison with the file, not into memory).
fn compare(
    projection: &str,
    position: &str,
    checkpoint: &mut CheckpointFile,
    rebuilt: &LedgerViews,
) -> Result<(), Discrepancy> {
    let comparison = checkpoint
        .compare_state(|out| rebuilt.encode_state(out))
        .map_err(|error| Discrepancy::CheckpointUnreadable {
            projection: projection.to_owned(),
            reason: error.to_string(),
        })?;
    match comparison {
        StateComparison::Equal => Ok(()),
        StateComparison::Differs {
            offset,
            checkpoint_len,
            other_len,
        } => Err(Discrepancy::CheckpointMismatch {
            projection: projection.to_owned(),
            position: position.to_owned(),
            offset,
            checkpoint_len,
            rebuilt_len: other_len,
        }),
    }
}

fn currency_totals(views: &LedgerViews) -> BTreeMap<String, CurrencyTotals> {
    #[derive(Default)]
    struct Sums {
        payments: Decimal,
        refunds: Decimal,
        earned: Decimal,
        reversed: Decimal,
        sent: Decimal,
        donations: Decimal,
    }
    let mut sums: BTreeMap<ledger::domain::Currency, Sums> = BTreeMap::new();
    let commissions = &views.commissions;
    for payment in commissions.payments() {
        let sum = sums.entry(payment.amount.currency()).or_default();
        sum.payments += payment.amount.amount();
        for refund in payment.refunds() {
            sum.refunds += refund.amount.amount();
        }
    }
    for index in 0..commissions.commission_count() {
        let commission = commissions.commission(index as u32);
        let sum = sums.entry(commission.currency()).or_default();
        sum.earned += commission.amount;
        sum.reversed += commission.reversed();
    }
    for payout in commissions.runs().values().flat_map(|run| run.values()) {
        if payout.status == PayoutStatus::Sent {
            sums.entry(payout.amount.currency()).or_default().sent += payout.amount.amount();
        }
    }
    for donation in commissions.donations().values().flatten() {
        sums.entry(donation.amount.currency())
            .or_default()
            .donations += donation.amount.amount();
    }
    sums.into_iter()
        .map(|(currency, sum)| {
            let cash = views.journal.balance(
                &crate::views::AccountKey::of(ledger::domain::postings::AccountKind::Cash, None),
                currency,
            );
            (
                currency.code().to_owned(),
                CurrencyTotals {
                    payments: money_text(sum.payments, currency),
                    refunds: money_text(sum.refunds, currency),
                    commissions_earned: money_text(sum.earned, currency),
                    commissions_reversed: money_text(sum.reversed, currency),
                    payouts_sent: money_text(sum.sent, currency),
                    donations: money_text(sum.donations, currency),
                    cash: money_text(cash, currency),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ledger::store::memory::MemoryStore;
    use ledger::store::ExpectedRevision;

    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::history::{Generator, HistoryConfig};
    use crate::projection::state_bytes;
    use crate::rng::SplitMix64;
    use crate::runner::{CheckpointPolicy, ProjectionRunner};

    async fn filled_store(seed: u64) -> MemoryStore {
        let store = MemoryStore::new();
        let mut config = HistoryConfig::small(seed);
        config.events = 1_500;
        let mut generator = Generator::new(config);
        let mut ids = SplitMix64::new(seed);
        while let Some(batch) = generator.next_batch() {
            store
                .append(
                    &batch.stream,
                    ExpectedRevision::Any,
                    batch.to_new_events(&mut ids),
                )
                .await
                .expect("append");
        }
        store
    }

    #[tokio::test]
    async fn a_clean_store_verifies_with_its_checkpoint() {
        let store = filled_store(21).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("dir");
        let mut runner = ProjectionRunner::open(
            store.clone(),
            LedgerViews::new(),
            Some(checkpoints.clone()),
            CheckpointPolicy::default(),
        )
        .expect("open");
        runner.catch_up(&mut |_| {}).await.expect("catch up");
        runner.checkpoint().expect("checkpoint");

        let mut reports = 0;
        let summary = verify_store(&store, Some(&checkpoints), &mut |_| reports += 1)
            .await
            .expect("verifies");
        let head = store.head().await.expect("head").expect("not empty");
        assert_eq!(summary.head_position, Some(head));
        assert_eq!(summary.events, head.commit + 1);
        assert!(summary.streams > 100);
        assert_eq!(summary.checkpoints_matched, vec!["ledger-views".to_owned()]);
        assert!(summary.trial_balance_checks > 100);
        assert!(reports >= 1);
        let eur = &summary.totals["EUR"];
        assert_ne!(eur.payments, "0.00");
        let last = store
            .read_all(head, 1)
            .await
            .expect("read")
            .pop()
            .expect("head event");
        assert_eq!(summary.chain_head, last.chain.current.to_hex());
    }

    #[tokio::test]
    async fn a_checkpoint_that_differs_from_the_rebuild_is_named() {
        let store = filled_store(22).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("dir");
        let mut runner = ProjectionRunner::open(
            store.clone(),
            LedgerViews::new(),
            Some(checkpoints.clone()),
            CheckpointPolicy::default(),
        )
        .expect("open");
        runner.catch_up(&mut |_| {}).await.expect("catch up");
        // A checkpoint whose state is one event behind its position: a runner bug.
        let position = runner.position().expect("applied");
        let behind = Position::sequence(position.commit - 1);
        let mut stale = LedgerViews::new();
        let mut from = Position::START;
        loop {
            let page = store
                .read_all(from, ledger::store::PAGE_SIZE_MAX)
                .await
                .expect("read");
            let fresh: Vec<_> = page
                .into_iter()
                .filter(|event| event.position >= from && event.position <= behind)
                .filter(|event| stale.last.is_none_or(|(last, _)| event.position > last))
                .collect();
            let Some(last) = fresh.last().map(|event| event.position) else {
                break;
            };
            for event in &fresh {
                stale.apply(event).expect("apply");
            }
            from = last;
        }
        assert_eq!(stale.last.map(|(last, _)| last), Some(behind));
        checkpoints
            .store(
                "ledger-views",
                &Checkpoint {
                    position: Some(position),
                    state: state_bytes(&stale),
                },
            )
            .expect("store");
        let discrepancy = verify_store(&store, Some(&checkpoints), &mut |_| {})
            .await
            .expect_err("mismatch found");
        assert_eq!(discrepancy.code(), "checkpoint_mismatch");
        assert!(discrepancy.to_string().contains(&position.to_string()));
    }

    /// A log written by the command service, personal fields sealed by the privacy layer,
    /// verifies and builds the views without any key.
    #[tokio::test]
    async fn a_log_written_by_the_service_with_sealed_fields_verifies() {
        use std::sync::Arc;

        use chrono::{DateTime, Utc};
        use ledger::domain::account::OpenAccount;
        use ledger::domain::events::{PaymentKind, PersonalData};
        use ledger::domain::ids::{Fingerprint, PaymentId, RefundId};
        use ledger::domain::payment::{RecordPayment, RefundKind, RefundPayment};
        use ledger::domain::payout::{RunPayouts, SettlePayout, Settlement};
        use ledger::domain::{AccountId, Credits, Money, Period, ReferralCode};
        use ledger::privacy::vault::memory::MemoryVault;
        use ledger::service::{CommandMeta, Ledger, LedgerConfig};

        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        let account = |n: u8| {
            AccountId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02x}")).unwrap()
        };
        let meta = || CommandMeta::new(uuid::Uuid::new_v4());
        let store = MemoryStore::new();
        let ledger = Ledger::new(
            store.clone(),
            LedgerConfig::default(),
            Arc::new(MemoryVault::new().unwrap()),
        );
        for n in 1..=4u8 {
            let referrer = (n > 1).then(|| n - 1);
            let open = OpenAccount {
                account_id: account(n),
                referral_code: ReferralCode::for_account(account(n)),
                referred_with_code: referrer.map(|r| ReferralCode::for_account(account(r))),
                personal_data: PersonalData::parse(
                    "Someone",
                    "someone@example.org",
                    "198.51.100.4",
                )
                .unwrap(),
                email_fingerprint: Fingerprint::parse(&format!("email-{n}")).unwrap(),
                ip_fingerprint: Fingerprint::parse(&format!("ip-{n}")).unwrap(),
                payment_fingerprint: Some(Fingerprint::parse(&format!("card-{n}")).unwrap()),
                opened_at: at("2026-09-01T00:00:00Z"),
            };
            ledger.open_account(meta(), &open).await.unwrap();
        }
        for (n, amount) in ["400.00", "250.00"].into_iter().enumerate() {
            let payment = RecordPayment {
                payment_id: PaymentId::parse(&format!("pi_{n}")).unwrap(),
                account_id: account(4),
                kind: PaymentKind::CreditPack {
                    credits: Credits::new(100).unwrap(),
                },
                amount: Money::parse(amount, "EUR").unwrap(),
                payment_fingerprint: Some(Fingerprint::parse("card-4").unwrap()),
                received_at: at("2026-09-10T00:00:00Z"),
            };
            ledger.record_payment(meta(), &payment).await.unwrap();
        }
        let refund = RefundPayment {
            payment_id: PaymentId::parse("pi_1").unwrap(),
            refund_id: RefundId::parse("re_1").unwrap(),
            kind: RefundKind::Refund,
            amount: Money::parse("50.00", "EUR").unwrap(),
            refunded_at: at("2026-09-20T00:00:00Z"),
        };
        ledger.refund_payment(meta(), &refund).await.unwrap();
        let period = Period::parse("2026-10").unwrap();
        let run = RunPayouts {
            period,
            as_of: at("2026-11-01T00:00:00Z"),
            run_at: at("2026-11-01T00:00:00Z"),
        };
        ledger.run_payouts(meta(), &run).await.unwrap();
        let settle = SettlePayout {
            period,
            affiliate: account(3),
            settlement: Settlement::Failed {
                reason: "the bank refused it".to_owned(),
            },
            settled_at: at("2026-11-02T00:00:00Z"),
        };
        ledger.settle_payout(meta(), &settle).await.unwrap();

        let summary = verify_store(&store, None, &mut |_| {})
            .await
            .expect("verifies");
        assert!(summary.trial_balance_checks >= 8);
        assert_eq!(summary.totals["EUR"].payments, "650.00");
        assert_eq!(summary.totals["EUR"].refunds, "50.00");
        let (views, _) = crate::runner::rebuild_from_store(&store, LedgerViews::new(), &mut |_| {})
            .await
            .expect("rebuild");
        let payout = &views.commissions.run(period).expect("a run")[&account(3)];
        assert_eq!(payout.status, PayoutStatus::Failed);
        let report =
            crate::report::payout_report(&views, period, &crate::report::affiliate_id_as_name)
                .expect("reconciles");
        assert!(report.rows.iter().any(|row| row.status == "failed"));
    }

    #[tokio::test]
    async fn an_empty_store_verifies_to_the_genesis_head() {
        let summary = verify_store(&MemoryStore::new(), None, &mut |_| {})
            .await
            .expect("verifies");
        assert_eq!(summary.events, 0);
        assert_eq!(summary.chain_head, Digest::GENESIS.to_hex());
        assert!(summary.totals.is_empty());
    }
}
