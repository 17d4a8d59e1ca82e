//! The shared key vault: data keys in PostgreSQL, for several ledger instances on one
//! KurrentDB cluster (feature `pg-vault`).
//!
//! The database holds only ciphertext: every data key and the fingerprint key are wrapped
//! (AES-256-GCM, the same wrapping and associated data as [`DirVault`]) by a key-encryption
//! key (KEK) the operator provides in a file and that is never written to the database.
//! A stolen dump alone reads nothing.
//!
//! ```sql
#![doc = include_str!("schema.sql")]
//! ```
//!
//! - **Creation is race-free between instances.** Creating a key and shredding one take the
//!   same transaction-scoped advisory lock, derived from subject and group, then look again
//!   under it; the insert is also `ON CONFLICT DO NOTHING` on the `(subject_id,
//!   erasure_group)` primary key. Two instances creating the first key of a subject end with
//!   one stored key, and both use it; a write racing an erasure either comes first (and its
//!   key dies with the erasure) or sees the tombstone.
//! - **Shredding is one transaction**: tombstone inserted, key row and fingerprints
//!   deleted, `pg_notify` sent; `synchronous_commit` is raised to `on` for the session when
//!   the server's default is `off`, so a returned shred is durable.
//! - **Caching.** Looked-up keys and tombstones are kept in memory only while a listener
//!   connection is `LISTEN`ing on [`SHRED_CHANNEL`]: a shred on any instance removes the
//!   entry on every other within the notification's delivery (milliseconds). If the
//!   listener's connection drops, the cache is emptied and bypassed until it is back; a
//!   ping every [`LISTENER_PING_INTERVAL`] finds a connection that died silently, so a
//!   shredded key stays readable elsewhere at most [`LISTENER_PING_INTERVAL`] +
//!   [`LISTENER_PING_TIMEOUT`], and never longer than [`KEY_CACHE_TTL`].
//! - **An outage is an error.** Every operation has a deadline ([`OPERATION_TIMEOUT`]) and
//!   answers [`PrivacyError::VaultUnavailable`] when the database cannot be reached in time;
//!   only a tombstone reads as erased. An operation that failed so is tried once more on a
//!   fresh connection within the same deadline (pooled connections die unnoticed with a
//!   server restart); each is safe to run twice, as each looks again under its lock.
//! - **TLS** when the URL says `sslmode=require`, the server's certificate always verified
//!   (`tls.rs`); **KEK rotation** re-wraps everything in one transaction
//!   ([`PgVault::rotate_kek`]).
//!
//! The [`KeyVault`] trait is synchronous and is called from tokio worker threads in the
//! server. The vault therefore owns a small tokio runtime of its own (one thread) that
//! drives `tokio-postgres`; a call hands its query to that runtime and waits on a plain
//! channel, which never panics inside another runtime the way the blocking `postgres`
//! crate (a runtime of its own per client) does.
//!
//! [`DirVault`]: super::dir::DirVault

mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, GenericClient, NoTls, Row};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::dir::FINGERPRINTS_PER_SUBJECT_MAX;
use super::{
    data_key_aad, DataKey, KeyLookup, KeyVault, MasterKey, ShredOutcome, VaultContents,
    FINGERPRINT_KEY_AAD, KEY_SIZE,
};
use crate::privacy::fingerprint::{Fingerprint, FingerprintKind};
use crate::privacy::{random_bytes, ErasureGroup, PersonalText, PrivacyError, SubjectId};

/// The schema, created idempotently on first connect (also in `docs/DEPLOY.md`).
pub const SCHEMA_SQL: &str = include_str!("schema.sql");
/// The vault format written in `refledger_vault_meta.format`.
pub const PG_VAULT_FORMAT: i32 = 1;
/// The `NOTIFY` channel of shredded keys; the payload is `<subject uuid>:<group>`.
pub const SHRED_CHANNEL: &str = "refledger_vault_shredded";
/// Longest wait for one vault operation, connection included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a new connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Most connections one instance opens for vault operations (the listener is one more).
pub const CONNECTIONS_MAX: usize = 8;
/// Most keys and tombstones cached; past it the cache starts over.
pub const KEY_CACHE_ENTRIES_MAX: usize = 262_144;
/// Longest a cached entry is trusted, whatever the listener says.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// How often the listener checks that its connection still answers.
pub const LISTENER_PING_INTERVAL: Duration = Duration::from_secs(5);
/// Longest the listener waits for that answer before it empties the cache.
pub const LISTENER_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest an operator's bulk command (`vault-migrate`, KEK rotation) may take; it runs
/// in one transaction, without the per-statement timeout.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most subjects returned by one fingerprint lookup (the first in id order). A value shared
/// by more (a carrier's NAT address) tells a duplicate check nothing more, and a signup
/// must not fail on it.
pub const SUBJECTS_PER_FINGERPRINT_MAX: usize = 10_000;

const _: () = assert!(
    LISTENER_PING_INTERVAL.as_secs() + LISTENER_PING_TIMEOUT.as_secs() < KEY_CACHE_TTL.as_secs()
);
const _: () = assert!(CONNECT_TIMEOUT.as_secs() < OPERATION_TIMEOUT.as_secs());

/// The key vault in PostgreSQL. Cheap to share (`Arc`); every instance of the ledger
/// connects its own.
pub struct PgVault {
    shared: Arc<Shared>,
    /// Taken (and shut down in the background) on drop: a runtime must not be dropped
    /// inside another one by blocking.
    runtime: Option<tokio::runtime::Runtime>,
}

/// What the copy of one vault into this one did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub keys_copied: usize,
    /// Keys already here, the same key (a run again after an interruption).
    pub keys_present: usize,
    pub tombstones_copied: usize,
    pub fingerprints_copied: usize,
}

/// What a KEK rotation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KekRotationReport {
    pub keys_rewrapped: usize,
}

struct Shared {
    kek: MasterKey,
    kek_id: String,
    fingerprint_key: Zeroizing<[u8; KEY_SIZE]>,
    pool: Pool,
    cache: Mutex<Cache>,
}

