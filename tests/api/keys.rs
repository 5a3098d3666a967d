//! Account API keys: minting, listing, revoking, scopes, and isolation between accounts.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, assert_json, keys_of, set, spawn_app};

/// Every field a listed key shows; the token and its hash are not among them.
const KEY_FIELDS: [&str; 7] = [
    "id",
    "name",
    "prefix",
    "scopes",
    "created_at",
    "last_used_at",
    "revoked_at",
];

async fn list(app: &TestApp, token: &str) -> Value {
    app.get_json("/v1/account/keys", token).await
}

fn scopes(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn find<'a>(list: &'a Value, id: &Value) -> &'a Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == *id)
        .unwrap_or_else(|| panic!("key {id} is not in {list}"))
}

/// The path that revokes the key in `key` (a key object, or a 201 body of minting).
fn revoke_path(key: &Value) -> String {
    format!("/v1/account/keys/{}", key["id"].as_str().unwrap())
}

#[tokio::test]
async fn a_minted_key_has_the_requested_scopes_and_its_token_is_shown_once() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let body = json!({"name": "ci deploys", "scopes": ["read", "write"]});
    let response = app.post("/v1/account/keys", Some(&admin), &body).await;
    assert!(response.headers().contains_key("x-request-id"));
    let minted = assert_json(response, 201).await;
    assert_eq!(minted["name"], "ci deploys");
    assert_eq!(scopes(&minted["scopes"]), set(&["read", "write"]));
    assert_eq!(minted["shown_once"], true);
    assert!(minted["id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(minted["revoked_at"], Value::Null);
    let token = minted["api_key"].as_str().unwrap();
    assert!(token.starts_with("kl_"));
    assert_ne!(token, admin);
    let prefix = minted["prefix"].as_str().unwrap();
    assert!(token.starts_with(prefix) && prefix.len() < token.len() / 2);

    // The new token works, with its own scopes.
    assert_eq!(app.get("/v1/account", token).await.status(), 200);

    // The list shows the key by prefix, name and scopes, never the token or its hash.
    let listed = list(&app, &admin).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let key = find(&listed, &minted["id"]);
    assert_eq!(key["name"], "ci deploys");
    assert_eq!(key["prefix"], prefix);
    assert_eq!(scopes(&key["scopes"]), set(&["read", "write"]));
    assert_eq!(key["created_at"], minted["created_at"]);
    let text = listed.to_string();
    assert!(!text.contains(token), "the list shows a token: {text}");
    assert!(!text.contains(&admin), "the list shows a token: {text}");
    assert!(!text.contains(&token[prefix.len()..]));
    for item in items {
        assert_eq!(
            keys_of(item),
            set(&KEY_FIELDS),
            "unexpected fields in {item}"
        );
        assert_no_hash_looking_value(item);
    }
}

/// No string in the value looks like a token or a hash: 32+ hex characters in a row.
fn assert_no_hash_looking_value(value: &Value) {
    match value {
        Value::String(s) => {
            let mut run = 0;
            for c in s.chars() {
                run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
                assert!(run < 32, "{s:?} looks like a secret or a hash");
            }
        }
        Value::Array(items) => items.iter().for_each(assert_no_hash_looking_value),
        Value::Object(map) => map.values().for_each(assert_no_hash_looking_value),
        _ => {}
    }
}

#[tokio::test]
async fn scopes_are_deduplicated() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let minted = app.mint_key(&admin, &["read", "read", "resolve"]).await;
    let listed = scopes(&minted["scopes"]);
    assert_eq!(listed, set(&["read", "resolve"]));
    assert_eq!(minted["scopes"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_read_key_cannot_mint_keys_but_can_read_the_account() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let read = app.mint_token(&ada.token, &["read"]).await;

    let escalate = json!({"name": "escalate", "scopes": ["admin"]});
    let response = app.post("/v1/account/keys", Some(&read), &escalate).await;
    let error = assert_error(response, 403, "permission_error", "insufficient_scope").await;
    assert!(error["message"].as_str().unwrap().contains("admin"));

    let me = app.get_json("/v1/account", &read).await;
    assert_eq!(me["account_id"], ada.body["account_id"]);

    // Listing and revoking keys are admin operations too.
    let response = app.get("/v1/account/keys", &read).await;
    assert_error(response, 403, "permission_error", "insufficient_scope").await;
    let response = app.delete(&revoke_path(&ada.body["key"]), &read).await;
    assert_error(response, 403, "permission_error", "insufficient_scope").await;
    // The refused revocation did nothing.
    assert_eq!(app.get("/v1/account", &ada.token).await.status(), 200);
    assert_eq!(app.key_count(&ada.token).await, 2);
}

#[tokio::test]
async fn a_write_key_cannot_mint_keys() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let write = app.mint_token(&admin, &["write"]).await;
    let escalate = json!({"name": "escalate", "scopes": ["read"]});
    let response = app.post("/v1/account/keys", Some(&write), &escalate).await;
    assert_error(response, 403, "permission_error", "insufficient_scope").await;
    // `write` covers `read`.
    assert_eq!(app.get("/v1/account", &write).await.status(), 200);
}

#[tokio::test]
async fn a_resolve_only_key_cannot_read_the_account() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let resolve = app.mint_token(&admin, &["resolve"]).await;
    for path in ["/v1/account", "/v1/account/keys"] {
        let response = app.get(path, &resolve).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
    }
}

