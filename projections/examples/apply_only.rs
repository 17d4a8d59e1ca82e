use chrono::{TimeZone, Utc};
use projections::bench::cpu_seconds;
use projections::history::{Generator, HistoryConfig, Recorder};
use projections::Projection;
fn main() {
    let mut generator = Generator::new(HistoryConfig {
        seed: 42,
        accounts: 50_000,
        chain_depth: 10_000,
        events: 500_000,
        start: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        months: 6,
    });
    let mut recorder = Recorder::new(1);
    let mut events = Vec::new();
    while let Some(batch) = generator.next_batch() {
        recorder.record(&batch, &mut events);
    }
    drop(generator);
    let n = events.len() as f64;
    let (t, c) = (std::time::Instant::now(), cpu_seconds().unwrap());
    for e in &events {
        projections::views::decode::decode(e).unwrap();
    }
    eprintln!(
        "decode only: wall {:.0}/s cpu {:.0}/s",
        n / t.elapsed().as_secs_f64(),
        n / (cpu_seconds().unwrap() - c)
    );
    let mut views = projections::views::LedgerViews::new();
    let (t, c) = (std::time::Instant::now(), cpu_seconds().unwrap());
    for e in &events {
        views.apply(e).unwrap();
    }
    eprintln!(
        "apply seq: wall {:.0}/s cpu {:.0}/s",
        n / t.elapsed().as_secs_f64(),
        n / (cpu_seconds().unwrap() - c)
    );
    let mut views = projections::views::LedgerViews::new();
    let (t, c) = (std::time::Instant::now(), cpu_seconds().unwrap());
    for ch in events.chunks(65536) {
        views.apply_batch(ch).unwrap();
    }
    eprintln!(
        "apply batch: wall {:.0}/s cpu {:.0}/s",
        n / t.elapsed().as_secs_f64(),
        n / (cpu_seconds().unwrap() - c)
    );
}
