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

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::files;

pub struct Keyring {
    dir: PathBuf,
}

fn invalid_record(record: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{record:?} is not a record id"),
    )
}

impl Keyring {
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("keys");
        files::create_private_dir(&dir)?;
        Ok(Self { dir })
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

    /// Writes a record's wrapped key durably (temporary file, fsync, rename, fsync of the dir).
    pub fn put(&self, record: &str, wrapped: &[u8]) -> std::io::Result<()> {
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

    pub fn get(&self, record: &str) -> std::io::Result<Option<Vec<u8>>> {
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

    /// Every record that has a key.
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
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_destroy() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::open(dir.path()).unwrap();
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
        let ring = Keyring::open(dir.path()).unwrap();
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
        let ring = Keyring::open(dir.path()).unwrap();
        for bad in ["../x", "a/b", "", ".hidden", "a.b"] {
            assert!(ring.put(bad, b"k").is_err(), "{bad}");
        }
    }
}
