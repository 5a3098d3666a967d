//! The small event-sourcing kernel: the envelope every event travels in, what an append asks for,
//! the aggregate contract (`decide` stays in the domain, `apply` is total), and upcasters that lift
//! old payload shapes to the current schema before anything decodes them. Knows nothing of sled or
//! HTTP.

mod envelope;
mod upcast;

pub use envelope::{Envelope, EventMeta, ExpectedVersion, NewEvent, StreamId};
pub use upcast::upcast;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A domain event: serialised adjacently tagged as `{"type": "...", "data": {...}}`, so the type
/// string lives in the envelope and the fields in `data`.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// The payload schema version written for new events of every type of this enum.
    const SCHEMA: u32 = 1;

    fn to_new_event(&self) -> Result<NewEvent, serde_json::Error> {
        let value = serde_json::to_value(self)?;
        let (event_type, data) = match value {
            serde_json::Value::Object(mut map) => (
                map.remove("type")
                    .and_then(|t| t.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                map.remove("data").unwrap_or(serde_json::Value::Null),
            ),
            other => (String::new(), other),
        };
        Ok(NewEvent {
            event_type,
            schema: Self::SCHEMA,
            data,
        })
    }

    /// Decodes a stored event, upcasting older schemas first.
    fn from_envelope(envelope: &Envelope) -> Result<Self, DecodeError> {
        let data = upcast(&envelope.event_type, envelope.schema, envelope.data.clone())?;
        let tagged = serde_json::json!({ "type": envelope.event_type, "data": data });
        serde_json::from_value(tagged).map_err(|e| DecodeError::Payload {
            event_type: envelope.event_type.clone(),
            position: envelope.position,
            reason: e.to_string(),
        })
    }
}

/// A consistency boundary rebuilt from its own stream. `apply` must be total and deterministic:
/// it runs live, on rebuild and in `verify`, and all three must agree.
pub trait Aggregate: Serialize + DeserializeOwned + Clone {
    /// Stable kind, never renamed: the stream id is `KIND:<id>`.
    const KIND: &'static str;
    type Event: DomainEvent;

    fn apply(state: Option<Self>, event: &Self::Event) -> Self;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "event at position {position} ({event_type}) has a payload that does not decode: {reason}"
    )]
    Payload {
        event_type: String,
        position: u64,
        reason: String,
    },
    #[error("event type {event_type} has schema {schema}, newer than this build understands")]
    UnknownSchema { event_type: String, schema: u32 },
}
