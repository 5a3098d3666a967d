//! Opaque page cursors: base64url of the position the next page starts after. Clients must not
//! build them; a malformed one is a 400.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::{ApiError, ErrorCode};

pub fn encode(after: &str) -> String {
    URL_SAFE_NO_PAD.encode(after)
}

pub fn decode(cursor: &str) -> Result<String, ApiError> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuery,
                "cursor is not one this server issued",
            )
            .with_param("cursor")
        })
}
