//! The outcome of a probe: a real, authenticated call to the credential's provider
//! (docs/design.md §3, ADR 0025), as `byok.tested` records it and `last_test` shows it. What a
//! probe sends is the outbound module's business; here is only what it found.
//!
//! Must not import crypto, storage, service or HTTP.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a probe failed. The names are stable: they are stored in `byok.tested`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeError {
    /// The provider refused the secret (401 or 403; for Vertex also a refused token exchange).
    InvalidCredentials,
    /// The provider answered 429.
    RateLimited,
    /// No answer within the probe's time limit.
    Timeout,
    /// No connection: the name did not resolve, the address refused, TLS failed, or the
    /// address is one the outbound policy forbids.
    Unreachable,
    /// Any other answer (a 5xx, a 404, a redirect, an unreadable token answer).
    ProviderError,
}

impl ProbeError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::RateLimited => "rate_limited",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::ProviderError => "provider_error",
        }
    }
}

/// One probe of one secret version: `byok.tested`'s payload after its `byok_id`, and the
/// credential's `last_test`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    pub ok: bool,
    /// From the first byte sent to the answer (for Vertex, the token exchange included).
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeError>,
    /// The secret version the probe used: a probe of a replaced secret says nothing of the
    /// current one.
    pub secret_version: u32,
    pub tested_at: DateTime<Utc>,
}

impl TestResult {
    /// The result of a probe that answered `outcome` after `latency_ms`.
    pub fn new(
        outcome: Result<(), ProbeError>,
        latency_ms: u64,
        secret_version: u32,
        tested_at: DateTime<Utc>,
    ) -> Self {
        Self {
            ok: outcome.is_ok(),
            latency_ms,
            error: outcome.err(),
            secret_version,
            tested_at,
        }
    }
}
