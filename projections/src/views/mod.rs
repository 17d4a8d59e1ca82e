//! The domain's read models, fed from one decode per event:
//!
//! - [`network::Network`]: the referral forest, revenue per member, analytics.
//! - [`wallets::Wallets`]: credit balances, open grants, credit totals per period.
//! - [`crate::journal::Journal`]: double-entry balances from the domain's postings table.
//! - [`commissions::Commissions`]: commissions, payouts, donations, plans.
//!
//! [`LedgerViews`] is one [`Projection`] holding them all, so a rebuild reads and decodes
//! the log once.

pub mod commissions;
pub mod decode;
pub mod network;
pub mod wallets;

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};

use chrono::{DateTime, Utc};
use ledger::domain::events::DomainEvent;
use ledger::domain::{Currency, Period};
use ledger::store::{Position, RecordedEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::journal::{Journal, JournalState};
use crate::projection::{Projection, ProjectionError};
use commissions::{Commissions, CommissionsState};
use decode::{decode, Fact};
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
pub const STATE_MAGIC: &[u8; 8] = b"LVSTATE2";

/// Batches shorter than this are decoded on the folding thread.
const PARALLEL_DECODE_EVENTS_MIN: usize = 2048;
/// Bytes of a checkpointed state read at a time: MessagePack is read a few bytes at a time.
const STATE_READ_BUFFER_SIZE: usize = 64 * 1024;
/// Events a decoder thread decodes at a time.
const DECODE_CHUNK_EVENTS: usize = 512;
/// Most decoder threads one batch uses.
const DECODE_THREADS_MAX: usize = 3;

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

    fn apply_decoded(
        &mut self,
        event: &RecordedEvent,
        fact: Option<Fact>,
    ) -> Result<(), ProjectionError> {
        self.events += 1;
        self.last = Some((event.position, event.recorded_at));
        match fact {
            Some(fact) => self.apply_fact(event, fact),
            None => {
                self.ignored += 1;
                Ok(())
            }
        }
    }

    /// Restriction of processing: the subject's id is its account's id. A subject that is
    /// not an account id (not a random UUID) cannot appear in the analytics: ignored.
    fn restrict(&mut self, subject: uuid::Uuid, restricted: bool) {
        if let Ok(account) = ledger::domain::AccountId::new(subject) {
            self.network.set_restricted(account, restricted);
        }
    }

    fn apply_fact(&mut self, event: &RecordedEvent, fact: Fact) -> Result<(), ProjectionError> {
        let position = event.position;
        let broken = |reason: String| ProjectionError::InvariantBroken { position, reason };
        let domain = match fact {
            Fact::Opened(opened) => {
                return self
                    .network
                    .opened(opened.account_id, opened.referrer, opened.opened_at)
                    .map_err(|error| broken(error.to_string()));
            }
            Fact::Domain(domain) => domain,
        };
        // Postings first: an unbalanced event must stop the replay before any view
        // reflects it.
        let postings = ledger_postings(&domain).map_err(broken)?;
        self.journal
            .post(position, event.recorded_at, &postings)
            .map_err(|error| broken(error.to_string()))?;
        let payout_entry = match &domain {
            DomainEvent::PayoutScheduled(payout) => Some((payout.period, 0)),
            DomainEvent::PayoutSent(payout) => Some((payout.period, 1)),
            DomainEvent::PayoutFailed(payout) => Some((payout.period, 2)),
            _ => None,
        };
        if let Some((period, kind)) = payout_entry {
            let journal = self.payout_journal.entry(period).or_default();
            let totals = match kind {
                0 => &mut journal.scheduled,
                1 => &mut journal.sent,
                _ => &mut journal.failed,
            };
            for posting in postings
                .iter()
                .filter(|posting| posting.amount.is_sign_positive())
            {
                *totals.entry(posting.currency).or_default() += posting.amount;
            }
        }
        match &domain {
            DomainEvent::CreditsGranted(granted) => self.wallets.granted(granted),
            DomainEvent::CreditsPurchased(purchased) => self.wallets.purchased(purchased),
            DomainEvent::CreditsSpent(spent) => self.wallets.spent(spent),
            DomainEvent::CreditsExpired(expired) => self.wallets.expired(expired),
            _ => Ok(()),
        }
        .map_err(|error| broken(error.to_string()))?;
        let commissions = match &domain {
            DomainEvent::PaymentReceived(payment) => {
                self.network.revenue(
                    payment.account_id,
                    payment.amount.currency(),
                    payment.amount.amount(),
                    payment.received_at,
                );
                self.commissions.payment_received(payment)
            }
            DomainEvent::PaymentRefunded(refund) => self
                .commissions
                .refunded(refund)
                .map(|payment| (payment.payer, refund.amount, refund.refunded_at))
                .map(|(payer, amount, at)| {
                    self.network
                        .revenue(payer, amount.currency(), -amount.amount(), at)
                }),
            DomainEvent::PaymentChargedBack(chargeback) => self
                .commissions
                .charged_back(chargeback)
                .map(|payment| (payment.payer, chargeback.amount, chargeback.charged_back_at))
                .map(|(payer, amount, at)| {
                    self.network
                        .revenue(payer, amount.currency(), -amount.amount(), at)
                }),
            DomainEvent::CommissionEarned(earned) => self.commissions.earned(earned),
            DomainEvent::CommissionReversed(reversed) => self.commissions.reversed(reversed),
            DomainEvent::CommissionReleased(released) => self.commissions.released(released),
            DomainEvent::ProcessingRestricted(restricted) => {
                self.restrict(restricted.subject.as_uuid(), true);
                Ok(())
            }
            DomainEvent::ProcessingRestrictionLifted(lifted) => {
                self.restrict(lifted.subject.as_uuid(), false);
                Ok(())
            }
            DomainEvent::CommissionForfeited(forfeited) => self.commissions.forfeited(forfeited),
            DomainEvent::CommissionPlanPublished(plan) => {
                self.commissions.plan_published(plan);
                Ok(())
            }
            DomainEvent::PayoutScheduled(payout) => self.commissions.payout_scheduled(payout),
            DomainEvent::PayoutSent(payout) => self.commissions.payout_sent(payout),
            DomainEvent::PayoutFailed(payout) => self.commissions.payout_failed(payout),
            DomainEvent::PayoutRunCompleted(run) => {
                self.commissions.run_completed(run);
                Ok(())
            }
            DomainEvent::DonationAllocated(donation) => {
                self.commissions.donation_allocated(donation);
                Ok(())
            }
            _ => Ok(()),
        };
        commissions.map_err(|error| broken(error.to_string()))
    }

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
        let fact = decode(event)?;
        self.apply_decoded(event, fact)
    }

    /// Decodes on helper threads while this thread folds, in order: decoding JSON is
    /// most of a rebuild's work and needs no state.
    fn apply_batch(&mut self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        let decoders = std::thread::available_parallelism()
            .map_or(1, |cores| cores.get().saturating_sub(1))
            .clamp(1, DECODE_THREADS_MAX);
        if events.len() < PARALLEL_DECODE_EVENTS_MIN {
            return events.iter().try_for_each(|event| self.apply(event));
        }
        let chunks: Vec<&[RecordedEvent]> = events.chunks(DECODE_CHUNK_EVENTS).collect();
        std::thread::scope(|scope| {
            let mut receivers = Vec::with_capacity(decoders);
            for decoder in 0..decoders {
                // Bounded, so decoders run at most a few chunks ahead of the fold.
                let (sender, receiver) = std::sync::mpsc::sync_channel(2);
                receivers.push(receiver);
                let chunks = &chunks;
                // Named, so a profile tells decoding from folding.
                std::thread::Builder::new()
                    .name("views-decode".to_owned())
                    .spawn_scoped(scope, move || {
                        for chunk in chunks.iter().skip(decoder).step_by(decoders) {
                            let decoded: Vec<_> = chunk.iter().map(decode).collect();
                            if sender.send(decoded).is_err() {
                                return; // the fold stopped on an error
                            }
                        }
                    })
                    .expect("a decoder thread starts");
            }
            for (index, chunk) in chunks.iter().enumerate() {
                let decoded = receivers[index % decoders]
                    .recv()
                    .expect("a decoder sends every chunk it owns");
                for (event, fact) in chunk.iter().zip(decoded) {
                    self.apply_decoded(event, fact?)?;
                }
            }
            Ok(())
        })
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

#[cfg(test)]
mod tests;
