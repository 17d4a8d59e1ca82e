//! The determinism check: a projection maintained live (through the subscription, with
//! restarts from checkpoints along the way) must equal, byte for byte, the same projection
//! rebuilt from position zero. Tests feed it long random histories.

use std::time::Duration;

use ledger::store::{EventStore, ExpectedRevision, NewEvent, StreamName};
use tokio::sync::watch;

use crate::checkpoint::CheckpointDir;
use crate::projection::{state_bytes, Projection, ProjectionError};
use crate::runner::{rebuild_from_store, CheckpointPolicy, ProjectionRunner};

/// How long the live path may take to apply one batch before the check gives up.
const APPLY_WAIT_MAX: Duration = Duration::from_secs(30);

/// The state bytes of both paths.
#[derive(Debug)]
pub struct LiveAndRebuilt {
    pub live: Vec<u8>,
    pub rebuilt: Vec<u8>,
    /// How many times the live runner was stopped and reopened from its checkpoint.
    pub restarts: usize,
}

/// How often the live path restarts and checkpoints.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// Stop the runner and reopen it from its checkpoint after this many appends.
    pub restart_every: usize,
    /// Checkpoint after this many events (and every 50 ms). Small values make restarts
    /// resume from a checkpoint behind the head, exercising the skip logic.
    pub checkpoint_every: u64,
}

/// Appends `batches` to `store` one append at a time while a runner follows the log live,
/// restarting it from its checkpoint on `schedule`; then rebuilds the projection from zero
/// and returns both states.
pub async fn live_and_rebuilt<S, P>(
    store: S,
    projection: P,
    batches: Vec<(StreamName, Vec<NewEvent>)>,
    checkpoints: CheckpointDir,
    schedule: Schedule,
) -> Result<LiveAndRebuilt, ProjectionError>
where
    S: EventStore + Clone,
    P: Projection,
{
    let restart_every = schedule.restart_every;
    assert!(restart_every > 0, "restart_every must be positive");
    let policy = CheckpointPolicy {
        events_max: schedule.checkpoint_every,
        interval: Duration::from_millis(50),
    };
    let scratch = projection.fresh();
    let mut runner = ProjectionRunner::open(
        store.clone(),
        projection.fresh(),
        Some(checkpoints.clone()),
        policy,
    )?;
    drop(projection);
    let mut restarts = 0usize;
    let (mut stop, mut task, mut applied) = spawn_follow(runner);
    let mut last = None;
    for (index, (stream, events)) in batches.into_iter().enumerate() {
        // No waiting for the runner between appends: it may lag, batch, and be stopped
        // while behind, which is what a restart looks like in production.
        last = Some(
            store
                .append(&stream, ExpectedRevision::Any, events)
                .await?
                .position,
        );
        if (index + 1) % restart_every == 0 {
            stop.send_replace(true);
            runner = task.await.expect("follow task panicked")?;
            let fresh = runner.read().fresh();
            drop(runner);
            runner =
                ProjectionRunner::open(store.clone(), fresh, Some(checkpoints.clone()), policy)?;
            restarts += 1;
            (stop, task, applied) = spawn_follow(runner);
        }
    }
    if let Some(last) = last {
        if let Err(error) = wait_for(&mut applied, last).await {
            stop.send_replace(true);
            task.await.expect("follow task panicked")?;
            return Err(error);
        }
    }
    stop.send_replace(true);
    let runner = task.await.expect("follow task panicked")?;
    let live = state_bytes(&*runner.read());
    let (rebuilt, _) = rebuild_from_store(&store, scratch, &mut |_| {}).await?;
    Ok(LiveAndRebuilt {
        live,
        rebuilt: state_bytes(&rebuilt),
        restarts,
    })
}

type FollowTask<S, P> = tokio::task::JoinHandle<Result<ProjectionRunner<S, P>, ProjectionError>>;

fn spawn_follow<S, P>(
    mut runner: ProjectionRunner<S, P>,
) -> (
    watch::Sender<bool>,
    FollowTask<S, P>,
    watch::Receiver<Option<ledger::store::Position>>,
)
where
    S: EventStore + Clone,
    P: Projection,
{
    let (stop, stopped) = watch::channel(false);
    let applied = runner.watch_applied();
    let task = tokio::spawn(async move {
        runner.follow(stopped).await?;
        Ok(runner)
    });
    (stop, task, applied)
}

async fn wait_for(
    applied: &mut watch::Receiver<Option<ledger::store::Position>>,
    position: ledger::store::Position,
) -> Result<(), ProjectionError> {
    let reached = applied.wait_for(|applied| applied.is_some_and(|applied| applied >= position));
    match tokio::time::timeout(APPLY_WAIT_MAX, reached).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(ProjectionError::InvariantBroken {
            position,
            reason: "the live runner did not apply this position (it stopped or stalled)"
                .to_owned(),
        }),
    }
}
