//! Idempotency keys (docs/design.md §6, ADR 0008): claims a key for a request, answers a recorded
//! response, or records one. What a request and a response are is the HTTP layer's business:
//! here they are bytes. Also sweeps expired records, at most once an hour.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ServiceError;
use super::clock::SharedClock;
use crate::storage::{IdempotencyClaim, IdempotencyTicket, Store};

/// How often expired records are deleted (they are ignored from the moment they expire).
const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

/// What to do with a request that carries an idempotency key.
pub enum Begin {
    /// Execute it, then [`Idempotency::finish`] with its response if it succeeded. The key is
    /// held until the `Pending` is dropped.
    Execute(Pending),
    /// The same request succeeded before: answer this response again.
    Replay(Vec<u8>),
    /// The key was already used for a different request.
    KeyReused,
    /// The same request is executing right now.
    InProgress,
}

/// A key held by the one request executing under it.
pub struct Pending(IdempotencyTicket);

pub struct Idempotency {
    store: Store,
    /// Records' creation times and expiry are read from it.
    clock: SharedClock,
    /// When the last sweep started; a process timer, not a time anything records.
    last_sweep: Arc<Mutex<Option<Instant>>>,
}

impl Idempotency {
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            last_sweep: Arc::default(),
        }
    }

    fn now_millis(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// Claims `key` in `scope` for the request described by `request` (its parts, in a fixed
    /// order), or answers the recorded outcome.
    pub fn begin(&self, scope: &str, key: &str, request: &[&[u8]]) -> Result<Begin, ServiceError> {
        let fingerprint = self.store.idempotency_fingerprint(request);
        let claim = self
            .store
            .claim_idempotency_key(scope, key, fingerprint, self.now_millis())?;
        Ok(match claim {
            IdempotencyClaim::Execute(ticket) => Begin::Execute(Pending(ticket)),
            IdempotencyClaim::Replay(response) => Begin::Replay(response),
            IdempotencyClaim::Reused => Begin::KeyReused,
            IdempotencyClaim::InProgress => Begin::InProgress,
        })
    }

    /// Records the response of a successful request, durably, then releases its key.
    pub async fn finish(&self, pending: Pending, response: &[u8]) -> Result<(), ServiceError> {
        self.store
            .record_idempotent_response(&pending.0, response, self.now_millis())
            .await?;
        drop(pending);
        self.sweep_if_due();
        Ok(())
    }

    /// Deletes expired records on the blocking pool, at most once per [`SWEEP_EVERY`] (the first
    /// time after start-up on the first record written).
    fn sweep_if_due(&self) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let store = self.store.clone();
        let now = self.now_millis();
        tokio::task::spawn_blocking(move || match store.sweep_idempotency(now) {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "expired idempotency records deleted"),
            Err(error) => tracing::warn!(%error, "sweeping idempotency records failed"),
        });
    }
}
