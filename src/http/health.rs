//! `/healthz` (the process answers) and `/readyz` (the store accepts writes), and their part of
//! the OpenAPI document.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/healthz").route(web::get().to(healthz)))
        .service(super::resource("/readyz").route(web::get().to(readyz)));
}

/// The health operations and the schema they use.
#[derive(OpenApi)]
#[openapi(
    paths(healthz, readyz),
    tags((name = "health", description = "Liveness and readiness")),
)]
pub struct HealthApi;

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// `ok`, or `unavailable` while the store is not accepting writes.
    pub status: &'static str,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "get_liveness", tag = "health",
    responses((status = 200, description = "Alive", body = Health)),
    security(),
)]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health { status: "ok" })
}

/// Readiness: the store is open and its writer running.
#[utoipa::path(get, path = "/readyz", operation_id = "get_readiness", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = Health),
    ),
    security(),
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.accounts.store().is_running() {
        HttpResponse::Ok().json(Health { status: "ok" })
    } else {
        HttpResponse::ServiceUnavailable().json(Health {
            status: "unavailable",
        })
    }
}
