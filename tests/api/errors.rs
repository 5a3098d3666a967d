//! The error envelope everywhere: malformed bodies, wrong types, unknown routes and methods,
//! oversized bodies, content types, authorization schemes, and request ids.

use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, assert_error, assert_not_json, send_raw, spawn_app};

/// Sends `body` as-is to `POST /v1/accounts` with the operator's token and `content_type`.
async fn post_account_text(
    app: &TestApp,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let token = Some(ADMIN_TOKEN);
    send_raw(app, Method::POST, "/v1/accounts", token, content_type, body).await
}

/// Posts `body` to `path`; asserts a 422 `invalid_body` and answers the error.
async fn invalid_body(app: &TestApp, path: &str, token: &str, body: &Value) -> Value {
    let response = app.post(path, Some(token), body).await;
    assert_error(response, 422, "invalid_request_error", "invalid_body").await
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    for body in [
        "{",
        "",
        "{\"email\": }",
        "{\"email\": \"a@b.co\"",
        "{\"email\": \"a@b.co\"} trailing",
        "{'email': 'a@b.co'}",
        "not json at all",
    ] {
        let response = post_account_text(&app, Some("application/json"), body).await;
        let error = assert_error(response, 400, "invalid_request_error", "invalid_json").await;
        assert!(error.get("param").is_none(), "{body:?}: {error}");
    }
}

#[tokio::test]
async fn wrong_types_are_a_422_naming_the_field() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    let cases = [
        (
            "/v1/accounts",
            ADMIN_TOKEN,
            vec![
                (json!({"email": 1}), "email"),
                (json!({"email": {"a": 1}}), "email"),
            ],
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            vec![
                (json!({"name": ["x"], "scopes": ["read"]}), "name"),
                (json!({"name": "x", "scopes": [1]}), "scopes[0]"),
                (json!({"name": "x", "scopes": ["read", null]}), "scopes[1]"),
                (json!({"name": "x", "scopes": [true]}), "scopes[0]"),
                (json!({"name": "x", "scopes": [["read"]]}), "scopes[0]"),
                (json!({"name": "x", "scopes": [{}]}), "scopes[0]"),
                (json!({"name": "x", "scopes": {"read": true}}), "scopes"),
            ],
        ),
    ];
    for (path, token, bodies) in cases {
        for (body, param) in bodies {
            let error = invalid_body(&app, path, token, &body).await;
            assert_eq!(error["param"], param, "{body}");
        }
    }
    // A body that is not an object at all.
    for body in [json!([1, 2]), json!("a@b.co"), json!(null), json!(3)] {
        let error = invalid_body(&app, "/v1/accounts", ADMIN_TOKEN, &body).await;
        assert!(
            !error["message"].as_str().unwrap().contains("Request"),
            "an internal type name leaks: {error}"
        );
    }
}

#[tokio::test]
async fn unknown_fields_are_a_422_naming_the_field() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    let account = json!({"email": "eve@example.com", "role": "admin"});
    let key = json!({"name": "x", "scopes": ["read"], "expires": 3});
    for (path, token, body, param) in [
        ("/v1/accounts", ADMIN_TOKEN, &account, "role"),
        ("/v1/account/keys", token.as_str(), &key, "expires"),
    ] {
        let error = invalid_body(&app, path, token, body).await;
        assert_eq!(error["param"], param);
    }
    // The rejected request created nothing.
    app.create_account("eve@example.com").await;
}

#[tokio::test]
async fn missing_fields_are_a_422() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    let key = json!({"name": "x"});
    for (path, token, body, missing) in [
        ("/v1/accounts", ADMIN_TOKEN, &json!({}), "email"),
        ("/v1/account/keys", token.as_str(), &key, "scopes"),
    ] {
        let error = invalid_body(&app, path, token, body).await;
        assert!(error["message"].as_str().unwrap().contains(missing));
    }
}

