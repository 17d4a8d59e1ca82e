//! Prometheus metrics: request counts and latency per route and status, and the event
//! store's appends, written in the text exposition format (version 0.0.4) by hand: the
//! format is a few lines, a client crate would bring more than it saves.
//!
//! Labels are route templates (`/v1/accounts/{id}`), methods and status codes, never
//! values from the request: no personal data and a bounded number of series.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

/// Most label combinations kept per metric; more (which would mean a bug that puts
/// unbounded values into labels) are folded into one `overflow` series.
pub const SERIES_MAX: usize = 1024;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(exposition))
}

/// The server's metrics registry.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestLabels, Histogram>>,
    appends: Mutex<BTreeMap<&'static str, Histogram>>,
    appended_events: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS_SECONDS`] (not cumulative).
    buckets: [u64; LATENCY_BUCKETS_SECONDS.len()],
    count: u64,
    sum_seconds: f64,
}

impl Histogram {
    fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
        {
            self.buckets[index] += 1;
        }
        self.count += 1;
        self.sum_seconds += seconds;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in LATENCY_BUCKETS_SECONDS.iter().zip(self.buckets) {
            cumulative += count;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

impl Metrics {
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut requests = self.requests.lock().expect("metrics lock poisoned");
        let mut labels = RequestLabels {
            method: method.to_owned(),
            route: route.to_owned(),
            status,
        };
        if requests.len() >= SERIES_MAX && !requests.contains_key(&labels) {
            labels = RequestLabels {
                method: "overflow".to_owned(),
                route: "overflow".to_owned(),
                status: 0,
            };
        }
        requests.entry(labels).or_default().observe(elapsed);
    }

    /// Records one store append, `result` being `ok` or an error class.
    pub fn observe_append(&self, result: &'static str, events: usize, elapsed: Duration) {
        if result == "ok" {
            self.appended_events
                .fetch_add(events as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let mut appends = self.appends.lock().expect("metrics lock poisoned");
        appends.entry(result).or_default().observe(elapsed);
    }

    /// The text exposition; `head` is the position of the log's last event.
    pub fn render(&self, head: Option<Option<ledger::store::Position>>) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP http_requests_total HTTP requests served, by method, route and status.\n\
             # TYPE http_requests_total counter\n",
        );
        let requests = self.requests.lock().expect("metrics lock poisoned").clone();
        for (labels, histogram) in &requests {
            let _ = writeln!(
                out,
                "http_requests_total{{{}}} {}",
                request_labels(labels),
                histogram.count
            );
        }
        out.push_str(
            "# HELP http_request_duration_seconds Time to serve HTTP requests.\n\
             # TYPE http_request_duration_seconds histogram\n",
        );
        for (labels, histogram) in &requests {
            histogram.write(
                &mut out,
                "http_request_duration_seconds",
                &request_labels(labels),
            );
        }
        out.push_str(
            "# HELP ledger_appends_total Appends to the event store, by result.\n\
             # TYPE ledger_appends_total counter\n",
        );
        let appends = self.appends.lock().expect("metrics lock poisoned").clone();
        for (result, histogram) in &appends {
            let _ = writeln!(
                out,
                "ledger_appends_total{{result=\"{result}\"}} {}",
                histogram.count
            );
        }
        out.push_str(
            "# HELP ledger_append_duration_seconds Time of appends to the event store, \
             fsync included.\n\
             # TYPE ledger_append_duration_seconds histogram\n",
        );
        for (result, histogram) in &appends {
            histogram.write(
                &mut out,
                "ledger_append_duration_seconds",
                &format!("result=\"{result}\""),
            );
        }
        out.push_str(
            "# HELP ledger_appended_events_total Events in acknowledged appends since start \
             (idempotent repeats included).\n\
             # TYPE ledger_appended_events_total counter\n",
        );
        let _ = writeln!(
            out,
            "ledger_appended_events_total {}",
            self.appended_events
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        if let Some(head) = head {
            out.push_str(
                "# HELP ledger_log_head_position Commit position of the last event in the log \
                 (-1 when empty; for the embedded stores, the number of events minus one).\n\
                 # TYPE ledger_log_head_position gauge\n",
            );
            let position = head.map_or(-1, |position| position.commit as i128);
            let _ = writeln!(out, "ledger_log_head_position {position}");
        }
        out
    }
}

fn request_labels(labels: &RequestLabels) -> String {
    format!(
        "method=\"{}\",route=\"{}\",status=\"{}\"",
        escape(&labels.method),
        escape(&labels.route),
        labels.status
    )
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Middleware that times every routed request. Installed with `route_layer`, so the
/// route template is known; requests no route matches are counted under `unmatched`.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .observe_request(&method, &route, status, elapsed);
    // The route template only: paths hold account ids, bodies personal data.
    tracing::debug!(
        %method,
        %route,
        status,
        elapsed_us = elapsed.as_micros() as u64,
        "request"
    );
    response
}

async fn exposition(State(state): State<AppState>) -> Response {
    let head = match state.store.head().await {
        Ok(head) => Some(head),
        Err(error) => {
            tracing::warn!(%error, "metrics: cannot read the log head");
            None
        }
    };
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(head),
    )
        .into_response()
}
