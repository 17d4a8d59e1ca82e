//! Keyed fingerprints for duplicate and fraud detection.
//!
//! A fingerprint is HMAC-SHA-256 of a normalised value under a key held in the vault.
//! Without the key nobody can test a guessed email against it (a plain hash of an email is
//! a dictionary lookup away from the email), and the table of fingerprints lives in the
//! vault, not the log, so erasing a subject removes them.

use std::fmt;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{ErasureGroup, PersonalText};

/// What a fingerprint was taken of; each kind is normalised its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FingerprintKind {
    /// An email address: trimmed and lower-cased.
    Email,
    /// A signup IP address: trimmed; parsed and printed canonically when it parses.
    Ip,
    /// A payment method's fingerprint from the payment processor: trimmed.
    Payment,
}

impl FingerprintKind {
    /// The group whose erasure removes fingerprints of this kind.
    pub const fn group(self) -> ErasureGroup {
        match self {
            FingerprintKind::Email | FingerprintKind::Ip => ErasureGroup::Profile,
            FingerprintKind::Payment => ErasureGroup::Payout,
        }
    }

    const fn label(self) -> &'static [u8] {
        match self {
            FingerprintKind::Email => b"email",
            FingerprintKind::Ip => b"ip",
            FingerprintKind::Payment => b"payment",
        }
    }
}

/// A keyed fingerprint: equal for equal normalised values under the same vault.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint {
    pub kind: FingerprintKind,
    #[serde(with = "hex32")]
    pub mac: [u8; 32],
}

impl Fingerprint {
    /// Computes the fingerprint of `value` under `key`. The kind is part of the MAC input so
    /// an email and an IP with equal text never match.
    pub(crate) fn compute(key: &[u8], kind: FingerprintKind, value: &PersonalText) -> Fingerprint {
        let normalised = normalise(kind, value.expose());
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
        mac.update(b"refledger.fingerprint.v1\0");
        mac.update(kind.label());
        mac.update(b"\0");
        mac.update(normalised.as_bytes());
        Fingerprint {
            kind,
            mac: mac.finalize().into_bytes().into(),
        }
    }

    pub fn to_hex(&self) -> String {
        hex32::encode(&self.mac)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({:?}, {})", self.kind, &self.to_hex()[..16])
    }
}

/// The form of a value that two spellings of the same thing share.
pub fn normalise(kind: FingerprintKind, value: &str) -> String {
    let trimmed = value.trim();
    match kind {
        FingerprintKind::Email => trimmed.to_lowercase(),
        FingerprintKind::Ip => match trimmed.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.to_canonical().to_string(),
            Err(_) => trimmed.to_lowercase(),
        },
        FingerprintKind::Payment => trimmed.to_owned(),
    }
}

pub(crate) mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(bytes: &[u8; 32]) -> String {
        crate::hex::encode(bytes)
    }

    pub fn decode(text: &str) -> Option<[u8; 32]> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (index, slot) in out.iter_mut().enumerate() {
            *slot = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
        }
        Some(out)
    }

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hexadecimal digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> PersonalText {
        PersonalText::new(value).unwrap()
    }

    #[test]
    fn emails_match_whatever_their_case_and_surrounding_space() {
        let key = [1u8; 32];
        let a = Fingerprint::compute(&key, FingerprintKind::Email, &text(" Ada@Example.COM "));
        let b = Fingerprint::compute(&key, FingerprintKind::Email, &text("ada@example.com"));
        let c = Fingerprint::compute(&key, FingerprintKind::Email, &text("bob@example.com"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn fingerprints_depend_on_the_key_and_the_kind() {
        let value = text("10.0.0.1");
        let a = Fingerprint::compute(&[1u8; 32], FingerprintKind::Ip, &value);
        let b = Fingerprint::compute(&[2u8; 32], FingerprintKind::Ip, &value);
        let c = Fingerprint::compute(&[1u8; 32], FingerprintKind::Email, &value);
        assert_ne!(a.mac, b.mac);
        assert_ne!(a.mac, c.mac);
    }

    #[test]
    fn ip_addresses_are_compared_canonically() {
        assert_eq!(
            normalise(FingerprintKind::Ip, " ::ffff:10.0.0.1 "),
            "10.0.0.1"
        );
        assert_eq!(normalise(FingerprintKind::Ip, "2001:DB8::1"), "2001:db8::1");
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0xabu8; 32];
        assert_eq!(hex32::decode(&hex32::encode(&bytes)), Some(bytes));
        assert_eq!(hex32::decode("zz"), None);
    }
}
