//! What the integration tests share: the server in-process on port 0 with a fresh sled store in
//! a temp dir (`TestApp`), accounts and their tokens, the status and error-envelope checks, and
//! (in the submodules) the real binary as a process, requests with extra headers or raw bodies,
//! credential registration and state changes, and scans of the data directory.

mod binary;
mod credentials;
pub mod fake_provider;
mod files;
pub mod python;
mod requests;
pub mod sigv4;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use keyledger::config::{KeySource, Settings};
use keyledger::crypto::MasterKey;
use keyledger::es::Envelope;
use keyledger::startup::{Application, Shutdown};
use keyledger::storage::{Durability, Store, StoreError};
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tempfile::TempDir;

pub use binary::{Binary, serve_command};
pub use credentials::{disable, openai, register, register_id, register_response, revoke};
pub use files::{contains, files, files_containing};
pub use requests::{assert_json, etag, header, json_of, send, send_raw};

pub const ADMIN_TOKEN: &str = "kl_admin_test_0123456789abcdef0123456789abcdef";

/// A running server and everything needed to talk to it and to restart it on the same store.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: Store,
    pub settings: Settings,
    pub dir: Arc<TempDir>,
    handle: Shutdown,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub fn test_settings(dir: PathBuf) -> Settings {
    Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir,
        master_key: MasterKey::generate(),
        key_source: KeySource::Flag,
        admin_token: Some(ADMIN_TOKEN.to_string().into()),
        open_signup: false,
        durability: Durability::Sync,
        body_timeout: Duration::from_secs(10),
        outbound: keyledger::outbound::OutboundSettings::default(),
        rotation: Default::default(),
        health: keyledger::service::health::HealthSettings::default(),
        webhooks: keyledger::service::deliveries::DeliverySettings::default(),
        writer_stuck_after: Duration::from_secs(10),
        workers: Some(1),
        handle_signals: false,
        hold_follower: None,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let mut settings = test_settings(dir.path().join("data"));
    adjust(&mut settings);
    start(settings, dir).await
}

/// Starts the server on existing settings and data dir (after `stop_and_release`).
pub async fn start(settings: Settings, dir: Arc<TempDir>) -> TestApp {
    // A store just closed by a restart may still be releasing its lock for a moment.
    let mut attempt = 0;
    let app = loop {
        match Application::build(settings.clone()) {
            Ok(app) => break app,
            Err(e) if attempt < 50 => {
                attempt += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the application did not start: {e}"),
        }
    };
    let address = format!("http://127.0.0.1:{}", app.port());
    // Resolve answers 503 until its follower has replayed the log: a few milliseconds here.
    let held = settings.hold_follower.is_some();
    for _ in 0..1000 {
        if held || app.is_caught_up() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let handle = app.handle();
    let store = app.store().clone();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        // Bounds every request, so a hung server fails the test instead of stalling the run.
        // Idle connections are dropped before the server's keep-alive (5 s) closes them, so a
        // request after a pause never goes out on a connection the server is closing.
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(2))
            .build()
            .expect("http client"),
        store,
        settings,
        dir,
        handle,
        server,
    }
}

impl TestApp {
    /// Stops the server gracefully and releases the store.
    pub async fn stop(self) -> (Settings, Arc<TempDir>) {
        self.handle.stop().await;
        self.server
            .await
            .expect("server task")
            .expect("server stopped cleanly");
        drop(self.store);
        (self.settings, self.dir)
    }

    /// Stops the server and waits until nothing in this process holds its store, so the data dir
    /// can be opened directly or by the CLI.
    pub async fn stop_and_release(self) -> (Settings, Arc<TempDir>) {
        let (settings, dir) = self.stop().await;
        // The workers drop their clones of the store a moment after the server stops.
        for _ in 0..100 {
            match Store::open(&settings.data_dir, &settings.master_key, Durability::Sync) {
                Err(StoreError::Locked) => tokio::time::sleep(Duration::from_millis(100)).await,
                Ok(store) => {
                    store.shutdown();
                    return (settings, dir);
                }
                Err(e) => panic!("the stopped store does not open: {e}"),
            }
        }
        panic!("the store was still in use 10 s after the server stopped");
    }

    /// Stops and starts again on the same data dir, master key and admin token.
    pub async fn restart(self) -> TestApp {
        let (settings, dir) = self.stop().await;
        start(settings, dir).await
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let builder = self
            .client
            .request(method, format!("{}{}", self.address, path));
        match token {
            Some(t) => builder.bearer_auth(t),
            None => builder,
        }
    }

    /// Sends a request without a body; answers the response, whatever it is.
    pub async fn fetch(&self, method: Method, path: &str, token: Option<&str>) -> Response {
        self.request(method, path, token)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.fetch(Method::GET, path, Some(token)).await
    }

