//! The scale benchmark (not a test): generate a large history straight into memory as
//! recorded events, rebuild the views from it, and time the queries finance and members
//! run. The `bench` command of the binary calls [`run`].
//!
//! Generation is interleaved with the rebuild in chunks, so the history never has to fit in
//! memory; only the time spent applying events counts towards the rebuild throughput. The
//! peak memory (VmHWM) is the whole process's: with [`run`] it includes the generator's
//! own books; with [`write_history`] first and [`run_from_file`] in another process it is
//! the rebuild's alone (the views and one chunk of events).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use ledger::domain::{AccountId, Period};
use ledger::store::{Position, RecordedEvent};
use serde::Serialize;

use crate::checkpoint::CheckpointDir;
use crate::history::{Generator, HistoryConfig, Recorder};
use crate::projection::{Projection, ProjectionError};
use crate::report::{affiliate_id_as_name, payout_report};
use crate::runner::Progress;
use crate::views::LedgerViews;

/// Events generated and applied per chunk: the batch size every replay path hands the
/// views (`runner::REPLAY_BATCH_EVENTS`), so the benchmark measures what they do.
const CHUNK_EVENTS: usize = crate::runner::REPLAY_BATCH_EVENTS;

/// The size of a benchmark run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfig {
    pub seed: u64,
    pub accounts: usize,
    pub chain_depth: usize,
    pub events: u64,
    pub months: u32,
    /// Also write the views' checkpoint into this directory at the end, through
    /// [`CheckpointDir::store_projection`] (streamed: no copy of the state in memory), and
    /// report its size, the time and the peak memory after it. The file is removed after
    /// unless `checkpoint_keep` (for [`load_checkpoint`] in another process).
    pub checkpoint_dir: Option<PathBuf>,
    pub checkpoint_keep: bool,
}

impl BenchConfig {
    /// The size of the issue: a million accounts, a chain 100,000 deep, ten million events.
    pub fn full() -> BenchConfig {
        BenchConfig {
            seed: 42,
            accounts: 1_000_000,
            chain_depth: 100_000,
            events: 10_000_000,
            months: 12,
            checkpoint_dir: None,
            checkpoint_keep: false,
        }
    }

