//! Finance reports, each as CSV (RFC 4180) and JSON, read from [`LedgerViews`].
//!
//! Amounts are decimal strings at the currency's minor unit (`12.30`), never floats. A
//! report whose totals do not reconcile with the journal is not produced: the check is
//! part of building it, and a mismatch is a [`ReportError`] naming both numbers.

pub mod csv;

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use ledger::domain::{AccountId, Currency, Period};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::journal::AsOf;
use crate::views::commissions::{Commission, CommissionStatus, PayoutStatus};
use crate::views::LedgerViews;
use csv::{CsvWriter, Field};

/// How a report names an affiliate: a display name, or the replacement an erased subject
/// gets. Until the privacy layer provides names, [`affiliate_id_as_name`] is used.
pub type DisplayName<'a> = &'a dyn Fn(&AccountId) -> String;

/// Names every affiliate by its id.
pub fn affiliate_id_as_name(affiliate: &AccountId) -> String {
    affiliate.to_string()
}

/// A report that cannot be trusted: its totals disagree with the books.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error(
        "payout report for {period} does not reconcile in {currency}: its rows total \
         {report_total}, the journal's payout entries {journal_total}"
    )]
    Unreconciled {
        period: Period,
        currency: String,
        report_total: String,
        journal_total: String,
    },
    #[error("payout report for {period} lists {report}, but the run completed with {summary}")]
    RunSummaryDisagrees {
        period: Period,
        report: String,
        summary: String,
    },
}

/// An amount at its currency's minor unit.
pub fn money_text(amount: Decimal, currency: Currency) -> String {
    let mut amount = amount;
    amount.rescale(currency.minor_unit());
    amount.to_string()
}

fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn json<T: Serialize>(report: &T) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("reports serialise");
    text.push('\n');
    text
}

