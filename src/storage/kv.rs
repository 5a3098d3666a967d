//! The row views projections are read and applied through. Live, writes go to an overlay of
//! pending writes on top of the sled tree (so an event sees the rows written by earlier events of
//! the same group, before anything is on disk); on rebuild and verify, to the replay's rows
//! (`rows.rs`). Query paths read the tree through `read::ReadOnly`, which offers `KvRead` only.
//!
//! Live, aggregate (`a/`) rows also travel decoded: the overlay keeps the state it stages, and
//! the writer keeps the states and stream heads of recent groups in an [`AggregateCache`], so an
//! append to a stream it has just written reads neither that stream's row nor its head again,
//! and decodes nothing. The rows themselves are written exactly as before; only the reading is
//! saved.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};

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

    /// Whether the rows are those of a live append, which writes outbox rows (`webhooks.rs`):
    /// a replay (rebuild, verify, the check on start) never does, so history is never
    /// delivered again (docs/adr/0029).
    fn delivers(&self) -> bool {
        false
    }

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

/// A decoded `StoredAggregate<A>` of whichever aggregate its row belongs to, and the size of
/// its encoded row.
struct Decoded {
    state: Box<dyn Any + Send>,
    row_len: usize,
}

impl Decoded {
    fn new<A: Aggregate + Send + 'static>(stored: StoredAggregate<A>, row_len: usize) -> Self {
        Self {
            state: Box::new(stored),
            row_len,
        }
    }

    fn into_stored<A: Aggregate + Send + 'static>(self) -> Option<StoredAggregate<A>> {
        self.state.downcast::<StoredAggregate<A>>().ok().map(|b| *b)
    }

    fn to_stored<A: Aggregate + Send + 'static>(&self) -> Option<StoredAggregate<A>> {
        self.state
            .downcast_ref::<StoredAggregate<A>>()
            .map(|s| StoredAggregate {
                stream_version: s.stream_version,
                state: s.state.clone(),
            })
    }
}

/// The decoded aggregates of the rows the writer last wrote, by `a/` key: exactly the tree's
/// rows, decoded, because only the writer writes them and it keeps an entry only once its group
/// is durable. Anything that changes rows behind the writer's back (a rebuild, a group that
/// failed to persist) empties it. Bounded by the encoded size of the rows it holds; when full it
/// starts over, and the streams still being written come back after one read each.
pub struct AggregateCache {
    rows: HashMap<Vec<u8>, Decoded>,
    bytes: usize,
    budget: usize,
    /// The `h/` rows of recent durable groups, by key, decoded: the version an append's
    /// expectation is checked against.
    heads: HashMap<Vec<u8>, u64>,
}

impl AggregateCache {
    /// The encoded bytes of rows it holds at most: thousands of ordinary aggregates (a
    /// credential's row is about 1 KB) or a few of the largest accounts; decoded, they take a few
    /// times that in memory.
    pub const BUDGET: usize = 16 << 20;

    /// Stream heads it holds at most (a few MB); when full it starts over, like the rows.
    const HEADS: usize = 1 << 16;

    pub fn new(budget: usize) -> Self {
        Self {
            rows: HashMap::new(),
            bytes: 0,
            budget,
            heads: HashMap::new(),
        }
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.bytes = 0;
        self.heads.clear();
    }

    fn keep_head(&mut self, key: Vec<u8>, version: u64) {
        if self.heads.len() >= Self::HEADS && !self.heads.contains_key(&key) {
            self.heads.clear();
        }
        self.heads.insert(key, version);
    }

    fn take(&mut self, key: &[u8]) -> Option<Decoded> {
        let entry = self.rows.remove(key)?;
        self.bytes -= entry.row_len;
        Some(entry)
    }

    fn keep(&mut self, key: Vec<u8>, entry: Decoded) {
        if let Some(old) = self.rows.remove(&key) {
            self.bytes -= old.row_len;
        }
        if self.bytes + entry.row_len > self.budget {
            self.clear();
        }
        if entry.row_len <= self.budget {
            self.bytes += entry.row_len;
            self.rows.insert(key, entry);
        }
    }

    fn forget(&mut self, key: &[u8]) {
        self.take(key);
    }
}

/// Pending writes of one group on top of the tree, with a stage for the request being decided:
/// a rejected request's writes are discarded without touching the rest of the group. Aggregate
/// rows it stages are kept decoded beside their bytes, stage and group alike.
pub struct Overlay<'a> {
    tree: &'a sled::Tree,
    group: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    stage: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    group_aggregates: HashMap<Vec<u8>, Decoded>,
    stage_aggregates: HashMap<Vec<u8>, Decoded>,
    /// The `h/` rows of the batch written, kept once it is durable.
    written_heads: Vec<(Vec<u8>, u64)>,
    /// The outbox rows of the batch written, handed to the dispatcher once it is durable.
    written_outbox: Vec<(Vec<u8>, Vec<u8>)>,
    cache: &'a mut AggregateCache,
}

