//! `If-Match` on every mutation: the current revision succeeds and moves the `ETag`, a stale one
//! is a 409 that changes nothing, a malformed one a 400, and concurrent pinned mutations have one
//! winner.

use keyledger::es::StreamId;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use super::{KEY, ada_with_credential, call, get_config, open_secrets};
use crate::helpers::{
    TestApp, assert_error, assert_one_winner, etag, json_of, openai, register_id, send, spawn_app,
};

/// Sends a mutation of `id` with an `If-Match` header.
async fn mutate(app: &TestApp, token: &str, endpoint: &str, id: &str, if_match: &str) -> Response {
    let (method, body) = match endpoint {
        "update" => (Method::PATCH, Some(json!({"weight": 42}))),
        "revoke" => (Method::DELETE, None),
        _ => (Method::POST, None),
    };
    call(
        app,
        method,
        &format!("/v1/byok/{endpoint}/{id}"),
        Some(token),
        Some(if_match),
        body.as_ref(),
    )
    .await
}

#[tokio::test]
async fn if_match_with_the_current_revision_succeeds_and_bumps_the_etag() {
    let (app, ada, id) = ada_with_credential().await;
    // (endpoint, If-Match, state after, ETag after)
    let steps = [
        ("disable", "\"1\"", "disabled", "\"2\""),
        ("enable", "\"2\"", "active", "\"3\""),
        ("update", "\"3\"", "active", "\"4\""),
        ("disable", "\"4\"", "disabled", "\"5\""),
        ("revoke", "\"5\"", "revoked", "\"6\""),
    ];
    for (endpoint, if_match, state, after) in steps {
        let response = mutate(&app, &ada.token, endpoint, &id, if_match).await;
        assert_eq!(response.status(), 200, "{endpoint} with {if_match}");
        assert_eq!(etag(&response), after, "{endpoint}");
        let config = json_of(response).await;
        assert_eq!(config["state"], state, "{endpoint}");
        let (got, tag) = get_config(&app, &ada.token, &id).await;
        assert_eq!((tag.as_str(), &got["state"]), (after, &json!(state)));
    }
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["weight"], 42);
}

#[tokio::test]
async fn a_stale_if_match_is_a_409_and_changes_nothing() {
    let (app, ada, id) = ada_with_credential().await;
    // Move the credential to revision 2 (disabled), then come with what was seen before.
    let response = mutate(&app, &ada.token, "disable", &id, "\"1\"").await;
    assert_eq!(response.status(), 200);
    let (before, _) = get_config(&app, &ada.token, &id).await;
    for endpoint in ["update", "enable", "disable", "revoke"] {
        for stale in ["\"1\"", "\"3\"", "\"0\""] {
            let response = mutate(&app, &ada.token, endpoint, &id, stale).await;
            assert_error(response, 409, "conflict_error", "version_conflict").await;
        }
        let (after, tag) = get_config(&app, &ada.token, &id).await;
        assert_eq!(tag, "\"2\"", "{endpoint}");
        assert_eq!(
            after, before,
            "{endpoint} with a stale If-Match changed the credential"
        );
    }
    assert!(
        open_secrets(&app, &ada.account_id, &id).is_some(),
        "revoked by a stale If-Match"
    );
    assert_eq!(
        app.store
            .stream_events(&StreamId::new("byok", &id))
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_malformed_if_match_is_a_400() {
    let (app, ada, id) = ada_with_credential().await;
    for endpoint in ["update", "enable", "disable", "revoke"] {
        for bad in [
            "abc",
            "\"one\"",
            "-1",
            "\"\"",
            "W/\"1\"",
            "\"1\", \"2\"",
            "1.0",
            // RFC 9110 §8.8.3: an entity tag is a quoted string; the revision inside is the
            // decimal the ETag header gives, nothing else.
            "1",
            "\"1",
            "1\"",
            "\"+1\"",
            "\"01\"",
            "\" 1\"",
            "\"1 \"",
            "\"1\"\"",
            "\"18446744073709551616\"",
            "w/\"1\"",
            "*, \"1\"",
            "**",
        ] {
            let response = mutate(&app, &ada.token, endpoint, &id, bad).await;
            let error =
                assert_error(response, 400, "invalid_request_error", "invalid_header").await;
            assert_eq!(error["param"], "If-Match", "{endpoint} {bad}");
        }
    }
    let (config, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(
        (tag.as_str(), &config["state"]),
        ("\"1\"", &json!("active"))
    );
}

#[tokio::test]
async fn concurrent_mutations_with_one_if_match_have_one_winner() {
    let (app, ada, id) = ada_with_credential().await;
    let bodies: Vec<Value> = (1..=8).map(|w| json!({"weight": w * 10})).collect();
    let path = format!("/v1/byok/update/{id}");
    let (token, pinned) = (Some(ada.token.as_str()), Some("\"1\""));
    let requests = bodies
        .iter()
        .map(|body| call(&app, Method::PATCH, &path, token, pinned, Some(body)));
    assert_one_winner(requests, 200, 409).await;
    let (_, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"2\"");
}

#[tokio::test]
async fn several_if_match_headers_are_a_400_and_a_star_asks_only_for_existence() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let path = format!("/v1/byok/disable/{id}");
    for headers in [
        [("If-Match", "\"1\""), ("If-Match", "\"1\"")],
        [("If-Match", "\"1\""), ("If-Match", "\"2\"")],
        [("If-Match", "*"), ("If-Match", "\"1\"")],
    ] {
        let response = send(&app, Method::POST, &path, Some(&ada.token), &headers, None).await;
        let error = assert_error(response, 400, "invalid_request_error", "invalid_header").await;
        assert_eq!(error["param"], "If-Match", "{headers:?}");
    }
    let (_, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"1\"", "a refused request changed the credential");
    let response = mutate(&app, &ada.token, "disable", &id, "*").await;
    assert_eq!(response.status(), 200);
    assert_eq!(etag(&response), "\"2\"");
}
