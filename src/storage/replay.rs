//! Replaying the log into projection rows: what `verify`, `rebuild` and the check on start share.
//! Every check of the walk stays as it was (positions gap-free from 1, every hash chained, every
//! envelope naming its own position), and so does every error it reports; what changed is how
//! much each event costs:
//!
//! - Threads in a pipeline, in batches of [`BATCH`] values over bounded channels: one walks `l/`
//!   and checks positions and the hash chain, [`DECODERS`] read envelopes (the batches dealt to
//!   them in turn and taken back in the same turn, so the log's order holds), and the caller's
//!   thread projects, in order. At most [`QUEUED`] batches wait at each hand-over.
//! - An event whose hash chains is read in one pass, without a `serde_json::Value`: the envelope
//!   borrows its strings and its payload is decoded straight into the domain event
//!   ([`FastEnvelope`]). Anything out of the ordinary (a hash that does not chain, an envelope or
//!   payload that does not read that way, an older schema, an envelope naming another position)
//!   sends that event through the original per-event path, which reports exactly the error it
//!   always did, in the same order of checks.
//! - Projection rows go to [`ReplayRows`], which keeps each aggregate decoded for the whole
//!   replay (`rows.rs`).
//!
//! A replay that runs for more than [`PROGRESS_EVERY`] logs its progress at INFO.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use chrono::DateTime;
use crossbeam_channel::{Receiver, Sender};
use serde::de::{Error as _, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::projection::{DecodeCurrent, EventAt, Prepared, project};
use super::rows::ReplayRows;
use super::verify::{chain_hash, decode_log_value};
use super::{StoreError, keys};
use crate::crypto::KeyedHasher;
use crate::es::current_schema;

/// Log values handed from one thread to the next at a time.
const BATCH: usize = 512;
/// Threads that read envelopes, between the walking thread and the projecting one.
const DECODERS: usize = 2;
/// Batches in flight into and out of each decoding thread: bounds the memory of the hand-over.
const QUEUED: usize = 4;
/// How often a long replay says how far it got.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A replay of the log in progress: the events walked so far, with the chain checked, and the
/// projection rows they produce.
#[derive(Default)]
pub struct Replay {
    pub events: u64,
    /// The hash of the last event walked (32 zero bytes before the first).
    previous: [u8; 32],
    pub rows: ReplayRows,
}

/// One log value as the walking thread read it.
struct Walked {
    position: u64,
    value: sled::IVec,
    /// Its stored hash equals `hmac(chain key, previous hash ‖ envelope JSON)`.
    chained: bool,
}

/// What the walking thread deals to the decoding threads, one message to each in turn.
enum Walk {
    Values(Vec<Walked>),
    /// Where the walk stopped on an error of its own: a position that is not the next one, a
    /// key that is not a position, a part of the log sled cannot read.
    Failed(StoreError),
}

/// An event on its way to the projecting thread.
struct Read {
    walked: Walked,
    /// The event read in one pass, when it chains and is an ordinary one.
    fast: Option<FastEvent>,
}

struct FastEvent {
    stream: String,
    stream_version: u64,
    event: Prepared<ReplayRows>,
}

/// What a decoding thread hands the projecting thread.
enum Decoded {
    Events(Vec<Read>),
    Failed(StoreError),
}

/// An envelope as stored, read in one pass: the fields and checks of `es::Envelope` (every
/// field once, no other field, the same types), its strings borrowed, and `data` decoded straight
/// into the domain event of the projection `projection::route` names ([`DecodeCurrent`]). That
/// needs `stream`, `type` and `schema` (the type's current one) before `data`, as the writer
/// orders them; an envelope that does not read this way is an error here, and its event takes
/// the checked path.
struct FastEnvelope<'a> {
    position: u64,
    stream: Cow<'a, str>,
    stream_version: u64,
    event: Prepared<ReplayRows>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    EventId,
    Position,
    Stream,
    Version,
    #[serde(rename = "type")]
    Type,
    Schema,
    OccurredAt,
    Actor,
    RequestId,
    Data,
}

const FIELDS: &[&str] = &[
    "event_id",
    "position",
    "stream",
    "version",
    "type",
    "schema",
    "occurred_at",
    "actor",
    "request_id",
    "data",
];

