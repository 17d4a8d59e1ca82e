//! Progress of a simulation for a person watching: a bar with events per second on a
//! terminal, a plain line every few seconds otherwise (a log file, CI).

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::Progress;

/// Seconds between plain progress lines.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// A progress callback for [`super::run`] writing to standard error.
pub fn reporter() -> Box<dyn FnMut(&Progress) + Send> {
    if std::io::stderr().is_terminal() {
        let mut bar: Option<ProgressBar> = None;
        Box::new(move |progress: &Progress| {
            let bar = bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(progress.accounts_total);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:30}] {pos}/{len} accounts {msg}",
                    )
                    .expect("the template is valid")
                    .progress_chars("=> "),
                );
                bar
            });
            bar.set_position(progress.accounts);
            bar.set_message(line(progress));
            if progress.done {
                bar.finish();
            }
        })
    } else {
        let mut last: Option<Instant> = None;
        Box::new(move |progress: &Progress| {
            if progress.done || last.is_none_or(|at| at.elapsed() >= PLAIN_EVERY) {
                eprintln!(
                    "simulate: {}/{} accounts, {}",
                    progress.accounts,
                    progress.accounts_total,
                    line(progress)
                );
                last = Some(Instant::now());
            }
        })
    }
}

fn line(progress: &Progress) -> String {
    let seconds = progress.elapsed.as_secs_f64().max(1e-9);
    let requests = progress.requests.map_or_else(String::new, |requests| {
        format!(
            "{requests} requests, {:.0} requests/s, ",
            requests as f64 / seconds
        )
    });
    format!(
        "{requests}{} events, {:.0} events/s, simulated {}",
        progress.events,
        progress.events as f64 / seconds,
        progress.simulated_at.format("%Y-%m-%d")
    )
}
