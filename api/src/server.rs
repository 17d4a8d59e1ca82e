//! Running the server: binding, serving until a shutdown signal, and closing the store.
//! Four background tasks run beside it: the retention shredder (hourly), the idempotency
//! table's compaction (daily), the reservation sweeper (`crate::sweeper`, every few
//! seconds) and the head signer (`crate::heads`, on start, every five minutes when the
//! log moved, and on shutdown).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_http::timeout::RequestBodyTimeoutLayer;

use std::sync::Arc;

use ledger::domain::Currency;
use ledger::privacy::{DirVault, KeyVault, MasterKey};
use ledger::service::LedgerConfig;

use crate::cli::ServeArgs;
use crate::http::AppState;
use crate::idempotency::Idempotency;
use crate::keys::{read_key, read_or_create_key, Fingerprinter, FINGERPRINT_KEY_FILE_NAME};
use crate::store::OpenedStore;
use crate::tokens::{resolve_tokens, TokenSource, Tokens};

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] ledger::store::StoreError),
    #[error(transparent)]
    Tokens(#[from] crate::tokens::TokenError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// Builds the state of `serve`: the store, the tokens and the idempotency table of the
/// data directory.
pub async fn prepare(args: &ServeArgs) -> Result<(AppState, OpenedStore), ServeError> {
    // KURRENTDB_URL named the store before there was more than one server backend.
    let store = args
        .store
        .clone()
        .or_else(|| std::env::var("KURRENTDB_URL").ok());
    let opened = crate::store::open_chosen(&args.data, store.as_deref()).await?;
    let (specs, source) = resolve_tokens(&args.token, args.tokens_file.as_deref(), &args.data)?;
    match &source {
        TokenSource::Flags => tracing::info!(count = specs.len(), "tokens from --token"),
        TokenSource::File(path) => {
            tracing::info!(path = %path.display(), count = specs.len(), "tokens from file")
        }
        TokenSource::Generated(path) => {
            // Printed, not only logged: the operator needs this once, whatever the log level.
            eprintln!(
                "generated one API token per role (billing, finance, auditor, privacy, admin) \
                 in {} (mode 0600); send them as `Authorization: Bearer <secret>`",
                path.display()
            );
        }
    }
    let tokens = Tokens::new(&specs)?;
    let idempotency = Idempotency::open(&args.data).map_err(|source| ServeError::Io {
        context: format!(
            "cannot open the idempotency table in {}",
            args.data.display()
        ),
        source,
    })?;
    let fingerprint_key = match &args.fingerprint_key_file {
        // Shared by several instances: made once by the operator, never here.
        Some(path) => read_key(path),
        None => read_or_create_key(&args.data.join(FINGERPRINT_KEY_FILE_NAME)),
    }
    .map_err(|source| ServeError::Io {
        context: format!(
            "cannot read the fingerprint key {}",
            args.fingerprint_key_file
                .clone()
                .unwrap_or_else(|| args.data.join(FINGERPRINT_KEY_FILE_NAME))
                .display()
        ),
        source,
    })?;
    let currency = Currency::parse(&args.currency)
        .map_err(|error| ServeError::Config(format!("--currency: {}", error.problem)))?;
    let vault = open_vault(args)?;
    let state = AppState::new(opened.store.clone(), tokens, idempotency)
        .with_ledger(
            LedgerConfig {
                currency,
                ..LedgerConfig::default()
            },
            vault,
        )
        .with_fingerprinter(Fingerprinter::new(fingerprint_key))
        .with_heads(crate::heads::HeadSigner::open(&args.data).map_err(ServeError::Config)?);
    tracing::info!(
        public_key = %state.heads.public_key(),
        "signed heads: GET /v1/heads/latest; the key is in {}",
        crate::heads::PUBLIC_KEY_FILE_NAME
    );
    if args.demo {
        // On first run only: a log that holds events already keeps them as they are.
        if state.store.head().await?.is_none() {
            // The simulated history (fixtures/demo) gives the reports real numbers; Ada,
            // Bob and Carla, with fixed ids, make the README's quickstart work as written.
            let history = crate::simulate::demo::load(&state.ledger)
                .await
                .map_err(|error| {
                    ServeError::Config(format!("cannot load the demo history: {error}"))
                })?;
            crate::demo::load_people(&state).await.map_err(|error| {
                ServeError::Config(format!("cannot load the demo data: {error}"))
            })?;
            eprintln!(
                "loaded the demo history ({} accounts, {} events; see fixtures/demo)",
                history.summary.accounts, history.summary.events
            );
            eprintln!(
                "loaded the demo data set: accounts {} (Ada) > {} (Bob) > {} (Carla), \
                 payment {}",
                crate::demo::ADA,
                crate::demo::BOB,
                crate::demo::CARLA,
                crate::demo::PAYMENT
            );
        } else {
            tracing::info!("--demo: the log holds events already; nothing loaded");
        }
    }
    Ok((state, opened))
}

/// The shared vault of `--key-vault`, or the key vault of the data directory
/// (`DATA/vault`), under the master key of `--master-key-file`, or of `DATA/master.key`,
/// generated there on first start.
fn open_vault(args: &ServeArgs) -> Result<Arc<dyn KeyVault>, ServeError> {
    crate::vault::open_vault(
        crate::vault::VaultFlags {
            data: &args.data,
            master_key_file: args.master_key_file.as_deref(),
            key_vault: args.key_vault.as_deref(),
            key_vault_kek_file: args.key_vault_kek_file.as_deref(),
            key_vault_ca_file: args.key_vault_ca_file.as_deref(),
        },
        true,
    )
}

/// The key vault of the data directory `data`, under the master key in `master_key_file`
/// or `DATA/master.key`. With `create`, a missing `DATA/master.key` is generated (first
/// start of a server); without, it is an error (an offline command on existing data).
pub fn open_data_vault(
    data: &std::path::Path,
    master_key_file: Option<&std::path::Path>,
    create: bool,
) -> Result<Arc<dyn KeyVault>, ServeError> {
    let config = |error: ledger::privacy::PrivacyError| ServeError::Config(error.to_string());
    let master = match master_key_file {
        Some(path) => MasterKey::from_file(path).map_err(config)?,
        None => {
            let path = data.join(MASTER_KEY_FILE_NAME);
            if path.exists() {
                MasterKey::from_file(&path).map_err(config)?
            } else if !create {
                return Err(ServeError::Config(format!(
                    "no master key: {} does not exist; name the key with --master-key-file",
                    path.display()
                )));
            } else {
                let master = MasterKey::generate().map_err(config)?;
                write_private(&path, master.to_base64().as_bytes()).map_err(|source| {
                    ServeError::Io {
                        context: format!("cannot write {}", path.display()),
                        source,
                    }
                })?;
                eprintln!(
                    "generated the master key of the personal-data vault in {} (mode 0600); \
                     in production keep it apart from the data (--master-key-file)",
                    path.display()
                );
                master
            }
        }
    };
    let vault = DirVault::open(data.join(VAULT_DIR_NAME), master).map_err(config)?;
    Ok(Arc::new(vault))
}

/// The file, in the data directory, of a generated master key.
pub const MASTER_KEY_FILE_NAME: &str = "master.key";
/// The folder, in the data directory, of the key vault.
pub const VAULT_DIR_NAME: &str = "vault";

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// How long the server waits on a client, the edges that keep a slow or silent client
/// from holding a connection (and its file descriptor) for good.
#[derive(Debug, Clone, Copy)]
pub struct Edges {
    /// Most time to receive a request's head, from the first byte the server waits for:
    /// on a new connection, and between requests on a kept-alive one, so it is the idle
    /// timeout too (hyper's header read timeout).
    pub header_read: Duration,
    /// Most time between two pieces of a request body (tower-http's request-body
    /// timeout): a body shorter than its `Content-Length` is answered 408 then.
    pub body_read_idle: Duration,
}

impl Default for Edges {
    fn default() -> Edges {
        Edges {
            header_read: Duration::from_secs(HEADER_READ_SECONDS),
            body_read_idle: Duration::from_secs(BODY_READ_IDLE_SECONDS),
        }
    }
}

/// [`Edges::header_read`] by default: billing's client keeps connections alive across
/// webhooks a few seconds apart; an idle one costs a descriptor.
pub const HEADER_READ_SECONDS: u64 = 15;
/// [`Edges::body_read_idle`] by default: a command's body is at most 64 KiB.
pub const BODY_READ_IDLE_SECONDS: u64 = 10;
/// Most headers a request may carry before hyper refuses it with a bare 431; the API
/// refuses more than `http::error::HEADERS_COUNT_MAX` itself, in problem+json.
const HYPER_HEADERS_MAX: usize = 1000;
/// Most time shutdown waits for in-flight requests before it closes their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

const _: () = assert!(crate::http::error::HEADERS_COUNT_MAX < HYPER_HEADERS_MAX);

/// Serves `state` on `listener` until `shutdown` completes; then stops accepting, lets
/// in-flight requests finish, and flushes the store so nothing acknowledged is lost.
///
/// The loop is hyper-util's rather than `axum::serve`, which sets no timeouts: each
/// connection is HTTP/1.1 with hyper's header read timeout ([`Edges::header_read`]), and
/// every request body passes tower-http's [`RequestBodyTimeoutLayer`].
pub async fn run(
    state: AppState,
    listener: TcpListener,
    edges: Edges,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let draining = state.draining.clone();
    let store = state.store.clone();
    let compactor = tokio::spawn(compact_daily(state.idempotency.clone()));
    let shredder = tokio::spawn(shred_hourly(state.ledger.clone()));
    let sweeper = tokio::spawn(crate::sweeper::sweep_reservations(state.clone()));
    let heads = state.heads.clone();
    let signer = tokio::spawn(crate::heads::sign_periodically(
        heads.clone(),
        state.store.clone(),
    ));
    let app = crate::http::app(state).layer(RequestBodyTimeoutLayer::new(edges.body_read_idle));
    let service = TowerToHyperService::new(app);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(edges.header_read)
        .max_headers(HYPER_HEADERS_MAX);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // Out of descriptors (or another transient failure): the connections open
            // now time out at the edges above; accept again shortly.
            Err(error) => {
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // A client that went away or timed out: theirs to retry, not ours.
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    draining.store(true, Ordering::Release);
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests outlived the shutdown grace; closing them");
    }
    compactor.abort();
    shredder.abort();
    sweeper.abort();
    signer.abort();
    store.flush().await?;
    // The last head of this run, signed once everything is durable.
    if let Err(error) = heads.sign(store.as_ref(), true).await {
        tracing::error!(%error, "cannot sign the last head");
    }
    tracing::info!("stopped; the store is flushed");
    Ok(())
}

/// Raises this process's soft limit of open files to its hard limit: each connection
/// holds a descriptor, and the common soft limit of 1,024 stopped the server accepting
/// at about a thousand idle connections. Returns the limit in force.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // `None` is unlimited.
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => return Some(maximum),
                Err(error) => tracing::warn!(%error, "cannot raise the open-files limit"),
            }
        }
    }
    limit.current
}

