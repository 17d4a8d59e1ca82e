//! What every command endpoint does around the ledger: take the command's idempotency
//! key, queue behind other commands on the same streams, and answer a repeat with the
//! original response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use ledger::service::{CommandMeta, Outcome};

use super::error::ApiError;
use super::AppState;
use crate::idempotency::{CommandKey, Completed};

/// Runs a command once per `key`: `run` gets the command's metadata and returns the
/// status and body of a success. Holds the locks of `streams` while it runs.
pub async fn idempotent<R, F, Fut>(
    state: &AppState,
    key: CommandKey,
    request: &R,
    streams: Vec<String>,
    run: F,
) -> Result<Response, ApiError>
where
    R: Serialize,
    F: FnOnce(CommandMeta) -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let meta = CommandMeta::new(key.command_id());
    let completed = state
        .idempotency
        .run(key, request, || async {
            let _guards = state.stream_locks.lock(streams).await;
            run(meta).await
        })
        .await?;
    Ok(respond(completed))
}

/// The response of a completed command; a replay carries `Idempotent-Replayed: true`.
pub fn respond(completed: Completed) -> Response {
    let mut response = (completed.status, Json(completed.body)).into_response();
    if completed.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

/// The status of a command that may have repeated an earlier one: `created` when it
/// recorded something now, 200 when the ledger found it recorded already (a retry after
/// a crash between the events and the idempotency record).
pub fn fresh_or_repeat(outcome: &Outcome, created: StatusCode) -> StatusCode {
    if outcome.events.is_empty() || outcome.replayed {
        StatusCode::OK
    } else {
        created
    }
}

/// Serializes a response body.
pub fn body<T: Serialize>(value: &T) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(value).map_err(ApiError::internal)
}

/// Most a stated time may lie ahead of this server's clock: the skew between two
/// services' clocks, not a way to record the future.
pub const STATED_TIME_AHEAD_SECONDS_MAX: i64 = 300;

/// The time a fact happened as the caller states it (the payment processor's or the
/// platform's clock: a webhook may arrive late, an import replays history), or now when
/// the caller states none. A time in the future is refused, naming `field`.
pub fn stated_time(
    field: &str,
    stated: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let now = chrono::Utc::now();
    match stated {
        None => Ok(now),
        Some(at) if at <= now + chrono::Duration::seconds(STATED_TIME_AHEAD_SECONDS_MAX) => Ok(at),
        Some(at) => Err(ApiError::validation(format!(
            "{field}: {} is in the future (this server's clock reads {})",
            super::events::rfc3339(at),
            super::events::rfc3339(now)
        ))),
    }
}
