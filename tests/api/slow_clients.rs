//! Slow and stuck clients: a body that stops arriving is answered 408 with the envelope within
//! `--body-timeout` and its connection closed, whatever the route; stalled uploads do not starve
//! other requests; and SIGTERM does not wait for them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use keyledger::crypto::MasterKey;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Binary, TestApp, serve_command, spawn_app_with};

/// The body timeout these tests run with.
const BOUND: Duration = Duration::from_secs(1);
/// What the server may take beyond the bound to answer and close (it lingers up to 1 s for the
/// client to hang up first), on a loaded machine.
const SLACK: Duration = Duration::from_secs(4);

/// An answer read off a raw connection, up to the server's close.
struct Answer {
    status: u16,
    head: String,
    body: Value,
    /// From the first byte of the request to the server's close.
    elapsed: Duration,
}

/// `host:port` of an `http://` address.
fn authority(address: &str) -> &str {
    address.trim_start_matches("http://")
}

/// Opens a connection and sends `head` (without the blank line that ends it) and `partial` of
/// its body, then sends nothing more.
fn stall(address: &str, head: &str, partial: &[u8]) -> (TcpStream, Instant) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(authority(address)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .unwrap();
    stream.write_all(partial).unwrap();
    stream.flush().unwrap();
    (stream, started)
}

/// Reads until the server closes the connection (a read timeout fails the test).
fn answer(mut stream: TcpStream, started: Instant) -> Answer {
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .expect("the server did not close the connection within the read timeout");
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
        elapsed,
    }
}

/// The head of `POST /v1/account/keys` announcing a 200-byte JSON body.
fn mint_head(token: &str) -> String {
    format!(
        "POST /v1/account/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 200"
    )
}

fn assert_timed_out(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 408, "{what}: {}", answer.head);
    assert_eq!(answer.body["error"]["code"], "request_timeout", "{what}");
    assert_eq!(
        answer.body["error"]["type"], "invalid_request_error",
        "{what}"
    );
    let request_id = answer.body["error"]["request_id"].as_str().unwrap();
    assert!(
        answer.head.contains(&format!(
            "x-request-id: {}",
            request_id.to_ascii_lowercase()
        )),
        "{what}: {}",
        answer.head
    );
    assert!(
        answer.elapsed >= BOUND && answer.elapsed < BOUND + SLACK,
        "{what}: answered and closed after {:?}",
        answer.elapsed
    );
}

async fn app_with_bound() -> TestApp {
    spawn_app_with(|settings| settings.body_timeout = BOUND).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_is_answered_408_and_its_connection_closed() {
    let app = app_with_bound().await;
    let token = app.account_token("slow@example.com").await;
    let (address, raw_token) = (app.address.clone(), token.clone());
    let outcomes = tokio::task::spawn_blocking(move || {
        let token = raw_token;
        // A fixed length, a few bytes of it, then nothing.
        let (stream, started) = stall(&address, &mint_head(&token), br#"{"name": "#);
        let fixed = answer(stream, started);
        // A chunked body whose first chunk arrives and the rest never does.
        let head = format!(
            "POST /v1/account/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked"
        );
        let (stream, started) = stall(&address, &head, b"9\r\n{\"name\": \r\n");
        let chunked = answer(stream, started);
        (fixed, chunked)
    })
    .await
    .unwrap();
    assert_timed_out(&outcomes.0, "Content-Length");
    assert_timed_out(&outcomes.1, "chunked");

    // Nothing was minted: the account still has its first key only.
    let keys: Value = app
        .get("/v1/account/keys", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["items"].as_array().map(Vec::len), Some(1), "{keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_reads_no_body_does_not_wait_for_one() {
    let app = app_with_bound().await;
    let address = app.address.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked";
        let (stream, started) = stall(&address, head, b"4\r\nabcd\r\n");
        answer(stream, started)
    })
    .await
    .unwrap();
    // It answers at once and closes rather than waiting for the rest of a body it never reads.
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(
        answer.elapsed < BOUND + SLACK,
        "the connection stayed open {:?}",
        answer.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_fifty_uploads_stall() {
    let app = app_with_bound().await;
    let token = app.account_token("many@example.com").await;
    let stalled: Vec<_> = (0..50)
        .map(|_| stall(&app.address, &mint_head(&token), br#"{"na"#))
        .collect();
    let healthy = tokio::time::timeout(
        Duration::from_secs(2),
        app.client.get(format!("{}/healthz", app.address)).send(),
    )
    .await
    .expect("/healthz answered while uploads stalled")
    .unwrap();
    assert_eq!(healthy.status(), 200);
    let answers = tokio::task::spawn_blocking(move || {
        stalled
            .into_iter()
            .map(|(stream, started)| answer(stream, started))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (i, answer) in answers.iter().enumerate() {
        assert_timed_out(answer, &format!("stalled upload {i}"));
    }
    // The server is as good as before.
    let minted = app.mint_key(&token, &["read"]).await;
    assert_eq!(minted["scopes"], json!(["read"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_a_stalled_upload() {
    let dir = tempfile::tempdir().unwrap();
    let master_key = MasterKey::generate().to_base64().expose().clone();
    // A body timeout far longer than the bound on shutdown below: only shutdown can end it.
    let mut server = Binary::spawn(
        serve_command(&dir.path().join("data"), &master_key).args(["--body-timeout", "120"]),
        dir.path(),
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let created: Value = client
        .post(format!("{}/v1/accounts", server.address))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"email": "term@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["api_key"].as_str().unwrap().to_owned();
    let (stream, started) = stall(&server.address, &mint_head(&token), br#"{"name": "#);
    // The request has reached its handler, which is waiting for the body.
    std::thread::sleep(Duration::from_millis(300));

    let stopping = Instant::now();
    let pid = server.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.wait().expect("wait for keyledger");
        (status, stopping.elapsed())
    });
    let answer = tokio::task::spawn_blocking(move || answer(stream, started))
        .await
        .unwrap();
    let (status, took) = tokio::time::timeout(Duration::from_secs(20), exit)
        .await
        .expect("keyledger exited")
        .unwrap();
    assert!(status.success(), "keyledger exited with {status}");
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    assert_eq!(answer.status, 503, "{}", answer.head);
    assert_eq!(answer.body["error"]["code"], "shutting_down");
}
