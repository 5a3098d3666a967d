//! Idempotency keys (docs/design.md §6, ADR 0008): claims a key for a request, answers a recorded
//! response, or records one. What a request and a response are is the HTTP layer's business:
//! here they are bytes. Also sweeps expired records, at most once an hour.
//!
//! A command run under a key is given a [`Recording`] of its answer: `execute` renders the
//! answer it is about to append for, seals it, and sends it in the same append as the events
//! (docs/adr/0020), so that no crash can keep the events without the answer and let a retry
//! execute again. An answer that appended nothing is recorded after it, by [`Idempotency::finish`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::ServiceError;
use super::clock::SharedClock;
use crate::storage::{IdempotencyClaim, IdempotencyRecord, IdempotencyTicket, Store};

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

/// A key held by the one request executing under it, until this and every [`Recording`] made
/// from it are dropped.
pub struct Pending {
    ticket: Arc<IdempotencyTicket>,
    recorded: Arc<AtomicBool>,
}

impl Pending {
    /// Whether the answer was recorded with the events it answers for: nothing is left to record.
    pub fn is_recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }
}

/// Turns an answer into the response bytes to record, or `None` when it cannot be done before
/// the answer is sent (the response is then recorded after the append, on its own).
type Render<T> = Box<dyn Fn(&T) -> Option<Vec<u8>> + Send + Sync>;

/// How a command's answer (`T`) is recorded for the idempotency key of its request: rendered,
/// sealed and written in the batch of the events it answers for. Without a key it records
/// nothing.
pub struct Recording<T> {
    keeper: Option<Keeper<T>>,
}

struct Keeper<T> {
    store: Store,
    clock: SharedClock,
    ticket: Arc<IdempotencyTicket>,
    render: Render<T>,
    recorded: Arc<AtomicBool>,
}

impl<T> Recording<T> {
    /// For a request without an idempotency key.
    pub fn none() -> Self {
        Self { keeper: None }
    }

    /// The record of `answer`, sealed to travel in the append that produces it; `None` without
    /// a key, or for an answer that is recorded after the append instead.
    pub(super) fn seal(&self, answer: &T) -> Result<Option<IdempotencyRecord>, ServiceError> {
        let Some(keeper) = &self.keeper else {
            return Ok(None);
        };
        let Some(response) = (keeper.render)(answer) else {
            return Ok(None);
        };
        let now = keeper.clock.now().timestamp_millis();
        let record = keeper
            .store
            .seal_idempotent_response(&keeper.ticket, &response, now)?;
        Ok(Some(record))
    }

    /// The append that carried the record is durable.
    pub(super) fn recorded(&self) {
        if let Some(keeper) = &self.keeper {
            keeper.recorded.store(true, Ordering::Release);
        }
    }
}

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
            IdempotencyClaim::Execute(ticket) => Begin::Execute(Pending {
                ticket: Arc::new(ticket),
                recorded: Arc::default(),
            }),
            IdempotencyClaim::Replay(response) => Begin::Replay(response),
            IdempotencyClaim::Reused => Begin::KeyReused,
            IdempotencyClaim::InProgress => Begin::InProgress,
        })
    }

    /// The recording of the answer of the command run under `pending`, which `render` turns
    /// into the response to record.
    pub fn recording<T>(
        &self,
        pending: &Pending,
        render: impl Fn(&T) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Recording<T> {
        Recording {
            keeper: Some(Keeper {
                store: self.store.clone(),
                clock: self.clock.clone(),
                ticket: pending.ticket.clone(),
                render: Box::new(render),
                recorded: pending.recorded.clone(),
            }),
        }
    }

    /// Records the response of a successful request that was not recorded with its events
    /// (it appended none), durably, then releases its key.
    pub async fn finish(&self, pending: Pending, response: &[u8]) -> Result<(), ServiceError> {
        self.store
            .record_idempotent_response(&pending.ticket, response, self.now_millis())
            .await?;
        self.release(pending);
        Ok(())
    }

    /// Releases the key of a request whose response is recorded already
    /// ([`Pending::is_recorded`]).
    pub fn release(&self, pending: Pending) {
        drop(pending);
        self.sweep_if_due();
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
