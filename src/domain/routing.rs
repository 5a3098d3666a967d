//! Routing: which of an account's credentials serves a request (docs/routing.md). Pure: the
//! credentials, the request, the time and the random draw all arrive as arguments, so the rules
//! can be tested against a reference model and replayed with a fixed draw.
//!
//! - [`refusal`]: the filters (state, quota, health, provider, self_hosted, residency, model lists,
//!   bindings), each with a stable [`Reason`] code;
//! - [`best_match`] and [`Specificity`]: the most specific matching binding (model, then
//!   capability, then module; an unbound credential matches everything at the lowest rank);
//! - [`route`]: every credential's verdict and the weighted pick among the best-ranked;
//! - [`Routes`]: the in-memory state resolve answers from, one [`Credential`] per id, indexed by
//!   account and binding so a request looks at its own buckets only.
//!
//! Must not import crypto, storage, service or HTTP.

use std::collections::{BTreeSet, HashMap};

/// The maps resolve reads on every request: foldhash, randomly seeded per map (see Cargo.toml).
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::credential::{Binding, Credential, CredentialState};
use crate::domain::health::{self, Health};
use crate::domain::{AccountId, CredentialId};

/// The provider that is only ever resolved when a request names it.
pub const SELF_HOSTED: &str = "self_hosted";

/// What a gateway asks for. Every field is optional; a field left out does not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub capability: Option<String>,
    pub module: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub residency: Option<String>,
    /// Names one credential: only it can be picked (self_hosted included).
    pub byok_id: Option<CredentialId>,
}

/// How specific a matching binding is. Compared field by field in declaration order, so a
/// binding that sets the model beats any that does not, then capability, then module. An
/// unbound credential is [`Specificity::UNBOUND`], below every binding (a binding always sets
/// a capability or a module).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Specificity {
    pub model: bool,
    pub capability: bool,
    pub module: bool,
}

impl Specificity {
    pub const UNBOUND: Specificity = Specificity {
        model: false,
        capability: false,
        module: false,
    };

    pub fn of(binding: &Binding) -> Self {
        Specificity {
            model: binding.model.is_some(),
            capability: binding.capability.is_some(),
            module: binding.module.is_some(),
        }
    }
}

/// Why a credential won or lost; the strings are stable (clients and docs/routing.md use them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The weighted pick chose it.
    Picked,
    /// Ranked best, but the weighted pick chose another of the same rank.
    NotPicked,
    /// Usable, but another credential's binding is more specific.
    Outranked,
    /// The request named another credential (`byok_id`).
    NotRequested,
    Revoked,
    Disabled,
    /// Over its quota until the window frees it.
    OverQuota,
    // Health (docs/health.md).
    /// Its health is `failing`: the provider refused its secret.
    Unhealthy,
    /// Its health is `rate_limited` and the cooldown has not ended.
    CoolingDown,
    ProviderMismatch,
    /// A self_hosted credential, and the request named neither `provider: self_hosted` nor it.
    SelfHostedNotNamed,
    ResidencyMismatch,
    /// The requested model is in its `blacklisted_models`.
    ModelBlacklisted,
    /// The requested model is not in its (non-empty) `models`.
    ModelNotAllowed,
    /// It has bindings, and none matches the request.
    BindingMismatch,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Picked => "picked",
            Reason::NotPicked => "not_picked",
            Reason::Outranked => "outranked",
            Reason::NotRequested => "not_requested",
            Reason::Revoked => "revoked",
            Reason::Disabled => "disabled",
            Reason::OverQuota => "over_quota",
            Reason::Unhealthy => "unhealthy",
            Reason::CoolingDown => "cooling_down",
            Reason::ProviderMismatch => "provider_mismatch",
            Reason::SelfHostedNotNamed => "self_hosted_not_named",
            Reason::ResidencyMismatch => "residency_mismatch",
            Reason::ModelBlacklisted => "model_blacklisted",
            Reason::ModelNotAllowed => "model_not_allowed",
            Reason::BindingMismatch => "binding_mismatch",
        }
    }

    /// Every reason, in the order [`refusal`] checks the filters (then the ranking outcomes).
    pub const ALL: [Reason; 15] = [
        Reason::NotRequested,
        Reason::Revoked,
        Reason::Disabled,
        Reason::OverQuota,
        Reason::Unhealthy,
        Reason::CoolingDown,
        Reason::ProviderMismatch,
        Reason::SelfHostedNotNamed,
        Reason::ResidencyMismatch,
        Reason::ModelBlacklisted,
        Reason::ModelNotAllowed,
        Reason::BindingMismatch,
        Reason::Outranked,
        Reason::NotPicked,
        Reason::Picked,
    ];
}

