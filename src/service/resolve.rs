//! Resolve: the data plane a gateway calls on every request. It answers from an in-memory
//! routing state ([`Routes`]) that a follower derives from the log by position, as a follower
//! server would (docs/design.md §12): a thread reads the durable events after the position it has
//! applied and applies each `byok:` event through `Credential::apply`. Nothing on the write path
//! updates that state; a mutation only waits, in `service::settle`, until the follower has applied
//! its position, so a caller reads its own writes. Resolve itself never reads the disk nor waits
//! on the writer: the credentials and their unwrapped data keys are in memory (ADR 0023).
//!
//! On start the follower replays the log from its first position (the log is the truth; the
//! projection rows are not read), before the server listens.
//!
//! Plaintext secrets exist only inside a [`Resolution`] (a `Redacted`), never in an error or a
//! log line. Must not import http.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use super::ServiceError;
use super::clock::SharedClock;
use super::credentials::{data_key, open_sealed};
use crate::crypto::{DataKey, MasterKey, Redacted};
use crate::domain::credential::{self, Binding, Credential, CredentialEvent};
use crate::domain::policy::{self, Policy, PolicyEvent, PolicyMode};
use crate::domain::routing::{
    self, Fallback, NoCredential, Reason, Request, Routed, Routes, Specificity,
};
use crate::domain::{AccountId, CredentialId, providers};
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
    /// The unwrapped data key of every credential that is not revoked.
    keys: HashMap<CredentialId, DataKey>,
    /// The routing policy of every account that set one.
    policies: HashMap<AccountId, Policy>,
    /// The last log position applied.
    position: u64,
}

struct Shared {
    state: RwLock<State>,
    applied: tokio::sync::watch::Sender<u64>,
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
    /// Replays the log into the routing state, registers the follower's position with the
    /// store (mutations wait on it), and starts the thread that follows the log from there.
    pub fn start(
        store: Store,
        master: MasterKey,
        clock: SharedClock,
    ) -> Result<Self, ServiceError> {
        let resolver = Self::replayed(store, master, clock)?;
        resolver
            .shared
            .store
            .follow(resolver.shared.applied.subscribe());
        let shared = resolver.shared.clone();
        let handle = std::thread::Builder::new()
            .name("keyledger-follower".into())
            .spawn(move || follow(&shared))
            .map_err(|e| ServiceError::Store(crate::storage::StoreError::Io(e)))?;
        *resolver
            .follower
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(resolver)
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
        let (applied, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            state: RwLock::new(State::default()),
            applied,
            store,
            master,
        });
        loop {
            match shared.step() {
                Ok(0) => break,
                Ok(_) => {}
                // A log sled cannot read must not keep the server from serving (it is never
                // ready then, ADR 0015): resolve answers from what was read, and the follower
                // tries again.
                Err(error) => {
                    tracing::error!(%error, "resolve cannot replay the whole log; retrying later");
                    break;
                }
            }
        }
        Ok(Self {
            shared,
            clock,
            follower: Arc::default(),
        })
    }

    /// The position the routing state has applied.
    pub fn position(&self) -> u64 {
        self.shared.read().position
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
        self.resolve_with(account_id, request, explain, &mut draw)
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
    let key = state.keys.get(&credential.byok_id).ok_or_else(|| {
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
                    _ => {}
                }
            }
        }
        let mut keys = Vec::new();
        for credential in changed.values() {
            let key = if credential.is_revoked() {
                None
            } else if let Some(key) = self.read().keys.get(&credential.byok_id) {
                Some(key.clone())
            } else {
                match data_key(&self.store, &self.master, credential) {
                    Ok(key) => Some(key),
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
fn follow(shared: &Shared) {
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
    runtime.block_on(async {
        loop {
            shared.report_lag();
            match shared.step() {
                Ok(0) => {
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
