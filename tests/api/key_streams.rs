//! API keys on streams of their own (`account_key:<key_id>`), and stores of the layout before
//! that, which hold every key event on the account's stream: such a store is taken over on its
//! first open (its projections are rebuilt from the unchanged log) and goes on working, old keys
//! and new alike.

use std::sync::Arc;

use keyledger::es::{Envelope, EventMeta, ExpectedVersion, NewEvent, StreamId};
use keyledger::storage::{AppendRequest, Durability, Store, force_rows};
use serde_json::{Value, json};

use crate::helpers::{TestApp, api_key, assert_json, spawn_app, start, test_settings, whole_log};

/// The recorded account events of the old layout: the account's creation, two keys, and the
/// revocation of the second, all on `account:acct_01M83WSGZCA5P4FYV8YQM5SFYW`.
const RECORDED: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/events/account-schema-1.ndjson"
));
const ACCOUNT: &str = "acct_01M83WSGZCA5P4FYV8YQM5SFYW";
const FIRST_KEY: &str = "key_01M83WSGZCQ5VF51FC16V4VMRC";
const REVOKED_KEY: &str = "key_01M83WT0000000000000000003";
/// A third key of the old layout, whose token this test holds.
const HELD_KEY: &str = "key_01M83WW0000000000000000006";
const HELD_TOKEN: &str = "kl_5e1d00c0ffee0123456789abcdef0123456789abcdef0123";

fn old_event(event_type: &str, data: Value) -> NewEvent {
    NewEvent {
        event_type: event_type.to_owned(),
        schema: 1,
        data,
    }
}

/// The projection rows the build before key streams wrote for the account: format 2, one row
/// holding every key.
fn old_account_row(keys: &[Value]) -> Vec<u8> {
    let keys: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| (k["key_id"].as_str().unwrap().to_owned(), k.clone()))
        .collect();
    let state = json!({
        "account_id": ACCOUNT,
        "email": "ada@example.com",
        "created_at": "2026-11-23T09:46:29.740542585Z",
        "keys": keys,
    });
    serde_json::to_vec(&json!({"stream_version": 5, "state": state})).unwrap()
}

/// A closed store as the build before key streams left it: the recorded events and one more key
/// on the account's stream, its projection rows in that build's format.
async fn old_store() -> (keyledger::config::Settings, Arc<tempfile::TempDir>) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let settings = test_settings(dir.path().join("data"));
    let store = Store::open(&settings.data_dir, &settings.master_key, Durability::Sync).unwrap();
    let mut events: Vec<NewEvent> = RECORDED
        .lines()
        .map(|line| {
            let recorded: Envelope = serde_json::from_str(line).unwrap();
            old_event(&recorded.event_type, recorded.data)
        })
        .collect();
    let held = json!({
        "key_id": HELD_KEY,
        "name": "held",
        "prefix": &HELD_TOKEN[..12],
        "scopes": ["admin", "write", "read"],
        "token_hash": store.hash_token(HELD_TOKEN).to_hex(),
        "created_at": "2026-11-23T09:49:00Z",
    });
    events.push(old_event("account_key.created", held.clone()));
    let keys: Vec<Value> = events
        .iter()
        .filter(|e| e.event_type == "account_key.created")
        .map(|e| {
            let mut key = e.data.clone();
            let revoked = (key["key_id"] == REVOKED_KEY).then_some("2026-11-23T09:48:10.5Z");
            key["revoked_at"] = json!(revoked);
            key
        })
        .collect();
    store
        .append(AppendRequest {
            stream: StreamId::new("account", ACCOUNT),
            expected: ExpectedVersion::NoStream,
            events,
            meta: EventMeta {
                actor: "operator".into(),
                request_id: "req_01M83WSGZBPG3ZG9KJT2HPSF12".into(),
            },
            data_key: None,
            also: Vec::new(),
            idempotency: None,
        })
        .await
        .unwrap();
    store.shutdown();
    drop(store);
    // What this build projected becomes what the old one did.
    let account_row = [b"a/account:", ACCOUNT.as_bytes()].concat();
    let row = old_account_row(&keys);
    let format = 2u32.to_be_bytes();
    force_rows(
        &settings.data_dir,
        &[b"a/account_key:", b"i/keys/"],
        &[(&account_row, &row), (b"m/projections", &format)],
    )
    .unwrap();
    (settings, dir)
}

fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value.as_str().unwrap().parse().unwrap()
}

fn ids(list: &Value) -> Vec<&str> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect()
}

