//! `POST /v1/byok/resolve`: the data plane. A gateway with a `resolve` key asks which of the
//! account's credentials serves a request and gets its decrypted fields, or `{source: "pool"}`.
//! The only route that answers plaintext secrets; no other scope reaches it. Declares its part of
//! the OpenAPI document. The rules are in docs/routing.md.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use super::auth::{Authed, Resolve};
use super::error::{ApiError, AuthErrors, BodyErrors, ErrorCode};
use super::json::Json;
use super::views::BindingView;
use crate::domain::CredentialId;
use crate::domain::credential::MAX_NAME_LEN;
use crate::domain::providers::MAX_REGION_LEN;
use crate::domain::routing::{NoCredential, Reason, Request, Specificity};
use crate::service::resolve::{Answer, Explained, Resolution, Resolved};

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/v1/byok/resolve").post(resolve));
}

/// The resolve operation and the schemas it uses.
#[derive(OpenApi)]
#[openapi(
    paths(resolve),
    tags((name = "resolve", description = "The data plane: which credential serves a request (docs/routing.md)")),
)]
pub struct ResolveApi;

/// What the gateway is about to call. Every field is optional; one left out does not filter.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"capability": "chat", "module": "billing", "model": "gpt-4o",
    "residency": "eu", "explain": true}))]
pub struct ResolveBody {
    /// Matched against the credentials' bindings.
    #[schema(min_length = 1, max_length = 128)]
    pub capability: Option<String>,
    /// Matched against the credentials' bindings.
    #[schema(min_length = 1, max_length = 128)]
    pub module: Option<String>,
    /// The requested model: filters by `models` / `blacklisted_models`, matches bindings that
    /// set a model, and is mapped to the provider's id in the answer.
    #[schema(min_length = 1, max_length = 128)]
    pub model: Option<String>,
    /// Only this provider's credentials; `self_hosted` ones are considered only when named here
    /// or by `byok_id`.
    #[schema(min_length = 1, max_length = 128)]
    pub provider: Option<String>,
    /// Only credentials whose residency (declared region, else the provider's) is this.
    #[schema(min_length = 1, max_length = 32)]
    pub residency: Option<String>,
    /// Only this credential (of the caller's account).
    #[schema(pattern = "^byok_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub byok_id: Option<String>,
    /// List every credential of the account with why it won or lost (`explain`).
    #[serde(default)]
    pub explain: bool,
}

/// The credential to call the provider with (`source: "byok"`), or the pool (`source: "pool"`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ResolveResponse {
    /// A credential of the account serves the request.
    Byok(ByokResolution),
    /// No credential is usable and the account's policy lets the gateway use its own pool.
    Pool(PoolResolution),
}

/// `byok`: a credential of the account.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ByokSource {
    Byok,
}

/// `pool`: the gateway's own pool.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolSource {
    Pool,
}

/// `source: "byok"`: the picked credential.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"source": "byok", "byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H",
    "provider": "openai", "version": 1, "credentials": {"api_key": "sk-proj-…"},
    "base_url": "https://api.openai.com/v1", "model": "gpt-4o",
    "binding": {"capability": "chat"}}))]
pub struct ByokResolution {
    pub source: ByokSource,
    pub byok_id: String,
    pub provider: String,
    /// The secret version of `credentials` (`secret_version` of `ByokConfig`).
    pub version: u32,
    /// The credential's fields, decrypted secrets and settings (azure `endpoint`, bedrock
    /// `region`, …), by field name.
    pub credentials: BTreeMap<String, String>,
    /// The credential's base URL, else the provider's default; null when the address follows
    /// from a field (azure's `endpoint`, bedrock's and vertex's `region`).
    pub base_url: Option<String>,
    /// The provider's id for the requested model (through the credential's model map); null
    /// when no model was asked for.
    pub model: Option<String>,
    /// The binding that matched; null for a credential without bindings.
    pub binding: Option<BindingView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Vec<ExplainEntry>>,
}

/// `source: "pool"`: no credential is usable.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"source": "pool", "reason": "none_usable"}))]
pub struct PoolResolution {
    pub source: PoolSource,
    pub reason: PoolReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Vec<ExplainEntry>>,
}

/// Why no credential serves the request.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolReason {
    /// The account has no credential.
    NoCredentials,
    /// `byok_id` names no credential of the account.
    ByokIdNotFound,
    /// The account's credentials all failed a filter (`explain` says which).
    NoneUsable,
}

