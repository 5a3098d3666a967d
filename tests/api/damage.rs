//! A damaged store, through the real binary: a bit flipped in an event inside sled's `db` file
//! keeps the server from ever being ready and is counted in `/metrics`; a truncated `db` file, a
//! missing data key, a missing or empty store are refused with a clear message and exit code 1
//! (never a panic, never a backtrace, even with `RUST_BACKTRACE=1`); and every directory and file
//! of a data directory is its owner's alone.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use keyledger::crypto::MasterKey;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    ADMIN_TOKEN, Binary, assert_error, openai, register_id, serve_command, spawn_app,
};

/// sled's segment size (its default): sled replays the last segment when it opens, and reads
/// older ones only when a page in them is needed.
const SEGMENT: usize = 512 * 1024;

/// How long a command that should refuse at once may take, however loaded the machine is.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(30);

fn master_key_text(key: &MasterKey) -> String {
    key.to_base64().expose().clone()
}

fn write_key_file(dir: &Path, key: &MasterKey) -> PathBuf {
    let path = dir.join("master.key.b64");
    std::fs::write(&path, master_key_text(key)).unwrap();
    path
}

/// The binary's `verify` or `rebuild` on `data_dir`, with `RUST_BACKTRACE=1` as many Rust users
/// have it.
fn cli(command: &str, data_dir: &Path, key_file: &Path) -> Command {
    let mut cli = Command::new(env!("CARGO_BIN_EXE_keyledger"));
    cli.arg(command)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--master-key-file")
        .arg(key_file)
        .env_remove("KEYLEDGER_MASTER_KEY")
        .env_remove("KEYLEDGER_DATA_DIR")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1");
    cli
}

/// What a command that is expected to stop by itself did: its exit status (`None` if it was
/// still running after `REFUSAL_TIMEOUT` and had to be killed) and its output.
struct Ran {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn text(&self) -> String {
        format!(
            "status {:?}\nstdout: {}\nstderr: {}",
            self.status, self.stdout, self.stderr
        )
    }

    /// Exit code 1 with a clear message: no panic and no backtrace.
    fn assert_refused(&self, says: &[&str]) {
        let text = self.text();
        assert_eq!(
            self.status.and_then(|s| s.code()),
            Some(1),
            "not exit code 1: {text}"
        );
        let lower = self.stderr.to_lowercase();
        for forbidden in ["panicked", "backtrace", "rust_backtrace"] {
            assert!(!lower.contains(forbidden), "{forbidden:?} in {text}");
        }
        assert!(
            says.iter().any(|s| self.stderr.contains(s)),
            "stderr says none of {says:?}: {text}"
        );
    }
}

fn run_bounded(command: &mut Command, logs: &Path) -> Ran {
    let stdout = logs.join("out.log");
    let stderr = logs.join("err.log");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("start keyledger");
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: std::fs::read_to_string(stdout).unwrap(),
        stderr: std::fs::read_to_string(stderr).unwrap(),
    }
}

/// The binary serving `data_dir`, until it stops by itself (it should refuse).
fn serve_refusal(data_dir: &Path, key: &MasterKey, logs: &Path) -> Ran {
    let mut serve = serve_command(data_dir, &master_key_text(key));
    serve.env("RUST_BACKTRACE", "1");
    run_bounded(&mut serve, logs)
}

/// Sends SIGTERM to a running binary and waits for it to exit cleanly.
fn stop(server: &mut Binary) {
    let sent = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    assert!(sent.expect("run kill").success());
    assert!(server.wait().expect("wait for exit").success());
}

