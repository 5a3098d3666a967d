//! The account aggregate: a tenant. One stream per account (`account:<account_id>`), holding its
//! creation. Its API keys are aggregates of their own (`account_key.rs`), one stream each, so
//! that minting or revoking a key never rewrites a row that grows with the account's history
//! (docs/adr/0020). Stores written before that hold key events on the account's stream too; the
//! storage projections read them there (`storage/account_keys.rs`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AccountId, text};
use crate::es::{Aggregate, DomainEvent};

pub const MAX_EMAIL_LEN: usize = 254;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub account_id: AccountId,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

pub enum AccountCommand {
    /// Opens the account. Its first key is minted beside it, on the key's own stream, in the
    /// same append (see `service::accounts`).
    Open {
        account_id: AccountId,
        email: String,
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
    #[error("the API key already exists")]
    KeyExists,
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
                at,
            },
        ) => {
            let email = normalize_email(&email)?;
            Ok(vec![AccountEvent::Created {
                account_id,
                email,
                created_at: at,
            }])
        }
    }
}

impl Aggregate for Account {
    const KIND: &'static str = "account";
    type Event = AccountEvent;

    fn apply(_: Option<Self>, event: &AccountEvent) -> Self {
        match event {
            AccountEvent::Created {
                account_id,
                email,
                created_at,
            } => Account {
                account_id: account_id.clone(),
                email: email.clone(),
                created_at: *created_at,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn opened() -> Vec<AccountEvent> {
        decide(
            None,
            AccountCommand::Open {
                account_id: AccountId::from_ulid(1),
                email: " Ada@Example.COM ".into(),
                at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            },
        )
        .unwrap()
    }

    #[test]
    fn opening_normalises_the_email_and_happens_once() {
        let events = opened();
        assert_eq!(events.len(), 1);
        let account = Account::apply(None, &events[0]);
        assert_eq!(account.email, "ada@example.com");
        let again = AccountCommand::Open {
            account_id: AccountId::from_ulid(1),
            email: "ada@example.com".into(),
            at: account.created_at,
        };
        assert_eq!(
            decide(Some(&account), again),
            Err(AccountError::AlreadyExists)
        );
    }

    #[test]
    fn rejects_bad_emails() {
        for bad in ["", "no-at", "a@b", "a b@c.d", "@c.d", "a@@c.d", "a@c..d"] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
    }
}
