//! Every validation rule answering a 422 that names the field, plain `http` only for local and
//! private hosts, and malformed bodies answering the error envelope.

use reqwest::Method;
use serde_json::{Value, json};

use super::{KEY, ada_with_credential, azure, bedrock, get_config, list_ids, self_hosted, update};
use crate::helpers::{
    assert_error, assert_not_json, openai, register_id, register_response, send_raw, spawn_app,
};

#[tokio::test]
async fn every_validation_rule_is_a_422_naming_the_field() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
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
        let response = register_response(&app, &ada.token, body).await;
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
    let ada = app.tenant("ada@example.com").await;
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
    let (app, ada, id) = ada_with_credential().await;
    let update_path = format!("/v1/byok/update/{id}");
    for (method, path) in [
        (Method::POST, "/v1/byok/register".to_owned()),
        (Method::PATCH, update_path),
    ] {
        let raw = |content_type: &'static str, body: String| {
            let (method, token) = (method.clone(), Some(ada.token.as_str()));
            send_raw(&app, method, &path, token, Some(content_type), body)
        };
        // The last one is a complete, valid request followed by garbage.
        let trailing = if method == Method::POST {
            format!("{} trailing", openai("trailing", KEY))
        } else {
            "{\"label\": \"x\"} trailing".to_owned()
        };
        for body in ["{", "", "{\"label\": }", trailing.as_str()] {
            let response = raw("application/json", body.into()).await;
            assert_error(response, 400, "invalid_request_error", "invalid_json").await;
        }
        let response = raw("text/plain", "{}".into()).await;
        assert_not_json(response).await;
        let huge = json!({"label": "x".repeat(80 * 1024)}).to_string();
        let response = raw("application/json", huge).await;
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
        let response = register_response(&app, &ada.token, &body).await;
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
        let response = update(&app, &ada.token, &id, &body).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
        assert_eq!(error["param"], param, "{body}");
    }
    // Nothing changed and nothing else was created.
    let (_, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"1\"");
    assert_eq!(list_ids(&app, &ada.token, "").await, [id]);
}
