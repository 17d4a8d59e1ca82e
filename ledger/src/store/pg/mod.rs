//! The event store in PostgreSQL (feature `pg-store`): one database holds the log, for
//! operators who already run PostgreSQL and want its replication and backups.
//!
//! ```sql
#![doc = include_str!("0001_log.sql")]
//! ```
//!
//! - **One global order that readers see without gaps.** A sequence (or `bigserial`) is
//!   not commit order: two writers take 7 and 8, 8 commits first, and a reader that saw 8
//!   and moved on never sees 7. Here every append locks the single row of
//!   `refledger_log_head` (`FOR UPDATE`) before it takes positions, and holds the lock
//!   until it commits. The next append can take its positions only after the previous
//!   one committed, and PostgreSQL makes a commit visible before it releases the
//!   transaction's locks, so a snapshot that sees position `n + 1` always sees `n`. A
//!   reader reading `position >= from` never skips; no horizon, no timeout.
//! - **The hash chain is global** ([`ChainScope::Global`]): under the same lock an append
//!   reads the head hash and chains its records with [`ChainLink::follow`] over
//!   [`codec::encode_body`], exactly like the file store, and stores the new head.
//! - **Idempotency and concurrency** are decided under the lock by [`classify_append`]
//!   over the `UNIQUE (event_id)` index, and by the stream's last revision
//!   (`UNIQUE (stream, revision)`). An append is one transaction: all or nothing.
//! - **The price** is that appends are serial: one commit (one WAL flush) at a time. The
//!   chain needs a single writer anyway; see `docs/DEPLOY.md` for durability.
//! - **Subscriptions** follow the log with [`subscription::follow`], woken by
//!   `LISTEN`/`NOTIFY` on [`NOTIFY_CHANNEL`] (appends by any instance) and by this
//!   instance's own appends. A wake-up only: every event is read back by position, so a
//!   lost notification delays nothing but the wake-up. When the listening connection
//!   drops, the listener reconnects and wakes every follower once, which covers whatever
//!   was appended meanwhile.
//! - **Connections** are a small pool ([`CONNECTIONS_MAX`]); an operation that fails
//!   because its connection died (a server restart) runs once more on a fresh one. That
//!   is safe for an append too: if the first attempt did commit, the second is recognised
//!   as its idempotent retry.
//! - **Schema**: `refledger_store_schema` records the migrations applied; the store
//!   applies the ones it knows and refuses to open a database whose version is newer.
//!
//! TLS is not supported yet: a connection string with `sslmode=require` is refused
//! rather than connected in the clear.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Row, Statement};
use uuid::Uuid;

use super::{
    check_append_limits, check_page_limit, classify_append, codec, subscription, AppendKind,
    AppendOutcome, ChainLink, Digest, Direction, EventMetadata, EventStore, EventType,
    ExpectedRevision, NewEvent, Position, RecordedEvent, StoreError, StreamFrom, StreamName,
    StreamState, Subscription, WrittenEvent,
};

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 1;
/// The `NOTIFY` channel of appends; the payload is the position of the append's last event.
pub const NOTIFY_CHANNEL: &str = "refledger_events";
/// Most connections one store opens for operations (the listener is one more).
pub const CONNECTIONS_MAX: usize = 8;
/// Longest wait for a new connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest one operation may take, connection included: the largest append (16 MiB)
/// over a slow link, or a wait behind other appends for the log head.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the listener checks that its connection still answers.
pub const LISTENER_PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long the listener waits before it tries to reconnect.
pub const LISTENER_RETRY_INTERVAL: Duration = Duration::from_millis(250);

const _: () = assert!(CONNECT_TIMEOUT.as_secs() < OPERATION_TIMEOUT.as_secs());
const _: () = assert!(CONNECTIONS_MAX >= 2);

/// Every migration, in order: `(version, sql)`. Applied in one transaction.
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("0001_log.sql"))];
const _: () = assert!(MIGRATIONS.len() == SCHEMA_VERSION as usize);

/// The table that records which migrations were applied; created before any of them.
const SCHEMA_TABLE_SQL: &str = "CREATE TABLE IF NOT EXISTS refledger_store_schema (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)";
/// The advisory lock that serialises migrations between instances starting together.
const MIGRATION_LOCK_KEY: i64 = 0x7265_666c_6564_6701;

