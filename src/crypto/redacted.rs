use std::collections::BTreeMap;
use std::fmt;

use subtle::ConstantTimeEq;

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
///
/// Reaching the inner value takes an explicit `expose()`, which makes every place that handles
/// plaintext easy to find.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Redacted<BTreeMap<String, String>> {
    /// Whether `other` holds exactly these secret fields with these values. The field names are
    /// not secret; each value is compared in constant time.
    pub fn same_secrets(&self, other: &BTreeMap<String, String>) -> bool {
        self.0.len() == other.len()
            && self.0.iter().all(|(name, value)| {
                other
                    .get(name)
                    .is_some_and(|v| bool::from(v.as_bytes().ct_eq(value.as_bytes())))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_secrets_needs_every_field_and_value() {
        let fields = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let held = Redacted::new(fields(&[("access_key", "AKIA1"), ("secret_key", "s3")]));
        assert!(held.same_secrets(&fields(&[("access_key", "AKIA1"), ("secret_key", "s3")])));
        assert!(!held.same_secrets(&fields(&[("access_key", "AKIA1"), ("secret_key", "s4")])));
        assert!(!held.same_secrets(&fields(&[("access_key", "AKIA1")])));
        assert!(!held.same_secrets(&fields(&[("access_key", "AKIA1"), ("other", "s3")])));
        assert!(Redacted::new(BTreeMap::new()).same_secrets(&BTreeMap::new()));
    }

    #[test]
    fn never_prints_the_value() {
        let secret = Redacted::new("sk-live-canary".to_string());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(secret.expose(), "sk-live-canary");
    }
}
