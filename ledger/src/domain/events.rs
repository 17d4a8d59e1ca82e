//! The domain events: facts, named in the past tense, each with a JSON shape that is a
//! promise kept forever.
//!
//! In the store an event is its type name ([`DomainEvent::event_type`]), a schema version
//! ([`DomainEvent::schema_version`]) and a JSON payload: the event's own struct, without a
//! type tag (the tag lives in the store's `event_type`). Reading goes through [`upcast`],
//! the one place where an old shape is turned into the current one. `fixtures/events/`
//! holds one golden payload per event type and version; a test reads every one of them.
//!
//! Serialized as a whole (the API, projections' debugging), [`DomainEvent`] carries its
//! type in a `"type"` field.

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::credits::Credits;
use super::ids::{
    AccountId, Fingerprint, GrantId, OrganisationId, PaymentId, PayoutReference, PersonaId,
    ProductId, ReferralCode, RefundId, ReservationId, SpendId, SubscriptionId,
};
use super::money::{decimal_string, Money, Rate};
use super::period::Period;
use super::plan::PlanVersion;
use super::ValueError;
pub use crate::privacy::events::{
    ErasureRequested, LegalHoldLifted, LegalHoldPlaced, ProcessingRestricted,
    ProcessingRestrictionLifted, RetainedDataShredded, SubjectErased,
};
use crate::store::{EventMetadata, EventType, NewEvent};

/// Longest name, in characters.
pub const NAME_LENGTH_MAX: usize = 200;
/// Longest email address, in bytes (RFC 5321).
pub const EMAIL_LENGTH_MAX: usize = 320;
/// Longest free-text reason (a payout failure), in bytes.
pub const REASON_LENGTH_MAX: usize = 500;

/// Personal data of an account holder, kept apart from every other field so the privacy
/// layer can encrypt it with the subject's key (crypto-shredding). Its `Debug` prints
/// nothing personal, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PersonalDataJson", into = "PersonalDataJson")]
pub struct PersonalData {
    name: String,
    email: String,
    signup_ip: std::net::IpAddr,
}

#[derive(Serialize, Deserialize)]
struct PersonalDataJson {
    name: String,
    email: String,
    signup_ip: String,
}

impl PersonalData {
    pub fn parse(name: &str, email: &str, signup_ip: &str) -> Result<PersonalData, ValueError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > NAME_LENGTH_MAX
            || name.chars().any(char::is_control)
        {
            return Err(ValueError::new(
                "name",
                format!(
                    "a name must be 1 to {NAME_LENGTH_MAX} characters without control characters"
                ),
            ));
        }
        let email = email.trim();
        let plausible = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        });
        if !plausible
            || email.len() > EMAIL_LENGTH_MAX
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ValueError::new(
                "email",
                format!("an email address must look like name@example.org and be at most {EMAIL_LENGTH_MAX} bytes"),
            ));
        }
        let signup_ip = signup_ip.trim().parse().map_err(|_| {
            ValueError::new("signup_ip", "the signup IP must be an IPv4 or IPv6 address")
        })?;
        Ok(PersonalData {
            name: name.to_owned(),
            email: email.to_owned(),
            signup_ip,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn email(&self) -> &str {
        &self.email
    }

    pub fn signup_ip(&self) -> std::net::IpAddr {
        self.signup_ip
    }
}

impl fmt::Debug for PersonalData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersonalData(<redacted>)")
    }
}

impl TryFrom<PersonalDataJson> for PersonalData {
    type Error = ValueError;
    fn try_from(json: PersonalDataJson) -> Result<Self, Self::Error> {
        PersonalData::parse(&json.name, &json.email, &json.signup_ip)
    }
}

impl From<PersonalData> for PersonalDataJson {
    fn from(data: PersonalData) -> Self {
        PersonalDataJson {
            name: data.name,
            email: data.email,
            signup_ip: data.signup_ip.to_string(),
        }
    }
}

/// Why a referral is suspect. A flagged referral is recorded; commissions that flow
/// through it are held for review.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FraudFlag {
    /// The referee's email fingerprint equals the referrer's.
    SelfReferralEmail,
    /// The referee paid with a payment method the referrer used.
    SelfReferralPaymentMethod,
    /// The referee signed up from the referrer's signup IP within the window.
    SelfReferralIp,
    /// The referrer exceeded the referrals-per-day limit.
    ReferralVelocity,
}

