//! The views over generated histories: live equals rebuilt, the books balance at every
//! position, and the views agree with each other and with the generator.

use ledger::domain::postings::AccountKind;
use ledger::domain::AccountId;
use ledger::store::memory::MemoryStore;
use ledger::store::{EventStore, Position};
use rust_decimal::Decimal;

use super::decode::decode;
use super::*;
use crate::checkpoint::CheckpointDir;
use crate::determinism::{live_and_rebuilt, Schedule};
use crate::history::{Generator, HistoryConfig, Recorder};
use crate::journal::AsOf;
use crate::rng::SplitMix64;
use crate::runner::rebuild_from_store;

fn generated(config: HistoryConfig) -> Vec<RecordedEvent> {
    let mut generator = Generator::new(config);
    let mut recorder = Recorder::new(7);
    let mut events = Vec::new();
    while let Some(batch) = generator.next_batch() {
        recorder.record(&batch, &mut events);
    }
    events
}

fn views_of(events: &[RecordedEvent]) -> LedgerViews {
    let mut views = LedgerViews::new();
    for event in events {
        views.apply(event).expect("generated history applies");
    }
    views
}

#[tokio::test]
async fn live_with_restarts_equals_rebuild_on_a_random_history() {
    for seed in [1, 2] {
        let mut generator = Generator::new(HistoryConfig::small(seed));
        let mut ids = SplitMix64::new(seed);
        let mut batches = Vec::new();
        while let Some(batch) = generator.next_batch() {
            batches.push((batch.stream.clone(), batch.to_new_events(&mut ids)));
        }
        assert!(generator.emitted() >= 4_000);
        let dir = tempfile::tempdir().expect("temp dir");
        let outcome = live_and_rebuilt(
            MemoryStore::new(),
            LedgerViews::new(),
            batches,
            CheckpointDir::open(dir.path()).expect("dir"),
            Schedule {
                restart_every: 401,
                checkpoint_every: 997,
            },
        )
        .await
        .expect("both paths run");
        assert!(outcome.restarts >= 5);
        assert_eq!(outcome.live, outcome.rebuilt, "seed {seed}");
    }
}

#[test]
fn every_event_type_occurs_and_the_books_balance_at_every_position() {
    let events = generated(HistoryConfig::small(3));
    let mut seen = std::collections::BTreeSet::new();
    let mut views = LedgerViews::new();
    for event in &events {
        views.apply(event).expect("applies");
        seen.insert(event.event_type.as_str().to_owned());
        // Checked inside `post` already; checked here from the outside as well.
        assert!(
            views.journal.trial_balance().is_balanced(),
            "at {}",
            event.position
        );
    }
    for expected in [
        "AccountOpened",
        "CreditsGranted",
        "CreditsPurchased",
        "CreditsSpent",
        "CreditsExpired",
        "PaymentReceived",
        "PaymentRefunded",
        "PaymentChargedBack",
        "CommissionEarned",
        "CommissionReversed",
        "CommissionPlanPublished",
        "PayoutScheduled",
        "PayoutSent",
        "PayoutFailed",
        "PayoutRunCompleted",
        "CommissionReleased",
        "CommissionForfeited",
        "DonationAllocated",
    ] {
        assert!(seen.contains(expected), "{expected} never generated");
    }
    // As-of queries read the past without changing the present.
    let now = views.journal.balances();
    let middle = Position::sequence(events.len() as u64 / 2);
    let past = views.journal.trial_balance_as_of(AsOf::Position(middle));
    assert!(past.is_balanced());
    assert_ne!(past.rows.len(), 0);
    assert_eq!(views.journal.balances(), now);
    let rebuilt_to_middle = views_of(&events[..=events.len() / 2]);
    assert_eq!(
        rebuilt_to_middle.journal.balances(),
        views.journal.balances_as_of(AsOf::Position(middle)),
        "as-of equals a replay that stops there"
    );
}

