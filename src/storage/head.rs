//! The log's durable head, kept outside sled: `<data dir>/chain-head` holds the last durable
//! position and its chain hash, rewritten by the writer after every group it made durable.
//!
//! sled takes a message that fails its checksum during recovery for the torn end of its log, and
//! silently drops it and everything after it: a cut or damaged `db` file can open as a shorter,
//! valid-looking store (or as an empty one). Comparing the recovered log with this file on open
//! turns that loss into a refusal. The file is written after the `db` file is synced, so it never
//! names a position the log could lose; it is not synced itself (a crash may leave it one write
//! behind, which only weakens the check). A store without the file (new, or written by an older
//! build) is not checked. It guards against damage, not an attacker: whoever can rewrite the
//! data directory can rewrite this file too.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{StoreError, files, keys, verify};

pub const FILE: &str = "chain-head";

/// Position (big-endian) and chain hash.
const LEN: usize = 8 + 32;

pub struct HeadFile {
    path: PathBuf,
    temporary: PathBuf,
}

impl HeadFile {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(FILE),
            temporary: data_dir.join(format!(".{FILE}.new")),
        }
    }

    /// The recorded head, if there is one.
    pub fn read(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let corrupt = || StoreError::Corrupt {
            what: format!("the recorded head of the log ({})", self.path.display()),
            reason: format!("{} bytes, not {LEN}", bytes.len()),
        };
        let (position, hash) = bytes.split_at_checked(8).ok_or_else(corrupt)?;
        let position = keys::u64_value(position).ok_or_else(corrupt)?;
        let hash = <[u8; 32]>::try_from(hash).map_err(|_| corrupt())?;
        Ok(Some((position, hash)))
    }

    /// Records a durable head: a temporary file renamed over the old one, so a reader sees the
    /// old head or the new one, never a torn one.
    pub fn write(&self, position: u64, hash: &[u8; 32]) -> std::io::Result<()> {
        let mut file =
            files::private_file(OpenOptions::new().write(true).create(true).truncate(true))
                .open(&self.temporary)?;
        file.write_all(&[&position.to_be_bytes()[..], hash].concat())?;
        drop(file);
        fs::rename(&self.temporary, &self.path)
    }

    /// Refuses a log that does not reach the recorded head, or holds another event there.
    pub fn check(&self, tree: &sled::Tree) -> Result<(), StoreError> {
        let Some((recorded, hash)) = self.read()? else {
            return Ok(());
        };
        if recorded == 0 {
            return Ok(());
        }
        let lost = |reason: String| StoreError::LostEvents {
            reason,
            file: self.path.clone(),
        };
        match tree.get(keys::log(recorded))? {
            None => {
                let (tail, _) = verify::tail(tree)?;
                Err(lost(format!(
                    "the log ends at position {tail}, but position {recorded} was written and made durable"
                )))
            }
            Some(value) => {
                let (stored, _) = verify::decode_log_value(recorded, &value)?;
                if stored == hash {
                    Ok(())
                } else {
                    Err(lost(format!(
                        "the event at position {recorded} is not the one that was written there"
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_reads_back_and_a_torn_one_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let head = HeadFile::new(dir.path());
        assert_eq!(head.read().unwrap(), None);
        head.write(7, &[3; 32]).unwrap();
        assert_eq!(head.read().unwrap(), Some((7, [3; 32])));
        head.write(9, &[4; 32]).unwrap();
        assert_eq!(head.read().unwrap(), Some((9, [4; 32])));
        std::fs::write(dir.path().join(FILE), b"short").unwrap();
        assert!(matches!(head.read(), Err(StoreError::Corrupt { .. })));
    }
}
