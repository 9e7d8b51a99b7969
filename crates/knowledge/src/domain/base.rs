//! Knowledge bases: who owns them, which model embeds them, how their documents are cut into
//! chunks and how they are searched by default.

use chrono::{DateTime, Utc};
use maas_user::contract::UserId;

use super::errors::InvalidValue;

maas_shared::define_id!(
    /// Identifies a knowledge base.
    BaseId
);

/// How documents are cut into chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkingStrategy {
    /// OpenAI's vector-store default: 800 tokens, 400 overlap.
    Auto,
    /// Dify's automatic mode: 500 tokens, 50 overlap.
    Paragraph,
    /// Size, overlap and separators given.
    Custom,
}

impl ChunkingStrategy {
    /// The stored and API name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Paragraph => "paragraph",
            Self::Custom => "custom",
        }
    }

    /// Reads a name.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "auto" => Some(Self::Auto),
            "paragraph" => Some(Self::Paragraph),
            "custom" => Some(Self::Custom),
            _ => None,
        }
    }
}

/// The smallest chunk size, in tokens.
pub const MIN_CHUNK_TOKENS: u32 = 50;
/// The largest chunk size, in tokens.
pub const MAX_CHUNK_TOKENS: u32 = 8192;
/// At most this many custom separators.
pub const MAX_SEPARATORS: usize = 10;

/// Validated chunking settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunking {
    /// Which preset (or custom).
    pub strategy: ChunkingStrategy,
    /// Target chunk size, in tokens of the embedding model (4 characters when its tokenizer is
    /// not known).
    pub size: u32,
    /// Tokens shared by neighbouring chunks (at most half the size).
    pub overlap: u32,
    /// Custom only: the text is first cut at each of these (empty: none).
    pub separators: Vec<String>,
}

impl Default for Chunking {
    fn default() -> Self {
        Self::preset(ChunkingStrategy::Auto)
    }
}

/// Chunking as asked (absent fields take the preset's values).
#[derive(Clone, Debug, Default)]
pub struct ChunkingDraft {
    /// `auto`, `paragraph` or `custom` (absent: `auto`).
    pub strategy: Option<String>,
    /// Custom size.
    pub size: Option<i64>,
    /// Custom overlap.
    pub overlap: Option<i64>,
    /// Custom separators.
    pub separators: Option<Vec<String>>,
}

impl Chunking {
    /// The settings of a preset.
    #[must_use]
    pub fn preset(strategy: ChunkingStrategy) -> Self {
        let (size, overlap) = match strategy {
            ChunkingStrategy::Auto => (800, 400),
            ChunkingStrategy::Paragraph | ChunkingStrategy::Custom => (500, 50),
        };
        Self {
            strategy,
            size,
            overlap,
            separators: Vec::new(),
        }
    }

    /// Validates a draft.
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(draft: &ChunkingDraft) -> Result<Self, Vec<InvalidValue>> {
        let mut bad = Vec::new();
        let strategy = match draft.strategy.as_deref() {
            None => ChunkingStrategy::Auto,
            Some(raw) => ChunkingStrategy::parse(raw).unwrap_or_else(|| {
                bad.push(InvalidValue::new(
                    "chunking.strategy",
                    "must be `auto`, `paragraph` or `custom`",
                ));
                ChunkingStrategy::Auto
            }),
        };
        let mut chunking = Self::preset(strategy);
        let custom = strategy == ChunkingStrategy::Custom;
        if !custom
            && (draft.size.is_some() || draft.overlap.is_some() || draft.separators.is_some())
        {
            bad.push(InvalidValue::new(
                "chunking",
                "size, overlap and separators are set only with the `custom` strategy",
            ));
        }
        if custom {
            if let Some(size) = draft.size {
                match u32::try_from(size) {
                    Ok(size) if (MIN_CHUNK_TOKENS..=MAX_CHUNK_TOKENS).contains(&size) => {
                        chunking.size = size;
                    }
                    _ => bad.push(InvalidValue::new(
                        "chunking.size",
                        "must be between 50 and 8192 tokens",
                    )),
                }
            }
            if let Some(overlap) = draft.overlap {
                match u32::try_from(overlap) {
                    Ok(overlap) => chunking.overlap = overlap,
                    Err(_) => bad.push(InvalidValue::new(
                        "chunking.overlap",
                        "must be at least 0 and at most half the size",
                    )),
                }
            }
            if chunking.overlap > chunking.size / 2 {
                bad.push(InvalidValue::new(
                    "chunking.overlap",
                    "must be at least 0 and at most half the size",
                ));
            }
            if let Some(separators) = &draft.separators {
                if separators.len() > MAX_SEPARATORS
                    || separators
                        .iter()
                        .any(|s| s.is_empty() || s.chars().count() > 16 || s.contains('\0'))
                {
                    bad.push(InvalidValue::new(
                        "chunking.separators",
                        "at most 10 separators of 1 to 16 characters each",
                    ));
                } else {
                    chunking.separators.clone_from(separators);
                }
            }
        }
        if bad.is_empty() {
            Ok(chunking)
        } else {
            Err(bad)
        }
    }
}

