//! `refledger`: the server and the operator's commands.

mod bench;

use std::process::ExitCode;

use clap::Parser as _;

use api::cli::{Bench, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => api::server::serve(args).await.map_err(Into::into),
            Command::Export(args) => api::export::run_export(args).await.map_err(Into::into),
            Command::Append(args) => api::export::run_append(args).await.map_err(Into::into),
            Command::Read(args) => api::export::run_read(args).await.map_err(Into::into),
            Command::Verify(args) => api::offline::run_verify(&args.data).await,
            Command::Report(args) => report(args).await,
            Command::Erase(args) => erase(args).await,
            Command::Bench {
                bench: Bench::Store { events, quick, dir },
            } => bench_store(events, quick, dir).await,
            Command::Bench {
                bench:
                    Bench::Api {
                        connections,
                        seconds,
                        dir,
                    },
            } => bench_api(connections, seconds, dir).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `report`: the report on standard output.
async fn report(args: api::cli::ReportArgs) -> Result<(), Box<dyn std::error::Error>> {
    let text = api::offline::run_report(&args).await?;
    print!("{text}");
    Ok(())
}

/// `erase`: prints the erasure's proof as JSON.
async fn erase(args: api::cli::EraseArgs) -> Result<(), Box<dyn std::error::Error>> {
    let erased = api::privacy::run_erase(&args).await?;
    println!("{}", serde_json::to_string_pretty(&erased)?);
    Ok(())
}

/// `bench api`: the API against a trivial axum endpoint, as a Markdown table.
async fn bench_api(
    connections: usize,
    seconds: u64,
    dir: std::path::PathBuf,
) -> Result<(), Box<dyn std::error::Error>> {
    let options = bench::api::ApiBenchOptions {
        connections,
        seconds,
        dir,
    };
    let report = bench::api::run(options)
        .await
        .map_err(|error| format!("benchmark failed: {error}"))?;
    print!("{}", bench::api::render_markdown(&report));
    Ok(())
}

/// `bench store`: the embedded file log against SQLite, as a Markdown table.
async fn bench_store(
    events: u64,
    quick: bool,
    dir: std::path::PathBuf,
) -> Result<(), Box<dyn std::error::Error>> {
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
    let report = bench::store::run(options)
        .await
        .map_err(|error| format!("benchmark failed: {error}"))?;
    print!("{}", bench::store::render_markdown(&report));
    println!("\n(total {:.1} s)", report.elapsed.as_secs_f64());
    Ok(())
}
