//! The `/v1/byok` credential contract: register, list, get, update, enable, disable, revoke,
//! bind, unbind, test, and the provider catalog. Every mutation honours `If-Match: "<revision>"`; reads and mutations
//! answer the revision in `ETag`. Declares its part of the OpenAPI document.

use std::collections::BTreeMap;

use actix_web::dev::Payload;
use actix_web::http::header::{ETAG, IF_MATCH};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use futures_util::future::{Ready, ready};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::{RefOr, schema::Schema};
use utoipa::{IntoParams, OpenApi, PartialSchema, ToSchema};

use super::AppState;
use super::auth::{Authed, Read, Write};
use super::bodies;
use super::byok_health::{HealthCauseView, HealthView};
use super::error::{ApiError, AuthErrors, BadRequest, BodyErrors, Conflict, ErrorCode, NotFound};
use super::idempotency::{IdempotencyHeader, KeyOnlyBody, KeyScope, idempotent};
use super::json::Json;
use super::rotation::{PendingRotationView, PreviousSecretView};
use super::usage::{QuotaExceededView, QuotaView};
use super::views::{BindingView, CredentialStateView, ProviderInfo, provider_infos};
use crate::crypto::Redacted;
use crate::domain::Scope;
use crate::domain::credential::{
    Binding, Credential, CredentialPatch, CredentialProfile, ProbeError, RegisterRequest,
    TestResult,
};
use crate::service::credentials::{ListFilter, Tested, UpdateRequest, Versioned};

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/v1/byok/providers").get(list_providers))
        .service(resource("/v1/byok/register").post(register))
        .service(resource("/v1/byok/list").get(list))
        .service(resource("/v1/byok/get/{id}").get(get))
        .service(resource("/v1/byok/update/{id}").patch(update))
        .service(resource("/v1/byok/enable/{id}").post(enable))
        .service(resource("/v1/byok/disable/{id}").post(disable))
        .service(resource("/v1/byok/revoke/{id}").delete(revoke))
        .service(resource("/v1/byok/bind/{id}").post(bind))
        .service(resource("/v1/byok/unbind/{id}").post(unbind))
        .service(resource("/v1/byok/test/{id}").post(test));
}

/// The credential operations and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    paths(list_providers, register, list, get, update, enable, disable, revoke, bind, unbind, test),
    tags((name = "byok", description = "Provider credentials: the /v1/byok contract")),
)]
pub struct ByokApi;

/// The headers of a credential mutation, as documented.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ConditionalHeaders {
    /// The revision (`ETag`) the change is based on, in quotes as the `ETag` gives it, or `*`
    /// (the credential exists, as every command checks anyway); another current revision
    /// answers 409.
    #[param(rename = "If-Match", nullable = false)]
    if_match: Option<String>,
    /// 1 to 255 printable ASCII characters, scoped to the account: a retry with the same key
    /// and the same request is answered the first response again (for 48 hours) instead of
    /// executing twice. Or send it as the top-level body field `idempotency_key`.
    #[param(rename = "Idempotency-Key", nullable = false)]
    idempotency_key: Option<String>,
}

/// `If-Match: "<revision>"`, or `*`; absent (or `*`) means unconditional.
pub struct IfMatch(pub Option<u64>);

fn bad_if_match(message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidHeader, message).with_param("If-Match")
}

/// Parses `If-Match` as RFC 9110 §13.1.1 defines it, kept to what a credential's `ETag` can be:
/// `*`, or one strong entity tag whose opaque tag is a revision written as the `ETag` header
/// writes it (decimal digits, no sign, no leading zero). Everything else is a 400: an unquoted
/// or half-quoted revision, a weak tag (which never matches under the strong comparison
/// `If-Match` uses), a list, or several `If-Match` headers (which are a list).
fn parse_if_match(req: &HttpRequest) -> Result<IfMatch, ApiError> {
    let mut values = req.headers().get_all(IF_MATCH);
    let Some(value) = values.next() else {
        return Ok(IfMatch(None));
    };
    if values.next().is_some() {
        return Err(bad_if_match(
            "send one If-Match header with one revision, not several",
        ));
    }
    let value = value.as_bytes().trim_ascii();
    // `*` asks only that the credential exist, which every command checks anyway.
    if value == b"*" {
        return Ok(IfMatch(None));
    }
    if value.starts_with(b"W/") {
        return Err(bad_if_match(
            "If-Match compares strong entity tags and a weak one (W/\"...\") never matches; \
             send the ETag as the server gave it, such as \"3\"",
        ));
    }
    if value.contains(&b',') {
        return Err(bad_if_match("If-Match must name one revision, not a list"));
    }
    value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .filter(|digits| {
            !digits.is_empty()
                && digits.iter().all(u8::is_ascii_digit)
                && (digits.len() == 1 || digits[0] != b'0')
        })
        .and_then(|digits| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
        .map(|revision| IfMatch(Some(revision)))
        .ok_or_else(|| {
            bad_if_match("If-Match must be a revision in quotes, as the ETag header gives it")
        })
}

impl FromRequest for IfMatch {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(parse_if_match(req))
    }
}