impl<'a> Overlay<'a> {
    pub fn new(tree: &'a sled::Tree, cache: &'a mut AggregateCache) -> Self {
        Self {
            tree,
            group: BTreeMap::new(),
            stage: BTreeMap::new(),
            group_aggregates: HashMap::new(),
            stage_aggregates: HashMap::new(),
            written_heads: Vec::new(),
            written_outbox: Vec::new(),
            cache,
        }
    }

    pub fn commit_stage(&mut self) {
        for (key, value) in std::mem::take(&mut self.stage) {
            // An aggregate row written as plain bytes replaces whatever decoded state the
            // group held for it.
            if is_aggregate_row(&key) && !self.stage_aggregates.contains_key(&key) {
                self.group_aggregates.remove(&key);
            }
            self.group.insert(key, value);
        }
        self.group_aggregates.extend(self.stage_aggregates.drain());
    }

    pub fn discard_stage(&mut self) {
        self.stage.clear();
        self.stage_aggregates.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.group.is_empty()
    }

    /// The stream's head: the stream version of its last event, 0 for a stream without events.
    /// Read from the group's own `h/` row if it wrote one, else from the heads the cache holds
    /// (the rows recent durable groups wrote), and only then from the tree's `h/` row.
    pub fn head(&self, stream: &str) -> Result<u64, StoreError> {
        let key = keys::head(stream);
        let decode = |v: &[u8]| {
            keys::u64_value(v).ok_or_else(|| StoreError::Corrupt {
                what: format!("head of {stream}"),
                reason: "not a u64".into(),
            })
        };
        match self.stage.get(&key).or_else(|| self.group.get(&key)) {
            Some(Some(row)) => decode(row),
            Some(None) => Ok(0),
            None => match self.cache.heads.get(&key) {
                Some(&version) => Ok(version),
                None => self.tree.get(&key)?.map_or(Ok(0), |v| decode(&v)),
            },
        }
    }

