//! The OpenAPI 3.1 document, generated from the handlers and their types. `openapi/openapi.json`
//! is this document, committed; a test fails when they drift apart.

use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{LicenseBuilder, Paths};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::{accounts, byok, error, events, health, keys};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyledger",
        description = "Event-sourced control plane for bring-your-own-key LLM provider credentials. \
            Every error answers the `ErrorEnvelope`; every response carries `X-Request-ID`.",
    ),
    paths(
        accounts::create_account, accounts::get_account,
        keys::create_key, keys::list_keys, keys::revoke_key,
        byok::list_providers, byok::register, byok::list, byok::get, byok::update,
        byok::enable, byok::disable, byok::revoke,
        events::credential_events, events::account_events, events::stream_events,
        health::healthz, health::readyz,
    ),
    components(
        schemas(error::ErrorEnvelope, error::ErrorBody, error::ErrorType),
        responses(
            error::BadRequest, error::Unauthorized, error::Forbidden, error::NotFound,
            error::Conflict, error::PayloadTooLarge, error::UnsupportedMediaType,
            error::Unprocessable, error::InternalError,
        ),
    ),
    tags(
        (name = "accounts", description = "Tenants"),
        (name = "keys", description = "Account API keys and their scopes"),
        (name = "byok", description = "Provider credentials: the /v1/byok contract"),
        (name = "events", description = "Event feeds: pages, long poll and Server-Sent Events"),
        (name = "health", description = "Liveness and readiness"),
    ),
    modifiers(&Contract),
)]
struct ApiDoc;

/// What the derive cannot say: the bearer scheme, the license, the version, and the webhooks
/// section (filled in as events gain webhooks).
struct Contract;

impl Modify for Contract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
        doc.info.license = Some(
            LicenseBuilder::new()
                .name("Apache-2.0")
                .identifier(Some("Apache-2.0"))
                .build(),
        );
        if let Some(components) = doc.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "An account API key (`kl_…`) or, for creating accounts, the operator's admin token",
                        ))
                        .build(),
                ),
            );
        }
        doc.webhooks = Some(Paths::new());
    }
}

pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as committed in `openapi/openapi.json`.
pub fn spec_json() -> String {
    // Serialising plain data to JSON cannot fail.
    let mut text = spec().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let json = spec_json();
    cfg.service(
        super::resource("/openapi.json").route(web::get().to(move || {
            let json = json.clone();
            async move {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(json)
            }
        })),
    )
    .service(super::resource("/docs").route(web::get().to(|| async {
        HttpResponse::PermanentRedirect()
            .insert_header(("location", "/docs/"))
            .finish()
    })))
    .service(
        SwaggerUi::new("/docs/{_:.*}").config(utoipa_swagger_ui::Config::from("/openapi.json")),
    );
}
