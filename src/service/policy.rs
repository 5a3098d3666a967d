//! Routing policies: reading an account's policy and setting it, one scope at a time, on the
//! account's `policy:<account_id>` stream. An account that never set one reads as the default
//! (`byok_then_pool` everywhere) without a stream.

use super::clock::SharedClock;
use super::idempotency::Recording;
use super::{Executed, ServiceError, Target, execute};
use crate::domain::AccountId;
use crate::domain::policy::{self, Policy, PolicyCommand, PolicyError, PolicyMode, PolicyScope};
use crate::es::{Aggregate, EventMeta, StreamId};
use crate::storage::Store;

/// An account's policy with its revision (the stream's version; 0 before the first change),
/// and the scope a change was about (`None` for the account default, and on reads).
#[derive(Clone)]
pub struct VersionedPolicy {
    pub policy: Policy,
    pub revision: u64,
    pub scope: Option<PolicyScope>,
}

impl From<PolicyError> for ServiceError {
    fn from(error: PolicyError) -> Self {
        match error {
            PolicyError::Invalid { param, message } => ServiceError::Invalid { param, message },
        }
    }
}

fn stream(account_id: &AccountId) -> StreamId {
    StreamId::new(Policy::KIND, account_id.as_str())
}

pub struct Policies {
    store: Store,
    clock: SharedClock,
}

impl Policies {
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    pub fn get(&self, account_id: &AccountId) -> Result<VersionedPolicy, ServiceError> {
        Ok(match self.store.load::<Policy>(&stream(account_id))? {
            Some(stored) => VersionedPolicy {
                policy: stored.state,
                revision: stored.stream_version,
                scope: None,
            },
            None => VersionedPolicy {
                policy: Policy::of_account(account_id.clone()),
                revision: 0,
                scope: None,
            },
        })
    }

    /// Sets the mode of `scope` (the account default without one); `mode: None` removes the
    /// scoped policy, or puts the default back. Setting what is in force already changes
    /// nothing and is answered as it is.
    pub async fn set(
        &self,
        account_id: &AccountId,
        mode: Option<PolicyMode>,
        scope: Option<PolicyScope>,
        meta: &EventMeta,
        recording: &Recording<VersionedPolicy>,
    ) -> Result<VersionedPolicy, ServiceError> {
        let at = self.clock.now();
        let target = Target {
            stream: stream(account_id),
            if_match: None,
            meta,
            data_key: None,
            also: Vec::new(),
        };
        let decide = |state: Option<&Policy>| {
            let command = PolicyCommand::Set {
                account_id: account_id.clone(),
                mode,
                scope: scope.clone(),
                at,
            };
            Ok(policy::decide(state, command)?)
        };
        let answer = |executed: Executed<Policy>| {
            Ok(VersionedPolicy {
                policy: executed
                    .state
                    .unwrap_or_else(|| Policy::of_account(account_id.clone())),
                revision: executed.stream_version,
                scope: scope.clone(),
            })
        };
        execute(&self.store, target, decide, answer, recording).await
    }
}
