//! Webhook rows (docs/adr/0029): the projection of endpoint streams (`a/webhook:<id>`, the
//! account's endpoint index and its subscriptions row), the outbox rows an event's projection
//! writes for every endpoint subscribed to it, and the rows of delivery attempts.
//!
//! The outbox (`o/`) is written in the batch of the event it announces, so a crash can delay a
//! delivery but never lose it; only a live append writes it ([`Kv::delivers`]), so a rebuild or
//! a verify never produces one and history is never delivered again. The dispatcher
//! (`service::deliveries`) reads it, updates it after each attempt and removes a row once
//! delivered, straight to the tree like the other operational rows: those writes are not
//! events, and a crash that loses one repeats a delivery at worst (at least once). Attempt rows
//! (`w/`) are the delivery log the API pages through; neither prefix is a projection, so
//! `verify` and `rebuild` leave both alone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::kv::{Kv, KvRead};
use super::projection::{EventAt, ProjectionError, add_to_account_feed, apply_aggregate};
use super::{Store, StoreError, keys};
use crate::domain::webhook::{self, Webhook, WebhookEvent};
use crate::domain::{AccountId, WebhookId};

/// An active endpoint of an account and the types it takes, in the account's `i/hooks/` row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub webhook_id: WebhookId,
    pub events: Vec<String>,
}

/// A message that is not an event of the log: a ping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    pub message_id: String,
    pub sent_at: DateTime<Utc>,
}

/// A delivery still to make, to the endpoint its key names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub account_id: AccountId,
    /// The event delivered, by its position in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<Ping>,
    /// Attempts made of this delivery, redeliveries included: the next one's number.
    #[serde(default)]
    pub attempts: u32,
    /// Attempts since it was last queued: where it is in the retry schedule.
    #[serde(default)]
    pub tries: u32,
    /// Unix millis before which it is not tried; 0: at once.
    #[serde(default)]
    pub next_at_ms: i64,
}

impl OutboxRow {
    fn event(account_id: &AccountId, position: u64) -> Self {
        Self {
            account_id: account_id.clone(),
            position: Some(position),
            ping: None,
            attempts: 0,
            tries: 0,
            next_at_ms: 0,
        }
    }
}

/// One delivery attempt, as the delivery log shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The message's id, the `webhook-id` header: `msg_<event id>` for an event.
    pub delivery_id: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<Ping>,
    pub attempt: u32,
    pub attempted_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub delivered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<DateTime<Utc>>,
}

fn corrupt(what: &str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        reason: reason.to_string(),
    }
}

fn subscriptions(
    kv: &impl KvRead,
    account_id: &AccountId,
) -> Result<Vec<Subscription>, StoreError> {
    match kv.get(&keys::webhook_subscriptions(account_id))? {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| corrupt("webhook subscriptions of an account", e)),
    }
}

/// The endpoint's row, its place in the account's index and feed, and the account's
/// subscriptions row, which holds the active endpoints only.
pub(super) fn project_webhook<K: Kv>(
    kv: &mut K,
    at: EventAt<'_>,
    event: WebhookEvent,
) -> Result<(), ProjectionError> {
    let (account_id, webhook_id, active, events) =
        apply_aggregate::<Webhook, _>(kv, at, &event, |after| {
            (
                after.account_id.clone(),
                after.webhook_id.clone(),
                after.is_active(),
                after.events.clone(),
            )
        })?;
    add_to_account_feed(kv, &account_id, at);
    match event {
        WebhookEvent::Created(_) => {
            kv.put(keys::webhook_index(&account_id, &webhook_id), Vec::new())
        }
        WebhookEvent::Deleted { .. } => kv.delete(keys::webhook_index(&account_id, &webhook_id)),
        _ => {}
    }
    let mut subs = subscriptions(kv, &account_id)?;
    subs.retain(|s| s.webhook_id != webhook_id);
    if active {
        subs.push(Subscription { webhook_id, events });
        subs.sort_by(|a, b| a.webhook_id.cmp(&b.webhook_id));
    }
    let key = keys::webhook_subscriptions(&account_id);
    if subs.is_empty() {
        kv.delete(key);
    } else {
        kv.put(key, serde_json::to_vec(&subs).map_err(StoreError::from)?);
    }
    Ok(())
}

/// Writes the outbox rows of an account's event, one per active endpoint subscribed to its type,
/// read from the subscriptions row as this group sees it (an endpoint created earlier in the
/// same group included). Live appends only.
pub(super) fn enqueue<K: Kv>(
    kv: &mut K,
    account_id: &AccountId,
    at: EventAt<'_>,
    event: &impl Serialize,
) -> Result<(), ProjectionError> {
    if !kv.delivers() {
        return Ok(());
    }
    let subs = subscriptions(kv, account_id)?;
    if subs.is_empty() {
        return Ok(());
    }
    // The type string as the log holds it, read from the event only when someone may want it.
    let tagged = serde_json::to_value(event).map_err(StoreError::from)?;
    let Some(event_type) = tagged.get("type").and_then(|t| t.as_str()) else {
        return Ok(());
    };
    for sub in subs
        .iter()
        .filter(|s| webhook::subscribed(&s.events, event_type))
    {
        let row = OutboxRow::event(account_id, at.position);
        kv.put(
            keys::outbox_event(&sub.webhook_id, at.position),
            serde_json::to_vec(&row).map_err(StoreError::from)?,
        );
    }
    Ok(())
}

