//! The process's metrics, served in the Prometheus text format at `/metrics`. One registry,
//! built once on first use and shared by everything in the process; each metric is a typed field
//! of [`Metrics`], so adding one is a field, a line in [`Metrics::build`] and a
//! [`count`] where the thing happens. The only module that imports `prometheus`; it imports
//! nothing of the crate, so that every module may count.

use std::sync::LazyLock;

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder, exponential_buckets,
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
    /// `keyledger_writer_oldest_pending_seconds`: how long the oldest job handed to the writer
    /// and not yet answered has waited (0 when the writer is idle); set on every scrape, since a
    /// stuck writer cannot set it itself.
    pub writer_oldest_pending: Gauge,
    /// `keyledger_http_requests_total{route,method,status}`: answered requests, by the route
    /// pattern that matched (`unmatched` when none did), method and status code.
    pub http_requests: IntCounterVec,
    /// `keyledger_http_request_seconds{route,method}`: from a request's arrival to its answer's
    /// head (a streamed body is not waited for).
    pub http_request_seconds: HistogramVec,
    /// `keyledger_resolve_total{outcome}`: resolve's answers, `byok`, `pool`, or `error` (no
    /// credential and the policy refuses the pool, or the store failed).
    pub resolves: IntCounterVec,
    /// `keyledger_usage_records_total{result}`: records of usage reports, `accepted`,
    /// `duplicate` (a request id already recorded) or `refused` (any other refusal).
    pub usage_records: IntCounterVec,
    /// `keyledger_probes_total{outcome}`: provider probes, `ok` or the error they came to
    /// (`invalid_credentials`, `rate_limited`, `timeout`, `unreachable`, `provider_error`).
    pub probes: IntCounterVec,
    /// `keyledger_webhook_deliveries_total{outcome}`: delivery attempts, `delivered` (2xx),
    /// `gone` (410, the endpoint is disabled) or `failed` (anything else; retried on schedule).
    pub webhook_deliveries: IntCounterVec,
    /// `keyledger_webhook_delivery_seconds`: one delivery attempt, from sending to the answer
    /// (or the timeout).
    pub webhook_delivery_seconds: Histogram,
    /// `keyledger_webhook_outbox_depth`: deliveries not yet done (due, waiting for a retry, or
    /// held by a disabled endpoint), as the dispatcher counted them on its last pass.
    pub webhook_outbox_depth: IntGauge,
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
        let metrics = Self {
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
            writer_oldest_pending: register(
                &registry,
                Gauge::with_opts(Opts::new(
                    "keyledger_writer_oldest_pending_seconds",
                    "Age of the oldest job the writer has not answered (0 when idle)",
                )),
            )?,
            http_requests: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "keyledger_http_requests_total",
                        "Answered HTTP requests by route pattern, method and status",
                    ),
                    &["route", "method", "status"],
                ),
            )?,
            http_request_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "keyledger_http_request_seconds",
                        "Time from a request's arrival to its answer, by route pattern and method",
                    )
                    .buckets(buckets(exponential_buckets(0.0001, 2.0, 16))?),
                    &["route", "method"],
                ),
            )?,
            resolves: labelled(
                &registry,
                "keyledger_resolve_total",
                "Resolve answers by outcome (byok, pool, error)",
                "outcome",
            )?,
            usage_records: labelled(
                &registry,
                "keyledger_usage_records_total",
                "Usage records reported, by result (accepted, duplicate, refused)",
                "result",
            )?,
            probes: labelled(
                &registry,
                "keyledger_probes_total",
                "Provider probes by outcome",
                "outcome",
            )?,
            webhook_deliveries: labelled(
                &registry,
                "keyledger_webhook_deliveries_total",
                "Webhook delivery attempts by outcome (delivered, gone, failed)",
                "outcome",
            )?,
            webhook_delivery_seconds: histogram(
                &registry,
                "keyledger_webhook_delivery_seconds",
                "Time of one webhook delivery attempt",
                // 1 ms to about 16 s, past the longest attempt allowed.
                exponential_buckets(0.001, 2.0, 15),
            )?,
            webhook_outbox_depth: gauge(
                &registry,
                "keyledger_webhook_outbox_depth",
                "Webhook deliveries not yet done, as the dispatcher last counted them",
            )?,
            registry,
        };
        // Every outcome is exported from the start, at 0, so that a rate over it exists before
        // the first one happens.
        for (counter, values) in [
            (&metrics.resolves, &RESOLVE_OUTCOMES[..]),
            (&metrics.usage_records, &USAGE_RESULTS[..]),
            (&metrics.probes, &PROBE_OUTCOMES[..]),
            (&metrics.webhook_deliveries, &DELIVERY_OUTCOMES[..]),
        ] {
            for value in values {
                counter.with_label_values(&[*value]);
            }
        }
        Ok(metrics)
    }
}

