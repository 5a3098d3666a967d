//! Backup and restore: the store as NDJSON (`keyledger export`, `GET /v1/admin/export`) and back
//! into an empty data directory (`keyledger import`), ADR 0030.
//!
//! One line each, in this order:
//!
//! 1. the header: `{"keyledger_export":1,"store_schema":..,"store_id":..,"master_key_id":..,
//!    "positions":N,"rows":R,"keys":K}`;
//! 2. R rows that are neither the log nor a projection (`m/` with the wrapped store keys, `u/`,
//!    `d/`, and whatever other operational rows a store holds), key and value in base64:
//!    `{"row":..,"value":..}`; `m/projections` is left out, so the restored store rebuilds its
//!    projections from the log;
//! 3. K key files as stored under `keys/` (still wrapped by the master key):
//!    `{"key":"<record>","file":"<base64>"}`;
//! 4. N events, exactly as stored, with their chain hash:
//!    `{"position":n,"hash":"<64 hex>","event":<envelope JSON>}`;
//! 5. the closing line: `{"end":{"last_position":N,"last_hash":"<64 hex>"}}`, so a backup cut
//!    short is told from a complete one.
//!
//! The snapshot is taken on the writer between groups: the last position, the rows and the key
//! files are read there together, so they describe the store at that one position (a key
//! destroyed after it is still in the backup, as its revocation is not). The events up to that
//! position are then read beside the running writer: the log only grows, and what is at or before
//! a durable position never changes.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::keyring::Keyring;
use super::open::{CHAIN_KEY_AD, STORE_SCHEMA_VERSION, open_released};
use super::verify::{self, VerifyReport, chain_hash};
use super::{Store, StoreError, files, keys};
use crate::crypto::{DataKey, KeyedHasher, MasterKey, MasterKeyId};

/// The version of the export format this build writes and reads.
pub const EXPORT_FORMAT: u32 = 1;