#[derive(Clone)]
enum Cached {
    Key(DataKey),
    Erased(DateTime<Utc>),
}

struct Cache {
    entries: HashMap<(SubjectId, ErasureGroup), (Cached, Instant)>,
    /// True while the listener is `LISTEN`ing: only then may entries be used.
    listening: bool,
    /// Bumped by every invalidation: a lookup that started before one must not cache
    /// what it read, which may be from before the shred.
    invalidations: u64,
}

impl PgVault {
    /// Connects to `url` (a libpq URL or key-value string), creates the schema if it is
    /// missing, and checks that `kek` is the key-encryption key the vault was created with.
    /// With `sslmode=require`, over TLS verified against the system's roots.
    pub fn connect(url: &str, kek: MasterKey) -> Result<PgVault, PrivacyError> {
        PgVault::connect_with_ca(url, kek, None)
    }

    /// [`connect`](PgVault::connect), trusting the CA certificates of `ca_file` (PEM)
    /// instead of the system's roots; the URL must say `sslmode=require`.
    pub fn connect_with_ca(
        url: &str,
        kek: MasterKey,
        ca_file: Option<&Path>,
    ) -> Result<PgVault, PrivacyError> {
        let mut config: Config = url.parse().map_err(|_| PrivacyError::Invalid {
            what: "key vault URL",
            reason: "not a PostgreSQL connection string (postgres://user@host/db or \
                     `host=... dbname=...`)"
                .to_owned(),
        })?;
        config
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .application_name("refledger-vault");
        // Everything that can fail before the runtime exists comes first: a runtime
        // dropped by blocking panics inside another one (the server's).
        let tls = match (config.get_ssl_mode(), ca_file) {
            (SslMode::Require, ca_file) => Some(tls::Tls::new(ca_file)?),
            (_, None) => None,
            (_, Some(_)) => {
                return Err(PrivacyError::Invalid {
                    what: "key vault URL",
                    reason: "a CA file is given but the URL does not say sslmode=require"
                        .to_owned(),
                })
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("refledger-pg-vault")
            .enable_all()
            .build()
            .map_err(|error| {
                PrivacyError::unavailable("cannot start the vault's runtime", error)
            })?;
        let kek_id = kek.id();
        let pool = Pool::new(Endpoint { config, tls });
        let opened = {
            let (pool, kek) = (pool.clone(), kek.clone());
            run_on(&runtime, "opening the vault", async move {
                let mut client = pool.get().await?;
                let key = initialise(client.client_mut(), &kek).await?;
                client.reusable();
                Ok(key)
            })
        };
        let fingerprint_key = match opened {
            Ok(key) => key,
            Err(error) => {
                // Dropped by blocking, a runtime panics inside another one (the server's).
                runtime.shutdown_background();
                return Err(error);
            }
        };
        let shared = Arc::new(Shared {
            kek,
            kek_id,
            fingerprint_key,
            pool,
            cache: Mutex::new(Cache {
                entries: HashMap::new(),
                listening: false,
                invalidations: 0,
            }),
        });
        runtime.spawn(listen(Arc::downgrade(&shared)));
        Ok(PgVault {
            shared,
            runtime: Some(runtime),
        })
    }

    /// Whether the shred listener is connected (and the cache in use). For tests and
    /// health checks.
    pub fn listening(&self) -> bool {
        self.shared.cache().listening
    }

    /// Copies everything `contents` holds (from [`DirVault::contents`]) into this vault:
    /// keys re-wrapped under this vault's KEK, tombstones, fingerprints, and the
    /// fingerprint key (so fingerprints taken before still match). Safe to run again.
    /// Refuses to mix two vaults: a subject whose key differs here, or a vault here that
    /// has fingerprints under another fingerprint key.
    ///
    /// [`DirVault::contents`]: super::dir::DirVault::contents
    pub fn import(self, contents: &VaultContents) -> Result<ImportReport, PrivacyError> {
        let shared = Arc::clone(&self.shared);
        let records = ImportRecords::from(&self.shared, contents)?;
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the vault");
        let report = run_within(runtime, "importing a vault", BULK_TIMEOUT, async move {
            let mut client = shared.pool.get().await?;
            let report = import(client.client_mut(), &shared, records).await?;
            client.reusable();
            Ok(report)
        })?;
        // The fingerprint key may have been replaced: this handle must use the new one.
        // It cannot change under a live handle, so the caller reconnects.
        Ok(report)
    }

    /// Re-wraps every data key and the fingerprint key under `new`, in one transaction,
    /// and makes `new` the vault's key-encryption key. Stop every instance first: one
    /// still on the old KEK cannot read keys re-wrapped under the new one (it answers
    /// `vault_corrupted`) and may not create keys (`vault_wrong_master_key`). Afterwards,
    /// destroy the old KEK: remnants of shredded keys in dead rows, WAL and backups then
    /// open under nothing.
    pub fn rotate_kek(self, new: &MasterKey) -> Result<KekRotationReport, PrivacyError> {
        let shared = Arc::clone(&self.shared);
        let new = new.clone();
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the vault");
        run_within(runtime, "rotating the KEK", BULK_TIMEOUT, async move {
            let mut client = shared.pool.get().await?;
            let report = rotate_kek(client.client_mut(), &shared, &new).await?;
            client.reusable();
            Ok(report)
        })
    }

    /// [`run`](PgVault::run), trying once more on a fresh connection if the first try
    /// found the database unavailable: a pooled connection may have died with a server
    /// restart without knowing it yet. Both tries share the one deadline. Every vault
    /// operation may run twice: each looks again under its lock before it changes
    /// anything.
    fn run_retrying<T, F, Fut>(&self, what: &'static str, operation: F) -> Result<T, PrivacyError>
    where
        T: Send + 'static,
        F: Fn(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PrivacyError>> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        self.run(what, async move {
            match operation(Arc::clone(&shared)).await {
                Err(PrivacyError::VaultUnavailable { reason }) => {
                    tracing::debug!(%reason, "{what}: trying again on a fresh connection");
                    shared.pool.discard_idle();
                    operation(shared).await
                }
                other => other,
            }
        })
    }

    fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        operation: impl Future<Output = Result<T, PrivacyError>> + Send + 'static,
    ) -> Result<T, PrivacyError> {
        run_on(
            self.runtime
                .as_ref()
                .expect("the runtime lives as long as the vault"),
            what,
            operation,
        )
    }

    /// The entry for `(subject, group)` from the cache, or the database (no lock).
    fn lookup(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
        use_cache: bool,
    ) -> Result<Option<Cached>, PrivacyError> {
        let epoch = {
            let mut cache = self.shared.cache();
            if use_cache {
                if let Some(found) = cache.get(subject, group) {
                    return Ok(Some(found));
                }
            }
            cache.invalidations
        };
        let found = self.run_retrying("reading a key", move |shared| async move {
            let client = shared.pool.get().await?;
            let found = read_entry(client.client(), &shared, subject, group).await?;
            client.reusable();
            Ok(found)
        })?;
        if let Some(found) = &found {
            self.shared
                .cache()
                .put(subject, group, found.clone(), epoch);
        }
        Ok(found)
    }
}

impl Drop for PgVault {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl KeyVault for PgVault {
    fn key_for_write(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
    ) -> Result<DataKey, PrivacyError> {
        match self.lookup(subject, group, true)? {
            Some(Cached::Key(key)) => return Ok(key),
            Some(Cached::Erased(at)) => {
                return Err(PrivacyError::SubjectErased { subject, group, at })
            }
            None => {}
        }
        let epoch = self.shared.cache().invalidations;
        let created = self.run_retrying("creating a key", move |shared| async move {
            let mut client = shared.pool.get().await?;
            let created = create_key(client.client_mut(), &shared, subject, group).await?;
            client.reusable();
            Ok(created)
        })?;
        self.shared
            .cache()
            .put(subject, group, created.clone(), epoch);
        match created {
            Cached::Key(key) => Ok(key),
            Cached::Erased(at) => Err(PrivacyError::SubjectErased { subject, group, at }),
        }
    }

    fn key_for_read(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
        key_id: Uuid,
    ) -> Result<KeyLookup, PrivacyError> {
        let mut use_cache = true;
        loop {
            match self.lookup(subject, group, use_cache)? {
                Some(Cached::Key(key)) if key.id() == key_id => return Ok(KeyLookup::Found(key)),
                Some(Cached::Erased(at)) => return Ok(KeyLookup::Erased { at }),
                // A cached key of another id cannot be (one key per subject and group,
                // forever), but "missing" is said only on the database's word.
                Some(Cached::Key(_)) | None if use_cache => use_cache = false,
                Some(Cached::Key(_)) | None => {
                    return Err(PrivacyError::KeyMissing {
                        subject,
                        group,
                        key_id,
                    })
                }
            }
        }
    }

    fn shred(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
        at: DateTime<Utc>,
    ) -> Result<ShredOutcome, PrivacyError> {
        let outcome = self.run_retrying("shredding a key", move |shared| async move {
            let mut client = shared.pool.get().await?;
            let outcome = shred(client.client_mut(), subject, group, at).await?;
            client.reusable();
            Ok(outcome)
        })?;
        let erased_at = match outcome {
            ShredOutcome::Shredded { at } | ShredOutcome::AlreadyErased { at } => at,
        };
        let mut cache = self.shared.cache();
        cache.invalidate(subject, group);
        let epoch = cache.invalidations;
        cache.put(subject, group, Cached::Erased(erased_at), epoch);
        Ok(outcome)
    }

    fn erased_at(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
    ) -> Result<Option<DateTime<Utc>>, PrivacyError> {
        Ok(match self.lookup(subject, group, true)? {
            Some(Cached::Erased(at)) => Some(at),
            _ => None,
        })
    }

    fn fingerprint(
        &self,
        kind: FingerprintKind,
        value: &PersonalText,
    ) -> Result<Fingerprint, PrivacyError> {
        Ok(Fingerprint::compute(
            self.shared.fingerprint_key.as_ref(),
            kind,
            value,
        ))
    }

    fn record_fingerprint(
        &self,
        subject: SubjectId,
        fingerprint: &Fingerprint,
    ) -> Result<(), PrivacyError> {
        let fingerprint = *fingerprint;
        self.run_retrying("recording a fingerprint", move |shared| async move {
            let mut client = shared.pool.get().await?;
            record_fingerprint(client.client_mut(), subject, &fingerprint).await?;
            client.reusable();
            Ok(())
        })
    }

    fn subjects_with(&self, fingerprint: &Fingerprint) -> Result<Vec<SubjectId>, PrivacyError> {
        let fingerprint = *fingerprint;
        self.run_retrying("looking up a fingerprint", move |shared| async move {
            let client = shared.pool.get().await?;
            let rows = client
                .client()
                .query(
                    "SELECT DISTINCT subject_id FROM refledger_vault_fingerprints \
                     WHERE kind = $1 AND mac = $2 ORDER BY subject_id LIMIT $3",
                    &[
                        &kind_name(fingerprint.kind),
                        &fingerprint.mac.as_slice(),
                        &(SUBJECTS_PER_FINGERPRINT_MAX as i64 + 1),
                    ],
                )
                .await
                .map_err(|error| db_error("cannot look up a fingerprint", &error))?;
            client.reusable();
            if rows.len() > SUBJECTS_PER_FINGERPRINT_MAX {
                tracing::warn!(
                    kind = kind_name(fingerprint.kind),
                    "a fingerprint is shared by more than subjects_per_fingerprint_max \
                     {SUBJECTS_PER_FINGERPRINT_MAX} subjects; the first are returned"
                );
            }
            let mut subjects: Vec<SubjectId> = rows
                .iter()
                .take(SUBJECTS_PER_FINGERPRINT_MAX)
                .map(|row| SubjectId::new(row.get::<_, Uuid>(0)))
                .collect();
            // The database orders uuids bytewise, as `Uuid` does; sorted again to not
            // depend on it.
            subjects.sort();
            Ok(subjects)
        })
    }
}

impl Shared {
    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().expect("vault cache lock poisoned")
    }

    fn unwrap_key(
        &self,
        subject: SubjectId,
        group: ErasureGroup,
        key_id: Uuid,
        version: i32,
        wrapped: &[u8],
        kek_id: &str,
    ) -> Result<DataKey, PrivacyError> {
        let corrupted = |reason: String| PrivacyError::VaultCorrupted {
            path: record_path("refledger_vault_keys", subject, group),
            reason,
        };
        if kek_id != self.kek_id {
            return Err(corrupted(format!(
                "wrapped by key-encryption key {kek_id}, not {}",
                self.kek_id
            )));
        }
        let version =
            u32::try_from(version).map_err(|_| corrupted(format!("key version {version}")))?;
        let aad = data_key_aad(subject, group, key_id, version);
        let bytes = self.kek.unwrap(wrapped, &aad).ok_or_else(|| {
            corrupted("the key does not open under the key-encryption key".to_owned())
        })?;
        Ok(DataKey::from_parts(key_id, version, *bytes))
    }
}

impl Cache {
    fn get(&mut self, subject: SubjectId, group: ErasureGroup) -> Option<Cached> {
        if !self.listening {
            return None;
        }
        let (entry, since) = self.entries.get(&(subject, group))?;
        if since.elapsed() < KEY_CACHE_TTL {
            return Some(entry.clone());
        }
        self.entries.remove(&(subject, group));
        None
    }

    fn put(&mut self, subject: SubjectId, group: ErasureGroup, entry: Cached, epoch: u64) {
        if !self.listening || self.invalidations != epoch {
            return;
        }
        if self.entries.len() >= KEY_CACHE_ENTRIES_MAX {
            self.entries.clear();
        }
        self.entries
            .insert((subject, group), (entry, Instant::now()));
    }

    fn invalidate(&mut self, subject: SubjectId, group: ErasureGroup) {
        self.entries.remove(&(subject, group));
        self.invalidations += 1;
    }

    /// Empties the cache and starts or stops using it.
    fn reset(&mut self, listening: bool) {
        self.entries.clear();
        self.listening = listening;
        self.invalidations += 1;
    }
}

/// Runs `operation` on the vault's runtime and waits for it, at most
/// [`OPERATION_TIMEOUT`]. Blocking on a std channel is allowed on any thread, a tokio
/// worker's included.
fn run_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    what: &'static str,
    operation: impl Future<Output = Result<T, PrivacyError>> + Send + 'static,
) -> Result<T, PrivacyError> {
    run_within(runtime, what, OPERATION_TIMEOUT, operation)
}

/// [`run_on`] with another deadline, for the bulk work of an operator's command.
fn run_within<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    what: &'static str,
    deadline: Duration,
    operation: impl Future<Output = Result<T, PrivacyError>> + Send + 'static,
) -> Result<T, PrivacyError> {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let result = match tokio::time::timeout(deadline, operation).await {
            Ok(result) => result,
            Err(_) => Err(PrivacyError::VaultUnavailable {
                reason: format!(
                    "{what}: no answer from PostgreSQL within {} s",
                    deadline.as_secs()
                ),
            }),
        };
        // The caller may have given up; then nobody needs the answer.
        let _ = sender.send(result);
    });
    receiver
        .recv_timeout(deadline + Duration::from_secs(1))
        .unwrap_or_else(|_| {
            Err(PrivacyError::VaultUnavailable {
                reason: format!("{what}: the vault's connection thread did not answer"),
            })
        })
}

