//! The log read in order, for followers: the events after a position, never past the last durable
//! one, so a follower never applies an event that a crash could still take back. What an in-memory
//! state derived from the log reads (`service::resolve`); it decides nothing about the events.
//! A damaged event is reported to readiness (`integrity.rs`) on its way out.

use super::{Store, StoreError, keys, verify};
use crate::es::Envelope;

impl Store {
    /// Up to `limit` events after position `after`, in log order, none past the durable position.
    pub fn read_log(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, StoreError> {
        let durable = *self.inner.positions.borrow();
        let mut events = Vec::new();
        if after >= durable {
            return Ok(events);
        }
        let start = keys::log(after.saturating_add(1));
        let end = keys::log(durable);
        for row in self.inner.db.range(start..=end) {
            if events.len() == limit {
                break;
            }
            let (key, value) = row.map_err(|e| self.noticed(e.into(), None))?;
            let position = keys::log_position(&key).ok_or_else(|| {
                let error = StoreError::Corrupt {
                    what: "log key".into(),
                    reason: "not a position".into(),
                };
                self.noticed(error, None)
            })?;
            let (_, envelope) = verify::decode_log_value(position, &value)
                .map_err(|e| self.noticed(e, Some(position)))?;
            events.push(envelope);
        }
        Ok(events)
    }

    /// Hands the store the position an in-memory follower of its log has applied, once: a
    /// mutation waits on it before it answers, so a caller reads its own writes from that state.
    /// A second registration is ignored (one follower per process).
    pub fn follow(&self, applied: tokio::sync::watch::Receiver<u64>) {
        let _ = self.inner.applied.set(applied);
    }

    /// The follower's applied position, if one was registered.
    pub fn applied(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.applied.get().cloned()
    }
}
