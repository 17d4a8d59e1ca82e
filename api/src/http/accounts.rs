//! Accounts and their credit wallets:
//! `POST /v1/accounts`, `GET /v1/accounts/{id}`, `GET /v1/accounts/{id}/credits`,
//! `POST /v1/accounts/{id}/credits/grants`, `POST /v1/accounts/{id}/credits/spend`.

use std::collections::{HashSet, VecDeque};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use ledger::domain::account::{Account, AccountCommand, ForAccount, OpenAccount};
use ledger::domain::events::{GrantReason, PersonalData};
use ledger::domain::ids::{Fingerprint, GrantId, PersonaId, SpendId};
use ledger::domain::{AccountId, Credits, ReferralCode};
use ledger::service::CommandMeta;

use super::auth::{Authorized, BillingOnly};
use super::command::{
    body, fresh_or_repeat, idempotent, optional_instant, respond, stated_time, Since,
};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, Problem};
use super::events::rfc3339;
use super::AppState;
use crate::idempotency::{CommandKey, Completed, IdempotencyKeyHeader};
use crate::store::MeteredStore;
use ledger::privacy::domain::{fingerprint_token, record_fingerprints};
use ledger::privacy::fingerprint::FingerprintKind;
use ledger::service::Ledger;

/// Deepest upline or downline walked by one query.
pub const REFERRAL_DEPTH_MAX: usize = 64;
/// Most accounts listed by one downline query.
pub const DOWNLINE_SIZE_MAX: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts", post(open_account))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/accounts/{id}/credits", get(get_credits))
        .route("/v1/accounts/{id}/credits/grants", post(grant_credits))
        .route("/v1/accounts/{id}/credits/spend", post(spend_credits))
        .route("/v1/accounts/{id}/upline", get(upline))
        .route("/v1/accounts/{id}/downline", get(downline))
}

/// `POST /v1/accounts`. Personal data (`name`, `email`, `signup_ip`) is sealed with the
/// account's own key before it is written, and never logged.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountRequest {
    /// A random UUID chosen by the caller (its idempotency key); generated when absent,
    /// in which case send an `Idempotency-Key` header to make retries safe.
    pub account_id: Option<uuid::Uuid>,
    pub name: String,
    pub email: String,
    /// The IP address the person signed up from, for the self-referral check.
    pub signup_ip: Option<String>,
    /// The referral code of the person who referred this one.
    pub referral_code: Option<String>,
    /// The payment processor's fingerprint of the card the person signed up with, for
    /// the self-referral check (keyed before it is stored, like email and IP).
    pub payment_fingerprint: Option<String>,
    /// When the person signed up (RFC 3339); now when absent, never in the future.
    #[schema(value_type = Option<String>, example = "2026-10-05T12:00:00Z")]
    pub opened_at: Option<DateTime<Utc>>,
}

// Requests carry personal data: debug output names the fields only.
impl std::fmt::Debug for OpenAccountRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAccountRequest")
            .field("account_id", &self.account_id)
            .field("referral_code", &self.referral_code)
            .finish_non_exhaustive()
    }
}

impl OpenAccountRequest {
    pub fn referral_code(&self) -> Result<Option<ReferralCode>, ApiError> {
        self.referral_code
            .as_deref()
            .map(|code| ReferralCode::parse(code).map_err(ApiError::from))
            .transpose()
    }
}

/// `201` to `POST /v1/accounts` (`200` for a repeat).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountOpenedResponse {
    pub account_id: uuid::Uuid,
    /// The account's own code, for others to sign up with.
    pub referral_code: String,
    pub referrer_id: Option<uuid::Uuid>,
    /// Whether the referral looks fraudulent: its commissions are held for review.
    pub flagged: bool,
}

/// `GET /v1/accounts/{id}`: the account without its personal data.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub account_id: uuid::Uuid,
    pub referral_code: String,
    pub referrer_id: Option<uuid::Uuid>,
    pub flagged: bool,
    /// Fraud checks the referral failed (`self_referral_email`, ...).
    pub fraud_flags: Vec<String>,
    pub opened_at: String,
    pub balance: u64,
}

