//! Revoking an API key ends what it has open: an SSE stream stops, and a long poll answers 401,
//! within moments of the revocation, and nothing at or after the revocation's position reaches
//! them.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::{Tenant, TestApp, assert_error, openai, register_id, spawn_app};

/// How soon after the revocation is acknowledged an open stream or poll must have ended.
const AT_ONCE: Duration = Duration::from_secs(2);

/// A tenant and a second key with the `read` scope on its account: (tenant, key id, token).
async fn reader(app: &TestApp, email: &str) -> (Tenant, String, String) {
    let tenant = app.tenant(email).await;
    let minted = app.mint_key(&tenant.token, &["read"]).await;
    let id = minted["id"].as_str().unwrap().to_owned();
    let token = minted["api_key"].as_str().unwrap().to_owned();
    (tenant, id, token)
}

async fn revoke(app: &TestApp, admin: &str, key_id: &str) -> Instant {
    let response = app
        .delete(&format!("/v1/account/keys/{key_id}"), admin)
        .await;
    assert_eq!(response.status(), 200);
    Instant::now()
}

/// The cursor after everything the account's feed holds now.
async fn cursor_now(app: &TestApp, token: &str) -> String {
    let page: Value = app
        .get("/v1/events?limit=500", token)
        .await
        .json()
        .await
        .unwrap();
    page["next_cursor"].as_str().unwrap().to_owned()
}

/// Opens the SSE stream at `path` with `token`; answers a task that reads it until it ends
/// (or 20 s pass) and answers the event types it delivered and when it ended.
async fn open_stream(
    app: &TestApp,
    path: &str,
    token: &str,
) -> tokio::task::JoinHandle<(Vec<String>, Option<Instant>)> {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    tokio::spawn(async move {
        let mut text = String::new();
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(Ok(chunk)) = body.next().await {
                text.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await;
        let kinds = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_owned)
            .collect();
        (kinds, ended.ok().map(|()| Instant::now()))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_its_event_streams() {
    let app = spawn_app().await;
    let (tenant, key_id, token) = reader(&app, "stream@example.com").await;
    // Every event, and a filter that the revocation's own event does not pass.
    let everything = open_stream(&app, "/v1/events/stream", &token).await;
    let filtered = open_stream(&app, "/v1/events/stream?types=byok.registered", &token).await;
    // A stream of another key stays open.
    let bystander = open_stream(&app, "/v1/events/stream", &tenant.token).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    register_id(
        &app,
        &tenant.token,
        &openai("before", "sk-revoke-before-0123456789"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let revoked = revoke(&app, &tenant.token, &key_id).await;
    // Written after the revocation: no stream of the revoked key may carry it.
    register_id(
        &app,
        &tenant.token,
        &openai("after", "sk-revoke-after-0123456789"),
    )
    .await;

    let (kinds, ended) = everything.await.unwrap();
    let ended = ended.expect("the stream of the revoked key ended");
    assert!(
        ended.duration_since(revoked) < AT_ONCE,
        "ended {:?} after the revocation",
        ended.duration_since(revoked)
    );
    assert_eq!(
        kinds,
        [
            "account.created",
            "account_key.created",
            "account_key.created",
            "byok.registered"
        ]
    );
    let (kinds, ended) = filtered.await.unwrap();
    let ended = ended.expect("the filtered stream of the revoked key ended");
    assert!(ended.duration_since(revoked) < AT_ONCE);
    assert_eq!(kinds, ["byok.registered"]);
    // The tenant's own key still streams, and sees the revocation and what followed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!bystander.is_finished(), "another key's stream ended");
    bystander.abort();

    // Reconnecting with the revoked key is refused.
    let again = app.get("/v1/events/stream", &token).await;
    assert_error(again, 401, "authentication_error", "invalid_token").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_its_long_polls_with_401() {
    let app = spawn_app().await;
    let (tenant, key_id, token) = reader(&app, "poll@example.com").await;
    let credential = register_id(
        &app,
        &tenant.token,
        &openai("polled", "sk-revoke-poll-0123456789"),
    )
    .await;
    let cursor = cursor_now(&app, &token).await;
    let credential_cursor = {
        let page: Value = app
            .get(&format!("/v1/byok/events/{credential}"), &token)
            .await
            .json()
            .await
            .unwrap();
        page["next_cursor"].as_str().unwrap().to_owned()
    };
    let polls = [
        // The revocation's own event would answer this one.
        format!("/v1/events?wait=30&cursor={cursor}"),
        // Nothing the revocation writes passes these.
        format!("/v1/events?wait=30&types=byok.updated&cursor={cursor}"),
        format!("/v1/byok/events/{credential}?wait=30&cursor={credential_cursor}"),
    ];
    let waiting: Vec<_> = polls
        .iter()
        .map(|path| {
            let request = app
                .client
                .get(format!("{}{path}", app.address))
                .bearer_auth(&token)
                .send();
            tokio::spawn(async move {
                let response = request.await.unwrap();
                (response, Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for poll in &waiting {
        assert!(
            !poll.is_finished(),
            "a long poll answered before anything happened"
        );
    }

    let revoked = revoke(&app, &tenant.token, &key_id).await;
    for (poll, path) in waiting.into_iter().zip(&polls) {
        let (response, answered) = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .unwrap_or_else(|_| panic!("{path} kept waiting after the revocation"))
            .unwrap();
        assert!(
            answered.duration_since(revoked) < AT_ONCE,
            "{path} answered {:?} after the revocation",
            answered.duration_since(revoked)
        );
        assert_error(response, 401, "authentication_error", "invalid_token").await;
    }
}
