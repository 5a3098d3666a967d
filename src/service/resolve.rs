//! Resolve: the data plane a gateway calls on every request. It answers from an in-memory
//! routing state ([`Routes`]) that a follower derives from the log by position, as a follower
//! server would (docs/design.md §12): a thread reads the durable events after the position it has
//! applied and applies each `byok:` event through `Credential::apply`. Nothing on the write path
//! updates that state; a mutation only waits, in `service::settle`, until the follower has applied
//! its position, so a caller reads its own writes. Resolve itself never reads the disk nor waits
//! on the writer: the credentials and their unwrapped data keys are in memory (ADR 0023).
//!
//! The same follower keeps the API keys that hold the `resolve` scope, by token hash, so a
//! gateway's requests authenticate from memory too ([`Resolver::gateway`]); any other token is
//! looked up in the store as before. A revocation reaches this table the way a credential's
//! does: the revoke answers once the follower applied it.
//!
//! On start the follower replays the log from its first position (the log is the truth; the
//! projection rows are not read) while the server already listens: until it has caught up with
//! the durable position, resolve answers 503 `catching_up` and `/readyz` says so, and mutations
//! do not wait for it (nothing can read their writes from it yet). Once caught up it registers its
//! position with the store, and from then on every mutation waits for it.
//!
//! Plaintext secrets exist only inside a [`Resolution`] (a `Redacted`), never in an error or a
//! log line. Must not import http.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::ServiceError;
use super::accounts::Principal;
use super::clock::SharedClock;
use super::credentials::{data_key, open_sealed};
use crate::crypto::{DataKey, MasterKey, Redacted, TokenHash};
use crate::domain::account::Account;
use crate::domain::account_key::{ApiKey, ApiKeyEvent};
use crate::domain::credential::{self, Binding, Credential, CredentialEvent};
use crate::domain::policy::{self, Policy, PolicyEvent, PolicyMode};
use crate::domain::routing::{
    self, Fallback, FastMap, NoCredential, Reason, Request, Routed, Routes, Specificity,
};
use crate::domain::{AccountId, CredentialId, KeyId, Scope, providers};
use crate::es::{Aggregate, DomainEvent, Envelope};
use crate::metrics;
use crate::storage::Store;

/// Events the follower reads and applies under one write lock.
const BATCH: usize = 1024;
/// How long the follower waits before reading again after a read of the log failed.
const RETRY: Duration = Duration::from_secs(1);

/// The credential resolve picked, with what a gateway needs to call the provider.
pub struct Resolution {
    pub byok_id: CredentialId,
    pub provider: String,
    pub secret_version: u32,
    /// The secret fields, decrypted, and the provider's settings (endpoint, region…).
    pub credentials: Redacted<BTreeMap<String, String>>,
    pub base_url: Option<String>,
    /// The provider-side model id, when a model was asked for.
    pub model: Option<String>,
    pub binding: Option<Binding>,
}

/// One credential's verdict, for `explain`.
pub struct Explained {
    pub byok_id: CredentialId,
    pub provider: String,
    pub alias: String,
    pub weight: u32,
    pub reason: Reason,
    pub binding: Option<Binding>,
    pub specificity: Option<Specificity>,
}

/// What resolve answers.
pub enum Resolved {
    Byok(Box<Resolution>),
    /// No credential is usable and the policy lets the gateway use its own pool.
    Pool(NoCredential),
    /// No credential is usable and the policy is `byok_only`.
    Refused(NoCredential),
}

pub struct Answer {
    pub resolved: Resolved,
    /// Every credential of the account with its verdict, when asked for.
    pub explain: Option<Vec<Explained>>,
}

/// The routing state and what it was derived from.
#[derive(Default)]
struct State {
    routes: Routes,
    /// The unwrapped data key of every credential that is not revoked, with the secret version
    /// it opens: a rotation loads the new version's key in the same step that applies it, so a
    /// resolution opens the secret it reads with that secret's own key.
    keys: FastMap<CredentialId, (u32, DataKey)>,
    /// The routing policy of every account that set one.
    policies: FastMap<AccountId, Policy>,
    /// The live API keys holding the `resolve` scope, and their ids by token hash.
    gateways: FastMap<KeyId, ApiKey>,
    gateway_tokens: FastMap<[u8; 32], KeyId>,
    /// The last log position applied.
    position: u64,
}

struct Shared {
    state: RwLock<State>,
    applied: tokio::sync::watch::Sender<u64>,
    /// Set once the follower has applied the durable position it found after starting.
    caught_up: AtomicBool,
    store: Store,
    master: MasterKey,
}

