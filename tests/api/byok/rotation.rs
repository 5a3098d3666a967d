//! Secret rotation on a real server (docs/rotation.md): rotate in place, stage (probed against a
//! fake provider) and commit, rollback, expiry by the sweep, `If-Match` on every operation,
//! scopes, other accounts, revoked credentials; a race of concurrent commits; resolve across a
//! commit; old versions shredded from the data dir; a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keyledger::es::StreamId;
use reqwest::Method;
use serde_json::{Value, json};

use super::{KEY, call, get_config, random_hex};
use crate::helpers::fake_provider::FakeProvider;
use crate::helpers::{
    Tenant, TestApp, assert_error, etag, files, openai, register_id, revoke, spawn_app_with,
};

/// A fake OpenAI that accepts every bearer token but those containing `bad` (401).
async fn fake_openai() -> FakeProvider {
    FakeProvider::start(|seen| {
        let bad = seen
            .header("authorization")
            .is_some_and(|a| a.contains("bad"));
        crate::helpers::fake_provider::Reply::status(if bad { 401 } else { 200 })
    })
    .await
}

/// A server whose OpenAI probes go to `fake`, with these rotation times; Ada's account.
async fn app(
    fake: &FakeProvider,
    stage_ttl: Duration,
    rollback_window: Duration,
    sweep_interval: Duration,
) -> (TestApp, Tenant) {
    let url = format!("{}/v1", fake.url);
    let app = spawn_app_with(move |s| {
        s.outbound.allow_private_urls = true;
        s.outbound.base_urls.insert("openai".into(), url);
        s.rotation.stage_ttl = stage_ttl;
        s.rotation.rollback_window = rollback_window;
        s.rotation.sweep_interval = sweep_interval;
    })
    .await;
    let ada = app.tenant("ada@example.com").await;
    (app, ada)
}

const HOUR: Duration = Duration::from_secs(3600);

async fn default_app(fake: &FakeProvider) -> (TestApp, Tenant) {
    app(fake, HOUR, HOUR, HOUR).await
}

async fn post(
    app: &TestApp,
    token: &str,
    path: &str,
    if_match: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    call(app, Method::POST, path, Some(token), if_match, Some(body)).await
}

async fn ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn rotate(app: &TestApp, token: &str, id: &str, key: &str) -> reqwest::Response {
    let path = format!("/v1/byok/rotate/{id}");
    post(app, token, &path, None, &json!({"api_key": key})).await
}

async fn stage(app: &TestApp, token: &str, id: &str, key: &str) -> reqwest::Response {
    let path = format!("/v1/byok/rotate/stage/{id}");
    post(
        app,
        token,
        &path,
        None,
        &json!({"credentials": {"api_key": key}}),
    )
    .await
}

async fn commit(
    app: &TestApp,
    token: &str,
    id: &str,
    stage_id: &str,
    force: bool,
) -> reqwest::Response {
    let path = format!("/v1/byok/rotate/commit/{id}");
    post(
        app,
        token,
        &path,
        None,
        &json!({"stage_id": stage_id, "force": force}),
    )
    .await
}

async fn rollback(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    let path = format!("/v1/byok/rotate/rollback/{id}");
    call(app, Method::POST, &path, Some(token), None, None).await
}

async fn resolve_key(app: &TestApp, token: &str, id: &str) -> (String, u64) {
    let body = json!({"byok_id": id, "capability": "chat"});
    let answer = ok(app.post("/v1/byok/resolve", Some(token), &body).await).await;
    (
        answer["credentials"]["api_key"]
            .as_str()
            .unwrap()
            .to_owned(),
        answer["version"].as_u64().unwrap(),
    )
}

fn event_types(app: &TestApp, id: &str) -> Vec<String> {
    let stream = StreamId::new("byok", id);
    let events = app.store.stream_events(&stream).unwrap();
    events.into_iter().map(|e| e.event_type).collect()
}

fn fresh_key(tag: &str) -> String {
    format!("sk-{tag}-{}", random_hex::<12>())
}

