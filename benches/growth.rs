//! Growth (docs/benchmarks.md#growth): reading a credential, a page of an account's credentials
//! and a page of an account's events stays as fast on a large store as on a small one, and what
//! a large store costs on disk and in memory.
//!
//! - **Shape** (`KEYLEDGER_BENCH_GROWTH_SCALE=1`, the full size): 1,000 accounts, 100,000
//!   credentials, one account ("big") holding 10,000 of them and the rest spread evenly, 1,000,000
//!   events. Each credential is one append: `byok.registered` and its `byok.updated` events
//!   (~300-byte payloads, as in the pages bench), with its data key, so `keys/` holds a file per
//!   credential as it does in service. The default scale is 10: a tenth of every count (big holds
//!   1,000 credentials), a few minutes on two cores.
//! - **Small and large**: two stores, each loaded from empty by the same generator, one to a
//!   tenth of the shape (small) and one to the whole shape (large), open side by side. Their
//!   reads alternate operation by operation, so that a change in the machine's speed during the
//!   run (minutes apart, this shared machine's speed moved by 2x) weighs on both sizes alike.
//! - **Operations** (through the service layer, as the handlers call it, `REPS` interleaved
//!   repetitions after `REPS / 10` untimed ones, each running every operation on both sizes in
//!   turn): `Credentials::get` of one of big's credentials (a different one each time, from 64
//!   spread over all of big's credentials at that size), `Credentials::list`
//!   of big's first page and of its last full page (50 credentials), `Events::page` of big's
//!   account feed, first page and last full page (100 events), each checked.
//! - **Cost**: the store's size on disk (file lengths and allocated blocks; `keys/` counted
//!   apart), what the process's resident memory grew by while a size loaded, `Store::verify`
//!   at each size (events/s, median of 3, and the resident memory it adds at its peak, sampled
//!   every 10 ms), and `Store::rebuild` of the sound store (the replay and comparison without
//!   the data keys). Replays longer than 5 s log their phases to stderr.
//! - **Ceiling**: after shutdown, the large store's log is scanned with plain sled and a chained
//!   HMAC per event (as in the pages bench); the large size's verify and rebuild are given as
//!   ratios to it.
//!
//! Knobs: `KEYLEDGER_BENCH_GROWTH_SCALE` (default 10; 1 is the full size),
//! `KEYLEDGER_BENCH_REPS` (default 500). Run: `cargo bench --bench growth`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark may stop on any failure

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    Bar, Figure, Of, chained_scan, dir_bytes, env_or, ids, mb, median, meta, percentile, rss, us,
    with_peak_rss,
};
use keyledger::crypto::{DataKey, MasterKey, data_key_binding};
use keyledger::domain::account::AccountEvent;
use keyledger::domain::account_key::ApiKeyEvent;
use keyledger::domain::credential::{CredentialEvent, CredentialProfile, Registered, Updated};
use keyledger::domain::{AccountId, CredentialId, KeyId, Scope};
use keyledger::es::{DomainEvent, ExpectedVersion, NewEvent, StreamId};
use keyledger::service::clock::SystemClock;
use keyledger::service::credentials::{Credentials, ListFilter};
use keyledger::service::events::{Events, FeedQuery, Reader};
use keyledger::storage::{AppendRequest, DataKeyChange, Durability, Feed, Store, StreamAppend};

/// The full shape.
const ACCOUNTS: u64 = 1_000;
const CREDENTIALS: u64 = 100_000;
const BIG: u64 = 10_000;
const EVENTS: u64 = 1_000_000;
/// Small is this fraction of large.
const SMALL: u64 = 10;
/// Events per feed page (as the pages bench reads), credentials per list page (the API's
/// default page).
const PAGE: usize = 100;
const LIST_PAGE: usize = 50;
const BAR_RATIO: f64 = 1.5;
/// Threads appending while loading.
const LOADERS: usize = 4;
/// Credentials of big that `get` reads.
const SAMPLES: usize = 64;

#[derive(Clone, Copy)]
struct Shape {
    accounts: u64,
    credentials: u64,
    big: u64,
    events: u64,
}

impl Shape {
    fn scaled(divisor: u64) -> Self {
        Self {
            accounts: (ACCOUNTS / divisor).max(2),
            credentials: (CREDENTIALS / divisor).max(2),
            big: (BIG / divisor).max(1),
            events: EVENTS / divisor,
        }
    }