/// Resolve's state, shared by every worker. Cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    shared: Arc<Shared>,
    clock: SharedClock,
    follower: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Resolver {
    /// Starts the thread that replays the log into the routing state and then follows it. The
    /// server may listen at once: [`Resolver::is_caught_up`] says when the state is whole. While
    /// `hold` says `true` the replay does not begin (tests of a slow start).
    pub fn start(
        store: Store,
        master: MasterKey,
        clock: SharedClock,
        hold: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<Self, ServiceError> {
        let resolver = Self::empty(store, master, clock);
        let shared = resolver.shared.clone();
        let handle = std::thread::Builder::new()
            .name("keyledger-follower".into())
            .spawn(move || follow(&shared, hold))
            .map_err(|e| ServiceError::Store(crate::storage::StoreError::Io(e)))?;
        *resolver
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(resolver)
    }

    fn empty(store: Store, master: MasterKey, clock: SharedClock) -> Self {
        let (applied, _) = tokio::sync::watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                applied,
                caught_up: AtomicBool::new(false),
                store,
                master,
            }),
            clock,
            follower: Arc::default(),
        }
    }

    /// Whether the follower has replayed the log up to the durable position it found on start:
    /// before that, resolve must not answer from a partial state.
    pub fn is_caught_up(&self) -> bool {
        self.shared.caught_up.load(Ordering::Acquire)
    }

    /// Waits for the follower to end, which it does once the store has shut down; it then no
    /// longer holds the store.
    pub fn join(&self) {
        let handle = self
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("resolve's follower panicked");
        }
    }

    /// The routing state replayed from the log up to its durable position, not following it.
    pub fn replayed(
        store: Store,
        master: MasterKey,
        clock: SharedClock,
    ) -> Result<Self, ServiceError> {
        let resolver = Self::empty(store, master, clock);
        while resolver.shared.step()? > 0 {}
        resolver.shared.caught_up.store(true, Ordering::Release);
        Ok(resolver)
    }

    /// The position the routing state has applied.
    pub fn position(&self) -> u64 {
        self.shared.read().position
    }

    /// The principal of a live key with the `resolve` scope whose token hashes to `hash`, from
    /// memory; `None` for every other token (the caller looks it up in the store).
    pub fn gateway(&self, hash: &TokenHash) -> Option<Principal> {
        let state = self.shared.read();
        let key = state.gateways.get(state.gateway_tokens.get(&hash.0)?)?;
        Some(Principal::Key {
            account_id: key.account_id.clone(),
            key_id: key.key_id.clone(),
            prefix: key.prefix.clone(),
            scopes: key.scopes.clone(),
        })
    }

    /// The credentials with a stage or a previous secret due to be retired at `now` (the
    /// rotation sweep's candidates), from memory.
    pub fn due_for_retirement(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<CredentialId> {
        self.shared
            .read()
            .routes
            .all()
            .filter(|c| credential::retirement_due(c).is_some_and(|due| due <= now))
            .map(|c| c.byok_id.clone())
            .collect()
    }

    /// Every active credential with the time its current secret was last probed, for the
    /// periodic prober (`service::health`). Reads memory only.
    pub fn probe_candidates(&self) -> Vec<super::health::Candidate> {
        self.shared
            .read()
            .routes
            .iter()
            .filter(|c| c.state == credential::CredentialState::Active)
            .map(|c| super::health::Candidate {
                account_id: c.account_id.clone(),
                byok_id: c.byok_id.clone(),
                last_tested: c
                    .last_test
                    .as_ref()
                    .filter(|t| t.secret_version == c.secret_version)
                    .map(|t| t.tested_at),
            })
            .collect()
    }

    /// A copy of the routing state, for tests that compare it with a replay.
    pub fn routes(&self) -> Routes {
        self.shared.read().routes.clone()
    }

    /// Picks the account's credential for a request. Reads memory only.
    pub fn resolve(
        &self,
        account_id: &AccountId,
        request: &Request,
        explain: bool,
    ) -> Result<Answer, ServiceError> {
        let answer = self.resolve_with(account_id, request, explain, &mut draw);
        let outcome = match &answer {
            Ok(Answer {
                resolved: Resolved::Byok(_),
                ..
            }) => "byok",
            Ok(Answer {
                resolved: Resolved::Pool(_),
                ..
            }) => "pool",
            Ok(_) | Err(_) => "error",
        };
        metrics::count(|m| m.resolves.with_label_values(&[outcome]).inc());
        answer
    }

    /// [`Resolver::resolve`] with the random draw given (tests fix it).
    pub fn resolve_with(
        &self,
        account_id: &AccountId,
        request: &Request,
        explain: bool,
        draw: &mut dyn FnMut(u64) -> u64,
    ) -> Result<Answer, ServiceError> {
        let now = self.clock.now();
        let state = self.shared.read();
        let routed = state
            .routes
            .resolve(account_id, request, now, explain, draw);
        let explained = match (&routed, explain) {
            (Ok(routed), true) => Some(explained(routed)),
            (Err(_), true) => Some(Vec::new()),
            _ => None,
        };
        let winner = match &routed {
            Ok(r) => r.winner().map(|v| (v.credential, v.binding)),
            Err(_) => None,
        };
        let resolved = match (winner, routed) {
            (Some((credential, binding)), _) => {
                Resolved::Byok(Box::new(resolution(&state, credential, binding, request)?))
            }
            (None, routed) => {
                let reason = routed.err().unwrap_or(NoCredential::NoneUsable);
                match fallback(state.policies.get(account_id), request) {
                    Fallback::Pool => Resolved::Pool(reason),
                    Fallback::Refuse => Resolved::Refused(reason),
                }
            }
        };
        Ok(Answer {
            resolved,
            explain: explained,
        })
    }
}

