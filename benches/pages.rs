//! Event pages and replay (docs/design.md §10): the 100-event page at position ~1,000,000 against
//! the page at position 0, on one store of more than a million events, and how fast the log
//! replays.
//!
//! - **Load**: `Store::open(.., Durability::Sync)` in a temp dir under `$TMPDIR`. One account
//!   (`account.created` + 7 `account_key.created`, one request), then `STREAMS` credential streams
//!   of that account, each `byok.registered` followed by `byok.updated` events (~300 bytes of
//!   `data`: a unique label and a model list), appended in requests of `REQUEST` events, round
//!   robin over the streams, from two threads (so that the writer can stage one request while the
//!   other is built). Every credential event also lands in the account's feed (`e/` rows), so the
//!   account feed holds every position of the log and each stream feed a quarter of them.
//!   Credentials and not `account_key.created`: each key has a stream of its own, with one event
//!   of its own (the probe below measures key events on one account).
//! - **Pages**: for the account feed and for stream 0, the page of `PAGE` events after cursor 0
//!   (shallow) and after the cursor that leaves exactly one more event behind the page (deep:
//!   position ~999,900, version ~249,900), each through `Store::read_feed` and through
//!   `Events::page` (wait 0, on a current-thread runtime). `REPS` repetitions of all eight cases,
//!   interleaved (the order rotates each repetition) after `REPS / 10` untimed ones; the very
//!   first call of each case is reported separately ("first touch").
//! - **Replay**: `Store::verify` (replay the whole chain into projections in memory while the
//!   live `s/` and `e/` rows are read beside it, compare, check the data keys) and
//!   `Store::rebuild` on the sound store (the same, writing nothing), each `REPLAYS` times,
//!   timed as events replayed per second (median, and the best), with the resident memory verify
//!   adds at its peak (sampled every 10 ms). Then, as the ceiling, the store is shut down and
//!   reopened with plain sled, and its `l/` rows are scanned three times: cold (just reopened),
//!   warm with a chained HMAC per event (what any replay of this log pays: the ceiling), and warm
//!   with the HMAC and an `Envelope` decode (what replay paid per event before it read envelopes
//!   in one pass), each part timed. Last, every projection row and the format row are deleted
//!   with plain sled and the store reopened, which rebuilds every row on open: the worst
//!   rebuild.
//!
//! Knobs: `KEYLEDGER_BENCH_EVENTS` (credential events, default 1,000,000),
//! `KEYLEDGER_BENCH_REPS` (default 2,000), `KEYLEDGER_BENCH_REPLAYS` (default 3),
//! `KEYLEDGER_BENCH_REBUILD=0` (skip the rebuilds).
//! Probe: `KEYLEDGER_BENCH_PROBE_KEYS=N` instead appends N `account_key.created` events (each on
//! its key's own stream) to one account in requests of `REQUEST` and prints how long each
//! request and the replay take.
//! Run: `cargo bench --bench pages`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark may stop on any failure

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{Bar, Figure, Of, cpu_time, median, with_peak_rss};

use keyledger::crypto::{DataKey, KeyedHasher, MasterKey, data_key_binding};
use keyledger::domain::Scope;
use keyledger::domain::account::{Account, AccountEvent};
use keyledger::domain::account_key::ApiKeyEvent;
use keyledger::domain::credential::{CredentialEvent, CredentialProfile, Registered, Updated};
use keyledger::domain::{AccountId, CredentialId, KeyId};
use keyledger::es::{DomainEvent, Envelope, EventMeta, ExpectedVersion, NewEvent, StreamId};
use keyledger::service::clock::SystemClock;
use keyledger::service::events::{Events, FeedQuery, Reader};
use keyledger::service::ids::Ids;
use keyledger::storage::{AppendRequest, DataKeyChange, Durability, Feed, Store, StreamAppend};

