//! `refledger`: the referral ledger's command-line binary.

mod bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "refledger",
    about = "An event-sourced referral and credit ledger"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks (measurements, not tests).
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// The embedded file log against SQLite (WAL, synchronous=FULL), side by side.
    Store {
        /// Events in the large log that is read back and reopened.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Small workloads (and a 200,000-event log unless --events is given).
        #[arg(long)]
        quick: bool,
        /// Directory for the benchmark's logs (a temporary directory inside it).
        #[arg(long, default_value = "target/bench")]
        dir: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench {
            bench: Bench::Store { events, quick, dir },
        } => {
            let log_events = if quick && events == 10_000_000 {
                200_000
            } else {
                events
            };
            let options = bench::store::StoreBenchOptions {
                log_events,
                quick,
                dir,
            };
            match bench::store::run(options).await {
                Ok(report) => {
                    print!("{}", bench::store::render_markdown(&report));
                    println!("\n(total {:.1} s)", report.elapsed.as_secs_f64());
                    std::process::ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("benchmark failed: {error}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
