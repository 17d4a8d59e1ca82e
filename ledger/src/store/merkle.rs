//! A Merkle tree over the log, as Certificate Transparency keeps one (RFC 9162, 2.1): its
//! leaves are the records' chain hashes in position order, so a proof of logarithmic size
//! shows that a record is in the log of a given size (inclusion), or that the log of one
//! size is a prefix of the log of a larger size (consistency), without the whole log.
//!
//! - leaf:  `SHA-256(0x00 ‖ record hash)`
//! - node:  `SHA-256(0x01 ‖ left ‖ right)`, the left subtree holding the largest power of
//!   two of leaves smaller than the node's count
//! - empty: `SHA-256()`
//!
//! The records' hashes cover ciphertext, never personal data in clear, and erasure
//! destroys keys, not records: every root and proof stays valid after a subject is
//! erased.
//!
//! The proofs are built from the record hashes of the whole log up to the size asked
//! (32 bytes a record in memory); the recursion follows the tree, so its depth is at most
//! 64, whatever the log's length.

use sha2::{Digest as _, Sha256};

use super::{Digest, EventStore, Position, StoreError, PAGE_SIZE_MAX};

/// `SHA-256(0x00 ‖ record_hash)`.
pub fn leaf_hash(record_hash: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(record_hash.0);
    Digest(hasher.finalize().into())
}

fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left.0);
    hasher.update(right.0);
    Digest(hasher.finalize().into())
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The tree's leaves: the leaf hashes of `record_hashes`.
pub fn leaves(record_hashes: &[Digest]) -> Vec<Digest> {
    record_hashes.iter().map(leaf_hash).collect()
}

/// The root of the tree over `leaves` (leaf hashes, see [`leaves`]).
pub fn root(leaves: &[Digest]) -> Digest {
    match leaves.len() {
        0 => Digest(Sha256::digest([]).into()),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The audit path of leaf `index` in the tree over `leaves`, leaf side first. Panics if
/// `index` is not a leaf.
pub fn inclusion_proof(leaves: &[Digest], index: usize) -> Vec<Digest> {
    assert!(index < leaves.len(), "leaf {index} of {}", leaves.len());
    let mut proof = Vec::new();
    let (mut start, mut end, mut index) = (0, leaves.len(), index);
    // Walk down from the root, collecting the sibling subtrees, then reverse.
    while end - start > 1 {
        let k = split(end - start);
        if index < k {
            proof.push(root(&leaves[start + k..end]));
            end = start + k;
        } else {
            proof.push(root(&leaves[start..start + k]));
            start += k;
            index -= k;
        }
    }
    proof.reverse();
    proof
}

/// The proof that the tree over `leaves[..first]` is a prefix of the tree over `leaves`
/// (RFC 9162 2.1.4.1). Panics unless `0 < first ≤ leaves.len()`.
pub fn consistency_proof(leaves: &[Digest], first: usize) -> Vec<Digest> {
    assert!(
        0 < first && first <= leaves.len(),
        "{first} of {}",
        leaves.len()
    );
    let mut proof = Vec::new();
    let (mut start, mut end, mut m, mut whole) = (0, leaves.len(), first, true);
    while m != end - start {
        let k = split(end - start);
        if m <= k {
            proof.push(root(&leaves[start + k..end]));
            end = start + k;
        } else {
            proof.push(root(&leaves[start..start + k]));
            start += k;
            m -= k;
            whole = false;
        }
    }
    if !whole {
        proof.push(root(&leaves[start..end]));
    }
    proof.reverse();
    proof
}

/// Whether `proof` shows the record with hash `record_hash` at `index` in the tree of
/// `size` leaves whose root is `root` (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    record_hash: &Digest,
    proof: &[Digest],
    root: &Digest,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(record_hash);
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Whether `proof` shows the tree of `first` leaves with root `first_root` to be a prefix
/// of the tree of `second` leaves with root `second_root` (RFC 9162 2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Digest,
    second_root: &Digest,
    proof: &[Digest],
) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    let mut path: Vec<Digest> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((seed, rest)) = path.split_first() else {
        return false;
    };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && fr == *first_root && sr == *second_root
}

/// The record hashes of the first `size` records of `store`, in position order (fewer if
/// the log is shorter).
pub async fn record_hashes<S: EventStore + ?Sized>(
    store: &S,
    size: u64,
) -> Result<Vec<Digest>, StoreError> {
    let mut hashes = Vec::new();
    let mut from = Position::START;
    while (hashes.len() as u64) < size {
        let want = (size - hashes.len() as u64).min(PAGE_SIZE_MAX as u64) as usize;
        let page = store.read_all(from, want).await?;
        let Some(last) = page.last() else {
            break;
        };
        from = Position::sequence(last.position.commit + 1);
        hashes.extend(page.iter().map(|event| event.chain.current));
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Digest {
        Digest(Sha256::digest(n.to_le_bytes()).into())
    }

    /// The RFC's recursive definition of the root, to check the tree against.
    fn reference_root(records: &[Digest]) -> Digest {
        root(&leaves(records))
    }

    #[test]
    fn every_inclusion_and_consistency_proof_verifies_and_nothing_else_does() {
        let records: Vec<Digest> = (0..40).map(record).collect();
        for size in 1..=records.len() {
            let tree = leaves(&records[..size]);
            let top = root(&tree);
            assert_eq!(top, reference_root(&records[..size]));
            for (index, record_hash) in records[..size].iter().enumerate() {
                let proof = inclusion_proof(&tree, index);
                assert!(proof.len() <= 64 - (size as u64).leading_zeros() as usize);
                let (i, n) = (index as u64, size as u64);
                assert!(verify_inclusion(i, n, record_hash, &proof, &top));
                assert!(!verify_inclusion(i, n, &record(99), &proof, &top));
                assert!(!verify_inclusion(i + n, n, record_hash, &proof, &top));
                if size > 1 {
                    let other = (index + 1) % size;
                    assert!(!verify_inclusion(
                        other as u64,
                        n,
                        record_hash,
                        &proof,
                        &top
                    ));
                }
            }
            for first in 1..=size {
                let proof = consistency_proof(&tree, first);
                let first_root = root(&tree[..first]);
                let (m, n) = (first as u64, size as u64);
                assert!(
                    verify_consistency(m, n, &first_root, &top, &proof),
                    "{m} {n}"
                );
                if first < size {
                    assert!(
                        !verify_consistency(m, n, &record(7), &top, &proof),
                        "{m} {n}"
                    );
                    assert!(!verify_consistency(m, n, &first_root, &record(7), &proof));
                }
            }
        }
        assert_eq!(root(&[]), Digest(Sha256::digest([]).into()));
    }
}
