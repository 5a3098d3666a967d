//! The SSRF policy of the outbound client, seen at the API: URLs that reach loopback, private,
//! link-local, metadata or unspecified addresses (in every spelling) are refused when an
//! endpoint is created or changed, and again when a delivery is made; plain http is refused
//! unless private URLs are allowed; and a redirect is never followed. The policy's own rules are unit-tested in `src/outbound/policy.rs`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::{create_hook, delivery_log, eventually, id_of, post_empty, private_app, some_event};
use crate::helpers::fake_provider::{FakeProvider, Reply};
use crate::helpers::{send, spawn_app, start};

/// Addresses off the public internet, written as an attacker would.
const VECTORS: [&str; 20] = [
    "http://127.0.0.1/hook",
    "http://127.8.9.10:8080/hook",
    "http://[::1]/hook",
    "http://10.0.0.1/hook",
    "http://10.255.255.254/hook",
    "http://172.16.0.1/hook",
    "http://172.31.255.254/hook",
    "http://192.168.0.1/hook",
    "http://192.168.255.254/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:169.254.169.254]/hook",
    "http://2130706433/hook",
    "http://0177.0.0.1/hook",
    "http://0x7f.0.0.1/hook",
    "http://127.1/hook",
    "http://[fd00::1]/hook",
    "http://[fe80::1]/hook",
    "http://100.64.0.1/hook",
];

/// A name that resolves to loopback (the system's hosts file).
const LOOPBACK_NAME: &str = "http://localhost:8080/hook";

async fn refused_at_creation(app: &crate::helpers::TestApp, token: &str, url: &str) {
    let response = app
        .post(
            "/v1/webhooks",
            Some(token),
            &json!({"url": url, "events": ["*"]}),
        )
        .await;
    assert_eq!(response.status(), 422, "{url} was not refused");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "url", "{url}: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{url}: {body}"
    );
}

#[tokio::test]
async fn private_addresses_are_refused_when_an_endpoint_is_created_or_changed() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    for url in VECTORS.iter().copied().chain([LOOPBACK_NAME]) {
        refused_at_creation(&app, &ada.token, url).await;
    }
    assert_eq!(
        app.get_json("/v1/webhooks", &ada.token).await["items"],
        json!([])
    );
    // A change of URL is vetted the same way.
    let id = id_of(&create_hook(&app, &ada.token, "https://93.184.215.14/hook", &["*"]).await);
    let path = format!("/v1/webhooks/{id}");
    for url in ["http://169.254.169.254/", LOOPBACK_NAME] {
        let patch = json!({"url": url});
        let response = send(
            &app,
            Method::PATCH,
            &path,
            Some(&ada.token),
            &[],
            Some(&patch),
        )
        .await;
        assert_eq!(response.status(), 422, "{url}");
    }
}

#[tokio::test]
async fn plain_http_is_refused_unless_private_urls_are_allowed() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let plain = "http://93.184.215.14/hook";
    refused_at_creation(&app, &ada.token, plain).await;
    let body = json!({"url": plain, "events": ["*"]});
    let response = app.post("/v1/webhooks", Some(&ada.token), &body).await;
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https"),
        "{error}"
    );
    // Nothing is revoked here: nothing is ever sent to the public address.
    let public = "https://93.184.215.14/hook";
    let id = id_of(&create_hook(&app, &ada.token, public, &["byok.revoked"]).await);
    let patch = json!({"url": plain});
    let path = format!("/v1/webhooks/{id}");
    let response = send(
        &app,
        Method::PATCH,
        &path,
        Some(&ada.token),
        &[],
        Some(&patch),
    )
    .await;
    assert_eq!(response.status(), 422);
    // Local receivers over http, where private URLs are allowed (development mode).
    let local = private_app().await;
    let bob = local.tenant("bob@example.com").await;
    create_hook(
        &local,
        &bob.token,
        "http://127.0.0.1:9/hook",
        &["byok.revoked"],
    )
    .await;
}

#[tokio::test]
async fn private_addresses_are_refused_when_a_delivery_is_made() {
    // Created while private URLs were allowed, delivered after the server stopped allowing them.
    let app = private_app().await;
    // Two accounts: each holds at most 16 endpoints.
    let tenants = [
        app.tenant("ada@example.com").await,
        app.tenant("bob@example.com").await,
    ];
    let mut hooks = Vec::new();
    for (n, url) in VECTORS.iter().copied().chain([LOOPBACK_NAME]).enumerate() {
        let token = tenants[n % 2].token.clone();
        hooks.push((
            url,
            token.clone(),
            id_of(&create_hook(&app, &token, url, &["*"]).await),
        ));
    }
    let (mut settings, dir) = app.stop().await;
    settings.outbound.allow_private_urls = false;
    let app = start(settings, dir).await;
    for (url, token, id) in &hooks {
        let queued = post_empty(&app, &format!("/v1/webhooks/{id}/test"), token).await;
        assert_eq!(queued.status(), 202, "{url}");
    }
    for (url, token, id) in &hooks {
        let log = eventually(Duration::from_secs(10), "an attempt", || async {
            let log = delivery_log(&app, token, id).await;
            (!log.is_empty()).then_some(log)
        })
        .await;
        let attempt = &log[log.len() - 1];
        assert_eq!(attempt["delivered"], false, "{url}");
        assert!(attempt.get("status_code").is_none(), "{url}: {attempt}");
        assert!(
            attempt["error"].as_str().unwrap().contains("refused"),
            "{url}: {attempt}"
        );
    }
}

#[tokio::test]
async fn a_redirect_is_an_answer_never_followed() {
    let target = FakeProvider::answering(200).await;
    let location = format!("{}/stolen", target.url);
    let redirecting = FakeProvider::start(move |_| Reply {
        headers: vec![("location".into(), location.clone())],
        ..Reply::status(302)
    })
    .await;
    let app = private_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = id_of(&create_hook(&app, &ada.token, &redirecting.url, &["*"]).await);
    some_event(&app, &ada.token, "prod").await;
    let log = eventually(Duration::from_secs(10), "an attempt", || async {
        let log = delivery_log(&app, &ada.token, &id).await;
        (!log.is_empty()).then_some(log)
    })
    .await;
    assert_eq!(
        (
            log[0]["status_code"].as_u64(),
            log[0]["delivered"].as_bool()
        ),
        (Some(302), Some(false))
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(target.seen().is_empty(), "the redirect was followed");
}
