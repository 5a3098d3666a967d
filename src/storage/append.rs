//! What an append asks the writer for, and handing it over: the request travels to the writer
//! thread over a channel and the caller awaits its one-shot answer, given once the group holding
//! it is durable (see `writer.rs`).

use tokio::sync::oneshot;

use super::writer::Job;
use super::{AppendError, IdempotencyRecord, Store, StoreError};
use crate::es::{Envelope, EventMeta, ExpectedVersion, NewEvent, StreamId};

pub struct AppendRequest {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub meta: EventMeta,
    /// A data key to store or destroy atomically with the events.
    pub data_key: Option<DataKeyChange>,
    /// Events of other streams appended with these, all or nothing, after them and under the
    /// same meta (an account and its first key's stream).
    pub also: Vec<StreamAppend>,
    /// The idempotency record of the request these events answer, written in their batch: once
    /// they are durable, so is the answer a retry gets (`idempotency.rs`).
    pub idempotency: Option<IdempotencyRecord>,
}

/// Events for one more stream of an [`AppendRequest`], checked against its own expected
/// version.
#[derive(Clone)]
pub struct StreamAppend {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
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
    /// Appends events to one stream (and those of `also` to theirs), acknowledged once they are
    /// durable; answers every envelope appended, this stream's first.
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
