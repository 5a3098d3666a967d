//! The event store as an operator and an auditor see it: durable across restarts, one winner per
//! race, projections equal to a replay, a tamper-evident log, gap-free positions, refusals of
//! stores it must not open, the `verify` / `rebuild` commands, and no plaintext token on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Barrier;

use chrono::Utc;
use keyledger::crypto::MasterKey;
use keyledger::domain::account::AccountEvent;
use keyledger::domain::account_key::ApiKeyEvent;
use keyledger::domain::{AccountId, KeyId, Scope};
use keyledger::es::{DomainEvent, Envelope, EventMeta, ExpectedVersion, StreamId};
use keyledger::startup::{Application, StartupError};
use keyledger::storage::{
    AppendError, AppendRequest, Durability, STORE_SCHEMA_VERSION, Store, StoreError, StreamAppend,
    force_admin_token_row, force_schema_version,
};
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, TestApp, api_key, assert_error, contains, files, spawn_app, spawn_app_with, start,
    whole_log,
};

fn account_stream(account: &Value) -> StreamId {
    StreamId::new("account", account["account_id"].as_str().unwrap())
}

/// Creates two accounts and a few keys, revoking one; answers (accounts, every live token, the
/// revoked token).
async fn some_history(app: &TestApp) -> (Vec<Value>, Vec<String>, String) {
    let ada = app.create_account("ada@example.com").await;
    let eve = app.create_account("eve@example.com").await;
    let (ada_token, eve_token) = (api_key(&ada), api_key(&eve));
    let ada_read = app.mint_token(&ada_token, &["read"]).await;
    let eve_resolve = app.mint_token(&eve_token, &["resolve"]).await;
    let doomed = app.mint_key(&ada_token, &["admin"]).await;
    let path = format!("/v1/account/keys/{}", doomed["id"].as_str().unwrap());
    assert_eq!(app.delete(&path, &ada_token).await.status(), 200);
    // A refused duplicate and a refused validation leave no trace in the log.
    let dup = app
        .create_account_response(Some(ADMIN_TOKEN), "ADA@example.com")
        .await;
    assert_eq!(dup.status(), 409);
    let nameless = json!({"name": "", "scopes": ["read"]});
    let bad = app
        .post("/v1/account/keys", Some(&ada_token), &nameless)
        .await;
    assert_eq!(bad.status(), 422);
    let live = vec![ada_token, eve_token, ada_read, eve_resolve];
    (vec![ada, eve], live, api_key(&doomed))
}

#[tokio::test]
async fn data_survives_a_restart() {
    let app = spawn_app().await;
    let (accounts, live, revoked) = some_history(&app).await;
    let keys_before = app.get_json("/v1/account/keys", &live[0]).await;
    let last_before = app.store.last_position().unwrap();

    let app = app.restart().await;
    for token in &live[..3] {
        let response = app.get("/v1/account", token).await;
        assert_eq!(response.status(), 200, "a live key stopped working");
    }
    let me = app.get_json("/v1/account", &live[0]).await;
    assert_eq!(me["account_id"], accounts[0]["account_id"]);
    assert_eq!(me["email"], "ada@example.com");
    let response = app.get("/v1/account", &live[3]).await;
    assert_error(response, 403, "permission_error", "insufficient_scope").await;
    let response = app.get("/v1/account", &revoked).await;
    assert_error(response, 401, "authentication_error", "invalid_token").await;

    // The key list is the same (last-use stamps aside).
    let keys_after = app.get_json("/v1/account/keys", &live[0]).await;
    let strip = |list: &Value| -> Vec<Value> {
        let mut items = list["items"].as_array().unwrap().clone();
        for item in &mut items {
            item.as_object_mut().unwrap().remove("last_used_at");
        }
        items
    };
    assert_eq!(strip(&keys_before), strip(&keys_after));

    // The email index survived, and the log continues where it stopped.
    let dup = app
        .create_account_response(Some(ADMIN_TOKEN), "eve@example.com")
        .await;
    assert_error(dup, 409, "conflict_error", "email_taken").await;
    app.create_account("grace@example.com").await;
    assert_eq!(app.store.last_position().unwrap(), last_before + 2);
    assert_eq!(whole_log(&app.store).len() as u64, last_before + 2);
    assert!(app.store.verify().unwrap().is_sound());
}