/// Events written to the tree per batch on import.
const IMPORT_BATCH: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "refusing to import into {}: it is not empty (import restores into a new or empty data directory)",
        dir.display()
    )]
    NotEmpty { dir: PathBuf },
    #[error("the backup does not read: line {line}: {reason}")]
    Malformed { line: u64, reason: String },
    #[error("the backup is truncated: {0}")]
    Truncated(String),
    #[error("the backup's hash chain is broken at position {position}: {reason}")]
    Chain { position: u64, reason: String },
    #[error(
        "the backup was made under master key {backup}, this key is {given}: import it with the master key of the store it came from"
    )]
    OtherMasterKey { backup: String, given: String },
    #[error("the restored store does not verify: {0}")]
    Unsound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    keyledger_export: u32,
    store_schema: u32,
    store_id: String,
    master_key_id: String,
    positions: u64,
    rows: u64,
    keys: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowLine {
    row: String,
    value: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyLine {
    key: String,
    file: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndLine {
    end: End,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct End {
    last_position: u64,
    last_hash: String,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub positions: u64,
    pub rows: usize,
    pub keys: usize,
}

/// Rows as keys and values.
type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// What the writer reads for an export, at one position.
struct Snapshot {
    position: u64,
    last_hash: [u8; 32],
    rows: Rows,
    keys: Vec<(String, Vec<u8>)>,
}

/// The store's public id: a keyed hash of a fixed label under its chain key, which is random per
/// store, so two stores never share it and a backup names the store it came from.
fn store_id(chain: &KeyedHasher) -> String {
    hex::encode(&chain.hash(&[b"keyledger/store-id"])[..16])
}

/// Every row outside the log and the projections, and outside `m/projections`, in key order.
fn operational_rows(tree: &sled::Tree) -> Result<Rows, StoreError> {
    let skipped: Vec<&[u8]> = keys::PROJECTIONS
        .iter()
        .copied()
        .chain([keys::LOG])
        .collect();
    let mut rows = Vec::new();
    let mut from = Vec::new();
    while let Some(item) = tree.range(from.clone()..).next() {
        let (key, value) = item?;
        if let Some(prefix) = skipped.iter().find(|p| key.starts_with(p)) {
            // Past every key under the prefix: the prefix with its last byte raised.
            let mut next = prefix.to_vec();
            if let Some(last) = next.last_mut() {
                *last = last.saturating_add(1);
            }
            from = next;
            continue;
        }
        if key.as_ref() != keys::PROJECTION_FORMAT {
            rows.push((key.to_vec(), value.to_vec()));
        }
        from = [key.as_ref(), &[0]].concat();
    }
    Ok(rows)
}

impl Store {
    /// Writes the whole store as NDJSON to `out`: a consistent snapshot at the durable position
    /// when it starts, taken while the server goes on serving.
    pub fn export(&self, out: &mut dyn Write) -> Result<ExportReport, StoreError> {
        let keyring = self.inner.keyring.clone();
        let snapshot = self.exclusive(move |tree| -> Result<Snapshot, StoreError> {
            let (position, last_hash) = verify::tail(tree)?;
            let rows = operational_rows(tree)?;
            let mut keys = Vec::new();
            for record in keyring.records()? {
                if let Some(bytes) = keyring.get_raw(&record)? {
                    keys.push((record, bytes));
                }
            }
            Ok(Snapshot {
                position,
                last_hash,
                rows,
                keys,
            })
        })??;
        let header = Header {
            keyledger_export: EXPORT_FORMAT,
            store_schema: STORE_SCHEMA_VERSION,
            store_id: store_id(&self.inner.chain),
            master_key_id: self.inner.master.id().to_string(),
            positions: snapshot.position,
            rows: snapshot.rows.len() as u64,
            keys: snapshot.keys.len() as u64,
        };
        line(out, &header)?;
        for (row, value) in &snapshot.rows {
            let row = RowLine {
                row: STANDARD.encode(row),
                value: STANDARD.encode(value),
            };
            line(out, &row)?;
        }
        for (record, bytes) in &snapshot.keys {
            let key = KeyLine {
                key: record.clone(),
                file: STANDARD.encode(bytes),
            };
            line(out, &key)?;
        }
        self.export_events(out, snapshot.position, &snapshot.last_hash)?;
        line(
            out,
            &EndLine {
                end: End {
                    last_position: snapshot.position,
                    last_hash: hex::encode(snapshot.last_hash),
                },
            },
        )?;
        out.flush()?;
        Ok(ExportReport {
            positions: snapshot.position,
            rows: snapshot.rows.len(),
            keys: snapshot.keys.len(),
        })
    }

    /// The events from 1 to `last`, with the chain checked as they go: a backup of a broken
    /// chain would not import, so it is refused here, naming the position.
    fn export_events(
        &self,
        out: &mut dyn Write,
        last: u64,
        last_hash: &[u8; 32],
    ) -> Result<(), StoreError> {
        let chain = &self.inner.chain;
        let mut previous = [0u8; 32];
        let mut expected = 1u64;
        if last == 0 {
            return Ok(());
        }
        for item in self.inner.db.range(keys::log(1)..=keys::log(last)) {
            let (key, value) = item.map_err(|e| self.noticed(e.into(), None))?;
            let position = keys::log_position(&key).ok_or_else(|| StoreError::Corrupt {
                what: "log key".into(),
                reason: "not a position".into(),
            })?;
            let broken = |reason: String| StoreError::Chain { position, reason };
            if position != expected {
                return Err(self.noticed(broken(format!("position {expected} is missing")), None));
            }
            if value.len() < 32 {
                return Err(self.noticed(broken("shorter than its hash".into()), None));
            }
            let (hash, json) = value.split_at(32);
            let computed = chain_hash(chain, &previous, json);
            if hash != computed {
                return Err(self.noticed(broken("the hash does not chain".into()), None));
            }
            if json.contains(&b'\n') {
                return Err(self.noticed(broken("the event holds a line break".into()), None));
            }
            out.write_all(b"{\"position\":")?;
            out.write_all(position.to_string().as_bytes())?;
            out.write_all(b",\"hash\":\"")?;
            out.write_all(hex::encode(hash).as_bytes())?;
            out.write_all(b"\",\"event\":")?;
            out.write_all(json)?;
            out.write_all(b"}\n")?;
            previous = computed;
            expected += 1;
        }
        if expected != last + 1 || &previous != last_hash {
            return Err(StoreError::Chain {
                position: expected,
                reason: format!("the log ends before position {last}"),
            });
        }
        Ok(())
    }
}

fn line(out: &mut dyn Write, value: &impl Serialize) -> Result<(), StoreError> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// What an import restored, and the check of the restored store.
#[derive(Debug)]
pub struct ImportReport {
    pub positions: u64,
    pub rows: usize,
    pub keys: usize,
    pub store_id: String,
    pub verify: VerifyReport,
}

/// Whether `dir` may receive an import: missing, or an empty directory.
fn require_empty(dir: &Path) -> Result<bool, BackupError> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
        Ok(mut entries) => match entries.next() {
            None => Ok(true),
            Some(_) => Err(BackupError::NotEmpty {
                dir: dir.to_owned(),
            }),
        },
    }
}

/// Restores a backup into `dir`, which must be missing or empty: checks it line by line (its
/// header, the master key, every event's place and chain hash, its closing line), writes the rows,
/// key files and events, then opens the store, which rebuilds the projections from the log with
/// the chain check, and verifies it as `keyledger verify` does. On any failure, everything the
/// import wrote is removed again.
pub fn import(
    dir: &Path,
    master: &MasterKey,
    input: &mut dyn BufRead,
) -> Result<ImportReport, BackupError> {
    let existed = require_empty(dir)?;
    let outcome = import_into(dir, master, input);
    if outcome.is_err() {
        let cleaned = if existed {
            std::fs::read_dir(dir).and_then(|entries| {
                entries.into_iter().try_for_each(|entry| {
                    let path = entry?.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(path)
                    } else {
                        std::fs::remove_file(path)
                    }
                })
            })
        } else {
            std::fs::remove_dir_all(dir)
        };
        if let Err(error) = cleaned {
            tracing::error!(%error, dir = %dir.display(), "removing a failed import's files failed");
        }
    }
    outcome
}

