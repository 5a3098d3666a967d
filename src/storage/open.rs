//! Opening a store: taking sled's lock (and telling a held lock from other failures), the store
//! schema version and the store keys in `m/`, and the sweep of data keys left without a live
//! credential by a crash. Everything here runs once, before the writer starts.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::keyring::Keyring;
use super::read::ReadOnly;
use super::writer::Writer;
use super::{Inner, Store, StoreError, idempotency, keys, projection, verify};
use crate::crypto::{DataKey, KeyedHasher, MasterKey};
use crate::domain::credential::Credential;
use crate::es::{Aggregate, StreamId};

/// The on-disk store schema (the layout of `keys.rs`) this build reads and writes. Not to be
/// confused with an event's payload schema (`es::CURRENT_SCHEMA`).
pub const STORE_SCHEMA_VERSION: u32 = 1;

const CHAIN_KEY_AD: &[u8] = b"keyledger/store/chain-key";
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
        std::fs::create_dir_all(dir)?;
        let db = open_db(dir)?;
        let tree: sled::Tree = (*db).clone();
        let (chain_key, token_key) = init_or_check(&tree, master)?;
        let chain = KeyedHasher::new(&chain_key);
        let idempotency = idempotency::Idempotency::open(&tree, master)?;
        let (position, last_hash) = verify::tail(&tree)?;
        let sync_file = match durability {
            Durability::Sync => Some(OpenOptions::new().read(true).open(dir.join("db"))?),
            Durability::UnsafeNoSync => None,
        };
        let keyring = Arc::new(Keyring::open(dir)?);
        destroy_orphan_keys(&tree, &keyring)?;
        let (durable, positions) = tokio::sync::watch::channel(position);
        let writer = Writer {
            tree,
            db: db.clone(),
            chain: chain.clone(),
            sync_file,
            position,
            last_hash,
            keyring: keyring.clone(),
            durable,
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = std::thread::Builder::new()
            .name("keyledger-writer".into())
            .spawn(move || writer.run(rx))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tokens: KeyedHasher::new(&token_key),
                chain,
                idempotency,
                keyring,
                jobs: Mutex::new(Some(tx)),
                positions,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }
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
        Err(other) => Err(StoreError::Sled(other)),
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
                    .map_err(|_| StoreError::WrongMasterKey)
            };
            Ok((
                unwrap(keys::CHAIN_KEY, CHAIN_KEY_AD)?,
                unwrap(keys::TOKEN_KEY, TOKEN_KEY_AD)?,
            ))
        }
    }
}

/// Destroys keys left without a live credential by a crash between a key's file and its event
/// (a key file never renamed into place, a registration that never became durable, or a
/// revocation whose key outlived it).
fn destroy_orphan_keys(tree: &sled::Tree, keyring: &Keyring) -> Result<(), StoreError> {
    keyring.destroy_unfinished()?;
    for record in keyring.records()? {
        let stream = StreamId::new(Credential::KIND, &record);
        let live = projection::load::<Credential>(&ReadOnly(tree), stream.as_str())?
            .is_some_and(|stored| !stored.state.is_revoked());
        if !live {
            keyring.destroy(&record)?;
        }
    }
    Ok(())
}
