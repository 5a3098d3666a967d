//! Paging as the query string carries it: opaque cursors (base64url of the position the next
//! page starts after; clients must not build them, and a malformed one is a 400) and the `limit`
//! parameter, checked against the one page-size rule in `service::page`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::{ApiError, ErrorCode};
use crate::service::page;

/// The `limit` query parameter as a page size; out of range is a 400 naming `limit`.
pub fn limit(requested: Option<usize>) -> Result<usize, ApiError> {
    page::page_size(requested)
        .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.to_string()).with_param("limit"))
}

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
