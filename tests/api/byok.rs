//! The `/v1/byok` credential contract as its clients see it: every endpoint, every validation
//! rule, `If-Match` on every mutation, scopes, isolation between accounts, crypto-shredding on
//! revoke, and canary secrets that must never surface in a response, an event, a file of the
//! data dir or a log line.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use keyledger::crypto::MasterKey;
use keyledger::es::StreamId;
use keyledger::service::credentials::Credentials;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, LISTENING, TestApp, assert_error, serve_command, spawn_app};

// ---- helpers ----

/// An account and its first (admin) token.
struct Tenant {
    account_id: String,
    token: String,
}

async fn tenant(app: &TestApp, email: &str) -> Tenant {
    let body = app.create_account(email).await;
    Tenant {
        account_id: body["account_id"].as_str().unwrap().to_owned(),
        token: body["api_key"].as_str().unwrap().to_owned(),
    }
}

/// Sends one request; `if_match` is sent verbatim as the `If-Match` header.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    if_match: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let mut request = app.request(method, path, token);
    if let Some(value) = if_match {
        request = request.header("If-Match", value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("request")
}

fn etag(response: &Response) -> String {
    response
        .headers()
        .get("etag")
        .expect("ETag header")
        .to_str()
        .expect("ascii ETag")
        .to_owned()
}

async fn json_of(response: Response) -> Value {
    response.json().await.expect("json body")
}

/// Registers and answers (the 201 body, the ETag).
async fn register(app: &TestApp, token: &str, body: &Value) -> (Value, String) {
    let response = call(
        app,
        Method::POST,
        "/v1/byok/register",
        Some(token),
        None,
        Some(body),
    )
    .await;
    let status = response.status();
    if status != 201 {
        panic!(
            "register answered {status}: {} for {body}",
            response.text().await.unwrap_or_default()
        );
    }
    let tag = etag(&response);
    (json_of(response).await, tag)
}

async fn register_id(app: &TestApp, token: &str, body: &Value) -> String {
    register(app, token, body).await.0["byok_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `GET /v1/byok/get/{id}`, answering (config, ETag).
async fn get_config(app: &TestApp, token: &str, id: &str) -> (Value, String) {
    let response = app.get(&format!("/v1/byok/get/{id}"), token).await;
    assert_eq!(response.status(), 200, "get {id}");
    let tag = etag(&response);
    (json_of(response).await, tag)
}

/// The ids of every page of `GET /v1/byok/list?{query}` (following `next_cursor`).
async fn list_ids(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    list_all(app, token, query)
        .await
        .iter()
        .map(|c| c["byok_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn list_all(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/byok/list?{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let response = app.get(&path, token).await;
        assert_eq!(response.status(), 200, "{path}");
        let page = json_of(response).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("list never ended");
}

fn openai(alias: &str, key: &str) -> Value {
    json!({"provider": "openai", "alias": alias, "api_key": key})
}

fn azure(alias: &str, key: &str) -> Value {
    json!({"provider": "azure", "alias": alias, "credentials": {
        "api_key": key,
        "endpoint": "https://res.openai.azure.com",
        "api_version": "2024-10-21",
        "deployments": "gpt-4o,gpt-4o-mini"}})
}

fn bedrock(alias: &str, access_key: &str, secret_key: &str) -> Value {
    json!({"provider": "bedrock", "alias": alias, "credentials": {
        "access_key": access_key, "secret_key": secret_key, "region": "us-east-1"}})
}

fn self_hosted(alias: &str, base_url: &str) -> Value {
    json!({"provider": "self_hosted", "alias": alias, "base_url": base_url,
        "declared_region": "eu-west-1"})
}

/// A fresh, well-formed credential id that no account owns.
fn missing_id() -> String {
    format!("byok_{}", ulid::Ulid::new())
}

fn without_request_id(mut error: Value) -> Value {
    error.as_object_mut().unwrap().remove("request_id");
    error
}

fn keys_of(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {value}"))
        .with_timezone(&Utc)
}

fn credentials(app: &TestApp) -> Credentials {
    Credentials::new(app.store.clone(), app.settings.master_key.clone())
}

fn open_secrets(
    app: &TestApp,
    account_id: &str,
    byok_id: &str,
) -> Option<BTreeMap<String, String>> {
    credentials(app)
        .open_secrets(account_id, byok_id)
        .ok()
        .map(|s| s.expose().clone())
}

fn secrets(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A random lower-case hex string of `2 * N` characters.
fn random_hex<const N: usize>() -> String {
    hex::encode(keyledger::crypto::random_bytes::<N>())
}

const KEY: &str = "sk-proj-0123456789abcdefWXYZ";

/// Every field `ByokConfig` shows; anything else (such as the sealed secret) must not be there.
const CONFIG_FIELDS: [&str; 18] = [
    "byok_id",
    "provider",
    "alias",
    "label",
    "state",
    "version",
    "revision",
    "secret_hint",
    "settings",
    "bindings",
    "residency",
    "declared_region",
    "base_url",
    "models",
    "blacklisted_models",
    "weight",
    "created_at",
    "updated_at",
];

// ---- register ----

#[tokio::test]
async fn register_answers_201_with_a_byok_key_and_revision_1() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let before = Utc::now();
    let response = call(
        &app,
        Method::POST,
        "/v1/byok/register",
        Some(&ada.token),
        None,
        Some(&openai("prod-main", KEY)),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(etag(&response), "\"1\"");
    let text = response.text().await.unwrap();
    assert!(!text.contains("0123456789abcdef"), "{text}");
    let key: Value = serde_json::from_str(&text).unwrap();
    let fields = keys_of(&key);
    assert!(
        fields.is_subset(&set(&[
            "byok_id",
            "provider",
            "alias",
            "state",
            "created_at",
            "test_result"
        ])),
        "{key}"
    );
    assert!(key["byok_id"].as_str().unwrap().starts_with("byok_"));
    assert_eq!(key["provider"], "openai");
    assert_eq!(key["alias"], "prod-main");
    assert_eq!(key["state"], "active");
    let created = time(&key["created_at"]);
    assert!(before <= created && created <= Utc::now(), "{created}");

    // The credential is there, as registered.
    let id = key["byok_id"].as_str().unwrap();
    let (config, tag) = get_config(&app, &ada.token, id).await;
    assert_eq!(tag, "\"1\"");
    assert_eq!(config["created_at"], key["created_at"]);
}

#[tokio::test]
async fn several_credentials_per_provider_are_allowed() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let mut ids = BTreeSet::new();
    for (alias, key) in [
        ("blue", "sk-blue-000000000001"),
        ("green", "sk-green-00000000002"),
        ("canary-rollout", "sk-third-00000000003"),
    ] {
        ids.insert(register_id(&app, &ada.token, &openai(alias, key)).await);
    }
    assert_eq!(ids.len(), 3);
    let listed: BTreeSet<String> = list_ids(&app, &ada.token, "provider=openai")
        .await
        .into_iter()
        .collect();
    assert_eq!(listed, ids);
}

#[tokio::test]
async fn api_key_shorthand_and_credentials_map_register_the_same_secret() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let short = register_id(&app, &ada.token, &openai("short", KEY)).await;
    let long = register_id(
        &app,
        &ada.token,
        &json!({"provider": "openai", "alias": "long", "credentials": {"api_key": KEY}}),
    )
    .await;
    // Both at once is fine when they agree.
    let both = register_id(
        &app,
        &ada.token,
        &json!({"provider": "openai", "alias": "both", "api_key": KEY,
            "credentials": {"api_key": KEY}}),
    )
    .await;
    for id in [&short, &long, &both] {
        let (config, _) = get_config(&app, &ada.token, id).await;
        assert_eq!(config["secret_hint"], "WXYZ");
        assert_eq!(config["settings"], json!({}), "{config}");
        assert_eq!(
            open_secrets(&app, &ada.account_id, id),
            Some(secrets(&[("api_key", KEY)]))
        );
    }
    // Both at once with different values is refused, naming the shorthand.
    let response = call(
        &app,
        Method::POST,
        "/v1/byok/register",
        Some(&ada.token),
        None,
        Some(
            &json!({"provider": "openai", "alias": "clash", "api_key": KEY,
            "credentials": {"api_key": "sk-proj-another-key-0000"}}),
        ),
    )
    .await;
    let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
    assert_eq!(error["param"], "api_key");
    assert!(!error["message"].as_str().unwrap().contains("sk-proj"));
}

#[tokio::test]
async fn register_records_the_initial_binding() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let cases = [
        (
            json!({"capability": "chat", "module": "support", "model": "gpt-4o"}),
            json!([{"capability": "chat", "module": "support", "model": "gpt-4o"}]),
        ),
        (
            json!({"capability": "chat"}),
            json!([{"capability": "chat"}]),
        ),
        (
            json!({"module": "billing", "model": "gpt-4o-mini"}),
            json!([{"module": "billing", "model": "gpt-4o-mini"}]),
        ),
        (json!({}), json!([])),
    ];
    for (i, (binding, expected)) in cases.into_iter().enumerate() {
        let mut body = openai(&format!("bound-{i}"), KEY);
        for (k, v) in binding.as_object().unwrap() {
            body[k] = v.clone();
        }
        let id = register_id(&app, &ada.token, &body).await;
        let (config, _) = get_config(&app, &ada.token, &id).await;
        assert_eq!(config["bindings"], expected, "{binding}");
    }
}

// ---- get ----

#[tokio::test]
async fn get_shows_the_whole_configuration_and_never_the_secret() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let (key, _) = register(
        &app,
        &ada.token,
        &json!({
            "provider": "openai",
            "alias": "prod-eu",
            "api_key": KEY,
            "credentials": {"organization": "org-123"},
            "label": "Production, EU traffic",
            "base_url": "https://eu.api.openai.com/v1/",
            "declared_region": "eu",
            "models": ["gpt-4o-mini", "gpt-4o"],
            "blacklisted_models": ["o1-preview"],
            "weight": 250,
            "capability": "chat",
            "module": "support",
            "model": "gpt-4o",
        }),
    )
    .await;
    let id = key["byok_id"].as_str().unwrap();
    let response = app.get(&format!("/v1/byok/get/{id}"), &ada.token).await;
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), "\"1\"");
    let text = response.text().await.unwrap();
    assert!(!text.contains("0123456789abcdef"), "{text}");
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(keys_of(&config), set(&CONFIG_FIELDS), "{config}");
    assert_eq!(
        config,
        json!({
            "byok_id": id,
            "provider": "openai",
            "alias": "prod-eu",
            "label": "Production, EU traffic",
            "state": "active",
            "version": 1,
            "revision": 1,
            "secret_hint": "WXYZ",
            "settings": {"organization": "org-123"},
            "bindings": [{"capability": "chat", "module": "support", "model": "gpt-4o"}],
            "residency": "eu",
            "declared_region": "eu",
            "base_url": "https://eu.api.openai.com/v1",
            "models": ["gpt-4o", "gpt-4o-mini"],
            "blacklisted_models": ["o1-preview"],
            "weight": 250,
            "created_at": key["created_at"],
            "updated_at": key["created_at"],
        })
    );

    // The defaults of a minimal registration.
    let minimal = register_id(&app, &ada.token, &openai("minimal", "sk-short")).await;
    let (config, _) = get_config(&app, &ada.token, &minimal).await;
    assert_eq!(config["label"], Value::Null);
    assert_eq!(config["base_url"], Value::Null);
    assert_eq!(config["declared_region"], Value::Null);
    assert_eq!(config["residency"], "global");
    assert_eq!(config["models"], json!([]));
    assert_eq!(config["blacklisted_models"], json!([]));
    assert_eq!(config["bindings"], json!([]));
    assert_eq!(config["weight"], 100);
    // Too short a key to give any of it away.
    assert_eq!(config["secret_hint"], "");
}

