//! Event feeds: an account's events in log order (`e/` rows) and one stream's events in version
//! order (`s/` rows). A page is a range scan from the cursor, so its cost does not depend on how
//! deep it is; it never goes past the last durable position, so a reader never sees an event that
//! a crash could still take back (no gaps, no duplicates, across restarts too). A damaged row or
//! event is reported to readiness (`integrity.rs`) on its way out.

use super::{Store, StoreError, keys};
use crate::domain::AccountId;
use crate::es::{Envelope, StreamId};

/// Which feed to read.
pub enum Feed<'a> {
    /// Every event of an account's streams, by global position.
    Account(&'a AccountId),
    /// One stream's events, by version.
    Stream(&'a StreamId),
}

pub struct FeedPage {
    pub events: Vec<Envelope>,
    /// The ordinal (position for an account feed, version for a stream) to resume after: the
    /// last one looked at, or the cursor itself when there was nothing new.
    pub resume_after: u64,
    /// Whether more events were already there when the page filled.
    pub has_more: bool,
}

impl Store {
    /// Up to `limit` events after ordinal `after`, keeping those `keep` accepts.
    pub fn read_feed(
        &self,
        feed: &Feed<'_>,
        after: u64,
        limit: usize,
        keep: impl Fn(&Envelope) -> bool,
    ) -> Result<FeedPage, StoreError> {
        let durable = *self.inner.positions.borrow();
        let prefix = match feed {
            Feed::Account(account_id) => keys::account_feed_prefix(account_id),
            Feed::Stream(stream) => keys::stream_events(stream.as_str()),
        };
        let start = [&prefix[..], &after.saturating_add(1).to_be_bytes()[..]].concat();
        let mut page = FeedPage {
            events: Vec::new(),
            resume_after: after,
            has_more: false,
        };
        for row in self.inner.db.range(start..) {
            let (key, value) = row.map_err(|e| self.noticed(e.into(), None))?;
            let Some(ordinal) = key
                .strip_prefix(prefix.as_slice())
                .and_then(keys::u64_value)
            else {
                break;
            };
            let position = match feed {
                Feed::Account(_) => ordinal,
                Feed::Stream(_) => keys::u64_value(&value).ok_or_else(|| {
                    let error = StoreError::Corrupt {
                        what: "stream index".into(),
                        reason: "not a position".into(),
                    };
                    self.noticed(error, None)
                })?,
            };
            if position > durable {
                break;
            }
            if page.events.len() == limit {
                page.has_more = true;
                break;
            }
            // `event` reports its own damage.
            let envelope = self.event(position)?.ok_or_else(|| {
                let error = StoreError::Corrupt {
                    what: format!("feed row for position {position}"),
                    reason: "the event is missing".into(),
                };
                self.noticed(error, Some(position))
            })?;
            if keep(&envelope) {
                page.events.push(envelope);
            }
            page.resume_after = ordinal;
        }
        Ok(page)
    }
}
