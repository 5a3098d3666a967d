//! Key layout of the single sled tree. Everything lives in one tree so that a group of events and
//! all projection rows they touch are written by one atomic `sled::Batch` (docs/design.md §11: one
//! batch on one tree beats a multi-tree transaction several times over). Integers are big-endian so
//! that byte order is numeric order.
//!
//! | prefix | key | value | kind |
//! |---|---|---|---|
//! | `m/` | `m/<name>` | meta: schema version, projection format, wrapped store keys (`m/<name>_key`), admin token hash, the master key's id after a rekey | meta |
//! | `l/` | `l/<position u64>` | `hmac(32) ‖ envelope JSON` | the log |
//! | `h/` | `h/<stream>` | head version `u64` | projection |
//! | `s/` | `s/<stream> 0x00 <version u64>` | position `u64` | projection |
//! | `a/` | `a/<stream>` | `{"stream_version", "state"}` aggregate JSON (`account:`, `account_key:`, `byok:`) | projection |
//! | `i/` | `i/email/<email>`, `i/token/<hash 32>` | account id; `account_id 0x00 key_id` | projection |
//! | `i/` | `i/byok/<account_id> 0x00 <byok_id>` | empty: the account's credentials, oldest first | projection |
//! | `i/` | `i/keys/<account_id> 0x00 <key_id>` | empty: the account's API keys, oldest first | projection |
//! | `e/` | `e/<account_id> 0x00 <position u64>` | empty: the account's feed, in log order | projection |
//! | `q/` | `q/r/<account_id> 0x00 <request_id>` | expiry, unix seconds `u64`: a recorded usage request id (`usage.rs`) | projection, swept |
//! | `q/` | `q/b/<byok_id> 0x00 <h\|d> <bucket start u64>` | `spend_micros u64 ‖ calls u64` of an hour or UTC day | projection, swept |
//! | `i/` | `i/webhooks/<account_id> 0x00 <webhook_id>` | empty: the account's webhook endpoints, oldest first | projection |
//! | `i/` | `i/hooks/<account_id>` | JSON: the active endpoints of the account and the types each subscribes to (`webhooks.rs`) | projection |
//! | `o/` | `o/<webhook_id> 0x00 e <position u64>`, `o/<webhook_id> 0x00 p <message id>` | JSON: a delivery still to make, written with its event (`webhooks.rs`) | outbox: operational, live appends only |
//! | `w/` | `w/<webhook_id> 0x00 <attempt u64>` | JSON: one delivery attempt (`webhooks.rs`) | operational, not derived |
//! | `u/` | `u/key/<key_id>` | last-used unix millis `i64` | operational, not derived |
//! | `d/` | `d/<scope> 0x00 <hmac 32>` | idempotency record: `0x01 ‖ created i64 ‖ fingerprint 32 ‖ sealed response` (see `idempotency.rs`) | operational, not derived |
//!
//! Data keys are not in this tree at all: each lives in a file of its own under `keys/` beside it
//! (see `keyring.rs`), so that destroying one really removes it from the data dir.

use crate::domain::usage::Granularity;
use crate::domain::{AccountId, CredentialId, KeyId, WebhookId};

/// The store schema version (`open::STORE_SCHEMA_VERSION`), not an event payload schema.
pub const STORE_SCHEMA: &[u8] = b"m/schema";
/// The format the projection rows were written in (`projection::FORMAT_VERSION`); a store whose
/// format differs from the build's has its projections rebuilt on open.
pub const PROJECTION_FORMAT: &[u8] = b"m/projections";
pub const CHAIN_KEY: &[u8] = b"m/chain_key";
pub const TOKEN_KEY: &[u8] = b"m/token_key";
pub const ADMIN_TOKEN: &[u8] = b"m/admin_token";
/// The id of the master key the store keys are wrapped by (`crypto::MasterKeyId`, 16 bytes):
/// written by `keyledger rekey`, so that a refused key, the one it replaced, can be told from the
/// key the store expects.
pub const MASTER_KEY_ID: &[u8] = b"m/master_key_id";
/// Every meta row, the wrapped store keys among them (`m/<name>_key`).
pub const META: &[u8] = b"m/";