/// The register body. Its schema (`ByokRegister`, one variant per provider) is built from the
/// catalog in `bodies.rs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// A provider id from `GET /v1/byok/providers`.
    pub provider: String,
    /// Required; an `Option` so that leaving it out is answered with `param: alias`.
    pub alias: Option<String>,
    /// The provider's credential fields (see the catalog). Secret fields are sealed and never
    /// shown again.
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
    /// Shorthand for `credentials.api_key`.
    pub api_key: Option<String>,
    /// Up to 128 characters, without control or invisible characters.
    pub label: Option<String>,
    /// Overrides the provider's API address; plain `http://` only for local and private hosts.
    pub base_url: Option<String>,
    /// Where the credential's traffic is processed; required for `self_hosted`.
    pub declared_region: Option<String>,
    /// Allow-list; empty allows every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// Deny-list; wins over `models`.
    #[serde(default)]
    pub blacklisted_models: Vec<String>,
    /// Load-balancing weight, 1 to 1000 (default 100).
    #[serde(default, deserialize_with = "whole")]
    pub weight: Option<u32>,
    /// An initial binding (with `module` and `model`); at least `capability` or `module`.
    pub capability: Option<String>,
    pub module: Option<String>,
    pub model: Option<String>,
    /// Requested model -> the provider's id for it.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// Probe the provider with the secret before answering.
    #[serde(default)]
    pub test: bool,
}

impl PartialSchema for RegisterBody {
    fn schema() -> RefOr<Schema> {
        RefOr::T(bodies::register_schema())
    }
}

impl ToSchema for RegisterBody {
    fn name() -> std::borrow::Cow<'static, str> {
        bodies::REGISTER.into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        bodies::push_shared_components(schemas);
        for (name, schema) in bodies::register_variants() {
            schemas.push((name, RefOr::T(schema)));
        }
    }
}

/// The one place the body becomes the domain's request. Both literals name every field, so a
/// field added on either side without the other does not compile.
impl From<RegisterBody> for RegisterRequest {
    fn from(b: RegisterBody) -> Self {
        RegisterRequest {
            provider: b.provider,
            alias: b.alias,
            api_key: b.api_key,
            credentials: b.credentials,
            label: b.label,
            base_url: b.base_url,
            declared_region: b.declared_region,
            models: b.models,
            blacklisted_models: b.blacklisted_models,
            weight: b.weight,
            capability: b.capability,
            module: b.module,
            model: b.model,
            model_map: b.model_map,
        }
    }
}

/// Why a probe failed.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[schema(as = ProbeError)]
#[serde(rename_all = "snake_case")]
pub enum ProbeErrorView {
    /// The provider refused the secret (401 or 403).
    InvalidCredentials,
    /// The provider answered 429.
    RateLimited,
    /// No answer within the probe's time limit.
    Timeout,
    /// No connection (or an address the outbound policy refuses).
    Unreachable,
    /// Any other answer.
    ProviderError,
}

impl From<ProbeError> for ProbeErrorView {
    fn from(e: ProbeError) -> Self {
        match e {
            ProbeError::InvalidCredentials => Self::InvalidCredentials,
            ProbeError::RateLimited => Self::RateLimited,
            ProbeError::Timeout => Self::Timeout,
            ProbeError::Unreachable => Self::Unreachable,
            ProbeError::ProviderError => Self::ProviderError,
        }
    }
}

/// A probe of the credential's provider: a real, authenticated call that lists models.
#[derive(Serialize, ToSchema)]
#[schema(as = TestResult, example = json!({"ok": false, "latency_ms": 182, "error": "invalid_credentials",
    "secret_version": 1, "tested_at": "2026-11-23T10:00:00Z"}))]
pub struct TestResultView {
    pub ok: bool,
    /// How long the probe took, in milliseconds.
    pub latency_ms: u64,
    /// Why it failed; absent when `ok`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeErrorView>,
    /// The secret version probed.
    pub secret_version: u32,
    pub tested_at: DateTime<Utc>,
}

impl From<TestResult> for TestResultView {
    fn from(r: TestResult) -> Self {
        let TestResult {
            ok,
            latency_ms,
            error,
            secret_version,
            tested_at,
        } = r;
        Self {
            ok,
            latency_ms,
            error: error.map(ProbeErrorView::from),
            secret_version,
            tested_at,
        }
    }
}

