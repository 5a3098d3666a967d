//! Secret rotation of a credential (docs/rotation.md, ADR 0027): the pending stage, the previous
//! secret kept for rollback, their events (`byok.rotated`, `byok.rotation_staged`,
//! `byok.secret_retired`), the decisions on them, and the names of the data-key records each
//! secret version is sealed under.
//!
//! Every secret version has a data key of its own: version 1 under the record `<byok_id>` (as
//! every credential registered before rotation existed), version N >= 2 under `<byok_id>_v<N>`.
//! A version that can no longer become current again (its rollback window closed, a further
//! rotation pushed it out, a rollback moved away from it, its stage was replaced or expired) is
//! retired: `byok.secret_retired` is appended and its key destroyed once that is durable.
//!
//! Must not import crypto, storage, service or HTTP.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Credential, CredentialError, CredentialEvent, MAX_HINT_LEN, TestResult};
use crate::domain::providers::{self, ProviderCredentials};
use crate::domain::{CredentialId, StageId};

/// A candidate secret, sealed and probed, waiting for `rotate/commit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub stage_id: StageId,
    /// The version the candidate becomes when committed.
    pub secret_version: u32,
    pub secret_hint: String,
    /// Base64 ciphertext under the candidate's own data key; opaque here.
    pub sealed_secret: String,
    pub probe_result: TestResult,
    pub expires_at: DateTime<Utc>,
    pub staged_at: DateTime<Utc>,
}

/// The secret a rotation replaced, which `rotate/rollback` restores until `rollback_until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub secret_version: u32,
    pub secret_hint: String,
    pub sealed_secret: String,
    pub rollback_until: DateTime<Utc>,
}

/// How a rotation happened. The names are stable: they are stored in `byok.rotated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationMethod {
    InPlace,
    Staged,
    Rollback,
}

/// `byok.rotated`: the credential's current secret changed to `secret_version`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotated {
    pub byok_id: CredentialId,
    pub method: RotationMethod,
    pub secret_version: u32,
    /// The version that was current before; kept for rollback until `rollback_until` (absent
    /// for a rollback, which keeps nothing to roll back to).
    pub previous_version: u32,
    pub secret_hint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_id: Option<StageId>,
    /// The new secret's ciphertext (absent for a rollback: the restored one is in the log
    /// already). A private field: feeds and webhooks never show it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_until: Option<DateTime<Utc>>,
    pub rotated_at: DateTime<Utc>,
}

/// `byok.rotation_staged`: a candidate secret stored and probed, not yet serving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationStaged {
    pub byok_id: CredentialId,
    pub stage_id: StageId,
    pub secret_version: u32,
    pub secret_hint: String,
    pub sealed_secret: String,
    pub probe_result: TestResult,
    pub expires_at: DateTime<Utc>,
    pub staged_at: DateTime<Utc>,
}

/// `byok.secret_retired`: secret version `secret_version` can never become current again; its
/// data key is destroyed once this event is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRetired {
    pub byok_id: CredentialId,
    pub secret_version: u32,
    pub retired_at: DateTime<Utc>,
}

/// A new secret as the service sealed it for the version the credential's next one gets.
#[derive(Clone, Debug)]
pub struct NewSecret {
    pub secret_version: u32,
    pub sealed_secret: String,
    pub secret_hint: String,
}

/// The data-key record of a secret version: `<byok_id>` for version 1, `<byok_id>_v<N>` after.
pub fn key_record(byok_id: &CredentialId, secret_version: u32) -> String {
    if secret_version <= super::FIRST_SECRET_VERSION {
        byok_id.to_string()
    } else {
        format!("{byok_id}_v{secret_version}")
    }
}

/// The credential and secret version a data-key record belongs to (the inverse of
/// [`key_record`]); `None` for a name that is neither form.
pub fn key_record_owner(record: &str) -> Option<(CredentialId, u32)> {
    if let Some(id) = CredentialId::parse(record) {
        return Some((id, super::FIRST_SECRET_VERSION));
    }
    let (id, version) = record.rsplit_once("_v")?;
    let version: u32 = version.parse().ok()?;
    let id = CredentialId::parse(id)?;
    // Only the form `key_record` writes: no `_v1`, no leading zero, no sign.
    (key_record(&id, version) == record).then_some((id, version))
}

