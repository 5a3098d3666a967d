//! What a request body must be before any route reads it: a JSON object (an array never stands
//! in for one), every key of every object at most once (the `idempotency_key` field too), UTF-8
//! and nothing else; and what the answer to a body of the wrong shape says: never the name of
//! a type inside the server.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, assert_error, openai, send, send_raw, spawn_app};

const KEY: &str = "sk-test-0123456789abcdefWXYZ";

async fn raw(app: &TestApp, path: &str, token: &str, body: &str) -> Response {
    send_raw(
        app,
        Method::POST,
        path,
        Some(token),
        Some("application/json"),
        body.to_owned(),
    )
    .await
}

async fn key_names(app: &TestApp, token: &str) -> Vec<String> {
    let response = app.get("/v1/account/keys", token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn an_array_never_creates_an_account_or_mints_a_key() {
    let app = spawn_app().await;
    let response = raw(&app, "/v1/accounts", ADMIN_TOKEN, r#"["x@example.com"]"#).await;
    let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
    assert_eq!(error["message"], "invalid type: expected a JSON object");
    assert!(error.get("param").is_none(), "{error}");
    assert_eq!(app.store.last_position().unwrap(), 0, "an account was made");

    let ada = app.tenant("ada@example.com").await;
    let before = app.store.last_position().unwrap();
    for body in [
        r#"["name",["admin"]]"#,
        r#"["name",["read"]]"#,
        r#"[{"name":"k","scopes":["admin"]}]"#,
        r#""name""#,
        "7",
        "null",
        "true",
    ] {
        let response = raw(&app, "/v1/account/keys", &ada.token, body).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
        assert_eq!(
            error["message"], "invalid type: expected a JSON object",
            "{body}"
        );
    }
    let register = json!(["openai", "prod", KEY]).to_string();
    let response = raw(&app, "/v1/byok/register", &ada.token, &register).await;
    assert_error(response, 422, "invalid_request_error", "invalid_body").await;
    assert_eq!(
        app.store.last_position().unwrap(),
        before,
        "something was written"
    );
    assert_eq!(key_names(&app, &ada.token).await, ["default"]);
}

/// Words that name a type inside the server rather than a JSON value: Rust's integer and
/// collection types and the struct and enum names serde would put in its messages.
fn names_a_rust_type(message: &str) -> Option<&'static str> {
    const WORDS: [&str; 22] = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "isize", "f32",
        "f64", "String", "Vec", "Option", "BTreeMap", "HashMap", "struct", "enum", "tuple",
        "sequence",
    ];
    let words: Vec<&str> = message
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .collect();
    if let Some(word) = WORDS.iter().find(|w| words.contains(w)) {
        return Some(word);
    }
    // Type names: `RegisterBody`, `CreateKeyRequest`, `ListQuery`, `CredentialStateView`.
    words.iter().find_map(|w| {
        ["Body", "Request", "Query", "Params", "View", "Patch"]
            .iter()
            .find(|suffix| w.len() > suffix.len() && w.ends_with(*suffix))
            .copied()
    })
}

#[tokio::test]
async fn error_messages_never_name_a_type_of_the_server() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = crate::helpers::register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let update = format!("/v1/byok/update/{id}");
    let disable = format!("/v1/byok/disable/{id}");
    let register = |extra: Value| {
        let mut body = openai("other", KEY);
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let bodies: Vec<(Method, &str, &str, Value)> = vec![
        (
            Method::POST,
            "/v1/accounts",
            ADMIN_TOKEN,
            json!({"email": 5}),
        ),
        (
            Method::POST,
            "/v1/accounts",
            ADMIN_TOKEN,
            json!({"email": ["a"]}),
        ),
        (Method::POST, "/v1/accounts", ADMIN_TOKEN, json!({})),
        (
            Method::POST,
            "/v1/accounts",
            ADMIN_TOKEN,
            json!({"email": "a@b.co", "idempotency_key": 5}),
        ),
        (
            Method::POST,
            "/v1/account/keys",
            &ada.token,
            json!({"name": {}, "scopes": ["read"]}),
        ),
        (
            Method::POST,
            "/v1/account/keys",
            &ada.token,
            json!({"name": "k", "scopes": "read"}),
        ),
        (
            Method::POST,
            "/v1/account/keys",
            &ada.token,
            json!({"name": "k", "scopes": [{"a": 1}]}),
        ),
        (
            Method::POST,
            "/v1/account/keys",
            &ada.token,
            json!({"name": "k", "scopes": ["root"]}),
        ),
        (
            Method::POST,
            "/v1/byok/register",
            &ada.token,
            register(json!({"weight": "heavy"})),
        ),
        (
            Method::POST,
            "/v1/byok/register",
            &ada.token,
            register(json!({"weight": -1})),
        ),
        (
            Method::POST,
            "/v1/byok/register",
            &ada.token,
            register(json!({"weight": 1.5})),
        ),
        (
            Method::POST,
            "/v1/byok/register",
            &ada.token,
            register(json!({"weight": 99_999_999_999_u64})),
        ),
        (
            Method::POST,
            "/v1/byok/register",
            &ada.token,
            register(json!({"models": "gpt-4o"})),
        ),
        (
            Method::POST,
            "/v1/byok/register",
            &ada.token,
            register(json!({"models": [1]})),
        ),
        (
            Method::POST,
            "/v1/byok/register",
            &ada.token,
            register(json!({"credentials": ["x"]})),
        ),
        (
            Method::POST,
            "/v1/byok/register",
            &ada.token,
            register(json!({"credentials": {"api_key": 1}})),
        ),
        (
            Method::POST,
            "/v1/byok/register",
            &ada.token,
            register(json!({"label": true})),
        ),
        (
            Method::POST,
            "/v1/byok/register",
            &ada.token,
            json!({"alias": "a", "api_key": KEY}),
        ),
        (Method::PATCH, &update, &ada.token, json!({"weight": "x"})),
        (Method::PATCH, &update, &ada.token, json!({"weight": -5})),
        (Method::PATCH, &update, &ada.token, json!({"alias": 7})),
        (Method::PATCH, &update, &ada.token, json!({"label": []})),
        (
            Method::PATCH,
            &update,
            &ada.token,
            json!({"models": {"a": 1}}),
        ),
        (
            Method::PATCH,
            &update,
            &ada.token,
            json!({"credentials": 3}),
        ),
        (Method::POST, &disable, &ada.token, json!({"colour": 1})),
    ];
    for (method, path, token, body) in bodies {
        let response = send(&app, method, path, Some(token), &[], Some(&body)).await;
        let status = response.status().as_u16();
        let error = json!(response.json::<Value>().await.unwrap()["error"]);
        assert!(
            (400..500).contains(&status),
            "{path} {body}: {status} {error}"
        );
        let message = error["message"].as_str().unwrap();
        assert_eq!(
            names_a_rust_type(message),
            None,
            "{path} {body}: the message {message:?} names a type"
        );
    }
    for query in [
        "/v1/byok/list?limit=x",
        "/v1/byok/list?limit=-1",
        "/v1/byok/list?state=gone",
        "/v1/byok/list?bogus=1",
        "/v1/events?limit=1.5",
        "/v1/events?wait=soon",
    ] {
        let response = app.get(query, &ada.token).await;
        let error = assert_error(response, 400, "invalid_request_error", "invalid_query").await;
        let message = error["message"].as_str().unwrap();
        assert_eq!(names_a_rust_type(message), None, "{query}: {message:?}");
    }
}

#[tokio::test]
async fn a_key_given_twice_in_a_body_is_refused_and_named() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let before = app.store.last_position().unwrap();
    let cases = [
        (
            "/v1/accounts",
            ADMIN_TOKEN,
            r#"{"email": "b@example.com", "email": "c@example.com"}"#,
            "email",
        ),
        (
            "/v1/accounts",
            ADMIN_TOKEN,
            r#"{"email": "b@example.com", "idempotency_key": "one", "idempotency_key": "two"}"#,
            "idempotency_key",
        ),
        (
            "/v1/account/keys",
            ada.token.as_str(),
            r#"{"name": "k", "scopes": ["read"], "idempotency_key": "a", "idempotency_key": "a"}"#,
            "idempotency_key",
        ),
        (
            "/v1/account/keys",
            ada.token.as_str(),
            r#"{"name": "k", "name": "k", "scopes": ["read"]}"#,
            "name",
        ),
        (
            "/v1/byok/register",
            ada.token.as_str(),
            r#"{"provider": "openai", "alias": "a",
                "credentials": {"api_key": "sk-test-0123456789abcdefWXYZ", "api_key": "sk-test-other-0123456789"}}"#,
            "credentials.api_key",
        ),
    ];
    for (path, token, body, param) in cases {
        let response = raw(&app, path, token, body).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
        assert_eq!(error["param"], param, "{body}");
        assert!(
            !error["message"].as_str().unwrap().contains("sk-test"),
            "{error}"
        );
    }
    assert_eq!(
        app.store.last_position().unwrap(),
        before,
        "something was written"
    );
    // The same key in two objects is no duplicate.
    let nested = r#"{"provider": "openai", "alias": "b", "api_key": "sk-test-0123456789abcdefWXYZ",
        "credentials": {"organization": "org-1"}, "label": "x"}"#;
    let response = raw(&app, "/v1/byok/register", &ada.token, nested).await;
    assert_eq!(response.status(), 201);
    // A route without a body of its own reads the key field under the same rule.
    let id: Value = response.json().await.unwrap();
    let disable = format!("/v1/byok/disable/{}", id["byok_id"].as_str().unwrap());
    let twice = r#"{"idempotency_key": "a", "idempotency_key": "b"}"#;
    let error = assert_error(
        raw(&app, &disable, &ada.token, twice).await,
        422,
        "invalid_request_error",
        "invalid_body",
    )
    .await;
    assert_eq!(error["param"], "idempotency_key");
    let get = format!("/v1/byok/get/{}", id["byok_id"].as_str().unwrap());
    let current = app.get(&get, &ada.token).await;
    assert_eq!(
        crate::helpers::etag(&current),
        "\"1\"",
        "the credential changed"
    );
}

