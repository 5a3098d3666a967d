//! The envelope every stored event travels in, stream ids, and what an append asks for. Plain
//! serde data: it imports no HTTP or OpenAPI crate and no other keyledger module; the API's view
//! of an event is `http::events::Event`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A stream id: `<aggregate kind>:<aggregate id>`, for example `account:acct_01J…`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn new(kind: &str, id: &str) -> Self {
        Self(format!("{kind}:{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> &str {
        self.0.split_once(':').map_or("", |(kind, _)| kind)
    }

    pub fn id(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, id)| id)
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an append expects of the stream's current version (its last event's `stream_version`);
/// checked atomically with the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
    /// No check.
    Any,
}

impl ExpectedVersion {
    pub fn admits(self, current: u64) -> bool {
        match self {
            Self::NoStream => current == 0,
            Self::Exact(v) => current == v,
            Self::Any => true,
        }
    }
}

/// An event not yet appended.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema: u32,
    pub data: serde_json::Value,
}

/// Who caused an append and under which request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventMeta {
    /// Public prefix of the token that acted, `operator`, or `signup`.
    pub actor: String,
    pub request_id: String,
}

/// A stored event, exactly as the log holds it (its JSON is what the hash chain covers). The API
/// shows events through its own type, built from this one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// ULID, unique across the store.
    pub event_id: String,
    /// Global position, gap-free, starting at 1.
    pub position: u64,
    pub stream: String,
    /// The event's version within its stream, gap-free, starting at 1; the aggregate's revision
    /// once the event is applied. Stored under the key `version`, as every event already is.
    #[serde(rename = "version")]
    pub stream_version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Payload schema version.
    pub schema: u32,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub request_id: String,
    pub data: serde_json::Value,
}

impl Envelope {
    pub fn stream_id(&self) -> StreamId {
        StreamId(self.stream.clone())
    }
}