const SELECT_EVENTS: &str = "SELECT position, event_id, stream, revision, event_type, \
     schema_version, recorded_at_us, correlation_id, causation_id, payload, hash_previous, \
     hash_current FROM refledger_events";

/// The event store in a PostgreSQL database; clones share the pool and the listener.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    head: watch::Sender<Option<Position>>,
    /// Why the last operation could not reach the database, until one does again.
    refusal: Mutex<Option<String>>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.lock().expect("listener lock poisoned").take() {
            listener.abort();
        }
    }
}

/// How an operation failed: a typed refusal of the request, or the database.
enum Failure {
    Store(StoreError),
    Db(tokio_postgres::Error),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Failure {
        Failure::Store(error)
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(error: tokio_postgres::Error) -> Failure {
        Failure::Db(error)
    }
}

/// Runs `$body` (an expression using `$client: &mut Conn`) on a pooled connection, once
/// more on a fresh one if the connection died, within [`OPERATION_TIMEOUT`]. A macro, not a
/// function: a closure returning a future that borrows both the client and the caller's
/// arguments cannot be named.
macro_rules! on_connection {
    ($store:expr, $what:expr, |$client:ident| $body:expr) => {{
        let store: &PgStore = $store;
        let mut attempt = 0u32;
        let result = loop {
            let mut pooled = match store.pooled().await {
                Ok(pooled) => pooled,
                Err(error) => break Err(error),
            };
            let outcome = {
                let $client: &mut Conn = pooled.client_mut();
                tokio::time::timeout(OPERATION_TIMEOUT, $body).await
            };
            match outcome {
                Ok(Ok(value)) => {
                    pooled.reusable();
                    break Ok(value);
                }
                Ok(Err(Failure::Store(error))) => {
                    pooled.reusable();
                    break Err(error);
                }
                Ok(Err(Failure::Db(error))) if attempt == 0 && connection_lost(&error) => {
                    attempt += 1;
                    store.discard_idle();
                }
                Ok(Err(Failure::Db(error))) => break Err(unavailable($what, &error)),
                Err(_) => {
                    break Err(StoreError::Unavailable {
                        reason: format!(
                            "{} took longer than {} s",
                            $what,
                            OPERATION_TIMEOUT.as_secs()
                        ),
                    })
                }
            }
        };
        store.note(&result);
        result
    }};
}

impl PgStore {
    /// Connects to the database of `url` (a `postgres://` URL or `key=value` pairs),
    /// applies the migrations it lacks, and starts listening for appends.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let config: Config = url.parse().map_err(|error| StoreError::Unavailable {
            reason: format!("the PostgreSQL connection string is not valid: {error}"),
        })?;
        if config.get_ssl_mode() == SslMode::Require {
            return Err(StoreError::Unavailable {
                reason: "the PostgreSQL event store does not speak TLS yet; sslmode=require \
                         is refused rather than ignored"
                    .to_owned(),
            });
        }
        let store = PgStore {
            inner: Arc::new(Inner {
                config,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
                head: watch::channel(None).0,
                refusal: Mutex::new(None),
                listener: Mutex::new(None),
            }),
        };
        store.migrate().await?;
        let listener = tokio::spawn(listen(Arc::downgrade(&store.inner)));
        *store.inner.listener.lock().expect("listener lock poisoned") = Some(listener);
        Ok(store)
    }

    /// Applies the migrations the database lacks, under an advisory lock; refuses a
    /// database that is newer than this build.
    async fn migrate(&self) -> Result<(), StoreError> {
        on_connection!(self, "migrating the event store schema", |conn| async {
            let transaction = conn.client.transaction().await?;
            transaction
                .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
                .await?;
            transaction.batch_execute(SCHEMA_TABLE_SQL).await?;
            let applied: i32 = transaction
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM refledger_store_schema",
                    &[],
                )
                .await?
                .get(0);
            if applied > SCHEMA_VERSION {
                return Err(Failure::Store(StoreError::Unavailable {
                    reason: format!(
                        "the database holds event store schema version {applied}, newer than \
                         the {SCHEMA_VERSION} this build knows: upgrade refledger"
                    ),
                }));
            }
            for (version, sql) in MIGRATIONS.iter().filter(|(version, _)| *version > applied) {
                transaction.batch_execute(sql).await?;
                transaction
                    .execute(
                        "INSERT INTO refledger_store_schema (version) VALUES ($1)",
                        &[version],
                    )
                    .await?;
            }
            transaction.commit().await?;
            Ok(())
        })
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        on_connection!(self, "reading the schema version", |conn| async {
            let row = conn
                .client
                .query_one(
                    "SELECT coalesce(max(version), 0) FROM refledger_store_schema",
                    &[],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    async fn pooled(&self) -> Result<Pooled<'_>, StoreError> {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let idle = {
            let mut idle = self.inner.idle.lock().expect("pool lock poisoned");
            std::iter::from_fn(|| idle.pop()).find(|conn| !conn.client.is_closed())
        };
        let client = match idle {
            Some(conn) => conn,
            None => Conn {
                client: connect(&self.inner.config).await?,
                statements: HashMap::new(),
            },
        };
        Ok(Pooled {
            client: Some(client),
            idle: &self.inner.idle,
            reusable: false,
            _permit: permit,
        })
    }

    /// Closes every idle connection: after one died, the others likely did too.
    fn discard_idle(&self) {
        self.inner.idle.lock().expect("pool lock poisoned").clear();
    }

    /// Remembers whether the database answered, for [`EventStore::write_refusal`].
    fn note<T>(&self, result: &Result<T, StoreError>) {
        let mut refusal = self.inner.refusal.lock().expect("refusal lock poisoned");
        match result {
            Err(StoreError::Unavailable { reason }) => *refusal = Some(reason.clone()),
            Err(_) | Ok(_) => *refusal = None,
        }
    }
}

