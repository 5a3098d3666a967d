//! The outbound client's SSRF policy on its own (`keyledger::outbound`), against a live fake on
//! 127.0.0.1 that must never be reached while private URLs are not allowed: loopback, private,
//! link-local, metadata, unspecified and IPv4-mapped addresses, decimal, octal and hex
//! spellings of them, and a name that resolves to loopback; redirects are answered, not followed.

use std::time::Duration;

use keyledger::outbound::{Method, Outbound, OutboundError, OutboundSettings, Request};

use crate::helpers::fake_provider::{FakeProvider, Reply};

fn client(allow_private_urls: bool) -> Outbound {
    Outbound::new(OutboundSettings {
        allow_private_urls,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
        ..OutboundSettings::default()
    })
    .unwrap()
}

fn get(url: String) -> Request {
    Request {
        method: Method::Get,
        url,
        headers: vec![("authorization".into(), "Bearer sk-canary-0123456789".into())],
        body: Vec::new(),
    }
}

#[tokio::test]
async fn forbidden_addresses_are_refused_in_every_spelling() {
    let fake = FakeProvider::answering(200).await;
    let port = fake.port;
    let strict = client(false);
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[::ffff:169.254.169.254]/latest/meta-data/".to_owned(),
        "http://2852039166/latest/meta-data/".to_owned(),
        "http://169.254.1.1/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://012.0.0.1/".to_owned(),
        "http://172.16.5.4/".to_owned(),
        "http://192.168.0.1/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        "http://[fe80::1]/".to_owned(),
    ] {
        match strict.send(get(url.clone())).await {
            Err(OutboundError::Refused { .. }) => {}
            other => panic!("{url} must be refused, got {other:?}"),
        }
    }
    assert!(fake.seen().is_empty(), "{:?}", fake.seen());
}

#[tokio::test]
async fn a_refusal_never_names_a_header_value() {
    let strict = client(false);
    let error = strict
        .send(get("http://localhost:9/".into()))
        .await
        .unwrap_err();
    assert!(matches!(error, OutboundError::Refused { .. }), "{error}");
    assert!(!error.to_string().contains("sk-canary"), "{error}");
    assert!(error.to_string().contains("localhost"), "{error}");
}

#[tokio::test]
async fn allowing_private_urls_reaches_the_fake_at_the_checked_address() {
    let fake = FakeProvider::answering(200).await;
    let open = client(true);
    let answer = open
        .send(get(format!("http://localhost:{}/v1/models", fake.port)))
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let seen = fake.only();
    assert_eq!(seen.target, "/v1/models");
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-canary-0123456789")
    );
}

#[tokio::test]
async fn other_schemes_are_refused() {
    for url in ["file:///etc/passwd", "ftp://example.com/", "gopher://x/"] {
        assert!(
            matches!(
                client(true).send(get(url.into())).await,
                Err(OutboundError::Scheme(_))
            ),
            "{url}"
        );
    }
}

#[tokio::test]
async fn a_redirect_is_answered_not_followed() {
    let elsewhere = FakeProvider::answering(200).await;
    let location = format!("{}/secret-place", elsewhere.url);
    let fake = FakeProvider::start(move |_| Reply {
        headers: vec![("location".into(), location.clone())],
        ..Reply::status(307)
    })
    .await;
    let answer = client(true)
        .send(get(format!("{}/v1/models", fake.url)))
        .await
        .unwrap();
    assert_eq!(answer.status, 307);
    assert!(elsewhere.seen().is_empty());
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let fake = FakeProvider::start(|_| Reply {
        delay: Duration::from_secs(5),
        ..Reply::status(200)
    })
    .await;
    let started = std::time::Instant::now();
    let result = client(true).send(get(format!("{}/", fake.url))).await;
    assert!(matches!(result, Err(OutboundError::Timeout)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}