#[tokio::test]
async fn a_body_over_64_kib_is_a_413_and_the_connection_still_answers() {
    let app = spawn_app().await;
    for size in [64 * 1024 + 1, 100 * 1024, 1024 * 1024] {
        let filler = "a".repeat(size);
        let body = format!("{{\"email\": \"{filler}@example.com\"}}");
        assert!(body.len() > 64 * 1024);
        let response = post_account_text(&app, Some("application/json"), body).await;
        assert_error(response, 413, "invalid_request_error", "body_too_large").await;
        // The same client (and its kept-alive connection) goes on working.
        let ok = app.fetch(Method::GET, "/healthz", None).await;
        assert_eq!(ok.status(), 200, "after a {size}-byte body");
    }
    // A body just under the limit is read and judged on its content.
    let filler = "a".repeat(60 * 1024);
    let email = format!("{filler}@example.com");
    let response = app.create_account_response(Some(ADMIN_TOKEN), email).await;
    let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
    assert_eq!(error["param"], "email");
    app.create_account("ada@example.com").await;
}

#[tokio::test]
async fn a_body_without_json_content_type_is_a_415() {
    let app = spawn_app().await;
    let body = r#"{"email": "ada@example.com"}"#;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonx"),
    ] {
        assert_not_json(post_account_text(&app, content_type, body).await).await;
    }
    // Nothing was created, and a JSON content type with parameters is accepted.
    let json = Some("application/json; charset=utf-8");
    let response = post_account_text(&app, json, body).await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn an_unknown_route_is_a_404() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/v1/nope"),
        (Method::POST, "/v1/accounts/extra"),
        (Method::GET, "/"),
        (Method::DELETE, "/v1/account/keys/a/b"),
    ] {
        let response = app.fetch(method, path, Some(ADMIN_TOKEN)).await;
        assert_error(response, 404, "not_found_error", "route_not_found").await;
    }
}

#[tokio::test]
async fn a_wrong_method_on_a_known_route_is_a_405() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    for (method, path, token) in [
        (Method::PUT, "/v1/accounts", ADMIN_TOKEN),
        (Method::GET, "/v1/accounts", ADMIN_TOKEN),
        (Method::DELETE, "/v1/account", token.as_str()),
        (Method::PATCH, "/v1/account/keys", token.as_str()),
        (Method::GET, "/v1/account/keys/key_x", token.as_str()),
        (Method::POST, "/healthz", ADMIN_TOKEN),
    ] {
        let response = app.fetch(method.clone(), path, Some(token)).await;
        let error =
            assert_error(response, 405, "invalid_request_error", "method_not_allowed").await;
        assert!(error.get("param").is_none(), "{method} {path}");
    }
}

#[tokio::test]
async fn only_bearer_authorization_is_accepted() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    for value in [
        format!("Basic {token}"),
        "Basic YWRhOnNlY3JldA==".to_owned(),
        token.clone(),
        "Bearer".to_owned(),
        "Bearer    ".to_owned(),
        format!("Token {token}"),
    ] {
        let response = app
            .get_with("/v1/account", None, ("Authorization", &value))
            .await;
        assert_error(response, 401, "authentication_error", "invalid_token").await;
    }
    assert_eq!(app.get("/v1/account", &token).await.status(), 200);
}

#[tokio::test]
async fn authentication_is_checked_before_the_body() {
    let app = spawn_app().await;
    for (path, content_type, body) in [
        ("/v1/account/keys", "application/json", "{"),
        ("/v1/accounts", "text/plain", "x"),
    ] {
        let content_type = Some(content_type);
        let response = send_raw(&app, Method::POST, path, None, content_type, body).await;
        assert_error(response, 401, "authentication_error", "missing_token").await;
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let created = app
        .create_account_response(Some(ADMIN_TOKEN), "ada@example.com")
        .await;
    let created_id = request_id(&created);
    let body: Value = created.json().await.unwrap();
    let token = body["api_key"].as_str().unwrap();
    let key_path = format!("/v1/account/keys/{}", body["key"]["id"].as_str().unwrap());

    let mut ids = vec![created_id];
    let key = json!({"name": "x", "scopes": ["read"]});
    let mint = app.post("/v1/account/keys", Some(token), &key).await;
    assert_eq!(mint.status(), 201);
    ids.push(request_id(&mint));
    for path in [
        "/v1/account",
        "/v1/account/keys",
        "/healthz",
        "/readyz",
        "/openapi.json",
    ] {
        let response = app.get(path, token).await;
        assert_eq!(response.status(), 200, "{path}");
        ids.push(request_id(&response));
    }
    let revoke = app.delete(&key_path, token).await;
    assert_eq!(revoke.status(), 200);
    ids.push(request_id(&revoke));

    // Generated ids are distinct per request.
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("req_")), "{ids:?}");
}

