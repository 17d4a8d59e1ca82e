//! The one error type of the HTTP boundary and the extractors whose rejections share its
//! format.
//!
//! Every failure leaves the server as `application/problem+json` (RFC 9457) with a stable
//! `type` code that clients match on; the `title` belongs to the code and the `detail`
//! says what to fix, naming the field at fault. Internal failures are logged with their
//! cause and answered with a bare `internal` problem: nothing about the server's insides
//! (paths, store errors) is ever sent.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use ledger::domain::{Rejection, RejectionCategory, ValueError};
use ledger::privacy::PrivacyError;
use ledger::service::LedgerError;
use ledger::store::StoreError;

/// The media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Largest request body accepted, in bytes. Commands are small; anything larger is a
/// mistake or an attack and is refused with 413 before it is parsed.
pub const BODY_SIZE_MAX: usize = 64 * 1024;

/// Longest request target (path and query) accepted, in bytes: 414 beyond it. No route
/// needs more than a few hundred.
pub const URI_LENGTH_MAX: usize = 8 * 1024;
/// Most bytes of header names and values a request may carry: 431 beyond it.
pub const HEADERS_SIZE_MAX: usize = 16 * 1024;
/// Most headers a request may carry: 431 beyond it.
pub const HEADERS_COUNT_MAX: usize = 100;

/// Longest `detail` sent, in bytes: a detail echoes the value at fault, and a 60 KB value
/// echoed whole helps nobody and turns every error into a copy of the attack.
pub const DETAIL_LENGTH_MAX: usize = 512;
/// Longest piece of a caller's input quoted in a detail, in characters.
pub const ECHO_LENGTH_MAX: usize = 64;
const _: () = assert!(ECHO_LENGTH_MAX * 4 < DETAIL_LENGTH_MAX);

