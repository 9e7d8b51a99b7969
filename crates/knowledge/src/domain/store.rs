//! OpenAI's vector-store API as this context models it. A vector store *is* a knowledge base;
//! what OpenAI adds lives here: files uploaded on their own and attached to stores later, the
//! settings a store has that a base has not (metadata, expiry, last activity), batches of
//! attached files, filters over a file's attributes and list windows (`after`/`before`, either
//! order).

use chrono::{DateTime, Utc};
use maas_user::contract::UserId;
use serde_json::{Map, Value};

use super::base::{BaseId, Chunking, ChunkingStrategy};
use super::document::{DocumentStatus, MAX_METADATA_KEYS};
use super::errors::InvalidValue;

maas_shared::define_id!(
    /// Identifies an uploaded file (`file-…` on the wire).
    FileId
);

maas_shared::define_id!(
    /// Identifies a batch of files attached to a store (`vsfb_…` on the wire).
    BatchId
);

/// The purposes a file may be uploaded for: this platform keeps files for vector stores.
pub const PURPOSES: [&str; 2] = ["assistants", "user_data"];

/// A file uploaded through `/v1/files`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// Id.
    pub id: FileId,
    /// Who uploaded it.
    pub owner: UserId,
    /// The name given (metadata only).
    pub file_name: String,
    /// One of [`PURPOSES`].
    pub purpose: String,
    /// Size.
    pub bytes: u64,
    /// The part's media type, if one was given.
    pub media_type: Option<String>,
    /// Hex SHA-256 of the bytes.
    pub content_hash: String,
    /// Where the bytes are in the blob store.
    pub storage_key: String,
    /// Uploaded.
    pub created_at: DateTime<Utc>,
}

/// Validates a purpose.
///
/// # Errors
/// [`InvalidValue`] on `purpose`.
pub fn parse_purpose(raw: &str) -> Result<String, InvalidValue> {
    if PURPOSES.contains(&raw) {
        Ok(raw.to_owned())
    } else {
        Err(InvalidValue::new(
            "purpose",
            "must be `assistants` or `user_data` (files here feed vector stores)",
        ))
    }
}

/// What a store has beyond its base.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreSettings {
    /// Up to 16 string pairs.
    pub metadata: Map<String, Value>,
    /// Expires this many days after its last activity (never when `None`).
    pub expires_after_days: Option<u32>,
    /// Last search or file attached.
    pub last_active_at: DateTime<Utc>,
}

impl StoreSettings {
    /// The settings of a base that has none stored.
    #[must_use]
    pub fn of_base(created_at: DateTime<Utc>) -> Self {
        Self {
            metadata: Map::new(),
            expires_after_days: None,
            last_active_at: created_at,
        }
    }

    /// When the store expires, if it does.
    #[must_use]
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_after_days
            .map(|d| self.last_active_at + chrono::Duration::days(i64::from(d)))
    }

    /// Whether it has expired at `now`.
    #[must_use]
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at().is_some_and(|at| at <= now)
    }
}

/// Validates a store's metadata: at most 16 keys of 1 to 64 characters with string values of
/// at most 512 characters (OpenAI's rule).
///
/// # Errors
/// [`InvalidValue`] on `metadata`.
pub fn parse_store_metadata(value: &Value) -> Result<Map<String, Value>, InvalidValue> {
    const RULE: &str = "must be an object of at most 16 keys (1 to 64 characters) with string values of at most 512 characters";
    let Value::Object(map) = value else {
        return Err(InvalidValue::new("metadata", RULE));
    };
    let ok = map.len() <= MAX_METADATA_KEYS
        && map.iter().all(|(k, v)| {
            (1..=64).contains(&k.chars().count())
                && !k.contains('\0')
                && v.as_str()
                    .is_some_and(|s| s.chars().count() <= 512 && !s.contains('\0'))
        });
    if ok {
        Ok(map.clone())
    } else {
        Err(InvalidValue::new("metadata", RULE))
    }
}

