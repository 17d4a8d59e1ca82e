//! The command service: loads the state a command needs from the event store, runs the
//! pure decider, and appends what it decided under the exact expected revision, retrying
//! a bounded number of times when another writer got there first.
//!
//! Idempotency comes in two layers. Every command names its facts by natural ids (an
//! account id, a payment's processor id, a refund id, a spend id, a grant id, a period),
//! and the deciders answer a repeat of the same content with no new events and a
//! different content under the same id with `idempotency_conflict`. Below that, event ids
//! are derived from the command id, so an append retried after a lost acknowledgement is
//! recognised by the store; a command id reused for another command on a stream it
//! already wrote to is [`LedgerError::CommandIdConflict`]. On another stream the service
//! cannot tell (event ids are derived per stream): callers that take command ids from
//! clients keep their own record of id and content.
//!
//! Commands that touch two streams (a signup, a credit-pack payment) append in an order
//! that makes a crash between the two harmless and a retry of the same command complete
//! the work: see `docs/DOMAIN.md`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::domain::account::{
    self, AccountState, ForAccount, FraudPolicy, OpenAccount, ReferralCodeState,
};
use crate::domain::donation::{AllocateDonation, DonationState};
use crate::domain::events::{upcast, DomainEvent, PaymentKind, UpcastError};
use crate::domain::ids::{AccountId, PaymentId, ReferralCode, SpendId};
use crate::domain::payment::{
    self, Payment, PaymentContext, PaymentState, RecordPayment, RefundPayment, ReviewCommission,
    UplineMember,
};
use crate::domain::payout::{
    self, AffiliateBalance, PayableBook, PayoutsState, RunPayouts, SettlePayout,
};
use crate::domain::plan::{self, PlanState, PublishPlan};
use crate::domain::{streams, Currency, Rejection};
use crate::privacy::domain::seal_domain_event;
use crate::privacy::payload::{open_payload, redact_payload};
use crate::privacy::{KeyVault, PrivacyError};
use crate::store::{
    Direction, EventMetadata, EventStore, ExpectedRevision, Position, RecordedEvent, StoreError,
    StreamFrom, StreamName, StreamState, PAGE_SIZE_MAX,
};

mod books;
pub use books::LogBooks;

/// Attempts of one command when the stream moved between read and append.
pub const ATTEMPTS_MAX: u32 = 8;

/// How the ledger is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerConfig {
    /// The one currency payments, commissions and payouts are in.
    pub currency: Currency,
    pub fraud: FraudPolicy,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            currency: Currency::EUR,
            fraud: FraudPolicy::default(),
        }
    }
}

/// Who sent a command: its id (the idempotency key of its appends) and the request it
/// belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandMeta {
    pub command_id: Uuid,
    pub correlation_id: Option<Uuid>,
}

impl CommandMeta {
    pub fn new(command_id: Uuid) -> CommandMeta {
        CommandMeta {
            command_id,
            correlation_id: None,
        }
    }
}

/// What a command recorded.
///
/// A command repeated with the same command id and content returns what the first one
/// recorded, with `replayed` set. A repeat under a new command id (a webhook delivered
/// again with a fresh id) records nothing and returns no events: the facts are already
/// there, by their natural ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The events the command recorded, in order.
    pub events: Vec<DomainEvent>,
    /// The global position of the last of them, if any.
    pub position: Option<Position>,
    /// The events were recorded by an earlier attempt of this same command.
    pub replayed: bool,
}

impl Outcome {
    fn nothing() -> Outcome {
        Outcome {
            events: Vec::new(),
            position: None,
            replayed: false,
        }
    }

    fn absorb(&mut self, other: Outcome) {
        self.events.extend(other.events);
        if other.position.is_some() {
            self.position = other.position;
        }
        self.replayed |= other.replayed;
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The rules refuse the command; nothing was recorded.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The command id was already used for a different command.
    #[error("command id {command_id} was already used for a different command")]
    CommandIdConflict { command_id: Uuid },
    /// Other writers kept changing the stream; the command may be retried.
    #[error("stream {stream} kept changing; gave up after {ATTEMPTS_MAX} attempts")]
    Contention { stream: StreamName },
    /// A stored event cannot be read: the log and the code disagree. A bug or corruption.
    #[error("stored event {event_id} in {stream} cannot be read: {source}")]
    Unreadable {
        stream: StreamName,
        event_id: Uuid,
        #[source]
        source: UpcastError,
    },
    /// Personal data could not be sealed or opened: the subject was erased (a write that
    /// needs its key is refused), or the key vault is unavailable (never read as erased).
    #[error(transparent)]
    Privacy(PrivacyError),
    #[error(transparent)]
    Store(StoreError),
}

impl LedgerError {
    /// The stable code of the failure.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::Rejected(rejection) => rejection.code(),
            LedgerError::CommandIdConflict { .. } => "command_id_conflict",
            LedgerError::Contention { .. } => "contention",
            LedgerError::Unreadable { .. } => "unreadable_event",
            LedgerError::Privacy(error) => error.code(),
            LedgerError::Store(_) => "store_error",
        }
    }
}

impl From<StoreError> for LedgerError {
    fn from(error: StoreError) -> Self {
        LedgerError::Store(error)
    }
}

/// A stream's state and the revision it was read at.
struct Loaded<T> {
    stream: StreamName,
    state: T,
    revision: StreamState,
    /// [`Caches::erasures`] when the load began: a state read before an erasure may hold
    /// the erased person's data in clear and must not go back into the cache.
    erasures: u64,
}

/// Most streams of one kind whose states the service keeps between commands.
pub const CACHED_STREAMS_MAX: usize = 10_000;

/// States of recently used streams, at the revision they were read at. Streams only grow,
/// so a state at revision `r` plus the events after `r` is the state now, whoever wrote
/// them: the cache saves rereading and refolding a stream's history, and is never stale.
/// A state is taken out while a command uses it and put back after, so it is never
/// cloned; a command that fails on the way simply leaves it out.
struct StateCache<T> {
    entries: Mutex<HashMap<StreamName, (T, StreamState)>>,
    /// Most streams kept ([`CACHED_STREAMS_MAX`] unless the ledger was built with
    /// [`Ledger::with_cached_accounts_max`]).
    capacity: usize,
}

impl<T> Default for StateCache<T> {
    fn default() -> Self {
        StateCache {
            entries: Mutex::new(HashMap::new()),
            capacity: CACHED_STREAMS_MAX,
        }
    }
}

impl<T> StateCache<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, (T, StreamState)>> {
        self.entries.lock().expect("state cache lock poisoned")
    }

    fn take(&self, stream: &StreamName) -> Option<(T, StreamState)> {
        self.lock().remove(stream)
    }

    fn put(&self, stream: StreamName, state: T, revision: StreamState) {
        let mut entries = self.lock();
        if let Some((_, cached)) = entries.get(&stream) {
            // Another command put back a state at least as recent: keep that one.
            if cached.next_revision() >= revision.next_revision() {
                return;
            }
        } else if entries.len() >= self.capacity {
            // Bounded memory: start over rather than track recency.
            entries.clear();
        }
        entries.insert(stream, (state, revision));
    }

    fn forget(&self, stream: &StreamName) {
        self.lock().remove(stream);
    }
}

/// The caches, one per kind of stream state.
#[derive(Default)]
struct Caches {
    /// Counts erasures; bumped before the caches are emptied (see `forget_personal_data`).
    erasures: std::sync::atomic::AtomicU64,
    accounts: StateCache<AccountState>,
    codes: StateCache<ReferralCodeState>,
    payments: StateCache<PaymentState>,
    plans: StateCache<PlanState>,
    payouts: StateCache<PayoutsState>,
    donations: StateCache<DonationState>,
}

/// A stream state the service caches.
trait Cached: Sized {
    fn cache(caches: &Caches) -> &StateCache<Self>;
}

