//! Outbound HTTP: the one client keyledger calls other servers with (provider probes and
//! webhook deliveries), and the requests it sends. The only user of `reqwest`, `aws_sigv4` and
//! `jsonwebtoken` (docs/architecture.md, ADR 0025).
//!
//! The client keeps the SSRF policy of docs/design.md §7: only `http` and `https`; the name is
//! resolved by keyledger's own resolver, which refuses every answer when one of its addresses
//! is forbidden (`policy`) and hands the connector exactly the addresses it checked; an IP
//! literal (decimal and octal forms included, which URL parsing normalises) is checked before
//! anything is sent; no proxy from the environment; no redirects; a connect and a total
//! timeout. `allow_private_urls` lifts the address rule only.
//!
//! - `policy`: which addresses are refused;
//! - `probe`: the probe of each provider family, built as a plain request (pure), sent here;
//! - `bedrock`, `vertex`: their signing and token exchange.
//!
//! Must not import storage, service or HTTP. Secrets arrive wrapped and leave only in the
//! headers of the request that needs them: no error or log line here carries one.

mod bedrock;
pub mod policy;
pub mod probe;
mod vertex;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Longest answer body read from another server; probes need none but a token answer.
const MAX_BODY: usize = 64 * 1024;

/// The outbound settings of the server (flags and environment in `config.rs`).
#[derive(Clone, Debug)]
pub struct OutboundSettings {
    /// Let calls reach loopback, private, link-local and metadata addresses.
    pub allow_private_urls: bool,
    pub connect_timeout: Duration,
    /// The whole call: connection, request and answer.
    pub timeout: Duration,
    /// Provider id -> the base URL its probes use instead of the credential's or the
    /// catalog's (`KEYLEDGER_<PROVIDER>_BASE_URL`).
    pub base_urls: BTreeMap<String, String>,
    /// Where Vertex service-account assertions are exchanged for tokens
    /// (`KEYLEDGER_VERTEX_TOKEN_URL`); Google's endpoint when unset.
    pub vertex_token_url: Option<String>,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for OutboundSettings {
    fn default() -> Self {
        Self {
            allow_private_urls: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            base_urls: BTreeMap::new(),
            vertex_token_url: None,
        }
    }
}

/// Why a call got no answer. Never carries a secret: only the host and the reason.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("{0} is not an http or https URL")]
    Scheme(String),
    #[error("the URL does not parse: {0}")]
    Url(String),
    #[error("{host} is refused: {reason} addresses are not reachable without --allow-private-urls")]
    Refused { host: String, reason: &'static str },
    #[error(
        "plain http is refused: use an https URL (--allow-private-urls lifts this for local receivers)"
    )]
    PlainHttp,
    #[error("no answer in time")]
    Timeout,
    #[error("no connection: {0}")]
    Unreachable(String),
    #[error("the request failed: {0}")]
    Failed(String),
}

/// A request as probes (and later webhooks) build it, pure data. Header values may be secrets:
/// the type has no `Debug`.
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// What came back: the status and at most [`MAX_BODY`] bytes of the body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The outbound client. Cheap to clone.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
    settings: Arc<OutboundSettings>,
}

