//! Validation of what a client asks for: the register request, the validation of the
//! `CredentialProfile` a `Register` command carries, and the checks of alias, label, weight,
//! model lists and bindings that `decide` reuses on updates. Everything that depends on a
//! provider is checked by `domain::providers`.
//!
//! [`RegisterRequest`] holds plaintext secrets: its `Debug` shows field names only, and
//! [`prepare_register`] hands them back for sealing only. Must not import crypto, storage or HTTP.

use std::collections::BTreeMap;

use super::error::CredentialError;
use super::{
    Binding, CredentialProfile, DEFAULT_WEIGHT, MAX_ALIAS_LEN, MAX_LABEL_LEN, MAX_MODEL_MAP,
    MAX_MODELS, MAX_NAME_LEN, MAX_PROVIDER_MODEL_LEN, MAX_WEIGHT, MIN_WEIGHT,
};
use crate::domain::providers::{self, ProviderCredentials};
use crate::domain::text;

impl Binding {
    /// Checks a binding; errors name `capability`, `module` or `model`.
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
    /// Requested model -> the provider's id for it.
    pub model_map: BTreeMap<String, String>,
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
            .field("model_map", &self.model_map)
            .finish()
    }
}

impl CredentialProfile {
    /// Validates and normalises every field and derives `residency` from `declared_region`
    /// and the provider, whatever residency it held. Reports the first fault in a stable order:
    /// provider, alias, credentials, base_url, declared_region, label, weight, models,
    /// blacklisted_models, binding, model_map. Idempotent: a validated profile validates to
    /// itself.
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
        let model_map = validate_model_map(self.model_map, &blacklisted_models)?;
        Ok(CredentialProfile {
            provider: provider.id.to_owned(),
            alias,
            label,
            base_url,
            residency: provider.residency_for(declared_region.as_deref()),
            declared_region,
            models,
            blacklisted_models,
            weight,
            bindings,
            settings,
            model_map,
        })
    }
}

/// A validated register request: the profile goes into the command, the credentials' `secrets`
/// get sealed and their `hint` becomes `secret_hint`.
#[derive(Clone, Debug)]
pub struct Registration {
    pub profile: CredentialProfile,
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
                provider.required_fields().collect::<Vec<_>>().join(", ")
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
    let profile = CredentialProfile {
        provider: provider.id.to_owned(),
        alias,
        label: request.label,
        base_url: request.base_url,
        declared_region: request.declared_region,
        // Derived by `validated`, below.
        residency: String::new(),
        models: request.models,
        blacklisted_models: request.blacklisted_models,
        weight: request.weight.unwrap_or(DEFAULT_WEIGHT),
        bindings,
        settings: credentials.settings.clone(),
        model_map: request.model_map,
    }
    .validated()?;
    Ok(Registration {
        profile,
        credentials,
    })
}

