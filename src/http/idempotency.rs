//! Idempotency keys on every mutating route (docs/design.md §6, ADR 0008). A handler wraps its work
//! in [`idempotent`]; everything else happens here:
//!
//! - the key comes from the `Idempotency-Key` header or a top-level `idempotency_key` body field
//!   (1 to 255 characters; both given and different is a 422);
//! - the request's fingerprint is method, path, `If-Match` and the canonical body (keys sorted,
//!   `idempotency_key` taken out), hashed with a key only the store holds;
//! - same key, same request: the first response is answered again (status, headers, body) with
//!   `Idempotent-Replayed: true` and this request's own `X-Request-ID`;
//! - same key, another request: 422 `idempotency_key_reused`; same key while the first is still
//!   executing: 409 `idempotency_in_progress`;
//! - only 2xx responses are recorded, durably, before they are answered; a 4xx or 5xx releases
//!   the key, so a corrected request may use it;
//! - a response to a request that appended events is recorded in the same atomic batch as those
//!   events (docs/adr/0020): the handler's work gets a [`Recording`] that turns the service's
//!   answer into the response (the handler's `respond`) before the append, so that a crash
//!   never keeps the events without the response and a retry never executes twice.
//!
//! Routes without a body take [`KeyOnlyBody`], so that a body carrying the key is read there
//! too instead of being ignored. The body as sent is kept by `body.rs`; this module builds on it
//! and on `json.rs`, neither of which imports this one.

use std::future::Future;

use actix_web::body::{MessageBody, to_bytes};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue, IF_MATCH};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use super::AppState;
use super::auth::Signup;
use super::body::{self, IDEMPOTENCY_FIELD};
use super::error::{ApiError, ErrorCode};
use super::{json, request_id};
use crate::domain::AccountId;
use crate::service::idempotency::{Begin, Recording};

/// The request header carrying the key.
pub const HEADER: &str = "Idempotency-Key";

/// The `Idempotency-Key` header as every mutating operation documents it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyHeader {
    /// 1 to 255 printable ASCII characters, scoped to the account: a retry with the same key
    /// and the same request is answered the first response again (for 48 hours) instead of
    /// executing twice. Or send it as the top-level body field `idempotency_key`.
    #[param(rename = "Idempotency-Key", nullable = false)]
    idempotency_key: Option<String>,
}
/// Set to `true` on a replayed response.
pub const REPLAYED: &str = "Idempotent-Replayed";
/// Longest key, in characters.
pub const MAX_KEY_CHARS: usize = 255;

/// Whose keys a key is compared with: an account's, or, for account creation, the operator's or
/// open sign-up's.
pub struct KeyScope(String);

impl KeyScope {
    pub fn account(account_id: &AccountId) -> Self {
        Self(account_id.to_string())
    }

    /// Account creation has no account yet: the operator's requests share one scope, and open
    /// sign-up's another (`operator` and `signup`, which no account id can equal).
    pub fn account_creation(caller: &Signup) -> Self {
        Self(caller.meta.actor.clone())
    }
}

/// The body of a route that takes none: empty, or a JSON object whose only field is
/// `idempotency_key`.
pub struct KeyOnlyBody;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

impl FromRequest for KeyOnlyBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        body::extract(req, payload, |req, body| {
            if !body.iter().all(u8::is_ascii_whitespace) {
                json::decode::<NoFields>(req, body)?;
            }
            Ok(KeyOnlyBody)
        })
    }
}

fn invalid(param: &str, message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidParameter, message).with_param(param)
}

fn check(param: &str, key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(invalid(param, "the idempotency key must not be empty"));
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(invalid(
            param,
            "the idempotency key must be at most 255 characters",
        ));
    }
    Ok(())
}

