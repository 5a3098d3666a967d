//! Paging as the query string carries it: the `cursor` parameter, whose cursors `service`
//! issues and checks (signed for the listing they resume; clients must not build them, and one
//! the server did not issue for this listing is a 400), and the `limit` parameter, checked
//! against the one page-size rule in `service::page`.

use super::error::{ApiError, ErrorCode};
use crate::service::cursor::InvalidCursor;
use crate::service::page;

/// The `limit` query parameter as a page size; out of range is a 400 naming `limit`.
pub fn limit(requested: Option<usize>) -> Result<usize, ApiError> {
    page::page_size(requested)
        .map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.to_string()).with_param("limit"))
}

/// The answer to a cursor that the server did not issue for the listing it was sent to.
impl From<InvalidCursor> for ApiError {
    fn from(e: InvalidCursor) -> Self {
        ApiError::new(ErrorCode::InvalidQuery, e.to_string()).with_param("cursor")
    }
}
