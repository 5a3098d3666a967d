use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, assert_error, spawn_app};

#[tokio::test]
async fn creating_an_account_answers_201_with_a_key_shown_once() {
    let app = spawn_app().await;
    let body = app.create_account("Ada@Example.com").await;
    assert!(body["account_id"].as_str().unwrap().starts_with("acct_"));
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["shown_once"], true);
    let token = body["api_key"].as_str().unwrap();
    assert!(token.starts_with("kl_") && token.len() >= 35);
    assert_eq!(body["key"]["scopes"], json!(["admin", "write", "read"]));

    let me = app.get("/v1/account", token).await;
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["account_id"], body["account_id"]);
}

#[tokio::test]
async fn a_registered_email_is_a_conflict() {
    let app = spawn_app().await;
    app.create_account("ada@example.com").await;
    let again = app
        .post(
            "/v1/accounts",
            Some(ADMIN_TOKEN),
            &json!({"email": "ADA@example.com"}),
        )
        .await;
    let error = assert_error(again, 409, "conflict_error", "email_taken").await;
    assert_eq!(error["param"], "email");
}
