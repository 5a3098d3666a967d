//! Credential health (docs/health.md, docs/adr/0028): the evidence probes and usage reports bring,
//! turned into `byok.health_changed` through the pure rules of `domain::health`, and the periodic
//! prober (`--probe-interval`), the one background task that probes credentials on its own.
//!
//! Every change is appended at the exact stream version it was decided on, so of concurrent
//! reports or probes that find the same change, one appends it and the others, deciding again,
//! find it recorded. Must not import http.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;

use super::clock::SharedClock;
use super::credentials::Credentials;
use super::ids::Ids;
use super::resolve::Resolver;
use super::{ServiceError, settle};
use crate::domain::credential::{self, Credential, CredentialCommand, CredentialEvent, TestResult};
use crate::domain::health::{Evidence, HealthCause};
use crate::domain::{AccountId, CredentialId};
use crate::es::{Aggregate, DomainEvent, EventMeta, ExpectedVersion, StreamId};
use crate::storage::{AppendError, AppendRequest, Store, StoreError};

/// The default of `--rate-limit-cooldown`: long enough for a provider's per-minute window to
/// roll over.
pub const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(60);
/// The default of `--probe-concurrency`.
pub const DEFAULT_PROBE_CONCURRENCY: usize = 4;
/// The actor of the events the periodic prober appends: the server itself.
pub const PERIODIC_ACTOR: &str = "keyledger";
/// How many times a change of health is decided again after another writer appended to the
/// credential's stream first.
const RETRIES: usize = 64;

/// How health is kept: the flags of docs/health.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// How long a 429 keeps a credential out of resolve.
    pub rate_limit_cooldown: Duration,
    /// Probe every active credential whose last probe is older than this; `None`: never.
    pub probe_interval: Option<Duration>,
    /// Most periodic probes in flight at once.
    pub probe_concurrency: usize,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            rate_limit_cooldown: DEFAULT_RATE_LIMIT_COOLDOWN,
            probe_interval: None,
            probe_concurrency: DEFAULT_PROBE_CONCURRENCY,
        }
    }
}

