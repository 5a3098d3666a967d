//! Every answer that shows a secret (resolve's plaintext, an API key or a webhook signing secret
//! shown once, a retry of one with its idempotency key) says `Cache-Control: no-store`; the
//! answers that show none do not need to.

use reqwest::{Method, Response};
use serde_json::json;

use crate::helpers::{
    ADMIN_TOKEN, TestApp, assert_json, header, openai, register_id, send, spawn_app,
};

fn cache_control(response: &Response) -> Option<String> {
    header(response, "cache-control")
}

/// Sends `POST path` with `body` and checks that the answer, of `status`, is never cached.
async fn never_cached(
    app: &TestApp,
    token: &str,
    path: &str,
    body: &serde_json::Value,
    status: u16,
) {
    // One key per request: a key names one request in its account.
    let key = format!("shown-once {path}");
    let headers = [("Idempotency-Key", key.as_str())];
    for attempt in ["first", "retry"] {
        let response = send(app, Method::POST, path, Some(token), &headers, Some(body)).await;
        assert_eq!(
            cache_control(&response).as_deref(),
            Some("no-store"),
            "{attempt} of POST {path}: {}",
            response.status()
        );
        assert_json(response, status).await;
    }
}

#[tokio::test]
async fn answers_that_show_a_secret_are_never_cached() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    never_cached(
        &app,
        ADMIN_TOKEN,
        "/v1/accounts",
        &json!({"email": "bob@example.com"}),
        201,
    )
    .await;
    let mint = json!({"name": "gateway", "scopes": ["resolve"]});
    never_cached(&app, &ada.token, "/v1/account/keys", &mint, 201).await;
    let hook = json!({"url": "https://93.184.215.14/hook", "events": ["byok.revoked"]});
    never_cached(&app, &ada.token, "/v1/webhooks", &hook, 201).await;
    let hooks = app.get_json("/v1/webhooks", &ada.token).await;
    let id = hooks["items"][0]["webhook_id"].as_str().unwrap().to_owned();
    let rotate = format!("/v1/webhooks/{id}/rotate-secret");
    never_cached(&app, &ada.token, &rotate, &json!({}), 200).await;

    register_id(
        &app,
        &ada.token,
        &openai("prod", "sk-proj-0123456789abcdefWXYZ"),
    )
    .await;
    let resolver = app.mint_token(&ada.token, &["resolve"]).await;
    let response = app
        .post("/v1/byok/resolve", Some(&resolver), &json!({}))
        .await;
    assert_eq!(cache_control(&response).as_deref(), Some("no-store"));
    assert_json(response, 200).await;
    // A configuration shows no secret.
    let listed = app.get("/v1/byok/list", &ada.token).await;
    assert_eq!(cache_control(&listed), None);
}
