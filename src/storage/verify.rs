//! Reading the log back: the keyed hash chain, the tail the writer resumes from, and the two
//! commands built on a replay (`replay.rs`): `verify` compares the live projections with the
//! replayed rows and checks every live credential's data key, and every other key file, against
//! the master key; `rebuild`
//! writes where the two differ. Both run on the writer thread between groups, so nothing is
//! appended while they look.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use super::keyring::{KeyFile, Keyring};
use super::projection::FORMAT_VERSION;
use super::rekey::Owners;
use super::replay::{PROGRESS_EVERY, Replay};
use super::rows::{self, Differences, ReplayRows};
use super::{Store, StoreError, keys};
use crate::crypto::{KeyedHasher, MasterKey, data_key_binding};
use crate::domain::credential::{Credential, key_record};
use crate::domain::webhook::{Webhook, WebhookState};
use crate::es::{Aggregate, Envelope};

impl Store {
    /// Checks the hash chain, that the live projections equal a replay of the log, and that
    /// every live credential's data key is there and opens with the master key.
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let chain = self.inner.chain.clone();
        let keys = self.inner.keyring.clone();
        let master = self.inner.master.clone();
        self.exclusive(move |tree| report(tree, &chain, Replay::default(), &keys, &master))?
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

/// Finishes `replay` (to the end of the log), compares it with the live projections and checks
/// the data keys of the credentials it says are live.
pub fn report(
    tree: &sled::Tree,
    chain: &KeyedHasher,
    mut replay: Replay,
    keyring: &Keyring,
    master: &MasterKey,
) -> Result<VerifyReport, StoreError> {
    let mut found = Listed {
        now: chrono::Utc::now().timestamp(),
        ..Listed::default()
    };
    let projection_rows = replay_and_compare(tree, chain, &mut replay, &mut found)?;
    let started = Instant::now();
    let (checked, problems) = check_data_keys(tree, &replay.rows, keyring, master)?;
    if started.elapsed() >= PROGRESS_EVERY {
        tracing::info!(
            live_credentials = checked,
            seconds = started.elapsed().as_secs_f64(),
            "checked the data keys"
        );
    }
    Ok(VerifyReport {
        events: replay.events,
        projection_rows: usize::try_from(projection_rows).unwrap_or(usize::MAX),
        mismatches: found.into_lines(),
        data_keys: checked,
        key_problems: problems,
    })
}

/// Finishes `replay` while the live `s/` and `e/` rows are read on a thread of their own, then
/// compares; answers how many rows the replay holds. A replay that fails is reported before
/// anything the read of the live rows met.
fn replay_and_compare(
    tree: &sled::Tree,
    chain: &KeyedHasher,
    replay: &mut Replay,
    differences: &mut dyn Differences,
) -> Result<u64, StoreError> {
    let started = Instant::now();
    let live = std::thread::scope(|scope| {
        let live = std::thread::Builder::new()
            .name("keyledger-live-rows".into())
            .spawn_scoped(scope, || rows::live_numbered(tree))?;
        let replayed = replay.extend(tree, chain, None);
        let live = live.join();
        replayed?;
        live.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    })?;
    let replayed = started.elapsed();
    let rows = rows::compare(&replay.rows, &live, tree, differences)?;
    if started.elapsed() >= PROGRESS_EVERY {
        tracing::info!(
            events = replay.events,
            rows,
            replay_seconds = replayed.as_secs_f64(),
            compare_seconds = (started.elapsed() - replayed).as_secs_f64(),
            "replayed the log and compared the projections"
        );
    }
    Ok(rows)
}

/// The differences `verify` reports, printable: every row missing from the live store or
/// different there, then every extra live row, each in key order. A replayed row the usage sweep
/// may have deleted by `now` (unix seconds) is not missing (`usage.rs`).
#[derive(Default)]
struct Listed {
    now: i64,
    missing_or_different: Vec<(Vec<u8>, String)>,
    extra: Vec<(Vec<u8>, String)>,
}

impl Listed {
    fn into_lines(self) -> Vec<String> {
        let Self {
            mut missing_or_different,
            mut extra,
            ..
        } = self;
        missing_or_different.sort_unstable();
        extra.sort_unstable();
        missing_or_different
            .into_iter()
            .chain(extra)
            .map(|(_, line)| line)
            .collect()
    }
}

fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(key).escape_debug().to_string()
}

impl Differences for Listed {
    fn missing(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        if super::usage::sweepable(key, value, self.now) {
            return Ok(());
        }
        let line = format!("missing {}", show(key));
        self.missing_or_different.push((key.to_vec(), line));
        Ok(())
    }

    fn differs(&mut self, key: &[u8], _: &[u8]) -> Result<(), StoreError> {
        let line = format!("differs {}", show(key));
        self.missing_or_different.push((key.to_vec(), line));
        Ok(())
    }

