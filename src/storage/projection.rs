//! Inline projections: every appended event updates these rows in the same atomic batch, and a
//! rebuild replays the whole log through the very same functions. Each row's layout is in
//! `keys.rs`.
//!
//! [`route`] is the one place that says which projection takes an event; the live projection
//! ([`project`]), the replay's per-event path and the replay's one-pass read of envelopes
//! (`replay.rs`, through [`DecodeCurrent`]) all go through it, so a stream kind added there is
//! projected live and replayed alike.

use std::any::Any;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};

use serde::de::value::{MapAccessDeserializer, StrDeserializer};
use serde::de::{DeserializeSeed, Error as _, MapAccess};
use serde::{Deserialize, Deserializer, Serialize};

use super::kv::{Kv, KvRead};
use super::{StoreError, UniqueIndex, account_keys, keys, usage, webhooks};
use crate::domain::AccountId;
use crate::domain::account::{Account, AccountEvent};
use crate::domain::account_key::{ApiKey, ApiKeyEvent};
use crate::domain::credential::{Credential, CredentialEvent};
use crate::domain::policy::{Policy, PolicyEvent};
use crate::domain::webhook::Webhook;
use crate::es::{Aggregate, DecodeError, DomainEvent, Envelope, NewEvent};

/// The encoding of the projection rows this build writes. Bump it whenever a row's encoding
/// changes (an aggregate's fields, their names or order, a key layout under a projection
/// prefix): a store recorded at another format has its projections rebuilt from the log when it
/// opens, so `verify` keeps comparing like with like (docs/adr/0013). 2: the `a/` rows name
/// `stream_version` and the credential's `secret_version`, with its profile flattened. 3: each
/// API key has its own row (`a/account_key:<key_id>`) and the account's key index
/// (`i/keys/`); the account's row no longer holds its keys (docs/adr/0020). 4: credentials
/// carry their routing state (bindings, model map, quota); accounts that set a routing policy
/// have an `a/policy:<account_id>` row (docs/adr/0021); the usage rows (`q/`) exist
/// (docs/adr/0022). 5: credentials carry their last probe (`last_test`, docs/adr/0025).
/// 6: credentials carry their pending stage, previous secret and highest secret version
/// (docs/adr/0027), and their health (`health`, `health_until`…, docs/adr/0028).
pub const FORMAT_VERSION: u32 = 6;

/// Why an event could not be projected. `Unique` rejects the append that carried it (a unique
/// index is enforced where the index is written, atomically with the write).
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("{index} {value:?} is already taken")]
    Unique { index: UniqueIndex, value: String },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("no projection handles streams of kind {0:?}")]
    UnknownStream(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An `a/` row: an aggregate's state and the stream version it was projected at.
#[derive(Serialize, Deserialize)]
pub struct StoredAggregate<A> {
    pub stream_version: u64,
    pub state: A,
}

/// Where an event sits: what the projections need of its envelope besides the payload.
#[derive(Clone, Copy)]
pub struct EventAt<'a> {
    pub stream: &'a str,
    pub stream_version: u64,
    pub position: u64,
}

impl<'a> EventAt<'a> {
    pub fn of(envelope: &'a Envelope) -> Self {
        Self {
            stream: &envelope.stream,
            stream_version: envelope.stream_version,
            position: envelope.position,
        }
    }
}

