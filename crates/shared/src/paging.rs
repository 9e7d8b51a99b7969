//! Cursor pagination. Lists are ordered by a stable key (usually the UUID v7 id, which is
//! time-ordered) and a page ends with an opaque cursor naming the last key returned.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Classify, ErrorKind, FieldError};

/// Items per page when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page a caller may ask for.
pub const MAX_LIMIT: u32 = 200;

const CURSOR_VERSION: &str = "v1:";

/// An opaque position in a list: the sort key of the last item already returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    /// The cursor that resumes after the item whose sort key is `key`.
    pub fn after(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The sort key this cursor resumes after.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.0
    }

    /// The token handed to clients.
    #[must_use]
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}{}", self.0))
    }

    /// Reads a token produced by [`Cursor::encode`].
    ///
    /// # Errors
    /// [`PagingError::BadCursor`] when the token was not produced by us.
    pub fn decode(token: &str) -> Result<Self, PagingError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| PagingError::BadCursor)?;
        let text = String::from_utf8(bytes).map_err(|_| PagingError::BadCursor)?;
        text.strip_prefix(CURSOR_VERSION)
            .map(|key| Self(key.to_owned()))
            .ok_or(PagingError::BadCursor)
    }
}

/// What page of a list the caller wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    limit: u32,
    after: Option<Cursor>,
}

impl PageRequest {
    /// Validates the raw query values.
    ///
    /// # Errors
    /// [`PagingError::Limit`] for a limit of 0 or above [`MAX_LIMIT`]; [`PagingError::BadCursor`]
    /// for a cursor we did not issue.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, PagingError> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(PagingError::Limit);
        }
        let after = cursor
            .filter(|c| !c.is_empty())
            .map(Cursor::decode)
            .transpose()?;
        Ok(Self { limit, after })
    }

    /// The first page with the default size.
    #[must_use]
    pub fn first() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }

    /// How many items at most.
    #[must_use]
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Resume after this position, if any.
    #[must_use]
    pub fn after(&self) -> Option<&Cursor> {
        self.after.as_ref()
    }
}

/// One page of a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in list order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched rows: the extra row only proves there is more.
    pub fn from_overfetch(
        mut rows: Vec<T>,
        request: &PageRequest,
        key: impl Fn(&T) -> String,
    ) -> Self {
        let limit = request.limit() as usize;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        let next = if has_more {
            rows.last().map(|last| Cursor::after(key(last)))
        } else {
            None
        };
        Self { items: rows, next }
    }

    /// Converts the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// Bad paging parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    /// Limit out of range.
    #[error("limit must be between 1 and {MAX_LIMIT}")]
    Limit,
    /// A cursor we did not hand out.
    #[error("cursor is not valid for this list")]
    BadCursor,
}

impl Classify for PagingError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Invalid
    }
    fn field_errors(&self) -> Vec<FieldError> {
        match self {
            Self::Limit => vec![FieldError::new("limit", "range", self.to_string())],
            Self::BadCursor => vec![FieldError::new("cursor", "cursor", self.to_string())],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let cursor = Cursor::after("0193-abc");
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn foreign_cursors_are_rejected() {
        assert_eq!(Cursor::decode("!!!"), Err(PagingError::BadCursor));
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode("v0:x")),
            Err(PagingError::BadCursor)
        );
    }

    #[test]
    fn limit_is_bounded() {
        assert_eq!(PageRequest::parse(Some(0), None), Err(PagingError::Limit));
        assert_eq!(
            PageRequest::parse(Some(MAX_LIMIT + 1), None),
            Err(PagingError::Limit)
        );
        assert_eq!(
            PageRequest::parse(None, None).unwrap().limit(),
            DEFAULT_LIMIT
        );
    }

    #[test]
    fn overfetch_yields_cursor_only_when_more_rows_exist() {
        let request = PageRequest::parse(Some(2), None).unwrap();
        let page = Page::from_overfetch(vec![1, 2, 3], &request, ToString::to_string);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next, Some(Cursor::after("2")));
        let last = Page::from_overfetch(vec![1, 2], &request, ToString::to_string);
        assert_eq!(last.next, None);
    }
}
