//! The routing policy: `GET /v1/byok/policy/get` answers the policy in force for a scope (the
//! most specific scoped policy that matches, else the account default, `byok_then_pool` until
//! one is set) with the default and every scoped policy beside it; `POST /v1/byok/policy/set`
//! sets one scope's mode, and `mode: null` removes it. Scopes, isolation, idempotency, events.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, json_of, send, spawn_app};

async fn set(app: &TestApp, token: &str, body: &Value) -> Value {
    let response = app.post("/v1/byok/policy/set", Some(token), body).await;
    assert_eq!(response.status(), 200, "{body}");
    json_of(response).await
}

async fn get(app: &TestApp, token: &str, query: &str) -> Value {
    app.get_json(&format!("/v1/byok/policy/get?{query}"), token)
        .await
}

#[tokio::test]
async fn an_account_without_a_policy_falls_back_to_the_pool() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let policy = get(&app, &ada.token, "").await;
    assert_eq!(
        policy,
        json!({"mode": "byok_then_pool", "default": "byok_then_pool", "scoped": [], "revision": 0})
    );
    let scoped = get(&app, &ada.token, "capability=chat&module=support").await;
    assert_eq!(scoped["mode"], "byok_then_pool");
    assert_eq!(scoped.get("scope"), None);
}

#[tokio::test]
async fn the_most_specific_scope_wins() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let t = &ada.token;
    let answer = set(&app, t, &json!({"mode": "byok_only"})).await;
    assert_eq!(
        (&answer["mode"], &answer["default"]),
        (&json!("byok_only"), &json!("byok_only"))
    );
    set(
        &app,
        t,
        &json!({"mode": "byok_then_pool", "scope": {"module": "support"}}),
    )
    .await;
    let answer = set(
        &app,
        t,
        &json!({"mode": "byok_then_pool", "scope": {"capability": "chat"}}),
    )
    .await;
    assert_eq!(answer["mode"], "byok_then_pool");
    assert_eq!(answer["scope"], json!({"capability": "chat"}));
    set(
        &app,
        t,
        &json!({"mode": "byok_only", "scope": {"capability": "chat", "module": "support"}}),
    )
    .await;

    let cases = [
        (
            "capability=chat&module=support",
            "byok_only",
            json!({"capability": "chat", "module": "support"}),
        ),
        (
            "capability=chat&module=sales",
            "byok_then_pool",
            json!({"capability": "chat"}),
        ),
        (
            "capability=chat",
            "byok_then_pool",
            json!({"capability": "chat"}),
        ),
        (
            "capability=embed&module=support",
            "byok_then_pool",
            json!({"module": "support"}),
        ),
        (
            "module=support",
            "byok_then_pool",
            json!({"module": "support"}),
        ),
    ];
    for (query, mode, scope) in cases {
        let policy = get(&app, t, query).await;
        assert_eq!(policy["mode"], mode, "{query}");
        assert_eq!(policy["scope"], scope, "{query}");
        assert_eq!(policy["default"], "byok_only");
    }
    for query in ["", "capability=embed"] {
        let policy = get(&app, t, query).await;
        assert_eq!(policy["mode"], "byok_only", "{query}");
        assert_eq!(policy.get("scope"), None, "the default decided: {query}");
    }
    let all = get(&app, t, "").await;
    assert_eq!(all["revision"], 4);
    assert_eq!(all["scoped"].as_array().unwrap().len(), 3);
    assert_eq!(
        all["scoped"][0],
        json!({"mode": "byok_then_pool", "scope": {"module": "support"}})
    );

    // Removing the capability scope: chat inherits the default again.
    let removed = set(
        &app,
        t,
        &json!({"mode": null, "scope": {"capability": "chat"}}),
    )
    .await;
    assert_eq!(removed["mode"], "byok_only");
    assert_eq!(removed.get("scope"), None);
    assert_eq!(get(&app, t, "capability=chat").await["mode"], "byok_only");
    assert_eq!(
        get(&app, t, "").await["scoped"].as_array().unwrap().len(),
        2
    );
    // Removing it again, or setting what is in force, changes nothing.
    for body in [
        json!({"mode": null, "scope": {"capability": "chat"}}),
        json!({"mode": "byok_only"}),
    ] {
        assert_eq!(set(&app, t, &body).await["revision"], 5, "{body}");
    }
    // `null` without a scope puts the default back.
    assert_eq!(
        set(&app, t, &json!({"mode": null})).await["default"],
        "byok_then_pool"
    );

    // Every change is a `policy.set` in the account's feed.
    let feed = app.get_json("/v1/events?types=policy.set", t).await;
    let items = feed["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert!(
        items
            .iter()
            .all(|e| e["stream"] == format!("policy:{}", ada.account_id))
    );
    assert_eq!(items[4]["data"]["mode"], Value::Null);
    assert_eq!(items[4]["data"]["scope"], json!({"capability": "chat"}));
}

