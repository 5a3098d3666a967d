//! The routing policy: `GET /v1/byok/policy/get` and `POST /v1/byok/policy/set`. Get answers the
//! seed's `ByokPolicy {mode, scope?}` (the policy in force for the scope asked about, the
//! account default without one) with the account default and every scoped policy beside it.
//! Declares its part of the OpenAPI document.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::AppState;
use super::auth::{Authed, Read, Write};
use super::error::{ApiError, AuthErrors, BadRequest, BodyErrors};
use super::idempotency::{IdempotencyHeader, KeyScope, idempotent};
use super::json::Json;
use crate::domain::policy::{Policy, PolicyMode, PolicyScope};
use crate::service::policy::VersionedPolicy;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/v1/byok/policy/get").get(get))
        .service(resource("/v1/byok/policy/set").post(set));
}

/// The policy operations and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    paths(get, set),
    components(schemas(PolicyModeView, PolicyScopeView, ScopedPolicyView, ByokPolicy)),
    tags((name = "policy", description = "Whether requests no credential can serve fall back to the shared pool")),
)]
pub struct PolicyApi;

/// What happens when none of the account's credentials can serve a request: `byok_only`
/// fails it, `byok_then_pool` (the default) falls back to the gateway's shared pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = PolicyMode)]
pub enum PolicyModeView {
    ByokOnly,
    ByokThenPool,
}

impl From<PolicyMode> for PolicyModeView {
    fn from(mode: PolicyMode) -> Self {
        match mode {
            PolicyMode::ByokOnly => Self::ByokOnly,
            PolicyMode::ByokThenPool => Self::ByokThenPool,
        }
    }
}

impl From<PolicyModeView> for PolicyMode {
    fn from(mode: PolicyModeView) -> Self {
        match mode {
            PolicyModeView::ByokOnly => Self::ByokOnly,
            PolicyModeView::ByokThenPool => Self::ByokThenPool,
        }
    }
}

/// Which requests a scoped policy governs: those whose capability and module equal every field
/// it sets; at least one is set.
// Its schema (`PolicyScope`) is built in `bodies.rs`, which states the rule across its fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyScopeView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl utoipa::PartialSchema for PolicyScopeView {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::RefOr::T(super::bodies::policy_scope_schema())
    }
}

impl ToSchema for PolicyScopeView {
    fn name() -> std::borrow::Cow<'static, str> {
        "PolicyScope".into()
    }

    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        super::bodies::push_shared_components(schemas);
    }
}

impl From<PolicyScope> for PolicyScopeView {
    fn from(s: PolicyScope) -> Self {
        Self {
            capability: s.capability,
            module: s.module,
        }
    }
}

impl From<PolicyScopeView> for PolicyScope {
    fn from(s: PolicyScopeView) -> Self {
        Self {
            capability: s.capability,
            module: s.module,
        }
    }
}

/// One scoped policy.
#[derive(Serialize, ToSchema)]
#[schema(as = ScopedPolicy)]
pub struct ScopedPolicyView {
    pub mode: PolicyModeView,
    pub scope: PolicyScopeView,
}

/// The policy in force for a scope (`mode`, and the `scope` of the policy that decided it;
/// absent when the account default did), the account `default`, and every scoped policy.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"mode": "byok_only", "scope": {"capability": "chat"},
    "default": "byok_then_pool", "scoped": [{"mode": "byok_only", "scope": {"capability": "chat"}}],
    "revision": 1}))]
pub struct ByokPolicy {
    pub mode: PolicyModeView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<PolicyScopeView>,
    pub default: PolicyModeView,
    /// Sorted by scope.
    pub scoped: Vec<ScopedPolicyView>,
    /// How many times the account's policy changed (0: never set).
    pub revision: u64,
}

