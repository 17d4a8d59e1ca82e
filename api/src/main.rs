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
    init_logs(cli.log_format);
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
    if let Command::Verify(args) = &cli.command {
        return runtime.block_on(api::offline::run_verify(args)).exit_code();
    }
    // The read-only tools tell corruption (1) from a directory they cannot read (2).
    let read_only = matches!(
        cli.command,
        Command::Export(_) | Command::Read(_) | Command::Report(_) | Command::Prove { .. }
    );
    let result: Result<(), Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => api::server::serve(args).await.map_err(Into::into),
            Command::Export(args) => api::export::run_export(args).await.map_err(Into::into),
            Command::Append(args) => api::export::run_append(args).await.map_err(Into::into),
            Command::Read(args) => api::export::run_read(args).await.map_err(Into::into),
            Command::Verify(_) => unreachable!("verify returned above"),
            Command::Migrate(args) => migrate(args).await,
            Command::VaultMigrate(args) => vault_migrate(args),
            Command::VaultRotateKek(args) => {
                let keys = api::vault::run_vault_rotate_kek(&args)?;
                println!(
                    "re-wrapped {keys} keys under key-encryption key {}; start every instance \
                     with the new file, then destroy the old one",
                    args.new_kek_file.display()
                );
                Ok(())
            }
            Command::Report(args) => report(args).await,
            Command::Prove { proof } => prove(proof).await,
            Command::Erase(args) => erase(args).await,
            Command::Bench {
                bench:
                    Bench::Store {
                        events,
                        quick,
                        dir,
                        postgres,
                    },
            } => bench_store(events, quick, dir, postgres).await,
            Command::Bench {
                bench:
                    Bench::All {
                        quick,
                        sizes,
                        months,
                        dir,
                        doc,
                        skip_store,
                        skip_projections,
                    },
            } => {
                let options = bench::all::AllOptions {
                    quick,
                    sizes,
                    months,
                    dir,
                    doc,
                    skip_store,
                    skip_projections,
                };
                let body = bench::all::run(options).await?;
                println!("{body}");
                Ok(())
            }
            Command::Bench {
                bench: Bench::Rebuild { data },
            } => {
                let measure = bench::scaling::measure_rebuild(&data).await?;
                println!("{}", serde_json::to_string(&measure)?);
                Ok(())
            }
            Command::Simulate(args) => simulate(args).await,
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
            if read_only {
                api::offline::failure_code(error.as_ref()).exit_code()
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Logs to standard error at `RUST_LOG`'s level (`info` by default): text with colours
/// only when standard error is a terminal (escape codes in a file or a collector are
/// noise), or one JSON object per line.
fn init_logs(format: api::cli::LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        api::cli::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        api::cli::LogFormat::Json => logs.json().init(),
    }
}

/// `report`: the report on standard output.
async fn report(args: api::cli::ReportArgs) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::Write as _;
    let text = api::offline::run_report(&args).await?;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        // A reader that went away (`report ... | head`) is not a failure of the report.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// `prove`: the proof as JSON, from the log opened read-only.
