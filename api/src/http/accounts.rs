//! Accounts and their credit wallets:
//! `POST /v1/accounts`, `GET /v1/accounts/{id}`, `GET /v1/accounts/{id}/credits`,
//! `POST /v1/accounts/{id}/credits/grants`, `POST /v1/accounts/{id}/credits/spend`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ledger::domain::events::GrantReason;
use ledger::domain::ids::{GrantId, PersonaId, SpendId};
use ledger::domain::{AccountId, Credits, ReferralCode};

use super::error::ApiError;

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

/// `GET /v1/accounts/{id}/credits`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreditsResponse {
    pub balance: u64,
    pub grants: Vec<GrantView>,
}

/// An account id from the path.
pub fn account_id(id: uuid::Uuid) -> Result<AccountId, ApiError> {
    Ok(AccountId::new(id)?)
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