#[tokio::test]
async fn rotate_in_place_serves_the_new_secret_and_keeps_everything_else() {
    let fake = fake_openai().await;
    let (app, ada) = default_app(&fake).await;
    let resolver = app.mint_token(&ada.token, &["resolve"]).await;
    let mut body = openai("prod", KEY);
    body["capability"] = json!("chat");
    let id = register_id(&app, &ada.token, &body).await;
    let (before, tag) = get_config(&app, &ada.token, &id).await;
    let new = fresh_key("rot");
    let path = format!("/v1/byok/rotate/{id}");
    let response = post(
        &app,
        &ada.token,
        &path,
        Some(&tag),
        &json!({"api_key": new}),
    )
    .await;
    let tag2 = etag(&response);
    let after = ok(response).await;
    assert_eq!(after["byok_id"], id);
    assert_eq!(after["secret_version"], 2);
    assert_eq!(after["secret_hint"], new[new.len() - 4..]);
    assert_eq!(after["bindings"], before["bindings"]);
    assert_eq!(after["previous_secret"]["secret_version"], 1);
    assert_eq!(after["previous_secret"]["secret_hint"], "WXYZ");
    assert!(after["pending_rotation"].is_null());
    assert_ne!(tag, tag2);
    assert_eq!(resolve_key(&app, &resolver, &id).await, (new.clone(), 2));
    assert_eq!(event_types(&app, &id).last().unwrap(), "byok.rotated");
    // Each version has its own key; the replaced one stays for rollback.
    assert!(app.store.data_key(&id).unwrap().is_some());
    assert!(app.store.data_key(&format!("{id}_v2")).unwrap().is_some());
    // The event feed shows the rotation without its ciphertext.
    let feed = app
        .get_json(&format!("/v1/byok/events/{id}"), &ada.token)
        .await;
    let text = feed.to_string();
    assert!(text.contains("\"method\":\"in_place\""), "{text}");
    assert!(!text.contains("sealed_secret"), "{text}");
    assert!(!text.contains(&new), "{text}");
}

#[tokio::test]
async fn rotation_validates_the_secret_fields_like_register() {
    let fake = fake_openai().await;
    let (app, ada) = default_app(&fake).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let path = format!("/v1/byok/rotate/{id}");
    for (body, param) in [
        (json!({}), "credentials.api_key"),
        (
            json!({"credentials": {"api_key": ""}}),
            "credentials.api_key",
        ),
        (
            json!({"credentials": {"organization": "org-1", "api_key": "sk-x-0123456789"}}),
            "credentials.organization",
        ),
        (json!({"credentials": {"nope": "x"}}), "credentials.nope"),
    ] {
        for path in [path.clone(), format!("/v1/byok/rotate/stage/{id}")] {
            let response = post(&app, &ada.token, &path, None, &body).await;
            let error =
                assert_error(response, 422, "invalid_request_error", "invalid_parameter").await;
            assert_eq!(error["param"], param, "{body}");
        }
    }
    let response = post(
        &app,
        &ada.token,
        &path,
        None,
        &json!({"api_key": "k", "extra": 1}),
    )
    .await;
    // Unknown body fields are refused, as everywhere.
    assert_eq!(response.status(), 422);
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["secret_version"], 1);
}

