//! The only module that knows actix-web and utoipa: one file per resource, each with its
//! `configure` and its part of the OpenAPI document; what every route shares, 404, 405 with
//! `Allow` and `HEAD` (`routing`); the auth extractors; the request body, how long it may take to
//! arrive (`receive`) and the JSON extractor; typed ids from paths (`path`); the error envelope;
//! request ids, their log line and request metrics; the API's views of domain and event types
//! (`views`); the root OpenAPI document.
//! Reaches the store only through `service`, and takes ids and times from it: it reads no clock
//! and mints nothing.

pub mod accounts;
pub mod admin;
pub mod auth;
mod bodies;
mod body;
pub mod byok;
pub mod byok_health;
mod cursor;
pub mod error;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod json;
pub mod keys;
pub mod openapi;
mod path;
pub mod policy;
pub mod receive;
pub mod request_id;
pub mod resolve;
pub mod rotation;
mod routing;
mod schema;
pub mod usage;
pub mod views;
pub mod webhooks;

use actix_web::http::StatusCode;
use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{HttpResponse, HttpResponseBuilder, web};

use actix_web::web::QueryConfig;

use crate::service::accounts::Accounts;
use crate::service::credentials::Credentials;
use crate::service::events::Events;
use crate::service::idempotency::Idempotency;
use crate::service::ids::Ids;
use crate::service::policy::Policies;
use crate::service::resolve::Resolver;
use crate::service::usage::Usage;
use error::{ApiError, ErrorCode};
pub use routing::{resource, route_not_found};

/// Shared by every worker.
pub struct AppState {
    pub accounts: Accounts,
    pub credentials: Credentials,
    pub events: Events,
    pub policies: Policies,
    pub idempotency: Idempotency,
    /// Quotas and usage reports.
    pub usage: Usage,
    /// Resolve's in-memory routing state, following the log.
    pub resolver: Resolver,
    /// Webhook endpoints and their delivery log.
    pub webhooks: crate::service::webhooks::Webhooks,
    /// Mints the ids of requests that bring none.
    pub ids: std::sync::Arc<Ids>,
    pub open_signup: bool,
    /// How long the writer may leave an append unanswered before `/readyz` says `writer_stuck`.
    pub writer_stuck_after: std::time::Duration,
    /// How long request bodies may take to arrive.
    pub receiving: receive::Limits,
}

/// The start of every answer that shows a secret: a provider secret from resolve, an API key
/// or a webhook signing secret shown once. `Cache-Control: no-store` keeps every cache between
/// the client and keyledger from keeping a copy (RFC 9111 §5.2.2.5).
pub(crate) fn shows_secret(status: StatusCode) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder.insert_header(CacheControl(vec![CacheDirective::NoStore]));
    builder
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Malformed query strings answer with the envelope, naming what serde could not read.
    cfg.app_data(QueryConfig::default().error_handler(|error, _| {
        ApiError::new(ErrorCode::InvalidQuery, json::describe(&error.to_string())).into()
    }))
    // The data plane first: actix tries routes in order, and every pattern with an `{id}` tried
    // before a match costs a regex.
    .configure(resolve::configure)
    .configure(accounts::configure)
    .configure(keys::configure)
    .configure(byok::configure)
    .configure(rotation::configure)
    .configure(policy::configure)
    .configure(usage::configure)
    .configure(events::configure)
    .configure(webhooks::configure)
    .configure(health::configure)
    .configure(admin::configure)
    .configure(openapi::configure);
}
