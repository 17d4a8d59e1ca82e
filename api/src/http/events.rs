//! The auditor's view of the raw log: every event in global order, and one stream's
//! events in revision order, paged.
//!
//! Payloads are shown as they are stored: as JSON when they parse as JSON, otherwise as
//! base64. Personal data inside them is ciphertext in the log, so it stays sealed here.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use ledger::store::{Direction, Position, RecordedEvent, StreamFrom, StreamName};

use super::auth::{AuditorOnly, Authorized};
use super::error::{ApiError, ApiPath, ApiQuery};
use super::AppState;

/// Most events in one page.
pub const EVENTS_PAGE_MAX: usize = 1000;
/// Events in a page when `limit` is not given.
pub const EVENTS_PAGE_DEFAULT: usize = 100;

// A page reads one event more than it returns, to know whether more follow.
const _: () = assert!(EVENTS_PAGE_MAX < ledger::store::PAGE_SIZE_MAX);
const _: () = assert!(EVENTS_PAGE_DEFAULT <= EVENTS_PAGE_MAX);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", get(read_all))
        .route("/v1/streams/{stream}", get(read_stream))
        .route("/v1/verify", get(verify))
}

/// One recorded event as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub id: Uuid,
    pub stream: String,
    pub revision: u64,
    /// The global position: `commit` for the embedded stores, `commit/prepare` otherwise.
    pub position: String,
    pub event_type: String,
    pub schema_version: u16,
    /// RFC 3339, microseconds.
    pub recorded_at: String,
    pub correlation_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
    /// The payload, when it is JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    /// The payload's exact bytes, standard base64: always in exports (to recompute the
    /// chain), in pages only when the payload is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// SHA-256 of the record before this one, hex.
    pub chain_previous: String,
    /// SHA-256 of `chain_previous || body`, hex.
    pub chain_current: String,
}

/// How an [`EventView`] shows the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadForm {
    /// JSON if it parses, otherwise base64.
    Readable,
    /// Always the exact bytes in base64, and JSON too if it parses.
    Exact,
}

/// The payload member that holds a data subject's personal data in every event that has
/// any (`AccountOpened`, `PersonalDataCorrected`).
pub const PERSONAL_DATA_MEMBER: &str = "personal_data";
/// What a readable view shows in its place.
pub const WITHHELD: &str = "[withheld: personal data]";

impl EventView {
    pub fn new(event: &RecordedEvent, form: PayloadForm) -> EventView {
        let mut json = serde_json::from_slice::<serde_json::Value>(&event.payload).ok();
        // Auditors read events, never personal data: the readable view withholds it,
        // sealed or not. The exact bytes (for the chain) are in the export.
        if form == PayloadForm::Readable {
            if let Some(member) = json
                .as_mut()
                .and_then(|payload| payload.get_mut(PERSONAL_DATA_MEMBER))
            {
                *member = serde_json::Value::String(WITHHELD.to_owned());
            }
        }
        let base64 = match (form, &json) {
            (PayloadForm::Readable, Some(_)) => None,
            _ => Some(base64::engine::general_purpose::STANDARD.encode(&event.payload)),
        };
        EventView {
            id: event.id,
            stream: event.stream.to_string(),
            revision: event.revision,
            position: event.position.to_string(),
            event_type: event.event_type.to_string(),
            schema_version: event.schema_version,
            recorded_at: rfc3339(event.recorded_at),
            correlation_id: event.metadata.correlation_id,
            causation_id: event.metadata.causation_id,
            payload: json,
            payload_base64: base64,
            chain_previous: event.chain.previous.to_hex(),
            chain_current: event.chain.current.to_hex(),
        }
    }
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A page of events.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// The `from` of the next page: read on from here, now or later.
    pub next: String,
    /// Whether events after this page existed when it was read.
    pub has_more: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Where to start, inclusive: a global position (`/v1/events`) or a revision
    /// (`/v1/streams/{stream}`). Default: the start.
    pub from: Option<String>,
    /// Events in the page, 1 to 1000. Default: 100.
    pub limit: Option<usize>,
}

