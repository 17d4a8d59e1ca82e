//! Where the simulated commands go: through the domain service into a store (the fast
//! path), or as HTTP requests to a running server. Both answer with the events the
//! ledger recorded, which the model observes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

use ledger::domain::events::DomainEvent;
use ledger::privacy::retention::RetentionPolicy;
use ledger::service::{CommandMeta, Ledger, LedgerError, LogBooks};
use ledger::store::file::Clock;
use ledger::store::EventStore;

use super::model::{SimCommand, Step};

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The ledger refused the command by its rules.
    #[error("{command} was rejected: {code}: {message}")]
    Rejected {
        command: &'static str,
        code: String,
        message: String,
    },
    /// The ledger or the transport failed.
    #[error("{command} failed: {message}")]
    Failed {
        command: &'static str,
        message: String,
    },
}

impl SendError {
    /// The rejection code, for rejections.
    pub fn rejection_code(&self) -> Option<&str> {
        match self {
            SendError::Rejected { code, .. } => Some(code),
            SendError::Failed { .. } => None,
        }
    }
}

/// A destination for simulated commands.
#[async_trait]
pub trait Target: Send + Sync {
    /// Sends one command; answers with the events it recorded.
    async fn send(&self, step: &Step) -> Result<Vec<DomainEvent>, SendError>;

    /// Waits for whatever is still in flight; the first failure among it, if any.
    async fn finish(&self) -> Result<(), SendError> {
        Ok(())
    }

    /// Requests completed, for a target that sends requests.
    fn requests(&self) -> Option<u64> {
        None
    }
}

/// The simulated time, which the file store reads as its `recorded_at` clock: the log of
/// a simulation is then the same bytes on every run.
#[derive(Clone, Debug)]
pub struct SimClock {
    micros: Arc<AtomicI64>,
}

impl SimClock {
    pub fn new(start: DateTime<Utc>) -> SimClock {
        SimClock {
            micros: Arc::new(AtomicI64::new(start.timestamp_micros())),
        }
    }

    pub fn set(&self, at: DateTime<Utc>) {
        self.micros.store(at.timestamp_micros(), Ordering::Release);
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc.timestamp_micros(self.micros.load(Ordering::Acquire))
            .single()
            .expect("the simulated clock holds a valid instant")
    }

    /// The clock as a store takes it.
    pub fn as_store_clock(&self) -> Clock {
        let clock = self.clone();
        Arc::new(move || clock.now())
    }
}

/// Commands through the domain service. With a clock (one the store reads), the clock is
/// set to each command's simulated instant first, so `recorded_at` is simulated time too.
///
/// Payout runs, donations and erasures decide on books this target keeps and catches up
/// from where they stood ([`LogBooks`]), not on a fold of the whole log each time: the
/// simulator is the log's only writer and runs them every month, so the whole-log folds
/// made a large simulation quadratic.
pub struct LedgerTarget<'a, S> {
    ledger: &'a Ledger<S>,
    clock: Option<SimClock>,
    books: tokio::sync::Mutex<LogBooks>,
}

impl<'a, S: EventStore> LedgerTarget<'a, S> {
    pub fn new(ledger: &'a Ledger<S>, clock: Option<SimClock>) -> LedgerTarget<'a, S> {
        let books = tokio::sync::Mutex::new(LogBooks::new(ledger.config().currency));
        LedgerTarget {
            ledger,
            clock,
            books,
        }
    }
}

#[async_trait]
impl<S: EventStore> Target for LedgerTarget<'_, S> {
    async fn send(&self, step: &Step) -> Result<Vec<DomainEvent>, SendError> {
        if let Some(clock) = &self.clock {
            clock.set(step.at);
        }
        let meta = CommandMeta::new(step.command_id);
        let ledger = self.ledger;
        let outcome = match &step.command {
            SimCommand::OpenAccount(command) => ledger.open_account(meta, command).await,
            SimCommand::Account(command) => ledger.account_command(meta, command).await,
            SimCommand::RecordPayment(command) => ledger.record_payment(meta, command).await,
            SimCommand::RefundPayment(command) => ledger.refund_payment(meta, command).await,
            SimCommand::ReviewCommission(command) => ledger.review_commission(meta, command).await,
            SimCommand::PublishPlan(command) => ledger.publish_plan(meta, command).await,
            SimCommand::RunPayouts(command) => {
                let mut books = self.books.lock().await;
                ledger.run_payouts_with(meta, command, &mut books).await
            }
            SimCommand::SettlePayout(command) => ledger.settle_payout(meta, command).await,
            SimCommand::AllocateDonation(command) => {
                let mut books = self.books.lock().await;
                ledger
                    .allocate_donation_with(meta, command, &mut books)
                    .await
            }
            SimCommand::RequestErasure {
                subject,
                request_id,
            } => {
                ledger
                    .request_erasure(meta, *subject, *request_id, step.at)
                    .await
            }
            SimCommand::EraseSubject {
                subject,
                request_id,
            } => {
                let policy = RetentionPolicy::default();
                let mut books = self.books.lock().await;
                ledger
                    .erase_subject_with(meta, *subject, *request_id, step.at, &policy, &mut books)
                    .await
            }
        };
        let command = step.command.name();
        match outcome {
            Ok(outcome) => {
                // Fresh command ids every time: nothing the simulator sends is a repeat.
                assert!(!outcome.replayed, "{command} was answered as a replay");
                Ok(outcome.events)
            }
            Err(LedgerError::Rejected(rejection)) => Err(SendError::Rejected {
                command,
                code: rejection.code().to_owned(),
                message: rejection.to_string(),
            }),
            Err(error) => Err(SendError::Failed {
                command,
                message: error.to_string(),
            }),
        }
    }
}
