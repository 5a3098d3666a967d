//! API tokens: `kl_` + 48 lowercase hex characters (192 random bits). The first 12 characters
//! (`kl_` + 9 hex) are the public prefix that names a token in listings, logs and events; only a
//! keyed HMAC-SHA256 hash of the whole token is ever stored.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{DataKey, Redacted, random_bytes};

const PREFIX_LEN: usize = 12;

/// The stored form of a token: HMAC-SHA256 under the store's token key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Constant-time comparison, for checking a presented token against a stored hash.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes: [u8; 32] = hex::decode(text).ok()?.try_into().ok()?;
        Some(Self(bytes))
    }
}

/// Mints a new token with the given kind marker (`kl_` for account keys, `kl_admin_` for the
/// operator) and 192 bits of randomness.
pub fn generate_token(marker: &str) -> Redacted<String> {
    let bytes: [u8; 24] = random_bytes();
    Redacted::new(format!("{marker}{}", hex::encode(bytes)))
}

/// The public, non-secret prefix of a token.
pub fn token_prefix(token: &str) -> String {
    token.chars().take(PREFIX_LEN).collect()
}

/// Computes keyed token hashes.
#[derive(Clone)]
pub struct KeyedHasher {
    mac: Hmac<Sha256>,
}

impl KeyedHasher {
    pub fn new(key: &DataKey) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        Self { mac }
    }

    pub fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    pub fn token(&self, token: &str) -> TokenHash {
        TokenHash(self.hash(&[token.as_bytes()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_prefixed() {
        let a = generate_token("kl_");
        let b = generate_token("kl_");
        assert!(a.expose().starts_with("kl_"));
        assert_eq!(a.expose().len(), 3 + 48);
        assert_ne!(a, b);
        assert_eq!(token_prefix(a.expose()).len(), 12);
    }

    #[test]
    fn hashes_are_keyed_and_compare_in_constant_time() {
        let h1 = KeyedHasher::new(&DataKey::generate());
        let h2 = KeyedHasher::new(&DataKey::generate());
        let t = generate_token("kl_");
        assert!(h1.token(t.expose()).matches(&h1.token(t.expose())));
        assert!(!h1.token(t.expose()).matches(&h2.token(t.expose())));
    }
}