#[tokio::test]
async fn every_rotation_operation_needs_write_scope_its_own_account_if_match_and_a_live_credential()
{
    let fake = fake_openai().await;
    let (app, ada) = default_app(&fake).await;
    let bob = app.tenant("bob@example.com").await;
    let reader = app.mint_token(&ada.token, &["read"]).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let staged = ok(stage(&app, &ada.token, &id, &fresh_key("s")).await).await;
    let stage_id = staged["stage_id"].as_str().unwrap().to_owned();
    let operations = [
        (
            "/v1/byok/rotate/".to_owned(),
            json!({"api_key": fresh_key("a")}),
        ),
        (
            "/v1/byok/rotate/stage/".to_owned(),
            json!({"api_key": fresh_key("b")}),
        ),
        (
            "/v1/byok/rotate/commit/".to_owned(),
            json!({"stage_id": stage_id}),
        ),
        ("/v1/byok/rotate/rollback/".to_owned(), json!({})),
    ];
    for (prefix, body) in &operations {
        let path = format!("{prefix}{id}");
        let response = post(&app, &reader, &path, None, body).await;
        assert_error(response, 403, "permission_error", "insufficient_scope").await;
        let response = post(&app, &bob.token, &path, None, body).await;
        assert_error(response, 404, "not_found_error", "resource_missing").await;
        let response = post(&app, &ada.token, &path, Some("\"999\""), body).await;
        assert_error(response, 409, "conflict_error", "version_conflict").await;
    }
    // With the current revision each one goes through (rollback last: it has something to
    // roll back to once the rotations ran).
    let mut stage_id = stage_id;
    for (prefix, body) in &operations {
        let (_, tag) = get_config(&app, &ada.token, &id).await;
        let path = format!("{prefix}{id}");
        let mut body = body.clone();
        if prefix.contains("commit") {
            body["stage_id"] = json!(stage_id);
        }
        let answer = ok(post(&app, &ada.token, &path, Some(&tag), &body).await).await;
        if prefix.contains("stage") {
            stage_id = answer["stage_id"].as_str().unwrap().to_owned();
        }
    }
    revoke(&app, &ada.token, &id).await;
    for (prefix, body) in &operations {
        let path = format!("{prefix}{id}");
        let response = post(&app, &ada.token, &path, None, body).await;
        assert_error(response, 409, "conflict_error", "credential_revoked").await;
    }
    // Revocation destroyed every version's key.
    let records: Vec<_> = std::fs::read_dir(app.settings.data_dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(&id))
        .collect();
    assert!(records.is_empty(), "{records:?}");
}

#[tokio::test]
async fn stage_probes_without_switching_traffic_and_commit_promotes_it() {
    let fake = fake_openai().await;
    let (app, ada) = default_app(&fake).await;
    let resolver = app.mint_token(&ada.token, &["resolve"]).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let first = fresh_key("one");
    let staged = ok(stage(&app, &ada.token, &id, &first).await).await;
    assert_eq!(staged["probe_result"]["ok"], true, "{staged}");
    assert_eq!(staged["secret_version"], 2);
    assert_eq!(staged["current_secret_version"], 1);
    assert!(staged["expires_at"].is_string());
    // The probe used the candidate.
    let auth = fake
        .seen()
        .last()
        .unwrap()
        .header("authorization")
        .map(str::to_owned);
    assert_eq!(auth, Some(format!("Bearer {first}")));
    assert_eq!(resolve_key(&app, &resolver, &id).await, (KEY.to_owned(), 1));
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["pending_rotation"]["stage_id"], staged["stage_id"]);
    assert!(config["pending_rotation"].get("sealed_secret").is_none());

    // A new stage replaces it: the first candidate's key is destroyed.
    let second = fresh_key("two");
    let replaced = ok(stage(&app, &ada.token, &id, &second).await).await;
    assert_eq!(replaced["secret_version"], 3);
    assert_eq!(app.store.data_key(&format!("{id}_v2")).unwrap(), None);
    let stale = staged["stage_id"].as_str().unwrap();
    let response = commit(&app, &ada.token, &id, stale, false).await;
    assert_error(response, 409, "conflict_error", "stage_unknown").await;
    let response = commit(&app, &ada.token, &id, "stage_nonsense", false).await;
    assert_error(response, 409, "conflict_error", "stage_unknown").await;

    let stage_id = replaced["stage_id"].as_str().unwrap();
    let committed = ok(commit(&app, &ada.token, &id, stage_id, false).await).await;
    assert_eq!(committed["secret_version"], 3);
    assert!(committed["pending_rotation"].is_null());
    assert_eq!(committed["previous_secret"]["secret_version"], 1);
    assert_eq!(resolve_key(&app, &resolver, &id).await, (second.clone(), 3));
    let response = commit(&app, &ada.token, &id, stage_id, false).await;
    assert_error(response, 409, "conflict_error", "stage_unknown").await;
    let types = event_types(&app, &id);
    assert_eq!(
        types[1..],
        [
            "byok.rotation_staged",
            "byok.secret_retired",
            "byok.rotation_staged",
            "byok.rotated"
        ]
    );
}

