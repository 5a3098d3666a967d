//! The credential aggregate: one provider credential a tenant brought (BYOK), its routing
//! configuration and its lifecycle. One stream per credential (`byok:<byok_id>`).
//!
//! Pure: ids, times, the sealed secret (ciphertext, opaque here) and its hint arrive in commands.
//! The only plaintext secrets this module sees are in [`RegisterRequest`], which
//! [`prepare_register`] validates and hands back for sealing; no event, error message or `Debug`
//! output carries one.
//!
//! This file holds the state ([`Credential`] and the [`CredentialProfile`] it shares with its
//! command and event), its limits and the total `apply`; beside it:
//! - `error`: [`CredentialError`];
//! - `validate`: the register request, the profile's validation and the field checks;
//! - `command`: the commands;
//! - `event`: the events, as stored;
//! - `decide`: command to events.
//!
//! Must not import crypto, storage, service or HTTP. Depends on `domain::providers`, never the
//! reverse.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::health::{self, Health, HealthCause};
use crate::domain::usage::{Quota, QuotaExceeded};
use crate::domain::{AccountId, CredentialId, providers};
use crate::es::Aggregate;

mod command;
mod decide;
mod error;
mod event;
mod probe;
mod rotation;
#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod testing;
mod validate;

pub use command::{CredentialCommand, CredentialPatch, NewCredential};
pub use decide::decide;
pub use error::CredentialError;
pub use event::{Bound, CredentialEvent, QuotaExceededEvent, Registered, Tested, Unbound, Updated};
pub use probe::{ProbeError, TestResult};
pub use rotation::{
    NewSecret, PreviousSecret, Rotated, RotationMethod, RotationStaged, SecretRetired, Stage,
    key_record, key_record_owner, prepare_secret, retirement_due,
};
pub use validate::{
    RegisterRequest, Registration, prepare_register, validate_alias, validate_label,
    validate_model_map, validate_models, validate_name, validate_weight,
};

/// Stream kind, never renamed: streams are `byok:<byok_id>`.
pub const KIND: &str = "byok";
pub const MAX_ALIAS_LEN: usize = 64;
pub const MAX_LABEL_LEN: usize = 128;
pub const MIN_WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 1000;
pub const DEFAULT_WEIGHT: u32 = 100;
/// Most entries in `models` or `blacklisted_models`.
pub const MAX_MODELS: usize = 256;
/// Longest model, capability or module name.
pub const MAX_NAME_LEN: usize = 128;
/// Most entries in a credential's `model_map`.
pub const MAX_MODEL_MAP: usize = 256;
/// Longest provider-side model id in a `model_map` (a Bedrock inference-profile ARN, an Azure
/// deployment, a fine-tuned model id).
pub const MAX_PROVIDER_MODEL_LEN: usize = 256;
/// The secret version a credential is registered with; each rotation adds one.
pub const FIRST_SECRET_VERSION: u32 = 1;
/// Longest secret hint a command may carry: anything longer is a bug that could leak a secret.
pub const MAX_HINT_LEN: usize = 4;

/// Lifecycle state. `revoked` is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    /// Served by resolve (within quota and bindings).
    Active,
    /// Kept, but never served; `enable` brings it back.
    Disabled,
    /// Gone for good: its data key is destroyed and it can never be served again.
    Revoked,
}

/// What a credential serves. A binding matches a request when every field it sets equals the
/// request's; at least one of `capability` or `module` is set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Binding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Binding {
    /// Whether unbinding `self` (its `capability` and `module`; its `model` is not looked at)
    /// removes `other`: both fields equal, whatever `other`'s model.
    pub fn selects(&self, other: &Binding) -> bool {
        self.capability == other.capability && self.module == other.module
    }
}

/// The non-secret description of a credential: which provider, how it is called, what it
/// serves and where its traffic is processed. One definition for every place that holds it:
/// the `Register` command carries it, and `byok.registered` and the aggregate embed it with
/// `#[serde(flatten)]`, so its fields sit at the top level of their JSON, in this order.
/// Validated by [`CredentialProfile::validated`], which also derives `residency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialProfile {
    pub provider: String,
    pub alias: String,
    pub label: Option<String>,
    pub base_url: Option<String>,
    pub declared_region: Option<String>,
    /// What resolve's `residency` filter matches: `declared_region`, else the provider's.
    /// Derived on validation, never taken from a command.
    pub residency: String,
    /// Allow-list, sorted; empty means every model.
    pub models: Vec<String>,
    /// Deny-list, sorted; wins over `models`.
    pub blacklisted_models: Vec<String>,
    pub weight: u32,
    /// Sorted and without duplicates; empty means "matches every request at the lowest rank".
    pub bindings: Vec<Binding>,
    /// The provider's non-secret credential fields (azure `endpoint`, bedrock `region`…); a
    /// secret field here is refused.
    pub settings: BTreeMap<String, String>,
    /// Requested model -> the provider's id for it (an Azure deployment, a Bedrock inference
    /// profile, a fine-tuned id). Empty means every model is sent as requested. Left out of the
    /// JSON when empty, so the events recorded before it existed encode back to their bytes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_map: BTreeMap<String, String>,
}