/// A whole number however JSON spells it: `200` and `200.0` are the same number (JSON Schema's
/// `integer` counts both); a fraction, a negative number or one past `u32` is refused.
fn whole<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(f))
                .map(|f| f as u64)
        })
        .and_then(|n| u32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| {
            serde::de::Error::invalid_value(
                serde::de::Unexpected::Other("number"),
                &"a whole number from 0 to 4294967295",
            )
        })
}

/// [`whole`], and `null` refused: the weight always has a value.
fn whole_not_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match whole(d)? {
        Some(weight) => Ok(Some(weight)),
        None => Err(serde::de::Error::custom(NOT_NULLABLE)),
    }
}

/// A field that is present deserialises to `Some`, even when it is `null` (`Some(None)`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The message for `null` on a field that always holds a value.
const NOT_NULLABLE: &str = "this field always has a value and cannot be null: null clears only \
                            label, base_url, declared_region, model_map and optional credential \
                            fields; send [] to empty a list";

/// A field that always holds a value: present and `null` is refused rather than read as absent,
/// so that `null` never silently changes nothing.
fn not_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<T>::deserialize(d)? {
        Some(value) => Ok(Some(value)),
        None => Err(serde::de::Error::custom(NOT_NULLABLE)),
    }
}

/// Each field present is changed; absent fields are kept. `null` clears `label`, `base_url`,
/// `declared_region`, `model_map` (an object replaces the whole map) or an optional credential
/// field (where the provider requires the field it
/// is a 422, as an empty value is); on `alias`, `weight`, `models`, `blacklisted_models` and
/// `credentials`, which always have a value, `null` is a 422. Secrets are not changed here: that
/// is rotation. A secret field in `credentials` is only proof: a change of `base_url` or azure's
/// `endpoint`, where the secret is sent, needs the current secret again or the `admin` scope
/// (docs/adr/0036). Its schema (`ByokUpdate`) is built in `bodies.rs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[serde(default, deserialize_with = "not_null")]
    pub alias: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub label: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub base_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub declared_region: Option<Option<String>>,
    #[serde(default, deserialize_with = "not_null")]
    pub models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "not_null")]
    pub blacklisted_models: Option<Vec<String>>,
    #[serde(default, deserialize_with = "whole_not_null")]
    pub weight: Option<u32>,
    /// Non-secret credential fields (such as azure's `endpoint`); an empty value or `null`
    /// removes an optional one. Secret fields, only as proof of the current secret.
    #[serde(default)]
    pub credentials: BTreeMap<String, Option<String>>,
    /// The whole new model map; `null` (or `{}`) clears it.
    #[serde(default, deserialize_with = "present")]
    pub model_map: Option<Option<BTreeMap<String, String>>>,
}

impl PartialSchema for UpdateBody {
    fn schema() -> RefOr<Schema> {
        RefOr::T(bodies::update_schema())
    }
}

impl ToSchema for UpdateBody {
    fn name() -> std::borrow::Cow<'static, str> {
        bodies::UPDATE.into()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        bodies::push_shared_components(schemas);
    }
}

/// The answer to `register`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "provider": "openai",
    "alias": "prod-eu", "state": "active", "created_at": "2026-11-23T10:00:00Z"}))]
pub struct ByokKey {
    pub byok_id: String,
    pub provider: String,
    pub alias: String,
    pub state: CredentialStateView,
    pub created_at: DateTime<Utc>,
    /// The probe made on registration (`test: true`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_result: Option<TestResultView>,
}

impl From<Credential> for ByokKey {
    fn from(c: Credential) -> Self {
        Self {
            byok_id: c.byok_id.into(),
            provider: c.profile.provider,
            alias: c.profile.alias,
            state: c.state.into(),
            created_at: c.created_at,
            // A credential just registered has a last test only when it was probed on the way.
            test_result: c.last_test.map(TestResultView::from),
        }
    }
}

/// A credential as management endpoints show it: never a secret, never ciphertext.
// The schema states the domain's `Credential` and `CredentialProfile` again, because the domain
// knows no OpenAPI; `From<Versioned>` names every domain field and the tests below compare the
// key sets, so the two cannot drift apart.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H", "provider": "openai",
    "alias": "prod-eu", "label": "Production, EU traffic", "state": "active",
    "secret_version": 1, "version": 1, "revision": 1, "secret_hint": "x9Qz", "settings": {},
    "bindings": [{"capability": "chat"}], "residency": "global", "declared_region": null,
    "base_url": null,
    "models": ["gpt-4o", "gpt-4o-mini"], "blacklisted_models": [], "weight": 100,
    "model_map": {"gpt-4o": "prod-gpt4o-eu"},
    "created_at": "2026-11-23T10:00:00Z", "updated_at": "2026-11-23T10:00:00Z"}))]