#[tokio::test]
async fn policy_set_validates_its_body() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let cases = [
        (json!({}), "mode"),
        (json!({"mode": "byok_only", "scope": {}}), "scope"),
        (
            json!({"mode": "byok_only", "scope": {"capability": null}}),
            "scope",
        ),
        (
            json!({"mode": "byok_only", "scope": {"capability": "two words"}}),
            "scope.capability",
        ),
        (
            json!({"mode": "byok_only", "scope": {"module": ""}}),
            "scope.module",
        ),
    ];
    for (body, param) in cases {
        let response = app
            .post("/v1/byok/policy/set", Some(&ada.token), &body)
            .await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
        assert_eq!(error["param"], param, "{body}");
    }
    for body in [
        json!({"mode": "pool_only"}),
        json!({"mode": "byok_only", "extra": 1}),
    ] {
        let response = app
            .post("/v1/byok/policy/set", Some(&ada.token), &body)
            .await;
        assert_eq!(response.status(), 422, "{body}");
    }
    let response = app
        .get("/v1/byok/policy/get?capability=chat&other=1", &ada.token)
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(get(&app, &ada.token, "").await["revision"], 0);
}

#[tokio::test]
async fn policies_are_per_account_and_need_their_scopes() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let bob = app.tenant("bob@example.com").await;
    set(
        &app,
        &ada.token,
        &json!({"mode": "byok_only", "scope": {"capability": "chat"}}),
    )
    .await;
    let theirs = get(&app, &bob.token, "capability=chat").await;
    assert_eq!(theirs["mode"], "byok_then_pool");
    assert_eq!(theirs["scoped"], json!([]));
    let bob_feed = app
        .get_json("/v1/events?types=policy.set", &bob.token)
        .await;
    assert_eq!(bob_feed["items"], json!([]));

    let read = app.mint_token(&ada.token, &["read"]).await;
    let resolve = app.mint_token(&ada.token, &["resolve"]).await;
    assert_eq!(
        get(&app, &read, "capability=chat").await["mode"],
        "byok_only"
    );
    for token in [&read, &resolve] {
        let response = app
            .post(
                "/v1/byok/policy/set",
                Some(token),
                &json!({"mode": "byok_then_pool"}),
            )
            .await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
    let response = app.get("/v1/byok/policy/get", &resolve).await;
    assert_error(response, 403, "permission_error", "insufficient_scope").await;
    let response = app
        .get(
            "/v1/byok/policy/get",
            "kl_000000000000000000000000000000000000000000000000",
        )
        .await;
    assert_error(response, 401, "authentication_error", "invalid_token").await;
}

#[tokio::test]
async fn policy_set_replays_with_its_idempotency_key() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let headers = [("Idempotency-Key", "policy-1")];
    let body = json!({"mode": "byok_only", "scope": {"module": "support"}});
    let path = "/v1/byok/policy/set";
    let first = send(
        &app,
        Method::POST,
        path,
        Some(&ada.token),
        &headers,
        Some(&body),
    )
    .await;
    assert_eq!(first.status(), 200);
    let first = json_of(first).await;
    set(
        &app,
        &ada.token,
        &json!({"mode": null, "scope": {"module": "support"}}),
    )
    .await;
    let replay = send(
        &app,
        Method::POST,
        path,
        Some(&ada.token),
        &headers,
        Some(&body),
    )
    .await;
    assert_eq!(replay.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(json_of(replay).await, first);
    assert_eq!(
        get(&app, &ada.token, "module=support").await["mode"],
        "byok_then_pool"
    );
}

#[tokio::test]
async fn policies_bindings_and_model_maps_survive_a_restart_and_verify() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    set(
        &app,
        &ada.token,
        &json!({"mode": "byok_only", "scope": {"capability": "chat"}}),
    )
    .await;
    let mut body = crate::helpers::openai("prod", "sk-proj-0123456789abcdefWXYZ");
    body["model_map"] = json!({"gpt-4o": "ft:gpt-4o:acme:v3"});
    let id = crate::helpers::register_id(&app, &ada.token, &body).await;
    let bound = app
        .post(
            &format!("/v1/byok/bind/{id}"),
            Some(&ada.token),
            &json!({"module": "support"}),
        )
        .await;
    assert_eq!(bound.status(), 200);
    let before = app
        .get_json(&format!("/v1/byok/get/{id}"), &ada.token)
        .await;
    // The live projections equal a replay of the log, policy rows included.
    assert!(app.store.verify().unwrap().is_sound());
    app.store.rebuild().unwrap();
    let app = app.restart().await;
    assert_eq!(
        get(&app, &ada.token, "capability=chat").await["mode"],
        "byok_only"
    );
    let after = app
        .get_json(&format!("/v1/byok/get/{id}"), &ada.token)
        .await;
    assert_eq!(after, before);
    assert_eq!(after["model_map"], json!({"gpt-4o": "ft:gpt-4o:acme:v3"}));
    assert_eq!(after["bindings"], json!([{"module": "support"}]));
}