    /// Events per credential (its registration and updates), so the shape holds `events`.
    fn per_credential(&self) -> u64 {
        let left = self.events.saturating_sub(self.accounts * 2) as f64;
        ((left / self.credentials as f64).round() as u64).max(1)
    }
}

struct Account {
    id: AccountId,
    key: KeyId,
}

fn open_account(store: &Store, n: u64) -> Account {
    let id = ids().account();
    let key = ids().key();
    let events = vec![
        AccountEvent::Created {
            account_id: id.clone(),
            email: format!("growth-{n}-{}@example.com", id.as_str().to_lowercase()),
            created_at: chrono::Utc::now(),
        }
        .to_new_event()
        .unwrap(),
    ];
    // The account's key lives on a stream of its own, appended in the same request.
    let key_created = ApiKeyEvent::Created {
        key_id: key.clone(),
        account_id: id.clone(),
        name: "growth".to_owned(),
        prefix: format!("kl_{:09x}", n),
        scopes: Scope::DEFAULT.to_vec(),
        token_hash: format!("{n:016x}{:048x}", 0x6a0_u128),
        created_at: chrono::Utc::now(),
    }
    .to_new_event()
    .unwrap();
    store
        .append_blocking(AppendRequest {
            stream: StreamId::new("account", id.as_str()),
            expected: ExpectedVersion::NoStream,
            events,
            meta: meta(),
            data_key: None,
            also: vec![StreamAppend {
                stream: StreamId::new("account_key", key.as_str()),
                expected: ExpectedVersion::NoStream,
                events: vec![key_created],
            }],
            idempotency: None,
        })
        .unwrap();
    Account { id, key }
}

fn registered(byok_id: &CredentialId, account_id: &AccountId) -> NewEvent {
    CredentialEvent::Registered(Box::new(Registered {
        byok_id: byok_id.clone(),
        account_id: account_id.clone(),
        profile: CredentialProfile {
            provider: "openai".to_owned(),
            alias: format!("growth-{}", byok_id.as_str().to_lowercase()),
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
        // Opaque here: nothing is sealed under the data key stored with it.
        sealed_secret: "Z3Jvd3RoLWNpcGhlcnRleHQtbm90LWEtcmVhbC1zZWNyZXQ=".to_owned(),
        secret_hint: "wxyz".to_owned(),
        created_at: chrono::Utc::now(),
    }))
    .to_new_event()
    .unwrap()
}

fn updated(byok_id: &CredentialId, version: u64) -> NewEvent {
    CredentialEvent::Updated(Box::new(Updated {
        label: Some(Some(format!("growth v{version:08} {}", "p".repeat(120)))),
        models: Some(vec![
            "gpt-4o".to_owned(),
            "gpt-4o-mini".to_owned(),
            "o3-mini".to_owned(),
        ]),
        weight: Some(100 + (version % 7) as u32),
        ..Updated::new(byok_id.clone(), chrono::Utc::now())
    }))
    .to_new_event()
    .unwrap()
}

/// Registers `count` credentials of `account` (each one append of `per` events, with its data
/// key), from `LOADERS` threads; answers their ids in registration order.
fn register(
    store: &Store,
    master: &MasterKey,
    account: &AccountId,
    count: u64,
    per: u64,
) -> Vec<CredentialId> {
    let ids_of: Vec<CredentialId> = (0..count).map(|_| ids().credential()).collect();
    std::thread::scope(|scope| {
        for part in ids_of.chunks(ids_of.len().div_ceil(LOADERS).max(1)) {
            scope.spawn(move || {
                for byok_id in part {
                    let events = std::iter::once(registered(byok_id, account))
                        .chain((2..=per).map(|v| updated(byok_id, v)))
                        .collect();
                    let wrapped = master
                        .wrap(
                            &DataKey::generate(),
                            &data_key_binding(account.as_str(), byok_id.as_str()),
                        )
                        .unwrap();
                    store
                        .append_blocking(AppendRequest {
                            stream: StreamId::new("byok", byok_id.as_str()),
                            expected: ExpectedVersion::NoStream,
                            events,
                            meta: meta(),
                            data_key: Some(DataKeyChange::Store {
                                record: byok_id.to_string(),
                                wrapped,
                            }),
                            also: Vec::new(),
                            idempotency: None,
                        })
                        .unwrap();
                }
            });
        }
    });
    ids_of
}

/// What is loaded so far.
struct Loaded {
    accounts: Vec<Account>,
    /// Big's credentials, in registration order (the order its list pages follow only within
    /// one loading thread, so pages are checked by length and cursor, not by id).
    big: Vec<CredentialId>,
    credentials: u64,
}

/// Loads the store up to `shape`: accounts first, then big's credentials, then the others'.
fn load_to(store: &Store, master: &MasterKey, loaded: &mut Loaded, shape: Shape) -> Duration {
    let started = Instant::now();
    let per = shape.per_credential();
    while (loaded.accounts.len() as u64) < shape.accounts {
        let n = loaded.accounts.len() as u64;
        loaded.accounts.push(open_account(store, n));
    }
    let big_more = shape.big.saturating_sub(loaded.big.len() as u64);
    let big_id = loaded.accounts[0].id.clone();
    let added = register(store, master, &big_id, big_more, per);
    loaded.big.extend(added);
    loaded.credentials += big_more;
    // The rest spread evenly over the other accounts.
    let others = &loaded.accounts[1..];
    let target_rest = shape.credentials - shape.big;
    let have_rest = loaded.credentials - loaded.big.len() as u64;
    let mut left = target_rest.saturating_sub(have_rest);
    let per_account = left.div_ceil(others.len() as u64);
    for account in others {
        let n = per_account.min(left);
        if n == 0 {
            break;
        }
        register(store, master, &account.id, n, per);
        left -= n;
        loaded.credentials += n;
    }
    started.elapsed()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Get,
    ListFirst,
    ListLast,
    EventsFirst,
    EventsLast,
}

const OPS: [Op; 5] = [
    Op::Get,
    Op::ListFirst,
    Op::ListLast,
    Op::EventsFirst,
    Op::EventsLast,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "Credentials::get",
            Op::ListFirst => "Credentials::list, first page",
            Op::ListLast => "Credentials::list, last full page",
            Op::EventsFirst => "Events::page (account feed), first page",
            Op::EventsLast => "Events::page (account feed), last full page",
        }
    }
}

