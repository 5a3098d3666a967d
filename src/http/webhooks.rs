//! Webhook endpoints: `POST/GET /v1/webhooks`, `GET/PATCH/DELETE /v1/webhooks/{id}`,
//! `POST /v1/webhooks/{id}/rotate-secret`, `POST /v1/webhooks/{id}/test`,
//! `GET /v1/webhooks/{id}/deliveries` and
//! `POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver`, all with the `admin` scope; and
//! the OpenAPI `webhooks` section: one entry per event type an endpoint can subscribe to, with
//! its payload and the signature headers (docs/webhooks.md). Declares its part of the document.

use actix_web::http::StatusCode;
use actix_web::http::header::ETAG;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::openapi::path::{OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{
    Content, HttpMethod, PathItem, Paths, PathsBuilder, Required, ResponsesBuilder,
};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::AppState;
use super::auth::{Admin, Authed};
use super::byok::{ConditionalHeaders, IfMatch};
use super::error::{ApiError, AuthErrors, BadRequest, BodyErrors, Conflict, NotFound};
use super::idempotency::{IdempotencyHeader, KeyOnlyBody, KeyScope, idempotent};
use super::json::Json;
use crate::domain::webhook::{self, DisabledReason, Webhook, WebhookPatch, WebhookState};
use crate::service::webhooks::{NewWebhook, Queued, VersionedWebhook, WithSecret};
use crate::storage::Attempt;

pub fn configure(cfg: &mut web::ServiceConfig) {
    use super::resource;
    cfg.service(resource("/v1/webhooks").get(list).post(create))
        .service(
            resource("/v1/webhooks/{id}")
                .get(get)
                .patch(update)
                .delete(delete),
        )
        .service(resource("/v1/webhooks/{id}/rotate-secret").post(rotate_secret))
        .service(resource("/v1/webhooks/{id}/test").post(test))
        .service(resource("/v1/webhooks/{id}/deliveries").get(deliveries))
        .service(resource("/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver").post(redeliver));
}

/// The webhook operations and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    paths(create, list, get, update, delete, rotate_secret, test, deliveries, redeliver),
    components(schemas(WebhookObject, WebhookWithSecret, WebhookList, DeliveryAttempt,
        DeliveryList, QueuedDelivery, CreateWebhookBody, UpdateWebhookBody, WebhookStateView,
        DisabledReasonView)),
    tags((name = "webhooks", description = "Endpoints that receive the account's events, signed (Standard Webhooks)")),
)]
pub struct WebhooksApi;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = WebhookState)]
pub enum WebhookStateView {
    Active,
    Disabled,
    Deleted,
}

impl From<WebhookState> for WebhookStateView {
    fn from(s: WebhookState) -> Self {
        match s {
            WebhookState::Active => Self::Active,
            WebhookState::Disabled => Self::Disabled,
            WebhookState::Deleted => Self::Deleted,
        }
    }
}

/// Why deliveries stopped: the endpoint answered 410 (`gone`), failed for five days
/// (`failing`), or was turned off (`operator`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = DisabledReason)]
pub enum DisabledReasonView {
    Gone,
    Failing,
    Operator,
}

impl From<DisabledReason> for DisabledReasonView {
    fn from(r: DisabledReason) -> Self {
        match r {
            DisabledReason::Gone => Self::Gone,
            DisabledReason::Failing => Self::Failing,
            DisabledReason::Operator => Self::Operator,
        }
    }
}

/// A webhook endpoint. Its signing secret is shown once, when it is created or rotated.
#[derive(Serialize, ToSchema)]
#[schema(as = Webhook, example = json!({"webhook_id": "wh_01JD5Q3M8X2Y4Z6A7B8C9D0E1H",
    "url": "https://hooks.example.com/keyledger", "events": ["byok.rotated"], "state": "active",
    "secret_version": 1, "signing_secret_versions": [1], "created_at": "2026-11-23T10:05:00Z",
    "updated_at": "2026-11-23T10:05:00Z", "revision": 1}))]
pub struct WebhookObject {
    pub webhook_id: String,
    pub url: String,
    /// Event types it receives, sorted; `*` for every type.
    pub events: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub state: WebhookStateView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<DisabledReasonView>,
    /// The current signing secret's version.
    pub secret_version: u32,
    /// The versions that sign deliveries now: the current one, and for 24 hours after a
    /// rotation the one it replaced.
    pub signing_secret_versions: Vec<u32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The endpoint's revision: the `ETag`, what `If-Match` compares.
    pub revision: u64,
}

