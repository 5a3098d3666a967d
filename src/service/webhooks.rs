//! Webhook endpoints (docs/design.md §7, docs/adr/0029): create, read, list, update, delete,
//! rotate the signing secret, send a ping, read the delivery log, redeliver. The URL is vetted
//! by the outbound policy when it is set (and again by the client at every delivery); the
//! signing secret is generated here, shown once, and sealed under the endpoint's own data key
//! (wrapped by the master key into `keys/<webhook_id>`, as a credential's is) before anything
//! reaches an event. Deleting an endpoint destroys that key.
//!
//! Deliveries themselves are the dispatcher's (`deliveries`); this module queues pings and
//! redeliveries for it and wakes it.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::clock::SharedClock;
use super::cursor::{Cursors, InvalidCursor, Listing};
use super::deliveries::Doorbell;
use super::idempotency::Recording;
use super::ids::Ids;
use super::{Executed, ServiceError, Target, execute};
use crate::crypto::{DataKey, MasterKey, Redacted, generate_webhook_secret, webhook_secret_key};
use crate::domain::webhook::{
    self, DisabledReason, Webhook, WebhookCommand, WebhookCreated, WebhookPatch, WebhookState,
};
use crate::domain::{AccountId, WebhookId};
use crate::es::{Aggregate, EventMeta, StreamId};
use crate::outbound::{Outbound, OutboundError};
use crate::storage::{Attempt, DataKeyChange, Index, OutboxRow, Ping, Store, StoreError};

/// An endpoint with its revision (its stream version: the `ETag`, what `If-Match` compares).
#[derive(Clone)]
pub struct VersionedWebhook {
    pub webhook: Webhook,
    pub revision: u64,
}

/// An endpoint with its new signing secret, answered once (creation, rotation).
#[derive(Clone)]
pub struct WithSecret {
    pub versioned: VersionedWebhook,
    pub secret: Redacted<String>,
}

/// What `POST /v1/webhooks` asks for.
#[derive(Clone)]
pub struct NewWebhook {
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
}

/// A delivery queued by `test` or `redeliver`.
#[derive(Clone)]
pub struct Queued {
    pub delivery_id: String,
}

fn stream(webhook_id: &WebhookId) -> StreamId {
    StreamId::new(Webhook::KIND, webhook_id.as_str())
}

/// Binds a wrapped data key to its endpoint (the credential's binding, with the endpoint's id as
/// the record).
fn data_key_ad(account_id: &AccountId, webhook_id: &WebhookId) -> Vec<u8> {
    crate::crypto::data_key_binding(account_id.as_str(), webhook_id.as_str())
}

/// Binds a sealed signing secret to its account, endpoint and secret version.
fn secret_ad(account_id: &AccountId, webhook_id: &WebhookId, secret_version: u32) -> Vec<u8> {
    format!("keyledger/webhook/{account_id}/{webhook_id}/v{secret_version}").into_bytes()
}

fn unreadable(webhook_id: &WebhookId) -> ServiceError {
    ServiceError::Store(StoreError::Corrupt {
        what: format!("signing secret of {webhook_id}"),
        reason: "it does not open with its data key".into(),
    })
}

fn refused_url(error: OutboundError) -> ServiceError {
    ServiceError::Invalid {
        param: "url".into(),
        message: format!("url is refused: {error}"),
    }
}

fn versioned(executed: Executed<Webhook>) -> Result<VersionedWebhook, ServiceError> {
    let webhook = executed
        .state
        .ok_or(ServiceError::NotFound("no such webhook"))?;
    Ok(VersionedWebhook {
        webhook,
        revision: executed.stream_version,
    })
}

/// Another account's endpoint, or a deleted one, answers exactly like a missing one.
fn owned<'a>(
    state: Option<&'a Webhook>,
    account_id: &AccountId,
) -> Result<&'a Webhook, ServiceError> {
    match state {
        Some(h) if h.account_id == *account_id && h.state != WebhookState::Deleted => Ok(h),
        _ => Err(ServiceError::NotFound("no such webhook")),
    }
}

#[derive(Clone)]
pub struct Webhooks {
    store: Store,
    cursors: Cursors,
    master: MasterKey,
    clock: SharedClock,
    ids: Arc<Ids>,
    outbound: Outbound,
    /// Hands the dispatcher what it learns outside an append.
    doorbell: Arc<Doorbell>,
}

