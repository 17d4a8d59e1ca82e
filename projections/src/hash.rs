//! A fast hasher for the views' maps. Their keys are random UUIDs and processor ids, not
//! attacker-chosen in a way that could flood one bucket (an attacker cannot pick the
//! UUIDs we mint, and a processor id is only recorded after the processor confirmed it),
//! so the cost of SipHash's flooding resistance buys nothing on the rebuild's hot path.
//!
//! The mixing is the multiply-rotate scheme of the Fx hasher used inside rustc.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(last));
        }
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::*;

    #[test]
    fn distinct_keys_spread_and_equal_keys_agree() {
        let build = BuildHasherDefault::<FastHasher>::default();
        let a = build.hash_one(uuid::Uuid::from_u128(1));
        let b = build.hash_one(uuid::Uuid::from_u128(2));
        assert_ne!(a, b);
        assert_eq!(a, build.hash_one(uuid::Uuid::from_u128(1)));
        assert_ne!(build.hash_one("pi_1"), build.hash_one("pi_2"));
        let mut map: FastMap<u64, u64> = FastMap::default();
        map.insert(7, 8);
        assert_eq!(map.get(&7), Some(&8));
    }
}