fn request_id(response: &Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-ID on {}", response.url()))
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_well_formed_incoming_request_id_is_echoed() {
    let app = spawn_app().await;
    let ok = app
        .get_with("/healthz", None, ("x-request-id", "trace-0042_abc"))
        .await;
    assert_eq!(request_id(&ok), "trace-0042_abc");

    // On errors too, in the body as well as the header.
    let response = app
        .get_with("/v1/account", None, ("x-request-id", "client-id-7"))
        .await;
    assert_eq!(request_id(&response), "client-id-7");
    let error = assert_error(response, 401, "authentication_error", "missing_token").await;
    assert_eq!(error["request_id"], "client-id-7");

    // A malformed one is replaced, not echoed.
    let too_long = "a".repeat(65);
    for bad in [
        "has space",
        "semi;colon",
        "a/b",
        too_long.as_str(),
        "<script>",
    ] {
        let response = app.get_with("/v1/nope", None, ("x-request-id", bad)).await;
        let id = request_id(&response);
        assert_ne!(id, bad);
        assert!(id.starts_with("req_"), "{id}");
        assert_error(response, 404, "not_found_error", "route_not_found").await;
    }
}

#[tokio::test]
async fn error_messages_never_echo_submitted_values() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    let canary = "sk-canary-123";
    let cases = [
        (
            "/v1/accounts",
            ADMIN_TOKEN,
            vec![
                json!({"email": {"x": canary}}),
                json!({"email": [canary]}),
                json!({"email": canary}),
                json!(canary),
                json!([canary]),
                json!({"email": format!("{canary} @example.com")}),
            ],
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            vec![
                json!({"name": {"secret": canary}, "scopes": ["read"]}),
                json!({"name": "x", "scopes": [canary]}),
                json!({"name": "x", "scopes": canary}),
                json!({"name": format!("{canary}{}", "x".repeat(200)), "scopes": ["read"]}),
            ],
        ),
    ];
    for (path, token, bodies) in cases {
        for body in bodies {
            let response = app.post(path, Some(token), &body).await;
            let status = response.status().as_u16();
            assert!((400..500).contains(&status), "{status} for {body}");
            let text = response.text().await.unwrap();
            assert!(!text.contains("canary"), "{body} was echoed: {text}");
            let parsed: Value = serde_json::from_str(&text).unwrap();
            assert!(parsed["error"]["message"].is_string());
        }
    }
    // Numbers and a secret in a syntax error are not echoed either.
    for body in [
        r#"{"email": 98765432123}"#.to_owned(),
        format!(r#"{{"email": "{canary}"#),
        format!(r#"{{"email": {canary}}}"#),
    ] {
        let response = post_account_text(&app, Some("application/json"), body.clone()).await;
        let text = response.text().await.unwrap();
        assert!(!text.contains("canary"), "{body} was echoed: {text}");
        assert!(!text.contains("98765432123"), "{body} was echoed: {text}");
    }
}

#[tokio::test]
async fn a_presented_token_is_never_echoed() {
    let app = spawn_app().await;
    let secret = "kl_canary_0123456789abcdef0123456789abcdef01234567";
    let basic = format!("Basic {secret}");
    for response in [
        app.get("/v1/account", secret).await,
        app.get_with("/v1/account", None, ("Authorization", &basic))
            .await,
    ] {
        let text = response.text().await.unwrap();
        assert!(!text.contains("canary"), "{text}");
    }
}
