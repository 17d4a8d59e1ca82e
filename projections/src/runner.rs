//! Running a projection: catch up from its checkpoint, follow the live log, checkpoint as
//! it goes, and rebuild from zero on demand.

use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use ledger::store::{EventStore, Position, RecordedEvent, PAGE_SIZE_MAX};
use tokio::sync::watch;

use crate::checkpoint::CheckpointDir;
use crate::projection::{Projection, ProjectionError};

/// Events a catch-up or rebuild hands to a projection at a time: several store pages,
/// so a projection that folds on two threads (the ledger views) starts them and waits
/// for the slower once per this many events rather than once per page, and the two
/// sides' uneven stretches (a run of signups, a month-end payout run) even out. About
/// 60 MiB of events at the sizes the benchmark generates; at full size 131,072 was about
/// 5% faster than 65,536, and 4,096 (one page) a fifth slower.
pub const REPLAY_BATCH_EVENTS: usize = 1 << 17;

/// Reads the events after `after` into `batch` (cleared first), page by page, until it
/// holds at least [`REPLAY_BATCH_EVENTS`] or a page has nothing new. Left empty when the
/// log has nothing after `after`.
pub async fn read_batch<S: EventStore>(
    store: &S,
    after: Option<Position>,
    batch: &mut Vec<RecordedEvent>,
) -> Result<(), ledger::store::StoreError> {
    batch.clear();
    let mut last = after;
    while batch.len() < REPLAY_BATCH_EVENTS {
        let mut page = store
            .read_all(last.unwrap_or(Position::START), PAGE_SIZE_MAX)
            .await?;
        // Pages start at the given position (inclusive): skip what is already read.
        let fresh = page.partition_point(|event| last.is_some_and(|last| event.position <= last));
        if fresh == page.len() {
            break;
        }
        last = page.last().map(|event| event.position);
        batch.extend(page.drain(fresh..));
    }
    Ok(())
}

/// When the runner writes a checkpoint while following: after `events_max` events or
/// `interval` since the last one, whichever comes first, and always on shutdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub events_max: u64,
    pub interval: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            events_max: 10_000,
            interval: Duration::from_secs(5),
        }
    }
}

/// How far a catch-up or rebuild has come, reported after every batch of pages read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Events applied by this run so far.
    pub applied: u64,
    /// The last position applied.
    pub position: Option<Position>,
    /// The head of the log when the run started.
    pub head: Option<Position>,
    pub elapsed: Duration,
}

impl Progress {
    pub fn events_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.applied as f64 / seconds
        } else {
            0.0
        }
    }
}

/// Drives one projection over a store. The projection lives behind a lock so queries can
/// read it while the runner follows the log.
pub struct ProjectionRunner<S, P> {
    store: S,
    projection: Arc<RwLock<P>>,
    /// The last event applied, `None` before the first.
    position: Option<Position>,
    checkpoints: Option<CheckpointDir>,
    policy: CheckpointPolicy,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// Announces every position applied, so a writer can wait to read its own write.
    applied: watch::Sender<Option<Position>>,
}

impl<S: EventStore + Clone, P: Projection> ProjectionRunner<S, P> {
    /// A runner for `projection`; if `checkpoints` holds a checkpoint for it, the state
    /// and position are restored from there.
    pub fn open(
        store: S,
        mut projection: P,
        checkpoints: Option<CheckpointDir>,
        policy: CheckpointPolicy,
    ) -> Result<Self, ProjectionError> {
        let mut position = None;
        if let Some(dir) = &checkpoints {
            // Decoded straight into the projection as it is read: if the checksum then
            // fails, opening fails and the projection goes with it.
            let name = projection.name().to_owned();
            if let Some((at, ())) = dir.load_with(&name, |state| projection.decode_state(state))? {
                position = at;
            }
        }
        Ok(ProjectionRunner {
            store,
            projection: Arc::new(RwLock::new(projection)),
            position,
            checkpoints,
            policy,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            applied: watch::channel(position).0,
        })
    }

    /// The projection, shared with readers.
    pub fn shared(&self) -> Arc<RwLock<P>> {
        Arc::clone(&self.projection)
    }

