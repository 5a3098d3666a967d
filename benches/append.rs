//! Durable appends (docs/design.md §10): keyledger's group-committed `append_blocking` against the
//! group-commit ceiling measured in the same run, at 1, 8 and 64 concurrent OS threads.
//!
//! - **ceiling**: the best sled does at keyledger's durability. One writer thread owns a fresh
//!   `sled::Db` (default config, as `Store::open` uses); every caller sends one 300-byte insert
//!   over a channel and waits for its acknowledgement. The writer takes every pending insert (at
//!   most `MAX_GROUP`, as keyledger's writer), writes them as one `sled::Batch`, calls `flush()`
//!   and fdatasyncs the `db` file once for the group, and only then acknowledges each.
//! - **keyledger**: `Store::open(.., Durability::Sync)` and one `append_blocking` of one event per
//!   call, acknowledged after the writer's group flush + fdatasync. Each thread owns its streams:
//!   an `account.created` (`NoStream`) then `KEYS_PER_ACCOUNT` keys, each an `account_key.created`
//!   on a stream of its own (`NoStream`), then a new account; key events carry ~300 bytes of
//!   `data`.
//! - **per-write** (context only, not the ceiling): sled `insert` of a 300-byte value followed by
//!   `flush()` in the calling thread, every thread sharing one `sled::Db`; sled's `flush()` does
//!   not fsync on Linux. `KEYLEDGER_BENCH_ONLY=per-write+fdatasync` adds an fdatasync per write.
//!
//! The ceiling and keyledger are measured in alternating slices (`KEYLEDGER_BENCH_ROUNDS`, default
//! 3, of each), both stores open throughout, so that a machine whose load changes during the run
//! weighs on both alike. Each side gets `KEYLEDGER_BENCH_SECS` seconds (default 3) of measured
//! time in all, after a warm-up; throughput counts the operations started in the measured
//! slices, latency is per call. Temp stores go under `$TMPDIR`. Run: `cargo bench --bench append`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a benchmark may stop on any failure

mod common;

use std::fs::{File, OpenOptions};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keyledger::crypto::MasterKey;
use keyledger::domain::account::AccountEvent;
use keyledger::domain::account_key::ApiKeyEvent;
use keyledger::domain::{AccountId, Scope};
use keyledger::es::{DomainEvent, EventMeta, ExpectedVersion, StreamId};
use keyledger::service::clock::SystemClock;
use keyledger::service::ids::Ids;
use keyledger::storage::{AppendRequest, Durability, Store};
use tokio::sync::oneshot;

use common::{Bar, Figure, Of};

const WRITERS: [usize; 3] = [1, 8, 64];
/// Before a side's first slice: fills the stores' caches and starts the threads.
const WARMUP: Duration = Duration::from_millis(500);
/// Before each later slice: the threads start again, nothing is measured.
const SETTLE: Duration = Duration::from_millis(100);
const VALUE_LEN: usize = 300;
/// Key events per account stream before a thread opens a new account: bounds the aggregate row
/// that every append rewrites (it holds all of the account's keys).
const KEYS_PER_ACCOUNT: u64 = 7;
/// Most inserts the ceiling's writer commits in one group: the bound keyledger's writer uses.
const MAX_GROUP: usize = 1024;
/// docs/design.md §10: keyledger / ceiling at 64 writers, and a lone durable write's p99.
const BAR_RATIO_AT_64: f64 = 0.5;
const BAR_P99_AT_1: Duration = Duration::from_millis(2);

const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const STOPPED: u8 = 2;

/// Measured slices of one side: operations started in them, their length, each operation's
/// latency (ns), and every operation, settling included (to check the store afterwards).
#[derive(Default)]
struct Sample {
    ops: u64,
    window: Duration,
    latencies: Vec<u64>,
    total_ops: u64,
}

impl Sample {
    fn add(&mut self, slice: Sample) {
        self.ops += slice.ops;
        self.window += slice.window;
        self.latencies.extend(slice.latencies);
        self.total_ops += slice.total_ops;
    }

    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.window.as_secs_f64()
    }

    /// Sorts the latencies; call once every slice is in.
    fn done(mut self) -> Self {
        self.latencies.sort_unstable();
        self
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        Duration::from_nanos(self.latencies[rank.clamp(1, self.latencies.len()) - 1])
    }
}

