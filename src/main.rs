#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use keyledger::config::{self, Cli, Command, KeySource, Settings};
use keyledger::startup::{self, Application};
use keyledger::storage::{Durability, Store};
use keyledger::{http, telemetry};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init();
    match cli.command {
        Command::Serve(args) => serve(Settings::from_args(args)?),
        Command::Verify(args) => {
            let store = open(&args)?;
            let report = store.verify()?;
            store.shutdown();
            println!(
                "hash chain intact: {} events; projections: {} rows",
                report.events, report.projection_rows
            );
            if !report.is_sound() {
                for mismatch in report.mismatches.iter().take(20) {
                    println!("  {mismatch}");
                }
                anyhow::bail!(
                    "{} projection rows differ from a replay of the log; run `keyledger rebuild`",
                    report.mismatches.len()
                );
            }
            println!("ok: projections equal a replay of the log");
            Ok(())
        }
        Command::Rebuild(args) => {
            let store = open(&args)?;
            let events = store.rebuild()?;
            store.shutdown();
            println!("rebuilt the projections from {events} events");
            Ok(())
        }
        Command::Openapi => {
            print!("{}", http::openapi::spec_json());
            Ok(())
        }
    }
}

fn open(args: &config::StoreArgs) -> anyhow::Result<Store> {
    let (key, _) = config::master_key(args, false)?;
    Store::open(&args.data_dir, &key, Durability::Sync)
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))
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
