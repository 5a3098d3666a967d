//! The outbox is not a projection: a rebuild keeps the deliveries still to make and writes none
//! for events already delivered, so history is never delivered again (docs/adr/0029); `verify`
//! stays sound and checks each endpoint's signing key. And five days of failures (scaled)
//! disable an endpoint.

use std::time::{Duration, Instant};

use super::{create_hook, delivery_log, eventually, id_of, private_app, some_event};
use crate::helpers::fake_provider::FakeProvider;
use crate::helpers::spawn_app_with;

#[tokio::test]
async fn a_rebuild_keeps_pending_deliveries_and_delivers_no_history() {
    let delivered = FakeProvider::answering(200).await;
    let failing = FakeProvider::answering(503).await;
    let app = private_app().await;
    let ada = app.tenant("ada@example.com").await;
    create_hook(&app, &ada.token, &delivered.url, &["*"]).await;
    let pending = id_of(&create_hook(&app, &ada.token, &failing.url, &["*"]).await);
    some_event(&app, &ada.token, "one").await;
    some_event(&app, &ada.token, "two").await;
    eventually(
        Duration::from_secs(10),
        "both events delivered and failed once",
        || async {
            let failed = delivery_log(&app, &ada.token, &pending).await.len();
            // A delivered message leaves the outbox just after its receiver answered.
            let outbox = app.store.outbox().unwrap().len();
            (delivered.seen().len() == 2 && failed >= 2 && outbox == 2).then_some(())
        },
    )
    .await;
    let before: Vec<_> = app
        .store
        .outbox()
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        before.len(),
        2,
        "the failing endpoint's two deliveries are pending"
    );

    assert!(app.store.verify().unwrap().is_sound());
    app.store.rebuild().unwrap();
    assert!(app.store.verify().unwrap().is_sound());
    let after: Vec<_> = app
        .store
        .outbox()
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(before, after, "a rebuild left the outbox as it was");

    let app = app.restart().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(delivered.seen().len(), 2, "history was delivered again");
    drop(app);
}

#[tokio::test]
async fn five_days_of_failures_disable_an_endpoint() {
    let failing = FakeProvider::answering(500).await;
    // Five days become 4.3 s; one message's whole schedule 2.7 s, so it takes several.
    let app = spawn_app_with(|s| {
        s.outbound.allow_private_urls = true;
        s.webhooks.retry_scale = 0.00001;
    })
    .await;
    let ada = app.tenant("ada@example.com").await;
    let id = id_of(&create_hook(&app, &ada.token, &failing.url, &["*"]).await);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let hook = loop {
        let hook = app
            .get_json(&format!("/v1/webhooks/{id}"), &ada.token)
            .await;
        if hook["state"] == "disabled" {
            break hook;
        }
        assert!(Instant::now() < deadline, "still active after 30 s: {hook}");
        some_event(&app, &ada.token, &format!("c{n}")).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(hook["disabled_reason"], "failing");
    assert!(
        n >= 10,
        "disabled after {n} events, before five (scaled) days"
    );
}