/// The request's idempotency key, if it has one. Messages never echo the key.
fn key_of(req: &HttpRequest, body: Option<&Value>) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all(HEADER);
    let header = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(invalid(
                HEADER,
                "send one Idempotency-Key header, not several",
            ));
        }
        (Some(value), None) => Some(
            value
                .to_str()
                .map_err(|_| invalid(HEADER, "the idempotency key must be printable ASCII"))?
                .to_owned(),
        ),
    };
    let field = match body.and_then(|b| b.get(IDEMPOTENCY_FIELD)) {
        None => None,
        Some(Value::String(key)) => Some(key.clone()),
        Some(_) => {
            return Err(
                ApiError::new(ErrorCode::InvalidBody, "invalid type: expected a string")
                    .with_param(IDEMPOTENCY_FIELD),
            );
        }
    };
    for (param, key) in [(HEADER, &header), (IDEMPOTENCY_FIELD, &field)] {
        if let Some(key) = key {
            check(param, key)?;
        }
    }
    match (header, field) {
        (Some(header), Some(field)) if header != field => Err(invalid(
            IDEMPOTENCY_FIELD,
            "the Idempotency-Key header and the idempotency_key field differ; send one of them, \
             or the same key in both",
        )),
        (header, field) => Ok(header.or(field)),
    }
}

/// The body as fingerprinted: canonical, without the key; no body and `{}` are the same.
/// `serde_json::Value` keeps object keys sorted (no `preserve_order`), so field order never makes
/// two requests differ; a test holds that.
fn canonical_body(body: Option<Value>) -> Vec<u8> {
    match body {
        Some(Value::Object(mut map)) => {
            map.remove(IDEMPOTENCY_FIELD);
            if map.is_empty() {
                Vec::new()
            } else {
                serde_json::to_vec(&map).unwrap_or_default()
            }
        }
        Some(other) => serde_json::to_vec(&other).unwrap_or_default(),
        None => Vec::new(),
    }
}

/// A response as recorded.
#[derive(Serialize, Deserialize)]
struct Recorded {
    status: u16,
    headers: Vec<(String, String)>,
    /// The body, when it is UTF-8 (every JSON body is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    /// The body otherwise, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

/// A response's status and headers, as recorded.
fn head_of(response: &HttpResponse) -> (u16, Vec<(String, String)>) {
    let headers = response
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    (response.status().as_u16(), headers)
}

/// A response as recorded, from its head and body.
fn encode(status: u16, headers: Vec<(String, String)>, body: &[u8]) -> serde_json::Result<Vec<u8>> {
    let (text, base64) = match std::str::from_utf8(body) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(STANDARD.encode(body))),
    };
    serde_json::to_vec(&Recorded {
        status,
        headers,
        text,
        base64,
    })
}

/// Reads a response's body so it can be both recorded and answered.
async fn record(response: HttpResponse) -> Result<(HttpResponse, Vec<u8>), ApiError> {
    let (status, headers) = head_of(&response);
    let (head, body) = response.into_parts();
    let body = to_bytes(body).await.map_err(|_| {
        tracing::error!("a response body could not be read for its idempotency record");
        ApiError::internal()
    })?;
    let recorded = encode(status, headers, &body).map_err(|_| ApiError::internal())?;
    Ok((head.set_body(body).map_into_boxed_body(), recorded))
}

/// A successful response as recorded, when its body is there whole (every JSON body is):
/// what a [`Recording`] seals into the append. `None` leaves the recording to [`record`].
fn record_now(response: HttpResponse) -> Option<Vec<u8>> {
    if !response.status().is_success() {
        return None;
    }
    let (status, headers) = head_of(&response);
    let body = response.into_body().try_into_bytes().ok()?;
    encode(status, headers, &body).ok()
}

fn replay(recorded: &[u8]) -> Result<HttpResponse, ApiError> {
    let corrupt = |what: &str| {
        tracing::error!(what, "an idempotency record does not decode");
        ApiError::internal()
    };
    let recorded: Recorded = serde_json::from_slice(recorded).map_err(|_| corrupt("record"))?;
    let status = StatusCode::from_u16(recorded.status).map_err(|_| corrupt("status"))?;
    let body = match (recorded.text, recorded.base64) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(encoded)) => STANDARD.decode(encoded).map_err(|_| corrupt("body"))?,
        (None, None) => Vec::new(),
        (Some(_), Some(_)) => return Err(corrupt("body")),
    };
    let mut response = HttpResponse::build(status);
    for (name, value) in recorded.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.append_header((name, value));
        }
    }
    response.insert_header((REPLAYED, "true"));
    Ok(response.body(body))
}

