//! Entry points that only tests and benchmarks use: tampering with the log or the projections
//! (to show that `verify` notices and `rebuild` repairs), forcing a store schema version or rows
//! an older build wrote, reading a whole stream or the log's tail, and appending from outside an
//! async runtime. Compiled only with the `test-hooks` feature, which the crate's own tests and
//! benches enable through their dev-dependency on it; release builds never have it.

use std::path::Path;

use super::writer::Job;
use super::{AppendError, AppendRequest, Store, StoreError, keys, verify};
use crate::es::{Envelope, StreamId};

impl Store {
    /// [`Store::append`] for callers outside an async runtime.
    pub fn append_blocking(&self, request: AppendRequest) -> Result<Vec<Envelope>, AppendError> {
        self.submit(request)?
            .blocking_recv()
            .map_err(|_| StoreError::Closed)?
    }

    /// Every event of a stream, in order.
    pub fn stream_events(&self, stream: &StreamId) -> Result<Vec<Envelope>, StoreError> {
        let mut out = Vec::new();
        for item in self
            .inner
            .db
            .scan_prefix(keys::stream_events(stream.as_str()))
        {
            let (_, position) = item?;
            let position = keys::u64_value(&position).ok_or_else(|| StoreError::Corrupt {
                what: format!("stream index of {stream}"),
                reason: "not a position".into(),
            })?;
            out.extend(self.event(position)?);
        }
        Ok(out)
    }

    /// Holds the writer between groups until the answered hold is dropped, as a writer stuck
    /// in a flush would be: appends handed over meanwhile wait.
    pub fn hold_writer(&self) -> Result<WriterHold, StoreError> {
        let (release, held) = std::sync::mpsc::channel::<()>();
        self.send(Job::Exclusive(Box::new(move |_| {
            // Ends when the hold is dropped.
            let _ = held.recv();
        })))?;
        Ok(WriterHold { _release: release })
    }

    /// The last position written.
    pub fn last_position(&self) -> Result<u64, StoreError> {
        Ok(verify::tail(&self.inner.db)?.0)
    }

    /// Overwrites a raw log value, keeping its stored hash, so that `verify` has tampering to
    /// detect.
    pub fn tamper_with_event(
        &self,
        position: u64,
        edit: impl FnOnce(&mut Envelope),
    ) -> Result<(), StoreError> {
        let Some(value) = self.inner.db.get(keys::log(position))? else {
            return Ok(());
        };
        let (hash, mut envelope) = verify::decode_log_value(position, &value)?;
        edit(&mut envelope);
        let json = serde_json::to_vec(&envelope)?;
        self.inner
            .db
            .insert(keys::log(position), [&hash[..], &json].concat())?;
        Ok(())
    }

    /// Overwrites a raw log value with `bytes`, which need not decode, so that a read has a
    /// damaged record to find.
    pub fn overwrite_log_value(&self, position: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.db.insert(keys::log(position), bytes)?;
        Ok(())
    }

    /// Deletes the projection row of an aggregate, so that `verify` notices and `rebuild`
    /// repairs.
    pub fn drop_aggregate_row(&self, stream: &StreamId) -> Result<(), StoreError> {
        self.inner.db.remove(keys::aggregate(stream.as_str()))?;
        Ok(())
    }
}

/// Holds the writer while it lives ([`Store::hold_writer`]).
pub struct WriterHold {
    _release: std::sync::mpsc::Sender<()>,
}

/// Writes a store schema version into an existing, closed store, so that a store of an unknown
/// version can be shown to be refused.
pub fn force_schema_version(dir: &Path, version: u32) -> Result<(), StoreError> {
    let db = open_plain(dir)?;
    db.insert(keys::STORE_SCHEMA, &version.to_be_bytes()[..])?;
    db.flush()?;
    Ok(())
}

/// Writes raw bytes as the admin token hash of an existing, closed store, so that a corrupt row
/// can be shown to stop the server from starting.
pub fn force_admin_token_row(dir: &Path, raw: &[u8]) -> Result<(), StoreError> {
    let db = open_plain(dir)?;
    db.insert(keys::ADMIN_TOKEN, raw)?;
    db.flush()?;
    Ok(())
}

/// Opens a closed store's directory with plain sled. The flusher of a store just shut down may
/// still hold the directory's lock for a moment on a busy machine: wait for it, up to 5 s.
fn open_plain(dir: &Path) -> Result<sled::Db, StoreError> {
    let mut tries = 0;
    loop {
        match sled::Config::new().path(dir).open() {
            Err(sled::Error::Io(error)) if tries < 250 && error.to_string().contains("lock") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return Ok(opened?),
        }
    }
}

/// Rewrites rows of an existing, closed store: deletes every row under each prefix of `remove`,
/// then writes `put`, so that the rows an older build wrote can be put back for a test of how
/// this build takes them over.
pub fn force_rows(dir: &Path, remove: &[&[u8]], put: &[(&[u8], &[u8])]) -> Result<(), StoreError> {
    let db = open_plain(dir)?;
    for prefix in remove {
        for item in db.scan_prefix(prefix) {
            let (key, _) = item?;
            db.remove(key)?;
        }
    }
    for (key, value) in put {
        db.insert(key, *value)?;
    }
    db.flush()?;
    Ok(())
}