/// The operations on one store, and where their deep cursors are.
struct Bench<'a> {
    credentials: &'a Credentials,
    events: &'a Events,
    reader: Reader,
    big: AccountId,
    samples: &'a [CredentialId],
    /// The credential after which the last full page of big's list starts.
    list_after: String,
    /// The position after which the last full page of big's feed starts.
    feed_after: u64,
    rt: tokio::runtime::Runtime,
}

impl Bench<'_> {
    fn run(&self, op: Op, rep: usize) -> u64 {
        let started = Instant::now();
        match op {
            Op::Get => {
                let byok_id = &self.samples[rep % self.samples.len()];
                let got = self.credentials.get(&self.big, byok_id).unwrap();
                assert_eq!(&got.credential.byok_id, byok_id);
            }
            Op::ListFirst | Op::ListLast => {
                let after = (op == Op::ListLast).then_some(self.list_after.as_str());
                let (page, next) = self
                    .credentials
                    .list(&self.big, &ListFilter::default(), after, LIST_PAGE)
                    .unwrap();
                assert_eq!(page.len(), LIST_PAGE);
                assert!(next.is_some(), "one more credential is behind every page");
            }
            Op::EventsFirst | Op::EventsLast => {
                let after = if op == Op::EventsLast {
                    self.feed_after
                } else {
                    0
                };
                let page = self
                    .rt
                    .block_on(self.events.page(
                        &self.reader,
                        &Feed::Account(&self.big),
                        &FeedQuery {
                            after,
                            limit: PAGE,
                            types: vec![],
                            wait: Duration::ZERO,
                        },
                    ))
                    .unwrap();
                assert_eq!(page.events.len(), PAGE);
                assert!(page.has_more);
                assert!(page.events[0].position > after);
            }
        }
        started.elapsed().as_nanos() as u64
    }
}

