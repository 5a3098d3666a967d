//! The log read in order, for followers: the events after a position, never past the last durable
//! one, so a follower never applies an event that a crash could still take back. What an in-memory
//! state derived from the log reads (`service::resolve`); it decides nothing about the events.
//! A damaged event is reported to readiness (`integrity.rs`) on its way out.

use super::{Store, StoreError, keys, verify};
use crate::es::Envelope;

/// Events of the log in order, as a follower reads them.
pub struct LogPage {
    pub events: Vec<Envelope>,
    /// Positions in the page whose event does not decode (reported to readiness and counted
    /// already): a follower skips them rather than stopping at them.
    pub damaged: Vec<u64>,
    /// The last position looked at (`after` when there was nothing new).
    pub last: u64,
}

impl Store {
    /// Up to `limit` events after position `after`, in log order, none past the durable
    /// position. A row sled cannot read is an error; an event that does not decode is reported
    /// and listed in `damaged`.
    pub fn read_log(&self, after: u64, limit: usize) -> Result<LogPage, StoreError> {
        let durable = *self.inner.positions.borrow();
        let mut page = LogPage {
            events: Vec::new(),
            damaged: Vec::new(),
            last: after,
        };
        if after >= durable {
            return Ok(page);
        }
        let start = keys::log(after.saturating_add(1));
        let end = keys::log(durable);
        for row in self.inner.db.range(start..=end) {
            if page.events.len() + page.damaged.len() == limit {
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
            match verify::decode_log_value(position, &value) {
                Ok((_, envelope)) => page.events.push(envelope),
                Err(e) => {
                    self.noticed(e, Some(position));
                    page.damaged.push(position);
                }
            }
            page.last = position;
        }
        Ok(page)
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
