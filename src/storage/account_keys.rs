//! The projection of API keys, live and replayed alike (chosen by `projection::route`): each
//! key's row (`a/account_key:<key_id>`), the account's key index (`i/keys/<account_id> 0x00
//! <key_id>`), the token index (`i/token/<hash>`) and the account's feed (`e/`). Layouts in
//! `keys.rs`.
//!
//! Keys are read from two layouts (docs/adr/0020):
//!
//! - **their own stream** (`account_key:<key_id>`), where every key minted by this build lives:
//!   the key's row is at the version of that stream, like any aggregate's;
//! - **their account's stream** (`account:<account_id>`), where stores written before keys had
//!   streams hold `account_key.created` (schema 1, lifted by its upcaster to name the account)
//!   and `account_key.revoked`. These events are projected into the same rows; the key's row
//!   keeps the version of its own stream (0 while that is empty: a later revocation is appended
//!   there, expecting no stream), and the account's row follows its stream's version.
//!
//! Either way no event rewrites a row that grows with the account's history. Must not import
//! `service` or `http`.

use super::kv::Kv;
use super::projection::{EventAt, ProjectionError, StoredAggregate, add_to_account_feed};
use super::{StoreError, keys};
use crate::crypto::TokenHash;
use crate::domain::account::Account;
use crate::domain::account_key::{ApiKey, ApiKeyEvent};
use crate::es::{Aggregate, StreamId};

/// A key event on the key's own stream.
pub fn project_key<K: Kv>(
    kv: &mut K,
    at: EventAt<'_>,
    event: ApiKeyEvent,
) -> Result<(), ProjectionError> {
    let before = kv.take_aggregate::<ApiKey>(at.stream)?.map(|s| s.state);
    write_key(kv, at.stream, at.stream_version, before, &event, at)
}

/// A key event of the old layout, on its account's stream.
pub fn project_key_on_account_stream<K: Kv>(
    kv: &mut K,
    at: EventAt<'_>,
    event: ApiKeyEvent,
) -> Result<(), ProjectionError> {
    // The account's state is unchanged; its row moves to its stream's version, as the head did.
    if let Some(mut account) = kv.take_aggregate::<Account>(at.stream)? {
        account.stream_version = at.stream_version;
        kv.put_aggregate(at.stream, account)?;
    }
    let stream = StreamId::new(ApiKey::KIND, event.key_id().as_str());
    let stored = kv.take_aggregate::<ApiKey>(stream.as_str())?;
    let own_version = stored.as_ref().map_or(0, |s| s.stream_version);
    write_key(
        kv,
        stream.as_str(),
        own_version,
        stored.map(|s| s.state),
        &event,
        at,
    )
}

/// Applies `event` to the key's row (at `stream_version` of its own stream) and keeps the
/// indexes in step.
fn write_key(
    kv: &mut impl Kv,
    stream: &str,
    stream_version: u64,
    before: Option<ApiKey>,
    event: &ApiKeyEvent,
    at: EventAt<'_>,
) -> Result<(), ProjectionError> {
    let revoked_hash = before.as_ref().map(|key| key.token_hash.clone());
    let after = ApiKey::apply(before, event);
    let account_id = after.account_id.clone();
    kv.put_aggregate(
        stream,
        StoredAggregate {
            stream_version,
            state: after,
        },
    )?;
    add_to_account_feed(kv, &account_id, at);
    match event {
        ApiKeyEvent::Created {
            key_id, token_hash, ..
        } => {
            let value = [
                account_id.as_str().as_bytes(),
                &[0],
                key_id.as_str().as_bytes(),
            ]
            .concat();
            kv.put(token_index_key(token_hash)?, value);
            kv.put(keys::key_index(&account_id, key_id), Vec::new());
        }
        ApiKeyEvent::Revoked { .. } => {
            // A revoked token leaves the index at once, so it no longer authenticates.
            if let Some(hash) = revoked_hash {
                kv.delete(token_index_key(&hash)?);
            }
        }
    }
    Ok(())
}

fn token_index_key(token_hash: &str) -> Result<Vec<u8>, StoreError> {
    let hash = TokenHash::from_hex(token_hash).ok_or_else(|| StoreError::Corrupt {
        what: "token hash in an account_key.created event".into(),
        reason: "not 32 hex-encoded bytes".into(),
    })?;
    Ok(keys::token(&hash.0))
}
