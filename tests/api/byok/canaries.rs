//! Canary secrets that must never surface: not in a response, an event, a file of the data dir
//! or a line of the server's log (the real binary at debug level); nor is an unknown field name
//! echoed.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use keyledger::crypto::MasterKey;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Response};
use serde_json::{Value, json};

use super::{KEY, azure, bedrock, call, open_secrets, random_hex, self_hosted, update};
use crate::helpers::{
    ADMIN_TOKEN, Binary, api_key, assert_json, files, openai, register_id, register_response,
    serve_command, spawn_app, whole_log,
};

/// Canary secrets and every form in which one could leak: as is, without its `sk-` prefix, in
/// hex, and in base64 (standard and URL-safe, at each of the three byte alignments).
struct Canaries {
    by_head: HashMap<[u8; 4], Vec<(usize, Vec<u8>)>>,
    all: Vec<String>,
}

impl Canaries {
    fn new() -> Self {
        Self {
            by_head: HashMap::new(),
            all: Vec::new(),
        }
    }

    fn mint(&mut self, n: usize) -> String {
        let canary = format!("sk-canary-{n}-{}", random_hex::<12>());
        self.add(&canary);
        canary
    }

    fn add(&mut self, canary: &str) {
        let index = self.all.len();
        self.all.push(canary.to_owned());
        let bytes = canary.as_bytes();
        let mut forms = vec![
            bytes.to_vec(),
            canary.trim_start_matches("sk-").as_bytes().to_vec(),
            hex::encode(bytes).into_bytes(),
        ];
        for skip in 0..3 {
            let part = &bytes[skip..];
            let whole = &part[..part.len() / 3 * 3];
            forms.push(STANDARD_NO_PAD.encode(whole).into_bytes());
            forms.push(URL_SAFE_NO_PAD.encode(whole).into_bytes());
        }
        for form in forms {
            let head: [u8; 4] = form[..4].try_into().unwrap();
            self.by_head.entry(head).or_default().push((index, form));
        }
    }

    /// The first canary found in `haystack`, with the form it was found in.
    fn find(&self, haystack: &[u8]) -> Option<(String, String)> {
        for i in 0..haystack.len().saturating_sub(3) {
            let head: [u8; 4] = haystack[i..i + 4].try_into().unwrap();
            if let Some(forms) = self.by_head.get(&head) {
                for (index, form) in forms {
                    if haystack[i..].starts_with(form) {
                        return Some((
                            self.all[*index].clone(),
                            String::from_utf8_lossy(form).into_owned(),
                        ));
                    }
                }
            }
        }
        None
    }

    fn assert_absent(&self, what: &str, haystack: &[u8]) {
        if let Some((canary, form)) = self.find(haystack) {
            panic!("canary {canary} found in {what} (as {form})");
        }
    }
}

/// Sends a request and keeps its status and body text.
async fn record(
    bodies: &mut Vec<(String, String)>,
    response: Response,
    what: String,
) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::Null);
    bodies.push((what, text));
    (status, value)
}

fn service_account(private_key_id: &str, private_key: &str) -> String {
    json!({"type": "service_account", "project_id": "p",
        "private_key_id": private_key_id,
        "private_key":
            format!("-----BEGIN PRIVATE KEY-----\n{private_key}\n-----END PRIVATE KEY-----\n"),
        "client_email": "kl@p.iam.gserviceaccount.com"})
    .to_string()
}

/// A register body for credential `n`, with fresh canaries in every secret field.
fn canary_credential(n: usize, canaries: &mut Canaries) -> Value {
    let alias = format!("c{n}");
    match n % 6 {
        0 => openai(&alias, &canaries.mint(n)),
        1 => json!({"provider": "anthropic", "alias": alias,
            "credentials": {"api_key": canaries.mint(n)}, "capability": "chat"}),
        2 => azure(&alias, &canaries.mint(n)),
        3 => {
            let mut body = bedrock(&alias, &canaries.mint(n), &canaries.mint(n));
            body["credentials"]["session_token"] = json!(canaries.mint(n));
            body
        }
        4 => {
            let mut body = self_hosted(&alias, "http://127.0.0.1:11434/v1");
            body["api_key"] = json!(canaries.mint(n));
            body
        }
        _ => json!({"provider": "vertex", "alias": alias, "credentials": {
            "project_id": "my-project", "region": "europe-west4",
            "service_account_json": service_account(&canaries.mint(n), &canaries.mint(n))}}),
    }
}

