//! Accounts, their API keys, and authentication of presented tokens. An account and each of
//! its keys are aggregates of their own (`account:<account_id>`, `account_key:<key_id>`): an
//! account is opened with its first key in one append, and a key is minted or revoked on its own
//! stream (docs/adr/0020).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use super::clock::SharedClock;
use super::idempotency::Recording;
use super::ids::Ids;
use super::resolve::Resolver;
use super::{Executed, ServiceError, Taken, Target, execute};
use crate::crypto::{Redacted, TokenHash, generate_token, token_prefix};
use crate::domain::account::{self, Account, AccountCommand};
use crate::domain::account_key::{self, ApiKey, ApiKeyCommand, NewKey};
use crate::domain::routing::FastMap;
use crate::domain::{AccountId, KeyId, Scope};
use crate::es::{Aggregate, DomainEvent, EventMeta, ExpectedVersion, StreamId};
use crate::storage::{Index, Store, StoreError, StreamAppend};

/// Marker of account API tokens.
pub const TOKEN_MARKER: &str = "kl_";
/// Marker of the operator's admin token.
pub const ADMIN_TOKEN_MARKER: &str = "kl_admin_";

/// Last-used stamps are written at most this often per key, so authentication stays a read.
const TOUCH_EVERY_MS: i64 = 60_000;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The operator, with the admin token.
    Operator,
    /// An account API key.
    Key {
        account_id: AccountId,
        key_id: KeyId,
        prefix: String,
        scopes: Vec<Scope>,
    },
}

impl Principal {
    /// The actor recorded on events: the key's public prefix, or `operator`.
    pub fn actor(&self) -> String {
        match self {
            Principal::Operator => "operator".to_owned(),
            Principal::Key { prefix, .. } => prefix.clone(),
        }
    }
}

/// A key with its last use, which lives in an operational row beside the aggregate rather than
/// in it (ADR 0006). Holds the key's token hash: whoever shows the key leaves that out.
#[derive(Clone, Debug)]
pub struct KeyView {
    pub key: ApiKey,
    pub last_used_at: Option<DateTime<Utc>>,
}

pub struct CreatedAccount {
    pub account: Account,
    pub key: KeyView,
    pub token: Redacted<String>,
}

pub struct CreatedKey {
    pub key: KeyView,
    pub token: Redacted<String>,
}

pub struct Accounts {
    store: Store,
    admin_token: TokenHash,
    clock: SharedClock,
    ids: Arc<Ids>,
    touched: Mutex<FastMap<KeyId, i64>>,
    /// The follower's table of gateway keys, when the server runs one: tokens with the
    /// `resolve` scope authenticate from memory (service::resolve).
    gateways: Option<Resolver>,
}

fn stream(account_id: &AccountId) -> StreamId {
    StreamId::new(Account::KIND, account_id.as_str())
}

fn key_stream(key_id: &KeyId) -> StreamId {
    StreamId::new(ApiKey::KIND, key_id.as_str())
}

/// Another account's key is answered exactly like a missing one.
fn owned<'a>(key: Option<&'a ApiKey>, account_id: &AccountId) -> Option<&'a ApiKey> {
    key.filter(|k| k.account_id == *account_id)
}

/// Whether a key of the account exists and is not revoked, and its account is there, by their
/// projected state: point reads, which see every revocation already in the store.
pub fn key_is_live(
    store: &Store,
    account_id: &AccountId,
    key_id: &KeyId,
) -> Result<bool, StoreError> {
    let key = store.load::<ApiKey>(&key_stream(key_id))?;
    if !owned(key.as_ref().map(|k| &k.state), account_id).is_some_and(ApiKey::is_active) {
        return Ok(false);
    }
    Ok(store.load::<Account>(&stream(account_id))?.is_some())
}

fn target<'a>(stream: StreamId, meta: &'a EventMeta) -> Target<'a> {
    Target {
        stream,
        if_match: None,
        meta,
        data_key: None,
        also: Vec::new(),
    }
}

/// A key just minted: no last use yet.
fn fresh(executed: Executed<ApiKey>) -> Result<KeyView, ServiceError> {
    let key = executed
        .state
        .ok_or(ServiceError::NotFound("no such API key"))?;
    Ok(KeyView {
        key,
        last_used_at: None,
    })
}

impl Accounts {
    pub fn new(store: Store, admin_token: TokenHash, clock: SharedClock, ids: Arc<Ids>) -> Self {
        Self {
            store,
            admin_token,
            clock,
            ids,
            touched: Mutex::new(FastMap::default()),
            gateways: None,
        }
    }