pub struct ByokConfig {
    pub byok_id: String,
    pub provider: String,
    pub alias: String,
    pub label: Option<String>,
    pub state: CredentialStateView,
    /// The secret's version: 1 at registration, +1 on each rotation.
    pub secret_version: u32,
    /// The secret's version under its first name: use `secret_version`. Not the revision.
    #[schema(deprecated)]
    pub version: u32,
    /// The credential's revision (its event count): the `ETag`, and what `If-Match` compares.
    pub revision: u64,
    /// The last four characters of the identifying secret (empty when it is too short).
    pub secret_hint: String,
    /// The non-secret credential fields.
    pub settings: BTreeMap<String, String>,
    pub bindings: Vec<BindingView>,
    pub residency: String,
    pub declared_region: Option<String>,
    pub base_url: Option<String>,
    pub models: Vec<String>,
    pub blacklisted_models: Vec<String>,
    pub weight: u32,
    /// Requested model -> the provider's id for it (`{}`: every model is sent as requested).
    pub model_map: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    // Quotas (`usage.rs`).
    /// The quota (`POST /v1/byok/quota/set/{id}`), or null.
    pub quota: Option<QuotaView>,
    /// Set while, or since, the quota was last found reached; resolve leaves the credential out
    /// until `until`. Cleared by setting the quota.
    pub quota_exceeded: Option<QuotaExceededView>,
    // Probes.
    /// The last probe (`POST /v1/byok/test/{id}`, or `test: true` on register), or null.
    pub last_test: Option<TestResultView>,
    // Rotation (`rotation.rs`).
    /// The candidate `POST /v1/byok/rotate/stage/{id}` stored, until committed, replaced or
    /// expired; or null.
    pub pending_rotation: Option<PendingRotationView>,
    /// The secret the last rotation replaced, restorable until `rollback_until`; or null.
    pub previous_secret: Option<PreviousSecretView>,
    // Health (docs/health.md).
    pub health: HealthView,
    /// The cooldown end of `rate_limited`: resolve leaves the credential out until then. Null
    /// otherwise.
    pub health_until: Option<DateTime<Utc>>,
    /// When the health last changed (the time of the evidence), or null.
    pub health_changed_at: Option<DateTime<Utc>>,
    /// What the evidence behind the last change was, or null.
    pub health_cause: Option<HealthCauseView>,
    /// The probe error or usage outcome behind `failing` or `rate_limited`, else null.
    pub health_error: Option<ProbeErrorView>,
}

impl From<Versioned> for ByokConfig {
    fn from(v: Versioned) -> Self {
        let Credential {
            byok_id,
            account_id: _,
            profile:
                CredentialProfile {
                    provider,
                    alias,
                    label,
                    base_url,
                    declared_region,
                    residency,
                    models,
                    blacklisted_models,
                    weight,
                    bindings,
                    settings,
                    model_map,
                },
            state,
            secret_version,
            secret_hint,
            sealed_secret: _,
            created_at,
            updated_at,
            quota,
            quota_exceeded,
            last_test,
            pending_rotation,
            previous_secret,
            latest_secret_version: _,
            health,
            health_until,
            health_changed_at,
            health_cause,
            health_error,
        } = v.credential;
        Self {
            byok_id: byok_id.into(),
            provider,
            alias,
            label,
            state: state.into(),
            secret_version,
            version: secret_version,
            revision: v.revision,
            secret_hint,
            settings,
            bindings: bindings.into_iter().map(BindingView::from).collect(),
            residency,
            declared_region,
            base_url,
            models,
            blacklisted_models,
            weight,
            model_map,
            created_at,
            updated_at,
            quota: quota.map(QuotaView::from),
            quota_exceeded: quota_exceeded.map(QuotaExceededView::from),
            last_test: last_test.map(TestResultView::from),
            pending_rotation: pending_rotation.map(PendingRotationView::from),
            previous_secret: previous_secret.map(PreviousSecretView::from),
            health: health.into(),
            health_until,
            health_changed_at,
            health_cause: health_cause.map(HealthCauseView::from),
            health_error: health_error.map(ProbeErrorView::from),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"items": [{"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H",
    "provider": "openai", "alias": "prod-eu", "label": null, "state": "active",
    "secret_version": 1, "version": 1, "revision": 1, "secret_hint": "x9Qz", "settings": {},
    "bindings": [{"capability": "chat"}], "residency": "global", "declared_region": null,
    "base_url": null, "models": [],
    "blacklisted_models": [], "weight": 100, "model_map": {},
    "created_at": "2026-11-23T10:00:00Z",
    "updated_at": "2026-11-23T10:00:00Z"}], "next_cursor": "AWJ5b2tfMDFKRDVRM004WDJZNFo2QTdCOEM5RDBFMUgOFd7WQrp9y9GePAGHGDF0"}))]