/// Checks an alias: 1 to 64 characters of `a-z`, `0-9`, `_` and `-`, starting with a letter or
/// digit. Aliases are handles in URLs, logs and configuration files, so they are kept to a
/// character set that never needs quoting; upper case is refused rather than folded, so what is
/// stored is what was typed.
pub fn validate_alias(raw: &str) -> Result<String, CredentialError> {
    text::check("alias", raw).map_err(|m| CredentialError::invalid("alias", m))?;
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

/// Checks a label: the rule of [`text`](crate::domain::text) (no control or invisible
/// characters, checked before trimming, so a trailing line feed is refused rather than
/// dropped), then trimmed, at most 128 characters. An empty label is no label.
pub fn validate_label(raw: Option<&str>) -> Result<Option<String>, CredentialError> {
    if let Some(raw) = raw {
        text::check("label", raw).map_err(|m| CredentialError::invalid("label", m))?;
    }
    let Some(label) = raw.map(str::trim).filter(|l| !l.is_empty()) else {
        return Ok(None);
    };
    if label.chars().count() > MAX_LABEL_LEN {
        return Err(CredentialError::invalid(
            "label",
            format!("label must be at most {MAX_LABEL_LEN} characters"),
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

/// Checks a model map: at most 256 entries; each key a model name ([`validate_name`]) that
/// `blacklisted` does not hold (a denied model cannot be mapped: resolve would never serve it);
/// each value a provider model id, the same rule up to 256 characters. Errors name
/// `model_map` (too many entries) or the entry, `model_map.<key>`.
pub fn validate_model_map(
    map: BTreeMap<String, String>,
    blacklisted: &[String],
) -> Result<BTreeMap<String, String>, CredentialError> {
    if map.len() > MAX_MODEL_MAP {
        return Err(CredentialError::invalid(
            "model_map",
            format!("model_map must have at most {MAX_MODEL_MAP} entries"),
        ));
    }
    for (requested, provider_model) in &map {
        // The key may itself be malformed: the param names it only once it is a valid name.
        validate_name("model_map", requested).map_err(|e| match e {
            CredentialError::Invalid { message, .. } => CredentialError::invalid(
                "model_map",
                format!("a key of model_map is not a model name: {message}"),
            ),
            other => other,
        })?;
        let param = format!("model_map.{requested}");
        if blacklisted.binary_search(requested).is_ok() {
            return Err(CredentialError::invalid(
                &param,
                format!("{requested} is in blacklisted_models, so it cannot be mapped"),
            ));
        }
        check_name(&param, provider_model, MAX_PROVIDER_MODEL_LEN)?;
    }
    Ok(map)
}

/// Checks a model, capability or module name: 1 to 128 characters, the rule of
/// [`text`](crate::domain::text) (no control or invisible characters), no whitespace
/// (`gpt-4o`, `anthropic/claude-3.5-sonnet`, `llama3:8b`, `claude-3@20240229`).
pub fn validate_name(param: &str, value: &str) -> Result<(), CredentialError> {
    check_name(param, value, MAX_NAME_LEN)
}

/// [`validate_name`]'s rule, up to `max` characters.
fn check_name(param: &str, value: &str, max: usize) -> Result<(), CredentialError> {
    if value.is_empty() || value.chars().count() > max {
        return Err(CredentialError::invalid(
            param,
            format!("{param} must be 1 to {max} characters"),
        ));
    }
    text::check(param, value).map_err(|m| CredentialError::invalid(param, m))?;
    if value.chars().any(char::is_whitespace) {
        return Err(CredentialError::invalid(
            param,
            format!("{param} must not contain whitespace"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credential::testing::{SECRET, param_of, request};

    #[test]
    fn prepare_register_hands_back_the_secret_for_sealing_only() {
        let registration = prepare_register(request("anthropic")).unwrap();
        assert_eq!(registration.credentials.secrets["api_key"], SECRET);
        assert!(registration.profile.settings.is_empty());
        assert!(!format!("{registration:?}").contains("0123456789abcdef"));
        assert!(!format!("{:?}", request("anthropic")).contains("0123456789abcdef"));
    }

    #[test]
    fn a_validated_profile_validates_to_itself() {
        let Registration { profile, .. } = prepare_register(RegisterRequest {
            label: Some("  padded  ".into()),
            models: vec!["b".into(), "a".into(), "b".into()],
            base_url: Some("https://EU.api.openai.com/v1/".into()),
            ..request("openai")
        })
        .unwrap();
        assert_eq!(profile.label.as_deref(), Some("padded"));
        assert_eq!(profile.models, ["a", "b"]);
        assert_eq!(profile.residency, "global");
        assert_eq!(profile.clone().validated().unwrap(), profile);
        // Residency is derived, never taken from the command.
        let claimed = CredentialProfile {
            residency: "eu".into(),
            ..profile.clone()
        };
        assert_eq!(claimed.validated().unwrap(), profile);
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
        assert_eq!(edge.profile.weight, MAX_WEIGHT);
        assert_eq!(edge.profile.models.len(), MAX_MODELS);
        assert_eq!(
            prepare_register(RegisterRequest {
                weight: Some(MIN_WEIGHT),
                label: Some("   ".into()),
                ..request("openai")
            })
            .unwrap()
            .profile
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
}