/// Why a request failed. Client errors first, failures of the server after.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing, has the wrong type or a value outside its rules.
    #[error("{detail}")]
    Validation { detail: String },
    /// The body is not JSON at all (syntax error, truncated).
    #[error("{detail}")]
    MalformedJson { detail: String },
    /// The body names a field the endpoint does not know.
    #[error("{detail}")]
    UnknownField { detail: String },
    #[error("the request body must be `Content-Type: application/json`")]
    UnsupportedMediaType,
    #[error("the request body is larger than {BODY_SIZE_MAX} bytes")]
    PayloadTooLarge,
    #[error("the request target is longer than {URI_LENGTH_MAX} bytes")]
    UriTooLong,
    #[error("the request's headers are more than {HEADERS_COUNT_MAX} or {HEADERS_SIZE_MAX} bytes")]
    HeadersTooLarge,
    /// The client stopped sending its body before it was complete.
    #[error("the request body did not arrive in time; send it whole, promptly")]
    RequestTimeout,
    #[error("a valid `Authorization: Bearer <secret>` header is required")]
    Unauthorized,
    #[error("this endpoint is for the role(s) {allowed}; the token belongs to {role}")]
    Forbidden { role: &'static str, allowed: String },
    #[error("{what} was not found")]
    NotFound { what: String },
    #[error("{method} is not allowed on this path")]
    MethodNotAllowed { method: String },
    /// The same command id came with a different body than the first time.
    #[error(
        "command id {key:?} was already used for a different request; \
         use a new id for a new command"
    )]
    IdempotencyConflict { key: String },
    /// A concurrent writer changed the stream first; the command may be retried.
    #[error("{detail}")]
    WrongExpectedVersion { detail: String },
    #[error("{detail}")]
    InsufficientCredits { detail: String },
    #[error("{detail}")]
    RefundExceedsPayment { detail: String },
    /// A domain rule other than the ones above refused the command: its code names the
    /// rule; the status is 404 for a missing resource, 409 for a clash with what exists,
    /// 422 otherwise.
    #[error("{detail}")]
    Rejected {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    /// The server is shutting down or the store refuses writes.
    #[error("the service is unavailable: {reason}")]
    Unavailable { reason: String },
    /// A bug or an I/O failure; the cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The body of an error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable code, e.g. `insufficient_credits`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl ApiError {
    pub fn validation(detail: impl Into<String>) -> ApiError {
        ApiError::Validation {
            detail: detail.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::NotFound { what: what.into() }
    }

    pub fn internal(context: impl std::fmt::Display) -> ApiError {
        ApiError::Internal(context.to_string())
    }

    /// The status, stable code and title of this error: the one place that maps errors to
    /// HTTP.
    pub fn classify(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        match self {
            Validation { .. } => (
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "The request is not valid",
            ),
            MalformedJson { .. } => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "The request body is not valid JSON",
            ),
            UnknownField { .. } => (
                StatusCode::BAD_REQUEST,
                "unknown_field",
                "The request body has a field this endpoint does not know",
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The request body must be JSON",
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large",
            ),
            UriTooLong => (
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                "The request target is too long",
            ),
            HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "The request headers are too large",
            ),
            RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body did not arrive in time",
            ),
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Authentication is required",
            ),
            Forbidden { .. } => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "The token's role may not use this endpoint",
            ),
            NotFound { .. } => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            IdempotencyConflict { .. } => (
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "The command id was already used for a different request",
            ),
            WrongExpectedVersion { .. } => (
                StatusCode::CONFLICT,
                "wrong_expected_version",
                "The stream changed concurrently; retry the command",
            ),
            InsufficientCredits { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "insufficient_credits",
                "Not enough credits",
            ),
            RefundExceedsPayment { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "refund_exceeds_payment",
                "The refund exceeds the refundable remainder of the payment",
            ),
            Rejected { status, code, .. } => {
                (*status, code, "The command breaks a rule of the ledger")
            }
            Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service is unavailable",
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }

    /// The problem body sent to the client.
    pub fn problem(&self) -> Problem {
        let (status, code, title) = self.classify();
        let detail = match self {
            // The cause stays in the log.
            ApiError::Internal(_) => "the server failed; the failure was logged".to_owned(),
            ApiError::Unavailable { .. } => "the service is unavailable; retry later".to_owned(),
            other => truncate(other.to_string(), DETAIL_LENGTH_MAX),
        };
        Problem {
            problem_type: code.to_owned(),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "request failed"),
            ApiError::Unavailable { reason } => tracing::warn!(%reason, "request refused"),
            _ => {}
        }
        let status = StatusCode::from_u16(problem.status).expect("classify gives valid codes");
        let body = serde_json::to_vec(&problem).expect("a problem serializes");
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::WrongExpectedVersion { .. } => ApiError::WrongExpectedVersion {
                detail: error.to_string(),
            },
            StoreError::LimitExceeded { .. }
            | StoreError::InvalidStreamName { .. }
            | StoreError::InvalidEventType { .. } => ApiError::validation(error.to_string()),
            StoreError::WritesRefused { .. } | StoreError::Unavailable { .. } => {
                ApiError::Unavailable {
                    reason: error.to_string(),
                }
            }
            // An event id reused for other content is a conflicting retry of a command.
            StoreError::IdempotencyConflict { event_id, .. } => ApiError::IdempotencyConflict {
                key: event_id.to_string(),
            },
            StoreError::EmptyAppend
            | StoreError::DuplicateEventId { .. }
            | StoreError::Corrupted { .. }
            | StoreError::Locked { .. }
            | StoreError::Io { .. } => ApiError::internal(error),
        }
    }
}

