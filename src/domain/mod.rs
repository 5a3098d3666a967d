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

/// One monotonic generator for the process, so ids minted later sort later even within a
/// millisecond: listings ordered by id are creation order.
static IDS: std::sync::Mutex<ulid::Generator> = std::sync::Mutex::new(ulid::Generator::new());

/// Mints a prefixed ULID, for example `acct_01JD…`.
pub fn new_id(prefix: &str) -> String {
    // `Ulid::default()` is the nil id, so the fallback (a poisoned lock, or 2^80 ids in one
    // millisecond) is spelled out.
    let id = match IDS.lock().ok().and_then(|mut ids| ids.generate().ok()) {
        Some(id) => id,
        None => ulid::Ulid::new(),
    };
    format!("{prefix}_{id}")
}
