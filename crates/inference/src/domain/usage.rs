//! One record per proxied request: who, which model, where, how many tokens, how fast.

use chrono::{DateTime, Utc};
use maas_user::contract::{ApiKeyId, UserId};
use uuid::Uuid;

/// Token counts of a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
}

impl TokenUsage {
    /// Prompt + completion.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }

    /// Reads an OpenAI `usage` object.
    #[must_use]
    pub fn from_json(usage: &serde_json::Value) -> Option<Self> {
        let prompt = usage.get("prompt_tokens")?.as_u64()?;
        let completion = usage
            .get("completion_tokens")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        Some(Self { prompt, completion })
    }
}

/// What a request cost, for the usage table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// Id.
    pub id: Uuid,
    /// Caller.
    pub user_id: UserId,
    /// Key used, if any.
    pub key_id: Option<ApiKeyId>,
    /// Public model name.
    pub model: String,
    /// Provider slug.
    pub upstream: String,
    /// `chat`, `embeddings`.
    pub endpoint: &'static str,
    /// Tokens.
    pub usage: TokenUsage,
    /// Whether the counts are estimates (the upstream never reported usage).
    pub estimated: bool,
    /// HTTP status returned to the client (or 499 when the client went away).
    pub status: u16,
    /// Whether the response was streamed.
    pub stream: bool,
    /// Time to first byte from upstream, milliseconds.
    pub ttft_ms: Option<u64>,
    /// Total time, milliseconds.
    pub latency_ms: u64,
    /// When the request started.
    pub at: DateTime<Utc>,
}

/// A rough token count for text (about four characters per token), used for reservations and
/// when an upstream reports no usage.
#[must_use]
pub fn estimate_tokens(chars: usize) -> u64 {
    u64::try_from(chars.div_ceil(4)).unwrap_or(u64::MAX)
}

/// How a usage report is grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// One row per UTC day.
    Day,
    /// One row per model.
    Model,
    /// One row per API key (calls with a login token group under no key).
    Key,
}

/// What a usage report covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageQuery {
    /// Only this user's calls; `None` for everyone's (admins only).
    pub user_id: Option<UserId>,
    /// From (inclusive).
    pub from: DateTime<Utc>,
    /// To (exclusive).
    pub to: DateTime<Utc>,
    /// Grouping.
    pub group_by: Grouping,
}

/// One row of a usage report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// The group: a day (`2026-11-23`), a model name or a key id (empty for login tokens).
    pub group: String,
    /// Calls.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Calls whose counts are estimates.
    pub estimated_requests: u64,
}