impl Webhooks {
    pub fn new(
        store: Store,
        master: MasterKey,
        clock: SharedClock,
        ids: Arc<Ids>,
        outbound: Outbound,
    ) -> Self {
        Self {
            cursors: Cursors::new(&store),
            store,
            master,
            clock,
            ids,
            outbound,
            doorbell: Arc::default(),
        }
    }

    pub(super) fn store(&self) -> &Store {
        &self.store
    }

    pub(super) fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub(super) fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    pub(super) fn doorbell(&self) -> &Arc<Doorbell> {
        &self.doorbell
    }

    pub fn cursor(&self, account_id: &AccountId, after: &str) -> String {
        self.cursors.issue(&Listing::Webhooks(account_id), after)
    }

    pub fn resume_after(
        &self,
        account_id: &AccountId,
        cursor: &str,
    ) -> Result<String, InvalidCursor> {
        self.cursors.open(&Listing::Webhooks(account_id), cursor)
    }

    pub async fn create(
        &self,
        account_id: &AccountId,
        request: NewWebhook,
        meta: &EventMeta,
        recording: &Recording<WithSecret>,
    ) -> Result<WithSecret, ServiceError> {
        let url = webhook::validate_url(&request.url)?;
        self.outbound.vet(&url).await.map_err(refused_url)?;
        if self.store.webhook_count(account_id)? >= webhook::MAX_PER_ACCOUNT {
            return Err(ServiceError::Invalid {
                param: "url".into(),
                message: format!(
                    "an account holds at most {} webhook endpoints; delete one first",
                    webhook::MAX_PER_ACCOUNT
                ),
            });
        }
        let webhook_id = self.ids.webhook();
        let secret = generate_webhook_secret();
        let key = DataKey::generate();
        let sealed = key
            .seal(
                &secret_ad(account_id, &webhook_id, 1),
                secret.expose().as_bytes(),
            )
            .map_err(StoreError::from)?;
        let created = WebhookCreated {
            webhook_id: webhook_id.clone(),
            account_id: account_id.clone(),
            url,
            events: request.events,
            description: request.description,
            secret_version: 1,
            sealed_secret: STANDARD.encode(sealed),
            created_at: self.clock.now(),
        };
        let target = Target {
            stream: stream(&webhook_id),
            if_match: None,
            meta,
            data_key: Some(DataKeyChange::Store {
                record: webhook_id.to_string(),
                wrapped: self
                    .master
                    .wrap(&key, &data_key_ad(account_id, &webhook_id))
                    .map_err(StoreError::from)?,
            }),
            also: Vec::new(),
        };
        let decide = |state: Option<&Webhook>| {
            Ok(webhook::decide(
                state,
                WebhookCommand::Create(created.clone()),
            )?)
        };
        let answer = |executed: Executed<Webhook>| {
            Ok(WithSecret {
                versioned: versioned(executed)?,
                secret: secret.clone(),
            })
        };
        execute(&self.store, target, decide, answer, recording).await
    }

    pub fn get(
        &self,
        account_id: &AccountId,
        webhook_id: &WebhookId,
    ) -> Result<VersionedWebhook, ServiceError> {
        let stored = self.store.load::<Webhook>(&stream(webhook_id))?;
        let revision = stored.as_ref().map_or(0, |s| s.stream_version);
        let webhook = owned(stored.as_ref().map(|s| &s.state), account_id)?.clone();
        Ok(VersionedWebhook { webhook, revision })
    }

    /// A page of the account's endpoints, oldest first, after the endpoint `after`.
    pub fn list(
        &self,
        account_id: &AccountId,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<VersionedWebhook>, Option<String>), ServiceError> {
        let (page, next) =
            self.store
                .list::<Webhook>(Index::AccountWebhooks(account_id), after, limit, |_| true)?;
        let page = page
            .into_iter()
            .map(|s| VersionedWebhook {
                webhook: s.state,
                revision: s.stream_version,
            })
            .collect();
        Ok((page, next))
    }