impl WebhookObject {
    fn of(v: &VersionedWebhook, now: DateTime<Utc>) -> Self {
        let h: &Webhook = &v.webhook;
        Self {
            webhook_id: h.webhook_id.to_string(),
            url: h.url.clone(),
            events: h.events.clone(),
            description: h.description.clone(),
            state: h.state.into(),
            disabled_reason: h.disabled_reason.map(Into::into),
            secret_version: h.secret_version(),
            signing_secret_versions: h.signing_secrets(now).map(|s| s.secret_version).collect(),
            created_at: h.created_at,
            updated_at: h.updated_at,
            revision: v.revision,
        }
    }
}

/// An endpoint with its new signing secret (`whsec_` + base64), shown this once.
#[derive(Serialize, ToSchema)]
#[schema(as = WebhookWithSecret)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: WebhookObject,
    /// Verify deliveries with it (docs/webhooks.md); it is never shown again.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub items: Vec<WebhookObject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// One delivery attempt.
#[derive(Serialize, ToSchema)]
pub struct DeliveryAttempt {
    /// The message's id: its `webhook-id` header, the same on every attempt and redelivery.
    pub delivery_id: String,
    pub event_type: String,
    /// 1 for the first attempt of the delivery, counting redeliveries on.
    pub attempt: u32,
    pub attempted_at: DateTime<Utc>,
    /// The endpoint's answer; absent when none came (refused, unreachable, timed out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub delivered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it is tried again; absent once delivered, disabled or out of retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<DateTime<Utc>>,
}

impl From<Attempt> for DeliveryAttempt {
    fn from(a: Attempt) -> Self {
        Self {
            delivery_id: a.delivery_id,
            event_type: a.event_type,
            attempt: a.attempt,
            attempted_at: a.attempted_at,
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            delivered: a.delivered,
            error: a.error,
            next_retry_at: a.next_retry_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub items: Vec<DeliveryAttempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A delivery queued: watch the delivery log for its attempts.
#[derive(Serialize, ToSchema)]
pub struct QueuedDelivery {
    pub delivery_id: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/keyledger",
    "events": ["byok.rotated", "byok.revoked"], "description": "ops alerts"}))]