/// Until when a credential is out of resolve over its quota, if it is.
pub fn excluded_until(credential: &Credential) -> Option<DateTime<Utc>> {
    credential.quota_exceeded.as_ref().map(|q| q.until)
}

/// The provider's id for the requested model.
pub fn provider_model(credential: &Credential, requested: Option<&str>) -> Option<String> {
    requested.map(|m| {
        credential
            .profile
            .model_map
            .get(m)
            .map_or(m, String::as_str)
            .to_owned()
    })
}

/// Whether a binding matches: every field it sets equals the request's.
pub fn binding_matches(binding: &Binding, request: &Request) -> bool {
    let field = |set: &Option<String>, asked: &Option<String>| {
        set.as_ref().is_none_or(|s| asked.as_ref() == Some(s))
    };
    field(&binding.capability, &request.capability)
        && field(&binding.module, &request.module)
        && field(&binding.model, &request.model)
}

/// The credential's most specific matching binding, `(UNBOUND, None)` for a credential without
/// bindings, `None` when it has bindings and none matches. Among bindings of equal specificity
/// the first in the profile's (sorted) order is named.
pub fn best_match<'c>(
    credential: &'c Credential,
    request: &Request,
) -> Option<(Specificity, Option<&'c Binding>)> {
    let bindings = &credential.profile.bindings;
    if bindings.is_empty() {
        return Some((Specificity::UNBOUND, None));
    }
    let mut best: Option<(Specificity, &Binding)> = None;
    for binding in bindings.iter().filter(|b| binding_matches(b, request)) {
        let rank = Specificity::of(binding);
        if best.is_none_or(|(r, _)| rank > r) {
            best = Some((rank, binding));
        }
    }
    best.map(|(rank, binding)| (rank, Some(binding)))
}

/// The first filter the credential fails for this request at `now`, if any.
pub fn refusal(credential: &Credential, request: &Request, now: DateTime<Utc>) -> Option<Reason> {
    let profile = &credential.profile;
    if request
        .byok_id
        .as_ref()
        .is_some_and(|id| *id != credential.byok_id)
    {
        return Some(Reason::NotRequested);
    }
    match credential.state {
        CredentialState::Revoked => return Some(Reason::Revoked),
        CredentialState::Disabled => return Some(Reason::Disabled),
        CredentialState::Active => {}
    }
    if excluded_until(credential).is_some_and(|until| until > now) {
        return Some(Reason::OverQuota);
    }
    // Health: a refused secret is out until evidence says it works; a paused one until its
    // cooldown ends, by time, like a quota's `until`.
    match credential.health {
        Health::Failing => return Some(Reason::Unhealthy),
        h if health::cooling_down(h, credential.health_until, now) => {
            return Some(Reason::CoolingDown);
        }
        _ => {}
    }
    if request
        .provider
        .as_ref()
        .is_some_and(|p| *p != profile.provider)
    {
        return Some(Reason::ProviderMismatch);
    }
    if profile.provider == SELF_HOSTED && request.provider.is_none() && request.byok_id.is_none() {
        return Some(Reason::SelfHostedNotNamed);
    }
    if request
        .residency
        .as_ref()
        .is_some_and(|r| *r != profile.residency)
    {
        return Some(Reason::ResidencyMismatch);
    }
    if let Some(model) = &request.model {
        if contains(&profile.blacklisted_models, model) {
            return Some(Reason::ModelBlacklisted);
        }
        if !profile.models.is_empty() && !contains(&profile.models, model) {
            return Some(Reason::ModelNotAllowed);
        }
    }
    if best_match(credential, request).is_none() {
        return Some(Reason::BindingMismatch);
    }
    None
}

/// The model lists are sorted (the profile's validation sorts them); a log written otherwise
/// still answers right, only slower.
fn contains(sorted: &[String], model: &str) -> bool {
    sorted.binary_search_by(|m| m.as_str().cmp(model)).is_ok() || {
        !sorted.is_sorted() && sorted.iter().any(|m| m == model)
    }
}

/// One credential's outcome for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict<'c> {
    pub credential: &'c Credential,
    pub reason: Reason,
    /// The binding it matched with, when it matched one.
    pub binding: Option<&'c Binding>,
    /// Its rank, when it passed every filter.
    pub specificity: Option<Specificity>,
}

