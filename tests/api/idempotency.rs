//! Idempotency keys on every mutating route (docs/design.md §6): replays, reuse, races, validation
//! failures, account scoping, restarts, and what reaches the disk.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{
    self, ADMIN_TOKEN, TestApp, assert_error, files_containing, header, spawn_app, spawn_app_with,
};

/// A response, read whole.
struct Answer {
    status: StatusCode,
    replayed: Option<String>,
    request_id: String,
    etag: Option<String>,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {}", self.text))
    }

    fn is_replay(&self) -> bool {
        self.replayed.as_deref() == Some("true")
    }

    /// Asserts this is a replay of `first`: same status, ETag and body bytes, its own request id.
    fn assert_replays(&self, first: &Answer) {
        assert_eq!(self.status, first.status, "status; body {}", self.text);
        assert!(self.is_replay(), "Idempotent-Replayed: {:?}", self.replayed);
        assert!(!first.is_replay(), "the first response is not a replay");
        assert_eq!(self.text, first.text, "the replayed body is the first body");
        assert_eq!(self.etag, first.etag);
        assert_ne!(
            self.request_id, first.request_id,
            "a replay has its own request id"
        );
    }
}

async fn read(response: reqwest::Response) -> Answer {
    Answer {
        status: response.status(),
        replayed: header(&response, "idempotent-replayed"),
        request_id: header(&response, "x-request-id").expect("X-Request-ID"),
        etag: header(&response, "etag"),
        text: response.text().await.unwrap(),
    }
}

/// Sends a request with an optional idempotency key header and JSON body.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> reqwest::Response {
    let headers = key.map(|key| ("Idempotency-Key", key));
    helpers::send(app, method, path, Some(token), headers.as_slice(), body).await
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    read(send(app, method, path, token, key, body).await).await
}

async fn key_count(app: &TestApp, token: &str) -> usize {
    let response = app.get("/v1/account/keys", token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["items"].as_array().unwrap().len()
}

fn mint_body(name: &str) -> Value {
    json!({"name": name, "scopes": ["read"]})
}

fn openai(alias: &str) -> Value {
    json!({"provider": "openai", "alias": alias, "api_key": "sk-idem-0123456789abcdef",
        "capability": "chat"})
}

#[tokio::test]
async fn account_creation_is_replayed_with_the_same_api_key() {
    let app = spawn_app().await;
    let body = json!({"email": "ada@example.com"});
    let first = call(
        &app,
        Method::POST,
        "/v1/accounts",
        ADMIN_TOKEN,
        Some("create-ada"),
        Some(&body),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.replayed, None);
    let again = call(
        &app,
        Method::POST,
        "/v1/accounts",
        ADMIN_TOKEN,
        Some("create-ada"),
        Some(&body),
    )
    .await;
    again.assert_replays(&first);
    let token = first.json()["api_key"].as_str().unwrap().to_owned();
    assert_eq!(again.json()["api_key"], token.as_str());
    assert_eq!(app.get("/v1/account", &token).await.status(), 200);

    // One account was created: without the key, the same email is taken.
    let taken = app.post("/v1/accounts", Some(ADMIN_TOKEN), &body).await;
    assert_error(taken, 409, "conflict_error", "email_taken").await;
}

#[tokio::test]
async fn key_minting_is_replayed_whether_the_key_is_in_the_body_or_the_header() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let with_field =
        json!({"name": "ci", "scopes": ["read", "write"], "idempotency_key": "mint-1"});
    let first = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        None,
        Some(&with_field),
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        None,
        Some(&with_field),
    )
    .await;
    again.assert_replays(&first);

    // The same request with the key in the header instead, fields in another order.
    let reordered = json!({"scopes": ["read", "write"], "name": "ci"});
    let by_header = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        Some("mint-1"),
        Some(&reordered),
    )
    .await;
    by_header.assert_replays(&first);
    // Both, agreeing.
    let both = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        Some("mint-1"),
        Some(&with_field),
    )
    .await;
    both.assert_replays(&first);

    assert_eq!(key_count(&app, &admin).await, 2, "one key was minted");
    let minted = first.json()["api_key"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/account", &minted).await.status(), 200);
}

