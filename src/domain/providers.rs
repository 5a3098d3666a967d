//! The provider catalog (static data) and the pure validation of everything that depends on a
//! provider: its credential fields, its base URL and its residency. No I/O: probes, sealing and
//! the per-provider base-URL overrides of the server's configuration live elsewhere.
//!
//! Error messages never echo a credential value, and echo a field *name* only when it looks like
//! one (a pasted key used as a map key must not come back in an error).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use utoipa::ToSchema;

use super::credential::CredentialError;

/// Longest accepted base URL or endpoint, in characters.
pub const MAX_URL_LEN: usize = 2048;
/// Longest accepted single-line secret (AWS session tokens run to a few kilobytes).
pub const MAX_SECRET_LEN: usize = 8192;
/// Longest accepted service-account key file.
pub const MAX_JSON_SECRET_LEN: usize = 16 * 1024;
/// Longest accepted plain setting (api_version, project_id, an organization id…).
pub const MAX_SETTING_LEN: usize = 256;
/// Longest accepted region name (`eu`, `india`, `us-east-1`, `europe-west4`…).
pub const MAX_REGION_LEN: usize = 32;
/// Secrets shorter than this get no hint: four characters of an eight-character key would give
/// half of it away.
pub const MIN_HINT_SOURCE_LEN: usize = 12;
/// Residency of a provider that states none.
pub const GLOBAL: &str = "global";

/// One provider of the catalog.
#[derive(Debug)]
pub struct Provider {
    /// Stable id, never renamed: stored in events.
    pub id: &'static str,
    pub name: &'static str,
    /// The credential fields, required ones first, in the order errors are reported.
    pub fields: &'static [FieldSpec],
    pub base_url: BaseUrlRule,
    pub residency: Residency,
    /// Where the provider's API lives when no base URL is set, in the form its official SDK
    /// uses as its base (OpenAI-compatible ones end in `/v1`). `None` when the address follows
    /// from a credential field (azure's `endpoint`, bedrock's and vertex's `region`) or is the
    /// credential's own `base_url` (self_hosted).
    pub default_base_url: Option<&'static str>,
    /// How the provider is spoken to (for probes and the gateway).
    pub api: ApiStyle,
    /// The field whose last characters become the credential's `secret_hint`.
    pub hint_field: Option<&'static str>,
}

/// One credential field of a provider.
#[derive(Debug)]
pub struct FieldSpec {
    pub name: &'static str,
    pub required: bool,
    /// Secret fields are sealed and never shown again; the others ("settings") are kept in the
    /// clear, in events and in `ByokConfig`.
    pub secret: bool,
    pub kind: FieldKind,
}

/// What a credential field's value must look like. Every value is a JSON string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A single-line token: no whitespace, no control characters.
    Token,
    /// A Google service-account key file, as a string holding the JSON document.
    ServiceAccountJson,
    /// An http(s) URL under the same plaintext rule as `base_url`.
    Url,
    /// A region name: lower-case letters, digits and `-`.
    Region,
    /// A comma-separated list of names (azure `deployments`), normalised to `a,b,c`.
    List,
}

/// Whether a provider takes a top-level `base_url`.
///
/// Hosted providers with one public API address take an optional override: OpenAI's regional
/// endpoints (`https://eu.api.openai.com/v1`), a corporate egress proxy or an API gateway in
/// front of the provider are everyday set-ups. Azure (its address is `credentials.endpoint`),
/// Bedrock and Vertex (their address follows from `credentials.region`, and request signing is
/// bound to it) take none. self_hosted requires one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseUrlRule {
    None,
    Optional,
    Required,
}

/// Where a provider's data is processed, as matched by resolve's `residency` filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// A fixed region (`global`, `eu`, `india`); a credential's `declared_region` overrides it.
    Region(&'static str),
    /// The credential's `declared_region`, which is then required (self_hosted).
    Declared,
}

