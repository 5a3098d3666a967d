//! Usage reports and usage in a window: concurrent reports counted exactly, duplicates ignored
//! within a report, across reports and across a restart, totals of every window kind with
//! backdated records, every refusal reason, malformed reports, scopes and isolation.

use chrono::{DateTime, Duration, Utc};
use keyledger::domain::usage::{Granularity, QuotaWindow};
use reqwest::Method;
use serde_json::{Value, json};

use super::{ada_with_credential, missing_id, time};
use crate::helpers::{TestApp, assert_error, assert_json, openai, register_id, send};

/// A resolve-scoped token on the account of the admin `token`.
pub(super) async fn resolver(app: &TestApp, token: &str) -> String {
    app.mint_token(token, &["resolve"]).await
}

/// Sends `POST /v1/byok/usage/report` with `records`; answers the response.
pub(super) async fn report_response(
    app: &TestApp,
    token: &str,
    records: &[Value],
) -> reqwest::Response {
    let body = json!({ "records": records });
    send(
        app,
        Method::POST,
        "/v1/byok/usage/report",
        Some(token),
        &[],
        Some(&body),
    )
    .await
}

/// Reports `records`, which must be answered 200; answers the body.
pub(super) async fn report(app: &TestApp, token: &str, records: &[Value]) -> Value {
    assert_json(report_response(app, token, records).await, 200).await
}

pub(super) fn record(byok_id: &str, request_id: &str, spend_usd: f64) -> Value {
    json!({"byok_id": byok_id, "request_id": request_id, "spend_usd": spend_usd})
}

/// `GET /v1/byok/usage/{id}?period=`; answers the 200 body.
pub(super) async fn usage_of(app: &TestApp, token: &str, id: &str, period: Option<&str>) -> Value {
    let path = match period {
        Some(p) => format!("/v1/byok/usage/{id}?period={p}"),
        None => format!("/v1/byok/usage/{id}"),
    };
    assert_json(app.get(&path, token).await, 200).await
}

