//! A store that hands every append to a hook and passes everything else straight to the
//! store it wraps: the one place that delegates the whole [`EventStore`] trait, so a
//! wrapper that meters, counts or fails appends writes only what it changes.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    AppendOutcome, ChainScope, Direction, EventStore, ExpectedRevision, IdScope, NewEvent,
    Position, RecordedEvent, StoreError, StreamFrom, StreamName, StreamState, Subscription,
};

/// What an [`Intercepted`] store does with an append; `inner` is the wrapped store.
#[async_trait]
pub trait AppendHook<S: EventStore>: Send + Sync + 'static {
    async fn append(
        &self,
        inner: &S,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError>;

    /// The chain scope the store reports; the wrapped store's unless a hook pretends.
    fn chain_scope(&self, inner: &S) -> ChainScope {
        inner.chain_scope()
    }
}

/// `inner` with its appends routed through `hook`.
#[derive(Clone)]
pub struct Intercepted<S, H> {
    inner: S,
    hook: H,
}

impl<S, H> Intercepted<S, H> {
    pub fn new(inner: S, hook: H) -> Intercepted<S, H> {
        Intercepted { inner, hook }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn hook(&self) -> &H {
        &self.hook
    }
}

#[async_trait]
impl<S: EventStore, H: AppendHook<S>> EventStore for Intercepted<S, H> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        self.hook
            .append(&self.inner, stream, expected, events)
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from, direction, limit).await
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(from, limit).await
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState, StoreError> {
        self.inner.stream_state(stream).await
    }

    async fn head(&self) -> Result<Option<Position>, StoreError> {
        self.inner.head().await
    }

    fn subscribe_all(&self, from: Position) -> Subscription {
        self.inner.subscribe_all(from)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }

    fn write_refusal(&self) -> Option<String> {
        self.inner.write_refusal()
    }

    fn chain_scope(&self) -> ChainScope {
        self.hook.chain_scope(&self.inner)
    }

    fn id_scope(&self) -> IdScope {
        self.inner.id_scope()
    }
}

/// A shared store is a store, so wrappers can hold one chosen at run time.
#[async_trait]
impl<T: EventStore + ?Sized> EventStore for Arc<T> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        (**self).append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        (**self).read_stream(stream, from, direction, limit).await
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        (**self).read_all(from, limit).await
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState, StoreError> {
        (**self).stream_state(stream).await
    }

    async fn head(&self) -> Result<Option<Position>, StoreError> {
        (**self).head().await
    }

    fn subscribe_all(&self, from: Position) -> Subscription {
        (**self).subscribe_all(from)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        (**self).flush().await
    }

    fn write_refusal(&self) -> Option<String> {
        (**self).write_refusal()
    }

    fn chain_scope(&self) -> ChainScope {
        (**self).chain_scope()
    }

    fn id_scope(&self) -> IdScope {
        (**self).id_scope()
    }
}
