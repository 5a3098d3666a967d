//! The only module that imports sled. One store directory, one tree (layout in `keys.rs`), one
//! writer thread that owns every append (`writer.rs`), inline projections (`projection.rs`), and
//! the replay that rebuilds and verifies them (`verify.rs`). Reads are point lookups straight
//! from the tree.

mod feed;
mod idempotency;
mod keyring;
mod keys;
mod kv;
mod projection;
mod verify;
mod writer;

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use tokio::sync::oneshot;

pub use feed::{Feed, FeedPage};
pub use idempotency::{Fingerprint, IdempotencyClaim, IdempotencyTicket, RETENTION_MS};
use keyring::Keyring;
pub use projection::StoredAggregate;
pub use verify::VerifyReport;
use writer::{Job, Writer};

use crate::crypto::{DataKey, KeyedHasher, MasterKey, TokenHash};
use crate::domain::credential::Credential;
use crate::es::{Aggregate, Envelope, EventMeta, ExpectedVersion, NewEvent, StreamId};

/// The on-disk schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Sled(#[from] sled::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the store is corrupt: {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("the hash chain is broken at position {position}: {reason}")]
    Chain { position: u64, reason: String },
    #[error(
        "the store has schema version {found}, but this keyledger understands only version {supported}; use a matching keyledger release"
    )]
    UnsupportedSchema { found: u32, supported: u32 },
    #[error(
        "the master key does not open this store (wrong key, or the store was keyed with another)"
    )]
    WrongMasterKey,
    #[error("the store is in use by another keyledger process (stop the server first)")]
    Locked,
    #[error("the store is shut down")]
    Closed,
}

/// Why an append did not happen. A conflict and a unique-index collision are normal outcomes the
/// caller answers for; `Store` is a failure of the machine.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream} is at version {actual}, the append expected {expected:?}")]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error("{index} {value:?} is already taken")]
    Unique { index: &'static str, value: String },
    #[error("the event cannot be projected: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub meta: EventMeta,
    /// A data key to store or destroy atomically with the events.
    pub data_key: Option<DataKeyChange>,
}

/// A change to the key store (`k/` rows), made in the same batch as the events it goes with.
#[derive(Clone)]
pub enum DataKeyChange {
    /// Keep this record's wrapped data key.
    Store { record: String, wrapped: Vec<u8> },
    /// Destroy this record's data key: its ciphertext in the log can never be opened again.
    Destroy { record: String },
}

/// A secondary index to list aggregates by.
pub enum Index<'a> {
    /// An account's credentials, oldest first.
    AccountCredentials(&'a str),
}

