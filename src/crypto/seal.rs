//! AES-256-SIV sealing.
//!
//! Sealed layout: `version (1 byte) || nonce (16 bytes) || SIV tag and ciphertext`.
//! The associated-data vector handed to SIV is `[aad, nonce]`: the caller's associated data binds
//! the ciphertext to its record (account, record id, version), and a random nonce goes last (RFC
//! 5297 §3), so two seals of the same plaintext differ.

use aes_siv::KeyInit;
use aes_siv::siv::Aes256Siv;

use super::random_bytes;

const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("the key is not 64 bytes")]
    BadKey,
    #[error("the cipher refused to seal the value")]
    Unsealable,
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value does not open with this key and associated data")]
    Forged,
}

/// Seals `plaintext` under a 64-byte AES-256-SIV key, bound to `aad`.
pub fn seal(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut cipher = Aes256Siv::new_from_slice(key).map_err(|_| SealError::BadKey)?;
    let nonce: [u8; NONCE_LEN] = random_bytes();
    let body = cipher
        .encrypt([aad, &nonce[..]], plaintext)
        .map_err(|_| SealError::Unsealable)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a value made by [`seal`] with the same key and associated data.
pub fn open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut cipher = Aes256Siv::new_from_slice(key).map_err(|_| SealError::BadKey)?;
    let (version, rest) = sealed.split_first().ok_or(SealError::Malformed)?;
    if *version != FORMAT_V1 || rest.len() < NONCE_LEN + 16 {
        return Err(SealError::Malformed);
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    cipher
        .decrypt([aad, nonce], body)
        .map_err(|_| SealError::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> [u8; 64] {
        random_bytes()
    }

    #[test]
    fn round_trip() {
        let k = key();
        let sealed = seal(&k, b"acct_1/cred_1/v1", b"sk-secret").unwrap();
        assert_eq!(
            open(&k, b"acct_1/cred_1/v1", &sealed).unwrap(),
            b"sk-secret"
        );
    }

    #[test]
    fn moved_to_another_record_fails_to_open() {
        let k = key();
        let sealed = seal(&k, b"acct_1/cred_1/v1", b"sk-secret").unwrap();
        for other in [
            &b"acct_2/cred_1/v1"[..],
            b"acct_1/cred_2/v1",
            b"acct_1/cred_1/v2",
        ] {
            assert_eq!(open(&k, other, &sealed), Err(SealError::Forged));
        }
    }

    #[test]
    fn a_flipped_bit_fails_to_open() {
        let k = key();
        let sealed = seal(&k, b"ad", b"sk-secret").unwrap();
        for i in 1..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert_eq!(
                open(&k, b"ad", &tampered),
                Err(SealError::Forged),
                "byte {i}"
            );
        }
    }

    #[test]
    fn two_seals_of_the_same_secret_differ() {
        let k = key();
        let a = seal(&k, b"ad", b"sk-secret").unwrap();
        let b = seal(&k, b"ad", b"sk-secret").unwrap();
        assert_ne!(a, b);
        assert_eq!(open(&k, b"ad", &a).unwrap(), open(&k, b"ad", &b).unwrap());
    }

    #[test]
    fn another_key_fails_to_open() {
        let sealed = seal(&key(), b"ad", b"sk-secret").unwrap();
        assert_eq!(open(&key(), b"ad", &sealed), Err(SealError::Forged));
    }

    #[test]
    fn truncated_or_unknown_format_is_malformed() {
        let k = key();
        let sealed = seal(&k, b"ad", b"x").unwrap();
        assert_eq!(open(&k, b"ad", &sealed[..10]), Err(SealError::Malformed));
        assert_eq!(open(&k, b"ad", &[]), Err(SealError::Malformed));
        let mut other = sealed.clone();
        other[0] = 9;
        assert_eq!(open(&k, b"ad", &other), Err(SealError::Malformed));
    }
}
