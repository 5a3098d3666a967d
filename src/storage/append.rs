//! What an append asks the writer for, and handing it over: the request travels to the writer
//! thread over a channel and the caller awaits its one-shot answer, given once the group holding
//! it is durable (see `writer.rs`).
//!
//! Every append goes through the one writer thread, so whatever can be done before it is done on
//! the caller's thread: each payload is encoded to the JSON the log will hold and decoded into
//! its domain event for the projections ([`PreparedAppend`]). The writer then only adds what
//! depends on the log's order (position, stream version, time, the chain hash, the state).

use tokio::sync::oneshot;

use super::projection::{self, DecodedEvent};
use super::writer::{AppendResult, Job};
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
    /// Each of these, in order (a rotation stores its new version's key and destroys the one
    /// it retires; a revocation destroys every version's).
    All(Vec<DataKeyChange>),
}

impl DataKeyChange {
    /// The keys to store and the records to destroy, in order, however nested.
    pub fn split(self, store: &mut Vec<(String, Vec<u8>)>, destroy: &mut Vec<String>) {
        match self {
            Self::Store { record, wrapped } => store.push((record, wrapped)),
            Self::Destroy { record } => destroy.push(record),
            Self::All(changes) => {
                for change in changes {
                    change.split(store, destroy);
                }
            }
        }
    }
}

/// An append as the writer takes it: the request, and per event what the caller's thread
/// prepared from it.
pub struct PreparedAppend {
    pub request: AppendRequest,
    /// The request's events, then those of each part of `also` in order.
    pub events: Vec<PreparedEvent>,
}

pub struct PreparedEvent {
    /// `serde_json::to_vec(&event.data)`: the payload exactly as the envelope in the log holds it.
    pub data_json: Vec<u8>,
    /// The payload as its domain event, or `None` when it does not decode: the writer then
    /// projects from the envelope and reports the failure with the event's position.
    pub decoded: Option<DecodedEvent>,
}

impl PreparedAppend {
    pub fn new(mut request: AppendRequest) -> Result<Self, StoreError> {
        let mut events = Vec::with_capacity(request.events.len());
        let parts = std::iter::once((&request.stream, &mut request.events))
            .chain(request.also.iter_mut().map(|p| (&p.stream, &mut p.events)));
        for (stream, part) in parts {
            for event in part.iter_mut() {
                events.push(PreparedEvent {
                    data_json: serde_json::to_vec(&event.data)?,
                    decoded: projection::decode_new(stream.as_str(), event),
                });
            }
        }
        Ok(Self { request, events })
    }
}

impl Store {
    /// Prepares an append on the caller's thread and hands it to the writer; the receiver
    /// answers once its group is durable.
    pub(super) fn submit(
        &self,
        request: AppendRequest,
    ) -> Result<oneshot::Receiver<AppendResult>, StoreError> {
        let prepared = PreparedAppend::new(request)?;
        let (tx, rx) = oneshot::channel();
        self.send(Job::Append(prepared, tx))?;
        Ok(rx)
    }

    /// Appends events to one stream (and those of `also` to theirs), acknowledged once they are
    /// durable; answers every envelope appended, this stream's first.
    pub async fn append(&self, request: AppendRequest) -> Result<Vec<Envelope>, AppendError> {
        let started = std::time::Instant::now();
        let answer = self.submit(request)?.await;
        crate::metrics::count(|m| m.append_seconds.observe(started.elapsed().as_secs_f64()));
        answer
            .map_err(|_| StoreError::Closed)?
            .map_err(|e| match e {
                // A stored row the append had to read (a stream's head) may be damaged.
                AppendError::Store(e) => AppendError::Store(self.noticed(e, None)),
                other => other,
            })
    }
}