#[test]
fn views_agree_with_each_other() {
    let events = generated(HistoryConfig::small(4));
    let views = views_of(&events);
    let eur = Currency::EUR;
    // Commissions payable in the journal equal earned − reversed − paid out per affiliate.
    let at = views.last.expect("events applied").1;
    for ((affiliate, currency), totals) in views.commissions.all_affiliate_totals(at) {
        let payable = -views.journal.balance(
            &AccountKey::of(AccountKind::CommissionsPayable, Some(affiliate)),
            currency,
        );
        let scheduled: Decimal = views
            .commissions
            .runs()
            .values()
            .filter_map(|run| run.get(&affiliate))
            .filter(|payout| payout.status != commissions::PayoutStatus::Failed)
            .map(|payout| payout.amount.amount())
            .sum();
        assert_eq!(
            payable,
            totals.earned - totals.reversed - scheduled,
            "affiliate {affiliate}"
        );
    }
    // The cursor-based payables agree with the full scan, at every month end.
    for period in views.commissions.runs().keys() {
        let at = period.end();
        let scanned = views.commissions.all_affiliate_totals(at);
        let payables = views.commissions.payables_at(at);
        for ((affiliate, currency), totals) in &scanned {
            let payable = payables
                .get(&(*affiliate, *currency))
                .copied()
                .unwrap_or_default();
            assert_eq!(
                payable.payable,
                totals.payable - totals.owed,
                "{affiliate} {period}"
            );
            assert_eq!(payable.held, totals.held, "{affiliate} {period}");
        }
    }
    // Cash equals payments − refunds − sent payouts.
    let received: Decimal = views
        .commissions
        .payments()
        .map(|payment| payment.amount.amount())
        .sum();
    let refunded: Decimal = views
        .commissions
        .payments()
        .flat_map(|payment| payment.refunds())
        .map(|refund| refund.amount.amount())
        .sum();
    let sent: Decimal = views
        .commissions
        .runs()
        .values()
        .flat_map(|run| run.values())
        .filter(|payout| payout.status == commissions::PayoutStatus::Sent)
        .map(|payout| payout.amount.amount())
        .sum();
    assert_eq!(
        views
            .journal
            .balance(&AccountKey::of(AccountKind::Cash, None), eur),
        received - refunded - sent
    );
    // Every payout was matched in full to commissions.
    for run in views.commissions.runs().values() {
        for payout in run.values() {
            if payout.status == commissions::PayoutStatus::Failed {
                continue;
            }
            let matched: Decimal = payout.commissions.iter().map(|(_, part)| *part).sum();
            assert_eq!(matched - payout.settled_owed, payout.amount.amount());
        }
    }
    // Network revenue of all members equals payments − refunds.
    let members: Vec<_> = views
        .network
        .forest()
        .members_in_order()
        .map(|(account, _, _)| account)
        .collect();
    let revenue: Decimal = members
        .iter()
        .filter_map(|account| views.network.own_revenue(account).get(&eur).copied())
        .sum();
    assert_eq!(revenue, received - refunded);
    // Subtree revenue of the roots plus their own covers everyone.
    let roots_total: Decimal = views
        .network
        .forest()
        .members_in_order()
        .filter(|(_, referrer, _)| referrer.is_none())
        .map(|(account, _, _)| {
            views
                .network
                .subtree_revenue(&account)
                .unwrap()
                .get(&eur)
                .copied()
                .unwrap_or_default()
                + views
                    .network
                    .own_revenue(&account)
                    .get(&eur)
                    .copied()
                    .unwrap_or_default()
        })
        .sum();
    assert_eq!(roots_total, revenue);
    // Wallet balances equal issued − spent − expired.
    let totals = views.wallets.totals();
    let balances: u64 = members
        .iter()
        .filter_map(|account| views.wallets.wallet(account))
        .map(|wallet| wallet.balance)
        .sum();
    assert_eq!(balances, totals.issued() - totals.spent - totals.expired);
}

