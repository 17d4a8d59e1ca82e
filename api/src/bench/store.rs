//! The event store benchmark: the embedded file log against SQLite doing the same work,
//! side by side in one run, because the disk's speed drifts and only ratios within one
//! run mean anything. The fsync latency of the same disk is measured in the same run.
//!
//! SQLite is set up as a careful application would: WAL journal, `synchronous=FULL`, one
//! `events` table with the same fields (and the same SHA-256 chain computed per event),
//! unique indexes for idempotency and stream revisions, one transaction per append, one
//! connection shared by all writers (SQLite admits one writer at a time anyway).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use ledger::store::file::{format::CHECKPOINT_FILE, FileStore, FileStoreOptions};
use ledger::store::{
    codec, AppendOutcome, ChainLink, Digest, Durability, EventMetadata, EventStore, EventType,
    ExpectedRevision, NewEvent, Position, StoreError, StreamName, StreamState, PAGE_SIZE_MAX,
};
use rusqlite::{params, Connection, OptionalExtension};
use uuid::Uuid;

/// What to run.
#[derive(Clone, Debug)]
pub struct StoreBenchOptions {
    /// Events in the log that is read back whole and reopened.
    pub log_events: u64,
    /// Smaller workloads everywhere, for a quick look.
    pub quick: bool,
    /// Where the logs go; a fresh temporary directory inside it is removed afterwards.
    pub dir: PathBuf,
    /// A PostgreSQL database (URL) for a third column: the append workloads and read_all
    /// on `PgStore`. It must be empty or hold only earlier runs' benchmark events, and
    /// be a real, durable server (fsync on) for the numbers to mean anything.
    pub postgres: Option<String>,
}

/// One measured line: the same work on both backends.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub name: String,
    pub unit: &'static str,
    pub file: f64,
    pub sqlite: f64,
    /// `PgStore` on the given database, for the workloads it runs.
    pub postgres: Option<f64>,
    /// Whether a larger number is better (a rate) or worse (a time, a size).
    pub higher_is_better: bool,
    pub note: String,
}

#[derive(Clone, Debug)]
pub struct StoreBenchReport {
    pub fsync_latency_us_p50: f64,
    pub fsync_latency_us_p99: f64,
    pub log_events: u64,
    pub measurements: Vec<Measurement>,
    pub elapsed: Duration,
}

/// The benchmark reports a failure as a sentence; nothing handles its errors but a human.
type BenchResult<T> = Result<T, String>;

fn store_error(error: StoreError) -> String {
    error.to_string()
}

fn sql_error(error: rusqlite::Error) -> String {
    format!("sqlite: {error}")
}

/// Sizes of each workload.
struct Sizes {
    single_file: usize,
    single_sqlite: usize,
    concurrent_per_writer_file: usize,
    concurrent_per_writer_sqlite: usize,
    batch100_file: usize,
    batch100_sqlite: usize,
    batch1000_file: usize,
    batch1000_sqlite: usize,
    single_postgres: usize,
    concurrent_per_writer_postgres: usize,
    batch100_postgres: usize,
}

const WRITERS: usize = 64;
/// Alternating rounds of each append workload.
const ROUNDS: usize = 3;

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                single_file: 300,
                single_sqlite: 200,
                concurrent_per_writer_file: 100,
                concurrent_per_writer_sqlite: 5,
                batch100_file: 100,
                batch100_sqlite: 50,
                batch1000_file: 30,
                batch1000_sqlite: 10,
                single_postgres: 100,
                concurrent_per_writer_postgres: 3,
                batch100_postgres: 20,
            }
        } else {
            Sizes {
                single_file: 1000,
                single_sqlite: 500,
                concurrent_per_writer_file: 1000,
                concurrent_per_writer_sqlite: 30,
                batch100_file: 2000,
                batch100_sqlite: 300,
                batch1000_file: 500,
                batch1000_sqlite: 50,
                single_postgres: 500,
                concurrent_per_writer_postgres: 20,
                batch100_postgres: 200,
            }
        }
    }
}

