//! The command line and environment (docs/design.md §9), and turning them into settings. Secrets
//! read here are wrapped at once so they never print.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};

use crate::crypto::{MasterKey, MasterKeyError, Redacted};
use crate::outbound::OutboundSettings;
use crate::service::deliveries::DeliverySettings;
use crate::service::health::{
    DEFAULT_PROBE_CONCURRENCY as DEFAULT_HEALTH_CONCURRENCY, DEFAULT_RATE_LIMIT_COOLDOWN,
    HealthSettings,
};
use crate::service::rotation::RotationSettings;
use crate::storage::Durability;

#[derive(Parser, Debug)]
#[command(
    name = "keyledger",
    version,
    about = "Event-sourced control plane for BYOK LLM credentials"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server.
    Serve(ServeArgs),
    /// Check the hash chain and that the projections equal a replay of the log (with the server
    /// stopped).
    Verify(StoreArgs),
    /// Drop the projections and rebuild them from the log (with the server stopped).
    Rebuild(StoreArgs),
    /// Print the OpenAPI document.
    Openapi,
    /// Write the whole store as NDJSON (with the server stopped; a running server exports at
    /// `GET /v1/admin/export`): the log as stored, the wrapped store and data keys, no plaintext.
    Export(ExportArgs),
    /// Restore an export into a new or empty data directory, checking its hash chain and
    /// rebuilding the projections.
    Import(ImportArgs),
    /// Re-wrap every data key and store key under a new master key (with the server stopped);
    /// a run that was interrupted finishes when it is run again.
    Rekey(RekeyArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where to write the export; standard output without it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The export to restore.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct RekeyArgs {
    /// The store and its current master key.
    #[command(flatten)]
    pub store: StoreArgs,
    /// File holding the new master key as base64 of 64 bytes.
    #[arg(long)]
    pub new_master_key_file: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Directory of the sled store.
    #[arg(long, env = "KEYLEDGER_DATA_DIR", default_value = "./keyledger-data")]
    pub data_dir: PathBuf,
    /// File holding the master key as base64 of 64 bytes. Without it (and without
    /// KEYLEDGER_MASTER_KEY) keyledger runs in development mode with a key in the data dir.
    #[arg(long)]
    pub master_key_file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "KEYLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// The operator's token. Without one, a token is generated on first start, printed once, and
    /// only its hash kept.
    #[arg(long, env = "KEYLEDGER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Let anyone create an account, without the admin token.
    #[arg(long, env = "KEYLEDGER_OPEN_SIGNUP", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub open_signup: bool,
    /// Let probes (and later webhooks) reach loopback, private, link-local and metadata
    /// addresses. Off by default, on in development mode (no master key given), where local
    /// servers are the point.
    #[arg(long, env = "KEYLEDGER_ALLOW_PRIVATE_URLS", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new())]
    pub allow_private_urls: bool,
    /// Seconds a client has to send a request's body once its headers have arrived; a body still
    /// incomplete then is answered 408 and its connection closed.
    #[arg(
        long,
        env = "KEYLEDGER_BODY_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = DEFAULT_BODY_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub body_timeout: u64,
    /// Seconds a provider probe may take in all (`POST /v1/byok/test/{id}`); connecting may
    /// take at most half of it. Each provider's probes go to `KEYLEDGER_<PROVIDER>_BASE_URL`
    /// when that is set (`KEYLEDGER_SELF_HOSTED_BASE_URL` for self_hosted), and Vertex's token
    /// exchange to `KEYLEDGER_VERTEX_TOKEN_URL`.
    #[arg(
        long,
        env = "KEYLEDGER_PROBE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = DEFAULT_PROBE_TIMEOUT_SECS,
        value_parser = clap::value_parser!(u64).range(1..=120)
    )]
    pub probe_timeout: u64,
    /// How long a staged rotation can be committed (`rotate/stage`): seconds, or a number with
    /// `s`, `m`, `h` or `d` (`30m`, `24h`). Past it the stage is retired and its key destroyed.
    #[arg(long, env = "KEYLEDGER_STAGE_TTL", value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub stage_ttl: Duration,
    /// How long a replaced secret can be rolled back to (`rotate/rollback`), as `--stage-ttl`
    /// takes it. Past it the old version's data key is destroyed.
    #[arg(long, env = "KEYLEDGER_ROLLBACK_WINDOW", value_name = "DURATION", default_value = "7d", value_parser = parse_duration)]
    pub rollback_window: Duration,
    // Health (docs/health.md).
    /// Seconds a 429 (from a probe or in a usage report) keeps a credential out of resolve.
    #[arg(
        long,
        env = "KEYLEDGER_RATE_LIMIT_COOLDOWN",
        value_name = "SECONDS",
        default_value_t = DEFAULT_RATE_LIMIT_COOLDOWN_SECS,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub rate_limit_cooldown: u64,
    /// Probe every active credential whose last probe is older than this many seconds, in the
    /// background, spread over the interval. Off without it.
    #[arg(
        long,
        env = "KEYLEDGER_PROBE_INTERVAL",
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..=604_800)
    )]
    pub probe_interval: Option<u64>,
    /// Most periodic probes in flight at once.
    #[arg(
        long,
        env = "KEYLEDGER_PROBE_CONCURRENCY",
        value_name = "N",
        default_value_t = DEFAULT_PROBE_CONCURRENCY,
        value_parser = clap::value_parser!(u64).range(1..=64)
    )]
    pub probe_concurrency: u64,
    /// Multiplies the webhook retry schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
    /// 14 h, 20 h, 24 h) and the five days of failures that disable an endpoint; tests use a
    /// tiny scale. A positive number.
    #[arg(
        long,
        env = "KEYLEDGER_WEBHOOK_RETRY_SCALE",
        value_name = "FACTOR",
        default_value_t = 1.0,
        value_parser = retry_scale
    )]
    pub webhook_retry_scale: f64,
    /// Seconds one webhook delivery attempt may take in all.
    #[arg(
        long,
        env = "KEYLEDGER_WEBHOOK_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=120)
    )]
    pub webhook_timeout: u64,
    /// How long the writer may leave an append unanswered before `/readyz` says `writer_stuck`:
    /// seconds, or a number with `s`, `m`, `h` or `d`, as `--stage-ttl` takes it.
    #[arg(long, env = "KEYLEDGER_WRITER_STUCK_AFTER", value_name = "DURATION", default_value = DEFAULT_WRITER_STUCK_AFTER, value_parser = parse_duration)]
    pub writer_stuck_after: Duration,
    /// Acknowledge writes before they are durable. Only for showing that the crash test catches
    /// lost writes; never for real data.
    #[arg(long, env = "KEYLEDGER_UNSAFE_NO_SYNC", action = ArgAction::SetTrue, value_parser = BoolishValueParser::new(), hide = true)]
    pub unsafe_no_sync: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("KEYLEDGER_MASTER_KEY: {0}")]
    MasterKeyEnv(MasterKeyError),
    #[error("KEYLEDGER_MASTER_KEY is set but is not valid UTF-8")]
    MasterKeyEnvNotUnicode,
    #[error("master key file {path}: {reason}")]
    MasterKeyFile { path: PathBuf, reason: String },
    #[error("{name}: {reason}")]
    Url { name: String, reason: String },
    #[error(
        "no master key: pass --master-key-file or set KEYLEDGER_MASTER_KEY (or start `keyledger serve` once in development mode to create {0})"
    )]
    NoMasterKey(PathBuf),
}