impl FraudFlag {
    pub fn code(self) -> &'static str {
        match self {
            FraudFlag::SelfReferralEmail => "self_referral_email",
            FraudFlag::SelfReferralPaymentMethod => "self_referral_payment_method",
            FraudFlag::SelfReferralIp => "self_referral_ip",
            FraudFlag::ReferralVelocity => "referral_velocity",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountOpened {
    pub account_id: AccountId,
    /// The account's own code, which others sign up with.
    pub referral_code: ReferralCode,
    /// Who referred this account, resolved from the code it signed up with.
    pub referrer: Option<AccountId>,
    pub referred_with_code: Option<ReferralCode>,
    /// Empty unless the referral is suspect.
    pub fraud_flags: Vec<FraudFlag>,
    pub personal_data: PersonalData,
    pub email_fingerprint: Fingerprint,
    pub ip_fingerprint: Fingerprint,
    pub payment_fingerprint: Option<Fingerprint>,
    pub opened_at: DateTime<Utc>,
}

/// In the referrer's stream: it referred someone. Lets the referrer's own state count
/// referrals per day (velocity) and serializes concurrent signups under one referrer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralRecorded {
    pub referrer: AccountId,
    pub referee: AccountId,
    pub fraud_flags: Vec<FraudFlag>,
    pub recorded_at: DateTime<Utc>,
}

/// In `referral-code-{code}`: the code belongs to this account, first come first served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralCodeClaimed {
    pub referral_code: ReferralCode,
    pub account_id: AccountId,
    pub claimed_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalDataCorrected {
    pub account_id: AccountId,
    pub personal_data: PersonalData,
    pub email_fingerprint: Fingerprint,
    pub corrected_at: DateTime<Utc>,
}

/// Why credits were given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantReason {
    SubscriptionAllowance,
    Promotion,
    ReferralBonus,
    Goodwill,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsGranted {
    pub account_id: AccountId,
    pub grant_id: GrantId,
    pub credits: Credits,
    pub reason: GrantReason,
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_at: DateTime<Utc>,
}

/// A paid credit pack arrived in the wallet; a grant like any other for draw-down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsPurchased {
    pub account_id: AccountId,
    pub grant_id: GrantId,
    pub payment_id: PaymentId,
    pub credits: Credits,
    pub expires_at: Option<DateTime<Utc>>,
    pub purchased_at: DateTime<Utc>,
}

/// How much of one grant a spend used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantDraw {
    pub grant_id: GrantId,
    pub credits: Credits,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsSpent {
    pub account_id: AccountId,
    pub spend_id: SpendId,
    pub persona: PersonaId,
    pub credits: Credits,
    /// The grants drawn down, earliest expiry first, then oldest; sums to `credits`.
    pub drawn: Vec<GrantDraw>,
    pub spent_at: DateTime<Utc>,
}

/// The exact remainder of a grant past its expiry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsExpired {
    pub account_id: AccountId,
    pub grant_id: GrantId,
    pub credits: Credits,
    pub expired_at: DateTime<Utc>,
}

/// Credits set aside for a reply whose cost is known only after it is generated (an
/// authorisation, like TigerBeetle's pending transfer). They leave the available balance at
/// once and stay on the account, held in the grants they were drawn from, until the
/// reservation is captured, voided or expires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsReserved {
    pub account_id: AccountId,
    pub reservation_id: ReservationId,
    pub credits: Credits,
    /// The AI specialist the reply is for, when known; a capture spends with it.
    pub persona: Option<PersonaId>,
    /// The grants held, earliest expiry first, then oldest; sums to `credits`.
    pub drawn: Vec<GrantDraw>,
    /// Not captured by then, the reservation releases itself (`ReservationExpired`).
    pub expires_at: DateTime<Utc>,
    pub reserved_at: DateTime<Utc>,
}

/// A reservation settled: `credits` of it are spent (as a spend is, with the reservation's
/// persona) and the rest is released to the grants it was held in, in one event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationCaptured {
    pub account_id: AccountId,
    pub reservation_id: ReservationId,
    pub persona: Option<PersonaId>,
    /// Spent: at most what was reserved, more than zero.
    pub credits: Credits,
    /// The grants spent from, the reservation's first draws first; sums to `credits`.
    pub drawn: Vec<GrantDraw>,
    /// What was reserved and not spent, back in its grants.
    pub released: Vec<GrantDraw>,
    pub captured_at: DateTime<Utc>,
}

