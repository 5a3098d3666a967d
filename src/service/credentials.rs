//! Credentials: register, read, list, update, enable, disable, revoke, bind, unbind, and test
//! (a probe of the provider through `crate::outbound`, recorded as `byok.tested`). Secrets are
//! sealed here, under the credential's own data key, before anything reaches an event;
//! revocation destroys that key in the same batch as the `byok.revoked` event
//! (crypto-shredding). A probe opens the secret here and hands it to the outbound client only;
//! its result sets the credential's health in the same append (`service::health`).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::clock::SharedClock;
use super::cursor::{Cursors, InvalidCursor, Listing};
use super::idempotency::Recording;
use super::ids::Ids;
use super::{Executed, ServiceError, Target, execute};
use crate::crypto::{DataKey, MasterKey, Redacted};
use crate::domain::credential::{
    self, Binding, Credential, CredentialCommand, CredentialError, CredentialPatch,
    CredentialState, NewCredential, ProbeError, RegisterRequest, TestResult,
};
use crate::domain::health::HealthCause;
use crate::domain::{AccountId, CredentialId, providers};
use crate::es::{Aggregate, EventMeta, StreamId};
use crate::outbound::Outbound;
use crate::outbound::probe::{self, Outcome};
use crate::storage::{DataKeyChange, Index, Store};

/// A credential with its revision: its stream version, the `ETag` / `If-Match` value.
#[derive(Clone)]
pub struct Versioned {
    pub credential: Credential,
    pub revision: u64,
}

#[derive(Default)]
pub struct ListFilter {
    pub provider: Option<String>,
    pub state: Option<CredentialState>,
}

pub struct Credentials {
    pub(super) store: Store,
    cursors: Cursors,
    pub(super) master: MasterKey,
    pub(super) clock: SharedClock,
    pub(super) ids: Arc<Ids>,
    /// The client probes go through; without one (a service built for a test or a bench that
    /// never probes) every probe is `unreachable`.
    outbound: Option<Outbound>,
    /// How long stages and rollbacks last (`rotation.rs`).
    pub(super) rotation: super::rotation::RotationSettings,
    /// How long a probe's 429 keeps the credential out of resolve (docs/health.md).
    rate_limit_cooldown: std::time::Duration,
}

/// A credential and the probe `test` just made of it.
#[derive(Clone)]
pub struct Tested {
    pub versioned: Versioned,
    pub result: TestResult,
}

/// An update as its caller asked it (`Credentials::update`).
pub struct UpdateRequest {
    /// The changes; its `credentials` are filled from `fields`.
    pub patch: CredentialPatch,
    /// The credential fields named: settings to change, and secret fields shown only as proof
    /// for a change of address (docs/adr/0036).
    pub fields: Redacted<BTreeMap<String, String>>,
    /// Whether the caller's key holds the `admin` scope.
    pub admin: bool,
}

pub(super) fn stream(byok_id: &CredentialId) -> StreamId {
    StreamId::new(Credential::KIND, byok_id.as_str())
}

/// Binds a wrapped data key to its credential.
fn data_key_ad(account_id: &AccountId, byok_id: &CredentialId) -> Vec<u8> {
    crate::crypto::data_key_binding(account_id.as_str(), byok_id.as_str())
}

/// Binds a wrapped data key to its credential's record of one secret version
/// (`credential::key_record`; version 1's is the credential's id, as above).
pub(super) fn record_ad(account_id: &AccountId, record: &str) -> Vec<u8> {
    crate::crypto::data_key_binding(account_id.as_str(), record)
}

/// Binds sealed secrets to their account, credential and secret version. The string is fixed:
/// every sealed secret already stored was bound to it.
pub(super) fn secret_ad(
    account_id: &AccountId,
    byok_id: &CredentialId,
    secret_version: u32,
) -> Vec<u8> {
    format!("keyledger/byok/{account_id}/{byok_id}/v{secret_version}").into_bytes()
}

