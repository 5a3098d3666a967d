//! The error envelope everywhere: malformed bodies, wrong types, unknown routes and methods,
//! oversized bodies, content types, authorization schemes, and request ids.

use reqwest::header::AUTHORIZATION;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, assert_error, send_raw, spawn_app};

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
        let response = send_raw(
            &app,
            Method::POST,
            "/v1/accounts",
            Some(ADMIN_TOKEN),
            Some("application/json"),
            body,
        )
        .await;
        let error = assert_error(response, 400, "invalid_request_error", "invalid_json").await;
        assert!(error.get("param").is_none(), "{body:?}: {error}");
    }
}

#[tokio::test]
async fn wrong_types_are_a_422_naming_the_field() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    let cases = [
        ("/v1/accounts", ADMIN_TOKEN, json!({"email": 1}), "email"),
        (
            "/v1/accounts",
            ADMIN_TOKEN,
            json!({"email": {"a": 1}}),
            "email",
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": ["x"], "scopes": ["read"]}),
            "name",
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": "x", "scopes": [1]}),
            "scopes[0]",
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": "x", "scopes": ["read", null]}),
            "scopes[1]",
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": "x", "scopes": [true]}),
            "scopes[0]",
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": "x", "scopes": [["read"]]}),
            "scopes[0]",
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": "x", "scopes": [{}]}),
            "scopes[0]",
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": "x", "scopes": {"read": true}}),
            "scopes",
        ),
    ];
    for (path, token, body, param) in cases {
        let response = app.post(path, Some(token), &body).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
        assert_eq!(error["param"], param, "{body}");
    }
    // A body that is not an object at all.
    for body in [json!([1, 2]), json!("a@b.co"), json!(null), json!(3)] {
        let response = app.post("/v1/accounts", Some(ADMIN_TOKEN), &body).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
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
    let response = app
        .post(
            "/v1/accounts",
            Some(ADMIN_TOKEN),
            &json!({"email": "eve@example.com", "role": "admin"}),
        )
        .await;
    let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
    assert_eq!(error["param"], "role");
    let response = app
        .post(
            "/v1/account/keys",
            Some(&token),
            &json!({"name": "x", "scopes": ["read"], "expires": 3}),
        )
        .await;
    let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
    assert_eq!(error["param"], "expires");
    // The rejected request created nothing.
    app.create_account("eve@example.com").await;
}

#[tokio::test]
async fn missing_fields_are_a_422() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    let response = app
        .post("/v1/accounts", Some(ADMIN_TOKEN), &json!({}))
        .await;
    let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
    assert!(error["message"].as_str().unwrap().contains("email"));
    let response = app
        .post("/v1/account/keys", Some(&token), &json!({"name": "x"}))
        .await;
    let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
    assert!(error["message"].as_str().unwrap().contains("scopes"));
}

#[tokio::test]
async fn a_body_over_64_kib_is_a_413_and_the_connection_still_answers() {
    let app = spawn_app().await;
    for size in [64 * 1024 + 1, 100 * 1024, 1024 * 1024] {
        let filler = "a".repeat(size);
        let body = format!("{{\"email\": \"{filler}@example.com\"}}");
        assert!(body.len() > 64 * 1024);
        let response = send_raw(
            &app,
            Method::POST,
            "/v1/accounts",
            Some(ADMIN_TOKEN),
            Some("application/json"),
            body,
        )
        .await;
        assert_error(response, 413, "invalid_request_error", "body_too_large").await;
        // The same client (and its kept-alive connection) goes on working.
        let ok = app
            .request(Method::GET, "/healthz", None)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "after a {size}-byte body");
    }
    // A body just under the limit is read and judged on its content.
    let filler = "a".repeat(60 * 1024);
    let response = app
        .post(
            "/v1/accounts",
            Some(ADMIN_TOKEN),
            &json!({ "email": format!("{filler}@example.com") }),
        )
        .await;
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
        let response = send_raw(
            &app,
            Method::POST,
            "/v1/accounts",
            Some(ADMIN_TOKEN),
            content_type,
            body,
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
    // Nothing was created, and a JSON content type with parameters is accepted.
    let response = send_raw(
        &app,
        Method::POST,
        "/v1/accounts",
        Some(ADMIN_TOKEN),
        Some("application/json; charset=utf-8"),
        body,
    )
    .await;
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
        let response = app
            .request(method, path, Some(ADMIN_TOKEN))
            .send()
            .await
            .unwrap();
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
        let response = app
            .request(method.clone(), path, Some(token))
            .send()
            .await
            .unwrap();
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
            .request(Method::GET, "/v1/account", None)
            .header(AUTHORIZATION, &value)
            .send()
            .await
            .unwrap();
        assert_error(response, 401, "authentication_error", "invalid_token").await;
    }
    assert_eq!(app.get("/v1/account", &token).await.status(), 200);
}

