//! Hashing for the engine's maps keyed by the core's ids: one multiply instead of SipHash. The ids
//! are counters, not input anyone chooses, so a hash-flooding defence buys nothing; and no map
//! hashed with it is ever iterated, so its order cannot reach a result.

use std::hash::{BuildHasherDefault, Hasher};

/// Builds [`IdHasher`]s: `HashMap<K, V, IdHash>`.
pub(crate) type IdHash = BuildHasherDefault<IdHasher>;

/// Fibonacci hashing: the odd multiplier spreads consecutive ids over the table's low bits and
/// mixes them into the high bits the table's tags are taken from.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }
}
