//! Runs the projections scale benchmark: `cargo run --release -p projections --example
//! projections_bench -- [--quick] [--generator-only]`. The binary's `bench` command calls
//! the same function.
//!
//! `--generator-only` generates and records the same history in the same chunks without
//! the views and prints its peak memory: the views' share of the benchmark's peak is
//! about the difference between the two runs (the generator's books grow to the end of
//! the history, as the views do, so the two peaks coincide).

/// mimalloc, the same allocator as the `refledger` binary, so the benchmark measures what
/// it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The process's peak resident memory (VmHWM), as `bench::run` reports it.
fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The history `bench::run` generates, recorded in the same chunks, with no views.
fn generate_only(config: &projections::bench::BenchConfig) -> u64 {
    use chrono::TimeZone as _;
    let mut generator = projections::history::Generator::new(projections::history::HistoryConfig {
        seed: config.seed,
        accounts: config.accounts,
        chain_depth: config.chain_depth,
        events: config.events,
        start: chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        months: config.months,
    });
    let mut recorder = projections::history::Recorder::new(config.seed);
    let mut chunk = Vec::new();
    let mut events = 0u64;
    loop {
        chunk.clear();
        let mut done = false;
        while chunk.len() < 1 << 16 {
            match generator.next_batch() {
                Some(batch) => recorder.record(&batch, &mut chunk),
                None => {
                    done = true;
                    break;
                }
            }
        }
        events += chunk.len() as u64;
        if done {
            return events;
        }
    }
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let config = if quick {
        projections::bench::BenchConfig::quick()
    } else {
        projections::bench::BenchConfig::full()
    };
    if std::env::args().any(|arg| arg == "--generator-only") {
        let events = generate_only(&config);
        println!("events                 {events} (generated and recorded, no views)");
        let peak = peak_resident_bytes().map_or(0, |bytes| bytes >> 20);
        println!("peak memory (VmHWM)    {peak} MiB (generator only)");
        return;
    }
    let report = projections::bench::run(&config, &mut |progress| {
        eprintln!(
            "{} events applied, {:.0} s",
            progress.applied,
            progress.elapsed.as_secs_f64()
        );
    });
    println!("{report}");
    println!(
        "{}",
        serde_json::to_string(&report).expect("the report serialises")
    );
}