impl<'de> Deserialize<'de> for FastEnvelope<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct("Envelope", FIELDS, EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

/// Reads one field into `slot`, refusing a second one as `Envelope` does.
fn once<'de, M: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut M,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), M::Error> {
    if slot.is_some() {
        return Err(M::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = FastEnvelope<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event envelope")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<FastEnvelope<'de>, M::Error> {
        let mut event_id: Option<Cow<'de, str>> = None;
        let mut position: Option<u64> = None;
        let mut stream: Option<Cow<'de, str>> = None;
        let mut version: Option<u64> = None;
        let mut event_type: Option<Cow<'de, str>> = None;
        let mut schema: Option<u32> = None;
        let mut occurred_at: Option<Cow<'de, str>> = None;
        let mut actor: Option<Cow<'de, str>> = None;
        let mut request_id: Option<Cow<'de, str>> = None;
        let mut event: Option<Prepared<ReplayRows>> = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::EventId => once(&mut map, &mut event_id, "event_id")?,
                Field::Position => once(&mut map, &mut position, "position")?,
                Field::Stream => once(&mut map, &mut stream, "stream")?,
                Field::Version => once(&mut map, &mut version, "version")?,
                Field::Type => once(&mut map, &mut event_type, "type")?,
                Field::Schema => once(&mut map, &mut schema, "schema")?,
                Field::OccurredAt => once(&mut map, &mut occurred_at, "occurred_at")?,
                Field::Actor => once(&mut map, &mut actor, "actor")?,
                Field::RequestId => once(&mut map, &mut request_id, "request_id")?,
                Field::Data => {
                    let (None, Some(stream), Some(event_type), Some(schema)) =
                        (&event, &stream, &event_type, schema)
                    else {
                        return Err(M::Error::custom("data before its stream, type and schema"));
                    };
                    if schema != current_schema(event_type) {
                        // An older schema is upcast on the checked path; a newer one is refused
                        // there, saying so.
                        return Err(M::Error::custom("not the current schema of its type"));
                    }
                    let stream_kind = stream.split_once(':').map_or("", |(kind, _)| kind);
                    event = Some(map.next_value_seed(DecodeCurrent {
                        stream_kind,
                        event_type,
                        rows: PhantomData,
                    })?);
                }
            }
        }
        // chrono's strict RFC 3339 parser: cheaper than the relaxed one `DateTime`'s
        // `Deserialize` runs, and whatever it accepts the relaxed one accepts too.
        if occurred_at
            .as_deref()
            .is_some_and(|at| DateTime::parse_from_rfc3339(at).is_err())
        {
            return Err(M::Error::custom("occurred_at is not an RFC 3339 time"));
        }
        match (
            event_id,
            position,
            stream,
            version,
            event_type,
            schema,
            occurred_at,
            actor,
            request_id,
            event,
        ) {
            (
                Some(_),
                Some(position),
                Some(stream),
                Some(stream_version),
                Some(_),
                Some(_),
                Some(_),
                Some(_),
                Some(_),
                Some(event),
            ) => Ok(FastEnvelope {
                position,
                stream,
                stream_version,
                event,
            }),
            _ => Err(M::Error::custom("an envelope field is missing")),
        }
    }
}