/// Why credits are granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantReasonRequest {
    SubscriptionAllowance,
    Promotion,
    ReferralBonus,
    Goodwill,
}

impl From<GrantReasonRequest> for GrantReason {
    fn from(reason: GrantReasonRequest) -> GrantReason {
        match reason {
            GrantReasonRequest::SubscriptionAllowance => GrantReason::SubscriptionAllowance,
            GrantReasonRequest::Promotion => GrantReason::Promotion,
            GrantReasonRequest::ReferralBonus => GrantReason::ReferralBonus,
            GrantReasonRequest::Goodwill => GrantReason::Goodwill,
        }
    }
}

/// `POST /v1/accounts/{id}/credits/grants`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantCreditsRequest {
    /// The caller's id for the grant; the command's idempotency key.
    pub grant_id: String,
    /// Whole credits, more than zero.
    pub credits: u64,
    pub reason: GrantReasonRequest,
    /// RFC 3339; the grant never expires when absent.
    #[schema(value_type = Option<String>, example = "2026-12-31T23:59:59Z")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When the grant was made (RFC 3339); now when absent, never in the future.
    #[schema(value_type = Option<String>)]
    pub granted_at: Option<DateTime<Utc>>,
}

impl GrantCreditsRequest {
    pub fn validate(&self) -> Result<(GrantId, Credits), ApiError> {
        Ok((
            GrantId::parse(&self.grant_id)?,
            positive_credits(self.credits)?,
        ))
    }
}

/// `POST /v1/accounts/{id}/credits/spend`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SpendCreditsRequest {
    /// The caller's id for the spend; the command's idempotency key.
    pub spend_id: String,
    /// Whole credits, more than zero.
    pub credits: u64,
    /// The AI specialist the credits were spent with.
    pub persona: String,
    /// When the credits were spent (RFC 3339); now when absent, never in the future.
    #[schema(value_type = Option<String>)]
    pub spent_at: Option<DateTime<Utc>>,
}

impl SpendCreditsRequest {
    pub fn validate(&self) -> Result<(SpendId, Credits, PersonaId), ApiError> {
        Ok((
            SpendId::parse(&self.spend_id)?,
            positive_credits(self.credits)?,
            PersonaId::parse(&self.persona)?,
        ))
    }
}

pub fn positive_credits(credits: u64) -> Result<Credits, ApiError> {
    if credits == 0 {
        return Err(ApiError::validation("credits: must be more than zero"));
    }
    Ok(Credits::new(credits)?)
}

/// `200` to a spend: the balance right after it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BalanceResponse {
    pub balance: u64,
}

/// `201` to a grant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantResponse {
    pub grant_id: String,
    pub balance: u64,
}

/// One grant of a wallet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    pub grant_id: String,
    pub credits: u64,
    pub remaining: u64,
    pub expires_at: Option<String>,
    pub granted_at: String,
}

/// One open reservation of a wallet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReservationView {
    pub reservation_id: String,
    pub credits: u64,
    pub persona: Option<String>,
    pub expires_at: String,
    pub reserved_at: String,
}

/// `GET /v1/accounts/{id}/credits`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreditsResponse {
    /// `available + reserved`: credits neither spent nor expired.
    pub balance: u64,
    /// Credits held by open reservations (none past its expiry, recorded or not).
    pub reserved: u64,
    /// Credits that can be spent or reserved now.
    pub available: u64,
    pub grants: Vec<GrantView>,
    /// The reservations open now, by id.
    pub reservations: Vec<ReservationView>,
}

/// An account id from the path.
pub fn account_id(id: &str) -> Result<AccountId, ApiError> {
    Ok(AccountId::parse(id)?)
}

/// The lock key of an account's commands: they queue one after another (see
/// [`crate::locks`]).
pub(crate) fn stream_lock(account: AccountId) -> String {
    format!("account-{account}")
}

