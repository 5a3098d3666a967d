//! Bedrock's probe is SigV4-signed, by AWS's own signer (`aws-sigv4`): keyledger holds no
//! signing code of its own, so a signature it sends is the one AWS's SDKs send.
//!
//! Must not import storage, service or HTTP.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use chrono::{DateTime, Utc};

use super::{Method, Request};
use crate::domain::credential::ProbeError;

/// The service name Bedrock's control plane signs under.
pub const SERVICE: &str = "bedrock";

pub struct Keys<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub session_token: Option<&'a str>,
}

/// `GET url`, signed for `region` at `now`. A key the signer refuses is the credential's fault.
pub fn signed_get(
    url: &str,
    region: &str,
    keys: &Keys<'_>,
    now: DateTime<Utc>,
) -> Result<Request, ProbeError> {
    let identity: Identity = Credentials::new(
        keys.access_key,
        keys.secret_key,
        keys.session_token.map(str::to_owned),
        None,
        "keyledger",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(SystemTime::from(now))
        .settings(SigningSettings::default())
        .build()
        .map_err(|_| ProbeError::InvalidCredentials)?
        .into();
    let signable = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|_| ProbeError::ProviderError)?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|_| ProbeError::InvalidCredentials)?
        .into_parts();
    let headers = instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    Ok(Request {
        method: Method::Get,
        url: url.to_owned(),
        headers,
        body: Vec::new(),
    })
}