    /// Authenticates gateway keys from the resolver's in-memory table first.
    pub fn with_gateways(mut self, resolver: Resolver) -> Self {
        self.gateways = Some(resolver);
        self
    }

    /// A key to add: its id, its token (shown once) and the token's keyed hash.
    fn new_key(&self, name: String, scopes: Vec<Scope>) -> (NewKey, Redacted<String>) {
        let token = generate_token(TOKEN_MARKER);
        let key = NewKey {
            key_id: self.ids.key(),
            name,
            prefix: token_prefix(token.expose()),
            scopes,
            token_hash: self.store.hash_token(token.expose()).to_hex(),
            at: self.clock.now(),
        };
        (key, token)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Opens an account with its first key (`default`, the default scopes), in one append: the
    /// key's creation goes to its own stream beside the account's.
    pub async fn create_account(
        &self,
        email: &str,
        meta: &EventMeta,
        recording: &Recording<CreatedAccount>,
    ) -> Result<CreatedAccount, ServiceError> {
        let email = account::normalize_email(email)?;
        let account_id = self.ids.account();
        let (first_key, token) = self.new_key("default".to_owned(), Scope::DEFAULT.to_vec());
        let at = first_key.at;
        let key_stream = key_stream(&first_key.key_id);
        let key_events = account_key::decide(
            None,
            ApiKeyCommand::Mint {
                account_id: account_id.clone(),
                key: first_key,
            },
        )?;
        let key = key_events
            .iter()
            .fold(None, |k, e| Some(ApiKey::apply(k, e)))
            .ok_or(ServiceError::NotFound("no such API key"))?;
        let mut target = target(stream(&account_id), meta);
        target.also.push(StreamAppend {
            stream: key_stream,
            expected: ExpectedVersion::NoStream,
            events: key_events
                .iter()
                .map(DomainEvent::to_new_event)
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)?,
        });
        let decide = |state: Option<&Account>| {
            let open = AccountCommand::Open {
                account_id: account_id.clone(),
                email: email.clone(),
                at,
            };
            Ok(account::decide(state, open)?)
        };
        let answer = |executed: Executed<Account>| {
            Ok(CreatedAccount {
                account: executed
                    .state
                    .ok_or(ServiceError::NotFound("no such account"))?,
                key: KeyView {
                    key: key.clone(),
                    last_used_at: None,
                },
                token: token.clone(),
            })
        };
        execute(&self.store, target, decide, answer, recording)
            .await
            .map_err(|e| match e {
                ServiceError::Taken(_) => ServiceError::Taken(Taken::Email),
                other => other,
            })
    }

    pub fn get_account(&self, account_id: &AccountId) -> Result<Account, ServiceError> {
        self.store
            .load::<Account>(&stream(account_id))?
            .map(|s| s.state)
            .ok_or(ServiceError::NotFound("no such account"))
    }

    pub async fn mint_key(
        &self,
        account_id: &AccountId,
        name: &str,
        scopes: Vec<Scope>,
        meta: &EventMeta,
        recording: &Recording<CreatedKey>,
    ) -> Result<CreatedKey, ServiceError> {
        account_key::validate_key_name(name)?;
        account_key::validate_scopes(&scopes)?;
        self.get_account(account_id)?;
        let (key, token) = self.new_key(name.trim().to_owned(), scopes);
        let decide = |state: Option<&ApiKey>| {
            let mint = ApiKeyCommand::Mint {
                account_id: account_id.clone(),
                key: key.clone(),
            };
            Ok(account_key::decide(state, mint)?)
        };
        let answer = |executed| {
            Ok(CreatedKey {
                key: fresh(executed)?,
                token: token.clone(),
            })
        };
        let target = target(key_stream(&key.key_id), meta);
        execute(&self.store, target, decide, answer, recording).await
    }

    /// The account's keys, oldest first, revoked ones included.
    pub fn list_keys(&self, account_id: &AccountId) -> Result<Vec<KeyView>, ServiceError> {
        self.get_account(account_id)?;
        let (keys, _) =
            self.store
                .list::<ApiKey>(Index::AccountKeys(account_id), None, usize::MAX, |_| true)?;
        keys.iter().map(|k| self.view(Some(&k.state))).collect()
    }

