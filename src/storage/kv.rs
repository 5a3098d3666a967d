//! The row views projections are read and applied through. Live, writes go to an overlay of
//! pending writes on top of the sled tree (so an event sees the rows written by earlier events of
//! the same group, before anything is on disk); on rebuild and verify, to the replay's rows
//! (`rows.rs`). Query paths read the tree through `read::ReadOnly`, which offers `KvRead` only.

use std::collections::BTreeMap;

use super::StoreError;
use super::keys;
use super::projection::{self, StoredAggregate};
use crate::es::Aggregate;

/// Reading rows: what query paths need, and all that a read-only view offers.
pub trait KvRead {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Reading and writing rows: what a projection needs.
pub trait Kv: KvRead {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);
    fn delete(&mut self, key: Vec<u8>);

    /// A stream's aggregate, to be updated and written back with [`Kv::put_aggregate`].
    fn take_aggregate<A: Aggregate + Send + 'static>(
        &mut self,
        stream: &str,
    ) -> Result<Option<StoredAggregate<A>>, StoreError>
    where
        Self: Sized,
    {
        projection::load(self, stream)
    }

    /// Writes a stream's aggregate row.
    fn put_aggregate<A: Aggregate + Send + 'static>(
        &mut self,
        stream: &str,
        stored: StoredAggregate<A>,
    ) -> Result<(), StoreError>
    where
        Self: Sized,
    {
        let bytes = projection::encode_aggregate(&stored)?;
        self.put(keys::aggregate(stream), bytes);
        Ok(())
    }
}

/// Pending writes of one group on top of the tree, with a stage for the request being decided:
/// a rejected request's writes are discarded without touching the rest of the group.
pub struct Overlay<'a> {
    tree: &'a sled::Tree,
    group: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    stage: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Overlay<'a> {
    pub fn new(tree: &'a sled::Tree) -> Self {
        Self {
            tree,
            group: BTreeMap::new(),
            stage: BTreeMap::new(),
        }
    }

    pub fn commit_stage(&mut self) {
        let stage = std::mem::take(&mut self.stage);
        self.group.extend(stage);
    }

    pub fn discard_stage(&mut self) {
        self.stage.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.group.is_empty()
    }

    /// Applies the group's writes as one atomic batch.
    pub fn write(self) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in self.group {
            match value {
                Some(v) => batch.insert(key, v),
                None => batch.remove(key),
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

impl KvRead for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.stage.get(key).or_else(|| self.group.get(key)) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }
}

impl Kv for Overlay<'_> {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.stage.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.stage.insert(key, None);
    }
}

/// Rows in a plain map: the model the replay's rows (`rows.rs`) are tested against.
#[cfg(test)]
#[derive(Default, PartialEq, Eq, Debug)]
pub struct MemKv(pub BTreeMap<Vec<u8>, Vec<u8>>);

#[cfg(test)]
impl KvRead for MemKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key).cloned())
    }
}

#[cfg(test)]
impl Kv for MemKv {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.0.insert(key, value);
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.0.remove(&key);
    }
}