fn open_temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &dir.path().join("data"),
        &MasterKey::generate(),
        Durability::Sync,
    )
    .unwrap();
    (dir, store)
}

fn append(
    store: &Store,
    stream: &StreamId,
    expected: ExpectedVersion,
    event: impl DomainEvent,
) -> Result<Vec<Envelope>, AppendError> {
    store.append_blocking(AppendRequest {
        stream: stream.clone(),
        expected,
        events: vec![event.to_new_event().unwrap()],
        meta: EventMeta {
            actor: "test".into(),
            request_id: "req_test".into(),
        },
        data_key: None,
        also: Vec::new(),
        idempotency: None,
    })
}

/// Runs `attempt(0)` and `attempt(1)` on two threads released at the same instant.
fn race<T: Send>(attempt: impl Fn(usize) -> T + Sync) -> [T; 2] {
    let barrier = Barrier::new(2);
    std::thread::scope(|scope| {
        let handles = [0, 1].map(|contender| {
            let (barrier, attempt) = (&barrier, &attempt);
            scope.spawn(move || {
                barrier.wait();
                attempt(contender)
            })
        });
        handles.map(|h| h.join().unwrap())
    })
}

/// Exactly one of the two outcomes is a success, the other a conflict at `actual`; answers the
/// index of the winner.
fn one_winner(outcomes: &[Result<Vec<Envelope>, AppendError>; 2], actual_after: u64) -> usize {
    let winners: Vec<usize> = (0..2).filter(|i| outcomes[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0];
    match &outcomes[1 - winner] {
        Err(AppendError::Conflict { actual, .. }) => assert_eq!(*actual, actual_after),
        other => panic!("the loser got {other:?}, not a conflict"),
    }
    winner
}

#[test]
fn racing_appends_with_the_same_expected_version_have_one_winner() {
    let (_dir, store) = open_temp_store();
    const ROUNDS: u64 = 50;
    for round in 0..ROUNDS {
        let account_id = AccountId::from_ulid(round.into());
        let stream = StreamId::new("account", account_id.as_str());

        // Both try to create the stream.
        let outcomes = race(|contender| {
            append(
                &store,
                &stream,
                ExpectedVersion::NoStream,
                AccountEvent::Created {
                    account_id: account_id.clone(),
                    // Distinct emails: only the version check can refuse the loser.
                    email: format!("r{round}-c{contender}@example.com"),
                    created_at: Utc::now(),
                },
            )
        });
        let winner = one_winner(&outcomes, 1);
        let created = &outcomes[winner].as_ref().unwrap()[0];
        assert_eq!(created.stream_version, 1);

        // A key of the account, on its own stream; both try to revoke it on top of version 1.
        let key_id = KeyId::from_ulid(round.into());
        let key_stream = StreamId::new("account_key", key_id.as_str());
        let key = ApiKeyEvent::Created {
            key_id: key_id.clone(),
            account_id: account_id.clone(),
            name: "racer".into(),
            prefix: "kl_race".into(),
            scopes: vec![Scope::Read],
            token_hash: format!("{round:064x}"),
            created_at: Utc::now(),
        };
        let minted = append(&store, &key_stream, ExpectedVersion::NoStream, key).unwrap();
        let outcomes = race(|contender| {
            append(
                &store,
                &key_stream,
                ExpectedVersion::Exact(1),
                ApiKeyEvent::Revoked {
                    key_id: key_id.clone(),
                    revoked_at: Utc::now() + chrono::Duration::seconds(contender as i64),
                },
            )
        });
        let winner = one_winner(&outcomes, 2);
        let added = &outcomes[winner].as_ref().unwrap()[0];
        assert_eq!(added.stream_version, 2);

        assert_eq!(
            store.stream_events(&stream).unwrap(),
            std::slice::from_ref(created)
        );
        let events = store.stream_events(&key_stream).unwrap();
        assert_eq!(events.len(), 2, "round {round}");
        assert_eq!(events[0], minted[0]);
        assert_eq!(&events[1], added);
    }
    assert_eq!(store.last_position().unwrap(), ROUNDS * 3);
    let report = store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.mismatches);
    assert_eq!(report.events, ROUNDS * 3);
    store.shutdown();
}

