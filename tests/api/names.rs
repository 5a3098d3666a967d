//! One rule for every human-readable field (key names, labels, aliases, model and binding
//! names, emails): no control characters and no invisible or formatting ones. Emails are
//! compared in a normalised form (NFKC, lower case), so an address spelled with fullwidth or
//! other compatibility characters is the account it looks like.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, assert_error, openai, register_id, send, spawn_app};

const KEY: &str = "sk-test-0123456789abcdefWXYZ";

/// Characters no human-readable field takes, each with what it is.
const REFUSED: [(char, &str); 21] = [
    ('\0', "NUL"),
    ('\n', "line feed"),
    ('\r', "carriage return"),
    ('\t', "tab"),
    ('\u{7f}', "DEL"),
    ('\u{85}', "next line (C1)"),
    ('\u{9b}', "control sequence introducer (C1)"),
    ('\u{ad}', "soft hyphen"),
    ('\u{200b}', "zero-width space"),
    ('\u{200c}', "zero-width non-joiner"),
    ('\u{200d}', "zero-width joiner"),
    ('\u{200e}', "left-to-right mark"),
    ('\u{202e}', "right-to-left override"),
    ('\u{202a}', "left-to-right embedding"),
    ('\u{2066}', "left-to-right isolate"),
    ('\u{2069}', "pop directional isolate"),
    ('\u{2060}', "word joiner"),
    ('\u{2028}', "line separator"),
    ('\u{feff}', "byte-order mark"),
    ('\u{3164}', "Hangul filler"),
    ('\u{e0041}', "tag latin capital letter A"),
];

async fn mint(app: &TestApp, token: &str, name: &str) -> reqwest::Response {
    app.post(
        "/v1/account/keys",
        Some(token),
        &json!({"name": name, "scopes": ["read"]}),
    )
    .await
}

#[tokio::test]
async fn key_names_refuse_control_and_invisible_characters() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let before = app.store.last_position().unwrap();
    for (c, what) in REFUSED {
        for name in [format!("ci{c}deploys"), format!("{c}ci"), format!("ci{c}")] {
            let response = mint(&app, &ada.token, &name).await;
            let error =
                assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
            assert_eq!(error["param"], "name", "{what}");
        }
    }
    assert_eq!(
        app.store.last_position().unwrap(),
        before,
        "a key was minted"
    );
    // Letters of any script, spaces and punctuation are names.
    for name in [
        "ci deploys",
        "Продакшн",
        "デプロイ",
        "naïve café",
        "a-b_c.d/e (f)",
    ] {
        let response = mint(&app, &ada.token, name).await;
        assert_eq!(response.status(), 201, "{name}");
    }
}

#[tokio::test]
async fn credential_fields_refuse_control_and_invisible_characters() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let before = app.store.last_position().unwrap();
    for (c, what) in REFUSED {
        let text = format!("x{c}y");
        for (field, value) in [
            ("label", json!(text)),
            ("alias", json!(text)),
            ("models", json!([text])),
            ("blacklisted_models", json!([text])),
            ("capability", json!(text)),
        ] {
            let param = match field {
                "models" | "blacklisted_models" => format!("{field}[0]"),
                _ => field.to_owned(),
            };
            let mut body = openai("other", KEY);
            body[field] = value.clone();
            let response = send(
                &app,
                Method::POST,
                "/v1/byok/register",
                Some(&ada.token),
                &[],
                Some(&body),
            )
            .await;
            let error =
                assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
            assert_eq!(
                error["param"],
                param.as_str(),
                "register {field} with {what}"
            );
            if field == "capability" {
                continue;
            }
            let response = send(
                &app,
                Method::PATCH,
                &format!("/v1/byok/update/{id}"),
                Some(&ada.token),
                &[],
                Some(&json!({ field: value })),
            )
            .await;
            let error =
                assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
            assert_eq!(error["param"], param.as_str(), "update {field} with {what}");
        }
    }
    assert_eq!(
        app.store.last_position().unwrap(),
        before,
        "something was written"
    );
    let mut body = openai("labelled", KEY);
    body["label"] = json!("Production — EU, «main» 🚀");
    let response = send(
        &app,
        Method::POST,
        "/v1/byok/register",
        Some(&ada.token),
        &[],
        Some(&body),
    )
    .await;
    assert_eq!(response.status(), 201);
}

async fn create(app: &TestApp, email: &str) -> reqwest::Response {
    app.post(
        "/v1/accounts",
        Some(ADMIN_TOKEN),
        &json!({ "email": email }),
    )
    .await
}

#[tokio::test]
async fn emails_refuse_invisible_characters() {
    let app = spawn_app().await;
    for (c, what) in REFUSED {
        for email in [
            format!("ada{c}@example.com"),
            format!("{c}ada@example.com"),
            format!("ada@exam{c}ple.com"),
        ] {
            let response = create(&app, &email).await;
            let error =
                assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
            assert_eq!(error["param"], "email", "{what}");
        }
    }
    assert_eq!(app.store.last_position().unwrap(), 0, "an account was made");
}

#[tokio::test]
async fn an_email_that_looks_the_same_is_the_same_account() {
    let app = spawn_app().await;
    let ada = app.create_account("ada@example.com").await;
    assert_eq!(ada["email"], "ada@example.com");
    for same in [
        "ADA@EXAMPLE.COM",
        "ａｄａ@ｅｘａｍｐｌｅ.ｃｏｍ",
        "ada＠example．com",
        "ＡＤＡ@example.com",
        " ada@example.com ",
        "ada@example.com\u{3000}",
    ] {
        let response = create(&app, same).await;
        assert_error(response, 409, "conflict_error", "email_taken").await;
    }
    // A fullwidth spelling is kept in its normal form.
    let bob = create(&app, "ｂｏｂ@ｅｘａｍｐｌｅ.ｃｏｍ").await;
    assert_eq!(bob.status(), 201);
    let bob: Value = bob.json().await.unwrap();
    assert_eq!(bob["email"], "bob@example.com");
    let response = create(&app, "bob@example.com").await;
    assert_error(response, 409, "conflict_error", "email_taken").await;
    // Two accounts: nothing else got in.
    let accounts = crate::helpers::whole_log(&app.store)
        .iter()
        .filter(|e| e.event_type == "account.created")
        .count();
    assert_eq!(accounts, 2);
}
