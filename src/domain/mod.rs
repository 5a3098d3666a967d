//! Pure domain logic: aggregates, the commands they decide on, the events they emit, and their
//! errors, the typed ids (`ids`) and the one rule for human-readable text (`text`). No I/O, no clock, no randomness: ids, timestamps and token
//! hashes arrive in commands (ids are minted and the time is read in `service`).

pub mod account;
pub mod account_key;
pub mod credential;
pub mod health;
pub mod ids;
pub mod policy;
pub mod providers;
pub mod routing;
mod scope;
pub mod text;
pub mod usage;
pub mod webhook;

pub use ids::{AccountId, CredentialId, KeyId, StageId, WebhookId};
pub use scope::Scope;

/// Payload fields that stay in the log but are never shown by the API, event feeds or webhooks:
/// ciphertext (`sealed_secret`) and keyed token hashes (`token_hash`).
pub const PRIVATE_FIELDS: &[&str] = &["sealed_secret", "token_hash"];