/// An account opened with its first key on the key's own stream, as one append.
fn open_with_key(store: &Store, account: u128, key: u128) -> Result<Vec<Envelope>, AppendError> {
    let account_id = AccountId::from_ulid(account);
    let key_id = KeyId::from_ulid(key);
    let created = AccountEvent::Created {
        account_id: account_id.clone(),
        email: format!("{account}@example.com"),
        created_at: Utc::now(),
    };
    let minted = ApiKeyEvent::Created {
        key_id: key_id.clone(),
        account_id: account_id.clone(),
        name: "default".into(),
        prefix: "kl_joined".into(),
        scopes: vec![Scope::Admin],
        token_hash: format!("{key:064x}"),
        created_at: Utc::now(),
    };
    store.append_blocking(AppendRequest {
        stream: StreamId::new("account", account_id.as_str()),
        expected: ExpectedVersion::NoStream,
        events: vec![created.to_new_event().unwrap()],
        meta: EventMeta::default(),
        data_key: None,
        also: vec![StreamAppend {
            stream: StreamId::new("account_key", key_id.as_str()),
            expected: ExpectedVersion::NoStream,
            events: vec![minted.to_new_event().unwrap()],
        }],
        idempotency: None,
    })
}

#[test]
fn an_append_to_several_streams_is_all_or_nothing() {
    let (_dir, store) = open_temp_store();
    let opened = open_with_key(&store, 1, 1).unwrap();
    let placed: Vec<(u64, &str, u64)> = opened
        .iter()
        .map(|e| {
            (
                e.position,
                e.stream.split_once(':').unwrap().0,
                e.stream_version,
            )
        })
        .collect();
    assert_eq!(placed, [(1, "account", 1), (2, "account_key", 1)]);
    assert_eq!(
        opened[0].occurred_at, opened[1].occurred_at,
        "one append, one time"
    );
    // Another account whose key stream exists already: refused whole, its account included.
    let refused = open_with_key(&store, 2, 1);
    assert!(
        matches!(refused, Err(AppendError::Conflict { actual: 1, .. })),
        "{refused:?}"
    );
    let second = StreamId::new("account", AccountId::from_ulid(2).as_str());
    assert!(store.stream_events(&second).unwrap().is_empty());
    assert_eq!(store.last_position().unwrap(), 2);
    // The log goes on from where it was, gap-free.
    let next = open_with_key(&store, 2, 2).unwrap();
    assert_eq!(next[0].position, 3);
    let report = store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.mismatches);
    assert_eq!(report.events, 4);
    store.shutdown();
}

#[test]
fn a_stale_expected_version_is_a_conflict_and_writes_nothing() {
    let (_dir, store) = open_temp_store();
    let account_id = AccountId::from_ulid(1);
    let stream = StreamId::new("account", account_id.as_str());
    let created = || AccountEvent::Created {
        account_id: account_id.clone(),
        email: "stale@example.com".into(),
        created_at: Utc::now(),
    };
    append(&store, &stream, ExpectedVersion::NoStream, created()).unwrap();
    // Creating it again, or writing on top of a version it never had.
    for expected in [ExpectedVersion::NoStream, ExpectedVersion::Exact(7)] {
        let refused = append(&store, &stream, expected, created());
        assert!(
            matches!(refused, Err(AppendError::Conflict { actual: 1, .. })),
            "{refused:?}"
        );
    }
    assert_eq!(store.last_position().unwrap(), 1);
    assert!(store.verify().unwrap().is_sound());
    store.shutdown();
}

#[tokio::test]
async fn rebuild_reproduces_the_live_projections() {
    let app = spawn_app().await;
    let (accounts, live, _) = some_history(&app).await;
    let report = app.store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.mismatches);
    assert_eq!(report.events, app.store.last_position().unwrap());
    assert!(report.projection_rows > 0);

    // Lose Ada's aggregate row: her keys stop working and verify says why.
    let ada = account_stream(&accounts[0]);
    app.store.drop_aggregate_row(&ada).unwrap();
    let response = app.get("/v1/account", &live[0]).await;
    assert_eq!(response.status(), 401);
    let report = app.store.verify().unwrap();
    assert!(!report.is_sound());
    assert_eq!(report.mismatches.len(), 1, "{:?}", report.mismatches);
    assert!(
        report.mismatches[0].contains(ada.as_str()),
        "{:?}",
        report.mismatches
    );

    // A rebuild replays the log and repairs it, while the server keeps running.
    let replayed = app.store.rebuild().unwrap();
    assert_eq!(replayed, app.store.last_position().unwrap());
    let report = app.store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.mismatches);
    for token in &live[..3] {
        assert_eq!(app.get("/v1/account", token).await.status(), 200);
    }
    // And the store goes on taking writes that verify.
    app.create_account("grace@example.com").await;
    assert!(app.store.verify().unwrap().is_sound());
}