#[tokio::test]
async fn authentication_is_checked_before_the_body() {
    let app = spawn_app().await;
    let response = send_raw(
        &app,
        Method::POST,
        "/v1/account/keys",
        None,
        Some("application/json"),
        "{",
    )
    .await;
    assert_error(response, 401, "authentication_error", "missing_token").await;
    let response = send_raw(
        &app,
        Method::POST,
        "/v1/accounts",
        None,
        Some("text/plain"),
        "x",
    )
    .await;
    assert_error(response, 401, "authentication_error", "missing_token").await;
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/v1/accounts",
            Some(ADMIN_TOKEN),
            &json!({"email": "ada@example.com"}),
        )
        .await;
    let created_id = request_id(&created);
    let body: Value = created.json().await.unwrap();
    let token = body["api_key"].as_str().unwrap();
    let key_path = format!("/v1/account/keys/{}", body["key"]["id"].as_str().unwrap());

    let mut ids = vec![created_id];
    let mint = app
        .post(
            "/v1/account/keys",
            Some(token),
            &json!({"name": "x", "scopes": ["read"]}),
        )
        .await;
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
        .request(Method::GET, "/healthz", None)
        .header("x-request-id", "trace-0042_abc")
        .send()
        .await
        .unwrap();
    assert_eq!(request_id(&ok), "trace-0042_abc");

    // On errors too, in the body as well as the header.
    let response = app
        .request(Method::GET, "/v1/account", None)
        .header("x-request-id", "client-id-7")
        .send()
        .await
        .unwrap();
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
        let response = app
            .request(Method::GET, "/v1/nope", None)
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
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
        ("/v1/accounts", ADMIN_TOKEN, json!({"email": {"x": canary}})),
        ("/v1/accounts", ADMIN_TOKEN, json!({"email": [canary]})),
        ("/v1/accounts", ADMIN_TOKEN, json!({"email": canary})),
        ("/v1/accounts", ADMIN_TOKEN, json!(canary)),
        ("/v1/accounts", ADMIN_TOKEN, json!([canary])),
        (
            "/v1/accounts",
            ADMIN_TOKEN,
            json!({"email": format!("{canary} @example.com")}),
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": {"secret": canary}, "scopes": ["read"]}),
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": "x", "scopes": [canary]}),
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": "x", "scopes": canary}),
        ),
        (
            "/v1/account/keys",
            token.as_str(),
            json!({"name": format!("{canary}{}", "x".repeat(200)), "scopes": ["read"]}),
        ),
    ];
    for (path, token, body) in cases {
        let response = app.post(path, Some(token), &body).await;
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{status} for {body}");
        let text = response.text().await.unwrap();
        assert!(!text.contains("canary"), "{body} was echoed: {text}");
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert!(parsed["error"]["message"].is_string());
    }
    // Numbers and a secret in a syntax error are not echoed either.
    for body in [
        r#"{"email": 98765432123}"#.to_owned(),
        format!(r#"{{"email": "{canary}"#),
        format!(r#"{{"email": {canary}}}"#),
    ] {
        let response = send_raw(
            &app,
            Method::POST,
            "/v1/accounts",
            Some(ADMIN_TOKEN),
            Some("application/json"),
            body.clone(),
        )
        .await;
        let text = response.text().await.unwrap();
        assert!(!text.contains("canary"), "{body} was echoed: {text}");
        assert!(!text.contains("98765432123"), "{body} was echoed: {text}");
    }
}

#[tokio::test]
async fn a_presented_token_is_never_echoed() {
    let app = spawn_app().await;
    let secret = "kl_canary_0123456789abcdef0123456789abcdef01234567";
    let response = app.get("/v1/account", secret).await;
    let text = response.text().await.unwrap();
    assert!(!text.contains("canary"), "{text}");
    let response = app
        .request(Method::GET, "/v1/account", None)
        .header(AUTHORIZATION, format!("Basic {secret}"))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains("canary"), "{text}");
}
