//! Usage accounting and quotas, pure: quota windows and their bounds for a given `now`, how usage
//! is bucketed, a credential's totals in a window, whether a quota is reached and until when,
//! money as integer micro-dollars, the records of a usage report and the `usage.recorded` event
//! of the `usage:<account_id>` stream (docs/usage.md, docs/adr/0022).
//!
//! Buckets: rolling windows (`1d`, `7d`, `30d`) are summed from hour buckets, calendar windows
//! (`mtd`, `ytd`) from UTC day buckets. A rolling window of N days is the N × 24 hour buckets
//! that end with the current one: it starts at the top of the hour (N × 24 − 1) hours before the
//! current hour's, so it always counts the last N × 24 − 1 hours and at most the last N × 24.
//!
//! Must not import crypto, storage, service or HTTP; receives every time it needs.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{AccountId, CredentialId};
use crate::es::{DecodeError, DomainEvent, Envelope, current_schema, decode_envelope};

/// Stream kind, never renamed: one usage stream per account, `usage:<account_id>`.
pub const KIND: &str = "usage";
/// Micro-dollars in a dollar.
pub const MICROS_PER_USD: u64 = 1_000_000;
/// Largest spend a record or a limit may state, in dollars: far beyond any real call, well
/// inside `u64` micro-dollars when summed over a year of records.
pub const MAX_USD: u64 = 1_000_000_000;
/// Most calls one record may count, and the largest call limit.
pub const MAX_CALLS: u64 = 1_000_000_000;
/// Most records in one report.
pub const MAX_RECORDS: usize = 1000;
/// Longest `request_id` of a record.
pub const MAX_REQUEST_ID_LEN: usize = 128;
/// How far in the future `occurred_at` may be: the reporter's clock may run ahead of ours.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);
/// How long a recorded `request_id` is remembered, from its record's `occurred_at`: longer than
/// any window reaches back ([`earliest_counted`] is never more than 366 days before now), so a
/// retry is refused as a duplicate for as long as it could otherwise be counted, and as too old
/// after that. A request id is counted at most once, ever.
pub const DEDUPE_RETENTION: Duration = Duration::days(367);
/// Hour buckets older than this (by the event's time) are not written, and are swept: no rolling
/// window reaches back further than 30 days.
pub const HOUR_BUCKET_RETENTION: Duration = Duration::days(31);
/// Day buckets older than this are swept: no calendar window reaches back further than a year.
pub const DAY_BUCKET_RETENTION: Duration = Duration::days(367);

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Why a quota or a usage value is refused; `param` is the field's path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct UsageError {
    pub param: String,
    pub message: String,
}

impl UsageError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// The period a quota counts over. Rolling windows end now; calendar ones are the UTC month or
/// year so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QuotaWindow {
    #[serde(rename = "1d")]
    Day1,
    #[serde(rename = "7d")]
    Day7,
    #[serde(rename = "30d")]
    Day30,
    #[serde(rename = "mtd")]
    Mtd,
    #[serde(rename = "ytd")]
    Ytd,
}

/// The size of the buckets a window is summed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 2] = [Granularity::Hour, Granularity::Day];

    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => HOUR,
            Self::Day => DAY,
        }
    }

    /// The start (unix seconds) of the bucket holding `at`.
    pub fn bucket(self, at: DateTime<Utc>) -> i64 {
        at.timestamp().div_euclid(self.seconds()) * self.seconds()
    }
}

impl QuotaWindow {
    pub const ALL: [QuotaWindow; 5] = [
        QuotaWindow::Day1,
        QuotaWindow::Day7,
        QuotaWindow::Day30,
        QuotaWindow::Mtd,
        QuotaWindow::Ytd,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day1 => "1d",
            Self::Day7 => "7d",
            Self::Day30 => "30d",
            Self::Mtd => "mtd",
            Self::Ytd => "ytd",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.as_str() == text)
    }

    /// The length of a rolling window in hour buckets; `None` for calendar windows.
    fn rolling_hours(self) -> Option<i64> {
        match self {
            Self::Day1 => Some(24),
            Self::Day7 => Some(7 * 24),
            Self::Day30 => Some(30 * 24),
            Self::Mtd | Self::Ytd => None,
        }
    }

    pub fn granularity(self) -> Granularity {
        if self.rolling_hours().is_some() {
            Granularity::Hour
        } else {
            Granularity::Day
        }
    }

    /// `[start, end)` of the window at `now`. Rolling: from the top of the hour N × 24 − 1
    /// hours before the current one to the end of the current hour. Calendar: the UTC month or
    /// year holding `now`.
    pub fn bounds(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        match self.rolling_hours() {
            Some(hours) => {
                let current = Granularity::Hour.bucket(now);
                (
                    at_secs(current - (hours - 1) * HOUR),
                    at_secs(current + HOUR),
                )
            }
            None => {
                let (y, m) = (now.year(), now.month());
                let (start, end) = if self == Self::Mtd {
                    let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                    (midnight(y, m, 1), midnight(next.0, next.1, 1))
                } else {
                    (midnight(y, 1, 1), midnight(y + 1, 1, 1))
                };
                (start, end)
            }
        }
    }
}