/// A connection and the statements prepared on it. Every query of this module is prepared
/// once per connection and then costs one round trip, not two (a query given as text is
/// parsed and described first); the cache holds at most the module's dozen statements.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    async fn prepared(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// A pooled connection, put back only when its operation finished (a timed-out one may be
/// mid-transaction).
struct Pooled<'a> {
    client: Option<Conn>,
    idle: &'a Mutex<Vec<Conn>>,
    reusable: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Pooled<'_> {
    fn client_mut(&mut self) -> &mut Conn {
        self.client.as_mut().expect("present until dropped")
    }

    fn reusable(mut self) {
        self.reusable = true;
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if self.reusable && !client.client.is_closed() {
                self.idle.lock().expect("pool lock poisoned").push(client);
            }
        }
    }
}

/// A new connection, driven by a task of its own, with `synchronous_commit` raised to
/// `on` for the session if the server's default turned it off: an acknowledged append
/// must be on disk.
async fn connect(config: &Config) -> Result<Client, StoreError> {
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| StoreError::Unavailable {
            reason: format!(
                "cannot connect to PostgreSQL within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
        })?
        .map_err(|error| unavailable("cannot connect to PostgreSQL", &error))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "event store connection closed");
        }
    });
    let setup = async {
        let row = client
            .query_one("SELECT current_setting('synchronous_commit')", &[])
            .await?;
        if row.get::<_, &str>(0) == "off" {
            client.batch_execute("SET synchronous_commit TO on").await?;
        }
        // A client that stops in the middle of an append (a paused process, a lost
        // network) would hold the log head's lock, and with it every append: the server
        // ends such a session after the operation timeout.
        client
            .batch_execute(&format!(
                "SET statement_timeout TO {timeout}; \
                 SET idle_in_transaction_session_timeout TO {timeout}",
                timeout = OPERATION_TIMEOUT.as_millis()
            ))
            .await
    };
    tokio::time::timeout(CONNECT_TIMEOUT, setup)
        .await
        .map_err(|_| StoreError::Unavailable {
            reason: "PostgreSQL did not answer the session setup in time".to_owned(),
        })?
        .map_err(|error| unavailable("cannot set up a PostgreSQL session", &error))?;
    Ok(client)
}

