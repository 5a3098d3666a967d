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

use super::{KEY, azure, bedrock, call, open_secrets, random_hex, self_hosted};
use crate::helpers::{
    ADMIN_TOKEN, Binary, api_key, files, openai, register_id, register_response, serve_command,
    spawn_app, whole_log,
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
        let response = call(
            &app,
            Method::PATCH,
            &format!("/v1/byok/update/{id}"),
            Some(&ada.token),
            None,
            Some(&json!({"label": format!("updated {i}"), "weight": 10 + i})),
        )
        .await;
        let (status, _) = record(&mut bodies, response, format!("update {i}")).await;
        assert_eq!(status, 200);
        let sneaky = canaries.mint(1000 + i);
        let response = call(
            &app,
            Method::PATCH,
            &format!("/v1/byok/update/{id}"),
            Some(&ada.token),
            None,
            Some(&json!({"credentials": {"api_key": &sneaky, "access_key": &sneaky}})),
        )
        .await;
        let (status, _) = record(&mut bodies, response, format!("sneaky update {i}")).await;
        assert_eq!(status, 422);
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

/// Starts the real binary at debug level and creates an account; answers the server, its
/// address, a client and the account's API key.
async fn start_with_account(dir: &Path) -> (Binary, String, reqwest::Client, String) {
    let master_key = MasterKey::generate().to_base64();
    let server = Binary::spawn(
        serve_command(&dir.join("data"), master_key.expose()).env("RUST_LOG", "debug"),
        dir,
    );
    let address = server.address.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let created: Value = client
        .post(format!("{address}/v1/accounts"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = api_key(&created);
    (server, address, client, token)
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
    let (server, address, client, token) = start_with_account(dir.path()).await;

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
    let mut ids = Vec::new();
    for body in &accepted {
        let response = client
            .post(format!("{address}/v1/byok/register"))
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let key: Value = response.json().await.unwrap();
        ids.push(key["byok_id"].as_str().unwrap().to_owned());
    }
    for body in &refused {
        let response = client
            .post(format!("{address}/v1/byok/register"))
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!((400..500).contains(&status), "{status} for {body}");
    }
    // Malformed JSON around a canary, a canary sent as the bearer token, a refused update.
    let broken = format!(
        "{{\"provider\": \"openai\", \"api_key\": \"{}",
        canaries.mint(30)
    );
    let response = client
        .post(format!("{address}/v1/byok/register"))
        .bearer_auth(&token)
        .header(CONTENT_TYPE, "application/json")
        .body(broken)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = client
        .get(format!("{address}/v1/byok/list"))
        .bearer_auth(canaries.mint(31))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = client
        .patch(format!("{address}/v1/byok/update/{}", ids[0]))
        .bearer_auth(&token)
        .json(&json!({"credentials": {"api_key": canaries.mint(32)}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let response = client
        .delete(format!("{address}/v1/byok/revoke/{}", ids[1]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Give the last log lines a moment, then stop the server.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stdout_path = server.stdout.clone();
    let stderr_path = server.stderr.clone();
    drop(server);
    // Colour codes could split a value; the scan reads the text a person would.
    let stdout = strip_ansi(&std::fs::read(&stdout_path).unwrap());
    let stderr = strip_ansi(&std::fs::read(&stderr_path).unwrap());
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
    let (server, address, client, token) = start_with_account(dir.path()).await;
    let mut canaries = Canaries::new();
    let response = client
        .get(format!("{address}/v1/byok/get/{}", canaries.mint(0)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stderr_path = server.stderr.clone();
    drop(server);
    let stderr = strip_ansi(&std::fs::read(&stderr_path).unwrap());
    assert!(String::from_utf8_lossy(&stderr).contains("request finished"));
    canaries.assert_absent("the server's stderr", &stderr);
}