pub struct ByokList {
    /// Oldest first.
    pub items: Vec<ByokConfig>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"items": [{"id": "openai", "name": "OpenAI",
    "required_fields": ["api_key"], "optional_fields": ["organization", "project"],
    "secret_fields": ["api_key"], "takes_base_url": true, "requires_base_url": false,
    "requires_declared_region": false, "residency": "global",
    "default_base_url": "https://api.openai.com/v1"}]}))]
pub struct ProviderList {
    pub items: Vec<ProviderInfo>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this provider's credentials.
    pub provider: Option<String>,
    /// Only credentials in this state.
    pub state: Option<CredentialStateView>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn with_etag(mut response: HttpResponse, revision: u64) -> HttpResponse {
    if let Ok(value) = format!("\"{revision}\"").parse() {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

pub(super) fn config_response(v: &Versioned) -> HttpResponse {
    let config = ByokConfig::from(v.clone());
    with_etag(HttpResponse::Ok().json(config), v.revision)
}

fn registered(v: &Versioned) -> HttpResponse {
    let key = ByokKey::from(v.credential.clone());
    with_etag(HttpResponse::Created().json(key), v.revision)
}

/// The provider catalog: each provider's credential fields and rules.
#[utoipa::path(get, path = "/v1/byok/providers", operation_id = "list_providers", tag = "byok",
    responses((status = 200, description = "The catalog", body = ProviderList)),
    security(),
)]
pub async fn list_providers() -> web::Json<ProviderList> {
    web::Json(ProviderList {
        items: provider_infos(),
    })
}

/// Register a credential.
#[utoipa::path(
    post, path = "/v1/byok/register", operation_id = "register_credential", tag = "byok",
    params(IdempotencyHeader),
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered; the secret is sealed and never shown again", body = ByokKey,
            headers(("ETag" = String, description = "The credential's revision"),
                ("Idempotent-Replayed" = String, description = "`true` on a replayed response")),
            links(
                ("get_credential" = (operation_id = "get_credential",
                    parameters(("id" = "$response.body#/byok_id")),
                    description = "Read the credential")),
                ("update_credential" = (operation_id = "update_credential",
                    parameters(("id" = "$response.body#/byok_id"),
                        ("header.If-Match" = "$response.header.ETag")),
                    description = "Change its settings, on condition of this revision")),
                ("disable_credential" = (operation_id = "disable_credential",
                    parameters(("id" = "$response.body#/byok_id"),
                        ("header.If-Match" = "$response.header.ETag")),
                    description = "Take it out of service")),
                ("enable_credential" = (operation_id = "enable_credential",
                    parameters(("id" = "$response.body#/byok_id")),
                    description = "Bring it back into service")),
                ("revoke_credential" = (operation_id = "revoke_credential",
                    parameters(("id" = "$response.body#/byok_id")),
                    description = "Revoke it for good")),
                ("list_credential_events" = (operation_id = "list_credential_events",
                    parameters(("id" = "$response.body#/byok_id")),
                    description = "Read its events")),
            )),
        (status = 409, response = Conflict),
        BodyErrors,
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Write>,
    Json(body): Json<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, registered, move |recording| async move {
        let credentials = &state.credentials;
        let test = body.test;
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        Ok(credentials
            .register_tested(account_id, body.into(), test, meta, &recording)
            .await?)
    })
    .await
}

fn tested(t: &Tested) -> HttpResponse {
    let view = TestResultView::from(t.result.clone());
    with_etag(HttpResponse::Ok().json(view), t.versioned.revision)
}

/// Test a credential against its provider.
///
/// A real, authenticated call to the provider that lists models (`GET {base}/models` with a bearer token for OpenAI-compatible APIs, `x-api-key` for
/// Anthropic, the deployments list for Azure, a SigV4-signed `ListFoundationModels` for
/// Bedrock, a service-account token for Vertex). The outcome is recorded as `byok.tested` and
/// shown as `last_test`; a failed probe is still a 200 with `ok: false`.
#[utoipa::path(
    post, path = "/v1/byok/test/{id}", operation_id = "test_credential", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body(content = KeyOnlyBody, description = "Optional: only an `idempotency_key`"),
    responses(
        (status = 200, description = "The probe's outcome", body = TestResultView,
            headers(("ETag" = String, description = "The credential's revision afterwards"))),
        ChangeErrors,
        BodyErrors,
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn test(request: LifecycleRequest) -> Result<HttpResponse, ApiError> {
    let (req, state, caller, id, IfMatch(if_match), _) = request;
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, tested, move |recording| async move {
        let id = super::path::credential_id(&id)?;
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        Ok(state
            .credentials
            .test(account_id, &id, if_match, meta, &recording)
            .await?)
    })
    .await
}

