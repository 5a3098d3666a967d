//! The credential's error: what a command on a credential can be refused with.
//!
//! Must not import crypto, storage or HTTP.

use crate::domain::providers::FieldError;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("the credential already exists")]
    AlreadyExists,
    #[error("no such credential")]
    NotFound,
    /// Revocation is final: nothing but another (no-op) revoke is accepted afterwards.
    #[error("the credential is revoked; a revoked credential cannot be changed")]
    Revoked,
    /// `rotate/commit` named a stage that is not the pending one (unknown, replaced, committed
    /// or retired).
    #[error(
        "no pending stage of this credential has this stage_id; it may have been replaced, committed or retired"
    )]
    StageUnknown,
    #[error("the stage expired; stage the secret again")]
    StageExpired,
    #[error("the staged secret failed its probe; commit with force: true to promote it anyway")]
    StageProbeFailed,
    #[error(
        "there is no previous secret to roll back to (none was kept, or its rollback window closed)"
    )]
    NothingToRollBack,
    /// An update would send the secret to a new address, and its caller neither holds `admin`
    /// nor showed the current secret (docs/adr/0036). `param` is the address field.
    #[error("{message}")]
    AddressNeedsProof { param: String, message: String },
    /// A request field is wrong; `param` is its dotted path (`credentials.api_key`,
    /// `models[2]`, `base_url`). The message never contains a secret.
    #[error("{message}")]
    Invalid { param: String, message: String },
}

impl CredentialError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// A provider's field error is the credential's `Invalid`, with the same `param` and message.
impl From<FieldError> for CredentialError {
    fn from(FieldError { param, message }: FieldError) -> Self {
        Self::Invalid { param, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_error_keeps_its_param_and_message() {
        let error = CredentialError::from(FieldError::new("credentials.api_key", "too long"));
        assert_eq!(
            error,
            CredentialError::invalid("credentials.api_key", "too long")
        );
        assert_eq!(error.to_string(), "too long");
    }
}
