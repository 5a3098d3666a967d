//! The API's views of credential health (docs/health.md): `health` and `health_cause` as
//! `ByokConfig` shows them, and the payload of `byok.health_changed` (for the event catalogue
//! and webhook bodies). Each serialises exactly as its domain source does (the tests below hold
//! that), so `domain` knows nothing of utoipa.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::byok::ProbeErrorView;
use crate::domain::health::{Health, HealthCause, HealthChanged};

/// A credential's health. `rate_limited` lasts until `health_until`; after that resolve serves
/// the credential again, and the next probe or usage outcome sets its health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = CredentialHealth)]
pub enum HealthView {
    /// Nothing is known yet: served.
    Unknown,
    /// The last evidence says the secret works: served.
    Healthy,
    /// The provider refused the secret: not served until a probe or a gateway's call succeeds.
    Failing,
    /// The provider answered 429: not served until `health_until`.
    RateLimited,
}

impl From<Health> for HealthView {
    fn from(h: Health) -> Self {
        match h {
            Health::Unknown => Self::Unknown,
            Health::Healthy => Self::Healthy,
            Health::Failing => Self::Failing,
            Health::RateLimited => Self::RateLimited,
        }
    }
}

/// What the evidence behind a change of health was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = HealthCause)]
pub enum HealthCauseView {
    /// A probe someone asked for (`POST /v1/byok/test/{id}`, or `test: true` on register).
    Probe,
    /// A gateway's usage report (a record's `outcome`).
    Usage,
    /// A probe the server made on its own (`--probe-interval`).
    PeriodicProbe,
}

impl From<HealthCause> for HealthCauseView {
    fn from(c: HealthCause) -> Self {
        match c {
            HealthCause::Probe => Self::Probe,
            HealthCause::Usage => Self::Usage,
            HealthCause::PeriodicProbe => Self::PeriodicProbe,
        }
    }
}

/// The payload of `byok.health_changed`: the credential's health changed (appended only on a
/// change).
#[derive(Clone, Serialize, ToSchema)]
#[schema(as = HealthChanged, example = json!({"byok_id": "byok_01JD5Q3M8X2Y4Z6A7B8C9D0E1H",
    "health": "failing", "previous": "healthy", "cause": "usage",
    "error": "invalid_credentials", "changed_at": "2026-11-23T10:00:00Z"}))]
pub struct HealthChangedView {
    pub byok_id: String,
    pub health: HealthView,
    pub previous: HealthView,
    pub cause: HealthCauseView,
    /// The cooldown end of `rate_limited`; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The probe error or usage outcome behind `failing` or `rate_limited`; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeErrorView>,
    /// The time of the evidence (the probe's, or the usage record's `occurred_at`).
    pub changed_at: DateTime<Utc>,
}

impl From<HealthChanged> for HealthChangedView {
    fn from(e: HealthChanged) -> Self {
        let HealthChanged {
            byok_id,
            health,
            previous,
            cause,
            until,
            error,
            changed_at,
        } = e;
        Self {
            byok_id: byok_id.into(),
            health: health.into(),
            previous: previous.into(),
            cause: cause.into(),
            until,
            error: error.map(ProbeErrorView::from),
            changed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::domain::CredentialId;
    use crate::domain::credential::ProbeError;

    #[test]
    fn views_serialise_as_their_sources() {
        for h in [
            Health::Unknown,
            Health::Healthy,
            Health::Failing,
            Health::RateLimited,
        ] {
            assert_eq!(
                serde_json::to_value(HealthView::from(h)).unwrap(),
                serde_json::to_value(h).unwrap()
            );
        }
        for c in [
            HealthCause::Probe,
            HealthCause::Usage,
            HealthCause::PeriodicProbe,
        ] {
            assert_eq!(
                serde_json::to_value(HealthCauseView::from(c)).unwrap(),
                serde_json::to_value(c).unwrap()
            );
        }
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let event = HealthChanged {
            byok_id: CredentialId::from_ulid(1),
            health: Health::RateLimited,
            previous: Health::Healthy,
            cause: HealthCause::PeriodicProbe,
            until: Some(at + TimeDelta::seconds(60)),
            error: Some(ProbeError::RateLimited),
            changed_at: at,
        };
        assert_eq!(
            serde_json::to_value(HealthChangedView::from(event.clone())).unwrap(),
            serde_json::to_value(&event).unwrap()
        );
        let schema =
            serde_json::to_value(<HealthChangedView as utoipa::PartialSchema>::schema()).unwrap();
        let properties: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let fields = serde_json::to_value(&event).unwrap();
        let fields: Vec<&String> = fields.as_object().unwrap().keys().collect();
        let (mut properties, mut fields) = (properties, fields);
        properties.sort();
        fields.sort();
        assert_eq!(properties, fields);
    }
}