    fn extra(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.extra
            .push((key.to_vec(), format!("extra {}", show(key))));
        Ok(())
    }
}

/// Every credential that is not revoked needs the data key of its current secret version
/// (record `<byok_id>` for version 1, `<byok_id>_v<N>` after): present under `keys/`, and opening
/// with the master key under its binding. Then every other key file (other versions, other kinds
/// of record) must read, be wrapped by this store's master key when it names one, and open under
/// its binding, the account taken from the file or from its record's row. Answers how many live
/// credentials were checked and what is wrong, each problem naming its key file.
fn check_data_keys(
    tree: &sled::Tree,
    rows: &ReplayRows,
    keyring: &Keyring,
    master: &MasterKey,
) -> Result<(usize, Vec<String>), StoreError> {
    let mut checked = 0;
    let mut problems = Vec::new();
    let mut current = HashSet::new();
    rows.for_each_aggregate::<Credential>(Credential::KIND, |stored| {
        let credential = &stored.state;
        if credential.is_revoked() {
            return;
        }
        checked += 1;
        let id = credential.byok_id.as_str();
        // Every live secret version has its key: the current one, a previous one kept for
        // rollback, a staged one.
        for version in credential.live_secret_versions() {
            let record = key_record(&credential.byok_id, version);
            let binding = data_key_binding(credential.account_id.as_str(), &record);
            match keyring.get_file(&record) {
                Ok(None) => problems.push(format!(
                    "live credential {id} has no data key for secret version {version}: keys/{record} is missing"
                )),
                Ok(Some(file)) => {
                    if let Some(problem) = other_master(&record, &file, master) {
                        problems.push(problem);
                    } else if master.unwrap_key(&file.wrapped, &binding).is_err() {
                        problems.push(format!(
                            "the data key of live credential {id} (keys/{record}) does not open with the master key"
                        ));
                    }
                }
                Err(error) => problems.push(format!(
                    "the data key of live credential {id} (keys/{record}) cannot be read: {error}"
                )),
            }
            current.insert(record);
        }
    })?;
    // A webhook endpoint that is not deleted needs its signing key too (docs/adr/0029).
    rows.for_each_aggregate::<Webhook>(Webhook::KIND, |stored| {
        let hook = &stored.state;
        if hook.state == WebhookState::Deleted {
            return;
        }
        checked += 1;
        let id = hook.webhook_id.as_str();
        let binding = data_key_binding(hook.account_id.as_str(), id);
        let opens = keyring
            .get(id)
            .map(|w| w.is_some_and(|w| master.unwrap_key(&w, &binding).is_ok()));
        if !matches!(opens, Ok(true)) {
            problems.push(format!(
                "the signing key of webhook {id} (keys/{id}) is missing or does not open"
            ));
        }
        current.insert(id.to_owned());
    })?;
    let owners = Owners::read(tree)?;
    for record in keyring.records()? {
        if current.contains(&record) {
            continue;
        }
        let file = match keyring.get_file(&record) {
            Ok(Some(file)) => file,
            Ok(None) => continue,
            Err(error) => {
                problems.push(format!("keys/{record} cannot be read: {error}"));
                continue;
            }
        };
        if let Some(problem) = other_master(&record, &file, master) {
            problems.push(problem);
            continue;
        }
        match owners.account(&record, &file) {
            Err(error) => problems.push(error.to_string()),
            Ok(account) => {
                let binding = data_key_binding(&account, &record);
                if master.unwrap_key(&file.wrapped, &binding).is_err() {
                    problems.push(format!(
                        "the data key keys/{record} does not open with the master key"
                    ));
                }
            }
        }
    }
    Ok((checked, problems))
}

/// A key file that names another master key than the store's: what a rekey that stopped
/// part-way leaves.
fn other_master(record: &str, file: &KeyFile, master: &MasterKey) -> Option<String> {
    let store = master.id();
    let other = file.master.filter(|m| *m != store)?;
    Some(format!(
        "keys/{record} is wrapped by master key {other}, the store by {store}: run `keyledger rekey` again to finish"
    ))
}

/// Replays the log with the chain check (a broken chain changes nothing), then makes the live
/// projection rows equal the replayed ones (writing each row that is missing or differs,
/// removing each extra one), records this build's projection format, and flushes. Answers how
/// many events were replayed.
///
/// Up to [`REBUILD_BATCH`] changes are one atomic batch with the format row, as a rebuild of a
/// sound store or of a few damaged rows is. More are written in batches of that size as the
/// comparison goes, so memory stays bounded: the first batch removes the format row and the last
/// writes it, so a rebuild cut short leaves a store whose projections are rebuilt on its next
/// open (docs/adr/0013).
pub fn rebuild_projections(tree: &sled::Tree, chain: &KeyedHasher) -> Result<u64, StoreError> {
    rebuild_in_batches(tree, chain, REBUILD_BATCH)
}

