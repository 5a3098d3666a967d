//! One integration binary: the real server on port 0 with a fresh sled store in a temp dir.

// A test may stop on any failure; Cargo.toml's [lints.clippy] denies these in the product only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod accounts;
mod architecture;
mod bodies;
mod byok;
mod caching;
mod client;
mod contract;
mod crash;
mod crash_mixed;
mod cursors;
mod damage;
mod errors;
mod events;
mod fixtures;
mod idempotency;
mod key_streams;
mod keys;
mod names;
mod openapi;
mod ops;
mod outbound;
mod protocol;
mod readiness;
mod revoked_streams;
mod slow_clients;
mod store;
mod webhooks;