async fn prove(proof: api::cli::Prove) -> Result<(), Box<dyn std::error::Error>> {
    let text = match proof {
        api::cli::Prove::Inclusion {
            data,
            position,
            size,
        } => {
            let store = api::store::open_read_only(&data)?;
            serde_json::to_string_pretty(&api::proofs::inclusion(&store, position, size).await?)?
        }
        api::cli::Prove::Consistency { data, from, to } => {
            let store = api::store::open_read_only(&data)?;
            serde_json::to_string_pretty(&api::proofs::consistency(&store, from, to).await?)?
        }
    };
    use std::io::Write as _;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
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

/// `simulate`: writes the history, then prints its summary (text or JSON).
async fn simulate(args: api::cli::SimulateArgs) -> Result<(), Box<dyn std::error::Error>> {
    use api::simulate::{Destination, SimulateOptions};
    if args.summarize {
        let data = args.data.ok_or("--summarize reads the log in --data DIR")?;
        let store = ledger::store::file::FileStore::open_read_only(api::simulate::log_dir(&data))?;
        let summary = api::simulate::summarize_log(&store).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            print!("{summary}");
        }
        return Ok(());
    }
    let options = SimulateOptions {
        accounts: args.accounts.ok_or("simulate needs --accounts N")?,
        months: args.months,
        seed: args.seed,
        destination: match (args.data, args.target) {
            (_, Some(base)) => Destination::Http(api::simulate::http::HttpOptions {
                base,
                tokens: args.token,
                connections: args.connections,
            }),
            (Some(data), None) => Destination::DataDir(data),
            (None, None) => return Err("simulate needs --data DIR or --target URL".into()),
        },
        master_key_file: args.master_key_file,
        segment_size_max: args.segment_size_max,
    };
    let mut progress = api::simulate::progress::reporter();
    let report = api::simulate::run(options, &mut progress).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary);
        println!(
            "model: {} self-referral attempts, {} velocity-ring signups, deepest chain {} \
             levels, {} payout runs refused (too many payouts for one run)",
            report.stats.self_referral_attempts,
            report.stats.velocity_ring_signups,
            report.stats.chain_depth_max,
            report.stats.payout_runs_refused
        );
        println!(
            "{} commands in {:.1} s",
            report.commands,
            report.elapsed.as_secs_f64()
        );
    }
    Ok(())
}

/// `migrate`: copies the data directory's log into another store and verifies the copy.
async fn migrate(args: api::cli::MigrateArgs) -> Result<(), Box<dyn std::error::Error>> {
    let source = api::store::open(&args.data).await?;
    let target = api::store::open_target(&args.to).await?;
    let total = source.store.head().await?.map_or(0, |head| head.commit + 1);
    let mut reported = 0u64;
    let result =
        ledger::store::migrate::migrate(source.store.as_ref(), target.store.as_ref(), |copied| {
            // A line per 1% (and the last), so long migrations show progress without flooding.
            if copied == total || copied >= reported + (total / 100).max(1) {
                reported = copied;
                eprintln!("migrate: {copied} of {total} events copied");
            }
        })
        .await;
    let closed_target = target.close().await;
    let closed_source = source.close().await;
    let report = result?;
    closed_target?;
    closed_source?;
    let head = |heads: &ledger::store::migrate::ChainHeads| {
        heads.last.map_or_else(
            || "empty".to_owned(),
            |(position, digest)| format!("{position} {digest}"),
        )
    };
    println!(
        "migrated and verified {} events in {} streams with {} appends\nsource chain head: {}\ntarget chain head: {}",
        report.events,
        report.streams.len(),
        report.appends,
        head(&report.source),
        head(&report.target)
    );
    Ok(())
}

/// `vault-migrate`: copies the data directory's vault into the shared one and says what
/// it copied.
fn vault_migrate(args: api::cli::VaultMigrateArgs) -> Result<(), Box<dyn std::error::Error>> {
    let report = api::vault::run_vault_migrate(&args)?;
    println!(
        "copied {} keys ({} already there), {} tombstones and {} fingerprints into the shared \
         key vault",
        report.keys_copied,
        report.keys_present,
        report.tombstones_copied,
        report.fingerprints_copied
    );
    Ok(())
}

/// `bench store`: the embedded file log against SQLite, as a Markdown table.
async fn bench_store(
    events: u64,
    quick: bool,
    dir: std::path::PathBuf,
    postgres: Option<String>,
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
        postgres,
    };
    let report = bench::store::run(options)
        .await
        .map_err(|error| format!("benchmark failed: {error}"))?;
    print!("{}", bench::store::render_markdown(&report));
    println!("\n(total {:.1} s)", report.elapsed.as_secs_f64());
    Ok(())
}