impl From<Rejection> for ApiError {
    /// The status follows the domain's own category of the rejection; the problem type
    /// is the rejection's code, except for the codes the API names itself.
    fn from(rejection: Rejection) -> ApiError {
        let detail = rejection.to_string();
        match &rejection {
            Rejection::InvalidValue(error) => {
                return ApiError::validation(format!("{}: {}", error.field, error.problem))
            }
            Rejection::InsufficientCredits { .. } => {
                return ApiError::InsufficientCredits { detail }
            }
            Rejection::RefundExceedsPayment { .. } => {
                return ApiError::RefundExceedsPayment { detail }
            }
            Rejection::IdempotencyConflict { key } => {
                return ApiError::IdempotencyConflict { key: key.clone() }
            }
            _ => {}
        }
        let status = match rejection.category() {
            RejectionCategory::InvalidInput => StatusCode::BAD_REQUEST,
            RejectionCategory::NotFound => StatusCode::NOT_FOUND,
            RejectionCategory::Conflict => StatusCode::CONFLICT,
            RejectionCategory::RuleViolated => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::Rejected {
            status,
            code: rejection.code(),
            detail,
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> ApiError {
        match error {
            LedgerError::Rejected(rejection) => rejection.into(),
            LedgerError::CommandIdConflict { command_id } => ApiError::IdempotencyConflict {
                key: command_id.to_string(),
            },
            LedgerError::Contention { .. } => ApiError::WrongExpectedVersion {
                detail: format!("{error}; retry the command"),
            },
            LedgerError::Store(error) => error.into(),
            LedgerError::Privacy(error) => match error {
                PrivacyError::SubjectErased { .. } => ApiError::Rejected {
                    status: StatusCode::GONE,
                    code: error.code(),
                    detail: "the data subject was erased; their personal data cannot be \
                             written or read again"
                        .to_owned(),
                },
                PrivacyError::VaultUnavailable { .. } | PrivacyError::VaultLocked { .. } => {
                    ApiError::Unavailable {
                        reason: error.to_string(),
                    }
                }
                PrivacyError::LimitExceeded { .. } | PrivacyError::Invalid { .. } => {
                    ApiError::validation(error.to_string())
                }
                other => ApiError::internal(other),
            },
            LedgerError::Unreadable { .. } => ApiError::internal(error),
        }
    }
}

impl From<PrivacyError> for ApiError {
    fn from(error: PrivacyError) -> ApiError {
        LedgerError::Privacy(error).into()
    }
}

impl From<ValueError> for ApiError {
    fn from(error: ValueError) -> ApiError {
        ApiError::validation(format!("{}: {}", error.field, error.problem))
    }
}

/// A value error reported under the request's own name for the field: the domain names a
/// value by its type (`rate`), the caller knows it by the field it sent (`share`).
/// `.map_err(at_field("share"))`.
pub fn at_field(field: &str) -> impl FnOnce(ValueError) -> ApiError + '_ {
    move |error| ApiError::validation(format!("{field}: {}", error.problem))
}

/// `text` cut to at most `length_max` bytes at a character boundary, marked with `…`
/// when cut.
pub fn truncate(mut text: String, length_max: usize) -> String {
    if text.len() <= length_max {
        return text;
    }
    let mut end = length_max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    text
}

/// A caller's value quoted for a detail: JSON-escaped, at most [`ECHO_LENGTH_MAX`]
/// characters of it.
pub fn echo(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(ECHO_LENGTH_MAX).collect();
    if chars.next().is_some() {
        format!("{head:?}… ({} bytes)", value.len())
    } else {
        format!("{head:?}")
    }
}

/// A deserializer's message in the caller's words: Rust's type names (`u8`, `u64`,
/// `struct RecordPaymentRequest`) become what JSON calls them, and quoted input is cut
/// to [`ECHO_LENGTH_MAX`] characters.
pub fn humanize(message: &str) -> String {
    const TYPES: &[(&str, &str)] = &[
        ("u8", "a whole number from 0 to 255"),
        ("u16", "a whole number from 0 to 65535"),
        ("u32", "a whole number from 0 to 4294967295"),
        ("u64", "a whole number from 0 to 18446744073709551615"),
        ("usize", "a whole number of at least 0"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("bool", "true or false"),
        ("f64", "a number"),
        ("a borrowed string", "a string"),
        ("a sequence", "an array"),
        ("a map", "an object"),
    ];
    let mut text = shorten_quoted(message);
    for (rust, json) in TYPES {
        for (before, after) in [
            (format!("expected {rust}"), format!("expected {json}")),
            (format!("to a `{rust}`"), format!("to {json}")),
            (format!("as `{rust}`"), format!("as {json}")),
        ] {
            text = text.replace(&before, &after);
        }
    }
    // `expected struct XRequest` / `expected enum XKind`: the name is ours, not the caller's.
    for kind in ["struct ", "enum ", "tuple struct "] {
        while let Some(start) = text.find(&format!("expected {kind}")) {
            let name_start = start + "expected ".len() + kind.len();
            let name_end = text[name_start..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(text.len(), |end| name_start + end);
            let json = if kind == "enum " {
                "one of the listed values"
            } else {
                "a JSON object"
            };
            text.replace_range(start..name_end, &format!("expected {json}"));
        }
    }
    text
}

/// `message` with every double-quoted or backquoted run longer than [`ECHO_LENGTH_MAX`]
/// characters cut short.
fn shorten_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(DETAIL_LENGTH_MAX * 2));
    let mut rest = message;
    while let Some(open) = rest.find(['"', '`']) {
        let quote = rest.as_bytes()[open] as char;
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let close = rest.find(quote).unwrap_or(rest.len());
        let quoted = &rest[..close];
        if quoted.chars().count() > ECHO_LENGTH_MAX {
            out.extend(quoted.chars().take(ECHO_LENGTH_MAX));
            out.push('…');
        } else {
            out.push_str(quoted);
        }
        rest = &rest[close..];
        if let Some(stripped) = rest.strip_prefix(quote) {
            out.push(quote);
            rest = stripped;
        }
    }
    out.push_str(rest);
    out
}

/// A JSON request body: like `axum::Json`, but every rejection is a [`Problem`] and the
/// detail names the field at fault (`credits: invalid type: string "x", expected ...`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim();
                mime.eq_ignore_ascii_case("application/json")
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body, telling syntax errors, unknown fields and wrong values apart.
/// The body must be a JSON object: serde would read an array into a struct by position
/// (`["arr1",1,"chef",null]` as a spend), which no client means and no schema describes.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Which error: a document that is not JSON at all, or JSON of another kind.
        return Err(match serde_json::from_slice::<serde_json::Value>(bytes) {
            Err(error) => ApiError::MalformedJson {
                detail: humanize(&error.to_string()),
            },
            Ok(value) => ApiError::validation(format!(
                "body: must be a JSON object of named fields, not {}",
                json_kind(&value)
            )),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = humanize(&inner.to_string());
        let at = |message: &str| {
            if path == "." || path.is_empty() {
                message.to_owned()
            } else {
                format!("{path}: {message}")
            }
        };
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::MalformedJson { detail: message }
            }
            serde_json::error::Category::Data if message.starts_with("unknown field") => {
                ApiError::UnknownField {
                    detail: at(&message),
                }
            }
            serde_json::error::Category::Data | serde_json::error::Category::Io => {
                ApiError::validation(at(&message))
            }
        }
    })?;
    // Bytes after the document are a syntax error too.
    deserializer
        .end()
        .map_err(|error| ApiError::MalformedJson {
            detail: error.to_string(),
        })?;
    Ok(value)
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::PayloadTooLarge;
    }
    // tower-http's body timeout, somewhere down the chain of causes.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
    while let Some(error) = cause {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::RequestTimeout;
        }
        cause = error.source();
    }
    ApiError::validation(format!(
        "body: could not be read: {}",
        rejection.body_text()
    ))
}

/// Refuses, in problem+json, a request whose target or headers exceed the API's limits.
/// hyper refuses only far larger ones (a 64 KiB target, 400 KiB of headers), with a bare
/// status line: these limits are below its, so what a client meets is a problem.
pub async fn edges(request: Request, next: axum::middleware::Next) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target > URI_LENGTH_MAX {
        return ApiError::UriTooLong.into_response();
    }
    let headers = request.headers();
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > HEADERS_COUNT_MAX || size > HEADERS_SIZE_MAX {
        return ApiError::HeadersTooLarge.into_response();
    }
    next.run(request).await
}

/// Query parameters whose rejection is a [`Problem`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let text = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                ApiError::validation(format!("query string: {}", humanize(text)))
            })
    }
}

/// Path parameters whose rejection is a [`Problem`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection| {
                let text = rejection.body_text();
                ApiError::validation(format!("path: {}", humanize(&text)))
            })
    }
}

/// The 404 of paths no route matches.
pub async fn fallback_not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("path {}", uri.path()))
}