macro_rules! cached {
    ($($state:ty => $field:ident),* $(,)?) => {
        $(impl Cached for $state {
            fn cache(caches: &Caches) -> &StateCache<Self> {
                &caches.$field
            }
        })*
    };
}

cached! {
    AccountState => accounts,
    ReferralCodeState => codes,
    PaymentState => payments,
    PlanState => plans,
    PayoutsState => payouts,
    DonationState => donations,
}

/// What one append attempt did.
struct Appended {
    outcome: Outcome,
    /// The stream revision of the last event appended, when the store wrote the events
    /// (an idempotent repeat reports the revision of the first write instead).
    last_revision: Option<u64>,
}

/// Why one append attempt did not land.
enum AppendFailure {
    /// The stream moved: read again and decide again.
    Moved,
    Failed(LedgerError),
}

/// The ledger's command side over an event store. Personal data is sealed with keys
/// from `vault` on the way to the store and opened on the way back.
pub struct Ledger<S> {
    store: S,
    config: LedgerConfig,
    caches: Caches,
    vault: Arc<dyn KeyVault>,
}

impl<S: EventStore> Ledger<S> {
    pub fn new(store: S, config: LedgerConfig, vault: Arc<dyn KeyVault>) -> Ledger<S> {
        Ledger {
            store,
            config,
            caches: Caches::default(),
            vault,
        }
    }