/// Another account's credential is answered exactly like a missing one.
fn owned<'a>(
    state: Option<&'a Credential>,
    account_id: &AccountId,
) -> Result<Option<&'a Credential>, ServiceError> {
    match state {
        Some(c) if c.account_id != *account_id => Err(ServiceError::NotFound("no such credential")),
        other => Ok(other),
    }
}

/// Where a change to an existing credential goes, under which conditions.
pub(super) fn change<'a>(
    byok_id: &CredentialId,
    if_match: Option<u64>,
    meta: &'a EventMeta,
    data_key: Option<DataKeyChange>,
) -> Target<'a> {
    Target {
        stream: stream(byok_id),
        if_match,
        meta,
        data_key,
        also: Vec::new(),
    }
}

pub(super) fn versioned(executed: Executed<Credential>) -> Result<Versioned, ServiceError> {
    let credential = executed
        .state
        .ok_or(ServiceError::NotFound("no such credential"))?;
    Ok(Versioned {
        credential,
        revision: executed.stream_version,
    })
}

impl Credentials {
    pub fn new(store: Store, master: MasterKey, clock: SharedClock, ids: Arc<Ids>) -> Self {
        Self {
            cursors: Cursors::new(&store),
            store,
            master,
            clock,
            ids,
            outbound: None,
            rotation: super::rotation::RotationSettings::default(),
            rate_limit_cooldown: super::health::DEFAULT_RATE_LIMIT_COOLDOWN,
        }
    }

    /// Stages expire and rollbacks close after `settings`' times.
    pub fn with_rotation(mut self, settings: super::rotation::RotationSettings) -> Self {
        self.rotation = settings;
        self
    }

    /// A probe's 429 keeps the credential out of resolve for `cooldown`.
    pub fn with_rate_limit_cooldown(mut self, cooldown: std::time::Duration) -> Self {
        self.rate_limit_cooldown = cooldown;
        self
    }

    /// Probes go through `outbound`.
    pub fn with_outbound(mut self, outbound: Outbound) -> Self {
        self.outbound = Some(outbound);
        self
    }

    /// Probes `target`'s provider with its secret fields.
    pub(super) async fn probe(&self, target: &probe::Target<'_>) -> Outcome {
        let outcome = match &self.outbound {
            Some(outbound) => outbound.probe(target, self.clock.now()).await,
            None => Outcome {
                result: Err(ProbeError::Unreachable),
                latency_ms: 0,
            },
        };
        let label = outcome.result.map_or_else(ProbeError::as_str, |()| "ok");
        crate::metrics::count(|m| m.probes.with_label_values(&[label]).inc());
        outcome
    }

    /// The cursor that resumes the account's credential list after the credential `after`.
    pub fn cursor(&self, account_id: &AccountId, after: &str) -> String {
        self.cursors.issue(&Listing::Credentials(account_id), after)
    }

    /// The credential a cursor issued for the account's credential list resumes after.
    pub fn resume_after(
        &self,
        account_id: &AccountId,
        cursor: &str,
    ) -> Result<String, InvalidCursor> {
        self.cursors.open(&Listing::Credentials(account_id), cursor)
    }

    pub async fn register(
        &self,
        account_id: &AccountId,
        request: RegisterRequest,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        self.register_tested(account_id, request, false, meta, recording)
            .await
    }