/// Validates a rotation's new secret fields for `provider`: only its secret fields (settings
/// change with `update`), each as register checks it, every required one present.
pub fn prepare_secret(
    provider: &str,
    settings: &BTreeMap<String, String>,
    credentials: BTreeMap<String, String>,
    api_key: Option<String>,
) -> Result<ProviderCredentials, CredentialError> {
    let provider = providers::provider(provider)?;
    if api_key.is_some() && provider.field("api_key").is_none() {
        return Err(CredentialError::invalid(
            "api_key",
            format!("{} takes no api_key", provider.id),
        ));
    }
    let merged = providers::merge_api_key(credentials, api_key)?;
    for name in merged.keys() {
        if let Some(spec) = provider.field(name)
            && !spec.secret
        {
            return Err(CredentialError::invalid(
                format!("credentials.{name}"),
                format!(
                    "credentials.{name} is a setting, not a secret: change it with update, rotation changes secret fields only"
                ),
            ));
        }
    }
    if !provider.fields.iter().any(|f| f.secret) {
        return Err(CredentialError::invalid(
            "credentials",
            format!("{} has no secret fields to rotate", provider.id),
        ));
    }
    let mut all = merged;
    for (name, value) in settings {
        all.entry(name.clone()).or_insert_with(|| value.clone());
    }
    Ok(provider.validate_credentials(all)?)
}

impl Credential {
    /// The version the next new secret (rotation or stage) gets: one more than any this
    /// credential ever had, so a version number is never sealed twice.
    pub fn next_secret_version(&self) -> u32 {
        let staged = self
            .pending_rotation
            .as_ref()
            .map_or(0, |s| s.secret_version);
        let previous = self
            .previous_secret
            .as_ref()
            .map_or(0, |p| p.secret_version);
        self.latest_secret_version
            .max(self.secret_version)
            .max(staged)
            .max(previous)
            + 1
    }

    /// The secret versions whose data keys must exist: the current one, the previous one and
    /// the staged one; none once revoked.
    pub fn live_secret_versions(&self) -> Vec<u32> {
        if self.is_revoked() {
            return vec![];
        }
        let mut versions = vec![self.secret_version];
        versions.extend(self.previous_secret.as_ref().map(|p| p.secret_version));
        versions.extend(self.pending_rotation.as_ref().map(|s| s.secret_version));
        versions
    }
}

fn retired(c: &Credential, secret_version: u32, at: DateTime<Utc>) -> CredentialEvent {
    CredentialEvent::SecretRetired(Box::new(SecretRetired {
        byok_id: c.byok_id.clone(),
        secret_version,
        retired_at: at,
    }))
}

fn check_new(c: &Credential, secret: &NewSecret) -> Result<(), CredentialError> {
    if secret.secret_version != c.next_secret_version() {
        return Err(CredentialError::invalid(
            "secret_version",
            format!(
                "the next secret version is {}, not {}",
                c.next_secret_version(),
                secret.secret_version
            ),
        ));
    }
    if secret.secret_hint.chars().count() > MAX_HINT_LEN {
        return Err(CredentialError::invalid(
            "secret_hint",
            format!("a secret hint is at most {MAX_HINT_LEN} characters"),
        ));
    }
    Ok(())
}

