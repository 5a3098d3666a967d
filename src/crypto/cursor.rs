//! Tamper-evident page cursors: a value the server hands a client to resume a listing, with a
//! keyed MAC over it and over what it was issued for, so that the server recognises the cursors
//! it issued and refuses every other (forged, altered, or issued for another listing). The MAC
//! is HMAC-SHA256 under a key the store derives for cursors alone, truncated to 128 bits and
//! compared in constant time. What a cursor resumes and whose listing it belongs to are the
//! caller's; this module only signs and checks bytes.

use subtle::ConstantTimeEq;

use super::{DataKey, KeyedHasher};

/// Bytes of MAC a cursor carries.
pub const TAG_LEN: usize = 16;
/// The first byte of every cursor: the format, so that a later one can be told apart.
const FORMAT_V1: u8 = 1;

/// Signs and checks cursors under one key.
#[derive(Clone)]
pub struct CursorMac(KeyedHasher);

impl CursorMac {
    pub fn new(key: &DataKey) -> Self {
        Self(KeyedHasher::new(key))
    }

    /// The MAC of `value` issued for `binding`: both length-prefixed, so that no two pairs are
    /// signed alike.
    fn tag(&self, binding: &[u8], value: &[u8]) -> [u8; 32] {
        let (b, v) = (
            (binding.len() as u64).to_be_bytes(),
            (value.len() as u64).to_be_bytes(),
        );
        self.0
            .hash(&[b"keyledger/cursor\0", &[FORMAT_V1], &b, binding, &v, value])
    }

    /// A cursor resuming at `value`, for the listing named by `binding`: format, value, MAC.
    pub fn seal(&self, binding: &[u8], value: &[u8]) -> Vec<u8> {
        let tag = self.tag(binding, value);
        [&[FORMAT_V1][..], value, &tag[..TAG_LEN]].concat()
    }

    /// The value of a cursor issued for `binding` by [`seal`](Self::seal) under this key;
    /// `None` for anything else.
    pub fn open<'a>(&self, binding: &[u8], cursor: &'a [u8]) -> Option<&'a [u8]> {
        let (format, rest) = cursor.split_first()?;
        if *format != FORMAT_V1 || rest.len() < TAG_LEN {
            return None;
        }
        let (value, tag) = rest.split_at(rest.len() - TAG_LEN);
        let expected = self.tag(binding, value);
        bool::from(expected[..TAG_LEN].ct_eq(tag)).then_some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_only_for_its_binding_and_key() {
        let key = DataKey::generate();
        let mac = CursorMac::new(&key);
        let cursor = mac.seal(b"events/acct_1", b"42");
        assert_eq!(mac.open(b"events/acct_1", &cursor), Some(&b"42"[..]));
        assert_eq!(
            CursorMac::new(&key).open(b"events/acct_1", &cursor),
            Some(&b"42"[..])
        );
        assert_eq!(mac.open(b"events/acct_2", &cursor), None);
        assert_eq!(
            CursorMac::new(&DataKey::generate()).open(b"events/acct_1", &cursor),
            None
        );
        for i in 0..cursor.len() {
            let mut altered = cursor.clone();
            altered[i] ^= 1;
            assert_eq!(mac.open(b"events/acct_1", &altered), None, "byte {i}");
        }
        for short in [&b""[..], &[FORMAT_V1], &cursor[..TAG_LEN]] {
            assert_eq!(mac.open(b"events/acct_1", short), None);
        }
        // The empty value is a value too.
        let empty = mac.seal(b"x", b"");
        assert_eq!(mac.open(b"x", &empty), Some(&b""[..]));
    }

    #[test]
    fn binding_and_value_cannot_trade_bytes() {
        let mac = CursorMac::new(&DataKey::generate());
        let a = mac.seal(b"ab", b"c");
        let b = mac.seal(b"a", b"bc");
        assert_ne!(a[a.len() - TAG_LEN..], b[b.len() - TAG_LEN..]);
    }
}