#[tokio::test]
async fn residency_follows_the_provider_or_the_declared_region() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let cases = [
        (
            json!({"provider": "sarvam", "alias": "s", "api_key": KEY}),
            "india",
            Value::Null,
        ),
        (
            json!({"provider": "mistral", "alias": "m", "api_key": KEY}),
            "eu",
            Value::Null,
        ),
        (openai("o", KEY), "global", Value::Null),
        (
            json!({"provider": "openai", "alias": "o-eu", "api_key": KEY, "declared_region": "eu"}),
            "eu",
            json!("eu"),
        ),
        (
            self_hosted("gpu", "http://localhost:8000/v1"),
            "eu-west-1",
            json!("eu-west-1"),
        ),
    ];
    for (body, residency, declared) in cases {
        let id = register_id(&app, &ada.token, &body).await;
        let (config, _) = get_config(&app, &ada.token, &id).await;
        assert_eq!(config["residency"], residency, "{body}");
        assert_eq!(config["declared_region"], declared, "{body}");
    }
    let (own, _) = get_config(
        &app,
        &ada.token,
        &list_ids(&app, &ada.token, "provider=self_hosted").await[0],
    )
    .await;
    assert_eq!(own["base_url"], "http://localhost:8000/v1");
    assert_eq!(own["secret_hint"], "", "a key-less server has no hint");
}

#[tokio::test]
async fn an_unknown_id_is_404() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    for id in [missing_id(), "nope".to_owned()] {
        let response = app.get(&format!("/v1/byok/get/{id}"), &ada.token).await;
        assert_error(response, 404, "not_found_error", "resource_missing").await;
        // Revoking what does not exist is not an idempotent success.
        let response = app
            .delete(&format!("/v1/byok/revoke/{id}"), &ada.token)
            .await;
        assert_error(response, 404, "not_found_error", "resource_missing").await;
    }
}

// ---- list ----

#[tokio::test]
async fn list_filters_by_provider_and_by_state() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let o1 = register_id(&app, &ada.token, &openai("o1", KEY)).await;
    let o2 = register_id(&app, &ada.token, &openai("o2", KEY)).await;
    let an = register_id(
        &app,
        &ada.token,
        &json!({"provider": "anthropic", "alias": "a", "api_key": KEY}),
    )
    .await;
    let mi = register_id(
        &app,
        &ada.token,
        &json!({"provider": "mistral", "alias": "m", "api_key": KEY}),
    )
    .await;
    let disable = app
        .post(
            &format!("/v1/byok/disable/{o2}"),
            Some(&ada.token),
            &json!({}),
        )
        .await;
    assert_eq!(disable.status(), 200);
    let revoke = app
        .delete(&format!("/v1/byok/revoke/{an}"), &ada.token)
        .await;
    assert_eq!(revoke.status(), 200);

    let as_set = |ids: Vec<String>| ids.into_iter().collect::<BTreeSet<_>>();
    let ids = |items: &[&String]| items.iter().map(|s| (*s).clone()).collect::<BTreeSet<_>>();
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "").await),
        ids(&[&o1, &o2, &an, &mi])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "provider=openai").await),
        ids(&[&o1, &o2])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "provider=anthropic").await),
        ids(&[&an])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "state=active").await),
        ids(&[&o1, &mi])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "state=disabled").await),
        ids(&[&o2])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "state=revoked").await),
        ids(&[&an])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "provider=openai&state=active").await),
        ids(&[&o1])
    );
    assert!(list_ids(&app, &ada.token, "provider=groq").await.is_empty());

    // Items are whole configurations, with their revision.
    let items = list_all(&app, &ada.token, "provider=openai&state=disabled").await;
    assert_eq!(keys_of(&items[0]), set(&CONFIG_FIELDS));
    assert_eq!(items[0]["state"], "disabled");
    assert_eq!(items[0]["revision"], 2);

    // A state that does not exist is a malformed query.
    let response = app.get("/v1/byok/list?state=deleted", &ada.token).await;
    assert_error(response, 400, "invalid_request_error", "invalid_query").await;
}

#[tokio::test]
async fn list_pages_with_limit_and_cursor() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let mut registered = Vec::new();
    for i in 0..7 {
        registered.push(register_id(&app, &ada.token, &openai(&format!("k{i}"), KEY)).await);
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/byok/list?limit=3&cursor={c}"),
            None => "/v1/byok/list?limit=3".to_owned(),
        };
        let response = app.get(&path, &ada.token).await;
        assert_eq!(response.status(), 200);
        let page = json_of(response).await;
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(
            items
                .iter()
                .map(|c| c["byok_id"].as_str().unwrap().to_owned()),
        );
        match page.get("next_cursor") {
            Some(next) => cursor = Some(next.as_str().expect("a string cursor").to_owned()),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end: {sizes:?}");
    }
    assert_eq!(sizes, [3, 3, 1]);
    // Each exactly once, in the order of one unpaged listing.
    let unpaged = list_ids(&app, &ada.token, "limit=50").await;
    assert_eq!(seen, unpaged);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>(),
        registered.iter().collect::<BTreeSet<_>>()
    );
    // A cursor can be used again later, with the same answer.
    let first = json_of(app.get("/v1/byok/list?limit=3", &ada.token).await).await;
    let next = first["next_cursor"].as_str().unwrap();
    let again = json_of(
        app.get(&format!("/v1/byok/list?limit=3&cursor={next}"), &ada.token)
            .await,
    )
    .await;
    let again: Vec<&str> = again["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["byok_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        again,
        seen[3..6].iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn list_is_oldest_first() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    // Concurrent registrations land in the same millisecond often enough to show the order.
    let bodies: Vec<Value> = (0..40).map(|i| openai(&format!("k{i}"), KEY)).collect();
    let requests = bodies.iter().map(|body| {
        call(
            &app,
            Method::POST,
            "/v1/byok/register",
            Some(&ada.token),
            None,
            Some(body),
        )
    });
    for response in futures_util::future::join_all(requests).await {
        assert_eq!(response.status(), 201);
    }
    let items = list_all(&app, &ada.token, "limit=500").await;
    assert_eq!(items.len(), 40);
    let created: Vec<DateTime<Utc>> = items.iter().map(|c| time(&c["created_at"])).collect();
    for pair in created.windows(2) {
        assert!(
            pair[0] <= pair[1],
            "listed out of creation order: {created:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_cursor_is_a_400() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    register_id(&app, &ada.token, &openai("k", KEY)).await;
    let not_utf8 = URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0xfd]);
    for cursor in ["!!!!", "a", "%25%25%25", "abc$def", not_utf8.as_str()] {
        let response = app
            .get(&format!("/v1/byok/list?cursor={cursor}"), &ada.token)
            .await;
        let error = assert_error(response, 400, "invalid_request_error", "invalid_query").await;
        assert_eq!(error["param"], "cursor", "{cursor}");
    }
    for query in ["limit=abc", "limit=-1", "bogus=1"] {
        let response = app.get(&format!("/v1/byok/list?{query}"), &ada.token).await;
        assert_error(response, 400, "invalid_request_error", "invalid_query").await;
    }
}

