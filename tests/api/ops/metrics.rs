//! `/metrics` (docs/operations.md, Monitor): every metric present, and moving under a small load
//! by what that load does, with the right labels; requests labelled by route pattern, never by
//! the raw path; and `/readyz`'s `writer_stuck` while the writer is held. The registry is the
//! process's, shared by every test server in this binary, so the growth asserted is at least what
//! this test did (other tests may add to the same counters meanwhile).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::fake_provider::{FakeProvider, closed_port};
use crate::helpers::{
    TestApp, assert_json, openai, register_id, register_response, spawn_app, spawn_app_with,
};
use crate::webhooks::{create_hook, delivery_log, eventually};

async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The value of the sample `name` whose labels are exactly `labels`, if there is one.
fn find(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (found, value) = match rest.strip_prefix('{') {
            Some(labelled) => {
                let (inside, value) = labelled.split_once("} ")?;
                let mut found: Vec<String> = inside.split(',').map(str::to_owned).collect();
                found.sort();
                (found, value)
            }
            None => (Vec::new(), rest.strip_prefix(' ')?),
        };
        (found == wanted).then(|| value.parse().unwrap())
    })
}

/// As [`find`], for a sample that must be there.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    find(text, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} is not in:\n{text}"))
}

#[tokio::test]
async fn the_store_metrics_move_under_writes() {
    let app = spawn_app().await;
    let names = [
        "keyledger_events_appended_total",
        "keyledger_append_seconds_count",
        "keyledger_flush_seconds_count",
        "keyledger_group_appends_count",
    ];
    let text = scrape(&app).await;
    let before: Vec<f64> = names.iter().map(|n| sample(&text, n, &[])).collect();
    let tenant = app.tenant("metrics@example.com").await;
    let writes: Vec<_> = (0..8)
        .map(|i| {
            let (app, token) = (&app, &tenant.token);
            async move {
                register_id(
                    app,
                    token,
                    &openai(&format!("m{i}"), "sk-metrics-0123456789"),
                )
                .await
            }
        })
        .collect();
    futures_util::future::join_all(writes).await;
    let text = scrape(&app).await;
    for (name, was) in names.iter().zip(before) {
        let now = sample(&text, name, &[]);
        assert!(now > was, "{name}: {was} -> {now}");
    }
    assert!(sample(&text, "keyledger_events_appended_total", &[]) >= 9.0);
    assert!(sample(&text, "keyledger_store_size_bytes", &[]) > 0.0);
    assert!(sample(&text, "keyledger_flush_seconds_sum", &[]) > 0.0);
    app.stop().await;
}

/// A sample's labels, as (name, value).
type Labels = &'static [(&'static str, &'static str)];

/// Every counter this test moves, as (name, labels, at least by how much).
const MOVES: [(&str, Labels, f64); 14] = [
    ("keyledger_resolve_total", &[("outcome", "byok")], 1.0),
    ("keyledger_resolve_total", &[("outcome", "pool")], 1.0),
    ("keyledger_resolve_total", &[("outcome", "error")], 1.0),
    (
        "keyledger_usage_records_total",
        &[("result", "accepted")],
        2.0,
    ),
    (
        "keyledger_usage_records_total",
        &[("result", "duplicate")],
        1.0,
    ),
    (
        "keyledger_usage_records_total",
        &[("result", "refused")],
        1.0,
    ),
    ("keyledger_probes_total", &[("outcome", "ok")], 1.0),
    ("keyledger_probes_total", &[("outcome", "unreachable")], 1.0),
    (
        "keyledger_webhook_deliveries_total",
        &[("outcome", "delivered")],
        1.0,
    ),
    ("keyledger_webhook_delivery_seconds_count", &[], 1.0),
    (
        "keyledger_http_requests_total",
        &[
            ("route", "/v1/byok/get/{id}"),
            ("method", "GET"),
            ("status", "200"),
        ],
        2.0,
    ),
    (
        "keyledger_http_request_seconds_count",
        &[("route", "/v1/byok/get/{id}"), ("method", "GET")],
        2.0,
    ),
    (
        "keyledger_http_requests_total",
        &[
            ("route", "/v1/byok/resolve"),
            ("method", "POST"),
            ("status", "422"),
        ],
        1.0,
    ),
    (
        "keyledger_http_requests_total",
        &[("route", "unmatched"), ("method", "GET"), ("status", "404")],
        1.0,
    ),
];