/// A projection of one kind of event: applies the decoded domain event `E` to the rows.
pub type Projector<K, E> = fn(&mut K, EventAt<'_>, E) -> Result<(), ProjectionError>;

/// What is done with an event once [`route`] has chosen its projection: decode the payload into
/// the projection's domain event, and project it or hand it on.
pub trait Route<K> {
    type Out;
    fn to<E: DomainEvent + Send + 'static>(self, project: Projector<K, E>) -> Self::Out;
}

/// The projection that takes an event, by its stream's kind (and, on an account's stream, by its
/// type: the key events of the layout before keys had streams, docs/adr/0020). The one dispatch
/// of the projections: a new stream kind is one arm here, and the replay needs nothing more.
pub fn route<K: Kv, R: Route<K>>(
    stream_kind: &str,
    event_type: &str,
    route: R,
) -> Result<R::Out, ProjectionError> {
    Ok(match stream_kind {
        Account::KIND if ApiKeyEvent::is_key_event(event_type) => {
            route.to(account_keys::project_key_on_account_stream::<K>)
        }
        Account::KIND => route.to(project_account::<K>),
        Credential::KIND => route.to(project_credential::<K>),
        ApiKey::KIND => route.to(account_keys::project_key::<K>),
        Policy::KIND => route.to(project_policy::<K>),
        // Usage batches are not in the account's feed (docs/adr/0022).
        crate::domain::usage::KIND => route.to(usage::project_usage::<K>),
        Webhook::KIND => route.to(webhooks::project_webhook::<K>),
        other => return Err(ProjectionError::UnknownStream(other.to_owned())),
    })
}

/// Projects one event, decoding its payload from the envelope (upcasting older schemas first).
pub fn project<K: Kv>(kv: &mut K, envelope: &Envelope) -> Result<(), ProjectionError> {
    let at = EventAt::of(envelope);
    project_stream(kv, at);
    route(
        envelope.stream_kind(),
        &envelope.event_type,
        FromEnvelope { kv, envelope, at },
    )?
}

/// The rows of every event whatever its kind: its stream's head and the stream's list of
/// positions.
fn project_stream(kv: &mut impl Kv, at: EventAt<'_>) {
    kv.put(
        keys::head(at.stream),
        at.stream_version.to_be_bytes().to_vec(),
    );
    kv.put(
        keys::stream_event(at.stream, at.stream_version),
        at.position.to_be_bytes().to_vec(),
    );
}

/// A domain event decoded ahead of the writer (on the appending caller's thread), of whichever
/// type [`route`] names for its stream and event type.
pub type DecodedEvent = Box<dyn Any + Send>;

/// Decodes an event about to be appended to `stream` into the domain event its projection takes,
/// as [`project`] would from its envelope; `None` when it does not decode (the writer then
/// projects it from its envelope, which names the failure with the event's position). The
/// payload is lent to a provisional envelope and handed back, never copied.
pub fn decode_new(stream: &str, event: &mut NewEvent) -> Option<DecodedEvent> {
    let envelope = Envelope {
        event_id: String::new(),
        position: 0,
        stream: stream.to_owned(),
        stream_version: 0,
        event_type: std::mem::take(&mut event.event_type),
        schema: event.schema,
        occurred_at: DateTime::<Utc>::UNIX_EPOCH,
        actor: String::new(),
        request_id: String::new(),
        data: std::mem::take(&mut event.data),
    };
    let decoded = route::<NoRows, _>(
        envelope.stream_kind(),
        &envelope.event_type,
        Decode(&envelope),
    );
    event.event_type = envelope.event_type;
    event.data = envelope.data;
    decoded.ok()?.ok()
}

/// Projects one event from the domain event [`decode_new`] made of it, or from its envelope
/// when that is not the event its projection takes.
pub fn project_decoded<K: Kv>(
    kv: &mut K,
    envelope: &Envelope,
    decoded: DecodedEvent,
) -> Result<(), ProjectionError> {
    let at = EventAt::of(envelope);
    project_stream(kv, at);
    route(
        envelope.stream_kind(),
        &envelope.event_type,
        FromDecoded {
            kv,
            envelope,
            at,
            decoded,
        },
    )?
}

struct Decode<'e>(&'e Envelope);

impl<K> Route<K> for Decode<'_> {
    type Out = Result<DecodedEvent, DecodeError>;

    fn to<E: DomainEvent + Send + 'static>(self, _: Projector<K, E>) -> Self::Out {
        Ok(Box::new(E::from_envelope(self.0)?))
    }
}

/// The rows [`decode_new`] routes for: it only decodes, so nothing is read or written.
struct NoRows;

impl KvRead for NoRows {
    fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
}

impl Kv for NoRows {
    fn put(&mut self, _: Vec<u8>, _: Vec<u8>) {}
    fn delete(&mut self, _: Vec<u8>) {}
}