    /// `GET` that must answer 200; answers the JSON body.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        assert_json(self.get(path, token).await, 200).await
    }

    /// `GET` with one more header (sent verbatim) and an optional token.
    pub async fn get_with(
        &self,
        path: &str,
        token: Option<&str>,
        header: (&str, &str),
    ) -> Response {
        send(self, Method::GET, path, token, &[header], None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Response {
        self.request(Method::POST, path, token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.fetch(Method::DELETE, path, Some(token)).await
    }

    /// Sends `POST /v1/accounts` for `email` (any JSON value, so that wrong types can be sent)
    /// with `token`; answers the response, whatever it is.
    pub async fn create_account_response(
        &self,
        token: Option<&str>,
        email: impl Serialize,
    ) -> Response {
        self.post("/v1/accounts", token, &json!({ "email": email }))
            .await
    }

    /// Creates an account with the admin token and answers the 201 body.
    pub async fn create_account(&self, email: &str) -> Value {
        let response = self.create_account_response(Some(ADMIN_TOKEN), email).await;
        assert_json(response, 201).await
    }

    /// Creates an account; answers it with its first (admin) token.
    pub async fn tenant(&self, email: &str) -> Tenant {
        let body = self.create_account(email).await;
        Tenant {
            account_id: body["account_id"].as_str().unwrap().to_owned(),
            token: api_key(&body),
            body,
        }
    }

    /// Creates an account; answers its first (admin) token.
    pub async fn account_token(&self, email: &str) -> String {
        api_key(&self.create_account(email).await)
    }

    /// Mints a key with the given scopes on the account of `token`; answers the 201 body.
    pub async fn mint_key(&self, token: &str, scopes: &[&str]) -> Value {
        let body = json!({ "name": "test key", "scopes": scopes });
        assert_json(self.post("/v1/account/keys", Some(token), &body).await, 201).await
    }

    /// Mints a key with the given scopes on the account of `token`; answers its token.
    pub async fn mint_token(&self, token: &str, scopes: &[&str]) -> String {
        api_key(&self.mint_key(token, scopes).await)
    }

    /// How many keys, revoked ones included, the account of the admin `token` lists.
    pub async fn key_count(&self, token: &str) -> usize {
        let listed = self.get_json("/v1/account/keys", token).await;
        listed["items"].as_array().unwrap().len()
    }
}

/// An account and its first (admin) token.
pub struct Tenant {
    pub account_id: String,
    pub token: String,
    /// The 201 body of the account's creation.
    pub body: Value,
}

/// The token in the 201 body of an account's creation or a key's minting.
pub fn api_key(body: &Value) -> String {
    body["api_key"].as_str().unwrap().to_owned()
}

/// Every event of the log in position order, read one position at a time; the log must be
/// gap-free and end at its last position.
pub fn whole_log(store: &Store) -> Vec<Envelope> {
    let last = store.last_position().unwrap();
    let events: Vec<Envelope> = (1..=last)
        .map(|p| {
            store
                .event(p)
                .unwrap()
                .unwrap_or_else(|| panic!("no event at {p}"))
        })
        .collect();
    assert!(store.event(last + 1).unwrap().is_none());
    events
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The field names of a JSON object.
pub fn keys_of(value: &Value) -> BTreeSet<String> {
    value.as_object().unwrap().keys().cloned().collect()
}

/// Sends the requests at once; asserts that exactly one answered `winner` and every other one
/// `loser`.
pub async fn assert_one_winner<F>(requests: impl IntoIterator<Item = F>, winner: u16, loser: u16)
where
    F: std::future::Future<Output = Response>,
{
    let statuses: Vec<u16> = futures_util::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let count = |status: u16| statuses.iter().filter(|s| **s == status).count();
    assert_eq!(count(winner), 1, "{statuses:?}");
    assert_eq!(count(loser), statuses.len() - 1, "{statuses:?}");
}

/// Asserts a response is an error with the envelope, the status, type and code given, and that
/// the body's request id matches the `X-Request-ID` header. Answers the `error` object.
pub async fn assert_error(response: Response, status: u16, error_type: &str, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let header = response
        .headers()
        .get("x-request-id")
        .expect("X-Request-ID header")
        .to_str()
        .expect("ascii")
        .to_owned();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: Value = response.json().await.expect("json error body");
    let error = body["error"].clone();
    assert_eq!(error["type"], error_type, "type in {body}");
    assert_eq!(error["code"], code, "code in {body}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(error["request_id"], header.as_str());
    error
}

/// Asserts a 415 `unsupported_media_type` with the envelope: a body not sent as JSON.
pub async fn assert_not_json(response: Response) -> Value {
    assert_error(
        response,
        415,
        "invalid_request_error",
        "unsupported_media_type",
    )
    .await
}