pub struct CreateWebhookBody {
    #[schema(schema_with = super::schema::webhook_url)]
    pub url: String,
    #[schema(schema_with = super::schema::webhook_events)]
    pub events: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = super::schema::webhook_description)]
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"events": ["*"], "enabled": true}))]
pub struct UpdateWebhookBody {
    #[serde(default)]
    #[schema(schema_with = super::schema::webhook_url)]
    pub url: Option<String>,
    #[serde(default)]
    #[schema(schema_with = super::schema::webhook_events)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    #[schema(schema_with = super::schema::webhook_description)]
    pub description: Option<String>,
    /// `false` stops deliveries; `true` brings a disabled endpoint back.
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

fn with_etag(mut response: HttpResponse, revision: u64) -> HttpResponse {
    if let Ok(value) = format!("\"{revision}\"").parse() {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

fn now() -> DateTime<Utc> {
    // The views compute which secrets sign "now" from the state the service answered; the
    // service's clock decided the rotation times, and a second's skew here changes nothing.
    Utc::now()
}

fn webhook_response(v: &VersionedWebhook) -> HttpResponse {
    with_etag(
        HttpResponse::Ok().json(WebhookObject::of(v, now())),
        v.revision,
    )
}

fn with_secret(w: &WithSecret, created: bool) -> HttpResponse {
    let body = WebhookWithSecret {
        webhook: WebhookObject::of(&w.versioned, now()),
        secret: w.secret.expose().clone(),
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let response = super::shows_secret(status).json(body);
    with_etag(response, w.versioned.revision)
}

fn created_response(w: &WithSecret) -> HttpResponse {
    with_secret(w, true)
}

fn rotated_response(w: &WithSecret) -> HttpResponse {
    with_secret(w, false)
}

fn queued_response(q: &Queued) -> HttpResponse {
    HttpResponse::Accepted().json(QueuedDelivery {
        delivery_id: q.delivery_id.clone(),
    })
}

/// Create an endpoint. Its signing secret is in this answer only.
#[utoipa::path(
    post, path = "/v1/webhooks", operation_id = "create_webhook", tag = "webhooks",
    params(IdempotencyHeader),
    request_body = CreateWebhookBody,
    responses(
        (status = 201, description = "The endpoint, with its signing secret (shown once)",
            body = WebhookWithSecret,
            headers(("ETag" = String, description = "The endpoint's revision"),
                ("Idempotent-Replayed" = String, description = "`true` on a replayed response"))),
        BodyErrors, AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn create(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    Json(body): Json<CreateWebhookBody>,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, created_response, move |recording| async move {
        let request = NewWebhook {
            url: body.url,
            events: body.events,
            description: body.description,
        };
        Ok(state
            .webhooks
            .create(&caller.account_id, request, &caller.meta, &recording)
            .await?)
    })
    .await
}

/// List the account's endpoints, oldest first.
#[utoipa::path(
    get, path = "/v1/webhooks", operation_id = "list_webhooks", tag = "webhooks",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of endpoints", body = WebhookList),
        (status = 400, response = BadRequest),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<WebhookList>, ApiError> {
    let query = query.into_inner();
    let hooks = &state.webhooks;
    let after = query
        .cursor
        .as_deref()
        .map(|c| hooks.resume_after(&caller.account_id, c))
        .transpose()?;
    let limit = super::cursor::limit(query.limit)?;
    let (items, next) = hooks.list(&caller.account_id, after.as_deref(), limit)?;
    let now = now();
    Ok(web::Json(WebhookList {
        items: items.iter().map(|v| WebhookObject::of(v, now)).collect(),
        next_cursor: next.map(|after| hooks.cursor(&caller.account_id, &after)),
    }))
}

/// Read an endpoint.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}", operation_id = "get_webhook", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookObject,
            headers(("ETag" = String, description = "The endpoint's revision"))),
        (status = 404, response = NotFound),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = super::path::webhook_id(&id)?;
    Ok(webhook_response(
        &state.webhooks.get(&caller.account_id, &id)?,
    ))
}

/// Change an endpoint's URL, events or description, or turn it off and on.
#[utoipa::path(
    patch, path = "/v1/webhooks/{id}", operation_id = "update_webhook", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)"), ConditionalHeaders),
    request_body = UpdateWebhookBody,
    responses(
        (status = 200, description = "The endpoint afterwards", body = WebhookObject,
            headers(("ETag" = String, description = "The endpoint's revision"),
                ("Idempotent-Replayed" = String, description = "`true` on a replayed response"))),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        BodyErrors, AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn update(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    id: web::Path<String>,
    IfMatch(if_match): IfMatch,
    Json(body): Json<UpdateWebhookBody>,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, webhook_response, move |recording| async move {
        let id = super::path::webhook_id(&id)?;
        let patch = WebhookPatch {
            url: body.url,
            events: body.events,
            description: body.description,
            enabled: body.enabled,
        };
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        Ok(state
            .webhooks
            .update(account_id, &id, patch, if_match, meta, &recording)
            .await?)
    })
    .await
}

/// Delete an endpoint for good: its queued deliveries are dropped and its secrets destroyed.
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", operation_id = "delete_webhook", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)"), ConditionalHeaders),
    request_body(content = KeyOnlyBody, description = "Optional: only an `idempotency_key`"),
    responses(
        (status = 200, description = "The endpoint as deleted", body = WebhookObject,
            headers(("ETag" = String, description = "The endpoint's revision"))),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        BodyErrors, AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    id: web::Path<String>,
    IfMatch(if_match): IfMatch,
    _: KeyOnlyBody,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, webhook_response, move |recording| async move {
        let id = super::path::webhook_id(&id)?;
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        Ok(state
            .webhooks
            .delete(account_id, &id, if_match, meta, &recording)
            .await?)
    })
    .await
}

/// Issue a new signing secret. The one it replaces keeps signing beside it for 24 hours, so
/// each delivery meanwhile carries both signatures (space-separated).
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/rotate-secret", operation_id = "rotate_webhook_secret",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)"), ConditionalHeaders),
    request_body(content = KeyOnlyBody, description = "Optional: only an `idempotency_key`"),
    responses(
        (status = 200, description = "The endpoint, with its new signing secret (shown once)",
            body = WebhookWithSecret,
            headers(("ETag" = String, description = "The endpoint's revision"))),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        BodyErrors, AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn rotate_secret(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    id: web::Path<String>,
    IfMatch(if_match): IfMatch,
    _: KeyOnlyBody,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, rotated_response, move |recording| async move {
        let id = super::path::webhook_id(&id)?;
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        Ok(state
            .webhooks
            .rotate_secret(account_id, &id, if_match, meta, &recording)
            .await?)
    })
    .await
}

