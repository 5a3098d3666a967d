//! Signatures, checked by the Standard Webhooks reference library for Python
//! (`standardwebhooks`, installed by `scripts/webhooks-env`), not by keyledger's own code:
//! a real delivery verifies; an empty `v1,`, a truncated signature, a wrong secret and a clock
//! more than five minutes away do not; during a rotation both secrets verify.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{create_hook, eventually, id_of, post_empty, private_app, some_event};
use crate::helpers::fake_provider::{FakeProvider, Seen};
use crate::helpers::{assert_json, disable, python};

fn headers(seen: &Seen) -> Value {
    json!({
        "webhook-id": seen.header("webhook-id").unwrap(),
        "webhook-timestamp": seen.header("webhook-timestamp").unwrap(),
        "webhook-signature": seen.header("webhook-signature").unwrap(),
    })
}

fn case(
    name: &str,
    secret: &str,
    seen: &Seen,
    headers: Value,
    clock_offset: i64,
    expect: bool,
) -> Value {
    json!({"name": name, "secret": secret, "headers": headers,
        "body": String::from_utf8(seen.body.clone()).unwrap(), "clock_offset": clock_offset,
        "expect": expect})
}

/// Runs the reference library over `cases`; fails the test with its output unless every case
/// came out as expected.
fn verify_with_reference_library(cases: &[Value]) {
    python::install("webhooks-env").unwrap_or_else(|e| panic!("scripts/webhooks-env: {e}"));
    let venv = python::venv("KEYLEDGER_WEBHOOKS_ENV", "target/webhooks-env");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.json");
    std::fs::write(&file, serde_json::to_vec(cases).unwrap()).unwrap();
    let mut command = Command::new(venv.join("bin/python"));
    command
        .arg(python::root().join("tests/api/webhooks/verify.py"))
        .arg(&file);
    let (ok, output) = python::run_bounded(
        command,
        &dir.path().join("verify.log"),
        Duration::from_secs(60),
    );
    assert!(ok, "the reference library disagreed:\n{output}");
    assert_eq!(
        output.lines().filter(|l| l.starts_with("ok ")).count(),
        cases.len(),
        "{output}"
    );
}

#[tokio::test]
async fn deliveries_verify_with_the_reference_library_and_bad_vectors_do_not() {
    let receiver = FakeProvider::answering(204).await;
    let app = private_app().await;
    let ada = app.tenant("ada@example.com").await;
    let hook = create_hook(&app, &ada.token, &format!("{}/hook", receiver.url), &["*"]).await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    let byok_id = some_event(&app, &ada.token, "prod").await;
    let seen = eventually(Duration::from_secs(10), "the delivery", || async {
        receiver.seen().first().cloned()
    })
    .await;

    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["type"], "byok.registered");
    assert_eq!(body["data"]["byok_id"], byok_id.as_str());
    assert!(body["timestamp"].is_string());
    let text = String::from_utf8(seen.body.clone()).unwrap();
    assert!(
        !text.contains("sealed_secret") && !text.contains("sk-test"),
        "{text}"
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert!(seen.header("webhook-id").unwrap().starts_with("msg_"));

    let good = headers(&seen);
    let signature = good["webhook-signature"].as_str().unwrap().to_owned();
    let with_signature = |s: &str| {
        let mut h = good.clone();
        h["webhook-signature"] = Value::from(s);
        h
    };
    let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut tampered = seen.clone();
    tampered.body.extend_from_slice(b" ");
    let cases = [
        case(
            "the delivery as sent",
            &secret,
            &seen,
            good.clone(),
            0,
            true,
        ),
        case(
            "an empty v1,",
            &secret,
            &seen,
            with_signature("v1,"),
            0,
            false,
        ),
        case(
            "a truncated signature",
            &secret,
            &seen,
            with_signature(&signature[..signature.len() - 4]),
            0,
            false,
        ),
        case("a wrong secret", other, &seen, good.clone(), 0, false),
        case(
            "the clock 6 minutes ahead",
            &secret,
            &seen,
            good.clone(),
            360,
            false,
        ),
        case(
            "the clock 6 minutes behind",
            &secret,
            &seen,
            good.clone(),
            -360,
            false,
        ),
        case(
            "the clock 4 minutes ahead",
            &secret,
            &seen,
            good.clone(),
            240,
            true,
        ),
        case(
            "a body changed by one byte",
            &secret,
            &tampered,
            good.clone(),
            0,
            false,
        ),
    ];
    verify_with_reference_library(&cases);

    // A ping is signed the same way.
    let id = id_of(&hook);
    let queued = assert_json(
        post_empty(&app, &format!("/v1/webhooks/{id}/test"), &ada.token).await,
        202,
    )
    .await;
    let ping = eventually(Duration::from_secs(10), "the ping", || async {
        receiver
            .seen()
            .into_iter()
            .find(|s| s.header("webhook-id") == queued["delivery_id"].as_str())
    })
    .await;
    let ping_body: Value = serde_json::from_slice(&ping.body).unwrap();
    assert_eq!(ping_body["type"], "webhook.ping");
    verify_with_reference_library(&[case("a ping", &secret, &ping, headers(&ping), 0, true)]);
}

#[tokio::test]
async fn during_a_rotation_both_secrets_sign() {
    let receiver = FakeProvider::answering(200).await;
    let app = private_app().await;
    let ada = app.tenant("ada@example.com").await;
    let hook = create_hook(&app, &ada.token, &receiver.url, &["*"]).await;
    let old = hook["secret"].as_str().unwrap().to_owned();
    let id = id_of(&hook);
    let rotated = assert_json(
        post_empty(
            &app,
            &format!("/v1/webhooks/{id}/rotate-secret"),
            &ada.token,
        )
        .await,
        200,
    )
    .await;
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    assert_eq!(rotated["secret_version"], 2);
    assert_eq!(rotated["signing_secret_versions"], json!([1, 2]));

    let byok_id = some_event(&app, &ada.token, "prod").await;
    disable(&app, &ada.token, &byok_id).await;
    let seen = eventually(Duration::from_secs(10), "both deliveries", || async {
        let seen = receiver.seen();
        (seen.len() >= 2).then_some(seen)
    })
    .await;
    for delivery in &seen {
        let signatures = delivery.header("webhook-signature").unwrap();
        assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
        let h = headers(delivery);
        verify_with_reference_library(&[
            case("the previous secret", &old, delivery, h.clone(), 0, true),
            case("the new secret", &new, delivery, h.clone(), 0, true),
            case(
                "an unrelated secret",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                delivery,
                h,
                0,
                false,
            ),
        ]);
    }
}
