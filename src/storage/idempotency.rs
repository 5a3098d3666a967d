//! Idempotency records (docs/design.md §6, ADR 0008): the first successful response to a request
//! sent with an idempotency key, kept so that a retry with the same key is answered that response
//! instead of executing again. What a request and a response are is the HTTP layer's business; here
//! a request is a keyed fingerprint and a response is opaque bytes, sealed because some responses
//! carry a token that is shown once. Must not import actix.
//!
//! | prefix | key | value | kind |
//! |---|---|---|---|
//! | `d/` | `d/<scope> 0x00 <HMAC(hash key, idempotency key) 32>` | `0x01 ‖ created unix millis i64 ‖ fingerprint 32 ‖ sealed response` | operational, not derived |
//! | `m/` | `m/idempotency_key` | the idempotency store key, wrapped by the master key | meta |
//!
//! - `d` for deduplication. `<scope>` is the account id (`acct_…`), or `operator` / `signup` for
//!   account creation. The client's key is stored only as a keyed hash: the row key has one
//!   shape whatever the client sent, and keeps nothing the client chose.
//! - The value's header is in the clear (the sweep reads the creation time without opening
//!   anything); the response is sealed with AES-256-SIV under the idempotency store key, with the
//!   row key and the header as associated data, so a record cannot be moved to another key or
//!   have its time or fingerprint edited.
//! - The fingerprint is an HMAC under a key derived from the same store key, so the stored value
//!   says nothing about the request to someone without the master key.
//! - Page cursors are signed under another key derived from it ([`Store::cursor_mac`]): stored
//!   nowhere, and the same on every start, so a cursor outlives a restart.
//! - A record of an answer that appended events is sealed before the append
//!   ([`Store::seal_idempotent_response`]) and travels in it (`AppendRequest::idempotency`): the
//!   writer puts it in the same atomic batch as those events, so no crash can keep the events
//!   and lose the answer, which would let a retry execute again (docs/adr/0020). A record of an
//!   answer that appended nothing is written through the writer on its own (`Job::Rows`). Both
//!   are durable (flush + fdatasync) before the response is answered. A record is honoured for
//!   [`RETENTION_MS`] after it was written and ignored after that; [`Store::sweep_idempotency`]
//!   deletes ignored ones with a compare-and-swap, so a newer record written under the same key
//!   meanwhile survives.
//! - Not events and not projections: `verify` and `rebuild` ignore `d/`; a rebuild keeps it.
//! - A key being executed is held in memory only (the store has one process, sled's lock sees to
//!   that): a crash releases it, and a retry after the crash executes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::writer::Job;
use super::{Store, StoreError};
use crate::crypto::{CursorMac, DataKey, KeyedHasher, MasterKey};

/// How long a record is honoured: at least the 24 hours docs/design.md §6 promises, with a day to
/// spare for clients that retry from a queue after an outage.
pub const RETENTION_MS: i64 = 48 * 60 * 60 * 1000;

const PREFIX: &[u8] = b"d/";
const STORE_KEY: &[u8] = b"m/idempotency_key";
const STORE_KEY_AD: &[u8] = b"keyledger/store/idempotency-key";
const HASH_KEY_LABEL: &[u8] = b"keyledger/idempotency/hash";
/// The label of the subkey that signs page cursors.
const CURSOR_KEY_LABEL: &[u8] = b"keyledger/cursor/mac";
const SEAL_AD: &[u8] = b"keyledger/idempotency/response";
const FORMAT_V1: u8 = 1;
/// Format byte, creation time, fingerprint.
const HEADER_LEN: usize = 1 + 8 + 32;

/// The row of one idempotency key in one scope.
fn row(scope: &str, key_hash: &[u8; 32]) -> Vec<u8> {
    [PREFIX, scope.as_bytes(), &[0], key_hash].concat()
}

/// A request's keyed fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fingerprint([u8; 32]);

/// Answer to claiming an idempotency key for a request.
pub enum IdempotencyClaim {
    /// No record: the request executes, holding the key until the ticket is dropped.
    Execute(IdempotencyTicket),
    /// The same request succeeded before: its response, opened.
    Replay(Vec<u8>),
    /// The key was used for another request (finished or still executing).
    Reused,
    /// The same request is executing right now.
    InProgress,
}

