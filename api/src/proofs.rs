//! Merkle proofs over the log (`ledger::store::merkle`, RFC 9162 style) as JSON: shared by
//! `GET /v1/proofs/*` and `refledger prove`.
//!
//! Limits, known: a proof is built from the record hashes of the log up to the size asked,
//! read from the store for each proof (32 bytes a record in memory, one read of the log);
//! fine for an auditor's occasional proof, not for a proof per request at scale.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use ledger::store::merkle;
use ledger::store::{ChainScope, Digest, EventStore, StoreError};

/// That the record at `position` is in the log of `size` records whose tree has `root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InclusionProof {
    pub position: u64,
    /// Records in the tree (a signed head's `events`).
    pub size: u64,
    /// The record's chain hash (the tree's leaf is `SHA-256(0x00 ‖ record_hash)`), hex.
    pub record_hash: String,
    /// The tree's root, hex.
    pub root: String,
    /// The audit path, leaf side first, hex.
    pub proof: Vec<String>,
}

/// That the log of `from` records is a prefix of the log of `to` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    pub from_root: String,
    pub to_root: String,
    /// RFC 9162 2.1.4 consistency proof, hex.
    pub proof: Vec<String>,
}

/// Why no proof was made.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

fn hex_all(digests: &[Digest]) -> Vec<String> {
    digests.iter().map(Digest::to_hex).collect()
}

/// The log's record hashes up to `size` (the whole log when `None`), checked to be there.
async fn hashes(store: &dyn EventStore, size: Option<u64>) -> Result<Vec<Digest>, ProofError> {
    if store.chain_scope() != ChainScope::Global {
        return Err(ProofError::Invalid(
            "proofs need one global chain; this store chains per stream".to_owned(),
        ));
    }
    let events = store.head().await?.map_or(0, |head| head.commit + 1);
    let size = size.unwrap_or(events);
    if size > events {
        return Err(ProofError::Invalid(format!(
            "the log holds {events} records, not {size}"
        )));
    }
    let hashes = merkle::record_hashes(store, size).await?;
    assert_eq!(
        hashes.len() as u64,
        size,
        "the store has every record to its head"
    );
    Ok(hashes)
}

pub async fn inclusion(
    store: &dyn EventStore,
    position: u64,
    size: Option<u64>,
) -> Result<InclusionProof, ProofError> {
    let hashes = hashes(store, size).await?;
    let size = hashes.len() as u64;
    if position >= size {
        return Err(ProofError::Invalid(format!(
            "position {position} is not in a log of {size} records"
        )));
    }
    let leaves = merkle::leaves(&hashes);
    let proof = merkle::inclusion_proof(&leaves, position as usize);
    Ok(InclusionProof {
        position,
        size,
        record_hash: hashes[position as usize].to_hex(),
        root: merkle::root(&leaves).to_hex(),
        proof: hex_all(&proof),
    })
}

pub async fn consistency(
    store: &dyn EventStore,
    from: u64,
    to: Option<u64>,
) -> Result<ConsistencyProof, ProofError> {
    let hashes = hashes(store, to).await?;
    let to = hashes.len() as u64;
    if from == 0 || from > to {
        return Err(ProofError::Invalid(format!(
            "from must be 1 to {to}, got {from}"
        )));
    }
    let leaves = merkle::leaves(&hashes);
    Ok(ConsistencyProof {
        from,
        to,
        from_root: merkle::root(&leaves[..from as usize]).to_hex(),
        to_root: merkle::root(&leaves).to_hex(),
        proof: hex_all(&merkle::consistency_proof(&leaves, from as usize)),
    })
}

fn digests(texts: &[String]) -> Option<Vec<Digest>> {
    texts.iter().map(|text| Digest::from_hex(text)).collect()
}

impl InclusionProof {
    /// Whether the proof holds on its own (its root is then the one to compare).
    pub fn holds(&self) -> bool {
        let (Some(record), Some(root), Some(proof)) = (
            Digest::from_hex(&self.record_hash),
            Digest::from_hex(&self.root),
            digests(&self.proof),
        ) else {
            return false;
        };
        merkle::verify_inclusion(self.position, self.size, &record, &proof, &root)
    }
}

impl ConsistencyProof {
    pub fn holds(&self) -> bool {
        let (Some(first), Some(second), Some(proof)) = (
            Digest::from_hex(&self.from_root),
            Digest::from_hex(&self.to_root),
            digests(&self.proof),
        ) else {
            return false;
        };
        merkle::verify_consistency(self.from, self.to, &first, &second, &proof)
    }
}
