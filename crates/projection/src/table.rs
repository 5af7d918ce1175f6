//! A hash map that is ordered only where order is visible.
//!
//! The DN tables are the hot path of the fold (one lookup per agent event): a `HashMap` finds a
//! DN in one hash and one compare where a `BTreeMap` of thousands of DNs does a dozen string
//! compares. Order still matters for views (sorted by id) and for snapshots (the same state must
//! give the same bytes, docs/design.md invariant 1), so iteration for those goes through [`Self::sorted`]
//! and serialization writes the entries sorted by key. Equality is a map's: order-independent.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::hash::Hash;
use std::ops::{Deref, DerefMut};

/// aHash rather than std's SipHash: a DN lookup is the fold's hot path, and its hash was the
/// largest single cost of a rebuild's fold. Its keys are still chosen per process.
type Hasher = ahash::RandomState;

#[derive(Clone, Debug)]
pub(crate) struct SortedHashMap<K, V>(HashMap<K, V, Hasher>);

impl<K, V> Default for SortedHashMap<K, V> {
    fn default() -> Self {
        SortedHashMap(HashMap::default())
    }
}

impl<K: Eq + Hash, V: PartialEq> PartialEq for SortedHashMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<K: Eq + Hash, V: Eq> Eq for SortedHashMap<K, V> {}

impl<K: Ord, V> SortedHashMap<K, V> {
    /// The entries sorted by key.
    pub(crate) fn sorted(&self) -> Vec<(&K, &V)> {
        let mut v: Vec<_> = self.0.iter().collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }
}

impl<K, V> Deref for SortedHashMap<K, V> {
    type Target = HashMap<K, V, Hasher>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<K, V> DerefMut for SortedHashMap<K, V> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<K: Ord + Serialize, V: Serialize> Serialize for SortedHashMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.sorted())
    }
}

impl<'de, K: Eq + Hash + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de>
    for SortedHashMap<K, V>
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HashMap::deserialize(d).map(SortedHashMap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_sorted_whatever_the_insertion_order() {
        let mut a = SortedHashMap::default();
        let mut b = SortedHashMap::default();
        for i in 0..100 {
            a.insert(format!("{i:03}"), i);
            b.insert(format!("{:03}", 99 - i), 99 - i);
        }
        assert_eq!(a, b);
        let (ja, jb) = (
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap(),
        );
        assert_eq!(ja, jb);
        assert!(ja.starts_with(r#"{"000":0,"001":1,"#), "{ja}");
        let back: SortedHashMap<String, i32> = serde_json::from_str(&ja).unwrap();
        assert_eq!(back, a);
    }
}
