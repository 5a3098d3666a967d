//! Credential health (docs/health.md, docs/adr/0028): what a probe's result or a gateway's usage
//! outcome says of a credential, and whether that changes its health. Pure: the time, the
//! cooldown and the evidence arrive as arguments.
//!
//! - [`Health`]: `unknown`, `healthy`, `failing`, `rate_limited` (until a cooldown end);
//! - [`Evidence`], built by [`Evidence::from_probe`] and [`Evidence::from_usage`]: what one
//!   observation says, at the time it was made;
//! - [`assess`]: the change the evidence makes to the health held now, if any;
//! - [`HealthChanged`]: the payload of `byok.health_changed`.
//!
//! Must not import crypto, storage, service or HTTP.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::CredentialId;
use crate::domain::credential::{ProbeError, TestResult};
use crate::domain::usage::Outcome;

/// A credential's health. The strings are stable: they are stored in `byok.health_changed`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Nothing is known yet: served.
    #[default]
    Unknown,
    /// The last evidence says the secret works: served.
    Healthy,
    /// The provider refused the secret: not served until a probe or a gateway's call succeeds.
    Failing,
    /// The provider answered 429: not served until the cooldown end (`health_until`).
    RateLimited,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Failing => "failing",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// What the evidence behind a health change was. Stable strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCause {
    /// A probe someone asked for (`POST /v1/byok/test/{id}`, or `test: true` on register).
    Probe,
    /// A gateway's usage report (a record's `outcome`).
    Usage,
    /// A probe the server made on its own (`--probe-interval`).
    PeriodicProbe,
}

impl HealthCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::Usage => "usage",
            Self::PeriodicProbe => "periodic_probe",
        }
    }
}

/// What one observation says of the secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// The provider accepted it (a probe's 2xx, a gateway's `ok`).
    Works,
    /// The provider refused it (401 / 403, `invalid_credentials`).
    Refused,
    /// The provider asked for a pause (429) until `until`.
    RateLimited { until: DateTime<Utc> },
}

/// One observation of a credential, made at `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub signal: Signal,
    /// The probe error or usage outcome that said so; `None` for [`Signal::Works`].
    pub error: Option<ProbeError>,
    pub at: DateTime<Utc>,
    pub cause: HealthCause,
}

impl Evidence {
    /// What a probe found. A timeout, an unreachable provider or any other answer says nothing
    /// of the secret (the provider or the network is down, for every credential alike), so it
    /// is no evidence: the result stays in `last_test` only. A 429 pauses the credential for
    /// `cooldown`.
    pub fn from_probe(
        result: &TestResult,
        cooldown: TimeDelta,
        cause: HealthCause,
    ) -> Option<Self> {
        let at = result.tested_at;
        let signal = match result.error {
            None if result.ok => Signal::Works,
            None => return None,
            Some(ProbeError::InvalidCredentials) => Signal::Refused,
            Some(ProbeError::RateLimited) => Signal::RateLimited {
                until: at + cooldown,
            },
            Some(ProbeError::Timeout | ProbeError::Unreachable | ProbeError::ProviderError) => {
                return None;
            }
        };
        Some(Self {
            signal,
            error: result.error,
            at,
            cause,
        })
    }

    /// What a gateway's call found, at the time it says it happened. `provider_error` says
    /// nothing of the secret, as for probes.
    pub fn from_usage(
        outcome: Outcome,
        occurred_at: DateTime<Utc>,
        cooldown: TimeDelta,
    ) -> Option<Self> {
        let (signal, error) = match outcome {
            Outcome::Ok => (Signal::Works, None),
            Outcome::InvalidCredentials => (Signal::Refused, Some(ProbeError::InvalidCredentials)),
            Outcome::RateLimited => (
                Signal::RateLimited {
                    until: occurred_at + cooldown,
                },
                Some(ProbeError::RateLimited),
            ),
            Outcome::ProviderError => return None,
        };
        Some(Self {
            signal,
            error,
            at: occurred_at,
            cause: HealthCause::Usage,
        })
    }
}

/// A credential's health as it holds it: what [`assess`] compares evidence with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Current {
    pub health: Health,
    pub until: Option<DateTime<Utc>>,
    /// The time of the evidence behind the last change; `None` before any.
    pub changed_at: Option<DateTime<Utc>>,
}

/// A change of health the evidence makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub health: Health,
    pub previous: Health,
    pub until: Option<DateTime<Utc>>,
    pub error: Option<ProbeError>,
    pub cause: HealthCause,
    /// The evidence's time.
    pub changed_at: DateTime<Utc>,
}

