//! Quotas and usage: setting a credential's quota, taking usage reports, reading a credential's
//! usage in a window, and recording `byok.quota_exceeded` once per window when a report makes a
//! credential reach its quota (docs/usage.md, docs/adr/0022), and the change of health the
//! records' outcomes make (`byok.health_changed`, docs/health.md).
//!
//! A report's accepted records go into one `usage.recorded` event on the account's usage stream,
//! appended with `ExpectedVersion::Any`: concurrent reports never conflict. The dedupe rows the
//! projection writes with it refuse a request id recorded already; this service reads them
//! first, and when a concurrent report got there in between (the append answers the unique
//! index), marks that record a duplicate and appends the rest again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::clock::SharedClock;
use super::credentials::Versioned;
use super::idempotency::Recording;
use super::{Executed, ServiceError, Target, execute, settle};
use crate::domain::credential::{self, Credential, CredentialCommand};
use crate::domain::health::Evidence;
use crate::domain::usage::{
    self, Exceedance, Outcome, Quota, QuotaWindow, Refusal, Totals, UsageEvent, UsageRecord,
};
use crate::domain::{AccountId, CredentialId};
use crate::es::{Aggregate, DomainEvent, EventMeta, ExpectedVersion, StreamId};
use crate::storage::{AppendError, AppendRequest, Store, StoreError, UniqueIndex};

/// How often expired usage rows are swept, at most.
const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);
/// How many times a `byok.quota_exceeded` is decided again after another writer appended to the
/// credential's stream first.
const EXCEEDED_RETRIES: usize = 64;

/// Per credential, what the latest of its records whose outcome says something of the secret
/// says (docs/health.md): one decision per credential and report, on the newest evidence
/// (by `occurred_at`; of equal times, the last in the report).
fn latest_evidence<'r>(
    records: impl Iterator<Item = &'r UsageRecord>,
    cooldown: chrono::TimeDelta,
) -> BTreeMap<CredentialId, Evidence> {
    let mut latest: BTreeMap<CredentialId, Evidence> = BTreeMap::new();
    for r in records {
        let Some(evidence) = r
            .outcome
            .and_then(|o| Evidence::from_usage(o, r.occurred_at, cooldown))
        else {
            continue;
        };
        match latest.get(&r.byok_id) {
            Some(seen) if seen.at > evidence.at => {}
            _ => {
                latest.insert(r.byok_id.clone(), evidence);
            }
        }
    }
    latest
}

/// One record of a report as the API read it: what could not be read is already a refusal.
pub struct Reported {
    pub byok_id: String,
    pub request_id: String,
    pub spend_micros: Result<u64, Refusal>,
    pub calls: Result<u64, Refusal>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
}

/// What became of a report.
#[derive(Debug, Default)]
pub struct ReportOutcome {
    pub accepted: usize,
    pub duplicates: usize,
    /// (index in the report, request id, why), in report order; duplicates included.
    pub rejected: Vec<(usize, String, Refusal)>,
}

/// A credential's usage in a window.
pub struct UsageInWindow {
    pub byok_id: CredentialId,
    pub period: QuotaWindow,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub totals: Totals,
    pub quota: Option<Quota>,
}

pub struct Usage {
    store: Store,
    clock: SharedClock,
    last_sweep: Mutex<Option<Instant>>,
    /// How long a reported 429 keeps the credential out of resolve (docs/health.md).
    rate_limit_cooldown: Duration,
}

fn credential_stream(byok_id: &CredentialId) -> StreamId {
    StreamId::new(Credential::KIND, byok_id.as_str())
}

fn usage_stream(account_id: &AccountId) -> StreamId {
    StreamId::new(usage::KIND, account_id.as_str())
}