fn at_secs(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// 00:00 UTC of a date; dates out of chrono's range are clamped (they do not occur).
fn midnight(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(year, month, day)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(DateTime::<Utc>::MAX_UTC, |d| Utc.from_utc_datetime(&d))
}

/// The earliest time any window counts at `now`: a record older than this is counted by none
/// and is refused. Never more than 366 days before `now`.
pub fn earliest_counted(now: DateTime<Utc>) -> DateTime<Utc> {
    QuotaWindow::ALL
        .into_iter()
        .map(|w| w.bounds(now).0)
        .min()
        .unwrap_or(now)
}

/// A credential's limits over a window. At least one limit is set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_limit_micros: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_limit: Option<u64>,
    pub window: QuotaWindow,
}

impl Quota {
    /// A quota with at least one limit, each above zero and within bounds.
    pub fn new(
        spend_limit_micros: Option<u64>,
        call_limit: Option<u64>,
        window: QuotaWindow,
    ) -> Result<Self, UsageError> {
        if spend_limit_micros.is_none() && call_limit.is_none() {
            return Err(UsageError::new(
                "spend_limit_usd",
                "a quota sets spend_limit_usd, call_limit or both",
            ));
        }
        if spend_limit_micros == Some(0) {
            return Err(UsageError::new(
                "spend_limit_usd",
                "spend_limit_usd must be above 0 (disable the credential to stop it)",
            ));
        }
        if let Some(calls) = call_limit
            && !(1..=MAX_CALLS).contains(&calls)
        {
            return Err(UsageError::new(
                "call_limit",
                format!("call_limit must be from 1 to {MAX_CALLS}"),
            ));
        }
        Ok(Self {
            spend_limit_micros,
            call_limit,
            window,
        })
    }

    /// Whether `totals` reach a limit (a total equal to its limit reaches it).
    pub fn reached(&self, totals: Totals) -> bool {
        self.spend_limit_micros
            .is_some_and(|limit| totals.spend_micros >= limit)
            || self.call_limit.is_some_and(|limit| totals.calls >= limit)
    }
}

/// What a credential keeps of its last `byok.quota_exceeded`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaExceeded {
    pub window_start: DateTime<Utc>,
    /// Resolve serves the credential again from this time on.
    pub until: DateTime<Utc>,
}

impl QuotaExceeded {
    /// Whether the credential is still out at `now`.
    pub fn covers(&self, now: DateTime<Utc>) -> bool {
        self.until > now
    }
}

/// Spend and calls, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub spend_micros: u64,
    pub calls: u64,
}

impl Totals {
    pub fn add(&mut self, spend_micros: u64, calls: u64) {
        self.spend_micros = self.spend_micros.saturating_add(spend_micros);
        self.calls = self.calls.saturating_add(calls);
    }
}

/// One credential's usage in one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket's start, unix seconds.
    pub start: i64,
    pub totals: Totals,
}

/// The sum of the buckets inside `[start, end)`.
pub fn totals_between(buckets: &[Bucket], start: DateTime<Utc>, end: DateTime<Utc>) -> Totals {
    let (start, end) = (start.timestamp(), end.timestamp());
    let mut totals = Totals::default();
    for b in buckets.iter().filter(|b| b.start >= start && b.start < end) {
        totals.add(b.totals.spend_micros, b.totals.calls);
    }
    totals
}

/// A quota found reached: what `byok.quota_exceeded` records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceedance {
    pub window: QuotaWindow,
    pub window_start: DateTime<Utc>,
    /// When the credential may be served again, if no more usage arrives.
    pub until: DateTime<Utc>,
    pub totals: Totals,
}

