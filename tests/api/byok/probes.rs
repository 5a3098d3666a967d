//! `POST /v1/byok/test/{id}` and `register` with `test: true` against fake providers: real HTTP
//! servers on 127.0.0.1 (helpers/fake_provider.rs). Every provider family gets the right call
//! with the secret in the right header; Bedrock's SigV4 signature is verified by an independent
//! implementation (helpers/sigv4.rs) and Vertex's assertion with the service account's public
//! key; each error class, a timeout, redirects left unfollowed, the SSRF policy through the API,
//! `byok.tested` and `last_test`, scopes, other accounts and revoked credentials.

use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Method;
use serde_json::{Value, json};

use super::{KEY, call, get_config, missing_id, self_hosted};
use crate::helpers::fake_provider::{FakeProvider, Reply, Seen, closed_port};
use crate::helpers::{
    Tenant, TestApp, assert_error, etag, json_of, register, register_id, revoke, sigv4,
    spawn_app_with,
};

/// A server whose probes may reach 127.0.0.1, with these per-provider base URLs.
async fn app_with(base_urls: &[(&str, String)]) -> (TestApp, Tenant) {
    app_with_settings(base_urls, true, Duration::from_secs(10), None).await
}

async fn app_with_settings(
    base_urls: &[(&str, String)],
    allow_private_urls: bool,
    timeout: Duration,
    vertex_token_url: Option<String>,
) -> (TestApp, Tenant) {
    let base_urls: Vec<(String, String)> = base_urls
        .iter()
        .map(|(p, u)| ((*p).to_owned(), u.clone()))
        .collect();
    let app = spawn_app_with(move |s| {
        s.outbound.allow_private_urls = allow_private_urls;
        s.outbound.timeout = timeout;
        s.outbound.connect_timeout = timeout;
        s.outbound.base_urls = base_urls.into_iter().collect();
        s.outbound.vertex_token_url = vertex_token_url;
    })
    .await;
    let ada = app.tenant("ada@example.com").await;
    (app, ada)
}

async fn probe_response(app: &TestApp, token: &str, id: &str) -> reqwest::Response {
    let path = format!("/v1/byok/test/{id}");
    call(app, Method::POST, &path, Some(token), None, None).await
}

/// Tests the credential, which must answer 200; answers the result.
async fn probe(app: &TestApp, token: &str, id: &str) -> Value {
    let response = probe_response(app, token, id).await;
    assert_eq!(response.status(), 200, "test {id}");
    json_of(response).await
}

fn assert_ok(result: &Value) {
    assert_eq!(result["ok"], true, "{result}");
    assert!(result.get("error").is_none(), "{result}");
    assert!(result["latency_ms"].is_u64(), "{result}");
    assert_eq!(result["secret_version"], 1, "{result}");
}

fn assert_failed(result: &Value, error: &str) {
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["error"], error, "{result}");
}

/// The requests `fake` received under `prefix`.
fn under(fake: &FakeProvider, prefix: &str) -> Vec<Seen> {
    fake.seen()
        .into_iter()
        .filter(|s| s.target.starts_with(prefix))
        .collect()
}

fn key_for(provider: &str) -> String {
    format!("key-{provider}-0123456789abcdef")
}

#[tokio::test]
async fn openai_compatible_providers_list_models_with_a_bearer_token() {
    let fake = FakeProvider::answering(200).await;
    let hosted = [
        "openai",
        "together",
        "groq",
        "mistral",
        "deepseek",
        "openrouter",
    ];
    let mut bases: Vec<(&str, String)> = hosted
        .iter()
        .map(|p| (*p, format!("{}/{p}/v1", fake.url)))
        .collect();
    bases.push(("sarvam", format!("{}/sarvam", fake.url)));
    let (app, ada) = app_with(&bases).await;
    for provider in hosted.iter().chain(&["sarvam"]) {
        let key = key_for(provider);
        let body = json!({"provider": provider, "alias": "main", "api_key": key});
        let id = register_id(&app, &ada.token, &body).await;
        assert_ok(&probe(&app, &ada.token, &id).await);
        let [seen] = &under(&fake, &format!("/{provider}/"))[..] else {
            panic!("one request for {provider}: {:?}", fake.seen());
        };
        assert_eq!(seen.method, "GET");
        let path = if *provider == "sarvam" {
            "/sarvam/v1/models".to_owned()
        } else {
            format!("/{provider}/v1/models")
        };
        assert_eq!(seen.target, path);
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {key}").as_str()),
            "{provider}"
        );
        if *provider == "sarvam" {
            assert_eq!(seen.header("api-subscription-key"), Some(key.as_str()));
        }
    }
    // self_hosted: the credential's own base URL; OpenAI's organization header from settings.
    let mut body = self_hosted("vllm", &format!("{}/self/v1", fake.url));
    body["credentials"] = json!({"api_key": key_for("self_hosted")});
    let id = register_id(&app, &ada.token, &body).await;
    assert_ok(&probe(&app, &ada.token, &id).await);
    let [seen] = &under(&fake, "/self/")[..] else {
        panic!("one self_hosted request");
    };
    assert_eq!(seen.target, "/self/v1/models");
    let bearer = format!("Bearer {}", key_for("self_hosted"));
    assert_eq!(seen.header("authorization"), Some(bearer.as_str()));
}

