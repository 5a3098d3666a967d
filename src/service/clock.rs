//! The time every command carries, and every time the service stamps (last use, idempotency
//! records): read here, never in the domain or at the HTTP edge, so that a test can hold it still.
//! The event log's `occurred_at` is the storage writer's own (see `storage/writer.rs`). Imports
//! chrono and nothing of keyledger.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// A clock as services hold it, shared by all of them.
pub type SharedClock = Arc<dyn Clock>;

/// The system's clock: what the server runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that always says the same time, for tests.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}
