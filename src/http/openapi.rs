//! The OpenAPI 3.1 document, generated from the handlers and their types, served at
//! `/openapi.json`, and Swagger UI's files under `/docs/`. `openapi/openapi.json` is this
//! document, committed; a test fails when they drift apart.
//!
//! Each resource module declares its own part (`AccountsApi`, `KeysApi`, …: its operations, the
//! schemas they use, its tag); this module only builds the root (info, license, version,
//! servers, security, webhooks, the document's own operation), merges the parts into it, and
//! then states once what holds for every operation ([`Contract`]): the bearer scheme is the
//! default and public operations say `security: []`; every response carries `X-Request-ID`;
//! `ETag` and `Idempotent-Replayed` have one schema; every JSON body takes `idempotency_key`.

use std::sync::Arc;

use actix_web::http::header::CONTENT_ENCODING;
use actix_web::{HttpResponse, web};
use utoipa::openapi::header::{Header, HeaderBuilder};
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::server::ServerBuilder;
use utoipa::openapi::{Components, LicenseBuilder, Paths, Ref, RefOr, Required};
use utoipa::{Modify, OpenApi};

use super::error::{ApiError, ErrorCode};
use super::{
    accounts, byok, error, events, health, keys, policy, resolve, rotation, schema, usage, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    version = "3.1.0",
    info(
        title = "keyledger",
        description = "Event-sourced control plane for bring-your-own-key LLM provider credentials. \
            Every error answers the `ErrorEnvelope`; every response carries `X-Request-ID`.",
    ),
    paths(openapi_document),
    tags((name = "meta", description = "The contract itself")),
)]
struct Root;

/// The schema of the optional body of the mutations that take no input.
const OPTIONAL_BODY: &str = "IdempotencyOptions";

/// The header every response carries.
const REQUEST_ID: &str = "X-Request-ID";

/// The operations anyone may call, without a token.
const PUBLIC: [&str; 5] = [
    "get_openapi",
    "list_providers",
    "get_liveness",
    "get_readiness",
    "get_metrics",
];

/// What holds for the whole document, stated once after the parts are merged (see the module
/// header).
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
        doc.servers = Some(vec![
            ServerBuilder::new()
                .url("http://127.0.0.1:8080")
                .description(Some(
                    "`keyledger serve` on its default address (`--listen`)",
                ))
                .build(),
        ]);
        doc.security = Some(vec![SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
        let components = doc.components.get_or_insert_with(Default::default);
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
        components.headers.insert(
            REQUEST_ID.to_owned(),
            RefOr::T(header(
                schema::request_id(),
                "The request's id: the client's own `X-Request-ID` when it sent a well-formed \
                 one (1 to 64 of `A-Z`, `a-z`, `0-9`, `-`, `_`), else a new `req_<ULID>`. The \
                 server log names it; error bodies repeat it as `request_id`.",
            )),
        );
        for response in components.responses.values_mut() {
            if let RefOr::T(response) = response {
                with_request_id(&mut response.headers);
            }
        }
        let body_schemas = refine_operations(&mut doc.paths);
        for name in body_schemas {
            add_idempotency_field(components, &name);
        }
        doc.webhooks = Some(webhooks::webhooks_section());
    }
}