    /// Registers, and with `test` probes the secret first (before it is sealed), so that the
    /// registration and its `byok.tested` are one append and one recorded answer; the probe's
    /// outcome never stops the registration.
    pub async fn register_tested(
        &self,
        account_id: &AccountId,
        request: RegisterRequest,
        test: bool,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        let registration = credential::prepare_register(request)?;
        let tested = if test {
            let profile = &registration.profile;
            let secrets = Redacted::new(registration.credentials.secrets.clone());
            let target = probe::Target {
                provider: &profile.provider,
                base_url: profile.base_url.as_deref(),
                settings: &profile.settings,
                secrets: &secrets,
            };
            let outcome = self.probe(&target).await;
            Some(TestResult::new(
                outcome.result,
                outcome.latency_ms,
                credential::FIRST_SECRET_VERSION,
                self.clock.now(),
            ))
        } else {
            None
        };
        let byok_id = self.ids.credential();
        let key = DataKey::generate();
        let plaintext = Redacted::new(
            serde_json::to_vec(&registration.credentials.secrets)
                .map_err(crate::storage::StoreError::from)?,
        );
        let sealed = key
            .seal(
                &secret_ad(account_id, &byok_id, credential::FIRST_SECRET_VERSION),
                plaintext.expose(),
            )
            .map_err(crate::storage::StoreError::from)?;
        let command = NewCredential {
            byok_id: byok_id.clone(),
            account_id: account_id.clone(),
            profile: registration.profile,
            sealed_secret: STANDARD.encode(sealed),
            secret_hint: registration.credentials.hint.clone(),
            at: self.clock.now(),
            tested,
        };
        let target = Target {
            stream: stream(&byok_id),
            if_match: None,
            meta,
            data_key: Some(DataKeyChange::Store {
                record: byok_id.to_string(),
                wrapped: self
                    .master
                    .wrap(&key, &data_key_ad(account_id, &byok_id))
                    .map_err(crate::storage::StoreError::from)?,
            }),
            also: Vec::new(),
        };
        let cooldown = super::health::cooldown(self.rate_limit_cooldown);
        let decide = |state: Option<&Credential>| {
            let tested = command.tested.clone();
            let command = CredentialCommand::Register(Box::new(command.clone()));
            let events = credential::decide(state, command)?;
            // The probe made on the way sets the health it finds, in the same append.
            match &tested {
                Some(result) => super::health::with_probe_health(
                    state,
                    events,
                    result,
                    HealthCause::Probe,
                    cooldown,
                    self.clock.now(),
                ),
                None => Ok(events),
            }
        };
        execute(&self.store, target, decide, versioned, recording).await
    }

    pub fn get(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
    ) -> Result<Versioned, ServiceError> {
        let stored = self
            .store
            .load::<Credential>(&stream(byok_id))?
            .filter(|s| s.state.account_id == *account_id)
            .ok_or(ServiceError::NotFound("no such credential"))?;
        Ok(Versioned {
            credential: stored.state,
            revision: stored.stream_version,
        })
    }

    /// A page of the account's credentials, oldest first, after the credential `after`.
    pub fn list(
        &self,
        account_id: &AccountId,
        filter: &ListFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Versioned>, Option<String>), ServiceError> {
        let keep = |c: &Credential| {
            filter
                .provider
                .as_deref()
                .is_none_or(|p| c.profile.provider == p)
                && filter.state.is_none_or(|s| c.state == s)
        };
        let (page, next) =
            self.store
                .list(Index::AccountCredentials(account_id), after, limit, keep)?;
        let page = page
            .into_iter()
            .map(|s| Versioned {
                credential: s.state,
                revision: s.stream_version,
            })
            .collect();
        Ok((page, next))
    }

    /// Applies a command to one of the account's credentials, under `target`'s conditions.
    pub(super) async fn command(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        target: Target<'_>,
        command: impl Fn() -> CredentialCommand,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        // Ownership first: another account's credential answers 404 before any `If-Match`
        // comparison could reveal that it exists, or its revision.
        self.get(account_id, byok_id)?;
        let decide = |state: Option<&Credential>| {
            let state = owned(state, account_id)?;
            Ok(credential::decide(state, command())?)
        };
        execute(&self.store, target, decide, versioned, recording).await
    }