fn db_error(context: &str, error: &tokio_postgres::Error) -> PrivacyError {
    let reason = match error.as_db_error() {
        Some(db) => format!("{context}: {} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(error) {
            Some(source) => format!("{context}: {error}: {source}"),
            None => format!("{context}: {error}"),
        },
    };
    PrivacyError::VaultUnavailable { reason }
}

/// Names a row in errors, as `VaultCorrupted` names a file.
fn record_path(table: &str, subject: SubjectId, group: ErasureGroup) -> PathBuf {
    PathBuf::from(format!("postgres:{table}/{subject}.{group}"))
}

fn kind_name(kind: FingerprintKind) -> &'static str {
    match kind {
        FingerprintKind::Email => "email",
        FingerprintKind::Ip => "ip",
        FingerprintKind::Payment => "payment",
    }
}

/// The advisory lock serialising creation, shredding and fingerprinting of one subject's
/// group across every instance. Two subjects whose numbers collide only wait for each
/// other.
fn lock_id(subject: SubjectId, group: ErasureGroup) -> i64 {
    let mut hash = Sha256::new();
    hash.update(b"refledger.vault.lock.v1");
    hash.update(subject.as_uuid().as_bytes());
    hash.update([group.tag()]);
    let digest = hash.finalize();
    i64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

async fn lock(
    client: &impl GenericClient,
    subject: SubjectId,
    group: ErasureGroup,
) -> Result<(), PrivacyError> {
    client
        .execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&lock_id(subject, group)],
        )
        .await
        .map_err(|error| db_error("cannot lock the subject's keys", &error))?;
    Ok(())
}

