//! Documents and their chunks: accepted types (judged by the bytes), the ingestion's states, the
//! chunk ids that make ingestion resumable.

use chrono::{DateTime, Utc};
use maas_user::contract::UserId;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::base::{BaseId, Chunking};
use super::errors::{InvalidValue, KnowledgeError};
use super::store::FileId;

maas_shared::define_id!(
    /// Identifies a document.
    DocumentId
);

/// The document types accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// Plain text (UTF-8).
    Text,
    /// Markdown.
    Markdown,
    /// HTML.
    Html,
    /// PDF.
    Pdf,
    /// Word (Office Open XML).
    Docx,
    /// Comma-separated values.
    Csv,
    /// One JSON value per line.
    Jsonl,
}

const DOCX_MIME: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

impl DocumentKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Self; 7] = [
        Self::Text,
        Self::Markdown,
        Self::Html,
        Self::Pdf,
        Self::Docx,
        Self::Csv,
        Self::Jsonl,
    ];

    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Text => "txt",
            Self::Markdown => "md",
            Self::Html => "html",
            Self::Pdf => "pdf",
            Self::Docx => "docx",
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
        }
    }

    /// The media type.
    #[must_use]
    pub const fn mime(self) -> &'static str {
        match self {
            Self::Text => "text/plain",
            Self::Markdown => "text/markdown",
            Self::Html => "text/html",
            Self::Pdf => "application/pdf",
            Self::Docx => DOCX_MIME,
            Self::Csv => "text/csv",
            Self::Jsonl => "application/jsonl",
        }
    }

    /// Reads a stored name.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The kind a media type names (parameters such as `charset` ignored).
    #[must_use]
    pub fn from_mime(raw: &str) -> Option<Self> {
        let mime = raw
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "text/plain" => Some(Self::Text),
            "text/markdown" | "text/x-markdown" => Some(Self::Markdown),
            "text/html" | "application/xhtml+xml" => Some(Self::Html),
            "application/pdf" => Some(Self::Pdf),
            DOCX_MIME => Some(Self::Docx),
            "text/csv" => Some(Self::Csv),
            "application/jsonl" | "application/x-ndjson" | "application/x-jsonlines" => {
                Some(Self::Jsonl)
            }
            _ => None,
        }
    }

    /// The kind a file name's extension names.
    #[must_use]
    pub fn from_file_name(name: &str) -> Option<Self> {
        let (_, ext) = name.rsplit_once('.')?;
        match ext.to_ascii_lowercase().as_str() {
            "txt" | "text" => Some(Self::Text),
            "md" | "markdown" => Some(Self::Markdown),
            "html" | "htm" => Some(Self::Html),
            "pdf" => Some(Self::Pdf),
            "docx" => Some(Self::Docx),
            "csv" => Some(Self::Csv),
            "jsonl" | "ndjson" => Some(Self::Jsonl),
            _ => None,
        }
    }

    /// The declared kind: the part's media type when it names one, else the file name's
    /// extension.
    ///
    /// # Errors
    /// [`KnowledgeError::UnsupportedType`] when neither names an accepted type.
    pub fn declared(mime: Option<&str>, file_name: &str) -> Result<Self, KnowledgeError> {
        let generic = |m: &str| {
            let m = m.trim().to_ascii_lowercase();
            m.is_empty() || m.starts_with("application/octet-stream")
        };
        if let Some(m) = mime.filter(|m| !generic(m)) {
            return Self::from_mime(m).ok_or_else(|| {
                KnowledgeError::UnsupportedType(format!(
                    "`{}` is not an accepted document type (txt, md, html, pdf, docx, csv, jsonl)",
                    m.chars().take(100).collect::<String>()
                ))
            });
        }
        Self::from_file_name(file_name).ok_or_else(|| {
            KnowledgeError::UnsupportedType(
                "name the type: a media type on the part, or a file name ending .txt, .md, .html, .pdf, .docx, .csv or .jsonl"
                    .to_owned(),
            )
        })
    }

    /// Checks that `bytes` are of this kind: binary kinds by their signature, text kinds as
    /// UTF-8 with no binary signature (and JSON on every line for `jsonl`).
    ///
    /// # Errors
    /// [`KnowledgeError::TypeMismatch`] or [`KnowledgeError::Malformed`].
    pub fn check(self, bytes: &[u8]) -> Result<(), KnowledgeError> {
        let sniffed = infer::get(bytes).map(|t| t.mime_type());
        let mismatch = |found: &str| {
            KnowledgeError::TypeMismatch(format!(
                "the file was declared {} but its bytes are {found}",
                self.as_str()
            ))
        };
        match self {
            Self::Pdf | Self::Docx => match sniffed {
                Some(m) if m == self.mime() => Ok(()),
                // `infer` knows a DOCX by the order of its first zip entries, which not every
                // writer keeps: a zip whose directory names `word/document.xml` is one too.
                Some("application/zip")
                    if self == Self::Docx
                        && bytes.windows(17).any(|w| w == b"word/document.xml") =>
                {
                    Ok(())
                }
                Some(m) => Err(mismatch(m)),
                None => Err(mismatch("not of that type")),
            },
            Self::Text | Self::Markdown | Self::Html | Self::Csv | Self::Jsonl => {
                if let Some(m) = sniffed.filter(|m| !m.starts_with("text/")) {
                    return Err(mismatch(m));
                }
                let text = std::str::from_utf8(bytes).map_err(|_| mismatch("not UTF-8 text"))?;
                if text.contains('\0') {
                    return Err(mismatch("binary (it holds NUL bytes)"));
                }
                if self == Self::Jsonl {
                    for (n, line) in text.lines().enumerate() {
                        if !line.trim().is_empty()
                            && serde_json::from_str::<serde::de::IgnoredAny>(line).is_err()
                        {
                            return Err(KnowledgeError::Malformed(format!(
                                "line {} is not JSON",
                                n + 1
                            )));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Where a document's ingestion is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DocumentStatus {
    /// Waiting for a worker.
    Queued,
    /// Text being extracted.
    Parsing,
    /// Text being cut into chunks.
    Chunking,
    /// Chunks being embedded.
    Embedding,
    /// Vectors being written to the index.
    Indexing,
    /// Searchable.
    Ready,
    /// Stopped; `error` says why.
    Failed,
    /// Stopped before it was ready: its batch was cancelled.
    Cancelled,
}

impl DocumentStatus {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Parsing => "parsing",
            Self::Chunking => "chunking",
            Self::Embedding => "embedding",
            Self::Indexing => "indexing",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Every status.
    pub const ALL: [Self; 8] = [
        Self::Queued,
        Self::Parsing,
        Self::Chunking,
        Self::Embedding,
        Self::Indexing,
        Self::Ready,
        Self::Failed,
        Self::Cancelled,
    ];

    /// Reads a stored name.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether ingestion has ended.
    #[must_use]
    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Ready | Self::Failed | Self::Cancelled)
    }
}

/// At most this many metadata keys per document.
pub const MAX_METADATA_KEYS: usize = 16;

/// Validates a document's metadata: an object of at most 16 keys (1 to 64 characters) whose
/// values are strings (at most 512 characters), numbers or booleans.
///
/// # Errors
/// [`InvalidValue`] on `metadata`.
pub fn parse_metadata(value: &Value) -> Result<Map<String, Value>, InvalidValue> {
    const RULE: &str = "must be an object of at most 16 keys (1 to 64 characters) with string (at most 512 characters), number or boolean values";
    let Value::Object(map) = value else {
        return Err(InvalidValue::new("metadata", RULE));
    };
    let ok = map.len() <= MAX_METADATA_KEYS
        && map.iter().all(|(k, v)| {
            (1..=64).contains(&k.chars().count())
                && !k.contains('\0')
                && match v {
                    Value::String(s) => s.chars().count() <= 512 && !s.contains('\0'),
                    Value::Number(_) | Value::Bool(_) => true,
                    Value::Null | Value::Array(_) | Value::Object(_) => false,
                }
        });
    if ok {
        Ok(map.clone())
    } else {
        Err(InvalidValue::new("metadata", RULE))
    }
}

/// A file name kept as metadata only (never a path): its last path segment, control
/// characters dropped, at most 255 characters; `document` when nothing is left.
#[must_use]
pub fn clean_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let name: String = last.chars().filter(|c| !c.is_control()).take(255).collect();
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." {
        "document".to_owned()
    } else {
        name.to_owned()
    }
}

/// The hex SHA-256 of a document's bytes (identical content in one base is one document).
#[must_use]
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A document of a base.
#[derive(Clone, Debug)]
pub struct Document {
    /// Id.
    pub id: DocumentId,
    /// Its base.
    pub base_id: BaseId,
    /// The base's owner.
    pub owner: UserId,
    /// The uploaded file's name (metadata only).
    pub file_name: String,
    /// Type.
    pub kind: DocumentKind,
    /// Size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the bytes.
    pub content_hash: String,
    /// Where the bytes are in the blob store.
    pub storage_key: String,
    /// Ingestion state.
    pub status: DocumentStatus,
    /// Why it failed, a stable code first (`extraction_failed: …`).
    pub error: Option<String>,
    /// Chunks made.
    pub chunks: u32,
    /// Tokens embedded (as the embedding model counted them).
    pub tokens: u64,
    /// Caller's metadata (search can filter on it; OpenAI's file attributes).
    pub metadata: Map<String, Value>,
    /// The uploaded file it was attached from (`/v1/files`), if any.
    pub file_id: Option<FileId>,
    /// Its own chunking (a file attached with a chunking strategy); the base's when `None`.
    pub chunking: Option<Chunking>,
    /// Uploaded.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The id of chunk `position` of `document`: the same on every run, so a resumed ingestion
/// writes no duplicate (UUID v5 over the document id and the position).
#[must_use]
pub fn chunk_id(document: DocumentId, position: u32) -> uuid::Uuid {
    let mut name = document.as_uuid().as_bytes().to_vec();
    name.extend_from_slice(&position.to_be_bytes());
    uuid::Uuid::new_v5(&CHUNK_NAMESPACE, &name)
}

const CHUNK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d61_6173_2d6b_6e6f_776c_6564_6765_0001);

/// One piece of a document's text.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// [`chunk_id`] of its document and position.
    pub id: uuid::Uuid,
    /// Its document.
    pub document_id: DocumentId,
    /// Its position in the document, from 0.
    pub position: u32,
    /// The text.
    pub content: String,
    /// Its size in tokens (as the chunker counted them).
    pub tokens: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_come_from_the_part_or_the_name() {
        assert_eq!(
            DocumentKind::declared(Some("text/markdown; charset=utf-8"), "x").unwrap(),
            DocumentKind::Markdown
        );
        assert_eq!(
            DocumentKind::declared(Some("application/octet-stream"), "a/b/c.PDF").unwrap(),
            DocumentKind::Pdf
        );
        assert!(matches!(
            DocumentKind::declared(Some("image/png"), "x.txt"),
            Err(KnowledgeError::UnsupportedType(_))
        ));
        assert!(matches!(
            DocumentKind::declared(None, "archive.tar"),
            Err(KnowledgeError::UnsupportedType(_))
        ));
    }

    #[test]
    fn bytes_must_agree_with_the_declared_type() {
        assert!(DocumentKind::Text.check("hello 世界".as_bytes()).is_ok());
        let png = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0];
        assert!(matches!(
            DocumentKind::Text.check(&png),
            Err(KnowledgeError::TypeMismatch(_))
        ));
        assert!(matches!(
            DocumentKind::Pdf.check(b"just text"),
            Err(KnowledgeError::TypeMismatch(_))
        ));
        assert!(DocumentKind::Pdf.check(b"%PDF-1.4\n...").is_ok());
        let mut zip = b"PK\x03\x04".to_vec();
        zip.extend_from_slice(&[0; 26]);
        assert!(matches!(
            DocumentKind::Docx.check(&zip),
            Err(KnowledgeError::TypeMismatch(_))
        ));
        zip.extend_from_slice(b"word/document.xml");
        assert!(DocumentKind::Docx.check(&zip).is_ok());
        assert!(matches!(
            DocumentKind::Text.check(&[0xff, 0xfe, 0x00]),
            Err(KnowledgeError::TypeMismatch(_))
        ));
        assert!(DocumentKind::Jsonl.check(b"{\"a\":1}\n\n[2]\n").is_ok());
        assert!(matches!(
            DocumentKind::Jsonl.check(b"{\"a\":1}\n{oops\n"),
            Err(KnowledgeError::Malformed(m)) if m == "line 2 is not JSON"
        ));
    }

    #[test]
    fn file_names_are_never_paths() {
        assert_eq!(clean_file_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("C:\\docs\\a\nb.txt"), "ab.txt");
        assert_eq!(clean_file_name(".."), "document");
        assert_eq!(clean_file_name(""), "document");
    }

    #[test]
    fn chunk_ids_are_stable_per_document_and_position() {
        let d = DocumentId::new();
        assert_eq!(chunk_id(d, 3), chunk_id(d, 3));
        assert_ne!(chunk_id(d, 3), chunk_id(d, 4));
        assert_ne!(chunk_id(d, 3), chunk_id(DocumentId::new(), 3));
    }

    #[test]
    fn metadata_is_a_small_flat_object() {
        assert!(
            parse_metadata(&serde_json::json!({"team": "a", "year": 2024, "draft": false})).is_ok()
        );
        assert!(parse_metadata(&serde_json::json!({"nested": {"a": 1}})).is_err());
        assert!(parse_metadata(&serde_json::json!([1])).is_err());
    }
}
