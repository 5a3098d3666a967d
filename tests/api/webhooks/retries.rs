//! Retries on the scaled schedule, the delivery log, redelivery, 410, and a receiver that hangs
//! beside one that answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{create_hook, delivery_log, eventually, id_of, post_empty, private_app, some_event};
use crate::helpers::fake_provider::{FakeProvider, Reply};
use crate::helpers::{TestApp, assert_json, send, spawn_app_with};

#[tokio::test]
async fn a_receiver_that_fails_three_times_gets_the_message_on_the_fourth_and_the_log_shows_each() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let receiver = FakeProvider::start(move |_| {
        if counter.fetch_add(1, Ordering::SeqCst) < 3 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let app = private_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = id_of(&create_hook(&app, &ada.token, &receiver.url, &["byok.registered"]).await);
    some_event(&app, &ada.token, "prod").await;

    let log = eventually(Duration::from_secs(15), "a delivered attempt", || async {
        let log = delivery_log(&app, &ada.token, &id).await;
        log.iter().any(|a| a["delivered"] == true).then_some(log)
    })
    .await;
    // Newest first: three failures (each with its next retry), then the delivery.
    let attempts: Vec<_> = log.iter().rev().collect();
    assert_eq!(attempts.len(), 4, "{log:?}");
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["attempt"], n as u64 + 1);
        assert!(attempt["latency_ms"].is_u64());
        assert_eq!(attempt["event_type"], "byok.registered");
    }
    for failed in &attempts[..3] {
        assert_eq!(failed["status_code"], 500);
        assert_eq!(failed["delivered"], false);
        assert!(failed["next_retry_at"].is_string(), "{failed}");
        assert!(failed["error"].is_string());
    }
    assert_eq!(attempts[3]["status_code"], 200);
    assert!(attempts[3].get("next_retry_at").is_none());
    // One message: every attempt carried the same webhook-id, the delivery's id.
    let delivery_id = attempts[0]["delivery_id"].as_str().unwrap().to_owned();
    let seen = receiver.seen();
    assert_eq!(seen.len(), 4);
    assert!(
        seen.iter()
            .all(|s| s.header("webhook-id") == Some(delivery_id.as_str()))
    );

    // Redelivery: the same message again, counted on.
    let path = format!("/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver");
    let queued = assert_json(post_empty(&app, &path, &ada.token).await, 202).await;
    assert_eq!(queued["delivery_id"], delivery_id.as_str());
    eventually(Duration::from_secs(10), "the redelivery", || async {
        (receiver.seen().len() == 5).then_some(())
    })
    .await;
    assert_eq!(
        receiver.seen()[4].header("webhook-id"),
        Some(delivery_id.as_str())
    );
    let log = eventually(
        Duration::from_secs(10),
        "the redelivery's attempt",
        || async {
            let log = delivery_log(&app, &ada.token, &id).await;
            (log.len() == 5).then_some(log)
        },
    )
    .await;
    assert_eq!(
        (log[0]["attempt"].as_u64(), log[0]["delivered"].as_bool()),
        (Some(5), Some(true))
    );
    let unknown = format!("/v1/webhooks/{id}/deliveries/msg_01JD5Q3M8X2Y4Z6A7B8C9D0E1H/redeliver");
    assert_eq!(post_empty(&app, &unknown, &ada.token).await.status(), 404);

    // The log pages, newest first, with a cursor.
    let page = app
        .get_json(&format!("/v1/webhooks/{id}/deliveries?limit=2"), &ada.token)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = app
        .get_json(
            &format!("/v1/webhooks/{id}/deliveries?limit=2&cursor={cursor}"),
            &ada.token,
        )
        .await;
    assert_eq!(next["items"][0]["attempt"], 3);
}

#[tokio::test]
async fn a_410_disables_the_endpoint() {
    let receiver = FakeProvider::answering(410).await;
    let app = private_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = id_of(&create_hook(&app, &ada.token, &receiver.url, &["*"]).await);
    some_event(&app, &ada.token, "first").await;
    let hook = eventually(Duration::from_secs(10), "the endpoint disabled", || async {
        let hook = app
            .get_json(&format!("/v1/webhooks/{id}"), &ada.token)
            .await;
        (hook["state"] == "disabled").then_some(hook)
    })
    .await;
    assert_eq!(hook["disabled_reason"], "gone");
    // The feed shows an event once its group is durable, a moment after the row is read.
    let feed = eventually(
        Duration::from_secs(5),
        "webhook.disabled in the feed",
        || async {
            let feed = app
                .get_json("/v1/events?types=webhook.disabled", &ada.token)
                .await;
            (feed["items"].as_array().unwrap().len() == 1).then_some(feed)
        },
    )
    .await;
    assert_eq!(feed["items"][0]["data"]["reason"], "gone");
    // Nothing more is sent to it.
    some_event(&app, &ada.token, "second").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.seen().len(), 1);
    let log = delivery_log(&app, &ada.token, &id).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status_code"], 410);
}