    /// Changes a credential's settings. One that would send the secret somewhere new needs a
    /// caller holding `admin` or showing the current secret in `fields` (docs/adr/0036); a
    /// secret shown that is not the current one is refused (403).
    pub async fn update(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        request: UpdateRequest,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        let at = self.clock.now();
        let current = self.get(account_id, byok_id)?.credential;
        let UpdateRequest {
            mut patch,
            fields,
            admin,
        } = request;
        let mut fields = fields.into_inner();
        // A provider no longer in the catalog has no secret fields to tell apart; its update
        // decides the fields' error.
        let provider = providers::provider(&current.profile.provider).ok();
        let may_move = patch.base_url.is_some()
            || provider.is_some_and(|p| fields.keys().any(|name| p.is_address_field(name)));
        // Secret fields are taken out only as proof for a change of address; any other update
        // refuses them, as secrets change only by rotation. A provider no longer in the catalog
        // has no fields to tell apart: its update decides their error.
        let shown = match provider {
            Some(provider) if may_move => Redacted::new(
                provider
                    .take_update_secrets(&mut fields)
                    .map_err(CredentialError::from)?,
            ),
            _ => Redacted::default(),
        };
        patch.credentials = fields;
        // The secret version shown, when the caller showed the current secret; a rotation
        // before the append makes it another version, and the proof no longer holds.
        let proven = if !may_move || current.is_revoked() || (admin && shown.expose().is_empty()) {
            None
        } else {
            let held = open_sealed(&data_key(&self.store, &self.master, &current)?, &current)?;
            if held.same_secrets(shown.expose()) {
                Some(current.secret_version)
            } else if shown.expose().is_empty() {
                None
            } else {
                return Err(ServiceError::Forbidden {
                    param: "credentials".into(),
                    message: "the secret in credentials is not this credential's current secret; \
                              an update takes it only to confirm a change of where it is sent, \
                              and a new secret is a rotation"
                        .into(),
                });
            }
        };
        let decide = |state: Option<&Credential>| {
            let state = owned(state, account_id)?;
            let command = CredentialCommand::Update {
                patch: Box::new(patch.clone()),
                at,
                may_move_address: admin
                    || proven.is_some_and(|v| state.is_some_and(|c| c.secret_version == v)),
            };
            Ok(credential::decide(state, command)?)
        };
        let target = change(byok_id, if_match, meta, None);
        execute(&self.store, target, decide, versioned, recording).await
    }

    pub async fn set_enabled(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        enabled: bool,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        let at = self.clock.now();
        let set = || {
            if enabled {
                CredentialCommand::Enable { at }
            } else {
                CredentialCommand::Disable { at }
            }
        };
        let target = change(byok_id, if_match, meta, None);
        self.command(account_id, byok_id, target, set, recording)
            .await
    }

    /// Revokes for good and destroys the data key, so the sealed secret in the log can never be
    /// opened again. Revoking a revoked credential answers it unchanged.
    pub async fn revoke(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        let at = self.clock.now();
        self.get(account_id, byok_id)?;
        // Every secret version's key goes: the current one, the previous one, a staged one.
        let decide = |state: Option<&Credential>| {
            let state = owned(state, account_id)?;
            let destroy = state.map(|c| {
                let records = c.live_secret_versions().into_iter();
                DataKeyChange::All(
                    records
                        .map(|v| DataKeyChange::Destroy {
                            record: credential::key_record(&c.byok_id, v),
                        })
                        .collect(),
                )
            });
            let events = credential::decide(state, CredentialCommand::Revoke { at })?;
            Ok((events, destroy))
        };
        let target = change(byok_id, if_match, meta, None);
        super::execute_keyed(&self.store, target, decide, versioned, recording).await
    }

    // Bindings.

    /// Adds a binding; one the credential has already is answered unchanged.
    pub async fn bind(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        binding: Binding,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        let at = self.clock.now();
        let bind = || CredentialCommand::Bind {
            binding: binding.clone(),
            at,
        };
        let target = change(byok_id, if_match, meta, None);
        self.command(account_id, byok_id, target, bind, recording)
            .await
    }