/// Whether a rate-limited credential is still cooling down at `now`.
pub fn cooling_down(health: Health, until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    health == Health::RateLimited && until.is_some_and(|u| u > now)
}

/// What `evidence` does to the health `current` at `now`; `None` when nothing changes. The
/// rules (docs/health.md):
///
/// - evidence older than the last change is stale and changes nothing, so a report that
///   arrives late cannot undo a newer probe;
/// - the secret works → `healthy`, from any health (a gateway's success is as strong as a
///   probe's: the provider served the secret);
/// - the secret was refused → `failing`;
/// - a 429 → `rate_limited` until its cooldown end, unless the credential is cooling down
///   already (the first pause stands: concurrent 429s change it once), it is `failing` (a
///   pause says nothing about a refused secret), or the cooldown is over by now.
pub fn assess(current: Current, evidence: &Evidence, now: DateTime<Utc>) -> Option<Change> {
    if current.changed_at.is_some_and(|at| evidence.at < at) {
        return None;
    }
    let (health, until) = match evidence.signal {
        Signal::Works => (Health::Healthy, None),
        Signal::Refused => (Health::Failing, None),
        Signal::RateLimited { until } => {
            if until <= now
                || current.health == Health::Failing
                || cooling_down(current.health, current.until, now)
            {
                return None;
            }
            (Health::RateLimited, Some(until))
        }
    };
    if health == current.health && until == current.until {
        return None;
    }
    Some(Change {
        health,
        previous: current.health,
        until,
        error: evidence.error,
        cause: evidence.cause,
        changed_at: evidence.at,
    })
}

/// `byok.health_changed`: the credential's health changed. Appended only on a change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthChanged {
    pub byok_id: CredentialId,
    pub health: Health,
    pub previous: Health,
    pub cause: HealthCause,
    /// The cooldown end of `rate_limited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The probe error or usage outcome behind `failing` or `rate_limited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeError>,
    /// The time of the evidence.
    pub changed_at: DateTime<Utc>,
}

