//! Probes: one real, authenticated, cheap call per provider family that proves a secret works
//! (docs/design.md §3, ADR 0025). [`plan`] builds the call from the credential's provider,
//! settings and secret fields, pure; [`Outbound::probe`] sends it and classifies the answer.
//!
//! | family | call | secret in |
//! |---|---|---|
//! | OpenAI-compatible (openai, together, groq, mistral, deepseek, openrouter, self_hosted) | `GET {base}/models` | `Authorization: Bearer` |
//! | sarvam | `GET {base}/v1/models` | `Authorization: Bearer` and `api-subscription-key` |
//! | anthropic | `GET {base}/v1/models` | `x-api-key`, with `anthropic-version` |
//! | cohere | `GET {base}/v1/models` | `Authorization: Bearer` |
//! | azure | `GET {endpoint}/openai/deployments?api-version=…` | `api-key` |
//! | bedrock | `GET https://bedrock.{region}.amazonaws.com/foundation-models` | SigV4 |
//! | vertex | `GET https://{region}-aiplatform.googleapis.com/v1/projects/{p}/locations/{region}/models` | a token from the service account's signed assertion |
//!
//! The base URL is the server's override for the provider (`KEYLEDGER_<PROVIDER>_BASE_URL`),
//! else the credential's `base_url`, else the catalog's.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{Method, Outbound, OutboundError, OutboundSettings, Request, bedrock, vertex};
use crate::crypto::Redacted;
use crate::domain::credential::ProbeError;
use crate::domain::providers::{self, ApiStyle};

/// The `anthropic-version` probes send: the API version the models list is documented for.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// What a probe needs of a credential: no id, no state, only what the call is built from.
pub struct Target<'a> {
    pub provider: &'a str,
    pub base_url: Option<&'a str>,
    pub settings: &'a BTreeMap<String, String>,
    pub secrets: &'a Redacted<BTreeMap<String, String>>,
}

/// A probe, ready to send: one request, or for Vertex the token exchange first.
pub enum Plan {
    Call(Request),
    /// Exchange `assertion` at the token endpoint, then send `then` with the token.
    Vertex {
        exchange: Request,
        then: Request,
    },
}

/// The outcome of one probe and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub result: Result<(), ProbeError>,
    pub latency_ms: u64,
}

fn secret<'a>(target: &'a Target<'_>, name: &str) -> Result<&'a str, ProbeError> {
    target
        .secrets
        .expose()
        .get(name)
        .map(String::as_str)
        .ok_or(ProbeError::InvalidCredentials)
}

fn setting<'a>(target: &'a Target<'_>, name: &str) -> Result<&'a str, ProbeError> {
    target
        .settings
        .get(name)
        .map(String::as_str)
        .ok_or(ProbeError::ProviderError)
}

/// `base` and `path` joined with exactly one `/`.
fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

fn get(url: String, headers: Vec<(String, String)>) -> Request {
    Request {
        method: Method::Get,
        url,
        headers,
        body: Vec::new(),
    }
}

fn header(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_owned(), value.into())
}

