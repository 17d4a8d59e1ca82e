//! `simulate`: a deterministic, realistic history for demos, fixtures and benchmarks.
//!
//! [`model`] decides what members and finance do (seeded, so the same options give the
//! same commands); [`writer`] sends each command through the domain service into a store,
//! or to a running server; [`run`] ties them together and returns a [`Summary`] of what
//! the ledger recorded. [`summarize_log`] computes the same summary from the log alone,
//! decoding its events, so the summary is a checkable claim about the log, not a report
//! of what the simulator meant to do.
//!
//! Simulated time drives the store's clock (`recorded_at`), so two runs with the same
//! options write byte-identical logs.

pub mod demo;
pub mod http;
pub mod model;
pub mod progress;
pub mod writer;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use ledger::domain::events::DomainEvent;
use ledger::domain::{Currency, Money};
use ledger::privacy::domain::decode_redacted;
use ledger::privacy::{DirVault, KeyVault, MasterKey, PrivacyError};
use ledger::service::{Ledger, LedgerConfig};
use ledger::store::file::{FileStore, FileStoreOptions};
use ledger::store::{Durability, EventStore, Position, StoreError, PAGE_SIZE_MAX};

use model::{Model, ModelConfig, ModelStats, SimCommand};
use writer::{LedgerTarget, SendError, SimClock, Target};

/// Commands between two progress reports.
const PROGRESS_EVERY_COMMANDS: u64 = 2_000;

/// What to simulate and where to write it.
#[derive(Clone, Debug)]
pub struct SimulateOptions {
    pub accounts: u32,
    pub months: u32,
    pub seed: u64,
    pub destination: Destination,
    /// The master key of the personal-data vault (`DATA/vault`); when not given,
    /// `DATA/master.key`, generated on first use (the server's convention).
    pub master_key_file: Option<PathBuf>,
    /// The embedded log's segment size (`DataDir` only); the store's default when not
    /// given. Small segments give tests logs of several segments.
    pub segment_size_max: Option<u64>,
}

/// Where the commands go.
#[derive(Clone, Debug)]
pub enum Destination {
    /// Through the domain service into the embedded store in this directory (which must
    /// hold no events yet), with buffered writes and one sync at the end.
    DataDir(PathBuf),
    /// As HTTP requests to a running server (whose log should hold no events yet), each
    /// command decided first by a shadow ledger in memory (see [`http`]).
    Http(http::HttpOptions),
}

/// How far a simulation has come.
#[derive(Clone, Debug)]
pub struct Progress {
    pub commands: u64,
    /// Requests the server answered, when simulating over HTTP.
    pub requests: Option<u64>,
    pub events: u64,
    pub accounts: u64,
    pub accounts_total: u64,
    pub simulated_at: DateTime<Utc>,
    pub elapsed: Duration,
    pub done: bool,
}

/// What a run produced: the summary of the log, and what the model did besides.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimulationReport {
    pub summary: Summary,
    pub stats: ModelStats,
    pub commands: u64,
    #[serde(skip)]
    pub elapsed: Duration,
}

/// Why a simulation stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error(
        "{path} already holds events; simulate into an empty data directory (the \
         simulated accounts would collide with a previous run's)"
    )]
    NotEmpty { path: PathBuf },
    #[error("the ledger refused a simulated command at {at}: {source}")]
    Command {
        at: DateTime<Utc>,
        #[source]
        source: SendError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("an event in the log cannot be read: {0}")]
    Unreadable(#[from] PrivacyError),
    #[error("the personal-data vault cannot be opened: {0}")]
    Vault(String),
}

/// Totals of the log, by count and, for money, per currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub events: u64,
    pub accounts: u64,
    pub referred_accounts: u64,
    pub flagged_referrals: u64,
    pub subscriptions_started: u64,
    pub subscriptions_cancelled: u64,
    pub payments: u64,
    pub refunds: u64,
    pub chargebacks: u64,
    pub commissions: u64,
    pub commissions_held_for_review: u64,
    pub commissions_released: u64,
    pub commissions_forfeited: u64,
    pub payout_runs: u64,
    pub payouts: u64,
    pub payouts_sent: u64,
    pub payouts_failed: u64,
    pub donations: u64,
    pub credits_granted: u64,
    pub credits_purchased: u64,
    pub credits_spent: u64,
    pub credits_expired: u64,
    pub erasure_requests: u64,
    pub subjects_erased: u64,
    /// Money totals by currency code.
    pub money: BTreeMap<String, MoneyTotals>,
}