    async fn command<T>(
        &self,
        account_id: &AccountId,
        target: Target<'_>,
        command: impl Fn(&Webhook) -> Result<WebhookCommand, ServiceError>,
        answer: impl Fn(Executed<Webhook>) -> Result<T, ServiceError>,
        recording: &Recording<T>,
    ) -> Result<T, ServiceError> {
        let decide = |state: Option<&Webhook>| {
            let hook = owned(state, account_id)?;
            Ok(webhook::decide(Some(hook), command(hook)?)?)
        };
        execute(&self.store, target, decide, answer, recording).await
    }

    fn target<'a>(
        &self,
        webhook_id: &WebhookId,
        if_match: Option<u64>,
        meta: &'a EventMeta,
        data_key: Option<DataKeyChange>,
    ) -> Target<'a> {
        Target {
            stream: stream(webhook_id),
            if_match,
            meta,
            data_key,
            also: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn update(
        &self,
        account_id: &AccountId,
        webhook_id: &WebhookId,
        patch: WebhookPatch,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<VersionedWebhook>,
    ) -> Result<VersionedWebhook, ServiceError> {
        // Ownership first: another account's endpoint answers 404 before `If-Match` is compared.
        self.get(account_id, webhook_id)?;
        if let Some(url) = &patch.url {
            let url = webhook::validate_url(url)?;
            self.outbound.vet(&url).await.map_err(refused_url)?;
        }
        let at = self.clock.now();
        let target = self.target(webhook_id, if_match, meta, None);
        let command = |_: &Webhook| {
            Ok(WebhookCommand::Update {
                patch: patch.clone(),
                at,
            })
        };
        let updated = self
            .command(account_id, target, command, versioned, recording)
            .await;
        // Enabled again, its rows that waited are due.
        self.doorbell.changed(webhook_id.clone());
        updated
    }

    /// A new signing secret; the current one keeps signing beside it for 24 hours.
    pub async fn rotate_secret(
        &self,
        account_id: &AccountId,
        webhook_id: &WebhookId,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<WithSecret>,
    ) -> Result<WithSecret, ServiceError> {
        let current = self.get(account_id, webhook_id)?;
        let key = self.data_key(&current.webhook)?;
        let secret = generate_webhook_secret();
        let at = self.clock.now();
        let target = self.target(webhook_id, if_match, meta, None);
        let command = |hook: &Webhook| {
            let sealed = key
                .seal(
                    &secret_ad(account_id, webhook_id, hook.secret_version() + 1),
                    secret.expose().as_bytes(),
                )
                .map_err(StoreError::from)?;
            Ok(WebhookCommand::RotateSecret {
                sealed_secret: STANDARD.encode(sealed),
                at,
            })
        };
        let answer = |executed: Executed<Webhook>| {
            Ok(WithSecret {
                versioned: versioned(executed)?,
                secret: secret.clone(),
            })
        };
        self.command(account_id, target, command, answer, recording)
            .await
    }

    /// Deletes for good and destroys the endpoint's data key; its queued deliveries are dropped.
    pub async fn delete(
        &self,
        account_id: &AccountId,
        webhook_id: &WebhookId,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<VersionedWebhook>,
    ) -> Result<VersionedWebhook, ServiceError> {
        self.get(account_id, webhook_id)?;
        let at = self.clock.now();
        let destroy = DataKeyChange::Destroy {
            record: webhook_id.to_string(),
        };
        let target = self.target(webhook_id, if_match, meta, Some(destroy));
        let command = |_: &Webhook| Ok(WebhookCommand::Delete { at });
        let deleted = self
            .command(account_id, target, command, versioned, recording)
            .await;
        // Its rows that waited are dropped.
        self.doorbell.changed(webhook_id.clone());
        deleted
    }

    /// Disables an endpoint on the dispatcher's finding (410, or five days of failures).
    pub(super) async fn disable(
        &self,
        webhook_id: &WebhookId,
        reason: DisabledReason,
    ) -> Result<(), ServiceError> {
        let Some(stored) = self.store.load::<Webhook>(&stream(webhook_id))? else {
            return Ok(());
        };
        let account_id = stored.state.account_id.clone();
        let meta = EventMeta {
            actor: "webhooks".into(),
            request_id: self.ids.request(),
        };
        let at = self.clock.now();
        let target = self.target(webhook_id, None, &meta, None);
        let command = |_: &Webhook| Ok(WebhookCommand::Disable { reason, at });
        match self
            .command(&account_id, target, command, versioned, &Recording::none())
            .await
        {
            Ok(_) | Err(ServiceError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Queues a ping to the endpoint; answers once the queued ping is durable.
    pub async fn test(
        &self,
        account_id: &AccountId,
        webhook_id: &WebhookId,
    ) -> Result<Queued, ServiceError> {
        let hook = self.get(account_id, webhook_id)?.webhook;
        let ping = Ping {
            message_id: self.ids.message(),
            sent_at: self.clock.now(),
        };
        let delivery_id = ping.message_id.clone();
        let row = OutboxRow {
            account_id: hook.account_id,
            position: None,
            ping: Some(ping),
            attempts: 0,
            tries: 0,
            next_at_ms: 0,
        };
        self.store.queue_delivery(webhook_id, &row).await?;
        Ok(Queued { delivery_id })
    }

    /// Queues one delivery of the endpoint again, with the same message id, from the start of
    /// the retry schedule.
    pub async fn redeliver(
        &self,
        account_id: &AccountId,
        webhook_id: &WebhookId,
        delivery_id: &str,
    ) -> Result<Queued, ServiceError> {
        let hook = self.get(account_id, webhook_id)?.webhook;
        let last = self
            .store
            .last_attempt(webhook_id, delivery_id)?
            .ok_or(ServiceError::NotFound("no such delivery"))?;
        let row = OutboxRow {
            account_id: hook.account_id,
            position: last.position,
            ping: last.ping,
            attempts: last.attempt,
            tries: 0,
            next_at_ms: 0,
        };
        self.store.queue_delivery(webhook_id, &row).await?;
        Ok(Queued {
            delivery_id: delivery_id.to_owned(),
        })
    }

    /// The attempt a cursor of the endpoint's delivery log continues before.
    pub fn resume_deliveries(
        &self,
        webhook_id: &WebhookId,
        cursor: &str,
    ) -> Result<u64, InvalidCursor> {
        let value = self
            .cursors
            .open(&Listing::Deliveries(webhook_id), cursor)?;
        value.parse().map_err(|_| InvalidCursor)
    }

    /// A page of the endpoint's delivery log, newest first, before the attempt `before`.
    pub fn deliveries(
        &self,
        account_id: &AccountId,
        webhook_id: &WebhookId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Attempt>, Option<String>), ServiceError> {
        self.get(account_id, webhook_id)?;
        let (page, next) = self.store.attempts(webhook_id, before, limit)?;
        let listing = Listing::Deliveries(webhook_id);
        let next = next.map(|n| self.cursors.issue(&listing, &n.to_string()));
        Ok((page, next))
    }

    fn data_key(&self, hook: &Webhook) -> Result<DataKey, ServiceError> {
        let wrapped = self
            .store
            .data_key(hook.webhook_id.as_str())?
            .ok_or_else(|| unreadable(&hook.webhook_id))?;
        self.master
            .unwrap_key(&wrapped, &data_key_ad(&hook.account_id, &hook.webhook_id))
            .map_err(|_| unreadable(&hook.webhook_id))
    }

    /// The keys that sign a message sent now: the current secret's, and the one a rotation
    /// replaced less than a day ago.
    pub(super) fn signing_keys(
        &self,
        hook: &Webhook,
    ) -> Result<Vec<Redacted<Vec<u8>>>, ServiceError> {
        let key = self.data_key(hook)?;
        let now = self.clock.now();
        let mut keys = Vec::new();
        for secret in hook.signing_secrets(now) {
            let sealed = STANDARD
                .decode(&secret.sealed_secret)
                .map_err(|_| unreadable(&hook.webhook_id))?;
            let ad = secret_ad(&hook.account_id, &hook.webhook_id, secret.secret_version);
            let plain = Redacted::new(
                key.open(&ad, &sealed)
                    .map_err(|_| unreadable(&hook.webhook_id))?,
            );
            let text =
                std::str::from_utf8(plain.expose()).map_err(|_| unreadable(&hook.webhook_id))?;
            keys.push(webhook_secret_key(text).ok_or_else(|| unreadable(&hook.webhook_id))?);
        }
        Ok(keys)
    }

    /// An endpoint by id alone, for the dispatcher.
    pub(super) fn endpoint(&self, webhook_id: &WebhookId) -> Result<Option<Webhook>, ServiceError> {
        Ok(self
            .store
            .load::<Webhook>(&stream(webhook_id))?
            .map(|s| s.state))
    }
}
