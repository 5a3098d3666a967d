//! The only module that imports sled. One store directory, one tree (layout in `keys.rs`), one
//! writer thread that owns every append (`writer.rs`), inline projections (`projection.rs`), and
//! the replay that rebuilds and verifies them (`replay.rs`, `rows.rs`, `verify.rs`). Reads are
//! point lookups and range scans straight from the tree (`read.rs`, `feed.rs`). Must not import
//! actix, utoipa, `service` or `http`.
//!
//! | file | owns |
//! |---|---|
//! | `error.rs` | `StoreError`, `AppendError`, `UniqueIndex` |
//! | `open.rs` | opening: refusing a missing store where one must exist, sled's lock, the recorded head, the store schema, the store keys, rebuilding projections of another format, the sweep of leftover data keys |
//! | `files.rs` | the modes of the data directory's files (0700 / 0600) |
//! | `head.rs` | the log's durable head, recorded outside sled (`chain-head`) |
//! | `integrity.rs` | readiness: the check on start, damage found by reads, its log lines and metric |
//! | `append.rs` | `AppendRequest`, `DataKeyChange`, handing an append to the writer |
//! | `writer.rs` | the writer thread, group commit, the durable-position watch, the age of its oldest unanswered job |
//! | `read.rs` | point reads and index listings |
//! | `feed.rs` | feed pages |
//! | `tail.rs` | the log in order for followers, the follower's applied position |
//! | `meta.rs` | the admin token hash and key last-use rows |
//! | `idempotency.rs` | idempotency records |
//! | `keyring.rs` | the data key files under `keys/` |
//! | `keys.rs`, `kv.rs`, `projection.rs` | the key layout, the row views, the inline projections |
//! | `webhooks.rs` | webhook rows: the endpoints' projection and subscriptions, the outbox, delivery attempts |
//! | `usage.rs` | the usage rows: dedupe rows of request ids, hour and day buckets, their sweep |
//! | `account_keys.rs` | the projection of API keys: their rows, the account's key index, the token index, in both layouts |
//! | `replay.rs` | walking the log with the chain check, projecting every event, progress |
//! | `rows.rs` | the rows a replay produces, held compactly, and their comparison with the live rows |
//! | `verify.rs` | the hash chain, `verify` and `rebuild` |
//! | `hooks.rs` | entry points for tests and benches only (`test-hooks` feature) |
//! | `backup.rs` | export as NDJSON at one position, import into an empty directory |
//! | `rekey.rs` | re-wrapping the key files and store keys under a new master key; who owns a key file |

mod account_keys;
mod append;
mod backup;
mod error;
mod feed;
mod files;
mod head;
#[cfg(feature = "test-hooks")]
mod hooks;
mod idempotency;
mod integrity;
mod keyring;
mod keys;
mod kv;
mod meta;
mod open;
mod projection;
mod read;
mod rekey;
mod replay;
mod rows;
mod tail;
mod usage;
mod verify;
mod webhooks;
mod writer;

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

pub use append::{AppendRequest, DataKeyChange, StreamAppend};
pub use backup::{BackupError, EXPORT_FORMAT, ExportReport, ImportReport, import};
pub use error::{AppendError, StoreError, UniqueIndex};
pub use feed::{Feed, FeedPage};
pub use files::private_umask;
#[cfg(feature = "test-hooks")]
pub use hooks::{WriterHold, force_admin_token_row, force_rows, force_schema_version};
pub use idempotency::{
    Fingerprint, IdempotencyClaim, IdempotencyRecord, IdempotencyTicket, RETENTION_MS,
};
use integrity::Integrity;
pub use integrity::Readiness;
use keyring::Keyring;
pub use open::{Durability, STORE_SCHEMA_VERSION, require_store};
pub use projection::{FORMAT_VERSION as PROJECTION_FORMAT_VERSION, StoredAggregate};
pub use read::Index;
pub use rekey::RekeyReport;
pub use tail::LogPage;
pub use verify::VerifyReport;
pub use webhooks::{Attempt, Delivery, NewOutboxRows, OutboxRow, Ping};
use writer::{Handed, Job, Pending};

use crate::crypto::{KeyedHasher, MasterKey};

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
    /// Opens the data keys when `verify` checks them.
    master: MasterKey,
    integrity: Integrity,
    jobs: Mutex<Option<Sender<Handed>>>,
    /// The writer's oldest job not yet answered.
    pending: Arc<Pending>,
    /// The last durable position, updated after every group commit.
    positions: tokio::sync::watch::Receiver<u64>,
    /// Outbox rows of durable groups the dispatcher has not taken yet.
    new_deliveries: Arc<webhooks::NewDeliveries>,
    /// The position the process's follower has applied (`tail.rs`), once one is registered.
    applied: std::sync::OnceLock<tokio::sync::watch::Receiver<u64>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    fn send(&self, job: Job) -> Result<(), StoreError> {
        let jobs = self.inner.jobs.lock().map_err(|_| StoreError::Closed)?;
        jobs.as_ref()
            .ok_or(StoreError::Closed)?
            .send((std::time::Instant::now(), job))
            .map_err(|_| StoreError::Closed)
    }

    /// How long the oldest job handed to the writer and not yet answered has waited (an append,
    /// rows, or work that holds appends back, such as an online export); zero when the writer is
    /// idle. Past a threshold the writer counts as stuck (`/readyz`).
    pub fn writer_oldest_pending(&self) -> std::time::Duration {
        self.inner.pending.age()
    }

    /// Runs `work` on the writer thread between groups, with nothing appended meanwhile. A
    /// panic of the storage engine inside it is answered as [`StoreError::Engine`].
    fn exclusive<T: Send + 'static>(
        &self,
        work: impl FnOnce(&sled::Tree) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(Job::Exclusive(Box::new(move |tree| {
            // The receiver only goes away if the caller did; nothing is left to answer.
            let _ = tx.send(verify::guarded(|| Ok(work(tree))));
        })))?;
        rx.recv().map_err(|_| StoreError::Closed)?
    }

    /// Stops the writer after it has committed everything already queued, and flushes.
    pub fn shutdown(&self) {
        self.inner.stop_writer();
    }

    /// Whether the writer still takes appends. A poisoned lock counts as stopped, as `send`
    /// treats it.
    pub fn is_running(&self) -> bool {
        self.inner.jobs.lock().is_ok_and(|j| j.is_some())
    }
}

impl Inner {
    /// Closes the job channel and waits for the writer to commit what is queued and exit. A lock
    /// poisoned by a panic elsewhere still holds the channel and the handle, which must go.
    fn stop_writer(&self) {
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!(
                "the writer thread panicked; appends it had not acknowledged were lost"
            );
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_writer();
    }
}
