//! The log of an app's endpoint calls: question, answer, citations, latency, tokens and the
//! end user's feedback.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::app::AppId;

/// Where an answer's passage came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// Its number in the prompt (`[n]`).
    pub index: u32,
    /// Knowledge base.
    pub knowledge_base_id: uuid::Uuid,
    /// Document.
    pub document_id: uuid::Uuid,
    /// The document's file name.
    pub file_name: String,
    /// Chunk.
    pub chunk_id: uuid::Uuid,
    /// The chunk's position in its document.
    pub position: u32,
    /// Score of the search mode, 0 to 1.
    pub score: f32,
    /// The chunk's first 200 characters.
    pub quote: String,
}

/// How a logged call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageStatus {
    /// Admitted; the answer is on its way (or its process died).
    Pending,
    /// Answered in full.
    Answered,
    /// The upstream failed or the client left.
    Failed,
}

impl MessageStatus {
    /// Stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Answered => "answered",
            Self::Failed => "failed",
        }
    }

    /// Reads a stored name.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(Self::Pending),
            "answered" => Some(Self::Answered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// Thumbs up or down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rating {
    /// Helpful.
    Up,
    /// Not helpful.
    Down,
}

impl Rating {
    /// Stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }

    /// Reads a name.
    #[must_use]
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "up" => Some(Self::Up),
            "down" => Some(Self::Down),
            _ => None,
        }
    }
}

/// One logged call.
#[derive(Clone, Debug, PartialEq)]
pub struct AppMessage {
    /// Id (time-ordered).
    pub id: uuid::Uuid,
    /// Its app.
    pub app_id: AppId,
    /// The version that answered.
    pub version: u32,
    /// The app key it came with.
    pub key_id: Option<uuid::Uuid>,
    /// The caller's end user, if named.
    pub end_user: Option<String>,
    /// The end user's question (their last message).
    pub question: String,
    /// The answer, once complete.
    pub answer: Option<String>,
    /// The passages the prompt held.
    pub citations: Vec<Citation>,
    /// How it ended.
    pub status: MessageStatus,
    /// The status the client saw.
    pub http_status: Option<u16>,
    /// Streamed.
    pub stream: bool,
    /// Milliseconds from admission to the end.
    pub latency_ms: Option<u64>,
    /// Milliseconds to the first byte.
    pub ttft_ms: Option<u64>,
    /// Prompt tokens charged.
    pub prompt_tokens: u64,
    /// Completion tokens charged.
    pub completion_tokens: u64,
    /// The end user's rating.
    pub feedback: Option<Rating>,
    /// Their comment.
    pub feedback_comment: Option<String>,
    /// When the call came.
    pub created_at: DateTime<Utc>,
}

/// How a call ended, written to its log row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageEnd {
    /// Answered or failed.
    pub status: MessageStatus,
    /// What the client saw.
    pub http_status: u16,
    /// The answer.
    pub answer: Option<String>,
    /// Latency.
    pub latency_ms: u64,
    /// Time to first byte.
    pub ttft_ms: Option<u64>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// One day of an app's use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageDay {
    /// The day (UTC).
    pub day: NaiveDate,
    /// Calls.
    pub messages: u64,
    /// Distinct named end users.
    pub end_users: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Thumbs up.
    pub up: u64,
    /// Thumbs down.
    pub down: u64,
}
