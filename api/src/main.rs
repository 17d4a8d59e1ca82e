//! `refledger`: the server and the operator's commands.

mod bench;

use std::process::ExitCode;

use clap::Parser as _;

use api::cli::{Bench, Cli, Command};

/// mimalloc instead of glibc's allocator: a rebuild allocates and frees millions of small
/// records, and glibc spent about a quarter of it in `malloc`/`free` (fragmented heap,
/// `malloc_consolidate`); see docs/BENCHMARKS.md, Projections.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            Command::Verify(args) => verify(args).await,
            Command::Report(_) => Err(not_yet("report")),
            Command::Erase(_) => Err(not_yet("erase")),
            Command::Bench {
                bench: Bench::Store { events, quick, dir },
            } => bench_store(events, quick, dir).await,
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

/// `verify`: prints the report as JSON; fails when the chain does not verify.
async fn verify(args: api::cli::DataArgs) -> Result<(), Box<dyn std::error::Error>> {
    let opened = api::store::open(&args.data).await?;
    let report = api::verify::verify_chain(opened.store.as_ref()).await?;
    opened.close().await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.ok {
        Ok(())
    } else {
        Err("the hash chain does not verify".into())
    }
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

fn not_yet(command: &str) -> Box<dyn std::error::Error> {
    format!("`{command}` is not yet available in this build").into()
}