/// The schema, the format and the fingerprint key: creates what is missing (under an
/// advisory lock, so two instances starting together do not race), checks the rest.
async fn initialise(
    client: &mut Client,
    kek: &MasterKey,
) -> Result<Zeroizing<[u8; KEY_SIZE]>, PrivacyError> {
    let unavailable =
        |error: tokio_postgres::Error| db_error("cannot create the vault schema", &error);
    let transaction = client.transaction().await.map_err(unavailable)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_ID])
        .await
        .map_err(unavailable)?;
    // Not a notice per table that exists already, on every start.
    transaction
        .batch_execute("SET LOCAL client_min_messages TO warning")
        .await
        .map_err(unavailable)?;
    transaction
        .batch_execute(SCHEMA_SQL)
        .await
        .map_err(unavailable)?;
    let mut fresh = Zeroizing::new([0u8; KEY_SIZE]);
    random_bytes(fresh.as_mut())?;
    let wrapped = kek.wrap(&fresh, FINGERPRINT_KEY_AAD)?;
    transaction
        .execute(
            "INSERT INTO refledger_vault_meta (singleton, format, kek_id, fingerprint_key) \
             VALUES (true, $1, $2, $3) ON CONFLICT (singleton) DO NOTHING",
            &[&PG_VAULT_FORMAT, &kek.id(), &wrapped],
        )
        .await
        .map_err(unavailable)?;
    let row = transaction
        .query_one(
            "SELECT format, kek_id, fingerprint_key FROM refledger_vault_meta",
            &[],
        )
        .await
        .map_err(unavailable)?;
    transaction.commit().await.map_err(unavailable)?;
    meta_fingerprint_key(&row, kek)
}

