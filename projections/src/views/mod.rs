//! The domain's read models, fed from one decode per event:
//!
//! - [`network::Network`]: the referral forest, revenue per member, analytics.
//! - [`wallets::Wallets`]: credit balances, open grants, credit totals per period.
//! - [`crate::journal::Journal`]: double-entry balances from the domain's postings table.
//! - [`commissions::Commissions`]: commissions, payouts, donations, plans.
//!
//! [`LedgerViews`] is one [`Projection`] holding them all, so a rebuild reads and decodes
//! the log once.

mod canonical;
pub mod commissions;
pub mod decode;
pub mod network;
pub mod wallets;

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use ledger::domain::events::DomainEvent;
use ledger::domain::{Currency, Period};
use ledger::store::{Position, RecordedEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::journal::{Journal, JournalState, Posting};
use crate::projection::{Projection, ProjectionError};
use commissions::{Commissions, CommissionsState};
use decode::{Fact, Route};
use network::{Network, NetworkState};
use wallets::{Wallets, WalletsState};

pub use postings::{ledger_postings, AccountKey};

mod postings;

/// The start of a checkpointed [`LedgerViews`] state: these 8 bytes, then the
/// [`LedgerViewsState`] as one MessagePack value (<https://msgpack.org>, via `rmp-serde`):
/// a struct is an array of its fields in declaration order (no field names), a map is a
/// map in key order, an enum is a one-entry map from its variant name to its fields (a
/// unit variant just its name), an `Option` nil or the value, integers in their smallest
/// encoding. Decimals, instants, periods and currencies are their text (as in the events),
/// account ids their 16 bytes. Nothing may follow the value. JSON, the earlier format, ran
/// past `CHECKPOINT_STATE_SIZE_MAX` (2 GiB) at a million accounts; this is well under half
/// of it (see `docs/BENCHMARKS.md`). The version in the magic changes with any change to
/// the state types: an older state is refused, naming the fix (rebuild from the log).
pub const STATE_MAGIC: &[u8; 8] = b"LVSTATE3";

/// Batches shorter than this are folded one event at a time on the calling thread.
const PARALLEL_EVENTS_MIN: usize = 2048;
/// Events the money side folds before it hands their revenue changes over.
const SIDE_CHUNK_EVENTS: usize = 512;
/// Bytes of a checkpointed state read at a time: MessagePack is read a few bytes at a time.
const STATE_READ_BUFFER_SIZE: usize = 64 * 1024;

/// Every domain read model, maintained together.
#[derive(Clone, Debug, Default)]
pub struct LedgerViews {
    pub network: Network,
    pub wallets: Wallets,
    pub journal: Journal<AccountKey, Currency>,
    pub commissions: Commissions,
    /// The last event applied and when it was recorded.
    pub last: Option<(Position, DateTime<Utc>)>,
    /// Events applied, and how many of them no view reads.
    pub events: u64,
    pub ignored: u64,
    /// Per period and currency, what the journal entries of payout events moved (the
    /// debit side of each entry): what payout reports reconcile to.
    pub payout_journal: BTreeMap<Period, PayoutJournal>,
}

/// Journal amounts of one period's payout events, per currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutJournal {
    pub scheduled: BTreeMap<Currency, Decimal>,
    pub sent: BTreeMap<Currency, Decimal>,
    pub failed: BTreeMap<Currency, Decimal>,
}

impl LedgerViews {
    pub fn new() -> LedgerViews {
        LedgerViews::default()
    }

    /// Folds one decoded event into every view it feeds (on the side `route` names), in
    /// the order a parallel batch produces too (see [`LedgerViews::apply_batch`]).
    fn apply_decoded(
        &mut self,
        event: &RecordedEvent,
        route: Route,
        fact: Option<Fact>,
    ) -> Result<(), ProjectionError> {
        self.events += 1;
        self.last = Some((event.position, event.recorded_at));
        let Some(fact) = fact else {
            self.ignored += 1;
            return Ok(());
        };
        let domain = match fact {
            Fact::Domain(domain) if route == Route::Money => domain,
            network_fact => {
                return fold_network(&mut self.network, &mut self.wallets, event, network_fact)
            }
        };
        // Postings first: an unbalanced event stops a replay before any view reflects it.
        let entry = JournalEntry::of(event, &domain)?;
        let mut journal = JournalBooks {
            journal: &mut self.journal,
            payout_journal: &mut self.payout_journal,
        };
        journal.post(&entry)?;
        if let Some(change) = fold_commissions(&mut self.commissions, event, &domain)? {
            change.apply(&mut self.network);
        }
        Ok(())
    }
}

