//! Payments and their refunds: `POST /v1/payments`, `POST /v1/payments/{payment_id}/refunds`.
//!
//! Request shapes are the contract with the billing service: amounts are decimal strings,
//! times RFC 3339, ids the payment processor's.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ledger::domain::events::{CommissionEarned, CommissionReversed, DomainEvent, PaymentKind};
use ledger::domain::ids::{PaymentId, RefundId, SubscriptionId};
use ledger::domain::payment::{RecordPayment, RefundKind, RefundPayment};
use ledger::domain::{streams, AccountId, Money};
use ledger::privacy::domain::{decode_redacted, fingerprint_token};
use ledger::privacy::fingerprint::FingerprintKind;
use ledger::store::{Direction, EventStore, StreamFrom, PAGE_SIZE_MAX};

use super::auth::{Authorized, BillingOnly};
use super::command::{answered_from_log, body, fresh_or_repeat, stated_time, Since};
use super::error::{ApiError, ApiJson, ApiPath, Problem};
use super::events::rfc3339;
use super::AppState;
use crate::idempotency::CommandKey;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/payments", post(record_payment))
        .route("/v1/payments/{payment_id}/refunds", post(refund_payment))
}

/// What a payment paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKindRequest {
    Subscription,
    CreditPack,
}

/// `POST /v1/payments`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordPaymentRequest {
    /// The processor's payment id (`pi_...`); the command's idempotency key.
    #[schema(example = "pi_3Nq8")]
    pub payment_id: String,
    pub account_id: uuid::Uuid,
    pub kind: PaymentKindRequest,
    /// The net amount, a decimal string exact to the currency's minor unit.
    #[schema(example = "19.99")]
    pub amount: String,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    pub currency: String,
    /// RFC 3339.
    #[schema(value_type = String, example = "2026-10-05T12:00:00Z")]
    pub paid_at: DateTime<Utc>,
    /// Credits bought, for `credit_pack` payments (required there, refused otherwise).
    pub credits: Option<u64>,
    /// The subscription paid for, for `subscription` payments; the account id when
    /// absent (one subscription per account).
    pub subscription_id: Option<String>,
    /// The processor's fingerprint of the card paid with, for the self-referral check
    /// (keyed before it is stored).
    pub payment_fingerprint: Option<String>,
}

/// A [`RecordPaymentRequest`] whose values are valid.
#[derive(Debug, Clone, Serialize)]
pub struct ValidPayment {
    pub payment_id: PaymentId,
    pub account_id: AccountId,
    pub kind: PaymentKind,
    pub amount: Money,
    pub paid_at: DateTime<Utc>,
}

impl RecordPaymentRequest {
    /// `payer_since`: when the payer's account opened, if it exists.
    pub fn validate(&self, payer_since: Option<Since>) -> Result<ValidPayment, ApiError> {
        let amount = positive_money(&self.amount, &self.currency)?;
        let account_id = AccountId::new(self.account_id)?;
        let kind = match (self.kind, self.credits) {
            (PaymentKindRequest::CreditPack, Some(credits)) => PaymentKind::CreditPack {
                credits: super::accounts::positive_credits(credits)?,
            },
            (PaymentKindRequest::CreditPack, None) => {
                return Err(ApiError::validation(
                    "credits: a credit_pack payment must say how many credits it bought",
                ))
            }
            (PaymentKindRequest::Subscription, Some(_)) => {
                return Err(ApiError::validation(
                    "credits: only a credit_pack payment buys credits",
                ))
            }
            (PaymentKindRequest::Subscription, None) => PaymentKind::Subscription {
                subscription_id: SubscriptionId::parse(
                    self.subscription_id
                        .as_deref()
                        .unwrap_or(&account_id.to_string()),
                )?,
            },
        };
        if self.subscription_id.is_some() && self.kind != PaymentKindRequest::Subscription {
            return Err(ApiError::validation(
                "subscription_id: only a subscription payment names a subscription",
            ));
        }
        Ok(ValidPayment {
            payment_id: PaymentId::parse(&self.payment_id)?,
            account_id,
            kind,
            amount,
            paid_at: stated_time("paid_at", Some(self.paid_at), payer_since)?,
        })
    }
}

/// The pattern of an amount in a request: digits, optionally a point and more digits.
pub const AMOUNT_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?$";