// ---- update ----

#[tokio::test]
async fn update_changes_the_fields_given_and_null_clears() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let (key, _) = register(
        &app,
        &ada.token,
        &json!({"provider": "openai", "alias": "prod", "api_key": KEY, "label": "Old",
            "models": ["gpt-4o"], "credentials": {"organization": "org-1"},
            "capability": "chat"}),
    )
    .await;
    let id = key["byok_id"].as_str().unwrap();
    let path = format!("/v1/byok/update/{id}");
    let patch = json!({
        "alias": "prod-renamed",
        "label": "  New label  ",
        "weight": 300,
        "models": ["gpt-4o-mini", "gpt-4o"],
        "blacklisted_models": ["o1"],
        "base_url": "https://proxy.example.com/openai/v1/",
        "declared_region": "eu",
        "credentials": {"organization": "org-9", "project": "proj_2"},
    });
    let response = call(
        &app,
        Method::PATCH,
        &path,
        Some(&ada.token),
        None,
        Some(&patch),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), "\"2\"");
    let updated = json_of(response).await;
    assert_eq!(updated["alias"], "prod-renamed");
    assert_eq!(updated["label"], "New label");
    assert_eq!(updated["weight"], 300);
    assert_eq!(updated["models"], json!(["gpt-4o", "gpt-4o-mini"]));
    assert_eq!(updated["blacklisted_models"], json!(["o1"]));
    assert_eq!(updated["base_url"], "https://proxy.example.com/openai/v1");
    assert_eq!(updated["declared_region"], "eu");
    assert_eq!(updated["residency"], "eu");
    assert_eq!(
        updated["settings"],
        json!({"organization": "org-9", "project": "proj_2"})
    );
    assert_eq!(updated["revision"], 2);
    // What update does not touch stays.
    assert_eq!(updated["version"], 1);
    assert_eq!(updated["secret_hint"], "WXYZ");
    assert_eq!(updated["bindings"], json!([{"capability": "chat"}]));
    assert_eq!(updated["created_at"], key["created_at"]);
    assert!(time(&updated["updated_at"]) > time(&key["created_at"]));
    // get agrees with the answer.
    let (config, tag) = get_config(&app, &ada.token, id).await;
    assert_eq!(tag, "\"2\"");
    assert_eq!(config, updated);

    // null clears; an empty optional setting removes it.
    let response = call(
        &app,
        Method::PATCH,
        &path,
        Some(&ada.token),
        None,
        Some(
            &json!({"label": null, "base_url": null, "declared_region": null,
            "credentials": {"project": ""}}),
        ),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), "\"3\"");
    let cleared = json_of(response).await;
    assert_eq!(cleared["label"], Value::Null);
    assert_eq!(cleared["base_url"], Value::Null);
    assert_eq!(cleared["declared_region"], Value::Null);
    assert_eq!(cleared["residency"], "global");
    assert_eq!(cleared["settings"], json!({"organization": "org-9"}));
    assert_eq!(cleared["alias"], "prod-renamed", "absent fields are kept");
    assert_eq!(cleared["weight"], 300);

    // A patch that changes nothing is no new revision.
    for nothing in [json!({}), json!({"weight": 300, "label": null})] {
        let response = call(
            &app,
            Method::PATCH,
            &path,
            Some(&ada.token),
            None,
            Some(&nothing),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(etag(&response), "\"3\"", "{nothing}");
        let same = json_of(response).await;
        assert_eq!(same["updated_at"], cleared["updated_at"]);
    }
}

#[tokio::test]
async fn update_validates_what_it_changes() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let az = register_id(&app, &ada.token, &azure("az", KEY)).await;
    let cases = [
        (&id, json!({"alias": "Bad Alias"}), "alias"),
        (&id, json!({"label": "x".repeat(129)}), "label"),
        (&id, json!({"weight": 0}), "weight"),
        (&id, json!({"weight": 1001}), "weight"),
        (&id, json!({"base_url": "http://example.com"}), "base_url"),
        (&id, json!({"models": ["ok", " "]}), "models[1]"),
        (&az, json!({"base_url": "https://example.com"}), "base_url"),
        (
            &az,
            json!({"credentials": {"endpoint": ""}}),
            "credentials.endpoint",
        ),
    ];
    for (target, patch, param) in cases {
        let response = call(
            &app,
            Method::PATCH,
            &format!("/v1/byok/update/{target}"),
            Some(&ada.token),
            None,
            Some(&patch),
        )
        .await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
        assert_eq!(error["param"], param, "{patch}");
    }
    for target in [&id, &az] {
        let (config, tag) = get_config(&app, &ada.token, target).await;
        assert_eq!(tag, "\"1\"", "a refused update changed {config}");
    }
}

#[tokio::test]
async fn no_secret_can_change_through_update() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let bed = register_id(
        &app,
        &ada.token,
        &bedrock(
            "bed",
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
    )
    .await;
    let replacement = "sk-proj-replacement-key-0000";
    let cases = [
        (
            &id,
            json!({"credentials": {"api_key": replacement}}),
            "invalid_parameter",
            "credentials.api_key",
        ),
        (
            &id,
            json!({"api_key": replacement}),
            "invalid_body",
            "api_key",
        ),
        (
            &bed,
            json!({"credentials": {"secret_key": replacement}}),
            "invalid_parameter",
            "credentials.secret_key",
        ),
        (
            &bed,
            json!({"credentials": {"session_token": replacement}}),
            "invalid_parameter",
            "credentials.session_token",
        ),
        (
            &bed,
            json!({"credentials": {"access_key": ""}}),
            "invalid_parameter",
            "credentials.access_key",
        ),
    ];
    for (target, patch, code, param) in cases {
        let response = call(
            &app,
            Method::PATCH,
            &format!("/v1/byok/update/{target}"),
            Some(&ada.token),
            None,
            Some(&patch),
        )
        .await;
        let error = assert_error(response, 422, "invalid_request_error", code).await;
        assert_eq!(error["param"], param, "{patch}");
        assert!(!error["message"].as_str().unwrap().contains(replacement));
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!((tag.as_str(), &config["version"]), ("\"1\"", &json!(1)));
    assert_eq!(config["secret_hint"], "WXYZ");
    assert_eq!(
        open_secrets(&app, &ada.account_id, &id),
        Some(secrets(&[("api_key", KEY)]))
    );
    assert_eq!(
        open_secrets(&app, &ada.account_id, &bed),
        Some(secrets(&[
            ("access_key", "AKIAIOSFODNN7EXAMPLE"),
            ("secret_key", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ]))
    );
}

// ---- enable / disable / revoke ----

#[tokio::test]
async fn disable_and_enable_change_the_state_and_repeats_are_no_ops() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    // (endpoint, state after, revision after)
    let steps = [
        ("enable", "active", 1),
        ("disable", "disabled", 2),
        ("disable", "disabled", 2),
        ("enable", "active", 3),
        ("enable", "active", 3),
        ("disable", "disabled", 4),
    ];
    for (endpoint, state, revision) in steps {
        let response = call(
            &app,
            Method::POST,
            &format!("/v1/byok/{endpoint}/{id}"),
            Some(&ada.token),
            None,
            None,
        )
        .await;
        assert_eq!(response.status(), 200, "{endpoint}");
        assert_eq!(etag(&response), format!("\"{revision}\""), "{endpoint}");
        let config = json_of(response).await;
        assert_eq!(config["state"], state, "{endpoint}");
        assert_eq!(config["revision"], revision);
        let (got, _) = get_config(&app, &ada.token, &id).await;
        assert_eq!(got["state"], state);
        assert_eq!(got["revision"], revision);
    }
    // The events record only the real changes.
    let types: Vec<String> = app
        .store
        .stream_events(&StreamId::new("byok", &id))
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "byok.registered",
            "byok.disabled",
            "byok.enabled",
            "byok.disabled"
        ]
    );
}

