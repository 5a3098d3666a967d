//! Credential health on a real server (docs/health.md): a gateway's `invalid_credentials`
//! reports take a credential out of resolve and a successful probe against a fake provider puts
//! it back; `byok.health_changed` is appended once per change, under concurrent reports too; a
//! 429 cools a credential down until its cooldown ends by time; periodic probes flip health
//! without any request and stop with the server; `explain` names the reasons.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use keyledger::service::health::HealthSettings;
use reqwest::Method;
use serde_json::{Value, json};

use super::usage::{report, resolver};
use super::{KEY, call, get_config};
use crate::helpers::fake_provider::{FakeProvider, Reply};
use crate::helpers::{
    Tenant, TestApp, assert_error, assert_json, openai, register_id, spawn_app_with,
};

/// A fake OpenAI whose `/models` answers the status held in the returned cell.
async fn switchable(status: u16) -> (FakeProvider, Arc<AtomicU16>) {
    let cell = Arc::new(AtomicU16::new(status));
    let answer = cell.clone();
    let fake = FakeProvider::start(move |_| Reply::status(answer.load(Ordering::SeqCst))).await;
    (fake, cell)
}

/// A server whose OpenAI probes go to `fake`, with these health settings; Ada's account.
async fn app_with(fake: &FakeProvider, health: HealthSettings) -> (TestApp, Tenant) {
    let base = format!("{}/v1", fake.url);
    let app = spawn_app_with(move |s| {
        s.outbound.allow_private_urls = true;
        s.outbound.base_urls = [("openai".to_owned(), base)].into_iter().collect();
        s.health = health;
    })
    .await;
    let ada = app.tenant("ada@example.com").await;
    (app, ada)
}

async fn resolve(app: &TestApp, token: &str, body: &Value) -> Value {
    assert_json(app.post("/v1/byok/resolve", Some(token), body).await, 200).await
}

/// The `reason` of each credential in an explain answer, by alias, sorted.
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
    items
        .iter()
        .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
        .collect()
}

/// The payloads of the credential's `byok.health_changed` events, oldest first.
async fn health_changes(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let page = app
        .get_json(&format!("/v1/byok/events/{id}?limit=500"), token)
        .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "byok.health_changed")
        .map(|e| e["data"].clone())
        .collect()
}

fn outcome(id: &str, request_id: &str, outcome: &str) -> Value {
    json!({"byok_id": id, "request_id": request_id, "spend_usd": 0.001, "outcome": outcome})
}

async fn probe(app: &TestApp, token: &str, id: &str) -> Value {
    let path = format!("/v1/byok/test/{id}");
    assert_json(
        call(app, Method::POST, &path, Some(token), None, None).await,
        200,
    )
    .await
}