/// List the account's credentials, oldest first.
#[utoipa::path(
    get, path = "/v1/byok/list", operation_id = "list_credentials", tag = "byok",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of credentials", body = ByokList,
            links(("next_page" = (operation_id = "list_credentials",
                parameters(("cursor" = "$response.body#/next_cursor")),
                description = "The next page (absent after the last one); send the same filter")))),
        (status = 400, response = BadRequest),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Authed<Read>,
    query: web::Query<ListQuery>,
) -> Result<web::Json<ByokList>, ApiError> {
    let query = query.into_inner();
    let credentials = &state.credentials;
    let after = query
        .cursor
        .as_deref()
        .map(|c| credentials.resume_after(&caller.account_id, c))
        .transpose()?;
    let limit = super::cursor::limit(query.limit)?;
    let filter = ListFilter {
        provider: query.provider,
        state: query.state.map(Into::into),
    };
    let (items, next) = credentials.list(&caller.account_id, &filter, after.as_deref(), limit)?;
    Ok(web::Json(ByokList {
        items: items.into_iter().map(ByokConfig::from).collect(),
        next_cursor: next.map(|after| credentials.cursor(&caller.account_id, &after)),
    }))
}

/// Get a credential.
#[utoipa::path(
    get, path = "/v1/byok/get/{id}", operation_id = "get_credential", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)")),
    responses(
        (status = 200, description = "The credential", body = ByokConfig,
            headers(("ETag" = String, description = "The credential's revision")),
            links(
                ("update_credential" = (operation_id = "update_credential",
                    parameters(("id" = "$request.path.id"),
                        ("header.If-Match" = "$response.header.ETag")),
                    description = "Change its settings, on condition of this revision")),
                ("disable_credential" = (operation_id = "disable_credential",
                    parameters(("id" = "$request.path.id"),
                        ("header.If-Match" = "$response.header.ETag")),
                    description = "Take it out of service, on condition of this revision")),
                ("enable_credential" = (operation_id = "enable_credential",
                    parameters(("id" = "$request.path.id"),
                        ("header.If-Match" = "$response.header.ETag")),
                    description = "Bring it back, on condition of this revision")),
                ("revoke_credential" = (operation_id = "revoke_credential",
                    parameters(("id" = "$request.path.id"),
                        ("header.If-Match" = "$response.header.ETag")),
                    description = "Revoke it, on condition of this revision")),
            )),
        (status = 404, response = NotFound),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Authed<Read>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = super::path::credential_id(&id)?;
    Ok(config_response(
        &state.credentials.get(&caller.account_id, &id)?,
    ))
}

/// Update a credential's settings (not its secret).
#[utoipa::path(
    patch, path = "/v1/byok/update/{id}", operation_id = "update_credential", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body = UpdateBody,
    responses(Changed, ChangeErrors, BodyErrors, AuthErrors),
    security(("bearer" = []))
)]
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Write>,
    id: web::Path<String>,
    IfMatch(if_match): IfMatch,
    Json(body): Json<UpdateBody>,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, config_response, move |recording| async move {
        let patch = CredentialPatch {
            alias: body.alias,
            label: body.label,
            base_url: body.base_url,
            declared_region: body.declared_region,
            models: body.models,
            blacklisted_models: body.blacklisted_models,
            weight: body.weight,
            model_map: body.model_map.map(Option::unwrap_or_default),
            credentials: BTreeMap::new(),
        };
        let request = UpdateRequest {
            patch,
            // `null` removes a field as an empty value does, and is refused where that is.
            fields: Redacted::new(
                body.credentials
                    .into_iter()
                    .map(|(name, value)| (name, value.unwrap_or_default()))
                    .collect(),
            ),
            admin: caller.holds(Scope::Admin),
        };
        let id = super::path::credential_id(&id)?;
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        let credentials = &state.credentials;
        Ok(credentials
            .update(account_id, &id, request, if_match, meta, &recording)
            .await?)
    })
    .await
}

/// The changes to one existing credential that answer it as it is afterwards.
#[derive(Clone)]
enum Change {
    Enable,
    Disable,
    Revoke,
    Bind(Binding),
    Unbind(Binding),
}

/// What a lifecycle route takes, extracted in this order: the caller first, then the path, the
/// `If-Match` header and the body (nothing but an optional `idempotency_key`).
pub(super) type LifecycleRequest = (
    HttpRequest,
    web::Data<AppState>,
    Authed<Write>,
    web::Path<String>,
    IfMatch,
    KeyOnlyBody,
);

/// What a binding route takes: a lifecycle route's extractors, with its body.
type BindingRequest<B> = (
    HttpRequest,
    web::Data<AppState>,
    Authed<Write>,
    web::Path<String>,
    IfMatch,
    Json<B>,
);