/// An amount written plainly: digits, optionally a point and more digits. Signs,
/// exponents (`1e3`) and spaces are refused at the edge rather than interpreted.
pub fn plain_amount(amount: &str) -> Result<rust_decimal::Decimal, ApiError> {
    let (whole, fraction) = amount.split_once('.').unwrap_or((amount, "0"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    let refused = || {
        ApiError::validation(format!(
            "amount: {} must be a positive decimal string like \"19.99\"",
            super::error::echo(amount)
        ))
    };
    if !digits(whole) || !digits(fraction) {
        return Err(refused());
    }
    amount.parse().map_err(|_| refused())
}

/// An amount that is valid, [`plain_amount`] and more than zero.
pub fn positive_money(amount: &str, currency: &str) -> Result<Money, ApiError> {
    plain_amount(amount)?;
    let money = Money::parse(amount, currency)?;
    if !money.is_positive() {
        return Err(ApiError::validation(format!(
            "amount: {} must be more than zero",
            super::error::echo(amount)
        )));
    }
    Ok(money)
}

/// A commission a payment earned for someone up the payer's referral chain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EarnedCommissionView {
    pub beneficiary_id: uuid::Uuid,
    /// 1 for the payer's referrer, 2 for theirs, ...
    pub level: u8,
    /// The plan's rate for the level, a decimal string (`"0.20"`).
    pub rate: String,
    pub plan_version: u32,
    pub amount: String,
    pub currency: String,
    /// When the hold ends and the commission becomes payable (RFC 3339).
    pub payable_at: String,
}

impl From<&CommissionEarned> for EarnedCommissionView {
    fn from(earned: &CommissionEarned) -> EarnedCommissionView {
        EarnedCommissionView {
            beneficiary_id: earned.beneficiary.as_uuid(),
            level: earned.level,
            rate: earned.rate.as_decimal().to_string(),
            plan_version: earned.plan_version.get(),
            amount: earned.amount.amount().to_string(),
            currency: earned.amount.currency().code().to_owned(),
            payable_at: rfc3339(earned.hold_until),
        }
    }
}

/// `201` to `POST /v1/payments` (`200` for a repeat).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentRecordedResponse {
    pub payment_id: String,
    pub commissions: Vec<EarnedCommissionView>,
}

/// Why money went back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    Refund,
    Chargeback,
}

/// `POST /v1/payments/{payment_id}/refunds`
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// The processor's refund or dispute id; the command's idempotency key.
    #[schema(example = "re_1Abc")]
    pub refund_id: String,
    #[schema(example = "5.00")]
    pub amount: String,
    /// The payment's currency; when absent, the payment's currency is assumed.
    pub currency: Option<String>,
    pub reason: RefundReason,
    #[schema(value_type = String, example = "2026-10-09T08:00:00Z")]
    pub refunded_at: DateTime<Utc>,
}

impl RefundRequest {
    pub fn refund_id(&self) -> Result<RefundId, ApiError> {
        Ok(RefundId::parse(&self.refund_id)?)
    }
}

/// A commission clawed back by a refund or chargeback.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReversalView {
    pub beneficiary_id: uuid::Uuid,
    pub level: u8,
    pub amount: String,
    pub currency: String,
}

impl From<&CommissionReversed> for ReversalView {
    fn from(reversed: &CommissionReversed) -> ReversalView {
        ReversalView {
            beneficiary_id: reversed.beneficiary.as_uuid(),
            level: reversed.level,
            amount: reversed.amount.amount().to_string(),
            currency: reversed.amount.currency().code().to_owned(),
        }
    }
}

/// `201` to a refund (`200` for a repeat).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RefundRecordedResponse {
    pub refund_id: String,
    pub reversed: Vec<ReversalView>,
}