/// Credential streams of the account.
const STREAMS: usize = 4;
/// Events per append request.
const REQUEST: usize = 1000;
/// Events per page.
const PAGE: usize = 100;
const VALUE_LEN: usize = 300;
/// Key events of the account before its credentials (as in the append bench).
const ACCOUNT_KEYS: u64 = 7;
/// The bars of docs/design.md §10.
const BAR_DEPTH_RATIO: f64 = 1.5;
const BAR_REPLAY_PER_SEC: f64 = 300_000.0;

const MODELS: [&str; 4] = ["gpt-4o", "gpt-4o-mini", "o3-mini", "text-embedding-3-large"];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Ids as the server mints them.
fn ids() -> &'static Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    IDS.get_or_init(|| Ids::new(Arc::new(SystemClock)))
}

fn meta() -> EventMeta {
    EventMeta {
        actor: "kl_bench".to_owned(),
        request_id: ids().request(),
    }
}

fn data_len(event: &NewEvent) -> usize {
    serde_json::to_vec(&event.data).expect("encode").len()
}

/// One credential stream of the account, as its producer thread sees it.
struct Credential {
    byok_id: CredentialId,
    /// Events appended so far (the stream's version).
    version: u64,
    /// Label padding that makes a `byok.updated` payload about `VALUE_LEN` bytes.
    pad: String,
}

impl Credential {
    fn new(pad: &str) -> Self {
        Self {
            byok_id: ids().credential(),
            version: 0,
            pad: pad.to_owned(),
        }
    }

    fn stream(&self) -> StreamId {
        StreamId::new("byok", self.byok_id.as_str())
    }

    fn updated(&self, version: u64) -> NewEvent {
        CredentialEvent::Updated(Box::new(Updated {
            byok_id: self.byok_id.clone(),
            alias: None,
            // Unique per event, padded to the payload size.
            label: Some(Some(format!("bench v{version:08} {}", self.pad))),
            base_url: None,
            declared_region: None,
            residency: None,
            models: Some(MODELS.iter().map(|m| (*m).to_owned()).collect()),
            blacklisted_models: None,
            weight: Some(100 + (version % 7) as u32),
            settings: Default::default(),
            model_map: None,
            updated_at: chrono::Utc::now(),
        }))
        .to_new_event()
        .expect("encode byok.updated")
    }

    fn registered(&self, account_id: &AccountId) -> NewEvent {
        CredentialEvent::Registered(Box::new(Registered {
            byok_id: self.byok_id.clone(),
            account_id: account_id.to_owned(),
            profile: CredentialProfile {
                provider: "openai".to_owned(),
                alias: format!("bench-{}", self.byok_id.as_str().to_lowercase()),
                label: None,
                base_url: None,
                declared_region: None,
                residency: "global".to_owned(),
                models: vec![],
                blacklisted_models: vec![],
                weight: 100,
                bindings: vec![],
                settings: Default::default(),
                model_map: Default::default(),
            },
            // Opaque here: the bench seals nothing under the data key it stores.
            sealed_secret: "YmVuY2gtY2lwaGVydGV4dC1ub3QtYS1yZWFsLXNlY3JldA==".to_owned(),
            secret_hint: "abcd".to_owned(),
            created_at: chrono::Utc::now(),
        }))
        .to_new_event()
        .expect("encode byok.registered")
    }

    /// The next request: up to `REQUEST` events, `left` still to write on this stream.
    fn next_request(
        &mut self,
        account_id: &AccountId,
        master: &MasterKey,
        left: u64,
    ) -> AppendRequest {
        let n = (REQUEST as u64).min(left);
        let expected = if self.version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(self.version)
        };
        // The first request stores the credential's data key, as registering does: verify opens
        // every live credential's key.
        let data_key = (self.version == 0).then(|| DataKeyChange::Store {
            record: self.byok_id.to_string(),
            wrapped: master
                .wrap(
                    &DataKey::generate(),
                    &data_key_binding(account_id.as_str(), self.byok_id.as_str()),
                )
                .expect("wrap a data key"),
        });
        let events = (self.version + 1..=self.version + n)
            .map(|v| {
                if v == 1 {
                    self.registered(account_id)
                } else {
                    self.updated(v)
                }
            })
            .collect();
        self.version += n;
        AppendRequest {
            stream: self.stream(),
            expected,
            events,
            meta: meta(),
            data_key,
            also: Vec::new(),
            idempotency: None,
        }
    }
}

