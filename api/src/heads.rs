//! Signed heads: the server's signed statement that the log held `events` records, the
//! last with hash `head`, at `signed_at`.
//!
//! Why: the hash chain proves that nothing changed *inside* a log, not that the log is
//! the one the ledger wrote. Whoever can write the files can remove the last records, or
//! change one and recompute every hash after it, and the chain holds. A head signed by
//! the server and kept outside the log (by an auditor, fetched from `GET
//! /v1/heads/latest`) is what such a log cannot match: `refledger verify --trusted-head
//! FILE` fails unless the log extends it. The heads the server keeps in its data
//! directory (`heads.jsonl`) catch truncation the same way, as long as that file is
//! intact; the auditor's own copy is the anchor.
//!
//! The signature is Ed25519 over the UTF-8 text of [`SignedHead::message`]
//! (`docs/FORMAT.md`, "Signed heads"), so any Ed25519 routine checks it.
//!
//! Limits, known: the heads are held in memory (one line of about 300 bytes per head; the
//! server signs at most every `HEAD_INTERVAL` and only when the log moved, about 100 000
//! a year at the default); a head is signed only for a global hash chain (the embedded
//! log), not for a cluster's per-stream chains.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use utoipa::ToSchema;

use ledger::store::file::KnownHead;
use ledger::store::{ChainScope, Digest, EventStore, StoreError};

/// The server's signing key (a 32-byte Ed25519 seed, mode 0600), created on first start.
pub const SIGNING_KEY_FILE_NAME: &str = "head-signing.key";
/// Its public key, lower-case hex, for operators and auditors.
pub const PUBLIC_KEY_FILE_NAME: &str = "head-signing.pub";
/// The signed heads, one JSON object per line, oldest first.
pub const HEADS_FILE_NAME: &str = "heads.jsonl";
/// How often the server signs the head, when the log moved.
pub const HEAD_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Most heads in one page of `GET /v1/heads`.
pub const HEADS_PAGE_MAX: usize = 1000;
/// The first line of every signed message: what it is and its version.
pub const MESSAGE_PREFIX: &str = "refledger signed head v1\n";

/// One signed head, as served and as kept in `heads.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedHead {
    /// Records in the log when signed: positions 0 to `events - 1`.
    pub events: u64,
    /// The hash of the record at position `events - 1` (64 hex digits).
    pub head: String,
    /// When it was signed, RFC 3339 in UTC with microseconds.
    pub signed_at: String,
    /// The Ed25519 public key that signed it (64 hex digits).
    pub public_key: String,
    /// The Ed25519 signature of `message()` (128 hex digits).
    pub signature: String,
}

impl SignedHead {
    /// The exact text signed: four lines, each ending in a line feed.
    pub fn message(&self) -> String {
        format!(
            "{MESSAGE_PREFIX}events {}\nhead {}\nsigned_at {}\n",
            self.events, self.head, self.signed_at
        )
    }

    /// Checks the signature with the key the head names, and returns the head the log
    /// must extend, named `source` in reports.
    pub fn check(&self, source: String) -> Result<KnownHead, String> {
        let key: [u8; 32] = decode_hex(&self.public_key)
            .ok_or("public_key is not 64 hex digits")?
            .try_into()
            .map_err(|_| "public_key is not 64 hex digits")?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| "public_key is no Ed25519 key")?;
        let signature: [u8; 64] = decode_hex(&self.signature)
            .ok_or("signature is not 128 hex digits")?
            .try_into()
            .map_err(|_| "signature is not 128 hex digits")?;
        key.verify(
            self.message().as_bytes(),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| format!("the signature of {source} does not hold"))?;
        let head = Digest::from_hex(&self.head).ok_or("head is not 64 hex digits")?;
        if self.events == 0 {
            return Err("a signed head covers at least one record".to_owned());
        }
        Ok(KnownHead {
            events: self.events,
            head,
            source,
        })
    }
}

/// Signs the log's head and keeps what it signed.
pub struct HeadSigner {
    key: SigningKey,
    /// `DATA/heads.jsonl`; none for a signer that keeps its heads in memory only (tests).
    file: Option<PathBuf>,
    heads: Mutex<Vec<SignedHead>>,
}