/// Validates an expiry policy: anchor `last_active_at`, 1 to 365 days.
///
/// # Errors
/// Every bad field.
pub fn parse_expiry(anchor: &str, days: i64) -> Result<u32, Vec<InvalidValue>> {
    let mut bad = Vec::new();
    if anchor != "last_active_at" {
        bad.push(InvalidValue::new(
            "expires_after.anchor",
            "must be `last_active_at`",
        ));
    }
    let days = u32::try_from(days)
        .ok()
        .filter(|d| (1..=365).contains(d))
        .ok_or_else(|| bad.push(InvalidValue::new("expires_after.days", "must be 1 to 365")));
    match days {
        Ok(d) if bad.is_empty() => Ok(d),
        Ok(_) | Err(()) => Err(bad),
    }
}

/// OpenAI's bounds on a static chunk size, in tokens.
pub const STATIC_CHUNK_TOKENS: std::ops::RangeInclusive<i64> = 100..=4096;

/// OpenAI's `static` chunking: `max_chunk_size_tokens` 100 to 4096, `chunk_overlap_tokens` at
/// most half of it.
///
/// # Errors
/// Every bad field.
pub fn static_chunking(size: i64, overlap: i64) -> Result<Chunking, Vec<InvalidValue>> {
    let mut bad = Vec::new();
    if !STATIC_CHUNK_TOKENS.contains(&size) {
        bad.push(InvalidValue::new(
            "chunking_strategy.static.max_chunk_size_tokens",
            "must be 100 to 4096",
        ));
    }
    if overlap < 0 || overlap > size / 2 {
        bad.push(InvalidValue::new(
            "chunking_strategy.static.chunk_overlap_tokens",
            "must be 0 to half of max_chunk_size_tokens",
        ));
    }
    match (u32::try_from(size), u32::try_from(overlap)) {
        (Ok(size), Ok(overlap)) if bad.is_empty() => Ok(Chunking {
            strategy: ChunkingStrategy::Custom,
            size,
            overlap,
            separators: Vec::new(),
        }),
        _ => Err(bad),
    }
}

/// A vector-store file's state, as OpenAI names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Being ingested.
    InProgress,
    /// Searchable.
    Completed,
    /// Ingestion failed.
    Failed,
    /// Its batch was cancelled before it was ready.
    Cancelled,
}

impl FileState {
    /// OpenAI's name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Reads OpenAI's name.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::InProgress,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// The state of a document in `status`.
    #[must_use]
    pub const fn of(status: DocumentStatus) -> Self {
        match status {
            DocumentStatus::Queued
            | DocumentStatus::Parsing
            | DocumentStatus::Chunking
            | DocumentStatus::Embedding
            | DocumentStatus::Indexing => Self::InProgress,
            DocumentStatus::Ready => Self::Completed,
            DocumentStatus::Failed => Self::Failed,
            DocumentStatus::Cancelled => Self::Cancelled,
        }
    }

    /// The document statuses of this state.
    #[must_use]
    pub fn statuses(self) -> Vec<DocumentStatus> {
        DocumentStatus::ALL
            .into_iter()
            .filter(|s| Self::of(*s) == self)
            .collect()
    }
}

/// Files of a store (or batch) by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCounts {
    /// Being ingested.
    pub in_progress: u64,
    /// Ready.
    pub completed: u64,
    /// Failed.
    pub failed: u64,
    /// Cancelled.
    pub cancelled: u64,
}

impl FileCounts {
    /// Counts `n` documents in `status`.
    pub fn add(&mut self, status: DocumentStatus, n: u64) {
        match FileState::of(status) {
            FileState::InProgress => self.in_progress += n,
            FileState::Completed => self.completed += n,
            FileState::Failed => self.failed += n,
            FileState::Cancelled => self.cancelled += n,
        }
    }

    /// Every file.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.in_progress + self.completed + self.failed + self.cancelled
    }
}

