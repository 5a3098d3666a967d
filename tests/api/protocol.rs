//! HTTP itself, as the server speaks it: one `Authorization` header with a case-insensitive
//! `Bearer` scheme; 404 and 405 (with `Allow`) answered with the error envelope and a request id;
//! `HEAD` on every `GET` route; missing files under `/docs/`; and requests the HTTP parser refuses,
//! which must not reach the error log.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use keyledger::crypto::MasterKey;
use reqwest::header::AUTHORIZATION;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, Binary, TestApp, assert_error, header, openai, register_id, serve_command,
    spawn_app,
};

async fn get_with_authorization(app: &TestApp, path: &str, values: &[&str]) -> Response {
    let mut request = app.request(Method::GET, path, None);
    for value in values {
        // `header` appends: each value is its own header line.
        request = request.header(AUTHORIZATION, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn several_authorization_headers_are_refused() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    let bearer = format!("Bearer {token}");
    let other = app.account_token("bob@example.com").await;
    let other_bearer = format!("Bearer {other}");
    for values in [
        vec![bearer.as_str(), bearer.as_str()],
        vec![bearer.as_str(), "Basic YWRhOnNlY3JldA=="],
        vec!["Basic YWRhOnNlY3JldA==", bearer.as_str()],
        vec![bearer.as_str(), other_bearer.as_str()],
        vec![bearer.as_str(), bearer.as_str(), bearer.as_str()],
    ] {
        let response = get_with_authorization(&app, "/v1/account", &values).await;
        let error = assert_error(response, 401, "authentication_error", "invalid_token").await;
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("one Authorization header"),
            "{error}"
        );
    }
    // The operator's token twice does not create an account either.
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let response = app
        .request(Method::POST, "/v1/accounts", None)
        .header(AUTHORIZATION, &admin)
        .header(AUTHORIZATION, &admin)
        .json(&json!({"email": "eve@example.com"}))
        .send()
        .await
        .unwrap();
    assert_error(response, 401, "authentication_error", "invalid_token").await;
    app.create_account("eve@example.com").await;
    // One header still works.
    let response = get_with_authorization(&app, "/v1/account", &[bearer.as_str()]).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let value = format!("{scheme} {token}");
        let response = get_with_authorization(&app, "/v1/account", &[value.as_str()]).await;
        assert_eq!(response.status(), 200, "{value}");
        // Several spaces may separate the scheme from the token (RFC 9110: 1*SP).
        let value = format!("{scheme}   {token}");
        let response = get_with_authorization(&app, "/v1/account", &[value.as_str()]).await;
        assert_eq!(response.status(), 200, "{value}");
    }
    let response = app
        .request(Method::POST, "/v1/accounts", None)
        .header(AUTHORIZATION, format!("BEARER {ADMIN_TOKEN}"))
        .json(&json!({"email": "eve@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    // The scheme is the whole first word: a longer word is another scheme.
    for value in [format!("Bearerx {token}"), format!("XBearer {token}")] {
        let response = get_with_authorization(&app, "/v1/account", &[value.as_str()]).await;
        assert_error(response, 401, "authentication_error", "invalid_token").await;
    }
}

#[tokio::test]
async fn unknown_routes_and_missing_docs_files_answer_the_404_envelope() {
    let app = spawn_app().await;
    for path in ["/v1/nope", "/docs/nope.js", "/docs/nope/deeper.css"] {
        let response = app.request(Method::GET, path, None).send().await.unwrap();
        assert_error(response, 404, "not_found_error", "route_not_found").await;
    }
    // A real file under /docs/ is still served.
    let response = app
        .request(Method::GET, "/docs/swagger-ui.css", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("text/css")
    );
    // HEAD on an unknown route: the same status and headers, no body.
    let response = app
        .request(Method::HEAD, "/v1/nope", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(header(&response, "x-request-id").is_some());
    assert!(response.bytes().await.unwrap().is_empty());
}

/// Sends `method` to `path` and answers the `Allow` header of the 405 it must get, after checking
/// the envelope.
async fn allow_of(app: &TestApp, method: Method, path: &str, token: &str) -> String {
    let response = app
        .request(method.clone(), path, Some(token))
        .send()
        .await
        .unwrap();
    let allow = header(&response, "allow");
    assert_error(response, 405, "invalid_request_error", "method_not_allowed").await;
    allow.unwrap_or_else(|| panic!("no Allow header on the 405 of {method} {path}"))
}

#[tokio::test]
async fn a_wrong_method_answers_405_with_the_route_s_methods_in_allow() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    for (method, path, allow) in [
        (Method::DELETE, "/v1/byok/list", "GET, HEAD"),
        (Method::POST, "/v1/byok/get/byok_x", "GET, HEAD"),
        (Method::GET, "/v1/byok/register", "POST"),
        (Method::PUT, "/v1/account/keys", "GET, HEAD, POST"),
        (Method::GET, "/v1/account/keys/key_x", "DELETE"),
        (Method::GET, "/v1/accounts", "POST"),
        (Method::PATCH, "/healthz", "GET, HEAD"),
        (Method::POST, "/openapi.json", "GET, HEAD"),
        (Method::POST, "/docs/", "GET, HEAD"),
        (Method::OPTIONS, "/v1/byok/update/byok_x", "PATCH"),
    ] {
        assert_eq!(
            allow_of(&app, method.clone(), path, &token).await,
            allow,
            "{method} {path}"
        );
    }
    // HEAD where there is no GET: the same 405 and Allow, without the body.
    let response = app
        .request(Method::HEAD, "/v1/accounts", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(header(&response, "allow").as_deref(), Some("POST"));
    assert!(header(&response, "x-request-id").is_some());
    assert!(response.bytes().await.unwrap().is_empty());
}

/// `Allow` and the contract agree: every path of the OpenAPI document allows exactly the methods
/// the document gives it, and `HEAD` wherever it has `GET`.
#[tokio::test]
async fn every_documented_path_allows_exactly_its_documented_methods() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    let spec: Value = serde_json::from_str(&keyledger::http::openapi::spec_json()).unwrap();
    let order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        let mut methods: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        if methods.contains("GET") {
            methods.insert("HEAD".to_owned());
        }
        let expected: Vec<&str> = order
            .iter()
            .copied()
            .filter(|m| methods.contains(*m))
            .collect();
        let concrete = path.replace("{id}", "x");
        let allow = allow_of(&app, Method::OPTIONS, &concrete, &token).await;
        assert_eq!(allow, expected.join(", "), "{path}");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} paths in the document");
}

/// Answers (status, content type, content length, ETag) after checking that the body is empty
/// and the request id is there.
async fn head_of(
    app: &TestApp,
    path: &str,
    token: &str,
) -> (u16, Option<String>, Option<String>, Option<String>) {
    let response = app
        .request(Method::HEAD, path, Some(token))
        .send()
        .await
        .unwrap();
    assert!(header(&response, "x-request-id").is_some(), "HEAD {path}");
    let seen = (
        response.status().as_u16(),
        header(&response, "content-type"),
        header(&response, "content-length"),
        header(&response, "etag"),
    );
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "HEAD {path} has a body"
    );
    seen
}

#[tokio::test]
async fn head_answers_every_get_route_like_get_without_a_body() {
    let app = spawn_app().await;
    let token = app.account_token("ada@example.com").await;
    let id = register_id(&app, &token, &openai("main", "sk-test-0123456789abcdef")).await;
    for path in [
        "/healthz".to_owned(),
        "/readyz".to_owned(),
        "/openapi.json".to_owned(),
        "/docs/".to_owned(),
        "/docs/swagger-ui.css".to_owned(),
        "/v1/account".to_owned(),
        "/v1/account/keys".to_owned(),
        "/v1/byok/providers".to_owned(),
        "/v1/byok/list".to_owned(),
        format!("/v1/byok/get/{id}"),
        format!("/v1/byok/events/{id}"),
        "/v1/events".to_owned(),
        // Errors too: an unknown credential, a query the route does not take.
        "/v1/byok/get/byok_01M8SEF0SY6JZ60T5C6FPXQP8R".to_owned(),
        "/v1/byok/list?bogus=1".to_owned(),
    ] {
        let get = app.get(&path, &token).await;
        let expected = (
            get.status().as_u16(),
            header(&get, "content-type"),
            header(&get, "content-length"),
            header(&get, "etag"),
        );
        let body = get.bytes().await.unwrap();
        assert_eq!(
            expected.2.as_deref(),
            Some(body.len().to_string().as_str()),
            "GET {path}"
        );
        assert_eq!(head_of(&app, &path, &token).await, expected, "HEAD {path}");
    }
    // Without a token, HEAD is refused as GET is.
    let response = app
        .request(Method::HEAD, "/v1/byok/list", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.bytes().await.unwrap().is_empty());
    // The event stream answers its headers and ends instead of streaming nothing for ever: the
    // next request on the same connection is answered.
    let (status, content_type, _, _) = head_of(&app, "/v1/events/stream", &token).await;
    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("text/event-stream"));
    let address = app.address.trim_start_matches("http://").to_owned();
    let requests = format!(
        "HEAD /v1/events/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let answer = tokio::task::spawn_blocking(move || exchange(&address, requests.as_bytes()))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("text/event-stream"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{answer}");
    assert!(answer.ends_with("{\"status\":\"ok\"}"), "{answer}");
}