/// Money totals of one currency.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoneyTotals {
    /// Payments received (gross).
    pub revenue: Money,
    /// Refunds and chargebacks.
    pub refunded: Money,
    pub commissions_earned: Money,
    pub commissions_reversed: Money,
    pub commissions_forfeited: Money,
    pub payouts_scheduled: Money,
    pub payouts_sent: Money,
    pub payouts_failed: Money,
    pub donations: Money,
}

impl MoneyTotals {
    fn zero(currency: Currency) -> MoneyTotals {
        let zero = Money::zero(currency);
        MoneyTotals {
            revenue: zero,
            refunded: zero,
            commissions_earned: zero,
            commissions_reversed: zero,
            commissions_forfeited: zero,
            payouts_scheduled: zero,
            payouts_sent: zero,
            payouts_failed: zero,
            donations: zero,
        }
    }

    /// Revenue less refunds and chargebacks.
    pub fn net_revenue(&self) -> Money {
        sub(&self.revenue, &self.refunded)
    }

    /// Commissions earned less clawbacks and forfeits: what the programme cost.
    pub fn commissions_net(&self) -> Money {
        sub(
            &sub(&self.commissions_earned, &self.commissions_reversed),
            &self.commissions_forfeited,
        )
    }
}

fn add(total: &mut Money, amount: &Money) {
    *total = total
        .checked_add(amount)
        .expect("totals are kept per currency and far below the amount limit");
}

fn sub(left: &Money, right: &Money) -> Money {
    left.checked_sub(right)
        .expect("totals are kept per currency and far below the amount limit")
}

impl Summary {
    /// Counts one event of the log.
    pub fn record(&mut self, event: &DomainEvent) {
        self.events += 1;
        match event {
            DomainEvent::AccountOpened(opened) => {
                self.accounts += 1;
                if opened.referrer.is_some() {
                    self.referred_accounts += 1;
                }
                if !opened.fraud_flags.is_empty() {
                    self.flagged_referrals += 1;
                }
            }
            DomainEvent::SubscriptionStarted(_) => self.subscriptions_started += 1,
            DomainEvent::SubscriptionCancelled(_) => self.subscriptions_cancelled += 1,
            DomainEvent::CreditsGranted(granted) => self.credits_granted += granted.credits.units(),
            DomainEvent::CreditsPurchased(purchased) => {
                self.credits_purchased += purchased.credits.units()
            }
            DomainEvent::CreditsSpent(spent) => self.credits_spent += spent.credits.units(),
            DomainEvent::CreditsExpired(expired) => self.credits_expired += expired.credits.units(),
            // A capture is a spend; a reservation, a void or an expiry moves nothing for good.
            DomainEvent::ReservationCaptured(captured) => {
                self.credits_spent += captured.credits.units()
            }
            DomainEvent::CreditsReserved(_)
            | DomainEvent::ReservationVoided(_)
            | DomainEvent::ReservationExpired(_) => {}
            DomainEvent::PaymentReceived(received) => {
                self.payments += 1;
                add(&mut self.totals(&received.amount).revenue, &received.amount);
            }
            DomainEvent::PaymentRefunded(refunded) => {
                self.refunds += 1;
                add(
                    &mut self.totals(&refunded.amount).refunded,
                    &refunded.amount,
                );
            }
            DomainEvent::PaymentChargedBack(charged) => {
                self.chargebacks += 1;
                add(&mut self.totals(&charged.amount).refunded, &charged.amount);
            }
            DomainEvent::CommissionEarned(earned) => {
                self.commissions += 1;
                if earned.held_for_review {
                    self.commissions_held_for_review += 1;
                }
                add(
                    &mut self.totals(&earned.amount).commissions_earned,
                    &earned.amount,
                );
            }
            DomainEvent::CommissionReversed(reversed) => add(
                &mut self.totals(&reversed.amount).commissions_reversed,
                &reversed.amount,
            ),
            DomainEvent::CommissionReleased(_) => self.commissions_released += 1,
            DomainEvent::CommissionForfeited(forfeited) => {
                self.commissions_forfeited += 1;
                add(
                    &mut self.totals(&forfeited.amount).commissions_forfeited,
                    &forfeited.amount,
                );
            }
            DomainEvent::PayoutScheduled(scheduled) => {
                self.payouts += 1;
                add(
                    &mut self.totals(&scheduled.amount).payouts_scheduled,
                    &scheduled.amount,
                );
            }
            DomainEvent::PayoutSent(sent) => {
                self.payouts_sent += 1;
                add(&mut self.totals(&sent.amount).payouts_sent, &sent.amount);
            }
            DomainEvent::PayoutFailed(failed) => {
                self.payouts_failed += 1;
                add(
                    &mut self.totals(&failed.amount).payouts_failed,
                    &failed.amount,
                );
            }
            DomainEvent::PayoutRunCompleted(_) => self.payout_runs += 1,
            DomainEvent::DonationAllocated(donation) => {
                self.donations += 1;
                add(
                    &mut self.totals(&donation.amount).donations,
                    &donation.amount,
                );
            }
            DomainEvent::ErasureRequested(_) => self.erasure_requests += 1,
            DomainEvent::SubjectErased(_) => self.subjects_erased += 1,
            DomainEvent::ReferralRecorded(_)
            | DomainEvent::ReferralCodeClaimed(_)
            | DomainEvent::PersonalDataCorrected(_)
            | DomainEvent::CommissionPlanPublished(_)
            | DomainEvent::RetainedDataShredded(_)
            | DomainEvent::LegalHoldPlaced(_)
            | DomainEvent::LegalHoldLifted(_)
            | DomainEvent::ProcessingRestricted(_)
            | DomainEvent::ProcessingRestrictionLifted(_) => {}
        }
    }