    /// Removes the bindings of `selector`'s capability and module, whatever their model; none
    /// matching is answered unchanged (docs/adr/0021).
    pub async fn unbind(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        selector: Binding,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        let at = self.clock.now();
        let unbind = || CredentialCommand::Unbind {
            selector: selector.clone(),
            at,
        };
        let target = change(byok_id, if_match, meta, None);
        self.command(account_id, byok_id, target, unbind, recording)
            .await
    }

    /// Probes the credential's provider with its current secret and records the outcome
    /// (`byok.tested`), and the change of health it makes (`byok.health_changed`) in the same
    /// append. A revoked credential is refused before anything is opened or sent.
    pub async fn test(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Tested>,
    ) -> Result<Tested, ServiceError> {
        self.probe_and_record(
            account_id,
            byok_id,
            if_match,
            HealthCause::Probe,
            meta,
            recording,
        )
        .await
    }

    /// A probe of the periodic prober: as [`Credentials::test`], of an active credential only,
    /// with the cause `periodic_probe`.
    pub async fn probe_periodically(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        meta: &EventMeta,
    ) -> Result<(), ServiceError> {
        if self.get(account_id, byok_id)?.credential.state != CredentialState::Active {
            return Ok(());
        }
        let recording = Recording::none();
        self.probe_and_record(
            account_id,
            byok_id,
            None,
            HealthCause::PeriodicProbe,
            meta,
            &recording,
        )
        .await
        .map(|_| ())
    }

    async fn probe_and_record(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        if_match: Option<u64>,
        cause: HealthCause,
        meta: &EventMeta,
        recording: &Recording<Tested>,
    ) -> Result<Tested, ServiceError> {
        let current = self.get(account_id, byok_id)?;
        if let Some(expected) = if_match
            && expected != current.revision
        {
            return Err(ServiceError::VersionConflict {
                expected,
                actual: current.revision,
            });
        }
        let credential = &current.credential;
        if credential.is_revoked() {
            return Err(ServiceError::Revoked);
        }
        let key = data_key(&self.store, &self.master, credential)?;
        let secrets = open_sealed(&key, credential)?;
        let target = probe::Target {
            provider: &credential.profile.provider,
            base_url: credential.profile.base_url.as_deref(),
            settings: &credential.profile.settings,
            secrets: &secrets,
        };
        let outcome = self.probe(&target).await;
        drop(secrets);
        let result = TestResult::new(
            outcome.result,
            outcome.latency_ms,
            credential.secret_version,
            self.clock.now(),
        );
        let at = result.clone();
        let record = || CredentialCommand::RecordTest { result: at.clone() };
        // The probe took time: the revision the caller named was checked before it, and the
        // record is appended against whatever the credential is now (a rotation meanwhile
        // makes it record nothing, in decide).
        let target = change(byok_id, None, meta, None);
        let cooldown = super::health::cooldown(self.rate_limit_cooldown);
        let decide = |state: Option<&Credential>| {
            let state = owned(state, account_id)?;
            let events = credential::decide(state, record())?;
            super::health::with_probe_health(
                state,
                events,
                &result,
                cause,
                cooldown,
                self.clock.now(),
            )
        };
        let answer = |executed: Executed<Credential>| {
            Ok(Tested {
                versioned: versioned(executed)?,
                result: result.clone(),
            })
        };
        execute(&self.store, target, decide, answer, recording).await
    }

    /// Opens a credential's secret fields. The data plane's only way to plaintext; fails for
    /// ever once the credential is revoked.
    pub fn open_secrets(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
    ) -> Result<Redacted<BTreeMap<String, String>>, ServiceError> {
        let credential = self.get(account_id, byok_id)?.credential;
        if credential.is_revoked() {
            return Err(ServiceError::Revoked);
        }
        let key = data_key(&self.store, &self.master, &credential)?;
        open_sealed(&key, &credential)
    }
}

fn unreadable(what: &str, byok_id: &CredentialId) -> ServiceError {
    ServiceError::Store(crate::storage::StoreError::Corrupt {
        what: format!("{what} of {byok_id}"),
        reason: "does not open".into(),
    })
}