/// Whether `error` means the connection is gone (worth one more try on a fresh one) rather
/// than an answer from the server.
fn connection_lost(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        None => error.as_db_error().is_none(),
        Some(code) => {
            code == &SqlState::ADMIN_SHUTDOWN
                || code == &SqlState::CRASH_SHUTDOWN
                || code == &SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
        }
    }
}

fn unavailable(what: &str, error: &tokio_postgres::Error) -> StoreError {
    let detail = match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    };
    StoreError::Unavailable {
        reason: format!("{what}: {detail}"),
    }
}

fn corrupted(position: i64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupted {
        file: PathBuf::from("postgresql:refledger_events"),
        offset: u64::try_from(position).unwrap_or(0),
        reason: reason.into(),
    }
}

/// A `u64` (revision, position) as the `bigint` it is stored in.
fn to_bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn digest_of(bytes: &[u8], position: i64, field: &str) -> Result<Digest, StoreError> {
    let array: [u8; 32] = bytes
        .try_into()
        .map_err(|_| corrupted(position, format!("{field} is not 32 bytes")))?;
    Ok(Digest(array))
}

/// An event row as recorded, its hash checked against its body.
fn decode_row(row: &Row) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.get("position");
    let bad = |field: &str, reason: String| corrupted(position, format!("{field}: {reason}"));
    let revision: i64 = row.get("revision");
    let schema_version: i32 = row.get("schema_version");
    let recorded_at_us: i64 = row.get("recorded_at_us");
    let event = RecordedEvent {
        id: row.get("event_id"),
        stream: StreamName::parse(row.get::<_, String>("stream"))
            .map_err(|error| bad("stream", error.to_string()))?,
        revision: u64::try_from(revision).map_err(|error| bad("revision", error.to_string()))?,
        position: Position::sequence(
            u64::try_from(position).map_err(|error| bad("position", error.to_string()))?,
        ),
        event_type: EventType::parse(row.get::<_, String>("event_type"))
            .map_err(|error| bad("event_type", error.to_string()))?,
        schema_version: u16::try_from(schema_version)
            .map_err(|error| bad("schema_version", error.to_string()))?,
        recorded_at: DateTime::<Utc>::from_timestamp_micros(recorded_at_us)
            .ok_or_else(|| bad("recorded_at_us", "out of range".to_owned()))?,
        metadata: EventMetadata {
            correlation_id: row.get("correlation_id"),
            causation_id: row.get("causation_id"),
        },
        payload: row.get("payload"),
        chain: ChainLink {
            previous: digest_of(row.get("hash_previous"), position, "hash_previous")?,
            current: digest_of(row.get("hash_current"), position, "hash_current")?,
        },
    };
    if !event.chain.holds_for(&codec::body_of(&event)) {
        return Err(corrupted(position, "the hash does not match the event"));
    }
    Ok(event)
}

/// Decodes a page read in global order, checking that it has no gap and an unbroken
/// chain: what the log head's lock promises, asserted after reading.
fn decode_log_page(from: i64, rows: &[Row]) -> Result<Vec<RecordedEvent>, StoreError> {
    let events = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
    // Positions are dense from zero, so a page from an existing position starts there.
    if let Some(first) = events.first() {
        if to_bigint(first.position.commit) != from {
            return Err(corrupted(
                from,
                "a gap in the positions at the start of a read",
            ));
        }
    }
    for pair in events.windows(2) {
        let position = to_bigint(pair[1].position.commit);
        if pair[1].position.commit != pair[0].position.commit + 1 {
            return Err(corrupted(
                position,
                "a gap in the positions before this one",
            ));
        }
        if pair[1].chain.previous != pair[0].chain.current {
            return Err(corrupted(
                position,
                "the chain link before this event is broken",
            ));
        }
    }
    Ok(events)
}

const HEAD_FOR_UPDATE_SQL: &str = "SELECT next_position, head_hash, head_recorded_at_us \
     FROM refledger_log_head FOR UPDATE";
const WRITTEN_IDS_SQL: &str = "SELECT event_id, stream, revision, position \
     FROM refledger_events WHERE event_id = ANY($1)";