fn import_into(
    dir: &Path,
    master: &MasterKey,
    input: &mut dyn BufRead,
) -> Result<ImportReport, BackupError> {
    files::create_private_dir(dir)?;
    let (positions, rows, keys, store_id) = {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(StoreError::from)?;
        let tree: &sled::Tree = &db;
        let keyring = Keyring::open(dir, master.id())?;
        let written = write_backup(tree, &keyring, master, input)?;
        db.flush().map_err(StoreError::from)?;
        written
    };
    let store = open_released(dir, master)?;
    let verify = store.verify();
    store.shutdown();
    let verify = verify?;
    if !verify.is_sound() {
        let first = verify
            .mismatches
            .iter()
            .chain(&verify.key_problems)
            .next()
            .cloned()
            .unwrap_or_default();
        return Err(BackupError::Unsound(first));
    }
    Ok(ImportReport {
        positions,
        rows,
        keys,
        store_id,
        verify,
    })
}

/// Reads the backup and writes it, the schema row last: until it is written, the store refuses
/// to open ("the schema version is missing but the store holds data"), so an import cut short
/// never passes for a store.
fn write_backup(
    tree: &sled::Tree,
    keyring: &Keyring,
    master: &MasterKey,
    input: &mut dyn BufRead,
) -> Result<(u64, usize, usize, String), BackupError> {
    let mut reader = Lines { input, number: 0 };
    let Some(first) = reader.next()? else {
        return Err(BackupError::Truncated("the file is empty".into()));
    };
    let header: Header = reader.parse(&first, "the header")?;
    if header.keyledger_export != EXPORT_FORMAT {
        return Err(reader.malformed(format!(
            "export format {} (this build reads {EXPORT_FORMAT})",
            header.keyledger_export
        )));
    }
    if header.store_schema != STORE_SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema {
            found: header.store_schema,
            supported: STORE_SCHEMA_VERSION,
        }
        .into());
    }
    let backup_master = MasterKeyId::from_hex(&header.master_key_id).ok_or_else(|| {
        reader.malformed("the header's master_key_id is not 32 hex digits".into())
    })?;
    if backup_master != master.id() {
        return Err(BackupError::OtherMasterKey {
            backup: header.master_key_id,
            given: master.id().to_string(),
        });
    }
    let mut schema_row = None;
    let mut chain = None;
    let mut batch = sled::Batch::default();
    for _ in 0..header.rows {
        let text = reader.expect("a row")?;
        let row: RowLine = reader.parse(&text, "a row")?;
        let key = reader.base64(&row.row)?;
        let value = reader.base64(&row.value)?;
        if key.starts_with(keys::LOG) || keys::PROJECTIONS.iter().any(|p| key.starts_with(p)) {
            return Err(reader.malformed("a row of the log or a projection".into()));
        }
        if key == keys::CHAIN_KEY {
            let key: DataKey = master
                .unwrap_key(&value, CHAIN_KEY_AD)
                .map_err(|_| StoreError::WrongMasterKey)?;
            chain = Some(KeyedHasher::new(&key));
        }
        if key == keys::STORE_SCHEMA {
            schema_row = Some(value);
        } else {
            batch.insert(key, value);
        }
    }
    tree.apply_batch(batch).map_err(StoreError::from)?;
    let (Some(chain), Some(schema_row)) = (chain, schema_row) else {
        return Err(reader.malformed("the rows hold no chain key or no schema".into()));
    };
    if store_id(&chain) != header.store_id {
        return Err(reader.malformed("the header's store_id is not this store's".into()));
    }
    let mut seen = HashSet::new();
    for _ in 0..header.keys {
        let text = reader.expect("a key file")?;
        let key: KeyLine = reader.parse(&text, "a key file")?;
        let bytes = reader.base64(&key.file)?;
        if !seen.insert(key.key.clone()) {
            return Err(reader.malformed(format!("the key of {} twice", key.key)));
        }
        keyring
            .put_raw(&key.key, &bytes)
            .map_err(|e| reader.malformed(format!("key {}: {e}", key.key)))?;
    }
    let mut previous = [0u8; 32];
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    for position in 1..=header.positions {
        let Some(text) = reader.next()? else {
            return Err(BackupError::Truncated(format!(
                "it ends after position {} of {}",
                position - 1,
                header.positions
            )));
        };
        let Some((found, hash, json)) = event_line(&text) else {
            if text.starts_with(b"{\"end\":") {
                return Err(BackupError::Truncated(format!(
                    "it closes after position {} of {}",
                    position - 1,
                    header.positions
                )));
            }
            return Err(reader.malformed("not an event line".into()));
        };
        if found != position {
            return Err(BackupError::Chain {
                position,
                reason: format!(
                    "the next event in the backup is at position {found}: an event is missing"
                ),
            });
        }
        let computed = chain_hash(&chain, &previous, json);
        if computed != hash {
            return Err(BackupError::Chain {
                position,
                reason: "the event's hash does not chain (the event or its hash was changed)"
                    .into(),
            });
        }
        batch.insert(keys::log(position), [&hash[..], json].concat());
        pending += 1;
        if pending == IMPORT_BATCH {
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(StoreError::from)?;
            pending = 0;
        }
        previous = computed;
    }
    tree.apply_batch(batch).map_err(StoreError::from)?;
    let Some(text) = reader.next()? else {
        return Err(BackupError::Truncated(format!(
            "all {} events are there, the closing line is not",
            header.positions
        )));
    };
    if event_line(&text).is_some() {
        return Err(reader.malformed("more events than the header counts".into()));
    }
    let end: EndLine = reader.parse(&text, "the closing line")?;
    if end.end.last_position != header.positions || end.end.last_hash != hex::encode(previous) {
        return Err(BackupError::Chain {
            position: header.positions,
            reason: "the closing line names another last position or hash".into(),
        });
    }
    if reader.next()?.is_some() {
        return Err(reader.malformed("lines after the closing line".into()));
    }
    tree.insert(keys::STORE_SCHEMA, schema_row)
        .map_err(StoreError::from)?;
    Ok((
        header.positions,
        usize::try_from(header.rows).unwrap_or(usize::MAX),
        seen.len(),
        header.store_id,
    ))
}

