//! Runs the projections scale benchmark: `cargo run --release -p projections --example
//! projections_bench -- [--quick]`. The binary's `bench` command calls the same function.

/// The same allocator as the `refledger` binary, so the benchmark measures what it runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let config = if quick {
        projections::bench::BenchConfig::quick()
    } else {
        projections::bench::BenchConfig::full()
    };
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
