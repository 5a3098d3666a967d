//! Master-key rotation (`keyledger rekey`): every data key under `keys/` and every store key in
//! `m/` re-wrapped under a new master key, the log left as it is (ADR 0031). Also who owns a key
//! file, which the rekey and `verify` both need to rebuild its binding.
//!
//! Resumable rather than atomic: the key files are re-wrapped one by one, each written in place
//! (a temporary file renamed over the old one) and marked with the id of the master key that
//! wrapped it, so a rerun skips those already done; the store keys and `m/master_key_id` follow
//! last, in one batch. Until that batch, the old master key still opens the store; after it, only
//! the new one does. Generic over what is stored: any file under `keys/`, any `m/<name>_key` row.

use std::collections::HashMap;

use serde::Deserialize;

use super::keyring::{KeyFile, Keyring};
use super::{Store, StoreError, keys};
use crate::crypto::{MasterKey, data_key_binding};

/// What a rekey did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RekeyReport {
    /// Key files re-wrapped by this run.
    pub rewrapped: usize,
    /// Key files a previous run had already re-wrapped.
    pub already: usize,
    /// Store keys re-wrapped (0 when a previous run had done them).
    pub store_keys: usize,
    /// Whether the run stopped before the end (`stop_after`): a rerun finishes it.
    pub stopped: bool,
}

impl Store {
    /// Re-wraps every key file and store key from `old` to `new`. The store may have been opened
    /// with either (with `new` when a previous run finished the store keys). Runs on the writer
    /// between groups, so no key file is written meanwhile. `stop_after` stops after re-wrapping
    /// that many key files, as an interruption would.
    pub fn rekey(
        &self,
        old: &MasterKey,
        new: &MasterKey,
        stop_after: Option<usize>,
    ) -> Result<RekeyReport, StoreError> {
        let keyring = self.inner.keyring.clone();
        let (old, new) = (old.clone(), new.clone());
        self.exclusive(move |tree| rekey(tree, &keyring, &old, &new, stop_after))?
    }
}

fn rekey(
    tree: &sled::Tree,
    keyring: &Keyring,
    old: &MasterKey,
    new: &MasterKey,
    stop_after: Option<usize>,
) -> Result<RekeyReport, StoreError> {
    let new_id = new.id();
    let owners = Owners::read(tree)?;
    let mut report = RekeyReport {
        rewrapped: 0,
        already: 0,
        store_keys: 0,
        stopped: false,
    };
    for record in keyring.records()? {
        let Some(file) = keyring.get_file(&record)? else {
            continue;
        };
        if file.master == Some(new_id) {
            report.already += 1;
            continue;
        }
        if stop_after.is_some_and(|n| report.rewrapped >= n) {
            report.stopped = true;
            return Ok(report);
        }
        let account = owners.account(&record, &file)?;
        let binding = data_key_binding(&account, &record);
        let key = old
            .unwrap_key(&file.wrapped, &binding)
            .map_err(|_| StoreError::Corrupt {
                what: format!("data key keys/{record}"),
                reason: "it does not open with the old master key under its binding".into(),
            })?;
        let file = KeyFile {
            master: Some(new_id),
            account: Some(account),
            wrapped: new.wrap(&key, &binding)?,
        };
        keyring.put_raw(&record, &file.encode())?;
        report.rewrapped += 1;
    }
    report.store_keys = rewrap_store_keys(tree, old, new)?;
    Ok(report)
}

/// The associated data a store key `m/<name>_key` is wrapped under: `keyledger/store/<name>-key`
/// (`m/chain_key` under `keyledger/store/chain-key`, and so on).
pub fn store_key_binding(row: &[u8]) -> Option<Vec<u8>> {
    let name = std::str::from_utf8(row.strip_prefix(keys::META)?).ok()?;
    name.ends_with("_key")
        .then(|| format!("keyledger/store/{}", name.replace('_', "-")).into_bytes())
}

