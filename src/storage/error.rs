//! What can go wrong in the store: `StoreError` is a failure of the machine (disk, corrupt data,
//! a store this build must not open); `AppendError` adds the normal outcomes an append is refused
//! with (a version conflict, a unique index already holding the value), which callers answer for.
//! Callers choose their answer by matching these types, never their text.

use std::path::PathBuf;

use crate::es::ExpectedVersion;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Sled(sled::Error),
    /// sled found bytes that fail its own checksums: the files were altered or cut.
    #[error(
        "the store's files are damaged: the storage engine read corrupt data{at}; restore the data directory from a backup"
    )]
    Damaged { at: String },
    /// The log's rows from `position` on are in a part of the files sled cannot read.
    #[error(
        "the log cannot be read from position {position} on: the storage engine read corrupt data{at}; restore the data directory from a backup"
    )]
    Unreadable { position: u64, at: String },
    /// sled panicked on the store's files, which only damaged files make it do.
    #[error(
        "the storage engine failed on the store's files ({0}): they are damaged; restore the data directory from a backup"
    )]
    Engine(String),
    /// The log no longer reaches the head recorded after the last durable write (`head.rs`).
    #[error(
        "{reason}: the store's db file has lost data (truncated or damaged); restore the data directory from a backup, or, if an older db file was restored on purpose, delete {}",
        file.display()
    )]
    LostEvents { reason: String, file: PathBuf },
    #[error("there is no keyledger store in {}: {reason}", dir.display())]
    NoStore { dir: PathBuf, reason: &'static str },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not encode a record: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("could not encode an event: {0}")]
    Event(#[from] crate::es::EncodeError),
    #[error("the store is corrupt: {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("the hash chain is broken at position {position}: {reason}")]
    Chain { position: u64, reason: String },
    #[error(
        "the store has schema version {found}, but this keyledger understands only version {supported}; use a matching keyledger release"
    )]
    UnsupportedSchema { found: u32, supported: u32 },
    #[error(
        "the master key does not open this store (wrong key, or the store was keyed with another)"
    )]
    WrongMasterKey,
    #[error(
        "the master key does not open this store: the store is keyed with master key {store}, this key is {given} (was the store rekeyed with `keyledger rekey`?)"
    )]
    OtherMasterKey { store: String, given: String },
    #[error("a store key could not be sealed: {0}")]
    Seal(#[from] crate::crypto::SealError),
    #[error("the store is in use by another keyledger process (stop the server first)")]
    Locked,
    #[error("the store is shut down")]
    Closed,
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        match error {
            sled::Error::Corruption { at, .. } => Self::Damaged {
                at: at.map_or_else(String::new, |at| format!(" (at {at:?})")),
            },
            other => Self::Sled(other),
        }
    }
}

impl StoreError {
    /// Whether this error reports damage to what the store holds (a record that does not decode,
    /// a broken chain, files sled cannot read), as opposed to a failure of the machine or a
    /// store this build must not open.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Self::Damaged { .. }
                | Self::Unreadable { .. }
                | Self::Engine(_)
                | Self::LostEvents { .. }
                | Self::Corrupt { .. }
                | Self::Chain { .. }
        )
    }
}

/// A unique index a projection enforces. Callers match on it to choose their answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UniqueIndex {
    /// `i/email/`: one account per normalised email.
    Email,
    /// `q/r/`: a usage request id is recorded once per account.
    UsageRequest,
}

impl UniqueIndex {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::UsageRequest => "usage request id",
        }
    }
}

impl std::fmt::Display for UniqueIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an append did not happen. A conflict and a unique-index collision are normal outcomes the
/// caller answers for; `Store` is a failure of the machine.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream} is at version {actual}, the append expected {expected:?}")]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: u64,
    },
    #[error("{index} {value:?} is already taken")]
    Unique { index: UniqueIndex, value: String },
    #[error("the event cannot be projected: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}
