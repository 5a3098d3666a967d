//! The credential's events and their payloads, as stored in the log. Type strings
//! (`byok.registered`…) and payload shapes are never changed in place: a new shape needs an
//! upcaster and a fixture (see docs/events.md).
//!
//! Must not import crypto, storage or HTTP.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use super::Binding;
use crate::domain::{AccountId, CredentialId};
use crate::es::DomainEvent;

/// `byok.registered`: the whole credential as registered. Carries the sealed secret (ciphertext
/// bound to this credential; unreadable once revocation shreds its key) and the hint, never a
/// plaintext secret. Feeds and webhooks leave `sealed_secret` out (see
/// [`crate::domain::PRIVATE_FIELDS`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub byok_id: CredentialId,
    pub account_id: AccountId,
    pub provider: String,
    pub alias: String,
    pub label: Option<String>,
    pub base_url: Option<String>,
    pub declared_region: Option<String>,
    pub residency: String,
    pub models: Vec<String>,
    pub blacklisted_models: Vec<String>,
    pub weight: u32,
    pub bindings: Vec<Binding>,
    pub settings: BTreeMap<String, String>,
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
    pub updated_at: DateTime<Utc>,
}

impl Updated {
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
    }
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
                    byok_id: byok(),
                    alias: None,
                    label: None,
                    base_url: None,
                    declared_region: None,
                    residency: None,
                    models: None,
                    blacklisted_models: None,
                    weight: Some(1),
                    settings: BTreeMap::new(),
                    updated_at: t(1),
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
                "byok.revoked"
            ]
        );
        assert_eq!(<Credential as Aggregate>::KIND, "byok");
    }

    #[test]
    fn the_sealed_secret_is_a_private_field() {
        let new = registered()[0].to_new_event().unwrap();
        assert!(new.data.get("sealed_secret").is_some());
        assert!(crate::domain::PRIVATE_FIELDS.contains(&"sealed_secret"));
    }
}