#[tokio::test]
async fn checkpointed_state_restores_to_identical_bytes() {
    let store = MemoryStore::new();
    let mut generator = Generator::new(HistoryConfig::small(5));
    let mut ids = SplitMix64::new(5);
    while let Some(batch) = generator.next_batch() {
        store
            .append(
                &batch.stream,
                ledger::store::ExpectedRevision::Any,
                batch.to_new_events(&mut ids),
            )
            .await
            .expect("append");
    }
    let (views, _) = rebuild_from_store(&store, LedgerViews::new(), &mut |_| {})
        .await
        .expect("rebuild");
    let bytes = crate::projection::state_bytes(&views);
    assert!(bytes.starts_with(super::STATE_MAGIC));
    let mut restored = LedgerViews::new();
    restored
        .decode_state(&mut bytes.as_slice())
        .expect("decode");
    assert_eq!(crate::projection::state_bytes(&restored), bytes);
    assert_eq!(restored.journal.balances(), views.journal.balances());
    assert_eq!(
        restored.commissions.commission_count(),
        views.commissions.commission_count()
    );
    let period = *views.commissions.runs().keys().next_back().expect("a run");
    assert_eq!(
        restored.commissions.payables_at(period.end()),
        views.commissions.payables_at(period.end())
    );

    // The binary state is much smaller than the same state as JSON, the earlier format.
    let json = serde_json::to_vec(&views.to_state()).expect("json");
    assert!(
        bytes.len() * 2 < json.len(),
        "binary {} bytes, JSON {} bytes",
        bytes.len(),
        json.len()
    );
    // A JSON state (an earlier version's checkpoint) is refused, naming the fix.
    let refused = LedgerViews::new()
        .decode_state(&mut json.as_slice())
        .unwrap_err();
    assert!(refused.to_string().contains("rebuild"), "{refused}");
    // So is a truncated or extended one.
    assert!(LedgerViews::new()
        .decode_state(&mut &bytes[..bytes.len() - 1])
        .is_err());
    let mut extended = bytes.clone();
    extended.push(0);
    assert!(LedgerViews::new()
        .decode_state(&mut extended.as_slice())
        .is_err());
}

/// The state as checkpoints wrote it before they were streamed: an owned copy of the
/// views, encoded.
fn copied_state_bytes(views: &LedgerViews) -> Vec<u8> {
    let mut out = STATE_MAGIC.to_vec();
    rmp_serde::encode::write(&mut out, &views.to_state()).expect("the copy encodes");
    out
}

/// The checkpoint state written straight from the views equals the encoding of the owned
/// copy (`to_state`) byte for byte: empty, at points along a history with refunds,
/// chargebacks, reviews, payouts and donations, and with restrictions and payers outside
/// the forest (which the generator does not produce) added.
#[test]
fn streamed_state_equals_the_copied_state_byte_for_byte() {
    let events = generated(HistoryConfig::small(8));
    for kind in [
        "PaymentRefunded",
        "PaymentChargedBack",
        "CommissionReversed",
        "CommissionReleased",
        "CommissionForfeited",
        "PayoutSent",
        "PayoutRunCompleted",
        "DonationAllocated",
        "CreditsExpired",
    ] {
        assert!(
            events.iter().any(|event| event.event_type.as_str() == kind),
            "the history has no {kind}"
        );
    }
    let mut views = LedgerViews::new();
    assert_eq!(
        crate::projection::state_bytes(&views),
        copied_state_bytes(&views)
    );
    let compare_every = events.len() / 7 + 1;
    for (index, event) in events.iter().enumerate() {
        views.apply(event).expect("generated history applies");
        if index % compare_every == 0 || index + 1 == events.len() {
            assert_eq!(
                crate::projection::state_bytes(&views),
                copied_state_bytes(&views),
                "after event {index}"
            );
        }
    }

    let before = crate::projection::state_bytes(&views);
    let members: Vec<AccountId> = views
        .network
        .forest()
        .members_in_order()
        .map(|(account, _, _)| account)
        .take(3)
        .collect();
    for account in &members {
        views.network.set_restricted(*account, true);
    }
    views.network.set_restricted(members[0], false);
    let mut rng = SplitMix64::new(8);
    let at = views.last.expect("events applied").1;
    for cents in [1_234, -234, 99_999] {
        let orphan = AccountId::new(rng.uuid()).expect("a random id");
        views
            .network
            .revenue(orphan, Currency::EUR, Decimal::new(cents, 2), at);
        views
            .network
            .revenue(orphan, Currency::USD, Decimal::new(cents, 2), at);
    }
    let after = crate::projection::state_bytes(&views);
    assert_ne!(after, before, "restrictions and orphans are in the state");
    assert_eq!(after, copied_state_bytes(&views));
    let mut restored = LedgerViews::new();
    restored
        .decode_state(&mut after.as_slice())
        .expect("decode");
    assert_eq!(crate::projection::state_bytes(&restored), after);
}

