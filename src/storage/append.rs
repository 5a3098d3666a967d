//! What an append asks the writer for, and handing it over: the request travels to the writer
//! thread over a channel and the caller awaits its one-shot answer, given once the group holding
//! it is durable (see `writer.rs`).

use tokio::sync::oneshot;

use super::writer::Job;
use super::{AppendError, Store, StoreError};
use crate::es::{Envelope, EventMeta, ExpectedVersion, NewEvent, StreamId};

pub struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub meta: EventMeta,
    /// A data key to store or destroy atomically with the events.
    pub data_key: Option<DataKeyChange>,
}

/// A change to the key files under `keys/` (`keyring.rs`), ordered by the writer around the
/// batch of the events it goes with.
#[derive(Clone)]
pub enum DataKeyChange {
    /// Keep this record's wrapped data key.
    Store { record: String, wrapped: Vec<u8> },
    /// Destroy this record's data key: its ciphertext in the log can never be opened again.
    Destroy { record: String },
}

impl Store {
    /// Appends events to one stream, acknowledged once they are durable.
    pub async fn append(&self, request: AppendRequest) -> Result<Vec<Envelope>, AppendError> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Append(request, tx))?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(|e| match e {
                // A stored row the append had to read (a stream's head) may be damaged.
                AppendError::Store(e) => AppendError::Store(self.noticed(e, None)),
                other => other,
            })
    }
}