/// Whether `quota` is reached at `now`, given the credential's buckets of the window's
/// granularity; `None` when it is not. For a calendar window `until` is the window's end; for
/// a rolling one it is the first hour boundary at which the buckets still inside the window
/// (those already recorded: nothing newer is assumed) fall back under every limit.
pub fn check(quota: &Quota, buckets: &[Bucket], now: DateTime<Utc>) -> Option<Exceedance> {
    let (start, end) = quota.window.bounds(now);
    let totals = totals_between(buckets, start, end);
    if !quota.reached(totals) {
        return None;
    }
    let until = match quota.window.rolling_hours() {
        None => end,
        Some(hours) => rolling_until(quota, buckets, now, hours),
    };
    Some(Exceedance {
        window: quota.window,
        window_start: start,
        until,
        totals,
    })
}

fn rolling_until(
    quota: &Quota,
    buckets: &[Bucket],
    now: DateTime<Utc>,
    hours: i64,
) -> DateTime<Utc> {
    let current = Granularity::Hour.bucket(now);
    let (mut inside, _): (Vec<Bucket>, Vec<Bucket>) = buckets
        .iter()
        .partition(|b| b.start >= current - (hours - 1) * HOUR && b.start <= current);
    inside.sort_by_key(|b| b.start);
    let mut totals = Totals::default();
    for b in &inside {
        totals.add(b.totals.spend_micros, b.totals.calls);
    }
    let mut oldest = inside.iter().peekable();
    for k in 1..=hours {
        // From `boundary` on the window starts `hours - 1` hours before it.
        let boundary = current + k * HOUR;
        let start = boundary - (hours - 1) * HOUR;
        while let Some(b) = oldest.next_if(|b| b.start < start) {
            totals.spend_micros -= b.totals.spend_micros.min(totals.spend_micros);
            totals.calls -= b.totals.calls.min(totals.calls);
        }
        if !quota.reached(totals) {
            return at_secs(boundary);
        }
    }
    at_secs(current + hours * HOUR)
}

/// Micro-dollars from dollars given as a JSON number: not negative, at most six decimals, at
/// most [`MAX_USD`]. The number is read as the shortest decimal that round-trips it, which is
/// how it was written.
pub fn micros_from_usd(usd: &serde_json::Number) -> Result<u64, MoneyError> {
    if let Some(whole) = usd.as_u64() {
        return (whole <= MAX_USD)
            .then_some(whole * MICROS_PER_USD)
            .ok_or(MoneyError::TooLarge);
    }
    if usd.as_i64().is_some() {
        return Err(MoneyError::Negative);
    }
    let value = usd.as_f64().ok_or(MoneyError::NotANumber)?;
    if !value.is_finite() {
        return Err(MoneyError::NotANumber);
    }
    if value < 0.0 {
        return Err(MoneyError::Negative);
    }
    if value > MAX_USD as f64 {
        return Err(MoneyError::TooLarge);
    }
    // Rust prints the shortest representation that round-trips, never in exponent form.
    let text = format!("{value}");
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    if fraction.len() > 6 {
        return Err(MoneyError::TooPrecise);
    }
    let whole: u64 = whole.parse().map_err(|_| MoneyError::NotANumber)?;
    let fraction: u64 = format!("{fraction:0<6}")
        .parse()
        .map_err(|_| MoneyError::NotANumber)?;
    Ok(whole * MICROS_PER_USD + fraction)
}

/// Dollars for the API, from micro-dollars: exact for every amount below 2^53 micro-dollars.
pub fn usd_from_micros(micros: u64) -> f64 {
    micros as f64 / MICROS_PER_USD as f64
}

/// Why an amount of dollars is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("an amount of dollars is not negative")]
    Negative,
    #[error("an amount of dollars has at most 6 decimals (micro-dollars)")]
    TooPrecise,
    #[error("an amount of dollars is at most 1000000000")]
    TooLarge,
    #[error("an amount of dollars is a finite number")]
    NotANumber,
}

/// What the provider call a record counts ended with; kept for credential health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    InvalidCredentials,
    RateLimited,
    ProviderError,
}

/// One accepted record, as `usage.recorded` stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub byok_id: CredentialId,
    pub request_id: String,
    pub spend_micros: u64,
    pub calls: u64,
    pub occurred_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// The events of a usage stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UsageEvent {
    /// One report's accepted records (never empty).
    #[serde(rename = "usage.recorded")]
    Recorded {
        account_id: AccountId,
        records: Vec<UsageRecord>,
        recorded_at: DateTime<Utc>,
    },
}

