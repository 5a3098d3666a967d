//! Accounts: creation with a first key shown once, unique emails (one winner in a race),
//! validation, who may create accounts (the operator, or anyone with open sign-up), and reading
//! the calling key's account.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, assert_error, assert_json, assert_one_winner, spawn_app, spawn_app_with,
};

#[tokio::test]
async fn creating_an_account_answers_201_with_a_key_shown_once() {
    let app = spawn_app().await;
    let body = app.create_account("Ada@Example.com").await;
    assert!(body["account_id"].as_str().unwrap().starts_with("acct_"));
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["shown_once"], true);
    assert!(body["created_at"].is_string());
    let token = body["api_key"].as_str().unwrap();
    assert!(token.starts_with("kl_") && token.len() >= 35);
    assert_eq!(body["key"]["scopes"], json!(["admin", "write", "read"]));
    assert!(body["key"]["id"].as_str().unwrap().starts_with("key_"));
    assert!(token.starts_with(body["key"]["prefix"].as_str().unwrap()));
    assert_eq!(body["key"]["revoked_at"], Value::Null);

    let me = app.get_json("/v1/account", token).await;
    assert_eq!(me["account_id"], body["account_id"]);
    assert_eq!(me["email"], "ada@example.com");
}

#[tokio::test]
async fn every_account_gets_its_own_id_and_token() {
    let app = spawn_app().await;
    let a = app.create_account("a@example.com").await;
    let b = app.create_account("b@example.com").await;
    assert_ne!(a["account_id"], b["account_id"]);
    assert_ne!(a["api_key"], b["api_key"]);
    let me = app
        .get_json("/v1/account", b["api_key"].as_str().unwrap())
        .await;
    assert_eq!(me["email"], "b@example.com");
}

#[tokio::test]
async fn a_registered_email_is_a_conflict() {
    let app = spawn_app().await;
    app.create_account("ada@example.com").await;
    for again in ["ADA@example.com", "ada@EXAMPLE.COM", "  Ada@Example.Com  "] {
        let response = app.create_account_response(Some(ADMIN_TOKEN), again).await;
        let error = assert_error(response, 409, "conflict_error", "email_taken").await;
        assert_eq!(error["param"], "email", "{again:?}");
    }
}

#[tokio::test]
async fn concurrent_sign_ups_with_one_email_create_one_account() {
    let app = spawn_app().await;
    // Mixed case: the address is compared after lower-casing.
    let emails = (0..8).map(|i| ["race@example.com", "RACE@example.com"][i % 2]);
    let requests = emails.map(|email| app.create_account_response(Some(ADMIN_TOKEN), email));
    assert_one_winner(requests, 201, 409).await;
}

#[tokio::test]
async fn a_bad_email_is_invalid() {
    let app = spawn_app().await;
    let too_long = format!("{}@example.com", "a".repeat(250));
    for bad in [
        "",
        "   ",
        "no-at-sign",
        "a@b",
        "a b@example.com",
        "@example.com",
        "a@@example.com",
        "a@example..com",
        "a@.example.com",
        "a@example.com.",
        too_long.as_str(),
    ] {
        let response = app.create_account_response(Some(ADMIN_TOKEN), bad).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
        assert_eq!(error["param"], "email", "{bad:?}");
    }
    // Nothing was created along the way: a valid address is still free.
    app.create_account("a@example.com").await;
}

#[tokio::test]
async fn an_email_of_the_wrong_type_is_invalid() {
    let app = spawn_app().await;
    for bad in [
        json!(42),
        json!(null),
        json!(["a@example.com"]),
        json!(true),
    ] {
        let response = app.create_account_response(Some(ADMIN_TOKEN), &bad).await;
        let error = assert_error(response, 422, "invalid_request_error", "invalid_body").await;
        assert_eq!(error["param"], "email", "{bad}");
    }
}

#[tokio::test]
async fn creating_an_account_needs_a_token() {
    let app = spawn_app().await;
    let unknown = "kl_admin_test_ffffffffffffffffffffffffffffffff";
    for (token, code) in [(None, "missing_token"), (Some(unknown), "invalid_token")] {
        let response = app.create_account_response(token, "ada@example.com").await;
        assert_error(response, 401, "authentication_error", code).await;
    }
    // Neither attempt took the address.
    app.create_account("ada@example.com").await;
}

#[tokio::test]
async fn an_account_api_key_cannot_create_accounts() {
    let app = spawn_app().await;
    let ada = app.create_account("ada@example.com").await;
    let token = ada["api_key"].as_str().unwrap();
    let response = app
        .create_account_response(Some(token), "eve@example.com")
        .await;
    assert_error(response, 403, "permission_error", "insufficient_scope").await;
    // The refused call created nothing.
    app.create_account("eve@example.com").await;
}

#[tokio::test]
async fn the_admin_token_is_not_an_account_key() {
    let app = spawn_app().await;
    app.create_account("ada@example.com").await;
    for path in ["/v1/account", "/v1/account/keys"] {
        let response = app.get(path, ADMIN_TOKEN).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
}

#[tokio::test]
async fn getting_the_account_needs_a_valid_token() {
    let app = spawn_app().await;
    let unknown = "kl_000000000000000000000000000000000000000000000000";
    for (token, code) in [(None, "missing_token"), (Some(unknown), "invalid_token")] {
        let response = app.fetch(Method::GET, "/v1/account", token).await;
        assert_error(response, 401, "authentication_error", code).await;
    }
}

#[tokio::test]
async fn open_sign_up_lets_anyone_create_an_account() {
    let app = spawn_app_with(|s| s.open_signup = true).await;
    let response = app.create_account_response(None, "Grace@Example.com").await;
    let body = assert_json(response, 201).await;
    assert_eq!(body["email"], "grace@example.com");
    let token = body["api_key"].as_str().unwrap();
    app.get_json("/v1/account", token).await;

    // Open sign-up does not relax the rest: the email is still unique and still validated.
    let again = app.create_account_response(None, "grace@example.com").await;
    assert_error(again, 409, "conflict_error", "email_taken").await;
    let bad = app.create_account_response(None, "not-an-email").await;
    assert_error(bad, 422, "invalid_request_error", "invalid_parameter").await;
}

#[tokio::test]
async fn without_open_sign_up_an_anonymous_caller_is_refused() {
    let app = spawn_app_with(|s| s.open_signup = false).await;
    let response = app.create_account_response(None, "grace@example.com").await;
    assert_error(response, 401, "authentication_error", "missing_token").await;
}