/// Where the master key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Flag,
    Environment,
    /// Development mode: `master.key` in the data dir, created on first start.
    Development,
}

/// Everything `serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: String,
    pub data_dir: PathBuf,
    pub master_key: MasterKey,
    pub key_source: KeySource,
    pub admin_token: Option<Redacted<String>>,
    pub open_signup: bool,
    pub durability: Durability,
    /// How long a request's body may take to arrive, from when its headers were read.
    pub body_timeout: Duration,
    /// The outbound client's policy, time limits and per-provider base URLs.
    pub outbound: OutboundSettings,
    /// Stage TTL, rollback window and the sweep's interval (docs/rotation.md).
    pub rotation: RotationSettings,
    /// The rate-limit cooldown and the periodic prober (docs/health.md).
    pub health: HealthSettings,
    /// Webhook deliveries: the retry schedule's scale and the time an attempt may take.
    pub webhooks: DeliverySettings,
    /// How long the writer may leave an append unanswered before the server is not ready.
    pub writer_stuck_after: Duration,
    /// HTTP worker threads; `None` for one per core.
    pub workers: Option<usize>,
    /// Stop gracefully on SIGTERM / SIGINT. Always on in a build without `test-hooks`; in-process
    /// tests turn it off and stop the server through `Application::handle`.
    #[cfg(feature = "test-hooks")]
    pub handle_signals: bool,
    /// Holds resolve's follower before its replay while this says `true` (tests of the start).
    #[cfg(feature = "test-hooks")]
    pub hold_follower: Option<tokio::sync::watch::Receiver<bool>>,
}