    /// Reads the projection.
    pub fn read(&self) -> RwLockReadGuard<'_, P> {
        self.projection.read().expect("projection lock poisoned")
    }

    /// The last position applied.
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// Follows the last position applied; a writer waits on it to read its own writes.
    pub fn watch_applied(&self) -> watch::Receiver<Option<Position>> {
        self.applied.subscribe()
    }

    /// Applies everything up to the head of the log as it is now, page by page.
    pub async fn catch_up(
        &mut self,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), ProjectionError> {
        let head = self.store.head().await?;
        let started = Instant::now();
        let mut applied = 0u64;
        let mut batch = Vec::new();
        loop {
            read_batch(&self.store, self.position, &mut batch).await?;
            let fresh = batch.len();
            if let Some(last) = batch.last() {
                debug_assert!(self.is_new(&batch[0]));
                let mut projection = self.projection.write().expect("projection lock poisoned");
                projection.apply_batch(&batch)?;
                self.position = Some(last.position);
            }
            applied += fresh as u64;
            self.since_checkpoint += fresh as u64;
            self.applied.send_replace(self.position);
            progress(&Progress {
                applied,
                position: self.position,
                head,
                elapsed: started.elapsed(),
            });
            if fresh == 0 {
                return Ok(());
            }
            self.checkpoint_if_due()?;
        }
    }

    /// Follows live appends until `shutdown` turns true (or its sender is dropped), then
    /// writes a final checkpoint. Events at or before the current position are skipped,
    /// so following right after a checkpoint or a catch-up applies nothing twice.
    pub async fn follow(
        &mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        let mut subscription = self
            .store
            .subscribe_all(self.position.unwrap_or(Position::START));
        let mut tick = tokio::time::interval(self.policy.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                next = subscription.next() => match next {
                    Some(Ok(event)) => {
                        if self.is_new(&event) {
                            self.projection
                                .write()
                                .expect("projection lock poisoned")
                                .apply(&event)?;
                            self.position = Some(event.position);
                            self.applied.send_replace(self.position);
                            self.since_checkpoint += 1;
                            self.checkpoint_if_due()?;
                        }
                    }
                    Some(Err(error)) => return Err(error.into()),
                    None => break,
                },
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = tick.tick() => self.checkpoint_if_due()?,
            }
        }
        self.checkpoint()
    }

    /// Writes a checkpoint now (if the runner has a checkpoint directory).
    pub fn checkpoint(&mut self) -> Result<(), ProjectionError> {
        if let Some(dir) = &self.checkpoints {
            let projection = self.projection.read().expect("projection lock poisoned");
            dir.store_projection(&*projection, self.position)?;
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Rebuilds the projection from position zero into scratch state, leaving the live
    /// projection untouched.
    pub async fn rebuild(&self, progress: &mut dyn FnMut(&Progress)) -> Result<P, ProjectionError> {
        let scratch = self
            .projection
            .read()
            .expect("projection lock poisoned")
            .fresh();
        Ok(rebuild_from_store(&self.store, scratch, progress).await?.0)
    }

    /// Replaces the live projection with a rebuilt one and checkpoints it.
    pub async fn rebuild_in_place(
        &mut self,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), ProjectionError> {
        let scratch = self
            .projection
            .read()
            .expect("projection lock poisoned")
            .fresh();
        let (rebuilt, position) = rebuild_from_store(&self.store, scratch, progress).await?;
        *self.projection.write().expect("projection lock poisoned") = rebuilt;
        // Whatever was appended during the rebuild is applied by the next catch-up or
        // follow, which start after this position.
        self.position = position;
        self.applied.send_replace(position);
        self.checkpoint()
    }

    fn is_new(&self, event: &RecordedEvent) -> bool {
        self.position.is_none_or(|applied| event.position > applied)
    }

    fn checkpoint_if_due(&mut self) -> Result<(), ProjectionError> {
        let due = self.since_checkpoint >= self.policy.events_max
            || (self.since_checkpoint > 0
                && self.last_checkpoint.elapsed() >= self.policy.interval);
        if due {
            self.checkpoint()?;
        }
        Ok(())
    }
}

/// Applies every event of `store`, from position zero, to `projection`; returns it with the
/// last position applied.
pub async fn rebuild_from_store<S: EventStore, P: Projection>(
    store: &S,
    mut projection: P,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(P, Option<Position>), ProjectionError> {
    let head = store.head().await?;
    let started = Instant::now();
    let mut applied = 0u64;
    let mut position: Option<Position> = None;
    let mut batch = Vec::new();
    loop {
        read_batch(store, position, &mut batch).await?;
        let fresh = batch.len() as u64;
        if let Some(last) = batch.last() {
            projection.apply_batch(&batch)?;
            position = Some(last.position);
        }
        applied += fresh;
        progress(&Progress {
            applied,
            position,
            head,
            elapsed: started.elapsed(),
        });
        if fresh == 0 {
            return Ok((projection, position));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ledger::store::memory::MemoryStore;
    use ledger::store::{EventMetadata, EventType, ExpectedRevision, NewEvent, StreamName};

    use super::*;
    use crate::determinism::{live_and_rebuilt, Schedule};
    use crate::projection::state_bytes;
    use crate::rng::SplitMix64;

    /// Per stream: how many events, and an order-sensitive fold of their payloads, so any
    /// dropped, doubled or reordered event changes the state.
    #[derive(Default)]
    struct Tally {
        streams: BTreeMap<String, (u64, u64)>,
    }

    impl Projection for Tally {
        fn name(&self) -> &str {
            "tally"
        }
        fn apply(&mut self, event: &RecordedEvent) -> Result<(), ProjectionError> {
            let entry = self
                .streams
                .entry(event.stream.as_str().to_owned())
                .or_default();
            if entry.0 != event.revision {
                return Err(ProjectionError::InvariantBroken {
                    position: event.position,
                    reason: format!("expected revision {}, got {}", entry.0, event.revision),
                });
            }
            entry.0 += 1;
            for byte in &event.payload {
                entry.1 = entry.1.wrapping_mul(31).wrapping_add(u64::from(*byte));
            }
            Ok(())
        }
        fn encode_state(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
            serde_json::to_writer(out, &self.streams).map_err(std::io::Error::from)
        }
        fn decode_state(&mut self, state: &mut dyn std::io::Read) -> Result<(), ProjectionError> {
            self.streams =
                serde_json::from_reader(state).map_err(|error| ProjectionError::BadState {
                    projection: "tally".to_owned(),
                    reason: error.to_string(),
                })?;
            Ok(())
        }
        fn fresh(&self) -> Self {
            Tally::default()
        }
    }

    fn random_history(seed: u64, batches: usize) -> Vec<(StreamName, Vec<NewEvent>)> {
        let mut rng = SplitMix64::new(seed);
        (0..batches)
            .map(|_| {
                let stream = StreamName::parse(format!("s-{}", rng.below(17))).expect("name");
                let events = (0..1 + rng.below(5))
                    .map(|_| NewEvent {
                        id: rng.uuid(),
                        event_type: EventType::parse("Ticked").expect("type"),
                        schema_version: 1,
                        metadata: EventMetadata::default(),
                        payload: rng.next_u64().to_le_bytes().to_vec(),
                    })
                    .collect();
                (stream, events)
            })
            .collect()
    }

    #[tokio::test]
    async fn live_with_restarts_equals_rebuild_byte_for_byte() {
        for seed in 0..4 {
            let dir = tempfile::tempdir().expect("temp dir");
            let outcome = live_and_rebuilt(
                MemoryStore::new(),
                Tally::default(),
                random_history(seed, 600),
                CheckpointDir::open(dir.path()).expect("dir"),
                Schedule {
                    restart_every: 97,
                    checkpoint_every: 7,
                },
            )
            .await
            .expect("both paths run");
            assert_eq!(outcome.restarts, 6);
            assert!(outcome.live.len() > 100, "state holds the streams");
            assert_eq!(outcome.live, outcome.rebuilt, "seed {seed}");
        }
    }

    #[tokio::test]
    async fn batches_gather_pages_and_read_every_event_once_in_order() {
        let store = MemoryStore::new();
        let total = REPLAY_BATCH_EVENTS + 3 * PAGE_SIZE_MAX + 17;
        let mut rng = SplitMix64::new(4);
        let mut appended = 0;
        while appended < total {
            let count = (total - appended).min(ledger::store::EVENTS_PER_APPEND_MAX);
            let stream = StreamName::parse(format!("s-{}", rng.below(5))).expect("name");
            let events = (0..count)
                .map(|_| NewEvent {
                    id: rng.uuid(),
                    event_type: EventType::parse("Ticked").expect("type"),
                    schema_version: 1,
                    metadata: EventMetadata::default(),
                    payload: Vec::new(),
                })
                .collect();
            store
                .append(&stream, ExpectedRevision::Any, events)
                .await
                .expect("append");
            appended += count;
        }
        let mut batch = Vec::new();
        let mut sizes = Vec::new();
        let mut seen = Vec::new();
        let mut last = None;
        loop {
            read_batch(&store, last, &mut batch).await.expect("read");
            if batch.is_empty() {
                break;
            }
            sizes.push(batch.len());
            seen.extend(batch.iter().map(|event| event.position));
            last = batch.last().map(|event| event.position);
        }
        // The first batch gathers pages up to the batch size; the rest is the remainder.
        assert!(sizes[0] >= REPLAY_BATCH_EVENTS, "{sizes:?}");
        assert!(sizes[0] < REPLAY_BATCH_EVENTS + PAGE_SIZE_MAX, "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), total);
        // Strictly increasing and as many as appended: each once, none left out.
        assert!(seen.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(seen.last().copied(), store.head().await.expect("head"));
        assert_eq!(seen.len(), total);
    }

    #[tokio::test]
    async fn restart_resumes_from_checkpoint_without_replaying() {
        let store = MemoryStore::new();
        for (stream, events) in random_history(9, 50) {
            store
                .append(&stream, ExpectedRevision::Any, events)
                .await
                .expect("append");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("dir");
        let mut runner = ProjectionRunner::open(
            store.clone(),
            Tally::default(),
            Some(checkpoints.clone()),
            CheckpointPolicy::default(),
        )
        .expect("open");
        let mut reports = Vec::new();
        runner
            .catch_up(&mut |progress| reports.push(*progress))
            .await
            .expect("catch up");
        let head = store.head().await.expect("head");
        assert_eq!(runner.position(), head);
        assert_eq!(reports.last().map(|report| report.position), Some(head));
        runner.checkpoint().expect("checkpoint");
        let saved = state_bytes(&*runner.read());

        // Reopened, the runner starts where it stopped: a catch-up applies nothing, and
        // the state is the saved one (Tally would fail on a replayed revision).
        let mut reopened = ProjectionRunner::open(
            store.clone(),
            Tally::default(),
            Some(checkpoints),
            CheckpointPolicy::default(),
        )
        .expect("reopen");
        assert_eq!(reopened.position(), head);
        let mut applied = Vec::new();
        reopened
            .catch_up(&mut |progress| applied.push(progress.applied))
            .await
            .expect("catch up again");
        assert_eq!(applied, vec![0]);
        assert_eq!(state_bytes(&*reopened.read()), saved);

        // A rebuild into scratch equals the live state and leaves it untouched.
        let rebuilt = reopened.rebuild(&mut |_| {}).await.expect("rebuild");
        assert_eq!(state_bytes(&rebuilt), saved);
        assert_eq!(reopened.position(), head);
    }

    #[tokio::test]
    async fn rebuild_in_place_replaces_the_state_and_checkpoints_it() {
        let store = MemoryStore::new();
        for (stream, events) in random_history(10, 30) {
            store
                .append(&stream, ExpectedRevision::Any, events)
                .await
                .expect("append");
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("dir");
        let mut runner = ProjectionRunner::open(
            store.clone(),
            Tally::default(),
            Some(checkpoints.clone()),
            CheckpointPolicy::default(),
        )
        .expect("open");
        runner.catch_up(&mut |_| {}).await.expect("catch up");
        let live = state_bytes(&*runner.read());
        // Corrupt the live state, as a bug would; a rebuild in place repairs it.
        runner
            .shared()
            .write()
            .expect("lock")
            .streams
            .insert("bogus".to_owned(), (1, 1));
        assert_ne!(state_bytes(&*runner.read()), live);
        runner.rebuild_in_place(&mut |_| {}).await.expect("rebuild");
        assert_eq!(state_bytes(&*runner.read()), live);
        assert_eq!(runner.position(), store.head().await.expect("head"));
        let saved = checkpoints
            .load("tally")
            .expect("load")
            .expect("checkpointed");
        assert_eq!(saved.state, live);
    }

    #[tokio::test]
    async fn a_damaged_checkpoint_is_refused_not_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let checkpoints = CheckpointDir::open(dir.path()).expect("dir");
        let mut runner = ProjectionRunner::open(
            MemoryStore::new(),
            Tally::default(),
            Some(checkpoints.clone()),
            CheckpointPolicy::default(),
        )
        .expect("open");
        runner.checkpoint().expect("checkpoint");
        let file = checkpoints.file_of("tally").expect("file");
        let mut bytes = std::fs::read(&file).expect("read");
        bytes[12] ^= 1;
        std::fs::write(&file, bytes).expect("write");
        let reopened = ProjectionRunner::open(
            MemoryStore::new(),
            Tally::default(),
            Some(checkpoints),
            CheckpointPolicy::default(),
        );
        assert!(matches!(
            reopened.err(),
            Some(ProjectionError::Checkpoint { .. })
        ));
    }
}
