//! Golden-file tests of the report formats, on a small generated history. To accept a
//! deliberate format change, run with `UPDATE_GOLDEN=1` and review the diff.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use ledger::store::Position;

use super::*;
use crate::history::{Generator, HistoryConfig, Recorder};
use crate::projection::Projection;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/reports")
}

fn golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).expect("fixtures dir");
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error} (run with UPDATE_GOLDEN=1)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the report produced now:\n{actual}",
        path.display()
    );
}

fn tiny_history() -> LedgerViews {
    let config = HistoryConfig {
        seed: 11,
        accounts: 14,
        chain_depth: 4,
        events: 900,
        start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        months: 3,
    };
    let mut generator = Generator::new(config);
    let mut recorder = Recorder::new(11);
    let mut events = Vec::new();
    while let Some(batch) = generator.next_batch() {
        recorder.record(&batch, &mut events);
    }
    let mut views = LedgerViews::new();
    for event in &events {
        views.apply(event).expect("applies");
    }
    views
}

/// A CSV document's records, split the way RFC 4180 reads them.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "records end with CRLF");
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        field.is_empty() && record.is_empty(),
        "document ends with CRLF"
    );
    records
}

fn rectangular(text: &str) -> Vec<Vec<String>> {
    let records = parse_csv(text);
    let width = records[0].len();
    assert!(records.iter().all(|record| record.len() == width));
    records
}

fn period(text: &str) -> Period {
    Period::parse(text).expect("period")
}

#[test]
fn payout_report_matches_its_golden_files_and_reconciles() {
    let views = tiny_history();
    let report = payout_report(&views, period("2026-02"), &affiliate_id_as_name).expect("report");
    assert!(report.reconciled);
    assert!(
        report.rows.iter().any(|row| row.status == "sent"),
        "the golden history must pay someone"
    );
    assert!(report.rows.iter().any(|row| row.status == "carried_over"));
    let records = rectangular(&report.to_csv());
    assert_eq!(records.len(), report.rows.len() + 1);
    golden("payout_report.csv", &report.to_csv());
    golden("payout_report.json", &report.to_json());
}

#[test]
fn a_payout_report_that_disagrees_with_the_journal_is_refused() {
    let mut views = tiny_history();
    let february = period("2026-02");
    let journal = views
        .payout_journal
        .get_mut(&february)
        .expect("a run in February");
    *journal.sent.get_mut(&Currency::EUR).expect("EUR sent") += Decimal::new(1, 2);
    let refused = payout_report(&views, february, &affiliate_id_as_name);
    assert!(
        matches!(refused, Err(ReportError::Unreconciled { .. })),
        "{refused:?}"
    );
}

#[test]
fn commission_statement_matches_its_golden_files() {
    let views = tiny_history();
    let february = period("2026-02");
    // The affiliate with the most commissions in February.
    let report = payout_report(&views, february, &affiliate_id_as_name).expect("report");
    let affiliate = report
        .rows
        .iter()
        .filter(|row| row.status == "sent")
        .max_by_key(|row| row.commissions)
        .map(|row| AccountId::parse(&row.affiliate_id).expect("id"))
        .expect("someone was paid");
    let statement = commission_statement(&views, &affiliate, february, &|_| {
        "Ada, \"the\" affiliate".to_owned()
    });
    assert!(statement.lines.iter().any(|line| line.kind == "earned"));
    rectangular(&statement.to_csv());
    golden("commission_statement.csv", &statement.to_csv());
    golden("commission_statement.json", &statement.to_json());
}

#[test]
fn trial_balance_matches_its_golden_files_now_and_as_of() {
    let views = tiny_history();
    let now = trial_balance_report(&views, None);
    assert!(now.balanced);
    let records = rectangular(&now.to_csv());
    assert_eq!(records.len(), 1 + now.lines.len() + now.totals.len());
    golden("trial_balance.csv", &now.to_csv());
    golden("trial_balance.json", &now.to_json());
    let past = trial_balance_report(&views, Some(AsOf::Position(Position::sequence(300))));
    assert!(past.balanced);
    assert_ne!(past, now);
    let at = Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap();
    let at_time = trial_balance_report(&views, Some(AsOf::Time(at)));
    assert!(at_time.balanced);
    golden("trial_balance_2026-02-01.csv", &at_time.to_csv());
}

#[test]
fn donation_report_matches_its_golden_files() {
    let views = tiny_history();
    let report = donation_report(&views, period("2026-01"), period("2026-12"));
    assert!(report.lines.len() >= 2);
    rectangular(&report.to_csv());
    golden("donation_report.csv", &report.to_csv());
    golden("donation_report.json", &report.to_json());
}
