//! The sealed envelope: one personal value, encrypted and bound to where it stands.
//!
//! A value is encrypted with AES-256-GCM under the data key of its subject and erasure
//! group, with a fresh random 96-bit nonce from the operating system. The associated data
//! binds the ciphertext to the algorithm, key id and version, subject, group, event id,
//! event type and field name, so a ciphertext copied into another event, field or
//! subject's record fails to open, as does any flipped bit.
//!
//! The envelope is JSON in event payloads, binary fields in base64 (standard alphabet,
//! padded):
//!
//! ```json
//! {"v":1,"alg":"A256GCM","sub":"<subject uuid>","grp":"profile",
//!  "kid":"<data key uuid>","kver":1,"nonce":"<12 bytes>","ct":"<ciphertext and 16-byte tag>"}
//! ```
//!
//! The associated data, all integers little-endian:
//!
//! ```text
//! "refledger.pd.v1" (15 bytes) | alg u8 (1 = A256GCM) | key id (16) | key version u32
//! | subject (16) | group u8 (1 = profile, 2 = payout) | event id (16)
//! | event type length u16 | event type | field length u16 | field
//! ```

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::vault::{DataKey, KeyLookup, KeyVault};
use super::{random_bytes, ErasureGroup, PersonalText, PrivacyError, SubjectId};
use crate::store::EventType;

/// The envelope format written today.
pub const ENVELOPE_VERSION: u8 = 1;
/// Longest field name, in bytes.
pub const FIELD_NAME_LENGTH_MAX: usize = 64;
/// Bytes of a nonce (96 bits, the size AES-GCM is specified for).
pub const NONCE_SIZE: usize = 12;
/// Bytes of the authentication tag at the end of each ciphertext.
pub const TAG_SIZE: usize = 16;

const AAD_DOMAIN: &[u8] = b"refledger.pd.v1";

/// How a sealed value is encrypted. Recorded in every envelope so a later algorithm can be
/// introduced without guessing what old records used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// AES-256 in Galois/Counter Mode, 96-bit nonce, 128-bit tag.
    Aes256Gcm,
}

impl Algorithm {
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "A256GCM",
        }
    }

    const fn tag(self) -> u8 {
        match self {
            Algorithm::Aes256Gcm => 1,
        }
    }
}

/// The name of the field a sealed value stands in, as it appears in the event's JSON:
/// 1 to [`FIELD_NAME_LENGTH_MAX`] ASCII lower-case letters, digits and `_`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldName(String);