/// `{"position":n,"hash":"<64 hex>","event":<json>}`, as [`Store::export`] writes it: the
/// position, the hash and the event's bytes exactly as stored.
fn event_line(text: &[u8]) -> Option<(u64, [u8; 32], &[u8])> {
    let rest = text.strip_prefix(b"{\"position\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let position = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b",\"hash\":\"")?;
    let hash = hex::decode(rest.get(..64)?).ok()?.try_into().ok()?;
    let json = rest[64..]
        .strip_prefix(b"\",\"event\":")?
        .strip_suffix(b"}")?;
    Some((position, hash, json))
}

/// The backup's lines, numbered from 1 for messages.
struct Lines<'a> {
    input: &'a mut dyn BufRead,
    number: u64,
}

impl Lines<'_> {
    /// The next line without its line break; `None` at the end. A last line without its line
    /// break was cut short.
    fn next(&mut self) -> Result<Option<Vec<u8>>, BackupError> {
        let mut text = Vec::new();
        if self.input.read_until(b'\n', &mut text)? == 0 {
            return Ok(None);
        }
        self.number += 1;
        if text.pop() != Some(b'\n') {
            return Err(BackupError::Truncated(format!(
                "line {} is cut short",
                self.number
            )));
        }
        Ok(Some(text))
    }

    fn expect(&mut self, what: &str) -> Result<Vec<u8>, BackupError> {
        self.next()?.ok_or_else(|| {
            BackupError::Truncated(format!(
                "it ends after line {} where {what} was due",
                self.number
            ))
        })
    }

    fn malformed(&self, reason: String) -> BackupError {
        BackupError::Malformed {
            line: self.number,
            reason,
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        text: &[u8],
        what: &str,
    ) -> Result<T, BackupError> {
        serde_json::from_slice(text).map_err(|e| self.malformed(format!("not {what}: {e}")))
    }

    fn base64(&self, text: &str) -> Result<Vec<u8>, BackupError> {
        STANDARD
            .decode(text)
            .map_err(|e| self.malformed(format!("not base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_read_back_exactly() {
        let hash = [7u8; 32];
        let json = br#"{"position":3,"data":{"a":"}"}}"#;
        let line = [
            &b"{\"position\":3,\"hash\":\""[..],
            hex::encode(hash).as_bytes(),
            b"\",\"event\":",
            json,
            b"}",
        ]
        .concat();
        let (position, read, event) = event_line(&line).unwrap();
        assert_eq!((position, read, event), (3, hash, &json[..]));
        assert!(event_line(b"{\"row\":\"bS8=\",\"value\":\"\"}").is_none());
        let without_hash = br#"{"position":3,"event":{}}"#;
        assert!(event_line(without_hash).is_none());
        assert!(event_line(&line[..40]).is_none());
    }
}
