//! Everything cryptographic: the master key (KEK), per-record data keys, AES-SIV sealing, API
//! token generation and keyed token hashes, the MAC of tamper-evident page cursors (`cursor`),
//! and the `Redacted` wrapper that keeps secrets out of `Debug` / `Display` output. The only
//! module that imports `aes-siv`, `hmac`, `sha2` or `subtle`; it knows nothing about storage or
//! HTTP.

mod cursor;
mod keys;
mod redacted;
mod seal;
mod token;
mod webhook;

pub use cursor::CursorMac;
pub use keys::{
    DataKey, MASTER_KEY_ID_LEN, MasterKey, MasterKeyError, MasterKeyId, data_key_binding,
};
pub use redacted::Redacted;
pub use seal::{SealError, open, seal};
pub use token::{KeyedHasher, TokenHash, generate_token, token_prefix};
pub use webhook::{
    SECRET_PREFIX as WEBHOOK_SECRET_PREFIX, generate_webhook_secret, webhook_secret_key,
    webhook_signature,
};

/// Fills a fresh array with bytes from the operating system's CSPRNG.
///
/// The OS generator failing is unrecoverable for a secrets service: nothing can be sealed or minted
/// safely, so this is the one place that aborts instead of returning an error.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut out).expect("the operating system's random number generator failed");
    out
}