/// The wire protocol of a provider, for probes and the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiStyle {
    /// OpenAI-compatible: `GET {base}/models` with a bearer token.
    OpenAi,
    /// `GET {base}/v1/models` with `x-api-key` and `anthropic-version`.
    Anthropic,
    /// `GET {base}/v1/models` with a bearer token.
    Cohere,
    /// `api-subscription-key` header.
    Sarvam,
    /// `{endpoint}/openai/deployments?api-version=…` with `api-key`.
    Azure,
    /// SigV4-signed `ListFoundationModels` in `region`.
    Bedrock,
    /// OAuth token from the service account, `{region}-aiplatform.googleapis.com`.
    Vertex,
}

const fn secret(name: &'static str, required: bool) -> FieldSpec {
    FieldSpec {
        name,
        required,
        secret: true,
        kind: FieldKind::Token,
    }
}

const fn setting(name: &'static str, required: bool, kind: FieldKind) -> FieldSpec {
    FieldSpec {
        name,
        required,
        secret: false,
        kind,
    }
}

const API_KEY: &[FieldSpec] = &[secret("api_key", true)];

const fn hosted(
    id: &'static str,
    name: &'static str,
    residency: &'static str,
    default_base_url: &'static str,
    api: ApiStyle,
) -> Provider {
    Provider {
        id,
        name,
        fields: API_KEY,
        base_url: BaseUrlRule::Optional,
        residency: Residency::Region(residency),
        default_base_url: Some(default_base_url),
        api,
        hint_field: Some("api_key"),
    }
}

static CATALOG: [Provider; 13] = [
    Provider {
        // `organization` and `project` become the OpenAI-Organization / OpenAI-Project headers,
        // which accounts in several organisations need.
        fields: &[
            secret("api_key", true),
            setting("organization", false, FieldKind::Token),
            setting("project", false, FieldKind::Token),
        ],
        ..hosted(
            "openai",
            "OpenAI",
            GLOBAL,
            "https://api.openai.com/v1",
            ApiStyle::OpenAi,
        )
    },
    hosted(
        "anthropic",
        "Anthropic",
        GLOBAL,
        "https://api.anthropic.com",
        ApiStyle::Anthropic,
    ),
    hosted(
        "together",
        "Together AI",
        GLOBAL,
        "https://api.together.xyz/v1",
        ApiStyle::OpenAi,
    ),
    hosted(
        "groq",
        "Groq",
        GLOBAL,
        "https://api.groq.com/openai/v1",
        ApiStyle::OpenAi,
    ),
    hosted(
        "mistral",
        "Mistral AI",
        "eu",
        "https://api.mistral.ai/v1",
        ApiStyle::OpenAi,
    ),
    hosted(
        "deepseek",
        "DeepSeek",
        GLOBAL,
        "https://api.deepseek.com/v1",
        ApiStyle::OpenAi,
    ),
    hosted(
        "cohere",
        "Cohere",
        GLOBAL,
        "https://api.cohere.com",
        ApiStyle::Cohere,
    ),
    hosted(
        "openrouter",
        "OpenRouter",
        GLOBAL,
        "https://openrouter.ai/api/v1",
        ApiStyle::OpenAi,
    ),
    hosted(
        "sarvam",
        "Sarvam AI",
        "india",
        "https://api.sarvam.ai",
        ApiStyle::Sarvam,
    ),
    Provider {
        id: "azure",
        name: "Azure OpenAI",
        fields: &[
            secret("api_key", true),
            setting("endpoint", true, FieldKind::Url),
            setting("api_version", true, FieldKind::Token),
            setting("deployments", true, FieldKind::List),
        ],
        base_url: BaseUrlRule::None,
        residency: Residency::Region(GLOBAL),
        default_base_url: None,
        api: ApiStyle::Azure,
        hint_field: Some("api_key"),
    },
    Provider {
        id: "bedrock",
        name: "Amazon Bedrock",
        fields: &[
            secret("access_key", true),
            secret("secret_key", true),
            setting("region", true, FieldKind::Region),
            secret("session_token", false),
        ],
        base_url: BaseUrlRule::None,
        residency: Residency::Region(GLOBAL),
        default_base_url: None,
        api: ApiStyle::Bedrock,
        // The access key id is what AWS itself shows to tell keys apart.
        hint_field: Some("access_key"),
    },
    Provider {
        id: "vertex",
        name: "Google Vertex AI",
        fields: &[
            setting("project_id", true, FieldKind::Token),
            setting("region", true, FieldKind::Region),
            FieldSpec {
                name: "service_account_json",
                required: true,
                secret: true,
                kind: FieldKind::ServiceAccountJson,
            },
        ],
        base_url: BaseUrlRule::None,
        residency: Residency::Region(GLOBAL),
        default_base_url: None,
        api: ApiStyle::Vertex,
        // The hint comes from the key file's `private_key_id`, not from the JSON text.
        hint_field: Some("service_account_json"),
    },
    Provider {
        // Any OpenAI-compatible server (vLLM, TGI, Ollama, llama.cpp, SGLang). The key is
        // optional: Ollama and llama.cpp run without one by default.
        id: "self_hosted",
        name: "Self-hosted (OpenAI-compatible)",
        fields: &[secret("api_key", false)],
        base_url: BaseUrlRule::Required,
        residency: Residency::Declared,
        default_base_url: None,
        api: ApiStyle::OpenAi,
        hint_field: Some("api_key"),
    },
];

