//! The credential aggregate: one provider credential a tenant brought (BYOK), its routing
//! configuration and its lifecycle. One stream per credential (`byok:<byok_id>`).
//!
//! Pure: ids, times, the sealed secret (ciphertext, opaque here) and its hint arrive in commands.
//! The only plaintext secrets this module sees are in [`RegisterRequest`], which
//! [`prepare_register`] validates and hands back for sealing; no event, error message or `Debug`
//! output carries one. Must not import crypto, storage or HTTP.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::providers::{self, ProviderCredentials};
use crate::es::{Aggregate, DomainEvent};

/// Stream kind, never renamed: streams are `byok:<byok_id>`.
pub const KIND: &str = "byok";
/// Prefix of credential ids (`byok_01J…`).
pub const ID_PREFIX: &str = "byok";
pub const MAX_ALIAS_LEN: usize = 64;
pub const MAX_LABEL_LEN: usize = 128;
pub const MIN_WEIGHT: u32 = 1;
pub const MAX_WEIGHT: u32 = 1000;
pub const DEFAULT_WEIGHT: u32 = 100;
/// Most entries in `models` or `blacklisted_models`.
pub const MAX_MODELS: usize = 256;
/// Longest model, capability or module name.
pub const MAX_NAME_LEN: usize = 128;
/// Longest secret hint a command may carry: anything longer is a bug that could leak a secret.
pub const MAX_HINT_LEN: usize = 4;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("the credential already exists")]
    AlreadyExists,
    #[error("no such credential")]
    NotFound,
    /// Revocation is final: nothing but another (no-op) revoke is accepted afterwards.
    #[error("the credential is revoked; a revoked credential cannot be changed")]
    Revoked,
    /// A request field is wrong; `param` is its dotted path (`credentials.api_key`,
    /// `models[2]`, `base_url`). The message never contains a secret.
    #[error("{message}")]
    Invalid { param: String, message: String },
}

impl CredentialError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// Lifecycle state. `revoked` is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
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
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct Binding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl Binding {
    /// Validates a binding; errors name `capability`, `module` or `model`.
    pub fn new(
        capability: Option<String>,
        module: Option<String>,
        model: Option<String>,
    ) -> Result<Self, CredentialError> {
        Binding {
            capability,
            module,
            model,
        }
        .validated()
    }

    pub fn validated(self) -> Result<Self, CredentialError> {
        if self.capability.is_none() && self.module.is_none() {
            return Err(CredentialError::invalid(
                "capability",
                "a binding needs a capability or a module (a model alone does not bind)",
            ));
        }
        for (param, value) in [
            ("capability", &self.capability),
            ("module", &self.module),
            ("model", &self.model),
        ] {
            if let Some(value) = value {
                validate_name(param, value)?;
            }
        }
        Ok(self)
    }
}

/// The state of one credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub byok_id: String,
    pub account_id: String,
    pub provider: String,
    pub alias: String,
    pub label: Option<String>,
    pub state: CredentialState,
    /// The secret's version: 1 at registration, +1 on each rotation.
    pub version: u32,
    /// Last four characters of the identifying secret (may be empty; see
    /// [`providers::secret_hint`]).
    pub secret_hint: String,
    /// The sealed secret fields (base64 ciphertext); opaque here.
    pub sealed_secret: String,
    /// The provider's non-secret credential fields (azure `endpoint`, bedrock `region`…).
    pub settings: BTreeMap<String, String>,
    /// What resolve's `residency` filter matches: `declared_region`, else the provider's.
    pub residency: String,
    pub declared_region: Option<String>,
    pub base_url: Option<String>,
    /// Allow-list, sorted; empty means every model.
    pub models: Vec<String>,
    /// Deny-list, sorted; wins over `models`.
    pub blacklisted_models: Vec<String>,
    pub weight: u32,
    /// Sorted and without duplicates; empty means "matches every request at the lowest rank".
    pub bindings: Vec<Binding>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Credential {
    pub fn is_revoked(&self) -> bool {
        self.state == CredentialState::Revoked
    }
}

/// The register request as the HTTP layer decodes it. Holds plaintext secrets: its `Debug`
/// shows field names only.
#[derive(Clone, Default)]
pub struct RegisterRequest {
    pub provider: String,
    /// Required; `Option` so that a missing alias is answered with `param: alias`.
    pub alias: Option<String>,
    /// Shorthand for `credentials.api_key`.
    pub api_key: Option<String>,
    pub credentials: BTreeMap<String, String>,
    pub label: Option<String>,
    pub base_url: Option<String>,
    pub declared_region: Option<String>,
    pub models: Vec<String>,
    pub blacklisted_models: Vec<String>,
    /// Defaults to [`DEFAULT_WEIGHT`].
    pub weight: Option<u32>,
    pub capability: Option<String>,
    pub module: Option<String>,
    pub model: Option<String>,
}

impl std::fmt::Debug for RegisterRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisterRequest")
            .field("provider", &self.provider)
            .field("alias", &self.alias)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .field("label", &self.label)
            .field("base_url", &self.base_url)
            .field("declared_region", &self.declared_region)
            .field("models", &self.models)
            .field("blacklisted_models", &self.blacklisted_models)
            .field("weight", &self.weight)
            .field("capability", &self.capability)
            .field("module", &self.module)
            .field("model", &self.model)
            .finish()
    }
}

/// Everything about a credential except its secret, validated and normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialSpec {
    pub provider: String,
    pub alias: String,
    pub label: Option<String>,
    pub base_url: Option<String>,
    pub declared_region: Option<String>,
    pub models: Vec<String>,
    pub blacklisted_models: Vec<String>,
    pub weight: u32,
    pub bindings: Vec<Binding>,
    /// Non-secret credential fields only; a secret field here is refused.
    pub settings: BTreeMap<String, String>,
}

