//! Webhook endpoints of an account (docs/design.md §7, docs/adr/0029): where the account's
//! events are delivered, which types it subscribes to, and the signing secrets (sealed, as
//! opaque text). One stream per endpoint (`webhook:<webhook_id>`): `webhook.created`,
//! `webhook.updated`, `webhook.secret_rotated`, `webhook.disabled`, `webhook.deleted`.
//!
//! [`EVENT_TYPES`] is the one table of the event types an endpoint may subscribe to; the
//! projections, the API's validation and the OpenAPI `webhooks` section all read it.
//!
//! Pure: must not import crypto, storage, service or HTTP. Whether a URL's address may be
//! reached is the outbound policy's to say (the service asks it); here only its shape.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::{AccountId, WebhookId};
use crate::es::{Aggregate, DomainEvent};

/// Stream kind, never renamed: streams are `webhook:<webhook_id>`.
pub const KIND: &str = "webhook";
/// Subscribes to every type of [`EVENT_TYPES`], those added later included.
pub const ALL: &str = "*";
/// The type of the message `POST /v1/webhooks/{id}/test` sends; never an event of the log.
pub const PING: &str = "webhook.ping";
/// Endpoints an account may hold (deleted ones not counted).
pub const MAX_PER_ACCOUNT: usize = 16;
pub const MAX_URL_LEN: usize = 2048;
pub const MAX_DESCRIPTION_LEN: usize = 200;
/// How long the secret a rotation replaces keeps signing beside the new one.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;

/// An event type an endpoint may subscribe to.
#[derive(Clone, Copy, Debug)]
pub struct EventType {
    pub name: &'static str,
    /// What it announces, for the OpenAPI `webhooks` section.
    pub summary: &'static str,
}

const fn event(name: &'static str, summary: &'static str) -> EventType {
    EventType { name, summary }
}

/// Every event type an endpoint may subscribe to: the credential's and the policy's.
pub const EVENT_TYPES: &[EventType] = &[
    event("byok.registered", "A credential was registered"),
    event("byok.updated", "A credential's settings changed"),
    event("byok.enabled", "A credential was brought back into service"),
    event("byok.disabled", "A credential was taken out of service"),
    event("byok.revoked", "A credential was revoked for good"),
    event(
        "byok.bound",
        "A credential was bound to a capability, module or model",
    ),
    event("byok.unbound", "A binding was removed from a credential"),
    event("byok.quota_set", "A credential's quota was set or removed"),
    event(
        "byok.quota_exceeded",
        "A credential reached its quota in a window",
    ),
    event("byok.tested", "A credential was probed at its provider"),
    event(
        "byok.rotation_staged",
        "A new secret was staged for a credential",
    ),
    event("byok.rotated", "A credential's secret was rotated"),
    event("byok.health_changed", "A credential's health changed"),
    event("policy.set", "The account's routing policy changed"),
];

/// Whether `name` is in [`EVENT_TYPES`].
pub fn is_event_type(name: &str) -> bool {
    EVENT_TYPES.iter().any(|t| t.name == name)
}

/// Whether an endpoint subscribed to `events` takes an event of type `event_type`.
pub fn subscribed(events: &[String], event_type: &str) -> bool {
    events
        .iter()
        .any(|e| e == event_type || (e == ALL && is_event_type(event_type)))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("the webhook already exists")]
    AlreadyExists,
    #[error("no such webhook")]
    NotFound,
    #[error("{message}")]
    Invalid { param: String, message: String },
}

impl WebhookError {
    fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    Active,
    Disabled,
    Deleted,
}

/// Why deliveries to an endpoint stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    /// The endpoint answered 410 Gone.
    Gone,
    /// Deliveries failed for five days.
    Failing,
    /// Its owner turned it off (`PATCH {"enabled": false}`).
    Operator,
}