/// Sends `request` on its own connection and answers everything the server sent until it closed.
fn exchange(address: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    // The server closes the connection after refusing the request; it logs before it closes.
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn requests_the_http_parser_refuses_stay_out_of_the_error_log() {
    let dir = tempfile::tempdir().unwrap();
    let master_key = MasterKey::generate().to_base64();
    // At debug level, so the test also sees that the refusals are logged, only lower.
    let server = Binary::spawn(
        serve_command(&dir.path().join("data"), master_key.expose()).env("RUST_LOG", "debug"),
        dir.path(),
    );
    let address = server.address.trim_start_matches("http://").to_owned();
    let requests: [&[u8]; 6] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n",
        b"GET /hea\x01lthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ];
    for _ in 0..5 {
        for request in requests {
            let answer = exchange(&address, request);
            assert!(
                answer.starts_with("HTTP/1.1 400 "),
                "{:?} answered {answer:?}",
                String::from_utf8_lossy(request)
            );
        }
    }
    // The server still answers, and has written every line of those connections by now.
    let answer = exchange(
        &address,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let log = std::fs::read_to_string(&server.stderr).unwrap();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "error lines:\n{}", errors.join("\n"));
    let refused = log
        .lines()
        .filter(|l| l.contains("DEBUG") && l.contains("request parse error"))
        .count();
    assert_eq!(
        refused, 30,
        "the refusals are logged at debug level:\n{log}"
    );
}

#[tokio::test]
async fn a_401_names_the_bearer_scheme_it_accepts() {
    let app = spawn_app().await;
    for token in [
        None,
        Some("kl_000000000000000000000000000000000000000000000000"),
    ] {
        let mut request = app.client.get(format!("{}/v1/account", app.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers().get("www-authenticate").unwrap(),
            "Bearer"
        );
    }
    // Other errors do not carry it.
    let token = app.account_token("ada@example.com").await;
    let response = app.get("/v1/byok/get/byok_nope", &token).await;
    assert_eq!(response.status(), 404);
    assert!(response.headers().get("www-authenticate").is_none());
}
