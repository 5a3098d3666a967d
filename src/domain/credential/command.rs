//! The commands a credential decides on. Ids, times, the sealed secret and its hint are decided
//! outside the pure core and arrive here.
//!
//! Must not import crypto, storage or HTTP.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::rotation::NewSecret;
use super::{Binding, CredentialProfile, TestResult};
use crate::domain::usage::{Exceedance, Quota};
use crate::domain::{AccountId, CredentialId, StageId};

/// A credential to register, with everything decided outside the pure core.
#[derive(Clone, Debug)]
pub struct NewCredential {
    pub byok_id: CredentialId,
    pub account_id: AccountId,
    /// Validated again by `decide`, which derives its residency.
    pub profile: CredentialProfile,
    /// Base64 ciphertext of the secret fields.
    pub sealed_secret: String,
    /// At most four characters, from
    /// [`ProviderCredentials::hint`](crate::domain::providers::ProviderCredentials::hint).
    pub secret_hint: String,
    pub at: DateTime<Utc>,
    /// A probe of the secret made before it was sealed (`register` with `test: true`),
    /// recorded as `byok.tested` in the same append.
    pub tested: Option<TestResult>,
}

/// A partial update: each field present is set, each absent one kept. For the clearable fields
/// `Some(None)` clears. Secrets are not changed here (that is rotation). The default changes
/// nothing.
#[derive(Clone, Debug, Default)]
pub struct CredentialPatch {
    pub alias: Option<String>,
    pub label: Option<Option<String>>,
    pub base_url: Option<Option<String>>,
    pub declared_region: Option<Option<String>>,
    pub models: Option<Vec<String>>,
    pub blacklisted_models: Option<Vec<String>>,
    pub weight: Option<u32>,
    /// Non-secret credential fields to change; an empty value removes an optional one.
    pub credentials: BTreeMap<String, String>,
    /// The whole new model map; `Some` of an empty map clears it.
    pub model_map: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug)]
pub enum CredentialCommand {
    Register(Box<NewCredential>),
    Update {
        patch: Box<CredentialPatch>,
        at: DateTime<Utc>,
        /// Whether the caller may change where the secret is sent (`base_url`, azure's
        /// `endpoint`): it holds `admin`, or showed the current secret (docs/adr/0036).
        may_move_address: bool,
    },
    Enable {
        at: DateTime<Utc>,
    },
    Disable {
        at: DateTime<Utc>,
    },
    Revoke {
        at: DateTime<Utc>,
    },
    // Bindings.
    /// Adds a binding; binding one the credential has is a no-op.
    Bind {
        binding: Binding,
        at: DateTime<Utc>,
    },
    /// Removes every binding whose `capability` and `module` equal the selector's (its `model`
    /// must be unset); none matching is a no-op.
    Unbind {
        selector: Binding,
        at: DateTime<Utc>,
    },
    // Quotas (docs/usage.md).
    /// Sets (or with `None` removes) the quota; `exceeded` is the new quota already reached by
    /// the usage recorded, as the service found it, appended right after.
    SetQuota {
        quota: Option<Quota>,
        exceeded: Option<Exceedance>,
        at: DateTime<Utc>,
    },
    /// Records that the quota is reached, unless an exceedance covering `at` is recorded, the
    /// quota changed window or was removed, or the credential is revoked.
    MarkExceeded {
        exceeded: Exceedance,
        at: DateTime<Utc>,
    },
    // Probes.
    /// Records a probe's result. Refused on a revoked credential; a probe of a secret version
    /// that is no longer current records nothing.
    RecordTest {
        result: TestResult,
    },
    // Rotation (docs/rotation.md). The new secret is sealed for the version
    // `Credential::next_secret_version` names; `rollback_until` is when the replaced one can no
    // longer be restored.
    /// Replaces the current secret at once.
    Rotate {
        secret: NewSecret,
        at: DateTime<Utc>,
        rollback_until: DateTime<Utc>,
    },
    /// Stores a probed candidate (replacing a pending one) without serving it.
    StageRotation {
        stage_id: StageId,
        secret: NewSecret,
        probe_result: TestResult,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// Promotes the pending stage `stage_id`.
    CommitRotation {
        stage_id: StageId,
        force: bool,
        at: DateTime<Utc>,
        rollback_until: DateTime<Utc>,
    },
    /// Restores the previous secret, within its rollback window.
    Rollback {
        at: DateTime<Utc>,
    },
    /// Retires the previous secret and the pending stage when their time is past; nothing on a
    /// revoked credential.
    RetireExpired {
        at: DateTime<Utc>,
    },
    // Health (docs/health.md).
    /// Records what the evidence does to the credential's health (`byok.health_changed`), if it
    /// changes it at `now`. Nothing on a revoked credential.
    ObserveHealth {
        evidence: crate::domain::health::Evidence,
        now: DateTime<Utc>,
    },
}