impl CredentialSpec {
    /// Validates and normalises every field, reporting the first fault in a stable order:
    /// provider, alias, credentials, base_url, declared_region, label, weight, models,
    /// blacklisted_models, binding. Idempotent: a validated spec validates to itself.
    pub fn validated(self) -> Result<Self, CredentialError> {
        let provider = providers::provider(&self.provider)?;
        let alias = validate_alias(&self.alias)?;
        let settings = provider.validate_settings(&self.settings)?;
        let base_url = provider.validate_base_url(self.base_url.as_deref())?;
        let declared_region = provider.validate_declared_region(self.declared_region.as_deref())?;
        let label = validate_label(self.label.as_deref())?;
        let weight = validate_weight(Some(self.weight))?;
        let models = validate_models("models", self.models)?;
        let blacklisted_models = validate_models("blacklisted_models", self.blacklisted_models)?;
        let mut bindings = self
            .bindings
            .into_iter()
            .map(Binding::validated)
            .collect::<Result<Vec<_>, _>>()?;
        bindings.sort();
        bindings.dedup();
        Ok(CredentialSpec {
            provider: provider.id.to_owned(),
            alias,
            label,
            base_url,
            declared_region,
            models,
            blacklisted_models,
            weight,
            bindings,
            settings,
        })
    }
}

/// A validated register request: the spec goes into the command, the credentials' `secrets`
/// get sealed and their `hint` becomes `secret_hint`.
#[derive(Clone, Debug)]
pub struct Registration {
    pub spec: CredentialSpec,
    pub credentials: ProviderCredentials,
}

/// Validates a register request before anything is sealed.
pub fn prepare_register(request: RegisterRequest) -> Result<Registration, CredentialError> {
    let provider = providers::provider(&request.provider)?;
    let alias = match request.alias.as_deref() {
        None => return Err(CredentialError::invalid("alias", "alias is required")),
        Some(alias) => validate_alias(alias)?,
    };
    if request.api_key.is_some() && provider.field("api_key").is_none() {
        return Err(CredentialError::invalid(
            "api_key",
            format!(
                "{} takes no api_key; its credentials are: {}",
                provider.id,
                provider.info().required_fields.join(", ")
            ),
        ));
    }
    let merged = providers::merge_api_key(request.credentials, request.api_key)?;
    let credentials = provider.validate_credentials(merged)?;
    let bindings = match (request.capability, request.module, request.model) {
        (None, None, None) => vec![],
        (capability, module, model) => vec![Binding {
            capability,
            module,
            model,
        }],
    };
    let spec = CredentialSpec {
        provider: provider.id.to_owned(),
        alias,
        label: request.label,
        base_url: request.base_url,
        declared_region: request.declared_region,
        models: request.models,
        blacklisted_models: request.blacklisted_models,
        weight: request.weight.unwrap_or(DEFAULT_WEIGHT),
        bindings,
        settings: credentials.settings.clone(),
    }
    .validated()?;
    Ok(Registration { spec, credentials })
}

/// Checks an alias: 1 to 64 characters of `a-z`, `0-9`, `_` and `-`, starting with a letter or
/// digit. Aliases are handles in URLs, logs and configuration files, so they are kept to a
/// character set that never needs quoting; upper case is refused rather than folded, so what is
/// stored is what was typed.
pub fn validate_alias(raw: &str) -> Result<String, CredentialError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_ALIAS_LEN
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok {
        return Err(CredentialError::invalid(
            "alias",
            format!(
                "alias must be 1 to {MAX_ALIAS_LEN} characters of a-z, 0-9, '_' and '-', \
                 starting with a letter or digit"
            ),
        ));
    }
    Ok(raw.to_owned())
}

/// Checks a label: trimmed, at most 128 characters, no control characters. An empty label is
/// no label.
pub fn validate_label(raw: Option<&str>) -> Result<Option<String>, CredentialError> {
    let Some(label) = raw.map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    if label.chars().count() > MAX_LABEL_LEN {
        return Err(CredentialError::invalid(
            "label",
            format!("label must be at most {MAX_LABEL_LEN} characters"),
        ));
    }
    if label.chars().any(char::is_control) {
        return Err(CredentialError::invalid(
            "label",
            "label must not contain control characters",
        ));
    }
    Ok(Some(label.to_owned()))
}

/// Checks a load-balancing weight: 1 to 1000, default 100. To take a credential out of
/// rotation, disable it.
pub fn validate_weight(raw: Option<u32>) -> Result<u32, CredentialError> {
    match raw {
        None => Ok(DEFAULT_WEIGHT),
        Some(w) if (MIN_WEIGHT..=MAX_WEIGHT).contains(&w) => Ok(w),
        Some(_) => Err(CredentialError::invalid(
            "weight",
            format!("weight must be between {MIN_WEIGHT} and {MAX_WEIGHT}"),
        )),
    }
}

/// Checks a model list (`models` or `blacklisted_models`): at most 256 entries, each a model
/// name (see [`validate_name`]); errors name the entry as `param[i]`. Answers it sorted and
/// without duplicates: the lists are sets, and a canonical form makes "nothing changed" exact.
pub fn validate_models(param: &str, models: Vec<String>) -> Result<Vec<String>, CredentialError> {
    if models.len() > MAX_MODELS {
        return Err(CredentialError::invalid(
            param,
            format!("{param} must have at most {MAX_MODELS} entries"),
        ));
    }
    for (i, model) in models.iter().enumerate() {
        validate_name(&format!("{param}[{i}]"), model)?;
    }
    let mut models = models;
    models.sort();
    models.dedup();
    Ok(models)
}

/// Checks a model, capability or module name: 1 to 128 characters, no whitespace or control
/// characters (`gpt-4o`, `anthropic/claude-3.5-sonnet`, `llama3:8b`, `claude-3@20240229`).
pub fn validate_name(param: &str, value: &str) -> Result<(), CredentialError> {
    if value.is_empty() || value.chars().count() > MAX_NAME_LEN {
        return Err(CredentialError::invalid(
            param,
            format!("{param} must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CredentialError::invalid(
            param,
            format!("{param} must not contain whitespace"),
        ));
    }
    Ok(())
}

/// A credential to register, with everything decided outside the pure core.
#[derive(Clone, Debug)]
pub struct NewCredential {
    pub byok_id: String,
    pub account_id: String,
    pub spec: CredentialSpec,
    /// Base64 ciphertext of the secret fields.
    pub sealed_secret: String,
    /// At most four characters, from [`ProviderCredentials::hint`].
    pub secret_hint: String,
    pub at: DateTime<Utc>,
}

/// A partial update: each field present is set, each absent one kept. For the clearable fields
/// `Some(None)` clears. Secrets are not changed here (that is rotation).
#[derive(Clone, Debug)]
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
    pub at: DateTime<Utc>,
}

