//! The catalog as `GET /v1/byok/providers` answers it: one [`ProviderInfo`] per provider.
//!
//! Must not import `domain::credential`, crypto, storage or HTTP; no I/O.

use serde::Serialize;
use utoipa::ToSchema;

use super::catalog::{BaseUrlRule, FieldSpec, Provider, Residency, catalog};

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
    catalog().iter().map(Provider::info).collect()
}

impl Provider {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
