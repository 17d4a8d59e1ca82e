//! The simulation as HTTP calls against a running server (`simulate --target`).
//!
//! The model needs to see what the ledger recorded for each command (a spend's
//! draw-down, a payment's held commissions, a run's payouts), which the API's responses
//! do not carry in full. So every command goes first through a *shadow* ledger in memory
//! (the direct path, the same domain code), whose events the model observes and the
//! summary counts, and then, as the matching request, to the server. The server decides
//! again on its own log; the test `http_mode_matches_direct_mode` and `simulate`'s
//! `--target` documentation compare the server's log with the shadow's summary.
//!
//! Requests run concurrently, at most `connections` at a time, in *lanes*: commands on
//! one account (its signup, wallet, subscriptions, payments and their refunds and
//! reviews) go in the order the model made them, each after the one before it on the
//! same lanes; a signup also waits for its referrer's lane (the velocity check reads the
//! referrer's stream). Commands that read the whole log or many streams (payout runs,
//! settlements, donations, the plan, erasures) are barriers: every request before them
//! has completed, and none after them starts until they have.
//!
//! Every request carries the command's natural id (account, grant, spend, payment,
//! refund, subscription, correction, erasure request; the period of a run or donation),
//! so a retry after a lost response or a `503` is answered with the first result and
//! records nothing twice: requests are retried, a bounded number of times, only on
//! transport failures and `502`/`503`/`504`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use ledger::domain::account::AccountCommand;
use ledger::domain::events::{DomainEvent, GrantReason, PaymentKind};
use ledger::domain::ids::{PaymentId, ReferralCode};
use ledger::domain::payment::{RefundKind, ReviewDecision};
use ledger::domain::payout::Settlement;
use ledger::domain::{AccountId, Money};
use ledger::store::EventStore;

use super::model::{SimCommand, Step};
use super::writer::{LedgerTarget, SendError, Target};
use crate::tokens::{Role, TokenSpec};

/// Most concurrent requests.
pub const CONNECTIONS_MAX: usize = 1_024;
/// Attempts of one request (the first and its retries).
pub const ATTEMPTS_MAX: u32 = 6;
/// The first retry's delay; each next one doubles it.
const RETRY_DELAY_FIRST: Duration = Duration::from_millis(50);
/// How long one request may take before it counts as failed (and is retried).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and as whom to send.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// The server's base URL, `http://HOST:PORT`.
    pub base: String,
    /// A token for each role the simulation needs: billing, finance, privacy, admin.
    pub tokens: Vec<TokenSpec>,
    pub connections: usize,
}

/// The roles whose tokens a simulation needs, and what for.
pub const ROLES_NEEDED: [(Role, &str); 4] = [
    (
        Role::Billing,
        "signups, credits, subscriptions, payments and refunds",
    ),
    (
        Role::Finance,
        "payout runs, settlements, reviews and donations",
    ),
    (Role::Privacy, "erasures"),
    (Role::Admin, "the plan change"),
];

impl HttpOptions {
    /// Checks the options, naming the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.base.starts_with("http://") || self.base.starts_with("https://")) {
            return Err(format!(
                "--target must be a URL like http://127.0.0.1:8080, got {:?}",
                self.base
            ));
        }
        if !(1..=CONNECTIONS_MAX).contains(&self.connections) {
            return Err(format!(
                "--connections must be 1 to {CONNECTIONS_MAX}, got {}",
                self.connections
            ));
        }
        for (role, purpose) in ROLES_NEEDED {
            if !self.tokens.iter().any(|token| token.role() == role) {
                return Err(format!(
                    "--token {role}:SECRET is missing (needed for {purpose})"
                ));
            }
        }
        Ok(())
    }

    fn secret(&self, role: Role) -> String {
        self.tokens
            .iter()
            .find(|token| token.role() == role)
            .map(|token| token.secret().to_owned())
            .expect("validated: a token for every role needed")
    }
}

/// One HTTP request of the simulation.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub role: Role,
    pub body: Value,
}

/// What the requests must wait for.
enum Order {
    /// After the earlier commands of these lanes (accounts).
    Lanes(Vec<AccountId>),
    /// After every earlier command, and before every later one.
    Barrier,
}

