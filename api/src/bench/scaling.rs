//! Scaling curves: simulate histories of growing size, then rebuild the projections'
//! views from each log in a fresh process, so each rebuild's peak memory is its own.
//! The ceiling beside each rebuild is a pass that only reads and decodes the same log.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use api::simulate::model::ModelConfig;
use api::simulate::{for_each_event, simulate_into_dir, Progress};
use ledger::privacy::payload::redact_payload;
use ledger::privacy::vault::memory::MemoryVault;
use ledger::store::file::FileStore;
use ledger::store::EventStore as _;
use ledger::store::{Position, PAGE_SIZE_MAX};
use projections::bench::{cpu_seconds, peak_memory_bytes};
use projections::projection::Projection as _;
use projections::views::LedgerViews;

/// One size of the curve.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalingPoint {
    pub accounts: u32,
    pub months: u32,
    pub simulate_seconds: f64,
    pub log_bytes: u64,
    pub rebuild: RebuildMeasure,
}

/// What the rebuild process measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RebuildMeasure {
    pub events: u64,
    /// Opening the log read-only (recovery from the index checkpoint).
    pub open_seconds: f64,
    /// Reading and decoding every event, nothing applied: the ceiling.
    pub read_seconds: f64,
    pub rebuild_seconds: f64,
    pub rebuild_cpu_seconds: Option<f64>,
    /// VmHWM of the rebuild process.
    pub peak_memory_bytes: Option<u64>,
}

type BenchResult<T> = Result<T, String>;

/// Runs in the child process: opens the log in `data`, reads it once (the ceiling), then
/// rebuilds the views from it.
pub async fn measure_rebuild(data: &Path) -> BenchResult<RebuildMeasure> {
    let opening = Instant::now();
    let store = FileStore::open_read_only(api::simulate::log_dir(data))
        .map_err(|error| error.to_string())?;
    let open_seconds = opening.elapsed().as_secs_f64();
    let events = store
        .head()
        .await
        .map_err(|error| error.to_string())?
        .map_or(0, |head| head.commit + 1);

    let reading = Instant::now();
    let mut read = 0u64;
    for_each_event(&store, |_| read += 1)
        .await
        .map_err(|error| error.to_string())?;
    let read_seconds = reading.elapsed().as_secs_f64();
    assert_eq!(read, events, "the read pass saw every event");

    let cpu_before = cpu_seconds();
    let rebuilding = Instant::now();
    let views = rebuild_redacted(&store).await?;
    let rebuild_seconds = rebuilding.elapsed().as_secs_f64();
    let rebuild_cpu_seconds = cpu_before
        .zip(cpu_seconds())
        .map(|(before, after)| after - before);
    drop(views);
    Ok(RebuildMeasure {
        events,
        open_seconds,
        read_seconds,
        rebuild_seconds,
        rebuild_cpu_seconds,
        peak_memory_bytes: peak_memory_bytes(),
    })
}

/// Rebuilds the views from the whole log, page by page, each event's sealed personal
/// fields replaced first. Written when the views' fast path could not parse a sealed
/// field (a sealed `PaymentReceived.payment_fingerprint` stopped `rebuild_from_store`);
/// kept so the recorded figures stay comparable. The redaction's cost is counted.
async fn rebuild_redacted(store: &FileStore) -> BenchResult<LedgerViews> {
    let mut views = LedgerViews::new();
    let mut from = Position::START;
    let mut last: Option<Position> = None;
    loop {
        let page = store
            .read_all(from, PAGE_SIZE_MAX)
            .await
            .map_err(|error| error.to_string())?;
        let mut fresh = Vec::with_capacity(page.len());
        for mut recorded in page {
            if last.is_some_and(|seen| recorded.position <= seen) {
                continue;
            }
            recorded.payload = redact_payload(&recorded).map_err(|error| error.to_string())?;
            last = Some(recorded.position);
            fresh.push(recorded);
        }
        let Some(newest) = fresh.last() else {
            return Ok(views);
        };
        from = newest.position;
        views
            .apply_batch(&fresh)
            .map_err(|error| error.to_string())?;
    }
}