/// Any constant: the lock serialising schema creation.
const SCHEMA_LOCK_ID: i64 = 0x7265_666c_6564_6772;

fn meta_fingerprint_key(
    row: &Row,
    kek: &MasterKey,
) -> Result<Zeroizing<[u8; KEY_SIZE]>, PrivacyError> {
    let path = PathBuf::from("postgres:refledger_vault_meta");
    let format: i32 = row.get(0);
    if format != PG_VAULT_FORMAT {
        return Err(PrivacyError::VaultCorrupted {
            path,
            reason: format!("unknown vault format {format}"),
        });
    }
    let kek_id: String = row.get(1);
    if kek_id != kek.id() {
        return Err(PrivacyError::WrongMasterKey {
            given: kek.id(),
            expected: kek_id,
        });
    }
    let wrapped: Vec<u8> = row.get(2);
    kek.unwrap(&wrapped, FINGERPRINT_KEY_AAD)
        .ok_or_else(|| PrivacyError::VaultCorrupted {
            path,
            reason: "the fingerprint key does not open under the key-encryption key".to_owned(),
        })
}

/// Tombstone and key of one subject's group, in one statement (one snapshot).
const READ_ENTRY_SQL: &str =
    "SELECT t.erased_at, k.key_id, k.key_version, k.wrapped_key, k.kek_id \
     FROM (VALUES (1)) AS one (x) \
     LEFT JOIN refledger_vault_tombstones t ON t.subject_id = $1 AND t.erasure_group = $2 \
     LEFT JOIN refledger_vault_keys k ON k.subject_id = $1 AND k.erasure_group = $2";

async fn read_entry(
    client: &impl GenericClient,
    shared: &Shared,
    subject: SubjectId,
    group: ErasureGroup,
) -> Result<Option<Cached>, PrivacyError> {
    let row = client
        .query_one(READ_ENTRY_SQL, &[&subject.as_uuid(), &group.as_str()])
        .await
        .map_err(|error| db_error("cannot read a key", &error))?;
    if let Some(at) = row.get::<_, Option<DateTime<Utc>>>(0) {
        // The tombstone wins, as in the directory vault; a key beside it cannot be (they
        // are written under one lock) and is never handed out.
        return Ok(Some(Cached::Erased(at)));
    }
    let Some(key_id) = row.get::<_, Option<Uuid>>(1) else {
        return Ok(None);
    };
    let version: i32 = row.get(2);
    let wrapped: Vec<u8> = row.get(3);
    let kek_id: String = row.get(4);
    shared
        .unwrap_key(subject, group, key_id, version, &wrapped, &kek_id)
        .map(|key| Some(Cached::Key(key)))
}

async fn create_key(
    client: &mut Client,
    shared: &Shared,
    subject: SubjectId,
    group: ErasureGroup,
) -> Result<Cached, PrivacyError> {
    let unavailable = |error: tokio_postgres::Error| db_error("cannot create a key", &error);
    let transaction = client.transaction().await.map_err(unavailable)?;
    lock(&transaction, subject, group).await?;
    // Under the lock, this statement sees whatever another instance committed before.
    if let Some(found) = read_entry(&transaction, shared, subject, group).await? {
        return Ok(found);
    }
    // A new key is wrapped by our KEK: it must still be the vault's. The share lock waits
    // for a KEK rotation in progress, then reads what it committed.
    let current: String = transaction
        .query_one("SELECT kek_id FROM refledger_vault_meta FOR SHARE", &[])
        .await
        .map_err(unavailable)?
        .get(0);
    if current != shared.kek_id {
        return Err(PrivacyError::WrongMasterKey {
            given: shared.kek_id.clone(),
            expected: current,
        });
    }
    let key = DataKey::generate()?;
    let aad = data_key_aad(subject, group, key.id(), key.version());
    let wrapped = shared.kek.wrap(key.bytes(), &aad)?;
    let version = i32::try_from(key.version()).expect("key versions are small");
    let inserted = transaction
        .execute(
            "INSERT INTO refledger_vault_keys \
             (subject_id, erasure_group, key_id, key_version, wrapped_key, kek_id) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (subject_id, erasure_group) DO NOTHING",
            &[
                &subject.as_uuid(),
                &group.as_str(),
                &key.id(),
                &version,
                &wrapped,
                &shared.kek_id,
            ],
        )
        .await
        .map_err(unavailable)?;
    if inserted == 0 {
        // Someone inserted without the lock: theirs is the key.
        let found = read_entry(&transaction, shared, subject, group).await?;
        transaction.commit().await.map_err(unavailable)?;
        return found.ok_or_else(|| PrivacyError::VaultUnavailable {
            reason: "a key insert conflicted but no key is stored".to_owned(),
        });
    }
    // Durable before anything is sealed under it (synchronous_commit is on).
    transaction.commit().await.map_err(unavailable)?;
    Ok(Cached::Key(key))
}

