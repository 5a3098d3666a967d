//! The API's own types for data owned below the HTTP edge: one view per domain or event-store
//! type that the API shows as it is (`Scope`, `CredentialState`, `Binding`, the stored event),
//! and the provider catalog as `GET /v1/byok/providers` answers it. Each is built from its
//! source with `From`, serialises exactly as the source does (the tests below hold that), and
//! carries the OpenAPI schema, under the name the contract has always used, so that `domain` and
//! `es` know nothing of utoipa. Resource objects composed from several sources (`ApiKeyObject`,
//! `ByokConfig`, …) stay in their resource's file.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::Scope;
use crate::domain::credential::{Binding, CredentialState};
use crate::domain::providers::{BaseUrlRule, FieldSpec, Provider, Residency, catalog};
use crate::es::Envelope;

/// What an account API key may do.
///
/// `admin` covers `write` and `read`, and `write` covers `read`. `resolve` (the data plane, the
/// only scope that ever receives plaintext provider secrets) is covered by nothing else and is
/// never granted by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Scope)]
pub enum ScopeView {
    Admin,
    Write,
    Read,
    Resolve,
}

impl From<Scope> for ScopeView {
    fn from(scope: Scope) -> Self {
        match scope {
            Scope::Admin => Self::Admin,
            Scope::Write => Self::Write,
            Scope::Read => Self::Read,
            Scope::Resolve => Self::Resolve,
        }
    }
}

impl From<ScopeView> for Scope {
    fn from(scope: ScopeView) -> Self {
        match scope {
            ScopeView::Admin => Self::Admin,
            ScopeView::Write => Self::Write,
            ScopeView::Read => Self::Read,
            ScopeView::Resolve => Self::Resolve,
        }
    }
}

/// Lifecycle state. `revoked` is final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = CredentialState)]
pub enum CredentialStateView {
    /// Served by resolve (within quota and bindings).
    Active,
    /// Kept, but never served; `enable` brings it back.
    Disabled,
    /// Gone for good: its data key is destroyed and it can never be served again.
    Revoked,
}

impl From<CredentialState> for CredentialStateView {
    fn from(state: CredentialState) -> Self {
        match state {
            CredentialState::Active => Self::Active,
            CredentialState::Disabled => Self::Disabled,
            CredentialState::Revoked => Self::Revoked,
        }
    }
}

impl From<CredentialStateView> for CredentialState {
    fn from(state: CredentialStateView) -> Self {
        match state {
            CredentialStateView::Active => Self::Active,
            CredentialStateView::Disabled => Self::Disabled,
            CredentialStateView::Revoked => Self::Revoked,
        }
    }
}

/// What a credential serves. A binding matches a request when every field it sets equals the
/// request's; at least one of `capability` or `module` is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Binding)]
pub struct BindingView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl From<Binding> for BindingView {
    fn from(b: Binding) -> Self {
        Self {
            capability: b.capability,
            module: b.module,
            model: b.model,
        }
    }
}

/// A stored event.
// The feeds' view of `es::Envelope`, field for field and in its order, except that the stream
// version is named `stream_version` here (the log stores it as `version`). Private payload
// fields are already gone (`service::events::public`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Event, example = json!({"event_id": "01JD5Q3M8X2Y4Z6A7B8C9D0E1J", "position": 42,
    "stream": "byok:byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "stream_version": 3,
    "type": "byok.disabled",
    "schema": 1, "occurred_at": "2026-11-23T10:05:00Z", "actor": "kl_3f9a0c1b2",
    "request_id": "req_01JD5Q3M8X2Y4Z6A7B8C9D0E1K",
    "data": {"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "disabled_at": "2026-11-23T10:05:00Z"}}))]
// Stated for the schema (`additionalProperties: false`): the envelope refuses unknown fields.
#[serde(deny_unknown_fields)]
pub struct Event {
    /// ULID, unique across the store.
    pub event_id: String,
    /// Global position, gap-free, starting at 1.
    pub position: u64,
    pub stream: String,
    /// The event's version within its stream, gap-free, starting at 1. For a credential this
    /// is the revision its `ETag` shows after the event.
    pub stream_version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Payload schema version.
    pub schema: u32,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub request_id: String,
    pub data: serde_json::Value,
}

impl From<Envelope> for Event {
    fn from(e: Envelope) -> Self {
        Self {
            event_id: e.event_id,
            position: e.position,
            stream: e.stream,
            stream_version: e.stream_version,
            event_type: e.event_type,
            schema: e.schema,
            occurred_at: e.occurred_at,
            actor: e.actor,
            request_id: e.request_id,
            data: e.data,
        }
    }
}

/// What `GET /v1/byok/providers` answers for one provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = Provider, example = json!({"id": "azure", "name": "Azure OpenAI",
    "required_fields": ["api_key", "endpoint", "api_version", "deployments"],
    "optional_fields": [], "secret_fields": ["api_key"], "takes_base_url": false,
    "requires_base_url": false, "requires_declared_region": false, "residency": "global",
    "default_base_url": null}))]
