//! The account aggregate: a tenant and its API keys. One stream per account
//! (`account:<account_id>`), so every key change of an account is ordered with the others.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AccountId, KeyId, Scope, text};
use crate::es::{Aggregate, DomainEvent};

pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_KEY_NAME_LEN: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub account_id: AccountId,
    pub email: String,
    pub created_at: DateTime<Utc>,
    /// Keyed by key id; ULIDs sort by creation time.
    pub keys: BTreeMap<KeyId, ApiKey>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: KeyId,
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

pub enum AccountCommand {
    Open {
        account_id: AccountId,
        email: String,
        first_key: NewKey,
    },
    MintKey(NewKey),
    RevokeKey {
        key_id: KeyId,
        at: DateTime<Utc>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    #[serde(rename = "account.created")]
    Created {
        account_id: AccountId,
        email: String,
        created_at: DateTime<Utc>,
    },
    #[serde(rename = "account_key.created")]
    KeyCreated {
        key_id: KeyId,
        name: String,
        prefix: String,
        scopes: Vec<Scope>,
        token_hash: String,
        created_at: DateTime<Utc>,
    },
    #[serde(rename = "account_key.revoked")]
    KeyRevoked {
        key_id: KeyId,
        revoked_at: DateTime<Utc>,
    },
}

impl DomainEvent for AccountEvent {}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("the account already exists")]
    AlreadyExists,
    #[error("no such account")]
    NotFound,
    #[error("no such API key")]
    KeyNotFound,
    #[error("{message}")]
    Invalid {
        param: &'static str,
        message: String,
    },
}

