//! Upcasters lift a stored payload from an older schema to the current one, one step at a time,
//! keyed by (event type, schema it reads). Events are never rewritten on disk: the log is
//! immutable and hash-chained, so old shapes are translated on every read instead.

use super::DecodeError;

/// One step: reads `schema`, returns the payload at `schema + 1`.
type Step = fn(serde_json::Value) -> serde_json::Value;

/// The current payload schema of every event type: what new events are written with
/// (`DomainEvent::SCHEMA` is this) and what every stored payload is lifted to. Not the store's
/// on-disk schema (`storage::STORE_SCHEMA_VERSION`).
pub const CURRENT_SCHEMA: u32 = 1;

/// (event type, schema read) → step. Empty while every type is at its first schema; add a row
/// (and a recorded fixture of the old shape under `fixtures/`) whenever a payload changes shape.
const STEPS: &[(&str, u32, Step)] = &[];

/// Brings `data` of `event_type` at `schema` up to [`CURRENT_SCHEMA`].
pub fn upcast(
    event_type: &str,
    schema: u32,
    mut data: serde_json::Value,
) -> Result<serde_json::Value, DecodeError> {
    if schema > CURRENT_SCHEMA {
        return Err(DecodeError::UnknownSchema {
            event_type: event_type.to_owned(),
            schema,
        });
    }
    for from in schema..CURRENT_SCHEMA {
        if let Some((_, _, step)) = STEPS
            .iter()
            .find(|(t, s, _)| *t == event_type && *s == from)
        {
            data = step(data);
        }
    }
    Ok(data)
}
