//! The provider catalog: every provider keyledger knows, the credential fields each takes, its
//! base-URL rule, its residency and its wire protocol, as static data, and the lookups on it.
//!
//! Must not import `domain::credential`, crypto, storage or HTTP; no I/O.

use super::error::{FieldError, looks_like_name};

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
pub fn provider(id: &str) -> Result<&'static Provider, FieldError> {
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
        FieldError::new("provider", message)
    })
}

impl Provider {
    pub fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn takes_base_url(&self) -> bool {
        self.base_url != BaseUrlRule::None
    }

    /// The names of the fields `credentials` must contain, in catalog order.
    pub fn required_fields(&self) -> impl Iterator<Item = &'static str> {
        self.fields.iter().filter(|f| f.required).map(|f| f.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::providers::test_support::param_of;
    use crate::domain::providers::validate_url;

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
    fn unknown_provider_names_provider() {
        assert_eq!(param_of(provider("OpenAI")), "provider");
        assert_eq!(param_of(provider("")), "provider");
        let Err(FieldError { message, .. }) = provider("sk-live-123456789") else {
            panic!()
        };
        assert!(!message.contains("sk-live"), "{message}");
        assert!(message.contains("openai"));
    }
}
