//! Which event store the server runs on: the one place that chooses the backend.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ledger::store::file::{FileStore, FileStoreOptions};
use ledger::store::intercept::{AppendHook, Intercepted};
use ledger::store::{
    AppendOutcome, EventStore, ExpectedRevision, NewEvent, StoreError, StreamName,
};

use crate::http::metrics::Metrics;

/// The store of a data directory, and how to close it.
pub struct OpenedStore {
    pub store: Arc<dyn EventStore>,
    backend: Backend,
}

enum Backend {
    File(FileStore),
    #[cfg(feature = "kurrentdb")]
    KurrentDb,
    #[cfg(feature = "pg-store")]
    Postgres,
}

/// The folder of the event log inside the data directory.
pub const LOG_DIR_NAME: &str = "log";

/// Opens the embedded file store of the data directory `data` (in `data/log`), creating
/// it on first run. Swapping the backend changes this module only.
pub async fn open(data: &Path) -> Result<OpenedStore, StoreError> {
    std::fs::create_dir_all(data)
        .map_err(|error| StoreError::io(format!("cannot create {}", data.display()), error))?;
    let store = FileStore::open(data.join(LOG_DIR_NAME), FileStoreOptions::default())?;
    Ok(OpenedStore {
        store: Arc::new(store.clone()),
        backend: Backend::File(store),
    })
}

/// Opens the embedded log of the data directory `data` for reading only: no lock taken,
/// no file written, a torn tail left in place and not read. What `verify`, `export`,
/// `read` and `report` use, so they change no evidence and run beside a server.
pub fn open_read_only(data: &Path) -> Result<FileStore, StoreError> {
    FileStore::open_read_only(data.join(LOG_DIR_NAME))
}

/// Opens the store named by `store`: a PostgreSQL URL (`postgres://...`,
/// `postgresql://...`) or a KurrentDB connection string (`kurrentdb://...`, `esdb://...`,
/// and their `+discover` forms) when one is given, else the embedded file store of the
/// data directory `data`.
pub async fn open_chosen(data: &Path, store: Option<&str>) -> Result<OpenedStore, StoreError> {
    match store {
        None => open(data).await,
        Some(url) if is_postgres_url(url) => open_postgres(url).await,
        Some(connection) => open_kurrentdb(connection).await,
    }
}

/// Opens the store a migration copies into: a PostgreSQL URL, a KurrentDB connection
/// string, or the path of another data directory (whose log must be empty or hold a
/// prefix of the source's events).
pub async fn open_target(target: &str) -> Result<OpenedStore, StoreError> {
    if is_postgres_url(target) {
        open_postgres(target).await
    } else if is_connection_string(target) {
        open_kurrentdb(target).await
    } else {
        open(Path::new(target)).await
    }
}

fn is_connection_string(text: &str) -> bool {
    [
        "kurrentdb://",
        "kurrentdb+discover://",
        "esdb://",
        "esdb+discover://",
    ]
    .iter()
    .any(|scheme| text.starts_with(scheme))
}

fn is_postgres_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

#[cfg(feature = "pg-store")]
async fn open_postgres(url: &str) -> Result<OpenedStore, StoreError> {
    let store = ledger::store::pg::PgStore::connect(url).await?;
    Ok(OpenedStore {
        store: Arc::new(store),
        backend: Backend::Postgres,
    })
}

#[cfg(not(feature = "pg-store"))]
async fn open_postgres(_url: &str) -> Result<OpenedStore, StoreError> {
    Err(StoreError::Unavailable {
        reason: "this binary was built without the `pg-store` feature".to_owned(),
    })
}

#[cfg(feature = "kurrentdb")]
async fn open_kurrentdb(connection: &str) -> Result<OpenedStore, StoreError> {
    use ledger::store::kurrentdb::{ConnectionString, KurrentDbStore};
    let parsed = ConnectionString::parse(connection).map_err(|error| StoreError::Unavailable {
        reason: format!("the KurrentDB connection string is not valid: {error}"),
    })?;
    let store = KurrentDbStore::connect(parsed).await?;
    Ok(OpenedStore {
        store: Arc::new(store),
        backend: Backend::KurrentDb,
    })
}

#[cfg(not(feature = "kurrentdb"))]
async fn open_kurrentdb(_connection: &str) -> Result<OpenedStore, StoreError> {
    Err(StoreError::Unavailable {
        reason: "this binary was built without the `kurrentdb` feature".to_owned(),
    })
}

impl OpenedStore {
    /// Makes everything durable and releases the data directory.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.store.flush().await?;
        match &self.backend {
            Backend::File(store) => store.close().await,
            #[cfg(feature = "kurrentdb")]
            Backend::KurrentDb => Ok(()),
            #[cfg(feature = "pg-store")]
            Backend::Postgres => Ok(()),
        }
    }
}

/// The server's store: every append recorded in the metrics.
pub type MeteredStore = Intercepted<Arc<dyn EventStore>, AppendMetrics>;

/// Wraps `store` so its appends are recorded in `metrics`.
pub fn metered(store: Arc<dyn EventStore>, metrics: Arc<Metrics>) -> MeteredStore {
    Intercepted::new(store, AppendMetrics(metrics))
}

/// Times each append and counts it by result.
#[derive(Clone)]
pub struct AppendMetrics(Arc<Metrics>);

#[async_trait]
impl AppendHook<Arc<dyn EventStore>> for AppendMetrics {
    async fn append(
        &self,
        inner: &Arc<dyn EventStore>,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendOutcome, StoreError> {
        let started = Instant::now();
        let count = events.len();
        let result = inner.append(stream, expected, events).await;
        let label = match &result {
            Ok(_) => "ok",
            Err(StoreError::WrongExpectedVersion { .. }) => "wrong_expected_version",
            Err(StoreError::IdempotencyConflict { .. }) => "idempotency_conflict",
            Err(_) => "error",
        };
        self.0.observe_append(label, count, started.elapsed());
        result
    }
}