/// The cooldown as the domain counts time.
pub(super) fn cooldown(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn stream(byok_id: &CredentialId) -> StreamId {
    StreamId::new(Credential::KIND, byok_id.as_str())
}

/// The events `decided` (a probe's `byok.tested` among them, or not), followed by the
/// `byok.health_changed` the probe's result makes, if any: decided on the state the first
/// events produce, so both go in one append at one expected version. A probe that recorded
/// nothing (a replaced secret version) changes no health either.
pub(super) fn with_probe_health(
    state: Option<&Credential>,
    mut decided: Vec<CredentialEvent>,
    result: &TestResult,
    cause: HealthCause,
    cooldown: TimeDelta,
    now: DateTime<Utc>,
) -> Result<Vec<CredentialEvent>, ServiceError> {
    let tested = decided
        .iter()
        .any(|e| matches!(e, CredentialEvent::Tested(_)));
    let Some(evidence) = Evidence::from_probe(result, cooldown, cause).filter(|_| tested) else {
        return Ok(decided);
    };
    let after = decided
        .iter()
        .fold(state.cloned(), |s, e| Some(Credential::apply(s, e)));
    let command = CredentialCommand::ObserveHealth { evidence, now };
    decided.extend(credential::decide(after.as_ref(), command)?);
    Ok(decided)
}

/// Appends the `byok.health_changed` that `evidence` makes, if it changes the credential's
/// health, at the stream version read; on a conflict decides again on what is there now. Waits
/// for resolve's follower, so the caller's next resolve sees the change.
pub(super) async fn observe(
    store: &Store,
    clock: &SharedClock,
    byok_id: &CredentialId,
    evidence: Evidence,
    meta: &EventMeta,
) -> Result<(), ServiceError> {
    for _ in 0..RETRIES {
        let Some(stored) = store.load::<Credential>(&stream(byok_id))? else {
            return Ok(());
        };
        let now = clock.now();
        let command = CredentialCommand::ObserveHealth { evidence, now };
        let events = credential::decide(Some(&stored.state), command)?;
        if events.is_empty() {
            return Ok(());
        }
        let request = AppendRequest {
            stream: stream(byok_id),
            expected: ExpectedVersion::Exact(stored.stream_version),
            events: events
                .iter()
                .map(DomainEvent::to_new_event)
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)?,
            meta: meta.clone(),
            data_key: None,
            also: Vec::new(),
            idempotency: None,
        };
        match store.append(request).await {
            Ok(appended) => {
                if let Some(last) = appended.last() {
                    settle(store, last.position).await;
                }
                return Ok(());
            }
            Err(AppendError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// An active credential the prober may probe, and when its current secret was last probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub account_id: AccountId,
    pub byok_id: CredentialId,
    pub last_tested: Option<DateTime<Utc>>,
}

/// The credentials due at `now`, least recently probed first (never-probed ones before all).
pub fn due(
    mut candidates: Vec<Candidate>,
    interval: TimeDelta,
    now: DateTime<Utc>,
) -> Vec<Candidate> {
    candidates.retain(|c| c.last_tested.is_none_or(|at| at + interval <= now));
    candidates.sort_by(|a, b| {
        a.last_tested
            .cmp(&b.last_tested)
            .then_with(|| a.byok_id.cmp(&b.byok_id))
    });
    candidates
}

/// How often the prober looks for due credentials: a tenth of the interval, within 100 ms and
/// 10 s.
fn tick(interval: Duration) -> Duration {
    (interval / 10).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

/// How many probes one tick starts, so that `total` credentials are each probed once per
/// `interval` at an even pace rather than all at once (after a start, say): at least one.
fn per_tick(total: usize, tick: Duration, interval: Duration) -> usize {
    let ticks = (interval.as_secs_f64() / tick.as_secs_f64()).max(1.0);
    ((total as f64 / ticks).ceil() as usize).max(1)
}

/// The periodic prober: every tick, probes the due active credentials (a share of them, spread
/// over the interval), at most `concurrency` at once, through the same path as
/// `POST /v1/byok/test/{id}` with the cause `periodic_probe`. Stops as soon as `closing` is set.
pub struct Prober {
    credentials: Arc<Credentials>,
    resolver: Resolver,
    clock: SharedClock,
    ids: Arc<Ids>,
    interval: Duration,
    concurrency: usize,
}

impl Prober {
    /// A prober when `settings` turn periodic probes on.
    pub fn new(
        settings: &HealthSettings,
        credentials: Arc<Credentials>,
        resolver: Resolver,
        clock: SharedClock,
        ids: Arc<Ids>,
    ) -> Option<Self> {
        let interval = settings.probe_interval.filter(|i| !i.is_zero())?;
        Some(Self {
            credentials,
            resolver,
            clock,
            ids,
            interval,
            concurrency: settings.probe_concurrency.max(1),
        })
    }

    /// Runs until `closing` turns true (or its sender is gone); a probe in flight then is
    /// dropped, its append either made or not, never half.
    pub async fn run(self, mut closing: tokio::sync::watch::Receiver<bool>) {
        let tick = tick(self.interval);
        let interval = cooldown(self.interval);
        loop {
            if *closing.borrow() {
                return;
            }
            let candidates = self.resolver.probe_candidates();
            let budget = per_tick(candidates.len(), tick, self.interval);
            let mut due = due(candidates, interval, self.clock.now());
            due.truncate(budget);
            let batch = futures_util::stream::iter(due)
                .map(|c| self.probe(c))
                .buffer_unordered(self.concurrency)
                .for_each(|()| async {});
            tokio::select! {
                () = batch => {}
                _ = closing.wait_for(|c| *c) => return,
            }
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = closing.wait_for(|c| *c) => return,
            }
        }
    }

    async fn probe(&self, c: Candidate) {
        let meta = EventMeta {
            actor: PERIODIC_ACTOR.into(),
            request_id: self.ids.request(),
        };
        match self
            .credentials
            .probe_periodically(&c.account_id, &c.byok_id, &meta)
            .await
        {
            Ok(()) => {}
            // Revoked or disabled since the list was taken.
            Err(ServiceError::Revoked | ServiceError::NotFound(_)) => {}
            Err(error) => {
                tracing::warn!(%error, byok_id = %c.byok_id, "a periodic probe could not be recorded");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::seconds(s)
    }

    fn candidate(n: u128, last: Option<i64>) -> Candidate {
        Candidate {
            account_id: AccountId::from_ulid(1),
            byok_id: CredentialId::from_ulid(n),
            last_tested: last.map(t),
        }
    }

    #[test]
    fn due_credentials_are_the_least_recently_probed() {
        let all = vec![
            candidate(1, Some(50)),
            candidate(2, None),
            candidate(3, Some(95)),
            candidate(4, Some(10)),
        ];
        let due = due(all, TimeDelta::seconds(10), t(100));
        let ids: Vec<_> = due.iter().map(|c| c.byok_id.clone()).collect();
        assert_eq!(
            ids,
            [
                CredentialId::from_ulid(2),
                CredentialId::from_ulid(4),
                CredentialId::from_ulid(1)
            ]
        );
    }

    #[test]
    fn probes_are_spread_over_the_interval() {
        let hour = Duration::from_secs(3600);
        let tick = tick(hour);
        assert_eq!(tick, Duration::from_secs(10));
        // 1000 credentials over 360 ticks: 3 a tick covers them all within the hour.
        assert_eq!(per_tick(1000, tick, hour), 3);
        assert_eq!(per_tick(0, tick, hour), 1);
        let second = Duration::from_secs(1);
        assert_eq!(super::tick(second), Duration::from_millis(100));
        assert_eq!(per_tick(25, super::tick(second), second), 3);
        assert_eq!(
            super::tick(Duration::from_millis(200)),
            Duration::from_millis(100)
        );
    }
}