/// One signing secret, sealed (base64 of the ciphertext; `sealed_secret` is a private field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningSecret {
    pub secret_version: u32,
    pub sealed_secret: String,
    /// When a rotation replaced it: it signs until then, beside its successor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub webhook_id: WebhookId,
    pub account_id: AccountId,
    pub url: String,
    /// Sorted, without repeats; `*` stands for every type.
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub state: WebhookState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<DisabledReason>,
    /// Oldest first; the last is the current one.
    pub secrets: Vec<SigningSecret>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Webhook {
    /// The current secret's version.
    pub fn secret_version(&self) -> u32 {
        self.secrets.last().map_or(0, |s| s.secret_version)
    }

    /// The secrets that sign a message sent at `now`: the current one, and one a rotation
    /// replaced less than [`ROTATION_OVERLAP_HOURS`] before.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &SigningSecret> {
        self.secrets
            .iter()
            .filter(move |s| s.retires_at.is_none_or(|at| at > now))
    }

    pub fn is_active(&self) -> bool {
        self.state == WebhookState::Active
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookCreated {
    pub webhook_id: WebhookId,
    pub account_id: AccountId,
    pub url: String,
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub secret_version: u32,
    pub sealed_secret: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum WebhookEvent {
    #[serde(rename = "webhook.created")]
    Created(WebhookCreated),
    /// Only the fields that changed; `description: ""` removes it; `enabled: true` brings a
    /// disabled endpoint back.
    #[serde(rename = "webhook.updated")]
    Updated {
        webhook_id: WebhookId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        events: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        enabled: Option<bool>,
        updated_at: DateTime<Utc>,
    },
    /// A new current secret; the one before signs beside it until `previous_retires_at`.
    #[serde(rename = "webhook.secret_rotated")]
    SecretRotated {
        webhook_id: WebhookId,
        secret_version: u32,
        sealed_secret: String,
        previous_retires_at: DateTime<Utc>,
        rotated_at: DateTime<Utc>,
    },
    #[serde(rename = "webhook.disabled")]
    Disabled {
        webhook_id: WebhookId,
        reason: DisabledReason,
        disabled_at: DateTime<Utc>,
    },
    /// Final: the endpoint's data key is destroyed with it.
    #[serde(rename = "webhook.deleted")]
    Deleted {
        webhook_id: WebhookId,
        deleted_at: DateTime<Utc>,
    },
}

impl DomainEvent for WebhookEvent {}

impl Aggregate for Webhook {
    const KIND: &'static str = KIND;
    type Event = WebhookEvent;

    fn apply(state: Option<Self>, event: &WebhookEvent) -> Self {
        let mut hook = match (state, event) {
            (_, WebhookEvent::Created(c)) => {
                return Webhook {
                    webhook_id: c.webhook_id.clone(),
                    account_id: c.account_id.clone(),
                    url: c.url.clone(),
                    events: c.events.clone(),
                    description: c.description.clone(),
                    state: WebhookState::Active,
                    disabled_reason: None,
                    secrets: vec![SigningSecret {
                        secret_version: c.secret_version,
                        sealed_secret: c.sealed_secret.clone(),
                        retires_at: None,
                    }],
                    created_at: c.created_at,
                    updated_at: c.created_at,
                };
            }
            (Some(hook), _) => hook,
            // An event before any creation: a shell, as other aggregates answer it.
            (None, _) => Webhook {
                webhook_id: WebhookId::unnamed(),
                account_id: AccountId::unnamed(),
                url: String::new(),
                events: Vec::new(),
                description: None,
                state: WebhookState::Deleted,
                disabled_reason: None,
                secrets: Vec::new(),
                created_at: DateTime::<Utc>::UNIX_EPOCH,
                updated_at: DateTime::<Utc>::UNIX_EPOCH,
            },
        };
        match event {
            WebhookEvent::Created(_) => {}
            WebhookEvent::Updated {
                url,
                events,
                description,
                enabled,
                updated_at,
                ..
            } => {
                if let Some(url) = url {
                    hook.url = url.clone();
                }
                if let Some(events) = events {
                    hook.events = events.clone();
                }
                if let Some(description) = description {
                    hook.description = (!description.is_empty()).then(|| description.clone());
                }
                if *enabled == Some(true) && hook.state == WebhookState::Disabled {
                    hook.state = WebhookState::Active;
                    hook.disabled_reason = None;
                }
                hook.updated_at = *updated_at;
            }
            WebhookEvent::SecretRotated {
                secret_version,
                sealed_secret,
                previous_retires_at,
                rotated_at,
                ..
            } => {
                // Only the secret being replaced keeps signing beside the new one: one replaced
                // by an earlier rotation retires now.
                hook.secrets.retain(|s| s.retires_at.is_none());
                for secret in &mut hook.secrets {
                    secret.retires_at = Some(*previous_retires_at);
                }
                hook.secrets.push(SigningSecret {
                    secret_version: *secret_version,
                    sealed_secret: sealed_secret.clone(),
                    retires_at: None,
                });
                hook.updated_at = *rotated_at;
            }
            WebhookEvent::Disabled {
                reason,
                disabled_at,
                ..
            } => {
                hook.state = WebhookState::Disabled;
                hook.disabled_reason = Some(*reason);
                hook.updated_at = *disabled_at;
            }
            WebhookEvent::Deleted { deleted_at, .. } => {
                hook.state = WebhookState::Deleted;
                hook.secrets.clear();
                hook.updated_at = *deleted_at;
            }
        }
        hook
    }
}

/// A change asked for by `PATCH`; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `""` removes it.
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Clone, Debug)]
pub enum WebhookCommand {
    Create(WebhookCreated),
    Update {
        patch: WebhookPatch,
        at: DateTime<Utc>,
    },
    RotateSecret {
        sealed_secret: String,
        at: DateTime<Utc>,
    },
    Disable {
        reason: DisabledReason,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
}

/// The URL's shape: http or https, a host, no credentials, at most [`MAX_URL_LEN`]. Whether its
/// address may be reached is the outbound policy's question, asked by the service.
pub fn validate_url(raw: &str) -> Result<String, WebhookError> {
    let url = raw;
    // The characters of RFC 3986 a URL may hold as written (an escape is `%` and two hex
    // digits); anything else must be percent-encoded, as the contract's pattern says.
    let bytes = url.as_bytes();
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?[]".contains(&b);
    let written = bytes.iter().enumerate().all(|(i, b)| {
        plain(*b)
            || (*b == b'%'
                && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !written {
        return Err(WebhookError::invalid(
            "url",
            "url must be written in URL characters (percent-encode the others)",
        ));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(WebhookError::invalid(
            "url",
            "url must start with https:// or http://",
        ));
    }
    if url.is_empty() || url.chars().count() > MAX_URL_LEN {
        return Err(WebhookError::invalid(
            "url",
            format!("url must be 1 to {MAX_URL_LEN} characters"),
        ));
    }
    let parsed =
        url::Url::parse(url).map_err(|e| WebhookError::invalid("url", format!("url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(WebhookError::invalid("url", "url must be http or https"));
    }
    if parsed.host().is_none() {
        return Err(WebhookError::invalid("url", "url must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(WebhookError::invalid(
            "url",
            "url must not carry a user name or password",
        ));
    }
    if parsed.fragment().is_some() {
        return Err(WebhookError::invalid("url", "url must not have a fragment"));
    }
    Ok(url.to_owned())
}

/// The event types asked for, sorted and without repeats: each in [`EVENT_TYPES`], or `*`.
pub fn validate_events(events: &[String]) -> Result<Vec<String>, WebhookError> {
    if events.is_empty() {
        return Err(WebhookError::invalid(
            "events",
            "events must name at least one event type, or \"*\"",
        ));
    }
    for (i, e) in events.iter().enumerate() {
        if e != ALL && !is_event_type(e) {
            return Err(WebhookError::invalid(
                &format!("events[{i}]"),
                format!("{e:?} is not an event type an endpoint can subscribe to"),
            ));
        }
    }
    let mut events = events.to_vec();
    events.sort();
    events.dedup();
    Ok(events)
}

pub fn validate_description(raw: &str) -> Result<String, WebhookError> {
    super::text::check("description", raw).map_err(|m| WebhookError::invalid("description", m))?;
    let description = raw.trim();
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(WebhookError::invalid(
            "description",
            format!("description must be at most {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    Ok(description.to_owned())
}

/// Decides what a command does to an endpoint. A deleted endpoint refuses everything (it
/// answers as a missing one); a change to what is there already appends nothing.
pub fn decide(
    state: Option<&Webhook>,
    command: WebhookCommand,
) -> Result<Vec<WebhookEvent>, WebhookError> {
    let live = state.filter(|h| h.state != WebhookState::Deleted);
    match command {
        WebhookCommand::Create(mut created) => {
            if state.is_some() {
                return Err(WebhookError::AlreadyExists);
            }
            created.url = validate_url(&created.url)?;
            created.events = validate_events(&created.events)?;
            created.description = match created.description.as_deref() {
                Some(d) => Some(validate_description(d)?).filter(|d| !d.is_empty()),
                None => None,
            };
            Ok(vec![WebhookEvent::Created(created)])
        }
        WebhookCommand::Update { patch, at } => {
            let hook = live.ok_or(WebhookError::NotFound)?;
            let url = patch
                .url
                .as_deref()
                .map(validate_url)
                .transpose()?
                .filter(|u| *u != hook.url);
            let events = patch
                .events
                .as_deref()
                .map(validate_events)
                .transpose()?
                .filter(|e| *e != hook.events);
            let description = patch
                .description
                .as_deref()
                .map(validate_description)
                .transpose()?
                .filter(|d| Some(d.as_str()) != hook.description.as_deref().or(Some("")));
            let mut events_out = Vec::new();
            let enable = patch.enabled == Some(true) && hook.state == WebhookState::Disabled;
            if url.is_some() || events.is_some() || description.is_some() || enable {
                events_out.push(WebhookEvent::Updated {
                    webhook_id: hook.webhook_id.clone(),
                    url,
                    events,
                    description,
                    enabled: enable.then_some(true),
                    updated_at: at,
                });
            }
            if patch.enabled == Some(false) && hook.state == WebhookState::Active {
                events_out.push(WebhookEvent::Disabled {
                    webhook_id: hook.webhook_id.clone(),
                    reason: DisabledReason::Operator,
                    disabled_at: at,
                });
            }
            Ok(events_out)
        }
        WebhookCommand::RotateSecret { sealed_secret, at } => {
            let hook = live.ok_or(WebhookError::NotFound)?;
            Ok(vec![WebhookEvent::SecretRotated {
                webhook_id: hook.webhook_id.clone(),
                secret_version: hook.secret_version() + 1,
                sealed_secret,
                previous_retires_at: at + Duration::hours(ROTATION_OVERLAP_HOURS),
                rotated_at: at,
            }])
        }
        WebhookCommand::Disable { reason, at } => {
            let hook = live.ok_or(WebhookError::NotFound)?;
            if hook.state == WebhookState::Disabled {
                return Ok(vec![]);
            }
            Ok(vec![WebhookEvent::Disabled {
                webhook_id: hook.webhook_id.clone(),
                reason,
                disabled_at: at,
            }])
        }
        WebhookCommand::Delete { at } => {
            let hook = live.ok_or(WebhookError::NotFound)?;
            Ok(vec![WebhookEvent::Deleted {
                webhook_id: hook.webhook_id.clone(),
                deleted_at: at,
            }])
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn created() -> WebhookCreated {
        WebhookCreated {
            webhook_id: WebhookId::from_ulid(1),
            account_id: AccountId::from_ulid(2),
            url: "https://example.com/hook".into(),
            events: vec![
                "byok.rotated".into(),
                "byok.revoked".into(),
                "byok.rotated".into(),
            ],
            description: Some(" ops ".into()),
            secret_version: 1,
            sealed_secret: "s1".into(),
            created_at: t(0),
        }
    }

    fn hook() -> Webhook {
        let events = decide(None, WebhookCommand::Create(created())).unwrap();
        events
            .iter()
            .fold(None, |s, e| Some(Webhook::apply(s, e)))
            .unwrap()
    }

    #[test]
    fn creation_normalises_its_fields() {
        let hook = hook();
        assert_eq!(hook.events, ["byok.revoked", "byok.rotated"]);
        assert_eq!(hook.description.as_deref(), Some("ops"));
        assert!(hook.is_active());
        assert_eq!(
            decide(Some(&hook), WebhookCommand::Create(created())),
            Err(WebhookError::AlreadyExists)
        );
    }

    #[test]
    fn only_known_types_and_urls_are_taken() {
        assert!(validate_events(&["byok.nonsense".into()]).is_err());
        assert!(validate_events(&[]).is_err());
        assert!(validate_events(&["*".into()]).is_ok());
        assert!(validate_url("ftp://example.com/").is_err());
        assert!(validate_url("https://user:pw@example.com/").is_err());
        assert!(subscribed(&["*".into()], "byok.rotated"));
        assert!(!subscribed(&["*".into()], "webhook.created"));
        assert!(!subscribed(&["byok.revoked".into()], "byok.rotated"));
    }

    #[test]
    fn a_rotation_keeps_the_previous_secret_signing_for_a_day() {
        let hook = hook();
        let rotate = |h: &Webhook, at| {
            let events = decide(
                Some(h),
                WebhookCommand::RotateSecret {
                    sealed_secret: format!("s{}", h.secret_version() + 1),
                    at,
                },
            )
            .unwrap();
            events
                .iter()
                .fold(h.clone(), |s, e| Webhook::apply(Some(s), e))
        };
        let once = rotate(&hook, t(10));
        let versions = |h: &Webhook, now| {
            h.signing_secrets(now)
                .map(|s| s.secret_version)
                .collect::<Vec<_>>()
        };
        assert_eq!(versions(&once, t(11)), [1, 2]);
        assert_eq!(versions(&once, t(10 + 24 * 3600)), [2]);
        // A second rotation inside the window retires the first at once.
        let twice = rotate(&once, t(20));
        assert_eq!(versions(&twice, t(21)), [2, 3]);
    }

    #[test]
    fn patches_change_only_what_differs_and_deleted_is_final() {
        let hook = hook();
        let same = WebhookPatch {
            url: Some(hook.url.clone()),
            description: Some("ops".into()),
            enabled: Some(true),
            ..WebhookPatch::default()
        };
        let update = |patch| WebhookCommand::Update { patch, at: t(5) };
        assert_eq!(decide(Some(&hook), update(same)), Ok(vec![]));
        let off = WebhookPatch {
            enabled: Some(false),
            ..WebhookPatch::default()
        };
        let events = decide(Some(&hook), update(off)).unwrap();
        assert!(matches!(
            events[..],
            [WebhookEvent::Disabled {
                reason: DisabledReason::Operator,
                ..
            }]
        ));
        let deleted = Webhook::apply(
            Some(hook),
            &WebhookEvent::Deleted {
                webhook_id: WebhookId::from_ulid(1),
                deleted_at: t(6),
            },
        );
        assert_eq!(
            decide(Some(&deleted), WebhookCommand::Delete { at: t(7) }),
            Err(WebhookError::NotFound)
        );
    }
}
