//! Paging query parameters and the list envelope.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::paging::{Page, PageRequest, PagingError};

/// `?limit=&cursor=` on every list endpoint.
#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page: the id of its last item (any id is a valid position).
    #[param(value_type = Option<uuid::Uuid>)]
    pub cursor: Option<String>,
}

impl PageQuery {
    /// Validates the parameters.
    ///
    /// # Errors
    /// [`PagingError`] for an out-of-range limit or a foreign cursor.
    pub fn into_request(self) -> Result<PageRequest, PagingError> {
        PageRequest::parse(self.limit, self.cursor.as_deref())
    }
}

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageResponse<T: ToSchema> {
    /// The items of this page.
    pub data: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub next_cursor: Option<String>,
}

impl<T: ToSchema> PageResponse<T> {
    /// Converts a domain page, mapping each item to its DTO.
    pub fn from_page<U>(page: Page<U>, f: impl FnMut(U) -> T) -> Self {
        let next_cursor = page.next.as_ref().map(crate::paging::Cursor::encode);
        Self {
            data: page.items.into_iter().map(f).collect(),
            next_cursor,
        }
    }
}