pub const LOG: &[u8] = b"l/";
/// Prefixes derived from the log: dropped and rewritten by a rebuild, compared by `verify`.
pub const PROJECTIONS: [&[u8]; 6] = [b"h/", b"s/", b"a/", b"i/", b"e/", USAGE];
/// The usage rows: dedupe rows and buckets (`usage.rs`).
pub const USAGE: &[u8] = b"q/";
pub const USAGE_REQUESTS: &[u8] = b"q/r/";
const USAGE_BUCKETS: &[u8] = b"q/b/";

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub fn log(position: u64) -> Vec<u8> {
    concat(&[LOG, &position.to_be_bytes()])
}

/// The position a log key encodes, or `None` for a key of another shape.
pub fn log_position(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.strip_prefix(LOG)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub fn head(stream: &str) -> Vec<u8> {
    concat(&[b"h/", stream.as_bytes()])
}

pub fn stream_event(stream: &str, stream_version: u64) -> Vec<u8> {
    concat(&[&stream_events(stream), &stream_version.to_be_bytes()[..]])
}

/// Every `s/` row of one stream.
pub fn stream_events(stream: &str) -> Vec<u8> {
    concat(&[b"s/", stream.as_bytes(), &[0]])
}

/// Every `a/` row.
pub const AGGREGATE: &[u8] = b"a/";

pub fn aggregate(stream: &str) -> Vec<u8> {
    concat(&[AGGREGATE, stream.as_bytes()])
}

pub fn email(email: &str) -> Vec<u8> {
    concat(&[b"i/email/", email.as_bytes()])
}

pub fn token(hash: &[u8; 32]) -> Vec<u8> {
    concat(&[b"i/token/", hash])
}

/// Every credential row of one account.
pub fn byok_index_prefix(account_id: &AccountId) -> Vec<u8> {
    concat(&[b"i/byok/", account_id.as_str().as_bytes(), &[0]])
}

pub fn byok_index(account_id: &AccountId, byok_id: &CredentialId) -> Vec<u8> {
    concat(&[&byok_index_prefix(account_id), byok_id.as_str().as_bytes()])
}

/// Every key row of one account.
pub fn key_index_prefix(account_id: &AccountId) -> Vec<u8> {
    concat(&[b"i/keys/", account_id.as_str().as_bytes(), &[0]])
}

pub fn key_index(account_id: &AccountId, key_id: &KeyId) -> Vec<u8> {
    concat(&[&key_index_prefix(account_id), key_id.as_str().as_bytes()])
}

/// Every feed row of one account.
pub fn account_feed_prefix(account_id: &AccountId) -> Vec<u8> {
    concat(&[b"e/", account_id.as_str().as_bytes(), &[0]])
}

pub fn account_feed(account_id: &AccountId, position: u64) -> Vec<u8> {
    concat(&[
        &account_feed_prefix(account_id),
        &position.to_be_bytes()[..],
    ])
}

pub fn usage_request(account_id: &AccountId, request_id: &str) -> Vec<u8> {
    concat(&[
        USAGE_REQUESTS,
        account_id.as_str().as_bytes(),
        &[0],
        request_id.as_bytes(),
    ])
}

fn granularity_tag(granularity: Granularity) -> u8 {
    match granularity {
        Granularity::Hour => b'h',
        Granularity::Day => b'd',
    }
}

/// Every bucket of one size of one credential.
pub fn usage_buckets(byok_id: &CredentialId, granularity: Granularity) -> Vec<u8> {
    concat(&[
        USAGE_BUCKETS,
        byok_id.as_str().as_bytes(),
        &[0, granularity_tag(granularity)],
    ])
}

/// A bucket's row; starts before 1970 (which no record has) sort first.
pub fn usage_bucket(byok_id: &CredentialId, granularity: Granularity, start: i64) -> Vec<u8> {
    let start = u64::try_from(start).unwrap_or(0);
    concat(&[
        &usage_buckets(byok_id, granularity),
        &start.to_be_bytes()[..],
    ])
}

/// The size and start of the bucket a bucket row's key names.
pub fn usage_bucket_start(key: &[u8]) -> Option<(Granularity, i64)> {
    let rest = key.strip_prefix(USAGE_BUCKETS)?;
    let split = rest.iter().position(|b| *b == 0)?;
    let rest = rest.get(split + 1..)?;
    let (tag, start) = rest.split_first()?;
    let granularity = match tag {
        b'h' => Granularity::Hour,
        b'd' => Granularity::Day,
        _ => return None,
    };
    let start = i64::try_from(u64_value(start)?).ok()?;
    Some((granularity, start))
}

pub fn key_last_used(key_id: &KeyId) -> Vec<u8> {
    concat(&[b"u/key/", key_id.as_str().as_bytes()])
}

pub fn u64_value(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

/// Every `h/` row.
pub const HEAD: &[u8] = b"h/";
/// Every `s/` row.
pub const STREAM_EVENTS: &[u8] = b"s/";
/// Every `e/` row.
pub const ACCOUNT_FEED: &[u8] = b"e/";

/// The name and number of a `<prefix><name> 0x00 <u64>` key (an `s/` or `e/` row), or `None`
/// for a key of another shape. The number is the key's last 8 bytes, so a name holding 0x00 is
/// answered whole.
pub fn split_numbered<'k>(key: &'k [u8], prefix: &[u8]) -> Option<(&'k [u8], u64)> {
    let rest = key.strip_prefix(prefix)?;
    let split = rest.len().checked_sub(9)?;
    let (name, tail) = rest.split_at(split);
    let (zero, number) = tail.split_first()?;
    if *zero != 0 {
        return None;
    }
    Some((name, u64::from_be_bytes(number.try_into().ok()?)))
}

/// Every endpoint row of one account.
pub fn webhook_index_prefix(account_id: &AccountId) -> Vec<u8> {
    concat(&[b"i/webhooks/", account_id.as_str().as_bytes(), &[0]])
}

pub fn webhook_index(account_id: &AccountId, webhook_id: &WebhookId) -> Vec<u8> {
    concat(&[
        &webhook_index_prefix(account_id),
        webhook_id.as_str().as_bytes(),
    ])
}

/// The active endpoints of an account with their subscriptions: what an event's projection
/// reads to write its outbox rows.
pub fn webhook_subscriptions(account_id: &AccountId) -> Vec<u8> {
    concat(&[b"i/hooks/", account_id.as_str().as_bytes()])
}

/// Every outbox row.
pub const OUTBOX: &[u8] = b"o/";

/// Every outbox row of one endpoint.
pub fn outbox_prefix(webhook_id: &WebhookId) -> Vec<u8> {
    concat(&[OUTBOX, webhook_id.as_str().as_bytes(), &[0]])
}

/// The delivery of the event at `position` to an endpoint.
pub fn outbox_event(webhook_id: &WebhookId, position: u64) -> Vec<u8> {
    concat(&[
        &outbox_prefix(webhook_id),
        b"e",
        &position.to_be_bytes()[..],
    ])
}

/// The delivery of a message that is not an event of the log (a ping).
pub fn outbox_message(webhook_id: &WebhookId, message_id: &str) -> Vec<u8> {
    concat(&[&outbox_prefix(webhook_id), b"p", message_id.as_bytes()])
}

pub const ATTEMPTS: &[u8] = b"w/";

/// Every attempt row of one endpoint.
pub fn attempts_prefix(webhook_id: &WebhookId) -> Vec<u8> {
    concat(&[ATTEMPTS, webhook_id.as_str().as_bytes(), &[0]])
}

pub fn attempt(webhook_id: &WebhookId, sequence: u64) -> Vec<u8> {
    concat(&[&attempts_prefix(webhook_id), &sequence.to_be_bytes()[..]])
}