/// p50 and p99 of each operation at each size, `reps` interleaved repetitions after `reps / 10`
/// untimed: each repetition runs every operation on every size in turn, so a change in the
/// machine's speed during the run weighs on both sizes alike.
fn measure(benches: &[Bench<'_>], reps: usize) -> Vec<Vec<(Duration, Duration)>> {
    let mut samples: Vec<Vec<Vec<u64>>> = benches
        .iter()
        .map(|_| OPS.iter().map(|_| Vec::with_capacity(reps)).collect())
        .collect();
    let warmup = reps / 10;
    for rep in 0..warmup + reps {
        for i in 0..OPS.len() {
            let o = (rep + i) % OPS.len();
            // The sizes take turns going first.
            for k in 0..benches.len() {
                let b = (k + rep) % benches.len();
                let took = benches[b].run(OPS[o], rep);
                if rep >= warmup {
                    samples[b][o].push(took);
                }
            }
        }
    }
    samples
        .into_iter()
        .map(|size| {
            size.into_iter()
                .map(|mut s| {
                    s.sort_unstable();
                    (percentile(&s, 50.0), percentile(&s, 99.0))
                })
                .collect()
        })
        .collect()
}

/// Where big's deep pages start: the list page that leaves one credential after it, and the
/// feed page that leaves one event after it.
fn deep_cursors(credentials: &Credentials, store: &Store, big: &AccountId) -> (String, u64) {
    let mut after: Option<String> = None;
    let mut all = Vec::new();
    loop {
        let (page, next) = credentials
            .list(big, &ListFilter::default(), after.as_deref(), 1000)
            .unwrap();
        all.extend(page.into_iter().map(|v| v.credential.byok_id.to_string()));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let list_after = all[all.len() - LIST_PAGE - 2].clone();
    let mut positions = Vec::new();
    let mut from = 0;
    loop {
        let page = store
            .read_feed(&Feed::Account(big), from, 10_000, |_| true)
            .unwrap();
        positions.extend(page.events.iter().map(|e| e.position));
        match page.events.last() {
            Some(last) if page.has_more => from = last.position,
            _ => break,
        }
    }
    let feed_after = positions[positions.len() - PAGE - 2];
    (list_after, feed_after)
}

struct Size {
    shape: Shape,
    events: u64,
    credentials: u64,
    load: Duration,
    disk: (u64, u64),
    keys_disk: (u64, u64),
    rss: u64,
    verify: Duration,
    verify_peak: u64,
    /// `Store::rebuild` of the sound store: the replay and the comparison, without the data keys.
    rebuild: Duration,
    ops: Vec<(Duration, Duration)>,
}

fn verify(store: &Store) -> (Duration, u64) {
    // The best of three, and the most memory any of them added.
    let mut runs = Vec::new();
    let mut peak = 0;
    for _ in 0..3 {
        let (report, took, added) = with_peak_rss(|| store.verify().unwrap());
        assert!(
            report.mismatches.is_empty(),
            "{:?}",
            &report.mismatches[..1]
        );
        assert!(
            report.key_problems.is_empty(),
            "{:?}",
            &report.key_problems[..1]
        );
        runs.push(took);
        peak = peak.max(added);
    }
    (median(runs), peak)
}

#[allow(clippy::too_many_arguments)]
/// One size's store, loaded, with the services that read it.
struct Opened {
    dir: tempfile::TempDir,
    store: Store,
    credentials: Credentials,
    events: Events,
    loaded: Loaded,
    /// Big's credentials that `get` reads: spread over all of them.
    samples: Vec<CredentialId>,
    shape: Shape,
    load: Duration,
    /// The process's resident memory once this store was loaded (after the sizes before it).
    rss: u64,
    /// Kept open: `events` would take its end for a shutdown.
    _closing: tokio::sync::watch::Sender<bool>,
}

fn open_loaded(master: &MasterKey, name: &str, shape: Shape) -> Opened {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), master, Durability::Sync).expect("open");
    let clock = Arc::new(SystemClock);
    let credentials = Credentials::new(
        store.clone(),
        master.clone(),
        clock.clone(),
        Arc::new(keyledger::service::ids::Ids::new(clock)),
    );
    let (closing, never) = tokio::sync::watch::channel(false);
    let events = Events::new(store.clone(), never);
    let mut loaded = Loaded {
        accounts: Vec::new(),
        big: Vec::new(),
        credentials: 0,
    };
    let load = load_to(&store, master, &mut loaded, shape);
    let step = (loaded.big.len() / SAMPLES).max(1);
    let samples = loaded
        .big
        .iter()
        .step_by(step)
        .take(SAMPLES)
        .cloned()
        .collect();
    eprintln!(
        "{name}: loaded {} events in {:.1} s into {}",
        store.last_position().unwrap(),
        load.as_secs_f64(),
        dir.path().display()
    );
    Opened {
        dir,
        store,
        credentials,
        events,
        loaded,
        samples,
        shape,
        load,
        rss: rss(),
        _closing: closing,
    }
}