impl Replay {
    /// Walks on from the next position, up to `last` (inclusive) or the end of the log, checking
    /// that positions are gap-free, every hash chains and every envelope names its position, and
    /// projecting each event. The first failure stops it.
    pub fn extend(
        &mut self,
        tree: &sled::Tree,
        chain: &KeyedHasher,
        last: Option<u64>,
    ) -> Result<(), StoreError> {
        let from = self.events + 1;
        let previous = self.previous;
        let mut progress = Progress::new(from, last.or_else(|| last_position(tree)));
        std::thread::scope(|scope| {
            let mut to_decoders = Vec::with_capacity(DECODERS);
            let mut from_decoders = Vec::with_capacity(DECODERS);
            let mut threads = Vec::with_capacity(DECODERS + 1);
            for n in 0..DECODERS {
                let (to_decoder, walked) = crossbeam_channel::bounded(QUEUED);
                let (decoded, from_decoder) = crossbeam_channel::bounded(QUEUED);
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("keyledger-decode-{n}"))
                        .spawn_scoped(scope, move || decode(walked, decoded))?,
                );
                to_decoders.push(to_decoder);
                from_decoders.push(from_decoder);
            }
            threads.push(
                std::thread::Builder::new()
                    .name("keyledger-walk".into())
                    .spawn_scoped(scope, move || {
                        walk(tree, chain, from, last, previous, &to_decoders)
                    })?,
            );
            // Returning drops the receivers, which stops the other threads if they still send.
            let projected = self.project_read(chain, from_decoders, &mut progress);
            for thread in threads {
                if let Err(payload) = thread.join() {
                    // A panic of the storage engine while walking: `guarded` answers it.
                    std::panic::resume_unwind(payload);
                }
            }
            projected
        })
    }

    /// Projects what the decoding threads hand over, taking their batches in turn: the order
    /// the walking thread dealt them in, which is the log's.
    fn project_read(
        &mut self,
        chain: &KeyedHasher,
        decoded: Vec<Receiver<Decoded>>,
        progress: &mut Progress,
    ) -> Result<(), StoreError> {
        for turn in 0.. {
            let Ok(message) = decoded[turn % decoded.len()].recv() else {
                return Ok(());
            };
            match message {
                Decoded::Events(events) => {
                    for event in events {
                        self.apply(chain, event)?;
                    }
                    progress.reached(self.events);
                }
                Decoded::Failed(error) => return Err(error),
            }
        }
        Ok(())
    }

    fn apply(&mut self, chain: &KeyedHasher, read: Read) -> Result<(), StoreError> {
        let Read { walked, fast } = read;
        let position = walked.position;
        match fast {
            Some(fast) => {
                let at = EventAt {
                    stream: &fast.stream,
                    stream_version: fast.stream_version,
                    position,
                };
                fast.event
                    .project(&mut self.rows, at)
                    .map_err(|e| corrupt_event(position, e))?;
            }
            None => self.project_checked(chain, position, &walked.value)?,
        }
        self.previous.copy_from_slice(&walked.value[..32]);
        self.events = position;
        Ok(())
    }

    /// The original per-event path: decode the envelope, check its hash and position, project.
    fn project_checked(
        &mut self,
        chain: &KeyedHasher,
        position: u64,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let broken = |reason: &str| StoreError::Chain {
            position,
            reason: reason.to_owned(),
        };
        let (hash, envelope) = decode_log_value(position, value)?;
        if chain_hash(chain, &self.previous, &value[32..]) != hash {
            return Err(broken("its hash does not match: the event was altered"));
        }
        if envelope.position != position {
            return Err(broken("its envelope names another position"));
        }
        project(&mut self.rows, &envelope).map_err(|e| corrupt_event(position, e))
    }
}

/// An event whose hash chains, read in one pass (`FastEnvelope`), if it is an ordinary one:
/// `None` sends it through the checked path.
fn read_fast(position: u64, json: &[u8]) -> Option<FastEvent> {
    // One check of the whole value: serde_json then reads it as text and does not check each
    // string again, which was about a sixth of this thread's work.
    let json = std::str::from_utf8(json).ok()?;
    let envelope = serde_json::from_str::<FastEnvelope<'_>>(json).ok()?;
    if envelope.position != position {
        return None;
    }
    Some(FastEvent {
        stream: envelope.stream.into_owned(),
        stream_version: envelope.stream_version,
        event: envelope.event,
    })
}

/// A decoding thread: reads each chained event of the batches it is dealt in one pass, and
/// hands the batches on in the order it got them.
fn decode(walked: Receiver<Walk>, decoded: Sender<Decoded>) {
    for message in walked {
        let out = match message {
            Walk::Values(values) => Decoded::Events(
                values
                    .into_iter()
                    .map(|walked| Read {
                        fast: walked
                            .chained
                            .then(|| read_fast(walked.position, &walked.value[32..]))
                            .flatten(),
                        walked,
                    })
                    .collect(),
            ),
            Walk::Failed(error) => Decoded::Failed(error),
        };
        if decoded.send(out).is_err() {
            return;
        }
    }
}

fn corrupt_event(position: u64, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: format!("event at position {position}"),
        reason: error.to_string(),
    }
}