/// How durable an acknowledged append is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// sled flush and fdatasync of the store file before acknowledging: survives a process crash
    /// and power loss. The only mode `serve` exposes.
    Sync,
    /// Acknowledge without flushing: exists only to show that the crash test catches lost
    /// writes. Never use it for data you care about.
    UnsafeNoSync,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tokens: KeyedHasher,
    chain: KeyedHasher,
    idempotency: idempotency::Idempotency,
    keyring: Arc<Keyring>,
    jobs: Mutex<Option<Sender<Job>>>,
    /// The last durable position, updated after every group commit.
    positions: tokio::sync::watch::Receiver<u64>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Opens (or creates) the store in `dir`, checking its schema version and that `master`
    /// opens its keys, and starts the writer.
    pub fn open(
        dir: &Path,
        master: &MasterKey,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)?;
        let db = sled::Config::new().path(dir).open().map_err(|e| match e {
            // sled reports a held lock as an i/o error that only its text identifies.
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StoreError::Locked
            }
            other => StoreError::Sled(other),
        })?;
        let tree: sled::Tree = (*db).clone();
        let (chain_key, token_key) = init_or_check(&tree, master)?;
        let chain = KeyedHasher::new(&chain_key);
        let idempotency = idempotency::Idempotency::open(&tree, master)?;
        let (position, last_hash) = verify::tail(&tree)?;
        let sync_file = match durability {
            Durability::Sync => Some(OpenOptions::new().read(true).open(dir.join("db"))?),
            Durability::UnsafeNoSync => None,
        };
        let keyring = Arc::new(Keyring::open(dir)?);
        destroy_orphan_keys(&tree, &keyring)?;
        let (durable, positions) = tokio::sync::watch::channel(position);
        let writer = Writer {
            tree,
            db: db.clone(),
            chain: chain.clone(),
            sync_file,
            position,
            last_hash,
            keyring: keyring.clone(),
            durable,
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = std::thread::Builder::new()
            .name("keyledger-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tokens: KeyedHasher::new(&token_key),
                chain,
                idempotency,
                keyring,
                jobs: Mutex::new(Some(tx)),
                positions,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        let jobs = self.inner.jobs.lock().map_err(|_| StoreError::Closed)?;
        jobs.as_ref()
            .ok_or(StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)
    }

    /// Appends events to one stream, acknowledged once they are durable.
    pub async fn append(&self, request: AppendRequest) -> Result<Vec<Envelope>, AppendError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Append(request, tx))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// [`Store::append`] for callers outside an async runtime (the CLI, benchmarks).
    pub fn append_blocking(&self, request: AppendRequest) -> Result<Vec<Envelope>, AppendError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Append(request, tx))?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// Runs `work` on the writer thread between groups, with nothing appended meanwhile.
    fn exclusive<T: Send + 'static>(
        &self,
        work: impl FnOnce(&sled::Tree) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Job::Exclusive(Box::new(move |tree| {
            let _ = tx.send(work(tree));
        })))?;
        rx.recv().map_err(|_| StoreError::Closed)
    }

    /// Checks the hash chain and that the live projections equal a replay of the log.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let chain = self.inner.chain.clone();
        self.exclusive(move |tree| {
            let (events, replayed) = verify::replay(tree, &chain)?;
            let live = verify::live_projections(tree)?;
            Ok(verify::compare(events, &replayed, &live))
        })?
    }

    /// Drops every projection row and rewrites them from the log; answers how many events were
    /// replayed.
    pub fn rebuild(&self) -> Result<u64, StoreError> {
        let chain = self.inner.chain.clone();
        let db = self.inner.db.clone();
        self.exclusive(move |tree| {
            let (events, replayed) = verify::replay(tree, &chain)?;
            let mut batch = sled::Batch::default();
            for (key, _) in verify::live_projections(tree)?.0 {
                batch.remove(key);
            }
            for (key, value) in replayed.0 {
                batch.insert(key, value);
            }
            tree.apply_batch(batch)?;
            db.flush()?;
            Ok(events)
        })?
    }

    /// Stops the writer after it has committed everything already queued, and flushes.
    pub fn shutdown(&self) {
        self.inner.stop_writer();
    }

    pub fn is_running(&self) -> bool {
        self.inner.jobs.lock().map(|j| j.is_some()).unwrap_or(false)
    }

    // ---- reads ----

    /// An aggregate's current state and version, from its projection.
    pub fn load<A: Aggregate>(
        &self,
        stream: &StreamId,
    ) -> Result<Option<StoredAggregate<A>>, StoreError> {
        projection::load(&ReadOnly(&self.inner.db), stream.as_str())
    }

    /// Keyed hash of a presented token.
    pub fn hash_token(&self, token: &str) -> TokenHash {
        self.inner.tokens.token(token)
    }

    /// The account and key a token hash belongs to, if it is live.
    pub fn find_token(&self, hash: &TokenHash) -> Result<Option<(String, String)>, StoreError> {
        let Some(value) = self.inner.db.get(keys::token(&hash.0))? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&value).ok();
        let pair = text.and_then(|t| t.split_once('\0'));
        pair.map(|(a, k)| (a.to_owned(), k.to_owned()))
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt {
                what: "token index".into(),
                reason: "not account\\0key".into(),
            })
    }

    /// Reads one event by position.
    pub fn event(&self, position: u64) -> Result<Option<Envelope>, StoreError> {
        self.inner
            .db
            .get(keys::log(position))?
            .map(|v| verify::decode_log_value(position, &v).map(|(_, e)| e))
            .transpose()
    }

    /// Every event of a stream, in order.
    pub fn stream_events(&self, stream: &StreamId) -> Result<Vec<Envelope>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .inner
            .db
            .scan_prefix(keys::stream_events(stream.as_str()))
        {
            let (_, position) = item?;
            let position = keys::u64_value(&position).ok_or_else(|| StoreError::Corrupt {
                what: format!("stream index of {stream}"),
                reason: "not a position".into(),
            })?;
            out.extend(self.event(position)?);
        }
        Ok(out)
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
        let prefix = match index {
            Index::AccountCredentials(account_id) => keys::byok_index_prefix(account_id),
        };
        let start = match after {
            // The smallest key after `prefix ‖ after`.
            Some(id) => [&prefix[..], id.as_bytes(), &[0]].concat(),
            None => prefix.clone(),
        };
        let mut items = Vec::new();
        let mut last = None;
        for row in self.inner.db.range(start..) {
            let (key, _) = row?;
            let Some(id) = key.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if items.len() == limit {
                return Ok((items, last));
            }
            let id = String::from_utf8_lossy(id).into_owned();
            if let Some(stored) = self.load::<A>(&StreamId::new(A::KIND, &id))?
                && keep(&stored.state)
            {
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

    /// The last position written.
    pub fn last_position(&self) -> Result<u64, StoreError> {
        Ok(verify::tail(&self.inner.db)?.0)
    }

    // ---- meta and operational rows (not events) ----

    pub fn admin_token(&self) -> Result<Option<TokenHash>, StoreError> {
        Ok(self
            .inner
            .db
            .get(keys::ADMIN_TOKEN)?
            .and_then(|v| <[u8; 32]>::try_from(v.as_ref()).ok())
            .map(TokenHash))
    }

    pub fn set_admin_token(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.inner.db.insert(keys::ADMIN_TOKEN, &hash.0[..])?;
        self.inner.db.flush()?;
        Ok(())
    }

    pub fn clear_admin_token(&self) -> Result<(), StoreError> {
        self.inner.db.remove(keys::ADMIN_TOKEN)?;
        self.inner.db.flush()?;
        Ok(())
    }

    /// Records when a key was last used. Best effort, not an event: it is operational metadata,
    /// written without waiting for a flush.
    pub fn touch_key(&self, key_id: &str, unix_millis: i64) -> Result<(), StoreError> {
        self.inner
            .db
            .insert(keys::key_last_used(key_id), &unix_millis.to_be_bytes()[..])?;
        Ok(())
    }

    pub fn key_last_used(&self, key_id: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .inner
            .db
            .get(keys::key_last_used(key_id))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes))
    }

    /// Overwrites a raw log value. Exists only so tests can show that `verify` detects tampering.
    #[doc(hidden)]
    pub fn tamper_with_event(
        &self,
        position: u64,
        edit: impl FnOnce(&mut Envelope),
    ) -> Result<(), StoreError> {
        let Some(value) = self.inner.db.get(keys::log(position))? else {
            return Ok(());
        };
        let (hash, mut envelope) = verify::decode_log_value(position, &value)?;
        edit(&mut envelope);
        let json = serde_json::to_vec(&envelope)?;
        self.inner
            .db
            .insert(keys::log(position), [&hash[..], &json].concat())?;
        Ok(())
    }

    /// Deletes a projection row of an aggregate. Exists only so tests can show that `verify`
    /// notices and `rebuild` repairs.
    #[doc(hidden)]
    pub fn drop_aggregate_row(&self, stream: &StreamId) -> Result<(), StoreError> {
        self.inner.db.remove(keys::aggregate(stream.as_str()))?;
        Ok(())
    }
}