/// Runs `work` at most once per idempotency key (see the module header) and answers what
/// `respond` makes of its answer; without a key, just runs it. `work` gets the [`Recording`] to
/// hand to the service, which records the response with the events it appends. `work` returns a
/// future, so nothing in it happens unless it is awaited here. Call this after the extractors,
/// so that a request that fails authentication or validation never touches a key.
pub async fn idempotent<T, W, F>(
    req: &HttpRequest,
    scope: KeyScope,
    respond: fn(&T) -> HttpResponse,
    work: W,
) -> Result<HttpResponse, ApiError>
where
    T: 'static,
    W: FnOnce(Recording<T>) -> F + 'static,
    F: Future<Output = Result<T, ApiError>> + 'static,
{
    let body = body::kept_json(req);
    let Some(key) = key_of(req, body.as_ref())? else {
        return Ok(respond(&work(Recording::none()).await?));
    };
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(ApiError::internal)?;
    let if_match = req
        .headers()
        .get(IF_MATCH)
        .map_or(&b""[..], |v| v.as_bytes());
    let request: [&[u8]; 4] = [
        req.method().as_str().as_bytes(),
        req.path().as_bytes(),
        if_match,
        &canonical_body(body),
    ];
    match state.idempotency.begin(&scope.0, &key, &request)? {
        Begin::Replay(recorded) => replay(&recorded),
        Begin::KeyReused => Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this idempotency key was already used for a different request; \
             send a new key with a new request",
        )),
        Begin::InProgress => Err(ApiError::new(
            ErrorCode::IdempotencyInProgress,
            "a request with this idempotency key is still being processed; \
             retry once it has finished",
        )),
        Begin::Execute(pending) => {
            let recording = state
                .idempotency
                .recording(&pending, move |answer: &T| record_now(respond(answer)));
            let run = async move {
                let response = respond(&work(recording).await?);
                if !response.status().is_success() {
                    return Ok(response);
                }
                // Recorded with its events: the same response, durable already.
                if pending.is_recorded() {
                    state.idempotency.release(pending);
                    return Ok(response);
                }
                let (response, recorded) = record(response).await?;
                // Durable before it is answered: a client that saw it can always replay it.
                state.idempotency.finish(pending, &recorded).await?;
                Ok(response)
            };
            // Spawned, so that it runs to the end and records its response even when the client
            // goes away mid-request: a retry then finds the record instead of executing again.
            actix_web::rt::spawn(request_id::carry(run.instrument(tracing::Span::current())))
                .await
                .map_err(|_| ApiError::internal())?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        String::from_utf8(canonical_body(Some(serde_json::from_str(text).unwrap()))).unwrap()
    }

    #[actix_web::test]
    async fn a_response_recorded_before_it_is_sent_is_the_one_recorded_after() {
        let respond = || {
            HttpResponse::Created()
                .insert_header(("ETag", "\"1\""))
                .json(serde_json::json!({"id": "key_1", "api_key": "kl_x"}))
        };
        let now = record_now(respond()).expect("a JSON body is there whole");
        let (answered, after) = record(respond()).await.unwrap();
        assert_eq!(now, after);
        assert_eq!(answered.status(), StatusCode::CREATED);
        let replayed = replay(&now).unwrap();
        assert_eq!(replayed.headers().get("etag").unwrap(), "\"1\"");
        // Only successes are recorded.
        assert!(record_now(HttpResponse::Conflict().json(serde_json::json!({}))).is_none());
    }

    #[test]
    fn field_order_and_the_key_field_do_not_change_the_canonical_body() {
        let a = canon(r#"{"b": {"y": 1, "x": [2, {"d": 1, "c": 2}]}, "a": "s"}"#);
        let b = canon(
            r#"{"idempotency_key": "k", "a": "s", "b": {"x": [2, {"c": 2, "d": 1}], "y": 1}}"#,
        );
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":"s","b":{"x":[2,{"c":2,"d":1}],"y":1}}"#);
        assert_ne!(canon(r#"{"a": [1, 2]}"#), canon(r#"{"a": [2, 1]}"#));
        assert_eq!(canon(r#"{"idempotency_key": "k"}"#), "");
        assert_eq!(canon("{}"), "");
        assert_eq!(canonical_body(None), b"");
    }
}
