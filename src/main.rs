#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use keyledger::config::{self, Cli, Command, KeySource, Settings};
use keyledger::startup::{self, Application};
use keyledger::storage::{self, Durability, Store};
use keyledger::{http, telemetry};

/// mimalloc rather than the system's malloc: the writer's batches allocate and free a copy of a
/// sled page per row written, and glibc spent up to half the writer's time on that
/// (docs/benchmarks.md, usage ingestion).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How many differences `verify` prints of each kind.
const SHOWN: usize = 20;

/// Errors print as one clear message and exit 1: no backtrace, whatever `RUST_BACKTRACE` says
/// (operators get the message; the cause chain is in it).
fn main() -> ExitCode {
    // Before anything touches the disk: every file the process creates is its owner's alone.
    storage::private_umask();
    let cli = Cli::parse();
    telemetry::init();
    std::panic::set_hook(Box::new(report_fault));
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", message(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: an error that already prints its
/// source in its own message is not followed by that source again.
fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// A panic is logged as one line, without a backtrace, and the code that catches it (the
/// store, around sled) answers a clear error.
fn report_fault(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("an internal fault");
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    tracing::error!(%location, "internal fault: {message}");
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(Settings::from_args(args)?),
        Command::Verify(args) => {
            let store = open(&args)?;
            let report = store.verify();
            store.shutdown();
            let report = report?;
            println!(
                "hash chain intact: {} events; projections: {} rows; data keys of live credentials: {}",
                report.events, report.projection_rows, report.data_keys
            );
            let mut failures = Vec::new();
            if !report.mismatches.is_empty() {
                for mismatch in report.mismatches.iter().take(SHOWN) {
                    println!("  {mismatch}");
                }
                failures.push(format!(
                    "{} projection rows differ from a replay of the log; run `keyledger rebuild`",
                    report.mismatches.len()
                ));
            }
            if !report.key_problems.is_empty() {
                for problem in report.key_problems.iter().take(SHOWN) {
                    println!("  {problem}");
                }
                failures.push(format!(
                    "{} live credentials cannot open their data key; restore keys/ from a backup, or revoke them",
                    report.key_problems.len()
                ));
            }
            if !failures.is_empty() {
                anyhow::bail!(failures.join("; "));
            }
            println!(
                "ok: projections equal a replay of the log, and every live credential's data key opens"
            );
            Ok(())
        }
        Command::Rebuild(args) => {
            let store = open(&args)?;
            let events = store.rebuild();
            store.shutdown();
            println!("rebuilt the projections from {} events", events?);
            Ok(())
        }
        Command::Openapi => {
            print!("{}", http::openapi::spec_json());
            Ok(())
        }
        Command::Export(args) => export(&args),
        Command::Import(args) => import(&args),
        Command::Rekey(args) => rekey(&args),
    }
}