impl HeadSigner {
    /// The signer of the data directory `data`: its key, created on first start (and its
    /// public key written beside it), and the heads it signed before.
    pub fn open(data: &Path) -> Result<HeadSigner, String> {
        let key_path = data.join(SIGNING_KEY_FILE_NAME);
        let seed = crate::keys::read_or_create_key(&key_path).map_err(|error| {
            format!(
                "cannot read the head-signing key {}: {error}",
                key_path.display()
            )
        })?;
        let key = SigningKey::from_bytes(&seed);
        let public = ledger::hex::encode(key.verifying_key().as_bytes());
        let public_path = data.join(PUBLIC_KEY_FILE_NAME);
        if std::fs::read_to_string(&public_path).ok().as_deref() != Some(&format!("{public}\n")) {
            let temporary = data.join(format!("{PUBLIC_KEY_FILE_NAME}.tmp"));
            ledger::durable::replace_file(&public_path, &temporary, |out| {
                writeln!(out, "{public}")
            })
            .map_err(|error| format!("cannot write {}: {error}", public_path.display()))?;
        }
        let file = data.join(HEADS_FILE_NAME);
        let heads = match std::fs::read_to_string(&file) {
            Ok(text) => parse_lines(&text)
                .map_err(|(line, reason)| format!("{} line {line}: {reason}", file.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(format!("cannot read {}: {error}", file.display())),
        };
        Ok(HeadSigner {
            key,
            file: Some(file),
            heads: Mutex::new(heads),
        })
    }

    /// A signer with a fresh key that keeps its heads in memory (for tests of the API).
    pub fn ephemeral() -> HeadSigner {
        HeadSigner {
            key: SigningKey::from_bytes(&crate::keys::random_key()),
            file: None,
            heads: Mutex::new(Vec::new()),
        }
    }

    /// The public key, lower-case hex.
    pub fn public_key(&self) -> String {
        ledger::hex::encode(self.key.verifying_key().as_bytes())
    }

    /// Signs the store's current head and keeps it; `None` for an empty log or a store
    /// without a global chain. With `only_if_moved`, signs nothing when the last signed
    /// head already covers every record (the periodic signing).
    pub async fn sign(
        &self,
        store: &dyn EventStore,
        only_if_moved: bool,
    ) -> Result<Option<SignedHead>, StoreError> {
        if store.chain_scope() != ChainScope::Global {
            return Ok(None);
        }
        // Held across the read and the write, so the heads are kept in log order.
        let mut heads = self.heads.lock().await;
        let Some(position) = store.head().await? else {
            return Ok(None);
        };
        let events = position.commit + 1;
        if only_if_moved && heads.last().is_some_and(|last| last.events == events) {
            return Ok(None);
        }
        let record = store.read_all(position, 1).await?;
        let record = record.first().ok_or_else(|| StoreError::Unavailable {
            reason: format!("the record at the head {position} cannot be read"),
        })?;
        let mut head = SignedHead {
            events,
            head: record.chain.current.to_hex(),
            signed_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            public_key: self.public_key(),
            signature: String::new(),
        };
        head.signature = ledger::hex::encode(&self.key.sign(head.message().as_bytes()).to_bytes());
        if let Some(file) = &self.file {
            let line = serde_json::to_string(&head).expect("a signed head serializes") + "\n";
            append_line(file, &line)
                .map_err(|error| StoreError::io(format!("append to {}", file.display()), error))?;
        }
        heads.push(head.clone());
        Ok(Some(head))
    }

    pub async fn latest(&self) -> Option<SignedHead> {
        self.heads.lock().await.last().cloned()
    }

    /// Up to `limit` heads covering at least `from` records, oldest first, and whether
    /// more follow.
    pub async fn page(&self, from: u64, limit: usize) -> (Vec<SignedHead>, bool) {
        let heads = self.heads.lock().await;
        let start = heads.partition_point(|head| head.events < from);
        let page: Vec<SignedHead> = heads[start..].iter().take(limit).cloned().collect();
        let more = heads.len() - start > page.len();
        (page, more)
    }
}

/// Signs the head every [`HEAD_INTERVAL`] when the log moved, for as long as the server
/// runs.
pub async fn sign_periodically(
    signer: std::sync::Arc<HeadSigner>,
    store: std::sync::Arc<dyn EventStore>,
) {
    let mut ticks = tokio::time::interval(HEAD_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match signer.sign(store.as_ref(), true).await {
            Ok(Some(head)) => {
                tracing::info!(events = head.events, head = %head.head, "signed the head")
            }
            Ok(None) => {}
            // The next tick tries again; the heads kept so far are unchanged.
            Err(error) => tracing::error!(%error, "cannot sign the head"),
        }
    }
}

/// The heads kept in `heads.jsonl`'s text, or the line (from 1) that is not one. An
/// unterminated last line is a head being written, not yet kept.
pub fn parse_lines(text: &str) -> Result<Vec<SignedHead>, (usize, String)> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end + 1],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .map(|(number, line)| {
            serde_json::from_str(line).map_err(|error| (number + 1, error.to_string()))
        })
        .collect()
}

