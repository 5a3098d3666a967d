//! What an operator runs, through the real binary on real stores in temp dirs: `export` and
//! `import` (offline and from a running server), `rekey` (and its resumption), what `verify`
//! catches, and the store's metrics. This file holds what they share: a populated store, every
//! answer of the API over it, and the binary run as a command.

mod backup;
mod metrics;
mod rekey;
mod verify;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keyledger::crypto::MasterKey;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_json, disable, openai, register_id, revoke};

/// A populated store: two accounts, each with credentials in every state, keys, bindings, a
/// policy, a quota and usage.
pub struct World {
    pub tenants: Vec<Tenant>,
}

pub struct Tenant {
    pub admin: String,
    pub resolver: String,
    pub credentials: Vec<String>,
}

pub async fn populate(app: &TestApp) -> World {
    let mut tenants = Vec::new();
    for (n, email) in ["ada@example.com", "bob@example.com"].iter().enumerate() {
        let tenant = app.tenant(email).await;
        let resolver = app.mint_token(&tenant.token, &["resolve"]).await;
        let _reader = app.mint_token(&tenant.token, &["read"]).await;
        let mut credentials = Vec::new();
        for alias in ["prod", "backup", "old", "paused"] {
            let secret = format!("sk-{alias}-{n}-0123456789abcdef");
            credentials.push(register_id(app, &tenant.token, &openai(alias, &secret)).await);
        }
        let bind = json!({"capability": "chat", "module": "support-bot", "model": "gpt-4o"});
        let path = format!("/v1/byok/bind/{}", credentials[0]);
        assert_json(app.post(&path, Some(&tenant.token), &bind).await, 200).await;
        revoke(app, &tenant.token, &credentials[2]).await;
        disable(app, &tenant.token, &credentials[3]).await;
        let policy = json!({"mode": "byok_only", "scope": {"capability": "chat"}});
        let set = app
            .post("/v1/byok/policy/set", Some(&tenant.token), &policy)
            .await;
        assert_eq!(set.status(), 200, "{}", set.text().await.unwrap());
        let quota = json!({"spend_limit_usd": 50.0, "call_limit": 1000, "window": "mtd"});
        let path = format!("/v1/byok/quota/set/{}", credentials[1]);
        let set = app.post(&path, Some(&tenant.token), &quota).await;
        assert_eq!(set.status(), 200, "{}", set.text().await.unwrap());
        let records = json!({"records": [
            {"byok_id": credentials[0], "request_id": format!("req-{n}-1"), "spend_usd": 0.25},
            {"byok_id": credentials[1], "request_id": format!("req-{n}-2"), "spend_usd": 1.5},
        ]});
        let reported = app
            .post("/v1/byok/usage/report", Some(&resolver), &records)
            .await;
        assert!(
            reported.status().is_success(),
            "{}",
            reported.text().await.unwrap()
        );
        tenants.push(Tenant {
            admin: tenant.token,
            resolver,
            credentials,
        });
    }
    World { tenants }
}

/// Every list, get and events answer over `world`, and resolve's answers (with the secrets),
/// each with the request that got it. A key's `last_used_at` is left out: reading the keys
/// uses one, and each process stamps a key on its first use.
pub async fn answers(app: &TestApp, world: &World) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for tenant in &world.tenants {
        let mut paths = vec![
            "/v1/account".to_owned(),
            "/v1/account/keys".to_owned(),
            "/v1/byok/list".to_owned(),
            "/v1/byok/list?limit=2".to_owned(),
            "/v1/events".to_owned(),
            "/v1/events?limit=3".to_owned(),
            "/v1/byok/policy/get".to_owned(),
        ];
        for id in &tenant.credentials {
            paths.push(format!("/v1/byok/get/{id}"));
            paths.push(format!("/v1/byok/events/{id}"));
            paths.push(format!("/v1/byok/usage/{id}"));
        }
        for path in paths {
            let response = app.get(&path, &tenant.admin).await;
            let status = response.status().as_u16();
            let mut body: Value = response.json().await.unwrap();
            forget_last_use(&mut body);
            out.push((path, json!({"status": status, "body": body})));
        }
        let mut requests = vec![json!({"explain": true}), json!({"model": "gpt-4o"})];
        for id in &tenant.credentials {
            requests.push(json!({"byok_id": id, "explain": true}));
        }
        for request in requests {
            let response = app
                .post("/v1/byok/resolve", Some(&tenant.resolver), &request)
                .await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            out.push((
                format!("resolve {request}"),
                json!({"status": status, "body": body}),
            ));
        }
    }
    out
}

fn forget_last_use(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("last_used_at");
            map.values_mut().for_each(forget_last_use);
        }
        Value::Array(items) => items.iter_mut().for_each(forget_last_use),
        _ => {}
    }
}

/// Asserts two sets of answers are the same, naming the first that differs.
pub fn assert_same_answers(original: &[(String, Value)], restored: &[(String, Value)]) {
    assert_eq!(original.len(), restored.len());
    for ((path, before), (again, after)) in original.iter().zip(restored) {
        assert_eq!(path, again);
        assert_eq!(before, after, "{path} answers differently");
    }
}

pub fn key_file(dir: &Path, name: &str, key: &MasterKey) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, key.to_base64().expose()).unwrap();
    path
}

/// The binary with `args`, nothing inherited from the shell that changes what it does.
pub fn keyledger(args: &[&std::ffi::OsStr]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyledger"));
    command
        .args(args)
        .env_remove("KEYLEDGER_MASTER_KEY")
        .env_remove("KEYLEDGER_DATA_DIR")
        .env_remove("KEYLEDGER_TEST_REKEY_STOP_AFTER")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "1");
    command
}

/// `keyledger <command> --data-dir <dir> --master-key-file <key> <more>`, run to its end.
pub fn run(command: &str, dir: &Path, key: &Path, more: &[&str]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        command.as_ref(),
        "--data-dir".as_ref(),
        dir.as_os_str(),
        "--master-key-file".as_ref(),
        key.as_os_str(),
    ];
    args.extend(more.iter().map(|a| std::ffi::OsStr::new(*a)));
    keyledger(&args).output().unwrap()
}

pub fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn assert_ok(output: &Output) {
    assert_eq!(output.status.code(), Some(0), "{}", text(output));
}

/// Exit code 1, one clear line on stderr saying each of `words`, no panic or backtrace.
pub fn assert_refused(output: &Output, words: &[&str]) -> String {
    let all = text(output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    let lower = all.to_lowercase();
    for forbidden in ["panicked", "backtrace"] {
        assert!(!lower.contains(forbidden), "{forbidden:?} in {all}");
    }
    for word in words {
        assert!(
            lower.contains(&word.to_lowercase()),
            "{word:?} not in {all}"
        );
    }
    all
}