/// Runs a change on one of the caller's credentials and answers the credential with its
/// revision; a retry with the same idempotency key is answered the first response again.
async fn run_change(
    (req, state, caller, id): (
        HttpRequest,
        web::Data<AppState>,
        Authed<Write>,
        web::Path<String>,
    ),
    IfMatch(if_match): IfMatch,
    command: Change,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, config_response, move |recording| async move {
        let id = super::path::credential_id(&id)?;
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        let credentials = &state.credentials;
        let enabled = |on| credentials.set_enabled(account_id, &id, on, if_match, meta, &recording);
        Ok(match command {
            Change::Enable => enabled(true).await,
            Change::Disable => enabled(false).await,
            Change::Revoke => {
                credentials
                    .revoke(account_id, &id, if_match, meta, &recording)
                    .await
            }
            Change::Bind(binding) => {
                credentials
                    .bind(account_id, &id, binding, if_match, meta, &recording)
                    .await
            }
            Change::Unbind(selector) => {
                credentials
                    .unbind(account_id, &id, selector, if_match, meta, &recording)
                    .await
            }
        }?)
    })
    .await
}

async fn run_lifecycle(
    request: LifecycleRequest,
    command: Change,
) -> Result<HttpResponse, ApiError> {
    let (req, state, caller, id, if_match, _) = request;
    run_change((req, state, caller, id), if_match, command).await
}

/// What a change to an existing credential can fail with besides its body and its caller.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ChangeErrors {
    #[response(status = 404)]
    NotFound(#[ref_response] NotFound),
    #[response(status = 409)]
    Conflict(#[ref_response] Conflict),
}

/// The answer of every change to an existing credential: the credential afterwards, its
/// revision, and links to read it and its events. Stated once here for every such operation
/// (the derive cannot state links).
pub struct Changed;

impl utoipa::IntoResponses for Changed {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        use utoipa::openapi::content::ContentBuilder;
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::link::LinkBuilder;
        use utoipa::openapi::response::ResponseBuilder;
        let header =
            |description: &str| HeaderBuilder::new().description(Some(description)).build();
        let link = |operation: &str, description: &str| {
            LinkBuilder::new()
                .operation_id(operation)
                .parameter("id", "$response.body#/byok_id")
                .description(description)
                .build()
        };
        let response = ResponseBuilder::new()
            .description("The credential after the change")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name(
                        ByokConfig::name(),
                    )))
                    .build(),
            )
            .header("ETag", header("The credential's revision"))
            .header(
                "Idempotent-Replayed",
                header("`true` on a replayed response"),
            )
            .link(
                "get_credential",
                link("get_credential", "Read the credential again"),
            )
            .link(
                "list_credential_events",
                link(
                    "list_credential_events",
                    "Read its events, this change included",
                ),
            )
            .build();
        [("200".to_owned(), RefOr::T(response))].into()
    }
}

/// Enable a credential (a no-op on an active one).
#[utoipa::path(
    post, path = "/v1/byok/enable/{id}", operation_id = "enable_credential", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body(content = KeyOnlyBody,
        description = "Optional: only an `idempotency_key`"),
    responses(Changed, ChangeErrors, BodyErrors, AuthErrors),
    security(("bearer" = []))
)]
pub async fn enable(request: LifecycleRequest) -> Result<HttpResponse, ApiError> {
    run_lifecycle(request, Change::Enable).await
}

/// Disable a credential: resolve stops choosing it (a no-op on a disabled one).
#[utoipa::path(
    post, path = "/v1/byok/disable/{id}", operation_id = "disable_credential", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body(content = KeyOnlyBody,
        description = "Optional: only an `idempotency_key`"),
    responses(Changed, ChangeErrors, BodyErrors, AuthErrors),
    security(("bearer" = []))
)]
pub async fn disable(request: LifecycleRequest) -> Result<HttpResponse, ApiError> {
    run_lifecycle(request, Change::Disable).await
}

/// Revoke a credential for good and destroy its data key. Idempotent.
#[utoipa::path(
    delete, path = "/v1/byok/revoke/{id}", operation_id = "revoke_credential", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body(content = KeyOnlyBody,
        description = "Optional: only an `idempotency_key`"),
    responses(Changed, ChangeErrors, BodyErrors, AuthErrors),
    security(("bearer" = []))
)]
pub async fn revoke(request: LifecycleRequest) -> Result<HttpResponse, ApiError> {
    run_lifecycle(request, Change::Revoke).await
}

/// A binding to add: what the credential serves. At least `capability` or `module`; `model`
/// narrows it to one requested model.
/// Its schema (`ByokBind`) is built in `bodies.rs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindBody {
    pub capability: Option<String>,
    pub module: Option<String>,
    pub model: Option<String>,
}

