//! Identifiers: random account ids, referral codes, and the tokens other systems give us
//! (Stripe payment and refund ids, spend ids, grant ids). None is derived from personal data.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::ValueError;

/// Longest external token (payment id, refund id, spend id, ...), in bytes. Short enough
/// that `payment-{id}` stays within the store's stream name limit.
pub const TOKEN_LENGTH_MAX: usize = 128;
/// Characters in a referral code.
pub const REFERRAL_CODE_LENGTH: usize = 8;

const _: () = assert!(TOKEN_LENGTH_MAX + 32 <= crate::store::STREAM_NAME_LENGTH_MAX);

/// The referral code alphabet: digits and upper-case letters without the look-alikes
/// 0/O and 1/I, so a code read aloud or typed from paper is unambiguous. 32 symbols, so
/// each character carries exactly 5 bits.
const REFERRAL_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// An account: a random (version 4) UUID, chosen by the caller and carried in the command.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Uuid", into = "Uuid")]
pub struct AccountId(Uuid);

impl AccountId {
    pub fn new(id: Uuid) -> Result<AccountId, ValueError> {
        if id.get_version_num() != 4 {
            return Err(ValueError::new(
                "account_id",
                format!("{id} is not a random (version 4) UUID"),
            ));
        }
        Ok(AccountId(id))
    }

    pub fn parse(text: &str) -> Result<AccountId, ValueError> {
        let id = Uuid::parse_str(text.trim())
            .map_err(|_| ValueError::new("account_id", format!("{text:?} is not a UUID")))?;
        AccountId::new(id)
    }

    /// A fresh random account id (at the edge only: deciders receive ids in commands).
    pub fn random() -> AccountId {
        AccountId(Uuid::new_v4())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl TryFrom<Uuid> for AccountId {
    type Error = ValueError;
    fn try_from(id: Uuid) -> Result<Self, Self::Error> {
        AccountId::new(id)
    }
}

impl From<AccountId> for Uuid {
    fn from(id: AccountId) -> Uuid {
        id.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountId({})", self.0)
    }
}

/// A referral code: [`REFERRAL_CODE_LENGTH`] characters of an unambiguous alphabet.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReferralCode([u8; REFERRAL_CODE_LENGTH]);

impl ReferralCode {
    /// Parses a code as a person types it: surrounding spaces are ignored, lower case is
    /// accepted.
    pub fn parse(text: &str) -> Result<ReferralCode, ValueError> {
        let upper = text.trim().to_ascii_uppercase();
        let bytes = upper.as_bytes();
        if bytes.len() != REFERRAL_CODE_LENGTH
            || !bytes.iter().all(|b| REFERRAL_ALPHABET.contains(b))
        {
            return Err(ValueError::new(
                "referral_code",
                format!(
                    "{text:?} is not a referral code: {REFERRAL_CODE_LENGTH} characters of {}",
                    std::str::from_utf8(REFERRAL_ALPHABET).expect("ASCII alphabet")
                ),
            ));
        }
        let mut code = [0u8; REFERRAL_CODE_LENGTH];
        code.copy_from_slice(bytes);
        Ok(ReferralCode(code))
    }

    /// A code from random bytes (40 bits used). The default is the account id's random
    /// bytes, which carry nothing personal; on the rare collision the caller passes other
    /// random bytes.
    pub fn from_random_bytes(random: &[u8; 16]) -> ReferralCode {
        // UUID v4 bytes 10..16 are fully random (the version and variant bits sit in
        // bytes 6 and 8), so take the 40 bits from bytes 11..16.
        let mut bits = 0u64;
        for byte in &random[11..16] {
            bits = (bits << 8) | u64::from(*byte);
        }
        let mut code = [0u8; REFERRAL_CODE_LENGTH];
        for (index, slot) in code.iter_mut().enumerate() {
            let shift = 5 * (REFERRAL_CODE_LENGTH - 1 - index);
            *slot = REFERRAL_ALPHABET[((bits >> shift) & 0x1f) as usize];
        }
        ReferralCode(code)
    }

    pub fn for_account(account: AccountId) -> ReferralCode {
        ReferralCode::from_random_bytes(account.0.as_bytes())
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("referral codes are ASCII")
    }
}

impl TryFrom<String> for ReferralCode {
    type Error = ValueError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        ReferralCode::parse(&text)
    }
}

impl From<ReferralCode> for String {
    fn from(code: ReferralCode) -> String {
        code.as_str().to_owned()
    }
}

impl fmt::Display for ReferralCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ReferralCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReferralCode({})", self.as_str())
    }
}

