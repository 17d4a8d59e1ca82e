//! Credit reservations (authorise, then capture or void):
//! `POST /v1/accounts/{id}/credits/reservations`,
//! `POST /v1/accounts/{id}/credits/reservations/{reservation_id}/capture`,
//! `POST /v1/accounts/{id}/credits/reservations/{reservation_id}/void`.
//!
//! Each is named by its reservation id, kept with the body in the idempotency table: the
//! same request again answers the first answer, another body under the id is 409. The
//! rules (draw-down, limits, expiry) are the ledger's (`ledger::domain::reservation`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ledger::domain::account::{Account, AccountCommand, ForAccount};
use ledger::domain::ids::{PersonaId, ReservationId};
use ledger::domain::reservation::{ReservationStatus, RESERVATION_TTL_SECONDS_MAX};
use ledger::domain::{AccountId, Credits};

use super::accounts::{account_id, opened_since, positive_credits, read_existing, stream_lock};
use super::auth::{Authorized, BillingOnly};
use super::command::{body, fresh_or_repeat, idempotent, stated_time};
use super::error::{ApiError, ApiJson, ApiPath, Problem};
use super::events::rfc3339;
use super::AppState;
use crate::idempotency::CommandKey;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/accounts/{id}/credits/reservations",
            post(reserve_credits),
        )
        .route(
            "/v1/accounts/{id}/credits/reservations/{reservation_id}/capture",
            post(capture_reservation),
        )
        .route(
            "/v1/accounts/{id}/credits/reservations/{reservation_id}/void",
            post(void_reservation),
        )
}

/// `POST /v1/accounts/{id}/credits/reservations`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveCreditsRequest {
    /// The caller's id for the reservation (one per reply); the command's idempotency key.
    #[schema(example = "reply-01J9Z9")]
    pub reservation_id: String,
    /// Whole credits to hold, more than zero: the most the reply may cost.
    pub credits: u64,
    /// When the reservation releases itself unless captured (RFC 3339), at most 24 hours
    /// after `reserved_at`. Give this or `ttl_seconds`.
    #[schema(value_type = Option<String>, example = "2026-10-02T11:20:00Z")]
    pub expires_at: Option<DateTime<Utc>>,
    /// How long the reservation lives, 1 to 86400 seconds from `reserved_at`. Give this or
    /// `expires_at`.
    pub ttl_seconds: Option<i64>,
    /// The AI specialist the reply is for; its capture is a spend with this persona.
    pub persona: Option<String>,
    /// When the credits were reserved (RFC 3339); now when absent, never in the future.
    #[schema(value_type = Option<String>)]
    pub reserved_at: Option<DateTime<Utc>>,
}

/// How a reservation's expiry was stated.
enum Lifetime {
    Until(DateTime<Utc>),
    For(Duration),
}

impl ReserveCreditsRequest {
    fn validate(&self) -> Result<(ReservationId, Credits, Option<PersonaId>, Lifetime), ApiError> {
        let lifetime = match (self.expires_at, self.ttl_seconds) {
            (Some(expires_at), None) => Lifetime::Until(expires_at),
            (None, Some(ttl)) if (1..=RESERVATION_TTL_SECONDS_MAX).contains(&ttl) => {
                Lifetime::For(Duration::seconds(ttl))
            }
            (None, Some(ttl)) => {
                return Err(ApiError::validation(format!(
                    "ttl_seconds: must be 1 to {RESERVATION_TTL_SECONDS_MAX}, got {ttl}"
                )))
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::validation(
                    "expires_at: give expires_at or ttl_seconds, not both",
                ))
            }
            (None, None) => {
                return Err(ApiError::validation(
                    "expires_at: missing; give expires_at or ttl_seconds",
                ))
            }
        };
        Ok((
            ReservationId::parse(&self.reservation_id)?,
            positive_credits(self.credits)?,
            self.persona.as_deref().map(PersonaId::parse).transpose()?,
            lifetime,
        ))
    }
}

/// `POST .../reservations/{reservation_id}/capture`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaptureReservationRequest {
    /// Whole credits the reply cost: more than zero, at most what was reserved. The rest
    /// is released. To spend nothing, void the reservation.
    pub credits: u64,
    /// When the reply was charged (RFC 3339); now when absent, never in the future.
    #[schema(value_type = Option<String>)]
    pub captured_at: Option<DateTime<Utc>>,
}

/// `POST .../reservations/{reservation_id}/void`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidReservationRequest {
    /// When the reservation was called off (RFC 3339); now when absent, never in the
    /// future.
    #[schema(value_type = Option<String>)]
    pub voided_at: Option<DateTime<Utc>>,
}

/// `201` to a reservation (`200` for a repeat): what it holds and the wallet right after.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReservationResponse {
    pub reservation_id: String,
    pub credits: u64,
    pub expires_at: String,
    /// Credits that can still be spent or reserved.
    pub available: u64,
    /// Credits held by open reservations, this one included.
    pub reserved: u64,
}