/// Records a payment and the commissions it funds up the payer's referral chain.
#[utoipa::path(
    post, path = "/v1/payments", tag = "billing",
    request_body = RecordPaymentRequest,
    responses(
        (status = 201, description = "Recorded, with its commissions", body = PaymentRecordedResponse),
        (status = 200, description = "A repeat of an earlier identical payment", body = PaymentRecordedResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 409, description = "`payment_exists` or `idempotency_conflict`", body = Problem),
        (status = 422, description = "`currency_mismatch`, `account_not_found`, ...", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn record_payment(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RecordPaymentRequest>,
) -> Result<Response, ApiError> {
    // A payment is a fact about its payer: not dated before they signed up, and for a
    // subscription they started (the ledger refuses a payer that does not exist).
    let payer = AccountId::new(request.account_id)?;
    let named = request
        .subscription_id
        .as_deref()
        .map(SubscriptionId::parse)
        .transpose()?;
    let facts = state
        .ledger
        .with_account(payer, |account| {
            account.map(|account| {
                let since = Since {
                    what: "the account opened",
                    at: account.opened.opened_at,
                };
                let subscribed = named
                    .as_ref()
                    .is_none_or(|id| account.subscriptions.contains_key(id));
                (since, subscribed)
            })
        })
        .await?;
    let valid = request.validate(facts.map(|(since, _)| since))?;
    if let (Some((_, false)), Some(named)) = (facts, &named) {
        return Err(ApiError::Rejected {
            status: StatusCode::NOT_FOUND,
            code: "subscription_not_found",
            detail: format!(
                "subscription_id: account {payer} has no subscription {named}; start it with \
                 POST /v1/accounts/{payer}/subscriptions first"
            ),
        });
    }
    let key = CommandKey::new("payment", valid.payment_id.as_str(), "payment_id")?;
    let mut locks = vec![streams::payment(&valid.payment_id).to_string()];
    if matches!(valid.kind, PaymentKind::CreditPack { .. }) {
        locks.push(streams::account(valid.account_id).to_string());
    }
    let payment_fingerprint = request
        .payment_fingerprint
        .as_deref()
        .map(|card| fingerprint_token(state.ledger.vault(), FingerprintKind::Payment, card))
        .transpose()?;
    let ledger = state.ledger.clone();
    // No idempotency-table record: the ledger finds a payment a retry repeats (the same
    // parsed details: "5.0" and "5.00" are one amount) and refuses its id with other
    // details (`payment_exists`), and the answer is the payment's commissions as the log
    // holds them. One fsync per payment instead of two; see docs/API.md.
    answered_from_log(&state, key, locks, |meta| async move {
        let command = RecordPayment {
            payment_id: valid.payment_id.clone(),
            account_id: valid.account_id,
            kind: valid.kind,
            amount: valid.amount,
            payment_fingerprint,
            received_at: valid.paid_at,
        };
        let outcome = ledger.record_payment(meta, &command).await?;
        let payment = ledger
            .payment(&valid.payment_id)
            .await?
            .ok_or_else(|| ApiError::internal("a recorded payment does not read back"))?;
        let response = PaymentRecordedResponse {
            payment_id: valid.payment_id.to_string(),
            commissions: payment
                .commissions
                .iter()
                .map(|commission| EarnedCommissionView::from(&commission.earned))
                .collect(),
        };
        Ok((
            fresh_or_repeat(&outcome, StatusCode::CREATED),
            body(&response)?,
        ))
    })
    .await
}

/// Records a refund or chargeback and claws back the commissions it funded, in proportion.
#[utoipa::path(
    post, path = "/v1/payments/{payment_id}/refunds", tag = "billing",
    params(("payment_id" = String, Path, description = "The processor's payment id")),
    request_body = RefundRequest,
    responses(
        (status = 201, description = "Recorded, with the commissions reversed", body = RefundRecordedResponse),
        (status = 200, description = "A repeat of an earlier identical refund", body = RefundRecordedResponse),
        (status = 400, description = "Invalid request", body = Problem),
        (status = 404, description = "`payment_not_found`", body = Problem),
        (status = 409, description = "`idempotency_conflict`", body = Problem),
        (status = 422, description = "`refund_exceeds_payment`: nothing was recorded", body = Problem),
    ),
    security(("billing" = []))
)]
pub async fn refund_payment(
    _: Authorized<BillingOnly>,
    State(state): State<AppState>,
    ApiPath(payment_id): ApiPath<String>,
    ApiJson(request): ApiJson<RefundRequest>,
) -> Result<Response, ApiError> {
    let payment_id = PaymentId::parse(&payment_id)?;
    let refund_id = request.refund_id()?;
    // Not before the payment either: the ledger refuses that (`refund_before_payment`).
    let refunded_at = stated_time("refunded_at", Some(request.refunded_at), None)?;
    let key = CommandKey::new("refund", &format!("{payment_id}/{refund_id}"), "refund_id")?;
    let stream = streams::payment(&payment_id);
    let ledger = state.ledger.clone();
    let store = state.store.clone();
    // No idempotency-table record, as for payments: the ledger finds the refund a retry
    // repeats (the same kind, parsed amount and time) and refuses its id with other
    // details (`idempotency_conflict`); the answer is the clawbacks the log holds for it.
    answered_from_log(&state, key, vec![stream.to_string()], |meta| async move {
        let payment = ledger
            .payment(&payment_id)
            .await?
            .ok_or_else(|| ApiError::Rejected {
                status: StatusCode::NOT_FOUND,
                code: "payment_not_found",
                detail: format!("payment {payment_id} does not exist"),
            })?;
        let currency = request
            .currency
            .clone()
            .unwrap_or_else(|| payment.received.amount.currency().code().to_owned());
        let command = RefundPayment {
            payment_id: payment_id.clone(),
            refund_id: refund_id.clone(),
            kind: match request.reason {
                RefundReason::Refund => RefundKind::Refund,
                RefundReason::Chargeback => RefundKind::Chargeback,
            },
            amount: positive_money(&request.amount, &currency)?,
            refunded_at,
        };
        let outcome = ledger.refund_payment(meta, &command).await?;
        let response = RefundRecordedResponse {
            refund_id: refund_id.to_string(),
            reversed: reversals_of(store.as_ref(), &payment_id, &refund_id)
                .await?
                .iter()
                .map(ReversalView::from)
                .collect(),
        };
        Ok((
            fresh_or_repeat(&outcome, StatusCode::CREATED),
            body(&response)?,
        ))
    })
    .await
}