const LAST_REVISION_SQL: &str = "SELECT max(revision) FROM refledger_events WHERE stream = $1";
const INSERT_EVENTS_SQL: &str = "INSERT INTO refledger_events (position, event_id, stream, \
     revision, event_type, schema_version, recorded_at_us, correlation_id, causation_id, \
     payload, hash_previous, hash_current) \
     SELECT position, event_id, $3, revision, event_type, schema_version, $7, \
     correlation_id, causation_id, payload, hash_previous, hash_current \
     FROM unnest($1::bigint[], $2::uuid[], $4::bigint[], $5::text[], $6::integer[], \
     $8::uuid[], $9::uuid[], $10::bytea[], $11::bytea[], $12::bytea[]) \
     AS e(position, event_id, revision, event_type, schema_version, correlation_id, \
     causation_id, payload, hash_previous, hash_current)";
const UPDATE_HEAD_SQL: &str = "UPDATE refledger_log_head SET next_position = $1, \
     head_hash = $2, head_recorded_at_us = $3";
const NOTIFY_SQL: &str = "SELECT pg_notify($1, $2)";
const HEAD_SQL: &str = "SELECT next_position FROM refledger_log_head";

async fn append_once(
    conn: &mut Conn,
    stream: &StreamName,
    expected: ExpectedRevision,
    events: &[NewEvent],
) -> Result<(AppendOutcome, bool), Failure> {
    // Prepared before the transaction, so the lock below is held for as few round trips
    // as possible.
    let head_for_update = conn.prepared(HEAD_FOR_UPDATE_SQL).await?;
    let written_ids = conn.prepared(WRITTEN_IDS_SQL).await?;
    let last_revision = conn.prepared(LAST_REVISION_SQL).await?;
    let insert_events = conn.prepared(INSERT_EVENTS_SQL).await?;
    let update_head = conn.prepared(UPDATE_HEAD_SQL).await?;
    let notify = conn.prepared(NOTIFY_SQL).await?;
    let transaction = conn.client.transaction().await?;
    // The lock that orders everything: held until commit (see the module comment).
    let head = transaction.query_one(&head_for_update, &[]).await?;
    let next_position: i64 = head.get(0);
    let ids: Vec<Uuid> = events.iter().map(|event| event.id).collect();
    // Both lookups in one round trip (tokio-postgres pipelines concurrent queries).
    let stream_name = stream.as_str();
    let ids_param: [&(dyn ToSql + Sync); 1] = [&ids];
    let stream_param: [&(dyn ToSql + Sync); 1] = [&stream_name];
    let (written_rows, last_row) = tokio::try_join!(
        transaction.query(&written_ids, &ids_param),
        transaction.query_one(&last_revision, &stream_param),
    )?;
    let written: HashMap<Uuid, WrittenEvent> = written_rows
        .iter()
        .map(|row| {
            let revision: i64 = row.get(2);
            let position: i64 = row.get(3);
            let written = WrittenEvent {
                in_this_stream: row.get::<_, &str>(1) == stream.as_str(),
                revision: u64::try_from(revision).unwrap_or(u64::MAX),
                position: Position::sequence(u64::try_from(position).unwrap_or(u64::MAX)),
            };
            (row.get(0), written)
        })
        .collect();
    if let AppendKind::Repeat(outcome) =
        classify_append(expected, events, |id| written.get(id).copied())?
    {
        return Ok((outcome, false));
    }
    let last_revision: Option<i64> = last_row.get(0);
    let actual = match last_revision {
        None => StreamState::NoStream,
        Some(revision) => StreamState::At(
            u64::try_from(revision).map_err(|_| corrupted(next_position, "negative revision"))?,
        ),
    };
    if !actual.satisfies(expected) {
        return Err(Failure::Store(StoreError::WrongExpectedVersion {
            stream: stream.clone(),
            expected,
            actual,
        }));
    }
    // recorded_at never goes back, whatever the clock does: readers may rely on it.
    let head_recorded_at_us: i64 = head.get(2);
    let recorded_at_us = Utc::now().timestamp_micros().max(head_recorded_at_us);
    let recorded_at =
        DateTime::<Utc>::from_timestamp_micros(recorded_at_us).expect("clock within range");
    let mut previous = digest_of(head.get(1), next_position, "head_hash")?;

    let count = events.len();
    let mut positions = Vec::with_capacity(count);
    let mut revisions = Vec::with_capacity(count);
    let mut hashes_previous = Vec::with_capacity(count);
    let mut hashes_current = Vec::with_capacity(count);
    let mut body = Vec::new();
    for (offset, event) in events.iter().enumerate() {
        let revision = actual.next_revision() + offset as u64;
        body.clear();
        codec::encode_body(event, stream, revision, recorded_at, &mut body);
        let link = ChainLink::follow(previous, &body);
        positions.push(next_position + offset as i64);
        revisions.push(to_bigint(revision));
        hashes_previous.push(link.previous.0.to_vec());
        hashes_current.push(link.current.0.to_vec());
        previous = link.current;
    }
    let event_types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let schema_versions: Vec<i32> = events.iter().map(|e| i32::from(e.schema_version)).collect();
    let correlations: Vec<Option<Uuid>> =
        events.iter().map(|e| e.metadata.correlation_id).collect();
    let causations: Vec<Option<Uuid>> = events.iter().map(|e| e.metadata.causation_id).collect();
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    let last_position = next_position + count as i64 - 1;
    let next_head = last_position + 1;
    let notice = last_position.to_string();
    let head_hash = previous.0.as_slice();
    let insert_params: [&(dyn ToSql + Sync); 12] = [
        &positions,
        &ids,
        &stream_name,
        &revisions,
        &event_types,
        &schema_versions,
        &recorded_at_us,
        &correlations,
        &causations,
        &payloads,
        &hashes_previous,
        &hashes_current,
    ];
    let head_params: [&(dyn ToSql + Sync); 3] = [&next_head, &head_hash, &recorded_at_us];
    let notify_params: [&(dyn ToSql + Sync); 2] = [&NOTIFY_CHANNEL, &notice];
    // The three writes in one round trip; if one fails the transaction is aborted and
    // never committed.
    tokio::try_join!(
        transaction.execute(&insert_events, &insert_params),
        transaction.execute(&update_head, &head_params),
        // Delivered at commit, to every instance listening.
        transaction.execute(&notify, &notify_params),
    )?;
    transaction.commit().await?;
    let outcome = AppendOutcome {
        revision: u64::try_from(*revisions.last().expect("not empty")).expect("non-negative"),
        position: Position::sequence(u64::try_from(last_position).expect("non-negative")),
    };
    Ok((outcome, true))
}