/// A checkpoint of the views goes to its file and back without a copy in memory, and
/// one whose state was altered on disk is refused.
#[test]
fn views_checkpoint_streams_to_a_file_and_back() {
    let events = generated(HistoryConfig::small(9));
    let views = views_of(&events);
    let bytes = crate::projection::state_bytes(&views);
    let dir = tempfile::tempdir().expect("temp dir");
    let checkpoints = CheckpointDir::open(dir.path()).expect("dir");
    let position = views.last.map(|(position, _)| position);
    checkpoints
        .store_projection(&views, position)
        .expect("store");
    // The same file as the in-memory encoder writes.
    let file = checkpoints.file_of("ledger-views").expect("file");
    let on_disk = std::fs::read(&file).expect("read");
    assert_eq!(
        on_disk,
        crate::checkpoint::encode(&crate::checkpoint::Checkpoint {
            position,
            state: bytes.clone(),
        })
        .expect("encode")
    );
    let mut restored = LedgerViews::new();
    let loaded = checkpoints
        .load_with("ledger-views", |state| restored.decode_state(state))
        .expect("load");
    assert_eq!(loaded, Some((position, ())));
    assert_eq!(crate::projection::state_bytes(&restored), bytes);

    // A flipped byte inside the state: named as a damaged file, whether or not the state
    // still decodes.
    for offset in [35 + 9, 35 + bytes.len() / 2, 35 + bytes.len() - 1] {
        let mut damaged = on_disk.clone();
        damaged[offset] ^= 0x20;
        std::fs::write(&file, &damaged).expect("write");
        let mut decoded = LedgerViews::new();
        let refused = checkpoints
            .load_with("ledger-views", |state| decoded.decode_state(state))
            .expect_err("refused");
        assert!(
            refused.to_string().contains("checksum mismatch"),
            "offset {offset}: {refused}"
        );
    }
}

#[test]
fn an_unbalanced_or_contradictory_event_stops_the_replay_naming_its_position() {
    let mut events = generated(HistoryConfig::small(6));
    let payout = events
        .iter()
        .position(|event| event.event_type.as_str() == "PayoutSent")
        .expect("a payout was sent");
    // Replay the same PayoutSent twice: the second contradicts the first.
    let mut duplicate = events[payout].clone();
    duplicate.position = Position::sequence(events.len() as u64);
    events.push(duplicate);
    let mut views = LedgerViews::new();
    let mut failure = None;
    for event in &events {
        if let Err(error) = views.apply(event) {
            failure = Some(error);
            break;
        }
    }
    let failure = failure.expect("the replay stops");
    assert!(
        failure
            .to_string()
            .contains(&format!("position {}", events.len() - 1)),
        "{failure}"
    );
}

#[test]
fn batches_folded_on_two_sides_equal_one_by_one() {
    for (seed, batch_events) in [(8, 3000), (9, 2048), (10, 5000), (11, 100_000)] {
        let events = generated(HistoryConfig::small(seed));
        let one_by_one = views_of(&events);
        let mut batched = LedgerViews::new();
        for batch in events.chunks(batch_events) {
            batched.apply_batch(batch).expect("applies");
        }
        assert_eq!(batched.events, one_by_one.events);
        assert_eq!(batched.ignored, one_by_one.ignored);
        assert_eq!(
            crate::projection::state_bytes(&batched),
            crate::projection::state_bytes(&one_by_one),
            "seed {seed}, batches of {batch_events}"
        );
    }
}

/// Whether a decoded domain event belongs to the network side (network and wallets):
/// the oracle the routing by event type is checked against.
fn feeds_network(domain: &DomainEvent) -> bool {
    matches!(
        domain,
        DomainEvent::CreditsGranted(_)
            | DomainEvent::CreditsPurchased(_)
            | DomainEvent::CreditsSpent(_)
            | DomainEvent::CreditsExpired(_)
            | DomainEvent::CreditsReserved(_)
            | DomainEvent::ReservationCaptured(_)
            | DomainEvent::ReservationVoided(_)
            | DomainEvent::ReservationExpired(_)
            | DomainEvent::ProcessingRestricted(_)
            | DomainEvent::ProcessingRestrictionLifted(_)
    )
}

