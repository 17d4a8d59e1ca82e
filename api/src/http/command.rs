//! What every command endpoint does around the ledger: take the command's idempotency
//! key, queue behind other commands on the same streams, and answer a repeat with the
//! original response.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;

use ledger::service::{CommandMeta, Outcome};

use super::error::ApiError;
use super::events::rfc3339;
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

/// Runs a command whose log is its own idempotency record, holding the locks of
/// `streams`: the ledger decides a repeat of it as nothing new and refuses its natural id
/// with other details (409), and `run` builds the answer from what the log holds, so the
/// first answer and every repeat agree at any age and across restarts without a table
/// record. The command then costs one durable write, its append's. A repeat (200) carries
/// `Idempotent-Replayed: true`.
pub async fn answered_from_log<F, Fut>(
    state: &AppState,
    key: CommandKey,
    streams: Vec<String>,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(CommandMeta) -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, serde_json::Value), ApiError>>,
{
    let meta = CommandMeta::new(key.command_id());
    let _guards = state.stream_locks.lock(streams).await;
    let (status, body) = run(meta).await?;
    Ok(respond(Completed {
        status,
        body,
        replayed: status == StatusCode::OK,
    }))
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

/// The earliest instant any request may name: the ledger's periods start in 2000-01,
/// and a time before it (year 1, say) is a client's bug, not history.
pub fn instant_min() -> DateTime<Utc> {
    DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01T00:00:00Z is a valid instant")
}

/// The first instant no request may name: far enough below year 10000 that an instant
/// plus any hold (`HOLD_DAYS_MAX`) or deadline still has four digits of year, the most
/// RFC 3339 writes.
pub fn instant_end() -> DateTime<Utc> {
    DateTime::from_timestamp(221_845_392_000, 0).expect("9000-01-01T00:00:00Z is a valid instant")
}

/// What a stated time may not precede: the account, payment or run it is a fact about.
#[derive(Debug, Clone, Copy)]
pub struct Since {
    /// For the message: "the account opened", "the payment was received".
    pub what: &'static str,
    pub at: DateTime<Utc>,
}

/// The one check of a time a fact happened, as the caller states it (the payment
/// processor's or the platform's clock: a webhook may arrive late, an import replays
/// history), or now when the caller states none. Refused, naming `field`: a time more
/// than [`STATED_TIME_AHEAD_SECONDS_MAX`] ahead of this server's clock, a time outside
/// [`instant_min`]..[`instant_end`], and a time before what it is about existed
/// (`since`).
pub fn stated_time(
    field: &str,
    stated: Option<DateTime<Utc>>,
    since: Option<Since>,
) -> Result<DateTime<Utc>, ApiError> {
    let now = Utc::now();
    let Some(at) = stated else {
        return Ok(now);
    };
    let at = instant(field, at)?;
    if at > now + chrono::Duration::seconds(STATED_TIME_AHEAD_SECONDS_MAX) {
        return Err(ApiError::validation(format!(
            "{field}: {} is in the future (this server's clock reads {}); state when it \
             happened",
            rfc3339(at),
            rfc3339(now)
        )));
    }
    if let Some(since) = since {
        if at < since.at {
            return Err(ApiError::validation(format!(
                "{field}: {} is before {} ({})",
                rfc3339(at),
                since.what,
                rfc3339(since.at)
            )));
        }
    }
    Ok(at)
}

/// Any instant a request names (an expiry, a plan's start, an as-of time): within
/// [`instant_min`]..[`instant_end`], so every time the server answers with is RFC 3339.
pub fn instant(field: &str, at: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    if at < instant_min() || at >= instant_end() {
        return Err(ApiError::validation(format!(
            "{field}: {} is outside the times this ledger records ({} to before {})",
            rfc3339(at),
            rfc3339(instant_min()),
            rfc3339(instant_end())
        )));
    }
    Ok(at)
}

/// [`instant`] for an optional field.
pub fn optional_instant(
    field: &str,
    at: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    at.map(|at| instant(field, at)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn stated_times_are_past_sane_and_after_their_subject() {
        assert!(stated_time("paid_at", Some(at("2026-01-01T00:00:00Z")), None).is_ok());
        for bad in [
            "2036-01-01T00:00:00Z",
            "9999-12-31T00:00:00Z",
            "0001-01-01T00:00:00Z",
        ] {
            let Err(ApiError::Validation { detail }) = stated_time("paid_at", Some(at(bad)), None)
            else {
                panic!("{bad} is refused")
            };
            assert!(detail.starts_with("paid_at:"), "{detail}");
        }
        let since = Since {
            what: "the account opened",
            at: at("2026-03-01T00:00:00Z"),
        };
        let Err(ApiError::Validation { detail }) =
            stated_time("paid_at", Some(at("2026-02-01T00:00:00Z")), Some(since))
        else {
            panic!("a payment before its account opened is refused")
        };
        assert!(detail.contains("before the account opened"), "{detail}");
        assert!(stated_time("paid_at", None, Some(since)).is_ok());
        assert!(instant("expires_at", at("8999-12-31T00:00:00Z")).is_ok());
        assert!(instant("expires_at", at("9999-12-31T00:00:00Z")).is_err());
    }
}