impl HealthChanged {
    pub fn new(byok_id: CredentialId, change: Change) -> Self {
        Self {
            byok_id,
            health: change.health,
            previous: change.previous,
            cause: change.cause,
            until: change.until,
            error: change.error,
            changed_at: change.changed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(1_700_000_000 + seconds)
    }

    const COOLDOWN: TimeDelta = TimeDelta::seconds(60);

    fn probe(error: Option<ProbeError>, at: i64) -> Evidence {
        let result = TestResult::new(error.map_or(Ok(()), Err), 10, 1, t(at));
        Evidence::from_probe(&result, COOLDOWN, HealthCause::Probe).unwrap()
    }

    fn usage(outcome: Outcome, at: i64) -> Evidence {
        Evidence::from_usage(outcome, t(at), COOLDOWN).unwrap()
    }

    fn held(health: Health, until: Option<i64>, changed_at: i64) -> Current {
        Current {
            health,
            until: until.map(t),
            changed_at: Some(t(changed_at)),
        }
    }

    #[test]
    fn the_strings_are_stable() {
        let all = [
            Health::Unknown,
            Health::Healthy,
            Health::Failing,
            Health::RateLimited,
        ];
        for h in all {
            assert_eq!(serde_json::to_value(h).unwrap(), h.as_str());
        }
        assert_eq!(
            all.map(Health::as_str),
            ["unknown", "healthy", "failing", "rate_limited"]
        );
        let causes = [
            HealthCause::Probe,
            HealthCause::Usage,
            HealthCause::PeriodicProbe,
        ];
        for c in causes {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        assert_eq!(
            causes.map(HealthCause::as_str),
            ["probe", "usage", "periodic_probe"]
        );
        assert_eq!(Health::default(), Health::Unknown);
    }

    #[test]
    fn a_successful_probe_makes_it_healthy() {
        let change = assess(Current::default(), &probe(None, 1), t(1)).unwrap();
        assert_eq!(
            change,
            Change {
                health: Health::Healthy,
                previous: Health::Unknown,
                until: None,
                error: None,
                cause: HealthCause::Probe,
                changed_at: t(1),
            }
        );
        // And from failing: a probe is how a refused credential comes back.
        let back = assess(held(Health::Failing, None, 1), &probe(None, 2), t(2)).unwrap();
        assert_eq!(
            (back.previous, back.health),
            (Health::Failing, Health::Healthy)
        );
    }

    #[test]
    fn a_refused_probe_or_call_makes_it_failing() {
        let p = assess(
            held(Health::Healthy, None, 1),
            &probe(Some(ProbeError::InvalidCredentials), 2),
            t(2),
        )
        .unwrap();
        assert_eq!(p.health, Health::Failing);
        assert_eq!(p.error, Some(ProbeError::InvalidCredentials));
        let u = assess(
            Current::default(),
            &usage(Outcome::InvalidCredentials, 2),
            t(3),
        )
        .unwrap();
        assert_eq!((u.health, u.cause), (Health::Failing, HealthCause::Usage));
        assert_eq!(u.changed_at, t(2), "the evidence's time, not the report's");
    }

    #[test]
    fn a_429_pauses_it_for_the_cooldown() {
        let p = assess(
            held(Health::Healthy, None, 0),
            &probe(Some(ProbeError::RateLimited), 10),
            t(10),
        )
        .unwrap();
        assert_eq!(p.health, Health::RateLimited);
        assert_eq!(p.until, Some(t(70)));
        let u = assess(Current::default(), &usage(Outcome::RateLimited, 10), t(11)).unwrap();
        assert_eq!(u.until, Some(t(70)));
        assert!(cooling_down(u.health, u.until, t(69)));
        assert!(!cooling_down(u.health, u.until, t(70)));
        assert!(!cooling_down(Health::Failing, Some(t(70)), t(1)));
    }

    #[test]
    fn a_429_while_cooling_down_changes_nothing() {
        let cooling = held(Health::RateLimited, Some(70), 10);
        assert_eq!(
            assess(cooling, &usage(Outcome::RateLimited, 20), t(20)),
            None
        );
        // Once the cooldown is over, a new 429 starts a new one.
        let again = assess(cooling, &usage(Outcome::RateLimited, 71), t(71)).unwrap();
        assert_eq!(again.previous, Health::RateLimited);
        assert_eq!(again.until, Some(t(131)));
    }

    #[test]
    fn a_429_leaves_a_failing_credential_failing() {
        assert_eq!(
            assess(
                held(Health::Failing, None, 1),
                &usage(Outcome::RateLimited, 2),
                t(2)
            ),
            None
        );
    }

    #[test]
    fn a_429_whose_cooldown_is_over_changes_nothing() {
        assert_eq!(
            assess(Current::default(), &usage(Outcome::RateLimited, 0), t(60)),
            None
        );
    }

    #[test]
    fn a_gateway_success_brings_a_failing_or_paused_credential_back() {
        for current in [
            held(Health::Failing, None, 1),
            held(Health::RateLimited, Some(61), 1),
            held(Health::RateLimited, Some(61), 1),
        ] {
            let change = assess(current, &usage(Outcome::Ok, 5), t(6)).unwrap();
            assert_eq!(change.health, Health::Healthy);
            assert_eq!(change.until, None);
        }
    }

    #[test]
    fn the_same_health_again_changes_nothing() {
        assert_eq!(
            assess(held(Health::Healthy, None, 1), &usage(Outcome::Ok, 2), t(2)),
            None
        );
        assert_eq!(
            assess(
                held(Health::Failing, None, 1),
                &probe(Some(ProbeError::InvalidCredentials), 2),
                t(2)
            ),
            None
        );
    }

    #[test]
    fn stale_evidence_changes_nothing() {
        // A probe at 10 found it working; a gateway's refusal from 5, reported late, is older.
        let current = held(Health::Healthy, None, 10);
        assert_eq!(
            assess(current, &usage(Outcome::InvalidCredentials, 5), t(11)),
            None
        );
        // Evidence of the same instant counts.
        assert!(assess(current, &usage(Outcome::InvalidCredentials, 10), t(11)).is_some());
    }

    #[test]
    fn outages_say_nothing_of_the_secret() {
        for error in [
            ProbeError::Timeout,
            ProbeError::Unreachable,
            ProbeError::ProviderError,
        ] {
            let result = TestResult::new(Err(error), 10, 1, t(1));
            assert_eq!(
                Evidence::from_probe(&result, COOLDOWN, HealthCause::Probe),
                None
            );
        }
        assert_eq!(
            Evidence::from_usage(Outcome::ProviderError, t(1), COOLDOWN),
            None
        );
    }

    #[test]
    fn the_payload_leaves_out_what_it_does_not_have() {
        let change = assess(Current::default(), &probe(None, 1), t(1)).unwrap();
        let event = HealthChanged::new(CredentialId::from_ulid(1), change);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "byok_id": "byok_00000000000000000000000001",
                "health": "healthy",
                "previous": "unknown",
                "cause": "probe",
                "changed_at": "2023-11-14T22:13:21Z",
            })
        );
        let back: HealthChanged = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
