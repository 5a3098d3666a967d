//! Reading the log back: the keyed hash chain, the tail the writer resumes from, replay into
//! projections (rebuild), and the checks of `verify`: the live projections against a replay, and
//! every live credential's data key against the key files. Both commands run on the writer
//! thread between groups, so nothing is appended while they look.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::keyring::Keyring;
use super::kv::{Kv, MemKv};
use super::projection::{self, FORMAT_VERSION, project};
use super::{Store, StoreError, keys};
use crate::crypto::{KeyedHasher, MasterKey, data_key_binding};
use crate::domain::credential::Credential;
use crate::es::{Aggregate, Envelope};

impl Store {
    /// Checks the hash chain, that the live projections equal a replay of the log, and that
    /// every live credential's data key is there and opens with the master key.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let chain = self.inner.chain.clone();
        let keys = self.inner.keyring.clone();
        let master = self.inner.master.clone();
        self.exclusive(move |tree| {
            let mut replay = Replay::default();
            replay.extend(tree, &chain, None)?;
            report(tree, replay, &keys, &master)
        })?
    }

    /// Drops every projection row and rewrites them from the log; answers how many events were
    /// replayed.
    pub fn rebuild(&self) -> Result<u64, StoreError> {
        let chain = self.inner.chain.clone();
        self.exclusive(move |tree| rebuild_projections(tree, &chain))?
    }
}

/// Runs `work`, turning a panic of the storage engine (which damaged files can cause) into
/// [`StoreError::Engine`].
pub fn guarded<T>(work: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "an internal fault".to_owned());
        Err(StoreError::Engine(what))
    })
}

/// Compares the replay with the live projections and checks the data keys of the credentials
/// the replay says are live.
pub fn report(
    tree: &sled::Tree,
    replay: Replay,
    keyring: &Keyring,
    master: &MasterKey,
) -> Result<VerifyReport, StoreError> {
    let live = live_projections(tree)?;
    let mut report = compare(replay.events, &replay.rows, &live);
    let (checked, problems) = check_data_keys(&replay.rows, keyring, master)?;
    report.data_keys = checked;
    report.key_problems = problems;
    Ok(report)
}

/// Every credential that is not revoked needs its data key: present under `keys/`, and opening
/// with the master key under its binding. Answers how many were checked and what is wrong.
fn check_data_keys(
    rows: &MemKv,
    keyring: &Keyring,
    master: &MasterKey,
) -> Result<(usize, Vec<String>), StoreError> {
    let prefix = keys::aggregate(&format!("{}:", Credential::KIND));
    let mut checked = 0;
    let mut problems = Vec::new();
    for key in rows.0.keys().filter(|k| k.starts_with(&prefix)) {
        let Some(stream) = key
            .strip_prefix(&b"a/"[..])
            .and_then(|s| std::str::from_utf8(s).ok())
        else {
            continue;
        };
        let Some(stored) = projection::load::<Credential>(rows, stream)? else {
            continue;
        };
        let credential = stored.state;
        if credential.is_revoked() {
            continue;
        }
        checked += 1;
        let id = credential.byok_id.as_str();
        let binding = data_key_binding(credential.account_id.as_str(), id);
        match keyring.get(id) {
            Ok(None) => problems.push(format!(
                "live credential {id} has no data key: keys/{id} is missing"
            )),
            Ok(Some(wrapped)) => {
                if master.unwrap_key(&wrapped, &binding).is_err() {
                    problems.push(format!(
                        "the data key of live credential {id} (keys/{id}) does not open with the master key"
                    ));
                }
            }
            Err(error) => problems.push(format!(
                "the data key of live credential {id} (keys/{id}) cannot be read: {error}"
            )),
        }
    }
    Ok((checked, problems))
}

/// Replays the log with the chain check (a broken chain changes nothing), then in one batch
/// replaces every projection row with the replayed ones and records this build's projection
/// format, and flushes. Answers how many events were replayed.
pub fn rebuild_projections(tree: &sled::Tree, chain: &KeyedHasher) -> Result<u64, StoreError> {
    let mut replay = Replay::default();
    replay.extend(tree, chain, None)?;
    let mut batch = sled::Batch::default();
    for (key, _) in live_projections(tree)?.0 {
        batch.remove(key);
    }
    for (key, value) in replay.rows.0 {
        batch.insert(key, value);
    }
    batch.insert(keys::PROJECTION_FORMAT, &FORMAT_VERSION.to_be_bytes()[..]);
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(replay.events)
}

/// `hmac(chain key, previous hash ‖ envelope JSON as stored)`; the first event's previous hash is
/// 32 zero bytes.
pub fn chain_hash(chain: &KeyedHasher, previous: &[u8; 32], json: &[u8]) -> [u8; 32] {
    chain.hash(&[previous, json])
}

/// Splits a log value into its hash and envelope.
pub fn decode_log_value(position: u64, value: &[u8]) -> Result<([u8; 32], Envelope), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        what: format!("event at position {position}"),
        reason,
    };
    if value.len() < 32 {
        return Err(corrupt("shorter than its hash".into()));
    }
    let (hash, json) = value.split_at(32);
    let envelope: Envelope = serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))?;
    let mut out = [0u8; 32];
    out.copy_from_slice(hash);
    Ok((out, envelope))
}

