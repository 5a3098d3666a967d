//! The credential's events and their payloads, as stored in the log. Type strings
//! (`byok.registered`…) and payload shapes are never changed in place: a new shape needs an
//! upcaster and a fixture (see docs/events.md).
//!
//! Must not import crypto, storage or HTTP.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use super::rotation::{Rotated, RotationStaged, SecretRetired};
use super::{Binding, CredentialProfile, TestResult};
use crate::domain::usage::{Quota, QuotaWindow};
use crate::domain::{AccountId, CredentialId};
use crate::es::DomainEvent;

/// `byok.registered`: the whole credential as registered. Carries the sealed secret (ciphertext
/// bound to this credential; unreadable once revocation shreds its key) and the hint, never a
/// plaintext secret. Feeds and webhooks leave `sealed_secret` out (see
/// [`crate::domain::PRIVATE_FIELDS`]).
///
/// The payload's keys are fixed by the events already stored: `byok_id`, `account_id`, the
/// profile's fields in their order, then `sealed_secret`, `secret_hint`, `created_at` (the
/// tests below hold it to the recorded bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub byok_id: CredentialId,
    pub account_id: AccountId,
    #[serde(flatten)]
    pub profile: CredentialProfile,
    pub sealed_secret: String,
    pub secret_hint: String,
    pub created_at: DateTime<Utc>,
}

/// `byok.updated`: only the fields that changed. For the clearable ones `null` means cleared
/// and absence means unchanged; in `settings`, `null` means the field was removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Updated {
    pub byok_id: CredentialId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub label: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub base_url: Option<Option<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub declared_region: Option<Option<String>>,
    /// Set when `declared_region` changed the effective residency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blacklisted_models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, Option<String>>,
    /// The whole new model map (`{}` when it was cleared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_map: Option<BTreeMap<String, String>>,
    pub updated_at: DateTime<Utc>,
}

impl Updated {
    /// An update of `byok_id` at `updated_at` that changes nothing yet, to fill in.
    pub fn new(byok_id: CredentialId, updated_at: DateTime<Utc>) -> Self {
        Self {
            byok_id,
            alias: None,
            label: None,
            base_url: None,
            declared_region: None,
            residency: None,
            models: None,
            blacklisted_models: None,
            weight: None,
            settings: BTreeMap::new(),
            model_map: None,
            updated_at,
        }
    }

    /// Sets each changed field of `profile`.
    pub(super) fn apply_to(&self, profile: &mut CredentialProfile) {
        fn set<T: Clone>(target: &mut T, change: &Option<T>) {
            if let Some(value) = change {
                *target = value.clone();
            }
        }
        set(&mut profile.alias, &self.alias);
        set(&mut profile.label, &self.label);
        set(&mut profile.base_url, &self.base_url);
        set(&mut profile.declared_region, &self.declared_region);
        set(&mut profile.residency, &self.residency);
        set(&mut profile.models, &self.models);
        set(&mut profile.blacklisted_models, &self.blacklisted_models);
        set(&mut profile.weight, &self.weight);
        set(&mut profile.model_map, &self.model_map);
        for (name, value) in &self.settings {
            match value {
                Some(value) => profile.settings.insert(name.clone(), value.clone()),
                None => profile.settings.remove(name),
            };
        }
    }

    pub(super) fn changes_nothing(&self) -> bool {
        self.alias.is_none()
            && self.label.is_none()
            && self.base_url.is_none()
            && self.declared_region.is_none()
            && self.residency.is_none()
            && self.models.is_none()
            && self.blacklisted_models.is_none()
            && self.weight.is_none()
            && self.settings.is_empty()
            && self.model_map.is_none()
    }
}

/// `byok.bound`: a binding added to the credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    pub byok_id: CredentialId,
    pub binding: Binding,
    pub bound_at: DateTime<Utc>,
}

