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

/// A request as these tests send it, as often as a test needs: method, path, token, an optional
/// `Idempotency-Key` header (and `If-Match`), an optional JSON body.
struct Request {
    method: Method,
    path: String,
    token: Option<String>,
    key: Option<String>,
    if_match: Option<String>,
    body: Option<Value>,
}

fn request(method: Method, path: &str, token: &str) -> Request {
    Request {
        method,
        path: path.to_owned(),
        token: Some(token.to_owned()),
        key: None,
        if_match: None,
        body: None,
    }
}

fn post(path: &str, token: &str, body: &Value) -> Request {
    request(Method::POST, path, token).body(body)
}

impl Request {
    fn key(self, key: &str) -> Self {
        Self {
            key: Some(key.to_owned()),
            ..self
        }
    }

    fn body(self, body: &Value) -> Self {
        Self {
            body: Some(body.clone()),
            ..self
        }
    }

    fn if_match(self, tag: &str) -> Self {
        Self {
            if_match: Some(tag.to_owned()),
            ..self
        }
    }

    async fn send(&self, app: &TestApp) -> reqwest::Response {
        let headers: Vec<(&str, &str)> = [(HEADER, &self.key), ("If-Match", &self.if_match)]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_deref()?)))
            .collect();
        let (method, token) = (self.method.clone(), self.token.as_deref());
        helpers::send(app, method, &self.path, token, &headers, self.body.as_ref()).await
    }

    async fn call(&self, app: &TestApp) -> Answer {
        read(self.send(app).await).await
    }

    /// Sends the request once: it must execute (not replay) and answer `status`.
    async fn executed(&self, app: &TestApp, status: u16) -> Answer {
        let answer = self.call(app).await;
        assert_eq!(answer.status, status, "{}", answer.text);
        assert_eq!(
            answer.replayed, None,
            "a first request executes: {}",
            answer.text
        );
        answer
    }

    /// Sends the request twice: the first must execute and answer `status`, the second replay
    /// it. Answers (first, replay).
    async fn replayed(&self, app: &TestApp, status: u16) -> (Answer, Answer) {
        let first = self.executed(app, status).await;
        let again = self.call(app).await;
        again.assert_replays(&first);
        (first, again)
    }
}

/// The key routes' path, which most of these requests go to.
const KEYS: &str = "/v1/account/keys";
/// Where a key came from, as a refusal names it: the header, or the body field.
const HEADER: &str = "Idempotency-Key";
const FIELD: &str = "idempotency_key";

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
    let create = post("/v1/accounts", ADMIN_TOKEN, &body).key("create-ada");
    let (first, again) = create.replayed(&app, 201).await;
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
    let (first, _) = post(KEYS, &admin, &with_field).replayed(&app, 201).await;

    // The same request with the key in the header instead, fields in another order; and both,
    // agreeing.
    let reordered = json!({"scopes": ["read", "write"], "name": "ci"});
    for body in [&reordered, &with_field] {
        let again = post(KEYS, &admin, body).key("mint-1").call(&app).await;
        again.assert_replays(&first);
    }

    assert_eq!(app.key_count(&admin).await, 2, "one key was minted");
    let minted = first.json()["api_key"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/account", &minted).await.status(), 200);
}

#[tokio::test]
async fn register_update_enable_disable_and_revoke_are_replayed() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;

    let prod = openai("prod");
    let register = post("/v1/byok/register", &admin, &prod).key("reg");
    let (registered, _) = register.replayed(&app, 201).await;
    assert!(registered.etag.is_some());
    let listed = app.get_json("/v1/byok/list", &admin).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let id = registered.json()["byok_id"].as_str().unwrap().to_owned();

    // Update: the replay answers the first result and changes nothing more.
    let update = format!("/v1/byok/update/{id}");
    let patch = json!({"label": "Production", "weight": 200});
    let update = request(Method::PATCH, &update, &admin).body(&patch);
    let (updated, _) = update.key("upd").replayed(&app, 200).await;
    let current = app.get(&format!("/v1/byok/get/{id}"), &admin).await;
    assert_eq!(header(&current, "etag"), updated.etag);

    // Disable with If-Match: the retry is answered the first result, not a stale-version conflict.
    let disable = format!("/v1/byok/disable/{id}");
    let tag = updated.etag.clone().unwrap();
    let disable = request(Method::POST, &disable, &admin).if_match(&tag);
    let (disabled, _) = disable.key("dis").replayed(&app, 200).await;
    assert_eq!(disabled.json()["state"], "disabled");

    // Enable, with the key in a body on a route that takes none.
    let enable = format!("/v1/byok/enable/{id}");
    let key_body = json!({"idempotency_key": "ena"});
    let enabled = post(&enable, &admin, &key_body).executed(&app, 200).await;
    let again = request(Method::POST, &enable, &admin).key("ena");
    again.call(&app).await.assert_replays(&enabled);

    // Revoke.
    let revoke = format!("/v1/byok/revoke/{id}");
    let revoke = request(Method::DELETE, &revoke, &admin).key("rev");
    let (revoked, _) = revoke.replayed(&app, 200).await;
    assert_eq!(revoked.json()["state"], "revoked");

    // Revoking an API key.
    let minted = app.mint_key(&admin, &["read"]).await;
    let path = format!("/v1/account/keys/{}", minted["id"].as_str().unwrap());
    let revoke = request(Method::DELETE, &path, &admin).key("rev-key");
    let (revoked, _) = revoke.replayed(&app, 200).await;
    assert!(revoked.json()["revoked_at"].is_string());
}