/// One slice: an OS thread per state runs `op` on it, for `settle` unmeasured, then for `window`.
/// `op` does one operation and answers how long its timed part took. The states outlive the
/// slice, so a thread's streams carry on in the next one.
fn slice<S: Send>(
    states: &mut [S],
    settle: Duration,
    window: Duration,
    op: &(impl Fn(&mut S) -> Duration + Sync),
) -> Sample {
    let phase = AtomicU8::new(WARMING);
    let barrier = Barrier::new(states.len() + 1);
    let (phase_ref, barrier_ref) = (&phase, &barrier);
    std::thread::scope(|scope| {
        let handles: Vec<_> = states
            .iter_mut()
            .map(|state| {
                scope.spawn(move || {
                    let mut latencies = Vec::with_capacity(1 << 14);
                    let mut total = 0u64;
                    barrier_ref.wait();
                    loop {
                        let started_in = phase_ref.load(Ordering::Acquire);
                        if started_in == STOPPED {
                            break;
                        }
                        let took = op(state);
                        total += 1;
                        if started_in == MEASURING {
                            latencies.push(took.as_nanos() as u64);
                        }
                    }
                    (latencies, total)
                })
            })
            .collect();
        barrier_ref.wait();
        std::thread::sleep(settle);
        phase_ref.store(MEASURING, Ordering::Release);
        let start = Instant::now();
        std::thread::sleep(window);
        phase_ref.store(STOPPED, Ordering::Release);
        let window = start.elapsed();
        let mut sample = Sample {
            window,
            ..Sample::default()
        };
        for handle in handles {
            let (mine, total) = handle.join().expect("bench thread panicked");
            sample.ops += mine.len() as u64;
            sample.latencies.extend(mine);
            sample.total_ops += total;
        }
        sample
    })
}

/// A fresh sled store in a temp dir, and its `db` file opened for fdatasync.
fn raw_store() -> (tempfile::TempDir, sled::Db, File) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path())
        .open()
        .expect("open sled");
    let file = OpenOptions::new()
        .read(true)
        .open(dir.path().join("db"))
        .expect("open sled's db file");
    (dir, db, file)
}

/// A thread's next key: thread ‖ sequence.
fn next_key((thread, n): &mut (u32, u64)) -> Vec<u8> {
    *n += 1;
    [&thread.to_be_bytes()[..], &n.to_be_bytes()].concat()
}

/// One insert handed to the ceiling's writer, and where to acknowledge it.
type Insert = (Vec<u8>, Vec<u8>, oneshot::Sender<()>);

/// The ceiling: its store and its writer thread.
struct Ceiling {
    _dir: tempfile::TempDir,
    db: sled::Db,
    inserts: Option<crossbeam_channel::Sender<Insert>>,
    writer: Option<JoinHandle<u64>>,
}

impl Ceiling {
    fn start() -> Self {
        let (dir, db, file) = raw_store();
        let (inserts, pending) = crossbeam_channel::unbounded::<Insert>();
        let tree = db.clone();
        let writer = std::thread::spawn(move || group_writer(&tree, &file, &pending));
        Self {
            _dir: dir,
            db,
            inserts: Some(inserts),
            writer: Some(writer),
        }
    }

    fn write(&self, state: &mut (u32, u64)) -> Duration {
        let key = next_key(state);
        let value = vec![0x5a_u8; VALUE_LEN];
        let (ack, acked) = oneshot::channel();
        let inserts = self.inserts.as_ref().expect("writer running");
        let started = Instant::now();
        inserts.send((key, value, ack)).expect("writer running");
        acked.blocking_recv().expect("acknowledged");
        started.elapsed()
    }

    /// Stops the writer, checks that every acknowledged write is there, and answers how many
    /// writes it committed per group.
    fn finish(mut self, total_ops: u64) -> f64 {
        drop(self.inserts.take());
        let groups = self
            .writer
            .take()
            .expect("started")
            .join()
            .expect("ceiling writer panicked");
        assert_eq!(
            self.db.len() as u64,
            total_ops,
            "ceiling: a write went missing"
        );
        total_ops as f64 / groups.max(1) as f64
    }
}