/// Label padding for a ~`VALUE_LEN`-byte `byok.updated` payload.
fn label_pad() -> String {
    let probe = Credential::new("");
    let base = data_len(&probe.updated(99_999_999));
    "p".repeat(VALUE_LEN.saturating_sub(base).clamp(1, 100))
}

/// Key `n` of `account_id`, created on its own stream.
fn key_created(account_id: &AccountId, n: u64, name: &str) -> StreamAppend {
    let key_id = ids().key();
    let event = ApiKeyEvent::Created {
        key_id: key_id.clone(),
        account_id: account_id.clone(),
        name: name.to_owned(),
        prefix: format!("kl_{:05x}", n & 0xf_ffff),
        scopes: Scope::DEFAULT.to_vec(),
        // Unique per store: a sequence, then filler.
        token_hash: format!("{n:016x}{:048x}", 0xbe4c_u128),
        created_at: chrono::Utc::now(),
    }
    .to_new_event()
    .expect("encode account_key.created");
    StreamAppend {
        stream: StreamId::new("account_key", key_id.as_str()),
        expected: ExpectedVersion::NoStream,
        events: vec![event],
    }
}

/// Appends the key streams of `keys` in one request.
fn append_keys(store: &Store, mut keys: Vec<StreamAppend>) {
    let first = keys.remove(0);
    store
        .append_blocking(AppendRequest {
            stream: first.stream,
            expected: first.expected,
            events: first.events,
            meta: meta(),
            data_key: None,
            also: keys,
            idempotency: None,
        })
        .expect("append keys");
}

/// Opens an account with `keys` keys in one request; answers its id and its keys' ids.
fn open_account(store: &Store, keys: u64) -> (AccountId, Vec<KeyId>) {
    let account_id = ids().account();
    let events = vec![
        AccountEvent::Created {
            account_id: account_id.clone(),
            email: format!("pages-{}@example.com", account_id.as_str().to_lowercase()),
            created_at: chrono::Utc::now(),
        }
        .to_new_event()
        .expect("encode account.created"),
    ];
    let also: Vec<StreamAppend> = (1..=keys)
        .map(|n| key_created(&account_id, n, "bench key"))
        .collect();
    let key_ids = also
        .iter()
        .filter_map(|k| KeyId::parse(k.stream.id()))
        .collect();
    store
        .append_blocking(AppendRequest {
            stream: StreamId::new("account", account_id.as_str()),
            expected: ExpectedVersion::NoStream,
            events,
            meta: meta(),
            data_key: None,
            also,
            idempotency: None,
        })
        .expect("open the account");
    (account_id, key_ids)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Appends `events` credential events to `STREAMS` streams of `account_id`, from two threads.
/// Answers the streams (with their lengths).
fn load(
    store: &Store,
    master: &MasterKey,
    account_id: &AccountId,
    events: u64,
) -> Vec<(StreamId, u64)> {
    let pad = label_pad();
    let per_stream = events / STREAMS as u64;
    let started = Instant::now();
    let streams: Vec<Vec<(StreamId, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let pad = &pad;
                scope.spawn(move || {
                    let mut mine: Vec<Credential> = (0..STREAMS)
                        .filter(|s| s % 2 == t)
                        .map(|_| Credential::new(pad))
                        .collect();
                    let mut done = 0u64;
                    while mine.iter().any(|c| c.version < per_stream) {
                        for credential in mine.iter_mut().filter(|c| c.version < per_stream) {
                            let request = credential.next_request(
                                account_id,
                                master,
                                per_stream - credential.version,
                            );
                            let n = request.events.len() as u64;
                            store.append_blocking(request).expect("append");
                            done += n;
                            if t == 0 && done % 100_000 < n {
                                eprintln!(
                                    "  loaded ~{} events, {:.0}/s",
                                    done * 2,
                                    (done * 2) as f64 / started.elapsed().as_secs_f64()
                                );
                            }
                        }
                    }
                    mine.iter()
                        .map(|c| (c.stream(), c.version))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("load thread panicked"))
            .collect()
    });
    streams.into_iter().flatten().collect()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Store,
    Events,
}

struct Case<'a> {
    feed: Feed<'a>,
    /// `account` or `stream`.
    kind: &'static str,
    deep: bool,
    after: u64,
    via: Via,
    first: Duration,
    /// ns, sorted after the run.
    samples: Vec<u64>,
}

