//! The offline commands on a data directory (the server stopped): `verify`, which checks
//! the log's files, then replays it through every projection, and `report`, which writes
//! a finance report from a replay.

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

use crate::cli::{ReportArgs, ReportFormatArg, ReportKind};
use crate::http::events::parse_position;
use crate::http::metrics::Metrics;
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

/// `verify --data DIR`: the file backend's byte-level check of every record (checksums,
/// hashes, positions, revisions, unique ids), then a replay through the projections
/// (chain, trial balance after every event, invariants of every view). The first
/// discrepancy fails the command, named.
pub async fn run_verify(data: &std::path::Path) -> Result<(), Failure> {
    let log = data.join(LOG_DIR_NAME);
    let files = tokio::task::spawn_blocking(move || ledger::store::file::verify(log)).await??;
    if let Some(problem) = &files.problem {
        return Err(format!(
            "the log is corrupt: {} at byte {}: {} ({} records verified before it)",
            problem.file.display(),
            problem.offset,
            problem.reason,
            files.events
        )
        .into());
    }
    println!(
        "files: {} events in {} streams, {} segments, chain head {}",
        files.events,
        files.streams,
        files.segments,
        files.chain_head.to_hex()
    );
    if let Some(torn) = &files.torn_tail {
        println!(
            "files: an unfinished record at the end of {} (byte {}) is not part of the log: {}",
            torn.file.display(),
            torn.offset,
            torn.reason
        );
    }
    let opened = crate::store::open(data).await?;
    let store = crate::store::metered(opened.store.clone(), Arc::new(Metrics::default()));
    let mut reporter = Reporter::new("verifying");
    let verified =
        projections::verify::verify_store(&store, None, &mut |progress| reporter.update(progress))
            .await;
    reporter.finish();
    opened.close().await?;
    let summary =
        verified.map_err(|discrepancy| format!("{}: {discrepancy}", discrepancy.code()))?;
    println!(
        "replay: {} events, {} streams, trial balance zero after each of {} postings, chain head {}",
        summary.events, summary.streams, summary.trial_balance_checks, summary.chain_head
    );
    for (currency, totals) in &summary.totals {
        println!("totals {currency}: {}", serde_json::to_string(totals)?);
    }
    println!("ok");
    Ok(())
}

/// `report KIND --data DIR [--format csv|json]`: the report, as the API serves it.
pub async fn run_report(args: &ReportArgs) -> Result<String, Failure> {
    let opened = crate::store::open(&args.data).await?;
    let store = crate::store::metered(opened.store.clone(), Arc::new(Metrics::default()));
    let mut reporter = Reporter::new("replaying");
    let rebuilt = projections::rebuild_from_store(&store, LedgerViews::new(), &mut |progress| {
        reporter.update(progress)
    })
    .await;
    reporter.finish();
    opened.close().await?;
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
