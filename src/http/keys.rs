//! `POST /v1/account/keys`, `GET /v1/account/keys`, `DELETE /v1/account/keys/{id}`, and their
//! part of the OpenAPI document.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::auth::{Admin, Authed};
use super::error::{ApiError, AuthErrors, BodyErrors, Conflict, NotFound};
use super::idempotency::{IdempotencyHeader, KeyOnlyBody, KeyScope, idempotent};
use super::json::Json;
use super::views::ScopeView;
use super::{AppState, schema};
use crate::service::accounts::{CreatedKey, KeyView};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        super::resource("/v1/account/keys")
            .post(create_key)
            .get(list_keys),
    )
    .service(super::resource("/v1/account/keys/{id}").delete(revoke_key));
}

/// The key operations and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    paths(create_key, list_keys, revoke_key),
    tags((name = "keys", description = "Account API keys and their scopes")),
)]
pub struct KeysApi;

/// The body of `create_api_key`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ci deploys", "scopes": ["read", "write"]}))]
pub struct ApiKeyCreate {
    /// 1 to 128 characters, without control or invisible characters.
    #[schema(schema_with = schema::key_name)]
    pub name: String,
    /// At least one; duplicates are dropped. `admin` covers `write` and `read`; `write` covers
    /// `read`; `resolve` is covered by nothing else.
    #[schema(min_items = 1)]
    pub scopes: Vec<ScopeView>,
}

/// An account API key. Never includes the token.
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKey, example = json!({"id": "key_01JD5Q3M8X2Y4Z6A7B8C9D0E1G", "name": "ci deploys",
    "prefix": "kl_3f9a0c1b2", "scopes": ["write", "read"], "created_at": "2026-11-23T10:00:00Z",
    "last_used_at": null, "revoked_at": null}))]
pub struct ApiKeyObject {
    pub id: String,
    pub name: String,
    /// The token's first 12 characters: names the key in listings, logs and events.
    pub prefix: String,
    pub scopes: Vec<ScopeView>,
    pub created_at: DateTime<Utc>,
    /// Updated at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<KeyView> for ApiKeyObject {
    fn from(view: KeyView) -> Self {
        // Every field but the token hash: no answer carries it.
        let key = view.key;
        Self {
            id: key.key_id.into(),
            name: key.name,
            prefix: key.prefix,
            scopes: key.scopes.into_iter().map(ScopeView::from).collect(),
            created_at: key.created_at,
            last_used_at: view.last_used_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// A new API key with its token, shown once.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "key_01JD5Q3M8X2Y4Z6A7B8C9D0E1G", "name": "ci deploys",
    "prefix": "kl_3f9a0c1b2", "scopes": ["write", "read"], "created_at": "2026-11-23T10:00:00Z",
    "last_used_at": null, "revoked_at": null,
    "api_key": "kl_3f9a0c1b2e4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f6", "shown_once": true}))]
pub struct ApiKeyCreated {
    #[serde(flatten)]
    pub key: ApiKeyObject,
    /// The token. Never shown again.
    pub api_key: String,
    /// Always `true`.
    pub shown_once: bool,
}

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"items": [{"id": "key_01JD5Q3M8X2Y4Z6A7B8C9D0E1G", "name": "ci deploys",
    "prefix": "kl_3f9a0c1b2", "scopes": ["write", "read"], "created_at": "2026-11-23T10:00:00Z",
    "last_used_at": null, "revoked_at": null}]}))]
pub struct ApiKeyList {
    /// Oldest first.
    pub items: Vec<ApiKeyObject>,
}

/// Mint an API key.
#[utoipa::path(
    post, path = "/v1/account/keys", operation_id = "create_api_key", tag = "keys",
    params(IdempotencyHeader),
    request_body = ApiKeyCreate,
    responses(
        (status = 201, description = "The key was minted; its token is shown once", body = ApiKeyCreated,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replayed response")),
            links(("revoke_api_key" = (operation_id = "revoke_api_key",
                parameters(("id" = "$response.body#/id")),
                description = "Revoke the key just minted")))),
        (status = 409, response = Conflict),
        BodyErrors,
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn create_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    Json(body): Json<ApiKeyCreate>,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, key_created, move |recording| async move {
        let scopes = body.scopes.into_iter().map(Into::into).collect();
        let (account_id, meta) = (&caller.account_id, &caller.meta);
        let accounts = &state.accounts;
        Ok(accounts
            .mint_key(account_id, &body.name, scopes, meta, &recording)
            .await?)
    })
    .await
}

fn key_created(created: &CreatedKey) -> HttpResponse {
    super::shows_secret(StatusCode::CREATED).json(ApiKeyCreated {
        key: created.key.clone().into(),
        api_key: created.token.expose().clone(),
        shown_once: true,
    })
}

/// List the account's API keys, revoked ones included.
#[utoipa::path(
    get, path = "/v1/account/keys", operation_id = "list_api_keys", tag = "keys",
    responses(
        (status = 200, description = "The account's keys", body = ApiKeyList),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn list_keys(
    state: web::Data<AppState>,
    caller: Authed<Admin>,
) -> Result<web::Json<ApiKeyList>, ApiError> {
    let keys = state.accounts.list_keys(&caller.account_id)?;
    Ok(web::Json(ApiKeyList {
        items: keys.into_iter().map(Into::into).collect(),
    }))
}

/// Revoke an API key, effective at once. Revoking a revoked key answers it unchanged.
#[utoipa::path(
    delete, path = "/v1/account/keys/{id}", operation_id = "revoke_api_key", tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_…`)"), IdempotencyHeader),
    request_body(content = KeyOnlyBody,
        description = "Optional: only an `idempotency_key`"),
    responses(
        (status = 200, description = "The key, revoked", body = ApiKeyObject,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replayed response"))),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        BodyErrors,
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn revoke_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Authed<Admin>,
    id: web::Path<String>,
    _: KeyOnlyBody,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account(&caller.account_id);
    idempotent(&req, scope, key_revoked, move |recording| async move {
        let key_id = super::path::key_id(&id)?;
        let accounts = &state.accounts;
        Ok(accounts
            .revoke_key(&caller.account_id, &key_id, &caller.meta, &recording)
            .await?)
    })
    .await
}

fn key_revoked(key: &KeyView) -> HttpResponse {
    HttpResponse::Ok().json(ApiKeyObject::from(key.clone()))
}