impl From<NoCredential> for PoolReason {
    fn from(reason: NoCredential) -> Self {
        match reason {
            NoCredential::NoCredentials => PoolReason::NoCredentials,
            NoCredential::NotFound => PoolReason::ByokIdNotFound,
            NoCredential::NoneUsable => PoolReason::NoneUsable,
        }
    }
}

/// One credential of the account and its verdict.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "provider": "openai",
    "alias": "prod-eu", "weight": 100, "reason": "picked", "binding": {"capability": "chat"},
    "rank": {"model": false, "capability": true, "module": false}}))]
pub struct ExplainEntry {
    pub byok_id: String,
    pub provider: String,
    pub alias: String,
    pub weight: u32,
    /// Why it won or lost: the first filter it failed, else how the ranking went.
    pub reason: ReasonView,
    /// The most specific of its bindings that matched the request, if any.
    pub binding: Option<BindingView>,
    /// The rank of that binding, when it passed every filter (higher wins: model, then
    /// capability, then module; all false is an unbound credential).
    pub rank: Option<RankView>,
}

/// A stable reason code (docs/routing.md lists them).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonView {
    Picked,
    NotPicked,
    Outranked,
    NotRequested,
    Revoked,
    Disabled,
    OverQuota,
    /// Its health is `failing` (docs/health.md).
    Unhealthy,
    /// Its health is `rate_limited` until `health_until`.
    CoolingDown,
    ProviderMismatch,
    SelfHostedNotNamed,
    ResidencyMismatch,
    ModelBlacklisted,
    ModelNotAllowed,
    BindingMismatch,
}

impl From<Reason> for ReasonView {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Picked => Self::Picked,
            Reason::NotPicked => Self::NotPicked,
            Reason::Outranked => Self::Outranked,
            Reason::NotRequested => Self::NotRequested,
            Reason::Revoked => Self::Revoked,
            Reason::Disabled => Self::Disabled,
            Reason::OverQuota => Self::OverQuota,
            Reason::Unhealthy => Self::Unhealthy,
            Reason::CoolingDown => Self::CoolingDown,
            Reason::ProviderMismatch => Self::ProviderMismatch,
            Reason::SelfHostedNotNamed => Self::SelfHostedNotNamed,
            Reason::ResidencyMismatch => Self::ResidencyMismatch,
            Reason::ModelBlacklisted => Self::ModelBlacklisted,
            Reason::ModelNotAllowed => Self::ModelNotAllowed,
            Reason::BindingMismatch => Self::BindingMismatch,
        }
    }
}

/// Which fields the matched binding sets.
#[derive(Serialize, ToSchema)]
pub struct RankView {
    pub model: bool,
    pub capability: bool,
    pub module: bool,
}

impl From<Specificity> for RankView {
    fn from(s: Specificity) -> Self {
        Self {
            model: s.model,
            capability: s.capability,
            module: s.module,
        }
    }
}

impl From<Explained> for ExplainEntry {
    fn from(e: Explained) -> Self {
        Self {
            byok_id: e.byok_id.to_string(),
            provider: e.provider,
            alias: e.alias,
            weight: e.weight,
            reason: e.reason.into(),
            binding: e.binding.map(BindingView::from),
            rank: e.specificity.map(RankView::from),
        }
    }
}

fn checked(value: Option<String>, param: &str, max: usize) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > max => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("{param} must be 1 to {max} characters"),
        )
        .with_param(param)),
        other => Ok(other),
    }
}

impl ResolveBody {
    fn into_request(self) -> Result<(Request, bool), ApiError> {
        let byok_id = match self.byok_id {
            None => None,
            Some(id) => Some(CredentialId::parse(&id).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    "byok_id must be a credential id (byok_<ULID>)",
                )
                .with_param("byok_id")
            })?),
        };
        Ok((
            Request {
                capability: checked(self.capability, "capability", MAX_NAME_LEN)?,
                module: checked(self.module, "module", MAX_NAME_LEN)?,
                model: checked(self.model, "model", MAX_NAME_LEN)?,
                provider: checked(self.provider, "provider", MAX_NAME_LEN)?,
                residency: checked(self.residency, "residency", MAX_REGION_LEN)?,
                byok_id,
            },
            self.explain,
        ))
    }
}

fn byok(resolution: Resolution, explain: Option<Vec<ExplainEntry>>) -> ResolveResponse {
    ResolveResponse::Byok(ByokResolution {
        source: ByokSource::Byok,
        byok_id: resolution.byok_id.to_string(),
        provider: resolution.provider,
        version: resolution.secret_version,
        credentials: resolution.credentials.into_inner(),
        base_url: resolution.base_url,
        model: resolution.model,
        binding: resolution.binding.map(BindingView::from),
        explain,
    })
}