/// What happens when no credential is usable for this request of this account.
fn fallback(policy: Option<&Policy>, request: &Request) -> Fallback {
    let capability = request.capability.as_deref();
    match policy::effective(policy, capability, request.module.as_deref()).0 {
        PolicyMode::ByokThenPool => Fallback::Pool,
        PolicyMode::ByokOnly => Fallback::Refuse,
    }
}

fn explained(routed: &Routed<'_>) -> Vec<Explained> {
    routed
        .verdicts
        .iter()
        .map(|v| Explained {
            byok_id: v.credential.byok_id.clone(),
            provider: v.credential.profile.provider.clone(),
            alias: v.credential.profile.alias.clone(),
            weight: v.credential.profile.weight,
            reason: v.reason,
            binding: v.binding.cloned(),
            specificity: v.specificity,
        })
        .collect()
}

fn resolution(
    state: &State,
    credential: &Credential,
    binding: Option<&Binding>,
    request: &Request,
) -> Result<Resolution, ServiceError> {
    let key = state
        .keys
        .get(&credential.byok_id)
        .filter(|(version, _)| *version == credential.secret_version)
        .map(|(_, key)| key);
    let key = key.ok_or_else(|| {
        ServiceError::Store(crate::storage::StoreError::Corrupt {
            what: format!("data key of {}", credential.byok_id),
            reason: "not loaded for a credential that is not revoked".into(),
        })
    })?;
    let mut fields = open_sealed(key, credential)?.into_inner();
    for (name, value) in &credential.profile.settings {
        fields.entry(name.clone()).or_insert_with(|| value.clone());
    }
    let profile = &credential.profile;
    Ok(Resolution {
        byok_id: credential.byok_id.clone(),
        provider: profile.provider.clone(),
        secret_version: credential.secret_version,
        credentials: Redacted::new(fields),
        base_url: profile.base_url.clone().or_else(|| {
            providers::get(&profile.provider)
                .and_then(|p| p.default_base_url)
                .map(str::to_owned)
        }),
        model: routing::provider_model(credential, request.model.as_deref()),
        binding: binding.cloned(),
    })
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // The state is replaced whole per event; a panic elsewhere cannot leave it half-written.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the next batch of durable events; answers how many it read.
    fn step(&self) -> Result<usize, ServiceError> {
        let from = self.read().position;
        let page = self.store.read_log(from, BATCH)?;
        let last = page.last;
        if last == from {
            return Ok(0);
        }
        let events = page.events;
        // Only this thread writes the state, so what it reads here is still current when it
        // takes the write lock; the data keys are read and unwrapped before that.
        let mut changed: BTreeMap<CredentialId, Credential> = BTreeMap::new();
        let mut policies: BTreeMap<AccountId, Policy> = BTreeMap::new();
        let mut api_keys: BTreeMap<KeyId, ApiKey> = BTreeMap::new();
        {
            let state = self.read();
            for envelope in &events {
                // One arm per stream kind the routing state is derived from.
                match envelope.stream_id().kind() {
                    credential::KIND => {
                        let Some(event) = decoded::<CredentialEvent>(envelope) else {
                            continue;
                        };
                        let id = CredentialId::parse(envelope.stream_id().id());
                        let Some(id) = id else {
                            continue;
                        };
                        let before = changed
                            .remove(&id)
                            .or_else(|| state.routes.get(&id).cloned());
                        changed.insert(id, Credential::apply(before, &event));
                    }
                    policy::KIND => {
                        let Some(event) = decoded::<PolicyEvent>(envelope) else {
                            continue;
                        };
                        let Some(id) = AccountId::parse(envelope.stream_id().id()) else {
                            continue;
                        };
                        let before = policies
                            .remove(&id)
                            .or_else(|| state.policies.get(&id).cloned());
                        policies.insert(id, Policy::apply(before, &event));
                    }
                    // Keys on their own streams, and on their account's in older stores.
                    kind if kind == ApiKey::KIND
                        || (kind == Account::KIND
                            && ApiKeyEvent::is_key_event(&envelope.event_type)) =>
                    {
                        let Some(event) = decoded::<ApiKeyEvent>(envelope) else {
                            continue;
                        };
                        let id = event.key_id().clone();
                        let before = api_keys
                            .remove(&id)
                            .or_else(|| state.gateways.get(&id).cloned());
                        api_keys.insert(id, ApiKey::apply(before, &event));
                    }
                    _ => {}
                }
            }
        }
        let mut keys = Vec::new();
        for credential in changed.values() {
            let key = if credential.is_revoked() {
                None
            } else if let Some((version, key)) = self.read().keys.get(&credential.byok_id)
                && *version == credential.secret_version
            {
                Some((*version, key.clone()))
            } else {
                match data_key(&self.store, &self.master, credential) {
                    Ok(key) => Some((credential.secret_version, key)),
                    Err(error) => {
                        tracing::error!(byok_id = %credential.byok_id, %error,
                            "resolve cannot load a credential's data key; it will not be served");
                        None
                    }
                }
            };
            keys.push((credential.byok_id.clone(), key));
        }
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for (id, key) in keys {
                match key {
                    Some(key) => state.keys.insert(id, key),
                    None => state.keys.remove(&id),
                };
            }
            for credential in changed.into_values() {
                state.routes.put(credential);
            }
            state.policies.extend(policies);
            for (id, key) in api_keys {
                if let Some(old) = state.gateways.remove(&id) {
                    remove_token(&mut state.gateway_tokens, &old);
                }
                if key.allows(Scope::Resolve)
                    && let Some(hash) = TokenHash::from_hex(&key.token_hash)
                {
                    state.gateway_tokens.insert(hash.0, id.clone());
                    state.gateways.insert(id, key);
                }
            }
            state.position = last;
        }
        self.applied.send_replace(last);
        Ok(usize::try_from(last - from).unwrap_or(usize::MAX))
    }

    fn report_lag(&self) {
        let durable = *self.store.positions().borrow();
        let applied = self.read().position;
        let lag = i64::try_from(durable.saturating_sub(applied)).unwrap_or(i64::MAX);
        metrics::count(|m| m.follower_lag.set(lag));
    }
}

