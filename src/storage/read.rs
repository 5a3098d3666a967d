//! Reads, straight from the tree and never through the writer: point reads (an aggregate's
//! projected state, a token's key, one event, a data key) and listings under a secondary index.
//! The writer acknowledges only after its batch is in the tree, so a caller sees its own writes.
//! A record that turns out damaged is reported to readiness (`integrity.rs`) on its way out.

use super::kv::KvRead;
use super::{Store, StoreError, StoredAggregate, keys, projection, verify};
use crate::crypto::TokenHash;
use crate::domain::{AccountId, KeyId};
use crate::es::{Aggregate, Envelope, StreamId};

/// A secondary index to list aggregates by.
pub enum Index<'a> {
    /// An account's credentials, oldest first.
    AccountCredentials(&'a AccountId),
    /// An account's API keys, oldest first.
    AccountKeys(&'a AccountId),
    /// An account's webhook endpoints, oldest first (deleted ones are out of it).
    AccountWebhooks(&'a AccountId),
}

/// The tree seen through the projections' row interface, for query paths that share their
/// decoders. It can only read: writes go through the writer.
pub(super) struct ReadOnly<'a>(pub(super) &'a sled::Tree);

impl KvRead for ReadOnly<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }
}

impl Store {
    /// An aggregate's current state and stream version, from its projection.
    pub fn load<A: Aggregate>(
        &self,
        stream: &StreamId,
    ) -> Result<Option<StoredAggregate<A>>, StoreError> {
        projection::load(&ReadOnly(&self.inner.db), stream.as_str())
            .map_err(|e| self.noticed(e, None))
    }

    /// Keyed hash of a presented token.
    pub fn hash_token(&self, token: &str) -> TokenHash {
        self.inner.tokens.token(token)
    }

    /// The account and key a token hash belongs to, if it is live.
    pub fn find_token(&self, hash: &TokenHash) -> Result<Option<(AccountId, KeyId)>, StoreError> {
        self.read_token(hash).map_err(|e| self.noticed(e, None))
    }

    fn read_token(&self, hash: &TokenHash) -> Result<Option<(AccountId, KeyId)>, StoreError> {
        let Some(value) = self.inner.db.get(keys::token(&hash.0))? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&value).ok();
        let pair = text.and_then(|t| t.split_once('\0'));
        pair.and_then(|(a, k)| Some((AccountId::parse(a)?, KeyId::parse(k)?)))
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                what: "token index".into(),
                reason: "not account id\\0key id".into(),
            })
    }

    /// Reads one event by position.
    pub fn event(&self, position: u64) -> Result<Option<Envelope>, StoreError> {
        let read = || {
            self.inner
                .db
                .get(keys::log(position))?
                .map(|v| verify::decode_log_value(position, &v).map(|(_, e)| e))
                .transpose()
        };
        read().map_err(|e| self.noticed(e, Some(position)))
    }

    /// A record's wrapped data key, or `None` once destroyed.
    pub fn data_key(&self, record: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.keyring.get(record)?)
    }

    /// Aggregates listed under an index (`i/…`), in key order, starting after the id `after`,
    /// keeping those `keep` accepts, at most `limit`. Also answers, when more may follow, the
    /// last id looked at, for the next page's cursor.
    pub fn list<A: Aggregate>(
        &self,
        index: Index<'_>,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&A) -> bool,
    ) -> Result<(Vec<StoredAggregate<A>>, Option<String>), StoreError> {
        let (prefix, what) = match index {
            Index::AccountCredentials(account_id) => (
                keys::byok_index_prefix(account_id),
                "credential index of an account",
            ),
            Index::AccountKeys(account_id) => (
                keys::key_index_prefix(account_id),
                "key index of an account",
            ),
            Index::AccountWebhooks(account_id) => (
                keys::webhook_index_prefix(account_id),
                "webhook index of an account",
            ),
        };
        let start = match after {
            // The smallest key after `prefix ‖ after`.
            Some(id) => [&prefix[..], id.as_bytes(), &[0]].concat(),
            None => prefix.clone(),
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            what: what.into(),
            reason,
        };
        let mut items = Vec::new();
        let mut last = None;
        for row in self.inner.db.range(start..) {
            let (key, _) = row.map_err(|e| self.noticed(e.into(), None))?;
            let Some(id) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if items.len() == limit {
                return Ok((items, last));
            }
            let id = std::str::from_utf8(id)
                .map_err(|_| self.noticed(corrupt("an id that is not UTF-8".into()), None))?
                .to_owned();
            // The index row and the aggregate are written in one batch: one without the other
            // is damage, not an empty slot. (`load` reports its own damage.)
            let stored = self
                .load::<A>(&StreamId::new(A::KIND, &id))?
                .ok_or_else(|| {
                    self.noticed(corrupt(format!("{id} has no aggregate state")), None)
                })?;
            if keep(&stored.state) {
                items.push(stored);
            }
            last = Some(id);
        }
        Ok((items, None))
    }

    /// Watches the last durable position: tailing readers wait on it for new events.
    pub fn positions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.positions.clone()
    }
}
