//! Registering provider credentials and changing their state, for the tests that need one to
//! exist (or to be disabled or revoked).

use reqwest::{Method, Response};
use serde_json::{Value, json};

use super::TestApp;
use super::requests::{assert_json, etag, json_of, send};

/// An OpenAI credential's register body.
pub fn openai(alias: &str, key: &str) -> Value {
    json!({"provider": "openai", "alias": alias, "api_key": key})
}

/// Sends `POST /v1/byok/register` and answers the response, whatever it is.
pub async fn register_response(app: &TestApp, token: &str, body: &Value) -> Response {
    send(
        app,
        Method::POST,
        "/v1/byok/register",
        Some(token),
        &[],
        Some(body),
    )
    .await
}

/// Registers and answers (the 201 body, the ETag); anything but a 201 fails the test, naming
/// the answer.
pub async fn register(app: &TestApp, token: &str, body: &Value) -> (Value, String) {
    let response = register_response(app, token, body).await;
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

/// Registers and answers the new credential's id.
pub async fn register_id(app: &TestApp, token: &str, body: &Value) -> String {
    register(app, token, body).await.0["byok_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `POST /v1/byok/disable/{id}` (no body), which must answer 200; answers the configuration.
pub async fn disable(app: &TestApp, token: &str, id: &str) -> Value {
    let path = format!("/v1/byok/disable/{id}");
    assert_json(app.fetch(Method::POST, &path, Some(token)).await, 200).await
}

/// `DELETE /v1/byok/revoke/{id}`, which must answer 200; answers the configuration.
pub async fn revoke(app: &TestApp, token: &str, id: &str) -> Value {
    let path = format!("/v1/byok/revoke/{id}");
    assert_json(app.delete(&path, token).await, 200).await
}