/// Send a ping (`webhook.ping`) to the endpoint, as any delivery is sent.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/test", operation_id = "test_webhook", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)"), IdempotencyHeader),
    request_body(content = KeyOnlyBody, description = "Optional: only an `idempotency_key`"),
    responses(
        (status = 202, description = "The ping is queued", body = QueuedDelivery),
        (status = 404, response = NotFound),
        BodyErrors, AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn test(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    id: web::Path<String>,
    _: KeyOnlyBody,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, queued_response, move |_| async move {
        let id = super::path::webhook_id(&id)?;
        Ok(state.webhooks.test(&caller.account_id, &id).await?)
    })
    .await
}

/// The endpoint's delivery log, newest first: every attempt with its answer, latency, error
/// and next retry.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", operation_id = "list_webhook_deliveries",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)"), PageQuery),
    responses(
        (status = 200, description = "A page of attempts", body = DeliveryList),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn deliveries(
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    id: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<DeliveryList>, ApiError> {
    let id = super::path::webhook_id(&id)?;
    let query = query.into_inner();
    let hooks = &state.webhooks;
    // Ownership before the cursor: another account's endpoint answers 404 either way.
    hooks.get(&caller.account_id, &id)?;
    let before = query
        .cursor
        .as_deref()
        .map(|c| hooks.resume_deliveries(&id, c))
        .transpose()?;
    let limit = super::cursor::limit(query.limit)?;
    let (items, next_cursor) = hooks.deliveries(&caller.account_id, &id, before, limit)?;
    Ok(web::Json(DeliveryList {
        items: items.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Send one delivery again, with the same `webhook-id`, from the start of the retry schedule.
#[utoipa::path(
    post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
    operation_id = "redeliver_webhook", tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`wh_…`)"),
        ("delivery_id" = String, Path, description = "The delivery's id (`msg_…`)"),
        IdempotencyHeader),
    request_body(content = KeyOnlyBody, description = "Optional: only an `idempotency_key`"),
    responses(
        (status = 202, description = "The delivery is queued again", body = QueuedDelivery),
        (status = 404, response = NotFound),
        BodyErrors, AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn redeliver(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    path: web::Path<(String, String)>,
    _: KeyOnlyBody,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, queued_response, move |_| async move {
        let (id, delivery_id) = path.into_inner();
        let id = super::path::webhook_id(&id)?;
        Ok(state
            .webhooks
            .redeliver(&caller.account_id, &id, &delivery_id)
            .await?)
    })
    .await
}

/// The kinds of payload field the `webhooks` section describes.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Time,
    Whole,
    Flag,
    Object,
}

/// Each event type's payload: its fields, `true` for those always present. Payloads may carry
/// more fields than listed (`additionalProperties`), never a secret: `sealed_secret` and token
/// hashes are removed before delivery.
fn payload_fields(event_type: &str) -> &'static [(&'static str, Kind, bool)] {
    use Kind::*;
    match event_type {
        "byok.registered" => &[
            ("byok_id", Text, true),
            ("account_id", Text, true),
            ("provider", Text, true),
            ("alias", Text, true),
            ("secret_hint", Text, true),
            ("created_at", Time, true),
        ],
        "byok.updated" => &[("byok_id", Text, true), ("updated_at", Time, true)],
        "byok.enabled" => &[("byok_id", Text, true), ("enabled_at", Time, true)],
        "byok.disabled" => &[("byok_id", Text, true), ("disabled_at", Time, true)],
        "byok.revoked" => &[("byok_id", Text, true), ("revoked_at", Time, true)],
        "byok.bound" => &[
            ("byok_id", Text, true),
            ("binding", Object, true),
            ("bound_at", Time, true),
        ],
        "byok.unbound" => &[
            ("byok_id", Text, true),
            ("binding", Object, true),
            ("unbound_at", Time, true),
        ],
        "byok.quota_set" => &[
            ("byok_id", Text, true),
            ("quota", Object, false),
            ("set_at", Time, true),
        ],
        "byok.quota_exceeded" => &[
            ("byok_id", Text, true),
            ("window_start", Time, true),
            ("until", Time, true),
        ],
        "byok.tested" => &[
            ("byok_id", Text, true),
            ("ok", Flag, true),
            ("latency_ms", Whole, true),
            ("error", Text, false),
            ("secret_version", Whole, true),
            ("tested_at", Time, true),
        ],
        "byok.rotation_staged" => &[
            ("byok_id", Text, true),
            ("stage_id", Text, true),
            ("secret_version", Whole, true),
            ("secret_hint", Text, true),
            ("probe_result", Object, true),
            ("expires_at", Time, true),
            ("staged_at", Time, true),
        ],
        "byok.rotated" => &[
            ("byok_id", Text, true),
            ("method", Text, true),
            ("secret_version", Whole, true),
            ("previous_version", Whole, true),
            ("secret_hint", Text, true),
            ("stage_id", Text, false),
            ("rollback_until", Time, false),
            ("rotated_at", Time, true),
        ],
        "byok.health_changed" => &[
            ("byok_id", Text, true),
            ("health", Text, true),
            ("previous", Text, true),
            ("cause", Text, true),
            ("until", Time, false),
            ("error", Text, false),
            ("changed_at", Time, true),
        ],
        "policy.set" => &[
            ("account_id", Text, true),
            ("mode", Text, false),
            ("scope", Object, false),
            ("set_at", Time, true),
        ],
        webhook::PING => &[("webhook_id", Text, true)],
        _ => &[],
    }
}

fn field_schema(kind: Kind) -> Schema {
    let object = ObjectBuilder::new();
    Schema::Object(
        match kind {
            Kind::Text => object.schema_type(Type::String),
            Kind::Time => object.schema_type(Type::String).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime),
            )),
            Kind::Whole => object.schema_type(Type::Integer),
            Kind::Flag => object.schema_type(Type::Boolean),
            Kind::Object => object.schema_type(Type::Object),
        }
        .build(),
    )
}

