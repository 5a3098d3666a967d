//! The dispatcher: the one background task that delivers the outbox (docs/design.md §7,
//! docs/adr/0029). It reads outbox rows that the writer put in the batch of their events (only
//! once that batch is durable), sends each through the outbound client (its SSRF policy, no
//! redirects, its timeouts) signed as Standard Webhooks asks, records every attempt, and
//! reschedules failures on the retry schedule.
//!
//! It never runs on the request path or the writer: it wakes when a group becomes durable, when
//! a ping or redelivery is queued, when a delivery ends, or when a retry falls due. Each delivery
//! is its own task, at most [`PER_ENDPOINT`] at once per endpoint and [`IN_FLIGHT`] in all, so
//! an endpoint that hangs holds its own slots only (until the timeout) and never another's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::ServiceError;
use super::webhooks::Webhooks;
use crate::crypto::webhook_signature;
use crate::domain::webhook::{self, DisabledReason, Webhook, WebhookState};
use crate::domain::{PRIVATE_FIELDS, WebhookId};
use crate::outbound::{Method, Request};
use crate::storage::{Attempt, OutboxRow};

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
/// The longest the dispatcher sleeps without looking at the outbox.
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

/// Which deliveries are in flight, and since when each endpoint has failed.
#[derive(Default)]
struct Flight {
    keys: HashSet<Vec<u8>>,
    per_endpoint: HashMap<WebhookId, usize>,
    /// Per endpoint: since when every attempt has failed, and when the last one did (unix ms).
    failing_since: HashMap<WebhookId, (i64, i64)>,
}

struct Dispatcher {
    webhooks: Webhooks,
    settings: DeliverySettings,
    flight: Mutex<Flight>,
    done: tokio::sync::Notify,
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
        done: tokio::sync::Notify::new(),
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
    fn flight(&self) -> std::sync::MutexGuard<'_, Flight> {
        self.flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(self: Arc<Self>, mut closing: tokio::sync::watch::Receiver<bool>) {
        let store = self.webhooks.store().clone();
        let mut durable = store.positions();
        let queued = self.webhooks.queued().clone();
        loop {
            if *closing.borrow() {
                return;
            }
            let wait = match self.sweep(*durable.borrow()) {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "the webhook outbox could not be read");
                    IDLE
                }
            };
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                () = queued.notified() => {}
                () = self.done.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = closing.changed() => {}
            }
        }
    }

    /// Starts every delivery that is due and has a free slot; answers how long until the next
    /// one falls due (at most [`IDLE`]).
    fn sweep(self: &Arc<Self>, durable: u64) -> Result<Duration, ServiceError> {
        let rows = self.webhooks.store().outbox()?;
        let now = self.webhooks.clock().now().timestamp_millis();
        let mut wait = IDLE;
        let mut endpoints: HashMap<WebhookId, Option<Webhook>> = HashMap::new();
        for (key, webhook_id, row) in rows {
            // Written in a batch that is not durable yet: it may still be lost, its event too.
            if row.position.is_some_and(|p| p > durable) {
                continue;
            }
            if row.next_at_ms > now {
                let until = u64::try_from(row.next_at_ms - now).unwrap_or(0);
                wait = wait.min(Duration::from_millis(until));
                continue;
            }
            let endpoint = match endpoints.get(&webhook_id) {
                Some(found) => found.clone(),
                None => {
                    let found = self.webhooks.endpoint(&webhook_id)?;
                    endpoints.insert(webhook_id.clone(), found.clone());
                    found
                }
            };
            let hook = match endpoint {
                Some(hook) if hook.state == WebhookState::Active => hook,
                // Waits for the endpoint to be enabled again.
                Some(hook) if hook.state == WebhookState::Disabled => continue,
                _ => {
                    self.webhooks.store().remove_outbox(&key)?;
                    continue;
                }
            };
            {
                let mut flight = self.flight();
                let busy = flight.per_endpoint.get(&webhook_id).copied().unwrap_or(0);
                if flight.keys.contains(&key)
                    || busy >= PER_ENDPOINT
                    || flight.keys.len() >= IN_FLIGHT
                {
                    continue;
                }
                flight.keys.insert(key.clone());
                *flight.per_endpoint.entry(webhook_id.clone()).or_default() += 1;
            }
            let dispatcher = self.clone();
            tokio::spawn(async move {
                let kept = row.clone();
                if let Err(error) = dispatcher.deliver(&key, &hook, row).await {
                    tracing::warn!(%error, webhook_id = %hook.webhook_id, "a webhook delivery could not be made");
                    // Not at once again: a fault of this server's (a key that does not open)
                    // would otherwise be retried in a loop.
                    let later = OutboxRow {
                        next_at_ms: now + dispatcher.settings.scaled_ms(SCHEDULE[1]).max(1000),
                        ..kept
                    };
                    let _ = dispatcher.webhooks.store().put_outbox(&key, &later);
                }
                {
                    let mut flight = dispatcher.flight();
                    flight.keys.remove(&key);
                    if let Some(busy) = flight.per_endpoint.get_mut(&hook.webhook_id) {
                        *busy = busy.saturating_sub(1);
                    }
                }
                dispatcher.done.notify_one();
            });
        }
        Ok(wait.max(Duration::from_millis(1)))
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

    async fn deliver(
        &self,
        key: &[u8],
        hook: &Webhook,
        row: OutboxRow,
    ) -> Result<(), ServiceError> {
        let store = self.webhooks.store();
        let Some(message) = self.message(hook, &row)? else {
            store.remove_outbox(key)?;
            return Ok(());
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
        Ok(())
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