impl ByokPolicy {
    /// The view of `policy` for a request of `capability` and `module`.
    fn of(policy: &Policy, revision: u64, capability: Option<&str>, module: Option<&str>) -> Self {
        let (mode, scope) = policy.effective(capability, module);
        Self {
            mode: mode.into(),
            scope: scope.cloned().map(Into::into),
            default: policy.default.into(),
            scoped: policy
                .scoped
                .iter()
                .map(|p| ScopedPolicyView {
                    mode: p.mode.into(),
                    scope: p.scope.clone().into(),
                })
                .collect(),
            revision,
        }
    }
}

/// The scope to read the policy in force for; without either, the account default.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// The request's capability.
    pub capability: Option<String>,
    /// The request's module.
    pub module: Option<String>,
}

/// A change to the policy of one scope.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mode": "byok_only", "scope": {"capability": "chat"}}))]
pub struct PolicySetBody {
    /// The mode for `scope` (the account default without one). `null` removes the scoped
    /// policy, so that the scope inherits again, or puts the default back to `byok_then_pool`.
    /// Required, so that leaving it out is never read as a removal.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<PolicyModeView>, required = true)]
    pub mode: Option<Option<PolicyModeView>>,
    /// Absent: the account default.
    #[serde(default)]
    pub scope: Option<PolicyScopeView>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<PolicyModeView>>, D::Error> {
    Option::<PolicyModeView>::deserialize(d).map(Some)
}

/// The answer to a change: the policy in force for the scope it changed.
fn answered(v: &VersionedPolicy) -> HttpResponse {
    let (capability, module) = v.scope.as_ref().map_or((None, None), |s| {
        (s.capability.as_deref(), s.module.as_deref())
    });
    HttpResponse::Ok().json(ByokPolicy::of(&v.policy, v.revision, capability, module))
}

/// Read the policy in force for a capability and module, and every policy of the account.
#[utoipa::path(
    get, path = "/v1/byok/policy/get", operation_id = "get_policy", tag = "policy",
    params(PolicyQuery),
    responses(
        (status = 200, description = "The policy", body = ByokPolicy,
            links(("set_policy" = (operation_id = "set_policy",
                description = "Set the account default, or the policy of a scope")))),
        (status = 400, response = BadRequest),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Authed<Read>,
    query: web::Query<PolicyQuery>,
) -> Result<HttpResponse, ApiError> {
    let v = state.policies.get(&caller.account_id)?;
    let q = query.into_inner();
    Ok(HttpResponse::Ok().json(ByokPolicy::of(
        &v.policy,
        v.revision,
        q.capability.as_deref(),
        q.module.as_deref(),
    )))
}

/// Set (or remove) the policy of the account or of one scope. Answers the policy in force for
/// that scope; setting what is there already is a no-op.
#[utoipa::path(
    post, path = "/v1/byok/policy/set", operation_id = "set_policy", tag = "policy",
    params(IdempotencyHeader),
    request_body = PolicySetBody,
    responses(
        (status = 200, description = "The policy in force for the scope set, and every policy",
            body = ByokPolicy,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replayed response")),
            links(("get_policy" = (operation_id = "get_policy",
                parameters(("capability" = "$request.body#/scope/capability"),
                    ("module" = "$request.body#/scope/module")),
                description = "Read the policy in force for this scope again")))),
        BodyErrors, AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn set(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Write>,
    Json(body): Json<PolicySetBody>,
) -> Result<HttpResponse, ApiError> {
    let Some(mode) = body.mode else {
        return Err(ApiError::new(
            super::error::ErrorCode::InvalidParameter,
            "mode is required: byok_only, byok_then_pool, or null to remove the scope's policy",
        )
        .with_param("mode"));
    };
    let scope: Option<PolicyScope> = body.scope.map(Into::into);
    let account = KeyScope::account(&caller.account_id);
    idempotent(&req, account, answered, move |recording| async move {
        let policies = &state.policies;
        let mode = mode.map(Into::into);
        Ok(policies
            .set(&caller.account_id, mode, scope, &caller.meta, &recording)
            .await?)
    })
    .await
}