#[test]
fn every_event_is_routed_to_the_side_that_folds_it() {
    let events = generated(HistoryConfig::small(12));
    let mut routes = std::collections::BTreeMap::new();
    for event in &events {
        let expected = match decode(event).expect("decodes") {
            None => Route::Ignored,
            Some(Fact::Opened(_)) => Route::Network,
            Some(Fact::Domain(domain)) if feeds_network(&domain) => Route::Network,
            Some(Fact::Domain(_)) => Route::Money,
        };
        let routed = decode::route(event.event_type.as_str());
        assert_eq!(routed, expected, "{}", event.event_type.as_str());
        routes.insert(event.event_type.as_str().to_owned(), routed);
    }
    assert!(routes.values().any(|route| *route == Route::Network));
    assert!(routes.values().any(|route| *route == Route::Money));
    assert_eq!(decode::route("SubjectErased"), Route::Ignored);
    assert_eq!(decode::route("ProcessingRestricted"), Route::Network);
    assert_eq!(decode::route("SomeoneElsesEvent"), Route::Ignored);
}

/// `events` with a copy of the event at `from` placed at `at` (a contradiction: the same
/// grant given twice, the same payment received twice), positions renumbered.
fn with_copy(events: &[RecordedEvent], from: usize, at: usize) -> Vec<RecordedEvent> {
    let mut broken = events.to_vec();
    broken.insert(at, events[from].clone());
    for (index, event) in broken.iter_mut().enumerate() {
        event.position = Position::sequence(index as u64);
    }
    broken
}

fn first_error(views: &mut LedgerViews, events: &[RecordedEvent], batched: bool) -> String {
    let outcome = if batched {
        views.apply_batch(events)
    } else {
        events.iter().try_for_each(|event| views.apply(event))
    };
    outcome.expect_err("the broken history stops").to_string()
}

#[test]
fn a_batch_reports_the_first_error_of_either_side() {
    let events = generated(HistoryConfig::small(13));
    let first = |event_type: &str| {
        events
            .iter()
            .position(|event| event.event_type.as_str() == event_type)
            .expect("generated")
    };
    let grant = first("CreditsGranted");
    let payment = first("PaymentReceived");
    let late = events.len() - 10;
    // Network side first (a grant given twice), then money (a payment received twice),
    // and the other way round.
    for (early_copy, late_copy) in [(grant, payment), (payment, grant)] {
        let once = with_copy(&events, early_copy, late - 1000);
        let broken = with_copy(
            &once,
            late_copy + usize::from(late_copy > late - 1000),
            late,
        );
        let expected = first_error(&mut LedgerViews::new(), &broken, false);
        assert!(
            expected.contains(&format!("position {}", late - 1000)),
            "{expected}"
        );
        let batched = first_error(&mut LedgerViews::new(), &broken, true);
        assert_eq!(batched, expected);
    }
}

#[test]
fn a_restriction_of_processing_takes_the_subject_out_of_analytics_only() {
    use ledger::domain::events::{ProcessingRestricted, ProcessingRestrictionLifted};
    use ledger::privacy::SubjectId;

    let config = HistoryConfig::small(15);
    let mut generator = Generator::new(config);
    let mut recorder = Recorder::new(15);
    let mut events = Vec::new();
    let mut last = None;
    while let Some(batch) = generator.next_batch() {
        last = Some(batch.at);
        recorder.record(&batch, &mut events);
    }
    let mut views = views_of(&events);
    let total = |views: &LedgerViews| -> Decimal {
        views
            .network
            .analytics()
            .values()
            .filter_map(|period| period.net_revenue.get(&Currency::EUR))
            .sum()
    };
    let before = total(&views);
    let cash = views
        .journal
        .balance(&AccountKey::of(AccountKind::Cash, None), Currency::EUR);
    // The member who paid the most.
    let payer = views
        .network
        .forest()
        .members_in_order()
        .map(|(account, _, _)| account)
        .max_by_key(|account| {
            views
                .network
                .own_revenue(account)
                .get(&Currency::EUR)
                .copied()
        })
        .expect("members");
    let paid = views.network.own_revenue(&payer)[&Currency::EUR];
    assert!(paid > Decimal::ZERO);
    let at = last.expect("events");
    let subject = SubjectId::new(payer.as_uuid());
    let restrict = crate::history::Batch {
        stream: ledger::store::StreamName::parse("privacy-test").unwrap(),
        events: vec![DomainEvent::ProcessingRestricted(ProcessingRestricted {
            request_id: SplitMix64::new(1).uuid(),
            subject,
            restricted_at: at,
        })],
        at,
    };
    let mut more = Vec::new();
    recorder.record(&restrict, &mut more);
    views.apply_batch(&more).expect("applies");
    assert_eq!(total(&views), before - paid);
    assert!(views.network.is_restricted(&payer));
    assert_eq!(
        views
            .journal
            .balance(&AccountKey::of(AccountKind::Cash, None), Currency::EUR),
        cash,
        "the books keep everything"
    );
    let lift = crate::history::Batch {
        events: vec![DomainEvent::ProcessingRestrictionLifted(
            ProcessingRestrictionLifted {
                request_id: SplitMix64::new(2).uuid(),
                subject,
                lifted_at: at,
            },
        )],
        ..restrict
    };
    let mut more = Vec::new();
    recorder.record(&lift, &mut more);
    views.apply_batch(&more).expect("applies");
    assert_eq!(total(&views), before);
}