#[async_trait]
impl EventStore for PgStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        check_append_limits(&events)?;
        let (outcome, written) = on_connection!(self, "appending", |client| append_once(
            client, stream, expected, &events
        ))?;
        if written {
            self.inner.head.send_replace(Some(outcome.position));
        }
        Ok(outcome)
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: StreamFrom,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_page_limit(limit)?;
        let (bound, sql) = match (direction, from) {
            (_, _) if limit == 0 => return Ok(Vec::new()),
            (Direction::Forward, StreamFrom::End) => return Ok(Vec::new()),
            (Direction::Forward, StreamFrom::Start) => (0, "revision >= $2 ORDER BY revision"),
            (Direction::Forward, StreamFrom::Revision(revision)) => {
                (to_bigint(revision), "revision >= $2 ORDER BY revision")
            }
            (Direction::Backward, StreamFrom::Start) => {
                (0, "revision <= $2 ORDER BY revision DESC")
            }
            (Direction::Backward, StreamFrom::End) => {
                (i64::MAX, "revision <= $2 ORDER BY revision DESC")
            }
            (Direction::Backward, StreamFrom::Revision(revision)) => {
                (to_bigint(revision), "revision <= $2 ORDER BY revision DESC")
            }
        };
        let query = format!("{SELECT_EVENTS} WHERE stream = $1 AND {sql} LIMIT $3");
        let limit = limit as i64;
        on_connection!(self, "reading a stream", |conn| async {
            let statement = conn.prepared(&query).await?;
            let rows = conn
                .client
                .query(&statement, &[&stream.as_str(), &bound, &limit])
                .await?;
            Ok(rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?)
        })
    }

    async fn read_all(
        &self,
        from: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        check_page_limit(limit)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let query = format!("{SELECT_EVENTS} WHERE position >= $1 ORDER BY position LIMIT $2");
        let (from, limit) = (to_bigint(from.commit), limit as i64);
        on_connection!(self, "reading the log", |conn| async {
            let statement = conn.prepared(&query).await?;
            let rows = conn.client.query(&statement, &[&from, &limit]).await?;
            Ok(decode_log_page(from, &rows)?)
        })
    }

    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState, StoreError> {
        on_connection!(self, "reading a stream's state", |conn| async {
            let statement = conn.prepared(LAST_REVISION_SQL).await?;
            let last: Option<i64> = conn
                .client
                .query_one(&statement, &[&stream.as_str()])
                .await?
                .get(0);
            Ok(match last {
                None => StreamState::NoStream,
                Some(revision) => StreamState::At(
                    u64::try_from(revision).map_err(|_| corrupted(0, "negative revision"))?,
                ),
            })
        })
    }

    async fn head(&self) -> Result<Option<Position>, StoreError> {
        on_connection!(self, "reading the log head", |conn| async {
            let statement = conn.prepared(HEAD_SQL).await?;
            let next: i64 = conn.client.query_one(&statement, &[]).await?.get(0);
            Ok(u64::try_from(next)
                .map_err(|_| corrupted(next, "negative next_position"))?
                .checked_sub(1)
                .map(Position::sequence))
        })
    }

    fn subscribe_all(&self, from: Position) -> Subscription {
        subscription::follow(self.clone(), from, self.inner.head.subscribe())
    }

    /// Every acknowledged append was committed, and with `synchronous_commit` on (the
    /// session forces it) is durable: nothing to flush.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn write_refusal(&self) -> Option<String> {
        self.inner
            .refusal
            .lock()
            .expect("refusal lock poisoned")
            .clone()
    }
}