/// The current secret replaced by `secret`: the previous one (pushed out) and a pending stage
/// (superseded) retired first, then `byok.rotated` (`in_place`).
pub(super) fn decide_rotate(
    c: &Credential,
    secret: NewSecret,
    at: DateTime<Utc>,
    rollback_until: DateTime<Utc>,
) -> Result<Vec<CredentialEvent>, CredentialError> {
    check_new(c, &secret)?;
    let mut events = Vec::new();
    events.extend(
        c.previous_secret
            .as_ref()
            .map(|p| retired(c, p.secret_version, at)),
    );
    events.extend(
        c.pending_rotation
            .as_ref()
            .map(|s| retired(c, s.secret_version, at)),
    );
    events.push(CredentialEvent::Rotated(Box::new(Rotated {
        byok_id: c.byok_id.clone(),
        method: RotationMethod::InPlace,
        secret_version: secret.secret_version,
        previous_version: c.secret_version,
        secret_hint: secret.secret_hint,
        stage_id: None,
        sealed_secret: Some(secret.sealed_secret),
        rollback_until: Some(rollback_until),
        rotated_at: at,
    })));
    Ok(events)
}

/// A new candidate: a pending one is replaced (and retired).
pub(super) fn decide_stage(
    c: &Credential,
    stage_id: StageId,
    secret: NewSecret,
    probe_result: TestResult,
    expires_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<Vec<CredentialEvent>, CredentialError> {
    check_new(c, &secret)?;
    let mut events = Vec::new();
    events.extend(
        c.pending_rotation
            .as_ref()
            .map(|s| retired(c, s.secret_version, at)),
    );
    events.push(CredentialEvent::RotationStaged(Box::new(RotationStaged {
        byok_id: c.byok_id.clone(),
        stage_id,
        secret_version: secret.secret_version,
        secret_hint: secret.secret_hint,
        sealed_secret: secret.sealed_secret,
        probe_result,
        expires_at,
        staged_at: at,
    })));
    Ok(events)
}

/// Promotes the pending stage `stage_id`: it must be the pending one, not expired, and its probe
/// must have passed unless `force`.
pub(super) fn decide_commit(
    c: &Credential,
    stage_id: &StageId,
    force: bool,
    at: DateTime<Utc>,
    rollback_until: DateTime<Utc>,
) -> Result<Vec<CredentialEvent>, CredentialError> {
    let stage = match &c.pending_rotation {
        Some(stage) if stage.stage_id == *stage_id => stage,
        _ => return Err(CredentialError::StageUnknown),
    };
    if stage.expires_at <= at {
        return Err(CredentialError::StageExpired);
    }
    if !stage.probe_result.ok && !force {
        return Err(CredentialError::StageProbeFailed);
    }
    let mut events = Vec::new();
    events.extend(
        c.previous_secret
            .as_ref()
            .map(|p| retired(c, p.secret_version, at)),
    );
    events.push(CredentialEvent::Rotated(Box::new(Rotated {
        byok_id: c.byok_id.clone(),
        method: RotationMethod::Staged,
        secret_version: stage.secret_version,
        previous_version: c.secret_version,
        secret_hint: stage.secret_hint.clone(),
        stage_id: Some(stage.stage_id.clone()),
        sealed_secret: Some(stage.sealed_secret.clone()),
        rollback_until: Some(rollback_until),
        rotated_at: at,
    })));
    Ok(events)
}

/// Restores the previous secret within its window; the version rolled away from is retired at
/// once (no rollback of a rollback: ADR 0027).
pub(super) fn decide_rollback(
    c: &Credential,
    at: DateTime<Utc>,
) -> Result<Vec<CredentialEvent>, CredentialError> {
    let Some(previous) = c.previous_secret.as_ref().filter(|p| p.rollback_until > at) else {
        return Err(CredentialError::NothingToRollBack);
    };
    Ok(vec![
        CredentialEvent::Rotated(Box::new(Rotated {
            byok_id: c.byok_id.clone(),
            method: RotationMethod::Rollback,
            secret_version: previous.secret_version,
            previous_version: c.secret_version,
            secret_hint: previous.secret_hint.clone(),
            stage_id: None,
            sealed_secret: None,
            rollback_until: None,
            rotated_at: at,
        })),
        retired(c, c.secret_version, at),
    ])
}

/// Retires what is past its time at `at`: the previous secret after its rollback window, the
/// pending stage after it expired. Nothing on a revoked credential (revocation destroyed every
/// key already).
pub(super) fn decide_sweep(c: &Credential, at: DateTime<Utc>) -> Vec<CredentialEvent> {
    if c.is_revoked() {
        return vec![];
    }
    let mut events = Vec::new();
    if let Some(p) = c
        .previous_secret
        .as_ref()
        .filter(|p| p.rollback_until <= at)
    {
        events.push(retired(c, p.secret_version, at));
    }
    if let Some(s) = c.pending_rotation.as_ref().filter(|s| s.expires_at <= at) {
        events.push(retired(c, s.secret_version, at));
    }
    events
}

/// The earliest time something of `c` is due to be retired, if anything is.
pub fn retirement_due(c: &Credential) -> Option<DateTime<Utc>> {
    if c.is_revoked() {
        return None;
    }
    let previous = c.previous_secret.as_ref().map(|p| p.rollback_until);
    let stage = c.pending_rotation.as_ref().map(|s| s.expires_at);
    match (previous, stage) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `byok.rotated` applied to `c`.
pub(super) fn apply_rotated(mut c: Credential, r: &Rotated) -> Credential {
    let old = PreviousSecret {
        secret_version: c.secret_version,
        secret_hint: std::mem::take(&mut c.secret_hint),
        sealed_secret: std::mem::take(&mut c.sealed_secret),
        rollback_until: r.rollback_until.unwrap_or(r.rotated_at),
    };
    let restored = c.previous_secret.take();
    let staged = c.pending_rotation.take();
    c.sealed_secret = match r.method {
        RotationMethod::Rollback => restored
            .filter(|p| p.secret_version == r.secret_version)
            .map(|p| p.sealed_secret)
            .unwrap_or_default(),
        RotationMethod::InPlace | RotationMethod::Staged => match &r.sealed_secret {
            Some(sealed) => sealed.clone(),
            None => staged
                .as_ref()
                .filter(|s| s.secret_version == r.secret_version)
                .map(|s| s.sealed_secret.clone())
                .unwrap_or_default(),
        },
    };
    // A stage survives an in-place rotation or a rollback only in a log decide did not write
    // (decide retires it first); a commit consumes it.
    if r.method != RotationMethod::Staged {
        c.pending_rotation = staged.filter(|s| s.secret_version != r.secret_version);
    }
    c.previous_secret = r.rollback_until.map(|_| old);
    c.latest_secret_version = c.latest_secret_version.max(r.secret_version);
    c.secret_version = r.secret_version;
    c.secret_hint = r.secret_hint.clone();
    c.updated_at = r.rotated_at;
    // Health is the secret's: what was seen of the old one says nothing of this one, and
    // evidence older than the rotation no longer counts (docs/health.md).
    c.health = crate::domain::health::Health::Unknown;
    c.health_until = None;
    c.health_changed_at = Some(r.rotated_at);
    c.health_cause = None;
    c.health_error = None;
    c
}

/// `byok.rotation_staged` applied to `c`.
pub(super) fn apply_staged(mut c: Credential, s: &RotationStaged) -> Credential {
    c.latest_secret_version = c.latest_secret_version.max(s.secret_version);
    c.pending_rotation = Some(Stage {
        stage_id: s.stage_id.clone(),
        secret_version: s.secret_version,
        secret_hint: s.secret_hint.clone(),
        sealed_secret: s.sealed_secret.clone(),
        probe_result: s.probe_result.clone(),
        expires_at: s.expires_at,
        staged_at: s.staged_at,
    });
    c
}

/// `byok.secret_retired` applied to `c`: the version is no longer previous nor staged.
pub(super) fn apply_retired(mut c: Credential, r: &SecretRetired) -> Credential {
    if c.previous_secret
        .as_ref()
        .is_some_and(|p| p.secret_version == r.secret_version)
    {
        c.previous_secret = None;
    }
    if c.pending_rotation
        .as_ref()
        .is_some_and(|s| s.secret_version == r.secret_version)
    {
        c.pending_rotation = None;
    }
    c
}
