//! Reading the log back: the keyed hash chain, the tail the writer resumes from, replay into
//! projections (rebuild), and the comparison of live projections with a replay (verify). Both
//! commands run on the writer thread between groups, so nothing is appended while they look.

use super::kv::{Kv, MemKv};
use super::projection::{FORMAT_VERSION, project};
use super::{Store, StoreError, keys};
use crate::crypto::KeyedHasher;
use crate::es::Envelope;

impl Store {
    /// Checks the hash chain and that the live projections equal a replay of the log.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let chain = self.inner.chain.clone();
        self.exclusive(move |tree| {
            let (events, replayed) = replay(tree, &chain)?;
            let live = live_projections(tree)?;
            Ok(compare(events, &replayed, &live))
        })?
    }

    /// Drops every projection row and rewrites them from the log; answers how many events were
    /// replayed.
    pub fn rebuild(&self) -> Result<u64, StoreError> {
        let chain = self.inner.chain.clone();
        self.exclusive(move |tree| rebuild_projections(tree, &chain))?
    }
}

/// Replays the log with the chain check (a broken chain changes nothing), then in one batch
/// replaces every projection row with the replayed ones and records this build's projection
/// format, and flushes. Answers how many events were replayed.
pub fn rebuild_projections(tree: &sled::Tree, chain: &KeyedHasher) -> Result<u64, StoreError> {
    let (events, replayed) = replay(tree, chain)?;
    let mut batch = sled::Batch::default();
    for (key, _) in live_projections(tree)?.0 {
        batch.remove(key);
    }
    for (key, value) in replayed.0 {
        batch.insert(key, value);
    }
    batch.insert(keys::PROJECTION_FORMAT, &FORMAT_VERSION.to_be_bytes()[..]);
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(events)
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

/// Walks the log in order, checking that positions are gap-free and every hash chains, and hands
/// each event to `visit`.
pub fn walk_log(
    tree: &sled::Tree,
    chain: &KeyedHasher,
    mut visit: impl FnMut(&Envelope) -> Result<(), StoreError>,
) -> Result<u64, StoreError> {
    let mut previous = [0u8; 32];
    let mut expected = 1u64;
    for item in tree.scan_prefix(keys::LOG) {
        let (key, value) = item?;
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
        if chain_hash(chain, &previous, &value[32..]) != hash {
            return Err(broken("its hash does not match: the event was altered"));
        }
        if envelope.position != position {
            return Err(broken("its envelope names another position"));
        }
        visit(&envelope)?;
        previous = hash;
        expected += 1;
    }
    Ok(expected - 1)
}

/// Replays the whole log into fresh projection rows.
pub fn replay(tree: &sled::Tree, chain: &KeyedHasher) -> Result<(u64, MemKv), StoreError> {
    let mut rows = MemKv::default();
    let events = walk_log(tree, chain, |envelope| {
        project(&mut rows, envelope).map_err(|e| StoreError::Corrupt {
            what: format!("event at position {}", envelope.position),
            reason: e.to_string(),
        })
    })?;
    Ok((events, rows))
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
}

impl VerifyReport {
    pub fn is_sound(&self) -> bool {
        self.mismatches.is_empty()
    }
}

pub fn compare(events: u64, replayed: &MemKv, live: &MemKv) -> VerifyReport {
    let show = |k: &[u8]| String::from_utf8_lossy(k).escape_debug().to_string();
    let mut mismatches = Vec::new();
    for (k, v) in &replayed.0 {
        match live.0.get(k) {
            None => mismatches.push(format!("missing {}", show(k))),
            Some(live_v) if live_v != v => mismatches.push(format!("differs {}", show(k))),
            Some(_) => {}
        }
    }
    for k in live.0.keys().filter(|k| !replayed.0.contains_key(*k)) {
        mismatches.push(format!("extra {}", show(k)));
    }
    VerifyReport {
        events,
        projection_rows: replayed.0.len(),
        mismatches,
    }
}
