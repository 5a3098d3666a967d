//! Secret rotation (docs/rotation.md, ADR 0027): rotate in place, stage (sealed and probed, not
//! serving), commit, rollback, and the sweep that retires what expired. Each new secret version
//! is sealed under a data key of its own, stored under the record `credential::key_record`
//! names before the batch that needs it; a version retired (`byok.secret_retired`) has its key
//! destroyed after its batch is durable, as revocation's is (the writer orders both).
//!
//! The new secret is sealed inside `decide`, for the version the state it decides on names, so
//! a retry after a conflict seals again for the right version, and the key change travels with
//! exactly the events it belongs to. Must not import http.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};

use super::credentials::{Credentials, Versioned, change, record_ad, secret_ad, stream, versioned};
use super::idempotency::Recording;
use super::{Executed, ServiceError, execute_keyed};
use crate::crypto::{DataKey, Redacted};
use crate::domain::credential::{
    self, Credential, CredentialCommand, CredentialEvent, NewSecret, Stage, TestResult,
};
use crate::domain::providers::ProviderCredentials;
use crate::domain::{AccountId, CredentialId, StageId};
use crate::es::EventMeta;
use crate::outbound::probe;
use crate::storage::{DataKeyChange, StoreError};

/// How long rotation's states last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationSettings {
    /// How long a stage can be committed (`--stage-ttl`).
    pub stage_ttl: Duration,
    /// How long a replaced secret can be rolled back to (`--rollback-window`).
    pub rollback_window: Duration,
    /// How often the server's sweep looks for expired stages and closed rollback windows.
    pub sweep_interval: Duration,
}

pub const DEFAULT_STAGE_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_ROLLBACK_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            stage_ttl: DEFAULT_STAGE_TTL,
            rollback_window: DEFAULT_ROLLBACK_WINDOW,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }
}

/// The new secret fields of a rotation, as the request gave them (validated here).
#[derive(Clone, Default)]
pub struct RotateSecret {
    pub credentials: BTreeMap<String, String>,
    /// Shorthand for `credentials.api_key`.
    pub api_key: Option<String>,
}

/// A credential and the stage just stored on it.
#[derive(Clone)]
pub struct Staged {
    pub versioned: Versioned,
    pub stage: Stage,
}

fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Another account's credential is answered exactly like a missing one.
fn owned<'a>(
    state: Option<&'a Credential>,
    account_id: &AccountId,
) -> Result<&'a Credential, ServiceError> {
    match state {
        Some(c) if c.account_id == *account_id => Ok(c),
        _ => Err(ServiceError::NotFound("no such credential")),
    }
}

/// The key changes a credential's events need besides a new key: every version they retire
/// loses its key once they are durable.
fn retired_keys(byok_id: &CredentialId, events: &[CredentialEvent]) -> Vec<DataKeyChange> {
    events
        .iter()
        .filter_map(|e| match e {
            CredentialEvent::SecretRetired(r) => Some(DataKeyChange::Destroy {
                record: credential::key_record(byok_id, r.secret_version),
            }),
            _ => None,
        })
        .collect()
}

fn keys(changes: Vec<DataKeyChange>) -> Option<DataKeyChange> {
    (!changes.is_empty()).then_some(DataKeyChange::All(changes))
}

impl Credentials {
    /// Seals `secrets` as version `secret_version` of `c` under a new data key; answers the
    /// sealed secret and the key change that stores its key.
    fn seal_version(
        &self,
        c: &Credential,
        secrets: &ProviderCredentials,
        secret_version: u32,
    ) -> Result<(NewSecret, DataKeyChange), ServiceError> {
        let key = DataKey::generate();
        let plaintext =
            Redacted::new(serde_json::to_vec(&secrets.secrets).map_err(StoreError::from)?);
        let sealed = key
            .seal(
                &secret_ad(&c.account_id, &c.byok_id, secret_version),
                plaintext.expose(),
            )
            .map_err(StoreError::from)?;
        let record = credential::key_record(&c.byok_id, secret_version);
        let wrapped = self
            .master
            .wrap(&key, &record_ad(&c.account_id, &record))
            .map_err(StoreError::from)?;
        let secret = NewSecret {
            secret_version,
            sealed_secret: STANDARD.encode(sealed),
            secret_hint: secrets.hint.clone(),
        };
        Ok((secret, DataKeyChange::Store { record, wrapped }))
    }