/// Listens on [`NOTIFY_CHANNEL`] for as long as the store lives, reconnecting when the
/// connection drops, and wakes the followers on every notification and every reconnect.
async fn listen(store: Weak<Inner>) {
    loop {
        let Some(config) = store.upgrade().map(|inner| inner.config.clone()) else {
            return;
        };
        if let Err(error) = listen_once(&store, &config).await {
            tracing::debug!(%error, "event store listener disconnected");
            // Readiness hears of an unreachable database without waiting for an append.
            if let Some(inner) = store.upgrade() {
                *inner.refusal.lock().expect("refusal lock poisoned") = Some(format!(
                    "the listening connection to PostgreSQL failed: {error}"
                ));
            }
        }
        tokio::time::sleep(LISTENER_RETRY_INTERVAL).await;
    }
}

/// One listening connection, until it fails.
async fn listen_once(store: &Weak<Inner>, config: &Config) -> Result<(), String> {
    let (client, mut connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|error| error.to_string())?;
    let (notified, mut notifications) = mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if notified.send(notification.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await
            .map_err(|error| error.to_string())?;
        // Whatever was appended while nobody listened: every follower reads again.
        wake(store, None);
        if let Some(inner) = store.upgrade() {
            *inner.refusal.lock().expect("refusal lock poisoned") = None;
        }
        loop {
            tokio::select! {
                payload = notifications.recv() => {
                    let Some(payload) = payload else {
                        return Err("the connection closed".to_owned());
                    };
                    wake(store, payload.parse::<u64>().ok().map(Position::sequence));
                }
                () = tokio::time::sleep(LISTENER_PING_INTERVAL) => {
                    tokio::time::timeout(CONNECT_TIMEOUT, client.batch_execute("SELECT 1"))
                        .await
                        .map_err(|_| "ping timed out".to_owned())?
                        .map_err(|error| error.to_string())?;
                }
            }
            if store.strong_count() == 0 {
                return Ok(());
            }
        }
    }
    .await;
    driver.abort();
    result
}

/// Wakes every follower; with the newest position when a notification named one.
fn wake(store: &Weak<Inner>, position: Option<Position>) {
    let Some(inner) = store.upgrade() else { return };
    match position {
        Some(position) => {
            inner.head.send_replace(Some(position));
        }
        None => inner.head.send_modify(|_| ()),
    }
}