#[tokio::test]
async fn the_same_key_on_another_request_is_an_idempotency_error() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let one = mint_body("one");
    let first = post(KEYS, &admin, &one).key("k1").executed(&app, 201).await;

    // Another body, or another route.
    let (two, prod) = (mint_body("two"), openai("prod"));
    for other in [
        post(KEYS, &admin, &two),
        post("/v1/byok/register", &admin, &prod),
    ] {
        let response = other.key("k1").send(&app).await;
        assert_error(response, 422, "idempotency_error", "idempotency_key_reused").await;
    }

    // The record is untouched: the first request still replays, and nothing else was created.
    let again = post(KEYS, &admin, &one).key("k1").call(&app).await;
    again.assert_replays(&first);
    assert_eq!(app.key_count(&admin).await, 2);
    let listed = app.get_json("/v1/byok/list", &admin).await;
    assert!(listed["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_keys_are_refused_naming_where_they_came_from() {
    let app = spawn_app().await;
    let admin = app.account_token("ada@example.com").await;
    let body = mint_body("ci");
    let with_key = |key: Value| json!({"name": "ci", "scopes": ["read"], "idempotency_key": key});

    let long = "k".repeat(256);
    let (too_long, wrong_type) = (with_key(json!("é".repeat(256))), with_key(json!(7)));
    let with_field = with_key(json!("a"));
    // (header, body, code, param)
    let cases = [
        (Some(""), &body, "invalid_parameter", HEADER),
        (Some(long.as_str()), &body, "invalid_parameter", HEADER),
        (None, &too_long, "invalid_parameter", FIELD),
        (None, &wrong_type, "invalid_body", FIELD),
        // Both, and they differ.
        (Some("b"), &with_field, "invalid_parameter", FIELD),
    ];
    for (key, body, code, param) in cases {
        let request = Request {
            key: key.map(str::to_owned),
            ..post(KEYS, &admin, body)
        };
        let response = request.send(&app).await;
        let error = assert_error(response, 422, "invalid_request_error", code).await;
        assert_eq!(error["param"], param, "{key:?} {body}");
        assert!(!error["message"].as_str().unwrap().contains(&long));
    }

    // Nothing above was executed; 255 characters (not bytes) is fine.
    assert_eq!(app.key_count(&admin).await, 1);
    let longest = with_key(json!("é".repeat(255)));
    post(KEYS, &admin, &longest).executed(&app, 201).await;
    let longest = "k".repeat(255);
    let ok = post(KEYS, &admin, &body)
        .key(&longest)
        .executed(&app, 201)
        .await;

    // A route without a body takes only the key in one.
    let revoke = format!("/v1/account/keys/{}", ok.json()["id"].as_str().unwrap());
    let extra = json!({"idempotency_key": "r", "force": true});
    let refused = request(Method::DELETE, &revoke, &admin).body(&extra);
    let refused = refused.send(&app).await;
    assert_error(refused, 422, "invalid_request_error", "invalid_body").await;
    let listed = app.get_json(KEYS, &admin).await;
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

    // Invalid value (the service rejects it), then invalid shape (the extractor rejects it),
    // then the corrected request with the same key.
    let invalid = json!({"name": "ci", "scopes": []});
    let unknown = json!({"name": "ci", "scopes": ["read"], "colour": "red"});
    for (body, code) in [(&invalid, "invalid_parameter"), (&unknown, "invalid_body")] {
        let response = post(KEYS, &admin, body).key("fix-me").send(&app).await;
        assert_error(response, 422, "invalid_request_error", code).await;
    }
    let fixed = mint_body("ci");
    post(KEYS, &admin, &fixed)
        .key("fix-me")
        .replayed(&app, 201)
        .await;

    // A conflict is not recorded either: the same key may then create another account.
    let taken = json!({"email": "ada@example.com"});
    let taken = post("/v1/accounts", ADMIN_TOKEN, &taken).key("signup-1");
    let taken = taken.send(&app).await;
    assert_error(taken, 409, "conflict_error", "email_taken").await;
    let grace = json!({"email": "grace@example.com"});
    let create = post("/v1/accounts", ADMIN_TOKEN, &grace).key("signup-1");
    create.executed(&app, 201).await;
}

#[tokio::test]
async fn keys_are_scoped_to_the_account() {
    let app = spawn_app().await;
    let ada = app.account_token("ada@example.com").await;
    let grace = app.account_token("grace@example.com").await;
    let ci = mint_body("ci");
    let mut tokens = Vec::new();
    for token in [&ada, &grace] {
        // Each account executes its own request.
        let minted = post(KEYS, token, &ci)
            .key("shared-key")
            .executed(&app, 201)
            .await;
        tokens.push(minted.json()["api_key"].as_str().unwrap().to_owned());
    }
    assert_ne!(tokens[0], tokens[1]);
    assert_eq!(app.key_count(&ada).await, 2);
    assert_eq!(app.key_count(&grace).await, 2);
    // Each account replays its own.
    let again = post(KEYS, &grace, &ci).key("shared-key").call(&app).await;
    assert!(again.is_replay());
    assert_eq!(again.json()["api_key"], tokens[1].as_str());

    // The operator's account creations are a scope of their own too.
    let linus = json!({"email": "linus@example.com"});
    let create = post("/v1/accounts", ADMIN_TOKEN, &linus).key("shared-key");
    create.executed(&app, 201).await;
}

#[tokio::test]
async fn open_sign_up_replays_account_creation() {
    let app = spawn_app_with(|s| s.open_signup = true).await;
    let body = json!({"email": "ada@example.com"});
    let signup = Request {
        token: None,
        ..post("/v1/accounts", ADMIN_TOKEN, &body).key("signup-ada")
    };
    signup.replayed(&app, 201).await;
}

/// Fires `n` copies of one request at once; answers every response.
async fn race(app: &TestApp, request: &Request, n: usize) -> Vec<Answer> {
    futures_util::future::join_all((0..n).map(|_| request.call(app))).await
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
    let racer = mint_body("racer");
    let mut conflicts = 0;
    let mut rounds = 0;
    // Each round races 16 copies of one request; a round whose first request finished before
    // the others arrived shows only replays, so rounds repeat until a 409 has been seen.
    while rounds < 3 || (conflicts == 0 && rounds < 20) {
        rounds += 1;
        let key = format!("race-{rounds}");
        let email = json!({"email": format!("racer{rounds}@example.com")});
        for request in [
            post(KEYS, &admin, &racer),
            post("/v1/accounts", ADMIN_TOKEN, &email),
        ] {
            conflicts += one_executed(&race(&app, &request.key(&key), 16).await);
        }
    }
    assert!(conflicts > 0, "no request ever met another one in flight");
    assert_eq!(
        app.key_count(&admin).await,
        1 + rounds,
        "one key minted per round"
    );
}

/// Creates an account for `email` under the idempotency key `keys[0]`, then mints a key on it
/// under `keys[1]`; both must execute and answer 201. Answers each request with its answer.
async fn create_and_mint(app: &TestApp, email: &str, keys: [&str; 2]) -> [(Request, Answer); 2] {
    let create = post("/v1/accounts", ADMIN_TOKEN, &json!({"email": email})).key(keys[0]);
    let created = create.executed(app, 201).await;
    let admin = created.json()["api_key"].as_str().unwrap().to_owned();
    let mint = post(KEYS, &admin, &mint_body("ci")).key(keys[1]);
    let minted = mint.executed(app, 201).await;
    [(create, created), (mint, minted)]
}

#[tokio::test]
async fn a_replay_survives_a_restart() {
    let app = spawn_app().await;
    let keys = ["before-restart", "mint-before-restart"];
    let [(create, first), (mint, minted)] = create_and_mint(&app, "ada@example.com", keys).await;
    let admin = first.json()["api_key"].as_str().unwrap().to_owned();

    let app = app.restart().await;
    create.call(&app).await.assert_replays(&first);
    mint.call(&app).await.assert_replays(&minted);
    assert_eq!(app.key_count(&admin).await, 2);
    // Records are neither log nor projection: the store still verifies.
    let report = app.store.verify().unwrap();
    assert!(report.is_sound(), "{:?}", report.mismatches);
}

#[tokio::test]
async fn recorded_responses_keep_no_token_in_plaintext_on_disk() {
    let app = spawn_app().await;
    let email = "canary-ada@example.com";
    let [(_, created), (mint, minted)] =
        create_and_mint(&app, email, ["sealed-1", "sealed-2"]).await;
    let admin = created.json()["api_key"].as_str().unwrap().to_owned();
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
    mint.call(&app).await.assert_replays(&minted);
}
