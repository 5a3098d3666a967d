//! `POST /v1/byok/resolve` on a real server: only the `resolve` scope gets plaintext; the answer
//! follows every acknowledged write at once (read-your-writes through the follower); filters,
//! precedence and `explain` as docs/routing.md states them; accounts never see each other's
//! credentials; a restart rebuilds the routing state from the log.

use reqwest::Method;
use serde_json::{Value, json};

use super::{KEY, missing_id, self_hosted};
use crate::helpers::{
    TestApp, assert_error, assert_json, disable, openai, register_id, revoke, spawn_app,
};

/// Sends a resolve request with `token`; answers the 200 body.
async fn resolve(app: &TestApp, token: &str, body: &Value) -> Value {
    assert_json(app.post("/v1/byok/resolve", Some(token), body).await, 200).await
}

/// An account with an admin token and a resolve token.
async fn gateway(app: &TestApp, email: &str) -> (String, String) {
    let tenant = app.tenant(email).await;
    let resolver = app.mint_token(&tenant.token, &["resolve"]).await;
    (tenant.token, resolver)
}

fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// `reason` of each credential in an `explain` list, by alias.
fn reasons(answer: &Value) -> Vec<(String, String)> {
    let mut out: Vec<_> = answer["explain"]
        .as_array()
        .expect("explain")
        .iter()
        .map(|e| {
            (
                e["alias"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<_> = items
        .iter()
        .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn plaintext_only_to_the_resolve_scope() {
    let app = spawn_app().await;
    let (admin, resolver) = gateway(&app, "ada@example.com").await;
    let id = register_id(&app, &admin, &openai("prod", KEY)).await;
    for scopes in [
        &["admin"][..],
        &["write"],
        &["read"],
        &["admin", "write", "read"],
    ] {
        let token = app.mint_token(&admin, scopes).await;
        let response = app.post("/v1/byok/resolve", Some(&token), &json!({})).await;
        let error = assert_error(response, 403, "permission_error", "insufficient_scope").await;
        assert!(!error.to_string().contains(KEY), "{error}");
    }
    let anonymous = app.post("/v1/byok/resolve", None, &json!({})).await;
    assert_error(anonymous, 401, "authentication_error", "missing_token").await;
    let answer = resolve(&app, &resolver, &json!({"model": "gpt-4o"})).await;
    assert_eq!(
        answer,
        json!({"source": "byok", "byok_id": id, "provider": "openai", "version": 1,
            "credentials": {"api_key": KEY}, "base_url": "https://api.openai.com/v1",
            "model": "gpt-4o", "binding": null})
    );
}

#[tokio::test]
async fn writes_are_read_at_once_and_disabled_or_revoked_never_resolve() {
    let app = spawn_app().await;
    let (admin, resolver) = gateway(&app, "ada@example.com").await;
    let empty = resolve(&app, &resolver, &json!({})).await;
    assert_eq!(empty, json!({"source": "pool", "reason": "no_credentials"}));
    let id = register_id(&app, &admin, &openai("prod", KEY)).await;
    assert_eq!(resolve(&app, &resolver, &json!({})).await["byok_id"], id);
    disable(&app, &admin, &id).await;
    let disabled = resolve(&app, &resolver, &json!({"explain": true})).await;
    assert_eq!(disabled["source"], "pool");
    assert_eq!(disabled["reason"], "none_usable");
    assert_eq!(reasons(&disabled), pairs(&[("prod", "disabled")]));
    let path = format!("/v1/byok/enable/{id}");
    assert_json(app.fetch(Method::POST, &path, Some(&admin)).await, 200).await;
    assert_eq!(resolve(&app, &resolver, &json!({})).await["byok_id"], id);
    revoke(&app, &admin, &id).await;
    let revoked = resolve(&app, &resolver, &json!({"byok_id": id, "explain": true})).await;
    assert_eq!(revoked["source"], "pool");
    assert_eq!(reasons(&revoked), pairs(&[("prod", "revoked")]));
    // The follower has applied everything; the lag is exported.
    let metrics = app
        .fetch(Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("keyledger_resolve_follower_lag_events"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_most_specific_binding_wins_and_explain_says_why() {
    let app = spawn_app().await;
    let (admin, resolver) = gateway(&app, "ada@example.com").await;
    let any = register_id(&app, &admin, &openai("any", KEY)).await;
    let chat = register_id(
        &app,
        &admin,
        &with(openai("chat", KEY), json!({"capability": "chat"})),
    )
    .await;
    let chat_4o = register_id(
        &app,
        &admin,
        &with(
            openai("chat-4o", KEY),
            json!({"capability": "chat", "model": "gpt-4o"}),
        ),
    )
    .await;
    let mini_only = register_id(
        &app,
        &admin,
        &with(openai("mini-only", KEY), json!({"models": ["gpt-4o-mini"]})),
    )
    .await;
    let answer = resolve(
        &app,
        &resolver,
        &json!({"capability": "chat", "model": "gpt-4o", "explain": true}),
    )
    .await;
    assert_eq!(answer["byok_id"], chat_4o);
    assert_eq!(
        answer["binding"],
        json!({"capability": "chat", "model": "gpt-4o"})
    );
    assert_eq!(
        reasons(&answer),
        pairs(&[
            ("any", "outranked"),
            ("chat", "outranked"),
            ("chat-4o", "picked"),
            ("mini-only", "model_not_allowed"),
        ])
    );
    let o3 = resolve(
        &app,
        &resolver,
        &json!({"capability": "chat", "model": "o3"}),
    )
    .await;
    assert_eq!(o3["byok_id"], chat);
    assert!(o3.get("explain").is_none());
    let embed = resolve(
        &app,
        &resolver,
        &json!({"capability": "embed", "model": "gpt-4o"}),
    )
    .await;
    assert_eq!(embed["byok_id"], any);
    assert_eq!(embed["binding"], Value::Null);
    let mini = resolve(
        &app,
        &resolver,
        &json!({"capability": "embed", "model": "gpt-4o-mini", "explain": true}),
    )
    .await;
    assert!([&any, &mini_only].contains(&&mini["byok_id"].as_str().unwrap().to_owned()));
    let tied: Vec<_> = reasons(&mini)
        .into_iter()
        .filter(|(_, r)| r.starts_with("picked") || r == "not_picked")
        .collect();
    assert_eq!(tied.len(), 2, "{mini}");
}

#[tokio::test]
async fn residency_model_lists_and_provider_filter() {
    let app = spawn_app().await;
    let (admin, resolver) = gateway(&app, "ada@example.com").await;
    let eu = register_id(
        &app,
        &admin,
        &with(
            openai("eu", KEY),
            json!({"declared_region": "eu", "blacklisted_models": ["o3"]}),
        ),
    )
    .await;
    let us = register_id(
        &app,
        &admin,
        &with(openai("us", KEY), json!({"declared_region": "us"})),
    )
    .await;
    let residency = |r: &str| {
        let r = r.to_owned();
        let app = &app;
        let resolver = &resolver;
        async move { resolve(app, resolver, &json!({"residency": r, "explain": true})).await }
    };
    let in_eu = residency("eu").await;
    assert_eq!(in_eu["byok_id"], eu, "{in_eu}");
    assert_eq!(
        reasons(&in_eu),
        pairs(&[("eu", "picked"), ("us", "residency_mismatch")])
    );
    assert_eq!(residency("us").await["byok_id"], us);
    assert_eq!(residency("apac").await["reason"], "none_usable");
    let o3 = resolve(
        &app,
        &resolver,
        &json!({"model": "o3", "residency": "eu", "explain": true}),
    )
    .await;
    assert_eq!(o3["source"], "pool");
    assert_eq!(
        reasons(&o3),
        pairs(&[("eu", "model_blacklisted"), ("us", "residency_mismatch")])
    );
    let anthropic = resolve(&app, &resolver, &json!({"provider": "anthropic"})).await;
    assert_eq!(anthropic["source"], "pool");
}

#[tokio::test]
async fn self_hosted_only_when_the_request_names_it() {
    let app = spawn_app().await;
    let (admin, resolver) = gateway(&app, "ada@example.com").await;
    let local = register_id(
        &app,
        &admin,
        &self_hosted("local", "https://llm.example.com/v1"),
    )
    .await;
    let unnamed = resolve(&app, &resolver, &json!({"explain": true})).await;
    assert_eq!(unnamed["source"], "pool");
    assert_eq!(
        reasons(&unnamed),
        pairs(&[("local", "self_hosted_not_named")])
    );
    for named in [
        json!({"provider": "self_hosted"}),
        json!({"byok_id": local}),
    ] {
        let answer = resolve(&app, &resolver, &named).await;
        assert_eq!(answer["byok_id"], local, "{named}");
        assert_eq!(answer["base_url"], "https://llm.example.com/v1");
        assert_eq!(answer["credentials"], json!({}));
    }
}

#[tokio::test]
async fn accounts_never_resolve_each_others_credentials() {
    let app = spawn_app().await;
    let (ada_admin, _) = gateway(&app, "ada@example.com").await;
    let (bob_admin, bob_resolver) = gateway(&app, "bob@example.com").await;
    let adas = register_id(&app, &ada_admin, &openai("prod", KEY)).await;
    let bob = resolve(&app, &bob_resolver, &json!({"explain": true})).await;
    assert_eq!(
        bob,
        json!({"source": "pool", "reason": "no_credentials", "explain": []})
    );
    let bobs = register_id(
        &app,
        &bob_admin,
        &openai("bobs", "sk-bob-0123456789abcdefWXYZ"),
    )
    .await;
    let bob = resolve(&app, &bob_resolver, &json!({"explain": true})).await;
    assert_eq!(bob["byok_id"], bobs);
    assert_eq!(reasons(&bob), pairs(&[("bobs", "picked")]));
    let named = resolve(&app, &bob_resolver, &json!({"byok_id": adas})).await;
    assert_eq!(
        named,
        json!({"source": "pool", "reason": "byok_id_not_found"})
    );
    assert!(!named.to_string().contains(KEY));
    let unknown = resolve(&app, &bob_resolver, &json!({"byok_id": missing_id()})).await;
    assert_eq!(unknown["reason"], "byok_id_not_found");
}

#[tokio::test]
async fn a_restart_rebuilds_the_routing_state_from_the_log() {
    let app = spawn_app().await;
    let (admin, resolver) = gateway(&app, "ada@example.com").await;
    let kept = register_id(&app, &admin, &openai("kept", KEY)).await;
    let gone = register_id(&app, &admin, &openai("gone", KEY)).await;
    disable(&app, &admin, &gone).await;
    let app = app.restart().await;
    let answer = resolve(&app, &resolver, &json!({"explain": true})).await;
    assert_eq!(answer["byok_id"], kept);
    assert_eq!(answer["credentials"], json!({"api_key": KEY}));
    assert_eq!(
        reasons(&answer),
        pairs(&[("gone", "disabled"), ("kept", "picked")])
    );
}

#[tokio::test]
async fn a_revoked_gateway_key_is_refused_at_once_and_after_a_restart() {
    let app = spawn_app().await;
    let (admin, _) = gateway(&app, "ada@example.com").await;
    register_id(&app, &admin, &openai("prod", KEY)).await;
    let minted = app.mint_key(&admin, &["resolve"]).await;
    let token = crate::helpers::api_key(&minted);
    assert_eq!(resolve(&app, &token, &json!({})).await["source"], "byok");
    let report = json!({"records": []});
    let path = format!("/v1/account/keys/{}", minted["id"].as_str().unwrap());
    assert_json(app.delete(&path, &admin).await, 200).await;
    // Answered by the follower's table of gateway keys: the revoke waited for it.
    let refused = app.post("/v1/byok/resolve", Some(&token), &json!({})).await;
    assert_error(refused, 401, "authentication_error", "invalid_token").await;
    let usage = app
        .post("/v1/byok/usage/report", Some(&token), &report)
        .await;
    assert_error(usage, 401, "authentication_error", "invalid_token").await;
    // A key minted later works at once; after a restart the table is replayed from the log.
    let fresh = app.mint_token(&admin, &["resolve"]).await;
    assert_eq!(resolve(&app, &fresh, &json!({})).await["source"], "byok");
    let app = app.restart().await;
    let refused = app.post("/v1/byok/resolve", Some(&token), &json!({})).await;
    assert_error(refused, 401, "authentication_error", "invalid_token").await;
    assert_eq!(resolve(&app, &fresh, &json!({})).await["source"], "byok");
}

#[tokio::test]
async fn malformed_requests_are_refused() {
    let app = spawn_app().await;
    let (_, resolver) = gateway(&app, "ada@example.com").await;
    for (body, param) in [
        (json!({"byok_id": "byok_nope"}), "byok_id"),
        (json!({"model": ""}), "model"),
        (json!({"capability": "x".repeat(129)}), "capability"),
    ] {
        let response = app.post("/v1/byok/resolve", Some(&resolver), &body).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
        assert_eq!(error["param"], param, "{body}");
    }
    let unknown = app
        .post("/v1/byok/resolve", Some(&resolver), &json!({"nope": 1}))
        .await;
    assert_error(unknown, 422, "invalid_request_error", "invalid_body").await;
}

#[tokio::test]
async fn the_model_map_names_the_providers_model() {
    let app = spawn_app().await;
    let (admin, resolver) = gateway(&app, "ada@example.com").await;
    let body = with(
        openai("prod", KEY),
        json!({"model_map": {"gpt-4o": "ft:gpt-4o:acme:2026"}}),
    );
    let id = register_id(&app, &admin, &body).await;
    let mapped = resolve(&app, &resolver, &json!({"model": "gpt-4o"})).await;
    assert_eq!(mapped["byok_id"], id);
    assert_eq!(mapped["model"], "ft:gpt-4o:acme:2026");
    // A model the map does not name is asked for by its own name.
    let unmapped = resolve(&app, &resolver, &json!({"model": "o3"})).await;
    assert_eq!(unmapped["model"], "o3");
}

#[tokio::test]
async fn the_policy_decides_between_the_pool_and_an_error() {
    let app = spawn_app().await;
    let (admin, resolver) = gateway(&app, "ada@example.com").await;
    let id = register_id(&app, &admin, &openai("prod", KEY)).await;
    disable(&app, &admin, &id).await;
    let set = |body: Value| {
        let app = &app;
        let admin = &admin;
        async move {
            let response = app.post("/v1/byok/policy/set", Some(admin), &body).await;
            assert_eq!(response.status(), 200, "{body}");
        }
    };
    // The account default is byok_then_pool.
    let pooled = resolve(&app, &resolver, &json!({"capability": "chat"})).await;
    assert_eq!(pooled, json!({"source": "pool", "reason": "none_usable"}));
    // byok_only for chat: chat is refused with a reason, embed still falls to the pool.
    set(json!({"mode": "byok_only", "scope": {"capability": "chat"}})).await;
    let refused = app
        .post(
            "/v1/byok/resolve",
            Some(&resolver),
            &json!({"capability": "chat"}),
        )
        .await;
    let error = assert_error(
        refused,
        422,
        "invalid_request_error",
        "no_usable_credential",
    )
    .await;
    assert!(!error.to_string().contains(KEY), "{error}");
    let embed = resolve(&app, &resolver, &json!({"capability": "embed"})).await;
    assert_eq!(embed["source"], "pool");
    // A more specific scope wins over the capability's: chat for the support module pools.
    set(json!({"mode": "byok_then_pool", "scope": {"capability": "chat", "module": "support"}}))
        .await;
    let support = json!({"capability": "chat", "module": "support"});
    assert_eq!(resolve(&app, &resolver, &support).await["source"], "pool");
    // byok_only as the account default refuses embed too; removing it pools again.
    set(json!({"mode": "byok_only"})).await;
    let embed = app
        .post(
            "/v1/byok/resolve",
            Some(&resolver),
            &json!({"capability": "embed"}),
        )
        .await;
    assert_error(embed, 422, "invalid_request_error", "no_usable_credential").await;
    set(json!({"mode": null})).await;
    let embed = resolve(&app, &resolver, &json!({"capability": "embed"})).await;
    assert_eq!(embed["source"], "pool");
    // With a usable credential, byok_only serves it.
    let path = format!("/v1/byok/enable/{id}");
    assert_json(app.fetch(Method::POST, &path, Some(&admin)).await, 200).await;
    let served = resolve(&app, &resolver, &json!({"capability": "chat"})).await;
    assert_eq!(served["byok_id"], id);
}

#[tokio::test]
async fn a_credential_over_its_quota_is_left_out_until_the_quota_changes() {
    let app = spawn_app().await;
    let (admin, resolver) = gateway(&app, "ada@example.com").await;
    let capped = register_id(&app, &admin, &openai("capped", KEY)).await;
    let path = format!("/v1/byok/quota/set/{capped}");
    let quota = json!({"call_limit": 2, "window": "1d"});
    assert_json(app.post(&path, Some(&admin), &quota).await, 200).await;
    assert_eq!(
        resolve(&app, &resolver, &json!({})).await["byok_id"],
        capped
    );
    let records = json!({"records": [
        {"byok_id": capped, "request_id": "r1", "spend_usd": 0.01},
        {"byok_id": capped, "request_id": "r2", "spend_usd": 0.01},
    ]});
    let reported = app
        .post("/v1/byok/usage/report", Some(&resolver), &records)
        .await;
    assert_eq!(assert_json(reported, 200).await["accepted"], 2);
    let over = resolve(&app, &resolver, &json!({"explain": true})).await;
    assert_eq!(over["source"], "pool");
    assert_eq!(reasons(&over), pairs(&[("capped", "over_quota")]));
    // Another credential of the account serves meanwhile.
    let spare = register_id(&app, &admin, &openai("spare", KEY)).await;
    assert_eq!(resolve(&app, &resolver, &json!({})).await["byok_id"], spare);
    // Raising the quota frees the capped one.
    revoke(&app, &admin, &spare).await;
    let raised = json!({"call_limit": 100, "window": "1d"});
    assert_json(app.post(&path, Some(&admin), &raised).await, 200).await;
    assert_eq!(
        resolve(&app, &resolver, &json!({})).await["byok_id"],
        capped
    );
}
