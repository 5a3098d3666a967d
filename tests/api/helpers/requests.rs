//! Requests the `TestApp` methods do not cover: extra headers, raw bodies with any content
//! type, and reading the statuses, headers and bodies of the answers.

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Response};
use serde_json::Value;

use super::TestApp;

/// Sends one request with `headers` as given (verbatim, so malformed values can be sent) and an
/// optional JSON body.
pub async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Response {
    let mut request = app.request(method, path, token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("request")
}

/// Sends `body` as-is, with the given content type (none when `None`).
pub async fn send_raw(
    app: &TestApp,
    method: Method,
    path: impl AsRef<str>,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Response {
    let mut request = app.request(method, path.as_ref(), token).body(body);
    if let Some(content_type) = content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    request.send().await.expect("request")
}

/// A response header as text, if present.
pub fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// The `ETag` header, which must be there.
pub fn etag(response: &Response) -> String {
    response
        .headers()
        .get("etag")
        .expect("ETag header")
        .to_str()
        .expect("ascii ETag")
        .to_owned()
}

pub async fn json_of(response: Response) -> Value {
    response.json().await.expect("json body")
}

/// Asserts the status of a response (naming the request and the body when it is another one)
/// and answers its JSON body.
pub async fn assert_json(response: Response, status: u16) -> Value {
    let path = response.url().path().to_owned();
    let actual = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(actual, status, "{path}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"))
}