#[test]
fn on_a_tie_the_journal_error_comes_first_as_one_by_one() {
    let events = generated(HistoryConfig::small(14));
    let payment = events
        .iter()
        .position(|event| event.event_type.as_str() == "PaymentReceived")
        .expect("generated");
    // The same payment again at its own position: out of order for the journal, a
    // duplicate for the commissions.
    let mut broken = events.clone();
    broken.push(events[payment].clone());
    assert!(broken.len() >= PARALLEL_EVENTS_MIN);
    let expected = first_error(&mut LedgerViews::new(), &broken, false);
    assert!(
        expected.contains("is not after the last posted position"),
        "{expected}"
    );
    let batched = first_error(&mut LedgerViews::new(), &broken, true);
    assert_eq!(batched, expected);
}

/// A workload of credit reservations decided by the domain's own deciders, after a
/// generated history: every reservation is captured, voided, expired by a sweep or
/// expired lazily by a later command, with grants expiring under some of them.
fn reservation_history(
    seed: u64,
) -> (
    Vec<RecordedEvent>,
    BTreeMap<AccountId, ledger::domain::account::Wallet>,
) {
    use chrono::Duration;
    use ledger::domain::account::{self, AccountCommand, AccountState, ForAccount, OpenAccount};
    use ledger::domain::events::{GrantReason, PersonalData};
    use ledger::domain::ids::{Fingerprint, GrantId, PersonaId, ReservationId, SpendId};
    use ledger::domain::{streams, Credits, ReferralCode};

    let mut generator = Generator::new(HistoryConfig::small(seed));
    let mut recorder = Recorder::new(seed);
    let mut events = Vec::new();
    let mut now = chrono::DateTime::UNIX_EPOCH;
    while let Some(batch) = generator.next_batch() {
        now = now.max(batch.at);
        recorder.record(&batch, &mut events);
    }
    let mut rng = SplitMix64::new(seed);
    let mut states: Vec<(AccountId, AccountState)> = Vec::new();
    let mut reservations: Vec<(usize, ReservationId)> = Vec::new();
    let mut record = |index: usize,
                      states: &mut Vec<(AccountId, AccountState)>,
                      decided: Vec<DomainEvent>,
                      at: chrono::DateTime<chrono::Utc>,
                      events: &mut Vec<RecordedEvent>| {
        let (id, state) = &mut states[index];
        for event in &decided {
            *state = account::evolve(std::mem::take(state), event);
        }
        recorder.record(
            &crate::history::Batch {
                stream: streams::account(*id),
                events: decided,
                at,
            },
            events,
        );
    };
    for n in 0..24u8 {
        let id = AccountId::new(rng.uuid()).unwrap();
        let open = OpenAccount {
            account_id: id,
            referral_code: ReferralCode::for_account(id),
            referred_with_code: None,
            personal_data: PersonalData::parse("R", "r@example.org", "192.0.2.1").unwrap(),
            email_fingerprint: Fingerprint::parse(&format!("e-{n}")).unwrap(),
            ip_fingerprint: Fingerprint::parse(&format!("i-{n}")).unwrap(),
            payment_fingerprint: None,
            opened_at: now,
        };
        let signup =
            account::decide_open(&AccountState::default(), None, &open, &Default::default())
                .unwrap();
        states.push((id, AccountState::default()));
        let index = states.len() - 1;
        record(index, &mut states, signup.account_events, now, &mut events);
    }
    for step in 0..4000u64 {
        now += Duration::seconds(1 + rng.below(40) as i64);
        let index = rng.below(states.len() as u64) as usize;
        let account_id = states[index].0;
        let command = match rng.below(10) {
            0 | 1 => AccountCommand::GrantCredits {
                grant_id: GrantId::parse(&format!("rg-{step}")).unwrap(),
                credits: Credits::new(1 + rng.below(50)).unwrap(),
                reason: GrantReason::Promotion,
                expires_at: rng
                    .chance(1, 2)
                    .then(|| now + Duration::seconds(1 + rng.below(900) as i64)),
                granted_at: now,
            },
            2..=4 => {
                let reservation_id = ReservationId::parse(&format!("rr-{step}")).unwrap();
                reservations.push((index, reservation_id.clone()));
                AccountCommand::ReserveCredits {
                    reservation_id,
                    credits: Credits::new(1 + rng.below(20)).unwrap(),
                    persona: rng.chance(1, 2).then(|| PersonaId::parse("diver").unwrap()),
                    expires_at: now + Duration::seconds(1 + rng.below(600) as i64),
                    reserved_at: now,
                }
            }
            5 | 6 if !reservations.is_empty() => {
                let (owner, reservation_id) =
                    reservations[rng.below(reservations.len() as u64) as usize].clone();
                let command = if rng.chance(2, 3) {
                    AccountCommand::CaptureReservation {
                        reservation_id,
                        credits: Credits::new(1 + rng.below(20)).unwrap(),
                        captured_at: now,
                    }
                } else {
                    AccountCommand::VoidReservation {
                        reservation_id,
                        voided_at: now,
                    }
                };
                let decided = account::decide(
                    &states[owner].1,
                    &ForAccount {
                        account_id: states[owner].0,
                        command,
                    },
                );
                if let Ok(decided) = decided {
                    record(owner, &mut states, decided, now, &mut events);
                }
                continue;
            }
            7 => AccountCommand::SpendCredits {
                spend_id: SpendId::parse(&format!("rs-{step}")).unwrap(),
                persona: PersonaId::parse("diver").unwrap(),
                credits: Credits::new(1 + rng.below(10)).unwrap(),
                spent_at: now,
            },
            8 => AccountCommand::ExpireReservations { expired_at: now },
            _ => AccountCommand::ExpireCredits { expired_at: now },
        };
        let decided = account::decide(
            &states[index].1,
            &ForAccount {
                account_id,
                command,
            },
        );
        if let Ok(decided) = decided {
            record(index, &mut states, decided, now, &mut events);
        }
    }
    let wallets = states
        .into_iter()
        .map(|(id, state)| (id, state.account.unwrap().wallet))
        .collect();
    (events, wallets)
}