    /// Validates the new secret fields against the credential's provider.
    fn new_secrets(
        &self,
        current: &Credential,
        secret: RotateSecret,
    ) -> Result<ProviderCredentials, ServiceError> {
        Ok(credential::prepare_secret(
            &current.profile.provider,
            &current.profile.settings,
            secret.credentials,
            secret.api_key,
        )?)
    }

    /// Rotates in place: the new secret serves from this append on; the replaced one stays
    /// restorable for the rollback window.
    pub async fn rotate(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        secret: RotateSecret,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        let current = self.get(account_id, byok_id)?.credential;
        if current.is_revoked() {
            return Err(ServiceError::Revoked);
        }
        let secrets = Redacted::new(self.new_secrets(&current, secret)?);
        let at = self.clock.now();
        let rollback_until = later(at, self.rotation.rollback_window);
        let decide = |state: Option<&Credential>| {
            let c = owned(state, account_id)?;
            if c.is_revoked() {
                return Err(ServiceError::Revoked);
            }
            let (secret, store) =
                self.seal_version(c, secrets.expose(), c.next_secret_version())?;
            let command = CredentialCommand::Rotate {
                secret,
                at,
                rollback_until,
            };
            let events = credential::decide(Some(c), command)?;
            let mut changes = vec![store];
            changes.extend(retired_keys(byok_id, &events));
            Ok((events, keys(changes)))
        };
        execute_keyed(
            &self.store,
            change(byok_id, if_match, meta, None),
            decide,
            versioned,
            recording,
        )
        .await
    }

    /// Stages a candidate: probes it with the provider (before anything is appended), seals it
    /// under its own data key and records it with the probe's outcome, without serving it. A
    /// pending stage is replaced.
    pub async fn stage_rotation(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        secret: RotateSecret,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Staged>,
    ) -> Result<Staged, ServiceError> {
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
        let secrets = Redacted::new(self.new_secrets(credential, secret)?);
        let plain = Redacted::new(secrets.expose().secrets.clone());
        let probed = probe::Target {
            provider: &credential.profile.provider,
            base_url: credential.profile.base_url.as_deref(),
            settings: &credential.profile.settings,
            secrets: &plain,
        };
        let outcome = self.probe(&probed).await;
        drop(plain);
        let at = self.clock.now();
        let expires_at = later(at, self.rotation.stage_ttl);
        let stage_id = self.ids.stage();
        // The probe took time: the revision named was checked before it, and the stage is
        // decided on whatever the credential is now (its next version, a stage to replace).
        let decide = |state: Option<&Credential>| {
            let c = owned(state, account_id)?;
            if c.is_revoked() {
                return Err(ServiceError::Revoked);
            }
            let version = c.next_secret_version();
            let (secret, store) = self.seal_version(c, secrets.expose(), version)?;
            let command = CredentialCommand::StageRotation {
                stage_id: stage_id.clone(),
                secret,
                probe_result: TestResult::new(outcome.result, outcome.latency_ms, version, at),
                expires_at,
                at,
            };
            let events = credential::decide(Some(c), command)?;
            let mut changes = vec![store];
            changes.extend(retired_keys(byok_id, &events));
            Ok((events, keys(changes)))
        };
        let answer = |executed: Executed<Credential>| {
            let versioned = versioned(executed)?;
            let stage = versioned
                .credential
                .pending_rotation
                .clone()
                .ok_or(ServiceError::NotFound("no such stage"))?;
            Ok(Staged { versioned, stage })
        };
        execute_keyed(
            &self.store,
            change(byok_id, None, meta, None),
            decide,
            answer,
            recording,
        )
        .await
    }