#[tokio::test]
async fn a_stage_whose_probe_failed_needs_force() {
    let fake = fake_openai().await;
    let (app, ada) = default_app(&fake).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let staged = ok(stage(&app, &ada.token, &id, &fresh_key("bad")).await).await;
    assert_eq!(staged["probe_result"]["ok"], false);
    assert_eq!(staged["probe_result"]["error"], "invalid_credentials");
    let stage_id = staged["stage_id"].as_str().unwrap();
    let response = commit(&app, &ada.token, &id, stage_id, false).await;
    assert_error(response, 409, "conflict_error", "stage_probe_failed").await;
    let forced = ok(commit(&app, &ada.token, &id, stage_id, true).await).await;
    assert_eq!(forced["secret_version"], 2);
}

#[tokio::test]
async fn rollback_restores_the_previous_secret_once_and_shreds_the_one_rolled_away_from() {
    let fake = fake_openai().await;
    let (app, ada) = default_app(&fake).await;
    let resolver = app.mint_token(&ada.token, &["resolve"]).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let response = rollback(&app, &ada.token, &id).await;
    assert_error(response, 409, "conflict_error", "rollback_unavailable").await;
    let new = fresh_key("new");
    ok(rotate(&app, &ada.token, &id, &new).await).await;
    let back = ok(rollback(&app, &ada.token, &id).await).await;
    assert_eq!(back["secret_version"], 1);
    assert_eq!(back["secret_hint"], "WXYZ");
    assert!(back["previous_secret"].is_null());
    assert_eq!(resolve_key(&app, &resolver, &id).await, (KEY.to_owned(), 1));
    assert_eq!(app.store.data_key(&format!("{id}_v2")).unwrap(), None);
    // No rollback of a rollback; the next rotation is version 3.
    let response = rollback(&app, &ada.token, &id).await;
    assert_error(response, 409, "conflict_error", "rollback_unavailable").await;
    let again = ok(rotate(&app, &ada.token, &id, &fresh_key("three")).await).await;
    assert_eq!(again["secret_version"], 3);
    let types = event_types(&app, &id);
    assert_eq!(
        types[1..],
        [
            "byok.rotated",
            "byok.rotated",
            "byok.secret_retired",
            "byok.rotated"
        ]
    );
    let stream = StreamId::new("byok", &id);
    let events = app.store.stream_events(&stream).unwrap();
    let methods: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type == "byok.rotated")
        .map(|e| e.data["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["in_place", "rollback", "in_place"]);
    assert!(events[2].data.get("sealed_secret").is_none());
}

#[tokio::test]
async fn an_expired_stage_cannot_be_committed() {
    let fake = fake_openai().await;
    let (app, ada) = app(&fake, Duration::from_secs(1), HOUR, HOUR).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let staged = ok(stage(&app, &ada.token, &id, &fresh_key("late")).await).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let stage_id = staged["stage_id"].as_str().unwrap();
    let response = commit(&app, &ada.token, &id, stage_id, true).await;
    assert_error(response, 409, "conflict_error", "stage_expired").await;
}

/// Every file under `dir` that holds `needle`.
fn holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    files(dir)
        .into_iter()
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

#[tokio::test]
async fn a_version_past_its_window_is_retired_by_the_sweep_and_gone_from_the_data_dir() {
    let fake = fake_openai().await;
    let window = Duration::from_secs(1);
    let (app, ada) = app(&fake, window, window, Duration::from_millis(100)).await;
    let old = fresh_key("old");
    let id = register_id(&app, &ada.token, &openai("prod", &old)).await;
    let v1 = app.store.data_key(&id).unwrap().expect("version 1's key");
    ok(rotate(&app, &ada.token, &id, &fresh_key("new")).await).await;
    let staged = ok(stage(&app, &ada.token, &id, &fresh_key("cand")).await).await;
    let v3 = app
        .store
        .data_key(&format!("{id}_v3"))
        .unwrap()
        .expect("the stage's key");
    // Without a request, the sweep retires both once their time is past. The writer destroys
    // their data keys once the retiring events are durable, which is after a read can already
    // see those events: the keys are checked with the rest, not at the first read that shows
    // the retirement.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (config, _) = get_config(&app, &ada.token, &id).await;
        let keys = (
            app.store.data_key(&id).unwrap(),
            app.store.data_key(&format!("{id}_v3")).unwrap(),
        );
        if config["previous_secret"].is_null()
            && config["pending_rotation"].is_null()
            && keys == (None, None)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sweep did not retire, or kept a retired key: {config}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stream = StreamId::new("byok", &id);
    let events = app.store.stream_events(&stream).unwrap();
    let mut retired: Vec<u64> = events
        .iter()
        .filter(|e| e.event_type == "byok.secret_retired")
        .map(|e| e.data["secret_version"].as_u64().unwrap())
        .collect();
    retired.sort_unstable();
    assert_eq!(retired, [1, 3]);
    assert_eq!(events.last().unwrap().actor, "keyledger");
    // Nobody can open it: no rollback, no commit, and the key is gone.
    let response = rollback(&app, &ada.token, &id).await;
    assert_error(response, 409, "conflict_error", "rollback_unavailable").await;
    let response = commit(
        &app,
        &ada.token,
        &id,
        staged["stage_id"].as_str().unwrap(),
        true,
    )
    .await;
    assert_error(response, 409, "conflict_error", "stage_unknown").await;
    let sealed_v1 = events[0].data["sealed_secret"].as_str().unwrap().to_owned();
    let master = app.settings.master_key.to_base64().expose().clone();
    let (_, dir) = app.stop_and_release().await;
    let data = dir.path().join("data");
    assert!(
        holding(&data, &v1).is_empty(),
        "version 1's wrapped key is still on disk"
    );
    assert!(
        holding(&data, &v3).is_empty(),
        "the stage's wrapped key is still on disk"
    );
    assert!(
        holding(&data, old.as_bytes()).is_empty(),
        "the old plaintext is on disk"
    );
    // The log keeps only ciphertext, which the master key alone does not open.
    let sealed =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, sealed_v1).unwrap();
    let master =
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, master).unwrap();
    let ad = format!("keyledger/byok/{}/{id}/v1", ada.account_id);
    for ad in [ad.as_bytes(), b"".as_slice()] {
        assert!(keyledger::crypto::open(&master, ad, &sealed).is_err());
    }
}

