//! The JSON body extractor every handler uses: content type checked (JSON, UTF-8), size bounded,
//! the document checked before any route's type reads it (an object, no object naming a key
//! twice), unknown fields and wrong types answered as 4xx with the envelope and a `param` path.
//! Error messages never echo the offending value (it could be a secret) and speak of JSON, never
//! of the server's Rust types (ADR 0016). Reading and keeping the raw body is `body.rs`'s;
//! this module does not import `idempotency.rs` (which builds on it).

use actix_web::dev::Payload;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use super::body;
use super::error::{ApiError, ErrorCode};

pub struct Json<T>(pub T);

/// What the `Content-Type` of a request says about its body.
#[derive(Debug, PartialEq, Eq)]
enum MediaType {
    /// `application/json` or `application/*+json`, with no charset or `charset=utf-8`.
    Json,
    /// JSON in a charset other than UTF-8, which JSON exchanged between systems must not use
    /// (RFC 8259 §8.1).
    JsonInAnotherCharset,
    /// Anything else, or no content type.
    Other,
}

fn media_type(req: &HttpRequest) -> MediaType {
    let Some(value) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return MediaType::Other;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if !json {
        return MediaType::Other;
    }
    for parameter in parts {
        let (name, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if !value.eq_ignore_ascii_case("utf-8") {
            return MediaType::JsonInAnotherCharset;
        }
    }
    MediaType::Json
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        body::extract(req, payload, |req, body| decode(req, body).map(Json))
    }
}

/// Checks the content type and the document, and deserialises a body. The body as sent stays
/// on the request for the idempotency fingerprint; a top-level `idempotency_key` field is taken
/// out before `T` sees it (see `body.rs`), after the document was checked, so that it too may
/// appear only once.
pub fn decode<T: DeserializeOwned>(req: &HttpRequest, body: Vec<u8>) -> Result<T, ApiError> {
    match media_type(req) {
        MediaType::Json => {}
        MediaType::JsonInAnotherCharset => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the request body must be JSON in UTF-8: send Content-Type: application/json, \
                 with no charset or charset=utf-8",
            ));
        }
        MediaType::Other => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "the request body must be JSON, sent with Content-Type: application/json",
            ));
        }
    }
    check_document(&body)?;
    let value = deserialize(&body::without_idempotency_field(&body));
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

/// Checks what every body must be, whatever the route: valid JSON, an object (an array, a
/// string, a number, `true` or `null` is a value of the wrong type, before serde could read an
/// array as a struct's fields in order), and no object in it naming a key twice (serde would
/// keep the last silently in a map, and the raw body and the parsed one would disagree).
fn check_document(body: &[u8]) -> Result<(), ApiError> {
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
    match serde_path_to_error::deserialize::<_, unique::Unique>(&mut de) {
        Ok(_) => de
            .end()
            .map_err(|_| ApiError::new(ErrorCode::InvalidJson, NOT_JSON)),
        Err(e) if e.inner().is_data() => {
            let path = e.path().to_string();
            Err(match safe_param(&path) {
                Some(param) => ApiError::new(ErrorCode::InvalidBody, DUPLICATE).with_param(param),
                None => ApiError::new(ErrorCode::InvalidBody, DUPLICATE_UNNAMED),
            })
        }
        Err(_) => Err(ApiError::new(ErrorCode::InvalidJson, NOT_JSON)),
    }
}

/// Deserialises a body (checked by [`check_document`] first), naming the field at fault on
/// failure.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    check_document(body)?;
    deserialize(body)
}

fn deserialize<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
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

/// A walk over any JSON document that fails on the first object naming a key twice, with the
/// path to that key (`serde_path_to_error` records it as the walk descends into the key's
/// value).
mod unique {
    use std::collections::HashSet;
    use std::fmt;

    use serde::de::{
        self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
    };

    use super::DUPLICATE;

    pub struct Unique;

    impl<'de> Deserialize<'de> for Unique {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Walk)
        }
    }

    /// The value of a key already seen: refused, so that the error's path ends at the key.
    struct Repeated;

    impl<'de> DeserializeSeed<'de> for Repeated {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
            Err(de::Error::custom(DUPLICATE))
        }
    }

    struct Walk;

    impl<'de> Visitor<'de> for Walk {
        type Value = Unique;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }

        fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
            Ok(Unique)
        }

        fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
            Ok(Unique)
        }

        fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
            Ok(Unique)
        }

        fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
            Ok(Unique)
        }

        fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
            Ok(Unique)
        }

        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
            while seq.next_element::<Unique>()?.is_some() {}
            Ok(Unique)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if seen.contains(&key) {
                    map.next_value_seed(Repeated)?;
                }
                map.next_value::<Unique>()?;
                seen.insert(key);
            }
            Ok(Unique)
        }
    }
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

