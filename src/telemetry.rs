//! Structured logs to stderr. `RUST_LOG` filters (default `info,actix_server=warn`: actix's
//! worker start-up lines are left out); `KEYLEDGER_LOG_FORMAT=json` switches to one JSON object
//! per line. Nothing logged anywhere carries a secret: request logs name the method, the matched
//! route pattern (`/v1/byok/get/{id}`, or `unmatched`), the status and the latency, never the raw
//! path, bodies, headers or query strings.
//!
//! ERROR is kept for what an operator must look at. A connection the HTTP server drops because
//! of what the client sent (a request it cannot parse, a head too large, a reset) is the client's
//! fault, and anyone can cause as many as they like: those lines are logged at DEBUG
//! ([`ClientFaults`]).

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

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
        builder.json().finish().with(ClientFaults).try_init()
    } else {
        builder.compact().finish().with(ClientFaults).try_init()
    };
}

/// Where actix-http logs the end of a connection that failed.
const DISPATCHER: &str = "actix_http::h1::dispatcher";
/// How it starts that line. Its other ERROR lines (a response body that failed, an internal
/// error) are the server's own and stay at ERROR.
const STREAM_ERROR: &str = "stream error: ";

/// Logs actix-http's ERROR line for a connection ended by a client fault again at DEBUG, and
/// drops the original. actix has no setting for that line's level, and a filter directive could
/// only silence the dispatcher's every line.
pub struct ClientFaults;

impl<S: Subscriber> Layer<S> for ClientFaults {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::ERROR || meta.target() != DISPATCHER {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        let Some(cause) = message.0.strip_prefix(STREAM_ERROR) else {
            return true;
        };
        tracing::debug!(
            target: "keyledger::http",
            cause,
            "closed a connection after a client fault"
        );
        false
    }
}

/// The `message` field of an event, as text.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
