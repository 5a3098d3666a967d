//! Minting ids: the one generator of the process, reading the service's clock. The domain's typed
//! ids (`domain::ids`) are made here from ULIDs and handed to the domain in commands; request ids
//! (`req_<ULID>`) are made here for the HTTP edge.
//!
//! Monotonic: an id minted later sorts later, even within one millisecond, so listings ordered by
//! id are in creation order. With `storage` (event ids), the only module that imports `ulid`;
//! imports nothing of keyledger but the domain's ids and the clock.

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use ulid::{Generator, Ulid};

use super::clock::SharedClock;
use crate::domain::{AccountId, CredentialId, KeyId, StageId, WebhookId};

/// Prefix of request ids (`req_01J…`), as the `X-Request-ID` header and events carry them.
pub const REQUEST_ID_PREFIX: &str = "req";

pub struct Ids {
    clock: SharedClock,
    generator: Mutex<Generator>,
}

impl Ids {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            clock,
            generator: Mutex::new(Generator::new()),
        }
    }

    /// The next ULID, timed by the clock. The generator holds only the last ULID, so a lock
    /// poisoned by a panic elsewhere is still sound to use.
    fn next(&self) -> Ulid {
        let at = SystemTime::from(self.clock.now());
        let mut generator = self
            .generator
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The generator refuses only after 2^80 ids in one millisecond; a fresh random ULID of
        // the same millisecond is then still unique, if no longer ordered.
        generator
            .generate_from_datetime(at)
            .unwrap_or_else(|_| Ulid::from_datetime(at))
    }

    pub fn account(&self) -> AccountId {
        AccountId::from_ulid(self.next().into())
    }

    pub fn key(&self) -> KeyId {
        KeyId::from_ulid(self.next().into())
    }

    pub fn credential(&self) -> CredentialId {
        CredentialId::from_ulid(self.next().into())
    }

    pub fn stage(&self) -> StageId {
        StageId::from_ulid(self.next().into())
    }

    pub fn webhook(&self) -> WebhookId {
        WebhookId::from_ulid(self.next().into())
    }

    /// A webhook message id (`msg_<ULID>`) for a delivery that is no event of the log (a ping).
    pub fn message(&self) -> String {
        format!("msg_{}", self.next())
    }

    /// A new request id, for a request that did not bring its own.
    pub fn request(&self) -> String {
        format!("{REQUEST_ID_PREFIX}_{}", self.next())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::service::clock::FixedClock;

    #[test]
    fn ids_follow_the_clock_and_sort_in_minting_order() {
        let at = Utc.timestamp_millis_opt(1_700_000_000_123).unwrap();
        let ids = Ids::new(Arc::new(FixedClock(at)));
        let minted: Vec<CredentialId> = (0..100).map(|_| ids.credential()).collect();
        assert!(minted.windows(2).all(|w| w[0] < w[1]), "{minted:?}");
        for id in &minted {
            let ulid = id.as_str().strip_prefix("byok_").unwrap();
            let ulid = Ulid::from_string(ulid).unwrap();
            assert_eq!(ulid.timestamp_ms(), 1_700_000_000_123);
            // The domain writes the ULID exactly as the ULID crate does.
            assert_eq!(id.as_str(), format!("byok_{ulid}"));
            assert_eq!(CredentialId::parse(id.as_str()).as_ref(), Some(id));
        }
        assert!(AccountId::parse(ids.account().as_str()).is_some());
        assert!(KeyId::parse(ids.key().as_str()).is_some());
        assert!(ids.request().starts_with("req_"));
    }

    #[test]
    fn the_domain_encodes_any_ulid_as_the_ulid_crate_does() {
        for bits in [0, 1, u128::MAX, u128::MAX >> 3, 0x0123_4567_89ab_cdef << 40] {
            let ulid = Ulid(bits);
            assert_eq!(KeyId::from_ulid(bits).as_str(), format!("key_{ulid}"));
        }
        for _ in 0..1000 {
            let ulid = Ulid::new();
            assert_eq!(
                AccountId::from_ulid(ulid.into()).as_str(),
                format!("acct_{ulid}")
            );
        }
    }
}
