//! The routing policy of an account: whether a request that no credential of the account can
//! serve falls back to the gateway's shared pool (`byok_then_pool`, the default) or fails
//! (`byok_only`), for the whole account and per scope (`{capability?, module?}`). One stream per
//! account (`policy:<account_id>`), holding `policy.set` events; an account that never set one
//! has no stream and the default policy.
//!
//! The most specific scope that matches a request wins: capability and module > capability
//! only > module only > the account default ([`Policy::effective`]). Removing a scoped policy
//! is `policy.set` with `mode: null` (docs/adr/0021).
//!
//! Pure: must not import crypto, storage, service or HTTP.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::AccountId;
use super::credential::{CredentialError, validate_name};
use crate::es::{Aggregate, DomainEvent};

/// Stream kind, never renamed: streams are `policy:<account_id>`.
pub const KIND: &str = "policy";
/// Most scoped policies an account may hold.
pub const MAX_SCOPED: usize = 1000;

/// What a policy command can be refused with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// `param` is the dotted path of the field (`scope.capability`).
    #[error("{message}")]
    Invalid { param: String, message: String },
}

impl PolicyError {
    fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.to_owned(),
            message: message.into(),
        }
    }
}

/// The name rule is the credential's: a scope names what a binding names.
impl From<CredentialError> for PolicyError {
    fn from(error: CredentialError) -> Self {
        match error {
            CredentialError::Invalid { param, message } => Self::Invalid { param, message },
            other => Self::invalid("scope", other.to_string()),
        }
    }
}

/// What happens when none of the account's credentials can serve a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Fail: only the account's own credentials may serve.
    ByokOnly,
    /// Fall back to the gateway's shared pool (the default).
    ByokThenPool,
}

impl PolicyMode {
    /// The mode of an account, or scope, that never set one.
    pub const DEFAULT: PolicyMode = PolicyMode::ByokThenPool;
}

/// Which requests a scoped policy governs: those whose capability and module equal every field
/// it sets. At least one is set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyScope {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl PolicyScope {
    /// Checks a scope; errors name `scope.capability` or `scope.module`.
    pub fn validated(self) -> Result<Self, PolicyError> {
        if self.capability.is_none() && self.module.is_none() {
            return Err(PolicyError::invalid(
                "scope",
                "a scope names a capability, a module or both; leave scope out for the \
                 account default",
            ));
        }
        for (param, value) in [
            ("scope.capability", &self.capability),
            ("scope.module", &self.module),
        ] {
            if let Some(value) = value {
                validate_name(param, value)?;
            }
        }
        Ok(self)
    }

    /// Whether the scope governs a request for `capability` and `module`.
    pub fn matches(&self, capability: Option<&str>, module: Option<&str>) -> bool {
        let equal = |set: &Option<String>, asked: Option<&str>| {
            set.as_deref().is_none_or(|s| Some(s) == asked)
        };
        equal(&self.capability, capability) && equal(&self.module, module)
    }

    /// Higher is more specific: both fields 3, capability only 2, module only 1.
    pub fn rank(&self) -> u8 {
        match (&self.capability, &self.module) {
            (Some(_), Some(_)) => 3,
            (Some(_), None) => 2,
            (None, Some(_)) => 1,
            (None, None) => 0,
        }
    }
}

/// One scoped policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedPolicy {
    pub scope: PolicyScope,
    pub mode: PolicyMode,
}

/// The state of `policy:<account_id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub account_id: AccountId,
    /// The account default.
    pub default: PolicyMode,
    /// Sorted by scope, one entry per scope.
    pub scoped: Vec<ScopedPolicy>,
    pub updated_at: DateTime<Utc>,
}

