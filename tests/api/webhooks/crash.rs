//! Deliveries survive SIGKILL: the real binary, killed after events are acknowledged and before
//! the receiver has taken them (it holds every request without answering), delivers each after
//! a restart with the same `webhook-id`; three cycles, nothing lost. A ping the API has accepted
//! (`202`) survives a kill the moment it is answered, as an event's delivery does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keyledger::crypto::MasterKey;
use serde_json::{Value, json};

use super::eventually;
use crate::helpers::fake_provider::{FakeProvider, Reply};
use crate::helpers::{ADMIN_TOKEN, Binary, serve_command};

const CYCLES: usize = 3;
const EVENTS_PER_CYCLE: usize = 4;

fn start(dir: &Path, master_key: &str) -> Binary {
    let mut command = serve_command(&dir.join("data"), master_key);
    command
        .env("KEYLEDGER_ALLOW_PRIVATE_URLS", "1")
        .env("KEYLEDGER_WEBHOOK_RETRY_SCALE", "0.01");
    Binary::spawn(&mut command, dir)
}

async fn post(
    client: &reqwest::Client,
    server: &Binary,
    path: &str,
    token: &str,
    body: Value,
) -> Value {
    post_answering(client, server, path, token, body, 201).await
}

async fn post_answering(
    client: &reqwest::Client,
    server: &Binary,
    path: &str,
    token: &str,
    body: Value,
    status: u16,
) -> Value {
    let response = client
        .post(format!("{}{path}", server.address))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), status, "{path}");
    response.json().await.unwrap()
}

/// Where the server's store goes, the master key it is started with, and a client for it.
fn setting() -> (tempfile::TempDir, String, reqwest::Client) {
    let dir = tempfile::tempdir().unwrap();
    let master_key = MasterKey::generate().to_base64().expose().clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    (dir, master_key, client)
}

/// A new account and an endpoint of it at the receiver, subscribed to `events`: the account's
/// token and the endpoint's id.
async fn account_with_hook(
    client: &reqwest::Client,
    server: &Binary,
    receiver: &str,
    events: &str,
) -> (String, String) {
    let account = post(
        client,
        server,
        "/v1/accounts",
        ADMIN_TOKEN,
        json!({"email": "ada@example.com"}),
    )
    .await;
    let token = account["api_key"].as_str().unwrap().to_owned();
    let hook = json!({"url": format!("{receiver}/hook"), "events": [events]});
    let hook = post(client, server, "/v1/webhooks", &token, hook).await;
    let hook_id = hook["webhook_id"].as_str().unwrap().to_owned();
    (token, hook_id)
}

/// What the receiver saw: per credential (the event's `byok_id`), each `webhook-id` and whether
/// that request was answered.
type Seen = Arc<Mutex<Vec<(String, String, bool)>>>;

#[tokio::test]
async fn deliveries_outlive_sigkill_with_the_same_webhook_id() {
    let accepting = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let (flag, record) = (accepting.clone(), seen.clone());
    let receiver = FakeProvider::start(move |request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let byok_id = body["data"]["byok_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let id = request.header("webhook-id").unwrap_or_default().to_owned();
        let answered = flag.load(Ordering::SeqCst);
        record.lock().unwrap().push((byok_id, id, answered));
        if answered {
            Reply::status(200)
        } else {
            // Held until the server is gone: never taken.
            Reply {
                delay: Duration::from_secs(120),
                ..Reply::status(200)
            }
        }
    })
    .await;
    let (dir, master_key, client) = setting();
    let mut token = String::new();
    let mut acknowledged = Vec::new();
    for cycle in 0..CYCLES {
        accepting.store(false, Ordering::SeqCst);
        let mut server = start(dir.path(), &master_key);
        if cycle == 0 {
            (token, _) =
                account_with_hook(&client, &server, &receiver.url, "byok.registered").await;
        }
        let mut this_cycle = BTreeSet::new();
        for n in 0..EVENTS_PER_CYCLE {
            let body = json!({"provider": "openai", "alias": format!("c{cycle}-{n}"),
                "api_key": "sk-test-0123456789abcdef"});
            let registered = post(&client, &server, "/v1/byok/register", &token, body).await;
            let byok_id = registered["byok_id"].as_str().unwrap().to_owned();
            this_cycle.insert(byok_id.clone());
            acknowledged.push(byok_id);
        }
        // Acknowledged, and not taken by the receiver: SIGKILL.
        server.kill().expect("SIGKILL");
        let taken_before = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.2 && this_cycle.contains(&s.0))
            .count();
        assert_eq!(
            taken_before, 0,
            "the receiver took a delivery before the kill"
        );

        accepting.store(true, Ordering::SeqCst);
        let mut server = start(dir.path(), &master_key);
        let expected: BTreeSet<String> = acknowledged.iter().cloned().collect();
        eventually(
            Duration::from_secs(30),
            "every acknowledged event delivered",
            || async {
                let taken: BTreeSet<String> = seen
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|s| s.2)
                    .map(|s| s.0.clone())
                    .collect();
                expected.is_subset(&taken).then_some(())
            },
        )
        .await;
        server.kill().expect("stop");
    }

    // One message per event, whatever the attempts: the same webhook-id before and after.
    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (byok_id, id, _) in seen.lock().unwrap().iter() {
        ids.entry(byok_id.clone()).or_default().insert(id.clone());
    }
    assert_eq!(ids.len(), CYCLES * EVENTS_PER_CYCLE, "{ids:?}");
    for (byok_id, set) in &ids {
        assert_eq!(
            set.len(),
            1,
            "{byok_id} came with several webhook-ids: {set:?}"
        );
    }
    let held: usize = seen.lock().unwrap().iter().filter(|s| !s.2).count();
    assert!(
        held > 0,
        "no delivery was in flight at a kill: the test proved nothing"
    );
}

#[tokio::test]
async fn an_accepted_ping_outlives_a_sigkill_right_after_its_answer() {
    // What the receiver answered: each `webhook-id` it took (answered with 200).
    let taken: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let accepting = Arc::new(AtomicBool::new(false));
    let (flag, record) = (accepting.clone(), taken.clone());
    let receiver = FakeProvider::start(move |request| {
        if !flag.load(Ordering::SeqCst) {
            return Reply {
                delay: Duration::from_secs(120),
                ..Reply::status(200)
            };
        }
        let id = request.header("webhook-id").unwrap_or_default().to_owned();
        record.lock().unwrap().insert(id);
        Reply::status(200)
    })
    .await;
    let (dir, master_key, client) = setting();
    let (mut token, mut hook_id) = (String::new(), String::new());
    for cycle in 0..CYCLES {
        accepting.store(false, Ordering::SeqCst);
        let mut server = start(dir.path(), &master_key);
        if cycle == 0 {
            (token, hook_id) = account_with_hook(&client, &server, &receiver.url, "*").await;
        }
        let path = format!("/v1/webhooks/{hook_id}/test");
        let queued = post_answering(&client, &server, &path, &token, json!({}), 202).await;
        let ping = queued["delivery_id"].as_str().unwrap().to_owned();
        // Answered: killed at once, well inside sled's own flush interval.
        server.kill().expect("SIGKILL");

        accepting.store(true, Ordering::SeqCst);
        let mut server = start(dir.path(), &master_key);
        eventually(
            Duration::from_secs(30),
            "the accepted ping delivered after the restart",
            || async { taken.lock().unwrap().contains(&ping).then_some(()) },
        )
        .await;
        server.kill().expect("stop");
    }
}