fn header(schema: Schema, description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

fn with_request_id(headers: &mut std::collections::BTreeMap<String, RefOr<Header>>) {
    headers.insert(
        REQUEST_ID.to_owned(),
        RefOr::Ref(Ref::new(format!("#/components/headers/{REQUEST_ID}"))),
    );
}

/// Every operation of a path item.
fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Gives every operation its security, its shared parameters' rules and its response headers;
/// answers the component names of the JSON request bodies.
fn refine_operations(paths: &mut Paths) -> Vec<String> {
    let mut bodies = Vec::new();
    for (path, item) in paths.paths.iter_mut() {
        for op in operations(item) {
            let public = op
                .operation_id
                .as_deref()
                .is_some_and(|id| PUBLIC.contains(&id));
            if public {
                op.security = Some(Vec::new());
            } else if op.security.as_ref().is_some_and(|s| {
                s.iter()
                    .all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
            }) {
                // `security()` in a path attribute means public as well.
                op.security = Some(Vec::new());
            }
            for parameter in op.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter {
                    refine_parameter(path, parameter);
                }
            }
            for response in op.responses.responses.values_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                with_request_id(&mut response.headers);
                for (name, header) in response.headers.iter_mut() {
                    let schema = match name.as_str() {
                        "ETag" => schema::etag(),
                        "Idempotent-Replayed" => schema::replayed(),
                        _ => continue,
                    };
                    if let RefOr::T(header) = header {
                        header.schema = Some(RefOr::T(schema));
                    }
                }
            }
            let Some(RefOr::T(body)) = &mut op.request_body else {
                continue;
            };
            for content in body.content.values() {
                if let RefOr::T(content) = content
                    && let Some(RefOr::Ref(reference)) = &content.schema
                    && let Some(name) = reference.ref_location.rsplit('/').next()
                {
                    bodies.push(name.to_owned());
                }
            }
            // The mutations without input take a body only to carry an idempotency key.
            if bodies.last().is_some_and(|name| name == OPTIONAL_BODY) {
                body.required = Some(Required::False);
            }
        }
    }
    bodies
}

/// The rules of the parameters every operation that takes them shares, by name: `If-Match`,
/// `Idempotency-Key`, `Last-Event-ID`, and a path's typed `id`.
fn refine_parameter(path: &str, parameter: &mut utoipa::openapi::path::Parameter) {
    use utoipa::openapi::path::ParameterIn;
    let schema = match (&parameter.parameter_in, parameter.name.as_str()) {
        (ParameterIn::Header, "If-Match") => schema::if_match(),
        (ParameterIn::Header, "Idempotency-Key") => schema::idempotency_key_header(),
        (ParameterIn::Header, "Last-Event-ID") => schema::event_id(),
        (ParameterIn::Path, "id") if path.starts_with("/v1/account/keys/") => schema::key_id(),
        (ParameterIn::Path, "id") if path.starts_with("/v1/byok/") => schema::credential_id(),
        (ParameterIn::Path, "id") if path.starts_with("/v1/webhooks/") => schema::webhook_id(),
        _ => return,
    };
    parameter.schema = Some(RefOr::T(schema));
}

/// Every JSON body takes a top-level `idempotency_key`, which the server reads before the
/// route sees the body (see `body.rs`): the schemas that do not state it yet get it here.
fn add_idempotency_field(components: &mut Components, name: &str) {
    if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
        object
            .properties
            .entry("idempotency_key".to_owned())
            .or_insert_with(|| RefOr::T(schema::idempotency_key_field()));
    }
}

/// The OpenAPI document: this contract, as `openapi/openapi.json` holds it.
#[utoipa::path(get, path = "/openapi.json", operation_id = "get_openapi", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document",
        content_type = "application/json", body = Object)))]
#[allow(dead_code)]
fn openapi_document() {}

/// Every resource's part, in the order their tags are listed.
fn resources() -> [utoipa::openapi::OpenApi; 11] {
    [
        error::ErrorsApi::openapi(),
        accounts::AccountsApi::openapi(),
        keys::KeysApi::openapi(),
        byok::ByokApi::openapi(),
        rotation::RotationApi::openapi(),
        resolve::ResolveApi::openapi(),
        policy::PolicyApi::openapi(),
        usage::UsageApi::openapi(),
        events::EventsApi::openapi(),
        webhooks::WebhooksApi::openapi(),
        health::HealthApi::openapi(),
    ]
}

pub fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = Root::openapi();
    for part in resources() {
        doc.merge(part);
    }
    Contract.modify(&mut doc);
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
        // The root's own operation: the document itself.
        parts.extend(operations(&Root::openapi()));
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
