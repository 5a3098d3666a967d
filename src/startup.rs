//! Builds the application: opens the store, settles the admin token, binds the listener first
//! (so a port of 0 works and the caller learns the real one), and wires the HTTP server.

use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};

use crate::config::Settings;
use crate::crypto::{Redacted, generate_token};
use crate::http::{self, AppState};
use crate::service::accounts::{ADMIN_TOKEN_MARKER, Accounts};
use crate::service::credentials::Credentials;
use crate::service::events::Events;
use crate::service::idempotency::Idempotency;
use crate::storage::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
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
        let mut generated_admin_token = None;
        let admin_hash = match (&settings.admin_token, store.admin_token()?) {
            (Some(token), stored) => {
                // An explicit token retires a generated one, so dropping the flag later mints
                // (and prints) a fresh token instead of reviving the old one.
                if stored.is_some() {
                    store.clear_admin_token()?;
                }
                store.hash_token(token.expose())
            }
            (None, Some(stored)) => stored,
            (None, None) => {
                let token = generate_token(ADMIN_TOKEN_MARKER);
                let hash = store.hash_token(token.expose());
                store.set_admin_token(&hash)?;
                generated_admin_token = Some(token);
                hash
            }
        };
        let (closing, _) = tokio::sync::watch::channel(false);
        let state = web::Data::new(AppState {
            accounts: Accounts::new(store.clone(), admin_hash),
            credentials: Credentials::new(store.clone(), settings.master_key.clone()),
            events: Events::new(store.clone(), closing.subscribe()),
            idempotency: Idempotency::new(store.clone()),
            open_signup: settings.open_signup,
        });
        let listener = TcpListener::bind(&settings.listen)?;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(http::request_id::middleware))
                .configure(http::configure)
                .default_service(web::to(http::route_not_found))
        })
        .shutdown_timeout(30);
        if let Some(workers) = settings.workers {
            server = server.workers(workers);
        }
        // Signals are handled here rather than by actix, so that streams hear of a shutdown
        // before actix waits for their connections to end.
        let server = server.disable_signals().listen(listener)?.run();
        Ok(Self {
            port,
            shutdown: Shutdown {
                closing,
                server: server.handle(),
            },
            server,
            store,
            handle_signals: settings.handle_signals,
            generated_admin_token,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

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
        let served = self.server.await;
        self.store.shutdown();
        served
    }
}

/// Stops the server gracefully: event streams and long polls end first, then in-flight requests
/// finish, then the store's writer drains.
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

/// SIGTERM or SIGINT (Ctrl-C).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
