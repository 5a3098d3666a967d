//! Webhook rows (docs/adr/0029): the projection of endpoint streams (`a/webhook:<id>`, the
//! account's endpoint index and its subscriptions row), the outbox rows an event's projection
//! writes for every endpoint subscribed to it, and the rows of delivery attempts.
//!
//! The outbox (`o/`) is written in the batch of the event it announces, so a crash can delay a
//! delivery but never lose it; only a live append writes it ([`Kv::delivers`]), so a rebuild or
//! a verify never produces one and history is never delivered again. The dispatcher
//! (`service::deliveries`) reads it, updates it after each attempt and removes a row once
//! delivered, straight to the tree like the other operational rows: those writes are not
//! events, and a crash that loses one repeats a delivery at worst (at least once). Once a
//! group is durable, the writer also hands its outbox rows to [`NewDeliveries`], so that the
//! dispatcher learns of new rows without reading the outbox again; it reads the whole outbox
//! only when it starts. Attempt rows (`w/`) are the delivery log the API pages through, kept for
//! a retention ([`Store::sweep_attempts`], docs/adr/0035); neither prefix is a projection, so
//! `verify` and `rebuild` leave both alone.

use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::kv::{Kv, KvRead};
use super::projection::{EventAt, ProjectionError, add_to_account_feed, apply_aggregate};
use super::writer::Job;
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

fn decode_outbox(key: &[u8], value: &[u8]) -> Result<(WebhookId, OutboxRow), StoreError> {
    let id =
        outbox_webhook(key).ok_or_else(|| corrupt("outbox row", "a key that names no webhook"))?;
    let row = serde_json::from_slice(value).map_err(|e| corrupt("outbox row", e))?;
    Ok((id, row))
}

/// A delivery still to make: its outbox key, its endpoint and its row.
pub type Delivery = (Vec<u8>, WebhookId, OutboxRow);

/// Rows handed over at most before the dispatcher must read the outbox instead: a process
/// that appends without a dispatcher (an import) does not hold every row in memory.
const MAX_NEW_DELIVERIES: usize = 100_000;

/// The outbox rows of durable groups, in the order written, until the dispatcher takes them.
#[derive(Default)]
pub(super) struct NewDeliveries(Mutex<NewRows>);

#[derive(Default)]
struct NewRows {
    rows: Vec<(Vec<u8>, Vec<u8>)>,
    /// Rows were dropped: the outbox must be read in full.
    overflowed: bool,
}

impl NewDeliveries {
    pub(super) fn push(&self, rows: Vec<(Vec<u8>, Vec<u8>)>) {
        if rows.is_empty() {
            return;
        }
        let mut new = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if new.overflowed {
            return;
        }
        if new.rows.len() + rows.len() > MAX_NEW_DELIVERIES {
            new.rows = Vec::new();
            new.overflowed = true;
        } else {
            new.rows.extend(rows);
        }
    }
}

/// What has reached the outbox since the dispatcher last asked.
pub enum NewOutboxRows {
    Rows(Vec<Delivery>),
    /// Too many to hold: read the whole outbox again.
    Overflowed,
}

impl Store {
    /// Every delivery still to make. A row that does not decode is reported (readiness is
    /// lost) and left out.
    pub fn outbox(&self) -> Result<Vec<Delivery>, StoreError> {
        self.outbox_under(keys::OUTBOX)
    }

    /// Every delivery still to make to one endpoint.
    pub fn outbox_of(&self, webhook_id: &WebhookId) -> Result<Vec<Delivery>, StoreError> {
        self.outbox_under(&keys::outbox_prefix(webhook_id))
    }

    fn outbox_under(&self, prefix: &[u8]) -> Result<Vec<Delivery>, StoreError> {
        let mut rows = Vec::new();
        for row in self.inner.db.scan_prefix(prefix) {
            let (key, value) = row.map_err(|e| self.noticed(e.into(), None))?;
            match decode_outbox(&key, &value) {
                Ok((id, r)) => rows.push((key.to_vec(), id, r)),
                Err(error) => {
                    self.noticed(error, None);
                }
            }
        }
        Ok(rows)
    }

