//! `bench all`: the store, projections and scaling benchmarks in one run, written into
//! `docs/BENCHMARKS.md` (between markers, so the sections written by hand stay) and the
//! scaling chart into `docs/scaling.svg`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{scaling, store};

/// Markers around the generated part of `docs/BENCHMARKS.md`.
const BEGIN: &str = "<!-- bench-all:begin -->";
const END: &str = "<!-- bench-all:end -->";

/// What to run.
#[derive(Clone, Debug)]
pub struct AllOptions {
    pub quick: bool,
    /// Accounts per point of the scaling curve.
    pub sizes: Vec<u32>,
    pub months: u32,
    pub dir: PathBuf,
    /// The Markdown file to update.
    pub doc: PathBuf,
    /// Skip the store benchmark (it runs for minutes at full size).
    pub skip_store: bool,
    /// Skip the projections' own benchmark.
    pub skip_projections: bool,
}

/// Runs everything asked for and rewrites the generated section of `doc`.
pub async fn run(options: AllOptions) -> Result<String, String> {
    let started = Instant::now();
    let machine = machine();
    let mut sections = Vec::new();

    if !options.skip_store {
        eprintln!("bench all: store");
        let report = store::run(store::StoreBenchOptions {
            log_events: if options.quick { 200_000 } else { 10_000_000 },
            quick: options.quick,
            dir: options.dir.clone(),
            postgres: None,
        })
        .await?;
        sections.push(format!(
            "### Store: file log against SQLite (the peer), same run\n\n{}",
            store::render_markdown(&report)
        ));
    }

    if !options.skip_projections {
        eprintln!("bench all: projections");
        let config = if options.quick {
            projections::bench::BenchConfig::quick()
        } else {
            projections::bench::BenchConfig::full()
        };
        let report =
            tokio::task::spawn_blocking(move || projections::bench::run(&config, &mut |_| {}))
                .await
                .map_err(|error| error.to_string())?;
        sections.push(format!(
            "### Projections: rebuild and queries against their targets (the ceilings)\n\n\
             Generated history: {} events, {} accounts.\n\n\
             | measure | result | target | result ÷ target |\n|---|---:|---:|---:|\n\
             | rebuild | {:.0} events/s | 1,000,000 events/s | {:.2} |\n\
             | rebuild per CPU second | {:.0} events/s | 1,000,000 events/s | {:.2} |\n\
             | payout run input | {:.1} ms | 2,000 ms | {:.2} |\n\
             | peak memory (VmHWM, generator included) | {} | 2,048 MiB | {} |\n",
            report.events,
            report.accounts,
            report.rebuild_events_per_second,
            report.rebuild_events_per_second / 1e6,
            report.rebuild_events_per_cpu_second,
            report.rebuild_events_per_cpu_second / 1e6,
            report.payout_run_ms,
            report.payout_run_ms / 2000.0,
            report
                .peak_memory_bytes
                .map_or("unknown".to_owned(), |bytes| format!(
                    "{:.0} MiB",
                    bytes as f64 / 1048576.0
                )),
            report
                .peak_memory_bytes
                .map_or("-".to_owned(), |bytes| format!(
                    "{:.2}",
                    bytes as f64 / 1048576.0 / 2048.0
                )),
        ));
    }

    sections.push(
        "### API\n\nNot part of this run: `bench api` measures the endpoints against the \
         HTTP stack's ceiling (section API below), and `simulate --target` loads a running \
         server with a simulated history (section Simulate over HTTP below).\n"
            .to_owned(),
    );

    eprintln!("bench all: scaling");
    let points = scaling::run(&options.sizes, options.months, &options.dir, 42).await?;
    let svg_path = options
        .doc
        .parent()
        .unwrap_or(Path::new("."))
        .join("scaling.svg");
    std::fs::write(&svg_path, scaling::render_svg(&points))
        .map_err(|error| format!("write {}: {error}", svg_path.display()))?;
    sections.push(format!(
        "### Scaling: simulated histories, rebuilt in a fresh process\n\n\
         `simulate` ({} months, seed 42, in-memory key vault) writes each log through the \
         domain service; a child process then opens it read-only, reads and decodes every \
         event once (the ceiling: nothing applied), and rebuilds the projections' \
         `LedgerViews` with `apply_batch`, page by page, after replacing each event's sealed \
         personal fields (`privacy::payload::redact_payload`; written when the views could \
         not yet parse a sealed field, and kept so the figures stay comparable: the views \
         need no personal data, so the redaction only adds its own cost). \
         Peak memory is that \
         process's VmHWM. Linear growth shows as a constant µs per event and bytes per \
         event down the table, and as points on the dashed lines of the chart.\n\n{}\n\
         ![rebuild time and peak memory against events](scaling.svg)\n",
        options.months,
        scaling::render_markdown(&points)
    ));

    let body = format!(
        "{BEGIN}\n## Benchmark suite (`refledger bench all{}`)\n\n\
         Generated by the command; edit the code, not this section.\n\n{machine}\n\n{}\n\
         Total time of the run: {:.0} s.\n{END}",
        if options.quick { " --quick" } else { "" },
        sections.join("\n"),
        started.elapsed().as_secs_f64()
    );
    write_section(&options.doc, &body)?;
    Ok(body)
}

/// Replaces the text between the markers, or appends it.
fn write_section(doc: &Path, body: &str) -> Result<(), String> {
    let existing = std::fs::read_to_string(doc).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let updated = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{body}{}",
            &existing[..begin],
            &existing[end + END.len()..]
        ),
        _ => format!("{}\n{body}\n", existing.trim_end()),
    };
    std::fs::write(doc, updated).map_err(|error| format!("write {}: {error}", doc.display()))
}

/// The machine, its load and the commit: figures are meaningless without them.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = read("/proc/cpuinfo")
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |name| name.trim().to_owned());
    let memory = read("/proc/meminfo")
        .lines()
        .find(|line| line.starts_with("MemTotal"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or("unknown".to_owned(), |kib| {
            format!("{:.0} GiB", kib / 1048576.0)
        });
    let load = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let command = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    format!(
        "Machine: {cpus} CPUs ({model}), {memory} RAM, {}; {}; release build; commit {}; run {} UTC. \
         Load average at the start: {load} (the machine is shared with other agents \
         compiling and benchmarking, so wall-clock figures are pessimistic; CPU-time \
         figures are steadier).",
        command("uname", &["-sr"]),
        command("rustc", &["-V"]),
        command("git", &["rev-parse", "--short", "HEAD"]),
        command("date", &["-u", "+%Y-%m-%d %H:%M"]),
    )
}
