//! The key store: one small file per record under `<data dir>/keys/`, holding that record's data
//! key wrapped by the master key.
//!
//! It lives outside sled on purpose. sled is log-structured: a removed value stays in its segment
//! files until they happen to be rewritten, so a data key deleted from sled could still be read
//! out of a copy of the data dir taken after the revocation. A file of its own is overwritten with
//! zeros, synced and unlinked, and is gone from every later copy of the directory.
//!
//! Ordering against the log (both run on the writer thread): a key is written before the batch
//! holding the event that needs it, and destroyed after the batch holding the event that ends it
//! is durable. A crash in between leaves a key without a live record, never a record without its
//! key; `Store::open` destroys such leftovers.
//!
//! A key file names the master key that wrapped it and, where it is known, the account its
//! binding (`crypto::data_key_binding`) names: `MAGIC ‖ master key id (16) ‖ account id length
//! (1) ‖ account id ‖ wrapped key`. A rekey (`rekey.rs`) that stopped half-way so knows which
//! files are done. Files of older builds hold the wrapped key alone and are read as before; a
//! wrapped key begins with its seal format byte (1), never with the magic.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::files;
use crate::crypto::{MASTER_KEY_ID_LEN, MasterKeyId};

/// The first bytes of a key file that names its master key.
const MAGIC: &[u8; 16] = b"keyledger-key/2\n";

pub struct Keyring {
    dir: PathBuf,
    /// The master key the store was opened with: what every key written here is wrapped by.
    master: MasterKeyId,
}

/// One key file, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    /// The master key that wrapped it; `None` in a file of an older build.
    pub master: Option<MasterKeyId>,
    /// The account its binding names, when the file records it.
    pub account: Option<String>,
    /// The data key, wrapped by the master key under its binding.
    pub wrapped: Vec<u8>,
}

impl KeyFile {
    pub fn encode(&self) -> Vec<u8> {
        let Some(master) = self.master else {
            return self.wrapped.clone();
        };
        // Account ids are far shorter than 255 bytes; one that is not is left unrecorded
        // (a rekey then looks the record up).
        let account = self
            .account
            .as_deref()
            .and_then(|a| u8::try_from(a.len()).ok().map(|len| (a, len)));
        let (account, len) = account.unwrap_or(("", 0));
        let mut out = Vec::with_capacity(
            MAGIC.len() + MASTER_KEY_ID_LEN + 1 + account.len() + self.wrapped.len(),
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&master.0);
        out.push(len);
        out.extend_from_slice(account.as_bytes());
        out.extend_from_slice(&self.wrapped);
        out
    }

    /// Reads either format; a file that starts like the new one but does not read as one is
    /// corruption, answered as an error rather than taken for an old file.
    pub fn decode(bytes: &[u8]) -> std::io::Result<Self> {
        let Some(rest) = bytes.strip_prefix(&MAGIC[..]) else {
            return Ok(Self {
                master: None,
                account: None,
                wrapped: bytes.to_vec(),
            });
        };
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a key file that does not read",
            )
        };
        if rest.len() < MASTER_KEY_ID_LEN + 1 {
            return Err(bad());
        }
        let (id, rest) = rest.split_at(MASTER_KEY_ID_LEN);
        let mut master = [0u8; MASTER_KEY_ID_LEN];
        master.copy_from_slice(id);
        let (len, rest) = rest.split_first().ok_or_else(bad)?;
        let len = usize::from(*len);
        if rest.len() < len {
            return Err(bad());
        }
        let (account, wrapped) = rest.split_at(len);
        let account = std::str::from_utf8(account).map_err(|_| bad())?;
        Ok(Self {
            master: Some(MasterKeyId(master)),
            account: (!account.is_empty()).then(|| account.to_owned()),
            wrapped: wrapped.to_vec(),
        })
    }
}

fn invalid_record(record: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{record:?} is not a record id"),
    )
}

impl Keyring {
    /// The key files of the store in `data_dir`; keys written from now on are marked as
    /// wrapped by `master`.
    pub fn open(data_dir: &Path, master: MasterKeyId) -> std::io::Result<Self> {
        let dir = data_dir.join("keys");
        files::create_private_dir(&dir)?;
        Ok(Self { dir, master })
    }

    /// The file of a record; ids are `[A-Za-z0-9_]`, so no path can escape the directory.
    fn path(&self, record: &str) -> std::io::Result<PathBuf> {
        let plain = !record.is_empty()
            && record.len() <= 64
            && record
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if plain {
            Ok(self.dir.join(record))
        } else {
            Err(invalid_record(record))
        }
    }

    fn sync_dir(&self) -> std::io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// Writes a record's wrapped key durably, marked as wrapped by the store's master key.
    pub fn put(&self, record: &str, wrapped: &[u8]) -> std::io::Result<()> {
        let file = KeyFile {
            master: Some(self.master),
            account: None,
            wrapped: wrapped.to_vec(),
        };
        self.put_raw(record, &file.encode())
    }