    /// The outbox rows that appends have made durable since the last call.
    pub fn new_outbox_rows(&self) -> NewOutboxRows {
        let taken = {
            let mut new = self
                .inner
                .new_deliveries
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if std::mem::take(&mut new.overflowed) {
                return NewOutboxRows::Overflowed;
            }
            std::mem::take(&mut new.rows)
        };
        let mut rows = Vec::with_capacity(taken.len());
        for (key, value) in taken {
            match decode_outbox(&key, &value) {
                Ok((id, row)) => rows.push((key, id, row)),
                Err(error) => {
                    self.noticed(error, None);
                }
            }
        }
        NewOutboxRows::Rows(rows)
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

    /// Queues a delivery to `webhook_id` outside an append: a ping, or a redelivery. The row
    /// goes through the writer (`Job::Rows`) and this answers once it is durable, after the
    /// same flush and fdatasync as an append, so a delivery the API has accepted survives a
    /// crash; the writer hands it to the dispatcher with its group's other outbox rows.
    pub async fn queue_delivery(
        &self,
        webhook_id: &WebhookId,
        row: &OutboxRow,
    ) -> Result<(), StoreError> {
        let key = match (&row.ping, row.position) {
            (Some(ping), _) => keys::outbox_message(webhook_id, &ping.message_id),
            (None, Some(position)) => keys::outbox_event(webhook_id, position),
            (None, None) => return Err(corrupt("outbox row", "neither an event nor a ping")),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Rows((vec![(key, serde_json::to_vec(row)?)], tx)))?;
        rx.await.map_err(|_| StoreError::Closed)?
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

    /// Sweeps the delivery log of every endpoint (docs/adr/0035): removes the attempts made
    /// before `before`, and all but the newest `keep` of each endpoint. Answers how many went.
    /// Straight to the tree, as the log is written; an attempt that does not decode is reported
    /// and kept unless the count removes it.
    pub fn sweep_attempts(&self, before: DateTime<Utc>, keep: usize) -> Result<usize, StoreError> {
        /// The one field the sweep reads of an attempt.
        #[derive(Deserialize)]
        struct Made {
            attempted_at: DateTime<Utc>,
        }
        let db = &self.inner.db;
        let mut from = keys::ATTEMPTS.to_vec();
        let mut removed = 0;
        // One endpoint at a time: its newest `keep` young attempts stay, then the next
        // endpoint's prefix is sought directly.
        while let Some(first) = db.range(from.clone()..).next() {
            let (key, _) = first.map_err(|e| self.noticed(e.into(), None))?;
            if !key.starts_with(keys::ATTEMPTS) {
                break;
            }
            let Some((name, _)) = keys::split_numbered(&key, keys::ATTEMPTS) else {
                from = [&key[..], &[0]].concat();
                continue;
            };
            let prefix = [keys::ATTEMPTS, name, &[0]].concat();
            let mut batch = sled::Batch::default();
            let mut kept = 0;
            for row in db.scan_prefix(&prefix).rev() {
                let (key, value) = row.map_err(|e| self.noticed(e.into(), None))?;
                let young = match serde_json::from_slice::<Made>(&value) {
                    Ok(made) => made.attempted_at >= before,
                    Err(e) => {
                        self.noticed(corrupt("delivery attempt", e), None);
                        true
                    }
                };
                if young && kept < keep {
                    kept += 1;
                } else {
                    batch.remove(key);
                    removed += 1;
                }
            }
            db.apply_batch(batch)?;
            from = [keys::ATTEMPTS, name, &[1]].concat();
        }
        Ok(removed)
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

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::crypto::MasterKey;
    use crate::storage::Durability;

    fn attempt(n: u32, attempted_at: DateTime<Utc>) -> Attempt {
        Attempt {
            delivery_id: format!("msg_{n}"),
            event_type: "byok.enabled".into(),
            position: Some(u64::from(n)),
            ping: None,
            attempt: 1,
            attempted_at,
            status_code: Some(204),
            latency_ms: 1,
            delivered: true,
            error: None,
            next_retry_at: None,
        }
    }

    fn log(store: &Store, webhook_id: &WebhookId) -> Vec<String> {
        let (page, next) = store.attempts(webhook_id, None, 100).unwrap();
        assert_eq!(next, None);
        page.into_iter().map(|a| a.delivery_id).collect()
    }

    #[test]
    fn the_sweep_drops_old_attempts_and_keeps_the_newest_per_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &MasterKey::generate(), Durability::Sync).unwrap();
        let [a, b, c] = [1u128, 2, 3].map(WebhookId::from_ulid);
        let now = Utc::now();
        // a: five attempts, the first two 40 days old; b: three recent ones; c: one old one.
        for n in 0..5 {
            let age = if n < 2 {
                Duration::days(40)
            } else {
                Duration::minutes(5 - i64::from(n))
            };
            store.record_attempt(&a, &attempt(n, now - age)).unwrap();
        }
        for n in 10..13 {
            store.record_attempt(&b, &attempt(n, now)).unwrap();
        }
        store
            .record_attempt(&c, &attempt(20, now - Duration::days(31)))
            .unwrap();
        let before = now - Duration::days(30);

        assert_eq!(store.sweep_attempts(before, 10).unwrap(), 3);
        assert_eq!(log(&store, &a), ["msg_4", "msg_3", "msg_2"]);
        assert_eq!(log(&store, &b), ["msg_12", "msg_11", "msg_10"]);
        assert!(log(&store, &c).is_empty());

        // The count keeps the newest of each endpoint, whatever their age.
        assert_eq!(store.sweep_attempts(before, 2).unwrap(), 2);
        assert_eq!(log(&store, &a), ["msg_4", "msg_3"]);
        assert_eq!(log(&store, &b), ["msg_12", "msg_11"]);
        assert_eq!(store.sweep_attempts(before, 2).unwrap(), 0);
    }
}