    /// A smoke-test size: the same shape, a twentieth of the events.
    pub fn quick() -> BenchConfig {
        BenchConfig {
            seed: 42,
            accounts: 50_000,
            chain_depth: 10_000,
            events: 500_000,
            months: 6,
            checkpoint_dir: None,
            checkpoint_keep: false,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub events: u64,
    pub accounts: usize,
    pub commissions: usize,
    /// Time spent producing the events (generating them, or reading the history file);
    /// not part of the rebuild.
    pub generate_seconds: f64,
    pub rebuild_seconds: f64,
    pub rebuild_events_per_second: f64,
    /// CPU time of the rebuild, all threads (decoders included); the machine is shared.
    pub rebuild_cpu_seconds: f64,
    pub rebuild_events_per_cpu_second: f64,
    /// VmHWM of the process right after the rebuild, in bytes, if the platform reports it.
    pub peak_memory_bytes: Option<u64>,
    /// VmHWM at the end, after the queries below (the payout report of a period with
    /// hundreds of thousands of rows among them).
    pub peak_memory_after_queries_bytes: Option<u64>,
    pub payout_period: String,
    /// Payable balances of every affiliate at the period's end, then the minimum applied:
    /// what a payout run computes.
    pub payout_run_ms: f64,
    /// CPU time of this thread for the same work (the machine is shared).
    pub payout_run_cpu_ms: Option<f64>,
    pub payouts_due: usize,
    /// The payout report of the same period (rows, totals, reconciliation).
    pub payout_report_ms: f64,
    pub payout_report_cpu_ms: Option<f64>,
    pub chain_upline_levels: usize,
    pub chain_upline_ms: f64,
    pub upline_3_levels_us: f64,
    pub downline_root_members: u64,
    pub downline_counts_ms: f64,
    pub downline_page_us: f64,
    /// If asked for: the checkpoint file's size, the time to write it (encoded twice,
    /// hashed, fsynced; see [`crate::checkpoint`]), and VmHWM after it.
    pub checkpoint: Option<CheckpointMeasure>,
}

/// What writing the views' checkpoint took.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointMeasure {
    pub file_bytes: u64,
    pub store_ms: f64,
    pub peak_memory_bytes: Option<u64>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |bytes: Option<u64>| {
            bytes.map_or("unknown".to_owned(), |bytes| {
                format!("{:.0} MiB", bytes as f64 / 1024.0 / 1024.0)
            })
        };
        writeln!(f, "events                 {}", self.events)?;
        writeln!(f, "accounts               {}", self.accounts)?;
        writeln!(f, "commissions            {}", self.commissions)?;
        writeln!(f, "generate               {:.1} s", self.generate_seconds)?;
        writeln!(
            f,
            "rebuild                {:.1} s, {:.0} events/s",
            self.rebuild_seconds, self.rebuild_events_per_second
        )?;
        writeln!(
            f,
            "rebuild CPU            {:.1} s, {:.0} events per CPU second",
            self.rebuild_cpu_seconds, self.rebuild_events_per_cpu_second
        )?;
        writeln!(f, "peak memory (VmHWM)    {}", mib(self.peak_memory_bytes))?;
        writeln!(
            f,
            "peak after queries     {}",
            mib(self.peak_memory_after_queries_bytes)
        )?;
        let cpu = |ms: Option<f64>| ms.map_or("unknown".to_owned(), |ms| format!("{ms:.1} ms"));
        writeln!(
            f,
            "payout run {}     {:.1} ms, CPU {} ({} payouts due)",
            self.payout_period,
            self.payout_run_ms,
            cpu(self.payout_run_cpu_ms),
            self.payouts_due
        )?;
        writeln!(
            f,
            "payout report          {:.1} ms, CPU {}",
            self.payout_report_ms,
            cpu(self.payout_report_cpu_ms)
        )?;
        writeln!(
            f,
            "upline of chain tip    {:.2} ms ({} levels)",
            self.chain_upline_ms, self.chain_upline_levels
        )?;
        writeln!(
            f,
            "upline, 3 levels       {:.2} µs",
            self.upline_3_levels_us
        )?;
        writeln!(
            f,
            "downline counts, root  {:.1} ms ({} members)",
            self.downline_counts_ms, self.downline_root_members
        )?;
        write!(f, "downline page, level 1 {:.1} µs", self.downline_page_us)?;
        if let Some(checkpoint) = &self.checkpoint {
            write!(
                f,
                "\ncheckpoint file        {:.0} MiB, stored in {:.0} ms, peak after {}",
                checkpoint.file_bytes as f64 / 1024.0 / 1024.0,
                checkpoint.store_ms,
                mib(checkpoint.peak_memory_bytes)
            )?;
        }
        Ok(())
    }
}

/// Runs the benchmark; `progress` is called after every chunk applied.
pub fn run(config: &BenchConfig, progress: &mut dyn FnMut(&Progress)) -> BenchReport {
    let mut source = GeneratedHistory::new(config);
    run_from(config, &mut |chunk| source.fill(chunk), progress)
}

/// Runs the benchmark on the history stored in `path` by [`write_history`]: the process
/// then holds only the views and one chunk of events, so its peak memory is the
/// rebuild's, not the generator's.
pub fn run_from_file(
    config: &BenchConfig,
    path: &std::path::Path,
    progress: &mut dyn FnMut(&Progress),
) -> std::io::Result<BenchReport> {
    let mut reader = HistoryReader::open(path)?;
    let mut failure = None;
    let report = run_from(
        config,
        &mut |chunk| match reader.fill(chunk) {
            Ok(more) => more,
            Err(error) => {
                failure = Some(error);
                false
            }
        },
        progress,
    );
    match failure {
        Some(error) => Err(error),
        None => Ok(report),
    }
}