/// Runs the retention shredder every hour, so retained personal data is destroyed when
/// its retention ends (or a legal hold is lifted) without anyone asking.
async fn shred_hourly(ledger: std::sync::Arc<ledger::service::Ledger<crate::store::MeteredStore>>) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(60 * 60);
    let policy = ledger::privacy::retention::RetentionPolicy::default();
    // The first run an hour after start: a server restarted often still runs it, and
    // start-up is not slowed by a fold of the whole log.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match crate::privacy::run_shredder(&ledger, chrono::Utc::now(), &policy).await {
            Ok(0) => {}
            Ok(groups) => tracing::info!(groups, "the retention shredder destroyed retained data"),
            // Nothing was destroyed without its record: the next run tries again.
            Err(error) => tracing::error!(%error, "the retention shredder failed"),
        }
    }
}

/// Drops expired idempotency records once a day (the table was compacted when opened).
async fn compact_daily(table: std::sync::Arc<crate::idempotency::Idempotency>) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    loop {
        ticks.tick().await;
        if let Err(error) = table.compact(chrono::Utc::now()).await {
            // The table stays as it was: a failed rewrite is never renamed over it.
            tracing::error!(%error, "cannot compact the idempotency table");
        }
    }
}

/// `serve`: binds, prints the address, serves until SIGTERM or ctrl-c.
pub async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let shutdown = shutdown_signal().map_err(|source| ServeError::Io {
        context: "cannot install the signal handlers".to_owned(),
        source,
    })?;
    match raise_open_files_limit() {
        Some(files) => tracing::info!(files, "open-files limit"),
        None => tracing::info!("open-files limit: unlimited"),
    }
    let (state, opened) = prepare(&args).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Io {
            context: format!("cannot listen on {}", args.listen),
            source,
        })?;
    let address: SocketAddr = listener.local_addr().map_err(|source| ServeError::Io {
        context: "cannot read the listening address".to_owned(),
        source,
    })?;
    // On stdout, one line, so scripts and tests can read the port of `--listen ...:0`.
    println!("listening on http://{address}");
    let served = run(state, listener, Edges::default(), shutdown).await;
    // Close even if serving failed: what was acknowledged must reach the disk.
    let closed = opened.close().await;
    served?;
    closed?;
    tracing::info!("the store is closed");
    Ok(())
}

/// A future that completes on SIGTERM or ctrl-c (SIGINT). The handlers are installed
/// when this function returns, not when the future is first polled: a signal that
/// arrives right after start-up is caught, never left to its default (killing us).
#[cfg(unix)]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("ctrl-c received"),
        }
    })
}

#[cfg(not(unix))]
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("ctrl-c received");
        }
    })
}
