//! The dispatcher: the one background task that delivers the outbox (docs/design.md §7,
//! docs/adr/0029). It learns of outbox rows that the writer put in the batch of their events
//! once that batch is durable, sends each through the outbound client (its SSRF policy, no
//! redirects, its timeouts, its connection pool) signed as Standard Webhooks asks, records
//! every attempt, reschedules failures on the retry schedule, and sweeps the delivery log
//! (docs/adr/0035).
//!
//! It never runs on the request path or the writer. It holds the deliveries still to make in
//! memory, per endpoint and by when each falls due: read from the outbox once when it starts,
//! then fed by the writer with the rows of each durable group ([`Store::new_outbox_rows`]: the
//! outbox rows of events, and the pings and redeliveries the API queues through it) and by the
//! API with endpoints whose waiting rows are to be read again ([`Doorbell`]). The outbox on
//! disk stays what at-least-once rests on; the queue in memory only saves reading it on every
//! wake. One wake (a durable group, a ring, a delivery ended, a retry due) starts every
//! delivery that is due and has a slot; each delivery is its own task,
//! at most [`PER_ENDPOINT`] at once per endpoint and [`IN_FLIGHT`] in all, so an endpoint that
//! hangs holds its own slots only (until the timeout) and never another's.
//!
//! [`Store::new_outbox_rows`]: crate::storage::Store::new_outbox_rows

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::Notify;

use super::ServiceError;
use super::webhooks::Webhooks;
use crate::crypto::webhook_signature;
use crate::domain::webhook::{self, DisabledReason, Webhook, WebhookState};
use crate::domain::{PRIVATE_FIELDS, WebhookId};
use crate::outbound::{Method, Request};
use crate::storage::{Attempt, Delivery, NewOutboxRows, OutboxRow};

/// Deliveries in flight to one endpoint at most.
pub const PER_ENDPOINT: usize = 4;
/// Deliveries in flight in all at most.
pub const IN_FLIGHT: usize = 64;
/// The retry schedule of the Standard Webhooks specification (docs/design.md §7): the delay
/// before each attempt after a failed one, in seconds; after the last, the delivery is dropped.
pub const SCHEDULE: [u64; 10] = [
    0, 5, 300, 1800, 7200, 18_000, 36_000, 50_400, 72_000, 86_400,
];
/// An endpoint that has failed every delivery for this long is disabled.
pub const DISABLE_AFTER_SECS: u64 = 5 * 24 * 3600;
/// The delivery log keeps attempts this long (docs/adr/0035)...
pub const LOG_RETENTION_DAYS: i64 = 30;
/// ...and at most this many per endpoint, the newest.
pub const LOG_KEEP: usize = 1000;
/// How often the delivery log is swept (and once at start).
const LOG_SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// The longest the dispatcher sleeps without looking at its queue.
const IDLE: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// Multiplies every delay of the schedule and the five days (`KEYLEDGER_WEBHOOK_RETRY_SCALE`;
    /// tests compress them).
    pub retry_scale: f64,
    /// The whole of one attempt: connection, request and answer.
    pub timeout: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            retry_scale: 1.0,
            timeout: Duration::from_secs(10),
        }
    }
}

impl DeliverySettings {
    fn scaled_ms(&self, secs: u64) -> i64 {
        let ms = secs as f64 * 1000.0 * self.retry_scale.max(0.0);
        ms.min(i64::MAX as f64) as i64
    }
}

/// Where the API rings the dispatcher with endpoints that changed (enabled again, deleted):
/// their rows on disk are read again on its next wake. Pings and redeliveries need no ring:
/// they reach the outbox through the writer, which hands them over with its durable groups.
#[derive(Default)]
pub struct Doorbell {
    changed: Mutex<Vec<WebhookId>>,
    notify: Notify,
}