/// `byok.unbound`: the bindings whose `capability` and `module` equal `binding`'s (which has no
/// `model`), removed; `removed` lists them, models included, so a reader of the feed needs no
/// earlier state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unbound {
    pub byok_id: CredentialId,
    pub binding: Binding,
    pub removed: Vec<Binding>,
    pub unbound_at: DateTime<Utc>,
}

/// A field that is present deserialises to `Some`, even when it is `null` (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CredentialEvent {
    #[serde(rename = "byok.registered")]
    Registered(Box<Registered>),
    #[serde(rename = "byok.updated")]
    Updated(Box<Updated>),
    #[serde(rename = "byok.enabled")]
    Enabled {
        byok_id: CredentialId,
        enabled_at: DateTime<Utc>,
    },
    #[serde(rename = "byok.disabled")]
    Disabled {
        byok_id: CredentialId,
        disabled_at: DateTime<Utc>,
    },
    #[serde(rename = "byok.revoked")]
    Revoked {
        byok_id: CredentialId,
        revoked_at: DateTime<Utc>,
    },
    // Bindings.
    #[serde(rename = "byok.bound")]
    Bound(Box<Bound>),
    #[serde(rename = "byok.unbound")]
    Unbound(Box<Unbound>),
    // Quotas (docs/usage.md).
    /// The quota set, or removed (`quota: null`).
    #[serde(rename = "byok.quota_set")]
    QuotaSet {
        byok_id: CredentialId,
        quota: Option<Quota>,
        set_at: DateTime<Utc>,
    },
    #[serde(rename = "byok.quota_exceeded")]
    QuotaExceeded(Box<QuotaExceededEvent>),
    // Probes (docs/design.md §3).
    #[serde(rename = "byok.tested")]
    Tested(Box<Tested>),
    // Rotation (docs/rotation.md).
    #[serde(rename = "byok.rotated")]
    Rotated(Box<Rotated>),
    #[serde(rename = "byok.rotation_staged")]
    RotationStaged(Box<RotationStaged>),
    #[serde(rename = "byok.secret_retired")]
    SecretRetired(Box<SecretRetired>),
    // Health (docs/health.md).
    #[serde(rename = "byok.health_changed")]
    HealthChanged(Box<crate::domain::health::HealthChanged>),
}

/// `byok.tested`: a probe of the credential's secret version `secret_version`, and what it
/// found. Never the secret, nor anything the provider answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tested {
    pub byok_id: CredentialId,
    #[serde(flatten)]
    pub result: TestResult,
}

/// `byok.quota_exceeded`: the credential's usage reached its quota in the window starting at
/// `window_start`; resolve leaves it out until `until`. Appended once per window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaExceededEvent {
    pub byok_id: CredentialId,
    pub window: QuotaWindow,
    pub window_start: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub spend_micros: u64,
    pub calls: u64,
    pub exceeded_at: DateTime<Utc>,
}

impl DomainEvent for CredentialEvent {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::credential::Credential;
    use crate::domain::credential::testing::{byok, registered, t};
    use crate::es::Aggregate;