/// Every provider, in the order `GET /v1/byok/providers` lists them.
pub fn catalog() -> &'static [Provider] {
    &CATALOG
}

/// The provider with this id, if the catalog has one. Ids are exact and lower-case.
pub fn get(id: &str) -> Option<&'static Provider> {
    CATALOG.iter().find(|p| p.id == id)
}

/// The provider with this id, or a 422 naming `provider`.
pub fn provider(id: &str) -> Result<&'static Provider, CredentialError> {
    get(id).ok_or_else(|| {
        let known: Vec<&str> = CATALOG.iter().map(|p| p.id).collect();
        let message = if looks_like_name(id) {
            format!(
                "unknown provider {id}; known providers: {}",
                known.join(", ")
            )
        } else {
            format!("unknown provider; known providers: {}", known.join(", "))
        };
        CredentialError::invalid("provider", message)
    })
}

/// What `GET /v1/byok/providers` answers for one provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({"id": "azure", "name": "Azure OpenAI",
    "required_fields": ["api_key", "endpoint", "api_version", "deployments"],
    "optional_fields": [], "secret_fields": ["api_key"], "takes_base_url": false,
    "requires_base_url": false, "requires_declared_region": false, "residency": "global",
    "default_base_url": null}))]
pub struct ProviderInfo {
    /// Stable provider id, as given to `register`.
    pub id: String,
    pub name: String,
    /// Fields `credentials` must contain.
    pub required_fields: Vec<String>,
    /// Fields `credentials` may contain.
    pub optional_fields: Vec<String>,
    /// The fields that are sealed and never shown again; every other field is shown by `get`.
    pub secret_fields: Vec<String>,
    /// Whether a top-level `base_url` is accepted.
    pub takes_base_url: bool,
    /// Whether a top-level `base_url` is required.
    pub requires_base_url: bool,
    /// Whether a top-level `declared_region` is required.
    pub requires_declared_region: bool,
    /// Where the provider processes data (`global`, `eu`, `india`) unless a credential declares
    /// otherwise; `null` when it is always the credential's `declared_region`.
    pub residency: Option<String>,
    /// The API address used when no `base_url` is set; `null` when it follows from a
    /// credential field or is the credential's own `base_url`.
    pub default_base_url: Option<String>,
}