#[tokio::test]
async fn revoke_is_idempotent_and_final() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let path = format!("/v1/byok/revoke/{id}");
    let first = app.delete(&path, &ada.token).await;
    assert_eq!(first.status(), 200);
    assert_eq!(etag(&first), "\"2\"");
    let first = json_of(first).await;
    assert_eq!(first["state"], "revoked");
    let second = app.delete(&path, &ada.token).await;
    assert_eq!(second.status(), 200);
    assert_eq!(etag(&second), "\"2\"");
    assert_eq!(json_of(second).await, first);

    for (method, endpoint, body) in [
        (Method::PATCH, "update", Some(json!({"label": "back"}))),
        (Method::PATCH, "update", Some(json!({}))),
        (Method::POST, "enable", None),
        (Method::POST, "disable", None),
    ] {
        let response = call(
            &app,
            method,
            &format!("/v1/byok/{endpoint}/{id}"),
            Some(&ada.token),
            None,
            body.as_ref(),
        )
        .await;
        assert_error(response, 409, "conflict_error", "credential_revoked").await;
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"2\"");
    assert_eq!(config, first);
    assert_eq!(
        list_ids(&app, &ada.token, "state=revoked").await,
        [id.as_str()]
    );
    assert!(list_ids(&app, &ada.token, "state=active").await.is_empty());
}

// ---- provider catalog ----