/// Resolves until the answer satisfies `done` (within 10 s); answers it.
async fn resolve_until(
    app: &TestApp,
    token: &str,
    body: &Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = resolve(app, token, body).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "resolve still answers {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `within` for the credential's health to be `wanted`; answers its config.
async fn wait_for_health(
    app: &TestApp,
    token: &str,
    id: &str,
    wanted: &str,
    within: Duration,
) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (config, _) = get_config(app, token, id).await;
        if config["health"] == wanted {
            return config;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health is still {} after {within:?}",
            config["health"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn refused_calls_take_a_credential_out_of_resolve_and_a_probe_puts_it_back() {
    let (fake, status) = switchable(200).await;
    let (app, ada) = app_with(&fake, HealthSettings::default()).await;
    let gateway = resolver(&app, &ada.token).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["health"], "unknown");
    assert_eq!(config["health_until"], Value::Null);
    assert_eq!(config["health_changed_at"], Value::Null);
    assert_eq!(config["health_cause"], Value::Null);
    assert_eq!(resolve(&app, &gateway, &json!({})).await["byok_id"], id);

    // The gateway saw a 401: the answer to the report already leaves it out.
    let answer = report(&app, &gateway, &[outcome(&id, "r1", "invalid_credentials")]).await;
    assert_eq!(answer["accepted"], 1);
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["health"], "failing");
    assert_eq!(config["health_cause"], "usage");
    assert_eq!(config["health_error"], "invalid_credentials");
    assert!(config["health_changed_at"].is_string());
    let out = resolve(&app, &gateway, &json!({"explain": true})).await;
    assert_eq!(out["source"], "pool");
    assert_eq!(out["reason"], "none_usable");
    assert_eq!(reasons(&out), pairs(&[("prod", "unhealthy")]));
    // Listing shows it too.
    let list = app.get_json("/v1/byok/list", &ada.token).await;
    assert_eq!(list["items"][0]["health"], "failing");
    // The policy decides what a request that finds nothing else gets: under byok_only, a
    // refusal rather than the pool.
    let policy = json!({"mode": "byok_only"});
    assert_json(
        app.post("/v1/byok/policy/set", Some(&ada.token), &policy)
            .await,
        200,
    )
    .await;
    let refused = app
        .post("/v1/byok/resolve", Some(&gateway), &json!({}))
        .await;
    assert_error(
        refused,
        422,
        "invalid_request_error",
        "no_usable_credential",
    )
    .await;
    let policy = json!({"mode": "byok_then_pool"});
    assert_json(
        app.post("/v1/byok/policy/set", Some(&ada.token), &policy)
            .await,
        200,
    )
    .await;

    // A probe that the provider refuses changes nothing more.
    status.store(401, Ordering::SeqCst);
    assert_eq!(
        probe(&app, &ada.token, &id).await["error"],
        "invalid_credentials"
    );
    assert_eq!(health_changes(&app, &ada.token, &id).await.len(), 1);

    // The key works again (rotated at the provider, say): a successful probe puts it back.
    status.store(200, Ordering::SeqCst);
    assert_eq!(probe(&app, &ada.token, &id).await["ok"], true);
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["health"], "healthy");
    assert_eq!(config["health_cause"], "probe");
    assert_eq!(config["health_error"], Value::Null);
    assert_eq!(resolve(&app, &gateway, &json!({})).await["byok_id"], id);

    let changes = health_changes(&app, &ada.token, &id).await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0]["previous"], "unknown");
    assert_eq!(changes[0]["health"], "failing");
    assert_eq!(changes[0]["cause"], "usage");
    assert_eq!(changes[0]["error"], "invalid_credentials");
    assert_eq!(changes[0]["byok_id"], id);
    assert_eq!(changes[1]["previous"], "failing");
    assert_eq!(changes[1]["health"], "healthy");
    assert_eq!(changes[1]["cause"], "probe");
    assert!(changes[1].get("error").is_none());
    assert!(changes[1].get("until").is_none());
    // The account feed shows the event as the credential's feed does.
    let feed = app.get_json("/v1/events?limit=500", &ada.token).await;
    let types: Vec<&str> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == "byok.health_changed")
            .count(),
        2
    );
    // A report from before the probe, arriving late, cannot undo it.
    let stale = json!({"byok_id": id, "request_id": "late", "spend_usd": 0.001,
        "outcome": "invalid_credentials",
        "occurred_at": changes[0]["changed_at"]});
    assert_eq!(report(&app, &gateway, &[stale]).await["accepted"], 1);
    assert_eq!(health_changes(&app, &ada.token, &id).await.len(), 2);
}

#[tokio::test]
async fn concurrent_reports_of_one_change_append_it_once() {
    let fake = FakeProvider::answering(200).await;
    let (app, ada) = app_with(&fake, HealthSettings::default()).await;
    let gateway = resolver(&app, &ada.token).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let reports = (0..16).map(|r| {
        let records = [outcome(&id, &format!("r{r}"), "invalid_credentials")];
        let (app, gateway) = (&app, &gateway);
        async move { report(app, gateway, &records).await }
    });
    for answer in futures_util::future::join_all(reports).await {
        assert_eq!(answer["accepted"], 1, "{answer}");
    }
    let changes = health_changes(&app, &ada.token, &id).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0]["health"], "failing");

    // And back: 16 concurrent successes, one change.
    let reports = (0..16).map(|r| {
        let records = [outcome(&id, &format!("ok{r}"), "ok")];
        let (app, gateway) = (&app, &gateway);
        async move { report(app, gateway, &records).await }
    });
    futures_util::future::join_all(reports).await;
    let changes = health_changes(&app, &ada.token, &id).await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[1]["health"], "healthy");
    assert_eq!(changes[1]["cause"], "usage");

    // Concurrent probes that find it refused: one change as well.
    let fake = FakeProvider::answering(403).await;
    let (app, ada) = app_with(&fake, HealthSettings::default()).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let probes = (0..8).map(|_| {
        let (app, token, id) = (&app, &ada.token, &id);
        async move { probe(app, token, id).await }
    });
    for result in futures_util::future::join_all(probes).await {
        assert_eq!(result["error"], "invalid_credentials");
    }
    let changes = health_changes(&app, &ada.token, &id).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
}

