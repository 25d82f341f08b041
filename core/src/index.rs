//! The core's indexes: hashed id maps for O(1) lookups, and FIFO queues with lazy deletion.
//!
//! Hash maps are fast but iterate in an arbitrary order, so these never expose hash order: iteration
//! is always sorted by key, and serialization (snapshots, digests) writes entries sorted.

#![allow(clippy::disallowed_types)] // the one place a HashMap is allowed: lookups only, never hash order

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash};

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};

type Fx = BuildHasherDefault<rustc_hash::FxHasher>;

/// A map from ids to records with O(1) lookups and sorted iteration.
#[derive(Clone, Debug)]
pub struct IdMap<K, V>(HashMap<K, V, Fx>);

impl<K: Copy + Eq + Hash + Ord, V> IdMap<K, V> {
    pub fn new() -> Self {
        IdMap(HashMap::default())
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.0.get(k)
    }

    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        self.0.get_mut(k)
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.0.insert(k, v)
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.0.remove(k)
    }

    pub fn contains_key(&self, k: &K) -> bool {
        self.0.contains_key(k)
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Every entry, sorted by key. O(n log n): for status, checks and shutdowns, never per event.
    pub fn sorted(&self) -> Vec<(K, &V)> {
        let mut v: Vec<(K, &V)> = self.0.iter().map(|(k, v)| (*k, v)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }
}

impl<K: Copy + Eq + Hash + Ord, V> Default for IdMap<K, V> {
    fn default() -> Self {
        IdMap::new()
    }
}

impl<K: Copy + Eq + Hash + Ord + Serialize, V: Serialize> Serialize for IdMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.sorted())
    }
}

impl<'de, K: Copy + Eq + Hash + Ord + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de>
    for IdMap<K, V>
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries: Vec<(K, V)> = Vec::deserialize(d)?;
        Ok(IdMap(entries.into_iter().collect()))
    }
}