#[tokio::test]
async fn canary_secrets_never_leave_the_seal() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let mut canaries = Canaries::new();
    let mut bodies: Vec<(String, String)> = Vec::new();
    let mut ids = Vec::new();
    for n in 0..100 {
        let body = canary_credential(n, &mut canaries);
        let response = register_response(&app, &ada.token, &body).await;
        let (status, key) = record(&mut bodies, response, format!("register {n}")).await;
        assert_eq!(status, 201, "{key}");
        ids.push(key["byok_id"].as_str().unwrap().to_owned());
    }
    // Refused attempts that carry canaries.
    let refused = [
        json!({"provider": "openai", "alias": "bad",
            "api_key": format!("{} tail", canaries.mint(900))}),
        json!({"provider": canaries.mint(901), "alias": "bad", "api_key": canaries.mint(902)}),
        json!({"provider": "openai", "alias": "bad",
            "credentials": {canaries.mint(903): canaries.mint(904)}}),
        json!({"provider": "openai", "alias": "bad", "api_key": canaries.mint(905),
            "weight": canaries.mint(906)}),
        json!({"provider": "openai", "alias": format!("{} !", canaries.mint(909)),
            "api_key": canaries.mint(910)}),
        json!({"provider": "openai", "alias": "bad", "api_key": canaries.mint(911),
            "base_url": format!("https://{}@api.example.com", canaries.mint(912))}),
    ];
    for body in &refused {
        let response = register_response(&app, &ada.token, body).await;
        let (status, _) = record(&mut bodies, response, format!("refused {body}")).await;
        assert!((400..500).contains(&status), "{status} for {body}");
    }
    // Updates, including refused attempts to slip a secret in.
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 4 == 0) {
        let sneaky = canaries.mint(1000 + i);
        let patches = [
            (
                "update",
                json!({"label": format!("updated {i}"), "weight": 10 + i}),
                200,
            ),
            (
                "sneaky update",
                json!({"credentials": {"api_key": &sneaky, "access_key": &sneaky}}),
                422,
            ),
        ];
        for (what, patch, expected) in patches {
            let response = update(&app, &ada.token, id, &patch).await;
            let (status, _) = record(&mut bodies, response, format!("{what} {i}")).await;
            assert_eq!(status, expected, "{what} {i}");
        }
    }
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let response = app
            .delete(&format!("/v1/byok/revoke/{id}"), &ada.token)
            .await;
        let (status, _) = record(&mut bodies, response, format!("revoke {i}")).await;
        assert_eq!(status, 200);
    }
    for id in &ids {
        let response = app.get(&format!("/v1/byok/get/{id}"), &ada.token).await;
        let (status, _) = record(&mut bodies, response, format!("get {id}")).await;
        assert_eq!(status, 200);
    }
    let mut cursor = String::new();
    let mut listed = 0;
    loop {
        let response = app
            .get(&format!("/v1/byok/list?limit=7{cursor}"), &ada.token)
            .await;
        let (status, page) = record(&mut bodies, response, "list".into()).await;
        assert_eq!(status, 200);
        listed += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(listed, 100);
    // The test itself would notice a canary: a live secret is still readable by the service.
    let live = &ids[1];
    let opened = open_secrets(&app, &ada.account_id, live).unwrap();
    assert!(
        canaries
            .find(serde_json::to_string(&opened).unwrap().as_bytes())
            .is_some(),
        "the canary scan does not see a canary"
    );

    for (what, text) in &bodies {
        canaries.assert_absent(&format!("the response to {what}"), text.as_bytes());
    }
    let log = whole_log(&app.store);
    let last = log.len();
    assert!(last >= 100 + 25 + 34, "only {last} events");
    for event in &log {
        let json = serde_json::to_string(event).unwrap();
        canaries.assert_absent(
            &format!("event {} ({})", event.position, event.event_type),
            json.as_bytes(),
        );
    }

    let (_, dir) = app.stop_and_release().await;
    let data = files(&dir.path().join("data"));
    assert!(!data.is_empty());
    let mut scanned = 0;
    for file in data {
        let bytes = std::fs::read(&file).unwrap();
        scanned += bytes.len();
        canaries.assert_absent(&format!("file {}", file.display()), &bytes);
    }
    assert!(scanned > 0);
}

#[tokio::test]
async fn an_unknown_field_name_is_never_echoed() {
    let app = spawn_app().await;
    let ada = app.tenant("ada@example.com").await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let mut canaries = Canaries::new();
    let mut register = openai("other", KEY);
    register[canaries.mint(1)] = json!(1);
    let update = json!({canaries.mint(2): "x"});
    for (method, path, body) in [
        (Method::POST, "/v1/byok/register".to_owned(), register),
        (Method::PATCH, format!("/v1/byok/update/{id}"), update),
    ] {
        let response = call(&app, method, &path, Some(&ada.token), None, Some(&body)).await;
        assert_eq!(response.status(), 422);
        let text = response.text().await.unwrap();
        canaries.assert_absent(&format!("the error of {path}"), text.as_bytes());
    }
}

/// The real binary at debug level, a client for it, and an account's API key.
struct Debugged {
    server: Binary,
    client: reqwest::Client,
    token: String,
}

impl Debugged {
    /// Starts the binary over `dir` and creates an account.
    async fn start(dir: &Path) -> Self {
        let master_key = MasterKey::generate().to_base64();
        let server = Binary::spawn(
            serve_command(&dir.join("data"), master_key.expose()).env("RUST_LOG", "debug"),
            dir,
        );
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut binary = Self {
            server,
            client,
            token: ADMIN_TOKEN.to_owned(),
        };
        let ada = json!({"email": "ada@example.com"});
        let created = binary.send(Method::POST, "/v1/accounts", Some(&ada)).await;
        binary.token = api_key(&assert_json(created, 201).await);
        binary
    }

