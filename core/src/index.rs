//! The core's id maps: hashed for O(1) lookups, with a running digest of their entries.
//!
//! Hash maps are fast but iterate in an arbitrary order, so these never expose hash order: iteration
//! is always sorted by key, and serialization (snapshots, digests) writes entries sorted.

#![allow(clippy::disallowed_types)] // the one place a HashMap is allowed: lookups only, never hash order

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash};

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};

type Fx = BuildHasherDefault<rustc_hash::FxHasher>;

/// A map from ids to records with O(1) lookups, sorted iteration, and a running digest of its
/// entries: the wrapping sum of one hash per entry, kept up to date as entries change, so the core's
/// digest costs O(1) per event instead of a pass over every record. An entry handed out by
/// [`IdMap::get_mut`] is rehashed at the next [`IdMap::settle`] (the core settles after every event).
#[derive(Clone, Debug)]
pub struct IdMap<K, V> {
    entries: HashMap<K, (V, u64), Fx>,
    sum: u64,
    dirty: Vec<K>,
}

/// The hash of one entry, as the digest sums it.
pub(crate) fn entry_hash<K: Serialize, V: Serialize>(k: &K, v: &V) -> u64 {
    crate::hash::hash_of(&(k, v))
}

impl<K: Copy + Eq + Hash + Ord + Serialize, V: Serialize> IdMap<K, V> {
    pub fn new() -> Self {
        IdMap {
            entries: HashMap::default(),
            sum: 0,
            dirty: Vec::new(),
        }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.entries.get(k).map(|(v, _)| v)
    }

    /// The entry to change; it is rehashed at the next [`IdMap::settle`].
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let (v, _) = self.entries.get_mut(k)?;
        self.dirty.push(*k);
        Some(v)
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let h = entry_hash(&k, &v);
        self.sum = self.sum.wrapping_add(h);
        let old = self.entries.insert(k, (v, h))?;
        self.sum = self.sum.wrapping_sub(old.1);
        Some(old.0)
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (v, h) = self.entries.remove(k)?;
        self.sum = self.sum.wrapping_sub(h);
        Some(v)
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.entries.contains_key(k)
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every entry, sorted by key. O(n log n): for status, checks and shutdowns, never per event.
    pub fn sorted(&self) -> Vec<(K, &V)> {
        let mut v: Vec<(K, &V)> = self.entries.iter().map(|(k, (v, _))| (*k, v)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Rehashes the entries changed through [`IdMap::get_mut`] since the last call.
    pub fn settle(&mut self) {
        for k in std::mem::take(&mut self.dirty) {
            if let Some((v, h)) = self.entries.get_mut(&k) {
                let fresh = entry_hash(&k, v);
                self.sum = self.sum.wrapping_sub(*h).wrapping_add(fresh);
                *h = fresh;
            }
        }
    }

    /// The digest of the entries: order-independent, O(1).
    pub fn digest(&self) -> u64 {
        self.sum
    }

    /// The same digest recomputed from every entry, to check the running one.
    pub fn digest_from_scratch(&self) -> u64 {
        self.entries
            .iter()
            .fold(0u64, |sum, (k, (v, _))| sum.wrapping_add(entry_hash(k, v)))
    }
}

impl<K: Copy + Eq + Hash + Ord + Serialize, V: Serialize> Default for IdMap<K, V> {
    fn default() -> Self {
        IdMap::new()
    }
}

impl<K: Copy + Eq + Hash + Ord + Serialize, V: Serialize> Serialize for IdMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.sorted())
    }
}

impl<'de, K: Copy + Eq + Hash + Ord + Serialize + Deserialize<'de>, V: Serialize + Deserialize<'de>>
    Deserialize<'de> for IdMap<K, V>
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries: Vec<(K, V)> = Vec::deserialize(d)?;
        let mut map = IdMap::new();
        for (k, v) in entries {
            map.insert(k, v);
        }
        Ok(map)
    }
}