#[tokio::test]
async fn the_first_key_never_holds_resolve() {
    let app = spawn_app().await;
    let ada = app.create_account("ada@example.com").await;
    assert!(!scopes(&ada["key"]["scopes"]).contains("resolve"));
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let minted = app.mint_key(&admin, &["read"]).await;
    let token = minted["api_key"].as_str().unwrap();
    assert_eq!(app.get("/v1/account", token).await.status(), 200);

    let revoked = assert_json(app.delete(&revoke_path(&minted), &admin).await, 200).await;
    assert_eq!(revoked["id"], minted["id"]);
    assert!(revoked["revoked_at"].is_string());

    // The very next request with it fails.
    let response = app.get("/v1/account", token).await;
    assert_error(response, 401, "authentication_error", "invalid_token").await;

    // The list still shows it, as revoked; the other key is untouched.
    let listed = list(&app, &admin).await;
    let shown = &find(&listed, &minted["id"])["revoked_at"];
    assert_eq!(*shown, revoked["revoked_at"]);
    assert_eq!(app.get("/v1/account", &admin).await.status(), 200);
}

#[tokio::test]
async fn a_key_can_revoke_itself() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let path = revoke_path(&ada.body["key"]);
    assert_eq!(app.delete(&path, &ada.token).await.status(), 200);
    // Neither reading nor revoking again: the key is gone.
    for response in [
        app.get("/v1/account", &ada.token).await,
        app.delete(&path, &ada.token).await,
    ] {
        assert_error(response, 401, "authentication_error", "invalid_token").await;
    }
}

#[tokio::test]
async fn revoking_twice_answers_the_first_revocation() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let minted = app.mint_key(&admin, &["read"]).await;
    let path = revoke_path(&minted);

    let first = assert_json(app.delete(&path, &admin).await, 200).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = assert_json(app.delete(&path, &admin).await, 200).await;
    assert!(first["revoked_at"].is_string());
    assert_eq!(first["revoked_at"], second["revoked_at"]);
    assert_eq!(first["id"], second["id"]);
}

#[tokio::test]
async fn revoking_an_unknown_key_is_not_found() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let long = "k".repeat(4000);
    for id in [
        "key_01JD5Q3M8X2Y4Z6A7B8C9D0E1G",
        "nope",
        "acct_x",
        "key%20x",
        "%FF",
        "%00",
        long.as_str(),
    ] {
        let response = app.delete(&format!("/v1/account/keys/{id}"), &admin).await;
        assert_error(response, 404, "not_found_error", "resource_missing").await;
    }
    assert_eq!(app.key_count(&admin).await, 1);
}

