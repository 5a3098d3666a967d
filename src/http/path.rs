//! Typed ids from request paths (`/v1/byok/get/{id}`, `/v1/account/keys/{id}`). A path segment
//! that is not an id of the route's kind names nothing, so it is answered exactly as an id that
//! names nothing is: the same 404 and envelope. Handlers parse where they would have looked the
//! id up, after authentication, headers, body and idempotency key, so the order in which problems
//! are reported does not depend on the id's shape. Uses the domain's ids and the service's
//! not-found answers; nothing else.

use super::error::ApiError;
use crate::domain::account::AccountError;
use crate::domain::credential::CredentialError;
use crate::domain::{CredentialId, KeyId};
use crate::service::ServiceError;

pub fn credential_id(segment: &str) -> Result<CredentialId, ApiError> {
    CredentialId::parse(segment).ok_or_else(|| ServiceError::from(CredentialError::NotFound).into())
}

pub fn webhook_id(segment: &str) -> Result<crate::domain::WebhookId, ApiError> {
    crate::domain::WebhookId::parse(segment)
        .ok_or_else(|| ServiceError::NotFound("no such webhook").into())
}

pub fn key_id(segment: &str) -> Result<KeyId, ApiError> {
    KeyId::parse(segment).ok_or_else(|| ServiceError::from(AccountError::KeyNotFound).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::error::ErrorCode;

    #[test]
    fn a_malformed_id_is_answered_as_an_unknown_one() {
        let cases: [(Result<(), ApiError>, ServiceError); 2] = [
            (
                credential_id("byok_nope").map(drop),
                CredentialError::NotFound.into(),
            ),
            (key_id("acct_x").map(drop), AccountError::KeyNotFound.into()),
        ];
        for (parsed, unknown) in cases {
            let (parsed, unknown) = (parsed.unwrap_err(), ApiError::from(unknown));
            assert_eq!(parsed.code, ErrorCode::ResourceMissing);
            assert_eq!(
                (parsed.code, parsed.message, parsed.param),
                (unknown.code, unknown.message, unknown.param)
            );
        }
        let id = CredentialId::from_ulid(42);
        assert_eq!(credential_id(id.as_str()).ok(), Some(id));
    }
}