/// The walking thread: reads `l/` from `from` on, checks that positions run without a gap and
/// that each hash chains from the one before, and hands the values over in batches. It stops
/// after the first value whose hash does not chain (the projecting side tells why, exactly as
/// the per-event path always did) and on an error of its own, which it hands over last.
fn walk(
    tree: &sled::Tree,
    chain: &KeyedHasher,
    from: u64,
    last: Option<u64>,
    mut previous: [u8; 32],
    decoders: &[Sender<Walk>],
) {
    // Batches go to the decoding threads in turn, which the projecting thread follows.
    let mut turn = 0;
    let mut deal = |message: Walk| {
        let sent = decoders[turn % decoders.len()].send(message).is_ok();
        turn += 1;
        sent
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut expected = from;
    let failed = 'walk: {
        for item in tree.range(keys::log(from)..) {
            if last.is_some_and(|last| expected > last) {
                break;
            }
            // A row sled cannot read is reported at the position the walk had reached.
            let (key, value) = match item.map_err(StoreError::from) {
                Ok(row) => row,
                Err(StoreError::Damaged { at }) => {
                    break 'walk Some(StoreError::Unreadable {
                        position: expected,
                        at,
                    });
                }
                Err(other) => break 'walk Some(other),
            };
            if !key.starts_with(keys::LOG) {
                break;
            }
            let Some(position) = keys::log_position(&key) else {
                break 'walk Some(StoreError::Corrupt {
                    what: "log key".into(),
                    reason: "not a position".into(),
                });
            };
            if position != expected {
                break 'walk Some(StoreError::Chain {
                    position,
                    reason: format!("expected position {expected}: the log has a gap"),
                });
            }
            let chained =
                value.len() >= 32 && chain_hash(chain, &previous, &value[32..])[..] == value[..32];
            if chained {
                previous.copy_from_slice(&value[..32]);
            }
            batch.push(Walked {
                position,
                value,
                chained,
            });
            if !chained {
                break;
            }
            if batch.len() == BATCH
                && !deal(Walk::Values(std::mem::replace(
                    &mut batch,
                    Vec::with_capacity(BATCH),
                )))
            {
                return;
            }
            expected += 1;
        }
        None
    };
    if !batch.is_empty() && !deal(Walk::Values(batch)) {
        return;
    }
    if let Some(error) = failed {
        // The projecting side may have stopped already; then there is no one to tell.
        deal(Walk::Failed(error));
    }
}

/// The log's last position, for progress lines only: a tail sled cannot read is left for the
/// walk to find and report.
fn last_position(tree: &sled::Tree) -> Option<u64> {
    let (key, _) = tree.scan_prefix(keys::LOG).next_back()?.ok()?;
    keys::log_position(&key)
}

/// Progress lines of a long replay.
struct Progress {
    from: u64,
    to: Option<u64>,
    started: Instant,
    reported: Instant,
}