#[tokio::test]
async fn last_used_at_is_set_once_the_key_is_used() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let minted = app.mint_key(&admin, &["read"]).await;
    assert_eq!(minted["last_used_at"], Value::Null);
    let before = list(&app, &admin).await;
    assert_eq!(find(&before, &minted["id"])["last_used_at"], Value::Null);

    let token = minted["api_key"].as_str().unwrap();
    assert_eq!(app.get("/v1/account", token).await.status(), 200);

    let after = list(&app, &admin).await;
    let used = find(&after, &minted["id"])["last_used_at"].clone();
    let used = used.as_str().expect("last_used_at is set after use");
    let used = chrono::DateTime::parse_from_rfc3339(used).unwrap();
    let created =
        chrono::DateTime::parse_from_rfc3339(minted["created_at"].as_str().unwrap()).unwrap();
    assert!(used >= created, "used {used} before created {created}");
}

#[tokio::test]
async fn key_names_and_scopes_are_validated() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    // (code, [(body, param)])
    for (code, cases) in [
        (
            "invalid_parameter",
            [
                (json!({"name": "ci", "scopes": []}), "scopes"),
                (json!({"name": "", "scopes": ["read"]}), "name"),
                (json!({"name": "   ", "scopes": ["read"]}), "name"),
                (json!({"name": "n".repeat(129), "scopes": ["read"]}), "name"),
            ],
        ),
        (
            "invalid_body",
            [
                (json!({"name": "ci", "scopes": ["root"]}), "scopes[0]"),
                (
                    json!({"name": "ci", "scopes": ["read", "Admin"]}),
                    "scopes[1]",
                ),
                (json!({"name": "ci", "scopes": "read"}), "scopes"),
                (json!({"name": 7, "scopes": ["read"]}), "name"),
            ],
        ),
    ] {
        for (body, param) in cases {
            let response = app.post("/v1/account/keys", Some(&admin), &body).await;
            let error = assert_error(response, 422, "invalid_request_error", code).await;
            assert_eq!(error["param"], param, "{body}");
        }
    }
    // None of them minted anything.
    assert_eq!(app.key_count(&admin).await, 1);

    // 128 characters is still a valid name.
    let longest = json!({"name": "n".repeat(128), "scopes": ["read"]});
    let response = app.post("/v1/account/keys", Some(&admin), &longest).await;
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn another_accounts_key_is_not_found_exactly_like_a_missing_one() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let eve_token = app.account_token("eve@example.com").await;

    let foreign = app.delete(&revoke_path(&ada.body["key"]), &eve_token).await;
    let foreign = assert_error(foreign, 404, "not_found_error", "resource_missing").await;
    let missing_path = "/v1/account/keys/key_01JD5Q3M8X2Y4Z6A7B8C9D0E1G";
    let missing = app.delete(missing_path, &eve_token).await;
    let missing = assert_error(missing, 404, "not_found_error", "resource_missing").await;
    assert_eq!(foreign["message"], missing["message"]);
    assert_eq!(foreign.get("param"), missing.get("param"));

    // Ada's key still works and is not revoked.
    assert_eq!(app.get("/v1/account", &ada.token).await.status(), 200);
    let listed = list(&app, &ada.token).await;
    assert_eq!(
        find(&listed, &ada.body["key"]["id"])["revoked_at"],
        Value::Null
    );
}

#[tokio::test]
async fn listing_never_shows_another_accounts_keys() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let ada_extra = app.mint_key(&ada.token, &["read"]).await;
    let eve = app.tenant("eve@example.com").await;

    let listed = list(&app, &eve.token).await;
    let ids: Vec<&Value> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["id"])
        .collect();
    assert_eq!(ids, vec![&eve.body["key"]["id"]]);
    let text = listed.to_string();
    for foreign in [&ada.body["key"], &ada_extra] {
        assert!(!text.contains(foreign["id"].as_str().unwrap()));
        assert!(!text.contains(foreign["prefix"].as_str().unwrap()));
    }
    // And Eve's account is Eve's.
    let me = app.get_json("/v1/account", &eve.token).await;
    assert_eq!(me["account_id"], eve.body["account_id"]);
    assert_ne!(me["account_id"], ada.body["account_id"]);
}
