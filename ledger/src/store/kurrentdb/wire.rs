//! The few calls the store makes to KurrentDB, behind a trait: [`ClientWire`] makes them
//! with the official client, and the tests make them against an in-memory imitation of
//! KurrentDB's semantics, so that the store's own logic (chaining, idempotent retries,
//! races, catch-up and resumption) is exercised without a server.
//!
//! The semantics every implementation follows are KurrentDB's: stream reads from a
//! revision are inclusive; forward reads of `$all` from a position are inclusive and
//! backward ones exclusive; a subscription to `$all` from a position starts strictly
//! after it; an append under an exact state that finds the same event ids already
//! written right after that state succeeds without writing them again.

use async_trait::async_trait;

use super::mapping::{self, ClientEvent, StoredMetadata};
use crate::store::{
    Direction, NewEvent, Position, RecordedEvent, StoreError, StreamName, StreamState,
};

/// A position in a stream or in `$all` to read from.
pub use kurrentdb::StreamPosition;

/// A record of `$all`: its position, and the event if it is ours (`None` for KurrentDB's
/// own records that a server-side filter let through).
pub type Record = (Position, Option<RecordedEvent>);

/// An event ready to be written: ours, with the custom metadata computed for it.
pub struct Outgoing {
    pub event: NewEvent,
    pub metadata: StoredMetadata,
}

/// Why an append was not written.
#[derive(Debug)]
pub enum AppendError {
    /// The stream is not in the exact state the append expected; it is in this one.
    Conflict(StreamState),
    Failed(StoreError),
}

#[async_trait]
pub trait Wire: Send + Sync + 'static {
    /// Reads at most `limit` events of a stream; a missing stream reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamPosition<u64>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads at most `limit` records of `$all` that do not have a system event type.
    async fn read_all(
        &self,
        from: StreamPosition<Position>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;

    /// Appends `events` if the stream is exactly in `state`.
    async fn append(
        &self,
        stream: &StreamName,
        state: StreamState,
        events: Vec<Outgoing>,
    ) -> Result<(), AppendError>;

    /// Follows `$all` strictly after `from`, leaving out system event types.
    async fn subscribe(&self, from: StreamPosition<Position>) -> Box<dyn Live>;
}

/// A live subscription to `$all`.
#[async_trait]
pub trait Live: Send {
    /// The next record; an error ends the subscription.
    async fn next(&mut self) -> Result<Record, StoreError>;
}

/// The wire made of the official client.
pub struct ClientWire {
    client: kurrentdb::Client,
}

impl ClientWire {
    pub fn new(client: kurrentdb::Client) -> ClientWire {
        ClientWire { client }
    }
}

fn system_types_filtered() -> kurrentdb::SubscriptionFilter {
    kurrentdb::SubscriptionFilter::on_event_type().exclude_system_events()
}

fn client_position(from: StreamPosition<Position>) -> StreamPosition<kurrentdb::Position> {
    from.map(mapping::position_to_client)
}

/// Our record for a client event: system ones (by type or stream) as `None`.
fn record(event: &kurrentdb::RecordedEvent) -> Result<Record, StoreError> {
    let position = mapping::position_from_client(event.position);
    if mapping::is_system(event.stream_id(), &event.event_type) {
        return Ok((position, None));
    }
    Ok((
        position,
        Some(mapping::recorded_event(ClientEvent::of(event))?),
    ))
}

#[async_trait]
impl Wire for ClientWire {
    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamPosition<u64>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let options = kurrentdb::ReadStreamOptions::default().position(from);
        let options = match direction {
            Direction::Forward => options.forwards(),
            Direction::Backward => options.backwards(),
        }
        .max_count(limit);
        let mut reader = match self.client.read_stream(stream.as_str(), &options).await {
            Ok(reader) => reader,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(error) => return Err(mapping::store_error(error, None)),
        };
        let mut events = Vec::new();
        loop {
            match reader.next().await {
                Ok(Some(resolved)) => {
                    if let Some(event) = &resolved.event {
                        events.push(mapping::recorded_event(ClientEvent::of(event))?);
                    }
                }
                Ok(None) => return Ok(events),
                Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
                Err(error) => return Err(mapping::store_error(error, None)),
            }
        }
    }

    async fn read_all(
        &self,
        from: StreamPosition<Position>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        // The server leaves out system event types, so an idle cluster's thousands of
        // `$statsCollected` are not shipped to us.
        let options = kurrentdb::ReadAllOptions::default()
            .position(client_position(from))
            .filter(system_types_filtered());
        let options = match direction {
            Direction::Forward => options.forwards(),
            Direction::Backward => options.backwards(),
        }
        .max_count(limit);
        let mut reader = self
            .client
            .read_all(&options)
            .await
            .map_err(|error| mapping::store_error(error, None))?;
        let mut records = Vec::new();
        while let Some(resolved) = reader
            .next()
            .await
            .map_err(|error| mapping::store_error(error, None))?
        {
            if let Some(event) = &resolved.event {
                records.push(record(event)?);
            }
        }
        Ok(records)
    }

    async fn append(
        &self,
        stream: &StreamName,
        state: StreamState,
        events: Vec<Outgoing>,
    ) -> Result<(), AppendError> {
        let data: Vec<kurrentdb::EventData> = events
            .iter()
            .map(|outgoing| mapping::event_data(&outgoing.event, &outgoing.metadata))
            .collect();
        let options =
            kurrentdb::AppendToStreamOptions::default().stream_state(mapping::exact_state(state));
        match self
            .client
            .append_to_stream(stream.as_str(), &options, data)
            .await
        {
            Ok(_) => Ok(()),
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                Err(AppendError::Conflict(mapping::current_state(current)))
            }
            Err(error) => Err(AppendError::Failed(mapping::store_error(error, None))),
        }
    }

    async fn subscribe(&self, from: StreamPosition<Position>) -> Box<dyn Live> {
        let options = kurrentdb::SubscribeToAllOptions::default()
            .position(client_position(from))
            .filter(system_types_filtered());
        Box::new(ClientLive {
            subscription: self.client.subscribe_to_all(&options).await,
        })
    }
}

struct ClientLive {
    subscription: kurrentdb::Subscription,
}

#[async_trait]
impl Live for ClientLive {
    async fn next(&mut self) -> Result<Record, StoreError> {
        loop {
            let resolved = self
                .subscription
                .next()
                .await
                .map_err(|error| mapping::store_error(error, None))?;
            if let Some(event) = &resolved.event {
                return record(event);
            }
        }
    }
}