/// Generates the history of `config` into `path`, in the format [`run_from_file`] reads.
/// Returns how many events were written.
pub fn write_history(config: &BenchConfig, path: &std::path::Path) -> std::io::Result<u64> {
    use std::io::Write as _;
    let mut source = GeneratedHistory::new(config);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut chunk = Vec::with_capacity(CHUNK_EVENTS + ledger::store::EVENTS_PER_APPEND_MAX);
    let mut written = 0u64;
    loop {
        let more = source.fill(&mut chunk);
        for event in &chunk {
            let body = ledger::store::codec::body_of(event);
            let body_len = u32::try_from(body.len()).expect("a body is bounded by the limits");
            out.write_all(&body_len.to_le_bytes())?;
            out.write_all(&event.position.commit.to_le_bytes())?;
            out.write_all(&body)?;
            written += 1;
        }
        if !more {
            break;
        }
    }
    out.into_inner()
        .map_err(|error| error.into_error())?
        .sync_all()?;
    Ok(written)
}

/// The generator and recorder of a benchmark history, read one chunk at a time.
pub struct GeneratedHistory {
    generator: Generator,
    recorder: Recorder,
}

impl GeneratedHistory {
    pub fn new(config: &BenchConfig) -> GeneratedHistory {
        GeneratedHistory {
            generator: Generator::new(HistoryConfig {
                seed: config.seed,
                accounts: config.accounts,
                chain_depth: config.chain_depth,
                events: config.events,
                start: bench_start(),
                months: config.months,
            }),
            recorder: Recorder::new(config.seed),
        }
    }

    /// Replaces `chunk` with the next events (about [`CHUNK_EVENTS`]); false once the
    /// history is exhausted (the chunk may still hold its last events).
    pub fn fill(&mut self, chunk: &mut Vec<RecordedEvent>) -> bool {
        chunk.clear();
        while chunk.len() < CHUNK_EVENTS {
            match self.generator.next_batch() {
                Some(batch) => self.recorder.record(&batch, chunk),
                None => return false,
            }
        }
        true
    }
}

/// Reads a history file written by [`write_history`]: per event, the body length (u32
/// little-endian), the position (u64 little-endian) and the canonical record body of
/// `ledger::store::codec`. Chain links are not stored: the benchmark's are all zero.
struct HistoryReader {
    input: std::io::BufReader<std::fs::File>,
    body: Vec<u8>,
}

impl HistoryReader {
    fn open(path: &std::path::Path) -> std::io::Result<HistoryReader> {
        Ok(HistoryReader {
            input: std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path)?),
            body: Vec::new(),
        })
    }

    fn fill(&mut self, chunk: &mut Vec<RecordedEvent>) -> std::io::Result<bool> {
        use std::io::Read as _;
        chunk.clear();
        while chunk.len() < CHUNK_EVENTS {
            let mut header = [0u8; 12];
            match self.input.read_exact(&mut header) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(false)
                }
                Err(error) => return Err(error),
            }
            let body_len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
            let commit = u64::from_le_bytes(header[4..].try_into().expect("8 bytes"));
            self.body.resize(body_len as usize, 0);
            self.input.read_exact(&mut self.body)?;
            let link = ledger::store::ChainLink {
                previous: ledger::store::Digest::GENESIS,
                current: ledger::store::Digest::GENESIS,
            };
            let event =
                ledger::store::codec::decode_body(&self.body, Position::sequence(commit), link)
                    .map_err(|error| std::io::Error::other(error.to_string()))?;
            chunk.push(event);
        }
        Ok(true)
    }
}