impl PageQuery {
    fn limit(&self) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(EVENTS_PAGE_DEFAULT),
            Some(limit) if (1..=EVENTS_PAGE_MAX).contains(&limit) => Ok(limit),
            Some(limit) => Err(ApiError::validation(format!(
                "limit: must be 1 to {EVENTS_PAGE_MAX}, got {limit}"
            ))),
        }
    }
}

/// Parses a position as [`Position`]'s `Display` writes it: `commit` or `commit/prepare`.
pub fn parse_position(text: &str) -> Option<Position> {
    match text.split_once('/') {
        None => text.parse().ok().map(Position::sequence),
        Some((commit, prepare)) => Some(Position {
            commit: commit.parse().ok()?,
            prepare: prepare.parse().ok()?,
        }),
    }
}

/// All events in global order.
#[utoipa::path(
    get, path = "/v1/events", tag = "auditor",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 400, description = "Bad cursor or limit", body = super::error::Problem),
        (status = 401, description = "No valid token", body = super::error::Problem),
        (status = 403, description = "Not an auditor", body = super::error::Problem),
    ),
    security(("auditor" = []))
)]
pub async fn read_all(
    _: Authorized<AuditorOnly>,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = query.limit()?;
    let from = match &query.from {
        None => Position::START,
        Some(text) => parse_position(text).ok_or_else(|| {
            ApiError::validation(format!(
                "from: {text:?} is not a position (a number, or commit/prepare)"
            ))
        })?,
    };
    let mut events = state.store.read_all(from, limit + 1).await?;
    let has_more = events.len() > limit;
    events.truncate(limit);
    let next = match events.last() {
        // The next page starts at the position after the last event. Embedded positions
        // are gapless sequence numbers, so that is the last one plus one. A clustered
        // store's adapter must accept a position between two events as "the next event".
        Some(last) => Position::sequence(last.position.commit + 1),
        None => from,
    };
    Ok(Json(EventPage {
        events: events
            .iter()
            .map(|event| EventView::new(event, PayloadForm::Readable))
            .collect(),
        next: next.to_string(),
        has_more,
    }))
}

/// One stream's events in revision order.
#[utoipa::path(
    get, path = "/v1/streams/{stream}", tag = "auditor",
    params(("stream" = String, Path, description = "The stream's name"), PageQuery),
    responses(
        (status = 200, description = "A page of the stream's events (empty if it does not exist)", body = EventPage),
        (status = 400, description = "Bad stream name, cursor or limit", body = super::error::Problem),
        (status = 401, description = "No valid token", body = super::error::Problem),
        (status = 403, description = "Not an auditor", body = super::error::Problem),
    ),
    security(("auditor" = []))
)]
pub async fn read_stream(
    _: Authorized<AuditorOnly>,
    State(state): State<AppState>,
    ApiPath(stream): ApiPath<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let limit = query.limit()?;
    let stream = StreamName::parse(stream)
        .map_err(|error| ApiError::validation(format!("stream: {error}")))?;
    let from = match &query.from {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::validation(format!("from: {text:?} is not a revision (a number)"))
        })?,
    };
    let mut events = state
        .store
        .read_stream(
            &stream,
            StreamFrom::Revision(from),
            Direction::Forward,
            limit + 1,
        )
        .await?;
    let has_more = events.len() > limit;
    events.truncate(limit);
    let next = events.last().map_or(from, |last| last.revision + 1);
    Ok(Json(EventPage {
        events: events
            .iter()
            .map(|event| EventView::new(event, PayloadForm::Readable))
            .collect(),
        next: next.to_string(),
        has_more,
    }))
}

/// Checks the tamper-evidence chain of the whole log.
#[utoipa::path(
    get, path = "/v1/verify", tag = "auditor",
    responses(
        (status = 200, description = "The verification's result; `ok` false names the first record that fails", body = crate::verify::VerifyReport),
        (status = 401, description = "No valid token", body = super::error::Problem),
        (status = 403, description = "Not an auditor", body = super::error::Problem),
    ),
    security(("auditor" = []))
)]
pub async fn verify(
    _: Authorized<AuditorOnly>,
    State(state): State<AppState>,
) -> Result<Json<crate::verify::VerifyReport>, ApiError> {
    let report = crate::verify::verify_chain(state.store.as_ref()).await?;
    if !report.ok {
        tracing::error!(failure = ?report.first_failure, "the hash chain does not verify");
    }
    Ok(Json(report))
}