fn bench_for(opened: &Opened) -> Bench<'_> {
    let big = &opened.loaded.accounts[0];
    let (list_after, feed_after) = deep_cursors(&opened.credentials, &opened.store, &big.id);
    Bench {
        credentials: &opened.credentials,
        events: &opened.events,
        reader: Reader {
            account_id: big.id.clone(),
            key_id: big.key.clone(),
        },
        big: big.id.clone(),
        samples: &opened.samples,
        list_after,
        feed_after,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap(),
    }
}

/// What one size costs: on disk, in memory, to verify and to rebuild.
fn costs(opened: &Opened, ops: Vec<(Duration, Duration)>) -> Size {
    let (verify, verify_peak) = verify(&opened.store);
    let rebuild = median(
        (0..3)
            .map(|_| {
                let started = Instant::now();
                opened.store.rebuild().unwrap();
                started.elapsed()
            })
            .collect(),
    );
    Size {
        shape: opened.shape,
        events: opened.store.last_position().unwrap(),
        credentials: opened.loaded.credentials,
        load: opened.load,
        disk: dir_bytes(opened.dir.path()),
        keys_disk: dir_bytes(&opened.dir.path().join("keys")),
        rss: opened.rss,
        verify,
        verify_peak,
        rebuild,
        ops,
    }
}

