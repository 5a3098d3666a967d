//! Upcasters lift a stored payload from an older schema to the current one, one step at a time,
//! keyed by (event type, schema it reads). Events are never rewritten on disk: the log is
//! immutable and hash-chained, so old shapes are translated on every read instead.

use super::{DecodeError, StreamId};

/// One step: reads `schema` of an event on `stream`, returns the payload at `schema + 1`. The
/// stream is there for payloads that relied on it: what a stream's id said, a later schema
/// writes into the payload.
type Step = fn(&StreamId, serde_json::Value) -> serde_json::Value;

/// The schema every event type starts at, and stays at until its payload changes shape. Not the
/// store's on-disk schema (`storage::STORE_SCHEMA_VERSION`).
pub const FIRST_SCHEMA: u32 = 1;

/// (event type, schema read) → step. Add a row (and a recorded fixture of the old shape under
/// `fixtures/`) whenever a payload changes shape; the type's current schema follows from it.
const STEPS: &[(&str, u32, Step)] = &[
    // Schema 1 of a key's creation lived on its account's stream (`account:<account_id>`);
    // schema 2 lives on the key's own stream and names the account (docs/adr/0020).
    ("account_key.created", 1, name_the_account_of_the_stream),
];

/// The current payload schema of `event_type`: what new events of the type are written with
/// and what every stored payload of it is lifted to.
pub fn current_schema(event_type: &str) -> u32 {
    STEPS
        .iter()
        .filter(|(t, _, _)| *t == event_type)
        .map(|(_, from, _)| from + 1)
        .max()
        .unwrap_or(FIRST_SCHEMA)
}

/// Brings `data` of `event_type` at `schema`, stored on `stream`, up to its current schema.
pub fn upcast(
    stream: &StreamId,
    event_type: &str,
    schema: u32,
    mut data: serde_json::Value,
) -> Result<serde_json::Value, DecodeError> {
    let current = current_schema(event_type);
    if schema > current {
        return Err(DecodeError::UnknownSchema {
            event_type: event_type.to_owned(),
            schema,
        });
    }
    for from in schema..current {
        if let Some((_, _, step)) = STEPS
            .iter()
            .find(|(t, s, _)| *t == event_type && *s == from)
        {
            data = step(stream, data);
        }
    }
    Ok(data)
}

/// Adds `account_id` from an account's stream (`account:<account_id>`) to a payload that has
/// none. On any other stream the payload is left as it is, and decoding it then says what is
/// missing rather than taking an id from a stream that is not an account's.
fn name_the_account_of_the_stream(
    stream: &StreamId,
    mut data: serde_json::Value,
) -> serde_json::Value {
    if stream.kind() == "account"
        && let Some(payload) = data.as_object_mut()
    {
        payload
            .entry("account_id")
            .or_insert_with(|| serde_json::Value::String(stream.id().to_owned()));
    }
    data
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn each_type_has_its_own_current_schema() {
        assert_eq!(current_schema("account_key.created"), 2);
        assert_eq!(current_schema("account_key.revoked"), FIRST_SCHEMA);
        assert_eq!(current_schema("byok.registered"), FIRST_SCHEMA);
    }

    #[test]
    fn a_key_created_on_its_accounts_stream_names_that_account() {
        let on_account = StreamId::new("account", "acct_1");
        let lifted = upcast(
            &on_account,
            "account_key.created",
            1,
            json!({"key_id": "k"}),
        )
        .unwrap();
        assert_eq!(lifted, json!({"key_id": "k", "account_id": "acct_1"}));
        // Elsewhere nothing is made up, and the current schema passes as it is.
        let on_key = StreamId::new("account_key", "key_1");
        let kept = upcast(&on_key, "account_key.created", 1, json!({"key_id": "k"})).unwrap();
        assert_eq!(kept, json!({"key_id": "k"}));
        let current = json!({"key_id": "k", "account_id": "acct_2"});
        assert_eq!(
            upcast(&on_key, "account_key.created", 2, current.clone()).unwrap(),
            current
        );
        assert!(upcast(&on_key, "account_key.created", 3, current).is_err());
    }
}