pub const DEV_KEY_FILE: &str = "master.key";

/// The default of `--body-timeout`: ample for the largest accepted body (64 KiB) on a slow
/// link, short enough that stalled uploads cannot pile up (ADR 0014).
pub const DEFAULT_BODY_TIMEOUT_SECS: u64 = 10;

/// The default of `--probe-timeout`: a models list answers in well under a second; ten leaves
/// room for a slow region without letting a hung provider hold a request for long.
pub const DEFAULT_PROBE_TIMEOUT_SECS: u64 = 10;

/// The default of `--writer-stuck-after`: a group's flush and fdatasync takes milliseconds, and
/// a disk slow enough to take seconds under a burst is not yet stuck; ten seconds of no answer
/// is a disk or a writer that has stopped, long enough to act on (ADR 0032).
pub const DEFAULT_WRITER_STUCK_AFTER: &str = "10s";

/// The default of `--rate-limit-cooldown`.
pub const DEFAULT_RATE_LIMIT_COOLDOWN_SECS: u64 = DEFAULT_RATE_LIMIT_COOLDOWN.as_secs();

/// The default of `--probe-concurrency`: a few probes at once, not a burst.
pub const DEFAULT_PROBE_CONCURRENCY: u64 = 4;

impl Settings {
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let (master_key, key_source) = master_key(&args.store, true)?;
        Ok(Self {
            listen: args.listen,
            data_dir: args.store.data_dir,
            master_key,
            key_source,
            admin_token: args.admin_token.map(Redacted::new),
            open_signup: args.open_signup,
            durability: if args.unsafe_no_sync {
                Durability::UnsafeNoSync
            } else {
                Durability::Sync
            },
            body_timeout: Duration::from_secs(args.body_timeout),
            outbound: outbound(
                args.allow_private_urls || key_source == KeySource::Development,
                args.probe_timeout,
            )?,
            rotation: RotationSettings {
                stage_ttl: args.stage_ttl,
                rollback_window: args.rollback_window,
                ..RotationSettings::default()
            },
            health: HealthSettings {
                rate_limit_cooldown: Duration::from_secs(args.rate_limit_cooldown),
                probe_interval: args.probe_interval.map(Duration::from_secs),
                probe_concurrency: usize::try_from(args.probe_concurrency)
                    .unwrap_or(DEFAULT_HEALTH_CONCURRENCY),
            },
            webhooks: DeliverySettings {
                retry_scale: args.webhook_retry_scale,
                timeout: Duration::from_secs(args.webhook_timeout),
            },
            writer_stuck_after: args.writer_stuck_after,
            workers: None,
            #[cfg(feature = "test-hooks")]
            handle_signals: true,
            #[cfg(feature = "test-hooks")]
            hold_follower: None,
        })
    }
}

