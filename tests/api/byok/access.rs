//! Who may do what: a read key reads and changes nothing, every endpoint needs a token, another
//! account's credential is answered exactly like a missing one, with `If-Match` too, and only
//! the secret or the `admin` scope moves where a secret is sent (docs/adr/0036).

use reqwest::Method;
use serde_json::{Value, json};

use super::{
    KEY, ada_with_credential, azure, call, get_config, list_ids, missing_id, not_found,
    open_secrets, secrets, update,
};
use crate::helpers::{
    ADMIN_TOKEN, TestApp, assert_error, disable, json_of, keys_of, openai, register_id, spawn_app,
};

/// Every change to credentials, as (method, path, body), the ones on an id made to `id`.
fn mutations(id: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (
            Method::POST,
            "/v1/byok/register".to_owned(),
            Some(openai("other", KEY)),
        ),
        (
            Method::PATCH,
            format!("/v1/byok/update/{id}"),
            Some(json!({"label": "x"})),
        ),
        (Method::POST, format!("/v1/byok/enable/{id}"), None),
        (Method::POST, format!("/v1/byok/disable/{id}"), None),
        (Method::DELETE, format!("/v1/byok/revoke/{id}"), None),
    ]
}

#[tokio::test]
async fn a_read_key_reads_but_cannot_change_anything() {
    let (app, ada, id) = ada_with_credential().await;
    let read = app.mint_token(&ada.token, &["read"]).await;
    let (config, _) = get_config(&app, &read, &id).await;
    assert_eq!(config["byok_id"], id.as_str());
    assert_eq!(list_ids(&app, &read, "").await, [id.as_str()]);

    for (method, path, body) in mutations(&id) {
        let response = call(&app, method, &path, Some(&read), None, body.as_ref()).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
    // A write key may; a resolve key may not even read.
    let write = app.mint_token(&ada.token, &["write"]).await;
    disable(&app, &write, &id).await;
    let resolve = app.mint_token(&ada.token, &["resolve"]).await;
    for path in [format!("/v1/byok/get/{id}"), "/v1/byok/list".to_owned()] {
        let response = app.get(&path, &resolve).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
    // Only the write key's change happened.
    assert_eq!(list_ids(&app, &ada.token, "").await, [id.as_str()]);
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(
        (tag.as_str(), &config["state"]),
        ("\"2\"", &json!("disabled"))
    );
    assert_eq!(config["label"], Value::Null);
}

#[tokio::test]
async fn every_credential_endpoint_needs_a_token() {
    let (app, ada, id) = ada_with_credential().await;
    let reads = [
        (Method::GET, "/v1/byok/list".to_owned(), None),
        (Method::GET, format!("/v1/byok/get/{id}"), None),
    ];
    let endpoints: Vec<_> = mutations(&id).into_iter().chain(reads).collect();
    let unknown = "kl_000000000000000000000000000000000000000000000000";
    // (token, status, type, code); the operator's token is not an account key.
    let refusals = [
        (None, 401, "authentication_error", "missing_token"),
        (Some(unknown), 401, "authentication_error", "invalid_token"),
        (
            Some(ADMIN_TOKEN),
            403,
            "permission_error",
            "insufficient_scope",
        ),
    ];
    for (method, path, body) in &endpoints {
        for (token, status, error_type, code) in refusals {
            let response = call(&app, method.clone(), path, token, None, body.as_ref()).await;
            assert_error(response, status, error_type, code).await;
        }
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(
        (tag.as_str(), &config["state"]),
        ("\"1\"", &json!("active"))
    );
    assert_eq!(list_ids(&app, &ada.token, "").await.len(), 1);
}

/// One of the endpoints that take a credential id: method, name, request body where it needs one.
type IdEndpoint = (Method, &'static str, Option<Value>);

/// The endpoints that take a credential id, with a request body where they need one.
fn id_endpoints() -> Vec<IdEndpoint> {
    vec![
        (Method::GET, "get", None),
        (Method::PATCH, "update", Some(json!({"label": "hijacked"}))),
        (Method::PATCH, "update", Some(json!({}))),
        (Method::POST, "enable", None),
        (Method::POST, "disable", None),
        (Method::DELETE, "revoke", None),
    ]
}

/// Sends `endpoint` with `token` for `id`, then for an id nobody owns: both must be a 404, the
/// same in every field but the request id.
async fn assert_like_missing(
    app: &TestApp,
    token: &str,
    (method, endpoint, body): &IdEndpoint,
    id: &str,
    if_match: Option<&str>,
) {
    let mut answers = Vec::new();
    for target in [id, &missing_id()] {
        let path = format!("/v1/byok/{endpoint}/{target}");
        let response = call(
            app,
            method.clone(),
            &path,
            Some(token),
            if_match,
            body.as_ref(),
        )
        .await;
        answers.push(not_found(response).await);
    }
    assert_eq!(
        answers[0], answers[1],
        "{endpoint} (If-Match {if_match:?}): another account's id differs from a missing one"
    );
}

#[tokio::test]
async fn another_accounts_credential_is_answered_like_a_missing_one() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let eve = app.tenant("eve@example.com").await;
    let active = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let disabled = register_id(&app, &ada.token, &openai("spare", KEY)).await;
    disable(&app, &ada.token, &disabled).await;
    let eve_own = register_id(&app, &eve.token, &openai("eve", KEY)).await;

    let before: Vec<(Value, String)> = vec![
        get_config(&app, &ada.token, &active).await,
        get_config(&app, &ada.token, &disabled).await,
    ];
    for endpoint in id_endpoints() {
        for target in [&active, &disabled] {
            assert_like_missing(&app, &eve.token, &endpoint, target, None).await;
        }
    }
    // Ada's credentials are untouched: same revision, state and secret.
    let after = vec![
        get_config(&app, &ada.token, &active).await,
        get_config(&app, &ada.token, &disabled).await,
    ];
    assert_eq!(after, before);
    for id in [&active, &disabled] {
        assert!(
            app.store.data_key(id).unwrap().is_some(),
            "Eve's revoke shredded Ada's key"
        );
        assert_eq!(
            open_secrets(&app, &ada.account_id, id),
            Some(secrets(&[("api_key", KEY)]))
        );
    }
    // Eve never lists Ada's credentials, whatever the filter.
    for query in [
        "",
        "provider=openai",
        "state=disabled",
        "state=active",
        "limit=1",
    ] {
        let listed = list_ids(&app, &eve.token, query).await;
        assert!(
            !listed.contains(&active) && !listed.contains(&disabled),
            "{query}: {listed:?}"
        );
    }
    assert_eq!(list_ids(&app, &eve.token, "").await, [eve_own.as_str()]);
    // The service refuses Eve too.
    assert!(open_secrets(&app, &eve.account_id, &active).is_none());
}

#[tokio::test]
async fn another_accounts_credential_is_answered_like_a_missing_one_with_if_match_too() {
    let (app, ada, id) = ada_with_credential().await;
    let eve = app.tenant("eve@example.com").await;
    for endpoint in id_endpoints().iter().filter(|(_, name, _)| *name != "get") {
        for if_match in ["\"1\"", "\"7\""] {
            assert_like_missing(&app, &eve.token, endpoint, &id, Some(if_match)).await;
        }
    }
    let (_, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"1\"");
}

#[tokio::test]
async fn moving_where_the_secret_is_sent_needs_the_secret_or_the_admin_scope() {
    let (app, ada, id) = ada_with_credential().await;
    let write = app.mint_token(&ada.token, &["write"]).await;
    let elsewhere = json!({"base_url": "https://collector.example.com/v1"});
    let response = update(&app, &write, &id, &elsewhere).await;
    let error = assert_error(response, 403, "permission_error", "insufficient_scope").await;
    assert_eq!(error["param"], "base_url");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("credentials (api_key)") && message.contains("admin"),
        "{message}"
    );
    // A secret that is not the current one proves nothing, and is never echoed.
    let guessed = "sk-proj-guessed-key-00000000";
    let wrong = json!({"base_url": "https://collector.example.com/v1",
        "credentials": {"api_key": guessed}});
    let response = update(&app, &write, &id, &wrong).await;
    let error = assert_error(response, 403, "permission_error", "insufficient_scope").await;
    assert!(!error["message"].as_str().unwrap().contains(guessed));
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!((tag.as_str(), &config["base_url"]), ("\"1\"", &Value::Null));

    // The same key with the secret again, then the account's admin key without it.
    let shown = json!({"base_url": "https://collector.example.com/v1",
        "credentials": {"api_key": KEY}});
    let moved = json_of(update(&app, &write, &id, &shown).await).await;
    assert_eq!(moved["base_url"], "https://collector.example.com/v1");
    let admin = json!({"base_url": "https://eu.api.openai.com/v1"});
    let response = update(&app, &ada.token, &id, &admin).await;
    assert_eq!(response.status(), 200);
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(
        (tag.as_str(), &config["base_url"], &config["secret_version"]),
        ("\"3\"", &json!("https://eu.api.openai.com/v1"), &json!(1))
    );
    assert!(!keys_of(&config).contains("api_key"));
    assert_eq!(
        open_secrets(&app, &ada.account_id, &id),
        Some(secrets(&[("api_key", KEY)]))
    );
    // Everything else a write key changes as before, and back to the provider's own address.
    for patch in [json!({"label": "moved"}), json!({"base_url": null})] {
        let response = update(&app, &write, &id, &patch).await;
        assert_eq!(response.status(), 200, "{patch}");
    }
}

#[tokio::test]
async fn moving_an_azure_endpoint_needs_the_secret_or_the_admin_scope() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = register_id(&app, &ada.token, &azure("az", KEY)).await;
    let write = app.mint_token(&ada.token, &["write"]).await;
    let endpoint = |extra: Value| {
        let mut credentials = json!({"endpoint": "https://collector.example.com"});
        credentials
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "credentials": credentials })
    };
    let response = update(&app, &write, &id, &endpoint(json!({}))).await;
    let error = assert_error(response, 403, "permission_error", "insufficient_scope").await;
    assert_eq!(error["param"], "credentials.endpoint");
    let response = update(&app, &write, &id, &endpoint(json!({"api_key": KEY}))).await;
    let moved = json_of(response).await;
    assert_eq!(
        moved["settings"]["endpoint"],
        "https://collector.example.com"
    );
}