/// The outcome of a request over a set of credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routed<'c> {
    /// Every credential looked at, by `byok_id`.
    pub verdicts: Vec<Verdict<'c>>,
    /// The index in `verdicts` of the one picked.
    pub chosen: Option<usize>,
}

impl<'c> Routed<'c> {
    pub fn winner(&self) -> Option<&Verdict<'c>> {
        self.chosen.and_then(|i| self.verdicts.get(i))
    }
}

/// Routes `request` over `credentials`: every credential's verdict, and among those of the best
/// rank a pick weighted by `weight`. `draw(total)` answers a number in `0..total` (a larger one
/// is taken modulo `total`); it is called once, and only when there is something to pick from.
/// Ties are ordered by `byok_id` before the draw, so the outcome does not depend on the order
/// the credentials arrive in.
pub fn route<'c>(
    credentials: impl IntoIterator<Item = &'c Credential>,
    request: &Request,
    now: DateTime<Utc>,
    draw: &mut dyn FnMut(u64) -> u64,
) -> Routed<'c> {
    let mut verdicts: Vec<Verdict<'c>> = credentials
        .into_iter()
        .map(|credential| match refusal(credential, request, now) {
            Some(reason) => Verdict {
                credential,
                reason,
                binding: best_match(credential, request).and_then(|(_, b)| b),
                specificity: None,
            },
            None => {
                let (rank, binding) =
                    best_match(credential, request).unwrap_or((Specificity::UNBOUND, None));
                Verdict {
                    credential,
                    reason: Reason::Outranked,
                    binding,
                    specificity: Some(rank),
                }
            }
        })
        .collect();
    verdicts.sort_by(|a, b| a.credential.byok_id.cmp(&b.credential.byok_id));
    verdicts.dedup_by(|a, b| a.credential.byok_id == b.credential.byok_id);
    let Some(best) = verdicts.iter().filter_map(|v| v.specificity).max() else {
        return Routed {
            verdicts,
            chosen: None,
        };
    };
    let tied: Vec<usize> = (0..verdicts.len())
        .filter(|&i| verdicts[i].specificity == Some(best))
        .collect();
    let weight = |i: usize| u64::from(verdicts[i].credential.profile.weight.max(1));
    let total: u64 = tied.iter().map(|&i| weight(i)).sum();
    let mut point = draw(total) % total.max(1);
    let mut chosen = tied[tied.len() - 1];
    for &i in &tied {
        if point < weight(i) {
            chosen = i;
            break;
        }
        point -= weight(i);
    }
    for &i in &tied {
        verdicts[i].reason = if i == chosen {
            Reason::Picked
        } else {
            Reason::NotPicked
        };
    }
    Routed {
        verdicts,
        chosen: Some(chosen),
    }
}

/// Why nothing was picked, for `{source: "pool", reason}` and the `byok_only` refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoCredential {
    /// The account has no credential at all.
    NoCredentials,
    /// The request named a `byok_id` the account does not have.
    NotFound,
    /// The account has credentials, and none passed the filters for this request.
    NoneUsable,
}

impl NoCredential {
    pub fn as_str(self) -> &'static str {
        match self {
            NoCredential::NoCredentials => "no_credentials",
            NoCredential::NotFound => "byok_id_not_found",
            NoCredential::NoneUsable => "none_usable",
        }
    }
}

/// What happens when no credential is usable: the account's policy for the request's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// `byok_then_pool`: the gateway uses its own pool.
    Pool,
    /// `byok_only`: the request is refused.
    Refuse,
}

/// The in-memory routing state: every credential's current state, indexed by account and by
/// binding. Built only by [`Routes::put`] from the aggregates a follower of the log applies, so
/// it equals a fresh replay of the log at the same position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    credentials: FastMap<CredentialId, Credential>,
    accounts: FastMap<AccountId, AccountRoutes>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct AccountRoutes {
    all: BTreeSet<CredentialId>,
    unbound: BTreeSet<CredentialId>,
    bound: FastMap<Binding, BTreeSet<CredentialId>>,
}

impl AccountRoutes {
    fn remove(&mut self, credential: &Credential) {
        let id = &credential.byok_id;
        self.all.remove(id);
        self.unbound.remove(id);
        for binding in &credential.profile.bindings {
            if let Some(ids) = self.bound.get_mut(binding) {
                ids.remove(id);
                if ids.is_empty() {
                    self.bound.remove(binding);
                }
            }
        }
    }

