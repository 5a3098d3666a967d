//! `keyledger export` and `keyledger import`: a round trip answers every API call as the original
//! did; an export taken from a running server while writers run restores a consistent store;
//! import refuses a non-empty target, a truncated backup and a broken chain.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use keyledger::storage::{Durability, Store};
use serde_json::{Value, json};

use super::{
    answers, assert_ok, assert_refused, assert_same_answers, key_file, populate, run, text,
};
use crate::helpers::{ADMIN_TOKEN, TestApp, openai, register_id, spawn_app, start, whole_log};

/// Opens a stopped store in this process, for a look at its log.
fn log_of(dir: &Path, key: &keyledger::crypto::MasterKey) -> Vec<keyledger::es::Envelope> {
    let store = Store::open_existing(dir, key, Durability::Sync).unwrap();
    let log = whole_log(&store);
    store.shutdown();
    log
}

#[tokio::test]
async fn an_export_imported_answers_every_call_as_the_original() {
    let app = spawn_app().await;
    let world = populate(&app).await;
    let before = answers(&app, &world).await;
    let (settings, dir) = app.stop_and_release().await;
    let key = key_file(dir.path(), "master.b64", &settings.master_key);
    let backup = dir.path().join("backup.ndjson");
    let exported = run(
        "export",
        &settings.data_dir,
        &key,
        &["--out", backup.to_str().unwrap()],
    );
    assert_ok(&exported);
    let ndjson = std::fs::read_to_string(&backup).unwrap();
    // Sealed secrets stay sealed: no plaintext secret is in the backup.
    assert!(
        !ndjson.contains("sk-prod-0"),
        "a plaintext secret in the backup"
    );
    let header: Value = serde_json::from_str(ndjson.lines().next().unwrap()).unwrap();
    assert_eq!(header["keyledger_export"], 1);
    assert_eq!(
        header["master_key_id"],
        settings.master_key.id().to_string()
    );
    // The revoked credentials' keys are gone for good: six live credentials, six keys.
    assert_eq!(header["keys"], 6, "{header}");

    let restored = dir.path().join("restored");
    let imported = run(
        "import",
        &restored,
        &key,
        &["--in", backup.to_str().unwrap()],
    );
    assert_ok(&imported);
    assert_ok(&run("verify", &restored, &key, &[]));
    assert_eq!(
        log_of(&restored, &settings.master_key),
        log_of(&settings.data_dir, &settings.master_key)
    );

    let mut again = settings.clone();
    again.data_dir = restored;
    let restored_app = start(again, dir).await;
    let after = answers(&restored_app, &world).await;
    assert_same_answers(&before, &after);
    // And it goes on: the restored store takes writes.
    let tenant = &world.tenants[0];
    register_id(
        &restored_app,
        &tenant.admin,
        &openai("new", "sk-new-0123456789"),
    )
    .await;
    restored_app.stop().await;
}

/// Creates accounts and credentials until told to stop; counts the acknowledged ones.
async fn write_until(app: Arc<TestApp>, stop: Arc<AtomicBool>, done: Arc<AtomicUsize>, n: usize) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let tenant = app.tenant(&format!("writer{n}-{i}@example.com")).await;
        register_id(&app, &tenant.token, &openai("w", "sk-writer-0123456789")).await;
        done.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

