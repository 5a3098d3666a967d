//! Load → decide → append → answer. Where async handlers meet the store, and the one place that
//! turns domain and storage outcomes into service outcomes. Ids are minted (`ids`) and the time
//! is read (`clock`) here, and reach the domain inside commands.

pub mod accounts;
pub mod clock;
pub mod credentials;
pub mod cursor;
pub mod deliveries;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod ids;
pub mod page;
pub mod policy;
pub mod resolve;
pub mod rotation;
pub mod usage;
pub mod webhooks;

use idempotency::Recording;

use crate::domain::account::AccountError;
use crate::domain::credential::CredentialError;
use crate::es::{Aggregate, DomainEvent, EventMeta, ExpectedVersion, StreamId};
/// Whether the server may report itself ready, as the store judges it.
pub use crate::storage::Readiness;
use crate::storage::{
    AppendError, AppendRequest, DataKeyChange, Store, StoreError, StreamAppend, UniqueIndex,
};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{message}")]
    Invalid { param: String, message: String },
    #[error("the credential is revoked; revocation is final")]
    Revoked,
    /// The caller's key may do this operation, but not this change of it (docs/adr/0036).
    #[error("{message}")]
    Forbidden { param: String, message: String },
    /// A rotation the credential's state refuses: one of `CredentialError::StageUnknown`,
    /// `StageExpired`, `StageProbeFailed`, `NothingToRollBack`.
    #[error("{0}")]
    Rotation(CredentialError),
    #[error("{0} is already registered")]
    Taken(Taken),
    #[error("the resource is at version {actual}, not the expected {expected}")]
    VersionConflict { expected: u64, actual: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a create collided with; callers choose their answer by matching it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// Another account has this email (the `i/email/` unique index).
    Email,
    /// The account's stream already exists.
    Account,
    /// The credential's stream already exists.
    Credential,
    /// The API key's stream already exists.
    Key,
    /// A usage request id is recorded already (the usage service answers it per record).
    UsageRequest,
    /// The webhook's stream already exists.
    Webhook,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Email => "email",
            Self::Account => "account",
            Self::Credential => "credential",
            Self::Key => "API key",
            Self::UsageRequest => "usage request id",
            Self::Webhook => "webhook",
        })
    }
}

impl From<UniqueIndex> for Taken {
    fn from(index: UniqueIndex) -> Self {
        match index {
            UniqueIndex::Email => Self::Email,
            UniqueIndex::UsageRequest => Self::UsageRequest,
        }
    }
}

impl From<AccountError> for ServiceError {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::AlreadyExists => ServiceError::Taken(Taken::Account),
            AccountError::NotFound => ServiceError::NotFound("no such account"),
            AccountError::KeyNotFound => ServiceError::NotFound("no such API key"),
            AccountError::KeyExists => ServiceError::Taken(Taken::Key),
            AccountError::Invalid { param, message } => ServiceError::Invalid {
                param: param.to_owned(),
                message,
            },
        }
    }
}

impl From<CredentialError> for ServiceError {
    fn from(error: CredentialError) -> Self {
        match error {
            CredentialError::AlreadyExists => ServiceError::Taken(Taken::Credential),
            CredentialError::NotFound => ServiceError::NotFound("no such credential"),
            CredentialError::Revoked => ServiceError::Revoked,
            e @ (CredentialError::StageUnknown
            | CredentialError::StageExpired
            | CredentialError::StageProbeFailed
            | CredentialError::NothingToRollBack) => ServiceError::Rotation(e),
            CredentialError::AddressNeedsProof { param, message } => {
                ServiceError::Forbidden { param, message }
            }
            CredentialError::Invalid { param, message } => ServiceError::Invalid { param, message },
        }
    }
}

impl From<crate::domain::webhook::WebhookError> for ServiceError {
    fn from(error: crate::domain::webhook::WebhookError) -> Self {
        use crate::domain::webhook::WebhookError;
        match error {
            WebhookError::AlreadyExists => ServiceError::Taken(Taken::Webhook),
            WebhookError::NotFound => ServiceError::NotFound("no such webhook"),
            WebhookError::Invalid { param, message } => ServiceError::Invalid { param, message },
        }
    }
}

impl From<AppendError> for ServiceError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Conflict {
                expected, actual, ..
            } => ServiceError::VersionConflict {
                expected: match expected {
                    ExpectedVersion::Exact(v) => v,
                    _ => 0,
                },
                actual,
            },
            AppendError::Unique { index, .. } => ServiceError::Taken(index.into()),
            AppendError::Invalid(reason) => ServiceError::Store(StoreError::Corrupt {
                what: "new event".into(),
                reason,
            }),
            AppendError::Store(e) => ServiceError::Store(e),
        }
    }
}