pub struct ProviderInfo {
    /// Stable provider id, as given to `register`.
    #[schema(schema_with = provider_id)]
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

impl From<&Provider> for ProviderInfo {
    fn from(p: &Provider) -> Self {
        let names = |keep: fn(&FieldSpec) -> bool| {
            p.fields
                .iter()
                .filter(|f| keep(f))
                .map(|f| f.name.to_owned())
                .collect()
        };
        Self {
            id: p.id.to_owned(),
            name: p.name.to_owned(),
            required_fields: names(|f| f.required),
            optional_fields: names(|f| !f.required),
            secret_fields: names(|f| f.secret),
            takes_base_url: p.takes_base_url(),
            requires_base_url: p.base_url == BaseUrlRule::Required,
            requires_declared_region: p.residency == Residency::Declared,
            residency: match p.residency {
                Residency::Region(r) => Some(r.to_owned()),
                Residency::Declared => None,
            },
            default_base_url: p.default_base_url.map(str::to_owned),
        }
    }
}

/// A provider id: one of the catalog's.
pub fn provider_id() -> utoipa::openapi::schema::Schema {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(catalog().iter().map(|p| p.id)))
        .into()
}

/// The catalog as served, in catalog order.
pub fn provider_infos() -> Vec<ProviderInfo> {
    catalog().iter().map(ProviderInfo::from).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn same_json<A: Serialize, B: Serialize>(domain: &A, view: &B) {
        assert_eq!(
            serde_json::to_value(domain).unwrap(),
            serde_json::to_value(view).unwrap()
        );
    }

    #[test]
    fn scopes_and_states_read_and_write_as_the_domain_does() {
        for scope in [Scope::Admin, Scope::Write, Scope::Read, Scope::Resolve] {
            same_json(&scope, &ScopeView::from(scope));
            let text = serde_json::to_string(&scope).unwrap();
            let read: ScopeView = serde_json::from_str(&text).unwrap();
            assert_eq!(Scope::from(read), scope);
        }
        let states = [
            CredentialState::Active,
            CredentialState::Disabled,
            CredentialState::Revoked,
        ];
        for state in states {
            same_json(&state, &CredentialStateView::from(state));
            let text = serde_json::to_string(&state).unwrap();
            let read: CredentialStateView = serde_json::from_str(&text).unwrap();
            assert_eq!(CredentialState::from(read), state);
        }
        // Refusals name the same choices, so error messages stay the same.
        let domain = serde_json::from_str::<Scope>(r#""root""#).unwrap_err();
        let view = serde_json::from_str::<ScopeView>(r#""root""#).unwrap_err();
        assert_eq!(domain.to_string(), view.to_string());
        let domain = serde_json::from_str::<CredentialState>(r#""gone""#).unwrap_err();
        let view = serde_json::from_str::<CredentialStateView>(r#""gone""#).unwrap_err();
        assert_eq!(domain.to_string(), view.to_string());
    }

    #[test]
    fn bindings_leave_out_what_they_do_not_set() {
        let only_capability: Binding =
            serde_json::from_value(json!({"capability": "chat"})).unwrap();
        let full: Binding =
            serde_json::from_value(json!({"capability": "chat", "module": "m", "model": "x"}))
                .unwrap();
        for binding in [only_capability, full] {
            same_json(&binding, &BindingView::from(binding.clone()));
        }
    }

    #[test]
    fn events_show_the_envelope_as_stored_with_the_stream_version_named() {
        let stored = json!({"event_id": "01JD5Q3M8X2Y4Z6A7B8C9D0E1J", "position": 42,
            "stream": "byok:byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "version": 3,
            "type": "byok.disabled", "schema": 1, "occurred_at": "2026-11-23T10:05:00Z",
            "actor": "kl_3f9a0c1b2", "request_id": "req_01JD5Q3M8X2Y4Z6A7B8C9D0E1K",
            "data": {"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H"}});
        let envelope: Envelope = serde_json::from_value(stored).unwrap();
        // Field order too: SSE clients read the stored text with one key named apart.
        assert_eq!(
            serde_json::to_string(&envelope).unwrap().replacen(
                r#""version":"#,
                r#""stream_version":"#,
                1
            ),
            serde_json::to_string(&Event::from(envelope.clone())).unwrap()
        );
    }

    #[test]
    fn catalog_view_lists_fields_residency_and_base_url_rules() {
        let infos = provider_infos();
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
        assert_eq!(json["default_base_url"], Value::Null);
    }
}