/// The answer to an object naming a key twice; `param` is the key's path.
const DUPLICATE: &str = "duplicate field: a field may appear only once in an object";

/// The same, when the key is not one that may be echoed.
const DUPLICATE_UNNAMED: &str = "duplicate field: a field appears twice in an object";

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
    for lead in [
        "invalid type: ",
        "invalid value: ",
        "invalid length ",
        "unknown variant ",
    ] {
        if let Some(rest) = text.strip_prefix(lead) {
            let expected = rest.split_once(", expected ").map_or("", |(_, e)| e);
            let what = lead.trim_end_matches(": ").trim_end();
            return if expected.is_empty() {
                what.to_owned()
            } else {
                format!("{what}: expected {}", in_json_terms(expected))
            };
        }
    }
    text.to_owned()
}

/// What serde says it expected, in JSON's terms rather than the server's Rust types
/// (`u32`, `a sequence`, `struct RegisterBody`): a client knows the former only.
fn in_json_terms(expected: &str) -> String {
    let plain = match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        "a sequence" | "a tuple" => "an array",
        "a map" => "a JSON object",
        "unit" => "null",
        "a borrowed string" | "a character" | "a string" => "a string",
        "a boolean" => "a boolean",
        "variant identifier" | "field identifier" => "a string naming one of the allowed values",
        other if other.starts_with("struct ") || other.starts_with("a map") => "a JSON object",
        other if other.starts_with("tuple") || other.starts_with("an array") => "an array",
        other if other.starts_with("enum ") => "one of the allowed values",
        // Lists of allowed names (`one of `read`, `write``) are the client's vocabulary.
        other if other.starts_with("one of ") => return other.to_owned(),
        _ => "a value of the documented type",
    };
    plain.to_owned()
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

    #[test]
    fn a_key_twice_in_any_object_is_refused_with_its_path() {
        for (body, param) in [
            (&br#"{"name":"x","name":"y","count":1}"#[..], Some("name")),
            (br#"{"name":"x","count":1,"count":1}"#, Some("count")),
            (br#"{"a":{"b":1,"b":2}}"#, Some("a.b")),
            (br#"{"a":[{"b":1},{"c":1,"c":1}]}"#, Some("a[1].c")),
            (br#"{"sk-canary 1":1,"sk-canary 1":2}"#, None),
        ] {
            let error = parse::<Body>(body).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidBody);
            assert_eq!(error.param.as_deref(), param);
            assert!(!error.message.contains("canary"), "{}", error.message);
        }
        // The same key in two objects, or as a value, is no duplicate.
        let fine = parse::<serde_json::Value>(br#"{"a":{"b":1},"c":{"b":"b"},"b":[{"b":1}]}"#);
        assert!(fine.is_ok());
    }

    #[test]
    fn messages_speak_json_not_rust() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Typed {
            n: Option<u32>,
            i: Option<i64>,
            list: Option<Vec<String>>,
            map: Option<std::collections::BTreeMap<String, String>>,
            inner: Option<Body>,
        }
        for (body, expected) in [
            (
                &br#"{"n":"x"}"#[..],
                "invalid type: expected a non-negative integer",
            ),
            (
                br#"{"n":-1}"#,
                "invalid value: expected a non-negative integer",
            ),
            (
                br#"{"n":1.5}"#,
                "invalid type: expected a non-negative integer",
            ),
            (br#"{"i":"x"}"#, "invalid type: expected an integer"),
            (br#"{"list":"x"}"#, "invalid type: expected an array"),
            (br#"{"map":[]}"#, "invalid type: expected a JSON object"),
            (br#"{"inner":[]}"#, "invalid length: expected a JSON object"),
            (br#"{"inner":7}"#, "invalid type: expected a JSON object"),
            (br#"{"list":[1]}"#, "invalid type: expected a string"),
        ] {
            let error = parse::<Typed>(body).unwrap_err();
            assert_eq!(error.message, expected, "{}", String::from_utf8_lossy(body));
        }
    }
}
