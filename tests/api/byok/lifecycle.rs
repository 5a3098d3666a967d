//! Changing a credential: `update` (fields given change, `null` clears, validation, no secret
//! through it), `disable` / `enable` with their no-op repeats, and `revoke`, idempotent and final.

use keyledger::es::StreamId;
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    KEY, ada_with, ada_with_credential, azure, bedrock, call, get_config, list_ids, open_secrets,
    secrets, time, update,
};
use crate::helpers::{assert_error, etag, json_of, register_id};

#[tokio::test]
async fn update_changes_the_fields_given_and_null_clears() {
    let body = json!({"provider": "openai", "alias": "prod", "api_key": KEY, "label": "Old",
        "models": ["gpt-4o"], "credentials": {"organization": "org-1"}, "capability": "chat"});
    let (app, ada, key) = ada_with(&body).await;
    let id = key["byok_id"].as_str().unwrap();
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
    let response = update(&app, &ada.token, id, &patch).await;
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
    assert_eq!(updated["secret_version"], 1);
    assert_eq!(updated["secret_hint"], "WXYZ");
    assert_eq!(updated["bindings"], json!([{"capability": "chat"}]));
    assert_eq!(updated["created_at"], key["created_at"]);
    assert!(time(&updated["updated_at"]) > time(&key["created_at"]));
    // get agrees with the answer.
    let (config, tag) = get_config(&app, &ada.token, id).await;
    assert_eq!(tag, "\"2\"");
    assert_eq!(config, updated);

    // null clears; an empty optional setting removes it.
    let clear = json!({"label": null, "base_url": null, "declared_region": null,
        "credentials": {"project": ""}});
    let response = update(&app, &ada.token, id, &clear).await;
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
        let response = update(&app, &ada.token, id, &nothing).await;
        assert_eq!(response.status(), 200);
        assert_eq!(etag(&response), "\"3\"", "{nothing}");
        let same = json_of(response).await;
        assert_eq!(same["updated_at"], cleared["updated_at"]);
    }
}

#[tokio::test]
async fn update_validates_what_it_changes() {
    let (app, ada, id) = ada_with_credential().await;
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
        let response = update(&app, &ada.token, target, &patch).await;
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
    let (app, ada, id) = ada_with_credential().await;
    let (access_key, secret_key) = (
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    let bed = register_id(&app, &ada.token, &bedrock("bed", access_key, secret_key)).await;
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
        let response = update(&app, &ada.token, target, &patch).await;
        let error = assert_error(response, 422, "invalid_request_error", code).await;
        assert_eq!(error["param"], param, "{patch}");
        assert!(!error["message"].as_str().unwrap().contains(replacement));
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(
        (tag.as_str(), &config["secret_version"]),
        ("\"1\"", &json!(1))
    );
    assert_eq!(config["secret_hint"], "WXYZ");
    assert_eq!(
        open_secrets(&app, &ada.account_id, &id),
        Some(secrets(&[("api_key", KEY)]))
    );
    assert_eq!(
        open_secrets(&app, &ada.account_id, &bed),
        Some(secrets(&[
            ("access_key", access_key),
            ("secret_key", secret_key)
        ]))
    );
}

#[tokio::test]
async fn disable_and_enable_change_the_state_and_repeats_are_no_ops() {
    let (app, ada, id) = ada_with_credential().await;
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
        let path = format!("/v1/byok/{endpoint}/{id}");
        let response = app.fetch(Method::POST, &path, Some(&ada.token)).await;
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
    let (app, ada, id) = ada_with_credential().await;
    let path = format!("/v1/byok/revoke/{id}");
    let mut answers = Vec::new();
    for _ in 0..2 {
        let response = app.delete(&path, &ada.token).await;
        assert_eq!(response.status(), 200);
        assert_eq!(etag(&response), "\"2\"");
        answers.push(json_of(response).await);
    }
    let first = &answers[0];
    assert_eq!(first["state"], "revoked");
    assert_eq!(answers[1], *first);

    for (method, endpoint, body) in [
        (Method::PATCH, "update", Some(json!({"label": "back"}))),
        (Method::PATCH, "update", Some(json!({}))),
        (Method::POST, "enable", None),
        (Method::POST, "disable", None),
    ] {
        let path = format!("/v1/byok/{endpoint}/{id}");
        let response = call(&app, method, &path, Some(&ada.token), None, body.as_ref()).await;
        assert_error(response, 409, "conflict_error", "credential_revoked").await;
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"2\"");
    assert_eq!(config, *first);
    assert_eq!(
        list_ids(&app, &ada.token, "state=revoked").await,
        [id.as_str()]
    );
    assert!(list_ids(&app, &ada.token, "state=active").await.is_empty());
}