/// Sends each command through the shadow ledger, then to the server. See the module.
pub struct HttpTarget<'a, S> {
    shadow: LedgerTarget<'a, S>,
    client: reqwest::Client,
    base: String,
    secrets: HashMap<Role, String>,
    connections: u32,
    permits: Arc<Semaphore>,
    /// The last request on each lane: done when its value turns true.
    lanes: Mutex<HashMap<AccountId, watch::Receiver<bool>>>,
    /// Who owns a referral code, and who paid a payment: the lanes of later commands.
    codes: Mutex<HashMap<ReferralCode, AccountId>>,
    payers: Mutex<HashMap<PaymentId, AccountId>>,
    /// The first request that failed for good; later sends return it.
    failure: Arc<Mutex<Option<SendError>>>,
    requests: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
}

impl<'a, S: EventStore> HttpTarget<'a, S> {
    pub fn new(
        shadow: LedgerTarget<'a, S>,
        options: &HttpOptions,
    ) -> Result<HttpTarget<'a, S>, String> {
        options.validate()?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(options.connections)
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        let secrets = ROLES_NEEDED
            .iter()
            .map(|(role, _)| (*role, options.secret(*role)))
            .collect();
        let connections =
            u32::try_from(options.connections).expect("at most CONNECTIONS_MAX connections");
        Ok(HttpTarget {
            shadow,
            client,
            base: options.base.trim_end_matches('/').to_owned(),
            secrets,
            connections,
            permits: Arc::new(Semaphore::new(options.connections)),
            lanes: Mutex::default(),
            codes: Mutex::default(),
            payers: Mutex::default(),
            failure: Arc::default(),
            requests: Arc::default(),
            retries: Arc::default(),
        })
    }

    /// Requests answered with success so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests sent again after a transport failure or a `5xx` that may be transient.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    fn failed(&self) -> Result<(), SendError> {
        match &*self.failure.lock().expect("failure lock") {
            Some(error) => Err(copy_error(error)),
            None => Ok(()),
        }
    }

    fn order_of(&self, step: &Step) -> Order {
        match &step.command {
            SimCommand::OpenAccount(open) => {
                let mut lanes = vec![open.account_id];
                self.codes
                    .lock()
                    .expect("codes lock")
                    .insert(open.referral_code, open.account_id);
                if let Some(code) = open.referred_with_code {
                    if let Some(referrer) = self.codes.lock().expect("codes lock").get(&code) {
                        lanes.push(*referrer);
                    }
                }
                Order::Lanes(lanes)
            }
            SimCommand::Account(command) => Order::Lanes(vec![command.account_id]),
            SimCommand::RecordPayment(payment) => {
                self.payers
                    .lock()
                    .expect("payers lock")
                    .insert(payment.payment_id.clone(), payment.account_id);
                Order::Lanes(vec![payment.account_id])
            }
            SimCommand::RefundPayment(refund) => self.payer_lane(&refund.payment_id),
            SimCommand::ReviewCommission(review) => self.payer_lane(&review.payment_id),
            SimCommand::PublishPlan(_)
            | SimCommand::RunPayouts(_)
            | SimCommand::SettlePayout(_)
            | SimCommand::AllocateDonation(_)
            | SimCommand::RequestErasure { .. }
            | SimCommand::EraseSubject { .. } => Order::Barrier,
        }
    }

    fn payer_lane(&self, payment: &PaymentId) -> Order {
        match self.payers.lock().expect("payers lock").get(payment) {
            Some(payer) => Order::Lanes(vec![*payer]),
            None => Order::Barrier,
        }
    }

    fn sender(&self) -> Sender {
        Sender {
            client: self.client.clone(),
            base: self.base.clone(),
            secrets: self.secrets.clone(),
            requests: self.requests.clone(),
            retries: self.retries.clone(),
        }
    }

    /// Waits until every request sent so far has completed.
    async fn drain(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.permits
            .acquire_many(self.connections)
            .await
            .expect("the semaphore is never closed")
    }
}