/// Re-wraps every store key in one batch with the new `m/master_key_id`; answers how many. Store
/// keys the new key already opens (a previous run got this far) are left alone.
fn rewrap_store_keys(
    tree: &sled::Tree,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, StoreError> {
    let mut batch = sled::Batch::default();
    let mut count = 0;
    for item in tree.scan_prefix(keys::META) {
        let (row, wrapped) = item?;
        let Some(binding) = store_key_binding(&row) else {
            continue;
        };
        if new.unwrap_key(&wrapped, &binding).is_ok() {
            continue;
        }
        let key = old
            .unwrap_key(&wrapped, &binding)
            .map_err(|_| StoreError::Corrupt {
                what: format!("store key {}", String::from_utf8_lossy(&row)),
                reason: "it opens with neither the old nor the new master key".into(),
            })?;
        batch.insert(row, new.wrap(&key, &binding)?);
        count += 1;
    }
    batch.insert(keys::MASTER_KEY_ID, &new.id().0[..]);
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(count)
}

/// The record a key file belongs to: its name without a version suffix (`byok_X_v3` is a
/// version of `byok_X`).
pub fn owning_record(record: &str) -> &str {
    match record.rsplit_once("_v") {
        Some((base, version))
            if !base.is_empty()
                && !version.is_empty()
                && version.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => record,
    }
}

/// The account of every aggregate, by its id (`a/<kind>:<id>` whose state names an
/// `account_id`): where a key file that does not record its account finds it, whatever kind of
/// record it belongs to.
pub struct Owners(HashMap<String, String>);

#[derive(Deserialize)]
struct Row {
    state: Owned,
}

#[derive(Deserialize)]
struct Owned {
    account_id: Option<String>,
}

impl Owners {
    pub fn read(tree: &sled::Tree) -> Result<Self, StoreError> {
        let mut owners = HashMap::new();
        for item in tree.scan_prefix(keys::AGGREGATE) {
            let (key, value) = item?;
            let Some(id) = std::str::from_utf8(&key[keys::AGGREGATE.len()..])
                .ok()
                .and_then(|stream| stream.split_once(':'))
                .map(|(_, id)| id.to_owned())
            else {
                continue;
            };
            // Rows of aggregates that name no account own no key; rows that do not decode are
            // `verify`'s to report.
            if let Ok(Row {
                state: Owned {
                    account_id: Some(account),
                },
            }) = serde_json::from_slice::<Row>(&value)
            {
                owners.insert(id, account);
            }
        }
        Ok(Self(owners))
    }

    /// The account a key file's binding names: recorded in the file, else its record's.
    pub fn account(&self, record: &str, file: &KeyFile) -> Result<String, StoreError> {
        if let Some(account) = &file.account {
            return Ok(account.clone());
        }
        self.0
            .get(owning_record(record))
            .cloned()
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("data key keys/{record}"),
                reason: format!(
                    "no record {} names the account it belongs to",
                    owning_record(record)
                ),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_belong_to_their_record() {
        assert_eq!(owning_record("byok_01ABC"), "byok_01ABC");
        assert_eq!(owning_record("byok_01ABC_v2"), "byok_01ABC");
        assert_eq!(owning_record("byok_01ABC_v12"), "byok_01ABC");
        assert_eq!(owning_record("byok_01ABC_vx"), "byok_01ABC_vx");
        assert_eq!(owning_record("byok_01ABC_v"), "byok_01ABC_v");
        assert_eq!(owning_record("_v2"), "_v2");
    }

    #[test]
    fn store_keys_are_the_key_rows_of_meta() {
        assert_eq!(
            store_key_binding(b"m/chain_key").as_deref(),
            Some(&b"keyledger/store/chain-key"[..])
        );
        assert_eq!(
            store_key_binding(b"m/idempotency_key").as_deref(),
            Some(&b"keyledger/store/idempotency-key"[..])
        );
        assert_eq!(store_key_binding(b"m/admin_token"), None);
        assert_eq!(store_key_binding(b"m/schema"), None);
        assert_eq!(store_key_binding(b"a/chain_key"), None);
    }
}