fn refused(reason: NoCredential) -> ApiError {
    let why = match reason {
        NoCredential::NoCredentials => "the account has no credential",
        NoCredential::NotFound => "byok_id names no credential of the account",
        NoCredential::NoneUsable => {
            "none of the account's credentials is usable for this request (send explain: true \
             to see why)"
        }
    };
    ApiError::new(
        ErrorCode::NoUsableCredential,
        format!(
            "the account's policy is byok_only for this request and {why}; reason: {}",
            reason.as_str()
        ),
    )
}

/// Resolve a request to a credential.
///
/// Answers the credential a gateway should call the provider with (its decrypted fields), or
/// `{source: "pool"}` when none is usable and the account's policy allows the gateway's own pool.
/// Needs an API key with the `resolve` scope; every other scope is refused. Reads memory only:
/// the answer reflects every write this server has acknowledged. The `idempotency_key` field is
/// accepted and ignored: resolve changes nothing.
#[utoipa::path(
    post, path = "/v1/byok/resolve", operation_id = "resolve_credential", tag = "resolve",
    request_body = ResolveBody,
    responses(
        (status = 200, description = "The credential to use, or the pool", body = ResolveResponse,
            links(
                ("report_usage" = (operation_id = "report_usage",
                    description = "After the provider call: report its spend, calls and outcome")),
                ("get_usage" = (operation_id = "get_usage",
                    parameters(("id" = "$response.body#/byok_id")),
                    description = "The picked credential's usage in its quota's window (a key \
                        with the `read` scope)")),
            ),
            examples(
                ("byok" = (summary = "A credential serves the request", value = json!({
                    "source": "byok", "byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H",
                    "provider": "openai", "version": 1, "credentials": {"api_key": "sk-proj-…"},
                    "base_url": "https://api.openai.com/v1", "model": "gpt-4o",
                    "binding": {"capability": "chat"}}))),
                ("pool" = (summary = "Nothing usable; the gateway uses its pool", value = json!({
                    "source": "pool", "reason": "none_usable"}))),
                ("explain" = (summary = "With explain: true", value = json!({
                    "source": "byok", "byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H",
                    "provider": "openai", "version": 1, "credentials": {"api_key": "sk-proj-…"},
                    "base_url": "https://api.openai.com/v1", "model": "gpt-4o",
                    "binding": {"capability": "chat"},
                    "explain": [
                        {"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "provider": "openai",
                         "alias": "prod-eu", "weight": 100, "reason": "picked",
                         "binding": {"capability": "chat"},
                         "rank": {"model": false, "capability": true, "module": false}},
                        {"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1J", "provider": "openai",
                         "alias": "fallback", "weight": 100, "reason": "outranked",
                         "binding": null,
                         "rank": {"model": false, "capability": false, "module": false}},
                        {"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1K", "provider": "anthropic",
                         "alias": "claude", "weight": 100, "reason": "model_not_allowed",
                         "binding": null, "rank": null}]}))),
            )),
        BodyErrors,
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn resolve(
    state: web::Data<AppState>,
    caller: Authed<Resolve>,
    Json(body): Json<ResolveBody>,
) -> Result<HttpResponse, ApiError> {
    if !state.resolver.is_caught_up() {
        return Err(ApiError::new(
            ErrorCode::CatchingUp,
            "the server is still reading its log into memory after starting; try again in a \
             moment, or another server (/readyz says when this one is ready)",
        ));
    }
    let (request, explain) = body.into_request()?;
    let Answer { resolved, explain } =
        state
            .resolver
            .resolve(&caller.account_id, &request, explain)?;
    let explain = explain.map(|e| e.into_iter().map(ExplainEntry::from).collect());
    let response = match resolved {
        Resolved::Byok(resolution) => byok(*resolution, explain),
        Resolved::Pool(reason) => ResolveResponse::Pool(PoolResolution {
            source: PoolSource::Pool,
            reason: reason.into(),
            explain,
        }),
        Resolved::Refused(reason) => return Err(refused(reason)),
    };
    Ok(super::shows_secret(StatusCode::OK).json(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_view_under_the_same_string() {
        for reason in Reason::ALL {
            let view = serde_json::to_value(ReasonView::from(reason)).unwrap();
            assert_eq!(view, reason.as_str());
        }
        for reason in [
            NoCredential::NoCredentials,
            NoCredential::NotFound,
            NoCredential::NoneUsable,
        ] {
            let view = serde_json::to_value(PoolReason::from(reason)).unwrap();
            assert_eq!(view, reason.as_str());
        }
    }
}
