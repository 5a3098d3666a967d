//! What the benchmarks share: ids minted as the server mints them, event metadata, knobs from
//! the environment, a store's size on disk, the process's resident memory, percentiles, the
//! replay ceiling, and the `BENCH-RESULT` lines that `scripts/bench` gathers.

#![allow(dead_code)] // each bench uses its own part

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use keyledger::crypto::{DataKey, KeyedHasher};
use keyledger::es::EventMeta;
use keyledger::service::clock::SystemClock;
use keyledger::service::ids::Ids;

/// The allocator the `keyledger` binary ships with (docs/adr/0026), so that a bench measures the
/// store as the server and the CLI run it; the ceiling in the same binary allocates with it too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A knob from the environment (`_` allowed as a digit separator), or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Ids as the server mints them.
pub fn ids() -> &'static Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    IDS.get_or_init(|| Ids::new(Arc::new(SystemClock)))
}

pub fn meta() -> EventMeta {
    EventMeta {
        actor: "kl_bench".to_owned(),
        request_id: ids().request(),
    }
}

/// Bytes under `dir`: (the files' lengths, the blocks they take on disk).
pub fn dir_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match entry.metadata() {
            Ok(m) if m.is_dir() => {
                let (len, blocks) = dir_bytes(&entry.path());
                total = (total.0 + len, total.1 + blocks + m.blocks() * 512);
            }
            Ok(m) => total = (total.0 + m.len(), total.1 + m.blocks() * 512),
            Err(_) => {}
        }
    }
    total
}

/// The process's resident memory now, in bytes (`VmRSS`), or 0 where there is no `/proc`.
pub fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// CPU time the process has used (user and system, all threads), from `/proc/self/stat`, in
/// its 10 ms ticks; zero where there is no `/proc`.
pub fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // The fields after the command name, which is in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: u64 = fields.get(11)?.parse().ok()?;
            let system: u64 = fields.get(12)?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Runs `work` while another thread samples the resident memory every 10 ms; answers what it
/// returned, the time it took and the highest sample above the resident memory before it.
pub fn with_peak_rss<T>(work: impl FnOnce() -> T) -> (T, Duration, u64) {
    let before = rss();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = before;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss());
                std::thread::sleep(Duration::from_millis(10));
            }
            peak.max(rss())
        });
        let started = std::time::Instant::now();
        let out = work();
        let took = started.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = sampler.join().expect("the sampler panicked");
        (out, took, peak.saturating_sub(before))
    })
}

/// The `p`th percentile of sorted nanosecond samples.
pub fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Duration::from_nanos(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The median of a few timings.
pub fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort_unstable();
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}

pub fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}

pub fn us(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e6)
}

/// The replay ceiling of a shut-down store: reopens its directory with plain sled and reads the
/// log (`l/<position>` rows, `hmac(32) ‖ envelope JSON`) twice, answering the events and the
/// second pass's time, which computes the chained HMAC of every value: the least any replay of
/// this log does.
pub fn chained_scan(dir: &Path) -> (u64, Duration) {
    let db = sled::Config::new()
        .path(dir)
        .open()
        .expect("reopen with sled");
    let mut events = 0u64;
    for row in db.scan_prefix(b"l/") {
        std::hint::black_box(row.expect("scan").1.len());
        events += 1;
    }
    // Same cost as the store's chain hash; the key does not matter here.
    let hasher = KeyedHasher::new(&DataKey::generate());
    let mut previous = [0u8; 32];
    let started = std::time::Instant::now();
    for row in db.scan_prefix(b"l/") {
        let (_, value) = row.expect("scan");
        previous = hasher.hash(&[&previous, &value[32..]]);
    }
    std::hint::black_box(previous);
    (events, started.elapsed())
}

/// What a figure's bar (docs/design.md §10) is checked on: the figure itself or its ratio to
/// the ceiling.
#[derive(Clone, Copy)]
pub enum Of {
    Value,
    Ratio,
}

#[derive(Clone, Copy)]
pub enum Bar {
    AtLeast(Of, f64),
    AtMost(Of, f64),
}

impl Bar {
    fn met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        let pick = |of| match of {
            Of::Value => Some(value),
            Of::Ratio => ratio,
        };
        match self {
            Bar::AtLeast(of, limit) => pick(of).map(|x| x >= limit),
            Bar::AtMost(of, limit) => pick(of).map(|x| x <= limit),
        }
    }

    /// As `scripts/bench-report` reads it: `ratio >= 0.5`, `value <= 2`.
    fn text(self) -> String {
        let (of, op, limit) = match self {
            Bar::AtLeast(of, limit) => (of, ">=", limit),
            Bar::AtMost(of, limit) => (of, "<=", limit),
        };
        let of = match of {
            Of::Value => "value",
            Of::Ratio => "ratio",
        };
        format!("{of} {op} {limit}")
    }
}

/// One figure of docs/design.md §10 as a line of its own beside the bench's tables, one JSON
/// object after `BENCH-RESULT `, which `scripts/bench` gathers (docs/benchmarks.md): the figure
/// (a name that stays the same from run to run), its value and unit, the ceiling measured in the
/// same run (same unit) and the ratio to it, the bar and whether this run met it. `note` says
/// what size it was measured at.
pub struct Figure<'a> {
    pub bench: &'a str,
    pub figure: &'a str,
    pub value: f64,
    pub unit: &'a str,
    pub ceiling: Option<f64>,
    pub bar: Option<Bar>,
    pub note: String,
}

impl Figure<'_> {
    pub fn print(&self) {
        let ratio = self.ceiling.map(|c| self.value / c);
        let line = serde_json::json!({
            "bench": self.bench,
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "ceiling": self.ceiling,
            "ratio": ratio,
            "bar": self.bar.map(Bar::text),
            "met": self.bar.and_then(|b| b.met(self.value, ratio)),
            "note": self.note,
        });
        println!("BENCH-RESULT {line}");
    }
}
