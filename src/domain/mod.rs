//! Pure domain logic: aggregates, the commands they decide on, the events they emit, and their
//! errors. No I/O, no clock, no randomness: ids, timestamps and token hashes arrive in commands.

pub mod account;
pub mod credential;
pub mod providers;
mod scope;

pub use scope::Scope;

/// Payload fields that stay in the log but are never shown by the API, event feeds or webhooks:
/// ciphertext (`sealed_secret`) and keyed token hashes (`token_hash`).
pub const PRIVATE_FIELDS: &[&str] = &["sealed_secret", "token_hash"];

/// Mints a prefixed ULID, for example `acct_01JD…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}