impl Case<'_> {
    fn percentile(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil() as usize;
        Duration::from_nanos(self.samples[rank.clamp(1, self.samples.len()) - 1])
    }
}

/// One page of `case`, timed; checks that it is the expected page.
fn read_page(
    case: &Case<'_>,
    store: &Store,
    events: &Events,
    reader: &Reader,
    rt: &tokio::runtime::Runtime,
) -> u64 {
    let started = Instant::now();
    let page = match case.via {
        Via::Store => store
            .read_feed(&case.feed, case.after, PAGE, |_| true)
            .map_err(|e| e.to_string()),
        Via::Events => rt
            .block_on(events.page(
                reader,
                &case.feed,
                &FeedQuery {
                    after: case.after,
                    limit: PAGE,
                    types: vec![],
                    wait: Duration::ZERO,
                },
            ))
            .map_err(|e| e.to_string()),
    }
    .expect("read a page");
    let took = started.elapsed().as_nanos() as u64;
    assert_eq!(page.events.len(), PAGE, "a full page");
    assert!(
        page.has_more,
        "one more event is behind every measured page"
    );
    let first = &page.events[0];
    let ordinal = match case.feed {
        Feed::Account(_) => first.position,
        Feed::Stream(_) => first.stream_version,
    };
    assert_eq!(ordinal, case.after + 1, "the page starts after its cursor");
    took
}

/// The replay ceiling: the log rows alone, read back with plain sled.
struct LogScan {
    events: u64,
    reopen: Duration,
    /// First pass over the `l/` rows after reopening: iteration only.
    cold: Duration,
    /// Second pass with the chained HMAC of each value: the least any replay of this log
    /// does (read every event, check the chain), the raw ceiling replay is compared with.
    chained: Duration,
    /// Third pass, with the parts below: the envelope decoded as `Envelope` (a
    /// `serde_json::Value` payload) too, as replay did before its fast path.
    warm: Duration,
    decode: Duration,
    hash: Duration,
}

/// Reopens the (shut down) store with sled and reads its log: `l/<position>` rows whose value
/// is `hmac(32) ‖ envelope JSON` (storage/keys.rs).
fn scan_log(dir: &Path) -> LogScan {
    let started = Instant::now();
    let db = sled::Config::new()
        .path(dir)
        .open()
        .expect("reopen with sled");
    let reopen = started.elapsed();
    let started = Instant::now();
    let mut events = 0u64;
    for row in db.scan_prefix(b"l/") {
        let (_, value) = row.expect("scan");
        black_box(value.len());
        events += 1;
    }
    let cold = started.elapsed();
    // Same cost as the store's chain hash; the key does not matter here.
    let hasher = KeyedHasher::new(&DataKey::generate());
    let mut previous = [0u8; 32];
    let started = Instant::now();
    for row in db.scan_prefix(b"l/") {
        let (_, value) = row.expect("scan");
        previous = hasher.hash(&[&previous, &value[32..]]);
    }
    black_box(previous);
    let chained = started.elapsed();
    let (mut decode, mut hash) = (Duration::ZERO, Duration::ZERO);
    let started = Instant::now();
    for row in db.scan_prefix(b"l/") {
        let (_, value) = row.expect("scan");
        let json = &value[32..];
        let t0 = Instant::now();
        let envelope: Envelope = serde_json::from_slice(json).expect("decode an envelope");
        let t1 = Instant::now();
        previous = hasher.hash(&[&previous, json]);
        let t2 = Instant::now();
        black_box(&envelope);
        decode += t1 - t0;
        hash += t2 - t1;
    }
    let warm = started.elapsed();
    LogScan {
        events,
        reopen,
        cold,
        chained,
        warm,
        decode,
        hash,
    }
}

fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

/// `account_key.created` for one account: each key event writes its own key's row, never the
/// account's.
fn probe_keys(keys: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &MasterKey::generate(), Durability::Sync).expect("open");
    let (account_id, _) = open_account(&store, 0);
    let stream = StreamId::new("account", account_id.as_str());
    let name = "k".repeat(40);
    let mut version = 1;
    println!("| keys after request | request ms | events/s | account row bytes |");
    println!("|---:|---:|---:|---:|");
    while version - 1 < keys {
        let n = (REQUEST as u64).min(keys - (version - 1));
        let events = (version..version + n)
            .map(|k| key_created(&account_id, k, &name))
            .collect();
        let started = Instant::now();
        append_keys(&store, events);
        let took = started.elapsed();
        version += n;
        let row = store
            .load::<Account>(&stream)
            .expect("load")
            .map(|a| serde_json::to_vec(&a).expect("encode").len())
            .unwrap_or(0);
        println!(
            "| {} | {:.0} | {:.0} | {row} |",
            version - 1,
            took.as_secs_f64() * 1e3,
            n as f64 / took.as_secs_f64()
        );
    }
    let started = Instant::now();
    let report = store.verify().expect("verify");
    let took = started.elapsed();
    assert!(report.is_sound());
    println!(
        "\nverify: {} events in {:.2} s = {:.0} events/s",
        report.events,
        took.as_secs_f64(),
        report.events as f64 / took.as_secs_f64()
    );
    store.shutdown();
}

