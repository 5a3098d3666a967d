//! The OpenAPI 3.1 document, generated from the handlers and their types, served at
//! `/openapi.json`, and Swagger UI's files under `/docs/`. `openapi/openapi.json` is this
//! document, committed; a test fails when they drift apart.
//!
//! Each resource module declares its own part (`AccountsApi`, `KeysApi`, …: its operations, the
//! schemas they use, its tag); this module only builds the root (info, license, version,
//! security scheme, webhooks) and merges the parts into it, so an endpoint is added in its own
//! file.

use std::sync::Arc;

use actix_web::http::header::CONTENT_ENCODING;
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{LicenseBuilder, Paths};
use utoipa::{Modify, OpenApi};

use super::error::{ApiError, ErrorCode};
use super::{accounts, byok, error, events, health, keys};

#[derive(OpenApi)]
#[openapi(
    version = "3.1.0",
    info(
        title = "keyledger",
        description = "Event-sourced control plane for bring-your-own-key LLM provider credentials. \
            Every error answers the `ErrorEnvelope`; every response carries `X-Request-ID`.",
    ),
    modifiers(&Contract),
)]
struct Root;

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
        doc.components.get_or_insert_with(Default::default).add_security_scheme(
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
        doc.webhooks = Some(Paths::new());
    }
}

/// Every resource's part, in the order their tags are listed.
fn resources() -> [utoipa::openapi::OpenApi; 6] {
    [
        error::ErrorsApi::openapi(),
        accounts::AccountsApi::openapi(),
        keys::KeysApi::openapi(),
        byok::ByokApi::openapi(),
        events::EventsApi::openapi(),
        health::HealthApi::openapi(),
    ]
}

pub fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = Root::openapi();
    for part in resources() {
        doc.merge(part);
    }
    doc
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
    let ui = Arc::new(utoipa_swagger_ui::Config::from("/openapi.json"));
    cfg.service(super::resource("/openapi.json").get(move || {
        let json = json.clone();
        async move {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(json)
        }
    }))
    .service(super::resource("/docs").get(|| async {
        HttpResponse::PermanentRedirect()
            .insert_header(("location", "/docs/"))
            .finish()
    }))
    .service(
        super::resource("/docs/{file:.*}").get(move |file: web::Path<String>| {
            let ui = ui.clone();
            async move { docs_file(&file, ui) }
        }),
    );
}

/// A file of Swagger UI, served from the copy built into the binary. Served here rather than by
/// `SwaggerUi`'s own service, which answers a missing file with an empty 404 and no method but
/// `GET`.
fn docs_file(
    file: &str,
    ui: Arc<utoipa_swagger_ui::Config<'static>>,
) -> Result<HttpResponse, ApiError> {
    match utoipa_swagger_ui::serve(file, ui) {
        Ok(Some(found)) => {
            let mut response = HttpResponse::Ok();
            if found.gzpipped {
                response.insert_header((CONTENT_ENCODING, "gzip"));
            }
            Ok(response
                .content_type(found.content_type)
                .body(found.bytes.into_owned()))
        }
        Ok(None) => Err(ApiError::new(
            ErrorCode::RouteNotFound,
            "no such file under /docs/",
        )),
        Err(error) => {
            tracing::error!(%error, "cannot serve a Swagger UI file");
            Err(ApiError::internal())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::service::page::{DEFAULT_PAGE, MAX_PAGE};

    fn operations(doc: &utoipa::openapi::OpenApi) -> Vec<String> {
        let doc = serde_json::to_value(doc).unwrap();
        let mut ids = Vec::new();
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                ids.push(op["operationId"].as_str().unwrap().to_owned());
            }
        }
        ids.sort();
        ids
    }

    #[test]
    fn merging_keeps_every_operation_of_every_part() {
        let mut parts: Vec<String> = resources().iter().flat_map(operations).collect();
        parts.sort();
        assert_eq!(parts, operations(&spec()));
    }

    #[test]
    fn every_limit_parameter_states_the_page_size_rule() {
        let doc = serde_json::to_value(spec()).unwrap();
        let mut seen = 0;
        for item in doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let params = op["parameters"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                for param in params.iter().filter(|p| p["name"] == "limit") {
                    seen += 1;
                    assert_eq!(param["schema"]["maximum"], Value::from(MAX_PAGE));
                    let text = param["description"].as_str().unwrap();
                    assert!(
                        text.contains(&format!("1 to {MAX_PAGE} (default {DEFAULT_PAGE})")),
                        "{text}"
                    );
                }
            }
        }
        assert!(seen >= 2, "the listings take `limit`");
    }
}
