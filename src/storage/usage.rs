//! The usage rows (docs/usage.md, docs/adr/0022), derived from `usage.recorded` events in the
//! writer's batch like every projection, and rebuilt with them:
//! - a dedupe row per recorded `request_id` of an account; a row already there refuses the
//!   event, as a unique index does, so two concurrent reports of one request id cannot both be
//!   counted;
//! - per credential, an hour bucket and a UTC day bucket of spend and calls, which the windows
//!   are summed from.
//!
//! Rows no window can count any more (dedupe rows past their retention, buckets older than every
//! window) are swept outside the writer, as idempotency records are; `verify` leaves them out of
//! its comparison, since a replay writes them again. Must not import `service` or `http`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::kv::Kv;
use super::projection::{EventAt, ProjectionError};
use super::{Store, StoreError, UniqueIndex, keys};
use crate::domain::usage::{
    Bucket, DAY_BUCKET_RETENTION, DEDUPE_RETENTION, Granularity, HOUR_BUCKET_RETENTION, Totals,
    UsageEvent,
};
use crate::domain::{AccountId, CredentialId};

/// Projects `usage.recorded`: the dedupe rows of its records, and their buckets. A dedupe row
/// counts until its expiry, judged at the event's own time (`recorded_at`), so that live and
/// replay agree.
pub(super) fn project_usage<K: Kv>(
    kv: &mut K,
    _at: EventAt<'_>,
    event: UsageEvent,
) -> Result<(), ProjectionError> {
    let UsageEvent::Recorded {
        account_id,
        records,
        recorded_at: now,
    } = event;
    let mut sums: BTreeMap<Vec<u8>, Totals> = BTreeMap::new();
    for record in &records {
        let key = keys::usage_request(&account_id, &record.request_id);
        if let Some(value) = kv.get(&key)?
            && !request_expired(&value, now.timestamp())
        {
            return Err(ProjectionError::Unique {
                index: UniqueIndex::UsageRequest,
                value: record.request_id.clone(),
            });
        }
        let expires = (record.occurred_at + DEDUPE_RETENTION).timestamp();
        kv.put(key, expires.to_be_bytes().to_vec());
        for granularity in Granularity::ALL {
            // No rolling window reaches an hour bucket this old.
            if granularity == Granularity::Hour && record.occurred_at < now - HOUR_BUCKET_RETENTION
            {
                continue;
            }
            let start = granularity.bucket(record.occurred_at);
            sums.entry(keys::usage_bucket(&record.byok_id, granularity, start))
                .or_default()
                .add(record.spend_micros, record.calls);
        }
    }
    for (key, added) in sums {
        let mut totals = match kv.get(&key)? {
            Some(value) => decode_totals(&value)?,
            None => Totals::default(),
        };
        totals.add(added.spend_micros, added.calls);
        kv.put(key, encode_totals(totals));
    }
    Ok(())
}

fn encode_totals(t: Totals) -> Vec<u8> {
    [t.spend_micros.to_be_bytes(), t.calls.to_be_bytes()].concat()
}

fn decode_totals(value: &[u8]) -> Result<Totals, StoreError> {
    let corrupt = || StoreError::Corrupt {
        what: "usage bucket".into(),
        reason: "not two u64".into(),
    };
    let spend = value
        .get(..8)
        .and_then(keys::u64_value)
        .ok_or_else(corrupt)?;
    let calls = value
        .get(8..)
        .and_then(keys::u64_value)
        .ok_or_else(corrupt)?;
    Ok(Totals {
        spend_micros: spend,
        calls,
    })
}

/// Whether a dedupe row's expiry (unix seconds) has passed at `now`; an unreadable one counts as
/// expired (it is swept, and a replay writes it again).
fn request_expired(value: &[u8], now: i64) -> bool {
    keys::u64_value(value).is_none_or(|expires| (expires as i64) <= now)
}

/// Whether a usage row may be swept at `now` (unix seconds): a dedupe row past its expiry, a
/// bucket older than every window that could count it.
pub(super) fn sweepable(key: &[u8], value: &[u8], now: i64) -> bool {
    if key.starts_with(keys::USAGE_REQUESTS) {
        return request_expired(value, now);
    }
    match keys::usage_bucket_start(key) {
        Some((Granularity::Hour, start)) => start < now - HOUR_BUCKET_RETENTION.num_seconds(),
        Some((Granularity::Day, start)) => start < now - DAY_BUCKET_RETENTION.num_seconds(),
        None => false,
    }
}

impl Store {
    /// A credential's buckets of one size from `from` (unix seconds) on, oldest first.
    pub fn usage_buckets(
        &self,
        byok_id: &CredentialId,
        granularity: Granularity,
        from: i64,
    ) -> Result<Vec<Bucket>, StoreError> {
        let prefix = keys::usage_buckets(byok_id, granularity);
        let start = keys::usage_bucket(byok_id, granularity, from);
        let mut buckets = Vec::new();
        for row in self.inner.db.range(start..) {
            let (key, value) = row.map_err(|e| self.noticed(e.into(), None))?;
            if !key.starts_with(&prefix) {
                break;
            }
            let (_, start) = keys::usage_bucket_start(&key).ok_or_else(|| {
                self.noticed(
                    StoreError::Corrupt {
                        what: "usage bucket".into(),
                        reason: "a key of another shape".into(),
                    },
                    None,
                )
            })?;
            let totals = decode_totals(&value).map_err(|e| self.noticed(e, None))?;
            buckets.push(Bucket { start, totals });
        }
        Ok(buckets)
    }

    /// For each request id, whether the account recorded it already (and the row still counts
    /// at `now`).
    pub fn usage_recorded(
        &self,
        account_id: &AccountId,
        request_ids: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        request_ids
            .iter()
            .map(|id| {
                let row = self.inner.db.get(keys::usage_request(account_id, id))?;
                Ok(row.is_some_and(|v| !request_expired(&v, now.timestamp())))
            })
            .collect::<Result<_, StoreError>>()
            .map_err(|e| self.noticed(e, None))
    }

    /// Deletes the usage rows no window can count any more; answers how many. Not flushed: a
    /// deletion lost to a crash is made again by the next sweep.
    pub fn sweep_usage(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut swept = 0;
        for item in self.inner.db.scan_prefix(keys::USAGE) {
            let (key, value) = item?;
            if sweepable(&key, &value, now.timestamp())
                && self
                    .inner
                    .db
                    .compare_and_swap(&key, Some(&value), None::<&[u8]>)?
                    .is_ok()
            {
                swept += 1;
            }
        }
        Ok(swept)
    }
}