/// Folds a signup, a credit event or a restriction into the network and the wallets.
fn fold_network(
    network: &mut Network,
    wallets: &mut Wallets,
    event: &RecordedEvent,
    fact: Fact,
) -> Result<(), ProjectionError> {
    let position = event.position;
    let broken = |reason: String| ProjectionError::InvariantBroken { position, reason };
    let domain = match fact {
        Fact::Opened(opened) => {
            return network
                .opened(opened.account_id, opened.referrer, opened.opened_at)
                .map_err(|error| broken(error.to_string()));
        }
        Fact::Domain(domain) => domain,
    };
    match &domain {
        DomainEvent::CreditsGranted(granted) => wallets.granted(granted),
        DomainEvent::CreditsPurchased(purchased) => wallets.purchased(purchased),
        DomainEvent::CreditsSpent(spent) => wallets.spent(spent),
        DomainEvent::CreditsExpired(expired) => wallets.expired(expired),
        DomainEvent::CreditsReserved(reserved) => wallets.reserved_credits(reserved),
        DomainEvent::ReservationCaptured(captured) => wallets.captured(captured),
        DomainEvent::ReservationVoided(voided) => wallets.voided(voided),
        DomainEvent::ReservationExpired(expired) => wallets.reservation_expired(expired),
        DomainEvent::ProcessingRestricted(restricted) => {
            restrict(network, restricted.subject.as_uuid(), true);
            Ok(())
        }
        DomainEvent::ProcessingRestrictionLifted(lifted) => {
            restrict(network, lifted.subject.as_uuid(), false);
            Ok(())
        }
        other => unreachable!(
            "{} is routed to the money side, not the network",
            other.event_type()
        ),
    }
    .map_err(|error| broken(error.to_string()))
}

/// Restriction of processing: the subject's id is its account's id. A subject that is
/// not an account id (not a random UUID) cannot appear in the analytics: ignored.
fn restrict(network: &mut Network, subject: uuid::Uuid, restricted: bool) {
    if let Ok(account) = ledger::domain::AccountId::new(subject) {
        network.set_restricted(account, restricted);
    }
}

/// A payment adds to its payer's revenue; a refund or chargeback takes away. The money
/// side works it out, the network side (which owns the revenue) applies it.
#[derive(Clone, Copy, Debug)]
struct RevenueChange {
    payer: ledger::domain::AccountId,
    currency: Currency,
    amount: Decimal,
    at: DateTime<Utc>,
}

impl RevenueChange {
    fn apply(self, network: &mut Network) {
        network.revenue(self.payer, self.currency, self.amount, self.at);
    }
}

/// A money event's journal entry: its postings and, for a payout event, the period and
/// column of the payout journal its debits add to.
#[derive(Clone, Debug)]
struct JournalEntry {
    position: Position,
    recorded_at: DateTime<Utc>,
    postings: Vec<Posting<AccountKey, Currency>>,
    payout: Option<(Period, PayoutColumn)>,
}

impl JournalEntry {
    fn of(event: &RecordedEvent, domain: &DomainEvent) -> Result<JournalEntry, ProjectionError> {
        let postings =
            ledger_postings(domain).map_err(|reason| ProjectionError::InvariantBroken {
                position: event.position,
                reason,
            })?;
        let payout = match domain {
            DomainEvent::PayoutScheduled(payout) => Some((payout.period, PayoutColumn::Scheduled)),
            DomainEvent::PayoutSent(payout) => Some((payout.period, PayoutColumn::Sent)),
            DomainEvent::PayoutFailed(payout) => Some((payout.period, PayoutColumn::Failed)),
            _ => None,
        };
        Ok(JournalEntry {
            position: event.position,
            recorded_at: event.recorded_at,
            postings,
            payout,
        })
    }
}

/// The journal and the payout journal: where money events' entries are posted.
struct JournalBooks<'a> {
    journal: &'a mut Journal<AccountKey, Currency>,
    payout_journal: &'a mut BTreeMap<Period, PayoutJournal>,
}