/// A duration as the flags take it: whole seconds, or a whole number with the unit `s`, `m`,
/// `h` or `d`; at least one second, at most ten years.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: use seconds, or a number with s, m, h or d"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: use seconds, or a number with s, m, h or d"))?;
    let secs = n.saturating_mul(scale);
    if secs == 0 || secs > 10 * 365 * 86_400 {
        return Err(format!("{text:?}: between one second and ten years"));
    }
    Ok(Duration::from_secs(secs))
}

/// `--webhook-retry-scale`: a finite positive factor.
fn retry_scale(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(scale),
        _ => Err(format!("{text:?} is not a positive number")),
    }
}

/// The outbound settings: the flags, and the base URLs of `KEYLEDGER_<PROVIDER>_BASE_URL` and
/// `KEYLEDGER_VERTEX_TOKEN_URL`, each checked to be an http(s) URL.
fn outbound(allow_private_urls: bool, probe_timeout: u64) -> Result<OutboundSettings, ConfigError> {
    let url = |name: String| -> Result<Option<String>, ConfigError> {
        let Ok(value) = std::env::var(&name) else {
            return Ok(None);
        };
        match url::Url::parse(&value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Some(value)),
            Ok(_) => Err(ConfigError::Url {
                name,
                reason: "not an http or https URL".into(),
            }),
            Err(e) => Err(ConfigError::Url {
                name,
                reason: e.to_string(),
            }),
        }
    };
    let mut base_urls = std::collections::BTreeMap::new();
    for provider in crate::domain::providers::catalog() {
        let name = format!("KEYLEDGER_{}_BASE_URL", provider.id.to_ascii_uppercase());
        if let Some(value) = url(name)? {
            base_urls.insert(provider.id.to_owned(), value);
        }
    }
    let timeout = Duration::from_secs(probe_timeout);
    Ok(OutboundSettings {
        allow_private_urls,
        connect_timeout: timeout / 2,
        timeout,
        base_urls,
        vertex_token_url: url("KEYLEDGER_VERTEX_TOKEN_URL".into())?,
    })
}

/// Resolves the master key: the flag's file, then `KEYLEDGER_MASTER_KEY`, then development mode's
/// `master.key` in the data dir (created when `create` is set).
pub fn master_key(args: &StoreArgs, create: bool) -> Result<(MasterKey, KeySource), ConfigError> {
    if let Some(path) = &args.master_key_file {
        return Ok((read_key_file(path)?, KeySource::Flag));
    }
    match std::env::var("KEYLEDGER_MASTER_KEY") {
        Ok(text) => {
            let key = MasterKey::from_base64(&text).map_err(ConfigError::MasterKeyEnv)?;
            return Ok((key, KeySource::Environment));
        }
        Err(std::env::VarError::NotPresent) => {}
        // Falling back to development mode here would quietly run on another key.
        Err(std::env::VarError::NotUnicode(_)) => return Err(ConfigError::MasterKeyEnvNotUnicode),
    }
    let path = args.data_dir.join(DEV_KEY_FILE);
    let exists = path.try_exists().map_err(|e| ConfigError::MasterKeyFile {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if exists {
        return Ok((read_key_file(&path)?, KeySource::Development));
    }
    if !create {
        return Err(ConfigError::NoMasterKey(path));
    }
    let key = MasterKey::generate();
    write_key_file(&path, &key).map_err(|e| ConfigError::MasterKeyFile {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok((key, KeySource::Development))
}

/// Reads a master key file (base64 of 64 bytes), as `--master-key-file` does.
pub fn read_master_key_file(path: &Path) -> Result<MasterKey, ConfigError> {
    read_key_file(path)
}

fn read_key_file(path: &Path) -> Result<MasterKey, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::MasterKeyFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    MasterKey::from_base64(&text).map_err(|e| ConfigError::MasterKeyFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn write_key_file(path: &Path, key: &MasterKey) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        // The data dir the key goes in is its owner's alone (the store keeps it so too).
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{}", key.to_base64().expose())?;
    file.sync_all()
}