#[tokio::test]
async fn a_body_in_another_charset_than_utf8_is_a_415() {
    let app = spawn_app().await;
    let body = r#"{"email": "ada@example.com"}"#;
    let utf16: Vec<u8> = body.encode_utf16().flat_map(u16::to_le_bytes).collect();
    for (content_type, bytes) in [
        ("application/json; charset=utf-16", utf16.clone()),
        ("application/json; charset=UTF-16LE", utf16),
        ("application/json; charset=utf-16", body.as_bytes().to_vec()),
        (
            "application/json; charset=iso-8859-1",
            body.as_bytes().to_vec(),
        ),
        (
            "application/json;charset=\"latin1\"",
            body.as_bytes().to_vec(),
        ),
        ("application/json; charset=", body.as_bytes().to_vec()),
    ] {
        let response = send_raw(
            &app,
            Method::POST,
            "/v1/accounts",
            Some(ADMIN_TOKEN),
            Some(content_type),
            bytes,
        )
        .await;
        assert_error(
            response,
            415,
            "invalid_request_error",
            "unsupported_media_type",
        )
        .await;
    }
    assert_eq!(app.store.last_position().unwrap(), 0);
    for (i, content_type) in [
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        "application/json;charset=\"utf-8\"",
        "application/json",
    ]
    .into_iter()
    .enumerate()
    {
        let body = format!(r#"{{"email": "user{i}@example.com"}}"#);
        let response = send_raw(
            &app,
            Method::POST,
            "/v1/accounts",
            Some(ADMIN_TOKEN),
            Some(content_type),
            body,
        )
        .await;
        assert_eq!(response.status(), 201, "{content_type}");
    }
}