impl CredentialPatch {
    /// A patch that changes nothing, to fill in.
    pub fn at(at: DateTime<Utc>) -> Self {
        Self {
            alias: None,
            label: None,
            base_url: None,
            declared_region: None,
            models: None,
            blacklisted_models: None,
            weight: None,
            credentials: BTreeMap::new(),
            at,
        }
    }
}

#[derive(Clone, Debug)]
pub enum CredentialCommand {
    Register(Box<NewCredential>),
    Update(Box<CredentialPatch>),
    Enable { at: DateTime<Utc> },
    Disable { at: DateTime<Utc> },
    Revoke { at: DateTime<Utc> },
}

/// `byok.registered`: the whole credential as registered. Carries the sealed secret (ciphertext
/// bound to this credential; unreadable once revocation shreds its key) and the hint, never a
/// plaintext secret. Feeds and webhooks leave `sealed_secret` out (see [`super::PRIVATE_FIELDS`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub byok_id: String,
    pub account_id: String,
    pub provider: String,
    pub alias: String,
    pub label: Option<String>,
    pub base_url: Option<String>,
    pub declared_region: Option<String>,
    pub residency: String,
    pub models: Vec<String>,
    pub blacklisted_models: Vec<String>,
    pub weight: u32,
    pub bindings: Vec<Binding>,
    pub settings: BTreeMap<String, String>,
    pub sealed_secret: String,
    pub secret_hint: String,
    pub created_at: DateTime<Utc>,
}

/// `byok.updated`: only the fields that changed. For the clearable ones `null` means cleared
/// and absence means unchanged; in `settings`, `null` means the field was removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Updated {
    pub byok_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub label: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub base_url: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub declared_region: Option<Option<String>>,
    /// Set when `declared_region` changed the effective residency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blacklisted_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Option<String>>,
    pub updated_at: DateTime<Utc>,
}

impl Updated {
    fn changes_nothing(&self) -> bool {
        self.alias.is_none()
            && self.label.is_none()
            && self.base_url.is_none()
            && self.declared_region.is_none()
            && self.residency.is_none()
            && self.models.is_none()
            && self.blacklisted_models.is_none()
            && self.weight.is_none()
            && self.settings.is_empty()
    }
}

/// A field that is present deserialises to `Some`, even when it is `null` (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CredentialEvent {
    #[serde(rename = "byok.registered")]
    Registered(Box<Registered>),
    #[serde(rename = "byok.updated")]
    Updated(Box<Updated>),
    #[serde(rename = "byok.enabled")]
    Enabled {
        byok_id: String,
        enabled_at: DateTime<Utc>,
    },
    #[serde(rename = "byok.disabled")]
    Disabled {
        byok_id: String,
        disabled_at: DateTime<Utc>,
    },
    #[serde(rename = "byok.revoked")]
    Revoked {
        byok_id: String,
        revoked_at: DateTime<Utc>,
    },
}

impl DomainEvent for CredentialEvent {}

/// Decides what a command does to the credential, as events. Pure.
pub fn decide(
    state: Option<&Credential>,
    command: CredentialCommand,
) -> Result<Vec<CredentialEvent>, CredentialError> {
    use CredentialCommand as C;
    match (state, command) {
        (Some(_), C::Register(_)) => Err(CredentialError::AlreadyExists),
        (None, C::Register(new)) => decide_register(*new),
        (None, _) => Err(CredentialError::NotFound),
        // Revoking twice is a no-op: the first revocation stands.
        (Some(c), C::Revoke { .. }) if c.is_revoked() => Ok(vec![]),
        (Some(c), _) if c.is_revoked() => Err(CredentialError::Revoked),
        (Some(c), C::Revoke { at }) => Ok(vec![CredentialEvent::Revoked {
            byok_id: c.byok_id.clone(),
            revoked_at: at,
        }]),
        (Some(c), C::Enable { .. }) if c.state == CredentialState::Active => Ok(vec![]),
        (Some(c), C::Enable { at }) => Ok(vec![CredentialEvent::Enabled {
            byok_id: c.byok_id.clone(),
            enabled_at: at,
        }]),
        (Some(c), C::Disable { .. }) if c.state == CredentialState::Disabled => Ok(vec![]),
        (Some(c), C::Disable { at }) => Ok(vec![CredentialEvent::Disabled {
            byok_id: c.byok_id.clone(),
            disabled_at: at,
        }]),
        (Some(c), C::Update(patch)) => decide_update(c, *patch),
    }
}

fn decide_register(new: NewCredential) -> Result<Vec<CredentialEvent>, CredentialError> {
    let spec = new.spec.validated()?;
    if new.secret_hint.chars().count() > MAX_HINT_LEN {
        return Err(CredentialError::invalid(
            "secret_hint",
            format!("a secret hint is at most {MAX_HINT_LEN} characters"),
        ));
    }
    let residency =
        providers::provider(&spec.provider)?.residency_for(spec.declared_region.as_deref());
    Ok(vec![CredentialEvent::Registered(Box::new(Registered {
        byok_id: new.byok_id,
        account_id: new.account_id,
        provider: spec.provider,
        alias: spec.alias,
        label: spec.label,
        base_url: spec.base_url,
        declared_region: spec.declared_region,
        residency,
        models: spec.models,
        blacklisted_models: spec.blacklisted_models,
        weight: spec.weight,
        bindings: spec.bindings,
        settings: spec.settings,
        sealed_secret: new.sealed_secret,
        secret_hint: new.secret_hint,
        created_at: new.at,
    }))])
}

