//! A provider's credential fields: checking a register request's `credentials` field by field,
//! splitting them into secrets (sealed) and settings (kept in the clear), keeping secrets out of
//! the settings, the secret hint, and the top-level `api_key` shorthand.
//!
//! Error messages never echo a value, and echo a field name only when it looks like one.
//! Must not import `domain::credential`, crypto, storage or HTTP; no I/O.

use std::collections::BTreeMap;

use super::address::validate_url;
use super::catalog::{FieldKind, FieldSpec, Provider};
use super::error::{FieldError, looks_like_name};
use super::region::validate_region;

/// Longest accepted single-line secret (AWS session tokens run to a few kilobytes).
pub const MAX_SECRET_LEN: usize = 8192;
/// Longest accepted service-account key file.
pub const MAX_JSON_SECRET_LEN: usize = 16 * 1024;
/// Longest accepted plain setting (api_version, project_id, an organization id…).
pub const MAX_SETTING_LEN: usize = 256;
/// Secrets shorter than this get no hint: four characters of an eight-character key would give
/// half of it away.
pub const MIN_HINT_SOURCE_LEN: usize = 12;

/// A provider's credential fields after validation, split into what is sealed and what is kept
/// in the clear.
///
/// Seal `secrets` only: `settings` travel in events and can change with `update` without a new
/// secret version, so the data plane answers `settings` merged with the opened `secrets`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderCredentials {
    /// Secret fields, trimmed. Never logged, never in an event, never in an error.
    pub secrets: BTreeMap<String, String>,
    /// Non-secret fields (endpoint, api_version, region…), normalised.
    pub settings: BTreeMap<String, String>,
    /// The last four characters of the identifying secret, or empty when it is too short to
    /// show any of it (or the provider has none, such as a key-less self_hosted server).
    pub hint: String,
}

impl std::fmt::Debug for ProviderCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderCredentials")
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .field("settings", &self.settings)
            .field("hint", &self.hint)
            .finish()
    }
}