impl JournalBooks<'_> {
    /// Posts `entry`; refuses, naming the position, what does not balance or comes out
    /// of order.
    fn post(&mut self, entry: &JournalEntry) -> Result<(), ProjectionError> {
        let postings = entry.postings.as_slice();
        if postings.is_empty() {
            return Ok(());
        }
        self.journal
            .post(entry.position, entry.recorded_at, postings)
            .map_err(|error| ProjectionError::InvariantBroken {
                position: entry.position,
                reason: error.to_string(),
            })?;
        if let Some((period, column)) = entry.payout {
            let journal = self.payout_journal.entry(period).or_default();
            let totals = match column {
                PayoutColumn::Scheduled => &mut journal.scheduled,
                PayoutColumn::Sent => &mut journal.sent,
                PayoutColumn::Failed => &mut journal.failed,
            };
            for posting in postings
                .iter()
                .filter(|posting| posting.amount.is_sign_positive())
            {
                *totals.entry(posting.currency).or_default() += posting.amount;
            }
        }
        Ok(())
    }
}

/// Folds a money event into the commissions, and returns the payer's revenue change if
/// it has one.
fn fold_commissions(
    commissions: &mut Commissions,
    event: &RecordedEvent,
    domain: &DomainEvent,
) -> Result<Option<RevenueChange>, ProjectionError> {
    match domain {
        DomainEvent::PaymentReceived(payment) => commissions.payment_received(payment).map(|()| {
            Some(RevenueChange {
                payer: payment.account_id,
                currency: payment.amount.currency(),
                amount: payment.amount.amount(),
                at: payment.received_at,
            })
        }),
        DomainEvent::PaymentRefunded(refund) => commissions.refunded(refund).map(|payment| {
            Some(RevenueChange {
                payer: payment.payer,
                currency: refund.amount.currency(),
                amount: -refund.amount.amount(),
                at: refund.refunded_at,
            })
        }),
        DomainEvent::PaymentChargedBack(chargeback) => {
            commissions.charged_back(chargeback).map(|payment| {
                Some(RevenueChange {
                    payer: payment.payer,
                    currency: chargeback.amount.currency(),
                    amount: -chargeback.amount.amount(),
                    at: chargeback.charged_back_at,
                })
            })
        }
        DomainEvent::CommissionEarned(earned) => commissions.earned(earned).map(|()| None),
        DomainEvent::CommissionReversed(reversed) => commissions.reversed(reversed).map(|()| None),
        DomainEvent::CommissionReleased(released) => commissions.released(released).map(|()| None),
        DomainEvent::CommissionForfeited(forfeited) => {
            commissions.forfeited(forfeited).map(|()| None)
        }
        DomainEvent::CommissionPlanPublished(plan) => {
            commissions.plan_published(plan);
            Ok(None)
        }
        DomainEvent::PayoutScheduled(payout) => commissions.payout_scheduled(payout).map(|()| None),
        DomainEvent::PayoutSent(payout) => commissions.payout_sent(payout).map(|()| None),
        DomainEvent::PayoutFailed(payout) => commissions.payout_failed(payout).map(|()| None),
        DomainEvent::PayoutRunCompleted(run) => {
            commissions.run_completed(run);
            Ok(None)
        }
        DomainEvent::DonationAllocated(donation) => {
            commissions.donation_allocated(donation);
            Ok(None)
        }
        _ => Ok(None),
    }
    .map_err(|error| ProjectionError::InvariantBroken {
        position: event.position,
        reason: error.to_string(),
    })
}

/// The journal entries of a parallel batch not yet posted, with the journal: the money
/// side queues each chunk's entries, and whichever side has time posts them, in order.
/// Posting stops at the first entry the journal refuses.
struct JournalQueue<'a> {
    books: JournalBooks<'a>,
    pending: std::collections::VecDeque<Vec<JournalEntry>>,
    error: Option<ProjectionError>,
}

