//! Opening a store: refusing a missing or empty one where a store must exist (`verify`,
//! `rebuild`), taking sled's lock (and telling a held lock from other failures), the log against
//! its recorded head, the store schema version and the store keys in `m/`, rebuilding
//! projections written in another format than this build's, the sweep of data keys left without
//! a live credential by a crash, and the modes of the files. Everything here runs once, before
//! the writer starts; a panic of sled on damaged files ends as [`StoreError::Engine`].

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::head::HeadFile;
use super::integrity::Integrity;
use super::keyring::Keyring;
use super::read::ReadOnly;
use super::webhooks::NewDeliveries;
use super::writer::{Pending, Writer};
use super::{Inner, Store, StoreError, files, idempotency, keys, projection, verify};
use crate::crypto::{DataKey, KeyedHasher, MASTER_KEY_ID_LEN, MasterKey, MasterKeyId};
use crate::domain::credential::{self, Credential};
use crate::domain::webhook::{Webhook, WebhookState};
use crate::es::{Aggregate, StreamId};

/// The on-disk store schema (the layout of `keys.rs`) this build reads and writes. Not to be
/// confused with an event's payload schema (`es::current_schema`).
pub const STORE_SCHEMA_VERSION: u32 = 1;

pub(super) const CHAIN_KEY_AD: &[u8] = b"keyledger/store/chain-key";
const TOKEN_KEY_AD: &[u8] = b"keyledger/store/token-key";

/// How durable an acknowledged append is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// sled flush and fdatasync of the store file before acknowledging: survives a process crash
    /// and power loss. The only mode `serve` exposes.
    Sync,
    /// Acknowledge without flushing: exists only to show that the crash test catches lost
    /// writes. Never use it for data you care about.
    UnsafeNoSync,
}

impl Store {
    /// Opens (or creates) the store in `dir`, checking its schema version and that `master`
    /// opens its keys, and starts the writer.
    pub fn open(
        dir: &Path,
        master: &MasterKey,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        verify::guarded(|| open(dir, master, durability, true))
    }

    /// Opens the store in `dir` as [`Store::open`] does, but refuses, creating nothing, when
    /// there is no store there or it is empty: what `verify` and `rebuild` need, which must not
    /// report on a store they just made.
    pub fn open_existing(
        dir: &Path,
        master: &MasterKey,
        durability: Durability,
    ) -> Result<Self, StoreError> {
        require_store(dir)?;
        verify::guarded(|| open(dir, master, durability, false))
    }
}