/// The body of one event type's deliveries: `{type, timestamp, data}`.
fn message_schema(event_type: &str) -> Schema {
    let mut data = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
        ));
    for (name, kind, required) in payload_fields(event_type) {
        data = data.property(*name, field_schema(*kind));
        if *required {
            data = data.required(*name);
        }
    }
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "type",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([event_type])),
            )
            .property(
                "timestamp",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::DateTime,
                    )))
                    .description(Some("When the event occurred (the log's `occurred_at`)")),
            )
            .property("data", data.description(Some(
                "The event's payload as the feeds show it: ids, versions and secret hints, never a secret",
            )))
            .required("type")
            .required("timestamp")
            .required("data")
            .build(),
    )
}

fn signature_header(name: &str, description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .build()
}

/// The OpenAPI 3.1 `webhooks` section: what keyledger POSTs to an endpoint, per event type.
pub fn webhooks_section() -> Paths {
    let mut paths = PathsBuilder::new();
    let names = webhook::EVENT_TYPES
        .iter()
        .map(|t| (t.name, t.summary))
        .chain([(
            webhook::PING,
            "A ping sent by `POST /v1/webhooks/{id}/test`",
        )]);
    for (name, summary) in names {
        let operation = OperationBuilder::new()
            .operation_id(Some(format!("webhook_{}", name.replace('.', "_"))))
            .summary(Some(summary))
            .description(Some(
                "Delivered as the Standard Webhooks specification says: verify `webhook-signature` \
                 over `<webhook-id>.<webhook-timestamp>.<body>` with the endpoint's secret \
                 (docs/webhooks.md). Any 2xx answer is success; 410 disables the endpoint; \
                 anything else is retried.",
            ))
            .tag("webhooks")
            .parameter(signature_header(
                "webhook-id",
                "The message's id (`msg_…`): the same on every retry and redelivery; deduplicate on it",
            ))
            .parameter(signature_header(
                "webhook-timestamp",
                "Unix seconds when this attempt was signed; refuse one more than 5 minutes away",
            ))
            .parameter(signature_header(
                "webhook-signature",
                "Space-separated `v1,<base64 of HMAC-SHA256(key, id.timestamp.body)>`, one per \
                 secret that signs (two for 24 hours after a rotation); the key is the base64 \
                 after `whsec_`, decoded",
            ))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content("application/json", Content::new(Some(message_schema(name))))
                    .build(),
            ))
            .responses(
                ResponsesBuilder::new()
                    .response(
                        "2XX",
                        ResponseBuilder::new().description("Delivered; the body is ignored"),
                    )
                    .response(
                        "410",
                        ResponseBuilder::new()
                            .description("Gone: the endpoint is disabled (`webhook.disabled`)"),
                    )
                    .build(),
            )
            .security(utoipa::openapi::security::SecurityRequirement::default())
            .build();
        paths = paths.path(name, PathItem::new(HttpMethod::Post, operation));
    }
    let mut section: Paths = paths.build();
    // An operation with an empty requirement list means "no security" (it is keyledger calling).
    for item in section.paths.values_mut() {
        if let Some(op) = item.post.as_mut() {
            op.security = Some(Vec::new());
        }
    }
    section
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscribable_type_has_a_payload_schema() {
        for t in webhook::EVENT_TYPES {
            assert!(
                !payload_fields(t.name).is_empty(),
                "{} has no payload fields",
                t.name
            );
        }
        let section = webhooks_section();
        assert_eq!(section.paths.len(), webhook::EVENT_TYPES.len() + 1);
    }
}
