//! Vertex's probe authenticates as the service account: an RS256 assertion signed with the
//! account's private key (`jsonwebtoken`), exchanged at the token endpoint for an access token
//! (Google's OAuth 2.0 service-account flow). The endpoint is the server's setting, never the
//! key file's `token_uri`, which the tenant wrote.
//!
//! Must not import storage, service or HTTP.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::{Answer, Method, Request};
use crate::crypto::Redacted;
use crate::domain::credential::ProbeError;

pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The scope the token is asked for: Vertex AI's.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// How long the assertion is valid: Google accepts at most an hour.
const LIFETIME_SECS: i64 = 3600;

#[derive(Deserialize)]
struct ServiceAccount {
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// The token request for `service_account` (the key file's JSON text), dated `now`. A key file
/// that does not parse or a key that does not sign is the credential's fault.
pub fn exchange(
    service_account: &str,
    token_url: &str,
    now: DateTime<Utc>,
) -> Result<Request, ProbeError> {
    let account: ServiceAccount =
        serde_json::from_str(service_account).map_err(|_| ProbeError::InvalidCredentials)?;
    let key = EncodingKey::from_rsa_pem(account.private_key.as_bytes())
        .map_err(|_| ProbeError::InvalidCredentials)?;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = account.private_key_id;
    let iat = now.timestamp();
    let claims = Claims {
        iss: &account.client_email,
        scope: SCOPE,
        aud: token_url,
        iat,
        exp: iat + LIFETIME_SECS,
    };
    let assertion = Redacted::new(
        jsonwebtoken::encode(&header, &claims, &key).map_err(|_| ProbeError::InvalidCredentials)?,
    );
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
        .append_pair("assertion", assertion.expose())
        .finish();
    Ok(Request {
        method: Method::Post,
        url: token_url.to_owned(),
        headers: vec![(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )],
        body: body.into_bytes(),
    })
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
}

/// The access token of the token endpoint's answer. Google refuses a bad assertion with 400
/// (`invalid_grant`) or 401 (`invalid_client`).
pub fn token(answer: &Answer) -> Result<Redacted<String>, ProbeError> {
    match answer.status {
        200..=299 => serde_json::from_slice::<TokenAnswer>(&answer.body)
            .map(|t| Redacted::new(t.access_token))
            .map_err(|_| ProbeError::ProviderError),
        400 | 401 | 403 => Err(ProbeError::InvalidCredentials),
        429 => Err(ProbeError::RateLimited),
        _ => Err(ProbeError::ProviderError),
    }
}