impl JournalQueue<'_> {
    /// Posts the oldest `chunks` chunks of entries (all if fewer are pending).
    fn post(&mut self, chunks: usize) {
        for _ in 0..chunks {
            let Some(entries) = self.pending.pop_front() else {
                return;
            };
            if self.error.is_some() {
                continue;
            }
            for entry in &entries {
                if let Err(error) = self.books.post(entry) {
                    self.error = Some(error);
                    break;
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum PayoutColumn {
    Scheduled,
    Sent,
    Failed,
}

impl LedgerViews {
    pub fn to_state(&self) -> LedgerViewsState {
        LedgerViewsState {
            network: self.network.to_state(),
            wallets: self.wallets.to_state(),
            journal: self.journal.to_state(),
            commissions: self.commissions.to_state(),
            last: self.last,
            events: self.events,
            ignored: self.ignored,
            payout_journal: self.payout_journal.clone(),
        }
    }

    /// Serializes exactly as [`LedgerViews::to_state`] does, borrowing the views instead
    /// of copying them: what a checkpoint writes (see [`STATE_MAGIC`]).
    pub fn state_serializer(&self) -> impl Serialize + '_ {
        #[derive(Serialize)]
        struct LedgerViewsStateRef<'a, N, W, J, C> {
            network: N,
            wallets: W,
            journal: J,
            commissions: C,
            last: &'a Option<(Position, DateTime<Utc>)>,
            events: u64,
            ignored: u64,
            payout_journal: &'a BTreeMap<Period, PayoutJournal>,
        }
        LedgerViewsStateRef {
            network: self.network.state_serializer(),
            wallets: self.wallets.state_serializer(),
            journal: self.journal.state_serializer(),
            commissions: self.commissions.state_serializer(),
            last: &self.last,
            events: self.events,
            ignored: self.ignored,
            payout_journal: &self.payout_journal,
        }
    }

    pub fn from_state(state: LedgerViewsState) -> Result<LedgerViews, String> {
        Ok(LedgerViews {
            network: Network::from_state(state.network).map_err(|error| error.to_string())?,
            wallets: Wallets::from_state(state.wallets),
            journal: Journal::from_state(state.journal),
            commissions: Commissions::from_state(state.commissions),
            last: state.last,
            events: state.events,
            ignored: state.ignored,
            payout_journal: state.payout_journal,
        })
    }
}

/// The whole state of [`LedgerViews`], every map in key order.
#[derive(Serialize, Deserialize)]
pub struct LedgerViewsState {
    network: NetworkState,
    wallets: WalletsState,
    journal: JournalState<AccountKey, Currency>,
    commissions: CommissionsState,
    last: Option<(Position, DateTime<Utc>)>,
    events: u64,
    ignored: u64,
    payout_journal: BTreeMap<Period, PayoutJournal>,
}

impl Projection for LedgerViews {
    fn name(&self) -> &str {
        "ledger-views"
    }

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
        let classified = decode::classify(event.event_type.as_str());
        let fact = decode::decode_classified(event, classified)?;
        self.apply_decoded(event, classified.route, fact)
    }

    /// Folds a long batch on two threads, one per group of views, each decoding its own
    /// events: the money side (journal, commissions, payouts, donations) on a helper
    /// thread, the network side (network, wallets) on this one, which also applies the
    /// money side's revenue changes (a payment's payer, a refund's) as they arrive.
    ///
    /// The result is the state the one-by-one fold gives, byte for byte (a test checks):
    /// the groups share no state except through those changes, which reach the network in
    /// log order and only after every network event before them (a payer who opened in
    /// the batch is already in the forest; one who opens later in the batch takes its
    /// revenue along, as in the one-by-one fold). A revenue change can land after a later
    /// signup or credit event, which it does not depend on; it would depend on a
    /// restriction, so a batch holding one is folded one by one.
    ///
    /// On an error the side that hit it stops; the error reported is the one at the
    /// lowest position.
    fn apply_batch(&mut self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let two_cores = std::thread::available_parallelism().is_ok_and(|cores| cores.get() >= 2);
        let restricts = || {
            events
                .iter()
                .any(|event| decode::is_restriction(event.event_type.as_str()))
        };
        if events.len() < PARALLEL_EVENTS_MIN || !two_cores || restricts() {
            return events.iter().try_for_each(|event| self.apply(event));
        }
        let LedgerViews {
            network,
            wallets,
            journal,
            commissions,
            payout_journal,
            ..
        } = self;
        let queue = std::sync::Mutex::new(JournalQueue {
            books: JournalBooks {
                journal,
                payout_journal,
            },
            pending: std::collections::VecDeque::new(),
            error: None,
        });
        let progress = SideProgress::default();
        let (network_side, money_side) = std::thread::scope(|scope| {
            // Unbounded: the batch bounds it (one message per chunk), and a money side that
            // had to wait for the network side would idle while it catches up on a stretch
            // of signups and credits.
            let (sender, receiver) = std::sync::mpsc::channel();
            let queue = &queue;
            let progress = &progress;
            let money = std::thread::Builder::new()
                .name("views-money".to_owned())
                .spawn_scoped(scope, move || {
                    fold_money_side(commissions, queue, progress, events, sender)
                })
                .expect("the money side's thread starts");
            let network_side =
                fold_network_side(network, wallets, queue, progress, events, receiver);
            let money_side = money
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (network_side, money_side)
        });
        let mut queue = queue
            .into_inner()
            .expect("no side panicked holding the journal");
        queue.post(usize::MAX);
        // The journal's error first on a tie: the one-by-one fold posts before it folds.
        let journal_side = queue.error;
        let error = [journal_side, network_side.error, money_side.error]
            .into_iter()
            .flatten()
            .min_by_key(error_position);
        if let Some(error) = error {
            return Err(error);
        }
        self.events += events.len() as u64;
        self.ignored += network_side.ignored + money_side.ignored;
        if let Some(last) = events.last() {
            self.last = Some((last.position, last.recorded_at));
        }
        Ok(())
    }

    /// The state in the binary format described at [`STATE_MAGIC`], written straight
    /// from the views ([`LedgerViews::state_serializer`]).
    fn encode_state(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(STATE_MAGIC)?;
        // Structs as arrays (the default): field names are not repeated per record.
        crate::serial::write_msgpack(out, &self.state_serializer())
    }

    fn decode_state(&mut self, state: &mut dyn Read) -> Result<(), ProjectionError> {
        let bad = |reason: String| ProjectionError::BadState {
            projection: "ledger-views".to_owned(),
            reason,
        };
        let mut state = BufReader::with_capacity(STATE_READ_BUFFER_SIZE, state);
        let mut magic = Vec::with_capacity(STATE_MAGIC.len());
        (&mut state)
            .take(STATE_MAGIC.len() as u64)
            .read_to_end(&mut magic)
            .map_err(|error| bad(error.to_string()))?;
        if magic != STATE_MAGIC {
            return Err(bad(if magic.first() == Some(&b'{') {
                "the state is JSON, written by an earlier version: rebuild the views from the \
                 log (the checkpoint is a cache; the log is the truth)"
                    .to_owned()
            } else {
                "the state does not start with the ledger-views state magic".to_owned()
            }));
        }
        let decoded: LedgerViewsState =
            rmp_serde::from_read(&mut state).map_err(|error| bad(error.to_string()))?;
        let following =
            io::copy(&mut state, &mut io::sink()).map_err(|error| bad(error.to_string()))?;
        if following != 0 {
            return Err(bad(format!("{following} bytes follow the state")));
        }
        *self = LedgerViews::from_state(decoded).map_err(bad)?;
        Ok(())
    }

    fn fresh(&self) -> Self {
        LedgerViews::new()
    }
}

/// What one side of a parallel batch ends with.
struct SideOutcome {
    /// Events no view reads that it counted.
    ignored: u64,
    /// Its first error, if it stopped on one.
    error: Option<ProjectionError>,
}

/// Where an error happened; errors without a position sort first.
fn error_position(error: &ProjectionError) -> Option<Position> {
    match error {
        ProjectionError::UndecodableEvent { position, .. }
        | ProjectionError::InvariantBroken { position, .. } => Some(*position),
        _ => None,
    }
}

/// How many chunks each side of a parallel batch has folded: the side ahead has the
/// time to post the journal.
#[derive(Default)]
struct SideProgress {
    money: std::sync::atomic::AtomicUsize,
    network: std::sync::atomic::AtomicUsize,
}

/// Chunks the money side must be ahead of the network side before it posts queued
/// journal entries itself (it is then the faster one, so it has the time).
const JOURNAL_LEAD_CHUNKS: usize = 2;

/// The money side of a parallel batch: decodes the money events of `events`, queues
/// their journal entries and folds them into the commissions, and hands over their
/// revenue changes; one queue entry and one message per chunk of [`SIDE_CHUNK_EVENTS`]
/// events (empty if the chunk has none). It posts queued entries itself while it is
/// ahead of the network side, and all that are left once its own events are done.
fn fold_money_side(
    commissions: &mut Commissions,
    queue: &std::sync::Mutex<JournalQueue<'_>>,
    progress: &SideProgress,
    events: &[RecordedEvent],
    sender: std::sync::mpsc::Sender<Vec<RevenueChange>>,
) -> SideOutcome {
    let mut outcome = SideOutcome {
        ignored: 0,
        error: None,
    };
    let lock = || queue.lock().expect("no side panicked holding the journal");
    for chunk in events.chunks(SIDE_CHUNK_EVENTS) {
        let mut entries = Vec::new();
        let mut changes = Vec::new();
        for event in chunk {
            let classified = decode::classify(event.event_type.as_str());
            if classified.route != Route::Money {
                continue;
            }
            let folded = match decode::decode_classified(event, classified) {
                Ok(Some(Fact::Domain(domain))) => {
                    // The entry is queued before the commissions fold, so when both
                    // refuse the event, the journal's error (which comes first one by
                    // one) is there to be reported.
                    JournalEntry::of(event, &domain).and_then(|entry| {
                        if !entry.postings.is_empty() {
                            entries.push(entry);
                        }
                        fold_commissions(commissions, event, &domain)
                    })
                }
                Ok(Some(Fact::Opened(_))) => unreachable!("a signup is routed to the network"),
                Ok(None) => {
                    outcome.ignored += 1;
                    Ok(None)
                }
                Err(error) => Err(error),
            };
            match folded {
                Ok(change) => changes.extend(change),
                Err(error) => {
                    outcome.error = Some(error);
                    break;
                }
            }
        }
        let done = progress.money.fetch_add(1, Ordering::Relaxed) + 1;
        let mut queue = lock();
        queue.pending.push_back(entries);
        if done > progress.network.load(Ordering::Relaxed) + JOURNAL_LEAD_CHUNKS {
            queue.post(usize::MAX);
        }
        drop(queue);
        if sender.send(changes).is_err() || outcome.error.is_some() {
            break;
        }
    }
    lock().post(usize::MAX);
    outcome
}

/// The network side of a parallel batch: decodes and folds the network events of
/// `events` into the network and the wallets, posts the journal entries the money side
/// queued while it is not behind it, and applies its revenue changes. Those of a chunk
/// are applied only once this side has folded that chunk, so a change never reaches the
/// network before a signup that came before it.
fn fold_network_side(
    network: &mut Network,
    wallets: &mut Wallets,
    queue: &std::sync::Mutex<JournalQueue<'_>>,
    progress: &SideProgress,
    events: &[RecordedEvent],
    receiver: std::sync::mpsc::Receiver<Vec<RevenueChange>>,
) -> SideOutcome {
    let mut outcome = SideOutcome {
        ignored: 0,
        error: None,
    };
    // Posts what is queued, unless the money side is at it.
    let post_queued = || {
        if let Ok(mut queue) = queue.try_lock() {
            queue.post(usize::MAX);
        }
    };
    let mut arrived = std::collections::VecDeque::new();
    let mut applied_chunks = 0usize;
    for (index, chunk) in events.chunks(SIDE_CHUNK_EVENTS).enumerate() {
        if outcome.error.is_none() {
            for event in chunk {
                let classified = decode::classify(event.event_type.as_str());
                match classified.route {
                    Route::Network => {}
                    Route::Money => continue,
                    // Counted here, the one side that looks at every event.
                    Route::Ignored => {
                        outcome.ignored += 1;
                        continue;
                    }
                }
                let folded = match decode::decode_classified(event, classified) {
                    Ok(Some(fact)) => fold_network(network, wallets, event, fact),
                    Ok(None) => {
                        outcome.ignored += 1;
                        Ok(())
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = folded {
                    outcome.error = Some(error);
                    break;
                }
            }
        }
        // Caught up with the money side: this side has the time to post.
        if progress.network.fetch_add(1, Ordering::Relaxed) + 1
            >= progress.money.load(Ordering::Relaxed)
        {
            post_queued();
        }
        arrived.extend(receiver.try_iter());
        while applied_chunks <= index {
            let Some(changes) = arrived.pop_front() else {
                break;
            };
            changes.into_iter().for_each(|change| change.apply(network));
            applied_chunks += 1;
        }
    }
    // Every chunk of this side is folded: the remaining changes come after their events.
    // Until the money side is done, post its entries as they come.
    for changes in arrived.into_iter().chain(receiver) {
        changes.into_iter().for_each(|change| change.apply(network));
        post_queued();
    }
    outcome
}

#[cfg(test)]
mod tests;