    #[test]
    fn event_type_strings_are_stable() {
        let registered = registered();
        let types: Vec<String> = registered
            .iter()
            .cloned()
            .chain([
                CredentialEvent::Updated(Box::new(Updated {
                    weight: Some(1),
                    ..Updated::new(byok(), t(1))
                })),
                CredentialEvent::Enabled {
                    byok_id: byok(),
                    enabled_at: t(1),
                },
                CredentialEvent::Disabled {
                    byok_id: byok(),
                    disabled_at: t(1),
                },
                CredentialEvent::Revoked {
                    byok_id: byok(),
                    revoked_at: t(1),
                },
                CredentialEvent::Bound(Box::new(Bound {
                    byok_id: byok(),
                    binding: Binding {
                        capability: Some("chat".into()),
                        module: None,
                        model: Some("gpt-4o".into()),
                    },
                    bound_at: t(1),
                })),
                CredentialEvent::Unbound(Box::new(Unbound {
                    byok_id: byok(),
                    binding: Binding {
                        capability: Some("chat".into()),
                        module: None,
                        model: None,
                    },
                    removed: vec![],
                    unbound_at: t(1),
                })),
                CredentialEvent::QuotaSet {
                    byok_id: byok(),
                    quota: None,
                    set_at: t(1),
                },
                CredentialEvent::QuotaExceeded(Box::new(QuotaExceededEvent {
                    byok_id: byok(),
                    window: QuotaWindow::Mtd,
                    window_start: t(0),
                    until: t(2),
                    spend_micros: 1,
                    calls: 1,
                    exceeded_at: t(1),
                })),
                CredentialEvent::Tested(Box::new(Tested {
                    byok_id: byok(),
                    result: crate::domain::credential::TestResult::new(
                        Err(crate::domain::credential::ProbeError::RateLimited),
                        12,
                        1,
                        t(1),
                    ),
                })),
                CredentialEvent::HealthChanged(Box::new(crate::domain::health::HealthChanged {
                    byok_id: byok(),
                    health: crate::domain::health::Health::RateLimited,
                    previous: crate::domain::health::Health::Healthy,
                    cause: crate::domain::health::HealthCause::Usage,
                    until: Some(t(2)),
                    error: Some(crate::domain::credential::ProbeError::RateLimited),
                    changed_at: t(1),
                })),
            ])
            .map(|e| {
                let new = e.to_new_event().unwrap();
                // Every payload names its credential, so webhook receivers need no lookup.
                assert!(new.data["byok_id"].is_string(), "{new:?}");
                let back: CredentialEvent = serde_json::from_value(
                    serde_json::json!({"type": new.event_type, "data": new.data}),
                )
                .unwrap();
                assert_eq!(back, e);
                new.event_type
            })
            .collect();
        assert_eq!(
            types,
            [
                "byok.registered",
                "byok.updated",
                "byok.enabled",
                "byok.disabled",
                "byok.revoked",
                "byok.bound",
                "byok.unbound",
                "byok.quota_set",
                "byok.quota_exceeded",
                "byok.tested",
                "byok.health_changed",
            ]
        );
        assert_eq!(<Credential as Aggregate>::KIND, "byok");
    }

    /// The first recorded fixture (`byok.registered`) as the writer stores it: the build before
    /// the profile was one type wrote these bytes for it. The payload goes through serde_json's
    /// map, which orders its keys; the fixture file itself lists them in another order.
    const RECORDED_REGISTERED: &str = r#"{"event_id":"01M8417NXB75JJQ5RNTZ5FJZ3N","position":3,"stream":"byok:byok_01M8417NX9R4XXJMXCTVHRHG8Z","version":1,"type":"byok.registered","schema":1,"occurred_at":"2026-11-23T11:04:07.851112844Z","actor":"kl_b557ea600","request_id":"req_01M8417NX78KPWG52CWE4K4F5V","data":{"account_id":"acct_01M8417NK2K1W3DW1QVNJ69AEX","alias":"prod-eu","base_url":null,"bindings":[{"capability":"chat"}],"blacklisted_models":[],"byok_id":"byok_01M8417NX9R4XXJMXCTVHRHG8Z","created_at":"2026-11-23T11:04:07.849696357Z","declared_region":"eu-west","label":"EU traffic","models":["gpt-4o"],"provider":"azure","residency":"eu-west","sealed_secret":"AVx0c3RhbmQtaW4gY2lwaGVydGV4dCwgbm90IGEgcmVhbCBzZWFsZWQgc2VjcmV0","secret_hint":"1234","settings":{"api_version":"2024-06-01","deployments":"gpt-4o,gpt-4o-mini","endpoint":"https://example-eu.openai.azure.com"},"weight":100}}"#;