async fn create_account(client: &reqwest::Client, address: &str, email: &str) -> Value {
    let response = client
        .post(format!("{address}/v1/accounts"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// `/readyz`'s status and body.
async fn readyz(client: &reqwest::Client, address: &str) -> (StatusCode, Value) {
    let response = client
        .get(format!("{address}/readyz"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// The value of `keyledger_corrupt_records_total` in `/metrics`.
async fn corrupt_records(client: &reqwest::Client, address: &str) -> u64 {
    let response = client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("keyledger_corrupt_records_total "))
        .unwrap_or_else(|| panic!("no corrupt record counter in {text}"))
        .trim()
        .parse()
        .unwrap()
}

fn occurrences(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(at, _)| at)
        .collect()
}

/// Never ready on a store with a flipped bit: the check on start finds it, and so does every
/// feed page that reads it (a 500 with the envelope), each finding counted in `/metrics` and
/// logged with the event's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_an_event_keeps_the_server_unready_and_is_counted() {
    // Enough accounts for sled to fill more than one segment, so that an early event sits in a
    // segment sled does not replay on open: the damage is met by reads, as in a store in use.
    const ACCOUNTS: usize = 160;
    let app = spawn_app().await;
    let requests = (0..ACCOUNTS).map(|i| {
        let client = app.client.clone();
        let address = app.address.clone();
        async move { create_account(&client, &address, &format!("u{i}@example.com")).await }
    });
    let accounts = futures_util::future::join_all(requests).await;
    let (settings, dir) = app.stop_and_release().await;
    let db = settings.data_dir.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    let last_segment = (bytes.len() - 1) / SEGMENT * SEGMENT;
    assert!(last_segment > 0, "the store fits in one segment");

    // An `account.created` event's JSON ends with its email: flip one bit of it in every copy
    // sled holds, all of them outside the segment sled replays.
    let (victim, copies) = (0..ACCOUNTS)
        .find_map(|i| {
            let needle = format!("\"email\":\"u{i}@example.com\"}}}}");
            let copies = occurrences(&bytes, needle.as_bytes());
            let early =
                !copies.is_empty() && copies.iter().all(|at| at + needle.len() < last_segment);
            early.then_some((i, copies))
        })
        .expect("an event stored before the last segment");
    for at in &copies {
        bytes[at + "\"email\":\"".len()] ^= 0x01;
    }
    std::fs::write(&db, &bytes).unwrap();

    let mut server = Binary::spawn(
        &mut serve_command(&settings.data_dir, &master_key_text(&settings.master_key)),
        dir.path(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let address = server.address.clone();
    for _ in 0..5 {
        let (status, body) = readyz(&client, &address).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body, json!({"status": "unavailable", "reason": "damaged"}));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let found_on_start = corrupt_records(&client, &address).await;
    assert!(found_on_start >= 1, "{found_on_start}");

    // The victim's own feed holds the damaged event.
    let token = accounts[victim]["api_key"].as_str().unwrap();
    for _ in 0..2 {
        let page = client
            .get(format!("{address}/v1/events"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_error(page, 500, "api_error", "internal_error").await;
    }
    assert!(corrupt_records(&client, &address).await >= found_on_start + 2);
    assert_eq!(readyz(&client, &address).await.0, 503);

    stop(&mut server);
    let log = std::fs::read_to_string(&server.stderr).unwrap();
    assert!(log.contains("damaged record"), "{log}");
    assert!(log.contains("position"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A store made by the real binary: a few accounts, the server stopped with SIGTERM. Answers
/// the data dir's parent (the temp dir), the data dir and the master key.
async fn binary_store(accounts: usize) -> (tempfile::TempDir, PathBuf, MasterKey) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = MasterKey::generate();
    let mut server = Binary::spawn(
        &mut serve_command(&data, &master_key_text(&key)),
        dir.path(),
    );
    let client = reqwest::Client::new();
    for i in 0..accounts {
        create_account(&client, &server.address, &format!("t{i}@example.com")).await;
    }
    stop(&mut server);
    (dir, data, key)
}

#[tokio::test]
async fn a_truncated_db_file_is_refused_with_a_clear_message_and_exit_1() {
    let says = ["damaged", "lost data"];
    // As the server left it, and after a `verify` has run on it (sled then keeps a snapshot,
    // and reads the store differently on open).
    for verified_first in [false, true] {
        let (dir, data, key) = binary_store(6).await;
        let key_file = write_key_file(dir.path(), &key);
        if verified_first {
            let verified = run_bounded(&mut cli("verify", &data, &key_file), dir.path());
            assert_eq!(
                verified.status.and_then(|s| s.code()),
                Some(0),
                "{}",
                verified.text()
            );
        }
        // Cut the file inside the data: at the first copy of the last account's email.
        let db = data.join("db");
        let bytes = std::fs::read(&db).unwrap();
        let cut = occurrences(&bytes, b"t5@example.com")[0];
        std::fs::write(&db, &bytes[..cut]).unwrap();

        for command in ["verify", "rebuild"] {
            let ran = run_bounded(&mut cli(command, &data, &key_file), dir.path());
            ran.assert_refused(&says);
        }
        let served = serve_refusal(&data, &key, dir.path());
        served.assert_refused(&says);
        // Refusing left nothing that would hide the damage from the next look.
        let again = run_bounded(&mut cli("verify", &data, &key_file), dir.path());
        again.assert_refused(&says);
    }
}

#[tokio::test]
async fn command_errors_print_the_message_alone_even_with_rust_backtrace() {
    let (dir, data, _) = binary_store(1).await;
    let wrong = write_key_file(dir.path(), &MasterKey::generate());
    let ran = run_bounded(&mut cli("verify", &data, &wrong), dir.path());
    ran.assert_refused(&["the master key does not open this store"]);
    assert!(ran.stderr.starts_with("error: "), "{}", ran.text());
    assert_eq!(ran.stderr.trim().lines().count(), 1, "{}", ran.text());
}

#[tokio::test]
async fn verify_and_rebuild_refuse_a_missing_or_empty_store_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = write_key_file(dir.path(), &MasterKey::generate());
    let missing = dir.path().join("missing");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for command in ["verify", "rebuild"] {
        let ran = run_bounded(&mut cli(command, &missing, &key_file), dir.path());
        ran.assert_refused(&["no keyledger store"]);
        assert!(ran.stderr.contains("no such directory"), "{}", ran.text());
        assert!(!missing.exists(), "{command} created {}", missing.display());

        let ran = run_bounded(&mut cli(command, &empty, &key_file), dir.path());
        ran.assert_refused(&["no keyledger store"]);
        assert_eq!(
            std::fs::read_dir(&empty).unwrap().count(),
            0,
            "{command} wrote into the empty directory"
        );
    }
    // Without a master key either, "no store" is what is said.
    let mut no_key = Command::new(env!("CARGO_BIN_EXE_keyledger"));
    no_key
        .args(["verify", "--data-dir"])
        .arg(&missing)
        .env_remove("KEYLEDGER_MASTER_KEY")
        .env_remove("KEYLEDGER_DATA_DIR");
    run_bounded(&mut no_key, dir.path()).assert_refused(&["no keyledger store"]);
    assert!(!missing.exists());
}

/// Deleting a live credential's data key: `verify` fails naming it, and the server logs it on
/// start and never becomes ready.
#[tokio::test]
async fn a_missing_data_key_fails_verify_and_keeps_the_server_unready() {
    let app = spawn_app().await;
    let tenant = app.tenant("keys@example.com").await;
    let kept = register_id(&app, &tenant.token, &openai("kept", "sk-kept-0123456789")).await;
    let lost = register_id(&app, &tenant.token, &openai("lost", "sk-lost-0123456789")).await;
    let revoked = register_id(&app, &tenant.token, &openai("gone", "sk-gone-0123456789")).await;
    let response = app
        .delete(&format!("/v1/byok/revoke/{revoked}"), &tenant.token)
        .await;
    assert_eq!(response.status(), 200);
    let (settings, dir) = app.stop_and_release().await;
    let key_file = write_key_file(dir.path(), &settings.master_key);
    let verified = run_bounded(
        &mut cli("verify", &settings.data_dir, &key_file),
        dir.path(),
    );
    assert_eq!(
        verified.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        verified.text()
    );
    assert!(
        verified.stdout.contains("data keys of live credentials: 2"),
        "{}",
        verified.text()
    );

    std::fs::remove_file(settings.data_dir.join("keys").join(&lost)).unwrap();
    let verified = run_bounded(
        &mut cli("verify", &settings.data_dir, &key_file),
        dir.path(),
    );
    verified.assert_refused(&["data key"]);
    assert!(verified.stdout.contains(&lost), "{}", verified.text());
    assert!(!verified.stdout.contains(&kept), "{}", verified.text());

    let mut server = Binary::spawn(
        &mut serve_command(&settings.data_dir, &master_key_text(&settings.master_key)),
        dir.path(),
    );
    let client = reqwest::Client::new();
    let (status, body) = readyz(&client, &server.address).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "damaged");
    assert!(corrupt_records(&client, &server.address).await >= 1);
    stop(&mut server);
    let log = std::fs::read_to_string(&server.stderr).unwrap();
    assert!(log.contains(&lost), "{log}");
    assert!(log.contains("no data key"), "{log}");
}

#[cfg(unix)]
#[tokio::test]
async fn every_directory_and_file_of_the_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Development mode, so the binary writes its own master key into the data dir too.
    let mut serve = serve_command(&data, "");
    serve.env_remove("KEYLEDGER_MASTER_KEY");
    let mut server = Binary::spawn(&mut serve, dir.path());
    let client = reqwest::Client::new();
    let account = create_account(&client, &server.address, "modes@example.com").await;
    let registered = client
        .post(format!("{}/v1/byok/register", server.address))
        .bearer_auth(account["api_key"].as_str().unwrap())
        .json(&openai("private", "sk-private-0123456789"))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    stop(&mut server);
    // `verify` opens and closes the store again: sled writes a snapshot as it closes.
    let mut verify = Command::new(env!("CARGO_BIN_EXE_keyledger"));
    verify
        .args(["verify", "--data-dir"])
        .arg(&data)
        .env_remove("KEYLEDGER_MASTER_KEY")
        .env_remove("KEYLEDGER_DATA_DIR");
    let verified = run_bounded(&mut verify, dir.path());
    assert_eq!(
        verified.status.and_then(|s| s.code()),
        Some(0),
        "{}",
        verified.text()
    );

    let mut seen = (0, 0);
    let mut pending = vec![data.clone()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            seen.0 += 1;
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            seen.1 += 1;
        }
    }
    for name in ["db", "conf", "master.key", "keys"] {
        assert!(data.join(name).exists(), "{name}");
    }
    assert_eq!(std::fs::read_dir(data.join("keys")).unwrap().count(), 1);
    assert!(seen.0 >= 2 && seen.1 >= 4, "{seen:?}");
}