fn decide_update(
    c: &Credential,
    patch: CredentialPatch,
) -> Result<Vec<CredentialEvent>, CredentialError> {
    let mut changes = Updated {
        byok_id: c.byok_id.clone(),
        alias: None,
        label: None,
        base_url: None,
        declared_region: None,
        residency: None,
        models: None,
        blacklisted_models: None,
        weight: None,
        settings: BTreeMap::new(),
        updated_at: patch.at,
    };
    if let Some(alias) = patch.alias {
        let alias = validate_alias(&alias)?;
        changes.alias = (alias != c.alias).then_some(alias);
    }
    // The provider is looked up only for the fields that depend on it, so a credential whose
    // provider left the catalog can still be relabelled, reweighted or disabled.
    let provider = || providers::provider(&c.provider);
    if !patch.credentials.is_empty() {
        for (name, value) in provider()?.validate_settings_patch(&patch.credentials)? {
            if c.settings.get(&name) != value.as_ref() {
                changes.settings.insert(name, value);
            }
        }
    }
    if let Some(base_url) = patch.base_url {
        let base_url = provider()?.validate_base_url(base_url.as_deref())?;
        changes.base_url = (base_url != c.base_url).then_some(base_url);
    }
    if let Some(region) = patch.declared_region {
        let provider = provider()?;
        let region = provider.validate_declared_region(region.as_deref())?;
        if region != c.declared_region {
            let residency = provider.residency_for(region.as_deref());
            changes.residency = (residency != c.residency).then_some(residency);
            changes.declared_region = Some(region);
        }
    }
    if let Some(label) = patch.label {
        let label = validate_label(label.as_deref())?;
        changes.label = (label != c.label).then_some(label);
    }
    if let Some(weight) = patch.weight {
        let weight = validate_weight(Some(weight))?;
        changes.weight = (weight != c.weight).then_some(weight);
    }
    if let Some(models) = patch.models {
        let models = validate_models("models", models)?;
        changes.models = (models != c.models).then_some(models);
    }
    if let Some(models) = patch.blacklisted_models {
        let models = validate_models("blacklisted_models", models)?;
        changes.blacklisted_models = (models != c.blacklisted_models).then_some(models);
    }
    if changes.changes_nothing() {
        return Ok(vec![]);
    }
    Ok(vec![CredentialEvent::Updated(Box::new(changes))])
}

impl Aggregate for Credential {
    const KIND: &'static str = KIND;
    type Event = CredentialEvent;

    fn apply(state: Option<Self>, event: &CredentialEvent) -> Self {
        match (state, event) {
            (_, CredentialEvent::Registered(r)) => Credential {
                byok_id: r.byok_id.clone(),
                account_id: r.account_id.clone(),
                provider: r.provider.clone(),
                alias: r.alias.clone(),
                label: r.label.clone(),
                state: CredentialState::Active,
                version: 1,
                secret_hint: r.secret_hint.clone(),
                sealed_secret: r.sealed_secret.clone(),
                settings: r.settings.clone(),
                residency: r.residency.clone(),
                declared_region: r.declared_region.clone(),
                base_url: r.base_url.clone(),
                models: r.models.clone(),
                blacklisted_models: r.blacklisted_models.clone(),
                weight: r.weight,
                bindings: r.bindings.clone(),
                created_at: r.created_at,
                updated_at: r.created_at,
            },
            // An event before its stream's registration cannot be appended (decide refuses
            // it), so a log holding one was written by something else: keep a revoked shell,
            // which nothing can serve, rather than losing the events that follow.
            (None, event) => Self::apply(Some(shell()), event),
            (Some(mut c), CredentialEvent::Updated(u)) => {
                if let Some(alias) = &u.alias {
                    c.alias = alias.clone();
                }
                if let Some(label) = &u.label {
                    c.label = label.clone();
                }
                if let Some(base_url) = &u.base_url {
                    c.base_url = base_url.clone();
                }
                if let Some(region) = &u.declared_region {
                    c.declared_region = region.clone();
                }
                if let Some(residency) = &u.residency {
                    c.residency = residency.clone();
                }
                if let Some(models) = &u.models {
                    c.models = models.clone();
                }
                if let Some(models) = &u.blacklisted_models {
                    c.blacklisted_models = models.clone();
                }
                if let Some(weight) = u.weight {
                    c.weight = weight;
                }
                for (name, value) in &u.settings {
                    match value {
                        Some(value) => c.settings.insert(name.clone(), value.clone()),
                        None => c.settings.remove(name),
                    };
                }
                c.updated_at = u.updated_at;
                c
            }
            (Some(mut c), CredentialEvent::Enabled { enabled_at, .. }) => {
                // Revocation is final, even against a log that says otherwise.
                if !c.is_revoked() {
                    c.state = CredentialState::Active;
                }
                c.updated_at = *enabled_at;
                c
            }
            (Some(mut c), CredentialEvent::Disabled { disabled_at, .. }) => {
                if !c.is_revoked() {
                    c.state = CredentialState::Disabled;
                }
                c.updated_at = *disabled_at;
                c
            }
            (Some(mut c), CredentialEvent::Revoked { revoked_at, .. }) => {
                c.state = CredentialState::Revoked;
                c.updated_at = *revoked_at;
                c
            }
        }
    }
}