fn bench_start() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// Runs the benchmark on the events `next_chunk` provides: it replaces the chunk's
/// contents and returns false after the last chunk.
fn run_from(
    config: &BenchConfig,
    next_chunk: &mut dyn FnMut(&mut Vec<RecordedEvent>) -> bool,
    progress: &mut dyn FnMut(&Progress),
) -> BenchReport {
    let start = bench_start();
    let mut views = LedgerViews::new();
    let mut chunk = Vec::with_capacity(CHUNK_EVENTS + ledger::store::EVENTS_PER_APPEND_MAX);
    let mut generating = Duration::ZERO;
    let mut applying = Duration::ZERO;
    let mut applying_cpu = 0.0f64;
    let mut applied = 0u64;
    let started = Instant::now();
    let mut done = false;
    while !done {
        let generation = Instant::now();
        done = !next_chunk(&mut chunk);
        generating += generation.elapsed();
        let apply = Instant::now();
        let cpu_before = cpu_seconds();
        views
            .apply_batch(&chunk)
            .unwrap_or_else(|error| panic!("generated history must apply: {error}"));
        applying += apply.elapsed();
        if let (Some(before), Some(after)) = (cpu_before, cpu_seconds()) {
            applying_cpu += after - before;
        }
        applied += chunk.len() as u64;
        progress(&Progress {
            applied,
            position: chunk.last().map(|event| event.position),
            head: Some(Position::sequence(config.events)),
            elapsed: started.elapsed(),
        });
    }
    drop(chunk);
    let peak_memory_bytes = peak_memory_bytes();

    // The last complete month with a payout run.
    let payout_period = views
        .commissions
        .runs()
        .keys()
        .next_back()
        .copied()
        .unwrap_or_else(|| Period::containing(start));
    let minimum = views
        .commissions
        .plan_at(payout_period.end())
        .map(|(_, plan)| plan.minimum_payout.amount())
        .unwrap_or_default();
    let run = Instant::now();
    let run_cpu = thread_cpu_ns();
    let payouts_due = views
        .commissions
        .payables_at(payout_period.end())
        .values()
        .filter(|payable| payable.payable >= minimum)
        .count();
    let payout_run_ms = millis(run.elapsed());
    let payout_run_cpu_ms = cpu_millis_since(run_cpu);
    let report = Instant::now();
    let report_cpu = thread_cpu_ns();
    let produced = payout_report(&views, payout_period, &affiliate_id_as_name)
        .expect("the generated books reconcile");
    let payout_report_ms = millis(report.elapsed());
    let payout_report_cpu_ms = cpu_millis_since(report_cpu);
    drop(produced);

    let forest = views.network.forest();
    let (tip, root) = deepest_and_busiest(&views);
    let upline = Instant::now();
    let chain = forest.upline(&tip, usize::MAX).expect("tip exists");
    let chain_upline_ms = millis(upline.elapsed());
    let short = Instant::now();
    let three = forest.upline(&tip, 3).expect("tip exists");
    let upline_3_levels_us = short.elapsed().as_secs_f64() * 1e6;
    assert_eq!(three.levels.len(), 3.min(chain.levels.len()));
    let counts = Instant::now();
    let downline = forest
        .downline_counts(&root, usize::MAX)
        .expect("root exists");
    let downline_counts_ms = millis(counts.elapsed());
    let page = Instant::now();
    let members = forest
        .downline_members(&root, 1, 0, 100)
        .expect("root exists");
    let downline_page_us = page.elapsed().as_secs_f64() * 1e6;
    assert!(members.total > 0 || downline.total == 0);
    let peak_memory_after_queries_bytes = self::peak_memory_bytes();
    let checkpoint = config
        .checkpoint_dir
        .as_ref()
        .map(|dir| store_checkpoint(&views, dir, config.checkpoint_keep));

    BenchReport {
        config: config.clone(),
        events: applied,
        accounts: forest.len(),
        commissions: views.commissions.commission_count(),
        generate_seconds: generating.as_secs_f64(),
        rebuild_seconds: applying.as_secs_f64(),
        rebuild_events_per_second: applied as f64 / applying.as_secs_f64().max(1e-9),
        rebuild_cpu_seconds: applying_cpu,
        rebuild_events_per_cpu_second: applied as f64 / applying_cpu.max(1e-9),
        peak_memory_bytes,
        peak_memory_after_queries_bytes,
        payout_period: payout_period.to_string(),
        payout_run_ms,
        payout_run_cpu_ms,
        payouts_due,
        payout_report_ms,
        payout_report_cpu_ms,
        chain_upline_levels: chain.levels.len(),
        chain_upline_ms,
        upline_3_levels_us,
        downline_root_members: downline.total,
        downline_counts_ms,
        downline_page_us,
        checkpoint,
    }
}