    /// A request to the binary with `token`.
    fn request(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.server.address);
        self.client.request(method, url).bearer_auth(token)
    }

    /// Sends a request with the account's token and an optional JSON body.
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        let mut request = self.request(method, path, &self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    /// Gives the last log lines a moment, stops the binary and answers its stdout and stderr.
    /// Colour codes could split a value; the answer is the text a person would read.
    async fn stop(self) -> (Vec<u8>, Vec<u8>) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (stdout, stderr) = (self.server.stdout.clone(), self.server.stderr.clone());
        drop(self.server);
        let read = |path| strip_ansi(&std::fs::read(path).unwrap());
        (read(stdout), read(stderr))
    }
}

/// The bytes without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0x1b && bytes.get(i + 1) == Some(&b'[') {
            i += 2;
            while i < bytes.len() && !bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[tokio::test]
async fn canary_secrets_never_reach_the_server_log() {
    let dir = tempfile::tempdir().unwrap();
    let binary = Debugged::start(dir.path()).await;

    let mut canaries = Canaries::new();
    let mut bedrock_body = bedrock("bed", &canaries.mint(1), &canaries.mint(2));
    bedrock_body["credentials"]["session_token"] = json!(canaries.mint(3));
    let accepted = [
        openai("prod", &canaries.mint(0)),
        bedrock_body,
        azure("az", &canaries.mint(4)),
    ];
    let refused = [
        // a canary in a field of the wrong type
        json!({"provider": "openai", "alias": "a", "api_key": canaries.mint(10),
            "weight": canaries.mint(11)}),
        json!({"provider": "openai", "alias": "a", "api_key": canaries.mint(12),
            "models": canaries.mint(13)}),
        // a canary as an unknown field name
        json!({"provider": "openai", "alias": "a", "api_key": canaries.mint(14),
            canaries.mint(15): "x"}),
        json!({"provider": "openai", "alias": "a",
            "credentials": {canaries.mint(16): canaries.mint(17)}}),
        // a canary as the provider
        json!({"provider": canaries.mint(18), "alias": "a", "api_key": canaries.mint(19)}),
        // a canary that fails validation as a secret
        json!({"provider": "openai", "alias": "a", "api_key": format!("{} x", canaries.mint(20))}),
    ];
    let register = "/v1/byok/register";
    let mut ids = Vec::new();
    for body in &accepted {
        let response = binary.send(Method::POST, register, Some(body)).await;
        let key = assert_json(response, 201).await;
        ids.push(key["byok_id"].as_str().unwrap().to_owned());
    }
    for body in &refused {
        let response = binary.send(Method::POST, register, Some(body)).await;
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{status} for {body}");
    }
    // Malformed JSON around a canary, a canary sent as the bearer token, a refused update.
    let broken = format!(
        "{{\"provider\": \"openai\", \"api_key\": \"{}",
        canaries.mint(30)
    );
    let response = binary
        .request(Method::POST, register, &binary.token)
        .header(CONTENT_TYPE, "application/json")
        .body(broken)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let as_token = canaries.mint(31);
    let response = binary.request(Method::GET, "/v1/byok/list", &as_token);
    assert_eq!(response.send().await.unwrap().status(), 401);
    let sneaky = json!({"credentials": {"api_key": canaries.mint(32)}});
    let update = format!("/v1/byok/update/{}", ids[0]);
    let revoke = format!("/v1/byok/revoke/{}", ids[1]);
    for (method, path, body, status) in [
        (Method::PATCH, &update, Some(&sneaky), 422),
        (Method::DELETE, &revoke, None, 200),
    ] {
        let response = binary.send(method, path, body).await;
        assert_eq!(response.status(), status, "{path}");
    }

    let (stdout, stderr) = binary.stop().await;
    let text = String::from_utf8_lossy(&stderr);
    // The log did record the requests, at debug level: the scan looked at something.
    assert!(
        text.matches("request finished").count() >= 13,
        "the server log misses requests:\n{text}"
    );
    assert!(text.contains("DEBUG"), "RUST_LOG=debug was not in effect");
    canaries.assert_absent("the server's stdout", &stdout);
    canaries.assert_absent("the server's stderr", &stderr);
}

#[tokio::test]
async fn a_secret_pasted_as_an_id_never_reaches_the_server_log() {
    let dir = tempfile::tempdir().unwrap();
    let binary = Debugged::start(dir.path()).await;
    let mut canaries = Canaries::new();
    let path = format!("/v1/byok/get/{}", canaries.mint(0));
    let response = binary.send(Method::GET, &path, None).await;
    assert_eq!(response.status(), 404);
    let (_, stderr) = binary.stop().await;
    assert!(String::from_utf8_lossy(&stderr).contains("request finished"));
    canaries.assert_absent("the server's stderr", &stderr);
}
