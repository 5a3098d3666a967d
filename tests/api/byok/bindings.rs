//! Bindings and model maps: `bind` adds a binding (binding it again is a no-op), `unbind`
//! removes every binding of a capability and module whatever its model (none matching is a
//! no-op), both under `If-Match` and idempotency keys like every change; the model map on
//! register, update (replace, `null` clears) and get; scopes and isolation between accounts.

use reqwest::Method;
use serde_json::{Value, json};

use super::{KEY, ada_with, ada_with_credential, call, get_config, missing_id, not_found, update};
use crate::helpers::{assert_error, etag, json_of, openai, revoke, send};

async fn post(
    app: &crate::helpers::TestApp,
    token: &str,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    call(app, Method::POST, path, Some(token), None, Some(body)).await
}

/// The credential's event types, oldest first.
async fn event_types(
    app: &crate::helpers::TestApp,
    token: &str,
    path: &str,
) -> Vec<(String, Value)> {
    let page = app.get_json(path, token).await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"].clone()))
        .collect()
}

#[tokio::test]
async fn bind_adds_a_binding_and_binding_it_again_is_a_no_op() {
    let body = json!({"provider": "openai", "alias": "prod", "api_key": KEY, "capability": "chat"});
    let (app, ada, key) = ada_with(&body).await;
    let id = key["byok_id"].as_str().unwrap();
    let path = format!("/v1/byok/bind/{id}");
    let binding = json!({"capability": "chat", "module": "support-bot", "model": "gpt-4o"});
    let response = post(&app, &ada.token, &path, &binding).await;
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), "\"2\"");
    let bound = json_of(response).await;
    assert_eq!(bound["revision"], 2);
    assert_eq!(
        bound["bindings"],
        json!([{"capability": "chat"}, binding.clone()]),
        "the register body's binding is kept"
    );
    let (config, _) = get_config(&app, &ada.token, id).await;
    assert_eq!(config, bound);

    // Again: the same configuration, no new revision, no event.
    let again = post(&app, &ada.token, &path, &binding).await;
    assert_eq!(again.status(), 200);
    assert_eq!(etag(&again), "\"2\"");
    assert_eq!(json_of(again).await, bound);

    let events = event_types(&app, &ada.token, &format!("/v1/byok/events/{id}")).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["byok.registered", "byok.bound"]);
    assert_eq!(events[1].1["binding"], binding);
    assert_eq!(events[1].1["byok_id"], id);
    let feed = event_types(&app, &ada.token, "/v1/events?types=byok.bound").await;
    assert_eq!(feed.len(), 1, "the account's feed has it");
}

