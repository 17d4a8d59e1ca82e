//! Runs the projections scale benchmark:
//!
//! ```text
//! cargo run --release -p projections --example projections_bench -- [--quick] [MODE]
//! ```
//!
//! Modes:
//! - none: generate the history and rebuild from it in the same process (the binary's
//!   `bench` command does the same); peak memory includes the generator's books.
//! - `--write-history FILE`: only generate the history into FILE.
//! - `--history FILE`: rebuild from FILE (written with the same size flag); peak memory is
//!   the rebuild's alone, the views plus one chunk of events.
//! - `--checkpoint` (with either of the above): also write the views' checkpoint at the
//!   end, streamed through `CheckpointDir` into `--checkpoint-dir DIR` (default: a
//!   directory under the system's temporary directory), and print the file's size, the
//!   time and the peak memory after it; the file is removed after unless
//!   `--keep-checkpoint` is given.
//! - `--load-checkpoint DIR`: only read the views' checkpoint in DIR back (as a runner
//!   opening does) and print the time and the peak memory.
//! - `--generator-only`: generate and record the history in the same chunks without the
//!   views, and print the peak memory (the generator's share of the first mode's peak).

/// mimalloc, the same allocator as the `refledger` binary, so the benchmark measures what
/// it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The history `bench::run` generates, recorded in the same chunks, with no views.
fn generate_only(config: &projections::bench::BenchConfig) -> u64 {
    let mut source = projections::bench::GeneratedHistory::new(config);
    let mut chunk = Vec::new();
    let mut events = 0u64;
    loop {
        let more = source.fill(&mut chunk);
        events += chunk.len() as u64;
        if !more {
            return events;
        }
    }
}

/// The value after `flag` on the command line.
fn flag_value(flag: &str) -> Option<std::path::PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|arg| arg == flag)?;
    Some(std::path::PathBuf::from(
        args.get(at + 1)
            .unwrap_or_else(|| panic!("{flag} needs a file name")),
    ))
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let mut config = if quick {
        projections::bench::BenchConfig::quick()
    } else {
        projections::bench::BenchConfig::full()
    };
    if std::env::args().any(|arg| arg == "--checkpoint") {
        config.checkpoint_dir = Some(flag_value("--checkpoint-dir").unwrap_or_else(|| {
            std::env::temp_dir().join(format!("projections-bench-{}", std::process::id()))
        }));
    }
    config.checkpoint_keep = std::env::args().any(|arg| arg == "--keep-checkpoint");
    if let Some(dir) = flag_value("--load-checkpoint") {
        let measure = projections::bench::load_checkpoint(&dir).expect("the checkpoint is loaded");
        println!("{measure}");
        return;
    }
    if std::env::args().any(|arg| arg == "--generator-only") {
        let events = generate_only(&config);
        println!("events                 {events} (generated and recorded, no views)");
        let peak = projections::bench::peak_memory_bytes().map_or(0, |bytes| bytes >> 20);
        println!("peak memory (VmHWM)    {peak} MiB (generator only)");
        return;
    }
    if let Some(path) = flag_value("--write-history") {
        let started = std::time::Instant::now();
        let events =
            projections::bench::write_history(&config, &path).expect("the history file is written");
        println!(
            "events                 {events} written to {} in {:.1} s",
            path.display(),
            started.elapsed().as_secs_f64()
        );
        return;
    }
    let mut progress = |progress: &projections::Progress| {
        eprintln!(
            "{} events applied, {:.0} s",
            progress.applied,
            progress.elapsed.as_secs_f64()
        );
    };
    let report = match flag_value("--history") {
        Some(path) => projections::bench::run_from_file(&config, &path, &mut progress)
            .expect("the history file is read"),
        None => projections::bench::run(&config, &mut progress),
    };
    println!("{report}");
    println!(
        "{}",
        serde_json::to_string(&report).expect("the report serialises")
    );
}
