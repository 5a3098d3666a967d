//! Inline projections: every appended event updates these rows in the same atomic batch, and a
//! rebuild replays the whole log through the very same functions. Each row's layout is in
//! `keys.rs`.

use serde::{Deserialize, Serialize};

use super::kv::{Kv, KvRead};
use super::{StoreError, UniqueIndex, account_keys, keys, usage};
use crate::domain::AccountId;
use crate::domain::account::{Account, AccountEvent};
use crate::domain::account_key::{ApiKey, ApiKeyEvent};
use crate::domain::credential::{Credential, CredentialEvent};
use crate::es::{Aggregate, DecodeError, DomainEvent, Envelope};

/// The encoding of the projection rows this build writes. Bump it whenever a row's encoding
/// changes (an aggregate's fields, their names or order, a key layout under a projection
/// prefix): a store recorded at another format has its projections rebuilt from the log when it
/// opens, so `verify` keeps comparing like with like (docs/adr/0013). 2: the `a/` rows name
/// `stream_version` and the credential's `secret_version`, with its profile flattened. 3: each
/// API key has its own row (`a/account_key:<key_id>`) and the account's key index
/// (`i/keys/`); the account's row no longer holds its keys (docs/adr/0020). 4: credentials
/// carry their routing state (quota, bindings, model map) and the usage rows (`q/`) exist.
pub const FORMAT_VERSION: u32 = 4;

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

pub fn project(kv: &mut impl Kv, envelope: &Envelope) -> Result<(), ProjectionError> {
    let stream = envelope.stream.as_str();
    kv.put(
        keys::head(stream),
        envelope.stream_version.to_be_bytes().to_vec(),
    );
    kv.put(
        keys::stream_event(stream, envelope.stream_version),
        envelope.position.to_be_bytes().to_vec(),
    );
    match envelope.stream_id().kind() {
        Account::KIND => project_account(kv, envelope),
        Credential::KIND => project_credential(kv, envelope),
        ApiKey::KIND => account_keys::project_key(kv, envelope),
        // Usage batches are not in the account's feed (docs/adr/0022).
        crate::domain::usage::KIND => usage::project_usage(kv, envelope),
        other => Err(ProjectionError::UnknownStream(other.to_owned())),
    }
}

/// Reads an aggregate's projected state.
pub fn load<A: Aggregate>(
    kv: &impl KvRead,
    stream: &str,
) -> Result<Option<StoredAggregate<A>>, StoreError> {
    kv.get(&keys::aggregate(stream))?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                what: format!("aggregate state of {stream}"),
                reason: e.to_string(),
            })
        })
        .transpose()
}

fn apply_aggregate<A: Aggregate>(
    kv: &mut impl Kv,
    envelope: &Envelope,
) -> Result<(Option<A>, A, A::Event), ProjectionError> {
    let event = A::Event::from_envelope(envelope)?;
    let before = load::<A>(kv, &envelope.stream)?.map(|s| s.state);
    let after = A::apply(before.clone(), &event);
    let stored = StoredAggregate {
        stream_version: envelope.stream_version,
        state: &after,
    };
    let bytes = serde_json::to_vec(&stored).map_err(StoreError::from)?;
    kv.put(keys::aggregate(&envelope.stream), bytes);
    Ok((before, after, event))
}

fn project_account(kv: &mut impl Kv, envelope: &Envelope) -> Result<(), ProjectionError> {
    // Key events on an account's stream: the layout of stores written before keys had streams
    // of their own.
    if ApiKeyEvent::is_key_event(&envelope.event_type) {
        return account_keys::project_key_on_account_stream(kv, envelope);
    }
    let (_, after, event) = apply_aggregate::<Account>(kv, envelope)?;
    add_to_account_feed(kv, &after.account_id, envelope);
    let AccountEvent::Created { email, .. } = event;
    let key = keys::email(&email);
    if kv.get(&key)?.is_some() {
        return Err(ProjectionError::Unique {
            index: UniqueIndex::Email,
            value: email,
        });
    }
    kv.put(key, String::from(after.account_id).into_bytes());
    Ok(())
}

fn project_credential(kv: &mut impl Kv, envelope: &Envelope) -> Result<(), ProjectionError> {
    let (_, after, event) = apply_aggregate::<Credential>(kv, envelope)?;
    add_to_account_feed(kv, &after.account_id, envelope);
    if let CredentialEvent::Registered(_) = event {
        kv.put(
            keys::byok_index(&after.account_id, &after.byok_id),
            Vec::new(),
        );
    }
    Ok(())
}

pub(super) fn add_to_account_feed(kv: &mut impl Kv, account_id: &AccountId, envelope: &Envelope) {
    kv.put(
        keys::account_feed(account_id, envelope.position),
        Vec::new(),
    );
}