impl Progress {
    fn new(from: u64, to: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            from,
            to,
            started: now,
            reported: now,
        }
    }

    fn reached(&mut self, position: u64) {
        if self.reported.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.reported = Instant::now();
        let seconds = self.started.elapsed().as_secs_f64();
        let per_second = (position + 1).saturating_sub(self.from) as f64 / seconds;
        match self.to {
            Some(to) => tracing::info!(
                position,
                of = to,
                per_second = per_second as u64,
                "replaying the log"
            ),
            None => tracing::info!(
                position,
                per_second = per_second as u64,
                "replaying the log"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::storage::kv::MemKv;
    use crate::storage::rows;

    use crate::es::Envelope;

    fn fixture_envelopes() -> Vec<Envelope> {
        let mut out = Vec::new();
        for file in [
            "account-schema-1.ndjson",
            "byok-schema-1.ndjson",
            "account_key-schema-2.ndjson",
        ] {
            let path = format!("{}/fixtures/events/{file}", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(path).unwrap();
            out.extend(text.lines().map(|line| serde_json::from_str(line).unwrap()));
        }
        out
    }

    /// Every recorded event, as the writer writes it, reads in one pass and projects the rows
    /// the checked path projects; only a payload at an older schema (an `account_key.created` of
    /// the layout before keys had streams) is left to the checked path, which upcasts it.
    #[test]
    fn the_fast_path_reads_every_recorded_event_as_the_checked_path_does() {
        let envelopes = fixture_envelopes();
        assert!(envelopes.len() >= 10);
        let (mut fast_rows, mut checked_rows) = (ReplayRows::default(), MemKv::default());
        let mut older = 0;
        for envelope in envelopes {
            let json = serde_json::to_vec(&envelope).unwrap();
            let read = serde_json::from_slice::<FastEnvelope<'_>>(&json);
            if envelope.schema == current_schema(&envelope.event_type) {
                let fast = read.unwrap_or_else(|e| panic!("{}: {e}", envelope.event_type));
                assert_eq!(fast.position, envelope.position);
                assert_eq!(fast.stream, envelope.stream);
                assert_eq!(fast.stream_version, envelope.stream_version);
                fast.event
                    .project(&mut fast_rows, EventAt::of(&envelope))
                    .unwrap();
            } else {
                assert!(read.is_err(), "{}", envelope.event_type);
                older += 1;
                project(&mut fast_rows, &envelope).unwrap();
            }
            project(&mut checked_rows, &envelope).unwrap();
            assert_eq!(
                rows::as_map(&fast_rows).unwrap(),
                checked_rows.0,
                "{}",
                envelope.event_type
            );
        }
        assert_eq!(older, 2);
    }

    /// Every event the writer writes at its type's current schema takes the fast path (a replay
    /// that quietly took the checked path for each would be correct, and slow), the key events
    /// of the old layout on an account's stream included.
    #[test]
    fn ordinary_events_take_the_fast_path() {
        let mut fast = 0;
        for value in history() {
            let position = value["position"].as_u64().unwrap();
            let current = value["schema"].as_u64()
                == Some(u64::from(current_schema(value["type"].as_str().unwrap())));
            let read = read_fast(position, &json(&value)).is_some();
            assert_eq!(read, current, "{value}");
            fast += u64::from(read);
        }
        assert_eq!(fast, 3 * 9);
    }

    /// What the fast path does not read is left to the checked path: never read differently.
    #[test]
    fn the_fast_path_refuses_what_it_does_not_read_as_the_checked_path_does() {
        let envelope = fixture_envelopes().remove(0);
        let json: serde_json::Value = serde_json::to_value(&envelope).unwrap();
        let edits: [fn(&mut serde_json::Value); 8] = [
            |v| v["extra"] = serde_json::json!(1),
            |v| v["schema"] = serde_json::json!(current_schema("account.created") + 1),
            |v| v["occurred_at"] = serde_json::json!("yesterday"),
            |v| v["type"] = serde_json::json!("account.renamed"),
            |v| v["stream"] = serde_json::json!("ledger:1"),
            |v| v["data"]["email"] = serde_json::json!(7),
            |v| v["actor"] = serde_json::json!(null),
            |v| {
                v.as_object_mut().unwrap().remove("request_id");
            },
        ];
        for edit in edits {
            let mut edited = json.clone();
            edit(&mut edited);
            let bytes = serde_json::to_vec(&edited).unwrap();
            assert!(
                serde_json::from_slice::<FastEnvelope<'_>>(&bytes).is_err(),
                "{edited}"
            );
        }
        // `data` before the fields that say how to read it.
        let text = serde_json::to_string(&envelope).unwrap();
        let data_at = text.find(",\"data\":").unwrap();
        let reordered = format!(
            "{{{},{}",
            &text[data_at + 1..text.len() - 1],
            &text[1..data_at]
        );
        let reordered = format!("{reordered}}}");
        let back: Envelope = serde_json::from_str(&reordered).unwrap();
        assert_eq!(back, envelope);
        assert!(serde_json::from_str::<FastEnvelope<'_>>(&reordered).is_err());
    }

    /// The walk and replay as they were before the fast path and the second thread: one
    /// thread, every event decoded through `Envelope`, rows in a plain map.
    fn reference(tree: &sled::Tree, chain: &KeyedHasher) -> Result<(u64, MemKv), StoreError> {
        let (mut events, mut previous, mut rows) = (0u64, [0u8; 32], MemKv::default());
        for item in tree.range(keys::log(1)..) {
            let expected = events + 1;
            let (key, value) = item?;
            if !key.starts_with(keys::LOG) {
                break;
            }
            let position = keys::log_position(&key).unwrap();
            let broken = |reason: &str| StoreError::Chain {
                position,
                reason: reason.to_owned(),
            };
            if position != expected {
                return Err(broken(&format!(
                    "expected position {expected}: the log has a gap"
                )));
            }
            let (hash, envelope) = decode_log_value(position, &value)?;
            if chain_hash(chain, &previous, &value[32..]) != hash {
                return Err(broken("its hash does not match: the event was altered"));
            }
            if envelope.position != position {
                return Err(broken("its envelope names another position"));
            }
            project(&mut rows, &envelope).map_err(|e| corrupt_event(position, e))?;
            previous = hash;
            events = position;
        }
        Ok((events, rows))
    }

    /// An envelope's JSON as the writer writes it (fields in `Envelope`'s order), or as it
    /// stands when it is no longer an `Envelope`.
    fn json(value: &serde_json::Value) -> Vec<u8> {
        match serde_json::from_value::<Envelope>(value.clone()) {
            Ok(envelope) => serde_json::to_vec(&envelope).unwrap(),
            Err(_) => serde_json::to_vec(value).unwrap(),
        }
    }

    /// Recorded events of three accounts, their credentials and their keys (of both layouts),
    /// renumbered into one log.
    fn history() -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for copy in 0..3 {
            for envelope in fixture_envelopes() {
                let text = serde_json::to_string(&envelope)
                    .unwrap()
                    .replace(
                        "acct_01M8SGWHAHDG3Q8EYSMBAD5BGF",
                        "acct_01M83WSGZCA5P4FYV8YQM5SFYW",
                    )
                    .replace("SFYW", &format!("SFY{copy}"))
                    .replace("key_01M", &format!("key_0{copy}M"))
                    .replace("HG8Z", &format!("HG8{copy}"))
                    .replace("ada@", &format!("ada{copy}@"))
                    .replace("\"token_hash\":\"", &format!("\"token_hash\":\"{copy}"));
                let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
                if let Some(hash) = value["data"]["token_hash"].as_str() {
                    // Still 32 hex-encoded bytes.
                    value["data"]["token_hash"] = serde_json::json!(&hash[..64]);
                }
                out.push(value);
            }
        }
        for (position, value) in (1u64..).zip(&mut out) {
            value["position"] = serde_json::json!(position);
        }
        out
    }

    /// Writes `events` as the log of a new tree, each value's hash chained from the one before.
    fn log_of(events: &[Vec<u8>], chain: &KeyedHasher) -> sled::Db {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mut previous = [0u8; 32];
        for (position, json) in (1u64..).zip(events) {
            let hash = chain_hash(chain, &previous, json);
            db.insert(keys::log(position), [&hash[..], json].concat())
                .unwrap();
            previous = hash;
        }
        db
    }

    /// Events replayed and the rows they produced.
    type Replayed = (u64, BTreeMap<Vec<u8>, Vec<u8>>);

    fn outcome(result: Result<Replayed, StoreError>) -> String {
        match result {
            Ok((events, rows)) => format!("ok: {events} events, rows {rows:?}"),
            Err(error) => format!("error: {error}"),
        }
    }

    /// Every way the log can be damaged or unusual, replayed both ways: the same error, or the
    /// same rows, every time; and a replay taken in two parts (as the check on start does) is
    /// the same as one.
    #[test]
    fn the_replay_finds_exactly_what_the_per_event_replay_found() {
        type Edit = fn(&mut [serde_json::Value]);
        type RawEdit = fn(&mut [Vec<u8>]);
        let text = |raw: &[u8]| String::from_utf8(raw.to_vec()).unwrap();
        let cases: Vec<(&str, bool, Edit, RawEdit)> = vec![
            ("as written", true, |_| {}, |_| {}),
            ("a value shorter than its hash", false, |_| {}, |_| {}),
            ("a value that is not JSON", false, |_| {}, |_| {}),
            ("an altered event", false, |_| {}, |_| {}),
            ("a missing event", false, |_| {}, |_| {}),
            (
                "a newer schema",
                true,
                |v| v[4]["schema"] = serde_json::json!(2),
                |_| {},
            ),
            (
                "an unknown type",
                true,
                |v| v[4]["type"] = serde_json::json!("byok.renamed"),
                |_| {},
            ),
            (
                "another position",
                true,
                |v| v[4]["position"] = serde_json::json!(40),
                |_| {},
            ),
            (
                "an unknown stream kind",
                true,
                |v| v[4]["stream"] = serde_json::json!("ledger:1"),
                |_| {},
            ),
            (
                "an unknown envelope field",
                true,
                |v| v[4]["extra"] = serde_json::json!(true),
                |_| {},
            ),
            (
                "a payload that does not decode",
                true,
                |v| v[5]["data"]["weight"] = serde_json::json!("heavy"),
                |_| {},
            ),
            (
                "an email taken twice",
                true,
                |v| v[11]["data"]["email"] = v[0]["data"]["email"].clone(),
                |_| {},
            ),
            (
                "a key created at schema 1 on its own stream",
                true,
                |v| v[9]["schema"] = serde_json::json!(1),
                |_| {},
            ),
            (
                "a key created at schema 2 on its account's stream",
                true,
                |v| v[1]["schema"] = serde_json::json!(2),
                |_| {},
            ),
            (
                "a key revoked on a credential's stream",
                true,
                |v| v[10]["stream"] = v[4]["stream"].clone(),
                |_| {},
            ),
            (
                "a relaxed time",
                true,
                |_| {},
                |raw| {
                    let line = String::from_utf8(raw[4].clone()).unwrap();
                    let relaxed = line.replacen(
                        "2026-11-23T11:04:07.851112844Z",
                        "2026-11-23 11:04:07.851112844z",
                        1,
                    );
                    assert_ne!(relaxed, line);
                    raw[4] = relaxed.into_bytes();
                },
            ),
            (
                "a payload naming a field twice",
                true,
                |_| {},
                |raw| {
                    let line = String::from_utf8(raw[0].clone()).unwrap();
                    let twice = line.replacen(
                        "\"email\":",
                        "\"email\":\"first@example.com\",\"email\":",
                        1,
                    );
                    assert_ne!(twice, line);
                    raw[0] = twice.into_bytes();
                },
            ),
            (
                "data before its type",
                true,
                |_| {},
                |raw| {
                    let line = String::from_utf8(raw[4].clone()).unwrap();
                    let at = line.find(",\"data\":").unwrap();
                    raw[4] = format!("{{{},{}}}", &line[at + 1..line.len() - 1], &line[1..at])
                        .into_bytes();
                },
            ),
            (
                "escaped strings",
                true,
                |_| {},
                |raw| {
                    let line = String::from_utf8(raw[4].clone()).unwrap();
                    let escaped = line.replacen("\"byok:", "\"\\u0062yok:", 1);
                    assert_ne!(escaped, line);
                    raw[4] = escaped.into_bytes();
                },
            ),
        ];
        let chain = KeyedHasher::new(&crate::crypto::DataKey::generate());
        for (name, rechain, edit, raw_edit) in cases {
            let mut values = history();
            edit(&mut values);
            let mut raw: Vec<Vec<u8>> = values.iter().map(json).collect();
            raw_edit(&mut raw);
            let db = log_of(&raw, &chain);
            if !rechain {
                let key = keys::log(5);
                let value = db.get(&key).unwrap().unwrap().to_vec();
                match name {
                    "a value shorter than its hash" => drop(db.insert(&key, &value[..10])),
                    "a value that is not JSON" => {
                        drop(db.insert(&key, [&value[..32], b"{not json"].concat()))
                    }
                    "an altered event" => {
                        let original = text(&value[32..]);
                        let altered = original.replace("prod-eu", "prod-us");
                        assert_ne!(altered, original);
                        drop(db.insert(&key, [&value[..32], altered.as_bytes()].concat()))
                    }
                    "a missing event" => drop(db.remove(&key)),
                    _ => {}
                }
            }
            let expected = outcome(reference(&db, &chain).map(|(n, rows)| (n, rows.0)));
            let mut replay = Replay::default();
            let found = outcome(
                replay
                    .extend(&db, &chain, None)
                    .and_then(|()| Ok((replay.events, rows::as_map(&replay.rows)?))),
            );
            if name == "as written" {
                assert!(expected.starts_with("ok: 33 events"), "{expected}");
            }
            assert_eq!(found, expected, "{name}");
            let mut split = Replay::default();
            let found = outcome(
                split
                    .extend(&db, &chain, Some(6))
                    .and_then(|()| split.extend(&db, &chain, None))
                    .and_then(|()| Ok((split.events, rows::as_map(&split.rows)?))),
            );
            assert_eq!(found, expected, "{name}, in two parts");
        }
    }
}