fn main() {
    if let Some(keys) = std::env::var("KEYLEDGER_BENCH_PROBE_KEYS")
        .ok()
        .and_then(|k| k.parse().ok())
    {
        probe_keys(keys);
        return;
    }
    let credential_events: u64 = env_or("KEYLEDGER_BENCH_EVENTS", 1_000_000);
    let reps: usize = env_or("KEYLEDGER_BENCH_REPS", 2000);
    let rebuild = std::env::var("KEYLEDGER_BENCH_REBUILD").as_deref() != Ok("0");
    let replays: usize = env_or("KEYLEDGER_BENCH_REPLAYS", 3).max(1);
    let run_started = Instant::now();

    let dir = tempfile::tempdir().expect("temp dir");
    let master = MasterKey::generate();
    let store = Store::open(dir.path(), &master, Durability::Sync).expect("open");
    let pad = label_pad();
    let updated_len = data_len(&Credential::new(&pad).updated(1));
    eprintln!(
        "loading {credential_events} credential events ({STREAMS} streams, {REQUEST} per request, \
         byok.updated data {updated_len} B) into {}",
        dir.path().display()
    );

    let started = Instant::now();
    let (account_id, key_ids) = open_account(&store, ACCOUNT_KEYS);
    let streams = load(&store, &master, &account_id, credential_events);
    let load_time = started.elapsed();
    let total = store.last_position().expect("tail");
    assert_eq!(
        total,
        1 + ACCOUNT_KEYS + streams.iter().map(|s| s.1).sum::<u64>(),
        "every event is in the log"
    );
    let disk = dir_bytes(dir.path());
    eprintln!(
        "loaded {total} events in {:.1} s ({:.0}/s), {:.0} MB on disk",
        load_time.as_secs_f64(),
        total as f64 / load_time.as_secs_f64(),
        disk as f64 / 1e6
    );

    let (stream, stream_len) = streams[0].clone();
    let (_closing, never) = tokio::sync::watch::channel(false);
    let events = Events::new(store.clone(), never);
    // `Events::page` confirms the key it is read with after every read, as the API's feeds do.
    let reader = Reader {
        account_id: account_id.clone(),
        key_id: key_ids.first().expect("a key").clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    // Deep: the page ends one event before the feed's end, so it also sees `has_more` as the
    // shallow page does.
    let deep_account = total - PAGE as u64 - 1;
    let deep_stream = stream_len - PAGE as u64 - 1;
    let mut cases = Vec::new();
    for via in [Via::Store, Via::Events] {
        for (kind, deep, after) in [
            ("account", false, 0),
            ("account", true, deep_account),
            ("stream", false, 0),
            ("stream", true, deep_stream),
        ] {
            let feed = match kind {
                "account" => Feed::Account(&account_id),
                _ => Feed::Stream(&stream),
            };
            cases.push(Case {
                feed,
                kind,
                deep,
                after,
                via,
                first: Duration::ZERO,
                samples: Vec::with_capacity(reps),
            });
        }
    }
    for case in &mut cases {
        case.first = Duration::from_nanos(read_page(case, &store, &events, &reader, &rt));
    }
    let warmup = reps / 10;
    let pages_started = Instant::now();
    for rep in 0..warmup + reps {
        for i in 0..cases.len() {
            let c = (rep + i) % cases.len();
            let took = read_page(&cases[c], &store, &events, &reader, &rt);
            if rep >= warmup {
                cases[c].samples.push(took);
            }
        }
    }
    let pages_time = pages_started.elapsed();
    for case in &mut cases {
        case.samples.sort_unstable();
    }
    eprintln!(
        "{} pages in {:.1} s",
        (warmup + reps) * cases.len(),
        pages_time.as_secs_f64()
    );

    let mut verify_runs = Vec::new();
    let mut verify_added = Vec::new();
    let cpu_before = cpu_time();
    for _ in 0..replays {
        let (report, took, added) = with_peak_rss(|| store.verify().expect("verify"));
        assert!(
            report.is_sound(),
            "verify: {:?} {:?}",
            &report.mismatches[..3.min(report.mismatches.len())],
            &report.key_problems[..3.min(report.key_problems.len())]
        );
        assert_eq!(report.events, total);
        eprintln!(
            "verify: {:.2} s, resident memory +{:.1} MB at its peak",
            took.as_secs_f64(),
            added as f64 / 1e6
        );
        verify_runs.push(took);
        verify_added.push(added);
    }
    let verify_cpu = cpu_time().saturating_sub(cpu_before).as_secs_f64()
        / verify_runs.iter().sum::<Duration>().as_secs_f64();
    let verify_time = median(verify_runs.clone());
    let rebuild_runs: Vec<Duration> = (0..if rebuild { replays } else { 0 })
        .map(|_| {
            let started = Instant::now();
            let replayed = store.rebuild().expect("rebuild");
            let took = started.elapsed();
            assert_eq!(replayed, total);
            eprintln!("rebuild: {:.2} s", took.as_secs_f64());
            took
        })
        .collect();
    let rebuild_time = rebuild.then(|| median(rebuild_runs.clone()));
    // The feeds still read the same after a rebuild.
    read_page(&cases[1], &store, &events, &reader, &rt);
    read_page(&cases[3], &store, &events, &reader, &rt);

    store.shutdown();
    drop(events);
    drop(store);
    let scan = scan_log(dir.path());
    assert_eq!(scan.events, total, "every event is in the log");
    eprintln!(
        "log scan: reopen {:.1} s, cold {:.2} s, warm {:.2} s",
        scan.reopen.as_secs_f64(),
        scan.cold.as_secs_f64(),
        scan.warm.as_secs_f64()
    );
    // The worst rebuild: every projection row lost (and the format row with them), rebuilt when
    // the store opens, writing every row.
    let from_nothing = rebuild.then(|| {
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .expect("reopen with sled");
        for prefix in [&b"h/"[..], b"s/", b"a/", b"i/", b"e/"] {
            for row in db.scan_prefix(prefix) {
                db.remove(row.expect("scan").0).expect("remove");
            }
        }
        db.remove(b"m/projections").expect("remove");
        db.flush().expect("flush");
        drop(db);
        let started = Instant::now();
        let store = Store::open(dir.path(), &master, Durability::Sync).expect("open");
        let took = started.elapsed();
        let report = store.verify().expect("verify");
        assert!(report.is_sound(), "after a rebuild on open");
        store.shutdown();
        eprintln!("rebuild of every row, on open: {:.2} s", took.as_secs_f64());
        took
    });
    drop(dir);

    println!(
        "event pages: {total} events ({} B byok.updated payloads; account feed = every position, \
         stream feed = {stream_len} versions), {PAGE} events per page, {reps} interleaved \
         repetitions after {warmup} untimed\n",
        updated_len
    );
    println!(
        "load: {total} events in {:.1} s = {:.0} events/s, {:.0} MB on disk\n",
        load_time.as_secs_f64(),
        total as f64 / load_time.as_secs_f64(),
        disk as f64 / 1e6
    );
    println!(
        "| via | feed | cursor | first touch µs | p50 µs | p99 µs | deep/shallow p50 | deep/shallow p99 |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut worst: f64 = 0.0;
    for case in &cases {
        let (r50, r99) = if case.deep {
            let shallow = cases
                .iter()
                .find(|c| c.via == case.via && c.kind == case.kind && !c.deep)
                .expect("shallow case");
            let r50 = case.percentile(50.0).as_secs_f64() / shallow.percentile(50.0).as_secs_f64();
            let r99 = case.percentile(99.0).as_secs_f64() / shallow.percentile(99.0).as_secs_f64();
            worst = worst.max(r50);
            (format!("{r50:.2}"), format!("{r99:.2}"))
        } else {
            (String::new(), String::new())
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {r50} | {r99} |",
            match case.via {
                Via::Store => "Store::read_feed",
                Via::Events => "Events::page",
            },
            case.kind,
            case.after,
            us(case.first),
            us(case.percentile(50.0)),
            us(case.percentile(99.0)),
        );
    }
    let per_sec = |d: Duration| total as f64 / d.as_secs_f64();
    let ceiling = per_sec(scan.chained);
    println!();
    println!(
        "replay: median of {replays} runs (best in brackets); ratio = events/s over the ceiling's (sled scan of l/ + chained HMAC, same run)\n"
    );
    println!("| replay | events | seconds | events/s | ratio to ceiling |");
    println!("|---|---:|---:|---:|---:|");
    let best = |runs: &[Duration]| runs.iter().min().copied().unwrap_or_default();
    println!(
        "| Store::verify | {total} | {:.2} ({:.2}) | {:.0} ({:.0}) | {:.2} |",
        verify_time.as_secs_f64(),
        best(&verify_runs).as_secs_f64(),
        per_sec(verify_time),
        per_sec(best(&verify_runs)),
        per_sec(verify_time) / ceiling
    );
    if let Some(took) = rebuild_time {
        println!(
            "| Store::rebuild (a sound store: compares, writes nothing) | {total} | {:.2} ({:.2}) | {:.0} ({:.0}) | {:.2} |",
            took.as_secs_f64(),
            best(&rebuild_runs).as_secs_f64(),
            per_sec(took),
            per_sec(best(&rebuild_runs)),
            per_sec(took) / ceiling
        );
    }
    if let Some(took) = from_nothing {
        println!(
            "| rebuild on open, every projection row lost (writes them all) | {total} | {:.2} | {:.0} | {:.2} |",
            took.as_secs_f64(),
            per_sec(took),
            per_sec(took) / ceiling
        );
    }
    let per_event = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1e6 / total as f64);
    println!(
        "| ceiling: sled scan of the l/ rows, cold (after a {:.1} s reopen) | {total} | {:.2} | {:.0} | |",
        scan.reopen.as_secs_f64(),
        scan.cold.as_secs_f64(),
        per_sec(scan.cold)
    );
    println!(
        "| ceiling: the same scan warm + chained HMAC | {total} | {:.2} | {:.0} | 1.00 |",
        scan.chained.as_secs_f64(),
        ceiling
    );
    println!(
        "| context: the same scan warm + chained HMAC + `Envelope` decode | {total} | {:.2} | {:.0} | {:.2} |",
        scan.warm.as_secs_f64(),
        per_sec(scan.warm),
        per_sec(scan.warm) / ceiling
    );
    let scan_only = scan.warm.saturating_sub(scan.decode + scan.hash);
    println!(
        "\nper event (µs): verify {}; ceiling: scan {}, HMAC {}; `Envelope` decode {}",
        per_event(verify_time),
        per_event(scan_only),
        per_event(scan.hash),
        per_event(scan.decode)
    );
    let (least, most) = (
        verify_added.iter().min().copied().unwrap_or(0),
        verify_added.iter().max().copied().unwrap_or(0),
    );
    println!(
        "resident memory verify adds at its peak: {:.1} to {:.1} MB over the runs ({:.1} to {:.1} bytes per event; the first run also fills sled's cache); CPU per wall second while verifying: {verify_cpu:.2} (2 would be both cores)",
        least as f64 / 1e6,
        most as f64 / 1e6,
        least as f64 / total as f64,
        most as f64 / total as f64
    );
    let verdict = |ok: bool| if ok { "meets" } else { "MISSES" };
    println!();
    println!(
        "- deep page within {BAR_DEPTH_RATIO}x of the shallow page (worst p50 ratio {worst:.2}): {}",
        verdict(worst <= BAR_DEPTH_RATIO)
    );
    let slowest = rebuild_time.map_or(verify_time, |r| r.max(verify_time));
    println!(
        "- replay >= {BAR_REPLAY_PER_SEC:.0} events/s (slowest of verify/rebuild {:.0}/s): {}",
        per_sec(slowest),
        verdict(per_sec(slowest) >= BAR_REPLAY_PER_SEC)
    );
    println!("- whole run {:.0} s", run_started.elapsed().as_secs_f64());

    let note = format!("{total} events");
    for deep in cases.iter().filter(|c| c.deep) {
        let shallow = cases
            .iter()
            .find(|c| c.via == deep.via && c.kind == deep.kind && !c.deep)
            .expect("shallow case");
        let via = match deep.via {
            Via::Store => "Store::read_feed",
            Via::Events => "Events::page",
        };
        Figure {
            bench: "pages",
            figure: &format!(
                "{PAGE}-event page p50 at the end vs the start, {} feed, {via}",
                deep.kind
            ),
            value: deep.percentile(50.0).as_secs_f64() * 1e6,
            unit: "µs",
            ceiling: Some(shallow.percentile(50.0).as_secs_f64() * 1e6),
            bar: Some(Bar::AtMost(Of::Ratio, BAR_DEPTH_RATIO)),
            note: format!("{note}, {reps} repetitions"),
        }
        .print();
    }
    let replay = |figure: &str, took: Duration, bar: bool, runs: usize| {
        Figure {
            bench: "pages",
            figure,
            value: per_sec(took),
            unit: "events/s",
            ceiling: Some(ceiling),
            bar: bar.then_some(Bar::AtLeast(Of::Value, BAR_REPLAY_PER_SEC)),
            note: format!("{note}, median of {runs}"),
        }
        .print()
    };
    replay("replay: Store::verify", verify_time, true, replays);
    if let Some(took) = rebuild_time {
        replay(
            "replay: Store::rebuild of a sound store",
            took,
            true,
            replays,
        );
    }
    if let Some(took) = from_nothing {
        // Context, not the bar: the worst rebuild, once.
        replay(
            "replay: rebuild on open, every projection row lost",
            took,
            false,
            1,
        );
    }
}