/// `keyledger export`: the stopped store as NDJSON, to `--out` or standard output.
fn export(args: &config::ExportArgs) -> anyhow::Result<()> {
    let store = open(&args.store).inspect_err(|error| {
        let locked = error.chain().any(|cause| {
            matches!(
                cause.downcast_ref::<storage::StoreError>(),
                Some(storage::StoreError::Locked)
            )
        });
        if locked {
            eprintln!("a running server exports at GET /v1/admin/export (docs/operations.md)");
        }
    })?;
    let written = match &args.out {
        Some(path) => File::create(path)
            .with_context(|| format!("creating {}", path.display()))
            .and_then(|file| {
                let mut out = BufWriter::new(file);
                let report = store.export(&mut out)?;
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                Ok(report)
            }),
        None => store
            .export(&mut BufWriter::new(std::io::stdout().lock()))
            .map_err(anyhow::Error::from),
    };
    store.shutdown();
    let report = written.context("exporting the store")?;
    eprintln!(
        "exported {} events, {} rows and {} data keys{}",
        report.positions,
        report.rows,
        report.keys,
        args.out
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(())
}

/// `keyledger import`: a backup into a new or empty data directory.
fn import(args: &config::ImportArgs) -> anyhow::Result<()> {
    let dir = &args.store.data_dir;
    let file = File::open(&args.input)
        .with_context(|| format!("opening the backup {}", args.input.display()))?;
    let (key, source) = config::master_key(&args.store, false)?;
    if source == KeySource::Development {
        anyhow::bail!(
            "import needs the backup's master key: pass --master-key-file or set KEYLEDGER_MASTER_KEY"
        );
    }
    let report = storage::import(dir, &key, &mut BufReader::new(file))
        .with_context(|| format!("importing {} into {}", args.input.display(), dir.display()))?;
    println!(
        "imported {} events, {} rows and {} data keys of store {} into {}; the projections were rebuilt and the store verifies ({} live credentials' data keys open)",
        report.positions,
        report.rows,
        report.keys,
        report.store_id,
        dir.display(),
        report.verify.data_keys
    );
    Ok(())
}

/// `keyledger rekey`: every data key and store key re-wrapped under the new master key. Run with
/// the old key; a run that stopped after the store keys were done opens with the new one.
fn rekey(args: &config::RekeyArgs) -> anyhow::Result<()> {
    let dir = &args.store.data_dir;
    storage::require_store(dir)?;
    let (old, source) = config::master_key(&args.store, false)?;
    if source == KeySource::Development {
        anyhow::bail!(
            "rekey needs the current master key from --master-key-file or KEYLEDGER_MASTER_KEY (development mode keeps its key in the data directory)"
        );
    }
    let new = config::read_master_key_file(&args.new_master_key_file)?;
    if old.id() == new.id() {
        anyhow::bail!("the new master key is the one the store already uses");
    }
    let opening = || format!("opening the store in {}", dir.display());
    let store = match Store::open_existing(dir, &old, Durability::Sync) {
        Err(storage::StoreError::WrongMasterKey | storage::StoreError::OtherMasterKey { .. }) => {
            Store::open_existing(dir, &new, Durability::Sync)
                .map_err(|_| {
                    anyhow::anyhow!("neither the current nor the new master key opens this store")
                })
                .with_context(opening)?
        }
        other => other.with_context(opening)?,
    };
    let report = store.rekey(&old, &new, rekey_stop_after());
    store.shutdown();
    let report = report.context("re-wrapping the keys")?;
    if report.stopped {
        anyhow::bail!(
            "rekey stopped after re-wrapping {} data keys; run it again to finish",
            report.rewrapped
        );
    }
    println!(
        "re-wrapped {} data keys ({} done by an earlier run) and {} store keys under master key {}; the old master key no longer opens this store",
        report.rewrapped,
        report.already,
        report.store_keys,
        new.id()
    );
    Ok(())
}

/// How many data keys a rekey re-wraps before it stops as an interruption would: only in builds
/// with the `test-hooks` feature, from `KEYLEDGER_TEST_REKEY_STOP_AFTER`.
fn rekey_stop_after() -> Option<usize> {
    #[cfg(feature = "test-hooks")]
    {
        std::env::var("KEYLEDGER_TEST_REKEY_STOP_AFTER")
            .ok()
            .and_then(|n| n.parse().ok())
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        None
    }
}

/// Opens an existing store for `verify` and `rebuild`: a missing or empty one is refused, and
/// nothing is created (not even the directory).
fn open(args: &config::StoreArgs) -> anyhow::Result<Store> {
    let opening = || format!("opening the store in {}", args.data_dir.display());
    // Before the key: "no store here" says more than "no master key here".
    storage::require_store(&args.data_dir)?;
    let (key, _) = config::master_key(args, false)?;
    Store::open_existing(&args.data_dir, &key, Durability::Sync).with_context(opening)
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    startup::block_on(run(settings))
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    if settings.key_source == KeySource::Development {
        tracing::warn!(
            key_file = %settings.data_dir.join(config::DEV_KEY_FILE).display(),
            "DEVELOPMENT MODE: the master key is stored next to the data it protects. \
             Pass --master-key-file or KEYLEDGER_MASTER_KEY in production."
        );
    }
    if settings.durability == Durability::UnsafeNoSync {
        tracing::warn!("UNSAFE: writes are acknowledged before they are durable");
    }
    let listen = settings.listen.clone();
    let app =
        Application::build(settings).with_context(|| format!("starting keyledger on {listen}"))?;
    if let Some(token) = &app.generated_admin_token {
        println!(
            "bootstrap admin token (shown once, only its hash is kept): {}",
            token.expose()
        );
    }
    let host = listen.rsplit_once(':').map_or(listen.as_str(), |(h, _)| h);
    println!("keyledger listening on http://{host}:{}", app.port());
    tracing::info!(port = app.port(), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