impl Usage {
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            last_sweep: Mutex::new(None),
            rate_limit_cooldown: super::health::DEFAULT_RATE_LIMIT_COOLDOWN,
        }
    }

    /// A reported 429 keeps the credential out of resolve for `cooldown`.
    pub fn with_rate_limit_cooldown(mut self, cooldown: Duration) -> Self {
        self.rate_limit_cooldown = cooldown;
        self
    }

    /// The account's credential, or 404 (another account's answers the same).
    fn owned(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
    ) -> Result<(Credential, u64), ServiceError> {
        self.store
            .load::<Credential>(&credential_stream(byok_id))?
            .filter(|s| s.state.account_id == *account_id)
            .map(|s| (s.state, s.stream_version))
            .ok_or(ServiceError::NotFound("no such credential"))
    }

    /// Whether `quota` is reached at `now` by the credential's recorded usage.
    fn exceedance(
        &self,
        byok_id: &CredentialId,
        quota: &Quota,
        now: DateTime<Utc>,
    ) -> Result<Option<Exceedance>, StoreError> {
        let (start, _) = quota.window.bounds(now);
        let buckets =
            self.store
                .usage_buckets(byok_id, quota.window.granularity(), start.timestamp())?;
        Ok(usage::check(quota, &buckets, now))
    }

    /// Sets or (with `None`) removes a credential's quota, clearing its last exceedance; when
    /// the usage recorded already reaches the new quota, `byok.quota_exceeded` is appended with
    /// it.
    pub async fn set_quota(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        quota: Option<Quota>,
        if_match: Option<u64>,
        meta: &EventMeta,
        recording: &Recording<Versioned>,
    ) -> Result<Versioned, ServiceError> {
        // Ownership first, before any `If-Match` comparison could reveal the revision.
        self.owned(account_id, byok_id)?;
        let at = self.clock.now();
        let exceeded = match &quota {
            Some(q) => self.exceedance(byok_id, q, at)?,
            None => None,
        };
        let target = Target {
            stream: credential_stream(byok_id),
            if_match,
            meta,
            data_key: None,
            also: Vec::new(),
        };
        let decide = |state: Option<&Credential>| {
            let state = state.filter(|c| c.account_id == *account_id);
            let Some(state) = state else {
                return Err(ServiceError::NotFound("no such credential"));
            };
            let command = CredentialCommand::SetQuota {
                quota: quota.clone(),
                exceeded: exceeded.clone(),
                at,
            };
            Ok(credential::decide(Some(state), command)?)
        };
        let answer = |executed: Executed<Credential>| {
            Ok(Versioned {
                credential: executed
                    .state
                    .ok_or(ServiceError::NotFound("no such credential"))?,
                revision: executed.stream_version,
            })
        };
        execute(&self.store, target, decide, answer, recording).await
    }

    /// A credential's usage in `period` (default: its quota's window, else `30d`).
    pub fn usage(
        &self,
        account_id: &AccountId,
        byok_id: &CredentialId,
        period: Option<QuotaWindow>,
    ) -> Result<UsageInWindow, ServiceError> {
        let (credential, _) = self.owned(account_id, byok_id)?;
        let period = period
            .or(credential.quota.as_ref().map(|q| q.window))
            .unwrap_or(QuotaWindow::Day30);
        let now = self.clock.now();
        let (start, end) = period.bounds(now);
        let buckets = self
            .store
            .usage_buckets(byok_id, period.granularity(), start.timestamp())?;
        Ok(UsageInWindow {
            byok_id: byok_id.clone(),
            period,
            window_start: start,
            window_end: end,
            totals: usage::totals_between(&buckets, start, end),
            quota: credential.quota,
        })
    }

    /// Records a report's acceptable records in one `usage.recorded` event and answers what
    /// became of each; then records `byok.quota_exceeded` for every credential of the report
    /// that reached its quota. Only a failure of the store is an error.
    pub async fn report(
        &self,
        account_id: &AccountId,
        reported: Vec<Reported>,
        meta: &EventMeta,
    ) -> Result<ReportOutcome, ServiceError> {
        let now = self.clock.now();
        let mut outcome = ReportOutcome::default();
        let mut owned: HashMap<String, Option<CredentialId>> = HashMap::new();
        let mut in_batch: HashSet<String> = HashSet::new();
        // (index, record) of the records that pass every check but the recorded duplicates.
        let mut candidates: Vec<(usize, UsageRecord)> = Vec::new();
        for (index, r) in reported.into_iter().enumerate() {
            let checked = self.check(account_id, &r, now, &mut owned, &mut in_batch);
            match checked {
                Ok(record) => candidates.push((index, record)),
                Err(refusal) => outcome.rejected.push((index, r.request_id, refusal)),
            }
        }
        let ids: Vec<&str> = candidates
            .iter()
            .map(|(_, r)| r.request_id.as_str())
            .collect();
        let seen = self.store.usage_recorded(account_id, &ids, now)?;
        let (mut records, mut duplicates) = (Vec::new(), Vec::new());
        for ((index, record), seen) in candidates.into_iter().zip(seen) {
            if seen {
                duplicates.push((index, record));
            } else {
                records.push((index, record));
            }
        }
        loop {
            if records.is_empty() {
                break;
            }
            match self.append(account_id, &records, meta, now).await {
                Ok(()) => break,
                // A concurrent report recorded this id first.
                Err(AppendError::Unique {
                    index: UniqueIndex::UsageRequest,
                    value,
                }) => {
                    let Some(at) = records.iter().position(|(_, r)| r.request_id == value) else {
                        return Err(ServiceError::Store(StoreError::Corrupt {
                            what: "usage report".into(),
                            reason: "a refused request id the report does not hold".into(),
                        }));
                    };
                    duplicates.push(records.remove(at));
                }
                Err(e) => return Err(e.into()),
            }
        }
        outcome.accepted = records.len();
        outcome.duplicates = duplicates.len();
        // Duplicates too: a retry of a report whose `byok.quota_exceeded` or
        // `byok.health_changed` was never appended (the server stopped in between) catches it
        // up.
        let credentials: BTreeSet<CredentialId> = records
            .iter()
            .chain(&duplicates)
            .map(|(_, r)| r.byok_id.clone())
            .collect();
        let mut in_order: Vec<&(usize, UsageRecord)> = records.iter().chain(&duplicates).collect();
        in_order.sort_by_key(|(index, _)| *index);
        let evidence = latest_evidence(
            in_order.into_iter().map(|(_, r)| r),
            super::health::cooldown(self.rate_limit_cooldown),
        );
        outcome.rejected.extend(
            duplicates
                .into_iter()
                .map(|(index, r)| (index, r.request_id, Refusal::Duplicate)),
        );
        outcome.rejected.sort_by_key(|(index, _, _)| *index);
        let refused = outcome.rejected.len() - outcome.duplicates;
        crate::metrics::count(|m| {
            for (result, n) in [
                ("accepted", outcome.accepted),
                ("duplicate", outcome.duplicates),
                ("refused", refused),
            ] {
                m.usage_records
                    .with_label_values(&[result])
                    .inc_by(n as u64);
            }
        });
        for byok_id in &credentials {
            if let Err(error) = self.enforce(byok_id, meta).await {
                // The usage is recorded; the next report for the credential catches up.
                tracing::warn!(%error, %byok_id, "checking a quota after a usage report failed");
            }
        }
        for (byok_id, evidence) in evidence {
            if let Err(error) =
                super::health::observe(&self.store, &self.clock, &byok_id, evidence, meta).await
            {
                // As above: the usage is recorded; a retry of the report catches up.
                tracing::warn!(%error, %byok_id, "recording a credential's health after a usage report failed");
            }
        }
        self.sweep_if_due();
        Ok(outcome)
    }

    /// The checks of one record that need no dedupe row.
    fn check(
        &self,
        account_id: &AccountId,
        r: &Reported,
        now: DateTime<Utc>,
        owned: &mut HashMap<String, Option<CredentialId>>,
        in_batch: &mut HashSet<String>,
    ) -> Result<UsageRecord, Refusal> {
        if !usage::valid_request_id(&r.request_id) {
            return Err(Refusal::InvalidRequestId);
        }
        let byok_id = match owned.get(&r.byok_id) {
            Some(known) => known.clone(),
            None => {
                let id = CredentialId::parse(&r.byok_id).filter(|id| {
                    // A store failure here refuses the record rather than the report.
                    self.owned(account_id, id).is_ok()
                });
                owned.insert(r.byok_id.clone(), id.clone());
                id
            }
        }
        .ok_or(Refusal::UnknownCredential)?;
        let spend_micros = r.spend_micros?;
        let calls = r.calls?;
        let occurred_at = r.occurred_at.unwrap_or(now);
        usage::check_time(occurred_at, now)?;
        // Within the allowed skew, a time ahead of the server's clock is taken as now: the
        // server's clock decides which bucket counts it, so an accepted record is counted at
        // once (a window ends with the current hour).
        let occurred_at = occurred_at.min(now);
        if !in_batch.insert(r.request_id.clone()) {
            return Err(Refusal::DuplicateInBatch);
        }
        Ok(UsageRecord {
            byok_id,
            request_id: r.request_id.clone(),
            spend_micros,
            calls,
            occurred_at,
            outcome: r.outcome,
        })
    }

    async fn append(
        &self,
        account_id: &AccountId,
        records: &[(usize, UsageRecord)],
        meta: &EventMeta,
        now: DateTime<Utc>,
    ) -> Result<(), AppendError> {
        let event = UsageEvent::Recorded {
            account_id: account_id.clone(),
            records: records.iter().map(|(_, r)| r.clone()).collect(),
            recorded_at: now,
        };
        let request = AppendRequest {
            stream: usage_stream(account_id),
            expected: ExpectedVersion::Any,
            events: vec![event.to_new_event().map_err(StoreError::from)?],
            meta: meta.clone(),
            data_key: None,
            also: Vec::new(),
            idempotency: None,
        };
        self.store.append(request).await.map(|_| ())
    }

    /// Appends `byok.quota_exceeded` when the credential's recorded usage reaches its quota and
    /// no exceedance covering now is recorded, at the stream version read: of many concurrent
    /// reporters one appends it, the others find it recorded when they decide again.
    pub async fn enforce(
        &self,
        byok_id: &CredentialId,
        meta: &EventMeta,
    ) -> Result<(), ServiceError> {
        for _ in 0..EXCEEDED_RETRIES {
            let Some(stored) = self.store.load::<Credential>(&credential_stream(byok_id))? else {
                return Ok(());
            };
            let now = self.clock.now();
            let credential = &stored.state;
            let Some(quota) = &credential.quota else {
                return Ok(());
            };
            if credential
                .quota_exceeded
                .as_ref()
                .is_some_and(|e| e.covers(now))
            {
                return Ok(());
            }
            let Some(exceeded) = self.exceedance(byok_id, quota, now)? else {
                return Ok(());
            };
            let command = CredentialCommand::MarkExceeded { exceeded, at: now };
            let events = credential::decide(Some(credential), command)?;
            if events.is_empty() {
                return Ok(());
            }
            let request = AppendRequest {
                stream: credential_stream(byok_id),
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
            match self.store.append(request).await {
                // Resolve leaves the credential out from the report's answer on.
                Ok(appended) => {
                    if let Some(last) = appended.last() {
                        settle(&self.store, last.position).await;
                    }
                    return Ok(());
                }
                Err(AppendError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes usage rows no window counts any more, on the blocking pool, at most once per
    /// [`SWEEP_EVERY`].
    fn sweep_if_due(&self) {
        {
            let mut last = self.last_sweep.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < SWEEP_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let store = self.store.clone();
        let now = self.clock.now();
        tokio::task::spawn_blocking(move || match store.sweep_usage(now) {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "expired usage rows deleted"),
            Err(error) => tracing::warn!(%error, "sweeping usage rows failed"),
        });
    }
}