/// Runs the whole benchmark.
pub async fn run(options: StoreBenchOptions) -> BenchResult<StoreBenchReport> {
    let bench_started = Instant::now();
    std::fs::create_dir_all(&options.dir).map_err(|e| e.to_string())?;
    let work = tempfile::Builder::new()
        .prefix("store-bench-")
        .tempdir_in(&options.dir)
        .map_err(|e| e.to_string())?;
    let sizes = Sizes::new(options.quick);
    let mut ids = IdSource::new(0x5eed);
    let mut measurements = Vec::new();

    // The disk's speed drifts while other work shares the machine, so each workload runs
    // in alternating rounds (file, SQLite, file, SQLite, ...) with the fsync probe in
    // between, and the median round of each is reported.
    let probe = if options.quick { 50 } else { 100 };
    let mut fsync_samples = fsync_samples_us(work.path(), probe)?;
    let single_file = open_file(&work.path().join("single"))?;
    let concurrent_file = open_file(&work.path().join("concurrent"))?;
    let batch_files = [
        open_file(&work.path().join("batch100"))?,
        open_file(&work.path().join("batch1000"))?,
    ];
    let sqlite = Arc::new(SqliteStore::open(&work.path().join("appends.sqlite"))?);
    let postgres = match &options.postgres {
        Some(url) => Some(open_postgres(url).await?),
        None => None,
    };
    let mut rounds: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); 4];
    // Single, 64 writers, batches of 100: the workloads PostgreSQL runs.
    let mut postgres_rounds: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..ROUNDS {
        eprintln!("append workloads, round {} of {ROUNDS}", round + 1);
        rounds[0]
            .0
            .push(single_appends(&single_file, &mut ids, sizes.single_file).await?);
        rounds[0]
            .1
            .push(single_appends_sqlite(&sqlite, &mut ids, sizes.single_sqlite).await?);
        rounds[1].0.push(
            concurrent_appends(&concurrent_file, &mut ids, sizes.concurrent_per_writer_file)
                .await?,
        );
        rounds[1].1.push(
            concurrent_appends_sqlite(&sqlite, &mut ids, sizes.concurrent_per_writer_sqlite)
                .await?,
        );
        for (slot, (file, batch, file_batches, sqlite_batches)) in [
            (
                &batch_files[0],
                100,
                sizes.batch100_file,
                sizes.batch100_sqlite,
            ),
            (
                &batch_files[1],
                1000,
                sizes.batch1000_file,
                sizes.batch1000_sqlite,
            ),
        ]
        .into_iter()
        .enumerate()
        {
            rounds[2 + slot]
                .0
                .push(batch_appends(file, &mut ids, batch, file_batches).await?);
            rounds[2 + slot]
                .1
                .push(batch_appends_sqlite(&sqlite, &mut ids, batch, sqlite_batches).await?);
        }
        if let Some(postgres) = &postgres {
            postgres_rounds[0]
                .push(single_appends(postgres, &mut ids, sizes.single_postgres).await?);
            postgres_rounds[1].push(
                concurrent_appends(postgres, &mut ids, sizes.concurrent_per_writer_postgres)
                    .await?,
            );
            postgres_rounds[2]
                .push(batch_appends(postgres, &mut ids, 100, sizes.batch100_postgres).await?);
        }
        fsync_samples.extend(fsync_samples_us(work.path(), probe)?);
    }
    let names = [
        "durable single-event appends, 1 writer",
        "durable single-event appends, 64 concurrent writers",
        "durable appends in batches of 100, 1 writer",
        "durable appends in batches of 1000, 1 writer",
    ];
    let mut postgres_rounds = postgres_rounds.into_iter();
    for (name, (file_rates, sqlite_rates)) in names.into_iter().zip(rounds) {
        let mut measurement = rate(name, median(file_rates), median(sqlite_rates));
        measurement.note = format!("median of {ROUNDS} alternating rounds");
        measurement.postgres = postgres_rounds
            .next()
            .filter(|rates| !rates.is_empty())
            .map(median);
        measurements.push(measurement);
    }
    for file in [single_file, concurrent_file]
        .into_iter()
        .chain(batch_files)
    {
        file.close().await.map_err(store_error)?;
    }
    drop(sqlite);
    fsync_samples.sort_by(f64::total_cmp);
    let quantile = |q: f64| fsync_samples[((fsync_samples.len() - 1) as f64 * q) as usize];
    let (fsync_p50, fsync_p99) = (quantile(0.5), quantile(0.99));
    eprintln!("fsync latency p50 {fsync_p50:.0} us, p99 {fsync_p99:.0} us");

    // A large log: build, read whole, reopen.
    let n = options.log_events;
    eprintln!("building logs of {n} events");
    let log_dir = work.path().join("large");
    let sqlite_path = work.path().join("large.sqlite");
    let build_file = {
        reset_peak_memory();
        let file = open_file(&log_dir)?;
        let started = Instant::now();
        build_log(&file, &mut ids, n).await?;
        let elapsed = started.elapsed();
        file.close().await.map_err(store_error)?;
        elapsed
    };
    let build_sqlite = {
        let sqlite = Arc::new(SqliteStore::open(&sqlite_path)?);
        let started = Instant::now();
        build_log_sqlite(&sqlite, &mut ids, n).await?;
        started.elapsed()
    };
    measurements.push(rate(
        &format!("building the {n}-event log (batches of 1000)"),
        n as f64 / build_file.as_secs_f64(),
        n as f64 / build_sqlite.as_secs_f64(),
    ));

    reset_peak_memory();
    let started = Instant::now();
    let file = FileStore::open(&log_dir, FileStoreOptions::default()).map_err(store_error)?;
    let open_with_checkpoint = started.elapsed();
    let memory_file_open = peak_memory_mib();
    let started = Instant::now();
    let read = read_whole_file(&file).await?;
    let read_file = started.elapsed();
    let memory_file_read = peak_memory_mib();
    assert_eq!(read, n, "the file log read back short");
    file.close().await.map_err(store_error)?;
    drop(file);

    std::fs::remove_file(log_dir.join(CHECKPOINT_FILE)).map_err(|e| e.to_string())?;
    reset_peak_memory();
    let started = Instant::now();
    let file = FileStore::open(&log_dir, FileStoreOptions::default()).map_err(store_error)?;
    let open_scan = started.elapsed();
    let memory_file_scan = peak_memory_mib();
    assert_eq!(
        file.head().await.map_err(store_error)?,
        n.checked_sub(1).map(Position::sequence)
    );
    drop(file);

    reset_peak_memory();
    let started = Instant::now();
    let sqlite = SqliteStore::open(&sqlite_path)?;
    let last = sqlite.head()?;
    let open_sqlite = started.elapsed();
    assert_eq!(last, n.checked_sub(1));
    let started = Instant::now();
    let read = sqlite.read_all_count()?;
    let read_sqlite = started.elapsed();
    let memory_sqlite = peak_memory_mib();
    assert_eq!(read, n, "the sqlite log read back short");

    let mut read_all = rate(
        &format!("read_all of the whole {n}-event log"),
        n as f64 / read_file.as_secs_f64(),
        n as f64 / read_sqlite.as_secs_f64(),
    );
    if let Some(postgres) = &postgres {
        // PostgreSQL reads the log its append workloads wrote (much smaller than n): a
        // rate, not the same log.
        let started = Instant::now();
        let read = read_whole_file(postgres).await?;
        read_all.postgres = Some(read as f64 / started.elapsed().as_secs_f64());
        read_all.note = format!("PostgreSQL: its {read}-event log of the append workloads");
    }
    measurements.push(read_all);
    measurements.push(Measurement {
        name: format!("open the {n}-event log, with index checkpoint"),
        unit: "s",
        file: open_with_checkpoint.as_secs_f64(),
        sqlite: open_sqlite.as_secs_f64(),
        higher_is_better: false,
        postgres: None,
        note: "SQLite keeps its indexes on disk; opening it is nearly free".to_owned(),
    });
    measurements.push(Measurement {
        name: format!("open the {n}-event log, no checkpoint (full verifying scan)"),
        unit: "s",
        file: open_scan.as_secs_f64(),
        sqlite: open_sqlite.as_secs_f64(),
        higher_is_better: false,
        postgres: None,
        note: "file: re-hashes every record, rebuilds the index, writes a new checkpoint"
            .to_owned(),
    });
    measurements.push(Measurement {
        name: "peak memory (VmHWM): open with checkpoint / read whole log".to_owned(),
        unit: "MiB",
        file: memory_file_open.max(memory_file_read),
        sqlite: memory_sqlite,
        higher_is_better: false,
        postgres: None,
        note: format!("file full-scan open: {memory_file_scan:.0} MiB"),
    });
    drop(work);
    Ok(StoreBenchReport {
        fsync_latency_us_p50: fsync_p50,
        fsync_latency_us_p99: fsync_p99,
        log_events: n,
        measurements,
        elapsed: bench_started.elapsed(),
    })
}