/// Writes the views' checkpoint into `dir` and measures it; removes the file after unless
/// `keep`.
fn store_checkpoint(views: &LedgerViews, dir: &Path, keep: bool) -> CheckpointMeasure {
    let checkpoints = CheckpointDir::open(dir).expect("the checkpoint directory opens");
    let stored = Instant::now();
    checkpoints
        .store_projection(views, views.last.map(|(position, _)| position))
        .expect("the checkpoint is written");
    let store_ms = millis(stored.elapsed());
    let peak_memory_bytes = self::peak_memory_bytes();
    let file = checkpoints.file_of(views.name()).expect("a valid name");
    let file_bytes = std::fs::metadata(&file)
        .expect("the checkpoint exists")
        .len();
    if !keep {
        std::fs::remove_file(&file).expect("the checkpoint is removed");
    }
    CheckpointMeasure {
        file_bytes,
        store_ms,
        peak_memory_bytes,
    }
}

/// What reading the views' checkpoint back took.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointLoadMeasure {
    pub file_bytes: u64,
    /// Events the restored views had applied.
    pub events: u64,
    pub accounts: usize,
    pub load_ms: f64,
    /// VmHWM after the load: the whole process, which did nothing else.
    pub peak_memory_bytes: Option<u64>,
}

impl fmt::Display for CheckpointLoadMeasure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checkpoint of {} events, {} accounts: {:.0} MiB loaded in {:.0} ms, peak {}",
            self.events,
            self.accounts,
            self.file_bytes as f64 / 1024.0 / 1024.0,
            self.load_ms,
            self.peak_memory_bytes
                .map_or("unknown".to_owned(), |bytes| format!("{} MiB", bytes >> 20))
        )
    }
}

/// Reads the views' checkpoint in `dir` back (as a runner opening does: streamed from
/// the file into the decoder, checksum checked) and measures it.
pub fn load_checkpoint(dir: &Path) -> Result<CheckpointLoadMeasure, ProjectionError> {
    let checkpoints = CheckpointDir::open(dir)?;
    let mut views = LedgerViews::new();
    let name = views.name().to_owned();
    let file_bytes = std::fs::metadata(checkpoints.file_of(&name)?)
        .map_err(|error| ProjectionError::Checkpoint {
            path: dir.display().to_string(),
            reason: error.to_string(),
        })?
        .len();
    let loading = Instant::now();
    checkpoints
        .load_with(&name, |state| views.decode_state(state))?
        .ok_or_else(|| ProjectionError::Checkpoint {
            path: dir.display().to_string(),
            reason: "no checkpoint of the views there".to_owned(),
        })?;
    Ok(CheckpointLoadMeasure {
        file_bytes,
        events: views.events,
        accounts: views.network.forest().len(),
        load_ms: millis(loading.elapsed()),
        peak_memory_bytes: self::peak_memory_bytes(),
    })
}

/// The deepest member (the chain's tip) and the root with the largest tree.
fn deepest_and_busiest(views: &LedgerViews) -> (AccountId, AccountId) {
    let forest = views.network.forest();
    let mut deepest: Option<(u32, AccountId)> = None;
    let mut roots = Vec::new();
    for (account, referrer, _) in forest.members_in_order() {
        let depth = forest.depth(&account).expect("member");
        if deepest.is_none_or(|(best, _)| depth > best) {
            deepest = Some((depth, account));
        }
        if referrer.is_none() {
            roots.push(account);
        }
    }
    // Preferential attachment gives the oldest roots the largest trees; count the first few.
    let busiest = roots
        .iter()
        .take(8)
        .max_by_key(|root| {
            forest
                .downline_counts(root, 64)
                .map_or(0, |counts| counts.total)
        })
        .copied()
        .expect("a non-empty forest has a root");
    (deepest.expect("non-empty forest").1, busiest)
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The process's peak resident set size (VmHWM), in bytes, on Linux.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// CPU time (user and system) of the whole process so far, in seconds, on Linux. The
/// machine is shared, so events per CPU second is steadier than events per wall second.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks are 100 per second on every Linux this runs on (USER_HZ).
    Some((utime + stime) / 100.0)
}

/// CPU time of the calling thread, in nanoseconds, on Linux (`/proc/thread-self/schedstat`).
pub fn thread_cpu_ns() -> Option<u64> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    schedstat.split_whitespace().next()?.parse().ok()
}

fn cpu_millis_since(start: Option<u64>) -> Option<f64> {
    Some((thread_cpu_ns()? - start?) as f64 / 1e6)
}