    /// Writes a key file's bytes durably (temporary file, fsync, rename, fsync of the dir).
    pub fn put_raw(&self, record: &str, wrapped: &[u8]) -> std::io::Result<()> {
        let path = self.path(record)?;
        let temporary = self.dir.join(format!(".{record}.new"));
        let mut file =
            files::private_file(OpenOptions::new().write(true).create(true).truncate(true))
                .open(&temporary)?;
        file.write_all(wrapped)?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        self.sync_dir()
    }

    /// A record's wrapped key, whichever format its file is in.
    pub fn get(&self, record: &str) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.get_file(record)?.map(|file| file.wrapped))
    }

    /// A record's key file, read.
    pub fn get_file(&self, record: &str) -> std::io::Result<Option<KeyFile>> {
        self.get_raw(record)?
            .map(|bytes| KeyFile::decode(&bytes))
            .transpose()
    }

    /// A record's key file as stored.
    pub fn get_raw(&self, record: &str) -> std::io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(record)?) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Destroys a record's key: zeros over its bytes, synced, then the file unlinked. Destroying
    /// a key that is already gone is not an error.
    pub fn destroy(&self, record: &str) -> std::io::Result<()> {
        let path = self.path(record)?;
        self.shred(&path, record)
    }

    /// Zeros, syncs and unlinks one key file; a file already gone is not an error.
    fn shred(&self, path: &Path, record: &str) -> std::io::Result<()> {
        let len = match fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        // A length that does not fit in memory must not shrink to "overwrite nothing".
        let len = usize::try_from(len).map_err(|_| {
            std::io::Error::other(format!(
                "the key file of {record} is too large to overwrite"
            ))
        })?;
        let mut file = OpenOptions::new().write(true).open(path)?;
        file.write_all(&vec![0u8; len])?;
        file.sync_all()?;
        fs::remove_file(path)?;
        self.sync_dir()
    }

    /// Destroys the temporary files of keys whose `put` never finished: a crash before the
    /// rename leaves a wrapped key that no event needs (the batch is written after the key), so
    /// it must not outlive the crash either.
    pub fn destroy_unfinished(&self) -> std::io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(record) = name
                .to_str()
                .and_then(|n| n.strip_prefix('.'))
                .and_then(|n| n.strip_suffix(".new"))
            {
                self.shred(&self.dir.join(&name), record)?;
            }
        }
        Ok(())
    }

    /// Every record that has a key, in name order.
    pub fn records(&self) -> std::io::Result<Vec<String>> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(name) = name.to_str()
                && !name.starts_with('.')
            {
                records.push(name.to_owned());
            }
        }
        records.sort_unstable();
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    #[test]
    fn key_files_of_both_formats_read() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate().id();
        let ring = Keyring::open(dir.path(), master).unwrap();
        // A wrapped key as `seal` makes it: its format byte first.
        let wrapped = [&[1u8][..], &[7u8; 48]].concat();
        ring.put("byok_new", &wrapped).unwrap();
        let file = ring.get_file("byok_new").unwrap().unwrap();
        assert_eq!(file.master, Some(master));
        assert_eq!(file.account, None);
        assert_eq!(ring.get("byok_new").unwrap().unwrap(), wrapped);
        // A file of an older build: the wrapped key alone.
        ring.put_raw("byok_old", &wrapped).unwrap();
        let old = ring.get_file("byok_old").unwrap().unwrap();
        assert_eq!(old.master, None);
        assert_eq!(old.wrapped, wrapped);
        let named = KeyFile {
            master: Some(master),
            account: Some("acct_1".into()),
            wrapped: wrapped.clone(),
        };
        assert_eq!(KeyFile::decode(&named.encode()).unwrap(), named);
        // Cut inside its header: corruption, not an old file.
        assert!(KeyFile::decode(&named.encode()[..20]).is_err());
    }

    #[test]
    fn put_get_destroy() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::open(dir.path(), MasterKey::generate().id()).unwrap();
        ring.put("byok_1", b"wrapped").unwrap();
        assert_eq!(
            ring.get("byok_1").unwrap().as_deref(),
            Some(&b"wrapped"[..])
        );
        assert_eq!(ring.records().unwrap(), ["byok_1"]);
        ring.destroy("byok_1").unwrap();
        ring.destroy("byok_1").unwrap();
        assert_eq!(ring.get("byok_1").unwrap(), None);
        assert!(ring.records().unwrap().is_empty());
    }

    #[test]
    fn an_unfinished_put_is_destroyed_and_finished_keys_stay() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::open(dir.path(), MasterKey::generate().id()).unwrap();
        ring.put("byok_1", b"kept").unwrap();
        // What a crash between writing the temporary file and renaming it leaves behind.
        let unfinished = dir.path().join("keys").join(".byok_2.new");
        std::fs::write(
            &unfinished,
            b"wrapped key of a registration that never happened",
        )
        .unwrap();
        ring.destroy_unfinished().unwrap();
        assert!(!unfinished.exists());
        assert_eq!(ring.records().unwrap(), ["byok_1"]);
        assert_eq!(ring.get("byok_1").unwrap().as_deref(), Some(&b"kept"[..]));
    }

    #[test]
    fn refuses_paths() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::open(dir.path(), MasterKey::generate().id()).unwrap();
        for bad in ["../x", "a/b", "", ".hidden", "a.b"] {
            assert!(ring.put(bad, b"k").is_err(), "{bad}");
        }
    }
}
