//! The API key aggregate: one key of an account, on a stream of its own
//! (`account_key:<key_id>`), so that minting or revoking a key rewrites that key's row only,
//! never a row that grows with every key the account has had (docs/adr/0020). Its creation names
//! its account (`account_key.created`, schema 2); schema 1 of that event lived on the account's
//! stream, which named the account, and is lifted by the upcaster in `es/upcast.rs`.
//!
//! The key names, scopes and the rules they follow are here too. Must not import crypto: the
//! token's keyed hash arrives in the command as text.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::account::AccountError;
use super::{AccountId, KeyId, Scope, text};
use crate::es::{Aggregate, DomainEvent};

pub const MAX_KEY_NAME_LEN: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: KeyId,
    pub account_id: AccountId,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    /// Hex HMAC-SHA256 of the token under the store's token key; never the token.
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }

    pub fn allows(&self, required: Scope) -> bool {
        self.is_active() && self.scopes.iter().any(|s| s.covers(required))
    }
}

/// A key to add, with everything decided outside the pure core (id, token hash, time).
#[derive(Clone, Debug)]
pub struct NewKey {
    pub key_id: KeyId,
    pub name: String,
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub token_hash: String,
    pub at: DateTime<Utc>,
}

pub enum ApiKeyCommand {
    /// Mints the key for `account_id`, which the caller has checked exists.
    Mint {
        account_id: AccountId,
        key: NewKey,
    },
    Revoke {
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ApiKeyEvent {
    /// Schema 2: the payload names its account (schema 1 left that to the account's stream it
    /// was stored on).
    #[serde(rename = "account_key.created")]
    Created {
        key_id: KeyId,
        account_id: AccountId,
        name: String,
        prefix: String,
        scopes: Vec<Scope>,
        token_hash: String,
        created_at: DateTime<Utc>,
    },
    #[serde(rename = "account_key.revoked")]
    Revoked {
        key_id: KeyId,
        revoked_at: DateTime<Utc>,
    },
}

impl DomainEvent for ApiKeyEvent {}

impl ApiKeyEvent {
    /// Whether `event_type` is one of this aggregate's: how the projection of an account's
    /// stream tells the key events of the old layout from the account's own.
    pub fn is_key_event(event_type: &str) -> bool {
        matches!(event_type, "account_key.created" | "account_key.revoked")
    }

    pub fn key_id(&self) -> &KeyId {
        match self {
            Self::Created { key_id, .. } | Self::Revoked { key_id, .. } => key_id,
        }
    }
}

/// Checks a key name: 1 to 128 characters, not blank, and the rule of
/// [`text`](super::text) (no control or invisible characters).
pub fn validate_key_name(name: &str) -> Result<(), AccountError> {
    let invalid = |message: String| AccountError::Invalid {
        param: "name",
        message,
    };
    if name.trim().is_empty() || name.chars().count() > MAX_KEY_NAME_LEN {
        return Err(invalid(format!(
            "name must be 1 to {MAX_KEY_NAME_LEN} characters"
        )));
    }
    text::check("name", name).map_err(invalid)
}

pub fn validate_scopes(scopes: &[Scope]) -> Result<(), AccountError> {
    if scopes.is_empty() {
        return Err(AccountError::Invalid {
            param: "scopes",
            message: "scopes must name at least one scope".to_owned(),
        });
    }
    Ok(())
}

/// Decides what a command does to the key, as events. Pure.
pub fn decide(
    state: Option<&ApiKey>,
    command: ApiKeyCommand,
) -> Result<Vec<ApiKeyEvent>, AccountError> {
    match (state, command) {
        (Some(_), ApiKeyCommand::Mint { .. }) => Err(AccountError::KeyExists),
        (None, ApiKeyCommand::Mint { account_id, key }) => {
            validate_key_name(&key.name)?;
            validate_scopes(&key.scopes)?;
            let mut scopes = key.scopes;
            scopes.sort();
            scopes.dedup();
            Ok(vec![ApiKeyEvent::Created {
                key_id: key.key_id,
                account_id,
                name: key.name,
                prefix: key.prefix,
                scopes,
                token_hash: key.token_hash,
                created_at: key.at,
            }])
        }
        (None, ApiKeyCommand::Revoke { .. }) => Err(AccountError::KeyNotFound),
        // Revoking twice is a no-op: the first revocation stands.
        (Some(key), ApiKeyCommand::Revoke { .. }) if !key.is_active() => Ok(vec![]),
        (Some(key), ApiKeyCommand::Revoke { at }) => Ok(vec![ApiKeyEvent::Revoked {
            key_id: key.key_id.clone(),
            revoked_at: at,
        }]),
    }
}

impl Aggregate for ApiKey {
    const KIND: &'static str = "account_key";
    type Event = ApiKeyEvent;

    fn apply(state: Option<Self>, event: &ApiKeyEvent) -> Self {
        match (state, event) {
            (
                _,
                ApiKeyEvent::Created {
                    key_id,
                    account_id,
                    name,
                    prefix,
                    scopes,
                    token_hash,
                    created_at,
                },
            ) => ApiKey {
                key_id: key_id.clone(),
                account_id: account_id.clone(),
                name: name.clone(),
                prefix: prefix.clone(),
                scopes: scopes.clone(),
                token_hash: token_hash.clone(),
                created_at: *created_at,
                revoked_at: None,
            },
            (Some(mut key), ApiKeyEvent::Revoked { revoked_at, .. }) => {
                key.revoked_at.get_or_insert(*revoked_at);
                key
            }
            // A revocation of a key never created cannot be appended (decide refuses it), so a
            // log holding one was written by something else; keep a revoked shell rather than
            // losing the events that follow.
            (None, ApiKeyEvent::Revoked { key_id, revoked_at }) => ApiKey {
                key_id: key_id.clone(),
                account_id: AccountId::unnamed(),
                name: String::new(),
                prefix: String::new(),
                scopes: Vec::new(),
                token_hash: String::new(),
                created_at: DateTime::<Utc>::UNIX_EPOCH,
                revoked_at: Some(*revoked_at),
            },
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

    fn mint(n: u128, scopes: Vec<Scope>) -> ApiKeyCommand {
        ApiKeyCommand::Mint {
            account_id: AccountId::from_ulid(1),
            key: NewKey {
                key_id: KeyId::from_ulid(n),
                name: "ci".into(),
                prefix: "kl_abc".into(),
                scopes,
                token_hash: "00".into(),
                at: t(0),
            },
        }
    }

    fn given(events: &[ApiKeyEvent]) -> Option<ApiKey> {
        events
            .iter()
            .fold(None, |state, e| Some(ApiKey::apply(state, e)))
    }

    #[test]
    fn a_minted_key_names_its_account_and_its_scopes_once_each() {
        let scopes = vec![Scope::Read, Scope::Admin, Scope::Read];
        let events = decide(None, mint(1, scopes)).unwrap();
        let key = given(&events).unwrap();
        assert_eq!(key.account_id, AccountId::from_ulid(1));
        assert_eq!(key.scopes.len(), 2);
        assert!(key.allows(Scope::Write));
        assert!(!key.allows(Scope::Resolve));
        let again = decide(Some(&key), mint(1, vec![Scope::Read]));
        assert_eq!(again, Err(AccountError::KeyExists));
    }

    #[test]
    fn revoking_is_final_and_idempotent() {
        let mut events = decide(None, mint(1, Scope::DEFAULT.to_vec())).unwrap();
        let key = given(&events).unwrap();
        let revoke = || ApiKeyCommand::Revoke { at: t(60) };
        events.extend(decide(Some(&key), revoke()).unwrap());
        let key = given(&events).unwrap();
        assert!(!key.allows(Scope::Read));
        assert_eq!(key.revoked_at, Some(t(60)));
        assert_eq!(decide(Some(&key), revoke()).unwrap(), vec![]);
        assert_eq!(decide(None, revoke()), Err(AccountError::KeyNotFound));
    }

    #[test]
    fn rejects_bad_names_and_no_scopes() {
        assert!(matches!(
            decide(None, mint(3, vec![])),
            Err(AccountError::Invalid {
                param: "scopes",
                ..
            })
        ));
        let mut blank = mint(4, vec![Scope::Read]);
        if let ApiKeyCommand::Mint { key, .. } = &mut blank {
            key.name = "  ".into();
        }
        assert!(matches!(
            decide(None, blank),
            Err(AccountError::Invalid { param: "name", .. })
        ));
    }

    #[test]
    fn the_type_strings_are_the_stored_ones() {
        assert!(ApiKeyEvent::is_key_event("account_key.created"));
        assert!(ApiKeyEvent::is_key_event("account_key.revoked"));
        assert!(!ApiKeyEvent::is_key_event("account.created"));
        let revoked = ApiKeyEvent::Revoked {
            key_id: KeyId::from_ulid(1),
            revoked_at: t(0),
        };
        let new = revoked.to_new_event().unwrap();
        assert_eq!(new.event_type, "account_key.revoked");
        assert_eq!(new.schema, 1);
        let created = decide(None, mint(1, vec![Scope::Read])).unwrap();
        let new = created[0].to_new_event().unwrap();
        assert_eq!(new.event_type, "account_key.created");
        assert_eq!(new.schema, 2);
    }
}