/// Simulates each size into `dir/scaling-{accounts}` and measures its rebuild in a child
/// process (this binary's hidden `bench rebuild`). The logs are removed afterwards.
pub async fn run(
    sizes: &[u32],
    months: u32,
    dir: &Path,
    seed: u64,
) -> BenchResult<Vec<ScalingPoint>> {
    std::fs::create_dir_all(dir).map_err(|error| format!("create {}: {error}", dir.display()))?;
    let mut points = Vec::new();
    for &accounts in sizes {
        let data = dir.join(format!("scaling-{accounts}"));
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .map_err(|error| format!("remove {}: {error}", data.display()))?;
        }
        eprintln!("scaling: simulating {accounts} accounts over {months} months");
        let vault = Arc::new(MemoryVault::new().map_err(|error| error.to_string())?);
        let config = ModelConfig::new(accounts, months, seed);
        let simulating = Instant::now();
        let mut progress = api::simulate::progress::reporter();
        let segment_size = ledger::store::file::format::SEGMENT_SIZE_MAX_DEFAULT;
        let report = simulate_into_dir(
            &data,
            config,
            vault,
            segment_size,
            &mut |progress_now: &Progress| progress(progress_now),
        )
        .await
        .map_err(|error| error.to_string())?;
        let simulate_seconds = simulating.elapsed().as_secs_f64();
        // The segments, in the log's own `log/` folder.
        let log_bytes = dir_bytes(&api::simulate::log_dir(&data).join("log"));
        eprintln!(
            "scaling: rebuilding {} events in a fresh process",
            report.summary.events
        );
        let rebuild = rebuild_in_child(&data)?;
        assert_eq!(rebuild.events, report.summary.events);
        points.push(ScalingPoint {
            accounts,
            months,
            simulate_seconds,
            log_bytes,
            rebuild,
        });
        std::fs::remove_dir_all(&data)
            .map_err(|error| format!("remove {}: {error}", data.display()))?;
    }
    Ok(points)
}

fn rebuild_in_child(data: &Path) -> BenchResult<RebuildMeasure> {
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let output = std::process::Command::new(exe)
        .args(["bench", "rebuild", "--data"])
        .arg(data)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|error| format!("start the rebuild process: {error}"))?;
    if !output.status.success() {
        return Err(format!("the rebuild process failed: {}", output.status));
    }
    serde_json::from_slice(&output.stdout).map_err(|error| format!("rebuild output: {error}"))
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| entry.metadata().ok())
        .filter(|metadata| metadata.is_file())
        .map(|metadata| metadata.len())
        .sum()
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("unknown".to_owned(), |bytes| {
        format!("{:.0} MiB", bytes as f64 / 1024.0 / 1024.0)
    })
}

/// The curve as a Markdown table, with per-event costs to show linearity.
pub fn render_markdown(points: &[ScalingPoint]) -> String {
    let mut out = String::from(
        "| accounts | events | log | simulate | read + decode (ceiling) | rebuild | rebuild ÷ ceiling | µs per event rebuilt | peak memory (rebuild process) | bytes per event |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for point in points {
        let rebuild = &point.rebuild;
        let events = rebuild.events.max(1) as f64;
        out.push_str(&format!(
            "| {} | {} | {:.0} MiB | {:.1} s ({:.0} events/s) | {:.2} s ({:.0} events/s) | {:.2} s ({:.0} events/s) | {:.2} | {:.2} | {} | {} |\n",
            point.accounts,
            rebuild.events,
            point.log_bytes as f64 / 1024.0 / 1024.0,
            point.simulate_seconds,
            events / point.simulate_seconds,
            rebuild.read_seconds,
            events / rebuild.read_seconds,
            rebuild.rebuild_seconds,
            events / rebuild.rebuild_seconds,
            rebuild.rebuild_seconds / rebuild.read_seconds,
            rebuild.rebuild_seconds * 1e6 / events,
            mib(rebuild.peak_memory_bytes),
            rebuild
                .peak_memory_bytes
                .map_or("?".to_owned(), |bytes| format!("{:.0}", bytes as f64 / events)),
        ));
    }
    out
}