impl FieldName {
    pub fn parse(name: impl Into<String>) -> Result<FieldName, PrivacyError> {
        let name = name.into();
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
        if name.is_empty() || name.len() > FIELD_NAME_LENGTH_MAX || !name.chars().all(allowed) {
            return Err(PrivacyError::Invalid {
                what: "field name",
                reason: format!(
                    "{name:?} must be 1 to {FIELD_NAME_LENGTH_MAX} lower-case ASCII letters, \
                     digits or '_'"
                ),
            });
        }
        Ok(FieldName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a sealed value stands: what its ciphertext is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealContext {
    pub event_id: Uuid,
    pub event_type: EventType,
    pub field: FieldName,
    pub subject: SubjectId,
    pub group: ErasureGroup,
}

/// A personal value as the log holds it. `Debug` and `Display` show which subject, group
/// and key it belongs to, never its contents; serialising it writes only the envelope.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "EnvelopeJson", into = "EnvelopeJson")]
pub struct Sealed {
    algorithm: Algorithm,
    subject: SubjectId,
    group: ErasureGroup,
    key_id: Uuid,
    key_version: u32,
    nonce: [u8; NONCE_SIZE],
    /// Ciphertext followed by the tag.
    ciphertext: Vec<u8>,
}

/// A sealed value read back: the value, or the fact that it was erased and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    Plain(PersonalText),
    Erased { at: DateTime<Utc> },
}

impl Opened {
    /// The value in clear, or `replacement` if it was erased: what reports show.
    pub fn expose_or<'a>(&'a self, replacement: &'a str) -> &'a str {
        match self {
            Opened::Plain(text) => text.expose(),
            Opened::Erased { .. } => replacement,
        }
    }
}

/// Encrypts `value` for `context` under the subject's data key for the group, creating the
/// key if the subject has none yet. Rejected with [`PrivacyError::SubjectErased`] if the
/// group was erased: an erased subject is never silently given a fresh key.
pub fn seal(
    vault: &dyn KeyVault,
    context: &SealContext,
    value: &PersonalText,
) -> Result<Sealed, PrivacyError> {
    let key = vault.key_for_write(context.subject, context.group)?;
    let mut nonce = [0u8; NONCE_SIZE];
    random_bytes(&mut nonce)?;
    seal_with(&key, context, nonce, value)
}

/// Decrypts `sealed`, which must stand where `context` says. `Erased` only when the vault
/// holds a tombstone for the key; an unreachable vault or a missing key is an error.
pub fn open(
    vault: &dyn KeyVault,
    context: &SealContext,
    sealed: &Sealed,
) -> Result<Opened, PrivacyError> {
    let unauthentic = |reason| PrivacyError::Unauthentic {
        field: context.field.as_str().to_owned(),
        reason,
    };
    if sealed.subject != context.subject {
        return Err(unauthentic("it belongs to another subject"));
    }
    if sealed.group != context.group {
        return Err(unauthentic("it belongs to another erasure group"));
    }
    let key = match vault.key_for_read(sealed.subject, sealed.group, sealed.key_id)? {
        KeyLookup::Found(key) => key,
        KeyLookup::Erased { at } => return Ok(Opened::Erased { at }),
    };
    if key.version() != sealed.key_version {
        return Err(unauthentic("the vault holds another version of its key"));
    }
    let aad = associated_data(sealed.algorithm, sealed.key_id, sealed.key_version, context);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.bytes()));
    let plain = cipher
        .decrypt(
            Nonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: &aad,
            },
        )
        .map_err(|_| unauthentic("authentication failed"))?;
    let text = String::from_utf8(plain).map_err(|_| unauthentic("not UTF-8"))?;
    Ok(Opened::Plain(PersonalText::new(text)?))
}

/// Encrypts with a given key and nonce; [`seal`] draws the nonce from the OS.
fn seal_with(
    key: &DataKey,
    context: &SealContext,
    nonce: [u8; NONCE_SIZE],
    value: &PersonalText,
) -> Result<Sealed, PrivacyError> {
    let algorithm = Algorithm::Aes256Gcm;
    let aad = associated_data(algorithm, key.id(), key.version(), context);
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.bytes()));
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: value.expose().as_bytes(),
                aad: &aad,
            },
        )
        // Encryption fails only for inputs longer than AES-GCM allows (64 GiB), far above
        // PERSONAL_TEXT_LENGTH_MAX.
        .expect("AES-GCM encrypts any value within PERSONAL_TEXT_LENGTH_MAX");
    Ok(Sealed {
        algorithm,
        subject: context.subject,
        group: context.group,
        key_id: key.id(),
        key_version: key.version(),
        nonce,
        ciphertext,
    })
}

impl Sealed {
    pub fn subject(&self) -> SubjectId {
        self.subject
    }

    pub fn group(&self) -> ErasureGroup {
        self.group
    }

    pub fn key_id(&self) -> Uuid {
        self.key_id
    }