impl AccountView {
    fn of(account: &Account, now: DateTime<Utc>) -> AccountView {
        AccountView {
            account_id: account.id().as_uuid(),
            referral_code: account.opened.referral_code.to_string(),
            referrer_id: account.referrer().map(|id| id.as_uuid()),
            flagged: !account.referral_flags().is_empty(),
            fraud_flags: account
                .referral_flags()
                .iter()
                .map(|flag| flag.code().to_owned())
                .collect(),
            opened_at: rfc3339(account.opened.opened_at),
            balance: account.wallet.balance_at(now).units(),
        }
    }
}

/// What `read` takes from an existing account, without copying its state; 404 if there
/// is no such account.
pub(super) async fn read_existing<R>(
    ledger: &Ledger<MeteredStore>,
    id: AccountId,
    read: impl FnOnce(&Account) -> R,
) -> Result<R, ApiError> {
    ledger
        .with_account(id, |account| account.map(read))
        .await?
        .ok_or_else(|| ApiError::Rejected {
            status: StatusCode::NOT_FOUND,
            code: "account_not_found",
            detail: format!("account {id} does not exist"),
        })
}

/// When `account` opened: what the stated time of a fact about it may not precede.
/// `None` when there is no such account (the ledger then refuses the command).
pub async fn opened_since(
    ledger: &Ledger<MeteredStore>,
    account: AccountId,
) -> Result<Option<Since>, ApiError> {
    Ok(ledger
        .with_account(account, |existing| {
            existing.map(|existing| Since {
                what: "the account opened",
                at: existing.opened.opened_at,
            })
        })
        .await?)
}

/// The accounts `account` referred, in id order.
fn referees(account: &Account) -> Vec<AccountId> {
    account.referrals.keys().copied().collect()
}