/// A reservation called off: every credit of it is released.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationVoided {
    pub account_id: AccountId,
    pub reservation_id: ReservationId,
    /// Released: the whole reservation.
    pub credits: Credits,
    pub released: Vec<GrantDraw>,
    pub voided_at: DateTime<Utc>,
}

/// A reservation not captured by its expiry released itself, for exactly what it held.
/// `expired_at` is the reservation's own `expires_at`, whoever records it (the server's
/// sweeper, or the next command on the account), so the event is the same either way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationExpired {
    pub account_id: AccountId,
    pub reservation_id: ReservationId,
    pub credits: Credits,
    pub released: Vec<GrantDraw>,
    pub expired_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionStarted {
    pub account_id: AccountId,
    pub subscription_id: SubscriptionId,
    pub product: ProductId,
    pub started_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionCancelled {
    pub account_id: AccountId,
    pub subscription_id: SubscriptionId,
    pub cancelled_at: DateTime<Utc>,
}

/// What a payment paid for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PaymentKind {
    Subscription { subscription_id: SubscriptionId },
    CreditPack { credits: Credits },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentReceived {
    pub payment_id: PaymentId,
    /// The payer.
    pub account_id: AccountId,
    pub kind: PaymentKind,
    /// The net amount commissions are computed on.
    pub amount: Money,
    pub payment_fingerprint: Option<Fingerprint>,
    pub received_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub payment_id: PaymentId,
    pub refund_id: RefundId,
    pub amount: Money,
    /// Refunds and chargebacks of this payment so far, this one included.
    pub refunded_total: Money,
    pub refunded_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentChargedBack {
    pub payment_id: PaymentId,
    pub chargeback_id: RefundId,
    pub amount: Money,
    /// Refunds and chargebacks of this payment so far, this one included.
    pub refunded_total: Money,
    pub charged_back_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionEarned {
    pub payment_id: PaymentId,
    pub beneficiary: AccountId,
    pub payer: AccountId,
    /// 1 for the payer's referrer, 2 for theirs, ...
    pub level: u8,
    pub rate: Rate,
    pub plan_version: PlanVersion,
    /// The payment's net amount the rate applied to.
    pub base_amount: Money,
    pub amount: Money,
    /// `base_amount × rate − amount`: what half-even rounding removed.
    #[serde(with = "decimal_string")]
    pub rounding: Decimal,
    pub earned_at: DateTime<Utc>,
    /// Payable from this instant on (the refund window), unless held for review.
    pub hold_until: DateTime<Utc>,
    pub held_for_review: bool,
    /// Why it is held: the fraud flags on the referral path it flows through.
    pub review_reasons: Vec<FraudFlag>,
}

/// A clawback: part of a commission taken back because its payment was refunded or
/// charged back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionReversed {
    pub payment_id: PaymentId,
    pub beneficiary: AccountId,
    pub level: u8,
    /// The refund or chargeback that caused it.
    pub refund_id: RefundId,
    pub amount: Money,
    #[serde(with = "decimal_string")]
    pub rounding: Decimal,
    pub reversed_at: DateTime<Utc>,
}

/// A commission held for review was cleared: it becomes payable once its hold ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionReleased {
    pub payment_id: PaymentId,
    pub beneficiary: AccountId,
    pub level: u8,
    pub released_at: DateTime<Utc>,
}

/// A commission held for review was refused: what was left of it is taken back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionForfeited {
    pub payment_id: PaymentId,
    pub beneficiary: AccountId,
    pub level: u8,
    /// What was left of the commission after clawbacks.
    pub amount: Money,
    pub forfeited_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionPlanPublished {
    pub version: PlanVersion,
    /// Rate per upline level; index 0 is level 1.
    pub level_rates: Vec<Rate>,
    pub hold_days: u32,
    pub minimum_payout: Money,
    pub effective_from: DateTime<Utc>,
    pub published_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutScheduled {
    pub period: Period,
    pub affiliate: AccountId,
    pub amount: Money,
    /// The instant the payable balance was taken at.
    pub as_of: DateTime<Utc>,
    pub scheduled_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutSent {
    pub period: Period,
    pub affiliate: AccountId,
    pub amount: Money,
    pub reference: PayoutReference,
    pub sent_at: DateTime<Utc>,
}

/// The payout did not reach the affiliate; its amount is payable again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutFailed {
    pub period: Period,
    pub affiliate: AccountId,
    pub amount: Money,
    pub reason: String,
    pub failed_at: DateTime<Utc>,
}

/// A payout run finished: every payout it scheduled precedes this in the same append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRunCompleted {
    pub period: Period,
    pub as_of: DateTime<Utc>,
    pub minimum_payout: Money,
    pub payouts: u32,
    pub total: Money,
    pub completed_at: DateTime<Utc>,
}

/// A share of a period's net revenue set aside for an organisation. No user data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonationAllocated {
    pub period: Period,
    pub organisation: OrganisationId,
    pub net_revenue: Money,
    pub share: Rate,
    pub amount: Money,
    #[serde(with = "decimal_string")]
    pub rounding: Decimal,
    pub allocated_at: DateTime<Utc>,
}