fn rate(name: &str, file: f64, sqlite: f64) -> Measurement {
    Measurement {
        name: name.to_owned(),
        unit: "events/s",
        file,
        sqlite,
        higher_is_better: true,
        note: String::new(),
        postgres: None,
    }
}

/// Renders the report as a markdown table with file/SQLite ratios.
pub fn render_markdown(report: &StoreBenchReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "fsync latency (4 KiB write + fdatasync, same disk, sampled between the rounds): \
         p50 {:.0} us, p99 {:.0} us\n\n",
        report.fsync_latency_us_p50, report.fsync_latency_us_p99
    ));
    out.push_str(&format!("large log: {} events\n\n", report.log_events));
    let with_postgres = report.measurements.iter().any(|m| m.postgres.is_some());
    if with_postgres {
        out.push_str("| measurement | file log | SQLite | PostgreSQL | file / SQLite | note |\n");
        out.push_str("|---|---:|---:|---:|---:|---|\n");
    } else {
        out.push_str("| measurement | file log | SQLite | file / SQLite | note |\n");
        out.push_str("|---|---:|---:|---:|---|\n");
    }
    for m in &report.measurements {
        let postgres = match (with_postgres, m.postgres) {
            (false, _) => String::new(),
            (true, Some(value)) => format!(" {} {} |", human(value), m.unit),
            (true, None) => " - |".to_owned(),
        };
        let ratio = if m.sqlite > 0.0 {
            format!("{:.2}x", m.file / m.sqlite)
        } else {
            "-".to_owned()
        };
        out.push_str(&format!(
            "| {} | {} {} | {} {} |{} {} | {} |\n",
            m.name,
            human(m.file),
            m.unit,
            human(m.sqlite),
            m.unit,
            postgres,
            ratio,
            match (m.higher_is_better, m.note.is_empty()) {
                (true, _) => m.note.clone(),
                (false, true) => "lower is better".to_owned(),
                (false, false) => format!("lower is better; {}", m.note),
            }
        ));
    }
    out
}