fn reasons(answer: &Value) -> Vec<(u64, String)> {
    answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn sixty_four_concurrent_reports_are_counted_exactly() {
    let (app, ada, id) = ada_with_credential().await;
    let gateway = resolver(&app, &ada.token).await;
    let reports = (0..64).map(|r| {
        let records: Vec<Value> = (0..10)
            .map(|i| {
                json!({"byok_id": id, "request_id": format!("r{r}-{i}"), "spend_usd": 0.000123,
                    "calls": 2})
            })
            .collect();
        let (app, gateway) = (&app, &gateway);
        async move { report(app, gateway, &records).await }
    });
    for answer in futures_util::future::join_all(reports).await {
        assert_eq!(answer["accepted"], 10, "{answer}");
        assert_eq!(answer["duplicates"], 0);
    }
    let usage = usage_of(&app, &ada.token, &id, Some("1d")).await;
    assert_eq!(usage["call_count"], 1280);
    // 640 × 123 micro-dollars, exactly.
    assert_eq!(usage["spend_usd"], json!(0.07872));
    assert_eq!(usage["period"], "1d");
}

#[tokio::test]
async fn duplicates_are_ignored_within_a_report_across_reports_and_across_a_restart() {
    let (app, ada, id) = ada_with_credential().await;
    let gateway = resolver(&app, &ada.token).await;
    let batch = [
        record(&id, "a", 1.0),
        record(&id, "b", 2.0),
        record(&id, "a", 4.0),
    ];
    let first = report(&app, &gateway, &batch).await;
    assert_eq!(first["accepted"], 2);
    assert_eq!(first["duplicates"], 0);
    assert_eq!(reasons(&first), [(2, "duplicate_in_batch".to_owned())]);
    assert_eq!(first["rejected"][0]["request_id"], "a");

    let again = report(
        &app,
        &gateway,
        &[record(&id, "b", 2.0), record(&id, "c", 8.0)],
    )
    .await;
    assert_eq!(again["accepted"], 1);
    assert_eq!(again["duplicates"], 1);
    assert_eq!(reasons(&again), [(0, "duplicate".to_owned())]);

    let app = app.restart().await;
    let after = report(&app, &gateway, &batch).await;
    assert_eq!(after["accepted"], 0);
    assert_eq!(after["duplicates"], 2);
    let usage = usage_of(&app, &ada.token, &id, None).await;
    assert_eq!(usage["spend_usd"], json!(11.0));
    assert_eq!(usage["call_count"], 3);
    assert_eq!(usage["period"], "30d");

    // Many reports of one request id at once: exactly one counts it.
    let same = (0..16).map(|_| {
        let (app, gateway, id) = (&app, &gateway, &id);
        async move { report(app, gateway, &[record(id, "contended", 0.5)]).await }
    });
    let answers = futures_util::future::join_all(same).await;
    let accepted: u64 = answers
        .iter()
        .map(|a| a["accepted"].as_u64().unwrap())
        .sum();
    let duplicates: u64 = answers
        .iter()
        .map(|a| a["duplicates"].as_u64().unwrap())
        .sum();
    assert_eq!((accepted, duplicates), (1, 15));
    let usage = usage_of(&app, &ada.token, &id, None).await;
    assert_eq!(usage["spend_usd"], json!(11.5));

    // The dedupe rows are projections: a rebuild keeps them.
    let (settings, dir) = app.stop_and_release().await;
    let store = keyledger::storage::Store::open(
        &settings.data_dir,
        &settings.master_key,
        keyledger::storage::Durability::Sync,
    )
    .unwrap();
    store.rebuild().unwrap();
    assert!(store.verify().unwrap().is_sound());
    store.shutdown();
    drop(store);
    let app = crate::helpers::start(settings, dir).await;
    let replayed = report(&app, &gateway, &[record(&id, "c", 8.0)]).await;
    assert_eq!(replayed["duplicates"], 1);
}

/// What a window counts of records at `times`: those whose bucket starts inside it.
fn expected(window: &Value, granularity: Granularity, times: &[(DateTime<Utc>, u64)]) -> u64 {
    let (start, end) = (time(&window["window_start"]), time(&window["window_end"]));
    times
        .iter()
        .filter(|(at, _)| {
            let bucket = granularity.bucket(*at);
            bucket >= start.timestamp() && bucket < end.timestamp()
        })
        .map(|(_, calls)| calls)
        .sum()
}

#[tokio::test]
async fn every_window_kind_totals_backdated_records() {
    let (app, ada, id) = ada_with_credential().await;
    let gateway = resolver(&app, &ada.token).await;
    let now = Utc::now();
    let ages = [
        Duration::minutes(1),
        Duration::hours(3),
        Duration::hours(23),
        Duration::hours(25),
        Duration::days(3),
        Duration::days(6) + Duration::hours(23),
        Duration::days(8),
        Duration::days(20),
        Duration::days(29) + Duration::hours(22),
        Duration::days(31),
        Duration::days(45),
        Duration::days(100),
        Duration::days(300),
        Duration::days(400),
    ];
    let records: Vec<Value> = ages
        .iter()
        .enumerate()
        .map(|(i, age)| {
            json!({"byok_id": id, "request_id": format!("old-{i}"), "spend_usd": 0,
                "calls": 1u64 << i, "occurred_at": (now - *age).to_rfc3339()})
        })
        .collect();
    let answer = report(&app, &gateway, &records).await;
    let refused: Vec<u64> = reasons(&answer).into_iter().map(|(i, _)| i).collect();
    // 400 days is before every window; the rest counts in some window.
    assert!(refused.contains(&13), "{answer}");
    let accepted: Vec<(DateTime<Utc>, u64)> = ages
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains(&(*i as u64)))
        .map(|(i, age)| (now - *age, 1u64 << i))
        .collect();
    for window in QuotaWindow::ALL {
        let usage = usage_of(&app, &ada.token, &id, Some(window.as_str())).await;
        assert_eq!(usage["period"], window.as_str());
        let want = expected(&usage, window.granularity(), &accepted);
        assert_eq!(usage["call_count"], want, "{window:?}: {usage}");
        let (start, end) = window.bounds(Utc::now());
        assert_eq!(time(&usage["window_start"]), start);
        assert_eq!(time(&usage["window_end"]), end);
    }
    // The rolling windows as documented: 1d holds the last 23 hours whatever the minute.
    let day = usage_of(&app, &ada.token, &id, Some("1d")).await;
    let calls = day["call_count"].as_u64().unwrap();
    assert_eq!(calls & 0b11, 0b11, "{day}");
    assert_eq!(calls & 0b1000, 0, "25 hours ago is outside 1d: {day}");
}