/// How a base is searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SearchMode {
    /// Nearest neighbours of the query's embedding.
    Vector,
    /// PostgreSQL full-text search (CJK text as overlapping character pairs).
    Fulltext,
    /// Both, fused by weighted reciprocal rank.
    Hybrid,
}

impl SearchMode {
    /// The stored and API name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Vector => "vector",
            Self::Fulltext => "fulltext",
            Self::Hybrid => "hybrid",
        }
    }

    /// Reads a name.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "vector" => Some(Self::Vector),
            "fulltext" => Some(Self::Fulltext),
            "hybrid" => Some(Self::Hybrid),
            _ => None,
        }
    }
}

/// The largest `top_k`.
pub const MAX_TOP_K: u32 = 100;

/// Search settings: a base's defaults, or one search's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Retrieval {
    /// Mode.
    pub mode: SearchMode,
    /// Hits returned, 1 to 100.
    pub top_k: u32,
    /// Hits scoring below are dropped (0 to 1; the score of the mode).
    pub score_threshold: Option<f32>,
    /// Hybrid: the vector ranking's weight (the text ranking gets the rest), 0 to 1.
    pub vector_weight: f32,
}

impl Default for Retrieval {
    fn default() -> Self {
        Self {
            mode: SearchMode::Hybrid,
            top_k: 5,
            score_threshold: None,
            vector_weight: 0.7,
        }
    }
}

/// Search settings as asked (absent fields come from `defaults`).
#[derive(Clone, Debug, Default)]
pub struct RetrievalDraft {
    /// Mode name.
    pub mode: Option<String>,
    /// Hits.
    pub top_k: Option<i64>,
    /// Threshold.
    pub score_threshold: Option<f64>,
    /// Hybrid weight of the vector ranking.
    pub vector_weight: Option<f64>,
}

impl Retrieval {
    /// Validates a draft over `defaults`; `prefix` names the fields (`retrieval.` or ``).
    ///
    /// # Errors
    /// Every bad field.
    pub fn parse(
        draft: &RetrievalDraft,
        defaults: Self,
        fields: RetrievalFields,
    ) -> Result<Self, Vec<InvalidValue>> {
        let mut bad = Vec::new();
        let mut out = defaults;
        if let Some(raw) = &draft.mode {
            match SearchMode::parse(raw) {
                Some(mode) => out.mode = mode,
                None => bad.push(InvalidValue::new(
                    fields.mode,
                    "must be `vector`, `fulltext` or `hybrid`",
                )),
            }
        }
        if let Some(k) = draft.top_k {
            match u32::try_from(k) {
                Ok(k) if (1..=MAX_TOP_K).contains(&k) => out.top_k = k,
                _ => bad.push(InvalidValue::new(fields.top_k, "must be between 1 and 100")),
            }
        }
        if let Some(t) = draft.score_threshold {
            if (0.0..=1.0).contains(&t) {
                out.score_threshold = Some(narrow(t));
            } else {
                bad.push(InvalidValue::new(
                    fields.score_threshold,
                    "must be between 0 and 1",
                ));
            }
        }
        if let Some(w) = draft.vector_weight {
            if (0.0..=1.0).contains(&w) {
                out.vector_weight = narrow(w);
            } else {
                bad.push(InvalidValue::new(
                    fields.vector_weight,
                    "must be between 0 and 1",
                ));
            }
        }
        if bad.is_empty() { Ok(out) } else { Err(bad) }
    }
}

/// A value already checked to lie in 0..=1 as `f32`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "checked to lie in 0..=1 by every caller"
)]
fn narrow(v: f64) -> f32 {
    v as f32
}

/// The field names a retrieval draft's errors use.
#[derive(Clone, Copy, Debug)]
pub struct RetrievalFields {
    mode: &'static str,
    top_k: &'static str,
    score_threshold: &'static str,
    vector_weight: &'static str,
}

impl RetrievalFields {
    /// A base's defaults (`retrieval.mode`, …).
    pub const BASE: Self = Self {
        mode: "retrieval.mode",
        top_k: "retrieval.top_k",
        score_threshold: "retrieval.score_threshold",
        vector_weight: "retrieval.vector_weight",
    };
    /// One search (`mode`, …).
    pub const SEARCH: Self = Self {
        mode: "mode",
        top_k: "top_k",
        score_threshold: "score_threshold",
        vector_weight: "vector_weight",
    };
}