/// The heads of a trusted-head file: one head as `GET /v1/heads/latest` serves it, a page
/// of `GET /v1/heads` (`{"heads": [...]}`), a JSON array of heads, or one head per line.
pub fn parse_trusted(text: &str) -> Result<Vec<SignedHead>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Trusted {
        One(SignedHead),
        Many(Vec<SignedHead>),
        Page { heads: Vec<SignedHead> },
    }
    match serde_json::from_str::<Trusted>(text.trim()) {
        Ok(Trusted::One(head)) => Ok(vec![head]),
        Ok(Trusted::Many(heads) | Trusted::Page { heads }) => Ok(heads),
        Err(_) => parse_lines(&(text.trim_end().to_owned() + "\n"))
            .map_err(|(line, reason)| format!("line {line} is not a signed head: {reason}")),
    }
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use ledger::store::memory::MemoryStore;
    use ledger::store::{EventMetadata, EventType, ExpectedRevision, NewEvent, StreamName};

    use super::*;

    async fn store_of(count: u8) -> MemoryStore {
        let store = MemoryStore::new();
        for index in 0..count {
            store
                .append(
                    &StreamName::parse("s-1").unwrap(),
                    ExpectedRevision::Any,
                    vec![NewEvent {
                        id: uuid::Uuid::new_v4(),
                        event_type: EventType::parse("Noted").unwrap(),
                        schema_version: 1,
                        metadata: EventMetadata::default(),
                        payload: vec![index],
                    }],
                )
                .await
                .unwrap();
        }
        store
    }

    #[tokio::test]
    async fn a_signed_head_checks_and_any_change_breaks_it() {
        let store = store_of(3).await;
        let signer = HeadSigner::ephemeral();
        let head = signer.sign(&store, false).await.unwrap().unwrap();
        assert_eq!(head.events, 3);
        let known = head.check("the head".to_owned()).unwrap();
        let last = store
            .read_all(ledger::store::Position::sequence(2), 1)
            .await
            .unwrap();
        assert_eq!(known.head, last[0].chain.current);
        for changed in [
            SignedHead {
                events: 2,
                ..head.clone()
            },
            SignedHead {
                head: "00".repeat(32),
                ..head.clone()
            },
            SignedHead {
                signed_at: "2020-01-01T00:00:00.000000Z".to_owned(),
                ..head.clone()
            },
            SignedHead {
                public_key: signer_key_other(),
                ..head.clone()
            },
        ] {
            assert!(changed.check("changed".to_owned()).is_err(), "{changed:?}");
        }
        // Unchanged log: the periodic signing adds nothing; on request it signs again.
        assert_eq!(signer.sign(&store, true).await.unwrap(), None);
        assert!(signer.sign(&store, false).await.unwrap().is_some());
        let (page, more) = signer.page(0, 1).await;
        assert_eq!((page.len(), more), (1, true));
        assert!(signer
            .sign(&MemoryStore::new(), false)
            .await
            .unwrap()
            .is_none());
    }

    fn signer_key_other() -> String {
        HeadSigner::ephemeral().public_key()
    }

    #[test]
    fn trusted_heads_read_as_served() {
        let head = SignedHead {
            events: 1,
            head: "ab".repeat(32),
            signed_at: "2026-01-01T00:00:00.000000Z".to_owned(),
            public_key: "cd".repeat(32),
            signature: "ef".repeat(64),
        };
        let one = serde_json::to_string(&head).unwrap();
        let many = serde_json::to_string(&vec![head.clone(), head.clone()]).unwrap();
        let page = format!("{{\"heads\":{many},\"has_more\":false}}");
        assert_eq!(parse_trusted(&one).unwrap().len(), 1);
        assert_eq!(parse_trusted(&many).unwrap().len(), 2);
        assert_eq!(parse_trusted(&format!("{one}\n{one}\n")).unwrap().len(), 2);
        assert!(parse_trusted("not a head").is_err());
        assert_eq!(parse_trusted(&page).unwrap().len(), 2);
        assert_eq!(
            parse_lines(&format!("{one}\n{{\"events\"")).unwrap().len(),
            1
        );
    }
}
