//! `keyledger verify` catches a changed event, a deleted event, a corrupted projection row and a
//! missing data key: exit code 1, naming the first bad record each time.

use keyledger::es::StreamId;
use keyledger::storage::force_rows;

use super::{assert_ok, assert_refused, key_file, run, text};
use crate::helpers::{TestApp, openai, register_id, spawn_app, whole_log};

/// A small store: one account, two credentials; answers the app and the credentials.
async fn small() -> (TestApp, Vec<String>) {
    let app = spawn_app().await;
    let tenant = app.tenant("ada@example.com").await;
    let mut ids = Vec::new();
    for alias in ["one", "two"] {
        ids.push(register_id(&app, &tenant.token, &openai(alias, "sk-verify-0123456789")).await);
    }
    (app, ids)
}

/// `force_rows`, once the store just closed has let go of its lock.
fn force(dir: &std::path::Path, remove: &[&[u8]], put: &[(&[u8], &[u8])]) {
    for _ in 0..100 {
        if force_rows(dir, remove, put).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    force_rows(dir, remove, put).unwrap();
}

fn log_key(position: u64) -> Vec<u8> {
    [&b"l/"[..], &position.to_be_bytes()].concat()
}

#[tokio::test]
async fn verify_names_a_changed_event() {
    let (app, ids) = small().await;
    let position = whole_log(&app.store)
        .iter()
        .find(|e| e.stream == format!("byok:{}", ids[1]))
        .unwrap()
        .position;
    app.store
        .tamper_with_event(position, |e| e.data["alias"] = "forged".into())
        .unwrap();
    let (settings, dir) = app.stop_and_release().await;
    let key = key_file(dir.path(), "master.b64", &settings.master_key);
    let verified = run("verify", &settings.data_dir, &key, &[]);
    assert_refused(&verified, &[&format!("position {position}"), "hash chain"]);
}

#[tokio::test]
async fn verify_names_a_deleted_event() {
    let (app, _) = small().await;
    let last = app.store.last_position().unwrap();
    let (settings, dir) = app.stop_and_release().await;
    let key = key_file(dir.path(), "master.b64", &settings.master_key);
    assert_ok(&run("verify", &settings.data_dir, &key, &[]));
    let gone = last - 1;
    force(&settings.data_dir, &[&log_key(gone)], &[]);
    let verified = run("verify", &settings.data_dir, &key, &[]);
    assert_refused(&verified, &[&format!("position {gone}")]);
}

#[tokio::test]
async fn verify_names_a_corrupted_projection_row() {
    let (app, ids) = small().await;
    let (settings, dir) = app.stop_and_release().await;
    let key = key_file(dir.path(), "master.b64", &settings.master_key);
    let row = format!("a/{}", StreamId::new("byok", &ids[0]));
    force(
        &settings.data_dir,
        &[],
        &[(row.as_bytes(), br#"{"stream_version":1}"#)],
    );
    let verified = run("verify", &settings.data_dir, &key, &[]);
    let said = assert_refused(&verified, &["keyledger rebuild"]);
    assert!(said.contains(&format!("differs {row}")), "{said}");
    assert!(!said.contains(&ids[1]), "{said}");
    assert_ok(&run("rebuild", &settings.data_dir, &key, &[]));
    assert_ok(&run("verify", &settings.data_dir, &key, &[]));
}

#[tokio::test]
async fn verify_names_a_missing_or_damaged_data_key() {
    let (app, ids) = small().await;
    let (settings, dir) = app.stop_and_release().await;
    let key = key_file(dir.path(), "master.b64", &settings.master_key);
    let file = settings.data_dir.join("keys").join(&ids[0]);
    let kept = std::fs::read(&file).unwrap();
    std::fs::remove_file(&file).unwrap();
    let verified = run("verify", &settings.data_dir, &key, &[]);
    let said = assert_refused(&verified, &["data key"]);
    assert!(said.contains(&format!("keys/{}", ids[0])), "{said}");
    assert!(!said.contains(&ids[1]), "{said}");
    // A key file with one bit flipped does not open either.
    let mut flipped = kept.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    std::fs::write(&file, &flipped).unwrap();
    let verified = run("verify", &settings.data_dir, &key, &[]);
    assert_refused(&verified, &["does not open"]);
    std::fs::write(&file, &kept).unwrap();
    let verified = run("verify", &settings.data_dir, &key, &[]);
    assert_ok(&verified);
    assert!(text(&verified).contains("ok"));
}
