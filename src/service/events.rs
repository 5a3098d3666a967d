//! Reading the event feeds as the API shows them: pages after a cursor (issued and checked by
//! `cursor`), optionally filtered by type, optionally waiting (long poll) for the next durable
//! event; payloads without their private fields; and only while the API key they are read with is
//! live.

use std::time::Duration;

use super::cursor::{Cursors, InvalidCursor, Listing};
use crate::domain::{AccountId, KeyId, PRIVATE_FIELDS};
use crate::es::Envelope;
pub use crate::storage::Feed;
use crate::storage::{FeedPage, Store, StoreError};

/// The API key a feed is read with. Its state is read from the store after every read of the
/// feed, so whatever a read returned was written while the key was live: nothing at or after the
/// position of its revocation is answered, whichever request (or server) wrote the revocation.
/// A wait checks again each time the durable position moves (ADR 0014).
pub struct Reader {
    pub account_id: AccountId,
    pub key_id: KeyId,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("the API key this feed is read with has been revoked")]
    KeyRevoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest accepted long-poll wait.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

pub struct FeedQuery {
    /// The ordinal to read after (0: from the start).
    pub after: u64,
    pub limit: usize,
    /// Only these event types; empty means every type.
    pub types: Vec<String>,
    /// When nothing is there yet, wait this long for a new durable event.
    pub wait: Duration,
}

/// An event as the API shows it: the envelope without private payload fields.
pub fn public(mut envelope: Envelope) -> Envelope {
    if let Some(data) = envelope.data.as_object_mut() {
        for field in PRIVATE_FIELDS {
            data.remove(*field);
        }
    }
    envelope
}

#[derive(Clone)]
pub struct Events {
    store: Store,
    cursors: Cursors,
    /// Flips to `true` when the server begins to shut down: waits end at once, and streams close
    /// so that shutdown is not held up by clients that never hang up.
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Events {
    pub fn new(store: Store, closing: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            cursors: Cursors::new(&store),
            store,
            closing,
        }
    }

    /// The cursor that resumes `feed` after the ordinal `after` (a page's `resume_after`).
    pub fn cursor(&self, feed: &Feed<'_>, after: u64) -> String {
        self.cursors.issue(&Listing::Feed(feed), &after.to_string())
    }

    /// The ordinal a cursor issued for `feed` resumes after.
    pub fn resume_after(&self, feed: &Feed<'_>, cursor: &str) -> Result<u64, InvalidCursor> {
        let value = self.cursors.open(&Listing::Feed(feed), cursor)?;
        value.parse().map_err(|_| InvalidCursor)
    }

    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Reads a page, then confirms the reader's key: the key's state is read after the events,
    /// so it is at least as recent as every one of them.
    fn read(
        &self,
        reader: &Reader,
        feed: &Feed<'_>,
        after: u64,
        query: &FeedQuery,
    ) -> Result<FeedPage, FeedError> {
        let keep = |e: &Envelope| query.types.is_empty() || query.types.contains(&e.event_type);
        let mut page = self.store.read_feed(feed, after, query.limit, keep)?;
        if !super::accounts::key_is_live(&self.store, &reader.account_id, &reader.key_id)? {
            return Err(FeedError::KeyRevoked);
        }
        page.events = page.events.into_iter().map(public).collect();
        Ok(page)
    }

    /// A page of the feed. With a wait, an empty page is read again whenever a new group of
    /// events becomes durable, until something arrives, the wait is over, or the reader's key
    /// is revoked.
    pub async fn page(
        &self,
        reader: &Reader,
        feed: &Feed<'_>,
        query: &FeedQuery,
    ) -> Result<FeedPage, FeedError> {
        let mut positions = self.store.positions();
        positions.borrow_and_update();
        let mut closing = self.closing.clone();
        let deadline = tokio::time::Instant::now() + query.wait.min(MAX_WAIT);
        let mut after = query.after;
        loop {
            let page = self.read(reader, feed, after, query)?;
            let over = tokio::time::Instant::now() >= deadline || *closing.borrow_and_update();
            if !page.events.is_empty() || over {
                return Ok(page);
            }
            // Events the filter skipped are consumed: the next read starts after them.
            after = page.resume_after;
            let woke = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    changed = positions.changed() => changed.is_ok(),
                    _ = closing.changed() => false,
                }
            })
            .await;
            // Timed out, shutting down, or the store closed: answer what there is.
            if woke != Ok(true) {
                return self.read(reader, feed, after, query);
            }
        }
    }
}