/// A base's validated name: 1 to 100 characters, no control characters.
///
/// # Errors
/// [`InvalidValue`] on `name`.
pub fn parse_name(raw: &str) -> Result<String, InvalidValue> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(InvalidValue::new(
            "name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    Ok(name.to_owned())
}

/// A validated description: at most 2000 characters, no NUL.
///
/// # Errors
/// [`InvalidValue`] on `description`.
pub fn parse_description(raw: &str) -> Result<String, InvalidValue> {
    if raw.chars().count() > 2000 || raw.contains('\0') {
        return Err(InvalidValue::new(
            "description",
            "must be at most 2000 characters without NUL",
        ));
    }
    Ok(raw.to_owned())
}

/// A validated model name: 1 to 128 characters, no whitespace or control characters.
///
/// # Errors
/// [`InvalidValue`] on `embedding_model`.
pub fn parse_model(raw: &str) -> Result<String, InvalidValue> {
    if raw.is_empty()
        || raw.chars().count() > 128
        || raw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(InvalidValue::new(
            "embedding_model",
            "must be 1 to 128 characters without spaces",
        ));
    }
    Ok(raw.to_owned())
}

/// Where a base's vectors are: one generation per embedding model it has used. Search reads
/// `generation`; a model change fills `next` and then switches to it in one write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embedding {
    /// The model search embeds queries with.
    pub model: String,
    /// The generation its vectors carry.
    pub generation: i32,
    /// Their dimension, once the first vector was stored.
    pub dims: Option<u32>,
}

/// A knowledge base.
#[derive(Clone, Debug)]
pub struct KnowledgeBase {
    /// Id.
    pub id: BaseId,
    /// Owner (the tenant: every query is filtered by it).
    pub owner: UserId,
    /// Unique per owner.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The live embedding.
    pub embedding: Embedding,
    /// A model change under way: the model and generation being filled.
    pub next: Option<Embedding>,
    /// How documents are chunked.
    pub chunking: Chunking,
    /// Search defaults.
    pub retrieval: Retrieval,
    /// Bumped on every change of its vectors (replicas' in-memory indexes reload on it).
    pub index_version: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Changed.
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_custom_chunking() {
        let auto = Chunking::parse(&ChunkingDraft::default()).unwrap();
        assert_eq!((auto.size, auto.overlap), (800, 400));
        let para = Chunking::parse(&ChunkingDraft {
            strategy: Some("paragraph".into()),
            ..ChunkingDraft::default()
        })
        .unwrap();
        assert_eq!((para.size, para.overlap), (500, 50));
        let custom = Chunking::parse(&ChunkingDraft {
            strategy: Some("custom".into()),
            size: Some(200),
            overlap: Some(20),
            separators: Some(vec!["\n---\n".into()]),
        })
        .unwrap();
        assert_eq!((custom.size, custom.overlap), (200, 20));
        assert_eq!(custom.separators, ["\n---\n"]);
    }

    #[test]
    fn every_bad_chunking_field_is_named() {
        let bad = Chunking::parse(&ChunkingDraft {
            strategy: Some("custom".into()),
            size: Some(10),
            overlap: Some(-1),
            separators: Some(vec![String::new()]),
        })
        .unwrap_err();
        let fields: Vec<_> = bad.iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            ["chunking.size", "chunking.overlap", "chunking.separators"]
        );
        let preset = Chunking::parse(&ChunkingDraft {
            strategy: Some("auto".into()),
            size: Some(100),
            ..ChunkingDraft::default()
        })
        .unwrap_err();
        assert_eq!(preset[0].field, "chunking");
        let over = Chunking::parse(&ChunkingDraft {
            strategy: Some("custom".into()),
            size: Some(100),
            overlap: Some(51),
            separators: None,
        })
        .unwrap_err();
        assert_eq!(over[0].field, "chunking.overlap");
    }

    #[test]
    fn retrieval_drafts_fall_back_to_defaults() {
        let r = Retrieval::parse(
            &RetrievalDraft {
                top_k: Some(3),
                ..RetrievalDraft::default()
            },
            Retrieval::default(),
            RetrievalFields::SEARCH,
        )
        .unwrap();
        assert_eq!((r.mode, r.top_k), (SearchMode::Hybrid, 3));
        let bad = Retrieval::parse(
            &RetrievalDraft {
                mode: Some("magic".into()),
                top_k: Some(0),
                score_threshold: Some(1.5),
                vector_weight: Some(-0.1),
            },
            Retrieval::default(),
            RetrievalFields::BASE,
        )
        .unwrap_err();
        assert_eq!(bad.len(), 4);
        assert_eq!(bad[0].field, "retrieval.mode");
    }
}