#[tokio::test]
async fn openai_probes_send_the_organization_and_project() {
    let fake = FakeProvider::answering(200).await;
    let (app, ada) = app_with(&[("openai", format!("{}/v1", fake.url))]).await;
    let body = json!({"provider": "openai", "alias": "org", "api_key": KEY,
        "credentials": {"organization": "org-42", "project": "proj_7"}});
    let id = register_id(&app, &ada.token, &body).await;
    assert_ok(&probe(&app, &ada.token, &id).await);
    let seen = fake.only();
    assert_eq!(seen.header("openai-organization"), Some("org-42"));
    assert_eq!(seen.header("openai-project"), Some("proj_7"));
}

#[tokio::test]
async fn anthropic_cohere_and_azure_get_their_own_calls() {
    let fake = FakeProvider::answering(200).await;
    let (app, ada) = app_with(&[
        ("anthropic", format!("{}/anthropic", fake.url)),
        ("cohere", format!("{}/cohere", fake.url)),
        ("azure", format!("{}/azure", fake.url)),
    ])
    .await;
    for provider in ["anthropic", "cohere"] {
        let body = json!({"provider": provider, "alias": "main", "api_key": key_for(provider)});
        let id = register_id(&app, &ada.token, &body).await;
        assert_ok(&probe(&app, &ada.token, &id).await);
    }
    let azure = json!({"provider": "azure", "alias": "eu", "credentials": {
        "api_key": key_for("azure"), "endpoint": "https://res.openai.azure.com",
        "api_version": "2024-10-21", "deployments": "gpt-4o"}});
    let id = register_id(&app, &ada.token, &azure).await;
    assert_ok(&probe(&app, &ada.token, &id).await);

    let [anthropic] = &under(&fake, "/anthropic/")[..] else {
        panic!("one anthropic request");
    };
    assert_eq!(anthropic.target, "/anthropic/v1/models");
    let anthropic_key = key_for("anthropic");
    assert_eq!(anthropic.header("x-api-key"), Some(anthropic_key.as_str()));
    assert_eq!(anthropic.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(anthropic.header("authorization"), None);

    let [cohere] = &under(&fake, "/cohere/")[..] else {
        panic!("one cohere request");
    };
    assert_eq!(cohere.target, "/cohere/v1/models");
    let bearer = format!("Bearer {}", key_for("cohere"));
    assert_eq!(cohere.header("authorization"), Some(bearer.as_str()));

    let [azure] = &under(&fake, "/azure/")[..] else {
        panic!("one azure request");
    };
    assert_eq!(
        azure.target,
        "/azure/openai/deployments?api-version=2024-10-21"
    );
    let azure_key = key_for("azure");
    assert_eq!(azure.header("api-key"), Some(azure_key.as_str()));
    assert_eq!(azure.header("authorization"), None);
}

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

#[tokio::test]
async fn bedrock_probes_are_sigv4_signed_and_verify_independently() {
    // The fake answers 200 only to a signature its own verifier accepts, 403 otherwise (as AWS
    // does).
    let fake = FakeProvider::start(|seen| match sigv4::verify(seen, SECRET_KEY) {
        Ok(_) => Reply::json(200, json!({"modelSummaries": []})),
        Err(why) => Reply::json(403, json!({"message": why})),
    })
    .await;
    let (app, ada) = app_with(&[("bedrock", format!("{}/bedrock", fake.url))]).await;
    let body = json!({"provider": "bedrock", "alias": "us", "credentials": {
        "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "region": "us-west-2",
        "session_token": "FQoGZXIvYXdzEXAMPLETOKEN"}});
    let id = register_id(&app, &ada.token, &body).await;
    let result = probe(&app, &ada.token, &id).await;
    let seen = fake.only();
    let signed = sigv4::verify(&seen, SECRET_KEY).unwrap_or_else(|why| panic!("{why}"));
    assert_ok(&result);
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/bedrock/foundation-models");
    assert_eq!(signed.access_key, ACCESS_KEY);
    assert_eq!(signed.region, "us-west-2");
    assert_eq!(signed.service, "bedrock");
    assert_eq!(signed.date, Utc::now().format("%Y%m%d").to_string());
    assert_eq!(
        seen.header("x-amz-security-token"),
        Some("FQoGZXIvYXdzEXAMPLETOKEN")
    );
    // The secret key itself never travels.
    assert!(
        !format!("{:?}", seen.headers).contains(SECRET_KEY),
        "{seen:?}"
    );
    // The verifier is not a rubber stamp: another secret key does not verify.
    assert!(sigv4::verify(&seen, "another-secret-key").is_err());

    // A wrong secret key is refused by the fake's verifier: invalid_credentials.
    let wrong = json!({"provider": "bedrock", "alias": "wrong", "credentials": {
        "access_key": ACCESS_KEY, "secret_key": "not-the-secret-key-0123456789",
        "region": "us-west-2"}});
    let id = register_id(&app, &ada.token, &wrong).await;
    assert_failed(&probe(&app, &ada.token, &id).await, "invalid_credentials");
}

const VERTEX_KEY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/probes/vertex-test-key.pem"
));
const VERTEX_PUBLIC_KEY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/probes/vertex-test-key.pub.pem"
));
const CLIENT_EMAIL: &str = "probe@acme-prod.iam.gserviceaccount.com";

