//! `keyledger rekey`: afterwards the old master key opens nothing (the server refuses to start
//! with it) and the new one opens everything; a rekey stopped part-way finishes when run again.

use std::process::Stdio;
use std::time::{Duration, Instant};

use keyledger::crypto::MasterKey;

use super::{
    answers, assert_ok, assert_refused, assert_same_answers, key_file, populate, run, text,
};
use crate::helpers::{serve_command, spawn_app, start};

#[tokio::test]
async fn after_a_rekey_only_the_new_key_opens_the_store_and_an_interrupted_one_resumes() {
    let app = spawn_app().await;
    let world = populate(&app).await;
    let before = answers(&app, &world).await;
    let (settings, dir) = app.stop_and_release().await;
    let data = &settings.data_dir;
    let old = key_file(dir.path(), "old.b64", &settings.master_key);
    let new_key = MasterKey::generate();
    let new = key_file(dir.path(), "new.b64", &new_key);
    let new_arg = ["--new-master-key-file", new.to_str().unwrap()];

    // Stopped after two of the six data keys, as a crash would.
    let mut stopped = super::keyledger(&[
        "rekey".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--master-key-file".as_ref(),
        old.as_os_str(),
        new_arg[0].as_ref(),
        new_arg[1].as_ref(),
    ]);
    stopped.env("KEYLEDGER_TEST_REKEY_STOP_AFTER", "2");
    assert_refused(&stopped.output().unwrap(), &["stopped after re-wrapping 2"]);
    // Half-way, the old key still opens the store, and verify names what is left to do.
    let half = run("verify", data, &old, &[]);
    assert_refused(&half, &["keyledger rekey"]);
    assert!(
        text(&half).contains(&new_key.id().to_string()),
        "{}",
        text(&half)
    );

    let resumed = run("rekey", data, &old, &new_arg);
    assert_ok(&resumed);
    let said = text(&resumed);
    assert!(
        said.contains("re-wrapped 4 data keys (2 done by an earlier run)"),
        "{said}"
    );
    // A third run finds everything done.
    let again = run("rekey", data, &old, &new_arg);
    assert_ok(&again);
    assert!(
        text(&again).contains("re-wrapped 0 data keys (6 done"),
        "{}",
        text(&again)
    );

    let refused = run("verify", data, &old, &[]);
    assert_refused(
        &refused,
        &["does not open this store", &new_key.id().to_string()],
    );
    assert_ok(&run("verify", data, &new, &[]));

    // The server refuses to start with the old key, clearly.
    let mut serve = serve_command(data, settings.master_key.to_base64().expose());
    let mut child = serve
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            panic!("the server started with the old master key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not open this store"), "{stderr}");

    // The new key opens everything: every answer as before, the secrets too.
    let mut rekeyed = settings.clone();
    rekeyed.master_key = new_key;
    let app = start(rekeyed, dir).await;
    let after = answers(&app, &world).await;
    assert_same_answers(&before, &after);
    app.stop().await;
}