/// The last position and its hash, or `(0, zeros)` for an empty log.
pub fn tail(tree: &sled::Tree) -> Result<(u64, [u8; 32]), StoreError> {
    match tree.scan_prefix(keys::LOG).next_back().transpose()? {
        None => Ok((0, [0; 32])),
        Some((key, value)) => {
            let position = keys::log_position(&key).ok_or_else(|| StoreError::Corrupt {
                what: "log key".into(),
                reason: "not a position".into(),
            })?;
            let (hash, _) = decode_log_value(position, &value)?;
            Ok((position, hash))
        }
    }
}

/// A replay of the log in progress: the events walked so far, with the chain checked, and the
/// projection rows they produce.
#[derive(Default)]
pub struct Replay {
    pub events: u64,
    previous: [u8; 32],
    pub rows: MemKv,
}

impl Replay {
    /// Walks on from the next position, up to `last` (inclusive) or the end of the log, checking
    /// that positions are gap-free, every hash chains and every envelope names its position, and
    /// projecting each event.
    pub fn extend(
        &mut self,
        tree: &sled::Tree,
        chain: &KeyedHasher,
        last: Option<u64>,
    ) -> Result<(), StoreError> {
        for item in tree.range(keys::log(self.events + 1)..) {
            let expected = self.events + 1;
            if last.is_some_and(|last| expected > last) {
                break;
            }
            // A row sled cannot read is reported at the position the walk had reached.
            let (key, value) = item.map_err(|e| match StoreError::from(e) {
                StoreError::Damaged { at } => StoreError::Unreadable {
                    position: expected,
                    at,
                },
                other => other,
            })?;
            if !key.starts_with(keys::LOG) {
                break;
            }
            let position = keys::log_position(&key).ok_or_else(|| StoreError::Corrupt {
                what: "log key".into(),
                reason: "not a position".into(),
            })?;
            let broken = |reason: &str| StoreError::Chain {
                position,
                reason: reason.to_owned(),
            };
            if position != expected {
                return Err(broken(&format!(
                    "expected position {expected}: the log has a gap"
                )));
            }
            let (hash, envelope) = decode_log_value(position, &value)?;
            if chain_hash(chain, &self.previous, &value[32..]) != hash {
                return Err(broken("its hash does not match: the event was altered"));
            }
            if envelope.position != position {
                return Err(broken("its envelope names another position"));
            }
            project(&mut self.rows, &envelope).map_err(|e| StoreError::Corrupt {
                what: format!("event at position {position}"),
                reason: e.to_string(),
            })?;
            self.previous = hash;
            self.events = position;
        }
        Ok(())
    }
}

/// The live projection rows.
pub fn live_projections(tree: &sled::Tree) -> Result<MemKv, StoreError> {
    let mut rows = MemKv::default();
    for prefix in keys::PROJECTIONS {
        for item in tree.scan_prefix(prefix) {
            let (k, v) = item?;
            rows.put(k.to_vec(), v.to_vec());
        }
    }
    Ok(rows)
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub projection_rows: usize,
    /// Keys whose live row differs from the replayed one (missing, extra or different),
    /// printable; empty when the store is sound.
    pub mismatches: Vec<String>,
    /// How many live credentials had their data key checked.
    pub data_keys: usize,
    /// Live credentials whose data key is missing or does not open, printable.
    pub key_problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_sound(&self) -> bool {
        self.mismatches.is_empty() && self.key_problems.is_empty()
    }
}

pub fn compare(events: u64, replayed: &MemKv, live: &MemKv) -> VerifyReport {
    let show = |k: &[u8]| String::from_utf8_lossy(k).escape_debug().to_string();
    let mut mismatches = Vec::new();
    // Rows the usage sweep may have deleted (or raced) are no mismatch (`usage.rs`).
    let now = chrono::Utc::now().timestamp();
    let swept = |k: &[u8], v: &[u8]| super::usage::sweepable(k, v, now);
    for (k, v) in &replayed.0 {
        if swept(k, v) {
            continue;
        }
        match live.0.get(k) {
            None => mismatches.push(format!("missing {}", show(k))),
            Some(live_v) if live_v != v => mismatches.push(format!("differs {}", show(k))),
            Some(_) => {}
        }
    }
    for (k, _) in live
        .0
        .iter()
        .filter(|(k, v)| !replayed.0.contains_key(*k) && !swept(k, v))
    {
        mismatches.push(format!("extra {}", show(k)));
    }
    VerifyReport {
        events,
        projection_rows: replayed.0.len(),
        mismatches,
        data_keys: 0,
        key_problems: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_of_the_engine_is_an_error() {
        let caught: Result<(), StoreError> = guarded(|| panic!("segment 3 is not free"));
        match caught {
            Err(StoreError::Engine(what)) => assert_eq!(what, "segment 3 is not free"),
            other => panic!("{other:?}"),
        }
        let caught: Result<(), StoreError> = guarded(|| panic!("{} bytes", 7));
        assert!(matches!(caught, Err(StoreError::Engine(w)) if w == "7 bytes"));
        assert_eq!(guarded(|| Ok(5)).unwrap(), 5);
    }
}
