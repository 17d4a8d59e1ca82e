//! The read-only commands on a data directory: `verify`, which checks the log's files,
//! then replays it through every projection, and `report`, which writes a finance report
//! from a replay. Both open the log read-only (no lock, no file written, a torn tail
//! reported and left), so they change no evidence and run beside a server.

use std::io::IsTerminal as _;
use std::sync::Arc;

use chrono::DateTime;
use indicatif::{ProgressBar, ProgressStyle};

use ledger::domain::{AccountId, Period};
use projections::journal::AsOf;
use projections::report::{
    affiliate_id_as_name, commission_statement, donation_report, payout_report,
    trial_balance_report,
};
use projections::views::LedgerViews;
use projections::Progress;

use ledger::store::file::{CheckpointHead, KnownHead};
use ledger::store::{EventStore, StoreError};
use projections::verify::Discrepancy;
use projections::ProjectionError;

use crate::cli::{ReportArgs, ReportFormatArg, ReportKind, VerifyArgs};
use crate::http::events::parse_position;
use crate::store::LOG_DIR_NAME;

type Failure = Box<dyn std::error::Error>;

/// Shows replay progress: a bar on a terminal, a plain line every
/// [`PLAIN_PROGRESS_EVERY`] events otherwise (logs, CI).
pub struct Reporter {
    bar: Option<ProgressBar>,
    printed: u64,
}

/// Events between two plain progress lines.
pub const PLAIN_PROGRESS_EVERY: u64 = 100_000;