#[tokio::test]
async fn register_update_enable_disable_and_revoke_are_replayed() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;

    let registered = call(
        &app,
        Method::POST,
        "/v1/byok/register",
        &admin,
        Some("reg"),
        Some(&openai("prod")),
    )
    .await;
    assert_eq!(registered.status, 201, "{}", registered.text);
    assert!(registered.etag.is_some());
    let again = call(
        &app,
        Method::POST,
        "/v1/byok/register",
        &admin,
        Some("reg"),
        Some(&openai("prod")),
    )
    .await;
    again.assert_replays(&registered);
    let listed: Value = app.get("/v1/byok/list", &admin).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let id = registered.json()["byok_id"].as_str().unwrap().to_owned();

    // Update: the replay answers the first result and changes nothing more.
    let update = format!("/v1/byok/update/{id}");
    let patch = json!({"label": "Production", "weight": 200});
    let updated = call(
        &app,
        Method::PATCH,
        &update,
        &admin,
        Some("upd"),
        Some(&patch),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let again = call(
        &app,
        Method::PATCH,
        &update,
        &admin,
        Some("upd"),
        Some(&patch),
    )
    .await;
    again.assert_replays(&updated);
    let current = app.get(&format!("/v1/byok/get/{id}"), &admin).await;
    assert_eq!(header(&current, "etag"), updated.etag);

    // Disable with If-Match: the retry is answered the first result, not a stale-version conflict.
    let disable = format!("/v1/byok/disable/{id}");
    let disabled = read(
        app.request(Method::POST, &disable, Some(&admin))
            .header("Idempotency-Key", "dis")
            .header("If-Match", updated.etag.clone().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(disabled.status, 200, "{}", disabled.text);
    assert_eq!(disabled.json()["state"], "disabled");
    let again = read(
        app.request(Method::POST, &disable, Some(&admin))
            .header("Idempotency-Key", "dis")
            .header("If-Match", updated.etag.clone().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    again.assert_replays(&disabled);

    // Enable, with the key in a body on a route that takes none.
    let enable = format!("/v1/byok/enable/{id}");
    let key_body = json!({"idempotency_key": "ena"});
    let enabled = call(&app, Method::POST, &enable, &admin, None, Some(&key_body)).await;
    assert_eq!(enabled.status, 200, "{}", enabled.text);
    let again = call(&app, Method::POST, &enable, &admin, Some("ena"), None).await;
    again.assert_replays(&enabled);

    // Revoke.
    let revoke = format!("/v1/byok/revoke/{id}");
    let revoked = call(&app, Method::DELETE, &revoke, &admin, Some("rev"), None).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert_eq!(revoked.json()["state"], "revoked");
    let again = call(&app, Method::DELETE, &revoke, &admin, Some("rev"), None).await;
    again.assert_replays(&revoked);

    // Revoking an API key.
    let minted = app.mint_key(&admin, &["read"]).await;
    let path = format!("/v1/account/keys/{}", minted["id"].as_str().unwrap());
    let revoked = call(&app, Method::DELETE, &path, &admin, Some("rev-key"), None).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    assert!(revoked.json()["revoked_at"].is_string());
    let again = call(&app, Method::DELETE, &path, &admin, Some("rev-key"), None).await;
    again.assert_replays(&revoked);
}

#[tokio::test]
async fn the_same_key_on_another_request_is_an_idempotency_error() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let first = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        Some("k1"),
        Some(&mint_body("one")),
    )
    .await;
    assert_eq!(first.status, 201);

    let other_body = send(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        Some("k1"),
        Some(&mint_body("two")),
    )
    .await;
    assert_error(
        other_body,
        422,
        "idempotency_error",
        "idempotency_key_reused",
    )
    .await;
    let other_route = send(
        &app,
        Method::POST,
        "/v1/byok/register",
        &admin,
        Some("k1"),
        Some(&openai("prod")),
    )
    .await;
    assert_error(
        other_route,
        422,
        "idempotency_error",
        "idempotency_key_reused",
    )
    .await;

    // The record is untouched: the first request still replays, and nothing else was created.
    let again = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        Some("k1"),
        Some(&mint_body("one")),
    )
    .await;
    again.assert_replays(&first);
    assert_eq!(key_count(&app, &admin).await, 2);
    let listed: Value = app.get("/v1/byok/list", &admin).await.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_keys_are_refused_naming_where_they_came_from() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let path = "/v1/account/keys";
    let body = mint_body("ci");

    let empty = send(&app, Method::POST, path, &admin, Some(""), Some(&body)).await;
    let error = assert_error(empty, 422, "invalid_request_error", "invalid_parameter").await;
    assert_eq!(error["param"], "Idempotency-Key");

    let long = "k".repeat(256);
    let too_long = send(&app, Method::POST, path, &admin, Some(&long), Some(&body)).await;
    let error = assert_error(too_long, 422, "invalid_request_error", "invalid_parameter").await;
    assert_eq!(error["param"], "Idempotency-Key");
    assert!(!error["message"].as_str().unwrap().contains(&long));

    let long_field = json!({"name": "ci", "scopes": ["read"], "idempotency_key": "é".repeat(256)});
    let too_long = send(&app, Method::POST, path, &admin, None, Some(&long_field)).await;
    let error = assert_error(too_long, 422, "invalid_request_error", "invalid_parameter").await;
    assert_eq!(error["param"], "idempotency_key");

    let wrong_type = json!({"name": "ci", "scopes": ["read"], "idempotency_key": 7});
    let wrong = send(&app, Method::POST, path, &admin, None, Some(&wrong_type)).await;
    let error = assert_error(wrong, 422, "invalid_request_error", "invalid_body").await;
    assert_eq!(error["param"], "idempotency_key");

    let with_field = json!({"name": "ci", "scopes": ["read"], "idempotency_key": "a"});
    let differ = send(
        &app,
        Method::POST,
        path,
        &admin,
        Some("b"),
        Some(&with_field),
    )
    .await;
    let error = assert_error(differ, 422, "invalid_request_error", "invalid_parameter").await;
    assert_eq!(error["param"], "idempotency_key");

    // Nothing above was executed; 255 characters (not bytes) is fine.
    assert_eq!(key_count(&app, &admin).await, 1);
    let longest = json!({"name": "ci", "scopes": ["read"], "idempotency_key": "é".repeat(255)});
    let ok = call(&app, Method::POST, path, &admin, None, Some(&longest)).await;
    assert_eq!(ok.status, 201, "{}", ok.text);
    let ok = call(
        &app,
        Method::POST,
        path,
        &admin,
        Some(&"k".repeat(255)),
        Some(&body),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", ok.text);

    // A route without a body takes only the key in one.
    let revoke = format!("/v1/account/keys/{}", ok.json()["id"].as_str().unwrap());
    let extra = json!({"idempotency_key": "r", "force": true});
    let refused = send(&app, Method::DELETE, &revoke, &admin, None, Some(&extra)).await;
    assert_error(refused, 422, "invalid_request_error", "invalid_body").await;
    let listed: Value = app
        .get("/v1/account/keys", &admin)
        .await
        .json()
        .await
        .unwrap();
    let items = listed["items"].as_array().unwrap();
    assert!(
        items.iter().all(|k| k["revoked_at"].is_null()),
        "nothing was revoked"
    );
}

#[tokio::test]
async fn a_rejected_request_does_not_use_up_its_key() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let path = "/v1/account/keys";

    // Invalid value (the service rejects it), then the corrected request with the same key.
    let invalid = send(
        &app,
        Method::POST,
        path,
        &admin,
        Some("fix-me"),
        Some(&json!({"name": "ci", "scopes": []})),
    )
    .await;
    assert_error(invalid, 422, "invalid_request_error", "invalid_parameter").await;
    // Invalid shape (the extractor rejects it).
    let unknown = send(
        &app,
        Method::POST,
        path,
        &admin,
        Some("fix-me"),
        Some(&json!({"name": "ci", "scopes": ["read"], "colour": "red"})),
    )
    .await;
    assert_error(unknown, 422, "invalid_request_error", "invalid_body").await;
    let fixed = call(
        &app,
        Method::POST,
        path,
        &admin,
        Some("fix-me"),
        Some(&mint_body("ci")),
    )
    .await;
    assert_eq!(fixed.status, 201, "{}", fixed.text);
    let again = call(
        &app,
        Method::POST,
        path,
        &admin,
        Some("fix-me"),
        Some(&mint_body("ci")),
    )
    .await;
    again.assert_replays(&fixed);

    // A conflict is not recorded either: the same key may then create another account.
    let taken = send(
        &app,
        Method::POST,
        "/v1/accounts",
        ADMIN_TOKEN,
        Some("signup-1"),
        Some(&json!({"email": "ada@example.com"})),
    )
    .await;
    assert_error(taken, 409, "conflict_error", "email_taken").await;
    let created = call(
        &app,
        Method::POST,
        "/v1/accounts",
        ADMIN_TOKEN,
        Some("signup-1"),
        Some(&json!({"email": "grace@example.com"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.replayed, None);
}

#[tokio::test]
async fn keys_are_scoped_to_the_account() {
    let app = spawn_app().await;
    let ada = app.account_token("ada@example.com").await;
    let grace = app.account_token("grace@example.com").await;
    let mut tokens = Vec::new();
    for token in [&ada, &grace] {
        let minted = call(
            &app,
            Method::POST,
            "/v1/account/keys",
            token,
            Some("shared-key"),
            Some(&mint_body("ci")),
        )
        .await;
        assert_eq!(minted.status, 201, "{}", minted.text);
        assert_eq!(
            minted.replayed, None,
            "each account executes its own request"
        );
        tokens.push(minted.json()["api_key"].as_str().unwrap().to_owned());
    }
    assert_ne!(tokens[0], tokens[1]);
    assert_eq!(key_count(&app, &ada).await, 2);
    assert_eq!(key_count(&app, &grace).await, 2);
    // Each account replays its own.
    let again = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &grace,
        Some("shared-key"),
        Some(&mint_body("ci")),
    )
    .await;
    assert!(again.is_replay());
    assert_eq!(again.json()["api_key"], tokens[1].as_str());

    // The operator's account creations are a scope of their own too.
    let created = call(
        &app,
        Method::POST,
        "/v1/accounts",
        ADMIN_TOKEN,
        Some("shared-key"),
        Some(&json!({"email": "linus@example.com"})),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.replayed, None);
}

#[tokio::test]
async fn open_sign_up_replays_account_creation() {
    let app = spawn_app_with(|s| s.open_signup = true).await;
    let body = json!({"email": "ada@example.com"});
    let send_signup = || {
        app.request(Method::POST, "/v1/accounts", None)
            .header("Idempotency-Key", "signup-ada")
            .json(&body)
            .send()
    };
    let first = read(send_signup().await.unwrap()).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = read(send_signup().await.unwrap()).await;
    again.assert_replays(&first);
}

/// Fires `n` copies of one request at once; answers every response.
async fn race(
    app: &TestApp,
    path: &str,
    token: &str,
    key: &str,
    body: &Value,
    n: usize,
) -> Vec<Answer> {
    let requests = (0..n).map(|_| {
        let request = app
            .request(Method::POST, path, Some(token))
            .header("Idempotency-Key", key)
            .json(body);
        async move { read(request.send().await.expect("request")).await }
    });
    futures_util::future::join_all(requests).await
}

/// Checks a race's answers: exactly one executed, every other one is a replay of it or a 409.
/// Answers how many were 409s.
fn one_executed(answers: &[Answer]) -> usize {
    let executed: Vec<_> = answers
        .iter()
        .filter(|a| a.status.is_success() && !a.is_replay())
        .collect();
    assert_eq!(executed.len(), 1, "exactly one request executes");
    let mut conflicts = 0;
    for answer in answers {
        if answer.status == 409 {
            let body = answer.json();
            assert_eq!(body["error"]["type"], "conflict_error");
            assert_eq!(body["error"]["code"], "idempotency_in_progress");
            conflicts += 1;
        } else if answer.is_replay() {
            assert_eq!(answer.status, executed[0].status);
            assert_eq!(answer.text, executed[0].text);
        } else {
            assert!(
                std::ptr::eq(answer, executed[0]),
                "unexpected {}",
                answer.text
            );
        }
    }
    conflicts
}

#[tokio::test]
async fn concurrent_requests_with_one_key_execute_once() {
    let app = spawn_app_with(|s| s.workers = Some(4)).await;
    let admin = app.account_token("ada@example.com").await;
    let mut conflicts = 0;
    let mut rounds = 0;
    // Each round races 16 copies of one request; a round whose first request finished before
    // the others arrived shows only replays, so rounds repeat until a 409 has been seen.
    while rounds < 3 || (conflicts == 0 && rounds < 20) {
        rounds += 1;
        let key = format!("race-{rounds}");
        let answers = race(
            &app,
            "/v1/account/keys",
            &admin,
            &key,
            &mint_body("racer"),
            16,
        )
        .await;
        conflicts += one_executed(&answers);

        let email = json!({"email": format!("racer{rounds}@example.com")});
        let answers = race(&app, "/v1/accounts", ADMIN_TOKEN, &key, &email, 16).await;
        conflicts += one_executed(&answers);
    }
    assert!(conflicts > 0, "no request ever met another one in flight");
    assert_eq!(
        key_count(&app, &admin).await,
        1 + rounds,
        "one key minted per round"
    );
}

#[tokio::test]
async fn a_replay_survives_a_restart() {
    let app = spawn_app().await;
    let body = json!({"email": "ada@example.com"});
    let first = call(
        &app,
        Method::POST,
        "/v1/accounts",
        ADMIN_TOKEN,
        Some("before-restart"),
        Some(&body),
    )
    .await;
    assert_eq!(first.status, 201);
    let admin = first.json()["api_key"].as_str().unwrap().to_owned();
    let minted = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        Some("mint-before-restart"),
        Some(&mint_body("ci")),
    )
    .await;
    assert_eq!(minted.status, 201);

    let app = app.restart().await;
    let again = call(
        &app,
        Method::POST,
        "/v1/accounts",
        ADMIN_TOKEN,
        Some("before-restart"),
        Some(&body),
    )
    .await;
    again.assert_replays(&first);
    let again = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        Some("mint-before-restart"),
        Some(&mint_body("ci")),
    )
    .await;
    again.assert_replays(&minted);
    assert_eq!(key_count(&app, &admin).await, 2);
    // Records are neither log nor projection: the store still verifies.
    let report = app.store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.mismatches);
}

