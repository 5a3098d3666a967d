//! Readiness follows the store's integrity: ready once the check on start has passed, and not
//! ready for good once a damaged record is found, by a read while serving or by a check run in
//! the background; a missing store directory is created private; modes opened too widely are
//! repaired on open.

use keyledger::storage::{Durability, Readiness, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let response = app
        .request(reqwest::Method::GET, "/readyz", None)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn a_sound_store_is_ready_as_soon_as_the_server_listens() {
    let app = spawn_app().await;
    assert_eq!(
        readyz(&app).await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    app.create_account("ready@example.com").await;
    let app = app.restart().await;
    assert_eq!(readyz(&app).await.0, StatusCode::OK);
    let metrics = app
        .request(reqwest::Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let content_type = metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("# TYPE keyledger_corrupt_records_total counter"),
        "{text}"
    );
}

#[tokio::test]
async fn a_damaged_event_met_by_a_read_flips_readiness_for_good() {
    let app = spawn_app().await;
    let tenant = app.tenant("damaged@example.com").await;
    assert_eq!(readyz(&app).await.0, StatusCode::OK);
    // The account's first event no longer decodes.
    app.store.overwrite_log_value(1, b"not an event").unwrap();
    let page = app.get("/v1/events", &tenant.token).await;
    assert_error(page, 500, "api_error", "internal_error").await;
    assert_eq!(app.store.readiness(), Readiness::Damaged);
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503);
    assert_eq!(body, json!({"status": "unavailable", "reason": "damaged"}));
    // Other requests are still answered; readiness stays lost until a restart checks again.
    assert_eq!(app.get("/v1/account", &tenant.token).await.status(), 200);
    assert_eq!(readyz(&app).await.0, 503);
}

#[tokio::test]
async fn a_check_in_the_background_finds_what_reads_do_not() {
    let app = spawn_app().await;
    let tenant = app.tenant("background@example.com").await;
    app.mint_key(&tenant.token, &["read"]).await;
    // Checked in the background (every log counts as large here), the sound store passes.
    let check = app.store.check_on_start(0).expect("a background check");
    check.join().unwrap();
    assert_eq!(app.store.readiness(), Readiness::Ready);

    // An event altered in place, its hash kept, still decodes: reads serve it, the check does
    // not pass it.
    app.store
        .tamper_with_event(2, |e| e.actor = "kl_forged000".into())
        .unwrap();
    assert_eq!(app.get("/v1/events", &tenant.token).await.status(), 200);
    assert_eq!(readyz(&app).await.0, StatusCode::OK);
    app.store
        .check_on_start(0)
        .expect("a background check")
        .join()
        .unwrap();
    assert_eq!(readyz(&app).await.0, 503);

    // A restart checks again before listening, and is not ready either.
    let app = app.restart().await;
    assert_eq!(
        readyz(&app).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "reason": "damaged"})
        )
    );
    assert_eq!(app.get("/v1/account", &tenant.token).await.status(), 200);
}

#[cfg(unix)]
#[tokio::test]
async fn opening_a_store_makes_its_directories_and_files_private() {
    use std::os::unix::fs::PermissionsExt;

    let app = spawn_app().await;
    app.create_account("modes@example.com").await;
    let (settings, _dir) = app.stop_and_release().await;
    let data = &settings.data_dir;
    let mut entries = vec![data.clone(), data.join("keys")];
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            entries.push(path);
        }
    }
    for path in &entries {
        let open = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(open)).unwrap();
    }
    let store = Store::open(data, &settings.master_key, Durability::Sync).unwrap();
    store.shutdown();
    for path in &entries {
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let wanted = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode, wanted, "{}", path.display());
    }
}

/// Resolve's follower replays the log while the server already listens: until it has caught up,
/// `/readyz` says `catching_up`, resolve answers 503 `catching_up`, and writes do not wait for it.
#[tokio::test]
async fn resolve_waits_for_its_follower_and_readiness_says_so() {
    let app = spawn_app().await;
    let tenant = app.tenant("follower@example.com").await;
    let gateway = app.mint_token(&tenant.token, &["resolve"]).await;
    let (settings, dir) = app.stop_and_release().await;
    let (release, held) = tokio::sync::watch::channel(true);
    let settings = keyledger::config::Settings {
        hold_follower: Some(held),
        ..settings
    };
    let app = crate::helpers::start(settings, dir).await;
    assert_eq!(
        readyz(&app).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "unavailable", "reason": "catching_up"})
        )
    );
    let early = app
        .post("/v1/byok/resolve", Some(&gateway), &json!({}))
        .await;
    assert_error(early, 503, "api_error", "catching_up").await;
    // A write is acknowledged without waiting for the held follower.
    let started = std::time::Instant::now();
    let key = openai_key();
    crate::helpers::register_id(&app, &tenant.token, &key).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    release.send_replace(false);
    for _ in 0..500 {
        if readyz(&app).await.0 == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(readyz(&app).await.0, StatusCode::OK);
    let answer = app
        .post("/v1/byok/resolve", Some(&gateway), &json!({}))
        .await;
    let answer = crate::helpers::assert_json(answer, 200).await;
    assert_eq!(answer["source"], "byok", "{answer}");
}

fn openai_key() -> Value {
    crate::helpers::openai("prod", "sk-follower-0123456789abcdef")
}