#[tokio::test]
async fn every_metric_is_present_and_moves_with_its_labels_under_load() {
    let receiver = FakeProvider::answering(200).await;
    let app = spawn_app_with(|s| s.outbound.allow_private_urls = true).await;
    let text = scrape(&app).await;
    let before: Vec<f64> = MOVES
        .iter()
        .map(|(name, labels, _)| find(&text, name, labels).unwrap_or(0.0))
        .collect();

    let tenant = app.tenant("load@example.com").await;
    let gateway = app.mint_token(&tenant.token, &["resolve"]).await;
    let hook = create_hook(&app, &tenant.token, &receiver.url, &["*"]).await;
    let id = register_id(&app, &tenant.token, &openai("prod", "sk-load-0123456789ab")).await;
    for _ in 0..2 {
        assert_json(
            app.get(&format!("/v1/byok/get/{id}"), &tenant.token).await,
            200,
        )
        .await;
    }
    let unknown = app.get("/v1/no/such/route", &tenant.token).await;
    assert_eq!(unknown.status(), 404);
    // Resolve: the credential, the pool (no anthropic credential), and a refusal once the
    // policy for chat is byok_only.
    let resolve = |body: Value| {
        let (app, gateway) = (&app, &gateway);
        async move { app.post("/v1/byok/resolve", Some(gateway), &body).await }
    };
    let byok = assert_json(resolve(json!({"provider": "openai"})).await, 200).await;
    assert_eq!(byok["source"], "byok", "{byok}");
    let chat = json!({"capability": "chat", "provider": "anthropic"});
    let pool = assert_json(resolve(chat.clone()).await, 200).await;
    assert_eq!(pool["source"], "pool", "{pool}");
    let policy = json!({"mode": "byok_only", "scope": {"capability": "chat"}});
    let set = app
        .post("/v1/byok/policy/set", Some(&tenant.token), &policy)
        .await;
    assert_eq!(set.status(), 200);
    assert_eq!(resolve(chat).await.status(), 422);
    // Usage: two accepted, then one of them again and one for a credential nobody has.
    let record = |byok_id: &str, request_id: &str| json!({"byok_id": byok_id, "request_id": request_id, "spend_usd": 0.01});
    let report = |records: Vec<Value>| {
        let (app, gateway) = (&app, &gateway);
        async move {
            let body = json!({ "records": records });
            let response = app
                .post("/v1/byok/usage/report", Some(gateway), &body)
                .await;
            assert_json(response, 200).await
        }
    };
    report(vec![record(&id, "load-1"), record(&id, "load-2")]).await;
    let missing = format!("byok_{}", ulid::Ulid::new());
    let second = report(vec![record(&id, "load-1"), record(&missing, "load-3")]).await;
    assert_eq!(second["accepted"], 0, "{second}");
    // Probes: one that answers, one whose address nothing listens on.
    let port = closed_port().await;
    for base_url in [
        format!("{}/v1", receiver.url),
        format!("http://127.0.0.1:{port}/v1"),
    ] {
        let body = json!({"provider": "self_hosted", "alias": "local", "base_url": base_url,
            "declared_region": "eu-west-1"});
        let created = assert_json(register_response(&app, &tenant.token, &body).await, 201).await;
        let probe_id = created["byok_id"].as_str().unwrap().to_owned();
        let path = format!("/v1/byok/test/{probe_id}");
        assert_json(app.post(&path, Some(&tenant.token), &json!({})).await, 200).await;
    }
    // The webhook: at least the registration's delivery reaches the receiver.
    let webhook_id = hook["webhook_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(10), "a delivery", || {
        let (app, token, webhook_id) = (&app, &tenant.token, &webhook_id);
        async move {
            let log = delivery_log(app, token, webhook_id).await;
            log.iter().any(|a| a["delivered"] == true).then_some(())
        }
    })
    .await;

    let text = scrape(&app).await;
    for name in [
        "keyledger_http_requests_total",
        "keyledger_http_request_seconds",
        "keyledger_resolve_total",
        "keyledger_usage_records_total",
        "keyledger_probes_total",
        "keyledger_webhook_deliveries_total",
        "keyledger_webhook_delivery_seconds",
        "keyledger_webhook_outbox_depth",
        "keyledger_writer_oldest_pending_seconds",
        "keyledger_events_appended_total",
        "keyledger_append_seconds",
        "keyledger_flush_seconds",
        "keyledger_group_appends",
        "keyledger_store_size_bytes",
        "keyledger_resolve_follower_lag_events",
        "keyledger_corrupt_records_total",
        "keyledger_resolve_settle_timeouts_total",
    ] {
        assert!(
            text.contains(&format!("\n# TYPE {name} ")),
            "{name}:\n{text}"
        );
    }
    for ((name, labels, by), was) in MOVES.iter().zip(before) {
        let now = sample(&text, name, labels);
        assert!(
            now - was >= *by,
            "{name} {labels:?}: {was} -> {now}, not by {by}"
        );
    }
    assert!(sample(&text, "keyledger_webhook_outbox_depth", &[]) >= 0.0);
    // Routes by their pattern: no credential id, not even the one fetched by its path.
    assert!(!text.contains(&id), "{text}");
    assert!(!text.contains("/v1/no/such/route"), "{text}");
    app.stop().await;
}

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let response = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// A writer that answers no append for longer than `--writer-stuck-after` makes the server not
/// ready, `writer_stuck`, and the gauge shows the wait; once it answers, the server is ready.
#[tokio::test]
async fn a_held_writer_makes_the_server_not_ready_until_it_answers() {
    let server = spawn_app_with(|s| s.writer_stuck_after = Duration::from_secs(1)).await;
    let app = &server;
    let tenant = app.tenant("stuck@example.com").await;
    assert_eq!(readyz(app).await.0, StatusCode::OK);
    let idle = sample(
        &scrape(app).await,
        "keyledger_writer_oldest_pending_seconds",
        &[],
    );
    assert!(idle < 1.0, "{idle}");

    let hold = app.store.hold_writer().unwrap();
    let write = {
        let token = &tenant.token;
        async move { register_id(app, token, &openai("held", "sk-held-0123456789ab")).await }
    };
    let watch = async {
        let stuck = eventually(
            Duration::from_secs(10),
            "writer_stuck",
            move || async move {
                let (status, body) = readyz(app).await;
                (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
            },
        )
        .await;
        assert_eq!(
            stuck,
            json!({"status": "unavailable", "reason": "writer_stuck"})
        );
        let waited = sample(
            &scrape(app).await,
            "keyledger_writer_oldest_pending_seconds",
            &[],
        );
        assert!(waited > 1.0, "{waited}");
        drop(hold);
    };
    // The write waits for the writer, and is answered once it is released.
    let (id, ()) = tokio::join!(write, watch);
    assert!(id.starts_with("byok_"), "{id}");
    eventually(Duration::from_secs(10), "ready again", move || async move {
        (readyz(app).await.0 == StatusCode::OK).then_some(())
    })
    .await;
    let idle = sample(
        &scrape(app).await,
        "keyledger_writer_oldest_pending_seconds",
        &[],
    );
    assert!(idle < 1.0, "{idle}");
    server.stop().await;
}
