//! The OpenAI-compatible inference gateway: upstream providers, routing, streaming passthrough,
//! exact metering through the identity context's quota gate, and usage records.
//!
//! Layers (DESIGN §2): `domain` (providers, usage, SSE reading, errors, ports; no framework
//! types), `app` (provider administration, the gateway), `infra` (PostgreSQL, the upstream
//! HTTP client; feature `infra`) and `interface` (handlers, DTOs, OpenAPI; feature `http`).

pub mod app;
pub mod domain;

#[cfg(feature = "infra")]
pub mod infra;

#[cfg(feature = "http")]
pub mod interface;

#[cfg(feature = "http")]
pub use interface::dto::openai_request_schema;
#[cfg(feature = "http")]
pub use interface::{
    InferenceApi, LegacyApi, ProvidersApi, configure, configure_admin, configure_legacy,
};

/// What other contexts may depend on: embeddings and chat through the metered gateway, and
/// conversations.
pub mod contract {
    pub use crate::app::chat::{ChatPort, ChatRequest, Conversations, HistoryMessage};
    pub use crate::app::embed::{Embedder, Embeddings};
    pub use crate::app::gateway::{Proxied, ProxiedBody};
    pub use crate::app::settlement::{OnSettled, Settled};
    pub use crate::domain::conversation::ConversationId;
    pub use crate::domain::errors::InferenceError;
    pub use crate::domain::usage::TokenUsage;
}

/// Job payloads of this context (produced and consumed through apalis).
#[cfg(feature = "infra")]
pub mod jobs {
    use serde::{Deserialize, Serialize};

    /// Deletes conversations idle for longer than `conversations.ttl_hours`. Idempotent: any
    /// number of runs (from any number of workers) leaves the same result.
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ConversationExpiryJob {
        /// The schedule's tick it was pushed for (Unix seconds); `None` when pushed by hand.
        #[serde(default)]
        pub tick: Option<u64>,
    }

    impl maas_shared::jobs::Job for ConversationExpiryJob {
        const QUEUE: &'static str = "inference.conversation_expiry";
    }

    impl maas_shared::jobs::Scheduled for ConversationExpiryJob {
        fn at_tick(timestamp: u64) -> Self {
            Self {
                tick: Some(timestamp),
            }
        }
    }
}