/// Builds the probe of `target`. Pure but for `now`, which signatures and assertions are
/// dated with. An error is the probe's outcome already (a credential that cannot even be
/// turned into a call).
pub fn plan(
    target: &Target<'_>,
    settings: &OutboundSettings,
    now: DateTime<Utc>,
) -> Result<Plan, ProbeError> {
    let provider = providers::get(target.provider).ok_or(ProbeError::ProviderError)?;
    let overridden = settings.base_urls.get(provider.id).map(String::as_str);
    let base = overridden.or(target.base_url).or(provider.default_base_url);
    let needs_base = || base.ok_or(ProbeError::ProviderError);
    let plan = match provider.api {
        ApiStyle::OpenAi => {
            let mut headers = Vec::new();
            // self_hosted servers may run without a key.
            if let Some(key) = target.secrets.expose().get("api_key") {
                headers.push(header("authorization", format!("Bearer {key}")));
            }
            if let Some(org) = target.settings.get("organization") {
                headers.push(header("openai-organization", org.as_str()));
            }
            if let Some(project) = target.settings.get("project") {
                headers.push(header("openai-project", project.as_str()));
            }
            Plan::Call(get(join(needs_base()?, "models"), headers))
        }
        ApiStyle::Sarvam => {
            let key = secret(target, "api_key")?;
            Plan::Call(get(
                join(needs_base()?, "v1/models"),
                vec![
                    header("authorization", format!("Bearer {key}")),
                    header("api-subscription-key", key),
                ],
            ))
        }
        ApiStyle::Anthropic => Plan::Call(get(
            join(needs_base()?, "v1/models"),
            vec![
                header("x-api-key", secret(target, "api_key")?),
                header("anthropic-version", ANTHROPIC_VERSION),
            ],
        )),
        ApiStyle::Cohere => Plan::Call(get(
            join(needs_base()?, "v1/models"),
            vec![header(
                "authorization",
                format!("Bearer {}", secret(target, "api_key")?),
            )],
        )),
        ApiStyle::Azure => {
            let endpoint = match overridden {
                Some(base) => base,
                None => setting(target, "endpoint")?,
            };
            let version = setting(target, "api_version")?;
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("api-version", version)
                .finish();
            Plan::Call(get(
                format!("{}?{query}", join(endpoint, "openai/deployments")),
                vec![header("api-key", secret(target, "api_key")?)],
            ))
        }
        ApiStyle::Bedrock => {
            let region = setting(target, "region")?;
            let base = match overridden {
                Some(base) => base.to_owned(),
                None => format!("https://bedrock.{region}.amazonaws.com"),
            };
            let keys = bedrock::Keys {
                access_key: secret(target, "access_key")?,
                secret_key: secret(target, "secret_key")?,
                session_token: target
                    .secrets
                    .expose()
                    .get("session_token")
                    .map(String::as_str),
            };
            Plan::Call(bedrock::signed_get(
                &join(&base, "foundation-models"),
                region,
                &keys,
                now,
            )?)
        }
        ApiStyle::Vertex => {
            let project = setting(target, "project_id")?;
            let region = setting(target, "region")?;
            let base = match overridden {
                Some(base) => base.to_owned(),
                None => format!("https://{region}-aiplatform.googleapis.com"),
            };
            let token_url = settings
                .vertex_token_url
                .as_deref()
                .unwrap_or(vertex::GOOGLE_TOKEN_URL);
            let account = secret(target, "service_account_json")?;
            let exchange = vertex::exchange(account, token_url, now)?;
            // The project id is a path segment, escaped as one: it cannot reach another path.
            let mut url = url::Url::parse(&base).map_err(|_| ProbeError::ProviderError)?;
            url.path_segments_mut()
                .map_err(|_| ProbeError::ProviderError)?
                .pop_if_empty()
                .extend(["v1", "projects", project, "locations", region, "models"]);
            url.set_query(Some("pageSize=1"));
            let then = get(url.into(), Vec::new());
            Plan::Vertex { exchange, then }
        }
    };
    Ok(plan)
}

/// The class of a provider's answer.
pub fn classify(status: u16) -> Result<(), ProbeError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(ProbeError::InvalidCredentials),
        429 => Err(ProbeError::RateLimited),
        // Redirects are not followed: a provider that moved is a provider error.
        _ => Err(ProbeError::ProviderError),
    }
}

fn failure(error: &OutboundError) -> ProbeError {
    match error {
        OutboundError::Timeout => ProbeError::Timeout,
        OutboundError::Refused { .. } | OutboundError::Unreachable(_) => ProbeError::Unreachable,
        OutboundError::Scheme(_) | OutboundError::Url(_) | OutboundError::PlainHttp => {
            ProbeError::Unreachable
        }
        OutboundError::Failed(_) => ProbeError::ProviderError,
    }
}

impl Outbound {
    /// Probes `target`: builds the call, sends it, classifies the answer. Never fails: every
    /// failure is an outcome. A refusal by the address rule is logged at INFO (host and reason, never
    /// the request), since the outcome alone says only `unreachable`.
    pub async fn probe(&self, target: &Target<'_>, now: DateTime<Utc>) -> Outcome {
        let started = Instant::now();
        let result = self.run(target, now).await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Outcome { result, latency_ms }
    }