struct FromDecoded<'k, 'e, K> {
    kv: &'k mut K,
    envelope: &'e Envelope,
    at: EventAt<'e>,
    decoded: DecodedEvent,
}

impl<K> Route<K> for FromDecoded<'_, '_, K> {
    type Out = Result<(), ProjectionError>;

    fn to<E: DomainEvent + Send + 'static>(self, project: Projector<K, E>) -> Self::Out {
        let event = match self.decoded.downcast::<E>() {
            Ok(event) => *event,
            Err(_) => E::from_envelope(self.envelope)?,
        };
        project(self.kv, self.at, event)
    }
}

struct FromEnvelope<'k, 'e, K> {
    kv: &'k mut K,
    envelope: &'e Envelope,
    at: EventAt<'e>,
}

impl<K> Route<K> for FromEnvelope<'_, '_, K> {
    type Out = Result<(), ProjectionError>;

    fn to<E: DomainEvent + Send + 'static>(self, project: Projector<K, E>) -> Self::Out {
        let event = E::from_envelope(self.envelope)?;
        project(self.kv, self.at, event)
    }
}

/// An event decoded and ready to project: what the replay's reading threads hand the projecting
/// one.
pub struct Prepared<K> {
    project: Box<dyn ProjectOnce<K>>,
}

/// A decoded event and its projector, called once.
trait ProjectOnce<K>: FnOnce(&mut K, EventAt<'_>) -> Result<(), ProjectionError> + Send {}

impl<K, F: FnOnce(&mut K, EventAt<'_>) -> Result<(), ProjectionError> + Send> ProjectOnce<K> for F {}

impl<K: Kv> Prepared<K> {
    /// Projects the event, as [`project`] does with its envelope.
    pub fn project(self, kv: &mut K, at: EventAt<'_>) -> Result<(), ProjectionError> {
        project_stream(kv, at);
        (self.project)(kv, at)
    }
}

/// Decodes a payload of the current schema straight from the deserializer it is read with (the
/// replay's fast path, `replay.rs`: the envelope's JSON is read once, its payload into the
/// domain event [`route`] names, without a `serde_json::Value` in between). A payload that does
/// not decode this way is an error here; the caller then projects the event with [`project`],
/// which names the reason.
pub struct DecodeCurrent<'a, K> {
    pub stream_kind: &'a str,
    pub event_type: &'a str,
    pub rows: PhantomData<fn(&mut K)>,
}

impl<'de, K: Kv + 'static> DeserializeSeed<'de> for DecodeCurrent<'_, K> {
    type Value = Prepared<K>;

    fn deserialize<D: Deserializer<'de>>(self, data: D) -> Result<Prepared<K>, D::Error> {
        let from_data = FromData {
            event_type: self.event_type,
            data,
            rows: PhantomData,
            input: PhantomData,
        };
        route(self.stream_kind, self.event_type, from_data).map_err(D::Error::custom)?
    }
}

struct FromData<'a, 'de, D, K> {
    event_type: &'a str,
    data: D,
    rows: PhantomData<fn(&mut K)>,
    /// The input the deserializer reads.
    input: PhantomData<&'de ()>,
}

impl<'de, D: Deserializer<'de>, K: 'static> Route<K> for FromData<'_, 'de, D, K> {
    type Out = Result<Prepared<K>, D::Error>;

    fn to<E: DomainEvent + Send + 'static>(self, project: Projector<K, E>) -> Self::Out {
        let event = E::deserialize(MapAccessDeserializer::new(Tagged {
            event_type: self.event_type,
            data: Some(self.data),
            next: 0,
        }))?;
        Ok(Prepared {
            project: Box::new(move |kv, at| project(kv, at, event)),
        })
    }
}

/// The map `{"type": event_type, "data": <the payload data reads>}`, as an adjacently tagged
/// event is read.
struct Tagged<'a, D> {
    event_type: &'a str,
    data: Option<D>,
    /// Entries handed out so far.
    next: u8,
}