/// The ceiling's writer thread: group commit of plain inserts, nothing else. Answers how many
/// groups it committed.
fn group_writer(db: &sled::Db, file: &File, inserts: &crossbeam_channel::Receiver<Insert>) -> u64 {
    let mut groups = 0;
    while let Ok(first) = inserts.recv() {
        let mut batch = sled::Batch::default();
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some((key, value, ack)) = next.take() {
            batch.insert(key, value);
            acks.push(ack);
            if acks.len() < MAX_GROUP {
                next = inserts.try_recv().ok();
            }
        }
        db.apply_batch(batch).expect("apply batch");
        db.flush().expect("flush");
        file.sync_data().expect("fdatasync");
        groups += 1;
        for ack in acks {
            let _ = ack.send(());
        }
    }
    groups
}

/// keyledger's store, appended to as the service does.
struct Keyledger {
    _dir: tempfile::TempDir,
    store: Store,
    name: String,
}

impl Keyledger {
    fn open(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store =
            Store::open(dir.path(), &MasterKey::generate(), Durability::Sync).expect("open");
        Self {
            _dir: dir,
            store,
            name: name.to_owned(),
        }
    }

    fn append(&self, client: &mut Client) -> Duration {
        let request = client.next_request(&self.name);
        let started = Instant::now();
        let appended = self.store.append_blocking(request);
        let took = started.elapsed();
        assert_eq!(appended.expect("append").len(), 1);
        took
    }

    fn finish(self, total_ops: u64) {
        assert_eq!(
            self.store.last_position().expect("tail"),
            total_ops,
            "keyledger: an acknowledged append went missing"
        );
        self.store.shutdown();
    }
}

/// What one writer count measured: the ceiling with its writes per group, and keyledger.
struct Paired {
    ceiling: Option<(Sample, f64)>,
    keyledger: Option<Sample>,
}

/// The ceiling and keyledger (either may be left out) at `threads` writers, in alternating
/// slices.
fn paired(
    threads: usize,
    window: Duration,
    rounds: u32,
    name: &str,
    sides: (bool, bool),
) -> Paired {
    let ceiling = sides.0.then(Ceiling::start);
    let keyledger = sides.1.then(|| Keyledger::open(name));
    let mut ceiling_states: Vec<(u32, u64)> = (0..threads).map(|t| (t as u32, 0)).collect();
    let mut clients: Vec<Client> = (0..threads).map(Client::new).collect();
    let (mut top, mut kl) = (Sample::default(), Sample::default());
    let part = window / rounds;
    for round in 0..rounds {
        let settle = if round == 0 { WARMUP } else { SETTLE };
        if let Some(ceiling) = &ceiling {
            top.add(slice(&mut ceiling_states, settle, part, &|s| {
                ceiling.write(s)
            }));
        }
        if let Some(keyledger) = &keyledger {
            kl.add(slice(&mut clients, settle, part, &|c| keyledger.append(c)));
        }
    }
    Paired {
        ceiling: ceiling.map(|c| {
            let per_group = c.finish(top.total_ops);
            (top.done(), per_group)
        }),
        keyledger: keyledger.map(|k| {
            k.finish(kl.total_ops);
            kl.done()
        }),
    }
}

/// Per-write `insert` + `flush()` (+ fdatasync) from every thread: context, not the ceiling.
fn per_write(threads: usize, window: Duration, fdatasync: bool) -> Sample {
    let (_dir, db, file) = raw_store();
    let value = vec![0x5a_u8; VALUE_LEN];
    let mut states: Vec<(u32, u64)> = (0..threads).map(|t| (t as u32, 0)).collect();
    let sample = slice(&mut states, WARMUP, window, &|state| {
        let key = next_key(state);
        let started = Instant::now();
        db.insert(key, value.as_slice()).expect("insert");
        db.flush().expect("flush");
        if fdatasync {
            File::sync_data(&file).expect("fdatasync");
        }
        started.elapsed()
    });
    assert_eq!(
        db.len() as u64,
        sample.total_ops,
        "per-write: a write went missing"
    );
    sample.done()
}