    async fn run(&self, target: &Target<'_>, now: DateTime<Utc>) -> Result<(), ProbeError> {
        let sent = |request| async {
            self.send(request).await.map_err(|error| {
                tracing::info!(provider = target.provider, %error, "probe got no answer");
                failure(&error)
            })
        };
        match plan(target, self.settings(), now)? {
            Plan::Call(request) => classify(sent(request).await?.status),
            Plan::Vertex { exchange, mut then } => {
                let answer = sent(exchange).await?;
                let token = vertex::token(&answer)?;
                then.headers.push(header(
                    "authorization",
                    format!("Bearer {}", token.expose()),
                ));
                classify(sent(then).await?.status)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> Redacted<BTreeMap<String, String>> {
        Redacted::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn call(plan: Plan) -> Request {
        match plan {
            Plan::Call(request) => request,
            Plan::Vertex { .. } => panic!("expected one call"),
        }
    }

    #[test]
    fn openai_compatible_probes_list_models_with_a_bearer_token() {
        let settings = BTreeMap::new();
        let secrets = secrets(&[("api_key", "sk-test-1234")]);
        for (provider, url) in [
            ("openai", "https://api.openai.com/v1/models"),
            ("groq", "https://api.groq.com/openai/v1/models"),
            ("mistral", "https://api.mistral.ai/v1/models"),
        ] {
            let target = Target {
                provider,
                base_url: None,
                settings: &settings,
                secrets: &secrets,
            };
            let request = call(plan(&target, &OutboundSettings::default(), Utc::now()).unwrap());
            assert_eq!(request.url, url);
            assert_eq!(
                request.headers,
                [header("authorization", "Bearer sk-test-1234")]
            );
        }
    }

    #[test]
    fn the_servers_override_wins_over_the_credentials_base_url() {
        let settings = BTreeMap::new();
        let secrets = secrets(&[("api_key", "sk-ant-1234")]);
        let target = Target {
            provider: "anthropic",
            base_url: Some("https://proxy.example.com"),
            settings: &settings,
            secrets: &secrets,
        };
        let own = call(plan(&target, &OutboundSettings::default(), Utc::now()).unwrap());
        assert_eq!(own.url, "https://proxy.example.com/v1/models");
        let outbound = OutboundSettings {
            base_urls: [("anthropic".to_owned(), "http://127.0.0.1:9/".to_owned())].into(),
            ..OutboundSettings::default()
        };
        let overridden = call(plan(&target, &outbound, Utc::now()).unwrap());
        assert_eq!(overridden.url, "http://127.0.0.1:9/v1/models");
        assert!(
            overridden
                .headers
                .contains(&header("x-api-key", "sk-ant-1234"))
        );
        assert!(
            overridden
                .headers
                .contains(&header("anthropic-version", ANTHROPIC_VERSION))
        );
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200), Ok(()));
        assert_eq!(classify(401), Err(ProbeError::InvalidCredentials));
        assert_eq!(classify(403), Err(ProbeError::InvalidCredentials));
        assert_eq!(classify(429), Err(ProbeError::RateLimited));
        assert_eq!(classify(302), Err(ProbeError::ProviderError));
        assert_eq!(classify(500), Err(ProbeError::ProviderError));
    }

    #[test]
    fn a_vertex_project_id_stays_one_path_segment() {
        let settings = [
            ("project_id".to_owned(), "acme/../../other?x=1".to_owned()),
            ("region".to_owned(), "us-central1".to_owned()),
        ]
        .into();
        let key = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/probes/vertex-test-key.pem"
        ));
        let account = serde_json::json!({"type": "service_account", "private_key": key,
            "client_email": "p@acme.iam.gserviceaccount.com", "private_key_id": "k1"})
        .to_string();
        let secrets = secrets(&[("service_account_json", &account)]);
        let target = Target {
            provider: "vertex",
            base_url: None,
            settings: &settings,
            secrets: &secrets,
        };
        let Ok(Plan::Vertex { exchange, then }) =
            plan(&target, &OutboundSettings::default(), Utc::now())
        else {
            panic!("a vertex plan");
        };
        assert_eq!(exchange.url, vertex::GOOGLE_TOKEN_URL);
        assert_eq!(
            then.url,
            "https://us-central1-aiplatform.googleapis.com/v1/projects/acme%2F..%2F..%2Fother%3Fx=1/locations/us-central1/models?pageSize=1"
        );
        // An unreadable key file is the credential's fault.
        let broken = secrets_of("{}");
        let target = Target {
            secrets: &broken,
            ..target
        };
        assert_eq!(
            plan(&target, &OutboundSettings::default(), Utc::now()).err(),
            Some(ProbeError::InvalidCredentials)
        );
    }

    fn secrets_of(account: &str) -> Redacted<BTreeMap<String, String>> {
        secrets(&[("service_account_json", account)])
    }
}
