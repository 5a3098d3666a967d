//! Webhooks (docs/design.md §7, docs/adr/0029): the endpoints API, signatures checked by the
//! Standard Webhooks reference library, retries, redelivery, 410, a hung receiver beside a
//! healthy one, SSRF refusals at creation and at delivery, and deliveries across SIGKILL. Every
//! receiver is a real HTTP server on 127.0.0.1 (`helpers::fake_provider`).

mod crash;
mod endpoints;
mod rebuild;
mod retries;
mod signatures;
mod ssrf;

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_json, openai, register_id, send, spawn_app_with};

/// The retry schedule's scale in these tests: 5 s becomes 5 ms, 5 min 300 ms, 30 min 1.8 s.
pub const SCALE: f64 = 0.001;

/// A server that may deliver to 127.0.0.1 (the receivers), with the schedule scaled down.
pub async fn private_app() -> TestApp {
    spawn_app_with(|s| {
        s.outbound.allow_private_urls = true;
        s.webhooks.retry_scale = SCALE;
    })
    .await
}

/// Creates an endpoint and answers the 201 body (with its secret).
pub async fn create_hook(app: &TestApp, token: &str, url: &str, events: &[&str]) -> Value {
    let body = json!({"url": url, "events": events});
    assert_json(app.post("/v1/webhooks", Some(token), &body).await, 201).await
}

pub fn id_of(hook: &Value) -> String {
    hook["webhook_id"].as_str().unwrap().to_owned()
}

/// An event every `*` endpoint takes: a credential registered; answers its id.
pub async fn some_event(app: &TestApp, token: &str, alias: &str) -> String {
    register_id(app, token, &openai(alias, "sk-test-0123456789abcdef")).await
}

/// The endpoint's delivery log, newest first.
pub async fn delivery_log(app: &TestApp, token: &str, webhook_id: &str) -> Vec<Value> {
    let path = format!("/v1/webhooks/{webhook_id}/deliveries?limit=500");
    let page = assert_json(app.get(&path, token).await, 200).await;
    page["items"].as_array().unwrap().clone()
}

/// Polls `check` every 20 ms until it answers `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `POST` with no body, answering the response.
pub async fn post_empty(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    send(app, Method::POST, path, Some(token), &[], None).await
}