/// Ids as the server mints them.
fn ids() -> &'static Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    IDS.get_or_init(|| Ids::new(Arc::new(SystemClock)))
}

/// One thread's position in its own account streams.
struct Client {
    thread: usize,
    account_id: AccountId,
    /// Events in the current account stream (0: none yet, the next append opens an account).
    version: u64,
    accounts: u64,
    keys: u64,
}

impl Client {
    fn new(thread: usize) -> Self {
        Self {
            thread,
            account_id: AccountId::unnamed(),
            version: 0,
            accounts: 0,
            keys: 0,
        }
    }

    fn next_request(&mut self, name: &str) -> AppendRequest {
        let (stream, event) = if self.version == 0 {
            self.accounts += 1;
            self.account_id = ids().account();
            let event = AccountEvent::Created {
                account_id: self.account_id.clone(),
                email: format!("bench-{}-{}@example.com", self.thread, self.accounts),
                created_at: chrono::Utc::now(),
            };
            let stream = StreamId::new("account", self.account_id.as_str());
            (stream, event.to_new_event())
        } else {
            self.keys += 1;
            let key_id = ids().key();
            let stream = StreamId::new("account_key", key_id.as_str());
            let event = ApiKeyEvent::Created {
                key_id,
                account_id: self.account_id.clone(),
                name: name.to_owned(),
                prefix: format!("kl_{:05x}", self.keys & 0xf_ffff),
                scopes: Scope::DEFAULT.to_vec(),
                // Unique per store: thread and sequence, then filler.
                token_hash: format!("{:016x}{:016x}{:032x}", self.thread, self.keys, 0xbe4c_u128),
                created_at: chrono::Utc::now(),
            };
            (stream, event.to_new_event())
        };
        let request = AppendRequest {
            stream,
            expected: ExpectedVersion::NoStream,
            events: vec![event.expect("encode event")],
            meta: EventMeta {
                actor: "kl_bench".to_owned(),
                request_id: ids().request(),
            },
            data_key: None,
            also: Vec::new(),
            idempotency: None,
        };
        self.version = if self.version == KEYS_PER_ACCOUNT {
            0
        } else {
            self.version + 1
        };
        request
    }
}

/// Bytes of the (single) event's `data` JSON.
fn data_len(request: &AppendRequest) -> usize {
    serde_json::to_vec(&request.events[0].data)
        .expect("encode")
        .len()
}

