//! The only module that knows actix-web and utoipa: one file per resource, each with its
//! `configure` and its part of the OpenAPI document; the auth extractors; the request body and
//! the JSON extractor; typed ids from paths (`path`); the error envelope; request ids; the API's
//! views of domain and event types (`views`); the root OpenAPI document. Reaches the store only
//! through `service`, and takes ids and times from it: it reads no clock and mints nothing.

pub mod accounts;
pub mod auth;
mod bodies;
mod body;
pub mod byok;
mod cursor;
pub mod error;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod json;
pub mod keys;
pub mod openapi;
mod path;
pub mod request_id;
mod schema;
pub mod views;

use actix_web::{HttpResponse, web};

use actix_web::web::QueryConfig;

use crate::service::accounts::Accounts;
use crate::service::credentials::Credentials;
use crate::service::events::Events;
use crate::service::idempotency::Idempotency;
use crate::service::ids::Ids;
use error::{ApiError, ErrorCode};

/// Shared by every worker.
pub struct AppState {
    pub accounts: Accounts,
    pub credentials: Credentials,
    pub events: Events,
    pub idempotency: Idempotency,
    /// Mints the ids of requests that bring none.
    pub ids: std::sync::Arc<Ids>,
    pub open_signup: bool,
}

/// A resource whose undeclared methods answer 405 with the envelope (actix would say 404).
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Malformed query strings answer with the envelope, naming what serde could not read.
    cfg.app_data(QueryConfig::default().error_handler(|error, _| {
        ApiError::new(ErrorCode::InvalidQuery, json::describe(&error.to_string())).into()
    }))
    .configure(accounts::configure)
    .configure(keys::configure)
    .configure(byok::configure)
    .configure(events::configure)
    .configure(health::configure)
    .configure(openapi::configure);
}

pub async fn route_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(ErrorCode::RouteNotFound, "no such route"))
}

async fn method_not_allowed(req: actix_web::HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    let mut response = ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not answer that method",
    )
    .error_response();
    // RFC 9110 §15.5.6: a 405 lists the methods the resource answers, as the contract has them.
    let allowed = req.match_pattern().and_then(|path| openapi::methods(&path));
    if let Some(value) = allowed.and_then(|methods| methods.parse().ok()) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}
