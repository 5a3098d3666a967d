//! The page-size rule every listing follows (credentials and event feeds alike), so the limits a
//! client is told about are defined once. Knows nothing of HTTP.

/// The page size when the client asks for none.
pub const DEFAULT_PAGE: usize = 50;
/// The largest page a client may ask for.
pub const MAX_PAGE: usize = 500;

/// A page size outside 1 to [`MAX_PAGE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("limit must be 1 to {MAX_PAGE}")]
pub struct PageSizeError;

/// The page size to read: the one asked for, or [`DEFAULT_PAGE`].
pub fn page_size(requested: Option<usize>) -> Result<usize, PageSizeError> {
    let size = requested.unwrap_or(DEFAULT_PAGE);
    if (1..=MAX_PAGE).contains(&size) {
        Ok(size)
    } else {
        Err(PageSizeError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_to_the_maximum_with_a_default() {
        assert_eq!(page_size(None), Ok(DEFAULT_PAGE));
        assert_eq!(page_size(Some(1)), Ok(1));
        assert_eq!(page_size(Some(MAX_PAGE)), Ok(MAX_PAGE));
        assert_eq!(page_size(Some(0)), Err(PageSizeError));
        assert_eq!(page_size(Some(MAX_PAGE + 1)), Err(PageSizeError));
        assert_eq!(PageSizeError.to_string(), "limit must be 1 to 500");
    }
}