    pub async fn revoke_key(
        &self,
        account_id: &AccountId,
        key_id: &KeyId,
        meta: &EventMeta,
        recording: &Recording<KeyView>,
    ) -> Result<KeyView, ServiceError> {
        let at = self.clock.now();
        let decide = |state: Option<&ApiKey>| {
            let revoke = ApiKeyCommand::Revoke { at };
            Ok(account_key::decide(owned(state, account_id), revoke)?)
        };
        let answer = |executed: Executed<ApiKey>| self.view(executed.state.as_ref());
        let target = target(key_stream(key_id), meta);
        execute(&self.store, target, decide, answer, recording).await
    }

    /// Resolves a presented bearer token to its principal, or `None` for an unknown or revoked
    /// token. Lookups go by keyed hash; the operator's token is compared in constant time.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        let hash = self.store.hash_token(token);
        if self.admin_token.matches(&hash) {
            return Ok(Some(Principal::Operator));
        }
        // Gateways call on every request of theirs: no disk read for them. A key revoked
        // answers once the follower applied that, so the table is never behind a revoke.
        if let Some(principal) = self.gateways.as_ref().and_then(|r| r.gateway(&hash)) {
            if let Principal::Key { key_id, .. } = &principal {
                self.touch(key_id);
            }
            return Ok(Some(principal));
        }
        let Some((account_id, key_id)) = self.store.find_token(&hash)? else {
            return Ok(None);
        };
        let Some(stored) = self.store.load::<ApiKey>(&key_stream(&key_id))? else {
            return Ok(None);
        };
        let Some(key) = owned(Some(&stored.state), &account_id) else {
            return Ok(None);
        };
        // A key is good only while its account is there too, as when the account held its keys.
        if self.store.load::<Account>(&stream(&account_id))?.is_none() {
            return Ok(None);
        }
        // The index led here by hash; confirm against the key's own record in constant time.
        let genuine =
            TokenHash::from_hex(&key.token_hash).is_some_and(|stored| stored.matches(&hash));
        if !genuine || !key.is_active() {
            return Ok(None);
        }
        self.touch(&key.key_id);
        Ok(Some(Principal::Key {
            account_id,
            key_id,
            prefix: key.prefix.clone(),
            scopes: key.scopes.clone(),
        }))
    }

    fn touch(&self, key_id: &KeyId) {
        let now = self.clock.now().timestamp_millis();
        let Ok(mut touched) = self.touched.lock() else {
            return;
        };
        let due = touched
            .get(key_id)
            .is_none_or(|last| now - last >= TOUCH_EVERY_MS);
        if due {
            touched.insert(key_id.clone(), now);
            if let Err(error) = self.store.touch_key(key_id, now) {
                tracing::warn!(%error, "could not record a key's last use");
            }
        }
    }

    fn view(&self, key: Option<&ApiKey>) -> Result<KeyView, ServiceError> {
        let key = key.ok_or(ServiceError::NotFound("no such API key"))?;
        let last_used_at = self
            .store
            .key_last_used(&key.key_id)?
            .and_then(DateTime::<Utc>::from_timestamp_millis);
        Ok(KeyView {
            key: key.clone(),
            last_used_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::crypto::MasterKey;
    use crate::service::clock::FixedClock;
    use crate::storage::Durability;

    #[tokio::test]
    async fn commands_carry_the_services_clock_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &MasterKey::generate(), Durability::Sync).unwrap();
        let at = Utc.timestamp_millis_opt(1_700_000_000_123).unwrap();
        let clock: SharedClock = Arc::new(FixedClock(at));
        let ids = Arc::new(Ids::new(clock.clone()));
        let accounts = Accounts::new(store.clone(), store.hash_token("admin"), clock, ids);
        let meta = EventMeta::default();

        let created = accounts
            .create_account("ada@example.com", &meta, &Recording::none())
            .await
            .unwrap();
        assert_eq!(created.account.created_at, at);
        assert_eq!(created.key.key.created_at, at);
        let minted = accounts
            .mint_key(
                &created.account.account_id,
                "ci",
                vec![Scope::Read],
                &meta,
                &Recording::none(),
            )
            .await
            .unwrap();
        // One generator: a later key sorts after the first, even at the same instant.
        assert!(minted.key.key.key_id > created.key.key.key_id);
        let revoked = accounts
            .revoke_key(
                &created.account.account_id,
                &minted.key.key.key_id,
                &meta,
                &Recording::none(),
            )
            .await
            .unwrap();
        assert_eq!(revoked.key.revoked_at, Some(at));

        let principal = accounts.authenticate(created.token.expose()).unwrap();
        assert!(matches!(principal, Some(Principal::Key { .. })));
        let last_used = accounts.list_keys(&created.account.account_id).unwrap()[0].last_used_at;
        assert_eq!(last_used, Some(at));
        store.shutdown();
    }
}