#[async_trait]
impl<S: EventStore> Target for HttpTarget<'_, S> {
    async fn send(&self, step: &Step) -> Result<Vec<DomainEvent>, SendError> {
        self.failed()?;
        // The shadow decides first: what it refuses (a payout run over the limit) the
        // server would refuse too, and is not sent.
        let events = self.shadow.send(step).await?;
        let request = request_of(step)?;
        let command = step.command.name();
        match self.order_of(step) {
            Order::Barrier => {
                let _all = self.drain().await;
                self.failed()?;
                self.sender().send(command, &request).await?;
            }
            Order::Lanes(lanes) => {
                let permit = self
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed");
                let (done, finished) = watch::channel(false);
                let before: Vec<watch::Receiver<bool>> = {
                    let mut map = self.lanes.lock().expect("lanes lock");
                    lanes
                        .iter()
                        .filter_map(|lane| map.insert(*lane, finished.clone()))
                        .collect()
                };
                let sender = self.sender();
                let failure = self.failure.clone();
                tokio::spawn(async move {
                    for mut earlier in before {
                        // An error means the earlier task is gone, which it only is
                        // after it finished.
                        let _ = earlier.wait_for(|finished| *finished).await;
                    }
                    if let Err(error) = sender.send(command, &request).await {
                        failure.lock().expect("failure lock").get_or_insert(error);
                    }
                    let _ = done.send(true);
                    drop(permit);
                });
            }
        }
        Ok(events)
    }

    async fn finish(&self) -> Result<(), SendError> {
        let _all = self.drain().await;
        self.failed()
    }

    fn requests(&self) -> Option<u64> {
        Some(HttpTarget::requests(self))
    }
}

/// What a request task needs, owned.
struct Sender {
    client: reqwest::Client,
    base: String,
    secrets: HashMap<Role, String>,
    requests: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
}