/// The bindings to remove: every binding whose `capability` and `module` both equal these
/// (an absent one equals only an absent one), whatever its model. At least one of the two.
/// Its schema (`ByokUnbind`) is built in `bodies.rs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnbindBody {
    pub capability: Option<String>,
    pub module: Option<String>,
}

/// A body whose schema `bodies.rs` builds, under `name`.
macro_rules! built_schema {
    ($body:ty, $name:literal, $schema:path) => {
        impl PartialSchema for $body {
            fn schema() -> RefOr<Schema> {
                RefOr::T($schema())
            }
        }

        impl ToSchema for $body {
            fn name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                bodies::push_shared_components(schemas);
            }
        }
    };
}

built_schema!(BindBody, "ByokBind", bodies::bind_schema);
built_schema!(UnbindBody, "ByokUnbind", bodies::unbind_schema);

/// Bind a credential to a capability, a module or both, optionally for one model (a no-op when
/// it has that binding already).
#[utoipa::path(
    post, path = "/v1/byok/bind/{id}", operation_id = "bind_credential", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body = BindBody,
    responses(Changed, ChangeErrors, BodyErrors, AuthErrors),
    security(("bearer" = []))
)]
pub async fn bind(request: BindingRequest<BindBody>) -> Result<HttpResponse, ApiError> {
    let (req, state, caller, id, if_match, Json(body)) = request;
    let binding = Binding {
        capability: body.capability,
        module: body.module,
        model: body.model,
    };
    run_change((req, state, caller, id), if_match, Change::Bind(binding)).await
}

/// Remove the credential's bindings of a capability and module, whatever their model (a no-op
/// when it has none).
#[utoipa::path(
    post, path = "/v1/byok/unbind/{id}", operation_id = "unbind_credential", tag = "byok",
    params(("id" = String, Path, description = "The credential's id (`byok_…`)"), ConditionalHeaders),
    request_body = UnbindBody,
    responses(Changed, ChangeErrors, BodyErrors, AuthErrors),
    security(("bearer" = []))
)]
pub async fn unbind(request: BindingRequest<UnbindBody>) -> Result<HttpResponse, ApiError> {
    let (req, state, caller, id, if_match, Json(body)) = request;
    let selector = Binding {
        capability: body.capability,
        module: body.module,
        model: None,
    };
    run_change((req, state, caller, id), if_match, Change::Unbind(selector)).await
}
#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::domain::credential::{CredentialEvent, Registered, prepare_register};
    use crate::es::Aggregate;

    fn served(credential: Credential, revision: u64) -> Value {
        serde_json::to_value(ByokConfig::from(Versioned {
            credential,
            revision,
        }))
        .unwrap()
    }

    /// A credential as the domain registers it.
    fn credential() -> Credential {
        let registration = prepare_register(RegisterRequest {
            provider: "openai".into(),
            alias: Some("prod".into()),
            api_key: Some("sk-test-0123456789WXYZ".into()),
            capability: Some("chat".into()),
            model_map: [("gpt-4o".to_owned(), "prod-gpt4o".to_owned())].into(),
            ..RegisterRequest::default()
        })
        .unwrap();
        let registered = Registered {
            byok_id: crate::domain::CredentialId::from_ulid(1),
            account_id: crate::domain::AccountId::from_ulid(1),
            profile: registration.profile,
            sealed_secret: "c2VhbGVk".into(),
            secret_hint: registration.credentials.hint,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
        };
        Credential::apply(None, &CredentialEvent::Registered(Box::new(registered)))
    }

    fn keys(object: &Value) -> BTreeSet<String> {
        object.as_object().unwrap().keys().cloned().collect()
    }

    fn config_schema() -> Value {
        serde_json::to_value(<ByokConfig as utoipa::PartialSchema>::schema()).unwrap()
    }

    #[test]
    fn the_config_schema_shows_every_field_of_the_credential_but_its_account_and_ciphertext() {
        let domain = keys(&serde_json::to_value(credential()).unwrap());
        let hidden = ["account_id", "sealed_secret", "latest_secret_version"];
        let edge_only = ["revision", "version"];
        let expected: BTreeSet<String> = domain
            .into_iter()
            .filter(|k| !hidden.contains(&k.as_str()))
            .chain(edge_only.map(String::from))
            .collect();
        let schema = config_schema();
        assert_eq!(keys(&schema["properties"]), expected);
        assert_eq!(keys(&served(credential(), 3)), expected);
    }

    #[test]
    fn version_is_the_deprecated_name_of_secret_version() {
        let config = served(credential(), 3);
        assert_eq!(config["secret_version"], 1);
        assert_eq!(config["version"], config["secret_version"]);
        assert_eq!(config["revision"], 3);
        let properties = &config_schema()["properties"];
        assert_eq!(properties["version"]["deprecated"], true);
        assert_eq!(properties["secret_version"].get("deprecated"), None);
    }
}