#[tokio::test]
async fn every_refusal_has_its_reason_and_the_rest_is_recorded() {
    let (app, ada, id) = ada_with_credential().await;
    let gateway = resolver(&app, &ada.token).await;
    let bob = app.tenant("bob@example.com").await;
    let bobs = register_id(&app, &bob.token, &openai("bob", super::KEY)).await;
    let now = Utc::now();
    let records = [
        record(&id, "ok-1", 0.25),
        record(&missing_id(), "unknown", 1.0),
        record(&bobs, "other-account", 1.0),
        record("not-an-id", "malformed-id", 1.0),
        record(&id, "negative", -0.01),
        record(&id, "precise", 0.0000001),
        record(&id, "huge", 1e12),
        json!({"byok_id": id, "request_id": "calls-negative", "spend_usd": 0, "calls": -1}),
        json!({"byok_id": id, "request_id": "calls-fraction", "spend_usd": 0, "calls": 1.5}),
        record(&id, "has space", 1.0),
        record(&id, "", 1.0),
        json!({"byok_id": id, "request_id": "future", "spend_usd": 1,
            "occurred_at": (now + Duration::hours(1)).to_rfc3339()}),
        json!({"byok_id": id, "request_id": "skewed", "spend_usd": 0.5,
            "occurred_at": (now + Duration::minutes(2)).to_rfc3339()}),
        json!({"byok_id": id, "request_id": "ancient", "spend_usd": 1,
            "occurred_at": (now - Duration::days(400)).to_rfc3339()}),
        record(&id, "ok-1", 0.25),
        json!({"byok_id": id, "request_id": "with-outcome", "spend_usd": 0.25,
            "outcome": "rate_limited", "calls": 0}),
    ];
    let answer = report(&app, &gateway, &records).await;
    let want = [
        (1, "unknown_credential"),
        (2, "unknown_credential"),
        (3, "unknown_credential"),
        (4, "negative_spend"),
        (5, "invalid_spend"),
        (6, "invalid_spend"),
        (7, "invalid_calls"),
        (8, "invalid_calls"),
        (9, "invalid_request_id"),
        (10, "invalid_request_id"),
        (11, "occurred_in_future"),
        (13, "occurred_too_long_ago"),
        (14, "duplicate_in_batch"),
    ];
    let want: Vec<(u64, String)> = want.iter().map(|(i, r)| (*i, (*r).to_owned())).collect();
    assert_eq!(reasons(&answer), want, "{answer}");
    assert_eq!(answer["accepted"], 3);
    assert_eq!(answer["duplicates"], 0);
    let usage = usage_of(&app, &ada.token, &id, Some("1d")).await;
    assert_eq!(usage["spend_usd"], json!(1.0));
    assert_eq!(usage["call_count"], 2);
    // Bob's credential counted nothing.
    let bobs_usage = usage_of(&app, &bob.token, &bobs, None).await;
    assert_eq!(bobs_usage["call_count"], 0);
    // The outcome is kept in the record.
    let log = crate::helpers::whole_log(&app.store);
    let recorded = log
        .iter()
        .find(|e| e.event_type == "usage.recorded")
        .unwrap();
    assert_eq!(recorded.stream, format!("usage:{}", ada.account_id));
    let kept = &recorded.data["records"][2];
    assert_eq!(kept["request_id"], "with-outcome");
    assert_eq!(kept["outcome"], "rate_limited");
    assert_eq!(kept["spend_micros"], 250_000);
}