#[tokio::test]
async fn unbind_removes_every_binding_of_the_capability_and_module() {
    let body = json!({"provider": "openai", "alias": "prod", "api_key": KEY, "capability": "chat"});
    let (app, ada, key) = ada_with(&body).await;
    let id = key["byok_id"].as_str().unwrap();
    for binding in [
        json!({"capability": "chat", "model": "gpt-4o"}),
        json!({"capability": "chat", "module": "support-bot"}),
    ] {
        let response = post(&app, &ada.token, &format!("/v1/byok/bind/{id}"), &binding).await;
        assert_eq!(response.status(), 200);
    }
    let path = format!("/v1/byok/unbind/{id}");
    let response = post(&app, &ada.token, &path, &json!({"capability": "chat"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), "\"4\"");
    let unbound = json_of(response).await;
    assert_eq!(
        unbound["bindings"],
        json!([{"capability": "chat", "module": "support-bot"}])
    );
    // Nothing left that matches: a no-op (docs/adr/0021).
    let again = post(&app, &ada.token, &path, &json!({"capability": "chat"})).await;
    assert_eq!(again.status(), 200);
    assert_eq!(etag(&again), "\"4\"");
    assert_eq!(json_of(again).await, unbound);

    let events = event_types(&app, &ada.token, &format!("/v1/byok/events/{id}")).await;
    let (last_type, last) = events.last().unwrap();
    assert_eq!(last_type, "byok.unbound");
    assert_eq!(last["binding"], json!({"capability": "chat"}));
    assert_eq!(
        last["removed"],
        json!([{"capability": "chat"}, {"capability": "chat", "model": "gpt-4o"}])
    );
    let feed = event_types(&app, &ada.token, "/v1/events?types=byok.unbound").await;
    assert_eq!(feed.len(), 1);
}

#[tokio::test]
async fn bind_and_unbind_honour_if_match_and_idempotency_keys() {
    let (app, ada, id) = ada_with_credential().await;
    let path = format!("/v1/byok/bind/{id}");
    let body = json!({"capability": "embed"});
    let stale = call(
        &app,
        Method::POST,
        &path,
        Some(&ada.token),
        Some("\"7\""),
        Some(&body),
    )
    .await;
    assert_error(stale, 409, "conflict_error", "version_conflict").await;
    let bad = call(
        &app,
        Method::POST,
        &path,
        Some(&ada.token),
        Some("7"),
        Some(&body),
    )
    .await;
    assert_error(bad, 400, "invalid_request_error", "invalid_header").await;
    let ok = call(
        &app,
        Method::POST,
        &path,
        Some(&ada.token),
        Some("\"1\""),
        Some(&body),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(etag(&ok), "\"2\"");

    // Unbind with a key: the retry is answered the first response, even after a later change.
    let unbind = format!("/v1/byok/unbind/{id}");
    let headers = [("Idempotency-Key", "unbind-embed-1")];
    let first = send(
        &app,
        Method::POST,
        &unbind,
        Some(&ada.token),
        &headers,
        Some(&body),
    )
    .await;
    assert_eq!(first.status(), 200);
    let first = json_of(first).await;
    assert_eq!(first["bindings"], json!([]));
    let rebind = post(&app, &ada.token, &path, &body).await;
    assert_eq!(rebind.status(), 200);
    let replay = send(
        &app,
        Method::POST,
        &unbind,
        Some(&ada.token),
        &headers,
        Some(&body),
    )
    .await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(json_of(replay).await, first);
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(
        config["bindings"],
        json!([{"capability": "embed"}]),
        "not executed twice"
    );
    // The same key with another body is refused.
    let other = json!({"module": "x"});
    let reused = send(
        &app,
        Method::POST,
        &unbind,
        Some(&ada.token),
        &headers,
        Some(&other),
    )
    .await;
    assert_error(reused, 422, "idempotency_error", "idempotency_key_reused").await;
}

#[tokio::test]
async fn bind_and_unbind_validate_their_bodies() {
    let (app, ada, id) = ada_with_credential().await;
    let long = "m".repeat(129);
    let cases = [
        ("bind", json!({}), "capability"),
        ("bind", json!({"model": "gpt-4o"}), "capability"),
        ("bind", json!({"capability": "two words"}), "capability"),
        (
            "bind",
            json!({"capability": "chat", "module": ""}),
            "module",
        ),
        (
            "bind",
            json!({"capability": "chat", "model": long}),
            "model",
        ),
        ("unbind", json!({}), "capability"),
        ("unbind", json!({"module": "a\u{200b}b"}), "module"),
    ];
    for (op, body, param) in cases {
        let response = post(&app, &ada.token, &format!("/v1/byok/{op}/{id}"), &body).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
        assert_eq!(error["param"], param, "{op} {body}");
    }
    // Fields the body does not have, and the wrong types, are the body's errors.
    for (op, body) in [
        ("unbind", json!({"capability": "chat", "model": "gpt-4o"})),
        ("bind", json!({"capability": 3})),
    ] {
        let response = post(&app, &ada.token, &format!("/v1/byok/{op}/{id}"), &body).await;
        assert_eq!(response.status(), 422, "{op} {body}");
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!((tag.as_str(), &config["bindings"]), ("\"1\"", &json!([])));
}

#[tokio::test]
async fn bindings_are_refused_on_a_revoked_credential() {
    let (app, ada, id) = ada_with_credential().await;
    revoke(&app, &ada.token, &id).await;
    for op in ["bind", "unbind"] {
        let response = post(
            &app,
            &ada.token,
            &format!("/v1/byok/{op}/{id}"),
            &json!({"capability": "chat"}),
        )
        .await;
        assert_error(response, 409, "conflict_error", "credential_revoked").await;
    }
}

#[tokio::test]
async fn another_accounts_credential_is_not_found_and_scopes_are_checked() {
    let (app, ada, id) = ada_with_credential().await;
    let bob = app.tenant("bob@example.com").await;
    let body = json!({"capability": "chat"});
    for op in ["bind", "unbind"] {
        let path = format!("/v1/byok/{op}/{id}");
        let theirs = not_found(post(&app, &bob.token, &path, &body).await).await;
        let missing = not_found(
            post(
                &app,
                &bob.token,
                &format!("/v1/byok/{op}/{}", missing_id()),
                &body,
            )
            .await,
        )
        .await;
        assert_eq!(theirs, missing, "answered exactly like a missing one");
        // With If-Match too: nothing about the revision leaks.
        let pinned = call(
            &app,
            Method::POST,
            &path,
            Some(&bob.token),
            Some("\"1\""),
            Some(&body),
        )
        .await;
        not_found(pinned).await;
    }
    let read = app.mint_token(&ada.token, &["read"]).await;
    let resolve = app.mint_token(&ada.token, &["resolve"]).await;
    for token in [&read, &resolve] {
        for op in ["bind", "unbind"] {
            let response = post(&app, token, &format!("/v1/byok/{op}/{id}"), &body).await;
            assert_error(response, 403, "permission_error", "insufficient_scope").await;
        }
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!((tag.as_str(), &config["bindings"]), ("\"1\"", &json!([])));
}

#[tokio::test]
async fn the_model_map_is_set_on_register_replaced_by_update_and_cleared_by_null() {
    let mut body = openai("prod", KEY);
    body["model_map"] = json!({"gpt-4o": "ft:gpt-4o:acme:v3", "o1": "o1-2024-12-17"});
    let (app, ada, key) = ada_with(&body).await;
    let id = key["byok_id"].as_str().unwrap();
    let (config, _) = get_config(&app, &ada.token, id).await;
    assert_eq!(config["model_map"], body["model_map"]);

    let replaced = update(
        &app,
        &ada.token,
        id,
        &json!({"model_map": {"gpt-4o-mini": "mini-eu"}}),
    )
    .await;
    assert_eq!(replaced.status(), 200);
    assert_eq!(
        json_of(replaced).await["model_map"],
        json!({"gpt-4o-mini": "mini-eu"})
    );
    let kept = update(&app, &ada.token, id, &json!({"label": "x"})).await;
    assert_eq!(
        json_of(kept).await["model_map"],
        json!({"gpt-4o-mini": "mini-eu"})
    );
    let cleared = update(&app, &ada.token, id, &json!({"model_map": null})).await;
    assert_eq!(cleared.status(), 200);
    assert_eq!(etag(&cleared), "\"4\"");
    assert_eq!(json_of(cleared).await["model_map"], json!({}));
    let (config, _) = get_config(&app, &ada.token, id).await;
    assert_eq!(config["model_map"], json!({}));

    let events = event_types(&app, &ada.token, &format!("/v1/byok/events/{id}")).await;
    assert_eq!(events[0].1["model_map"], body["model_map"]);
    assert_eq!(events[1].1["model_map"], json!({"gpt-4o-mini": "mini-eu"}));
    assert_eq!(events[3].1["model_map"], json!({}));
}

#[tokio::test]
async fn the_model_map_is_validated() {
    let (app, ada, id) = ada_with_credential().await;
    let many: serde_json::Map<String, Value> =
        (0..257).map(|i| (format!("m{i}"), json!("x"))).collect();
    let cases = [
        (json!({"model_map": many}), "model_map"),
        (json!({"model_map": {"two words": "x"}}), "model_map"),
        (json!({"model_map": {"gpt-4o": ""}}), "model_map.gpt-4o"),
        (
            json!({"model_map": {"gpt-4o": "x".repeat(257)}}),
            "model_map.gpt-4o",
        ),
        (
            json!({"model_map": {"gpt-4o": "x"}, "blacklisted_models": ["gpt-4o"]}),
            "model_map.gpt-4o",
        ),
    ];
    for (patch, param) in cases {
        let response = update(&app, &ada.token, &id, &patch).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
        assert_eq!(error["param"], param, "{patch}");
    }
    let mut body = openai("denied", KEY);
    body["blacklisted_models"] = json!(["o1"]);
    body["model_map"] = json!({"o1": "o1-eu"});
    let response = crate::helpers::register_response(&app, &ada.token, &body).await;
    let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
    assert_eq!(error["param"], "model_map.o1");
    // A mapped model cannot be denied while it is mapped.
    let mapped = update(
        &app,
        &ada.token,
        &id,
        &json!({"model_map": {"o1": "o1-eu"}}),
    )
    .await;
    assert_eq!(mapped.status(), 200);
    let deny = update(
        &app,
        &ada.token,
        &id,
        &json!({"blacklisted_models": ["o1"]}),
    )
    .await;
    let error = assert_error(deny, 422, "invalid_request_error", "invalid_parameter").await;
    assert_eq!(error["param"], "blacklisted_models");
}