impl Sender {
    /// Sends a request until it is answered, retrying transport failures and `502`,
    /// `503`, `504` (safe: every request carries its command's natural id).
    async fn send(&self, command: &'static str, request: &Request) -> Result<(), SendError> {
        let url = format!("{}{}", self.base, request.path);
        let secret = &self.secrets[&request.role];
        let mut delay = RETRY_DELAY_FIRST;
        let mut attempt = 1;
        loop {
            let sent = self
                .client
                .request(request.method.clone(), &url)
                .bearer_auth(secret)
                .json(&request.body)
                .send()
                .await;
            let transient = match sent {
                Ok(response) if response.status().is_success() => {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(response)
                    if matches!(
                        response.status(),
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    ) =>
                {
                    format!("{} {}", request.method, response.status())
                }
                Ok(response) => return Err(rejected(command, request, response).await),
                Err(error) => format!("{} {}: {error}", request.method, request.path),
            };
            if attempt == ATTEMPTS_MAX {
                return Err(SendError::Failed {
                    command,
                    message: format!("gave up after {ATTEMPTS_MAX} attempts: {transient}"),
                });
            }
            attempt += 1;
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
}

/// A refusal, with the problem's stable code (its `type`) and detail.
async fn rejected(
    command: &'static str,
    request: &Request,
    response: reqwest::Response,
) -> SendError {
    let status = response.status();
    let problem: Value = response.json().await.unwrap_or(Value::Null);
    let code = problem
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let detail = problem
        .get("detail")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    SendError::Rejected {
        command,
        code,
        message: format!(
            "the server answered {status} to {} {}: {detail}",
            request.method, request.path
        ),
    }
}

fn copy_error(error: &SendError) -> SendError {
    match error {
        SendError::Rejected {
            command,
            code,
            message,
        } => SendError::Rejected {
            command,
            code: code.clone(),
            message: message.clone(),
        },
        SendError::Failed { command, message } => SendError::Failed {
            command,
            message: message.clone(),
        },
    }
}

fn amount(money: &Money) -> Value {
    json!(money.amount().to_string())
}

fn currency(money: &Money) -> Value {
    json!(money.currency().code())
}

/// The request that carries `step`'s command, with its simulated time stated.
pub fn request_of(step: &Step) -> Result<Request, SendError> {
    let post = |path: String, role: Role, body: Value| Request {
        method: Method::POST,
        path,
        role,
        body,
    };
    let unsupported = |why: String| SendError::Failed {
        command: step.command.name(),
        message: why,
    };
    let request = match &step.command {
        SimCommand::OpenAccount(open) => {
            // The server gives every account the code derived from its id; the model
            // draws another only when two ids' codes collide (around a million accounts).
            if open.referral_code != ReferralCode::for_account(open.account_id) {
                return Err(unsupported(format!(
                    "account {} has a redrawn referral code, which the API cannot set",
                    open.account_id
                )));
            }
            let data = &open.personal_data;
            post(
                "/v1/accounts".to_owned(),
                Role::Billing,
                json!({
                    "account_id": open.account_id.as_uuid(),
                    "name": data.name(),
                    "email": data.email(),
                    "signup_ip": data.signup_ip().to_string(),
                    "referral_code": open.referred_with_code.map(|code| code.to_string()),
                    "payment_fingerprint": open.payment_fingerprint.as_ref().map(|card| card.as_str()),
                    "opened_at": open.opened_at,
                }),
            )
        }
        SimCommand::Account(command) => {
            let account = command.account_id;
            match &command.command {
                AccountCommand::CorrectPersonalData {
                    personal_data,
                    corrected_at,
                    ..
                } => post(
                    format!("/v1/accounts/{account}/personal-data"),
                    Role::Billing,
                    json!({
                        "correction_id": step.command_id.to_string(),
                        "name": personal_data.name(),
                        "email": personal_data.email(),
                        "signup_ip": personal_data.signup_ip().to_string(),
                        "corrected_at": corrected_at,
                    }),
                ),
                AccountCommand::StartSubscription {
                    subscription_id,
                    product,
                    started_at,
                } => post(
                    format!("/v1/accounts/{account}/subscriptions"),
                    Role::Billing,
                    json!({
                        "subscription_id": subscription_id.as_str(),
                        "product": product.as_str(),
                        "started_at": started_at,
                    }),
                ),
                AccountCommand::CancelSubscription {
                    subscription_id,
                    cancelled_at,
                } => post(
                    format!("/v1/accounts/{account}/subscriptions/{subscription_id}/cancellation"),
                    Role::Billing,
                    json!({ "cancelled_at": cancelled_at }),
                ),
                AccountCommand::GrantCredits {
                    grant_id,
                    credits,
                    reason,
                    expires_at,
                    granted_at,
                } => post(
                    format!("/v1/accounts/{account}/credits/grants"),
                    Role::Billing,
                    json!({
                        "grant_id": grant_id.as_str(),
                        "credits": credits.units(),
                        "reason": match reason {
                            GrantReason::SubscriptionAllowance => "subscription_allowance",
                            GrantReason::Promotion => "promotion",
                            GrantReason::ReferralBonus => "referral_bonus",
                            GrantReason::Goodwill => "goodwill",
                        },
                        "expires_at": expires_at,
                        "granted_at": granted_at,
                    }),
                ),
                AccountCommand::SpendCredits {
                    spend_id,
                    persona,
                    credits,
                    spent_at,
                } => post(
                    format!("/v1/accounts/{account}/credits/spend"),
                    Role::Billing,
                    json!({
                        "spend_id": spend_id.as_str(),
                        "credits": credits.units(),
                        "persona": persona.as_str(),
                        "spent_at": spent_at,
                    }),
                ),
                AccountCommand::ExpireCredits { expired_at } => post(
                    format!("/v1/accounts/{account}/credits/expirations"),
                    Role::Billing,
                    json!({ "expired_at": expired_at }),
                ),
                AccountCommand::ReserveCredits {
                    reservation_id,
                    credits,
                    persona,
                    expires_at,
                    reserved_at,
                } => post(
                    format!("/v1/accounts/{account}/credits/reservations"),
                    Role::Billing,
                    json!({
                        "reservation_id": reservation_id.as_str(),
                        "credits": credits.units(),
                        "persona": persona.as_ref().map(|persona| persona.as_str()),
                        "expires_at": expires_at,
                        "reserved_at": reserved_at,
                    }),
                ),
                AccountCommand::CaptureReservation {
                    reservation_id,
                    credits,
                    captured_at,
                } => post(
                    format!("/v1/accounts/{account}/credits/reservations/{reservation_id}/capture"),
                    Role::Billing,
                    json!({ "credits": credits.units(), "captured_at": captured_at }),
                ),
                AccountCommand::VoidReservation {
                    reservation_id,
                    voided_at,
                } => post(
                    format!("/v1/accounts/{account}/credits/reservations/{reservation_id}/void"),
                    Role::Billing,
                    json!({ "voided_at": voided_at }),
                ),
                AccountCommand::ExpireReservations { .. } => {
                    return Err(unsupported(
                        "reservations are expired by the server's sweeper".to_owned(),
                    ))
                }
                AccountCommand::PurchaseCredits { .. } => {
                    return Err(unsupported(
                        "credits are bought by recording a credit-pack payment".to_owned(),
                    ))
                }
            }
        }
        SimCommand::RecordPayment(payment) => {
            let (kind, credits, subscription_id) = match &payment.kind {
                PaymentKind::Subscription { subscription_id } => {
                    ("subscription", None, Some(subscription_id.as_str()))
                }
                PaymentKind::CreditPack { credits } => ("credit_pack", Some(credits.units()), None),
            };
            post(
                "/v1/payments".to_owned(),
                Role::Billing,
                json!({
                    "payment_id": payment.payment_id.as_str(),
                    "account_id": payment.account_id.as_uuid(),
                    "kind": kind,
                    "amount": amount(&payment.amount),
                    "currency": currency(&payment.amount),
                    "paid_at": payment.received_at,
                    "credits": credits,
                    "subscription_id": subscription_id,
                    "payment_fingerprint": payment.payment_fingerprint.as_ref().map(|card| card.as_str()),
                }),
            )
        }
        SimCommand::RefundPayment(refund) => post(
            format!("/v1/payments/{}/refunds", refund.payment_id),
            Role::Billing,
            json!({
                "refund_id": refund.refund_id.as_str(),
                "amount": amount(&refund.amount),
                "currency": currency(&refund.amount),
                "reason": match refund.kind {
                    RefundKind::Refund => "refund",
                    RefundKind::Chargeback => "chargeback",
                },
                "refunded_at": refund.refunded_at,
            }),
        ),
        SimCommand::ReviewCommission(review) => post(
            format!(
                "/v1/payments/{}/commissions/{}/review",
                review.payment_id, review.level
            ),
            Role::Finance,
            json!({
                "decision": match review.decision {
                    ReviewDecision::Release => "release",
                    ReviewDecision::Forfeit => "forfeit",
                },
                "reviewed_at": review.reviewed_at,
            }),
        ),
        SimCommand::PublishPlan(plan) => Request {
            method: Method::PUT,
            path: "/v1/plan".to_owned(),
            role: Role::Admin,
            body: json!({
                "version": plan.version.get(),
                "level_rates": plan
                    .level_rates
                    .iter()
                    .map(|rate| rate.as_decimal().to_string())
                    .collect::<Vec<_>>(),
                "hold_days": plan.hold_days,
                "minimum_payout": amount(&plan.minimum_payout),
                "currency": currency(&plan.minimum_payout),
                "effective_from": plan.effective_from,
                "published_at": plan.published_at,
            }),
        },
        SimCommand::RunPayouts(run) => post(
            "/v1/payout-runs".to_owned(),
            Role::Finance,
            json!({ "period": run.period.to_string(), "as_of": run.as_of }),
        ),
        SimCommand::SettlePayout(settle) => {
            let body = match &settle.settlement {
                Settlement::Sent { reference } => json!({
                    "status": "sent",
                    "reference": reference.as_str(),
                    "settled_at": settle.settled_at,
                }),
                Settlement::Failed { reason } => json!({
                    "status": "failed",
                    "reason": reason,
                    "settled_at": settle.settled_at,
                }),
            };
            post(
                format!(
                    "/v1/payouts/{}/{}/settlement",
                    settle.period, settle.affiliate
                ),
                Role::Finance,
                body,
            )
        }
        SimCommand::AllocateDonation(donation) => post(
            "/v1/donations".to_owned(),
            Role::Finance,
            json!({
                "period": donation.period.to_string(),
                "organisation": donation.organisation.as_str(),
                "share": donation.share.as_decimal().to_string(),
                "allocated_at": donation.allocated_at,
            }),
        ),
        // The API records an erasure request and carries it out in one call; the
        // model's later "carry it out" is the same request again, answered with the
        // first proof.
        SimCommand::RequestErasure {
            subject,
            request_id,
        }
        | SimCommand::EraseSubject {
            subject,
            request_id,
        } => post(
            "/v1/privacy/erasures".to_owned(),
            Role::Privacy,
            json!({ "account_id": subject.as_uuid(), "request_id": request_id }),
        ),
    };
    Ok(request)
}
