//! The `/v1/byok` credential contract as its clients see it: every endpoint, every validation
//! rule, `If-Match` on every mutation, scopes, isolation between accounts, crypto-shredding on
//! revoke, and canary secrets that must never surface in a response, an event, a file of the
//! data dir or a log line.
//!
//! One file per concern; this one holds what they share: an account with a credential, request
//! shortcuts, register bodies, the fields a configuration shows, and opening secrets through the
//! service.

mod access;
mod bindings;
mod canaries;
mod health;
mod if_match;
mod lifecycle;
mod list;
mod nulls;
mod policy;
mod probes;
mod quota;
mod register;
mod resolve;
mod rotation;
mod shredding;
mod usage;
mod validation;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use keyledger::domain::{AccountId, CredentialId};
use keyledger::service::clock::{SharedClock, SystemClock};
use keyledger::service::credentials::Credentials;
use keyledger::service::ids::Ids;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use crate::helpers::{
    Tenant, TestApp, assert_error, etag, json_of, openai, register, send, spawn_app,
};

/// A server with Ada's account and the credential `body` registers; answers the 201 body too.
async fn ada_with(body: &Value) -> (TestApp, Tenant, Value) {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let (key, _) = register(&app, &ada.token, body).await;
    (app, ada, key)
}

/// A server with Ada's account and her OpenAI credential `prod` (secret [`KEY`]); answers the
/// credential's id too.
async fn ada_with_credential() -> (TestApp, Tenant, String) {
    let (app, ada, key) = ada_with(&openai("prod", KEY)).await;
    let id = key["byok_id"].as_str().unwrap().to_owned();
    (app, ada, id)
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
    let headers = if_match.map(|value| ("If-Match", value));
    send(app, method, path, token, headers.as_slice(), body).await
}

/// `PATCH /v1/byok/update/{id}` with `patch`; answers the response, whatever it is.
async fn update(app: &TestApp, token: &str, id: &str, patch: &Value) -> Response {
    let path = format!("/v1/byok/update/{id}");
    call(app, Method::PATCH, &path, Some(token), None, Some(patch)).await
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
    byok_ids(&list_all(app, token, query).await)
}

/// The ids of listed configurations, in list order.
fn byok_ids(items: &[Value]) -> Vec<String> {
    items
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

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {value}"))
        .with_timezone(&Utc)
}

fn credentials(app: &TestApp) -> Credentials {
    let clock: SharedClock = Arc::new(SystemClock);
    let ids = Arc::new(Ids::new(clock.clone()));
    Credentials::new(
        app.store.clone(),
        app.settings.master_key.clone(),
        clock,
        ids,
    )
}

fn open_secrets(
    app: &TestApp,
    account_id: &str,
    byok_id: &str,
) -> Option<BTreeMap<String, String>> {
    credentials(app)
        .open_secrets(
            &AccountId::parse(account_id).unwrap(),
            &CredentialId::parse(byok_id).unwrap(),
        )
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
const CONFIG_FIELDS: [&str; 30] = [
    "byok_id",
    "provider",
    "alias",
    "label",
    "state",
    "secret_version",
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
    "model_map",
    "created_at",
    "updated_at",
    "quota",
    "quota_exceeded",
    "last_test",
    "pending_rotation",
    "previous_secret",
    // Health (docs/health.md).
    "health",
    "health_until",
    "health_changed_at",
    "health_cause",
    "health_error",
];

/// Answers the error object of a 404 with the request id removed.
async fn not_found(response: Response) -> Value {
    without_request_id(assert_error(response, 404, "not_found_error", "resource_missing").await)
}