impl Outbound {
    pub fn new(settings: OutboundSettings) -> Result<Self, OutboundError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy from the environment would be resolved instead of the target, and the
            // address rule would check the proxy.
            .no_proxy()
            .dns_resolver(Arc::new(Vetting {
                allow_private: settings.allow_private_urls,
            }))
            .user_agent(concat!("keyledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OutboundError::Failed(e.to_string()))?;
        Ok(Self {
            client,
            settings: Arc::new(settings),
        })
    }

    pub fn settings(&self) -> &OutboundSettings {
        &self.settings
    }

    /// Checks `url` against the policy as far as it can be without resolving: the scheme, and
    /// an IP literal's address. A name is checked when it is resolved.
    pub fn check_url(&self, url: &str) -> Result<Url, OutboundError> {
        let parsed = Url::parse(url).map_err(|e| OutboundError::Url(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(OutboundError::Scheme(parsed.scheme().to_owned()));
        }
        let ip = match parsed.host() {
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(Host::Domain(_)) => None,
            None => return Err(OutboundError::Url("the URL has no host".into())),
        };
        if let Some(ip) = ip
            && !self.settings.allow_private_urls
            && let Some(reason) = policy::refusal(ip)
        {
            return Err(OutboundError::Refused {
                host: ip.to_string(),
                reason,
            });
        }
        Ok(parsed)
    }

    /// Checks `url` against the policy as a call would, the name resolved as the client would
    /// resolve it: what a URL stored now for later calls (a webhook's) is vetted with. Such a
    /// URL must be `https` (what is sent to it is signed, not hidden), and a name that does not
    /// resolve, or resolves to no address, is refused as unreachable. `allow_private_urls`
    /// (local receivers, development mode) lifts both.
    pub async fn vet(&self, url: &str) -> Result<(), OutboundError> {
        let parsed = self.check_url(url)?;
        if self.settings.allow_private_urls {
            return Ok(());
        }
        if let Some(Host::Domain(name)) = parsed.host() {
            let lookup = tokio::net::lookup_host((name, 0));
            let found: Vec<SocketAddr> =
                tokio::time::timeout(self.settings.connect_timeout, lookup)
                    .await
                    .map_err(|_| OutboundError::Timeout)?
                    .map_err(|e| {
                        OutboundError::Unreachable(format!("{name} does not resolve: {e}"))
                    })?
                    .collect();
            judge_resolved(name, &found)?;
        }
        // After the address rule, so that a private address is refused for what it is.
        if parsed.scheme() != "https" {
            return Err(OutboundError::PlainHttp);
        }
        Ok(())
    }

    /// Sends `request` under the policy and answers the status and the start of the body,
    /// within the client's timeout (`--probe-timeout`).
    pub async fn send(&self, request: Request) -> Result<Answer, OutboundError> {
        self.send_within(request, self.settings.timeout).await
    }

    /// [`Outbound::send`] with its own timeout for the whole call, in place of the client's:
    /// what webhook deliveries use (`--webhook-timeout`), longer or shorter than a probe's.
    pub async fn send_within(
        &self,
        request: Request,
        timeout: Duration,
    ) -> Result<Answer, OutboundError> {
        let url = self.check_url(&request.url)?;
        let method = match request.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
        };
        let mut builder = self.client.request(method, url).timeout(timeout);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if request.method == Method::Post {
            builder = builder.body(request.body);
        }
        let mut response = builder.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() < MAX_BODY {
            match response.chunk().await.map_err(classify)? {
                Some(chunk) => body.extend_from_slice(&chunk),
                None => break,
            }
        }
        body.truncate(MAX_BODY);
        Ok(Answer { status, body })
    }
}

/// What a name's resolution allows: at least one address, and none forbidden.
fn judge_resolved(name: &str, found: &[SocketAddr]) -> Result<(), OutboundError> {
    if found.is_empty() {
        return Err(OutboundError::Unreachable(format!(
            "{name} resolves to no address"
        )));
    }
    match found.iter().find_map(|a| policy::refusal(a.ip())) {
        Some(reason) => Err(OutboundError::Refused {
            host: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The reqwest error as ours, with the resolver's refusal found among its causes.
fn classify(error: reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<RefusedName>() {
            return OutboundError::Refused {
                host: refused.host.clone(),
                reason: refused.reason,
            };
        }
        source = cause.source();
    }
    if error.is_timeout() {
        OutboundError::Timeout
    } else if error.is_connect() {
        // The URL is left out: reqwest's message names it, and a URL may carry a query.
        OutboundError::Unreachable(root_cause(&error))
    } else {
        OutboundError::Failed(root_cause(&error))
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to a {reason} address")]
struct RefusedName {
    host: String,
    reason: &'static str,
}

/// The resolver the client connects through: the system's answer, checked. One forbidden
/// address refuses the name (a mixed answer is how DNS rebinding is attempted); otherwise the
/// connector gets exactly the addresses checked here.
struct Vetting {
    allow_private: bool,
}

impl Resolve for Vetting {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private
                && let Some(reason) = found.iter().find_map(|a| policy::refusal(a.ip()))
            {
                return Err(Box::new(RefusedName { host, reason }) as _);
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> Outbound {
        Outbound::new(OutboundSettings::default()).unwrap()
    }

    #[test]
    fn a_name_must_resolve_to_some_address_and_none_forbidden() {
        let public: SocketAddr = "93.184.215.14:0".parse().unwrap();
        let private: SocketAddr = "10.0.0.1:0".parse().unwrap();
        assert!(matches!(
            judge_resolved("hooks.example.com", &[]),
            Err(OutboundError::Unreachable(_))
        ));
        assert!(judge_resolved("hooks.example.com", &[public]).is_ok());
        assert!(matches!(
            judge_resolved("hooks.example.com", &[public, private]),
            Err(OutboundError::Refused { .. })
        ));
    }

    #[tokio::test]
    async fn a_stored_url_must_be_https_unless_private_urls_are_allowed() {
        let strict = strict();
        assert!(matches!(
            strict.vet("http://93.184.215.14/hook").await,
            Err(OutboundError::PlainHttp)
        ));
        assert!(strict.vet("https://93.184.215.14/hook").await.is_ok());
        // A private address is refused for what it is, whatever its scheme.
        assert!(matches!(
            strict.vet("http://10.0.0.1/hook").await,
            Err(OutboundError::Refused { .. })
        ));
        let local = Outbound::new(OutboundSettings {
            allow_private_urls: true,
            ..OutboundSettings::default()
        })
        .unwrap();
        assert!(local.vet("http://127.0.0.1:8080/hook").await.is_ok());
    }

    #[test]
    fn literals_are_checked_in_every_spelling() {
        let client = strict();
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://127.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://0.0.0.0/",
            "http://0/",
        ] {
            assert!(
                matches!(client.check_url(url), Err(OutboundError::Refused { .. })),
                "{url} must be refused"
            );
        }
        assert!(matches!(
            client.check_url("file:///etc/passwd"),
            Err(OutboundError::Scheme(_))
        ));
        assert!(client.check_url("https://8.8.8.8/").is_ok());
        assert!(client.check_url("https://api.openai.com/v1").is_ok());
    }

    #[test]
    fn allowing_private_urls_lifts_the_address_rule_only() {
        let client = Outbound::new(OutboundSettings {
            allow_private_urls: true,
            ..OutboundSettings::default()
        })
        .unwrap();
        assert!(client.check_url("http://127.0.0.1:8080/").is_ok());
        assert!(matches!(
            client.check_url("ftp://127.0.0.1/"),
            Err(OutboundError::Scheme(_))
        ));
    }
}