    /// Promotes the pending stage `stage_id`. Of concurrent commits of one stage exactly one
    /// wins: the others decide again on the state after it, where the stage is gone.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_rotation(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        stage_id: &StageId,
        force: bool,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        let at = self.clock.now();
        let rollback_until = later(at, self.rotation.rollback_window);
        self.get(account_id, byok_id)?;
        let decide = |state: Option<&Credential>| {
            let c = owned(state, account_id)?;
            let command = CredentialCommand::CommitRotation {
                stage_id: stage_id.clone(),
                force,
                at,
                rollback_until,
            };
            let events = credential::decide(Some(c), command)?;
            Ok((events.clone(), keys(retired_keys(byok_id, &events))))
        };
        execute_keyed(
            &self.store,
            change(byok_id, if_match, meta, None),
            decide,
            versioned,
            recording,
        )
        .await
    }

    /// Restores the previous secret within its window; the version rolled away from is retired
    /// and its key destroyed.
    pub async fn rollback(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        let at = self.clock.now();
        self.get(account_id, byok_id)?;
        let decide = |state: Option<&Credential>| {
            let c = owned(state, account_id)?;
            let events = credential::decide(Some(c), CredentialCommand::Rollback { at })?;
            Ok((events.clone(), keys(retired_keys(byok_id, &events))))
        };
        execute_keyed(
            &self.store,
            change(byok_id, if_match, meta, None),
            decide,
            versioned,
            recording,
        )
        .await
    }

    /// Retires whatever of each credential in `candidates` is past its time (a closed rollback
    /// window, an expired stage): `byok.secret_retired`, then the key destroyed. Answers how many
    /// versions were retired. Errors are logged per credential, never stop the sweep.
    pub async fn retire_expired(&self, candidates: &[CredentialId]) -> usize {
        let mut retired = 0;
        for byok_id in candidates {
            let meta = EventMeta {
                actor: SWEEP_ACTOR.to_owned(),
                request_id: self.ids.request(),
            };
            let at = self.clock.now();
            let decide = |state: Option<&Credential>| {
                let Some(c) = state else {
                    return Ok((vec![], None));
                };
                let events = credential::decide(Some(c), CredentialCommand::RetireExpired { at })?;
                Ok((events.clone(), keys(retired_keys(byok_id, &events))))
            };
            let count = |executed: Executed<Credential>| Ok(executed.stream_version);
            let before = self.store.load::<Credential>(&stream(byok_id));
            let before = before.ok().flatten().map_or(0, |s| s.stream_version);
            match execute_keyed(
                &self.store,
                change(byok_id, None, &meta, None),
                decide,
                count,
                &Recording::none(),
            )
            .await
            {
                Ok(after) => retired += usize::try_from(after - before.min(after)).unwrap_or(0),
                Err(error) => {
                    tracing::error!(%byok_id, %error, "retiring an expired secret version failed; retried on the next sweep");
                }
            }
        }
        retired
    }
}

/// The actor of the events the sweep appends.
pub const SWEEP_ACTOR: &str = "keyledger";

/// The sweep that retires expired stages and closed rollback windows without a request: once
/// when the server starts (as soon as resolve's follower has replayed the log, whose state names
/// the candidates) and then every `sweep_interval`, on a thread of its own, until `closing` says
/// the server stops. The one place that retires by time: so an old secret's key is gone from the
/// data dir soon after its window closes even when nobody calls. Until then nothing can use an
/// expired version anyway: commit and rollback check their deadlines themselves.
pub struct Sweeper {
    handle: Option<std::thread::JoinHandle<()>>,
    swept: Arc<AtomicBool>,
}

/// How often the sweep looks whether the follower has caught up, before its first pass.
const CATCH_UP_POLL: Duration = Duration::from_millis(10);

impl Sweeper {
    pub fn start(
        credentials: Credentials,
        resolver: super::resolve::Resolver,
        mut closing: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, ServiceError> {
        let swept = Arc::new(AtomicBool::new(false));
        let once = swept.clone();
        let interval = credentials.rotation.sweep_interval;
        let handle = std::thread::Builder::new()
            .name("keyledger-rotation-sweep".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(%error, "the rotation sweep cannot start");
                        return;
                    }
                };
                runtime.block_on(async {
                    while !resolver.is_caught_up() {
                        if *closing.borrow() || !credentials.store.is_running() {
                            return;
                        }
                        tokio::time::sleep(CATCH_UP_POLL).await;
                    }
                    loop {
                        let due = resolver.due_for_retirement(credentials.clock.now());
                        let retired = credentials.retire_expired(&due).await;
                        if retired > 0 {
                            tracing::info!(retired, "retired expired secret versions");
                        }
                        once.store(true, Ordering::Release);
                        if *closing.borrow() || !credentials.store.is_running() {
                            return;
                        }
                        tokio::select! {
                            () = tokio::time::sleep(interval) => {}
                            changed = closing.changed() => {
                                if changed.is_err() || *closing.borrow() {
                                    return;
                                }
                            }
                        }
                    }
                });
            })
            .map_err(|e| ServiceError::Store(StoreError::Io(e)))?;
        Ok(Self {
            handle: Some(handle),
            swept,
        })
    }

    /// Whether the first pass after the start has run.
    pub fn has_swept(&self) -> bool {
        self.swept.load(Ordering::Acquire)
    }

    /// Waits for the sweep's thread to end (after `closing`); it then holds no store.
    pub fn join(mut self) {
        if let Some(handle) = self.handle.take()
            && handle.join().is_err()
        {
            tracing::error!("the rotation sweep panicked");
        }
    }
}
