//! The request body as the client sent it: read with a size bound, kept on the request for the
//! idempotency fingerprint, and stripped of the top-level `idempotency_key` field that no route's
//! own type declares. Both body extractors (`json.rs`) and idempotency (`idempotency.rs`) build on
//! this module; it imports neither of them. How long a body may take is `receive.rs`'s; this
//! module only answers a body it cut short.

use std::borrow::Cow;

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::{HttpMessage, HttpRequest};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use serde_json::Value;

use super::error::{ApiError, ErrorCode};
use super::receive::Cut;

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Past this, an oversized body is no longer drained before answering 413.
const MAX_DRAIN: usize = 16 * 1024 * 1024;
/// The top-level body field carrying an idempotency key, as an alternative to the header.
pub const IDEMPOTENCY_FIELD: &str = "idempotency_key";

/// Reads a request body of at most [`MAX_BODY`] bytes.
pub async fn read(payload: &mut Payload) -> Result<Vec<u8>, ApiError> {
    read_up_to(payload, MAX_BODY).await
}

/// Reads a request body of at most `max` bytes (a route with larger bodies, usage reports).
pub async fn read_up_to(payload: &mut Payload, max: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| unreadable(&error))?;
        seen += chunk.len();
        if seen <= max {
            body.extend_from_slice(&chunk);
        } else if seen > MAX_DRAIN {
            break;
        }
    }
    if seen > max {
        return Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is larger than {max} bytes"),
        ));
    }
    Ok(body)
}

/// A body extractor's future: reads the body (see [`read`]), then hands it with the request to
/// `decode`, the extractor's own part.
pub fn extract<T: 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    decode: fn(&HttpRequest, Vec<u8>) -> Result<T, ApiError>,
) -> LocalBoxFuture<'static, Result<T, ApiError>> {
    let req = req.clone();
    let mut payload = payload.take();
    Box::pin(async move {
        let body = read(&mut payload).await?;
        decode(&req, body)
    })
}

/// The answer to a body that stopped before its end: it took too long (`receive.rs`), the server
/// is shutting down, or the connection failed.
fn unreadable(error: &PayloadError) -> ApiError {
    match Cut::of(error) {
        Some(Cut::TimedOut(timeout)) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request body did not arrive within {timeout:?}"),
        ),
        Some(Cut::ShuttingDown) => ApiError::new(
            ErrorCode::ShuttingDown,
            "the server is shutting down; nothing was done, send the request again",
        ),
        None => ApiError::new(ErrorCode::InvalidJson, "the request body could not be read"),
    }
}

/// The body as the client sent it, kept on the request by the body extractors.
struct Kept(Vec<u8>);

/// Keeps the body as sent on the request, for [`kept_json`].
pub fn keep(req: &HttpRequest, body: Vec<u8>) {
    req.extensions_mut().insert(Kept(body));
}

/// The kept body as JSON; `None` when no extractor read one or it is not JSON.
pub fn kept_json(req: &HttpRequest) -> Option<Value> {
    req.extensions()
        .get::<Kept>()
        .and_then(|kept| serde_json::from_slice(&kept.0).ok())
}

/// The body without a top-level `idempotency_key`, which the route's own type does not know.
/// Bodies that cannot carry one are passed on untouched, so their errors stay the parser's.
pub fn without_idempotency_field(body: &[u8]) -> Cow<'_, [u8]> {
    let field = IDEMPOTENCY_FIELD.as_bytes();
    if !body.windows(field.len()).any(|w| w == field) {
        return Cow::Borrowed(body);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut map)) if map.contains_key(IDEMPOTENCY_FIELD) => {
            map.remove(IDEMPOTENCY_FIELD);
            serde_json::to_vec(&map).map_or(Cow::Borrowed(body), Cow::Owned)
        }
        _ => Cow::Borrowed(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_field_is_taken_out_of_the_body_and_nothing_else_is_touched() {
        let body = br#"{"name": "x", "idempotency_key": "k"}"#;
        let stripped: Value = serde_json::from_slice(&without_idempotency_field(body)).unwrap();
        assert_eq!(stripped, serde_json::json!({"name": "x"}));
        let plain = br#"{"name":  "x"}"#;
        assert!(matches!(without_idempotency_field(plain), Cow::Borrowed(_)));
        // Invalid JSON is left for the parser to report.
        let broken = br#"{"idempotency_key": "#;
        assert_eq!(&*without_idempotency_field(broken), &broken[..]);
        // A nested field of that name is the route's business.
        let nested = br#"{"a": {"idempotency_key": 1}}"#;
        assert_eq!(&*without_idempotency_field(nested), &nested[..]);
    }
}
