//! `null` in an update, field by field: it clears a field the credential can hold without a
//! value (`label`, `base_url`, `declared_region`, an optional setting in `credentials`), and is
//! a 422 naming the field on one that always has a value (`alias`, `weight`, `models`,
//! `blacklisted_models`, a required setting, `credentials` itself) or that the provider
//! requires. A refused update changes nothing.

use reqwest::Method;
use serde_json::{Value, json};

use super::{KEY, azure, call, get_config, self_hosted};
use crate::helpers::{TestApp, assert_error, json_of, register, register_id, spawn_app};

async fn patch(app: &TestApp, token: &str, id: &str, body: &Value) -> reqwest::Response {
    call(
        app,
        Method::PATCH,
        &format!("/v1/byok/update/{id}"),
        Some(token),
        None,
        Some(body),
    )
    .await
}

#[tokio::test]
async fn null_clears_what_can_be_empty_and_is_a_422_elsewhere() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let (key, _) = register(
        &app,
        &ada.token,
        &json!({"provider": "openai", "alias": "prod", "api_key": KEY, "label": "Main",
            "base_url": "https://proxy.example.com/v1", "declared_region": "eu",
            "models": ["gpt-4o"], "blacklisted_models": ["o1"], "weight": 300,
            "credentials": {"organization": "org-1", "project": "proj_1"}}),
    )
    .await;
    let id = key["byok_id"].as_str().unwrap();
    let az = register_id(&app, &ada.token, &azure("az", KEY)).await;
    let local = register_id(
        &app,
        &ada.token,
        &self_hosted("lab", "http://127.0.0.1:8000/v1"),
    )
    .await;
    let (original, _) = get_config(&app, &ada.token, id).await;

    let refused = [
        (id, json!({"alias": null}), "alias", "invalid_body"),
        (id, json!({"weight": null}), "weight", "invalid_body"),
        (id, json!({"models": null}), "models", "invalid_body"),
        (
            id,
            json!({"blacklisted_models": null}),
            "blacklisted_models",
            "invalid_body",
        ),
        (
            id,
            json!({"credentials": null}),
            "credentials",
            "invalid_body",
        ),
        (
            id,
            json!({"label": null, "weight": null}),
            "weight",
            "invalid_body",
        ),
        (
            &az,
            json!({"credentials": {"endpoint": null}}),
            "credentials.endpoint",
            "invalid_parameter",
        ),
        (
            &local,
            json!({"base_url": null}),
            "base_url",
            "invalid_parameter",
        ),
        (
            &local,
            json!({"declared_region": null}),
            "declared_region",
            "invalid_parameter",
        ),
    ];
    for (target, body, param, code) in refused {
        let response = patch(&app, &ada.token, target, &body).await;
        let error = assert_error(response, 422, "invalid_request_error", code).await;
        assert_eq!(error["param"], param, "{body}");
        let (_, tag) = get_config(&app, &ada.token, target).await;
        assert_eq!(tag, "\"1\"", "{body} changed the credential");
    }
    assert_eq!(get_config(&app, &ada.token, id).await.0, original);

    let response = patch(
        &app,
        &ada.token,
        id,
        &json!({"label": null, "base_url": null, "declared_region": null,
            "credentials": {"project": null}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let cleared = json_of(response).await;
    assert_eq!(cleared["label"], Value::Null);
    assert_eq!(cleared["base_url"], Value::Null);
    assert_eq!(cleared["declared_region"], Value::Null);
    assert_eq!(cleared["residency"], "global");
    assert_eq!(cleared["settings"], json!({"organization": "org-1"}));
    // Every field that was not null is as it was.
    for field in [
        "alias",
        "weight",
        "models",
        "blacklisted_models",
        "secret_hint",
    ] {
        assert_eq!(cleared[field], original[field], "{field}");
    }
    assert_eq!(cleared["revision"], 2);
}
