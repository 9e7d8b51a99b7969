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
        self.prompt.saturating_add(self.completion)
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

/// A usage record as it travels with its settlement (through the identity context's durable
/// stream, opaque there) to the worker that stores it.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireRecord {
    id: Uuid,
    user_id: UserId,
    key_id: Option<ApiKeyId>,
    model: String,
    upstream: String,
    endpoint: String,
    prompt_tokens: u64,
    completion_tokens: u64,
    estimated: bool,
    status: u16,
    stream: bool,
    ttft_ms: Option<u64>,
    latency_ms: u64,
    at: DateTime<Utc>,
}

impl UsageRecord {
    /// The record as bytes (JSON), for [`UsageRecord::decode`].
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let wire = WireRecord {
            id: self.id,
            user_id: self.user_id,
            key_id: self.key_id,
            model: self.model.clone(),
            upstream: self.upstream.clone(),
            endpoint: self.endpoint.to_owned(),
            prompt_tokens: self.usage.prompt,
            completion_tokens: self.usage.completion,
            estimated: self.estimated,
            status: self.status,
            stream: self.stream,
            ttft_ms: self.ttft_ms,
            latency_ms: self.latency_ms,
            at: self.at,
        };
        // Serializing plain fields to JSON cannot fail.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// A record from [`UsageRecord::encode`]'s bytes.
    ///
    /// # Errors
    /// When the bytes are not such a record (or name an unknown endpoint).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let wire: WireRecord =
            serde_json::from_slice(bytes).map_err(|e| format!("not a usage record: {e}"))?;
        let endpoint = crate::domain::call::Endpoint::from_name(&wire.endpoint)
            .ok_or_else(|| format!("unknown endpoint `{}`", wire.endpoint))?;
        Ok(Self {
            id: wire.id,
            user_id: wire.user_id,
            key_id: wire.key_id,
            model: wire.model,
            upstream: wire.upstream,
            endpoint: endpoint.name(),
            usage: TokenUsage {
                prompt: wire.prompt_tokens,
                completion: wire.completion_tokens,
            },
            estimated: wire.estimated,
            status: wire.status,
            stream: wire.stream,
            ttft_ms: wire.ttft_ms,
            latency_ms: wire.latency_ms,
            at: wire.at,
        })
    }
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