    pub fn key_version(&self) -> u32 {
        self.key_version
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn associated_data(
    algorithm: Algorithm,
    key_id: Uuid,
    key_version: u32,
    context: &SealContext,
) -> Vec<u8> {
    let event_type = context.event_type.as_str().as_bytes();
    let field = context.field.as_str().as_bytes();
    let mut aad = Vec::with_capacity(AAD_DOMAIN.len() + 80 + event_type.len() + field.len());
    aad.extend_from_slice(AAD_DOMAIN);
    aad.push(algorithm.tag());
    aad.extend_from_slice(key_id.as_bytes());
    aad.extend_from_slice(&key_version.to_le_bytes());
    aad.extend_from_slice(context.subject.as_uuid().as_bytes());
    aad.push(context.group.tag());
    aad.extend_from_slice(context.event_id.as_bytes());
    // Both lengths fit a u16: EVENT_TYPE_LENGTH_MAX and FIELD_NAME_LENGTH_MAX are small.
    aad.extend_from_slice(&(event_type.len() as u16).to_le_bytes());
    aad.extend_from_slice(event_type);
    aad.extend_from_slice(&(field.len() as u16).to_le_bytes());
    aad.extend_from_slice(field);
    aad
}

const _: () = assert!(crate::store::EVENT_TYPE_LENGTH_MAX <= u16::MAX as usize);
const _: () = assert!(FIELD_NAME_LENGTH_MAX <= u16::MAX as usize);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("subject", &self.subject)
            .field("group", &self.group)
            .field("key_id", &self.key_id)
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[sealed {}]", self.group)
    }
}

/// The envelope's JSON shape; kept apart from [`Sealed`] so the type stays valid by
/// construction and the shape is one reviewed declaration.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeJson {
    v: u8,
    alg: String,
    sub: SubjectId,
    grp: ErasureGroup,
    kid: Uuid,
    kver: u32,
    nonce: String,
    ct: String,
}

impl From<Sealed> for EnvelopeJson {
    fn from(sealed: Sealed) -> EnvelopeJson {
        EnvelopeJson {
            v: ENVELOPE_VERSION,
            alg: sealed.algorithm.as_str().to_owned(),
            sub: sealed.subject,
            grp: sealed.group,
            kid: sealed.key_id,
            kver: sealed.key_version,
            nonce: BASE64.encode(sealed.nonce),
            ct: BASE64.encode(&sealed.ciphertext),
        }
    }
}

