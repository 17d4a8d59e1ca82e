//! The tamper-evidence hash chain.
//!
//! Each record carries the SHA-256 of the record before it (`previous`) and its own hash,
//! `current = SHA-256(previous || body)`, where `body` is the canonical encoding of the
//! event (see [`super::codec`]). The first record's `previous` is [`Digest::GENESIS`], 32
//! zero bytes. Changing, removing, inserting or reordering any record breaks a link that
//! an auditor can check with nothing more than a SHA-256 implementation.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The `previous` of the first record.
    pub const GENESIS: Digest = Digest([0; 32]);

    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }

    pub fn from_hex(text: &str) -> Option<Digest> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (index, pair) in bytes.chunks_exact(2).enumerate() {
            out[index] = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Digest::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a digest is 64 hexadecimal digits"))
    }
}

/// One link of the chain: the hash of the record before and of this record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChainLink {
    pub previous: Digest,
    pub current: Digest,
}

impl ChainLink {
    /// The link of a record with canonical `body` following a record hashed `previous`.
    pub fn follow(previous: Digest, body: &[u8]) -> ChainLink {
        let mut hasher = Sha256::new();
        hasher.update(previous.0);
        hasher.update(body);
        ChainLink {
            previous,
            current: Digest(hasher.finalize().into()),
        }
    }

    /// Whether `current` is the hash of `previous` and `body`.
    pub fn holds_for(&self, body: &[u8]) -> bool {
        ChainLink::follow(self.previous, body).current == self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let digest = ChainLink::follow(Digest::GENESIS, b"body").current;
        assert_eq!(Digest::from_hex(&digest.to_hex()), Some(digest));
        assert_eq!(Digest::from_hex("zz"), None);
    }

    #[test]
    fn link_is_sha256_of_previous_and_body() {
        // SHA-256 of 32 zero bytes followed by "abc", computed independently
        // (python3 -c "import hashlib;print(hashlib.sha256(bytes(32)+b'abc').hexdigest())").
        let link = ChainLink::follow(Digest::GENESIS, b"abc");
        assert_eq!(
            link.current.to_hex(),
            "365aa7d8f7f9402c4b9434502b4cc89ddb09fe50d7cd95b493b834c62d5a5370"
        );
        assert!(link.holds_for(b"abc"));
        assert!(!link.holds_for(b"abd"));
    }
}