/// `201` to a capture or a void (`200` for a repeat).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReservationSettledResponse {
    pub reservation_id: String,
    /// `captured` or `voided`.
    pub status: String,
    /// Spent by the capture (0 for a void).
    pub captured: u64,
    /// Given back to the available balance (or, for grants expired meanwhile, to their
    /// expiry).
    pub released: u64,
    pub available: u64,
    pub reserved: u64,
    /// `available + reserved`.
    pub balance: u64,
}

fn reservation_key(
    kind: &'static str,
    account: AccountId,
    reservation_id: &str,
) -> Result<CommandKey, ApiError> {
    CommandKey::new(
        kind,
        &format!("{account}/{reservation_id}"),
        "reservation_id",
    )
}

/// Holds credits for a reply whose cost is not known yet.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/credits/reservations", tag = "billing",
    params(("id" = String, Path, description = "The account id")),
    request_body = ReserveCreditsRequest,
    responses(
        (status = 201, description = "Reserved: the credits left the available balance", body = ReservationResponse),
        (status = 200, description = "A repeat of an earlier identical reservation: its first answer", body = ReservationResponse),
        (status = 400, description = "Invalid request (`validation_failed` naming the field)", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`", body = Problem),
        (status = 422, description = "`insufficient_credits` (nothing recorded), `too_many_open_reservations`, `reservation_ttl_too_long`, `expiry_not_after_reservation`", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn reserve_credits(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ReserveCreditsRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&id)?;
    let (reservation_id, credits, persona, lifetime) = request.validate()?;
    let since = opened_since(&state.ledger, account).await?;
    let stated_reserved_at = stated_time("reserved_at", request.reserved_at, since)?;
    let key = reservation_key("reservation", account, &request.reservation_id)?;
    let ledger = state.ledger.clone();
    let fingerprinted = (account, request.clone());
    idempotent(
        &state,
        key,
        &fingerprinted,
        vec![stream_lock(account)],
        |meta| async move {
            // A retry after a crash repeats the time recorded the first time, so a
            // `ttl_seconds` gives the same expiry again.
            let recorded_at = read_existing(&ledger, account, |existing| {
                existing
                    .wallet
                    .reservations
                    .get(&reservation_id)
                    .map(|reservation| reservation.reserved.reserved_at)
            })
            .await?;
            let reserved_at = recorded_at.unwrap_or(stated_reserved_at);
            let expires_at = match lifetime {
                Lifetime::Until(expires_at) => expires_at,
                Lifetime::For(ttl) => reserved_at + ttl,
            };
            // A new reservation that would be born expired is a mistake; a repeat of one
            // made earlier is answered, whenever it comes.
            if recorded_at.is_none() && expires_at <= Utc::now() {
                return Err(ApiError::validation(format!(
                    "expires_at: {} has passed already",
                    rfc3339(expires_at)
                )));
            }
            let command = ForAccount {
                account_id: account,
                command: AccountCommand::ReserveCredits {
                    reservation_id: reservation_id.clone(),
                    credits,
                    persona,
                    expires_at,
                    reserved_at,
                },
            };
            let outcome = ledger.account_command(meta, &command).await?;
            let now = Utc::now();
            let response = read_existing(&ledger, account, |after| {
                let reserved = &after.wallet.reservations[&reservation_id].reserved;
                ReservationResponse {
                    reservation_id: reservation_id.to_string(),
                    credits: reserved.credits.units(),
                    expires_at: rfc3339(reserved.expires_at),
                    available: after.wallet.available_at(now).units(),
                    reserved: after.wallet.reserved_at(now).units(),
                }
            })
            .await?;
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
}

/// Spends what the reply cost, at most what was reserved, and releases the rest.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/credits/reservations/{reservation_id}/capture", tag = "billing",
    params(
        ("id" = String, Path, description = "The account id"),
        ("reservation_id" = String, Path, description = "The reservation id"),
    ),
    request_body = CaptureReservationRequest,
    responses(
        (status = 201, description = "Captured: the spend is recorded, the rest released", body = ReservationSettledResponse),
        (status = 200, description = "A repeat of an earlier identical capture: its first answer", body = ReservationSettledResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`account_not_found`, `reservation_not_found`", body = Problem),
        (status = 409, description = "`reservation_expired`, `reservation_already_captured`, `reservation_already_voided`, `idempotency_conflict`", body = Problem),
        (status = 422, description = "`capture_exceeds_reservation`", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn capture_reservation(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath((id, reservation)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<CaptureReservationRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&id)?;
    let reservation_id = ReservationId::parse(&reservation)?;
    let credits = positive_credits(request.credits)?;
    let since = opened_since(&state.ledger, account).await?;
    let captured_at = stated_time("captured_at", request.captured_at, since)?;
    let command = AccountCommand::CaptureReservation {
        reservation_id: reservation_id.clone(),
        credits,
        captured_at,
    };
    let key = reservation_key("reservation_capture", account, &reservation)?;
    settle(
        &state,
        key,
        (account, reservation, request),
        command,
        account,
        reservation_id,
    )
    .await
}

/// Releases a whole reservation.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/credits/reservations/{reservation_id}/void", tag = "billing",
    params(
        ("id" = String, Path, description = "The account id"),
        ("reservation_id" = String, Path, description = "The reservation id"),
    ),
    request_body = VoidReservationRequest,
    responses(
        (status = 201, description = "Voided: every credit released", body = ReservationSettledResponse),
        (status = 200, description = "A repeat of an earlier identical void: its first answer", body = ReservationSettledResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`account_not_found`, `reservation_not_found`", body = Problem),
        (status = 409, description = "`reservation_expired`, `reservation_already_captured`, `idempotency_conflict`", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn void_reservation(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath((id, reservation)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<VoidReservationRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&id)?;
    let reservation_id = ReservationId::parse(&reservation)?;
    let since = opened_since(&state.ledger, account).await?;
    let voided_at = stated_time("voided_at", request.voided_at, since)?;
    let command = AccountCommand::VoidReservation {
        reservation_id: reservation_id.clone(),
        voided_at,
    };
    let key = reservation_key("reservation_void", account, &reservation)?;
    settle(
        &state,
        key,
        (account, reservation, request),
        command,
        account,
        reservation_id,
    )
    .await
}

/// Runs a capture or a void once per key and answers with the settled reservation.
async fn settle<R: Serialize>(
    state: &AppState,
    key: CommandKey,
    fingerprinted: R,
    command: AccountCommand,
    account: AccountId,
    reservation_id: ReservationId,
) -> Result<Response, ApiError> {
    let ledger = state.ledger.clone();
    idempotent(
        state,
        key,
        &fingerprinted,
        vec![stream_lock(account)],
        |meta| async move {
            let command = ForAccount {
                account_id: account,
                command,
            };
            let outcome = ledger.account_command(meta, &command).await?;
            let now = Utc::now();
            let response = read_existing(&ledger, account, |after| {
                settlement(after, &reservation_id, now)
            })
            .await??;
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
}

fn settlement(
    account: &Account,
    reservation_id: &ReservationId,
    now: DateTime<Utc>,
) -> Result<ReservationSettledResponse, ApiError> {
    let wallet = &account.wallet;
    let reservation = wallet
        .reservations
        .get(reservation_id)
        .ok_or_else(|| ApiError::internal("a settled reservation is not in its wallet"))?;
    let reserved = reservation.reserved.credits.units();
    let (status, captured) = match &reservation.status {
        ReservationStatus::Captured { credits, .. } => ("captured", credits.units()),
        ReservationStatus::Voided { .. } => ("voided", 0),
        other => {
            return Err(ApiError::internal(format!(
                "a settled reservation reads as {other:?}"
            )))
        }
    };
    Ok(ReservationSettledResponse {
        reservation_id: reservation_id.to_string(),
        status: status.to_owned(),
        captured,
        released: reserved - captured,
        available: wallet.available_at(now).units(),
        reserved: wallet.reserved_at(now).units(),
        balance: wallet.balance_at(now).units(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::parse_json;

    #[test]
    fn a_reservation_states_its_expiry_one_way_and_names_the_field_at_fault() {
        let detail = |body: &[u8]| {
            let request: ReserveCreditsRequest = parse_json(body).unwrap();
            match request.validate() {
                Err(ApiError::Validation { detail }) => detail,
                other => panic!("expected a validation error, got {:?}", other.err()),
            }
        };
        assert!(detail(br#"{"reservation_id":"r","credits":1}"#).starts_with("expires_at:"));
        assert!(detail(
            br#"{"reservation_id":"r","credits":1,"ttl_seconds":5,"expires_at":"2026-10-02T11:20:00Z"}"#
        )
        .starts_with("expires_at:"));
        assert!(
            detail(br#"{"reservation_id":"r","credits":1,"ttl_seconds":0}"#)
                .starts_with("ttl_seconds:")
        );
        assert!(
            detail(br#"{"reservation_id":"r","credits":1,"ttl_seconds":86401}"#)
                .starts_with("ttl_seconds:")
        );
        assert!(
            detail(br#"{"reservation_id":"r","credits":0,"ttl_seconds":5}"#)
                .starts_with("credits:")
        );
        assert!(
            detail(br#"{"reservation_id":"r r","credits":1,"ttl_seconds":5}"#)
                .starts_with("reservation_id:")
        );
        assert!(
            detail(br#"{"reservation_id":"r","credits":1,"ttl_seconds":5,"persona":""}"#)
                .starts_with("persona:")
        );
        let fine: ReserveCreditsRequest =
            parse_json(br#"{"reservation_id":"r","credits":3,"ttl_seconds":60,"persona":"chef"}"#)
                .unwrap();
        let (_, credits, persona, lifetime) = fine.validate().unwrap();
        assert_eq!(credits.units(), 3);
        assert_eq!(persona.unwrap().as_str(), "chef");
        assert!(matches!(lifetime, Lifetime::For(ttl) if ttl == Duration::seconds(60)));
    }
}