/// A batch of files attached together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileBatch {
    /// Id.
    pub id: BatchId,
    /// Its store.
    pub base_id: BaseId,
    /// The store's owner.
    pub owner: UserId,
    /// Whether it was cancelled.
    pub cancelled: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl FileBatch {
    /// OpenAI's status of a batch with these counts.
    #[must_use]
    pub fn status(&self, counts: &FileCounts) -> &'static str {
        if self.cancelled {
            "cancelled"
        } else if counts.in_progress > 0 {
            "in_progress"
        } else if counts.total() > 0 && counts.failed == counts.total() {
            "failed"
        } else {
            "completed"
        }
    }
}

/// List order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (OpenAI's default).
    Desc,
}

/// The largest page of an OpenAI list.
pub const MAX_WINDOW: u32 = 100;

/// A page of an OpenAI list: ids are time-ordered (UUID v7), so `after` and `before` are ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// At most this many (1 to 100).
    pub limit: u32,
    /// Order.
    pub order: Order,
    /// Only items after this one in the order.
    pub after: Option<uuid::Uuid>,
    /// Only items before this one in the order (the page nearest to it).
    pub before: Option<uuid::Uuid>,
}

impl Window {
    /// Validates a window (`limit` default 20, `order` default `desc`).
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(
        limit: Option<i64>,
        order: Option<&str>,
        after: Option<uuid::Uuid>,
        before: Option<uuid::Uuid>,
    ) -> Result<Self, Vec<InvalidValue>> {
        let mut bad = Vec::new();
        let limit = match limit {
            None => 20,
            Some(l) => u32::try_from(l)
                .ok()
                .filter(|l| (1..=MAX_WINDOW).contains(l))
                .unwrap_or_else(|| {
                    bad.push(InvalidValue::new("limit", "must be 1 to 100"));
                    20
                }),
        };
        let order = match order {
            None | Some("desc") => Order::Desc,
            Some("asc") => Order::Asc,
            Some(_) => {
                bad.push(InvalidValue::new("order", "must be `asc` or `desc`"));
                Order::Desc
            }
        };
        if bad.is_empty() {
            Ok(Self {
                limit,
                order,
                after,
                before,
            })
        } else {
            Err(bad)
        }
    }

    /// Puts rows fetched for this window (at most `limit + 1`, in the window's order, or in the
    /// reverse order when paging `before`) in order; answers them and whether there are more.
    #[must_use]
    pub fn finish<T>(&self, mut rows: Vec<T>) -> (Vec<T>, bool) {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        if self.reversed() {
            rows.reverse();
        }
        (rows, more)
    }

    /// Whether rows are fetched in the reverse of the window's order (paging `before`
    /// without `after`: the nearest rows first).
    #[must_use]
    pub fn reversed(&self) -> bool {
        self.before.is_some() && self.after.is_none()
    }

    /// Whether rows are fetched by descending id.
    #[must_use]
    pub fn fetch_descending(&self) -> bool {
        (self.order == Order::Desc) != self.reversed()
    }
}

/// A comparison of a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal (also true when the key is missing).
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less than or equal.
    Lte,
    /// One of a list.
    In,
    /// None of a list (also true when the key is missing).
    Nin,
}

impl Op {
    fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "eq" => Self::Eq,
            "ne" => Self::Ne,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            "in" => Self::In,
            "nin" => Self::Nin,
            _ => return None,
        })
    }
}

/// A filter over documents' attributes (their metadata, plus `file_name` and `kind`).
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// One key compared with a value.
    Compare {
        /// The attribute.
        key: String,
        /// How.
        op: Op,
        /// With what: a string, number or boolean; a list of strings and numbers for `in`
        /// and `nin`.
        value: Value,
    },
    /// Every filter holds (true when empty).
    All(Vec<Filter>),
    /// Some filter holds (false when empty).
    Any(Vec<Filter>),
}