async fn shred(
    client: &mut Client,
    subject: SubjectId,
    group: ErasureGroup,
    at: DateTime<Utc>,
) -> Result<ShredOutcome, PrivacyError> {
    let unavailable = |error: tokio_postgres::Error| db_error("cannot shred a key", &error);
    let transaction = client.transaction().await.map_err(unavailable)?;
    lock(&transaction, subject, group).await?;
    let before = transaction
        .query_opt(
            "SELECT erased_at FROM refledger_vault_tombstones \
             WHERE subject_id = $1 AND erasure_group = $2",
            &[&subject.as_uuid(), &group.as_str()],
        )
        .await
        .map_err(unavailable)?;
    if let Some(row) = before {
        return Ok(ShredOutcome::AlreadyErased { at: row.get(0) });
    }
    let (id, name) = (subject.as_uuid(), group.as_str());
    transaction
        .execute(
            "INSERT INTO refledger_vault_tombstones (subject_id, erasure_group, erased_at) \
             VALUES ($1, $2, $3)",
            &[&id, &name, &at],
        )
        .await
        .map_err(unavailable)?;
    transaction
        .execute(
            "DELETE FROM refledger_vault_keys WHERE subject_id = $1 AND erasure_group = $2",
            &[&id, &name],
        )
        .await
        .map_err(unavailable)?;
    transaction
        .execute(
            "DELETE FROM refledger_vault_fingerprints \
             WHERE subject_id = $1 AND erasure_group = $2",
            &[&id, &name],
        )
        .await
        .map_err(unavailable)?;
    // Delivered to every listener when (and only if) the transaction commits.
    transaction
        .execute(
            "SELECT pg_notify($1, $2)",
            &[&SHRED_CHANNEL, &format!("{subject}:{group}")],
        )
        .await
        .map_err(unavailable)?;
    transaction.commit().await.map_err(unavailable)?;
    Ok(ShredOutcome::Shredded { at })
}

async fn record_fingerprint(
    client: &mut Client,
    subject: SubjectId,
    fingerprint: &Fingerprint,
) -> Result<(), PrivacyError> {
    let unavailable =
        |error: tokio_postgres::Error| db_error("cannot record a fingerprint", &error);
    let group = fingerprint.kind.group();
    let (id, name, kind) = (
        subject.as_uuid(),
        group.as_str(),
        kind_name(fingerprint.kind),
    );
    let transaction = client.transaction().await.map_err(unavailable)?;
    lock(&transaction, subject, group).await?;
    let row = transaction
        .query_one(
            "SELECT (SELECT erased_at FROM refledger_vault_tombstones \
                     WHERE subject_id = $1 AND erasure_group = $2), \
                    (SELECT count(*) FROM refledger_vault_fingerprints \
                     WHERE subject_id = $1 AND erasure_group = $2), \
                    EXISTS (SELECT 1 FROM refledger_vault_fingerprints \
                     WHERE subject_id = $1 AND erasure_group = $2 AND kind = $3 AND mac = $4)",
            &[&id, &name, &kind, &fingerprint.mac.as_slice()],
        )
        .await
        .map_err(unavailable)?;
    if let Some(at) = row.get::<_, Option<DateTime<Utc>>>(0) {
        return Err(PrivacyError::SubjectErased { subject, group, at });
    }
    if row.get::<_, bool>(2) {
        return Ok(());
    }
    let count = usize::try_from(row.get::<_, i64>(1)).unwrap_or(usize::MAX);
    if count >= FINGERPRINTS_PER_SUBJECT_MAX {
        return Err(PrivacyError::LimitExceeded {
            limit: "fingerprints_per_subject_max",
            max: FINGERPRINTS_PER_SUBJECT_MAX,
            actual: count + 1,
        });
    }
    transaction
        .execute(
            "INSERT INTO refledger_vault_fingerprints (subject_id, erasure_group, kind, mac) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[&id, &name, &kind, &fingerprint.mac.as_slice()],
        )
        .await
        .map_err(unavailable)?;
    transaction.commit().await.map_err(unavailable)?;
    Ok(())
}

/// A vault's contents made ready for this one: keys wrapped under its KEK.
struct ImportRecords {
    fingerprint_key: Vec<u8>,
    keys: Vec<WrappedKey>,
    tombstones: Vec<(SubjectId, ErasureGroup, DateTime<Utc>)>,
    fingerprints: Vec<(SubjectId, Fingerprint)>,
    same_fingerprint_key: bool,
}

struct WrappedKey {
    subject: SubjectId,
    group: ErasureGroup,
    key_id: Uuid,
    version: i32,
    wrapped: Vec<u8>,
    created_at: DateTime<Utc>,
}

impl ImportRecords {
    fn from(shared: &Shared, contents: &VaultContents) -> Result<ImportRecords, PrivacyError> {
        let mut keys = Vec::with_capacity(contents.keys.len());
        for record in &contents.keys {
            let aad = data_key_aad(
                record.subject,
                record.group,
                record.key.id(),
                record.key.version(),
            );
            keys.push(WrappedKey {
                subject: record.subject,
                group: record.group,
                key_id: record.key.id(),
                version: i32::try_from(record.key.version()).map_err(|_| {
                    PrivacyError::Invalid {
                        what: "key version",
                        reason: format!("{} does not fit the vault", record.key.version()),
                    }
                })?,
                wrapped: shared.kek.wrap(record.key.bytes(), &aad)?,
                created_at: record.created_at,
            });
        }
        Ok(ImportRecords {
            fingerprint_key: shared
                .kek
                .wrap(&contents.fingerprint_key, FINGERPRINT_KEY_AAD)?,
            keys,
            tombstones: contents.tombstones.clone(),
            fingerprints: contents.fingerprints.clone(),
            same_fingerprint_key: *contents.fingerprint_key == *shared.fingerprint_key,
        })
    }
}