/// The catalog as served.
pub fn infos() -> Vec<ProviderInfo> {
    CATALOG.iter().map(Provider::info).collect()
}

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
    pub fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn takes_base_url(&self) -> bool {
        self.base_url != BaseUrlRule::None
    }

    pub fn info(&self) -> ProviderInfo {
        let names = |pred: &dyn Fn(&FieldSpec) -> bool| {
            self.fields
                .iter()
                .filter(|f| pred(f))
                .map(|f| f.name.to_owned())
                .collect()
        };
        ProviderInfo {
            id: self.id.to_owned(),
            name: self.name.to_owned(),
            required_fields: names(&|f| f.required),
            optional_fields: names(&|f| !f.required),
            secret_fields: names(&|f| f.secret),
            takes_base_url: self.takes_base_url(),
            requires_base_url: self.base_url == BaseUrlRule::Required,
            requires_declared_region: self.residency == Residency::Declared,
            residency: match self.residency {
                Residency::Region(r) => Some(r.to_owned()),
                Residency::Declared => None,
            },
            default_base_url: self.default_base_url.map(str::to_owned),
        }
    }

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
    ) -> Result<ProviderCredentials, CredentialError> {
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
                    return Err(CredentialError::invalid(
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
    ) -> Result<BTreeMap<String, String>, CredentialError> {
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
                    return Err(CredentialError::invalid(
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
    ) -> Result<BTreeMap<String, Option<String>>, CredentialError> {
        let mut out = BTreeMap::new();
        for (name, value) in patch {
            let spec = match self.field(name) {
                None => return Err(self.unknown_field(name)),
                Some(spec) if spec.secret => return Err(secret_in_settings(spec)),
                Some(spec) => spec,
            };
            if value.trim().is_empty() {
                if spec.required {
                    return Err(CredentialError::invalid(
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

    fn unknown_field(&self, name: &str) -> CredentialError {
        let takes = self.field_list();
        if matches!(name, "base_url" | "declared_region") {
            return CredentialError::invalid(
                format!("credentials.{name}"),
                format!("{name} is a top-level parameter, not a credential field"),
            );
        }
        if looks_like_name(name) {
            CredentialError::invalid(
                format!("credentials.{name}"),
                format!(
                    "{} takes no credential field {name}; it takes: {takes}",
                    self.id
                ),
            )
        } else {
            CredentialError::invalid(
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

    /// Checks a register or update `base_url` against this provider's rule and the plaintext
    /// rule; answers it normalised (see [`validate_url`]).
    pub fn validate_base_url(&self, raw: Option<&str>) -> Result<Option<String>, CredentialError> {
        match (self.base_url, raw) {
            (BaseUrlRule::Required, None) => Err(CredentialError::invalid(
                "base_url",
                format!("{} requires a base_url", self.id),
            )),
            (BaseUrlRule::None, Some(_)) => Err(CredentialError::invalid(
                "base_url",
                match self.api {
                    ApiStyle::Azure => format!(
                        "{} takes no base_url; its address is credentials.endpoint",
                        self.id
                    ),
                    ApiStyle::Bedrock | ApiStyle::Vertex => format!(
                        "{} takes no base_url; its address follows from credentials.region",
                        self.id
                    ),
                    _ => format!("{} takes no base_url", self.id),
                },
            )),
            (_, None) => Ok(None),
            (_, Some(raw)) => validate_url("base_url", raw).map(Some),
        }
    }

    /// Checks `declared_region` (required for self_hosted).
    pub fn validate_declared_region(
        &self,
        raw: Option<&str>,
    ) -> Result<Option<String>, CredentialError> {
        match raw {
            None if self.residency == Residency::Declared => Err(CredentialError::invalid(
                "declared_region",
                format!(
                    "{} requires a declared_region (where the server runs, for example eu)",
                    self.id
                ),
            )),
            None => Ok(None),
            Some(raw) => validate_region("declared_region", raw).map(Some),
        }
    }

    /// The residency resolve matches on: the credential's declared region if it has one, else
    /// the provider's.
    pub fn residency_for(&self, declared_region: Option<&str>) -> String {
        match (declared_region, self.residency) {
            (Some(declared), _) => declared.to_owned(),
            (None, Residency::Region(region)) => region.to_owned(),
            // Unreachable for a validated credential; never claim a region nobody declared.
            (None, Residency::Declared) => GLOBAL.to_owned(),
        }
    }
}

fn secret_in_settings(spec: &FieldSpec) -> CredentialError {
    CredentialError::invalid(
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
) -> Result<BTreeMap<String, String>, CredentialError> {
    let Some(api_key) = api_key else {
        return Ok(credentials);
    };
    match credentials.get("api_key") {
        // Compared as validation will see them: trimmed.
        Some(existing) if existing.trim() != api_key.trim() => Err(CredentialError::invalid(
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

fn validate_field(spec: &FieldSpec, raw: &str) -> Result<String, CredentialError> {
    let param = format!("credentials.{}", spec.name);
    let value = raw.trim();
    if value.is_empty() {
        return Err(CredentialError::invalid(
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
                return Err(CredentialError::invalid(
                    &param,
                    format!("{param} must be at most {max} characters"),
                ));
            }
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(CredentialError::invalid(
                    &param,
                    format!("{param} must not contain whitespace or control characters"),
                ));
            }
            Ok(value.to_owned())
        }
        FieldKind::ServiceAccountJson => {
            if value.len() > MAX_JSON_SECRET_LEN {
                return Err(CredentialError::invalid(
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
                return Err(CredentialError::invalid(
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
                return Err(CredentialError::invalid(
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

/// Checks a region name: 1 to 32 characters of `a-z`, `0-9` and `-`, starting with a letter or
/// digit (`eu`, `india`, `us-east-1`, `europe-west4`).
pub fn validate_region(param: &str, raw: &str) -> Result<String, CredentialError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_REGION_LEN
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !raw.starts_with('-');
    if !ok {
        return Err(CredentialError::invalid(
            param,
            format!(
                "{param} must be 1 to {MAX_REGION_LEN} lower-case letters, digits or '-', \
                 for example eu or us-east-1"
            ),
        ));
    }
    Ok(raw.to_owned())
}

/// Checks a base URL or endpoint and answers it normalised (scheme and host lower-cased, IP
/// literals canonical, default port and trailing `/` dropped), so `{base}/models` joins cleanly.
///
/// Refused: anything but an absolute `http`/`https` URL with a host; user info (`user:pass@`,
/// a secret in a field that is shown); a query or fragment; whitespace; over 2048 characters;
/// and `http://` unless the host is `localhost`, `*.localhost`, or a loopback, private
/// (10/8, 172.16/12, 192.168/16, fc00::/7) or link-local (169.254/16, fe80::/10) IP literal.
/// Host names are not resolved here: a name that resolves to a private address still needs
/// https. The URL is parsed the way the HTTP client will parse it (WHATWG), so the host
/// checked is the host connected to (`http://evil.com\@10.0.0.1/` is evil.com).
pub fn validate_url(param: &str, raw: &str) -> Result<String, CredentialError> {
    let invalid = |message: String| CredentialError::invalid(param, message);
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!("{param} must not contain whitespace")));
    }
    if raw.chars().count() > MAX_URL_LEN {
        return Err(invalid(format!(
            "{param} must be at most {MAX_URL_LEN} characters"
        )));
    }
    let url = url::Url::parse(raw)
        .map_err(|_| invalid(format!("{param} must be an absolute http(s) URL")))?;
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => {
            return Err(invalid(format!(
                "{param} must be an http(s) URL (https:// outside local networks)"
            )));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!(
            "{param} must not contain user info (user:password@); secrets belong in credentials"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "{param} must not have a query string or fragment"
        )));
    }
    let Some(host) = url.host() else {
        return Err(invalid(format!("{param} must name a host")));
    };
    if !https && !plaintext_allowed(&host) {
        return Err(invalid(format!(
            "{param} must use https://; http:// is accepted only for localhost, *.localhost and \
             loopback, private or link-local IP addresses"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn plaintext_allowed(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(domain) => {
            let domain = domain.to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => is_local_ip(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => is_local_ip(IpAddr::V6(*ip)),
    }
}

/// Whether an address is loopback, private (RFC 1918, IPv6 unique-local) or link-local,
/// IPv4-mapped IPv6 addresses judged as their IPv4 address. The unspecified address is not.
pub fn is_local_ip(ip: IpAddr) -> bool {
    fn v4(ip: Ipv4Addr) -> bool {
        ip.is_loopback() || ip.is_private() || ip.is_link_local()
    }
    fn v6(ip: Ipv6Addr) -> bool {
        if let Some(mapped) = ip.to_ipv4_mapped() {
            return v4(mapped);
        }
        let first = ip.segments()[0];
        ip.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
    }
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => v6(ip),
    }
}

/// Whether a name may be repeated in an error message: short and identifier-like, so it cannot
/// be a pasted secret of any length worth protecting.
fn looks_like_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn param_of<T: std::fmt::Debug>(result: Result<T, CredentialError>) -> String {
        match result {
            Err(CredentialError::Invalid { param, .. }) => param,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn p(id: &str) -> &'static Provider {
        get(id).unwrap()
    }

    const SA_JSON: &str = r#"{"type": "service_account", "project_id": "p",
        "private_key_id": "0123456789abcdefdeadbeef", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        "client_email": "kl@p.iam.gserviceaccount.com"}"#;

    #[test]
    fn catalog_has_every_provider_of_the_design_with_unique_ids() {
        let ids: Vec<&str> = catalog().iter().map(|p| p.id).collect();
        assert_eq!(
            ids,
            [
                "openai",
                "anthropic",
                "together",
                "groq",
                "mistral",
                "deepseek",
                "cohere",
                "openrouter",
                "sarvam",
                "azure",
                "bedrock",
                "vertex",
                "self_hosted"
            ]
        );
        for provider in catalog() {
            // Required fields come first, so errors name them in a stable order.
            let first_optional = provider.fields.iter().position(|f| !f.required);
            if let Some(i) = first_optional {
                assert!(
                    provider.fields[i..].iter().all(|f| !f.required),
                    "{}",
                    provider.id
                );
            }
            // Every hint field is a secret field of the provider.
            if let Some(hint) = provider.hint_field {
                assert!(provider.field(hint).unwrap().secret, "{}", provider.id);
            }
            if let Some(url) = provider.default_base_url {
                assert_eq!(validate_url("base_url", url).unwrap(), url);
            }
        }
    }

    #[test]
    fn catalog_view_lists_fields_residency_and_base_url_rules() {
        let infos = infos();
        let by_id = |id: &str| infos.iter().find(|i| i.id == id).unwrap();
        let azure = by_id("azure");
        assert_eq!(
            azure.required_fields,
            ["api_key", "endpoint", "api_version", "deployments"]
        );
        assert_eq!(azure.secret_fields, ["api_key"]);
        assert!(!azure.takes_base_url);
        let bedrock = by_id("bedrock");
        assert_eq!(bedrock.optional_fields, ["session_token"]);
        assert_eq!(
            bedrock.secret_fields,
            ["access_key", "secret_key", "session_token"]
        );
        let vertex = by_id("vertex");
        assert_eq!(vertex.secret_fields, ["service_account_json"]);
        assert_eq!(by_id("mistral").residency.as_deref(), Some("eu"));
        assert_eq!(by_id("sarvam").residency.as_deref(), Some("india"));
        assert_eq!(by_id("openai").residency.as_deref(), Some("global"));
        let own = by_id("self_hosted");
        assert!(own.requires_base_url && own.requires_declared_region);
        assert_eq!(own.residency, None);
        assert_eq!(own.optional_fields, ["api_key"]);
        assert!(by_id("groq").takes_base_url && !by_id("groq").requires_base_url);
        let json = serde_json::to_value(azure).unwrap();
        assert_eq!(json["default_base_url"], serde_json::Value::Null);
    }

    #[test]
    fn unknown_provider_names_provider() {
        assert_eq!(param_of(provider("OpenAI")), "provider");
        assert_eq!(param_of(provider("")), "provider");
        let Err(CredentialError::Invalid { message, .. }) = provider("sk-live-123456789") else {
            panic!()
        };
        assert!(!message.contains("sk-live"), "{message}");
        assert!(message.contains("openai"));
    }

    #[test]
    fn api_key_shorthand_merges_into_credentials() {
        let merged = merge_api_key(creds(&[]), Some("sk-a".into())).unwrap();
        assert_eq!(merged, creds(&[("api_key", "sk-a")]));
        let same = merge_api_key(creds(&[("api_key", "sk-a")]), Some("sk-a\n".into())).unwrap();
        assert_eq!(same, creds(&[("api_key", "sk-a")]));
        let untouched = merge_api_key(creds(&[("api_key", "sk-a")]), None).unwrap();
        assert_eq!(untouched, creds(&[("api_key", "sk-a")]));
        let both = merge_api_key(creds(&[("api_key", "sk-a")]), Some("sk-b".into()));
        let Err(CredentialError::Invalid { param, message }) = both else {
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
        let Err(CredentialError::Invalid { param, message }) = pasted else {
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
            let Err(CredentialError::Invalid { param, message }) = result else {
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
    fn base_url_rules_per_provider() {
        assert_eq!(
            p("openai")
                .validate_base_url(Some("https://eu.api.openai.com/v1/"))
                .unwrap(),
            Some("https://eu.api.openai.com/v1".to_owned())
        );
        assert_eq!(p("openai").validate_base_url(None).unwrap(), None);
        for id in ["azure", "bedrock", "vertex"] {
            assert_eq!(
                param_of(p(id).validate_base_url(Some("https://example.com"))),
                "base_url"
            );
        }
        assert_eq!(
            param_of(p("self_hosted").validate_base_url(None)),
            "base_url"
        );
        assert_eq!(
            p("self_hosted")
                .validate_base_url(Some("http://localhost:11434/v1"))
                .unwrap(),
            Some("http://localhost:11434/v1".to_owned())
        );
    }

    #[test]
    fn plaintext_http_only_for_local_hosts() {
        let accepted = [
            "http://localhost:8000/v1",
            "http://LOCALHOST",
            "http://vllm.localhost/v1",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://10.1.2.3/v1",
            "http://172.16.0.1",
            "http://172.31.255.255",
            "http://192.168.1.10:11434",
            "http://169.254.10.10",
            "http://[::1]:8000",
            "http://[fd00::1]",
            "http://[fc00::1]",
            "http://[fe80::1]",
            "http://[::ffff:10.0.0.1]",
            // WHATWG reads these as 127.0.0.1, as the HTTP client will.
            "http://0x7f.1",
            "http://2130706433",
            "https://api.example.com/v1",
            "https://203.0.113.9:8443",
        ];
        for url in accepted {
            assert!(validate_url("base_url", url).is_ok(), "{url}");
        }
        let refused = [
            "http://api.example.com/v1",
            "http://8.8.8.8",
            "http://172.32.0.1",
            "http://172.15.255.255",
            "http://192.169.0.1",
            "http://0.0.0.0",
            "http://[::]",
            "http://[2001:db8::1]",
            "http://[fec0::1]",
            "http://localhost.evil.com",
            "http://localhost.",
            "http://evil.com\\@10.0.0.1/",
            "http://evil.com#@10.0.0.1",
            "ftp://localhost/",
            "file:///etc/passwd",
            "localhost:8000",
            "/v1",
            "",
            "https://",
            "https://user:pass@api.example.com",
            "https://token@api.example.com",
            "https://api.example.com/v1?key=abc",
            "https://api.example.com/v1#frag",
            "https://api.example.com/ v1",
            "https://api.example.com/\nv1",
        ];
        for url in refused {
            assert_eq!(param_of(validate_url("base_url", url)), "base_url", "{url}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(validate_url("base_url", &long).is_err());
    }

    #[test]
    fn url_errors_never_echo_user_info() {
        let Err(CredentialError::Invalid { message, .. }) =
            validate_url("base_url", "https://admin:hunter2@example.com")
        else {
            panic!()
        };
        assert!(!message.contains("hunter2"));
    }

    #[test]
    fn declared_region_and_residency() {
        let own = p("self_hosted");
        assert_eq!(
            param_of(own.validate_declared_region(None)),
            "declared_region"
        );
        assert_eq!(
            own.validate_declared_region(Some("eu")).unwrap(),
            Some("eu".to_owned())
        );
        for bad in ["", "EU", "eu west", "-eu", &"a".repeat(33)] {
            assert_eq!(
                param_of(own.validate_declared_region(Some(bad))),
                "declared_region",
                "{bad}"
            );
        }
        assert_eq!(p("openai").validate_declared_region(None).unwrap(), None);
        assert_eq!(own.residency_for(Some("eu")), "eu");
        assert_eq!(p("mistral").residency_for(None), "eu");
        assert_eq!(p("sarvam").residency_for(None), "india");
        assert_eq!(p("openai").residency_for(None), "global");
        assert_eq!(p("openai").residency_for(Some("eu")), "eu");
    }

    #[test]
    fn hint_needs_a_long_enough_secret() {
        assert_eq!(secret_hint("sk-0123456789"), "6789");
        assert_eq!(secret_hint("short-key"), "");
        assert_eq!(secret_hint("ключ-0123456789-éèêë"), "éèêë");
    }
}