/// The curve as an SVG chart: rebuild seconds and peak MiB against events, on linear
/// axes, each with the straight line through the origin and the largest point, so a
/// reader sees at a glance whether growth is linear.
pub fn render_svg(points: &[ScalingPoint]) -> String {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 360.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 70.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 50.0;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let events_max = points
        .iter()
        .map(|p| p.rebuild.events)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let seconds_max = points
        .iter()
        .map(|p| p.rebuild.rebuild_seconds)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mib_of = |p: &ScalingPoint| p.rebuild.peak_memory_bytes.unwrap_or(0) as f64 / 1048576.0;
    let mib_max = points.iter().map(mib_of).fold(0.0f64, f64::max).max(1e-9);
    let x = |events: f64| LEFT + events / events_max * plot_w;
    let y_seconds = |seconds: f64| TOP + plot_h - seconds / seconds_max * plot_h;
    let y_mib = |mib: f64| TOP + plot_h - mib / mib_max * plot_h;
    let polyline = |coords: Vec<(f64, f64)>, colour: &str, dash: &str| {
        let path: Vec<String> = coords
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        format!(
            "  <polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" {dash}points=\"{}\"/>\n",
            path.join(" ")
        )
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"14\">Rebuild time and peak memory against events (dashed: linear through the largest point)</text>\n\
         <line x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{}\" y1=\"{TOP}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
        TOP + plot_h,
        LEFT + plot_w,
        TOP + plot_h,
        TOP + plot_h,
        LEFT + plot_w,
        LEFT + plot_w,
        TOP + plot_h,
    );
    for tick in 0..=4 {
        let fraction = f64::from(tick) / 4.0;
        let tx = LEFT + fraction * plot_w;
        let ty = TOP + plot_h - fraction * plot_h;
        svg.push_str(&format!(
            "  <text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}k</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#1f77b4\">{:.1} s</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#d62728\">{:.0} MiB</text>\n",
            TOP + plot_h + 18.0,
            fraction * events_max / 1000.0,
            LEFT - 6.0,
            ty + 4.0,
            fraction * seconds_max,
            LEFT + plot_w + 6.0,
            ty + 4.0,
            fraction * mib_max,
        ));
    }
    svg.push_str(&format!(
        "  <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">events in the log</text>\n",
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    ));
    let mut sorted: Vec<&ScalingPoint> = points.iter().collect();
    sorted.sort_by_key(|p| p.rebuild.events);
    if let Some(largest) = sorted.last() {
        let events = largest.rebuild.events as f64;
        svg.push_str(&polyline(
            vec![
                (x(0.0), y_seconds(0.0)),
                (x(events), y_seconds(largest.rebuild.rebuild_seconds)),
            ],
            "#1f77b4",
            "stroke-dasharray=\"4 4\" ",
        ));
        svg.push_str(&polyline(
            vec![(x(0.0), y_mib(0.0)), (x(events), y_mib(mib_of(largest)))],
            "#d62728",
            "stroke-dasharray=\"4 4\" ",
        ));
    }
    let seconds: Vec<(f64, f64)> = sorted
        .iter()
        .map(|p| {
            (
                x(p.rebuild.events as f64),
                y_seconds(p.rebuild.rebuild_seconds),
            )
        })
        .collect();
    let memory: Vec<(f64, f64)> = sorted
        .iter()
        .map(|p| (x(p.rebuild.events as f64), y_mib(mib_of(p))))
        .collect();
    svg.push_str(&polyline(seconds.clone(), "#1f77b4", ""));
    svg.push_str(&polyline(memory.clone(), "#d62728", ""));
    for (px, py) in seconds {
        svg.push_str(&format!(
            "  <circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"#1f77b4\"/>\n"
        ));
    }
    for (px, py) in memory {
        svg.push_str(&format!(
            "  <circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"#d62728\"/>\n"
        ));
    }
    svg.push_str(&format!(
        "  <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#1f77b4\">rebuild seconds (left axis)</text>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#d62728\">peak MiB of the rebuild process (right axis)</text>\n</svg>\n",
        LEFT + 10.0,
        TOP + 14.0,
        LEFT + 10.0,
        TOP + 30.0
    ));
    svg
}
