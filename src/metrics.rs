//! The process's metrics, served in the Prometheus text format at `/metrics`. One registry,
//! built once on first use and shared by everything in the process; each metric is a typed field
//! of [`Metrics`], so adding one is a field, a line in [`Metrics::build`] and a
//! [`count`] where the thing happens. The only module that imports `prometheus`; it imports
//! nothing of the crate, so that every module may count.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntGauge, Opts, Registry, TextEncoder,
    exponential_buckets,
};

/// Every metric keyledger exports.
pub struct Metrics {
    registry: Registry,
    /// `keyledger_corrupt_records_total`: damaged records found in the store, by the check on
    /// start and by every read that meets one (each finding counts; the log names the record).
    pub corrupt_records: IntCounter,
    /// `keyledger_resolve_follower_lag_events`: the durable position minus the position the
    /// routing state has applied, as the follower last saw it (0 when it is caught up).
    pub follower_lag: IntGauge,
    /// `keyledger_resolve_settle_timeouts_total`: mutations that answered before the routing
    /// state had applied them (the bounded wait for read-your-writes ran out).
    pub settle_timeouts: IntCounter,
    /// `keyledger_events_appended_total`: events made durable by the writer.
    pub events_appended: IntCounter,
    /// `keyledger_append_seconds`: from an append's hand-over to the writer to its answer
    /// (durable, or refused), as its caller waits.
    pub append_seconds: Histogram,
    /// `keyledger_flush_seconds`: the writer's flush and fdatasync of one group.
    pub flush_seconds: Histogram,
    /// `keyledger_group_appends`: appends committed together in one group.
    pub group_appends: Histogram,
    /// `keyledger_store_size_bytes`: sled's files on disk, as last measured by the writer (at
    /// most every few seconds).
    pub store_size: IntGauge,
}

#[derive(Debug, thiserror::Error)]
#[error("the metrics registry is unusable: {0}")]
pub struct MetricsError(String);

/// Built on first use. Metric names are constants checked by a test, so building cannot fail
/// in a released build; if it did, counting does nothing and `/metrics` answers an error, rather
/// than the process stopping.
static METRICS: LazyLock<Result<Metrics, MetricsError>> = LazyLock::new(Metrics::build);

impl Metrics {
    fn build() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        Ok(Self {
            corrupt_records: counter(
                &registry,
                "keyledger_corrupt_records_total",
                "Damaged records found in the store (events, projection rows, data keys), by the \
                 check on start and by reads",
            )?,
            follower_lag: gauge(
                &registry,
                "keyledger_resolve_follower_lag_events",
                "Durable events the routing state of resolve has not applied yet",
            )?,
            settle_timeouts: counter(
                &registry,
                "keyledger_resolve_settle_timeouts_total",
                "Mutations answered before resolve's routing state had applied them",
            )?,
            events_appended: counter(
                &registry,
                "keyledger_events_appended_total",
                "Events the writer made durable",
            )?,
            append_seconds: histogram(
                &registry,
                "keyledger_append_seconds",
                "Time from an append's hand-over to the writer to its answer",
                // 100 µs to about 3 s.
                exponential_buckets(0.0001, 2.0, 16),
            )?,
            flush_seconds: histogram(
                &registry,
                "keyledger_flush_seconds",
                "Time of the writer's flush and fdatasync of one group",
                exponential_buckets(0.0001, 2.0, 16),
            )?,
            group_appends: histogram(
                &registry,
                "keyledger_group_appends",
                "Appends committed together in one group",
                // 1 to 1024, the most one group takes.
                exponential_buckets(1.0, 2.0, 11),
            )?,
            store_size: gauge(
                &registry,
                "keyledger_store_size_bytes",
                "Size of the store's files on disk, as last measured",
            )?,
            registry,
        })
    }
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: Result<Vec<f64>, prometheus::Error>,
) -> Result<Histogram, MetricsError> {
    let buckets = buckets.map_err(|e| MetricsError(e.to_string()))?;
    let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .map_err(|e| MetricsError(e.to_string()))?;
    registry
        .register(Box::new(histogram.clone()))
        .map_err(|e| MetricsError(e.to_string()))?;
    Ok(histogram)
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    let counter =
        IntCounter::with_opts(Opts::new(name, help)).map_err(|e| MetricsError(e.to_string()))?;
    registry
        .register(Box::new(counter.clone()))
        .map_err(|e| MetricsError(e.to_string()))?;
    Ok(counter)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    let gauge =
        IntGauge::with_opts(Opts::new(name, help)).map_err(|e| MetricsError(e.to_string()))?;
    registry
        .register(Box::new(gauge.clone()))
        .map_err(|e| MetricsError(e.to_string()))?;
    Ok(gauge)
}

/// Updates metrics: `metrics::count(|m| m.corrupt_records.inc())`.
pub fn count(update: impl FnOnce(&Metrics)) {
    if let Ok(metrics) = &*METRICS {
        update(metrics);
    }
}

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Every metric in the Prometheus text exposition format.
pub fn render() -> Result<String, MetricsError> {
    let metrics = METRICS.as_ref().map_err(|e| MetricsError(e.0.clone()))?;
    TextEncoder::new()
        .encode_to_string(&metrics.registry.gather())
        .map_err(|e| MetricsError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_registered_and_rendered() {
        assert!(METRICS.is_ok(), "{:?}", METRICS.as_ref().err());
        count(|m| m.corrupt_records.inc_by(0));
        count(|m| m.settle_timeouts.inc_by(0));
        count(|m| m.follower_lag.set(0));
        count(|m| m.events_appended.inc_by(0));
        count(|m| m.store_size.set(0));
        let text = render().unwrap();
        for name in [
            "keyledger_resolve_follower_lag_events",
            "keyledger_resolve_settle_timeouts_total",
            "keyledger_events_appended_total",
            "keyledger_store_size_bytes",
            "keyledger_append_seconds_count",
            "keyledger_flush_seconds_count",
            "keyledger_group_appends_count",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{text}");
        }
        assert!(
            text.contains("# TYPE keyledger_corrupt_records_total counter"),
            "{text}"
        );
        assert!(
            text.contains("\nkeyledger_corrupt_records_total "),
            "{text}"
        );
    }
}