#[test]
fn reservations_fold_alike_one_by_one_in_batches_and_from_a_checkpoint() {
    let (events, wallets) = reservation_history(21);
    for kind in [
        "CreditsReserved",
        "ReservationCaptured",
        "ReservationVoided",
        "ReservationExpired",
        "CreditsExpired",
    ] {
        assert!(
            events.iter().any(|event| event.event_type.as_str() == kind),
            "the history has no {kind}"
        );
    }
    let one_by_one = views_of(&events);
    let mut batched = LedgerViews::new();
    batched.apply_batch(&events).expect("applies");
    let bytes = crate::projection::state_bytes(&one_by_one);
    assert_eq!(crate::projection::state_bytes(&batched), bytes);
    let mut restored = LedgerViews::new();
    restored
        .decode_state(&mut bytes.as_slice())
        .expect("the checkpoint state reads back");
    assert_eq!(crate::projection::state_bytes(&restored), bytes);
    // The view agrees with the domain's wallets, as recorded.
    let mut spent = 0;
    for event in &events {
        match decode(event).expect("decodes") {
            Some(Fact::Domain(DomainEvent::CreditsSpent(e))) => spent += e.credits.units(),
            Some(Fact::Domain(DomainEvent::ReservationCaptured(e))) => spent += e.credits.units(),
            _ => {}
        }
    }
    assert_eq!(one_by_one.wallets.totals().spent, spent);
    let mut held = 0;
    for (account, wallet) in &wallets {
        let view = one_by_one.wallets.wallet(account).expect("a wallet");
        assert_eq!(view.balance, wallet.remaining_total().units());
        let recorded: u64 = wallet
            .recorded_open_reservations()
            .map(|reservation| reservation.reserved.credits.units())
            .sum();
        assert_eq!(one_by_one.wallets.reserved(account), recorded);
        held += recorded;
    }
    assert!(held > 0, "some reservations are still open at the end");
}