#[tokio::test]
async fn a_malformed_report_is_a_4xx_with_the_envelope() {
    let (app, ada, id) = ada_with_credential().await;
    let gateway = resolver(&app, &ada.token).await;
    let path = "/v1/byok/usage/report";
    let cases = [
        (json!({"records": {}}), json!("records")),
        // A missing field is named in the message; `param` is the object missing it.
        (json!({}), Value::Null),
        (
            json!({"records": [{"byok_id": id, "spend_usd": 1}]}),
            json!("records[0]"),
        ),
        (
            json!({"records": [{"byok_id": id, "request_id": "x"}]}),
            json!("records[0]"),
        ),
        (
            json!({"records": [{"byok_id": id, "request_id": "x", "spend_usd": "1"}]}),
            json!("records[0].spend_usd"),
        ),
        (
            json!({"records": [{"byok_id": id, "request_id": "x", "spend_usd": 1,
            "outcome": "fine"}]}),
            json!("records[0].outcome"),
        ),
        (
            json!({"records": [{"byok_id": id, "request_id": "x", "spend_usd": 1,
            "occurred_at": "yesterday"}]}),
            json!("records[0].occurred_at"),
        ),
        (json!({"records": [], "extra": 1}), json!("extra")),
    ];
    for (body, param) in cases {
        let response = send(&app, Method::POST, path, Some(&gateway), &[], Some(&body)).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
        assert_eq!(error["param"], param, "{body}");
    }
    let many: Vec<Value> = (0..1001)
        .map(|i| record(&id, &format!("m{i}"), 0.0))
        .collect();
    let error = assert_error(
        report_response(&app, &gateway, &many).await,
        422,
        "invalid_request_error",
        "invalid_parameter",
    )
    .await;
    assert_eq!(error["param"], "records");
    // A full report of 1,000 records fits.
    let full: Vec<Value> = (0..1000)
        .map(|i| record(&id, &format!("{i:0>100}"), 0.0))
        .collect();
    assert_eq!(report(&app, &gateway, &full).await["accepted"], 1000);
    // An empty one is answered too.
    assert_eq!(report(&app, &gateway, &[]).await["accepted"], 0);
}

#[tokio::test]
async fn only_the_resolve_scope_reports_and_usage_is_read_within_the_account() {
    let (app, ada, id) = ada_with_credential().await;
    let records = [record(&id, "x", 1.0)];
    for scopes in [
        &["admin"][..],
        &["write"],
        &["read"],
        &["admin", "write", "read"],
    ] {
        let token = app.mint_token(&ada.token, scopes).await;
        let response = report_response(&app, &token, &records).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
    let response = report_response(&app, "kl_nonsense", &records).await;
    assert_eq!(response.status(), 401);
    let gateway = resolver(&app, &ada.token).await;
    // The gateway's key does not read usage.
    let response = app.get(&format!("/v1/byok/usage/{id}"), &gateway).await;
    assert_error(response, 403, "permission_error", "insufficient_scope").await;
    let reader = app.mint_token(&ada.token, &["read"]).await;
    assert_eq!(usage_of(&app, &reader, &id, None).await["call_count"], 0);
    // Another account's credential, and an unknown one, are not found.
    let bob = app.tenant("bob@example.com").await;
    for path in [
        format!("/v1/byok/usage/{id}"),
        format!("/v1/byok/usage/{}", missing_id()),
    ] {
        let response = app.get(&path, &bob.token).await;
        assert_error(response, 404, "not_found_error", "resource_missing").await;
    }
    // Bob's gateway cannot report for Ada's credential.
    let bobs_gateway = resolver(&app, &bob.token).await;
    let answer = report(&app, &bobs_gateway, &records).await;
    assert_eq!(reasons(&answer), [(0, "unknown_credential".to_owned())]);
    // A period that is not a window is a 400.
    let response = app
        .get(&format!("/v1/byok/usage/{id}?period=24h"), &ada.token)
        .await;
    assert_error(response, 400, "invalid_request_error", "invalid_query").await;
}

#[tokio::test]
async fn usage_batches_stay_out_of_the_account_feed_and_the_credential_page() {
    let (app, ada, id) = ada_with_credential().await;
    let gateway = resolver(&app, &ada.token).await;
    report(&app, &gateway, &[record(&id, "x", 1.0)]).await;
    let feed = app.get_json("/v1/events", &ada.token).await;
    let types: Vec<&str> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(!types.contains(&"usage.recorded"), "{types:?}");
    let page = app
        .get_json(&format!("/v1/byok/events/{id}"), &ada.token)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
}