#[tokio::test]
async fn versions_and_keys_survive_a_restart_and_the_sweep_runs_on_open() {
    let fake = fake_openai().await;
    let window = Duration::from_secs(2);
    let (app, ada) = app(&fake, HOUR, window, HOUR).await;
    let resolver = app.mint_token(&ada.token, &["resolve"]).await;
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    let new = fresh_key("new");
    ok(rotate(&app, &ada.token, &id, &new).await).await;
    let staged = ok(stage(&app, &ada.token, &id, &fresh_key("cand")).await).await;
    let rotated_at = Instant::now();
    let app = app.restart().await;
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["secret_version"], 2);
    assert_eq!(config["previous_secret"]["secret_version"], 1);
    assert_eq!(config["pending_rotation"]["stage_id"], staged["stage_id"]);
    assert_eq!(resolve_key(&app, &resolver, &id).await, (new.clone(), 2));
    assert!(app.store.data_key(&id).unwrap().is_some());
    assert!(app.store.data_key(&format!("{id}_v3")).unwrap().is_some());
    // Stopped past the window: the next start retires version 1 before it serves.
    let (settings, dir) = app.stop_and_release().await;
    let waited = window.saturating_sub(rotated_at.elapsed()) + Duration::from_millis(300);
    tokio::time::sleep(waited).await;
    let app = crate::helpers::start(settings, dir).await;
    assert_eq!(app.store.data_key(&id).unwrap(), None);
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert!(config["previous_secret"].is_null(), "{config}");
    // The stage (its TTL an hour) is still there and commits.
    let stage_id = staged["stage_id"].as_str().unwrap();
    let committed = ok(commit(&app, &ada.token, &id, stage_id, false).await).await;
    assert_eq!(committed["secret_version"], 3);
}