impl Provider {
    fn field_list(&self) -> String {
        self.fields
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Validates a register request's `credentials` (after [`merge_api_key`]): no unknown
    /// field, every required field present, no empty secret, every value well-formed. Values
    /// are trimmed (a trailing newline from a paste is never part of a key).
    pub fn validate_credentials(
        &self,
        raw: BTreeMap<String, String>,
    ) -> Result<ProviderCredentials, FieldError> {
        for name in raw.keys() {
            if self.field(name).is_none() {
                return Err(self.unknown_field(name));
            }
        }
        let mut secrets = BTreeMap::new();
        let mut settings = BTreeMap::new();
        for spec in self.fields {
            let Some(value) = raw.get(spec.name) else {
                if spec.required {
                    return Err(FieldError::new(
                        format!("credentials.{}", spec.name),
                        format!("{} requires credentials.{}", self.id, spec.name),
                    ));
                }
                continue;
            };
            let value = validate_field(spec, value)?;
            if spec.secret {
                secrets.insert(spec.name.to_owned(), value);
            } else {
                settings.insert(spec.name.to_owned(), value);
            }
        }
        let hint = self.hint_of(&secrets);
        Ok(ProviderCredentials {
            secrets,
            settings,
            hint,
        })
    }

    /// Checks the non-secret fields kept in the clear, as a register command carries them: only
    /// this provider's non-secret fields, every required one present, each well-formed. This is
    /// what keeps a plaintext secret out of `byok.registered` even if a caller mixes them up.
    pub fn validate_settings(
        &self,
        settings: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, FieldError> {
        for name in settings.keys() {
            match self.field(name) {
                None => return Err(self.unknown_field(name)),
                Some(spec) if spec.secret => return Err(secret_in_settings(spec)),
                Some(_) => {}
            }
        }
        let mut out = BTreeMap::new();
        for spec in self.fields.iter().filter(|f| !f.secret) {
            match settings.get(spec.name) {
                Some(value) => {
                    out.insert(spec.name.to_owned(), validate_field(spec, value)?);
                }
                None if spec.required => {
                    return Err(FieldError::new(
                        format!("credentials.{}", spec.name),
                        format!("{} requires credentials.{}", self.id, spec.name),
                    ));
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// Validates a change to non-secret fields (`update`'s `credentials`): each named field
    /// must be a non-secret field of this provider (secrets change only by rotation); an empty
    /// value removes an optional field. Answers the normalised changes, `None` meaning removal.
    pub fn validate_settings_patch(
        &self,
        patch: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Option<String>>, FieldError> {
        let mut out = BTreeMap::new();
        for (name, value) in patch {
            let spec = match self.field(name) {
                None => return Err(self.unknown_field(name)),
                Some(spec) if spec.secret => return Err(secret_in_settings(spec)),
                Some(spec) => spec,
            };
            if value.trim().is_empty() {
                if spec.required {
                    return Err(FieldError::new(
                        format!("credentials.{name}"),
                        format!(
                            "credentials.{name} is required by {} and cannot be removed",
                            self.id
                        ),
                    ));
                }
                out.insert(spec.name.to_owned(), None);
            } else {
                out.insert(spec.name.to_owned(), Some(validate_field(spec, value)?));
            }
        }
        Ok(out)
    }

    /// Takes the secret fields out of an update's `credentials`, checked as at registration.
    /// An update never changes a secret (that is rotation): it takes the current one only as
    /// proof when it changes where the secret is sent (docs/adr/0036). The rest stays in
    /// `fields` for [`Provider::validate_settings_patch`].
    pub fn take_update_secrets(
        &self,
        fields: &mut BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, FieldError> {
        let mut secrets = BTreeMap::new();
        for spec in self.fields.iter().filter(|f| f.secret) {
            if let Some(value) = fields.remove(spec.name) {
                secrets.insert(spec.name.to_owned(), validate_field(spec, &value)?);
            }
        }
        Ok(secrets)
    }

    /// Whether this non-secret field is an address the secret is sent to (azure's `endpoint`);
    /// `region` is not: it picks among the provider's own hosts.
    pub fn is_address_field(&self, name: &str) -> bool {
        self.field(name)
            .is_some_and(|f| !f.secret && f.kind == FieldKind::Url)
    }

    /// The names of this provider's secret fields, for messages: `api_key`, or
    /// `access_key, secret_key, session_token`.
    pub fn secret_field_names(&self) -> String {
        let names: Vec<_> = self
            .fields
            .iter()
            .filter(|f| f.secret)
            .map(|f| f.name)
            .collect();
        names.join(", ")
    }

    fn unknown_field(&self, name: &str) -> FieldError {
        let takes = self.field_list();
        if matches!(name, "base_url" | "declared_region") {
            return FieldError::new(
                format!("credentials.{name}"),
                format!("{name} is a top-level parameter, not a credential field"),
            );
        }
        if looks_like_name(name) {
            FieldError::new(
                format!("credentials.{name}"),
                format!(
                    "{} takes no credential field {name}; it takes: {takes}",
                    self.id
                ),
            )
        } else {
            FieldError::new(
                "credentials",
                format!(
                    "credentials has a field name that is not a field of {}; it takes: {takes}",
                    self.id
                ),
            )
        }
    }

    fn hint_of(&self, secrets: &BTreeMap<String, String>) -> String {
        let Some(field) = self.hint_field else {
            return String::new();
        };
        let Some(value) = secrets.get(field) else {
            return String::new();
        };
        let source = match self.field(field).map(|f| f.kind) {
            Some(FieldKind::ServiceAccountJson) => serde_json::from_str::<serde_json::Value>(value)
                .ok()
                .and_then(|v| v.get("private_key_id")?.as_str().map(str::to_owned))
                .unwrap_or_default(),
            _ => value.clone(),
        };
        secret_hint(&source)
    }
}

fn secret_in_settings(spec: &FieldSpec) -> FieldError {
    FieldError::new(
        format!("credentials.{}", spec.name),
        format!(
            "credentials.{} is a secret; it changes only by rotation (rotate or rotate/stage)",
            spec.name
        ),
    )
}

/// The hint shown for a secret: its last four characters, or nothing when it is shorter than
/// [`MIN_HINT_SOURCE_LEN`].
pub fn secret_hint(secret: &str) -> String {
    let count = secret.chars().count();
    if count < MIN_HINT_SOURCE_LEN {
        return String::new();
    }
    secret.chars().skip(count - 4).collect()
}

/// Folds the top-level `api_key` shorthand into `credentials`. Giving both is accepted when
/// they agree and refused when they differ.
pub fn merge_api_key(
    mut credentials: BTreeMap<String, String>,
    api_key: Option<String>,
) -> Result<BTreeMap<String, String>, FieldError> {
    let Some(api_key) = api_key else {
        return Ok(credentials);
    };
    match credentials.get("api_key") {
        // Compared as validation will see them: trimmed.
        Some(existing) if existing.trim() != api_key.trim() => Err(FieldError::new(
            "api_key",
            "api_key is given both at the top level and in credentials, with different values; \
             give it once",
        )),
        Some(_) => Ok(credentials),
        None => {
            credentials.insert("api_key".to_owned(), api_key);
            Ok(credentials)
        }
    }
}

fn validate_field(spec: &FieldSpec, raw: &str) -> Result<String, FieldError> {
    let param = format!("credentials.{}", spec.name);
    let value = raw.trim();
    if value.is_empty() {
        return Err(FieldError::new(
            &param,
            format!("{param} must not be empty"),
        ));
    }
    match spec.kind {
        FieldKind::Token => {
            let max = if spec.secret {
                MAX_SECRET_LEN
            } else {
                MAX_SETTING_LEN
            };
            if value.chars().count() > max {
                return Err(FieldError::new(
                    &param,
                    format!("{param} must be at most {max} characters"),
                ));
            }
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(FieldError::new(
                    &param,
                    format!("{param} must not contain whitespace or control characters"),
                ));
            }
            Ok(value.to_owned())
        }
        FieldKind::ServiceAccountJson => {
            if value.len() > MAX_JSON_SECRET_LEN {
                return Err(FieldError::new(
                    &param,
                    format!("{param} must be at most {MAX_JSON_SECRET_LEN} bytes"),
                ));
            }
            let parsed: Option<serde_json::Value> = serde_json::from_str(value).ok();
            let is_key_file = parsed.as_ref().is_some_and(|v| {
                v.get("type").and_then(|t| t.as_str()) == Some("service_account")
                    && ["client_email", "private_key", "private_key_id"]
                        .iter()
                        .all(|k| {
                            v.get(k)
                                .and_then(|x| x.as_str())
                                .is_some_and(|s| !s.is_empty())
                        })
            });
            if !is_key_file {
                // The parser's own message is not repeated: it could quote the secret.
                return Err(FieldError::new(
                    &param,
                    format!(
                        "{param} must be a Google service-account key file: a JSON object with \
                         type \"service_account\", client_email, private_key and private_key_id"
                    ),
                ));
            }
            Ok(value.to_owned())
        }
        FieldKind::Url => validate_url(&param, value),
        FieldKind::Region => validate_region(&param, value),
        FieldKind::List => {
            let items: Vec<&str> = value.split(',').map(str::trim).collect();
            if value.chars().count() > 4 * MAX_SETTING_LEN
                || items.iter().any(|i| {
                    i.is_empty()
                        || i.chars().count() > MAX_SETTING_LEN
                        || i.chars().any(|c| c.is_whitespace() || c.is_control())
                })
            {
                return Err(FieldError::new(
                    &param,
                    format!(
                        "{param} must be a comma-separated list of names without spaces, \
                         for example gpt-4o,gpt-4o-mini"
                    ),
                ));
            }
            Ok(items.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::providers::test_support::{p, param_of};

    fn creds(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const SA_JSON: &str = r#"{"type": "service_account", "project_id": "p",
        "private_key_id": "0123456789abcdefdeadbeef", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        "client_email": "kl@p.iam.gserviceaccount.com"}"#;

    #[test]
    fn api_key_shorthand_merges_into_credentials() {
        let merged = merge_api_key(creds(&[]), Some("sk-a".into())).unwrap();
        assert_eq!(merged, creds(&[("api_key", "sk-a")]));
        let same = merge_api_key(creds(&[("api_key", "sk-a")]), Some("sk-a\n".into())).unwrap();
        assert_eq!(same, creds(&[("api_key", "sk-a")]));
        let untouched = merge_api_key(creds(&[("api_key", "sk-a")]), None).unwrap();
        assert_eq!(untouched, creds(&[("api_key", "sk-a")]));
        let both = merge_api_key(creds(&[("api_key", "sk-a")]), Some("sk-b".into()));
        let Err(FieldError { param, message }) = both else {
            panic!()
        };
        assert_eq!(param, "api_key");
        assert!(!message.contains("sk-"));
    }

    #[test]
    fn credentials_split_into_secrets_and_settings_with_hint() {
        let azure = p("azure")
            .validate_credentials(creds(&[
                ("api_key", " 0123456789abcdefWXYZ\n"),
                ("endpoint", "https://Res.OpenAI.Azure.com/"),
                ("api_version", "2024-10-21"),
                ("deployments", "gpt-4o , gpt-4o-mini"),
            ]))
            .unwrap();
        assert_eq!(azure.secrets, creds(&[("api_key", "0123456789abcdefWXYZ")]));
        assert_eq!(
            azure.settings,
            creds(&[
                ("api_version", "2024-10-21"),
                ("deployments", "gpt-4o,gpt-4o-mini"),
                ("endpoint", "https://res.openai.azure.com"),
            ])
        );
        assert_eq!(azure.hint, "WXYZ");
        // Debug never shows a secret value.
        assert!(!format!("{azure:?}").contains("0123456789"));

        let bedrock = p("bedrock")
            .validate_credentials(creds(&[
                ("access_key", "AKIAIOSFODNN7EXAMPLE"),
                ("secret_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                ("region", "us-east-1"),
            ]))
            .unwrap();
        assert_eq!(bedrock.hint, "MPLE");
        assert_eq!(bedrock.settings, creds(&[("region", "us-east-1")]));
        assert_eq!(bedrock.secrets.len(), 2);

        let vertex = p("vertex")
            .validate_credentials(creds(&[
                ("project_id", "my-project"),
                ("region", "europe-west4"),
                ("service_account_json", SA_JSON),
            ]))
            .unwrap();
        assert_eq!(vertex.hint, "beef");

        let keyless = p("self_hosted").validate_credentials(creds(&[])).unwrap();
        assert!(keyless.secrets.is_empty() && keyless.hint.is_empty());

        let short = p("self_hosted")
            .validate_credentials(creds(&[("api_key", "ollama")]))
            .unwrap();
        assert_eq!(short.hint, "");
    }

    #[test]
    fn unknown_credential_field_is_refused_without_echoing_odd_names() {
        let openai = p("openai");
        assert_eq!(
            param_of(openai.validate_credentials(creds(&[("api_key", "k"), ("region", "eu")]))),
            "credentials.region"
        );
        assert_eq!(
            param_of(openai.validate_credentials(creds(&[("api_key", "k"), ("base_url", "x")]))),
            "credentials.base_url"
        );
        let pasted = openai.validate_credentials(creds(&[("sk-proj-AbC123", "")]));
        let Err(FieldError { param, message }) = pasted else {
            panic!()
        };
        assert_eq!(param, "credentials");
        assert!(!message.contains("sk-proj"));
        assert_eq!(
            param_of(p("bedrock").validate_credentials(creds(&[("api_key", "k")]))),
            "credentials.api_key"
        );
    }

    #[test]
    fn missing_required_field_is_refused() {
        assert_eq!(
            param_of(p("anthropic").validate_credentials(creds(&[]))),
            "credentials.api_key"
        );
        assert_eq!(
            param_of(p("bedrock").validate_credentials(creds(&[
                ("access_key", "AKIAIOSFODNN7EXAMPLE"),
                ("region", "us-east-1"),
            ]))),
            "credentials.secret_key"
        );
        assert_eq!(
            param_of(p("azure").validate_credentials(creds(&[
                ("api_key", "k"),
                ("endpoint", "https://x.openai.azure.com"),
                ("api_version", "2024-10-21"),
            ]))),
            "credentials.deployments"
        );
    }

    #[test]
    fn empty_or_blank_secret_is_refused() {
        for blank in ["", "   ", "\n\t"] {
            assert_eq!(
                param_of(p("groq").validate_credentials(creds(&[("api_key", blank)]))),
                "credentials.api_key"
            );
        }
        // Also an optional secret that is present but blank.
        assert_eq!(
            param_of(p("bedrock").validate_credentials(creds(&[
                ("access_key", "AKIAIOSFODNN7EXAMPLE"),
                ("secret_key", "s"),
                ("region", "us-east-1"),
                ("session_token", " "),
            ]))),
            "credentials.session_token"
        );
    }

    #[test]
    fn malformed_field_values_are_refused_without_echoing_them() {
        // (provider, credentials, param at fault)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case; 6] = [
            (
                "openai",
                &[("api_key", "sk-abc def")],
                "credentials.api_key",
            ),
            (
                "openai",
                &[("api_key", "sk-abc\r\nX: y")],
                "credentials.api_key",
            ),
            (
                "vertex",
                &[
                    ("project_id", "p"),
                    ("region", "us-central1"),
                    ("service_account_json", "{\"private_key\": \"sekrit\""),
                ],
                "credentials.service_account_json",
            ),
            (
                "bedrock",
                &[
                    ("access_key", "a"),
                    ("secret_key", "s"),
                    ("region", "US East"),
                ],
                "credentials.region",
            ),
            (
                "azure",
                &[
                    ("api_key", "k"),
                    ("endpoint", "http://res.openai.azure.com"),
                    ("api_version", "v"),
                    ("deployments", "d"),
                ],
                "credentials.endpoint",
            ),
            (
                "azure",
                &[
                    ("api_key", "k"),
                    ("endpoint", "https://res.openai.azure.com"),
                    ("api_version", "v"),
                    ("deployments", "a,,b"),
                ],
                "credentials.deployments",
            ),
        ];
        for (provider, fields, expected) in cases {
            let result = p(provider).validate_credentials(creds(fields));
            let Err(FieldError { param, message }) = result else {
                panic!("{provider} {fields:?} accepted")
            };
            assert_eq!(param, expected);
            assert!(!message.contains("sekrit") && !message.contains("sk-abc"));
        }
        let long = "k".repeat(MAX_SECRET_LEN + 1);
        assert_eq!(
            param_of(p("openai").validate_credentials(creds(&[("api_key", &long)]))),
            "credentials.api_key"
        );
    }

    #[test]
    fn settings_guard_keeps_secrets_out_of_the_clear() {
        let azure = p("azure");
        let ok = creds(&[
            ("endpoint", "https://x.openai.azure.com"),
            ("api_version", "2024-10-21"),
            ("deployments", "gpt-4o"),
        ]);
        assert_eq!(azure.validate_settings(&ok).unwrap(), ok);
        let mut leaked = ok.clone();
        leaked.insert("api_key".into(), "sk-secret".into());
        assert_eq!(
            param_of(azure.validate_settings(&leaked)),
            "credentials.api_key"
        );
        let mut missing = ok.clone();
        missing.remove("endpoint");
        assert_eq!(
            param_of(azure.validate_settings(&missing)),
            "credentials.endpoint"
        );
    }

    #[test]
    fn settings_patch_changes_only_non_secret_fields() {
        let patch = p("openai")
            .validate_settings_patch(&creds(&[("organization", "org-1"), ("project", "")]))
            .unwrap();
        assert_eq!(patch["organization"].as_deref(), Some("org-1"));
        assert_eq!(patch["project"], None);
        assert_eq!(
            param_of(p("openai").validate_settings_patch(&creds(&[("api_key", "x")]))),
            "credentials.api_key"
        );
        assert_eq!(
            param_of(p("azure").validate_settings_patch(&creds(&[("endpoint", "")]))),
            "credentials.endpoint"
        );
        assert_eq!(
            param_of(p("azure").validate_settings_patch(&creds(&[("nope", "x")]))),
            "credentials.nope"
        );
    }

    #[test]
    fn hint_needs_a_long_enough_secret() {
        assert_eq!(secret_hint("sk-0123456789"), "6789");
        assert_eq!(secret_hint("short-key"), "");
        assert_eq!(secret_hint("ключ-0123456789-éèêë"), "éèêë");
    }
}