#[tokio::test]
async fn the_hash_chain_detects_an_altered_event() {
    type Edit = fn(&mut Envelope);
    let edits: [(&str, Edit); 4] = [
        ("email", |e| e.data["email"] = json!("mallory@example.com")),
        ("actor", |e| e.actor = "kl_forged000".into()),
        ("time", |e| e.occurred_at += chrono::Duration::seconds(1)),
        ("type", |e| e.event_type = "account_key.revoked".into()),
    ];
    for (what, edit) in edits {
        let app = spawn_app().await;
        some_history(&app).await;
        assert!(app.store.verify().unwrap().is_sound());
        let last = app.store.last_position().unwrap();
        // The first event and one in the middle.
        for position in [1, last / 2] {
            let original = app.store.event(position).unwrap().unwrap();
            let mut altered = original.clone();
            edit(&mut altered);
            if altered == original {
                continue;
            }
            app.store.tamper_with_event(position, edit).unwrap();
            match app.store.verify() {
                Err(StoreError::Chain { position: at, .. }) => {
                    assert_eq!(at, position, "{what}");
                }
                other => panic!("altering the {what} at {position} was not caught: {other:?}"),
            }
            // Restoring the exact original content makes the chain whole again.
            app.store
                .tamper_with_event(position, |e| *e = original.clone())
                .unwrap();
            assert!(app.store.verify().unwrap().is_sound(), "{what}");
        }
    }
}

#[tokio::test]
async fn positions_are_gap_free_and_versions_count_per_stream() {
    let app = spawn_app().await;
    let (accounts, _, _) = some_history(&app).await;
    // Two accounts with their first keys, three minted keys and one revocation; the refused
    // requests appended nothing.
    assert_eq!(app.store.last_position().unwrap(), 8);
    // Interleave writes to the two streams.
    for _ in 0..3 {
        for account in &accounts {
            app.mint_key(&api_key(account), &["read"]).await;
        }
    }

    let log = whole_log(&app.store);
    assert_eq!(log.len(), 14);
    let mut per_stream: BTreeMap<String, Vec<&Envelope>> = BTreeMap::new();
    for (index, event) in log.iter().enumerate() {
        assert_eq!(event.position, index as u64 + 1);
        per_stream
            .entry(event.stream.clone())
            .or_default()
            .push(event);
    }
    let ids: std::collections::BTreeSet<_> = log.iter().map(|e| &e.event_id).collect();
    assert_eq!(ids.len(), log.len(), "event ids are unique");
    // A stream per account and one per key: two first keys and nine minted.
    let kind = |stream: &str| stream.split_once(':').unwrap().0.to_owned();
    let kinds: Vec<String> = per_stream.keys().map(|s| kind(s)).collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "account").count(),
        accounts.len()
    );
    assert_eq!(kinds.iter().filter(|k| *k == "account_key").count(), 11);

    for (stream, events) in &per_stream {
        let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(versions, expected, "{stream}");
        let (kind, id) = stream.split_once(':').unwrap();
        let by_stream = app.store.stream_events(&StreamId::new(kind, id)).unwrap();
        assert_eq!(
            by_stream,
            events.iter().map(|e| (*e).clone()).collect::<Vec<_>>()
        );
        if kind == "account" {
            assert_eq!(events.len(), 1, "{stream}");
            assert_eq!(events[0].event_type, "account.created");
            assert_eq!(events[0].actor, "operator");
        } else {
            assert_eq!(events[0].event_type, "account_key.created");
        }
    }

    // Key events name the acting key by its public prefix, never the token.
    let ada_prefix = accounts[0]["key"]["prefix"].as_str().unwrap();
    let minted = log
        .iter()
        .filter(|e| e.event_type == "account_key.created" && e.actor == ada_prefix)
        .count();
    assert!(minted >= 4, "{minted}");
    assert!(log.iter().all(|e| e.request_id.starts_with("req_")));
}

fn write_key_file(dir: &Path, key: &MasterKey) -> PathBuf {
    let path = dir.join("master.key.b64");
    std::fs::write(&path, key.to_base64().expose()).unwrap();
    path
}

