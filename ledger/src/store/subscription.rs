//! Catch-up subscriptions: read the history page by page, then wait for the store to
//! announce new appends and read on. Because every event is read back from the store by
//! position, the switch from history to live cannot drop or repeat an event.

use tokio::sync::{mpsc, watch};

use super::{EventStore, Position, RecordedEvent, StoreError, PAGE_SIZE_MAX};

/// Events buffered between the follower task and the subscriber; the follower waits when
/// the subscriber falls this far behind.
pub const SUBSCRIPTION_BUFFER_MAX: usize = 1024;

/// A live feed of all events from a position onwards.
pub struct Subscription {
    receiver: mpsc::Receiver<Result<RecordedEvent, StoreError>>,
}

impl Subscription {
    /// Wraps a channel that a backend feeds. The backend stops feeding when it sees the
    /// receiver dropped.
    pub fn from_channel(receiver: mpsc::Receiver<Result<RecordedEvent, StoreError>>) -> Self {
        Subscription { receiver }
    }

    /// The next event, or an error after which the subscription has ended, or `None`
    /// when the store has closed.
    pub async fn next(&mut self) -> Option<Result<RecordedEvent, StoreError>> {
        self.receiver.recv().await
    }
}

/// Follows `store` from `from` (inclusive). `head` announces the newest acknowledged
/// position (or changes whenever one is acknowledged); the follower re-reads the store
/// after every announcement.
pub fn follow<S>(
    store: S,
    from: Position,
    mut head: watch::Receiver<Option<Position>>,
) -> Subscription
where
    S: EventStore + Clone,
{
    let (sender, receiver) = mpsc::channel(SUBSCRIPTION_BUFFER_MAX);
    tokio::spawn(async move {
        let mut next = from;
        let mut last_sent: Option<Position> = None;
        loop {
            // Mark the announcement seen before reading, so an append acknowledged while
            // we read wakes us again rather than slipping by.
            head.borrow_and_update();
            let page = match store.read_all(next, PAGE_SIZE_MAX).await {
                Ok(page) => page,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let mut progressed = false;
            for event in page {
                if last_sent.is_some_and(|sent| event.position <= sent) {
                    continue;
                }
                let position = event.position;
                if sender.send(Ok(event)).await.is_err() {
                    return; // the subscriber went away
                }
                last_sent = Some(position);
                next = position;
                progressed = true;
            }
            if !progressed && head.changed().await.is_err() {
                return; // the store closed
            }
        }
    });
    Subscription::from_channel(receiver)
}