fn rebuild_in_batches(
    tree: &sled::Tree,
    chain: &KeyedHasher,
    batch: usize,
) -> Result<u64, StoreError> {
    let mut replay = Replay::default();
    let mut writes = Rewrite {
        tree,
        batch: sled::Batch::default(),
        pending: 0,
        limit: batch,
        split: false,
    };
    replay_and_compare(tree, chain, &mut replay, &mut writes)?;
    let Rewrite { mut batch, .. } = writes;
    batch.insert(keys::PROJECTION_FORMAT, &FORMAT_VERSION.to_be_bytes()[..]);
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(replay.events)
}

/// Changes of one rebuild batch at most.
pub const REBUILD_BATCH: usize = 100_000;

/// The differences a rebuild writes, batch by batch.
struct Rewrite<'a> {
    tree: &'a sled::Tree,
    batch: sled::Batch,
    pending: usize,
    /// Changes per batch.
    limit: usize,
    /// Whether a batch was written already (the first one removed the format row).
    split: bool,
}

impl Rewrite<'_> {
    /// Counts one change; writes the batch when it is full. `compare` only ever changes rows at
    /// or before the live row it has reached, so its scan never meets a row written here.
    fn counted(&mut self) -> Result<(), StoreError> {
        self.pending += 1;
        if self.pending < self.limit {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        if !self.split {
            batch.remove(keys::PROJECTION_FORMAT);
            self.split = true;
        }
        self.tree.apply_batch(batch)?;
        self.pending = 0;
        Ok(())
    }
}

impl Differences for Rewrite<'_> {
    fn missing(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.batch.insert(key, value);
        self.counted()
    }

    fn differs(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.batch.insert(key, value);
        self.counted()
    }

    fn extra(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.batch.remove(key);
        self.counted()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::es::{EventMeta, ExpectedVersion, NewEvent};
    use crate::storage::{AppendRequest, Durability};

    /// The live projection rows.
    fn projections(store: &Store) -> Vec<(sled::IVec, sled::IVec)> {
        keys::PROJECTIONS
            .iter()
            .flat_map(|prefix| store.inner.db.scan_prefix(prefix))
            .map(Result::unwrap)
            .collect()
    }

    /// A rebuild that writes its changes in many batches ends with the rows one batch writes,
    /// and the format recorded.
    #[tokio::test]
    async fn a_rebuild_in_many_batches_ends_where_one_batch_does() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &MasterKey::generate(), Durability::Sync).unwrap();
        for file in ["account-schema-1.ndjson", "byok-schema-1.ndjson"] {
            let path = format!("{}/fixtures/events/{file}", env!("CARGO_MANIFEST_DIR"));
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let envelope: Envelope = serde_json::from_str(line).unwrap();
                let request = AppendRequest {
                    stream: envelope.stream_id(),
                    expected: ExpectedVersion::Any,
                    events: vec![NewEvent {
                        event_type: envelope.event_type,
                        schema: envelope.schema,
                        data: envelope.data,
                    }],
                    meta: EventMeta::default(),
                    data_key: None,
                    also: Vec::new(),
                    idempotency: None,
                };
                store.append(request).await.unwrap();
            }
        }
        let sound = projections(&store);
        assert!(sound.len() > 20);
        // Every row lost, some altered and some extra: more changes than three batches hold.
        for (key, _) in &sound {
            store.inner.db.remove(key).unwrap();
        }
        for (i, (key, _)) in sound.iter().enumerate().step_by(3) {
            store
                .inner
                .db
                .insert(key, format!("garbled {i}").as_bytes())
                .unwrap();
        }
        store
            .inner
            .db
            .insert(b"e/acct_extra\0\0\0\0\0\0\0\0\x01", &b""[..])
            .unwrap();
        store
            .inner
            .db
            .insert(b"i/email/extra@example.com", &b"acct_x"[..])
            .unwrap();
        store
            .inner
            .db
            .insert(keys::PROJECTION_FORMAT, &[0u8; 4][..])
            .unwrap();
        let chain = store.inner.chain.clone();
        let replayed = store
            .exclusive(move |tree| rebuild_in_batches(tree, &chain, 3))
            .unwrap()
            .unwrap();
        assert_eq!(replayed, 9);
        assert_eq!(projections(&store), sound);
        let format = store
            .inner
            .db
            .get(keys::PROJECTION_FORMAT)
            .unwrap()
            .unwrap();
        assert_eq!(format.as_ref(), &FORMAT_VERSION.to_be_bytes()[..]);
        let report = store.verify().unwrap();
        assert!(report.mismatches.is_empty(), "{:?}", report.mismatches);
        store.shutdown();
    }

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