#[tokio::test]
async fn a_rate_limited_credential_cools_down_and_comes_back_by_time() {
    let fake = FakeProvider::answering(429).await;
    let settings = HealthSettings {
        rate_limit_cooldown: Duration::from_secs(1),
        ..HealthSettings::default()
    };
    let (app, ada) = app_with(&fake, settings).await;
    let gateway = resolver(&app, &ada.token).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let spare = register_id(&app, &ada.token, &openai("spare", KEY)).await;
    assert_eq!(probe(&app, &ada.token, &id).await["error"], "rate_limited");
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["health"], "rate_limited");
    assert!(config["health_until"].is_string(), "{config}");
    let changes = health_changes(&app, &ada.token, &id).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["until"], config["health_until"]);
    assert_eq!(changes[0]["error"], "rate_limited");
    // Cooling down: the other credential serves, and explain says why.
    let answer = resolve(&app, &gateway, &json!({"explain": true})).await;
    assert_eq!(answer["byok_id"], spare);
    assert_eq!(
        reasons(&answer),
        pairs(&[("prod", "cooling_down"), ("spare", "picked")])
    );
    // A gateway's 429 while it cools down changes nothing.
    report(&app, &gateway, &[outcome(&id, "r1", "rate_limited")]).await;
    assert_eq!(health_changes(&app, &ada.token, &id).await.len(), 1);

    // The cooldown ends by time, with no event.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let answer = resolve(&app, &gateway, &json!({"byok_id": id, "explain": true})).await;
    assert_eq!(answer["byok_id"], id, "{answer}");
    assert_eq!(health_changes(&app, &ada.token, &id).await.len(), 1);
}

#[tokio::test]
async fn periodic_probes_flip_health_without_a_request_and_stop_with_the_server() {
    let (fake, status) = switchable(401).await;
    let settings = HealthSettings {
        probe_interval: Some(Duration::from_secs(1)),
        probe_concurrency: 2,
        ..HealthSettings::default()
    };
    let (app, ada) = app_with(&fake, settings).await;
    let gateway = resolver(&app, &ada.token).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let disabled = register_id(&app, &ada.token, &openai("off", KEY)).await;
    crate::helpers::disable(&app, &ada.token, &disabled).await;
    // The prober may have caught it in the moment it was active (a probe in flight then ends
    // within a moment against the local fake); never after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (off_at_disable, _) = get_config(&app, &ada.token, &disabled).await;

    let config = wait_for_health(&app, &ada.token, &id, "failing", Duration::from_secs(10)).await;
    assert_eq!(config["health_cause"], "periodic_probe");
    assert_eq!(config["last_test"]["error"], "invalid_credentials");
    // The prober's write waits for resolve's follower at most a moment; on a busy machine the
    // configuration can show the change first.
    let unhealthy = pairs(&[("off", "disabled"), ("prod", "unhealthy")]);
    let out = resolve_until(&app, &gateway, &json!({"explain": true}), |a| {
        reasons(a) == unhealthy
    })
    .await;
    assert_eq!(out["source"], "pool");

    status.store(200, Ordering::SeqCst);
    let config = wait_for_health(&app, &ada.token, &id, "healthy", Duration::from_secs(10)).await;
    assert_eq!(config["health_cause"], "periodic_probe");
    resolve_until(&app, &gateway, &json!({}), |a| a["byok_id"] == id.as_str()).await;
    // The disabled credential is not probed; the events name the server as their actor.
    let (off, _) = get_config(&app, &ada.token, &disabled).await;
    assert_eq!(off["last_test"], off_at_disable["last_test"]);
    let page = app
        .get_json(&format!("/v1/byok/events/{id}?limit=500"), &ada.token)
        .await;
    let periodic: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "byok.tested")
        .collect();
    assert!(periodic.len() >= 2);
    assert!(
        periodic.iter().all(|e| e["actor"] == "keyledger"),
        "{periodic:?}"
    );
    let changes = health_changes(&app, &ada.token, &id).await;
    assert_eq!(changes.len(), 2, "{changes:?}");

    // Probes are at least the interval apart, not one per tick.
    let probes = fake.seen().len();
    assert!(probes <= 8, "{probes} probes in a few seconds");

    // Stopping the server stops the prober: no probe after it.
    let started = std::time::Instant::now();
    app.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let after_stop = fake.seen().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(fake.seen().len(), after_stop);
}

#[tokio::test]
async fn without_an_interval_nothing_is_probed() {
    let fake = FakeProvider::answering(200).await;
    let (app, ada) = app_with(&fake, HealthSettings::default()).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fake.seen().is_empty());
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["health"], "unknown");
}

#[tokio::test]
async fn register_with_a_probe_sets_the_health_in_the_same_append() {
    let fake = FakeProvider::answering(200).await;
    let (app, ada) = app_with(&fake, HealthSettings::default()).await;
    let mut body = openai("prod", KEY);
    body["test"] = json!(true);
    let id = register_id(&app, &ada.token, &body).await;
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["health"], "healthy");
    assert_eq!(config["health_cause"], "probe");
    // byok.registered, byok.tested, byok.health_changed.
    assert_eq!(config["revision"], 3);
    assert_eq!(tag, "\"3\"");
}