#[tokio::test]
async fn recorded_responses_keep_no_token_in_plaintext_on_disk() {
    let app = spawn_app().await;
    let created = call(
        &app,
        Method::POST,
        "/v1/accounts",
        ADMIN_TOKEN,
        Some("sealed-1"),
        Some(&json!({"email": "canary-ada@example.com"})),
    )
    .await;
    assert_eq!(created.status, 201);
    let admin = created.json()["api_key"].as_str().unwrap().to_owned();
    let minted = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        Some("sealed-2"),
        Some(&mint_body("canary key")),
    )
    .await;
    assert_eq!(minted.status, 201);
    let token = minted.json()["api_key"].as_str().unwrap().to_owned();

    let (settings, dir) = app.stop_and_release().await;
    // The scan sees what is stored in the clear (events carry the email)...
    assert!(
        !files_containing(&settings.data_dir, b"canary-ada@example.com").is_empty(),
        "the scan finds plaintext data"
    );
    // ...and neither token, though both responses are recorded.
    for secret in [&admin, &token] {
        let found = files_containing(&settings.data_dir, secret.as_bytes());
        assert!(found.is_empty(), "a token is on disk in {found:?}");
    }

    // The records are there: after a restart both replay.
    let app = crate::helpers::start(settings, dir).await;
    let again = call(
        &app,
        Method::POST,
        "/v1/account/keys",
        &admin,
        Some("sealed-2"),
        Some(&mint_body("canary key")),
    )
    .await;
    again.assert_replays(&minted);
}