/// The deepest nesting of compound filters.
const MAX_FILTER_DEPTH: usize = 8;
/// The most comparisons in one filter.
const MAX_COMPARISONS: usize = 64;
/// The longest `in` / `nin` list.
const MAX_LIST: usize = 100;

impl Filter {
    /// Every pair of `pairs` equal (the management API's metadata filter).
    #[must_use]
    pub fn all_equal(pairs: &Map<String, Value>) -> Self {
        Self::All(
            pairs
                .iter()
                .map(|(k, v)| Self::Compare {
                    key: k.clone(),
                    op: Op::Eq,
                    value: v.clone(),
                })
                .collect(),
        )
    }

    /// Reads OpenAI's comparison and compound filters (`{"type": "eq", "key", "value"}`,
    /// `{"type": "and" | "or", "filters": […]}`), at most 8 deep and 64 comparisons.
    ///
    /// # Errors
    /// [`InvalidValue`] on `filters` saying what is wrong.
    pub fn parse(value: &Value) -> Result<Self, InvalidValue> {
        let mut comparisons = 0;
        Self::parse_at(value, 0, &mut comparisons)
    }

    fn parse_at(value: &Value, depth: usize, count: &mut usize) -> Result<Self, InvalidValue> {
        let bad = |why: &'static str| InvalidValue::new("filters", why);
        if depth > MAX_FILTER_DEPTH {
            return Err(bad("nests compound filters more than 8 deep"));
        }
        let Value::Object(map) = value else {
            return Err(bad("each filter must be an object with a `type`"));
        };
        let kind = map.get("type").and_then(Value::as_str).unwrap_or_default();
        if let Some(op) = Op::parse(kind) {
            *count += 1;
            if *count > MAX_COMPARISONS {
                return Err(bad("holds more than 64 comparisons"));
            }
            if map
                .keys()
                .any(|k| !matches!(k.as_str(), "type" | "key" | "value"))
            {
                return Err(bad("a comparison has only `type`, `key` and `value`"));
            }
            let key = map
                .get("key")
                .and_then(Value::as_str)
                .filter(|k| (1..=64).contains(&k.chars().count()) && !k.contains('\0'))
                .ok_or_else(|| bad("a comparison's `key` must be 1 to 64 characters"))?;
            let value = map
                .get("value")
                .ok_or_else(|| bad("a comparison needs a `value`"))?;
            let scalar = |v: &Value| match v {
                Value::String(s) => s.chars().count() <= 512 && !s.contains('\0'),
                Value::Number(_) | Value::Bool(_) => true,
                Value::Null | Value::Array(_) | Value::Object(_) => false,
            };
            let fits = match op {
                Op::Eq | Op::Ne => scalar(value),
                Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                    matches!(value, Value::Number(_)) || (value.is_string() && scalar(value))
                }
                Op::In | Op::Nin => value.as_array().is_some_and(|items| {
                    !items.is_empty()
                        && items.len() <= MAX_LIST
                        && items
                            .iter()
                            .all(|i| (i.is_string() || i.is_number()) && scalar(i))
                }),
            };
            if !fits {
                return Err(bad(
                    "`value` must be a string, number or boolean (`eq`, `ne`); a number or string (`gt`, `gte`, `lt`, `lte`); a list of 1 to 100 strings and numbers (`in`, `nin`)",
                ));
            }
            return Ok(Self::Compare {
                key: key.to_owned(),
                op,
                value: value.clone(),
            });
        }
        let compound = match kind {
            "and" => Self::All,
            "or" => Self::Any,
            _ => {
                return Err(bad(
                    "`type` must be eq, ne, gt, gte, lt, lte, in, nin, and or or",
                ));
            }
        };
        if map
            .keys()
            .any(|k| !matches!(k.as_str(), "type" | "filters"))
        {
            return Err(bad("a compound filter has only `type` and `filters`"));
        }
        let items = map
            .get("filters")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("a compound filter needs a `filters` list"))?;
        let parts = items
            .iter()
            .map(|f| Self::parse_at(f, depth + 1, count))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(compound(parts))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_read_openai_comparisons_and_compounds() {
        let f = Filter::parse(&json!({"type": "and", "filters": [
            {"type": "eq", "key": "team", "value": "a"},
            {"type": "or", "filters": [{"type": "gte", "key": "year", "value": 2020}, {"type": "in", "key": "tag", "value": ["x", 1]}]}
        ]}))
        .unwrap();
        let Filter::All(parts) = f else {
            panic!("and is All")
        };
        assert_eq!(parts.len(), 2);
        assert!(matches!(&parts[1], Filter::Any(inner) if inner.len() == 2));
        for bad in [
            json!({"type": "eq", "key": "a"}),
            json!({"type": "gt", "key": "a", "value": true}),
            json!({"type": "in", "key": "a", "value": []}),
            json!({"type": "in", "key": "a", "value": [{"x": 1}]}),
            json!({"type": "xor", "filters": []}),
            json!({"type": "eq", "key": "", "value": 1}),
            json!({"type": "eq", "key": "a", "value": 1, "extra": 1}),
            json!([1]),
        ] {
            assert!(Filter::parse(&bad).is_err(), "{bad}");
        }
        let mut deep = json!({"type": "eq", "key": "a", "value": 1});
        for _ in 0..9 {
            deep = json!({"type": "and", "filters": [deep]});
        }
        assert!(Filter::parse(&deep).is_err());
    }

    #[test]
    fn windows_fetch_the_rows_nearest_their_cursor() {
        let w = Window::parse(None, None, None, None).unwrap();
        assert_eq!((w.limit, w.order), (20, Order::Desc));
        assert!(w.fetch_descending());
        let id = uuid::Uuid::now_v7();
        let before = Window::parse(Some(2), Some("asc"), None, Some(id)).unwrap();
        assert!(before.fetch_descending(), "the nearest rows before, first");
        assert_eq!(before.finish(vec![3, 2, 1]), (vec![2, 3], true));
        assert!(
            Window::parse(Some(0), Some("up"), None, None)
                .unwrap_err()
                .len()
                == 2
        );
    }

    #[test]
    fn static_chunking_keeps_openai_bounds() {
        let c = static_chunking(800, 400).unwrap();
        assert_eq!((c.size, c.overlap), (800, 400));
        assert_eq!(static_chunking(99, 0).unwrap_err().len(), 1);
        assert_eq!(static_chunking(4097, 3000).unwrap_err().len(), 2);
        assert_eq!(
            static_chunking(200, 101).unwrap_err()[0].field,
            "chunking_strategy.static.chunk_overlap_tokens"
        );
    }

    #[test]
    fn stores_expire_after_their_last_activity() {
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let mut s = StoreSettings::of_base(now);
        assert!(!s.expired(now + chrono::Duration::days(1000)));
        s.expires_after_days = Some(2);
        assert!(!s.expired(now + chrono::Duration::days(1)));
        assert!(s.expired(now + chrono::Duration::days(2)));
        assert!(parse_expiry("created_at", 0).unwrap_err().len() == 2);
        assert_eq!(parse_expiry("last_active_at", 7).unwrap(), 7);
    }

    #[test]
    fn batch_status_follows_its_files() {
        let b = FileBatch {
            id: BatchId::new(),
            base_id: BaseId::new(),
            owner: UserId::new(),
            cancelled: false,
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        };
        let mut c = FileCounts::default();
        c.add(DocumentStatus::Embedding, 1);
        c.add(DocumentStatus::Ready, 2);
        assert_eq!((b.status(&c), c.total()), ("in_progress", 3));
        let mut failed = FileCounts::default();
        failed.add(DocumentStatus::Failed, 2);
        assert_eq!(b.status(&failed), "failed");
        assert_eq!(b.status(&FileCounts::default()), "completed");
    }
}