/// A live credential's data key, read from `keys/` and unwrapped with the master key.
pub(super) fn data_key(
    store: &Store,
    master: &MasterKey,
    credential: &Credential,
) -> Result<DataKey, ServiceError> {
    version_key(store, master, credential, credential.secret_version)
}

/// The data key of one of a live credential's secret versions (the current, previous or staged
/// one), from its record in `keys/`.
pub(super) fn version_key(
    store: &Store,
    master: &MasterKey,
    credential: &Credential,
    secret_version: u32,
) -> Result<DataKey, ServiceError> {
    let byok_id = &credential.byok_id;
    let record = credential::key_record(byok_id, secret_version);
    // A live credential always has its key: a missing one means the data dir lost `keys/`
    // (a backup restored without it, say), which must not pass for a revocation.
    let wrapped = store.data_key(&record)?.ok_or_else(|| {
        ServiceError::Store(crate::storage::StoreError::Corrupt {
            what: format!("data key of {byok_id} (secret version {secret_version})"),
            reason: "missing from keys/ although the credential is not revoked".into(),
        })
    })?;
    master
        .unwrap_key(&wrapped, &record_ad(&credential.account_id, &record))
        .map_err(|_| unreadable("data key", byok_id))
}

/// Opens a credential's sealed secret fields with its data key. The error names the credential,
/// never a value.
pub(super) fn open_sealed(
    key: &DataKey,
    credential: &Credential,
) -> Result<Redacted<BTreeMap<String, String>>, ServiceError> {
    let byok_id = &credential.byok_id;
    let sealed = STANDARD
        .decode(&credential.sealed_secret)
        .map_err(|_| unreadable("sealed secret", byok_id))?;
    let plaintext = Redacted::new(
        key.open(
            &secret_ad(&credential.account_id, byok_id, credential.secret_version),
            &sealed,
        )
        .map_err(|_| unreadable("sealed secret", byok_id))?,
    );
    let secrets = serde_json::from_slice(plaintext.expose())
        .map_err(|_| unreadable("sealed secret", byok_id))?;
    Ok(Redacted::new(secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `keyledger_probes_total` is exported at 0 for every outcome a probe can have.
    #[test]
    fn the_probe_outcomes_are_the_probe_errors() {
        let errors = [
            ProbeError::InvalidCredentials,
            ProbeError::RateLimited,
            ProbeError::Timeout,
            ProbeError::Unreachable,
            ProbeError::ProviderError,
        ];
        let named: Vec<&str> = errors.iter().map(|e| e.as_str()).collect();
        assert_eq!(crate::metrics::PROBE_OUTCOMES[1..], named[..]);
    }

    #[test]
    fn associated_data_is_fixed() {
        // Every sealed secret and wrapped data key already stored was bound to these strings:
        // changing one makes them unreadable.
        let account = AccountId::parse("acct_01M83WSGZCA5P4FYV8YQM5SFYW").unwrap();
        let byok = CredentialId::parse("byok_01M83WSGZCA5P4FYV8YQM5SFYX").unwrap();
        assert_eq!(
            secret_ad(&account, &byok, credential::FIRST_SECRET_VERSION),
            b"keyledger/byok/acct_01M83WSGZCA5P4FYV8YQM5SFYW/byok_01M83WSGZCA5P4FYV8YQM5SFYX/v1"
        );
        assert_eq!(
            secret_ad(&account, &byok, 7),
            b"keyledger/byok/acct_01M83WSGZCA5P4FYV8YQM5SFYW/byok_01M83WSGZCA5P4FYV8YQM5SFYX/v7"
        );
        assert_eq!(
            data_key_ad(&account, &byok),
            b"keyledger/dek/acct_01M83WSGZCA5P4FYV8YQM5SFYW/byok_01M83WSGZCA5P4FYV8YQM5SFYX"
        );
    }
}