/// Declares a token type: an opaque identifier given to us by another system, 1 to
/// [`TOKEN_LENGTH_MAX`] ASCII letters, digits, `_`, `-`, `.` or `:`, so it is safe in a
/// stream name and a URL path.
macro_rules! token {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: &str) -> Result<$name, ValueError> {
                let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
                if text.is_empty() || text.len() > TOKEN_LENGTH_MAX || !text.chars().all(allowed) {
                    return Err(ValueError::new(
                        $field,
                        format!(
                            "{text:?} must be 1 to {TOKEN_LENGTH_MAX} ASCII letters, digits, \
                             '_', '-', '.' or ':'"
                        ),
                    ));
                }
                Ok($name(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;
            fn try_from(text: String) -> Result<Self, Self::Error> {
                $name::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(token: $name) -> String {
                token.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

token!(
    /// A payment, by the payment processor's id (`pi_...`): a webhook delivered twice
    /// names the same payment.
    PaymentId,
    "payment_id"
);
token!(
    /// A refund or chargeback, by the processor's id (`re_...`, `dp_...`).
    RefundId,
    "refund_id"
);
token!(
    /// A credit spend, by the caller's idempotency key.
    SpendId,
    "spend_id"
);
token!(
    /// A credit reservation (an authorisation captured or voided later), by the caller's
    /// idempotency key.
    ReservationId,
    "reservation_id"
);
token!(
    /// A credit grant, by the caller's idempotency key.
    GrantId,
    "grant_id"
);
token!(
    /// An AI specialist credits are spent on.
    PersonaId,
    "persona"
);
token!(
    /// A subscription, by the processor's id (`sub_...`).
    SubscriptionId,
    "subscription_id"
);
token!(
    /// The product or plan a subscription is for (`pro-monthly`).
    ProductId,
    "product"
);
token!(
    /// An opaque fingerprint supplied by the edge (a keyed hash of an email address, an
    /// IP address, or the processor's card fingerprint). Equal fingerprints mean equal
    /// originals; the ledger never sees the original.
    Fingerprint,
    "fingerprint"
);
token!(
    /// The organisation donations go to (`ocean-cleanup`).
    OrganisationId,
    "organisation"
);
token!(
    /// The payout processor's reference for a sent payout.
    PayoutReference,
    "payout_reference"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_must_be_random_uuids() {
        assert!(AccountId::parse("8f3a3c1e-2b1d-4c0e-9a8b-0d5e6f7a8b9c").is_ok());
        // A version 1 (time-based) UUID is refused.
        let error = AccountId::parse("6fa459ea-ee8a-11ca-8bd6-0800200c9a66").unwrap_err();
        assert_eq!(error.field, "account_id");
        assert_eq!(
            AccountId::parse("not-a-uuid").unwrap_err().field,
            "account_id"
        );
        assert!(
            serde_json::from_str::<AccountId>("\"6fa459ea-ee8a-11ca-8bd6-0800200c9a66\"").is_err()
        );
    }

    #[test]
    fn referral_codes_parse_as_typed_and_avoid_look_alikes() {
        let code = ReferralCode::parse(" k7qm2xza ").unwrap();
        assert_eq!(code.as_str(), "K7QM2XZA");
        assert_eq!(
            ReferralCode::parse("K7QM2XZ0").unwrap_err().field,
            "referral_code"
        );
        assert!(ReferralCode::parse("K7QM2XZI").is_err());
        assert!(ReferralCode::parse("K7QM2XZ").is_err());
        assert!(ReferralCode::parse("K7QM2XZAB").is_err());
    }

    #[test]
    fn referral_codes_come_from_random_bytes() {
        let account = AccountId::parse("8f3a3c1e-2b1d-4c0e-9a8b-0d5e6f7a8b9c").unwrap();
        let code = ReferralCode::for_account(account);
        assert_eq!(ReferralCode::parse(code.as_str()).unwrap(), code);
        assert_eq!(
            ReferralCode::from_random_bytes(&[0; 16]).as_str(),
            "22222222"
        );
        assert_eq!(
            ReferralCode::from_random_bytes(&[0xff; 16]).as_str(),
            "ZZZZZZZZ"
        );
        let other = AccountId::parse("8f3a3c1e-2b1d-4c0e-9a8b-0d5e6f7a8b9d").unwrap();
        assert_ne!(ReferralCode::for_account(other), code);
    }

    #[test]
    fn tokens_are_bounded_and_stream_safe() {
        assert!(PaymentId::parse("pi_3Nx8KZ2eZvKYlo2C1").is_ok());
        assert_eq!(PaymentId::parse("").unwrap_err().field, "payment_id");
        assert_eq!(SpendId::parse("a b").unwrap_err().field, "spend_id");
        assert!(RefundId::parse(&"r".repeat(TOKEN_LENGTH_MAX)).is_ok());
        assert!(RefundId::parse(&"r".repeat(TOKEN_LENGTH_MAX + 1)).is_err());
    }
}