#[tokio::test]
async fn of_ten_concurrent_commits_of_one_stage_exactly_one_wins() {
    let fake = fake_openai().await;
    let (app, ada) = default_app(&fake).await;
    let app = Arc::new(app);
    let id = register_id(&app, &ada.token, &openai("prod", KEY)).await;
    for trial in 0..100 {
        let staged = ok(stage(&app, &ada.token, &id, &fresh_key("race")).await).await;
        let stage_id = staged["stage_id"].as_str().unwrap().to_owned();
        let commits = (0..10).map(|_| {
            let (app, token, id, stage_id) =
                (app.clone(), ada.token.clone(), id.clone(), stage_id.clone());
            // Forced: the race is over the stage, whatever its probe met on a loaded machine.
            tokio::spawn(async move {
                let response = commit(&app, &token, &id, &stage_id, true).await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (status, body)
            })
        });
        let mut won = 0;
        for task in futures_util::future::join_all(commits).await {
            let (status, body) = task.unwrap();
            match status {
                200 => won += 1,
                409 => assert_eq!(body["error"]["code"], "stage_unknown", "{body}"),
                other => panic!("trial {trial}: {other} {body}"),
            }
        }
        assert_eq!(won, 1, "trial {trial}");
    }
    let (config, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(config["secret_version"], 101);
}

#[tokio::test]
async fn resolve_hands_out_the_old_secret_up_to_the_commit_and_the_new_one_from_it() {
    let fake = fake_openai().await;
    let (app, ada) = default_app(&fake).await;
    let app = Arc::new(app);
    let resolver = app.mint_token(&ada.token, &["resolve"]).await;
    let mut current = fresh_key("v1");
    let id = register_id(&app, &ada.token, &openai("prod", &current)).await;
    for round in 0..5u64 {
        let next = fresh_key("next");
        let staged = ok(stage(&app, &ada.token, &id, &next).await).await;
        let stage_id = staged["stage_id"].as_str().unwrap().to_owned();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Resolvers running across the commit, each answer stamped with when it was asked and
        // when it came back.
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (app, token, id, stop) =
                    (app.clone(), resolver.clone(), id.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let asked = Instant::now();
                        let answer = resolve_key(&app, &token, &id).await;
                        seen.push((asked, Instant::now(), answer));
                    }
                    seen
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(30)).await;
        let sent = Instant::now();
        let committed = ok(commit(&app, &ada.token, &id, &stage_id, false).await).await;
        let answered = Instant::now();
        let version = committed["secret_version"].as_u64().unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut before, mut after) = (0, 0);
        for worker in workers {
            for (asked, back, (key, v)) in worker.await.unwrap() {
                // Never a mix: the secret always goes with its own version.
                if key == current {
                    assert_eq!(v, version - 1, "round {round}");
                    assert!(
                        asked < answered,
                        "round {round}: the old secret after the commit answered"
                    );
                    before += 1;
                } else {
                    assert_eq!(key, next, "round {round}: neither secret");
                    assert_eq!(v, version, "round {round}");
                    assert!(
                        back > sent,
                        "round {round}: the new secret before the commit was sent"
                    );
                    after += 1;
                }
            }
        }
        assert!(
            before > 0 && after > 0,
            "round {round}: {before} before, {after} after"
        );
        current = next;
    }
}