impl TryFrom<EnvelopeJson> for Sealed {
    type Error = String;
    fn try_from(json: EnvelopeJson) -> Result<Sealed, String> {
        if json.v != ENVELOPE_VERSION {
            return Err(format!("unknown sealed envelope version {}", json.v));
        }
        let algorithm = match json.alg.as_str() {
            "A256GCM" => Algorithm::Aes256Gcm,
            other => return Err(format!("unknown sealing algorithm {other:?}")),
        };
        let nonce: [u8; NONCE_SIZE] = BASE64
            .decode(&json.nonce)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or("a nonce is 12 bytes in base64")?;
        let ciphertext = BASE64
            .decode(&json.ct)
            .map_err(|_| "the ciphertext is not base64")?;
        let ciphertext_len_max = crate::privacy::PERSONAL_TEXT_LENGTH_MAX + TAG_SIZE;
        if ciphertext.len() < TAG_SIZE || ciphertext.len() > ciphertext_len_max {
            return Err(format!(
                "a ciphertext is {TAG_SIZE} to {ciphertext_len_max} bytes, got {}",
                ciphertext.len()
            ));
        }
        Ok(Sealed {
            algorithm,
            subject: json.sub,
            group: json.grp,
            key_id: json.kid,
            key_version: json.kver,
            nonce,
            ciphertext,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey::from_parts(Uuid::from_u128(7), 1, [9u8; 32])
    }

    fn context(field: &str) -> SealContext {
        SealContext {
            event_id: Uuid::from_u128(1),
            event_type: EventType::parse("AccountOpened").unwrap(),
            field: FieldName::parse(field).unwrap(),
            subject: SubjectId::new(Uuid::from_u128(2)),
            group: ErasureGroup::Profile,
        }
    }

    #[test]
    fn envelope_json_round_trips_and_names_its_key() {
        let value = PersonalText::new("ada@example.com").unwrap();
        let sealed = seal_with(&key(), &context("email"), [3u8; NONCE_SIZE], &value).unwrap();
        let json = serde_json::to_value(&sealed).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["alg"], "A256GCM");
        assert_eq!(json["grp"], "profile");
        assert_eq!(json["kid"], Uuid::from_u128(7).to_string());
        assert_eq!(json["kver"], 1);
        assert_eq!(json["nonce"], BASE64.encode([3u8; NONCE_SIZE]));
        let back: Sealed = serde_json::from_value(json).unwrap();
        assert_eq!(back, sealed);
    }

    #[test]
    fn envelope_rejects_unknown_versions_and_bad_nonces() {
        let value = PersonalText::new("x").unwrap();
        let sealed = seal_with(&key(), &context("email"), [3u8; NONCE_SIZE], &value).unwrap();
        let mut json = serde_json::to_value(&sealed).unwrap();
        json["v"] = 2.into();
        assert!(serde_json::from_value::<Sealed>(json.clone()).is_err());
        json["v"] = 1.into();
        json["nonce"] = BASE64.encode([0u8; 11]).into();
        assert!(serde_json::from_value::<Sealed>(json.clone()).is_err());
        json["nonce"] = BASE64.encode([0u8; 12]).into();
        json["alg"] = "A128GCM".into();
        assert!(serde_json::from_value::<Sealed>(json).is_err());
    }

    #[test]
    fn debug_and_display_print_nothing_personal() {
        let value = PersonalText::new("ada@example.com").unwrap();
        let sealed = seal_with(&key(), &context("email"), [3u8; NONCE_SIZE], &value).unwrap();
        for printed in [
            format!("{sealed:?}"),
            format!("{sealed}"),
            format!("{value:?}"),
            format!("{value}"),
            format!("{:?}", Opened::Plain(value.clone())),
        ] {
            assert!(!printed.contains("ada"), "{printed}");
            assert!(
                !printed.contains(&BASE64.encode(&sealed.ciphertext)),
                "{printed}"
            );
        }
    }

    #[test]
    fn field_names_are_validated() {
        assert!(FieldName::parse("email").is_ok());
        assert!(FieldName::parse("").is_err());
        assert!(FieldName::parse("Email").is_err());
        assert!(FieldName::parse("a".repeat(FIELD_NAME_LENGTH_MAX + 1)).is_err());
    }

    #[test]
    fn the_associated_data_names_every_part_of_the_context() {
        let base = associated_data(
            Algorithm::Aes256Gcm,
            Uuid::from_u128(7),
            1,
            &context("email"),
        );
        let mut other = context("email");
        other.event_id = Uuid::from_u128(99);
        assert_ne!(
            base,
            associated_data(Algorithm::Aes256Gcm, Uuid::from_u128(7), 1, &other)
        );
        let mut other = context("email");
        other.event_type = EventType::parse("AccountUpdated").unwrap();
        assert_ne!(
            base,
            associated_data(Algorithm::Aes256Gcm, Uuid::from_u128(7), 1, &other)
        );
        let mut other = context("email");
        other.group = ErasureGroup::Payout;
        assert_ne!(
            base,
            associated_data(Algorithm::Aes256Gcm, Uuid::from_u128(7), 1, &other)
        );
        assert_ne!(
            base,
            associated_data(
                Algorithm::Aes256Gcm,
                Uuid::from_u128(7),
                2,
                &context("email")
            )
        );
        assert_ne!(
            base,
            associated_data(
                Algorithm::Aes256Gcm,
                Uuid::from_u128(8),
                1,
                &context("email")
            )
        );
        assert_ne!(
            base,
            associated_data(
                Algorithm::Aes256Gcm,
                Uuid::from_u128(7),
                1,
                &context("name")
            )
        );
    }
}
