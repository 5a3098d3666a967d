//! The provider catalog (static data) and the pure validation of everything that depends on a
//! provider: its credential fields, its base URL and its residency. No I/O: probes, sealing and
//! the per-provider base-URL overrides of the server's configuration live elsewhere.
//!
//! Error messages never echo a credential value, and echo a field *name* only when it looks like
//! one (a pasted key used as a map key must not come back in an error).
//!
//! - `catalog`: the providers, their fields and rules, lookups by id;
//! - `fields`: credential fields, secrets and settings, the secret hint, the `api_key` shorthand;
//! - `address`: base URLs, URL checks and the plain-http rule;
//! - `region`: region names, `declared_region` and residency;
//! - `error`: [`FieldError`], the one error of this module.
//!
//! Must not import `domain::credential` (the credential depends on the providers, never the
//! reverse: it converts a [`FieldError`] into its own error), crypto, storage, service or HTTP.

mod address;
mod catalog;
mod error;
mod fields;
mod region;

pub use address::{MAX_URL_LEN, is_local_ip, validate_url};
pub use catalog::{
    ApiStyle, BaseUrlRule, FieldKind, FieldSpec, GLOBAL, Provider, Residency, catalog, get,
    provider,
};
pub use error::FieldError;
pub use fields::{
    MAX_JSON_SECRET_LEN, MAX_SECRET_LEN, MAX_SETTING_LEN, MIN_HINT_SOURCE_LEN, ProviderCredentials,
    merge_api_key, secret_hint,
};
pub use region::{MAX_REGION_LEN, validate_region};

#[cfg(test)]
mod test_support {
    use super::{FieldError, Provider, get};

    pub(super) fn param_of<T: std::fmt::Debug>(result: Result<T, FieldError>) -> String {
        match result {
            Err(FieldError { param, .. }) => param,
            other => panic!("expected a FieldError, got {other:?}"),
        }
    }

    pub(super) fn p(id: &str) -> &'static Provider {
        get(id).unwrap()
    }
}