#[tokio::test]
async fn the_provider_catalog_is_public_and_lists_every_provider() {
    let app = spawn_app().await;
    let response = app
        .request(Method::GET, "/v1/byok/providers", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    let items = body["items"].as_array().unwrap();
    let by_id: BTreeMap<&str, &Value> = items
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    assert_eq!(by_id.len(), items.len(), "duplicate provider ids");
    assert_eq!(
        by_id.keys().copied().collect::<BTreeSet<_>>(),
        [
            "openai",
            "anthropic",
            "together",
            "groq",
            "mistral",
            "deepseek",
            "cohere",
            "openrouter",
            "sarvam",
            "azure",
            "bedrock",
            "vertex",
            "self_hosted"
        ]
        .into_iter()
        .collect()
    );
    let fields = |id: &str, which: &str| -> Vec<String> {
        by_id[id][which]
            .as_array()
            .unwrap_or_else(|| panic!("{id} has no {which}"))
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    };
    for hosted in [
        "anthropic",
        "together",
        "groq",
        "mistral",
        "deepseek",
        "cohere",
        "openrouter",
        "sarvam",
    ] {
        assert_eq!(fields(hosted, "required_fields"), ["api_key"], "{hosted}");
        assert_eq!(by_id[hosted]["takes_base_url"], true, "{hosted}");
    }
    assert_eq!(fields("openai", "required_fields"), ["api_key"]);
    assert_eq!(
        fields("azure", "required_fields"),
        ["api_key", "endpoint", "api_version", "deployments"]
    );
    assert_eq!(by_id["azure"]["takes_base_url"], false);
    assert_eq!(
        fields("bedrock", "required_fields"),
        ["access_key", "secret_key", "region"]
    );
    assert_eq!(fields("bedrock", "optional_fields"), ["session_token"]);
    assert_eq!(
        fields("bedrock", "secret_fields"),
        ["access_key", "secret_key", "session_token"]
    );
    let vertex = fields("vertex", "required_fields");
    assert!(vertex.contains(&"project_id".to_owned()) && vertex.contains(&"region".to_owned()));
    assert_eq!(fields("vertex", "secret_fields"), ["service_account_json"]);
    let own = by_id["self_hosted"];
    assert_eq!(fields("self_hosted", "optional_fields"), ["api_key"]);
    assert_eq!(own["requires_base_url"], true);
    assert_eq!(own["requires_declared_region"], true);
    assert_eq!(by_id["mistral"]["residency"], "eu");
    assert_eq!(by_id["sarvam"]["residency"], "india");
    assert_eq!(by_id["openai"]["residency"], "global");
    for p in items {
        assert!(p["name"].as_str().is_some_and(|n| !n.is_empty()), "{p}");
    }
}

// ---- validation ----

#[tokio::test]
async fn every_validation_rule_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let with = |mut body: Value, changes: Value| {
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let base = openai("prod", KEY);
    let mut azure_no_endpoint = azure("az", KEY);
    azure_no_endpoint["credentials"]
        .as_object_mut()
        .unwrap()
        .remove("endpoint");
    let mut bedrock_no_secret = bedrock("bed", "AKIAIOSFODNN7EXAMPLE", "x");
    bedrock_no_secret["credentials"]
        .as_object_mut()
        .unwrap()
        .remove("secret_key");
    let mut blank_session = bedrock("bed", "AKIAIOSFODNN7EXAMPLE", "s3cr3t-s3cr3t");
    blank_session["credentials"]["session_token"] = json!("  ");
    let cases: Vec<(Value, &str)> = vec![
        // unknown provider
        (with(base.clone(), json!({"provider": "nope"})), "provider"),
        (
            with(base.clone(), json!({"provider": "OpenAI"})),
            "provider",
        ),
        (with(base.clone(), json!({"provider": ""})), "provider"),
        // unknown credential field
        (
            with(base.clone(), json!({"credentials": {"region": "eu"}})),
            "credentials.region",
        ),
        (
            with(
                base.clone(),
                json!({"credentials": {"base_url": "https://x.example"}}),
            ),
            "credentials.base_url",
        ),
        (
            with(
                base.clone(),
                json!({"credentials": {"sk-proj-AbC123": "x"}}),
            ),
            "credentials",
        ),
        // missing required field
        (azure_no_endpoint, "credentials.endpoint"),
        (bedrock_no_secret, "credentials.secret_key"),
        (
            json!({"provider": "anthropic", "alias": "a"}),
            "credentials.api_key",
        ),
        (
            with(
                bedrock("bed", "AKIAIOSFODNN7EXAMPLE", "s"),
                json!({"api_key": KEY}),
            ),
            "api_key",
        ),
        // empty secret
        (
            with(base.clone(), json!({"api_key": ""})),
            "credentials.api_key",
        ),
        (
            with(base.clone(), json!({"api_key": "  \n"})),
            "credentials.api_key",
        ),
        (blank_session, "credentials.session_token"),
        (
            with(base.clone(), json!({"api_key": "sk-with a space"})),
            "credentials.api_key",
        ),
        // base_url where none is taken, or required and absent
        (
            with(
                azure("az", KEY),
                json!({"base_url": "https://res.openai.azure.com"}),
            ),
            "base_url",
        ),
        (
            with(
                bedrock("bed", "AKIAIOSFODNN7EXAMPLE", "s"),
                json!({"base_url": "https://bedrock.example.com"}),
            ),
            "base_url",
        ),
        (
            json!({"provider": "self_hosted", "alias": "gpu", "declared_region": "eu"}),
            "base_url",
        ),
        (
            json!({"provider": "self_hosted", "alias": "gpu", "base_url": "http://localhost:8000"}),
            "declared_region",
        ),
        // plaintext http to a public host, or a URL that is not one
        (
            with(base.clone(), json!({"base_url": "http://example.com"})),
            "base_url",
        ),
        (self_hosted("gpu", "http://example.com/v1"), "base_url"),
        (self_hosted("gpu", "http://8.8.8.8:8000"), "base_url"),
        (self_hosted("gpu", "ftp://localhost/"), "base_url"),
        (self_hosted("gpu", "localhost:8000"), "base_url"),
        (
            with(
                base.clone(),
                json!({"base_url": "https://user:pw@api.example.com"}),
            ),
            "base_url",
        ),
        // label
        (
            with(base.clone(), json!({"label": "x".repeat(129)})),
            "label",
        ),
        // weight
        (with(base.clone(), json!({"weight": 0})), "weight"),
        (with(base.clone(), json!({"weight": 1001})), "weight"),
        // alias
        (with(base.clone(), json!({"alias": "Bad Alias"})), "alias"),
        (with(base.clone(), json!({"alias": ""})), "alias"),
        (with(base.clone(), json!({"alias": "-lead"})), "alias"),
        (
            with(base.clone(), json!({"alias": "a".repeat(65)})),
            "alias",
        ),
        (with(base.clone(), json!({"alias": null})), "alias"),
        // models and bindings
        (
            with(base.clone(), json!({"models": ["ok", " "]})),
            "models[1]",
        ),
        (
            with(base.clone(), json!({"blacklisted_models": [""]})),
            "blacklisted_models[0]",
        ),
        (with(base.clone(), json!({"model": "gpt-4o"})), "capability"),
        (
            with(base.clone(), json!({"declared_region": "EU West"})),
            "declared_region",
        ),
    ];
    let before = app.store.last_position().unwrap();
    for (body, param) in &cases {
        let response = call(
            &app,
            Method::POST,
            "/v1/byok/register",
            Some(&ada.token),
            None,
            Some(body),
        )
        .await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
        assert_eq!(error["param"], *param, "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(
            !message.contains("0123456789abcdef") && !message.contains("sk-"),
            "{message}"
        );
    }
    // Refused registrations leave no trace.
    assert_eq!(app.store.last_position().unwrap(), before);
    assert!(list_ids(&app, &ada.token, "").await.is_empty());

    // The boundaries are accepted.
    for (i, ok) in [
        json!({"label": "x".repeat(128)}),
        json!({"weight": 1}),
        json!({"weight": 1000}),
        json!({"alias": "a".repeat(64)}),
        json!({"alias": "0_prod-eu"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = with(base.clone(), ok);
        if body["alias"] == "prod" {
            body["alias"] = json!(format!("ok{i}"));
        }
        register_id(&app, &ada.token, &body).await;
    }
}

#[tokio::test]
async fn plaintext_http_is_accepted_for_local_and_private_hosts() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    for (i, (url, stored)) in [
        ("http://localhost:8000", "http://localhost:8000"),
        ("http://10.1.2.3", "http://10.1.2.3"),
        ("http://192.168.1.5/v1", "http://192.168.1.5/v1"),
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
        ("http://gpu.localhost", "http://gpu.localhost"),
        ("http://[::1]:8000/v1/", "http://[::1]:8000/v1"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = register_id(&app, &ada.token, &self_hosted(&format!("gpu{i}"), url)).await;
        let (config, _) = get_config(&app, &ada.token, &id).await;
        assert_eq!(config["base_url"], stored, "{url}");
        assert_eq!(config["provider"], "self_hosted");
    }
}

#[tokio::test]
async fn malformed_bodies_are_4xx_with_the_envelope() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let raw = |method: Method, path: String, content_type: &'static str, body: String| {
        let request = app
            .request(method, &path, Some(&ada.token))
            .header(CONTENT_TYPE, content_type)
            .body(body);
        async move { request.send().await.expect("request") }
    };
    let update = format!("/v1/byok/update/{id}");
    for (method, path) in [
        (Method::POST, "/v1/byok/register".to_owned()),
        (Method::PATCH, update.clone()),
    ] {
        // The last one is a complete, valid request followed by garbage.
        let trailing = if method == Method::POST {
            format!("{} trailing", openai("trailing", KEY))
        } else {
            "{\"label\": \"x\"} trailing".to_owned()
        };
        for body in ["{", "", "{\"label\": }", trailing.as_str()] {
            let response = raw(
                method.clone(),
                path.clone(),
                "application/json",
                body.into(),
            )
            .await;
            assert_error(response, 400, "invalid_request_error", "invalid_json").await;
        }
        let response = raw(method.clone(), path.clone(), "text/plain", "{}".into()).await;
        assert_error(
            response,
            415,
            "invalid_request_error",
            "unsupported_media_type",
        )
        .await;
        let huge = json!({"label": "x".repeat(80 * 1024)}).to_string();
        let response = raw(method.clone(), path.clone(), "application/json", huge).await;
        assert_error(response, 413, "invalid_request_error", "body_too_large").await;
    }
    let register_cases = [
        (
            json!({"provider": "openai", "alias": "a", "api_key": KEY, "colour": "red"}),
            Some("colour"),
        ),
        (
            json!({"provider": "openai", "alias": "a", "api_key": KEY, "weight": "heavy"}),
            Some("weight"),
        ),
        (
            json!({"provider": "openai", "alias": "a", "api_key": KEY, "weight": -1}),
            Some("weight"),
        ),
        (
            json!({"provider": "openai", "alias": "a", "api_key": KEY, "models": "gpt-4o"}),
            Some("models"),
        ),
        (
            json!({"provider": "openai", "alias": "a", "credentials": {"api_key": 5}}),
            Some("credentials.api_key"),
        ),
        (
            json!({"provider": "openai", "alias": "a", "credentials": ["x"]}),
            Some("credentials"),
        ),
        (
            json!({"provider": 5, "alias": "a", "api_key": KEY}),
            Some("provider"),
        ),
        (
            json!({"provider": "openai", "alias": 7, "api_key": KEY}),
            Some("alias"),
        ),
        (
            json!({"provider": "openai", "alias": "a", "api_key": KEY, "label": 7}),
            Some("label"),
        ),
        (json!(["openai"]), None),
        (json!("openai"), None),
    ];
    for (body, param) in register_cases {
        let response = call(
            &app,
            Method::POST,
            "/v1/byok/register",
            Some(&ada.token),
            None,
            Some(&body),
        )
        .await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
        if let Some(param) = param {
            assert_eq!(error["param"], param, "{body}");
        }
    }
    let update_cases = [
        (json!({"state": "active"}), "state"),
        (json!({"api_key": KEY}), "api_key"),
        (json!({"weight": "x"}), "weight"),
        (json!({"label": 5}), "label"),
        (json!({"models": [1]}), "models[0]"),
        (
            json!({"credentials": {"organization": 5}}),
            "credentials.organization",
        ),
    ];
    for (body, param) in update_cases {
        let response = call(
            &app,
            Method::PATCH,
            &update,
            Some(&ada.token),
            None,
            Some(&body),
        )
        .await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
        assert_eq!(error["param"], param, "{body}");
    }
    // Nothing changed and nothing else was created.
    let (_, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"1\"");
    assert_eq!(list_ids(&app, &ada.token, "").await, [id]);
}

// ---- If-Match ----

/// Sends a mutation of `id` with an `If-Match` header.
async fn mutate(app: &TestApp, token: &str, endpoint: &str, id: &str, if_match: &str) -> Response {
    let (method, body) = match endpoint {
        "update" => (Method::PATCH, Some(json!({"weight": 42}))),
        "revoke" => (Method::DELETE, None),
        _ => (Method::POST, None),
    };
    call(
        app,
        method,
        &format!("/v1/byok/{endpoint}/{id}"),
        Some(token),
        Some(if_match),
        body.as_ref(),
    )
    .await
}

#[tokio::test]
async fn if_match_with_the_current_revision_succeeds_and_bumps_the_etag() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    // (endpoint, If-Match, state after, ETag after)
    let steps = [
        ("disable", "\"1\"", "disabled", "\"2\""),
        ("enable", "\"2\"", "active", "\"3\""),
        ("update", "\"3\"", "active", "\"4\""),
        // Quotes are optional.
        ("disable", "4", "disabled", "\"5\""),
        ("revoke", "\"5\"", "revoked", "\"6\""),
    ];
    for (endpoint, if_match, state, after) in steps {
        let response = mutate(&app, &ada.token, endpoint, &id, if_match).await;
        assert_eq!(response.status(), 200, "{endpoint} with {if_match}");
        assert_eq!(etag(&response), after, "{endpoint}");
        let config = json_of(response).await;
        assert_eq!(config["state"], state, "{endpoint}");
        let (got, tag) = get_config(&app, &ada.token, &id).await;
        assert_eq!((tag.as_str(), &got["state"]), (after, &json!(state)));
    }
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["weight"], 42);
}

#[tokio::test]
async fn a_stale_if_match_is_a_409_and_changes_nothing() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    // Move the credential to revision 2 (disabled), then come with what was seen before.
    let response = mutate(&app, &ada.token, "disable", &id, "\"1\"").await;
    assert_eq!(response.status(), 200);
    let (before, _) = get_config(&app, &ada.token, &id).await;
    for endpoint in ["update", "enable", "disable", "revoke"] {
        for stale in ["\"1\"", "\"3\"", "\"0\""] {
            let response = mutate(&app, &ada.token, endpoint, &id, stale).await;
            assert_error(response, 409, "conflict_error", "version_conflict").await;
        }
        let (after, tag) = get_config(&app, &ada.token, &id).await;
        assert_eq!(tag, "\"2\"", "{endpoint}");
        assert_eq!(
            after, before,
            "{endpoint} with a stale If-Match changed the credential"
        );
    }
    assert!(
        open_secrets(&app, &ada.account_id, &id).is_some(),
        "revoked by a stale If-Match"
    );
    assert_eq!(
        app.store
            .stream_events(&StreamId::new("byok", &id))
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_malformed_if_match_is_a_400() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    for endpoint in ["update", "enable", "disable", "revoke"] {
        for bad in [
            "abc",
            "\"one\"",
            "-1",
            "\"\"",
            "W/\"1\"",
            "\"1\", \"2\"",
            "1.0",
        ] {
            let response = mutate(&app, &ada.token, endpoint, &id, bad).await;
            let error =
                assert_error(response, 400, "invalid_request_error", "invalid_header").await;
            assert_eq!(error["param"], "If-Match", "{endpoint} {bad}");
        }
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(
        (tag.as_str(), &config["state"]),
        ("\"1\"", &json!("active"))
    );
}

#[tokio::test]
async fn concurrent_mutations_with_one_if_match_have_one_winner() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let bodies: Vec<Value> = (1..=8).map(|w| json!({"weight": w * 10})).collect();
    let path = format!("/v1/byok/update/{id}");
    let requests = bodies.iter().map(|body| {
        call(
            &app,
            Method::PATCH,
            &path,
            Some(&ada.token),
            Some("\"1\""),
            Some(body),
        )
    });
    let statuses: Vec<u16> = futures_util::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
    let (_, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"2\"");
}

