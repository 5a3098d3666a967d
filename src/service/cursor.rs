//! Page cursors: what a client passes back to read on, issued and checked here for every
//! listing (credential lists and event feeds). A cursor is base64url of where the next page
//! starts, signed (`crypto::CursorMac`, under a key the store derives) for the listing it
//! belongs to: the account's credential list, the account's feed, or one stream's feed. So a
//! cursor is refused anywhere but where it was issued, and one the server never issued (written
//! by hand, altered, or from a build before cursors were signed) is refused everywhere. A
//! cursor names no time: it stays valid for as long as the store keeps its keys, across
//! restarts.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::crypto::CursorMac;
use crate::domain::AccountId;
use crate::storage::{Feed, Store};

/// A cursor that this server did not issue for this listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this server issued")]
pub struct InvalidCursor;

/// The listing a cursor belongs to.
pub enum Listing<'a> {
    /// `GET /v1/byok/list` of one account.
    Credentials(&'a AccountId),
    /// An event feed.
    Feed(&'a Feed<'a>),
    /// `GET /v1/webhooks` of one account.
    Webhooks(&'a AccountId),
    /// The delivery log of one endpoint.
    Deliveries(&'a crate::domain::WebhookId),
}

impl Listing<'_> {
    /// What the cursor's MAC binds besides its value. Ids cannot contain `/`.
    fn binding(&self) -> String {
        match self {
            Self::Credentials(account_id) => format!("byok/list/{account_id}"),
            Self::Feed(Feed::Account(account_id)) => format!("events/account/{account_id}"),
            Self::Feed(Feed::Stream(stream)) => format!("events/stream/{}", stream.as_str()),
            Self::Webhooks(account_id) => format!("webhooks/list/{account_id}"),
            Self::Deliveries(webhook_id) => format!("webhooks/deliveries/{webhook_id}"),
        }
    }
}

/// Issues and opens cursors under the store's cursor key.
#[derive(Clone)]
pub struct Cursors(CursorMac);

impl Cursors {
    pub fn new(store: &Store) -> Self {
        Self(store.cursor_mac())
    }

    /// A cursor that resumes `listing` at `value`.
    pub fn issue(&self, listing: &Listing<'_>, value: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.0.seal(listing.binding().as_bytes(), value.as_bytes()))
    }

    /// The value of a cursor issued for `listing`.
    pub fn open(&self, listing: &Listing<'_>, cursor: &str) -> Result<String, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| InvalidCursor)?;
        let value = self
            .0
            .open(listing.binding().as_bytes(), &bytes)
            .ok_or(InvalidCursor)?;
        String::from_utf8(value.to_vec()).map_err(|_| InvalidCursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::es::StreamId;
    use crate::storage::Durability;

    #[test]
    fn a_cursor_opens_only_for_the_listing_it_was_issued_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &MasterKey::generate(), Durability::Sync).unwrap();
        let cursors = Cursors::new(&store);
        let (ada, bob) = (AccountId::from_ulid(1), AccountId::from_ulid(2));
        let stream = StreamId::new("byok", "byok_1");
        let listings = [
            Listing::Credentials(&ada),
            Listing::Credentials(&bob),
            Listing::Feed(&Feed::Account(&ada)),
            Listing::Feed(&Feed::Account(&bob)),
            Listing::Feed(&Feed::Stream(&stream)),
        ];
        for (i, issued_for) in listings.iter().enumerate() {
            let cursor = cursors.issue(issued_for, "42");
            for (j, used_on) in listings.iter().enumerate() {
                let opened = cursors.open(used_on, &cursor);
                assert_eq!(opened.is_ok(), i == j, "issued for {i}, used on {j}");
            }
            assert_eq!(cursors.open(issued_for, &cursor).unwrap(), "42");
        }
        let listing = &listings[2];
        for forged in ["", "NDI", "!!!", &URL_SAFE_NO_PAD.encode("42")] {
            assert_eq!(
                cursors.open(listing, forged),
                Err(InvalidCursor),
                "{forged:?}"
            );
        }
        // Another store's key opens nothing of this one's.
        let other = tempfile::tempdir().unwrap();
        let other = Store::open(other.path(), &MasterKey::generate(), Durability::Sync).unwrap();
        let cursor = cursors.issue(listing, "42");
        assert_eq!(
            Cursors::new(&other).open(listing, &cursor),
            Err(InvalidCursor)
        );
        store.shutdown();
        other.shutdown();
    }
}
