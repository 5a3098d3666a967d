//! Registering a credential and reading it back: the 201 and its `ETag`, several credentials
//! per provider, the `api_key` shorthand, bindings, `GET /v1/byok/get/{id}` showing every setting
//! and never the secret, residency, an unknown id, and the public provider catalog.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    CONFIG_FIELDS, KEY, ada_with, get_config, list_ids, missing_id, open_secrets, secrets,
    self_hosted, time,
};
use crate::helpers::{
    assert_error, assert_json, etag, keys_of, openai, register_id, register_response, set,
    spawn_app,
};

#[tokio::test]
async fn register_answers_201_with_a_byok_key_and_revision_1() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let before = Utc::now();
    let response = register_response(&app, &ada.token, &openai("prod-main", KEY)).await;
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
    let ada = app.tenant("ada@example.com").await;
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
    let ada = app.tenant("ada@example.com").await;
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
    let response = register_response(
        &app,
        &ada.token,
        &json!({"provider": "openai", "alias": "clash", "api_key": KEY,
            "credentials": {"api_key": "sk-proj-another-key-0000"}}),
    )
    .await;
    let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
    assert_eq!(error["param"], "api_key");
    assert!(!error["message"].as_str().unwrap().contains("sk-proj"));
}

#[tokio::test]
async fn register_records_the_initial_binding() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
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

#[tokio::test]
async fn get_shows_the_whole_configuration_and_never_the_secret() {
    let (app, ada, key) = ada_with(&json!({
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
    }))
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
            "secret_version": 1,
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
            "model_map": {},
            "created_at": key["created_at"],
            "updated_at": key["created_at"],
            "quota": null,
            "quota_exceeded": null,
            "last_test": null,
            "pending_rotation": null,
            "previous_secret": null,
            "health": "unknown",
            "health_until": null,
            "health_changed_at": null,
            "health_cause": null,
            "health_error": null,
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
    let ada = app.tenant("ada@example.com").await;
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
    let ada = app.tenant("ada@example.com").await;
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

#[tokio::test]
async fn the_provider_catalog_is_public_and_lists_every_provider() {
    let app = spawn_app().await;
    let response = app.fetch(Method::GET, "/v1/byok/providers", None).await;
    let body = assert_json(response, 200).await;
    let items = body["items"].as_array().unwrap();
    let by_id: BTreeMap<&str, &Value> = items
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    assert_eq!(by_id.len(), items.len(), "duplicate provider ids");
    // The providers that take nothing but an API key (and an optional base URL).
    let hosted = [
        "anthropic",
        "together",
        "groq",
        "mistral",
        "deepseek",
        "cohere",
        "openrouter",
        "sarvam",
    ];
    let others = ["openai", "azure", "bedrock", "vertex", "self_hosted"];
    assert_eq!(
        by_id.keys().copied().collect::<BTreeSet<_>>(),
        hosted.into_iter().chain(others).collect()
    );
    let fields = |id: &str, which: &str| -> Vec<String> {
        by_id[id][which]
            .as_array()
            .unwrap_or_else(|| panic!("{id} has no {which}"))
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect()
    };
    for hosted in hosted {
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