impl Policy {
    /// The policy of an account that never set one.
    pub fn of_account(account_id: AccountId) -> Self {
        Self {
            account_id,
            default: PolicyMode::DEFAULT,
            scoped: Vec::new(),
            updated_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    /// The policy in force for a request for `capability` and `module`: the matching scoped
    /// policy with the most specific scope (at most one matches at each rank, since every field
    /// a scope sets must equal the request's), else the account default (answered with no
    /// scope).
    pub fn effective(
        &self,
        capability: Option<&str>,
        module: Option<&str>,
    ) -> (PolicyMode, Option<&PolicyScope>) {
        self.scoped
            .iter()
            .filter(|p| p.scope.matches(capability, module))
            .max_by_key(|p| p.scope.rank())
            .map_or((self.default, None), |p| (p.mode, Some(&p.scope)))
    }

    /// The mode set for exactly `scope` (`None`: the account default), if one is.
    fn mode_of(&self, scope: Option<&PolicyScope>) -> Option<PolicyMode> {
        match scope {
            None => Some(self.default),
            Some(scope) => self
                .scoped
                .iter()
                .find(|p| p.scope == *scope)
                .map(|p| p.mode),
        }
    }
}

/// [`Policy::effective`] for an account that may have no policy stream (then `byok_then_pool`).
pub fn effective<'a>(
    policy: Option<&'a Policy>,
    capability: Option<&str>,
    module: Option<&str>,
) -> (PolicyMode, Option<&'a PolicyScope>) {
    policy.map_or((PolicyMode::DEFAULT, None), |p| {
        p.effective(capability, module)
    })
}

pub enum PolicyCommand {
    /// Sets the mode of `scope` (the account default without one). `mode: None` removes the
    /// scoped policy (the scope then inherits), or puts the default back to `byok_then_pool`.
    Set {
        account_id: AccountId,
        mode: Option<PolicyMode>,
        scope: Option<PolicyScope>,
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PolicyEvent {
    /// `mode: null` removes the scoped policy (or resets the default).
    #[serde(rename = "policy.set")]
    Set {
        account_id: AccountId,
        mode: Option<PolicyMode>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<PolicyScope>,
        set_at: DateTime<Utc>,
    },
}

impl DomainEvent for PolicyEvent {}

impl Aggregate for Policy {
    const KIND: &'static str = KIND;
    type Event = PolicyEvent;

    fn apply(state: Option<Self>, event: &PolicyEvent) -> Self {
        let PolicyEvent::Set {
            account_id,
            mode,
            scope,
            set_at,
        } = event;
        let mut policy = state.unwrap_or_else(|| Policy::of_account(account_id.clone()));
        match (scope, mode) {
            (None, mode) => policy.default = mode.unwrap_or(PolicyMode::DEFAULT),
            (Some(scope), None) => policy.scoped.retain(|p| p.scope != *scope),
            (Some(scope), Some(mode)) => {
                match policy.scoped.iter_mut().find(|p| p.scope == *scope) {
                    Some(existing) => existing.mode = *mode,
                    None => {
                        policy.scoped.push(ScopedPolicy {
                            scope: scope.clone(),
                            mode: *mode,
                        });
                        policy.scoped.sort_by(|a, b| a.scope.cmp(&b.scope));
                    }
                }
            }
        }
        policy.updated_at = *set_at;
        policy
    }
}

/// Decides what a command does to the account's policy. Setting what is already in force for
/// that exact scope, or removing a scoped policy that is not there, changes nothing.
pub fn decide(
    state: Option<&Policy>,
    command: PolicyCommand,
) -> Result<Vec<PolicyEvent>, PolicyError> {
    let PolicyCommand::Set {
        account_id,
        mode,
        scope,
        at,
    } = command;
    let scope = scope.map(PolicyScope::validated).transpose()?;
    let current = state.map_or_else(|| Policy::of_account(account_id.clone()), |p| p.clone());
    let now = current.mode_of(scope.as_ref());
    let unchanged = match (&scope, mode) {
        (None, mode) => now == Some(mode.unwrap_or(PolicyMode::DEFAULT)),
        (Some(_), mode) => now == mode,
    };
    if unchanged {
        return Ok(vec![]);
    }
    if scope.is_some() && now.is_none() && current.scoped.len() >= MAX_SCOPED {
        return Err(PolicyError::invalid(
            "scope",
            format!("an account holds at most {MAX_SCOPED} scoped policies; remove one first"),
        ));
    }
    Ok(vec![PolicyEvent::Set {
        account_id,
        mode,
        scope,
        set_at: at,
    }])
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn account() -> AccountId {
        AccountId::from_ulid(1)
    }

    fn scope(capability: Option<&str>, module: Option<&str>) -> PolicyScope {
        PolicyScope {
            capability: capability.map(Into::into),
            module: module.map(Into::into),
        }
    }

    fn set(mode: Option<PolicyMode>, scope: Option<PolicyScope>) -> PolicyCommand {
        PolicyCommand::Set {
            account_id: account(),
            mode,
            scope,
            at: t(1),
        }
    }

    /// Decides each command in turn on the state the ones before left.
    fn run(commands: Vec<PolicyCommand>) -> (Option<Policy>, Vec<PolicyEvent>) {
        let mut state = None;
        let mut all = Vec::new();
        for command in commands {
            let events = decide(state.as_ref(), command).unwrap();
            for e in &events {
                state = Some(Policy::apply(state, e));
            }
            all.extend(events);
        }
        (state, all)
    }

    use PolicyMode::{ByokOnly, ByokThenPool};

    #[test]
    fn no_policy_is_byok_then_pool() {
        assert_eq!(effective(None, Some("chat"), None), (ByokThenPool, None));
        let (state, events) = run(vec![set(Some(ByokThenPool), None)]);
        assert!(
            state.is_none() && events.is_empty(),
            "setting the default is a no-op"
        );
    }

    #[test]
    fn the_most_specific_scope_wins() {
        let both = scope(Some("chat"), Some("support"));
        let cap = scope(Some("chat"), None);
        let module = scope(None, Some("support"));
        let (state, events) = run(vec![
            set(Some(ByokOnly), None),
            set(Some(ByokThenPool), Some(module.clone())),
            set(Some(ByokOnly), Some(cap.clone())),
            set(Some(ByokThenPool), Some(both.clone())),
        ]);
        assert_eq!(events.len(), 4);
        let p = state.unwrap();
        assert_eq!(
            p.effective(Some("chat"), Some("support")),
            (ByokThenPool, Some(&both))
        );
        assert_eq!(
            p.effective(Some("chat"), Some("sales")),
            (ByokOnly, Some(&cap))
        );
        assert_eq!(p.effective(Some("chat"), None), (ByokOnly, Some(&cap)));
        assert_eq!(
            p.effective(Some("embed"), Some("support")),
            (ByokThenPool, Some(&module))
        );
        assert_eq!(p.effective(Some("embed"), None), (ByokOnly, None));
        assert_eq!(p.effective(None, None), (ByokOnly, None));
        // A module-only request is not governed by a capability scope.
        assert_eq!(
            p.effective(None, Some("support")),
            (ByokThenPool, Some(&module))
        );
    }

    #[test]
    fn a_null_mode_removes_a_scoped_policy_or_resets_the_default() {
        let cap = scope(Some("chat"), None);
        let (state, _) = run(vec![
            set(Some(ByokOnly), None),
            set(Some(ByokThenPool), Some(cap.clone())),
            set(None, Some(cap.clone())),
        ]);
        let p = state.unwrap();
        assert!(p.scoped.is_empty());
        assert_eq!(p.effective(Some("chat"), None), (ByokOnly, None));
        let (state, events) = run(vec![
            set(Some(ByokOnly), None),
            set(None, Some(cap.clone())),
            set(None, None),
        ]);
        assert_eq!(
            events.len(),
            2,
            "removing a scope that is not there is a no-op"
        );
        assert_eq!(state.unwrap().default, ByokThenPool);
    }

    #[test]
    fn setting_a_scope_again_replaces_its_mode() {
        let cap = scope(Some("chat"), None);
        let (state, events) = run(vec![
            set(Some(ByokOnly), Some(cap.clone())),
            set(Some(ByokOnly), Some(cap.clone())),
            set(Some(ByokThenPool), Some(cap.clone())),
        ]);
        assert_eq!(events.len(), 2);
        let p = state.unwrap();
        assert_eq!(
            p.scoped,
            [ScopedPolicy {
                scope: cap,
                mode: ByokThenPool
            }]
        );
    }

    #[test]
    fn scopes_are_validated() {
        for (s, expected) in [
            (scope(None, None), "scope"),
            (scope(Some(""), None), "scope.capability"),
            (scope(Some("chat"), Some("two words")), "scope.module"),
        ] {
            match decide(None, set(Some(ByokOnly), Some(s))) {
                Err(PolicyError::Invalid { param, .. }) => assert_eq!(param, expected),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn an_account_holds_a_bounded_number_of_scoped_policies() {
        let mut state = Policy::of_account(account());
        state.scoped = (0..MAX_SCOPED)
            .map(|i| ScopedPolicy {
                scope: scope(Some(&format!("c{i}")), None),
                mode: ByokOnly,
            })
            .collect();
        let one_more = decide(
            Some(&state),
            set(Some(ByokOnly), Some(scope(Some("new"), None))),
        );
        assert!(
            matches!(one_more, Err(PolicyError::Invalid { ref param, .. }) if param == "scope")
        );
        // Changing or removing one of them still works.
        let existing = scope(Some("c1"), None);
        assert_eq!(
            decide(
                Some(&state),
                set(Some(ByokThenPool), Some(existing.clone()))
            )
            .unwrap()
            .len(),
            1
        );
        assert_eq!(
            decide(Some(&state), set(None, Some(existing)))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn the_event_type_and_payload_are_stable() {
        let event = PolicyEvent::Set {
            account_id: account(),
            mode: Some(ByokOnly),
            scope: Some(scope(Some("chat"), None)),
            set_at: t(1),
        };
        let new = event.to_new_event().unwrap();
        assert_eq!(new.event_type, "policy.set");
        assert_eq!(
            new.data,
            serde_json::json!({"account_id": "acct_00000000000000000000000001",
                "mode": "byok_only", "scope": {"capability": "chat"},
                "set_at": "2023-11-14T22:13:21Z"})
        );
        assert_eq!(<Policy as Aggregate>::KIND, "policy");
    }
}