/// How many times a command is decided again when another writer got to the stream first. Only
/// commands without a caller-pinned version retry: with `If-Match` the conflict is the answer.
const RETRIES: usize = 8;

/// Where a command goes and under which conditions.
pub struct Target<'a> {
    pub stream: StreamId,
    /// The stream version the caller saw (`If-Match`); a different current version is a conflict.
    pub if_match: Option<u64>,
    pub meta: &'a EventMeta,
    /// A data key to store or destroy with the events, if any are decided.
    pub data_key: Option<DataKeyChange>,
    /// Events of other streams to append with the decided ones, all or nothing (an account's
    /// first key, on the key's own stream).
    pub also: Vec<StreamAppend>,
}

/// An aggregate after a command, with its stream version.
pub struct Executed<A> {
    pub state: Option<A>,
    pub stream_version: u64,
}

/// Loads an aggregate, decides, and appends with the version it decided on. Answers what
/// `answer` makes of the state after the command (unchanged when it decided on no events).
///
/// The answer is made before the append, from the state the events will produce, so that
/// `recording` can seal it into the same append: the idempotency record of the request is then
/// durable exactly when its events are (docs/adr/0020). `answer` may run once per attempt.
pub async fn execute<A: Aggregate, T>(
    store: &Store,
    target: Target<'_>,
    decide: impl Fn(Option<&A>) -> Result<Vec<A::Event>, ServiceError>,
    answer: impl Fn(Executed<A>) -> Result<T, ServiceError>,
    recording: &Recording<T>,
) -> Result<T, ServiceError> {
    let keys = target.data_key.clone();
    let decide = |state: Option<&A>| Ok((decide(state)?, keys.clone()));
    execute_keyed(store, target, decide, answer, recording).await
}

/// [`execute`] where the data-key change depends on the state decided on (a rotation seals
/// for the version the state names; retiring a version destroys that version's key): `decide`
/// answers it with the events, and `target.data_key` is not used.
pub async fn execute_keyed<A: Aggregate, T>(
    store: &Store,
    target: Target<'_>,
    decide: impl Fn(Option<&A>) -> Result<(Vec<A::Event>, Option<DataKeyChange>), ServiceError>,
    answer: impl Fn(Executed<A>) -> Result<T, ServiceError>,
    recording: &Recording<T>,
) -> Result<T, ServiceError> {
    let Target {
        stream,
        if_match,
        meta,
        data_key: _,
        also,
    } = target;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let loaded = store.load::<A>(&stream)?;
        let stream_version = loaded.as_ref().map_or(0, |s| s.stream_version);
        if let Some(expected) = if_match
            && expected != stream_version
        {
            return Err(ServiceError::VersionConflict {
                expected,
                actual: stream_version,
            });
        }
        let state = loaded.map(|s| s.state);
        let (events, data_key) = decide(state.as_ref())?;
        if events.is_empty() {
            return answer(Executed {
                state,
                stream_version,
            });
        }
        let new_events = events
            .iter()
            .map(DomainEvent::to_new_event)
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::from)?;
        // What the append makes of the stream if it is accepted: the writer gives the events
        // the versions after the one expected.
        let answered = answer(Executed {
            state: events.iter().fold(state, |s, e| Some(A::apply(s, e))),
            stream_version: stream_version + events.len() as u64,
        })?;
        let record = recording.seal(&answered)?;
        let carries_record = record.is_some();
        let request = AppendRequest {
            stream: stream.clone(),
            expected: if stream_version == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(stream_version)
            },
            events: new_events,
            meta: meta.clone(),
            data_key,
            also: also.clone(),
            idempotency: record,
        };
        match store.append(request).await {
            Ok(appended) => {
                if carries_record {
                    recording.recorded();
                }
                if let Some(last) = appended.last() {
                    settle(store, last.position).await;
                }
                return Ok(answered);
            }
            Err(AppendError::Conflict { .. }) if if_match.is_none() && attempt < RETRIES => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long a mutation waits for the in-memory follower of the log (resolve's routing state) to
/// apply its events before it answers anyway.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Waits, within [`SETTLE_TIMEOUT`], until the process's follower of the log has applied
/// `position`, so the caller's next resolve sees its write. Without a follower (the CLI, tests
/// on a bare store) there is nothing to wait for; a timeout is counted, never an error: the
/// write is durable either way.
pub(super) async fn settle(store: &Store, position: u64) {
    let Some(mut applied) = store.applied() else {
        return;
    };
    let reached = tokio::time::timeout(SETTLE_TIMEOUT, applied.wait_for(|p| *p >= position)).await;
    if !matches!(reached, Ok(Ok(_))) {
        crate::metrics::count(|m| m.settle_timeouts.inc());
    }
}