/// A key name that makes an `account_key.created` payload about `VALUE_LEN` bytes.
fn padded_key_name() -> String {
    let mut probe = Client {
        thread: 63,
        account_id: ids().account(),
        version: 1,
        accounts: 1,
        keys: 99_999,
    };
    let base = data_len(&probe.next_request(""));
    let len = VALUE_LEN.saturating_sub(base).clamp(1, 128);
    "k".repeat(len)
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn main() {
    let secs: f64 = env("KEYLEDGER_BENCH_SECS").unwrap_or(3.0);
    let rounds: u32 = env::<u32>("KEYLEDGER_BENCH_ROUNDS").unwrap_or(3).max(1);
    let window = Duration::from_secs_f64(secs);
    // For profiling one side alone: `KEYLEDGER_BENCH_ONLY=keyledger KEYLEDGER_BENCH_WRITERS=64`
    // (prints the per-run lines only, no table).
    let only = std::env::var("KEYLEDGER_BENCH_ONLY").ok();
    let writers: Vec<usize> = std::env::var("KEYLEDGER_BENCH_WRITERS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| WRITERS.to_vec());
    let name = padded_key_name();
    let key_event_len = {
        let mut w = Client::new(0);
        w.version = 1;
        w.account_id = ids().account();
        data_len(&w.next_request(&name))
    };
    println!(
        "durable appends: ceiling and per-write value {VALUE_LEN} B; keyledger account_key.created data {key_event_len} B, \
         1 account.created per {KEYS_PER_ACCOUNT} key events; {secs} s per side in {rounds} alternating slices, \
         after {} ms warm-up\n",
        WARMUP.as_millis()
    );

    if let Some(only) = only {
        for &threads in &writers {
            let (sample, per_group) = match only.as_str() {
                "ceiling" => {
                    let measured = paired(threads, window, rounds, &name, (true, false));
                    let (sample, per_group) = measured.ceiling.expect("measured");
                    (sample, Some(per_group))
                }
                "keyledger" => {
                    let measured = paired(threads, window, rounds, &name, (false, true));
                    (measured.keyledger.expect("measured"), None)
                }
                "per-write" => (per_write(threads, window, false), None),
                "per-write+fdatasync" => (per_write(threads, window, true), None),
                other => panic!(
                    "KEYLEDGER_BENCH_ONLY={other}: ceiling, keyledger, per-write or per-write+fdatasync"
                ),
            };
            let per_group = per_group
                .map(|g| format!(", {g:.1} writes per group"))
                .unwrap_or_default();
            println!(
                "{only} {threads:>2} writers: {:.0}/s, p50 {} ms, p99 {} ms; {} operations in all{per_group}",
                sample.per_sec(),
                ms(sample.percentile(50.0)),
                ms(sample.percentile(99.0)),
                sample.total_ops,
            );
        }
        return;
    }

    let mut rows = Vec::new();
    for &threads in &writers {
        let measured = paired(threads, window, rounds, &name, (true, true));
        let (top, per_group) = measured.ceiling.expect("measured");
        let kl = measured.keyledger.expect("measured");
        let context = per_write(threads, window, false);
        eprintln!(
            "{threads:>2} writers: ceiling {:.0}/s, keyledger {:.0}/s, per-write {:.0}/s",
            top.per_sec(),
            kl.per_sec(),
            context.per_sec()
        );
        rows.push((threads, top, per_group, kl, context));
    }

    println!(
        "| writers | ceiling writes/s | ceiling p50 ms | ceiling p99 ms | ceiling writes/group | keyledger appends/s | keyledger p50 ms | keyledger p99 ms | ratio | per-write writes/s | per-write p99 ms |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (threads, top, per_group, kl, context) in &rows {
        println!(
            "| {threads} | {:.0} | {} | {} | {per_group:.1} | {:.0} | {} | {} | {:.2} | {:.0} | {} |",
            top.per_sec(),
            ms(top.percentile(50.0)),
            ms(top.percentile(99.0)),
            kl.per_sec(),
            ms(kl.percentile(50.0)),
            ms(kl.percentile(99.0)),
            kl.per_sec() / top.per_sec(),
            context.per_sec(),
            ms(context.percentile(99.0)),
        );
    }

    println!();
    if let Some((_, top, _, kl, _)) = rows.iter().find(|r| r.0 == 64) {
        let ratio = kl.per_sec() / top.per_sec();
        println!(
            "- 64 writers: keyledger at {:.0}% of the group-commit ceiling (bar >= {:.0}%): {}",
            ratio * 100.0,
            BAR_RATIO_AT_64 * 100.0,
            verdict(ratio >= BAR_RATIO_AT_64)
        );
    }
    if let Some((_, _, _, kl, _)) = rows.iter().find(|r| r.0 == 1) {
        let p99 = kl.percentile(99.0);
        println!(
            "- 1 writer: durable append p99 {} ms (bar <= {} ms): {}",
            ms(p99),
            ms(BAR_P99_AT_1),
            verdict(p99 <= BAR_P99_AT_1)
        );
    }

    let note = format!("{secs} s per side in {rounds} alternating slices");
    for (threads, top, _, kl, _) in &rows {
        Figure {
            bench: "append",
            figure: &format!("durable appends/s, {threads} writers"),
            value: kl.per_sec(),
            unit: "appends/s",
            ceiling: Some(top.per_sec()),
            bar: (*threads == 64).then_some(Bar::AtLeast(Of::Ratio, BAR_RATIO_AT_64)),
            note: note.clone(),
        }
        .print();
        if *threads == 1 {
            Figure {
                bench: "append",
                figure: "durable append p99, 1 writer",
                value: kl.percentile(99.0).as_secs_f64() * 1e3,
                unit: "ms",
                ceiling: Some(top.percentile(99.0).as_secs_f64() * 1e3),
                bar: Some(Bar::AtMost(Of::Value, BAR_P99_AT_1.as_secs_f64() * 1e3)),
                note: note.clone(),
            }
            .print();
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "meets" } else { "MISSES" }
}