/// Why a stored event could not be read as a domain event.
#[derive(Debug, thiserror::Error)]
pub enum UpcastError {
    #[error("unknown event type {event_type:?}")]
    UnknownEventType { event_type: String },
    #[error("{event_type} has no schema version {schema_version} (current is {current})")]
    UnknownSchemaVersion {
        event_type: String,
        schema_version: u16,
        current: u16,
    },
    #[error("{event_type} v{schema_version} payload does not match its shape: {source}")]
    InvalidPayload {
        event_type: String,
        schema_version: u16,
        #[source]
        source: serde_json::Error,
    },
}

macro_rules! domain_events {
    ($($name:ident = $version:literal),* $(,)?) => {
        /// Every domain event. Serialized whole, the type is in a `"type"` field.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum DomainEvent {
            $($name($name),)*
        }

        /// Every event type with its current schema version.
        pub const EVENT_TYPES: &[(&str, u16)] = &[$((stringify!($name), $version),)*];

        impl DomainEvent {
            /// The store's event type name.
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(DomainEvent::$name(_) => stringify!($name),)*
                }
            }

            /// The schema version this code writes.
            pub fn schema_version(&self) -> u16 {
                match self {
                    $(DomainEvent::$name(_) => $version,)*
                }
            }

            /// The payload: the event's own JSON, without the type tag.
            pub fn payload_json(&self) -> serde_json::Value {
                let value = match self {
                    $(DomainEvent::$name(event) => serde_json::to_value(event),)*
                };
                value.expect("domain events always serialize")
            }
        }

        /// Decodes a payload written at the current version.
        fn decode_current(
            event_type: &str,
            payload: serde_json::Value,
        ) -> Option<Result<DomainEvent, serde_json::Error>> {
            match event_type {
                $(stringify!($name) => Some(serde_json::from_value::<$name>(payload).map(DomainEvent::$name)),)*
                _ => None,
            }
        }
    };
}

domain_events! {
    AccountOpened = 1,
    ReferralRecorded = 1,
    ReferralCodeClaimed = 1,
    PersonalDataCorrected = 1,
    CreditsGranted = 1,
    CreditsPurchased = 1,
    CreditsSpent = 1,
    CreditsExpired = 1,
    CreditsReserved = 1,
    ReservationCaptured = 1,
    ReservationVoided = 1,
    ReservationExpired = 1,
    SubscriptionStarted = 1,
    SubscriptionCancelled = 1,
    PaymentReceived = 1,
    PaymentRefunded = 1,
    PaymentChargedBack = 1,
    CommissionEarned = 1,
    CommissionReversed = 1,
    CommissionReleased = 1,
    CommissionForfeited = 1,
    CommissionPlanPublished = 1,
    PayoutScheduled = 1,
    PayoutSent = 1,
    PayoutFailed = 1,
    PayoutRunCompleted = 1,
    DonationAllocated = 1,
    // Privacy: defined (with their JSON shapes) in `crate::privacy::events`.
    ErasureRequested = 1,
    SubjectErased = 1,
    RetainedDataShredded = 1,
    LegalHoldPlaced = 1,
    LegalHoldLifted = 1,
    ProcessingRestricted = 1,
    ProcessingRestrictionLifted = 1,
}

impl DomainEvent {
    /// The event as the store takes it.
    pub fn to_new_event(&self, id: Uuid, metadata: EventMetadata) -> NewEvent {
        NewEvent {
            id,
            event_type: EventType::parse(self.event_type()).expect("event type names are valid"),
            schema_version: self.schema_version(),
            metadata,
            payload: serde_json::to_vec(&self.payload_json()).expect("JSON values serialize"),
        }
    }
}

