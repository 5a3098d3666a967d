//! The operator's routes: `/healthz` (the process answers), `/readyz` (the store is checked,
//! sound and taking writes) and `/metrics` (Prometheus text), and their part of the OpenAPI
//! document.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use super::error::ApiError;
use crate::service::Readiness;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(super::resource("/healthz").get(healthz))
        .service(super::resource("/readyz").get(readyz))
        .service(super::resource("/metrics").get(metrics));
}

/// The health operations and the schema they use.
#[derive(OpenApi)]
#[openapi(
    paths(healthz, readyz, metrics),
    tags((name = "health", description = "Liveness, readiness and metrics")),
)]
pub struct HealthApi;

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    /// `ok`, or `unavailable` while the server must not be sent traffic.
    pub status: &'static str,
    /// Why the server is not ready; absent when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<NotReady>,
}

/// Why the server is not ready: `checking` (the check of the store on start is running),
/// `catching_up` (resolve's in-memory state is still replaying the log after the start),
/// `damaged` (the store failed that check, or a read found a damaged record; the server log names
/// it, and only a restart whose check passes makes the server ready again), `stopped` (the
/// store takes no more writes) or `writer_stuck` (an append has waited for the writer longer than
/// `--writer-stuck-after`; ready again once the writer answers).
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotReady {
    Checking,
    CatchingUp,
    Damaged,
    Stopped,
    WriterStuck,
}

/// Liveness: the process is up.
#[utoipa::path(get, path = "/healthz", operation_id = "get_liveness", tag = "health",
    responses((status = 200, description = "Alive", body = Health)),
    security(),
)]
pub async fn healthz() -> web::Json<Health> {
    web::Json(Health {
        status: "ok",
        reason: None,
    })
}

/// Readiness: the store passed its check on start (the same as `keyledger verify`), no damaged
/// record has been found since, its writer is running and answering (no append has waited for
/// it longer than `--writer-stuck-after`), and resolve's in-memory state has caught up with the
/// log.
#[utoipa::path(get, path = "/readyz", operation_id = "get_readiness", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready, and why", body = Health,
            example = json!({"status": "unavailable", "reason": "checking"})),
    ),
    security(),
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.accounts.store();
    let reason = match store.readiness() {
        Readiness::Ready if store.writer_oldest_pending() > state.writer_stuck_after => {
            NotReady::WriterStuck
        }
        Readiness::Ready if !state.resolver.is_caught_up() => NotReady::CatchingUp,
        Readiness::Ready => {
            return HttpResponse::Ok().json(Health {
                status: "ok",
                reason: None,
            });
        }
        Readiness::Checking => NotReady::Checking,
        Readiness::Damaged => NotReady::Damaged,
        Readiness::Closed => NotReady::Stopped,
    };
    HttpResponse::ServiceUnavailable().json(Health {
        status: "unavailable",
        reason: Some(reason),
    })
}

/// Metrics in the Prometheus text exposition format (version 0.0.4): requests, appends,
/// resolve, usage, probes, webhooks and the store (docs/operations.md, Monitor), among them
/// `keyledger_corrupt_records_total`.
#[utoipa::path(get, path = "/metrics", operation_id = "get_metrics", tag = "health",
    responses(
        (status = 200, description = "Every metric", content_type = "text/plain; version=0.0.4",
            body = String),
        (status = 500, response = super::error::InternalError),
    ),
    security(),
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // Measured here: a stuck writer cannot report its own age.
    let pending = state.accounts.store().writer_oldest_pending();
    crate::metrics::count(|m| m.writer_oldest_pending.set(pending.as_secs_f64()));
    let text = crate::metrics::render().map_err(|error| {
        tracing::error!(%error, "metrics cannot be rendered");
        ApiError::internal()
    })?;
    Ok(HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(text))
}
