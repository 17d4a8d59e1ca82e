//! The reservation sweeper: records the expiry of credit reservations nobody captured or
//! voided in time.
//!
//! Why: a reservation past its expiry already counts as released for every reader and
//! every command (the ledger judges expiry by the clock, and the next credit command on
//! the account records it), so the sweeper changes no balance anyone sees. It makes the
//! log say so without waiting for that next command: the wallets view and the auditors
//! see `ReservationExpired` within one sweep of the expiry. The event is dated at the
//! reservation's own `expires_at`, so the sweeper and a command record the same fact and
//! only the first one does.
//!
//! Which accounts: the report views (caught up with the log before each sweep, so with
//! every instance's writes) list the accounts with reservations due. Each account's
//! expiry is one command, queued behind the other commands on its account.
//!
//! With several instances on one store each sweeps; the account stream's expected
//! revision lets only the first record an expiry, the others then find nothing to do.
//!
//! Limits, known: at most [`SWEEP_ACCOUNTS_MAX`] accounts per sweep (the rest wait for
//! the next); a sweep that fails for one account logs it and goes on with the others.

use chrono::{DateTime, Utc};

use ledger::domain::account::{AccountCommand, ForAccount};
use ledger::domain::events::DomainEvent;
use ledger::service::CommandMeta;

use crate::http::accounts::stream_lock;
use crate::http::error::ApiError;
use crate::http::events::rfc3339;
use crate::http::AppState;
use crate::idempotency::CommandKey;

/// Time between two sweeps of the server.
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Most accounts whose reservations one sweep expires.
pub const SWEEP_ACCOUNTS_MAX: usize = 1000;

/// Records the expiry of every reservation due at `now` (the clock is the caller's: the
/// server passes its own, tests any instant). Returns how many reservations it expired.
pub async fn expire_due_reservations(
    state: &AppState,
    now: DateTime<Utc>,
) -> Result<usize, ApiError> {
    let mut due = {
        let views = state.views.current(state.store.as_ref()).await?;
        views.views.wallets.reservations_due(now)
    };
    due.truncate(SWEEP_ACCOUNTS_MAX);
    let mut expired = 0;
    for account in due {
        let _queue = state.stream_locks.lock([stream_lock(account)]).await;
        let key = CommandKey::new(
            "reservations_expiry",
            &format!("{account}/{}", rfc3339(now)),
            "expired_at",
        )?;
        let command = ForAccount {
            account_id: account,
            command: AccountCommand::ExpireReservations { expired_at: now },
        };
        match state
            .ledger
            .account_command(CommandMeta::new(key.command_id()), &command)
            .await
        {
            Ok(outcome) if !outcome.replayed => {
                expired += outcome
                    .events
                    .iter()
                    .filter(|event| matches!(event, DomainEvent::ReservationExpired(_)))
                    .count();
            }
            Ok(_) => {}
            // The reservation still counts as released for every reader; the next sweep
            // or command on the account records it.
            Err(error) => tracing::warn!(%account, %error, "cannot expire reservations"),
        }
    }
    Ok(expired)
}

/// Sweeps every [`SWEEP_INTERVAL`] with the server's clock, until the task is aborted.
pub async fn sweep_reservations(state: AppState) {
    // The first sweep one interval after start: the first catch-up of the views replays
    // the whole log, which start-up should not wait for.
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + SWEEP_INTERVAL, SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match expire_due_reservations(&state, Utc::now()).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "reservations expired"),
            Err(error) => tracing::error!(%error, "the reservation sweep failed"),
        }
    }
}
