//! `GET /v1/byok/list`: filters by provider and state, pages with `limit` and `cursor`, oldest
//! first, and a malformed cursor.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{CONFIG_FIELDS, KEY, keys_of, list_all, list_ids, time};
use crate::helpers::{
    assert_error, json_of, openai, register_id, register_response, set, spawn_app,
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
    let disable = app
        .post(
            &format!("/v1/byok/disable/{o2}"),
            Some(&ada.token),
            &json!({}),
        )
        .await;
    assert_eq!(disable.status(), 200);
    let revoke = app
        .delete(&format!("/v1/byok/revoke/{an}"), &ada.token)
        .await;
    assert_eq!(revoke.status(), 200);

    let as_set = |ids: Vec<String>| ids.into_iter().collect::<BTreeSet<_>>();
    let ids = |items: &[&String]| items.iter().map(|s| (*s).clone()).collect::<BTreeSet<_>>();
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "").await),
        ids(&[&o1, &o2, &an, &mi])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "provider=openai").await),
        ids(&[&o1, &o2])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "provider=anthropic").await),
        ids(&[&an])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "state=active").await),
        ids(&[&o1, &mi])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "state=disabled").await),
        ids(&[&o2])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "state=revoked").await),
        ids(&[&an])
    );
    assert_eq!(
        as_set(list_ids(&app, &ada.token, "provider=openai&state=active").await),
        ids(&[&o1])
    );
    assert!(list_ids(&app, &ada.token, "provider=groq").await.is_empty());

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
        let response = app.get(&path, &ada.token).await;
        assert_eq!(response.status(), 200);
        let page = json_of(response).await;
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(
            items
                .iter()
                .map(|c| c["byok_id"].as_str().unwrap().to_owned()),
        );
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
    let first = json_of(app.get("/v1/byok/list?limit=3", &ada.token).await).await;
    let next = first["next_cursor"].as_str().unwrap();
    let again = json_of(
        app.get(&format!("/v1/byok/list?limit=3&cursor={next}"), &ada.token)
            .await,
    )
    .await;
    let again: Vec<&str> = again["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["byok_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        again,
        seen[3..6].iter().map(String::as_str).collect::<Vec<_>>()
    );
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
