//! Builds the application: opens the store, settles the admin token, binds the listener first
//! (so a port of 0 works and the caller learns the real one), and wires the HTTP server. Must not
//! import sled: the store is reached through `Store`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::config::Settings;
use crate::crypto::{Redacted, generate_token};
use crate::http::{self, AppState, receive};
use crate::service::accounts::{ADMIN_TOKEN_MARKER, Accounts};
use crate::service::clock::{SharedClock, SystemClock};
use crate::service::credentials::Credentials;
use crate::service::deliveries::{self, DeliverySettings};
use crate::service::events::Events;
use crate::service::health::Prober;
use crate::service::idempotency::Idempotency;
use crate::service::ids::Ids;
use crate::service::policy::Policies;
use crate::service::resolve::Resolver;
use crate::service::rotation::Sweeper;
use crate::service::usage::Usage;
use crate::service::webhooks::Webhooks;
use crate::storage::{Store, StoreError};

/// How long a client has to send a request's headers.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection answered with `Connection: close` may linger before it is dropped.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a graceful shutdown waits for requests in flight before it drops them: inside the
/// shortest common supervisor grace period (`docker stop`'s 10 s), so the store still drains and
/// flushes before a SIGKILL.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;
/// A log of at most this many events is checked before the server starts listening (a fraction
/// of a second); a longer one in the background, while the server answers but is not ready.
const INLINE_CHECK_EVENTS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(
        "cannot read the stored admin token hash: {0}; start once with --admin-token (or KEYLEDGER_ADMIN_TOKEN) to replace it"
    )]
    AdminToken(StoreError),
    #[error("cannot build resolve's routing state: {0}")]
    Resolve(#[from] crate::service::ServiceError),
    #[error("cannot build the outbound client: {0}")]
    Outbound(#[from] crate::outbound::OutboundError),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

/// Runs `work` (the server, from start to stop) on the actix runtime its workers need, so that
/// the binary's entry point does not name the web framework.
pub fn block_on<F: std::future::Future>(work: F) -> F::Output {
    actix_web::rt::System::new().block_on(work)
}

pub struct Application {
    port: u16,
    server: Server,
    shutdown: Shutdown,
    handle_signals: bool,
    store: Store,
    resolver: Resolver,
    /// Retires expired stages and closed rollback windows (docs/rotation.md).
    sweeper: Sweeper,
    /// The periodic prober and the signal that stops it, when `--probe-interval` is set.
    prober: Option<(Prober, tokio::sync::watch::Receiver<bool>)>,
    /// The endpoints the dispatcher delivers to, and how.
    webhooks: (Webhooks, DeliverySettings),
    /// Turns true when the server begins to shut down.
    closing: tokio::sync::watch::Receiver<bool>,
    /// The admin token generated on this start, to be printed once.
    pub generated_admin_token: Option<Redacted<String>>,
}

impl Application {
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        let store = Store::open(
            &settings.data_dir,
            &settings.master_key,
            settings.durability,
        )?;
        // Never ready on a store that `keyledger verify` would reject (docs/adr/0015).
        store.check_on_start(INLINE_CHECK_EVENTS);
        let mut generated_admin_token = None;
        let admin_hash = match &settings.admin_token {
            Some(token) => {
                // An explicit token retires a generated one (an unreadable one too), so dropping
                // the flag later mints (and prints) a fresh token instead of reviving the old one.
                store.clear_admin_token()?;
                store.hash_token(token.expose())
            }
            // A row that does not decode refuses the start: minting a new token over it would
            // silently lock out whoever holds the old one.
            None => match store.admin_token().map_err(StartupError::AdminToken)? {
                Some(stored) => stored,
                None => {
                    let token = generate_token(ADMIN_TOKEN_MARKER);
                    let hash = store.hash_token(token.expose());
                    store.set_admin_token(&hash)?;
                    generated_admin_token = Some(token);
                    hash
                }
            },
        };
        let (closing, _) = tokio::sync::watch::channel(false);
        // One clock and one id generator for every service, so ids of a kind are minted in
        // order and every time comes from the same source.
        let clock: SharedClock = Arc::new(SystemClock);
        let ids = Arc::new(Ids::new(clock.clone()));
        // Replays the log while the server listens, then follows it (docs/routing.md).
        #[cfg(feature = "test-hooks")]
        let hold = settings.hold_follower.clone();
        #[cfg(not(feature = "test-hooks"))]
        let hold = None;
        let resolver = Resolver::start(
            store.clone(),
            settings.master_key.clone(),
            clock.clone(),
            hold,
        )?;
        let outbound = crate::outbound::Outbound::new(settings.outbound.clone())?;
        let webhooks = Webhooks::new(
            store.clone(),
            settings.master_key.clone(),
            clock.clone(),
            ids.clone(),
            outbound.clone(),
        );
        let credentials = || {
            Credentials::new(
                store.clone(),
                settings.master_key.clone(),
                clock.clone(),
                ids.clone(),
            )
            .with_outbound(outbound.clone())
            .with_rotation(settings.rotation)
            .with_rate_limit_cooldown(settings.health.rate_limit_cooldown)
        };
        // Retires what expired while the server was down, once the follower has caught up, then
        // keeps doing so on a timer.
        let sweeper = Sweeper::start(credentials(), resolver.clone(), closing.subscribe())?;
        // Periodic probes (docs/health.md): off unless `--probe-interval` is given; spawned
        // once the runtime runs, stopped by the shutdown signal.
        let prober = Prober::new(
            &settings.health,
            Arc::new(credentials()),
            resolver.clone(),
            clock.clone(),
            ids.clone(),
        );
        let state = web::Data::new(AppState {
            accounts: Accounts::new(store.clone(), admin_hash, clock.clone(), ids.clone())
                .with_gateways(resolver.clone()),
            credentials: credentials(),
            events: Events::new(store.clone(), closing.subscribe()),
            policies: Policies::new(store.clone(), clock.clone()),
            idempotency: Idempotency::new(store.clone(), clock.clone()),
            usage: Usage::new(store.clone(), clock)
                .with_rate_limit_cooldown(settings.health.rate_limit_cooldown),
            resolver: resolver.clone(),
            webhooks: webhooks.clone(),
            ids,
            open_signup: settings.open_signup,
            writer_stuck_after: settings.writer_stuck_after,
            receiving: receive::Limits {
                timeout: settings.body_timeout,
                closing: closing.subscribe(),
            },
        });
        let listener = TcpListener::bind(&settings.listen)?;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                // Inside the request id: an answer to a body cut short carries the id.
                .wrap(from_fn(receive::middleware))
                .wrap(from_fn(http::request_id::middleware))
                .configure(http::configure)
                .default_service(web::to(http::route_not_found))
        })
        // Request heads have `HEAD_TIMEOUT` (past it actix answers a bare 408: there is no request
        // yet to carry an id); bodies have `--body-timeout` (`http::receive`). A shutdown ends
        // streams, long polls and bodies still waiting on their client at once, so what is left
        // in flight is handlers already at work: the shutdown timeout only bounds them (ADR 0014).
        .client_request_timeout(HEAD_TIMEOUT)
        .client_disconnect_timeout(DISCONNECT_TIMEOUT)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS);
        if let Some(workers) = settings.workers {
            server = server.workers(workers);
        }
        // Signals are handled here rather than by actix, so that streams hear of a shutdown
        // before actix waits for their connections to end.
        let server = server.disable_signals().listen(listener)?.run();
        #[cfg(feature = "test-hooks")]
        let handle_signals = settings.handle_signals;
        #[cfg(not(feature = "test-hooks"))]
        let handle_signals = true;
        let prober = prober.map(|p| (p, closing.subscribe()));
        let dispatcher_closing = closing.subscribe();
        Ok(Self {
            port,
            prober,
            shutdown: Shutdown {
                closing,
                server: server.handle(),
            },
            server,
            store,
            resolver,
            sweeper,
            webhooks: (webhooks, settings.webhooks.clone()),
            closing: dispatcher_closing,
            handle_signals,
            generated_admin_token,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server without a signal (in-process tests run with signals off).
    #[cfg(feature = "test-hooks")]
    pub fn handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Whether resolve's follower has caught up with the log and the rotation sweep has made
    /// its first pass (tests wait for both after a start).
    #[cfg(feature = "test-hooks")]
    pub fn is_caught_up(&self) -> bool {
        self.resolver.is_caught_up() && self.sweeper.has_swept()
    }

    /// The store the server runs on, for tests that look beneath the API.
    #[cfg(feature = "test-hooks")]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until stopped (signal or handle), lets in-flight requests finish, then drains the
    /// writer and flushes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        if self.handle_signals {
            let shutdown = self.shutdown.clone();
            actix_web::rt::spawn(async move {
                stop_signal().await;
                tracing::info!("shutting down: finishing requests in flight");
                shutdown.stop().await;
            });
        }
        // The one task that delivers webhooks: off the request path and off the writer.
        let (webhooks, delivery) = self.webhooks;
        let dispatcher = deliveries::spawn(webhooks, delivery, self.closing);
        // The prober runs beside the server and hears the same shutdown (or the server's end),
        // so it is gone before the store closes.
        let closing = self.shutdown.closing.clone();
        let server = async move {
            let served = self.server.await;
            closing.send_replace(true);
            served
        };
        let prober = async move {
            if let Some((prober, closing)) = self.prober {
                prober.run(closing).await;
            }
        };
        let (served, ()) = tokio::join!(server, prober);
        self.sweeper.join();
        dispatcher.abort();
        self.store.shutdown();
        self.resolver.join();
        served
    }
}

/// Stops the server gracefully: event streams, long polls and request bodies still waiting on
/// their client end first, then in-flight requests finish, then the store's writer drains.
#[derive(Clone)]
pub struct Shutdown {
    closing: tokio::sync::watch::Sender<bool>,
    server: ServerHandle,
}

impl Shutdown {
    pub async fn stop(&self) {
        self.closing.send_replace(true);
        self.server.stop(true).await;
    }
}

/// SIGTERM or SIGINT (Ctrl-C). A handler that cannot be installed is logged, and never taken
/// for a signal: the server then keeps serving instead of stopping at once.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    () = ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c().await;
    }
}

/// Waits for Ctrl-C; waits for ever if its handler cannot be installed.
async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(%error, "cannot listen for SIGINT");
        std::future::pending::<()>().await;
    }
}