// Payout report.

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PayoutRow {
    pub affiliate_id: String,
    pub display_name: String,
    pub amount: String,
    pub currency: String,
    pub commissions: u64,
    pub held_carried_over: String,
    /// `scheduled`, `sent`, `failed`, or `carried_over` (no payout this period).
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PayoutTotals {
    pub currency: String,
    /// Every payout of the run, failed ones included: what the journal's payout entries
    /// for the period moved.
    pub scheduled: String,
    pub sent: String,
    pub failed: String,
    pub held_carried_over: String,
    pub payouts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PayoutReport {
    pub period: String,
    /// The instant payable balances were taken at (the run's, or the period's end).
    pub as_of: String,
    pub rows: Vec<PayoutRow>,
    pub totals: Vec<PayoutTotals>,
    /// True once the totals were checked against the journal (always, for a report that
    /// was produced).
    pub reconciled: bool,
}

/// The payout report of `period`: one row per affiliate paid in the period's run or
/// carrying a balance over, in affiliate id order.
pub fn payout_report(
    views: &LedgerViews,
    period: Period,
    display_name: DisplayName<'_>,
) -> Result<PayoutReport, ReportError> {
    let commissions = &views.commissions;
    let run = commissions.run(period);
    let summary = commissions.run_summary(period);
    let as_of = summary
        .map(|summary| summary.as_of)
        .or_else(|| run.and_then(|run| run.values().map(|payout| payout.as_of).max()))
        .unwrap_or_else(|| period.end());
    // What each affiliate carries over: commissions earned by the run's instant that no
    // payout of this period or before matched, held or below the minimum.
    let mut carried: BTreeMap<(AccountId, Currency), Decimal> = BTreeMap::new();
    for index in 0..commissions.commission_count() {
        let commission = commissions.commission(index as u32);
        if commission.earned_at > as_of {
            continue;
        }
        let open = open_through(commission, period);
        if open > Decimal::ZERO {
            *carried
                .entry((commission.beneficiary, commission.currency()))
                .or_default() += open;
        }
    }
    let mut rows = Vec::new();
    let mut totals: BTreeMap<Currency, (Decimal, Decimal, Decimal, Decimal, u64)> = BTreeMap::new();
    let mut affiliates: Vec<(AccountId, Currency)> = carried.keys().copied().collect();
    if let Some(run) = run {
        affiliates.extend(
            run.values()
                .map(|payout| (payout.affiliate, payout.amount.currency())),
        );
    }
    affiliates.sort_unstable();
    affiliates.dedup();
    for (affiliate, currency) in affiliates {
        let carried_over = carried
            .get(&(affiliate, currency))
            .copied()
            .unwrap_or_default();
        let payout = run
            .and_then(|run| run.get(&affiliate))
            .filter(|payout| payout.amount.currency() == currency);
        let total = totals.entry(currency).or_default();
        total.3 += carried_over;
        let (amount, count, status) = match payout {
            Some(payout) => {
                let amount = payout.amount.amount();
                total.0 += amount;
                total.4 += 1;
                match payout.status {
                    PayoutStatus::Sent => total.1 += amount,
                    PayoutStatus::Failed => total.2 += amount,
                    PayoutStatus::Scheduled => {}
                }
                (
                    amount,
                    payout.commissions.len() as u64,
                    payout.status.code(),
                )
            }
            None => (Decimal::ZERO, 0, "carried_over"),
        };
        rows.push(PayoutRow {
            affiliate_id: affiliate.to_string(),
            display_name: display_name(&affiliate),
            amount: money_text(amount, currency),
            currency: currency.code().to_owned(),
            commissions: count,
            held_carried_over: money_text(carried_over, currency),
            status: status.to_owned(),
        });
    }
    // Reconcile with the journal: the run's payouts, sent and failed, per currency.
    let journal = views.payout_journal.get(&period);
    let currencies: std::collections::BTreeSet<Currency> = totals
        .keys()
        .copied()
        .chain(journal.into_iter().flat_map(|journal| {
            journal
                .scheduled
                .keys()
                .chain(journal.sent.keys())
                .chain(journal.failed.keys())
                .copied()
        }))
        .collect();
    for currency in &currencies {
        let total = totals.get(currency).copied().unwrap_or_default();
        let booked = |map: Option<&BTreeMap<Currency, Decimal>>| {
            map.and_then(|map| map.get(currency))
                .copied()
                .unwrap_or_default()
        };
        let checks = [
            (total.0, booked(journal.map(|journal| &journal.scheduled))),
            (total.1, booked(journal.map(|journal| &journal.sent))),
            (total.2, booked(journal.map(|journal| &journal.failed))),
        ];
        for (report_total, journal_total) in checks {
            if report_total != journal_total {
                return Err(ReportError::Unreconciled {
                    period,
                    currency: currency.code().to_owned(),
                    report_total: money_text(report_total, *currency),
                    journal_total: money_text(journal_total, *currency),
                });
            }
        }
    }
    // And with the run's own summary: how many it paid and how much.
    if let Some(summary) = summary {
        let currency = summary.total.currency();
        let total = totals.get(&currency).copied().unwrap_or_default();
        if total.0 != summary.total.amount() || total.4 != u64::from(summary.payouts) {
            return Err(ReportError::RunSummaryDisagrees {
                period,
                report: format!("{} payouts, {}", total.4, money_text(total.0, currency)),
                summary: format!(
                    "{} payouts, {}",
                    summary.payouts,
                    money_text(summary.total.amount(), currency)
                ),
            });
        }
    }
    Ok(PayoutReport {
        period: period.to_string(),
        as_of: time_text(as_of),
        rows,
        totals: totals
            .into_iter()
            .map(
                |(currency, (scheduled, sent, failed, carried, payouts))| PayoutTotals {
                    currency: currency.code().to_owned(),
                    scheduled: money_text(scheduled, currency),
                    sent: money_text(sent, currency),
                    failed: money_text(failed, currency),
                    held_carried_over: money_text(carried, currency),
                    payouts,
                },
            )
            .collect(),
        reconciled: true,
    })
}

/// What is left of a commission after reversals and the payouts of `period` and before.
fn open_through(commission: &Commission, period: Period) -> Decimal {
    let matched: Decimal = commission
        .paid_by()
        .filter(|(paid_in, _)| *paid_in <= period)
        .map(|(_, amount)| amount)
        .sum();
    (commission.net() - matched).max(Decimal::ZERO)
}

impl PayoutReport {
    pub fn to_csv(&self) -> String {
        let mut csv = CsvWriter::new();
        csv.plain(&[
            "period",
            "affiliate_id",
            "display_name",
            "amount",
            "currency",
            "commissions",
            "held_carried_over",
            "status",
        ]);
        for row in &self.rows {
            let commissions = row.commissions.to_string();
            csv.record(&[
                Field::Plain(&self.period),
                Field::Plain(&row.affiliate_id),
                Field::Text(&row.display_name),
                Field::Plain(&row.amount),
                Field::Plain(&row.currency),
                Field::Plain(&commissions),
                Field::Plain(&row.held_carried_over),
                Field::Plain(&row.status),
            ]);
        }
        csv.finish()
    }

    pub fn to_json(&self) -> String {
        json(self)
    }
}

// Commission statement.

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    pub at: String,
    /// `earned`, `reversed` (a refund's clawback) or `forfeited` (refused on review).
    pub kind: String,
    pub payment_id: String,
    pub payer: String,
    pub level: u8,
    pub rate: String,
    pub plan_version: u32,
    pub base_amount: String,
    /// Positive when earned, negative when reversed.
    pub amount: String,
    pub currency: String,
    /// The refund or chargeback, on a reversal line.
    pub refund_id: String,
    /// Status at the end of the period, on an earned line.
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatementTotals {
    pub currency: String,
    pub earned: String,
    pub reversed: String,
    pub net: String,
    /// Paid by the period's payout run (scheduled or sent).
    pub paid_out: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CommissionStatement {
    pub affiliate_id: String,
    pub display_name: String,
    pub period: String,
    pub lines: Vec<StatementLine>,
    pub totals: Vec<StatementTotals>,
}

/// The commission statement of `affiliate` for `period`: every commission earned and
/// every reversal made in the period, each traced to its payment, in time order.
pub fn commission_statement(
    views: &LedgerViews,
    affiliate: &AccountId,
    period: Period,
    display_name: DisplayName<'_>,
) -> CommissionStatement {
    let commissions = &views.commissions;
    let mut lines: Vec<(DateTime<Utc>, StatementLine)> = Vec::new();
    let mut totals: BTreeMap<Currency, (Decimal, Decimal, Decimal)> = BTreeMap::new();
    let end = period.end();
    for (_, commission) in commissions.of_affiliate(affiliate) {
        let payment = commissions.payment_record(commission.payment);
        let currency = commission.currency();
        let line = |at: DateTime<Utc>, kind: &str, amount: Decimal, refund: &str, status: &str| {
            StatementLine {
                at: time_text(at),
                kind: kind.to_owned(),
                payment_id: payment.payment_id.to_string(),
                payer: commission.payer.to_string(),
                level: commission.level,
                rate: commission.rate.to_string(),
                plan_version: commission.plan_version.get(),
                base_amount: money_text(commission.base_amount, currency),
                amount: money_text(amount, currency),
                currency: currency.code().to_owned(),
                refund_id: refund.to_owned(),
                status: status.to_owned(),
            }
        };
        if period.contains(commission.earned_at) {
            let status = status_at_period_end(commission, period, end);
            lines.push((
                commission.earned_at,
                line(
                    commission.earned_at,
                    "earned",
                    commission.amount,
                    "",
                    status.code(),
                ),
            ));
            totals.entry(currency).or_default().0 += commission.amount;
        }
        if let Some(crate::views::commissions::Review::Forfeited { at }) = commission.review() {
            if period.contains(at) {
                lines.push((at, line(at, "forfeited", -commission.forfeited(), "", "")));
                totals.entry(currency).or_default().1 += commission.forfeited();
            }
        }
        for reversal in commission.reversals() {
            if period.contains(reversal.at) {
                lines.push((
                    reversal.at,
                    line(
                        reversal.at,
                        "reversed",
                        -reversal.amount,
                        reversal.refund_id.as_str(),
                        "",
                    ),
                ));
                totals.entry(currency).or_default().1 += reversal.amount;
            }
        }
    }
    if let Some(payout) = commissions.run(period).and_then(|run| run.get(affiliate)) {
        if payout.status != PayoutStatus::Failed {
            totals.entry(payout.amount.currency()).or_default().2 += payout.amount.amount();
        }
    }
    // Stable order: time, then payment, then kind (earned before reversed).
    lines.sort_by(|a, b| {
        (a.0, &a.1.payment_id, &a.1.kind, a.1.level).cmp(&(
            b.0,
            &b.1.payment_id,
            &b.1.kind,
            b.1.level,
        ))
    });
    CommissionStatement {
        affiliate_id: affiliate.to_string(),
        display_name: display_name(affiliate),
        period: period.to_string(),
        lines: lines.into_iter().map(|(_, line)| line).collect(),
        totals: totals
            .into_iter()
            .map(|(currency, (earned, reversed, paid))| StatementTotals {
                currency: currency.code().to_owned(),
                earned: money_text(earned, currency),
                reversed: money_text(reversed, currency),
                net: money_text(earned - reversed, currency),
                paid_out: money_text(paid, currency),
            })
            .collect(),
    }
}

/// A commission's status as it stood at the end of `period` (reversals and payouts up
/// to then).
fn status_at_period_end(
    commission: &Commission,
    period: Period,
    end: DateTime<Utc>,
) -> CommissionStatus {
    let forfeited = match commission.review() {
        Some(crate::views::commissions::Review::Forfeited { at }) if at < end => {
            commission.forfeited()
        }
        _ => Decimal::ZERO,
    };
    let reversed: Decimal = commission
        .reversals()
        .iter()
        .filter(|reversal| reversal.at < end)
        .map(|reversal| reversal.amount)
        .sum::<Decimal>()
        + forfeited;
    let net = commission.amount - reversed;
    let matched: Decimal = commission
        .paid_by()
        .filter(|(paid_in, _)| *paid_in < period)
        .map(|(_, amount)| amount)
        .sum();
    if net.is_zero() {
        CommissionStatus::Reversed
    } else if matched >= net {
        CommissionStatus::Paid
    } else if commission.is_payable_at(end) {
        CommissionStatus::Payable
    } else {
        CommissionStatus::Held
    }
}

impl CommissionStatement {
    pub fn to_csv(&self) -> String {
        let mut csv = CsvWriter::new();
        csv.plain(&[
            "affiliate_id",
            "period",
            "at",
            "kind",
            "payment_id",
            "payer",
            "level",
            "rate",
            "plan_version",
            "base_amount",
            "amount",
            "currency",
            "refund_id",
            "status",
        ]);
        for line in &self.lines {
            let level = line.level.to_string();
            let plan_version = line.plan_version.to_string();
            csv.plain(&[
                &self.affiliate_id,
                &self.period,
                &line.at,
                &line.kind,
                &line.payment_id,
                &line.payer,
                &level,
                &line.rate,
                &plan_version,
                &line.base_amount,
                &line.amount,
                &line.currency,
                &line.refund_id,
                &line.status,
            ]);
        }
        csv.finish()
    }

    pub fn to_json(&self) -> String {
        json(self)
    }
}

// Trial balance.

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrialBalanceLine {
    pub account: String,
    pub currency: String,
    pub debit: String,
    pub credit: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrialBalanceTotal {
    pub currency: String,
    pub debit: String,
    pub credit: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrialBalanceReport {
    /// `now`, `position N` or an RFC 3339 instant.
    pub as_of: String,
    pub lines: Vec<TrialBalanceLine>,
    pub totals: Vec<TrialBalanceTotal>,
    pub balanced: bool,
}

/// The trial balance now, or as of a past position or instant.
pub fn trial_balance_report(views: &LedgerViews, as_of: Option<AsOf>) -> TrialBalanceReport {
    let (trial, label) = match as_of {
        None => (views.journal.trial_balance(), "now".to_owned()),
        Some(as_of) => (
            views.journal.trial_balance_as_of(as_of),
            match as_of {
                AsOf::Position(position) => format!("position {position}"),
                AsOf::Time(at) => time_text(at),
            },
        ),
    };
    TrialBalanceReport {
        as_of: label,
        balanced: trial.is_balanced(),
        lines: trial
            .rows
            .iter()
            .map(|row| TrialBalanceLine {
                account: row.account.to_string(),
                currency: row.currency.code().to_owned(),
                debit: money_text(row.debit, row.currency),
                credit: money_text(row.credit, row.currency),
            })
            .collect(),
        totals: trial
            .totals
            .iter()
            .map(|(currency, (debit, credit))| TrialBalanceTotal {
                currency: currency.code().to_owned(),
                debit: money_text(*debit, *currency),
                credit: money_text(*credit, *currency),
            })
            .collect(),
    }
}

impl TrialBalanceReport {
    pub fn to_csv(&self) -> String {
        let mut csv = CsvWriter::new();
        csv.plain(&["as_of", "account", "currency", "debit", "credit"]);
        for line in &self.lines {
            csv.plain(&[
                &self.as_of,
                &line.account,
                &line.currency,
                &line.debit,
                &line.credit,
            ]);
        }
        for total in &self.totals {
            csv.plain(&[
                &self.as_of,
                "total",
                &total.currency,
                &total.debit,
                &total.credit,
            ]);
        }
        csv.finish()
    }

    pub fn to_json(&self) -> String {
        json(self)
    }
}

// Donation report.

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DonationLine {
    pub period: String,
    pub organisation: String,
    pub net_revenue: String,
    pub share: String,
    pub amount: String,
    pub currency: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DonationTotal {
    pub currency: String,
    pub net_revenue: String,
    pub amount: String,
}

/// Donations per period and organisation; aggregates only, no user data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DonationReport {
    pub from: String,
    pub to: String,
    pub lines: Vec<DonationLine>,
    pub totals: Vec<DonationTotal>,
}

/// The donations of the periods `from` through `to`.
pub fn donation_report(views: &LedgerViews, from: Period, to: Period) -> DonationReport {
    let mut lines = Vec::new();
    let mut totals: BTreeMap<Currency, (Decimal, Decimal)> = BTreeMap::new();
    for (period, donations) in views.commissions.donations().range(from..=to) {
        for donation in donations {
            let currency = donation.amount.currency();
            let total = totals.entry(currency).or_default();
            total.0 += donation.net_revenue.amount();
            total.1 += donation.amount.amount();
            lines.push(DonationLine {
                period: period.to_string(),
                organisation: donation.organisation.to_string(),
                net_revenue: money_text(donation.net_revenue.amount(), currency),
                share: donation.share.to_string(),
                amount: money_text(donation.amount.amount(), currency),
                currency: currency.code().to_owned(),
            });
        }
    }
    DonationReport {
        from: from.to_string(),
        to: to.to_string(),
        lines,
        totals: totals
            .into_iter()
            .map(|(currency, (net_revenue, amount))| DonationTotal {
                currency: currency.code().to_owned(),
                net_revenue: money_text(net_revenue, currency),
                amount: money_text(amount, currency),
            })
            .collect(),
    }
}

impl DonationReport {
    pub fn to_csv(&self) -> String {
        let mut csv = CsvWriter::new();
        csv.plain(&[
            "period",
            "organisation",
            "net_revenue",
            "share",
            "amount",
            "currency",
        ]);
        for line in &self.lines {
            csv.plain(&[
                &line.period,
                &line.organisation,
                &line.net_revenue,
                &line.share,
                &line.amount,
                &line.currency,
            ]);
        }
        csv.finish()
    }

    pub fn to_json(&self) -> String {
        json(self)
    }
}

#[cfg(test)]
mod tests;