fn human(value: f64) -> String {
    if value >= 100.0 {
        let whole = value.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                out.push(',');
            }
            out.push(digit);
        }
        out
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

#[cfg(feature = "pg-store")]
async fn open_postgres(url: &str) -> BenchResult<ledger::store::pg::PgStore> {
    ledger::store::pg::PgStore::connect(url)
        .await
        .map_err(|error| format!("PostgreSQL: {error}"))
}

#[cfg(not(feature = "pg-store"))]
async fn open_postgres(_url: &str) -> BenchResult<ledger::store::memory::MemoryStore> {
    Err("this binary was built without the `pg-store` feature".to_owned())
}

fn open_file(dir: &Path) -> BenchResult<FileStore> {
    FileStore::open(
        dir,
        FileStoreOptions {
            durability: Durability::Fsync,
            ..FileStoreOptions::default()
        },
    )
    .map_err(store_error)
}

/// Latencies of a 4 KiB write followed by fdatasync, in microseconds.
fn fsync_samples_us(dir: &Path, rounds: usize) -> BenchResult<Vec<f64>> {
    let path = dir.join("fsync-probe");
    let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let block = vec![0xa5u8; 4096];
    let mut samples = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        file.write_all_at(&block, (round * 4096) as u64)
            .map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    let _ = std::fs::remove_file(path);
    Ok(samples)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Cheap unique event ids without a system call each (uuid v4 asks the OS per id).
struct IdSource(u64, u64);

impl IdSource {
    fn new(seed: u64) -> IdSource {
        let time = Utc::now().timestamp_nanos_opt().unwrap_or(0) as u64;
        IdSource(seed ^ time | 1, 0)
    }
    fn next(&mut self) -> Uuid {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.1 += 1;
        let bits = (u128::from(self.0) << 64) | u128::from(self.1);
        uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid()
    }
    fn event(&mut self) -> NewEvent {
        let account = self.next();
        NewEvent {
            id: self.next(),
            event_type: EventType::parse("PaymentReceived").expect("valid type"),
            schema_version: 1,
            metadata: EventMetadata {
                correlation_id: Some(account),
                causation_id: None,
            },
            payload: format!(
                r#"{{"account_id":"{account}","amount":"19.99","currency":"EUR","plan":"pro"}}"#
            )
            .into_bytes(),
        }
    }
    fn batch(&mut self, size: usize) -> Vec<NewEvent> {
        (0..size).map(|_| self.event()).collect()
    }
}

fn stream(name: &str) -> StreamName {
    StreamName::parse(name).expect("valid stream")
}

async fn single_appends<S: EventStore>(
    store: &S,
    ids: &mut IdSource,
    count: usize,
) -> BenchResult<f64> {
    let events: Vec<_> = (0..count).map(|_| ids.event()).collect();
    let target = stream("single");
    let started = Instant::now();
    for event in events {
        store
            .append(&target, ExpectedRevision::Any, vec![event])
            .await
            .map_err(store_error)?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

async fn concurrent_appends<S: EventStore + Clone>(
    store: &S,
    ids: &mut IdSource,
    per_writer: usize,
) -> BenchResult<f64> {
    let mut prepared = Vec::new();
    for _ in 0..WRITERS {
        prepared.push((0..per_writer).map(|_| ids.event()).collect::<Vec<_>>());
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (writer, events) in prepared.into_iter().enumerate() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let target = stream(&format!("writer-{writer}"));
            for event in events {
                store
                    .append(&target, ExpectedRevision::Any, vec![event])
                    .await
                    .map_err(store_error)?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok((WRITERS * per_writer) as f64 / started.elapsed().as_secs_f64())
}

async fn batch_appends<S: EventStore>(
    store: &S,
    ids: &mut IdSource,
    batch: usize,
    batches: usize,
) -> BenchResult<f64> {
    let prepared: Vec<_> = (0..batches).map(|_| ids.batch(batch)).collect();
    let target = stream("batched");
    let started = Instant::now();
    for events in prepared {
        store
            .append(&target, ExpectedRevision::Any, events)
            .await
            .map_err(store_error)?;
    }
    Ok((batch * batches) as f64 / started.elapsed().as_secs_f64())
}

const BUILD_WRITERS: usize = 4;
const BUILD_BATCH: usize = 1000;

async fn build_log(store: &FileStore, ids: &mut IdSource, events: u64) -> BenchResult<()> {
    let mut tasks = Vec::new();
    for writer in 0..BUILD_WRITERS as u64 {
        let store = store.clone();
        let mut ids = IdSource::new(ids.next().as_u128() as u64 ^ writer);
        let share =
            events / BUILD_WRITERS as u64 + u64::from(writer < events % BUILD_WRITERS as u64);
        tasks.push(tokio::spawn(async move {
            let mut written = 0u64;
            let mut round = 0u64;
            while written < share {
                let size = (share - written).min(BUILD_BATCH as u64) as usize;
                // Many streams of a thousand events each.
                let target = stream(&format!("account-{writer}-{round}"));
                store
                    .append(&target, ExpectedRevision::NoStream, ids.batch(size))
                    .await
                    .map_err(store_error)?;
                written += size as u64;
                round += 1;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

async fn read_whole_file<S: EventStore>(store: &S) -> BenchResult<u64> {
    let mut from = Position::START;
    let mut read = 0u64;
    loop {
        let page = store
            .read_all(from, PAGE_SIZE_MAX)
            .await
            .map_err(store_error)?;
        let Some(last) = page.last() else {
            return Ok(read);
        };
        read += page.len() as u64;
        from = Position::sequence(last.position.commit + 1);
    }
}

/// The SQLite contender.
struct SqliteStore {
    inner: Mutex<SqliteInner>,
}

struct SqliteInner {
    connection: Connection,
    next_position: u64,
    head_hash: Digest,
}

impl SqliteStore {
    fn open(path: &Path) -> BenchResult<SqliteStore> {
        let connection = Connection::open(path).map_err(sql_error)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 PRAGMA synchronous=FULL;
                 CREATE TABLE IF NOT EXISTS events (
                     position INTEGER PRIMARY KEY,
                     id BLOB NOT NULL UNIQUE,
                     stream TEXT NOT NULL,
                     revision INTEGER NOT NULL,
                     event_type TEXT NOT NULL,
                     schema_version INTEGER NOT NULL,
                     recorded_at INTEGER NOT NULL,
                     correlation_id BLOB,
                     causation_id BLOB,
                     payload BLOB NOT NULL,
                     previous BLOB NOT NULL,
                     hash BLOB NOT NULL,
                     UNIQUE (stream, revision)
                 );",
            )
            .map_err(sql_error)?;
        let head: Option<(i64, Vec<u8>)> = connection
            .query_row(
                "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(sql_error)?;
        let (next_position, head_hash) = match head {
            Some((position, hash)) => (
                position as u64 + 1,
                Digest(hash.try_into().map_err(|_| "bad hash".to_owned())?),
            ),
            None => (0, Digest::GENESIS),
        };
        Ok(SqliteStore {
            inner: Mutex::new(SqliteInner {
                connection,
                next_position,
                head_hash,
            }),
        })
    }

    fn head(&self) -> BenchResult<Option<u64>> {
        let inner = self.inner.lock().expect("sqlite lock");
        Ok(inner.next_position.checked_sub(1))
    }

    /// One transaction: idempotency check, expected revision check, inserts, commit.
    fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        events: &[NewEvent],
    ) -> BenchResult<AppendOutcome> {
        let mut inner = self.inner.lock().expect("sqlite lock");
        let SqliteInner {
            connection,
            next_position,
            head_hash,
        } = &mut *inner;
        let transaction = connection.transaction().map_err(sql_error)?;
        let repeat: Option<(i64, i64)> = transaction
            .prepare_cached("SELECT revision, position FROM events WHERE id = ?1")
            .map_err(sql_error)?
            .query_row(params![events[0].id.as_bytes().as_slice()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
            .map_err(sql_error)?;
        if let Some((revision, position)) = repeat {
            return Ok(AppendOutcome {
                revision: revision as u64,
                position: Position::sequence(position as u64),
            });
        }
        let last: Option<i64> = transaction
            .prepare_cached("SELECT max(revision) FROM events WHERE stream = ?1")
            .map_err(sql_error)?
            .query_row(params![stream.as_str()], |row| row.get(0))
            .map_err(sql_error)?;
        let actual = last.map_or(StreamState::NoStream, |r| StreamState::At(r as u64));
        if !actual.satisfies(expected) {
            return Err(format!("wrong expected version on {stream}"));
        }
        let recorded_at = Utc::now();
        let mut revision = actual.next_revision();
        let mut body = Vec::new();
        let mut previous = *head_hash;
        let mut position = *next_position;
        {
            let mut insert = transaction
                .prepare_cached(
                    "INSERT INTO events (position, id, stream, revision, event_type, \
                     schema_version, recorded_at, correlation_id, causation_id, payload, \
                     previous, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(sql_error)?;
            for event in events {
                body.clear();
                codec::encode_body(event, stream, revision, recorded_at, &mut body);
                let link = ChainLink::follow(previous, &body);
                insert
                    .execute(params![
                        position as i64,
                        event.id.as_bytes().as_slice(),
                        stream.as_str(),
                        revision as i64,
                        event.event_type.as_str(),
                        i64::from(event.schema_version),
                        recorded_at.timestamp_micros(),
                        event
                            .metadata
                            .correlation_id
                            .map(|id| id.as_bytes().to_vec()),
                        event.metadata.causation_id.map(|id| id.as_bytes().to_vec()),
                        event.payload.as_slice(),
                        link.previous.0.as_slice(),
                        link.current.0.as_slice(),
                    ])
                    .map_err(sql_error)?;
                previous = link.current;
                position += 1;
                revision += 1;
            }
        }
        transaction.commit().map_err(sql_error)?;
        *head_hash = previous;
        *next_position = position;
        Ok(AppendOutcome {
            revision: revision - 1,
            position: Position::sequence(position - 1),
        })
    }

    /// Reads every row in position order, building the same event values the file
    /// store returns (strings parsed, payload copied).
    fn read_all_count(&self) -> BenchResult<u64> {
        let inner = self.inner.lock().expect("sqlite lock");
        let mut statement = inner
            .connection
            .prepare(
                "SELECT position, id, stream, revision, event_type, schema_version, \
                 recorded_at, correlation_id, causation_id, payload, previous, hash \
                 FROM events ORDER BY position",
            )
            .map_err(sql_error)?;
        let mut rows = statement.query([]).map_err(sql_error)?;
        let mut count = 0u64;
        while let Some(row) = rows.next().map_err(sql_error)? {
            let event = decode_row(row).map_err(sql_error)?;
            assert_eq!(event.position.commit, count);
            count += 1;
        }
        Ok(count)
    }
}

fn decode_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ledger::store::RecordedEvent> {
    let uuid = |bytes: Option<Vec<u8>>| bytes.and_then(|bytes| Uuid::from_slice(&bytes).ok());
    let digest = |bytes: Vec<u8>| Digest(bytes.try_into().unwrap_or([0; 32]));
    let position: i64 = row.get(0)?;
    let stream: String = row.get(2)?;
    let event_type: String = row.get(4)?;
    Ok(ledger::store::RecordedEvent {
        id: uuid(row.get(1)?).unwrap_or_default(),
        stream: StreamName::parse(stream).expect("stored stream name"),
        revision: row.get::<_, i64>(3)? as u64,
        position: Position::sequence(position as u64),
        event_type: EventType::parse(event_type).expect("stored event type"),
        schema_version: row.get::<_, i64>(5)? as u16,
        recorded_at: chrono::DateTime::from_timestamp_micros(row.get(6)?).unwrap_or_default(),
        metadata: EventMetadata {
            correlation_id: uuid(row.get(7)?),
            causation_id: uuid(row.get(8)?),
        },
        payload: row.get(9)?,
        chain: ChainLink {
            previous: digest(row.get(10)?),
            current: digest(row.get(11)?),
        },
    })
}

async fn sqlite_append(
    store: &Arc<SqliteStore>,
    stream: StreamName,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
) -> BenchResult<AppendOutcome> {
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || store.append(&stream, expected, &events))
        .await
        .map_err(|e| e.to_string())?
}

async fn single_appends_sqlite(
    store: &Arc<SqliteStore>,
    ids: &mut IdSource,
    count: usize,
) -> BenchResult<f64> {
    let events: Vec<_> = (0..count).map(|_| ids.event()).collect();
    let target = stream("single");
    let started = Instant::now();
    for event in events {
        sqlite_append(store, target.clone(), ExpectedRevision::Any, vec![event]).await?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

async fn concurrent_appends_sqlite(
    store: &Arc<SqliteStore>,
    ids: &mut IdSource,
    per_writer: usize,
) -> BenchResult<f64> {
    let mut prepared = Vec::new();
    for _ in 0..WRITERS {
        prepared.push((0..per_writer).map(|_| ids.event()).collect::<Vec<_>>());
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (writer, events) in prepared.into_iter().enumerate() {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            let target = stream(&format!("writer-{writer}"));
            for event in events {
                sqlite_append(&store, target.clone(), ExpectedRevision::Any, vec![event]).await?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok((WRITERS * per_writer) as f64 / started.elapsed().as_secs_f64())
}

async fn batch_appends_sqlite(
    store: &Arc<SqliteStore>,
    ids: &mut IdSource,
    batch: usize,
    batches: usize,
) -> BenchResult<f64> {
    let prepared: Vec<_> = (0..batches).map(|_| ids.batch(batch)).collect();
    let target = stream("batched");
    let started = Instant::now();
    for events in prepared {
        sqlite_append(store, target.clone(), ExpectedRevision::Any, events).await?;
    }
    Ok((batch * batches) as f64 / started.elapsed().as_secs_f64())
}

async fn build_log_sqlite(
    store: &Arc<SqliteStore>,
    ids: &mut IdSource,
    events: u64,
) -> BenchResult<()> {
    let mut written = 0u64;
    let mut round = 0u64;
    while written < events {
        let size = (events - written).min(BUILD_BATCH as u64) as usize;
        let target = stream(&format!("account-{round}"));
        sqlite_append(store, target, ExpectedRevision::NoStream, ids.batch(size)).await?;
        written += size as u64;
        round += 1;
    }
    Ok(())
}

/// Resets the kernel's peak-RSS mark of this process (Linux `clear_refs` value 5), so the
/// next [`peak_memory_mib`] reports the peak of one phase.
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The peak resident memory (VmHWM) of this process, in MiB.
fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}