/// The copy, in one transaction: all of it or nothing.
async fn import(
    client: &mut Client,
    shared: &Shared,
    records: ImportRecords,
) -> Result<ImportReport, PrivacyError> {
    let unavailable = |error: tokio_postgres::Error| db_error("cannot import the vault", &error);
    let mut report = ImportReport::default();
    let transaction = client.transaction().await.map_err(unavailable)?;
    transaction
        .batch_execute("SET LOCAL statement_timeout TO 0")
        .await
        .map_err(unavailable)?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_ID])
        .await
        .map_err(unavailable)?;
    if !records.same_fingerprint_key {
        let row = transaction
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM refledger_vault_fingerprints)",
                &[],
            )
            .await
            .map_err(unavailable)?;
        if row.get::<_, bool>(0) {
            return Err(PrivacyError::Invalid {
                what: "vault import",
                reason: "the PostgreSQL vault already holds fingerprints under another \
                         fingerprint key; import into an empty vault"
                    .to_owned(),
            });
        }
        transaction
            .execute(
                "UPDATE refledger_vault_meta SET fingerprint_key = $1",
                &[&records.fingerprint_key],
            )
            .await
            .map_err(unavailable)?;
    }
    for (subject, group, at) in &records.tombstones {
        let (id, name) = (subject.as_uuid(), group.as_str());
        report.tombstones_copied += transaction
            .execute(
                "INSERT INTO refledger_vault_tombstones (subject_id, erasure_group, erased_at) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&id, &name, at],
            )
            .await
            .map_err(unavailable)? as usize;
        for table in ["refledger_vault_keys", "refledger_vault_fingerprints"] {
            transaction
                .execute(
                    &format!("DELETE FROM {table} WHERE subject_id = $1 AND erasure_group = $2"),
                    &[&id, &name],
                )
                .await
                .map_err(unavailable)?;
        }
    }
    for WrappedKey {
        subject,
        group,
        key_id,
        version,
        wrapped,
        created_at,
    } in &records.keys
    {
        let (id, name) = (subject.as_uuid(), group.as_str());
        let row = transaction
            .query_one(
                "SELECT (SELECT erased_at FROM refledger_vault_tombstones \
                         WHERE subject_id = $1 AND erasure_group = $2), \
                        (SELECT key_id FROM refledger_vault_keys \
                         WHERE subject_id = $1 AND erasure_group = $2)",
                &[&id, &name],
            )
            .await
            .map_err(unavailable)?;
        if row.get::<_, Option<DateTime<Utc>>>(0).is_some() {
            // Erased here already: the key must not come back.
            continue;
        }
        match row.get::<_, Option<Uuid>>(1) {
            Some(present) if present == *key_id => report.keys_present += 1,
            Some(present) => {
                return Err(PrivacyError::Invalid {
                    what: "vault import",
                    reason: format!(
                        "subject {subject} has {group} key {present} in PostgreSQL but \
                         {key_id} in the source vault; these vaults belong to different logs"
                    ),
                })
            }
            None => {
                transaction
                    .execute(
                        "INSERT INTO refledger_vault_keys (subject_id, erasure_group, key_id, \
                         key_version, wrapped_key, kek_id, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[
                            &id,
                            &name,
                            key_id,
                            version,
                            wrapped,
                            &shared.kek_id,
                            created_at,
                        ],
                    )
                    .await
                    .map_err(unavailable)?;
                report.keys_copied += 1;
            }
        }
    }
    for (subject, fingerprint) in &records.fingerprints {
        let group = fingerprint.kind.group();
        report.fingerprints_copied += transaction
            .execute(
                "INSERT INTO refledger_vault_fingerprints (subject_id, erasure_group, kind, mac) \
                 SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM \
                 refledger_vault_tombstones WHERE subject_id = $1 AND erasure_group = $2) \
                 ON CONFLICT DO NOTHING",
                &[
                    &subject.as_uuid(),
                    &group.as_str(),
                    &kind_name(fingerprint.kind),
                    &fingerprint.mac.as_slice(),
                ],
            )
            .await
            .map_err(unavailable)? as usize;
    }
    transaction.commit().await.map_err(unavailable)?;
    Ok(report)
}

async fn rotate_kek(
    client: &mut Client,
    shared: &Shared,
    new: &MasterKey,
) -> Result<KekRotationReport, PrivacyError> {
    let unavailable = |error: tokio_postgres::Error| db_error("cannot rotate the KEK", &error);
    let transaction = client.transaction().await.map_err(unavailable)?;
    transaction
        .batch_execute("SET LOCAL statement_timeout TO 0")
        .await
        .map_err(unavailable)?;
    // The meta row locked first: key creation reads it FOR SHARE, so no key wrapped by
    // the old KEK can be added while (or after) this runs.
    let current: String = transaction
        .query_one("SELECT kek_id FROM refledger_vault_meta FOR UPDATE", &[])
        .await
        .map_err(unavailable)?
        .get(0);
    if current != shared.kek_id {
        return Err(PrivacyError::WrongMasterKey {
            given: shared.kek_id.clone(),
            expected: current,
        });
    }
    let new_id = new.id();
    let rows = transaction
        .query(
            "SELECT subject_id, erasure_group, key_id, key_version, wrapped_key, kek_id \
             FROM refledger_vault_keys FOR UPDATE",
            &[],
        )
        .await
        .map_err(unavailable)?;
    let mut keys_rewrapped = 0;
    for row in &rows {
        let subject = SubjectId::new(row.get(0));
        let group_name: String = row.get(1);
        let group =
            ErasureGroup::parse(&group_name).ok_or_else(|| PrivacyError::VaultCorrupted {
                path: PathBuf::from("postgres:refledger_vault_keys"),
                reason: format!("unknown erasure group {group_name:?}"),
            })?;
        let wrapped: Vec<u8> = row.get(4);
        let kek_id: String = row.get(5);
        let key = shared.unwrap_key(subject, group, row.get(2), row.get(3), &wrapped, &kek_id)?;
        let aad = data_key_aad(subject, group, key.id(), key.version());
        transaction
            .execute(
                "UPDATE refledger_vault_keys SET wrapped_key = $3, kek_id = $4 \
                 WHERE subject_id = $1 AND erasure_group = $2",
                &[
                    &subject.as_uuid(),
                    &group.as_str(),
                    &new.wrap(key.bytes(), &aad)?,
                    &new_id,
                ],
            )
            .await
            .map_err(unavailable)?;
        keys_rewrapped += 1;
    }
    transaction
        .execute(
            "UPDATE refledger_vault_meta SET kek_id = $1, fingerprint_key = $2",
            &[
                &new_id,
                &new.wrap(&shared.fingerprint_key, FINGERPRINT_KEY_AAD)?,
            ],
        )
        .await
        .map_err(unavailable)?;
    transaction.commit().await.map_err(unavailable)?;
    Ok(KekRotationReport { keys_rewrapped })
}

