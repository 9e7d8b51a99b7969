//! Cursor pagination. Lists are ordered by their UUID v7 id (time-ordered), and a page ends with
//! a cursor: the id of the last item returned. Any id is a valid position (the next page starts
//! after it, whether or not that item still exists), so the cursor's whole contract is "a UUID",
//! which the OpenAPI document can state exactly.

use uuid::Uuid;

use crate::error::{Classify, ErrorKind, FieldError};

/// Items per page when the caller does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest page a caller may ask for.
pub const MAX_LIMIT: u32 = 200;

/// A position in a list: the id of the last item already returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(Uuid);

impl Cursor {
    /// The cursor that resumes after the item whose id is `id`.
    #[must_use]
    pub fn after(id: Uuid) -> Self {
        Self(id)
    }

    /// The id this cursor resumes after.
    #[must_use]
    pub fn id(&self) -> Uuid {
        self.0
    }

    /// The token handed to clients (the id, hyphenated).
    #[must_use]
    pub fn encode(&self) -> String {
        self.0.to_string()
    }

    /// Reads a token: any UUID.
    ///
    /// # Errors
    /// [`PagingError::BadCursor`] when the token is not a UUID.
    pub fn decode(token: &str) -> Result<Self, PagingError> {
        Uuid::parse_str(token)
            .map(Self)
            .map_err(|_| PagingError::BadCursor)
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
        key: impl Fn(&T) -> Uuid,
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
    /// A cursor that is not an id.
    #[error("cursor must be the id (a UUID) of the last item of the previous page")]
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
        let cursor = Cursor::after(Uuid::now_v7());
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn cursors_that_are_not_ids_are_rejected() {
        assert_eq!(Cursor::decode("!!!"), Err(PagingError::BadCursor));
        assert_eq!(Cursor::decode("djE6eA"), Err(PagingError::BadCursor));
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
        let id = |n: &u128| Uuid::from_u128(*n);
        let page = Page::from_overfetch(vec![1, 2, 3], &request, id);
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next, Some(Cursor::after(Uuid::from_u128(2))));
        let last = Page::from_overfetch(vec![1, 2], &request, id);
        assert_eq!(last.next, None);
    }
}
