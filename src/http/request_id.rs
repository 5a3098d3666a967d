//! Every request gets an id (`req_<ULID>` minted by the service's generator, or a well-formed
//! `X-Request-ID` the caller sent), a tracing span, the `X-Request-ID` response header, and one
//! log line and its count in `keyledger_http_requests_total` / `keyledger_http_request_seconds`
//! when it finishes (by route pattern, never the raw path: docs/adr/0032). The id is also
//! reachable from anywhere the request is handled, so error bodies can carry it.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use tracing::Instrument;

use super::AppState;
use crate::metrics;

pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled (empty outside a request).
pub fn current() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// Runs `work`, which may be spawned off the request's task, with the current request's id.
pub fn carry<F: std::future::Future>(work: F) -> impl std::future::Future<Output = F::Output> {
    REQUEST_ID.scope(current(), work)
}

/// The method as a metric label: the standard ones by name, any extension method as `other`,
/// so that a caller cannot grow the label set.
fn method_label(method: &Method) -> &'static str {
    [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ]
    .into_iter()
    .find_map(|(known, name)| (known == method).then_some(name))
    .unwrap_or("other")
}

fn accepted(incoming: &str) -> bool {
    (1..=64).contains(&incoming.len())
        && incoming
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub async fn middleware(
    state: web::Data<AppState>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = req
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| accepted(v))
        .map_or_else(|| state.ids.request(), str::to_owned);
    // The route pattern (`/v1/byok/get/{id}`), filled in once routing has matched: never the raw
    // path or query, where a caller could have pasted something secret.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        route = tracing::field::Empty
    );
    let method = method_label(req.method());
    let started = Instant::now();
    let outcome = REQUEST_ID
        // Inside an async block so that routing and extractors, which run when the inner
        // service is called, already see the id.
        .scope(id.clone(), async move { next.call(req).await })
        .instrument(span.clone())
        .await;
    // Handlers and extractors answer errors as responses; an `Err` here comes from actix
    // itself and is answered by it (neither logged nor counted).
    let mut response = outcome?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(HEADER), value);
    }
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    span.record("route", route.as_str());
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::count(|m| {
        let status = status.to_string();
        m.http_requests
            .with_label_values(&[route.as_str(), method, status.as_str()])
            .inc();
        m.http_request_seconds
            .with_label_values(&[route.as_str(), method])
            .observe(elapsed.as_secs_f64());
    });
    // Microsecond precision: more digits are float noise in the log line.
    let latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
    span.in_scope(|| tracing::info!(status, latency_ms, "request finished"));
    Ok(response)
}