    fn totals(&mut self, amount: &Money) -> &mut MoneyTotals {
        let currency = amount.currency();
        self.money
            .entry(currency.code().to_owned())
            .or_insert_with(|| MoneyTotals::zero(currency))
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "events                  {}", self.events)?;
        writeln!(
            f,
            "accounts                {} ({} referred, {} referrals flagged)",
            self.accounts, self.referred_accounts, self.flagged_referrals
        )?;
        writeln!(
            f,
            "subscriptions           {} started, {} cancelled",
            self.subscriptions_started, self.subscriptions_cancelled
        )?;
        writeln!(
            f,
            "payments                {} ({} refunds, {} chargebacks)",
            self.payments, self.refunds, self.chargebacks
        )?;
        writeln!(
            f,
            "commissions             {} ({} held for review: {} released, {} forfeited)",
            self.commissions,
            self.commissions_held_for_review,
            self.commissions_released,
            self.commissions_forfeited
        )?;
        writeln!(
            f,
            "payouts                 {} in {} runs ({} sent, {} failed)",
            self.payouts, self.payout_runs, self.payouts_sent, self.payouts_failed
        )?;
        writeln!(
            f,
            "credits                 {} granted, {} purchased, {} spent, {} expired",
            self.credits_granted, self.credits_purchased, self.credits_spent, self.credits_expired
        )?;
        writeln!(
            f,
            "erasure                 {} requested, {} subjects erased",
            self.erasure_requests, self.subjects_erased
        )?;
        for (currency, totals) in &self.money {
            writeln!(f, "{currency}:")?;
            writeln!(
                f,
                "  revenue               {} (net {} after {} refunded)",
                totals.revenue,
                totals.net_revenue(),
                totals.refunded
            )?;
            writeln!(
                f,
                "  commissions           {} earned, {} clawed back, {} forfeited, {} net",
                totals.commissions_earned,
                totals.commissions_reversed,
                totals.commissions_forfeited,
                totals.commissions_net()
            )?;
            writeln!(
                f,
                "  payouts               {} scheduled, {} sent, {} failed",
                totals.payouts_scheduled, totals.payouts_sent, totals.payouts_failed
            )?;
            writeln!(f, "  donations             {}", totals.donations)?;
        }
        Ok(())
    }
}