/// The outcomes of `keyledger_resolve_total`.
pub const RESOLVE_OUTCOMES: [&str; 3] = ["byok", "pool", "error"];
/// The results of `keyledger_usage_records_total`.
pub const USAGE_RESULTS: [&str; 3] = ["accepted", "duplicate", "refused"];
/// The outcomes of `keyledger_probes_total`: `ok` and the probe errors' codes.
pub const PROBE_OUTCOMES: [&str; 6] = [
    "ok",
    "invalid_credentials",
    "rate_limited",
    "timeout",
    "unreachable",
    "provider_error",
];
/// The outcomes of `keyledger_webhook_deliveries_total`.
pub const DELIVERY_OUTCOMES: [&str; 3] = ["delivered", "gone", "failed"];

/// Registers a metric just built, answering it for its field.
fn register<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    built: Result<M, prometheus::Error>,
) -> Result<M, MetricsError> {
    let metric = built.map_err(|e| MetricsError(e.to_string()))?;
    registry
        .register(Box::new(metric.clone()))
        .map_err(|e| MetricsError(e.to_string()))?;
    Ok(metric)
}

fn buckets(buckets: Result<Vec<f64>, prometheus::Error>) -> Result<Vec<f64>, MetricsError> {
    buckets.map_err(|e| MetricsError(e.to_string()))
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: Result<Vec<f64>, prometheus::Error>,
) -> Result<Histogram, MetricsError> {
    let opts = HistogramOpts::new(name, help).buckets(self::buckets(buckets)?);
    register(registry, Histogram::with_opts(opts))
}

fn counter(registry: &Registry, name: &str, help: &str) -> Result<IntCounter, MetricsError> {
    register(registry, IntCounter::with_opts(Opts::new(name, help)))
}

/// A counter with one label.
fn labelled(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
) -> Result<IntCounterVec, MetricsError> {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), &[label]),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, MetricsError> {
    register(registry, IntGauge::with_opts(Opts::new(name, help)))
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
        count(|m| m.writer_oldest_pending.set(0.0));
        count(|m| m.webhook_outbox_depth.set(0));
        count(|m| {
            m.http_requests
                .with_label_values(&["/v1/byok/{id}", "GET", "200"])
                .inc_by(0);
            m.http_request_seconds
                .with_label_values(&["/v1/byok/{id}", "GET"])
                .observe(0.0);
        });
        let text = render().unwrap();
        for name in [
            "keyledger_resolve_follower_lag_events",
            "keyledger_resolve_settle_timeouts_total",
            "keyledger_events_appended_total",
            "keyledger_store_size_bytes",
            "keyledger_append_seconds_count",
            "keyledger_flush_seconds_count",
            "keyledger_group_appends_count",
            "keyledger_writer_oldest_pending_seconds",
            "keyledger_webhook_delivery_seconds_count",
            "keyledger_webhook_outbox_depth",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{text}");
        }
        assert!(text.contains(
            "\nkeyledger_http_requests_total{method=\"GET\",route=\"/v1/byok/{id}\",status=\"200\"} "
        ));
        assert!(text.contains(
            "\nkeyledger_http_request_seconds_count{method=\"GET\",route=\"/v1/byok/{id}\"} "
        ));
        // Outcomes are there before anything happened.
        for (name, label, values) in [
            ("keyledger_resolve_total", "outcome", &RESOLVE_OUTCOMES[..]),
            (
                "keyledger_usage_records_total",
                "result",
                &USAGE_RESULTS[..],
            ),
            ("keyledger_probes_total", "outcome", &PROBE_OUTCOMES[..]),
            (
                "keyledger_webhook_deliveries_total",
                "outcome",
                &DELIVERY_OUTCOMES[..],
            ),
        ] {
            for value in values {
                let sample = format!("\n{name}{{{label}=\"{value}\"}} ");
                assert!(text.contains(&sample), "{sample} in {text}");
            }
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
