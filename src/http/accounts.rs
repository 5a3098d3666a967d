//! `POST /v1/accounts` and `GET /v1/account`, and their part of the OpenAPI document.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::auth::{Authed, Read, Signup};
use super::error::{ApiError, AuthErrors, BodyErrors, Conflict};
use super::idempotency::{IdempotencyHeader, KeyScope, idempotent};
use super::json::Json;
use super::keys::ApiKeyObject;
use super::{AppState, schema};
use crate::service::accounts::CreatedAccount;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/v1/accounts").post(create_account))
        .service(super::resource("/v1/account").get(get_account));
}

/// The accounts operations and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    paths(create_account, get_account),
    tags((name = "accounts", description = "Tenants")),
)]
pub struct AccountsApi;

/// The body of `create_account`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub struct AccountCreate {
    /// The tenant's email; unique across the server, stored and compared trimmed, in Unicode
    /// NFKC and lower case. No control or invisible characters.
    #[schema(schema_with = schema::email)]
    pub email: String,
}

/// A new account and its first API key. The key is shown once: store it now.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"account_id": "acct_01JD5Q3M8X2Y4Z6A7B8C9D0E1F", "email": "ada@example.com",
    "created_at": "2026-11-23T10:00:00Z", "api_key": "kl_3f9a0c…", "shown_once": true,
    "key": {"id": "key_01JD5Q3M8X2Y4Z6A7B8C9D0E1G", "name": "default", "prefix": "kl_3f9a0c1b2",
        "scopes": ["admin", "write", "read"], "created_at": "2026-11-23T10:00:00Z",
        "last_used_at": null, "revoked_at": null}}))]
pub struct AccountCreated {
    pub account_id: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
    /// The first API key's token (`admin`, `write` and `read` scopes). Never shown again.
    pub api_key: String,
    /// Always `true`: the token cannot be retrieved later.
    pub shown_once: bool,
    pub key: ApiKeyObject,
}

/// An account (a tenant).
#[derive(Serialize, ToSchema)]
#[schema(as = Account, example = json!({"account_id": "acct_01JD5Q3M8X2Y4Z6A7B8C9D0E1F", "email": "ada@example.com",
    "created_at": "2026-11-23T10:00:00Z"}))]
pub struct AccountObject {
    pub account_id: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

/// Create an account.
///
/// Needs the operator's admin token, unless the server runs with open sign-up. Answers the
/// account with its first API key, shown once (and to retries with the same idempotency key).
#[utoipa::path(
    post, path = "/v1/accounts", operation_id = "create_account", tag = "accounts",
    params(IdempotencyHeader),
    request_body = AccountCreate,
    responses(
        (status = 201, description = "The account was created", body = AccountCreated,
            headers(("Idempotent-Replayed" = String, description = "`true` on a replayed response"))),
        (status = 409, response = Conflict),
        BodyErrors,
        AuthErrors,
    ),
    security((), ("bearer" = []))
)]
pub async fn create_account(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Signup,
    Json(body): Json<AccountCreate>,
) -> Result<HttpResponse, ApiError> {
    let scope = KeyScope::account_creation(&caller);
    idempotent(&req, scope, account_created, move |recording| async move {
        let accounts = &state.accounts;
        Ok(accounts
            .create_account(&body.email, &caller.meta, &recording)
            .await?)
    })
    .await
}

fn account_created(created: &CreatedAccount) -> HttpResponse {
    super::shows_secret(StatusCode::CREATED).json(AccountCreated {
        account_id: created.account.account_id.to_string(),
        email: created.account.email.clone(),
        created_at: created.account.created_at,
        api_key: created.token.expose().clone(),
        shown_once: true,
        key: created.key.clone().into(),
    })
}

/// Get the calling key's account.
#[utoipa::path(
    get, path = "/v1/account", operation_id = "get_account", tag = "accounts",
    responses(
        (status = 200, description = "The account", body = AccountObject),
        AuthErrors,
    ),
    security(("bearer" = []))
)]
pub async fn get_account(
    state: web::Data<AppState>,
    caller: Authed<Read>,
) -> Result<web::Json<AccountObject>, ApiError> {
    let account = state.accounts.get_account(&caller.account_id)?;
    Ok(web::Json(AccountObject {
        account_id: account.account_id.into(),
        email: account.email,
        created_at: account.created_at,
    }))
}
