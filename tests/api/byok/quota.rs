//! Quotas: setting, showing and removing one, `If-Match` and idempotency, validation, and
//! `byok.quota_exceeded` appended exactly once per window under concurrent reports.

use chrono::{Duration, Utc};
use keyledger::domain::usage::QuotaWindow;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use super::usage::{record, report, resolver, usage_of};
use super::{ada_with_credential, call, get_config, missing_id, time};
use crate::helpers::{TestApp, assert_error, assert_json, etag, json_of, send};

async fn set_quota(app: &TestApp, token: &str, id: &str, body: &Value) -> Response {
    let path = format!("/v1/byok/quota/set/{id}");
    call(app, Method::POST, &path, Some(token), None, Some(body)).await
}

/// The types of the credential's events, oldest first.
async fn event_types(app: &TestApp, token: &str, id: &str) -> Vec<String> {
    let page = app
        .get_json(&format!("/v1/byok/events/{id}?limit=500"), token)
        .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

fn count(types: &[String], wanted: &str) -> usize {
    types.iter().filter(|t| *t == wanted).count()
}

#[tokio::test]
async fn a_quota_is_set_shown_and_removed() {
    let (app, ada, id) = ada_with_credential().await;
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["quota"], Value::Null);
    assert_eq!(config["quota_exceeded"], Value::Null);

    let body = json!({"spend_limit_usd": 12.5, "call_limit": 1000, "window": "mtd"});
    let response = set_quota(&app, &ada.token, &id, &body).await;
    let next = etag(&response);
    assert_ne!(next, tag);
    let config = assert_json(response, 200).await;
    assert_eq!(config["quota"], body);
    let (got, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(got["quota"], body);
    let usage = usage_of(&app, &ada.token, &id, None).await;
    assert_eq!(usage["period"], "mtd");
    assert_eq!(usage["quota"], body);
    assert_eq!(
        usage["remaining"],
        json!({"spend_usd": 12.5, "calls": 1000})
    );

    // A stale revision is a conflict; the current one works.
    let path = format!("/v1/byok/quota/set/{id}");
    let removal = json!({"quota": null});
    let stale = call(
        &app,
        Method::POST,
        &path,
        Some(&ada.token),
        Some(&tag),
        Some(&removal),
    )
    .await;
    assert_error(stale, 409, "conflict_error", "version_conflict").await;
    let removed = call(
        &app,
        Method::POST,
        &path,
        Some(&ada.token),
        Some(&next),
        Some(&removal),
    )
    .await;
    assert_eq!(assert_json(removed, 200).await["quota"], Value::Null);
    let usage = usage_of(&app, &ada.token, &id, None).await;
    assert_eq!(usage["period"], "30d");
    assert!(
        usage.get("quota").is_none() && usage.get("remaining").is_none(),
        "{usage}"
    );
    // Removing again changes nothing.
    let again = assert_json(set_quota(&app, &ada.token, &id, &removal).await, 200).await;
    let types = event_types(&app, &ada.token, &id).await;
    assert_eq!(count(&types, "byok.quota_set"), 2, "{types:?} {again}");

    // An idempotency key answers a retry with the first response.
    let body = json!({"call_limit": 5, "window": "7d"});
    let headers = [("Idempotency-Key", "quota-1")];
    let first = send(
        &app,
        Method::POST,
        &path,
        Some(&ada.token),
        &headers,
        Some(&body),
    )
    .await;
    let first = assert_json(first, 200).await;
    let retry = send(
        &app,
        Method::POST,
        &path,
        Some(&ada.token),
        &headers,
        Some(&body),
    )
    .await;
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    assert_eq!(json_of(retry).await, first);
}

#[tokio::test]
async fn bad_quotas_are_422_naming_the_field() {
    let (app, ada, id) = ada_with_credential().await;
    let invalid = [
        (json!({"spend_limit_usd": 5}), "window"),
        (json!({"window": "mtd"}), "spend_limit_usd"),
        (
            json!({"spend_limit_usd": 0, "window": "mtd"}),
            "spend_limit_usd",
        ),
        (
            json!({"spend_limit_usd": -1, "window": "mtd"}),
            "spend_limit_usd",
        ),
        (
            json!({"spend_limit_usd": 0.0000001, "window": "mtd"}),
            "spend_limit_usd",
        ),
        (
            json!({"spend_limit_usd": 1e15, "window": "mtd"}),
            "spend_limit_usd",
        ),
        (json!({"call_limit": 0, "window": "1d"}), "call_limit"),
        (json!({"call_limit": 1.5, "window": "1d"}), "call_limit"),
        (json!({"call_limit": -3, "window": "1d"}), "call_limit"),
        (json!({"quota": {"call_limit": 3, "window": "1d"}}), "quota"),
        (json!({"quota": null, "window": "1d"}), "quota"),
    ];
    for (body, param) in invalid {
        let response = set_quota(&app, &ada.token, &id, &body).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
        assert_eq!(error["param"], param, "{body}");
    }
    let malformed = [
        (json!({"call_limit": 3, "window": "24h"}), "window"),
        (
            json!({"call_limit": 3, "window": "1d", "limit": 3}),
            "limit",
        ),
        (
            json!({"spend_limit_usd": "5", "window": "1d"}),
            "spend_limit_usd",
        ),
    ];
    for (body, param) in malformed {
        let response = set_quota(&app, &ada.token, &id, &body).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
        assert_eq!(error["param"], param, "{body}");
    }
    // Nothing was appended, and 200.0 is a whole number of calls.
    let ok = set_quota(
        &app,
        &ada.token,
        &id,
        &json!({"call_limit": 200.0, "window": "1d"}),
    )
    .await;
    assert_eq!(assert_json(ok, 200).await["quota"]["call_limit"], 200);
}

#[tokio::test]
async fn quota_set_needs_write_and_stays_in_the_account() {
    let (app, ada, id) = ada_with_credential().await;
    let body = json!({"call_limit": 3, "window": "1d"});
    for scopes in [&["read"][..], &["resolve"]] {
        let token = app.mint_token(&ada.token, scopes).await;
        let response = set_quota(&app, &token, &id, &body).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
    let bob = app.tenant("bob@example.com").await;
    for target in [id.clone(), missing_id()] {
        let response = set_quota(&app, &bob.token, &target, &body).await;
        assert_error(response, 404, "not_found_error", "resource_missing").await;
    }
    // Revoked: refused.
    crate::helpers::revoke(&app, &ada.token, &id).await;
    let response = set_quota(&app, &ada.token, &id, &body).await;
    assert_error(response, 409, "conflict_error", "credential_revoked").await;
}

#[tokio::test]
async fn the_quota_is_exceeded_exactly_once_per_window_under_concurrent_reports() {
    let (app, ada, id) = ada_with_credential().await;
    let gateway = resolver(&app, &ada.token).await;
    let body = json!({"call_limit": 50, "window": "mtd"});
    assert_json(set_quota(&app, &ada.token, &id, &body).await, 200).await;
    let reports = (0..64).map(|r| {
        let (app, gateway, id) = (&app, &gateway, &id);
        async move { report(app, gateway, &[record(id, &format!("c{r}"), 0.01)]).await }
    });
    for answer in futures_util::future::join_all(reports).await {
        assert_eq!(answer["accepted"], 1, "{answer}");
    }
    let types = event_types(&app, &ada.token, &id).await;
    assert_eq!(count(&types, "byok.quota_exceeded"), 1, "{types:?}");
    let (config, _) = get_config(&app, &ada.token, &id).await;
    let (start, end) = QuotaWindow::Mtd.bounds(Utc::now());
    assert_eq!(time(&config["quota_exceeded"]["window_start"]), start);
    assert_eq!(time(&config["quota_exceeded"]["until"]), end);
    let page = app
        .get_json(&format!("/v1/byok/events/{id}?limit=500"), &ada.token)
        .await;
    let exceeded = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "byok.quota_exceeded")
        .unwrap()
        .clone();
    let data = &exceeded["data"];
    assert_eq!(data["window"], "mtd");
    assert_eq!(data["byok_id"], id.as_str());
    assert!(data["calls"].as_u64().unwrap() >= 50, "{data}");
    let usage = usage_of(&app, &ada.token, &id, None).await;
    assert_eq!(usage["call_count"], 64);
    assert_eq!(usage["remaining"], json!({"calls": 0}));

    // More usage in the same window appends nothing more.
    report(&app, &gateway, &[record(&id, "later", 0.01)]).await;
    let types = event_types(&app, &ada.token, &id).await;
    assert_eq!(count(&types, "byok.quota_exceeded"), 1, "{types:?}");

    // Raising the limit clears it; lowering it under the usage exceeds it again at once.
    let raised = set_quota(
        &app,
        &ada.token,
        &id,
        &json!({"call_limit": 1000, "window": "mtd"}),
    )
    .await;
    assert_eq!(
        assert_json(raised, 200).await["quota_exceeded"],
        Value::Null
    );
    let lowered = set_quota(
        &app,
        &ada.token,
        &id,
        &json!({"call_limit": 10, "window": "mtd"}),
    )
    .await;
    let lowered = assert_json(lowered, 200).await;
    assert_eq!(time(&lowered["quota_exceeded"]["until"]), end, "{lowered}");
    let types = event_types(&app, &ada.token, &id).await;
    assert_eq!(count(&types, "byok.quota_exceeded"), 2, "{types:?}");
    // The answer's revision is the credential's after both events.
    let (_, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(lowered["revision"].to_string(), tag.trim_matches('"'));
}

#[tokio::test]
async fn a_rolling_quota_frees_the_credential_when_old_usage_leaves_the_window() {
    let (app, ada, id) = ada_with_credential().await;
    let gateway = resolver(&app, &ada.token).await;
    let body = json!({"spend_limit_usd": 1, "window": "1d"});
    assert_json(set_quota(&app, &ada.token, &id, &body).await, 200).await;
    let now = Utc::now();
    let old = now - Duration::hours(5);
    let records = [
        json!({"byok_id": id, "request_id": "old", "spend_usd": 0.75,
            "occurred_at": old.to_rfc3339()}),
        json!({"byok_id": id, "request_id": "new", "spend_usd": 0.25}),
    ];
    assert_eq!(report(&app, &gateway, &records).await["accepted"], 2);
    let (config, _) = get_config(&app, &ada.token, &id).await;
    let until = time(&config["quota_exceeded"]["until"]);
    // The 0.75 leaves when the window no longer reaches its hour: 24 hours after that hour.
    let old_hour = old.timestamp() / 3600 * 3600;
    assert_eq!(until.timestamp(), old_hour + 24 * 3600, "{config}");
    let usage = usage_of(&app, &ada.token, &id, None).await;
    assert_eq!(usage["spend_usd"], json!(1.0));
    assert_eq!(usage["remaining"], json!({"spend_usd": 0.0}));
}

#[tokio::test]
async fn usage_recorded_without_its_exceedance_is_caught_up_by_the_next_report() {
    use keyledger::domain::usage::{UsageEvent, UsageRecord};
    use keyledger::domain::{AccountId, CredentialId};
    use keyledger::es::{DomainEvent, EventMeta, ExpectedVersion, StreamId};
    use keyledger::storage::AppendRequest;

    let (app, ada, id) = ada_with_credential().await;
    let gateway = resolver(&app, &ada.token).await;
    let body = json!({"call_limit": 3, "window": "ytd"});
    assert_json(set_quota(&app, &ada.token, &id, &body).await, 200).await;
    // What a server that stopped right after a report's append leaves: the usage, and no
    // `byok.quota_exceeded`.
    let account = AccountId::parse(&ada.account_id).unwrap();
    let event = UsageEvent::Recorded {
        account_id: account.clone(),
        records: (0..3)
            .map(|i| UsageRecord {
                byok_id: CredentialId::parse(&id).unwrap(),
                request_id: format!("before-the-stop-{i}"),
                spend_micros: 0,
                calls: 1,
                occurred_at: Utc::now(),
                outcome: None,
            })
            .collect(),
        recorded_at: Utc::now(),
    };
    let request = AppendRequest {
        stream: StreamId::new("usage", account.as_str()),
        expected: ExpectedVersion::Any,
        events: vec![event.to_new_event().unwrap()],
        meta: EventMeta::default(),
        data_key: None,
        also: Vec::new(),
        idempotency: None,
    };
    app.store.append(request).await.unwrap();
    let app = app.restart().await;
    assert_eq!(usage_of(&app, &ada.token, &id, None).await["call_count"], 3);
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["quota_exceeded"], Value::Null);
    // The next report for the credential appends it, even the gateway's retry of the report
    // whose answer it never got (all duplicates now).
    let answer = report(&app, &gateway, &[record(&id, "before-the-stop-0", 0.0)]).await;
    assert_eq!(answer["duplicates"], 1);
    let types = event_types(&app, &ada.token, &id).await;
    assert_eq!(count(&types, "byok.quota_exceeded"), 1, "{types:?}");
    report(&app, &gateway, &[record(&id, "after-the-restart", 0.0)]).await;
    let types = event_types(&app, &ada.token, &id).await;
    assert_eq!(count(&types, "byok.quota_exceeded"), 1, "{types:?}");
    let (config, _) = get_config(&app, &ada.token, &id).await;
    let (_, end) = QuotaWindow::Ytd.bounds(Utc::now());
    assert_eq!(time(&config["quota_exceeded"]["until"]), end);
}