/// Reads a stored payload of any known version as the current [`DomainEvent`].
///
/// This is the upcasting hook: when an event's shape changes, its version goes up in
/// [`EVENT_TYPES`], the old shape's fixture stays in `fixtures/events/`, and a step here
/// rewrites the old JSON into the next version's before decoding. No step exists yet:
/// every type is at version 1.
pub fn upcast(
    event_type: &str,
    schema_version: u16,
    payload: &[u8],
) -> Result<DomainEvent, UpcastError> {
    let Some(&(_, current)) = EVENT_TYPES.iter().find(|(name, _)| *name == event_type) else {
        return Err(UpcastError::UnknownEventType {
            event_type: event_type.to_owned(),
        });
    };
    if schema_version == 0 || schema_version > current {
        return Err(UpcastError::UnknownSchemaVersion {
            event_type: event_type.to_owned(),
            schema_version,
            current,
        });
    }
    let invalid = |source| UpcastError::InvalidPayload {
        event_type: event_type.to_owned(),
        schema_version,
        source,
    };
    let json: serde_json::Value = serde_json::from_slice(payload).map_err(invalid)?;
    // Upcasting steps go here, oldest first: `if version == 1 { json = v1_to_v2(json) }`.
    decode_current(event_type, json)
        .expect("the event type was found in EVENT_TYPES")
        .map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/events")
    }

    /// Every event type at every version up to the current one has a golden payload, and
    /// it reads and writes back byte for byte (as JSON values): the shape is kept.
    #[test]
    fn golden_fixtures_read_and_round_trip() {
        let mut checked = 0;
        for &(event_type, current) in EVENT_TYPES {
            for version in 1..=current {
                let path = fixtures_dir().join(format!("{event_type}.v{version}.json"));
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|error| panic!("missing fixture {}: {error}", path.display()));
                let event = upcast(event_type, version, text.as_bytes())
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                assert_eq!(event.event_type(), event_type);
                if version == current {
                    let written: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(
                        event.payload_json(),
                        written,
                        "{} changed shape",
                        path.display()
                    );
                }
                checked += 1;
            }
        }
        assert_eq!(checked, EVENT_TYPES.len());
        // No stray fixture for a type or version the code does not know.
        for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let (event_type, rest) = name.split_once(".v").expect("fixture name is Type.vN.json");
            let version: u16 = rest.trim_end_matches(".json").parse().unwrap();
            assert!(
                EVENT_TYPES
                    .iter()
                    .any(|&(known, current)| known == event_type && version <= current),
                "fixture {name} names an unknown type or version"
            );
        }
    }

    #[test]
    fn upcast_rejects_unknown_types_versions_and_shapes() {
        assert!(matches!(
            upcast("AccountClosedForever", 1, b"{}"),
            Err(UpcastError::UnknownEventType { .. })
        ));
        assert!(matches!(
            upcast("PayoutSent", 2, b"{}"),
            Err(UpcastError::UnknownSchemaVersion { current: 1, .. })
        ));
        assert!(matches!(
            upcast("PayoutSent", 0, b"{}"),
            Err(UpcastError::UnknownSchemaVersion { .. })
        ));
        assert!(matches!(
            upcast("PayoutSent", 1, b"{\"period\":\"2026-13\"}"),
            Err(UpcastError::InvalidPayload { .. })
        ));
    }

    #[test]
    fn personal_data_never_shows_in_debug_output() {
        let data = PersonalData::parse("Ada Lovelace", "ada@example.org", "192.0.2.7").unwrap();
        let debug = format!("{data:?}");
        assert!(!debug.contains("Ada"));
        assert!(!debug.contains("example.org"));
        assert!(!debug.contains("192.0.2.7"));
        assert_eq!(
            PersonalData::parse("", "ada@example.org", "192.0.2.7")
                .unwrap_err()
                .field,
            "name"
        );
        assert_eq!(
            PersonalData::parse("Ada", "ada", "192.0.2.7")
                .unwrap_err()
                .field,
            "email"
        );
        assert_eq!(
            PersonalData::parse("Ada", "ada@example.org", "nope")
                .unwrap_err()
                .field,
            "signup_ip"
        );
    }

    #[test]
    fn whole_events_carry_their_type_tag() {
        let text = std::fs::read_to_string(fixtures_dir().join("PayoutSent.v1.json")).unwrap();
        let event = upcast("PayoutSent", 1, text.as_bytes()).unwrap();
        let whole = serde_json::to_value(&event).unwrap();
        assert_eq!(whole["type"], "PayoutSent");
        let back: DomainEvent = serde_json::from_value(whole).unwrap();
        assert_eq!(back, event);
    }
}
