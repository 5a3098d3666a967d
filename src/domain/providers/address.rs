//! Where a provider's API is reached: a credential's `base_url` against its provider's rule, and
//! the checks on any URL a credential carries (base URL, azure `endpoint`): absolute http(s), no
//! user info, query or fragment, and plain `http://` only to local hosts ([`is_local_ip`]).
//!
//! Must not import `domain::credential`, crypto, storage or HTTP; no I/O (host names are never
//! resolved here).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::catalog::{ApiStyle, BaseUrlRule, Provider};
use super::error::FieldError;

/// Longest accepted base URL or endpoint, in characters.
pub const MAX_URL_LEN: usize = 2048;

impl Provider {
    /// Checks a register or update `base_url` against this provider's rule and the plaintext
    /// rule; answers it normalised (see [`validate_url`]).
    pub fn validate_base_url(&self, raw: Option<&str>) -> Result<Option<String>, FieldError> {
        match (self.base_url, raw) {
            (BaseUrlRule::Required, None) => Err(FieldError::new(
                "base_url",
                format!("{} requires a base_url", self.id),
            )),
            (BaseUrlRule::None, Some(_)) => Err(FieldError::new(
                "base_url",
                match self.api {
                    ApiStyle::Azure => format!(
                        "{} takes no base_url; its address is credentials.endpoint",
                        self.id
                    ),
                    ApiStyle::Bedrock | ApiStyle::Vertex => format!(
                        "{} takes no base_url; its address follows from credentials.region",
                        self.id
                    ),
                    _ => format!("{} takes no base_url", self.id),
                },
            )),
            (_, None) => Ok(None),
            (_, Some(raw)) => validate_url("base_url", raw).map(Some),
        }
    }
}

/// Checks a base URL or endpoint and answers it normalised (scheme and host lower-cased, IP
/// literals canonical, default port and trailing `/` dropped), so `{base}/models` joins cleanly.
///
/// Refused: anything but an absolute `http`/`https` URL with a host; user info (`user:pass@`,
/// a secret in a field that is shown); a query or fragment; whitespace; over 2048 characters;
/// and `http://` unless the host is `localhost`, `*.localhost`, or a loopback, private
/// (10/8, 172.16/12, 192.168/16, fc00::/7) or link-local (169.254/16, fe80::/10) IP literal.
/// Host names are not resolved here: a name that resolves to a private address still needs
/// https. The URL is parsed the way the HTTP client will parse it (WHATWG), so the host
/// checked is the host connected to (`http://evil.com\@10.0.0.1/` is evil.com).
pub fn validate_url(param: &str, raw: &str) -> Result<String, FieldError> {
    let invalid = |message: String| FieldError::new(param, message);
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(format!("{param} must not contain whitespace")));
    }
    if raw.chars().count() > MAX_URL_LEN {
        return Err(invalid(format!(
            "{param} must be at most {MAX_URL_LEN} characters"
        )));
    }
    let url = url::Url::parse(raw)
        .map_err(|_| invalid(format!("{param} must be an absolute http(s) URL")))?;
    let https = match url.scheme() {
        "https" => true,
        "http" => false,
        _ => {
            return Err(invalid(format!(
                "{param} must be an http(s) URL (https:// outside local networks)"
            )));
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!(
            "{param} must not contain user info (user:password@); secrets belong in credentials"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(format!(
            "{param} must not have a query string or fragment"
        )));
    }
    let Some(host) = url.host() else {
        return Err(invalid(format!("{param} must name a host")));
    };
    if !https && !plaintext_allowed(&host) {
        return Err(invalid(format!(
            "{param} must use https://; http:// is accepted only for localhost, *.localhost and \
             loopback, private or link-local IP addresses"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn plaintext_allowed(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(domain) => {
            let domain = domain.to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => is_local_ip(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => is_local_ip(IpAddr::V6(*ip)),
    }
}

/// Whether an address is loopback, private (RFC 1918, IPv6 unique-local) or link-local,
/// IPv4-mapped IPv6 addresses judged as their IPv4 address. The unspecified address is not.
pub fn is_local_ip(ip: IpAddr) -> bool {
    fn v4(ip: Ipv4Addr) -> bool {
        ip.is_loopback() || ip.is_private() || ip.is_link_local()
    }
    fn v6(ip: Ipv6Addr) -> bool {
        if let Some(mapped) = ip.to_ipv4_mapped() {
            return v4(mapped);
        }
        let first = ip.segments()[0];
        ip.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
    }
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => v6(ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::providers::test_support::{p, param_of};

    #[test]
    fn base_url_rules_per_provider() {
        assert_eq!(
            p("openai")
                .validate_base_url(Some("https://eu.api.openai.com/v1/"))
                .unwrap(),
            Some("https://eu.api.openai.com/v1".to_owned())
        );
        assert_eq!(p("openai").validate_base_url(None).unwrap(), None);
        for id in ["azure", "bedrock", "vertex"] {
            assert_eq!(
                param_of(p(id).validate_base_url(Some("https://example.com"))),
                "base_url"
            );
        }
        assert_eq!(
            param_of(p("self_hosted").validate_base_url(None)),
            "base_url"
        );
        assert_eq!(
            p("self_hosted")
                .validate_base_url(Some("http://localhost:11434/v1"))
                .unwrap(),
            Some("http://localhost:11434/v1".to_owned())
        );
    }

    #[test]
    fn plaintext_http_only_for_local_hosts() {
        let accepted = [
            "http://localhost:8000/v1",
            "http://LOCALHOST",
            "http://vllm.localhost/v1",
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://10.1.2.3/v1",
            "http://172.16.0.1",
            "http://172.31.255.255",
            "http://192.168.1.10:11434",
            "http://169.254.10.10",
            "http://[::1]:8000",
            "http://[fd00::1]",
            "http://[fc00::1]",
            "http://[fe80::1]",
            "http://[::ffff:10.0.0.1]",
            // WHATWG reads these as 127.0.0.1, as the HTTP client will.
            "http://0x7f.1",
            "http://2130706433",
            "https://api.example.com/v1",
            "https://203.0.113.9:8443",
        ];
        for url in accepted {
            assert!(validate_url("base_url", url).is_ok(), "{url}");
        }
        let refused = [
            "http://api.example.com/v1",
            "http://8.8.8.8",
            "http://172.32.0.1",
            "http://172.15.255.255",
            "http://192.169.0.1",
            "http://0.0.0.0",
            "http://[::]",
            "http://[2001:db8::1]",
            "http://[fec0::1]",
            "http://localhost.evil.com",
            "http://localhost.",
            "http://evil.com\\@10.0.0.1/",
            "http://evil.com#@10.0.0.1",
            "ftp://localhost/",
            "file:///etc/passwd",
            "localhost:8000",
            "/v1",
            "",
            "https://",
            "https://user:pass@api.example.com",
            "https://token@api.example.com",
            "https://api.example.com/v1?key=abc",
            "https://api.example.com/v1#frag",
            "https://api.example.com/ v1",
            "https://api.example.com/\nv1",
        ];
        for url in refused {
            assert_eq!(param_of(validate_url("base_url", url)), "base_url", "{url}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(validate_url("base_url", &long).is_err());
    }

    #[test]
    fn url_errors_never_echo_user_info() {
        let Err(FieldError { message, .. }) =
            validate_url("base_url", "https://admin:hunter2@example.com")
        else {
            panic!()
        };
        assert!(!message.contains("hunter2"));
    }
}