/// Runs a simulation to its destination. `progress` is called every few thousand
/// commands and once at the end.
pub async fn run(
    options: SimulateOptions,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<SimulationReport, SimulateError> {
    let config = model_config(&options)?;
    match options.destination {
        Destination::DataDir(dir) => {
            let vault = open_vault(&dir, options.master_key_file.as_deref())?;
            let segment_size_max = options
                .segment_size_max
                .unwrap_or(ledger::store::file::format::SEGMENT_SIZE_MAX_DEFAULT);
            simulate_into_dir(&dir, config, vault, segment_size_max, progress).await
        }
        Destination::Http(http) => simulate_over_http(&http, config, progress).await,
    }
}

/// Simulates against a running server: every command is decided by a shadow ledger in
/// memory (whose events the model observes and the summary counts), then sent as its
/// request. The server's own log should then summarize the same (see [`http`]).
pub async fn simulate_over_http(
    options: &http::HttpOptions,
    config: ModelConfig,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<SimulationReport, SimulateError> {
    options.validate().map_err(SimulateError::InvalidOptions)?;
    let clock = SimClock::new(config.start);
    let store = ledger::store::memory::MemoryStore::new();
    let vault: Arc<dyn KeyVault> = Arc::new(
        ledger::privacy::vault::memory::MemoryVault::new()
            .map_err(|error| SimulateError::Vault(error.to_string()))?,
    );
    let ledger_config = LedgerConfig {
        currency: config.currency,
        ..LedgerConfig::default()
    };
    let ledger =
        Ledger::new(store, ledger_config, vault).with_cached_accounts_max(config.accounts as usize);
    let shadow = LedgerTarget::new(&ledger, Some(clock));
    let target = http::HttpTarget::new(shadow, options).map_err(SimulateError::InvalidOptions)?;
    let report = drive(Model::new(config), &target, progress).await;
    if report.is_err() {
        // Nothing is left running against the server when the error is reported.
        let _ = target.finish().await;
    }
    let report = report?;
    eprintln!(
        "simulate: {} requests answered, {} retried",
        target.requests(),
        target.retries()
    );
    Ok(report)
}

/// Simulates into the embedded store in `dir` (which must hold no events), sealing
/// personal data with `vault`: writes buffered, then syncs and closes the store, whatever
/// happened. Benchmarks pass an in-memory vault, so that they measure the log rather than
/// one synced key file per account.
pub async fn simulate_into_dir(
    dir: &Path,
    config: ModelConfig,
    vault: Arc<dyn KeyVault>,
    segment_size_max: u64,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<SimulationReport, SimulateError> {
    let clock = SimClock::new(config.start);
    let store = FileStore::open(
        log_dir(dir),
        FileStoreOptions {
            durability: Durability::Buffered,
            clock: clock.as_store_clock(),
            segment_size_max,
            ..FileStoreOptions::default()
        },
    )?;
    if store.head().await?.is_some() {
        store.close().await?;
        return Err(SimulateError::NotEmpty {
            path: dir.to_path_buf(),
        });
    }
    let ledger_config = LedgerConfig {
        currency: config.currency,
        ..LedgerConfig::default()
    };
    // Every account's state stays cached: the simulator comes back to each account for
    // the whole history, and refolding (and decrypting) it on every command made large
    // simulations several times slower per event.
    let ledger = Ledger::new(store.clone(), ledger_config, vault)
        .with_cached_accounts_max(config.accounts as usize);
    let target = LedgerTarget::new(&ledger, Some(clock));
    let result = drive(Model::new(config), &target, progress).await;
    // Whatever happened, what was written is made durable and the lock released.
    let flushed = store.flush().await;
    let closed = store.close().await;
    let report = result?;
    flushed?;
    closed?;
    Ok(report)
}

/// The embedded log of the data directory `dir`: `dir/log`, where `serve`, `verify` and
/// the other subcommands look for it.
pub fn log_dir(dir: &Path) -> PathBuf {
    dir.join(crate::store::LOG_DIR_NAME)
}

/// The folder of the key vault and the file of a generated master key, in the data
/// directory: the same as `serve`'s, so the server reads what the simulation sealed.
pub const VAULT_DIR_NAME: &str = "vault";
pub const MASTER_KEY_FILE_NAME: &str = "master.key";

/// The vault of the data directory `dir`, under the given master key or the one in
/// `dir/master.key` (generated there, readable by the owner only, if missing).
fn open_vault(
    dir: &Path,
    master_key_file: Option<&Path>,
) -> Result<Arc<dyn KeyVault>, SimulateError> {
    let vault_error = |error: PrivacyError| SimulateError::Vault(error.to_string());
    std::fs::create_dir_all(dir).map_err(|error| {
        SimulateError::Vault(format!("cannot create {}: {error}", dir.display()))
    })?;
    let master = match master_key_file {
        Some(path) => MasterKey::from_file(path).map_err(vault_error)?,
        None => {
            let path = dir.join(MASTER_KEY_FILE_NAME);
            if path.exists() {
                MasterKey::from_file(&path).map_err(vault_error)?
            } else {
                let master = MasterKey::generate().map_err(vault_error)?;
                write_private(&path, master.to_base64().as_bytes()).map_err(|error| {
                    SimulateError::Vault(format!("cannot write {}: {error}", path.display()))
                })?;
                master
            }
        }
    };
    let vault = DirVault::open(dir.join(VAULT_DIR_NAME), master).map_err(vault_error)?;
    Ok(Arc::new(vault))
}

/// Writes a new file readable and writable by its owner only, and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

pub fn model_config(options: &SimulateOptions) -> Result<ModelConfig, SimulateError> {
    if options.accounts == 0 || options.accounts > model::ACCOUNTS_MAX {
        return Err(SimulateError::InvalidOptions(format!(
            "--accounts must be 1 to {}, got {}",
            model::ACCOUNTS_MAX,
            options.accounts
        )));
    }
    if options.months == 0 || options.months > model::MONTHS_MAX {
        return Err(SimulateError::InvalidOptions(format!(
            "--months must be 1 to {}, got {}",
            model::MONTHS_MAX,
            options.months
        )));
    }
    Ok(ModelConfig::new(
        options.accounts,
        options.months,
        options.seed,
    ))
}

/// Runs the model against a target until the history is complete. The summary is
/// folded from the events the target says it recorded.
pub async fn drive(
    mut model: Model,
    target: &dyn Target,
    progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<SimulationReport, SimulateError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut commands = 0u64;
    let accounts_total = u64::from(model.config().accounts);
    let mut simulated_at = model.config().start;
    while let Some(step) = model.next_step() {
        simulated_at = step.at;
        match target.send(&step).await {
            Ok(events) => {
                for event in &events {
                    summary.record(event);
                }
                model.observe(&step, &events);
            }
            Err(error)
                if matches!(step.command, SimCommand::RunPayouts(_))
                    && error.rejection_code() == Some("too_many_payouts") =>
            {
                model.payout_run_refused();
            }
            Err(source) => {
                return Err(SimulateError::Command {
                    at: step.at,
                    source,
                })
            }
        }
        commands += 1;
        if commands.is_multiple_of(PROGRESS_EVERY_COMMANDS) {
            progress(&Progress {
                commands,
                requests: target.requests(),
                events: summary.events,
                accounts: model.accounts_opened(),
                accounts_total,
                simulated_at,
                elapsed: started.elapsed(),
                done: false,
            });
        }
    }
    // What is still in flight must land before the run counts as done.
    target
        .finish()
        .await
        .map_err(|source| SimulateError::Command {
            at: simulated_at,
            source,
        })?;
    progress(&Progress {
        commands,
        requests: target.requests(),
        events: summary.events,
        accounts: model.accounts_opened(),
        accounts_total,
        simulated_at,
        elapsed: started.elapsed(),
        done: true,
    });
    Ok(SimulationReport {
        summary,
        stats: model.stats().clone(),
        commands,
        elapsed: started.elapsed(),
    })
}

/// The summary of a log, from its events alone: every event read in global order and
/// decoded, nothing taken from the simulator.
pub async fn summarize_log<S: EventStore + ?Sized>(store: &S) -> Result<Summary, SimulateError> {
    let mut summary = Summary::default();
    for_each_event(store, |event| summary.record(event)).await?;
    Ok(summary)
}

/// Reads the whole log in global order and hands every decoded event to `apply`.
pub async fn for_each_event<S: EventStore + ?Sized>(
    store: &S,
    mut apply: impl FnMut(&DomainEvent),
) -> Result<(), SimulateError> {
    let mut from = Position::START;
    let mut last: Option<Position> = None;
    loop {
        let page = store.read_all(from, PAGE_SIZE_MAX).await?;
        let mut progressed = false;
        for recorded in &page {
            // `from` is inclusive: the first event of a later page is the last one seen.
            if last.is_some_and(|seen| recorded.position <= seen) {
                continue;
            }
            // Redacted: the summary holds no personal data, so no keys are needed, and
            // the log of an erased subject reads the same as any other.
            let event = decode_redacted(recorded)?;
            apply(&event);
            last = Some(recorded.position);
            from = recorded.position;
            progressed = true;
        }
        if !progressed {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