impl DomainEvent for UsageEvent {
    /// Reads a current `usage.recorded` straight from the stored payload: the writer decodes
    /// every report's event (up to 1,000 records) while it projects, and the generic path
    /// copies the payload and buffers it whole before reading it.
    fn from_envelope(envelope: &Envelope) -> Result<Self, DecodeError> {
        const RECORDED: &str = "usage.recorded";
        if envelope.event_type != RECORDED || envelope.schema != current_schema(RECORDED) {
            return decode_envelope(envelope);
        }
        let payload =
            RecordedPayload::deserialize(&envelope.data).map_err(|e| DecodeError::Payload {
                event_type: envelope.event_type.clone(),
                position: envelope.position,
                reason: e.to_string(),
            })?;
        Ok(Self::Recorded {
            account_id: payload.account_id,
            records: payload.records,
            recorded_at: payload.recorded_at,
        })
    }
}

/// `usage.recorded`'s payload, read in place.
#[derive(Deserialize)]
struct RecordedPayload {
    account_id: AccountId,
    records: Vec<UsageRecord>,
    recorded_at: DateTime<Utc>,
}

/// Why a record of a report is refused; the stable strings the API answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// The credential is unknown or another account's (the same answer: no existence leak).
    UnknownCredential,
    NegativeSpend,
    /// Not a finite number, more than six decimals, or more than the largest amount.
    InvalidSpend,
    /// Not a whole number from 0 to [`MAX_CALLS`].
    InvalidCalls,
    /// Empty, longer than [`MAX_REQUEST_ID_LEN`], or not printable ASCII.
    InvalidRequestId,
    /// More than [`CLOCK_SKEW`] in the future.
    OccurredInFuture,
    /// Before [`earliest_counted`]: no window counts it.
    OccurredTooLongAgo,
    /// Recorded already, by an earlier report.
    Duplicate,
    /// Earlier in the same report.
    DuplicateInBatch,
}

impl Refusal {
    pub fn is_duplicate(self) -> bool {
        matches!(self, Self::Duplicate | Self::DuplicateInBatch)
    }
}