/// Normalises and checks an email address: no control or invisible characters (the rule of
/// [`text`](super::text)), then trimmed, NFKC and lower case (the form emails are stored and
/// compared in, so a fullwidth spelling is the address it looks like), one `@`, a dotted
/// domain, no spaces, at most 254 characters.
pub fn normalize_email(raw: &str) -> Result<String, AccountError> {
    let invalid = |message: &str| AccountError::Invalid {
        param: "email",
        message: message.to_owned(),
    };
    text::check("email", raw).map_err(|m| invalid(&m))?;
    let email = text::normalize_email(raw);
    if email.is_empty() {
        return Err(invalid("email is required"));
    }
    if email.chars().count() > MAX_EMAIL_LEN {
        return Err(invalid("email must be at most 254 characters"));
    }
    let (local, domain) = email
        .split_once('@')
        .ok_or_else(|| invalid("email must contain @"))?;
    let labels_ok = domain.split('.').count() >= 2
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'));
    if local.is_empty()
        || local.len() > 64
        || domain.contains('@')
        || !labels_ok
        || email.chars().any(char::is_whitespace)
        || text::fault(&email).is_some()
    {
        return Err(invalid("email is not a valid address"));
    }
    Ok(email)
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

fn key_created(key: NewKey) -> AccountEvent {
    let mut scopes = key.scopes;
    scopes.sort();
    scopes.dedup();
    AccountEvent::KeyCreated {
        key_id: key.key_id,
        name: key.name,
        prefix: key.prefix,
        scopes,
        token_hash: key.token_hash,
        created_at: key.at,
    }
}

/// Decides what a command does to the account, as events. Pure.
pub fn decide(
    state: Option<&Account>,
    command: AccountCommand,
) -> Result<Vec<AccountEvent>, AccountError> {
    match (state, command) {
        (Some(_), AccountCommand::Open { .. }) => Err(AccountError::AlreadyExists),
        (
            None,
            AccountCommand::Open {
                account_id,
                email,
                first_key,
            },
        ) => {
            let email = normalize_email(&email)?;
            Ok(vec![
                AccountEvent::Created {
                    account_id,
                    email,
                    created_at: first_key.at,
                },
                key_created(first_key),
            ])
        }
        (None, _) => Err(AccountError::NotFound),
        (Some(_), AccountCommand::MintKey(key)) => {
            validate_key_name(&key.name)?;
            validate_scopes(&key.scopes)?;
            Ok(vec![key_created(key)])
        }
        (Some(account), AccountCommand::RevokeKey { key_id, at }) => {
            match account.keys.get(&key_id) {
                None => Err(AccountError::KeyNotFound),
                // Revoking twice is a no-op: the first revocation stands.
                Some(key) if !key.is_active() => Ok(vec![]),
                Some(_) => Ok(vec![AccountEvent::KeyRevoked {
                    key_id,
                    revoked_at: at,
                }]),
            }
        }
    }
}

impl Aggregate for Account {
    const KIND: &'static str = "account";
    type Event = AccountEvent;

    fn apply(state: Option<Self>, event: &AccountEvent) -> Self {
        match (state, event) {
            (
                _,
                AccountEvent::Created {
                    account_id,
                    email,
                    created_at,
                },
            ) => Account {
                account_id: account_id.clone(),
                email: email.clone(),
                created_at: *created_at,
                keys: BTreeMap::new(),
            },
            (
                Some(mut account),
                AccountEvent::KeyCreated {
                    key_id,
                    name,
                    prefix,
                    scopes,
                    token_hash,
                    created_at,
                },
            ) => {
                account.keys.insert(
                    key_id.clone(),
                    ApiKey {
                        key_id: key_id.clone(),
                        name: name.clone(),
                        prefix: prefix.clone(),
                        scopes: scopes.clone(),
                        token_hash: token_hash.clone(),
                        created_at: *created_at,
                        revoked_at: None,
                    },
                );
                account
            }
            (Some(mut account), AccountEvent::KeyRevoked { key_id, revoked_at }) => {
                if let Some(key) = account.keys.get_mut(key_id) {
                    key.revoked_at.get_or_insert(*revoked_at);
                }
                account
            }
            // An event before its stream's creation cannot be appended (decide refuses it), so a
            // log holding one was written by something else; keep an empty shell rather than
            // losing the events that follow.
            (None, _) => Account {
                account_id: AccountId::unnamed(),
                email: String::new(),
                created_at: DateTime::<Utc>::UNIX_EPOCH,
                keys: BTreeMap::new(),
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

    fn key(n: u128) -> KeyId {
        KeyId::from_ulid(n)
    }

    fn new_key(id: KeyId, scopes: Vec<Scope>) -> NewKey {
        NewKey {
            key_id: id,
            name: "ci".into(),
            prefix: "kl_abc".into(),
            scopes,
            token_hash: "00".into(),
            at: t(0),
        }
    }

    fn given(events: &[AccountEvent]) -> Option<Account> {
        events
            .iter()
            .fold(None, |state, e| Some(Account::apply(state, e)))
    }

    fn opened() -> Vec<AccountEvent> {
        decide(
            None,
            AccountCommand::Open {
                account_id: AccountId::from_ulid(1),
                email: " Ada@Example.COM ".into(),
                first_key: new_key(key(1), Scope::DEFAULT.to_vec()),
            },
        )
        .unwrap()
    }

    #[test]
    fn opening_normalises_email_and_mints_first_key() {
        let events = opened();
        assert_eq!(events.len(), 2);
        let account = given(&events).unwrap();
        assert_eq!(account.email, "ada@example.com");
        assert!(account.keys[&key(1)].allows(Scope::Admin));
        assert!(!account.keys[&key(1)].allows(Scope::Resolve));
    }

    #[test]
    fn revoking_is_final_and_idempotent() {
        let mut events = opened();
        let account = given(&events).unwrap();
        let revoke = || AccountCommand::RevokeKey {
            key_id: key(1),
            at: t(60),
        };
        events.extend(decide(Some(&account), revoke()).unwrap());
        let account = given(&events).unwrap();
        assert!(!account.keys[&key(1)].allows(Scope::Read));
        assert_eq!(decide(Some(&account), revoke()).unwrap(), vec![]);
    }

    #[test]
    fn rejects_bad_input() {
        let account = given(&opened()).unwrap();
        assert_eq!(
            decide(
                Some(&account),
                AccountCommand::RevokeKey {
                    key_id: key(2),
                    at: t(60)
                }
            ),
            Err(AccountError::KeyNotFound)
        );
        assert!(matches!(
            decide(
                Some(&account),
                AccountCommand::MintKey(new_key(key(3), vec![]))
            ),
            Err(AccountError::Invalid {
                param: "scopes",
                ..
            })
        ));
        for bad in ["", "no-at", "a@b", "a b@c.d", "@c.d", "a@@c.d", "a@c..d"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
