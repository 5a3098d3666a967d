//! Structured logs to stderr. `RUST_LOG` filters (default `info`); `KEYLEDGER_LOG_FORMAT=json`
//! switches to one JSON object per line. Nothing logged anywhere carries a secret: request logs
//! name the method, path, status and latency, never bodies, headers or query strings.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,actix_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let json = std::env::var("KEYLEDGER_LOG_FORMAT").is_ok_and(|f| f == "json");
    // A second init (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}