/// Runs the real binary on a stopped store.
fn keyledger(command: &str, data_dir: &Path, key_file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .arg(command)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--master-key-file")
        .arg(key_file)
        .env_remove("KEYLEDGER_MASTER_KEY")
        .env_remove("KEYLEDGER_DATA_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run keyledger")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts the command failed and said `words` (on stdout or stderr); answers what it said.
fn assert_refused(output: &Output, words: &str) -> String {
    let said = text(output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains(words), "{said}");
    said
}

fn with_store<T>(data_dir: &Path, key: &MasterKey, work: impl FnOnce(&Store) -> T) -> T {
    let store = Store::open(data_dir, key, Durability::Sync).unwrap();
    let out = work(&store);
    store.shutdown();
    out
}

#[tokio::test]
async fn verify_and_rebuild_commands_work_on_a_stopped_store() {
    let app = spawn_app().await;
    let (accounts, live, _) = some_history(&app).await;
    let events = app.store.last_position().unwrap();
    let (settings, dir) = app.stop_and_release().await;
    let data = settings.data_dir.clone();
    let key_file = write_key_file(dir.path(), &settings.master_key);

    let verified = keyledger("verify", &data, &key_file);
    assert!(verified.status.success(), "{}", text(&verified));
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(
        stdout.contains(&format!("hash chain intact: {events} events")),
        "{stdout}"
    );
    assert!(stdout.contains("ok"), "{stdout}");

    // A lost projection row: verify fails and points at rebuild; rebuild repairs it.
    let ada = account_stream(&accounts[0]);
    with_store(&data, &settings.master_key, |s| {
        s.drop_aggregate_row(&ada).unwrap()
    });
    let verified = keyledger("verify", &data, &key_file);
    let out = assert_refused(&verified, "rebuild");
    assert!(out.contains(ada.as_str()), "{out}");

    let rebuilt = keyledger("rebuild", &data, &key_file);
    assert!(rebuilt.status.success(), "{}", text(&rebuilt));
    assert!(
        String::from_utf8_lossy(&rebuilt.stdout)
            .contains(&format!("rebuilt the projections from {events} events")),
        "{}",
        text(&rebuilt)
    );
    let verified = keyledger("verify", &data, &key_file);
    assert!(verified.status.success(), "{}", text(&verified));

    // The repaired store serves again.
    let app = start(settings, dir).await;
    assert_eq!(app.get("/v1/account", &live[0]).await.status(), 200);
    let (settings, dir) = app.stop_and_release().await;

    // An altered event: verify names the position and fails.
    with_store(&settings.data_dir, &settings.master_key, |s| {
        s.tamper_with_event(2, |e| e.actor = "kl_forged000".into())
            .unwrap()
    });
    let verified = keyledger("verify", &settings.data_dir, &key_file);
    assert_refused(&verified, "hash chain is broken at position 2");
    drop(dir);
}

#[tokio::test]
async fn the_commands_refuse_a_wrong_key_or_a_missing_store_clearly() {
    let app = spawn_app().await;
    some_history(&app).await;
    let (settings, dir) = app.stop_and_release().await;
    let wrong = dir.path().join("wrong");
    std::fs::create_dir_all(&wrong).unwrap();
    let wrong_key = write_key_file(&wrong, &MasterKey::generate());
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key").unwrap();
    for key_file in [wrong_key, garbage] {
        let verified = keyledger("verify", &settings.data_dir, &key_file);
        assert_refused(&verified, "master key");
    }
}

#[tokio::test]
async fn a_store_of_an_unknown_schema_version_is_refused() {
    let app = spawn_app().await;
    let (_, live, _) = some_history(&app).await;
    let (settings, dir) = app.stop_and_release().await;
    let data = settings.data_dir.clone();

    force_schema_version(&data, 99).unwrap();
    let refused = Store::open(&data, &settings.master_key, Durability::Sync);
    match refused {
        Err(e @ StoreError::UnsupportedSchema { .. }) => {
            assert!(matches!(
                e,
                StoreError::UnsupportedSchema { found: 99, supported } if supported == STORE_SCHEMA_VERSION
            ));
            let message = e.to_string();
            assert!(message.contains("99"), "{message}");
            assert!(
                message.contains(&format!("only version {STORE_SCHEMA_VERSION}")),
                "{message}"
            );
        }
        Err(other) => panic!("expected an unsupported schema, got {other}"),
        Ok(_) => panic!("a store of schema 99 was opened"),
    }
    let key_file = write_key_file(dir.path(), &settings.master_key);
    let verified = keyledger("verify", &data, &key_file);
    assert_refused(&verified, "schema version 99");

    // The refusal changed nothing: put the version back and everything is there.
    force_schema_version(&data, STORE_SCHEMA_VERSION).unwrap();
    let app = start(settings, dir).await;
    assert_eq!(app.get("/v1/account", &live[0]).await.status(), 200);
    assert!(app.store.verify().unwrap().is_sound());
}

#[tokio::test]
async fn a_corrupt_admin_token_row_refuses_the_start_instead_of_minting_a_new_token() {
    let app = spawn_app_with(|s| s.admin_token = None).await;
    let (settings, dir) = app.stop_and_release().await;

    force_admin_token_row(&settings.data_dir, b"not a 32-byte hash").unwrap();
    match Application::build(settings.clone()) {
        Err(e @ StartupError::AdminToken(StoreError::Corrupt { .. })) => {
            let message = e.to_string();
            assert!(message.contains("admin token"), "{message}");
            assert!(message.contains("--admin-token"), "{message}");
        }
        Err(other) => panic!("expected a corrupt admin token, got {other}"),
        Ok(app) => panic!(
            "the server started (generated a token: {})",
            app.generated_admin_token.is_some()
        ),
    }

    // An explicit token replaces the unreadable row.
    let settings = keyledger::config::Settings {
        admin_token: Some(ADMIN_TOKEN.to_string().into()),
        ..settings
    };
    let app = start(settings, dir).await;
    let created = app
        .create_account_response(Some(ADMIN_TOKEN), "ada@example.com")
        .await;
    assert_eq!(created.status(), 201);
}

#[tokio::test]
async fn the_wrong_master_key_is_refused() {
    let app = spawn_app().await;
    let (_, live, _) = some_history(&app).await;
    let (settings, dir) = app.stop_and_release().await;
    let refused = Store::open(&settings.data_dir, &MasterKey::generate(), Durability::Sync);
    assert!(
        matches!(refused, Err(StoreError::WrongMasterKey)),
        "{:?}",
        refused.err()
    );
    // The right key still opens it, with everything in place.
    let app = start(settings, dir).await;
    assert_eq!(app.get("/v1/account", &live[0]).await.status(), 200);
}

#[tokio::test]
async fn a_running_store_cannot_be_opened_twice() {
    let app = spawn_app().await;
    let second = Store::open(
        &app.settings.data_dir,
        &app.settings.master_key,
        Durability::Sync,
    );
    assert!(
        matches!(second, Err(StoreError::Locked)),
        "{:?}",
        second.err()
    );
    let key_file = write_key_file(app.dir.path(), &app.settings.master_key);
    let verified = keyledger("verify", &app.settings.data_dir, &key_file);
    assert_refused(&verified, "stop the server");
}

#[tokio::test]
async fn the_data_dir_never_holds_an_api_token_in_plaintext() {
    let app = spawn_app().await;
    let (_, mut tokens, revoked) = some_history(&app).await;
    tokens.push(revoked);
    for i in 0..5 {
        let body = app.create_account(&format!("user{i}@example.com")).await;
        let minted = app.mint_key(&api_key(&body), &["read", "resolve"]).await;
        tokens.push(api_key(&body));
        tokens.push(api_key(&minted));
    }
    // Use every live key, so last-use stamps are written too.
    for token in &tokens {
        app.get("/v1/account", token).await;
    }
    let (settings, _dir) = app.stop_and_release().await;

    let files = files(&settings.data_dir);
    assert!(!files.is_empty());
    let contents: Vec<(PathBuf, Vec<u8>)> = files
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            (f, bytes)
        })
        .collect();
    // The scan sees the store's data: emails are stored as they are.
    assert!(
        contents
            .iter()
            .any(|(_, bytes)| contains(bytes, b"user4@example.com")),
        "the scan does not see the stored data"
    );
    for token in tokens.iter().map(String::as_str).chain([ADMIN_TOKEN]) {
        // The public prefix is meant to be stored; the rest is the secret.
        let secret = &token[12..];
        for (file, bytes) in &contents {
            assert!(
                !contains(bytes, token.as_bytes()) && !contains(bytes, secret.as_bytes()),
                "{} holds a token in plaintext",
                file.display()
            );
        }
    }
}