    /// `Registered` serialised on its own, field order kept, as the build before wrote it:
    /// the order a serializer that keeps it (and every reader of the struct) sees.
    const REGISTERED_FIELDS_IN_ORDER: &str = r#"{"byok_id":"byok_00000000000000000000000001","account_id":"acct_00000000000000000000000001","provider":"openai","alias":"prod-main","label":"Production","base_url":null,"declared_region":null,"residency":"global","models":["gpt-4o","gpt-4o-mini"],"blacklisted_models":[],"weight":100,"bindings":[{"capability":"chat"}],"settings":{},"sealed_secret":"c2VhbGVk","secret_hint":"WXYZ","created_at":"2023-11-14T22:13:20Z"}"#;

    /// What the build before stored as the payload of that same event.
    const REGISTERED_PAYLOAD: &str = r#"{"account_id":"acct_00000000000000000000000001","alias":"prod-main","base_url":null,"bindings":[{"capability":"chat"}],"blacklisted_models":[],"byok_id":"byok_00000000000000000000000001","created_at":"2023-11-14T22:13:20Z","declared_region":null,"label":"Production","models":["gpt-4o","gpt-4o-mini"],"provider":"openai","residency":"global","sealed_secret":"c2VhbGVk","secret_hint":"WXYZ","settings":{},"weight":100}"#;

    fn recorded() -> Vec<crate::es::Envelope> {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/events/byok-schema-1.ndjson"
        ))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
    }

    #[test]
    fn a_registered_event_is_stored_as_recorded() {
        let recorded = recorded();
        let event = CredentialEvent::from_envelope(&recorded[0]).unwrap();
        assert!(matches!(event, CredentialEvent::Registered(_)));
        let new = event.to_new_event().unwrap();
        let again = crate::es::Envelope {
            data: new.data,
            ..recorded[0].clone()
        };
        assert_eq!(serde_json::to_string(&again).unwrap(), RECORDED_REGISTERED);
        // Every recorded event encodes back to its recorded payload.
        for envelope in &recorded {
            let event = CredentialEvent::from_envelope(envelope).unwrap();
            assert_eq!(event.to_new_event().unwrap().data, envelope.data);
        }
    }

    #[test]
    fn the_registered_payload_keeps_its_keys_and_their_order() {
        let Ok([CredentialEvent::Registered(r)]) = <[CredentialEvent; 1]>::try_from(registered())
        else {
            panic!("expected one byok.registered");
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            REGISTERED_FIELDS_IN_ORDER
        );
        let new = CredentialEvent::Registered(r).to_new_event().unwrap();
        assert_eq!(
            serde_json::to_string(&new.data).unwrap(),
            REGISTERED_PAYLOAD
        );
    }

    #[test]
    fn the_sealed_secret_is_a_private_field() {
        let new = registered()[0].to_new_event().unwrap();
        assert!(new.data.get("sealed_secret").is_some());
        assert!(crate::domain::PRIVATE_FIELDS.contains(&"sealed_secret"));
    }

    #[test]
    fn a_model_map_is_stored_after_the_profile_and_left_out_when_empty() {
        let Ok([CredentialEvent::Registered(mut r)]) =
            <[CredentialEvent; 1]>::try_from(registered())
        else {
            panic!("expected one byok.registered");
        };
        r.profile.model_map = [("gpt-4o".to_owned(), "ft:gpt-4o:acme".to_owned())].into();
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(
                r#""settings":{},"model_map":{"gpt-4o":"ft:gpt-4o:acme"},"sealed_secret""#
            ),
            "{text}"
        );
        let back: Registered = serde_json::from_str(&text).unwrap();
        assert_eq!(back, *r);
        // A payload recorded before the field existed reads as an empty map.
        let old: Registered = serde_json::from_str(REGISTERED_FIELDS_IN_ORDER).unwrap();
        assert!(old.profile.model_map.is_empty());
    }
}