/// Opens an existing store that a plain sled handle (an import's writes, a test's rewrite) has
/// just closed: sled's own threads may hold the store's lock for a moment after, so `Locked` is
/// tried again for up to 5 s; any other answer is the store's.
pub(super) fn open_released(dir: &Path, master: &MasterKey) -> Result<Store, StoreError> {
    let mut tries = 0;
    loop {
        match Store::open_existing(dir, master, Durability::Sync) {
            Err(StoreError::Locked) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Refuses a `dir` that holds no store: missing, not a directory, or without sled's `db` file.
pub fn require_store(dir: &Path) -> Result<(), StoreError> {
    let none = |reason| {
        Err(StoreError::NoStore {
            dir: dir.to_owned(),
            reason,
        })
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => none("no such directory"),
        Err(e) => Err(e.into()),
        Ok(meta) if !meta.is_dir() => none("not a directory"),
        Ok(_) if !dir.join("db").is_file() => none("the directory holds no store (no db file)"),
        Ok(_) => Ok(()),
    }
}

fn open(
    dir: &Path,
    master: &MasterKey,
    durability: Durability,
    create: bool,
) -> Result<Store, StoreError> {
    if create {
        files::create_private_dir(dir)?;
    }
    let db = open_db(dir)?;
    let tree: sled::Tree = (*db).clone();
    // Before anything is written: a log that lost its tail must not be extended or swept.
    let head = HeadFile::new(dir);
    head.check(&tree)?;
    if !create && tree.get(keys::STORE_SCHEMA)?.is_none() && tree.is_empty() {
        return Err(StoreError::NoStore {
            dir: dir.to_owned(),
            reason: "its store is empty",
        });
    }
    let (chain_key, token_key) = init_or_check(&tree, master)?;
    let chain = KeyedHasher::new(&chain_key);
    settle_projection_format(&tree, &chain)?;
    let idempotency = idempotency::Idempotency::open(&tree, master)?;
    let (position, last_hash) = verify::tail(&tree)?;
    let sync_file = match durability {
        Durability::Sync => Some(OpenOptions::new().read(true).open(dir.join("db"))?),
        Durability::UnsafeNoSync => None,
    };
    // A store of an older build has no recorded head, and a crash may have left it one group
    // behind: record the log as it is now, so that a loss before the next write is caught too.
    if sync_file.is_some() && head.read()?.is_none_or(|(recorded, _)| recorded < position) {
        head.write(position, &last_hash)?;
    }
    let keyring = Arc::new(Keyring::open(dir, master.id())?);
    destroy_orphan_keys(&tree, &keyring)?;
    // sled made its files with the process umask; stores of older builds have open modes.
    files::restrict(dir)?;
    let (durable, positions) = tokio::sync::watch::channel(position);
    let pending = Arc::new(Pending::default());
    let new_deliveries = Arc::new(NewDeliveries::default());
    let writer = Writer {
        tree,
        db: db.clone(),
        chain: chain.clone(),
        // Without syncing, a recorded head could name a position the log then loses.
        head: sync_file.as_ref().map(|_| head),
        sync_file,
        position,
        last_hash,
        keyring: keyring.clone(),
        durable,
        pending: pending.clone(),
        new_deliveries: new_deliveries.clone(),
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    let handle = std::thread::Builder::new()
        .name("keyledger-writer".into())
        .spawn(move || writer.run(rx))?;
    Ok(Store {
        inner: Arc::new(Inner {
            db,
            tokens: KeyedHasher::new(&token_key),
            chain,
            idempotency,
            keyring,
            master: master.clone(),
            integrity: Integrity::default(),
            jobs: Mutex::new(Some(tx)),
            pending,
            positions,
            new_deliveries,
            applied: std::sync::OnceLock::new(),
            writer: Mutex::new(Some(handle)),
        }),
    })
}

/// Opens sled, answering [`StoreError::Locked`] when another handle holds the store's lock.
///
/// sled reports a held lock only as an i/o error of kind `Other` whose text says so. Rather than
/// reading that text, the lock is probed the way sled takes it (an exclusive advisory lock on the
/// `db` file): before opening, so a store being released by its last holder is not mistaken for
/// a failure, and again after a failed open, in case another process took it meanwhile.
fn open_db(dir: &Path) -> Result<sled::Db, StoreError> {
    let db_file = dir.join("db");
    if lock_is_held(&db_file)? {
        return Err(StoreError::Locked);
    }
    match sled::Config::new().path(dir).open() {
        Ok(db) => Ok(db),
        Err(sled::Error::Io(io)) if lock_is_held(&db_file)? => {
            tracing::debug!(error = %io, "sled could not take the store's lock");
            Err(StoreError::Locked)
        }
        Err(other) => Err(other.into()),
    }
}

/// Whether someone holds the exclusive lock sled takes on its `db` file. A store without that
/// file yet is not locked.
fn lock_is_held(db_file: &Path) -> Result<bool, StoreError> {
    use fs2::FileExt;
    let file = match File::open(db_file) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    match file.try_lock_exclusive() {
        // Dropping the file releases the probe's own lock at once.
        Ok(()) => Ok(false),
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// A new store gets its schema version and two random store keys, wrapped by the master key: the
/// chain key (hash chain) and the token key (API token hashes). Wrapping rather than deriving lets
/// a re-key re-wrap them without rewriting the log or invalidating tokens.
fn init_or_check(tree: &sled::Tree, master: &MasterKey) -> Result<(DataKey, DataKey), StoreError> {
    match tree.get(keys::STORE_SCHEMA)? {
        None => {
            if !tree.is_empty() {
                return Err(StoreError::Corrupt {
                    what: "store metadata".into(),
                    reason: "the schema version is missing but the store holds data".into(),
                });
            }
            let chain = DataKey::generate();
            let token = DataKey::generate();
            let mut batch = sled::Batch::default();
            batch.insert(keys::STORE_SCHEMA, &STORE_SCHEMA_VERSION.to_be_bytes()[..]);
            batch.insert(
                keys::PROJECTION_FORMAT,
                &projection::FORMAT_VERSION.to_be_bytes()[..],
            );
            batch.insert(keys::CHAIN_KEY, master.wrap(&chain, CHAIN_KEY_AD)?);
            batch.insert(keys::TOKEN_KEY, master.wrap(&token, TOKEN_KEY_AD)?);
            tree.apply_batch(batch)?;
            tree.flush()?;
            Ok((chain, token))
        }
        Some(raw) => {
            let found = <[u8; 4]>::try_from(raw.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "schema version".into(),
                    reason: "not a 4-byte integer".into(),
                })?;
            if found != STORE_SCHEMA_VERSION {
                return Err(StoreError::UnsupportedSchema {
                    found,
                    supported: STORE_SCHEMA_VERSION,
                });
            }
            let unwrap = |key: &[u8], ad: &[u8]| -> Result<DataKey, StoreError> {
                let wrapped = tree.get(key)?.ok_or_else(|| StoreError::Corrupt {
                    what: "store metadata".into(),
                    reason: format!("{} is missing", String::from_utf8_lossy(key)),
                })?;
                master
                    .unwrap_key(&wrapped, ad)
                    .map_err(|_| wrong_master_key(tree, master))
            };
            Ok((
                unwrap(keys::CHAIN_KEY, CHAIN_KEY_AD)?,
                unwrap(keys::TOKEN_KEY, TOKEN_KEY_AD)?,
            ))
        }
    }
}

/// The refusal of a master key that does not open the store: naming the key the store records
/// (`m/master_key_id`, written by new stores and by `keyledger rekey`) when it records another.
pub(super) fn wrong_master_key(tree: &sled::Tree, master: &MasterKey) -> StoreError {
    let recorded = tree
        .get(keys::MASTER_KEY_ID)
        .ok()
        .flatten()
        .and_then(|raw| <[u8; MASTER_KEY_ID_LEN]>::try_from(raw.as_ref()).ok())
        .map(MasterKeyId);
    match recorded {
        Some(store) if store != master.id() => StoreError::OtherMasterKey {
            store: store.to_string(),
            given: master.id().to_string(),
        },
        _ => StoreError::WrongMasterKey,
    }
}

/// Rebuilds the projections from the log when they were written in another format than this
/// build's: older (or a store from before formats were recorded, which has no row), or newer (a
/// later build's rows, which this one may not read). The log is the only source of truth, so
/// this loses nothing; it runs before anything reads a projection, and a broken chain stops the
/// open rather than serving rows that no checked replay produced.
fn settle_projection_format(tree: &sled::Tree, chain: &KeyedHasher) -> Result<(), StoreError> {
    let found = tree
        .get(keys::PROJECTION_FORMAT)?
        .map(|raw| {
            <[u8; 4]>::try_from(raw.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "projection format (m/projections)".into(),
                    reason: "not a 4-byte integer".into(),
                })
        })
        .transpose()?;
    if found == Some(projection::FORMAT_VERSION) {
        return Ok(());
    }
    let events = verify::rebuild_projections(tree, chain)?;
    tracing::info!(
        found = found.map_or_else(|| "none".to_owned(), |v| v.to_string()),
        format = projection::FORMAT_VERSION,
        events,
        "rebuilt the projections from the log, as their format differed from this build's"
    );
    Ok(())
}

/// Destroys keys left without a live credential by a crash between a key's file and its event
/// (a key file never renamed into place, a registration that never became durable, or a
/// revocation or retirement whose key outlived it).
fn destroy_orphan_keys(tree: &sled::Tree, keyring: &Keyring) -> Result<(), StoreError> {
    keyring.destroy_unfinished()?;
    for record in keyring.records()? {
        // A webhook's signing key lives while the endpoint does (docs/adr/0029); a credential's
        // record is `<byok_id>` (secret version 1) or `<byok_id>_v<N>`: live while that version
        // is the credential's current, previous or staged one. A row that does not decode is
        // damage for the check on start (and `verify`) to report by name; it is no reason to
        // destroy a key, nor to refuse to open.
        let kept = |error: StoreError| {
            if error.is_damage() {
                tracing::warn!(%error, record, "kept a data key whose record does not read");
                Ok(true)
            } else {
                Err(error)
            }
        };
        let live = if record.starts_with("wh_") {
            let stream = StreamId::new(Webhook::KIND, &record);
            match projection::load::<Webhook>(&ReadOnly(tree), stream.as_str()) {
                Ok(stored) => {
                    stored.is_some_and(|stored| stored.state.state != WebhookState::Deleted)
                }
                Err(error) => kept(error)?,
            }
        } else {
            match credential::key_record_owner(&record) {
                Some((byok_id, version)) => {
                    let stream = StreamId::new(Credential::KIND, byok_id.as_str());
                    match projection::load::<Credential>(&ReadOnly(tree), stream.as_str()) {
                        Ok(stored) => stored.is_some_and(|stored| {
                            stored.state.live_secret_versions().contains(&version)
                        }),
                        Err(error) => kept(error)?,
                    }
                }
                None => false,
            }
        };
        if !live {
            keyring.destroy(&record)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::es::{Envelope, EventMeta, ExpectedVersion, NewEvent};
    use crate::storage::AppendRequest;

    /// Recorded credential events, appended again into a new store.
    const RECORDED: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/events/byok-schema-1.ndjson"
    ));

    /// The `a/` row of that credential after its first two events (registered, updated), as
    /// the build before projection formats wrote it: format 1.
    const FORMAT_1_ROW: &str = r#"{"version":2,"state":{"byok_id":"byok_01M8417NX9R4XXJMXCTVHRHG8Z","account_id":"acct_01M8417NK2K1W3DW1QVNJ69AEX","provider":"azure","alias":"prod-eu","label":null,"state":"active","version":1,"secret_hint":"1234","sealed_secret":"AVx0c3RhbmQtaW4gY2lwaGVydGV4dCwgbm90IGEgcmVhbCBzZWFsZWQgc2VjcmV0","settings":{"api_version":"2024-10-21","deployments":"gpt-4o,gpt-4o-mini","endpoint":"https://example-eu.openai.azure.com"},"residency":"eu-west","declared_region":"eu-west","base_url":null,"models":["gpt-4o"],"blacklisted_models":[],"weight":250,"bindings":[{"capability":"chat"}],"created_at":"2026-11-23T11:04:07.849696357Z","updated_at":"2026-11-23T11:04:08.104563792Z"}}"#;

    fn stream() -> StreamId {
        StreamId::new(Credential::KIND, "byok_01M8417NX9R4XXJMXCTVHRHG8Z")
    }

    /// A closed store holding the first two recorded events.
    async fn recorded_store(dir: &Path, master: &MasterKey) {
        let store = Store::open(dir, master, Durability::Sync).unwrap();
        for line in RECORDED.lines().take(2) {
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
        assert_eq!(format_row(&store), Some(projection::FORMAT_VERSION));
        store.shutdown();
    }

    /// Rewrites the closed store's credential row in format 1 and its format row as given.
    fn downgrade(dir: &Path, format: Option<&[u8]>) {
        // The closed store's last holder (sled's own flusher) may still be letting go of the
        // files' lock on a busy machine.
        let mut tries = 0;
        let db = loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => break db,
                Err(error) if tries < 100 => {
                    tries += 1;
                    eprintln!("the closed store does not open yet: {error}");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(error) => panic!("the closed store does not open: {error}"),
            }
        };
        db.insert(keys::aggregate(stream().as_str()), FORMAT_1_ROW.as_bytes())
            .unwrap();
        match format {
            Some(raw) => db.insert(keys::PROJECTION_FORMAT, raw).map(drop).unwrap(),
            None => db.remove(keys::PROJECTION_FORMAT).map(drop).unwrap(),
        }
        db.flush().unwrap();
    }

    fn format_row(store: &Store) -> Option<u32> {
        let raw = store.inner.db.get(keys::PROJECTION_FORMAT).unwrap()?;
        Some(u32::from_be_bytes(raw.as_ref().try_into().unwrap()))
    }

    #[tokio::test]
    async fn projections_of_an_older_format_are_rebuilt_on_open() {
        let one = 1u32.to_be_bytes();
        for format in [None, Some(&one[..])] {
            let dir = tempfile::tempdir().unwrap();
            let master = MasterKey::generate();
            recorded_store(dir.path(), &master).await;
            downgrade(dir.path(), format);

            let store = open_released(dir.path(), &master).unwrap();
            assert_eq!(format_row(&store), Some(projection::FORMAT_VERSION));
            let stored = store.load::<Credential>(&stream()).unwrap().unwrap();
            assert_eq!(stored.stream_version, 2);
            assert_eq!(stored.state.secret_version, 1);
            assert_eq!(stored.state.profile.weight, 250);
            let report = store.verify().unwrap();
            assert!(report.mismatches.is_empty(), "{format:?}: {report:?}");
            assert_eq!(report.events, 2);
            // The recorded events were appended without their data key: verify says so.
            assert_eq!(report.data_keys, 1);
            assert_eq!(report.key_problems.len(), 1, "{report:?}");
        }
    }

    #[tokio::test]
    async fn the_recorded_format_decides_whether_projections_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        recorded_store(dir.path(), &master).await;
        // Rows of format 1 under a row that claims this build's format stay as they are, and
        // are what verify would then report: the rebuild above is the format row's doing.
        downgrade(
            dir.path(),
            Some(&projection::FORMAT_VERSION.to_be_bytes()[..]),
        );
        let store = open_released(dir.path(), &master).unwrap();
        assert!(store.load::<Credential>(&stream()).is_err());
        let report = store.verify().unwrap();
        assert_eq!(
            report.mismatches,
            [format!("differs a/{}", stream())],
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn a_format_row_that_does_not_decode_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        recorded_store(dir.path(), &master).await;
        downgrade(dir.path(), Some(b"two"));
        let opened = open_released(dir.path(), &master);
        assert!(
            matches!(opened, Err(StoreError::Corrupt { .. })),
            "{:?}",
            opened.err()
        );
    }
}