// ---- scopes ----

#[tokio::test]
async fn a_read_key_reads_but_cannot_change_anything() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let read = app.mint_key(&ada.token, &["read"]).await;
    let read = read["api_key"].as_str().unwrap();
    let (config, _) = get_config(&app, read, &id).await;
    assert_eq!(config["byok_id"], id.as_str());
    assert_eq!(list_ids(&app, read, "").await, [id.as_str()]);

    let register_body = openai("other", KEY);
    let update_body = json!({"label": "x"});
    let mutations = [
        (
            Method::POST,
            "/v1/byok/register".to_owned(),
            Some(&register_body),
        ),
        (
            Method::PATCH,
            format!("/v1/byok/update/{id}"),
            Some(&update_body),
        ),
        (Method::POST, format!("/v1/byok/enable/{id}"), None),
        (Method::POST, format!("/v1/byok/disable/{id}"), None),
        (Method::DELETE, format!("/v1/byok/revoke/{id}"), None),
    ];
    for (method, path, body) in &mutations {
        let response = call(&app, method.clone(), path, Some(read), None, *body).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
    // A write key may; a resolve key may not even read.
    let write = app.mint_key(&ada.token, &["write"]).await;
    let write = write["api_key"].as_str().unwrap();
    let response = call(
        &app,
        Method::POST,
        &format!("/v1/byok/disable/{id}"),
        Some(write),
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let resolve = app.mint_key(&ada.token, &["resolve"]).await;
    let resolve = resolve["api_key"].as_str().unwrap();
    for path in [format!("/v1/byok/get/{id}"), "/v1/byok/list".to_owned()] {
        let response = app.get(&path, resolve).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
    // Only the write key's change happened.
    assert_eq!(list_ids(&app, &ada.token, "").await, [id.as_str()]);
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(
        (tag.as_str(), &config["state"]),
        ("\"2\"", &json!("disabled"))
    );
    assert_eq!(config["label"], Value::Null);
}

#[tokio::test]
async fn every_credential_endpoint_needs_a_token() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let register_body = openai("other", KEY);
    let update_body = json!({"label": "x"});
    let endpoints = [
        (
            Method::POST,
            "/v1/byok/register".to_owned(),
            Some(&register_body),
        ),
        (Method::GET, "/v1/byok/list".to_owned(), None),
        (Method::GET, format!("/v1/byok/get/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/byok/update/{id}"),
            Some(&update_body),
        ),
        (Method::POST, format!("/v1/byok/enable/{id}"), None),
        (Method::POST, format!("/v1/byok/disable/{id}"), None),
        (Method::DELETE, format!("/v1/byok/revoke/{id}"), None),
    ];
    for (method, path, body) in &endpoints {
        let response = call(&app, method.clone(), path, None, None, *body).await;
        assert_error(response, 401, "authentication_error", "missing_token").await;
        let unknown = "kl_000000000000000000000000000000000000000000000000";
        let response = call(&app, method.clone(), path, Some(unknown), None, *body).await;
        assert_error(response, 401, "authentication_error", "invalid_token").await;
        // The operator's token is not an account key.
        let response = call(&app, method.clone(), path, Some(ADMIN_TOKEN), None, *body).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(
        (tag.as_str(), &config["state"]),
        ("\"1\"", &json!("active"))
    );
    assert_eq!(list_ids(&app, &ada.token, "").await.len(), 1);
}

// ---- isolation ----

/// The endpoints that take a credential id, with a request body where they need one.
fn id_endpoints() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "get", None),
        (Method::PATCH, "update", Some(json!({"label": "hijacked"}))),
        (Method::PATCH, "update", Some(json!({}))),
        (Method::POST, "enable", None),
        (Method::POST, "disable", None),
        (Method::DELETE, "revoke", None),
    ]
}

/// Answers the error object of a 404 with the request id removed.
async fn not_found(response: Response) -> Value {
    without_request_id(assert_error(response, 404, "not_found_error", "resource_missing").await)
}

#[tokio::test]
async fn another_accounts_credential_is_answered_like_a_missing_one() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let eve = tenant(&app, "eve@example.com").await;
    let active = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let disabled = register_id(&app, &ada.token, &openai("spare", KEY)).await;
    let response = app
        .post(
            &format!("/v1/byok/disable/{disabled}"),
            Some(&ada.token),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let eve_own = register_id(&app, &eve.token, &openai("eve", KEY)).await;

    let before: Vec<(Value, String)> = vec![
        get_config(&app, &ada.token, &active).await,
        get_config(&app, &ada.token, &disabled).await,
    ];
    let missing = missing_id();
    for (method, endpoint, body) in id_endpoints() {
        for target in [&active, &disabled] {
            let theirs = call(
                &app,
                method.clone(),
                &format!("/v1/byok/{endpoint}/{target}"),
                Some(&eve.token),
                None,
                body.as_ref(),
            )
            .await;
            let theirs = not_found(theirs).await;
            let nobody = call(
                &app,
                method.clone(),
                &format!("/v1/byok/{endpoint}/{missing}"),
                Some(&eve.token),
                None,
                body.as_ref(),
            )
            .await;
            let nobody = not_found(nobody).await;
            assert_eq!(
                theirs, nobody,
                "{endpoint}: another account's id differs from a missing one"
            );
        }
    }
    // Ada's credentials are untouched: same revision, state and secret.
    let after = vec![
        get_config(&app, &ada.token, &active).await,
        get_config(&app, &ada.token, &disabled).await,
    ];
    assert_eq!(after, before);
    for id in [&active, &disabled] {
        assert!(
            app.store.data_key(id).unwrap().is_some(),
            "Eve's revoke shredded Ada's key"
        );
        assert_eq!(
            open_secrets(&app, &ada.account_id, id),
            Some(secrets(&[("api_key", KEY)]))
        );
    }
    // Eve never lists Ada's credentials, whatever the filter.
    for query in [
        "",
        "provider=openai",
        "state=disabled",
        "state=active",
        "limit=1",
    ] {
        let listed = list_ids(&app, &eve.token, query).await;
        assert!(
            !listed.contains(&active) && !listed.contains(&disabled),
            "{query}: {listed:?}"
        );
    }
    assert_eq!(list_ids(&app, &eve.token, "").await, [eve_own.as_str()]);
    // The service refuses Eve too.
    assert!(open_secrets(&app, &eve.account_id, &active).is_none());
}

#[tokio::test]
async fn another_accounts_credential_is_answered_like_a_missing_one_with_if_match_too() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let eve = tenant(&app, "eve@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let missing = missing_id();
    for (method, endpoint, body) in id_endpoints() {
        if endpoint == "get" {
            continue;
        }
        for if_match in ["\"1\"", "\"7\""] {
            let theirs = call(
                &app,
                method.clone(),
                &format!("/v1/byok/{endpoint}/{id}"),
                Some(&eve.token),
                Some(if_match),
                body.as_ref(),
            )
            .await;
            let theirs = not_found(theirs).await;
            let nobody = call(
                &app,
                method.clone(),
                &format!("/v1/byok/{endpoint}/{missing}"),
                Some(&eve.token),
                Some(if_match),
                body.as_ref(),
            )
            .await;
            let nobody = not_found(nobody).await;
            assert_eq!(theirs, nobody, "{endpoint} with If-Match {if_match}");
        }
    }
    let (_, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"1\"");
}

// ---- crypto-shredding ----