/// The endpoint an outbox key names.
fn outbox_webhook(key: &[u8]) -> Option<WebhookId> {
    let rest = key.strip_prefix(keys::OUTBOX)?;
    let end = rest.iter().position(|b| *b == 0)?;
    WebhookId::parse(std::str::from_utf8(&rest[..end]).ok()?)
}

impl Store {
    /// Every delivery still to make: its key, endpoint and row. A row that does not decode is
    /// reported (readiness is lost) and left out.
    pub fn outbox(&self) -> Result<Vec<(Vec<u8>, WebhookId, OutboxRow)>, StoreError> {
        let mut rows = Vec::new();
        for row in self.inner.db.scan_prefix(keys::OUTBOX) {
            let (key, value) = row.map_err(|e| self.noticed(e.into(), None))?;
            let decoded = outbox_webhook(&key)
                .ok_or_else(|| corrupt("outbox row", "a key that names no webhook"))
                .and_then(|id| {
                    serde_json::from_slice::<OutboxRow>(&value)
                        .map(|r| (id, r))
                        .map_err(|e| corrupt("outbox row", e))
                });
            match decoded {
                Ok((id, r)) => rows.push((key.to_vec(), id, r)),
                Err(error) => {
                    self.noticed(error, None);
                }
            }
        }
        Ok(rows)
    }

    /// Rewrites an outbox row after an attempt (straight to the tree: see the module's header).
    pub fn put_outbox(&self, key: &[u8], row: &OutboxRow) -> Result<(), StoreError> {
        self.inner.db.insert(key, serde_json::to_vec(row)?)?;
        Ok(())
    }

    pub fn remove_outbox(&self, key: &[u8]) -> Result<(), StoreError> {
        self.inner.db.remove(key)?;
        Ok(())
    }

    /// Queues a delivery to `webhook_id` outside an append: a ping, or a redelivery.
    pub fn queue_delivery(
        &self,
        webhook_id: &WebhookId,
        row: &OutboxRow,
    ) -> Result<(), StoreError> {
        let key = match (&row.ping, row.position) {
            (Some(ping), _) => keys::outbox_message(webhook_id, &ping.message_id),
            (None, Some(position)) => keys::outbox_event(webhook_id, position),
            (None, None) => return Err(corrupt("outbox row", "neither an event nor a ping")),
        };
        self.put_outbox(&key, row)
    }

    /// Appends an attempt to the endpoint's delivery log.
    pub fn record_attempt(
        &self,
        webhook_id: &WebhookId,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        let sequence = self.inner.db.generate_id()?;
        self.inner.db.insert(
            keys::attempt(webhook_id, sequence),
            serde_json::to_vec(attempt)?,
        )?;
        Ok(())
    }

    /// A page of the endpoint's delivery log, newest first, before the attempt `before`; and the
    /// attempt to continue before when more may follow.
    pub fn attempts(
        &self,
        webhook_id: &WebhookId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Attempt>, Option<u64>), StoreError> {
        let prefix = keys::attempts_prefix(webhook_id);
        let end = match before {
            Some(sequence) => keys::attempt(webhook_id, sequence),
            None => [&prefix[..], &[0xff; 9]].concat(),
        };
        let mut page = Vec::new();
        let mut last = None;
        for row in self.inner.db.range(prefix.clone()..end).rev() {
            let (key, value) = row.map_err(|e| self.noticed(e.into(), None))?;
            if page.len() == limit {
                return Ok((page, last));
            }
            let sequence = keys::split_numbered(&key, b"w/").map(|(_, n)| n);
            let attempt = serde_json::from_slice::<Attempt>(&value)
                .map_err(|e| self.noticed(corrupt("delivery attempt", e), None))?;
            page.push(attempt);
            last = sequence;
        }
        Ok((page, None))
    }

    /// The latest attempt of one delivery of the endpoint, if it was ever attempted.
    pub fn last_attempt(
        &self,
        webhook_id: &WebhookId,
        delivery_id: &str,
    ) -> Result<Option<Attempt>, StoreError> {
        for row in self
            .inner
            .db
            .scan_prefix(keys::attempts_prefix(webhook_id))
            .rev()
        {
            let (_, value) = row.map_err(|e| self.noticed(e.into(), None))?;
            let attempt = serde_json::from_slice::<Attempt>(&value)
                .map_err(|e| self.noticed(corrupt("delivery attempt", e), None))?;
            if attempt.delivery_id == delivery_id {
                return Ok(Some(attempt));
            }
        }
        Ok(None)
    }

    /// How many endpoints the account holds (deleted ones are out of its index).
    pub fn webhook_count(&self, account_id: &AccountId) -> Result<usize, StoreError> {
        Ok(self
            .inner
            .db
            .scan_prefix(keys::webhook_index_prefix(account_id))
            .count())
    }
}
