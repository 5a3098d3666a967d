//! The error of provider validation, and the rule for which names an error message may repeat.
//!
//! Must not import `domain::credential`: the credential converts a [`FieldError`] into its own
//! error, so the dependency points one way. No I/O.

/// A request field is wrong for its provider; `param` is its dotted path (`provider`,
/// `credentials.api_key`, `base_url`, `declared_region`). The message never contains a secret.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct FieldError {
    pub param: String,
    pub message: String,
}

impl FieldError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// Whether a name may be repeated in an error message: short and identifier-like, so it cannot
/// be a pasted secret of any length worth protecting.
pub(super) fn looks_like_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