#[tokio::test]
async fn revoke_shreds_the_data_key_and_the_log_keeps_only_ciphertext() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let secret = format!("sk-shred-{}", random_hex::<16>());
    let id = register_id(&app, &ada.token, &openai("prod", &secret)).await;
    let stream = StreamId::new("byok", &id);

    let wrapped = app
        .store
        .data_key(&id)
        .unwrap()
        .expect("a data key at registration");
    assert_eq!(
        open_secrets(&app, &ada.account_id, &id),
        Some(secrets(&[("api_key", &secret)]))
    );
    let registered = app.store.stream_events(&stream).unwrap();
    assert_eq!(registered[0].event_type, "byok.registered");
    let sealed_b64 = registered[0].data["sealed_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let sealed = STANDARD.decode(&sealed_b64).unwrap();
    // The sealed secret opens with the data key the master key unwraps, and with nothing else.
    let master = app.settings.master_key.clone();
    let master_bytes = STANDARD.decode(master.to_base64().expose()).unwrap();
    let secret_ad = format!("keyledger/byok/{}/{id}/v1", ada.account_id);
    let dek_ad = format!("keyledger/dek/{}/{id}", ada.account_id);
    let dek = master
        .unwrap_key(&wrapped, dek_ad.as_bytes())
        .expect("the DEK unwraps");
    let plaintext = dek
        .open(secret_ad.as_bytes(), &sealed)
        .expect("the DEK opens the secret");
    assert!(String::from_utf8(plaintext).unwrap().contains(&secret));

    let response = app
        .delete(&format!("/v1/byok/revoke/{id}"), &ada.token)
        .await;
    assert_eq!(response.status(), 200);

    let check = |app: &TestApp| {
        let events = app.store.stream_events(&stream).unwrap();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["byok.registered", "byok.revoked"]);
        // The ciphertext stays in the immutable log...
        assert_eq!(events[0].data["sealed_secret"], sealed_b64.as_str());
        // ...but the key that opened it is gone.
        assert_eq!(app.store.data_key(&id).unwrap(), None);
        assert!(
            credentials(app).open_secrets(&ada.account_id, &id).is_err(),
            "a revoked secret opened"
        );
        for ad in [secret_ad.as_bytes(), dek_ad.as_bytes(), b"".as_slice()] {
            assert!(
                keyledger::crypto::open(&master_bytes, ad, &sealed).is_err(),
                "the master key alone opened the sealed secret"
            );
        }
    };
    check(&app);
    let app = app.restart().await;
    check(&app);
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["state"], "revoked");
}

#[tokio::test]
async fn a_revoked_data_key_is_gone_from_the_disk() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let secret = format!("sk-shred-{}", random_hex::<16>());
    let id = register_id(&app, &ada.token, &openai("prod", &secret)).await;
    let wrapped = app.store.data_key(&id).unwrap().expect("a data key");
    let response = app
        .delete(&format!("/v1/byok/revoke/{id}"), &ada.token)
        .await;
    assert_eq!(response.status(), 200);
    // Some more writes and a restart, as a running server would see.
    let app = app.restart().await;
    for i in 0..20 {
        register_id(&app, &ada.token, &openai(&format!("later{i}"), KEY)).await;
    }
    let (_, dir) = app.stop_and_release().await;
    for file in files(&dir.path().join("data")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes
                .windows(wrapped.len())
                .any(|w| w == wrapped.as_slice()),
            "the revoked credential's wrapped data key is still in {}",
            file.display()
        );
    }
}

#[tokio::test]
async fn keys_left_without_a_live_credential_are_destroyed_on_start() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let live = register_id(&app, &ada.token, &openai("live", KEY)).await;
    let (settings, dir) = app.stop_and_release().await;
    // What a crash between a key's file and its registration leaves behind.
    let keys = settings.data_dir.join("keys");
    std::fs::write(keys.join("byok_01ORPHANED00000000000000"), b"wrapped").unwrap();
    let app = crate::helpers::start(settings, dir).await;
    assert!(!keys.join("byok_01ORPHANED00000000000000").exists());
    assert!(app.store.data_key(&live).unwrap().is_some());
}

// ---- canaries ----

/// Canary secrets and every form in which one could leak: as is, without its `sk-` prefix, in
/// hex, and in base64 (standard and URL-safe, at each of the three byte alignments).
struct Canaries {
    by_head: HashMap<[u8; 4], Vec<(usize, Vec<u8>)>>,
    all: Vec<String>,
}

impl Canaries {
    fn new() -> Self {
        Self {
            by_head: HashMap::new(),
            all: Vec::new(),
        }
    }

    fn mint(&mut self, n: usize) -> String {
        let canary = format!("sk-canary-{n}-{}", random_hex::<12>());
        self.add(&canary);
        canary
    }

    fn add(&mut self, canary: &str) {
        let index = self.all.len();
        self.all.push(canary.to_owned());
        let bytes = canary.as_bytes();
        let mut forms = vec![
            bytes.to_vec(),
            canary.trim_start_matches("sk-").as_bytes().to_vec(),
            hex::encode(bytes).into_bytes(),
        ];
        for skip in 0..3 {
            let part = &bytes[skip..];
            let whole = &part[..part.len() / 3 * 3];
            forms.push(STANDARD_NO_PAD.encode(whole).into_bytes());
            forms.push(URL_SAFE_NO_PAD.encode(whole).into_bytes());
        }
        for form in forms {
            let head: [u8; 4] = form[..4].try_into().unwrap();
            self.by_head.entry(head).or_default().push((index, form));
        }
    }

    /// The first canary found in `haystack`, with the form it was found in.
    fn find(&self, haystack: &[u8]) -> Option<(String, String)> {
        for i in 0..haystack.len().saturating_sub(3) {
            let head: [u8; 4] = haystack[i..i + 4].try_into().unwrap();
            if let Some(forms) = self.by_head.get(&head) {
                for (index, form) in forms {
                    if haystack[i..].starts_with(form) {
                        return Some((
                            self.all[*index].clone(),
                            String::from_utf8_lossy(form).into_owned(),
                        ));
                    }
                }
            }
        }
        None
    }

    fn assert_absent(&self, what: &str, haystack: &[u8]) {
        if let Some((canary, form)) = self.find(haystack) {
            panic!("canary {canary} found in {what} (as {form})");
        }
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Sends a request and keeps its status and body text.
async fn record(
    bodies: &mut Vec<(String, String)>,
    response: Response,
    what: String,
) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    bodies.push((what, text));
    (status, value)
}

fn service_account(private_key_id: &str, private_key: &str) -> String {
    json!({"type": "service_account", "project_id": "p",
        "private_key_id": private_key_id,
        "private_key":
            format!("-----BEGIN PRIVATE KEY-----\n{private_key}\n-----END PRIVATE KEY-----\n"),
        "client_email": "kl@p.iam.gserviceaccount.com"})
    .to_string()
}

/// A register body for credential `n`, with fresh canaries in every secret field.
fn canary_credential(n: usize, canaries: &mut Canaries) -> Value {
    let alias = format!("c{n}");
    match n % 6 {
        0 => openai(&alias, &canaries.mint(n)),
        1 => json!({"provider": "anthropic", "alias": alias,
            "credentials": {"api_key": canaries.mint(n)}, "capability": "chat"}),
        2 => azure(&alias, &canaries.mint(n)),
        3 => {
            let mut body = bedrock(&alias, &canaries.mint(n), &canaries.mint(n));
            body["credentials"]["session_token"] = json!(canaries.mint(n));
            body
        }
        4 => {
            let mut body = self_hosted(&alias, "http://127.0.0.1:11434/v1");
            body["api_key"] = json!(canaries.mint(n));
            body
        }
        _ => json!({"provider": "vertex", "alias": alias, "credentials": {
            "project_id": "my-project", "region": "europe-west4",
            "service_account_json": service_account(&canaries.mint(n), &canaries.mint(n))}}),
    }
}

#[tokio::test]
async fn canary_secrets_never_leave_the_seal() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let mut canaries = Canaries::new();
    let mut bodies: Vec<(String, String)> = Vec::new();
    let mut ids = Vec::new();
    for n in 0..100 {
        let body = canary_credential(n, &mut canaries);
        let response = call(
            &app,
            Method::POST,
            "/v1/byok/register",
            Some(&ada.token),
            None,
            Some(&body),
        )
        .await;
        let (status, key) = record(&mut bodies, response, format!("register {n}")).await;
        assert_eq!(status, 201, "{key}");
        ids.push(key["byok_id"].as_str().unwrap().to_owned());
    }
    // Refused attempts that carry canaries.
    let refused = [
        json!({"provider": "openai", "alias": "bad",
            "api_key": format!("{} tail", canaries.mint(900))}),
        json!({"provider": canaries.mint(901), "alias": "bad", "api_key": canaries.mint(902)}),
        json!({"provider": "openai", "alias": "bad",
            "credentials": {canaries.mint(903): canaries.mint(904)}}),
        json!({"provider": "openai", "alias": "bad", "api_key": canaries.mint(905),
            "weight": canaries.mint(906)}),
        json!({"provider": "openai", "alias": format!("{} !", canaries.mint(909)),
            "api_key": canaries.mint(910)}),
        json!({"provider": "openai", "alias": "bad", "api_key": canaries.mint(911),
            "base_url": format!("https://{}@api.example.com", canaries.mint(912))}),
    ];
    for body in &refused {
        let response = call(
            &app,
            Method::POST,
            "/v1/byok/register",
            Some(&ada.token),
            None,
            Some(body),
        )
        .await;
        let (status, _) = record(&mut bodies, response, format!("refused {body}")).await;
        assert!((400..500).contains(&status), "{status} for {body}");
    }
    // Updates, including refused attempts to slip a secret in.
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 4 == 0) {
        let response = call(
            &app,
            Method::PATCH,
            &format!("/v1/byok/update/{id}"),
            Some(&ada.token),
            None,
            Some(&json!({"label": format!("updated {i}"), "weight": 10 + i})),
        )
        .await;
        let (status, _) = record(&mut bodies, response, format!("update {i}")).await;
        assert_eq!(status, 200);
        let sneaky = canaries.mint(1000 + i);
        let response = call(
            &app,
            Method::PATCH,
            &format!("/v1/byok/update/{id}"),
            Some(&ada.token),
            None,
            Some(&json!({"credentials": {"api_key": &sneaky, "access_key": &sneaky}})),
        )
        .await;
        let (status, _) = record(&mut bodies, response, format!("sneaky update {i}")).await;
        assert_eq!(status, 422);
    }
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let response = app
            .delete(&format!("/v1/byok/revoke/{id}"), &ada.token)
            .await;
        let (status, _) = record(&mut bodies, response, format!("revoke {i}")).await;
        assert_eq!(status, 200);
    }
    for id in &ids {
        let response = app.get(&format!("/v1/byok/get/{id}"), &ada.token).await;
        let (status, _) = record(&mut bodies, response, format!("get {id}")).await;
        assert_eq!(status, 200);
    }
    let mut cursor = String::new();
    let mut listed = 0;
    loop {
        let response = app
            .get(&format!("/v1/byok/list?limit=7{cursor}"), &ada.token)
            .await;
        let (status, page) = record(&mut bodies, response, "list".into()).await;
        assert_eq!(status, 200);
        listed += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(listed, 100);
    // The test itself would notice a canary: a live secret is still readable by the service.
    let live = &ids[1];
    let opened = open_secrets(&app, &ada.account_id, live).unwrap();
    assert!(
        canaries
            .find(serde_json::to_string(&opened).unwrap().as_bytes())
            .is_some(),
        "the canary scan does not see a canary"
    );

    for (what, text) in &bodies {
        canaries.assert_absent(&format!("the response to {what}"), text.as_bytes());
    }
    let last = app.store.last_position().unwrap();
    assert!(last >= 100 + 25 + 34, "only {last} events");
    for position in 1..=last {
        let event = app.store.event(position).unwrap().expect("gap-free log");
        let json = serde_json::to_string(&event).unwrap();
        canaries.assert_absent(
            &format!("event {position} ({})", event.event_type),
            json.as_bytes(),
        );
    }

    let (_, dir) = app.stop_and_release().await;
    let data = files(&dir.path().join("data"));
    assert!(!data.is_empty());
    let mut scanned = 0;
    for file in data {
        let bytes = std::fs::read(&file).unwrap();
        scanned += bytes.len();
        canaries.assert_absent(&format!("file {}", file.display()), &bytes);
    }
    assert!(scanned > 0);
}