/// The state of one credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub byok_id: CredentialId,
    pub account_id: AccountId,
    #[serde(flatten)]
    pub profile: CredentialProfile,
    pub state: CredentialState,
    /// The secret's version: 1 at registration, +1 on each rotation. Bound into the sealed
    /// secret's associated data; not the stream version (the revision).
    pub secret_version: u32,
    /// Last four characters of the identifying secret (may be empty; see
    /// [`providers::secret_hint`]).
    pub secret_hint: String,
    /// The sealed secret fields (base64 ciphertext); opaque here.
    pub sealed_secret: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    // Quotas (docs/usage.md): the limit, and the last time it was found reached.
    /// The credential's quota, if it has one (`byok.quota_set`).
    #[serde(default)]
    pub quota: Option<Quota>,
    /// The last `byok.quota_exceeded` since the quota was last set; resolve leaves the
    /// credential out while its `until` is ahead.
    #[serde(default)]
    pub quota_exceeded: Option<QuotaExceeded>,
    /// The last probe (`byok.tested`), of whichever secret version was current then.
    #[serde(default)]
    pub last_test: Option<TestResult>,
    // Rotation (`rotation.rs`).
    /// The candidate secret `rotate/stage` stored, until committed, replaced or expired.
    #[serde(default)]
    pub pending_rotation: Option<Stage>,
    /// The secret the last rotation replaced, restorable until its `rollback_until`.
    #[serde(default)]
    pub previous_secret: Option<PreviousSecret>,
    /// The highest secret version this credential ever had (staged ones included), so that
    /// no version number is sealed twice.
    #[serde(default = "first_secret_version")]
    pub latest_secret_version: u32,
    // Health (docs/health.md): the last `byok.health_changed`.
    /// `unknown` until the first probe or usage outcome that says something of the secret.
    #[serde(default)]
    pub health: Health,
    /// The cooldown end of `rate_limited`; resolve leaves the credential out until then.
    #[serde(default)]
    pub health_until: Option<DateTime<Utc>>,
    /// The time of the evidence behind the last change of health.
    #[serde(default)]
    pub health_changed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub health_cause: Option<HealthCause>,
    /// The probe error or usage outcome behind `failing` or `rate_limited`.
    #[serde(default)]
    pub health_error: Option<ProbeError>,
}

fn first_secret_version() -> u32 {
    FIRST_SECRET_VERSION
}

impl Credential {
    pub fn is_revoked(&self) -> bool {
        self.state == CredentialState::Revoked
    }

    /// The health as [`health::assess`] compares evidence with it.
    pub fn current_health(&self) -> health::Current {
        health::Current {
            health: self.health,
            until: self.health_until,
            changed_at: self.health_changed_at,
        }
    }

    /// Moves to `state` at `at`. Revocation is final, even against a log that says otherwise.
    fn moved_to(mut self, state: CredentialState, at: DateTime<Utc>) -> Self {
        if !self.is_revoked() {
            self.state = state;
        }
        self.updated_at = at;
        self
    }
}

impl Aggregate for Credential {
    const KIND: &'static str = KIND;
    type Event = CredentialEvent;