impl<'de, D: Deserializer<'de>> MapAccess<'de> for Tagged<'_, D> {
    type Error = D::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, D::Error> {
        let key = match self.next {
            0 => "type",
            1 => "data",
            _ => return Ok(None),
        };
        seed.deserialize(StrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, D::Error> {
        self.next += 1;
        if self.next == 1 {
            return seed.deserialize(StrDeserializer::new(self.event_type));
        }
        match self.data.take() {
            Some(data) => seed.deserialize(data),
            None => Err(D::Error::custom("the payload was read already")),
        }
    }
}

/// Reads an aggregate's projected state.
pub fn load<A: Aggregate>(
    kv: &impl KvRead,
    stream: &str,
) -> Result<Option<StoredAggregate<A>>, StoreError> {
    kv.get(&keys::aggregate(stream))?
        .map(|bytes| decode_aggregate(stream, &bytes))
        .transpose()
}

/// Decodes an `a/` row.
pub fn decode_aggregate<A: Aggregate>(
    stream: &str,
    bytes: &[u8],
) -> Result<StoredAggregate<A>, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: format!("aggregate state of {stream}"),
        reason: e.to_string(),
    })
}

/// Encodes an `a/` row.
pub fn encode_aggregate<A: Aggregate>(stored: &StoredAggregate<A>) -> Result<Vec<u8>, StoreError> {
    Ok(serde_json::to_vec(stored)?)
}

/// Applies `event` to the stream's aggregate and writes it back at the event's version. Answers
/// what `after` takes from the new state (the ids the index rows need): the state itself goes to
/// the row, through the `Kv`'s aggregate hooks (the replay keeps it decoded).
pub(super) fn apply_aggregate<A: Aggregate + Send + 'static, T>(
    kv: &mut impl Kv,
    at: EventAt<'_>,
    event: &A::Event,
    after: impl FnOnce(&A) -> T,
) -> Result<T, ProjectionError> {
    let state = kv.take_aggregate::<A>(at.stream)?.map(|s| s.state);
    let state = A::apply(state, event);
    let kept = after(&state);
    let stored = StoredAggregate {
        stream_version: at.stream_version,
        state,
    };
    kv.put_aggregate(at.stream, stored)?;
    Ok(kept)
}

fn project_account<K: Kv>(
    kv: &mut K,
    at: EventAt<'_>,
    event: AccountEvent,
) -> Result<(), ProjectionError> {
    let account_id =
        apply_aggregate::<Account, _>(kv, at, &event, |after| after.account_id.clone())?;
    add_to_account_feed(kv, &account_id, at);
    let AccountEvent::Created { email, .. } = event;
    let key = keys::email(&email);
    if kv.get(&key)?.is_some() {
        return Err(ProjectionError::Unique {
            index: UniqueIndex::Email,
            value: email,
        });
    }
    kv.put(key, String::from(account_id).into_bytes());
    Ok(())
}

fn project_credential<K: Kv>(
    kv: &mut K,
    at: EventAt<'_>,
    event: CredentialEvent,
) -> Result<(), ProjectionError> {
    let (account_id, byok_id) = apply_aggregate::<Credential, _>(kv, at, &event, |after| {
        (after.account_id.clone(), after.byok_id.clone())
    })?;
    add_to_account_feed(kv, &account_id, at);
    webhooks::enqueue(kv, &account_id, at, &event)?;
    if let CredentialEvent::Registered(_) = event {
        kv.put(keys::byok_index(&account_id, &byok_id), Vec::new());
    }
    Ok(())
}

/// The policy's row, and its events in the account's feed like every other account event.
fn project_policy<K: Kv>(
    kv: &mut K,
    at: EventAt<'_>,
    event: PolicyEvent,
) -> Result<(), ProjectionError> {
    let account_id =
        apply_aggregate::<Policy, _>(kv, at, &event, |after| after.account_id.clone())?;
    add_to_account_feed(kv, &account_id, at);
    webhooks::enqueue(kv, &account_id, at, &event)?;
    Ok(())
}

pub(super) fn add_to_account_feed(kv: &mut impl Kv, account_id: &AccountId, at: EventAt<'_>) {
    kv.put(keys::account_feed(account_id, at.position), Vec::new());
}