fn main() {
    // Long replays say how far they got, and how long each phase took.
    keyledger::telemetry::init();
    let scale: u64 = env_or("KEYLEDGER_BENCH_GROWTH_SCALE", 10).max(1);
    let reps: usize = env_or("KEYLEDGER_BENCH_REPS", 500);
    let run_started = Instant::now();
    let large = Shape::scaled(scale);
    let small = Shape::scaled(scale * SMALL);
    assert!(
        small.big as usize >= LIST_PAGE + 2,
        "at 1/{scale} big holds too few credentials at small size for a deep list page: use a scale of 10 or less"
    );
    let master = MasterKey::generate();
    eprintln!(
        "growth at 1/{scale} of the full shape: small {} accounts / {} credentials / big {} / {} events, large {} / {} / {} / {}",
        small.accounts,
        small.credentials,
        small.big,
        small.events,
        large.accounts,
        large.credentials,
        large.big,
        large.events
    );
    // Two stores, each loaded from empty, open side by side, so that their reads alternate.
    let opened = [
        open_loaded(&master, "small", small),
        open_loaded(&master, "large", large),
    ];
    let benches: Vec<Bench<'_>> = opened.iter().map(bench_for).collect();
    let ops = measure(&benches, reps);
    drop(benches);
    let sizes: Vec<Size> = opened
        .iter()
        .zip(ops)
        .map(|(o, ops)| costs(o, ops))
        .collect();
    let [small_store, large_store] = opened;
    small_store.store.shutdown();
    drop(small_store);
    large_store.store.shutdown();
    let Opened {
        dir,
        store,
        credentials,
        events,
        ..
    } = large_store;
    drop(events);
    drop(credentials);
    drop(store);
    // The ceiling of the large store's replay, as in the pages bench: a chained scan of its log.
    let (scanned, chained) = chained_scan(dir.path());
    assert_eq!(scanned, sizes[1].events, "every event is in the log");
    let ceiling = scanned as f64 / chained.as_secs_f64();
    drop(dir);

    println!(
        "growth: 1/{scale} of the full shape ({ACCOUNTS} accounts, {CREDENTIALS} credentials, {BIG} in one account, {EVENTS} events); small = large / {SMALL}; {PAGE} events or {LIST_PAGE} credentials per page; {reps} interleaved repetitions\n"
    );
    println!(
        "| size | accounts | credentials | big's credentials | events | load s | disk MB (files / blocks) | keys/ MB (files / blocks) | RSS MB | verify events/s | verify adds MB | rebuild events/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, s) in ["small", "large"].iter().zip(&sizes) {
        println!(
            "| {name} | {} | {} | {} | {} | {:.1} | {} / {} | {} / {} | {} | {:.0} | {} | {:.0} |",
            s.shape.accounts,
            s.credentials,
            s.shape.big,
            s.events,
            s.load.as_secs_f64(),
            mb(s.disk.0),
            mb(s.disk.1),
            mb(s.keys_disk.0),
            mb(s.keys_disk.1),
            mb(s.rss),
            s.events as f64 / s.verify.as_secs_f64(),
            mb(s.verify_peak),
            s.events as f64 / s.rebuild.as_secs_f64(),
        );
    }
    let (a, b) = (&sizes[0], &sizes[1]);
    let large_rate = |took: Duration| b.events as f64 / took.as_secs_f64();
    println!(
        "\nceiling (large): chained scan + HMAC {ceiling:.0} events/s; verify {:.2} of it, rebuild {:.2}",
        large_rate(b.verify) / ceiling,
        large_rate(b.rebuild) / ceiling,
    );
    // Disk and verify's peak: large minus small, over the credentials between them. Memory: what
    // the process grew by while the large store was loaded beside the open small one, over the
    // large store's credentials.
    let per_100k = |x: u64, y: u64| {
        (y as f64 - x as f64) / (b.credentials - a.credentials) as f64 * 100_000.0 / 1e6
    };
    let rss_per_100k = (b.rss as f64 - a.rss as f64) / b.credentials as f64 * 100_000.0 / 1e6;
    println!(
        "\nper 100,000 credentials (large minus small): disk {:.0} MB of files, {:.0} MB of blocks (keys/ {:.0} MB of blocks); verify's peak addition {:.0} MB; resident memory (the large store's) {rss_per_100k:.0} MB",
        per_100k(a.disk.0, b.disk.0),
        per_100k(a.disk.1, b.disk.1),
        per_100k(a.keys_disk.1, b.keys_disk.1),
        per_100k(a.verify_peak, b.verify_peak),
    );
    println!(
        "\n| operation | small p50 µs | small p99 µs | large p50 µs | large p99 µs | ratio p50 | ratio p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut worst: f64 = 0.0;
    for (i, op) in OPS.iter().enumerate() {
        let (s50, s99) = a.ops[i];
        let (l50, l99) = b.ops[i];
        let r50 = l50.as_secs_f64() / s50.as_secs_f64();
        let r99 = l99.as_secs_f64() / s99.as_secs_f64();
        worst = worst.max(r50);
        println!(
            "| {} | {} | {} | {} | {} | {r50:.2} | {r99:.2} |",
            op.name(),
            us(s50),
            us(s99),
            us(l50),
            us(l99)
        );
    }
    let verdict = if worst <= BAR_RATIO {
        "meets"
    } else {
        "MISSES"
    };
    println!(
        "\n- every operation within {BAR_RATIO}x of small at p50 (worst {worst:.2}): {verdict}"
    );
    println!("- whole run {:.0} s", run_started.elapsed().as_secs_f64());

    let note = format!(
        "1/{scale} of the full shape: {} vs {} credentials, {} vs {} events",
        b.credentials, a.credentials, b.events, a.events
    );
    for (i, op) in OPS.iter().enumerate() {
        Figure {
            bench: "growth",
            figure: &format!("{} p50, large vs small store", op.name()),
            value: b.ops[i].0.as_secs_f64() * 1e6,
            unit: "µs",
            ceiling: Some(a.ops[i].0.as_secs_f64() * 1e6),
            bar: Some(Bar::AtMost(Of::Ratio, BAR_RATIO)),
            note: note.clone(),
        }
        .print();
    }
    for (figure, value) in [
        (
            "disk per 100,000 credentials, files",
            per_100k(a.disk.0, b.disk.0),
        ),
        (
            "disk per 100,000 credentials, blocks",
            per_100k(a.disk.1, b.disk.1),
        ),
        ("resident memory per 100,000 credentials", rss_per_100k),
    ] {
        Figure {
            bench: "growth",
            figure,
            value,
            unit: "MB",
            ceiling: None,
            bar: None,
            note: note.clone(),
        }
        .print();
    }
    for (figure, took) in [
        ("replay of the large store: Store::verify", b.verify),
        ("replay of the large store: Store::rebuild", b.rebuild),
    ] {
        Figure {
            bench: "growth",
            figure,
            value: large_rate(took),
            unit: "events/s",
            ceiling: Some(ceiling),
            bar: None,
            note: note.clone(),
        }
        .print();
    }
}