type InFlight = Arc<Mutex<HashMap<Vec<u8>, Fingerprint>>>;

/// A sealed record, ready to be written: into the batch of the events it answers for
/// (`AppendRequest::idempotency`), or on its own. Boxed, as it rides in the writer's jobs,
/// whose size every append pays for, and most appends carry none.
pub struct IdempotencyRecord(Box<(Vec<u8>, Vec<u8>)>);

impl IdempotencyRecord {
    /// The row and value the writer puts in its batch.
    pub(super) fn into_row(self) -> (Vec<u8>, Vec<u8>) {
        *self.0
    }
}

/// A key held by one executing request; dropping it releases the key.
pub struct IdempotencyTicket {
    row: Vec<u8>,
    fingerprint: Fingerprint,
    in_flight: InFlight,
}

impl Drop for IdempotencyTicket {
    fn drop(&mut self) {
        lock(&self.in_flight).remove(&self.row);
    }
}

/// A poisoned lock only means another request panicked while holding it; the map is still sound.
fn lock(in_flight: &InFlight) -> MutexGuard<'_, HashMap<Vec<u8>, Fingerprint>> {
    in_flight.lock().unwrap_or_else(|e| e.into_inner())
}

/// The store's idempotency keys and the keys being executed.
pub(super) struct Idempotency {
    seal: DataKey,
    hasher: KeyedHasher,
    cursors: CursorMac,
    in_flight: InFlight,
}

impl Idempotency {
    /// Unwraps the idempotency store key, creating it first in a store that has none (every store
    /// made before idempotency existed).
    pub(super) fn open(tree: &sled::Tree, master: &MasterKey) -> Result<Self, StoreError> {
        let seal = match tree.get(STORE_KEY)? {
            Some(wrapped) => master
                .unwrap_key(&wrapped, STORE_KEY_AD)
                .map_err(|_| StoreError::WrongMasterKey)?,
            None => {
                let key = DataKey::generate();
                tree.insert(STORE_KEY, master.wrap(&key, STORE_KEY_AD)?)?;
                tree.flush()?;
                key
            }
        };
        Ok(Self {
            hasher: KeyedHasher::new(&seal.derive(HASH_KEY_LABEL)),
            cursors: CursorMac::new(&seal.derive(CURSOR_KEY_LABEL)),
            seal,
            in_flight: Arc::default(),
        })
    }
}

/// A record's clear header.
struct Header {
    created: i64,
    fingerprint: Fingerprint,
}

fn decode_header(value: &[u8]) -> Result<(Header, &[u8]), StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        what: "idempotency record".into(),
        reason: reason.into(),
    };
    if value.len() < HEADER_LEN {
        return Err(corrupt("shorter than its header"));
    }
    let (header, sealed) = value.split_at(HEADER_LEN);
    if header[0] != FORMAT_V1 {
        return Err(corrupt("unknown format"));
    }
    let created = <[u8; 8]>::try_from(&header[1..9])
        .map(i64::from_be_bytes)
        .map_err(|_| corrupt("no creation time"))?;
    let fingerprint = <[u8; 32]>::try_from(&header[9..HEADER_LEN])
        .map(Fingerprint)
        .map_err(|_| corrupt("no fingerprint"))?;
    Ok((
        Header {
            created,
            fingerprint,
        },
        sealed,
    ))
}

fn encode_header(created: i64, fingerprint: &Fingerprint) -> Vec<u8> {
    [&[FORMAT_V1][..], &created.to_be_bytes(), &fingerprint.0].concat()
}

/// Binds a sealed response to its row and its header.
fn seal_ad(row: &[u8], header: &[u8]) -> Vec<u8> {
    [SEAL_AD, &(row.len() as u64).to_be_bytes(), row, header].concat()
}

fn expired(created: i64, now: i64) -> bool {
    now.saturating_sub(created) >= RETENTION_MS
}

impl Store {
    /// What signs and checks the page cursors of this store: keyed by a subkey of the
    /// idempotency store key (HKDF-Expand, as the fingerprint key is), so only a holder of the
    /// master key can make a cursor the server accepts.
    pub fn cursor_mac(&self) -> CursorMac {
        self.inner.idempotency.cursors.clone()
    }