fn remove_token(tokens: &mut FastMap<[u8; 32], KeyId>, key: &ApiKey) {
    if let Some(hash) = TokenHash::from_hex(&key.token_hash) {
        tokens.remove(&hash.0);
    }
}

/// An event as stored, or `None` (logged, counted) when it does not decode: the projections
/// refused it too, and one bad record must not stop resolve for every account.
fn decoded<E: DomainEvent>(envelope: &Envelope) -> Option<E> {
    match E::from_envelope(envelope) {
        Ok(event) => Some(event),
        Err(error) => {
            tracing::error!(position = envelope.position, %error,
                "resolve skips an event that does not decode");
            metrics::count(|m| m.corrupt_records.inc());
            None
        }
    }
}

/// The follower: applies durable events as they come, until the store stops.
fn follow(shared: &Shared, hold: Option<tokio::sync::watch::Receiver<bool>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "resolve's follower cannot start; resolve stays at its start");
            return;
        }
    };
    let mut positions = shared.store.positions();
    let mut registered = false;
    runtime.block_on(async {
        if let Some(mut hold) = hold
            && hold.wait_for(|held| !*held).await.is_err()
        {
            return;
        }
        loop {
            shared.report_lag();
            match shared.step() {
                Ok(0) => {
                    if !shared.caught_up.load(Ordering::Acquire) {
                        if !registered {
                            // From here on every mutation waits for this follower. One more
                            // pass then applies whatever was acknowledged before it did.
                            shared.store.follow(shared.applied.subscribe());
                            registered = true;
                            continue;
                        }
                        shared.caught_up.store(true, Ordering::Release);
                        tracing::info!(
                            position = shared.read().position,
                            "resolve's follower caught up with the log"
                        );
                    }
                    // Caught up: wait for the next durable group. A closed channel is the
                    // store shutting down.
                    if positions.changed().await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(%error, "resolve's follower cannot read the log; retrying");
                    // A store that stopped ends the follower, damaged or not.
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        changed = positions.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                    if !shared.store.is_running() {
                        return;
                    }
                }
            }
        }
    });
}

thread_local! {
    /// Each worker's generator for the weighted pick, seeded from the operating system.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // Without the system's randomness the pick is still weighted, only predictable.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes) | 1
}

/// A number in `0..total` (splitmix64: fast, and good enough for spreading load).
fn draw(total: u64) -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % total.max(1)
    })
}

#[cfg(test)]
mod tests;