    fn apply(state: Option<Self>, event: &CredentialEvent) -> Self {
        match (state, event) {
            (_, CredentialEvent::Registered(r)) => Credential {
                byok_id: r.byok_id.clone(),
                account_id: r.account_id.clone(),
                profile: r.profile.clone(),
                state: CredentialState::Active,
                secret_version: FIRST_SECRET_VERSION,
                secret_hint: r.secret_hint.clone(),
                sealed_secret: r.sealed_secret.clone(),
                created_at: r.created_at,
                updated_at: r.created_at,
                quota: None,
                quota_exceeded: None,
                last_test: None,
                pending_rotation: None,
                previous_secret: None,
                latest_secret_version: FIRST_SECRET_VERSION,
                health: Health::Unknown,
                health_until: None,
                health_changed_at: None,
                health_cause: None,
                health_error: None,
            },
            // An event before its stream's registration cannot be appended (decide refuses
            // it), so a log holding one was written by something else: keep a revoked shell,
            // which nothing can serve, rather than losing the events that follow.
            (None, event) => Self::apply(Some(shell()), event),
            (Some(mut c), CredentialEvent::Updated(u)) => {
                u.apply_to(&mut c.profile);
                c.updated_at = u.updated_at;
                c
            }
            (Some(c), CredentialEvent::Enabled { enabled_at, .. }) => {
                c.moved_to(CredentialState::Active, *enabled_at)
            }
            (Some(c), CredentialEvent::Disabled { disabled_at, .. }) => {
                c.moved_to(CredentialState::Disabled, *disabled_at)
            }
            // Revocation destroys every secret version's key: nothing is left to stage or
            // roll back to.
            (Some(mut c), CredentialEvent::Revoked { revoked_at, .. }) => {
                c.pending_rotation = None;
                c.previous_secret = None;
                c.moved_to(CredentialState::Revoked, *revoked_at)
            }
            // Bindings.
            (Some(mut c), CredentialEvent::Bound(b)) => {
                c.profile.bindings.push(b.binding.clone());
                c.profile.bindings.sort();
                c.profile.bindings.dedup();
                c.updated_at = b.bound_at;
                c
            }
            (Some(mut c), CredentialEvent::Unbound(u)) => {
                c.profile.bindings.retain(|b| !u.binding.selects(b));
                c.updated_at = u.unbound_at;
                c
            }
            // Quotas: setting one clears the last exceedance; an exceedance is recorded as is.
            (Some(mut c), CredentialEvent::QuotaSet { quota, set_at, .. }) => {
                c.quota = quota.clone();
                c.quota_exceeded = None;
                c.updated_at = *set_at;
                c
            }
            (Some(mut c), CredentialEvent::QuotaExceeded(e)) => {
                c.quota_exceeded = Some(QuotaExceeded {
                    window_start: e.window_start,
                    until: e.until,
                });
                c
            }
            // Probes: the last one is kept; it changes nothing else (`updated_at` included).
            (Some(mut c), CredentialEvent::Tested(t)) => {
                c.last_test = Some(t.result.clone());
                c
            }
            // Rotation.
            (Some(c), CredentialEvent::Rotated(r)) => rotation::apply_rotated(c, r),
            (Some(c), CredentialEvent::RotationStaged(s)) => rotation::apply_staged(c, s),
            (Some(c), CredentialEvent::SecretRetired(r)) => rotation::apply_retired(c, r),
            // Health: the change as recorded; like a probe, it changes nothing else.
            (Some(mut c), CredentialEvent::HealthChanged(h)) => {
                c.health = h.health;
                c.health_until = h.until;
                c.health_changed_at = Some(h.changed_at);
                c.health_cause = Some(h.cause);
                c.health_error = h.error;
                c
            }
        }
    }
}

fn shell() -> Credential {
    Credential {
        byok_id: CredentialId::unnamed(),
        account_id: AccountId::unnamed(),
        profile: CredentialProfile {
            provider: String::new(),
            alias: String::new(),
            label: None,
            base_url: None,
            declared_region: None,
            residency: providers::GLOBAL.to_owned(),
            models: vec![],
            blacklisted_models: vec![],
            weight: DEFAULT_WEIGHT,
            bindings: vec![],
            settings: BTreeMap::new(),
            model_map: BTreeMap::new(),
        },
        state: CredentialState::Revoked,
        secret_version: FIRST_SECRET_VERSION,
        secret_hint: String::new(),
        sealed_secret: String::new(),
        created_at: DateTime::<Utc>::UNIX_EPOCH,
        updated_at: DateTime::<Utc>::UNIX_EPOCH,
        quota: None,
        quota_exceeded: None,
        last_test: None,
        pending_rotation: None,
        previous_secret: None,
        latest_secret_version: FIRST_SECRET_VERSION,
        health: Health::Unknown,
        health_until: None,
        health_changed_at: None,
        health_cause: None,
        health_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credential::testing::{byok, given, t};

    #[test]
    fn apply_is_total_on_a_stream_without_registration() {
        let c = given(&[CredentialEvent::Enabled {
            byok_id: byok(),
            enabled_at: t(1),
        }])
        .unwrap();
        assert_eq!(c.state, CredentialState::Revoked);
    }
}