/// Keeps a `LISTEN` connection on [`SHRED_CHANNEL`] and drops shredded keys from the
/// cache; while it is down, the cache is empty and unused. Ends when the vault is dropped.
async fn listen(shared: std::sync::Weak<Shared>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(endpoint) = shared.upgrade().map(|shared| shared.pool.endpoint.clone()) else {
            return;
        };
        match listen_once(&shared, &endpoint).await {
            Ok(()) => return,
            Err(reason) => {
                if let Some(shared) = shared.upgrade() {
                    shared.cache().reset(false);
                }
                tracing::warn!(%reason, "key vault listener down; key cache off until it is back");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One listener connection, until it fails (`Err`) or the vault is gone (`Ok`).
async fn listen_once(shared: &std::sync::Weak<Shared>, endpoint: &Endpoint) -> Result<(), String> {
    let (client, mut driver) =
        tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(Some(shared.clone())))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|error| error.to_string())?;
    client
        .batch_execute(&format!("LISTEN {SHRED_CHANNEL}"))
        .await
        .map_err(|error| error.to_string())?;
    match shared.upgrade() {
        Some(shared) => shared.cache().reset(true),
        None => return Ok(()),
    }
    let mut ping = tokio::time::interval(LISTENER_PING_INTERVAL);
    loop {
        tokio::select! {
            _ = &mut driver => return Err("the listener's connection closed".to_owned()),
            _ = ping.tick() => {
                if shared.strong_count() == 0 {
                    return Ok(());
                }
                match tokio::time::timeout(LISTENER_PING_TIMEOUT, client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Err(error.to_string()),
                    Err(_) => return Err("the listener's connection stopped answering".to_owned()),
                }
            }
        }
    }
}

fn parse_notification(payload: &str) -> Option<(SubjectId, ErasureGroup)> {
    let (subject, group) = payload.split_once(':')?;
    Some((
        SubjectId::new(Uuid::parse_str(subject).ok()?),
        ErasureGroup::parse(group)?,
    ))
}

/// A few connections, each used by one operation at a time. A connection is put back
/// only when its operation finished (a timed-out one may be mid-transaction).
#[derive(Clone)]
struct Pool {
    endpoint: Endpoint,
    idle: Arc<Mutex<Vec<Client>>>,
    permits: Arc<Semaphore>,
}

struct Pooled {
    client: Option<Client>,
    idle: Arc<Mutex<Vec<Client>>>,
    reusable: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Pool {
    fn new(endpoint: Endpoint) -> Pool {
        Pool {
            endpoint,
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
        }
    }

    /// Closes every idle connection: the next operations connect afresh.
    fn discard_idle(&self) {
        self.idle.lock().expect("pool lock poisoned").clear();
    }

    async fn get(&self) -> Result<Pooled, PrivacyError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let idle = {
            let mut idle = self.idle.lock().expect("pool lock poisoned");
            std::iter::from_fn(|| idle.pop()).find(|client| !client.is_closed())
        };
        let client = match idle {
            Some(client) => client,
            None => connect(&self.endpoint).await?,
        };
        Ok(Pooled {
            client: Some(client),
            idle: Arc::clone(&self.idle),
            reusable: false,
            _permit: permit,
        })
    }
}

impl Pooled {
    fn client(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }

    fn client_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }

    /// The operation finished: the connection may serve the next one.
    fn reusable(mut self) {
        self.reusable = true;
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if self.reusable && !client.is_closed() {
                self.idle.lock().expect("pool lock poisoned").push(client);
            }
        }
    }
}

/// Where and how to connect: the server, and TLS when the URL requires it.
#[derive(Clone)]
struct Endpoint {
    config: Config,
    tls: Option<tls::Tls>,
}

impl Endpoint {
    /// A new connection, driven by a task of its own (returned); with `notified`, the
    /// task also drops shredded keys from that vault's cache as notifications arrive.
    async fn connect(
        &self,
        notified: Option<std::sync::Weak<Shared>>,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        Ok(match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                (client, tokio::spawn(drive(connection, notified)))
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                (client, tokio::spawn(drive(connection, notified)))
            }
        })
    }
}

/// Runs a connection until it closes, acting on the shred notifications it receives.
async fn drive<S, T>(mut connection: Connection<S, T>, notified: Option<std::sync::Weak<Shared>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                let Some(shared) = notified.as_ref().and_then(std::sync::Weak::upgrade) else {
                    continue;
                };
                let mut cache = shared.cache();
                match parse_notification(notification.payload()) {
                    Some((subject, group)) => cache.invalidate(subject, group),
                    // Not ours to understand: forget everything rather than guess.
                    None => {
                        let listening = cache.listening;
                        cache.reset(listening)
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                tracing::debug!(%error, "key vault connection closed");
                return;
            }
            None => return,
        }
    }
}

async fn connect(endpoint: &Endpoint) -> Result<Client, PrivacyError> {
    let (client, _driver) = tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect(None))
        .await
        .map_err(|_| PrivacyError::VaultUnavailable {
            reason: format!(
                "cannot connect to PostgreSQL within {} s",
                CONNECT_TIMEOUT.as_secs()
            ),
        })?
        .map_err(|error| db_error("cannot connect to PostgreSQL", &error))?;
    // A shred or a new key must be durable when we answer: raise the session's
    // synchronous_commit if the server's default turned it off.
    let rows = client
        .simple_query("SHOW synchronous_commit")
        .await
        .map_err(|error| db_error("cannot read synchronous_commit", &error))?;
    let setting = rows.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    if setting.as_deref() == Some("off") {
        client
            .batch_execute("SET synchronous_commit TO on")
            .await
            .map_err(|error| db_error("cannot turn synchronous_commit on", &error))?;
    }
    client
        .batch_execute(&format!(
            "SET statement_timeout TO {}",
            OPERATION_TIMEOUT.as_millis()
        ))
        .await
        .map_err(|error| db_error("cannot set statement_timeout", &error))?;
    Ok(client)
}
