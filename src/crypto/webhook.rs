//! Webhook signing secrets and signatures, as the Standard Webhooks specification defines them:
//! a secret is `whsec_` + base64 of random bytes, and a signature is
//! `v1,<base64 of HMAC-SHA256(secret bytes, "<id>.<timestamp>.<body>")>` (docs/webhooks.md).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Redacted, random_bytes};

/// What every signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn generate_webhook_secret() -> Redacted<String> {
    let bytes: [u8; 32] = random_bytes();
    Redacted::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The key a secret signs with: the base64 after `whsec_` decoded; `None` for anything else.
pub fn webhook_secret_key(secret: &str) -> Option<Redacted<Vec<u8>>> {
    let encoded = secret.strip_prefix(SECRET_PREFIX)?;
    STANDARD.decode(encoded).ok().map(Redacted::new)
}

/// One signature, `v1,<base64>`, of a message with this id, timestamp (unix seconds) and body.
pub fn webhook_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot refuse one.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::from("v1,");
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_signs_as_published() {
        // The example of the Standard Webhooks specification.
        let key = webhook_secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            webhook_signature(
                key.expose(),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                body
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    /// The verifier docs/webhooks.md shows for Rust, as written there.
    fn documented_verify(
        secret: &str,
        id: &str,
        ts: &str,
        signatures: &str,
        body: &[u8],
        now: i64,
    ) -> bool {
        let fresh = ts.parse::<i64>().is_ok_and(|t| (now - t).abs() <= 300);
        let Some(key) = secret
            .strip_prefix("whsec_")
            .and_then(|k| STANDARD.decode(k).ok())
        else {
            return false;
        };
        fresh
            && signatures
                .split(' ')
                .filter_map(|s| s.strip_prefix("v1,"))
                .any(|sig| {
                    let Ok(sig) = STANDARD.decode(sig) else {
                        return false;
                    };
                    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&key) else {
                        return false;
                    };
                    mac.update(format!("{id}.{ts}.").as_bytes());
                    mac.update(body);
                    mac.verify_slice(&sig).is_ok()
                })
    }

    #[test]
    fn the_documented_rust_verifier_accepts_a_signature_and_refuses_bad_ones() {
        let secret = generate_webhook_secret();
        let key = webhook_secret_key(secret.expose()).unwrap();
        let body = br#"{"type":"webhook.ping"}"#;
        let sig = webhook_signature(key.expose(), "msg_1", 1_000, body);
        let verify =
            |sigs: &str, now| documented_verify(secret.expose(), "msg_1", "1000", sigs, body, now);
        assert!(verify(&sig, 1_000));
        assert!(verify(&format!("v1,AAAA {sig}"), 1_200));
        assert!(!verify("v1,", 1_000));
        assert!(!verify(&sig[..sig.len() - 4], 1_000));
        assert!(!verify(&sig, 1_301));
    }

    #[test]
    fn secrets_round_trip_to_their_key() {
        let secret = generate_webhook_secret();
        let key = webhook_secret_key(secret.expose()).unwrap();
        assert_eq!(key.expose().len(), 32);
        assert!(webhook_secret_key("nope").is_none());
    }
}