#[tokio::test]
async fn an_online_export_under_writes_restores_a_consistent_store() {
    let app = Arc::new(spawn_app().await);
    let world = populate(&app).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..3)
        .map(|n| tokio::spawn(write_until(app.clone(), stop.clone(), done.clone(), n)))
        .collect();
    while done.load(Ordering::Relaxed) < 6 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let acknowledged_before = app.store.last_position().unwrap();

    // Only the admin token exports.
    let path = "/v1/admin/export";
    let anonymous = app.fetch(reqwest::Method::GET, path, None).await;
    assert_eq!(anonymous.status(), 401);
    let account = app.get(path, &world.tenants[0].admin).await;
    assert_eq!(account.status(), 403);
    let response = app.get(path, ADMIN_TOKEN).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let body = response.bytes().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let written_after = app.store.last_position().unwrap();
    let app = Arc::into_inner(app).unwrap();
    let (settings, dir) = app.stop_and_release().await;

    let backup = dir.path().join("online.ndjson");
    std::fs::write(&backup, &body).unwrap();
    let header: Value =
        serde_json::from_slice(body.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let snapshot = header["positions"].as_u64().unwrap();
    assert!(
        snapshot >= acknowledged_before,
        "{snapshot} < {acknowledged_before}"
    );
    let key = key_file(dir.path(), "master.b64", &settings.master_key);
    let restored = dir.path().join("restored");
    let imported = run(
        "import",
        &restored,
        &key,
        &["--in", backup.to_str().unwrap()],
    );
    assert_ok(&imported);
    assert_ok(&run("verify", &restored, &key, &[]));
    // The restored log is the original's up to the snapshot's position, to the byte.
    let original = log_of(&settings.data_dir, &settings.master_key);
    let copy = log_of(&restored, &settings.master_key);
    assert!(written_after >= snapshot);
    assert_eq!(copy.len() as u64, snapshot);
    assert_eq!(copy[..], original[..copy.len()]);
    // Every credential live at the snapshot opens: its data key came with it.
    let mut again = settings.clone();
    again.data_dir = restored;
    let restored_app = start(again, dir).await;
    let resolved = restored_app
        .post(
            "/v1/byok/resolve",
            Some(&world.tenants[0].resolver),
            &json!({"model": "gpt-4o"}),
        )
        .await;
    assert_eq!(resolved.status(), 200);
    let resolved: Value = resolved.json().await.unwrap();
    assert_eq!(resolved["source"], "byok", "{resolved}");
    restored_app.stop().await;
}

#[tokio::test]
async fn import_refuses_a_non_empty_target_a_truncated_backup_and_a_broken_chain() {
    let app = spawn_app().await;
    populate(&app).await;
    let (settings, dir) = app.stop_and_release().await;
    let key = key_file(dir.path(), "master.b64", &settings.master_key);
    let backup = dir.path().join("backup.ndjson");
    assert_ok(&run(
        "export",
        &settings.data_dir,
        &key,
        &["--out", backup.to_str().unwrap()],
    ));
    let ndjson = std::fs::read_to_string(&backup).unwrap();
    let lines: Vec<&str> = ndjson.lines().collect();
    let target = dir.path().join("target");
    let import = |file: &Path| run("import", &target, &key, &["--in", file.to_str().unwrap()]);
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };

    // A target that holds anything.
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("notes.txt"), "mine").unwrap();
    assert_refused(&import(&backup), &["not empty"]);
    assert_eq!(
        std::fs::read_to_string(target.join("notes.txt")).unwrap(),
        "mine"
    );
    std::fs::remove_dir_all(&target).unwrap();

    // Cut before its closing line, and in the middle of the events.
    let without_end = write("no-end.ndjson", lines[..lines.len() - 1].join("\n") + "\n");
    assert_refused(&import(&without_end), &["truncated"]);
    assert!(
        !target.exists(),
        "a refused import left {}",
        target.display()
    );
    let half = write("half.ndjson", lines[..lines.len() / 2].join("\n") + "\n");
    assert_refused(&import(&half), &["truncated"]);
    let cut = write("cut.ndjson", ndjson[..ndjson.len() - 10].to_owned());
    assert_refused(&import(&cut), &["truncated"]);
    assert!(!target.exists());

    // An event changed, and an event taken out.
    let events: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("{\"position\":"))
        .collect();
    let registered = events
        .iter()
        .copied()
        .find(|i| lines[*i].contains("\"byok.registered\""))
        .unwrap();
    let position = serde_json::from_str::<Value>(lines[registered]).unwrap()["position"]
        .as_u64()
        .unwrap();
    let mut changed: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    changed[registered] = changed[registered].replace("\"prod\"", "\"evil\"");
    assert_ne!(changed[registered], lines[registered]);
    let changed = write("changed.ndjson", changed.join("\n") + "\n");
    assert_refused(
        &import(&changed),
        &["hash chain is broken", &format!("position {position}")],
    );
    let mut missing: Vec<&str> = lines.clone();
    missing.remove(events[3]);
    let missing = write("missing.ndjson", missing.join("\n") + "\n");
    let refused = assert_refused(&import(&missing), &["hash chain is broken", "missing"]);
    assert!(refused.contains("position 4"), "{refused}");
    assert!(!target.exists());

    // Another master key.
    let other = key_file(
        dir.path(),
        "other.b64",
        &keyledger::crypto::MasterKey::generate(),
    );
    let refused = run(
        "import",
        &target,
        &other,
        &["--in", backup.to_str().unwrap()],
    );
    assert_refused(&refused, &["master key"]);

    // The intact backup still imports.
    let imported = import(&backup);
    assert_ok(&imported);
    assert!(text(&imported).contains("imported"));
}