    /// The keyed fingerprint of a request given as parts (each length-prefixed, so no two lists
    /// of parts hash alike).
    pub fn idempotency_fingerprint(&self, parts: &[&[u8]]) -> Fingerprint {
        let lengths: Vec<[u8; 8]> = parts
            .iter()
            .map(|p| (p.len() as u64).to_be_bytes())
            .collect();
        let mut input: Vec<&[u8]> = vec![b"request\0"];
        for (part, len) in parts.iter().zip(&lengths) {
            input.push(len);
            input.push(part);
        }
        Fingerprint(self.inner.idempotency.hasher.hash(&input))
    }

    /// Claims `key` in `scope` for the request with `fingerprint`, or answers why not. `now` is
    /// unix milliseconds.
    pub fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        now: i64,
    ) -> Result<IdempotencyClaim, StoreError> {
        self.claim(scope, key, fingerprint, now)
            .map_err(|e| self.noticed(e, None))
    }

    fn claim(
        &self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        now: i64,
    ) -> Result<IdempotencyClaim, StoreError> {
        let state = &self.inner.idempotency;
        let row = row(scope, &state.hasher.hash(&[b"key\0", key.as_bytes()]));
        // Checking the executing keys, then the records, then claiming, under one lock: a record
        // is written before its key is released, so every request sees one or the other.
        let mut in_flight = lock(&state.in_flight);
        if let Some(executing) = in_flight.get(&row) {
            return Ok(if *executing == fingerprint {
                IdempotencyClaim::InProgress
            } else {
                IdempotencyClaim::Reused
            });
        }
        if let Some(value) = self.inner.db.get(&row)? {
            let (header, sealed) = decode_header(&value)?;
            if !expired(header.created, now) {
                if header.fingerprint != fingerprint {
                    return Ok(IdempotencyClaim::Reused);
                }
                let ad = seal_ad(&row, &value[..HEADER_LEN]);
                let response = state
                    .seal
                    .open(&ad, sealed)
                    .map_err(|e| StoreError::Corrupt {
                        what: "idempotency record".into(),
                        reason: e.to_string(),
                    })?;
                return Ok(IdempotencyClaim::Replay(response));
            }
        }
        in_flight.insert(row.clone(), fingerprint);
        Ok(IdempotencyClaim::Execute(IdempotencyTicket {
            row,
            fingerprint,
            in_flight: state.in_flight.clone(),
        }))
    }

    /// Seals the response of the request holding `ticket` into its record, to be written with
    /// the events that produce it (`AppendRequest::idempotency`). `now` is unix milliseconds.
    pub fn seal_idempotent_response(
        &self,
        ticket: &IdempotencyTicket,
        response: &[u8],
        now: i64,
    ) -> Result<IdempotencyRecord, StoreError> {
        let header = encode_header(now, &ticket.fingerprint);
        let sealed = self
            .inner
            .idempotency
            .seal
            .seal(&seal_ad(&ticket.row, &header), response)?;
        let value = [header, sealed].concat();
        Ok(IdempotencyRecord(Box::new((ticket.row.clone(), value))))
    }

    /// Keeps the response of the request holding `ticket`, sealed, on its own (the request
    /// appended nothing), and answers once it is durable. The caller releases the key by
    /// dropping the ticket afterwards.
    pub async fn record_idempotent_response(
        &self,
        ticket: &IdempotencyTicket,
        response: &[u8],
        now: i64,
    ) -> Result<(), StoreError> {
        let record = self.seal_idempotent_response(ticket, response, now)?;
        let (tx, rx) = oneshot::channel();
        self.send(Job::Rows((vec![record.into_row()], tx)))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Deletes records older than the retention (and unreadable ones); answers how many. Not
    /// flushed: a deletion lost to a crash is made again by the next sweep.
    pub fn sweep_idempotency(&self, now: i64) -> Result<usize, StoreError> {
        let mut swept = 0;
        for item in self.inner.db.scan_prefix(PREFIX) {
            let (key, value) = item?;
            let stale = match decode_header(&value) {
                Ok((header, _)) => expired(header.created, now),
                Err(error) => {
                    tracing::warn!(%error, "deleting an unreadable idempotency record");
                    true
                }
            };
            if stale
                && self
                    .inner
                    .db
                    .compare_and_swap(&key, Some(&value), None::<&[u8]>)?
                    .is_ok()
            {
                swept += 1;
            }
        }
        Ok(swept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::es::{EventMeta, ExpectedVersion, NewEvent, StreamId};
    use crate::storage::{AppendError, AppendRequest, Durability};

    const HOUR: i64 = 60 * 60 * 1000;

    /// Opens the store, waiting out the lock of one just dropped: sled's I/O threads can hold
    /// the `db` file for a moment after the last handle goes.
    fn open(dir: &std::path::Path, master: &MasterKey) -> Store {
        released(|| Store::open(dir, master, Durability::Sync).map_err(|e| e.to_string()))
    }

    fn released<T>(mut open: impl FnMut() -> Result<T, String>) -> T {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open() {
                Ok(opened) => return opened,
                Err(e) if std::time::Instant::now() > deadline => panic!("cannot open: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    /// A new store in a temp dir that lives as long as the answer.
    fn fresh() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &MasterKey::generate());
        (dir, store)
    }

    fn claim(store: &Store, scope: &str, key: &str, body: &[u8], now: i64) -> IdempotencyClaim {
        let fingerprint = store.idempotency_fingerprint(&[b"POST", b"/v1/x", body]);
        store
            .claim_idempotency_key(scope, key, fingerprint, now)
            .unwrap()
    }

    fn execute(claim: IdempotencyClaim) -> IdempotencyTicket {
        match claim {
            IdempotencyClaim::Execute(ticket) => ticket,
            _ => panic!("expected to execute"),
        }
    }

    fn replayed(claim: IdempotencyClaim) -> Vec<u8> {
        match claim {
            IdempotencyClaim::Replay(response) => response,
            _ => panic!("expected a replay"),
        }
    }

    /// Claims `key` for a request with `body`, which must execute, and records `response` for it.
    async fn record(store: &Store, scope: &str, key: &str, body: &[u8], response: &[u8], now: i64) {
        let ticket = execute(claim(store, scope, key, body, now));
        store
            .record_idempotent_response(&ticket, response, now)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_recorded_response_is_replayed_to_the_same_request_only() {
        let (_dir, store) = fresh();
        let t0 = 1_000 * HOUR;
        let ticket = execute(claim(&store, "acct_1", "k", b"{}", t0));
        assert!(matches!(
            claim(&store, "acct_1", "k", b"{}", t0),
            IdempotencyClaim::InProgress
        ));
        assert!(matches!(
            claim(&store, "acct_1", "k", b"{\"other\":1}", t0),
            IdempotencyClaim::Reused
        ));
        store
            .record_idempotent_response(&ticket, b"the response", t0)
            .await
            .unwrap();
        drop(ticket);
        assert_eq!(
            replayed(claim(&store, "acct_1", "k", b"{}", t0 + HOUR)),
            b"the response"
        );
        assert!(matches!(
            claim(&store, "acct_1", "k", b"{\"other\":1}", t0),
            IdempotencyClaim::Reused
        ));
        // Another scope, or another key, is another record.
        drop(execute(claim(&store, "acct_2", "k", b"{}", t0)));
        drop(execute(claim(&store, "acct_1", "k2", b"{}", t0)));
        store.shutdown();
    }

    /// An account's creation carrying the record of its answer, expecting `expected`.
    fn creation(expected: ExpectedVersion, record: IdempotencyRecord) -> AppendRequest {
        let data = serde_json::json!({
            "account_id": "acct_01M83WSGZCA5P4FYV8YQM5SFYW",
            "email": "ada@example.com",
            "created_at": "2026-11-23T09:46:29Z",
        });
        AppendRequest {
            stream: StreamId::new("account", "acct_01M83WSGZCA5P4FYV8YQM5SFYW"),
            expected,
            events: vec![NewEvent {
                event_type: "account.created".into(),
                schema: 1,
                data,
            }],
            meta: EventMeta::default(),
            data_key: None,
            also: Vec::new(),
            idempotency: Some(record),
        }
    }

    #[tokio::test]
    async fn a_record_sealed_into_an_append_is_written_with_its_events_or_not_at_all() {
        let (_dir, store) = fresh();
        let ticket = execute(claim(&store, "operator", "k", b"{}", 0));
        let record = store.seal_idempotent_response(&ticket, b"201", 0).unwrap();
        let refused = store
            .append(creation(ExpectedVersion::Exact(5), record))
            .await;
        assert!(matches!(refused, Err(AppendError::Conflict { .. })));
        drop(ticket);
        // The refused append recorded nothing: the key executes again.
        let ticket = execute(claim(&store, "operator", "k", b"{}", 0));
        let record = store.seal_idempotent_response(&ticket, b"201", 0).unwrap();
        let appended = store
            .append(creation(ExpectedVersion::NoStream, record))
            .await
            .unwrap();
        assert_eq!(appended.len(), 1);
        // Written with the events, before the append was acknowledged.
        assert!(store.inner.db.get(&ticket.row).unwrap().is_some());
        drop(ticket);
        assert_eq!(replayed(claim(&store, "operator", "k", b"{}", 1)), b"201");
        store.shutdown();
    }

    #[tokio::test]
    async fn a_dropped_ticket_releases_the_key_without_a_record() {
        let (_dir, store) = fresh();
        drop(execute(claim(&store, "acct_1", "k", b"{}", 0)));
        // A different request may now use the key: nothing was recorded.
        drop(execute(claim(&store, "acct_1", "k", b"{\"x\":1}", 0)));
        store.shutdown();
    }

    #[tokio::test]
    async fn records_expire_after_the_retention_and_are_swept() {
        let (_dir, store) = fresh();
        let t0 = 1_000 * HOUR;
        record(&store, "acct_1", "old", b"{}", b"old", t0).await;
        let t1 = t0 + 24 * HOUR;
        record(&store, "acct_1", "new", b"{}", b"new", t1).await;

        // Honoured for at least 24 hours...
        assert_eq!(replayed(claim(&store, "acct_1", "old", b"{}", t1)), b"old");
        assert_eq!(store.sweep_idempotency(t1).unwrap(), 0);
        // ...and ignored once the retention has passed, then swept.
        let t2 = t0 + RETENTION_MS;
        drop(execute(claim(&store, "acct_1", "old", b"{\"x\":1}", t2)));
        assert_eq!(store.sweep_idempotency(t2).unwrap(), 1);
        assert_eq!(replayed(claim(&store, "acct_1", "new", b"{}", t2)), b"new");
        store.shutdown();
    }

    #[tokio::test]
    async fn a_store_without_the_key_gets_one_and_records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let store = open(dir.path(), &master);
        store.shutdown();
        drop(store);
        {
            // A store made before idempotency existed.
            let db = released(|| sled::open(dir.path()).map_err(|e| e.to_string()));
            db.remove(STORE_KEY).unwrap();
            db.flush().unwrap();
        }
        let store = open(dir.path(), &master);
        record(&store, "operator", "k", b"{}", b"kl_secret_token", 0).await;
        store.shutdown();
        drop(store);

        let store = open(dir.path(), &master);
        assert_eq!(
            replayed(claim(&store, "operator", "k", b"{}", 1)),
            b"kl_secret_token"
        );
        store.shutdown();
        drop(store);
        let wrong = MasterKey::generate();
        let refusal = released(|| match Store::open(dir.path(), &wrong, Durability::Sync) {
            Err(StoreError::Locked) => Err("locked".to_owned()),
            other => Ok(other),
        });
        assert!(matches!(refusal, Err(StoreError::WrongMasterKey)));
    }

    #[tokio::test]
    async fn a_record_moved_to_another_key_does_not_open() {
        let (_dir, store) = fresh();
        record(&store, "acct_1", "a", b"{}", b"a", 0).await;
        let ticket = execute(claim(&store, "acct_1", "b", b"{}", 0));
        let b_row = ticket.row.clone();
        drop(ticket);
        let (_, a_value) = store.inner.db.scan_prefix(PREFIX).next().unwrap().unwrap();
        store.inner.db.insert(&b_row, a_value).unwrap();
        assert!(matches!(
            store.claim_idempotency_key(
                "acct_1",
                "b",
                store.idempotency_fingerprint(&[b"POST", b"/v1/x", b"{}"]),
                0
            ),
            Err(StoreError::Corrupt { .. })
        ));
        store.shutdown();
    }
}