fn service_account() -> String {
    json!({"type": "service_account", "project_id": "acme-prod",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": VERTEX_KEY, "client_email": CLIENT_EMAIL,
        "token_uri": "https://attacker.example.com/token"})
    .to_string()
}

#[derive(serde::Deserialize)]
struct Assertion {
    iss: String,
    scope: String,
    aud: String,
    iat: i64,
    exp: i64,
}

#[tokio::test]
async fn vertex_probes_exchange_a_signed_assertion_for_a_token() {
    let token_url = std::sync::Arc::new(std::sync::OnceLock::<String>::new());
    let audience = token_url.clone();
    let fake = FakeProvider::start(move |seen| {
        if seen.target == "/token" {
            let form: Vec<(String, String)> = url::form_urlencoded::parse(&seen.body)
                .into_owned()
                .collect();
            let field = |name: &str| {
                form.iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            if field("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
                return Reply::json(400, json!({"error": "unsupported_grant_type"}));
            }
            let key = DecodingKey::from_rsa_pem(VERTEX_PUBLIC_KEY.as_bytes()).unwrap();
            let mut validation = Validation::new(Algorithm::RS256);
            validation.set_audience(&[audience.get().unwrap()]);
            validation.set_issuer(&[CLIENT_EMAIL]);
            return match jsonwebtoken::decode::<Assertion>(&field("assertion"), &key, &validation) {
                Ok(data) if data.claims.scope.contains("cloud-platform") => Reply::json(
                    200,
                    json!({"access_token": "ya29.fake-access-token",
                        "expires_in": 3599, "token_type": "Bearer"}),
                ),
                _ => Reply::json(400, json!({"error": "invalid_grant"})),
            };
        }
        if seen.header("authorization") == Some("Bearer ya29.fake-access-token") {
            Reply::json(200, json!({"models": []}))
        } else {
            Reply::json(401, json!({"error": {"code": 401}}))
        }
    })
    .await;
    token_url.set(format!("{}/token", fake.url)).unwrap();
    let (app, ada) = app_with_settings(
        &[("vertex", format!("{}/vertex", fake.url))],
        true,
        Duration::from_secs(10),
        Some(format!("{}/token", fake.url)),
    )
    .await;
    let body = json!({"provider": "vertex", "alias": "gcp", "credentials": {
        "project_id": "acme-prod", "region": "europe-west4",
        "service_account_json": service_account()}});
    let id = register_id(&app, &ada.token, &body).await;
    assert_ok(&probe(&app, &ada.token, &id).await);
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The configured token endpoint, never the key file's `token_uri`.
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "/token")
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&seen[0].body)
        .into_owned()
        .collect();
    let assertion = &form.iter().find(|(n, _)| n == "assertion").unwrap().1;
    let key = DecodingKey::from_rsa_pem(VERTEX_PUBLIC_KEY.as_bytes()).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[format!("{}/token", fake.url)]);
    let decoded = jsonwebtoken::decode::<Assertion>(assertion, &key, &validation).unwrap();
    assert_eq!(decoded.claims.iss, CLIENT_EMAIL);
    assert_eq!(
        decoded.claims.scope,
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(decoded.claims.aud, format!("{}/token", fake.url));
    assert!(decoded.claims.exp - decoded.claims.iat <= 3600);
    assert!((decoded.claims.iat - Utc::now().timestamp()).abs() < 60);
    assert_eq!(
        decoded.header.kid.as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    assert_eq!(
        seen[1].target,
        "/vertex/v1/projects/acme-prod/locations/europe-west4/models?pageSize=1"
    );
    assert_eq!(
        seen[1].header("authorization"),
        Some("Bearer ya29.fake-access-token")
    );
}

#[tokio::test]
async fn a_refused_token_exchange_is_invalid_credentials() {
    let fake = FakeProvider::answering(400).await;
    let (app, ada) = app_with_settings(
        &[("vertex", format!("{}/vertex", fake.url))],
        true,
        Duration::from_secs(10),
        Some(format!("{}/token", fake.url)),
    )
    .await;
    let body = json!({"provider": "vertex", "alias": "gcp", "credentials": {
        "project_id": "acme-prod", "region": "us-central1",
        "service_account_json": service_account()}});
    let id = register_id(&app, &ada.token, &body).await;
    assert_failed(&probe(&app, &ada.token, &id).await, "invalid_credentials");
    assert_eq!(fake.only().target, "/token");
}

#[tokio::test]
async fn each_failure_has_its_class() {
    let fake = FakeProvider::start(|seen| {
        let status = seen.target.split('/').nth(1).unwrap_or("200");
        match status {
            "slow" => Reply {
                delay: Duration::from_secs(5),
                ..Reply::status(200)
            },
            other => Reply::status(other.parse().unwrap_or(500)),
        }
    })
    .await;
    let (app, ada) = app_with_settings(&[], true, Duration::from_secs(1), None).await;
    let closed = closed_port().await;
    for (base, error) in [
        (format!("{}/401", fake.url), Some("invalid_credentials")),
        (format!("{}/403", fake.url), Some("invalid_credentials")),
        (format!("{}/429", fake.url), Some("rate_limited")),
        (format!("{}/500", fake.url), Some("provider_error")),
        (format!("{}/503", fake.url), Some("provider_error")),
        (format!("{}/404", fake.url), Some("provider_error")),
        (format!("{}/slow", fake.url), Some("timeout")),
        (format!("http://127.0.0.1:{closed}/v1"), Some("unreachable")),
        (format!("{}/204", fake.url), None),
    ] {
        let id = register_id(&app, &ada.token, &self_hosted("local", &base)).await;
        let result = probe(&app, &ada.token, &id).await;
        match error {
            Some(error) => assert_failed(&result, error),
            None => assert_ok(&result),
        }
        if error == Some("timeout") {
            let latency = result["latency_ms"].as_u64().unwrap();
            assert!((900..4000).contains(&latency), "{result}");
        }
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let elsewhere = FakeProvider::answering(200).await;
    let target = format!("{}/v1/models", elsewhere.url);
    let fake = FakeProvider::start(move |_| Reply {
        headers: vec![("location".into(), target.clone())],
        ..Reply::status(302)
    })
    .await;
    let (app, ada) = app_with(&[]).await;
    let id = register_id(
        &app,
        &ada.token,
        &self_hosted("moved", &format!("{}/v1", fake.url)),
    )
    .await;
    assert_failed(&probe(&app, &ada.token, &id).await, "provider_error");
    assert_eq!(fake.only().target, "/v1/models");
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
}

#[tokio::test]
async fn without_allow_private_urls_local_addresses_are_never_contacted() {
    let fake = FakeProvider::answering(200).await;
    let (app, ada) = app_with_settings(&[], false, Duration::from_secs(5), None).await;
    let mut probed = 0;
    for base in [
        format!("http://127.0.0.1:{}/v1", fake.port),
        format!("http://localhost:{}/v1", fake.port),
        format!("http://2130706433:{}/v1", fake.port),
        format!("http://[::ffff:127.0.0.1]:{}/v1", fake.port),
    ] {
        let response =
            crate::helpers::register_response(&app, &ada.token, &self_hosted("local", &base)).await;
        if response.status() != 201 {
            // Refused already by the base-URL rules: nothing to probe.
            continue;
        }
        let id = json_of(response).await["byok_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_failed(&probe(&app, &ada.token, &id).await, "unreachable");
        probed += 1;
    }
    // Plain http to 127.0.0.1 and localhost passes the base-URL rules: those two were probed.
    assert!(probed >= 2, "{probed}");
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
}

#[tokio::test]
async fn a_probe_is_recorded_as_byok_tested_and_shown_as_last_test() {
    let fake = FakeProvider::answering(429).await;
    let (app, ada) = app_with(&[("openai", format!("{}/v1", fake.url))]).await;
    let id = register_id(
        &app,
        &ada.token,
        &super::super::helpers::openai("prod", KEY),
    )
    .await;
    let (before, _) = get_config(&app, &ada.token, &id).await;
    assert_eq!(before["last_test"], Value::Null);
    let response = probe_response(&app, &ada.token, &id).await;
    assert_eq!(response.status(), 200);
    // byok.tested, and the byok.health_changed of the 429 in the same append (docs/health.md).
    assert_eq!(etag(&response), "\"3\"");
    let result = json_of(response).await;
    assert_failed(&result, "rate_limited");
    assert_eq!(
        fake.only().header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let (after, tag) = get_config(&app, &ada.token, &id).await;
    assert_eq!(tag, "\"3\"");
    assert_eq!(after["last_test"], result);
    // A probe changes no setting.
    assert_eq!(after["updated_at"], before["updated_at"]);

    let events = app
        .get_json(&format!("/v1/byok/events/{id}"), &ada.token)
        .await;
    let items = events["items"].as_array().unwrap();
    let tested = &items[items.len() - 2];
    assert_eq!(tested["type"], "byok.tested");
    let data = &tested["data"];
    assert_eq!(data["byok_id"], id);
    assert_eq!(data["ok"], false);
    assert_eq!(data["error"], "rate_limited");
    assert_eq!(data["secret_version"], 1);
    assert_eq!(data["latency_ms"], result["latency_ms"]);
    assert_eq!(data["tested_at"], result["tested_at"]);
    assert!(!events.to_string().contains(KEY), "{events}");

    // A second probe that succeeds replaces the last test.
    let fake_ok = FakeProvider::answering(200).await;
    let mut body = self_hosted("vllm", &format!("{}/v1", fake_ok.url));
    body["credentials"] = json!({"api_key": KEY});
    let other = register_id(&app, &ada.token, &body).await;
    assert_ok(&probe(&app, &ada.token, &other).await);
    assert_ok(&probe(&app, &ada.token, &other).await);
    let (config, tag) = get_config(&app, &ada.token, &other).await;
    assert_eq!(config["last_test"]["ok"], true);
    // The first success also made it healthy: one byok.health_changed.
    assert_eq!(tag, "\"4\"");
}

#[tokio::test]
async fn register_with_test_probes_at_once() {
    let fake = FakeProvider::answering(401).await;
    let (app, ada) = app_with(&[("anthropic", format!("{}/a", fake.url))]).await;
    let body = json!({"provider": "anthropic", "alias": "main", "api_key": KEY, "test": true});
    let (key, tag) = register(&app, &ada.token, &body).await;
    assert_eq!(key["test_result"]["ok"], false, "{key}");
    assert_eq!(key["test_result"]["error"], "invalid_credentials");
    assert_eq!(key["test_result"]["secret_version"], 1);
    // With the byok.health_changed the refusal makes (docs/health.md).
    assert_eq!(tag, "\"3\"");
    assert_eq!(fake.only().header("x-api-key"), Some(KEY));
    let id = key["byok_id"].as_str().unwrap();
    let events = app
        .get_json(&format!("/v1/byok/events/{id}"), &ada.token)
        .await;
    let types: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["byok.registered", "byok.tested", "byok.health_changed"]
    );
    let (config, _) = get_config(&app, &ada.token, id).await;
    assert_eq!(config["last_test"], key["test_result"]);

    // Without `test`, no probe and no test_result.
    let plain = json!({"provider": "anthropic", "alias": "plain", "api_key": KEY});
    let (key, tag) = register(&app, &ada.token, &plain).await;
    assert!(key.get("test_result").is_none(), "{key}");
    assert_eq!(tag, "\"1\"");
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn test_needs_write_scope_its_own_account_and_a_live_credential() {
    let fake = FakeProvider::answering(200).await;
    let (app, ada) = app_with(&[("openai", format!("{}/v1", fake.url))]).await;
    let id = register_id(
        &app,
        &ada.token,
        &super::super::helpers::openai("prod", KEY),
    )
    .await;

    let read = app.mint_token(&ada.token, &["read"]).await;
    let response = probe_response(&app, &read, &id).await;
    assert_error(response, 403, "permission_error", "insufficient_scope").await;

    let bob = app.tenant("bob@example.com").await;
    let response = probe_response(&app, &bob.token, &id).await;
    assert_error(response, 404, "not_found_error", "resource_missing").await;
    let response = probe_response(&app, &ada.token, &missing_id()).await;
    assert_error(response, 404, "not_found_error", "resource_missing").await;

    // If-Match on another revision is a conflict, before anything is sent.
    let path = format!("/v1/byok/test/{id}");
    let response = call(
        &app,
        Method::POST,
        &path,
        Some(&ada.token),
        Some("\"7\""),
        None,
    )
    .await;
    assert_error(response, 409, "conflict_error", "version_conflict").await;

    revoke(&app, &ada.token, &id).await;
    let response = probe_response(&app, &ada.token, &id).await;
    assert_error(response, 409, "conflict_error", "credential_revoked").await;
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_base_urls_and_the_private_url_switch_from_the_environment() {
    let fake = FakeProvider::answering(200).await;
    let dir = tempfile::tempdir().unwrap();
    let master_key = keyledger::crypto::MasterKey::generate().to_base64();
    let mut command = crate::helpers::serve_command(&dir.path().join("data"), master_key.expose());
    command
        .env("KEYLEDGER_OPENAI_BASE_URL", format!("{}/env/v1", fake.url))
        .env("KEYLEDGER_ALLOW_PRIVATE_URLS", "true")
        .env("KEYLEDGER_PROBE_TIMEOUT", "5");
    let server = crate::helpers::Binary::spawn(&mut command, dir.path());
    let client = reqwest::Client::new();
    let account: Value = client
        .post(format!("{}/v1/accounts", server.address))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .json(&json!({"email": "ada@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = crate::helpers::api_key(&account);
    let key: Value = client
        .post(format!("{}/v1/byok/register", server.address))
        .bearer_auth(&token)
        .json(&json!({"provider": "openai", "alias": "prod", "api_key": KEY, "test": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(key["test_result"]["ok"], true, "{key}");
    let seen = fake.only();
    assert_eq!(seen.target, "/env/v1/models");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    drop(server);
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    assert!(!log.contains(KEY), "{log}");
}

#[tokio::test]
async fn a_retried_test_with_its_idempotency_key_probes_once() {
    let fake = FakeProvider::answering(200).await;
    let (app, ada) = app_with(&[("openai", format!("{}/v1", fake.url))]).await;
    let id = register_id(
        &app,
        &ada.token,
        &super::super::helpers::openai("prod", KEY),
    )
    .await;
    let path = format!("/v1/byok/test/{id}");
    let headers = [("Idempotency-Key", "probe-once")];
    let first =
        crate::helpers::send(&app, Method::POST, &path, Some(&ada.token), &headers, None).await;
    assert_eq!(first.status(), 200);
    let first = json_of(first).await;
    let again =
        crate::helpers::send(&app, Method::POST, &path, Some(&ada.token), &headers, None).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(json_of(again).await, first);
    assert_eq!(fake.seen().len(), 1);
}