/// The account-key migration on a recorded old store: opened by this build, its projections
/// are rebuilt from the log as it is; every key is listed oldest first, the revoked one
/// included, its tokens authenticate (or not, once revoked), and new keys and revocations go to
/// the keys' own streams.
#[tokio::test]
async fn a_recorded_store_of_keys_on_the_account_stream_is_taken_over_on_open() {
    let (settings, dir) = old_store().await;
    let app = start(settings, dir).await;
    let report = app.store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.mismatches);
    assert_eq!(report.events, 5);

    let me = app.get_json("/v1/account", HELD_TOKEN).await;
    assert_eq!(me["account_id"], ACCOUNT);
    assert_eq!(me["email"], "ada@example.com");
    let listed = app.get_json("/v1/account/keys", HELD_TOKEN).await;
    assert_eq!(ids(&listed), [FIRST_KEY, REVOKED_KEY, HELD_KEY]);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items[0]["name"], "default");
    assert_eq!(items[0]["prefix"], "kl_c0555a314");
    assert_eq!(items[0]["scopes"], json!(["admin", "write", "read"]));
    assert_eq!(items[0]["revoked_at"], Value::Null);
    assert_eq!(items[1]["name"], "ci deploys");
    assert_eq!(
        time(&items[1]["revoked_at"]),
        time(&json!("2026-11-23T09:48:10.5Z"))
    );
    assert_eq!(
        time(&items[2]["created_at"]),
        time(&json!("2026-11-23T09:49:00Z"))
    );

    // A new key goes to a stream of its own; so does the revocation of an old key.
    let minted = app.mint_key(HELD_TOKEN, &["read"]).await;
    let path = format!("/v1/account/keys/{FIRST_KEY}");
    let revoked = assert_json(app.delete(&path, HELD_TOKEN).await, 200).await;
    assert!(revoked["revoked_at"].is_string());
    // Revoking the key revoked on the account's stream again changes nothing.
    let path = format!("/v1/account/keys/{REVOKED_KEY}");
    let again = assert_json(app.delete(&path, HELD_TOKEN).await, 200).await;
    assert_eq!(again["revoked_at"], items[1]["revoked_at"]);
    let log = whole_log(&app.store);
    let streams: Vec<(&str, u64, &str)> = log[5..]
        .iter()
        .map(|e| (e.stream.as_str(), e.stream_version, e.event_type.as_str()))
        .collect();
    let minted_stream = format!("account_key:{}", minted["id"].as_str().unwrap());
    let first_stream = format!("account_key:{FIRST_KEY}");
    assert_eq!(
        streams,
        [
            (minted_stream.as_str(), 1, "account_key.created"),
            (first_stream.as_str(), 1, "account_key.revoked"),
        ]
    );
    assert_eq!(log[5].data["account_id"], ACCOUNT);
    assert_eq!(log[5].schema, 2);

    let listed = app.get_json("/v1/account/keys", HELD_TOKEN).await;
    let minted_id = minted["id"].as_str().unwrap();
    assert_eq!(ids(&listed), [FIRST_KEY, REVOKED_KEY, HELD_KEY, minted_id]);
    assert_eq!(
        app.get("/v1/account", &api_key(&minted)).await.status(),
        200
    );
    // The account's feed shows every key event, wherever it is stored.
    let feed = app.get_json("/v1/events?limit=100", HELD_TOKEN).await;
    let types: Vec<&str> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "account.created",
            "account_key.created",
            "account_key.created",
            "account_key.revoked",
            "account_key.created",
            "account_key.created",
            "account_key.revoked",
        ]
    );

    // Rebuild equals live, and a restart serves the same.
    assert!(app.store.verify().unwrap().is_sound());
    app.store.rebuild().unwrap();
    assert!(app.store.verify().unwrap().is_sound());
    let app = app.restart().await;
    let after = app.get_json("/v1/account/keys", HELD_TOKEN).await;
    assert_eq!(ids(&after), ids(&listed));
    assert_eq!(after["items"][0]["revoked_at"], revoked["revoked_at"]);
}

/// Minting or revoking a key writes that key's rows only: the account's row stays as it was
/// written, however many keys the account has had.
#[tokio::test]
async fn key_events_never_rewrite_the_accounts_row() {
    let app = spawn_app().await;
    let tenant = app.tenant("rows@example.com").await;
    let account = StreamId::new("account", &tenant.account_id);
    let row = |app: &TestApp| {
        app.store
            .load::<keyledger::domain::account::Account>(&account)
            .unwrap()
            .map(|s| (s.stream_version, s.state))
    };
    let before = row(&app);
    for _ in 0..5 {
        let key = app.mint_key(&tenant.token, &["read"]).await;
        let path = format!("/v1/account/keys/{}", key["id"].as_str().unwrap());
        assert_json(app.delete(&path, &tenant.token).await, 200).await;
    }
    assert_eq!(row(&app), before);
    assert_eq!(before.map(|(version, _)| version), Some(1));
    assert_eq!(app.key_count(&tenant.token).await, 6);
    assert!(app.store.verify().unwrap().is_sound());
}
