//! Cursors are tamper-evident: a cursor carries a keyed MAC over what it resumes and whose
//! listing it belongs to, so one the server never issued, one altered, or one issued for another
//! account or another feed is a 400 `invalid_query` naming `cursor`. Issued cursors keep working,
//! across a restart too.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{TestApp, assert_error, openai, register_id, spawn_app};

const KEY: &str = "sk-test-0123456789abcdefWXYZ";

async fn page(app: &TestApp, token: &str, path: &str) -> Value {
    let response = app.get(path, token).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

async fn refused(app: &TestApp, token: &str, path: &str) {
    let response = app.get(path, token).await;
    let error = assert_error(response, 400, "invalid_request_error", "invalid_query").await;
    assert_eq!(error["param"], "cursor", "{path}");
}

/// The cursor with one character changed.
fn altered(cursor: &str) -> Vec<String> {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    [0, cursor.len() / 2, cursor.len() - 1]
        .into_iter()
        .map(|i| {
            let old = cursor.as_bytes()[i] as char;
            let new = alphabet.chars().find(|c| *c != old).unwrap();
            let mut out = cursor.to_owned();
            out.replace_range(i..=i, &new.to_string());
            out
        })
        .collect()
}

#[tokio::test]
async fn a_cursor_the_server_never_issued_is_a_400() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let bob = app.tenant("bob@example.com").await;
    let ids: Vec<String> = {
        let mut ids = Vec::new();
        for alias in ["a", "b", "c"] {
            ids.push(register_id(&app, &ada.token, &openai(alias, KEY)).await);
        }
        ids
    };

    // Event feeds: a position written by hand, an issued cursor altered, another account's.
    let first = page(&app, &ada.token, "/v1/events?limit=1").await;
    let issued = first["next_cursor"].as_str().unwrap().to_owned();
    let mut forged = vec![
        URL_SAFE_NO_PAD.encode("1"),
        URL_SAFE_NO_PAD.encode("0"),
        URL_SAFE_NO_PAD.encode("999"),
    ];
    forged.extend(altered(&issued));
    for cursor in &forged {
        refused(&app, &ada.token, &format!("/v1/events?cursor={cursor}")).await;
        refused(
            &app,
            &ada.token,
            &format!("/v1/events/stream?cursor={cursor}"),
        )
        .await;
        refused(
            &app,
            &ada.token,
            &format!("/v1/byok/events/{}?cursor={cursor}", ids[0]),
        )
        .await;
    }
    // Issued for ada's account feed: not bob's, and not one credential's feed.
    refused(&app, &bob.token, &format!("/v1/events?cursor={issued}")).await;
    refused(
        &app,
        &ada.token,
        &format!("/v1/byok/events/{}?cursor={issued}", ids[0]),
    )
    .await;
    let credential_page = page(
        &app,
        &ada.token,
        &format!("/v1/byok/events/{}?limit=1", ids[0]),
    )
    .await;
    let of_credential = credential_page["next_cursor"].as_str().unwrap();
    refused(
        &app,
        &ada.token,
        &format!("/v1/byok/events/{}?cursor={of_credential}", ids[1]),
    )
    .await;
    refused(
        &app,
        &ada.token,
        &format!("/v1/events?cursor={of_credential}"),
    )
    .await;

    // Credential listings: an id written by hand, an issued cursor altered, another account's,
    // and an event cursor.
    let listed = page(&app, &ada.token, "/v1/byok/list?limit=1").await;
    let next = listed["next_cursor"].as_str().unwrap().to_owned();
    let mut forged = vec![
        URL_SAFE_NO_PAD.encode(&ids[0]),
        URL_SAFE_NO_PAD.encode("byok_"),
    ];
    forged.extend(altered(&next));
    forged.push(issued.clone());
    for cursor in &forged {
        refused(&app, &ada.token, &format!("/v1/byok/list?cursor={cursor}")).await;
    }
    refused(&app, &bob.token, &format!("/v1/byok/list?cursor={next}")).await;
    refused(&app, &ada.token, &format!("/v1/events?cursor={next}")).await;

    // What was issued still reads on.
    let rest = page(&app, &ada.token, &format!("/v1/byok/list?cursor={next}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);
    let after = page(&app, &ada.token, &format!("/v1/events?cursor={issued}")).await;
    assert_eq!(after["items"][0]["position"], 2);
    let streamed = app
        .request(
            Method::GET,
            &format!("/v1/events/stream?cursor={issued}"),
            Some(&ada.token),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
}

#[tokio::test]
async fn issued_cursors_survive_a_restart() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    for alias in ["a", "b"] {
        register_id(&app, &ada.token, &openai(alias, KEY)).await;
    }
    let events = page(&app, &ada.token, "/v1/events?limit=2").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = page(&app, &ada.token, "/v1/byok/list?limit=1").await["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = app.restart().await;
    let after = page(&app, &ada.token, &format!("/v1/events?cursor={events}")).await;
    assert_eq!(after["items"][0]["position"], 3);
    let rest = page(&app, &ada.token, &format!("/v1/byok/list?cursor={listed}")).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
}
