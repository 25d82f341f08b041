//! The core's id maps and its machine-name index: hashed for O(1) lookups, the id maps with a
//! running digest of their entries.
//!
//! Hash maps are fast but iterate in an arbitrary order, so these never expose hash order: iteration
//! is always sorted by key, and serialization (snapshots, digests) writes entries sorted.

#![allow(clippy::disallowed_types)] // the one place a HashMap is allowed: lookups only, never hash order

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash};

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};

type Fx = BuildHasherDefault<rustc_hash::FxHasher>;

/// A record whose digest entry is hashed from its encoding (implemented in `record_bytes.rs`).
pub(crate) trait RecordHash<K> {
    /// xxh3 of bincode's standard encoding of `(key, self)`, encoded in `scratch` (a buffer kept
    /// by the caller, so that hashing neither allocates nor clears a buffer per record).
    fn record_hash(&self, key: &K, scratch: &mut Vec<u8>) -> u64;
}

/// A map from ids to records with O(1) lookups, sorted iteration, and a running digest of its
/// entries: the wrapping sum of one hash per entry, kept up to date as entries change, so the core's
/// digest costs O(1) per event instead of a pass over every record.
///
/// Hashing is deferred: an entry inserted or handed out by [`IdMap::get_mut`] is marked pending and
/// hashed at the next [`IdMap::settle`], once however often it changed, and not at all if it is
/// removed first. The core settles after every event unless its driver defers that too (the
/// simulator, which never asks for a digest per event: most of its jobs come and go between two
/// settles). [`IdMap::digest`] is exact at any time: it hashes what is still pending.
#[derive(Clone, Debug)]
pub struct IdMap<K, V> {
    entries: HashMap<K, Entry<V>, Fx>,
    /// The sum of the `counted` hashes of the entries.
    sum: u64,
    /// Keys of pending entries (a key may be listed twice if it was removed and inserted again).
    dirty: Vec<K>,
    /// Where [`IdMap::settle`] encodes the records it hashes.
    scratch: Vec<u8>,
}

#[derive(Clone, Debug)]
struct Entry<V> {
    value: V,
    /// The hash this entry adds to `sum` (0 until it is first settled).
    counted: u64,
    /// Changed since `counted` was computed: listed in `dirty`.
    pending: bool,
}

impl<K: Copy + Eq + Hash + Ord, V: RecordHash<K>> IdMap<K, V> {
    pub fn new() -> Self {
        IdMap {
            entries: HashMap::default(),
            sum: 0,
            dirty: Vec::new(),
            scratch: Vec::new(),
        }
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.entries.get(k).map(|e| &e.value)
    }

    /// The entry to change; it is rehashed at the next [`IdMap::settle`].
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let e = self.entries.get_mut(k)?;
        if !e.pending {
            e.pending = true;
            self.dirty.push(*k);
        }
        Some(&mut e.value)
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let entry = Entry {
            value: v,
            counted: 0,
            pending: true,
        };
        match self.entries.insert(k, entry) {
            Some(old) => {
                self.sum = self.sum.wrapping_sub(old.counted);
                if !old.pending {
                    self.dirty.push(k);
                }
                Some(old.value)
            }
            None => {
                self.dirty.push(k);
                None
            }
        }
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        let e = self.entries.remove(k)?;
        self.sum = self.sum.wrapping_sub(e.counted);
        Some(e.value)
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
        let mut v: Vec<(K, &V)> = self.entries.iter().map(|(k, e)| (*k, &e.value)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Entries changed since the last [`IdMap::settle`] (an upper bound: removed ones are counted).
    pub fn unsettled(&self) -> usize {
        self.dirty.len()
    }

    /// Hashes the entries changed since the last call.
    pub fn settle(&mut self) {
        for k in self.dirty.drain(..) {
            if let Some(e) = self.entries.get_mut(&k)
                && e.pending
            {
                let fresh = e.value.record_hash(&k, &mut self.scratch);
                self.sum = self.sum.wrapping_sub(e.counted).wrapping_add(fresh);
                e.counted = fresh;
                e.pending = false;
            }
        }
    }

    /// The digest of the entries: order-independent; O(1) when settled, else O(pending entries).
    pub fn digest(&self) -> u64 {
        if self.dirty.is_empty() {
            return self.sum;
        }
        let mut keys = self.dirty.clone();
        keys.sort_unstable();
        keys.dedup();
        let mut scratch = Vec::new();
        keys.iter()
            .fold(self.sum, |sum, k| match self.entries.get(k) {
                Some(e) if e.pending => sum
                    .wrapping_sub(e.counted)
                    .wrapping_add(e.value.record_hash(k, &mut scratch)),
                _ => sum,
            })
    }

    /// The same digest recomputed from every entry, to check the running one.
    pub fn digest_from_scratch(&self) -> u64 {
        let mut scratch = Vec::new();
        self.entries.iter().fold(0u64, |sum, (k, e)| {
            sum.wrapping_add(e.value.record_hash(k, &mut scratch))
        })
    }
}

impl<K: Copy + Eq + Hash + Ord, V: RecordHash<K>> Default for IdMap<K, V> {
    fn default() -> Self {
        IdMap::new()
    }
}

impl<K: Copy + Eq + Hash + Ord + Serialize, V: RecordHash<K> + Serialize> Serialize
    for IdMap<K, V>
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.sorted())
    }
}

impl<'de, K: Copy + Eq + Hash + Ord + Deserialize<'de>, V: RecordHash<K> + Deserialize<'de>>
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

/// Machine names to ids: hashed for O(1) lookups (an ephemeral pool adds and removes a name per
/// job, where an ordered map compared long common prefixes at every level). Serialized sorted by
/// name, as the ordered map it replaces, so snapshots and format-1 digests are unchanged.
#[derive(Clone, Debug, Default)]
pub struct NameIndex(HashMap<String, crate::ids::MachineId, Fx>);

impl NameIndex {
    pub fn get(&self, name: &str) -> Option<&crate::ids::MachineId> {
        self.0.get(name)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn insert(&mut self, name: String, id: crate::ids::MachineId) {
        self.0.insert(name, id);
    }

    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl Serialize for NameIndex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<(&String, &crate::ids::MachineId)> = self.0.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        s.collect_map(sorted)
    }
}

impl<'de> Deserialize<'de> for NameIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map: std::collections::BTreeMap<String, crate::ids::MachineId> =
            std::collections::BTreeMap::deserialize(d)?;
        Ok(NameIndex(map.into_iter().collect()))
    }
}
