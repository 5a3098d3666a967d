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

    /// The stream's kind, without copying the stream id.
    pub fn stream_kind(&self) -> &str {
        self.stream.split_once(':').map_or("", |(kind, _)| kind)
    }

    /// Appends this envelope's JSON to `out`: the very bytes `serde_json::to_vec(self)` gives,
    /// with `data_json` spliced in as the payload. `data_json` must be the JSON of `self.data`
    /// (`serde_json::to_vec(&self.data)`); it lets a payload that was encoded once, before the
    /// envelope existed, not be encoded again.
    pub fn write_json(&self, data_json: &[u8], out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        let head = EnvelopeHead {
            event_id: &self.event_id,
            position: self.position,
            stream: &self.stream,
            stream_version: self.stream_version,
            event_type: &self.event_type,
            schema: self.schema,
            occurred_at: &self.occurred_at,
            actor: &self.actor,
            request_id: &self.request_id,
        };
        serde_json::to_writer(&mut *out, &head)?;
        // A struct always serialises as an object: its last byte is the closing brace, which
        // goes back on after `data`, the envelope's last field.
        if out.last() == Some(&b'}') {
            out.pop();
        }
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data_json);
        out.push(b'}');
        Ok(())
    }
}

/// Every field of [`Envelope`] but `data`, borrowed, with the same names in the same order: the
/// JSON of an envelope up to its payload.
#[derive(Serialize)]
struct EnvelopeHead<'a> {
    event_id: &'a str,
    position: u64,
    stream: &'a str,
    #[serde(rename = "version")]
    stream_version: u64,
    #[serde(rename = "type")]
    event_type: &'a str,
    schema: u32,
    occurred_at: &'a DateTime<Utc>,
    actor: &'a str,
    request_id: &'a str,
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn envelope(data: serde_json::Value) -> Envelope {
        Envelope {
            event_id: "01M83WSGZCA5P4FYV8YQM5SFYX".into(),
            position: 18_446_744_073_709_551_615,
            stream: "account:acct_\"quoted\"\\ ünïcødé \u{1}".into(),
            stream_version: 7,
            event_type: "account_key.created".into(),
            schema: 1,
            occurred_at: Utc.timestamp_opt(1_795_000_000, 740_542_585).unwrap(),
            actor: "kl_0123456\n".into(),
            request_id: "req_\u{2028}".into(),
            data,
        }
    }

    #[test]
    fn an_envelope_written_with_its_encoded_payload_is_the_envelope_as_serde_writes_it() {
        let payloads = [
            serde_json::json!({"name": "k\"é\u{0}", "scopes": ["read", "write"], "n": 3}),
            serde_json::Value::Null,
            serde_json::json!([]),
            serde_json::json!("text"),
        ];
        for data in payloads {
            let envelope = envelope(data);
            let mut out = b"prefix".to_vec();
            let data_json = serde_json::to_vec(&envelope.data).unwrap();
            envelope.write_json(&data_json, &mut out).unwrap();
            let expected = [&b"prefix"[..], &serde_json::to_vec(&envelope).unwrap()].concat();
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&expected)
            );
            let back: Envelope = serde_json::from_slice(&out[6..]).unwrap();
            assert_eq!(back, envelope);
        }
    }
}