/// Whether a request id is well-formed: 1 to [`MAX_REQUEST_ID_LEN`] printable ASCII characters.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The time checks of a record: not too far ahead, not before every window.
pub fn check_time(occurred_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), Refusal> {
    if occurred_at > now + CLOCK_SKEW {
        return Err(Refusal::OccurredInFuture);
    }
    if occurred_at < earliest_counted(now) {
        return Err(Refusal::OccurredTooLongAgo);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn bucket(text: &str, spend: u64, calls: u64) -> Bucket {
        Bucket {
            start: Granularity::Hour.bucket(at(text)),
            totals: Totals {
                spend_micros: spend,
                calls,
            },
        }
    }

    #[test]
    fn windows_serialise_as_their_names() {
        for w in QuotaWindow::ALL {
            assert_eq!(serde_json::to_value(w).unwrap(), w.as_str());
            assert_eq!(QuotaWindow::parse(w.as_str()), Some(w));
        }
        assert_eq!(QuotaWindow::parse("24h"), None);
    }

    #[test]
    fn rolling_windows_are_whole_hours_ending_with_the_current_one() {
        let now = at("2026-03-10T12:34:56Z");
        assert_eq!(
            QuotaWindow::Day1.bounds(now),
            (at("2026-03-09T13:00:00Z"), at("2026-03-10T13:00:00Z"))
        );
        assert_eq!(
            QuotaWindow::Day7.bounds(now),
            (at("2026-03-03T13:00:00Z"), at("2026-03-10T13:00:00Z"))
        );
        assert_eq!(
            QuotaWindow::Day30.bounds(now),
            (at("2026-02-08T13:00:00Z"), at("2026-03-10T13:00:00Z"))
        );
        // On the boundary the new hour is the current one.
        let edge = at("2026-03-10T13:00:00Z");
        assert_eq!(QuotaWindow::Day1.bounds(edge).0, at("2026-03-09T14:00:00Z"));
        let before = at("2026-03-10T12:59:59Z");
        assert_eq!(
            QuotaWindow::Day1.bounds(before).0,
            at("2026-03-09T13:00:00Z")
        );
    }

    #[test]
    fn calendar_windows_are_the_utc_month_and_year() {
        let now = at("2026-12-31T23:59:59Z");
        assert_eq!(
            QuotaWindow::Mtd.bounds(now),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(
            QuotaWindow::Ytd.bounds(now),
            (at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        let leap = at("2028-02-29T10:00:00Z");
        assert_eq!(
            QuotaWindow::Mtd.bounds(leap),
            (at("2028-02-01T00:00:00Z"), at("2028-03-01T00:00:00Z"))
        );
        let new_year = at("2027-01-01T00:00:00Z");
        assert_eq!(QuotaWindow::Mtd.bounds(new_year).0, new_year);
        assert_eq!(QuotaWindow::Ytd.bounds(new_year).0, new_year);
    }

    #[test]
    fn the_earliest_counted_time_is_the_earliest_window_start() {
        // Early January: the 30-day window reaches into December.
        let jan = at("2027-01-02T05:00:00Z");
        assert_eq!(earliest_counted(jan), QuotaWindow::Day30.bounds(jan).0);
        // Late December: the year does.
        let dec = at("2028-12-31T23:00:00Z");
        assert_eq!(earliest_counted(dec), at("2028-01-01T00:00:00Z"));
        assert!(dec - earliest_counted(dec) <= Duration::days(366));
        assert!(DEDUPE_RETENTION > Duration::days(366));
    }

    #[test]
    fn totals_count_only_buckets_inside_the_window() {
        let now = at("2026-03-10T12:30:00Z");
        let buckets = [
            bucket("2026-03-09T12:59:59Z", 1, 1), // an hour before the window
            bucket("2026-03-09T13:00:00Z", 10, 1),
            bucket("2026-03-10T12:00:00Z", 100, 1),
        ];
        let (start, end) = QuotaWindow::Day1.bounds(now);
        let totals = totals_between(&buckets, start, end);
        assert_eq!(
            totals,
            Totals {
                spend_micros: 110,
                calls: 2
            }
        );
    }

    #[test]
    fn a_limit_is_reached_when_a_total_equals_it() {
        let q = Quota::new(Some(100), Some(3), QuotaWindow::Day1).unwrap();
        assert!(!q.reached(Totals {
            spend_micros: 99,
            calls: 2
        }));
        assert!(q.reached(Totals {
            spend_micros: 100,
            calls: 0
        }));
        assert!(q.reached(Totals {
            spend_micros: 0,
            calls: 3
        }));
    }

    #[test]
    fn quotas_need_a_limit_above_zero() {
        assert!(Quota::new(None, None, QuotaWindow::Mtd).is_err());
        assert_eq!(
            Quota::new(Some(0), None, QuotaWindow::Mtd)
                .unwrap_err()
                .param,
            "spend_limit_usd"
        );
        assert_eq!(
            Quota::new(None, Some(0), QuotaWindow::Mtd)
                .unwrap_err()
                .param,
            "call_limit"
        );
        assert!(Quota::new(None, Some(MAX_CALLS + 1), QuotaWindow::Mtd).is_err());
    }

    #[test]
    fn a_calendar_quota_is_exceeded_until_the_window_ends() {
        let q = Quota::new(Some(50), None, QuotaWindow::Mtd).unwrap();
        let now = at("2026-02-27T08:00:00Z");
        let buckets = [Bucket {
            start: Granularity::Day.bucket(at("2026-02-03T00:00:00Z")),
            totals: Totals {
                spend_micros: 60,
                calls: 1,
            },
        }];
        let e = check(&q, &buckets, now).unwrap();
        assert_eq!(e.window_start, at("2026-02-01T00:00:00Z"));
        assert_eq!(e.until, at("2026-03-01T00:00:00Z"));
        assert_eq!(e.totals.spend_micros, 60);
        let ytd = Quota::new(Some(50), None, QuotaWindow::Ytd).unwrap();
        assert_eq!(
            check(&ytd, &buckets, now).unwrap().until,
            at("2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn a_rolling_quota_is_exceeded_until_old_buckets_leave_the_window() {
        let q = Quota::new(None, Some(10), QuotaWindow::Day1).unwrap();
        let now = at("2026-03-10T12:30:00Z");
        let buckets = [
            bucket("2026-03-09T14:10:00Z", 0, 6),
            bucket("2026-03-10T09:00:00Z", 0, 3),
            bucket("2026-03-10T12:05:00Z", 0, 2),
        ];
        let e = check(&q, &buckets, now).unwrap();
        assert_eq!(e.totals.calls, 11);
        // The 9 March 14:00 bucket leaves once the window starts at 15:00 that day: from
        // 10 March 14:00, the window being the 24 hours that end with the current one.
        assert_eq!(e.until, at("2026-03-10T14:00:00Z"));
        assert_eq!(
            QuotaWindow::Day1.bounds(e.until).0,
            at("2026-03-09T15:00:00Z")
        );
        // Under the limit: nothing.
        assert_eq!(check(&q, &buckets[1..], now), None);
        // Reached by the current hour alone: free once that hour leaves, 24 hours on.
        let heavy = [bucket("2026-03-10T12:05:00Z", 0, 10)];
        assert_eq!(
            check(&q, &heavy, now).unwrap().until,
            at("2026-03-11T12:00:00Z")
        );
    }

    #[test]
    fn money_is_whole_micro_dollars() {
        let n = |v: serde_json::Value| serde_json::from_value::<serde_json::Number>(v).unwrap();
        assert_eq!(micros_from_usd(&n(serde_json::json!(2))), Ok(2_000_000));
        assert_eq!(micros_from_usd(&n(serde_json::json!(0.1))), Ok(100_000));
        assert_eq!(micros_from_usd(&n(serde_json::json!(0.000001))), Ok(1));
        assert_eq!(
            micros_from_usd(&n(serde_json::json!(12.345678))),
            Ok(12_345_678)
        );
        assert_eq!(micros_from_usd(&n(serde_json::json!(0))), Ok(0));
        assert_eq!(
            micros_from_usd(&n(serde_json::json!(0.0000001))),
            Err(MoneyError::TooPrecise)
        );
        assert_eq!(
            micros_from_usd(&n(serde_json::json!(-1))),
            Err(MoneyError::Negative)
        );
        assert_eq!(
            micros_from_usd(&n(serde_json::json!(-0.5))),
            Err(MoneyError::Negative)
        );
        assert_eq!(
            micros_from_usd(&n(serde_json::json!(1e10))),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(
            micros_from_usd(&n(serde_json::json!(1_000_000_001u64))),
            Err(MoneyError::TooLarge)
        );
        assert_eq!(usd_from_micros(100_000), 0.1);
    }

    #[test]
    fn record_times_allow_a_little_skew_and_no_more_than_the_longest_window() {
        let now = at("2026-06-15T12:00:00Z");
        assert_eq!(check_time(now + Duration::minutes(4), now), Ok(()));
        assert_eq!(
            check_time(now + Duration::minutes(6), now),
            Err(Refusal::OccurredInFuture)
        );
        assert_eq!(check_time(at("2026-01-01T00:00:00Z"), now), Ok(()));
        assert_eq!(
            check_time(at("2025-12-31T23:59:59Z"), now),
            Err(Refusal::OccurredTooLongAgo)
        );
    }

    #[test]
    fn request_ids_are_printable_ascii() {
        assert!(valid_request_id("req_01"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id(&"x".repeat(MAX_REQUEST_ID_LEN + 1)));
    }

    #[test]
    fn the_event_type_string_is_stable_and_both_decoders_agree() {
        let e = UsageEvent::Recorded {
            account_id: AccountId::from_ulid(1),
            records: vec![UsageRecord {
                byok_id: CredentialId::from_ulid(2),
                request_id: "gw-1".into(),
                spend_micros: 5,
                calls: 1,
                occurred_at: at("2026-01-01T00:00:00Z"),
                outcome: Some(Outcome::RateLimited),
            }],
            recorded_at: at("2026-01-01T00:00:01Z"),
        };
        let new = e.to_new_event().unwrap();
        assert_eq!(new.event_type, "usage.recorded");
        let envelope = Envelope {
            event_id: "e".into(),
            position: 1,
            stream: "usage:acct_00000000000000000000000001".into(),
            stream_version: 1,
            event_type: new.event_type,
            schema: new.schema,
            occurred_at: at("2026-01-01T00:00:01Z"),
            actor: "kl_x".into(),
            request_id: "req_x".into(),
            data: new.data,
        };
        assert_eq!(UsageEvent::from_envelope(&envelope).unwrap(), e);
        assert_eq!(UsageEvent::from_envelope(&envelope).unwrap(), e);
    }
}