impl Reporter {
    pub fn new(label: &str) -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, {eta} left)",
                )
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_message(label.to_owned());
            bar
        });
        Reporter { bar, printed: 0 }
    }

    pub fn update(&mut self, progress: &Progress) {
        let head = progress.head.map_or(0, |head| head.commit + 1);
        match &self.bar {
            Some(bar) => {
                bar.set_length(head);
                bar.set_position(progress.applied);
            }
            None => {
                if progress.applied >= self.printed + PLAIN_PROGRESS_EVERY {
                    self.printed = progress.applied;
                    eprintln!(
                        "replayed {} of {head} events ({:.1} s)",
                        progress.applied,
                        progress.elapsed.as_secs_f64()
                    );
                }
            }
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// How `verify` ends, as its exit status: scripts tell corruption from an unreadable
/// directory and from a write in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record checks, the log extends every head it must, the replay agrees.
    Intact = 0,
    /// Integrity failure: named by file and offset (or by the replay's discrepancy).
    Corrupt = 1,
    /// Nothing was verified: a usage error, a missing directory, no permission.
    Unreadable = 2,
    /// Intact, but the last segment ends in bytes that are no record yet: a crash's torn
    /// write, or a write in progress. Left as they are.
    TornTail = 3,
}

impl Verdict {
    pub fn exit_code(self) -> std::process::ExitCode {
        std::process::ExitCode::from(self as u8)
    }
}

/// The exit status of a read-only tool's failure: corruption, or nothing could be read.
pub fn failure_code(error: &(dyn std::error::Error + 'static)) -> Verdict {
    let store = error.downcast_ref::<StoreError>().or_else(|| {
        match error.downcast_ref::<crate::export::CommandError>() {
            Some(crate::export::CommandError::Store(store)) => Some(store),
            _ => match error.downcast_ref::<crate::proofs::ProofError>() {
                Some(crate::proofs::ProofError::Store(store)) => Some(store),
                _ => None,
            },
        }
    });
    let replay = error.downcast_ref::<projections::ProjectionError>();
    match (store, replay) {
        (Some(StoreError::Corrupted { .. }), _) => Verdict::Corrupt,
        (
            _,
            Some(
                ProjectionError::Store(StoreError::Corrupted { .. })
                | ProjectionError::UndecodableEvent { .. }
                | ProjectionError::InvariantBroken { .. },
            ),
        ) => Verdict::Corrupt,
        _ => Verdict::Unreadable,
    }
}

/// Writes a line to standard output; a reader that went away (`verify | head`) does not
/// change the verdict, so write errors are ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `verify --data DIR`: the file backend's byte-level check of every record (checksums,
/// hashes, positions, revisions, unique ids, and that the log extends the head its
/// checkpoint recorded), then a replay through the projections (chain, trial balance
/// after every event, invariants of every view). Opens nothing for writing: the data
/// directory's bytes are the same after it, and it runs beside a server.
pub async fn run_verify(args: &VerifyArgs) -> Verdict {
    match verify(args).await {
        Ok(verdict) => verdict,
        Err(error) => {
            eprintln!("error: {error}");
            failure_code(error.as_ref())
        }
    }
}

async fn verify(args: &VerifyArgs) -> Result<Verdict, Failure> {
    let mut known = Vec::new();
    for path in &args.trusted_head {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read the trusted head {}: {error}", path.display()))?;
        let heads = crate::heads::parse_trusted(&text)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        for head in heads {
            let source = format!(
                "the trusted head of {} in {}",
                head.signed_at,
                path.display()
            );
            known.push(head.check(source)?);
        }
    }
    if let Some(path) = &args.export {
        return verify_export_file(path, &known);
    }
    // Read before the segments, like the checkpoint: the server signs only what is on disk.
    let stored = match signed_heads(&args.data) {
        Ok(heads) => {
            let count = heads.len();
            known.extend(heads);
            count
        }
        Err(problem) => {
            say!("CORRUPT {problem}");
            return Ok(Verdict::Corrupt);
        }
    };
    let trusted = args.trusted_head.len();
    let known_count = known.len();
    let log = args.data.join(LOG_DIR_NAME);
    let files =
        tokio::task::spawn_blocking(move || ledger::store::file::verify_against(log, &known))
            .await??;
    if let Some(problem) = &files.problem {
        say!(
            "CORRUPT {} offset {}: {} ({} records verified before it)",
            problem.file.display(),
            problem.offset,
            problem.reason,
            files.events
        );
        return Ok(Verdict::Corrupt);
    }
    say!(
        "files: {} events in {} streams, {} segments, chain head {}",
        files.events,
        files.streams,
        files.segments,
        files.chain_head.to_hex()
    );
    if stored > 0 {
        say!("files: the log extends the {stored} heads the server signed");
    }
    if trusted > 0 {
        say!("files: the log extends every trusted head");
    }
    match &files.beyond_known {
        Some(beyond) if args.signed_to_end => {
            say!(
                "CORRUPT {} offset {}: {}, and --signed-to-end asks that one covers all",
                beyond.file.display(),
                beyond.offset,
                beyond.reason
            );
            return Ok(Verdict::Corrupt);
        }
        Some(beyond) => say!(
            "files: {} offset {}: {}",
            beyond.file.display(),
            beyond.offset,
            beyond.reason
        ),
        None if args.signed_to_end && known_count == 0 && files.events > 0 => {
            say!("CORRUPT no signed head covers the log, and --signed-to-end asks that one does");
            return Ok(Verdict::Corrupt);
        }
        None => {}
    }
    match &files.checkpoint {
        CheckpointHead::Recorded { events, head } => say!(
            "files: the log extends the index checkpoint's head ({events} events, {})",
            head.to_hex()
        ),
        CheckpointHead::Missing => say!("files: no index checkpoint to compare with"),
        CheckpointHead::Unreadable { reason } => {
            say!("files: the index checkpoint vouches for nothing: {reason}")
        }
    }
    if let Some(torn) = &files.torn_tail {
        say!(
            "TORN TAIL {} offset {}: {} (not part of the log; left as it is)",
            torn.file.display(),
            torn.offset,
            torn.reason
        );
    }
    let store: Arc<dyn EventStore> = Arc::new(crate::store::open_read_only(&args.data)?);
    let mut reporter = Reporter::new("verifying");
    let verified =
        projections::verify::verify_store(&store, None, &mut |progress| reporter.update(progress))
            .await;
    reporter.finish();
    let summary = match verified {
        Ok(summary) => summary,
        Err(Discrepancy::Store(error)) if !matches!(error, StoreError::Corrupted { .. }) => {
            return Err(error.into())
        }
        Err(discrepancy) => {
            say!("CORRUPT replay: {}: {discrepancy}", discrepancy.code());
            return Ok(Verdict::Corrupt);
        }
    };
    say!(
        "replay: {} events, {} streams, trial balance zero after each of {} postings, chain head {}",
        summary.events, summary.streams, summary.trial_balance_checks, summary.chain_head
    );
    for (currency, totals) in &summary.totals {
        say!("totals {currency}: {}", serde_json::to_string(totals)?);
    }
    if files.torn_tail.is_some() {
        say!("ok, with a torn tail");
        return Ok(Verdict::TornTail);
    }
    say!("ok");
    Ok(Verdict::Intact)
}

/// The heads the server signed and kept in `DATA/heads.jsonl`, each checked against its
/// signature and the server's public key (`DATA/head-signing.pub`): a head that does not
/// check is evidence tampered with, named by line.
fn signed_heads(data: &std::path::Path) -> Result<Vec<KnownHead>, String> {
    let path = data.join(crate::heads::HEADS_FILE_NAME);
    let public = std::fs::read_to_string(data.join(crate::heads::PUBLIC_KEY_FILE_NAME)).ok();
    stored_heads(data)?
        .iter()
        .enumerate()
        .map(|(index, head)| {
            let place = format!("{} line {}", path.display(), index + 1);
            if public
                .as_deref()
                .is_some_and(|key| key.trim() != head.public_key)
            {
                return Err(format!("{place}: signed by another key than the server's"));
            }
            head.check(format!("the signed head of {} ({place})", head.signed_at))
                .map_err(|reason| format!("{place}: {reason}"))
        })
        .collect()
}

/// `verify --export FILE`: the export's own check (`export::verify_export`).
fn verify_export_file(path: &std::path::Path, trusted: &[KnownHead]) -> Result<Verdict, Failure> {
    let file = std::fs::File::open(path)
        .map_err(|error| format!("cannot read the export {}: {error}", path.display()))?;
    match crate::export::verify_export(std::io::BufReader::new(file), trusted)? {
        Err(problem) => {
            say!(
                "CORRUPT {} line {}: {}",
                path.display(),
                problem.line,
                problem.reason
            );
            Ok(Verdict::Corrupt)
        }
        Ok(check) => {
            say!(
                "export: {} events, head {}, the trailer agrees",
                check.events,
                check.head.as_deref().unwrap_or("none")
            );
            match &check.signed_head {
                Some(signed) => say!(
                    "export: extends the head signed at {} ({} events) by key {}",
                    signed.signed_at,
                    signed.events,
                    signed.public_key
                ),
                None => say!("export: no signed head in the trailer"),
            }
            if !trusted.is_empty() {
                say!("export: extends every trusted head");
            }
            say!("ok");
            Ok(Verdict::Intact)
        }
    }
}

/// The heads kept in `DATA/heads.jsonl`, as written (signatures not checked).
pub fn stored_heads(data: &std::path::Path) -> Result<Vec<crate::heads::SignedHead>, String> {
    let path = data.join(crate::heads::HEADS_FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(format!("{}: cannot read: {error}", path.display())),
    };
    crate::heads::parse_lines(&text)
        .map_err(|(line, reason)| format!("{} line {line}: {reason}", path.display()))
}

/// `report KIND --data DIR [--format csv|json]`: the report, as the API serves it.
pub async fn run_report(args: &ReportArgs) -> Result<String, Failure> {
    let store = crate::store::open_read_only(&args.data)?;
    let mut reporter = Reporter::new("replaying");
    let rebuilt = projections::rebuild_from_store(&store, LedgerViews::new(), &mut |progress| {
        reporter.update(progress)
    })
    .await;
    reporter.finish();
    let (views, _) = rebuilt?;
    let csv = args.format == ReportFormatArg::Csv;
    let period_of = |text: &Option<String>| -> Result<Period, Failure> {
        let text = text.as_deref().ok_or("--period YYYY-MM is required")?;
        Period::parse(text).map_err(|error| format!("--period: {}", error.problem).into())
    };
    let text = match args.kind {
        ReportKind::Payouts => {
            let report = payout_report(&views, period_of(&args.period)?, &affiliate_id_as_name)?;
            if csv {
                report.to_csv()
            } else {
                report.to_json()
            }
        }
        ReportKind::TrialBalance => {
            let as_of = match args.as_of.as_deref() {
                None => None,
                Some(text) => Some(match DateTime::parse_from_rfc3339(text) {
                    Ok(at) => AsOf::Time(at.to_utc()),
                    Err(_) => AsOf::Position(parse_position(text).ok_or_else(|| {
                        format!("--as-of: {text:?} is neither an RFC 3339 instant nor a position")
                    })?),
                }),
            };
            let report = trial_balance_report(&views, as_of);
            if csv {
                report.to_csv()
            } else {
                report.to_json()
            }
        }
        ReportKind::Donations => {
            let period = period_of(&args.period)?;
            let report = donation_report(&views, period, period);
            if csv {
                report.to_csv()
            } else {
                report.to_json()
            }
        }
        ReportKind::Commissions => {
            let affiliate = args
                .affiliate_id
                .as_deref()
                .ok_or("--affiliate-id is required")?;
            let affiliate = AccountId::parse(affiliate)
                .map_err(|error| format!("--affiliate-id: {}", error.problem))?;
            let report = commission_statement(
                &views,
                &affiliate,
                period_of(&args.period)?,
                &affiliate_id_as_name,
            );
            if csv {
                report.to_csv()
            } else {
                report.to_json()
            }
        }
    };
    Ok(text)
}
