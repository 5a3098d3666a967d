//! Pure domain logic: aggregates, the commands they decide on, the events they emit, and their
//! errors. No I/O, no clock, no randomness: ids, timestamps and token hashes arrive in commands.

pub mod account;
pub mod credential;
pub mod providers;
mod scope;

pub use scope::Scope;

/// Mints a prefixed ULID, for example `acct_01JD…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}