impl Doorbell {
    /// An endpoint whose state changed: rows that waited for it are to be read again.
    pub fn changed(&self, webhook_id: WebhookId) {
        self.changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(webhook_id);
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<WebhookId> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// An endpoint's deliveries waiting for their time or a slot: by key, and by when each falls
/// due.
#[derive(Default)]
struct Waiting {
    rows: HashMap<Vec<u8>, OutboxRow>,
    due: BTreeSet<(i64, Vec<u8>)>,
}

impl Waiting {
    fn insert(&mut self, key: Vec<u8>, row: OutboxRow) {
        if let Some(old) = self.rows.get(&key) {
            self.due.remove(&(old.next_at_ms, key.clone()));
        }
        self.due.insert((row.next_at_ms, key.clone()));
        self.rows.insert(key, row);
    }

    fn remove(&mut self, key: &[u8]) -> Option<OutboxRow> {
        let row = self.rows.remove(key)?;
        self.due.remove(&(row.next_at_ms, key.to_vec()));
        Some(row)
    }
}

/// The deliveries waiting and in flight, and since when each endpoint has failed.
#[derive(Default)]
struct Flight {
    waiting: HashMap<WebhookId, Waiting>,
    keys: HashSet<Vec<u8>>,
    per_endpoint: HashMap<WebhookId, usize>,
    /// Per endpoint: since when every attempt has failed, and when the last one did (unix ms).
    failing_since: HashMap<WebhookId, (i64, i64)>,
}

impl Flight {
    /// Takes deliveries into the queue; one in flight already is left to its attempt.
    fn take(&mut self, deliveries: Vec<Delivery>) {
        for (key, webhook_id, row) in deliveries {
            if !self.keys.contains(&key) {
                self.waiting.entry(webhook_id).or_default().insert(key, row);
            }
        }
    }
}

struct Dispatcher {
    webhooks: Webhooks,
    settings: DeliverySettings,
    flight: Mutex<Flight>,
    done: Notify,
}

/// Starts the dispatcher on the current runtime; it ends when `closing` turns true or the store
/// closes.
pub fn spawn(
    webhooks: Webhooks,
    settings: DeliverySettings,
    closing: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let dispatcher = Arc::new(Dispatcher {
        webhooks,
        settings,
        flight: Mutex::default(),
        done: Notify::new(),
    });
    tokio::spawn(dispatcher.run(closing))
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    Gone,
    Failed { status: Option<u16>, error: String },
}

/// A message ready to send.
struct Message {
    id: String,
    event_type: String,
    body: Vec<u8>,
}

impl Dispatcher {
    fn flight(&self) -> MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(self: Arc<Self>, mut closing: tokio::sync::watch::Receiver<bool>) {
        let store = self.webhooks.store().clone();
        let mut durable = store.positions();
        let doorbell = self.webhooks.doorbell().clone();
        // The whole outbox is read on start, and again if the writer had more new rows than
        // it holds for the dispatcher.
        let mut read_outbox = true;
        let mut sweep_at = Instant::now();
        loop {
            if *closing.borrow() {
                return;
            }
            if read_outbox {
                match store.outbox() {
                    Ok(rows) => {
                        self.flight().take(rows);
                        read_outbox = false;
                    }
                    Err(error) => tracing::warn!(%error, "the webhook outbox could not be read"),
                }
            }
            match store.new_outbox_rows() {
                NewOutboxRows::Rows(rows) => self.flight().take(rows),
                NewOutboxRows::Overflowed => {
                    read_outbox = true;
                    continue;
                }
            }
            for webhook_id in doorbell.take() {
                match store.outbox_of(&webhook_id) {
                    Ok(rows) => self.flight().take(rows),
                    Err(error) => tracing::warn!(%error, "the webhook outbox could not be read"),
                }
            }
            if sweep_at <= Instant::now() {
                sweep_at = Instant::now() + LOG_SWEEP_EVERY;
                self.sweep_log();
            }
            let wait = match self.start_due(*durable.borrow()) {
                Ok(wait) => wait,
                Err(error) => {
                    tracing::warn!(%error, "the webhook outbox could not be read");
                    IDLE
                }
            };
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                () = doorbell.notify.notified() => {}
                () = self.done.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = closing.changed() => {}
            }
        }
    }

    /// Sweeps the delivery log on the blocking pool: the dispatcher's thread goes on delivering.
    fn sweep_log(&self) {
        let store = self.webhooks.store().clone();
        let before = self.webhooks.clock().now() - chrono::Duration::days(LOG_RETENTION_DAYS);
        tokio::task::spawn_blocking(move || match store.sweep_attempts(before, LOG_KEEP) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "swept old attempts from the delivery log"),
            Err(error) => tracing::warn!(%error, "the delivery log could not be swept"),
        });
    }

    /// Starts every delivery that is due, durable and has a free slot; answers how long until
    /// the next one falls due (at most [`IDLE`]). Looks at each endpoint's earliest rows only.
    fn start_due(self: &Arc<Self>, durable: u64) -> Result<Duration, ServiceError> {
        let now = self.webhooks.clock().now().timestamp_millis();
        let mut wait = IDLE;
        let mut starts = Vec::new();
        let mut flight = self.flight();
        // The deliveries not yet done that this dispatcher holds: waiting (due or not) and in
        // flight; an endpoint's rows kept on disk while it is disabled are not among them.
        let depth =
            flight.waiting.values().map(|w| w.rows.len()).sum::<usize>() + flight.keys.len();
        crate::metrics::count(|m| {
            m.webhook_outbox_depth
                .set(i64::try_from(depth).unwrap_or(i64::MAX))
        });
        let endpoints: Vec<WebhookId> = flight.waiting.keys().cloned().collect();
        for webhook_id in endpoints {
            let busy = flight.per_endpoint.get(&webhook_id).copied().unwrap_or(0);
            let free = PER_ENDPOINT
                .saturating_sub(busy)
                .min(IN_FLIGHT.saturating_sub(flight.keys.len()));
            let Some(waiting) = flight.waiting.get(&webhook_id) else {
                continue;
            };
            let mut due = Vec::new();
            for (at, key) in &waiting.due {
                if due.len() == free {
                    break;
                }
                if *at > now {
                    let until = u64::try_from(at - now).unwrap_or(0);
                    wait = wait.min(Duration::from_millis(until));
                    break;
                }
                // Rows read from the outbox on start may be of a batch not yet durable: it
                // may still be lost, its event too.
                if waiting.rows.get(key).and_then(|r| r.position) <= Some(durable) {
                    due.push(key.clone());
                }
            }
            if due.is_empty() {
                continue;
            }
            match self.webhooks.endpoint(&webhook_id)? {
                Some(hook) if hook.state == WebhookState::Active => {
                    for key in due {
                        let Some(row) = flight
                            .waiting
                            .get_mut(&webhook_id)
                            .and_then(|w| w.remove(&key))
                        else {
                            continue;
                        };
                        flight.keys.insert(key.clone());
                        *flight.per_endpoint.entry(webhook_id.clone()).or_default() += 1;
                        starts.push((key, hook.clone(), row));
                    }
                }
                // Its rows wait on disk for the endpoint to be enabled again, which rings the
                // doorbell.
                Some(hook) if hook.state == WebhookState::Disabled => {
                    flight.waiting.remove(&webhook_id);
                }
                _ => {
                    flight.waiting.remove(&webhook_id);
                    for (key, _, _) in self.webhooks.store().outbox_of(&webhook_id)? {
                        self.webhooks.store().remove_outbox(&key)?;
                    }
                }
            }
        }
        flight.waiting.retain(|_, w| !w.rows.is_empty());
        drop(flight);
        for (key, hook, row) in starts {
            self.start(key, hook, row, now);
        }
        Ok(wait.max(Duration::from_millis(1)))
    }

    /// One delivery as its own task; its end frees the slot, queues a retry if there is one,
    /// and wakes the dispatcher.
    fn start(self: &Arc<Self>, key: Vec<u8>, hook: Webhook, row: OutboxRow, now: i64) {
        let dispatcher = self.clone();
        tokio::spawn(async move {
            let kept = row.clone();
            let retry = match dispatcher.deliver(&key, &hook, row).await {
                Ok(retry) => retry,
                Err(error) => {
                    tracing::warn!(%error, webhook_id = %hook.webhook_id, "a webhook delivery could not be made");
                    // Not at once again: a fault of this server's (a key that does not open)
                    // would otherwise be retried in a loop.
                    let later = OutboxRow {
                        next_at_ms: now + dispatcher.settings.scaled_ms(SCHEDULE[1]).max(1000),
                        ..kept
                    };
                    let _ = dispatcher.webhooks.store().put_outbox(&key, &later);
                    Some(later)
                }
            };
            {
                let mut flight = dispatcher.flight();
                flight.keys.remove(&key);
                if let Some(busy) = flight.per_endpoint.get_mut(&hook.webhook_id) {
                    *busy = busy.saturating_sub(1);
                }
                if let Some(row) = retry {
                    flight.take(vec![(key, hook.webhook_id.clone(), row)]);
                }
            }
            dispatcher.done.notify_one();
        });
    }

    /// The message an outbox row announces, or `None` when its event is not in the log.
    fn message(&self, hook: &Webhook, row: &OutboxRow) -> Result<Option<Message>, ServiceError> {
        let (id, event_type, timestamp, data) = match (&row.ping, row.position) {
            (Some(ping), _) => (
                ping.message_id.clone(),
                webhook::PING.to_owned(),
                ping.sent_at,
                json!({"webhook_id": hook.webhook_id}),
            ),
            (None, Some(position)) => {
                let Some(mut envelope) = self.webhooks.store().event(position)? else {
                    return Ok(None);
                };
                if let Some(data) = envelope.data.as_object_mut() {
                    for field in PRIVATE_FIELDS {
                        data.remove(*field);
                    }
                }
                (
                    format!("msg_{}", envelope.event_id),
                    envelope.event_type,
                    envelope.occurred_at,
                    envelope.data,
                )
            }
            (None, None) => return Ok(None),
        };
        let body = serde_json::to_vec(&json!({
            "type": event_type,
            "timestamp": timestamp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "data": data,
        }))
        .map_err(crate::storage::StoreError::from)?;
        Ok(Some(Message {
            id,
            event_type,
            body,
        }))
    }

    /// Makes one attempt and records it; answers the row to try again, if any.
    async fn deliver(
        &self,
        key: &[u8],
        hook: &Webhook,
        row: OutboxRow,
    ) -> Result<Option<OutboxRow>, ServiceError> {
        let store = self.webhooks.store();
        let Some(message) = self.message(hook, &row)? else {
            store.remove_outbox(key)?;
            return Ok(None);
        };
        let now = self.webhooks.clock().now();
        let timestamp = now.timestamp();
        let signature = self
            .webhooks
            .signing_keys(hook)?
            .iter()
            .map(|k| webhook_signature(k.expose(), &message.id, timestamp, &message.body))
            .collect::<Vec<_>>()
            .join(" ");
        let request = Request {
            method: Method::Post,
            url: hook.url.clone(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("webhook-id".into(), message.id.clone()),
                ("webhook-timestamp".into(), timestamp.to_string()),
                ("webhook-signature".into(), signature),
            ],
            body: message.body,
        };
        let started = Instant::now();
        let sent = tokio::time::timeout(
            self.settings.timeout,
            self.webhooks
                .outbound()
                .send_within(request, self.settings.timeout),
        )
        .await;
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        crate::metrics::count(|m| {
            m.webhook_delivery_seconds
                .observe(started.elapsed().as_secs_f64())
        });
        let outcome = match sent {
            Ok(Ok(answer)) if (200..300).contains(&answer.status) => {
                Outcome::Delivered(answer.status)
            }
            Ok(Ok(answer)) if answer.status == 410 => Outcome::Gone,
            Ok(Ok(answer)) => Outcome::Failed {
                status: Some(answer.status),
                error: format!("answered {}", answer.status),
            },
            Ok(Err(error)) => Outcome::Failed {
                status: None,
                error: error.to_string(),
            },
            Err(_) => Outcome::Failed {
                status: None,
                error: "no answer in time".into(),
            },
        };
        let mut attempt = Attempt {
            delivery_id: message.id,
            event_type: message.event_type,
            position: row.position,
            ping: row.ping.clone(),
            attempt: row.attempts + 1,
            attempted_at: now,
            status_code: None,
            latency_ms,
            delivered: false,
            error: None,
            next_retry_at: None,
        };
        let webhook_id = &hook.webhook_id;
        let label = match outcome {
            Outcome::Delivered(_) => "delivered",
            Outcome::Gone => "gone",
            Outcome::Failed { .. } => "failed",
        };
        crate::metrics::count(|m| m.webhook_deliveries.with_label_values(&[label]).inc());
        let mut retry = None;
        match outcome {
            Outcome::Delivered(status) => {
                attempt.status_code = Some(status);
                attempt.delivered = true;
                store.remove_outbox(key)?;
                store.record_attempt(webhook_id, &attempt)?;
                self.flight().failing_since.remove(webhook_id);
            }
            Outcome::Gone => {
                attempt.status_code = Some(410);
                attempt.error = Some("answered 410 Gone: the endpoint is disabled".into());
                store.remove_outbox(key)?;
                store.record_attempt(webhook_id, &attempt)?;
                self.webhooks
                    .disable(webhook_id, DisabledReason::Gone)
                    .await?;
            }
            Outcome::Failed { status, error } => {
                attempt.status_code = status;
                attempt.error = Some(error);
                let tries = row.tries + 1;
                let next = SCHEDULE
                    .get(usize::try_from(tries).unwrap_or(usize::MAX))
                    .map(|secs| now.timestamp_millis() + jitter(self.settings.scaled_ms(*secs)));
                match next {
                    Some(next_at_ms) => {
                        attempt.next_retry_at = DateTime::<Utc>::from_timestamp_millis(next_at_ms);
                        let row = OutboxRow {
                            attempts: attempt.attempt,
                            tries,
                            next_at_ms,
                            ..row
                        };
                        store.put_outbox(key, &row)?;
                        retry = Some(row);
                    }
                    // The schedule is spent: the delivery log keeps what was tried.
                    None => store.remove_outbox(key)?,
                }
                store.record_attempt(webhook_id, &attempt)?;
                let at = now.timestamp_millis();
                // A run of failures is unbroken while attempts keep coming (a pending delivery
                // is tried at least once a scaled day); after a longer quiet, it starts again.
                let gap = self.settings.scaled_ms(SCHEDULE[SCHEDULE.len() - 1]) * 11 / 10;
                let since = {
                    let mut flight = self.flight();
                    let run = flight
                        .failing_since
                        .entry(webhook_id.clone())
                        .or_insert((at, at));
                    if at - run.1 > gap {
                        run.0 = at;
                    }
                    run.1 = at;
                    run.0
                };
                let limit = self.settings.scaled_ms(DISABLE_AFTER_SECS);
                if at - since >= limit {
                    self.flight().failing_since.remove(webhook_id);
                    self.webhooks
                        .disable(webhook_id, DisabledReason::Failing)
                        .await?;
                }
            }
        }
        Ok(retry)
    }
}

/// `ms` give or take a tenth, so that endpoints that failed together do not retry together.
fn jitter(ms: i64) -> i64 {
    if ms <= 0 {
        return 0;
    }
    let [a, b, c, d] = crate::crypto::random_bytes::<4>();
    let unit = f64::from(u32::from_be_bytes([a, b, c, d])) / f64::from(u32::MAX);
    let factor = 0.9 + unit * 0.2;
    (ms as f64 * factor) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_scales_and_jitters_within_a_tenth() {
        let settings = DeliverySettings {
            retry_scale: 0.001,
            ..DeliverySettings::default()
        };
        assert_eq!(settings.scaled_ms(SCHEDULE[0]), 0);
        assert_eq!(settings.scaled_ms(SCHEDULE[1]), 5);
        assert_eq!(settings.scaled_ms(DISABLE_AFTER_SECS), 432_000);
        for _ in 0..100 {
            let j = jitter(1000);
            assert!((900..=1100).contains(&j), "{j}");
        }
        assert_eq!(jitter(0), 0);
    }
}
