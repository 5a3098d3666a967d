//! Typed ids: `<prefix>_<ULID>`, one type per kind of thing, so that an account's id cannot be
//! passed where a key's or a credential's is expected. Each is a plain string on the wire and in
//! storage (`#[serde(transparent)]`): stored events and rows read and write exactly as before.
//!
//! The domain never mints an id: the service's generator does (`service::ids`), from a ULID
//! through `from_ulid`, and hands it over in a command. `parse` is for ids that come from outside
//! (request paths, index rows): it accepts the canonical form minted here and nothing else.
//! Deserialising does not check the form: whatever the log holds loads as written, including the
//! empty id of a shell aggregate (see `unnamed`).
//!
//! Imports serde and nothing else: no ULID crate, no clock, no randomness.

/// Crockford's base 32, as ULIDs are written: no I, L, O or U.
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID's length in characters.
const ULID_LEN: usize = 26;

/// The canonical text of a ULID: 26 characters, most significant first, 5 bits each (the first
/// holds the top 3).
fn encode_ulid(ulid: u128) -> String {
    (0..ULID_LEN)
        .rev()
        .map(|i| char::from(CROCKFORD[((ulid >> (5 * i)) & 0x1f) as usize]))
        .collect()
}

/// Whether `text` is a ULID as `encode_ulid` writes it: upper case, and a first character that
/// fits in 3 bits (anything above `7` would overflow 128 bits).
fn is_canonical_ulid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == ULID_LEN && bytes[0] <= b'7' && bytes.iter().all(|b| CROCKFORD.contains(b))
}

/// Defines an id type: one line per kind, as below.
macro_rules! prefixed_id {
    ($name:ident, $prefix:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(
            Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// What every id of this kind starts with, before the `_`.
            pub const PREFIX: &'static str = $prefix;

            /// The id with this ULID (its 128 bits, as `u128::from(ulid)` gives them).
            pub fn from_ulid(ulid: u128) -> Self {
                Self(format!("{}_{}", Self::PREFIX, encode_ulid(ulid)))
            }

            /// An id of this kind as written by `from_ulid`, or `None` for anything else (another
            /// kind's prefix, a malformed or non-canonical ULID).
            pub fn parse(text: &str) -> Option<Self> {
                let ulid = text.strip_prefix(Self::PREFIX)?.strip_prefix('_')?;
                is_canonical_ulid(ulid).then(|| Self(text.to_owned()))
            }

            /// The id of an aggregate whose log never named it: the empty string a shell
            /// aggregate carries (see the aggregates' `apply`). Equal to no minted or parsed id.
            pub fn unnamed() -> Self {
                Self(String::new())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id!(AccountId, "acct", "A tenant (`acct_…`).");
prefixed_id!(KeyId, "key", "An account's API key (`key_…`).");
prefixed_id!(CredentialId, "byok", "A provider credential (`byok_…`).");
prefixed_id!(
    StageId,
    "stage",
    "A staged secret rotation of a credential (`stage_…`)."
);
prefixed_id!(
    WebhookId,
    "wh",
    "A webhook endpoint of an account (`wh_…`)."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_prefix_and_the_canonical_ulid() {
        assert_eq!(
            AccountId::from_ulid(0).as_str(),
            "acct_00000000000000000000000000"
        );
        assert_eq!(
            KeyId::from_ulid(u128::MAX).as_str(),
            "key_7ZZZZZZZZZZZZZZZZZZZZZZZZZ"
        );
        let id = CredentialId::from_ulid(0x0191_2345_6789_abcd_ef01_2345_6789_abcd);
        assert_eq!(CredentialId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(id.to_string(), id.as_str());
        assert_eq!(String::from(id.clone()), id.as_str());
    }

    #[test]
    fn parse_takes_only_its_own_kind_in_canonical_form() {
        let ulid = "01M83WSGZCA5P4FYV8YQM5SFYW";
        assert!(AccountId::parse(&format!("acct_{ulid}")).is_some());
        for bad in [
            format!("key_{ulid}"),
            format!("acct{ulid}"),
            format!("acct-{ulid}"),
            format!("acct_{}", ulid.to_lowercase()),
            format!("acct_{}", &ulid[1..]),
            format!("acct_{ulid}0"),
            // Above 128 bits.
            format!("acct_8{}", &ulid[1..]),
            // Not in Crockford's alphabet.
            format!("acct_{}U", &ulid[1..]),
            format!("acct_{}O", &ulid[1..]),
            "acct_".to_owned(),
            String::new(),
        ] {
            assert_eq!(AccountId::parse(&bad), None, "{bad}");
        }
        assert_eq!(AccountId::parse(""), None);
        assert_ne!(Some(AccountId::unnamed()), AccountId::parse("acct_"));
    }

    #[test]
    fn ids_serialise_as_their_string() {
        let id = KeyId::from_ulid(7);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), id);
        // Stored data loads as written, whatever it holds.
        assert_eq!(
            serde_json::from_str::<KeyId>("\"\"").unwrap(),
            KeyId::unnamed()
        );
    }
}
