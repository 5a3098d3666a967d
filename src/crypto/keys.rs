//! The master key (KEK) and per-record data keys (DEK). Wrapping and sealing answer a
//! `SealError` when the cipher refuses: a caller never stores an empty key or ciphertext in
//! place of one. Knows nothing about storage.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{KeyedHasher, Redacted, SealError, open, random_bytes, seal};

/// Length of an AES-256-SIV key (two 256-bit halves).
pub const KEY_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("the master key must be base64 of exactly 64 bytes")]
    BadEncoding,
    #[error("the master key must be exactly 64 bytes, found {0}")]
    BadLength(usize),
}

/// The associated data a credential's data key is wrapped under: it binds the key to its account
/// and credential, so a key file copied to another credential does not open. Every wrapped key
/// already stored was bound to this string; it never changes.
pub fn data_key_binding(account_id: &str, record_id: &str) -> Vec<u8> {
    format!("keyledger/dek/{account_id}/{record_id}").into_bytes()
}

/// The key-encryption key (KEK). It wraps data keys and is never written next to the data it
/// protects, except in development mode.
#[derive(Clone)]
pub struct MasterKey(Redacted<[u8; KEY_LEN]>);

impl MasterKey {
    pub fn generate() -> Self {
        Self(Redacted::new(random_bytes()))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, MasterKeyError> {
        let key: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| MasterKeyError::BadLength(bytes.len()))?;
        Ok(Self(Redacted::new(key)))
    }

    /// Parses base64 text (surrounding whitespace allowed), as in `KEYLEDGER_MASTER_KEY` and key files.
    pub fn from_base64(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| MasterKeyError::BadEncoding)?;
        Self::from_bytes(&bytes)
    }

    pub fn to_base64(&self) -> Redacted<String> {
        Redacted::new(STANDARD.encode(self.0.expose()))
    }

    /// Wraps a data key, bound to `aad` (what the key belongs to).
    pub fn wrap(&self, key: &DataKey, aad: &[u8]) -> Result<Vec<u8>, SealError> {
        seal(self.0.expose(), aad, key.0.expose())
    }

    pub fn unwrap_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<DataKey, SealError> {
        let bytes = open(self.0.expose(), aad, wrapped)?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| SealError::Malformed)?;
        Ok(DataKey(Redacted::new(key)))
    }

    /// The key's public id: the first 16 bytes of an HMAC of a fixed label under the key. It
    /// names which master key wrapped a stored key (so a rekey that stopped half-way knows what
    /// is done) and can be printed and compared without revealing anything of the key.
    pub fn id(&self) -> MasterKeyId {
        let hash = KeyedHasher::new(&DataKey(self.0.clone())).hash(&[MASTER_KEY_ID_LABEL]);
        let mut id = [0u8; MASTER_KEY_ID_LEN];
        id.copy_from_slice(&hash[..MASTER_KEY_ID_LEN]);
        MasterKeyId(id)
    }
}

const MASTER_KEY_ID_LABEL: &[u8] = b"keyledger/master-key-id";
/// Length of a [`MasterKeyId`].
pub const MASTER_KEY_ID_LEN: usize = 16;

/// Which master key wrapped a stored key ([`MasterKey::id`]); shown as 32 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MasterKeyId(pub [u8; MASTER_KEY_ID_LEN]);

impl MasterKeyId {
    /// Reads 32 hex digits, as [`Display`](std::fmt::Display) writes them.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl std::fmt::Display for MasterKeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// A per-record data key (DEK): seals that record's secrets; stored only wrapped by the KEK.
#[derive(Clone)]
pub struct DataKey(Redacted<[u8; KEY_LEN]>);

impl DataKey {
    pub fn generate() -> Self {
        Self(Redacted::new(random_bytes()))
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        seal(self.0.expose(), aad, plaintext)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        open(self.0.expose(), aad, sealed)
    }

    /// The raw key, for keyed hashes derived from it.
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        self.0.expose()
    }

    /// A subkey for another purpose, bound to `label` (HKDF-Expand with HMAC-SHA256, RFC 5869
    /// §2.3, this key as the PRK): one stored key can then serve a cipher and a MAC without the
    /// same bytes keying both.
    pub fn derive(&self, label: &[u8]) -> DataKey {
        let prk = KeyedHasher::new(self);
        let first = prk.hash(&[label, &[1]]);
        let second = prk.hash(&[&first, label, &[2]]);
        let mut out = [0u8; KEY_LEN];
        out[..32].copy_from_slice(&first);
        out[32..].copy_from_slice(&second);
        DataKey(Redacted::new(out))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_length_check() {
        let k = MasterKey::generate();
        let text = k.to_base64();
        assert!(MasterKey::from_base64(text.expose()).is_ok());
        assert!(matches!(
            MasterKey::from_base64(&STANDARD.encode([0u8; 32])),
            Err(MasterKeyError::BadLength(32))
        ));
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(MasterKeyError::BadEncoding)
        ));
    }

    #[test]
    fn wrapped_key_opens_only_with_its_kek_and_binding() {
        let kek = MasterKey::generate();
        let dek = DataKey::generate();
        let wrapped = kek.wrap(&dek, b"cred_1").unwrap();
        let back = kek.unwrap_key(&wrapped, b"cred_1").unwrap();
        let sealed = dek.seal(b"ad", b"secret").unwrap();
        assert_eq!(back.open(b"ad", &sealed).unwrap(), b"secret");
        assert!(kek.unwrap_key(&wrapped, b"cred_2").is_err());
        assert!(
            MasterKey::generate()
                .unwrap_key(&wrapped, b"cred_1")
                .is_err()
        );
    }

    #[test]
    fn the_id_names_the_key_and_nothing_else() {
        let key = MasterKey::generate();
        assert_eq!(key.id(), key.clone().id());
        assert_ne!(key.id(), MasterKey::generate().id());
        let text = key.id().to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(MasterKeyId::from_hex(&text), Some(key.id()));
        assert_eq!(MasterKeyId::from_hex("00"), None);
    }

    #[test]
    fn derived_keys_depend_on_the_key_and_the_label() {
        let key = DataKey::generate();
        let a = key.derive(b"a");
        assert_eq!(a.bytes(), key.derive(b"a").bytes());
        assert_ne!(a.bytes(), key.derive(b"b").bytes());
        assert_ne!(a.bytes(), key.bytes());
        assert_ne!(a.bytes(), DataKey::generate().derive(b"a").bytes());
        assert_ne!(a.bytes()[..32], a.bytes()[32..]);
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        assert_eq!(
            format!("{:?}", MasterKey::generate()),
            "MasterKey([redacted])"
        );
        assert_eq!(format!("{:?}", DataKey::generate()), "DataKey([redacted])");
    }
}