fn shell() -> Credential {
    Credential {
        byok_id: String::new(),
        account_id: String::new(),
        provider: String::new(),
        alias: String::new(),
        label: None,
        state: CredentialState::Revoked,
        version: 1,
        secret_hint: String::new(),
        sealed_secret: String::new(),
        settings: BTreeMap::new(),
        residency: providers::GLOBAL.to_owned(),
        declared_region: None,
        base_url: None,
        models: vec![],
        blacklisted_models: vec![],
        weight: DEFAULT_WEIGHT,
        bindings: vec![],
        created_at: DateTime::<Utc>::UNIX_EPOCH,
        updated_at: DateTime::<Utc>::UNIX_EPOCH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const SECRET: &str = "sk-proj-0123456789abcdefWXYZ";

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn given(events: &[CredentialEvent]) -> Option<Credential> {
        events
            .iter()
            .fold(None, |state, e| Some(Credential::apply(state, e)))
    }

    fn request(provider: &str) -> RegisterRequest {
        RegisterRequest {
            provider: provider.into(),
            alias: Some("prod-main".into()),
            api_key: Some(SECRET.into()),
            ..RegisterRequest::default()
        }
    }

    fn param_of<T: std::fmt::Debug>(result: Result<T, CredentialError>) -> String {
        match result {
            Err(CredentialError::Invalid { param, .. }) => param,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn register_command(registration: Registration) -> CredentialCommand {
        CredentialCommand::Register(Box::new(NewCredential {
            byok_id: "byok_1".into(),
            account_id: "acct_1".into(),
            spec: registration.spec,
            sealed_secret: "c2VhbGVk".into(),
            secret_hint: registration.credentials.hint,
            at: t(0),
        }))
    }

    fn registered_with(request: RegisterRequest) -> Vec<CredentialEvent> {
        let registration = prepare_register(request).unwrap();
        decide(None, register_command(registration)).unwrap()
    }

    fn registered() -> Vec<CredentialEvent> {
        registered_with(RegisterRequest {
            label: Some("Production".into()),
            models: vec!["gpt-4o-mini".into(), "gpt-4o".into(), "gpt-4o".into()],
            capability: Some("chat".into()),
            ..request("openai")
        })
    }

    fn then(mut history: Vec<CredentialEvent>, new: Vec<CredentialEvent>) -> Credential {
        history.extend(new);
        given(&history).unwrap()
    }

    fn patch(f: impl FnOnce(&mut CredentialPatch)) -> CredentialCommand {
        let mut p = CredentialPatch::at(t(60));
        f(&mut p);
        CredentialCommand::Update(Box::new(p))
    }

    fn revoked() -> Vec<CredentialEvent> {
        let mut events = registered();
        let c = given(&events).unwrap();
        events.extend(decide(Some(&c), CredentialCommand::Revoke { at: t(10) }).unwrap());
        events
    }

    // ---- register ----

    #[test]
    fn register_records_the_credential_without_its_secret() {
        let events = registered();
        assert_eq!(events.len(), 1);
        let json = serde_json::to_string(&events).unwrap();
        assert!(!json.contains("0123456789abcdef"), "{json}");
        assert!(json.contains("\"type\":\"byok.registered\""));

        let c = given(&events).unwrap();
        assert_eq!(c.byok_id, "byok_1");
        assert_eq!(c.account_id, "acct_1");
        assert_eq!(c.provider, "openai");
        assert_eq!(c.alias, "prod-main");
        assert_eq!(c.label.as_deref(), Some("Production"));
        assert_eq!(c.state, CredentialState::Active);
        assert_eq!(c.version, 1);
        assert_eq!(c.secret_hint, "WXYZ");
        assert_eq!(c.sealed_secret, "c2VhbGVk");
        assert_eq!(c.residency, "global");
        assert_eq!(c.models, ["gpt-4o", "gpt-4o-mini"]);
        assert_eq!(c.weight, DEFAULT_WEIGHT);
        assert_eq!(
            c.bindings,
            [Binding {
                capability: Some("chat".into()),
                module: None,
                model: None
            }]
        );
        assert!(c.settings.is_empty());
        assert_eq!((c.created_at, c.updated_at), (t(0), t(0)));
    }

    #[test]
    fn prepare_register_hands_back_the_secret_for_sealing_only() {
        let registration = prepare_register(request("anthropic")).unwrap();
        assert_eq!(registration.credentials.secrets["api_key"], SECRET);
        assert!(registration.spec.settings.is_empty());
        assert!(!format!("{registration:?}").contains("0123456789abcdef"));
        assert!(!format!("{:?}", request("anthropic")).contains("0123456789abcdef"));
    }

    #[test]
    fn register_keeps_non_secret_fields_in_the_clear() {
        let events = registered_with(RegisterRequest {
            api_key: None,
            credentials: [
                ("api_key", SECRET),
                ("endpoint", "https://res.openai.azure.com/"),
                ("api_version", "2024-10-21"),
                ("deployments", "gpt-4o"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..request("azure")
        });
        let c = given(&events).unwrap();
        assert_eq!(c.settings["endpoint"], "https://res.openai.azure.com");
        assert!(!c.settings.contains_key("api_key"));
    }

    #[test]
    fn register_derives_residency() {
        let eu = given(&registered_with(request("mistral"))).unwrap();
        assert_eq!(eu.residency, "eu");
        let india = given(&registered_with(request("sarvam"))).unwrap();
        assert_eq!(india.residency, "india");
        let own = given(&registered_with(RegisterRequest {
            api_key: None,
            base_url: Some("http://192.168.1.20:8000/v1/".into()),
            declared_region: Some("eu-west-1".into()),
            ..request("self_hosted")
        }))
        .unwrap();
        assert_eq!(own.residency, "eu-west-1");
        assert_eq!(own.base_url.as_deref(), Some("http://192.168.1.20:8000/v1"));
        assert_eq!(own.secret_hint, "");
        let declared = given(&registered_with(RegisterRequest {
            declared_region: Some("eu".into()),
            ..request("openai")
        }))
        .unwrap();
        assert_eq!(declared.residency, "eu");
    }

    #[test]
    fn register_on_an_existing_stream_already_exists() {
        let c = given(&registered()).unwrap();
        let again = register_command(prepare_register(request("openai")).unwrap());
        assert_eq!(decide(Some(&c), again), Err(CredentialError::AlreadyExists));
    }

    #[test]
    fn register_refuses_a_hint_that_could_be_a_secret() {
        let Registration { spec, .. } = prepare_register(request("openai")).unwrap();
        let command = CredentialCommand::Register(Box::new(NewCredential {
            byok_id: "byok_1".into(),
            account_id: "acct_1".into(),
            spec,
            sealed_secret: "x".into(),
            secret_hint: SECRET.into(),
            at: t(0),
        }));
        assert_eq!(param_of(decide(None, command)), "secret_hint");
    }

    #[test]
    fn register_refuses_a_secret_smuggled_into_settings() {
        let Registration { mut spec, .. } = prepare_register(request("openai")).unwrap();
        spec.settings.insert("api_key".into(), SECRET.into());
        let command = CredentialCommand::Register(Box::new(NewCredential {
            byok_id: "byok_1".into(),
            account_id: "acct_1".into(),
            spec,
            sealed_secret: "x".into(),
            secret_hint: String::new(),
            at: t(0),
        }));
        assert_eq!(param_of(decide(None, command)), "credentials.api_key");
    }

    #[test]
    fn validated_spec_validates_to_itself() {
        let Registration { spec, .. } = prepare_register(RegisterRequest {
            label: Some("  padded  ".into()),
            models: vec!["b".into(), "a".into(), "b".into()],
            base_url: Some("https://EU.api.openai.com/v1/".into()),
            ..request("openai")
        })
        .unwrap();
        assert_eq!(spec.label.as_deref(), Some("padded"));
        assert_eq!(spec.models, ["a", "b"]);
        assert_eq!(spec.clone().validated().unwrap(), spec);
    }

    #[test]
    fn register_validation_names_the_field() {
        let long = |n: usize| "x".repeat(n);
        let many = |n: usize| (0..n).map(|i| format!("m{i}")).collect::<Vec<_>>();
        let cases: Vec<(RegisterRequest, &str)> = vec![
            (request("nope"), "provider"),
            (
                RegisterRequest {
                    alias: None,
                    ..request("openai")
                },
                "alias",
            ),
            (
                RegisterRequest {
                    api_key: None,
                    ..request("openai")
                },
                "credentials.api_key",
            ),
            (
                RegisterRequest {
                    api_key: Some("  ".into()),
                    ..request("openai")
                },
                "credentials.api_key",
            ),
            (
                RegisterRequest {
                    credentials: [("api_key".to_owned(), "other".to_owned())].into(),
                    ..request("openai")
                },
                "api_key",
            ),
            (request("bedrock"), "api_key"),
            (
                RegisterRequest {
                    credentials: [("org".to_owned(), "o".to_owned())].into(),
                    ..request("openai")
                },
                "credentials.org",
            ),
            (
                RegisterRequest {
                    base_url: Some("https://x.example.com".into()),
                    ..request("cohere")
                },
                "",
            ),
            (
                RegisterRequest {
                    base_url: Some("http://api.example.com/v1".into()),
                    ..request("together")
                },
                "base_url",
            ),
            (
                RegisterRequest {
                    base_url: Some("not a url".into()),
                    ..request("together")
                },
                "base_url",
            ),
            (
                RegisterRequest {
                    declared_region: Some("eu".into()),
                    ..request("self_hosted")
                },
                "base_url",
            ),
            (
                RegisterRequest {
                    base_url: Some("http://localhost:11434/v1".into()),
                    ..request("self_hosted")
                },
                "declared_region",
            ),
            (
                RegisterRequest {
                    declared_region: Some("Europe".into()),
                    ..request("groq")
                },
                "declared_region",
            ),
            (
                RegisterRequest {
                    label: Some(long(MAX_LABEL_LEN + 1)),
                    ..request("openai")
                },
                "label",
            ),
            (
                RegisterRequest {
                    label: Some("two\nlines".into()),
                    ..request("openai")
                },
                "label",
            ),
            (
                RegisterRequest {
                    weight: Some(0),
                    ..request("openai")
                },
                "weight",
            ),
            (
                RegisterRequest {
                    weight: Some(MAX_WEIGHT + 1),
                    ..request("openai")
                },
                "weight",
            ),
            (
                RegisterRequest {
                    models: vec!["gpt-4o".into(), "".into()],
                    ..request("openai")
                },
                "models[1]",
            ),
            (
                RegisterRequest {
                    models: vec![long(MAX_NAME_LEN + 1)],
                    ..request("openai")
                },
                "models[0]",
            ),
            (
                RegisterRequest {
                    models: many(MAX_MODELS + 1),
                    ..request("openai")
                },
                "models",
            ),
            (
                RegisterRequest {
                    blacklisted_models: vec!["a".into(), "b".into(), "gpt 4".into()],
                    ..request("openai")
                },
                "blacklisted_models[2]",
            ),
            (
                RegisterRequest {
                    blacklisted_models: many(MAX_MODELS + 1),
                    ..request("openai")
                },
                "blacklisted_models",
            ),
            (
                RegisterRequest {
                    model: Some("gpt-4o".into()),
                    ..request("openai")
                },
                "capability",
            ),
            (
                RegisterRequest {
                    module: Some("".into()),
                    ..request("openai")
                },
                "module",
            ),
            (
                RegisterRequest {
                    capability: Some("chat".into()),
                    model: Some(long(MAX_NAME_LEN + 1)),
                    ..request("openai")
                },
                "model",
            ),
        ];
        for (request, expected) in cases {
            let debug = format!("{request:?}");
            let result = prepare_register(request);
            if expected.is_empty() {
                // cohere takes an optional base_url override.
                assert!(result.is_ok(), "{debug}");
                continue;
            }
            let Err(CredentialError::Invalid { param, message }) = result else {
                panic!("accepted: {debug}")
            };
            assert_eq!(param, expected, "{debug}: {message}");
            assert!(!message.contains("0123456789abcdef"));
        }
    }

    #[test]
    fn register_accepts_the_edges() {
        let edge = prepare_register(RegisterRequest {
            alias: Some("a".repeat(MAX_ALIAS_LEN)),
            label: Some("é".repeat(MAX_LABEL_LEN)),
            weight: Some(MAX_WEIGHT),
            models: (0..MAX_MODELS).map(|i| format!("m{i}")).collect(),
            module: Some("support-bot".into()),
            model: Some("anthropic/claude-3.5-sonnet".into()),
            ..request("openrouter")
        })
        .unwrap();
        assert_eq!(edge.spec.weight, MAX_WEIGHT);
        assert_eq!(edge.spec.models.len(), MAX_MODELS);
        assert_eq!(
            prepare_register(RegisterRequest {
                weight: Some(MIN_WEIGHT),
                label: Some("   ".into()),
                ..request("openai")
            })
            .unwrap()
            .spec
            .label,
            None
        );
    }

    #[test]
    fn alias_rules() {
        for good in [
            "a",
            "prod",
            "prod-main_2",
            "0day",
            &"z".repeat(MAX_ALIAS_LEN),
        ] {
            assert_eq!(validate_alias(good).unwrap(), good);
        }
        for bad in [
            "",
            "Prod",
            "prod main",
            "-prod",
            "_prod",
            "prod.main",
            "prod/main",
            "pród",
            &"z".repeat(MAX_ALIAS_LEN + 1),
        ] {
            assert_eq!(param_of(validate_alias(bad)), "alias", "{bad:?}");
        }
    }

    // ---- missing stream ----

    #[test]
    fn anything_but_register_on_a_missing_stream_is_not_found() {
        for command in [
            CredentialCommand::Enable { at: t(1) },
            CredentialCommand::Disable { at: t(1) },
            CredentialCommand::Revoke { at: t(1) },
            patch(|p| p.weight = Some(5)),
        ] {
            assert_eq!(decide(None, command), Err(CredentialError::NotFound));
        }
    }

    // ---- enable / disable / revoke ----

    #[test]
    fn disable_then_enable() {
        let history = registered();
        let c = given(&history).unwrap();
        let disabled = decide(Some(&c), CredentialCommand::Disable { at: t(5) }).unwrap();
        assert_eq!(
            disabled,
            [CredentialEvent::Disabled {
                byok_id: "byok_1".into(),
                disabled_at: t(5)
            }]
        );
        let mut history = history;
        history.extend(disabled);
        let c = given(&history).unwrap();
        assert_eq!(c.state, CredentialState::Disabled);
        assert_eq!(c.updated_at, t(5));
        let enabled = decide(Some(&c), CredentialCommand::Enable { at: t(6) }).unwrap();
        assert_eq!(enabled.len(), 1);
        let c = then(history, enabled);
        assert_eq!(c.state, CredentialState::Active);
    }

    #[test]
    fn enabling_an_active_or_disabling_a_disabled_credential_changes_nothing() {
        let history = registered();
        let c = given(&history).unwrap();
        assert_eq!(
            decide(Some(&c), CredentialCommand::Enable { at: t(1) }),
            Ok(vec![])
        );
        let disabled = decide(Some(&c), CredentialCommand::Disable { at: t(1) }).unwrap();
        let c = then(history, disabled);
        assert_eq!(
            decide(Some(&c), CredentialCommand::Disable { at: t(2) }),
            Ok(vec![])
        );
    }

    #[test]
    fn revoke_is_final_and_idempotent() {
        let history = revoked();
        let c = given(&history).unwrap();
        assert_eq!(c.state, CredentialState::Revoked);
        assert_eq!(
            decide(Some(&c), CredentialCommand::Revoke { at: t(20) }),
            Ok(vec![])
        );
        for command in [
            CredentialCommand::Enable { at: t(20) },
            CredentialCommand::Disable { at: t(20) },
            patch(|p| p.label = Some(Some("x".into()))),
            patch(|_| {}),
        ] {
            assert_eq!(decide(Some(&c), command), Err(CredentialError::Revoked));
        }
        // A revoked credential can never come back, even if a log says so.
        let c = then(
            history,
            vec![CredentialEvent::Enabled {
                byok_id: "byok_1".into(),
                enabled_at: t(30),
            }],
        );
        assert_eq!(c.state, CredentialState::Revoked);
    }

    #[test]
    fn a_disabled_credential_can_be_revoked_and_updated() {
        let history = registered();
        let c = given(&history).unwrap();
        let disabled = decide(Some(&c), CredentialCommand::Disable { at: t(1) }).unwrap();
        let c = then(history, disabled);
        assert_eq!(
            decide(Some(&c), patch(|p| p.weight = Some(7)))
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            decide(Some(&c), CredentialCommand::Revoke { at: t(2) })
                .unwrap()
                .len(),
            1
        );
    }

    // ---- update ----

    fn only_update(events: Vec<CredentialEvent>) -> Updated {
        match events.as_slice() {
            [CredentialEvent::Updated(u)] => (**u).clone(),
            other => panic!("expected one byok.updated, got {other:?}"),
        }
    }

    #[test]
    fn update_records_only_what_changed() {
        let history = registered();
        let c = given(&history).unwrap();
        let events = decide(
            Some(&c),
            patch(|p| {
                p.label = Some(Some("Production".into())); // unchanged
                p.models = Some(vec!["gpt-4o".into(), "gpt-4o-mini".into()]); // unchanged
                p.weight = Some(250);
                p.alias = Some("prod-eu".into());
            }),
        )
        .unwrap();
        let update = only_update(events.clone());
        assert_eq!(update.weight, Some(250));
        assert_eq!(update.alias.as_deref(), Some("prod-eu"));
        assert_eq!(update.label, None);
        assert_eq!(update.models, None);
        let json = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(json["type"], "byok.updated");
        assert_eq!(
            json["data"],
            serde_json::json!({"byok_id": "byok_1", "alias": "prod-eu", "weight": 250,
                "updated_at": "2023-11-14T22:14:20Z"})
        );
        let c = then(history, events);
        assert_eq!((c.weight, c.alias.as_str()), (250, "prod-eu"));
        assert_eq!(c.updated_at, t(60));
        assert_eq!(c.created_at, t(0));
    }

    #[test]
    fn an_update_that_changes_nothing_decides_nothing() {
        let c = given(&registered()).unwrap();
        assert_eq!(decide(Some(&c), patch(|_| {})), Ok(vec![]));
        let same = patch(|p| {
            p.alias = Some("prod-main".into());
            p.label = Some(Some(" Production ".into()));
            p.base_url = Some(None);
            p.declared_region = Some(None);
            p.models = Some(vec!["gpt-4o-mini".into(), "gpt-4o".into()]);
            p.blacklisted_models = Some(vec![]);
            p.weight = Some(DEFAULT_WEIGHT);
        });
        assert_eq!(decide(Some(&c), same), Ok(vec![]));
    }

    #[test]
    fn update_clears_optional_fields() {
        let history = registered_with(RegisterRequest {
            label: Some("Old".into()),
            base_url: Some("https://eu.api.openai.com/v1".into()),
            declared_region: Some("eu".into()),
            ..request("openai")
        });
        let c = given(&history).unwrap();
        assert_eq!(c.residency, "eu");
        let events = decide(
            Some(&c),
            patch(|p| {
                p.label = Some(None);
                p.base_url = Some(None);
                p.declared_region = Some(None);
            }),
        )
        .unwrap();
        let json = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(json["data"]["label"], serde_json::Value::Null);
        assert!(json["data"].as_object().unwrap().contains_key("label"));
        assert_eq!(json["data"]["residency"], "global");
        // Cleared (null) and unchanged (absent) survive a round trip through the log.
        let back: CredentialEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, events[0]);
        let c = then(history, events);
        assert_eq!(c.label, None);
        assert_eq!(c.base_url, None);
        assert_eq!(c.declared_region, None);
        assert_eq!(c.residency, "global");
    }

    #[test]
    fn update_of_declared_region_moves_residency() {
        let history = registered_with(request("mistral"));
        let c = given(&history).unwrap();
        // Declaring what the provider already is changes the declaration, not the residency.
        let same = only_update(
            decide(
                Some(&c),
                patch(|p| p.declared_region = Some(Some("eu".into()))),
            )
            .unwrap(),
        );
        assert_eq!(same.declared_region, Some(Some("eu".into())));
        assert_eq!(same.residency, None);
        let moved = decide(
            Some(&c),
            patch(|p| p.declared_region = Some(Some("us".into()))),
        )
        .unwrap();
        let c = then(history, moved);
        assert_eq!(c.residency, "us");
    }

    #[test]
    fn update_changes_non_secret_credential_fields_but_never_secrets() {
        let history = registered_with(RegisterRequest {
            credentials: [("organization".to_owned(), "org-1".to_owned())].into(),
            ..request("openai")
        });
        let c = given(&history).unwrap();
        let events = decide(
            Some(&c),
            patch(|p| {
                p.credentials = [
                    ("organization".to_owned(), "org-1".to_owned()), // unchanged
                    ("project".to_owned(), "proj_2".to_owned()),
                ]
                .into();
            }),
        )
        .unwrap();
        let update = only_update(events.clone());
        assert_eq!(
            update.settings,
            [("project".to_owned(), Some("proj_2".to_owned()))].into()
        );
        let c = then(history.clone(), events);
        assert_eq!(c.settings["project"], "proj_2");
        let removed = decide(
            Some(&c),
            patch(|p| p.credentials = [("organization".to_owned(), String::new())].into()),
        )
        .unwrap();
        let c = then(history, removed);
        assert!(!c.settings.contains_key("organization"));
        assert_eq!(
            param_of(decide(
                Some(&c),
                patch(|p| p.credentials = [("api_key".to_owned(), SECRET.to_owned())].into())
            )),
            "credentials.api_key"
        );
    }

    #[test]
    fn update_validates_what_it_sets() {
        let openai = given(&registered()).unwrap();
        let own = given(&registered_with(RegisterRequest {
            api_key: None,
            base_url: Some("http://localhost:8000/v1".into()),
            declared_region: Some("eu".into()),
            ..request("self_hosted")
        }))
        .unwrap();
        let azure = given(&registered_with(RegisterRequest {
            credentials: [
                ("endpoint", "https://res.openai.azure.com"),
                ("api_version", "2024-10-21"),
                ("deployments", "gpt-4o"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            ..request("azure")
        }))
        .unwrap();
        let cases: Vec<(&Credential, CredentialCommand, &str)> = vec![
            (
                &openai,
                patch(|p| p.alias = Some("Bad Alias".into())),
                "alias",
            ),
            (
                &openai,
                patch(|p| p.label = Some(Some("x".repeat(129)))),
                "label",
            ),
            (&openai, patch(|p| p.weight = Some(0)), "weight"),
            (&openai, patch(|p| p.weight = Some(1001)), "weight"),
            (
                &openai,
                patch(|p| p.models = Some(vec!["ok".into(), " ".into()])),
                "models[1]",
            ),
            (
                &openai,
                patch(|p| p.blacklisted_models = Some(vec!["".into()])),
                "blacklisted_models[0]",
            ),
            (
                &openai,
                patch(|p| p.base_url = Some(Some("http://example.com".into()))),
                "base_url",
            ),
            (
                &openai,
                patch(|p| p.declared_region = Some(Some("EU".into()))),
                "declared_region",
            ),
            (
                &azure,
                patch(|p| p.base_url = Some(Some("https://example.com".into()))),
                "base_url",
            ),
            (
                &azure,
                patch(|p| p.credentials = [("endpoint".to_owned(), "ftp://x".to_owned())].into()),
                "credentials.endpoint",
            ),
            (&own, patch(|p| p.base_url = Some(None)), "base_url"),
            (
                &own,
                patch(|p| p.declared_region = Some(None)),
                "declared_region",
            ),
        ];
        for (c, command, expected) in cases {
            let debug = format!("{command:?}");
            assert_eq!(param_of(decide(Some(c), command)), expected, "{debug}");
        }
        // self_hosted can move to another local server.
        let moved = only_update(
            decide(
                Some(&own),
                patch(|p| p.base_url = Some(Some("http://[::1]:9000/v1/".into()))),
            )
            .unwrap(),
        );
        assert_eq!(moved.base_url, Some(Some("http://[::1]:9000/v1".into())));
    }

    // ---- events ----

    #[test]
    fn event_type_strings_are_stable() {
        let registered = registered();
        let types: Vec<String> = registered
            .iter()
            .cloned()
            .chain([
                CredentialEvent::Updated(Box::new(Updated {
                    byok_id: "b".into(),
                    alias: None,
                    label: None,
                    base_url: None,
                    declared_region: None,
                    residency: None,
                    models: None,
                    blacklisted_models: None,
                    weight: Some(1),
                    settings: BTreeMap::new(),
                    updated_at: t(1),
                })),
                CredentialEvent::Enabled {
                    byok_id: "b".into(),
                    enabled_at: t(1),
                },
                CredentialEvent::Disabled {
                    byok_id: "b".into(),
                    disabled_at: t(1),
                },
                CredentialEvent::Revoked {
                    byok_id: "b".into(),
                    revoked_at: t(1),
                },
            ])
            .map(|e| {
                let new = e.to_new_event().unwrap();
                // Every payload names its credential, so webhook receivers need no lookup.
                assert!(new.data["byok_id"].is_string(), "{new:?}");
                let back: CredentialEvent = serde_json::from_value(
                    serde_json::json!({"type": new.event_type, "data": new.data}),
                )
                .unwrap();
                assert_eq!(back, e);
                new.event_type
            })
            .collect();
        assert_eq!(
            types,
            [
                "byok.registered",
                "byok.updated",
                "byok.enabled",
                "byok.disabled",
                "byok.revoked"
            ]
        );
        assert_eq!(<Credential as Aggregate>::KIND, "byok");
    }

    #[test]
    fn the_sealed_secret_is_a_private_field() {
        let new = registered()[0].to_new_event().unwrap();
        assert!(new.data.get("sealed_secret").is_some());
        assert!(super::super::PRIVATE_FIELDS.contains(&"sealed_secret"));
    }

    #[test]
    fn apply_is_total_on_a_stream_without_registration() {
        let c = given(&[CredentialEvent::Enabled {
            byok_id: "byok_x".into(),
            enabled_at: t(1),
        }])
        .unwrap();
        assert_eq!(c.state, CredentialState::Revoked);
    }
}
