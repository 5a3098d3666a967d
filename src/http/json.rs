//! The JSON body extractor every handler uses: content type checked, size bounded, unknown fields
//! and wrong types answered as 4xx with the envelope and a `param` path. Error messages never echo
//! the offending value (it could be a secret). Reading and keeping the raw body is `body.rs`'s;
//! this module does not import `idempotency.rs` (which builds on it).

use actix_web::dev::Payload;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use super::body;
use super::error::{ApiError, ErrorCode};

pub struct Json<T>(pub T);

fn is_json(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        body::extract(req, payload, |req, body| decode(req, body).map(Json))
    }
}

/// Checks the content type and deserialises a body. The body as sent stays on the request for
/// the idempotency fingerprint; a top-level `idempotency_key` field is taken out before `T` sees
/// it (see `body.rs`).
pub fn decode<T: DeserializeOwned>(req: &HttpRequest, body: Vec<u8>) -> Result<T, ApiError> {
    if !is_json(req) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the request body must be JSON, sent with Content-Type: application/json",
        ));
    }
    let value = parse(&body::without_idempotency_field(&body));
    body::keep(req, body);
    value
}

/// Whether a document is an object, by its first character (JSON allows only space, tab, line
/// feed and carriage return before it).
fn is_object(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

/// Deserialises a body, naming the field at fault on failure. Every body is a JSON object: a
/// document that is valid JSON but something else (an array, a string, a number, `true`,
/// `null`) is answered as a value of the wrong type, before serde could read an array as a
/// struct's fields in order.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if !is_object(body) {
        return Err(
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
                ApiError::new(ErrorCode::InvalidBody, NOT_AN_OBJECT)
            } else {
                ApiError::new(ErrorCode::InvalidJson, NOT_JSON)
            },
        );
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if inner.is_data() {
            describe(&inner.to_string())
        } else if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
            // serde_json reports a number, boolean, null, array or object where an enum's name
            // is expected as a syntax error ("expected ident"), yet the document is valid JSON:
            // it is a value of the wrong type.
            "invalid type: expected a string naming one of the allowed values".to_owned()
        } else {
            return ApiError::new(ErrorCode::InvalidJson, NOT_JSON);
        };
        let error = ApiError::new(ErrorCode::InvalidBody, message);
        match safe_param(&path) {
            Some(param) => error.with_param(param),
            None => error,
        }
    })?;
    de.end()
        .map_err(|_| ApiError::new(ErrorCode::InvalidJson, NOT_JSON))?;
    Ok(value)
}

/// A field path that is safe to echo: field names that look like identifiers. A key that does
/// not (a secret pasted as a field name, say) is never repeated back.
fn safe_param(path: &str) -> Option<String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_.[]".contains(c);
    (!path.is_empty() && path != "." && path.len() <= 128 && path.chars().all(plain))
        .then(|| path.to_owned())
}

const NOT_JSON: &str = "the request body is not valid JSON";

/// The answer to a body that is valid JSON but not an object.
const NOT_AN_OBJECT: &str = "invalid type: expected a JSON object";

/// serde's message without the position suffix and without the offending value.
pub fn describe(text: &str) -> String {
    let text = text.split(" at line ").next().unwrap_or(text);
    let text = text
        .strip_prefix("Query deserialize error: ")
        .unwrap_or(text);
    if let Some(rest) = text.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(", ");
        return match safe_param(name) {
            Some(name) => format!("unknown field `{name}`, {expected}"),
            None => format!("unknown field, {expected}"),
        }
        .trim_end_matches(", ")
        .to_owned();
    }
    for lead in ["invalid type: ", "invalid value: ", "unknown variant "] {
        if let Some(rest) = text.strip_prefix(lead) {
            let expected = rest.split_once(", expected ").map_or("", |(_, e)| e);
            let what = lead.trim_end_matches(": ").trim_end();
            return if expected.is_empty() {
                what.to_owned()
            } else {
                format!("{what}: expected {expected}")
            };
        }
    }
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: u32,
    }

    #[test]
    fn never_echoes_the_value() {
        let err = parse::<Body>(br#"{"name": 7, "count": 1}"#).unwrap_err();
        assert_eq!(err.param.as_deref(), Some("name"));
        assert!(!err.message.contains('7'), "{}", err.message);
        let err = parse::<Body>(br#"{"name": "x", "count": "sk-canary"}"#).unwrap_err();
        assert!(!err.message.contains("sk-canary"), "{}", err.message);
        assert_eq!(err.code, ErrorCode::InvalidBody);
    }

    #[test]
    fn classifies_syntax_and_shape() {
        assert_eq!(
            parse::<Body>(b"{").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        let trailing = br#"{"name":"x","count":1} x"#;
        assert_eq!(
            parse::<Body>(trailing).unwrap_err().code,
            ErrorCode::InvalidJson
        );
        for not_an_object in [
            &b"[1]"[..],
            b"[]",
            b"[\"x\", 1]",
            b" 7",
            b"\"x\"",
            b"null",
            b"true",
        ] {
            let error = parse::<Body>(not_an_object).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidBody);
            assert_eq!(error.message, NOT_AN_OBJECT);
            assert_eq!(error.param, None);
        }
        assert_eq!(
            parse::<Body>(b"[1").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(parse::<Body>(b"").unwrap_err().code, ErrorCode::InvalidJson);
        let unknown = parse::<Body>(br#"{"name":"x","count":1,"extra":true}"#).unwrap_err();
        assert_eq!(unknown.code, ErrorCode::InvalidBody);
        assert!(unknown.message.contains("unknown field `extra`"));
        let missing = parse::<Body>(br#"{"name":"x"}"#).unwrap_err();
        assert!(missing.message.contains("missing field `count`"));
    }
}
