//! Named trees for derived data (snapshots, history indexes), owned by the engine crate.
//!
//! Derived data can always be rebuilt from the log (docs/design.md invariant 1), so these trees may
//! be dropped wholesale ([`crate::Store::drop_derived`]). Keys and values are plain bytes; sled's
//! types stay behind this wrapper.

use crate::error::StoreError;
use std::ops::RangeBounds;

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One named tree of derived data. Cheap to clone.
#[derive(Clone)]
pub struct DerivedTree {
    tree: sled::Tree,
}

impl DerivedTree {
    pub(crate) fn new(tree: sled::Tree) -> Self {
        DerivedTree { tree }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    pub fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree.insert(key, value)?;
        Ok(())
    }

    pub fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.tree.remove(key)?;
        Ok(())
    }

    /// The entries with keys in `range`, in key order; `.rev()` walks it backwards.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> DerivedIter {
        DerivedIter {
            inner: self.tree.range(range),
        }
    }

    /// The entries whose keys start with `prefix`, in key order (also reversible).
    pub fn scan_prefix(&self, prefix: &[u8]) -> DerivedIter {
        DerivedIter {
            inner: self.tree.scan_prefix(prefix),
        }
    }

    /// Every entry, in key order (also reversible).
    pub fn iter(&self) -> DerivedIter {
        DerivedIter {
            inner: self.tree.iter(),
        }
    }

    /// The entry with the highest key.
    pub fn last(&self) -> Result<Option<Entry>, StoreError> {
        Ok(self.tree.last()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    /// The entry with the lowest key.
    pub fn first(&self) -> Result<Option<Entry>, StoreError> {
        Ok(self.tree.first()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Applies every insert and remove of `batch` atomically.
    pub fn apply_batch(&self, batch: DerivedBatch) -> Result<(), StoreError> {
        self.tree.apply_batch(batch.inner)?;
        Ok(())
    }

    pub fn clear(&self) -> Result<(), StoreError> {
        self.tree.clear()?;
        Ok(())
    }

    /// Makes everything written so far durable (the whole database is flushed, as sled does).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.tree.flush()?;
        Ok(())
    }
}

/// Inserts and removes applied together by [`DerivedTree::apply_batch`].
#[derive(Default)]
pub struct DerivedBatch {
    inner: sled::Batch,
}

impl DerivedBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key: &[u8], value: &[u8]) {
        self.inner.insert(key, value);
    }

    pub fn remove(&mut self, key: &[u8]) {
        self.inner.remove(key);
    }
}

/// Lets code that produces (key, value) pairs write into a batch or into a plain Vec alike.
impl Extend<(Vec<u8>, Vec<u8>)> for DerivedBatch {
    fn extend<I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.inner.insert(k, v);
        }
    }
}

/// Entries of a derived tree, forwards or (with `.rev()`) backwards.
pub struct DerivedIter {
    inner: sled::Iter,
}

impl Iterator for DerivedIter {
    type Item = Result<Entry, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }
}

impl DoubleEndedIterator for DerivedIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.inner.next_back().map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(StoreError::from)
        })
    }
}
