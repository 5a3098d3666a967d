//! Who may do what: a read key reads and changes nothing, every endpoint needs a token, and
//! another account's credential is answered exactly like a missing one, with `If-Match` too.

use reqwest::Method;
use serde_json::{Value, json};

use super::{KEY, call, get_config, list_ids, missing_id, not_found, open_secrets, secrets};
use crate::helpers::{ADMIN_TOKEN, assert_error, openai, register_id, spawn_app};

#[tokio::test]
async fn a_read_key_reads_but_cannot_change_anything() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let read = app.mint_key(&ada.token, &["read"]).await;
    let read = read["api_key"].as_str().unwrap();
    let (config, _) = get_config(&app, read, &id).await;
    assert_eq!(config["byok_id"], id.as_str());
    assert_eq!(list_ids(&app, read, "").await, [id.as_str()]);

    let register_body = openai("other", KEY);
    let update_body = json!({"label": "x"});
    let mutations = [
        (
            Method::POST,
            "/v1/byok/register".to_owned(),
            Some(&register_body),
        ),
        (
            Method::PATCH,
            format!("/v1/byok/update/{id}"),
            Some(&update_body),
        ),
        (Method::POST, format!("/v1/byok/enable/{id}"), None),
        (Method::POST, format!("/v1/byok/disable/{id}"), None),
        (Method::DELETE, format!("/v1/byok/revoke/{id}"), None),
    ];
    for (method, path, body) in &mutations {
        let response = call(&app, method.clone(), path, Some(read), None, *body).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
    // A write key may; a resolve key may not even read.
    let write = app.mint_key(&ada.token, &["write"]).await;
    let write = write["api_key"].as_str().unwrap();
    let response = call(
        &app,
        Method::POST,
        &format!("/v1/byok/disable/{id}"),
        Some(write),
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let resolve = app.mint_key(&ada.token, &["resolve"]).await;
    let resolve = resolve["api_key"].as_str().unwrap();
    for path in [format!("/v1/byok/get/{id}"), "/v1/byok/list".to_owned()] {
        let response = app.get(&path, resolve).await;
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
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let register_body = openai("other", KEY);
    let update_body = json!({"label": "x"});
    let endpoints = [
        (
            Method::POST,
            "/v1/byok/register".to_owned(),
            Some(&register_body),
        ),
        (Method::GET, "/v1/byok/list".to_owned(), None),
        (Method::GET, format!("/v1/byok/get/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/byok/update/{id}"),
            Some(&update_body),
        ),
        (Method::POST, format!("/v1/byok/enable/{id}"), None),
        (Method::POST, format!("/v1/byok/disable/{id}"), None),
        (Method::DELETE, format!("/v1/byok/revoke/{id}"), None),
    ];
    for (method, path, body) in &endpoints {
        let response = call(&app, method.clone(), path, None, None, *body).await;
        assert_error(response, 401, "authentication_error", "missing_token").await;
        let unknown = "kl_000000000000000000000000000000000000000000000000";
        let response = call(&app, method.clone(), path, Some(unknown), None, *body).await;
        assert_error(response, 401, "authentication_error", "invalid_token").await;
        // The operator's token is not an account key.
        let response = call(&app, method.clone(), path, Some(ADMIN_TOKEN), None, *body).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(
        (tag.as_str(), &config["state"]),
        ("\"1\"", &json!("active"))
    );
    assert_eq!(list_ids(&app, &ada.token, "").await.len(), 1);
}

/// The endpoints that take a credential id, with a request body where they need one.
fn id_endpoints() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "get", None),
        (Method::PATCH, "update", Some(json!({"label": "hijacked"}))),
        (Method::PATCH, "update", Some(json!({}))),
        (Method::POST, "enable", None),
        (Method::POST, "disable", None),
        (Method::DELETE, "revoke", None),
    ]
}

#[tokio::test]
async fn another_accounts_credential_is_answered_like_a_missing_one() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let eve = app.tenant("eve@example.com").await;
    let active = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let disabled = register_id(&app, &ada.token, &openai("spare", KEY)).await;
    let response = app
        .post(
            &format!("/v1/byok/disable/{disabled}"),
            Some(&ada.token),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let eve_own = register_id(&app, &eve.token, &openai("eve", KEY)).await;

    let before: Vec<(Value, String)> = vec![
        get_config(&app, &ada.token, &active).await,
        get_config(&app, &ada.token, &disabled).await,
    ];
    let missing = missing_id();
    for (method, endpoint, body) in id_endpoints() {
        for target in [&active, &disabled] {
            let theirs = call(
                &app,
                method.clone(),
                &format!("/v1/byok/{endpoint}/{target}"),
                Some(&eve.token),
                None,
                body.as_ref(),
            )
            .await;
            let theirs = not_found(theirs).await;
            let nobody = call(
                &app,
                method.clone(),
                &format!("/v1/byok/{endpoint}/{missing}"),
                Some(&eve.token),
                None,
                body.as_ref(),
            )
            .await;
            let nobody = not_found(nobody).await;
            assert_eq!(
                theirs, nobody,
                "{endpoint}: another account's id differs from a missing one"
            );
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
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let eve = app.tenant("eve@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let missing = missing_id();
    for (method, endpoint, body) in id_endpoints() {
        if endpoint == "get" {
            continue;
        }
        for if_match in ["\"1\"", "\"7\""] {
            let theirs = call(
                &app,
                method.clone(),
                &format!("/v1/byok/{endpoint}/{id}"),
                Some(&eve.token),
                Some(if_match),
                body.as_ref(),
            )
            .await;
            let theirs = not_found(theirs).await;
            let nobody = call(
                &app,
                method.clone(),
                &format!("/v1/byok/{endpoint}/{missing}"),
                Some(&eve.token),
                Some(if_match),
                body.as_ref(),
            )
            .await;
            let nobody = not_found(nobody).await;
            assert_eq!(theirs, nobody, "{endpoint} with If-Match {if_match}");
        }
    }
    let (_, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"1\"");
}
