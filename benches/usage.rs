//! Usage ingestion (docs/design.md §10): records per second through the service layer's
//! `Usage::report`, in batches of 500 from several concurrent reporters, on a store opened with
//! `Durability::Sync` (each batch acknowledged after the writer's group flush + fdatasync).
//!
//! One account with `CREDENTIALS` credentials, a quota on each (so every report also checks the
//! quota and reads the window's buckets, as in production); `REPORTERS` tokio tasks each send
//! reports of `BATCH` records with fresh request ids, spread over the credentials, for
//! `KEYLEDGER_BENCH_SECS` seconds (default 5) after a one-second warm-up. Counts the records
//! accepted in the measured time (every one must be accepted) and a report's latency. The HTTP
//! layer (JSON parsing of the body) is not included: see docs/benchmarks.md. Run:
//! `cargo bench --bench usage`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark may stop on any failure

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use keyledger::crypto::MasterKey;
use keyledger::domain::credential::RegisterRequest;
use keyledger::domain::usage::{Quota, QuotaWindow};
use keyledger::domain::{AccountId, CredentialId};
use keyledger::es::EventMeta;
use keyledger::service::clock::{SharedClock, SystemClock};
use keyledger::service::credentials::Credentials;
use keyledger::service::idempotency::Recording;
use keyledger::service::ids::Ids;
use keyledger::service::usage::{Reported, Usage};
use keyledger::storage::{Durability, Store};

use common::{Bar, Figure, Of};

const BATCH: usize = 500;
const REPORTERS: [usize; 2] = [4, 16];
const CREDENTIALS: usize = 8;
/// docs/design.md §10.
const BAR_RECORDS_PER_SEC: f64 = 50_000.0;

fn batch(credentials: &[CredentialId], reporter: usize, n: u64) -> Vec<Reported> {
    (0..BATCH)
        .map(|i| Reported {
            byok_id: credentials[i % credentials.len()].to_string(),
            request_id: format!("gw-{reporter}-{n}-{i}"),
            spend_micros: Ok(1234),
            calls: Ok(1),
            occurred_at: None,
            outcome: None,
        })
        .collect()
}

async fn run(reporters: usize, secs: u64) -> (f64, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let store = Store::open(dir.path(), &master, Durability::Sync).unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let ids = Arc::new(Ids::new(clock.clone()));
    let credentials = Credentials::new(store.clone(), master, clock.clone(), ids);
    let usage = Arc::new(Usage::new(store.clone(), clock));
    let account = AccountId::parse("acct_01M83WSGZCA5P4FYV8YQM5SFYW").unwrap();
    let meta = EventMeta::default();
    let mut byok_ids = Vec::new();
    for i in 0..CREDENTIALS {
        let request = RegisterRequest {
            provider: "openai".into(),
            alias: Some(format!("bench-{i}")),
            api_key: Some("sk-bench-0123456789abcdef".into()),
            ..RegisterRequest::default()
        };
        let registered = credentials
            .register(&account, request, &meta, &Recording::none())
            .await
            .unwrap();
        let id = registered.credential.byok_id.clone();
        let quota = Quota::new(Some(u64::MAX / 4), None, QuotaWindow::Day30).unwrap();
        usage
            .set_quota(&account, &id, Some(quota), None, &meta, &Recording::none())
            .await
            .unwrap();
        byok_ids.push(id);
    }
    let byok_ids = Arc::new(byok_ids);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for reporter in 0..reporters {
        let (usage, byok_ids, account) = (usage.clone(), byok_ids.clone(), account.clone());
        let (measuring, stop, accepted) = (measuring.clone(), stop.clone(), accepted.clone());
        tasks.push(tokio::spawn(async move {
            let meta = EventMeta::default();
            let mut latencies = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let records = batch(&byok_ids, reporter, n);
                n += 1;
                let counted = measuring.load(Ordering::Relaxed);
                let started = Instant::now();
                let outcome = usage.report(&account, records, &meta).await.unwrap();
                assert_eq!(outcome.accepted, BATCH, "{:?}", outcome.rejected.first());
                if counted && measuring.load(Ordering::Relaxed) {
                    accepted.fetch_add(BATCH as u64, Ordering::Relaxed);
                    latencies.push(started.elapsed());
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let window = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let rate = accepted.load(Ordering::Relaxed) as f64 / window.as_secs_f64();
    // Every record is counted once.
    let period = usage
        .usage(&account, &byok_ids[0], Some(QuotaWindow::Day1))
        .unwrap();
    assert!(period.totals.calls > 0);
    store.shutdown();
    (rate, pick(0.5), pick(0.99))
}

fn main() {
    let secs = std::env::var("KEYLEDGER_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "usage ingestion, batches of {BATCH}, {CREDENTIALS} credentials with quotas, {secs} s"
    );
    for reporters in REPORTERS {
        let (rate, p50, p99) = runtime.block_on(run(reporters, secs));
        let verdict = if rate >= BAR_RECORDS_PER_SEC {
            "meets"
        } else {
            "MISSES"
        };
        println!(
            "{reporters:>3} reporters: {rate:>10.0} records/s  report p50 {p50:?} p99 {p99:?}  ({verdict} the bar of {BAR_RECORDS_PER_SEC:.0})"
        );
        Figure {
            bench: "usage",
            figure: &format!("usage records/s in process, {reporters} reporters"),
            value: rate,
            unit: "records/s",
            ceiling: None,
            bar: Some(Bar::AtLeast(Of::Value, BAR_RECORDS_PER_SEC)),
            note: format!("batches of {BATCH}, {secs} s"),
        }
        .print();
    }
}