    /// The same ledger keeping up to `accounts_max` account states between commands
    /// instead of [`CACHED_STREAMS_MAX`]: for one writer that comes back to every account
    /// of a large log again and again (the simulator), where memory is cheaper than
    /// refolding (and decrypting) an account's history on every command. Other kinds of
    /// stream are short or rarely revisited and keep the default.
    pub fn with_cached_accounts_max(mut self, accounts_max: usize) -> Ledger<S> {
        self.caches.accounts.capacity = accounts_max;
        self
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn vault(&self) -> &dyn KeyVault {
        self.vault.as_ref()
    }

    /// The vault itself, to build another service over the same store and keys.
    pub fn shared_vault(&self) -> Arc<dyn KeyVault> {
        Arc::clone(&self.vault)
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// Opens an account: claims its referral code, records the referral in the referrer's
    /// stream, then opens the account's stream. A retry of the same command (after a
    /// crash between those appends) completes what is missing and returns all three.
    pub async fn open_account(
        &self,
        meta: CommandMeta,
        command: &OpenAccount,
    ) -> Result<Outcome, LedgerError> {
        let account_stream = streams::account(command.account_id);
        let code_stream = streams::referral_code(command.referral_code);
        for _ in 0..ATTEMPTS_MAX {
            let account = self.load_account(command.account_id).await?;
            let referrer = match command.referred_with_code {
                Some(code) => self.resolve_code(code).await?,
                None => None,
            };
            let signup = account::decide_open(
                &account.state,
                referrer.as_ref().map(|loaded| &loaded.state),
                command,
                &self.config.fraud,
            )?;
            let account_revision = account.revision;
            self.keep(account);
            let referrer = referrer.map(|loaded| {
                let at = (loaded.stream.clone(), loaded.revision);
                self.keep(loaded);
                at
            });
            let mut outcome = Outcome::nothing();
            // 1. The code: a retry finds it already ours and records nothing.
            let code = self
                .load(
                    &code_stream,
                    ReferralCodeState::default(),
                    account::evolve_claim,
                )
                .await?;
            let claim = if signup.account_events.is_empty() {
                Vec::new()
            } else {
                account::decide_claim(
                    &code.state,
                    command.referral_code,
                    command.account_id,
                    command.opened_at,
                )?
            };
            let code_revision = code.revision;
            self.keep(code);
            match self
                .append_or_recall(meta, &code_stream, code_revision, &claim)
                .await
            {
                Ok(appended) => outcome.absorb(appended.outcome),
                Err(AppendFailure::Moved) => continue,
                Err(AppendFailure::Failed(error)) => return Err(error),
            }
            // 2. The referral, at the referrer's exact revision: concurrent signups under
            // one referrer are serialized, so the velocity count is exact.
            if let Some((stream, revision)) = referrer {
                match self
                    .append_or_recall(meta, &stream, revision, &signup.referrer_events)
                    .await
                {
                    Ok(appended) => outcome.absorb(appended.outcome),
                    Err(AppendFailure::Moved) => continue,
                    Err(AppendFailure::Failed(error)) => return Err(error),
                }
            }
            // 3. The account itself.
            match self
                .append_or_recall(
                    meta,
                    &account_stream,
                    account_revision,
                    &signup.account_events,
                )
                .await
            {
                Ok(appended) => {
                    outcome.absorb(appended.outcome);
                    return Ok(outcome);
                }
                Err(AppendFailure::Moved) => continue,
                Err(AppendFailure::Failed(error)) => return Err(error),
            }
        }
        Err(LedgerError::Contention {
            stream: account_stream,
        })
    }

    /// Any command on an existing account: personal data, subscriptions, credits.
    pub async fn account_command(
        &self,
        meta: CommandMeta,
        command: &ForAccount,
    ) -> Result<Outcome, LedgerError> {
        let stream = streams::account(command.account_id);
        self.decide_and_append(
            meta,
            &stream,
            AccountState::default,
            account::evolve,
            |state| account::decide(state, command),
        )
        .await
    }

    /// Records a payment and, in the same append, the commissions it funds up the payer's
    /// upline under the plan in force at the payment's time. A credit pack's credits are
    /// then added to the payer's wallet (also on a retry, which completes a crashed one).
    pub async fn record_payment(
        &self,
        meta: CommandMeta,
        command: &RecordPayment,
    ) -> Result<Outcome, LedgerError> {
        let stream = streams::payment(&command.payment_id);
        let mut outcome = None;
        for _ in 0..ATTEMPTS_MAX {
            let payment = self
                .load(&stream, PaymentState::default(), payment::evolve)
                .await?;
            let context = self.payment_context(&payment.state, command).await?;
            let events = payment::decide_payment(&payment.state, &context, command)?;
            let revision = payment.revision;
            let erasures = payment.erasures;
            self.keep(payment);
            match self
                .append_or_recall(meta, &stream, revision, &events)
                .await
            {
                Ok(appended) => {
                    if let Some(last) = appended.last_revision {
                        self.advance(&stream, revision, erasures, &events, last, payment::evolve);
                    }
                    outcome = Some(appended.outcome);
                    break;
                }
                Err(AppendFailure::Moved) => continue,
                Err(AppendFailure::Failed(error)) => return Err(error),
            }
        }
        let Some(mut outcome) = outcome else {
            return Err(LedgerError::Contention { stream });
        };
        if let PaymentKind::CreditPack { credits } = &command.kind {
            let purchase = ForAccount {
                account_id: command.account_id,
                command: account::AccountCommand::PurchaseCredits {
                    payment_id: command.payment_id.clone(),
                    credits: *credits,
                    expires_at: None,
                    purchased_at: command.received_at,
                },
            };
            outcome.absorb(self.account_command(meta, &purchase).await?);
        }
        Ok(outcome)
    }

    /// Records a refund or chargeback and the clawbacks it causes, in one append.
    pub async fn refund_payment(
        &self,
        meta: CommandMeta,
        command: &RefundPayment,
    ) -> Result<Outcome, LedgerError> {
        let stream = streams::payment(&command.payment_id);
        self.decide_and_append(
            meta,
            &stream,
            PaymentState::default,
            payment::evolve,
            |state| payment::decide_refund(state, command),
        )
        .await
    }

    /// Releases or forfeits a commission held for review.
    pub async fn review_commission(
        &self,
        meta: CommandMeta,
        command: &ReviewCommission,
    ) -> Result<Outcome, LedgerError> {
        let stream = streams::payment(&command.payment_id);
        self.decide_and_append(
            meta,
            &stream,
            PaymentState::default,
            payment::evolve,
            |state| payment::decide_review(state, command),
        )
        .await
    }

    pub async fn publish_plan(
        &self,
        meta: CommandMeta,
        command: &PublishPlan,
    ) -> Result<Outcome, LedgerError> {
        let currency = self.config.currency;
        self.decide_and_append(
            meta,
            &streams::plan(),
            || PlanState::new(currency),
            plan::evolve,
            |state| plan::decide(state, command),
        )
        .await
    }

    /// Runs the payouts of a period from the payable balances at its as-of time, folding
    /// the whole log for them (the server runs it once a month; a writer that runs it
    /// again and again keeps [`LogBooks`] and calls [`Ledger::run_payouts_with`]).
    pub async fn run_payouts(
        &self,
        meta: CommandMeta,
        command: &RunPayouts,
    ) -> Result<Outcome, LedgerError> {
        let mut books = LogBooks::new(self.config.currency);
        self.run_payouts_with(meta, command, &mut books).await
    }

    pub async fn settle_payout(
        &self,
        meta: CommandMeta,
        command: &SettlePayout,
    ) -> Result<Outcome, LedgerError> {
        self.decide_and_append(
            meta,
            &streams::payouts(),
            PayoutsState::default,
            payout::evolve,
            |state| payout::decide_settle(state, command),
        )
        .await
    }

    pub async fn allocate_donation(
        &self,
        meta: CommandMeta,
        command: &AllocateDonation,
    ) -> Result<Outcome, LedgerError> {
        let mut books = LogBooks::new(self.config.currency);
        self.allocate_donation_with(meta, command, &mut books).await
    }

    /// An account's state, or `None` if it does not exist.
    pub async fn account(&self, id: AccountId) -> Result<Option<account::Account>, LedgerError> {
        self.with_account(id, |account| account.cloned()).await
    }

    /// What `read` takes from an account's state (`None` if it does not exist), without
    /// copying the state: an account's wallet holds every spend it ever made.
    pub async fn with_account<R>(
        &self,
        id: AccountId,
        read: impl FnOnce(Option<&account::Account>) -> R,
    ) -> Result<R, LedgerError> {
        let loaded = self.load_account(id).await?;
        let value = read(loaded.state.account.as_ref());
        self.keep(loaded);
        Ok(value)
    }

    /// What spend `spend_id` of account `id` answered: the account's balance right after
    /// it, at the spend's own time. `None` if the account recorded no such spend. Folds
    /// the account's stream from the start up to the spend, without personal data: the
    /// path of a retried spend, not of a new one (which answers from the cached state).
    pub async fn balance_after_spend(
        &self,
        id: AccountId,
        spend_id: &SpendId,
    ) -> Result<Option<crate::domain::Credits>, LedgerError> {
        let mut state = AccountState::default();
        let mut balance = None;
        self.each_event_of(&streams::account(id), |recorded| {
            let payload = redact_payload(recorded).map_err(LedgerError::Privacy)?;
            let event = decode_payload(recorded, &payload)?;
            let spent_at = match &event {
                DomainEvent::CreditsSpent(spent) if spent.spend_id == *spend_id => {
                    Some(spent.spent_at)
                }
                _ => None,
            };
            state = account::evolve(std::mem::take(&mut state), &event);
            balance = spent_at.and_then(|at| {
                let account = state.account.as_ref()?;
                Some(account.wallet.balance_at(at))
            });
            Ok(balance.is_none())
        })
        .await?;
        Ok(balance)
    }

    /// Hands every event of `stream` to `visit`, oldest first, a page at a time, until
    /// `visit` answers `false` or the stream ends.
    async fn each_event_of(
        &self,
        stream: &StreamName,
        mut visit: impl FnMut(&RecordedEvent) -> Result<bool, LedgerError>,
    ) -> Result<(), LedgerError> {
        let mut next = 0;
        loop {
            let page = self
                .store
                .read_stream(
                    stream,
                    StreamFrom::Revision(next),
                    Direction::Forward,
                    PAGE_SIZE_MAX,
                )
                .await?;
            for recorded in &page {
                next = recorded.revision + 1;
                if !visit(recorded)? {
                    return Ok(());
                }
            }
            if page.len() < PAGE_SIZE_MAX {
                return Ok(());
            }
        }
    }

    /// The account that owns a referral code, if any.
    pub async fn referral_code_owner(
        &self,
        code: ReferralCode,
    ) -> Result<Option<AccountId>, LedgerError> {
        let stream = streams::referral_code(code);
        let loaded = self
            .load(&stream, ReferralCodeState::default(), account::evolve_claim)
            .await?;
        let owner = loaded.state.owner;
        self.keep(loaded);
        Ok(owner)
    }

    pub async fn payment(&self, id: &PaymentId) -> Result<Option<Payment>, LedgerError> {
        let loaded = self
            .load(
                &streams::payment(id),
                PaymentState::default(),
                payment::evolve,
            )
            .await?;
        let payment = loaded.state.payment.clone();
        self.keep(loaded);
        Ok(payment)
    }

    pub async fn plan_state(&self) -> Result<PlanState, LedgerError> {
        let loaded = self
            .load(
                &streams::plan(),
                PlanState::new(self.config.currency),
                plan::evolve,
            )
            .await?;
        let plans = loaded.state.clone();
        self.keep(loaded);
        Ok(plans)
    }

    /// Drops every cached state of an account, e.g. after its personal data was erased,
    /// so that nothing decrypted stays in memory.
    pub fn forget_account(&self, id: AccountId) {
        self.caches.accounts.forget(&streams::account(id));
    }

    /// Drops every cached state after keys were destroyed, so that nothing read before
    /// in clear stays in memory: states held by commands in flight are not put back.
    /// Payment states hold payment data too, so every kind is emptied.
    pub fn forget_personal_data(&self) {
        self.caches
            .erasures
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let caches = &self.caches;
        caches.accounts.lock().clear();
        caches.codes.lock().clear();
        caches.payments.lock().clear();
        caches.plans.lock().clear();
        caches.payouts.lock().clear();
        caches.donations.lock().clear();
    }

    /// Every affiliate's balance at `as_of`. Folds the whole log: a projection will
    /// replace this for large logs.
    pub async fn balances_at(
        &self,
        as_of: DateTime<Utc>,
    ) -> Result<BTreeMap<AccountId, AffiliateBalance>, LedgerError> {
        Ok(self.payable_book().await?.balances_at(as_of))
    }

    async fn payable_book(&self) -> Result<PayableBook, LedgerError> {
        let mut book = PayableBook::new(self.config.currency);
        self.fold_all(|event| book.apply(event)).await?;
        Ok(book)
    }

    async fn payment_context(
        &self,
        state: &PaymentState,
        command: &RecordPayment,
    ) -> Result<PaymentContext, LedgerError> {
        let plans = self.plan_state().await?;
        let plan = plans.in_force_at(command.received_at).clone();
        let mut context = PaymentContext {
            payer: None,
            upline: Vec::with_capacity(plan.levels()),
            plan,
        };
        if state.payment.is_some() {
            // A repeat is decided on the recorded payment alone.
            return Ok(context);
        }
        let payer = self.load_account(command.account_id).await?;
        let Some(account) = payer.state.account.as_ref() else {
            return Ok(context);
        };
        // Walk up the referral chain, one account stream per level, no deeper than the
        // plan pays (at most PLAN_LEVELS_MAX): a loop, never recursion.
        let mut next = account.referrer();
        context.payer = Some(UplineMember::of(account));
        self.keep(payer);
        while let Some(id) = next {
            if context.upline.len() == context.plan.levels() {
                break;
            }
            let loaded = self.load_account(id).await?;
            let member = loaded
                .state
                .account
                .as_ref()
                .expect("a referrer exists before its referees");
            next = member.referrer();
            context.upline.push(UplineMember::of(member));
            self.keep(loaded);
        }
        Ok(context)
    }

    /// The owner of `code`, loaded.
    async fn resolve_code(
        &self,
        code: ReferralCode,
    ) -> Result<Option<Loaded<AccountState>>, LedgerError> {
        match self.referral_code_owner(code).await? {
            Some(owner) => Ok(Some(self.load_account(owner).await?)),
            None => Ok(None),
        }
    }

    async fn load_account(&self, id: AccountId) -> Result<Loaded<AccountState>, LedgerError> {
        self.load(
            &streams::account(id),
            AccountState::default(),
            account::evolve,
        )
        .await
    }

    async fn decide_and_append<T: Cached>(
        &self,
        meta: CommandMeta,
        stream: &StreamName,
        initial: impl Fn() -> T,
        evolve: fn(T, &DomainEvent) -> T,
        decide: impl Fn(&T) -> Result<Vec<DomainEvent>, Rejection>,
    ) -> Result<Outcome, LedgerError> {
        for _ in 0..ATTEMPTS_MAX {
            let loaded = self.load(stream, initial(), evolve).await?;
            let decided = decide(&loaded.state);
            let revision = loaded.revision;
            let erasures = loaded.erasures;
            self.keep(loaded);
            let decided = decided?;
            match self
                .append_or_recall(meta, stream, revision, &decided)
                .await
            {
                Ok(appended) => {
                    if let Some(last) = appended.last_revision {
                        self.advance::<T>(stream, revision, erasures, &decided, last, evolve);
                    }
                    return Ok(appended.outcome);
                }
                Err(AppendFailure::Moved) => continue,
                Err(AppendFailure::Failed(error)) => return Err(error),
            }
        }
        Err(LedgerError::Contention {
            stream: stream.clone(),
        })
    }

    /// Reads a stream from where its cached state stands (or from the start) and folds
    /// the events after it.
    async fn load<T: Cached>(
        &self,
        stream: &StreamName,
        initial: T,
        evolve: fn(T, &DomainEvent) -> T,
    ) -> Result<Loaded<T>, LedgerError> {
        let erasures = self
            .caches
            .erasures
            .load(std::sync::atomic::Ordering::SeqCst);
        let (mut state, mut revision) = T::cache(&self.caches)
            .take(stream)
            .unwrap_or((initial, StreamState::NoStream));
        loop {
            let from = StreamFrom::Revision(revision.next_revision());
            let page = self
                .store
                .read_stream(stream, from, Direction::Forward, PAGE_SIZE_MAX)
                .await?;
            let full = page.len() == PAGE_SIZE_MAX;
            for recorded in &page {
                assert_eq!(
                    recorded.revision,
                    revision.next_revision(),
                    "a stream reads gapless"
                );
                state = evolve(state, &self.decode(recorded)?);
                revision = StreamState::At(recorded.revision);
            }
            if !full {
                return Ok(Loaded {
                    stream: stream.clone(),
                    state,
                    revision,
                    erasures,
                });
            }
        }
    }

    /// Puts a state back in its cache for the next command on its stream.
    fn keep<T: Cached>(&self, loaded: Loaded<T>) {
        let erasures = self
            .caches
            .erasures
            .load(std::sync::atomic::Ordering::SeqCst);
        if loaded.erasures == erasures {
            T::cache(&self.caches).put(loaded.stream, loaded.state, loaded.revision);
        }
    }

    /// Moves the cached state of `stream` past events this service has just appended, so
    /// the next command (or read) on the stream neither rereads nor re-decodes them. Only
    /// a cached state still at `base`, the revision the events were decided on, moves:
    /// anything else in the cache (an older state, or one already past) is left to `load`,
    /// which catches up from the store. Events decided here are the events stored:
    /// sealing and opening them is the identity, so folding either gives the same state.
    fn advance<T: Cached>(
        &self,
        stream: &StreamName,
        base: StreamState,
        erasures: u64,
        events: &[DomainEvent],
        last_revision: u64,
        evolve: fn(T, &DomainEvent) -> T,
    ) {
        let erasures_now = self
            .caches
            .erasures
            .load(std::sync::atomic::Ordering::SeqCst);
        if erasures_now != erasures {
            return;
        }
        let mut entries = T::cache(&self.caches).lock();
        let Some((state, revision)) = entries.remove(stream) else {
            return;
        };
        let expected_last = base.next_revision() + events.len() as u64 - 1;
        if revision == base && last_revision == expected_last {
            let state = events.iter().fold(state, evolve);
            entries.insert(stream.clone(), (state, StreamState::At(last_revision)));
        } else {
            entries.insert(stream.clone(), (state, revision));
        }
    }

    /// Appends `events`; when there are none (the command repeats one already recorded),
    /// returns what this command id recorded in the stream before.
    async fn append_or_recall(
        &self,
        meta: CommandMeta,
        stream: &StreamName,
        revision: StreamState,
        events: &[DomainEvent],
    ) -> Result<Appended, AppendFailure> {
        if events.is_empty() {
            return self
                .recorded_by(meta, stream)
                .await
                .map(|outcome| Appended {
                    outcome,
                    last_revision: None,
                })
                .map_err(AppendFailure::Failed);
        }
        self.append(meta, stream, revision, events).await
    }

    /// The events `meta`'s command recorded in `stream`, found by their causation id.
    async fn recorded_by(
        &self,
        meta: CommandMeta,
        stream: &StreamName,
    ) -> Result<Outcome, LedgerError> {
        let mut outcome = Outcome::nothing();
        self.each_event_of(stream, |recorded| {
            if recorded.metadata.causation_id == Some(meta.command_id) {
                outcome.events.push(self.decode(recorded)?);
                outcome.position = Some(recorded.position);
                outcome.replayed = true;
            }
            Ok(true)
        })
        .await?;
        Ok(outcome)
    }

    /// Reads the whole log in order and hands every event to `apply`, personal fields
    /// replaced: it feeds the books only.
    async fn fold_all(&self, mut apply: impl FnMut(&DomainEvent)) -> Result<(), LedgerError> {
        let mut from = Position::START;
        let mut last: Option<Position> = None;
        loop {
            let page = self.store.read_all(from, PAGE_SIZE_MAX).await?;
            let mut progressed = false;
            for recorded in &page {
                if last.is_some_and(|seen| recorded.position <= seen) {
                    continue;
                }
                // The books need no personal data: read without keys, so balances
                // stay available (and fast) whatever the vault's state.
                let payload = redact_payload(recorded).map_err(LedgerError::Privacy)?;
                apply(&decode_payload(recorded, &payload)?);
                last = Some(recorded.position);
                from = recorded.position;
                progressed = true;
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    async fn append(
        &self,
        meta: CommandMeta,
        stream: &StreamName,
        revision: StreamState,
        events: &[DomainEvent],
    ) -> Result<Appended, AppendFailure> {
        if events.is_empty() {
            return Ok(Appended {
                outcome: Outcome::nothing(),
                last_revision: None,
            });
        }
        let expected = match revision {
            StreamState::NoStream => ExpectedRevision::NoStream,
            StreamState::At(last) => ExpectedRevision::Exact(last),
        };
        let metadata = EventMetadata {
            correlation_id: Some(meta.correlation_id.unwrap_or(meta.command_id)),
            causation_id: Some(meta.command_id),
        };
        let sealed: Result<Vec<_>, PrivacyError> = events
            .iter()
            .enumerate()
            .map(|(index, event)| {
                let id = event_id(meta.command_id, stream, index);
                seal_domain_event(self.vault.as_ref(), event, id, metadata)
            })
            .collect();
        let new_events =
            sealed.map_err(|error| AppendFailure::Failed(LedgerError::Privacy(error)))?;
        match self.store.append(stream, expected, new_events).await {
            Ok(appended) => Ok(Appended {
                outcome: Outcome {
                    events: events.to_vec(),
                    position: Some(appended.position),
                    replayed: false,
                },
                last_revision: Some(appended.revision),
            }),
            Err(StoreError::WrongExpectedVersion { .. }) => Err(AppendFailure::Moved),
            Err(StoreError::IdempotencyConflict { .. }) => {
                Err(AppendFailure::Failed(LedgerError::CommandIdConflict {
                    command_id: meta.command_id,
                }))
            }
            Err(error) => Err(AppendFailure::Failed(LedgerError::Store(error))),
        }
    }
}

/// The id of the `index`-th event a command appends to `stream`: derived, so the same
/// command appended again carries the same ids and the store recognises the repeat.
pub fn event_id(command_id: Uuid, stream: &StreamName, index: usize) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(b"ledger-event-id-v1\0");
    hash.update(command_id.as_bytes());
    hash.update(stream.as_str().as_bytes());
    hash.update([0]);
    hash.update((index as u64).to_le_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

impl<S> Ledger<S> {
    /// Reads a stored event as a domain event, its personal fields opened (or replaced,
    /// if erased).
    fn decode(&self, recorded: &RecordedEvent) -> Result<DomainEvent, LedgerError> {
        let opened = open_payload(self.vault.as_ref(), recorded).map_err(LedgerError::Privacy)?;
        decode_payload(recorded, &opened.payload)
    }
}

fn decode_payload(recorded: &RecordedEvent, payload: &[u8]) -> Result<DomainEvent, LedgerError> {
    upcast(
        recorded.event_type.as_str(),
        recorded.schema_version,
        payload,
    )
    .map_err(|source| LedgerError::Unreadable {
        stream: recorded.stream.clone(),
        event_id: recorded.id,
        source,
    })
}

/// The API spawns commands on a multi-threaded runtime: every command's future must be
/// `Send`. Never called; it stops compiling if a future stops being `Send`.
#[allow(dead_code, clippy::too_many_arguments)]
fn futures_are_send<S: EventStore>(
    ledger: &Ledger<S>,
    meta: CommandMeta,
    open: &OpenAccount,
    for_account: &ForAccount,
    pay: &RecordPayment,
    refund: &RefundPayment,
    review: &ReviewCommission,
    publish: &PublishPlan,
    run: &RunPayouts,
    settle: &SettlePayout,
    allocate: &AllocateDonation,
) {
    fn send<T: Send>(_: T) {}
    send(ledger.open_account(meta, open));
    send(ledger.account_command(meta, for_account));
    send(ledger.record_payment(meta, pay));
    send(ledger.refund_payment(meta, refund));
    send(ledger.review_commission(meta, review));
    send(ledger.publish_plan(meta, publish));
    send(ledger.run_payouts(meta, run));
    send(ledger.settle_payout(meta, settle));
    send(ledger.allocate_donation(meta, allocate));
    send(ledger.balances_at(run.as_of));
    send(ledger.account(open.account_id));
    send(ledger.with_account(open.account_id, |account| account.is_some()));
    send(ledger.payment(&pay.payment_id));
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::account::AccountCommand;
    use crate::domain::events::{GrantReason, PersonalData};
    use crate::domain::ids::{Fingerprint, GrantId, PersonaId, RefundId, SpendId, SubscriptionId};
    use crate::domain::payment::RefundKind;
    use crate::domain::postings::{postings, Side};
    use crate::domain::scenario::account_id as id;
    use crate::domain::scenario::{at, eur};
    use crate::domain::{Credits, Money, Period};
    use crate::store::intercept::{AppendHook, Intercepted};
    use crate::store::memory::MemoryStore;
    use crate::store::{AppendOutcome, NewEvent};

    fn meta(n: u128) -> CommandMeta {
        CommandMeta::new(Uuid::from_u128(n))
    }

    fn open(n: u8, referred_by: Option<u8>, when: &str) -> OpenAccount {
        OpenAccount {
            account_id: id(n),
            referral_code: ReferralCode::for_account(id(n)),
            referred_with_code: referred_by.map(|r| ReferralCode::for_account(id(r))),
            personal_data: PersonalData::parse(
                &format!("Person {n}"),
                &format!("p{n}@example.org"),
                "192.0.2.1",
            )
            .unwrap(),
            email_fingerprint: Fingerprint::parse(&format!("email-{n}")).unwrap(),
            ip_fingerprint: Fingerprint::parse(&format!("ip-{n}")).unwrap(),
            payment_fingerprint: None,
            opened_at: at(when),
        }
    }

    fn subscription_payment(payment: &str, payer: u8, amount: &str, when: &str) -> RecordPayment {
        RecordPayment {
            payment_id: PaymentId::parse(payment).unwrap(),
            account_id: id(payer),
            kind: PaymentKind::Subscription {
                subscription_id: SubscriptionId::parse("sub_1").unwrap(),
            },
            amount: eur(amount),
            payment_fingerprint: None,
            received_at: at(when),
        }
    }

    fn vault() -> Arc<dyn KeyVault> {
        Arc::new(crate::privacy::vault::memory::MemoryVault::new().unwrap())
    }

    fn ledger() -> Ledger<MemoryStore> {
        Ledger::new(MemoryStore::new(), LedgerConfig::default(), vault())
    }

    /// Opens accounts 1..=n, each referred by the one before.
    async fn chain(ledger: &Ledger<impl EventStore>, n: u8) {
        for k in 1..=n {
            let referrer = (k > 1).then(|| k - 1);
            ledger
                .open_account(
                    meta(1000 + u128::from(k)),
                    &open(k, referrer, "2026-09-01T00:00:00Z"),
                )
                .await
                .unwrap();
        }
    }

    async fn all_events(store: &impl EventStore) -> Vec<RecordedEvent> {
        store
            .read_all(Position::START, PAGE_SIZE_MAX)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn signup_resolves_the_code_and_records_the_referral_on_both_sides() {
        let ledger = ledger();
        chain(&ledger, 2).await;
        let account = ledger.account(id(2)).await.unwrap().unwrap();
        assert_eq!(account.referrer(), Some(id(1)));
        let referrer = ledger.account(id(1)).await.unwrap().unwrap();
        assert!(referrer.referrals.contains_key(&id(2)));
        assert_eq!(
            ledger
                .referral_code_owner(ReferralCode::for_account(id(2)))
                .await
                .unwrap(),
            Some(id(2))
        );

        let unknown = OpenAccount {
            referred_with_code: Some(ReferralCode::parse("ZZZZZZZZ").unwrap()),
            ..open(3, None, "2026-09-02T00:00:00Z")
        };
        let error = ledger.open_account(meta(3), &unknown).await.unwrap_err();
        assert_eq!(error.code(), "referrer_not_found");
        assert!(ledger.account(id(3)).await.unwrap().is_none());

        // A code someone else owns cannot be claimed.
        let taken = OpenAccount {
            referral_code: ReferralCode::for_account(id(1)),
            ..open(3, None, "2026-09-02T00:00:00Z")
        };
        assert_eq!(
            ledger
                .open_account(meta(4), &taken)
                .await
                .unwrap_err()
                .code(),
            "referral_code_taken"
        );
    }

    #[tokio::test]
    async fn a_repeated_command_records_nothing_and_a_reused_command_id_is_a_conflict() {
        let ledger = ledger();
        chain(&ledger, 2).await;
        let before = all_events(ledger.store()).await.len();
        // The same command again returns what it recorded the first time.
        let repeat = ledger
            .open_account(meta(1002), &open(2, Some(1), "2026-09-01T00:00:00Z"))
            .await
            .unwrap();
        assert!(repeat.replayed);
        let types: Vec<&str> = repeat.events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(
            types,
            ["ReferralCodeClaimed", "ReferralRecorded", "AccountOpened"]
        );
        // Under a new command id it records nothing and has nothing of its own to return.
        let fresh = ledger
            .open_account(meta(7777), &open(2, Some(1), "2026-09-01T00:00:00Z"))
            .await
            .unwrap();
        assert!(fresh.events.is_empty() && !fresh.replayed);
        assert_eq!(all_events(ledger.store()).await.len(), before);

        let grant = |grant_id: &str| ForAccount {
            account_id: id(2),
            command: AccountCommand::GrantCredits {
                grant_id: GrantId::parse(grant_id).unwrap(),
                credits: Credits::new(5).unwrap(),
                reason: GrantReason::Promotion,
                expires_at: None,
                granted_at: at("2026-09-03T00:00:00Z"),
            },
        };
        ledger
            .account_command(meta(50), &grant("g1"))
            .await
            .unwrap();
        let error = ledger
            .account_command(meta(50), &grant("g2"))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "command_id_conflict");
    }

    #[tokio::test]
    async fn a_payment_and_its_commissions_are_one_append() {
        let ledger = ledger();
        chain(&ledger, 5).await;
        let outcome = ledger
            .record_payment(
                meta(7),
                &subscription_payment("pi_1", 5, "100.00", "2026-10-01T00:00:00Z"),
            )
            .await
            .unwrap();
        let types: Vec<&str> = outcome.events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(
            types,
            [
                "PaymentReceived",
                "CommissionEarned",
                "CommissionEarned",
                "CommissionEarned"
            ]
        );
        let stream = ledger
            .store()
            .read_stream(
                &streams::payment(&PaymentId::parse("pi_1").unwrap()),
                StreamFrom::Start,
                Direction::Forward,
                10,
            )
            .await
            .unwrap();
        assert_eq!(stream.len(), 4);
        // Consecutive global positions: nothing interleaved.
        assert!(stream
            .windows(2)
            .all(|pair| pair[1].position.commit == pair[0].position.commit + 1));
        let beneficiaries: Vec<AccountId> = outcome
            .events
            .iter()
            .filter_map(|e| match e {
                DomainEvent::CommissionEarned(c) => Some(c.beneficiary),
                _ => None,
            })
            .collect();
        assert_eq!(beneficiaries, [id(4), id(3), id(2)]);
        // The same command again returns the original result; the webhook again under a
        // new command id records nothing. Other details under the same id: a conflict.
        let retried = ledger
            .record_payment(
                meta(7),
                &subscription_payment("pi_1", 5, "100.00", "2026-10-01T00:00:00Z"),
            )
            .await
            .unwrap();
        assert!(retried.replayed);
        assert_eq!(retried.events, outcome.events);
        assert_eq!(retried.position, outcome.position);
        let again = ledger
            .record_payment(
                meta(8),
                &subscription_payment("pi_1", 5, "100.00", "2026-10-01T00:00:00Z"),
            )
            .await
            .unwrap();
        assert!(again.events.is_empty());
        let other = ledger
            .record_payment(
                meta(9),
                &subscription_payment("pi_1", 5, "90.00", "2026-10-01T00:00:00Z"),
            )
            .await
            .unwrap_err();
        assert_eq!(other.code(), "payment_exists");
        let stranger = subscription_payment("pi_2", 77, "10.00", "2026-10-01T00:00:00Z");
        assert_eq!(
            ledger
                .record_payment(meta(10), &stranger)
                .await
                .unwrap_err()
                .code(),
            "account_not_found"
        );
    }

    #[tokio::test]
    async fn a_credit_pack_fills_the_wallet_and_spends_draw_it_down() {
        // The first attempt crashes after the payment append, before the purchase.
        let inner = MemoryStore::new();
        let failing = Arc::new(AtomicBool::new(true));
        let flaky: FlakyStore = Intercepted::new(
            inner.clone(),
            Flaky {
                failing: failing.clone(),
                fails: account_updates,
            },
        );
        let ledger = Ledger::new(flaky, LedgerConfig::default(), vault());
        chain(&ledger, 1).await;
        let pack = RecordPayment {
            kind: PaymentKind::CreditPack {
                credits: Credits::new(100).unwrap(),
            },
            ..subscription_payment("pi_pack", 1, "9.99", "2026-10-01T00:00:00Z")
        };
        failing.store(true, Ordering::SeqCst);
        let error = ledger.record_payment(meta(20), &pack).await.unwrap_err();
        assert_eq!(error.code(), "store_error");
        assert!(ledger.payment(&pack.payment_id).await.unwrap().is_some());
        let wallet = ledger.account(id(1)).await.unwrap().unwrap().wallet;
        assert!(wallet.balance_at(at("2026-10-02T00:00:00Z")).is_zero());
        // The retry finds the payment recorded and completes the purchase, once.
        failing.store(false, Ordering::SeqCst);
        let retried = ledger.record_payment(meta(20), &pack).await.unwrap();
        let types: Vec<&str> = retried.events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(types, ["PaymentReceived", "CreditsPurchased"]);
        assert!(retried.replayed);
        let again = ledger.record_payment(meta(20), &pack).await.unwrap();
        assert_eq!(again.events, retried.events);
        let spend = |spend_id: &str, credits: u64| ForAccount {
            account_id: id(1),
            command: AccountCommand::SpendCredits {
                spend_id: SpendId::parse(spend_id).unwrap(),
                persona: PersonaId::parse("oceanographer").unwrap(),
                credits: Credits::new(credits).unwrap(),
                spent_at: at("2026-10-02T00:00:00Z"),
            },
        };
        ledger
            .account_command(meta(21), &spend("s1", 60))
            .await
            .unwrap();
        let error = ledger
            .account_command(meta(22), &spend("s2", 41))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "insufficient_credits");
        let wallet = ledger.account(id(1)).await.unwrap().unwrap().wallet;
        assert_eq!(
            wallet.balance_at(at("2026-10-03T00:00:00Z")),
            Credits::new(40).unwrap()
        );
    }

    /// Appends that `fails` picks fail while `failing` is set: a crash between the appends
    /// of a command.
    struct Flaky {
        failing: Arc<AtomicBool>,
        fails: fn(&StreamName, &[NewEvent]) -> bool,
    }

    type FlakyStore = Intercepted<MemoryStore, Flaky>;

    /// Appends of anything but a signup to account streams.
    fn account_updates(stream: &StreamName, events: &[NewEvent]) -> bool {
        stream.as_str().starts_with("account-")
            && !events
                .iter()
                .any(|event| event.event_type.as_str() == "AccountOpened")
    }

    #[async_trait]
    impl AppendHook<MemoryStore> for Flaky {
        async fn append(
            &self,
            inner: &MemoryStore,
            stream: &StreamName,
            expected: ExpectedRevision,
            events: Vec<NewEvent>,
        ) -> Result<AppendOutcome, StoreError> {
            if self.failing.load(Ordering::SeqCst) && (self.fails)(stream, &events) {
                return Err(StoreError::Unavailable {
                    reason: "simulated crash".to_owned(),
                });
            }
            inner.append(stream, expected, events).await
        }
    }

    #[tokio::test]
    async fn a_signup_that_crashed_after_recording_the_referral_completes_on_retry() {
        let failing = Arc::new(AtomicBool::new(false));
        let flaky: FlakyStore = Intercepted::new(
            MemoryStore::new(),
            Flaky {
                failing: failing.clone(),
                fails: |_, events| {
                    events
                        .iter()
                        .any(|event| event.event_type.as_str() == "AccountOpened")
                },
            },
        );
        let ledger = Ledger::new(flaky, LedgerConfig::default(), vault());
        chain(&ledger, 1).await;
        failing.store(true, Ordering::SeqCst);
        let command = open(2, Some(1), "2026-09-02T00:00:00Z");
        assert_eq!(
            ledger
                .open_account(meta(70), &command)
                .await
                .unwrap_err()
                .code(),
            "store_error"
        );
        // The code is claimed and the referral recorded, but there is no account: nobody
        // can sign up under it, and it counts toward the referrer's velocity.
        assert_eq!(
            ledger
                .referral_code_owner(command.referral_code)
                .await
                .unwrap(),
            Some(id(2))
        );
        assert!(ledger.account(id(2)).await.unwrap().is_none());
        let orphan = open(3, Some(2), "2026-09-02T00:00:00Z");
        failing.store(false, Ordering::SeqCst);
        assert_eq!(
            ledger
                .open_account(meta(71), &orphan)
                .await
                .unwrap_err()
                .code(),
            "referrer_not_found"
        );
        let retried = ledger.open_account(meta(70), &command).await.unwrap();
        let types: Vec<&str> = retried.events.iter().map(DomainEvent::event_type).collect();
        assert_eq!(
            types,
            ["ReferralCodeClaimed", "ReferralRecorded", "AccountOpened"]
        );
        assert!(retried.replayed);
        assert_eq!(
            ledger.account(id(2)).await.unwrap().unwrap().referrer(),
            Some(id(1))
        );
        let referrer = ledger.account(id(1)).await.unwrap().unwrap();
        assert_eq!(referrer.referrals.len(), 1);
    }

    /// Lets another writer append to a stream just before our first append.
    struct Racing {
        raced: AtomicBool,
        rival: Arc<dyn Fn() -> (StreamName, NewEvent) + Send + Sync>,
    }

    #[async_trait]
    impl AppendHook<MemoryStore> for Racing {
        async fn append(
            &self,
            inner: &MemoryStore,
            stream: &StreamName,
            expected: ExpectedRevision,
            events: Vec<NewEvent>,
        ) -> Result<AppendOutcome, StoreError> {
            if !self.raced.swap(true, Ordering::SeqCst) {
                let (rival_stream, rival_event) = (self.rival)();
                inner
                    .append(&rival_stream, ExpectedRevision::Any, vec![rival_event])
                    .await?;
            }
            inner.append(stream, expected, events).await
        }
    }

    #[tokio::test]
    async fn a_writer_that_got_there_first_makes_the_command_decide_again() {
        // Account 1 is open with 10 credits; a rival spends 8 between our read and our
        // append of a 5-credit spend. The retry sees 2 left and rejects.
        let inner = MemoryStore::new();
        let vault = vault();
        let setup = Ledger::new(inner.clone(), LedgerConfig::default(), vault.clone());
        chain(&setup, 1).await;
        let grant = ForAccount {
            account_id: id(1),
            command: AccountCommand::GrantCredits {
                grant_id: GrantId::parse("g").unwrap(),
                credits: Credits::new(10).unwrap(),
                reason: GrantReason::Promotion,
                expires_at: None,
                granted_at: at("2026-09-02T00:00:00Z"),
            },
        };
        setup.account_command(meta(30), &grant).await.unwrap();
        let spend = |spend_id: &str, credits: u64| ForAccount {
            account_id: id(1),
            command: AccountCommand::SpendCredits {
                spend_id: SpendId::parse(spend_id).unwrap(),
                persona: PersonaId::parse("p").unwrap(),
                credits: Credits::new(credits).unwrap(),
                spent_at: at("2026-09-03T00:00:00Z"),
            },
        };
        let state = setup.load_account(id(1)).await.unwrap().state;
        let rival_events = account::decide(&state, &spend("rival", 8)).unwrap();
        let rival = Arc::new(move || {
            (
                streams::account(id(1)),
                rival_events[0].to_new_event(Uuid::from_u128(999), EventMetadata::default()),
            )
        });
        let racing = Ledger::new(
            Intercepted::new(
                inner,
                Racing {
                    raced: AtomicBool::new(false),
                    rival,
                },
            ),
            LedgerConfig::default(),
            vault,
        );
        let error = racing
            .account_command(meta(31), &spend("ours", 5))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "insufficient_credits");
        let ours = racing
            .account_command(meta(32), &spend("ours", 2))
            .await
            .unwrap();
        assert_eq!(ours.events.len(), 1);
        let wallet = racing.account(id(1)).await.unwrap().unwrap().wallet;
        assert!(wallet.balance_at(at("2026-09-04T00:00:00Z")).is_zero());
    }

    #[tokio::test]
    async fn two_services_on_one_store_see_each_others_writes() {
        // Each caches the account's state; each must catch up on what the other wrote.
        let store = MemoryStore::new();
        let vault = vault();
        let first = Ledger::new(store.clone(), LedgerConfig::default(), vault.clone());
        let second = Ledger::new(store, LedgerConfig::default(), vault);
        chain(&first, 1).await;
        let grant = ForAccount {
            account_id: id(1),
            command: AccountCommand::GrantCredits {
                grant_id: GrantId::parse("g").unwrap(),
                credits: Credits::new(10).unwrap(),
                reason: GrantReason::Promotion,
                expires_at: None,
                granted_at: at("2026-09-02T00:00:00Z"),
            },
        };
        first.account_command(meta(80), &grant).await.unwrap();
        let spend = |spend_id: &str, credits: u64| ForAccount {
            account_id: id(1),
            command: AccountCommand::SpendCredits {
                spend_id: SpendId::parse(spend_id).unwrap(),
                persona: PersonaId::parse("p").unwrap(),
                credits: Credits::new(credits).unwrap(),
                spent_at: at("2026-09-03T00:00:00Z"),
            },
        };
        second
            .account_command(meta(81), &spend("a", 6))
            .await
            .unwrap();
        let error = first
            .account_command(meta(82), &spend("b", 5))
            .await
            .unwrap_err();
        assert_eq!(error.code(), "insufficient_credits");
        first
            .account_command(meta(83), &spend("b", 4))
            .await
            .unwrap();
        for ledger in [&first, &second] {
            let wallet = ledger.account(id(1)).await.unwrap().unwrap().wallet;
            assert!(wallet.balance_at(at("2026-09-04T00:00:00Z")).is_zero());
        }
    }

    #[tokio::test]
    async fn the_cache_moves_past_the_services_own_appends_and_equals_a_fresh_read() {
        // Two services on one store take turns granting and spending: each one's cached
        // state must move past its own events without rereading them, catch up on the
        // other's, and always equal the state a fresh service folds from the log.
        let store = MemoryStore::new();
        let vault = vault();
        let first = Ledger::new(store.clone(), LedgerConfig::default(), vault.clone());
        let second = Ledger::new(store.clone(), LedgerConfig::default(), vault.clone());
        chain(&first, 1).await;
        let stream = streams::account(id(1));
        for step in 0..12u64 {
            let ledger = if step % 3 == 2 { &second } else { &first };
            let command = if step % 4 == 0 {
                AccountCommand::GrantCredits {
                    grant_id: GrantId::parse(&format!("g{step}")).unwrap(),
                    credits: Credits::new(5).unwrap(),
                    reason: GrantReason::Promotion,
                    expires_at: None,
                    granted_at: at("2026-09-02T00:00:00Z"),
                }
            } else {
                AccountCommand::SpendCredits {
                    spend_id: SpendId::parse(&format!("s{step}")).unwrap(),
                    persona: PersonaId::parse("p").unwrap(),
                    credits: Credits::new(1).unwrap(),
                    spent_at: at("2026-09-03T00:00:00Z"),
                }
            };
            let command = ForAccount {
                account_id: id(1),
                command,
            };
            ledger
                .account_command(meta(200 + u128::from(step)), &command)
                .await
                .unwrap();
            let last = store
                .read_stream(&stream, StreamFrom::End, Direction::Backward, 1)
                .await
                .unwrap()[0]
                .revision;
            let cached = AccountState::cache(&ledger.caches)
                .lock()
                .get(&stream)
                .map(|(_, revision)| *revision);
            assert_eq!(cached, Some(StreamState::At(last)), "step {step}");
            let fresh = Ledger::new(store.clone(), LedgerConfig::default(), vault.clone());
            let expected = fresh.account(id(1)).await.unwrap();
            assert!(expected.is_some());
            for service in [&first, &second] {
                assert_eq!(
                    service.account(id(1)).await.unwrap(),
                    expected,
                    "step {step}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_spend_answers_again_with_the_balance_right_after_it() {
        let ledger = ledger();
        chain(&ledger, 1).await;
        let command = |n: u128, command: AccountCommand| {
            let ledger = &ledger;
            async move {
                ledger
                    .account_command(
                        meta(n),
                        &ForAccount {
                            account_id: id(1),
                            command,
                        },
                    )
                    .await
                    .unwrap()
            }
        };
        command(
            300,
            AccountCommand::GrantCredits {
                grant_id: GrantId::parse("g").unwrap(),
                credits: Credits::new(10).unwrap(),
                reason: GrantReason::Promotion,
                expires_at: None,
                granted_at: at("2026-09-02T00:00:00Z"),
            },
        )
        .await;
        for (n, spend_id, credits) in [(301, "s1", 3), (302, "s2", 2)] {
            command(
                n,
                AccountCommand::SpendCredits {
                    spend_id: SpendId::parse(spend_id).unwrap(),
                    persona: PersonaId::parse("p").unwrap(),
                    credits: Credits::new(credits).unwrap(),
                    spent_at: at("2026-09-03T00:00:00Z"),
                },
            )
            .await;
        }
        let after = |spend_id: &str| {
            let spend_id = SpendId::parse(spend_id).unwrap();
            let ledger = &ledger;
            async move {
                ledger
                    .balance_after_spend(id(1), &spend_id)
                    .await
                    .unwrap()
                    .map(|balance| balance.units())
            }
        };
        assert_eq!(after("s1").await, Some(7));
        assert_eq!(after("s2").await, Some(5));
        assert_eq!(after("never").await, None);
    }

    #[tokio::test]
    async fn payouts_and_donations_run_from_the_log() {
        let ledger = ledger();
        chain(&ledger, 2).await;
        ledger
            .record_payment(
                meta(40),
                &subscription_payment("pi_1", 2, "400.00", "2026-09-10T00:00:00Z"),
            )
            .await
            .unwrap();
        let run = RunPayouts {
            period: Period::parse("2026-10").unwrap(),
            as_of: at("2026-11-01T00:00:00Z"),
            run_at: at("2026-11-01T01:00:00Z"),
        };
        let outcome = ledger.run_payouts(meta(41), &run).await.unwrap();
        assert_eq!(outcome.events.len(), 2);
        assert!(ledger
            .run_payouts(meta(42), &run)
            .await
            .unwrap()
            .events
            .is_empty());
        let replayed = ledger.run_payouts(meta(41), &run).await.unwrap();
        assert_eq!(replayed.events, outcome.events);
        let balances = ledger
            .balances_at(at("2026-11-02T00:00:00Z"))
            .await
            .unwrap();
        assert!(balances[&id(1)].payable.is_zero());
        let allocate = AllocateDonation {
            period: Period::parse("2026-09").unwrap(),
            organisation: crate::domain::ids::OrganisationId::parse("ocean-cleanup").unwrap(),
            share: crate::domain::Rate::parse("0.01").unwrap(),
            allocated_at: at("2026-10-01T00:00:00Z"),
        };
        let outcome = ledger.allocate_donation(meta(43), &allocate).await.unwrap();
        let [DomainEvent::DonationAllocated(allocated)] = &outcome.events[..] else {
            panic!("{outcome:?}")
        };
        assert_eq!(allocated.amount, eur("4.00"));
    }

    /// The worked example of docs/DOMAIN.md, run through the service; the expected numbers
    /// are read from the document.
    #[tokio::test]
    async fn worked_example() {
        let doc =
            std::fs::read_to_string(format!("{}/../docs/DOMAIN.md", env!("CARGO_MANIFEST_DIR")))
                .unwrap();
        let start = doc.find("<!-- worked-example:begin -->").unwrap();
        let end = doc.find("<!-- worked-example:end -->").unwrap();
        let expected: BTreeSet<(String, String, String)> = doc[start..end]
            .lines()
            .filter(|line| line.starts_with("| ") && !line.starts_with("| fact"))
            .map(|line| {
                let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
                (
                    cells[0].to_owned(),
                    cells[1].to_owned(),
                    eur(cells[2]).to_string(),
                )
            })
            .collect();
        assert_eq!(expected.len(), 18, "the example table lost rows");

        let ledger = ledger();
        let names = ["A", "B", "C", "D", "E"];
        let name_of = |account: AccountId| {
            names[usize::from(account.as_uuid().as_bytes()[15]) - 1].to_owned()
        };
        chain(&ledger, 5).await;
        ledger
            .record_payment(
                meta(60),
                &subscription_payment("pi_e", 5, "999.90", "2026-09-20T10:00:00Z"),
            )
            .await
            .unwrap();
        let refund = RefundPayment {
            payment_id: PaymentId::parse("pi_e").unwrap(),
            refund_id: RefundId::parse("re_e").unwrap(),
            kind: RefundKind::Refund,
            amount: eur("333.30"),
            refunded_at: at("2026-10-10T00:00:00Z"),
        };
        ledger.refund_payment(meta(61), &refund).await.unwrap();
        let run = RunPayouts {
            period: Period::parse("2026-10").unwrap(),
            as_of: at("2026-11-01T00:00:00Z"),
            run_at: at("2026-11-01T00:00:00Z"),
        };
        ledger.run_payouts(meta(62), &run).await.unwrap();

        let mut actual = BTreeSet::new();
        let mut trial: BTreeMap<String, Money> = BTreeMap::new();
        for recorded in all_events(ledger.store()).await {
            let event = ledger.decode(&recorded).unwrap();
            match &event {
                DomainEvent::CommissionEarned(c) => {
                    actual.insert((
                        "commission_earned".to_owned(),
                        name_of(c.beneficiary),
                        c.amount.to_string(),
                    ));
                }
                DomainEvent::CommissionReversed(c) => {
                    actual.insert((
                        "commission_reversed".to_owned(),
                        name_of(c.beneficiary),
                        c.amount.to_string(),
                    ));
                }
                DomainEvent::PayoutScheduled(p) => {
                    actual.insert((
                        "payout_scheduled".to_owned(),
                        name_of(p.affiliate),
                        p.amount.to_string(),
                    ));
                }
                _ => {}
            }
            for posting in postings(&event) {
                let account = match posting.account.affiliate {
                    Some(affiliate) => {
                        format!("{}:{}", posting.account.kind.name(), name_of(affiliate))
                    }
                    None => posting.account.kind.name().to_owned(),
                };
                let signed = match posting.side {
                    Side::Debit => posting.amount,
                    Side::Credit => posting.amount.negated(),
                };
                let balance = trial.entry(account).or_insert(Money::zero(Currency::EUR));
                *balance = balance.checked_add(&signed).unwrap();
            }
        }
        for (account, balance) in &trial {
            if !balance.is_zero() {
                actual.insert(("balance".to_owned(), account.clone(), balance.to_string()));
            }
        }
        let total = trial.values().fold(Money::zero(Currency::EUR), |sum, b| {
            sum.checked_add(b).unwrap()
        });
        assert!(total.is_zero(), "the trial balance sums to zero");
        for (affiliate, balance) in ledger
            .balances_at(at("2026-11-01T00:00:00Z"))
            .await
            .unwrap()
        {
            actual.insert((
                "payable_after_run".to_owned(),
                name_of(affiliate),
                balance.payable.to_string(),
            ));
        }
        assert_eq!(actual, expected);
    }
}
