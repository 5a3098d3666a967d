//! One integration binary: the real server on port 0 with a fresh sled store in a temp dir.

mod helpers;

mod accounts;
mod architecture;
mod byok;
mod client;
mod crash;
mod errors;
mod events;
mod fixtures;
mod idempotency;
mod keys;
mod openapi;
mod store;
