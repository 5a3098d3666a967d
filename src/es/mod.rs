//! The small event-sourcing kernel: the envelope every event travels in, what an append asks for,
//! the aggregate contract (`decide` stays in the domain, `apply` is total), and upcasters that lift
//! old payload shapes to the current schema before anything decodes them. Knows nothing of sled or
//! HTTP.

mod envelope;
mod upcast;

pub use envelope::{Envelope, EventMeta, ExpectedVersion, NewEvent, StreamId};
pub use upcast::{FIRST_SCHEMA, current_schema, upcast};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A domain event: serialised adjacently tagged as `{"type": "...", "data": {...}}`, so the type
/// string lives in the envelope and the fields in `data`.
pub trait DomainEvent: Serialize + DeserializeOwned {
    /// Splits the serialised event into its type string and its payload, at the type's current
    /// schema ([`current_schema`]: the one the upcasters lift every stored payload to). An event
    /// that does not serialise as `{"type": "<non-empty string>", "data": ...}` is refused,
    /// never appended with a made-up type.
    fn to_new_event(&self) -> Result<NewEvent, EncodeError> {
        let serde_json::Value::Object(mut map) = serde_json::to_value(self)? else {
            return Err(EncodeError::NotTagged("not a JSON object"));
        };
        let event_type = match map.remove("type") {
            Some(serde_json::Value::String(t)) if !t.is_empty() => t,
            Some(_) => return Err(EncodeError::NotTagged("`type` is not a non-empty string")),
            None => return Err(EncodeError::NotTagged("no `type`")),
        };
        // A variant without fields serialises without `data`; it is stored as `null`.
        let data = map.remove("data").unwrap_or(serde_json::Value::Null);
        if !map.is_empty() {
            return Err(EncodeError::NotTagged("fields beside `type` and `data`"));
        }
        Ok(NewEvent {
            schema: current_schema(&event_type),
            event_type,
            data,
        })
    }

    /// Decodes a stored event, upcasting older schemas first. An event type whose payloads are
    /// large may read the current schema in place and leave older ones to [`decode_envelope`].
    fn from_envelope(envelope: &Envelope) -> Result<Self, DecodeError> {
        decode_envelope(envelope)
    }
}

/// Decodes a stored event through a copy of its payload, upcast to the current schema: what
/// [`DomainEvent::from_envelope`] does unless an event type reads its payload in place.
pub fn decode_envelope<E: DeserializeOwned>(envelope: &Envelope) -> Result<E, DecodeError> {
    let data = upcast(
        &envelope.stream_id(),
        &envelope.event_type,
        envelope.schema,
        envelope.data.clone(),
    )?;
    let tagged = serde_json::json!({ "type": envelope.event_type, "data": data });
    serde_json::from_value(tagged).map_err(|e| DecodeError::Payload {
        event_type: envelope.event_type.clone(),
        position: envelope.position,
        reason: e.to_string(),
    })
}

/// A consistency boundary rebuilt from its own stream. `apply` must be total and deterministic:
/// it runs live, on rebuild and in `verify`, and all three must agree.
pub trait Aggregate: Serialize + DeserializeOwned + Clone {
    /// Stable kind, never renamed: the stream id is `KIND:<id>`.
    const KIND: &'static str;
    type Event: DomainEvent;

    fn apply(state: Option<Self>, event: &Self::Event) -> Self;
}

/// Why a domain event could not become a [`NewEvent`].
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("the event does not serialise: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the event does not serialise as {{\"type\", \"data\"}}: {0}")]
    NotTagged(&'static str),
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

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(tag = "type", content = "data")]
    enum Tagged {
        #[serde(rename = "thing.happened")]
        Happened { n: u32 },
        #[serde(rename = "thing.ended")]
        Ended,
    }
    impl DomainEvent for Tagged {}

    /// Serialises without a type tag: a mistake in an event enum's serde attributes.
    #[derive(Serialize, Deserialize)]
    struct Untagged {
        n: u32,
    }
    impl DomainEvent for Untagged {}

    #[test]
    fn a_tagged_event_splits_into_type_and_data() {
        let new = Tagged::Happened { n: 3 }.to_new_event().unwrap();
        assert_eq!(new.event_type, "thing.happened");
        assert_eq!(new.schema, FIRST_SCHEMA);
        assert_eq!(new.data, serde_json::json!({"n": 3}));
        let ended = Tagged::Ended.to_new_event().unwrap();
        assert_eq!(ended.event_type, "thing.ended");
        assert_eq!(ended.data, serde_json::Value::Null);
    }

    #[test]
    fn an_event_without_a_type_is_an_error_not_an_empty_type() {
        assert!(matches!(
            Untagged { n: 1 }.to_new_event(),
            Err(EncodeError::NotTagged(_))
        ));
    }
}