/// Opens an account, optionally referred by the owner of `referral_code`.
#[utoipa::path(
    post, path = "/v1/accounts", tag = "billing",
    request_body = OpenAccountRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe when `account_id` is not given")),
    responses(
        (status = 201, description = "Opened", body = AccountOpenedResponse),
        (status = 200, description = "A repeat of an earlier identical request", body = AccountOpenedResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`referrer_not_found`", body = Problem),
        (status = 409, description = "`account_exists` or `idempotency_conflict`", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn open_account(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    IdempotencyKeyHeader(header_key): IdempotencyKeyHeader,
    ApiJson(request): ApiJson<OpenAccountRequest>,
) -> Result<Response, ApiError> {
    let referred_with_code = request.referral_code()?;
    let account_id = match (request.account_id, &header_key) {
        (Some(id), _) => AccountId::new(id)?,
        // The same key names the same account on every retry; the id is a keyed hash of
        // the key, random-looking and unrelated to the person.
        (None, Some(key)) => {
            let digest = state.fingerprinter.fingerprint("account-id", key);
            let mut bytes = [0u8; 16];
            for (index, byte) in bytes.iter_mut().enumerate() {
                let pair = &digest[digest.len() - 32 + 2 * index..][..2];
                *byte = u8::from_str_radix(pair, 16).expect("hex digest");
            }
            AccountId::new(uuid::Builder::from_random_bytes(bytes).into_uuid())?
        }
        (None, None) => AccountId::random(),
    };
    let signup_ip = match request.signup_ip.as_deref() {
        Some(text) => Some(text.trim().parse::<std::net::IpAddr>().map_err(|_| {
            ApiError::validation(format!("signup_ip: {text:?} is not an IP address"))
        })?),
        None => None,
    };
    // An unknown signup IP is recorded as the unspecified address, and fingerprinted as
    // unique to the account so it matches nobody in the self-referral check.
    let ip_text = signup_ip.map_or_else(|| "0.0.0.0".to_owned(), |ip| ip.to_string());
    let personal_data = PersonalData::parse(&request.name, &request.email, &ip_text)?;
    let ip_text_for_table = signup_ip.map(|ip| ip.to_string());
    let email_for_table = request.email.clone();
    // Fingerprints are keyed by the vault (so they go with its keys), normalised by kind.
    let vault = state.ledger.vault();
    let email_fingerprint = fingerprint_token(vault, FingerprintKind::Email, &request.email)?;
    let ip_fingerprint = match signup_ip {
        Some(ip) => fingerprint_token(vault, FingerprintKind::Ip, &ip.to_string())?,
        None => Fingerprint::parse(&format!("ip:unknown-{account_id}"))?,
    };
    let payment_fingerprint = request
        .payment_fingerprint
        .as_deref()
        .map(|card| fingerprint_token(vault, FingerprintKind::Payment, card))
        .transpose()?;
    let card_for_table = request.payment_fingerprint.clone();
    let stated_opened_at = stated_time("opened_at", request.opened_at, None)?;
    let key = CommandKey::new("open_account", &account_id.to_string(), "account_id")?;
    let mut locks = vec![stream_lock(account_id)];
    if let Some(code) = referred_with_code {
        locks.push(format!("referral-code-{code}"));
    }
    let ledger = state.ledger.clone();
    idempotent(&state, key, &request, locks, |meta| async move {
        // A retry after a crash repeats the time recorded the first time.
        let opened_at = ledger
            .with_account(account_id, |existing| {
                existing.map(|existing| existing.opened.opened_at)
            })
            .await?
            .unwrap_or(stated_opened_at);
        let command = OpenAccount {
            account_id,
            referral_code: ReferralCode::for_account(account_id),
            referred_with_code,
            personal_data,
            email_fingerprint,
            ip_fingerprint,
            payment_fingerprint,
            opened_at,
        };
        let outcome = ledger.open_account(meta, &command).await?;
        // The vault's table of who has which fingerprint, deleted with the account's keys
        // on erasure. Its duplicate report is not a decision: the referral rules are.
        let mut fingerprints = vec![(FingerprintKind::Email, email_for_table.as_str())];
        if let Some(ip) = &ip_text_for_table {
            fingerprints.push((FingerprintKind::Ip, ip.as_str()));
        }
        if let Some(card) = &card_for_table {
            fingerprints.push((FingerprintKind::Payment, card.as_str()));
        }
        let others = record_fingerprints(ledger.vault(), account_id, &fingerprints)?;
        if !others.is_empty() {
            tracing::info!(
                count = others.len(),
                "signup shares a fingerprint with other accounts"
            );
        }
        let account = ledger
            .account(account_id)
            .await?
            .ok_or_else(|| ApiError::internal("an opened account does not read back"))?;
        let response = AccountOpenedResponse {
            account_id: account_id.as_uuid(),
            referral_code: account.opened.referral_code.to_string(),
            referrer_id: account.referrer().map(|id| id.as_uuid()),
            flagged: !account.referral_flags().is_empty(),
        };
        Ok((
            fresh_or_repeat(&outcome, StatusCode::CREATED),
            body(&response)?,
        ))
    })
    .await
    .map_err(|error| match error {
        // The account id is the signup's id: another signup under it is the rule
        // docs/API.md names.
        ApiError::IdempotencyConflict { .. } => ApiError::Rejected {
            status: StatusCode::CONFLICT,
            code: "account_exists",
            detail: format!(
                "account_id: account {account_id} already exists with different details; \
                 a new account needs a new id"
            ),
        },
        other => other,
    })
}

/// An account, without personal data.
#[utoipa::path(
    get, path = "/v1/accounts/{id}", tag = "billing",
    params(("id" = String, Path, description = "The account id")),
    responses(
        (status = 200, description = "The account", body = AccountView),
        (status = 404, description = "`account_not_found`", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn get_account(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AccountView>, ApiError> {
    let view = read_existing(&state.ledger, account_id(&id)?, |account| {
        AccountView::of(account, Utc::now())
    })
    .await?;
    Ok(Json(view))
}

/// The credit balance (available and reserved), every grant and the open reservations of
/// a wallet.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/credits", tag = "billing",
    params(("id" = String, Path, description = "The account id")),
    responses(
        (status = 200, description = "Balance, grants and open reservations", body = CreditsResponse),
        (status = 404, description = "`account_not_found`", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn get_credits(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<CreditsResponse>, ApiError> {
    let response = read_existing(&state.ledger, account_id(&id)?, credits_response).await?;
    Ok(Json(response))
}

/// The wallet of `account` as the credits endpoint shows it.
fn credits_response(account: &Account) -> CreditsResponse {
    let wallet = &account.wallet;
    let now = Utc::now();
    CreditsResponse {
        balance: wallet.balance_at(now).units(),
        reserved: wallet.reserved_at(now).units(),
        available: wallet.available_at(now).units(),
        reservations: wallet
            .open_reservations_at(now)
            .map(|(reservation_id, reservation)| ReservationView {
                reservation_id: reservation_id.to_string(),
                credits: reservation.reserved.credits.units(),
                persona: reservation
                    .reserved
                    .persona
                    .as_ref()
                    .map(ToString::to_string),
                expires_at: rfc3339(reservation.reserved.expires_at),
                reserved_at: rfc3339(reservation.reserved.reserved_at),
            })
            .collect(),
        grants: wallet
            .grants
            .iter()
            .map(|(grant_id, grant)| GrantView {
                grant_id: grant_id.to_string(),
                credits: grant.credits.units(),
                remaining: grant.remaining.units(),
                expires_at: grant.expires_at.map(rfc3339),
                granted_at: rfc3339(grant.granted_at),
            })
            .collect(),
    }
}

/// Grants credits (subscription allowance, promotion, referral bonus, goodwill).
#[utoipa::path(
    post, path = "/v1/accounts/{id}/credits/grants", tag = "billing",
    params(("id" = String, Path, description = "The account id")),
    request_body = GrantCreditsRequest,
    responses(
        (status = 201, description = "Granted", body = GrantResponse),
        (status = 200, description = "A repeat of an earlier identical grant", body = GrantResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`", body = Problem),
        (status = 422, description = "`expiry_not_after_grant`, `too_many_active_grants`, ...", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn grant_credits(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<GrantCreditsRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&id)?;
    let (grant_id, credits) = request.validate()?;
    let since = opened_since(&state.ledger, account).await?;
    let stated_granted_at = stated_time("granted_at", request.granted_at, since)?;
    let expires_at = optional_instant("expires_at", request.expires_at)?;
    let key = CommandKey::new(
        "grant",
        &format!("{account}/{}", request.grant_id),
        "grant_id",
    )?;
    let ledger = state.ledger.clone();
    let fingerprinted = (account, request.clone());
    idempotent(
        &state,
        key,
        &fingerprinted,
        vec![stream_lock(account)],
        |meta| async move {
            // A retry after a crash repeats the time recorded the first time.
            let granted_at = read_existing(&ledger, account, |existing| {
                existing
                    .wallet
                    .grants
                    .get(&grant_id)
                    .map(|grant| grant.granted_at)
            })
            .await?
            .unwrap_or(stated_granted_at);
            let command = ForAccount {
                account_id: account,
                command: AccountCommand::GrantCredits {
                    grant_id: grant_id.clone(),
                    credits,
                    reason: request.reason.into(),
                    expires_at,
                    granted_at,
                },
            };
            let outcome = ledger.account_command(meta, &command).await?;
            let balance = read_existing(&ledger, account, |after| {
                after.wallet.balance_at(Utc::now()).units()
            })
            .await?;
            let response = GrantResponse {
                grant_id: grant_id.to_string(),
                balance,
            };
            Ok((
                fresh_or_repeat(&outcome, StatusCode::CREATED),
                body(&response)?,
            ))
        },
    )
    .await
}

/// Spends credits, drawing down the grants that expire first. Never below zero.
#[utoipa::path(
    post, path = "/v1/accounts/{id}/credits/spend", tag = "billing",
    params(("id" = String, Path, description = "The account id")),
    request_body = SpendCreditsRequest,
    responses(
        (status = 200, description = "Spent (or a repeat of an identical spend): the balance after it", body = BalanceResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`", body = Problem),
        (status = 422, description = "`insufficient_credits`: nothing was recorded", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn spend_credits(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<SpendCreditsRequest>,
) -> Result<Response, ApiError> {
    let account = account_id(&id)?;
    let (spend_id, credits, persona) = request.validate()?;
    let since = opened_since(&state.ledger, account).await?;
    let spent_at = stated_time("spent_at", request.spent_at, since)?;
    let key = CommandKey::new(
        "spend",
        &format!("{account}/{}", request.spend_id),
        "spend_id",
    )?;
    // No idempotency-table record: a spend's id is kept in its account's wallet, so the
    // ledger itself refuses the same id with other credits or persona (409) and finds the
    // spend a retry repeats, and what that spend answered is rebuilt exactly from the log
    // (`balance_after_spend`). One fsync per spend instead of two; see docs/API.md.
    let _queue = state.stream_locks.lock([stream_lock(account)]).await;
    let command = ForAccount {
        account_id: account,
        command: AccountCommand::SpendCredits {
            spend_id: spend_id.clone(),
            persona,
            credits,
            spent_at,
        },
    };
    let meta = CommandMeta::new(key.command_id());
    let outcome = state.ledger.account_command(meta, &command).await?;
    if outcome.events.is_empty() || outcome.replayed {
        let balance = state
            .ledger
            .balance_after_spend(account, &spend_id)
            .await?
            .ok_or_else(|| ApiError::internal("a repeated spend is not in its account's stream"))?;
        return Ok(respond(Completed {
            status: StatusCode::OK,
            body: body(&BalanceResponse {
                balance: balance.units(),
            })?,
            replayed: true,
        }));
    }
    let balance = read_existing(&state.ledger, account, |after| {
        after.wallet.balance_at(spent_at).units()
    })
    .await?;
    Ok(respond(Completed {
        status: StatusCode::OK,
        body: body(&BalanceResponse { balance })?,
        replayed: false,
    }))
}

/// The referral chain above an account, its referrer first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UplineResponse {
    pub account_id: uuid::Uuid,
    /// Level 1 is the referrer, level 2 theirs, ...
    pub upline: Vec<ReferralLink>,
}

/// An account in a referral chain or tree.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReferralLink {
    pub account_id: uuid::Uuid,
    pub level: usize,
    /// Whether this account's own referral was flagged for review.
    pub flagged: bool,
}

/// An account's upline, at most 64 levels.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/upline", tag = "billing",
    params(("id" = String, Path, description = "The account id")),
    responses(
        (status = 200, description = "The upline, nearest first", body = UplineResponse),
        (status = 404, description = "`account_not_found`", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn upline(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<UplineResponse>, ApiError> {
    let id = account_id(&id)?;
    let mut next = read_existing(&state.ledger, id, Account::referrer).await?;
    let mut upline = Vec::new();
    // A loop, never recursion: referral chains can be long.
    while let Some(member) = next {
        if upline.len() == REFERRAL_DEPTH_MAX {
            break;
        }
        let (flagged, referrer) = read_existing(&state.ledger, member, |member| {
            (!member.referral_flags().is_empty(), member.referrer())
        })
        .await?;
        upline.push(ReferralLink {
            account_id: member.as_uuid(),
            level: upline.len() + 1,
            flagged,
        });
        next = referrer;
    }
    Ok(Json(UplineResponse {
        account_id: id.as_uuid(),
        upline,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DownlineQuery {
    /// Levels to walk down, 1 to 64 (default 3).
    pub depth: Option<usize>,
}

/// The accounts below an account, breadth first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DownlineResponse {
    pub account_id: uuid::Uuid,
    pub depth: usize,
    pub downline: Vec<ReferralLink>,
    /// Whether the walk stopped at the size limit before it was complete.
    pub truncated: bool,
}

/// An account's downline, level by level.
#[utoipa::path(
    get, path = "/v1/accounts/{id}/downline", tag = "billing",
    params(("id" = String, Path, description = "The account id"), DownlineQuery),
    responses(
        (status = 200, description = "The downline, breadth first", body = DownlineResponse),
        (status = 400, description = "Bad depth", body = Problem),
        (status = 404, description = "`account_not_found`", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn downline(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DownlineQuery>,
) -> Result<Json<DownlineResponse>, ApiError> {
    let depth = query.depth.unwrap_or(3);
    if !(1..=REFERRAL_DEPTH_MAX).contains(&depth) {
        return Err(ApiError::validation(format!(
            "depth: must be 1 to {REFERRAL_DEPTH_MAX}, got {depth}"
        )));
    }
    let root_id = account_id(&id)?;
    let root_referees = read_existing(&state.ledger, root_id, referees).await?;
    let mut downline = Vec::new();
    let mut seen = HashSet::from([root_id]);
    // Breadth first with an explicit queue: no recursion over user data.
    let mut queue = VecDeque::from([(root_referees, 0usize)]);
    let mut truncated = false;
    while let Some((referees_of_account, level)) = queue.pop_front() {
        if level == depth {
            continue;
        }
        for referee in &referees_of_account {
            if !seen.insert(*referee) {
                continue;
            }
            if downline.len() == DOWNLINE_SIZE_MAX {
                truncated = true;
                break;
            }
            // The referee may not be open yet (a signup between its two appends).
            let member = state
                .ledger
                .with_account(*referee, |member| {
                    member.map(|member| (!member.referral_flags().is_empty(), referees(member)))
                })
                .await?;
            let Some((flagged, next_referees)) = member else {
                continue;
            };
            downline.push(ReferralLink {
                account_id: referee.as_uuid(),
                level: level + 1,
                flagged,
            });
            queue.push_back((next_referees, level + 1));
        }
        if truncated {
            break;
        }
    }
    Ok(Json(DownlineResponse {
        account_id: root_id.as_uuid(),
        depth,
        downline,
        truncated,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::parse_json;

    #[test]
    fn spends_and_grants_need_positive_credits_and_valid_ids() {
        let spend: SpendCreditsRequest =
            parse_json(br#"{"spend_id":"sp-1","credits":3,"persona":"chef"}"#).unwrap();
        let (_, credits, _) = spend.validate().unwrap();
        assert_eq!(credits.units(), 3);
        let zero: SpendCreditsRequest =
            parse_json(br#"{"spend_id":"sp-1","credits":0,"persona":"chef"}"#).unwrap();
        assert!(matches!(zero.validate(), Err(ApiError::Validation { .. })));
        let bad_id: SpendCreditsRequest =
            parse_json(br#"{"spend_id":"sp 1","credits":1,"persona":"chef"}"#).unwrap();
        let Err(ApiError::Validation { detail }) = bad_id.validate() else {
            panic!("a spend id with a space is refused")
        };
        assert!(detail.starts_with("spend_id:"), "{detail}");
        assert!(matches!(
            parse_json::<SpendCreditsRequest>(br#"{"spend_id":"a","credits":-1,"persona":"c"}"#),
            Err(ApiError::Validation { .. })
        ));
        assert!(matches!(
            parse_json::<GrantCreditsRequest>(br#"{"grant_id":"g","credits":1,"reason":"bribe"}"#),
            Err(ApiError::Validation { .. })
        ));
    }

    #[test]
    fn personal_data_stays_out_of_debug_output() {
        let request: OpenAccountRequest =
            parse_json(br#"{"name":"Ada Lovelace","email":"ada@example.org"}"#).unwrap();
        let debug = format!("{request:?}");
        assert!(!debug.contains("Ada") && !debug.contains("ada@"), "{debug}");
    }
}