#[tokio::test]
async fn a_receiver_that_hangs_does_not_hold_up_another_endpoint() {
    let hung = FakeProvider::start(|_| Reply {
        delay: Duration::from_secs(30),
        ..Reply::status(200)
    })
    .await;
    let healthy = FakeProvider::answering(200).await;
    let app = spawn_app_with(|s| {
        s.outbound.allow_private_urls = true;
        s.webhooks.retry_scale = super::SCALE;
        s.webhooks.timeout = Duration::from_secs(60);
    })
    .await;
    let ada = app.tenant("ada@example.com").await;
    create_hook(&app, &ada.token, &hung.url, &["*"]).await;
    create_hook(&app, &ada.token, &healthy.url, &["*"]).await;
    let started = Instant::now();
    for n in 0..8 {
        some_event(&app, &ada.token, &format!("cred-{n}")).await;
    }
    eventually(
        Duration::from_secs(10),
        "every delivery to the healthy endpoint",
        || async { (healthy.seen().len() == 8).then_some(()) },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    // The hung endpoint holds its own slots only: a few in flight, none answered.
    let hung_seen = hung.seen().len();
    assert!(
        (1..=4).contains(&hung_seen),
        "{hung_seen} requests in flight to the hung endpoint"
    );
}

#[tokio::test]
async fn a_disabled_endpoint_keeps_its_pending_delivery_and_gets_it_once_enabled() {
    let answering = Arc::new(AtomicUsize::new(0));
    let flag = answering.clone();
    let receiver = FakeProvider::start(move |_| {
        if flag.load(Ordering::SeqCst) == 0 {
            Reply::status(500)
        } else {
            Reply::status(204)
        }
    })
    .await;
    let app = private_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = id_of(&create_hook(&app, &ada.token, &receiver.url, &["byok.registered"]).await);
    let path = format!("/v1/webhooks/{id}");
    let patch = |enabled: bool| set_enabled(&app, &ada.token, &path, enabled);
    some_event(&app, &ada.token, "prod").await;
    eventually(Duration::from_secs(10), "a failed attempt", || async {
        (!receiver.seen().is_empty()).then_some(())
    })
    .await;
    assert_json(patch(false).await, 200).await;
    // An attempt already under way may still end; after that, nothing while disabled, though
    // the scaled schedule would retry within milliseconds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = receiver.seen().len();
    answering.store(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.seen().len(), before, "delivered while disabled");

    assert_json(patch(true).await, 200).await;
    let log = eventually(
        Duration::from_secs(10),
        "the delivery once enabled",
        || async {
            let log = delivery_log(&app, &ada.token, &id).await;
            log.iter().any(|a| a["delivered"] == true).then_some(log)
        },
    )
    .await;
    assert_eq!(log[0]["event_type"], "byok.registered", "{log:?}");
    assert_eq!(receiver.seen().len(), before + 1);
}

async fn set_enabled(app: &TestApp, token: &str, path: &str, enabled: bool) -> reqwest::Response {
    let body = serde_json::json!({ "enabled": enabled });
    send(
        app,
        reqwest::Method::PATCH,
        path,
        Some(token),
        &[],
        Some(&body),
    )
    .await
}

#[tokio::test]
async fn a_webhook_timeout_longer_than_the_probe_timeout_is_waited_for() {
    let slow = FakeProvider::start(|_| Reply {
        delay: Duration::from_millis(1500),
        ..Reply::status(200)
    })
    .await;
    let app = spawn_app_with(|s| {
        s.outbound.allow_private_urls = true;
        s.outbound.connect_timeout = Duration::from_millis(500);
        s.outbound.timeout = Duration::from_secs(1);
        s.webhooks.retry_scale = super::SCALE;
        s.webhooks.timeout = Duration::from_secs(5);
    })
    .await;
    let ada = app.tenant("ada@example.com").await;
    let id = id_of(&create_hook(&app, &ada.token, &slow.url, &["byok.registered"]).await);
    some_event(&app, &ada.token, "prod").await;
    let log = eventually(Duration::from_secs(10), "a first attempt", || async {
        let log = delivery_log(&app, &ada.token, &id).await;
        (!log.is_empty()).then_some(log)
    })
    .await;
    // The first attempt, answered after the probe timeout but within the webhook timeout.
    let first = log.last().unwrap();
    assert_eq!(
        (&first["delivered"], &first["status_code"]),
        (&serde_json::json!(true), &serde_json::json!(200)),
        "{first}"
    );
}
