//! The read model behind commissions and finance reports: the projections crate's
//! [`LedgerViews`], kept in the server and caught up with the log before every read, so a
//! report always includes every write acknowledged before it was asked for.
//!
//! Catching up applies only the events after the last one applied (one page read when
//! nothing changed); the first read after a start replays the whole log once.

use std::sync::Arc;

use ledger::store::{EventStore, Position, PAGE_SIZE_MAX};
use projections::views::LedgerViews;
use projections::Projection as _;
use tokio::sync::{Mutex, MutexGuard};

use crate::http::error::ApiError;

/// The views and the last position folded into them.
#[derive(Default)]
pub struct Views {
    pub views: LedgerViews,
    pub position: Option<Position>,
}

/// Shared by every handler; one catch-up at a time.
#[derive(Clone, Default)]
pub struct ReportViews {
    inner: Arc<Mutex<Views>>,
}

impl ReportViews {
    /// The views, caught up with everything `store` holds now.
    pub async fn current(&self, store: &dyn EventStore) -> Result<MutexGuard<'_, Views>, ApiError> {
        let mut guard = self.inner.lock().await;
        catch_up(&mut guard, store).await?;
        Ok(guard)
    }
}

/// Folds every event after `views.position` into `views`.
pub async fn catch_up(views: &mut Views, store: &dyn EventStore) -> Result<(), ApiError> {
    loop {
        let page = store
            .read_all(views.position.unwrap_or(Position::START), PAGE_SIZE_MAX)
            .await?;
        // Pages start at the last applied position, inclusive: skip what was applied.
        let applied = views.position;
        let new =
            &page[page.partition_point(|event| applied.is_some_and(|at| event.position <= at))..];
        let Some(last) = new.last() else {
            return Ok(());
        };
        if let Err(error) = views.views.apply_batch(new) {
            // The views are undefined after a failed fold: start again from zero next time.
            *views = Views::default();
            return Err(ApiError::internal(format!(
                "the report views cannot fold the log: {error}"
            )));
        }
        views.position = Some(last.position);
    }
}
