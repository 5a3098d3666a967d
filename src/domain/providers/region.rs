//! Region names and residency: a credential's `declared_region` against its provider's rule,
//! and the residency resolve's `residency` filter matches on.
//!
//! Must not import `domain::credential`, crypto, storage or HTTP; no I/O.

use super::catalog::{GLOBAL, Provider, Residency};
use super::error::FieldError;

/// Longest accepted region name (`eu`, `india`, `us-east-1`, `europe-west4`…).
pub const MAX_REGION_LEN: usize = 32;

impl Provider {
    /// Checks `declared_region` (required for self_hosted).
    pub fn validate_declared_region(
        &self,
        raw: Option<&str>,
    ) -> Result<Option<String>, FieldError> {
        match raw {
            None if self.residency == Residency::Declared => Err(FieldError::new(
                "declared_region",
                format!(
                    "{} requires a declared_region (where the server runs, for example eu)",
                    self.id
                ),
            )),
            None => Ok(None),
            Some(raw) => validate_region("declared_region", raw).map(Some),
        }
    }

    /// The residency resolve matches on: the credential's declared region if it has one, else
    /// the provider's.
    pub fn residency_for(&self, declared_region: Option<&str>) -> String {
        match (declared_region, self.residency) {
            (Some(declared), _) => declared.to_owned(),
            (None, Residency::Region(region)) => region.to_owned(),
            // Unreachable for a validated credential; never claim a region nobody declared.
            (None, Residency::Declared) => GLOBAL.to_owned(),
        }
    }
}

/// Checks a region name: 1 to 32 characters of `a-z`, `0-9` and `-`, starting with a letter or
/// digit (`eu`, `india`, `us-east-1`, `europe-west4`).
pub fn validate_region(param: &str, raw: &str) -> Result<String, FieldError> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_REGION_LEN
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !raw.starts_with('-');
    if !ok {
        return Err(FieldError::new(
            param,
            format!(
                "{param} must be 1 to {MAX_REGION_LEN} lower-case letters, digits or '-', \
                 for example eu or us-east-1"
            ),
        ));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use crate::domain::providers::test_support::{p, param_of};

    #[test]
    fn declared_region_and_residency() {
        let own = p("self_hosted");
        assert_eq!(
            param_of(own.validate_declared_region(None)),
            "declared_region"
        );
        assert_eq!(
            own.validate_declared_region(Some("eu")).unwrap(),
            Some("eu".to_owned())
        );
        for bad in ["", "EU", "eu west", "-eu", &"a".repeat(33)] {
            assert_eq!(
                param_of(own.validate_declared_region(Some(bad))),
                "declared_region",
                "{bad}"
            );
        }
        assert_eq!(p("openai").validate_declared_region(None).unwrap(), None);
        assert_eq!(own.residency_for(Some("eu")), "eu");
        assert_eq!(p("mistral").residency_for(None), "eu");
        assert_eq!(p("sarvam").residency_for(None), "india");
        assert_eq!(p("openai").residency_for(None), "global");
        assert_eq!(p("openai").residency_for(Some("eu")), "eu");
    }
}
