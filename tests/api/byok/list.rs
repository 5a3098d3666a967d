//! `GET /v1/byok/list`: filters by provider and state, pages with `limit` and `cursor`, oldest
//! first, and a malformed cursor.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{CONFIG_FIELDS, KEY, byok_ids, list_all, list_ids, time};
use crate::helpers::{
    assert_error, disable, keys_of, openai, register_id, register_response, revoke, set, spawn_app,
};

#[tokio::test]
async fn list_filters_by_provider_and_by_state() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let o1 = register_id(&app, &ada.token, &openai("o1", KEY)).await;
    let o2 = register_id(&app, &ada.token, &openai("o2", KEY)).await;
    let an = register_id(
        &app,
        &ada.token,
        &json!({"provider": "anthropic", "alias": "a", "api_key": KEY}),
    )
    .await;
    let mi = register_id(
        &app,
        &ada.token,
        &json!({"provider": "mistral", "alias": "m", "api_key": KEY}),
    )
    .await;
    disable(&app, &ada.token, &o2).await;
    revoke(&app, &ada.token, &an).await;

    for (query, expected) in [
        ("", vec![&o1, &o2, &an, &mi]),
        ("provider=openai", vec![&o1, &o2]),
        ("provider=anthropic", vec![&an]),
        ("state=active", vec![&o1, &mi]),
        ("state=disabled", vec![&o2]),
        ("state=revoked", vec![&an]),
        ("provider=openai&state=active", vec![&o1]),
        ("provider=groq", vec![]),
    ] {
        let listed: BTreeSet<String> = list_ids(&app, &ada.token, query)
            .await
            .into_iter()
            .collect();
        let expected: BTreeSet<String> = expected.into_iter().cloned().collect();
        assert_eq!(listed, expected, "{query}");
    }

    // Items are whole configurations, with their revision.
    let items = list_all(&app, &ada.token, "provider=openai&state=disabled").await;
    assert_eq!(keys_of(&items[0]), set(&CONFIG_FIELDS));
    assert_eq!(items[0]["state"], "disabled");
    assert_eq!(items[0]["revision"], 2);

    // A state that does not exist is a malformed query.
    let response = app.get("/v1/byok/list?state=deleted", &ada.token).await;
    assert_error(response, 400, "invalid_request_error", "invalid_query").await;
}

#[tokio::test]
async fn list_pages_with_limit_and_cursor() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let mut registered = Vec::new();
    for i in 0..7 {
        registered.push(register_id(&app, &ada.token, &openai(&format!("k{i}"), KEY)).await);
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/byok/list?limit=3&cursor={c}"),
            None => "/v1/byok/list?limit=3".to_owned(),
        };
        let page = app.get_json(&path, &ada.token).await;
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(byok_ids(items));
        match page.get("next_cursor") {
            Some(next) => cursor = Some(next.as_str().expect("a string cursor").to_owned()),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end: {sizes:?}");
    }
    assert_eq!(sizes, [3, 3, 1]);
    // Each exactly once, in the order of one unpaged listing.
    let unpaged = list_ids(&app, &ada.token, "limit=50").await;
    assert_eq!(seen, unpaged);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>(),
        registered.iter().collect::<BTreeSet<_>>()
    );
    // A cursor can be used again later, with the same answer.
    let first = app.get_json("/v1/byok/list?limit=3", &ada.token).await;
    let next = first["next_cursor"].as_str().unwrap();
    let again = format!("/v1/byok/list?limit=3&cursor={next}");
    let again = app.get_json(&again, &ada.token).await;
    assert_eq!(byok_ids(again["items"].as_array().unwrap()), seen[3..6]);
}

#[tokio::test]
async fn list_is_oldest_first() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    // Concurrent registrations land in the same millisecond often enough to show the order.
    let bodies: Vec<Value> = (0..40).map(|i| openai(&format!("k{i}"), KEY)).collect();
    let requests = bodies
        .iter()
        .map(|body| register_response(&app, &ada.token, body));
    for response in futures_util::future::join_all(requests).await {
        assert_eq!(response.status(), 201);
    }
    let items = list_all(&app, &ada.token, "limit=500").await;
    assert_eq!(items.len(), 40);
    let created: Vec<DateTime<Utc>> = items.iter().map(|c| time(&c["created_at"])).collect();
    for pair in created.windows(2) {
        assert!(
            pair[0] <= pair[1],
            "listed out of creation order: {created:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_cursor_is_a_400() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    register_id(&app, &ada.token, &openai("k", KEY)).await;
    let not_utf8 = URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0xfd]);
    for cursor in ["!!!!", "a", "%25%25%25", "abc$def", not_utf8.as_str()] {
        let response = app
            .get(&format!("/v1/byok/list?cursor={cursor}"), &ada.token)
            .await;
        let error = assert_error(response, 400, "invalid_request_error", "invalid_query").await;
        assert_eq!(error["param"], "cursor", "{cursor}");
    }
    for query in ["limit=abc", "limit=-1", "bogus=1"] {
        let response = app.get(&format!("/v1/byok/list?{query}"), &ada.token).await;
        assert_error(response, 400, "invalid_request_error", "invalid_query").await;
    }
}