    fn insert(&mut self, credential: &Credential) {
        let id = &credential.byok_id;
        self.all.insert(id.clone());
        if credential.profile.bindings.is_empty() {
            self.unbound.insert(id.clone());
        }
        for binding in &credential.profile.bindings {
            self.bound
                .entry(binding.clone())
                .or_default()
                .insert(id.clone());
        }
    }

    fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

impl Routes {
    /// Records a credential's state after an event of its stream.
    pub fn put(&mut self, credential: Credential) {
        if let Some(old) = self.credentials.remove(&credential.byok_id)
            && let Some(account) = self.accounts.get_mut(&old.account_id)
        {
            account.remove(&old);
            if account.is_empty() {
                self.accounts.remove(&old.account_id);
            }
        }
        self.accounts
            .entry(credential.account_id.clone())
            .or_default()
            .insert(&credential);
        self.credentials
            .insert(credential.byok_id.clone(), credential);
    }

    pub fn get(&self, byok_id: &CredentialId) -> Option<&Credential> {
        self.credentials.get(byok_id)
    }

    /// Every credential, in no order.
    pub fn all(&self) -> impl Iterator<Item = &Credential> {
        self.credentials.values()
    }

    pub fn len(&self) -> usize {
        self.credentials.len()
    }

    /// Every credential, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &Credential> {
        self.credentials.values()
    }

    pub fn is_empty(&self) -> bool {
        self.credentials.is_empty()
    }

    /// The account's credentials, by id.
    pub fn account<'s>(&'s self, account_id: &AccountId) -> impl Iterator<Item = &'s Credential> {
        self.accounts
            .get(account_id)
            .into_iter()
            .flat_map(|a| a.all.iter())
            .filter_map(|id| self.credentials.get(id))
    }

    fn lookup<'s>(
        &'s self,
        ids: impl IntoIterator<Item = &'s CredentialId>,
    ) -> Vec<&'s Credential> {
        ids.into_iter()
            .filter_map(|id| self.credentials.get(id))
            .collect()
    }

    /// Routes a request of the account; `Err` when there is nothing to look at (no credential,
    /// or a `byok_id` the account does not have), a [`Routed`] without a winner when nothing
    /// passed the filters ([`NoCredential::NoneUsable`]). With `explain`, every credential of the account gets
    /// a verdict; without, only those whose bindings could match (the request's own binding
    /// buckets, then, if none of those is usable, the unbound ones), which picks the same
    /// credential with the same draw: a credential outside those buckets can never win.
    pub fn resolve(
        &self,
        account_id: &AccountId,
        request: &Request,
        now: DateTime<Utc>,
        explain: bool,
        draw: &mut dyn FnMut(u64) -> u64,
    ) -> Result<Routed<'_>, NoCredential> {
        let Some(account) = self.accounts.get(account_id) else {
            return Err(NoCredential::NoCredentials);
        };
        if let Some(id) = &request.byok_id
            && !account.all.contains(id)
        {
            return Err(NoCredential::NotFound);
        }
        let routed = if explain {
            route(self.account(account_id), request, now, draw)
        } else if let Some(id) = &request.byok_id {
            route(self.lookup(account.all.get(id)), request, now, draw)
        } else {
            // A credential in several of the buckets is looked at once: `route` keeps one
            // verdict per credential.
            let keys = binding_keys(request);
            let ids = keys
                .iter()
                .filter_map(|key| account.bound.get(key))
                .flatten();
            let bound = route(self.lookup(ids), request, now, draw);
            if bound.chosen.is_some() {
                bound
            } else {
                route(self.lookup(&account.unbound), request, now, draw)
            }
        };
        Ok(routed)
    }
}

/// Every binding that can match the request: each field either unset or the request's, with a
/// capability or a module set.
fn binding_keys(request: &Request) -> Vec<Binding> {
    let choices = |asked: &Option<String>| match asked {
        Some(v) => vec![None, Some(v.clone())],
        None => vec![None],
    };
    let mut keys = Vec::new();
    for capability in choices(&request.capability) {
        for module in choices(&request.module) {
            if capability.is_none() && module.is_none() {
                continue;
            }
            for model in choices(&request.model) {
                keys.push(Binding {
                    capability: capability.clone(),
                    module: module.clone(),
                    model,
                });
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests;
