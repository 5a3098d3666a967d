#![forbid(unsafe_code)]

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