impl Inner {
    /// Closes the job channel and waits for the writer to commit what is queued and exit.
    fn stop_writer(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(handle) = self.writer.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

/// Reads straight from the tree, for query paths that share projection decoders.
struct ReadOnly<'a>(&'a sled::Tree);

impl kv::Kv for ReadOnly<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(key)?.map(|v| v.to_vec()))
    }
    fn put(&mut self, _: Vec<u8>, _: Vec<u8>) {}
    fn delete(&mut self, _: Vec<u8>) {}
}

/// Destroys keys left without a live credential by a crash between a key's file and its event
/// (a registration that never became durable, or a revocation whose key outlived it).
fn destroy_orphan_keys(tree: &sled::Tree, keyring: &Keyring) -> Result<(), StoreError> {
    for record in keyring.records()? {
        let stream = StreamId::new(Credential::KIND, &record);
        let live = projection::load::<Credential>(&ReadOnly(tree), stream.as_str())?
            .is_some_and(|stored| !stored.state.is_revoked());
        if !live {
            keyring.destroy(&record)?;
        }
    }
    Ok(())
}

const CHAIN_KEY_AD: &[u8] = b"keyledger/store/chain-key";
const TOKEN_KEY_AD: &[u8] = b"keyledger/store/token-key";

/// A new store gets its schema version and two random store keys, wrapped by the master key: the
/// chain key (hash chain) and the token key (API token hashes). Wrapping rather than deriving lets
/// a re-key re-wrap them without rewriting the log or invalidating tokens.
fn init_or_check(tree: &sled::Tree, master: &MasterKey) -> Result<(DataKey, DataKey), StoreError> {
    match tree.get(keys::SCHEMA)? {
        None => {
            if !tree.is_empty() {
                return Err(StoreError::Corrupt {
                    what: "store metadata".into(),
                    reason: "the schema version is missing but the store holds data".into(),
                });
            }
            let chain = DataKey::generate();
            let token = DataKey::generate();
            let mut batch = sled::Batch::default();
            batch.insert(keys::SCHEMA, &SCHEMA_VERSION.to_be_bytes()[..]);
            batch.insert(keys::CHAIN_KEY, master.wrap(&chain, CHAIN_KEY_AD));
            batch.insert(keys::TOKEN_KEY, master.wrap(&token, TOKEN_KEY_AD));
            tree.apply_batch(batch)?;
            tree.flush()?;
            Ok((chain, token))
        }
        Some(raw) => {
            let found = <[u8; 4]>::try_from(raw.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "schema version".into(),
                    reason: "not a 4-byte integer".into(),
                })?;
            if found != SCHEMA_VERSION {
                return Err(StoreError::UnsupportedSchema {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            let unwrap = |key: &[u8], ad: &[u8]| -> Result<DataKey, StoreError> {
                let wrapped = tree.get(key)?.ok_or_else(|| StoreError::Corrupt {
                    what: "store metadata".into(),
                    reason: format!("{} is missing", String::from_utf8_lossy(key)),
                })?;
                master
                    .unwrap_key(&wrapped, ad)
                    .map_err(|_| StoreError::WrongMasterKey)
            };
            Ok((
                unwrap(keys::CHAIN_KEY, CHAIN_KEY_AD)?,
                unwrap(keys::TOKEN_KEY, TOKEN_KEY_AD)?,
            ))
        }
    }
}

/// Writes a schema version into an existing store. Exists only so tests can show that a store of
/// an unknown version is refused.
#[doc(hidden)]
pub fn force_schema_version(dir: &Path, version: u32) -> Result<(), StoreError> {
    let db = sled::Config::new().path(dir).open()?;
    db.insert(keys::SCHEMA, &version.to_be_bytes()[..])?;
    db.flush()?;
    Ok(())
}