/// The clawbacks a refund caused, read from the payment's stream (a payment takes a
/// bounded number of refunds, so the stream is short).
async fn reversals_of(
    store: &dyn EventStore,
    payment_id: &PaymentId,
    refund_id: &RefundId,
) -> Result<Vec<CommissionReversed>, ApiError> {
    let stream = streams::payment(payment_id);
    let mut reversals = Vec::new();
    let mut from = 0;
    loop {
        let page = store
            .read_stream(
                &stream,
                StreamFrom::Revision(from),
                Direction::Forward,
                PAGE_SIZE_MAX,
            )
            .await?;
        for recorded in &page {
            // Redacted: the payment's sealed card fingerprint is not needed here, and
            // would not parse as a plain event.
            let event = decode_redacted(recorded).map_err(ApiError::internal)?;
            if let DomainEvent::CommissionReversed(reversed) = event {
                if reversed.refund_id == *refund_id {
                    reversals.push(reversed);
                }
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE_SIZE_MAX => from = last.revision + 1,
            _ => return Ok(reversals),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::parse_json;

    fn request(body: serde_json::Value) -> Result<ValidPayment, ApiError> {
        parse_json::<RecordPaymentRequest>(body.to_string().as_bytes())?.validate(None)
    }

    fn payment(amount: &str, currency: &str) -> serde_json::Value {
        serde_json::json!({
            "payment_id": "pi_1", "account_id": "0b7c6f4e-5d1a-4b8e-9a3f-2c1d0e9f8a7b",
            "kind": "subscription", "amount": amount, "currency": currency,
            "paid_at": "2026-10-05T12:00:00Z",
        })
    }

    fn detail(result: Result<ValidPayment, ApiError>) -> String {
        match result {
            Err(ApiError::Validation { detail }) => detail,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn amounts_must_be_positive_exact_and_in_a_known_currency() {
        let valid = request(payment("19.99", "EUR")).unwrap();
        assert_eq!(valid.amount.amount().to_string(), "19.99");
        assert!(detail(request(payment("-1.00", "EUR"))).starts_with("amount:"));
        assert!(detail(request(payment("0", "EUR"))).starts_with("amount:"));
        assert!(detail(request(payment("1.001", "EUR"))).starts_with("amount:"));
        assert!(detail(request(payment("1e3", "EUR"))).starts_with("amount:"));
        assert!(detail(request(payment("10.00", "XXQ"))).starts_with("currency:"));
    }

    #[test]
    fn credits_belong_to_credit_packs_only() {
        let mut pack = payment("9.00", "EUR");
        pack["kind"] = "credit_pack".into();
        assert!(detail(request(pack.clone())).starts_with("credits:"));
        pack["credits"] = 100.into();
        assert!(matches!(
            request(pack).unwrap().kind,
            PaymentKind::CreditPack { credits } if credits.units() == 100
        ));
        let mut subscription = payment("9.00", "EUR");
        subscription["credits"] = 100.into();
        assert!(detail(request(subscription)).starts_with("credits:"));
    }

    #[test]
    fn times_must_be_rfc3339() {
        let mut body = payment("9.00", "EUR");
        body["paid_at"] = "yesterday".into();
        assert!(detail(request(body)).starts_with("paid_at:"));
    }
}
