//! Event feeds: pages in log order with opaque cursors, stable while others append, long poll,
//! and Server-Sent Events resuming from Last-Event-ID.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::helpers::{TestApp, assert_error, disable, openai, register_id, spawn_app};

async fn register(app: &TestApp, token: &str, alias: &str) -> String {
    let key = format!("sk-feed-{alias}-0123456789");
    register_id(app, token, &openai(alias, &key)).await
}

/// Reads the whole feed from the start in pages of `limit`.
async fn read_all(app: &TestApp, token: &str, base: &str, limit: usize) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let sep = if base.contains('?') { '&' } else { '?' };
        let path = match &cursor {
            Some(c) => format!("{base}{sep}limit={limit}&cursor={c}"),
            None => format!("{base}{sep}limit={limit}"),
        };
        let body = app.get_json(&path, token).await;
        let batch = body["items"].as_array().unwrap().clone();
        assert!(batch.len() <= limit);
        items.extend(batch);
        cursor = Some(body["next_cursor"].as_str().unwrap().to_owned());
        if body["has_more"] == false {
            return items;
        }
    }
}

fn positions(items: &[Value]) -> Vec<u64> {
    items
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

fn types(items: &[Value]) -> Vec<&str> {
    items.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn the_account_feed_is_ordered_complete_and_shows_no_private_fields() {
    let app = spawn_app().await;
    let token = app.account_token("feed@example.com").await;
    let id = register(&app, &token, "one").await;
    disable(&app, &token, &id).await;

    let items = read_all(&app, &token, "/v1/events", 2).await;
    assert_eq!(
        types(&items),
        [
            "account.created",
            "account_key.created",
            "byok.registered",
            "byok.disabled"
        ]
    );
    assert_eq!(positions(&items), [1, 2, 3, 4]);
    for event in &items {
        for field in [
            "event_id",
            "stream",
            "stream_version",
            "schema",
            "occurred_at",
            "actor",
            "request_id",
        ] {
            assert!(!event[field].is_null(), "{field} in {event}");
        }
        let data = event["data"].as_object().unwrap();
        assert!(!data.contains_key("sealed_secret") && !data.contains_key("token_hash"));
    }
    let text = serde_json::to_string(&items).unwrap();
    assert!(!text.contains("sk-feed-"));

    let only = read_all(
        &app,
        &token,
        "/v1/events?types=byok.disabled,account.created",
        1,
    )
    .await;
    assert_eq!(types(&only), ["account.created", "byok.disabled"]);

    let stream = read_all(&app, &token, &format!("/v1/byok/events/{id}"), 50).await;
    let versions: Vec<u64> = stream
        .iter()
        .map(|e| e["stream_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
}

#[tokio::test]
async fn feeds_are_per_account() {
    let app = spawn_app().await;
    let a = app.account_token("a@example.com").await;
    let b = app.account_token("b@example.com").await;
    let id = register(&app, &a, "mine").await;

    let theirs = read_all(&app, &b, "/v1/events", 50).await;
    assert!(
        theirs
            .iter()
            .all(|e| e["type"].as_str().unwrap().starts_with("account"))
    );
    assert_eq!(theirs.len(), 2);
    let missing = app.get(&format!("/v1/byok/events/{id}"), &b).await;
    assert_error(missing, 404, "not_found_error", "resource_missing").await;
}

#[tokio::test]
async fn bad_paging_parameters_answer_400() {
    let app = spawn_app().await;
    let token = app.account_token("params@example.com").await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=%%%", "cursor"),
        ("cursor=bm90LWEtbnVtYmVy", "cursor"),
        ("wait=31", "wait"),
    ] {
        let response = app.get(&format!("/v1/events?{query}"), &token).await;
        let error = assert_error(response, 400, "invalid_request_error", "invalid_query").await;
        assert_eq!(error["param"], param, "{query}");
    }
    let response = app.get("/v1/events?limit=x", &token).await;
    assert_error(response, 400, "invalid_request_error", "invalid_query").await;
    let response = app.get("/v1/events?bogus=1", &token).await;
    assert_error(response, 400, "invalid_request_error", "invalid_query").await;
}

#[tokio::test]
async fn a_cursor_resumes_later_with_only_what_is_new() {
    let app = spawn_app().await;
    let token = app.account_token("resume@example.com").await;
    let first = app.get_json("/v1/events", &token).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let after = format!("/v1/events?cursor={cursor}");
    let empty = app.get_json(&after, &token).await;
    assert!(empty["items"].as_array().unwrap().is_empty());
    assert_eq!(empty["next_cursor"], cursor.as_str());

    register(&app, &token, "later").await;
    let later = app.get_json(&after, &token).await;
    assert_eq!(
        types(later["items"].as_array().unwrap()),
        ["byok.registered"]
    );
}

/// 1,000 events paged while another writer appends: the reader sees every event exactly once,
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_while_another_writer_appends_has_no_duplicates_and_no_gaps() {
    let app = spawn_app().await;
    let token = app.account_token("race@example.com").await;
    let id = register(&app, &token, "busy").await;
    const TOGGLES: usize = 1_000;

    let writer = {
        let (client, address, token, id) = (
            app.client.clone(),
            app.address.clone(),
            token.clone(),
            id.clone(),
        );
        tokio::spawn(async move {
            for i in 0..TOGGLES {
                let verb = if i % 2 == 0 { "disable" } else { "enable" };
                let response = client
                    .post(format!("{address}/v1/byok/{verb}/{id}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        })
    };

    let total = 3 + TOGGLES as u64;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    while (seen.len() as u64) < total {
        let path = match &cursor {
            Some(c) => format!("/v1/events?limit=37&cursor={c}"),
            None => "/v1/events?limit=37".to_owned(),
        };
        let body = app.get_json(&path, &token).await;
        seen.extend(positions(body["items"].as_array().unwrap()));
        cursor = Some(body["next_cursor"].as_str().unwrap().to_owned());
        if body["items"].as_array().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    writer.await.unwrap();
    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_answers_when_the_next_event_arrives() {
    let app = spawn_app().await;
    let token = app.account_token("poll@example.com").await;
    let cursor = app.get_json("/v1/events", &token).await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let poll = {
        let (client, address, token) = (app.client.clone(), app.address.clone(), token.clone());
        tokio::spawn(async move {
            client
                .get(format!("{address}/v1/events?wait=20&cursor={cursor}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    register(&app, &token, "awaited").await;
    let body = tokio::time::timeout(Duration::from_secs(15), poll)
        .await
        .expect("the long poll answered before its wait ran out")
        .unwrap();
    assert_eq!(body["items"][0]["type"], "byok.registered");
}

/// Reads SSE events until `count` have arrived; answers (id, type) pairs.
async fn read_sse(
    client: &reqwest::Client,
    address: &str,
    token: &str,
    last_event_id: Option<u64>,
    count: usize,
) -> Vec<(u64, String)> {
    let mut request = client
        .get(format!("{address}/v1/events/stream"))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("an SSE chunk in time")
            .expect("stream open")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            let mut id = None;
            let mut kind = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    kind = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    let event: Value = serde_json::from_str(v).unwrap();
                    assert_eq!(event["position"].as_u64(), id);
                }
            }
            if let (Some(id), Some(kind)) = (id, kind) {
                events.push((id, kind));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_deliver_live_events_and_resume_from_last_event_id() {
    let app = spawn_app().await;
    let token = app.account_token("sse@example.com").await;
    let reader = {
        let (client, address, token) = (app.client.clone(), app.address.clone(), token.clone());
        tokio::spawn(async move { read_sse(&client, &address, &token, None, 4).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = register(&app, &token, "live").await;
    disable(&app, &token, &id).await;
    let live = reader.await.unwrap();
    let kinds: Vec<&str> = live.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "account.created",
            "account_key.created",
            "byok.registered",
            "byok.disabled"
        ]
    );

    let resumed = read_sse(&app.client, &app.address, &token, Some(2), 2).await;
    assert_eq!(resumed[0], (3, "byok.registered".to_owned()));
    assert_eq!(resumed[1].0, 4);

    let last_event_id = ("Last-Event-ID", "nope");
    let bad = app
        .get_with("/v1/events/stream", Some(&token), last_event_id)
        .await;
    assert_error(bad, 400, "invalid_request_error", "invalid_header").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_closes_event_streams_and_long_polls() {
    let app = spawn_app().await;
    let token = app.account_token("closing@example.com").await;
    // After the account's two events: the long poll waits for a third.
    let cursor = app.get_json("/v1/events", &token).await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app.get("/v1/events/stream", &token).await;
    let mut stream = response.bytes_stream();
    let poll = {
        let (client, address, token) = (app.client.clone(), app.address.clone(), token.clone());
        tokio::spawn(async move {
            client
                .get(format!("{address}/v1/events?wait=30&cursor={cursor}"))
                .bearer_auth(&token)
                .send()
                .await
                .map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(app.stop());
    // The stream ends instead of holding the shutdown until its connection times out.
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = stream.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the event stream stayed open during shutdown"
    );
    let polled = tokio::time::timeout(Duration::from_secs(20), poll).await;
    assert_eq!(
        polled.expect("the long poll answered").unwrap().unwrap(),
        200
    );
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("shutdown finished")
        .unwrap();
}
