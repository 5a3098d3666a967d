//! The endpoints API: create (the secret shown once), read, list, update with `If-Match`,
//! delete, idempotency keys, the `admin` scope, and isolation between accounts.

use base64::Engine;
use reqwest::Method;
use serde_json::json;

use super::{create_hook, id_of, private_app};
use crate::helpers::{assert_error, assert_json, etag, header, send, spawn_app};

#[tokio::test]
async fn an_endpoint_is_created_read_listed_updated_and_deleted() {
    let app = private_app().await;
    let ada = app.tenant("ada@example.com").await;
    let created = app
        .post(
            "/v1/webhooks",
            Some(&ada.token),
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["byok.rotated", "byok.revoked"],
                "description": "ops"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    assert_eq!(etag(&created), "\"1\"");
    let hook: serde_json::Value = created.json().await.unwrap();
    let secret = hook["secret"].as_str().unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    assert!(key.len() >= 24, "{} bytes", key.len());
    assert_eq!(hook["events"], json!(["byok.revoked", "byok.rotated"]));
    assert_eq!(hook["state"], "active");
    assert_eq!(hook["signing_secret_versions"], json!([1]));
    let id = id_of(&hook);
    assert!(id.starts_with("wh_"));

    let read = app.get(&format!("/v1/webhooks/{id}"), &ada.token).await;
    assert_eq!(etag(&read), "\"1\"");
    let read: serde_json::Value = read.json().await.unwrap();
    assert!(
        read.get("secret").is_none(),
        "the secret is shown once: {read}"
    );
    assert_eq!(read["description"], "ops");

    let listed = app.get_json("/v1/webhooks", &ada.token).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains("whsec_"));

    // If-Match: a stale revision is a conflict, the current one changes it.
    let path = format!("/v1/webhooks/{id}");
    let patch = json!({"events": ["*"], "description": ""});
    let stale = send(
        &app,
        Method::PATCH,
        &path,
        Some(&ada.token),
        &[("If-Match", "\"7\"")],
        Some(&patch),
    )
    .await;
    assert_error(stale, 409, "conflict_error", "version_conflict").await;
    let changed = send(
        &app,
        Method::PATCH,
        &path,
        Some(&ada.token),
        &[("If-Match", "\"1\"")],
        Some(&patch),
    )
    .await;
    assert_eq!(etag(&changed), "\"2\"");
    let changed = assert_json(changed, 200).await;
    assert_eq!(changed["events"], json!(["*"]));
    assert!(changed.get("description").is_none());
    let off = send(
        &app,
        Method::PATCH,
        &path,
        Some(&ada.token),
        &[],
        Some(&json!({"enabled": false})),
    )
    .await;
    let off = assert_json(off, 200).await;
    assert_eq!(
        (off["state"].as_str(), off["disabled_reason"].as_str()),
        (Some("disabled"), Some("operator"))
    );

    // Its events are the account's, without the sealed secret.
    let feed = app
        .get_json("/v1/events?types=webhook.created", &ada.token)
        .await;
    let data = &feed["items"][0]["data"];
    assert_eq!(data["webhook_id"], id.as_str());
    assert!(data.get("sealed_secret").is_none(), "{data}");

    let deleted = assert_json(app.delete(&path, &ada.token).await, 200).await;
    assert_eq!(deleted["state"], "deleted");
    assert_error(
        app.get(&path, &ada.token).await,
        404,
        "not_found_error",
        "resource_missing",
    )
    .await;
    let listed = app.get_json("/v1/webhooks", &ada.token).await;
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn another_accounts_endpoint_is_not_found_and_reads_need_admin() {
    let app = private_app().await;
    let ada = app.tenant("ada@example.com").await;
    let bob = app.tenant("bob@example.com").await;
    let id = id_of(&create_hook(&app, &ada.token, "http://127.0.0.1:9/", &["*"]).await);
    let path = format!("/v1/webhooks/{id}");
    for (method, path) in [
        (Method::GET, path.clone()),
        (Method::PATCH, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::POST, format!("{path}/rotate-secret")),
        (Method::POST, format!("{path}/test")),
        (Method::GET, format!("{path}/deliveries")),
        (
            Method::POST,
            format!("{path}/deliveries/msg_01JD5Q3M8X2Y4Z6A7B8C9D0E1H/redeliver"),
        ),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"events": ["*"]}));
        let response = send(
            &app,
            method.clone(),
            &path,
            Some(&bob.token),
            &[("If-Match", "\"1\"")],
            body.as_ref(),
        )
        .await;
        assert_eq!(response.status(), 404, "{method} {path}");
    }
    assert_eq!(
        app.get_json("/v1/webhooks", &bob.token).await["items"],
        json!([])
    );
    let reader = app.mint_token(&ada.token, &["read"]).await;
    assert_eq!(app.get("/v1/webhooks", &reader).await.status(), 403);
    assert_eq!(app.get(&path, &ada.token).await.status(), 200);
    // A malformed id answers like an unknown one.
    assert_eq!(app.get("/v1/webhooks/nope", &ada.token).await.status(), 404);
}

#[tokio::test]
async fn bodies_are_checked_and_an_idempotent_create_creates_once() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    for body in [
        json!({"url": "https://example.com/", "events": []}),
        json!({"url": "https://example.com/", "events": ["byok.nonsense"]}),
        json!({"url": "ftp://example.com/", "events": ["*"]}),
        json!({"url": "https://example.com/", "events": ["*"], "secret": "mine"}),
    ] {
        let response = app.post("/v1/webhooks", Some(&ada.token), &body).await;
        assert!(matches!(response.status().as_u16(), 400 | 422), "{body}");
    }
    // A public address is taken as it is (nothing is sent at creation).
    let body = json!({"url": "https://93.184.215.14/hook", "events": ["*"]});
    let headers = [("Idempotency-Key", "create-hook-1")];
    let first = send(
        &app,
        Method::POST,
        "/v1/webhooks",
        Some(&ada.token),
        &headers,
        Some(&body),
    )
    .await;
    let first = assert_json(first, 201).await;
    let again = send(
        &app,
        Method::POST,
        "/v1/webhooks",
        Some(&ada.token),
        &headers,
        Some(&body),
    )
    .await;
    assert_eq!(
        header(&again, "idempotent-replayed").as_deref(),
        Some("true")
    );
    let again = assert_json(again, 201).await;
    assert_eq!(first, again);
    assert_eq!(
        app.get_json("/v1/webhooks", &ada.token).await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