#[tokio::test]
async fn an_unknown_field_name_is_never_echoed() {
    let app = spawn_app().await;
    let ada = tenant(&app, "ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let mut canaries = Canaries::new();
    let mut register = openai("other", KEY);
    register[canaries.mint(1)] = json!(1);
    let update = json!({canaries.mint(2): "x"});
    for (method, path, body) in [
        (Method::POST, "/v1/byok/register".to_owned(), register),
        (Method::PATCH, format!("/v1/byok/update/{id}"), update),
    ] {
        let response = call(&app, method, &path, Some(&ada.token), None, Some(&body)).await;
        assert_eq!(response.status(), 422);
        let text = response.text().await.unwrap();
        canaries.assert_absent(&format!("the error of {path}"), text.as_bytes());
    }
}

/// The real binary, its output captured to files, killed when dropped.
struct Binary {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    fn start(dir: &Path) -> Self {
        let stdout = dir.join("stdout.log");
        let stderr = dir.join("stderr.log");
        let master_key = MasterKey::generate().to_base64();
        let child = serve_command(&dir.join("data"), master_key.expose())
            .env("RUST_LOG", "debug")
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start keyledger");
        Self {
            child,
            stdout,
            stderr,
        }
    }

    /// Starts the binary and creates an account; answers the server, its address, a client and
    /// the account's API key.
    async fn start_with_account(dir: &Path) -> (Self, String, reqwest::Client, String) {
        let mut server = Self::start(dir);
        let address = server.address().await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let created: Value = client
            .post(format!("{address}/v1/accounts"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"email": "ada@example.com"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = created["api_key"].as_str().unwrap().to_owned();
        (server, address, client, token)
    }

    async fn address(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if let Some(line) = out.lines().find(|l| l.starts_with(LISTENING)) {
                return line[LISTENING.len()..].trim().to_owned();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "keyledger exited with {status}: {}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "keyledger did not listen within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The bytes without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'[') {
            i += 2;
            while i < bytes.len() && !bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn canary_secrets_never_reach_the_server_log() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address, client, token) = Binary::start_with_account(dir.path()).await;

    let mut canaries = Canaries::new();
    let mut bedrock_body = bedrock("bed", &canaries.mint(1), &canaries.mint(2));
    bedrock_body["credentials"]["session_token"] = json!(canaries.mint(3));
    let accepted = [
        openai("prod", &canaries.mint(0)),
        bedrock_body,
        azure("az", &canaries.mint(4)),
    ];
    let refused = [
        // a canary in a field of the wrong type
        json!({"provider": "openai", "alias": "a", "api_key": canaries.mint(10),
            "weight": canaries.mint(11)}),
        json!({"provider": "openai", "alias": "a", "api_key": canaries.mint(12),
            "models": canaries.mint(13)}),
        // a canary as an unknown field name
        json!({"provider": "openai", "alias": "a", "api_key": canaries.mint(14),
            canaries.mint(15): "x"}),
        json!({"provider": "openai", "alias": "a",
            "credentials": {canaries.mint(16): canaries.mint(17)}}),
        // a canary as the provider
        json!({"provider": canaries.mint(18), "alias": "a", "api_key": canaries.mint(19)}),
        // a canary that fails validation as a secret
        json!({"provider": "openai", "alias": "a", "api_key": format!("{} x", canaries.mint(20))}),
    ];
    let mut ids = Vec::new();
    for body in &accepted {
        let response = client
            .post(format!("{address}/v1/byok/register"))
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let key: Value = response.json().await.unwrap();
        ids.push(key["byok_id"].as_str().unwrap().to_owned());
    }
    for body in &refused {
        let response = client
            .post(format!("{address}/v1/byok/register"))
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{status} for {body}");
    }
    // Malformed JSON around a canary, a canary sent as the bearer token, a refused update.
    let broken = format!(
        "{{\"provider\": \"openai\", \"api_key\": \"{}",
        canaries.mint(30)
    );
    let response = client
        .post(format!("{address}/v1/byok/register"))
        .bearer_auth(&token)
        .header(CONTENT_TYPE, "application/json")
        .body(broken)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = client
        .get(format!("{address}/v1/byok/list"))
        .bearer_auth(canaries.mint(31))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client
        .patch(format!("{address}/v1/byok/update/{}", ids[0]))
        .bearer_auth(&token)
        .json(&json!({"credentials": {"api_key": canaries.mint(32)}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = client
        .delete(format!("{address}/v1/byok/revoke/{}", ids[1]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Give the last log lines a moment, then stop the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stdout_path = server.stdout.clone();
    let stderr_path = server.stderr.clone();
    drop(server);
    // Colour codes could split a value; the scan reads the text a person would.
    let stdout = strip_ansi(&std::fs::read(&stdout_path).unwrap());
    let stderr = strip_ansi(&std::fs::read(&stderr_path).unwrap());
    let text = String::from_utf8_lossy(&stderr);
    // The log did record the requests, at debug level: the scan looked at something.
    assert!(
        text.matches("request finished").count() >= 13,
        "the server log misses requests:\n{text}"
    );
    assert!(text.contains("DEBUG"), "RUST_LOG=debug was not in effect");
    canaries.assert_absent("the server's stdout", &stdout);
    canaries.assert_absent("the server's stderr", &stderr);
}

#[tokio::test]
async fn a_secret_pasted_as_an_id_never_reaches_the_server_log() {
    let dir = tempfile::tempdir().unwrap();
    let (server, address, client, token) = Binary::start_with_account(dir.path()).await;
    let mut canaries = Canaries::new();
    let response = client
        .get(format!("{address}/v1/byok/get/{}", canaries.mint(0)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stderr_path = server.stderr.clone();
    drop(server);
    let stderr = strip_ansi(&std::fs::read(&stderr_path).unwrap());
    assert!(String::from_utf8_lossy(&stderr).contains("request finished"));
    canaries.assert_absent("the server's stderr", &stderr);
}