    /// Applies the group's writes as one atomic batch. The decoded aggregates stay until
    /// [`Overlay::settle`] says whether the batch is durable.
    pub fn write(&mut self) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in std::mem::take(&mut self.group) {
            if is_aggregate_row(&key) && !self.group_aggregates.contains_key(&key) {
                self.cache.forget(&key);
            }
            if key.starts_with(keys::HEAD) {
                match value.as_deref().map(keys::u64_value) {
                    Some(Some(version)) => self.written_heads.push((key.clone(), version)),
                    _ => {
                        self.cache.heads.remove(&key);
                    }
                }
            }
            match value {
                Some(v) => {
                    if key.starts_with(keys::OUTBOX) {
                        self.written_outbox.push((key.clone(), v.clone()));
                    }
                    batch.insert(key, v)
                }
                None => batch.remove(key),
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Ends the group: once its batch is durable, the writer keeps the aggregates it wrote and
    /// answers the outbox rows it wrote; otherwise the tree may or may not hold them, the cache
    /// starts over and no row is answered (the dispatcher's next start finds any that stayed).
    pub fn settle(self, durable: bool) -> Vec<(Vec<u8>, Vec<u8>)> {
        if durable {
            for (key, entry) in self.group_aggregates {
                self.cache.keep(key, entry);
            }
            for (key, version) in self.written_heads {
                self.cache.keep_head(key, version);
            }
            self.written_outbox
        } else {
            self.cache.clear();
            Vec::new()
        }
    }
}

fn is_aggregate_row(key: &[u8]) -> bool {
    key.starts_with(keys::AGGREGATE)
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
    fn delivers(&self) -> bool {
        true
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        if is_aggregate_row(&key) {
            self.stage_aggregates.remove(&key);
        }
        self.stage.insert(key, Some(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        if is_aggregate_row(&key) {
            self.stage_aggregates.remove(&key);
        }
        self.stage.insert(key, None);
    }

    /// Newest first: the stage (taken: it is written back before the stage ends), the group
    /// (copied: a rejected request must leave it as it was), the cache (taken: the tree still
    /// holds the row), and only then the tree's row, decoded.
    fn take_aggregate<A: Aggregate + Send + 'static>(
        &mut self,
        stream: &str,
    ) -> Result<Option<StoredAggregate<A>>, StoreError> {
        let key = keys::aggregate(stream);
        if let Some(entry) = self.stage_aggregates.remove(&key)
            && let Some(stored) = entry.into_stored()
        {
            return Ok(Some(stored));
        }
        if !self.stage.contains_key(&key) {
            if let Some(entry) = self.group_aggregates.get(&key)
                && let Some(stored) = entry.to_stored()
            {
                return Ok(Some(stored));
            }
            if !self.group.contains_key(&key)
                && let Some(entry) = self.cache.take(&key)
                && let Some(stored) = entry.into_stored()
            {
                return Ok(Some(stored));
            }
        }
        projection::load(self, stream)
    }

    fn put_aggregate<A: Aggregate + Send + 'static>(
        &mut self,
        stream: &str,
        stored: StoredAggregate<A>,
    ) -> Result<(), StoreError> {
        let key = keys::aggregate(stream);
        let bytes = projection::encode_aggregate(&stored)?;
        let entry = Decoded::new(stored, bytes.len());
        self.stage.insert(key.clone(), Some(bytes));
        self.stage_aggregates.insert(key, entry);
        Ok(())
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

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::AccountId;
    use crate::domain::account::Account;

    const STREAM: &str = "account:acct_01M83WSGZCA5P4FYV8YQM5SFYW";

    fn stored(stream_version: u64) -> StoredAggregate<Account> {
        StoredAggregate {
            stream_version,
            state: Account {
                account_id: AccountId::from_ulid(1),
                email: format!("v{stream_version}@example.com"),
                created_at: DateTime::<Utc>::UNIX_EPOCH,
            },
        }
    }

    fn version(overlay: &mut Overlay<'_>) -> Option<u64> {
        let taken = overlay.take_aggregate::<Account>(STREAM).unwrap();
        taken.map(|s| s.stream_version)
    }

    /// One group: stage `stream_version`, write it, and settle as `durable`.
    fn group(tree: &sled::Tree, cache: &mut AggregateCache, stream_version: u64, durable: bool) {
        let mut overlay = Overlay::new(tree, cache);
        overlay
            .put_aggregate(STREAM, stored(stream_version))
            .unwrap();
        overlay.put(keys::head(STREAM), stream_version.to_be_bytes().to_vec());
        overlay.commit_stage();
        overlay.write().unwrap();
        overlay.settle(durable);
    }

    #[test]
    fn the_cache_holds_what_durable_groups_wrote_and_nothing_a_rejected_request_staged() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let mut cache = AggregateCache::new(AggregateCache::BUDGET);
        group(&db, &mut cache, 1, true);
        assert_eq!(cache.rows.len(), 1);
        assert_eq!(cache.heads.get(&keys::head(STREAM)), Some(&1));
        assert_eq!(Overlay::new(&db, &mut cache).head(STREAM).unwrap(), 1);

        let mut overlay = Overlay::new(&db, &mut cache);
        assert_eq!(version(&mut overlay), Some(1));
        overlay.put_aggregate(STREAM, stored(2)).unwrap();
        overlay.discard_stage();
        // Taken from the cache and discarded: the tree's row answers, as it was.
        assert_eq!(version(&mut overlay), Some(1));
        overlay.put_aggregate(STREAM, stored(2)).unwrap();
        overlay.commit_stage();
        // A later request of the same group sees the group's state, and rejecting it leaves
        // that state in place.
        assert_eq!(version(&mut overlay), Some(2));
        overlay.discard_stage();
        assert_eq!(version(&mut overlay), Some(2));
        overlay.discard_stage();
        overlay.write().unwrap();
        overlay.settle(true);
        assert_eq!(version(&mut Overlay::new(&db, &mut cache)), Some(2));

        // A group that did not become durable empties the cache: the tree decides again.
        group(&db, &mut cache, 3, false);
        assert!(cache.rows.is_empty() && cache.heads.is_empty());
        assert_eq!(Overlay::new(&db, &mut cache).head(STREAM).unwrap(), 3);
        assert_eq!(version(&mut Overlay::new(&db, &mut cache)), Some(3));
    }

    #[test]
    fn the_cache_keeps_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let row_len = projection::encode_aggregate(&stored(1)).unwrap().len();
        let mut cache = AggregateCache::new(row_len - 1);
        group(&db, &mut cache, 1, true);
        assert!(
            cache.rows.is_empty(),
            "a row larger than the budget is not kept"
        );
        let mut cache = AggregateCache::new(row_len);
        group(&db, &mut cache, 1, true);
        assert_eq!((cache.rows.len(), cache.bytes), (1, row_len));
        group(&db, &mut cache, 2, true);
        assert_eq!((cache.rows.len(), cache.bytes), (1, row_len));
    }
}
